/* Manual check of the video module: video_preview VIDEO [OUT.png]
 * Prints duration, display size and rotation as JSON (probe only without OUT.png), with the
 * time taken; exit 1 and the error message on stderr if the module refuses the file. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "assetfs/log.h"
#include "assetfs/video.h"

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s VIDEO [OUT.png]\n", argv[0]);
    return 2;
  }
  afs_log_init("video_preview", getenv("AFS_DEBUG") ? AFS_LOG_DEBUG : AFS_LOG_WARN, false);
  struct afs_video_info info;
  struct afs_error err = {0};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  bool ok = argc == 3 ? afs_video_probe_preview(argv[1], &info, argv[2], &err)
                      : afs_video_probe(argv[1], &info, &err);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
  if (!ok) {
    fprintf(stderr, "%s: %s (errno %d, %.1f ms)\n", argv[1], err.msg, err.code, ms);
    return 1;
  }
  printf("{\"duration\": %.3f, \"width\": %d, \"height\": %d, \"rotation\": %d, \"ms\": %.1f}\n",
         info.duration, info.width, info.height, info.rotation, ms);
  return 0;
}
