/* afs_http_put against a scripted loopback HTTP server: retries on 500, no retry on
 * 400, EKEYEXPIRED for an expired presigned URL, connection refused retried until the
 * attempt limit, the Content-Type header and body arrive intact, parallel parts; URLs
 * outside the allowed origins (file://, another port) are never sent and a redirect is
 * EACCES, not followed. */
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
#include "assetfs/http_put.h"

struct srv {
  int lfd, port;
  pthread_t th;
  pthread_mutex_t mu;
  int script[16]; /* statuses to answer, in order; then 200 */
  int n_script, next;
  const char *body403;
  int requests;
  long last_len;
  char last_ct[128];
};

static int next_status(struct srv *s) {
  pthread_mutex_lock(&s->mu);
  int st = s->next < s->n_script ? s->script[s->next] : 200;
  s->next++;
  s->requests++;
  pthread_mutex_unlock(&s->mu);
  return st;
}

static void *serve_conn(void *ctx, int fd) {
  struct srv *s = ctx;
  char buf[65536];
  size_t have = 0;
  for (;;) {
    char *eoh;
    while (!(eoh = memmem(buf, have, "\r\n\r\n", 4))) {
      ssize_t r = recv(fd, buf + have, sizeof buf - have, 0);
      if (r <= 0)
        goto out;
      have += (size_t)r;
    }
    *eoh = '\0';
    long len = 0;
    char ct[128] = "";
    for (char *line = strstr(buf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
      if (!strncasecmp(line + 2, "Content-Length:", 15))
        len = atol(line + 17);
      if (!strncasecmp(line + 2, "Content-Type:", 13))
        sscanf(line + 15, " %127[^\r]", ct);
    }
    size_t hdr = (size_t)(eoh + 4 - buf);
    long body = (long)(have - hdr);
    have = 0;
    while (body < len) {
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0)
        goto out;
      body += r;
    }
    int st = next_status(s);
    pthread_mutex_lock(&s->mu);
    s->last_len = len;
    snprintf(s->last_ct, sizeof s->last_ct, "%s", ct);
    pthread_mutex_unlock(&s->mu);
    const char *b = st == 403 ? s->body403 : "";
    char resp[1024];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n%s", st,
                     strlen(b), b);
    send(fd, resp, (size_t)n, MSG_NOSIGNAL);
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

static void srv_start(struct srv *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  s->lfd = testsrv_listen(&s->port);
  pthread_create(&s->th, NULL, serve, s);
}

static void srv_script(struct srv *s, int n, const int *st) {
  pthread_mutex_lock(&s->mu);
  if (n > 0)
    memcpy(s->script, st, n * sizeof *st);
  s->n_script = n;
  s->next = 0;
  s->requests = 0;
  pthread_mutex_unlock(&s->mu);
}

int main(void) {
  struct srv s;
  srv_start(&s);
  s.body403 = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
  char url[128], path[] = "/tmp/afs-test-put-XXXXXX";
  snprintf(url, sizeof url, "http://127.0.0.1:%d/bucket/key?X-Amz-Signature=abc", s.port);
  int fd = mkstemp(path);
  char data[100000];
  memset(data, 'z', sizeof data);
  CHECK(write(fd, data, sizeof data) == (ssize_t)sizeof data);
  close(fd);
  struct afs_put_opts o;
  afs_put_opts_default(&o);
  struct afs_put_job job = {
      .url = url, .path = path, .content_type = "image/jpeg", .what = "original"};

  /* plain success: body and Content-Type arrive */
  srv_script(&s, 0, NULL);
  CHECK(afs_http_put(&job, &o));
  CHECK(job.http_status == 200);
  CHECK(s.last_len == (long)sizeof data);
  CHECK_STREQ(s.last_ct, "image/jpeg");

  /* 5xx twice, then success: retried */
  int two500[] = {500, 503};
  srv_script(&s, 2, two500);
  CHECK(afs_http_put(&job, &o));
  CHECK(s.requests == 3);

  /* 400: never retried */
  int bad[] = {400};
  srv_script(&s, 1, bad);
  CHECK(!afs_http_put(&job, &o));
  CHECK(s.requests == 1 && job.http_status == 400 && job.err.code == EIO);

  /* expired presigned URL: EKEYEXPIRED, not retried */
  int expired[] = {403};
  srv_script(&s, 1, expired);
  CHECK(!afs_http_put(&job, &o));
  CHECK(s.requests == 1 && job.err.code == EKEYEXPIRED);

  /* always 500: gives up after max_attempts */
  int many[] = {500, 500, 500, 500, 500, 500, 500, 500};
  srv_script(&s, 8, many);
  o.max_attempts = 3;
  CHECK(!afs_http_put(&job, &o));
  CHECK(s.requests == 3 && job.err.code == EIO);
  afs_put_opts_default(&o);

  /* deadline stops retries early */
  srv_script(&s, 8, many);
  o.deadline_ms = afs_monotonic_ms() + 100;
  CHECK(!afs_http_put(&job, &o));
  CHECK(s.requests <= 2);
  afs_put_opts_default(&o);

  /* parallel parts; the expired one is reported first */
  srv_script(&s, 0, NULL);
  struct afs_put_job jobs[4];
  for (int i = 0; i < 4; i++)
    jobs[i] =
        (struct afs_put_job){.url = url, .path = path, .content_type = "image/png", .what = "part"};
  struct afs_error err = {0};
  CHECK(afs_http_put_all(jobs, 4, &o, &err));
  CHECK(s.requests == 4);

  /* connection refused: retried, then EIO */
  char dead[128];
  snprintf(dead, sizeof dead, "http://127.0.0.1:1/bucket/key");
  job.url = dead;
  o.max_attempts = 2;
  CHECK(!afs_http_put(&job, &o));
  CHECK(job.err.code == EIO && job.http_status == 0);

  /* a missing file is a clean error */
  job.url = url;
  job.path = "/nonexistent/afs-test";
  CHECK(!afs_http_put(&job, &o));
  CHECK(job.err.code == ENOENT);

  /* confinement: with the server's origin allowed, PUTs go; file:// and another port
   * are refused before any byte is sent (EACCES, final); a 302 is not followed */
  job.path = path;
  o.max_attempts = 3;
  struct afs_origin allowed;
  CHECK(afs_origin_parse(url, &allowed, NULL));
  afs_http_allow_install(&allowed, 1, NULL, 0, NULL, NULL, 0);
  srv_script(&s, 0, NULL);
  CHECK(afs_http_put(&job, &o));
  CHECK(s.requests == 1);
  char fileurl[] = "file:///tmp/afs-test-put-target";
  job.url = fileurl;
  srv_script(&s, 0, NULL);
  CHECK(!afs_http_put(&job, &o));
  CHECK(job.err.code == EACCES && job.http_status == 0);
  CHECK(access("/tmp/afs-test-put-target", F_OK) != 0);
  CHECK(strstr(job.err.msg, "not an http or https URL") != NULL);
  char other[128];
  snprintf(other, sizeof other, "http://127.0.0.1:%d/bucket/key?X-Amz-Signature=abc",
           s.port == 65535 ? 1 : s.port + 1);
  job.url = other;
  CHECK(!afs_http_put(&job, &o));
  CHECK(job.err.code == EACCES && job.http_status == 0);
  CHECK(strstr(job.err.msg, "refused") != NULL && !strstr(job.err.msg, "Signature"));
  CHECK(s.requests == 0);
  job.url = url;
  int redirect[] = {302, 302, 302};
  srv_script(&s, 3, redirect);
  CHECK(!afs_http_put(&job, &o));
  CHECK(job.err.code == EACCES && job.http_status == 302 && s.requests == 1);
  afs_http_allow_reset();

  unlink(path);
  shutdown(s.lfd, SHUT_RDWR);
  close(s.lfd);
  pthread_join(s.th, NULL);
  TEST_MAIN_END();
}
