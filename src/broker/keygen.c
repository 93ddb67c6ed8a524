/* `assetfs-broker keygen FILE` (sign_cmd.h): a key pair for auth=required. */
#include <stdio.h>
#include <string.h>

#include "assetfs/auth.h"
#include "assetfs/sign_cmd.h"

static const char usage[] =
    "usage: assetfs-broker keygen FILE\n"
    "Makes an Ed25519 key pair: the private key in FILE (PKCS#8 PEM, mode 0600; an\n"
    "existing FILE is never overwritten) and the public key in FILE.pub. Prints the\n"
    "public key: put it in the broker's clients file as `UID KEY PATTERNS` for a client,\n"
    "or give FILE.pub to mounts as broker_key= for the broker's own key.\n";

int afs_keygen_cmd(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    fputs(usage, stdout);
    return 0;
  }
  if (argc != 2 || !argv[1][0] || argv[1][0] == '-') {
    fputs("assetfs-broker keygen: one FILE expected\n", stderr);
    fputs(usage, stderr);
    return 2;
  }
  struct afs_error err = {0};
  char pub[AFS_AUTH_PUB_B64];
  if (!afs_auth_keygen(argv[1], pub, &err)) {
    fprintf(stderr, "assetfs-broker keygen: %s\n", err.msg);
    return 1;
  }
  printf("%s\n", pub);
  return fflush(stdout) == 0 ? 0 : 1;
}
