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

/* A record read once: every field under its rule, bad fields absent and named in order. */
static void test_record_read(void) {
  struct afs_error e = {0};
  struct afs_record r;
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, "60c3fc150000000000000001");
  bson_t *d = BCON_NEW("_id", BCON_OID(&oid), "uid", "u1", "filePath", "a/b.jpg", "contentType",
                       "image/jpeg", "_partition", "p", "expirationHours", BCON_INT32(12), "path",
                       "u1/a/b-1.jpg", "status", "uploaded", "size", BCON_INT64(42), "mtime",
                       BCON_DATE_TIME(1000), "createdAt", BCON_INT64(2000), "updatedAt",
                       "yesterday", "abandoned", BCON_BOOL(true), "xRes", BCON_INT32(640),
                       "duration", BCON_DOUBLE(1.5), "caption", "hi");
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    BSON_APPEND_UTF8(d, afs_read_url_field[p], "http://r");
    BSON_APPEND_UTF8(d, afs_write_url_field[p], "http://w");
  }
  afs_record_read(d, &r);
  CHECK(r.id.value_type == BSON_TYPE_OID && r.bad == 0 && afs_record_check(&r, AFS_RF_ALL, &e));
  CHECK(!strcmp(r.uid, "u1") && !strcmp(r.file_path, "a/b.jpg") && !strcmp(r.partition, "p"));
  CHECK(r.asset_partition == NULL && r.session == NULL && !r.has_seal);
  CHECK(r.hours.has && r.hours.v == 12 && r.hours.raw.value_type == BSON_TYPE_INT32);
  CHECK(r.size.has && r.size.v == 42 && r.mtime.has && r.mtime.ms == 1000);
  CHECK(r.created.has && r.created.ms == 2000 && r.created.from_number); /* ms: a date */
  CHECK(!r.mtime.from_number);
  CHECK(!r.updated.has); /* a string is not: absent, not bad */
  CHECK(r.abandoned && !strcmp(r.meta[AFS_META_CAPTION], "hi") && r.meta[AFS_META_COLOR] == NULL);
  const struct afs_rec_number *x = afs_record_meta_num(&r, AFS_META_XRES);
  CHECK(x->has && x->v == 640 && x->raw.value_type == BSON_TYPE_INT32); /* type kept */
  CHECK(afs_record_meta_num(&r, AFS_META_DURATION)->v == 1.5);
  CHECK(!afs_record_meta_num(&r, AFS_META_YRES)->has);
  for (int p = 0; p < AFS_PART_COUNT; p++) /* the URL tables name the same fields */
    CHECK(r.read_url[p] && !strcmp(r.read_url[p], "http://r") && r.write_url[p] &&
          !strcmp(r.write_url[p], "http://w"));
  for (int m = 0; m < AFS_META_COUNT; m++)
    CHECK(afs_meta_field[m] && *afs_meta_field[m]);
  afs_record_done(&r);
  bson_destroy(d);

  /* Bad fields: absent, marked, reported first in the order of enum afs_rf. */
  bson_t raw = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&raw, "uid", "first");
  BSON_APPEND_UTF8(&raw, "uid", "second"); /* a key given twice: the first counts */
  BSON_APPEND_DOUBLE(&raw, "expirationHours", NAN);
  BSON_APPEND_INT32(&raw, "contentType", 7);
  bson_append_utf8(&raw, "sessionId", -1, "a\0b", 3);
  bson_append_utf8(&raw, "caption", -1, "caf\xc3", 4);
  BSON_APPEND_UTF8(&raw, "yRes", "480");
  BSON_APPEND_NULL(&raw, "path");
  BSON_APPEND_UTF8(&raw, "brokerSeal", "");
  char big[300];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  BSON_APPEND_UTF8(&raw, "etag", big);
  afs_record_read(&raw, &r);
  CHECK(r.id.value_type == BSON_TYPE_EOD && !strcmp(r.uid, "first"));
  CHECK(!r.hours.has && !r.content_type && !r.session && !r.meta[AFS_META_CAPTION]);
  CHECK(r.path == NULL && !(r.bad & AFS_RF_BIT(AFS_RF_PATH))); /* null is absent */
  CHECK(r.has_seal && r.seal && !*r.seal);
  CHECK(!afs_record_check(&r, AFS_RF_ALL, &e) && strstr(e.msg, "contentType must be a string"));
  CHECK(!afs_record_check(&r, AFS_RF_BIT(AFS_RF_SESSION) | AFS_RF_BIT(AFS_RF_HOURS), &e) &&
        strstr(e.msg, "sessionId contains a NUL byte"));
  CHECK(!afs_record_check(&r, AFS_RF_BIT(AFS_RF_HOURS), &e) &&
        strstr(e.msg, "expirationHours is not a finite number"));
  CHECK(!afs_record_check(&r, AFS_RF_BIT(AFS_RF_META + AFS_META_CAPTION), &e) &&
        strstr(e.msg, "caption is not valid UTF-8"));
  CHECK(!afs_record_check(&r, AFS_RF_BIT(AFS_RF_META + AFS_META_YRES), &e) &&
        strstr(e.msg, "yRes must be a number"));
  CHECK(!afs_record_check(&r, AFS_RF_BIT(AFS_RF_ETAG), &e) && e.code == ENAMETOOLONG &&
        strstr(e.msg, "etag is 299 bytes (limit 256)"));
  CHECK(afs_record_check(&r, AFS_RF_BIT(AFS_RF_UID) | AFS_RF_BIT(AFS_RF_PATH), &e));
  afs_record_done(&r);
  afs_record_done(&r); /* done twice is harmless */
  bson_destroy(&raw);

  /* Dates out of range are absent, never undefined behaviour. */
  d = BCON_NEW("mtime", BCON_DOUBLE(1e300), "createdAt", BCON_DOUBLE(-INFINITY));
  afs_record_read(d, &r);
  CHECK(!r.mtime.has && !r.created.has);
  afs_record_done(&r);
  bson_destroy(d);
}

static void test_call_read(void) {
  struct afs_call_rec c;
  bson_t *d =
      BCON_NEW("_id", "c1", "name", "CosyncRefreshAsset", "uid", "u", "args", "[", "a1", "a2", "]");
  afs_call_read(d, &c);
  CHECK(c.bad == 0 && !strcmp(c.name, "CosyncRefreshAsset") && !strcmp(c.uid, "u"));
  CHECK(c.arg.value_type == BSON_TYPE_UTF8 && !strcmp(c.arg.value.v_utf8.str, "a1"));
  afs_call_done(&c);
  bson_destroy(d);

  d = BCON_NEW("_id", "c2", "name", "x", "args", "bare");
  afs_call_read(d, &c);
  CHECK(c.bad == 0 && c.arg.value_type == BSON_TYPE_UTF8 && c.uid == NULL);
  afs_call_done(&c);
  bson_destroy(d);

  d = BCON_NEW("_id", "c3", "name", BCON_INT32(5), "uid", BCON_INT32(1), "args", "[", "]");
  afs_call_read(d, &c);
  CHECK(c.bad == (AFS_CALL_BAD_NAME | AFS_CALL_BAD_UID | AFS_CALL_BAD_ARGS));
  CHECK(strstr(c.err.msg, "name must be a string")); /* the first, in order */
  afs_call_done(&c);
  bson_destroy(d);

  d = BCON_NEW("_id", "c4", "name", "x", "args", "[", "]");
  afs_call_read(d, &c);
  CHECK(c.bad == AFS_CALL_BAD_ARGS && strstr(c.err.msg, "args is empty"));
  afs_call_done(&c);
  bson_destroy(d);

  d = BCON_NEW("name", "x");
  afs_call_read(d, &c);
  CHECK(c.id.value_type == BSON_TYPE_EOD && c.bad == AFS_CALL_BAD_ARGS &&
        strstr(c.err.msg, "args is missing"));
  afs_call_done(&c);
  bson_destroy(d);
}

int main(void) {
  test_strings();
  test_numbers_dates_ids();
  test_claimable_filter();
  test_oid_at();
  test_record_read();
  test_call_read();
  TEST_MAIN_END();
}
