/* filePath rules and Cosync S3 key naming, shared by the broker and the filesystem.
 *
 * A filePath is the path a client chose for a file inside its partition: relative,
 * '/'-separated, valid UTF-8, no empty, "." or ".." components, no control characters.
 * Limits: AFS_FILEPATH_MAX bytes in all, AFS_NAME_MAX bytes per component. They are
 * chosen so that the longest key the broker can build from an accepted filePath and uid
 * ("public/" + uid + "/" + filePath + "-videopreview-" + timestamp + ".png") stays within
 * S3's 1024-byte key limit.
 *
 * Keys follow Cosync's naming (DESIGN.md §2) so existing apps' logic still fits:
 *   original   <uid>/<dir>/<name>-<ms>.<ext>             (public: public/<uid>/...)
 *   image cut  <uid>/<dir>/<name>-small-<ms>.<ext>       (-medium-, -large-)
 *   video      preview <uid>/<dir>/<name>-videopreview-<ms>.png,
 *              cuts    <uid>/<dir>/<name>-small-<ms>.png (-medium-, -large-)
 * Unlike Cosync, the preview key has no stray "-" before ".png" (cosync-storage.md §4.5).
 *
 * Key rule: <name> and <ext> keep the filePath's characters as given (valid UTF-8, never
 * normalized: NFC and NFD spellings of one visible name are two files, and two keys), so
 * a name in any script stays readable in the bucket and comes back from the key
 * (afs_naming_display_name). '/' separates components as in the filePath. A run of
 * characters S3, URLs or common tools cannot carry is replaced by one '-'
 * (afs_naming_key_unsafe):
 *   - control characters: C0, DEL, C1 (U+0080-U+009F);
 *   - the characters AWS asks to avoid in keys: \ { } ^ % ` [ ] " < > # |
 *     (URL syntax, escapes, shell and template metacharacters);
 *   - '?' (starts a URL's query where a client pastes a key into a URL) and '*' (a
 *     wildcard in IAM policies, S3 Batch manifests and shells);
 *   - U+2028/U+2029 (line breaks to JavaScript and log readers) and the Unicode
 *     noncharacters (U+FFFE/U+FFFF are not XML characters; S3 lists keys in XML).
 * '~' is kept: it is unreserved in RFC 3986 and SigV4, so URLs carry it as it is. Space,
 * '+', '&', '=', ',', ';', ':', '@', '$', '!', '(', ')' and '\'' are kept and
 * percent-encoded in URLs like every other byte outside SigV4's unreserved set. A '-'
 * that replaced characters at the end of <name> is dropped ("a#.jpg" -> "a-<ms>.jpg").
 *
 * The rule alone does not make keys unique (names that differ only in replaced
 * characters meet, and so do two records of one filePath in one millisecond): the
 * broker claims every key in MongoDB and re-plans with the next timestamp when another
 * record holds one (afs_naming_plan_unique, broker/key_claims.c). Keys made before this
 * rule (every byte outside [A-Za-z0-9._-] replaced) stay as they are; the functions
 * reading keys (afs_naming_keys_from_path, afs_naming_display_name) take both.
 */
#ifndef ASSETFS_NAMING_H
#define ASSETFS_NAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "assetfs/error.h"

#define AFS_FILEPATH_MAX 800 /* bytes of a whole filePath */
#define AFS_NAME_MAX 255     /* bytes of one component */
#define AFS_UID_MAX 128      /* bytes of a uid */
#define AFS_KEY_MAX 1024     /* S3's limit on a key */

/* True if s[0..len) is well-formed UTF-8 (no overlongs, surrogates, or > U+10FFFF). */
bool afs_utf8_valid(const char *s, size_t len);

/* Checks a filePath (len bytes; embedded NULs are caught). EINVAL for a bad path,
 * ENAMETOOLONG for an overlong one, with a message that says what is wrong. */
bool afs_filepath_check(const char *path, size_t len, struct afs_error *err);

/* Checks one path component (a file or directory name), same rules. */
bool afs_name_check(const char *name, size_t len, struct afs_error *err);

/* Checks a uid used as key prefix: 1..AFS_UID_MAX bytes of [A-Za-z0-9._@=-], not "."
 * or "..", and not "public" (which would reach into the public prefix). */
bool afs_uid_check(const char *uid, size_t len, struct afs_error *err);

enum afs_kind { AFS_KIND_OTHER, AFS_KIND_IMAGE, AFS_KIND_VIDEO };

/* image/... -> IMAGE, video/... -> VIDEO (case-insensitive), anything else OTHER. */
enum afs_kind afs_content_kind(const char *content_type);

enum afs_part {
  AFS_PART_ORIGINAL,
  AFS_PART_SMALL,
  AFS_PART_MEDIUM,
  AFS_PART_LARGE,
  AFS_PART_PREVIEW,
  AFS_PART_COUNT
};

/* "original", "small", "medium", "large", "preview". */
const char *afs_part_name(enum afs_part p);

/* Which parts an asset of this kind has: images the three cuts, videos the preview and
 * its three cuts, others only the original. */
bool afs_part_applies(enum afs_kind kind, enum afs_part p);

/* Content type a part is uploaded with: the original's for the original and image cuts,
 * "image/png" for a video's preview and its cuts. Static string or content_type. */
const char *afs_part_content_type(enum afs_kind kind, enum afs_part p, const char *content_type);

struct afs_keys {
  char *key[AFS_PART_COUNT]; /* NULL where the part does not apply */
};

/* Builds the keys of a new asset. uid and file_path must pass the checks above (they are
 * checked again here). ts_ms is the timestamp to embed (afs_naming_now_ms()). Fills
 * every applicable part; caller frees with afs_keys_free. */
bool afs_naming_make_keys(const char *uid, const char *file_path, const char *content_type,
                          bool is_public, int64_t ts_ms, struct afs_keys *out,
                          struct afs_error *err);

/* Derives the cut/preview keys from an asset's original key `path` (as built above).
 * Always sets the original; returns false (with only the original set) when the key
 * has no "-<timestamp>" to anchor the cut names on. Caller frees with afs_keys_free. */
bool afs_naming_keys_from_path(const char *path, const char *content_type, struct afs_keys *out);

void afs_keys_free(struct afs_keys *k);

/* A display filePath for an asset that has none (written by another Cosync client):
 * `path` minus a "public/" prefix, minus the first component when it equals uid (or,
 * uid NULL/empty, whenever there is more than one component), minus the "-<timestamp>"
 * (10 or more digits) before the extension. Empty, "." and ".." components are dropped
 * and invalid bytes replaced so the result passes afs_filepath_check. NULL if nothing
 * usable is left. Caller frees. Clashes are the caller's to resolve. */
char *afs_naming_display_name(const char *path, const char *uid);

/* True for a code point the key rule above replaces. */
bool afs_naming_key_unsafe(uint32_t cp);

/* The keys' timestamp for a record with ObjectId oid: its creation second * 1000 plus a
 * per-id millisecond part (a hash of the other 8 bytes), so it is the same every time the
 * record is planned. */
int64_t afs_naming_oid_ts(const uint8_t oid[12]);

/* Candidate timestamps tried per record: ts0 .. ts0 + AFS_KEY_ATTEMPTS - 1. */
#define AFS_KEY_ATTEMPTS 64

/* Tries to take the keys k (built with timestamp ts) for the record being planned:
 * 1 taken (every key is now this record's, including keys it held already), 0 some key
 * belongs to another record (whatever this call took is given back), -1 a transient
 * failure (err). */
typedef int (*afs_key_try_fn)(void *ctx, const struct afs_keys *k, int64_t ts,
                              struct afs_error *err);

/* Plans unique keys: builds the keys (afs_naming_make_keys) with timestamps ts0 + i for
 * i = first, first+1, ..., AFS_KEY_ATTEMPTS-1, 0, ..., first-1 and asks try_keys to take
 * each in turn until one is taken. The order depends only on ts0 and first, so planning
 * one record again walks the same candidates and finds the keys it holds. 1 with *out
 * set (free with afs_keys_free), 0 refused (bad input, or every candidate belongs to
 * others; err), -1 transient (err from try_keys). */
int afs_naming_plan_unique(const char *uid, const char *file_path, const char *content_type,
                           bool is_public, int64_t ts0, int first, afs_key_try_fn try_keys,
                           void *ctx, struct afs_keys *out, struct afs_error *err);

/* Milliseconds since the epoch, strictly increasing within the process, so two keys for
 * the same filePath built by one process never collide. */
int64_t afs_naming_now_ms(void);

#endif
