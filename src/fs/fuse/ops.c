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

#include "assetfs/alloc.h"
#include "assetfs/http_put.h"
#include "assetfs/log.h"
#include "assetfs/mime.h"
#include "assetfs/naming.h"
#include "assetfs/test_pause.h"
#include "fs.h"
#include "fuse/ops_int.h"
#include "fuse/status.h"
#include "upload/upload.h"

int afs_fs_errno(const struct afs_error *e) {
  /* The table of what each code means is in include/assetfs/error.h. Codes a program can
   * act on pass; the ones that mean "the service failed" (AFS_E_URL_EXPIRED the broker
   * could not renew, AFS_E_BROKER_REFUSED, AFS_E_UNMOUNTING, AFS_E_DEADLINE,
   * AFS_E_TRANSIENT, AFS_E_UNREACHABLE) are EIO: that is what cp, rsync and editors
   * report sensibly. */
  switch (e->code) {
  /* POSIX's meanings (the staging disk, the naming rules, the catalog's lookups): */
  case ENOENT:
  case EEXIST:
  case ENOTDIR:
  case EISDIR:
  case ENOTEMPTY:
  case EINVAL:
  case ENAMETOOLONG:
  case EROFS:
  case EPERM: /* not allowed on that path (.cuts/, the status folder) */
  case EXDEV:
  case ENODATA:
  case ERANGE:
  case ENOTSUP:
  case E2BIG:
  case EBADF:
  case ENOMEM:
  case EDQUOT:
  case EBUSY:
  /* This system's meanings (error.h), each one the user can act on: */
  case AFS_E_RECORD_GONE: /* ESTALE: the asset was deleted (or its upload record used) */
  case AFS_E_URL_REFUSED: /* EACCES: a URL not the bucket's, a redirect, S3's 403 for good */
  case AFS_E_CACHE_FULL:  /* ENOSPC: cache_max reached (or the disk's own ENOSPC) */
  case AFS_E_TOO_BIG:     /* EFBIG: over S3's 5 GiB single-PUT limit */
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
  if (!strcmp(p->buf, AFS_STATUS_DIR)) {
    /* The mount's status folder (status.h), never a partition: nothing is made there. */
    afs_fpath_free(p);
    return -EPERM;
  }
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

/* What every stat we report shares: owner, mode (read-only mounts drop the write bits). */
static void fill_stat_head(struct afs_fs *fs, struct stat *st, bool dir) {
  memset(st, 0, sizeof *st);
  st->st_mode = dir ? S_IFDIR | (fs->opt.ro ? 0555 : 0755) : S_IFREG | (fs->opt.ro ? 0444 : 0644);
  st->st_nlink = dir ? 2 : 1;
  st->st_uid = fs->owner;
  st->st_gid = fs->group;
  if (!dir)
    st->st_blksize = 1 << 20;
}

static void fill_dir_stat(struct afs_fs *fs, struct stat *st) {
  fill_stat_head(fs, st, true);
  st->st_mtime = st->st_ctime = st->st_atime = time(NULL);
}

/* ms since the epoch as a timespec; before 1970 too (tv_nsec is never negative: a record
 * may say any date). */
static struct timespec ms_to_timespec(int64_t ms) {
  int64_t s = ms / 1000, rem = ms % 1000;
  if (rem < 0) {
    s -= 1;
    rem += 1000;
  }
  return (struct timespec){.tv_sec = (time_t)s, .tv_nsec = (long)rem * 1000000L};
}

static void fill_asset_stat(struct afs_fs *fs, const struct afs_asset *a, struct stat *st) {
  fill_stat_head(fs, st, false);
  st->st_size = a->size > 0 ? a->size : 0;
  st->st_blocks = st->st_size / 512 + (st->st_size % 512 != 0); /* no overflow at any size */
  st->st_mtim = ms_to_timespec(a->mtime_ms);
  st->st_atim = st->st_mtim;
  st->st_ctim = ms_to_timespec(a->created_ms ? a->created_ms : a->mtime_ms);
}

static void fill_wf_stat(struct afs_fs *fs, struct afs_wfile *wf, struct stat *st) {
  struct stat s;
  if (!afs_staging_stat(wf, &s))
    memset(&s, 0, sizeof s);
  fill_stat_head(fs, st, false);
  st->st_size = s.st_size;
  st->st_blocks = s.st_blocks;
  st->st_mtim = s.st_mtim;
  st->st_atim = s.st_atim;
  st->st_ctim = s.st_ctim;
}

/* Does the partition directory exist? */
static bool partition_exists(struct afs_fs *fs, const char *partition) {
  if (!strcmp(partition, fs->opt.upload_partition) || afs_staging_is_dir(fs->st, partition, ""))
    return true;
  struct afs_error e = {0};
  return afs_catalog_lookup(fs->cat, partition, "", NULL, &e) == AFS_CAT_DIR;
}

int afs_fs_resolve(struct afs_fs *fs, const struct afs_fpath *p, struct afs_wfile **wf,
                   struct afs_asset *a) {
  struct afs_error e = {0};
  if (wf && (*wf = afs_staging_get(fs->st, p->partition, p->rel)))
    return AFS_NODE_STAGED;
  if (afs_staging_is_dir(fs->st, p->partition, p->rel))
    return AFS_NODE_DIR;
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
    return AFS_NODE_ASSET;
  }
  return k == AFS_CAT_DIR ? AFS_NODE_DIR : AFS_NODE_NONE;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_fh *h = afs_fh_of(fi);
  if (h && h->dirpath)
    path = h->dirpath;
  else if (h && h->text)
    path = "/" AFS_STATUS_DIR "/" AFS_STATUS_FILE;
  else if (h) {
    if (h->wf)
      fill_wf_stat(fs, h->wf, st);
    else
      fill_asset_stat(fs, &h->asset, st);
    return 0;
  }
  int sp = afs_fs_status_path(path);
  if (sp) {
    if (sp < 0)
      return -ENOENT;
    fill_dir_stat(fs, st);
    st->st_mode = S_IFDIR | 0555;
    if (sp == 2) {
      char *text = afs_fs_status_text(fs);
      st->st_mode = S_IFREG | 0444;
      st->st_nlink = 1;
      st->st_size = (off_t)strlen(text);
      free(text);
    }
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
    if (k == AFS_NODE_STAGED) {
      fill_wf_stat(fs, wf, st);
      afs_staging_unref(fs->st, wf);
    } else if (k == AFS_NODE_ASSET) {
      fill_asset_stat(fs, &a, st);
      afs_asset_free(&a);
    } else if (k == AFS_NODE_DIR) {
      fill_dir_stat(fs, st);
    } else {
      rc = k < 0 ? k : -ENOENT;
    }
  }
  afs_fpath_free(&p);
  return rc;
}

/* ---------------------------------------------------------------- directories */

/* Entries of a readdir; st (when plus) is what getattr would answer, handed to the kernel
 * with the name (readdirplus) so that `ls -l` of a big directory needs no lookup per
 * entry, and its type lets `find` skip the stat. */
struct dent {
  char *name;
  bool plus;
  struct stat st;
};

struct names {
  struct dent *v;
  size_t n, cap;
  struct afs_fs *fs;
};

/* A name no program can use (over NAME_MAX bytes: any record may hold one) is left out
 * of the listing, which would otherwise fail whole: the kernel answers EIO for a
 * directory with a name over 1,024 bytes. NULL then. */
static struct dent *names_add(struct names *ns, const char *name) {
  if (strlen(name) > NAME_MAX) {
    afs_debug("listing: leaving out a name of %zu bytes (over %d)", strlen(name), NAME_MAX);
    return NULL;
  }
  if (ns->n == ns->cap)
    ns->v = afs_xrealloc(ns->v, (ns->cap = ns->cap ? ns->cap * 2 : 64) * sizeof *ns->v);
  struct dent *d = &ns->v[ns->n++];
  d->name = afs_xstrdup(name);
  d->plus = false;
  return d;
}

static int cmp_dent(const void *a, const void *b) {
  return strcmp(((const struct dent *)a)->name, ((const struct dent *)b)->name);
}

static int add_partition_cb(void *ctx, const char *partition) {
  char *d = afs_partition_to_dirname(partition);
  names_add(ctx, d);
  free(d);
  return 0;
}

static int add_list_cb(void *ctx, const char *name, const struct afs_asset *a) {
  struct names *ns = ctx;
  struct dent *d = names_add(ns, name);
  if (!d)
    return 0;
  d->plus = true;
  if (a)
    fill_asset_stat(ns->fs, a, &d->st);
  else
    fill_dir_stat(ns->fs, &d->st);
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
  struct afs_fh *dh = afs_fh_of(fi);
  if (dh && dh->dirpath)
    path = dh->dirpath;
  struct afs_fs *fs = afs_fs_ctx();
  struct afs_error e = {0};
  struct names ns = {.fs = fs};
  struct afs_fpath p;
  int sp = afs_fs_status_path(path);
  if (sp == 1) {
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    fill(buf, AFS_STATUS_FILE, NULL, 0, 0);
    return 0;
  }
  if (sp)
    return -ENOTDIR;
  int rc = afs_fpath_parse(path, &p);
  if (rc)
    return rc;
  /* Staging first, the catalog second: a staged copy is dropped only after the catalog
   * holds its asset (upload_poll.c, drop_when_shown), so a file that moves from one to
   * the other while we list is in the second list. The other order could miss it. */
  if (p.depth == 0) {
    names_add(&ns, AFS_STATUS_DIR);
    afs_staging_list(fs->st, NULL, NULL, add_staging_partition_cb, &ns);
    if (!afs_catalog_partitions(fs->cat, add_partition_cb, &ns, &e))
      afs_warn("listing partitions: %s", e.msg);
    add_partition_cb(&ns, fs->opt.upload_partition);
  } else {
    afs_staging_list(fs->st, p.partition, p.rel, add_staging_cb, &ns);
    size_t staged = ns.n;
    afs_test_pause("readdir_between", path);
    bool listed = afs_catalog_list(fs->cat, p.partition, p.rel, add_list_cb, &ns, &e);
    if (!listed && staged == 0 && !afs_staging_is_dir(fs->st, p.partition, p.rel))
      rc = afs_fs_errno(&e);
  }
  if (rc == 0) {
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    if (ns.n > 0)
      qsort(ns.v, ns.n, sizeof *ns.v, cmp_dent);
    for (size_t i = 0; i < ns.n; i++) {
      if (i > 0 && !strcmp(ns.v[i].name, ns.v[i - 1].name))
        continue;
      /* A name that is also staged (a new version being written): its attributes are
       * staging's, which getattr asks for. */
      bool plus = ns.v[i].plus && !(i + 1 < ns.n && !strcmp(ns.v[i].name, ns.v[i + 1].name));
      if (plus && (flags & FUSE_READDIR_PLUS))
        fill(buf, ns.v[i].name, &ns.v[i].st, 0, FUSE_FILL_DIR_PLUS);
      else
        fill(buf, ns.v[i].name, plus ? &ns.v[i].st : NULL, 0, 0);
    }
  }
  for (size_t i = 0; i < ns.n; i++)
    free(ns.v[i].name);
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
    else if (k != AFS_NODE_NONE)
      rc = -EEXIST;
    else {
      afs_staging_add_dir(fs->st, p.partition, p.rel);
      /* cp -r then asks for every new name in it: answer those without a query. */
      if (fs->cat)
        afs_catalog_note_new_dir(fs->cat, p.partition, p.rel);
    }
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
    .create = afs_op_create,
    .open = afs_op_open,
    .read = afs_op_read,
    .write = afs_op_write,
    .flush = afs_op_flush,
    .fsync = afs_op_fsync,
    .release = afs_op_release,
    .truncate = afs_op_truncate,
    .unlink = afs_op_unlink,
    .rename = afs_op_rename,
    .utimens = afs_op_utimens,
    .chmod = op_chmod,
    .chown = op_chown,
    .statfs = op_statfs,
    .setxattr = afs_op_setxattr,
    .getxattr = afs_op_getxattr,
    .listxattr = afs_op_listxattr,
    .removexattr = afs_op_removexattr,
};

const struct fuse_operations *afs_fs_operations(void) {
  return &g_ops;
}
