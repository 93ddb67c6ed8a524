/* Settings shared by both programs: where MongoDB and S3 are, and the broker's knobs.
 *
 * Sources, later ones winning: built-in defaults, the ASSETFS_* environment (used only
 * when no config file is given), a `key = value` config file (which must not be group-
 * or world-readable, since it may hold the S3 secret), then command-line options.
 * Keys in the file are the environment names without the ASSETFS_ prefix, lower-case
 * (mongo_uri, database, s3_endpoint, s3_region, s3_bucket, s3_access_key, …).
 */
#ifndef ASSETFS_CONFIG_H
#define ASSETFS_CONFIG_H

#include <stdbool.h>

#include "assetfs/error.h"

struct afs_config {
  char *mongo_uri;   /* default mongodb://127.0.0.1:27017 */
  char *database;    /* default "assetfs" */
  char *s3_endpoint; /* NULL = AWS (https://s3.<region>.amazonaws.com) */
  char *s3_region;   /* default us-east-1 */
  char *s3_bucket;
  char *s3_access_key;
  char *s3_secret_key;
  bool s3_path_style;           /* default: true when an endpoint is set */
  char *public_base_url;        /* base for unsigned public URLs; default: object URL */
  long write_url_seconds;       /* lifetime of presigned PUT URLs; default 86400 */
  long stale_upload_seconds;    /* pending/initialized older than this -> error; default 86400 */
  long lease_seconds;           /* how long a broker owns a record it works on; default 60 */
  long call_keep_seconds;       /* answered (done/error) function calls older than this are
                                   deleted; default 86400, 0 = keep them */
  bool keep_versions;           /* superseded assets archived instead of deleted */
  long max_object_size;         /* HEAD size limit; default 5 TiB (S3's) */
  long multipart_sweep_seconds; /* how often the janitor looks for orphaned multipart
                                   uploads; default 600, 0 = never */
  long multipart_grace_seconds; /* a multipart upload younger than this is never taken
                                   for an orphan; default 3600 */
  char *log_level;              /* error|warn|info|debug; default info */
  /* Who asks (DESIGN.md §4): false = `auth=off`, every database writer is trusted (the
   * Cosync model); true = `auth=required`, the broker acts only on requests signed by a
   * key in clients_file, in the partitions it lists, and seals assets with
   * signing_key_file. */
  bool auth_required;
  char *clients_file;     /* UID PUBLIC_KEY PATTERNS, one client per line */
  char *signing_key_file; /* the broker's Ed25519 key (keygen), for sealing assets */
};

void afs_config_defaults(struct afs_config *c);
/* Reads ASSETFS_* variables over the current values. false (err names the variable) at
 * the first value that is not valid: never silently ignored. */
bool afs_config_from_env(struct afs_config *c, struct afs_error *err);
/* Reads PATH over the current values. Refuses a file that group or others can read. */
bool afs_config_from_file(struct afs_config *c, const char *path, struct afs_error *err);
/* Sets one key (as in the file); false if the key is unknown or the value is invalid. */
bool afs_config_set(struct afs_config *c, const char *key, const char *value,
                    struct afs_error *err);
/* Checks that what the broker needs is there. */
bool afs_config_check_broker(const struct afs_config *c, struct afs_error *err);
void afs_config_free(struct afs_config *c);

#endif
