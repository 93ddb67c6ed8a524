/* Private to the staging module: staging.c (the in-memory table of written files and
 * local directories, reference counts, byte accounting) and staging_resume.c (the
 * on-disk side: journals, and adopting what an earlier mount of the session left).
 * Locks as in assetfs/staging.h. */
#ifndef ASSETFS_STAGING_INT_H
#define ASSETFS_STAGING_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "staging/base.h"
#include "staging/staging.h"

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
  /* staging_index.c: files by name (chained through wf->hnext) and staged-file counts
   * per directory; both follow the table (insert, remove, renames) */
  struct afs_wfile **ht;
  size_t n_ht, ht_entries;
  struct afs_dircount **dt;
  size_t n_dt, dt_entries;
  int64_t bytes; /* atomic (__atomic builtins), not under mu: sum of every wf->acct_size
                  * less its acct_absent */
  /* Back-pressure: writers waiting for cache_max room sleep on room_cv (monotonic) and
   * are woken whenever bytes go down. room_mu guards only the wait; leaf lock. */
  pthread_mutex_t room_mu;
  pthread_cond_t room_cv;
  /* Based files (base.h): fills, cuts and every fetch of an asset's bytes, one at a time;
   * taken before any wf->mu. */
  pthread_mutex_t fill_mu;
  afs_base_fetch_fn fetch;
  void (*fetch_src_free)(void *src);
  void *fetch_ctx;
};

/* A new entry (no file, fd -1, refs 0), its names copied and its locks initialised. */
struct afs_wfile *afs_stg_wf_new(const char *partition, const char *file_path);
/* Closes and frees wf; deletes its journal, then its staging file (if staging_path is
 * still set) and takes its bytes off the total. Called once the last reference went. */
void afs_stg_wf_destroy(struct afs_staging *st, struct afs_wfile *wf);
/* wf->base's absent bytes changed: they leave (or come back to) the staging total. */
void afs_stg_absent_changed(struct afs_staging *st, struct afs_wfile *wf);
/* "<staging_path>.journal" (caller frees). */
char *afs_stg_journal_path(const char *staging_path);

/* With st->mu held: the index of the entry at (partition, path) or -1; inserting adds the
 * table's reference. */
ssize_t afs_stg_find_locked(struct afs_staging *st, const char *partition, const char *path);
void afs_stg_insert_locked(struct afs_staging *st, struct afs_wfile *wf);
/* With st->mu held: takes entry i out, dropping the table's reference (the caller
 * destroys wf, after unlocking, if that was the last). */
void afs_stg_remove_at_locked(struct afs_staging *st, size_t i);

/* staging_index.c, with st->mu held. index_add/index_del when an entry enters or leaves
 * the table or changes names (del with the old names, add with the new). */
void afs_stg_index_add(struct afs_staging *st, struct afs_wfile *wf);
void afs_stg_index_del(struct afs_staging *st, struct afs_wfile *wf);
struct afs_wfile *afs_stg_index_find(struct afs_staging *st, const char *partition,
                                     const char *path);
/* Staged files below dir ("" = the whole partition). */
size_t afs_stg_index_under(struct afs_staging *st, const char *partition, const char *dir);
void afs_stg_index_free(struct afs_staging *st);

#endif
