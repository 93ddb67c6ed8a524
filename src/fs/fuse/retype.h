/* A rename that changes a file's type. The content type of a file written through the
 * mount comes from its name at create, so rsync's ".name.mp4.XXXXXX" -> "name.mp4"
 * (and `mv clip.bin clip.mp4`) would leave a video as application/octet-stream with no
 * preview or cuts. After such a rename the file goes up again as its new type, as a new
 * version (the broker supersedes the old one by _id order, whichever completes first):
 *
 * - staged (its bytes still in the staging folder): not uploaded yet, or its upload
 *   failed for good or waits for a retry: only the type changes (and its unused upload
 *   record, which the broker signs for the old contentType, gives way to a new one at
 *   the next upload). Uploading, uploaded or
 *   completed: the type changes and the file is queued again (a new record; the running
 *   upload, if any, finishes first and the requeue follows it).
 * - only an asset (staging dropped): copy-on-write, like O_RDWR: its bytes are read
 *   back into a new staged file at the new name, queued for upload; the old asset stays
 *   readable until the new one supersedes it. Only done when the new type is an image or
 *   a video of another kind than before (it would get cuts or a preview); renaming a
 *   video to "x.mp4.bak" keeps its asset as it is rather than download and upload it.
 *
 * Staged files change type whenever the kind (image, video, other) changes; between
 * two types of the same kind (text/plain -> application/octet-stream) nothing is
 * uploaded again once an upload ran.
 */
#ifndef ASSETFS_RETYPE_H
#define ASSETFS_RETYPE_H

#include "catalog/catalog.h"
#include "fs.h"
#include "staging/staging.h"

/* Called by rename after the file moved to partition/rel: wf is the staged file (with a
 * reference, may be NULL), a the asset (when wf is NULL). Returns 0 or a negative errno
 * (the rename itself has happened either way; a failure is logged). */
int afs_retype_after_rename(struct afs_fs *fs, const char *partition, const char *rel,
                            struct afs_wfile *wf, const struct afs_asset *a);

#endif
