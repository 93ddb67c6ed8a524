#include "assetfs/video.h"
#include "assetfs/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avstring.h>
#include <libavutil/display.h>

#include "assetfs/log.h"
#include "assetfs/video_png.h"

/* Header probing: enough for the codec parameters of 4K/8K streams, small enough that a file
 * with a hostile header cannot make avformat_find_stream_info read for long. */
#define PROBE_SIZE "8388608"
#define ANALYZE_DURATION_US "5000000"
#define MAX_DIM 16384
#define MAX_DECODE_ERRORS 50
#define MAX_LOGGED_PER_CALL 20

/* Containers that video files come in (names as libavformat's demuxers spell them). The list
 * keeps out everything else FFmpeg can open, in particular hls and concat, which would follow
 * references to other files or URLs written in a user's file, and image/text formats. */
static const char k_formats[] = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,mpegvideo,"
                                "flv,asf,ogg,h264,hevc,m4v,mxf,dv,ivf,obu,nut,rm";

/* One call's state, reachable from FFmpeg's callbacks (interrupt: opaque pointer; log: the
 * thread-local t_call, since FFmpeg's log callback is process-wide). */
struct call {
  int64_t deadline_ns;
  bool timed_out;
  const AVIOContext *pb; /* once set: the input, whose bytes_read is held to max_bytes_read */
  int64_t max_bytes_read;
  bool over_budget;
  char first_error[200]; /* first FFmpeg error-level message during the call */
  int nlogged, nsuppressed;
};

static _Thread_local struct call *t_call;
static _Thread_local int t_print_prefix = 1;
static pthread_once_t g_log_once = PTHREAD_ONCE_INIT;

static void chomp(char *s) {
  size_t n = strlen(s);
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
    s[--n] = '\0';
}

static void log_cb(void *avcl, int level, const char *fmt, va_list vl) {
  if (level > AV_LOG_VERBOSE)
    return;
  struct call *c = t_call;
  bool fatal = level <= AV_LOG_FATAL;
  bool capture = c && level <= AV_LOG_ERROR && !c->first_error[0];
  bool debug = afs_log_get_level() >= AFS_LOG_DEBUG && (!c || c->nlogged < MAX_LOGGED_PER_CALL);
  if (c && !debug && afs_log_get_level() >= AFS_LOG_DEBUG)
    c->nsuppressed++;
  if (!fatal && !capture && !debug)
    return;
  if (capture) {
    va_list copy;
    va_copy(copy, vl);
    vsnprintf(c->first_error, sizeof c->first_error, fmt, copy);
    va_end(copy);
    chomp(c->first_error);
  }
  char line[1024];
  av_log_format_line2(avcl, level, fmt, vl, line, sizeof line, &t_print_prefix);
  chomp(line);
  if (!line[0])
    return;
  if (fatal) {
    afs_warn("video: ffmpeg: %s", line);
  } else if (debug) {
    if (c)
      c->nlogged++;
    afs_log(AFS_LOG_DEBUG, "video: ffmpeg: %s", line);
  }
}

static void install_log_cb(void) {
  av_log_set_callback(log_cb);
}

/* Also holds the bytes read to a budget: packets of discarded streams never come out of
 * av_read_frame, so counting packets alone would not stop a demuxer skipping through a file. */
static int interrupt_cb(void *opaque) {
  struct call *c = opaque;
  if (afs_monotonic_ns() > c->deadline_ns) {
    c->timed_out = true;
    return 1;
  }
  if (c->pb && c->pb->bytes_read > c->max_bytes_read) {
    c->over_budget = true;
    return 1;
  }
  return 0;
}

static void call_begin(struct call *c) {
  pthread_once(&g_log_once, install_log_cb);
  memset(c, 0, sizeof *c);
  c->deadline_ns = afs_monotonic_ns() + (int64_t)AFS_VIDEO_DEADLINE_S * 1000000000;
  t_call = c;
}

static void call_end(struct call *c) {
  if (c->nsuppressed)
    afs_debug("video: %d more ffmpeg messages suppressed", c->nsuppressed);
  t_call = NULL;
}

/* Fills err for an FFmpeg failure: errno-range codes keep their errno, content errors are
 * EINVAL; the FFmpeg message and the first logged FFmpeg error explain it. */
static bool fail_av(struct call *c, struct afs_error *err, int rc, const char *what) {
  if (c->timed_out)
    return afs_error_set(err, AFS_E_DEADLINE, "%s: gave up after %d s", what, AFS_VIDEO_DEADLINE_S);
  if (c->over_budget)
    return afs_error_set(err, EINVAL, "%s: no frame in the first %d MiB after the header", what,
                         AFS_VIDEO_MAX_BYTES >> 20);
  char buf[AV_ERROR_MAX_STRING_SIZE];
  av_strerror(rc, buf, sizeof buf);
  int code = (rc < 0 && rc > -4096) ? -rc : EINVAL;
  if (c->first_error[0] && !strstr(buf, c->first_error))
    return afs_error_set(err, code, "%s: %s (%s)", what, buf, c->first_error);
  return afs_error_set(err, code, "%s: %s", what, buf);
}

/* Degrees clockwise that a player rotates the stored frames by. The display matrix rotates
 * counter-clockwise (av_display_rotation_get); other angles round to the nearest quarter turn,
 * and mirroring is ignored. */
static int rotation_of(const int32_t *matrix) {
  if (!matrix)
    return 0;
  double ccw = av_display_rotation_get(matrix);
  if (isnan(ccw))
    return 0;
  double x = -ccw; /* rounded by hand: lround would need libm on the link line */
  long cw = (x >= 0 ? (long)(x + 0.5) : -(long)(0.5 - x)) % 360;
  if (cw < 0)
    cw += 360;
  return (int)(((cw + 45) / 90) % 4) * 90;
}

static int stream_rotation(const AVStream *st) {
  return rotation_of((const int32_t *)av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, NULL));
}

/* Width once the pixel aspect ratio is applied (players stretch the width). */
static int display_width(int w, AVRational sar) {
  if (sar.num <= 0 || sar.den <= 0 || sar.num == sar.den)
    return w;
  int64_t s = av_rescale(w, sar.num, sar.den);
  return (s >= 1 && s <= MAX_DIM) ? (int)s : w;
}

static void fill_size(struct afs_video_info *info, int w, int h, int rotation) {
  info->rotation = rotation;
  info->width = (rotation == 90 || rotation == 270) ? h : w;
  info->height = (rotation == 90 || rotation == 270) ? w : h;
}

static double duration_of(const AVFormatContext *fmt, const AVStream *st) {
  if (fmt->duration != AV_NOPTS_VALUE && fmt->duration > 0)
    return (double)fmt->duration / AV_TIME_BASE;
  if (st->duration != AV_NOPTS_VALUE && st->duration > 0)
    return (double)st->duration * av_q2d(st->time_base);
  return 0;
}

/* Reads an EBML variable-size integer; returns its length (0 if malformed) and sets *unknown
 * for the all-ones value ("size unknown", live streams). */
static int ebml_vint(const uint8_t *p, const uint8_t *end, uint64_t *val, bool *unknown) {
  if (p >= end || !*p)
    return 0;
  int len = __builtin_clz((unsigned)*p) - 23;
  if (end - p < len)
    return 0;
  uint64_t v = p[0] & (0xFFu >> len);
  bool ones = v == (0xFFu >> len);
  for (int i = 1; i < len; i++) {
    v = v << 8 | p[i];
    ones = ones && p[i] == 0xFF;
  }
  *val = v;
  *unknown = ones;
  return len;
}

/* Where the container's top-level header says the file ends (Matroska: end of the Segment;
 * AVI: end of the first RIFF chunk), or -1 when it does not say. */
static int64_t declared_end(const char *path, const char *format) {
  uint8_t buf[512];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  close(fd);
  if (n < 12)
    return -1;
  const uint8_t *end = buf + n;
  if (strncmp(format, "avi", 3) == 0 && memcmp(buf, "RIFF", 4) == 0) {
    uint32_t size = buf[4] | buf[5] << 8 | buf[6] << 16 | (uint32_t)buf[7] << 24;
    return size ? 8 + (int64_t)size + (size & 1) : -1;
  }
  if (strncmp(format, "matroska", 8) != 0 || memcmp(buf, "\x1a\x45\xdf\xa3", 4) != 0)
    return -1;
  uint64_t size;
  bool unknown;
  int len = ebml_vint(buf + 4, end, &size, &unknown);
  if (!len || unknown || size > sizeof buf)
    return -1;
  const uint8_t *seg = buf + 4 + len + size;
  if (end - seg < 5 || memcmp(seg, "\x18\x53\x80\x67", 4) != 0)
    return -1;
  len = ebml_vint(seg + 4, end, &size, &unknown);
  if (!len || unknown || size > INT64_MAX / 2)
    return -1;
  return (int64_t)(seg + 4 + len - buf) + (int64_t)size;
}

/* A truncated file (interrupted copy) often still decodes its first frame: catch it from the
 * container's own bookkeeping. mov/mp4 index every sample from the moov box, so a sample that
 * ends past the end of the file proves truncation even when the moov came first; Matroska and
 * AVI state their total size up front. MPEG-TS and friends cannot tell and are accepted. */
static bool check_complete(const AVFormatContext *fmt, const char *path, struct afs_error *err) {
  int64_t size = fmt->pb ? avio_size(fmt->pb) : -1;
  if (size <= 0)
    return true;
  const char *name = fmt->iformat->name;
  if (strncmp(name, "mov,", 4) != 0) {
    int64_t want = declared_end(path, name);
    if (want > size)
      return afs_error_set(err, EINVAL,
                           "truncated file: the %s header says %lld bytes, file has %lld", name,
                           (long long)want, (long long)size);
    return true;
  }
  for (unsigned i = 0; i < fmt->nb_streams; i++) {
    AVStream *st = fmt->streams[i];
    int n = avformat_index_get_entries_count(st);
    for (int k = n - 1; k >= 0 && k >= n - 64; k--) {
      const AVIndexEntry *e = avformat_index_get_entry(st, k);
      if (e && e->pos + e->size > size)
        return afs_error_set(err, EINVAL,
                             "truncated file: stream %u has data up to byte %lld, file has %lld", i,
                             (long long)(e->pos + e->size), (long long)size);
    }
  }
  return true;
}

/* The stream a player shows: a video stream that is not cover art, the default one first,
 * then the largest. Returns -1 if none. */
static int pick_stream(const AVFormatContext *fmt) {
  int best = -1;
  int64_t best_score = -1;
  for (unsigned i = 0; i < fmt->nb_streams; i++) {
    const AVStream *st = fmt->streams[i];
    if (st->codecpar->codec_type != AVMEDIA_TYPE_VIDEO ||
        (st->disposition & AV_DISPOSITION_ATTACHED_PIC))
      continue;
    int64_t score = (int64_t)st->codecpar->width * st->codecpar->height;
    if (st->disposition & AV_DISPOSITION_DEFAULT)
      score += (int64_t)1 << 40;
    if (score > best_score) {
      best = (int)i;
      best_score = score;
    }
  }
  return best;
}

/* Opens and probes PATH; on success *out owns the context (avformat_close_input) and *vstream
 * is the video stream's index; every other stream is discarded so the demuxer skips it. */
static bool open_video(struct call *c, const char *path, AVFormatContext **out, int *vstream,
                       struct afs_error *err) {
  bool ok = false;
  AVDictionary *opts = NULL;
  char *url = NULL;
  AVFormatContext *fmt = NULL;
  /* Regular files only: opening a FIFO or a device could block where no deadline reaches. */
  struct stat stbuf;
  if (stat(path, &stbuf) != 0) {
    afs_error_set(err, errno, "cannot open: %s", strerror(errno));
    goto done;
  }
  if (!S_ISREG(stbuf.st_mode)) {
    afs_error_set(err, EINVAL, "not a regular file");
    goto done;
  }
  fmt = avformat_alloc_context();
  if (!fmt) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  fmt->interrupt_callback.callback = interrupt_cb;
  fmt->interrupt_callback.opaque = c;
  av_dict_set(&opts, "probesize", PROBE_SIZE, 0);
  av_dict_set(&opts, "analyzeduration", ANALYZE_DURATION_US, 0);
  av_dict_set(&opts, "protocol_whitelist", "file", 0);
  av_dict_set(&opts, "format_whitelist", k_formats, 0);
  /* "file:" so a name with a colon is never taken for a protocol. */
  url = av_asprintf("file:%s", path);
  if (!url) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  int rc = avformat_open_input(&fmt, url, NULL, &opts); /* frees fmt on failure */
  if (rc < 0) {
    if (rc == AVERROR(EINVAL) && strstr(c->first_error, "not on whitelist"))
      afs_error_set(err, EINVAL,
                    "not a video: FFmpeg detects a format that is not a video "
                    "container");
    else
      fail_av(c, err, rc, "not a readable video");
    goto done;
  }
  rc = avformat_find_stream_info(fmt, NULL);
  if (rc < 0) {
    fail_av(c, err, rc, "cannot read stream information");
    goto done;
  }
  int vi = pick_stream(fmt);
  if (vi < 0) {
    afs_error_set(err, EINVAL, "no video stream (container %s)", fmt->iformat->name);
    goto done;
  }
  if (!check_complete(fmt, path, err))
    goto done;
  for (unsigned i = 0; i < fmt->nb_streams; i++)
    if ((int)i != vi)
      fmt->streams[i]->discard = AVDISCARD_ALL;
  *vstream = vi;
  ok = true;
done:
  if (!ok)
    avformat_close_input(&fmt);
  *out = fmt;
  av_dict_free(&opts);
  av_free(url);
  return ok;
}

static bool check_dims(int w, int h, struct afs_error *err) {
  if (w <= 0 || h <= 0)
    return afs_error_set(err, EINVAL, "unknown frame size");
  if (w > MAX_DIM || h > MAX_DIM || (int64_t)w * h > AFS_VIDEO_MAX_PIXELS)
    return afs_error_set(err, EINVAL, "frame size %dx%d is over the limit (%d pixels)", w, h,
                         AFS_VIDEO_MAX_PIXELS);
  return true;
}

bool afs_video_probe(const char *path, struct afs_video_info *info, struct afs_error *err) {
  struct call c;
  call_begin(&c);
  memset(info, 0, sizeof *info);
  AVFormatContext *fmt = NULL;
  int vi = -1;
  bool ok = false;
  if (!open_video(&c, path, &fmt, &vi, err))
    goto done;
  AVStream *st = fmt->streams[vi];
  int w = st->codecpar->width, h = st->codecpar->height;
  if (!check_dims(w, h, err))
    goto done;
  int dw = display_width(w, av_guess_sample_aspect_ratio(fmt, st, NULL));
  if (!check_dims(dw, h, err))
    goto done;
  info->duration = duration_of(fmt, st);
  fill_size(info, dw, h, stream_rotation(st));
  ok = true;
done:
  avformat_close_input(&fmt);
  call_end(&c);
  return ok;
}

/* Decodes the first frame to show into *frame, in presentation order. Frames the decoder
 * flags as damaged (concealed errors) are passed over for a clean one, but the first of them
 * is kept and used if no clean frame comes before the end or the limits: a player would show
 * it. Reads at most AFS_VIDEO_MAX_PACKETS / AFS_VIDEO_MAX_BYTES. */
static bool decode_first(struct call *c, AVFormatContext *fmt, AVStream *st, AVFrame *frame,
                         struct afs_error *err) {
  bool ok = false;
  AVCodecContext *dec = NULL;
  AVPacket *pkt = NULL;
  AVFrame *damaged = NULL;
  const AVCodec *codec = avcodec_find_decoder(st->codecpar->codec_id);
  if (!codec) {
    char tag[AV_FOURCC_MAX_STRING_SIZE];
    av_fourcc_make_string(tag, st->codecpar->codec_tag);
    afs_error_set(err, EINVAL, "unsupported video codec %s (tag %s)",
                  avcodec_get_name(st->codecpar->codec_id), tag);
    goto done;
  }
  dec = avcodec_alloc_context3(codec);
  pkt = av_packet_alloc();
  if (!dec || !pkt) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  int rc = avcodec_parameters_to_context(dec, st->codecpar);
  if (rc < 0) {
    fail_av(c, err, rc, "cannot set up the decoder");
    goto done;
  }
  /* Frame threads would read ahead and hold several frames; one frame needs one thread. */
  dec->thread_count = 1;
  dec->pkt_timebase = st->time_base;
  dec->max_pixels = AFS_VIDEO_MAX_PIXELS;
  /* A stream that starts mid-GOP yields grey smears until a keyframe: not a preview. */
  dec->flags &= ~AV_CODEC_FLAG_OUTPUT_CORRUPT;
  rc = avcodec_open2(dec, codec, NULL);
  if (rc < 0) {
    fail_av(c, err, rc, "cannot open the decoder");
    goto done;
  }
  int npackets = 0, nerrors = 0;
  int64_t nbytes = 0;
  bool eof = false;
  if (fmt->pb) {
    c->max_bytes_read = fmt->pb->bytes_read + AFS_VIDEO_MAX_BYTES;
    c->pb = fmt->pb;
  }
  for (;;) {
    if (afs_monotonic_ns() > c->deadline_ns) {
      afs_error_set(err, AFS_E_DEADLINE, "no frame decoded within %d s", AFS_VIDEO_DEADLINE_S);
      goto done;
    }
    if (!eof) {
      rc = av_read_frame(fmt, pkt);
      if (rc == AVERROR_EOF) {
        eof = true;
        avcodec_send_packet(dec, NULL); /* flush: frames held for reordering come out */
      } else if (rc < 0) {
        fail_av(c, err, rc, "cannot read the video");
        goto done;
      } else {
        npackets++;
        nbytes += pkt->size;
        if (pkt->stream_index == st->index) {
          rc = avcodec_send_packet(dec, pkt);
          if (rc < 0 && ++nerrors > MAX_DECODE_ERRORS) {
            av_packet_unref(pkt);
            fail_av(c, err, rc, "cannot decode the video");
            goto done;
          }
        }
        av_packet_unref(pkt);
      }
    }
    for (;;) {
      rc = avcodec_receive_frame(dec, frame);
      if (rc == AVERROR(EAGAIN))
        break;
      if (rc < 0) {
        if (rc == AVERROR_EOF)
          afs_error_set(err, EINVAL, "no decodable frame in the file%s%s",
                        c->first_error[0] ? ": " : "", c->first_error);
        else
          fail_av(c, err, rc, "cannot decode the video");
        goto done;
      }
      if (!(frame->flags & AV_FRAME_FLAG_CORRUPT) && !frame->decode_error_flags) {
        ok = true;
        goto done;
      }
      if (!damaged && (damaged = av_frame_alloc()))
        av_frame_move_ref(damaged, frame);
      av_frame_unref(frame);
    }
    if (eof) { /* drained without EOF: cannot happen per the API, but never spin */
      afs_error_set(err, EINVAL, "no decodable frame in the file");
      goto done;
    }
    if (npackets >= AFS_VIDEO_MAX_PACKETS || nbytes >= AFS_VIDEO_MAX_BYTES) {
      afs_error_set(err, EINVAL, "no decodable frame in the first %d packets (%lld bytes)%s%s",
                    npackets, (long long)nbytes, c->first_error[0] ? ": " : "", c->first_error);
      goto done;
    }
  }
done:
  c->pb = NULL;
  if (!ok && damaged && damaged->buf[0]) {
    afs_debug("video: no clean frame (%s): using the first frame with concealed errors",
              err ? err->msg : "");
    av_frame_unref(frame);
    av_frame_move_ref(frame, damaged);
    afs_error_clear(err);
    ok = true;
  }
  av_frame_free(&damaged);
  av_packet_free(&pkt);
  avcodec_free_context(&dec);
  return ok;
}

bool afs_video_probe_preview(const char *path, struct afs_video_info *info,
                             const char *png_out_path, struct afs_error *err) {
  struct call c;
  call_begin(&c);
  memset(info, 0, sizeof *info);
  AVFormatContext *fmt = NULL;
  AVFrame *frame = av_frame_alloc();
  int vi = -1;
  bool ok = false;
  if (!frame) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  if (!open_video(&c, path, &fmt, &vi, err))
    goto done;
  AVStream *st = fmt->streams[vi];
  /* Refuse huge sizes before the decoder allocates for them (0 = not known yet). */
  if ((st->codecpar->width || st->codecpar->height) &&
      !check_dims(st->codecpar->width, st->codecpar->height, err))
    goto done;
  if (!decode_first(&c, fmt, st, frame, err))
    goto done;
  if (!check_dims(frame->width, frame->height, err))
    goto done;
  int rotation = stream_rotation(st);
  if (!av_stream_get_side_data(st, AV_PKT_DATA_DISPLAYMATRIX, NULL)) {
    /* No container matrix: the bitstream may carry one (H.264/HEVC display orientation). */
    AVFrameSideData *sd = av_frame_get_side_data(frame, AV_FRAME_DATA_DISPLAYMATRIX);
    if (sd && sd->size >= 9 * sizeof(int32_t))
      rotation = rotation_of((const int32_t *)sd->data);
  }
  int w = display_width(frame->width, av_guess_sample_aspect_ratio(fmt, st, frame));
  if (!check_dims(w, frame->height, err))
    goto done;
  info->duration = duration_of(fmt, st);
  fill_size(info, w, frame->height, rotation);
  /* Free the demuxer's buffers before the RGB copies: peak memory is two frames, not three. */
  avformat_close_input(&fmt);
  if (!afs_video_png_write(&frame, w, rotation, png_out_path, err))
    goto done;
  ok = true;
done:
  if (!ok)
    memset(info, 0, sizeof *info);
  av_frame_free(&frame);
  avformat_close_input(&fmt);
  call_end(&c);
  return ok;
}
