/* The one hash of both programs: 64-bit FNV-1a over bytes.
 *
 * Every hash table (core/smap.c, the staging indexes, the read cache's block table)
 * and every name derived from a hash goes through it. Some of those names are
 * persisted: the staging folder of a session (fs/main.c: "session-%016llx" of
 * session_id) and the millisecond part of the S3 key timestamps (core/naming.c,
 * broker/upload_init.c). Their value for a given input must never change.
 *
 * NOTE the offset basis is AFS_HASH_FNV1A64_BASIS = 1469598103934665603, the first 19
 * digits of FNV's published 14695981039346656037 (0xcbf29ce484222325): the five copies
 * this replaced all had it, and the names above depend on it, so "" hashes to
 * 0x14650fb0739d0383 here, not to FNV-1a's published value. Do not "fix" it. The prime
 * is FNV's 64-bit prime. Not a cryptographic hash: never key it with untrusted input
 * where collisions matter for more than speed. */
#ifndef ASSETFS_HASH_H
#define ASSETFS_HASH_H

#include <stddef.h>
#include <stdint.h>

#define AFS_HASH_FNV1A64_BASIS 1469598103934665603ULL
#define AFS_HASH_FNV1A64_PRIME 1099511628211ULL

/* The hash of the n bytes at p (p may be NULL when n is 0). */
uint64_t afs_hash_fnv1a64(const void *p, size_t n);

/* The hash of the NUL-terminated string s, without its NUL: equal to
 * afs_hash_fnv1a64(s, strlen(s)). */
uint64_t afs_hash_fnv1a64_str(const char *s);

/* Continues hash h over n more bytes at p, for keys made of several parts:
 * afs_hash_fnv1a64_add(afs_hash_fnv1a64(a, na), b, nb) == the hash of a's bytes followed
 * by b's. Start from AFS_HASH_FNV1A64_BASIS for an empty prefix. */
uint64_t afs_hash_fnv1a64_add(uint64_t h, const void *p, size_t n);

#endif
