/* The catalog's MongoDB side: every CosyncAsset query (a directory's subtree, one file by
 * filePath, one record by _id, whether a partition exists, the partition list), the
 * breaker that makes queries fail fast while MongoDB is down, and how records become
 * names: a filePath made relative, a name derived from the key when it has none, and
 * clashes resolved (the newest real filePath shows, derived names get an id suffix).
 *
 * Queries run with no lock held; their results are installed in the tree
 * (catalog_tree.c) under cat->mu in one critical section.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/alloc.h"
#include "assetfs/auth.h"
#include "assetfs/cosync.h"
#include "assetfs/log.h"
#include "assetfs/records.h"
#include "assetfs/strutil.h"
#include "catalog/catalog_int.h"

void afs_cat_strv_free(char **v) {
  if (!v)
    return;
  for (char **s = v; *s; s++)
    free(*s);
  free(v);
}

/* ---- queries (no lock held) ---- */

typedef void (*each_doc_fn)(void *ctx, const bson_t *doc);

#define DB_BACKOFF_MS 3000

bool afs_cat_db_gate(struct afs_catalog *cat, struct afs_error *err) {
  int64_t until = __atomic_load_n(&cat->db_down_until_ms, __ATOMIC_RELAXED);
  if (until && (int64_t)(afs_cat_now() * 1000) < until)
    return afs_error_set(err, EIO, "MongoDB is unreachable (failed moments ago)");
  return true;
}

void afs_cat_db_result(struct afs_catalog *cat, bool ok, const struct afs_error *err) {
  int64_t v = 0;
  /* Only connection trouble trips the breaker, not a bad query. */
  if (!ok && err && err->code == AFS_E_UNREACHABLE)
    v = (int64_t)(afs_cat_now() * 1000) + DB_BACKOFF_MS;
  if (ok || v)
    __atomic_store_n(&cat->db_down_until_ms, v, __ATOMIC_RELAXED);
}

static const char *const kind_name[AFS_CATQ_COUNT] = {"file",      "list",     "id",
                                                      "partition", "distinct", "call"};

static bool run_find(struct afs_catalog *cat, enum afs_catq kind, const bson_t *filter,
                     const bson_t *opts, each_doc_fn each, void *ctx, struct afs_error *err) {
  bson_error_t berr;
  const bson_t *doc;
  if (!afs_cat_db_gate(cat, err))
    return false;
  afs_cat_count(cat, kind);
  double t0 = afs_cat_now();
  mongoc_client_t *c = afs_db_pop(cat->db);
  if (!c)
    return afs_error_set(err, EIO, "no MongoDB client available");
  mongoc_collection_t *coll = afs_db_coll(cat->db, c, AFS_COLL_ASSET);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  while (mongoc_cursor_next(cur, &doc))
    each(ctx, doc);
  bool ok = !mongoc_cursor_error(cur, &berr);
  mongoc_cursor_destroy(cur);
  mongoc_collection_destroy(coll);
  afs_db_push(cat->db, c);
  if (!ok) {
    afs_db_error(err, &berr, "CosyncAsset query");
    afs_cat_db_result(cat, false, err);
    err->code = EIO;
    return false;
  }
  afs_cat_db_result(cat, true, NULL);
  afs_debug("CosyncAsset query (%s) answered in %.0f ms", kind_name[kind],
            (afs_cat_now() - t0) * 1000);
  return true;
}

struct asset_vec {
  struct afs_catalog *cat;
  struct afs_asset *v;
  size_t n, cap;
};

/* broker_key: an asset whose seal does not verify was written by someone other than the
 * broker. It is hidden (never listed, never fetched) and said (the first few, then every
 * hundredth: a listing may meet many). */
#define SEALED_OK_MAX 200000 /* digests remembered: 100 bytes each with the map's entry */

static bool seal_verifies(struct afs_catalog *cat, const bson_t *doc) {
  uint8_t d[32];
  char hex[65];
  if (!afs_auth_doc_digest(AFS_REQ_ASSET, doc, d))
    return false;
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
  pthread_mutex_lock(&cat->seal_mu);
  bool known = afs_smap_get(&cat->sealed_ok, hex) != NULL;
  pthread_mutex_unlock(&cat->seal_mu);
  if (known)
    return true;
  if (!afs_auth_doc_signed_by(cat->broker_pub, AFS_REQ_ASSET, doc))
    return false;
  pthread_mutex_lock(&cat->seal_mu);
  if (afs_smap_count(&cat->sealed_ok) >= SEALED_OK_MAX)
    afs_smap_clear(&cat->sealed_ok, NULL);
  afs_smap_put(&cat->sealed_ok, hex, (void *)1);
  pthread_mutex_unlock(&cat->seal_mu);
  return true;
}

static bool sealed(struct afs_catalog *cat, const bson_t *doc) {
  if (!cat->has_broker_pub || seal_verifies(cat, doc))
    return true;
  long n = atomic_fetch_add(&cat->n_unsealed, 1);
  if (n < 5 || n % 100 == 0) {
    bson_value_t id;
    char ids[80] = "(no _id)";
    if (afs_rec_id(doc, &id)) {
      afs_rec_id_str(&id, ids, sizeof ids);
      bson_value_destroy(&id);
    }
    afs_warn("asset %s hidden: its seal does not verify with broker_key (changed by someone "
             "other than the broker, or made before auth=required); %ld so far",
             ids, n + 1);
  }
  return false;
}

static void collect(void *ctx, const bson_t *doc) {
  struct asset_vec *av = ctx;
  struct afs_asset a;
  if (!sealed(av->cat, doc) || !afs_asset_from_bson(doc, &a))
    return;
  if (av->n == av->cap) {
    av->cap = av->cap ? av->cap * 2 : 64;
    av->v = afs_xrealloc(av->v, av->cap * sizeof *av->v);
  }
  av->v[av->n++] = a;
}

static void vec_free(struct asset_vec *av) {
  for (size_t i = 0; i < av->n; i++)
    afs_asset_free(&av->v[i]);
  free(av->v);
}

int afs_cat_fetch_by_id(struct afs_catalog *cat, const char *id, struct afs_asset *out,
                        struct afs_error *err) {
  bson_oid_t oid;
  if (!bson_oid_is_valid(id, strlen(id))) {
    afs_error_set(err, EINVAL, "bad asset id '%s'", id);
    return -1;
  }
  bson_oid_init_from_string(&oid, id);
  bson_t *q = BCON_NEW(AFS_F_ID, BCON_OID(&oid));
  struct asset_vec av = {.cat = cat};
  bool ok = run_find(cat, AFS_CATQ_ID, q, NULL, collect, &av, err);
  bson_destroy(q);
  int ret = !ok ? -1 : av.n > 0 ? 1 : 0;
  if (ret == 1) {
    *out = av.v[0];
    memset(&av.v[0], 0, sizeof av.v[0]);
  }
  vec_free(&av);
  return ret;
}

/* Turns a record's filePath into a usable relative path, or derives one (sets
 * derived_name). False if the asset cannot be shown. */
bool afs_cat_place(struct afs_asset *a) {
  const char *fp = a->file_path;
  while (*fp == '/')
    fp++;
  if (*fp && afs_filepath_check(fp, strlen(fp), NULL)) {
    if (fp != a->file_path) {
      char *t = afs_xstrdup(fp);
      free(a->file_path);
      a->file_path = t;
    }
    a->derived_name = false;
    return true;
  }
  if (*a->file_path)
    afs_debug("asset %s: unusable filePath, deriving a name from its key", a->id);
  char *d = afs_naming_display_name(a->path, a->uid);
  if (!d)
    return false;
  free(a->file_path);
  a->file_path = d;
  a->derived_name = true;
  return true;
}

/* Order for clash resolution: by path; a real filePath first (newest first, the others
 * are about to be superseded); then derived names, oldest first. */
static int clash_cmp(const void *x, const void *y) {
  const struct afs_asset *a = x, *b = y;
  int c = strcmp(a->file_path, b->file_path);
  if (c)
    return c;
  if (a->derived_name != b->derived_name)
    return a->derived_name ? 1 : -1;
  if (a->created_ms != b->created_ms) {
    bool older_first = a->derived_name;
    return (a->created_ms < b->created_ms) == older_first ? -1 : 1;
  }
  return strcmp(a->id, b->id);
}

/* "dir/name.ext" -> "dir/name (abcdef).ext" with the last 6 hex digits of the id. */
static char *suffixed(const char *rel, const char *id) {
  const char *base = strrchr(rel, '/');
  base = base ? base + 1 : rel;
  const char *dot = strrchr(base, '.');
  if (!dot || dot == base)
    dot = rel + strlen(rel);
  size_t idl = strlen(id);
  const char *tail = id + (idl > 6 ? idl - 6 : 0);
  size_t n = strlen(rel) + 16;
  char *out = afs_xmalloc(n);
  snprintf(out, n, "%.*s (%s)%s", (int)(dot - rel), rel, tail, dot);
  return out;
}

#define LIST_BATCH 20000 /* records per batch of a listing (the server caps at 16 MiB) */

/* One query for the subtree under dirpath; replaces it in the cache. Returns 1 when
 * dirpath is a directory, 0 when it is not, -1 on error. */
int afs_cat_list_query(struct afs_catalog *cat, const char *partition, const char *dirpath,
                       struct afs_error *err) {
  bson_t q = BSON_INITIALIZER;
  BSON_APPEND_UTF8(&q, AFS_F_PARTITION, partition);
  BSON_APPEND_UTF8(&q, AFS_F_STATUS, AFS_ASSET_ACTIVE);
  char *prefix = NULL;
  if (*dirpath) {
    /* The subtree, plus every record without filePath: their derived names may fall
     * anywhere, and clashes need all of them. */
    size_t pl = strlen(dirpath) + 2;
    prefix = afs_xmalloc(pl);
    snprintf(prefix, pl, "%s/", dirpath);
    char *quoted = afs_regex_quote(prefix);
    size_t rl = strlen(quoted) + 2;
    char *re = afs_xmalloc(rl);
    snprintf(re, rl, "^%s", quoted);
    bson_t alts, alt;
    BSON_APPEND_ARRAY_BEGIN(&q, "$or", &alts);
    BSON_APPEND_DOCUMENT_BEGIN(&alts, "0", &alt);
    BSON_APPEND_REGEX(&alt, AFS_F_FILE_PATH, re, "");
    bson_append_document_end(&alts, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&alts, "1", &alt);
    BSON_APPEND_NULL(&alt, AFS_F_FILE_PATH);
    bson_append_document_end(&alts, &alt);
    BSON_APPEND_DOCUMENT_BEGIN(&alts, "2", &alt);
    BSON_APPEND_UTF8(&alt, AFS_F_FILE_PATH, "");
    bson_append_document_end(&alts, &alt);
    bson_append_array_end(&q, &alts);
    free(quoted);
    free(re);
  }
  struct asset_vec av = {.cat = cat};
  pthread_mutex_lock(&cat->mu);
  uint64_t seq = cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
  double t0 = afs_cat_now();
  /* Big batches: FerretDB answers a getMore without batchSize with a small batch, and
   * 10,000 records then cost a hundred round trips (~15 % of the listing's time). */
  bson_t *opts = BCON_NEW("batchSize", BCON_INT64(LIST_BATCH));
  bool ok = run_find(cat, AFS_CATQ_LIST, &q, opts, collect, &av, err);
  bson_destroy(opts);
  bson_destroy(&q);
  if (!ok) {
    free(prefix);
    vec_free(&av);
    return -1;
  }
  afs_debug("listed %s:/%s: %zu records in %.0f ms", partition, dirpath, av.n,
            (afs_cat_now() - t0) * 1000);

  /* Names, filtered to the subtree, then clashes resolved. */
  size_t keep = 0;
  for (size_t i = 0; i < av.n; i++) {
    struct afs_asset *a = &av.v[i];
    if (!afs_cat_place(a) || (prefix && strncmp(a->file_path, prefix, strlen(prefix)) != 0)) {
      afs_asset_free(a);
      continue;
    }
    av.v[keep++] = *a;
  }
  av.n = keep;
  if (av.n > 1)
    qsort(av.v, av.n, sizeof *av.v, clash_cmp);
  for (size_t i = 1, first = 0; i < av.n; i++) {
    if (strcmp(av.v[i].file_path, av.v[first].file_path) != 0) {
      first = i;
      continue;
    }
    if (av.v[i].derived_name) {
      char *s = suffixed(av.v[i].file_path, av.v[i].id);
      free(av.v[i].file_path);
      av.v[i].file_path = s;
    } else {
      afs_debug("asset %s hidden: %s also has a newer record", av.v[i].id, av.v[i].file_path);
      free(av.v[i].file_path);
      av.v[i].file_path = afs_xstrdup("");
    }
  }

  pthread_mutex_lock(&cat->mu);
  /* Freshness is counted from when the answer arrived: a query of 10,000 records takes
   * longer than list_ttl on FerretDB, and counting from its start made the listing stale
   * on arrival (so `ls -l` listed again and again). A change made while the query ran
   * may therefore show up to list_ttl plus the query's duration late; the write path's
   * own changes (invalidations) during the query are never lost (late nodes below). */
  double now = afs_cat_now();
  if (cat->dir_inval_seq > seq)
    now =
        AFS_CAT_LONG_AGO; /* a directory was invalidated meanwhile: serve it once, then ask again */
  struct part *p = afs_cat_part_get(cat, partition, true);
  size_t shown = 0;
  for (size_t i = 0; i < av.n; i++)
    shown += *av.v[i].file_path != 0;
  afs_cat_absent_drop_under(p, dirpath);
  if (*dirpath && shown == 0) {
    /* Not a directory (any more): remember that nothing is under it, without making
     * up its ancestors. */
    struct node *gone = afs_smap_get(&p->nodes, dirpath);
    struct late *late = gone ? afs_cat_late_nodes(p, gone, seq) : NULL;
    if (gone && gone != p->root)
      afs_cat_subtree_drop(p, gone, false);
    afs_cat_absent_set(p, dirpath, now);
    if (late)
      afs_cat_late_restore(cat, p, late);
    pthread_mutex_unlock(&cat->mu);
    vec_free(&av);
    free(prefix);
    return 0;
  }
  struct node *d = afs_cat_ensure_dir(p, dirpath, now);
  struct late *late = afs_cat_late_nodes(p, d, seq);
  afs_cat_subtree_drop(p, d, true);
  size_t installed = 0;
  for (size_t i = 0; i < av.n; i++) {
    if (!*av.v[i].file_path) {
      afs_asset_free(&av.v[i]);
      continue;
    }
    char *rel = afs_xstrdup(av.v[i].file_path);
    struct node *fn = afs_cat_file_put(p, rel, &av.v[i], now);
    if (fn) {
      fn->from_listing = true;
      installed++;
    }
    free(rel);
  }
  /* Every directory in the subtree is now completely known. */
  struct node **stack = afs_xmalloc(sizeof *stack * (p->nodes.n + 1));
  size_t sp = 0;
  stack[sp++] = d;
  while (sp) {
    struct node *n = stack[--sp];
    n->listed = now;
    n->stamp = now;
    for (size_t k = 0; k < n->nkids; k++)
      if (n->kids[k]->is_dir)
        stack[sp++] = n->kids[k];
  }
  free(stack);
  int ret = 1;
  if (*dirpath && installed == 0) {
    afs_cat_subtree_drop(p, d, false);
    afs_cat_absent_set(p, dirpath, now);
    ret = 0;
  }
  if (installed > 0 && now > p->checked) {
    /* Active assets were found: the partition exists as of now (the kernel revalidates
     * the partition directory every attr_ttl while `ls -l` runs; no probe for that). */
    p->checked = now;
    p->exists = true;
  }
  afs_cat_late_restore(cat, p, late);
  pthread_mutex_unlock(&cat->mu);
  free(av.v);
  free(prefix);
  return ret;
}

/* One query by (partition, filePath). 1 found (installed), 0 not found, -1 error. */
int afs_cat_file_fetch(struct afs_catalog *cat, const char *partition, const char *rel,
                       struct afs_error *err) {
  bson_t *q = BCON_NEW(AFS_F_PARTITION, BCON_UTF8(partition), AFS_F_STATUS,
                       BCON_UTF8(AFS_ASSET_ACTIVE), AFS_F_FILE_PATH, BCON_UTF8(rel));
  struct asset_vec av = {.cat = cat};
  pthread_mutex_lock(&cat->mu);
  uint64_t seq = cat->inval_seq;
  pthread_mutex_unlock(&cat->mu);
  bool ok = run_find(cat, AFS_CATQ_FILE, q, NULL, collect, &av, err);
  bson_destroy(q);
  if (!ok) {
    vec_free(&av);
    return -1;
  }
  size_t best = 0;
  for (size_t i = 1; i < av.n; i++)
    if (av.v[i].created_ms > av.v[best].created_ms)
      best = i;
  int ret = 0;
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, true);
  struct node *n = afs_smap_get(&p->nodes, rel);
  bool late = n && !n->is_dir && n->inval_seq > seq; /* invalidated while we asked */
  if (av.n > 0 && afs_cat_place(&av.v[best]) && !av.v[best].derived_name) {
    n = afs_cat_file_put(p, rel, &av.v[best], afs_cat_now());
    ret = n ? 1 : 0;
    if (n && late)
      n->stamp = 0; /* this answer is served, the next lookup asks again */
  } else if (n && !late && !n->is_dir && !n->a.derived_name && !n->was_derived) {
    afs_cat_subtree_drop(p, n, false);
  }
  pthread_mutex_unlock(&cat->mu);
  vec_free(&av);
  return ret;
}

/* ---- partitions ---- */

static void strv_push(char ***v, size_t *n, const char *s) {
  for (size_t i = 0; i < *n; i++)
    if (!strcmp((*v)[i], s))
      return;
  *v = afs_xrealloc(*v, (*n + 2) * sizeof **v);
  (*v)[(*n)++] = afs_xstrdup(s);
  (*v)[*n] = NULL;
}

static bool discover(struct afs_catalog *cat, char ***out, struct afs_error *err) {
  bson_error_t berr;
  bson_t reply;
  if (!afs_cat_db_gate(cat, err))
    return false;
  bson_t *cmd = BCON_NEW("distinct", BCON_UTF8(AFS_COLL_ASSET), "key", BCON_UTF8(AFS_F_PARTITION),
                         "query", "{", AFS_F_STATUS, BCON_UTF8(AFS_ASSET_ACTIVE), "}");
  afs_cat_count(cat, AFS_CATQ_DISTINCT);
  mongoc_client_t *c = afs_db_pop(cat->db);
  mongoc_database_t *d = mongoc_client_get_database(c, cat->db->dbname);
  bool ok = mongoc_database_command_simple(d, cmd, NULL, &reply, &berr);
  mongoc_database_destroy(d);
  afs_db_push(cat->db, c);
  bson_destroy(cmd);
  char **v = NULL;
  size_t n = 0;
  if (ok) {
    bson_iter_t it, arr;
    if (bson_iter_init_find(&it, &reply, "values") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
      while (bson_iter_next(&arr))
        if (BSON_ITER_HOLDS_UTF8(&arr) && *bson_iter_utf8(&arr, NULL))
          strv_push(&v, &n, bson_iter_utf8(&arr, NULL));
    }
  } else {
    afs_db_error(err, &berr, "listing partitions");
    afs_cat_db_result(cat, false, err);
    err->code = EIO;
  }
  bson_destroy(&reply);
  if (!ok)
    return false;
  if (!v) {
    v = afs_xcalloc(1, sizeof *v);
  }
  *out = v;
  return true;
}

bool afs_catalog_partitions(struct afs_catalog *cat, afs_catalog_partition_cb cb, void *ctx,
                            struct afs_error *err) {
  char **list = NULL;
  size_t n = 0;
  if (cat->partitions) {
    for (char **s = cat->partitions; *s; s++)
      strv_push(&list, &n, *s);
  } else {
    pthread_mutex_lock(&cat->mu);
    bool have = cat->disc && afs_cat_fresh(cat->disc_at, cat->list_ttl, afs_cat_now());
    if (have)
      for (char **s = cat->disc; *s; s++)
        strv_push(&list, &n, *s);
    pthread_mutex_unlock(&cat->mu);
    if (!have) {
      char **found = NULL;
      struct afs_error derr = {0};
      bool ok = discover(cat, &found, &derr);
      pthread_mutex_lock(&cat->mu);
      if (ok) {
        afs_cat_strv_free(cat->disc);
        cat->disc = found;
        cat->disc_at = afs_cat_now();
      } else if (cat->disc) {
        afs_warn("%s; showing the partitions known before", derr.msg);
      }
      if (cat->disc)
        for (char **s = cat->disc; *s; s++)
          strv_push(&list, &n, *s);
      bool none = !cat->disc;
      pthread_mutex_unlock(&cat->mu);
      if (none && !cat->upload_partition) {
        *err = derr;
        return false;
      }
    }
  }
  if (cat->upload_partition && *cat->upload_partition)
    strv_push(&list, &n, cat->upload_partition);
  for (size_t i = 0; i < n; i++)
    if (cb(ctx, list[i]))
      break;
  afs_cat_strv_free(list);
  return true;
}

static int find_part_cb(void *ctx, const char *p) {
  const char **want = ctx;
  if (!strcmp(*want, p)) {
    *want = NULL;
    return 1;
  }
  return 0;
}

/* A cursor and the client it came from, closed by a background thread. */
struct reap {
  struct afs_catalog *cat;
  mongoc_client_t *c;
  mongoc_collection_t *coll;
  mongoc_cursor_t *cur;
};

static void *reap_main(void *arg) {
  struct reap *r = arg;
  mongoc_cursor_destroy(r->cur);
  mongoc_collection_destroy(r->coll);
  afs_db_push(r->cat->db, r->c);
  pthread_mutex_lock(&r->cat->mu);
  if (--r->cat->bg_running == 0)
    pthread_cond_broadcast(&r->cat->bg_cv);
  pthread_mutex_unlock(&r->cat->mu);
  free(r);
  return NULL;
}

/* Does any record match filter? 1 yes, 0 no, -1 error. Asks for a first batch of one
 * record and closes the cursor in the background: FerretDB on PostgreSQL reads every
 * matching row before it closes a cursor (with `limit: 1` too, 0.3 s at 10,000
 * assets), which the answer need not wait for. */
static int run_exists(struct afs_catalog *cat, enum afs_catq kind, const bson_t *filter,
                      struct afs_error *err) {
  bson_error_t berr;
  const bson_t *doc;
  if (!afs_cat_db_gate(cat, err))
    return -1;
  afs_cat_count(cat, kind);
  double t0 = afs_cat_now();
  mongoc_client_t *c = afs_db_pop(cat->db);
  if (!c) {
    afs_error_set(err, EIO, "no MongoDB client available");
    return -1;
  }
  bson_t *opts =
      BCON_NEW("batchSize", BCON_INT64(1), "projection", "{", AFS_F_ID, BCON_INT32(1), "}");
  mongoc_collection_t *coll = afs_db_coll(cat->db, c, AFS_COLL_ASSET);
  mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
  bson_destroy(opts);
  bool found = mongoc_cursor_next(cur, &doc);
  bool ok = !mongoc_cursor_error(cur, &berr);
  struct reap *r = found && ok ? calloc(1, sizeof *r) : NULL;
  if (r) {
    pthread_t th;
    pthread_attr_t attr;
    *r = (struct reap){cat, c, coll, cur};
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&cat->mu);
    cat->bg_running++;
    pthread_mutex_unlock(&cat->mu);
    if (pthread_create(&th, &attr, reap_main, r) != 0) {
      pthread_mutex_lock(&cat->mu);
      cat->bg_running--;
      pthread_mutex_unlock(&cat->mu);
      free(r);
      r = NULL;
    }
    pthread_attr_destroy(&attr);
  }
  if (!r) {
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    afs_db_push(cat->db, c);
  }
  if (!ok) {
    afs_db_error(err, &berr, "CosyncAsset query");
    afs_cat_db_result(cat, false, err);
    err->code = EIO;
    return -1;
  }
  afs_cat_db_result(cat, true, NULL);
  afs_debug("CosyncAsset query (%s) answered in %.0f ms", kind_name[kind],
            (afs_cat_now() - t0) * 1000);
  return found ? 1 : 0;
}

/* Is partition a top-level directory? Configured ones are; otherwise one indexed
 * existence check (run_exists; not the partition discovery, which scans), cached for
 * list_ttl. */
bool afs_cat_partition_exists(struct afs_catalog *cat, const char *partition,
                              struct afs_error *err) {
  if (cat->upload_partition && !strcmp(partition, cat->upload_partition))
    return true;
  if (cat->partitions) {
    for (char **s = cat->partitions; *s; s++)
      if (!strcmp(*s, partition))
        return true;
    return afs_error_set(err, ENOENT, "no partition %s", partition);
  }
  pthread_mutex_lock(&cat->mu);
  struct part *p = afs_cat_part_get(cat, partition, false);
  double now = afs_cat_now();
  int known = -1;
  if (p && afs_cat_fresh(p->checked, cat->list_ttl, now))
    known = p->exists;
  else if (p && afs_cat_fresh(p->root->listed, cat->list_ttl, now) && p->root->nkids > 0)
    known = 1;
  else if (cat->disc && afs_cat_fresh(cat->disc_at, cat->list_ttl, now)) {
    const char *want = partition;
    for (char **s = cat->disc; *s && want; s++) /* want is NULL once found */
      find_part_cb(&want, *s);
    known = want == NULL;
  }
  pthread_mutex_unlock(&cat->mu);
  if (known < 0) {
    bson_t *q =
        BCON_NEW(AFS_F_PARTITION, BCON_UTF8(partition), AFS_F_STATUS, BCON_UTF8(AFS_ASSET_ACTIVE));
    int n = run_exists(cat, AFS_CATQ_PARTITION, q, err);
    bson_destroy(q);
    if (n < 0)
      return false;
    pthread_mutex_lock(&cat->mu);
    p = afs_cat_part_get(cat, partition, true);
    p->checked = afs_cat_now();
    p->exists = n > 0;
    pthread_mutex_unlock(&cat->mu);
    known = n > 0;
  }
  if (!known)
    return afs_error_set(err, ENOENT, "no partition %s", partition);
  return true;
}
