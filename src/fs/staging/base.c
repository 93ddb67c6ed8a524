/* Staged files based on a big asset (base.h): which parts are still the asset's, the
 * sidecar that keeps that across a crash, and the fills that stage a part's bytes. */
#include "staging/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/log.h"
#include "staging/parts.h"
#include "staging/staging_int.h"

/* A part is fetched this much at a time (parts reach 4 GiB in the last tiers). */
#define FILL_CHUNK (8 << 20)

/* ---- the table ---- */

struct afs_base *afs_base_new(const char *id, int64_t size, bool staged) {
  struct afs_base *b = afs_xcalloc(1, sizeof *b);
  snprintf(b->id, sizeof b->id, "%s", id);
  b->asset_size = b->size = size;
  b->nparts = size > 0 ? afs_mp_part_count(size) : 0;
  b->present = afs_xcalloc((size_t)b->nparts + 1, 1);
  b->same = afs_xmalloc((size_t)b->nparts + 1);
  memset(b->present, staged, (size_t)b->nparts + 1);
  memset(b->same, 1, (size_t)b->nparts + 1);
  return b;
}

bool afs_base_same(const struct afs_base *b, int n) {
  return b && n >= 1 && n <= b->nparts && b->same[n - 1] && afs_mp_part_off(n) < b->size;
}

bool afs_base_absent(const struct afs_base *b, int n) {
  return afs_base_same(b, n) && !b->present[n - 1];
}

bool afs_base_copyable(const struct afs_base *b, int n, int64_t file_size) {
  int64_t len = afs_mp_part_len_at(n, file_size);
  return afs_base_same(b, n) && len > 0 && afs_mp_part_off(n) + len <= b->size;
}

/* The asset's bytes in part n: [off, off + *len). */
static int64_t asset_range(const struct afs_base *b, int n, int64_t *len) {
  int64_t off = afs_mp_part_off(n), end = off + afs_mp_part_size(n);
  *len = (end < b->size ? end : b->size) - off;
  return off;
}

int64_t afs_base_absent_bytes(const struct afs_base *b) {
  int64_t sum = 0, len;
  for (int n = 1; b && n <= b->nparts; n++)
    if (afs_base_absent(b, n)) {
      asset_range(b, n, &len);
      sum += len;
    }
  return sum;
}

/* ---- the sidecar ---- */

static char *log_path(const char *staging_path) {
  char *p;
  afs_xasprintf(&p, "%s%s", staging_path, AFS_BASE_SUFFIX);
  return p;
}

/* Appends line (O_TRUNC when first) and syncs it. */
static bool log_write(const char *staging_path, const char *line, bool first,
                      struct afs_error *err) {
  char *path = log_path(staging_path);
  int fd =
      open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (first ? O_TRUNC : O_APPEND), 0600);
  size_t len = strlen(line);
  bool ok = fd >= 0 && write(fd, line, len) == (ssize_t)len && fdatasync(fd) == 0;
  if (!ok)
    afs_error_set(err, errno ? errno : EIO, "cannot write %s: %s", path, strerror(errno));
  if (fd >= 0)
    close(fd);
  free(path);
  return ok;
}

bool afs_base_log_begin(const char *staging_path, const struct afs_base *b, struct afs_error *err) {
  char line[128];
  snprintf(line, sizeof line, "assetfs-base 1 %s %lld %d\n", b->id, (long long)b->asset_size,
           b->nparts > 0 && b->present[0]);
  return log_write(staging_path, line, true, err);
}

struct afs_base *afs_base_log_read(const char *staging_path, struct afs_error *err) {
  char *path = log_path(staging_path);
  FILE *f = fopen(path, "re");
  struct afs_base *b = NULL;
  char line[128], id[AFS_OID_HEX + 8];
  long long v;
  int staged = 0;
  if (!f) {
    if (errno != ENOENT)
      afs_error_set(err, errno, "cannot read %s: %s", path, strerror(errno));
    free(path);
    return NULL;
  }
  if (!fgets(line, sizeof line, f) ||
      sscanf(line, "assetfs-base 1 %32s %lld %d", id, &v, &staged) != 3 ||
      strlen(id) != AFS_OID_HEX - 1 || v < 0) {
    afs_error_set(err, EINVAL, "%s does not parse", path);
    goto done;
  }
  b = afs_base_new(id, v, staged == 1);
  while (fgets(line, sizeof line, f)) {
    size_t ll = strlen(line);
    if (ll == 0 || line[ll - 1] != '\n')
      continue; /* cut short by a crash: what it said had not been relied on yet */
    if (sscanf(line, "p %lld", &v) == 1 && v >= 1 && v <= b->nparts)
      b->present[v - 1] = 1;
    else if (sscanf(line, "w %lld", &v) == 1 && v >= 1 && v <= b->nparts)
      b->same[v - 1] = 0;
    else if (!strcmp(line, "x\n"))
      for (int n = 0; n < b->nparts; n++)
        b->same[n] = b->same[n] && !b->present[n];
    else if (sscanf(line, "c %lld", &v) == 1 && v >= 0 && v < b->size)
      b->size = v;
    else if (sscanf(line, "b %32s", id) == 1 && strlen(id) == AFS_OID_HEX - 1)
      snprintf(b->id, sizeof b->id, "%s", id);
    else if (sscanf(line, "u %32s", id) == 1 && strlen(id) == AFS_OID_HEX - 1)
      snprintf(b->next, sizeof b->next, "%s", id);
  }
done:
  fclose(f);
  free(path);
  return b;
}

void afs_base_log_remove(const char *staging_path) {
  char *path = log_path(staging_path);
  unlink(path);
  free(path);
}

/* ---- fetching ---- */

void afs_staging_set_fetch(struct afs_staging *st, afs_base_fetch_fn fn, void (*src_free)(void *),
                           void *ctx) {
  st->fetch = fn;
  st->fetch_src_free = src_free;
  st->fetch_ctx = ctx;
}

void afs_base_free(struct afs_staging *st, struct afs_base *b) {
  if (!b)
    return;
  if (b->src && st && st->fetch_src_free)
    st->fetch_src_free(b->src);
  free(b->present);
  free(b->same);
  free(b);
}

bool afs_base_attach(struct afs_staging *st, struct afs_wfile *wf, const char *id, int64_t size,
                     struct afs_error *err) {
  struct afs_base *b = afs_base_new(id, size, false);
  if (!afs_base_log_begin(wf->staging_path, b, err) || ftruncate(wf->fd, size) != 0) {
    if (!err->code)
      afs_error_set(err, errno, "cannot size the staged file: %s", strerror(errno));
    afs_base_free(st, b);
    return false;
  }
  pthread_mutex_lock(&wf->mu);
  wf->base = b;
  pthread_mutex_unlock(&wf->mu);
  afs_stg_absent_changed(st, wf); /* first: the total never counts the absent bytes */
  afs_staging_account(st, wf, size, true);
  return true;
}

bool afs_base_from_completed(struct afs_staging *st, struct afs_wfile *wf, int64_t min_size,
                             struct afs_error *err) {
  struct stat sb;
  char id[AFS_OID_HEX];
  pthread_mutex_lock(&st->fill_mu);
  pthread_mutex_lock(&wf->mu);
  /* Uploaded is enough: its asset is active by the time the next version copies from
   * it, or the copy waits for it (upload/multipart.c). */
  bool fits = (wf->state == AFS_W_COMPLETED || wf->state == AFS_W_UPLOADED) && wf->record_used &&
              !wf->dirty && !wf->busy && !wf->base && wf->writers == 0 && wf->id[0] &&
              fstat(wf->fd, &sb) == 0 && sb.st_size > min_size;
  memcpy(id, wf->id, sizeof id);
  pthread_mutex_unlock(&wf->mu);
  bool ok = true;
  if (fits) {
    struct afs_base *b = afs_base_new(id, sb.st_size, true);
    ok = afs_base_log_begin(wf->staging_path, b, err);
    struct stat now;
    pthread_mutex_lock(&wf->mu);
    /* A truncate by path (no fill lock without a base) may have run meanwhile. */
    if (ok && !wf->base && !wf->dirty && fstat(wf->fd, &now) == 0 && now.st_size == sb.st_size) {
      wf->base = b;
      b = NULL;
    }
    pthread_mutex_unlock(&wf->mu);
    afs_base_free(st, b);
  }
  pthread_mutex_unlock(&st->fill_mu);
  return ok;
}

bool afs_base_wrote(struct afs_staging *st, struct afs_wfile *wf, int64_t off, int64_t len,
                    struct afs_error *err) {
  pthread_mutex_lock(&wf->mu);
  struct afs_base *b = wf->base;
  pthread_mutex_unlock(&wf->mu);
  if (!b || len <= 0)
    return true;
  int first = afs_mp_part_at(off), last = afs_mp_part_at(off + len - 1);
  bool any = false, ok = true;
  pthread_mutex_lock(&wf->mu);
  for (int n = first; !any && n <= last && n <= b->nparts; n++)
    any = b->same[n - 1];
  pthread_mutex_unlock(&wf->mu);
  if (!any)
    return true; /* the usual case: parts written before, or past the asset */
  pthread_mutex_lock(&st->fill_mu);
  for (int n = first; ok && n <= last && n <= b->nparts; n++) {
    pthread_mutex_lock(&wf->mu);
    bool same = b->same[n - 1];
    pthread_mutex_unlock(&wf->mu);
    if (!same)
      continue;
    /* Synced before the write: a crash after it must not copy the asset's bytes over it. */
    char line[32];
    snprintf(line, sizeof line, "w %d\n", n);
    ok = log_write(wf->staging_path, line, false, err);
    if (ok) {
      pthread_mutex_lock(&wf->mu);
      b->same[n - 1] = 0;
      pthread_mutex_unlock(&wf->mu);
    }
  }
  pthread_mutex_unlock(&st->fill_mu);
  return ok;
}

bool afs_base_no_copies(struct afs_staging *st, struct afs_wfile *wf) {
  struct afs_error err = {0};
  bool all = false; /* unless said on disk: a crash must not copy what is sent now */
  pthread_mutex_lock(&st->fill_mu);
  if (log_write(wf->staging_path, "x\n", false, &err)) {
    pthread_mutex_lock(&wf->mu);
    struct afs_base *b = wf->base;
    all = true;
    for (int n = 1; b && n <= b->nparts; n++) {
      all = all && !afs_base_absent(b, n);
      b->same[n - 1] = b->same[n - 1] && !b->present[n - 1];
    }
    pthread_mutex_unlock(&wf->mu);
  } else {
    afs_warn("%s", err.msg);
  }
  pthread_mutex_unlock(&st->fill_mu);
  return all;
}

/* Stages part n (absent, with fill_mu held): the asset's bytes, synced, then the line
 * that says so. */
static bool fill_part(struct afs_staging *st, struct afs_wfile *wf, int n, char *buf,
                      struct afs_error *err) {
  pthread_mutex_lock(&wf->mu);
  struct afs_base *b = wf->base;
  int64_t len, off = asset_range(b, n, &len);
  pthread_mutex_unlock(&wf->mu);
  if (!st->fetch)
    return afs_error_set(err, EIO, "no way to read the asset this file began as");
  /* fill_mu keeps cuts away, so the range stays the asset's while it is fetched. */
  for (int64_t at = off, step; at < off + len; at += step) {
    step = off + len - at < FILL_CHUNK ? off + len - at : FILL_CHUNK;
    if (!st->fetch(st->fetch_ctx, b, buf, (size_t)step, at, err))
      return false;
    errno = 0;
    if (pwrite(wf->fd, buf, (size_t)step, at) != step)
      return afs_error_set(err, errno ? errno : ENOSPC, "cannot stage a part of %s: %s",
                           wf->staging_path, strerror(errno ? errno : ENOSPC));
  }
  if (fdatasync(wf->fd) != 0)
    return afs_error_set(err, errno, "cannot stage a part of %s: %s", wf->staging_path,
                         strerror(errno));
  char line[32];
  snprintf(line, sizeof line, "p %d\n", n);
  if (!log_write(wf->staging_path, line, false, err))
    return false;
  pthread_mutex_lock(&wf->mu);
  b->present[n - 1] = 1;
  pthread_mutex_unlock(&wf->mu);
  return true;
}

bool afs_base_fill(struct afs_staging *st, struct afs_wfile *wf, int64_t off, int64_t len,
                   struct afs_error *err) {
  pthread_mutex_lock(&wf->mu);
  struct afs_base *b = wf->base;
  int last = b ? b->nparts : 0;
  pthread_mutex_unlock(&wf->mu);
  if (!b || (len == 0) || off < 0)
    return true;
  int first = afs_mp_part_at(off);
  if (len > 0 && afs_mp_part_at(off + len - 1) < last)
    last = afs_mp_part_at(off + len - 1);
  bool ok = true, any = false;
  char *buf = NULL;
  for (int n = first; ok && n <= last; n++) {
    /* One part at a time under the fill lock: others' reads and writes get in between. */
    pthread_mutex_lock(&st->fill_mu);
    pthread_mutex_lock(&wf->mu);
    bool absent = wf->base == b && afs_base_absent(b, n);
    pthread_mutex_unlock(&wf->mu);
    if (absent) {
      if (!buf)
        buf = afs_xmalloc(FILL_CHUNK);
      ok = fill_part(st, wf, n, buf, err);
      any = true;
    }
    pthread_mutex_unlock(&st->fill_mu);
  }
  free(buf);
  if (any)
    afs_stg_absent_changed(st, wf);
  return ok;
}

ssize_t afs_base_pread(struct afs_staging *st, struct afs_wfile *wf, char *buf, size_t size,
                       int64_t off, struct afs_error *err) {
  size_t done = 0;
  while (done < size) {
    int64_t at = off + (int64_t)done;
    int n = afs_mp_part_at(at);
    int64_t part_end = afs_mp_part_off(n) + afs_mp_part_size(n);
    pthread_mutex_lock(&wf->mu);
    struct afs_base *b = wf->base;
    bool absent = afs_base_absent(b, n) && at < b->size;
    int64_t end = absent && b->size < part_end ? b->size : part_end;
    pthread_mutex_unlock(&wf->mu);
    size_t want = size - done;
    if ((int64_t)want > end - at)
      want = (size_t)(end - at);
    ssize_t got;
    if (absent) {
      /* Under the fill lock: the fetcher's source lives in b (see base.h). */
      pthread_mutex_lock(&st->fill_mu);
      bool ok = st->fetch && st->fetch(st->fetch_ctx, b, buf + done, want, at, err);
      pthread_mutex_unlock(&st->fill_mu);
      if (!ok) {
        if (!st->fetch)
          afs_error_set(err, EIO, "no way to read the asset this file began as");
        return -1;
      }
      got = (ssize_t)want;
    } else {
      got = pread(wf->fd, buf + done, want, at);
      if (got < 0) {
        afs_error_set(err, errno, "cannot read %s: %s", wf->staging_path, strerror(errno));
        return -1;
      }
    }
    done += (size_t)got;
    if ((size_t)got < want)
      break; /* the end of the file */
  }
  return (ssize_t)done;
}

bool afs_base_truncate(struct afs_staging *st, struct afs_wfile *wf, int64_t size,
                       struct afs_error *err) {
  pthread_mutex_lock(&wf->mu);
  bool based = wf->base != NULL;
  pthread_mutex_unlock(&wf->mu);
  if (!based) {
    if (ftruncate(wf->fd, size) == 0)
      return true;
    return afs_error_set(err, errno, "cannot truncate %s: %s", wf->staging_path, strerror(errno));
  }
  /* The file first, then the line: a crash between them leaves a file shorter than the
   * sidecar says, which resume reads as the cut (never the other way round). */
  pthread_mutex_lock(&st->fill_mu);
  bool ok = ftruncate(wf->fd, size) == 0;
  if (!ok)
    afs_error_set(err, errno, "cannot truncate %s: %s", wf->staging_path, strerror(errno));
  pthread_mutex_lock(&wf->mu);
  bool cuts = ok && size < wf->base->size;
  if (cuts)
    wf->base->size = size;
  pthread_mutex_unlock(&wf->mu);
  if (cuts) {
    char line[48];
    snprintf(line, sizeof line, "c %lld\n", (long long)size);
    ok = log_write(wf->staging_path, line, false, err);
  }
  pthread_mutex_unlock(&st->fill_mu);
  afs_stg_absent_changed(st, wf);
  return ok;
}

void afs_base_uploaded(struct afs_staging *st, struct afs_wfile *wf, const char *id) {
  pthread_mutex_lock(&st->fill_mu);
  pthread_mutex_lock(&wf->mu);
  struct afs_base *b = wf->base;
  bool news = b && strcmp(b->next, id) && strcmp(b->id, id);
  pthread_mutex_unlock(&wf->mu);
  char line[48];
  struct afs_error err = {0};
  snprintf(line, sizeof line, "u %s\n", id);
  if (news && log_write(wf->staging_path, line, false, &err)) {
    pthread_mutex_lock(&wf->mu);
    snprintf(b->next, sizeof b->next, "%s", id);
    pthread_mutex_unlock(&wf->mu);
  } else if (news) {
    afs_warn("%s", err.msg);
  }
  pthread_mutex_unlock(&st->fill_mu);
}

void afs_base_moved(struct afs_staging *st, struct afs_wfile *wf, const char *id) {
  pthread_mutex_lock(&st->fill_mu);
  pthread_mutex_lock(&wf->mu);
  struct afs_base *b = wf->base;
  bool moves = b && strcmp(b->id, id);
  pthread_mutex_unlock(&wf->mu);
  if (moves) {
    char line[48];
    struct afs_error err = {0};
    snprintf(line, sizeof line, "b %s\n", id);
    if (log_write(wf->staging_path, line, false, &err)) {
      pthread_mutex_lock(&wf->mu);
      snprintf(b->id, sizeof b->id, "%s", id);
      if (!strcmp(b->next, id))
        b->next[0] = '\0';
      void *src = b->src;
      b->src = NULL;
      pthread_mutex_unlock(&wf->mu);
      if (src && st->fetch_src_free)
        st->fetch_src_free(src);
    } else {
      afs_warn("%s", err.msg);
    }
  }
  pthread_mutex_unlock(&st->fill_mu);
}
