/* filePath rules and Cosync key naming (include/assetfs/naming.h). */
#include <errno.h>
#include <stdlib.h>

#include "afs_test.h"
#include "assetfs/hash.h"
#include "assetfs/naming.h"

static bool fp_ok(const char *p) {
  return afs_filepath_check(p, strlen(p), NULL);
}

static void test_filepath(void) {
  struct afs_error e = {0};
  CHECK(fp_ok("a.jpg"));
  CHECK(fp_ok("dir/sub/Café photo (1).jpg"));
  CHECK(fp_ok("...")); /* a legal name, not a traversal */
  CHECK(fp_ok(".hidden"));
  CHECK(!fp_ok(""));
  CHECK(!afs_filepath_check("/etc/passwd", 11, &e));
  CHECK(e.code == EINVAL && strstr(e.msg, "absolute"));
  CHECK(!fp_ok("../x"));
  CHECK(!fp_ok("a/../x"));
  CHECK(!fp_ok("a/.."));
  CHECK(!fp_ok("./a"));
  CHECK(!fp_ok("a//b"));
  CHECK(!fp_ok("a/"));
  CHECK(!fp_ok("a\tb"));
  CHECK(!fp_ok("a\x7f"));
  CHECK(!afs_filepath_check("a\0b", 3, &e));
  CHECK(strstr(e.msg, "NUL"));
  CHECK(!afs_filepath_check("caf\xc3", 4, &e));
  CHECK(strstr(e.msg, "UTF-8"));
  CHECK(!fp_ok("\xc0\xaf"));         /* overlong '/' */
  CHECK(!fp_ok("\xed\xa0\x80"));     /* surrogate */
  CHECK(!fp_ok("\xf4\x90\x80\x80")); /* > U+10FFFF */
  CHECK(fp_ok("\xf0\x9f\x98\x80.png"));
  char big[AFS_FILEPATH_MAX + 2];
  memset(big, 'a', sizeof big);
  for (int i = 100; i < (int)sizeof big; i += 101)
    big[i] = '/';
  big[AFS_FILEPATH_MAX + 1] = '\0';
  CHECK(!afs_filepath_check(big, strlen(big), &e));
  CHECK(e.code == ENAMETOOLONG);
  big[AFS_FILEPATH_MAX] = '\0';
  CHECK(afs_filepath_check(big, strlen(big), &e));
  char comp[AFS_NAME_MAX + 2];
  memset(comp, 'b', sizeof comp);
  comp[AFS_NAME_MAX + 1] = '\0';
  CHECK(!afs_filepath_check(comp, strlen(comp), &e));
  CHECK(e.code == ENAMETOOLONG);
  comp[AFS_NAME_MAX] = '\0';
  CHECK(afs_name_check(comp, strlen(comp), &e));
  CHECK(!afs_name_check("a/b", 3, &e));
  CHECK(!afs_name_check("..", 2, &e));
}

static void test_uid(void) {
  CHECK(afs_uid_check("5fa0c1d2e3b4a59687766554", 24, NULL));
  CHECK(afs_uid_check("user@example.com", 16, NULL));
  CHECK(!afs_uid_check("", 0, NULL));
  CHECK(!afs_uid_check("a/b", 3, NULL));
  CHECK(!afs_uid_check("..", 2, NULL));
  CHECK(!afs_uid_check("public", 6, NULL));
  CHECK(!afs_uid_check("a b", 3, NULL));
}

static void test_keys(void) {
  struct afs_keys k;
  struct afs_error e = {0};
  CHECK(afs_naming_make_keys("u1", "images/My Photo.JPG", "image/jpeg", false, 1700000000123, &k,
                             &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/images/My Photo-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "u1/images/My Photo-small-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_MEDIUM], "u1/images/My Photo-medium-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_LARGE], "u1/images/My Photo-large-1700000000123.JPG");
  CHECK(k.key[AFS_PART_PREVIEW] == NULL);
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", "v/clip.final.mp4", "video/mp4", true, 42, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "public/u1/v/clip.final-42.mp4");
  CHECK_STREQ(k.key[AFS_PART_PREVIEW], "public/u1/v/clip.final-videopreview-42.png");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "public/u1/v/clip.final-small-42.png");
  CHECK_STREQ(k.key[AFS_PART_LARGE], "public/u1/v/clip.final-large-42.png");
  CHECK(!strcmp(afs_part_content_type(AFS_KIND_VIDEO, AFS_PART_SMALL, "video/mp4"), "image/png"));
  CHECK(!strcmp(afs_part_content_type(AFS_KIND_IMAGE, AFS_PART_SMALL, "image/gif"), "image/gif"));
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", "doc/README", "text/plain", false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/doc/README-7");
  CHECK(k.key[AFS_PART_SMALL] == NULL);
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", ".bashrc", NULL, false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/.bashrc-7");
  afs_keys_free(&k);

  CHECK(afs_naming_make_keys("u1", "a+b%c~d=é.p g", "image/x", false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/a+b-c~d=é-7.p g");
  afs_keys_free(&k);

  /* Every printable character stays, as given (no normalization); runs of unsafe ones
   * become one '-', and a trailing replaced run is not doubled before the timestamp. */
  CHECK(afs_naming_make_keys("u1", "旅行/東京.jpg", "image/jpeg", false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/旅行/東京-7.jpg");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "u1/旅行/東京-small-7.jpg");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "фото.mp4", "video/mp4", false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_PREVIEW], "u1/фото-videopreview-7.png");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "Cafe\xcc\x81.txt", NULL, false, 7, &k, &e)); /* NFD */
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/Cafe\xcc\x81-7.txt");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "a#%b\\c{d}^e`f[g]h\"i<j>k|l?m*n.txt", NULL, false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/a-b-c-d-e-f-g-h-i-j-k-l-m-n-7.txt");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "x\xc2\x85\xe2\x80\xa8y\xef\xbf\xbe#.t#xt", NULL, false, 7, &k,
                             &e)); /* C1 NEL, U+2028, U+FFFE */
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/x-y-7.t-xt");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "dash-.jpg", NULL, false, 7, &k, &e)); /* the name's own */
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/dash--7.jpg");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "d/#.jpg", NULL, false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/d/--7.jpg");
  afs_keys_free(&k);
  CHECK(afs_naming_make_keys("u1", "👨\u200d👩\u200d👧 🇯🇵.png", NULL, false, 7, &k, &e));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/👨\u200d👩\u200d👧 🇯🇵-7.png");
  afs_keys_free(&k);

  CHECK(!afs_naming_make_keys("u1", "../escape.jpg", "image/jpeg", false, 7, &k, &e));
  CHECK(k.key[0] == NULL);
  CHECK(!afs_naming_make_keys("../u", "a.jpg", "image/jpeg", false, 7, &k, &e));
  CHECK(!afs_naming_make_keys("public", "a.jpg", "image/jpeg", false, 7, &k, &e));

  /* Longest accepted inputs still make keys S3 accepts. */
  char uid[AFS_UID_MAX + 1], fp[AFS_FILEPATH_MAX + 1];
  memset(uid, 'u', AFS_UID_MAX);
  uid[AFS_UID_MAX] = '\0';
  memset(fp, 'f', AFS_FILEPATH_MAX);
  for (int i = 200; i < AFS_FILEPATH_MAX; i += 201)
    fp[i] = '/';
  fp[AFS_FILEPATH_MAX] = '\0';
  CHECK(afs_naming_make_keys(uid, fp, "video/mp4", true, 9999999999999LL, &k, &e));
  for (int p = 0; p < AFS_PART_COUNT; p++)
    CHECK(k.key[p] && strlen(k.key[p]) <= AFS_KEY_MAX);
  afs_keys_free(&k);
}

static void test_keys_from_path(void) {
  struct afs_keys k;
  CHECK(afs_naming_keys_from_path("u1/images/My-Photo-1700000000123.JPG", "image/jpeg", &k));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/images/My-Photo-1700000000123.JPG");
  CHECK_STREQ(k.key[AFS_PART_MEDIUM], "u1/images/My-Photo-medium-1700000000123.JPG");
  afs_keys_free(&k);
  CHECK(afs_naming_keys_from_path("public/u1/v/clip-42.mp4", "video/mp4", &k));
  CHECK_STREQ(k.key[AFS_PART_PREVIEW], "public/u1/v/clip-videopreview-42.png");
  CHECK_STREQ(k.key[AFS_PART_SMALL], "public/u1/v/clip-small-42.png");
  afs_keys_free(&k);
  CHECK(!afs_naming_keys_from_path("u1/noTimestamp.jpg", "image/jpeg", &k));
  CHECK_STREQ(k.key[AFS_PART_ORIGINAL], "u1/noTimestamp.jpg");
  CHECK(k.key[AFS_PART_SMALL] == NULL);
  afs_keys_free(&k);
  CHECK(afs_naming_keys_from_path("u1/x-5.bin", "application/octet-stream", &k));
  CHECK(k.key[AFS_PART_SMALL] == NULL);
  afs_keys_free(&k);
}

static void test_display_name(void) {
  char *n;
  n = afs_naming_display_name("u1/images/IMG-0002-1623456789000.jpg", "u1");
  CHECK_STREQ(n, "images/IMG-0002.jpg");
  free(n);
  n = afs_naming_display_name("public/u1/a-1623456789000.png", "u1");
  CHECK_STREQ(n, "a.png");
  free(n);
  n = afs_naming_display_name("u1/doc-1623456789000", NULL);
  CHECK_STREQ(n, "doc");
  free(n);
  n = afs_naming_display_name("other/x-12.jpg", "u1"); /* short number: not a timestamp */
  CHECK_STREQ(n, "other/x-12.jpg");
  free(n);
  n = afs_naming_display_name("u1//../a\x01\xff.jpg", "u1");
  CHECK_STREQ(n, "a__.jpg");
  free(n);
  /* Keys of both rules: the old sanitized ones and the new ones that keep names. */
  n = afs_naming_display_name("u1/photos/--1623456789000.jpg", "u1");
  CHECK_STREQ(n, "photos/-.jpg");
  free(n);
  n = afs_naming_display_name("u1/旅行/東京 1-1623456789000.jpg", "u1");
  CHECK_STREQ(n, "旅行/東京 1.jpg");
  free(n);
  n = afs_naming_display_name("u1/Cafe\xcc\x81-1623456789000", "u1");
  CHECK_STREQ(n, "Cafe\xcc\x81");
  free(n);
  CHECK(afs_naming_display_name("u1/..", "u1") == NULL);
  CHECK(afs_naming_display_name(NULL, "u1") == NULL);
}

/* ---- Property: keys of many records planned in one second are all distinct. ---- */

/* The broker's claims, in memory: key -> owning record (open addressing). */
#define CLAIM_SLOTS (1 << 17)
struct claim_set {
  char *key[CLAIM_SLOTS];
  int owner[CLAIM_SLOTS];
  int tries, taken;
};

static size_t claim_slot(struct claim_set *cs, const char *key) {
  uint64_t h = afs_hash_fnv1a64_str(key);
  size_t i = (size_t)(h & (CLAIM_SLOTS - 1));
  while (cs->key[i] && strcmp(cs->key[i], key))
    i = (i + 1) & (CLAIM_SLOTS - 1);
  return i;
}

struct claim_ctx {
  struct claim_set *cs;
  int rec;
};

/* afs_key_try_fn with the semantics of afs_key_claims_take: all or nothing, our own
 * claims count as ours, and what this call took is given back when a key is another's. */
static int try_claim(void *vctx, const struct afs_keys *k, int64_t ts, struct afs_error *err) {
  struct claim_ctx *x = vctx;
  struct claim_set *cs = x->cs;
  size_t took[AFS_PART_COUNT];
  int nt = 0;
  (void)ts;
  (void)err;
  cs->tries++;
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    if (!k->key[p])
      continue;
    size_t i = claim_slot(cs, k->key[p]);
    if (cs->key[i] && cs->owner[i] == x->rec)
      continue;
    if (cs->key[i] && cs->owner[i] >= 0) {
      for (int t = 0; t < nt; t++) /* give back: owner -1 is a released claim */
        cs->owner[took[t]] = -1;
      cs->taken++;
      return 0;
    }
    if (!cs->key[i])
      cs->key[i] = strdup(k->key[p]);
    cs->owner[i] = x->rec;
    took[nt++] = i;
  }
  return 1;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

static const char *const pieces[] = {"東京",
                                     "大阪",
                                     "写真",
                                     "旅行",
                                     "日本語",
                                     "中文",
                                     "한국어",
                                     "사진",
                                     "фото",
                                     "Москва",
                                     "Привет",
                                     "صورة",
                                     "مرحبا",
                                     "תמונה",
                                     "שלום",
                                     "चित्र",
                                     "नमस्ते",
                                     "हिन्दी",
                                     "😀",
                                     "🎉",
                                     "👨\u200d👩\u200d👧",
                                     "🏳️\u200d🌈",
                                     "👍🏽",
                                     "🇯🇵",
                                     "e\u0301",
                                     "é",
                                     "a\u0308",
                                     "ñ",
                                     "Ω",
                                     "ß",
                                     " ",
                                     "-",
                                     "_",
                                     ".",
                                     "~",
                                     "+",
                                     "=",
                                     "&",
                                     "(1)",
                                     "IMG_0001",
                                     "x",
                                     "Ab",
                                     "ǅ",
                                     "ﬁ",
                                     "\u200c"};
static const char *const unsafe[] = {
    "#",           "%", "?", "*", "\\", "|", "<",        ">",        "\"",
    "{",           "}", "[", "]", "^",  "`", "\xc2\x85", "\xc2\x9f", "\xe2\x80\xa8",
    "\xef\xbf\xbf"};
static const char *const exts[] = {".jpg", ".png", ".mp4", "", ".tar.gz", ".日本", ".JPG"};
static const char *const dirs[] = {"photos", "写真", "фото", "a b", "#tag", "2024"};
static const char *const types[] = {"image/jpeg", "video/mp4", "application/octet-stream", NULL};

/* A random filePath; *has_unsafe whether it contains a character the key rule replaces. */
static void random_path(char *out, size_t n, bool *has_unsafe) {
  size_t o = 0;
  *has_unsafe = false;
  for (uint32_t d = rnd(3); d > 0; d--) {
    const char *dn = dirs[rnd(sizeof dirs / sizeof dirs[0])];
    *has_unsafe |= strchr(dn, '#') != NULL;
    o += (size_t)snprintf(out + o, n - o, "%s/", dn);
  }
  size_t base = o;
  if (rnd(10) == 0) { /* a name that differs from others only in unsafe characters */
    static const char *const stems[] = {"東京", "фото", "صورة", "नमस्ते", "😀"};
    const char *u = unsafe[rnd(sizeof unsafe / sizeof unsafe[0])];
    o += (size_t)snprintf(out + o, n - o, "%s%s.jpg", stems[rnd(5)], u);
    *has_unsafe = true;
    return;
  }
  for (uint32_t p = 1 + rnd(5); p > 0; p--) {
    const char *x;
    if (rnd(8) == 0) {
      x = unsafe[rnd(sizeof unsafe / sizeof unsafe[0])];
      *has_unsafe = true;
    } else {
      x = pieces[rnd(sizeof pieces / sizeof pieces[0])];
    }
    o += (size_t)snprintf(out + o, n - o, "%s", x);
  }
  /* Names the filePath rules refuse ("." or ".."), or that display_name would read as
   * having a timestamp, are not what this property is about. */
  if (!strcmp(out + base, ".") || !strcmp(out + base, ".."))
    o += (size_t)snprintf(out + o, n - o, "x");
  snprintf(out + o, n - o, "%s", exts[rnd(sizeof exts / sizeof exts[0])]);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_unique_property(void) {
  enum { N = 10000 };
  struct claim_set *cs = calloc(1, sizeof *cs);
  char(*paths)[512] = calloc(N, sizeof *paths);
  uint8_t(*oids)[12] = calloc(N, sizeof *oids);
  const char **cts = calloc(N, sizeof *cts);
  char **all = calloc((size_t)N * AFS_PART_COUNT, sizeof *all);
  size_t nall = 0;
  int bad_utf8 = 0, too_long = 0, not_round = 0, missing = 0, not_again = 0, refused = 0;
  for (int r = 0; r < N; r++) {
    bool has_unsafe;
    random_path(paths[r], sizeof paths[r], &has_unsafe);
    CHECK(afs_filepath_check(paths[r], strlen(paths[r]), NULL));
    /* One second for all: 0x65000000, the rest of the ObjectId random. */
    oids[r][0] = 0x65;
    for (int i = 4; i < 12; i++)
      oids[r][i] = (uint8_t)rnd(256);
    cts[r] = types[rnd(4)];
    struct afs_keys k;
    struct afs_error e = {0};
    struct claim_ctx x = {cs, r};
    int64_t ts0 = afs_naming_oid_ts(oids[r]);
    if (afs_naming_plan_unique("u1", paths[r], cts[r], false, ts0, 0, try_claim, &x, &k, &e) != 1) {
      refused++;
      fprintf(stderr, "refused %s: %s\n", paths[r], e.msg);
      continue;
    }
    for (int p = 0; p < AFS_PART_COUNT; p++) {
      if (!k.key[p])
        continue;
      all[nall++] = strdup(k.key[p]);
      bad_utf8 += !afs_utf8_valid(k.key[p], strlen(k.key[p]));
      too_long += strlen(k.key[p]) > AFS_KEY_MAX;
    }
    const char *orig = k.key[AFS_PART_ORIGINAL];
    if (!has_unsafe) {
      char *dn = afs_naming_display_name(orig, "u1");
      if (!dn || strcmp(dn, paths[r])) {
        not_round++;
        if (not_round < 5)
          fprintf(stderr, "no round trip: %s -> %s -> %s\n", paths[r], orig, dn ? dn : "NULL");
      }
      free(dn);
    } else {
      /* Every character the rule keeps is in the key, in order. */
      const char *at = orig + 3;
      for (size_t i = 0; paths[r][i];) {
        size_t n = 1;
        unsigned char c = (unsigned char)paths[r][i];
        n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        uint32_t cp = c & (n == 1 ? 0x7F : 0x7F >> n);
        for (size_t j = 1; j < n; j++)
          cp = (cp << 6) | ((unsigned char)paths[r][i + j] & 0x3F);
        if (!afs_naming_key_unsafe(cp)) {
          char one[5] = {0};
          memcpy(one, paths[r] + i, n);
          const char *f = strstr(at, one);
          if (!f) {
            missing++;
            break;
          }
          at = f + n;
        }
        i += n;
      }
    }
    afs_keys_free(&k);
  }
  /* Planning a record again (a re-initialization) walks to the same keys. */
  for (int r = 0; r < N; r += 97) {
    struct afs_keys k1, k2;
    struct claim_ctx x = {cs, r};
    int64_t ts0 = afs_naming_oid_ts(oids[r]);
    if (afs_naming_plan_unique("u1", paths[r], cts[r], false, ts0, 0, try_claim, &x, &k1, NULL) !=
        1) {
      not_again++;
      continue;
    }
    int rc =
        afs_naming_plan_unique("u1", paths[r], cts[r], false, ts0, 0, try_claim, &x, &k2, NULL);
    if (rc != 1 || strcmp(k1.key[0], k2.key[0]))
      not_again++;
    afs_keys_free(&k1);
    if (rc == 1)
      afs_keys_free(&k2);
  }
  /* Distinct by construction of the claim set: count the keys held and compare with the
   * keys the records were given (a key given twice would be counted once). */
  int held = 0, given = 0;
  for (size_t i = 0; i < CLAIM_SLOTS; i++)
    held += cs->key[i] && cs->owner[i] >= 0;
  for (int r = 0; r < N; r++) {
    enum afs_kind kind = afs_content_kind(cts[r]);
    for (int p = 0; p < AFS_PART_COUNT; p++)
      given += afs_part_applies(kind, (enum afs_part)p);
  }
  /* And directly: every key handed out, sorted, has no equal neighbour. */
  qsort(all, nall, sizeof *all, cmp_str);
  int dups = 0;
  for (size_t i = 1; i < nall; i++)
    dups += !strcmp(all[i - 1], all[i]);
  CHECK(dups == 0);
  CHECK(nall == (size_t)given);
  for (size_t i = 0; i < nall; i++)
    free(all[i]);
  free(all);
  printf("unique property: %d records, %d keys, %d candidates tried, %d re-plans\n", N, given,
         cs->tries, cs->taken);
  CHECK(refused == 0);
  CHECK(held == given);
  CHECK(bad_utf8 == 0);
  CHECK(too_long == 0);
  CHECK(not_round == 0);
  CHECK(missing == 0);
  CHECK(not_again == 0);
  CHECK(cs->taken > 0); /* the names that differ only in unsafe characters did meet */
  for (size_t i = 0; i < CLAIM_SLOTS; i++)
    free(cs->key[i]);
  free(cs);
  free(paths);
  free(oids);
  free(cts);
}

static void test_now_ms(void) {
  int64_t a = afs_naming_now_ms(), b = afs_naming_now_ms();
  CHECK(b > a);
  CHECK(a > 1600000000000LL);
}

/* The millisecond part of an ObjectId's key timestamp is persisted in S3 keys: these
 * values were computed with the code before core/hash.c and must never change. */
static void test_oid_ts_pinned(void) {
  static const uint8_t o1[12] = {0x65, 0x0a, 0xbc, 0xde, 1, 2, 3, 4, 5, 6, 7, 8};
  static const uint8_t o2[12] = {0};
  static const uint8_t o3[12] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  static const uint8_t o4[12] = {0x66, 0x5f, 0x1a, 0x2b, 0x9c, 0x4d,
                                 0x11, 0x22, 0x33, 0x44, 0x55, 0x66};
  CHECK(afs_naming_oid_ts(o1) == 1695202526019LL);
  CHECK(afs_naming_oid_ts(o2) == 339LL);
  CHECK(afs_naming_oid_ts(o3) == 4294967295483LL);
  CHECK(afs_naming_oid_ts(o4) == 1717508651055LL);
}

int main(void) {
  test_filepath();
  test_uid();
  test_keys();
  test_keys_from_path();
  test_display_name();
  test_unique_property();
  test_now_ms();
  test_oid_ts_pinned();
  TEST_MAIN_END();
}
