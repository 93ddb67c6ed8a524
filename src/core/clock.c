/* The one clock (clock.h): monotonic and wall time, and monotonic timed waits. */
#include "assetfs/clock.h"

#include <time.h>

int64_t afs_monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t afs_monotonic_ms(void) {
  return afs_monotonic_ns() / 1000000;
}

int64_t afs_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void afs_cond_init(pthread_cond_t *cond) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cond, &a);
  pthread_condattr_destroy(&a);
}

void afs_cond_timedwait_ms(pthread_cond_t *cond, pthread_mutex_t *mu, long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_cond_timedwait(cond, mu, &ts);
}
