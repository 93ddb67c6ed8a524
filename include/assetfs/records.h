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

#endif
