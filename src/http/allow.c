/* The allowed-origin list of the filesystem's transfers and the one function that hands
 * a URL to libcurl (see http_allow.h and http_int.h). Both live here so that no transfer
 * can be set up without the check: get.c and put.c call afs_http_setup_url only.
 *
 * Locking: g_mu protects the lists, the reload generation and the counters (never held
 * across a reload); g_reload_mu makes reloads single-flight (held across the reload and
 * the pause that keeps reloads min_reload_ms apart).
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/clock.h"
#include "assetfs/http_allow.h"
#include "assetfs/log.h"
#include "http_int.h"

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_reload_mu = PTHREAD_MUTEX_INITIALIZER;
static bool g_on;
static struct afs_origin *g_fixed, *g_loaded;
static size_t g_nfixed, g_nloaded;
static afs_http_allow_reload_fn g_reload;
static void *g_ctx;
static long g_min_ms;
static int64_t g_last_ms;   /* monotonic start of the last reload */
static unsigned long g_gen; /* reloads started */
static unsigned long g_refused;

/* Origins refused after a reload that started after their miss, and when: asked again
 * within NEG_TTL_MS while the last reload is younger than min_reload_ms, they are
 * refused at once instead of pausing for the next reload (a directory of hostile
 * records must not cost a pause per file); later, they get a reload again (no pause),
 * so an origin published meanwhile is let through within min_reload_ms. */
#define NEG_SLOTS 16
#define NEG_TTL_MS 10000
static struct {
  struct afs_origin o;
  int64_t at;
} g_neg[NEG_SLOTS];
static unsigned g_neg_next;

/* g_mu held */
static bool neg_has(const struct afs_origin *o, int64_t now) {
  for (int i = 0; i < NEG_SLOTS; i++)
    if (g_neg[i].at && now - g_neg[i].at < NEG_TTL_MS && afs_origin_equal(&g_neg[i].o, o))
      return true;
  return false;
}

static struct afs_origin *dup_list(const struct afs_origin *l, size_t n) {
  if (!n)
    return NULL;
  struct afs_origin *c = afs_xmalloc(n * sizeof *c);
  memcpy(c, l, n * sizeof *c);
  return c;
}

void afs_http_allow_install(const struct afs_origin *fixed, size_t nfixed,
                            const struct afs_origin *loaded, size_t nloaded,
                            afs_http_allow_reload_fn reload, void *ctx, long min_reload_ms) {
  pthread_mutex_lock(&g_mu);
  free(g_fixed);
  free(g_loaded);
  g_fixed = dup_list(fixed, nfixed);
  g_nfixed = nfixed;
  g_loaded = dup_list(loaded, nloaded);
  g_nloaded = nloaded;
  g_reload = reload;
  g_ctx = ctx;
  g_min_ms = min_reload_ms > 0 ? min_reload_ms : 0;
  g_last_ms = afs_monotonic_ms(); /* the caller has just loaded the list */
  memset(g_neg, 0, sizeof g_neg);
  g_on = true;
  pthread_mutex_unlock(&g_mu);
}

void afs_http_allow_reset(void) {
  pthread_mutex_lock(&g_mu);
  free(g_fixed);
  free(g_loaded);
  g_fixed = g_loaded = NULL;
  g_nfixed = g_nloaded = 0;
  g_reload = NULL;
  g_ctx = NULL;
  g_on = false;
  g_gen = g_refused = 0;
  memset(g_neg, 0, sizeof g_neg);
  pthread_mutex_unlock(&g_mu);
}

void afs_http_allow_stats(unsigned long *reloads, unsigned long *refused) {
  pthread_mutex_lock(&g_mu);
  if (reloads)
    *reloads = g_gen;
  if (refused)
    *refused = g_refused;
  pthread_mutex_unlock(&g_mu);
}

/* g_mu held */
static bool listed(const struct afs_origin *o) {
  for (size_t i = 0; i < g_nfixed; i++)
    if (afs_origin_equal(&g_fixed[i], o))
      return true;
  for (size_t i = 0; i < g_nloaded; i++)
    if (afs_origin_equal(&g_loaded[i], o))
      return true;
  return false;
}

/* Reloads the published list unless a reload started after generation `seen` (then its
 * answer is at least as new as the miss). g_reload_mu serialises callers. */
static void reload_after(unsigned long seen) {
  pthread_mutex_lock(&g_reload_mu);
  pthread_mutex_lock(&g_mu);
  afs_http_allow_reload_fn fn = g_reload;
  void *ctx = g_ctx;
  bool fresh = g_gen > seen;
  int64_t wait = g_last_ms + g_min_ms - afs_monotonic_ms();
  pthread_mutex_unlock(&g_mu);
  if (fn && !fresh) {
    /* A record naming a strange origin must not turn into a query per read. */
    if (wait > 0)
      usleep((useconds_t)wait * 1000);
    pthread_mutex_lock(&g_mu);
    g_gen++;
    g_last_ms = afs_monotonic_ms();
    pthread_mutex_unlock(&g_mu);
    struct afs_origin *list = NULL;
    size_t n = 0;
    struct afs_error err = {0};
    if (fn(ctx, &list, &n, &err)) {
      pthread_mutex_lock(&g_mu);
      free(g_loaded);
      g_loaded = list;
      g_nloaded = n;
      pthread_mutex_unlock(&g_mu);
    } else {
      afs_debug("cannot reload the allowed URL origins: %s", err.msg);
      free(list);
    }
  }
  pthread_mutex_unlock(&g_reload_mu);
}

bool afs_http_allow_check(const char *url, struct afs_error *err) {
  struct afs_origin o;
  struct afs_error perr = {0};
  char shown[300];
  if (!afs_origin_parse(url, &o, &perr)) {
    afs_origin_describe(url, shown, sizeof shown);
    pthread_mutex_lock(&g_mu);
    g_refused++;
    pthread_mutex_unlock(&g_mu);
    return afs_error_set(err, AFS_E_URL_REFUSED, "URL %s refused: %s", shown, perr.msg);
  }
  pthread_mutex_lock(&g_mu);
  bool ok = !g_on || listed(&o);
  int64_t now = afs_monotonic_ms();
  bool can_reload = g_reload != NULL && !(neg_has(&o, now) && now - g_last_ms < g_min_ms);
  unsigned long gen = g_gen;
  pthread_mutex_unlock(&g_mu);
  if (ok)
    return true;
  if (can_reload)
    reload_after(gen);
  char allowed[256] = "";
  size_t k = 0;
  pthread_mutex_lock(&g_mu);
  ok = listed(&o);
  if (!ok && can_reload && !neg_has(&o, now)) {
    g_neg[g_neg_next % NEG_SLOTS].o = o;
    g_neg[g_neg_next++ % NEG_SLOTS].at = afs_monotonic_ms();
  }
  if (!ok) {
    g_refused++;
    for (size_t i = 0; i < g_nfixed + g_nloaded && k < sizeof allowed - 1; i++) {
      char one[300];
      afs_origin_format(i < g_nfixed ? &g_fixed[i] : &g_loaded[i - g_nfixed], one, sizeof one);
      k += (size_t)snprintf(allowed + k, sizeof allowed - k, "%s%s", k ? " " : "", one);
    }
  }
  pthread_mutex_unlock(&g_mu);
  if (ok)
    return true;
  afs_origin_format(&o, shown, sizeof shown);
  return afs_error_set(err, AFS_E_URL_REFUSED,
                       "URL origin %s refused: not the S3 endpoint or the public base URL "
                       "(allowed: %s; see -o url_hosts)",
                       shown, *allowed ? allowed : "none known");
}

/* The origin curl itself would connect to, for the comparison with ours: two parsers
 * that disagree about a URL are how confinement is usually got round. */
static bool curl_origin(CURLU *hu, struct afs_origin *o) {
  char *scheme = NULL, *host = NULL, *port = NULL;
  bool ok = false;
  if (curl_url_get(hu, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
      curl_url_get(hu, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(hu, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
    char buf[600];
    snprintf(buf, sizeof buf, "%s://%s:%s/", scheme, host, port);
    ok = afs_origin_parse(buf, o, NULL);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  return ok;
}

bool afs_http_setup_url(CURL *e, const char *url, CURLU **hu, struct afs_error *err) {
  *hu = NULL;
  if (!afs_http_allow_check(url, err))
    return false;
  struct afs_origin mine, theirs;
  if (!afs_origin_parse(url, &mine, err))
    return false;
  CURLU *h = curl_url();
  if (!h)
    return afs_error_set(err, ENOMEM, "out of memory");
  /* CURLU_PATH_AS_IS: the URL goes out as the broker signed it. */
  CURLUcode uc = curl_url_set(h, CURLUPART_URL, url, CURLU_PATH_AS_IS);
  if (uc != CURLUE_OK || !curl_origin(h, &theirs) || !afs_origin_equal(&mine, &theirs)) {
    char shown[300];
    afs_origin_describe(url, shown, sizeof shown);
    curl_url_cleanup(h);
    return afs_error_set(err, AFS_E_URL_REFUSED,
                         "URL %s refused: libcurl reads its host differently", shown);
  }
  curl_easy_setopt(e, CURLOPT_CURLU, h);
  curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  /* A redirect would take the transfer to an origin nobody checked. */
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  *hu = h;
  return true;
}
