/* Multipart uploads, the broker's half (docs/internals/multipart.md). A file too big for
 * one PUT (or written faster than one PUT can carry) goes up in parts, and the client
 * never holds a credential for it:
 *   - AssetfsSignParts [uploadId, first, count] (a function call): the broker starts the
 *     S3 multipart upload of an initialized upload record once (its id is kept on the
 *     record as assetfsUploadId) and answers with presigned UploadPart URLs for parts
 *     first..first+count-1, as the file grows;
 *   - AssetfsCopyParts [uploadId, assetId, {part, offset, length}, ...]: parts that
 *     are bytes of an asset's original the caller may read (an append to a big asset,
 *     or a few parts of it rewritten) are copied by S3 (UploadPartCopy) instead of sent;
 *   - the client sets `uploaded` with assetfsParts (part i+1's ETag at [i]; signed with
 *     the change to `uploaded` under auth=required), and completion assembles exactly
 *     those parts (CompleteMultipartUpload checks each ETag), then checks the object as
 *     for a single PUT;
 *   - a multipart upload whose record no longer wants it is aborted: at completion when
 *     the client went back to a single PUT, at failure, and by the janitor's sweep of
 *     ListMultipartUploads (afs_mp_sweep), so no orphaned parts cost money. */
#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "assetfs/sigv4.h"
#include "broker.h"
#include "bstore.h"

/* ---- AssetfsSignParts ---- */

static bool arg_int(const bson_iter_t *it, long lo, long hi, long *out) {
  double v;
  if (afs_rec_iter_num(it, &v) != 1 || !(v >= lo && v <= hi) || v != (double)(long)v)
    return false;
  *out = (long)v;
  return true;
}

/* args: [upload record id, first part, count]. */
static bool read_args(const bson_t *call, bson_value_t *id, long *first, long *count,
                      struct afs_error *err) {
  bson_iter_t it, sub;
  const char *usage = "AssetfsSignParts takes [uploadId, first part (1..10000), count (1..128)]";
  if (!bson_iter_init_find(&it, call, AFS_F_CALL_ARGS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
      !bson_iter_recurse(&it, &sub) || !bson_iter_next(&sub))
    return afs_error_set(err, EINVAL, "%s", usage);
  if (BSON_ITER_HOLDS_OID(&sub)) {
    id->value_type = BSON_TYPE_OID;
    bson_oid_copy(bson_iter_oid(&sub), &id->value.v_oid);
  } else {
    uint32_t len = 0;
    const char *s = BSON_ITER_HOLDS_UTF8(&sub) ? bson_iter_utf8(&sub, &len) : NULL;
    if (!s || len != 24 || !bson_oid_is_valid(s, 24))
      return afs_error_set(err, EINVAL, "%s", usage);
    id->value_type = BSON_TYPE_OID;
    bson_oid_init_from_string(&id->value.v_oid, s);
  }
  if (!bson_iter_next(&sub) || !arg_int(&sub, 1, AFS_MP_MAX_PARTS, first) ||
      !bson_iter_next(&sub) || !arg_int(&sub, 1, AFS_MP_SIGN_BATCH, count) || bson_iter_next(&sub))
    return afs_error_set(err, EINVAL, "%s", usage);
  if (*first + *count - 1 > AFS_MP_MAX_PARTS)
    *count = AFS_MP_MAX_PARTS - *first + 1;
  return true;
}

/* The upload record the caller may have parts signed for: its own, initialized, not
 * abandoned, with a key the broker set. *doc: caller destroys; *r reads it. */
static bool load_upload(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *id,
                        const char *caller, bson_t **doc, struct afs_record *r,
                        struct afs_error *err) {
  *doc = NULL;
  if (!st->ops->get(st->ctx, AFS_BC_UPLOAD, id, false, doc, err))
    return false;
  if (!*doc)
    return afs_error_set(err, ENOENT, "no upload record with this _id");
  afs_record_read(*doc, r);
  const char *path = NULL;
  if (!r->uid || !caller || strcmp(r->uid, caller))
    return afs_error_set(err, EPERM,
                         "permission denied: uid '%s' may not send parts of an upload of uid '%s'",
                         caller ? caller : "(none)", r->uid ? r->uid : "(none)");
  if (afs_authz_upload(b, st, r, false, err) != 1)
    return false;
  if (afs_upload_status_of(r->status) != AFS_US_INITIALIZED || r->abandoned)
    return afs_error_set(err, ESTALE, "the upload is %s, not initialized",
                         r->abandoned ? "abandoned"
                         : r->status  ? r->status
                                      : "without status");
  if (afs_broker_record_path(r, &path) != 1 || !r->has_seal || !afs_broker_seal_ok(b, r))
    return afs_error_set(err, ESTALE, "the upload record has no key the broker set");
  return true;
}

/* The record's multipart upload: the one it has, or one started now. Two calls racing
 * agree on the first one set on the record (the other is aborted). *upload_id: caller
 * frees. */
static bool upload_id_of(struct afs_bstore *st, const bson_value_t *id, const struct afs_record *r,
                         char **upload_id, struct afs_error *err) {
  if (r->mp_upload_id) {
    *upload_id = afs_xstrdup(r->mp_upload_id);
    return true;
  }
  char *mine = NULL;
  if (!st->ops->mp_create(st->ctx, r->path, r->content_type, &mine, err))
    return false;
  bson_t *match = BCON_NEW(AFS_F_MP_UPLOAD_ID, BCON_NULL);
  bson_t *set = BCON_NEW(AFS_F_MP_UPLOAD_ID, BCON_UTF8(mine));
  struct afs_bcond cond = {.status_is = AFS_UPLOAD_INITIALIZED, .match = match};
  bool matched = false;
  bool ok = st->ops->upload_set(st->ctx, id, &cond, set, &matched, err);
  bson_destroy(match);
  bson_destroy(set);
  if (ok && matched) {
    *upload_id = mine;
    return true;
  }
  struct afs_error e2 = {0};
  if (!st->ops->mp_abort(st->ctx, r->path, mine, &e2))
    afs_warn("cannot abort the unused multipart upload of %s: %s", r->path, e2.msg);
  free(mine);
  if (!ok)
    return false;
  /* Another call set one first, or the record moved on: read it again. */
  bson_t *doc = NULL;
  struct afs_record now;
  if (!st->ops->get(st->ctx, AFS_BC_UPLOAD, id, false, &doc, err))
    return false;
  if (!doc)
    return afs_error_set(err, ENOENT, "no upload record with this _id");
  afs_record_read(doc, &now);
  ok = now.mp_upload_id && afs_upload_status_of(now.status) == AFS_US_INITIALIZED;
  if (ok)
    *upload_id = afs_xstrdup(now.mp_upload_id);
  else
    afs_error_set(err, ESTALE, "the upload moved on while its parts were being signed");
  afs_record_done(&now);
  bson_destroy(doc);
  return ok;
}

bool afs_mp_sign_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                      const char *caller, bson_t *result, struct afs_error *err) {
  bson_value_t id = {.value_type = BSON_TYPE_EOD};
  long first = 0, count = 0;
  bson_t *doc = NULL;
  struct afs_record r;
  char *upload_id = NULL;
  bool ok = false;
  memset(&r, 0, sizeof r);
  if (!read_args(call, &id, &first, &count, err) ||
      !load_upload(b, st, &id, caller, &doc, &r, err) ||
      !upload_id_of(st, &id, &r, &upload_id, err))
    goto done;
  bson_t res, urls;
  BSON_APPEND_DOCUMENT_BEGIN(result, AFS_F_CALL_RESULT, &res);
  BSON_APPEND_UTF8(&res, "uploadId", upload_id);
  BSON_APPEND_INT32(&res, "first", (int32_t)first);
  BSON_APPEND_INT32(&res, "expiresIn", (int32_t)b->cfg.write_url_seconds);
  BSON_APPEND_ARRAY_BEGIN(&res, "urls", &urls);
  time_t now = time(NULL);
  ok = true;
  for (long n = first; ok && n < first + count; n++) {
    char num[16], ix[16];
    snprintf(num, sizeof num, "%ld", n);
    snprintf(ix, sizeof ix, "%ld", n - first);
    struct afs_sigv4_param p[] = {{"partNumber", num}, {"uploadId", upload_id}};
    char *u = afs_sigv4_presign_params(&b->s3, "PUT", r.path, p, 2, NULL, 0,
                                       b->cfg.write_url_seconds, now, err);
    ok = u != NULL;
    if (u)
      BSON_APPEND_UTF8(&urls, ix, u);
    free(u);
  }
  bson_append_array_end(&res, &urls);
  bson_append_document_end(result, &res);
done:
  free(upload_id);
  if (doc) {
    afs_record_done(&r);
    bson_destroy(doc);
  }
  bson_value_destroy(&id);
  return ok;
}

/* ---- AssetfsCopyParts ---- */

struct copy_part {
  long n;
  int64_t off, len;
};

/* args: [upload record id, asset id, {part, offset, length}, ...] (flat: FerretDB keeps
 * no arrays in arrays). */
static bool read_copy_args(const bson_t *call, bson_value_t *id, bson_value_t *src,
                           struct copy_part *parts, int *n, struct afs_error *err) {
  bson_iter_t it, sub, one;
  const char *usage = "AssetfsCopyParts takes [uploadId, assetId, {part, offset, length}, ...] "
                      "with 1..16 parts";
  *n = 0;
  if (!bson_iter_init_find(&it, call, AFS_F_CALL_ARGS) || !BSON_ITER_HOLDS_ARRAY(&it) ||
      !bson_iter_recurse(&it, &sub))
    return afs_error_set(err, EINVAL, "%s", usage);
  bson_value_t *ids[2] = {id, src};
  for (int i = 0; i < 2; i++) {
    if (!bson_iter_next(&sub))
      return afs_error_set(err, EINVAL, "%s", usage);
    uint32_t len = 0;
    const char *s = BSON_ITER_HOLDS_UTF8(&sub) ? bson_iter_utf8(&sub, &len) : NULL;
    ids[i]->value_type = BSON_TYPE_OID;
    if (BSON_ITER_HOLDS_OID(&sub))
      bson_oid_copy(bson_iter_oid(&sub), &ids[i]->value.v_oid);
    else if (s && len == 24 && bson_oid_is_valid(s, 24))
      bson_oid_init_from_string(&ids[i]->value.v_oid, s);
    else
      return afs_error_set(err, EINVAL, "%s", usage);
  }
  while (bson_iter_next(&sub)) {
    static const char *const field[3] = {"part", "offset", "length"};
    long v[3];
    if (*n == AFS_MP_COPY_BATCH || !BSON_ITER_HOLDS_DOCUMENT(&sub))
      return afs_error_set(err, EINVAL, "%s", usage);
    for (int k = 0; k < 3; k++)
      if (!bson_iter_recurse(&sub, &one) || !bson_iter_find(&one, field[k]) ||
          !arg_int(&one, k == 1 ? 0 : 1, k == 0 ? AFS_MP_MAX_PARTS : 5L << 40, &v[k]))
        return afs_error_set(err, EINVAL, "%s", usage);
    if (v[2] > 5L << 30)
      return afs_error_set(err, EINVAL, "%s (a part is at most 5 GiB)", usage);
    parts[(*n)++] = (struct copy_part){v[0], v[1], v[2]};
  }
  return *n > 0 ? true : afs_error_set(err, EINVAL, "%s", usage);
}

/* The asset whose original the parts come from: active, in a partition the caller may
 * use, with a key the broker set, and holding every range. *key: caller frees. */
static bool copy_source(struct afs_broker *b, struct afs_bstore *st, const bson_value_t *src,
                        const char *caller, const struct copy_part *parts, int n, char **key,
                        struct afs_error *err) {
  bson_t *doc = NULL;
  struct afs_record a;
  bool ok = false;
  *key = NULL;
  if (!afs_bstore_asset_get(b, st, src, &doc, err))
    return false;
  if (!doc)
    return afs_error_set(err, EXDEV, "no asset with this _id to copy from");
  afs_record_read(doc, &a);
  if (!a.status || strcmp(a.status, AFS_ASSET_ACTIVE) || !a.path || !a.size.has) {
    afs_error_set(err, EXDEV, "the asset to copy from is %s", a.status ? a.status : "not active");
    goto done;
  }
  if (!afs_authz_may_change(b, caller, &a, err))
    goto done;
  if (!afs_broker_path_trusted(b, &a)) {
    /* Otherwise a client could point an asset at someone else's key and copy it. */
    afs_error_set(err, AFS_E_UNTRUSTED,
                  "the asset to copy from has a path the broker did not set; refusing");
    goto done;
  }
  for (int i = 0; i < n; i++)
    if ((double)(parts[i].off + parts[i].len) > a.size.v) {
      afs_error_set(err, EINVAL, "part %ld: bytes %lld..%lld are past the asset's %.0f bytes",
                    parts[i].n, (long long)parts[i].off,
                    (long long)(parts[i].off + parts[i].len - 1), a.size.v);
      goto done;
    }
  *key = afs_xstrdup(a.path);
  ok = true;
done:
  afs_record_done(&a);
  bson_destroy(doc);
  return ok;
}

bool afs_mp_copy_call(struct afs_broker *b, struct afs_bstore *st, const bson_t *call,
                      const char *caller, bson_t *result, struct afs_error *err) {
  bson_value_t id = {.value_type = BSON_TYPE_EOD}, src = {.value_type = BSON_TYPE_EOD};
  struct copy_part parts[AFS_MP_COPY_BATCH];
  int n = 0;
  bson_t *doc = NULL;
  struct afs_record r;
  char *upload_id = NULL, *src_key = NULL;
  bool ok = false;
  memset(&r, 0, sizeof r);
  if (!read_copy_args(call, &id, &src, parts, &n, err) ||
      !load_upload(b, st, &id, caller, &doc, &r, err) ||
      !copy_source(b, st, &src, caller, parts, n, &src_key, err) ||
      !upload_id_of(st, &id, &r, &upload_id, err))
    goto done;
  bson_t res, etags;
  BSON_APPEND_DOCUMENT_BEGIN(result, AFS_F_CALL_RESULT, &res);
  BSON_APPEND_UTF8(&res, "uploadId", upload_id);
  BSON_APPEND_ARRAY_BEGIN(&res, "etags", &etags);
  ok = true;
  for (int i = 0; ok && i < n; i++) {
    char etag[130], ix[16];
    ok = st->ops->mp_copy(st->ctx, r.path, upload_id, (int)parts[i].n, src_key, parts[i].off,
                          parts[i].len, etag, err);
    snprintf(ix, sizeof ix, "%d", i);
    if (ok)
      BSON_APPEND_UTF8(&etags, ix, etag);
  }
  bson_append_array_end(&res, &etags);
  bson_append_document_end(result, &res);
done:
  free(upload_id);
  free(src_key);
  if (doc) {
    afs_record_done(&r);
    bson_destroy(doc);
  }
  bson_value_destroy(&id);
  bson_value_destroy(&src);
  return ok;
}

/* ---- completion ---- */

/* The parts the client reported: 1..10000 ETags, each 1..128 bytes. *parts: caller frees
 * (its etags point into rec's document). */
static bool read_parts(const struct afs_record *rec, struct afs_s3_part **parts, size_t *n,
                       struct afs_error *err) {
  bson_iter_t it, sub;
  *parts = NULL;
  *n = 0;
  if (!bson_iter_init_find(&it, rec->doc, AFS_F_MP_PARTS))
    return true;
  const char *bad = "assetfsParts must be an array of 1..10000 part ETags";
  if (!BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &sub))
    return afs_error_set(err, EINVAL, "%s", bad);
  size_t cap = 0;
  while (bson_iter_next(&sub)) {
    uint32_t len = 0;
    const char *e = BSON_ITER_HOLDS_UTF8(&sub) ? bson_iter_utf8(&sub, &len) : NULL;
    if (!e || len == 0 || len > 128 || memchr(e, 0, len) || *n == AFS_MP_MAX_PARTS) {
      free(*parts);
      *parts = NULL;
      return afs_error_set(err, EINVAL, "%s", bad);
    }
    if (*n == cap) {
      cap = cap ? cap * 2 : 64;
      *parts = afs_xrealloc(*parts, cap * sizeof **parts);
    }
    (*parts)[*n] = (struct afs_s3_part){.number = (int)*n + 1, .etag = e};
    (*n)++;
  }
  if (*n == 0)
    return afs_error_set(err, EINVAL, "%s", bad);
  return true;
}

static void abort_quietly(struct afs_bstore *st, const char *ids, const char *key,
                          const char *upload_id) {
  struct afs_error e = {0};
  if (!st->ops->mp_abort(st->ctx, key, upload_id, &e))
    afs_warn("upload %s: cannot abort multipart upload of %s: %s (the janitor tries again)", ids,
             key, e.msg);
}

/* S3's ETag of the assembly of parts: the MD5 of their MD5s, "-" and their count. false
 * when a part's ETag is not an MD5 (SSE-KMS): then it cannot be told. */
static bool assembly_etag(const struct afs_s3_part *parts, size_t n, char out[48]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
  for (size_t i = 0; ok && i < n; i++) {
    const char *e = parts[i].etag;
    size_t l = strlen(e);
    if (l >= 2 && e[0] == '"' && e[l - 1] == '"')
      e++, l -= 2;
    unsigned char md[16];
    ok = l == 32;
    for (int k = 0; ok && k < 16; k++) {
      unsigned v;
      ok = sscanf(e + 2 * k, "%2x", &v) == 1 && isxdigit((unsigned char)e[2 * k]) &&
           isxdigit((unsigned char)e[2 * k + 1]);
      md[k] = (unsigned char)v;
    }
    ok = ok && EVP_DigestUpdate(ctx, md, sizeof md);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, md, &len) && len == 16;
  EVP_MD_CTX_free(ctx);
  for (int k = 0; ok && k < 16; k++)
    snprintf(out + 2 * k, 3, "%02x", md[k]);
  if (ok)
    snprintf(out + 32, 16, "-%zu", n);
  return ok;
}

/* The object at the key is the assembly of exactly these parts (a Complete that a broker
 * made before it stopped): its ETag says so, or at least its part count when the parts'
 * ETags are not MD5s. */
static bool is_assembly_of(const char *etag, const struct afs_s3_part *parts, size_t n) {
  char want[48];
  if (assembly_etag(parts, n, want))
    return !strcasecmp(etag, want);
  const char *dash = strrchr(etag, '-');
  return dash && strtoul(dash + 1, NULL, 10) == n;
}

enum afs_mp_result afs_mp_assemble(struct afs_bstore *st, const struct afs_record *rec,
                                   const char *key, const char *ids, char *etag, char *why,
                                   size_t why_len) {
  struct afs_error err = {0};
  struct afs_s3_part *parts = NULL;
  size_t n = 0;
  const char *upload_id = rec->mp_upload_id;
  if (!upload_id)
    return AFS_MP_NONE;
  if (!read_parts(rec, &parts, &n, &err)) {
    snprintf(why, why_len, "%s", err.msg);
    abort_quietly(st, ids, key, upload_id);
    return AFS_MP_FAILED;
  }
  if (n == 0) {
    /* Started, then the client sent the file in one PUT after all (it shrank). */
    abort_quietly(st, ids, key, upload_id);
    free(parts);
    return AFS_MP_NONE;
  }
  etag[0] = '\0';
  enum afs_mp_result res = AFS_MP_DONE;
  if (!st->ops->mp_complete(st->ctx, key, upload_id, parts, n, etag, &err)) {
    struct afs_s3_object_info head;
    struct afs_error e2 = {0};
    if (afs_s3_error_transient(&err) || err.code == AFS_E_URL_REFUSED) {
      afs_transient("upload %s: cannot complete the multipart upload: %s; will retry", ids,
                    err.msg);
      res = AFS_MP_RETRY;
    } else if (err.code == ENOENT && st->ops->obj_head(st->ctx, key, &head, &e2) && head.exists &&
               is_assembly_of(head.etag, parts, n)) {
      /* Completed by a broker that stopped before it could finish the record. */
      snprintf(etag, 130, "%s", head.etag);
      afs_info("upload %s: multipart upload completed before; going on", ids);
    } else if (e2.code && afs_s3_error_transient(&e2)) {
      res = AFS_MP_RETRY;
    } else {
      snprintf(why, why_len, "the parts could not be assembled: %s", err.msg);
      abort_quietly(st, ids, key, upload_id);
      res = AFS_MP_FAILED;
    }
  } else {
    afs_debug("upload %s: %zu parts assembled at %s (ETag %s)", ids, n, key, etag);
  }
  free(parts);
  return res;
}

/* ---- the janitor's sweep ---- */

/* Uploads judged per sweep (each costs two MongoDB reads, and the sweep runs on the
 * dispatcher's thread); the rest wait for the next sweep, by which time those aborted are
 * no longer listed. */
#define SWEEP_MAX 1000

struct sweep {
  struct afs_broker *b;
  struct afs_bstore *st;
  int64_t cutoff_ms; /* initiated before this: old enough to be judged */
  int seen, aborted, kept;
  bool failed;
};

/* 1 when the upload record that holds `key` (its key claim) wants multipart upload
 * `upload_id` still (initialized or uploaded, with that id), 0 when no record does, -1
 * when that cannot be told now. */
static int still_wanted(struct sweep *s, const char *key, const char *upload_id) {
  mongoc_client_t *c = s->st->mc;
  mongoc_collection_t *claims = afs_broker_coll(s->b, c, AFS_COLL_KEY_CLAIM);
  bson_t *q = BCON_NEW(AFS_F_ID, BCON_UTF8(key));
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(claims, q, NULL, NULL);
  const bson_t *doc;
  bson_value_t rec = {.value_type = BSON_TYPE_EOD};
  bson_iter_t it;
  if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "recordId"))
    bson_value_copy(bson_iter_value(&it), &rec);
  bson_error_t berr;
  int rc = mongoc_cursor_error(cur, &berr) ? -1 : 0;
  mongoc_cursor_destroy(cur);
  bson_destroy(q);
  mongoc_collection_destroy(claims);
  if (rc < 0 || rec.value_type == BSON_TYPE_EOD)
    return rc;
  bson_t *up = NULL;
  struct afs_error err = {0};
  if (!s->st->ops->get(s->st->ctx, AFS_BC_UPLOAD, &rec, false, &up, &err)) {
    rc = -1;
  } else if (up) {
    struct afs_record r;
    afs_record_read(up, &r);
    enum afs_upload_status us = afs_upload_status_of(r.status);
    rc = (us == AFS_US_INITIALIZED || us == AFS_US_UPLOADED) && r.mp_upload_id &&
         !strcmp(r.mp_upload_id, upload_id);
    afs_record_done(&r);
    bson_destroy(up);
  }
  bson_value_destroy(&rec);
  return rc;
}

static bool sweep_one(void *ud, const struct afs_s3_mp_listed *u) {
  struct sweep *s = ud;
  if (u->initiated_ms == 0 || u->initiated_ms > s->cutoff_ms)
    return true; /* young: not judged, not counted */
  if (++s->seen > SWEEP_MAX)
    return false;
  int rc = still_wanted(s, u->key, u->upload_id);
  if (rc != 0) {
    s->kept++;
    s->failed |= rc < 0;
    return rc > 0; /* MongoDB away: judged at the next sweep */
  }
  struct afs_error err = {0};
  if (s->st->ops->mp_abort(s->st->ctx, u->key, u->upload_id, &err)) {
    s->aborted++;
    afs_info("aborted orphaned multipart upload of %s (no upload record wants it)", u->key);
  } else {
    afs_transient("cannot abort orphaned multipart upload of %s: %s", u->key, err.msg);
  }
  return true;
}

void afs_mp_sweep(struct afs_broker *b, mongoc_client_t *c) {
  struct afs_bstore st;
  struct afs_error err = {0};
  afs_bstore_live(&st, b, c);
  struct sweep s = {
      .b = b, .st = &st, .cutoff_ms = afs_now_ms() - b->cfg.multipart_grace_seconds * 1000L};
  if (!afs_s3_multipart_list(&b->s3c, NULL, sweep_one, &s, &err))
    afs_transient("cannot list multipart uploads: %s; will retry", err.msg);
  else if (s.aborted || s.failed)
    afs_info("multipart sweep: %d upload(s) looked at, %d aborted, %d kept%s", s.seen, s.aborted,
             s.kept, s.failed ? " (MongoDB failed for some)" : "");
}
