/* One signed S3 request (see s3http.h): signing per attempt, libcurl on the calling
 * thread's own easy handle, retries with exponential backoff and jitter, classification
 * of the answer. The Authorization header is built here and never logged. */
#include "s3http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
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

void afs_s3_resp_free(struct afs_s3_resp *r) {
  free(r->body);
  memset(r, 0, sizeof *r);
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
  struct afs_s3_resp *r = ud;
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

void afs_s3_copy_header_value(char *dst, size_t n, const char *v, size_t vl) {
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
  struct afs_s3_resp *r = ud;
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
    afs_s3_copy_header_value(i->etag, sizeof i->etag, v, vl);
  } else if (nl == 12 && !strncasecmp(buf, "content-type", 12)) {
    afs_s3_copy_header_value(i->content_type, sizeof i->content_type, v, vl);
  } else if (nl == 14 && !strncasecmp(buf, "content-length", 14)) {
    afs_s3_copy_header_value(tmp, sizeof tmp, v, vl);
    i->size = strtoll(tmp, NULL, 10);
  } else if (nl == 13 && !strncasecmp(buf, "last-modified", 13)) {
    afs_s3_copy_header_value(tmp, sizeof tmp, v, vl);
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
static void error_detail(const struct afs_s3_resp *r, char *out, size_t n) {
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
bool afs_s3_perform(const struct afs_s3_client *c, const struct afs_s3_req *req,
                    struct afs_s3_resp *resp, struct afs_error *err) {
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
    afs_s3_resp_free(resp);

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
        afs_error_set(err, transient_curl(rc) ? AFS_E_UNREACHABLE : EIO,
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
        afs_error_set(err, AFS_E_TRANSIENT, "S3 %s %s: HTTP %ld%s%s", req->method, what,
                      resp->status, *detail ? " " : "", detail);
        retry = true;
      } else if (req->error_in_200 && resp->status == 200 && resp->body &&
                 strstr(resp->body, "<Error>")) {
        afs_error_set(err, AFS_E_TRANSIENT, "S3 %s %s: error after 200: %s", req->method, what,
                      detail);
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
bool afs_s3_status_error(const struct afs_s3_resp *r, const char *method, const char *what,
                         struct afs_error *err) {
  char detail[300];
  error_detail(r, detail, sizeof detail);
  int code = r->status == 403 ? AFS_E_URL_REFUSED : r->status == 404 ? ENOENT : EIO;
  return afs_error_set(err, code, "S3 %s %s: HTTP %ld%s%s", method, what, r->status,
                       *detail ? " " : "", detail);
}
