/* The indexes the broker and the filesystem rely on, created at broker start-up
 * (idempotent; FerretDB has no TTL indexes, so none is used). */
#ifndef ASSETFS_INDEXES_H
#define ASSETFS_INDEXES_H

#include <stdbool.h>

#include "assetfs/db.h"
#include "assetfs/error.h"

bool afs_indexes_ensure(struct afs_db *db, struct afs_error *err);

#endif
