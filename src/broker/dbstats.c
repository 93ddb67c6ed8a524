/* Counts the MongoDB commands the broker sends (libmongoc's command-monitoring
 * callbacks), split by who sent them: the dispatcher (claims, including the polls that
 * find nothing) and the workers (the handlers' reads and transitions). The totals are
 * logged when the broker stops, so the round trips per upload can be measured. */
#include <stdatomic.h>
#include <string.h>

#include "assetfs/log.h"
#include "broker.h"

static const char *const names[] = {"find",   "getMore",   "update", "findAndModify",
                                    "delete", "aggregate", "insert", "other"};
#define NNAMES (sizeof names / sizeof names[0])
static atomic_llong counts[2][NNAMES];
static _Thread_local int t_role;       /* 0 dispatcher or other, 1 worker */
static _Thread_local long long t_sent; /* commands this thread sent */
/* Claims: commands of claims that found records, those records, commands of polls that
 * found nothing, and those polls. */
static atomic_llong claim_cmds, claim_recs, empty_cmds, empty_polls;

long long afs_broker_dbstats_sent(void) {
  return t_sent;
}

void afs_broker_dbstats_claim(long long cmds, int found) {
  if (found > 0) {
    atomic_fetch_add(&claim_cmds, cmds);
    atomic_fetch_add(&claim_recs, found);
  } else {
    atomic_fetch_add(&empty_cmds, cmds);
    atomic_fetch_add(&empty_polls, 1);
  }
}

void afs_broker_dbstats_role(bool worker) {
  t_role = worker ? 1 : 0;
}

static void started(const mongoc_apm_command_started_t *ev) {
  const char *cmd = mongoc_apm_command_started_get_command_name(ev);
  size_t i = 0;
  while (i < NNAMES - 1 && strcmp(cmd, names[i]))
    i++;
  atomic_fetch_add(&counts[t_role][i], 1);
  t_sent++;
}

bool afs_broker_dbstats_install(mongoc_client_pool_t *pool) {
  mongoc_apm_callbacks_t *cb = mongoc_apm_callbacks_new();
  mongoc_apm_set_command_started_cb(cb, started);
  bool ok = mongoc_client_pool_set_apm_callbacks(pool, cb, NULL);
  mongoc_apm_callbacks_destroy(cb);
  return ok;
}

void afs_broker_dbstats_log(void) {
  static const char *const who[2] = {"dispatcher", "workers"};
  for (int r = 0; r < 2; r++) {
    long long total = 0, v[NNAMES];
    for (size_t i = 0; i < NNAMES; i++)
      total += v[i] = atomic_load(&counts[r][i]);
    afs_info("MongoDB commands sent by the %s: %lld (find %lld, getMore %lld, update %lld, "
             "findAndModify %lld, delete %lld, aggregate %lld, insert %lld, other %lld)",
             who[r], total, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
  }
  afs_info("claims: %lld commands for %lld records; %lld commands in %lld polls that found "
           "nothing",
           (long long)atomic_load(&claim_cmds), (long long)atomic_load(&claim_recs),
           (long long)atomic_load(&empty_cmds), (long long)atomic_load(&empty_polls));
}
