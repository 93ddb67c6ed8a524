/* The broker's loop: one dispatcher thread polls MongoDB (adaptive interval: poll_min_ms
 * right after work was found, doubling while idle up to HOT_CAP_MS for HOT_MS after the
 * last work and up to poll_max_ms after that, longer backoff while MongoDB is
 * unreachable; quiet uploaded records and calls less often, see COLD_MS) and queues what
 * it found; worker threads run the handlers. Pending uploads are read whole and
 * initialized without a claim (one conditional write each, see upload_init.c); every
 * other record is claimed under a lease (one record per findAndModify while a source is
 * quiet, candidates claimed by the workers in parallel while it is busy). On stop,
 * workers finish the record in hand and every queued record's lease is released so
 * another broker takes it at once. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/cosync.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

/* Pending and uploaded records are two sources, each a plain equality on status: the
 * filter every MongoDB-compatible server answers from an index, where some (the test
 * stack's FerretDB, docs/ARCHITECTURE.md "what FerretDB does not do") scan for an $in. */
enum src { SRC_PENDING, SRC_UPLOADED, SRC_CALL, SRC_DELETED, SRC_STALE, SRC_COUNT };
static const char *const src_coll[SRC_COUNT] = {AFS_COLL_UPLOAD, AFS_COLL_UPLOAD, AFS_COLL_CALL,
                                                AFS_COLL_ASSET, AFS_COLL_UPLOAD};

/* After work was found, idle polls stay at most HOT_CAP_MS apart for HOT_MS: uploads come
 * in bursts (the next file of a `cp -r` in default mode follows soon after, and its cp
 * waits for the initialization; docs/internals/broker.md#polling has the numbers). */
#define HOT_MS 1500
#define HOT_CAP_MS 20

/* A quiet uploaded source is looked at no more often than a quarter of the time since
 * the last work (at least HOT_CAP_MS apart, at most COLD_MS or poll_max_ms if longer),
 * and function calls every COLD_MS: a `cp` in the filesystem's default mode waits for
 * the initialization (pending keeps the intervals above), while a completion (the
 * filesystem looks for it 100 ms to 2 s apart) or a URL refresh can wait that long, and
 * every look is a query the database's CPU is short of in a burst. A record just initialized is
 * usually marked uploaded soon after, so right after work the uploaded source is still polled
 * often. */
#define COLD_MS 250

/* Deleted assets are purged without hurry; the query scans the asset collection. */
#define DELETED_POLL_MS 1000

/* Candidates finished less than RECENT_MS ago are not queued again (a burst finishes a
 * few hundred records in that time). */
#define RECENT_MAX 512
#define RECENT_MS 2000

/* A queued record: claimed (doc and token set), an unclaimed candidate (doc NULL: the
 * worker claims it by id), or a pending upload read whole without a claim (doc set, token
 * empty: initialized as read). Unclaimed ones always carry their id. */
struct item {
  enum src src;
  int64_t claimed_ms; /* when the lease was taken */
  bson_t *doc;
  bson_value_t id; /* EOD for records claimed by the dispatcher */
  char token[AFS_LEASE_TOKEN_MAX];
};

struct queue {
  /* lock protects every field below; leaf lock (never held while calling MongoDB). */
  pthread_mutex_t lock;
  pthread_cond_t nonempty, room;
  struct item *items;
  size_t cap, head, len, busy;
  /* claiming[i]: the unclaimed record worker i is claiming or working on (value_type EOD
   * when none), so the dispatcher does not queue it again meanwhile. */
  bson_value_t *claiming;
  /* held[i]: the claimed record worker i works on (EOD when none). Its lease may run out
   * while it works (a slow S3); claims leave it out meanwhile, so this broker never starts
   * a second completion of a record it is still completing: another broker takes it over,
   * and the first learns that at its renewal. Owned here. */
  bson_value_t *held;
  /* The last RECENT_MAX candidates workers were done with, and when: a poll that started
   * before a record was finished can still return it, and claiming it again would only
   * cost a round trip (or, through a stale read, redo a finished transition). */
  bson_value_t recent[RECENT_MAX];
  int64_t recent_ms[RECENT_MAX];
  size_t recent_next;
};

struct ctx {
  struct afs_broker *b;
  struct queue q;
  atomic_int next_slot;
};

/* Whether candidate `id` is queued or in a worker's hands already. Call with q->lock
 * held. */
static bool q_has_locked(struct queue *q, const bson_value_t *id, int workers) {
  for (size_t i = 0; i < q->len; i++) {
    const struct item *it = &q->items[(q->head + i) % q->cap];
    if (afs_rec_id_equal(&it->id, id))
      return true;
  }
  for (int w = 0; w < workers; w++)
    if (afs_rec_id_equal(&q->claiming[w], id) || afs_rec_id_equal(&q->held[w], id))
      return true;
  int64_t now = afs_now_ms();
  for (size_t i = 0; i < RECENT_MAX; i++)
    if (now - q->recent_ms[i] < RECENT_MS && afs_rec_id_equal(&q->recent[i], id))
      return true;
  return false;
}

/* Unclaimed records queued or in a worker's hands (a poll still finds them). Call with
 * q->lock held. */
static size_t q_unclaimed_locked(struct queue *q, int workers) {
  size_t n = 0;
  for (size_t i = 0; i < q->len; i++)
    if (!q->items[(q->head + i) % q->cap].token[0])
      n++;
  for (int w = 0; w < workers; w++)
    if (q->claiming[w].value_type != BSON_TYPE_EOD)
      n++;
  return n;
}

static void q_push(struct queue *q, struct item it) {
  pthread_mutex_lock(&q->lock);
  q->items[(q->head + q->len) % q->cap] = it;
  q->len++;
  pthread_cond_signal(&q->nonempty);
  pthread_mutex_unlock(&q->lock);
}

static size_t q_room(struct queue *q) {
  pthread_mutex_lock(&q->lock);
  size_t r = q->cap - q->len - q->busy;
  pthread_mutex_unlock(&q->lock);
  return r;
}

static bson_t *source_filter(struct afs_broker *b, enum src s);

/* Claims the candidate in `it`: on success it->doc and it->token are set. Failures
 * leave the record to a later poll. */
static void claim_candidate(struct ctx *x, mongoc_client_t *c, struct item *it) {
  struct afs_broker *b = x->b;
  struct afs_lease_batch one;
  struct afs_error err = {0};
  mongoc_collection_t *coll = afs_broker_coll(b, c, src_coll[it->src]);
  bson_t *f = source_filter(b, it->src);
  long long sent0 = afs_broker_dbstats_sent();
  if (afs_lease_claim_id(coll, f, &it->id, b->cfg.lease_seconds * 1000L, &one, &err)) {
    if (one.n == 1) {
      it->doc = one.docs[0];
      one.docs[0] = NULL;
      one.n = 0;
      snprintf(it->token, sizeof it->token, "%s", one.token);
      it->claimed_ms = afs_now_ms();
    }
    afs_broker_dbstats_claim(afs_broker_dbstats_sent() - sent0, it->doc ? 1 : 0);
    afs_lease_batch_free(&one);
  } else {
    afs_transient("claiming a record: %s", err.msg);
  }
  bson_destroy(f);
  mongoc_collection_destroy(coll);
}

static void *worker_main(void *arg) {
  struct ctx *x = arg;
  struct afs_broker *b = x->b;
  struct queue *q = &x->q;
  afs_broker_dbstats_role(true);
  int slot = atomic_fetch_add(&x->next_slot, 1);
  mongoc_client_t *c = afs_db_pop(&b->db);
  struct afs_bstore st; /* this worker's records, through its client */
  struct afs_bstore_sealed sealed;
  afs_bstore_live(&st, b, c);
  if (b->sign_key) /* auth=required: assets are sealed */
    afs_bstore_sealed(&st, &sealed, &st, b);
  for (;;) {
    pthread_mutex_lock(&q->lock);
    while (q->len == 0 && !atomic_load(&b->stop)) {
      afs_cond_timedwait_ms(&q->nonempty, &q->lock, 200);
    }
    if (atomic_load(&b->stop)) {
      pthread_mutex_unlock(&q->lock);
      break;
    }
    struct item it = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    q->busy++;
    if (!it.token[0])
      q->claiming[slot] = it.id; /* owned by `it`; cleared before it is destroyed */
    else
      q->claiming[slot].value_type = BSON_TYPE_EOD;
    if (it.doc && it.token[0])
      afs_rec_id(it.doc, &q->held[slot]);
    pthread_mutex_unlock(&q->lock);

    if (!it.doc) {
      /* A candidate of a burst: claim it here, so the claims of a burst run in parallel
       * (each one findAndModify by _id, answered from the primary key). */
      claim_candidate(x, c, &it);
      if (!it.doc)
        it.src = SRC_COUNT;
      else if (it.token[0]) { /* claimed now: held like a record the dispatcher claimed */
        pthread_mutex_lock(&q->lock);
        afs_rec_id(it.doc, &q->held[slot]);
        pthread_mutex_unlock(&q->lock);
      }
    }
    int64_t t0 = afs_now_ms();
    /* A record that waited most of its lease in the queue may be taken over while we
     * work on it; give it back instead of racing. */
    if (it.doc && it.token[0] && t0 - it.claimed_ms > b->cfg.lease_seconds * 800L) {
      bson_value_t id;
      if (afs_rec_id(it.doc, &id)) {
        mongoc_collection_t *coll = afs_broker_coll(b, c, src_coll[it.src]);
        afs_lease_release(coll, &id, it.token, 0, NULL);
        mongoc_collection_destroy(coll);
        bson_value_destroy(&id);
      }
      it.src = SRC_COUNT;
    }
    struct afs_record rec; /* the one reading of an upload or asset record */
    memset(&rec, 0, sizeof rec);
    if (it.src != SRC_COUNT && it.src != SRC_CALL)
      afs_record_read(it.doc, &rec);
    switch (it.src) {
    case SRC_PENDING:
    case SRC_UPLOADED:
      if (!it.token[0])
        afs_upload_init(b, &st, &rec, NULL); /* read by the pending poll, unclaimed */
      else if (rec.status && !strcmp(rec.status, AFS_UPLOAD_UPLOADED))
        afs_upload_complete(b, &st, &rec, it.token);
      else
        afs_upload_init(b, &st, &rec, it.token);
      break;
    case SRC_CALL:
      afs_function_call(b, &st, it.doc, it.token);
      break;
    case SRC_DELETED:
      afs_asset_purge(b, &st, &rec, it.token);
      break;
    case SRC_STALE:
      afs_upload_stale(b, &st, &rec, it.token);
      break;
    default:
      break;
    }
    if (it.src < SRC_COUNT)
      afs_debug("handled a %s record in %lld ms", src_coll[it.src], (long long)(afs_now_ms() - t0));
    afs_record_done(&rec);
    if (it.doc)
      bson_destroy(it.doc);
    pthread_mutex_lock(&q->lock);
    /* Kept until now: a poll that started before the claim may still return the record
     * while it is being worked on. */
    q->claiming[slot].value_type = BSON_TYPE_EOD;
    if (q->held[slot].value_type != BSON_TYPE_EOD) {
      bson_value_destroy(&q->held[slot]);
      q->held[slot].value_type = BSON_TYPE_EOD;
    }
    if (it.id.value_type != BSON_TYPE_EOD) {
      size_t r = q->recent_next++ % RECENT_MAX;
      bson_value_destroy(&q->recent[r]);
      q->recent[r] = it.id; /* moved */
      q->recent_ms[r] = afs_now_ms();
      it.id.value_type = BSON_TYPE_EOD;
    }
    q->busy--;
    pthread_cond_signal(&q->room);
    pthread_mutex_unlock(&q->lock);
    bson_value_destroy(&it.id);
  }
  afs_db_push(&b->db, c);
  afs_s3_thread_cleanup();
  return NULL;
}

static bson_t *source_filter(struct afs_broker *b, enum src s) {
  switch (s) {
  case SRC_PENDING:
  case SRC_UPLOADED:
    /* Not an array: {status: "pending"} matches ["pending"] too. */
    return BCON_NEW(AFS_F_STATUS, s == SRC_PENDING ? AFS_UPLOAD_PENDING : AFS_UPLOAD_UPLOADED,
                    "$and", "[", "{", AFS_F_STATUS, "{", "$not", "{", "$type", "array", "}", "}",
                    "}", "]");
  case SRC_CALL:
    return BCON_NEW(AFS_F_STATUS, AFS_CALL_PENDING, "$and", "[", "{", AFS_F_STATUS, "{", "$not",
                    "{", "$type", "array", "}", "}", "}", "]");
  case SRC_DELETED:
    return BCON_NEW(AFS_F_STATUS, AFS_ASSET_DELETED, "$and", "[", "{", AFS_F_STATUS, "{", "$not",
                    "{", "$type", "array", "}", "}", "}", "]");
  case SRC_STALE: {
    int64_t cutoff = afs_now_ms() - b->cfg.stale_upload_seconds * 1000L;
    bson_oid_t oid;
    afs_rec_oid_at(cutoff, &oid);
    return BCON_NEW(AFS_F_STATUS, "{", "$in", "[", AFS_UPLOAD_PENDING, AFS_UPLOAD_INITIALIZED, "]",
                    "}", "$and", "[", "{", AFS_F_STATUS, "{", "$not", "{", "$type", "array", "}",
                    "}", "}", "{", "$or", "[", "{", AFS_F_CREATED, "{", "$lt",
                    BCON_DATE_TIME(cutoff), "}", "}", "{", AFS_F_CREATED, "{", "$not", "{", "$type",
                    "date", "}", "}", AFS_F_ID, "{", "$lt", BCON_OID(&oid), "}", "}", "]", "}",
                    "]");
  }
  default:
    return bson_new();
  }
}

/* Adds _id: {$nin: [...]} with the records this broker's workers hold to claim filter f. */
static void exclude_held(struct ctx *x, bson_t *f) {
  bson_t nin, arr;
  int n = 0;
  pthread_mutex_lock(&x->q.lock);
  for (int w = 0; w < x->b->workers; w++)
    n += x->q.held[w].value_type != BSON_TYPE_EOD;
  if (n > 0) {
    BSON_APPEND_DOCUMENT_BEGIN(f, AFS_F_ID, &nin);
    BSON_APPEND_ARRAY_BEGIN(&nin, "$nin", &arr);
    for (int w = 0, i = 0; w < x->b->workers; w++) {
      if (x->q.held[w].value_type == BSON_TYPE_EOD)
        continue;
      char k[16];
      snprintf(k, sizeof k, "%d", i++);
      bson_append_value(&arr, k, -1, &x->q.held[w]);
    }
    bson_append_array_end(&nin, &arr);
    bson_append_document_end(f, &nin);
  }
  pthread_mutex_unlock(&x->q.lock);
}

/* Claims from one source; returns records queued, or -1 on a MongoDB error. */
static int claim_source(struct ctx *x, mongoc_client_t *c, enum src s, size_t room, bool single,
                        struct afs_error *err) {
  struct afs_broker *b = x->b;
  struct afs_lease_batch batch;
  size_t want = room < (size_t)b->batch ? room : (size_t)b->batch;
  if (want == 0)
    return 0;
  mongoc_collection_t *coll = afs_broker_coll(b, c, src_coll[s]);
  bson_t *f = source_filter(b, s);
  int64_t t0 = afs_now_ms();
  long long sent0 = afs_broker_dbstats_sent();
  int n = 0;
  if (s == SRC_PENDING) {
    /* Pending uploads need no claim (see upload_init.c): read them whole and queue them,
     * past those already queued or in a worker's hands. A poll that finds one costs
     * this query, the initialization one conditional update. */
    bson_t **docs = NULL;
    size_t ndocs = 0;
    pthread_mutex_lock(&x->q.lock);
    size_t skip = q_unclaimed_locked(&x->q, b->workers);
    pthread_mutex_unlock(&x->q.lock);
    bool pok = afs_lease_peek(coll, f, (int)(want + skip), &docs, &ndocs, err);
    for (size_t i = 0; pok && i < ndocs && (size_t)n < want; i++) {
      struct item it = {.src = s};
      if (!afs_rec_id(docs[i], &it.id))
        continue;
      pthread_mutex_lock(&x->q.lock);
      bool dup = q_has_locked(&x->q, &it.id, b->workers);
      pthread_mutex_unlock(&x->q.lock);
      if (dup) {
        bson_value_destroy(&it.id);
        continue;
      }
      it.doc = docs[i];
      docs[i] = NULL; /* moved into the item */
      q_push(&x->q, it);
      n++;
    }
    afs_lease_docs_free(docs, ndocs);
    bson_destroy(f);
    mongoc_collection_destroy(coll);
    if (!pok)
      return -1;
    afs_broker_dbstats_claim(afs_broker_dbstats_sent() - sent0, n);
    if (n)
      afs_debug("queued %d pending records from %s in %lld ms", n, src_coll[s],
                (long long)(afs_now_ms() - t0));
    return n;
  }
  if (!single && s == SRC_UPLOADED) {
    /* A burst: queue the candidates' _ids (one query) and let the workers claim them in
     * parallel, instead of a multi-record update that the dispatcher waits for. Look
     * past those already queued or being claimed. */
    bson_value_t *ids = NULL;
    size_t nids = 0;
    pthread_mutex_lock(&x->q.lock);
    size_t skip = q_unclaimed_locked(&x->q, b->workers);
    pthread_mutex_unlock(&x->q.lock);
    bool cok = afs_lease_candidates(coll, f, (int)(want + skip), &ids, &nids, err);
    for (size_t i = 0; cok && i < nids && (size_t)n < want; i++) {
      pthread_mutex_lock(&x->q.lock);
      bool dup = q_has_locked(&x->q, &ids[i], b->workers);
      pthread_mutex_unlock(&x->q.lock);
      if (dup)
        continue;
      struct item it = {.src = s, .id = ids[i]};
      ids[i].value_type = BSON_TYPE_EOD; /* moved into the item */
      q_push(&x->q, it);
      n++;
    }
    afs_lease_ids_free(ids, nids);
    bson_destroy(f);
    mongoc_collection_destroy(coll);
    if (!cok)
      return -1;
    if (n)
      afs_debug("queued %d candidates from %s in %lld ms", n, src_coll[s],
                (long long)(afs_now_ms() - t0));
    return n;
  }
  /* Single: one findAndModify that claims and reads the oldest record (an idle poll that
   * finds one costs no second round trip). Otherwise a batch claim: one query when there
   * is nothing, two for up to `want`. Never a record a worker here still holds. */
  exclude_held(x, f);
  bool ok =
      afs_lease_claim(coll, f, single ? 1 : (int)want, b->cfg.lease_seconds * 1000L, &batch, err);
  if (ok) {
    int64_t t1 = afs_now_ms();
    for (size_t i = 0; i < batch.n; i++) {
      struct item it = {.src = s, .doc = batch.docs[i], .claimed_ms = t1};
      snprintf(it.token, sizeof it.token, "%s", batch.token);
      batch.docs[i] = NULL;
      q_push(&x->q, it);
    }
    n = (int)batch.n;
    batch.n = 0;
    afs_lease_batch_free(&batch);
    afs_broker_dbstats_claim(afs_broker_dbstats_sent() - sent0, n);
  }
  bson_destroy(f);
  mongoc_collection_destroy(coll);
  if (!ok)
    return -1;
  if (n)
    afs_debug("claimed %d from %s in %lld ms", n, src_coll[s], (long long)(afs_now_ms() - t0));
  return n;
}

static void release_queued(struct ctx *x) {
  struct afs_broker *b = x->b;
  struct queue *q = &x->q;
  mongoc_client_t *c = afs_db_pop(&b->db);
  size_t n = 0;
  while (q->len > 0) {
    struct item it = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    if (!it.token[0]) {
      /* never claimed: nothing to give back */
      if (it.doc)
        bson_destroy(it.doc);
      bson_value_destroy(&it.id);
      continue;
    }
    bson_value_destroy(&it.id);
    bson_value_t id;
    if (afs_rec_id(it.doc, &id)) {
      mongoc_collection_t *coll = afs_broker_coll(b, c, src_coll[it.src]);
      if (afs_lease_release(coll, &id, it.token, 0, NULL) > 0)
        n++;
      mongoc_collection_destroy(coll);
      bson_value_destroy(&id);
    }
    bson_destroy(it.doc);
  }
  afs_db_push(&b->db, c);
  if (n)
    afs_info("released %zu queued record(s) for other brokers", n);
}

/* The dispatcher's clocks: when each source is due next, how long the last claims took,
 * and whether work is coming in. */
/* auth=required: seals checked per round, and rounds apart: a million assets a day. */
#define SCRUB_BATCH 100
#define SCRUB_EVERY_MS 5000

struct pacer {
  long delay;          /* the next wait between polls */
  long stale_every_ms; /* stale uploads: a quarter of stale_upload_seconds (0.5..30 s) */
  long purge_every_ms; /* answered calls: a quarter of call_keep_seconds (1 s..10 min) */
  long cold_ms;        /* quiet uploaded records and calls: at most this apart */
  int64_t next_stale, next_side, next_deleted, next_uploaded, next_call_purge, next_scrub;
  int64_t next_mp_sweep;
  bson_value_t scrub_from; /* auth=required: the last asset whose seal was checked */
  int64_t last_claim, claim_cost, last_work;
  int64_t down_since, last_down_log;
  /* Per source but pending (always read whole, see claim_source): whether the last
   * claim found work. A quiet source is polled with a one-record findAndModify (the poll
   * that finds a record has claimed it too); right after work, in batches, since more
   * usually follow (one query when nothing is left, two for up to `batch` records). */
  bool was_busy[SRC_COUNT];
  bool busy_streak;
};

static long clamp_ms(long v, long lo, long hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

static void pacer_init(struct pacer *p, const struct afs_broker *b) {
  memset(p, 0, sizeof *p);
  p->delay = b->poll_min_ms;
  p->stale_every_ms = clamp_ms(b->cfg.stale_upload_seconds * 250L, 500, 30000);
  /* Purging every quarter of call_keep_seconds keeps an answered call at most about 25%
   * past that age, with one collection scan per interval. */
  p->purge_every_ms = clamp_ms(b->cfg.call_keep_seconds * 250L, 1000, 600000);
  p->cold_ms = b->poll_max_ms > COLD_MS ? b->poll_max_ms : COLD_MS;
  p->next_call_purge = afs_now_ms() + p->purge_every_ms / 4;
  /* Not at start: a broker that starts while S3 is slow begins with the records. */
  p->next_mp_sweep = afs_now_ms() + b->cfg.multipart_sweep_seconds * 1000L;
}

/* Whether source s is polled in this round (side_due: calls are due). */
static bool source_due(const struct pacer *p, enum src s, bool side_due) {
  int64_t now = afs_now_ms();
  switch (s) {
  case SRC_STALE:
    return now >= p->next_stale;
  case SRC_CALL:
    return side_due;
  case SRC_DELETED:
    return now >= p->next_deleted;
  case SRC_UPLOADED:
    return p->was_busy[s] || now >= p->next_uploaded;
  default:
    return true;
  }
}

/* Books a poll of source s that claimed n records (-1: failed), started at c0, as a
 * single-record poll or a batch. */
static void source_polled(struct pacer *p, enum src s, int n, int64_t c0, bool single) {
  int64_t t = afs_now_ms();
  /* A quiet source's poll that claimed its record looks for more next time; a busy one
   * goes quiet again once it finds at most one (each candidate costs a query plus a
   * claim, while a quiet poll claims its record in one command). */
  p->was_busy[s] = single ? n > 0 : n > 1;
  if (s == SRC_PENDING) {
    p->claim_cost = t - c0;
    p->busy_streak = n > 0;
  } else if (s == SRC_UPLOADED) {
    p->claim_cost += t - c0;
    p->busy_streak = p->busy_streak || n > 0;
    int64_t quarter = (t - p->last_work) / 4;
    if (quarter < HOT_CAP_MS)
      quarter = HOT_CAP_MS;
    p->next_uploaded = t + (quarter > p->cold_ms ? p->cold_ms : quarter);
  } else if (s == SRC_DELETED && n >= 0) {
    p->next_deleted = t + (n > 0 ? 0 : DELETED_POLL_MS);
  } else if (s == SRC_STALE && n >= 0) {
    p->next_stale = t + p->stale_every_ms;
  }
}

/* True while busy and the queue has no room for a batch, until as long as the last
 * claim took has passed: every poll is a query per source, and a database without the
 * indexes (or unable to use them for these filters) scans the collection for each, so
 * the dispatcher never spends more than about half the time scanning. */
static bool hold_back(const struct pacer *p, const struct afs_broker *b, size_t room) {
  int64_t gap = p->claim_cost > 50 ? p->claim_cost : 50;
  return p->busy_streak && room < (size_t)b->batch && afs_now_ms() - p->last_claim < gap;
}

/* One round over the sources that are due: claims and queues their records. *found
 * what was claimed, *full whether the queue filled; false (err) when MongoDB failed. */
static bool poll_round(struct ctx *x, mongoc_client_t *c, struct pacer *p, bool side_due,
                       int *found, bool *full, struct afs_error *err) {
  *found = 0;
  *full = false;
  for (int s = 0; s < SRC_COUNT; s++) {
    if (!source_due(p, (enum src)s, side_due))
      continue;
    size_t room = q_room(&x->q);
    if (room == 0) {
      *full = true;
      return true;
    }
    int64_t c0 = afs_now_ms();
    bool single = !p->was_busy[s];
    int n = claim_source(x, c, (enum src)s, room, single, err);
    source_polled(p, (enum src)s, n, c0, single);
    if (n < 0)
      return false;
    *found += n;
  }
  return true;
}

/* The wait before the next round: backing off while MongoDB fails (100 ms doubling to
 * 2 s), the minimum right after work, else doubling while idle up to HOT_CAP_MS for
 * HOT_MS after the last work and poll_max_ms after that. */
static void pace(struct pacer *p, const struct afs_broker *b, bool failed, bool worked,
                 int64_t cycle0, const struct afs_error *err) {
  int64_t now = afs_now_ms();
  if (failed) {
    if (!p->down_since || now - p->last_down_log > 30000) {
      afs_warn("%s; backing off", err->msg);
      p->last_down_log = now;
    }
    if (!p->down_since)
      p->down_since = now;
    p->delay = clamp_ms(p->delay < 100 ? 100 : p->delay * 2, 100, 2000);
    return;
  }
  if (p->down_since) {
    afs_info("MongoDB reachable again after %lld ms", (long long)(now - p->down_since));
    p->down_since = 0;
  }
  if (worked) {
    p->delay = b->poll_min_ms;
    p->last_work = now;
    return;
  }
  long cap =
      now - p->last_work < HOT_MS && HOT_CAP_MS < b->poll_max_ms ? HOT_CAP_MS : b->poll_max_ms;
  if ((p->delay *= 2) > cap)
    p->delay = cap;
  /* Where every poll is a collection scan, idle polling must not turn into scanning back
   * to back: wait at least as long as this poll took. */
  if (p->delay < now - cycle0)
    p->delay = now - cycle0 < b->poll_max_ms ? now - cycle0 : b->poll_max_ms;
  if (p->delay < b->poll_min_ms)
    p->delay = b->poll_min_ms;
}

/* Waits up to ms for room in the queue (or stop). */
static void wait_room(struct ctx *x, long ms) {
  pthread_mutex_lock(&x->q.lock);
  if (!atomic_load(&x->b->stop))
    afs_cond_timedwait_ms(&x->q.room, &x->q.lock, ms);
  pthread_mutex_unlock(&x->q.lock);
}

/* The dispatcher's loop, until stop. */
static void dispatch_loop(struct ctx *x) {
  struct afs_broker *b = x->b;
  mongoc_client_t *c = afs_db_pop(&b->db);
  struct pacer p;
  pacer_init(&p, b);
  while (!atomic_load(&b->stop)) {
    if (hold_back(&p, b, q_room(&x->q))) {
      wait_room(x, 10);
      continue;
    }
    if (b->cfg.call_keep_seconds > 0 && afs_now_ms() >= p.next_call_purge) {
      afs_calls_purge(b, c); /* one delete per interval; failures left to the next */
      p.next_call_purge = afs_now_ms() + p.purge_every_ms;
    }
    if (b->sign_key && afs_now_ms() >= p.next_scrub) {
      afs_assets_scrub(b, c, &p.scrub_from, SCRUB_BATCH); /* tampered assets restored */
      p.next_scrub = afs_now_ms() + SCRUB_EVERY_MS;
    }
    if (b->cfg.multipart_sweep_seconds > 0 && afs_now_ms() >= p.next_mp_sweep) {
      afs_mp_sweep(b, c); /* orphaned multipart uploads aborted */
      p.next_mp_sweep = afs_now_ms() + b->cfg.multipart_sweep_seconds * 1000L;
    }
    bool side_due = afs_now_ms() >= p.next_side;
    if (side_due)
      afs_authz_reload(b, false); /* a changed clients_file applies within a second or so */
    int64_t cycle0 = afs_now_ms();
    int found;
    bool full;
    struct afs_error err = {0};
    bool ok = poll_round(x, c, &p, side_due, &found, &full, &err);
    p.last_claim = afs_now_ms();
    /* Function calls (URL refreshes, rare): every cold_ms, also during a burst. */
    if (side_due && ok)
      p.next_side = p.last_claim + p.cold_ms;
    pace(&p, b, !ok, found || full, cycle0, &err);
    wait_room(x, p.delay);
  }
  if (p.scrub_from.value_type != BSON_TYPE_EOD)
    bson_value_destroy(&p.scrub_from);
  afs_db_push(&b->db, c);
}

int afs_broker_run(struct afs_broker *b) {
  struct ctx x = {.b = b};
  struct queue *q = &x.q;
  pthread_mutex_init(&q->lock, NULL);
  afs_cond_init(&q->nonempty);
  afs_cond_init(&q->room);
  /* Batches amortize the claim's queries; a record that waits too long in the queue is
   * given back (see worker_main). */
  q->cap = (size_t)b->workers + (size_t)b->batch;
  q->items = afs_xcalloc(q->cap, sizeof *q->items);
  q->claiming = afs_xcalloc((size_t)b->workers, sizeof *q->claiming); /* EOD: none */
  q->held = afs_xcalloc((size_t)b->workers, sizeof *q->held);
  pthread_t *th = afs_xcalloc((size_t)b->workers, sizeof *th);
  int started = 0;
  for (; started < b->workers; started++)
    if (pthread_create(&th[started], NULL, worker_main, &x)) {
      afs_err("cannot start worker thread");
      atomic_store(&b->stop, true);
      break;
    }
  dispatch_loop(&x);
  afs_info("stopping: finishing records in hand");
  pthread_mutex_lock(&q->lock);
  pthread_cond_broadcast(&q->nonempty);
  pthread_mutex_unlock(&q->lock);
  for (int i = 0; i < started; i++)
    pthread_join(th[i], NULL);
  release_queued(&x);
  free(th);
  free(q->items);
  free(q->claiming);
  free(q->held);
  for (size_t i = 0; i < RECENT_MAX; i++)
    bson_value_destroy(&q->recent[i]);
  pthread_cond_destroy(&q->nonempty);
  pthread_cond_destroy(&q->room);
  pthread_mutex_destroy(&q->lock);
  afs_s3_thread_cleanup();
  return 0;
}
