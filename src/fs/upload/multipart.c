/* Multipart uploads, the mount's half (docs/internals/multipart.md): a file bigger than
 * multipart_threshold goes up in parts (staging/parts.h) through UploadPart URLs the
 * broker signs on request (store sign_parts: AssetfsSignParts), never through one PUT.
 *
 * Streaming: while a file that has its record (default mode) is written past the
 * threshold, every part the writer has finished is queued for the stream workers
 * (multipart_parallel of them), so most of a sequentially written file is in the bucket
 * by close(); a writer that outruns them waits (back-pressure), so close() has at most a
 * few parts left to send. A part written again after it went up is sent again.
 * Finishing (the pipeline, afs_up_mp_finish): every part not in the bucket as it is now
 * goes up, multipart_parallel at once, and `uploaded` carries each part's ETag; the
 * broker assembles exactly those.
 *
 * Locks: a file's parts table is under wf->mu; the stream queue under up->s_mu, a leaf
 * (never held with wf->mu). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/http_put.h"
#include "assetfs/log.h"
#include "staging/base.h"
#include "staging/parts.h"
#include "upload/upload_int.h"

/* How long a writer waits for the stream workers at most, each time it is held back. */
#define BACKPRESSURE_MAX_MS 120000
/* How long a file stops streaming after one of its parts failed. */
#define STREAM_PAUSE_MS 30000
/* Parts sent at close go in slices of this many: the parts log learns each slice as it
 * settles, so a mount killed mid-way loses at most a slice (parts.h). */
#define SLICE 32
/* How long parts wait for the asset they are copied from to be active. */
#define COPY_WAIT_MS 15000
/* A signed batch is not used in its last minute: a transfer started then could outlive it. */
#define URL_MARGIN_MS 60000

static int parallel(const struct afs_uploader *up) {
  return up->opt->multipart_parallel > 0 ? up->opt->multipart_parallel : 8;
}

/* ---- part URLs ---- */

/* Part n's URL (caller frees) for record rec: from the signed batch, or a new batch of
 * AFS_MP_SIGN_BATCH parts from n on. One sign call per file at a time. NULL with err. */
static char *part_url(struct afs_uploader *up, struct afs_wfile *wf, const char *rec, int n,
                      struct afs_error *err) {
  char *url = NULL;
  pthread_mutex_lock(&wf->mu);
  for (;;) {
    struct afs_mp *mp = wf->mp;
    if (!mp || strcmp(mp->rec, rec)) {
      pthread_mutex_unlock(&wf->mu);
      afs_error_set(err, AFS_E_RECORD_GONE, "the file moved on to another upload record");
      return NULL;
    }
    const char *u = afs_mp_url(mp, n, afs_monotonic_ms());
    if (u) {
      url = afs_xstrdup(u);
      pthread_mutex_unlock(&wf->mu);
      return url;
    }
    if (!mp->signing)
      break;
    afs_cond_timedwait_ms(&wf->cond, &wf->mu, 1000);
  }
  wf->mp->signing = true;
  bool first = wf->mp->upload_id == NULL;
  pthread_mutex_unlock(&wf->mu);

  bool ok = true;
  if (first) {
    /* The broker starts the upload only once it initialized the record. */
    struct record_state rs;
    memset(&rs, 0, sizeof rs);
    ok = afs_rec_wait_initialized(up, rec, afs_monotonic_ms() + 60000, &rs, err);
    afs_rec_state_free(&rs);
  }
  char *upload_id = NULL, **urls = NULL;
  int got = 0;
  long expires_s = 0;
  int count = AFS_MP_SIGN_BATCH;
  if (n + count - 1 > AFS_MP_MAX_PARTS)
    count = AFS_MP_MAX_PARTS - n + 1;
  int64_t t0 = afs_monotonic_ms();
  ok = ok && up->store.ops->sign_parts(up->store.ctx, rec, n, count, &upload_id, &urls, &got,
                                       &expires_s, err);
  if (ok && got == 0)
    ok = afs_error_set(err, EIO, "the broker signed no part URL");

  pthread_mutex_lock(&wf->mu);
  struct afs_mp *mp = wf->mp;
  mp->signing = false;
  if (ok && !strcmp(mp->rec, rec)) {
    free(mp->upload_id);
    mp->upload_id = upload_id;
    upload_id = NULL;
    afs_mp_set_urls(mp, n, urls, got, t0 + expires_s * 1000 - URL_MARGIN_MS);
    urls = NULL;
    url = afs_xstrdup(mp->url[0]);
  } else if (ok) {
    afs_error_set(err, AFS_E_RECORD_GONE, "the file moved on to another upload record");
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  free(upload_id);
  for (int i = 0; urls && i < got; i++)
    free(urls[i]);
  free(urls);
  return url;
}

/* Forgets the signed batch (a URL expired early: the broker's clock, or a long stall). */
static void drop_urls(struct afs_wfile *wf, const char *rec) {
  pthread_mutex_lock(&wf->mu);
  if (wf->mp && !strcmp(wf->mp->rec, rec))
    afs_mp_set_urls(wf->mp, 0, NULL, 0, 0);
  pthread_mutex_unlock(&wf->mu);
}

/* ---- streaming ---- */

struct stream_task {
  struct afs_wfile *wf; /* a reference of the queue's */
  int n;
};

static void stream_push(struct afs_uploader *up, struct afs_wfile *wf, int n) {
  afs_staging_ref(up->st, wf);
  pthread_mutex_lock(&up->s_mu);
  if (up->s_n == up->s_cap) {
    size_t cap = up->s_cap ? up->s_cap * 2 : 64;
    struct stream_task *q = afs_xcalloc(cap, sizeof *q);
    for (size_t i = 0; i < up->s_n; i++)
      q[i] = up->s_q[(up->s_head + i) % up->s_cap];
    free(up->s_q);
    up->s_q = q;
    up->s_cap = cap;
    up->s_head = 0;
  }
  up->s_q[(up->s_head + up->s_n) % up->s_cap] = (struct stream_task){wf, n};
  up->s_n++;
  pthread_cond_signal(&up->s_cond);
  pthread_mutex_unlock(&up->s_mu);
}

/* One streamed part: sent if it is still needed as it is now. */
static void stream_part(struct afs_uploader *up, struct afs_wfile *wf, int n) {
  struct afs_error err = {0};
  char rec[AFS_OID_HEX];
  pthread_mutex_lock(&wf->mu);
  struct afs_mp *mp = wf->mp;
  struct afs_mp_part *p = mp ? afs_mp_part(mp, n) : NULL;
  if (p && p->queued) {
    p->queued = false;
    mp->queued--;
  }
  /* Not for a record already `uploaded` (its version is complete as sent). */
  if (!p || wf->unlinked || wf->record_used || strcmp(mp->rec, wf->id) || p->inflight ||
      afs_mp_clean(mp, n, -1) || afs_base_same(wf->base, n) ||
      afs_monotonic_ms() < mp->stream_pause_until) {
    pthread_cond_broadcast(&wf->cond);
    pthread_mutex_unlock(&wf->mu);
    return;
  }
  p->inflight = true;
  mp->inflight++;
  mp->stream_inflight++;
  uint64_t gen = p->gen;
  memcpy(rec, mp->rec, sizeof rec);
  char *path = afs_xstrdup(wf->staging_path);
  pthread_mutex_unlock(&wf->mu);

  struct afs_put_job job = {
      .path = path, .what = "part", .offset = afs_mp_part_off(n), .length = afs_mp_part_size(n)};
  struct afs_put_opts po;
  afs_put_opts_default(&po);
  char *url = part_url(up, wf, rec, n, &err);
  bool ok = false;
  for (int attempt = 0; url && attempt < 2; attempt++) {
    job.url = url;
    ok = afs_http_put(&job, &po);
    if (ok || job.err.code != AFS_E_URL_EXPIRED)
      break;
    drop_urls(wf, rec);
    free(url);
    url = part_url(up, wf, rec, n, &err);
  }
  if (!ok && url)
    err = job.err;
  free(url);
  free(path);

  pthread_mutex_lock(&wf->mu);
  mp = wf->mp;
  p = afs_mp_part(mp, n);
  p->inflight = false;
  mp->inflight--;
  mp->stream_inflight--;
  if (ok && !strcmp(mp->rec, rec) && p->gen == gen) {
    memcpy(p->etag, job.etag, sizeof p->etag);
    p->sent_gen = gen;
    p->sent_len = job.length;
    afs_mp_log_part(wf->staging_path, mp, n, job.length, job.etag);
  } else if (!ok) {
    /* The broker or S3 is away: stop streaming this file for a while rather than hold
     * its writer up part after part; close sends what is missing. */
    mp->stream_pause_until = afs_monotonic_ms() + STREAM_PAUSE_MS;
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  if (!ok)
    afs_debug("streamed part %d of upload %s failed: %s (sent again at close)", n, rec, err.msg);
}

static void *stream_main(void *arg) {
  struct afs_uploader *up = arg;
  pthread_mutex_lock(&up->s_mu);
  for (;;) {
    while (!up->s_stop && up->s_n == 0)
      pthread_cond_wait(&up->s_cond, &up->s_mu);
    if (up->s_stop)
      break;
    struct stream_task t = up->s_q[up->s_head];
    up->s_head = (up->s_head + 1) % up->s_cap;
    up->s_n--;
    pthread_mutex_unlock(&up->s_mu);
    stream_part(up, t.wf, t.n);
    afs_staging_unref(up->st, t.wf);
    pthread_mutex_lock(&up->s_mu);
  }
  pthread_mutex_unlock(&up->s_mu);
  return NULL;
}

void afs_up_streams_start(struct afs_uploader *up) {
  pthread_mutex_init(&up->s_mu, NULL);
  pthread_cond_init(&up->s_cond, NULL);
  if (up->opt->multipart_threshold <= 0)
    return;
  int n = parallel(up);
  up->streams = afs_xcalloc((size_t)n, sizeof *up->streams);
  for (int i = 0; i < n; i++) {
    if (pthread_create(&up->streams[up->n_streams], NULL, stream_main, up) != 0)
      break;
    up->n_streams++;
  }
}

void afs_up_streams_stop(struct afs_uploader *up) {
  pthread_mutex_lock(&up->s_mu);
  up->s_stop = true;
  pthread_cond_broadcast(&up->s_cond);
  pthread_mutex_unlock(&up->s_mu);
  for (int i = 0; i < up->n_streams; i++)
    pthread_join(up->streams[i], NULL);
  free(up->streams);
  for (size_t i = 0; i < up->s_n; i++) {
    struct stream_task t = up->s_q[(up->s_head + i) % up->s_cap];
    pthread_mutex_lock(&t.wf->mu);
    if (t.wf->mp && t.n <= t.wf->mp->cap && t.wf->mp->part[t.n - 1].queued) {
      t.wf->mp->part[t.n - 1].queued = false;
      t.wf->mp->queued--;
    }
    pthread_mutex_unlock(&t.wf->mu);
    afs_staging_unref(up->st, t.wf);
  }
  free(up->s_q);
  pthread_mutex_destroy(&up->s_mu);
  pthread_cond_destroy(&up->s_cond);
}

/* Write-back: a file has no record while it is written (it gets one in a batch after
 * close), but a big one takes its own as it passes the threshold, so that its parts can go
 * while it is written. One writer makes it; the others go on meanwhile. */
static void make_record(struct afs_uploader *up, struct afs_wfile *wf) {
  /* Only while it is being written and no upload worker has it (its records are made in
   * batches there). */
  if (up->n_streams == 0 || wf->state != AFS_W_WRITING || wf->claimed || wf->busy || wf->unlinked)
    return;
  struct afs_mp *mp = afs_mp_for(&wf->mp, "");
  if (mp->making_record || afs_monotonic_ms() < mp->record_retry_at)
    return;
  mp->making_record = true;
  pthread_mutex_unlock(&wf->mu);
  struct afs_error err = {0};
  bool ok = afs_upload_begin(up, wf, &err);
  pthread_mutex_lock(&wf->mu);
  wf->mp->making_record = false;
  if (!ok) {
    /* MongoDB away: writes stay local (write-back); the record comes after close. */
    wf->mp->record_retry_at = afs_monotonic_ms() + STREAM_PAUSE_MS;
    afs_debug("no record for streaming yet: %s (its parts go after close)", err.msg);
  }
}

void afs_upload_wrote(struct afs_uploader *up, struct afs_wfile *wf, int64_t off, int64_t len) {
  long long threshold = up->opt->multipart_threshold;
  int ready[64], n_ready = 0;
  pthread_mutex_lock(&wf->mu);
  if (len < 0 && wf->contig > off)
    wf->contig = off;
  else if (len > 0 && off <= wf->contig && off + len > wf->contig)
    wf->contig = off + len;
  bool big = threshold > 0 && (wf->mp || (len > 0 && off + len > threshold));
  if (big && !wf->id[0] && len > 0)
    make_record(up, wf);
  /* A record past `initialized` takes no more parts: the next attempt makes a new one. */
  if (!big || !wf->id[0] || wf->record_used) {
    if (wf->mp)
      afs_mp_dirty(wf->mp, off, len);
    pthread_mutex_unlock(&wf->mu);
    return;
  }
  struct afs_mp *mp = afs_mp_for(&wf->mp, wf->id);
  afs_mp_dirty(mp, off, len);
  bool paused = afs_monotonic_ms() < mp->stream_pause_until;
  if (len > 0 && up->n_streams > 0 && wf->contig > threshold && !paused) {
    /* Every part written front to back since (it ends within [0, contig)) that the
     * bucket does not hold as it is now. Bytes written ahead of that (a hole to be filled
     * later) are not sent yet, and a part rewritten behind the writer is not streamed
     * again: close sends both. */
    int last = afs_mp_part_at(wf->contig) - 1, n = mp->scan_from > 0 ? mp->scan_from : 1;
    for (; n <= last && n_ready < 64; n++) {
      struct afs_mp_part *p = afs_mp_part(mp, n);
      /* A part that is still the bytes of the asset the file began as is copied or sent
       * at close. */
      if (p->queued || p->inflight || afs_mp_clean(mp, n, -1) || afs_base_same(wf->base, n))
        continue;
      p->queued = true;
      mp->queued++;
      ready[n_ready++] = n;
    }
    mp->scan_from = n;
  }
  pthread_mutex_unlock(&wf->mu);
  for (int i = 0; i < n_ready; i++)
    stream_push(up, wf, ready[i]);
  if (up->n_streams == 0 || paused)
    return;
  /* Only the stream workers' transfers hold a writer back, not an upload running at the
   * same time (a close or fsync on another handle sends what is left itself). */
  /* Back-pressure: a writer that outruns the uploads waits, so the parts left for close()
   * stay few. */
  int limit = 2 * parallel(up) + 2;
  int64_t until = afs_monotonic_ms() + BACKPRESSURE_MAX_MS;
  pthread_mutex_lock(&wf->mu);
  while (wf->mp && wf->mp->queued + wf->mp->stream_inflight > limit && !wf->busy &&
         afs_monotonic_ms() < until && afs_monotonic_ms() >= wf->mp->stream_pause_until &&
         !afs_upload_stopping(up))
    afs_cond_timedwait_ms(&wf->cond, &wf->mu, 1000);
  pthread_mutex_unlock(&wf->mu);
}

/* ---- finishing ---- */

struct todo {
  int n;
  uint64_t gen;
};

/* Sends parts todo[0..k) (marked inflight by the caller) of rec, parallel() at a time. */
static bool send_parts(struct afs_uploader *up, struct afs_wfile *wf, const char *rec,
                       const char *path, int64_t size, struct todo *todo, int k,
                       int64_t deadline_ms, struct afs_put_job *jobs, struct afs_error *err) {
  bool ok = true;
  for (int attempt = 0; attempt < 2; attempt++) {
    int nj = 0;
    ok = true;
    for (int i = 0; i < k && ok; i++) {
      int n = todo[i].n;
      char *url = part_url(up, wf, rec, n, err);
      if (!url) {
        ok = false;
        break;
      }
      int64_t off = afs_mp_part_off(n), plen = afs_mp_part_size(n);
      if (off + plen > size)
        plen = size - off;
      free((char *)jobs[nj].url);
      jobs[nj++] = (struct afs_put_job){
          .url = url, .path = path, .what = "part", .offset = off, .length = plen};
    }
    if (!ok)
      return false;
    struct afs_put_opts po;
    afs_put_opts_default(&po);
    po.deadline_ms = deadline_ms;
    po.parallel = parallel(up);
    ok = afs_http_put_all(jobs, nj, &po, err);
    if (ok || err->code != AFS_E_URL_EXPIRED)
      break;
    drop_urls(wf, rec);
  }
  return ok;
}

/* A file this mount has sent no part of yet (adopted from a killed mount, or after a
 * failed attempt of an earlier mount) takes the parts its log shows in the bucket and
 * still matching its bytes. */
static void restore(struct afs_wfile *wf, const char *rec, const char *path, int64_t size) {
  int count = afs_mp_part_count(size);
  pthread_mutex_lock(&wf->mu);
  bool fresh = !wf->mp || strcmp(wf->mp->rec, rec) || !wf->mp->logged;
  uint64_t *gen = NULL;
  if (fresh) {
    /* The parts' generations before their bytes are read: a write meanwhile makes its
     * part's check void. */
    struct afs_mp *mp = afs_mp_for(&wf->mp, rec);
    gen = afs_xcalloc((size_t)count + 1, sizeof *gen);
    for (int i = 1; i <= count; i++)
      gen[i] = afs_mp_part(mp, i)->gen;
  }
  /* A part S3 copied from the asset the file began as has no staged bytes to check: the
   * asset's bytes never change under its id. */
  unsigned char *copied = NULL;
  if (fresh && wf->base) {
    copied = afs_xcalloc((size_t)count + 1, 1);
    for (int i = 1; i <= count; i++)
      copied[i] = afs_base_copyable(wf->base, i, size);
  }
  pthread_mutex_unlock(&wf->mu);
  if (!fresh)
    return;
  struct afs_mp_logged *l = NULL;
  int n = afs_mp_restore(path, rec, size, copied, &l);
  free(copied);
  if (n == 0) {
    free(gen);
    return;
  }
  pthread_mutex_lock(&wf->mu);
  struct afs_mp *mp = afs_mp_for(&wf->mp, rec);
  for (int i = 0; i < n; i++) {
    struct afs_mp_part *p = afs_mp_part(mp, l[i].n);
    if (l[i].n > count || p->gen != gen[l[i].n] || p->inflight || afs_mp_clean(mp, l[i].n, size))
      continue;
    memcpy(p->etag, l[i].etag, sizeof p->etag);
    p->sent_gen = p->gen;
    p->sent_len = l[i].len;
  }
  mp->logged = true; /* the log names rec: append to it */
  pthread_mutex_unlock(&wf->mu);
  free(gen);
  afs_info("upload %s: %d of %d part(s) already in the bucket; sending the rest", rec, n,
           afs_mp_part_count(size));
  free(l);
}

/* A part holding both an asset's bytes and new ones (the last part of an append) is
 * staged whole first: S3 copies only ranges of one object (base.h). */
static bool stage_mixed(struct afs_uploader *up, struct afs_wfile *wf, int count, int64_t size,
                        struct afs_error *err) {
  for (int n = 1; n <= count; n++) {
    pthread_mutex_lock(&wf->mu);
    bool more = wf->base && n <= wf->base->nparts;
    bool mixed = afs_base_absent(wf->base, n) && !afs_base_copyable(wf->base, n, size);
    pthread_mutex_unlock(&wf->mu);
    if (!more)
      break;
    if (mixed && !afs_base_fill(up->st, wf, afs_mp_part_off(n), 1, err))
      return false;
  }
  return true;
}

/* Copies of parts by S3, several calls at once (each copies AFS_MP_COPY_BATCH parts). */
struct copy_run {
  struct afs_uploader *up;
  struct afs_wfile *wf;
  const char *rec;
  char src[AFS_OID_HEX]; /* the asset copied from (under mu) */
  char alt[AFS_OID_HEX]; /* a later version holding the same parts (base.h `next`), or "" */
  int64_t size, deadline_ms;
  const struct todo *copy;
  int k;
  pthread_mutex_t mu; /* next, failed, err; a leaf */
  int next;           /* the first part of the next batch to run */
  bool failed;
  struct afs_error err;
};

/* Batch copy[i..i+s): one call (waiting a little for an asset still being completed: a
 * file appended to right after it was copied in), then settled under wf->mu. */
static bool copy_batch(struct copy_run *r, int i, int s, struct afs_error *err) {
  int part[AFS_MP_COPY_BATCH];
  int64_t off[AFS_MP_COPY_BATCH], len[AFS_MP_COPY_BATCH];
  char etag[AFS_MP_COPY_BATCH][130];
  for (int j = 0; j < s; j++) {
    part[j] = r->copy[i + j].n;
    off[j] = afs_mp_part_off(part[j]);
    len[j] = afs_mp_part_len_at(part[j], r->size);
  }
  bool ok = true;
  char src[AFS_OID_HEX];
  const struct afs_upload_store_ops *ops = r->up->store.ops;
  for (int64_t until = afs_monotonic_ms() + COPY_WAIT_MS;;) {
    if (afs_monotonic_ms() >= r->deadline_ms) {
      ok = afs_error_set(err, ETIMEDOUT, "the parts to copy took too long");
      break;
    }
    pthread_mutex_lock(&r->mu);
    memcpy(src, r->src, sizeof src);
    pthread_mutex_unlock(&r->mu);
    ok = ops->copy_parts(r->up->store.ctx, r->rec, src, part, off, len, s, etag, err);
    if (!ok && err->code == EXDEV && r->alt[0] && strcmp(r->alt, src)) {
      /* The asset went (superseded by a version this file uploaded since): that version
       * holds the same bytes. */
      ok = ops->copy_parts(r->up->store.ctx, r->rec, r->alt, part, off, len, s, etag, err);
      if (ok) {
        pthread_mutex_lock(&r->mu);
        memcpy(r->src, r->alt, sizeof r->src);
        pthread_mutex_unlock(&r->mu);
      }
    }
    if (ok || err->code != EXDEV || afs_monotonic_ms() >= until || afs_upload_stopping(r->up))
      break;
    usleep(500000); /* an asset still being completed */
  }
  struct afs_wfile *wf = r->wf;
  pthread_mutex_lock(&wf->mu);
  for (int j = 0; j < s; j++) {
    struct afs_mp_part *p = afs_mp_part(wf->mp, part[j]);
    if (ok && !strcmp(wf->mp->rec, r->rec)) {
      memcpy(p->etag, etag[j], sizeof p->etag);
      p->sent_gen = r->copy[i + j].gen;
      p->sent_len = len[j];
      afs_mp_log_part(wf->staging_path, wf->mp, part[j], len[j], etag[j]);
    }
    p->inflight = false;
    wf->mp->inflight--;
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  return ok;
}

static void *copy_main(void *arg) {
  struct copy_run *r = arg;
  for (;;) {
    pthread_mutex_lock(&r->mu);
    int i = r->next; /* after a failure, the rest is given back by copy_parts */
    int s = r->failed ? 0 : r->k - i < AFS_MP_COPY_BATCH ? r->k - i : AFS_MP_COPY_BATCH;
    r->next = i + s;
    pthread_mutex_unlock(&r->mu);
    if (s <= 0)
      return NULL;
    struct afs_error e = {0};
    if (!copy_batch(r, i, s, &e)) {
      pthread_mutex_lock(&r->mu);
      if (!r->failed)
        r->err = e;
      r->failed = true;
      pthread_mutex_unlock(&r->mu);
    }
  }
}

/* Parts copy[0..k) (marked inflight by the caller) are wholly bytes of asset src: S3
 * copies them (AssetfsCopyParts), parallel() calls at a time, each batch logged once
 * done. Gives every part back. When the asset cannot be copied from (EXDEV), its staged
 * parts are to be sent instead: err EAGAIN. */
static bool copy_parts(struct afs_uploader *up, struct afs_wfile *wf, const char *rec,
                       const char *src, const char *alt, int64_t size, const struct todo *copy,
                       int k, int64_t deadline_ms, struct afs_error *err) {
  struct copy_run r = {.up = up,
                       .wf = wf,
                       .rec = rec,
                       .size = size,
                       .deadline_ms = deadline_ms,
                       .copy = copy,
                       .k = k};
  snprintf(r.src, sizeof r.src, "%s", src);
  snprintf(r.alt, sizeof r.alt, "%s", alt);
  pthread_mutex_init(&r.mu, NULL);
  int batches = (k + AFS_MP_COPY_BATCH - 1) / AFS_MP_COPY_BATCH;
  int nt = parallel(up) < batches ? parallel(up) : batches, started = 0;
  pthread_t th[64];
  for (int t = 1; t < nt && t < 64; t++)
    started += pthread_create(&th[started], NULL, copy_main, &r) == 0;
  copy_main(&r);
  for (int t = 0; t < started; t++)
    pthread_join(th[t], NULL);
  pthread_mutex_destroy(&r.mu);
  /* Batches never run give their parts back. */
  pthread_mutex_lock(&wf->mu);
  for (int i = r.next; i < k; i++) {
    afs_mp_part(wf->mp, copy[i].n)->inflight = false;
    wf->mp->inflight--;
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  if (strcmp(r.src, src))
    afs_base_moved(up->st, wf, r.src);
  if (!r.failed)
    return true;
  *err = r.err;
  if (err->code == EXDEV || err->code == ENOSYS) {
    /* The asset cannot be copied from (gone, or a broker without AssetfsCopyParts):
     * fetch what is not staged while it can be read, then send every part. */
    struct afs_error fe = {0};
    bool fetched = afs_base_fill(up->st, wf, 0, -1, &fe);
    bool all = fetched && afs_base_no_copies(up->st, wf);
    afs_warn("upload %s: cannot copy parts of asset %s (%s): %s%s", rec, r.src, err->msg,
             all ? "they are sent instead" : "bytes of it this copy never fetched are lost: ",
             all ? "" : fe.msg);
    err->code = all ? EAGAIN : AFS_E_BROKER_REFUSED;
  }
  return false;
}

bool afs_up_mp_finish(struct afs_uploader *up, struct afs_wfile *wf, const char *rec,
                      const char *path, int64_t size, int64_t deadline_ms, struct meta *m,
                      struct afs_error *err) {
  int count = afs_mp_part_count(size);
  if (!stage_mixed(up, wf, count, size, err))
    return false;
  struct todo *todo = afs_xcalloc((size_t)count, sizeof *todo);
  struct todo *copy = NULL;
  char src[AFS_OID_HEX] = "", alt[AFS_OID_HEX] = "";
  int k = 0, kc = 0;
  bool ok = true;
  restore(wf, rec, path, size);
  pthread_mutex_lock(&wf->mu);
  struct afs_mp *mp = afs_mp_for(&wf->mp, rec);
  while (mp->inflight > 0 && afs_monotonic_ms() < deadline_ms)
    afs_cond_timedwait_ms(&wf->cond, &wf->mu, 1000);
  if (mp->inflight > 0)
    ok = afs_error_set(err, EAGAIN, "streamed parts still in flight");
  /* First what S3 copies from the asset the file began as (base.h), then what is sent:
   * a part that cannot be copied after all goes with the others. */
  for (int n = 1; ok && wf->base && n <= count; n++) {
    struct afs_mp_part *p = afs_mp_part(mp, n);
    if (afs_mp_clean(mp, n, size) || !afs_base_copyable(wf->base, n, size))
      continue;
    p->inflight = true;
    mp->inflight++;
    if (!copy)
      copy = afs_xcalloc((size_t)count, sizeof *copy);
    copy[kc++] = (struct todo){n, p->gen};
    memcpy(src, wf->base->id, sizeof src);
    memcpy(alt, wf->base->next, sizeof alt);
  }
  pthread_mutex_unlock(&wf->mu);
  if (kc > 0 && !copy_parts(up, wf, rec, src, alt, size, copy, kc, deadline_ms, err) &&
      err->code != EAGAIN)
    ok = false;
  free(copy);
  pthread_mutex_lock(&wf->mu);
  mp = wf->mp;
  while (ok && mp->inflight > 0 && afs_monotonic_ms() < deadline_ms) /* a stream started one */
    afs_cond_timedwait_ms(&wf->cond, &wf->mu, 1000);
  if (ok && mp->inflight > 0)
    ok = afs_error_set(err, EAGAIN, "streamed parts still in flight");
  for (int n = 1; ok && n <= count; n++) {
    struct afs_mp_part *p = afs_mp_part(mp, n);
    if (afs_mp_clean(mp, n, size)) /* same bytes, and the length the part has now */
      continue;
    if (afs_base_absent(wf->base, n)) { /* never a hole sent as data */
      ok = afs_error_set(err, EIO, "part %d of the file is still bytes of asset %s, not staged", n,
                         wf->base->id);
      break;
    }
    p->inflight = true;
    mp->inflight++;
    todo[k++] = (struct todo){n, p->gen};
  }
  pthread_mutex_unlock(&wf->mu);
  int sent = k;
  /* In slices: the URLs of one are fresh when it is sent, and it is logged once done. */
  struct afs_put_job *jobs = afs_xcalloc(SLICE, sizeof *jobs);
  for (int i = 0; ok && i < k; i += SLICE) {
    int s = k - i < SLICE ? k - i : SLICE;
    ok = send_parts(up, wf, rec, path, size, todo + i, s, deadline_ms, jobs, err);
    pthread_mutex_lock(&wf->mu);
    for (int j = 0; j < s; j++) {
      struct afs_mp_part *p = afs_mp_part(wf->mp, todo[i + j].n);
      if (jobs[j].ok && !strcmp(wf->mp->rec, rec)) {
        memcpy(p->etag, jobs[j].etag, sizeof p->etag);
        p->sent_gen = todo[i + j].gen;
        p->sent_len = jobs[j].length;
        afs_mp_log_part(wf->staging_path, wf->mp, todo[i + j].n, jobs[j].length, jobs[j].etag);
      }
      p->inflight = false;
      wf->mp->inflight--;
      jobs[j].ok = false;
    }
    todo[i].n = -todo[i].n; /* this slice is settled */
    pthread_cond_broadcast(&wf->cond);
    pthread_mutex_unlock(&wf->mu);
  }
  /* Slices never sent give their parts back. */
  pthread_mutex_lock(&wf->mu);
  for (int i = 0; i < k; i += SLICE) {
    if (todo[i].n < 0)
      continue;
    int s = k - i < SLICE ? k - i : SLICE;
    for (int j = 0; j < s; j++) {
      afs_mp_part(wf->mp, todo[i + j].n)->inflight = false;
      wf->mp->inflight--;
    }
  }
  if (ok) {
    m->mp_etags = afs_xcalloc((size_t)count, sizeof *m->mp_etags);
    m->mp_n = count;
    for (int n = 1; n <= count && ok; n++) {
      memcpy(m->mp_etags[n - 1], wf->mp->part[n - 1].etag, sizeof m->mp_etags[0]);
      if (!m->mp_etags[n - 1][0])
        ok = afs_error_set(err, EIO, "part %d has no ETag", n);
    }
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  for (int j = 0; j < SLICE; j++)
    free((char *)jobs[j].url);
  free(jobs);
  free(todo);
  afs_debug("upload %s: %d part(s), %d sent at close, %d copied by S3, %d streamed before", rec,
            count, sent, kc, count - sent - kc);
  return ok;
}
