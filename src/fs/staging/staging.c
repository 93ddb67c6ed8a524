/* The staging table: every file written through the mount that is not (yet) a plain
 * completed asset, keyed by (partition, filePath), with reference counts and the running
 * byte total that cache_max is checked against; and the directories made with mkdir that
 * hold no file yet. What lies on disk beside each file (its journal) and adopting what an
 * earlier mount left is staging_resume.c. */
#include "staging/parts.h"
#include "staging/staging_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/log.h"

const char *afs_wstate_name(enum afs_wstate s) {
  switch (s) {
  case AFS_W_WRITING:
    return "writing";
  case AFS_W_UPLOADING:
    return "uploading";
  case AFS_W_UPLOADED:
    return "uploaded";
  case AFS_W_RETRYING:
    return "retrying";
  case AFS_W_COMPLETED:
    return "completed";
  case AFS_W_FAILED:
    return "error";
  case AFS_W_QUEUED:
    return "queued";
  }
  return "unknown";
}

struct afs_staging *afs_staging_new(const char *dir, struct afs_error *err) {
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    afs_error_set(err, errno, "cannot create staging folder %s: %s", dir, strerror(errno));
    return NULL;
  }
  struct afs_staging *st = calloc(1, sizeof *st);
  st->dir = strdup(dir);
  pthread_mutex_init(&st->mu, NULL);
  pthread_mutex_init(&st->room_mu, NULL);
  pthread_mutex_init(&st->fill_mu, NULL);
  afs_cond_init(&st->room_cv);
  /* New names must not collide with what an earlier mount left for resume. */
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    unsigned long long n = strtoull(de->d_name, NULL, 10);
    if (n > st->seq)
      st->seq = n;
  }
  if (d)
    closedir(d);
  return st;
}

const char *afs_staging_dir(const struct afs_staging *st) {
  return st->dir;
}

struct afs_wfile *afs_stg_wf_new(const char *partition, const char *file_path) {
  struct afs_wfile *wf = afs_xcalloc(1, sizeof *wf);
  pthread_mutex_init(&wf->jmu, NULL);
  pthread_mutex_init(&wf->mu, NULL);
  afs_cond_init(&wf->cond);
  wf->fd = -1;
  wf->partition = partition ? strdup(partition) : NULL;
  wf->file_path = file_path ? strdup(file_path) : NULL;
  return wf;
}

/* Staged bytes went down: wake the writers waiting for room (afs_staging_wait_room). */
static void room_given_back(struct afs_staging *st) {
  pthread_mutex_lock(&st->room_mu);
  pthread_cond_broadcast(&st->room_cv);
  pthread_mutex_unlock(&st->room_mu);
}

void afs_stg_wf_destroy(struct afs_staging *st, struct afs_wfile *wf) {
  if (wf->fd >= 0)
    close(wf->fd);
  if (wf->staging_path) {
    char *j = afs_stg_journal_path(wf->staging_path);
    unlink(j); /* first: a journal without its data is only cleaned up, never uploaded */
    free(j);
    unlink(wf->staging_path);
    char *parts;
    afs_xasprintf(&parts, "%s%s", wf->staging_path, AFS_MP_LOG_SUFFIX);
    unlink(parts);
    free(parts);
    afs_base_log_remove(wf->staging_path);
  }
  __atomic_sub_fetch(&st->bytes, wf->acct_size - wf->acct_absent, __ATOMIC_RELAXED);
  if (wf->acct_size > wf->acct_absent)
    room_given_back(st);
  afs_base_free(st, wf->base);
  pthread_mutex_destroy(&wf->jmu);
  pthread_mutex_destroy(&wf->mu);
  pthread_cond_destroy(&wf->cond);
  free(wf->staging_path);
  free(wf->partition);
  free(wf->file_path);
  free(wf->caption);
  afs_mp_free(wf->mp);
  free(wf);
}

void afs_staging_free(struct afs_staging *st) {
  if (!st)
    return;
  for (size_t i = 0; i < st->n_files; i++) {
    struct afs_wfile *wf = st->files[i];
    wf->in_table = false;
    if (wf->state != AFS_W_COMPLETED && !wf->unlinked) {
      /* Not completed: the bytes and the journal stay; the next mount of this session
       * resumes the upload (or, if uploaded, waits for the broker to complete it). */
      if (wf->state == AFS_W_UPLOADED)
        afs_info("uploaded, not completed yet: %s/%s stays in %s until the next mount sees "
                 "it completed",
                 wf->partition, wf->file_path, wf->staging_path);
      else
        afs_warn("not uploaded: %s/%s is kept in %s; the next mount with this session_id "
                 "uploads it",
                 wf->partition, wf->file_path, wf->staging_path);
      free(wf->staging_path);
      wf->staging_path = NULL;
    }
    if (--wf->refs == 0)
      afs_stg_wf_destroy(st, wf);
  }
  for (size_t i = 0; i < st->n_dirs; i++) {
    free(st->dirs[i].partition);
    free(st->dirs[i].dir);
  }
  afs_stg_index_free(st);
  free(st->files);
  free(st->dirs);
  rmdir(st->dir); /* only succeeds when empty: data that still needs uploading stays */
  pthread_mutex_destroy(&st->mu);
  pthread_mutex_destroy(&st->room_mu);
  pthread_mutex_destroy(&st->fill_mu);
  pthread_cond_destroy(&st->room_cv);
  free(st->dir);
  free(st);
}

ssize_t afs_stg_find_locked(struct afs_staging *st, const char *partition, const char *path) {
  struct afs_wfile *wf = afs_stg_index_find(st, partition, path);
  return wf ? (ssize_t)wf->tab_index : -1;
}

void afs_stg_remove_at_locked(struct afs_staging *st, size_t i) {
  struct afs_wfile *wf = st->files[i];
  afs_stg_index_del(st, wf);
  st->files[i] = st->files[--st->n_files];
  st->files[i]->tab_index = i;
  wf->in_table = false;
  wf->refs--;
}

void afs_stg_insert_locked(struct afs_staging *st, struct afs_wfile *wf) {
  if (st->n_files == st->cap_files) {
    st->cap_files = st->cap_files ? st->cap_files * 2 : 64;
    st->files = realloc(st->files, st->cap_files * sizeof *st->files);
  }
  wf->tab_index = st->n_files;
  st->files[st->n_files++] = wf;
  wf->in_table = true;
  wf->refs++;
  afs_stg_index_add(st, wf);
}

struct afs_wfile *afs_staging_create(struct afs_staging *st, const char *partition,
                                     const char *file_path, const char *content_type,
                                     struct afs_wfile **replaced, struct afs_error *err) {
  if (replaced)
    *replaced = NULL;
  struct afs_wfile *wf = afs_stg_wf_new(partition, file_path);
  snprintf(wf->content_type, sizeof wf->content_type, "%s", content_type);
  /* Keep the extension: libvips picks loaders and savers by it. */
  const char *base = strrchr(file_path, '/');
  const char *dot = strrchr(base ? base + 1 : file_path, '.');
  char ext[24] = "";
  if (dot && strlen(dot) < sizeof ext && !strchr(dot, ' '))
    snprintf(ext, sizeof ext, "%s", dot);
  pthread_mutex_lock(&st->mu);
  uint64_t seq = ++st->seq;
  pthread_mutex_unlock(&st->mu);
  afs_xasprintf(&wf->staging_path, "%s/%llu%s", st->dir, (unsigned long long)seq, ext);
  wf->fd = open(wf->staging_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (wf->fd < 0) {
    afs_error_set(err, errno, "cannot create staging file %s: %s", wf->staging_path,
                  strerror(errno));
    free(wf->staging_path);
    wf->staging_path = NULL;
    afs_stg_wf_destroy(st, wf);
    return NULL;
  }
  wf->dirty = true;
  wf->state = AFS_W_WRITING;
  wf->refs = 1; /* the caller's */
  pthread_mutex_lock(&st->mu);
  ssize_t i = afs_stg_find_locked(st, partition, file_path);
  if (i >= 0) {
    struct afs_wfile *old = st->files[i];
    if (replaced) {
      old->refs++;
      *replaced = old;
    }
    afs_stg_remove_at_locked(st, (size_t)i);
    if (old->refs == 0) {
      pthread_mutex_unlock(&st->mu);
      afs_stg_wf_destroy(st, old);
      pthread_mutex_lock(&st->mu);
    }
  }
  afs_stg_insert_locked(st, wf);
  pthread_mutex_unlock(&st->mu);
  return wf;
}

struct afs_wfile *afs_staging_get(struct afs_staging *st, const char *partition,
                                  const char *file_path) {
  struct afs_wfile *wf = NULL;
  pthread_mutex_lock(&st->mu);
  ssize_t i = afs_stg_find_locked(st, partition, file_path);
  if (i >= 0) {
    wf = st->files[i];
    wf->refs++;
  }
  pthread_mutex_unlock(&st->mu);
  return wf;
}

void afs_staging_ref(struct afs_staging *st, struct afs_wfile *wf) {
  pthread_mutex_lock(&st->mu);
  wf->refs++;
  pthread_mutex_unlock(&st->mu);
}

void afs_staging_unref(struct afs_staging *st, struct afs_wfile *wf) {
  if (!wf)
    return;
  pthread_mutex_lock(&st->mu);
  bool last = --wf->refs == 0;
  pthread_mutex_unlock(&st->mu);
  if (last)
    afs_stg_wf_destroy(st, wf);
}

/* With st->mu held: takes wf out of the table if it is there. Returns whether it was;
 * *last: that was its last reference (the caller destroys it after unlocking). */
static bool remove_wf_locked(struct afs_staging *st, struct afs_wfile *wf, bool *last) {
  if (!wf->in_table || wf->tab_index >= st->n_files || st->files[wf->tab_index] != wf)
    return false;
  afs_stg_remove_at_locked(st, wf->tab_index);
  *last = wf->refs == 0;
  return true;
}

void afs_staging_remove(struct afs_staging *st, struct afs_wfile *wf) {
  bool last = false;
  pthread_mutex_lock(&st->mu);
  remove_wf_locked(st, wf, &last);
  pthread_mutex_unlock(&st->mu);
  if (last)
    afs_stg_wf_destroy(st, wf);
}

struct afs_wfile *afs_staging_move(struct afs_staging *st, struct afs_wfile *wf,
                                   const char *partition, const char *file_path) {
  struct afs_wfile *displaced = NULL;
  pthread_mutex_lock(&st->mu);
  ssize_t i = afs_stg_find_locked(st, partition, file_path);
  if (i >= 0 && st->files[i] != wf) {
    displaced = st->files[i];
    displaced->refs++;
    afs_stg_remove_at_locked(st, (size_t)i);
  }
  if (wf->in_table)
    afs_stg_index_del(st, wf);
  free(wf->partition);
  free(wf->file_path);
  wf->partition = strdup(partition);
  wf->file_path = strdup(file_path);
  if (wf->in_table)
    afs_stg_index_add(st, wf);
  pthread_mutex_unlock(&st->mu);
  return displaced;
}

/* "a/b" is under "a" (and everything is under ""). */
static const char *under(const char *path, const char *dir) {
  size_t n = strlen(dir);
  if (n == 0)
    return path;
  if (strncmp(path, dir, n) != 0 || path[n] != '/')
    return NULL;
  return path + n + 1;
}

int afs_staging_move_dir(struct afs_staging *st, const char *partition, const char *from_dir,
                         const char *to_dir, struct afs_wfile ***moved) {
  int n = 0;
  *moved = NULL;
  pthread_mutex_lock(&st->mu);
  for (size_t i = 0; i < st->n_files; i++) {
    struct afs_wfile *wf = st->files[i];
    const char *rest;
    if (strcmp(wf->partition, partition) || !(rest = under(wf->file_path, from_dir)))
      continue;
    char *np;
    afs_xasprintf(&np, "%s/%s", to_dir, rest);
    afs_stg_index_del(st, wf);
    free(wf->file_path);
    wf->file_path = np;
    afs_stg_index_add(st, wf);
    wf->refs++;
    *moved = realloc(*moved, (n + 1) * sizeof **moved);
    (*moved)[n++] = wf;
  }
  for (size_t i = 0; i < st->n_dirs; i++) {
    struct local_dir *d = &st->dirs[i];
    const char *rest;
    if (strcmp(d->partition, partition))
      continue;
    char *nd = NULL;
    if (!strcmp(d->dir, from_dir))
      nd = afs_xstrdup(to_dir);
    else if ((rest = under(d->dir, from_dir)))
      afs_xasprintf(&nd, "%s/%s", to_dir, rest);
    if (nd) {
      free(d->dir);
      d->dir = nd;
    }
  }
  pthread_mutex_unlock(&st->mu);
  return n;
}

void afs_staging_names(struct afs_staging *st, struct afs_wfile *wf, char **partition,
                       char **file_path) {
  pthread_mutex_lock(&st->mu);
  *partition = strdup(wf->partition);
  *file_path = strdup(wf->file_path);
  pthread_mutex_unlock(&st->mu);
}

bool afs_staging_stat(struct afs_wfile *wf, struct stat *out) {
  pthread_mutex_lock(&wf->mu);
  bool ok = wf->fd >= 0 && fstat(wf->fd, out) == 0;
  int64_t mt = wf->mtime_ms;
  pthread_mutex_unlock(&wf->mu);
  if (ok && mt) {
    out->st_mtim.tv_sec = mt / 1000;
    out->st_mtim.tv_nsec = (mt % 1000) * 1000000;
  }
  return ok;
}

/* The first component of rest in name (size n). */
static void first_component(const char *rest, char *name, size_t n, bool *is_dir) {
  size_t len = strcspn(rest, "/");
  if (len >= n)
    len = n - 1;
  memcpy(name, rest, len);
  name[len] = '\0';
  *is_dir = rest[strcspn(rest, "/")] == '/';
}

void afs_staging_list(struct afs_staging *st, const char *partition, const char *dir,
                      afs_staging_list_cb cb, void *ctx) {
  char name[4096];
  bool is_dir;
  pthread_mutex_lock(&st->mu);
  /* Names are collected under the lock and reported after it: cb may be slow. */
  size_t cap = 16, n = 0;
  struct {
    char *name;
    bool is_dir;
  } *out = malloc(cap * sizeof *out);
  for (size_t i = 0; i < st->n_files + st->n_dirs; i++) {
    const char *p, *path;
    if (i < st->n_files) {
      p = st->files[i]->partition;
      path = st->files[i]->file_path;
    } else {
      p = st->dirs[i - st->n_files].partition;
      path = st->dirs[i - st->n_files].dir;
    }
    if (!partition) {
      snprintf(name, sizeof name, "%s", p);
      is_dir = true;
    } else {
      const char *rest;
      if (strcmp(p, partition) || !(rest = under(path, dir)) || !*rest)
        continue;
      first_component(rest, name, sizeof name, &is_dir);
      if (i >= st->n_files)
        is_dir = true;
    }
    if (n == cap)
      out = realloc(out, (cap *= 2) * sizeof *out);
    out[n].name = strdup(name);
    out[n++].is_dir = is_dir;
  }
  pthread_mutex_unlock(&st->mu);
  for (size_t i = 0; i < n; i++) {
    cb(ctx, out[i].name, out[i].is_dir);
    free(out[i].name);
  }
  free(out);
}

bool afs_staging_is_dir(struct afs_staging *st, const char *partition, const char *dir) {
  bool found = false;
  pthread_mutex_lock(&st->mu);
  for (size_t i = 0; i < st->n_dirs && !found; i++)
    found = !strcmp(st->dirs[i].partition, partition) &&
            (!strcmp(st->dirs[i].dir, dir) || under(st->dirs[i].dir, dir));
  found = found || afs_stg_index_under(st, partition, dir) > 0;
  pthread_mutex_unlock(&st->mu);
  return found;
}

bool afs_staging_dir_has_children(struct afs_staging *st, const char *partition, const char *dir) {
  bool found = false;
  pthread_mutex_lock(&st->mu);
  for (size_t i = 0; i < st->n_dirs && !found; i++)
    found = !strcmp(st->dirs[i].partition, partition) && under(st->dirs[i].dir, dir) &&
            *st->dirs[i].dir;
  found = found || afs_stg_index_under(st, partition, dir) > 0;
  pthread_mutex_unlock(&st->mu);
  return found;
}

void afs_staging_add_dir(struct afs_staging *st, const char *partition, const char *dir) {
  pthread_mutex_lock(&st->mu);
  for (size_t i = 0; i < st->n_dirs; i++) {
    if (!strcmp(st->dirs[i].partition, partition) && !strcmp(st->dirs[i].dir, dir)) {
      pthread_mutex_unlock(&st->mu);
      return;
    }
  }
  if (st->n_dirs == st->cap_dirs) {
    st->cap_dirs = st->cap_dirs ? st->cap_dirs * 2 : 16;
    st->dirs = realloc(st->dirs, st->cap_dirs * sizeof *st->dirs);
  }
  st->dirs[st->n_dirs].partition = strdup(partition);
  st->dirs[st->n_dirs++].dir = strdup(dir);
  pthread_mutex_unlock(&st->mu);
}

bool afs_staging_remove_dir(struct afs_staging *st, const char *partition, const char *dir) {
  bool found = false;
  pthread_mutex_lock(&st->mu);
  for (size_t i = 0; i < st->n_dirs; i++) {
    if (!strcmp(st->dirs[i].partition, partition) && !strcmp(st->dirs[i].dir, dir)) {
      free(st->dirs[i].partition);
      free(st->dirs[i].dir);
      st->dirs[i] = st->dirs[--st->n_dirs];
      found = true;
      break;
    }
  }
  pthread_mutex_unlock(&st->mu);
  return found;
}

int afs_staging_snapshot(struct afs_staging *st, struct afs_wfile ***out) {
  pthread_mutex_lock(&st->mu);
  int n = (int)st->n_files;
  *out = malloc((n ? n : 1) * sizeof **out);
  for (int i = 0; i < n; i++) {
    (*out)[i] = st->files[i];
    st->files[i]->refs++;
  }
  pthread_mutex_unlock(&st->mu);
  return n;
}

int64_t afs_staging_bytes(struct afs_staging *st) {
  return __atomic_load_n(&st->bytes, __ATOMIC_RELAXED);
}

void afs_staging_account(struct afs_staging *st, struct afs_wfile *wf, int64_t size,
                         bool grow_only) {
  pthread_mutex_lock(&wf->mu);
  int64_t delta = grow_only && size <= wf->acct_size ? 0 : size - wf->acct_size;
  wf->acct_size += delta;
  /* Absent bytes (base.h) past a new, smaller size are gone with it. */
  int64_t over = wf->acct_absent > wf->acct_size ? wf->acct_absent - wf->acct_size : 0;
  wf->acct_absent -= over;
  delta += over;
  pthread_mutex_unlock(&wf->mu);
  if (delta)
    __atomic_add_fetch(&st->bytes, delta, __ATOMIC_RELAXED);
  if (delta < 0)
    room_given_back(st);
}

void afs_stg_absent_changed(struct afs_staging *st, struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  int64_t absent = afs_base_absent_bytes(wf->base);
  int64_t delta = absent - wf->acct_absent;
  wf->acct_absent = absent;
  pthread_mutex_unlock(&wf->mu);
  if (delta)
    __atomic_sub_fetch(&st->bytes, delta, __ATOMIC_RELAXED);
  if (delta > 0)
    room_given_back(st);
}

bool afs_staging_wait_room(struct afs_staging *st, int64_t grow, int64_t max, long slice_ms) {
  pthread_mutex_lock(&st->room_mu);
  /* bytes change without room_mu; a decrease broadcasts under it, so a check made
   * under room_mu right before the wait cannot miss one. */
  bool fits = afs_staging_bytes(st) + grow <= max;
  if (!fits) {
    afs_cond_timedwait_ms(&st->room_cv, &st->room_mu, slice_ms);
    fits = afs_staging_bytes(st) + grow <= max;
  }
  pthread_mutex_unlock(&st->room_mu);
  return fits;
}

bool afs_staging_in_table(struct afs_staging *st, struct afs_wfile *wf) {
  pthread_mutex_lock(&st->mu);
  bool in = wf->in_table;
  pthread_mutex_unlock(&st->mu);
  return in;
}

bool afs_staging_drop_if_idle(struct afs_staging *st, struct afs_wfile *wf, const char *id) {
  bool removed = false, last = false;
  pthread_mutex_lock(&st->mu);
  pthread_mutex_lock(&wf->mu);
  bool idle = wf->in_table && wf->state == AFS_W_COMPLETED && wf->shown && !strcmp(wf->id, id) &&
              wf->handles == 0;
  pthread_mutex_unlock(&wf->mu);
  if (idle)
    removed = remove_wf_locked(st, wf, &last);
  pthread_mutex_unlock(&st->mu);
  if (last)
    afs_stg_wf_destroy(st, wf);
  return removed;
}
