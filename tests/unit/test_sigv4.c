/* SigV4: AWS's published examples (Signature Version 4 for S3, "Examples" pages of
 * sig-v4-header-based-auth and sigv4-query-string-auth), URI-encoding edge cases,
 * addressing, and input checks. Agreement with botocore on random inputs is in
 * tests/integration/test_sigv4.py. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "afs_test.h"
#include "assetfs/sigv4.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

static const struct afs_s3_target aws_example = {
    .endpoint = "https://s3.amazonaws.com",
    .region = "us-east-1",
    .bucket = "examplebucket",
    .access_key = AK,
    .secret_key = SK,
    .path_style = false,
};

static time_t t20130524(void) {
  time_t t = 0;
  CHECK(afs_sigv4_parse_time("20130524T000000Z", &t));
  return t;
}

static const char *sig_of(const struct afs_sigv4_signed *s) {
  const char *p = s->authorization ? strstr(s->authorization, "Signature=") : NULL;
  return p ? p + 10 : "";
}

static void test_presign_example(void) {
  struct afs_error err = {0};
  char *url =
      afs_sigv4_presign(&aws_example, "GET", "test.txt", NULL, NULL, 0, 86400, t20130524(), &err);
  CHECK_STREQ(url,
              "https://examplebucket.s3.amazonaws.com/test.txt"
              "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
              "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
              "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
              "&X-Amz-Signature="
              "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
  free(url);
  /* The default endpoint for us-east-1 is the same host. */
  struct afs_s3_target t = aws_example;
  t.endpoint = NULL;
  url = afs_sigv4_presign(&t, "GET", "test.txt", NULL, NULL, 0, 86400, t20130524(), &err);
  CHECK(url && strstr(url, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"));
  free(url);
}

static void test_header_examples(void) {
  struct afs_error err = {0};
  struct afs_sigv4_signed s;
  time_t now = t20130524();

  /* GET Object with a Range header. */
  struct afs_sigv4_header range = {"range", "bytes=0-9"};
  CHECK(afs_sigv4_sign_request(&aws_example, "GET", "test.txt", NULL, 0, &range, 1, NULL, now, &s,
                               &err));
  CHECK_STREQ(s.authorization,
              "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
              "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
              "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK_STREQ(s.url, "https://examplebucket.s3.amazonaws.com/test.txt");
  CHECK_STREQ(s.host, "examplebucket.s3.amazonaws.com");
  CHECK_STREQ(s.amz_date, "20130524T000000Z");
  afs_sigv4_signed_free(&s);

  /* PUT Object: '$' in the key, a Date header and a storage class. */
  const char *body = "Welcome to Amazon S3.";
  char ph[65];
  afs_sha256_hex(body, strlen(body), ph);
  CHECK_STREQ(ph, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  struct afs_sigv4_header put_h[] = {{"date", "Fri, 24 May 2013 00:00:00 GMT"},
                                     {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
  CHECK(afs_sigv4_sign_request(&aws_example, "PUT", "test$file.text", NULL, 0, put_h, 2, ph, now,
                               &s, &err));
  CHECK_STREQ(sig_of(&s), "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
  CHECK_STREQ(s.url, "https://examplebucket.s3.amazonaws.com/test%24file.text");
  CHECK(strstr(s.authorization,
               "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"));
  afs_sigv4_signed_free(&s);

  /* GET Bucket Lifecycle: a bucket-level subresource without a value. */
  struct afs_sigv4_param lc = {"lifecycle", NULL};
  CHECK(afs_sigv4_sign_request(&aws_example, "GET", NULL, &lc, 1, NULL, 0, NULL, now, &s, &err));
  CHECK_STREQ(sig_of(&s), "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
  CHECK_STREQ(s.url, "https://examplebucket.s3.amazonaws.com/?lifecycle=");
  afs_sigv4_signed_free(&s);

  /* Get Bucket (List Objects), parameters given out of order. */
  struct afs_sigv4_param lp[] = {{"prefix", "J"}, {"max-keys", "2"}};
  CHECK(afs_sigv4_sign_request(&aws_example, "GET", NULL, lp, 2, NULL, 0, NULL, now, &s, &err));
  CHECK_STREQ(sig_of(&s), "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
  CHECK_STREQ(s.url, "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J");
  afs_sigv4_signed_free(&s);
}

static void test_encoding(void) {
  char *e;
  e = afs_s3_uri_encode("a b+c%d~e=f/g//h", true);
  CHECK_STREQ(e, "a%20b%2Bc%25d~e%3Df/g//h");
  free(e);
  e = afs_s3_uri_encode("a/b", false);
  CHECK_STREQ(e, "a%2Fb");
  free(e);
  e = afs_s3_uri_encode("\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80.jpg", true); /* "été 😀.jpg" */
  CHECK_STREQ(e, "%C3%A9t%C3%A9%20%F0%9F%98%80.jpg");
  free(e);
  e = afs_s3_uri_encode("AZaz09-._~!*'()[]@:;,?#&$\t\x7f", true);
  CHECK_STREQ(e, "AZaz09-._~%21%2A%27%28%29%5B%5D%40%3A%3B%2C%3F%23%26%24%09%7F");
  free(e);

  struct afs_s3_target t = aws_example;
  t.endpoint = "http://127.0.0.1:7070";
  t.bucket = "b";
  t.path_style = true;
  char *u = afs_s3_object_url(&t, "/lead//x y+z");
  CHECK_STREQ(u, "http://127.0.0.1:7070/b//lead//x%20y%2Bz");
  free(u);
  /* Default ports are left out of Host but kept in the URL as given. */
  t.endpoint = "https://minio.example:443/";
  struct afs_sigv4_signed s;
  struct afs_error err = {0};
  CHECK(afs_sigv4_sign_request(&t, "HEAD", "k", NULL, 0, NULL, 0, NULL, t20130524(), &s, &err));
  CHECK_STREQ(s.host, "minio.example");
  CHECK_STREQ(s.url, "https://minio.example:443/b/k");
  afs_sigv4_signed_free(&s);

  /* Subresources are normalised: the URL and the signed string agree. */
  t.endpoint = "http://127.0.0.1:7070";
  u = afs_sigv4_presign(&t, "PUT", "k", "uploadId=a%2bb~c&partNumber=3", NULL, 0, 60, t20130524(),
                        &err);
  CHECK(u && strstr(u, "/b/k?X-Amz-Algorithm"));
  CHECK(u && strstr(u, "&partNumber=3&uploadId=a%2Bb~c&X-Amz-Signature="));
  free(u);
  struct afs_sigv4_param pp[] = {{"uploadId", "a+b~c"}, {"partNumber", "3"}};
  char *u2 = afs_sigv4_presign_params(&t, "PUT", "k", pp, 2, NULL, 0, 60, t20130524(), &err);
  u = afs_sigv4_presign(&t, "PUT", "k", "partNumber=3&uploadId=a%2Bb%7Ec", NULL, 0, 60, t20130524(),
                        &err);
  CHECK_STREQ(u, u2);
  free(u);
  free(u2);

  char *p = afs_s3_public_url("https://cdn.example.com/assets/", "public/a b.jpg");
  CHECK_STREQ(p, "https://cdn.example.com/assets/public/a%20b.jpg");
  free(p);
  CHECK(afs_s3_public_url("ftp://x", "k") == NULL);
  CHECK(afs_s3_public_url(NULL, "k") == NULL);
}

static void test_rejects(void) {
  struct afs_error err = {0};
  time_t now = t20130524();
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", NULL, NULL, 0, 0, now, &err));
  CHECK(err.code == EINVAL && strstr(err.msg, "604800"));
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", NULL, NULL, 0, 604801, now, &err));
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", NULL, NULL, 0, -5, now, &err));
  char *ok = afs_sigv4_presign(&aws_example, "GET", "k", NULL, NULL, 0, 604800, now, &err);
  CHECK(ok != NULL);
  free(ok);
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "", NULL, NULL, 0, 60, now, &err));
  CHECK(!afs_sigv4_presign(&aws_example, "get", "k", NULL, NULL, 0, 60, now, &err));
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", "a=%zz", NULL, 0, 60, now, &err));
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", "X-Amz-Expires=9", NULL, 0, 60, now, &err));
  struct afs_sigv4_header bad = {"content-type", "a\r\nx: y"};
  CHECK(!afs_sigv4_presign(&aws_example, "PUT", "k", NULL, &bad, 1, 60, now, &err));
  struct afs_sigv4_header upper = {"Content-Type", "a"};
  CHECK(!afs_sigv4_presign(&aws_example, "PUT", "k", NULL, &upper, 1, 60, now, &err));
  char longkey[1100];
  memset(longkey, 'a', sizeof longkey - 1);
  longkey[sizeof longkey - 1] = '\0';
  CHECK(!afs_sigv4_presign(&aws_example, "GET", longkey, NULL, NULL, 0, 60, now, &err));
  struct afs_s3_target t = aws_example;
  t.endpoint = "ftp://x";
  CHECK(!afs_sigv4_presign(&t, "GET", "k", NULL, NULL, 0, 60, now, &err));
  t.endpoint = "http://x/path";
  CHECK(!afs_sigv4_presign(&t, "GET", "k", NULL, NULL, 0, 60, now, &err));
  t.endpoint = "http://x:8x";
  CHECK(!afs_sigv4_presign(&t, "GET", "k", NULL, NULL, 0, 60, now, &err));
  t = aws_example;
  t.bucket = "Not_DNS";
  CHECK(!afs_sigv4_presign(&t, "GET", "k", NULL, NULL, 0, 60, now, &err));
  t.path_style = true;
  ok = afs_sigv4_presign(&t, "GET", "k", NULL, NULL, 0, 60, now, &err);
  CHECK(ok && strstr(ok, "https://s3.amazonaws.com/Not_DNS/k?"));
  free(ok);
  t = aws_example;
  t.secret_key = "";
  CHECK(!afs_sigv4_presign(&t, "GET", "k", NULL, NULL, 0, 60, now, &err));

  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", NULL, NULL, 0, 60, (time_t)-1, &err));
  CHECK(!afs_sigv4_presign(&aws_example, "GET", "k", NULL, NULL, 0, 60, (time_t)1 << 40, &err));
  CHECK(err.code == EINVAL && strstr(err.msg, "time"));
  time_t x;
  CHECK(!afs_sigv4_parse_time("20130231T000000Z", &x));
  CHECK(!afs_sigv4_parse_time("20130524T000000", &x));
  CHECK(!afs_sigv4_parse_time("2013-05-24T00:00", &x));
  CHECK(afs_sigv4_parse_time("20991231T235959Z", &x));
}

static void test_region(void) {
  struct afs_s3_target t = aws_example;
  t.endpoint = NULL;
  t.region = "eu-west-3";
  char *u = afs_s3_object_url(&t, "a");
  CHECK_STREQ(u, "https://examplebucket.s3.eu-west-3.amazonaws.com/a");
  free(u);
}

int main(void) {
  test_presign_example();
  test_header_examples();
  test_encoding();
  test_rejects();
  test_region();
  TEST_MAIN_END();
}
