/* Keys, signatures, canonical messages and the clients file (include/assetfs/auth.h):
 * key files and their modes, signatures that fail on any change, canonical forms that do
 * not depend on field order or number type, clients files refused with the line at fault,
 * '*' patterns, and mutated inputs (a bounded fuzz pass under the sanitizers). */
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "afs_test.h"
#include "assetfs/auth.h"

static char dir[] = "/tmp/afs-auth-XXXXXX";

static char *path_in(const char *name) {
  static char buf[4][256];
  static int k;
  char *p = buf[k++ % 4];
  snprintf(p, 256, "%s/%s", dir, name);
  return p;
}

static mode_t mode_of(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? st.st_mode & 0777 : 0;
}

static void test_keys(void) {
  struct afs_error err = {0};
  char pub_b64[AFS_AUTH_PUB_B64];
  const char *key = path_in("client.key");
  CHECK(afs_auth_keygen(key, pub_b64, &err));
  CHECK(mode_of(key) == 0600);
  CHECK(mode_of(path_in("client.key.pub")) == 0644);
  CHECK(strlen(pub_b64) == 44);
  CHECK(!afs_auth_keygen(key, pub_b64, &err)); /* never over an existing key */

  afs_auth_key *k = afs_auth_key_load(key, &err);
  CHECK(k != NULL);
  uint8_t pub[AFS_AUTH_PUB_LEN], pub2[AFS_AUTH_PUB_LEN];
  CHECK(afs_auth_key_public(k, pub));
  CHECK(afs_auth_pub_load(path_in("client.key.pub"), pub2, &err));
  CHECK(!memcmp(pub, pub2, sizeof pub));
  char again[AFS_AUTH_PUB_B64];
  afs_auth_pub_format(pub, again);
  CHECK_STREQ(again, pub_b64);

  /* Signatures: valid once, for that message and that key only. */
  char sig[AFS_AUTH_SIG_B64];
  CHECK(afs_auth_sign(k, "hello", 5, sig, &err) && strlen(sig) == 88);
  CHECK(afs_auth_verify(pub, "hello", 5, sig));
  CHECK(!afs_auth_verify(pub, "hellp", 5, sig));
  CHECK(!afs_auth_verify(pub, "hello", 4, sig));
  char bad[AFS_AUTH_SIG_B64];
  memcpy(bad, sig, sizeof bad);
  bad[10] = bad[10] == 'A' ? 'B' : 'A';
  CHECK(!afs_auth_verify(pub, "hello", 5, bad));
  CHECK(!afs_auth_verify(pub, "hello", 5, ""));
  CHECK(!afs_auth_verify(pub, "hello", 5, NULL));
  CHECK(!afs_auth_verify(pub, "hello", 5, "not base64 at all"));
  bad[87] = '\0'; /* truncated */
  CHECK(!afs_auth_verify(pub, "hello", 5, bad));
  char other_pub[AFS_AUTH_PUB_B64];
  CHECK(afs_auth_keygen(path_in("other.key"), other_pub, &err));
  uint8_t opub[AFS_AUTH_PUB_LEN];
  CHECK(afs_auth_pub_parse(other_pub, strlen(other_pub), opub, &err));
  CHECK(!afs_auth_verify(opub, "hello", 5, sig));
  afs_auth_key_free(k);

  /* Key files others can read, links, and other kinds of keys are refused. */
  CHECK(chmod(key, 0640) == 0);
  CHECK(afs_auth_key_load(key, &err) == NULL && strstr(err.msg, "chmod 600"));
  CHECK(chmod(key, 0600) == 0);
  CHECK(symlink(key, path_in("link.key")) == 0);
  CHECK(afs_auth_key_load(path_in("link.key"), &err) == NULL);
  EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  FILE *f = fopen(path_in("rsa.key"), "w");
  CHECK(rsa && f && PEM_write_PrivateKey(f, rsa, NULL, NULL, 0, NULL, NULL) == 1);
  fclose(f);
  EVP_PKEY_free(rsa);
  chmod(path_in("rsa.key"), 0600);
  CHECK(afs_auth_key_load(path_in("rsa.key"), &err) == NULL && strstr(err.msg, "not an Ed25519"));
  f = fopen(path_in("junk.key"), "w");
  fputs("-----BEGIN PRIVATE KEY-----\nnonsense\n-----END PRIVATE KEY-----\n", f);
  fclose(f);
  chmod(path_in("junk.key"), 0600);
  CHECK(afs_auth_key_load(path_in("junk.key"), &err) == NULL);
  CHECK(afs_auth_key_load(path_in("missing.key"), &err) == NULL);
  CHECK(!afs_auth_pub_parse("AAAA", 4, opub, &err));
}

static const char *msg_of(struct afs_canon *c) {
  return c->bad ? NULL : c->buf;
}

static void test_canon(void) {
  static const char *const fields[] = {"_id", "uid", "expirationHours", "filePath", NULL};
  bson_oid_t oid;
  bson_oid_init_from_string(&oid, "60c3fc150000000000000001");
  bson_t *a = BCON_NEW("_id", BCON_OID(&oid), "uid", "u1", "expirationHours", BCON_INT32(24),
                       "other", "ignored");
  bson_t *b = BCON_NEW("expirationHours", BCON_DOUBLE(24.0), "uid", "u1", "_id",
                       BCON_OID(&oid)); /* another order, another number type */
  struct afs_canon ca, cb;
  afs_canon_init(&ca, "assetfs-test-v1");
  afs_canon_fields(&ca, a, fields);
  afs_canon_init(&cb, "assetfs-test-v1");
  afs_canon_fields(&cb, b, fields);
  CHECK(msg_of(&ca) && ca.len == cb.len && !memcmp(ca.buf, cb.buf, ca.len));
  afs_canon_free(&cb);

  /* Another purpose, value, or an empty string for an absent field: another message. */
  afs_canon_init(&cb, "assetfs-other-v1");
  afs_canon_fields(&cb, b, fields);
  CHECK(ca.len != cb.len || memcmp(ca.buf, cb.buf, ca.len));
  afs_canon_free(&cb);
  bson_t *c = BCON_NEW("_id", BCON_OID(&oid), "uid", "u1", "expirationHours", BCON_INT32(24),
                       "filePath", "");
  afs_canon_init(&cb, "assetfs-test-v1");
  afs_canon_fields(&cb, c, fields);
  CHECK(ca.len != cb.len || memcmp(ca.buf, cb.buf, ca.len));
  afs_canon_free(&cb);
  /* A value that runs into the next field cannot imitate it. */
  bson_t *d1 = BCON_NEW("uid", "u1", "filePath", "x");
  bson_t *d2 = bson_new();
  bson_append_utf8(d2, "uid", 3, "u1\0filePath", 11);
  BSON_APPEND_UTF8(d2, "filePath", "x");
  struct afs_canon c1, c2;
  afs_canon_init(&c1, "p");
  afs_canon_fields(&c1, d1, fields);
  afs_canon_init(&c2, "p");
  afs_canon_fields(&c2, d2, fields);
  CHECK(c1.len != c2.len || memcmp(c1.buf, c2.buf, c1.len));
  afs_canon_free(&c1);
  afs_canon_free(&c2);
  afs_canon_free(&ca);

  /* Arrays (a call's args) sign; documents, NaN and inexact integers do not. */
  bson_t *args = BCON_NEW("args", "[", "id1", BCON_INT32(2), "[", "x", "]", "]");
  static const char *const af[] = {"args", NULL};
  afs_canon_init(&ca, "p");
  afs_canon_fields(&ca, args, af);
  CHECK(!ca.bad);
  afs_canon_free(&ca);
  bson_t *deep = BCON_NEW("args", "[", "[", "[", "[", "[", "x", "]", "]", "]", "]", "]");
  afs_canon_init(&ca, "p");
  afs_canon_fields(&ca, deep, af);
  CHECK(ca.bad);
  afs_canon_free(&ca);
  bson_t *docv = BCON_NEW("args", "{", "a", "b", "}");
  afs_canon_init(&ca, "p");
  afs_canon_fields(&ca, docv, af);
  CHECK(ca.bad);
  afs_canon_free(&ca);
  bson_t *nan = BCON_NEW("args", BCON_DOUBLE(NAN));
  afs_canon_init(&ca, "p");
  afs_canon_fields(&ca, nan, af);
  CHECK(ca.bad);
  afs_canon_free(&ca);
  bson_t *big = BCON_NEW("args", BCON_INT64(INT64_C(1) << 60));
  afs_canon_init(&ca, "p");
  afs_canon_fields(&ca, big, af);
  CHECK(ca.bad);
  afs_canon_free(&ca);
  bson_t *bigs[] = {a, b, c, d1, d2, args, deep, docv, nan, big};
  for (size_t i = 0; i < sizeof bigs / sizeof *bigs; i++)
    bson_destroy(bigs[i]);
}

static const char *clients_text(const char *pub1, const char *pub2) {
  static char buf[1024];
  snprintf(buf, sizeof buf,
           "# the clients of the test\n"
           "\n"
           "alice %s user_id=alice,team-*\r\n"
           "   alice %s public\n"
           "bob %s *\n",
           pub1, pub2, pub2);
  return buf;
}

static void test_clients(void) {
  struct afs_error err = {0};
  char p1[AFS_AUTH_PUB_B64], p2[AFS_AUTH_PUB_B64];
  CHECK(afs_auth_keygen(path_in("alice.key"), p1, &err));
  CHECK(afs_auth_keygen(path_in("laptop.key"), p2, &err));
  struct afs_clients cl;
  const char *t = clients_text(p1, p2);
  CHECK(afs_clients_parse(t, strlen(t), &cl, &err) && cl.n == 3);
  CHECK(afs_clients_allows(&cl, "alice", "user_id=alice"));
  CHECK(afs_clients_allows(&cl, "alice", "team-red"));
  CHECK(afs_clients_allows(&cl, "alice", "public"));
  CHECK(!afs_clients_allows(&cl, "alice", "user_id=bob"));
  CHECK(!afs_clients_allows(&cl, "alice", "xteam-red"));
  CHECK(afs_clients_allows(&cl, "bob", "anything at all"));
  CHECK(!afs_clients_allows(&cl, "carol", "public"));
  CHECK(!afs_clients_allows(&cl, NULL, "public"));

  afs_auth_key *k = afs_auth_key_load(path_in("laptop.key"), &err);
  char sig[AFS_AUTH_SIG_B64];
  CHECK(k && afs_auth_sign(k, "req", 3, sig, &err));
  CHECK(afs_clients_verify(&cl, "alice", "req", 3, sig)); /* her second key */
  CHECK(afs_clients_verify(&cl, "bob", "req", 3, sig));
  CHECK(!afs_clients_verify(&cl, "carol", "req", 3, sig));
  CHECK(!afs_clients_verify(&cl, "alice", "reg", 3, sig));
  afs_auth_key_free(k);
  afs_clients_free(&cl);

  /* Refused whole, with the line at fault. */
  static const struct {
    const char *line, *why;
  } bad[] = {
      {"alice\n", "want UID PUBLIC_KEY"},        {"alice KEY\n", "want UID PUBLIC_KEY"},
      {"alice notakey p\n", "not a public key"}, {"al/ice KEY p\n", "uid"},
      {"alice KEY p q\n", "unexpected text"},    {"alice KEY a,,b\n", "empty pattern"},
      {"alice KEY a,\n", "empty pattern"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char text[512], line[256];
    snprintf(line, sizeof line, "%s", bad[i].line);
    char *kp = strstr(line, "KEY");
    if (kp) {
      char rest[200];
      snprintf(rest, sizeof rest, "%s", kp + 3);
      snprintf(kp, sizeof line - (size_t)(kp - line), "%s%s", p1, rest);
    }
    snprintf(text, sizeof text, "# ok\nbob %s *\n%s", p1, line);
    CHECK(!afs_clients_parse(text, strlen(text), &cl, &err) && cl.n == 0);
    if (!strstr(err.msg, "line 3") || !strstr(err.msg, bad[i].why))
      fprintf(stderr, "case %zu: %s\n", i, err.msg);
    CHECK(strstr(err.msg, "line 3") && strstr(err.msg, bad[i].why));
  }
  CHECK(!afs_clients_parse("a\0b", 3, &cl, &err) && strstr(err.msg, "NUL"));

  /* The file: loaded when only its owner can write it. */
  const char *cf = path_in("clients");
  FILE *f = fopen(cf, "w");
  fputs(t, f);
  fclose(f);
  chmod(cf, 0644);
  CHECK(afs_clients_load(cf, &cl, &err) && cl.n == 3);
  afs_clients_free(&cl);
  chmod(cf, 0664);
  CHECK(!afs_clients_load(cf, &cl, &err) && strstr(err.msg, "writable by group or others"));
  CHECK(!afs_clients_load(path_in("nope"), &cl, &err));
}

static void test_patterns(void) {
  CHECK(afs_auth_pattern_match("*", ""));
  CHECK(afs_auth_pattern_match("*", "abc"));
  CHECK(afs_auth_pattern_match("a*c", "abbbc"));
  CHECK(afs_auth_pattern_match("a*c", "ac"));
  CHECK(!afs_auth_pattern_match("a*c", "acb"));
  CHECK(afs_auth_pattern_match("*=alice", "user_id=alice"));
  CHECK(!afs_auth_pattern_match("user_id=alice", "user_id=alice2"));
  CHECK(afs_auth_pattern_match("a**b*", "axxbyy"));
  CHECK(!afs_auth_pattern_match("", "a"));
  CHECK(afs_auth_pattern_match("", ""));
  /* Many stars against a long miss: linear, not exponential. */
  char s[4001];
  memset(s, 'a', 4000);
  s[4000] = '\0';
  CHECK(!afs_auth_pattern_match("*a*a*a*a*a*a*a*a*b", s));
}

/* A bounded fuzz pass: mutated clients files and canonical inputs never crash (the
 * sanitizer build makes any memory error fatal) and a parse is all or nothing. */
static void test_mutations(void) {
  struct afs_error err = {0};
  char p1[AFS_AUTH_PUB_B64];
  CHECK(afs_auth_keygen(path_in("fuzz.key"), p1, &err));
  char seed[512];
  snprintf(seed, sizeof seed, "# c\nalice %s user_id=alice,team-*\nbob %s *,x\n", p1, p1);
  size_t n = strlen(seed);
  unsigned r = 12345;
  int parsed = 0;
  for (int i = 0; i < 20000; i++) {
    char buf[600];
    memcpy(buf, seed, n);
    size_t len = n;
    for (int m = 0; m < 1 + i % 4; m++) {
      r = r * 1103515245 + 12345;
      size_t at = (r >> 8) % len;
      switch ((r >> 4) % 4) {
      case 0:
        buf[at] = (char)(r >> 16);
        break;
      case 1:
        len = at + 1;
        break;
      case 2:
        buf[at] = "* ,\n\t#=\r"[(r >> 16) % 8];
        break;
      default:
        if (len < sizeof buf - 1)
          memmove(buf + at + 1, buf + at, len - at), len++;
        break;
      }
    }
    struct afs_clients cl;
    if (afs_clients_parse(buf, len, &cl, &err)) {
      parsed++;
      for (size_t j = 0; j < cl.n; j++)
        afs_clients_allows(&cl, cl.v[j].uid, "user_id=alice");
      afs_clients_free(&cl);
    } else {
      CHECK(cl.n == 0 && cl.v == NULL);
    }
  }
  CHECK(parsed > 0);
  /* Canonical forms of random BSON values built from bytes. */
  for (int i = 0; i < 5000; i++) {
    uint8_t bytes[64];
    for (size_t j = 0; j < sizeof bytes; j++) {
      r = r * 1103515245 + 12345;
      bytes[j] = (uint8_t)(r >> 16);
    }
    bson_t *d = bson_new();
    BSON_APPEND_UTF8(d, "s", "x");
    bson_append_binary(d, "b", 1, BSON_SUBTYPE_BINARY, bytes, sizeof bytes);
    BSON_APPEND_DOUBLE(d, "d", (double)r / 7.0);
    bson_t *fuzzed = bson_new_from_data(bson_get_data(d), d->len);
    if (fuzzed) {
      static const char *const all[] = {"s", "b", "d", "x", NULL};
      struct afs_canon c;
      afs_canon_init(&c, "p");
      afs_canon_fields(&c, fuzzed, all);
      CHECK(c.bad); /* binary never signs */
      afs_canon_free(&c);
      bson_destroy(fuzzed);
    }
    bson_destroy(d);
  }
}

/* The digest a mount remembers verified seals by: it changes with any signed field and
 * with the signature, and not with fields the seal does not cover. */
static void test_digest(void) {
  uint8_t a[32], b[32];
  bson_t *d = BCON_NEW("_id", "x", "filePath", "a.txt", "caption", "c", "assetfsSeal", "sig");
  CHECK(afs_auth_doc_digest(AFS_REQ_ASSET, d, a));
  bson_t *e = BCON_NEW("caption", "other", "assetfsSeal", "sig", "filePath", "a.txt", "_id", "x");
  CHECK(afs_auth_doc_digest(AFS_REQ_ASSET, e, b) && !memcmp(a, b, 32));
  bson_destroy(e);
  e = BCON_NEW("_id", "x", "filePath", "b.txt", "assetfsSeal", "sig");
  CHECK(afs_auth_doc_digest(AFS_REQ_ASSET, e, b) && memcmp(a, b, 32));
  bson_destroy(e);
  e = BCON_NEW("_id", "x", "filePath", "a.txt", "assetfsSeal", "sig2");
  CHECK(afs_auth_doc_digest(AFS_REQ_ASSET, e, b) && memcmp(a, b, 32));
  bson_destroy(e);
  e = BCON_NEW("_id", "x", "filePath", "a.txt");
  CHECK(!afs_auth_doc_digest(AFS_REQ_ASSET, e, b)); /* unsigned */
  bson_destroy(e);
  bson_destroy(d);
}

int main(void) {
  CHECK(mkdtemp(dir) != NULL);
  test_digest();
  test_keys();
  test_canon();
  test_clients();
  test_patterns();
  test_mutations();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  TEST_MAIN_END();
}
