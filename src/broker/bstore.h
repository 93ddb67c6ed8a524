/* The records the broker's handlers read and change, behind a small table of operations:
 * MongoDB in the broker (bstore_mongo.c) and an in-memory fake with injectable faults in
 * the unit tests (tests/unit/fake_bstore.h), so that a handler runs without a database.
 *
 * Today the function calls (functions.c) go through it; the upload and asset handlers
 * still take the MongoDB client directly (bstore.mc) and move here one by one.
 *
 * Errors: false (or -1) with err. A store that cannot be reached gives a message starting
 * with "MongoDB" and the code AFS_E_UNREACHABLE or EIO (afs_db_error): the caller gives
 * the record back for a later try. */
#ifndef ASSETFS_BROKER_BSTORE_H
#define ASSETFS_BROKER_BSTORE_H

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdbool.h>

#include "assetfs/error.h"

struct afs_broker;

struct afs_bstore_ops {
  /* The asset `id`: *out (caller destroys) or NULL when there is none. for_result: as
   * returned to clients, without the broker's bookkeeping (lease, seal). */
  bool (*asset_get)(void *ctx, const bson_value_t *id, bool for_result, bson_t **out,
                    struct afs_error *err);
  /* $set of `set` on asset `id` while its status is `status_is` (NULL: any) and is not
   * `status_not` (NULL: any); *matched whether it was. */
  bool (*asset_set)(void *ctx, const bson_value_t *id, const char *status_is,
                    const char *status_not, const bson_t *set, bool *matched,
                    struct afs_error *err);
  /* Ends the lease of call `id` (token: ours) with $set of `set`: 1 done, 0 the lease
   * was no longer ours, -1 error. */
  int (*call_finish)(void *ctx, const bson_value_t *id, const char *token, const bson_t *set,
                     struct afs_error *err);
  /* Gives call `id` back, claimable again after delay_ms. Best effort. */
  void (*call_release)(void *ctx, const bson_value_t *id, const char *token, long delay_ms);
};

struct afs_bstore {
  const struct afs_bstore_ops *ops;
  void *ctx;
  /* MongoDB: the broker and the worker's client (also for the handlers not yet behind
   * ops); NULL in the fake. */
  struct afs_broker *b;
  mongoc_client_t *mc;
};

/* The MongoDB store of one worker: b's database through client c (popped by the caller,
 * which keeps it for the store's lifetime). */
void afs_bstore_mongo(struct afs_bstore *st, struct afs_broker *b, mongoc_client_t *c);

#endif
