/* The pieces every loopback test server of the unit tests shares (header-only): a
 * listening socket on a free port, an accept loop that serves each connection on its
 * own detached thread, and a send that writes everything. The servers themselves
 * (afs_httpd.h, and the scripted ones in test_http_get.c and test_http_put.c) keep only
 * their protocol. */
#ifndef AFS_TESTSRV_H
#define AFS_TESTSRV_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* A socket listening on 127.0.0.1 at a free port (*port); -1 on failure. */
static inline int testsrv_listen(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 64) ||
      getsockname(fd, (struct sockaddr *)&sa, &sl)) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

/* Writes all n bytes (MSG_NOSIGNAL: a client that hung up is not a crash). */
static inline void testsrv_send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w <= 0)
      return;
    c += w;
    n -= (size_t)w;
  }
}

struct testsrv_conn {
  void *(*serve)(void *ctx, int fd);
  void *ctx;
  int fd;
};

static inline void *testsrv_conn_main(void *arg) {
  struct testsrv_conn c = *(struct testsrv_conn *)arg;
  free(arg);
  return c.serve(c.ctx, c.fd);
}

/* Accepts on lfd until accept fails (the listener was shut down), running serve(ctx, fd)
 * on a detached thread per connection; serve closes fd. */
static inline void testsrv_accept_each(int lfd, void *(*serve)(void *ctx, int fd), void *ctx) {
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
      return;
    struct testsrv_conn *c = malloc(sizeof *c);
    *c = (struct testsrv_conn){serve, ctx, fd};
    pthread_t t;
    pthread_create(&t, NULL, testsrv_conn_main, c);
    pthread_detach(t);
  }
}

#endif
