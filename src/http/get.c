#include "assetfs/http_get.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "assetfs/log.h"

struct afs_http_conn {
  CURL *easy;
  long connect_timeout_s, stall_timeout_s;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void afs_http_global_init(void) { pthread_once(&g_curl_once, curl_init_once); }

struct afs_http_conn *afs_http_conn_new(long connect_timeout_s, long stall_timeout_s) {
  afs_http_global_init();
  struct afs_http_conn *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->easy = curl_easy_init();
  if (!c->easy) {
    free(c);
    return NULL;
  }
  c->connect_timeout_s = connect_timeout_s > 0 ? connect_timeout_s : 5;
  c->stall_timeout_s = stall_timeout_s > 0 ? stall_timeout_s : 15;
  return c;
}

void afs_http_conn_free(struct afs_http_conn *c) {
  if (!c)
    return;
  curl_easy_cleanup(c->easy);
  free(c);
}

struct xfer {
  afs_http_sink sink;
  void *ctx;
  long status;       /* of the last response seen by the header callback */
  int64_t total;     /* from Content-Range, -1 if none */
  bool ignore_body;  /* error responses: body is an XML error, not data */
  bool aborted;      /* the sink said stop */
  char errbody[256]; /* start of an error body, for the log */
  size_t errlen;
};

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  struct xfer *x = ud;
  size_t len = size * n;
  if (len > 5 && !strncmp(buf, "HTTP/", 5)) {
    const char *sp = memchr(buf, ' ', len);
    x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    x->ignore_body = x->status < 200 || x->status >= 300;
    x->total = -1;
  } else if (len > 14 && !strncasecmp(buf, "Content-Range:", 14)) {
    /* "Content-Range: bytes 0-0/12345" */
    char tmp[128];
    size_t m = len < sizeof tmp - 1 ? len : sizeof tmp - 1;
    memcpy(tmp, buf, m);
    tmp[m] = 0;
    const char *slash = strchr(tmp, '/');
    if (slash && slash[1] != '*')
      x->total = strtoll(slash + 1, NULL, 10);
  }
  return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
  struct xfer *x = ud;
  size_t len = size * n;
  if (x->ignore_body) {
    size_t room = sizeof x->errbody - 1 - x->errlen;
    size_t m = len < room ? len : room;
    memcpy(x->errbody + x->errlen, buf, m);
    x->errlen += m;
    x->errbody[x->errlen] = 0;
    return len;
  }
  if (x->sink && !x->sink(x->ctx, buf, len)) {
    x->aborted = true;
    return 0;
  }
  return len;
}

/* S3's XML error code, e.g. AccessDenied or SignatureDoesNotMatch, for the log. */
static void s3_code(const char *body, char *out, size_t n) {
  const char *p = strstr(body, "<Code>");
  const char *q = p ? strstr(p, "</Code>") : NULL;
  if (!p || !q) {
    snprintf(out, n, "-");
    return;
  }
  p += 6;
  snprintf(out, n, "%.*s", (int)(q - p), p);
}

bool afs_http_get_range(struct afs_http_conn *c, const char *url, int64_t off, int64_t len,
                        afs_http_sink sink, void *ctx, long *status, int64_t *total,
                        struct afs_error *err) {
  struct xfer x = {.sink = sink, .ctx = ctx, .total = -1};
  char range[64];
  CURL *e = c->easy;
  if (status)
    *status = 0;
  if (total)
    *total = -1;
  if (len <= 0 || off < 0)
    return afs_error_set(err, EINVAL, "bad range %" PRId64 "+%" PRId64, off, len);
  snprintf(range, sizeof range, "%" PRId64 "-%" PRId64, off, off + len - 1);
  curl_easy_reset(e); /* keeps the connection cache: the point of reusing the handle */
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_RANGE, range);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, c->connect_timeout_s);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, c->stall_timeout_s);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
  CURLcode rc = curl_easy_perform(e);
  long code = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  if (status)
    *status = code;
  if (total)
    *total = x.total;
  if (x.aborted)
    return afs_error_set(err, EIO, "GET %s: aborted by the reader", range);
  if (rc != CURLE_OK)
    return afs_error_set(err, EAGAIN, "GET bytes %s: %s", range, curl_easy_strerror(rc));
  if (code == 206 || (code == 200 && off == 0))
    return true;
  char s3c[64];
  s3_code(x.errbody, s3c, sizeof s3c);
  if (code == 403)
    return afs_error_set(err, EACCES, "GET bytes %s: HTTP 403 (%s)", range, s3c);
  if (code == 404)
    return afs_error_set(err, ENOENT, "GET bytes %s: HTTP 404 (%s): object is gone", range, s3c);
  if (code >= 500 || code == 429 || code == 408)
    return afs_error_set(err, EAGAIN, "GET bytes %s: HTTP %ld (%s)", range, code, s3c);
  if (code == 200)
    return afs_error_set(err, EIO, "GET bytes %s: server ignored the range", range);
  return afs_error_set(err, EIO, "GET bytes %s: HTTP %ld (%s)", range, code, s3c);
}

static bool discard(void *ctx, const void *data, size_t len) {
  (void)ctx;
  (void)data;
  (void)len;
  return true;
}

bool afs_http_probe_size(struct afs_http_conn *c, const char *url, int64_t *size, long *status,
                         struct afs_error *err) {
  int64_t total = -1;
  long st = 0;
  *size = -1;
  if (!afs_http_get_range(c, url, 0, 1, discard, NULL, &st, &total, err)) {
    if (status)
      *status = st;
    /* An empty object cannot satisfy any range: S3 answers 416 with the size. */
    if (st == 416 && total >= 0) {
      *size = total;
      return true;
    }
    if (st == 416) {
      *size = 0;
      return true;
    }
    return false;
  }
  if (status)
    *status = st;
  if (total < 0 && st == 200) {
    double cl = -1;
    curl_off_t clo = -1;
    if (curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clo) == CURLE_OK)
      cl = (double)clo;
    total = (int64_t)cl;
  }
  if (total < 0)
    return afs_error_set(err, EIO, "size probe: no Content-Range in the answer");
  *size = total;
  return true;
}
