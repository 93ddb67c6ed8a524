/* Work on records read without a claim (include/assetfs/lease.h): afs_lease_peek reads
 * claimable records whole and skips leased ones; a finish with a NULL token applies only
 * while the record is in the given status and nobody's lease is live, and releases
 * nothing; afs_lease_defer hides a record for a while without an owner. Needs
 * ASSETFS_MONGO_URI; exit 77 (skip) without it. */
#include <stdlib.h>
#include <string.h>

#include "afs_test.h"
#include "assetfs/db.h"
#include "assetfs/lease.h"

static bson_t *read_id(mongoc_collection_t *coll, const bson_value_t *id) {
  bson_t q = BSON_INITIALIZER;
  bson_append_value(&q, "_id", 3, id);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &q, NULL, NULL);
  const bson_t *d;
  bson_t *out = mongoc_cursor_next(cur, &d) ? bson_copy(d) : NULL;
  mongoc_cursor_destroy(cur);
  bson_destroy(&q);
  return out;
}

static const char *str_of(const bson_t *d, const char *key) {
  bson_iter_t it;
  return d && bson_iter_init_find(&it, d, key) && BSON_ITER_HOLDS_UTF8(&it)
             ? bson_iter_utf8(&it, NULL)
             : NULL;
}

int main(void) {
  char dbname[64];
  const char *uri = afs_test_live_db("afs_unclaimed", dbname, sizeof dbname);
  struct afs_db db;
  struct afs_error err = {0};
  CHECK(afs_db_open(&db, uri, dbname, "test_lease_unclaimed", &err));
  mongoc_client_t *c = afs_db_pop(&db);
  mongoc_collection_t *coll = afs_db_coll(&db, c, AFS_COLL_UPLOAD);
  afs_lease_set_owner("unit:2");
  for (int i = 0; i < 4; i++) {
    bson_t *d = BCON_NEW("n", BCON_INT32(i), "status", "pending", "filePath", "a.bin");
    CHECK(mongoc_collection_insert_one(coll, d, NULL, NULL, NULL));
    bson_destroy(d);
  }
  bson_t *f = BCON_NEW("status", "pending");

  /* Whole records, nothing claimed. */
  bson_t **docs;
  size_t n;
  CHECK(afs_lease_peek(coll, f, 10, &docs, &n, &err));
  CHECK(n == 4);
  CHECK(str_of(docs[0], "filePath") && !strcmp(str_of(docs[0], "filePath"), "a.bin"));
  bson_iter_t it;
  CHECK(!bson_iter_init_find(&it, docs[0], "leaseOwner"));
  bson_value_t id[4];
  for (size_t i = 0; i < 4; i++) {
    CHECK(bson_iter_init_find(&it, docs[i], "_id"));
    bson_value_copy(bson_iter_value(&it), &id[i]);
  }
  afs_lease_docs_free(docs, n);
  CHECK(afs_lease_peek(coll, f, 2, &docs, &n, &err));
  CHECK(n == 2);
  afs_lease_docs_free(docs, n);

  /* A record claimed by someone is neither peeked nor finished without a token. */
  struct afs_lease_batch held;
  CHECK(afs_lease_claim_id(coll, f, &id[0], 60000, &held, &err));
  CHECK(held.n == 1);
  CHECK(afs_lease_peek(coll, f, 10, &docs, &n, &err));
  CHECK(n == 3);
  afs_lease_docs_free(docs, n);
  bson_t *set = BCON_NEW("status", "initialized");
  CHECK(afs_lease_finish_from(coll, &id[0], NULL, "pending", set, NULL, &err) == 0);
  bson_t *d0 = read_id(coll, &id[0]);
  CHECK(str_of(d0, "status") && !strcmp(str_of(d0, "status"), "pending"));
  CHECK(str_of(d0, "leaseOwner") && !strcmp(str_of(d0, "leaseOwner"), held.token));
  bson_destroy(d0);
  /* ...nor deferred; and a NULL-token release sends nothing. */
  CHECK(afs_lease_defer(coll, &id[0], "pending", 5000, &err) == 0);
  CHECK(afs_lease_release(coll, &id[0], NULL, 0, &err) == 0);
  afs_lease_batch_free(&held);

  /* Unleased and pending: the finish applies once; a second one (a duplicate read)
   * matches nothing, and neither applies to a record that moved on. */
  CHECK(afs_lease_finish_from(coll, &id[1], NULL, "pending", set, NULL, &err) == 1);
  CHECK(afs_lease_finish_from(coll, &id[1], NULL, "pending", set, NULL, &err) == 0);
  bson_t *d1 = read_id(coll, &id[1]);
  CHECK(str_of(d1, "status") && !strcmp(str_of(d1, "status"), "initialized"));
  bson_destroy(d1);

  /* An expired lease does not stop it. */
  bson_t sel = BSON_INITIALIZER;
  bson_append_value(&sel, "_id", 3, &id[2]);
  bson_t *expired = BCON_NEW("$set", "{", "leaseOwner", "gone:1", "leaseUntil",
                             BCON_DATE_TIME(afs_now_ms() - 1000), "}");
  CHECK(mongoc_collection_update_one(coll, &sel, expired, NULL, NULL, NULL));
  CHECK(afs_lease_finish_from(coll, &id[2], NULL, "pending", set, NULL, &err) == 1);
  bson_t *d2 = read_id(coll, &id[2]);
  CHECK(!bson_iter_init_find(&it, d2, "leaseOwner"));
  CHECK(!bson_iter_init_find(&it, d2, "leaseUntil"));
  bson_destroy(d2);

  /* Deferred: hidden from the poll and from other unclaimed finishes, no owner. */
  CHECK(afs_lease_defer(coll, &id[3], "pending", 60000, &err) == 1);
  CHECK(afs_lease_peek(coll, f, 10, &docs, &n, &err));
  CHECK(n == 0); /* id[0] is held, id[1] and id[2] moved on, id[3] is deferred */
  afs_lease_docs_free(docs, n);
  bson_t *d3 = read_id(coll, &id[3]);
  CHECK(!bson_iter_init_find(&it, d3, "leaseOwner"));
  CHECK(bson_iter_init_find(&it, d3, "leaseUntil"));
  bson_destroy(d3);
  CHECK(afs_lease_finish_from(coll, &id[3], NULL, "pending", set, NULL, &err) == 0);

  bson_destroy(expired);
  bson_destroy(&sel);
  bson_destroy(set);
  bson_destroy(f);
  for (size_t i = 0; i < 4; i++)
    bson_value_destroy(&id[i]);
  mongoc_database_t *d = mongoc_client_get_database(c, dbname);
  mongoc_database_drop(d, NULL);
  mongoc_database_destroy(d);
  mongoc_collection_destroy(coll);
  afs_db_push(&db, c);
  afs_db_close(&db);
  mongoc_cleanup();
  TEST_MAIN_END();
}
