/* assetfs-broker: entry point. Parses settings, then either runs one command
 * (`sign`) or the broker loop until SIGTERM/SIGINT. */
#include <stdio.h>
#include <string.h>

#include "assetfs/config.h"
#include "assetfs/log.h"

int main(int argc, char *argv[]) {
  if (argc > 1 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
    printf("assetfs-broker %s\n", ASSETFS_VERSION);
    return 0;
  }
  afs_log_init("assetfs-broker", AFS_LOG_INFO, false);
  afs_err("the broker loop is not built yet");
  return 1;
}
