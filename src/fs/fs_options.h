/* Mount options of the assetfs filesystem (DESIGN.md §7).
 *
 * `assetfs MOUNTPOINT [-f] [-o key=value,...]`: our keys are taken out of the argument
 * list and the rest is left for libfuse (allow_other, max_read, ...). ASSETFS_MONGO_URI
 * and ASSETFS_DATABASE give the defaults of mongo_uri/database.
 */
#ifndef ASSETFS_FS_OPTIONS_H
#define ASSETFS_FS_OPTIONS_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 35
#endif
#include <fuse_opt.h>
#include <stdbool.h>
#include <stdint.h>

#include "assetfs/error.h"

struct afs_fs_options {
  char *mountpoint; /* absolute */
  char *mongo_uri;
  char *database;
  char *uid;               /* default: the login name */
  char *session_id;        /* default: "<host>:<mountpoint>" (stable per host and mount) */
  char **partitions;       /* NULL-terminated; NULL = discover */
  char *upload_partition;  /* default "user_id=<uid>" */
  double expiration_hours; /* default 24; 0 = public */
  char *cache_dir;         /* default $XDG_CACHE_HOME/assetfs or ~/.cache/assetfs */
  bool ro;
  bool refuse_chmod;             /* chmod/chown fail with EPERM instead of being ignored */
  double close_timeout;          /* seconds close() may wait for the broker and retries; 30 */
  double db_timeout;             /* seconds one MongoDB operation may wait on a silent server
                                  * (socketTimeoutMS unless the URI sets it); 30 */
  bool writeback;                /* close() returns once staged data is durable; uploads queued */
  int upload_workers;            /* parallel background uploads; default 4, with writeback
                                  * AFS_WRITEBACK_WORKERS (most of a small file's upload is
                                  * waiting for the broker, and a waiting worker costs nothing) */
  long long multipart_threshold; /* files bigger than this go up in parts, streamed
                                  * while written; 0 = never (one PUT, at most 5 GiB);
                                  * default 64 MiB */
  int multipart_parallel;        /* parts in flight per mount; default 8 */
  long long cache_max;           /* bytes of staged data; 0 = default: min(4 GiB, 25% of
                                  * cache_dir's filesystem), set at mount */
  double attr_ttl, list_ttl;
  long cache_mb;       /* read cache budget; default 256 */
  char **url_hosts;    /* NULL-terminated origins that URLs may also name, besides
                        * the broker's published ones (endpoints.h); NULL = none */
  bool url_hosts_only; /* only url_hosts: the broker's record is not read */
  char *log_level;
  char *log_file; /* log lines appended here; NULL: stderr with -f, syslog when daemonised */
  struct evp_pkey_st *key; /* key_file: the client's key (auth.h); NULL = requests unsigned */
  uint8_t broker_pub[32];  /* broker_key: assets must carry this key's seal */
  bool has_broker_pub;
  bool foreground, show_help, show_version;
};

/* Parses our options out of args (leaves FUSE's). false + err on a bad value. On
 * --help, prints our part of the help and sets show_help (FUSE's help is added by the
 * caller). */
bool afs_fs_options_parse(struct fuse_args *args, struct afs_fs_options *o, struct afs_error *err);
void afs_fs_options_help(void);
void afs_fs_options_free(struct afs_fs_options *o);

#define AFS_WRITEBACK_WORKERS 16

#endif
