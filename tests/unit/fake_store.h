/* An in-memory record store for the uploader's unit tests (header-only): the slots of
 * src/fs/upload/store.h over two small tables (upload records, assets), plus a fake
 * broker the test drives: a pending record is signed at its first read when auto_sign is
 * on (write URL: put_base + "/" + id), fake_complete() makes its asset.
 *
 * Faults: fail[op] makes the next that many calls of op fail (EIO, the database's
 * trouble); delay_ms[op] holds each call; on_insert runs after an insert succeeded but
 * before the caller sees the ids (a race with an unlink). calls[op] counts calls.
 * Thread-safe: the uploader calls it from its workers and poller at once.
 */
#ifndef AFS_FAKE_STORE_H
#define AFS_FAKE_STORE_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/cosync.h"

#include "upload/store.h"

enum fake_op {
  F_INSERT,
  F_DELETE_UNUSED,
  F_ABANDON,
  F_FETCH,
  F_BATCH_STATUS,
  F_SCAN,
  F_SET_UPLOADED,
  F_SET_FILE_PATH,
  F_ASSET_ACTIVE,
  F_ASSET_DELETED,
  F_ASSET_DELETE_AT,
  F_ASSET_MTIME,
  F_ASSET_RENAME_DIR,
  F_OPS
};

#define FAKE_MAX 256

struct fake_rec {
  char id[AFS_OID_HEX], partition[128], file_path[256], content_type[128], status[32];
  bool abandoned;
  int64_t size, mtime_ms;
};

struct fake_asset {
  char id[AFS_OID_HEX], partition[128], file_path[256], status[16];
  int64_t mtime_ms;
};

struct fake_store {
  pthread_mutex_t mu;
  struct fake_rec recs[FAKE_MAX];
  int n_recs;
  struct fake_asset assets[FAKE_MAX];
  int n_assets;
  char put_base[128];
  bool auto_sign;
  bool old_broker; /* completes abandoned uploads as active assets (a broker before the
                    * `abandoned` mark): the mount must delete them itself */
  int fail[F_OPS];
  int delay_ms[F_OPS];
  int calls[F_OPS];
  void (*on_insert)(void *ctx);
  void *on_insert_ctx;
  unsigned counter;
};

/* Enters op: counts, delays, and says whether this call fails (with *err set). */
static inline bool fake_enter(struct fake_store *f, enum fake_op op, struct afs_error *err) {
  pthread_mutex_lock(&f->mu);
  f->calls[op]++;
  int delay = f->delay_ms[op];
  bool fail = f->fail[op] > 0;
  if (fail)
    f->fail[op]--;
  pthread_mutex_unlock(&f->mu);
  if (delay)
    usleep((useconds_t)delay * 1000);
  if (fail && err)
    afs_error_set(err, EIO, "fake store: injected failure");
  return !fail;
}

/* With f->mu held. */
static inline struct fake_rec *fake_rec_locked(struct fake_store *f, const char *id) {
  for (int i = 0; i < f->n_recs; i++)
    if (!strcmp(f->recs[i].id, id))
      return &f->recs[i];
  return NULL;
}

static inline struct fake_asset *fake_asset_locked(struct fake_store *f, const char *id) {
  for (int i = 0; i < f->n_assets; i++)
    if (!strcmp(f->assets[i].id, id))
      return &f->assets[i];
  return NULL;
}

static inline void fake_copy(char *dst, size_t n, const char *src) {
  snprintf(dst, n, "%s", src ? src : "");
}

static bool fake_insert_pending(void *ctx, const struct afs_pending_rec *recs, int n,
                                char (*ids)[AFS_OID_HEX], struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_INSERT, err))
    return false;
  pthread_mutex_lock(&f->mu);
  if (f->n_recs + n > FAKE_MAX) {
    pthread_mutex_unlock(&f->mu);
    return afs_error_set(err, ENOSPC, "fake store full");
  }
  for (int i = 0; i < n; i++) {
    struct fake_rec *r = &f->recs[f->n_recs++];
    memset(r, 0, sizeof *r);
    /* An ObjectId whose time part is now (the uploader reads a record's age from it). */
    snprintf(r->id, sizeof r->id, "%08x%016x", (unsigned)time(NULL), ++f->counter);
    fake_copy(r->partition, sizeof r->partition, recs[i].partition);
    fake_copy(r->file_path, sizeof r->file_path, recs[i].file_path);
    fake_copy(r->content_type, sizeof r->content_type, recs[i].content_type);
    fake_copy(r->status, sizeof r->status, "pending");
    memcpy(ids[i], r->id, 25);
  }
  void (*hook)(void *) = f->on_insert;
  void *hook_ctx = f->on_insert_ctx;
  f->on_insert = NULL;
  pthread_mutex_unlock(&f->mu);
  if (hook)
    hook(hook_ctx);
  return true;
}

static bool fake_delete_unused(void *ctx, const char *id, bool *gone, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_DELETE_UNUSED, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  *gone = !r;
  if (r && (!strcmp(r->status, "pending") || !strcmp(r->status, "initialized") ||
            !strcmp(r->status, "error"))) {
    *r = f->recs[--f->n_recs];
    *gone = true;
  }
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_abandon(void *ctx, const char *id, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_ABANDON, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  if (r)
    r->abandoned = true;
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_fetch(void *ctx, const char *id, struct record_state *rs, struct afs_error *err) {
  struct fake_store *f = ctx;
  memset(rs, 0, sizeof *rs);
  if (!fake_enter(f, F_FETCH, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  if (r) {
    if (f->auto_sign && !strcmp(r->status, "pending"))
      fake_copy(r->status, sizeof r->status, "initialized");
    rs->exists = true;
    rs->status = afs_upload_status_of(r->status);
    if (!strcmp(r->status, "initialized")) {
      char url[256];
      snprintf(url, sizeof url, "%s/%s", f->put_base, r->id);
      rs->write_url[AFS_PART_ORIGINAL] = strdup(url);
    }
  }
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_batch_status(void *ctx, char (*ids)[AFS_OID_HEX], int n,
                              enum afs_upload_status *out) {
  struct fake_store *f = ctx;
  bool ok = fake_enter(f, F_BATCH_STATUS, NULL);
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < n; i++) {
    struct fake_rec *r = ok ? fake_rec_locked(f, ids[i]) : NULL;
    out[i] = r ? afs_upload_status_of(r->status) : AFS_US_NONE;
  }
  pthread_mutex_unlock(&f->mu);
  return ok;
}

static bool fake_session_scan(void *ctx, const char *status, void (*fn)(void *, const char *),
                              void *fctx, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_SCAN, err))
    return false;
  pthread_mutex_lock(&f->mu);
  int n = 0;
  char ids[FAKE_MAX][AFS_OID_HEX];
  for (int i = 0; i < f->n_recs; i++)
    if (!strcmp(f->recs[i].status, status))
      memcpy(ids[n++], f->recs[i].id, 25);
  pthread_mutex_unlock(&f->mu);
  for (int i = 0; i < n; i++)
    fn(fctx, ids[i]);
  return true;
}

static bool fake_set_uploaded(void *ctx, const char *id, const struct meta *m, const char *caption,
                              int64_t mtime_ms, struct afs_error *err) {
  (void)caption;
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_SET_UPLOADED, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  if (r) {
    fake_copy(r->status, sizeof r->status, "uploaded");
    r->size = m->size;
    r->mtime_ms = mtime_ms;
  }
  pthread_mutex_unlock(&f->mu);
  if (!r)
    return afs_error_set(err, AFS_E_RECORD_GONE, "upload record %s changed while uploading", id);
  return true;
}

static bool fake_set_file_path(void *ctx, const char *id, const char *file_path, bool upload,
                               bool asset, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_SET_FILE_PATH, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = upload ? fake_rec_locked(f, id) : NULL;
  struct fake_asset *a = asset ? fake_asset_locked(f, id) : NULL;
  if (r)
    fake_copy(r->file_path, sizeof r->file_path, file_path);
  if (a)
    fake_copy(a->file_path, sizeof a->file_path, file_path);
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_asset_active(void *ctx, const char *id, bool *active, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_ASSET_ACTIVE, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_asset *a = fake_asset_locked(f, id);
  *active = a && !strcmp(a->status, "active");
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_asset_mark_deleted(void *ctx, const char *id, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_ASSET_DELETED, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_asset *a = fake_asset_locked(f, id);
  if (a)
    fake_copy(a->status, sizeof a->status, "deleted");
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_asset_delete_at(void *ctx, const char *partition, const char *file_path,
                                 const char *keep_id, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_ASSET_DELETE_AT, err))
    return false;
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < f->n_assets; i++) {
    struct fake_asset *a = &f->assets[i];
    if (!strcmp(a->partition, partition) && !strcmp(a->file_path, file_path) &&
        !strcmp(a->status, "active") && !(keep_id && !strcmp(a->id, keep_id)))
      fake_copy(a->status, sizeof a->status, "deleted");
  }
  pthread_mutex_unlock(&f->mu);
  return true;
}

static bool fake_asset_set_mtime(void *ctx, const char *id, int64_t mtime_ms,
                                 struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_ASSET_MTIME, err))
    return false;
  pthread_mutex_lock(&f->mu);
  struct fake_asset *a = fake_asset_locked(f, id);
  if (a)
    a->mtime_ms = mtime_ms;
  pthread_mutex_unlock(&f->mu);
  return true;
}

static int fake_asset_rename_dir(void *ctx, const char *partition, const char *from_dir,
                                 const char *to_dir, struct afs_error *err) {
  struct fake_store *f = ctx;
  if (!fake_enter(f, F_ASSET_RENAME_DIR, err))
    return -1;
  size_t fl = strlen(from_dir);
  int n = 0;
  pthread_mutex_lock(&f->mu);
  for (int i = 0; i < f->n_assets; i++) {
    struct fake_asset *a = &f->assets[i];
    if (!strcmp(a->partition, partition) && !strcmp(a->status, "active") &&
        !strncmp(a->file_path, from_dir, fl) && a->file_path[fl] == '/') {
      char moved[256];
      snprintf(moved, sizeof moved, "%s/%s", to_dir, a->file_path + fl + 1);
      fake_copy(a->file_path, sizeof a->file_path, moved);
      n++;
    }
  }
  pthread_mutex_unlock(&f->mu);
  return n;
}

static const struct afs_upload_store_ops fake_store_ops = {
    .insert_pending = fake_insert_pending,
    .delete_unused = fake_delete_unused,
    .abandon = fake_abandon,
    .fetch = fake_fetch,
    .batch_status = fake_batch_status,
    .session_scan = fake_session_scan,
    .set_uploaded = fake_set_uploaded,
    .set_file_path = fake_set_file_path,
    .asset_active = fake_asset_active,
    .asset_mark_deleted = fake_asset_mark_deleted,
    .asset_delete_at = fake_asset_delete_at,
    .asset_set_mtime = fake_asset_set_mtime,
    .asset_rename_dir = fake_asset_rename_dir,
};

static inline void fake_init(struct fake_store *f, const char *put_base) {
  memset(f, 0, sizeof *f);
  pthread_mutex_init(&f->mu, NULL);
  fake_copy(f->put_base, sizeof f->put_base, put_base);
  f->auto_sign = true;
}

/* The fake broker completes upload id (it must be `uploaded`): the record becomes
 * `completed` and an active asset with the same _id appears at its path, unless the
 * upload was abandoned (then no active asset: the broker's rule; old_broker ignores the
 * mark). Returns false if the
 * record was not `uploaded`. */
static inline bool fake_complete(struct fake_store *f, const char *id) {
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  bool ok = r && !strcmp(r->status, "uploaded") && f->n_assets < FAKE_MAX;
  if (ok) {
    fake_copy(r->status, sizeof r->status, "completed");
    struct fake_asset *a = &f->assets[f->n_assets++];
    memset(a, 0, sizeof *a);
    memcpy(a->id, r->id, 25);
    fake_copy(a->partition, sizeof a->partition, r->partition);
    fake_copy(a->file_path, sizeof a->file_path, r->file_path);
    fake_copy(a->status, sizeof a->status, r->abandoned && !f->old_broker ? "deleted" : "active");
    a->mtime_ms = r->mtime_ms;
  }
  pthread_mutex_unlock(&f->mu);
  return ok;
}

/* A copy of record id (false if none). */
static inline bool fake_get(struct fake_store *f, const char *id, struct fake_rec *out) {
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  if (r)
    *out = *r;
  pthread_mutex_unlock(&f->mu);
  return r != NULL;
}

static inline bool fake_get_asset(struct fake_store *f, const char *id, struct fake_asset *out) {
  pthread_mutex_lock(&f->mu);
  struct fake_asset *a = fake_asset_locked(f, id);
  if (a)
    *out = *a;
  pthread_mutex_unlock(&f->mu);
  return a != NULL;
}

static inline void fake_set_status(struct fake_store *f, const char *id, const char *status) {
  pthread_mutex_lock(&f->mu);
  struct fake_rec *r = fake_rec_locked(f, id);
  if (r)
    fake_copy(r->status, sizeof r->status, status);
  pthread_mutex_unlock(&f->mu);
}

static inline int fake_calls(struct fake_store *f, enum fake_op op) {
  pthread_mutex_lock(&f->mu);
  int n = f->calls[op];
  pthread_mutex_unlock(&f->mu);
  return n;
}

static inline void fake_fail(struct fake_store *f, enum fake_op op, int n) {
  pthread_mutex_lock(&f->mu);
  f->fail[op] = n;
  pthread_mutex_unlock(&f->mu);
}

#endif
