/* The FUSE operations: a thin layer that resolves paths to (partition, filePath), asks
 * staging (files written here, not completed yet) before the catalog (CosyncAsset),
 * and maps errors to negative errno in one place (afs_fs_errno). Rename is in
 * ops_rename.c, xattrs in xattr.c, mount/init/unmount in main.c. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "assetfs/fs.h"
#include "assetfs/http_put.h"
#include "assetfs/log.h"
#include "assetfs/mime.h"
#include "assetfs/naming.h"
#include "assetfs/upload.h"
#include "ops_int.h"

int afs_fs_errno(const struct afs_error *e) {
  /* Codes that mean "the service failed" (timeouts, S3 refusals, broker errors) are
   * EIO: that is what cp, rsync and editors report sensibly. */
  switch (e->code) {
  case ENOENT: case EEXIST: case ENOTDIR: case EISDIR: case ENOTEMPTY: case EINVAL:
  case ENAMETOOLONG: case EFBIG: case ENOSPC: case EROFS: case EPERM: case EXDEV:
  case ESTALE: case ENODATA: case ERANGE: case ENOTSUP: case E2BIG: case EBADF:
  case ENOMEM: case EDQUOT: case EBUSY:
    return -e->code;
  default:
    return -EIO;
  }
}

void afs_fpath_free(struct afs_fpath *p) {
  free(p->partition);
  free(p->buf);
  memset(p, 0, sizeof *p);
}

int afs_fpath_parse(const char *path, struct afs_fpath *p) {
  memset(p, 0, sizeof *p);
  if (!path)
    return -ENOENT;
  while (*path == '/')
    path++;
  if (!*path)
    return 0;
  p->buf = strdup(path);
  char *slash = strchr(p->buf, '/');
  if (slash)
    *slash = '\0';
  p->rel = slash ? slash + 1 : "";
  p->partition = afs_partition_from_dirname(p->buf);
  if (!p->partition || !*p->partition) {
    afs_fpath_free(p);
    return -ENOENT;
  }
  p->depth = slash ? 2 : 1;
  return 0;
}

bool afs_fs_is_cuts_path(const char *rel) {
  return !strncmp(rel, ".cuts", 5) && (rel[5] == '\0' || rel[5] == '/');
}

static void fill_dir_stat(struct afs_fs *fs, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_mode = S_IFDIR | (fs->opt.ro ? 0555 : 0755);
  st->st_nlink = 2;
  st->st_uid = fs->owner;
  st->st_gid = fs->group;
  st->st_mtime = st->st_ctime = st->st_atime = time(NULL);
}

static void fill_asset_stat(struct afs_fs *fs, const struct afs_asset *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_mode = S_IFREG | (fs->opt.ro ? 0444 : 0644);
  st->st_nlink = 1;
  st->st_uid = fs->owner;
  st->st_gid = fs->group;
  st->st_size = a->size > 0 ? a->size : 0;
  st->st_blksize = 1 << 20;
  st->st_blocks = (st->st_size + 511) / 512;
  st->st_mtim.tv_sec = a->mtime_ms / 1000;
  st->st_mtim.tv_nsec = (a->mtime_ms % 1000) * 1000000;
  st->st_atim = st->st_mtim;
  st->st_ctim.tv_sec = (a->created_ms ? a->created_ms : a->mtime_ms) / 1000;
}

static void fill_wf_stat(struct afs_fs *fs, struct afs_wfile *wf, struct stat *st) {
  struct stat s;
  if (!afs_staging_stat(wf, &s))
    memset(&s, 0, sizeof s);
  memset(st, 0, sizeof *st);
  st->st_mode = S_IFREG | (fs->opt.ro ? 0444 : 0644);
  st->st_nlink = 1;
  st->st_uid = fs->owner;
  st->st_gid = fs->group;
  st->st_size = s.st_size;
  st->st_blksize = 1 << 20;
  st->st_blocks = s.st_blocks;
  st->st_mtim = s.st_mtim;
  st->st_atim = s.st_atim;
  st->st_ctim = s.st_ctim;
}

/* Does the partition directory exist? */
static bool partition_exists(struct afs_fs *fs, const char *partition) {
  if (!strcmp(partition, fs->opt.upload_partition) ||
      afs_staging_is_dir(fs->st, partition, ""))
    return true;
  struct afs_error e = {0};
  return afs_catalog_lookup(fs->cat, partition, "", NULL, &e) == AFS_CAT_DIR;
}

int afs_fs_resolve(struct afs_fs *fs, const struct afs_fpath *p, struct afs_wfile **wf,
                   struct afs_asset *a) {
  struct afs_error e = {0};
  if (wf && (*wf = afs_staging_get(fs->st, p->partition, p->rel)))
    return 'f';
  if (afs_staging_is_dir(fs->st, p->partition, p->rel))
    return 'd';
  struct afs_asset tmp;
  memset(&tmp, 0, sizeof tmp);
  int k = afs_catalog_lookup(fs->cat, p->partition, p->rel, &tmp, &e);
  if (k < 0)
    return afs_fs_errno(&e);
  if (k == AFS_CAT_FILE) {
    if (a)
      *a = tmp;
    else
      afs_asset_free(&tmp);
    return 'a';
  }
  return k == AFS_CAT_DIR ? 'd' : 0;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (h && h->dirpath)
    path = h->dirpath;
  else if (h) {
    if (h->wf)
      fill_wf_stat(fs, h->wf, st);
    else
      fill_asset_stat(fs, &h->asset, st);
    return 0;
  }
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  if (p.depth == 0) {
    fill_dir_stat(fs, st);
  } else if (p.depth == 1) {
    if (partition_exists(fs, p.partition))
      fill_dir_stat(fs, st);
    else
      rc = -ENOENT;
  } else {
    struct afs_wfile *wf = NULL;
    struct afs_asset a;
    int k = afs_fs_resolve(fs, &p, &wf, &a);
    if (k == 'f') {
      fill_wf_stat(fs, wf, st);
      afs_staging_unref(fs->st, wf);
    } else if (k == 'a') {
      fill_asset_stat(fs, &a, st);
      afs_asset_free(&a);
    } else if (k == 'd') {
      fill_dir_stat(fs, st);
    } else {
      rc = k < 0 ? k : -ENOENT;
    }
  }
  afs_fpath_free(&p);
  return rc;
}

/* ---------------------------------------------------------------- directories */

struct names {
  char **v;
  size_t n, cap;
};

static void names_add(struct names *ns, const char *name) {
  if (ns->n == ns->cap)
    ns->v = realloc(ns->v, (ns->cap = ns->cap ? ns->cap * 2 : 64) * sizeof *ns->v);
  ns->v[ns->n++] = strdup(name);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_partition_cb(void *ctx, const char *partition) {
  char *d = afs_partition_to_dirname(partition);
  names_add(ctx, d);
  free(d);
  return 0;
}

static int add_list_cb(void *ctx, const char *name, const struct afs_asset *a) {
  (void)a;
  names_add(ctx, name);
  return 0;
}

static void add_staging_cb(void *ctx, const char *name, bool is_dir) {
  (void)is_dir;
  names_add(ctx, name);
}

static void add_staging_partition_cb(void *ctx, const char *partition, bool is_dir) {
  (void)is_dir;
  add_partition_cb(ctx, partition);
}

static int op_opendir(const char *path, struct fuse_file_info *fi) {
  struct afs_fh *h = calloc(1, sizeof *h);
  h->dirpath = strdup(path);
  fi->fh = (uintptr_t)h;
  return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi) {
  (void)path;
  struct afs_fh *h = afs_fh_of(fi);
  if (h) {
    free(h->dirpath);
    free(h);
  }
  return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)off;
  (void)flags;
  struct afs_fh *dh = afs_fh_of(fi);
  if (dh && dh->dirpath)
    path = dh->dirpath;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_error e = {0};
  struct names ns = {0};
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  if (p.depth == 0) {
    if (!afs_catalog_partitions(fs->cat, add_partition_cb, &ns, &e))
      afs_warn("listing partitions: %s", e.msg);
    add_partition_cb(&ns, fs->opt.upload_partition);
    afs_staging_list(fs->st, NULL, NULL, add_staging_partition_cb, &ns);
  } else {
    bool listed = afs_catalog_list(fs->cat, p.partition, p.rel, add_list_cb, &ns, &e);
    afs_staging_list(fs->st, p.partition, p.rel, add_staging_cb, &ns);
    if (!listed && ns.n == 0 && !afs_staging_is_dir(fs->st, p.partition, p.rel))
      rc = afs_fs_errno(&e);
  }
  if (rc == 0) {
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    qsort(ns.v, ns.n, sizeof *ns.v, cmp_str);
    for (size_t i = 0; i < ns.n; i++)
      if (i == 0 || strcmp(ns.v[i], ns.v[i - 1]))
        fill(buf, ns.v[i], NULL, 0, 0);
  }
  for (size_t i = 0; i < ns.n; i++)
    free(ns.v[i]);
  free(ns.v);
  afs_fpath_free(&p);
  return rc;
}

int afs_fs_check_name(const struct afs_fpath *p) {
  struct afs_error e = {0};
  if (!afs_filepath_check(p->rel, strlen(p->rel), &e))
    return afs_fs_errno(&e);
  if (afs_fs_is_cuts_path(p->rel))
    return -EPERM;
  return 0;
}

static int op_mkdir(const char *path, mode_t mode) {
  (void)mode;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc == -ENOENT ? -EINVAL : rc;
  if (fs->opt.ro) {
    rc = -EROFS;
  } else if (p.depth == 0) {
    rc = -EEXIST;
  } else if (p.depth == 1) {
    if (partition_exists(fs, p.partition))
      rc = -EEXIST;
    else
      afs_staging_add_dir(fs->st, p.partition, "");
  } else if (!(rc = afs_fs_check_name(&p))) {
    int k = afs_fs_resolve(fs, &p, NULL, NULL);
    if (k < 0)
      rc = k;
    else if (k)
      rc = -EEXIST;
    else
      afs_staging_add_dir(fs->st, p.partition, p.rel);
  }
  afs_fpath_free(&p);
  return rc;
}

static int stop_cb(void *ctx, const char *name, const struct afs_asset *a) {
  (void)name;
  (void)a;
  *(bool *)ctx = true;
  return 1;
}

/* Is partition/dir empty? *exists: whether it is a directory at all. */
static int dir_empty(struct afs_fs *fs, const char *partition, const char *dir, bool *exists) {
  struct afs_error e = {0};
  bool any = false;
  *exists = afs_staging_is_dir(fs->st, partition, dir);
  if (afs_staging_dir_has_children(fs->st, partition, dir))
    return 0;
  if (afs_catalog_list(fs->cat, partition, dir, stop_cb, &any, &e)) {
    if (!*dir || any)
      *exists = true;
    else if (afs_catalog_lookup(fs->cat, partition, dir, NULL, &e) == AFS_CAT_DIR)
      *exists = true;
  } else if (e.code != ENOENT) {
    return afs_fs_errno(&e);
  }
  return any ? 0 : 1;
}

static int op_rmdir(const char *path) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  if (fs->opt.ro) {
    rc = -EROFS;
  } else if (p.depth == 0) {
    rc = -EBUSY;
  } else {
    bool exists;
    int empty = dir_empty(fs, p.partition, p.rel, &exists);
    if (empty < 0)
      rc = empty;
    else if (!exists)
      rc = -ENOENT;
    else if (!empty)
      rc = -ENOTEMPTY;
    else if (!afs_staging_remove_dir(fs->st, p.partition, p.rel))
      rc = p.depth == 1 ? -EBUSY : -ENOENT; /* configured or discovered partitions stay */
  }
  afs_fpath_free(&p);
  return rc;
}

/* ---------------------------------------------------------------- files */

static struct afs_fh *fh_new(struct afs_wfile *wf, bool writable) {
  struct afs_fh *h = calloc(1, sizeof *h);
  h->wf = wf;
  h->writable = writable;
  if (wf) {
    pthread_mutex_lock(&wf->mu);
    wf->handles++;
    if (writable)
      wf->writers++;
    pthread_mutex_unlock(&wf->mu);
  }
  return h;
}

/* A new staged file at p with its pending record; *out has a reference. The record is
 * created before anything is visible, so a failure leaves nothing half made. */
static int new_staged(struct afs_fs *fs, const struct afs_fpath *p, struct afs_wfile **out) {
  struct afs_error e = {0};
  struct afs_wfile *replaced = NULL;
  struct afs_wfile *wf = afs_staging_create(fs->st, p->partition, p->rel,
                                            afs_mime_from_path(p->rel), &replaced, &e);
  if (!wf)
    return afs_fs_errno(&e);
  if (!afs_upload_begin(fs->up, wf, &e)) {
    afs_warn("cannot create %s/%s: %s", p->partition, p->rel, e.msg);
    afs_staging_remove(fs->st, wf);
    afs_staging_unref(fs->st, wf);
    afs_staging_unref(fs->st, replaced);
    return afs_fs_errno(&e);
  }
  if (replaced) {
    /* Overwritten before its upload finished: the old data will never be an asset
     * unless it already is one (then the broker supersedes it with the new upload). */
    pthread_mutex_lock(&replaced->mu);
    bool completed = replaced->state == AFS_W_COMPLETED;
    pthread_mutex_unlock(&replaced->mu);
    if (!completed)
      afs_upload_unlinked(fs->up, replaced);
    afs_staging_unref(fs->st, replaced);
  }
  afs_catalog_invalidate_path(fs->cat, p->partition, p->rel);
  *out = wf;
  return 0;
}

/* Copy-on-write: the asset's bytes into a new staged file (for O_RDWR, append, truncate
 * to a non-zero size). */
static int copy_asset_to_staging(struct afs_fs *fs, const struct afs_fpath *p,
                                 const struct afs_asset *a, struct afs_wfile **out) {
  struct afs_error e = {0};
  struct afs_reader *r = afs_reader_open_asset(fs->rc, fs->cat, a, &e);
  if (!r)
    return afs_fs_errno(&e);
  struct afs_wfile *wf = NULL;
  int rc = new_staged(fs, p, &wf);
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
      rc = -errno;
      break;
    }
    off += n;
  }
  free(buf);
  afs_reader_close(r);
  if (rc) {
    afs_upload_unlinked(fs->up, wf);
    afs_staging_remove(fs->st, wf);
    afs_staging_unref(fs->st, wf);
    return rc;
  }
  pthread_mutex_lock(&wf->mu);
  wf->mtime_ms = a->mtime_ms;
  pthread_mutex_unlock(&wf->mu);
  *out = wf;
  return 0;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
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
  else if (!(rc = afs_fs_check_name(&p)) && !(rc = new_staged(fs, &p, &wf))) {
    struct afs_fh *h = fh_new(wf, true);
    h->append = fi->flags & O_APPEND;
    fi->fh = (uintptr_t)h;
  }
  afs_fpath_free(&p);
  return rc;
}

static void mark_dirty(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  wf->dirty = true;
  wf->generation++;
  if (wf->state != AFS_W_UPLOADING)
    wf->state = AFS_W_WRITING;
  pthread_mutex_unlock(&wf->mu);
}

static int op_open(const char *path, struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_error e = {0};
  bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
  bool trunc = writable && (fi->flags & O_TRUNC);
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
  int k = afs_fs_resolve(fs, &p, &wf, &a);
  if (k == 'f') {
    if (trunc && ftruncate(wf->fd, 0) == 0)
      mark_dirty(wf);
  } else if (k == 'a') {
    if (!writable) {
      struct afs_fh *h = fh_new(NULL, false);
      h->reader = afs_reader_open_asset(fs->rc, fs->cat, &a, &e);
      if (!h->reader) {
        free(h);
        rc = afs_fs_errno(&e);
      } else {
        h->asset = a;
        fi->fh = (uintptr_t)h;
        afs_fpath_free(&p);
        return 0;
      }
    } else if (trunc) {
      rc = new_staged(fs, &p, &wf);
    } else {
      rc = copy_asset_to_staging(fs, &p, &a, &wf);
    }
    afs_asset_free(&a);
  } else {
    rc = k < 0 ? k : k == 'd' ? -EISDIR : -ENOENT;
  }
  if (!rc && wf) {
    struct afs_fh *h = fh_new(wf, writable);
    h->append = fi->flags & O_APPEND;
    fi->fh = (uintptr_t)h;
  } else if (wf) {
    afs_staging_unref(fs->st, wf);
  }
  afs_fpath_free(&p);
  return rc;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi) {
  (void)path;
  struct afs_fh *h = afs_fh_of(fi);
  struct afs_error e = {0};
  if (!h)
    return -EBADF;
  if (h->wf) {
    ssize_t n = pread(h->wf->fd, buf, size, off);
    return n < 0 ? -errno : (int)n;
  }
  ssize_t n = afs_reader_read(h->reader, buf, size, off, &e);
  return n < 0 ? afs_fs_errno(&e) : (int)n;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
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
  if ((int64_t)off + (int64_t)size > AFS_PUT_MAX_SIZE) {
    afs_err("write past 5 GiB refused (EFBIG): S3 takes at most 5 GiB in one PUT and "
            "multipart uploads are not supported yet");
    return -EFBIG;
  }
  ssize_t n = pwrite(h->wf->fd, buf, size, off);
  if (n < 0)
    return -errno;
  mark_dirty(h->wf);
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

static int op_flush(const char *path, struct fuse_file_info *fi) {
  (void)path;
  struct afs_fh *h = afs_fh_of(fi);
  if (!h || !h->wf || !h->writable)
    return 0;
  /* Shells open a file, dup it onto stdout and close the original before writing; that
   * close flushes a file nothing was written to yet. Such a file (also `touch`) is
   * uploaded at release instead, in the background. */
  pthread_mutex_lock(&h->wf->mu);
  bool untouched = h->wf->generation == 0 && h->wf->state == AFS_W_WRITING;
  pthread_mutex_unlock(&h->wf->mu);
  if (untouched)
    return 0;
  return upload_now(afs_fs_ctx(), h);
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path;
  (void)datasync;
  return upload_now(afs_fs_ctx(), afs_fh_of(fi));
}

static int op_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (!h)
    return 0;
  if (h->wf) {
    struct afs_wfile *wf = h->wf;
    pthread_mutex_lock(&wf->mu);
    wf->handles--;
    if (h->writable)
      wf->writers--;
    bool queue = wf->writers == 0 && wf->dirty && wf->state == AFS_W_WRITING;
    bool drop = wf->handles == 0 && wf->state == AFS_W_COMPLETED;
    pthread_mutex_unlock(&wf->mu);
    if (queue) /* closed without flush (NFS export, a dup'd fd): upload in background */
      afs_upload_queue(fs->up, wf);
    if (drop)
      afs_staging_remove(fs->st, wf);
    afs_staging_unref(fs->st, wf);
  }
  if (h->reader) {
    afs_reader_close(h->reader);
    afs_asset_free(&h->asset);
  }
  free(h);
  return 0;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (fs->opt.ro)
    return -EROFS;
  if (size > AFS_PUT_MAX_SIZE)
    return -EFBIG;
  if (h && h->wf) {
    if (ftruncate(h->wf->fd, size) != 0)
      return -errno;
    mark_dirty(h->wf);
    return 0;
  }
  struct afs_fpath p;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  struct afs_wfile *wf = NULL;
  struct afs_asset a;
  int k = p.depth < 2 ? 'd' : afs_fs_resolve(fs, &p, &wf, &a);
  if (k == 'a') {
    rc = size == 0 ? new_staged(fs, &p, &wf) : copy_asset_to_staging(fs, &p, &a, &wf);
    afs_asset_free(&a);
  } else if (k != 'f') {
    rc = k < 0 ? k : k == 'd' ? -EISDIR : -ENOENT;
  }
  if (!rc) {
    if (ftruncate(wf->fd, size) != 0) {
      rc = -errno;
    } else {
      mark_dirty(wf);
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

static int op_unlink(const char *path) {
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
    afs_upload_unlinked(fs->up, wf);
    afs_staging_unref(fs->st, wf);
  }
  /* An older completed asset at the same path goes too. */
  struct afs_asset a;
  memset(&a, 0, sizeof a);
  int k = afs_catalog_lookup(fs->cat, p.partition, p.rel, &a, &e);
  if (k == AFS_CAT_FILE) {
    /* Whether it is wf's own asset (completed meanwhile) or an older one, it goes. */
    if (!afs_asset_mark_deleted(fs->up, a.id, &e))
      rc = afs_fs_errno(&e);
    found = true;
    afs_asset_free(&a);
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


static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
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
  int k = 0;
  if (wf) {
    afs_staging_ref(fs->st, wf);
    k = 'f';
  } else {
    if ((rc = afs_fpath_parse(path, &p)))
      return rc;
    k = p.depth < 2 ? 'd' : afs_fs_resolve(fs, &p, &wf, &a);
  }
  if (k == 'f') {
    struct timespec ts[2] = {{0, UTIME_OMIT}, m};
    futimens(wf->fd, ts);
    pthread_mutex_lock(&wf->mu);
    wf->mtime_ms = ms;
    bool completed = wf->state == AFS_W_COMPLETED;
    char id[25];
    memcpy(id, wf->id, sizeof id);
    pthread_mutex_unlock(&wf->mu);
    if (completed && !afs_asset_set_mtime(fs->up, id, ms, &e))
      rc = afs_fs_errno(&e);
    afs_staging_unref(fs->st, wf);
  } else if (k == 'a') {
    if (!afs_asset_set_mtime(fs->up, a.id, ms, &e))
      rc = afs_fs_errno(&e);
    afs_catalog_invalidate_path(fs->cat, p.partition, p.rel);
    afs_asset_free(&a);
  } else if (k != 'd') {
    rc = k < 0 ? k : -ENOENT;
  }
  afs_fpath_free(&p);
  return rc;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
  (void)path;
  (void)mode;
  (void)fi;
  return afs_fs_ctx()->opt.refuse_chmod ? -EPERM : 0;
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi) {
  (void)path;
  (void)uid;
  (void)gid;
  (void)fi;
  return afs_fs_ctx()->opt.refuse_chmod ? -EPERM : 0;
}

static int op_statfs(const char *path, struct statvfs *sv) {
  (void)path;
  /* Synthetic and large: tools check free space before copying (peer-filesystems.md). */
  memset(sv, 0, sizeof *sv);
  sv->f_bsize = sv->f_frsize = 4096;
  sv->f_blocks = sv->f_bfree = sv->f_bavail = 1ULL << 40; /* 4 PiB */
  sv->f_files = sv->f_ffree = sv->f_favail = 1ULL << 32;
  sv->f_namemax = AFS_NAME_MAX;
  return 0;
}


static const struct fuse_operations g_ops = {
    .getattr = op_getattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .mkdir = op_mkdir,
    .rmdir = op_rmdir,
    .create = op_create,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .release = op_release,
    .truncate = op_truncate,
    .unlink = op_unlink,
    .rename = afs_op_rename,
    .utimens = op_utimens,
    .chmod = op_chmod,
    .chown = op_chown,
    .statfs = op_statfs,
    .setxattr = afs_op_setxattr,
    .getxattr = afs_op_getxattr,
    .listxattr = afs_op_listxattr,
    .removexattr = afs_op_removexattr,
};

const struct fuse_operations *afs_fs_operations(void) { return &g_ops; }
