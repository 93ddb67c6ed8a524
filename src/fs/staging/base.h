/* A staged file that began as a big asset without its bytes being fetched: "based" on
 * that asset (docs/internals/multipart.md, "Appends and edits"). Opening a big asset
 * to append or to change a few bytes must not download it, so the staged file is made
 * sparse at the asset's size, and each part of it (the multipart schedule of parts.h)
 * stays *absent* until something needs its bytes:
 *   - a write into an absent part fetches that part's bytes first (ranged GETs of the
 *     asset), so a part is either wholly the asset's or wholly staged;
 *   - a read of an absent part is served from the asset, not staged;
 *   - the upload copies every absent part inside the asset's bytes from the asset's
 *     original in S3 (AssetfsCopyParts: UploadPartCopy, server-side) and sends the rest;
 *     an upload that cannot copy (a single PUT, media whose cuts are made from the staged
 *     bytes) fetches what is absent first.
 * A truncate cuts the asset's bytes at the new size: what lies past it is never the
 * asset's again, even when the file grows back. A part written to is no longer the
 * asset's (it is sent), staged or not.
 *
 * A staged copy whose upload completed, opened again to change it, becomes based on
 * the asset it completed as with every part staged: an append to a file just copied in
 * sends the new bytes, not the whole file again.
 *
 * The sidecar `<staging file>.base` keeps this across a crash: a first line naming the
 * asset, its size and whether every part is staged, then one line per change: "p N"
 * part N is staged, "w N" part N was written, "x" every staged part is to be sent,
 * "c SIZE" cut, "b ID" the asset the bytes are now in, "u ID" a version uploaded since.
 * Each line is synced before the staged bytes depend on it, so a resumed file never
 * sends a hole as data nor copies a part that was written.
 *
 * struct afs_base hangs on its file (wf->base) and is protected by wf->mu; fills and cuts
 * are serialized by the staging table's fill lock (staging.c), taken before wf->mu; every
 * call of the fetcher runs under it, so b->src needs no lock of its own. */
#ifndef ASSETFS_STAGING_BASE_H
#define ASSETFS_STAGING_BASE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "assetfs/cosync.h"
#include "assetfs/error.h"

#define AFS_BASE_SUFFIX ".base"

struct afs_base {
  char id[AFS_OID_HEX];   /* the asset whose original holds the absent bytes */
  int64_t asset_size;     /* that original's size */
  int64_t size;           /* [0, size) of an absent part is the asset's; cut by truncates */
  int nparts;             /* parts of [0, asset_size) */
  unsigned char *present; /* [n - 1]: part n is staged */
  unsigned char *same;    /* [n - 1]: part n was not written (it is the asset's bytes) */
  char next[AFS_OID_HEX]; /* a version uploaded from this file since (its record, to be
                           * its asset): it holds every part absent now, at the same
                           * offsets, so copies may come from it once it is active */
  void *src;              /* the fetcher's open source (afs_staging_set_fetch), or NULL */
};

/* ---- the table (pure, under wf->mu) ---- */
/* staged: every part is staged already. */
struct afs_base *afs_base_new(const char *id, int64_t size, bool staged);
/* Part n holds bytes of the asset that are not staged. */
bool afs_base_absent(const struct afs_base *b, int n);
/* Part n begins with bytes of the asset that nobody wrote: it is copied or sent at
 * close, never streamed. */
bool afs_base_same(const struct afs_base *b, int n);
/* Part n, in a file of file_size bytes, is wholly the asset's bytes, none written: S3
 * can copy it. */
bool afs_base_copyable(const struct afs_base *b, int n, int64_t file_size);
/* Asset bytes not staged (they are not counted against cache_max). */
int64_t afs_base_absent_bytes(const struct afs_base *b);

/* ---- the sidecar ---- */
/* Writes the sidecar's first line (synced). */
bool afs_base_log_begin(const char *staging_path, const struct afs_base *b, struct afs_error *err);
/* The base a sidecar describes (NULL: none, or unreadable: *err says which). */
struct afs_base *afs_base_log_read(const char *staging_path, struct afs_error *err);
void afs_base_log_remove(const char *staging_path);

/* ---- fetching (staging.c holds the fetcher) ---- */
struct afs_staging;
struct afs_wfile;
/* Reads len bytes at off of asset b->id (b->asset_size bytes) into buf; may keep an open
 * source in b->src (freed by src_free). Called with the fill lock held, no lock of the
 * file. */
typedef bool (*afs_base_fetch_fn)(void *ctx, struct afs_base *b, char *buf, size_t len, int64_t off,
                                  struct afs_error *err);
void afs_staging_set_fetch(struct afs_staging *st, afs_base_fetch_fn fn, void (*src_free)(void *),
                           void *ctx);

/* Wf becomes based on asset id of size bytes (its staged file is made that size, sparse). */
bool afs_base_attach(struct afs_staging *st, struct afs_wfile *wf, const char *id, int64_t size,
                     struct afs_error *err);
/* A staged copy whose upload is done (uploaded or completed as its asset) and that is
 * opened to be written (no writer has it): based on that asset, every part staged, when
 * it is over min_size bytes. */
bool afs_base_from_completed(struct afs_staging *st, struct afs_wfile *wf, int64_t min_size,
                             struct afs_error *err);
/* Stages every absent part that [off, off + len) touches (len < 0: to the end). */
bool afs_base_fill(struct afs_staging *st, struct afs_wfile *wf, int64_t off, int64_t len,
                   struct afs_error *err);
/* [off, off + len) is about to be written (after afs_base_fill of it): its parts are
 * no longer the asset's. */
bool afs_base_wrote(struct afs_staging *st, struct afs_wfile *wf, int64_t off, int64_t len,
                    struct afs_error *err);
/* The asset cannot be copied from (gone, or not active): its parts that are staged are
 * sent from now on. False when some are not staged (their bytes are the asset's only). */
bool afs_base_no_copies(struct afs_staging *st, struct afs_wfile *wf);
/* pread of the file as the user sees it: absent bytes come from the asset. */
ssize_t afs_base_pread(struct afs_staging *st, struct afs_wfile *wf, char *buf, size_t size,
                       int64_t off, struct afs_error *err);
/* ftruncate of the staged file to size, cutting the asset's bytes there (any file). */
bool afs_base_truncate(struct afs_staging *st, struct afs_wfile *wf, int64_t size,
                       struct afs_error *err);
/* A version of the file went up as record id (`uploaded`): it becomes b->next. */
void afs_base_uploaded(struct afs_staging *st, struct afs_wfile *wf, const char *id);
/* The upload of the file completed as asset id: the absent bytes are that asset's now
 * (the old one may go). */
void afs_base_moved(struct afs_staging *st, struct afs_wfile *wf, const char *id);
/* Frees wf->base (under wf->mu or when nobody else sees wf). */
void afs_base_free(struct afs_staging *st, struct afs_base *b);

#endif
