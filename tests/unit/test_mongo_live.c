/* Proof that libmongoc (Debian's 1.23) works against the stack's MongoDB-compatible
 * server: insert, find, and a conditional findAndModify, the primitive every broker
 * state change is built on. Needs ASSETFS_MONGO_URI (tests/run sets it); exit 77 (skip)
 * without it. */
#include <stdlib.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/db.h"

int main(void) {
  char dbname[64];
  const char *uri = afs_test_live_db("afs_unit", dbname, sizeof dbname);
  struct afs_db db;
  struct afs_error err = {0};
  bson_error_t berr;
  CHECK(afs_db_open(&db, uri, dbname, "test_mongo_live", &err));
  CHECK(afs_db_ping(&db, &err));
  mongoc_client_t *c = afs_db_pop(&db);
  mongoc_collection_t *coll = afs_db_coll(&db, c, AFS_COLL_UPLOAD);

  bson_oid_t oid;
  bson_oid_init(&oid, NULL);
  bson_t *doc = BCON_NEW("_id", BCON_OID(&oid), "status", "pending", "filePath", "a/b.jpg");
  CHECK(mongoc_collection_insert_one(coll, doc, NULL, NULL, &berr));
  bson_destroy(doc);

  bson_t *q = BCON_NEW("_id", BCON_OID(&oid));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, NULL, NULL);
  const bson_t *found;
  int n = 0;
  while (mongoc_cursor_next(cur, &found)) {
    bson_iter_t it;
    CHECK(bson_iter_init_find(&it, found, "filePath"));
    CHECK_STREQ(bson_iter_utf8(&it, NULL), "a/b.jpg");
    n++;
  }
  CHECK(!mongoc_cursor_error(cur, &berr));
  CHECK(n == 1);
  mongoc_cursor_destroy(cur);
  bson_destroy(q);

  /* Conditional: only a pending record moves to initialized; the second try must miss. */
  for (int round = 0; round < 2; round++) {
    bson_t *sel = BCON_NEW("_id", BCON_OID(&oid), "status", "pending");
    bson_t *upd = BCON_NEW("$set", "{", "status", "initialized", "}");
    bson_t reply;
    CHECK(mongoc_collection_find_and_modify(coll, sel, NULL, upd, NULL, false, false, true, &reply,
                                            &berr));
    bson_iter_t it;
    bool got = bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it);
    CHECK(got == (round == 0));
    bson_destroy(&reply);
    bson_destroy(sel);
    bson_destroy(upd);
  }
  mongoc_database_t *d = mongoc_client_get_database(c, dbname);
  mongoc_database_drop(d, NULL);
  mongoc_database_destroy(d);
  mongoc_collection_destroy(coll);
  afs_db_push(&db, c);
  afs_db_close(&db);
  mongoc_cleanup();
  TEST_MAIN_END();
}
