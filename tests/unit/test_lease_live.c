/* Leases against the stack's MongoDB-compatible server (include/assetfs/lease.h): a
 * claimed record cannot be claimed again until its lease ends; writes under a stale
 * token miss; a release with a retry delay hides the record for that long. Needs
 * ASSETFS_MONGO_URI; exit 77 (skip) without it. */
#include <stdlib.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/db.h"
#include "assetfs/lease.h"

int main(void) {
  char dbname[64];
  const char *uri = afs_test_live_db("afs_lease", dbname, sizeof dbname);
  struct afs_db db;
  struct afs_error err = {0};
  CHECK(afs_db_open(&db, uri, dbname, "test_lease_live", &err));
  mongoc_client_t *c = afs_db_pop(&db);
  mongoc_collection_t *coll = afs_db_coll(&db, c, AFS_COLL_UPLOAD);
  afs_lease_set_owner("unit:1");
  for (int i = 0; i < 5; i++) {
    bson_t *d = BCON_NEW("n", BCON_INT32(i), "status", "pending");
    CHECK(mongoc_collection_insert_one(coll, d, NULL, NULL, NULL));
    bson_destroy(d);
  }
  bson_t *f = BCON_NEW("status", "pending");
  struct afs_lease_batch a, b2, one;
  CHECK(afs_lease_claim(coll, f, 3, 60000, &a, &err));
  CHECK(a.n == 3);
  CHECK(afs_lease_claim(coll, f, 10, 60000, &b2, &err));
  CHECK(b2.n == 2); /* only the unclaimed ones */
  CHECK(strcmp(a.token, b2.token) != 0);
  afs_lease_batch_free(&b2);
  CHECK(afs_lease_claim(coll, f, 10, 60000, &b2, &err));
  CHECK(b2.n == 0);
  afs_lease_batch_free(&b2);

  bson_iter_t it;
  CHECK(bson_iter_init_find(&it, a.docs[0], "_id"));
  bson_value_t id0;
  bson_value_copy(bson_iter_value(&it), &id0);
  bson_t *set = BCON_NEW("status", "initialized");
  CHECK(afs_lease_finish(coll, &id0, "someone-else", set, NULL, &err) == 0);
  CHECK(afs_lease_finish(coll, &id0, a.token, set, NULL, &err) == 1);
  CHECK(afs_lease_finish(coll, &id0, a.token, set, NULL, &err) == 0); /* lease ended */

  /* Release with a delay: invisible for that long, then claimable again (one record:
   * the findAndModify path). */
  CHECK(bson_iter_init_find(&it, a.docs[1], "_id"));
  bson_value_t id1;
  bson_value_copy(bson_iter_value(&it), &id1);
  CHECK(afs_lease_release(coll, &id1, a.token, 300, &err) == 1);
  bson_t *f1 = bson_copy(f);
  bson_append_value(f1, "_id", 3, &id1);
  CHECK(afs_lease_claim(coll, f1, 1, 60000, &one, &err));
  CHECK(one.n == 0);
  afs_lease_batch_free(&one);
  usleep(400000);
  CHECK(afs_lease_claim(coll, f1, 1, 60000, &one, &err));
  CHECK(one.n == 1);
  CHECK(afs_lease_delete(coll, &id1, one.token, &err) == 1);
  afs_lease_batch_free(&one);

  /* An expired lease is claimable by anyone. */
  CHECK(bson_iter_init_find(&it, a.docs[2], "_id"));
  bson_value_t id2;
  bson_value_copy(bson_iter_value(&it), &id2);
  bson_t *expire = BCON_NEW("$set", "{", "leaseUntil", BCON_DATE_TIME(afs_now_ms() - 1), "}");
  bson_t sel = BSON_INITIALIZER;
  bson_append_value(&sel, "_id", 3, &id2);
  CHECK(mongoc_collection_update_one(coll, &sel, expire, NULL, NULL, NULL));
  CHECK(afs_lease_claim(coll, f, 10, 60000, &b2, &err));
  CHECK(b2.n == 1);
  afs_lease_batch_free(&b2);

  /* limit 1 is one findAndModify: the oldest claimable record, claimed and read. */
  bson_value_t id5;
  bson_t *d5 = BCON_NEW("n", BCON_INT32(5), "status", "fresh", "filePath", "a.bin");
  CHECK(mongoc_collection_insert_one(coll, d5, NULL, NULL, NULL));
  bson_t *d6 = BCON_NEW("n", BCON_INT32(6), "status", "fresh");
  CHECK(mongoc_collection_insert_one(coll, d6, NULL, NULL, NULL));
  bson_t *ff = BCON_NEW("status", "fresh");
  CHECK(afs_lease_claim(coll, ff, 1, 60000, &one, &err));
  CHECK(one.n == 1);
  CHECK(bson_iter_init_find(&it, one.docs[0], "n") && bson_iter_int32(&it) == 5);
  CHECK(bson_iter_init_find(&it, one.docs[0], "leaseOwner"));
  CHECK_STREQ(bson_iter_utf8(&it, NULL), one.token);
  CHECK(bson_iter_init_find(&it, one.docs[0], "_id"));
  bson_value_copy(bson_iter_value(&it), &id5);
  /* The finish that returns the record: what a client wrote meanwhile is in it. */
  bson_t *rn = BCON_NEW("$set", "{", "filePath", "b.bin", "}");
  bson_t s5 = BSON_INITIALIZER;
  bson_append_value(&s5, "_id", 3, &id5);
  CHECK(mongoc_collection_update_one(coll, &s5, rn, NULL, NULL, NULL));
  bson_t after;
  bson_t *done5 = BCON_NEW("status", "done");
  CHECK(afs_lease_finish_doc(coll, &id5, "someone-else", done5, NULL, &after, &err) == 0);
  CHECK(bson_empty(&after));
  bson_destroy(&after);
  CHECK(afs_lease_finish_doc(coll, &id5, one.token, done5, NULL, &after, &err) == 1);
  CHECK(bson_iter_init_find(&it, &after, "filePath"));
  CHECK_STREQ(bson_iter_utf8(&it, NULL), "b.bin");
  CHECK(bson_iter_init_find(&it, &after, "status"));
  CHECK_STREQ(bson_iter_utf8(&it, NULL), "done");
  CHECK(!bson_iter_init_find(&it, &after, "leaseOwner"));
  bson_destroy(&after);
  afs_lease_batch_free(&one);
  /* The next claim of one gets the other; a batch claim reads nothing twice. */
  CHECK(afs_lease_claim(coll, ff, 5, 60000, &one, &err));
  CHECK(one.n == 1);
  CHECK(bson_iter_init_find(&it, one.docs[0], "n") && bson_iter_int32(&it) == 6);
  afs_lease_batch_free(&one);
  CHECK(afs_lease_claim(coll, ff, 1, 60000, &one, &err));
  CHECK(one.n == 0);
  afs_lease_batch_free(&one);
  bson_destroy(done5);
  bson_destroy(&s5);
  bson_destroy(rn);
  bson_destroy(ff);
  bson_destroy(d6);
  bson_destroy(d5);
  bson_value_destroy(&id5);

  /* Burst claims: candidates are read without claiming; each is then claimed by _id once,
   * only while it still matches the filter. */
  for (int i = 10; i < 13; i++) {
    bson_t *d = BCON_NEW("n", BCON_INT32(i), "status", "burst");
    CHECK(mongoc_collection_insert_one(coll, d, NULL, NULL, NULL));
    bson_destroy(d);
  }
  bson_t *fb = BCON_NEW("status", "burst");
  bson_value_t *cids = NULL;
  size_t ncids = 0;
  CHECK(afs_lease_candidates(coll, fb, 2, &cids, &ncids, &err));
  CHECK(ncids == 2); /* the limit holds */
  afs_lease_ids_free(cids, ncids);
  CHECK(afs_lease_candidates(coll, fb, 10, &cids, &ncids, &err));
  CHECK(ncids == 3);
  afs_lease_ids_free(cids, ncids);
  /* Reading candidates claims nothing. */
  CHECK(afs_lease_candidates(coll, fb, 10, &cids, &ncids, &err));
  struct afs_lease_batch c1, c2;
  CHECK(afs_lease_claim_id(coll, fb, &cids[0], 60000, &c1, &err));
  CHECK(c1.n == 1);
  CHECK(bson_iter_init_find(&it, c1.docs[0], "leaseOwner"));
  CHECK_STREQ(bson_iter_utf8(&it, NULL), c1.token);
  CHECK(afs_lease_claim_id(coll, fb, &cids[0], 60000, &c2, &err));
  CHECK(c2.n == 0); /* leased */
  afs_lease_batch_free(&c2);
  bson_t *other = BCON_NEW("status", "elsewhere");
  CHECK(afs_lease_claim_id(coll, other, &cids[1], 60000, &c2, &err));
  CHECK(c2.n == 0); /* no longer matches the source */
  afs_lease_batch_free(&c2);
  bson_destroy(other);
  afs_lease_ids_free(cids, ncids);
  CHECK(afs_lease_candidates(coll, fb, 10, &cids, &ncids, &err));
  CHECK(ncids == 2); /* the claimed one is not a candidate */
  afs_lease_ids_free(cids, ncids);
  afs_lease_batch_free(&c1);
  bson_destroy(fb);

  bson_destroy(&sel);
  bson_destroy(expire);
  bson_destroy(f1);
  bson_destroy(set);
  bson_destroy(f);
  bson_value_destroy(&id0);
  bson_value_destroy(&id1);
  bson_value_destroy(&id2);
  afs_lease_batch_free(&a);
  mongoc_database_t *d = mongoc_client_get_database(c, dbname);
  mongoc_database_drop(d, NULL);
  mongoc_database_destroy(d);
  mongoc_collection_destroy(coll);
  afs_db_push(&db, c);
  afs_db_close(&db);
  mongoc_cleanup();
  TEST_MAIN_END();
}
