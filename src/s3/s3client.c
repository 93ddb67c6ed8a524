/* The broker's signed S3 requests (see s3.h): one request function that signs, sends,
 * retries transient failures with backoff, and classifies the answer; the operations
 * on top of it build their query, headers and XML body. */
#include "assetfs/s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "assetfs/log.h"
#include "s3xml.h"

#define MAX_RESPONSE (32L << 20) /* a ListObjectsV2 page is ~1 MiB; anything bigger is wrong */

/* Each thread's easy handle, kept for connection reuse. Only its own thread touches it. */
static __thread CURL *tl_curl;
static __thread unsigned tl_seed;
static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

void afs_s3_thread_cleanup(void) {
  if (tl_curl) {
    curl_easy_cleanup(tl_curl);
    tl_curl = NULL;
  }
}

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
  return err && (err->code == EHOSTUNREACH || err->code == EAGAIN);
}

/* ---- one request ---- */

struct s3_req {
  const char *method;
  const char *key; /* NULL: bucket-level */
  const struct afs_sigv4_param *params;
  size_t nparams;
  const struct afs_sigv4_header *headers; /* signed and sent */
  size_t nheaders;
  const char *body;
  size_t body_len;
  bool error_in_200; /* CompleteMultipartUpload may answer 200 with an <Error> body */
};

struct s3_resp {
  long status;
  char *body;
  size_t len;
  bool too_big;
  struct afs_s3_object_info info;
};

static void resp_free(struct s3_resp *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
  struct s3_resp *r = ud;
  size_t len = size * n;
  if (r->len + len > (size_t)MAX_RESPONSE) {
    r->too_big = true;
    return 0;
  }
  char *nb = realloc(r->body, r->len + len + 1);
  if (!nb)
    return 0;
  memcpy(nb + r->len, buf, len);
  r->body = nb;
  r->len += len;
  r->body[r->len] = '\0';
  return len;
}

static void copy_header_value(char *dst, size_t n, const char *v, size_t vl) {
  while (vl && (*v == ' ' || *v == '\t')) {
    v++;
    vl--;
  }
  while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
    vl--;
  if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') { /* ETag quotes */
    v++;
    vl -= 2;
  }
  if (vl >= n)
    vl = n - 1;
  memcpy(dst, v, vl);
  dst[vl] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  struct s3_resp *r = ud;
  size_t len = size * n;
  struct afs_s3_object_info *i = &r->info;
  if (len >= 5 && !strncmp(buf, "HTTP/", 5)) { /* a new response (after 100 Continue) */
    memset(i, 0, sizeof *i);
    return len;
  }
  const char *colon = memchr(buf, ':', len);
  if (!colon)
    return len;
  size_t nl = (size_t)(colon - buf);
  const char *v = colon + 1;
  size_t vl = len - nl - 1;
  char tmp[128];
  if (nl == 4 && !strncasecmp(buf, "etag", 4)) {
    copy_header_value(i->etag, sizeof i->etag, v, vl);
  } else if (nl == 12 && !strncasecmp(buf, "content-type", 12)) {
    copy_header_value(i->content_type, sizeof i->content_type, v, vl);
  } else if (nl == 14 && !strncasecmp(buf, "content-length", 14)) {
    copy_header_value(tmp, sizeof tmp, v, vl);
    i->size = strtoll(tmp, NULL, 10);
  } else if (nl == 13 && !strncasecmp(buf, "last-modified", 13)) {
    copy_header_value(tmp, sizeof tmp, v, vl);
    time_t t = curl_getdate(tmp, NULL);
    i->last_modified = t > 0 ? (int64_t)t : 0;
  }
  return len;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static long backoff(const struct afs_s3_client *c, int attempt) {
  long d = c->backoff_ms > 0 ? c->backoff_ms : 1;
  for (int i = 1; i < attempt && d < c->max_backoff_ms; i++)
    d *= 2;
  if (d > c->max_backoff_ms)
    d = c->max_backoff_ms;
  if (!tl_seed)
    tl_seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&tl_seed;
  return d / 2 + (long)(rand_r(&tl_seed) % (unsigned)(d / 2 + 1)); /* "equal jitter" */
}

/* S3's <Code> and <Message> of an error body, for messages. */
static void error_detail(const struct s3_resp *r, char *out, size_t n) {
  out[0] = '\0';
  if (!r->body)
    return;
  struct afs_xspan s = {r->body, r->body + r->len};
  char *code = afs_xml_get(s, "Code"), *msg = afs_xml_get(s, "Message");
  if (code || msg)
    snprintf(out, n, "%s%s%s", code ? code : "", code && msg ? ": " : "", msg ? msg : "");
  free(code);
  free(msg);
}

static bool transient_curl(CURLcode rc) {
  switch (rc) {
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_OUT_OF_MEMORY:
  case CURLE_BAD_FUNCTION_ARGUMENT:
  case CURLE_WRITE_ERROR: /* our callback refused: too big or out of memory */
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
    return false;
  default:
    return true;
  }
}

/* Sends REQ until S3 gives a definite answer. true: *resp holds that answer (any status;
 * the caller interprets it). false: transient failure on every attempt, or a local one. */
static bool perform(const struct afs_s3_client *c, const struct s3_req *req,
                    struct s3_resp *resp, struct afs_error *err) {
  pthread_once(&curl_once, curl_init_once);
  const char *what = req->key ? req->key : c->target.bucket;
  int attempts = c->max_attempts > 0 ? c->max_attempts : 1;
  char body_hash[65];
  afs_sha256_hex(req->body ? req->body : "", req->body_len, body_hash);
  memset(resp, 0, sizeof *resp);

  for (int attempt = 1; attempt <= attempts; attempt++) {
    struct afs_sigv4_signed s;
    struct curl_slist *hl = NULL;
    bool has_ct = false, ok = false, retry = false;
    if (!afs_sigv4_sign_request(&c->target, req->method, req->key, req->params, req->nparams,
                                req->headers, req->nheaders, body_hash, time(NULL), &s, err))
      return false;
    if (!tl_curl && !(tl_curl = curl_easy_init())) {
      afs_sigv4_signed_free(&s);
      return afs_error_set(err, ENOMEM, "curl_easy_init failed");
    }
    CURL *h = tl_curl;
    curl_easy_reset(h);
    resp_free(resp);

    char line[1024];
    snprintf(line, sizeof line, "Host: %s", s.host);
    hl = curl_slist_append(hl, line);
    char *auth = NULL;
    if (asprintf(&auth, "Authorization: %s", s.authorization) < 0)
      auth = NULL;
    if (auth)
      hl = curl_slist_append(hl, auth);
    free(auth); /* the Authorization line: freed here, never logged */
    snprintf(line, sizeof line, "x-amz-date: %s", s.amz_date);
    hl = curl_slist_append(hl, line);
    snprintf(line, sizeof line, "x-amz-content-sha256: %s", s.payload_hash);
    hl = curl_slist_append(hl, line);
    for (size_t i = 0; i < req->nheaders; i++) {
      char *hv = NULL;
      if (asprintf(&hv, "%s: %s", req->headers[i].name, req->headers[i].value) >= 0) {
        hl = curl_slist_append(hl, hv);
        free(hv);
      }
      if (!strcmp(req->headers[i].name, "content-type"))
        has_ct = true;
    }
    hl = curl_slist_append(hl, "Expect:");
    if (!has_ct)
      hl = curl_slist_append(hl, "Content-Type:"); /* curl's default for POST is a form */

    curl_easy_setopt(h, CURLOPT_URL, s.url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, c->connect_timeout_s);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, c->timeout_s);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);
    if (!strcmp(req->method, "HEAD")) {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(req->method, "POST")) {
      curl_easy_setopt(h, CURLOPT_POST, 1L);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "GET") != 0) {
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    }

    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hl);
    afs_sigv4_signed_free(&s);
    if (rc != CURLE_OK) {
      if (resp->too_big)
        afs_error_set(err, EIO, "S3 %s %s: answer larger than %ld bytes", req->method, what,
                      MAX_RESPONSE);
      else
        afs_error_set(err, transient_curl(rc) ? EHOSTUNREACH : EIO,
                      "S3 unreachable at %s (%s %s): %s",
                      c->target.endpoint ? c->target.endpoint : "AWS", req->method, what,
                      curl_easy_strerror(rc));
      retry = transient_curl(rc) && !resp->too_big;
    } else {
      curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
      afs_debug("s3: %s %s -> %ld", req->method, what, resp->status);
      char detail[300];
      error_detail(resp, detail, sizeof detail);
      if (resp->status >= 500 || resp->status == 429) {
        afs_error_set(err, EAGAIN, "S3 %s %s: HTTP %ld%s%s", req->method, what, resp->status,
                      *detail ? " " : "", detail);
        retry = true;
      } else if (req->error_in_200 && resp->status == 200 && resp->body &&
                 strstr(resp->body, "<Error>")) {
        afs_error_set(err, EAGAIN, "S3 %s %s: error after 200: %s", req->method, what, detail);
        retry = true;
      } else {
        ok = true;
      }
    }
    if (ok)
      return true;
    if (!retry)
      return false;
    if (attempt < attempts) {
      long d = backoff(c, attempt);
      afs_warn("%s; attempt %d of %d, retrying in %ld ms", err->msg, attempt, attempts, d);
      sleep_ms(d);
    }
  }
  return false;
}

/* Maps a definite non-success answer to an error. */
static bool status_error(const struct s3_resp *r, const char *method, const char *what,
                         struct afs_error *err) {
  char detail[300];
  error_detail(r, detail, sizeof detail);
  int code = r->status == 403 ? EACCES : r->status == 404 ? ENOENT : EIO;
  return afs_error_set(err, code, "S3 %s %s: HTTP %ld%s%s", method, what, r->status,
                       *detail ? " " : "", detail);
}

/* ---- operations ---- */

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
  struct s3_req req = {.method = "HEAD", .key = key};
  struct s3_resp r;
  bool ok = perform(c, &req, &r, err);
  if (ok) {
    if (r.status == 200) {
      *out = r.info;
      out->exists = true;
    } else if (r.status == 404) {
      out->exists = false;
    } else {
      ok = status_error(&r, "HEAD", key, err);
    }
  }
  resp_free(&r);
  return ok;
}

bool afs_s3_delete_object(const struct afs_s3_client *c, const char *key,
                          struct afs_error *err) {
  if (!need_key(key, err))
    return false;
  struct s3_req req = {.method = "DELETE", .key = key};
  struct s3_resp r;
  bool ok = perform(c, &req, &r, err);
  if (ok && r.status != 204 && r.status != 200 && r.status != 404)
    ok = status_error(&r, "DELETE", key, err);
  resp_free(&r);
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
  struct s3_req req = {.method = "POST", .params = &p, .nparams = 1, .headers = h,
                       .nheaders = 2, .body = body, .body_len = len};
  struct s3_resp r;
  bool ok = perform(c, &req, &r, err);
  if (ok && r.status != 200) {
    ok = status_error(&r, "DeleteObjects", c->target.bucket, err);
    *n_failed += n;
  } else if (ok) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""}, e;
    while (afs_xml_next(&s, "Error", &e)) {
      char *k = afs_xml_get(e, "Key"), *code = afs_xml_get(e, "Code");
      char *msg = afs_xml_get(e, "Message");
      if (!code || strcmp(code, "NoSuchKey") != 0) {
        if (ok)
          afs_error_set(err, code && !strcmp(code, "AccessDenied") ? EACCES : EIO,
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
  resp_free(&r);
  free(body);
  return ok;
}

bool afs_s3_delete_objects(const struct afs_s3_client *c, const char *const *keys, size_t n,
                           size_t *n_failed, struct afs_error *err) {
  size_t failed = 0;
  bool ok = true;
  const char **batch = malloc(sizeof *batch * (n < AFS_S3_DELETE_BATCH ? n + 1 : AFS_S3_DELETE_BATCH));
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
    struct afs_sigv4_param p[5] = {{"list-type", "2"}, {"encoding-type", "url"},
                                   {"max-keys", max_keys}};
    size_t np = 3;
    if (prefix && *prefix)
      p[np++] = (struct afs_sigv4_param){"prefix", prefix};
    if (token)
      p[np++] = (struct afs_sigv4_param){"continuation-token", token};
    struct s3_req req = {.method = "GET", .params = p, .nparams = np};
    struct s3_resp r;
    ok = perform(c, &req, &r, err);
    if (ok && r.status != 200)
      ok = status_error(&r, "ListObjectsV2", c->target.bucket, err);
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
    resp_free(&r);
  }
  free(token);
  return ok;
}

bool afs_s3_multipart_create(const struct afs_s3_client *c, const char *key,
                             const char *content_type, char **upload_id,
                             struct afs_error *err) {
  *upload_id = NULL;
  if (!need_key(key, err))
    return false;
  struct afs_sigv4_param p = {"uploads", NULL};
  struct afs_sigv4_header h = {"content-type", content_type};
  struct s3_req req = {.method = "POST", .key = key, .params = &p, .nparams = 1,
                       .headers = &h, .nheaders = content_type ? 1 : 0};
  struct s3_resp r;
  bool ok = perform(c, &req, &r, err);
  if (ok && r.status != 200)
    ok = status_error(&r, "CreateMultipartUpload", key, err);
  if (ok) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""};
    *upload_id = afs_xml_get(s, "UploadId");
    if (!*upload_id || !**upload_id) {
      free(*upload_id);
      *upload_id = NULL;
      ok = afs_error_set(err, EIO, "S3 CreateMultipartUpload %s: no UploadId in answer", key);
    }
  }
  resp_free(&r);
  return ok;
}

bool afs_s3_multipart_complete(const struct afs_s3_client *c, const char *key,
                               const char *upload_id, const struct afs_s3_part *parts,
                               size_t n, char *etag_out, struct afs_error *err) {
  if (!need_key(key, err))
    return false;
  if (!upload_id || !*upload_id || n == 0 || n > 10000)
    return afs_error_set(err, EINVAL, "CompleteMultipartUpload needs an upload id and 1..10000 parts");
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
  struct s3_req req = {.method = "POST", .key = key, .params = &p, .nparams = 1, .headers = &h,
                       .nheaders = 1, .body = body, .body_len = len, .error_in_200 = true};
  struct s3_resp r;
  bool ok = perform(c, &req, &r, err);
  if (ok && r.status != 200)
    ok = status_error(&r, "CompleteMultipartUpload", key, err);
  if (ok && etag_out) {
    struct afs_xspan s = {r.body ? r.body : "", r.body ? r.body + r.len : ""};
    char *et = afs_xml_get(s, "ETag");
    copy_header_value(etag_out, 130, et ? et : "", et ? strlen(et) : 0);
    free(et);
  }
  resp_free(&r);
  free(body);
  return ok;
}

bool afs_s3_multipart_abort(const struct afs_s3_client *c, const char *key,
                            const char *upload_id, struct afs_error *err) {
  if (!need_key(key, err))
    return false;
  if (!upload_id || !*upload_id)
    return afs_error_set(err, EINVAL, "AbortMultipartUpload needs an upload id");
  struct afs_sigv4_param p = {"uploadId", upload_id};
  struct s3_req req = {.method = "DELETE", .key = key, .params = &p, .nparams = 1};
  struct s3_resp r;
  bool ok = perform(c, &req, &r, err);
  if (ok && r.status != 204 && r.status != 200 && r.status != 404)
    ok = status_error(&r, "AbortMultipartUpload", key, err);
  resp_free(&r);
  return ok;
}
