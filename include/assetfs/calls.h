/* A client's function calls (CosyncFunctionCall, functions.c in the broker): insert one,
 * signed when the client has a key (auth=required), and wait for the broker's answer.
 * The broker answers `done` with `result`, or `error` with `error` (for people) and
 * `errorCode` (an errno name: EPERM, EACCES, ENOENT, EEXIST, ESTALE, EINVAL, EXDEV (the
 * asset to copy from is not there), ...), which
 * becomes err->code here so callers map it like any other failure. */
#ifndef ASSETFS_CALLS_H
#define ASSETFS_CALLS_H

#include <bson/bson.h>
#include <stdbool.h>

#include "assetfs/auth.h"
#include "assetfs/db.h"
#include "assetfs/error.h"

struct afs_caller {
  struct afs_db *db;
  const afs_auth_key *key; /* NULL: calls go unsigned (auth=off) */
  const char *uid, *session;
};

/* Runs `name` with args (a BSON array document) and waits up to timeout_s for the answer.
 * result (may be NULL) gets {result: <the call's result>}. false with err: the broker's
 * refusal (its errorCode), ETIMEDOUT when no broker answered, EIO for MongoDB. */
bool afs_call_run(const struct afs_caller *cl, const char *name, const bson_t *args,
                  double timeout_s, bson_t *result, struct afs_error *err);

/* The errno name a broker writes as errorCode, and back (0 when unknown). */
const char *afs_errno_name(int code);
int afs_errno_from_name(const char *name);

#endif
