/* assetfs: the FUSE filesystem. This is the mount skeleton (an empty root); the
 * partition namespace, write and read paths are built on top of it. */
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/log.h"

static time_t g_mount_time;

static int afs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  memset(st, 0, sizeof *st);
  if (strcmp(path, "/") != 0)
    return -ENOENT;
  st->st_mode = S_IFDIR | 0755;
  st->st_nlink = 2;
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_mtime = st->st_ctime = st->st_atime = g_mount_time;
  return 0;
}

static int afs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                       struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)off;
  (void)fi;
  (void)flags;
  if (strcmp(path, "/") != 0)
    return -ENOENT;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  return 0;
}

static const struct fuse_operations afs_ops = {
    .getattr = afs_getattr,
    .readdir = afs_readdir,
};

int main(int argc, char *argv[]) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
      printf("assetfs %s\n", ASSETFS_VERSION);
      return 0;
    }
  }
  g_mount_time = time(NULL);
  afs_log_init("assetfs", AFS_LOG_INFO, false);
  return fuse_main(argc, argv, &afs_ops, NULL);
}
