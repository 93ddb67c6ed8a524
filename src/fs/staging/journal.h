/* The durable sidecar of a staged file: `<staging file>.journal`, a small JSON document
 * naming the file (partition, filePath), its upload record (_id), content type and how
 * far its upload got. It is written before close() returns, so that a mount killed
 * (SIGKILL, power loss) leaves enough on disk for the next mount of the same session to
 * resume every unfinished upload against the same record instead of making another.
 *
 * Writes go to a temporary file renamed over the journal (atomic); `durable` also
 * fsyncs the journal and its folder.
 */
#ifndef ASSETFS_JOURNAL_H
#define ASSETFS_JOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "assetfs/cosync.h"
#include "assetfs/error.h"

#define AFS_JOURNAL_SUFFIX ".journal"
/* Where resume moves a staged copy whose journal cannot be read (staging_resume.c): in
 * the cache folder, never looked into by resume. */
#define AFS_RECOVERED_DIR "recovered"

struct afs_journal {
  char *partition;
  char *file_path;
  char *content_type;
  char *caption;        /* may be NULL */
  char id[AFS_OID_HEX]; /* CosyncAssetUpload _id, "" if none yet */
  bool uploaded;        /* status "uploaded" was set on that record: only wait for the broker */
  int64_t mtime_ms;
};

bool afs_journal_write(const char *path, const struct afs_journal *j, bool durable,
                       struct afs_error *err);
/* Fills j (caller frees with afs_journal_free); false + err if missing or unreadable. */
bool afs_journal_read(const char *path, struct afs_journal *j, struct afs_error *err);
void afs_journal_free(struct afs_journal *j);

#endif
