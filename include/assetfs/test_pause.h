/* TEST ONLY: named pauses that let integration tests act inside a window of a running
 * program (rename a file between the broker's claim and its upsert, finish an upload
 * between the two halves of a listing). The program names its variable once at start
 * (afs_test_pause_env); "point=ms[,point=ms...]" in it makes afs_test_pause log
 * "test pause: <point> <what>" and sleep ms at that point. Unset in production, where a
 * pause point costs one branch. */
#ifndef ASSETFS_TEST_PAUSE_H
#define ASSETFS_TEST_PAUSE_H

/* Reads the pause points from environment variable `var` (once; later calls are
 * ignored), warning when any are set. */
void afs_test_pause_env(const char *var);

/* Pauses at `point` if the variable names it; `what` (may be NULL) goes into the log. */
void afs_test_pause(const char *point, const char *what);

#endif
