/* Image metadata and cuts with libvips.
 *
 * Probe: the displayed pixel size (EXIF orientation applied) and the average colour as
 * "#RRGGBB", the fields Cosync apps put in xRes/yRes/color. Cuts: the 300/600/900 px
 * versions on the longer side that Cosync clients upload next to the original; never
 * upscaled, orientation applied, written in the format the destination's extension
 * names (callers keep the original's extension, so cuts keep the original's format).
 *
 * Threads: libvips keeps per-thread state; a thread that called these functions must
 * call afs_image_thread_done() before it exits. libvips errors are copied into the
 * struct afs_error right away (its error buffer is process-global).
 */
#ifndef ASSETFS_IMAGE_H
#define ASSETFS_IMAGE_H

#include <stdbool.h>

#include "assetfs/error.h"

#define AFS_CUT_SMALL 300
#define AFS_CUT_MEDIUM 600
#define AFS_CUT_LARGE 900

struct afs_image_info {
  int width, height; /* as displayed, after EXIF orientation */
  char color[8];     /* "#RRGGBB" */
};

/* Initialises libvips once per process (thread-safe; later calls are no-ops). Returns
 * false if libvips cannot start. */
bool afs_image_global_init(struct afs_error *err);

/* True if libvips can load this file (reads the header only). */
bool afs_image_is_image(const char *path);

bool afs_image_probe(const char *path, struct afs_image_info *info, struct afs_error *err);

/* Writes dst_path (format from its extension) with the longer side at most `size`
 * pixels. out_w/out_h (may be NULL) get the cut's size. */
bool afs_image_cut(const char *src_path, const char *dst_path, int size, int *out_w, int *out_h,
                   struct afs_error *err);

/* Frees libvips' per-thread state; call on every thread that used this module. */
void afs_image_thread_done(void);

#endif
