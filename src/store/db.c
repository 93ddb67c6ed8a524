#include "assetfs/db.h"
#include "assetfs/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;

static void do_init(void) {
  mongoc_init();
}

void afs_db_global_init(void) {
  pthread_once(&g_init_once, do_init);
}

bool afs_db_open(struct afs_db *db, const char *uri_str, const char *dbname, const char *appname,
                 struct afs_error *err) {
  return afs_db_open_bounded(db, uri_str, dbname, appname, 0, err);
}

bool afs_db_open_bounded(struct afs_db *db, const char *uri_str, const char *dbname,
                         const char *appname, int32_t socket_timeout_ms, struct afs_error *err) {
  bson_error_t berr;
  mongoc_uri_t *uri = NULL;
  memset(db, 0, sizeof *db);
  afs_db_global_init();
  uri = mongoc_uri_new_with_error(uri_str, &berr);
  if (!uri)
    return afs_db_error(err, &berr, "invalid MongoDB URI");
  /* The URI's password is a secret like the S3 key: no log line may carry it, whichever
   * module (or libmongoc, routed through our log) formats the URI. */
  const char *pw = mongoc_uri_get_password(uri);
  if (pw && *pw)
    afs_log_add_secret(pw);
  if (appname)
    mongoc_uri_set_appname(uri, appname);
  if (socket_timeout_ms > 0 && !mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS))
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, socket_timeout_ms);
  db->pool = mongoc_client_pool_new(uri);
  mongoc_uri_destroy(uri);
  if (!db->pool)
    return afs_error_set(err, EINVAL, "cannot create MongoDB client pool");
  mongoc_client_pool_set_error_api(db->pool, MONGOC_ERROR_API_VERSION_2);
  db->dbname = strdup(dbname);
  return true;
}

void afs_db_close(struct afs_db *db) {
  if (db->pool)
    mongoc_client_pool_destroy(db->pool);
  free(db->dbname);
  memset(db, 0, sizeof *db);
}

bool afs_db_ping(struct afs_db *db, struct afs_error *err) {
  bson_error_t berr;
  mongoc_client_t *c = afs_db_pop(db);
  bson_t *cmd = BCON_NEW("ping", BCON_INT32(1));
  bool ok = mongoc_client_command_simple(c, "admin", cmd, NULL, NULL, &berr);
  bson_destroy(cmd);
  afs_db_push(db, c);
  if (!ok)
    return afs_db_error(err, &berr, "MongoDB ping");
  return true;
}

mongoc_client_t *afs_db_pop(struct afs_db *db) {
  return mongoc_client_pool_pop(db->pool);
}

void afs_db_push(struct afs_db *db, mongoc_client_t *client) {
  if (client)
    mongoc_client_pool_push(db->pool, client);
}

mongoc_collection_t *afs_db_coll(const struct afs_db *db, mongoc_client_t *client,
                                 const char *name) {
  return mongoc_client_get_collection(client, db->dbname, name);
}

bool afs_db_error(struct afs_error *err, const bson_error_t *berr, const char *what) {
  int code = EIO;
  if (berr->domain == MONGOC_ERROR_SERVER_SELECTION || berr->domain == MONGOC_ERROR_STREAM)
    code = AFS_E_UNREACHABLE;
  return afs_error_set(err, code, "%s: %s", what, berr->message);
}
