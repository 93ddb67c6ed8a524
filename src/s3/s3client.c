/* The broker's S3 operations (see s3.h): each builds its query, headers and XML body,
 * sends them through afs_s3_perform (s3http.c: signing, retries) and reads the answer. */
#include "assetfs/s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/alloc.h"
#include "s3http.h"
#include "s3xml.h"

void afs_s3_client_init(struct afs_s3_client *c, const struct afs_s3_target *target) {
  memset(c, 0, sizeof *c);
  if (target)
    c->target = *target;
  c->max_attempts = 5;
  c->backoff_ms = 200;
  c->max_backoff_ms = 5000;
  c->connect_timeout_s = 10;
  c->timeout_s = 60;
}

void afs_s3_target_from_config(struct afs_s3_target *t, const struct afs_config *cfg) {
  memset(t, 0, sizeof *t);
  t->endpoint = cfg->s3_endpoint;
  t->region = cfg->s3_region;
  t->bucket = cfg->s3_bucket;
  t->access_key = cfg->s3_access_key;
  t->secret_key = cfg->s3_secret_key;
  t->path_style = cfg->s3_path_style;
}

bool afs_s3_error_transient(const struct afs_error *err) {
  return err && (err->code == AFS_E_UNREACHABLE || err->code == AFS_E_TRANSIENT);
}

/* ---- one request ---- */

static bool need_key(const char *key, struct afs_error *err) {
  if (!key || !*key)
    return afs_error_set(err, EINVAL, "empty S3 key");
  return true;
}

bool afs_s3_head_object(const struct afs_s3_client *c, const char *key,
                        struct afs_s3_object_info *out, struct afs_error *err) {
  memset(out, 0, sizeof *out);
  if (!need_key(key, err))
    return false;
  struct afs_s3_req req = {.method = "HEAD", .key = key};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok) {
    if (r.status == 200) {
      *out = r.info;
      out->exists = true;
    } else if (r.status == 404) {
      out->exists = false;
    } else {
      ok = afs_s3_status_error(&r, "HEAD", key, err);
    }
  }
  afs_s3_resp_free(&r);
  return ok;
}

bool afs_s3_delete_object(const struct afs_s3_client *c, const char *key, struct afs_error *err) {
  if (!need_key(key, err))
    return false;
  struct afs_s3_req req = {.method = "DELETE", .key = key};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok && r.status != 204 && r.status != 200 && r.status != 404)
    ok = afs_s3_status_error(&r, "DELETE", key, err);
  afs_s3_resp_free(&r);
  return ok;
}

/* One DeleteObjects request for at most AFS_S3_DELETE_BATCH keys (all XML-safe). */
static bool delete_batch(const struct afs_s3_client *c, const char *const *keys, size_t n,
                         size_t *n_failed, struct afs_error *err) {
  char *body = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&body, &len);
  if (!f)
    return afs_error_set(err, ENOMEM, "out of memory");
  fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>",
        f);
  for (size_t i = 0; i < n; i++) {
    fputs("<Object><Key>", f);
    afs_xml_escape(f, keys[i]);
    fputs("</Key></Object>", f);
  }
  fputs("</Delete>", f);
  if (fclose(f) != 0) {
    free(body);
    return afs_error_set(err, ENOMEM, "out of memory");
  }
  char md5[25];
  afs_md5_base64(body, len, md5);
  struct afs_sigv4_header h[] = {{"content-md5", md5}, {"content-type", "application/xml"}};
  struct afs_sigv4_param p = {"delete", NULL};
  struct afs_s3_req req = {.method = "POST",
                           .params = &p,
                           .nparams = 1,
                           .headers = h,
                           .nheaders = 2,
                           .body = body,
                           .body_len = len};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok && r.status != 200) {
    ok = afs_s3_status_error(&r, "DeleteObjects", c->target.bucket, err);
    *n_failed += n;
  } else if (ok) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""}, e;
    while (afs_xml_next(&s, "Error", &e)) {
      char *k = afs_xml_get(e, "Key"), *code = afs_xml_get(e, "Code");
      char *msg = afs_xml_get(e, "Message");
      if (!code || strcmp(code, "NoSuchKey") != 0) {
        if (ok)
          afs_error_set(err, code && !strcmp(code, "AccessDenied") ? AFS_E_URL_REFUSED : EIO,
                        "S3 DeleteObjects refused '%s': %s %s", k ? k : "?", code ? code : "",
                        msg ? msg : "");
        ok = false;
        (*n_failed)++;
      }
      free(k);
      free(code);
      free(msg);
    }
  } else {
    *n_failed += n; /* the whole batch failed */
  }
  afs_s3_resp_free(&r);
  free(body);
  return ok;
}

bool afs_s3_delete_objects(const struct afs_s3_client *c, const char *const *keys, size_t n,
                           size_t *n_failed, struct afs_error *err) {
  size_t failed = 0;
  bool ok = true;
  const char **batch =
      malloc(sizeof *batch * (n < AFS_S3_DELETE_BATCH ? n + 1 : AFS_S3_DELETE_BATCH));
  if (!batch)
    return afs_error_set(err, ENOMEM, "out of memory");
  size_t nb = 0;
  struct afs_error e1 = {0};
  for (size_t i = 0; i <= n; i++) {
    if (i < n) {
      if (!keys[i] || !*keys[i]) {
        if (ok)
          afs_error_set(err, EINVAL, "empty S3 key in DeleteObjects");
        ok = false;
        failed++;
        continue;
      }
      if (!afs_xml_can_carry(keys[i])) { /* XML cannot name it: delete it alone */
        if (!afs_s3_delete_object(c, keys[i], &e1)) {
          if (ok)
            *err = e1;
          ok = false;
          failed++;
        }
        continue;
      }
      batch[nb++] = keys[i];
    }
    if (nb == AFS_S3_DELETE_BATCH || (i == n && nb > 0)) {
      if (!delete_batch(c, batch, nb, &failed, &e1)) {
        if (ok)
          *err = e1;
        ok = false;
      }
      nb = 0;
    }
  }
  free(batch);
  if (n_failed)
    *n_failed = failed;
  return ok;
}

/* S3's encoding-type=url: %XX escapes, and '+' for a space. NULL on a bad escape. */
static char *url_decode(const char *s) {
  char *out = malloc(strlen(s) + 1), *o = out;
  if (!out)
    return NULL;
  for (const char *c = s; *c; c++) {
    if (*c == '+') {
      *o++ = ' ';
    } else if (*c == '%' && c[1] && c[2]) {
      char hx[3] = {c[1], c[2], 0};
      char *end;
      long v = strtol(hx, &end, 16);
      if (*end || v == 0) {
        free(out);
        return NULL;
      }
      *o++ = (char)v;
      c += 2;
    } else {
      *o++ = *c;
    }
  }
  *o = '\0';
  return out;
}

bool afs_s3_list_objects(const struct afs_s3_client *c, const char *prefix, int page_size,
                         afs_s3_list_fn fn, void *ud, struct afs_error *err) {
  char *token = NULL, max_keys[16];
  bool ok = true, more = true;
  snprintf(max_keys, sizeof max_keys, "%d", page_size > 0 ? page_size : 1000);
  while (ok && more) {
    struct afs_sigv4_param p[5] = {
        {"list-type", "2"}, {"encoding-type", "url"}, {"max-keys", max_keys}};
    size_t np = 3;
    if (prefix && *prefix)
      p[np++] = (struct afs_sigv4_param){"prefix", prefix};
    if (token)
      p[np++] = (struct afs_sigv4_param){"continuation-token", token};
    struct afs_s3_req req = {.method = "GET", .params = p, .nparams = np};
    struct afs_s3_resp r;
    ok = afs_s3_perform(c, &req, &r, err);
    if (ok && r.status != 200)
      ok = afs_s3_status_error(&r, "ListObjectsV2", c->target.bucket, err);
    if (ok) {
      struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""}, o;
      char *enc = afs_xml_get(s, "EncodingType"), *trunc = afs_xml_get(s, "IsTruncated");
      bool url = enc && !strcmp(enc, "url");
      more = trunc && !strcmp(trunc, "true");
      free(enc);
      free(trunc);
      free(token);
      token = more ? afs_xml_get(s, "NextContinuationToken") : NULL;
      if (more && (!token || !*token)) {
        ok = afs_error_set(err, EIO, "S3 ListObjectsV2: truncated answer without a token");
        more = false;
      }
      while (ok && afs_xml_next(&s, "Contents", &o)) {
        char *k = afs_xml_get(o, "Key"), *size = afs_xml_get(o, "Size");
        char *etag = afs_xml_get(o, "ETag");
        char *key = k && url ? url_decode(k) : (k ? strdup(k) : NULL);
        if (!key) {
          ok = afs_error_set(err, EIO, "S3 ListObjectsV2: malformed <Contents>");
        } else {
          char *et = etag ? etag : "";
          size_t el = strlen(et);
          if (el >= 2 && et[0] == '"' && et[el - 1] == '"') {
            et[el - 1] = '\0';
            et++;
          }
          struct afs_s3_listed l = {key, size ? strtoll(size, NULL, 10) : 0, et};
          if (!fn(ud, &l))
            more = false;
        }
        free(k);
        free(size);
        free(etag);
        free(key);
        if (!more)
          break;
      }
    }
    afs_s3_resp_free(&r);
  }
  free(token);
  return ok;
}

bool afs_s3_multipart_create(const struct afs_s3_client *c, const char *key,
                             const char *content_type, char **upload_id, struct afs_error *err) {
  *upload_id = NULL;
  if (!need_key(key, err))
    return false;
  struct afs_sigv4_param p = {"uploads", NULL};
  struct afs_sigv4_header h = {"content-type", content_type};
  struct afs_s3_req req = {.method = "POST",
                           .key = key,
                           .params = &p,
                           .nparams = 1,
                           .headers = &h,
                           .nheaders = content_type ? 1 : 0};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok && r.status != 200)
    ok = afs_s3_status_error(&r, "CreateMultipartUpload", key, err);
  if (ok) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""};
    *upload_id = afs_xml_get(s, "UploadId");
    if (!*upload_id || !**upload_id) {
      free(*upload_id);
      *upload_id = NULL;
      ok = afs_error_set(err, EIO, "S3 CreateMultipartUpload %s: no UploadId in answer", key);
    }
  }
  afs_s3_resp_free(&r);
  return ok;
}

bool afs_s3_multipart_complete(const struct afs_s3_client *c, const char *key,
                               const char *upload_id, const struct afs_s3_part *parts, size_t n,
                               char *etag_out, struct afs_error *err) {
  if (!need_key(key, err))
    return false;
  if (!upload_id || !*upload_id || n == 0 || n > 10000)
    return afs_error_set(err, EINVAL,
                         "CompleteMultipartUpload needs an upload id and 1..10000 parts");
  char *body = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&body, &len);
  if (!f)
    return afs_error_set(err, ENOMEM, "out of memory");
  fputs("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">", f);
  bool args_ok = true;
  for (size_t i = 0; i < n; i++) {
    const char *et = parts[i].etag ? parts[i].etag : "";
    size_t el = strlen(et);
    if (el >= 2 && et[0] == '"' && et[el - 1] == '"') {
      et++;
      el -= 2;
    }
    if (parts[i].number < 1 || parts[i].number > 10000 ||
        (i > 0 && parts[i].number <= parts[i - 1].number) || el == 0 || el > 128 ||
        memchr(et, '<', el) || memchr(et, '&', el))
      args_ok = false;
    fprintf(f, "<Part><PartNumber>%d</PartNumber><ETag>\"%.*s\"</ETag></Part>", parts[i].number,
            (int)el, et);
  }
  fputs("</CompleteMultipartUpload>", f);
  if (fclose(f) != 0) {
    free(body);
    return afs_error_set(err, ENOMEM, "out of memory");
  }
  if (!args_ok) {
    free(body);
    return afs_error_set(err, EINVAL, "parts must be numbered 1..10000 ascending, with ETags");
  }
  struct afs_sigv4_param p = {"uploadId", upload_id};
  struct afs_sigv4_header h = {"content-type", "application/xml"};
  struct afs_s3_req req = {.method = "POST",
                           .key = key,
                           .params = &p,
                           .nparams = 1,
                           .headers = &h,
                           .nheaders = 1,
                           .body = body,
                           .body_len = len,
                           .error_in_200 = true};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok && r.status != 200)
    ok = afs_s3_status_error(&r, "CompleteMultipartUpload", key, err);
  if (ok && etag_out) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""};
    char *et = afs_xml_get(s, "ETag");
    afs_s3_copy_header_value(etag_out, 130, et ? et : "", et ? strlen(et) : 0);
    free(et);
  }
  afs_s3_resp_free(&r);
  free(body);
  return ok;
}

bool afs_s3_upload_part_copy(const struct afs_s3_client *c, const char *key, const char *upload_id,
                             int number, const char *src_key, int64_t off, int64_t len,
                             char *etag_out, struct afs_error *err) {
  etag_out[0] = '\0';
  if (!need_key(key, err) || !need_key(src_key, err))
    return false;
  if (!upload_id || !*upload_id || number < 1 || number > 10000 || off < 0 || len < 1)
    return afs_error_set(err, EINVAL,
                         "UploadPartCopy needs an upload id, a part number "
                         "1..10000 and a byte range");
  char num[16], range[64];
  snprintf(num, sizeof num, "%d", number);
  snprintf(range, sizeof range, "bytes=%lld-%lld", (long long)off, (long long)(off + len - 1));
  char *enc = afs_s3_uri_encode(src_key, true);
  char *source = NULL;
  afs_xasprintf(&source, "/%s/%s", c->target.bucket, enc);
  free(enc);
  struct afs_sigv4_param p[] = {{"partNumber", num}, {"uploadId", upload_id}};
  struct afs_sigv4_header h[] = {{"x-amz-copy-source", source}, {"x-amz-copy-source-range", range}};
  struct afs_s3_req req = {.method = "PUT",
                           .key = key,
                           .params = p,
                           .nparams = 2,
                           .headers = h,
                           .nheaders = 2,
                           .error_in_200 = true};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok && r.status != 200)
    ok = afs_s3_status_error(&r, "UploadPartCopy", key, err);
  if (ok) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""};
    char *et = afs_xml_get(s, "ETag");
    afs_s3_copy_header_value(etag_out, 130, et ? et : "", et ? strlen(et) : 0);
    free(et);
    if (!etag_out[0])
      ok = afs_error_set(err, EIO, "S3 UploadPartCopy %s: no ETag in answer", key);
  }
  afs_s3_resp_free(&r);
  free(source);
  return ok;
}

bool afs_s3_multipart_abort(const struct afs_s3_client *c, const char *key, const char *upload_id,
                            struct afs_error *err) {
  if (!need_key(key, err))
    return false;
  if (!upload_id || !*upload_id)
    return afs_error_set(err, EINVAL, "AbortMultipartUpload needs an upload id");
  struct afs_sigv4_param p = {"uploadId", upload_id};
  struct afs_s3_req req = {.method = "DELETE", .key = key, .params = &p, .nparams = 1};
  struct afs_s3_resp r;
  bool ok = afs_s3_perform(c, &req, &r, err);
  if (ok && r.status != 204 && r.status != 200 && r.status != 404)
    ok = afs_s3_status_error(&r, "AbortMultipartUpload", key, err);
  afs_s3_resp_free(&r);
  return ok;
}

/* "2010-11-10T20:48:33.000Z" as ms since the epoch; 0 when it does not parse. */
static int64_t iso_ms(const char *s) {
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  const char *end = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
  if (!end)
    return 0;
  int64_t ms = (int64_t)timegm(&tm) * 1000;
  if (*end == '.')
    ms += strtol(end + 1, NULL, 10) % 1000;
  return ms;
}

/* One page of ListMultipartUploads; *more and the markers for the next. */
static bool mp_list_page(const struct afs_s3_client *c, struct afs_xspan s, bool *more,
                         char **key_marker, char **id_marker, afs_s3_mp_list_fn fn, void *ud,
                         struct afs_error *err) {
  struct afs_xspan o;
  char *enc = afs_xml_get(s, "EncodingType"), *trunc = afs_xml_get(s, "IsTruncated");
  bool url = enc && !strcmp(enc, "url"), ok = true, stop = false;
  *more = trunc && !strcmp(trunc, "true");
  free(enc);
  free(trunc);
  free(*key_marker);
  free(*id_marker);
  *key_marker = *more ? afs_xml_get(s, "NextKeyMarker") : NULL;
  if (*key_marker && url) { /* encoded like the keys; sent back as the key it names */
    char *k = url_decode(*key_marker);
    free(*key_marker);
    *key_marker = k;
  }
  *id_marker = *more ? afs_xml_get(s, "NextUploadIdMarker") : NULL;
  if (*more && (!*key_marker || !**key_marker)) {
    *more = false;
    return afs_error_set(err, EIO, "S3 ListMultipartUploads: truncated answer without a marker");
  }
  while (ok && afs_xml_next(&s, "Upload", &o)) {
    char *k = afs_xml_get(o, "Key"), *id = afs_xml_get(o, "UploadId");
    char *when = afs_xml_get(o, "Initiated");
    char *key = k && url ? url_decode(k) : (k ? strdup(k) : NULL);
    if (!key || !id || !*id) {
      ok = afs_error_set(err, EIO, "S3 ListMultipartUploads: malformed <Upload>");
    } else {
      struct afs_s3_mp_listed u = {key, id, iso_ms(when)};
      if (!fn(ud, &u))
        stop = true;
    }
    free(k);
    free(id);
    free(when);
    free(key);
    if (stop)
      break;
  }
  (void)c;
  if (stop)
    *more = false;
  return ok;
}

bool afs_s3_multipart_list(const struct afs_s3_client *c, const char *prefix, afs_s3_mp_list_fn fn,
                           void *ud, struct afs_error *err) {
  char *key_marker = NULL, *id_marker = NULL;
  bool ok = true, more = true;
  while (ok && more) {
    struct afs_sigv4_param p[5] = {{"uploads", ""}, {"encoding-type", "url"}};
    size_t np = 2;
    if (prefix && *prefix)
      p[np++] = (struct afs_sigv4_param){"prefix", prefix};
    if (key_marker)
      p[np++] = (struct afs_sigv4_param){"key-marker", key_marker};
    if (id_marker && *id_marker)
      p[np++] = (struct afs_sigv4_param){"upload-id-marker", id_marker};
    struct afs_s3_req req = {.method = "GET", .params = p, .nparams = np};
    struct afs_s3_resp r;
    ok = afs_s3_perform(c, &req, &r, err);
    if (ok && r.status != 200)
      ok = afs_s3_status_error(&r, "ListMultipartUploads", c->target.bucket, err);
    if (ok) {
      struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""};
      ok = mp_list_page(c, s, &more, &key_marker, &id_marker, fn, ud, err);
    }
    afs_s3_resp_free(&r);
  }
  free(key_marker);
  free(id_marker);
  return ok;
}
