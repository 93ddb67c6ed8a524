/* Logging with levels, to stderr (systemd's journal picks it up) or syslog.
 *
 * Every line goes through redaction: presigned-URL signatures and credentials never
 * reach a log, whichever module formats them.
 */
#ifndef ASSETFS_LOG_H
#define ASSETFS_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum afs_log_level { AFS_LOG_ERROR, AFS_LOG_WARN, AFS_LOG_INFO, AFS_LOG_DEBUG };

void afs_log_init(const char *ident, enum afs_log_level level, bool use_syslog);
/* Parses "error", "warn", "info", "debug"; returns false if unknown. */
bool afs_log_parse_level(const char *s, enum afs_log_level *out);
enum afs_log_level afs_log_get_level(void);
/* Registers a secret (e.g. the S3 secret key) that must never be printed. */
void afs_log_add_secret(const char *secret);

void afs_log(enum afs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies src into dst (size n) with the values of X-Amz-Signature= and Signature= and
 * every registered secret (the S3 secret key, a MongoDB URI's password) replaced by
 * "REDACTED". Exposed for tests. */
void afs_log_redact(const char *src, char *dst, size_t n);

#define afs_err(...) afs_log(AFS_LOG_ERROR, __VA_ARGS__)
#define afs_warn(...) afs_log(AFS_LOG_WARN, __VA_ARGS__)
#define afs_info(...) afs_log(AFS_LOG_INFO, __VA_ARGS__)
#define afs_debug(...)                                                                             \
  do {                                                                                             \
    if (afs_log_get_level() >= AFS_LOG_DEBUG)                                                      \
      afs_log(AFS_LOG_DEBUG, __VA_ARGS__);                                                         \
  } while (0)

#endif
