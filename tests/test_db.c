/* Coordinator store: every task/job transition on an on-disk database in /tmp, including a close
 * and reopen in the middle of a job (what a coordinator restart does). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "fc_db.h"

static char path[256];
static fc_err_t err;

static const char *SPEC =
    "name: j\nstore: /tmp/st\nmax_attempts: 2\ntasks:\n"
    "  - {name: a, kind: checksum, outputs: [a.out], params: {ms: '5'}}\n"
    "  - {name: b, kind: checksum, deps: [a], inputs: [/x], outputs: [b.out]}\n"
    "  - {name: c, kind: sleep, cap: other}\n";

static char *const CK[] = {"checksum"};
static char *const OTHER[] = {"other", "train"};
static char *const BOTH[] = {"checksum", "other"};

static int setup(void **state) {
  (void)state;
  snprintf(path, sizeof path, "/tmp/fc_test_db.%d.sqlite", (int)getpid());
  unlink(path);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char p[300];
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path), unlink(p);
  snprintf(p, sizeof p, "%s-shm", path), unlink(p);
  return 0;
}

static fc_db_t *open_db(void) {
  fc_db_t *db;
  if (fc_db_open(&db, path, &err)) fail_msg("%s", err.msg);
  return db;
}

static int64_t submit(fc_db_t *db, const char *spec) {
  fc_job_t *job;
  if (fc_job_parse(spec, strlen(spec), "spec", &job, &err)) fail_msg("%s", err.msg);
  int64_t id;
  if (fc_db_job_create(db, job, spec, 100, &id, &err)) fail_msg("%s", err.msg);
  fc_job_destroy(&job);
  return id;
}

static int64_t tid(fc_db_t *db, int64_t job, const char *name) {
  int64_t t;
  if (fc_db_task_id(db, job, name, &t, &err)) fail_msg("%s", err.msg);
  return t;
}

static void expect_task(fc_db_t *db, int64_t t, const char *state, int attempts) {
  char s[16];
  int a;
  assert_int_equal(fc_db_task_state(db, t, s, &a, &err), 0);
  assert_string_equal(s, state);
  assert_int_equal(a, attempts);
}

static void expect_job(fc_db_t *db, int64_t j, const char *state) {
  char s[16];
  assert_int_equal(fc_db_job_state(db, j, s, &err), 0);
  assert_string_equal(s, state);
}

/* Leases and returns the task id, or 0 when none. */
static int64_t lease(fc_db_t *db, const char *w, char *const *caps, size_t n, double now) {
  fc_msg_t m;
  int rc = fc_db_lease_next(db, w, caps, n, now, 10, &m, &err);
  assert_true(rc == 0 || rc == 1);
  if (rc == 0) return 0;
  int64_t t = m.task;
  fc_msg_clear(&m);
  return t;
}

/* A heartbeat with one figure. */
static int hb(fc_db_t *db, int64_t task, const char *worker, int64_t token, double now, double fraction,
              const char *message) {
  fc_msg_t m = {.type = FC_MSG_HEARTBEAT, .task = task, .attempt = token, .fraction = fraction};
  fc_msg_set_str(&m.id, worker);
  fc_msg_set_str(&m.message, message);
  fc_msg_add_fig(&m, "loss", 2.25);
  int rc = fc_db_heartbeat(db, &m, now, 10, NULL, &err);
  fc_msg_clear(&m);
  return rc;
}

static void test_schema_and_reopen(void **state) {
  (void)state;
  fc_db_t *db = open_db();
  fc_db_close(&db);
  assert_null(db);
  db = open_db(); /* migrations are not re-run */
  fc_db_close(&db);
  assert_true(fc_db_schema_version() >= 2);
  /* a database left at version 1 (with a job in it) gets the later migrations on open */
  teardown(NULL);
  assert_int_equal(fc_db_open_at(&db, path, 1, &err), 0);
  int64_t j = submit(db, SPEC);
  fc_db_close(&db);
  sqlite3 *h;
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(h, "SELECT user_version FROM pragma_user_version", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 1);
  sqlite3_finalize(st);
  sqlite3_close(h);
  db = open_db();
  assert_int_equal(lease(db, "w", CK, 1, 1), tid(db, j, "a"));
  assert_int_equal(hb(db, tid(db, j, "a"), "w", 1, 2, 0.5, NULL), 0); /* writes the new figures column */
  expect_task(db, tid(db, j, "a"), "running", 0);
  fc_db_close(&db);
  assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(h, "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE name = 'tasks_by_job_state'),"
                                         " (SELECT user_version FROM pragma_user_version),"
                                         " (SELECT COUNT(*) FROM pragma_table_info('tasks') WHERE name = 'figures')", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 1);
  assert_int_equal(sqlite3_column_int(st, 1), fc_db_schema_version());
  assert_int_equal(sqlite3_column_int(st, 2), 1);
  sqlite3_finalize(st);
  /* and one from a newer program is refused */
  assert_int_equal(sqlite3_exec(h, "PRAGMA user_version=999;", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);
  assert_int_equal(fc_db_open(&db, path, &err), FC_EUNSUPPORTED);
  assert_non_null(strstr(err.msg, "newer"));
  assert_int_equal(fc_db_open(&db, "/nonexistent-dir/x.sqlite", &err), FC_EIO);
  assert_null(db);
}

static void test_lease_order_deps_and_caps(void **state) {
  (void)state;
  fc_db_t *db = open_db();
  int64_t j = submit(db, SPEC);
  int64_t a = tid(db, j, "a"), b = tid(db, j, "b"), c = tid(db, j, "c");
  expect_job(db, j, "queued");
  fc_msg_t m;
  assert_int_equal(fc_db_lease_next(db, "w1", BOTH, 2, 100, 10, &m, &err), 1);
  assert_int_equal(m.type, FC_MSG_TASK_ASSIGN);
  assert_int_equal(m.task, a);
  assert_int_equal(m.job, j);
  assert_int_equal(m.attempt, 1);
  assert_string_equal(m.kind, "checksum");
  assert_string_equal(fc_msg_param(&m, "ms"), "5");
  assert_int_equal(m.noutputs, 1);
  assert_string_equal(m.outputs[0], "/tmp/st/j/a.out");
  fc_msg_clear(&m);
  expect_job(db, j, "running");
  expect_task(db, a, "leased", 0);
  /* b waits for a; a checksum-only worker gets nothing, an `other` worker gets c */
  assert_int_equal(lease(db, "w2", CK, 1, 100), 0);
  assert_int_equal(lease(db, "w2", OTHER, 2, 100), c);
  /* heartbeats: the holder renews, anyone else is told it lost the task */
  assert_int_equal(hb(db, a, "w1", 1, 101, 0.5, "half"), 0);
  expect_task(db, a, "running", 0);
  assert_int_equal(hb(db, a, "w2", 1, 101, 0.5, "x"), 1);
  fc_msg_artifact_t art = {.path = "/tmp/st/j/a.out", .size = 3};
  memset(art.sha256, 'a', 64);
  assert_int_equal(fc_db_complete(db, a, "w2", 1, &art, 1, 102, &err), 1); /* not the holder */
  expect_task(db, a, "running", 0);
  fc_msg_artifact_t stray = art;
  stray.path = "/etc/passwd";
  assert_int_equal(fc_db_complete(db, a, "w1", 1, &stray, 1, 102, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "not one of the task's outputs"));
  stray.path = "/tmp/st/j/a.out/../../x";
  assert_int_equal(fc_db_complete(db, a, "w1", 1, &stray, 1, 102, &err), FC_EINVAL);
  stray.path = "/tmp/st/j/a.outer";
  assert_int_equal(fc_db_complete(db, a, "w1", 1, &stray, 1, 102, &err), FC_EINVAL);
  expect_task(db, a, "running", 0);
  assert_int_equal(fc_db_complete(db, a, "w1", 1, &art, 1, 102, &err), 0);
  expect_task(db, a, "done", 0);
  assert_int_equal(fc_db_complete(db, a, "w1", 1, &art, 1, 102, &err), 1); /* twice: stale */
  assert_int_equal(lease(db, "w1", CK, 1, 103), b);
  assert_int_equal(fc_db_complete(db, b, "w1", 1, NULL, 0, 104, &err), 0);
  expect_job(db, j, "running");
  assert_int_equal(fc_db_complete(db, c, "w2", 1, NULL, 0, 105, &err), 0);
  expect_job(db, j, "done");
  char *json;
  assert_int_equal(fc_db_artifacts_json(db, j, &json, &err), 0);
  assert_non_null(strstr(json, "\"sha256\":\"aaaaaaaa"));
  assert_non_null(strstr(json, "/tmp/st/j/a.out"));
  free(json);
  assert_int_equal(fc_db_status_json(db, j, 0, 0, &json, &err), 0);
  assert_non_null(strstr(json, "\"state\":\"done\""));
  assert_non_null(strstr(json, "\"name\":\"b\""));
  free(json);
  assert_int_equal(fc_db_status_json(db, 999, 0, 0, &json, &err), FC_ENOTFOUND);
  assert_int_equal(fc_db_logs_json(db, j, 0, 0, &json, &err), 0);
  assert_non_null(strstr(json, "job.done"));
  assert_non_null(strstr(json, "task.running"));
  free(json);
  assert_int_equal(fc_db_status_json(db, j, 0, 0, &json, &err), 0);
  assert_non_null(strstr(json, "\"figures\":\"{\\\"loss\\\":2.25}\""));
  free(json);
  fc_db_close(&db);
}

static void test_expiry_attempts_and_retry(void **state) {
  (void)state;
  fc_db_t *db = open_db();
  int64_t j = submit(db, SPEC);
  int64_t a = tid(db, j, "a");
  double d;
  assert_int_equal(fc_db_next_deadline(db, 100, &d, &err), 0);
  assert_true(d == 0);
  assert_int_equal(lease(db, "w1", CK, 1, 100), a);
  assert_int_equal(fc_db_next_deadline(db, 100, &d, &err), 0);
  assert_true(d == 110);
  int n;
  assert_int_equal(fc_db_expire(db, 109, &n, &err), 0); /* not yet */
  assert_int_equal(n, 0);
  expect_task(db, a, "leased", 0);
  assert_int_equal(fc_db_expire(db, 111, &n, &err), 0);
  assert_int_equal(n, 1);
  expect_task(db, a, "queued", 1);
  assert_int_equal(hb(db, a, "w1", 1, 112, 0.1, NULL), 1); /* lost it */
  fc_msg_t m;
  assert_int_equal(fc_db_lease_next(db, "w2", CK, 1, 112, 10, &m, &err), 1);
  assert_int_equal(m.attempt, 2);
  fc_msg_clear(&m);
  assert_int_equal(fc_db_expire(db, 200, &n, &err), 0); /* second lapse: max_attempts 2 */
  expect_task(db, a, "failed", 2);
  expect_job(db, j, "failed");
  assert_int_equal(lease(db, "w3", BOTH, 2, 201), 0); /* a failed job hands out nothing */
  char *json;
  assert_int_equal(fc_db_status_json(db, j, 0, 0, &json, &err), 0);
  assert_non_null(strstr(json, "lease lapsed: worker w2"));
  free(json);
  assert_int_equal(fc_db_job_retry(db, j, 202, &err), 0);
  expect_job(db, j, "running");
  expect_task(db, a, "queued", 0);
  assert_int_equal(fc_db_job_retry(db, j, 202, &err), FC_EINVAL);
  fc_db_close(&db);
}

static void test_fail_handback_cancel(void **state) {
  (void)state;
  fc_db_t *db = open_db();
  int64_t j = submit(db, SPEC);
  int64_t a = tid(db, j, "a"), c = tid(db, j, "c");
  assert_int_equal(lease(db, "w1", CK, 1, 100), a);
  assert_int_equal(fc_db_fail(db, a, "w1", 1, NULL, true, 101, &err), 0); /* handback: no attempt used */
  expect_task(db, a, "queued", 0);
  assert_int_equal(lease(db, "w1", CK, 1, 102), a);
  assert_int_equal(fc_db_fail(db, a, "w9", 2, "x", false, 103, &err), 1);
  assert_int_equal(fc_db_fail(db, a, "w1", 2, "disk full", false, 103, &err), 0);
  expect_task(db, a, "queued", 1);
  /* a second active job of the same name is refused */
  fc_job_t *job;
  int64_t id;
  assert_int_equal(fc_job_parse(SPEC, strlen(SPEC), "s", &job, &err), 0);
  assert_int_equal(fc_db_job_create(db, job, SPEC, 104, &id, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "already active"));
  assert_int_equal(lease(db, "w1", CK, 1, 104), a);
  assert_int_equal(lease(db, "w2", OTHER, 2, 104), c);
  fc_db_holder_t *h;
  size_t nh;
  assert_int_equal(fc_db_job_cancel(db, j, 105, &h, &nh, &err), 0);
  assert_int_equal(nh, 2);
  assert_true((h[0].task == a && !strcmp(h[0].worker, "w1")) || (h[1].task == a && !strcmp(h[1].worker, "w1")));
  free(h);
  expect_job(db, j, "cancelled");
  expect_task(db, a, "cancelled", 1);
  expect_task(db, tid(db, j, "b"), "cancelled", 0);
  assert_int_equal(hb(db, a, "w1", 1, 106, 0.5, NULL), 1);
  assert_int_equal(fc_db_job_cancel(db, j, 106, &h, &nh, &err), FC_EINVAL);
  /* now the name is free again */
  assert_int_equal(fc_db_job_create(db, job, SPEC, 107, &id, &err), 0);
  fc_job_destroy(&job);
  assert_true(id != j);
  /* retrying one task revives the job and its cancelled tasks */
  assert_int_equal(fc_db_task_retry(db, tid(db, j, "b"), 108, &err), 0);
  expect_job(db, j, "running");
  expect_task(db, a, "queued", 0);
  assert_int_equal(fc_db_task_retry(db, a, 108, &err), FC_EINVAL);
  assert_int_equal(fc_db_task_retry(db, 12345, 108, &err), FC_ENOTFOUND);
  fc_db_close(&db);
}

struct ev_count {
  int64_t total, tasks_done;
};
static void count_events(void *arg, int64_t id, double time, int64_t job, int64_t task, const char *type,
                         const char *message) {
  struct ev_count *c = arg;
  (void)id, (void)time, (void)job, (void)task, (void)message;
  c->total++;
  c->tasks_done += !strcmp(type, "task.done");
}

static void test_restart_mid_job(void **state) {
  (void)state;
  fc_db_t *db = open_db();
  int64_t j = submit(db, SPEC);
  int64_t a = tid(db, j, "a");
  assert_int_equal(lease(db, "w1", CK, 1, 100), a);
  fc_msg_t reg = {.type = FC_MSG_REGISTER};
  fc_msg_add_cap(&reg, "checksum");
  fc_msg_set_str(&reg.host, "h");
  assert_int_equal(fc_db_worker_seen(db, &reg, "w1", "s1", 100, NULL, &err), 0);
  fc_msg_clear(&reg);
  int n;
  fc_db_close(&db); /* the coordinator goes away... */
  db = open_db();   /* ...and comes back long after the deadline (110): the lease is still held */
  expect_task(db, a, "leased", 0);
  assert_int_equal(fc_db_leases_grace(db, 104, &n, &err), 0); /* 110 is later: unchanged */
  assert_int_equal(n, 0);
  assert_int_equal(fc_db_leases_grace(db, 111, &n, &err), 0);
  assert_int_equal(n, 1);
  assert_int_equal(fc_db_expire(db, 110.5, &n, &err), 0);
  assert_int_equal(n, 0);
  double d;
  assert_int_equal(fc_db_next_deadline(db, 100, &d, &err), 0);
  assert_true(d == 111);
  assert_int_equal(hb(db, a, "w1", 1, 105, 0.9, "nearly"), 0);
  assert_int_equal(fc_db_expire(db, 112, &n, &err), 0); /* renewed to 115 */
  assert_int_equal(n, 0);
  assert_int_equal(fc_db_complete(db, a, "w1", 1, NULL, 0, 113, &err), 0);
  char *json;
  assert_int_equal(fc_db_workers_json(db, 0, 0, &json, &err), 0);
  assert_non_null(strstr(json, "\"id\":\"w1\""));
  assert_non_null(strstr(json, "checksum"));
  free(json);
  assert_int_equal(fc_db_worker_gone(db, "w1", 114, &err), 0);
  assert_int_equal(fc_db_list_json(db, 0, 0, &json, &err), 0);
  assert_non_null(strstr(json, "\"done\":1"));
  free(json);
  struct ev_count c = {0};
  int64_t last;
  fc_db_close(&db);
  db = open_db();
  assert_int_equal(fc_db_events_after(db, 0, count_events, &c, &last, &err), 0);
  assert_int_equal(c.total, last); /* ids are 1..last with nothing skipped */
  assert_int_equal(c.tasks_done, 1);
  c = (struct ev_count){0};
  assert_int_equal(fc_db_events_after(db, last, count_events, &c, &last, &err), 0);
  assert_int_equal(c.total, 0);
  fc_db_close(&db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_schema_and_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_order_deps_and_caps, setup, teardown),
      cmocka_unit_test_setup_teardown(test_expiry_attempts_and_retry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fail_handback_cancel, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_mid_job, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
