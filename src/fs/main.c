/* assetfs: mounts Cosync Storage partitions as directories (DESIGN.md §7).
 *
 * Order matters: options and a MongoDB reachability check run before the mount (so a
 * bad URI fails loudly, not in the background); everything that starts threads
 * (MongoDB pool monitoring, read workers, the upload worker, libvips) starts in the FUSE
 * init callback, after libfuse has daemonised. Unmount (fusermount3 -u, SIGTERM,
 * SIGINT) ends the loop; destroy then waits, bounded, for uploads still in flight.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/endpoints.h"
#include "assetfs/hash.h"
#include "assetfs/http_put.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "assetfs/test_pause.h"
#include "fuse/ops_int.h"
#include "staging/base.h"
#include "upload/upload.h"

#include <fuse_lowlevel.h> /* fuse_parse_cmdline; needs FUSE_USE_VERSION from fs.h */

static struct afs_fs g_fs;

static bool mkdir_p(const char *path) {
  char *copy = strdup(path);
  for (char *s = copy + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    mkdir(copy, 0700);
    *s = '/';
  }
  bool ok = mkdir(copy, 0700) == 0 || errno == EEXIST;
  free(copy);
  return ok;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  struct afs_fs *fs = &g_fs;
  struct afs_error e = {0};
  /* O_TRUNC reaches open(): an overwrite starts a new upload without first copying
   * the old asset down. */
  if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
    conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  /* Readers of assets keep their page cache across opens (ops_file.c); a new version
   * (new size or mtime at getattr) must drop it. */
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
    conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
  conn->max_write = 1 << 20;
  cfg->attr_timeout = fs->opt.attr_ttl;
  cfg->entry_timeout = fs->opt.attr_ttl;
  cfg->negative_timeout = 0;
  cfg->hard_remove = 1; /* unlink of an open file: handles keep working (no .fuse_hidden) */
  cfg->nullpath_ok = 1;
  cfg->use_ino = 0;

  struct afs_catalog_opts co;
  afs_catalog_opts_default(&co);
  co.upload_partition = fs->opt.upload_partition;
  co.partitions = (const char *const *)fs->opt.partitions;
  co.uid = fs->opt.uid;
  co.session_id = fs->opt.session_id;
  co.key = fs->opt.key;
  co.broker_pub = fs->opt.has_broker_pub ? fs->opt.broker_pub : NULL;
  co.attr_ttl = fs->opt.attr_ttl;
  co.list_ttl = fs->opt.list_ttl;
  struct afs_readcache_opts ro;
  afs_readcache_opts_default(&ro);
  ro.budget_bytes = (size_t)fs->opt.cache_mb << 20;
  const char *staging_dir = fs->staging_dir;
  if (!(fs->cat = afs_catalog_new(&fs->db, &co, &e)) || !(fs->rc = afs_readcache_new(&ro, &e)) ||
      !(fs->st = afs_staging_new(staging_dir, &e))) {
    afs_err("cannot start: %s", e.msg);
    fuse_exit(fuse_get_context()->fuse);
    return fs;
  }
  /* Before the uploader resumes anything: a resumed file may read its asset. */
  afs_staging_set_fetch(fs->st, afs_fs_base_fetch, afs_fs_base_src_free, fs);
  if (!(fs->up = afs_uploader_new(fs->st, fs->cat, &fs->opt, &fs->db, &e))) {
    afs_err("cannot start: %s", e.msg);
    fuse_exit(fuse_get_context()->fuse);
    return fs;
  }
  afs_info("mounted %s (pid %d, database %s, uid %s, upload partition %s, staging %s%s)",
           fs->opt.mountpoint, (int)getpid(), fs->opt.database, fs->opt.uid,
           fs->opt.upload_partition, staging_dir, fs->opt.writeback ? ", write-back" : "");
  return fs;
}

static void op_destroy(void *data) {
  struct afs_fs *fs = data;
  /* Data written and closed must reach S3 before we go; bounded (by time without
   * progress) so that a dead S3 cannot hold the unmount forever: then the staging
   * files stay on disk with their journals for the next mount of this session. */
  double wait = fs->opt.close_timeout > 60 ? fs->opt.close_timeout : 60;
  if (fs->up)
    afs_fs_release_all(fs);
  afs_uploader_free(fs->up, wait);
  fs->up = NULL;
  afs_staging_free(fs->st);
  fs->st = NULL;
  if (fs->rc)
    afs_readcache_free(fs->rc);
  fs->rc = NULL;
  afs_catalog_free(fs->cat);
  fs->cat = NULL;
  afs_info("unmounted %s", fs->opt.mountpoint);
}

/* The staging folder of this session: a name derived from session_id (the one hash,
 * persisted: see hash.h), so that the next mount with the same session_id and cache_dir
 * finds what this one left. */
static char *session_dir(const struct afs_fs_options *o) {
  uint64_t h = afs_hash_fnv1a64_str(o->session_id);
  char *out;
  afs_xasprintf(&out, "%s/session-%016llx", o->cache_dir, (unsigned long long)h);
  return out;
}

/* Staging folders of assetfs versions before session folders (staging.<pid>) have no
 * journals and are never resumed: say so, once, so their owner can copy them back. */
static void warn_old_staging(const char *cache_dir) {
  DIR *d = opendir(cache_dir);
  struct dirent *de;
  int n = 0;
  while (d && (de = readdir(d)))
    n += !strncmp(de->d_name, "staging.", 8);
  if (d)
    closedir(d);
  if (n > 0)
    afs_warn("%s holds %d staging.<pid> folder(s) of an older assetfs: files there were "
             "never uploaded and are not resumed; copy them into the mount again",
             cache_dir, n);
}

/* The cache folder holds written data not uploaded yet: it must be a real folder of this
 * user that nobody else can write, or another local user could read staged files or swap
 * them (the no-HOME default /var/tmp/assetfs-<uid> is a name anyone can create first). */
static bool cache_dir_safe(const char *dir, struct afs_error *err) {
  struct stat st;
  if (lstat(dir, &st) != 0)
    return afs_error_set(err, errno, "cache_dir %s: %s", dir, strerror(errno));
  if (S_ISLNK(st.st_mode))
    return afs_error_set(err, EPERM,
                         "cache_dir %s is a symbolic link; give the folder itself (realpath)", dir);
  if (!S_ISDIR(st.st_mode))
    return afs_error_set(err, ENOTDIR, "cache_dir %s is not a folder", dir);
  if (st.st_uid != getuid())
    return afs_error_set(err, EPERM,
                         "cache_dir %s belongs to uid %u, not to this user (uid %u): another "
                         "user could read or replace staged files; use a folder of your own",
                         dir, (unsigned)st.st_uid, (unsigned)getuid());
  if (st.st_mode & (S_IWGRP | S_IWOTH))
    return afs_error_set(err, EPERM,
                         "cache_dir %s can be written by group or others (mode %03o): chmod "
                         "go-w it, or use a folder of your own",
                         dir, (unsigned)(st.st_mode & 0777));
  return true;
}

/* One live mount per session: two would upload the same staged files twice. The lock
 * is held by the open file (it survives daemonising) and goes with the process. */
static bool lock_session(struct afs_fs *fs, struct afs_error *err) {
  char *path;
  afs_xasprintf(&path, "%s/lock", fs->staging_dir);
  bool ok = false;
  if (mkdir(fs->staging_dir, 0700) != 0 && errno != EEXIST) {
    afs_error_set(err, errno, "cannot create %s: %s", fs->staging_dir, strerror(errno));
    goto done;
  }
  fs->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fs->lock_fd < 0) {
    afs_error_set(err, errno, "cannot open %s: %s", path, strerror(errno));
    goto done;
  }
  if (flock(fs->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    afs_error_set(err, EBUSY,
                  "session_id \"%s\" is in use by another assetfs mount (%s is locked); "
                  "give this mount another session_id or cache_dir",
                  fs->opt.session_id, path);
    close(fs->lock_fd);
    fs->lock_fd = -1;
    goto done;
  }
  ok = true;
done:
  free(path);
  return ok;
}

/* libmongoc's messages through our logger; its warnings are mostly FerretDB lacking a
 * command (endSessions) and only useful when debugging. */
static void on_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                          void *data) {
  (void)data;
  if (level <= MONGOC_LOG_LEVEL_ERROR)
    afs_err("mongoc %s: %s", domain, message);
  else if (level <= MONGOC_LOG_LEVEL_WARNING)
    afs_debug("mongoc %s: %s", domain, message);
}

/* A plain, single-threaded client: the pool must not start its monitor threads before
 * libfuse forks into the background. */
static bool check_mongo(const char *uri_str, struct afs_error *err) {
  bson_error_t berr;
  mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_str, &berr);
  if (!uri)
    return afs_db_error(err, &berr, "invalid MongoDB URI");
  mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
  mongoc_client_t *c = mongoc_client_new_from_uri(uri);
  mongoc_uri_destroy(uri);
  bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
  bool ok = c && mongoc_client_command_simple(c, "admin", cmd, NULL, NULL, &berr);
  bson_destroy(cmd);
  if (c)
    mongoc_client_destroy(c);
  if (!ok)
    return afs_db_error(err, &berr, "cannot reach MongoDB");
  return true;
}

/* Mount, daemonise unless -f, serve (multithreaded unless -s) until unmounted or
 * signalled, unmount. An unmount by SIGTERM/SIGINT/SIGHUP is a clean exit (0). */
static int run_fuse(struct fuse_args *args, const struct fuse_cmdline_opts *copts,
                    const struct fuse_operations *ops, struct afs_fs *fs) {
  int res = 1;
  struct fuse *f = fuse_new(args, ops, sizeof *ops, fs);
  if (!f)
    return 1;
  if (fuse_mount(f, copts->mountpoint) != 0)
    goto out_destroy;
  if (fuse_daemonize(copts->foreground) != 0)
    goto out_unmount;
  /* Where log lines go from here on: a daemon's stderr is /dev/null. */
  if (fs->log_fd >= 0)
    dup2(fs->log_fd, STDERR_FILENO);
  else if (!copts->foreground)
    afs_log_init("assetfs", afs_log_get_level(), true);
  struct fuse_session *se = fuse_get_session(f);
  if (fuse_set_signal_handlers(se) != 0)
    goto out_unmount;
  if (copts->singlethread) {
    res = fuse_loop(f);
  } else {
    struct fuse_loop_config lc = {.clone_fd = copts->clone_fd,
                                  .max_idle_threads = copts->max_idle_threads};
    res = fuse_loop_mt(f, &lc);
  }
  if (res == SIGTERM || res == SIGINT || res == SIGHUP)
    res = 0;
  fuse_remove_signal_handlers(se);
out_unmount:
  fuse_unmount(f);
out_destroy:
  fuse_destroy(f);
  return res ? 1 : 0;
}

int main(int argc, char *argv[]) {
  struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
  struct afs_error e = {0};
  struct afs_fs *fs = &g_fs;
  int rc = 1;
  struct fuse_cmdline_opts copts;
  memset(&copts, 0, sizeof copts);
  fs->lock_fd = -1;
  fs->log_fd = -1;
  afs_log_init("assetfs", AFS_LOG_INFO, false);
  if (!afs_fs_options_parse(&args, &fs->opt, &e)) {
    fprintf(stderr, "assetfs: %s\n", e.msg);
    goto done;
  }
  /* The options hold their own copies now: a password in -o mongo_uri= stays out of ps
   * and /proc/PID/cmdline, which every local user can read. */
  int scrubbed = 0;
  for (int i = 1; i < argc; i++)
    scrubbed += afs_scrub_uri_passwords(argv[i]);
  if (scrubbed)
    afs_warn("mongo_uri= on the command line carries a password other local users can read "
             "while the mount starts; it is masked now, but prefer ASSETFS_MONGO_URI");
  if (fs->opt.show_version) {
    printf("assetfs %s\n", ASSETFS_VERSION);
    rc = 0;
    goto done;
  }
  if (fuse_parse_cmdline(&args, &copts) != 0)
    goto done;
  if (fs->opt.show_help || copts.show_help) {
    afs_fs_options_help();
    printf("FUSE options:\n");
    fuse_cmdline_help();
    fuse_lib_help(&args);
    rc = 0;
    goto done;
  }
  if (!copts.mountpoint) {
    fprintf(stderr, "assetfs: no mountpoint given (see --help)\n");
    goto done;
  }
  enum afs_log_level lvl;
  if (afs_log_parse_level(fs->opt.log_level, &lvl))
    afs_log_init("assetfs", lvl, false);
  if (fs->opt.log_file &&
      (fs->log_fd = open(fs->opt.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
                         0600)) < 0) {
    fprintf(stderr, "assetfs: cannot open log_file %s: %s\n", fs->opt.log_file, strerror(errno));
    goto done;
  }
  fs->owner = getuid();
  pthread_mutex_init(&fs->fh_mu, NULL);
  fs->group = getgid();
  afs_db_global_init();
  mongoc_log_set_handler(on_mongoc_log, NULL);
  afs_test_pause_env("ASSETFS_FS_TEST_PAUSE"); /* before any thread: test_pause.h */
  if (!check_mongo(fs->opt.mongo_uri, &e)) {
    fprintf(stderr, "assetfs: %s\n", e.msg);
    goto done;
  }
  /* FUSE threads wait on MongoDB: a server that stops answering fails their operations
   * after db_timeout instead of libmongoc's 5 minutes. */
  if (!afs_db_open_bounded(&fs->db, fs->opt.mongo_uri, fs->opt.database, "assetfs",
                           (int32_t)(fs->opt.db_timeout * 1000), &e)) {
    fprintf(stderr, "assetfs: %s\n", e.msg);
    goto done;
  }
  /* Which origins URLs in records may name (endpoints.h), before any read or upload. */
  if (!afs_fs_endpoints_init(&fs->db, fs->opt.mongo_uri, (const char *const *)fs->opt.url_hosts,
                             fs->opt.url_hosts_only, &e)) {
    fprintf(stderr, "assetfs: %s\n", e.msg);
    goto done;
  }
  if (!mkdir_p(fs->opt.cache_dir)) {
    fprintf(stderr, "assetfs: cannot create cache_dir %s: %s\n", fs->opt.cache_dir,
            strerror(errno));
    goto done;
  }
  if (!cache_dir_safe(fs->opt.cache_dir, &e)) {
    fprintf(stderr, "assetfs: %s\n", e.msg);
    goto done;
  }
  fs->staging_dir = session_dir(&fs->opt);
  if (!lock_session(fs, &e)) {
    fprintf(stderr, "assetfs: %s\n", e.msg);
    goto done;
  }
  warn_old_staging(fs->opt.cache_dir);
  if (fs->opt.cache_max <= 0) {
    struct statvfs sv;
    long long cap = 4LL << 30;
    if (statvfs(fs->opt.cache_dir, &sv) == 0 && (long long)(sv.f_blocks * sv.f_frsize / 4) < cap)
      cap = (long long)(sv.f_blocks * sv.f_frsize / 4);
    fs->opt.cache_max = cap > (64LL << 20) ? cap : 64LL << 20;
  }
  struct fuse_operations ops = *afs_fs_operations();
  ops.init = op_init;
  ops.destroy = op_destroy;
  rc = run_fuse(&args, &copts, &ops, fs);
done:
  if (fs->db.pool)
    afs_db_close(&fs->db);
  if (fs->lock_fd >= 0)
    close(fs->lock_fd);
  if (fs->log_fd >= 0)
    close(fs->log_fd);
  free(fs->staging_dir);
  afs_fs_options_free(&fs->opt);
  free(copts.mountpoint);
  fuse_opt_free_args(&args);
  return rc;
}
