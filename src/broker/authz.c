/* Who may ask the broker for what (`auth=required`, DESIGN.md §4): the clients file,
 * read at start and again when it changes or on SIGHUP, and the checks every handler
 * makes before acting on a client's request. With `auth=off` (b->authz NULL) every check
 * passes: every database writer is trusted, as in Cosync.
 *
 * A clients file that stops parsing is not applied: the broker keeps the list it had and
 * says why (a typo must neither lock everyone out nor drop a client's restrictions). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "assetfs/alloc.h"
#include "assetfs/log.h"
#include "broker.h"
#include "bstore.h"

struct afs_authz {
  /* Protects clients and seen. Workers take it to read; a reload takes it to write
   * (only for the swap: the file is parsed outside it). No other lock is taken inside. */
  pthread_rwlock_t lock;
  struct afs_clients clients;
  struct stat seen; /* the file as last read: a change in any of these reloads it */
  char *path;
};

static bool same_file(const struct stat *a, const struct stat *b) {
  return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
         a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
         a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

bool afs_authz_open(struct afs_broker *b, struct afs_error *err) {
  if (!b->cfg.auth_required)
    return true;
  struct afs_authz *z = afs_xcalloc(1, sizeof *z);
  z->path = afs_xstrdup(b->cfg.clients_file);
  if (stat(z->path, &z->seen) < 0 || !afs_clients_load(z->path, &z->clients, err)) {
    if (!err->msg[0])
      afs_error_set(err, errno, "clients_file %s: %s", z->path, strerror(errno));
    free(z->path);
    free(z);
    return false;
  }
  pthread_rwlock_init(&z->lock, NULL);
  b->authz = z;
  afs_info("auth=required: %zu client key(s) from %s", z->clients.n, z->path);
  return true;
}

void afs_authz_reload(struct afs_broker *b, bool force) {
  struct afs_authz *z = b->authz;
  struct stat now;
  if (!z)
    return;
  if (stat(z->path, &now) < 0) {
    if (force)
      afs_warn("clients_file %s: %s; keeping the %zu client key(s) read before", z->path,
               strerror(errno), z->clients.n);
    return;
  }
  pthread_rwlock_rdlock(&z->lock);
  bool same = same_file(&now, &z->seen);
  pthread_rwlock_unlock(&z->lock);
  if (same && !force)
    return;
  struct afs_clients fresh = {0};
  struct afs_error err = {0};
  if (!afs_clients_load(z->path, &fresh, &err)) {
    afs_warn("%s; keeping the client keys read before", err.msg);
    pthread_rwlock_wrlock(&z->lock);
    z->seen = now; /* said once per change, not once per poll */
    pthread_rwlock_unlock(&z->lock);
    return;
  }
  pthread_rwlock_wrlock(&z->lock);
  struct afs_clients old = z->clients;
  z->clients = fresh;
  z->seen = now;
  pthread_rwlock_unlock(&z->lock);
  afs_clients_free(&old);
  afs_info("clients_file %s read again: %zu client key(s)", z->path, fresh.n);
}

void afs_authz_close(struct afs_broker *b) {
  struct afs_authz *z = b->authz;
  if (!z)
    return;
  afs_clients_free(&z->clients);
  pthread_rwlock_destroy(&z->lock);
  free(z->path);
  free(z);
  b->authz = NULL;
}

bool afs_authz_check(struct afs_broker *b, enum afs_auth_req kind, const bson_t *doc,
                     const char *uid, const char *const *partitions, size_t n,
                     struct afs_error *err) {
  struct afs_authz *z = b->authz;
  if (!z)
    return true;
  if (!doc)
    return afs_error_set(err, EACCES, "nothing to check a signature on");
  pthread_rwlock_rdlock(&z->lock);
  bool ok = afs_auth_req_verify(&z->clients, kind, doc, uid, err);
  for (size_t i = 0; ok && i < n; i++)
    if (!partitions[i] || !afs_clients_allows(&z->clients, uid, partitions[i]))
      ok = afs_error_set(err, EACCES, "uid '%s' may not use partition '%s' (clients_file)", uid,
                         partitions[i] ? partitions[i] : "(none)");
  pthread_rwlock_unlock(&z->lock);
  return ok;
}

bool afs_authz_allows(struct afs_broker *b, const char *uid, const char *partition) {
  struct afs_authz *z = b->authz;
  if (!z)
    return true;
  pthread_rwlock_rdlock(&z->lock);
  bool ok = uid && partition && afs_clients_allows(&z->clients, uid, partition);
  pthread_rwlock_unlock(&z->lock);
  return ok;
}

int afs_authz_upload(struct afs_broker *b, struct afs_bstore *st, const struct afs_record *r,
                     bool at_init, struct afs_error *err) {
  if (!b->authz)
    return 1;
  const char *apart = r->asset_partition && *r->asset_partition ? r->asset_partition : r->partition;
  const char *parts[] = {r->partition, apart};
  if (!afs_authz_check(b, AFS_REQ_UPLOAD, r->doc, r->uid, parts, 2, err))
    return 0;
  if (!at_init)
    return 1;
  /* A signed upload is carried out once: its asset (same _id) existing means this is the
   * record again, put back by someone (its write URLs would reach the asset's objects). */
  bson_t *asset = NULL;
  if (!st->ops->get(st->ctx, AFS_BC_ASSET, &r->id, false, &asset, err))
    return -1;
  if (asset) {
    bson_destroy(asset);
    return afs_error_set(err, EACCES,
                         "an asset with this _id exists already: a signed upload is initialized "
                         "once, never again");
  }
  return 1;
}

bool afs_authz_may_change(struct afs_broker *b, const char *caller, const struct afs_record *asset,
                          struct afs_error *err) {
  if (!b->authz || afs_authz_allows(b, caller, asset->partition))
    return true;
  return afs_error_set(err, EPERM, "permission denied: uid '%s' may not use partition '%s'",
                       caller ? caller : "(none)", asset->partition ? asset->partition : "(none)");
}
