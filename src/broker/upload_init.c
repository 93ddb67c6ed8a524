/* pending -> initialized: validate the client's record, build the Cosync keys, claim
 * them (key_claims.c), presign the write and read URLs. Anything wrong with the record
 * becomes status "error" with a reason; nothing is signed for a record that fails a
 * check.
 *
 * Keys: the first candidate's timestamp comes from the record (key_timestamp); when
 * another record holds a claim on one of its keys, or (keys from before claims) another
 * record's object lies there, the next timestamp is tried, in an order fixed by the
 * record, so planning it again meets its own claims (afs_naming_plan_unique).
 *
 * The dispatcher hands pending records over as its poll read them, unclaimed (token
 * NULL): initializing is deterministic (keys from the record and its claims, S2 checks
 * by HEAD) and its one write is conditional on the record still being pending and
 * unleased, so two brokers initializing one record is harmless (the claims of one
 * record are its own for both), and a record costs that write plus the claims' insert. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/cosync.h"
#include "assetfs/hash.h"
#include "assetfs/lease.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "broker.h"
#include "bstore.h"

#define CONTENT_TYPE_MAX 255

static bool check_content_type(const char *ct, struct afs_error *err) {
  if (!ct)
    return true;
  size_t n = strlen(ct);
  if (n == 0 || n > CONTENT_TYPE_MAX)
    return afs_error_set(err, EINVAL, "contentType must be 1..%d bytes", CONTENT_TYPE_MAX);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)ct[i] < 0x20 || (unsigned char)ct[i] > 0x7e)
      return afs_error_set(err, EINVAL, "contentType has a character outside printable ASCII");
  if (!strchr(ct, '/'))
    return afs_error_set(err, EINVAL, "contentType is not of the form type/subtype");
  return true;
}

/* Validates expirationHours; *hours gets the value to use, *defaulted whether the field
 * was missing. */
static bool check_hours(const struct afs_record *r, double *hours, bool *defaulted,
                        struct afs_error *err) {
  bool has = r->hours.has;
  double h = r->hours.v;
  *defaulted = !has;
  if (!has) {
    *hours = AFS_READ_HOURS_DEFAULT;
    return true;
  }
  if (h < 0)
    return afs_error_set(err, EINVAL, "expirationHours is negative");
  if (h > AFS_READ_HOURS_ABSURD)
    return afs_error_set(err, EINVAL, "expirationHours %.0f is absurd (URLs last at most %.0f h)",
                         h, AFS_READ_HOURS_CAP);
  *hours = h;
  return true;
}

/* The "-<ms>" in the keys comes from the record itself, not the clock: initializing the
 * same record twice gives the same keys. That makes the transition idempotent, which
 * matters where conditional updates are not atomic (FerretDB 1.24 on SQLite loses
 * concurrent updates of one document, so a record can come back "pending" after it was
 * initialized and a client already uploaded to its URLs). ObjectIds give their creation
 * second plus a per-id millisecond part; other ids createdAt or a hash. This is only
 * the first candidate: another record may hold its keys (key_claims.c), and planning
 * walks on from there the same way every time (afs_naming_plan_unique). */
static int64_t key_timestamp(const struct afs_record *r) {
  const bson_value_t *id = &r->id;
  if (id->value_type == BSON_TYPE_OID)
    return afs_naming_oid_ts(id->value.v_oid.bytes);
  if (r->created.has && !r->created.from_number && r->created.ms > 0) /* keys are stored: */
    return r->created.ms; /* the rule that made them stays (a BSON date only) */
  char buf[80];
  const char *s = afs_rec_id_str(id, buf, sizeof buf);
  uint64_t h = afs_hash_fnv1a64_str(s); /* persisted in keys: see hash.h */
  return 1000000000000LL + (int64_t)(h % 1000000000000ULL);
}

/* A string field the record must have, non-empty. */
static bool required(const char *v, const char *field, struct afs_error *err) {
  return (v && *v) || afs_error_set(err, EINVAL, "%s is missing", field);
}

bool afs_upload_plan(const struct afs_record *r, struct afs_upload_plan *plan,
                     struct afs_error *err) {
  memset(plan, 0, sizeof *plan);
  plan->rec = r;
  plan->id = &r->id;
  plan->hours = AFS_READ_HOURS_DEFAULT;
  plan->uid = r->uid;
  plan->file_path = r->file_path;
  plan->content_type = r->content_type;
  plan->partition = r->partition;
  plan->asset_partition = r->asset_partition;
  if (r->id.value_type == BSON_TYPE_EOD)
    return afs_error_set(err, EINVAL, "no _id");
  /* Each field's own rule first (type, size, encoding), then what the broker needs. */
  if (!afs_record_check(r, AFS_UPLOAD_FIELDS, err) || !required(r->uid, AFS_F_UID, err) ||
      !afs_uid_check(r->uid, strlen(r->uid), err) ||
      !required(r->file_path, AFS_F_FILE_PATH, err) ||
      !afs_filepath_check(r->file_path, strlen(r->file_path), err) ||
      !check_content_type(r->content_type, err) ||
      !check_hours(r, &plan->hours, &plan->hours_defaulted, err))
    return false;
  if ((!plan->partition || !*plan->partition) &&
      (!plan->asset_partition || !*plan->asset_partition))
    return afs_error_set(err, EINVAL, "neither _partition nor assetPartition is set");
  /* A time far ahead is a client clock that is wrong: its keys would carry that future
   * time. Past times are fine: a broker outage legitimately leaves old pending records,
   * and they must still initialize when it is back. */
  if (plan->id->value_type == BSON_TYPE_OID) {
    int64_t ahead = afs_naming_oid_ts(plan->id->value.v_oid.bytes) / 1000 * 1000 - afs_now_ms();
    if (ahead > AFS_ID_AHEAD_MAX_MS)
      return afs_error_set(err, EINVAL,
                           "the record's _id carries a time %lld minutes ahead of the "
                           "broker's clock; is the client's clock wrong?",
                           (long long)(ahead / 60000));
  }
  return afs_naming_make_keys(plan->uid, plan->file_path, plan->content_type, plan->hours == 0,
                              key_timestamp(r), &plan->keys, err);
}

void afs_upload_plan_free(struct afs_upload_plan *plan) {
  afs_keys_free(&plan->keys);
}

/* True if we initialized this record before with these keys (a valid seal over the same
 * path): re-initializing it, e.g. after a lost update put it back to "pending", must
 * give the same URLs even though the client may have uploaded already. */
static bool already_ours(const struct afs_broker *b, const struct afs_record *r, const char *key) {
  const char *path = NULL;
  return afs_broker_record_path(r, &path) == 1 && !strcmp(path, key) && afs_broker_seal_ok(b, r);
}

/* 1 if a record other than `id` (upload or asset) has one of the plan's keys as its
 * `path`, or is the original whose cut our original's key would be (a key
 * "<stem>-small-<ts>.jpg" is also the original key of "<stem>-small.jpg"); 0 if none;
 * -1 on a MongoDB error. Runs only when an object already exists at a key, so its
 * queries (not pushed down by FerretDB) are rare. */
static int keys_claimed(struct afs_bstore *st, const bson_value_t *id, int64_t ts,
                        const struct afs_keys *k) {
  static const char *const tags[] = {"-small", "-medium", "-large", "-videopreview"};
  char tsbuf[32], *parent = NULL;
  const char *orig = k->key[AFS_PART_ORIGINAL];
  snprintf(tsbuf, sizeof tsbuf, "-%lld", (long long)ts);
  const char *at = NULL;
  for (const char *p = strstr(orig, tsbuf); p; p = strstr(p + 1, tsbuf))
    at = p;
  for (size_t t = 0; at && t < sizeof tags / sizeof tags[0] && !parent; t++) {
    size_t tl = strlen(tags[t]), sl = (size_t)(at - orig);
    if (sl > tl && !strncmp(at - tl, tags[t], tl))
      afs_xasprintf(&parent, "%.*s%s", (int)(sl - tl), orig, tsbuf);
  }
  const char *paths[AFS_PART_COUNT];
  size_t n = 0;
  for (int p = 0; p < AFS_PART_COUNT; p++)
    if (k->key[p])
      paths[n++] = k->key[p];
  int rc = 0;
  static const enum afs_bcoll colls[] = {AFS_BC_UPLOAD, AFS_BC_ASSET};
  for (size_t i = 0; i < 2 && rc == 0; i++) {
    struct afs_error err = {0};
    rc = st->ops->path_used(st->ctx, colls[i], id, paths, n, parent, &err);
    if (rc < 0)
      afs_warn("checking who uses the keys: %s", err.msg);
  }
  free(parent);
  return rc;
}

/* 1 when the plan's keys may be signed for PUT: no object at any of them, or objects
 * that no other record accounts for (this record's own, uploaded through URLs of an
 * initialization that a lost update erased: keys are deterministic). 0 (err says
 * which key) when another record's object is there (a key from before claims: plan
 * again); -1 (err) when S3 or MongoDB could not be asked. */
static int keys_free(struct afs_bstore *st, const bson_value_t *id, int64_t ts,
                     const struct afs_keys *k, const char *ids, struct afs_error *err) {
  const char *taken = NULL;
  for (int p = 0; p < AFS_PART_COUNT && !taken; p++) {
    struct afs_s3_object_info info;
    memset(&info, 0, sizeof info);
    if (!k->key[p])
      continue;
    if (!st->ops->obj_head(st->ctx, k->key[p], &info, err))
      return -1;
    if (info.exists)
      taken = k->key[p];
  }
  if (!taken)
    return 1;
  switch (keys_claimed(st, id, ts, k)) {
  case 0:
    afs_info("upload %s: objects already at its keys and no other record uses them (an "
             "initialization lost to a concurrent update); initializing again",
             ids);
    return 1;
  case -1:
    afs_error_set(err, AFS_E_TRANSIENT, "MongoDB could not be asked who uses %s", taken);
    return -1;
  }
  afs_info("upload %s: an object of another record already exists at %s; trying the next "
           "key",
           ids, taken);
  afs_error_set(err, EEXIST, "an object of another record already exists at %s", taken);
  return 0;
}

/* Planning context: the record and whether a key already carrying an object may be
 * this record's own without asking (its sealed path). */
struct plan_ctx {
  struct afs_broker *b;
  struct afs_bstore *st;
  const struct afs_record *rec;
  const char *ids;
};

/* afs_key_try_fn: claim the candidate's keys, then (unless it is the path we sealed for
 * this record) make sure no object of a record from before claims lies there. */
static int try_keys(void *vctx, const struct afs_keys *k, int64_t ts, struct afs_error *err) {
  struct plan_ctx *x = vctx;
  const bson_value_t *id = &x->rec->id;
  int rc = afs_key_claims_take(x->st, id, k, err);
  if (rc != 1)
    return rc;
  if (already_ours(x->b, x->rec, k->key[AFS_PART_ORIGINAL]))
    return 1;
  /* The keys' timestamp comes from the client-chosen _id, so a client could aim a fresh
   * record at someone's existing key; never hand out a PUT over an object. */
  rc = keys_free(x->st, id, ts, k, x->ids, err);
  if (rc == 0)
    afs_key_claims_release(x->st, id, k, NULL);
  return rc;
}

/* Index of the candidate whose original key is the record's sealed path, so that
 * planning a record we initialized before starts at the keys its client holds URLs for
 * even if an earlier candidate was freed since; 0 without one. */
static int sealed_candidate(struct afs_broker *b, const struct afs_upload_plan *plan, int64_t ts0) {
  const char *path = NULL;
  if (afs_broker_record_path(plan->rec, &path) != 1 || !afs_broker_seal_ok(b, plan->rec))
    return 0;
  for (int i = 0; i < AFS_KEY_ATTEMPTS; i++) {
    struct afs_keys k;
    if (!afs_naming_make_keys(plan->uid, plan->file_path, plan->content_type, plan->hours == 0,
                              ts0 + i, &k, NULL))
      return 0;
    bool hit = !strcmp(k.key[AFS_PART_ORIGINAL], path);
    afs_keys_free(&k);
    if (hit)
      return i;
  }
  return 0;
}

/* Replaces plan->keys by keys claimed for the record. 1, 0 (err), -1 (err) as
 * afs_naming_plan_unique. */
static int plan_unique(struct afs_broker *b, struct afs_bstore *st, struct afs_upload_plan *plan,
                       const char *ids, struct afs_error *err) {
  struct plan_ctx x = {b, st, plan->rec, ids};
  int64_t ts0 = key_timestamp(plan->rec);
  afs_keys_free(&plan->keys);
  return afs_naming_plan_unique(plan->uid, plan->file_path, plan->content_type, plan->hours == 0,
                                ts0, sealed_candidate(b, plan, ts0), try_keys, &x, &plan->keys,
                                err);
}

int afs_upload_plan_claimed(struct afs_broker *b, struct afs_bstore *st, const struct afs_record *r,
                            struct afs_upload_plan *plan, struct afs_error *err) {
  char ids[80], **held = NULL;
  size_t nheld = 0;
  if (!afs_upload_plan(r, plan, err))
    return 0;
  afs_rec_id_str(plan->id, ids, sizeof ids);
  int rc = afs_key_claims_held(st, plan->id, &held, &nheld, err);
  if (rc < 0)
    return -1;
  /* The first candidate whose every key this record holds is the one a lost
   * initialization handed out: the client's PUTs went there. */
  int64_t ts0 = key_timestamp(r);
  for (int i = 0; rc == 1 && i < AFS_KEY_ATTEMPTS; i++) {
    struct afs_keys k;
    if (!afs_naming_make_keys(plan->uid, plan->file_path, plan->content_type, plan->hours == 0,
                              ts0 + i, &k, err))
      break;
    bool all = true;
    for (int p = 0; p < AFS_PART_COUNT && all; p++) {
      bool found = !k.key[p];
      for (size_t j = 0; j < nheld && !found; j++)
        found = !strcmp(held[j], k.key[p]);
      all = found;
    }
    if (all) {
      afs_keys_free(&plan->keys);
      plan->keys = k;
      afs_key_claims_free(held, nheld);
      return 1;
    }
    afs_keys_free(&k);
  }
  afs_key_claims_free(held, nheld);
  return plan_unique(b, st, plan, ids, err);
}

enum afs_outcome afs_upload_init(struct afs_broker *b, struct afs_bstore *st,
                                 const struct afs_record *r, const char *token) {
  enum afs_outcome out = AFS_DONE;
  struct afs_error err = {0};
  struct afs_upload_plan plan;
  char *wurl[AFS_PART_COUNT] = {0}, *rurl[AFS_PART_COUNT] = {0};
  bson_t set = BSON_INITIALIZER, unset = BSON_INITIALIZER;
  char ids[80];
  if (!afs_upload_plan(r, &plan, &err)) {
    if (r->id.value_type != BSON_TYPE_EOD)
      out = afs_upload_fail(st, &r->id, token, err.msg);
    goto done;
  }
  afs_rec_id_str(&r->id, ids, sizeof ids);
  switch (afs_authz_upload(b, st, r, true, &err)) {
  case 0:
    out = afs_upload_fail(st, &r->id, token, err.msg);
    goto done;
  case -1:
    afs_transient("upload %s: cannot check for its asset: %s; will retry", ids, err.msg);
    st->ops->release(st->ctx, AFS_BC_UPLOAD, &r->id, token, AFS_UPLOAD_PENDING, AFS_RETRY_MS);
    out = AFS_RETRY;
    goto done;
  }
  afs_broker_test_pause("init_claimed", &r->id);
  int64_t t_head = afs_now_ms();
  switch (plan_unique(b, st, &plan, ids, &err)) {
  case 0:
    out = afs_upload_fail(st, &r->id, token, err.msg);
    goto done;
  case -1:
    afs_transient("upload %s: cannot claim or check its keys: %s; will retry", ids, err.msg);
    st->ops->release(st->ctx, AFS_BC_UPLOAD, &r->id, token, AFS_UPLOAD_PENDING, AFS_RETRY_MS);
    out = AFS_RETRY;
    goto done;
  }
  int64_t t_sign = afs_now_ms();
  const char *ct = plan.content_type;
  enum afs_kind kind = afs_content_kind(ct);
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    if (!plan.keys.key[p]) {
      BSON_APPEND_UTF8(&unset, afs_write_url_field[p], "");
      BSON_APPEND_UTF8(&unset, afs_read_url_field[p], "");
      continue;
    }
    const char *pct = ct ? afs_part_content_type(kind, (enum afs_part)p, ct) : NULL;
    wurl[p] = afs_broker_write_url(b, plan.keys.key[p], pct, &err);
    rurl[p] = wurl[p] ? afs_broker_read_url(b, plan.keys.key[p], plan.hours, &err) : NULL;
    if (!wurl[p] || !rurl[p]) {
      afs_err("upload %s: signing failed: %s", ids, err.msg);
      out = afs_upload_fail(st, &r->id, token, "the broker could not sign the URLs");
      goto done;
    }
    BSON_APPEND_UTF8(&set, afs_write_url_field[p], wurl[p]);
    BSON_APPEND_UTF8(&set, afs_read_url_field[p], rurl[p]);
  }
  int64_t now = afs_now_ms();
  char seal[65];
  const char *path = plan.keys.key[AFS_PART_ORIGINAL];
  afs_broker_seal(b, &r->id, plan.uid, path, ct, plan.hours, seal);
  BSON_APPEND_UTF8(&set, AFS_F_STATUS, AFS_UPLOAD_INITIALIZED);
  BSON_APPEND_UTF8(&set, AFS_F_PATH, path);
  BSON_APPEND_UTF8(&set, AFS_F_SEAL, seal);
  if (plan.hours_defaulted)
    BSON_APPEND_DOUBLE(&set, AFS_F_HOURS, plan.hours);
  if (plan.hours == 0)
    BSON_APPEND_UTF8(&unset, AFS_F_EXPIRATION, "");
  else
    BSON_APPEND_DATE_TIME(&set, AFS_F_EXPIRATION, now + afs_broker_read_seconds(plan.hours) * 1000);
  /* The version's place among other saves of the same file: the broker's clock, never
   * the client-chosen _id (upload_supersede.c). */
  BSON_APPEND_DATE_TIME(&set, AFS_F_INITIALIZED_AT, now);
  if (b->authz) {
    char mark[65];
    afs_broker_init_mark(b, &r->id, now, mark);
    BSON_APPEND_UTF8(&set, AFS_F_INIT_MARK, mark);
  }
  BSON_APPEND_DATE_TIME(&set, AFS_F_UPDATED, now);
  BSON_APPEND_UTF8(&unset, AFS_F_ERROR, "");
  int64_t t_finish = afs_now_ms();
  /* Only a record still pending: a duplicate claim or read (a stale one) of a record
   * whose client has marked it uploaded since must not put it back to initialized.
   * Without a claim (token NULL) also only while no other broker holds a lease on it. */
  int rc = st->ops->finish(st->ctx, AFS_BC_UPLOAD, &r->id, token, AFS_UPLOAD_PENDING, &set, &unset,
                           NULL, &err);
  int64_t born = r->created.ms;
  bool has_born = r->created.has;
  afs_debug("upload %s init: %lld ms after createdAt; keys %lld ms, sign %lld ms, finish %lld "
            "ms%s",
            ids, has_born ? (long long)(t_head - born) : -1LL, (long long)(t_sign - t_head),
            (long long)(t_finish - t_sign), (long long)(afs_now_ms() - t_finish),
            token ? "" : " (unclaimed)");
  if (rc < 0) {
    afs_warn("upload %s: %s", ids, err.msg);
    out = AFS_RETRY;
  } else if (rc == 0 && !token) {
    /* Read without a claim: another broker (or an earlier read of ours) got there first,
     * or a broker holds it (e.g. abandoning it as stale). Our keys were the same. */
    afs_info("upload %s: no longer pending, or held by another broker, when its "
             "initialization finished; left as it is",
             ids);
  } else if (rc == 0) {
    afs_warn("upload %s: lease lost or no longer pending before it was initialized; left "
             "as it is",
             ids);
  } else {
    afs_info("upload %s initialized: %s (%s)", ids, path, ct ? ct : "no content type");
  }
done:
  for (int p = 0; p < AFS_PART_COUNT; p++) {
    free(wurl[p]);
    free(rurl[p]);
  }
  afs_upload_plan_free(&plan);
  bson_destroy(&set);
  bson_destroy(&unset);
  return out;
}
