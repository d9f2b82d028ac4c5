/* The runtime against hostile and careless peers, over real processes: a forged result from a
 * connection that is not the worker's, roles per CURVE key, a SIGSTOPped worker whose lease
 * moved on, 100k registrations and a 60k-message backlog at SIGTERM, a 60k-task status, an
 * output whose hashing outlasts the lease, a worker restarted under its id, unsafe coordinator
 * setups, and `fusectl run --local` with a daemon that dies at start or a SIGTERM. The figures
 * (RSS, SIGTERM latency, re-lease time) go to stderr. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <zmq.h>

#include "fc_net.h"
#include "sanitized.h"
#include "test_proc.h"

static char tmp[64], run[128], endpoint[256], db[128];

#define MAXP 8
static pid_t procs[MAXP];

static pid_t spawn(const char *logname, char *const argv[]) {
  char log[256];
  snprintf(log, sizeof log, "%s/%s.log", tmp, logname);
  pid_t p = test_spawn_logged(log, argv);
  assert_true(p >= 0);
  for (int i = 0; i < MAXP; i++)
    if (!procs[i]) {
      procs[i] = p;
      break;
    }
  return p;
}

/* Signals a process we started and returns its exit status (-1: killed by a signal). */
static int stop(pid_t p, int sig) {
  if (p <= 0) return 0;
  kill(p, SIGCONT);
  kill(p, sig);
  int st = 0;
  waitpid(p, &st, 0);
  for (int i = 0; i < MAXP; i++)
    if (procs[i] == p) procs[i] = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void bin(char *out, size_t n, const char *name) {
  const char *b = getenv("FC_BUILD");
  snprintf(out, n, "%s/%s", b ? b : ".", name);
}

static void make_dirs(void) {
  snprintf(tmp, sizeof tmp, "/tmp/fc-harden-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  snprintf(run, sizeof run, "%s/run", tmp);
  snprintf(endpoint, sizeof endpoint, "ipc://%s/coord.ipc", run);
  snprintf(db, sizeof db, "%s/coord.sqlite", tmp);
}

static void remove_dirs(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

static pid_t start_coord(const char *lease) {
  char exe[512];
  bin(exe, sizeof exe, "daemons/fusechat-coordinator");
  char *argv[] = {exe, "--run-dir", run, "--db", db, "--lease-timeout", (char *)lease, "--endpoint", endpoint, NULL};
  return spawn("coord", argv);
}

static pid_t start_worker(const char *id) {
  char exe[512];
  bin(exe, sizeof exe, "daemons/fusechat-worker-test");
  char *argv[] = {exe, "--endpoint", endpoint, "--id", (char *)id, "--heartbeat", "0.2", NULL};
  return spawn(id, argv);
}

static int file_contains(const char *name, const char *what) {
  char p[256], *text;
  size_t n;
  fc_err_t err;
  snprintf(p, sizeof p, "%s/%s", tmp, name);
  if (fc_read_file(p, &text, &n, &err)) return 0;
  int found = strstr(text, what) != NULL;
  free(text);
  return found;
}

/* ---- talking to the coordinator ---- */

/* One request from a fresh DEALER (with CURVE when key is given); the reply is decoded into
 * *rep. Returns 0 or -1 without an answer. */
static int raw_call(const char *key, const char *server, const fc_msg_t *req, fc_msg_t *rep, int ms) {
  void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, rc = -1;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &ms, sizeof ms);
  fc_curve_t curve;
  fc_err_t err;
  if (key) {
    assert_int_equal(fc_curve_client_files(key, server, &curve, &err), 0);
    assert_int_equal(fc_curve_apply_client(s, &curve, &err), 0);
  }
  assert_int_equal(zmq_connect(s, endpoint), 0);
  uint8_t *buf;
  size_t len;
  fc_msg_encode(req, &buf, &len);
  int sent = zmq_send(s, buf, len, 0);
  free(buf);
  zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
  if (sent >= 0 && zmq_poll(&it, 1, ms) == 1) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s, 0) >= 0 && fc_msg_decode(zmq_msg_data(&m), zmq_msg_size(&m), rep, &err) == 0) rc = 0;
    zmq_msg_close(&m);
  }
  zmq_close(s);
  zmq_ctx_term(ctx);
  return rc;
}

/* A client call without CURVE, waiting ms for the answer; the JSON payload, or NULL. */
static json_t *call_ms(fc_msg_t *req, int ms) {
  fc_msg_t rep;
  fc_err_t err;
  if (fc_net_call(endpoint, req, &rep, ms, &err)) return NULL;
  json_t *j = rep.ok ? json_loads(rep.text, 0, NULL) : NULL;
  if (!rep.ok) fprintf(stderr, "coordinator: %s\n", rep.error);
  fc_msg_clear(&rep);
  return j;
}

static json_t *call(fc_msg_t *req) { return call_ms(req, 10000); }

/* A submit of 10000 tasks takes the coordinator tens of seconds under ASan on a loaded machine;
 * the wait is long so it is not sent again for nothing (a resend would be answered with the
 * same job, the coordinator treating the same spec as the same submit). */
static int64_t submit(const char *spec) {
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = (char *)spec};
  json_t *r = NULL;
  for (int i = 0; i < 50 && !r; i++) {
    r = call_ms(&req, 120000);
    if (!r) usleep(100000);
  }
  assert_non_null(r);
  int64_t id = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  return id;
}

typedef struct {
  char job[16], state[16], worker[64];
  int64_t task;
  int attempts;
} snap_t;

/* The job's state and its first task's. */
static int snapshot(int64_t job, snap_t *s) {
  fc_msg_t req = {.type = FC_MSG_STATUS, .job = job};
  json_t *r = call(&req);
  if (!r) return -1;
  json_t *j = json_array_get(json_object_get(r, "jobs"), 0), *t = json_array_get(json_object_get(j, "tasks"), 0);
  snprintf(s->job, sizeof s->job, "%s", json_string_value(json_object_get(j, "state")));
  snprintf(s->state, sizeof s->state, "%s", json_string_value(json_object_get(t, "state")));
  const char *w = json_string_value(json_object_get(t, "worker"));
  snprintf(s->worker, sizeof s->worker, "%s", w ? w : "");
  s->task = json_integer_value(json_object_get(t, "id"));
  s->attempts = (int)json_integer_value(json_object_get(t, "failed_attempts"));
  json_decref(r);
  return 0;
}

static void wait_task(int64_t job, const char *state, double timeout, snap_t *s) {
  double t0 = fc_now();
  while (fc_now() - t0 < timeout) {
    if (snapshot(job, s) == 0 && !strcmp(s->state, state)) return;
    usleep(20000);
  }
  fail_msg("task of job %lld never got '%s' (last '%s'; logs in %s)", (long long)job, state, s->state, tmp);
}

static void wait_job(int64_t job, const char *state, double timeout) {
  snap_t s = {0};
  double t0 = fc_now();
  while (fc_now() - t0 < timeout) {
    if (snapshot(job, &s) == 0 && !strcmp(s.job, state)) return;
    usleep(50000);
  }
  fail_msg("job %lld ended as '%s', not '%s' (logs in %s)", (long long)job, s.job, state, tmp);
}

/* ---- forged results and roles ---- */

/* A RESULT for w1's task from a connection that is not w1's must not complete it. */
static void test_forged_result(void **state) {
  (void)state;
  make_dirs();
  start_coord("5");
  start_worker("w1");
  char spec[512];
  snprintf(spec, sizeof spec, "name: f\nstore: %s/store\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 2500}}\n", tmp);
  int64_t job = submit(spec);
  snap_t s;
  wait_task(job, "running", 10, &s);
  fc_msg_t forged = {.type = FC_MSG_RESULT, .id = "w1", .task = s.task, .attempt = 1, .ok = true}, rep;
  char out[256];
  snprintf(out, sizeof out, "%s/store/f/a.out", tmp);
  fc_msg_add_artifact(&forged, out, 0, "0000000000000000000000000000000000000000000000000000000000000000");
  assert_int_equal(raw_call(NULL, NULL, &forged, &rep, 3000), 0);
  assert_false(rep.ok);
  assert_non_null(strstr(rep.error, "another connection"));
  fc_msg_clear(&rep);
  forged.id = NULL;
  fc_msg_clear(&forged);
  assert_int_equal(snapshot(job, &s), 0);
  assert_string_equal(s.state, "running"); /* not done by the forgery */
  wait_job(job, "done", 20);
  fc_msg_t req = {.type = FC_MSG_ARTIFACTS, .job = job};
  json_t *r = call(&req);
  assert_non_null(r);
  const char *sha = json_string_value(json_object_get(json_array_get(json_object_get(r, "artifacts"), 0), "sha256"));
  assert_non_null(sha);
  assert_null(strstr(sha, "00000000000000000000"));
  json_decref(r);
  for (int i = 0; i < MAXP; i++) assert_int_equal(stop(procs[i], SIGTERM), 0);
  remove_dirs();
}

static int run_fusectl(char *out, size_t n, const char *args) {
  char cmd[2048], exe[512];
  bin(exe, sizeof exe, "tools/fusectl");
  snprintf(cmd, sizeof cmd, "%s %s 2>&1", exe, args);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t k = fread(out, 1, n - 1, p);
  out[k] = 0;
  while (fgetc(p) != EOF) {}
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Exit status of a coordinator that should refuse to start (or -2 if still running). */
static int refused(char *const argv[]) {
  pid_t p = spawn("refused", argv);
  for (int i = 0; i < 50; i++) {
    int st;
    if (waitpid(p, &st, WNOHANG) == p) {
      for (int k = 0; k < MAXP; k++)
        if (procs[k] == p) procs[k] = 0;
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    usleep(100000);
  }
  stop(p, SIGTERM);
  return -2;
}

/* CURVE with role lists: an operator key cannot act as a worker, a reader cannot submit, a
 * second worker key cannot take a live worker's id; unsafe setups are refused. */
static void test_roles(void **state) {
  (void)state;
  make_dirs();
  char out[4096], args[1024], exe[512], key[256], srv[256], wk[256], wk2[256], op[256], rd[256];
  int port = 30000 + (getpid() * 7) % 20000;
  snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
  const char *names[] = {"coord", "workers/w", "workers/w2", "operators/op", "readers/rd"};
  char dir[256];
  for (const char *const *d = (const char *const[]){"workers", "operators", "readers", "empty", NULL}; *d; d++) {
    snprintf(dir, sizeof dir, "%s/%s", tmp, *d);
    assert_int_equal(mkdir(dir, 0700), 0);
  }
  for (int i = 0; i < 5; i++) {
    const char *slash = strchr(names[i], '/');
    if (slash) snprintf(args, sizeof args, "keygen --dir %s/%.*s %s", tmp, (int)(slash - names[i]), names[i], slash + 1);
    else snprintf(args, sizeof args, "keygen --dir %s %s", tmp, names[i]);
    assert_int_equal(run_fusectl(out, sizeof out, args), 0);
  }
  snprintf(key, sizeof key, "%s/coord.key", tmp);
  snprintf(srv, sizeof srv, "%s/coord.pub", tmp);
  snprintf(wk, sizeof wk, "%s/workers/w.key", tmp);
  snprintf(wk2, sizeof wk2, "%s/workers/w2.key", tmp);
  snprintf(op, sizeof op, "%s/operators/op.key", tmp);
  snprintf(rd, sizeof rd, "%s/readers/rd.key", tmp);
  char wdir[256], odir[256], rdir[256], edir[256];
  snprintf(wdir, sizeof wdir, "%s/workers", tmp);
  snprintf(odir, sizeof odir, "%s/operators", tmp);
  snprintf(rdir, sizeof rdir, "%s/readers", tmp);
  snprintf(edir, sizeof edir, "%s/empty", tmp);
  bin(exe, sizeof exe, "daemons/fusechat-coordinator");
  /* unsafe setups: exit 2 */
  char *plain[] = {exe, "--run-dir", run, "--db", db, "--endpoint", endpoint, NULL};
  assert_int_equal(refused(plain), 2);
  assert_true(file_contains("refused.log", "--insecure"));
  char *empty[] = {exe, "--run-dir", run, "--db", db, "--endpoint", endpoint, "--curve-key", key, "--curve-workers", edir, NULL};
  assert_int_equal(refused(empty), 2);
  chmod(key, 0644);
  char *loose[] = {exe, "--run-dir", run, "--db", db, "--endpoint", endpoint, "--curve-key", key, "--curve-workers", wdir, NULL};
  assert_int_equal(refused(loose), 2);
  assert_true(file_contains("refused.log", "readable by others"));
  chmod(key, 0600);
  char *cargv[] = {exe, "--run-dir", run, "--db", db, "--endpoint", endpoint, "--lease-timeout", "5", "--curve-key", key,
                   "--curve-workers", wdir, "--curve-operators", odir, "--curve-readers", rdir, NULL};
  pid_t coord = spawn("coord", cargv);
  bin(exe, sizeof exe, "daemons/fusechat-worker-test");
  char *wargv[] = {exe, "--endpoint", endpoint, "--id", "w1", "--heartbeat", "0.2", "--curve-key", wk, "--curve-server", srv, NULL};
  pid_t w1 = spawn("w1", wargv);
  char spec[512];
  snprintf(spec, sizeof spec, "name: r\nstore: %s/store\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 2000}}\n", tmp);
  fc_msg_t sub = {.type = FC_MSG_SUBMIT, .text = spec}, rep;
  /* a reader may list, not submit */
  fc_msg_t list = {.type = FC_MSG_LIST};
  int up = -1;
  for (int i = 0; i < 50 && up; i++) up = raw_call(rd, srv, &list, &rep, 1000);
  assert_int_equal(up, 0);
  assert_true(rep.ok);
  fc_msg_clear(&rep);
  assert_int_equal(raw_call(rd, srv, &sub, &rep, 3000), 0);
  assert_false(rep.ok);
  assert_non_null(strstr(rep.error, "operator role"));
  fc_msg_clear(&rep);
  assert_int_equal(raw_call(op, srv, &sub, &rep, 3000), 0);
  assert_true(rep.ok);
  json_t *r = json_loads(rep.text, 0, NULL);
  int64_t job = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  fc_msg_clear(&rep);
  /* the operator forges w1's result and registration: refused for want of the worker role */
  fc_msg_t st = {.type = FC_MSG_STATUS, .job = job};
  int64_t task = 0;
  for (double t0 = fc_now(); fc_now() - t0 < 10 && !task; usleep(50000)) {
    assert_int_equal(raw_call(op, srv, &st, &rep, 3000), 0);
    r = json_loads(rep.text, 0, NULL);
    json_t *t = json_array_get(json_object_get(json_array_get(json_object_get(r, "jobs"), 0), "tasks"), 0);
    if (!strcmp(json_string_value(json_object_get(t, "state")), "running")) task = json_integer_value(json_object_get(t, "id"));
    json_decref(r);
    fc_msg_clear(&rep);
  }
  assert_true(task > 0);
  fc_msg_t forged = {.type = FC_MSG_RESULT, .id = "w1", .task = task, .attempt = 1, .ok = true};
  assert_int_equal(raw_call(op, srv, &forged, &rep, 3000), 0);
  assert_false(rep.ok);
  assert_non_null(strstr(rep.error, "worker role"));
  fc_msg_clear(&rep);
  fc_msg_t reg = {.type = FC_MSG_REGISTER, .id = "w1"};
  fc_msg_add_cap(&reg, "sleep");
  assert_int_equal(raw_call(op, srv, &reg, &rep, 3000), 0);
  assert_false(rep.ok);
  assert_non_null(strstr(rep.error, "worker role"));
  fc_msg_clear(&rep);
  /* another worker's key cannot take the live w1's id */
  assert_int_equal(raw_call(wk2, srv, &reg, &rep, 3000), 0);
  assert_false(rep.ok);
  assert_non_null(strstr(rep.error, "in use by another key"));
  fc_msg_clear(&rep);
  reg.id = NULL;
  fc_msg_clear(&reg);
  /* and the job finishes with the real worker's result */
  for (double t0 = fc_now(); fc_now() - t0 < 20; usleep(100000)) {
    assert_int_equal(raw_call(rd, srv, &st, &rep, 3000), 0);
    int done = strstr(rep.text, "\"state\":\"done\"") != NULL;
    fc_msg_clear(&rep);
    if (done) break;
  }
  fc_msg_t arts = {.type = FC_MSG_ARTIFACTS, .job = job};
  assert_int_equal(raw_call(rd, srv, &arts, &rep, 3000), 0);
  assert_true(rep.ok);
  assert_non_null(strstr(rep.text, "a.out"));
  fc_msg_clear(&rep);
  /* the database and its companions are private */
  struct stat sb;
  assert_int_equal(stat(db, &sb), 0);
  assert_int_equal(sb.st_mode & 077, 0);
  char wal[200];
  snprintf(wal, sizeof wal, "%s-wal", db);
  if (stat(wal, &sb) == 0) assert_int_equal(sb.st_mode & 077, 0);
  assert_int_equal(stop(w1, SIGTERM), 0);
  assert_int_equal(stop(coord, SIGTERM), 0);
  /* --insecure lets plain TCP through, with a warning */
  bin(exe, sizeof exe, "daemons/fusechat-coordinator");
  char *ins[] = {exe, "--run-dir", run, "--db", db, "--endpoint", endpoint, "--insecure", NULL};
  assert_int_equal(refused(ins), -2);
  assert_true(file_contains("refused.log", "without CURVE (--insecure)"));
  remove_dirs();
}

/* ---- fencing ---- */

/* A worker stopped past its lease, its task finished elsewhere: when it runs again it must stop,
 * write nothing and leave no work directory. */
static void test_sigstopped_worker(void **state) {
  (void)state;
  make_dirs();
  start_coord("1.5");
  pid_t w[2] = {start_worker("w1"), start_worker("w2")};
  char spec[512], out[256], work[256];
  snprintf(spec, sizeof spec,
           "name: s\nstore: %s/store\nmax_attempts: 3\ntasks:\n"
           "  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 3000, checkpoint: '1'}}\n", tmp);
  snprintf(out, sizeof out, "%s/store/s/a.out", tmp);
  snprintf(work, sizeof work, "%s/store/s/a.out.work", tmp);
  int64_t job = submit(spec);
  snap_t s;
  wait_task(job, "running", 10, &s);
  char ck[300];
  snprintf(ck, sizeof ck, "%s/1/checkpoint-2", work);
  for (double t0 = fc_now(); !fc_path_exists(ck) && fc_now() - t0 < 10;) usleep(10000);
  assert_true(fc_path_exists(ck));
  int victim = !strcmp(s.worker, "w1") ? 0 : 1;
  kill(w[victim], SIGSTOP);
  wait_job(job, "done", 30);
  struct stat before, after;
  assert_int_equal(stat(out, &before), 0);
  assert_false(fc_path_exists(work)); /* the winner cleared every attempt's scratch */
  kill(w[victim], SIGCONT);
  char log[16];
  snprintf(log, sizeof log, "w%d.log", victim + 1);
  for (double t0 = fc_now(); !file_contains(log, "the lease is gone") && fc_now() - t0 < 10;) usleep(50000);
  assert_true(file_contains(log, "the lease is gone"));
  usleep(500000);
  assert_int_equal(stat(out, &after), 0);
  assert_true(before.st_ino == after.st_ino && before.st_mtime == after.st_mtime); /* untouched */
  assert_false(fc_path_exists(work));
  assert_int_equal(snapshot(job, &s), 0);
  assert_string_equal(s.job, "done");
  for (int i = 0; i < MAXP; i++) assert_int_equal(stop(procs[i], SIGTERM), 0);
  remove_dirs();
}

/* An output whose hashing takes longer than the lease: heartbeats go on meanwhile, so the first
 * attempt's result counts. Under ASan hashing is several times slower, so a smaller output
 * still outlasts the 1 s lease. */
#define BIG_OUTPUT_BYTES (FC_SANITIZED ? 250000000LL : 1500000000LL)

static void test_slow_finalizer(void **state) {
  (void)state;
  make_dirs();
  start_coord("1");
  start_worker("w1");
  char spec[512];
  snprintf(spec, sizeof spec,
           "name: h\nstore: %s/store\nmax_attempts: 3\ntasks:\n"
           "  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 50, size: '%lld'}}\n", tmp, BIG_OUTPUT_BYTES);
  int64_t job = submit(spec);
  double t0 = fc_now();
  wait_job(job, "done", 120);
  snap_t s;
  assert_int_equal(snapshot(job, &s), 0);
  fprintf(stderr, "a %.2f GB output hashed and reported in %.1f s under a 1 s lease\n", BIG_OUTPUT_BYTES / 1e9,
          fc_now() - t0);
  assert_int_equal(s.attempts, 0); /* no lease lapsed while hashing */
  for (int i = 0; i < MAXP; i++) assert_int_equal(stop(procs[i], SIGTERM), 0);
  remove_dirs();
}

/* A worker restarted under the same id: its old lease is released at registration, not after
 * the lease timeout, and the task runs again. */
static void test_restart_releases_lease(void **state) {
  (void)state;
  make_dirs();
  start_coord("30");
  pid_t w1 = start_worker("w1");
  char spec[512];
  snprintf(spec, sizeof spec, "name: l\nstore: %s/store\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 1500}}\n", tmp);
  int64_t job = submit(spec);
  snap_t s;
  wait_task(job, "running", 10, &s);
  assert_int_equal(stop(w1, SIGKILL), -1);
  double t0 = fc_now();
  start_worker("w1");
  do { /* re-leased: attempt 1 is recorded as failed and the task runs again */
    assert_int_equal(snapshot(job, &s), 0);
    if (s.attempts == 1 && (!strcmp(s.state, "running") || !strcmp(s.state, "leased"))) break;
    usleep(10000);
  } while (fc_now() - t0 < 20);
  double dt = fc_now() - t0;
  fprintf(stderr, "re-leased %.2f s after the worker came back (lease timeout 30 s)\n", dt);
  assert_true(dt < 5);
  wait_job(job, "done", 20);
  for (int i = 0; i < MAXP; i++) assert_int_equal(stop(procs[i], SIGTERM), 0);
  remove_dirs();
}

/* ---- bounded state ---- */

static long rss_kb(pid_t p) {
  char path[64], *text;
  size_t n;
  fc_err_t err;
  snprintf(path, sizeof path, "/proc/%d/status", (int)p);
  if (fc_read_file(path, &text, &n, &err)) return -1;
  const char *v = strstr(text, "VmRSS:");
  long kb = v ? atol(v + 6) : -1;
  free(text);
  return kb;
}

/* Sends n registrations of distinct ids from one connection without waiting. */
static void *flood(int n, const char *prefix) {
  void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0, linger = -1;
  zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  assert_int_equal(zmq_connect(s, endpoint), 0);
  for (int i = 0; i < n; i++) {
    char id[64];
    snprintf(id, sizeof id, "%s-%d", prefix, i);
    fc_msg_t m = {.type = FC_MSG_REGISTER, .id = id};
    char *caps[1] = {"nothing"};
    m.caps = caps, m.ncaps = 1;
    uint8_t *buf;
    size_t len;
    fc_msg_encode(&m, &buf, &len);
    assert_true(zmq_send(s, buf, len, 0) >= 0);
    free(buf);
  }
  zmq_close(s);
  zmq_ctx_term(ctx); /* returns once everything queued was handed to the coordinator */
  return NULL;
}

static long count_rows(const char *sql) {
  sqlite3 *h;
  assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  long n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return n;
}

/* 100k registrations: memory and rows stay bounded and the log short; then SIGTERM with 60k
 * registrations queued stops the coordinator at once. */
static void test_registration_flood(void **state) {
  (void)state;
  make_dirs();
  /* Under ASan freed memory waits in a quarantine (256 MB by default) before reuse, so RSS
   * would measure the churn, not what the coordinator keeps: it runs without one here. */
  char *asan = getenv("ASAN_OPTIONS") ? strdup(getenv("ASAN_OPTIONS")) : NULL;
  if (FC_SANITIZED) {
    char o[512];
    snprintf(o, sizeof o, "%s:quarantine_size_mb=0:thread_local_quarantine_size_kb=0", asan ? asan : "");
    setenv("ASAN_OPTIONS", o, 1);
  }
  pid_t coord = start_coord("10");
  if (asan) setenv("ASAN_OPTIONS", asan, 1);
  else unsetenv("ASAN_OPTIONS");
  free(asan);
  fc_msg_t list = {.type = FC_MSG_LIST};
  json_t *r = NULL;
  for (int i = 0; i < 50 && !r; i++) r = call(&list), r ? (void)0 : (void)usleep(100000);
  assert_non_null(r);
  json_decref(r);
  long rss0 = rss_kb(coord);
  double t0 = fc_now();
  flood(100000, "fake");
  /* handled once a call behind them is answered and the rows stop growing */
  long rows = -1, prev;
  do {
    prev = rows;
    usleep(300000);
    r = call(&list);
    json_decref(r);
    rows = count_rows("SELECT COUNT(*) FROM workers");
  } while (rows != prev && fc_now() - t0 < 120);
  long rss1 = rss_kb(coord);
  struct stat sb;
  char log[256];
  snprintf(log, sizeof log, "%s/coord.log", tmp);
  assert_int_equal(stat(log, &sb), 0);
  fprintf(stderr, "100k registrations in %.1f s: coordinator RSS %ld -> %ld kB (+%.1f MB), %ld worker rows, log %lld bytes\n",
          fc_now() - t0, rss0, rss1, (rss1 - rss0) / 1024.0, rows, (long long)sb.st_size);
  assert_true(rows <= 4096 + 8);
  assert_true(rss1 - rss0 < 24 * 1024);
  assert_true(sb.st_size < 256 * 1024);
  /* SIGTERM while 60k registrations pour in from another process */
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    flood(60000, "backlog");
    _exit(0);
  }
  usleep(300000);
  t0 = fc_now();
  assert_int_equal(stop(coord, SIGTERM), 0);
  double dt = fc_now() - t0;
  int cst;
  int still = waitpid(child, &cst, WNOHANG) == 0; /* the flood was still going */
  kill(child, SIGKILL);
  waitpid(child, &cst, 0);
  fprintf(stderr, "SIGTERM with a 60k-registration flood %s: stopped in %.3f s\n", still ? "under way" : "over", dt);
  assert_true(dt < 3);
  remove_dirs();
}

/* 60k tasks (six jobs): status of everything pages through them; --limit gives one page and
 * says where the next starts. Under ASan 20k (two jobs, still 20 pages): each submit there
 * costs the coordinator seconds. */
#define STATUS_JOBS (FC_SANITIZED ? 2 : 6)
static void test_60k_status(void **state) {
  (void)state;
  make_dirs();
  start_coord("10");
  size_t cap = 8u << 20;
  char *spec = malloc(cap);
  int64_t job = 0;
  for (int j = 0; j < STATUS_JOBS; j++) { /* a job holds at most 10000 tasks */
    size_t n = (size_t)snprintf(spec, cap, "name: big%d\nstore: %s/store\ntasks:\n", j, tmp);
    for (int i = 0; i < 10000; i++) n += (size_t)snprintf(spec + n, cap - n, "  - {name: t%d, kind: sleep, cap: none}\n", i);
    job = submit(spec);
    assert_true(job > 0);
  }
  free(spec);
  char exe[512], cmd[1024];
  bin(exe, sizeof exe, "tools/fusectl");
  snprintf(cmd, sizeof cmd, "%s status --endpoint %s --timeout 30 2>&1", exe, endpoint);
  double t0 = fc_now();
  FILE *p = popen(cmd, "r");
  long lines = 0;
  char line[4096];
  while (fgets(line, sizeof line, p)) lines += strstr(line, " queued ") != NULL;
  int st = pclose(p);
  fprintf(stderr, "status of %dk tasks: %ld task lines in %.2f s\n", STATUS_JOBS * 10, lines, fc_now() - t0);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_int_equal(lines, STATUS_JOBS * 10000);
  char out[65536], args[600];
  snprintf(args, sizeof args, "status --endpoint %s --limit 5 %lld", endpoint, (long long)job);
  assert_int_equal(run_fusectl(out, sizeof out, args), 0);
  assert_non_null(strstr(out, "next page: --after"));
  snprintf(args, sizeof args, "list --endpoint %s", endpoint);
  assert_int_equal(run_fusectl(out, sizeof out, args), 0);
  assert_non_null(strstr(out, "0/10000"));
  snprintf(args, sizeof args, "logs --endpoint %s --limit 1 %lld", endpoint, (long long)job);
  assert_int_equal(run_fusectl(out, sizeof out, args), 0);
  for (int i = 0; i < MAXP; i++) assert_int_equal(stop(procs[i], SIGTERM), 0);
  remove_dirs();
}

/* ---- fusectl run --local ---- */

/* Running, not a zombie waiting to be reaped. */
static int alive_pid(pid_t p) {
  char path[64], *text;
  size_t n;
  fc_err_t err;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)p);
  if (fc_read_file(path, &text, &n, &err)) return 0;
  const char *paren = strrchr(text, ')');
  int alive = paren && paren[1] && paren[2] != 'Z' && paren[2] != 'X';
  free(text);
  return alive;
}

static int alive_from(const char *pidfile) {
  char *text;
  size_t n;
  fc_err_t err;
  if (fc_read_file(pidfile, &text, &n, &err)) return 0;
  pid_t p = (pid_t)atol(text);
  free(text);
  return p > 0 && alive_pid(p);
}

/* A model path that does not exist: the logits daemon dies at start, and run says so and fails
 * instead of waiting forever. */
static void test_run_missing_model(void **state) {
  (void)state;
  make_dirs();
  char spec[1024], path[256], out[16384], args[600];
  snprintf(spec, sizeof spec,
           "name: m\nstore: %s/store\nmodels:\n  - {name: pivot, path: %s/nope-pivot, role: pivot}\n"
           "  - {name: s1, path: %s/nope-s1}\ndataset: %s/nope.jsonl\nshards: 1\ntop_k: 4\n"
           "training: {epochs: 1, steps: 2}\n", tmp, tmp, tmp, tmp);
  snprintf(path, sizeof path, "%s/job.yaml", tmp);
  FILE *f = fopen(path, "w");
  fputs(spec, f);
  fclose(f);
  char exe[512];
  bin(exe, sizeof exe, "daemons");
  snprintf(args, sizeof args, "run --local --quiet --run-dir %s/r %s", tmp, path);
  setenv("FUSECHAT_BIN_DIR", exe, 1);
  double t0 = fc_now();
  int rc = run_fusectl(out, sizeof out, args);
  fprintf(stderr, "run with a missing model ended (exit %d) after %.1f s:\n%s", rc, fc_now() - t0, out);
  assert_int_equal(rc, 1);
  assert_non_null(strstr(out, "logits"));
  assert_non_null(strstr(out, "nope-"));
  char pidf[300];
  snprintf(pidf, sizeof pidf, "%s/r/coordinator.pid", tmp);
  assert_false(alive_from(pidf));
  remove_dirs();
}

/* SIGTERM to `fusectl run` stops the daemons it started. */
static void test_run_sigterm(void **state) {
  (void)state;
  make_dirs();
  char spec[512], path[256], exe[512], bindir[512], rdir[256];
  snprintf(spec, sizeof spec, "name: t\nstore: %s/store\ntasks:\n  - {name: a, kind: sleep, outputs: [a.out], params: {ms: 60000}}\n", tmp);
  snprintf(path, sizeof path, "%s/job.yaml", tmp);
  FILE *f = fopen(path, "w");
  fputs(spec, f);
  fclose(f);
  bin(exe, sizeof exe, "tools/fusectl");
  bin(bindir, sizeof bindir, "daemons");
  setenv("FUSECHAT_BIN_DIR", bindir, 1);
  snprintf(rdir, sizeof rdir, "%s/r", tmp);
  char *argv[] = {exe, "run", "--local", "--run-dir", rdir, path, NULL};
  pid_t p = spawn("run", argv);
  for (double t0 = fc_now(); !file_contains("run.log", "submitted") && fc_now() - t0 < 20;) usleep(50000);
  assert_true(file_contains("run.log", "submitted"));
  char cpid[300], wpid[300];
  snprintf(cpid, sizeof cpid, "%s/coordinator.pid", rdir);
  snprintf(wpid, sizeof wpid, "%s/worker-test-1.pid", rdir);
  char *text;
  size_t n;
  fc_err_t err;
  assert_int_equal(fc_read_file(cpid, &text, &n, &err), 0);
  pid_t coord = (pid_t)atol(text);
  free(text);
  assert_int_equal(fc_read_file(wpid, &text, &n, &err), 0);
  pid_t worker = (pid_t)atol(text);
  free(text);
  double t0 = fc_now();
  assert_int_equal(stop(p, SIGTERM), 1);
  fprintf(stderr, "fusectl run stopped its daemons %.2f s after SIGTERM\n", fc_now() - t0);
  assert_false(alive_pid(coord));
  assert_false(alive_pid(worker));
  remove_dirs();
}

static int teardown(void **state) {
  (void)state;
  for (int i = 0; i < MAXP; i++) stop(procs[i], SIGKILL);
  return 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_forged_result, teardown),
      cmocka_unit_test_teardown(test_roles, teardown),
      cmocka_unit_test_teardown(test_sigstopped_worker, teardown),
      cmocka_unit_test_teardown(test_slow_finalizer, teardown),
      cmocka_unit_test_teardown(test_restart_releases_lease, teardown),
      cmocka_unit_test_teardown(test_registration_flood, teardown),
      cmocka_unit_test_teardown(test_60k_status, teardown),
      cmocka_unit_test_teardown(test_run_missing_model, teardown),
      cmocka_unit_test_teardown(test_run_sigterm, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
