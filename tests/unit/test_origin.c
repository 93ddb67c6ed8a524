/* URL origins (src/core/origin.c) and the allowed-origin list of src/http (allow.c):
 * what denotes the same server compares equal (case, default ports, IPv4/IPv6 forms,
 * trailing dot), what parsers read differently is refused (user info, percent-encoded
 * hosts, backslashes, ports with junk such as 127.0.0.1:9000.evil.com), log text never
 * shows a query or user info, and the list reloads on a miss, single-flight and spaced. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/http_allow.h"
#include "assetfs/origin.h"

static const char *norm(const char *url) {
  static char out[300];
  struct afs_origin o;
  struct afs_error err = {0};
  if (!afs_origin_parse(url, &o, &err))
    return NULL;
  afs_origin_format(&o, out, sizeof out);
  return out;
}

static bool same(const char *a, const char *b) {
  struct afs_origin x, y;
  return afs_origin_parse(a, &x, NULL) && afs_origin_parse(b, &y, NULL) && afs_origin_equal(&x, &y);
}

static void test_parse(void) {
  CHECK_STREQ(norm("http://127.0.0.1:9000/bucket/key?X-Amz-Signature=abc"),
              "http://127.0.0.1:9000");
  CHECK_STREQ(norm("HTTPS://S3.Example.COM/x"), "https://s3.example.com");
  CHECK_STREQ(norm("https://s3.example.com:443"), "https://s3.example.com");
  CHECK_STREQ(norm("http://h:80?q"), "http://h");
  CHECK_STREQ(norm("http://h:8080#f"), "http://h:8080");
  CHECK_STREQ(norm("http://h:08080/"), "http://h:8080");
  CHECK(same("http://host/a", "HTTP://HOST:80/b"));
  CHECK(same("https://host", "https://host:443/"));
  CHECK(!same("http://host", "https://host"));
  CHECK(!same("http://host:80", "http://host:8080"));
  CHECK(!same("http://host", "http://host2"));
  /* trailing dot: the same DNS name */
  CHECK(same("http://s3.example.com./k", "http://s3.example.com/k"));
  CHECK(norm("http://s3.example.com../k") == NULL);
  CHECK(norm("http://.example.com/k") == NULL);
  /* IPv6 literals, canonical */
  CHECK_STREQ(norm("http://[::1]:9000/k"), "http://[::1]:9000");
  CHECK(same("http://[0:0:0:0:0:0:0:1]:9000", "http://[::1]:9000"));
  CHECK(same("http://[FE80::ABCD]/", "http://[fe80::abcd]:80"));
  CHECK(norm("http://[::1/k") == NULL);
  CHECK(norm("http://[::1]x/k") == NULL);
  CHECK(norm("http://[fe80::1%25eth0]/k") == NULL);
  CHECK(norm("http://[not-v6]/k") == NULL);
  /* IPv4 in the forms resolvers accept: all the same address */
  CHECK(same("http://127.1:9000", "http://127.0.0.1:9000"));
  CHECK(same("http://2130706433:9000", "http://127.0.0.1:9000"));
  CHECK(same("http://0x7f000001:9000", "http://127.0.0.1:9000"));
  CHECK(norm("http://1.2.3.4.5/") == NULL);
  CHECK(norm("http://256.1.1.1/") == NULL);
  /* user info: refused (whose host is it?) */
  CHECK(norm("http://evil@127.0.0.1:9000/k") == NULL);
  CHECK(norm("http://127.0.0.1:9000@evil.com/k") == NULL);
  CHECK(norm("http://user:pw@host/k") == NULL);
  /* ports with junk */
  CHECK(norm("http://127.0.0.1:9000.evil.com/k") == NULL);
  CHECK(norm("http://127.0.0.1:/k") == NULL);
  CHECK(norm("http://127.0.0.1:0/k") == NULL);
  CHECK(norm("http://127.0.0.1:65536/k") == NULL);
  CHECK(norm("http://127.0.0.1:123456/k") == NULL);
  CHECK(norm("http://127.0.0.1:-1/k") == NULL);
  CHECK(norm("http://h:1:2/k") == NULL);
  /* percent-encoded, non-ASCII and odd characters in hosts */
  CHECK(norm("http://%31%32%37.0.0.1:9000/k") == NULL);
  CHECK(norm("http://ex%2Eample.com/") == NULL);
  CHECK(norm("http://exa\xc3\xa9mple.com/") == NULL);
  CHECK(norm("http://127.0.0.1:9000\\@evil.com/k") == NULL);
  CHECK(norm("http://127.0.0.1 :9000/k") == NULL);
  CHECK(norm("http://127.0.0.1:9000/k\r\nHost: evil") == NULL);
  CHECK(norm("http://exa*mple.com/") == NULL);
  CHECK_STREQ(norm("http://my_bucket.s3.local/k"), "http://my_bucket.s3.local");
  /* other schemes and shapes */
  CHECK(norm("file:///etc/passwd") == NULL);
  CHECK(norm("gopher://127.0.0.1:70/_x") == NULL);
  CHECK(norm("scp://host/x") == NULL);
  CHECK(norm("ftp://host/x") == NULL);
  CHECK(norm("httpx://host/x") == NULL);
  CHECK(norm("http:/host/x") == NULL);
  CHECK(norm("//host/x") == NULL);
  CHECK(norm("http:///x") == NULL);
  CHECK(norm("http://") == NULL);
  CHECK(norm("") == NULL);
  CHECK(norm(NULL) == NULL);
}

static void test_describe(void) {
  char out[300];
  afs_origin_describe("http://127.0.0.1:9000/k?X-Amz-Signature=secret", out, sizeof out);
  CHECK_STREQ(out, "http://127.0.0.1:9000");
  afs_origin_describe("file:///etc/passwd", out, sizeof out);
  CHECK_STREQ(out, "file://");
  afs_origin_describe("gopher://127.0.0.1:70/_GET%20x", out, sizeof out);
  CHECK_STREQ(out, "gopher://127.0.0.1:70");
  afs_origin_describe("http://user:password@evil.com/k?sig=1", out, sizeof out);
  CHECK_STREQ(out, "http://***@evil.com");
  CHECK(!strstr(out, "password"));
  afs_origin_describe("http://127.0.0.1:9000.evil.com/x?Signature=s", out, sizeof out);
  CHECK_STREQ(out, "http://127.0.0.1:9000.evil.com");
  afs_origin_describe("http://h\x01st/x", out, sizeof out);
  CHECK_STREQ(out, "http://h?st");
  afs_origin_describe("no scheme at all?q=1", out, sizeof out);
  CHECK(!strstr(out, "q=1"));
}

/* ---- the allowed list ---- */

static int g_reloads;
static const char *g_published; /* what the "broker" has published, NULL = nothing */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static bool fake_reload(void *ctx, struct afs_origin **out, size_t *n, struct afs_error *err) {
  (void)ctx;
  (void)err;
  pthread_mutex_lock(&g_mu);
  g_reloads++;
  const char *pub = g_published;
  pthread_mutex_unlock(&g_mu);
  *out = NULL;
  *n = 0;
  if (!pub)
    return true;
  *out = malloc(sizeof **out);
  CHECK(afs_origin_parse(pub, *out, NULL));
  *n = 1;
  return true;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *check_thread(void *arg) {
  struct afs_error err = {0};
  *(bool *)arg = afs_http_allow_check("http://10.0.0.9:9/k", &err);
  return NULL;
}

static void test_allow(void) {
  struct afs_error err = {0};
  /* not installed: any well-formed http(s) URL, nothing else */
  afs_http_allow_reset();
  CHECK(afs_http_allow_check("http://10.1.2.3:4/x", &err));
  CHECK(!afs_http_allow_check("file:///etc/passwd", &err) && err.code == EACCES);
  CHECK(!afs_http_allow_check("http://a@b/x", &err) && err.code == EACCES);

  /* installed: fixed list plus the published one */
  struct afs_origin fixed;
  CHECK(afs_origin_parse("http://cdn.example.com", &fixed, NULL));
  afs_http_allow_install(&fixed, 1, NULL, 0, fake_reload, NULL, 200);
  g_reloads = 0;
  g_published = NULL;
  CHECK(afs_http_allow_check("http://CDN.example.com:80/a?b", &err));
  CHECK(g_reloads == 0);
  afs_error_clear(&err);
  CHECK(!afs_http_allow_check("http://127.0.0.1:9000/k?X-Amz-Signature=s", &err));
  CHECK(err.code == EACCES && strstr(err.msg, "http://127.0.0.1:9000") &&
        !strstr(err.msg, "Signature") && strstr(err.msg, "http://cdn.example.com"));
  CHECK(g_reloads == 1);
  /* the broker publishes after the mount (here: after a record named its origin): the
   * origin is refused at once until min_reload_ms have passed, then let through */
  pthread_mutex_lock(&g_mu);
  g_published = "http://127.0.0.1:9000";
  pthread_mutex_unlock(&g_mu);
  double t0 = now_s();
  CHECK(!afs_http_allow_check("http://127.0.0.1:9000/k", &err));
  CHECK(g_reloads == 1 && now_s() - t0 < 0.1);
  usleep(250 * 1000);
  CHECK(afs_http_allow_check("http://127.0.0.1:9000/k", &err));
  CHECK(g_reloads == 2);
  CHECK(afs_http_allow_check("http://127.0.0.1:9000/other", &err));
  CHECK(g_reloads == 2);
  /* a new origin right after a reload waits for the next one (min_reload_ms apart) */
  pthread_mutex_lock(&g_mu);
  g_published = "http://127.0.0.1:9001";
  pthread_mutex_unlock(&g_mu);
  t0 = now_s();
  CHECK(afs_http_allow_check("http://127.0.0.1:9001/k", &err));
  double waited = now_s() - t0;
  CHECK(g_reloads == 3 && waited >= 0.1 && waited < 2);
  CHECK(!afs_http_allow_check("http://127.0.0.1:9000/k", &err)); /* replaced, not added */
  usleep(250 * 1000);
  pthread_mutex_lock(&g_mu);
  g_published = "http://127.0.0.1:9000";
  pthread_mutex_unlock(&g_mu);
  CHECK(afs_http_allow_check("http://127.0.0.1:9000/k", &err));
  int base = g_reloads;
  /* a refused scheme never asks for a reload */
  CHECK(!afs_http_allow_check("gopher://127.0.0.1:9000/x", &err));
  CHECK(g_reloads == base);
  /* 8 readers of one hostile origin at once: one reload between them */
  pthread_t th[8];
  bool res[8];
  for (int i = 0; i < 8; i++)
    pthread_create(&th[i], NULL, check_thread, &res[i]);
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    CHECK(!res[i]);
  }
  printf("reloads for 8 concurrent misses: %d\n", g_reloads - base);
  CHECK(g_reloads - base >= 1 && g_reloads - base <= 2);
  /* ... and once refused after a reload, the same origin is refused at once (no pause)
   * until min_reload_ms have passed; then it gets one more reload */
  int before = g_reloads;
  t0 = now_s();
  for (int i = 0; i < 20; i++)
    CHECK(!afs_http_allow_check("http://10.0.0.9:9/other", &err));
  CHECK(g_reloads == before && now_s() - t0 < 0.1);
  usleep(250 * 1000);
  t0 = now_s();
  CHECK(!afs_http_allow_check("http://10.0.0.9:9/other", &err));
  CHECK(g_reloads == before + 1 && now_s() - t0 < 0.1);
  unsigned long reloads = 0, refused = 0;
  afs_http_allow_stats(&reloads, &refused);
  CHECK(refused >= 10);
  /* what the check costs a GET (parse + list lookup; no network) */
  t0 = now_s();
  for (int i = 0; i < 100000; i++)
    afs_http_allow_check("http://127.0.0.1:9000/bucket/user/some/key-123.jpg?X-Amz-Algorithm=A"
                         "WS4-HMAC-SHA256&X-Amz-Credential=k&X-Amz-Signature=0123456789abcdef",
                         &err);
  printf("allowed-origin check: %.2f us per URL\n", (now_s() - t0) * 10);
  /* no reload source (url_hosts_only): only the fixed list */
  afs_http_allow_install(&fixed, 1, NULL, 0, NULL, NULL, 0);
  CHECK(!afs_http_allow_check("http://127.0.0.1:9000/k", &err));
  /* nothing known at all: everything refused */
  afs_http_allow_install(NULL, 0, NULL, 0, NULL, NULL, 0);
  CHECK(!afs_http_allow_check("http://cdn.example.com/k", &err));
  CHECK(strstr(err.msg, "none known") != NULL);
  afs_http_allow_reset();
}

int main(void) {
  test_parse();
  test_describe();
  test_allow();
  TEST_MAIN_END();
}
