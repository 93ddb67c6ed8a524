#include "assetfs/http_get.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "assetfs/log.h"
#include "assetfs/origin.h"
#include "http_int.h"

struct afs_http_conn {
  CURL *easy;
  long connect_timeout_s, stall_timeout_s;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}
void afs_http_global_init(void) {
  pthread_once(&g_curl_once, curl_init_once);
}

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
  int64_t off, len;          /* the range asked for */
  bool size_only;            /* afs_http_probe_size: the headers say all, no body wanted */
  long status;               /* of the last response seen by the header callback */
  int64_t total;             /* from Content-Range, -1 if none */
  int64_t cr_first, cr_last; /* Content-Range's first and last byte, -1 if none */
  int64_t clen;              /* Content-Length, -1 if none */
  bool decided;              /* the final response's headers are all in: verdict below */
  bool deliver;              /* its body is the bytes asked for: give it to the sink */
  int verdict;               /* errno when the answer is refused at its headers, 0 if not */
  char why[200];             /* ... and why */
  char location[300];        /* origin of a redirect's Location, for the message */
  bool aborted;              /* the sink said stop */
  int64_t delivered;         /* body bytes given to the sink */
  char errbody[256];         /* start of an error body, for the log */
  size_t errlen;
};

static int64_t header_int(const char *v) {
  while (*v == ' ' || *v == '\t')
    v++;
  if (*v < '0' || *v > '9')
    return -1;
  return strtoll(v, NULL, 10);
}

/* Status and Content-Range are judged when the headers end, before any body byte can
 * reach the sink (the block cache): a 206 must start at the offset asked for, a 200 is
 * the whole object and is taken only at offset 0 when it fits in the range asked for
 * (a server that ignored Range would otherwise put byte 0 where byte `off` belongs),
 * and nothing else is data. */
static void decide(struct xfer *x) {
  x->decided = true;
  x->deliver = false;
  x->verdict = 0;
  int64_t last = x->off + x->len - 1;
  if (x->status == 206) {
    if (x->cr_first < 0)
      snprintf(x->why, sizeof x->why, "HTTP 206 without a Content-Range");
    else if (x->cr_first != x->off || x->cr_last < x->cr_first || x->cr_last > last)
      snprintf(x->why, sizeof x->why,
               "HTTP 206 for bytes %" PRId64 "-%" PRId64 " when %" PRId64 "-%" PRId64
               " were asked for",
               x->cr_first, x->cr_last, x->off, last);
    else
      x->deliver = true;
    if (!x->deliver)
      x->verdict = EIO;
  } else if (x->status == 200) {
    if (x->size_only) {
      x->total = x->clen; /* the whole object's headers: its size */
      if (x->clen < 0) {
        x->verdict = EIO;
        snprintf(x->why, sizeof x->why, "HTTP 200 without a Content-Length: size unknown");
      }
    } else if (x->off == 0 && x->clen >= 0 && x->clen <= x->len) {
      x->deliver = true;
    } else {
      x->verdict = EIO;
      snprintf(x->why, sizeof x->why,
               "server ignored the range (HTTP 200 with %" PRId64 " bytes for bytes %" PRId64
               "-%" PRId64 ")",
               x->clen, x->off, last);
    }
  } else if (x->status >= 300 && x->status < 400) {
    x->verdict = AFS_E_URL_REFUSED;
    snprintf(x->why, sizeof x->why, "HTTP %ld redirect to %s not followed", x->status,
             *x->location ? x->location : "(no Location)");
  } else if (x->status >= 200 && x->status < 300) {
    x->verdict = EIO;
    snprintf(x->why, sizeof x->why, "HTTP %ld is not an answer to a ranged GET", x->status);
  }
  /* 4xx/5xx: no data; the body is S3's XML error, kept for the message */
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  struct xfer *x = ud;
  size_t len = size * n;
  char line[512];
  size_t m = len < sizeof line - 1 ? len : sizeof line - 1;
  memcpy(line, buf, m);
  line[m] = 0;
  line[strcspn(line, "\r\n")] = 0;
  if (!strncmp(line, "HTTP/", 5)) {
    const char *sp = strchr(line, ' ');
    x->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    x->total = x->cr_first = x->cr_last = x->clen = -1;
    x->decided = x->deliver = false;
    x->location[0] = 0;
  } else if (!strncasecmp(line, "Content-Range:", 14)) {
    /* "Content-Range: bytes 0-0/12345" (or "bytes * /12345" on a 416) */
    long long a = -1, b = -1;
    const char *v = line + 14;
    while (*v == ' ')
      v++;
    if (!strncasecmp(v, "bytes ", 6) && sscanf(v + 6, "%lld-%lld", &a, &b) == 2 && a >= 0 &&
        b >= 0) {
      x->cr_first = a;
      x->cr_last = b;
    }
    const char *slash = strchr(v, '/');
    if (slash && slash[1] != '*')
      x->total = header_int(slash + 1);
  } else if (!strncasecmp(line, "Content-Length:", 15)) {
    x->clen = header_int(line + 15);
  } else if (!strncasecmp(line, "Location:", 9)) {
    const char *v = line + 9;
    while (*v == ' ')
      v++;
    afs_origin_describe(v, x->location, sizeof x->location);
  } else if (!*line && x->status >= 200) {
    /* The end of the final response's headers (1xx are interim: another follows). */
    decide(x);
    if (x->verdict || (x->size_only && x->status == 200))
      return 0; /* not a byte of body: ends the transfer (CURLE_WRITE_ERROR) */
  }
  return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
  struct xfer *x = ud;
  size_t len = size * n;
  if (!x->decided)
    return 0; /* body without headers: nothing to judge it by */
  if (!x->deliver) {
    size_t room = sizeof x->errbody - 1 - x->errlen;
    size_t m = len < room ? len : room;
    memcpy(x->errbody + x->errlen, buf, m);
    x->errlen += m;
    x->errbody[x->errlen] = 0;
    return len;
  }
  x->delivered += (int64_t)len;
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

static bool get_range(struct afs_http_conn *c, const char *url, int64_t off, int64_t len,
                      bool size_only, afs_http_sink sink, void *ctx, long *status, int64_t *total,
                      struct afs_error *err) {
  struct xfer x = {.sink = sink,
                   .ctx = ctx,
                   .off = off,
                   .len = len,
                   .size_only = size_only,
                   .total = -1,
                   .cr_first = -1,
                   .cr_last = -1,
                   .clen = -1};
  char range[64];
  CURL *e = c->easy;
  CURLU *hu = NULL;
  if (status)
    *status = 0;
  if (total)
    *total = -1;
  if (len <= 0 || off < 0)
    return afs_error_set(err, EINVAL, "bad range %" PRId64 "+%" PRId64, off, len);
  snprintf(range, sizeof range, "%" PRId64 "-%" PRId64, off, off + len - 1);
  curl_easy_reset(e); /* keeps the connection cache: the point of reusing the handle */
  if (!afs_http_setup_url(e, url, &hu, err))
    return false;
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
  curl_easy_setopt(e, CURLOPT_CURLU, NULL);
  curl_url_cleanup(hu);
  long code = x.status;
  if (!code)
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  if (status)
    *status = code;
  if (total)
    *total = x.total;
  if (x.aborted)
    return afs_error_set(err, EIO, "GET %s: aborted by the reader", range);
  if (x.decided && x.verdict) {
    char where[300];
    afs_origin_describe(url, where, sizeof where);
    return afs_error_set(err, x.verdict, "GET bytes %s from %s: %s", range, where, x.why);
  }
  if (size_only && x.decided && code == 200 && x.total >= 0)
    return true; /* the transfer was cut after the headers on purpose */
  if (rc != CURLE_OK)
    return afs_error_set(err, AFS_E_TRANSIENT, "GET bytes %s: %s", range, curl_easy_strerror(rc));
  if (x.decided && x.deliver)
    return true;
  char s3c[64];
  s3_code(x.errbody, s3c, sizeof s3c);
  if (code == 403)
    return afs_error_set(err, AFS_E_URL_REFUSED, "GET bytes %s: HTTP 403 (%s)", range, s3c);
  if (code == 404)
    return afs_error_set(err, ENOENT, "GET bytes %s: HTTP 404 (%s): object is gone", range, s3c);
  if (code >= 500 || code == 429 || code == 408)
    return afs_error_set(err, AFS_E_TRANSIENT, "GET bytes %s: HTTP %ld (%s)", range, code, s3c);
  return afs_error_set(err, EIO, "GET bytes %s: HTTP %ld (%s)", range, code, s3c);
}

bool afs_http_get_range(struct afs_http_conn *c, const char *url, int64_t off, int64_t len,
                        afs_http_sink sink, void *ctx, long *status, int64_t *total,
                        struct afs_error *err) {
  return get_range(c, url, off, len, false, sink, ctx, status, total, err);
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
  /* size_only: a server that ignores Range answers 200 with the whole object; its
   * Content-Length is the size and the body is not read. */
  if (!get_range(c, url, 0, 1, true, discard, NULL, &st, &total, err)) {
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
  if (total < 0)
    return afs_error_set(err, EIO, "size probe: no Content-Range in the answer");
  *size = total;
  return true;
}
