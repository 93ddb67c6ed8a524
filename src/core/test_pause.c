/* Test-only pauses (test_pause.h): the spec is read once, then looked up by name. */
#include "assetfs/test_pause.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/log.h"

/* point=ms pairs, read once; `set` guards the one reading. */
static struct {
  pthread_mutex_t mu;
  bool set;
  char spec[256];
} g_pause = {PTHREAD_MUTEX_INITIALIZER, false, ""};

void afs_test_pause_env(const char *var) {
  pthread_mutex_lock(&g_pause.mu);
  if (!g_pause.set) {
    const char *e = getenv(var);
    snprintf(g_pause.spec, sizeof g_pause.spec, "%s", e ? e : "");
    g_pause.set = true;
    if (*g_pause.spec)
      afs_warn("%s is set (%s): test-only pauses are active", var, g_pause.spec);
  }
  pthread_mutex_unlock(&g_pause.mu);
}

void afs_test_pause(const char *point, const char *what) {
  if (!g_pause.spec[0]) /* written once before any thread runs a pause point */
    return;
  size_t pl = strlen(point);
  for (const char *c = g_pause.spec; c && *c; c = strchr(c, ',') ? strchr(c, ',') + 1 : NULL) {
    if (strncmp(c, point, pl) || c[pl] != '=')
      continue;
    long ms = strtol(c + pl + 1, NULL, 10);
    afs_info("test pause: %s %s", point, what ? what : "");
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts) && errno == EINTR)
      ;
    return;
  }
}
