/* Error reporting below the FUSE layer.
 *
 * Functions return bool (or int) and fill a struct afs_error: an errno-style code
 * that the FUSE boundary maps to a negative errno in one place, and a message for
 * logs and for the `error` field that the broker writes into records. The codes that
 * carry a meaning of their own here are named below (AFS_E_*), once.
 */
#ifndef ASSETFS_ERROR_H
#define ASSETFS_ERROR_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

/* What an error code means here. Most codes mean what POSIX says (ENOENT, EEXIST,
 * EINVAL, ENOMEM, …) and are written as such. The ones below also carry a meaning of
 * this system that the code alone does not say; set and test them by these names. A
 * few keep their POSIX meaning elsewhere, and are then written raw: a full disk is
 * ENOSPC, writing the read-only status file is EACCES, a FUSE operation that is not
 * allowed on a path is EPERM.
 *
 * "->" is what afs_fs_errno (src/fs/fuse/ops.c) hands the kernel for it. */

/* The presigned PUT URL has expired (S3's 403 whose body says so). Set by src/http/put.c,
 * which also lets it win over other parts' failures; read by the upload pipeline, which
 * then takes a new record (new URLs). -> EIO. */
#define AFS_E_URL_EXPIRED EKEYEXPIRED

/* The record is gone or already used: an upload record that disappeared, is past
 * `pending` or changed while uploading (the upload takes a new record); an asset that no
 * longer exists or is not active, or whose object is gone (the catalog's URL refresh and
 * the reader turn a 404's ENOENT into it). -> ESTALE, as NFS does for a file deleted
 * while open. */
#define AFS_E_RECORD_GONE ESTALE

/* The broker refused the upload (status `error`, or initialized without a writeUrl).
 * Set by the upload record watch and the completion poller; permanent (not retried).
 * -> EIO. */
#define AFS_E_BROKER_REFUSED EPROTO

/* The mount is unmounting: a wait for the broker gave up. Set by the upload record watch.
 * -> EIO. */
#define AFS_E_UNMOUNTING ECANCELED

/* The URL is refused: not the bucket's (src/http/allow.c, endpoints), a redirect (not
 * followed), or S3's 403. On PUT permanent; on GET the reader renews the read URL once
 * (not for a refused origin). Also S3's 403 to the broker's signed requests (src/s3).
 * -> EACCES. */
#define AFS_E_URL_REFUSED EACCES

/* Waited past a deadline: the broker did not sign an upload or refresh a read URL in
 * time, an earlier upload of the file is still running, a video decode ran too long.
 * -> EIO. */
#define AFS_E_DEADLINE ETIMEDOUT

/* A transient outage, worth retrying later: S3 answered 5xx/429/408 or a GET transfer
 * broke (src/http/get.c, src/s3), MongoDB could not be asked (the broker's key claims).
 * The reader retries a GET on it; afs_s3_error_transient tells it (with
 * AFS_E_UNREACHABLE). (pthread_create's EAGAIN is POSIX's, written raw.) -> EIO. */
#define AFS_E_TRANSIENT EAGAIN

/* A transient outage: MongoDB (store/db.c, server selection or stream) or S3 (src/s3)
 * could not be reached. The catalog's breaker trips on it, the broker retries calls on
 * it. -> EIO. */
#define AFS_E_UNREACHABLE EHOSTUNREACH

/* cache_max is reached: staged bytes not yet uploaded fill it and did not drain in time
 * (write back-pressure, src/fs/fuse/ops_file.c). -> ENOSPC (as the disk's own ENOSPC). */
#define AFS_E_CACHE_FULL ENOSPC

/* Over the 5 GiB single-PUT limit of S3 (AFS_PUT_MAX_SIZE): a write or truncate past it,
 * an upload of a bigger file, a PUT of a bigger part. Permanent. -> EFBIG. */
#define AFS_E_TOO_BIG EFBIG

/* The broker will not act on a record it cannot trust: path/uid/contentType changed after
 * the broker set them (seal broken), a path outside the uid's prefix or not a usable key
 * (src/broker: objects, functions). The janitor then removes the record and keeps the
 * objects. (In the FUSE layer EPERM is POSIX's "not allowed here".) -> EPERM. */
#define AFS_E_UNTRUSTED EPERM

/* At the FUSE boundary (afs_fs_errno, the one mapping): codes a program can act on pass
 * through as they are — the POSIX ones (ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY,
 * EINVAL, ENAMETOOLONG, EROFS, EPERM, EXDEV, ENODATA, ERANGE, ENOTSUP, E2BIG, EBADF,
 * ENOMEM, EDQUOT, EBUSY) and AFS_E_RECORD_GONE, AFS_E_URL_REFUSED, AFS_E_CACHE_FULL,
 * AFS_E_TOO_BIG. Everything that means "the service failed" (AFS_E_URL_EXPIRED the
 * broker could not renew, AFS_E_BROKER_REFUSED, AFS_E_UNMOUNTING, AFS_E_DEADLINE,
 * AFS_E_TRANSIENT, AFS_E_UNREACHABLE, EIO and any other code) becomes EIO: that is what
 * cp, rsync and editors report sensibly; the log line and the user.assetfs.status xattr
 * carry the message. */

#define AFS_ERROR_MSG_MAX 512

struct afs_error {
  int code; /* errno value (EIO, ENOENT, EINVAL, …); 0 when no error is set */
  char msg[AFS_ERROR_MSG_MAX];
};

/* Sets the error (err may be NULL) and returns false, so callers can write
 * `return afs_error_set(err, EINVAL, "bad %s", what);`. */
bool afs_error_set(struct afs_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with context ("while doing X: <old message>"). */
bool afs_error_wrap(struct afs_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void afs_error_clear(struct afs_error *err);

#endif
