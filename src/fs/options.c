#include "fs_options.h"

#include "assetfs/alloc.h"
#include "assetfs/auth.h"
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Raw strings as fuse_opt_parse fills them; converted in afs_fs_options_parse. */
struct raw {
  char *uid, *session_id, *partitions, *upload_partition, *expiration_hours, *cache_dir;
  char *close_timeout, *db_timeout, *attr_ttl, *list_ttl, *cache_mb, *mongo_uri, *database,
      *log_level;
  char *upload_workers, *cache_max, *key_file, *broker_key, *log_file;
  char *multipart_threshold, *multipart_parallel;
  int ro, refuse_chmod, help, version, foreground, writeback, url_hosts_only;
  char **url_hosts; /* NULL-terminated */
  size_t nurl;
};

enum { KEY_HELP, KEY_VERSION, KEY_FOREGROUND, KEY_RO, KEY_URL_HOSTS };

#define OPT(t, f)                                                                                  \
  { t, offsetof(struct raw, f), 0 }
static const struct fuse_opt g_specs[] = {
    OPT("uid=%s", uid),
    OPT("session_id=%s", session_id),
    OPT("partitions=%s", partitions),
    OPT("upload_partition=%s", upload_partition),
    OPT("expiration_hours=%s", expiration_hours),
    OPT("cache_dir=%s", cache_dir),
    OPT("close_timeout=%s", close_timeout),
    OPT("db_timeout=%s", db_timeout),
    OPT("attr_ttl=%s", attr_ttl),
    OPT("list_ttl=%s", list_ttl),
    OPT("cache_mb=%s", cache_mb),
    OPT("mongo_uri=%s", mongo_uri),
    OPT("database=%s", database),
    OPT("log_level=%s", log_level),
    OPT("log_file=%s", log_file),
    OPT("upload_workers=%s", upload_workers),
    OPT("cache_max=%s", cache_max),
    OPT("multipart_threshold=%s", multipart_threshold),
    OPT("multipart_parallel=%s", multipart_parallel),
    OPT("key_file=%s", key_file),
    OPT("broker_key=%s", broker_key),
    {"refuse_chmod", offsetof(struct raw, refuse_chmod), 1},
    {"writeback", offsetof(struct raw, writeback), 1},
    {"url_hosts_only", offsetof(struct raw, url_hosts_only), 1},
    FUSE_OPT_KEY("url_hosts=", KEY_URL_HOSTS),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_KEY("-f", KEY_FOREGROUND),
    FUSE_OPT_END,
};

static void add_url_host(struct raw *r, const char *s) {
  if (!*s)
    return;
  char **bigger = afs_xrealloc(r->url_hosts, (r->nurl + 2) * sizeof *bigger);
  r->url_hosts = bigger;
  r->url_hosts[r->nurl++] = strdup(s);
  r->url_hosts[r->nurl] = NULL;
}

static int on_key(void *data, const char *arg, int key, struct fuse_args *outargs) {
  struct raw *r = data;
  (void)outargs;
  /* "url_hosts=http://a:1,http://b:2": libfuse splits -o at commas, so the origins after
   * the first arrive as options of their own. No FUSE option starts with a scheme. */
  if (key == FUSE_OPT_KEY_OPT && r->nurl > 0 &&
      (!strncasecmp(arg, "http://", 7) || !strncasecmp(arg, "https://", 8))) {
    add_url_host(r, arg);
    return 0;
  }
  switch (key) {
  case KEY_URL_HOSTS:
    add_url_host(r, arg + strlen("url_hosts="));
    return 0;
  case KEY_RO:
    r->ro = 1;
    return 1; /* also for the kernel */
  case KEY_HELP:
    r->help = 1;
    return 1; /* libfuse prints its part */
  case KEY_VERSION:
    r->version = 1;
    return 0;
  case KEY_FOREGROUND:
    r->foreground = 1;
    return 1;
  case FUSE_OPT_KEY_NONOPT:
    return 1; /* the mountpoint: libfuse parses it */
  default:
    return 1;
  }
}

static bool parse_double(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

/* "123", "64k", "10M", "4G" (powers of 1024). */
static bool parse_bytes(const char *s, long long *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || v < 0)
    return false;
  double mult = 1;
  switch (*end) {
  case 'k':
  case 'K':
    mult = 1024.0;
    end++;
    break;
  case 'm':
  case 'M':
    mult = 1024.0 * 1024;
    end++;
    break;
  case 'g':
  case 'G':
    mult = 1024.0 * 1024 * 1024;
    end++;
    break;
  case 't':
  case 'T':
    mult = 1024.0 * 1024 * 1024 * 1024;
    end++;
    break;
  default:
    break;
  }
  if (*end == 'i' || *end == 'B' || *end == 'b')
    end += *end == 'i' && (end[1] == 'B' || end[1] == 'b') ? 2 : 1;
  if (*end)
    return false;
  *out = (long long)(v * mult);
  return true;
}

static char *default_uid(void) {
  struct passwd *pw = getpwuid(getuid());
  if (pw && pw->pw_name)
    return strdup(pw->pw_name);
  char buf[32];
  snprintf(buf, sizeof buf, "%u", (unsigned)getuid());
  return strdup(buf);
}

static char *default_cache_dir(void) {
  const char *xdg = getenv("XDG_CACHE_HOME");
  const char *home = getenv("HOME");
  char *out;
  if (xdg && *xdg) {
    afs_xasprintf(&out, "%s/assetfs", xdg);
  } else if (home && *home) {
    afs_xasprintf(&out, "%s/.cache/assetfs", home);
  } else {
    afs_xasprintf(&out, "/var/tmp/assetfs-%u", (unsigned)getuid());
  }
  return out;
}

/* The mountpoint is the first non-option argument (libfuse re-parses it). */
static char *find_mountpoint(const struct fuse_args *args) {
  for (int i = 1; i < args->argc; i++) {
    const char *a = args->argv[i];
    if (a[0] == '-') {
      if (!strcmp(a, "-o"))
        i++;
      continue;
    }
    char *abs = realpath(a, NULL);
    return abs ? abs : strdup(a);
  }
  return NULL;
}

static char **split_partitions(const char *s) {
  size_t n = 1;
  for (const char *p = s; *p; p++)
    n += *p == ':';
  char **out = calloc(n + 1, sizeof *out);
  char *copy = strdup(s), *save = NULL, *tok;
  size_t i = 0;
  for (tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save))
    out[i++] = strdup(tok);
  free(copy);
  return out;
}

bool afs_fs_options_parse(struct fuse_args *args, struct afs_fs_options *o, struct afs_error *err) {
  struct raw r;
  bool ok = false;
  memset(&r, 0, sizeof r);
  memset(o, 0, sizeof *o);
  if (fuse_opt_parse(args, &r, g_specs, on_key) != 0) {
    afs_error_set(err, EINVAL, "cannot parse the options");
    goto done;
  }
  o->show_help = r.help;
  o->show_version = r.version;
  o->foreground = r.foreground;
  o->ro = r.ro;
  o->refuse_chmod = r.refuse_chmod;
  o->url_hosts = r.url_hosts;
  r.url_hosts = NULL;
  o->url_hosts_only = r.url_hosts_only;
  if (o->show_help || o->show_version) {
    ok = true;
    goto done;
  }
  o->mountpoint = find_mountpoint(args);
  if (!o->mountpoint) {
    afs_error_set(err, EINVAL, "no mountpoint given (see --help)");
    goto done;
  }
  const char *env_uri = getenv("ASSETFS_MONGO_URI"), *env_db = getenv("ASSETFS_DATABASE");
  o->mongo_uri = strdup(r.mongo_uri ? r.mongo_uri
                        : env_uri   ? env_uri
                                    : "mongodb://127.0.0.1:27017");
  o->database = strdup(r.database ? r.database : env_db ? env_db : "assetfs");
  o->uid = r.uid ? strdup(r.uid) : default_uid();
  if (r.session_id) {
    o->session_id = strdup(r.session_id);
  } else {
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    afs_xasprintf(&o->session_id, "%s:%s", host, o->mountpoint);
  }
  if (r.upload_partition)
    o->upload_partition = strdup(r.upload_partition);
  else
    afs_xasprintf(&o->upload_partition, "user_id=%s", o->uid);
  if (r.partitions && *r.partitions)
    o->partitions = split_partitions(r.partitions);
  o->expiration_hours = 24;
  if (r.expiration_hours && !parse_double(r.expiration_hours, 0, 168, &o->expiration_hours)) {
    afs_error_set(err, EINVAL, "expiration_hours must be a number from 0 to 168");
    goto done;
  }
  o->close_timeout = 30;
  if (r.close_timeout && !parse_double(r.close_timeout, 0.1, 86400, &o->close_timeout)) {
    afs_error_set(err, EINVAL, "close_timeout must be a number of seconds (0.1 to 86400)");
    goto done;
  }
  o->db_timeout = 30;
  if (r.db_timeout && !parse_double(r.db_timeout, 1, 3600, &o->db_timeout)) {
    afs_error_set(err, EINVAL, "db_timeout must be a number of seconds (1 to 3600)");
    goto done;
  }
  o->attr_ttl = 1;
  o->list_ttl = 3;
  if ((r.attr_ttl && !parse_double(r.attr_ttl, 0, 3600, &o->attr_ttl)) ||
      (r.list_ttl && !parse_double(r.list_ttl, 0, 3600, &o->list_ttl))) {
    afs_error_set(err, EINVAL, "attr_ttl and list_ttl are seconds from 0 to 3600");
    goto done;
  }
  double mb = 256;
  if (r.cache_mb && !parse_double(r.cache_mb, 4, 1 << 20, &mb)) {
    afs_error_set(err, EINVAL, "cache_mb must be a number of MiB (at least 4)");
    goto done;
  }
  o->cache_mb = (long)mb;
  o->writeback = r.writeback;
  double workers = r.writeback ? AFS_WRITEBACK_WORKERS : 4;
  if (r.upload_workers && !parse_double(r.upload_workers, 1, 64, &workers)) {
    afs_error_set(err, EINVAL, "upload_workers must be a number from 1 to 64");
    goto done;
  }
  o->upload_workers = (int)workers;
  o->multipart_threshold = 64LL << 20;
  if (r.multipart_threshold &&
      (!parse_bytes(r.multipart_threshold, &o->multipart_threshold) ||
       (o->multipart_threshold != 0 && o->multipart_threshold < (8LL << 20)) ||
       o->multipart_threshold > (5LL << 30))) {
    afs_error_set(err, EINVAL,
                  "multipart_threshold must be 0 (never) or a size from 8M to 5G (e.g. 64M)");
    goto done;
  }
  double mpp = 8;
  if (r.multipart_parallel && !parse_double(r.multipart_parallel, 1, 64, &mpp)) {
    afs_error_set(err, EINVAL, "multipart_parallel must be a number from 1 to 64");
    goto done;
  }
  o->multipart_parallel = (int)mpp;
  if (r.cache_max && (!parse_bytes(r.cache_max, &o->cache_max) || o->cache_max < (1 << 20))) {
    afs_error_set(err, EINVAL, "cache_max must be a size of at least 1M (e.g. 512M, 4G)");
    goto done;
  }
  if (o->url_hosts_only && !o->url_hosts) {
    afs_error_set(err, EINVAL, "url_hosts_only needs url_hosts=ORIGIN[,ORIGIN...]");
    goto done;
  }
  /* Loaded here, before the mount daemonises, so that a key others can read (refused)
   * is said on the terminal. */
  if (r.key_file && !(o->key = afs_auth_key_load(r.key_file, err))) {
    afs_error_wrap(err, "key_file");
    goto done;
  }
  if (r.broker_key) {
    if (!afs_auth_pub_load(r.broker_key, o->broker_pub, err)) {
      afs_error_wrap(err, "broker_key");
      goto done;
    }
    o->has_broker_pub = true;
  }
  o->cache_dir = r.cache_dir ? strdup(r.cache_dir) : default_cache_dir();
  o->log_level = strdup(r.log_level ? r.log_level : "info");
  o->log_file = r.log_file ? strdup(r.log_file) : NULL;
  ok = true;
done:
  free(r.uid);
  free(r.session_id);
  free(r.partitions);
  free(r.upload_partition);
  free(r.expiration_hours);
  free(r.cache_dir);
  free(r.close_timeout);
  free(r.db_timeout);
  free(r.attr_ttl);
  free(r.list_ttl);
  free(r.cache_mb);
  free(r.mongo_uri);
  free(r.database);
  free(r.log_level);
  free(r.log_file);
  free(r.upload_workers);
  free(r.key_file);
  free(r.broker_key);
  free(r.cache_max);
  free(r.multipart_threshold);
  free(r.multipart_parallel);
  for (size_t i = 0; r.url_hosts && r.url_hosts[i]; i++)
    free(r.url_hosts[i]);
  free(r.url_hosts);
  return ok;
}

void afs_fs_options_help(void) {
  printf("usage: assetfs MOUNTPOINT [-f] [-o option[,option...]]\n"
         "\n"
         "Mounts Cosync Storage assets (MongoDB records, S3 bytes) as files. Each partition is\n"
         "a top-level directory; files written in it are uploaded through the broker's\n"
         "presigned URLs when they are closed.\n"
         "\n"
         "assetfs options (defaults in brackets):\n"
         "    -o uid=NAME              uid written in upload records [login name]\n"
         "    -o session_id=ID         sessionId of this mount [<host>:<mountpoint>]\n"
         "    -o partitions=A:B:C      partitions to show [all with active assets + upload]\n"
         "    -o upload_partition=P    _partition of upload records [user_id=<uid>]\n"
         "    -o expiration_hours=H    read URL lifetime of new assets, 0 = public [24]\n"
         "    -o cache_dir=DIR         staging folder [$XDG_CACHE_HOME/assetfs]\n"
         "    -o cache_max=BYTES       bound on staged data, e.g. 2G [4G or 25%% of the disk]\n"
         "    -o close_timeout=SECONDS how long close() waits for an upload [30]\n"
         "    -o writeback             close() returns once the data is on local disk;\n"
         "                             uploads run in the background, fsync() waits\n"
         "    -o upload_workers=N      parallel background uploads [4; 16 with writeback]\n"
         "    -o multipart_threshold=BYTES  bigger files go up in parts, while written [64M]\n"
         "    -o multipart_parallel=N  parts in flight at once [8]\n"
         "    -o attr_ttl=S,list_ttl=S metadata cache lifetimes [1, 3]\n"
         "    -o cache_mb=MIB          memory budget of the process (read cache) [256]\n"
         "    -o refuse_chmod          chmod/chown fail with EPERM [ignored]\n"
         "    -o url_hosts=ORIGIN[,ORIGIN...]  more origins (scheme://host[:port]) whose\n"
         "                             URLs may be read and written, besides the S3\n"
         "                             endpoint and public base URL the broker publishes\n"
         "    -o url_hosts_only        allow url_hosts only; ignore the broker's list\n"
         "    -o key_file=FILE         this client's Ed25519 key (assetfs-broker keygen):\n"
         "                             sign every request, for a broker with auth=required\n"
         "    -o broker_key=FILE.pub   the broker's public key: show and read only assets\n"
         "                             whose seal it made (auth=required)\n"
         "    -o mongo_uri=URI         [$ASSETFS_MONGO_URI]\n"
         "    -o database=NAME         [$ASSETFS_DATABASE]\n"
         "    -o db_timeout=SECONDS    a MongoDB operation waits this long on a server that\n"
         "                             stopped answering, then fails (EIO) [30]\n"
         "    -o log_level=LEVEL       error, warn, info or debug [info]\n"
         "    -o log_file=PATH         append log lines to PATH [stderr with -f, else syslog]\n"
         "    -o ro                    read-only mount\n"
         "    -f                       stay in the foreground\n"
         "    -V, --version            print the version\n"
         "\n");
}

void afs_fs_options_free(struct afs_fs_options *o) {
  free(o->mountpoint);
  free(o->mongo_uri);
  free(o->database);
  free(o->uid);
  free(o->session_id);
  free(o->upload_partition);
  free(o->cache_dir);
  free(o->log_level);
  free(o->log_file);
  afs_auth_key_free(o->key);
  if (o->partitions)
    for (char **p = o->partitions; *p; p++)
      free(*p);
  free(o->partitions);
  if (o->url_hosts)
    for (char **p = o->url_hosts; *p; p++)
      free(*p);
  free(o->url_hosts);
  memset(o, 0, sizeof *o);
}
