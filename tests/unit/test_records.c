/* Tolerant reading of client-written records (include/assetfs/records.h) and the lease
 * claim filter: wrong types, NULs, invalid UTF-8, huge strings are errors, never crashes. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "afs_test.h"
#include "assetfs/lease.h"
#include "assetfs/records.h"

static void test_strings(void) {
  struct afs_error e = {0};
  const char *s;
  bson_t *d = BCON_NEW("a", "hello", "n", BCON_INT32(3), "z", BCON_NULL, "empty", "");
  CHECK(afs_rec_str(d, "a", 10, &s, &e) && s && !strcmp(s, "hello"));
  CHECK(afs_rec_str(d, "missing", 10, &s, &e) && s == NULL);
  CHECK(afs_rec_str(d, "z", 10, &s, &e) && s == NULL);
  CHECK(!afs_rec_str(d, "n", 10, &s, &e) && strstr(e.msg, "n must be a string"));
  CHECK(!afs_rec_str(d, "a", 3, &s, &e) && e.code == ENAMETOOLONG);
  CHECK(!afs_rec_str_req(d, "empty", 10, &s, &e) && strstr(e.msg, "empty is missing"));
  CHECK(!afs_rec_str_req(d, "missing", 10, &s, &e));
  bson_destroy(d);

  /* Raw bytes libbson accepts but a C string cannot hold. */
  bson_t raw = BSON_INITIALIZER;
  bson_append_utf8(&raw, "nul", 3, "a\0b", 3);
  bson_append_utf8(&raw, "bad", 3, "caf\xc3", 4);
  CHECK(!afs_rec_str(&raw, "nul", 10, &s, &e) && strstr(e.msg, "NUL"));
  CHECK(!afs_rec_str(&raw, "bad", 10, &s, &e) && strstr(e.msg, "UTF-8"));
  bson_destroy(&raw);
}

static void test_numbers_dates_ids(void) {
  struct afs_error e = {0};
  double v;
  bool has;
  bson_t *d = BCON_NEW("d", BCON_DOUBLE(1.5), "i", BCON_INT32(7), "l", BCON_INT64(1LL << 40), "s",
                       "24", "inf", BCON_DOUBLE(INFINITY), "nan", BCON_DOUBLE(NAN), "t",
                       BCON_DATE_TIME(1234), "_id", "custom");
  CHECK(afs_rec_num(d, "d", &v, &has, &e) && has && v == 1.5);
  CHECK(afs_rec_num(d, "i", &v, &has, &e) && has && v == 7);
  CHECK(afs_rec_num(d, "l", &v, &has, &e) && has && v == (double)(1LL << 40));
  CHECK(afs_rec_num(d, "nope", &v, &has, &e) && !has);
  CHECK(!afs_rec_num(d, "s", &v, &has, &e) && strstr(e.msg, "must be a number"));
  CHECK(!afs_rec_num(d, "inf", &v, &has, &e) && strstr(e.msg, "finite"));
  CHECK(!afs_rec_num(d, "nan", &v, &has, &e));
  int64_t t;
  afs_rec_date(d, "t", &t, &has);
  CHECK(has && t == 1234);
  afs_rec_date(d, "s", &t, &has);
  CHECK(!has);
  bson_value_t id;
  char buf[80];
  CHECK(afs_rec_id(d, &id));
  CHECK_STREQ(afs_rec_id_str(&id, buf, sizeof buf), "custom");
  bson_value_destroy(&id);
  bson_destroy(d);
}

static void test_claimable_filter(void) {
  bson_t *f = BCON_NEW("status", "pending");
  afs_lease_append_claimable(f, 1000);
  char *j = bson_as_relaxed_extended_json(f, NULL);
  CHECK(strstr(j, "\"$or\"") && strstr(j, "\"$not\"") && strstr(j, "\"$lt\""));
  bson_free(j);
  bson_destroy(f);
  CHECK(afs_now_ms() > 1600000000000LL);
}

static void test_oid_at(void) {
  bson_oid_t at, before, after;
  afs_rec_oid_at(1623456789000LL, &at);
  CHECK(bson_oid_get_time_t(&at) == 1623456789);
  bson_oid_init_from_string(&before, "60c3fc140000000000000fff"); /* one second earlier */
  bson_oid_init_from_string(&after, "60c3fc150000000000000001");  /* same second */
  CHECK(bson_oid_compare(&before, &at) < 0);
  CHECK(bson_oid_compare(&after, &at) > 0);
  afs_rec_oid_at(-5, &at);
  CHECK(bson_oid_get_time_t(&at) == 0);
}

int main(void) {
  test_strings();
  test_numbers_dates_ids();
  test_claimable_filter();
  test_oid_at();
  TEST_MAIN_END();
}
