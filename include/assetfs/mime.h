/* Content types from file-name extensions.
 *
 * The table is the system's /etc/mime.types (Debian package media-types), read once
 * per process; extensions are matched case-insensitively. Anything unknown is
 * application/octet-stream, which is what S3 and Cosync clients assume anyway.
 */
#ifndef ASSETFS_MIME_H
#define ASSETFS_MIME_H

#define AFS_MIME_DEFAULT "application/octet-stream"
#define AFS_MIME_TYPES_PATH "/etc/mime.types"

/* Content type for a path or file name ("a/b.JPG" -> "image/jpeg"). The returned
 * string is static (lives as long as the process); never NULL. Thread-safe. */
const char *afs_mime_from_path(const char *path);

/* Loads a different table instead of the system one (tests). Returns the number of
 * extensions read, or -1 if the file cannot be read. Not thread-safe: call before
 * any afs_mime_from_path. */
int afs_mime_load(const char *table_path);

#endif
