/* The upload pipeline, its workers and the completion poller (src/fs/upload) over the
 * in-memory record store (fake_store.h) and a loopback PUT server: no FUSE, no database,
 * no broker. Each case is a path a written file takes, with the store's faults and the
 * races the integration tests can only hit by chance. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "afs_test.h"
#include "afs_testsrv.h"
#include "assetfs/clock.h"
#include "fake_store.h"
#include "upload/upload_int.h"

/* ---------------------------------------------------------------- PUT server */

#define MAX_PUTS 512

struct putsrv {
  int lfd, port;
  pthread_t th;
  pthread_mutex_t mu;
  int n;
  char id[MAX_PUTS][AFS_OID_HEX];
  char body[MAX_PUTS][64];
};

static void *put_serve(void *ctx, int fd) {
  struct putsrv *s = ctx;
  char buf[8192];
  size_t have = 0;
  for (;;) {
    char *end;
    while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
      ssize_t r = have < sizeof buf ? recv(fd, buf + have, sizeof buf - have, 0) : -1;
      if (r <= 0)
        goto out;
      have += (size_t)r;
    }
    size_t head = (size_t)(end - buf) + 4;
    char *cl = strcasestr(buf, "Content-Length:");
    size_t len = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
    char id[AFS_OID_HEX] = "";
    const char *slash = memchr(buf, '/', head);
    if (slash)
      snprintf(id, sizeof id, "%.24s", slash + 1);
    while (have < head + len) {
      ssize_t r = have < sizeof buf ? recv(fd, buf + have, sizeof buf - have, 0) : -1;
      if (r <= 0)
        goto out;
      have += (size_t)r;
    }
    pthread_mutex_lock(&s->mu);
    if (s->n < MAX_PUTS) {
      memcpy(s->id[s->n], id, 25);
      snprintf(s->body[s->n], sizeof s->body[s->n], "%.*s", (int)(len < 63 ? len : 63), buf + head);
      s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    testsrv_send_all(fd, ok, sizeof ok - 1);
    memmove(buf, buf + head + len, have - head - len);
    have -= head + len;
  }
out:
  close(fd);
  return NULL;
}

static void *put_accept(void *arg) {
  struct putsrv *s = arg;
  testsrv_accept_each(s->lfd, put_serve, s);
  return NULL;
}

static int puts_total(struct putsrv *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* How many PUTs reached record id, and the last body (into body, may be NULL). */
static int puts_of(struct putsrv *s, const char *id, char *body) {
  int n = 0;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->id[i], id)) {
      n++;
      if (body)
        strcpy(body, s->body[i]);
    }
  pthread_mutex_unlock(&s->mu);
  return n;
}

/* ---------------------------------------------------------------- set-up */

static struct putsrv srv;
static struct fake_store fake;
static struct afs_staging *st;
static struct afs_uploader *up;
static struct afs_fs_options opt;

static struct afs_wfile *written(const char *path, const char *data) {
  struct afs_error err = {0};
  struct afs_wfile *wf = afs_staging_create(st, "user_id=t", path, "text/plain", NULL, &err);
  CHECK(wf != NULL);
  CHECK(pwrite(wf->fd, data, strlen(data), 0) == (ssize_t)strlen(data));
  afs_staging_account(st, wf, (int64_t)strlen(data), false);
  afs_wf_written(wf);
  return wf;
}

static char *id_of(struct afs_wfile *wf, char id[AFS_OID_HEX]) {
  pthread_mutex_lock(&wf->mu);
  memcpy(id, wf->id, 25);
  pthread_mutex_unlock(&wf->mu);
  return id;
}

static enum afs_wstate state_of(struct afs_wfile *wf) {
  pthread_mutex_lock(&wf->mu);
  enum afs_wstate s = wf->state;
  pthread_mutex_unlock(&wf->mu);
  return s;
}

/* Waits up to ms for wf to reach state s. */
static bool wait_state(struct afs_wfile *wf, enum afs_wstate s, int ms) {
  for (int64_t end = afs_monotonic_ms() + ms; afs_monotonic_ms() < end; usleep(10000))
    if (state_of(wf) == s)
      return true;
  return state_of(wf) == s;
}

static bool wait_status(const char *id, const char *status, int ms) {
  struct fake_rec r;
  for (int64_t end = afs_monotonic_ms() + ms; afs_monotonic_ms() < end; usleep(10000))
    if (fake_get(&fake, id, &r) && !strcmp(r.status, status))
      return true;
  return false;
}

/* ---------------------------------------------------------------- cases */

/* Default mode: the record made at create, the flush uploads and sets `uploaded`, the
 * broker's completion is seen by the poller. */
static void test_flush_then_complete(void) {
  struct afs_error err = {0};
  struct afs_wfile *wf = written("a.txt", "hello a");
  CHECK(afs_upload_begin(up, wf, &err));
  CHECK(afs_upload_flush(up, wf, &err));
  char id[AFS_OID_HEX], body[64] = "";
  id_of(wf, id);
  struct fake_rec r;
  CHECK(fake_get(&fake, id, &r) && !strcmp(r.status, "uploaded") && r.size == 7);
  CHECK_STREQ(r.file_path, "a.txt");
  CHECK(puts_of(&srv, id, body) == 1);
  CHECK_STREQ(body, "hello a");
  CHECK(state_of(wf) == AFS_W_UPLOADED);
  CHECK(fake_complete(&fake, id));
  CHECK(wait_state(wf, AFS_W_COMPLETED, 5000));
  afs_staging_unref(st, wf);
}

/* The database fails `uploaded` once: the flush reports it, the file is RETRYING, and
 * the queue's retry schedule uploads it again after the backoff, on a worker. */
static void test_store_fault_retried_in_background(void) {
  struct afs_error err = {0};
  struct afs_wfile *wf = written("retry.txt", "retry me");
  CHECK(afs_upload_begin(up, wf, &err));
  fake_fail(&fake, F_SET_UPLOADED, 1);
  CHECK(!afs_upload_flush(up, wf, &err));
  CHECK(err.code == EIO);
  CHECK(state_of(wf) == AFS_W_RETRYING);
  CHECK(wait_state(wf, AFS_W_UPLOADED, 8000)); /* first backoff: 2 s */
  char id[AFS_OID_HEX];
  CHECK(wait_status(id_of(wf, id), "uploaded", 1000));
  CHECK(puts_of(&srv, id, NULL) == 2); /* the same record, PUT again */
  afs_staging_unref(st, wf);
}

struct unlink_race {
  struct afs_wfile *wf;
};

static void unlink_now(void *ctx) {
  struct unlink_race *u = ctx;
  afs_staging_remove(st, u->wf);
  CHECK(afs_upload_unlinked(up, u->wf, NULL));
}

/* Removed while its record is being inserted (the unlink sees no id): nothing may be
 * uploaded on that record, and the record goes (issue 12's rename-over race). */
static void test_unlink_while_record_is_made(void) {
  struct afs_error err = {0};
  struct afs_wfile *wf = written("race.txt", "never uploaded");
  struct unlink_race u = {wf};
  int puts_before = puts_total(&srv);
  pthread_mutex_lock(&fake.mu);
  fake.on_insert = unlink_now;
  fake.on_insert_ctx = &u;
  pthread_mutex_unlock(&fake.mu);
  CHECK(afs_upload_flush(up, wf, &err)); /* nothing of it is left to upload */
  char id[AFS_OID_HEX];
  id_of(wf, id);
  CHECK(id[0]);
  struct fake_rec r;
  CHECK(!fake_get(&fake, id, &r)); /* deleted unused */
  CHECK(puts_total(&srv) == puts_before && puts_of(&srv, id, NULL) == 0);
  afs_staging_unref(st, wf);
}

/* Default mode makes the record at create: a file removed while that insert runs (the
 * unlink sees no id) leaves no pending record behind. */
static void test_unlink_during_create_insert(void) {
  struct afs_error err = {0};
  struct afs_wfile *wf = written("created.txt", "");
  struct unlink_race u = {wf};
  pthread_mutex_lock(&fake.mu);
  fake.on_insert = unlink_now;
  fake.on_insert_ctx = &u;
  pthread_mutex_unlock(&fake.mu);
  CHECK(afs_upload_begin(up, wf, &err));
  char id[AFS_OID_HEX];
  id_of(wf, id);
  struct fake_rec r;
  CHECK(id[0] && !fake_get(&fake, id, &r));
  CHECK(afs_upload_flush(up, wf, &err)); /* nothing to upload for a removed file */
  CHECK(puts_of(&srv, id, NULL) == 0);
  afs_staging_unref(st, wf);
}

/* Removed after `uploaded` (rename over an upload in flight): the record is marked
 * abandoned at once, and the asset the broker makes of it is deleted once it exists. */
static void test_unlink_in_flight_abandons(void) {
  struct afs_error err = {0};
  struct afs_wfile *wf = written("inflight.txt", "old a");
  CHECK(afs_upload_begin(up, wf, &err));
  CHECK(afs_upload_flush(up, wf, &err));
  char id[AFS_OID_HEX];
  id_of(wf, id);
  afs_staging_remove(st, wf);
  CHECK(afs_upload_unlinked(up, wf, &err));
  struct fake_rec r;
  CHECK(fake_get(&fake, id, &r) && r.abandoned);
  /* A broker that does not know the mark completes it as an active asset: the mount's
   * orphan watch deletes it once it exists. */
  pthread_mutex_lock(&fake.mu);
  fake.old_broker = true;
  pthread_mutex_unlock(&fake.mu);
  int deletes = fake_calls(&fake, F_ASSET_DELETED);
  usleep(600 * 1000); /* the orphan is looked at, still `uploaded`, and must stay watched */
  CHECK(fake_complete(&fake, id));
  struct fake_asset a;
  bool deleted = false;
  for (int64_t end = afs_monotonic_ms() + 5000; !deleted && afs_monotonic_ms() < end; usleep(10000))
    deleted = fake_get_asset(&fake, id, &a) && !strcmp(a.status, "deleted");
  CHECK(deleted && fake_calls(&fake, F_ASSET_DELETED) > deletes);
  pthread_mutex_lock(&fake.mu);
  fake.old_broker = false;
  pthread_mutex_unlock(&fake.mu);
  /* The abandon mark cannot be written: the caller hears it (a rename must not go on). */
  struct afs_wfile *wf2 = written("inflight2.txt", "old b");
  CHECK(afs_upload_begin(up, wf2, &err));
  CHECK(afs_upload_flush(up, wf2, &err));
  fake_fail(&fake, F_ABANDON, 1);
  afs_staging_remove(st, wf2);
  memset(&err, 0, sizeof err);
  CHECK(!afs_upload_unlinked(up, wf2, &err) && err.code == EIO);
  afs_staging_unref(st, wf);
  afs_staging_unref(st, wf2);
}

/* A record that goes back to `initialized` after `uploaded` (an update the database
 * lost) is uploaded again on the same record; one the broker refuses ends FAILED. */
static void test_poller_heals_and_fails(void) {
  struct afs_error err = {0};
  struct afs_wfile *wf = written("heal.txt", "heal me");
  CHECK(afs_upload_begin(up, wf, &err));
  CHECK(afs_upload_flush(up, wf, &err));
  char id[AFS_OID_HEX];
  id_of(wf, id);
  fake_set_status(&fake, id, "initialized");
  bool again = false;
  for (int64_t end = afs_monotonic_ms() + 8000; !again && afs_monotonic_ms() < end; usleep(10000))
    again = puts_of(&srv, id, NULL) == 2;
  CHECK(again);
  CHECK(wait_status(id, "uploaded", 2000));
  CHECK(wait_state(wf, AFS_W_UPLOADED, 2000));
  fake_set_status(&fake, id, "error");
  CHECK(wait_state(wf, AFS_W_FAILED, 5000));
  CHECK(afs_upload_flush(up, wf, &err) == false && err.code == AFS_E_BROKER_REFUSED);
  afs_staging_unref(st, wf);
}

/* Write-back: queued files without records get them in few inserts (a batch per
 * worker that finds one), and each exactly one record and one PUT. The store is held
 * while they are queued, as a busy database would be: a worker that picks a file
 * meanwhile waits in its insert, and the next pick batches what came since, so the
 * bound does not depend on how fast this thread queues. */
static void test_queued_files_batch_their_records(void) {
  enum { N = 40 };
  struct afs_wfile *wf[N];
  int inserts = fake_calls(&fake, F_INSERT);
  char path[32];
  for (int i = 0; i < N; i++) {
    snprintf(path, sizeof path, "wb/%02d.txt", i);
    wf[i] = written(path, "queued");
  }
  pthread_mutex_lock(&fake.mu);
  for (int i = 0; i < N; i++)
    afs_upload_queue(up, wf[i]);
  pthread_mutex_unlock(&fake.mu);
  for (int i = 0; i < N; i++)
    CHECK(wait_state(wf[i], AFS_W_UPLOADED, 10000));
  int made = fake_calls(&fake, F_INSERT) - inserts;
  printf("write-back: %d files, %d inserts\n", N, made);
  CHECK(made >= 1 && made <= 2 * opt.upload_workers);
  for (int i = 0; i < N; i++) {
    char id[AFS_OID_HEX];
    CHECK(puts_of(&srv, id_of(wf[i], id), NULL) == 1);
    afs_staging_unref(st, wf[i]);
  }
  CHECK(afs_up_queue_length(up) == 0);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  pthread_mutex_init(&srv.mu, NULL);
  srv.lfd = testsrv_listen(&srv.port);
  CHECK(srv.lfd >= 0);
  pthread_create(&srv.th, NULL, put_accept, &srv);
  char base[64];
  snprintf(base, sizeof base, "http://127.0.0.1:%d", srv.port);
  fake_init(&fake, base);

  char dir[] = "/tmp/test_upload_pipeline.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  struct afs_error err = {0};
  st = afs_staging_new(dir, &err);
  CHECK(st != NULL);
  opt.uid = "t";
  opt.session_id = "test-session";
  opt.upload_partition = "user_id=t";
  opt.expiration_hours = 24;
  opt.close_timeout = 10;
  opt.upload_workers = 4;
  struct afs_upload_store store = {&fake_store_ops, &fake};
  up = afs_uploader_new_on(st, NULL, &opt, &store, &err);
  CHECK(up != NULL);

  test_flush_then_complete();
  test_store_fault_retried_in_background();
  test_unlink_while_record_is_made();
  test_unlink_during_create_insert();
  test_unlink_in_flight_abandons();
  test_poller_heals_and_fails();
  test_queued_files_batch_their_records();

  afs_uploader_free(up, 1);
  afs_staging_free(st);
  shutdown(srv.lfd, SHUT_RDWR);
  close(srv.lfd);
  pthread_join(srv.th, NULL);
  char cmd[80];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  curl_global_cleanup();
  TEST_MAIN_END();
}
