/* A staged file's multipart parts (parts.h): the part schedule and the table of what the
 * bucket holds. Pure bookkeeping under wf->mu; the transfers are upload/multipart.c's. */
#include "staging/parts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "assetfs/alloc.h"

int64_t afs_mp_part_size(int n) {
  int tier = (n - 1) / AFS_MP_TIER;
  return AFS_MP_BASE_PART << tier;
}

int64_t afs_mp_part_off(int n) {
  int tier = (n - 1) / AFS_MP_TIER;
  /* Every earlier tier t is AFS_MP_TIER parts of BASE << t: BASE * TIER * (2^tier - 1). */
  int64_t before = AFS_MP_BASE_PART * AFS_MP_TIER * ((INT64_C(1) << tier) - 1);
  return before + (int64_t)((n - 1) % AFS_MP_TIER) * afs_mp_part_size(n);
}

int afs_mp_part_at(int64_t off) {
  int tier = 0;
  int64_t tier_start = 0;
  while (tier < 16 && off >= tier_start + AFS_MP_TIER * (AFS_MP_BASE_PART << tier)) {
    tier_start += AFS_MP_TIER * (AFS_MP_BASE_PART << tier);
    tier++;
  }
  return tier * AFS_MP_TIER + (int)((off - tier_start) / (AFS_MP_BASE_PART << tier)) + 1;
}

int afs_mp_part_count(int64_t size) {
  return size <= 0 ? 1 : afs_mp_part_at(size - 1);
}

static void reset(struct afs_mp *mp, const char *rec) {
  free(mp->upload_id);
  mp->upload_id = NULL;
  afs_mp_set_urls(mp, 0, NULL, 0, 0);
  for (int i = 0; i < mp->cap; i++) {
    mp->part[i].etag[0] = '\0';
    mp->part[i].gen++;
  }
  snprintf(mp->rec, sizeof mp->rec, "%s", rec);
  mp->logged = false;
  mp->scan_from = 0;
}

struct afs_mp *afs_mp_for(struct afs_mp **slot, const char *rec) {
  if (!*slot) {
    *slot = afs_xcalloc(1, sizeof **slot);
    snprintf((*slot)->rec, sizeof(*slot)->rec, "%s", rec);
  } else if (strcmp((*slot)->rec, rec)) {
    reset(*slot, rec);
  }
  return *slot;
}

void afs_mp_free(struct afs_mp *mp) {
  if (!mp)
    return;
  afs_mp_set_urls(mp, 0, NULL, 0, 0);
  free(mp->upload_id);
  free(mp->part);
  free(mp);
}

struct afs_mp_part *afs_mp_part(struct afs_mp *mp, int n) {
  if (n > mp->cap) {
    int cap = mp->cap ? mp->cap : 64;
    while (cap < n)
      cap *= 2;
    mp->part = afs_xrealloc(mp->part, (size_t)cap * sizeof *mp->part);
    memset(mp->part + mp->cap, 0, (size_t)(cap - mp->cap) * sizeof *mp->part);
    mp->cap = cap;
  }
  return &mp->part[n - 1];
}

void afs_mp_dirty(struct afs_mp *mp, int64_t off, int64_t len) {
  int a = afs_mp_part_at(off);
  int b = len < 0 ? mp->cap : afs_mp_part_at(off + (len > 0 ? len - 1 : 0));
  if (len < 0 && mp->scan_from > a) /* truncated: written again from there, streamed again */
    mp->scan_from = a;
  for (int n = a; n <= b && n <= AFS_MP_MAX_PARTS; n++)
    afs_mp_part(mp, n)->gen++;
}

int64_t afs_mp_part_len_at(int n, int64_t size) {
  int64_t off = afs_mp_part_off(n), len = afs_mp_part_size(n);
  if (off >= size)
    return 0;
  return off + len > size ? size - off : len;
}

bool afs_mp_clean(const struct afs_mp *mp, int n, int64_t size) {
  if (n > mp->cap)
    return false;
  const struct afs_mp_part *p = &mp->part[n - 1];
  int64_t want = size < 0 ? afs_mp_part_size(n) : afs_mp_part_len_at(n, size);
  return p->etag[0] && p->sent_gen == p->gen && want > 0 && p->sent_len == want;
}

const char *afs_mp_url(const struct afs_mp *mp, int n, int64_t now_ms) {
  if (n < mp->url_first || n >= mp->url_first + mp->n_url || now_ms >= mp->url_until_ms)
    return NULL;
  return mp->url[n - mp->url_first];
}

void afs_mp_set_urls(struct afs_mp *mp, int first, char **urls, int n, int64_t until_ms) {
  for (int i = 0; i < mp->n_url; i++)
    free(mp->url[i]);
  free(mp->url);
  mp->url = urls;
  mp->url_first = first;
  mp->n_url = n;
  mp->url_until_ms = until_ms;
}

/* ---- the parts log ---- */

static char *log_path(const char *staging_path) {
  char *p;
  afs_xasprintf(&p, "%s%s", staging_path, AFS_MP_LOG_SUFFIX);
  return p;
}

void afs_mp_log_part(const char *staging_path, struct afs_mp *mp, int n, int64_t len,
                     const char *etag) {
  char *path = log_path(staging_path);
  int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (mp->logged ? O_APPEND : O_TRUNC);
  int fd = open(path, flags, 0600);
  free(path);
  if (fd < 0)
    return;
  char line[256];
  int k = 0;
  if (!mp->logged)
    k = snprintf(line, sizeof line, "assetfs-parts 1 %s\n", mp->rec);
  k += snprintf(line + k, sizeof line - (size_t)k, "%d %lld %s\n", n, (long long)len, etag);
  if (k > 0 && k < (int)sizeof line && write(fd, line, (size_t)k) == k)
    mp->logged = true;
  close(fd);
}

/* The MD5 of [off, off + len) of fd, in hex, compared with etag (quotes and case aside). */
static bool bytes_match(int fd, int64_t off, int64_t len, const char *etag, char *buf,
                        size_t bufsz) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
  while (ok && len > 0) {
    ssize_t r = pread(fd, buf, (size_t)(len < (int64_t)bufsz ? len : (int64_t)bufsz), off);
    ok = r > 0 && EVP_DigestUpdate(ctx, buf, (size_t)r);
    off += r > 0 ? r : 0;
    len -= r > 0 ? r : 0;
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 16;
  EVP_MD_CTX_free(ctx);
  char hex[33];
  for (unsigned i = 0; ok && i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", md[i]);
  if (*etag == '"')
    etag++;
  return ok && !strncasecmp(hex, etag, 32) && (etag[32] == '\0' || etag[32] == '"');
}

int afs_mp_restore(const char *staging_path, const char *rec, int64_t size,
                   const unsigned char *copied, struct afs_mp_logged **out) {
  *out = NULL;
  char *path = log_path(staging_path);
  FILE *f = fopen(path, "re");
  free(path);
  if (!f)
    return 0;
  char line[256], head_rec[AFS_OID_HEX + 8];
  int n = 0, cap = 0, fd = -1;
  char *buf = NULL;
  if (!fgets(line, sizeof line, f) || sscanf(line, "assetfs-parts 1 %32s", head_rec) != 1 ||
      strcmp(head_rec, rec))
    goto done;
  fd = open(staging_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  buf = afs_xmalloc(1 << 20);
  while (fd >= 0 && fgets(line, sizeof line, f)) {
    struct afs_mp_logged l;
    long long len;
    if (sscanf(line, "%d %lld %129s", &l.n, &len, l.etag) != 3 || l.n < 1 || l.n > AFS_MP_MAX_PARTS)
      continue;
    l.len = len;
    int64_t off = afs_mp_part_off(l.n), want = afs_mp_part_size(l.n);
    if (off + want > size)
      want = size - off;
    if (want <= 0 || l.len != want ||
        (!(copied && copied[l.n]) && !bytes_match(fd, off, want, l.etag, buf, 1 << 20)))
      continue;
    if (n == cap)
      *out = afs_xrealloc(*out, (size_t)(cap = cap ? cap * 2 : 64) * sizeof **out);
    (*out)[n++] = l;
  }
done:
  free(buf);
  if (fd >= 0)
    close(fd);
  fclose(f);
  return n;
}
