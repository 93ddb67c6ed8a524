/* A tiny test harness for the C unit tests (run by CTest). Each check prints the
 * failing expression with file and line; main returns non-zero if any check failed. */
#ifndef AFS_TEST_H
#define AFS_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int afs_test_failures, afs_test_checks;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    afs_test_checks++;                                                                             \
    if (!(cond)) {                                                                                 \
      afs_test_failures++;                                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
    }                                                                                              \
  } while (0)

#define CHECK_STREQ(a, b)                                                                          \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    afs_test_checks++;                                                                             \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                       \
      afs_test_failures++;                                                                         \
      fprintf(stderr, "%s:%d: %s == %s failed:\n  got      '%s'\n  expected '%s'\n", __FILE__,     \
              __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                           \
    }                                                                                              \
  } while (0)

/* Live tests need the stack: returns ASSETFS_MONGO_URI and fills dbname with a database
 * of this process's own ("<prefix>_<pid>"), or exits 77 (CTest: skipped) without it. */
static inline const char *afs_test_live_db(const char *prefix, char *dbname, size_t n) {
  const char *uri = getenv("ASSETFS_MONGO_URI");
  if (!uri) {
    printf("ASSETFS_MONGO_URI not set: skipped\n");
    exit(77);
  }
  snprintf(dbname, n, "%s_%d", prefix, (int)getpid());
  return uri;
}

#define TEST_MAIN_END()                                                                            \
  do {                                                                                             \
    printf("%d checks, %d failed\n", afs_test_checks, afs_test_failures);                          \
    return afs_test_failures ? 1 : 0;                                                              \
  } while (0)

#endif
