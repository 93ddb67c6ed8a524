/* HEAD/DELETE for the broker. The shared S3 client (include/assetfs/s3.h) did not exist
 * when the broker was written; this stays small on purpose. */
#include "assetfs/s3ops.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static __thread CURL *tl_curl;

void afs_s3op_thread_cleanup(void) {
  if (tl_curl) {
    curl_easy_cleanup(tl_curl);
    tl_curl = NULL;
  }
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  struct afs_s3_head *h = ud;
  size_t len = size * n;
  if (!h)
    return len;
  char line[512];
  size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
  memcpy(line, buf, l);
  line[l] = '\0';
  while (l && (line[l - 1] == '\r' || line[l - 1] == '\n'))
    line[--l] = '\0';
  if (!strncasecmp(line, "content-length:", 15)) {
    h->size = strtoll(line + 15, NULL, 10);
  } else if (!strncasecmp(line, "etag:", 5)) {
    const char *v = line + 5;
    while (*v == ' ')
      v++;
    if (*v == '"')
      v++;
    snprintf(h->etag, sizeof h->etag, "%s", v);
    size_t el = strlen(h->etag);
    if (el && h->etag[el - 1] == '"')
      h->etag[el - 1] = '\0';
  } else if (!strncasecmp(line, "content-type:", 13)) {
    const char *v = line + 13;
    while (*v == ' ')
      v++;
    snprintf(h->content_type, sizeof h->content_type, "%s", v);
  }
  return len;
}

static size_t discard(char *buf, size_t size, size_t n, void *ud) {
  (void)buf;
  (void)ud;
  return size * n;
}

/* Runs one signed request; *status gets the HTTP status. false on transport failure. */
static bool do_request(const struct afs_s3_target *t, const char *method, const char *key,
                       struct afs_s3_head *head, long *status, struct afs_error *err) {
  struct afs_sigv4_signed sig;
  memset(&sig, 0, sizeof sig);
  if (!afs_sigv4_sign_request(t, method, key, NULL, 0, NULL, 0, NULL, time(NULL), &sig, err))
    return false;
  if (!tl_curl)
    tl_curl = curl_easy_init();
  CURL *c = tl_curl;
  if (!c) {
    afs_sigv4_signed_free(&sig);
    return afs_error_set(err, ENOMEM, "cannot create a curl handle");
  }
  curl_easy_reset(c);
  char h_auth[2048], h_date[64], h_sha[128];
  snprintf(h_auth, sizeof h_auth, "Authorization: %s", sig.authorization);
  snprintf(h_date, sizeof h_date, "x-amz-date: %s", sig.amz_date);
  snprintf(h_sha, sizeof h_sha, "x-amz-content-sha256: %s", sig.payload_hash);
  struct curl_slist *hl = NULL;
  hl = curl_slist_append(hl, h_auth);
  hl = curl_slist_append(hl, h_date);
  hl = curl_slist_append(hl, h_sha);
  hl = curl_slist_append(hl, "Expect:");
  curl_easy_setopt(c, CURLOPT_URL, sig.url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  if (!strcmp(method, "HEAD"))
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, head);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  CURLcode rc = curl_easy_perform(c);
  bool ok = true;
  if (rc != CURLE_OK) {
    ok = afs_error_set(err, EHOSTUNREACH, "S3 %s %s: %s", method, key, curl_easy_strerror(rc));
  } else {
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
  }
  curl_slist_free_all(hl);
  afs_sigv4_signed_free(&sig);
  return ok;
}

bool afs_s3op_head(const struct afs_s3_target *t, const char *key, struct afs_s3_head *out,
                   struct afs_error *err) {
  long st = 0;
  memset(out, 0, sizeof *out);
  out->size = -1;
  if (!do_request(t, "HEAD", key, out, &st, err))
    return false;
  if (st == 200) {
    out->found = true;
    return true;
  }
  if (st == 404) {
    memset(out, 0, sizeof *out);
    return true;
  }
  return afs_error_set(err, st == 403 ? EACCES : EAGAIN, "S3 HEAD %s: HTTP %ld", key, st);
}

bool afs_s3op_delete(const struct afs_s3_target *t, const char *key, struct afs_error *err) {
  long st = 0;
  if (!do_request(t, "DELETE", key, NULL, &st, err))
    return false;
  if (st == 200 || st == 204 || st == 404)
    return true;
  return afs_error_set(err, st == 403 ? EACCES : EAGAIN, "S3 DELETE %s: HTTP %ld", key, st);
}
