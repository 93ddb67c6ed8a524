/* Tolerant reading of Cosync records (CosyncAssetUpload, CosyncAsset, CosyncFunctionCall).
 *
 * Clients write these documents, so every field may be missing, of the wrong type, or
 * huge. Readers here never crash on such input: a missing field is reported as absent,
 * a wrong type as an error naming the field (for the record's `error`), and strings are
 * checked for embedded NULs and UTF-8 validity (libbson does not guarantee either).
 */
#ifndef ASSETFS_RECORDS_H
#define ASSETFS_RECORDS_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stdint.h>

#include "assetfs/error.h"
#include "assetfs/naming.h"

/* Field names of the parts' URLs, indexed by enum afs_part (naming.h). */
extern const char *const afs_write_url_field[];
extern const char *const afs_read_url_field[];

/* String field: *out points into doc (valid while doc lives), NULL when absent or null.
 * false (err names the field) when it is another type, has a NUL, is not UTF-8, or is
 * longer than max bytes. */
bool afs_rec_str(const bson_t *doc, const char *field, size_t max, const char **out,
                 struct afs_error *err);

/* Like afs_rec_str but the field must be present and non-empty. */
bool afs_rec_str_req(const bson_t *doc, const char *field, size_t max, const char **out,
                     struct afs_error *err);

/* The number at it (double, int32, int64) as a double: 1, 0 when it holds another type,
 * -1 when it is not finite. The one reading of numbers in records. */
int afs_rec_iter_num(const bson_iter_t *it, double *out);

/* Number field (double, int32, int64): *present false when absent/null; false when
 * another type or not finite. */
bool afs_rec_num(const bson_t *doc, const char *field, double *out, bool *present,
                 struct afs_error *err);

/* Date field (ms since epoch): *present false when absent or not a date. */
void afs_rec_date(const bson_t *doc, const char *field, int64_t *out, bool *present);

/* The _id, copied into *out (caller destroys with bson_value_destroy). false if none. */
bool afs_rec_id(const bson_t *doc, bson_value_t *out);

/* A printable form of an id for logs and results: hex for ObjectIds, the string for
 * strings, else "(id)". Writes into buf (size n). */
const char *afs_rec_id_str(const bson_value_t *id, char *buf, size_t n);

/* True if two _id values are the same id: same type and value (ObjectId, string, 32/64-bit
 * integer; any other type by its printed form). */
bool afs_rec_id_equal(const bson_value_t *a, const bson_value_t *b);

/* The smallest ObjectId made at Unix time ms (its time part, the rest zero): every _id
 * made before that second compares lower. */
void afs_rec_oid_at(int64_t ms, bson_oid_t *out);

/* ---- Records read once ----
 *
 * The fields assetfs acts on in a CosyncAssetUpload or CosyncAsset record (the two kinds
 * share most of them), each checked once against one rule: strings for their type, NUL,
 * UTF-8 and a size limit; numbers finite. A field that fails its check reads as absent
 * and is marked in `bad` (afs_record_check says why). Dates are BSON dates or numbers of
 * ms since the epoch, and booleans booleans; anything else reads as absent, not bad.
 * Strings point into the document: the record is valid while the document lives.
 *
 * Who is strict: the broker refuses an upload record with any bad field (its `error`
 * names the field); readers for display (the catalog) take what is good. */
enum afs_rf {
  AFS_RF_UID,
  AFS_RF_FILE_PATH,
  AFS_RF_CONTENT_TYPE,
  AFS_RF_PARTITION,
  AFS_RF_ASSET_PARTITION,
  AFS_RF_SESSION,
  AFS_RF_HOURS,
  AFS_RF_PATH,
  AFS_RF_SEAL,
  AFS_RF_STATUS,
  AFS_RF_ERROR,
  AFS_RF_ETAG,
  AFS_RF_SIZE,
  AFS_RF_MTIME,
  AFS_RF_CREATED,
  AFS_RF_UPDATED,
  AFS_RF_EXPIRATION,
  AFS_RF_INITIALIZED_AT,
  AFS_RF_VERSION_AT,
  AFS_RF_ABANDONED,
  AFS_RF_MP_UPLOAD_ID,
  AFS_RF_META, /* the first of the AFS_META_COUNT metadata fields */
  AFS_RF_READ_URL = AFS_RF_META + 9,
  AFS_RF_WRITE_URL = AFS_RF_READ_URL + AFS_PART_COUNT,
  AFS_RF_COUNT = AFS_RF_WRITE_URL + AFS_PART_COUNT
};
#define AFS_RF_BIT(f) (UINT64_C(1) << (f))

/* The metadata a Cosync asset carries, copied from its upload (names: afs_meta_field). */
enum afs_meta {
  AFS_META_CAPTION,
  AFS_META_COLOR,
  AFS_META_EXTRA,
  AFS_META_CONTAINER,
  AFS_META_TITLE,
  AFS_META_TRANSACTION,
  AFS_META_STRINGS, /* the ones above are strings, the ones below numbers */
  AFS_META_DURATION = AFS_META_STRINGS,
  AFS_META_XRES,
  AFS_META_YRES,
  AFS_META_COUNT
};
extern const char *const afs_meta_field[AFS_META_COUNT];

/* A number as the client wrote it: its value, and the BSON value itself (int32, int64 or
 * double) so that copying it to another record keeps the type a typed client expects. */
struct afs_rec_number {
  bool has;
  double v;
  bson_value_t raw; /* numbers only: nothing to free */
};

struct afs_rec_date {
  bool has;
  bool from_number; /* given as a number of ms, not a BSON date */
  int64_t ms;
};

struct afs_record {
  const bson_t *doc; /* what was read (not owned): signatures are checked on it */
  bson_value_t id;   /* BSON_TYPE_EOD when the record has none; see afs_record_done */
  const char *uid, *file_path, *content_type, *partition, *asset_partition, *session;
  const char *path; /* the S3 key of the original: 1..AFS_KEY_MAX bytes, or NULL */
  const char *seal, *status, *error, *etag;
  bool has_seal; /* a brokerSeal field is there, valid or not */
  struct afs_rec_number hours, size;
  struct afs_rec_date mtime, created, updated, expiration, initialized_at, version_at;
  bool abandoned;
  const char *mp_upload_id; /* assetfsUploadId: a multipart upload the broker started */
  const char *meta[AFS_META_STRINGS];
  struct afs_rec_number meta_num[AFS_META_COUNT - AFS_META_STRINGS];
  const char *read_url[AFS_PART_COUNT], *write_url[AFS_PART_COUNT];
  uint64_t bad;                    /* AFS_RF_BIT of each field that failed its check */
  unsigned char why[AFS_RF_COUNT]; /* why each failed (record.c) */
  uint32_t len[AFS_RF_COUNT];      /* the size of a string over its limit */
};

/* Reads doc into *r (every field; see above). Free with afs_record_done. */
void afs_record_read(const bson_t *doc, struct afs_record *r);
void afs_record_done(struct afs_record *r);

/* false with err when one of `fields` (AFS_RF_BIT mask) failed its check, naming the
 * first in the order of enum afs_rf ("uid must be a string"); true otherwise. */
bool afs_record_check(const struct afs_record *r, uint64_t fields, struct afs_error *err);
#define AFS_RF_ALL (~UINT64_C(0))

/* The number of a metadata number field (AFS_META_DURATION...). */
static inline const struct afs_rec_number *afs_record_meta_num(const struct afs_record *r,
                                                               enum afs_meta m) {
  return &r->meta_num[m - AFS_META_STRINGS];
}

/* An upload record's status (cosync.h spells them), as the programs compare it. */
enum afs_upload_status {
  AFS_US_NONE, /* no record, or no status */
  AFS_US_PENDING,
  AFS_US_INITIALIZED,
  AFS_US_UPLOADED,
  AFS_US_COMPLETED,
  AFS_US_ERROR,
  AFS_US_OTHER /* a status assetfs does not know */
};
enum afs_upload_status afs_upload_status_of(const char *s); /* NULL: AFS_US_NONE */
const char *afs_upload_status_name(enum afs_upload_status st);

/* A CosyncFunctionCall as read once. */
struct afs_call_rec {
  bson_value_t id; /* BSON_TYPE_EOD when none */
  const char *name, *uid, *session, *status;
  bson_value_t arg;     /* the first argument (args[0], or a bare args value); EOD when none */
  unsigned bad;         /* AFS_CALL_BAD_* of each field that failed its check */
  struct afs_error err; /* why, for the first of them (name, uid, args) */
};
#define AFS_CALL_BAD_NAME 1u /* missing, or not a string of at most 128 bytes */
#define AFS_CALL_BAD_UID 2u
#define AFS_CALL_BAD_ARGS 4u /* missing or an empty array */
void afs_call_read(const bson_t *doc, struct afs_call_rec *c);
void afs_call_done(struct afs_call_rec *c);

#endif
