/* Test tool: signs cases read from stdin so tests/integration/test_sigv4.py can compare
 * the C signer with botocore's, and use C-made URLs against the real S3 server.
 *
 * One case per line, fields separated by one space, every field hex-encoded (bytes of
 * the value), "-" for an empty value:
 *   presign ENDPOINT REGION BUCKET PATHSTYLE(0|1) AK SK METHOD KEY SUBRESOURCE HEADERS
 *           EXPIRES TIME
 *   sign    ENDPOINT REGION BUCKET PATHSTYLE AK SK METHOD KEY PARAMS HEADERS PAYLOADHASH TIME
 * HEADERS is "name:value" lines, PARAMS "name=value" (or "name") lines, joined by '\n';
 * KEY "-" in `sign` means a bucket-level request. TIME is YYYYMMDDTHHMMSSZ.
 * Prints per case one line: the URL (presign), "URL<TAB>AUTHORIZATION<TAB>AMZDATE" (sign),
 * or "ERR <errno> <message>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "assetfs/sigv4.h"

#define MAXF 16

static char *unhex(const char *s) {
  if (!strcmp(s, "-"))
    return strdup("");
  size_t n = strlen(s) / 2;
  char *out = malloc(n + 1);
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    sscanf(s + 2 * i, "%2x", &v);
    out[i] = (char)v;
  }
  out[n] = '\0';
  return out;
}

/* Splits TEXT into lines, each cut at SEP (first occurrence) into name and value. */
static size_t split_pairs(char *text, char sep, const char **names, const char **values,
                          size_t max) {
  size_t n = 0;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line && n < max;
       line = strtok_r(NULL, "\n", &save)) {
    char *c = strchr(line, sep);
    if (c)
      *c = '\0';
    names[n] = line;
    values[n] = c ? c + 1 : NULL;
    n++;
  }
  return n;
}

int main(void) {
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, stdin) > 0) {
    line[strcspn(line, "\r\n")] = '\0';
    char *f[MAXF + 1] = {0};
    size_t nf = 0;
    char *save = NULL;
    char *cmd = strtok_r(line, " ", &save);
    if (!cmd)
      continue;
    for (char *t = strtok_r(NULL, " ", &save); t && nf < MAXF; t = strtok_r(NULL, " ", &save))
      f[nf++] = unhex(t);
    struct afs_error err = {0};
    if (nf != 12) {
      printf("ERR 22 expected 12 fields, got %zu\n", nf);
      goto next;
    }
    struct afs_s3_target t = {.endpoint = *f[0] ? f[0] : NULL,
                              .region = f[1],
                              .bucket = f[2],
                              .path_style = f[3][0] == '1',
                              .access_key = f[4],
                              .secret_key = f[5]};
    const char *hn[32], *hv[32];
    size_t nh = split_pairs(f[9], ':', hn, hv, 32);
    struct afs_sigv4_header h[32];
    for (size_t i = 0; i < nh; i++)
      h[i] = (struct afs_sigv4_header){hn[i], hv[i] ? hv[i] : ""};
    time_t now;
    if (!afs_sigv4_parse_time(f[11], &now)) {
      printf("ERR 22 bad time\n");
      goto next;
    }
    if (!strcmp(cmd, "presign")) {
      char *url = afs_sigv4_presign(&t, f[6], f[7], *f[8] ? f[8] : NULL, h, nh,
                                    strtol(f[10], NULL, 10), now, &err);
      if (url)
        printf("%s\n", url);
      else
        printf("ERR %d %s\n", err.code, err.msg);
      free(url);
    } else if (!strcmp(cmd, "sign")) {
      const char *pn[32], *pv[32];
      size_t np = split_pairs(f[8], '=', pn, pv, 32);
      struct afs_sigv4_param p[32];
      for (size_t i = 0; i < np; i++)
        p[i] = (struct afs_sigv4_param){pn[i], pv[i]};
      struct afs_sigv4_signed s;
      if (afs_sigv4_sign_request(&t, f[6], *f[7] ? f[7] : NULL, p, np, h, nh, *f[10] ? f[10] : NULL,
                                 now, &s, &err)) {
        printf("%s\t%s\t%s\n", s.url, s.authorization, s.amz_date);
        afs_sigv4_signed_free(&s);
      } else {
        printf("ERR %d %s\n", err.code, err.msg);
      }
    } else {
      printf("ERR 22 unknown command %s\n", cmd);
    }
  next:
    fflush(stdout);
    for (size_t i = 0; i < nf; i++)
      free(f[i]);
  }
  free(line);
  return 0;
}
