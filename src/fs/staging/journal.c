#include "staging/journal.h"

#include "assetfs/alloc.h"
#include <bson/bson.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool fsync_dir_of(const char *path) {
  char *copy = strdup(path);
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(copy);
  if (fd < 0)
    return false;
  bool ok = fsync(fd) == 0;
  close(fd);
  return ok;
}

bool afs_journal_write(const char *path, const struct afs_journal *j, bool durable,
                       struct afs_error *err) {
  bson_t doc = BSON_INITIALIZER;
  BSON_APPEND_INT32(&doc, "v", 1);
  BSON_APPEND_UTF8(&doc, "partition", j->partition);
  BSON_APPEND_UTF8(&doc, "filePath", j->file_path);
  BSON_APPEND_UTF8(&doc, "contentType", j->content_type ? j->content_type : "");
  BSON_APPEND_UTF8(&doc, "id", j->id);
  BSON_APPEND_UTF8(&doc, "state", j->uploaded ? "uploaded" : "queued");
  BSON_APPEND_INT64(&doc, "mtime", j->mtime_ms);
  if (j->caption)
    BSON_APPEND_UTF8(&doc, "caption", j->caption);
  size_t len = 0;
  char *json = bson_as_relaxed_extended_json(&doc, &len);
  bson_destroy(&doc);
  char *tmp = NULL;
  bool ok = false;
  if (!json) {
    /* libbson refuses strings that are not UTF-8. Writing nothing would replace the
     * journal with an empty one, and the next mount would drop the staged data. */
    afs_error_set(err, EINVAL,
                  "cannot write the journal of %s: a field (caption, name) is not valid UTF-8",
                  path);
    goto done;
  }
  afs_xasprintf(&tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    afs_error_set(err, errno, "cannot write %s: %s", tmp, strerror(errno));
    goto done;
  }
  ssize_t n = write(fd, json, len);
  int werr = n < 0 ? errno : n != (ssize_t)len ? ENOSPC : 0;
  if (!werr && durable && fsync(fd) != 0)
    werr = errno;
  if (close(fd) != 0 && !werr)
    werr = errno;
  if (werr) {
    afs_error_set(err, werr, "cannot write %s: %s", tmp, strerror(werr));
    unlink(tmp);
    goto done;
  }
  if (rename(tmp, path) != 0) {
    afs_error_set(err, errno, "cannot rename %s: %s", tmp, strerror(errno));
    unlink(tmp);
    goto done;
  }
  if (durable && !fsync_dir_of(path)) {
    afs_error_set(err, errno ? errno : EIO, "cannot sync the folder of %s: %s", path,
                  strerror(errno));
    goto done;
  }
  ok = true;
done:
  bson_free(json);
  free(tmp);
  return ok;
}

static char *dup_utf8(const bson_t *doc, const char *key) {
  bson_iter_t it;
  if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
    return strdup(bson_iter_utf8(&it, NULL));
  return NULL;
}

bool afs_journal_read(const char *path, struct afs_journal *j, struct afs_error *err) {
  memset(j, 0, sizeof *j);
  bson_error_t berr;
  bson_json_reader_t *r = bson_json_reader_new_from_file(path, &berr);
  if (!r)
    return afs_error_set(err, ENOENT, "cannot open %s: %s", path, berr.message);
  bson_t doc = BSON_INITIALIZER;
  int rc = bson_json_reader_read(r, &doc, &berr);
  bson_json_reader_destroy(r);
  bool ok = false;
  if (rc != 1) {
    afs_error_set(err, EINVAL, "cannot parse %s: %s", path, rc < 0 ? berr.message : "empty");
    goto done;
  }
  j->partition = dup_utf8(&doc, "partition");
  j->file_path = dup_utf8(&doc, "filePath");
  j->content_type = dup_utf8(&doc, "contentType");
  j->caption = dup_utf8(&doc, "caption");
  char *id = dup_utf8(&doc, "id"), *state = dup_utf8(&doc, "state");
  if (id && strlen(id) < sizeof j->id)
    memcpy(j->id, id, strlen(id) + 1);
  j->uploaded = state && !strcmp(state, "uploaded");
  free(id);
  free(state);
  bson_iter_t it;
  if (bson_iter_init_find(&it, &doc, "mtime") && BSON_ITER_HOLDS_NUMBER(&it))
    j->mtime_ms = bson_iter_as_int64(&it);
  if (!j->partition || !j->file_path || !j->content_type) {
    afs_error_set(err, EINVAL, "%s lacks partition, filePath or contentType", path);
    afs_journal_free(j);
    goto done;
  }
  ok = true;
done:
  bson_destroy(&doc);
  return ok;
}

void afs_journal_free(struct afs_journal *j) {
  free(j->partition);
  free(j->file_path);
  free(j->content_type);
  free(j->caption);
  memset(j, 0, sizeof *j);
}
