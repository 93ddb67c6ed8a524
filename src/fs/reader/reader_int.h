/* Internals shared by reader_cache.c (the block cache, LRU, budget and fetch workers)
 * and reader.c (per-file readers: URL renewal, read-ahead plan, reads).
 *
 * Locking: rc->mu protects everything in struct afs_readcache, every struct blk except
 * the bytes of a FETCHING block (written only by its job's worker), every struct src and
 * the mutable fields of every struct afs_reader. rc->job_cv wakes workers, rc->blk_cv
 * wakes readers waiting for blocks. No lock is held during HTTP transfers, URL refreshes
 * or copies to the caller's buffer.
 */
#ifndef ASSETFS_READER_INT_H
#define ASSETFS_READER_INT_H

#include <pthread.h>

#include "reader/reader.h"

enum bstate { B_FETCHING, B_READY, B_ERROR };

struct src {
  char *key;
  int64_t size;
  int refs; /* readers, blocks and jobs using it */
  struct src *next;
};

struct blk {
  struct src *src;
  int64_t idx;
  struct blk *hnext;
  struct blk *prev, *next; /* LRU (READY blocks only); head = most recently used */
  char *data;
  size_t len;    /* bytes this block holds when READY (the last block may be short) */
  size_t filled; /* written by the worker */
  enum bstate state;
  int pins;
  bool in_hash, in_lru;
  bool in_job; /* its job still runs: never evicted, not on the LRU */
  int err_code;
  char *err_msg;    /* ERROR: why */
  char *failed_url; /* ERROR after a 403: the URL S3 refused (NULL when src/http refused
                     * the URL itself or it redirected: no new URL will help) */
};

struct job {
  struct src *src;
  int64_t first; /* block index */
  size_t n;      /* blocks */
  struct blk **blks;
  char *url;
  struct job *next;
};

struct afs_readcache {
  struct afs_readcache_opts o;
  pthread_mutex_t mu;
  pthread_cond_t job_cv, blk_cv;
  struct blk **ht;
  size_t nht;
  struct blk *lru_head, *lru_tail;
  char **freelist; /* spare block buffers, so steady streaming does not mmap per block */
  size_t nfree;
  size_t bytes; /* every allocated block buffer, incl. the free list */
  struct afs_readcache_stats st;
  struct job *q_head, *q_tail;
  struct src *srcs;
  int nseq; /* readers currently sequential, for the fair share of the budget */
  bool stop;
  pthread_t *th;
  int nth;
};

struct afs_reader {
  struct afs_readcache *rc;
  struct src *src;
  char *url; /* rc->mu */
  int64_t expires_ms;
  double margin_s;
  afs_reader_url_fn get_url;
  void *ctx;
  void (*ctx_free)(void *);
  char *label;         /* for log lines */
  bool refusal_logged; /* rc->mu: a refused URL is logged once per reader */
  /* access pattern (rc->mu) */
  int64_t next_off;
  int64_t window;
  int64_t ra_end;    /* read-ahead issued up to this byte */
  int64_t run_start; /* where the current sequential run began */
  bool seq;
};

/* ---- reader_cache.c (all with rc->mu held) ---- */

/* The block (s, idx) in the table, NULL if none. */
struct blk *afs_rc_hget(struct afs_readcache *rc, struct src *s, int64_t idx);
/* Queues fetches for r's missing blocks in [first, last], in runs of at most max_blocks
 * (demand: ahead of read-ahead, and over budget if need be). Returns false when the
 * budget stopped it early. */
bool afs_rc_fetch_range(struct afs_readcache *rc, struct afs_reader *r, int64_t first, int64_t last,
                        size_t max_blocks, bool demand);
/* Frees b (out of the table and the LRU; its buffer back to the free list). */
void afs_rc_blk_free(struct afs_readcache *rc, struct blk *b);
/* Puts b first (most recently used) or last (first to be evicted) on the LRU. */
void afs_rc_lru_front(struct afs_readcache *rc, struct blk *b);
void afs_rc_lru_back(struct afs_readcache *rc, struct blk *b);
/* Drops a reference to s, freeing it with the last. */
void afs_rc_src_unref(struct afs_readcache *rc, struct src *s);

#endif
