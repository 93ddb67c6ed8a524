/* Reading assets from S3 through their read URLs, with read-ahead and one shared,
 * bounded block cache. No FUSE in here: ops.c opens a reader per open file handle.
 *
 * Data is cached in blocks (block_size, default 64 KiB) keyed by (asset id, part), so
 * every handle on the same asset shares them and a reopen finds them warm. The cache
 * has ONE budget for all open files (budget_bytes, default 256 MiB); least recently used
 * blocks are dropped first, and blocks a sequential reader has passed go before others.
 * By default the budget is the whole process's: the blocks get what the process does
 * not hold already (whole_process), so `cache_mb` bounds the mount's RSS.
 *
 * Sequential readers get a read-ahead window of 1 MiB that grows to twice the bytes read
 * in the current sequential run (so it doubles as the reader keeps going), up to max_window and to
 * a fair share of the budget (budget / (2 × sequential readers)); the window is fetched as parallel
 * ranged GETs of up to chunk_size each by a pool of worker threads (each keeps its curl connection
 * alive). A random read (a seek, ffprobe, a player) fetches only the blocks it touches; a seek
 * keeps every cached block, so jumping back finds them.
 *
 * Failures: 5xx and network errors are retried (retries, with backoff) and then give EIO;
 * a 403 asks the URL source for a fresh URL once and retries; a 404 (the object is gone:
 * the asset was deleted while open) gives ESTALE. A URL that src/http refuses (not
 * http/https on an allowed origin, see http_allow.h) or that answers with a redirect
 * gives EACCES, with one log line per reader naming the source's label and the
 * origin; an answer that is not the bytes asked for (a 200 that ignored Range, a 206
 * for other bytes) gives EIO. Neither reaches the cache. URLs that expire within the source's
 * margin are refreshed before use (the catalog does that in afs_catalog_fresh_url).
 *
 * Threads: any thread may call any function; one reader may be read by several threads
 * at once. One mutex (rc->mu) protects the cache, the job queue and reader state; no
 * lock is held while a URL is fetched or refreshed, and memcpy to the caller runs on
 * pinned blocks outside the lock.
 */
#ifndef ASSETFS_READER_H
#define ASSETFS_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "assetfs/error.h"
#include "catalog/catalog.h"

struct afs_readcache_opts {
  size_t budget_bytes;    /* all cached data of all files; default 256 MiB (min 4 blocks) */
  size_t block_size;      /* default 64 KiB */
  size_t chunk_size;      /* largest single ranged GET of read-ahead; default 8 MiB */
  size_t max_window;      /* largest read-ahead window per reader; default 64 MiB */
  int workers;            /* fetch threads (parallel GETs); default 8 */
  int retries;            /* extra attempts after a 5xx/network error; default 3 */
  long connect_timeout_s; /* default 5 */
  long stall_timeout_s;   /* default 15 */
  bool whole_process;     /* budget_bytes bounds the process's resident memory, not only
                           * the blocks: the cache gets the budget less what the process
                           * holds at creation (libraries, pools) and an allowance for
                           * threads and transfer buffers, and at least half of it.
                           * Default true. */
};

void afs_readcache_opts_default(struct afs_readcache_opts *o);

struct afs_readcache;

/* Starts the worker threads. One per process is the intent. */
struct afs_readcache *afs_readcache_new(const struct afs_readcache_opts *o, struct afs_error *err);
/* All readers must be closed first. Stops the workers (in-flight GETs finish). */
void afs_readcache_free(struct afs_readcache *rc);

struct afs_readcache_stats {
  size_t bytes_cached;   /* now */
  size_t bytes_peak;     /* highest ever */
  size_t cache_budget;   /* what the blocks may use (see whole_process) */
  uint64_t hits, misses; /* blocks */
  uint64_t requests;     /* ranged GETs issued */
  uint64_t bytes_fetched;
  uint64_t refreshes; /* URL refreshes asked by readers */
};
void afs_readcache_get_stats(struct afs_readcache *rc, struct afs_readcache_stats *out);

/* Drops every cached block of key (e.g. when an asset is replaced). */
void afs_readcache_forget(struct afs_readcache *rc, const char *key);

/* Where a reader gets a (new) URL. failed_url NULL: "the one I have expires soon";
 * else S3 refused failed_url. *url: caller (the reader) frees. */
typedef bool (*afs_reader_url_fn)(void *ctx, const char *failed_url, char **url,
                                  int64_t *expires_ms, struct afs_error *err);

struct afs_reader_source {
  const char *key;           /* cache identity, e.g. "<id>/<part>"; copied */
  int64_t size;              /* object size in bytes; reads stop there */
  const char *url;           /* current URL; copied */
  const char *label;         /* names the record in log lines ("_id X (P/filePath)");
                              * copied; NULL = key */
  int64_t expires_ms;        /* its expiration (ms since epoch), 0 = never */
  double refresh_margin_s;   /* refresh when expiring within this; 0 = only on 403 */
  afs_reader_url_fn get_url; /* may be NULL (then a 403 is EACCES -> EIO) */
  void *ctx;
  void (*ctx_free)(void *ctx); /* called at close; may be NULL */
};

struct afs_reader;

/* Never fails for a valid source (no I/O happens at open); NULL with err otherwise. */
struct afs_reader *afs_reader_open(struct afs_readcache *rc, const struct afs_reader_source *src,
                                   struct afs_error *err);

/* A reader for the part of asset a (as returned by afs_catalog_lookup) whose URLs come
 * from afs_catalog_fresh_url. The catalog must outlive the reader. */
struct afs_reader *afs_reader_open_asset(struct afs_readcache *rc, struct afs_catalog *cat,
                                         const struct afs_asset *a, struct afs_error *err);

/* pread semantics: up to size bytes at off into buf; 0 at or past the end; short only at
 * the end. -1 with err: EIO (S3 unreachable after retries, refresh impossible, an answer
 * that is not the bytes asked for — the log says why), EACCES (the URL is refused: not
 * the bucket's), ESTALE (object deleted), EINVAL (bad offset). */
ssize_t afs_reader_read(struct afs_reader *r, void *buf, size_t size, int64_t off,
                        struct afs_error *err);

void afs_reader_close(struct afs_reader *r);

#endif
