/* `assetfs-broker sign`: prints one presigned URL for operators and tests (DESIGN.md §7).
 *
 *   assetfs-broker sign --method GET|PUT|HEAD|DELETE --key KEY [--expires SECONDS]
 *                       [--time YYYYMMDDTHHMMSSZ] [--content-type T]
 *                       [--upload-id ID --part-number N]
 *
 * The S3 settings come from the broker's config (environment or --config file).
 */
#ifndef ASSETFS_SIGN_CMD_H
#define ASSETFS_SIGN_CMD_H

#include "assetfs/config.h"

#define AFS_SIGN_DEFAULT_EXPIRES 3600L

/* argv[0] is "sign". Prints the URL on stdout and returns the process exit code:
 * 0 on success, 2 on a usage error (message on stderr), 1 when the configuration
 * cannot sign (no bucket or credentials). */
int afs_sign_cmd(int argc, char **argv, const struct afs_config *cfg);

/* `assetfs-broker keygen FILE` (keygen.c): makes an Ed25519 key pair for a client or for
 * the broker (auth.h: FILE, PKCS#8 PEM 0600, and FILE.pub) and prints the public line
 * for the clients file. argv[0] is "keygen". 0 made, 2 usage error, 1 failure (FILE
 * exists, cannot write). */
int afs_keygen_cmd(int argc, char **argv);

#endif
