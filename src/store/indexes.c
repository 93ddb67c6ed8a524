#include "assetfs/indexes.h"
#include "assetfs/cosync.h"

#include <stdio.h>

struct index_spec {
  const char *coll;
  const char *name;
  const char *k1, *k2;
};

/* Claims filter on status and lease; the filesystem lists a partition's active assets
 * and finds an asset by partition and filePath (supersede does too), and watches its
 * mount's uploads by sessionId and status (one query for every file it waits on). Key
 * claims are found by their _id (the key) and, completing a record whose initialization
 * was lost, by the record that holds them. */
static const struct index_spec specs[] = {
    {AFS_COLL_UPLOAD, "afs_status_lease", AFS_F_STATUS, AFS_F_LEASE_UNTIL},
    {AFS_COLL_UPLOAD, "afs_status_created", AFS_F_STATUS, AFS_F_CREATED},
    {AFS_COLL_UPLOAD, "afs_uid_session", AFS_F_UID, AFS_F_SESSION},
    {AFS_COLL_UPLOAD, "afs_session_status", AFS_F_SESSION, AFS_F_STATUS},
    {AFS_COLL_ASSET, "afs_partition_status", AFS_F_PARTITION, AFS_F_STATUS},
    {AFS_COLL_ASSET, "afs_partition_filepath", AFS_F_PARTITION, AFS_F_FILE_PATH},
    {AFS_COLL_ASSET, "afs_status_lease", AFS_F_STATUS, AFS_F_LEASE_UNTIL},
    {AFS_COLL_ASSET, "afs_path", AFS_F_PATH, NULL},
    {AFS_COLL_CALL, "afs_status_lease", AFS_F_STATUS, AFS_F_LEASE_UNTIL},
    {AFS_COLL_KEY_CLAIM, "afs_record", "recordId", NULL},
};

bool afs_indexes_ensure(struct afs_db *db, struct afs_error *err) {
  bool ok = true;
  mongoc_client_t *c = afs_db_pop(db);
  mongoc_database_t *d = mongoc_client_get_database(c, db->dbname);
  for (size_t i = 0; i < sizeof specs / sizeof specs[0] && ok; i++) {
    const struct index_spec *s = &specs[i];
    bson_t cmd = BSON_INITIALIZER, arr, ix, key;
    BSON_APPEND_UTF8(&cmd, "createIndexes", s->coll);
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &ix);
    BSON_APPEND_DOCUMENT_BEGIN(&ix, "key", &key);
    BSON_APPEND_INT32(&key, s->k1, 1);
    if (s->k2)
      BSON_APPEND_INT32(&key, s->k2, 1);
    bson_append_document_end(&ix, &key);
    BSON_APPEND_UTF8(&ix, "name", s->name);
    bson_append_document_end(&arr, &ix);
    bson_append_array_end(&cmd, &arr);
    bson_error_t berr;
    bson_t reply;
    if (!mongoc_database_write_command_with_opts(d, &cmd, NULL, &reply, &berr)) {
      char what[128];
      snprintf(what, sizeof what, "creating index %s on %s", s->name, s->coll);
      ok = afs_db_error(err, &berr, what);
    }
    bson_destroy(&reply);
    bson_destroy(&cmd);
  }
  mongoc_database_destroy(d);
  afs_db_push(db, c);
  return ok;
}
