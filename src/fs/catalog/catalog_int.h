/* Internals shared by the catalog's files: catalog.c (lifetime, lookup, confirm),
 * catalog_tree.c (partition trees, negative knowledge, invalidation), catalog_query.c
 * (MongoDB queries, name placement), catalog_list.c (listings), catalog_record.c (BSON
 * <-> struct afs_asset, xattrs) and catalog_refresh.c (read-URL refresh, cut sizes). */
#ifndef ASSETFS_CATALOG_INT_H
#define ASSETFS_CATALOG_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "assetfs/smap.h"
#include "catalog/catalog.h"

/* One file or directory of a partition tree. */
struct node {
  char *rel;        /* path relative to the partition, "" for its root */
  const char *name; /* last component, points into rel */
  struct node *parent;
  struct node **kids;       /* directories: children, unordered */
  size_t nkids, kcap, slot; /* slot: index in parent->kids */
  bool is_dir;
  bool ghost;         /* invalidated file: ask MongoDB before believing anything */
  bool was_derived;   /* ghost of a derived-name file (not findable by filePath) */
  bool from_listing;  /* files: installed by a listing, trusted as long as it */
  double stamp;       /* monotonic time it was last confirmed by MongoDB */
  double listed;      /* directories: when their listing was last complete, 0 never */
  uint64_t inval_seq; /* ghosts: cat->inval_seq when invalidated (a query that started
                       * before cannot clear it) */
  struct afs_asset a; /* files */
};

struct part {
  char *name;
  struct afs_smap nodes; /* rel -> struct node* (owns the nodes) */
  struct node *root;
  /* Directories a listing found empty (no asset under them): rel -> double* time of
   * that listing. Negative lookups below them answer from it while it is fresh. */
  struct afs_smap absent;
  double checked; /* when `exists` was last asked of MongoDB, 0 never */
  bool exists;    /* has active assets */
};

/* Per-asset URL state for refresh (single flight) and cut sizes. */
struct ref {
  char id[AFS_OID_HEX];
  bool have;      /* urls/expiration loaded */
  bool in_flight; /* a thread is refreshing: others wait on cat->ref_cv */
  unsigned gen;   /* bumped when a flight ends */
  bool last_ok;   /* result of the last flight */
  double fail_at; /* when the last flight failed: fail fast for a few seconds */
  struct afs_error last_err;
  char *url[AFS_PART_COUNT];
  int64_t expiration_ms;
  double expiration_hours;
  int64_t part_size[AFS_PART_COUNT]; /* cut sizes learned by probing; -1 unknown */
};

struct afs_catalog {
  struct afs_db *db;
  char *upload_partition;
  char **partitions; /* explicit list, NULL-terminated, or NULL */
  char *uid, *session_id;
  const struct evp_pkey_st *key; /* the mount's (not owned); NULL = unsigned */
  uint8_t broker_pub[32];        /* assets must carry its seal when has_broker_pub */
  bool has_broker_pub;
  atomic_long n_unsealed; /* assets hidden for a seal that does not verify */
  /* Digests (afs_auth_doc_digest, hex) of the asset records whose seal verified: a record
   * seen again unchanged is not verified again. Leaf lock; emptied when it grows past a
   * bound. */
  pthread_mutex_t seal_mu;
  struct afs_smap sealed_ok;
  double attr_ttl, list_ttl, refresh_margin, refresh_timeout;

  /* mu protects parts, disc_*; lock order: mu and ref_mu are never held together. */
  pthread_mutex_t mu;
  struct afs_smap parts;  /* partition name -> struct part* */
  char **disc;            /* discovered partitions (NULL-terminated), NULL never ran */
  uint64_t inval_seq;     /* bumped by each invalidation of a path */
  uint64_t dir_inval_seq; /* inval_seq of the last invalidation of a directory or more
                           * (a listing whose query started before it installs as stale) */
  double disc_at;

  /* Background re-listings (stale-while-revalidate for big directories): keys
   * "<partition>\x1f<dir>" in flight (mu); bg_cv signals when bg_running drops. */
  struct afs_smap relisting;
  int bg_running;
  pthread_cond_t bg_cv;
  /* Listings being asked (mu): "<partition>\x1f<dir>" -> struct list_flight* (in
   * catalog_list.c); flight_cv signals when one ends. */
  struct afs_smap flights;
  pthread_cond_t flight_cv;

  /* After MongoDB failed, queries fail fast until then (monotonic ms; atomic), so a
   * dead server costs one server-selection timeout, not one per lookup. */
  int64_t db_down_until_ms;

  /* CosyncAsset queries made, by enum afs_catq (atomic; for afs_catalog_query_stats). */
  uint64_t nq[AFS_CATQ_COUNT];

  /* ref_mu protects refs; ref_cv signals the end of a refresh flight. */
  pthread_mutex_t ref_mu;
  pthread_cond_t ref_cv;
  struct afs_smap refs; /* id -> struct ref* */
};

double afs_cat_now(void); /* monotonic seconds */
/* A time stamp for "known, but long ago": stale for every TTL (yet > 0, so the node or
 * listing still serves when MongoDB fails or as the one answer of the query that made it). */
#define AFS_CAT_LONG_AGO 1e-6
static inline bool afs_cat_fresh(double stamp, double ttl, double now) {
  return stamp > 0 && now - stamp < ttl;
}
static inline void afs_cat_count(struct afs_catalog *cat, enum afs_catq q) {
  __atomic_add_fetch(&cat->nq[q], 1, __ATOMIC_RELAXED);
}
/* false (EIO) while MongoDB is considered down; afs_cat_db_result records an outcome. */
bool afs_cat_db_gate(struct afs_catalog *cat, struct afs_error *err);
void afs_cat_db_result(struct afs_catalog *cat, bool ok, const struct afs_error *err);

/* Parses a CosyncAsset document. false if it lacks an ObjectId _id. */
bool afs_asset_from_bson(const bson_t *doc, struct afs_asset *a);
/* Fetches the asset with _id hex id (any status). Returns 1 found, 0 not found, -1 error. */
int afs_cat_fetch_by_id(struct afs_catalog *cat, const char *id, struct afs_asset *out,
                        struct afs_error *err);
/* Size of a cut (probe, cached). */
bool afs_cat_part_size(struct afs_catalog *cat, const struct afs_asset *a, enum afs_part part,
                       int64_t *size, struct afs_error *err);
/* Frees every struct ref. */
void afs_cat_refs_free(struct afs_catalog *cat);

/* ---- catalog_tree.c (all with cat->mu held) ---- */

/* The partition's tree, created (empty) when create; NULL if unknown and !create. */
struct part *afs_cat_part_get(struct afs_catalog *cat, const char *name, bool create);
void afs_cat_part_free(void *p);
/* Frees n's descendants (and n itself unless keep_self). */
void afs_cat_subtree_drop(struct part *p, struct node *n, bool keep_self);
/* The directory part of rel ("" at the top). Caller frees. */
char *afs_cat_dirname(const char *rel);
/* The directory node at rel, creating it and its ancestors. */
struct node *afs_cat_ensure_dir(struct part *p, const char *rel, double now);
/* Installs a file node for asset a (stolen). NULL (a freed) if a directory is there. */
struct node *afs_cat_file_put(struct part *p, const char *rel, struct afs_asset *a, double now);
/* Empty listings: when rel was listed empty (0 never); record one; forget those at and
 * below dir. */
double afs_cat_absent_at(struct part *p, const char *rel);
void afs_cat_absent_set(struct part *p, const char *rel, double t);
void afs_cat_absent_drop_under(struct part *p, const char *dir);
/* When the cache last knew everything under rel's parent, 0 never. */
double afs_cat_coverage(struct part *p, const char *rel);
/* Nodes under d invalidated after sequence number seq, to put back after a query that
 * started before replaced the subtree (late_restore frees the vector). */
struct late;
struct late *afs_cat_late_nodes(struct part *p, struct node *d, uint64_t seq);
void afs_cat_late_restore(struct afs_catalog *cat, struct part *p, struct late *v);

/* ---- catalog_query.c (no lock held) ---- */

void afs_cat_strv_free(char **v);
/* Turns a record's filePath into a usable relative path, or derives one (sets
 * derived_name). False if the asset cannot be shown. */
bool afs_cat_place(struct afs_asset *a);
/* One query for the subtree under dirpath; replaces it in the cache. 1 when dirpath is
 * a directory, 0 when it is not, -1 on error. */
int afs_cat_list_query(struct afs_catalog *cat, const char *partition, const char *dirpath,
                       struct afs_error *err);

/* ---- catalog_list.c (no lock held) ---- */

/* afs_cat_list_query, single flight: a caller that finds the same listing already being
 * asked, with nothing invalidated since it started, waits for that answer instead of
 * asking again. Same returns. */
int afs_cat_list_fetch(struct afs_catalog *cat, const char *partition, const char *dirpath,
                       struct afs_error *err);
/* One query by (partition, filePath). 1 found (installed), 0 not found, -1 error. */
int afs_cat_file_fetch(struct afs_catalog *cat, const char *partition, const char *rel,
                       struct afs_error *err);
/* Is partition a top-level directory? false with ENOENT if not, EIO on error. */
bool afs_cat_partition_exists(struct afs_catalog *cat, const char *partition,
                              struct afs_error *err);

/* ---- catalog.c ---- */

enum cached { C_MISS, C_FILE, C_DIR, C_NOENT };
/* What the cache says about rel, and whether it may be believed now (mu held). */
enum cached afs_cat_cache_answer(struct afs_catalog *cat, struct part *p, const char *rel,
                                 double now, bool any_age, struct afs_asset *out);
/* ".cuts/<part>/<rest>" parsing. Returns false if rel is not under .cuts; part -1 for
 * ".cuts" itself, -2 for an unknown part name. */
bool afs_cat_cuts_split(const char *rel, int *part, const char **rest);
/* Whether a's cut `part` exists and shows under .cuts. */
bool afs_cat_part_shown(const struct afs_asset *a, enum afs_part part);

#endif
