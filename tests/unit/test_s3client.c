/* The broker's S3 client (s3.h).
 * Part 1, always: a scripted HTTP server on loopback (a mock) checks retries on 5xx,
 * none on 4xx, error codes, DeleteObjects batching with a correct Content-MD5, and that
 * an unreachable endpoint gives EHOSTUNREACH.
 * Part 2, with the stack's ASSETFS_S3_* variables (exit 77 without them): every
 * operation against the real S3 server (versitygw). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/s3.h"

/* ---------------- scripted server ---------------- */

struct fake {
  int fd, port;
  pthread_t th;
  pthread_mutex_t mu; /* protects everything below */
  int statuses[16];   /* answers in order; the last one repeats */
  int nstatuses;
  const char *body; /* body of every answer */
  int requests;
  int md5_mismatch; /* DeleteObjects bodies whose Content-MD5 did not match */
  int auth_missing;
  int keys_seen; /* <Key> elements across DeleteObjects bodies */
  char last_request_line[256];
};

static void *fake_main(void *ud) {
  struct fake *f = ud;
  for (;;) {
    int c = accept(f->fd, NULL, NULL);
    if (c < 0)
      return NULL;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    long clen = -1;
    char *hend = NULL;
    while (len < cap) {
      ssize_t r = read(c, buf + len, cap - len);
      if (r <= 0)
        break;
      len += (size_t)r;
      buf[len] = '\0';
      if (!hend && (hend = strstr(buf, "\r\n\r\n"))) {
        char *cl = strcasestr(buf, "\r\ncontent-length:");
        clen = cl && cl < hend ? strtol(cl + 17, NULL, 10) : 0;
      }
      if (hend && (long)(len - (size_t)(hend + 4 - buf)) >= clen)
        break;
    }
    buf[len] = '\0';
    pthread_mutex_lock(&f->mu);
    int idx = f->requests < f->nstatuses ? f->requests : f->nstatuses - 1;
    int status = f->statuses[idx];
    f->requests++;
    snprintf(f->last_request_line, sizeof f->last_request_line, "%.*s", (int)strcspn(buf, "\r\n"),
             buf);
    if (!strcasestr(buf, "\r\nauthorization: AWS4-HMAC-SHA256 Credential="))
      f->auth_missing++;
    char *md5 = strcasestr(buf, "\r\ncontent-md5: ");
    if (md5 && hend) {
      char want[25], got[25];
      snprintf(got, sizeof got, "%.24s", md5 + 15);
      afs_md5_base64(hend + 4, (size_t)clen, want);
      if (strcmp(want, got) != 0)
        f->md5_mismatch++;
      for (char *k = hend; (k = strstr(k, "<Key>")); k++)
        f->keys_seen++;
    }
    const char *body = f->body ? f->body : "";
    pthread_mutex_unlock(&f->mu);
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nETag: \"abc\"\r\n"
                      "Connection: close\r\n\r\n",
                      status, strlen(body));
    if (write(c, head, (size_t)hl) < 0 || write(c, body, strlen(body)) < 0) {
    }
    close(c);
    free(buf);
  }
}

static void fake_start(struct fake *f) {
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  f->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  CHECK(bind(f->fd, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(f->fd, 16) == 0);
  getsockname(f->fd, (struct sockaddr *)&a, &al);
  f->port = ntohs(a.sin_port);
  pthread_create(&f->th, NULL, fake_main, f);
}

static void fake_script(struct fake *f, const char *body, int n, ...) {
  va_list ap;
  va_start(ap, n);
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < n; i++)
    f->statuses[i] = va_arg(ap, int);
  f->nstatuses = n;
  f->body = body;
  f->requests = f->md5_mismatch = f->auth_missing = f->keys_seen = 0;
  pthread_mutex_unlock(&f->mu);
  va_end(ap);
}

static int fake_requests(struct fake *f) {
  pthread_mutex_lock(&f->mu);
  int n = f->requests;
  pthread_mutex_unlock(&f->mu);
  return n;
}

static void fake_stop(struct fake *f) {
  shutdown(f->fd, SHUT_RDWR);
  close(f->fd);
  pthread_join(f->th, NULL);
  pthread_mutex_destroy(&f->mu);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_fake(void) {
  struct fake f;
  fake_start(&f);
  char ep[64];
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", f.port);
  struct afs_s3_target t = {ep, "us-east-1", "bkt", "AK", "SK", true};
  struct afs_s3_client c;
  afs_s3_client_init(&c, &t);
  c.backoff_ms = 5;
  c.max_attempts = 4;
  struct afs_error err = {0};
  struct afs_s3_object_info info;

  /* 503, 500, then 200: two retries, success. */
  fake_script(&f, "", 3, 503, 500, 200);
  CHECK(afs_s3_head_object(&c, "a b", &info, &err));
  CHECK(info.exists && !strcmp(info.etag, "abc"));
  CHECK(fake_requests(&f) == 3);
  CHECK(strstr(f.last_request_line, "HEAD /bkt/a%20b HTTP/1.1") != NULL);
  CHECK(f.auth_missing == 0);

  /* 500 forever: max_attempts tries, then EAGAIN. */
  fake_script(&f, "<Error><Code>InternalError</Code><Message>boom</Message></Error>", 1, 500);
  CHECK(!afs_s3_delete_object(&c, "k", &err));
  CHECK(err.code == EAGAIN && strstr(err.msg, "InternalError") && afs_s3_error_transient(&err));
  CHECK(fake_requests(&f) == 4);

  /* 4xx: one try only. */
  fake_script(&f, "<Error><Code>AccessDenied</Code><Message>no</Message></Error>", 1, 403);
  CHECK(!afs_s3_delete_object(&c, "k", &err));
  CHECK(err.code == EACCES && !afs_s3_error_transient(&err));
  CHECK(fake_requests(&f) == 1);
  fake_script(&f, "", 1, 404);
  CHECK(afs_s3_head_object(&c, "k", &info, &err) && !info.exists);
  CHECK(fake_requests(&f) == 1);
  fake_script(&f, "<Error><Code>InvalidArgument</Code></Error>", 1, 400);
  CHECK(!afs_s3_head_object(&c, "k", &info, &err) && err.code == EIO);
  CHECK(fake_requests(&f) == 1);
  fake_script(&f, "<Error><Code>NoSuchBucket</Code></Error>", 1, 404);
  CHECK(!afs_s3_list_objects(&c, "p", 0, NULL, NULL, &err) && err.code == ENOENT);

  /* CompleteMultipartUpload's 200-with-<Error> is retried. */
  fake_script(&f, "<Error><Code>InternalError</Code></Error>", 1, 200);
  struct afs_s3_part parts[] = {{1, "\"e1\""}, {2, "e2"}};
  CHECK(!afs_s3_multipart_complete(&c, "k", "u", parts, 2, NULL, &err) && err.code == EAGAIN);
  CHECK(fake_requests(&f) == 4);
  struct afs_s3_part badparts[] = {{2, "e"}, {1, "e"}};
  CHECK(!afs_s3_multipart_complete(&c, "k", "u", badparts, 2, NULL, &err) && err.code == EINVAL);

  /* DeleteObjects: 2500 keys -> 3 requests of <= 1000, Content-MD5 right; a key XML
   * cannot carry goes alone as a DELETE. */
  enum { N = 2500 };
  static char names[N][32];
  const char *keys[N + 1];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "dir/<&'\"%d>", i);
    keys[i] = names[i];
  }
  keys[N] = "ctl\x01key";
  fake_script(&f, "<DeleteResult></DeleteResult>", 1, 200);
  size_t failed = 99;
  CHECK(afs_s3_delete_objects(&c, keys, N + 1, &failed, &err));
  CHECK(failed == 0);
  CHECK(fake_requests(&f) == 4);
  CHECK(f.keys_seen == N);
  CHECK(f.md5_mismatch == 0);
  CHECK(strstr(f.last_request_line, "POST /bkt?delete= HTTP/1.1") ||
        strstr(f.last_request_line, "DELETE /bkt/ctl%01key"));
  /* per-key errors are reported */
  fake_script(&f,
              "<DeleteResult><Error><Key>a&amp;b</Key><Code>AccessDenied</Code>"
              "<Message>x</Message></Error><Error><Key>c</Key><Code>NoSuchKey</Code></Error>"
              "</DeleteResult>",
              1, 200);
  const char *two[] = {"a&b", "c"};
  CHECK(!afs_s3_delete_objects(&c, two, 2, &failed, &err));
  CHECK(failed == 1 && err.code == EACCES && strstr(err.msg, "'a&b'"));

  /* ListObjectsV2 with continuation and url-encoded keys. */
  fake_script(&f,
              "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>false"
              "</IsTruncated><Contents><Key>a+b%2Bc%26</Key><Size>12</Size>"
              "<ETag>&quot;e1&quot;</ETag></Contents><Contents><Key>x</Key><Size>0</Size>"
              "</Contents></ListBucketResult>",
              1, 200);
  fake_stop(&f);
  afs_s3_thread_cleanup();

  /* Nothing listens: EHOSTUNREACH after every attempt, with backoff between them. */
  struct fake g;
  fake_start(&g);
  int port = g.port;
  fake_stop(&g); /* the port is now closed */
  snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
  c.target.endpoint = ep;
  c.max_attempts = 3;
  c.backoff_ms = 100;
  double t0 = now_s();
  CHECK(!afs_s3_head_object(&c, "k", &info, &err));
  double dt = now_s() - t0;
  CHECK(err.code == EHOSTUNREACH && afs_s3_error_transient(&err));
  CHECK(dt >= 0.1 && dt < 5); /* two delays: >= 50 + 100 ms */
  CHECK(!strstr(err.msg, "Signature") && !strstr(err.msg, "SK"));
}

/* ---------------- real server ---------------- */

static size_t discard(char *b, size_t s, size_t n, void *ud) {
  (void)b;
  (void)ud;
  return s * n;
}

static bool presigned_put(const struct afs_s3_target *t, const char *key, const char *data,
                          const char *ctype) {
  struct afs_error err = {0};
  struct afs_sigv4_header h = {"content-type", ctype};
  char *url = afs_sigv4_presign(t, "PUT", key, NULL, &h, 1, 60, time(NULL), &err);
  if (!url)
    return false;
  CURL *c = curl_easy_init();
  struct curl_slist *hl = NULL;
  char ct[300];
  snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
  hl = curl_slist_append(hl, ct);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  long status = 0;
  bool ok = curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200;
  curl_slist_free_all(hl);
  curl_easy_cleanup(c);
  free(url);
  return ok;
}

static bool upload_part(const struct afs_s3_target *t, const char *key, const char *uid, int n,
                        const char *data, size_t len, char etag[130]) {
  struct afs_error err = {0};
  struct afs_sigv4_param p[] = {{"partNumber", n == 1 ? "1" : "2"}, {"uploadId", uid}};
  char *url = afs_sigv4_presign_params(t, "PUT", key, p, 2, NULL, 0, 60, time(NULL), &err);
  if (!url)
    return false;
  CURL *c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  struct curl_slist *hl = curl_slist_append(NULL, "Content-Type:");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  long status = 0;
  bool ok = curl_easy_perform(c) == CURLE_OK &&
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status == 200;
  struct curl_header *h = NULL;
  if (ok && curl_easy_header(c, "ETag", 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
    snprintf(etag, 130, "%s", h->value);
  else
    ok = false;
  curl_slist_free_all(hl);
  curl_easy_cleanup(c);
  free(url);
  return ok;
}

struct collect {
  int n;
  char keys[64][128];
  int64_t total;
};

static bool on_listed(void *ud, const struct afs_s3_listed *o) {
  struct collect *c = ud;
  if (c->n < 64)
    snprintf(c->keys[c->n], sizeof c->keys[0], "%s", o->key);
  c->n++;
  c->total += o->size;
  return true;
}

static bool stop_after_one(void *ud, const struct afs_s3_listed *o) {
  (void)o;
  (*(int *)ud)++;
  return false;
}

struct thread_arg {
  const struct afs_s3_client *c;
  const char *key;
  int ok;
};

static void *head_loop(void *ud) {
  struct thread_arg *a = ud;
  for (int i = 0; i < 25; i++) {
    struct afs_s3_object_info info;
    struct afs_error err = {0};
    if (afs_s3_head_object(a->c, a->key, &info, &err) && info.exists)
      a->ok++;
  }
  afs_s3_thread_cleanup();
  return NULL;
}

/* One client shared by several threads, each with its own curl handle. */
static void test_threads(const struct afs_s3_client *c, const char *key) {
  enum { NT = 6 };
  pthread_t th[NT];
  struct thread_arg a[NT];
  for (int i = 0; i < NT; i++) {
    a[i] = (struct thread_arg){c, key, 0};
    pthread_create(&th[i], NULL, head_loop, &a[i]);
  }
  for (int i = 0; i < NT; i++) {
    pthread_join(th[i], NULL);
    CHECK(a[i].ok == 25);
  }
}

static void test_live(const struct afs_s3_target *t) {
  struct afs_s3_client c;
  afs_s3_client_init(&c, t);
  struct afs_error err = {0};
  char prefix[64];
  snprintf(prefix, sizeof prefix, "s3client/%d-%ld/", (int)getpid(), (long)time(NULL));
  const char *names[] = {"plain.txt",  "sp ace.jpg", "plus+.png",
                         "pct%25.bin", "amp&lt;.x",  "uni\xc3\xa9\xe6\x97\xa5.mov",
                         "q?h#.y",     "t~=.z",      "d/e/f.g",
                         "x'\"<>.w"};
  enum { NN = sizeof names / sizeof *names };
  char keys[NN][128];
  const char *kp[NN];
  for (int i = 0; i < NN; i++) {
    snprintf(keys[i], sizeof keys[i], "%s%s", prefix, names[i]);
    kp[i] = keys[i];
    CHECK(presigned_put(t, keys[i], names[i], "image/jpeg"));
  }

  struct afs_s3_object_info info;
  CHECK(afs_s3_head_object(&c, keys[5], &info, &err));
  CHECK(info.exists && info.size == (int64_t)strlen(names[5]));
  CHECK(strlen(info.etag) == 32 && info.etag[0] != '"');
  CHECK_STREQ(info.content_type, "image/jpeg");
  CHECK(info.last_modified > time(NULL) - 600);
  test_threads(&c, keys[5]);
  char missing[160];
  snprintf(missing, sizeof missing, "%snot-there", prefix);
  CHECK(afs_s3_head_object(&c, missing, &info, &err) && !info.exists);

  struct collect col = {0};
  CHECK(afs_s3_list_objects(&c, prefix, 3, on_listed, &col, &err)); /* 4 pages */
  CHECK(col.n == NN);
  for (int i = 0; i < NN; i++) {
    bool found = false;
    for (int j = 0; j < col.n && j < 64; j++)
      found |= !strcmp(col.keys[j], keys[i]);
    CHECK(found);
    if (!found)
      fprintf(stderr, "  not listed: %s\n", keys[i]);
  }
  int calls = 0;
  CHECK(afs_s3_list_objects(&c, prefix, 2, stop_after_one, &calls, &err) && calls == 1);

  CHECK(afs_s3_delete_object(&c, keys[0], &err));
  CHECK(afs_s3_delete_object(&c, keys[0], &err)); /* already gone: fine */
  CHECK(afs_s3_head_object(&c, keys[0], &info, &err) && !info.exists);
  size_t failed = 9;
  CHECK(afs_s3_delete_objects(&c, kp, NN, &failed, &err)); /* includes the missing one */
  if (failed)
    fprintf(stderr, "  %s\n", err.msg);
  CHECK(failed == 0);
  col.n = 0;
  CHECK(afs_s3_list_objects(&c, prefix, 0, on_listed, &col, &err) && col.n == 0);

  /* 1001 keys: two DeleteObjects requests (S3 refuses more than 1000 in one); three of
   * them exist, at both ends of the first batch and alone in the second. */
  enum { NB = 1001 };
  static char bk[NB][96];
  const char *bkp[NB];
  for (int i = 0; i < NB; i++) {
    snprintf(bk[i], sizeof bk[i], "%sbatch/%04d", prefix, i);
    bkp[i] = bk[i];
  }
  CHECK(presigned_put(t, bk[0], "a", "text/plain"));
  CHECK(presigned_put(t, bk[999], "b", "text/plain"));
  CHECK(presigned_put(t, bk[1000], "c", "text/plain"));
  CHECK(afs_s3_delete_objects(&c, bkp, NB, &failed, &err) && failed == 0);
  if (failed)
    fprintf(stderr, "  %s\n", err.msg);
  col.n = 0;
  CHECK(afs_s3_list_objects(&c, prefix, 0, on_listed, &col, &err) && col.n == 0);

  /* multipart: create, two parts through presigned UploadPart URLs, complete */
  char mkey[160], *uid = NULL;
  snprintf(mkey, sizeof mkey, "%smulti part+.bin", prefix);
  CHECK(afs_s3_multipart_create(&c, mkey, "video/mp4", &uid, &err));
  size_t big = 5 << 20;
  char *data = malloc(big);
  for (size_t i = 0; i < big; i++)
    data[i] = (char)(i * 7);
  char e1[130] = "", e2[130] = "", final[130] = "";
  CHECK(uid && upload_part(t, mkey, uid, 1, data, big, e1));
  CHECK(uid && upload_part(t, mkey, uid, 2, "tail", 4, e2));
  struct afs_s3_part parts[] = {{1, e1}, {2, e2}};
  CHECK(uid && afs_s3_multipart_complete(&c, mkey, uid, parts, 2, final, &err));
  if (err.code)
    fprintf(stderr, "  %s\n", err.msg);
  CHECK(strlen(final) > 0 && final[0] != '"');
  CHECK(afs_s3_head_object(&c, mkey, &info, &err) && info.size == (int64_t)big + 4);
  CHECK_STREQ(info.content_type, "video/mp4");
  free(uid);
  uid = NULL;
  /* abort: the upload goes away; aborting again is fine */
  CHECK(afs_s3_multipart_create(&c, mkey, NULL, &uid, &err));
  CHECK(uid && afs_s3_multipart_abort(&c, mkey, uid, &err));
  CHECK(uid && !upload_part(t, mkey, uid, 1, "x", 1, e1));
  CHECK(uid && afs_s3_multipart_abort(&c, mkey, uid, &err));
  free(uid);
  free(data);
  CHECK(afs_s3_delete_object(&c, mkey, &err));

  /* wrong secret: EACCES, no retries */
  struct afs_s3_target bad = *t;
  bad.secret_key = "wrong-secret";
  struct afs_s3_client cb;
  afs_s3_client_init(&cb, &bad);
  CHECK(!afs_s3_list_objects(&cb, prefix, 0, on_listed, &col, &err) && err.code == EACCES);
  CHECK(!strstr(err.msg, "wrong-secret") && !strstr(err.msg, "Signature="));
  /* a bucket that does not exist */
  struct afs_s3_target nob = *t;
  nob.bucket = "no-such-bucket-assetfs";
  afs_s3_client_init(&cb, &nob);
  CHECK(!afs_s3_list_objects(&cb, NULL, 0, on_listed, &col, &err) && err.code == ENOENT);
  afs_s3_thread_cleanup();
}

int main(void) {
  test_fake();
  const char *ep = getenv("ASSETFS_S3_ENDPOINT");
  if (!ep || !getenv("ASSETFS_S3_BUCKET") || !getenv("ASSETFS_S3_ACCESS_KEY")) {
    printf("ASSETFS_S3_* not set: live part skipped\n");
    if (afs_test_failures)
      TEST_MAIN_END();
    return 77;
  }
  struct afs_s3_target t = {ep,
                            getenv("ASSETFS_S3_REGION") ? getenv("ASSETFS_S3_REGION") : "us-east-1",
                            getenv("ASSETFS_S3_BUCKET"),
                            getenv("ASSETFS_S3_ACCESS_KEY"),
                            getenv("ASSETFS_S3_SECRET_KEY"),
                            true};
  test_live(&t);
  curl_global_cleanup();
  TEST_MAIN_END();
}
