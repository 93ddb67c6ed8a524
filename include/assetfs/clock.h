/* The one clock of both programs.
 *
 * Monotonic time for every deadline, interval, TTL and measurement; wall time (ms since
 * the epoch) only for what is stored in MongoDB, compared with records, or shown. Timed
 * waits go through afs_cond_timedwait_ms on a condition variable made by afs_cond_init,
 * which is bound to CLOCK_MONOTONIC: a wall-clock step (NTP, a suspended laptop) never
 * stretches or cuts a wait. Displayed times of day (log lines, file times) read the
 * wall clock where they format it. */
#ifndef ASSETFS_CLOCK_H
#define ASSETFS_CLOCK_H

#include <pthread.h>
#include <stdint.h>

/* Milliseconds / nanoseconds of CLOCK_MONOTONIC. */
int64_t afs_monotonic_ms(void);
int64_t afs_monotonic_ns(void);

/* Milliseconds since the epoch (wall clock, as stored in MongoDB dates). */
int64_t afs_now_ms(void);

/* Initializes a condition variable whose timed waits run on CLOCK_MONOTONIC. Every
 * condition variable waited on with afs_cond_timedwait_ms must be made by it. */
void afs_cond_init(pthread_cond_t *cond);

/* pthread_cond_timedwait for at most ms (mu held, as for pthread_cond_wait); spurious
 * wake-ups return early, as they do there. */
void afs_cond_timedwait_ms(pthread_cond_t *cond, pthread_mutex_t *mu, long ms);

#endif
