#include "assetfs/video_png.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>
#include <libavutil/frame.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

static bool fail_av(struct afs_error *err, int rc, const char *what) {
  char buf[AV_ERROR_MAX_STRING_SIZE];
  av_strerror(rc, buf, sizeof buf);
  return afs_error_set(err, (rc < 0 && rc > -4096) ? -rc : EINVAL, "%s: %s", what, buf);
}

static bool has_alpha(enum AVPixelFormat f) {
  const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(f);
  return d && (d->flags & AV_PIX_FMT_FLAG_ALPHA);
}

/* Converts the decoded frame to packed RGB24/RGBA at width dst_w (pixel aspect applied).
 * Returns a new frame (caller frees) or NULL with err set. */
static AVFrame *to_rgb(const AVFrame *src, int dst_w, struct afs_error *err) {
  enum AVPixelFormat dst_fmt = has_alpha(src->format) ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
  struct SwsContext *sws = NULL;
  AVFrame *rgb = av_frame_alloc();
  if (!rgb)
    goto nomem;
  rgb->format = dst_fmt;
  rgb->width = dst_w;
  rgb->height = src->height;
  if (av_frame_get_buffer(rgb, 0) < 0)
    goto nomem;
  sws = sws_getContext(src->width, src->height, src->format, dst_w, src->height, dst_fmt,
                       SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, NULL, NULL, NULL);
  if (!sws) {
    afs_error_set(err, EINVAL, "cannot convert pixel format %s",
                  av_get_pix_fmt_name(src->format) ? av_get_pix_fmt_name(src->format) : "?");
    goto fail;
  }
  const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(src->format);
  if (d && !(d->flags & AV_PIX_FMT_FLAG_RGB) && d->nb_components >= 3) {
    /* Honour the stream's matrix and range; unspecified HD streams are BT.709 in practice. */
    int cs = src->colorspace;
    if (cs == AVCOL_SPC_UNSPECIFIED || cs == AVCOL_SPC_RGB || cs == AVCOL_SPC_RESERVED)
      cs = src->height >= 720 ? SWS_CS_ITU709 : SWS_CS_DEFAULT;
    int full = src->color_range == AVCOL_RANGE_JPEG || src->format == AV_PIX_FMT_YUVJ420P ||
               src->format == AV_PIX_FMT_YUVJ422P || src->format == AV_PIX_FMT_YUVJ444P;
    sws_setColorspaceDetails(sws, sws_getCoefficients(cs), full,
                             sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
  }
  if (sws_scale(sws, (const uint8_t *const *)src->data, src->linesize, 0, src->height, rgb->data,
                rgb->linesize) != rgb->height) {
    afs_error_set(err, EINVAL, "pixel format conversion failed");
    goto fail;
  }
  sws_freeContext(sws);
  return rgb;
nomem:
  afs_error_set(err, ENOMEM, "out of memory for a %dx%d frame", dst_w, src->height);
fail:
  sws_freeContext(sws);
  av_frame_free(&rgb);
  return NULL;
}

/* Rotates a packed RGB(A) frame clockwise by 90/180/270 degrees into a new frame (caller frees). */
static AVFrame *rotate(const AVFrame *src, int rotation, struct afs_error *err) {
  int w = src->width, h = src->height, bpp = src->format == AV_PIX_FMT_RGBA ? 4 : 3;
  AVFrame *dst = av_frame_alloc();
  if (!dst)
    goto nomem;
  dst->format = src->format;
  dst->width = rotation == 180 ? w : h;
  dst->height = rotation == 180 ? h : w;
  if (av_frame_get_buffer(dst, 0) < 0)
    goto nomem;
  for (int y = 0; y < h; y++) {
    const uint8_t *s = src->data[0] + (ptrdiff_t)y * src->linesize[0];
    for (int x = 0; x < w; x++, s += bpp) {
      int dx, dy;
      if (rotation == 90) {
        dx = h - 1 - y;
        dy = x;
      } else if (rotation == 180) {
        dx = w - 1 - x;
        dy = h - 1 - y;
      } else {
        dx = y;
        dy = w - 1 - x;
      }
      memcpy(dst->data[0] + (ptrdiff_t)dy * dst->linesize[0] + (ptrdiff_t)dx * bpp, s, bpp);
    }
  }
  return dst;
nomem:
  av_frame_free(&dst);
  afs_error_set(err, ENOMEM, "out of memory rotating a %dx%d frame", w, h);
  return NULL;
}

static bool write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return false;
    p += k;
    n -= (size_t)k;
  }
  return true;
}

/* Encodes IMG as PNG into OUT through a temporary file in the same directory and a rename, so
 * OUT is either complete or untouched. */
static bool write_png(const AVFrame *img, const char *out, struct afs_error *err) {
  bool ok = false;
  AVCodecContext *enc = NULL;
  AVPacket *pkt = NULL;
  char *tmp = NULL;
  int fd = -1;
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_PNG);
  if (!codec) {
    afs_error_set(err, ENOSYS, "this FFmpeg has no PNG encoder");
    goto done;
  }
  enc = avcodec_alloc_context3(codec);
  pkt = av_packet_alloc();
  if (!enc || !pkt) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  enc->width = img->width;
  enc->height = img->height;
  enc->pix_fmt = img->format;
  enc->time_base = (AVRational){1, 25};
  /* The encoder always writes a pHYs chunk from this: 0:1 (unset) would be an invalid one. */
  enc->sample_aspect_ratio = (AVRational){1, 1};
  enc->thread_count = 1;
  /* Paeth prediction: ~15% smaller files than none for ~10% more time. */
  AVDictionary *opts = NULL;
  av_dict_set(&opts, "pred", "paeth", 0);
  int rc = avcodec_open2(enc, codec, &opts);
  av_dict_free(&opts);
  if (rc < 0) {
    fail_av(err, rc, "cannot open the PNG encoder");
    goto done;
  }
  rc = avcodec_send_frame(enc, img);
  if (rc >= 0)
    rc = avcodec_receive_packet(enc, pkt);
  if (rc < 0) {
    fail_av(err, rc, "PNG encoding failed");
    goto done;
  }
  if (asprintf(&tmp, "%s.tmp-XXXXXX", out) < 0) {
    tmp = NULL;
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    afs_error_set(err, errno, "cannot create %s: %s", tmp, strerror(errno));
    free(tmp);
    tmp = NULL;
    goto done;
  }
  if (!write_all(fd, pkt->data, (size_t)pkt->size)) {
    afs_error_set(err, errno ? errno : EIO, "cannot write the preview: %s", strerror(errno));
    goto done;
  }
  if (close(fd) != 0) {
    fd = -1;
    afs_error_set(err, errno, "cannot write the preview: %s", strerror(errno));
    goto done;
  }
  fd = -1;
  if (rename(tmp, out) != 0) {
    afs_error_set(err, errno, "cannot rename the preview to %s: %s", out, strerror(errno));
    goto done;
  }
  ok = true;
done:
  if (fd >= 0)
    close(fd);
  if (tmp && !ok)
    unlink(tmp);
  free(tmp);
  av_packet_free(&pkt);
  avcodec_free_context(&enc);
  return ok;
}

bool afs_video_png_write(struct AVFrame **frame, int display_width, int rotation, const char *out,
                         struct afs_error *err) {
  AVFrame *rgb = to_rgb(*frame, display_width, err), *rot = NULL;
  av_frame_free(frame);
  if (!rgb)
    return false;
  if (rotation == 90 || rotation == 180 || rotation == 270) {
    rot = rotate(rgb, rotation, err);
    av_frame_free(&rgb);
    if (!rot)
      return false;
  }
  bool ok = write_png(rot ? rot : rgb, out, err);
  av_frame_free(&rot);
  av_frame_free(&rgb);
  return ok;
}
