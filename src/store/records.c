#include "assetfs/records.h"
#include "assetfs/cosync.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "assetfs/naming.h"

const char *const afs_write_url_field[] = {"writeUrl", "writeUrlSmall", "writeUrlMedium",
                                           "writeUrlLarge", "writeUrlVideoPreview"};
const char *const afs_read_url_field[] = {"url", "urlSmall", "urlMedium", "urlLarge",
                                          "urlVideoPreview"};

bool afs_rec_str(const bson_t *doc, const char *field, size_t max, const char **out,
                 struct afs_error *err) {
  bson_iter_t it;
  *out = NULL;
  if (!bson_iter_init_find(&it, doc, field) || BSON_ITER_HOLDS_NULL(&it) ||
      bson_iter_type(&it) == BSON_TYPE_UNDEFINED)
    return true;
  if (!BSON_ITER_HOLDS_UTF8(&it))
    return afs_error_set(err, EINVAL, "%s must be a string", field);
  uint32_t len;
  const char *s = bson_iter_utf8(&it, &len);
  if (len > max)
    return afs_error_set(err, ENAMETOOLONG, "%s is %u bytes (limit %zu)", field, len, max);
  if (memchr(s, '\0', len))
    return afs_error_set(err, EINVAL, "%s contains a NUL byte", field);
  if (!afs_utf8_valid(s, len))
    return afs_error_set(err, EINVAL, "%s is not valid UTF-8", field);
  *out = s;
  return true;
}

bool afs_rec_str_req(const bson_t *doc, const char *field, size_t max, const char **out,
                     struct afs_error *err) {
  if (!afs_rec_str(doc, field, max, out, err))
    return false;
  if (!*out || !**out)
    return afs_error_set(err, EINVAL, "%s is missing", field);
  return true;
}

int afs_rec_iter_num(const bson_iter_t *it, double *out) {
  switch (bson_iter_type(it)) {
  case BSON_TYPE_DOUBLE:
    *out = bson_iter_double(it);
    break;
  case BSON_TYPE_INT32:
    *out = bson_iter_int32(it);
    break;
  case BSON_TYPE_INT64:
    *out = (double)bson_iter_int64(it);
    break;
  default:
    return 0;
  }
  return isfinite(*out) ? 1 : -1;
}

bool afs_rec_num(const bson_t *doc, const char *field, double *out, bool *present,
                 struct afs_error *err) {
  bson_iter_t it;
  *present = false;
  if (!bson_iter_init_find(&it, doc, field) || BSON_ITER_HOLDS_NULL(&it) ||
      bson_iter_type(&it) == BSON_TYPE_UNDEFINED)
    return true;
  double v;
  int rc = afs_rec_iter_num(&it, &v);
  if (rc == 0)
    return afs_error_set(err, EINVAL, "%s must be a number", field);
  if (rc < 0)
    return afs_error_set(err, EINVAL, "%s is not a finite number", field);
  *out = v;
  *present = true;
  return true;
}

void afs_rec_date(const bson_t *doc, const char *field, int64_t *out, bool *present) {
  bson_iter_t it;
  *present = false;
  if (bson_iter_init_find(&it, doc, field) && BSON_ITER_HOLDS_DATE_TIME(&it)) {
    *out = bson_iter_date_time(&it);
    *present = true;
  }
}

bool afs_rec_id(const bson_t *doc, bson_value_t *out) {
  bson_iter_t it;
  if (!bson_iter_init_find(&it, doc, AFS_F_ID))
    return false;
  bson_value_copy(bson_iter_value(&it), out);
  return true;
}

const char *afs_rec_id_str(const bson_value_t *id, char *buf, size_t n) {
  if (id->value_type == BSON_TYPE_OID) {
    char hex[AFS_OID_HEX];
    bson_oid_to_string(&id->value.v_oid, hex);
    snprintf(buf, n, "%s", hex);
  } else if (id->value_type == BSON_TYPE_UTF8) {
    snprintf(buf, n, "%.*s", (int)(id->value.v_utf8.len > 64 ? 64 : id->value.v_utf8.len),
             id->value.v_utf8.str);
    for (char *p = buf; *p; p++)
      if ((unsigned char)*p < 0x20)
        *p = '?';
  } else if (id->value_type == BSON_TYPE_INT32) {
    snprintf(buf, n, "%d", id->value.v_int32);
  } else if (id->value_type == BSON_TYPE_INT64) {
    snprintf(buf, n, "%lld", (long long)id->value.v_int64);
  } else {
    snprintf(buf, n, "(id)");
  }
  return buf;
}

void afs_rec_oid_at(int64_t ms, bson_oid_t *out) {
  memset(out, 0, sizeof *out);
  uint32_t secs = ms > 0 ? (uint32_t)(ms / 1000) : 0;
  out->bytes[0] = (uint8_t)(secs >> 24);
  out->bytes[1] = (uint8_t)(secs >> 16);
  out->bytes[2] = (uint8_t)(secs >> 8);
  out->bytes[3] = (uint8_t)secs;
}

bool afs_rec_id_equal(const bson_value_t *a, const bson_value_t *b) {
  if (a->value_type != b->value_type)
    return false;
  switch (a->value_type) {
  case BSON_TYPE_EOD: /* an empty slot is nobody's id */
    return false;
  case BSON_TYPE_OID:
    return bson_oid_equal(&a->value.v_oid, &b->value.v_oid);
  case BSON_TYPE_UTF8:
    return a->value.v_utf8.len == b->value.v_utf8.len &&
           !memcmp(a->value.v_utf8.str, b->value.v_utf8.str, a->value.v_utf8.len);
  case BSON_TYPE_INT32:
    return a->value.v_int32 == b->value.v_int32;
  case BSON_TYPE_INT64:
    return a->value.v_int64 == b->value.v_int64;
  default: {
    char x[80], y[80];
    return !strcmp(afs_rec_id_str(a, x, sizeof x), afs_rec_id_str(b, y, sizeof y));
  }
  }
}
