/* Function calls as a client makes them (calls.h): one insert, then polls of the call's
 * _id (the one filter every server answers from its index) with a growing pause, until
 * the broker answers or the time is up. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "assetfs/calls.h"
#include "assetfs/clock.h"
#include "assetfs/cosync.h"

static const struct {
  int code;
  const char *name;
} names[] = {{EPERM, "EPERM"},   {EACCES, "EACCES"}, {ENOENT, "ENOENT"}, {EEXIST, "EEXIST"},
             {ESTALE, "ESTALE"}, {EINVAL, "EINVAL"}, {ENOSYS, "ENOSYS"}, {E2BIG, "E2BIG"},
             {EIO, "EIO"},       {EXDEV, "EXDEV"}};

const char *afs_errno_name(int code) {
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].code == code)
      return names[i].name;
  return "EIO";
}

int afs_errno_from_name(const char *name) {
  for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(names[i].name, name))
      return names[i].code;
  return 0;
}

static bool insert(const struct afs_caller *cl, const bson_oid_t *id, const char *name,
                   const bson_t *args, struct afs_error *err) {
  bson_error_t berr;
  bson_t *doc = BCON_NEW(AFS_F_ID, BCON_OID(id), AFS_F_CALL_NAME, BCON_UTF8(name));
  BSON_APPEND_ARRAY(doc, AFS_F_CALL_ARGS, args);
  BSON_APPEND_UTF8(doc, AFS_F_UID, cl->uid);
  BSON_APPEND_UTF8(doc, AFS_F_SESSION, cl->session);
  BSON_APPEND_UTF8(doc, AFS_F_STATUS, AFS_UPLOAD_PENDING);
  BSON_APPEND_DATE_TIME(doc, AFS_F_CREATED, afs_now_ms());
  bool ok = true;
  if (cl->key) {
    char sig[AFS_AUTH_SIG_B64];
    ok = afs_auth_req_sign(cl->key, AFS_REQ_CALL, doc, sig, err);
    if (ok)
      BSON_APPEND_UTF8(doc, afs_auth_req_sig_field(AFS_REQ_CALL), sig);
  }
  if (ok) {
    mongoc_client_t *c = afs_db_pop(cl->db);
    mongoc_collection_t *coll = afs_db_coll(cl->db, c, AFS_COLL_CALL);
    ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &berr);
    mongoc_collection_destroy(coll);
    afs_db_push(cl->db, c);
    if (!ok)
      afs_db_error(err, &berr, "inserting a function call");
  }
  bson_destroy(doc);
  return ok;
}

static const char *str_field(const bson_t *doc, const char *field) {
  bson_iter_t it;
  return bson_iter_init_find(&it, doc, field) && BSON_ITER_HOLDS_UTF8(&it)
             ? bson_iter_utf8(&it, NULL)
             : NULL;
}

/* 1 answered (done), 2 refused (err), 0 not yet, -1 MongoDB failed (err). */
static int poll_once(const struct afs_caller *cl, const bson_oid_t *id, const char *name,
                     bson_t *result, struct afs_error *err) {
  bson_error_t berr;
  const bson_t *doc;
  int ret = 0;
  bson_t *q = BCON_NEW(AFS_F_ID, BCON_OID(id));
  mongoc_client_t *c = afs_db_pop(cl->db);
  mongoc_collection_t *coll = afs_db_coll(cl->db, c, AFS_COLL_CALL);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, q, NULL, NULL);
  if (mongoc_cursor_next(cur, &doc)) {
    const char *st = str_field(doc, AFS_F_STATUS);
    bson_iter_t it;
    if (st && !strcmp(st, AFS_CALL_DONE)) {
      ret = 1;
      if (result && bson_iter_init_find(&it, doc, AFS_F_CALL_RESULT))
        bson_append_iter(result, AFS_F_CALL_RESULT, -1, &it);
    } else if (st && !strcmp(st, AFS_CALL_ERROR)) {
      int code = afs_errno_from_name(str_field(doc, "errorCode"));
      const char *why = str_field(doc, AFS_F_ERROR);
      afs_error_set(err, code ? code : EIO, "the broker refused %s: %s", name,
                    why ? why : "no reason given");
      ret = 2;
    }
  }
  if (mongoc_cursor_error(cur, &berr)) {
    afs_db_error(err, &berr, "reading a function call's answer");
    ret = -1;
  }
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  afs_db_push(cl->db, c);
  bson_destroy(q);
  return ret;
}

bool afs_call_run(const struct afs_caller *cl, const char *name, const bson_t *args,
                  double timeout_s, bson_t *result, struct afs_error *err) {
  bson_oid_t id;
  bson_oid_init(&id, NULL);
  if (!insert(cl, &id, name, args, err))
    return false;
  int64_t deadline = afs_monotonic_ms() + (int64_t)(timeout_s * 1000);
  long pause_ms = 5;
  for (;;) {
    int rc = poll_once(cl, &id, name, result, err);
    if (rc == 1)
      return true;
    if (rc == 2 || rc < 0)
      return false;
    if (afs_monotonic_ms() >= deadline)
      return afs_error_set(err, ETIMEDOUT, "no broker answered %s within %.0f s", name, timeout_s);
    struct timespec ts = {0, pause_ms * 1000000L};
    nanosleep(&ts, NULL);
    pause_ms = pause_ms < 100 ? pause_ms * 2 : 100;
  }
}
