/* Private to the FUSE layer (ops.c, ops_rename.c, xattr.c, main.c): path parsing, the
 * open-file handle, lookup through staging then catalog, and the errno mapping. */
#ifndef ASSETFS_OPS_INT_H
#define ASSETFS_OPS_INT_H

#include "assetfs/error.h"
#include "fs.h"

/* The ONE place where errors become negative errno values for the kernel. */
int afs_fs_errno(const struct afs_error *e);

static inline struct afs_fs *afs_fs_ctx(void) {
  return fuse_get_context()->private_data;
}

/* An open file: a staged file (wf) or a completed asset read from S3 (reader). */
struct afs_fh {
  struct afs_wfile *wf;
  struct afs_reader *reader;
  struct afs_asset asset; /* for reader handles */
  char *dirpath;          /* for directory handles (readdir may get a NULL path) */
  char *text;             /* .assetfs/status: the text as of open (status.h) */
  size_t text_len;
  struct afs_fh *prev, *next; /* in fs->fh_list (file handles only) */
  bool writable, append;
};

static inline struct afs_fh *afs_fh_of(struct fuse_file_info *fi) {
  return fi ? (struct afs_fh *)(uintptr_t)fi->fh : NULL;
}

/* A path split into partition and relative path. depth 0: "/", 1: a partition dir,
 * 2: inside a partition. */
struct afs_fpath {
  int depth;
  char *partition; /* decoded _partition value */
  const char *rel; /* "" for the partition root */
  char *buf;
};

int afs_fpath_parse(const char *path, struct afs_fpath *p); /* 0 or -ENOENT */
void afs_fpath_free(struct afs_fpath *p);
bool afs_fs_is_cuts_path(const char *rel);
/* 0, or -EINVAL/-ENAMETOOLONG/-EPERM for a name that cannot be a filePath. */
int afs_fs_check_name(const struct afs_fpath *p);

/* What afs_fs_resolve found at a path. AFS_NODE_NONE is 0 so that `k > 0` means
 * "something is there" and `k <= 0` "nothing, or an error". */
enum afs_node {
  AFS_NODE_NONE = 0, /* nothing at that path */
  AFS_NODE_STAGED,   /* a file written here and not completed yet (staging) */
  AFS_NODE_ASSET,    /* a completed asset (catalog: CosyncAsset) */
  AFS_NODE_DIR,      /* a directory (staged, or one the catalog's filePaths imply) */
};

/* What is at p (depth 2). Returns an enum afs_node (>= 0), or a negative errno
 * (afs_fs_errno of the catalog's error) when the lookup failed: test `k < 0` first.
 * AFS_NODE_STAGED: *wf holds a reference (wf may be NULL to skip staged files);
 * AFS_NODE_ASSET: *a filled when a is not NULL (caller frees). Otherwise *wf (when
 * wf is not NULL) is NULL and *a is untouched. */
int afs_fs_resolve(struct afs_fs *fs, const struct afs_fpath *p, struct afs_wfile **wf,
                   struct afs_asset *a);

/* ops_file.c */
int afs_op_create(const char *path, mode_t mode, struct fuse_file_info *fi);
int afs_op_open(const char *path, struct fuse_file_info *fi);
int afs_op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi);
int afs_op_write(const char *path, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi);
int afs_op_flush(const char *path, struct fuse_file_info *fi);
int afs_op_fsync(const char *path, int datasync, struct fuse_file_info *fi);
int afs_op_release(const char *path, struct fuse_file_info *fi);
int afs_op_truncate(const char *path, off_t size, struct fuse_file_info *fi);
int afs_op_unlink(const char *path);
int afs_op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi);

/* based.c: big assets changed without downloading them (staging/base.h). */
struct afs_base;
bool afs_fs_may_base(const struct afs_fs *fs, const struct afs_asset *a);
bool afs_fs_base_fetch(void *ctx, struct afs_base *b, char *buf, size_t len, int64_t off,
                       struct afs_error *err);
void afs_fs_base_src_free(void *src);

/* Closes every file handle still open (at unmount). */
void afs_fs_release_all(struct afs_fs *fs);

/* ops_rename.c, xattr.c */
int afs_op_rename(const char *from, const char *to, unsigned int flags);
int afs_op_setxattr(const char *path, const char *name, const char *value, size_t size, int flags);
int afs_op_getxattr(const char *path, const char *name, char *value, size_t size);
int afs_op_listxattr(const char *path, char *list, size_t size);
int afs_op_removexattr(const char *path, const char *name);

#endif
