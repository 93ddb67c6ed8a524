/* The reader against a local HTTP server (afs_httpd.h): sequential and random reads
 * byte-exact, read-ahead in large GETs, the memory budget, 403 -> one refresh, expiring
 * URLs refreshed before use, 5xx retried then EIO, 404 -> ESTALE, server down -> EIO,
 * 16 concurrent readers. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "afs_httpd.h"
#include "afs_test.h"
#include "reader/reader.h"

static struct httpd H;

struct urlsrc {
  int tok;       /* token of the URL handed out next */
  int calls;     /* get_url calls */
  int with_fail; /* ... of which with a failed URL */
  long long size;
  pthread_mutex_t mu;
};

static bool get_url(void *ctx, const char *failed, char **url, int64_t *exp,
                    struct afs_error *err) {
  (void)err;
  struct urlsrc *u = ctx;
  char buf[256];
  pthread_mutex_lock(&u->mu);
  u->calls++;
  if (failed)
    u->with_fail++;
  httpd_url(&H, buf, sizeof buf, u->size, u->tok);
  pthread_mutex_unlock(&u->mu);
  *url = strdup(buf);
  *exp = 0;
  return true;
}

static bool check_bytes(const unsigned char *p, int64_t off, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != httpd_byte(off + (int64_t)i)) {
      fprintf(stderr, "byte %lld differs\n", (long long)(off + (int64_t)i));
      return false;
    }
  return true;
}

static struct afs_reader *open_src(struct afs_readcache *rc, const char *key, long long size,
                                   int tok, struct urlsrc *u, int64_t expires) {
  char url[256];
  httpd_url(&H, url, sizeof url, size, tok);
  struct afs_reader_source s = {.key = key,
                                .size = size,
                                .url = url,
                                .expires_ms = expires,
                                .refresh_margin_s = 1.0,
                                .get_url = u ? get_url : NULL,
                                .ctx = u};
  struct afs_error err = {0};
  struct afs_reader *r = afs_reader_open(rc, &s, &err);
  CHECK(r != NULL);
  return r;
}

/* By default the budget is the process's: the blocks get less than all of it. */
static void test_whole_process_budget(void) {
  struct afs_readcache_opts o;
  afs_readcache_opts_default(&o);
  CHECK(o.whole_process);
  o.budget_bytes = 256u << 20;
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(&o, &err);
  CHECK(rc != NULL);
  struct afs_readcache_stats st;
  afs_readcache_get_stats(rc, &st);
  printf("whole-process budget: %zu MiB of 256 MiB for blocks\n", st.cache_budget >> 20);
  CHECK(st.cache_budget >= 128u << 20 && st.cache_budget <= (256u << 20) - (16u << 20));
  afs_readcache_free(rc);
}

static void test_sequential(void) {
  struct afs_readcache_opts o;
  afs_readcache_opts_default(&o);
  o.budget_bytes = 16 << 20;
  o.whole_process = false; /* the blocks get all of it: the bound below is exact */
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(&o, &err);
  CHECK(rc != NULL);
  long long size = 40LL << 20 | 12345; /* not block aligned */
  struct afs_reader *r = open_src(rc, "seq", size, 1, NULL, 0);
  int req0 = H.requests;
  unsigned char *buf = malloc(128 << 10);
  bool ok = true;
  int64_t off = 0;
  for (;;) {
    ssize_t n = afs_reader_read(r, buf, 128 << 10, off, &err);
    if (n <= 0) {
      CHECK(n == 0);
      break;
    }
    ok = ok && check_bytes(buf, off, (size_t)n);
    off += n;
  }
  CHECK(ok);
  CHECK(off == size);
  int reqs = H.requests - req0;
  printf("sequential 40 MiB: %d GETs\n", reqs);
  CHECK(reqs < 40); /* large ranged GETs, not one per kernel read */
  struct afs_readcache_stats st;
  afs_readcache_get_stats(rc, &st);
  printf("peak cache %zu KiB (budget %zu KiB)\n", st.bytes_peak >> 10, o.budget_bytes >> 10);
  CHECK(st.bytes_peak <= o.budget_bytes + (2u << 20));
  CHECK(st.cache_budget == o.budget_bytes);
  /* Past the end, and a read straddling it. */
  CHECK(afs_reader_read(r, buf, 100, size, &err) == 0);
  CHECK(afs_reader_read(r, buf, 100, size - 10, &err) == 10);
  CHECK(check_bytes(buf, size - 10, 10));
  afs_reader_close(r);
  free(buf);
  afs_readcache_free(rc);
}

static void test_random(void) {
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(NULL, &err);
  long long size = 1LL << 30; /* nothing near this is ever fetched */
  struct afs_reader *r = open_src(rc, "rand", size, 1, NULL, 0);
  long long b0 = H.bytes;
  unsigned char buf[4096];
  bool ok = true;
  srand(42);
  for (int i = 0; i < 200; i++) {
    int64_t off = ((int64_t)rand() << 16 ^ rand()) % (size - 4096);
    ssize_t n = afs_reader_read(r, buf, sizeof buf, off, &err);
    ok = ok && n == 4096 && check_bytes(buf, off, 4096);
  }
  CHECK(ok);
  long long fetched = H.bytes - b0;
  printf("200 random 4 KiB reads fetched %lld KiB\n", fetched >> 10);
  CHECK(fetched <= 200LL * 2 * (256 << 10) + (2 << 20)); /* a block or two each */
  /* A seek back finds what is still cached. */
  b0 = H.bytes;
  CHECK(afs_reader_read(r, buf, 4096, 0, &err) == 4096);
  CHECK(afs_reader_read(r, buf, 4096, 1 << 20, &err) == 4096);
  CHECK(afs_reader_read(r, buf, 4096, 0, &err) == 4096);
  CHECK(check_bytes(buf, 0, 4096));
  afs_reader_close(r);
  afs_readcache_free(rc);
}

static void test_refresh_403(void) {
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(NULL, &err);
  struct urlsrc u = {.tok = 2, .size = 1 << 20};
  pthread_mutex_init(&u.mu, NULL);
  H.valid_tok = 2; /* the reader's URL (token 1) is refused */
  struct afs_reader *r = open_src(rc, "r403", 1 << 20, 1, &u, 0);
  unsigned char buf[8192];
  CHECK(afs_reader_read(r, buf, sizeof buf, 5000, &err) == (ssize_t)sizeof buf);
  CHECK(check_bytes(buf, 5000, sizeof buf));
  CHECK(u.with_fail == 1);
  afs_reader_close(r);

  /* The refreshed URL is refused too: one refresh, then EIO. */
  u.tok = 3;
  u.calls = u.with_fail = 0;
  r = open_src(rc, "r403b", 1 << 20, 1, &u, 0);
  afs_error_clear(&err);
  CHECK(afs_reader_read(r, buf, sizeof buf, 0, &err) == -1);
  CHECK(err.code == EIO);
  CHECK(u.with_fail == 1);
  afs_reader_close(r);

  /* An expiring URL is refreshed before it is used (no 403 at all). */
  u.tok = 2;
  u.calls = u.with_fail = 0;
  int req0 = H.requests;
  r = open_src(rc, "rexp", 1 << 20, 1, &u, (int64_t)time(NULL) * 1000 + 500);
  CHECK(afs_reader_read(r, buf, sizeof buf, 0, &err) == (ssize_t)sizeof buf);
  CHECK(u.calls == 1 && u.with_fail == 0);
  CHECK(H.requests - req0 <= 2);
  afs_reader_close(r);
  H.valid_tok = 1;
  afs_readcache_free(rc);
}

static void test_failures(void) {
  struct afs_readcache_opts o;
  afs_readcache_opts_default(&o);
  o.retries = 2;
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(&o, &err);
  unsigned char buf[4096];

  H.fail_500 = 2; /* two 500s, then success: retried */
  struct afs_reader *r = open_src(rc, "f500", 1 << 20, 1, NULL, 0);
  CHECK(afs_reader_read(r, buf, sizeof buf, 0, &err) == 4096);
  CHECK(check_bytes(buf, 0, 4096));
  afs_reader_close(r);

  H.fail_500 = 1000; /* S3 keeps failing: EIO after bounded retries */
  r = open_src(rc, "f500b", 1 << 20, 1, NULL, 0);
  time_t t0 = time(NULL);
  afs_error_clear(&err);
  CHECK(afs_reader_read(r, buf, sizeof buf, 0, &err) == -1);
  CHECK(err.code == EIO);
  CHECK(time(NULL) - t0 < 10);
  afs_reader_close(r);
  H.fail_500 = 0;

  H.gone = 1; /* deleted while open */
  r = open_src(rc, "gone", 1 << 20, 1, NULL, 0);
  afs_error_clear(&err);
  CHECK(afs_reader_read(r, buf, sizeof buf, 0, &err) == -1);
  CHECK(err.code == ESTALE);
  afs_reader_close(r);
  H.gone = 0;

  /* Nothing listens: EIO. */
  struct afs_reader_source s = {
      .key = "down", .size = 1 << 20, .url = "http://127.0.0.1:1/obj/1048576?tok=1"};
  r = afs_reader_open(rc, &s, &err);
  afs_error_clear(&err);
  CHECK(afs_reader_read(r, buf, sizeof buf, 0, &err) == -1);
  CHECK(err.code == EIO);
  printf("server down: %s\n", err.msg);
  afs_reader_close(r);
  afs_readcache_free(rc);
}

struct conc {
  struct afs_readcache *rc;
  int id;
  bool ok;
};

static void *conc_main(void *arg) {
  struct conc *c = arg;
  long long size = 8LL << 20;
  char url[256];
  httpd_url(&H, url, sizeof url, size, 1);
  /* Half share one asset, half read their own. */
  char key[32];
  snprintf(key, sizeof key, "c%d", c->id % 2 ? c->id : 0);
  struct afs_reader_source s = {.key = key, .size = size, .url = url};
  struct afs_error err = {0};
  struct afs_reader *r = afs_reader_open(c->rc, &s, &err);
  unsigned char *buf = malloc(65536);
  c->ok = r != NULL;
  for (int64_t off = 0; c->ok && off < size; off += 65536)
    c->ok = afs_reader_read(r, buf, 65536, off, &err) == 65536 && check_bytes(buf, off, 65536);
  afs_reader_close(r);
  free(buf);
  return NULL;
}

static void test_concurrent(void) {
  struct afs_readcache_opts o;
  afs_readcache_opts_default(&o);
  o.budget_bytes = 32 << 20;
  struct afs_error err = {0};
  struct afs_readcache *rc = afs_readcache_new(&o, &err);
  pthread_t th[16];
  struct conc c[16];
  for (int i = 0; i < 16; i++) {
    c[i] = (struct conc){rc, i, false};
    pthread_create(&th[i], NULL, conc_main, &c[i]);
  }
  bool all = true;
  for (int i = 0; i < 16; i++) {
    pthread_join(th[i], NULL);
    all = all && c[i].ok;
  }
  CHECK(all);
  struct afs_readcache_stats st;
  afs_readcache_get_stats(rc, &st);
  printf("16 readers: peak cache %zu KiB (budget %zu KiB)\n", st.bytes_peak >> 10,
         o.budget_bytes >> 10);
  CHECK(st.bytes_peak <= o.budget_bytes + (8u << 20));
  afs_readcache_free(rc);
}

int main(void) {
  CHECK(httpd_start(&H) == 0);
  test_whole_process_budget();
  test_sequential();
  test_random();
  test_refresh_403();
  test_failures();
  test_concurrent();
  httpd_stop(&H);
  TEST_MAIN_END();
}
