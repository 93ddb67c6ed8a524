/* AWS Signature Version 4 for S3, following
 * https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html
 *
 * One canonical-request builder serves both presigned URLs (auth in the query, payload
 * UNSIGNED-PAYLOAD) and Authorization-header signing. Everything the signature covers is
 * encoded here, once, so the URL we hand out and the string we sign cannot disagree.
 * No state: every function is thread-safe.
 */
#include "assetfs/sigv4.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "s3url.h"

#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define MAX_PARAMS 64
#define MAX_HEADERS 32

static const char hexdig[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hexdig[in[i] >> 4];
    out[2 * i + 1] = hexdig[in[i] & 15];
  }
  out[2 * n] = '\0';
}

void afs_sha256_hex(const void *data, size_t len, char out[65]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
  to_hex(md, 32, out);
}

void afs_md5_base64(const void *data, size_t len, char out[25]) {
  unsigned char md[16];
  unsigned int mdlen = 0;
  EVP_Digest(data, len, md, &mdlen, EVP_md5(), NULL);
  EVP_EncodeBlock((unsigned char *)out, md, 16); /* 24 chars + NUL */
}

static void hmac256(const void *key, size_t keylen, const char *msg, unsigned char out[32]) {
  unsigned int outlen = 32;
  HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &outlen);
}

/* ---- query parameters ---- */

struct qparam {
  char *name, *value; /* encoded */
};

struct qlist {
  struct qparam p[MAX_PARAMS];
  size_t n;
};

static void qlist_free(struct qlist *q) {
  for (size_t i = 0; i < q->n; i++) {
    free(q->p[i].name);
    free(q->p[i].value);
  }
  q->n = 0;
}

static bool reserved_param(const char *name) {
  static const char *const ours[] = {
      "X-Amz-Algorithm",     "X-Amz-Credential", "X-Amz-Date",          "X-Amz-Expires",
      "X-Amz-SignedHeaders", "X-Amz-Signature",  "X-Amz-Security-Token"};
  for (size_t i = 0; i < sizeof ours / sizeof *ours; i++)
    if (!strcasecmp(name, ours[i]))
      return true;
  return false;
}

static bool qlist_add(struct qlist *q, const char *name, size_t nl, const char *value, size_t vl,
                      struct afs_error *err) {
  if (q->n >= MAX_PARAMS)
    return afs_error_set(err, EINVAL, "too many query parameters");
  char *n = strndup(name, nl), *v = strndup(value ? value : "", value ? vl : 0);
  char *en = n ? afs_s3_uri_encode(n, false) : NULL;
  char *ev = v ? afs_s3_uri_encode(v, false) : NULL;
  free(n);
  free(v);
  if (!en || !ev) {
    free(en);
    free(ev);
    return afs_error_set(err, ENOMEM, "out of memory");
  }
  q->p[q->n].name = en;
  q->p[q->n].value = ev;
  q->n++;
  return true;
}

static bool qlist_add_raw(struct qlist *q, const struct afs_sigv4_param *p, size_t n,
                          struct afs_error *err) {
  for (size_t i = 0; i < n; i++) {
    if (!p[i].name || !*p[i].name)
      return afs_error_set(err, EINVAL, "empty query parameter name");
    if (reserved_param(p[i].name))
      return afs_error_set(err, EINVAL, "query parameter %s is set by the signer", p[i].name);
    if (!qlist_add(q, p[i].name, strlen(p[i].name), p[i].value, p[i].value ? strlen(p[i].value) : 0,
                   err))
      return false;
  }
  return true;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decodes %XX in [s, s+n) into a new string ('+' stays a plus: S3 reads it literally in
 * presigned URLs only if encoded, so we re-encode it as %2B). NULL on a bad escape. */
static char *pct_decode(const char *s, size_t n) {
  char *out = malloc(n + 1), *p = out;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '%') {
      int h, l;
      if (i + 2 >= n || (h = hexval(s[i + 1])) < 0 || (l = hexval(s[i + 2])) < 0 ||
          (h == 0 && l == 0)) {
        free(out);
        return NULL;
      }
      *p++ = (char)(h * 16 + l);
      i += 2;
    } else {
      *p++ = s[i];
    }
  }
  *p = '\0';
  return out;
}

/* Parses an encoded "a=1&b&c=x%20y" subresource, normalising its encoding. */
static bool qlist_add_encoded(struct qlist *q, const char *sub, struct afs_error *err) {
  const char *s = sub;
  while (s && *s) {
    size_t len = strcspn(s, "&");
    if (len > 0) {
      const char *eq = memchr(s, '=', len);
      size_t nl = eq ? (size_t)(eq - s) : len;
      char *n = pct_decode(s, nl);
      char *v = eq ? pct_decode(eq + 1, len - nl - 1) : strdup("");
      bool ok = n && v && *n;
      if (!ok)
        afs_error_set(err, EINVAL, "malformed subresource '%s'", sub);
      else if (reserved_param(n))
        ok = afs_error_set(err, EINVAL, "query parameter %s is set by the signer", n);
      else
        ok = qlist_add(q, n, strlen(n), v, strlen(v), err);
      free(n);
      free(v);
      if (!ok)
        return false;
    }
    s += len;
    if (*s == '&')
      s++;
  }
  return true;
}

static int qparam_cmp(const void *a, const void *b) {
  const struct qparam *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : strcmp(x->value, y->value);
}

/* Sorted, encoded, '&'-joined: both the canonical query and the URL's query. */
static char *qlist_join(struct qlist *q) {
  qsort(q->p, q->n, sizeof q->p[0], qparam_cmp);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return NULL;
  for (size_t i = 0; i < q->n; i++)
    fprintf(f, "%s%s=%s", i ? "&" : "", q->p[i].name, q->p[i].value);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* ---- headers ---- */

struct hdr {
  char name[64];
  char *value; /* trimmed, inner runs of blanks collapsed */
};

struct hlist {
  struct hdr h[MAX_HEADERS];
  size_t n;
};

static void hlist_free(struct hlist *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->h[i].value);
  l->n = 0;
}

static bool hlist_add(struct hlist *l, const char *name, const char *value, struct afs_error *err) {
  if (l->n >= MAX_HEADERS)
    return afs_error_set(err, EINVAL, "too many signed headers");
  size_t nl = name ? strlen(name) : 0;
  if (nl == 0 || nl >= sizeof l->h[0].name)
    return afs_error_set(err, EINVAL, "invalid header name");
  for (size_t i = 0; i < nl; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!(islower(c) || isdigit(c) || c == '-' || c == '_'))
      return afs_error_set(err, EINVAL, "header name '%s' must be lower-case letters, digits, -",
                           name);
  }
  for (size_t i = 0; i < l->n; i++)
    if (!strcmp(l->h[i].name, name))
      return afs_error_set(err, EINVAL, "header %s given twice", name);
  if (!value || strpbrk(value, "\r\n"))
    return afs_error_set(err, EINVAL, "invalid value for header %s", name);
  char *v = malloc(strlen(value) + 1), *p = v;
  if (!v)
    return afs_error_set(err, ENOMEM, "out of memory");
  bool blank = false;
  for (const char *c = value; *c; c++) {
    if (*c == ' ' || *c == '\t') {
      blank = true;
      continue;
    }
    if (blank && p != v)
      *p++ = ' ';
    blank = false;
    *p++ = *c;
  }
  *p = '\0';
  memcpy(l->h[l->n].name, name, nl + 1);
  l->h[l->n].value = v;
  l->n++;
  return true;
}

static int hdr_cmp(const void *a, const void *b) {
  return strcmp(((const struct hdr *)a)->name, ((const struct hdr *)b)->name);
}

/* ---- the signature ---- */

/* Computes the hex signature and the SignedHeaders list (caller frees) over an already
 * sorted header list and joined canonical query. */
static bool compute_signature(const struct afs_s3_target *t, const char *method,
                              const char *canon_uri, const char *canon_query, const struct hlist *h,
                              const char *payload_hash, const char *amz_date, char sig_hex[65],
                              char **signed_headers, struct afs_error *err) {
  char *creq = NULL, *sh = NULL, *sts = NULL;
  size_t creq_len = 0, sh_len = 0;
  bool ok = false;
  FILE *f = open_memstream(&sh, &sh_len);
  if (!f)
    return afs_error_set(err, ENOMEM, "out of memory");
  for (size_t i = 0; i < h->n; i++)
    fprintf(f, "%s%s", i ? ";" : "", h->h[i].name);
  if (fclose(f) != 0) {
    sh = NULL;
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  f = open_memstream(&creq, &creq_len);
  if (!f) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  fprintf(f, "%s\n%s\n%s\n", method, canon_uri, canon_query);
  for (size_t i = 0; i < h->n; i++)
    fprintf(f, "%s:%s\n", h->h[i].name, h->h[i].value);
  fprintf(f, "\n%s\n%s", sh, payload_hash);
  if (fclose(f) != 0) {
    creq = NULL;
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  char creq_hash[65];
  afs_sha256_hex(creq, creq_len, creq_hash);
  char date[9];
  memcpy(date, amz_date, 8);
  date[8] = '\0';
  if (asprintf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", amz_date, date, t->region,
               creq_hash) < 0) {
    sts = NULL;
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  /* The key chain: kSecret -> date -> region -> service -> "aws4_request". */
  char ksecret[256];
  int kl = snprintf(ksecret, sizeof ksecret, "AWS4%s", t->secret_key);
  if (kl < 0 || (size_t)kl >= sizeof ksecret) {
    afs_error_set(err, EINVAL, "S3 secret key is too long");
    goto done;
  }
  unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
  hmac256(ksecret, (size_t)kl, date, k1);
  hmac256(k1, 32, t->region, k2);
  hmac256(k2, 32, "s3", k3);
  hmac256(k3, 32, "aws4_request", k4);
  hmac256(k4, 32, sts, sig);
  to_hex(sig, 32, sig_hex);
  OPENSSL_cleanse(ksecret, sizeof ksecret);
  OPENSSL_cleanse(k1, 32);
  OPENSSL_cleanse(k2, 32);
  OPENSSL_cleanse(k3, 32);
  OPENSSL_cleanse(k4, 32);
  *signed_headers = sh;
  sh = NULL;
  ok = true;
done:
  free(creq);
  free(sh);
  free(sts);
  return ok;
}

static bool check_common(const struct afs_s3_target *t, const char *method, struct afs_error *err) {
  if (!t || !t->access_key || !*t->access_key || !t->secret_key || !*t->secret_key)
    return afs_error_set(err, EINVAL, "S3 credentials are not set");
  if (strpbrk(t->access_key, "/ \t\r\n&"))
    return afs_error_set(err, EINVAL, "S3 access key has invalid characters");
  if (!method || !*method || strlen(method) > 16)
    return afs_error_set(err, EINVAL, "invalid HTTP method");
  for (const char *c = method; *c; c++)
    if (*c < 'A' || *c > 'Z')
      return afs_error_set(err, EINVAL, "invalid HTTP method '%s'", method);
  return true;
}

static char *presign_impl(const struct afs_s3_target *t, const char *method, const char *key,
                          const char *subresource, const struct afs_sigv4_param *params,
                          size_t nparams, const struct afs_sigv4_header *headers, size_t n,
                          long expires, time_t now, struct afs_error *err) {
  struct afs_s3_endpoint e = {0};
  struct qlist q = {.n = 0};
  struct hlist h = {.n = 0};
  char *query = NULL, *signed_headers = NULL, *url = NULL, *cred = NULL;
  char amz_date[17], expires_s[24], sig[65];

  if (!check_common(t, method, err))
    goto done;
  if (expires < 1 || expires > AFS_SIGV4_MAX_EXPIRES) {
    afs_error_set(err, EINVAL,
                  "presigned URL lifetime %ld s is out of range: S3 accepts 1 to %ld s (7 days)",
                  expires, AFS_SIGV4_MAX_EXPIRES);
    goto done;
  }
  if (!key || !*key) {
    afs_error_set(err, EINVAL, "empty S3 key");
    goto done;
  }
  if (!afs_s3_endpoint_build(t, key, &e, err))
    goto done;
  if (!hlist_add(&h, "host", e.host, err))
    goto done;
  for (size_t i = 0; i < n; i++) {
    if (headers[i].name && !strcmp(headers[i].name, "host")) {
      afs_error_set(err, EINVAL, "the host header is set by the signer");
      goto done;
    }
    if (!hlist_add(&h, headers[i].name, headers[i].value, err))
      goto done;
  }
  qsort(h.h, h.n, sizeof h.h[0], hdr_cmp);
  if (!qlist_add_encoded(&q, subresource, err) || !qlist_add_raw(&q, params, nparams, err))
    goto done;

  afs_sigv4_format_time(now, amz_date);
  if (!amz_date[0]) {
    afs_error_set(err, EINVAL, "signing time is out of range");
    goto done;
  }
  snprintf(expires_s, sizeof expires_s, "%ld", expires);
  if (asprintf(&cred, "%s/%.8s/%s/s3/aws4_request", t->access_key, amz_date, t->region) < 0) {
    cred = NULL;
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  char sh_raw[MAX_HEADERS * 65] = "";
  for (size_t i = 0; i < h.n; i++) {
    if (i)
      strcat(sh_raw, ";");
    strcat(sh_raw, h.h[i].name);
  }
  const char *names[] = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                         "X-Amz-SignedHeaders"};
  const char *values[] = {"AWS4-HMAC-SHA256", cred, amz_date, expires_s, sh_raw};
  for (size_t i = 0; i < 5; i++)
    if (!qlist_add(&q, names[i], strlen(names[i]), values[i], strlen(values[i]), err))
      goto done;
  query = qlist_join(&q);
  if (!query) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  if (!compute_signature(t, method, e.path, query, &h, UNSIGNED_PAYLOAD, amz_date, sig,
                         &signed_headers, err))
    goto done;
  if (asprintf(&url, "%s%s?%s&X-Amz-Signature=%s", e.base, e.path, query, sig) < 0)
    url = NULL;
  if (!url)
    afs_error_set(err, ENOMEM, "out of memory");
done:
  afs_s3_endpoint_free(&e);
  qlist_free(&q);
  hlist_free(&h);
  free(query);
  free(signed_headers);
  free(cred);
  return url;
}

char *afs_sigv4_presign(const struct afs_s3_target *t, const char *method, const char *key,
                        const char *subresource, const struct afs_sigv4_header *headers, size_t n,
                        long expires, time_t now, struct afs_error *err) {
  return presign_impl(t, method, key, subresource, NULL, 0, headers, n, expires, now, err);
}

char *afs_sigv4_presign_params(const struct afs_s3_target *t, const char *method, const char *key,
                               const struct afs_sigv4_param *params, size_t nparams,
                               const struct afs_sigv4_header *headers, size_t n, long expires,
                               time_t now, struct afs_error *err) {
  return presign_impl(t, method, key, NULL, params, nparams, headers, n, expires, now, err);
}

bool afs_sigv4_sign_request(const struct afs_s3_target *t, const char *method, const char *key,
                            const struct afs_sigv4_param *params, size_t nparams,
                            const struct afs_sigv4_header *headers, size_t nheaders,
                            const char *payload_sha256_hex, time_t now,
                            struct afs_sigv4_signed *out, struct afs_error *err) {
  struct afs_s3_endpoint e = {0};
  struct qlist q = {.n = 0};
  struct hlist h = {.n = 0};
  char *query = NULL, *signed_headers = NULL;
  char sig[65];
  bool ok = false;

  memset(out, 0, sizeof *out);
  if (!check_common(t, method, err))
    goto done;
  const char *ph = payload_sha256_hex ? payload_sha256_hex : EMPTY_SHA256;
  if (strcmp(ph, UNSIGNED_PAYLOAD) != 0 &&
      (strlen(ph) != 64 || strspn(ph, "0123456789abcdef") != 64)) {
    afs_error_set(err, EINVAL, "payload hash must be 64 lower-case hex digits");
    goto done;
  }
  snprintf(out->payload_hash, sizeof out->payload_hash, "%s", ph);
  afs_sigv4_format_time(now, out->amz_date);
  if (!out->amz_date[0]) {
    afs_error_set(err, EINVAL, "signing time is out of range");
    goto done;
  }
  if (!afs_s3_endpoint_build(t, key, &e, err))
    goto done;
  if (!hlist_add(&h, "host", e.host, err) ||
      !hlist_add(&h, "x-amz-content-sha256", out->payload_hash, err) ||
      !hlist_add(&h, "x-amz-date", out->amz_date, err))
    goto done;
  for (size_t i = 0; i < nheaders; i++) {
    if (headers[i].name && !strcmp(headers[i].name, "authorization")) {
      afs_error_set(err, EINVAL, "the authorization header is set by the signer");
      goto done;
    }
    if (!hlist_add(&h, headers[i].name, headers[i].value, err))
      goto done;
  }
  qsort(h.h, h.n, sizeof h.h[0], hdr_cmp);
  if (!qlist_add_raw(&q, params, nparams, err))
    goto done;
  query = qlist_join(&q);
  if (!query) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  if (!compute_signature(t, method, e.path, query, &h, out->payload_hash, out->amz_date, sig,
                         &signed_headers, err))
    goto done;
  if (asprintf(&out->url, "%s%s%s%s", e.base, e.path, *query ? "?" : "", query) < 0)
    out->url = NULL;
  if (asprintf(&out->authorization,
               "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/s3/aws4_request, SignedHeaders=%s, "
               "Signature=%s",
               t->access_key, out->amz_date, t->region, signed_headers, sig) < 0)
    out->authorization = NULL;
  out->host = e.host;
  e.host = NULL;
  if (!out->url || !out->authorization) {
    afs_error_set(err, ENOMEM, "out of memory");
    goto done;
  }
  ok = true;
done:
  if (!ok)
    afs_sigv4_signed_free(out);
  afs_s3_endpoint_free(&e);
  qlist_free(&q);
  hlist_free(&h);
  free(query);
  free(signed_headers);
  return ok;
}

void afs_sigv4_signed_free(struct afs_sigv4_signed *s) {
  if (!s)
    return;
  free(s->url);
  free(s->host);
  if (s->authorization)
    OPENSSL_cleanse(s->authorization, strlen(s->authorization));
  free(s->authorization);
  s->url = s->host = s->authorization = NULL;
}
