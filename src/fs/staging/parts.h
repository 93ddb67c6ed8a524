/* A staged file as the parts of an S3 multipart upload: where each part begins and ends,
 * and which parts the bucket already holds as they are now (docs/internals/multipart.md).
 *
 * Part boundaries depend only on the part number, never on the file's final size (not
 * known while it is written): 1000 parts of 8 MiB, then 1000 of 16 MiB, doubling every
 * 1000 parts, so 10,000 parts reach 7.8 TiB (more than S3's 5 TiB object limit) and a
 * file of a few GiB uses 8 MiB parts. A part rewritten after it went up is sent again.
 *
 * struct afs_mp hangs on its file (wf->mp) and is protected by wf->mu. */
#ifndef ASSETFS_STAGING_PARTS_H
#define ASSETFS_STAGING_PARTS_H

#include <stdbool.h>
#include <stdint.h>

#include "assetfs/cosync.h"
#include "assetfs/error.h"

#define AFS_MP_BASE_PART (8LL << 20)
#define AFS_MP_TIER 1000 /* parts per size step */
/* The largest file the schedule carries in AFS_MP_MAX_PARTS parts, capped at S3's 5 TiB. */
#define AFS_MP_MAX_FILE (5LL << 40)

/* Part n (1-based): its first byte and its size. */
int64_t afs_mp_part_off(int n);
int64_t afs_mp_part_size(int n);
/* The part holding byte off (1-based). */
int afs_mp_part_at(int64_t off);
/* How many parts size bytes take (at least 1). */
int afs_mp_part_count(int64_t size);

struct afs_mp_part {
  uint64_t gen;      /* bumped by every write into the part */
  uint64_t sent_gen; /* gen of the bytes the bucket holds (when etag[0]) */
  int64_t sent_len;  /* how many bytes of the part the bucket holds */
  bool inflight;     /* a transfer of it runs */
  bool queued;       /* waiting for a stream worker */
  char etag[130];
};

struct afs_mp {
  char rec[AFS_OID_HEX];    /* the upload record these parts belong to */
  char *upload_id;          /* S3's, once the broker started the upload */
  struct afs_mp_part *part; /* part n at [n - 1] */
  int cap;
  char **url; /* the signed batch: part url_first + i at [i] */
  int url_first, n_url;
  int64_t url_until_ms;       /* monotonic: the batch is not used past this */
  int inflight, queued;       /* parts in transfer, waiting for a worker */
  int stream_inflight;        /* ... of the transfers, those of the stream workers */
  int64_t record_retry_at;    /* write-back: no record making for streaming before this */
  bool signing;               /* a sign call runs for this file */
  bool logged;                /* the parts log names rec (afs_mp_log_part) */
  int scan_from;              /* streaming looks for finished parts from here on (0: 1) */
  int64_t stream_pause_until; /* monotonic: a streamed part failed; none queued till then */
  bool making_record;         /* write-back: a writer is making the file's record (multipart.c) */
};

/* wf->mp for record rec: made, or reset when it belonged to another record. */
struct afs_mp *afs_mp_for(struct afs_mp **slot, const char *rec);
void afs_mp_free(struct afs_mp *mp);
/* Bytes [off, off + len) changed: their parts must go up again. len < 0: everything from
 * off on (a truncate). */
void afs_mp_dirty(struct afs_mp *mp, int64_t off, int64_t len);
/* Part n, made if needed. */
struct afs_mp_part *afs_mp_part(struct afs_mp *mp, int n);
/* Part n is in the bucket as it is now in a file of size bytes (size < 0: as a whole part,
 * which is all streaming sends): same bytes, same length. */
bool afs_mp_clean(const struct afs_mp *mp, int n, int64_t size);
/* Part n's length in a file of size bytes (0 when the file ends before it). */
int64_t afs_mp_part_len_at(int n, int64_t size);
/* Part n's URL from the signed batch (NULL when it is not there or no longer fresh). */
const char *afs_mp_url(const struct afs_mp *mp, int n, int64_t now_ms);
/* Replaces the batch (takes urls and its strings). */
void afs_mp_set_urls(struct afs_mp *mp, int first, char **urls, int n, int64_t until_ms);

/* ---- the parts log: `<staging file>.parts` ----
 * One line per part the bucket confirmed ("N LENGTH ETAG"), after a first line naming the
 * record, appended as parts go up, so that a mount killed mid-way (or an attempt that
 * failed) sends again only the parts missing: afs_mp_restore checks each logged part
 * against the staged bytes (an S3 part's ETag is the MD5 of its bytes) and keeps those
 * that still match. Not synced: a line lost in a crash only costs that part's resend. */
#define AFS_MP_LOG_SUFFIX ".parts"
/* Appends part n (len bytes, etag) of mp's record to the log of staging_path. Best
 * effort. Call with wf->mu held (mp->logged). */
void afs_mp_log_part(const char *staging_path, struct afs_mp *mp, int n, int64_t len,
                     const char *etag);
struct afs_mp_logged {
  int n;
  int64_t len;
  char etag[130];
};
/* The parts the log of staging_path holds for record rec whose bytes in the staged file
 * (size bytes) are still what was sent, and whose length is the part's length at that
 * size: *out (caller frees), their count returned (0 when none or no log). Reads every
 * logged part's bytes once, without any lock held. copied (may be NULL; [n] for part n)
 * names parts copied from an asset (base.h): their length is checked, not their bytes. */
int afs_mp_restore(const char *staging_path, const char *rec, int64_t size,
                   const unsigned char *copied, struct afs_mp_logged **out);

#endif
