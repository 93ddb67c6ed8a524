/* Per-file readers on the shared block cache (see reader.h): opening a reader on a
 * source (key, size, URL), keeping its URL fresh (renewed before it expires and once
 * after a 403), the access pattern and read-ahead plan of each reader, and
 * afs_reader_read, which pins the blocks it needs, waits for them and copies out. The
 * cache itself (blocks, LRU, budget, workers) is reader_cache.c; the structures both
 * share are in reader_int.h.
 *
 * Locking: see reader_int.h. No lock is held during HTTP transfers, URL refreshes or
 * copies to the caller's buffer.
 */
#include "reader/reader.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "reader/reader_int.h"

/* ---- readers ---- */

struct afs_reader *afs_reader_open(struct afs_readcache *rc, const struct afs_reader_source *src,
                                   struct afs_error *err) {
  if (!src || !src->key || src->size < 0) {
    afs_error_set(err, EINVAL, "bad reader source");
    return NULL;
  }
  struct afs_reader *r = calloc(1, sizeof *r);
  if (!r) {
    afs_error_set(err, ENOMEM, "out of memory");
    return NULL;
  }
  r->rc = rc;
  r->url = afs_xstrdup(src->url);
  r->expires_ms = src->expires_ms;
  r->margin_s = src->refresh_margin_s;
  r->get_url = src->get_url;
  r->ctx = src->ctx;
  r->ctx_free = src->ctx_free;
  r->label = afs_xstrdup(src->label ? src->label : src->key);
  pthread_mutex_lock(&rc->mu);
  struct src *s = rc->srcs;
  while (s && strcmp(s->key, src->key) != 0)
    s = s->next;
  /* Same key, other size: the cached blocks belong to another version. Start over
   * under a fresh identity; the old blocks age out. */
  if (!s || s->size != src->size) {
    s = afs_xcalloc(1, sizeof *s);
    s->key = afs_xstrdup(src->key);
    s->size = src->size;
    s->next = rc->srcs;
    rc->srcs = s;
  }
  s->refs++;
  r->src = s;
  pthread_mutex_unlock(&rc->mu);
  return r;
}

void afs_reader_close(struct afs_reader *r) {
  if (!r)
    return;
  struct afs_readcache *rc = r->rc;
  pthread_mutex_lock(&rc->mu);
  if (r->seq)
    rc->nseq--;
  afs_rc_src_unref(rc, r->src);
  pthread_mutex_unlock(&rc->mu);
  if (r->ctx_free)
    r->ctx_free(r->ctx);
  free(r->url);
  free(r->label);
  free(r);
}

/* Asks the source for a new URL (no lock held). */
static bool renew_url(struct afs_reader *r, const char *failed, struct afs_error *err) {
  if (!r->get_url)
    return afs_error_set(err, EIO, "URL expired or refused and cannot be refreshed");
  char *url = NULL;
  int64_t exp = 0;
  if (!r->get_url(r->ctx, failed, &url, &exp, err))
    return false;
  pthread_mutex_lock(&r->rc->mu);
  free(r->url);
  r->url = url;
  r->expires_ms = exp;
  r->rc->st.refreshes++;
  pthread_mutex_unlock(&r->rc->mu);
  return true;
}

/* Refreshes an expiring URL before use; an unexpired one survives a failed refresh. */
static bool check_url(struct afs_reader *r, struct afs_error *err) {
  pthread_mutex_lock(&r->rc->mu);
  int64_t exp = r->expires_ms;
  bool empty = !*r->url;
  pthread_mutex_unlock(&r->rc->mu);
  int64_t now = afs_now_ms();
  if (!empty && (exp <= 0 || exp - now > (int64_t)(r->margin_s * 1000)))
    return true;
  struct afs_error rerr = {0};
  if (renew_url(r, NULL, &rerr))
    return true;
  if (!empty && exp > now + 1000) {
    afs_debug("%s: keeping the current URL: %s", r->src->key, rerr.msg);
    return true;
  }
  *err = rerr;
  if (err->code != AFS_E_RECORD_GONE)
    err->code = EIO;
  return false;
}

/* Updates the access pattern for a read of [off, end) and queues read-ahead (mu held). */
static void plan_ahead(struct afs_readcache *rc, struct afs_reader *r, int64_t off, int64_t end) {
  const int64_t tol = 1 << 20; /* kernel and async reads arrive slightly out of order */
  bool seq = off >= r->next_off - tol && off <= r->next_off + tol;
  if (seq != r->seq) {
    rc->nseq += seq ? 1 : -1;
    r->seq = seq;
  }
  if (!seq) {
    r->window = 0;
    r->ra_end = end;
    r->next_off = end;
    r->run_start = off;
    return;
  }
  if (end > r->next_off)
    r->next_off = end;
  int64_t cap = (int64_t)rc->o.max_window;
  int64_t share = (int64_t)rc->o.budget_bytes / (2 * (rc->nseq > 0 ? rc->nseq : 1));
  if (share < cap)
    cap = share;
  int64_t bs = (int64_t)rc->o.block_size;
  if (cap < bs)
    cap = bs;
  /* The window follows what was actually read in this run (twice as much ahead), not
   * the number of read calls: one small read that the kernel splits into a burst of
   * readahead requests must not pull a whole file. */
  int64_t run = end - r->run_start;
  r->window = 2 * run > (1 << 20) ? 2 * run : (1 << 20);
  if (r->window > cap)
    r->window = cap;
  if (r->ra_end < end)
    r->ra_end = end;
  /* Issue in batches: only when less than half a window is left in flight, so GETs are
   * large, not one per kernel read. */
  int64_t want = end + r->window;
  if (want > r->src->size)
    want = r->src->size;
  if (r->ra_end >= want || r->ra_end - end > r->window / 2)
    return;
  int64_t first = r->ra_end / bs, last = (want - 1) / bs;
  afs_debug("%s: read at %" PRId64 ": read-ahead to %" PRId64 " (window %" PRId64 " KiB)",
            r->src->key, off, want, r->window >> 10);
  if (first <= last)
    afs_rc_fetch_range(rc, r, first, last, rc->o.chunk_size / rc->o.block_size, false);
  r->ra_end = want;
}

static int map_code(int code) {
  switch (code) {
  case ENOENT:
  case AFS_E_RECORD_GONE:
    return AFS_E_RECORD_GONE;
  case EINVAL:
    return EINVAL;
  default:
    return EIO;
  }
}

ssize_t afs_reader_read(struct afs_reader *r, void *buf, size_t size, int64_t off,
                        struct afs_error *err) {
  struct afs_readcache *rc = r->rc;
  if (off < 0) {
    afs_error_set(err, EINVAL, "negative offset");
    return -1;
  }
  int64_t fsize = r->src->size;
  if (off >= fsize || size == 0)
    return 0;
  int64_t end = off + (int64_t)size < fsize ? off + (int64_t)size : fsize;
  int64_t bs = (int64_t)rc->o.block_size;
  int64_t first = off / bs, last = (end - 1) / bs;
  size_t nb = (size_t)(last - first + 1);
  struct blk *stackv[16];
  struct blk **bv = nb <= 16 ? stackv : calloc(nb, sizeof *bv);
  if (!bv) {
    afs_error_set(err, ENOMEM, "out of memory");
    return -1;
  }
  bool refreshed = false;
  ssize_t ret = -1;
  for (;;) {
    char *failed = NULL;
    int code = 0;
    if (!check_url(r, err))
      break;
    pthread_mutex_lock(&rc->mu);
    size_t got = 0;
    struct blk *bad = NULL;
    for (int64_t i = first; i <= last; i++) {
      struct blk *b = afs_rc_hget(rc, r->src, i);
      if (b && b->state == B_READY)
        rc->st.hits++;
      else
        rc->st.misses++;
      if (!b) {
        afs_rc_fetch_range(rc, r, i, last, nb, true); /* the missing run, as one GET */
        b = afs_rc_hget(rc, r->src, i);
      }
      if (!b) {
        pthread_mutex_unlock(&rc->mu);
        afs_error_set(err, ENOMEM, "no memory for read buffers");
        goto unpin;
      }
      b->pins++; /* pinned before read-ahead may evict */
      bv[got++] = b;
    }
    plan_ahead(rc, r, off, end);
    for (;;) {
      bool waiting = false;
      for (size_t k = 0; k < got && !bad; k++) {
        if (bv[k]->state == B_ERROR)
          bad = bv[k];
        else if (bv[k]->state == B_FETCHING)
          waiting = true;
      }
      if (bad || !waiting)
        break;
      pthread_cond_wait(&rc->blk_cv, &rc->mu);
    }
    pthread_mutex_unlock(&rc->mu);
    if (!bad) {
      /* Pinned READY blocks do not change: copy without the lock. */
      char *out = buf;
      for (size_t k = 0; k < got; k++) {
        int64_t bstart = (first + (int64_t)k) * bs;
        int64_t from = off > bstart ? off - bstart : 0;
        int64_t to = end - bstart < (int64_t)bv[k]->len ? end - bstart : (int64_t)bv[k]->len;
        memcpy(out, bv[k]->data + from, (size_t)(to - from));
        out += to - from;
      }
      ret = end - off;
    }
    if (0) {
    unpin:
      bad = NULL;
      code = ENOMEM;
    }
    pthread_mutex_lock(&rc->mu);
    if (bad) {
      code = bad->err_code;
      afs_error_set(err, code, "%s", bad->err_msg);
      if (bad->failed_url)
        failed = afs_xstrdup(bad->failed_url);
    }
    for (size_t k = 0; k < got; k++) {
      struct blk *b = bv[k];
      b->pins--;
      if (b->state == B_ERROR) {
        if (b->pins == 0)
          afs_rc_blk_free(rc, b);
      } else if (b->in_job || b->pins > 0) {
        /* the job (or the last reader) puts it on the LRU */
      } else if (r->seq && b->pins == 0 && (first + (int64_t)k + 1) * bs <= end) {
        afs_rc_lru_back(rc, b); /* fully read by a sequential reader: evict first */
      } else {
        afs_rc_lru_front(rc, b);
      }
    }
    pthread_mutex_unlock(&rc->mu);
    if (code == ENOMEM)
      break;
    if (!bad)
      break;
    if (code == AFS_E_URL_REFUSED && !failed) {
      /* src/http refused the URL (not the bucket's) or it redirected: a new URL from the
       * same record would not be better, and the record is worth one line, not one per
       * read. */
      pthread_mutex_lock(&rc->mu);
      bool first_time = !r->refusal_logged;
      r->refusal_logged = true;
      pthread_mutex_unlock(&rc->mu);
      if (first_time)
        afs_warn("%s: read refused: %s", r->label, err->msg);
      err->code = AFS_E_URL_REFUSED;
      break;
    }
    if (code == AFS_E_URL_REFUSED && !refreshed) {
      refreshed = true;
      struct afs_error rerr = {0};
      afs_info("%s: S3 refused the read URL (403); refreshing it", r->src->key);
      bool ok = renew_url(r, failed, &rerr);
      free(failed);
      if (ok)
        continue;
      *err = rerr;
      err->code = map_code(rerr.code);
      break;
    }
    free(failed);
    afs_warn("%s: read at %" PRId64 " failed: %s", r->label, off, err->msg);
    err->code = map_code(code);
    break;
  }
  if (bv != stackv)
    free(bv);
  return ret;
}

/* ---- catalog glue ---- */

struct cat_url_ctx {
  struct afs_catalog *cat;
  char id[AFS_OID_HEX];
  enum afs_part part;
};

static bool cat_url(void *ctx, const char *failed_url, char **url, int64_t *expires_ms,
                    struct afs_error *err) {
  struct cat_url_ctx *c = ctx;
  return afs_catalog_fresh_url(c->cat, c->id, c->part, failed_url, url, expires_ms, err);
}

struct afs_reader *afs_reader_open_asset(struct afs_readcache *rc, struct afs_catalog *cat,
                                         const struct afs_asset *a, struct afs_error *err) {
  struct cat_url_ctx *c = calloc(1, sizeof *c);
  if (!c) {
    afs_error_set(err, ENOMEM, "out of memory");
    return NULL;
  }
  c->cat = cat;
  snprintf(c->id, sizeof c->id, "%s", a->id);
  c->part = a->part;
  char key[64];
  snprintf(key, sizeof key, "%s/%s", a->id, afs_part_name(a->part));
  char label[512];
  snprintf(label, sizeof label, "_id %s (%s/%s)", a->id, a->partition ? a->partition : "",
           a->file_path ? a->file_path : "");
  struct afs_reader_source src = {
      .key = key,
      .label = label,
      .size = a->size,
      .url = afs_asset_part_url(a),
      .expires_ms = a->expiration_hours > 0 ? a->expiration_ms : 0,
      .refresh_margin_s = afs_catalog_url_margin(cat, a->expiration_hours),
      .get_url = cat_url,
      .ctx = c,
      .ctx_free = free,
  };
  struct afs_reader *r = afs_reader_open(rc, &src, err);
  if (!r)
    free(c);
  return r;
}
