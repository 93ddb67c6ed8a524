/* MongoDB access shared by both programs: one mongoc_client_pool_t per process.
 *
 * Threads pop a client, use it, and push it back (libmongoc clients are not
 * thread-safe; the pool is). Collections are looked up per use and destroyed by the
 * caller. Names of the Cosync collections live here so no module spells them twice.
 */
#ifndef ASSETFS_DB_H
#define ASSETFS_DB_H

#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "assetfs/cosync.h" /* the collections */
#include "assetfs/error.h"

/* The server error code of a duplicate key (an insert or upsert on a taken _id). */
#define AFS_DB_DUPLICATE_KEY 11000

struct afs_db {
  mongoc_client_pool_t *pool;
  char *dbname;
};

/* Calls mongoc_init() once per process (idempotent, thread-safe). */
void afs_db_global_init(void);

/* Opens the pool (does not connect yet; use afs_db_ping to check). appname shows up
 * in server logs. */
bool afs_db_open(struct afs_db *db, const char *uri, const char *dbname, const char *appname,
                 struct afs_error *err);
/* afs_db_open, and socket_timeout_ms (> 0) bounds how long one operation waits on a
 * server that stopped answering, unless the URI sets socketTimeoutMS itself (libmongoc's
 * own default is 5 minutes). */
bool afs_db_open_bounded(struct afs_db *db, const char *uri, const char *dbname,
                         const char *appname, int32_t socket_timeout_ms, struct afs_error *err);
void afs_db_close(struct afs_db *db);

/* Round trip to the server: false with err if it cannot be reached. */
bool afs_db_ping(struct afs_db *db, struct afs_error *err);

mongoc_client_t *afs_db_pop(struct afs_db *db);
void afs_db_push(struct afs_db *db, mongoc_client_t *client);

/* Caller destroys with mongoc_collection_destroy(). */
mongoc_collection_t *afs_db_coll(const struct afs_db *db, mongoc_client_t *client,
                                 const char *name);

/* Copies a bson_error_t into an afs_error, with context. Returns false. */
bool afs_db_error(struct afs_error *err, const bson_error_t *berr, const char *what);

#endif
