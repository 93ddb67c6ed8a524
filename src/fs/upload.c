#include "assetfs/upload.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/http_put.h"
#include "assetfs/image.h"
#include "assetfs/log.h"
#include "assetfs/naming.h"
#include "assetfs/video.h"

/* Statuses of CosyncAssetUpload (DESIGN.md §2). */
#define ST_PENDING "pending"
#define ST_INITIALIZED "initialized"
#define ST_UPLOADED "uploaded"
#define ST_COMPLETED "completed"
#define ST_ERROR "error"

struct afs_uploader {
  struct afs_fs *fs;
  pthread_t worker;
  bool worker_started;
  pthread_mutex_t mu; /* protects stop, orphans, running, wake; leaf lock (never held with
                       * st->mu or a wf->mu) */
  pthread_cond_t cond;
  bool stop;
  bool wake;
  int running;               /* pipelines running now (flushes and the worker's) */
  struct afs_wfile **orphans;/* unlinked/replaced files whose asset must go once completed */
  size_t n_orphans, cap_orphans;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- MongoDB helpers */

struct dbh {
  mongoc_client_t *client;
  mongoc_collection_t *coll;
  struct afs_db *db;
};

static void dbh_open(struct afs_uploader *up, struct dbh *h, const char *coll) {
  h->db = &up->fs->db;
  h->client = afs_db_pop(h->db);
  h->coll = afs_db_coll(h->db, h->client, coll);
}

static void dbh_close(struct dbh *h) {
  mongoc_collection_destroy(h->coll);
  afs_db_push(h->db, h->client);
}

static bool oid_from_hex(const char *hex, bson_oid_t *oid) {
  if (!bson_oid_is_valid(hex, strlen(hex)))
    return false;
  bson_oid_init_from_string(oid, hex);
  return true;
}

/* update_one on coll; *matched (may be NULL) gets the matched count. */
static bool update_one(struct afs_uploader *up, const char *coll, const bson_t *filter,
                       const bson_t *update, int64_t *matched, struct afs_error *err) {
  struct dbh h;
  bson_t reply;
  bson_error_t berr;
  dbh_open(up, &h, coll);
  bool ok = mongoc_collection_update_one(h.coll, filter, update, NULL, &reply, &berr);
  if (ok && matched) {
    bson_iter_t it;
    *matched = bson_iter_init_find(&it, &reply, "matchedCount") ? bson_iter_as_int64(&it) : 0;
  }
  bson_destroy(&reply);
  dbh_close(&h);
  if (!ok)
    return afs_db_error(err, &berr, coll);
  return true;
}

bool afs_upload_begin(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  struct afs_fs_options *o = &up->fs->opt;
  bson_oid_t oid;
  bson_oid_init(&oid, NULL);
  int64_t t = now_ms();
  char *partition, *file_path;
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
  bson_t *doc = BCON_NEW("_id", BCON_OID(&oid), "_partition", BCON_UTF8(o->upload_partition),
                         "uid", BCON_UTF8(o->uid), "sessionId", BCON_UTF8(o->session_id),
                         "extra", BCON_UTF8(""), "assetPartition", BCON_UTF8(partition),
                         "filePath", BCON_UTF8(file_path), "contentType",
                         BCON_UTF8(wf->content_type), "expirationHours",
                         BCON_DOUBLE(o->expiration_hours), "status", BCON_UTF8(ST_PENDING),
                         "createdAt", BCON_DATE_TIME(t), "updatedAt", BCON_DATE_TIME(t));
  struct dbh h;
  bson_error_t berr;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  bool ok = mongoc_collection_insert_one(h.coll, doc, NULL, NULL, &berr);
  dbh_close(&h);
  bson_destroy(doc);
  free(partition);
  free(file_path);
  if (!ok)
    return afs_db_error(err, &berr, "cannot create the upload record");
  pthread_mutex_lock(&wf->mu);
  bson_oid_to_string(&oid, wf->id);
  wf->record_used = false;
  pthread_mutex_unlock(&wf->mu);
  return true;
}

/* Deletes the upload record if nobody uploaded to it yet. *gone: true if deleted (or it
 * did not exist). */
static bool delete_unused_record(struct afs_uploader *up, const char *id, bool *gone,
                                 struct afs_error *err) {
  bson_oid_t oid;
  *gone = true;
  if (!oid_from_hex(id, &oid))
    return true;
  bson_t *filter = BCON_NEW("_id", BCON_OID(&oid), "status", "{", "$in", "[",
                            BCON_UTF8(ST_PENDING), BCON_UTF8(ST_INITIALIZED),
                            BCON_UTF8(ST_ERROR), "]", "}");
  struct dbh h;
  bson_t reply;
  bson_error_t berr;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  bool ok = mongoc_collection_delete_one(h.coll, filter, NULL, &reply, &berr);
  if (ok) {
    bson_iter_t it;
    *gone = bson_iter_init_find(&it, &reply, "deletedCount") && bson_iter_as_int64(&it) > 0;
    if (!*gone) {
      /* Not deletable: either it does not exist (fine) or it is past pending. */
      bson_t *f2 = BCON_NEW("_id", BCON_OID(&oid));
      int64_t n = mongoc_collection_count_documents(h.coll, f2, NULL, NULL, NULL, &berr);
      *gone = n == 0;
      bson_destroy(f2);
    }
  }
  bson_destroy(&reply);
  dbh_close(&h);
  bson_destroy(filter);
  if (!ok)
    return afs_db_error(err, &berr, "cannot delete the upload record");
  return true;
}

enum part_urls { U_ORIG, U_SMALL, U_MEDIUM, U_LARGE, U_PREVIEW, U_COUNT };
static const char *const g_write_fields[U_COUNT] = {"writeUrl", "writeUrlSmall",
                                                     "writeUrlMedium", "writeUrlLarge",
                                                     "writeUrlVideoPreview"};

struct record_state {
  char status[32];
  char error[400];
  char *write_url[U_COUNT];
  bool exists;
};

static void record_state_free(struct record_state *rs) {
  for (int i = 0; i < U_COUNT; i++)
    free(rs->write_url[i]);
  memset(rs, 0, sizeof *rs);
}

static void read_record_state(const bson_t *doc, struct record_state *rs) {
  bson_iter_t it;
  rs->exists = true;
  if (bson_iter_init_find(&it, doc, "status") && BSON_ITER_HOLDS_UTF8(&it))
    snprintf(rs->status, sizeof rs->status, "%s", bson_iter_utf8(&it, NULL));
  if (bson_iter_init_find(&it, doc, "error") && BSON_ITER_HOLDS_UTF8(&it))
    snprintf(rs->error, sizeof rs->error, "%s", bson_iter_utf8(&it, NULL));
  for (int i = 0; i < U_COUNT; i++)
    if (bson_iter_init_find(&it, doc, g_write_fields[i]) && BSON_ITER_HOLDS_UTF8(&it) &&
        bson_iter_utf8(&it, NULL)[0])
      rs->write_url[i] = strdup(bson_iter_utf8(&it, NULL));
}

static bool fetch_record(struct afs_uploader *up, const char *id, struct record_state *rs,
                         struct afs_error *err) {
  bson_oid_t oid;
  memset(rs, 0, sizeof *rs);
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad record id %s", id);
  bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
  bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
  struct dbh h;
  bson_error_t berr;
  const bson_t *doc;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h.coll, filter, opts, NULL);
  if (mongoc_cursor_next(cur, &doc))
    read_record_state(doc, rs);
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  dbh_close(&h);
  bson_destroy(filter);
  bson_destroy(opts);
  if (!ok)
    return afs_db_error(err, &berr, "cannot read the upload record");
  return true;
}

/* Polls until the broker signed the record (adaptive interval: FerretDB has no change
 * streams). ETIMEDOUT past deadline_ms (monotonic); ESTALE when the record is gone or
 * already used (caller makes a new one); EPROTO when the broker refused it. */
static bool stopping(struct afs_uploader *up) {
  pthread_mutex_lock(&up->mu);
  bool s = up->stop;
  pthread_mutex_unlock(&up->mu);
  return s;
}

static bool wait_initialized(struct afs_uploader *up, const char *id, int64_t deadline_ms,
                             struct record_state *rs, struct afs_error *err) {
  long interval_ms = 5;
  for (;;) {
    if (stopping(up))
      return afs_error_set(err, ECANCELED, "unmounting");
    if (!fetch_record(up, id, rs, err)) {
      if (afs_monotonic_ms() >= deadline_ms)
        return false;
    } else if (!rs->exists) {
      return afs_error_set(err, ESTALE, "the upload record %s disappeared", id);
    } else if (!strcmp(rs->status, ST_INITIALIZED)) {
      if (rs->write_url[U_ORIG])
        return true;
      record_state_free(rs);
      return afs_error_set(err, EPROTO, "the broker initialized %s without a writeUrl", id);
    } else if (!strcmp(rs->status, ST_ERROR)) {
      afs_error_set(err, EPROTO, "the broker refused the upload: %s",
                    rs->error[0] ? rs->error : "(no reason given)");
      record_state_free(rs);
      return false;
    } else if (strcmp(rs->status, ST_PENDING) != 0) {
      afs_error_set(err, ESTALE, "the upload record %s is already %s", id, rs->status);
      record_state_free(rs);
      return false;
    } else {
      record_state_free(rs);
    }
    if (afs_monotonic_ms() + interval_ms >= deadline_ms)
      return afs_error_set(err, ETIMEDOUT,
                           "the broker did not sign upload %s in time (is assetfs-broker "
                           "running?)", id);
    usleep((useconds_t)interval_ms * 1000);
    interval_ms = interval_ms * 3 / 2 + 1;
    if (interval_ms > 250)
      interval_ms = 250;
  }
}

/* ---------------------------------------------------------------- the pipeline */

struct meta {
  int64_t size;
  int x_res, y_res;
  char color[8];
  double duration;
  bool has_dims, has_duration;
  char *part_file[U_COUNT]; /* local files of cuts/preview (owned; deleted after) */
  const char *part_type[U_COUNT];
};

static void meta_cleanup(struct meta *m) {
  for (int i = 0; i < U_COUNT; i++) {
    if (i != U_ORIG && m->part_file[i])
      unlink(m->part_file[i]);
    free(m->part_file[i]);
  }
}

static char *sibling(const char *staging, const char *tag, const char *ext) {
  char *p;
  if (asprintf(&p, "%s.%s%s", staging, tag, ext) < 0)
    abort();
  return p;
}

/* Metadata and derived parts. Failures to cut are warnings: the original still goes up
 * (the broker only presigns what it expects; a cut that cannot be made is left out). */
static void make_parts(const char *staging, const char *content_type, struct meta *m) {
  static const int sizes[3] = {AFS_CUT_SMALL, AFS_CUT_MEDIUM, AFS_CUT_LARGE};
  static const char *const tags[3] = {"small", "medium", "large"};
  enum afs_kind kind = afs_content_kind(content_type);
  struct afs_error e = {0};
  const char *dot = strrchr(staging, '.');
  const char *slash = strrchr(staging, '/');
  const char *ext = dot && (!slash || dot > slash) ? dot : "";
  const char *cut_src = NULL, *cut_ext = ext, *cut_type = content_type;
  if (kind == AFS_KIND_IMAGE) {
    struct afs_image_info ii;
    if (afs_image_probe(staging, &ii, &e)) {
      m->x_res = ii.width;
      m->y_res = ii.height;
      memcpy(m->color, ii.color, sizeof m->color);
      m->has_dims = true;
      cut_src = staging;
    } else {
      afs_warn("%s: no image metadata or cuts: %s", staging, e.msg);
    }
  } else if (kind == AFS_KIND_VIDEO) {
    struct afs_video_info vi;
    char *png = sibling(staging, "preview", ".png");
    if (afs_video_probe_preview(staging, &vi, png, &e)) {
      m->x_res = vi.width;
      m->y_res = vi.height;
      m->duration = vi.duration;
      m->has_dims = m->has_duration = true;
      m->part_file[U_PREVIEW] = png;
      m->part_type[U_PREVIEW] = "image/png";
      cut_src = png;
      cut_ext = ".png";
      cut_type = "image/png";
    } else {
      afs_warn("%s: uploaded without preview: %s", staging, e.msg);
      free(png);
    }
  }
  for (int i = 0; cut_src && i < 3; i++) {
    char *dst = sibling(staging, tags[i], cut_ext);
    afs_error_clear(&e);
    if (afs_image_cut(cut_src, dst, sizes[i], NULL, NULL, &e)) {
      m->part_file[U_SMALL + i] = dst;
      m->part_type[U_SMALL + i] = cut_type;
    } else {
      afs_warn("%s: no %s cut: %s", staging, tags[i], e.msg);
      unlink(dst);
      free(dst);
    }
  }
  afs_image_thread_done();
}

static bool set_uploaded(struct afs_uploader *up, const char *id, const struct meta *m,
                         const char *caption, int64_t mtime, struct afs_error *err) {
  bson_oid_t oid;
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad record id");
  /* Filter on _id alone: FerretDB (the test stack's MongoDB) serves only a bare _id
   * filter from its primary key and scans the collection for anything more, which made
   * this update cost hundreds of ms. The status guard is kept by the caller: the record
   * was just read as "initialized", and only this mount moves it on from there (the
   * broker waits for "uploaded"; its janitor only touches records a day old). */
  bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
  bson_t update = BSON_INITIALIZER, set;
  BSON_APPEND_DOCUMENT_BEGIN(&update, "$set", &set);
  BSON_APPEND_UTF8(&set, "status", ST_UPLOADED);
  BSON_APPEND_INT64(&set, "size", m->size);
  if (m->has_dims) {
    BSON_APPEND_INT32(&set, "xRes", m->x_res);
    BSON_APPEND_INT32(&set, "yRes", m->y_res);
  }
  if (m->color[0])
    BSON_APPEND_UTF8(&set, "color", m->color);
  if (m->has_duration)
    BSON_APPEND_DOUBLE(&set, "duration", m->duration);
  if (caption)
    BSON_APPEND_UTF8(&set, "caption", caption);
  if (mtime)
    BSON_APPEND_DATE_TIME(&set, "mtime", mtime);
  BSON_APPEND_DATE_TIME(&set, "updatedAt", now_ms());
  bson_append_document_end(&update, &set);
  int64_t matched = 0;
  bool ok = update_one(up, AFS_COLL_UPLOAD, filter, &update, &matched, err);
  bson_destroy(filter);
  bson_destroy(&update);
  if (ok && matched == 0)
    return afs_error_set(err, ESTALE, "upload record %s changed while uploading", id);
  return ok;
}

static void running_add(struct afs_uploader *up, int d) {
  pthread_mutex_lock(&up->mu);
  up->running += d;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

static void add_orphan(struct afs_uploader *up, struct afs_wfile *wf) {
  afs_staging_ref(up->fs->st, wf);
  pthread_mutex_lock(&up->mu);
  if (up->n_orphans == up->cap_orphans) {
    up->cap_orphans = up->cap_orphans ? up->cap_orphans * 2 : 16;
    up->orphans = realloc(up->orphans, up->cap_orphans * sizeof *up->orphans);
  }
  up->orphans[up->n_orphans++] = wf;
  up->wake = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

/* Transient failures are retried in the background; these are not. */
static bool is_permanent(int code) {
  return code == EFBIG || code == EPROTO || code == EACCES || code == EINVAL;
}

/* One upload of wf's current data. deadline_ms bounds the waits (monotonic). Returns
 * true when "uploaded" is set (or nothing needed uploading). */
static bool run_pipeline(struct afs_uploader *up, struct afs_wfile *wf, int64_t deadline_ms,
                         struct afs_error *err) {
  struct meta m;
  struct record_state rs;
  char id[25], content_type[128], *caption = NULL;
  int64_t mtime;
  bool ok = false, need_record;
  memset(&m, 0, sizeof m);
  memset(&rs, 0, sizeof rs);

  pthread_mutex_lock(&wf->mu);
  while (wf->busy) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&wf->cond, &wf->mu, &ts);
    if (afs_monotonic_ms() >= deadline_ms && wf->busy) {
      pthread_mutex_unlock(&wf->mu);
      return afs_error_set(err, ETIMEDOUT, "an earlier upload of this file is still running");
    }
  }
  bool needed = !wf->unlinked && (wf->dirty || wf->state == AFS_W_RETRYING ||
                                  wf->state == AFS_W_WRITING);
  if (!needed) {
    bool failed = wf->state == AFS_W_FAILED && !wf->unlinked;
    if (failed)
      *err = wf->last_err;
    pthread_mutex_unlock(&wf->mu);
    return !failed;
  }
  wf->busy = true;
  wf->dirty = false;
  wf->state = AFS_W_UPLOADING;
  need_record = !wf->id[0] || wf->record_used;
  memcpy(content_type, wf->content_type, sizeof content_type);
  caption = wf->caption ? strdup(wf->caption) : NULL;
  mtime = wf->mtime_ms;
  const char *staging = wf->staging_path;
  struct stat sst;
  bool have_stat = fstat(wf->fd, &sst) == 0;
  pthread_mutex_unlock(&wf->mu);
  running_add(up, 1);

  if (!have_stat) {
    afs_error_set(err, EIO, "cannot stat the staging file: %s", strerror(errno));
    goto done;
  }
  m.size = sst.st_size;
  if (m.size > AFS_PUT_MAX_SIZE) {
    afs_err("upload %s: %lld bytes is over the 5 GiB single-PUT limit of S3; not uploaded "
            "(multipart uploads are not supported yet)", staging, (long long)m.size);
    afs_error_set(err, EFBIG, "file larger than 5 GiB");
    goto done;
  }
  if (need_record && !afs_upload_begin(up, wf, err))
    goto done;
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, sizeof id);
  pthread_mutex_unlock(&wf->mu);

  int64_t t0 = afs_monotonic_ms();
  make_parts(staging, content_type, &m);
  int64_t t1 = afs_monotonic_ms();
  if (!wait_initialized(up, id, deadline_ms, &rs, err)) {
    if (err->code == ESTALE) {
      pthread_mutex_lock(&wf->mu);
      wf->record_used = true; /* the next attempt starts from a new record */
      pthread_mutex_unlock(&wf->mu);
    }
    goto done;
  }
  int64_t t15 = afs_monotonic_ms();
  struct afs_put_job jobs[U_COUNT];
  int n = 0;
  memset(jobs, 0, sizeof jobs);
  static const char *const names[U_COUNT] = {"original", "small", "medium", "large",
                                             "preview"};
  for (int i = 0; i < U_COUNT; i++) {
    const char *file = i == U_ORIG ? staging : m.part_file[i];
    if (!rs.write_url[i] || !file)
      continue;
    jobs[n++] = (struct afs_put_job){.url = rs.write_url[i], .path = file,
                                     .content_type = i == U_ORIG ? content_type
                                                                 : m.part_type[i],
                                     .what = names[i]};
  }
  struct afs_put_opts po;
  afs_put_opts_default(&po);
  po.deadline_ms = deadline_ms;
  if (!afs_http_put_all(jobs, n, &po, err)) {
    if (err->code == EKEYEXPIRED) {
      pthread_mutex_lock(&wf->mu);
      wf->record_used = true;
      pthread_mutex_unlock(&wf->mu);
    }
    goto done;
  }
  int64_t t2 = afs_monotonic_ms();
  if (!set_uploaded(up, id, &m, caption, mtime, err)) {
    if (err->code == ESTALE) {
      pthread_mutex_lock(&wf->mu);
      wf->record_used = true;
      pthread_mutex_unlock(&wf->mu);
    }
    goto done;
  }
  afs_debug("upload %s: parts %lld ms, broker %lld ms, PUT %lld ms, record %lld ms", id,
            (long long)(t1 - t0), (long long)(t15 - t1), (long long)(t2 - t15),
            (long long)(afs_monotonic_ms() - t2));
  ok = true;
done:
  meta_cleanup(&m);
  record_state_free(&rs);
  free(caption);
  pthread_mutex_lock(&wf->mu);
  wf->busy = false;
  bool orphan = false;
  if (ok) {
    wf->record_used = true;
    wf->state = wf->dirty ? AFS_W_WRITING : AFS_W_UPLOADED;
    wf->uploaded_ms = afs_monotonic_ms();
    wf->attempts = 0;
    afs_error_clear(&wf->last_err);
    orphan = wf->unlinked;
  } else {
    wf->last_err = *err;
    wf->attempts++;
    if (is_permanent(err->code)) {
      wf->state = AFS_W_FAILED;
    } else {
      wf->state = AFS_W_RETRYING;
      long backoff = 1000L << (wf->attempts < 6 ? wf->attempts : 6);
      wf->next_try_ms = afs_monotonic_ms() + backoff;
    }
  }
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  if (orphan)
    add_orphan(up, wf);
  running_add(up, -1);
  pthread_mutex_lock(&up->mu);
  up->wake = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
  if (!ok)
    afs_warn("upload of %s failed: %s%s", wf->staging_path, err->msg,
             is_permanent(err->code) ? "" : " (will retry)");
  return ok;
}

bool afs_upload_flush(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  int64_t deadline = afs_monotonic_ms() + (int64_t)(up->fs->opt.close_timeout * 1000);
  return run_pipeline(up, wf, deadline, err);
}

void afs_upload_queue(struct afs_uploader *up, struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  if (wf->dirty && wf->state == AFS_W_WRITING) {
    wf->state = AFS_W_RETRYING;
    wf->next_try_ms = 0;
  }
  pthread_mutex_unlock(&wf->mu);
  pthread_mutex_lock(&up->mu);
  up->wake = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
}

/* ---------------------------------------------------------------- namespace records */

static bool set_field_by_id(struct afs_uploader *up, const char *coll, const char *id,
                            const bson_t *set, int64_t *matched, struct afs_error *err) {
  bson_oid_t oid;
  if (!oid_from_hex(id, &oid))
    return afs_error_set(err, EINVAL, "bad asset id %s", id);
  bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
  bson_t update = BSON_INITIALIZER;
  BSON_APPEND_DOCUMENT(&update, "$set", set);
  bool ok = update_one(up, coll, filter, &update, matched, err);
  bson_destroy(filter);
  bson_destroy(&update);
  return ok;
}

bool afs_asset_set_file_path(struct afs_uploader *up, const char *id, const char *file_path,
                             struct afs_error *err) {
  bson_t *set = BCON_NEW("filePath", BCON_UTF8(file_path), "updatedAt",
                         BCON_DATE_TIME(now_ms()));
  bool ok = set_field_by_id(up, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

bool afs_asset_mark_deleted(struct afs_uploader *up, const char *id, struct afs_error *err) {
  bson_t *set = BCON_NEW("status", BCON_UTF8("deleted"), "updatedAt", BCON_DATE_TIME(now_ms()));
  bool ok = set_field_by_id(up, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

bool afs_asset_set_mtime(struct afs_uploader *up, const char *id, int64_t mtime_ms,
                         struct afs_error *err) {
  bson_t *set = BCON_NEW("mtime", BCON_DATE_TIME(mtime_ms), "updatedAt",
                         BCON_DATE_TIME(now_ms()));
  bool ok = set_field_by_id(up, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  return ok;
}

bool afs_upload_renamed(struct afs_uploader *up, struct afs_wfile *wf, struct afs_error *err) {
  char id[25], *file_path;
  enum afs_wstate state;
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, sizeof id);
  state = wf->state;
  pthread_mutex_unlock(&wf->mu);
  if (!id[0])
    return true;
  char *partition;
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
  free(partition);
  bson_t *set = BCON_NEW("filePath", BCON_UTF8(file_path), "updatedAt",
                         BCON_DATE_TIME(now_ms()));
  bool ok = set_field_by_id(up, AFS_COLL_UPLOAD, id, set, NULL, err);
  /* The broker may have created the asset from the old filePath meanwhile; the worker
   * checks again when it sees the completion. */
  if (ok && (state == AFS_W_UPLOADED || state == AFS_W_COMPLETED))
    ok = set_field_by_id(up, AFS_COLL_ASSET, id, set, NULL, err);
  bson_destroy(set);
  free(file_path);
  return ok;
}

static char *regex_quote(const char *s) {
  size_t n = strlen(s);
  char *out = malloc(2 * n + 1), *w = out;
  for (const char *p = s; *p; p++) {
    if (strchr("\\^$.|?*+()[]{}", *p))
      *w++ = '\\';
    *w++ = *p;
  }
  *w = '\0';
  return out;
}

int afs_asset_rename_dir(struct afs_uploader *up, const char *partition, const char *from_dir,
                         const char *to_dir, struct afs_error *err) {
  char *q = regex_quote(from_dir), *re;
  if (asprintf(&re, "^%s/", q) < 0)
    abort();
  free(q);
  bson_t *filter = BCON_NEW("_partition", BCON_UTF8(partition), "status", BCON_UTF8("active"),
                            "filePath", "{", "$regex", BCON_UTF8(re), "}");
  bson_t *opts = BCON_NEW("projection", "{", "filePath", BCON_INT32(1), "}");
  struct dbh h;
  bson_error_t berr;
  const bson_t *doc;
  int n = 0;
  size_t cap = 0, cnt = 0;
  struct item {
    char id[25];
    char *fp;
  } *items = NULL;
  dbh_open(up, &h, AFS_COLL_ASSET);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h.coll, filter, opts, NULL);
  while (mongoc_cursor_next(cur, &doc)) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it))
      continue;
    if (cnt == cap)
      items = realloc(items, (cap = cap ? cap * 2 : 64) * sizeof *items);
    bson_oid_to_string(bson_iter_oid(&it), items[cnt].id);
    bson_iter_init_find(&it, doc, "filePath");
    if (asprintf(&items[cnt].fp, "%s/%s", to_dir, bson_iter_utf8(&it, NULL) + strlen(from_dir) + 1) < 0)
      abort();
    cnt++;
  }
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  dbh_close(&h);
  bson_destroy(filter);
  bson_destroy(opts);
  free(re);
  if (!ok)
    afs_db_error(err, &berr, "cannot list the directory's assets");
  for (size_t i = 0; i < cnt; i++) {
    if (ok && afs_asset_set_file_path(up, items[i].id, items[i].fp, err))
      n++;
    else
      ok = false;
    free(items[i].fp);
  }
  free(items);
  return ok ? n : -1;
}

void afs_upload_unlinked(struct afs_uploader *up, struct afs_wfile *wf) {
  struct afs_error err = {0};
  char id[25];
  pthread_mutex_lock(&wf->mu);
  wf->unlinked = true;
  memcpy(id, wf->id, sizeof id);
  enum afs_wstate state = wf->state;
  bool busy = wf->busy;
  pthread_mutex_unlock(&wf->mu);
  if (!id[0] || busy)
    return; /* a running pipeline sees `unlinked` when it ends */
  if (state == AFS_W_COMPLETED) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    return;
  }
  bool gone = true;
  if (state != AFS_W_UPLOADED && !delete_unused_record(up, id, &gone, &err))
    afs_warn("cannot drop upload record %s: %s", id, err.msg);
  if (state == AFS_W_UPLOADED || !gone)
    add_orphan(up, wf); /* the asset is (about to be) created: delete it when it is */
}

int afs_upload_busy_count(struct afs_uploader *up) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->fs->st, &all), busy = 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    enum afs_wstate s = all[i]->state;
    bool pending_upload = s == AFS_W_UPLOADING || s == AFS_W_RETRYING ||
                          (s == AFS_W_WRITING && all[i]->handles == 0 && all[i]->dirty);
    pthread_mutex_unlock(&all[i]->mu);
    busy += pending_upload;
    afs_staging_unref(up->fs->st, all[i]);
  }
  free(all);
  pthread_mutex_lock(&up->mu);
  busy += up->running;
  pthread_mutex_unlock(&up->mu);
  return busy;
}

/* ---------------------------------------------------------------- the worker */

/* Statuses of the given upload ids: out[i] is "" when not found. One find by _id per
 * record: FerretDB answers those from its primary key, while an $in over _id (or any
 * other filter) scans the collection, which costs far more once it holds thousands of
 * records. */
static bool batch_status(struct afs_uploader *up, char (*ids)[25], int n, char (*out)[32]) {
  bson_t *opts = BCON_NEW("projection", "{", "status", BCON_INT32(1), "}", "limit",
                          BCON_INT64(1));
  struct dbh h;
  bson_error_t berr;
  bool ok = true;
  dbh_open(up, &h, AFS_COLL_UPLOAD);
  for (int i = 0; i < n && ok; i++) {
    bson_oid_t oid;
    const bson_t *doc;
    out[i][0] = '\0';
    if (!oid_from_hex(ids[i], &oid))
      continue;
    bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(h.coll, filter, opts, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
      bson_iter_t it;
      snprintf(out[i], sizeof out[i], "%s",
               bson_iter_init_find(&it, doc, "status") && BSON_ITER_HOLDS_UTF8(&it)
                   ? bson_iter_utf8(&it, NULL)
                   : "?");
    }
    if (mongoc_cursor_error(cur, &berr)) {
      afs_debug("polling upload records: %s", berr.message);
      ok = false;
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
  }
  dbh_close(&h);
  bson_destroy(opts);
  return ok;
}

static void on_completed(struct afs_uploader *up, struct afs_wfile *wf) {
  struct afs_error err = {0};
  char id[25];
  char *partition = NULL, *file_path = NULL;
  pthread_mutex_lock(&wf->mu);
  wf->state = AFS_W_COMPLETED;
  memcpy(id, wf->id, sizeof id);
  int64_t mtime = wf->mtime_ms;
  bool unlinked = wf->unlinked;
  int handles = wf->handles;
  pthread_cond_broadcast(&wf->cond);
  pthread_mutex_unlock(&wf->mu);
  if (unlinked) {
    if (!afs_asset_mark_deleted(up, id, &err))
      afs_warn("cannot mark asset %s deleted: %s", id, err.msg);
    return;
  }
  /* A rename may have raced with the broker copying filePath: write the current one. */
  afs_staging_ref(up->fs->st, wf);
  afs_staging_names(up->fs->st, wf, &partition, &file_path);
  if (!afs_asset_set_file_path(up, id, file_path, &err))
    afs_warn("cannot update filePath of %s: %s", id, err.msg);
  if (mtime && !afs_asset_set_mtime(up, id, mtime, &err))
    afs_warn("cannot set mtime of %s: %s", id, err.msg);
  if (up->fs->cat)
    afs_catalog_invalidate_path(up->fs->cat, partition, file_path);
  afs_debug("%s/%s completed as asset %s", partition, file_path, id);
  /* Staging is only a cache from now on; an open handle keeps it until released. */
  if (handles == 0)
    afs_staging_remove(up->fs->st, wf);
  afs_staging_unref(up->fs->st, wf);
  free(partition);
  free(file_path);
}

/* One pass: completions, errors and retries. Returns true if something is in flight
 * (poll again soon). */
static bool worker_pass(struct afs_uploader *up) {
  struct afs_wfile **all;
  int n = afs_staging_snapshot(up->fs->st, &all);
  /* orphans join the poll */
  pthread_mutex_lock(&up->mu);
  size_t no = up->n_orphans;
  struct afs_wfile **orphans = up->orphans;
  up->orphans = NULL;
  up->n_orphans = up->cap_orphans = 0;
  pthread_mutex_unlock(&up->mu);
  int total = n + (int)no;
  all = realloc(all, (total ? total : 1) * sizeof *all);
  for (size_t i = 0; i < no; i++)
    all[n + i] = orphans[i];
  free(orphans);

  char(*ids)[25] = calloc(total ? total : 1, sizeof *ids);
  char(*status)[32] = calloc(total ? total : 1, sizeof *status);
  int *idx = calloc(total ? total : 1, sizeof *idx);
  int polled = 0;
  bool active = false;
  int64_t now = afs_monotonic_ms();
  for (int i = 0; i < total; i++) {
    struct afs_wfile *wf = all[i];
    pthread_mutex_lock(&wf->mu);
    enum afs_wstate s = wf->state;
    bool busy = wf->busy;
    bool retry_due = !busy && !wf->unlinked &&
                     ((s == AFS_W_RETRYING && now >= wf->next_try_ms) ||
                      (s == AFS_W_WRITING && wf->dirty && wf->handles == 0));
    if ((s == AFS_W_UPLOADED || (i >= n && s != AFS_W_COMPLETED)) && wf->id[0] && !busy) {
      memcpy(ids[polled], wf->id, sizeof ids[polled]);
      idx[polled++] = i;
    }
    pthread_mutex_unlock(&wf->mu);
    active |= s == AFS_W_UPLOADED || s == AFS_W_UPLOADING || busy;
    if (retry_due && !stopping(up)) {
      struct afs_error err = {0};
      afs_info("retrying the upload of %s", wf->staging_path);
      if (run_pipeline(up, wf, afs_monotonic_ms() + 120000, &err))
        afs_info("upload of %s succeeded on retry", wf->staging_path);
      active = true;
    }
  }
  if (polled > 0 && batch_status(up, ids, polled, status)) {
    for (int k = 0; k < polled; k++) {
      struct afs_wfile *wf = all[idx[k]];
      if (!strcmp(status[k], ST_COMPLETED)) {
        on_completed(up, wf);
      } else if (!strcmp(status[k], ST_ERROR)) {
        pthread_mutex_lock(&wf->mu);
        wf->state = AFS_W_FAILED;
        afs_error_set(&wf->last_err, EPROTO, "the broker rejected the upload");
        pthread_mutex_unlock(&wf->mu);
        afs_warn("the broker rejected the upload of %s (record %s)", wf->staging_path, ids[k]);
      } else if (idx[k] >= n && !status[k][0]) {
        /* An orphan whose record vanished: nothing left to delete. */
        pthread_mutex_lock(&wf->mu);
        wf->state = AFS_W_COMPLETED;
        pthread_mutex_unlock(&wf->mu);
      } else if (idx[k] >= n) {
        add_orphan(up, wf); /* keep watching */
      }
    }
  } else {
    for (int k = 0; k < polled; k++)
      if (idx[k] >= n)
        add_orphan(up, all[idx[k]]);
  }
  for (int i = 0; i < total; i++)
    afs_staging_unref(up->fs->st, all[i]);
  free(all);
  free(ids);
  free(status);
  free(idx);
  return active || polled > 0;
}

static void *worker_main(void *arg) {
  struct afs_uploader *up = arg;
  long interval_ms = 20;
  for (;;) {
    pthread_mutex_lock(&up->mu);
    bool stop = up->stop;
    pthread_mutex_unlock(&up->mu);
    if (stop)
      break;
    bool active = worker_pass(up);
    interval_ms = active ? (interval_ms < 200 ? interval_ms + 20 : 200) : 1000;
    pthread_mutex_lock(&up->mu);
    if (!up->wake && !up->stop) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += interval_ms * 1000000L;
      ts.tv_sec += ts.tv_nsec / 1000000000L;
      ts.tv_nsec %= 1000000000L;
      pthread_cond_timedwait(&up->cond, &up->mu, &ts);
    }
    if (up->wake)
      interval_ms = 20;
    up->wake = false;
    pthread_mutex_unlock(&up->mu);
  }
  afs_image_thread_done();
  return NULL;
}

struct afs_uploader *afs_uploader_new(struct afs_fs *fs, struct afs_error *err) {
  struct afs_uploader *up = calloc(1, sizeof *up);
  up->fs = fs;
  pthread_mutex_init(&up->mu, NULL);
  pthread_cond_init(&up->cond, NULL);
  if (pthread_create(&up->worker, NULL, worker_main, up) != 0) {
    afs_error_set(err, EAGAIN, "cannot start the upload worker");
    free(up);
    return NULL;
  }
  up->worker_started = true;
  return up;
}

void afs_uploader_free(struct afs_uploader *up, double timeout_s) {
  if (!up)
    return;
  int64_t deadline = afs_monotonic_ms() + (int64_t)(timeout_s * 1000);
  int busy;
  while ((busy = afs_upload_busy_count(up)) > 0 && afs_monotonic_ms() < deadline)
    usleep(50000);
  if (busy > 0)
    afs_warn("unmounting with %d upload(s) not finished; their data stays in %s", busy,
             afs_staging_dir(up->fs->st));
  pthread_mutex_lock(&up->mu);
  up->stop = true;
  pthread_cond_broadcast(&up->cond);
  pthread_mutex_unlock(&up->mu);
  if (up->worker_started)
    pthread_join(up->worker, NULL);
  for (size_t i = 0; i < up->n_orphans; i++)
    afs_staging_unref(up->fs->st, up->orphans[i]);
  free(up->orphans);
  pthread_mutex_destroy(&up->mu);
  pthread_cond_destroy(&up->cond);
  free(up);
}
