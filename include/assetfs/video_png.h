/* A decoded video frame written as the PNG a player would show: converted to RGB with the
 * stream's colour matrix and range, stretched by the pixel aspect ratio, rotated by the display
 * matrix, and encoded with FFmpeg's PNG encoder. Used by video.c for the video preview; no
 * libvips (no vips_thread_shutdown() needed). Thread-safe: no shared state.
 */
#ifndef ASSETFS_VIDEO_PNG_H
#define ASSETFS_VIDEO_PNG_H

#include <stdbool.h>

#include "assetfs/error.h"

struct AVFrame;

/* Converts *frame (any pixel format swscale reads) to RGB24, or RGBA when it has alpha, at
 * display_width x height, rotates it clockwise by ROTATION (0/90/180/270) and writes it as PNG
 * to OUT atomically: a temporary file in the same directory, then rename (mode 0600); on failure
 * OUT is untouched and no temporary is left. Steals *frame: frees it and sets it NULL (as soon as
 * it is converted, so at most two copies of the picture are alive). */
bool afs_video_png_write(struct AVFrame **frame, int display_width, int rotation, const char *out,
                         struct afs_error *err);

#endif
