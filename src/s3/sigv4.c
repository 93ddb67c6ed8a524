/* Placeholder until the SigV4 module lands. */
#include "assetfs/sigv4.h"
