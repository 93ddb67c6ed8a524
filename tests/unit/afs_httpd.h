/* A tiny HTTP/1.1 server for C unit tests of the read path (header-only, loopback).
 *
 * Serves GET /obj/<size>?tok=<n> with Range support; the body byte at offset i is
 * httpd_byte(i). Faults are injected through the struct: requests whose token differs
 * from `valid_tok` get 403 (an expired or wrong presigned URL), `fail_500` next
 * requests get 500, `gone` makes every request 404. Keep-alive, one thread per
 * connection. Counters: requests, bytes sent, connections accepted.
 */
#ifndef AFS_HTTPD_H
#define AFS_HTTPD_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "afs_testsrv.h"

struct httpd {
  int lfd, port;
  pthread_t th;
  volatile int valid_tok;
  volatile int fail_500;
  volatile int gone;
  volatile int requests, conns;
  volatile long long bytes;
  volatile int stop;
  pthread_mutex_t mu;
};

static inline unsigned char httpd_byte(int64_t i) {
  return (unsigned char)((i * 7) ^ (i >> 8) ^ (i >> 17));
}

struct httpd_conn {
  struct httpd *h;
  int fd;
};

static void *httpd_conn_main(void *arg) {
  struct httpd_conn *c = arg;
  struct httpd *h = c->h;
  char req[8192];
  size_t have = 0;
  for (;;) {
    char *eoh = NULL;
    while (!(eoh = memmem(req, have, "\r\n\r\n", 4))) {
      if (have >= sizeof req - 1)
        goto out;
      ssize_t n = recv(c->fd, req + have, sizeof req - 1 - have, 0);
      if (n <= 0)
        goto out;
      have += (size_t)n;
    }
    size_t hlen = (size_t)(eoh - req) + 4;
    req[hlen - 1] = 0;
    long long size = 0;
    int tok = -1;
    sscanf(req, "GET /obj/%lld", &size);
    char *t = strstr(req, "tok=");
    if (t)
      tok = atoi(t + 4);
    long long a = 0, b = size - 1;
    bool ranged = false;
    char *r = strcasestr(req, "\r\nRange: bytes=");
    if (r) {
      ranged = true;
      sscanf(r + 15, "%lld-%lld", &a, &b);
      if (b > size - 1)
        b = size - 1;
    }
    memmove(req, req + hlen, have - hlen);
    have -= hlen;
    pthread_mutex_lock(&h->mu);
    h->requests++;
    int f500 = h->fail_500 > 0 ? h->fail_500-- : 0;
    pthread_mutex_unlock(&h->mu);
    char hdr[512];
    const char *err = NULL;
    int code = 0;
    if (h->gone) {
      code = 404;
      err = "<Error><Code>NoSuchKey</Code></Error>";
    } else if (tok != h->valid_tok) {
      code = 403;
      err = "<Error><Code>AccessDenied</Code></Error>";
    } else if (f500) {
      code = 500;
      err = "<Error><Code>InternalError</Code></Error>";
    } else if (ranged && (a >= size || a > b)) {
      code = 416;
      snprintf(hdr, sizeof hdr,
               "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%lld\r\n"
               "Content-Length: 0\r\n\r\n",
               size);
      testsrv_send_all(c->fd, hdr, strlen(hdr));
      continue;
    }
    if (err) {
      snprintf(hdr, sizeof hdr, "HTTP/1.1 %d Error\r\nContent-Length: %zu\r\n\r\n%s", code,
               strlen(err), err);
      testsrv_send_all(c->fd, hdr, strlen(hdr));
      continue;
    }
    long long len = b - a + 1;
    if (ranged)
      snprintf(hdr, sizeof hdr,
               "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %lld-%lld/%lld\r\n"
               "Content-Length: %lld\r\n\r\n",
               a, b, size, len);
    else
      snprintf(hdr, sizeof hdr, "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\n\r\n", len);
    testsrv_send_all(c->fd, hdr, strlen(hdr));
    char buf[65536];
    for (long long off = a; off <= b;) {
      size_t n = 0;
      for (; n < sizeof buf && off <= b; n++, off++)
        buf[n] = (char)httpd_byte(off);
      testsrv_send_all(c->fd, buf, n);
    }
    pthread_mutex_lock(&h->mu);
    h->bytes += len;
    pthread_mutex_unlock(&h->mu);
  }
out:
  close(c->fd);
  free(c);
  return NULL;
}

static void *httpd_main(void *arg) {
  struct httpd *h = arg;
  for (;;) {
    int fd = accept(h->lfd, NULL, NULL);
    if (fd < 0 || h->stop) {
      if (fd >= 0)
        close(fd);
      break;
    }
    struct httpd_conn *c = malloc(sizeof *c);
    c->h = h;
    c->fd = fd;
    h->conns++;
    pthread_t t;
    pthread_create(&t, NULL, httpd_conn_main, c);
    pthread_detach(t);
  }
  return NULL;
}

static inline int httpd_start(struct httpd *h) {
  memset(h, 0, sizeof *h);
  pthread_mutex_init(&h->mu, NULL);
  h->valid_tok = 1;
  if ((h->lfd = testsrv_listen(&h->port)) < 0)
    return -1;
  return pthread_create(&h->th, NULL, httpd_main, h);
}

static inline void httpd_stop(struct httpd *h) {
  h->stop = 1;
  shutdown(h->lfd, SHUT_RDWR);
  close(h->lfd);
  pthread_join(h->th, NULL);
}

static inline void httpd_url(const struct httpd *h, char *out, size_t n, long long size, int tok) {
  snprintf(out, n, "http://127.0.0.1:%d/obj/%lld?tok=%d", h->port, size, tok);
}

#endif
