/* Ed25519 keys and signatures (auth.h) on OpenSSL's EVP interface: key files as PKCS#8
 * PEM (private, 0600) and one base64 line (public), signing and verifying messages. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assetfs/alloc.h"
#include "assetfs/auth.h"

/* base64 of n bytes into out (4*ceil(n/3)+1 bytes). */
static void b64(const uint8_t *in, size_t n, char *out) {
  EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Decodes exactly `want` bytes from base64 text s (len bytes, blanks around ignored). */
static bool unb64(const char *s, size_t len, uint8_t *out, size_t want) {
  while (len && (*s == ' ' || *s == '\t'))
    s++, len--;
  while (len &&
         (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' || s[len - 1] == '\r'))
    len--;
  size_t enc = 4 * ((want + 2) / 3);
  if (len != enc)
    return false;
  uint8_t buf[128];
  if (want > sizeof buf - 2)
    return false;
  char tmp[180];
  memcpy(tmp, s, len);
  tmp[len] = '\0';
  int n = EVP_DecodeBlock(buf, (const unsigned char *)tmp, (int)len);
  /* EVP_DecodeBlock counts the padding's zero bytes: the padding tells how many. */
  size_t pad = (len >= 1 && tmp[len - 1] == '=') + (len >= 2 && tmp[len - 2] == '=');
  if (n < 0 || (size_t)n - pad != want)
    return false;
  memcpy(out, buf, want);
  return true;
}

void afs_auth_pub_format(const uint8_t pub[AFS_AUTH_PUB_LEN], char out[AFS_AUTH_PUB_B64]) {
  b64(pub, AFS_AUTH_PUB_LEN, out);
}

bool afs_auth_pub_parse(const char *s, size_t len, uint8_t pub[AFS_AUTH_PUB_LEN],
                        struct afs_error *err) {
  if (!unb64(s, len, pub, AFS_AUTH_PUB_LEN))
    return afs_error_set(err, EINVAL,
                         "not a public key (base64 of 32 bytes, as assetfs-broker keygen writes)");
  return true;
}

bool afs_auth_key_public(const afs_auth_key *k, uint8_t pub[AFS_AUTH_PUB_LEN]) {
  size_t n = AFS_AUTH_PUB_LEN;
  return EVP_PKEY_get_raw_public_key(k, pub, &n) == 1 && n == AFS_AUTH_PUB_LEN;
}

/* Writes text to a new file at path with mode; never over an existing one. */
static bool write_new(const char *path, const char *text, size_t len, mode_t mode,
                      struct afs_error *err) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0)
    return afs_error_set(err, errno, "cannot create %s: %s", path, strerror(errno));
  bool ok = fchmod(fd, mode) == 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
  int e = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    e = errno;
  }
  if (!ok) {
    unlink(path);
    return afs_error_set(err, e, "cannot write %s: %s", path, strerror(e));
  }
  return true;
}

bool afs_auth_keygen(const char *path, char pub_b64[AFS_AUTH_PUB_B64], struct afs_error *err) {
  bool ok = false;
  char *pubpath = NULL, *pem = NULL;
  BIO *bio = NULL;
  EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  uint8_t pub[AFS_AUTH_PUB_LEN];
  if (!k || !afs_auth_key_public(k, pub)) {
    afs_error_set(err, EIO, "cannot make an Ed25519 key (OpenSSL)");
    goto done;
  }
  bio = BIO_new(BIO_s_mem());
  if (!bio || PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) != 1) {
    afs_error_set(err, EIO, "cannot encode the key (OpenSSL)");
    goto done;
  }
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  afs_xasprintf(&pubpath, "%s.pub", path);
  char line[AFS_AUTH_PUB_B64];
  afs_auth_pub_format(pub, line);
  afs_xasprintf(&pem, "%s\n", line);
  if (!write_new(path, data, (size_t)n, 0600, err))
    goto done;
  if (!write_new(pubpath, pem, strlen(pem), 0644, err)) {
    unlink(path);
    goto done;
  }
  memcpy(pub_b64, line, sizeof line);
  ok = true;
done:
  BIO_free(bio);
  EVP_PKEY_free(k);
  free(pubpath);
  free(pem);
  return ok;
}

afs_auth_key *afs_auth_key_load(const char *path, struct afs_error *err) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    afs_error_set(err, errno, "cannot open the key file %s: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  EVP_PKEY *k = NULL;
  FILE *f = NULL;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    afs_error_set(err, EINVAL, "the key file %s is not a regular file", path);
  } else if (st.st_mode & 077) {
    afs_error_set(err, EPERM,
                  "the key file %s is accessible by group or others (mode %03o); "
                  "chmod 600 it",
                  path, (unsigned)(st.st_mode & 0777));
  } else if (!(f = fdopen(fd, "r"))) {
    afs_error_set(err, errno, "cannot read %s: %s", path, strerror(errno));
  } else {
    fd = -1; /* f owns it */
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (!k)
      afs_error_set(err, EINVAL, "%s holds no private key (PKCS#8 PEM)", path);
    else if (EVP_PKEY_get_base_id(k) != EVP_PKEY_ED25519) {
      afs_error_set(err, EINVAL, "%s is not an Ed25519 key", path);
      EVP_PKEY_free(k);
      k = NULL;
    }
  }
  if (f)
    fclose(f);
  if (fd >= 0)
    close(fd);
  return k;
}

void afs_auth_key_free(afs_auth_key *k) {
  EVP_PKEY_free(k);
}

bool afs_auth_pub_load(const char *path, uint8_t pub[AFS_AUTH_PUB_LEN], struct afs_error *err) {
  FILE *f = fopen(path, "re");
  if (!f)
    return afs_error_set(err, errno, "cannot open %s: %s", path, strerror(errno));
  char line[256];
  bool ok = fgets(line, sizeof line, f) != NULL;
  fclose(f);
  if (!ok)
    return afs_error_set(err, EINVAL, "%s is empty", path);
  struct afs_error why = {0};
  if (!afs_auth_pub_parse(line, strlen(line), pub, &why))
    return afs_error_set(err, EINVAL, "%s: %s", path, why.msg);
  return true;
}

bool afs_auth_sign(const afs_auth_key *k, const void *msg, size_t len,
                   char sig_b64[AFS_AUTH_SIG_B64], struct afs_error *err) {
  uint8_t sig[AFS_AUTH_SIG_LEN];
  size_t n = sizeof sig;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, (EVP_PKEY *)k) == 1 &&
            EVP_DigestSign(md, sig, &n, msg, len) == 1 && n == sizeof sig;
  EVP_MD_CTX_free(md);
  if (!ok)
    return afs_error_set(err, EIO, "signing failed (OpenSSL)");
  b64(sig, sizeof sig, sig_b64);
  return true;
}

bool afs_auth_verify(const uint8_t pub[AFS_AUTH_PUB_LEN], const void *msg, size_t len,
                     const char *sig_b64) {
  uint8_t sig[AFS_AUTH_SIG_LEN];
  if (!sig_b64 || !unb64(sig_b64, strlen(sig_b64), sig, sizeof sig))
    return false;
  EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, AFS_AUTH_PUB_LEN);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = k && md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
            EVP_DigestVerify(md, sig, sizeof sig, msg, len) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(k);
  return ok;
}
