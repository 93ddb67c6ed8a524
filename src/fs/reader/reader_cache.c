/* The shared block cache behind the readers (see reader.h): one hash table of blocks
 * keyed by (source, index), the LRU list and the budget (with a free list of block
 * buffers), the job queue, and the worker threads that fetch block runs with ranged
 * GETs. The per-file side (access pattern, read-ahead plan, URL renewal, reads) is in
 * reader.c; the structures both share are in reader_int.h.
 *
 * A block is FETCHING until the worker that owns its job has written all its bytes (then
 * READY, and on the LRU list), or ERROR (then out of the table; freed when the last
 * reader waiting on it lets go). Readers pin the blocks they copy from; only READY,
 * unpinned blocks are evicted.
 *
 * Locking: see reader_int.h.
 */
#include "reader/reader.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/hash.h"
#include "assetfs/http_get.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "reader/reader_int.h"

#define FREELIST_MAX 16

void afs_readcache_opts_default(struct afs_readcache_opts *o) {
  memset(o, 0, sizeof *o);
  o->budget_bytes = 256u << 20;
  /* A random 4 KiB read fetches one block: 64 KiB took 2.1 ms where 256 KiB took 6 ms
   * (bench workload 5, same load); sequential reads fetch chunk_size ranges anyway. */
  o->block_size = 64u << 10;
  o->chunk_size = 8u << 20;
  o->max_window = 64u << 20;
  o->workers = 8;
  o->retries = 3;
  o->connect_timeout_s = 5;
  o->stall_timeout_s = 15;
  o->whole_process = true;
}

/* Resident bytes of this process now, 0 if unknown. */
static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, resident = 0;
  if (!f)
    return 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2)
    resident = 0;
  fclose(f);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Outside the blocks, while reading at full speed: each fetch worker's curl buffers
 * and stack, the FUSE threads' request buffers (1 MiB each with max_write = 1 MiB),
 * malloc's per-thread arenas. Measured: 8 parallel 1 GiB readers took the process
 * about 40 MiB above its blocks with 8 workers. */
#define PER_WORKER_ALLOWANCE (512u << 10)
#define THREADS_ALLOWANCE (16u << 20)

/* ---- buffers, table, LRU (mu held) ---- */

static char *buf_get(struct afs_readcache *rc) {
  if (rc->nfree)
    return rc->freelist[--rc->nfree];
  void *p =
      mmap(NULL, rc->o.block_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  rc->bytes += rc->o.block_size;
  if (rc->bytes > rc->st.bytes_peak)
    rc->st.bytes_peak = rc->bytes;
  return p;
}

static void buf_put(struct afs_readcache *rc, char *p) {
  if (rc->nfree < FREELIST_MAX && rc->bytes <= rc->o.budget_bytes) {
    rc->freelist[rc->nfree++] = p;
    return;
  }
  munmap(p, rc->o.block_size);
  rc->bytes -= rc->o.block_size;
}

/* The block table stays its own: keyed by (source pointer, block index), chained through
 * the blocks (b->hnext, removal by identity), sized once from the budget. Its bucket is
 * the one hash of the key's bytes, low bits as core's string map takes them. */
static size_t hslot(const struct afs_readcache *rc, const struct src *s, int64_t idx) {
  uintptr_t sp = (uintptr_t)s;
  uint64_t h = afs_hash_fnv1a64_add(afs_hash_fnv1a64(&sp, sizeof sp), &idx, sizeof idx);
  return (size_t)h & (rc->nht - 1);
}

struct blk *afs_rc_hget(struct afs_readcache *rc, struct src *s, int64_t idx) {
  for (struct blk *b = rc->ht[hslot(rc, s, idx)]; b; b = b->hnext)
    if (b->src == s && b->idx == idx)
      return b;
  return NULL;
}

static void hdel(struct afs_readcache *rc, struct blk *b) {
  if (!b->in_hash)
    return;
  struct blk **pp = &rc->ht[hslot(rc, b->src, b->idx)];
  for (; *pp; pp = &(*pp)->hnext)
    if (*pp == b) {
      *pp = b->hnext;
      break;
    }
  b->in_hash = false;
}

static void lru_unlink(struct afs_readcache *rc, struct blk *b) {
  if (!b->in_lru)
    return;
  if (b->prev)
    b->prev->next = b->next;
  else
    rc->lru_head = b->next;
  if (b->next)
    b->next->prev = b->prev;
  else
    rc->lru_tail = b->prev;
  b->prev = b->next = NULL;
  b->in_lru = false;
}

void afs_rc_lru_front(struct afs_readcache *rc, struct blk *b) {
  lru_unlink(rc, b);
  b->next = rc->lru_head;
  if (rc->lru_head)
    rc->lru_head->prev = b;
  rc->lru_head = b;
  if (!rc->lru_tail)
    rc->lru_tail = b;
  b->in_lru = true;
}

/* Makes b the first to be evicted (a sequential reader has passed it). */
void afs_rc_lru_back(struct afs_readcache *rc, struct blk *b) {
  lru_unlink(rc, b);
  b->prev = rc->lru_tail;
  if (rc->lru_tail)
    rc->lru_tail->next = b;
  rc->lru_tail = b;
  if (!rc->lru_head)
    rc->lru_head = b;
  b->in_lru = true;
}

void afs_rc_src_unref(struct afs_readcache *rc, struct src *s) {
  if (--s->refs > 0)
    return;
  for (struct src **pp = &rc->srcs; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  free(s->key);
  free(s);
}

void afs_rc_blk_free(struct afs_readcache *rc, struct blk *b) {
  hdel(rc, b);
  lru_unlink(rc, b);
  if (b->data)
    buf_put(rc, b->data);
  afs_rc_src_unref(rc, b->src);
  free(b->err_msg);
  free(b->failed_url);
  free(b);
}

/* A buffer for a new block within the budget: a spare one, a new one while the budget
 * allows, else the one of the least recently used READY unpinned block (evicted). Reusing
 * buffers matters: a fresh mapping costs a page fault and a page clear per 4 KiB, and
 * unmapping one a TLB shootdown, which at full speed was about a sixth of the CPU time.
 * force: a new buffer even over budget (a read that must be served). NULL when the
 * budget is full (read-ahead just stops) or mmap failed. */
static char *buf_for_block(struct afs_readcache *rc, bool force) {
  if (rc->nfree)
    return rc->freelist[--rc->nfree];
  if (rc->bytes + rc->o.block_size > rc->o.budget_bytes) {
    struct blk *b = rc->lru_tail;
    while (b && b->pins > 0)
      b = b->prev;
    if (b) {
      char *data = b->data;
      b->data = NULL;
      afs_rc_blk_free(rc, b);
      return data;
    }
    if (!force)
      return NULL;
  }
  return buf_get(rc);
}

/* A new FETCHING block in the table. force: allocate even over budget (a read that must
 * be served); otherwise NULL when the budget is full (read-ahead just stops). */
static struct blk *blk_new(struct afs_readcache *rc, struct src *s, int64_t idx, bool force) {
  struct blk *b = calloc(1, sizeof *b);
  if (!b)
    return NULL;
  b->data = buf_for_block(rc, force);
  if (!b->data) {
    free(b);
    return NULL;
  }
  b->src = s;
  s->refs++;
  b->idx = idx;
  int64_t start = idx * (int64_t)rc->o.block_size;
  int64_t left = s->size - start;
  b->len = left < (int64_t)rc->o.block_size ? (size_t)left : rc->o.block_size;
  b->state = B_FETCHING;
  size_t k = hslot(rc, s, idx);
  b->hnext = rc->ht[k];
  rc->ht[k] = b;
  b->in_hash = true;
  return b;
}

static void job_push(struct afs_readcache *rc, struct job *j, bool front) {
  if (front) {
    j->next = rc->q_head;
    rc->q_head = j;
    if (!rc->q_tail)
      rc->q_tail = j;
  } else {
    j->next = NULL;
    if (rc->q_tail)
      rc->q_tail->next = j;
    else
      rc->q_head = j;
    rc->q_tail = j;
  }
  rc->st.requests++;
  pthread_cond_signal(&rc->job_cv);
}

/* Queues fetches for the missing blocks in [first, last], in runs of at most max_blocks.
 * Returns false when the budget stopped it early (only without force). */
bool afs_rc_fetch_range(struct afs_readcache *rc, struct afs_reader *r, int64_t first, int64_t last,
                        size_t max_blocks, bool demand) {
  int64_t i = first;
  while (i <= last) {
    if (afs_rc_hget(rc, r->src, i)) {
      i++;
      continue;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j)
      return false;
    j->blks = calloc(max_blocks, sizeof *j->blks);
    if (!j->blks) {
      free(j);
      return false;
    }
    j->first = i;
    bool full = false;
    while (i <= last && j->n < max_blocks && !afs_rc_hget(rc, r->src, i)) {
      struct blk *b = blk_new(rc, r->src, i, demand);
      if (!b) {
        full = true;
        break;
      }
      b->in_job = true;
      j->blks[j->n++] = b;
      i++;
    }
    if (j->n == 0) {
      free(j->blks);
      free(j);
      return false;
    }
    j->src = r->src;
    r->src->refs++;
    j->url = afs_xstrdup(r->url);
    job_push(rc, j, demand);
    if (full)
      return false;
  }
  return true;
}

/* ---- workers ---- */

struct sink_ctx {
  struct afs_readcache *rc;
  struct job *j;
  size_t pos; /* bytes of the job written so far */
};

static void blk_ready(struct afs_readcache *rc, struct blk *b) {
  pthread_mutex_lock(&rc->mu);
  b->state = B_READY;
  pthread_cond_broadcast(&rc->blk_cv);
  pthread_mutex_unlock(&rc->mu);
}

static bool sink(void *ctx, const void *data, size_t len) {
  struct sink_ctx *sc = ctx;
  size_t bs = sc->rc->o.block_size;
  const char *p = data;
  while (len > 0) {
    size_t k = sc->pos / bs, off = sc->pos % bs;
    if (k >= sc->j->n)
      return true; /* more than asked for: ignore */
    struct blk *b = sc->j->blks[k];
    size_t n = b->len - off < len ? b->len - off : len;
    memcpy(b->data + off, p, n);
    b->filled = off + n;
    sc->pos += n;
    p += n;
    len -= n;
    if (b->filled == b->len)
      blk_ready(sc->rc, b);
  }
  return !__atomic_load_n(&sc->rc->stop, __ATOMIC_RELAXED);
}

/* status: of the last answer; only a 403's URL is worth renewing. */
static void job_finish(struct afs_readcache *rc, struct job *j, bool ok,
                       const struct afs_error *err, long status, uint64_t bytes) {
  pthread_mutex_lock(&rc->mu);
  rc->st.bytes_fetched += bytes;
  for (size_t k = 0; k < j->n; k++) {
    struct blk *b = j->blks[k];
    b->in_job = false;
    if (b->state != B_FETCHING) {
      if (b->in_hash && b->pins == 0)
        afs_rc_lru_front(rc, b);
      continue;
    }
    b->state = B_ERROR;
    b->err_code = ok ? EIO : err->code;
    b->err_msg = afs_xstrdup(ok ? "S3 object is shorter than the asset's recorded size" : err->msg);
    if (b->err_code == AFS_E_URL_REFUSED && status == 403)
      b->failed_url = afs_xstrdup(j->url);
    hdel(rc, b);
    if (b->pins == 0)
      afs_rc_blk_free(rc, b);
  }
  pthread_cond_broadcast(&rc->blk_cv);
  afs_rc_src_unref(rc, j->src);
  pthread_mutex_unlock(&rc->mu);
  free(j->url);
  free(j->blks);
  free(j);
}

static void *worker(void *arg) {
  struct afs_readcache *rc = arg;
  struct afs_http_conn *conn = afs_http_conn_new(rc->o.connect_timeout_s, rc->o.stall_timeout_s);
  for (;;) {
    pthread_mutex_lock(&rc->mu);
    while (!rc->stop && !rc->q_head)
      pthread_cond_wait(&rc->job_cv, &rc->mu);
    if (rc->stop && !rc->q_head) {
      pthread_mutex_unlock(&rc->mu);
      break;
    }
    struct job *j = rc->q_head;
    rc->q_head = j->next;
    if (!rc->q_head)
      rc->q_tail = NULL;
    pthread_mutex_unlock(&rc->mu);

    size_t bs = rc->o.block_size;
    int64_t start = j->first * (int64_t)bs;
    int64_t total = 0;
    for (size_t k = 0; k < j->n; k++)
      total += j->blks[k]->len;
    struct sink_ctx sc = {rc, j, 0};
    struct afs_error err = {0};
    bool ok = false;
    long status = 0;
    for (int attempt = 0; conn && !__atomic_load_n(&rc->stop, __ATOMIC_RELAXED); attempt++) {
      afs_error_clear(&err);
      ok = afs_http_get_range(conn, j->url, start + (int64_t)sc.pos, total - (int64_t)sc.pos, sink,
                              &sc, &status, NULL, &err);
      if (ok && (int64_t)sc.pos < total) {
        /* S3 sent less than asked: the object is shorter than recorded. */
        break;
      }
      if (ok || err.code != AFS_E_TRANSIENT || attempt >= rc->o.retries)
        break;
      /* Resume where the transfer stopped, after a growing pause. */
      useconds_t pause = (useconds_t)(200000u << (attempt < 4 ? attempt : 4));
      afs_warn("read of %s failed (%s); retry %d of %d in %u ms", j->src->key, err.msg, attempt + 1,
               rc->o.retries, pause / 1000);
      usleep(pause);
    }
    if (!conn)
      afs_error_set(&err, ENOMEM, "cannot create a curl handle");
    else if (rc->stop && !ok)
      afs_error_set(&err, EIO, "read cache is shutting down");
    job_finish(rc, j, ok, &err, status, sc.pos);
  }
  afs_http_conn_free(conn);
  return NULL;
}

/* ---- cache lifetime ---- */

struct afs_readcache *afs_readcache_new(const struct afs_readcache_opts *o, struct afs_error *err) {
  struct afs_readcache *rc = calloc(1, sizeof *rc);
  if (!rc) {
    afs_error_set(err, ENOMEM, "out of memory");
    return NULL;
  }
  afs_readcache_opts_default(&rc->o);
  if (o) {
    if (o->block_size >= 4096)
      rc->o.block_size = o->block_size;
    if (o->budget_bytes)
      rc->o.budget_bytes = o->budget_bytes;
    if (o->chunk_size)
      rc->o.chunk_size = o->chunk_size;
    if (o->max_window)
      rc->o.max_window = o->max_window;
    if (o->workers > 0)
      rc->o.workers = o->workers;
    if (o->retries >= 0)
      rc->o.retries = o->retries;
    if (o->connect_timeout_s > 0)
      rc->o.connect_timeout_s = o->connect_timeout_s;
    if (o->stall_timeout_s > 0)
      rc->o.stall_timeout_s = o->stall_timeout_s;
    rc->o.whole_process = o->whole_process;
  }
  if (rc->o.whole_process) {
    size_t configured = rc->o.budget_bytes, used = rss_bytes();
    size_t reserve = used + THREADS_ALLOWANCE + (size_t)rc->o.workers * PER_WORKER_ALLOWANCE;
    rc->o.budget_bytes = reserve < configured / 2 ? configured - reserve : configured / 2;
    afs_info("read cache: %zu MiB for blocks of the %zu MiB budget (the process holds %zu "
             "MiB; %zu MiB kept for threads and transfers)",
             rc->o.budget_bytes >> 20, configured >> 20, used >> 20, (reserve - used) >> 20);
  }
  size_t bs = rc->o.block_size;
  rc->o.block_size = (bs + 4095) & ~(size_t)4095;
  if (rc->o.budget_bytes < 4 * rc->o.block_size)
    rc->o.budget_bytes = 4 * rc->o.block_size;
  if (rc->o.chunk_size < rc->o.block_size)
    rc->o.chunk_size = rc->o.block_size;
  afs_http_global_init();
  rc->nht = 1024;
  while (rc->nht < 2 * rc->o.budget_bytes / rc->o.block_size)
    rc->nht *= 2;
  rc->ht = calloc(rc->nht, sizeof *rc->ht);
  rc->freelist = calloc(FREELIST_MAX, sizeof *rc->freelist);
  rc->th = calloc(rc->o.workers, sizeof *rc->th);
  if (!rc->ht || !rc->freelist || !rc->th) {
    free(rc->ht);
    free(rc->freelist);
    free(rc->th);
    free(rc);
    afs_error_set(err, ENOMEM, "out of memory");
    return NULL;
  }
  pthread_mutex_init(&rc->mu, NULL);
  pthread_cond_init(&rc->job_cv, NULL);
  pthread_cond_init(&rc->blk_cv, NULL);
  for (int i = 0; i < rc->o.workers; i++) {
    if (pthread_create(&rc->th[i], NULL, worker, rc) != 0)
      break;
    rc->nth++;
  }
  if (rc->nth == 0) {
    afs_readcache_free(rc);
    afs_error_set(err, EAGAIN, "cannot start read workers");
    return NULL;
  }
  return rc;
}

void afs_readcache_free(struct afs_readcache *rc) {
  if (!rc)
    return;
  pthread_mutex_lock(&rc->mu);
  rc->stop = true;
  pthread_cond_broadcast(&rc->job_cv);
  pthread_mutex_unlock(&rc->mu);
  for (int i = 0; i < rc->nth; i++)
    pthread_join(rc->th[i], NULL);
  /* Jobs still queued after the workers left. */
  struct afs_error err;
  afs_error_set(&err, EIO, "read cache is shutting down");
  while (rc->q_head) {
    struct job *j = rc->q_head;
    rc->q_head = j->next;
    job_finish(rc, j, false, &err, 0, 0);
  }
  for (size_t i = 0; i < rc->nht; i++)
    while (rc->ht[i])
      afs_rc_blk_free(rc, rc->ht[i]);
  while (rc->nfree)
    munmap(rc->freelist[--rc->nfree], rc->o.block_size);
  pthread_mutex_destroy(&rc->mu);
  pthread_cond_destroy(&rc->job_cv);
  pthread_cond_destroy(&rc->blk_cv);
  free(rc->ht);
  free(rc->freelist);
  free(rc->th);
  free(rc);
}

void afs_readcache_get_stats(struct afs_readcache *rc, struct afs_readcache_stats *out) {
  pthread_mutex_lock(&rc->mu);
  *out = rc->st;
  out->bytes_cached = rc->bytes;
  out->cache_budget = rc->o.budget_bytes;
  pthread_mutex_unlock(&rc->mu);
}

void afs_readcache_forget(struct afs_readcache *rc, const char *key) {
  pthread_mutex_lock(&rc->mu);
  for (size_t i = 0; i < rc->nht; i++) {
    struct blk *b = rc->ht[i], *next;
    for (; b; b = next) {
      next = b->hnext;
      if (!strcmp(b->src->key, key) && b->state == B_READY && b->pins == 0)
        afs_rc_blk_free(rc, b);
    }
  }
  pthread_mutex_unlock(&rc->mu);
}
