/* Video probe and preview against real files made by the ffmpeg CLI (skipped, exit 77, without
 * ffmpeg/ffprobe). Pixels of the PNG are read back with the ffmpeg CLI, so the check does not
 * share code with the module under test. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/log.h"
#include "assetfs/video.h"

static char g_dir[64];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *p(const char *name) {
  static _Thread_local char bufs[4][512];
  static _Thread_local int i;
  char *b = bufs[i++ % 4];
  snprintf(b, 512, "%s/%s", g_dir, name);
  return b;
}

/* Runs the ffmpeg CLI with ARGS (quiet); aborts the test on failure: the fixtures must exist. */
static void ffmpeg(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cd %s && ffmpeg -hide_banner -nostdin -loglevel error -y %s", g_dir,
           args);
  if (system(cmd) != 0) {
    fprintf(stderr, "fixture command failed: %s\n", cmd);
    exit(1);
  }
}

static bool exists(const char *path) {
  struct stat stbuf;
  return stat(path, &stbuf) == 0;
}

/* Copies the first N bytes of SRC to DST. */
static void truncate_copy(const char *src, const char *dst, double fraction) {
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  if (!in || !out)
    exit(1);
  fseek(in, 0, SEEK_END);
  long n = (long)(ftell(in) * fraction);
  fseek(in, 0, SEEK_SET);
  for (long i = 0; i < n; i++)
    fputc(fgetc(in), out);
  fclose(in);
  fclose(out);
}

/* Copies SRC from FRACTION of its size on, at a 188-byte TS packet boundary. */
static void cut_ts(const char *src, const char *dst, double fraction) {
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  if (!in || !out)
    exit(1);
  fseek(in, 0, SEEK_END);
  long n = ftell(in);
  fseek(in, (long)(n * fraction) / 188 * 188, SEEK_SET);
  for (int ch; (ch = fgetc(in)) != EOF;)
    fputc(ch, out);
  fclose(in);
  fclose(out);
}

/* A TS whose tables declare a video stream that never comes: its PSI packets, then MB
 * megabytes of null packets, which the demuxer skips without returning anything. */
static void ts_without_video(const char *src, const char *dst, int mb) {
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  if (!in || !out)
    exit(1);
  unsigned char pkt[188];
  while (fread(pkt, 1, 188, in) == 188) {
    int pid = (pkt[1] & 0x1f) << 8 | pkt[2];
    if (pid >= 0x100 && pid < 0x1000) /* elementary streams: ffmpeg's PIDs start at 0x100 */
      break;
    fwrite(pkt, 1, 188, out);
  }
  memset(pkt, 0xff, sizeof pkt);
  pkt[0] = 0x47, pkt[1] = 0x1f, pkt[2] = 0xff, pkt[3] = 0x10;
  for (long i = 0; i < (long)mb * 1024 * 1024 / 188; i++)
    fwrite(pkt, 1, 188, out);
  fclose(in);
  fclose(out);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f)
    exit(1);
  fputs(text, f);
  fclose(f);
}

/* The PNG decoded by the ffmpeg CLI into packed RGB24; checks it is W x H. Caller frees. */
static uint8_t *read_png(const char *png, int w, int h) {
  char cmd[2048], raw[600];
  snprintf(raw, sizeof raw, "%s.rgb", png);
  snprintf(cmd, sizeof cmd,
           "ffmpeg -hide_banner -nostdin -loglevel error -y -i %s -f rawvideo -pix_fmt rgb24 %s",
           png, raw);
  if (system(cmd) != 0)
    return NULL;
  FILE *f = fopen(raw, "rb");
  if (!f)
    return NULL;
  size_t want = (size_t)w * h * 3;
  uint8_t *buf = malloc(want + 1);
  size_t got = fread(buf, 1, want + 1, f);
  fclose(f);
  unlink(raw);
  if (got != want) {
    fprintf(stderr, "%s: %zu bytes of RGB24, expected %dx%d\n", png, got, w, h);
    free(buf);
    return NULL;
  }
  return buf;
}

enum colour { RED, BLUE, GREEN, OTHER };
static const char *colour_names[] = {"red", "blue", "green", "other"};

static enum colour colour_at(const uint8_t *rgb, int w, int x, int y) {
  const uint8_t *px = rgb + ((size_t)y * w + x) * 3;
  if (px[0] > 180 && px[1] < 80 && px[2] < 80)
    return RED;
  if (px[2] > 180 && px[0] < 80 && px[1] < 80)
    return BLUE;
  if (px[1] > 100 && px[0] < 80 && px[2] < 80)
    return GREEN;
  return OTHER;
}

#define CHECK_COLOUR(rgb, w, x, y, want)                                                           \
  do {                                                                                             \
    enum colour got_ = colour_at(rgb, w, x, y);                                                    \
    CHECK(got_ == (want));                                                                         \
    if (got_ != (want))                                                                            \
      fprintf(stderr, "  pixel (%d,%d) is %s, expected %s\n", x, y, colour_names[got_],            \
              colour_names[want]);                                                                 \
  } while (0)

/* The fixture pattern: blue, a red box in the top-left quarter of the stored frame, and a
 * green box in the centre on frame 0 only (so a later frame is caught). */
#define PATTERN(w, h, rate, dur)                                                                   \
  "-f lavfi -i \"color=c=blue:s=" #w "x" #h ":r=" #rate ":d=" #dur                                 \
  ",drawbox=x=0:y=0:w=iw/4:h=ih/4:color=red:t=fill"                                                \
  ",drawbox=x=iw*3/8:y=ih*3/8:w=iw/4:h=ih/4:color=green:t=fill:enable='eq(n,0)'\" "

/* Checks a successful preview of a PATTERN video stored W x H, shown after ROTATION. */
static void check_preview(const char *name, int w, int h, int rotation, double duration) {
  struct afs_video_info info, pinfo;
  struct afs_error err = {0};
  char png[512];
  snprintf(png, sizeof png, "%s.png", p(name));
  double t0 = now_s();
  bool ok = afs_video_probe_preview(p(name), &info, png, &err);
  double dt = now_s() - t0;
  CHECK(ok);
  if (!ok) {
    fprintf(stderr, "  %s: %s\n", name, err.msg);
    return;
  }
  int dw = (rotation % 180) ? h : w, dh = (rotation % 180) ? w : h;
  printf("%s: %dx%d rotation %d duration %.3f s, preview in %.1f ms\n", name, info.width,
         info.height, info.rotation, info.duration, dt * 1000);
  CHECK(info.width == dw && info.height == dh);
  CHECK(info.rotation == rotation);
  CHECK(fabs(info.duration - duration) < 0.1);
  CHECK(afs_video_probe(p(name), &pinfo, &err));
  CHECK(pinfo.width == info.width && pinfo.height == info.height);
  CHECK(pinfo.rotation == info.rotation && fabs(pinfo.duration - info.duration) < 1e-9);

  /* Size and square pixels as another reader sees them (a 0:1 pHYs would be invalid). */
  char cmd[1024], line[128] = "", want[128];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -show_entries stream=width,height,sample_aspect_ratio "
           "-of csv=p=0 %s",
           png);
  FILE *f = popen(cmd, "r");
  if (f) {
    if (!fgets(line, sizeof line, f))
      line[0] = '\0';
    pclose(f);
  }
  line[strcspn(line, "\n")] = '\0';
  snprintf(want, sizeof want, "%d,%d,1:1", dw, dh);
  CHECK_STREQ(line, want);

  uint8_t *rgb = read_png(png, dw, dh);
  CHECK(rgb != NULL);
  if (!rgb)
    return;
  /* Where the stored top-left red box shows up after a clockwise rotation. */
  int mx = dw / 16, my = dh / 16;
  int cx[4] = {mx, dw - 1 - mx, dw - 1 - mx, mx}, cy[4] = {my, my, dh - 1 - my, dh - 1 - my};
  int red = rotation / 90; /* corner index: 0 TL, 1 TR, 2 BR, 3 BL */
  for (int k = 0; k < 4; k++)
    CHECK_COLOUR(rgb, dw, cx[k], cy[k], k == red ? RED : BLUE);
  CHECK_COLOUR(rgb, dw, dw / 2, dh / 2, GREEN); /* the first frame, not a later one */
  free(rgb);
  unlink(png);
}

/* Checks that NAME fails with a message containing WANT and leaves nothing behind. */
static void check_fails(const char *name, const char *want) {
  struct afs_video_info info = {.width = 7};
  struct afs_error err = {0};
  char png[512];
  snprintf(png, sizeof png, "%s/out-%s.png", g_dir, name);
  bool ok = afs_video_probe_preview(p(name), &info, png, &err);
  CHECK(!ok);
  CHECK(err.code != 0);
  CHECK(info.width == 0 && info.height == 0);
  printf("%s: %s\n", name, err.msg);
  CHECK(strstr(err.msg, want) != NULL);
  if (!strstr(err.msg, want))
    fprintf(stderr, "  %s: message lacks '%s'\n", name, want);
  CHECK(!exists(png));
  /* No temporary left either. */
  DIR *d = opendir(g_dir);
  for (struct dirent *e; d && (e = readdir(d));)
    CHECK(strncmp(e->d_name, "out-", 4) != 0);
  if (d)
    closedir(d);
  struct afs_error perr = {0};
  CHECK(!afs_video_probe(p(name), &info, &perr) || strstr(want, "codec"));
}

/* What ffprobe reads as the display matrix's rotation, as degrees clockwise (0 if none). */
static int ffprobe_rotation_cw(const char *name) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -select_streams v:0 -show_entries stream_side_data=rotation "
           "-of csv=p=0 %s",
           p(name));
  FILE *f = popen(cmd, "r");
  int ccw = 0;
  if (!f || fscanf(f, "%d", &ccw) != 1)
    ccw = 0;
  if (f)
    pclose(f);
  return ((-ccw) % 360 + 360) % 360;
}

/* Replaces every "avc1" in the file with "zzz1": the mp4 then declares a codec nobody has. */
static void unknown_codec_copy(const char *src, const char *dst) {
  FILE *in = fopen(src, "rb");
  if (!in)
    exit(1);
  fseek(in, 0, SEEK_END);
  long n = ftell(in);
  fseek(in, 0, SEEK_SET);
  char *buf = malloc(n);
  if (fread(buf, 1, n, in) != (size_t)n)
    exit(1);
  fclose(in);
  for (long i = 0; i + 4 <= n; i++)
    if (memcmp(buf + i, "avc1", 4) == 0)
      memcpy(buf + i, "zzz1", 4);
  FILE *out = fopen(dst, "wb");
  fwrite(buf, 1, n, out);
  fclose(out);
  free(buf);
}

struct thread_arg {
  const char *name;
  int w, h;
  bool ok;
};

static void *thread_main(void *argp) {
  struct thread_arg *a = argp;
  a->ok = true;
  for (int i = 0; i < 4; i++) {
    struct afs_video_info info;
    struct afs_error err = {0};
    char png[600];
    snprintf(png, sizeof png, "%s/thread-%p-%d.png", g_dir, argp, i);
    if (!afs_video_probe_preview(p(a->name), &info, png, &err) || info.width != a->w ||
        info.height != a->h) {
      fprintf(stderr, "thread %s: %s\n", a->name, err.msg);
      a->ok = false;
    }
    unlink(png);
  }
  return NULL;
}

int main(void) {
  if (system("ffmpeg -version >/dev/null 2>&1") != 0 ||
      system("ffprobe -version >/dev/null 2>&1") != 0) {
    printf("ffmpeg/ffprobe not installed: skipped\n");
    return 77;
  }
  afs_log_init("test_video", AFS_LOG_INFO, false);
  snprintf(g_dir, sizeof g_dir, "/tmp/afs-video-XXXXXX");
  if (!mkdtemp(g_dir))
    return 1;

  double t0 = now_s();
  /* mp4/H.264 with B-frames (reordering) and an audio track. */
  ffmpeg(PATTERN(320, 240, 25, 2) "-f lavfi -i sine=d=2 -c:v libx264 -preset veryfast "
                                  "-pix_fmt yuv420p -c:a aac -shortest h264.mp4");
  /* iPhone-like mov: HEVC 10-bit, hvc1 tag. */
  ffmpeg(PATTERN(320, 240, 30, 2) "-c:v libx265 -preset ultrafast -x265-params log-level=error "
                                  "-pix_fmt yuv420p10le -tag:v hvc1 hevc.mov");
  ffmpeg(PATTERN(320, 240, 25, 2) "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 300k "
                                  "vp9.webm");
  /* Same samples, display matrix only (stream copy), as phones write them. */
  for (int r = 90; r <= 270; r += 90) {
    char args[256];
    snprintf(args, sizeof args, "-i h264.mp4 -c copy -metadata:s:v rotate=%d rot%d.mp4", r, r);
    ffmpeg(args);
  }
  /* Anamorphic: 160x240 stored, pixel aspect 2:1, shown 320x240. */
  ffmpeg(PATTERN(160, 240, 25, 2) "-vf setsar=2 -c:v libx264 -preset ultrafast anamorphic.mp4");
  ffmpeg(PATTERN(160, 120, 5, 600) "-c:v libx264 -preset ultrafast long.mp4");
  ffmpeg(PATTERN(320, 240, 25, 2) "-c:v libx264 -preset ultrafast -movflags +faststart "
                                  "faststart.mp4");
  ffmpeg("-f lavfi -i sine=d=2 -c:a aac audio.mp4");
  ffmpeg(PATTERN(320, 240, 25, 2) "-c:v mpeg4 mpeg4.avi");
  /* MPEG-TS with 4-second GOPs, to be cut mid-GOP below. */
  ffmpeg(PATTERN(320, 240, 25, 8) "-c:v libx264 -preset veryfast -x264-params "
                                  "keyint=100:min-keyint=100:scenecut=0 gop.ts");
  printf("fixtures generated in %.1f s\n", now_s() - t0);

  check_preview("h264.mp4", 320, 240, 0, 2.0);
  check_preview("hevc.mov", 320, 240, 0, 2.0);
  check_preview("vp9.webm", 320, 240, 0, 2.0);
  bool saw_phone = false;
  for (int r = 90; r <= 270; r += 90) {
    char name[32];
    snprintf(name, sizeof name, "rot%d.mp4", r);
    /* The sign of ffmpeg's "rotate" tag changed between releases: trust the matrix. */
    int cw = ffprobe_rotation_cw(name);
    CHECK(cw != 0);
    saw_phone |= cw == 90;
    check_preview(name, 320, 240, cw, 2.0);
  }
  CHECK(saw_phone);
  check_preview("anamorphic.mp4", 320, 240, 0, 2.0);
  check_preview("mpeg4.avi", 320, 240, 0, 2.0);
  {
    /* A TS cut at 1.6 s (as a broadcast recording starts): the frames before the next
     * keyframe (4 s) cannot be decoded cleanly and are not taken as the preview. */
    cut_ts(p("gop.ts"), p("cut.ts"), 0.2);
    struct afs_video_info info;
    struct afs_error err = {0};
    CHECK(afs_video_probe_preview(p("cut.ts"), &info, p("cut.png"), &err));
    CHECK(info.width == 320 && info.height == 240);
    uint8_t *rgb = read_png(p("cut.png"), 320, 240);
    CHECK(rgb != NULL);
    if (rgb) {
      CHECK_COLOUR(rgb, 320, 20, 15, RED);
      CHECK_COLOUR(rgb, 320, 300, 15, BLUE);
      CHECK_COLOUR(rgb, 320, 300, 225, BLUE);
      CHECK_COLOUR(rgb, 320, 20, 225, BLUE);
      CHECK_COLOUR(rgb, 320, 160, 120, BLUE);
      free(rgb);
    }
    printf("cut.ts: %dx%d duration %.2f s: %s\n", info.width, info.height, info.duration,
           err.msg[0] ? err.msg : "preview from the first clean frame");
  }

  double t1 = now_s();
  check_preview("long.mp4", 160, 120, 0, 600.0);
  double long_s = now_s() - t1;
  printf("10-minute clip: probe + preview + probe in %.1f ms\n", long_s * 1000);
  CHECK(long_s < 5.0);

  /* Failures: each false, with a reason, no output. */
  truncate_copy(p("h264.mp4"), p("truncated.mp4"), 0.5); /* moov is at the end: gone */
  check_fails("truncated.mp4", "moov atom not found");
  truncate_copy(p("faststart.mp4"), p("truncated-faststart.mp4"), 0.6);
  check_fails("truncated-faststart.mp4", "truncated");
  write_text(p("text.mp4"), "This is not a video, only some text in a file named .mp4.\n");
  check_fails("text.mp4", "not a readable video"); /* taken for mp4 by its name, no moov */
  write_text(p("text.webm"), "WEBVTT\n\n00:00.000 --> 00:01.000\nsubtitles, not a video\n");
  check_fails("text.webm", "not a video");
  /* A playlist must not make FFmpeg fetch anything, from the network or from other files. */
  write_text(p("playlist.mp4"), "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n"
                                "http://127.0.0.1:9/segment.ts\n#EXTINF:2.0,\n"
                                "file:///etc/passwd\n#EXT-X-ENDLIST\n");
  check_fails("playlist.mp4", "not a video");
  check_fails("audio.mp4", "no video stream");
  write_text(p("empty.mp4"), "");
  check_fails("empty.mp4", "not a readable video");
  check_fails("missing.mp4", "No such file");
  CHECK(mkfifo(p("fifo.mp4"), 0600) == 0); /* would block in open(2) if it were opened */
  check_fails("fifo.mp4", "not a regular file");
  truncate_copy(p("vp9.webm"), p("truncated.webm"), 0.5);
  check_fails("truncated.webm", "truncated");
  truncate_copy(p("mpeg4.avi"), p("truncated.avi"), 0.7);
  check_fails("truncated.avi", "truncated");
  /* However big the file, reading stops at the byte budget (96 MiB after the header). */
  ts_without_video(p("gop.ts"), p("novideo.ts"), 110);
  double t2 = now_s();
  check_fails("novideo.ts", "no frame in the first 96 MiB");
  printf("novideo.ts: gave up in %.0f ms\n", (now_s() - t2) * 1000);
  unlink(p("novideo.ts"));
  unknown_codec_copy(p("h264.mp4"), p("unknown-codec.mp4"));
  check_fails("unknown-codec.mp4", "unsupported video codec");
  {
    /* Probe-only still reports what the container says when the codec is unknown. */
    struct afs_video_info info;
    struct afs_error err = {0};
    CHECK(afs_video_probe(p("unknown-codec.mp4"), &info, &err));
    CHECK(info.width == 320 && info.height == 240 && fabs(info.duration - 2.0) < 0.1);
  }
  {
    /* An unwritable output: false, and the error names the cause. */
    struct afs_video_info info;
    struct afs_error err = {0};
    CHECK(!afs_video_probe_preview(p("h264.mp4"), &info, "/nonexistent-dir/x.png", &err));
    CHECK(err.code == ENOENT);
  }

  /* Concurrent calls on distinct files and on the same file. */
  struct thread_arg args[4] = {
      {"h264.mp4", 320, 240, false},
      {"hevc.mov", 320, 240, false},
      {"vp9.webm", 320, 240, false},
      {"rot270.mp4", 240, 320, false},
  };
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, thread_main, &args[i]);
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(args[i].ok);
  }

  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", g_dir);
  TEST_MAIN_END();
}
