/* Extended attributes user.assetfs.* (DESIGN.md §7). A completed asset answers from its
 * CosyncAsset record (catalog); a file written here and not completed yet answers from
 * its upload state, so `getfattr -n user.assetfs.status` shows "uploading", "uploaded",
 * "retrying: <why>" or "error: <why>" while the broker has not completed it. Writing
 * user.assetfs.caption sets the caption: on the asset; with the upload if it has not
 * gone up yet; on the upload record AND the asset when the broker is completing it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>

#include "assetfs/clock.h"
#include "assetfs/cosync.h"
#include "assetfs/http_put.h" /* afs_monotonic_ms */
#include "assetfs/log.h"
#include "assetfs/strutil.h"
#include "fuse/ops_int.h"

#define PREFIX "user.assetfs."

static int put_value(const char *v, char *value, size_t size) {
  size_t n = strlen(v);
  if (size == 0)
    return (int)n;
  if (n > size)
    return -ERANGE;
  memcpy(value, v, n);
  return (int)n;
}

/* The value of field for a staged, not completed file. NULL: not available. */
static char *wf_field(struct afs_fs *fs, struct afs_wfile *wf, const char *field) {
  char *out = NULL, *partition, *file_path;
  afs_staging_names(fs->st, wf, &partition, &file_path);
  pthread_mutex_lock(&wf->mu);
  if (!strcmp(field, AFS_F_STATUS)) {
    const char *s = afs_wstate_name(wf->state);
    if ((wf->state == AFS_W_RETRYING || wf->state == AFS_W_FAILED) && wf->last_err.msg[0])
      out = asprintf(&out, "%s: %s", s, wf->last_err.msg) < 0 ? NULL : out;
    else
      out = strdup(s);
  } else if (!strcmp(field, "id") && wf->id[0]) {
    out = strdup(wf->id);
  } else if (!strcmp(field, AFS_F_CONTENT_TYPE)) {
    out = strdup(wf->content_type);
  } else if (!strcmp(field, AFS_F_CAPTION) && wf->caption) {
    out = strdup(wf->caption);
  } else if (!strcmp(field, AFS_F_FILE_PATH)) {
    out = strdup(file_path);
  } else if (!strcmp(field, "partition")) {
    out = strdup(partition);
  } else if (!strcmp(field, AFS_F_UID)) {
    out = strdup(fs->opt.uid);
  } else if (!strcmp(field, AFS_F_HOURS)) {
    out = asprintf(&out, "%g", fs->opt.expiration_hours) < 0 ? NULL : out;
  } else if (!strcmp(field, AFS_F_SIZE)) {
    struct stat s;
    pthread_mutex_unlock(&wf->mu);
    if (afs_staging_stat(wf, &s))
      out = asprintf(&out, "%lld", (long long)s.st_size) < 0 ? NULL : out;
    pthread_mutex_lock(&wf->mu);
  }
  pthread_mutex_unlock(&wf->mu);
  free(partition);
  free(file_path);
  return out;
}

static const char *const g_wf_fields[] = {
    "id",        AFS_F_STATUS, AFS_F_CONTENT_TYPE, AFS_F_SIZE,    AFS_F_FILE_PATH,
    "partition", AFS_F_UID,    AFS_F_HOURS,        AFS_F_CAPTION, NULL};

/* What an xattr call is about: a staged file not completed yet (wf, with a ref) or an
 * asset (a, when have_asset). Released with target_release whatever lookup returned. */
struct target {
  struct afs_fpath p;
  struct afs_wfile *wf;
  struct afs_asset a;
  bool have_asset;
};

/* Resolves path: *wf (staged and not completed, with a ref) or *a (asset). */
static int lookup_at(struct afs_fs *fs, const char *path, struct afs_fpath *p,
                     struct afs_wfile **wf, struct afs_asset *a, bool *have_asset) {
  *wf = NULL;
  *have_asset = false;
  int rc = afs_fpath_parse(path, p);
  if (rc)
    return rc;
  if (p->depth < 2)
    return -ENODATA;
  int k = afs_fs_resolve(fs, p, wf, a);
  if (k == AFS_NODE_STAGED) {
    pthread_mutex_lock(&(*wf)->mu);
    bool completed = (*wf)->state == AFS_W_COMPLETED;
    pthread_mutex_unlock(&(*wf)->mu);
    if (completed) {
      /* The asset exists: its record is the better answer. */
      struct afs_error e = {0};
      if (afs_catalog_lookup(fs->cat, p->partition, p->rel, a, &e) == AFS_CAT_FILE) {
        afs_staging_unref(fs->st, *wf);
        *wf = NULL;
        *have_asset = true;
      }
    }
    return 0;
  }
  if (k == AFS_NODE_ASSET) {
    *have_asset = true;
    return 0;
  }
  return k < 0 ? k : k == AFS_NODE_DIR ? -ENODATA : -ENOENT;
}

/* Resolves path into t (zeroed first). */
static int lookup(struct afs_fs *fs, const char *path, struct target *t) {
  memset(t, 0, sizeof *t);
  return lookup_at(fs, path, &t->p, &t->wf, &t->a, &t->have_asset);
}

static void target_release(struct afs_fs *fs, struct target *t) {
  if (t->have_asset)
    afs_asset_free(&t->a);
  afs_staging_unref(fs->st, t->wf);
  afs_fpath_free(&t->p);
}

int afs_op_getxattr(const char *path, const char *name, char *value, size_t size) {
  struct afs_fs *fs = afs_fs_ctx();
  struct target t;
  struct afs_error e = {0};
  /* No security labels or POSIX ACLs here: an unsupported namespace (not "this file has
   * none") lets `ls -l` stop asking after the first entry instead of making two round
   * trips per entry. */
  if (!strncmp(name, "security.", 9) || !strncmp(name, "system.", 7))
    return -EOPNOTSUPP;
  if (strncmp(name, PREFIX, strlen(PREFIX)) != 0)
    return -ENODATA;
  if (!strcmp(path, "/") && !strcmp(name, PREFIX "catalogQueries")) {
    /* The catalog's query counters, to measure what a workload costs in MongoDB. */
    char *v = afs_catalog_query_stats(fs->cat);
    int n = put_value(v, value, size);
    free(v);
    return n;
  }
  int rc = lookup(fs, path, &t);
  if (!rc) {
    const char *field = name + strlen(PREFIX);
    char *v = NULL;
    if (t.wf)
      v = wf_field(fs, t.wf, field);
    else if (!afs_asset_xattr_get(&t.a, name, &v, &e))
      v = NULL;
    rc = v ? put_value(v, value, size) : -ENODATA;
    free(v);
  }
  target_release(fs, &t);
  return rc;
}

int afs_op_listxattr(const char *path, char *list, size_t size) {
  struct afs_fs *fs = afs_fs_ctx();
  struct target t;
  int rc = lookup(fs, path, &t);
  if (rc == -ENODATA)
    rc = 0; /* directories: no attributes */
  else if (!rc && t.wf) {
    size_t need = 0;
    for (int i = 0; g_wf_fields[i]; i++) {
      char *v = wf_field(fs, t.wf, g_wf_fields[i]);
      if (!v)
        continue;
      size_t n = strlen(PREFIX) + strlen(g_wf_fields[i]) + 1;
      if (size && need + n <= size)
        snprintf(list + need, n, "%s%s", PREFIX, g_wf_fields[i]);
      need += n;
      free(v);
    }
    rc = size && need > size ? -ERANGE : (int)need;
  } else if (!rc) {
    size_t need = afs_asset_xattr_list(&t.a, list, size);
    rc = size && need > size ? -ERANGE : (int)need;
  }
  target_release(fs, &t);
  return rc;
}

int afs_op_setxattr(const char *path, const char *name, const char *value, size_t size, int flags) {
  (void)flags;
  struct afs_fs *fs = afs_fs_ctx();
  struct target t;
  struct afs_error e = {0};
  if (strcmp(name, PREFIX AFS_F_CAPTION) != 0)
    return strncmp(name, PREFIX, strlen(PREFIX)) == 0 ? -EPERM : -ENOTSUP;
  if (fs->opt.ro)
    return -EROFS;
  /* A caption is a string of a Cosync record: UTF-8, no NUL (and a journal that could
   * not encode it would be lost). */
  if (memchr(value, '\0', size) || !afs_utf8_valid(value, size))
    return -EINVAL;
  int rc = lookup(fs, path, &t);
  if (!rc) {
    char *caption = strndup(value, size);
    if (t.wf) {
      /* Sent with "uploaded". A running upload took its copy already: wait for it
       * (bounded), then, past "uploaded", the record and the asset get it directly. */
      char id[AFS_OID_HEX];
      pthread_mutex_lock(&t.wf->mu);
      free(t.wf->caption);
      t.wf->caption = caption;
      int64_t deadline = afs_monotonic_ms() + (int64_t)(fs->opt.close_timeout * 1000);
      while ((t.wf->busy || t.wf->state == AFS_W_UPLOADING) && afs_monotonic_ms() < deadline) {
        afs_cond_timedwait_ms(&t.wf->cond, &t.wf->mu, 200);
      }
      bool late = (t.wf->state == AFS_W_UPLOADED || t.wf->state == AFS_W_COMPLETED) && !t.wf->dirty;
      memcpy(id, t.wf->id, sizeof id);
      char *cap = late ? strdup(t.wf->caption) : NULL;
      pthread_mutex_unlock(&t.wf->mu);
      if (late && id[0] && !afs_catalog_set_upload_caption(fs->cat, id, cap, 10.0, &e))
        rc = afs_fs_errno(&e);
      free(cap);
    } else {
      if (!afs_catalog_set_caption(fs->cat, t.a.id, caption, &e))
        rc = afs_fs_errno(&e);
      free(caption);
    }
  }
  target_release(fs, &t);
  return rc;
}

int afs_op_removexattr(const char *path, const char *name) {
  (void)path;
  return strncmp(name, PREFIX, strlen(PREFIX)) == 0 ? -EPERM : -ENOTSUP;
}
