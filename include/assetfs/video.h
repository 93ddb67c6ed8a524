/* Video probe and preview frame, with FFmpeg's libraries (libavformat, libavcodec, swscale).
 *
 * For a video written through assetfs we need what Cosync clients send with it: the duration,
 * the display size, and a PNG of the first frame as a player shows it (rotation and pixel
 * aspect ratio applied), from which the image module makes the 300/600/900 px cuts.
 *
 * Bounded whatever the file: only container formats that video files use are opened and only
 * through the local-file protocol (a playlist or concat script cannot make FFmpeg fetch other
 * files or URLs); header probing is capped (probesize, analyzeduration); at most
 * AFS_VIDEO_MAX_PACKETS packets / AFS_VIDEO_MAX_BYTES bytes are read looking for the first
 * frame; frames above AFS_VIDEO_MAX_PIXELS are refused; and a wall-clock deadline
 * (AFS_VIDEO_DEADLINE_S) interrupts I/O and the decode loop. Nothing is decoded past the first
 * frame, so a 10-minute clip costs the same as a 2-second one.
 *
 * Thread-safe: every call has its own FFmpeg contexts and decoders run single-threaded on the
 * calling thread. The one process-wide thing is FFmpeg's log callback, installed on first use:
 * FFmpeg messages go to afs_log at debug level (at most a few per call), fatal ones at warn, and
 * the first FFmpeg error of a failed call is quoted in its afs_error message.
 * This module does not use libvips (no vips_thread_shutdown() is needed for it).
 */
#ifndef ASSETFS_VIDEO_H
#define ASSETFS_VIDEO_H

#include <stdbool.h>

#include "assetfs/error.h"

#define AFS_VIDEO_MAX_PACKETS 1500           /* packets read after the header, all streams */
#define AFS_VIDEO_MAX_BYTES (96 << 20)       /* bytes of those packets */
#define AFS_VIDEO_MAX_PIXELS (7680 * 4320)   /* 8K UHD; the preview needs ~3 bytes/pixel x 2 */
#define AFS_VIDEO_DEADLINE_S 20              /* wall time for one call */

struct afs_video_info {
  double duration;   /* seconds (container's duration, all streams); 0 if the file does not say */
  int width, height; /* display size: pixel aspect ratio and rotation applied */
  int rotation;      /* degrees CLOCKWISE applied to the stored frames for display: 0/90/180/270
                        (an iPhone portrait video, stored landscape, has 90) */
};

/* Opens PATH (a local file), fills *info, decodes the first displayable frame (presentation
 * order, corrupt frames skipped), rotates it as the display matrix says, and writes it as PNG
 * (RGB, or RGBA when the video has alpha) to png_out_path, atomically (temporary file in the
 * same directory, then rename; mode 0600). info->width/height are the PNG's size.
 * Returns false and fills err (EINVAL: not a video, truncated, unsupported codec, no decodable
 * frame; ENOENT/EACCES/EIO from the file; ETIMEDOUT; ENOMEM) and then leaves no file behind and
 * png_out_path untouched. Messages do not contain the path: the caller adds it. */
bool afs_video_probe_preview(const char *path, struct afs_video_info *info,
                             const char *png_out_path, struct afs_error *err);

/* Probe only, no decoding: the same checks and info from the container's headers (size from
 * the codec parameters). Succeeds for a video whose codec this FFmpeg cannot decode. */
bool afs_video_probe(const char *path, struct afs_video_info *info, struct afs_error *err);

#endif
