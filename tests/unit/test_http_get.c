/* Ranged GETs (src/http/get.c) and the reader against loopback servers that misbehave:
 * a server that ignores Range (200 with the whole object), a 206 for other bytes or
 * without Content-Range, a redirect to elsewhere; and URLs outside the allowed origins.
 * In every case no byte reaches the sink (the block cache) and the error is the one the
 * reader maps: EIO for wrong bytes, EACCES for a refused URL or a redirect, which the
 * reader does not "refresh". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "afs_test.h"
#include "afs_testsrv.h"
#include "assetfs/http_allow.h"
#include "assetfs/http_get.h"
#include "reader/reader.h"

enum mode { M_GOOD, M_IGNORE_RANGE, M_WRONG_START, M_NO_CR, M_REDIRECT };

struct srv {
  int lfd, port;
  pthread_t th;
  pthread_mutex_t mu;
  enum mode mode;
  int requests;
  long long size;
  char location[128];
};

static unsigned char byte_at(long long i) {
  return (unsigned char)((i * 13) ^ (i >> 7));
}

static void send_bytes(int fd, long long a, long long b) {
  char buf[8192];
  for (long long off = a; off <= b;) {
    size_t n = 0;
    for (; n < sizeof buf && off <= b; n++, off++)
      buf[n] = (char)byte_at(off);
    testsrv_send_all(fd, buf, n);
  }
}

static void *serve_conn(void *ctx, int fd) {
  struct srv *s = ctx;
  char req[8192];
  size_t have = 0;
  for (;;) {
    char *eoh;
    while (!(eoh = memmem(req, have, "\r\n\r\n", 4))) {
      if (have >= sizeof req - 1)
        goto out;
      ssize_t r = recv(fd, req + have, sizeof req - 1 - have, 0);
      if (r <= 0)
        goto out;
      have += (size_t)r;
    }
    size_t hlen = (size_t)(eoh - req) + 4;
    req[hlen - 1] = 0;
    long long a = 0, b = s->size - 1;
    char *r = strcasestr(req, "\r\nRange: bytes=");
    if (r)
      sscanf(r + 15, "%lld-%lld", &a, &b);
    if (b > s->size - 1)
      b = s->size - 1;
    memmove(req, req + hlen, have - hlen);
    have -= hlen;
    pthread_mutex_lock(&s->mu);
    s->requests++;
    enum mode m = s->mode;
    pthread_mutex_unlock(&s->mu);
    char hdr[512];
    switch (m) {
    case M_GOOD:
      snprintf(hdr, sizeof hdr,
               "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %lld-%lld/%lld\r\n"
               "Content-Length: %lld\r\n\r\n",
               a, b, s->size, b - a + 1);
      testsrv_send_all(fd, hdr, strlen(hdr));
      send_bytes(fd, a, b);
      break;
    case M_IGNORE_RANGE:
      snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n\r\n", s->size);
      testsrv_send_all(fd, hdr, strlen(hdr));
      send_bytes(fd, 0, s->size - 1);
      break;
    case M_WRONG_START: /* the right length, from the wrong place */
      snprintf(hdr, sizeof hdr,
               "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-%lld/%lld\r\n"
               "Content-Length: %lld\r\n\r\n",
               b - a, s->size, b - a + 1);
      testsrv_send_all(fd, hdr, strlen(hdr));
      send_bytes(fd, 0, b - a);
      break;
    case M_NO_CR:
      snprintf(hdr, sizeof hdr, "HTTP/1.1 206 Partial Content\r\nContent-Length: %lld\r\n\r\n",
               b - a + 1);
      testsrv_send_all(fd, hdr, strlen(hdr));
      send_bytes(fd, 0, b - a);
      break;
    case M_REDIRECT:
      snprintf(hdr, sizeof hdr,
               "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 5\r\n\r\nmoved", s->location);
      testsrv_send_all(fd, hdr, strlen(hdr));
      break;
    }
  }
out:
  close(fd);
  return NULL;
}

static void *serve(void *arg) {
  struct srv *s = arg;
  testsrv_accept_each(s->lfd, serve_conn, s);
  return NULL;
}

static void srv_start(struct srv *s, long long size) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  s->size = size;
  s->lfd = testsrv_listen(&s->port);
  pthread_create(&s->th, NULL, serve, s);
}

static void srv_stop(struct srv *s) {
  shutdown(s->lfd, SHUT_RDWR);
  close(s->lfd);
  pthread_join(s->th, NULL);
}

/* Waits until no request has arrived for 200 ms: read-ahead of a closed reader may still
 * be on its way, and must not be counted against the next case. */
static void srv_settle(struct srv *s) {
  int last = -1;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    int now = s->requests;
    pthread_mutex_unlock(&s->mu);
    if (now == last)
      return;
    last = now;
    usleep(200 * 1000);
  }
}

static void srv_mode(struct srv *s, enum mode m) {
  pthread_mutex_lock(&s->mu);
  s->mode = m;
  s->requests = 0;
  pthread_mutex_unlock(&s->mu);
}

struct got {
  unsigned char buf[1 << 20];
  size_t n;
};

static bool sink(void *ctx, const void *data, size_t len) {
  struct got *g = ctx;
  size_t room = sizeof g->buf - g->n;
  memcpy(g->buf + g->n, data, len < room ? len : room);
  g->n += len < room ? len : room;
  return true;
}

static bool right_bytes(const struct got *g, long long off) {
  for (size_t i = 0; i < g->n; i++)
    if (g->buf[i] != byte_at(off + (long long)i))
      return false;
  return true;
}

static struct got G;

static bool get(struct afs_http_conn *c, const char *url, long long off, long long len,
                long *status, struct afs_error *err) {
  G.n = 0;
  afs_error_clear(err);
  return afs_http_get_range(c, url, off, len, sink, &G, status, NULL, err);
}

static void test_get(void) {
  struct srv s, other;
  srv_start(&s, 300000);
  srv_start(&other, 1000);
  char url[256], far[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/bucket/key?X-Amz-Signature=sig", s.port);
  snprintf(far, sizeof far, "http://127.0.0.1:%d/internal/meta-data", other.port);
  snprintf(s.location, sizeof s.location, "%s", far);
  struct afs_http_conn *c = afs_http_conn_new(2, 5);
  struct afs_error err = {0};
  long st = 0;

  srv_mode(&s, M_GOOD);
  CHECK(get(c, url, 1000, 5000, &st, &err));
  CHECK(st == 206 && G.n == 5000 && right_bytes(&G, 1000));

  /* Range ignored: at offset > 0 nothing is delivered */
  srv_mode(&s, M_IGNORE_RANGE);
  CHECK(!get(c, url, 1000, 5000, &st, &err));
  CHECK(err.code == EIO && st == 200 && G.n == 0);
  CHECK(strstr(err.msg, "ignored the range") != NULL && !strstr(err.msg, "sig"));
  /* ... at offset 0, only when the whole object fits in what was asked for */
  CHECK(!get(c, url, 0, 5000, &st, &err));
  CHECK(err.code == EIO && G.n == 0);
  CHECK(get(c, url, 0, 300000, &st, &err));
  CHECK(st == 200 && G.n == 300000 && right_bytes(&G, 0));
  /* the size probe takes the 200's Content-Length and reads no body */
  int64_t size = -1;
  CHECK(afs_http_probe_size(c, url, &size, &st, &err));
  CHECK(size == 300000 && st == 200);

  /* a 206 for other bytes, or without Content-Range */
  srv_mode(&s, M_WRONG_START);
  CHECK(!get(c, url, 4096, 4096, &st, &err));
  CHECK(err.code == EIO && st == 206 && G.n == 0);
  srv_mode(&s, M_NO_CR);
  CHECK(!get(c, url, 4096, 4096, &st, &err));
  CHECK(err.code == EIO && G.n == 0);

  /* a redirect is not followed: EACCES, and the target never hears of it */
  srv_mode(&s, M_REDIRECT);
  srv_mode(&other, M_GOOD);
  CHECK(!get(c, url, 0, 100, &st, &err));
  CHECK(err.code == EACCES && st == 302 && G.n == 0);
  CHECK(strstr(err.msg, "redirect") != NULL);
  CHECK(other.requests == 0);

  /* confinement: only the allowed origin is fetched */
  struct afs_origin allowed;
  CHECK(afs_origin_parse(url, &allowed, NULL));
  afs_http_allow_install(&allowed, 1, NULL, 0, NULL, NULL, 0);
  srv_mode(&s, M_GOOD);
  CHECK(get(c, url, 0, 100, &st, &err));
  CHECK(!get(c, far, 0, 100, &st, &err));
  CHECK(err.code == EACCES && st == 0 && G.n == 0 && other.requests == 0);
  CHECK(!get(c, "file:///etc/passwd", 0, 100, &st, &err));
  CHECK(err.code == EACCES && st == 0 && G.n == 0);
  CHECK(!get(c, "gopher://127.0.0.1:70/_x", 0, 100, &st, &err));
  CHECK(err.code == EACCES && st == 0);
  char tricky[256];
  snprintf(tricky, sizeof tricky, "http://127.0.0.1:%d@127.0.0.1:%d/x", s.port, other.port);
  CHECK(!get(c, tricky, 0, 100, &st, &err));
  CHECK(err.code == EACCES && other.requests == 0);
  CHECK(!afs_http_probe_size(c, far, &size, &st, &err));
  CHECK(err.code == EACCES && other.requests == 0);
  afs_http_allow_reset();

  afs_http_conn_free(c);
  srv_stop(&s);
  srv_stop(&other);
}

/* ---- the reader on top ---- */

struct urls {
  int calls, with_fail;
  char url[256];
};

static bool get_url(void *ctx, const char *failed, char **url, int64_t *exp,
                    struct afs_error *err) {
  (void)err;
  struct urls *u = ctx;
  u->calls++;
  u->with_fail += failed != NULL;
  *url = strdup(u->url);
  *exp = 0;
  return true;
}

static void test_reader(void) {
  struct srv s;
  srv_start(&s, 1 << 20);
  struct afs_readcache_opts o;
  afs_readcache_opts_default(&o);
  o.budget_bytes = 8 << 20;
  o.whole_process = false;
  o.retries = 0;
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(&o, &err);
  CHECK(rc != NULL);
  struct urls u = {0};
  snprintf(u.url, sizeof u.url, "http://127.0.0.1:%d/bucket/obj?X-Amz-Signature=x", s.port);
  struct afs_reader_source src = {.key = "id1/original",
                                  .size = 1 << 20,
                                  .url = u.url,
                                  .label = "_id id1 (p/f.bin)",
                                  .get_url = get_url,
                                  .ctx = &u};
  struct afs_reader *r = afs_reader_open(rc, &src, &err);
  CHECK(r != NULL);
  static unsigned char buf[65536];

  /* a server that ignores Range: a read in the middle fails, never wrong bytes */
  srv_mode(&s, M_IGNORE_RANGE);
  CHECK(afs_reader_read(r, buf, 4096, 500000, &err) == -1);
  CHECK(err.code == EIO);
  CHECK(u.with_fail == 0);
  /* the same range read once the server behaves: right bytes (nothing wrong was cached) */
  srv_settle(&s);
  srv_mode(&s, M_GOOD);
  ssize_t n = afs_reader_read(r, buf, 4096, 500000, &err);
  CHECK(n == 4096);
  bool ok = true;
  for (int i = 0; i < 4096; i++)
    ok = ok && buf[i] == byte_at(500000 + i);
  CHECK(ok);
  afs_reader_close(r);

  /* a redirect: EACCES, and no "refresh the URL" */
  srv_settle(&s);
  srv_mode(&s, M_REDIRECT);
  snprintf(s.location, sizeof s.location, "http://127.0.0.1:1/elsewhere");
  src.key = "id2/original";
  r = afs_reader_open(rc, &src, &err);
  u.calls = u.with_fail = 0;
  CHECK(afs_reader_read(r, buf, 100, 0, &err) == -1);
  CHECK(err.code == EACCES && u.with_fail == 0);
  afs_reader_close(r);

  /* a URL on an origin that is not allowed: EACCES before any request */
  struct afs_origin allowed;
  CHECK(afs_origin_parse("http://127.0.0.1:1", &allowed, NULL));
  afs_http_allow_install(&allowed, 1, NULL, 0, NULL, NULL, 0);
  srv_settle(&s);
  srv_mode(&s, M_GOOD);
  src.key = "id3/original";
  r = afs_reader_open(rc, &src, &err);
  CHECK(afs_reader_read(r, buf, 100, 0, &err) == -1);
  CHECK(err.code == EACCES && u.with_fail == 0 && s.requests == 0);
  CHECK(afs_reader_read(r, buf, 100, 70000, &err) == -1);
  CHECK(err.code == EACCES && s.requests == 0);
  afs_reader_close(r);
  afs_http_allow_reset();

  afs_readcache_free(rc);
  srv_stop(&s);
}

int main(void) {
  test_get();
  test_reader();
  TEST_MAIN_END();
}
