#include "assetfs/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>

#define MAX_SECRETS 8

static const char *g_ident = "assetfs";
static enum afs_log_level g_level = AFS_LOG_INFO;
static bool g_syslog;
/* g_secrets_lock protects g_secrets and g_nsecrets. Leaf lock. */
static pthread_mutex_t g_secrets_lock = PTHREAD_MUTEX_INITIALIZER;
static char *g_secrets[MAX_SECRETS];
static int g_nsecrets;

void afs_log_init(const char *ident, enum afs_log_level level, bool use_syslog) {
  g_ident = ident;
  g_level = level;
  g_syslog = use_syslog;
  if (use_syslog)
    openlog(ident, LOG_PID, LOG_DAEMON);
}

bool afs_log_parse_level(const char *s, enum afs_log_level *out) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, names[i]) == 0) {
      *out = (enum afs_log_level)i;
      return true;
    }
  return false;
}

enum afs_log_level afs_log_get_level(void) {
  return g_level;
}

void afs_log_add_secret(const char *secret) {
  if (!secret || strlen(secret) < 4)
    return;
  pthread_mutex_lock(&g_secrets_lock);
  if (g_nsecrets < MAX_SECRETS)
    g_secrets[g_nsecrets++] = strdup(secret);
  pthread_mutex_unlock(&g_secrets_lock);
}

/* Replaces the value after each occurrence of `param` (up to '&', space, quote or end). */
static void redact_param(char *buf, const char *param) {
  size_t plen = strlen(param);
  for (char *p = strcasestr(buf, param); p; p = strcasestr(p + plen, param)) {
    char *v = p + plen, *e = v;
    while (*e && *e != '&' && *e != ' ' && *e != '"' && *e != '\'' && *e != ',' && *e != '\n')
      e++;
    static const char rep[] = "REDACTED";
    if ((size_t)(e - v) >= sizeof rep - 1) {
      memcpy(v, rep, sizeof rep - 1);
      memmove(v + sizeof rep - 1, e, strlen(e) + 1);
    } else {
      memset(v, '*', e - v);
    }
  }
}

/* Control characters (a newline, an escape sequence) written into a record by anyone can
 * reach a log line through a partition, a path or a function name: they are written as
 * \xNN, so that one log line stays one line and a terminal shows it as it is. */
static void escape_controls(char *buf, size_t n) {
  char tmp[4096 * 4];
  size_t o = 0;
  bool any = false;
  for (const unsigned char *p = (const unsigned char *)buf; *p && o + 5 < sizeof tmp; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      o += (size_t)snprintf(tmp + o, sizeof tmp - o, "\\x%02x", *p);
      any = true;
    } else {
      tmp[o++] = (char)*p;
    }
  }
  tmp[o] = '\0';
  if (any)
    snprintf(buf, n, "%s", tmp);
}

void afs_log_redact(const char *src, char *dst, size_t n) {
  if (n == 0)
    return;
  snprintf(dst, n, "%s", src);
  redact_param(dst, "X-Amz-Signature=");
  redact_param(dst, "Signature=");
  redact_param(dst, "X-Amz-Security-Token=");
  pthread_mutex_lock(&g_secrets_lock);
  for (int i = 0; i < g_nsecrets; i++) {
    size_t sl = strlen(g_secrets[i]);
    for (char *p = strstr(dst, g_secrets[i]); p; p = strstr(p, g_secrets[i])) {
      memset(p, '*', sl);
    }
  }
  pthread_mutex_unlock(&g_secrets_lock);
  escape_controls(dst, n);
}

void afs_log(enum afs_log_level level, const char *fmt, ...) {
  if (level > g_level)
    return;
  char raw[4096], line[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  afs_log_redact(raw, line, sizeof line);
  static const char *tags[] = {"error", "warn", "info", "debug"};
  if (g_syslog) {
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    syslog(prio[level], "%s", line);
    return;
  }
  struct timespec ts;
  struct tm tm;
  char when[32];
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(stderr, "%s.%03ldZ %s[%s] %s\n", when, ts.tv_nsec / 1000000, g_ident, tags[level], line);
}
