/* The on-disk side of staging: each staged file's journal (journal.h) kept in step with
 * its entry, and, at mount, adopting the files an earlier mount of the same session left
 * in the session folder (afs_staging_resume) so that their uploads resume instead of
 * being lost or made twice. */
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
#include "assetfs/http_put.h"
#include "assetfs/log.h"
#include "staging/journal.h"
#include "staging/wfile.h"

char *afs_stg_journal_path(const char *staging_path) {
  char *p;
  afs_xasprintf(&p, "%s%s", staging_path, AFS_JOURNAL_SUFFIX);
  return p;
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
  char *path = wf->staging_path ? afs_stg_journal_path(wf->staging_path) : NULL;
  int fd = wf->fd;
  j.content_type = strdup(wf->content_type);
  j.caption = wf->caption ? strdup(wf->caption) : NULL;
  j.uploaded = wf->state == AFS_W_UPLOADED || wf->state == AFS_W_COMPLETED;
  /* A record that went past `initialized` holds an earlier version: bytes written since
   * (a file rewritten while its last version sat completed in the cache) must not be
   * resumed as that record's, which is done already; the next mount makes a new one. */
  if (!wf->record_used || j.uploaded)
    memcpy(j.id, wf->id, sizeof j.id);
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
  char *path = wf->staging_path ? afs_stg_journal_path(wf->staging_path) : NULL;
  pthread_mutex_unlock(&wf->mu);
  if (path)
    unlink(path);
  pthread_mutex_unlock(&wf->jmu);
  free(path);
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

/* A staged copy whose journal cannot be read: its name and place are unknown, but its
 * bytes may be the only copy of what a user wrote, so they are moved, with the journal,
 * to the cache's recovered/ folder (which resume never looks into) and the user is told
 * where. false if they could not be moved (they are then left where they are). */
static bool keep_unreadable(struct afs_staging *st, const char *jpath, const char *data,
                            const char *why) {
  char *dir, *to_data, *to_journal;
  afs_xasprintf(&dir, "%s/%s", st->dir, AFS_RECOVERED_DIR);
  afs_xasprintf(&to_data, "%s/%s", dir, strrchr(data, '/') + 1);
  afs_xasprintf(&to_journal, "%s/%s", dir, strrchr(jpath, '/') + 1);
  bool ok = (mkdir(dir, 0700) == 0 || errno == EEXIST) && rename(data, to_data) == 0;
  if (ok) {
    rename(jpath, to_journal); /* best effort: it may tell the user what the file was */
    afs_err("a staged file's journal cannot be read (%s); its data is kept in %s: copy it "
            "back into the mount to upload it",
            why, to_data);
  } else {
    afs_err("a staged file's journal cannot be read (%s), and %s cannot be moved to %s (%s); "
            "left where it is",
            why, data, dir, strerror(errno));
  }
  free(dir);
  free(to_data);
  free(to_journal);
  return ok;
}

/* One journal: its entry in the table (a later one at the same path replaces it). */
static bool adopt(struct afs_staging *st, const char *jname, bool *kept) {
  struct afs_error e = {0};
  struct afs_journal j;
  char *jpath, *data;
  afs_xasprintf(&jpath, "%s/%s", st->dir, jname);
  afs_xasprintf(&data, "%s/%.*s", st->dir, (int)(strlen(jname) - strlen(AFS_JOURNAL_SUFFIX)),
                jname);
  bool ok = false;
  int fd = -1;
  if (!afs_journal_read(jpath, &j, &e)) {
    struct stat ds;
    if (stat(data, &ds) == 0) { /* never drop bytes we cannot place */
      *kept = !keep_unreadable(st, jpath, data, e.msg);
      free(jpath);
      free(data);
      return false;
    }
    afs_warn("ignoring %s: %s", jpath, e.msg);
    goto done;
  }
  fd = open(data, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    afs_warn("%s/%s: the staged copy %s is gone; nothing to resume", j.partition, j.file_path,
             data);
    afs_journal_free(&j);
    goto done;
  }
  /* A copy begun as a big asset holds holes where the asset's bytes are: without its
   * sidecar they would go up as zeros. */
  struct afs_base *base = afs_base_log_read(data, &e);
  if (!base && e.code) {
    close(fd);
    afs_journal_free(&j);
    char why[700];
    snprintf(why, sizeof why,
             "%s; the copy is INCOMPLETE: it holds zeros where the asset it began as "
             "had bytes it never fetched, so copying it back would write those zeros",
             e.msg);
    *kept = !keep_unreadable(st, jpath, data, why);
    free(jpath);
    free(data);
    return false;
  }
  if (base && base->size > sb.st_size)
    base->size = sb.st_size; /* a truncate whose line the crash lost */
  struct afs_wfile *wf = afs_stg_wf_new(NULL, NULL);
  wf->fd = fd;
  fd = -1;
  wf->base = base;
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
  wf->name_seq = 1; /* an earlier mount may have renamed it: completion writes the name */
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
  afs_stg_absent_changed(st, wf);
  pthread_mutex_lock(&st->mu);
  ssize_t i = afs_stg_find_locked(st, wf->partition, wf->file_path);
  struct afs_wfile *old = NULL;
  if (i >= 0) {
    old = st->files[i];
    afs_stg_remove_at_locked(st, (size_t)i);
    afs_wf_superseded(old); /* by a later write at the same path */
  }
  afs_stg_insert_locked(st, wf);
  pthread_mutex_unlock(&st->mu);
  if (old && old->refs == 0)
    afs_stg_wf_destroy(st, old);
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
      if (n == cap)
        journals = afs_xrealloc(journals, (cap = cap ? cap * 2 : 64) * sizeof *journals);
      journals[n++] = strdup(name);
    } else {
      if (n_others == cap_others)
        others =
            afs_xrealloc(others, (cap_others = cap_others ? cap_others * 2 : 64) * sizeof *others);
      others[n_others++] = strdup(name);
    }
  }
  closedir(d);
  if (n)
    qsort(journals, n, sizeof *journals, cmp_seq);
  int adopted = 0;
  /* Data files left in place because they could not be moved aside: not debris. */
  char **left = afs_xcalloc(n ? n : 1, sizeof *left);
  size_t n_left = 0;
  for (size_t i = 0; i < n; i++) {
    bool kept = false;
    adopted += adopt(st, journals[i], &kept);
    if (kept)
      left[n_left++] = afs_xstrndup(journals[i], strlen(journals[i]) - strlen(AFS_JOURNAL_SUFFIX));
    free(journals[i]);
  }
  free(journals);
  /* Whatever is not an adopted staging file (cuts of an interrupted upload, a file
   * created without a record, journal temporaries) is debris of the killed mount. */
  for (size_t i = 0; i < n_others; i++) {
    char *path;
    afs_xasprintf(&path, "%s/%s", st->dir, others[i]);
    bool keep = false;
    for (size_t k = 0; k < n_left && !keep; k++)
      keep = !strcmp(left[k], others[i]);
    pthread_mutex_lock(&st->mu);
    for (size_t k = 0; k < st->n_files && !keep; k++) {
      /* a staged file's parts log (parts.h) and base sidecar (base.h) stay with it */
      size_t sl = strlen(st->files[k]->staging_path);
      keep = !strncmp(st->files[k]->staging_path, path, sl) &&
             (!path[sl] || !strcmp(path + sl, AFS_MP_LOG_SUFFIX) ||
              !strcmp(path + sl, AFS_BASE_SUFFIX));
    }
    pthread_mutex_unlock(&st->mu);
    if (!keep)
      unlink(path);
    free(path);
    free(others[i]);
  }
  free(others);
  for (size_t k = 0; k < n_left; k++)
    free(left[k]);
  free(left);
  return adopted;
}
