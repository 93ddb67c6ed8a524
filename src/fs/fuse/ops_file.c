/* The FUSE operations on files: create/open (staging or a reader on the asset), read,
 * write, flush/fsync/release (which start uploads), truncate, unlink, utimens. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/http_put.h"
#include "assetfs/log.h"
#include "assetfs/mime.h"
#include "fuse/ops_int.h"
#include "fuse/status.h"
#include "staging/base.h"
#include "staging/journal.h"
#include "staging/parts.h"
#include "staging/wfile.h"
#include "upload/upload.h"

static struct afs_fh *fh_new(struct afs_wfile *wf, bool writable) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = calloc(1, sizeof *h);
  h->wf = wf;
  h->writable = writable;
  if (wf)
    afs_wf_opened(wf, writable);
  pthread_mutex_lock(&fs->fh_mu);
  h->next = fs->fh_list;
  if (fs->fh_list)
    fs->fh_list->prev = h;
  fs->fh_list = h;
  pthread_mutex_unlock(&fs->fh_mu);
  return h;
}

static void fh_close(struct afs_fs *fs, struct afs_fh *h);

static void fh_unlist(struct afs_fs *fs, struct afs_fh *h) {
  pthread_mutex_lock(&fs->fh_mu);
  if (h->prev)
    h->prev->next = h->next;
  else if (fs->fh_list == h)
    fs->fh_list = h->next;
  if (h->next)
    h->next->prev = h->prev;
  h->prev = h->next = NULL;
  pthread_mutex_unlock(&fs->fh_mu);
}

/* A new staged file at p with its pending record (default mode); *out has a reference.
 * The record is created before anything is visible, so a failure leaves nothing half
 * made. from (may be NULL): the asset it begins as. A big one is the file's base
 * (staging/base.h), set before the journal names the file; any other is copied in by
 * the caller, which journals the file once it holds those bytes (a crash mid-copy must
 * not resume a cut-short copy as the new version). */
static int new_staged(struct afs_fs *fs, const struct afs_fpath *p, const struct afs_asset *from,
                      struct afs_wfile **out) {
  struct afs_error e = {0};
  struct afs_wfile *replaced = NULL;
  struct afs_wfile *wf =
      afs_staging_create(fs->st, p->partition, p->rel, afs_mime_from_path(p->rel), &replaced, &e);
  if (!wf)
    return afs_fs_errno(&e);
  if (from && afs_fs_may_base(fs, from) && !afs_base_attach(fs->st, wf, from->id, from->size, &e)) {
    afs_err("cannot open %s/%s to change it: %s", p->partition, p->rel, e.msg);
    afs_staging_remove(fs->st, wf);
    afs_staging_unref(fs->st, wf);
    afs_staging_unref(fs->st, replaced);
    return afs_fs_errno(&e);
  }
  /* Write-back: no database round trip on create; the upload worker makes the record
   * (the journal keeps the file meanwhile). */
  if (!fs->opt.writeback && !afs_upload_begin(fs->up, wf, &e)) {
    afs_warn("cannot create %s/%s: %s", p->partition, p->rel, e.msg);
    afs_staging_remove(fs->st, wf);
    afs_staging_unref(fs->st, wf);
    afs_staging_unref(fs->st, replaced);
    return afs_fs_errno(&e);
  }
  struct afs_error je = {0};
  if ((!from || wf->base) && !afs_staging_journal(fs->st, wf, false, &je))
    afs_warn("%s", je.msg); /* only resume after a crash needs it */
  if (replaced) {
    /* Overwritten before its upload finished: the old data will never be an asset
     * unless it already is one (then the broker supersedes it with the new upload). */
    pthread_mutex_lock(&replaced->mu);
    bool completed = replaced->state == AFS_W_COMPLETED;
    pthread_mutex_unlock(&replaced->mu);
    if (!completed)
      afs_upload_unlinked(fs->up, replaced, NULL);
    afs_staging_unref(fs->st, replaced);
  }
  afs_catalog_invalidate_path(fs->cat, p->partition, p->rel);
  *out = wf;
  return 0;
}

/* A big asset opened to change it: a staged file based on it (staging/base.h), none of
 * its bytes fetched yet. */
static int base_on_asset(struct afs_fs *fs, const struct afs_fpath *p, const struct afs_asset *a,
                         struct afs_wfile **out) {
  struct afs_wfile *wf = NULL;
  int rc = new_staged(fs, p, a, &wf);
  if (rc)
    return rc;
  pthread_mutex_lock(&wf->mu);
  wf->mtime_ms = a->mtime_ms;
  wf->contig = a->size; /* appended parts stream as they are written */
  pthread_mutex_unlock(&wf->mu);
  afs_debug("%s/%s: based on asset %s (%lld bytes), nothing fetched", p->partition, p->rel, a->id,
            (long long)a->size);
  *out = wf;
  return 0;
}

/* Copy-on-write: the asset's bytes into a new staged file (for O_RDWR, append, truncate
 * to a non-zero size); a big asset's only as they are needed. */
static int copy_asset_to_staging(struct afs_fs *fs, const struct afs_fpath *p,
                                 const struct afs_asset *a, struct afs_wfile **out) {
  if (afs_fs_may_base(fs, a))
    return base_on_asset(fs, p, a, out);
  struct afs_error e = {0};
  struct afs_reader *r = afs_reader_open_asset(fs->rc, fs->cat, a, &e);
  if (!r)
    return afs_fs_errno(&e);
  struct afs_wfile *wf = NULL;
  int rc = new_staged(fs, p, a, &wf);
  if (rc) {
    afs_reader_close(r);
    return rc;
  }
  size_t bufsz = 1 << 20;
  char *buf = malloc(bufsz);
  int64_t off = 0;
  for (;;) {
    ssize_t n = afs_reader_read(r, buf, bufsz, off, &e);
    if (n < 0) {
      rc = afs_fs_errno(&e);
      break;
    }
    if (n == 0)
      break;
    if (pwrite(wf->fd, buf, (size_t)n, off) != n) {
      rc = errno ? -errno : -ENOSPC;
      break;
    }
    off += n;
    afs_staging_account(fs->st, wf, off, true);
  }
  free(buf);
  afs_reader_close(r);
  if (rc) {
    afs_upload_unlinked(fs->up, wf, NULL);
    afs_staging_remove(fs->st, wf);
    afs_staging_unref(fs->st, wf);
    return rc;
  }
  pthread_mutex_lock(&wf->mu);
  wf->mtime_ms = a->mtime_ms;
  pthread_mutex_unlock(&wf->mu);
  struct afs_error je = {0};
  if (!afs_staging_journal(fs->st, wf, false, &je))
    afs_warn("%s", je.msg); /* only resume after a crash needs it */
  *out = wf;
  return 0;
}

int afs_op_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  (void)mode;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  struct afs_wfile *wf = NULL;
  if (fs->opt.ro)
    rc = -EROFS;
  else if (p.depth < 2)
    rc = -EPERM;
  else if (!(rc = afs_fs_check_name(&p)) && !(rc = new_staged(fs, &p, NULL, &wf))) {
    struct afs_fh *h = fh_new(wf, true);
    h->append = fi->flags & O_APPEND;
    fi->fh = (uintptr_t)h;
  }
  afs_fpath_free(&p);
  return rc;
}

int afs_op_open(const char *path, struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_error e = {0};
  bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
  bool trunc = writable && (fi->flags & O_TRUNC);
  int sp = afs_fs_status_path(path);
  if (sp) {
    if (sp != 2)
      return sp < 0 ? -ENOENT : -EISDIR;
    if (writable)
      return -EACCES;
    struct afs_fh *h = fh_new(NULL, false);
    h->text = afs_fs_status_text(fs);
    h->text_len = strlen(h->text);
    fi->fh = (uintptr_t)h;
    fi->direct_io = 1; /* its size changes with every read */
    return 0;
  }
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  if (p.depth < 2) {
    afs_fpath_free(&p);
    return -EISDIR;
  }
  if (writable && (fs->opt.ro || afs_fs_is_cuts_path(p.rel))) {
    afs_fpath_free(&p);
    return fs->opt.ro ? -EROFS : -EPERM;
  }
  struct afs_wfile *wf = NULL;
  struct afs_asset a;
  int k;
again:
  k = afs_fs_resolve(fs, &p, &wf, &a);
  if (k == AFS_NODE_STAGED) {
    /* Its version completed: changes to it send only what changed (staging/base.h). */
    if (writable && !trunc && fs->opt.multipart_threshold > 0 &&
        !afs_base_from_completed(fs->st, wf, fs->opt.multipart_threshold, &e))
      afs_warn("%s: %s", path, e.msg); /* then the next upload sends every part */
    if (trunc && afs_base_truncate(fs->st, wf, 0, &e)) {
      afs_staging_account(fs->st, wf, 0, false);
      afs_upload_wrote(fs->up, wf, 0, -1); /* parts first: see afs_upload_wrote */
      afs_wf_written(wf);
    }
  } else if (k == AFS_NODE_ASSET) {
    if (!writable) {
      struct afs_reader *r = afs_reader_open_asset(fs->rc, fs->cat, &a, &e);
      if (!r) {
        rc = afs_fs_errno(&e);
      } else {
        struct afs_fh *h = fh_new(NULL, false);
        h->reader = r;
        h->asset = a;
        fi->fh = (uintptr_t)h;
        /* An asset's bytes never change under its _id (a new version is a new asset),
         * so the page cache may outlive this open. A new version has another size or
         * mtime, and the kernel drops the pages when getattr shows it (main.c asks for
         * FUSE_CAP_AUTO_INVAL_DATA). */
        fi->keep_cache = 1;
        afs_fpath_free(&p);
        return 0;
      }
    } else if (trunc) {
      rc = new_staged(fs, &p, NULL, &wf);
    } else {
      rc = copy_asset_to_staging(fs, &p, &a, &wf);
    }
    afs_asset_free(&a);
  } else {
    rc = k < 0 ? k : k == AFS_NODE_DIR ? -EISDIR : -ENOENT;
  }
  if (!rc && wf) {
    struct afs_fh *h = fh_new(wf, writable);
    if (k == AFS_NODE_STAGED && !afs_staging_in_table(fs->st, wf)) {
      /* The staged copy was dropped (its asset completed and shown) between the lookup
       * and the handle: open the asset instead, never a copy nobody will upload. */
      fh_unlist(fs, h);
      fh_close(fs, h);
      wf = NULL;
      goto again;
    }
    h->append = fi->flags & O_APPEND;
    fi->fh = (uintptr_t)h;
  } else if (wf) {
    afs_staging_unref(fs->st, wf);
  }
  afs_fpath_free(&p);
  return rc;
}

int afs_op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  struct afs_fh *h = afs_fh_of(fi);
  struct afs_error e = {0};
  if (!h)
    return -EBADF;
  if (h->text) {
    if ((size_t)off >= h->text_len)
      return 0;
    size_t n = h->text_len - (size_t)off < size ? h->text_len - (size_t)off : size;
    memcpy(buf, h->text + off, n);
    return (int)n;
  }
  if (h->wf && h->wf->base) {
    ssize_t n = afs_base_pread(afs_fs_ctx()->st, h->wf, buf, size, off, &e);
    return n < 0 ? afs_fs_errno(&e) : (int)n;
  }
  if (h->wf) {
    ssize_t n = pread(h->wf->fd, buf, size, off);
    return n < 0 ? -errno : (int)n;
  }
  ssize_t n = afs_reader_read(h->reader, buf, size, off, &e);
  return n < 0 ? afs_fs_errno(&e) : (int)n;
}

/* Room in cache_max for wf to reach `end` bytes. Past the bound, waits (on the staging
 * table's room condition, woken when bytes leave staging) for uploads to drain, asking
 * the uploader to look for completions at once, then AFS_E_CACHE_FULL (ENOSPC): the
 * caller learns at write() that the data did not fit, instead of losing it later. */
static int reserve(struct afs_fs *fs, struct afs_wfile *wf, int64_t end) {
  pthread_mutex_lock(&wf->mu);
  int64_t grow = end - wf->acct_size;
  pthread_mutex_unlock(&wf->mu);
  if (grow <= 0 || afs_staging_bytes(fs->st) + grow <= fs->opt.cache_max)
    return 0;
  double wait_s = fs->opt.close_timeout < 10 ? fs->opt.close_timeout : 10;
  int64_t deadline = afs_monotonic_ms() + (int64_t)(wait_s * 1000);
  for (;;) {
    afs_upload_need_room(fs->up);
    long left = (long)(deadline - afs_monotonic_ms());
    if (left > 0 && afs_staging_wait_room(fs->st, grow, fs->opt.cache_max, left < 200 ? left : 200))
      return 0;
    if (left <= 0) {
      afs_err("cache_dir holds %lld bytes not yet uploaded (cache_max %lld): write "
              "refused with ENOSPC",
              (long long)afs_staging_bytes(fs->st), (long long)fs->opt.cache_max);
      return -AFS_E_CACHE_FULL;
    }
  }
}

/* The largest file a write or truncate may make: S3's object limit when big files go
 * up in parts, its single-PUT limit otherwise. */
static int64_t max_file_size(const struct afs_fs *fs) {
  return fs->opt.multipart_threshold > 0 ? AFS_MP_MAX_FILE : AFS_PUT_MAX_SIZE;
}

int afs_op_write(const char *path, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi) {
  (void)path;
  struct afs_fh *h = afs_fh_of(fi);
  if (!h || !h->wf || !h->writable)
    return -EBADF;
  if (h->append) {
    struct stat s;
    if (fstat(h->wf->fd, &s) == 0)
      off = s.st_size;
  }
  if ((int64_t)off + (int64_t)size > max_file_size(afs_fs_ctx())) {
    afs_err("write past %s refused (EFBIG): %s",
            afs_fs_ctx()->opt.multipart_threshold ? "5 TiB" : "5 GiB",
            afs_fs_ctx()->opt.multipart_threshold ? "S3 keeps at most 5 TiB in one object"
                                                  : "S3 takes at most 5 GiB in one PUT "
                                                    "(multipart_threshold=0)");
    return -AFS_E_TOO_BIG;
  }
  int rc = reserve(afs_fs_ctx(), h->wf, (int64_t)off + (int64_t)size);
  if (rc)
    return rc;
  struct afs_error e = {0};
  if (h->wf->base && (!afs_base_fill(afs_fs_ctx()->st, h->wf, off, (int64_t)size, &e) ||
                      !afs_base_wrote(afs_fs_ctx()->st, h->wf, off, (int64_t)size, &e)))
    return afs_fs_errno(&e);
  ssize_t n = pwrite(h->wf->fd, buf, size, off);
  if (n < 0) {
    if (errno == ENOSPC || errno == EDQUOT)
      afs_err("cache_dir is full (%s): write refused; free space there or lower cache_max",
              strerror(errno));
    return -errno;
  }
  afs_staging_account(afs_fs_ctx()->st, h->wf, (int64_t)off + n, true);
  afs_upload_wrote(afs_fs_ctx()->up, h->wf, (int64_t)off, (int64_t)n);
  afs_wf_written(h->wf);
  return (int)n;
}

static int upload_now(struct afs_fs *fs, struct afs_fh *h) {
  struct afs_error e = {0};
  if (!h || !h->wf || !h->writable)
    return 0;
  if (afs_upload_flush(fs->up, h->wf, &e))
    return 0;
  afs_err("upload failed: %s", e.msg);
  return afs_fs_errno(&e);
}

/* Write-back close: the staged bytes and the journal on disk, so that a crash from here
 * on loses nothing (the next mount of the session uploads it). */
static int make_durable(struct afs_fs *fs, struct afs_wfile *wf) {
  struct afs_error e = {0};
  if (afs_staging_journal(fs->st, wf, true, &e))
    return 0;
  afs_err("%s", e.msg);
  return afs_fs_errno(&e);
}

int afs_op_flush(const char *path, struct fuse_file_info *fi) {
  (void)path;
  struct afs_fh *h = afs_fh_of(fi);
  if (!h || !h->wf || !h->writable)
    return 0;
  /* Shells open a file, dup it onto stdout and close the original before writing; that
   * close flushes a file nothing was written to yet. Such a file (also `touch`) is
   * uploaded at release instead, in the background. */
  pthread_mutex_lock(&h->wf->mu);
  bool untouched = h->wf->generation == 0 && h->wf->state == AFS_W_WRITING;
  bool dirty = h->wf->dirty;
  pthread_mutex_unlock(&h->wf->mu);
  if (untouched)
    return 0;
  struct afs_fs *fs = afs_fs_ctx();
  if (fs->opt.writeback)
    return dirty ? make_durable(fs, h->wf) : 0;
  return upload_now(fs, h);
}

int afs_op_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path;
  (void)datasync;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (fs->opt.writeback && h && h->wf && h->writable) {
    int rc = make_durable(fs, h->wf);
    if (rc)
      return rc;
  }
  return upload_now(fs, h);
}

static void fh_close(struct afs_fs *fs, struct afs_fh *h) {
  if (h->wf) {
    struct afs_wfile *wf = h->wf;
    struct afs_wf_closing c;
    afs_wf_closed(wf, h->writable, &c);
    /* Closed without flush (NFS export, a dup'd fd), or write-back: upload in background.
     * Write-back makes no record here: an upload worker makes the records of every file
     * queued meanwhile in one insert (RELEASE runs on a FUSE thread, and FUSE threads
     * stuck on a busy database stall every other operation of the mount). */
    if (c.queue)
      afs_upload_queue(fs->up, wf);
    if (c.drop)
      afs_staging_drop_if_idle(fs->st, wf, c.id);
    afs_staging_unref(fs->st, wf);
  }
  if (h->reader) {
    afs_reader_close(h->reader);
    afs_asset_free(&h->asset);
  }
  free(h->text);
  free(h);
}

int afs_op_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (!h)
    return 0;
  fh_unlist(fs, h);
  fh_close(fs, h);
  return 0;
}

void afs_fs_release_all(struct afs_fs *fs) {
  for (;;) {
    pthread_mutex_lock(&fs->fh_mu);
    struct afs_fh *h = fs->fh_list;
    pthread_mutex_unlock(&fs->fh_mu);
    if (!h)
      return;
    fh_unlist(fs, h);
    fh_close(fs, h);
  }
}

int afs_op_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (fs->opt.ro)
    return -EROFS;
  if (size > max_file_size(fs))
    return -AFS_E_TOO_BIG;
  if (h && h->wf) {
    int rc = reserve(fs, h->wf, size);
    if (rc)
      return rc;
    struct afs_error e = {0};
    if (!afs_base_truncate(fs->st, h->wf, size, &e))
      return afs_fs_errno(&e);
    afs_staging_account(fs->st, h->wf, size, false);
    afs_upload_wrote(fs->up, h->wf, size, -1);
    afs_wf_written(h->wf);
    return 0;
  }
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  struct afs_wfile *wf = NULL;
  struct afs_asset a;
  int k = p.depth < 2 ? AFS_NODE_DIR : afs_fs_resolve(fs, &p, &wf, &a);
  if (k == AFS_NODE_ASSET) {
    rc = size == 0 ? new_staged(fs, &p, NULL, &wf) : copy_asset_to_staging(fs, &p, &a, &wf);
    afs_asset_free(&a);
  } else if (k != AFS_NODE_STAGED) {
    rc = k < 0 ? k : k == AFS_NODE_DIR ? -EISDIR : -ENOENT;
  }
  struct afs_error e = {0};
  if (!rc) {
    if (!afs_base_truncate(fs->st, wf, size, &e)) {
      rc = afs_fs_errno(&e);
    } else {
      afs_staging_account(fs->st, wf, size, false);
      afs_upload_wrote(fs->up, wf, size, -1);
      afs_wf_written(wf);
      pthread_mutex_lock(&wf->mu);
      bool closed = wf->writers == 0;
      pthread_mutex_unlock(&wf->mu);
      if (closed)
        afs_upload_queue(fs->up, wf);
    }
  }
  afs_staging_unref(fs->st, wf);
  afs_fpath_free(&p);
  return rc;
}

int afs_op_unlink(const char *path) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_error e = {0};
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  if (fs->opt.ro) {
    afs_fpath_free(&p);
    return -EROFS;
  }
  if (p.depth < 2 || afs_fs_is_cuts_path(p.rel)) {
    afs_fpath_free(&p);
    return p.depth < 2 ? -EISDIR : -EPERM;
  }
  bool found = false;
  struct afs_wfile *wf = afs_staging_get(fs->st, p.partition, p.rel);
  if (wf) {
    found = true;
    afs_staging_remove(fs->st, wf);
    if (!afs_upload_unlinked(fs->up, wf, &e))
      rc = afs_fs_errno(&e); /* removed, but the user learns the database did not hear it */
    afs_staging_unref(fs->st, wf);
  }
  /* Older completed assets at the same path go too: whether wf's own (completed
   * meanwhile) or older ones, all that are active there (a completion in progress has
   * two: the new version and the one it is about to supersede). */
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  int k = afs_catalog_lookup(fs->cat, p.partition, p.rel, &a, &e);
  if (k == AFS_CAT_FILE) {
    found = true;
    afs_asset_free(&a);
  }
  if (found && !afs_asset_delete_at(fs->up, p.partition, p.rel, NULL, &e)) {
    rc = afs_fs_errno(&e);
  } else if (k == AFS_CAT_DIR && !found) {
    rc = -EISDIR;
  } else if (k < 0 && !found) {
    rc = afs_fs_errno(&e);
  }
  if (!found && !rc)
    rc = -ENOENT;
  afs_catalog_invalidate_path(fs->cat, p.partition, p.rel);
  afs_fpath_free(&p);
  return rc;
}

int afs_op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_error e = {0};
  if (fs->opt.ro)
    return -EROFS;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct timespec m = tv ? tv[1] : now;
  if (m.tv_nsec == UTIME_OMIT)
    return 0;
  if (m.tv_nsec == UTIME_NOW)
    m = now;
  int64_t ms = (int64_t)m.tv_sec * 1000 + m.tv_nsec / 1000000;
  struct afs_fh *h = afs_fh_of(fi);
  struct afs_wfile *wf = h && h->wf ? h->wf : NULL;
  struct afs_fpath p;
  memset(&p, 0, sizeof p);
  int rc = 0;
  struct afs_asset a;
  int k = AFS_NODE_NONE;
  if (wf) {
    afs_staging_ref(fs->st, wf);
    k = AFS_NODE_STAGED;
  } else {
    if ((rc = afs_fpath_parse(path, &p)))
      return rc;
    k = p.depth < 2 ? AFS_NODE_DIR : afs_fs_resolve(fs, &p, &wf, &a);
  }
  if (k == AFS_NODE_STAGED) {
    struct timespec ts[2] = {{0, UTIME_OMIT}, m};
    futimens(wf->fd, ts);
    pthread_mutex_lock(&wf->mu);
    wf->mtime_ms = ms;
    bool completed = wf->state == AFS_W_COMPLETED;
    char id[AFS_OID_HEX];
    memcpy(id, wf->id, sizeof id);
    pthread_mutex_unlock(&wf->mu);
    if (completed && !afs_asset_set_mtime(fs->up, id, ms, &e))
      rc = afs_fs_errno(&e);
    else if (!completed && !afs_staging_journal(fs->st, wf, false, &e))
      afs_warn("%s", e.msg);
    afs_staging_unref(fs->st, wf);
  } else if (k == AFS_NODE_ASSET) {
    if (!afs_asset_set_mtime(fs->up, a.id, ms, &e))
      rc = afs_fs_errno(&e);
    afs_catalog_invalidate_path(fs->cat, p.partition, p.rel);
    afs_asset_free(&a);
  } else if (k != AFS_NODE_DIR) {
    rc = k < 0 ? k : -ENOENT;
  }
  afs_fpath_free(&p);
  return rc;
}
