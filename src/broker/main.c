/* assetfs-broker: entry point. Parses settings (built-in defaults, then the ASSETFS_*
 * environment or a --config file, then command-line options), then either runs one
 * command (`sign`) or the broker loop until SIGTERM/SIGINT. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/endpoints.h"
#include "assetfs/indexes.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/sign_cmd.h"
#include "assetfs/strutil.h"
#include "assetfs/test_pause.h"
#include "broker.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: assetfs-broker [OPTIONS]\n"
          "       assetfs-broker [OPTIONS] sign --method GET|PUT|HEAD|DELETE --key KEY "
          "[--expires SECONDS] [--time YYYYMMDDTHHMMSSZ]\n"
          "       assetfs-broker keygen FILE\n"
          "\n"
          "Drives Cosync upload records in MongoDB: signs S3 URLs, verifies uploads, creates\n"
          "assets, answers CosyncFunctionCall requests, deletes removed assets' objects.\n"
          "Settings come from the ASSETFS_* environment unless --config is given.\n"
          "\n"
          "  -c, --config FILE       read settings from FILE (must not be group/world readable)\n"
          "  -l, --log-level LEVEL   error, warn, info (default) or debug\n"
          "  -d, --database NAME     MongoDB database (ASSETFS_DATABASE)\n"
          "  -m, --mongo-uri URI     MongoDB URI (ASSETFS_MONGO_URI)\n"
          "  -s, --set KEY=VALUE     any config-file setting, e.g. --set keep_versions=yes\n"
          "  -w, --workers N         worker threads (default 32)\n"
          "      --batch N           records claimed per poll (default 32)\n"
          "      --poll-min-ms N     poll interval after activity (default 5)\n"
          "      --poll-max-ms N     poll interval when idle (default 100)\n"
          "      --syslog            log to syslog instead of stderr\n"
          "  -h, --help              this text\n"
          "  -V, --version           print the version\n");
}

static bool parse_int(const char *s, int min, int max, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return false;
  *out = (int)v;
  return true;
}

static void derive_seal_key(struct afs_broker *b) {
  static const char label[] = "assetfs-broker record seal v1";
  unsigned int len = 0;
  HMAC(EVP_sha256(), b->cfg.s3_secret_key, (int)strlen(b->cfg.s3_secret_key),
       (const unsigned char *)label, sizeof label - 1, b->seal_key, &len);
}

static void make_owner_id(void) {
  char host[64] = "host", id[96];
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = '\0';
  unsigned char r[4] = {0};
  FILE *f = fopen("/dev/urandom", "rb");
  if (f) {
    if (fread(r, 1, sizeof r, f) != sizeof r)
      memset(r, 0, sizeof r);
    fclose(f);
  }
  snprintf(id, sizeof id, "%.40s:%d:%02x%02x%02x%02x", host, (int)getpid(), r[0], r[1], r[2], r[3]);
  afs_lease_set_owner(id);
}

/* libmongoc logs to stderr by itself; route it through our levels and redaction.
 * Its warnings are mostly gaps of MongoDB-compatible servers (e.g. no endSessions), hence
 * debug. */
static void on_mongoc_log(mongoc_log_level_t level, const char *domain, const char *msg, void *ud) {
  (void)ud;
  if (level <= MONGOC_LOG_LEVEL_ERROR)
    afs_warn("mongoc %s: %s", domain, msg);
  else
    afs_debug("mongoc %s: %s", domain, msg);
}

static void *run_thread(void *arg) {
  if (afs_broker_run(arg) != 0)
    kill(getpid(), SIGTERM); /* let main() shut down the same way as on a signal */
  return NULL;
}

/* The command line, applied after the environment or the config file. */
struct args {
  const char *config_file;
  struct {
    const char *key, *value;
  } sets[64];
  char *owned[64]; /* keys --set allocated */
  int nsets, nowned;
  bool use_syslog;
};

static void args_free(struct args *a) {
  for (int i = 0; i < a->nowned; i++)
    free(a->owned[i]);
}

/* Parses the options into a and b's tuning; -1 to go on, else the exit code (help,
 * version, usage errors). */
static int parse_args(int argc, char *argv[], struct afs_broker *b, struct args *a) {
  enum { OPT_BATCH = 1000, OPT_PMIN, OPT_PMAX, OPT_SYSLOG };
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"log-level", required_argument, NULL, 'l'},
                                       {"database", required_argument, NULL, 'd'},
                                       {"mongo-uri", required_argument, NULL, 'm'},
                                       {"set", required_argument, NULL, 's'},
                                       {"workers", required_argument, NULL, 'w'},
                                       {"batch", required_argument, NULL, OPT_BATCH},
                                       {"poll-min-ms", required_argument, NULL, OPT_PMIN},
                                       {"poll-max-ms", required_argument, NULL, OPT_PMAX},
                                       {"syslog", no_argument, NULL, OPT_SYSLOG},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "+c:l:d:m:s:w:hV", opts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      a->config_file = optarg;
      break;
    case 'l':
    case 'd':
    case 'm':
      if (a->nsets < 64)
        a->sets[a->nsets++] = (typeof(a->sets[0])){ch == 'l'   ? "log_level"
                                                   : ch == 'd' ? "database"
                                                               : "mongo_uri",
                                                   optarg};
      break;
    case 's': {
      char *eq = strchr(optarg, '=');
      if (!eq || a->nsets >= 64 || a->nowned >= 64) {
        fprintf(stderr, "assetfs-broker: --set needs KEY=VALUE\n");
        return 1;
      }
      if ((size_t)(eq - optarg) == strlen("s3_secret_key") &&
          !strncmp(optarg, "s3_secret_key", (size_t)(eq - optarg))) {
        fprintf(stderr, "assetfs-broker: the S3 secret must not be on the command line (every "
                        "local user can read it in ps): use ASSETFS_S3_SECRET_KEY or the config "
                        "file (mode 0600)\n");
        return 2;
      }
      char *k = afs_xstrndup(optarg, (size_t)(eq - optarg));
      a->owned[a->nowned++] = k;
      a->sets[a->nsets++] = (typeof(a->sets[0])){k, eq + 1};
      break;
    }
    case 'w':
      if (!parse_int(optarg, 1, 256, &b->workers)) {
        fprintf(stderr, "assetfs-broker: --workers must be 1..256\n");
        return 1;
      }
      break;
    case OPT_BATCH:
      if (!parse_int(optarg, 1, 1000, &b->batch)) {
        fprintf(stderr, "assetfs-broker: --batch must be 1..1000\n");
        return 1;
      }
      break;
    case OPT_PMIN:
    case OPT_PMAX:
      if (!parse_int(optarg, 1, 60000, ch == OPT_PMIN ? &b->poll_min_ms : &b->poll_max_ms)) {
        fprintf(stderr, "assetfs-broker: poll intervals must be 1..60000 ms\n");
        return 1;
      }
      break;
    case OPT_SYSLOG:
      a->use_syslog = true;
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf("assetfs-broker %s\n", ASSETFS_VERSION);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (b->poll_max_ms < b->poll_min_ms)
    b->poll_max_ms = b->poll_min_ms;
  return -1;
}

/* A MongoDB URI given with -m or --set carries its password into ps and
 * /proc/PID/cmdline, which every local user can read: once the settings hold their copy,
 * the command line keeps only asterisks, and the log says so. */
static void scrub_argv(int argc, char **argv) {
  int n = 0;
  for (int i = 1; i < argc; i++)
    n += afs_scrub_uri_passwords(argv[i]);
  if (n)
    afs_warn("a password was given on the command line, where other local users can read it "
             "while it starts; it is masked now, but prefer ASSETFS_MONGO_URI or the config "
             "file");
}

/* Settings from the config file (or the environment), then the command line; logging
 * as they say. */
static bool load_settings(struct afs_broker *b, const struct args *a) {
  struct afs_error err = {0};
  if (a->config_file ? !afs_config_from_file(&b->cfg, a->config_file, &err)
                     : !afs_config_from_env(&b->cfg, &err)) {
    fprintf(stderr, "assetfs-broker: %s\n", err.msg);
    return false;
  }
  for (int i = 0; i < a->nsets; i++)
    if (!afs_config_set(&b->cfg, a->sets[i].key, a->sets[i].value, &err)) {
      fprintf(stderr, "assetfs-broker: %s\n", err.msg);
      return false;
    }
  enum afs_log_level level;
  if (!afs_log_parse_level(b->cfg.log_level ? b->cfg.log_level : "info", &level)) {
    fprintf(stderr, "assetfs-broker: unknown log level '%s'\n", b->cfg.log_level);
    return false;
  }
  afs_log_init("assetfs-broker", level, a->use_syslog);
  afs_log_add_secret(b->cfg.s3_secret_key);
  mongoc_log_set_handler(on_mongoc_log, NULL);
  afs_test_pause_env("ASSETFS_BROKER_TEST_PAUSE"); /* before any thread: test_pause.h */
  return true;
}

/* The S3 client, the seal key and this broker's lease identity. */
static void s3_init(struct afs_broker *b) {
  afs_s3_target_from_config(&b->s3, &b->cfg);
  afs_s3_client_init(&b->s3c, &b->s3);
  /* A worker holds its record's lease while it waits: a short in-request retry covers a
   * blip, anything longer goes back to the queue (AFS_RETRY_MS) instead. */
  b->s3c.max_attempts = 2;
  b->s3c.connect_timeout_s = 5;
  b->s3c.timeout_s = 20;
  derive_seal_key(b);
  make_owner_id();
}

/* One HEAD of a key nobody uses, before anything is claimed: S3 answers 404, unless the
 * credentials are wrong or lack s3:ListBucket, which makes S3 answer 403 for every missing
 * key. Initialization HEADs candidate keys, so that broker would defer every upload for
 * ever: it stops here and says why. An S3 that cannot be reached is only said (the
 * broker rides out outages). */
static bool s3_probe(struct afs_broker *b, struct afs_error *err) {
  char key[64];
  struct afs_s3_object_info info;
  snprintf(key, sizeof key, "assetfs-probe/%s-%ld", afs_lease_owner(), (long)getpid());
  if (afs_s3_head_object(&b->s3c, key, &info, err))
    return true;
  if (err->code != AFS_E_URL_REFUSED) {
    afs_warn("S3 could not be checked at start: %s; going on", err->msg);
    return true;
  }
  return afs_error_wrap(err,
                        "S3 refused to say whether an object exists (HEAD of a missing key, "
                        "bucket %s): the S3 credentials are wrong, or they lack s3:ListBucket "
                        "on the bucket (S3 then answers 403 for every missing key and no "
                        "upload could start)",
                        b->cfg.s3_bucket);
}

/* auth=required: the clients, and the broker's own key (refused if others can read it). */
static bool auth_init(struct afs_broker *b, struct afs_error *err) {
  if (!b->cfg.auth_required) {
    afs_info("auth=off: every database writer is trusted (DESIGN.md §4)");
    return true;
  }
  b->sign_key = afs_auth_key_load(b->cfg.signing_key_file, err);
  if (!b->sign_key) {
    afs_error_wrap(err, "signing_key_file");
    return false;
  }
  afs_auth_key_public(b->sign_key, b->sign_pub);
  return afs_authz_open(b, err);
}

/* MongoDB may not be up yet (or down for a while): waits for it and its indexes. false
 * when a signal asked to stop first. */
static bool wait_for_mongo(struct afs_broker *b, const sigset_t *sigs) {
  struct afs_error err = {0};
  for (int attempt = 0;; attempt++) {
    if (afs_db_ping(&b->db, &err) && afs_indexes_ensure(&b->db, &err))
      return true;
    if (attempt == 0)
      afs_warn("%s; retrying", err.msg);
    int sig;
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT)) {
      siginfo_t si;
      sig = sigwaitinfo(sigs, &si);
      afs_info("%s (from pid %ld) received: stopped before MongoDB was reachable",
               sig == SIGTERM  ? "SIGTERM"
               : sig == SIGINT ? "SIGINT"
                               : "a signal",
               (long)si.si_pid);
      return false;
    }
    struct timespec ts = {0, 500000000L};
    nanosleep(&ts, NULL);
  }
}

/* Runs the broker until SIGTERM or SIGINT: the loop in its own thread, this one waiting
 * for the signal. The exit code. */
static int serve(struct afs_broker *b, const sigset_t *sigs) {
  afs_endpoints_publish(&b->db, &b->cfg, &b->s3); /* before signing: mounts learn our origins */
  afs_info("assetfs-broker %s ready: database %s, bucket %s, %d workers, id %s", ASSETFS_VERSION,
           b->cfg.database, b->cfg.s3_bucket, b->workers, afs_lease_owner());
  pthread_t runner;
  if (pthread_create(&runner, NULL, run_thread, b)) {
    afs_err("cannot start the broker loop");
    return 1;
  }
  int sig = 0;
  while (sigwait(sigs, &sig) == 0 && sig == SIGHUP)
    afs_authz_reload(b, true);
  afs_info("%s received: finishing in-flight work and releasing leases",
           sig == SIGTERM ? "SIGTERM" : "SIGINT");
  atomic_store(&b->stop, true);
  pthread_join(runner, NULL);
  afs_broker_dbstats_log();
  afs_info("stopped");
  return 0;
}

int main(int argc, char *argv[]) {
  static struct afs_broker b;
  struct afs_error err = {0};
  struct args a = {0};
  bool curl_inited = false;
  b.workers = 32;
  b.batch = 32;
  b.poll_min_ms = 5;
  b.poll_max_ms = 100;
  afs_config_defaults(&b.cfg);
  int rc = parse_args(argc, argv, &b, &a);
  if (rc >= 0)
    goto out;
  rc = 1;
  if (optind < argc && !strcmp(argv[optind], "keygen")) { /* needs no settings */
    rc = afs_keygen_cmd(argc - optind, argv + optind);
    goto out;
  }
  if (!load_settings(&b, &a))
    goto out;
  scrub_argv(argc, argv);
  if (optind < argc && !strcmp(argv[optind], "sign")) {
    rc = afs_sign_cmd(argc - optind, argv + optind, &b.cfg);
    goto out;
  }
  if (optind < argc) {
    fprintf(stderr, "assetfs-broker: unknown command '%s'\n", argv[optind]);
    usage(stderr);
    rc = 2;
    goto out;
  }
  if (!afs_config_check_broker(&b.cfg, &err)) {
    afs_err("%s", err.msg);
    goto out;
  }
  if (!auth_init(&b, &err)) {
    afs_err("%s", err.msg);
    goto out;
  }
  s3_init(&b);
  if (!s3_probe(&b, &err)) {
    afs_err("%s", err.msg);
    goto out;
  }
  /* Not thread-safe, so before any worker exists (curl_easy_init would do it lazily). */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  curl_inited = true;

  /* Signals go to the main thread only (sigwait); workers inherit the mask. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP); /* reads clients_file again (auth=required) */
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  if (!afs_db_open(&b.db, b.cfg.mongo_uri, b.cfg.database, "assetfs-broker", &err)) {
    afs_err("%s", err.msg);
    goto out;
  }
  if (!afs_broker_dbstats_install(b.db.pool))
    afs_warn("cannot count MongoDB commands");
  rc = wait_for_mongo(&b, &sigs) ? serve(&b, &sigs) : 0;
  afs_db_close(&b.db);
  mongoc_cleanup();
out:
  args_free(&a);
  afs_authz_close(&b);
  afs_auth_key_free(b.sign_key);
  afs_config_free(&b.cfg);
  if (curl_inited)
    curl_global_cleanup();
  return rc;
}
