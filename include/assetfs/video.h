/* Video probe and preview frame, with FFmpeg's libraries (libavformat, libavcodec, swscale).
 *
 * For a video written through assetfs we need what Cosync clients send with it: the duration,
 * the display size, and a PNG of the first frame as a player shows it (rotation and pixel
 * aspect ratio applied), from which the image module makes the 300/600/900 px cuts.
 *
 * Bounded whatever the file: only container formats that video files use are opened and only
 * through the local-file protocol (a playlist or concat script cannot make FFmpeg fetch other
 * files or URLs); header probing is capped (probesize 8 MiB, analyzeduration 5 s); looking for
 * the first frame reads at most AFS_VIDEO_MAX_PACKETS packets and AFS_VIDEO_MAX_BYTES bytes
 * (counted by the I/O layer, so skipped streams count too); frames above AFS_VIDEO_MAX_PIXELS
 * are refused; and a wall-clock deadline (AFS_VIDEO_DEADLINE_S) interrupts I/O and the decode
 * loop. Nothing is decoded past the first frame, so a 10-minute clip costs what a 2-second one
 * does. Peak memory is about two RGB copies of the frame plus the decoder's (~130 MB RSS in
 * all for a 4K 10-bit HEVC file, ~45 MB for 1080p).
 *
 * Not handled: HDR (PQ/HLG) is converted without tone mapping (looks flat), interlaced frames
 * are not deinterlaced, mirrored display matrices are shown unmirrored, and a truncated
 * MPEG-TS/other stream without a size in its header is accepted if its first frame decodes.
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

#define AFS_VIDEO_MAX_PACKETS 1500         /* packets read after the header, all streams */
#define AFS_VIDEO_MAX_BYTES (96 << 20)     /* bytes read from the file after the header */
#define AFS_VIDEO_MAX_PIXELS (7680 * 4320) /* 8K UHD; the preview needs ~3 bytes/pixel x 2 */
#define AFS_VIDEO_DEADLINE_S 20            /* wall time for one call */

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
 * png_out_path untouched. Messages say what is wrong with the content (quoting FFmpeg's first
 * error); they do not name the file: the caller adds the path. */
bool afs_video_probe_preview(const char *path, struct afs_video_info *info,
                             const char *png_out_path, struct afs_error *err);

/* Probe only, no decoding: the same checks and info from the container's headers (size from
 * the codec parameters). Succeeds for a video whose codec this FFmpeg cannot decode. */
bool afs_video_probe(const char *path, struct afs_video_info *info, struct afs_error *err);

#endif
