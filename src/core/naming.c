#include "assetfs/naming.h"
#include "assetfs/clock.h"
#include "assetfs/hash.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

bool afs_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) {
      i++;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (len - i <= n)
      return false;
    for (size_t k = 1; k <= n; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

/* Rules shared by whole paths and single components, for the bytes themselves. */
static bool check_bytes(const char *s, size_t len, const char *what, struct afs_error *err) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == 0)
      return afs_error_set(err, EINVAL, "%s contains a NUL byte", what);
    if (c < 0x20 || c == 0x7F)
      return afs_error_set(err, EINVAL, "%s contains a control character (0x%02x)", what, c);
  }
  if (!afs_utf8_valid(s, len))
    return afs_error_set(err, EINVAL, "%s is not valid UTF-8", what);
  return true;
}

static bool check_component(const char *s, size_t len, struct afs_error *err) {
  if (len == 0)
    return afs_error_set(err, EINVAL,
                         "filePath has an empty component (leading, trailing or "
                         "doubled '/')");
  if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
    return afs_error_set(err, EINVAL, "filePath has a '%.*s' component", (int)len, s);
  if (len > AFS_NAME_MAX)
    return afs_error_set(err, ENAMETOOLONG, "a filePath component is %zu bytes (limit %d)", len,
                         AFS_NAME_MAX);
  return true;
}

bool afs_name_check(const char *name, size_t len, struct afs_error *err) {
  if (!name)
    return afs_error_set(err, EINVAL, "no name");
  if (!check_bytes(name, len, "name", err))
    return false;
  if (memchr(name, '/', len))
    return afs_error_set(err, EINVAL, "name contains '/'");
  return check_component(name, len, err);
}

bool afs_filepath_check(const char *path, size_t len, struct afs_error *err) {
  if (!path || len == 0)
    return afs_error_set(err, EINVAL, "filePath is empty");
  if (len > AFS_FILEPATH_MAX)
    return afs_error_set(err, ENAMETOOLONG, "filePath is %zu bytes (limit %d)", len,
                         AFS_FILEPATH_MAX);
  if (!check_bytes(path, len, "filePath", err))
    return false;
  if (path[0] == '/')
    return afs_error_set(err, EINVAL, "filePath is absolute (starts with '/')");
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i == len || path[i] == '/') {
      if (!check_component(path + start, i - start, err))
        return false;
      start = i + 1;
    }
  }
  return true;
}

static bool uid_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == '@' || c == '=';
}

bool afs_uid_check(const char *uid, size_t len, struct afs_error *err) {
  if (!uid || len == 0)
    return afs_error_set(err, EINVAL, "uid is empty");
  if (len > AFS_UID_MAX)
    return afs_error_set(err, ENAMETOOLONG, "uid is %zu bytes (limit %d)", len, AFS_UID_MAX);
  for (size_t i = 0; i < len; i++)
    if (!uid_char((unsigned char)uid[i]))
      return afs_error_set(err, EINVAL, "uid contains a character outside [A-Za-z0-9._@=-]");
  if ((len == 1 && uid[0] == '.') || (len == 2 && !memcmp(uid, "..", 2)))
    return afs_error_set(err, EINVAL, "uid is '.' or '..'");
  if (len == 6 && !memcmp(uid, "public", 6))
    return afs_error_set(err, EINVAL, "uid 'public' is reserved for the public prefix");
  return true;
}

enum afs_kind afs_content_kind(const char *ct) {
  if (!ct)
    return AFS_KIND_OTHER;
  if (!strncasecmp(ct, "image/", 6) && ct[6])
    return AFS_KIND_IMAGE;
  if (!strncasecmp(ct, "video/", 6) && ct[6])
    return AFS_KIND_VIDEO;
  return AFS_KIND_OTHER;
}

static const char *const part_names[AFS_PART_COUNT] = {"original", "small", "medium", "large",
                                                       "preview"};

const char *afs_part_name(enum afs_part p) {
  return (unsigned)p < AFS_PART_COUNT ? part_names[p] : "?";
}

bool afs_part_applies(enum afs_kind kind, enum afs_part p) {
  switch (p) {
  case AFS_PART_ORIGINAL:
    return true;
  case AFS_PART_SMALL:
  case AFS_PART_MEDIUM:
  case AFS_PART_LARGE:
    return kind != AFS_KIND_OTHER;
  case AFS_PART_PREVIEW:
    return kind == AFS_KIND_VIDEO;
  default:
    return false;
  }
}

const char *afs_part_content_type(enum afs_kind kind, enum afs_part p, const char *ct) {
  if (kind == AFS_KIND_VIDEO && p != AFS_PART_ORIGINAL)
    return "image/png";
  return ct;
}

/* The code point of the (valid) UTF-8 sequence at s, its length in *n. */
static uint32_t utf8_at(const unsigned char *s, size_t *n) {
  if (s[0] < 0x80) {
    *n = 1;
    return s[0];
  }
  size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
  uint32_t cp = s[0] & (0x7F >> len);
  for (size_t k = 1; k < len; k++)
    cp = (cp << 6) | (s[k] & 0x3F);
  *n = len;
  return cp;
}

bool afs_naming_key_unsafe(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
    return true; /* C0, DEL, C1: invisible, and XML 1.0 (S3's listings) cannot carry C0 */
  if (cp < 0x80)
    return strchr("\\{}^%`[]\"<>#|?*", (int)cp) != NULL;
  if (cp == 0x2028 || cp == 0x2029)
    return true; /* line and paragraph separators break lines in logs and JSON */
  /* Noncharacters: U+FFFE/U+FFFF are not XML characters, the rest mean nothing. */
  return (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
}

/* Appends s[0..len) (valid UTF-8) to out with every run of unsafe characters replaced
 * by one '-'. '/' is kept as the separator. Returns the new length; *replaced_last tells
 * whether the output ends in such a replacement dash. */
static size_t append_sanitized(char *out, size_t o, const char *s, size_t len,
                               bool *replaced_last) {
  bool in_run = false;
  for (size_t i = 0; i < len;) {
    size_t n;
    uint32_t cp = utf8_at((const unsigned char *)s + i, &n);
    if (cp == '/' || !afs_naming_key_unsafe(cp)) {
      memcpy(out + o, s + i, n);
      o += n;
      in_run = false;
    } else if (!in_run) {
      out[o++] = '-';
      in_run = true;
    }
    i += n;
  }
  if (replaced_last)
    *replaced_last = in_run;
  return o;
}

/* In the last component of s (length len), the offset of the extension's '.', or len if
 * there is none (no dot, or only a leading one as in ".bashrc"). */
static size_t ext_offset(const char *s, size_t len) {
  size_t base = 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] == '/')
      base = i + 1;
  for (size_t i = len; i > base + 1; i--)
    if (s[i - 1] == '.')
      return i - 1;
  return len;
}

static char *build_key(const char *stem, size_t stem_len, const char *tag, int64_t ts,
                       const char *ext) {
  char *k = NULL;
  if (asprintf(&k, "%.*s-%s%s%" PRId64 "%s", (int)stem_len, stem, tag ? tag : "", tag ? "-" : "",
               ts, ext) < 0)
    return NULL;
  return k;
}

static const char *const cut_tags[AFS_PART_COUNT] = {NULL, "small", "medium", "large",
                                                     "videopreview"};

/* Fills out from the sanitized stem ("<prefix>/<dir>/<name>"), timestamp and extension. */
static bool fill_keys(const char *stem, size_t stem_len, int64_t ts, const char *ext,
                      enum afs_kind kind, struct afs_keys *out) {
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    if (!afs_part_applies(kind, (enum afs_part)p))
      continue;
    const char *e = (kind == AFS_KIND_VIDEO && p != AFS_PART_ORIGINAL) ? ".png" : ext;
    out->key[p] = build_key(stem, stem_len, cut_tags[p], ts, e);
    if (!out->key[p])
      return false;
  }
  return true;
}

bool afs_naming_make_keys(const char *uid, const char *file_path, const char *content_type,
                          bool is_public, int64_t ts_ms, struct afs_keys *out,
                          struct afs_error *err) {
  memset(out, 0, sizeof *out);
  if (!uid || !afs_uid_check(uid, strlen(uid), err))
    return false;
  if (!file_path || !afs_filepath_check(file_path, strlen(file_path), err))
    return false;
  size_t ul = strlen(uid), fl = strlen(file_path);
  size_t eo = ext_offset(file_path, fl);
  char *stem = malloc(8 + ul + 1 + fl + 1);
  char *ext = malloc(fl - eo + 1);
  if (!stem || !ext) {
    free(stem);
    free(ext);
    return afs_error_set(err, ENOMEM, "out of memory");
  }
  size_t o = 0;
  if (is_public) {
    memcpy(stem, "public/", 7);
    o = 7;
  }
  memcpy(stem + o, uid, ul);
  o += ul;
  stem[o++] = '/';
  size_t base = o;
  bool dash;
  o = append_sanitized(stem, o, file_path, eo, &dash);
  /* "a#.jpg" would give "a--<ts>.jpg": do not double the dash we put there (a dash of
   * the name itself stays, so the name comes back from the key). */
  if (dash && o > base + 1 && stem[o - 2] != '/')
    o--;
  stem[o] = '\0';
  size_t x = append_sanitized(ext, 0, file_path + eo, fl - eo, NULL);
  ext[x] = '\0';
  bool ok = fill_keys(stem, o, ts_ms, ext, afs_content_kind(content_type), out);
  free(stem);
  free(ext);
  if (!ok) {
    afs_keys_free(out);
    return afs_error_set(err, ENOMEM, "out of memory");
  }
  for (int p = 0; p < AFS_PART_COUNT; p++)
    if (out->key[p] && strlen(out->key[p]) > AFS_KEY_MAX) {
      afs_keys_free(out);
      return afs_error_set(err, ENAMETOOLONG, "S3 key would exceed %d bytes", AFS_KEY_MAX);
    }
  return true;
}

/* Finds "-<digits>" ending at `end` in s; returns the offset of the '-' or (size_t)-1. */
static size_t ts_before(const char *s, size_t end, size_t min_digits) {
  size_t i = end;
  while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9')
    i--;
  if (end - i < min_digits || end - i > 19 || i == 0 || s[i - 1] != '-')
    return (size_t)-1;
  return i - 1;
}

bool afs_naming_keys_from_path(const char *path, const char *content_type, struct afs_keys *out) {
  memset(out, 0, sizeof *out);
  if (!path)
    return false;
  out->key[AFS_PART_ORIGINAL] = strdup(path);
  if (!out->key[AFS_PART_ORIGINAL])
    return false;
  enum afs_kind kind = afs_content_kind(content_type);
  if (kind == AFS_KIND_OTHER)
    return true;
  size_t len = strlen(path), eo = ext_offset(path, len);
  size_t dash = ts_before(path, eo, 1);
  if (dash == (size_t)-1)
    return false;
  int64_t ts = strtoll(path + dash + 1, NULL, 10);
  struct afs_keys tmp = {{0}};
  bool ok = fill_keys(path, dash, ts, path + eo, kind, &tmp);
  for (int p = AFS_PART_ORIGINAL + 1; p < AFS_PART_COUNT; p++)
    out->key[p] = tmp.key[p];
  free(tmp.key[AFS_PART_ORIGINAL]);
  return ok;
}

void afs_keys_free(struct afs_keys *k) {
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    free(k->key[p]);
    k->key[p] = NULL;
  }
}

char *afs_naming_display_name(const char *path, const char *uid) {
  if (!path)
    return NULL;
  const char *s = path;
  if (!strncmp(s, "public/", 7))
    s += 7;
  const char *slash = strchr(s, '/');
  if (slash) {
    size_t first = (size_t)(slash - s);
    if ((uid && *uid && strlen(uid) == first && !strncmp(s, uid, first)) || !uid || !*uid)
      s = slash + 1;
  }
  size_t len = strlen(s);
  char *out = malloc(len + 1);
  if (!out)
    return NULL;
  /* Copy component by component, dropping empty/"."/".." and clipping lengths. */
  size_t o = 0, start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && s[i] != '/')
      continue;
    size_t cl = i - start;
    const char *c = s + start;
    start = i + 1;
    if (cl == 0 || (cl == 1 && c[0] == '.') || (cl == 2 && c[0] == '.' && c[1] == '.'))
      continue;
    if (i == len) { /* last component: drop the -<timestamp> before the extension */
      size_t eo = ext_offset(c, cl);
      size_t dash = ts_before(c, eo, 10);
      if (dash != (size_t)-1 && dash > 0) {
        size_t el = cl - eo;
        char tmp[AFS_NAME_MAX * 2 + 2];
        if (dash + el < sizeof tmp) {
          memcpy(tmp, c, dash);
          memcpy(tmp + dash, c + eo, el);
          cl = dash + el;
          if (o)
            out[o++] = '/';
          size_t keep = cl > AFS_NAME_MAX ? AFS_NAME_MAX : cl;
          memcpy(out + o, tmp, keep);
          o += keep;
          continue;
        }
      }
    }
    if (o)
      out[o++] = '/';
    size_t keep = cl > AFS_NAME_MAX ? AFS_NAME_MAX : cl;
    memcpy(out + o, c, keep);
    o += keep;
  }
  out[o] = '\0';
  /* Replace control bytes and invalid UTF-8 so the name is always usable. */
  for (size_t i = 0; i < o; i++)
    if ((unsigned char)out[i] < 0x20 || out[i] == 0x7F)
      out[i] = '_';
  if (!afs_utf8_valid(out, o))
    for (size_t i = 0; i < o; i++)
      if ((unsigned char)out[i] >= 0x80)
        out[i] = '_';
  if (o > AFS_FILEPATH_MAX) {
    o = AFS_FILEPATH_MAX;
    while (o > 0 && ((unsigned char)out[o] & 0xC0) == 0x80)
      o--;
    out[o] = '\0';
    while (o > 0 && out[o - 1] == '/')
      out[--o] = '\0';
  }
  if (o == 0 || !afs_filepath_check(out, o, NULL)) {
    free(out);
    return NULL;
  }
  return out;
}

/* g_ms_lock protects g_last_ms. Leaf lock. */
static pthread_mutex_t g_ms_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_last_ms;

int64_t afs_naming_now_ms(void) {
  int64_t now = afs_now_ms();
  pthread_mutex_lock(&g_ms_lock);
  if (now <= g_last_ms)
    now = g_last_ms + 1;
  g_last_ms = now;
  pthread_mutex_unlock(&g_ms_lock);
  return now;
}

int64_t afs_naming_oid_ts(const uint8_t oid[12]) {
  uint32_t secs = (uint32_t)oid[0] << 24 | (uint32_t)oid[1] << 16 | (uint32_t)oid[2] << 8 | oid[3];
  uint64_t h = afs_hash_fnv1a64(oid + 4, 8); /* persisted in keys: see hash.h */
  return (int64_t)secs * 1000 + (int64_t)(h % 1000);
}

int afs_naming_plan_unique(const char *uid, const char *file_path, const char *content_type,
                           bool is_public, int64_t ts0, int first, afs_key_try_fn try_keys,
                           void *ctx, struct afs_keys *out, struct afs_error *err) {
  memset(out, 0, sizeof *out);
  if (first < 0 || first >= AFS_KEY_ATTEMPTS)
    first = 0;
  /* first, first+1, ..., then 0 .. first-1: the same order every time for one record,
   * so planning it again meets its own claims before any free candidate after them. */
  for (int i = 0; i < AFS_KEY_ATTEMPTS; i++) {
    int64_t ts = ts0 + (first + i) % AFS_KEY_ATTEMPTS;
    struct afs_keys k;
    if (!afs_naming_make_keys(uid, file_path, content_type, is_public, ts, &k, err))
      return 0;
    int rc = try_keys(ctx, &k, ts, err);
    if (rc == 1) {
      *out = k;
      return 1;
    }
    afs_keys_free(&k);
    if (rc < 0)
      return -1;
  }
  afs_error_set(err, EEXIST,
                "every one of the %d candidate keys for this filePath near timestamp %lld is "
                "held by another record",
                AFS_KEY_ATTEMPTS, (long long)ts0);
  return 0;
}
