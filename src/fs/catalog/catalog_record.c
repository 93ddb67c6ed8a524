/* CosyncAsset records as struct afs_asset: parsing, copies, xattrs; partition directory
 * names; the clock the catalog uses. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "assetfs/clock.h"
#include "assetfs/cosync.h"
#include "assetfs/records.h"
#include "assetfs/strutil.h"
#include "catalog/catalog_int.h"

/* ---- clocks ---- */

double afs_cat_now(void) {
  return afs_monotonic_ns() / 1e9; /* the catalog's TTLs are kept in seconds */
}

/* ---- assets ---- */

void afs_asset_free(struct afs_asset *a) {
  if (!a)
    return;
  char **strs[] = {&a->partition,    &a->file_path, &a->path,  &a->uid,    &a->session_id,
                   &a->content_type, &a->caption,   &a->color, &a->status, &a->etag};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    free(*strs[i]);
    *strs[i] = NULL;
  }
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    free(a->url_part[p]);
    a->url_part[p] = NULL;
  }
}

void afs_asset_copy(struct afs_asset *dst, const struct afs_asset *src) {
  *dst = *src;
  dst->partition = afs_xstrdup(src->partition);
  dst->file_path = afs_xstrdup(src->file_path);
  dst->path = afs_xstrdup(src->path);
  dst->uid = afs_xstrdup(src->uid);
  dst->session_id = afs_xstrdup(src->session_id);
  dst->content_type = afs_xstrdup(src->content_type);
  dst->caption = afs_xstrdup(src->caption);
  dst->color = afs_xstrdup(src->color);
  dst->status = afs_xstrdup(src->status);
  dst->etag = afs_xstrdup(src->etag);
  for (int p = 0; p < AFS_PART_COUNT; p++)
    dst->url_part[p] = afs_xstrdup(src->url_part[p]);
}

const char *afs_asset_part_url(const struct afs_asset *a) {
  const char *u = a->url_part[a->part];
  return u ? u : "";
}

/* A number for a field of type T: the value when it is in T's range, else 0 (a client
 * can write any double; casting one out of range is undefined). */
static int64_t clamp_i64(const struct afs_rec_number *n) {
  return n->has && n->v >= -9.2e18 && n->v <= 9.2e18 ? (int64_t)n->v : 0;
}
static int32_t clamp_i32(const struct afs_rec_number *n) {
  return n->has && n->v >= INT32_MIN && n->v <= INT32_MAX ? (int32_t)n->v : 0;
}

bool afs_asset_from_bson(const bson_t *doc, struct afs_asset *a) {
  struct afs_record r;
  memset(a, 0, sizeof *a);
  afs_record_read(doc, &r);
  if (r.id.value_type != BSON_TYPE_OID) {
    afs_record_done(&r);
    return false;
  }
  bson_oid_to_string(&r.id.value.v_oid, a->id);
  /* Strings are never NULL, so users need no checks. */
  a->partition = afs_xstrdup(r.partition ? r.partition : "");
  a->file_path = afs_xstrdup(r.file_path ? r.file_path : "");
  a->path = afs_xstrdup(r.path ? r.path : "");
  a->uid = afs_xstrdup(r.uid ? r.uid : "");
  a->session_id = afs_xstrdup(r.session ? r.session : "");
  a->content_type = afs_xstrdup(r.content_type ? r.content_type : "");
  a->caption = afs_xstrdup(r.meta[AFS_META_CAPTION] ? r.meta[AFS_META_CAPTION] : "");
  a->color = afs_xstrdup(r.meta[AFS_META_COLOR] ? r.meta[AFS_META_COLOR] : "");
  a->status = afs_xstrdup(r.status ? r.status : "");
  a->etag = afs_xstrdup(r.etag ? r.etag : "");
  for (int p = 0; p < AFS_PART_COUNT; p++)
    a->url_part[p] = afs_xstrdup(r.read_url[p] ? r.read_url[p] : "");
  a->size = clamp_i64(&r.size);
  if (a->size < 0)
    a->size = 0;
  a->created_ms = r.created.ms;
  a->expiration_ms = r.expiration.ms;
  a->expiration_hours = r.hours.has ? r.hours.v : 0;
  a->x_res = clamp_i32(afs_record_meta_num(&r, AFS_META_XRES));
  a->y_res = clamp_i32(afs_record_meta_num(&r, AFS_META_YRES));
  a->duration = afs_record_meta_num(&r, AFS_META_DURATION)->v;
  a->mtime_ms = r.mtime.ms ? r.mtime.ms : r.updated.ms ? r.updated.ms : r.created.ms;
  afs_record_done(&r);
  return true;
}

/* ---- xattrs ---- */

enum xk { XS, XD, XI, XT }; /* string, double, integer, time */
struct xattr_def {
  const char *name;
  enum xk kind;
  size_t off; /* offsetof the field */
};
#define XF(n, k, f)                                                                                \
  { n, k, offsetof(struct afs_asset, f) }
static const struct xattr_def xdefs[] = {
    XF("id", XS, id),
    XF("url", XS, url_part[AFS_PART_ORIGINAL]),
    XF("urlSmall", XS, url_part[AFS_PART_SMALL]),
    XF("urlMedium", XS, url_part[AFS_PART_MEDIUM]),
    XF("urlLarge", XS, url_part[AFS_PART_LARGE]),
    XF("urlVideoPreview", XS, url_part[AFS_PART_PREVIEW]),
    XF(AFS_F_EXPIRATION, XT, expiration_ms),
    XF(AFS_F_HOURS, XD, expiration_hours),
    XF(AFS_F_CONTENT_TYPE, XS, content_type),
    XF(AFS_F_SIZE, XI, size),
    XF("xRes", XI, x_res),
    XF("yRes", XI, y_res),
    XF("duration", XD, duration),
    XF(AFS_F_CAPTION, XS, caption),
    XF("color", XS, color),
    XF(AFS_F_STATUS, XS, status),
    XF(AFS_F_ETAG, XS, etag),
    XF(AFS_F_PATH, XS, path),
    XF(AFS_F_FILE_PATH, XS, file_path),
    XF(AFS_F_UID, XS, uid),
    XF("partition", XS, partition),
};
#define XPREFIX "user.assetfs."

/* The value as text, or NULL when empty/absent. Caller frees. */
static char *xvalue(const struct afs_asset *a, const struct xattr_def *d) {
  const char *base = (const char *)a + d->off;
  char buf[64];
  switch (d->kind) {
  case XS: {
    const char *s = !strcmp(d->name, "id") ? base : *(char *const *)base;
    return s && *s ? afs_xstrdup(s) : NULL;
  }
  case XD:
    snprintf(buf, sizeof buf, "%g", *(const double *)base);
    return afs_xstrdup(buf);
  case XI:
    if (!strcmp(d->name, AFS_F_SIZE))
      snprintf(buf, sizeof buf, "%" PRId64, *(const int64_t *)base);
    else
      snprintf(buf, sizeof buf, "%" PRId32, *(const int32_t *)base);
    return afs_xstrdup(buf);
  case XT: {
    int64_t ms = *(const int64_t *)base;
    if (!ms)
      return NULL;
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    size_t n = strlen(buf);
    snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
    return afs_xstrdup(buf);
  }
  }
  return NULL;
}

bool afs_asset_xattr_get(const struct afs_asset *a, const char *name, char **value,
                         struct afs_error *err) {
  *value = NULL;
  if (strncmp(name, XPREFIX, strlen(XPREFIX)) != 0)
    return afs_error_set(err, ENODATA, "no attribute %s", name);
  const char *field = name + strlen(XPREFIX);
  for (size_t i = 0; i < sizeof xdefs / sizeof *xdefs; i++) {
    if (strcmp(xdefs[i].name, field) != 0)
      continue;
    *value = xvalue(a, &xdefs[i]);
    if (!*value)
      return afs_error_set(err, ENODATA, "attribute %s is empty", name);
    return true;
  }
  return afs_error_set(err, ENODATA, "no attribute %s", name);
}

size_t afs_asset_xattr_list(const struct afs_asset *a, char *buf, size_t size) {
  size_t need = 0;
  for (size_t i = 0; i < sizeof xdefs / sizeof *xdefs; i++) {
    char *v = xvalue(a, &xdefs[i]);
    if (!v)
      continue;
    free(v);
    size_t n = strlen(XPREFIX) + strlen(xdefs[i].name) + 1;
    if (buf && need + n <= size)
      snprintf(buf + need, n, "%s%s", XPREFIX, xdefs[i].name);
    need += n;
  }
  return need;
}

/* ---- partition directory names ---- */

char *afs_partition_to_dirname(const char *p) {
  size_t n = 0;
  for (const char *s = p; *s; s++)
    n += (*s == '%' || *s == '/') ? 3 : 1;
  char *out = malloc(n + 1), *o = out;
  if (!out)
    return NULL;
  for (const char *s = p; *s; s++) {
    if (*s == '%') {
      memcpy(o, "%25", 3);
      o += 3;
    } else if (*s == '/') {
      memcpy(o, "%2F", 3);
      o += 3;
    } else
      *o++ = *s;
  }
  *o = 0;
  return out;
}

char *afs_partition_from_dirname(const char *d) {
  /* A partition is a string of Cosync records: a name that is not UTF-8 cannot be one. */
  if (!afs_utf8_valid(d, strlen(d)))
    return NULL;
  char *out = afs_xmalloc(strlen(d) + 1), *o = out;
  for (const char *s = d; *s; s++) {
    if (*s != '%') {
      *o++ = *s;
      continue;
    }
    if (!strncasecmp(s, "%25", 3))
      *o++ = '%';
    else if (!strncasecmp(s, "%2F", 3))
      *o++ = '/';
    else {
      free(out);
      return NULL;
    }
    s += 2;
  }
  *o = 0;
  return out;
}
