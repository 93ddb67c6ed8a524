/* What every handler of the broker shares: the collection handle, failing a record with a
 * reason, rate-limited warnings for transient failures, and the test-only pause hook. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "assetfs/test_pause.h"
#include "broker.h"
#include "bstore.h"

mongoc_collection_t *afs_broker_coll(struct afs_broker *b, mongoc_client_t *c, const char *name) {
  return afs_db_coll(&b->db, c, name);
}

enum afs_outcome afs_upload_fail(struct afs_bstore *st, const bson_value_t *id, const char *token,
                                 const char *why) {
  char ids[80];
  struct afs_error e = {0};
  afs_warn("upload %s: error: %s", afs_rec_id_str(id, ids, sizeof ids), why);
  bson_t *set = BCON_NEW(AFS_F_STATUS, AFS_UPLOAD_ERROR, AFS_F_ERROR, BCON_UTF8(why), AFS_F_UPDATED,
                         BCON_DATE_TIME(afs_now_ms()));
  /* Unclaimed (token NULL): only a pending initialization fails this way, and only
   * while the record is still pending and nobody holds it. */
  int rc = st->ops->finish(st->ctx, AFS_BC_UPLOAD, id, token, token ? NULL : AFS_UPLOAD_PENDING,
                           set, NULL, NULL, &e);
  bson_destroy(set);
  if (rc < 0) {
    afs_warn("upload %s: cannot record the error: %s", ids, e.msg);
    return AFS_RETRY;
  }
  return AFS_DONE;
}

void afs_broker_test_pause(const char *point, const bson_value_t *id) {
  char ids[80];
  afs_test_pause(point, afs_rec_id_str(id, ids, sizeof ids));
}

static atomic_llong g_last_transient_warn;

bool afs_broker_warn_due(void) {
  long long now = (long long)afs_now_ms(), last = atomic_load(&g_last_transient_warn);
  return now - last >= 10000 && atomic_compare_exchange_strong(&g_last_transient_warn, &last, now);
}
