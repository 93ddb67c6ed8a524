/* Image probe and cuts on images generated with libvips: sizes, no upscaling, EXIF
 * orientation, format kept, average colour, and a clean error for a non-image. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vips/vips.h>

#include "afs_test.h"
#include "assetfs/image.h"

/* A w x h image of one colour, saved to path (format from the extension). */
static int make_image(const char *path, int w, int h, double r, double g, double b,
                      int orientation) {
  VipsImage *black = NULL, *col = NULL, *cast = NULL;
  double a[3] = {1, 1, 1}, c[3] = {r, g, b};
  int rc = vips_black(&black, w, h, "bands", 3, NULL) || vips_linear(black, &col, a, c, 3, NULL) ||
           vips_cast(col, &cast, VIPS_FORMAT_UCHAR, NULL);
  if (!rc) {
    cast->Type = VIPS_INTERPRETATION_sRGB;
    if (orientation)
      vips_image_set_int(cast, "orientation", orientation);
    rc = vips_image_write_to_file(cast, path, NULL);
  }
  if (black)
    g_object_unref(black);
  if (col)
    g_object_unref(col);
  if (cast)
    g_object_unref(cast);
  return rc;
}

static void header_size(const char *path, int *w, int *h, const char **loader) {
  VipsImage *img = vips_image_new_from_file(path, NULL);
  *w = *h = -1;
  if (!img)
    return;
  *w = vips_image_get_width(img);
  *h = vips_image_get_height(img);
  *loader = vips_foreign_find_load(path);
  g_object_unref(img);
}

int main(void) {
  struct afs_error err = {0};
  CHECK(afs_image_global_init(&err));
  char dir[] = "/tmp/afs-test-image-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char jpg[256], png[256], small[256], cut[256], rot[256], txt[256];
  snprintf(jpg, sizeof jpg, "%s/a.jpg", dir);
  snprintf(png, sizeof png, "%s/b.png", dir);
  snprintf(small, sizeof small, "%s/s.png", dir);
  snprintf(rot, sizeof rot, "%s/r.jpg", dir);
  snprintf(txt, sizeof txt, "%s/t.jpg", dir);
  CHECK(make_image(jpg, 1200, 800, 200, 100, 50, 0) == 0);
  CHECK(make_image(png, 500, 1000, 0, 0, 255, 0) == 0);
  CHECK(make_image(small, 200, 100, 255, 255, 255, 0) == 0);
  CHECK(make_image(rot, 400, 200, 10, 10, 10, 6) == 0); /* 6: rotate 90° to display */
  FILE *f = fopen(txt, "w");
  fputs("not an image\n", f);
  fclose(f);

  struct afs_image_info info;
  CHECK(afs_image_probe(jpg, &info, &err));
  if (err.code)
    fprintf(stderr, "err: %s\n", err.msg);
  CHECK(info.width == 1200 && info.height == 800);
  CHECK(strlen(info.color) == 7 && info.color[0] == '#');
  unsigned r, g, b;
  CHECK(sscanf(info.color, "#%02X%02X%02X", &r, &g, &b) == 3);
  CHECK(abs((int)r - 200) <= 3 && abs((int)g - 100) <= 3 && abs((int)b - 50) <= 3);

  CHECK(afs_image_probe(png, &info, &err));
  CHECK_STREQ(info.color, "#0000FF");
  CHECK(afs_image_probe(rot, &info, &err));
  CHECK(info.width == 200 && info.height == 400);

  int sizes[3] = {AFS_CUT_SMALL, AFS_CUT_MEDIUM, AFS_CUT_LARGE};
  int expect_w[3] = {300, 600, 900}, expect_h[3] = {200, 400, 600};
  for (int i = 0; i < 3; i++) {
    int w, h, hw, hh;
    const char *loader = NULL;
    snprintf(cut, sizeof cut, "%s/cut%d.jpg", dir, i);
    CHECK(afs_image_cut(jpg, cut, sizes[i], &w, &h, &err));
    CHECK(w == expect_w[i] && h == expect_h[i]);
    header_size(cut, &hw, &hh, &loader);
    CHECK(hw == expect_w[i] && hh == expect_h[i]);
    CHECK(loader && strcasestr(loader, "jpeg"));
  }
  int w, h;
  const char *loader = NULL;
  snprintf(cut, sizeof cut, "%s/pcut.png", dir);
  CHECK(afs_image_cut(png, cut, 600, &w, &h, &err));
  CHECK(w == 300 && h == 600);
  header_size(cut, &w, &h, &loader);
  CHECK(loader && strcasestr(loader, "png"));
  /* never upscaled */
  CHECK(afs_image_cut(small, cut, 900, &w, &h, &err));
  CHECK(w == 200 && h == 100);
  /* orientation applied */
  snprintf(cut, sizeof cut, "%s/rcut.jpg", dir);
  CHECK(afs_image_cut(rot, cut, 300, &w, &h, &err));
  CHECK(w == 150 && h == 300);

  afs_error_clear(&err);
  CHECK(!afs_image_probe(txt, &info, &err));
  CHECK(err.code != 0 && strstr(err.msg, "t.jpg") != NULL);
  CHECK(!afs_image_cut(txt, cut, 300, NULL, NULL, &err));
  CHECK(!afs_image_is_image(txt));
  CHECK(afs_image_is_image(jpg));
  CHECK(strlen(vips_error_buffer()) == 0);

  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  afs_image_thread_done();
  TEST_MAIN_END();
}
