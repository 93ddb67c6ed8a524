#include "assetfs/image.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <vips/vips.h>

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_init_ok;

static void do_init(void) {
  g_init_ok = vips_init("assetfs") == 0;
  if (g_init_ok) {
    /* The filesystem works on one file at a time per thread; vips' own cache only
     * holds on to memory and file descriptors of files the user may delete. */
    vips_cache_set_max(0);
    vips_cache_set_max_files(0);
    vips_concurrency_set(1);
  }
}

bool afs_image_global_init(struct afs_error *err) {
  pthread_once(&g_once, do_init);
  if (!g_init_ok)
    return afs_error_set(err, EIO, "libvips cannot start");
  return true;
}

/* Copies libvips' (process-global) error buffer into err and clears it. */
static bool vips_fail(struct afs_error *err, const char *what, const char *path) {
  char buf[AFS_ERROR_MSG_MAX];
  snprintf(buf, sizeof buf, "%s", vips_error_buffer());
  vips_error_clear();
  size_t n = strlen(buf);
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
    buf[--n] = '\0';
  return afs_error_set(err, EIO, "%s %s: %s", what, path, buf[0] ? buf : "libvips error");
}

bool afs_image_is_image(const char *path) {
  if (!afs_image_global_init(NULL))
    return false;
  const char *loader = vips_foreign_find_load(path);
  vips_error_clear();
  return loader != NULL;
}

static bool band_average(VipsImage *img, int band, double *out) {
  VipsImage *b = NULL;
  int rc = vips_extract_band(img, &b, band, NULL);
  if (rc == 0)
    rc = vips_avg(b, out, NULL);
  if (b)
    g_object_unref(b);
  return rc == 0;
}

static int clamp255(double v) {
  return v < 0 ? 0 : v > 255 ? 255 : (int)(v + 0.5);
}

bool afs_image_probe(const char *path, struct afs_image_info *info, struct afs_error *err) {
  bool ok = false;
  VipsImage *img = NULL, *thumb = NULL, *srgb = NULL, *mem = NULL;
  memset(info, 0, sizeof *info);
  if (!afs_image_global_init(err))
    return false;
  img = vips_image_new_from_file(path, "access", VIPS_ACCESS_SEQUENTIAL, NULL);
  if (!img) {
    vips_fail(err, "cannot read image", path);
    goto done;
  }
  info->width = vips_image_get_width(img);
  info->height = vips_image_get_height(img);
  if (vips_image_get_orientation_swap(img)) {
    info->width = vips_image_get_height(img);
    info->height = vips_image_get_width(img);
  }
  /* The average of a small thumbnail is the average of the image to within a unit,
   * and shrink-on-load makes it cheap for large JPEGs. */
  if (vips_thumbnail(path, &thumb, 64, "height", 64, "size", VIPS_SIZE_DOWN, NULL) ||
      vips_colourspace(thumb, &srgb, VIPS_INTERPRETATION_sRGB, NULL) ||
      !(mem = vips_image_copy_memory(srgb))) {
    vips_fail(err, "cannot average image", path);
    goto done;
  }
  double rgb[3] = {0, 0, 0};
  /* In memory: the loader is sequential and each band is one more pass. */
  int bands = vips_image_get_bands(mem);
  for (int i = 0; i < 3; i++) {
    if (!band_average(mem, bands >= 3 ? i : 0, &rgb[i])) {
      vips_fail(err, "cannot average image", path);
      goto done;
    }
  }
  snprintf(info->color, sizeof info->color, "#%02X%02X%02X", clamp255(rgb[0]), clamp255(rgb[1]),
           clamp255(rgb[2]));
  ok = true;
done:
  if (mem)
    g_object_unref(mem);
  if (srgb)
    g_object_unref(srgb);
  if (thumb)
    g_object_unref(thumb);
  if (img)
    g_object_unref(img);
  return ok;
}

/* Savers' quality: Cosync clients cut at full quality; 90 is visually the same at a
 * fraction of the size. Options go in brackets after the file name. */
static const char *save_options(const char *dst) {
  const char *dot = strrchr(dst, '.');
  if (!dot)
    return "";
  if (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".jpe") ||
      !strcasecmp(dot, ".jfif") || !strcasecmp(dot, ".webp") || !strcasecmp(dot, ".heic") ||
      !strcasecmp(dot, ".heif") || !strcasecmp(dot, ".avif"))
    return "[Q=90,strip]";
  if (!strcasecmp(dot, ".png"))
    return "[strip]";
  return "";
}

bool afs_image_cut(const char *src_path, const char *dst_path, int size, int *out_w, int *out_h,
                   struct afs_error *err) {
  bool ok = false;
  VipsImage *cut = NULL;
  if (!afs_image_global_init(err))
    return false;
  /* thumbnail applies the EXIF orientation (and strips the tag), fits the longer side
   * into size x size, and with VIPS_SIZE_DOWN never enlarges. */
  if (vips_thumbnail(src_path, &cut, size, "height", size, "size", VIPS_SIZE_DOWN, NULL)) {
    vips_fail(err, "cannot cut image", src_path);
    goto done;
  }
  char target[4096];
  snprintf(target, sizeof target, "%s%s", dst_path, save_options(dst_path));
  if (vips_image_write_to_file(cut, target, NULL)) {
    vips_fail(err, "cannot write cut", dst_path);
    goto done;
  }
  if (out_w)
    *out_w = vips_image_get_width(cut);
  if (out_h)
    *out_h = vips_image_get_height(cut);
  ok = true;
done:
  if (cut)
    g_object_unref(cut);
  return ok;
}

void afs_image_thread_done(void) {
  if (g_init_ok)
    vips_thread_shutdown();
}
