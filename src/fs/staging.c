#include "assetfs/staging.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/http_put.h"
#include "assetfs/journal.h"
#include "assetfs/log.h"

struct local_dir {
  char *partition;
  char *dir; /* "" = the partition directory itself */
};

struct afs_staging {
  char *dir;
  pthread_mutex_t mu; /* protects everything below and wf->partition/file_path/in_table/refs */
  struct afs_wfile **files;
  size_t n_files, cap_files;
  struct local_dir *dirs;
  size_t n_dirs, cap_dirs;
  uint64_t seq;
  int64_t bytes; /* atomic (__atomic builtins), not under mu: sum of every wf->acct_size */
};

const char *afs_wstate_name(enum afs_wstate s) {
  switch (s) {
  case AFS_W_WRITING: return "writing";
  case AFS_W_UPLOADING: return "uploading";
  case AFS_W_UPLOADED: return "uploaded";
  case AFS_W_RETRYING: return "retrying";
  case AFS_W_COMPLETED: return "completed";
  case AFS_W_FAILED: return "error";
  case AFS_W_QUEUED: return "queued";
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

static char *journal_path(const char *staging_path) {
  char *p;
  if (asprintf(&p, "%s%s", staging_path, AFS_JOURNAL_SUFFIX) < 0)
    abort();
  return p;
}

const char *afs_staging_dir(const struct afs_staging *st) { return st->dir; }

static void wf_destroy(struct afs_staging *st, struct afs_wfile *wf) {
  if (wf->fd >= 0)
    close(wf->fd);
  if (wf->staging_path) {
    char *j = journal_path(wf->staging_path);
    unlink(j); /* first: a journal without its data is only cleaned up, never uploaded */
    free(j);
    unlink(wf->staging_path);
  }
  __atomic_sub_fetch(&st->bytes, wf->acct_size, __ATOMIC_RELAXED);
  pthread_mutex_destroy(&wf->jmu);
  pthread_mutex_destroy(&wf->mu);
  pthread_cond_destroy(&wf->cond);
  free(wf->staging_path);
  free(wf->partition);
  free(wf->file_path);
  free(wf->caption);
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
                 "it completed", wf->partition, wf->file_path, wf->staging_path);
      else
        afs_warn("not uploaded: %s/%s is kept in %s; the next mount with this session_id "
                 "uploads it", wf->partition, wf->file_path, wf->staging_path);
      free(wf->staging_path);
      wf->staging_path = NULL;
    }
    if (--wf->refs == 0)
      wf_destroy(st, wf);
  }
  for (size_t i = 0; i < st->n_dirs; i++) {
    free(st->dirs[i].partition);
    free(st->dirs[i].dir);
  }
  free(st->files);
  free(st->dirs);
  rmdir(st->dir); /* only succeeds when empty: data that still needs uploading stays */
  pthread_mutex_destroy(&st->mu);
  free(st->dir);
  free(st);
}

/* Called with st->mu held. */
static ssize_t find_locked(struct afs_staging *st, const char *partition, const char *path) {
  for (size_t i = 0; i < st->n_files; i++)
    if (!strcmp(st->files[i]->file_path, path) && !strcmp(st->files[i]->partition, partition))
      return (ssize_t)i;
  return -1;
}

/* Called with st->mu held; drops the table's reference (the caller holds another). */
static void remove_at_locked(struct afs_staging *st, size_t i) {
  struct afs_wfile *wf = st->files[i];
  st->files[i] = st->files[--st->n_files];
  wf->in_table = false;
  wf->refs--;
}

static void insert_locked(struct afs_staging *st, struct afs_wfile *wf) {
  if (st->n_files == st->cap_files) {
    st->cap_files = st->cap_files ? st->cap_files * 2 : 64;
    st->files = realloc(st->files, st->cap_files * sizeof *st->files);
  }
  st->files[st->n_files++] = wf;
  wf->in_table = true;
  wf->refs++;
}

struct afs_wfile *afs_staging_create(struct afs_staging *st, const char *partition,
                                     const char *file_path, const char *content_type,
                                     struct afs_wfile **replaced, struct afs_error *err) {
  if (replaced)
    *replaced = NULL;
  struct afs_wfile *wf = calloc(1, sizeof *wf);
  pthread_mutex_init(&wf->jmu, NULL);
  pthread_mutex_init(&wf->mu, NULL);
  pthread_cond_init(&wf->cond, NULL);
  wf->fd = -1;
  wf->partition = strdup(partition);
  wf->file_path = strdup(file_path);
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
  if (asprintf(&wf->staging_path, "%s/%llu%s", st->dir, (unsigned long long)seq, ext) < 0)
    abort();
  wf->fd = open(wf->staging_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (wf->fd < 0) {
    afs_error_set(err, errno, "cannot create staging file %s: %s", wf->staging_path,
                  strerror(errno));
    free(wf->staging_path);
    wf->staging_path = NULL;
    wf_destroy(st, wf);
    return NULL;
  }
  wf->dirty = true;
  wf->state = AFS_W_WRITING;
  wf->refs = 1; /* the caller's */
  pthread_mutex_lock(&st->mu);
  ssize_t i = find_locked(st, partition, file_path);
  if (i >= 0) {
    struct afs_wfile *old = st->files[i];
    if (replaced) {
      old->refs++;
      *replaced = old;
    }
    remove_at_locked(st, (size_t)i);
    if (old->refs == 0) {
      pthread_mutex_unlock(&st->mu);
      wf_destroy(st, old);
      pthread_mutex_lock(&st->mu);
    }
  }
  insert_locked(st, wf);
  pthread_mutex_unlock(&st->mu);
  return wf;
}

struct afs_wfile *afs_staging_get(struct afs_staging *st, const char *partition,
                                  const char *file_path) {
  struct afs_wfile *wf = NULL;
  pthread_mutex_lock(&st->mu);
  ssize_t i = find_locked(st, partition, file_path);
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
    wf_destroy(st, wf);
}

void afs_staging_remove(struct afs_staging *st, struct afs_wfile *wf) {
  pthread_mutex_lock(&st->mu);
  bool last = false;
  for (size_t i = 0; i < st->n_files; i++) {
    if (st->files[i] == wf) {
      remove_at_locked(st, i);
      last = wf->refs == 0;
      break;
    }
  }
  pthread_mutex_unlock(&st->mu);
  if (last)
    wf_destroy(st, wf);
}

struct afs_wfile *afs_staging_move(struct afs_staging *st, struct afs_wfile *wf,
                                   const char *partition, const char *file_path) {
  struct afs_wfile *displaced = NULL;
  pthread_mutex_lock(&st->mu);
  ssize_t i = find_locked(st, partition, file_path);
  if (i >= 0 && st->files[i] != wf) {
    displaced = st->files[i];
    displaced->refs++;
    remove_at_locked(st, (size_t)i);
  }
  free(wf->partition);
  free(wf->file_path);
  wf->partition = strdup(partition);
  wf->file_path = strdup(file_path);
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
    if (asprintf(&np, "%s/%s", to_dir, rest) < 0)
      abort();
    free(wf->file_path);
    wf->file_path = np;
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
      nd = strdup(to_dir);
    else if ((rest = under(d->dir, from_dir)) && asprintf(&nd, "%s/%s", to_dir, rest) < 0)
      abort();
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
  for (size_t i = 0; i < st->n_files && !found; i++)
    found = !strcmp(st->files[i]->partition, partition) && under(st->files[i]->file_path, dir);
  pthread_mutex_unlock(&st->mu);
  return found;
}

bool afs_staging_dir_has_children(struct afs_staging *st, const char *partition,
                                  const char *dir) {
  bool found = false;
  pthread_mutex_lock(&st->mu);
  for (size_t i = 0; i < st->n_dirs && !found; i++)
    found = !strcmp(st->dirs[i].partition, partition) && under(st->dirs[i].dir, dir) &&
            *st->dirs[i].dir;
  for (size_t i = 0; i < st->n_files && !found; i++)
    found = !strcmp(st->files[i]->partition, partition) && under(st->files[i]->file_path, dir);
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
  pthread_mutex_unlock(&wf->mu);
  if (delta)
    __atomic_add_fetch(&st->bytes, delta, __ATOMIC_RELAXED);
}

bool afs_staging_journal(struct afs_staging *st, struct afs_wfile *wf, bool durable,
                         struct afs_error *err) {
  struct afs_journal j;
  memset(&j, 0, sizeof j);
  bool ok = true;
  pthread_mutex_lock(&wf->jmu);
  pthread_mutex_lock(&st->mu);
  j.partition = strdup(wf->partition);
  j.file_path = strdup(wf->file_path);
  pthread_mutex_unlock(&st->mu);
  pthread_mutex_lock(&wf->mu);
  bool gone = wf->unlinked || !wf->staging_path;
  char *path = wf->staging_path ? journal_path(wf->staging_path) : NULL;
  int fd = wf->fd;
  j.content_type = strdup(wf->content_type);
  j.caption = wf->caption ? strdup(wf->caption) : NULL;
  memcpy(j.id, wf->id, sizeof j.id);
  j.uploaded = wf->state == AFS_W_UPLOADED || wf->state == AFS_W_COMPLETED;
  j.mtime_ms = wf->mtime_ms;
  pthread_mutex_unlock(&wf->mu);
  if (gone) {
    if (path)
      unlink(path);
  } else {
    /* fd stays open while the caller holds its reference. */
    if (durable && fsync(fd) != 0)
      ok = afs_error_set(err, errno, "cannot sync the staged copy of %s: %s", j.file_path,
                         strerror(errno));
    ok = ok && afs_journal_write(path, &j, durable, err);
  }
  pthread_mutex_unlock(&wf->jmu);
  free(path);
  afs_journal_free(&j);
  return ok;
}

void afs_staging_forget(struct afs_staging *st, struct afs_wfile *wf) {
  (void)st;
  pthread_mutex_lock(&wf->jmu);
  pthread_mutex_lock(&wf->mu);
  char *path = wf->staging_path ? journal_path(wf->staging_path) : NULL;
  pthread_mutex_unlock(&wf->mu);
  if (path)
    unlink(path);
  pthread_mutex_unlock(&wf->jmu);
  free(path);
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
  bool idle = wf->in_table && wf->state == AFS_W_COMPLETED && wf->shown &&
              !strcmp(wf->id, id) && wf->handles == 0;
  pthread_mutex_unlock(&wf->mu);
  for (size_t i = 0; idle && i < st->n_files; i++) {
    if (st->files[i] == wf) {
      remove_at_locked(st, i);
      removed = true;
      last = wf->refs == 0;
      break;
    }
  }
  pthread_mutex_unlock(&st->mu);
  if (last)
    wf_destroy(st, wf);
  return removed;
}

static int cmp_seq(const void *a, const void *b) {
  unsigned long long x = strtoull(*(char *const *)a, NULL, 10);
  unsigned long long y = strtoull(*(char *const *)b, NULL, 10);
  return x < y ? -1 : x > y;
}

static bool has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* One journal: its entry in the table (a later one at the same path replaces it). */
static bool adopt(struct afs_staging *st, const char *jname) {
  struct afs_error e = {0};
  struct afs_journal j;
  char *jpath, *data;
  if (asprintf(&jpath, "%s/%s", st->dir, jname) < 0 ||
      asprintf(&data, "%s/%.*s", st->dir, (int)(strlen(jname) - strlen(AFS_JOURNAL_SUFFIX)),
               jname) < 0)
    abort();
  bool ok = false;
  int fd = -1;
  if (!afs_journal_read(jpath, &j, &e)) {
    afs_warn("ignoring %s: %s", jpath, e.msg);
    goto done;
  }
  fd = open(data, O_RDWR | O_CLOEXEC);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    afs_warn("%s/%s: the staged copy %s is gone; nothing to resume", j.partition,
             j.file_path, data);
    afs_journal_free(&j);
    goto done;
  }
  struct afs_wfile *wf = calloc(1, sizeof *wf);
  pthread_mutex_init(&wf->jmu, NULL);
  pthread_mutex_init(&wf->mu, NULL);
  pthread_cond_init(&wf->cond, NULL);
  wf->fd = fd;
  fd = -1;
  wf->staging_path = data;
  data = NULL;
  wf->partition = j.partition;
  wf->file_path = j.file_path;
  j.partition = j.file_path = NULL;
  snprintf(wf->content_type, sizeof wf->content_type, "%s", j.content_type);
  wf->caption = j.caption;
  j.caption = NULL;
  memcpy(wf->id, j.id, sizeof wf->id);
  wf->mtime_ms = j.mtime_ms;
  wf->generation = 1;
  if (j.uploaded && j.id[0]) {
    wf->state = AFS_W_UPLOADED;
    wf->record_used = true;
    wf->uploaded_ms = afs_monotonic_ms();
  } else {
    wf->state = AFS_W_QUEUED;
    wf->dirty = true;
    wf->resumed = true; /* its record may be further on than the journal knows */
  }
  afs_journal_free(&j);
  afs_staging_account(st, wf, sb.st_size, false);
  pthread_mutex_lock(&st->mu);
  ssize_t i = find_locked(st, wf->partition, wf->file_path);
  struct afs_wfile *old = NULL;
  if (i >= 0) {
    old = st->files[i];
    remove_at_locked(st, (size_t)i);
    old->unlinked = true; /* superseded by a later write at the same path */
  }
  insert_locked(st, wf);
  pthread_mutex_unlock(&st->mu);
  if (old && old->refs == 0)
    wf_destroy(st, old);
  ok = true;
done:
  if (fd >= 0)
    close(fd);
  if (!ok) {
    unlink(jpath);
    if (data)
      unlink(data);
  }
  free(jpath);
  free(data);
  return ok;
}

int afs_staging_resume(struct afs_staging *st) {
  DIR *d = opendir(st->dir);
  if (!d)
    return 0;
  size_t n = 0, cap = 0;
  char **journals = NULL, **others = NULL;
  size_t n_others = 0, cap_others = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    const char *name = de->d_name;
    if (name[0] < '0' || name[0] > '9')
      continue; /* ".", "..", the session lock: not staging files */
    if (has_suffix(name, AFS_JOURNAL_SUFFIX)) {
      if (n == cap && !(journals = realloc(journals, (cap = cap ? cap * 2 : 64) *
                                                         sizeof *journals)))
        abort();
      journals[n++] = strdup(name);
    } else {
      if (n_others == cap_others &&
          !(others = realloc(others, (cap_others = cap_others ? cap_others * 2 : 64) *
                                         sizeof *others)))
        abort();
      others[n_others++] = strdup(name);
    }
  }
  closedir(d);
  if (n)
    qsort(journals, n, sizeof *journals, cmp_seq);
  int adopted = 0;
  for (size_t i = 0; i < n; i++) {
    adopted += adopt(st, journals[i]);
    free(journals[i]);
  }
  free(journals);
  /* Whatever is not an adopted staging file (cuts of an interrupted upload, a file
   * created without a record, journal temporaries) is debris of the killed mount. */
  for (size_t i = 0; i < n_others; i++) {
    char *path;
    if (asprintf(&path, "%s/%s", st->dir, others[i]) < 0)
      abort();
    bool keep = false;
    pthread_mutex_lock(&st->mu);
    for (size_t k = 0; k < st->n_files && !keep; k++)
      keep = !strcmp(st->files[k]->staging_path, path);
    pthread_mutex_unlock(&st->mu);
    if (!keep)
      unlink(path);
    free(path);
    free(others[i]);
  }
  free(others);
  return adopted;
}
