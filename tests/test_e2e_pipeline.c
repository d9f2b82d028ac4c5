/* End to end over real processes and ipc:// sockets: a coordinator and two test workers run a
 * small job undisturbed, then the same job again while a worker is SIGKILLed mid-task and the
 * coordinator is SIGKILLed and restarted; the second run must complete, re-lease the killed
 * task, and write the same bytes (which are also checked against SHA-256 computed here). */
#include <dirent.h>
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
#include <zmq.h>

#include "fc_net.h"
#include "fc_sha256.h"
#include "test_proc.h"

static char tmp[64], run[128], endpoint[256], db[128];
static pid_t coord_pid, worker_pid[3];
static const char *worker_id[3] = {"w1", "w2", "w3"};

static pid_t spawn(const char *log, char *const argv[]) {
  pid_t p = test_spawn_logged(log, argv);
  assert_true(p >= 0);
  return p;
}

static void bin(char *out, size_t n, const char *name) {
  const char *b = getenv("FC_BUILD");
  snprintf(out, n, "%s/daemons/%s", b ? b : ".", name);
}

static void start_coord(void) {
  char exe[512], log[256];
  bin(exe, sizeof exe, "fusechat-coordinator");
  snprintf(log, sizeof log, "%s/coord.log", tmp);
  char *argv[] = {exe, "--run-dir", run, "--db", db, "--lease-timeout", "1.5", NULL};
  coord_pid = spawn(log, argv);
}

static void start_worker(int i) {
  char exe[512], log[256];
  bin(exe, sizeof exe, "fusechat-worker-test");
  snprintf(log, sizeof log, "%s/%s.log", tmp, worker_id[i]);
  char *argv[] = {exe, "--run-dir", run, "--id", (char *)worker_id[i], "--heartbeat", "0.2", NULL};
  worker_pid[i] = spawn(log, argv);
}

/* Signals a daemon and returns its exit status (-1 if it was killed by a signal). */
static int stop(pid_t *p, int sig) {
  if (*p <= 0) return 0;
  kill(*p, sig);
  int st = 0;
  waitpid(*p, &st, 0);
  *p = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* No daemon log may hold a sanitizer report (the daemons run instrumented in CI). */
static void check_logs(void) {
  const char *names[] = {"coord.log", "w1.log", "w2.log", "w3.log", "up/coordinator.log", "up/worker-test-1.log"};
  for (int i = 0; i < 6; i++) {
    char p[256], *text;
    size_t n;
    fc_err_t err;
    snprintf(p, sizeof p, "%s/%s", tmp, names[i]);
    if (fc_read_file(p, &text, &n, &err)) continue;
    int bad = strstr(text, "Sanitizer") || strstr(text, "runtime error");
    if (bad) fprintf(stderr, "%s:\n%s\n", p, text);
    free(text);
    assert_false(bad);
  }
}

static void make_dirs(void) {
  snprintf(tmp, sizeof tmp, "/tmp/fc-e2e-XXXXXX");
  assert_non_null(mkdtemp(tmp));
  snprintf(run, sizeof run, "%s/run", tmp);
  snprintf(endpoint, sizeof endpoint, "ipc://%s/coord.ipc", run);
  snprintf(db, sizeof db, "%s/coord.sqlite", tmp);
}

static void clean_stop_and_remove(void) {
  for (int k = 0; k < 3; k++) assert_int_equal(stop(&worker_pid[k], SIGTERM), 0);
  assert_int_equal(stop(&coord_pid, SIGTERM), 0);
  check_logs();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

/* How long one call waits for its answer: a coordinator under AddressSanitizer on a loaded
 * machine takes seconds over a big submit; a retry after a lapsed wait is harmless (a submit
 * of the same spec answers with the same job) but only costs time. */
#define CALL_MS 10000

/* One client call; returns the JSON payload or NULL (coordinator not up yet, etc.). */
static json_t *call(fc_msg_t *req) {
  fc_msg_t rep;
  fc_err_t err;
  if (fc_net_call(endpoint, req, &rep, CALL_MS, &err)) return NULL;
  json_t *j = rep.ok ? json_loads(rep.text, 0, NULL) : NULL;
  if (!rep.ok) fprintf(stderr, "coordinator: %s\n", rep.error);
  fc_msg_clear(&rep);
  return j;
}

static int64_t submit(const char *name) {
  char spec[2048];
  snprintf(spec, sizeof spec,
           "name: %s\nstore: %s/store\nmax_attempts: 3\ntasks:\n"
           "  - {name: a, kind: checksum, inputs: [%s/in1], outputs: [a.out], params: {ms: 1200}}\n"
           "  - {name: b, kind: checksum, inputs: [%s/in2], outputs: [b.out], params: {ms: 1200}}\n"
           "  - {name: c, kind: checksum, deps: [a, b], inputs: [%s/store/%s/a.out, %s/store/%s/b.out, %s/in1],"
           " outputs: [c.out], params: {ms: 500}}\n"
           "  - {name: d, kind: sleep, deps: [c], outputs: [d/d.out], params: {ms: 100}}\n",
           name, tmp, tmp, tmp, tmp, name, tmp, name, tmp);
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = spec};
  json_t *r = NULL;
  for (int i = 0; i < 50 && !r; i++) { /* the coordinator may still be starting */
    r = call(&req);
    if (!r) usleep(100000);
  }
  assert_non_null(r);
  int64_t id = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  assert_true(id > 0);
  return id;
}

typedef struct {
  char job_state[16], state[16], worker[64];
  int attempts;
} snap_t;

static int snapshot(int64_t job, const char *task, snap_t *s) {
  fc_msg_t req = {.type = FC_MSG_STATUS, .job = job};
  json_t *r = call(&req);
  if (!r) return -1;
  json_t *j = json_array_get(json_object_get(r, "jobs"), 0), *t;
  snprintf(s->job_state, sizeof s->job_state, "%s", json_string_value(json_object_get(j, "state")));
  size_t i;
  json_array_foreach(json_object_get(j, "tasks"), i, t) {
    if (strcmp(json_string_value(json_object_get(t, "name")), task)) continue;
    snprintf(s->state, sizeof s->state, "%s", json_string_value(json_object_get(t, "state")));
    const char *w = json_string_value(json_object_get(t, "worker"));
    snprintf(s->worker, sizeof s->worker, "%s", w ? w : "");
    s->attempts = (int)json_integer_value(json_object_get(t, "failed_attempts"));
  }
  json_decref(r);
  return 0;
}

static void wait_job_done(int64_t job, double timeout) {
  double t0 = fc_now();
  snap_t s = {0};
  while (fc_now() - t0 < timeout) {
    if (snapshot(job, "a", &s) == 0 && strcmp(s.job_state, "running") && strcmp(s.job_state, "queued")) break;
    usleep(100000);
  }
  if (strcmp(s.job_state, "done")) fail_msg("job %lld ended as '%s' (logs in %s)", (long long)job, s.job_state, tmp);
}

static char *slurp(const char *dir, const char *job, const char *file) {
  char p[512];
  snprintf(p, sizeof p, "%s/store/%s/%s", dir, job, file);
  char *s;
  size_t n;
  fc_err_t err;
  if (fc_read_file(p, &s, &n, &err)) fail_msg("%s", err.msg);
  return s;
}

static void test_kill_worker_and_coordinator(void **state) {
  (void)state;
  make_dirs();
  fc_rng_t rng;
  fc_rng_seed(&rng, 7);
  for (int f = 1; f <= 2; f++) {
    char p[256];
    snprintf(p, sizeof p, "%s/in%d", tmp, f);
    FILE *fp = fopen(p, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 100000 * f; i++) fputc((int)(fc_rng_u64(&rng) & 0xff), fp);
    fclose(fp);
  }
  start_coord();
  start_worker(0);
  start_worker(1);

  /* 1. undisturbed */
  int64_t ref = submit("ref");
  wait_job_done(ref, 20);

  /* 2. disturbed: SIGKILL the worker running task a once it is under way */
  int64_t job = submit("chaos");
  snap_t s = {0};
  double t0 = fc_now();
  while (fc_now() - t0 < 10 && (snapshot(job, "a", &s) || strcmp(s.state, "running"))) usleep(50000);
  assert_string_equal(s.state, "running");
  usleep(300000);
  int victim = !strcmp(s.worker, "w1") ? 0 : 1;
  assert_string_equal(s.worker, worker_id[victim]);
  stop(&worker_pid[victim], SIGKILL);
  start_worker(2); /* a fresh daemon joins, as systemd would restart one */
  /* the task lapses and is leased again (attempt 2) to a live worker */
  t0 = fc_now();
  while (fc_now() - t0 < 10 && (snapshot(job, "a", &s) || s.attempts != 1 || strcmp(s.state, "running"))) usleep(50000);
  assert_int_equal(s.attempts, 1);
  assert_string_equal(s.state, "running");
  assert_string_not_equal(s.worker, worker_id[victim]);
  /* 3. SIGKILL the coordinator mid-job and start it again on the same database */
  stop(&coord_pid, SIGKILL);
  usleep(300000);
  start_coord();
  wait_job_done(job, 25);
  assert_int_equal(snapshot(job, "a", &s), 0);
  assert_int_equal(s.attempts, 1);

  /* same bytes as the undisturbed run, and the bytes are right */
  const char *files[] = {"a.out", "b.out", "c.out", "d/d.out"};
  for (int i = 0; i < 4; i++) {
    char *x = slurp(tmp, "ref", files[i]), *y = slurp(tmp, "chaos", files[i]);
    assert_string_equal(x, y);
    free(x), free(y);
  }
  char p[256], h1[65], h2[65], hx[65];
  fc_err_t err;
  snprintf(p, sizeof p, "%s/in1", tmp);
  assert_int_equal(fc_sha256_file(p, h1, NULL, &err), 0);
  snprintf(p, sizeof p, "%s/in2", tmp);
  assert_int_equal(fc_sha256_file(p, h2, NULL, &err), 0);
  char *a = slurp(tmp, "chaos", "a.out"), *c = slurp(tmp, "chaos", "c.out");
  char want[300];
  snprintf(want, sizeof want, "%s\n", h1);
  assert_string_equal(a, want);
  snprintf(p, sizeof p, "%s/store/chaos/a.out", tmp);
  assert_int_equal(fc_sha256_file(p, hx, NULL, &err), 0);
  assert_non_null(strstr(c, hx));
  assert_non_null(strstr(c, h1));
  free(a), free(c);
  (void)h2;
  /* recorded artifacts match the files; the log tells what happened */
  fc_msg_t req = {.type = FC_MSG_ARTIFACTS, .job = job};
  json_t *r = call(&req), *art;
  assert_non_null(r);
  assert_int_equal(json_array_size(json_object_get(r, "artifacts")), 4);
  size_t i;
  json_array_foreach(json_object_get(r, "artifacts"), i, art) {
    uint64_t size;
    assert_int_equal(fc_sha256_file(json_string_value(json_object_get(art, "path")), hx, &size, &err), 0);
    assert_string_equal(hx, json_string_value(json_object_get(art, "sha256")));
    assert_int_equal(size, json_integer_value(json_object_get(art, "size")));
  }
  json_decref(r);
  req = (fc_msg_t){.type = FC_MSG_LOGS, .job = job};
  r = call(&req);
  assert_non_null(r);
  char *dump = json_dumps(r, 0);
  char lapsed[128];
  snprintf(lapsed, sizeof lapsed, "lease lapsed: worker %s", worker_id[victim]);
  assert_non_null(strstr(dump, lapsed));
  free(dump);
  json_decref(r);
  /* no temp files were left behind in the store */
  snprintf(p, sizeof p, "%s/store/chaos", tmp);
  DIR *d = opendir(p);
  struct dirent *e;
  while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp."));
  closedir(d);
  clean_stop_and_remove();
}

static int task_state_is(int64_t job, const char *task, const char *state, double timeout, snap_t *s) {
  double t0 = fc_now();
  while (fc_now() - t0 < timeout) {
    if (snapshot(job, task, s) == 0 && !strcmp(s->state, state)) return 1;
    usleep(50000);
  }
  return 0;
}

static int64_t submit_sleepers(const char *name, int n, int ms) {
  char spec[2048];
  size_t k = (size_t)snprintf(spec, sizeof spec, "name: %s\nstore: %s/store\ntasks:\n", name, tmp);
  for (int i = 0; i < n; i++)
    k += (size_t)snprintf(spec + k, sizeof spec - k, "  - {name: s%d, kind: sleep, outputs: [s%d.out], params: {ms: %d}}\n", i, i, ms);
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = spec};
  json_t *r = NULL;
  for (int i = 0; i < 50 && !r; i++)
    if (!(r = call(&req))) usleep(100000);
  assert_non_null(r);
  int64_t id = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  return id;
}

/* Garbage on the socket, a cancelled job, and a worker stopped with SIGTERM mid-task. */
static void test_garbage_cancel_and_sigterm(void **state) {
  (void)state;
  make_dirs();
  start_coord();
  start_worker(0);
  /* garbage: the coordinator answers with an error and carries on */
  void *zc = zmq_ctx_new(), *s = zmq_socket(zc, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_connect(s, endpoint);
  const uint8_t junk[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x00};
  zmq_send(s, junk, sizeof junk, 0);
  zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
  assert_int_equal(zmq_poll(&it, 1, 3000), 1);
  uint8_t buf[4096];
  int n = zmq_recv(s, buf, sizeof buf, 0);
  assert_true(n > 0);
  fc_msg_t rep;
  fc_err_t err;
  assert_int_equal(fc_msg_decode(buf, (size_t)n, &rep, &err), 0);
  assert_int_equal(rep.type, FC_MSG_REPLY);
  assert_false(rep.ok);
  assert_non_null(strstr(rep.error, "bad message"));
  fc_msg_clear(&rep);
  /* a flood of damaged messages of every type; the coordinator must still answer after it */
  fc_rng_t rng;
  fc_rng_seed(&rng, 99);
  int sent = 0;
  for (int t = 1; t < FC_MSG_NTYPES; t++) {
    fc_msg_t m = {.type = (fc_msg_type_t)t, .task = 1, .job = 1, .attempt = 1, .ok = true};
    fc_msg_set_str(&m.id, "flooder"), fc_msg_set_str(&m.kind, "sleep"), fc_msg_set_str(&m.state, "x");
    fc_msg_set_str(&m.text, "name: x"), fc_msg_add_cap(&m, "sleep");
    if (t == FC_MSG_CANCEL_JOB || t == FC_MSG_RETRY) m.job = 999; /* never our job */
    uint8_t *enc;
    size_t len;
    fc_msg_encode(&m, &enc, &len);
    fc_msg_clear(&m);
    for (int k = 0; k < 60; k++, sent++) {
      uint8_t dam[4096];
      memcpy(dam, enc, len);
      for (int f = 0; f < 1 + (int)(fc_rng_u64(&rng) % 3); f++) dam[fc_rng_u64(&rng) % len] = (uint8_t)fc_rng_u64(&rng);
      zmq_send(s, dam, len, 0);
    }
    free(enc);
  }
  fc_msg_t bye = {.type = FC_MSG_BYE};
  bye.id = "flooder"; /* whatever the damage registered, it leaves */
  uint8_t *benc;
  size_t blen;
  fc_msg_encode(&bye, &benc, &blen);
  zmq_send(s, benc, blen, 0);
  free(benc);
  usleep(200000);
  while (zmq_recv(s, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
  }
  fc_msg_t lreq = {.type = FC_MSG_LIST};
  json_t *lr = call(&lreq);
  assert_non_null(lr);
  json_decref(lr);
  assert_true(sent > 500);
  zmq_close(s);
  zmq_ctx_term(zc);
  int64_t job = submit_sleepers("long", 1, 20000);
  /* cancel: the running task stops, the worker takes the next job's task at once */
  snap_t st = {0};
  assert_true(task_state_is(job, "s0", "running", 10, &st));
  fc_msg_t req = {.type = FC_MSG_CANCEL_JOB, .job = job};
  json_t *r = call(&req);
  assert_non_null(r);
  json_decref(r);
  assert_int_equal(snapshot(job, "s0", &st), 0);
  assert_string_equal(st.job_state, "cancelled");
  assert_string_equal(st.state, "cancelled");
  double t0 = fc_now();
  int64_t next = submit_sleepers("next", 1, 3000);
  /* the worker was freed by the cancel: well before the cancelled task's 20 s would have run
   * out (10 s leaves room for a loaded machine under ASan, where 5 s once did not suffice) */
  assert_true(task_state_is(next, "s0", "running", 10, &st));
  assert_true(fc_now() - t0 < 10);
  /* SIGTERM mid-task: handed back without using an attempt, finished by another worker */
  start_worker(1);
  assert_int_equal(stop(&worker_pid[0], SIGTERM), 0);
  assert_true(task_state_is(next, "s0", "running", 10, &st));
  assert_string_equal(st.worker, "w2");
  assert_int_equal(st.attempts, 0);
  wait_job_done(next, 10);
  req = (fc_msg_t){.type = FC_MSG_LOGS, .job = next};
  r = call(&req);
  char *dump = json_dumps(r, 0);
  assert_non_null(strstr(dump, "handed back by w1"));
  free(dump);
  json_decref(r);
  clean_stop_and_remove();
}

/* Runs fusectl with args against our coordinator; returns the exit status, output in out. */
static int fusectl(char *out, size_t n, const char *args) {
  char cmd[2048];
  const char *b = getenv("FC_BUILD");
  /* args may start with VAR=value words, which the shell takes as environment */
  const char *cmdstart = args;
  while (strchr(cmdstart, '=') && strchr(cmdstart, ' ') && strchr(cmdstart, '=') < strchr(cmdstart, ' '))
    cmdstart = strchr(cmdstart, ' ') + 1;
  snprintf(cmd, sizeof cmd, "FUSECHAT_BIN_DIR=%s/daemons FUSECHAT_ENDPOINT=%s %.*s %s/tools/fusectl %s 2>&1",
           b ? b : ".", endpoint, (int)(cmdstart - args), args, b ? b : ".", cmdstart);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t k = fread(out, 1, n - 1, p);
  out[k] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The client commands, against a live coordinator. */
static void test_fusectl(void **state) {
  (void)state;
  make_dirs();
  start_coord();
  start_worker(0);
  char out[16384], args[1024], spec[512];
  snprintf(spec, sizeof spec, "%s/job.yaml", tmp);
  FILE *fp = fopen(spec, "w");
  assert_non_null(fp);
  fprintf(fp, "name: cli\nstore: %s/store\ntasks:\n  - {name: one, kind: sleep, outputs: [one.out], params: {ms: 300}}\n"
              "  - {name: two, kind: checksum, inputs: [%s/store/cli/one.out], outputs: [two.out], deps: [one], params: {ms: 600}}\n", tmp, tmp);
  fclose(fp);
  usleep(300000);
  snprintf(args, sizeof args, "submit %s", spec);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  assert_non_null(strstr(out, "job 1 submitted (2 tasks)"));
  assert_int_equal(fusectl(out, sizeof out, "watch 1"), 0); /* returns when the job is done */
  assert_non_null(strstr(out, "job.done"));
  assert_int_equal(fusectl(out, sizeof out, "status 1"), 0);
  assert_non_null(strstr(out, "job 1  cli  done"));
  assert_non_null(strstr(out, "  checksum\n"));
  assert_non_null(strstr(out, "bytes=13")); /* the checksum executor's figure: one.out's size */
  assert_int_equal(fusectl(out, sizeof out, "status --json"), 0);
  json_t *j = json_loads(out, 0, NULL);
  assert_non_null(j);
  json_decref(j);
  assert_int_equal(fusectl(out, sizeof out, "list"), 0);
  assert_non_null(strstr(out, "done       2/2"));
  assert_int_equal(fusectl(out, sizeof out, "workers"), 0);
  assert_non_null(strstr(out, "w1"));
  assert_int_equal(fusectl(out, sizeof out, "artifacts 1"), 0);
  assert_non_null(strstr(out, "/store/cli/two.out"));
  assert_int_equal(fusectl(out, sizeof out, "logs 1"), 0);
  assert_non_null(strstr(out, "job.submitted"));
  /* a task that fails every attempt fails its job: watch exits 1, status shows the error,
   * retry re-queues it (and it fails again) */
  fp = fopen(spec, "w");
  fprintf(fp, "name: doomed\nstore: %s/store\nmax_attempts: 2\ntasks:\n"
              "  - {name: bad, kind: sleep, outputs: [x], params: {ms: 50, fail: 1}}\n", tmp);
  fclose(fp);
  snprintf(args, sizeof args, "submit %s", spec);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  assert_int_equal(fusectl(out, sizeof out, "watch 2"), 1);
  assert_non_null(strstr(out, "job.failed"));
  assert_int_equal(fusectl(out, sizeof out, "status 2"), 0);
  assert_non_null(strstr(out, "failed    2/2"));
  assert_non_null(strstr(out, "failing as asked"));
  assert_int_equal(fusectl(out, sizeof out, "retry 2"), 0);
  assert_int_equal(fusectl(out, sizeof out, "watch 2"), 1);
  assert_int_equal(fusectl(out, sizeof out, "logs 2"), 0);
  assert_non_null(strstr(out, "job.retry"));
  /* a kind the worker has no executor for (but a capability it advertises) is refused */
  fp = fopen(spec, "w");
  fprintf(fp, "name: odd\nstore: %s/store\nmax_attempts: 1\ntasks:\n  - {name: t, kind: teleport, cap: sleep}\n", tmp);
  fclose(fp);
  snprintf(args, sizeof args, "submit %s", spec);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  assert_int_equal(fusectl(out, sizeof out, "watch 3"), 1);
  assert_int_equal(fusectl(out, sizeof out, "status 3"), 0);
  assert_non_null(strstr(out, "no executor for this kind"));
  /* failures exit 1 with one line, bad usage exits 2 */
  assert_int_equal(fusectl(out, sizeof out, "cancel 1"), 1);
  assert_non_null(strstr(out, "nothing to cancel"));
  assert_int_equal(fusectl(out, sizeof out, "status 99"), 1);
  assert_int_equal(fusectl(out, sizeof out, "retry --task 2"), 1);
  assert_int_equal(fusectl(out, sizeof out, "retry"), 2);
  assert_int_equal(fusectl(out, sizeof out, "status notanid"), 2);
  assert_int_equal(fusectl(out, sizeof out, "watch"), 2);
  assert_int_equal(fusectl(out, sizeof out, "submit /nonexistent.yaml"), 1);
  fp = fopen(spec, "w");
  fprintf(fp, "name: bad\nstore: /s\ntasks:\n  - {name: a, kind: sleep, colour: red}\n");
  fclose(fp);
  snprintf(args, sizeof args, "submit %s", spec);
  assert_int_equal(fusectl(out, sizeof out, args), 2); /* a bad spec is bad input */
  assert_non_null(strstr(out, "job.yaml:4:28: unknown key 'colour'"));
  for (const char *const *c = (const char *const[]){"submit", "status", "watch", "list", "cancel", "retry", "logs",
                                                    "workers", "artifacts", NULL};
       *c; c++) {
    snprintf(args, sizeof args, "%s --help", *c);
    assert_int_equal(fusectl(out, sizeof out, args), 0);
    assert_non_null(strstr(out, "Usage: fusectl"));
  }
  /* no coordinator: a clear failure, not a hang */
  assert_int_equal(stop(&coord_pid, SIGTERM), 0);
  assert_int_equal(fusectl(out, sizeof out, "list --timeout 0.5"), 1);
  assert_non_null(strstr(out, "is it running?"));
  start_coord();
  /* up and down in their own run directory */
  snprintf(args, sizeof args, "up --run-dir %s/up --test-workers 1 --heartbeat 0.2", tmp);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  assert_non_null(strstr(out, "fusechat is up"));
  snprintf(args, sizeof args, "up --run-dir %s/up", tmp);
  assert_int_equal(fusectl(out, sizeof out, args), 1); /* already up */
  snprintf(args, sizeof args, "workers --endpoint ipc://%s/up/coord.ipc", tmp);
  double t0 = fc_now();
  do { /* the worker registers within a heartbeat or two */
    assert_int_equal(fusectl(out, sizeof out, args), 0);
  } while (!strstr(out, "worker-test-1") && fc_now() - t0 < 5 && usleep(100000) == 0);
  assert_non_null(strstr(out, "worker-test-1"));
  snprintf(args, sizeof args, "down --run-dir %s/up", tmp);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  assert_non_null(strstr(out, "coordinator stopped\n"));
  assert_null(strstr(out, "SIGKILL"));
  assert_int_equal(fusectl(out, sizeof out, args), 1); /* nothing left */
  clean_stop_and_remove();
}

/* CURVE over TCP: allow-listed keys get in, others get no answer. */
static void test_curve(void **state) {
  (void)state;
  make_dirs();
  char out[8192], args[1024], exe[512], log[256], key[256], allow[128], srv[256], wkey[512];
  int port = 30000 + getpid() % 20000;
  snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
  snprintf(allow, sizeof allow, "%s/allow", tmp);
  assert_int_equal(mkdir(allow, 0700), 0);
  snprintf(args, sizeof args, "keygen --dir %s coord", tmp);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  assert_int_equal(fusectl(out, sizeof out, args), 1); /* never overwrites a key */
  snprintf(args, sizeof args, "keygen --dir %s client", allow);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  snprintf(args, sizeof args, "keygen --dir %s worker", allow);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  snprintf(args, sizeof args, "keygen --dir %s stranger", tmp);
  assert_int_equal(fusectl(out, sizeof out, args), 0);
  struct stat st;
  snprintf(key, sizeof key, "%s/coord.key", tmp);
  assert_int_equal(stat(key, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  bin(exe, sizeof exe, "fusechat-coordinator");
  snprintf(log, sizeof log, "%s/coord.log", tmp);
  char *cargv[] = {exe, "--run-dir", run, "--db", db, "--endpoint", endpoint, "--curve-key", key, "--curve-allow", allow, NULL};
  coord_pid = spawn(log, cargv);
  bin(exe, sizeof exe, "fusechat-worker-test");
  snprintf(log, sizeof log, "%s/w1.log", tmp);
  snprintf(srv, sizeof srv, "%s/coord.pub", tmp);
  snprintf(wkey, sizeof wkey, "%s/worker.key", allow);
  char *wargv[] = {exe, "--endpoint", endpoint, "--id", "w1", "--heartbeat", "0.2", "--curve-key", wkey, "--curve-server", srv, NULL};
  worker_pid[0] = spawn(log, wargv);
  snprintf(args, sizeof args, "FUSECHAT_CURVE_KEY=%s/client.key FUSECHAT_CURVE_SERVER=%s workers", allow, srv);
  double t0 = fc_now();
  do { /* allowed: answered, and the allowed worker is registered */
    assert_int_equal(fusectl(out, sizeof out, args), 0);
  } while (!strstr(out, "w1 ") && fc_now() - t0 < 5 && usleep(100000) == 0);
  assert_non_null(strstr(out, "w1 "));
  snprintf(args, sizeof args, "FUSECHAT_CURVE_KEY=%s/stranger.key FUSECHAT_CURVE_SERVER=%s list --timeout 0.7", tmp, srv);
  assert_int_equal(fusectl(out, sizeof out, args), 1);
  assert_int_equal(fusectl(out, sizeof out, "list --timeout 0.7"), 1); /* no CURVE at all */
  snprintf(args, sizeof args, "FUSECHAT_CURVE_KEY=%s/client.key workers", allow);
  assert_int_equal(fusectl(out, sizeof out, args), 1); /* half a configuration is an error */
  assert_non_null(strstr(out, "both"));
  clean_stop_and_remove();
}

static int teardown(void **state) {
  (void)state;
  for (int k = 0; k < 3; k++) stop(&worker_pid[k], SIGKILL);
  stop(&coord_pid, SIGKILL);
  return 0;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_kill_worker_and_coordinator, teardown),
      cmocka_unit_test_teardown(test_garbage_cancel_and_sigterm, teardown),
      cmocka_unit_test_teardown(test_fusectl, teardown),
      cmocka_unit_test_teardown(test_curve, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
