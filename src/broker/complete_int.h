/* Private to the completion of uploads (upload_complete.c, upload_supersede.c): how
 * versions of one file are ordered and superseded, and what a client's removal of an
 * upload in flight (the `abandoned` mark) does to its completion. */
#ifndef ASSETFS_BROKER_COMPLETE_INT_H
#define ASSETFS_BROKER_COMPLETE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "broker.h"

/* Where a version stands among the assets at its path: the broker's clock (versionAt)
 * first, the _id only to break ties. */
struct afs_version {
  const bson_value_t *id;
  int64_t at; /* versionAt, ms since the epoch, broker clock */
};

/* Supersedes the older active assets at partition/file_path (ours if a newer one is
 * there). Failures are logged. */
void afs_complete_supersede(struct afs_broker *b, struct afs_bstore *st,
                            const struct afs_version *self, const char *partition,
                            const char *file_path);

enum afs_sup_result {
  AFS_SUP_DONE,      /* superseded what was older (or nothing to do); *cur_fp is where
                        the asset is now, NULL when its client moved it elsewhere */
  AFS_SUP_ABANDONED, /* the upload was abandoned meanwhile: our asset is deleted */
  AFS_SUP_RETRY      /* MongoDB failed; nothing superseded */
};

/* Supersedes at `fp`, the path the completion claimed, after making sure (re-reading
 * the upload when there is something to supersede) that the file is still there and
 * not abandoned; a rename since is followed (the asset is moved, *moved owns the new
 * path, caller frees). */
enum afs_sup_result afs_complete_supersede_claimed(struct afs_broker *b, struct afs_bstore *st,
                                                   const struct afs_version *self,
                                                   const char *partition, const char *fp,
                                                   const char *ids, const char **cur_fp,
                                                   char **moved);

/* Moves asset `id` from filePath `from` (what we wrote) to `to`, only if it still has
 * `from`: a different value was written by its client after us and is newer. 1 moved,
 * 0 left alone, -1 MongoDB error. */
int afs_complete_move_asset(struct afs_bstore *st, const bson_value_t *id, const char *from,
                            const char *to, const char *ids);

/* Marks asset `id` deleted if it is active (the janitor then removes its objects and
 * record): the asset of an abandoned upload. false on a MongoDB error. */
/* auth=required: a change a client made to its upload after the broker claimed it counts
 * only when signed: `abandoned` with its own signature, anything else (a new filePath)
 * with the record's signature renewed. Always true with auth=off. Logs what it ignores. */
bool afs_complete_change_signed(struct afs_broker *b, struct afs_bstore *st,
                                const struct afs_record *now, bool abandoned);
bool afs_complete_drop_abandoned(struct afs_broker *b, struct afs_bstore *st,
                                 const bson_value_t *id, const char *ids);

#endif
