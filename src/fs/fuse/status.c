#include "fuse/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upload/upload.h"

int afs_fs_status_path(const char *path) {
  if (!path)
    return 0;
  while (*path == '/')
    path++;
  size_t n = strlen(AFS_STATUS_DIR);
  if (strncmp(path, AFS_STATUS_DIR, n) != 0 || (path[n] && path[n] != '/'))
    return 0;
  const char *rest = path + n;
  while (*rest == '/')
    rest++;
  if (!*rest)
    return 1;
  return strcmp(rest, AFS_STATUS_FILE) ? -1 : 2;
}

char *afs_fs_status_text(struct afs_fs *fs) {
  enum { N = AFS_W_QUEUED + 1 };
  long counts[N] = {0};
  int64_t bytes[N] = {0};
  struct afs_wfile **all;
  int n = fs->st ? afs_staging_snapshot(fs->st, &all) : 0;
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&all[i]->mu);
    enum afs_wstate s = all[i]->state;
    if ((int)s < N && !all[i]->unlinked) {
      counts[s]++;
      bytes[s] += all[i]->acct_size - all[i]->acct_absent; /* staged bytes */
    }
    pthread_mutex_unlock(&all[i]->mu);
    afs_staging_unref(fs->st, all[i]);
  }
  if (fs->st)
    free(all);
  int64_t completed = 0, resumed = 0;
  int pending_files = 0;
  int64_t pending = 0;
  if (fs->up) {
    afs_upload_counters(fs->up, &completed, &resumed);
    pending = afs_upload_pending_bytes(fs->up, &pending_files);
  }
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  fprintf(f, "mode: %s\n", fs->opt.writeback ? "writeback" : "default");
  fprintf(f, "session_id: %s\n", fs->opt.session_id);
  static const enum afs_wstate order[] = {AFS_W_WRITING,  AFS_W_QUEUED,   AFS_W_UPLOADING,
                                          AFS_W_RETRYING, AFS_W_UPLOADED, AFS_W_FAILED};
  for (size_t i = 0; i < sizeof order / sizeof *order; i++)
    fprintf(f, "%s: %ld\n", afs_wstate_name(order[i]), counts[order[i]]);
  fprintf(f, "completed_staged: %ld\n", counts[AFS_W_COMPLETED]);
  fprintf(f, "completed_since_mount: %lld\n", (long long)completed);
  fprintf(f, "resumed_at_mount: %lld\n", (long long)resumed);
  fprintf(f, "files_to_upload: %d\n", pending_files);
  fprintf(f, "bytes_to_upload: %lld\n", (long long)pending);
  fprintf(f, "bytes_uploading: %lld\n", (long long)bytes[AFS_W_UPLOADING]);
  fprintf(f, "staging_bytes: %lld\n", (long long)(fs->st ? afs_staging_bytes(fs->st) : 0));
  fprintf(f, "cache_max: %lld\n", (long long)fs->opt.cache_max);
  fprintf(f, "upload_workers: %d\n", fs->opt.upload_workers);
  fclose(f);
  return out;
}
