/* Who asks (DESIGN.md §4, `auth=required`): Ed25519 keys of clients and of the broker,
 * signatures over a canonical form of a record's fields, and the broker's list of clients
 * with the partitions each may use. Both programs link it (src/auth): a mount signs what
 * it writes and checks the broker's seal on assets; the broker checks clients and seals
 * assets.
 *
 * The threat model (docs/SECURITY.md): anyone may write any record in the database;
 * only holders of a private key listed in the clients file may make the broker act, and
 * only in their partitions. Signatures bind a request to the record's _id and to the
 * state it asks for, so a copy of a signed field on another record, or on the same
 * record in another state, does not verify. */
#ifndef ASSETFS_AUTH_H
#define ASSETFS_AUTH_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assetfs/error.h"

#define AFS_AUTH_PUB_LEN 32
#define AFS_AUTH_PUB_B64 45 /* base64 of 32 bytes, and a NUL */
#define AFS_AUTH_SIG_LEN 64
#define AFS_AUTH_SIG_B64 89 /* base64 of 64 bytes, and a NUL */

/* ---- keys (keys.c) ---- */

typedef struct evp_pkey_st afs_auth_key; /* an Ed25519 private key (OpenSSL's EVP_PKEY) */

/* Makes a key pair: the private key to `path` (PKCS#8 PEM, mode 0600, never over an
 * existing file) and its public half to `path`.pub (one line: base64 of the raw 32
 * bytes); pub_b64 gets that line. */
bool afs_auth_keygen(const char *path, char pub_b64[AFS_AUTH_PUB_B64], struct afs_error *err);

/* Loads a private key written by afs_auth_keygen. Refuses a file that is not a regular
 * file, is readable or writable by group or others, or holds another kind of key. Free
 * with afs_auth_key_free. */
afs_auth_key *afs_auth_key_load(const char *path, struct afs_error *err);
void afs_auth_key_free(afs_auth_key *k);

/* The public half of k. */
bool afs_auth_key_public(const afs_auth_key *k, uint8_t pub[AFS_AUTH_PUB_LEN]);

/* A public key from its base64 line (surrounding blanks ignored). */
bool afs_auth_pub_parse(const char *b64, size_t len, uint8_t pub[AFS_AUTH_PUB_LEN],
                        struct afs_error *err);
void afs_auth_pub_format(const uint8_t pub[AFS_AUTH_PUB_LEN], char out[AFS_AUTH_PUB_B64]);

/* A public key from a .pub file (its first line). */
bool afs_auth_pub_load(const char *path, uint8_t pub[AFS_AUTH_PUB_LEN], struct afs_error *err);

/* ---- signatures (keys.c) ---- */

bool afs_auth_sign(const afs_auth_key *k, const void *msg, size_t len,
                   char sig_b64[AFS_AUTH_SIG_B64], struct afs_error *err);
/* True only for a valid signature of msg by pub (sig_b64: base64 of 64 bytes). */
bool afs_auth_verify(const uint8_t pub[AFS_AUTH_PUB_LEN], const void *msg, size_t len,
                     const char *sig_b64);

/* ---- canonical messages (canon.c) ----
 *
 * What is signed is never the BSON document itself (its field order and number types are
 * the client library's choice) but a canonical form: a purpose string, then each named
 * field in the given order as name, type and value, absent fields included as absent.
 * Numbers are written as their shortest round-trip decimal whatever their BSON type
 * (an int32 24 and a double 24.0 sign alike); dates as ms since the epoch; ObjectIds as
 * hex; strings with their length. A field of any other type cannot be signed. */
struct afs_canon {
  char *buf; /* the message so far (owned) */
  size_t len, cap;
  bool bad; /* a field could not be encoded: do not sign or accept */
};

void afs_canon_init(struct afs_canon *c, const char *purpose);
void afs_canon_free(struct afs_canon *c);
void afs_canon_str(struct afs_canon *c, const char *field, const char *v);
void afs_canon_value(struct afs_canon *c, const char *field, const bson_value_t *v);
/* Each of fields (NULL-terminated) as found in doc (first occurrence), absent ones too. */
void afs_canon_fields(struct afs_canon *c, const bson_t *doc, const char *const *fields);

/* ---- the broker's clients (clients.c) ----
 *
 * The clients file: one client per line, `UID PUBLIC_KEY PATTERN[,PATTERN...]`; blank
 * lines and lines starting with '#' are ignored. A uid may have several lines (several
 * keys, e.g. one per machine). A pattern is a partition name in which '*' matches any run
 * of characters (`user_id=alice`, `team-*`, `*`). */
struct afs_client {
  char *uid;
  uint8_t pub[AFS_AUTH_PUB_LEN];
  char **patterns;
  size_t npatterns;
};

struct afs_clients {
  struct afs_client *v;
  size_t n;
};

/* Parses a clients file's text; false with err naming the line of the first error (and
 * out left empty). */
bool afs_clients_parse(const char *text, size_t len, struct afs_clients *out,
                       struct afs_error *err);
/* Reads and parses path; refuses a file writable by group or others (whoever can edit it
 * can make any key a client). */
bool afs_clients_load(const char *path, struct afs_clients *out, struct afs_error *err);
void afs_clients_free(struct afs_clients *c);

/* True if some key listed for uid signed msg with sig_b64. */
bool afs_clients_verify(const struct afs_clients *c, const char *uid, const void *msg, size_t len,
                        const char *sig_b64);
/* True if uid may use partition (one of its lines' patterns matches it). */
bool afs_clients_allows(const struct afs_clients *c, const char *uid, const char *partition);

/* '*'-pattern matching as the clients file means it. */
bool afs_auth_pattern_match(const char *pattern, const char *s);

/* ---- signed requests (requests.c) ----
 *
 * What a client signs, and where the signature goes (docs/internals/auth.md has the
 * table). Each kind covers the record's _id and the state it asks for, so a signature is
 * good for one record and one step:
 *   upload    the upload record as inserted (assetfsSig): _id, uid, _partition,
 *             assetPartition, filePath, sessionId, expirationHours, contentType,
 *             createdAt. A client renaming a file in flight signs it again.
 *   uploaded  its change to `uploaded` (assetfsUploadedSig): _id, uid, status, size, the
 *             original's ETag, the metadata (xRes, yRes, color, duration, caption, mtime).
 *   abandon   its mark that the file was removed in flight (assetfsAbandonSig).
 *   call      a CosyncFunctionCall (assetfsSig): _id, uid, name, args, sessionId,
 *             createdAt.
 * And the broker's seal on each asset it writes (assetfsSeal), over what a mount acts on:
 *   asset     _id, _partition, uid, path, filePath, the five read URLs, expiration,
 *             status, size, contentType, versionAt (its place among versions). */
enum afs_auth_req {
  AFS_REQ_UPLOAD,
  AFS_REQ_UPLOADED,
  AFS_REQ_ABANDON,
  AFS_REQ_CALL,
  AFS_REQ_ASSET,
  AFS_REQ_COUNT
};

#define AFS_F_AUTH_SIG "assetfsSig"
#define AFS_F_AUTH_UPLOADED_SIG "assetfsUploadedSig"
#define AFS_F_AUTH_ABANDON_SIG "assetfsAbandonSig"
#define AFS_F_AUTH_SEAL "assetfsSeal"

/* The fields a kind covers (NULL-terminated). */
const char *const *afs_auth_req_fields(enum afs_auth_req kind);
/* The field a request kind's signature is stored in. */
const char *afs_auth_req_sig_field(enum afs_auth_req kind);
/* The canonical message of request `kind` over doc's fields (c: afs_canon_free it). */
void afs_auth_req_canon(enum afs_auth_req kind, const bson_t *doc, struct afs_canon *c);
/* Signs request `kind` as doc holds it. */
bool afs_auth_req_sign(const afs_auth_key *k, enum afs_auth_req kind, const bson_t *doc,
                       char sig[AFS_AUTH_SIG_B64], struct afs_error *err);
/* Checks request `kind` in doc: signed (its signature field) by a key listed for uid.
 * false with err saying which: unsigned, unsignable, or not a signature of uid's keys. */
bool afs_auth_req_verify(const struct afs_clients *c, enum afs_auth_req kind, const bson_t *doc,
                         const char *uid, struct afs_error *err);
/* SHA-256 of what a signature of `kind` in doc vouches for: its canonical message and the
 * signature itself. The same digest means the same message and signature, so a reader
 * may remember digests it verified. false when doc has no signature or cannot be signed. */
bool afs_auth_doc_digest(enum afs_auth_req kind, const bson_t *doc, uint8_t out[32]);
/* True when doc carries a valid signature of `kind` by pub (the broker's seal). */
bool afs_auth_doc_signed_by(const uint8_t pub[AFS_AUTH_PUB_LEN], enum afs_auth_req kind,
                            const bson_t *doc);

#endif
