/* Upload, asset and function-call records read once (records.h): one table of the fields
 * assetfs acts on, each with its kind and limit, so every reader in both programs sees a
 * field under the same rule, and the broker reports a bad field the same way wherever it
 * meets it. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "assetfs/cosync.h"
#include "assetfs/records.h"
#include "assetfs/strutil.h"

#define META_STR_MAX 65536
#define URL_MAX 65536

const char *const afs_meta_field[AFS_META_COUNT] = {AFS_F_CAPTION, "color", "extra",
                                                    "containerId", "title", "transactionId",
                                                    "duration",    "xRes",  "yRes"};

enum kind { K_STR, K_NUM, K_DATE, K_BOOL };

/* Why a field failed its check (struct afs_record.why). */
enum why { WHY_OK, WHY_NOT_STR, WHY_LONG, WHY_NUL, WHY_UTF8, WHY_NOT_NUM, WHY_NOT_FINITE };

struct field {
  const char *name;
  enum kind kind;
  size_t max; /* strings: bytes */
  size_t off; /* offsetof the member in struct afs_record */
};

#define F(rf, n, k, m, member) [rf] = {n, k, m, offsetof(struct afs_record, member)}
static const struct field fields[AFS_RF_COUNT] = {
    F(AFS_RF_UID, AFS_F_UID, K_STR, AFS_UID_MAX, uid),
    F(AFS_RF_FILE_PATH, AFS_F_FILE_PATH, K_STR, AFS_FILEPATH_MAX, file_path),
    F(AFS_RF_CONTENT_TYPE, AFS_F_CONTENT_TYPE, K_STR, 255, content_type),
    F(AFS_RF_PARTITION, AFS_F_PARTITION, K_STR, 1024, partition),
    F(AFS_RF_ASSET_PARTITION, AFS_F_ASSET_PARTITION, K_STR, 1024, asset_partition),
    F(AFS_RF_SESSION, AFS_F_SESSION, K_STR, 256, session),
    F(AFS_RF_HOURS, AFS_F_HOURS, K_NUM, 0, hours),
    F(AFS_RF_PATH, AFS_F_PATH, K_STR, AFS_KEY_MAX, path),
    F(AFS_RF_SEAL, AFS_F_SEAL, K_STR, 64, seal),
    F(AFS_RF_STATUS, AFS_F_STATUS, K_STR, 64, status),
    F(AFS_RF_ERROR, AFS_F_ERROR, K_STR, 4096, error),
    F(AFS_RF_ETAG, AFS_F_ETAG, K_STR, 256, etag),
    F(AFS_RF_SIZE, AFS_F_SIZE, K_NUM, 0, size),
    F(AFS_RF_MTIME, AFS_F_MTIME, K_DATE, 0, mtime),
    F(AFS_RF_CREATED, AFS_F_CREATED, K_DATE, 0, created),
    F(AFS_RF_UPDATED, AFS_F_UPDATED, K_DATE, 0, updated),
    F(AFS_RF_EXPIRATION, AFS_F_EXPIRATION, K_DATE, 0, expiration),
    F(AFS_RF_INITIALIZED_AT, AFS_F_INITIALIZED_AT, K_DATE, 0, initialized_at),
    F(AFS_RF_VERSION_AT, AFS_F_VERSION_AT, K_DATE, 0, version_at),
    F(AFS_RF_ABANDONED, AFS_F_ABANDONED, K_BOOL, 0, abandoned),
    F(AFS_RF_MP_UPLOAD_ID, AFS_F_MP_UPLOAD_ID, K_STR, 1024, mp_upload_id),
    F(AFS_RF_META + AFS_META_CAPTION, AFS_F_CAPTION, K_STR, META_STR_MAX, meta[AFS_META_CAPTION]),
    F(AFS_RF_META + AFS_META_COLOR, "color", K_STR, META_STR_MAX, meta[AFS_META_COLOR]),
    F(AFS_RF_META + AFS_META_EXTRA, "extra", K_STR, META_STR_MAX, meta[AFS_META_EXTRA]),
    F(AFS_RF_META + AFS_META_CONTAINER, "containerId", K_STR, META_STR_MAX,
      meta[AFS_META_CONTAINER]),
    F(AFS_RF_META + AFS_META_TITLE, "title", K_STR, META_STR_MAX, meta[AFS_META_TITLE]),
    F(AFS_RF_META + AFS_META_TRANSACTION, "transactionId", K_STR, META_STR_MAX,
      meta[AFS_META_TRANSACTION]),
    F(AFS_RF_META + AFS_META_DURATION, "duration", K_NUM, 0, meta_num[0]),
    F(AFS_RF_META + AFS_META_XRES, "xRes", K_NUM, 0, meta_num[1]),
    F(AFS_RF_META + AFS_META_YRES, "yRes", K_NUM, 0, meta_num[2]),
    F(AFS_RF_READ_URL + AFS_PART_ORIGINAL, "url", K_STR, URL_MAX, read_url[AFS_PART_ORIGINAL]),
    F(AFS_RF_READ_URL + AFS_PART_SMALL, "urlSmall", K_STR, URL_MAX, read_url[AFS_PART_SMALL]),
    F(AFS_RF_READ_URL + AFS_PART_MEDIUM, "urlMedium", K_STR, URL_MAX, read_url[AFS_PART_MEDIUM]),
    F(AFS_RF_READ_URL + AFS_PART_LARGE, "urlLarge", K_STR, URL_MAX, read_url[AFS_PART_LARGE]),
    F(AFS_RF_READ_URL + AFS_PART_PREVIEW, "urlVideoPreview", K_STR, URL_MAX,
      read_url[AFS_PART_PREVIEW]),
    F(AFS_RF_WRITE_URL + AFS_PART_ORIGINAL, "writeUrl", K_STR, URL_MAX,
      write_url[AFS_PART_ORIGINAL]),
    F(AFS_RF_WRITE_URL + AFS_PART_SMALL, "writeUrlSmall", K_STR, URL_MAX,
      write_url[AFS_PART_SMALL]),
    F(AFS_RF_WRITE_URL + AFS_PART_MEDIUM, "writeUrlMedium", K_STR, URL_MAX,
      write_url[AFS_PART_MEDIUM]),
    F(AFS_RF_WRITE_URL + AFS_PART_LARGE, "writeUrlLarge", K_STR, URL_MAX,
      write_url[AFS_PART_LARGE]),
    F(AFS_RF_WRITE_URL + AFS_PART_PREVIEW, "writeUrlVideoPreview", K_STR, URL_MAX,
      write_url[AFS_PART_PREVIEW]),
};
/* The metadata fields and the meta_num slots line up with enum afs_meta. */
_Static_assert(AFS_META_COUNT - AFS_META_STRINGS == 3, "meta_num slots");
_Static_assert(AFS_RF_COUNT <= 64, "AFS_RF_BIT fits in 64 bits");
_Static_assert(AFS_RF_READ_URL == AFS_RF_META + AFS_META_COUNT, "metadata fields in enum afs_rf");

static enum why read_str(const bson_iter_t *it, size_t max, const char **out, uint32_t *len) {
  if (!BSON_ITER_HOLDS_UTF8(it))
    return WHY_NOT_STR;
  const char *s = bson_iter_utf8(it, len);
  if (*len > max)
    return WHY_LONG;
  if (memchr(s, '\0', *len))
    return WHY_NUL;
  if (!afs_utf8_valid(s, *len))
    return WHY_UTF8;
  *out = s;
  return WHY_OK;
}

static enum why read_num(const bson_iter_t *it, struct afs_rec_number *out) {
  double v;
  int rc = afs_rec_iter_num(it, &v);
  if (rc == 0)
    return WHY_NOT_NUM;
  if (rc < 0)
    return WHY_NOT_FINITE;
  out->has = true;
  out->v = v;
  out->raw = *bson_iter_value((bson_iter_t *)it); /* a number: no pointers into the iterator */
  return WHY_OK;
}

/* Dates as BSON dates; finite numbers taken as ms since the epoch (some clients write
 * them so). Anything else is absent. */
static void read_date(const bson_iter_t *it, struct afs_rec_date *out) {
  if (BSON_ITER_HOLDS_DATE_TIME(it)) {
    out->ms = bson_iter_date_time(it);
    out->has = true;
    return;
  }
  struct afs_rec_number n = {0};
  if (read_num(it, &n) == WHY_OK && fabs(n.v) < 9.2e18) {
    out->ms = (int64_t)n.v;
    out->has = out->from_number = true;
  }
}

static void read_field(struct afs_record *r, enum afs_rf f, const bson_iter_t *it) {
  const struct field *d = &fields[f];
  char *at = (char *)r + d->off;
  enum why w = WHY_OK;
  if (BSON_ITER_HOLDS_NULL(it) || bson_iter_type(it) == BSON_TYPE_UNDEFINED)
    return; /* null is absent */
  switch (d->kind) {
  case K_STR:
    w = read_str(it, d->max, (const char **)at, &r->len[f]);
    if (w != WHY_OK)
      *(const char **)at = NULL;
    break;
  case K_NUM:
    w = read_num(it, (struct afs_rec_number *)at);
    break;
  case K_DATE:
    read_date(it, (struct afs_rec_date *)at);
    break;
  case K_BOOL:
    *(bool *)at = BSON_ITER_HOLDS_BOOL(it) && bson_iter_bool(it);
    break;
  }
  if (w != WHY_OK) {
    r->bad |= AFS_RF_BIT(f);
    r->why[f] = (unsigned char)w;
  }
}

void afs_record_read(const bson_t *doc, struct afs_record *r) {
  memset(r, 0, sizeof *r);
  r->doc = doc;
  bson_iter_t it;
  uint64_t seen = 0; /* a key given twice counts once, the first time (as a find would) */
  if (!bson_iter_init(&it, doc))
    return;
  while (bson_iter_next(&it)) {
    const char *k = bson_iter_key(&it);
    if (!strcmp(k, AFS_F_ID)) {
      if (r->id.value_type == BSON_TYPE_EOD)
        bson_value_copy(bson_iter_value(&it), &r->id);
      continue;
    }
    if (!strcmp(k, AFS_F_SEAL))
      r->has_seal = true;
    for (int f = 0; f < AFS_RF_COUNT; f++) {
      if (!strcmp(k, fields[f].name)) {
        if (!(seen & AFS_RF_BIT(f)))
          read_field(r, (enum afs_rf)f, &it);
        seen |= AFS_RF_BIT(f);
        break;
      }
    }
  }
}

void afs_record_done(struct afs_record *r) {
  if (r->id.value_type != BSON_TYPE_EOD)
    bson_value_destroy(&r->id);
  memset(&r->id, 0, sizeof r->id);
}

bool afs_record_check(const struct afs_record *r, uint64_t mask, struct afs_error *err) {
  uint64_t hit = r->bad & mask;
  if (!hit)
    return true;
  int f = __builtin_ctzll(hit);
  const struct field *d = &fields[f];
  switch ((enum why)r->why[f]) {
  case WHY_NOT_STR:
    return afs_error_set(err, EINVAL, "%s must be a string", d->name);
  case WHY_LONG:
    return afs_error_set(err, ENAMETOOLONG, "%s is %u bytes (limit %zu)", d->name, r->len[f],
                         d->max);
  case WHY_NUL:
    return afs_error_set(err, EINVAL, "%s contains a NUL byte", d->name);
  case WHY_UTF8:
    return afs_error_set(err, EINVAL, "%s is not valid UTF-8", d->name);
  case WHY_NOT_NUM:
    return afs_error_set(err, EINVAL, "%s must be a number", d->name);
  case WHY_NOT_FINITE:
    return afs_error_set(err, EINVAL, "%s is not a finite number", d->name);
  case WHY_OK:
    break;
  }
  return afs_error_set(err, EINVAL, "%s is not valid", d->name);
}

/* ---- upload statuses ---- */

static const char *const status_names[] = {
    [AFS_US_NONE] = "",
    [AFS_US_PENDING] = AFS_UPLOAD_PENDING,
    [AFS_US_INITIALIZED] = AFS_UPLOAD_INITIALIZED,
    [AFS_US_UPLOADED] = AFS_UPLOAD_UPLOADED,
    [AFS_US_COMPLETED] = AFS_UPLOAD_COMPLETED,
    [AFS_US_ERROR] = AFS_UPLOAD_ERROR,
    [AFS_US_OTHER] = "(unknown)",
};

enum afs_upload_status afs_upload_status_of(const char *s) {
  if (!s || !*s)
    return AFS_US_NONE;
  for (int i = AFS_US_PENDING; i < AFS_US_OTHER; i++)
    if (!strcmp(s, status_names[i]))
      return (enum afs_upload_status)i;
  return AFS_US_OTHER;
}

const char *afs_upload_status_name(enum afs_upload_status st) {
  return (unsigned)st <= AFS_US_OTHER ? status_names[st] : "(unknown)";
}

/* ---- function calls ---- */

static void call_bad(struct afs_call_rec *c, unsigned bit, const struct afs_error *e) {
  if (!c->bad)
    c->err = *e;
  c->bad |= bit;
}

void afs_call_read(const bson_t *doc, struct afs_call_rec *c) {
  struct afs_error e = {0};
  bson_iter_t it, sub;
  memset(c, 0, sizeof *c);
  afs_rec_id(doc, &c->id);
  if (!afs_rec_str_req(doc, AFS_F_CALL_NAME, 128, &c->name, &e))
    call_bad(c, AFS_CALL_BAD_NAME, &e);
  if (!afs_rec_str(doc, AFS_F_UID, AFS_UID_MAX, &c->uid, &e))
    call_bad(c, AFS_CALL_BAD_UID, &e);
  afs_rec_str(doc, AFS_F_SESSION, 256, &c->session, NULL);
  afs_rec_str(doc, AFS_F_STATUS, 64, &c->status, NULL);
  if (!bson_iter_init_find(&it, doc, AFS_F_CALL_ARGS)) {
    afs_error_set(&e, EINVAL, "args is missing");
    call_bad(c, AFS_CALL_BAD_ARGS, &e);
  } else if (!BSON_ITER_HOLDS_ARRAY(&it)) {
    bson_value_copy(bson_iter_value(&it), &c->arg); /* a bare value instead of an array */
  } else if (!bson_iter_recurse(&it, &sub) || !bson_iter_next(&sub)) {
    afs_error_set(&e, EINVAL, "args is empty");
    call_bad(c, AFS_CALL_BAD_ARGS, &e);
  } else {
    bson_value_copy(bson_iter_value(&sub), &c->arg);
  }
}

void afs_call_done(struct afs_call_rec *c) {
  if (c->id.value_type != BSON_TYPE_EOD)
    bson_value_destroy(&c->id);
  if (c->arg.value_type != BSON_TYPE_EOD)
    bson_value_destroy(&c->arg);
  memset(c, 0, sizeof *c);
}
