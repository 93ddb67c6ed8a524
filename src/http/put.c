#include "assetfs/http_put.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/log.h"
#include "http_int.h"

/* curl_global_init is reference counted and thread-safe in the libcurl we build on
 * (>= 7.84); the GET module may call it too. */
static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}
static void put_global_init(void) {
  pthread_once(&g_curl_once, curl_init_once);
}

void afs_put_opts_default(struct afs_put_opts *o) {
  o->max_attempts = 6;
  o->connect_timeout_ms = 10000;
  o->stall_seconds = 30;
  o->deadline_ms = 0;
  o->parallel = 0;
}

/* A part of the file: curl reads [offset, offset + length) and no further. */
struct range_src {
  FILE *f;
  int64_t left;
};

static size_t read_range(char *buf, size_t size, size_t nitems, void *arg) {
  struct range_src *r = arg;
  size_t want = size * nitems;
  if ((int64_t)want > r->left)
    want = (size_t)r->left;
  if (want == 0)
    return 0;
  size_t n = fread(buf, 1, want, r->f);
  if (n == 0)
    return CURL_READFUNC_ABORT; /* the staged file shrank under us: fail this attempt */
  r->left -= (int64_t)n;
  return n;
}

struct body {
  char buf[2048];
  size_t len;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg) {
  struct body *b = arg;
  size_t n = size * nmemb, room = sizeof b->buf - 1 - b->len;
  memcpy(b->buf + b->len, data, n < room ? n : room);
  b->len += n < room ? n : room;
  b->buf[b->len] = '\0';
  return n;
}

enum attempt_result { ATTEMPT_OK, ATTEMPT_RETRY, ATTEMPT_FATAL };

/* Keeps the ETag header of the answer (what a signed `uploaded` binds to, auth.h). */
static size_t on_header(char *data, size_t size, size_t nmemb, void *arg) {
  struct afs_put_job *job = arg;
  size_t n = size * nmemb;
  if (n > 5 && !strncasecmp(data, "ETag:", 5)) {
    const char *v = data + 5, *e = data + n;
    while (v < e && (*v == ' ' || *v == '\t' || *v == '"'))
      v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '"'))
      e--;
    snprintf(job->etag, sizeof job->etag, "%.*s", (int)(e - v), v);
  }
  return n;
}

static enum attempt_result put_once(struct afs_put_job *job, const struct afs_put_opts *opts) {
  enum attempt_result res = ATTEMPT_FATAL;
  CURL *c = NULL;
  CURLU *hu = NULL;
  struct curl_slist *hdrs = NULL;
  struct body body = {.len = 0};
  FILE *f = fopen(job->path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    afs_error_set(&job->err, errno ? errno : EIO, "%s: cannot open %s: %s", job->what, job->path,
                  strerror(errno));
    goto done;
  }
  struct range_src range = {f, job->length};
  int64_t len = job->length > 0 ? job->length : st.st_size;
  if (job->length > 0 && (job->offset < 0 || job->offset + job->length > st.st_size ||
                          fseeko(f, (off_t)job->offset, SEEK_SET) != 0)) {
    afs_error_set(&job->err, EIO, "%s: bytes %lld..%lld are not in %s (it changed)", job->what,
                  (long long)job->offset, (long long)(job->offset + job->length), job->path);
    goto done;
  }
  if (len > AFS_PUT_MAX_SIZE) {
    afs_error_set(&job->err, AFS_E_TOO_BIG, "%s: %lld bytes is over the 5 GiB single-PUT limit",
                  job->what, (long long)st.st_size);
    goto done;
  }
  c = curl_easy_init();
  if (!c) {
    afs_error_set(&job->err, ENOMEM, "%s: curl_easy_init failed", job->what);
    goto done;
  }
  struct afs_error uerr = {0};
  if (!afs_http_setup_url(c, job->url, &hu, &uerr)) {
    /* A writeUrl elsewhere than the bucket: nothing is sent, and trying again will not
     * make it right (AFS_E_URL_REFUSED is a permanent upload failure). */
    afs_error_set(&job->err, uerr.code, "%s: PUT not sent: %s", job->what, uerr.msg);
    goto done;
  }
  char ct[300];
  snprintf(ct, sizeof ct, "Content-Type: %s",
           job->content_type ? job->content_type : "application/octet-stream");
  hdrs = curl_slist_append(hdrs, ct);
  hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
  curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
  if (job->length > 0) {
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_range);
    curl_easy_setopt(c, CURLOPT_READDATA, &range);
  } else {
    curl_easy_setopt(c, CURLOPT_READDATA, f);
  }
  curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  job->etag[0] = '\0';
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, job);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, opts->connect_timeout_ms);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, opts->stall_seconds);
  curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    afs_error_set(&job->err, EIO, "%s: PUT failed: %s", job->what, curl_easy_strerror(rc));
    res = ATTEMPT_RETRY;
    goto done;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &job->http_status);
  long s = job->http_status;
  if (s >= 200 && s < 300) {
    res = ATTEMPT_OK;
  } else if (s >= 500 || s == 408 || s == 429) {
    afs_error_set(&job->err, EIO, "%s: PUT got HTTP %ld", job->what, s);
    res = ATTEMPT_RETRY;
  } else if (s >= 300 && s < 400) {
    afs_error_set(&job->err, AFS_E_URL_REFUSED,
                  "%s: PUT answered with HTTP %ld (a redirect, not followed)", job->what, s);
  } else if (s == 403 && strcasestr(body.buf, "expired")) {
    afs_error_set(&job->err, AFS_E_URL_EXPIRED, "%s: the presigned PUT URL has expired", job->what);
  } else {
    /* Neither retried nor hidden: a 4xx means the URL or the request is wrong. */
    const char *code = strstr(body.buf, "<Code>");
    char detail[128] = "";
    if (code)
      snprintf(detail, sizeof detail, " (%.*s)", (int)strcspn(code + 6, "<"), code + 6);
    afs_error_set(&job->err, s == 403 ? AFS_E_URL_REFUSED : EIO, "%s: PUT refused with HTTP %ld%s",
                  job->what, s, detail);
  }
done:
  curl_slist_free_all(hdrs);
  if (c)
    curl_easy_cleanup(c);
  curl_url_cleanup(hu);
  if (f)
    fclose(f);
  return res;
}

bool afs_http_put(struct afs_put_job *job, const struct afs_put_opts *opts) {
  struct afs_put_opts defaults;
  if (!opts) {
    afs_put_opts_default(&defaults);
    opts = &defaults;
  }
  put_global_init();
  job->ok = false;
  job->http_status = 0;
  afs_error_clear(&job->err);
  long backoff_ms = 200;
  for (int attempt = 1;; attempt++) {
    enum attempt_result r = put_once(job, opts);
    if (r == ATTEMPT_OK) {
      job->ok = true;
      return true;
    }
    if (r == ATTEMPT_FATAL || attempt >= opts->max_attempts)
      return false;
    int64_t now = afs_monotonic_ms();
    if (opts->deadline_ms && now + backoff_ms >= opts->deadline_ms)
      return false;
    afs_debug("%s: attempt %d failed (%s); retrying in %ld ms", job->what, attempt, job->err.msg,
              backoff_ms);
    /* Jitter spreads retries of parallel parts and of many files. */
    usleep((useconds_t)(backoff_ms + rand() % (backoff_ms / 2 + 1)) * 1000);
    backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
  }
}

/* Workers of one afs_http_put_all: each takes the next job until none is left. */
struct put_pool {
  struct afs_put_job *jobs;
  int n;
  int next; /* atomic */
  const struct afs_put_opts *opts;
};

static void *put_worker(void *arg) {
  struct put_pool *p = arg;
  for (;;) {
    int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
    if (i >= p->n)
      return NULL;
    afs_http_put(&p->jobs[i], p->opts);
  }
}

bool afs_http_put_all(struct afs_put_job *jobs, int n, const struct afs_put_opts *opts,
                      struct afs_error *err) {
  put_global_init();
  int width = opts && opts->parallel > 0 ? opts->parallel : n;
  if (width > 64)
    width = 64;
  if (width > n)
    width = n;
  struct put_pool pool = {.jobs = jobs, .n = n, .next = 0, .opts = opts};
  pthread_t th[64];
  bool started[64] = {false};
  /* The calling thread is one of the workers. */
  for (int i = 1; i < width; i++)
    started[i] = pthread_create(&th[i], NULL, put_worker, &pool) == 0;
  put_worker(&pool);
  for (int i = 1; i < width; i++)
    if (started[i])
      pthread_join(th[i], NULL);
  int first = -1;
  for (int i = 0; i < n; i++) {
    if (jobs[i].ok)
      continue;
    if (first < 0 || jobs[i].err.code == AFS_E_URL_EXPIRED)
      first = i;
  }
  if (first < 0)
    return true;
  if (err)
    *err = jobs[first].err;
  return false;
}
