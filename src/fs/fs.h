/* The filesystem's process-wide context, shared by the FUSE operations (ops.c), the
 * upload pipeline (upload.c) and the xattrs (xattr.c). Created in main before the mount;
 * the parts that start threads (catalog, read cache, upload worker) are created in the
 * FUSE init callback, after libfuse has daemonised.
 */
#ifndef ASSETFS_FS_H
#define ASSETFS_FS_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 35
#endif
#include <fuse.h>

#include "assetfs/db.h"
#include "catalog/catalog.h"
#include "fs_options.h"
#include "reader/reader.h"
#include "staging/staging.h"

struct afs_uploader;
struct afs_fh;

struct afs_fs {
  struct afs_fs_options opt;
  struct afs_db db;
  struct afs_catalog *cat;
  struct afs_readcache *rc;
  struct afs_staging *st;
  struct afs_uploader *up;
  uid_t owner;
  gid_t group;
  char *staging_dir; /* <cache_dir>/session-<hash of session_id>: survives the process */
  int lock_fd;       /* flock'd <staging_dir>/lock: one live mount per session */
  int log_fd;        /* -o log_file=, opened before daemonising (a relative path and its
                      * errors mean what they say at the command line); -1 = none */
  /* Open handles, so that unmount can close those whose RELEASE never came (the kernel
   * may drop queued releases when the connection goes). fh_mu protects the list only;
   * it is a leaf lock. */
  pthread_mutex_t fh_mu;
  struct afs_fh *fh_list;
};

/* The FUSE operations; private_data (fuse_get_context) is the struct afs_fs. */
const struct fuse_operations *afs_fs_operations(void);

#endif
