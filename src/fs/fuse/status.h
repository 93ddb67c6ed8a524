/* The mount's own status file, `.assetfs/status` at the mount root (a hidden top-level
 * directory that is not a partition): read-only, one `key: value` per line, counts of
 * written files by upload state and the bytes still to upload, so that a user of
 * write-back mode can see when everything is safely in S3.
 */
#ifndef ASSETFS_STATUS_H
#define ASSETFS_STATUS_H

#include "fs.h"

#define AFS_STATUS_DIR ".assetfs"
#define AFS_STATUS_FILE "status"

/* The current text (caller frees). */
char *afs_fs_status_text(struct afs_fs *fs);

/* What path is: 0 not ours, 1 the directory, 2 the status file, -1 something else under
 * the directory (ENOENT). */
int afs_fs_status_path(const char *path);

#endif
