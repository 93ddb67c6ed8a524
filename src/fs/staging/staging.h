/* Files written through the mount that are not (yet) plain completed assets: their
 * bytes in a staging file under the cache dir, their upload state, and directories
 * made with mkdir that hold no file yet.
 *
 * A struct afs_wfile is one written file, keyed by (partition, filePath) in a table
 * the namespace consults before the catalog, so a file reads back from staging until
 * the broker completes its asset. Entries are reference counted: the table holds one
 * reference while the file is visible; every open handle and running upload hold
 * another. An unlinked or replaced entry leaves the table but lives while referenced.
 *
 * Every entry has a journal next to its staging file (journal.h), so that the next mount
 * of the same session (same staging folder) adopts what a killed mount left behind
 * (afs_staging_resume).
 *
 * Locks: wf->jmu serialises the journal writes of one file (taken first, held across
 * the local write so that an older state never overwrites a newer one); st->mu protects
 * the table and the directory set (and every wf's partition, file_path, in_table);
 * wf->mu protects the rest of a wf. Order: wf->jmu, st->mu, wf->mu. No lock is held
 * across I/O to MongoDB or S3.
 */
#ifndef ASSETFS_STAGING_H
#define ASSETFS_STAGING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "assetfs/cosync.h"
#include "assetfs/error.h"

enum afs_wstate {
  AFS_W_WRITING,   /* dirty, record pending or not yet created */
  AFS_W_UPLOADING, /* a flush or the background worker is uploading it */
  AFS_W_UPLOADED,  /* status "uploaded" set; waiting for the broker to complete it */
  AFS_W_RETRYING,  /* an upload failed transiently; the worker retries */
  AFS_W_COMPLETED, /* the broker created the asset; staging is only a cache now */
  AFS_W_FAILED,    /* refused for good (broker error, 4xx); data kept in staging */
  AFS_W_QUEUED,    /* closed and on disk; waits for an upload worker (write-back, resume) */
};

const char *afs_wstate_name(enum afs_wstate s);

struct afs_mp;

struct afs_wfile {
  pthread_mutex_t jmu; /* journal writes (see the lock order above) */
  pthread_mutex_t mu;
  pthread_cond_t cond; /* signalled when state/busy change */
  /* under st->mu */
  char *partition;
  char *file_path;
  bool in_table;
  int refs;
  size_t tab_index;        /* position in the table while in_table */
  struct afs_wfile *hnext; /* next in its name-index bucket */
  /* under mu; the upload state (state and the flags and counters with it) changes only
   * through the events of staging/wfile.h */
  char *staging_path;
  int fd;              /* O_RDWR on staging_path; valid while refs > 0 */
  int writers;         /* open handles that may write */
  int handles;         /* open handles */
  bool dirty;          /* data changed since the last upload snapshot */
  bool busy;           /* an upload is running on this file */
  bool record_used;    /* `id` went past pending/initialized: a new upload needs a new record */
  bool unlinked;       /* removed by the user; records are cleaned up, no upload */
  bool shown;          /* completed AND the catalog resolves the path to this asset:
                        * only then may the staged copy go */
  uint64_t generation; /* bumped by every change to the data */
  uint64_t claim_generation; /* generation when the running attempt was claimed */
  enum afs_wstate state;
  char id[AFS_OID_HEX]; /* current CosyncAssetUpload _id (hex), "" if none */
  char content_type[128];
  char *caption;        /* set through xattr before the asset exists */
  int64_t mtime_ms;     /* set by utimens; 0 = staging file's mtime */
  int attempts;         /* background retries so far */
  int64_t next_try_ms;  /* monotonic ms of the next background retry */
  int64_t uploaded_ms;  /* monotonic ms when "uploaded" was set */
  int64_t next_poll_ms; /* monotonic ms of the next look at its record (worker) */
  struct afs_error last_err;
  bool claimed;               /* an upload worker took it from the queue */
  bool in_queue;              /* in the uploader's queue (under its q_mu, not mu) */
  bool resumed;               /* adopted from a journal: ask the record before uploading */
  int64_t acct_size;          /* its size as counted in the staging total */
  int64_t acct_absent;        /* ... less these bytes, its base's absent ones */
  struct afs_base *base;      /* the big asset it began as, without fetching it
                               * (staging/base.h), or NULL */
  int64_t contig;             /* [0, contig) was written front to back (multipart.c:
                               * what may be streamed) */
  struct afs_mp *mp;          /* its multipart parts (staging/parts.h), NULL until it is
                               * big enough; the transfers are upload/multipart.c's */
  uint64_t name_seq;          /* bumped by every rename */
  uint64_t uploaded_name_seq; /* name_seq and mtime_ms when `uploaded` was set: the broker */
  int64_t uploaded_mtime;     /* copies both to the asset, so completion need not, unless
                               * they changed since */
};

struct afs_staging;

/* dir: where staging files go (created 0700 if missing). Files already there are left
 * for afs_staging_resume. */
struct afs_staging *afs_staging_new(const char *dir, struct afs_error *err);
/* Removes the staging files (and journals) of entries that are no longer needed; those
 * not completed yet stay, with their journals, for the next mount of the session. */
void afs_staging_free(struct afs_staging *st);
const char *afs_staging_dir(const struct afs_staging *st);

/* Creates an entry with an empty staging file (0600) and puts it in the table, replacing
 * (and returning in *replaced, with a reference, may be NULL) any entry at that path.
 * Returns the entry with one reference for the caller (plus the table's). */
struct afs_wfile *afs_staging_create(struct afs_staging *st, const char *partition,
                                     const char *file_path, const char *content_type,
                                     struct afs_wfile **replaced, struct afs_error *err);

/* The entry at (partition, file_path) with a reference, or NULL. */
struct afs_wfile *afs_staging_get(struct afs_staging *st, const char *partition,
                                  const char *file_path);
void afs_staging_ref(struct afs_staging *st, struct afs_wfile *wf);
/* Drops a reference; the last one closes and deletes the staging file. */
void afs_staging_unref(struct afs_staging *st, struct afs_wfile *wf);

/* Takes the entry out of the table (unlink / replaced); drops the table's reference. */
void afs_staging_remove(struct afs_staging *st, struct afs_wfile *wf);

/* Moves the entry to a new path (no-op if not in the table). Any other entry at the
 * target leaves the table and is returned with a reference (or NULL). */
struct afs_wfile *afs_staging_move(struct afs_staging *st, struct afs_wfile *wf,
                                   const char *partition, const char *file_path);

/* Renames every entry and local directory under partition/from_dir to to_dir. Returns
 * the number of entries moved; refs to them in *moved (caller unrefs and frees). */
int afs_staging_move_dir(struct afs_staging *st, const char *partition, const char *from_dir,
                         const char *to_dir, struct afs_wfile ***moved);

/* Copies of wf's current partition and file_path (caller frees both). */
void afs_staging_names(struct afs_staging *st, struct afs_wfile *wf, char **partition,
                       char **file_path);

/* stat of a staged file (regular file, size from staging, mtime as set). */
bool afs_staging_stat(struct afs_wfile *wf, struct stat *out);

/* Names directly under partition/dir ("" = the partition root) from the table and the
 * local directory set: cb(ctx, name, is_dir). Partition roots: dir NULL lists the
 * partitions that have entries or local directories. */
typedef void (*afs_staging_list_cb)(void *ctx, const char *name, bool is_dir);
void afs_staging_list(struct afs_staging *st, const char *partition, const char *dir,
                      afs_staging_list_cb cb, void *ctx);

/* True if partition/dir is a directory here: a local directory, or a prefix of an entry.
 * dir "" asks whether the partition is known locally. */
bool afs_staging_is_dir(struct afs_staging *st, const char *partition, const char *dir);
/* True if anything (entry or local directory) lies under partition/dir. */
bool afs_staging_dir_has_children(struct afs_staging *st, const char *partition, const char *dir);

/* Local directories (mkdir). dir "" = a partition directory. */
void afs_staging_add_dir(struct afs_staging *st, const char *partition, const char *dir);
bool afs_staging_remove_dir(struct afs_staging *st, const char *partition, const char *dir);

/* Every entry in the table, with a reference each (caller unrefs and frees the array). */
int afs_staging_snapshot(struct afs_staging *st, struct afs_wfile ***out);

/* Bytes held by staging files (a running total, see afs_staging_account). */
int64_t afs_staging_bytes(struct afs_staging *st);
/* Waits until the staged bytes plus `grow` fit in `max`, woken each time staged bytes
 * are given back (a completed file left staging, a removed one was truncated), for at
 * most until deadline_ms (monotonic) and at most slice_ms per wake-up (the caller may
 * have more to do between waits, e.g. ask the uploader to look for completions). true
 * if it fits now. */
bool afs_staging_wait_room(struct afs_staging *st, int64_t grow, int64_t max, long slice_ms);
/* wf's staged size is now size (grow_only: at least size). */
void afs_staging_account(struct afs_staging *st, struct afs_wfile *wf, int64_t size,
                         bool grow_only);

/* Writes wf's journal. durable: fsync the staged data, the journal and the folder first
 * (what close() in write-back mode waits for). A file that was removed loses its
 * journal instead. */
bool afs_staging_journal(struct afs_staging *st, struct afs_wfile *wf, bool durable,
                         struct afs_error *err);
/* Deletes wf's journal (unlinked: a crash must not bring the file back). */
void afs_staging_forget(struct afs_staging *st, struct afs_wfile *wf);

/* Adopts the files an earlier mount of this session left in the folder (those with a
 * journal; leftovers without one are deleted). Returns how many; each in the table, in
 * state QUEUED (to upload, resumed) or UPLOADED (waiting for the broker). */
int afs_staging_resume(struct afs_staging *st);

/* Whether wf is still the table's entry at its path (an open may race with a drop). */
bool afs_staging_in_table(struct afs_staging *st, struct afs_wfile *wf);
/* Takes wf out of the table if it is completed as asset `id`, shown by the catalog, and
 * not open, all checked under the locks that open takes. Returns true if removed. */
bool afs_staging_drop_if_idle(struct afs_staging *st, struct afs_wfile *wf, const char *id);

#endif
