/* End to end with the real stage daemons as separate processes on tiny models of our own (BPE
 * tokenizers trained here, random weights): a job runs undisturbed; the same job with the train
 * daemon SIGKILLed mid-training and the coordinator killed and restarted must resume from the
 * checkpoint and give bitwise the same merged weights; a cancelled job stops its task; a fusion
 * job whose sources are a Mixtral (mixture of experts) and an InternLM2 beside the Llama pivot. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
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

#include "fc_bpe_train.h"
#include "fc_config.h"
#include "fc_model.h"
#include "fc_net.h"
#include "fc_sha256.h"
#include "fc_gendata.h"
#include "fc_stage.h"
#include "fc_tok.h"
#include "test_support.h"
#include "test_proc.h"

static char g_dir[64], g_run[128], g_endpoint[256], g_db[128];
static char g_data[128], g_eval[128], g_piv[128], g_s1[128], g_s2[128];

/* ---- processes ---- */

#define MAXP 16
static struct {
  pid_t pid;
  char name[32];
} g_procs[MAXP];

static pid_t spawn(const char *name, char *const argv[]) {
  char log[256];
  snprintf(log, sizeof log, "%s/%s.log", g_dir, name);
  pid_t p = test_spawn_logged(log, argv);
  assert_true(p >= 0);
  for (int i = 0; i < MAXP; i++)
    if (!g_procs[i].pid) {
      g_procs[i].pid = p;
      snprintf(g_procs[i].name, sizeof g_procs[i].name, "%s", name);
      return p;
    }
  fail_msg("too many processes");
  return -1;
}

static int find_proc(const char *name) {
  for (int i = 0; i < MAXP; i++)
    if (g_procs[i].pid && !strcmp(g_procs[i].name, name)) return i;
  return -1;
}

/* Signals a daemon and returns its exit status (-1 if a signal ended it). */
static int stop(const char *name, int sig) {
  int i = find_proc(name);
  if (i < 0) return 0;
  kill(g_procs[i].pid, sig);
  int st = 0;
  waitpid(g_procs[i].pid, &st, 0);
  g_procs[i].pid = 0;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int alive(const char *name) {
  int i = find_proc(name);
  return i >= 0 && waitpid(g_procs[i].pid, NULL, WNOHANG) == 0;
}

static void exe(char *out, size_t n, const char *prog) {
  const char *b = getenv("FC_BUILD");
  snprintf(out, n, "%s/daemons/%s", b ? b : ".", prog);
}

static void start_coord(void) {
  char e[512];
  exe(e, sizeof e, "fusechat-coordinator");
  char *argv[] = {e, "--run-dir", g_run, "--db", g_db, "--lease-timeout", "1.5", NULL};
  spawn("coordinator", argv);
}

/* A stage daemon: prog "fusechat-train", name "train-1" (its worker id and log name). */
static void start_daemon(const char *prog, const char *name, const char *extra1, const char *extra2) {
  char e[512];
  exe(e, sizeof e, prog);
  char *argv[12] = {e, "--run-dir", g_run, "--id", (char *)name, "--heartbeat", "0.2", "--threads", "1", NULL};
  if (extra1) argv[9] = (char *)extra1, argv[10] = (char *)extra2, argv[11] = NULL;
  spawn(name, argv);
}

static void stop_all(int sig) {
  for (int i = 0; i < MAXP; i++)
    if (g_procs[i].pid && strcmp(g_procs[i].name, "coordinator")) {
      char n[32];
      snprintf(n, sizeof n, "%s", g_procs[i].name);
      int rc = stop(n, sig);
      if (sig == SIGTERM) assert_int_equal(rc, 0);
    }
  int rc = stop("coordinator", sig);
  if (sig == SIGTERM) assert_int_equal(rc, 0);
}

/* No daemon log may hold a sanitizer report (the daemons run instrumented in CI). */
static void check_logs(void) {
  DIR *d = opendir(g_dir);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strstr(e->d_name, ".log")) continue;
    char p[512], *text;
    size_t n;
    fc_err_t err;
    snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
    if (fc_read_file(p, &text, &n, &err)) continue;
    int bad = strstr(text, "Sanitizer") || strstr(text, "runtime error");
    if (bad) fprintf(stderr, "%s:\n%s\n", p, text);
    free(text);
    assert_false(bad);
  }
  closedir(d);
}

/* ---- coordinator calls ---- */

/* How long one call waits for its answer: a coordinator under AddressSanitizer on a loaded
 * machine takes seconds over a big submit; a retry after a lapsed wait is harmless (a submit
 * of the same spec answers with the same job) but only costs time. */
#define CALL_MS 10000

static json_t *call(fc_msg_t *req) {
  fc_msg_t rep;
  fc_err_t err;
  if (fc_net_call(g_endpoint, req, &rep, CALL_MS, &err)) return NULL;
  json_t *j = rep.ok ? json_loads(rep.text, 0, NULL) : NULL;
  if (!rep.ok) fprintf(stderr, "coordinator: %s\n", rep.error);
  fc_msg_clear(&rep);
  return j;
}

static int64_t submit(const char *spec) {
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = (char *)spec};
  json_t *r = NULL;
  for (int i = 0; i < 50 && !r; i++)
    if (!(r = call(&req))) usleep(100000);
  assert_non_null(r);
  int64_t id = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  assert_true(id > 0);
  return id;
}

/* The job's state and one task's state ("" when the coordinator does not answer). */
static void snapshot(int64_t job, const char *task, char *jstate, char *tstate) {
  jstate[0] = tstate[0] = 0;
  fc_msg_t req = {.type = FC_MSG_STATUS, .job = job};
  json_t *r = call(&req);
  if (!r) return;
  json_t *j = json_array_get(json_object_get(r, "jobs"), 0), *t;
  snprintf(jstate, 16, "%s", json_string_value(json_object_get(j, "state")));
  size_t i;
  json_array_foreach(json_object_get(j, "tasks"), i, t) {
    if (task && !strcmp(json_string_value(json_object_get(t, "name")), task))
      snprintf(tstate, 16, "%s", json_string_value(json_object_get(t, "state")));
  }
  json_decref(r);
}

static const char *wait_job(int64_t job, double timeout) {
  static char js[16];
  char ts[16];
  double t0 = fc_now();
  while (fc_now() - t0 < timeout) {
    snapshot(job, NULL, js, ts);
    if (js[0] && strcmp(js, "running") && strcmp(js, "queued")) {
      if (strcmp(js, "done")) { /* say why */
        fc_msg_t req = {.type = FC_MSG_STATUS, .job = job};
        json_t *r = call(&req), *t;
        size_t i;
        json_array_foreach(json_object_get(json_array_get(json_object_get(r, "jobs"), 0), "tasks"), i, t) {
          const char *e = json_string_value(json_object_get(t, "error"));
          if (e && *e) fprintf(stderr, "task %s: %s\n", json_string_value(json_object_get(t, "name")), e);
        }
        json_decref(r);
      }
      return js;
    }
    usleep(50000);
  }
  return "timeout";
}

static void sha_of(const char *job, const char *rel, char hex[65]) {
  char p[512];
  snprintf(p, sizeof p, "%s/store/%s/%s", g_dir, job, rel);
  uint64_t size;
  fc_err_t err;
  if (fc_sha256_file(p, hex, &size, &err)) fail_msg("%s", err.msg);
}

static int file_contains(const char *name, const char *needle) {
  char p[512], *text;
  size_t n;
  fc_err_t err;
  snprintf(p, sizeof p, "%s/%s", g_dir, name);
  if (fc_read_file(p, &text, &n, &err)) return 0;
  int found = strstr(text, needle) != NULL;
  free(text);
  return found;
}

/* ---- tiny models ---- */

static int group_setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/fc-e2ed-XXXXXX");
  if (!mkdtemp(g_dir)) return -1;
  snprintf(g_run, sizeof g_run, "%s/run", g_dir);
  snprintf(g_endpoint, sizeof g_endpoint, "ipc://%s/coord.ipc", g_run);
  snprintf(g_db, sizeof g_db, "%s/coord.sqlite", g_dir);
  snprintf(g_data, sizeof g_data, "%s/train.jsonl", g_dir);
  snprintf(g_eval, sizeof g_eval, "%s/eval.jsonl", g_dir);
  snprintf(g_piv, sizeof g_piv, "%s/pivot", g_dir);
  snprintf(g_s1, sizeof g_s1, "%s/s1", g_dir);
  snprintf(g_s2, sizeof g_s2, "%s/s2", g_dir);
  fc_err_t err = {0};
  fc_gendata_opts_t o = {.count = 24, .mix = {1, 1, 1, 1}, .split = FC_GENDATA_TRAIN, .seed = 3, .world_seed = 7,
                     .max_turns = 1};
  if (fc_gendata_write(&o, g_data, &err)) return -1;
  o.count = 8, o.split = FC_GENDATA_EVAL, o.seed = 5;
  if (fc_gendata_write(&o, g_eval, &err)) return -1;
  char *corpus;
  size_t clen;
  if (fc_read_file(g_data, &corpus, &clen, &err)) return -1;
  test_make_model(g_piv, FC_TOK_BYTELEVEL, 400, corpus, clen, 11);
  test_make_model(g_s1, FC_TOK_SENTENCEPIECE, 440, corpus, clen, 12);
  test_make_model(g_s2, FC_TOK_BYTELEVEL, 360, corpus, clen, 13);
  free(corpus);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  return system(cmd) ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  stop_all(SIGKILL);
  return 0;
}

/* ---- train + merge over explicit tasks ---- */

/* Two plain fine-tunes of the pivot (other learning rates) merged with task arithmetic. */
static void train_merge_spec(char *spec, size_t n, const char *name, int steps) {
  snprintf(spec, n,
           "name: %s\nstore: %s/store\nmax_attempts: 4\ntasks:\n"
           "  - {name: train/a, kind: train, inputs: [%s, %s], outputs: [targets/a],"
           " params: {steps: %d, batch_size: 2, seq_len: 48, lr: 0.003, seed: 1, checkpoint_every: 3}}\n"
           "  - {name: train/b, kind: train, inputs: [%s, %s], outputs: [targets/b],"
           " params: {steps: %d, batch_size: 2, seq_len: 48, lr: 0.001, seed: 2, checkpoint_every: 3}}\n"
           "  - {name: merge, kind: merge, deps: [train/a, train/b], outputs: [merged],"
           " inputs: [%s, %s/store/%s/targets/a, %s/store/%s/targets/b], params: {method: ties, density: 0.5}}\n"
           "  - {name: eval/pivot, kind: eval, inputs: [%s, %s], outputs: [eval/pivot.json],"
           " params: {model: pivot, max_new_tokens: 4}}\n"
           "  - {name: eval/merged, kind: eval, deps: [merge], inputs: [%s, %s/store/%s/merged],"
           " outputs: [eval/merged.json], params: {model: merged-ties, max_new_tokens: 4}}\n",
           name, g_dir, g_piv, g_data, steps, g_piv, g_data, steps, g_piv, g_dir, name, g_dir, name, g_eval, g_piv,
           g_eval, g_dir, name);
}

/* A finished checkpoint in one of the train task's attempt work directories (X.work/ATTEMPT). */
static int has_checkpoint(const char *job, const char *target) {
  char p[512];
  snprintf(p, sizeof p, "%s/store/%s/targets/%s.work", g_dir, job, target);
  DIR *d = opendir(p);
  if (!d) return 0;
  struct dirent *e;
  int found = 0;
  while ((e = readdir(d)) && !found) {
    if (e->d_name[0] == '.') continue;
    char q[800];
    snprintf(q, sizeof q, "%s/%s", p, e->d_name);
    DIR *a = opendir(q);
    struct dirent *f;
    while (a && (f = readdir(a))) found |= !strncmp(f->d_name, "checkpoint-", 11) && !strchr(f->d_name, '.');
    if (a) closedir(a);
  }
  closedir(d);
  return found;
}

static void test_train_merge_kill_and_resume(void **state) {
  (void)state;
  start_coord();
  start_daemon("fusechat-train", "train-1", NULL, NULL);
  start_daemon("fusechat-merge", "merge-1", NULL, NULL);
  start_daemon("fusechat-eval", "eval-1", NULL, NULL);
  char spec[4096];
  train_merge_spec(spec, sizeof spec, "ref", 12);
  int64_t ref = submit(spec);
  assert_string_equal(wait_job(ref, 60), "done");
  char want[65], got[65];
  sha_of("ref", "merged/model.safetensors", want);
  /* fusectl report prints the table of both eval files and writes results.json */
  char cmd[1024], out[8192];
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl report --endpoint %s %lld 2>&1", getenv("FC_BUILD"), g_endpoint,
           (long long)ref);
  FILE *pp = popen(cmd, "r");
  size_t got_n = fread(out, 1, sizeof out - 1, pp);
  out[got_n] = 0;
  assert_int_equal(pclose(pp), 0);
  assert_non_null(strstr(out, "pivot"));
  assert_non_null(strstr(out, "merged-ties"));
  char rj[512];
  snprintf(rj, sizeof rj, "%s/store/ref/results.json", g_dir);
  json_t *res = json_load_file(rj, 0, NULL);
  assert_non_null(res);
  assert_int_equal(json_array_size(json_object_get(res, "models")), 2);
  json_decref(res);

  /* the train daemon is SIGKILLed once train/a has a checkpoint; a new one resumes from it */
  train_merge_spec(spec, sizeof spec, "chaos", 12);
  int64_t job = submit(spec);
  double t0 = fc_now();
  while (!has_checkpoint("chaos", "a") && fc_now() - t0 < 30) usleep(2000);
  assert_true(has_checkpoint("chaos", "a"));
  assert_int_equal(stop("train-1", SIGKILL), -1);
  double killed = fc_now();
  start_daemon("fusechat-train", "train-2", NULL, NULL);
  /* the coordinator dies and comes back while the job runs */
  usleep(300000);
  assert_int_equal(stop("coordinator", SIGKILL), -1);
  start_coord();
  assert_string_equal(wait_job(job, 90), "done");
  fprintf(stderr, "kill -> job done in %.2f s\n", fc_now() - killed);
  sha_of("chaos", "merged/model.safetensors", got);
  assert_string_equal(want, got);
  assert_true(file_contains("train-2.log", "resuming from the checkpoint"));
  /* the outputs hold no checkpoints or work directories */
  char p[512];
  snprintf(p, sizeof p, "%s/store/chaos/targets/a.work", g_dir);
  assert_false(fc_path_exists(p));
  snprintf(p, sizeof p, "%s/store/chaos/merged.tmp", g_dir);
  assert_false(fc_path_exists(p));
  stop_all(SIGTERM);
  check_logs();
}

/* A cancelled job stops its running training (the daemon stays up and serves the next job). */
static void test_cancel(void **state) {
  (void)state;
  start_coord();
  start_daemon("fusechat-train", "train-c", NULL, NULL);
  start_daemon("fusechat-merge", "merge-c", NULL, NULL);
  start_daemon("fusechat-eval", "eval-c", NULL, NULL);
  char spec[4096], js[16], ts[16];
  train_merge_spec(spec, sizeof spec, "long", 1000000);
  int64_t job = submit(spec);
  double t0 = fc_now();
  while (!has_checkpoint("long", "a") && fc_now() - t0 < 30) usleep(5000);
  fc_msg_t req = {.type = FC_MSG_CANCEL_JOB, .job = job};
  json_t *r = call(&req);
  assert_non_null(r);
  json_decref(r);
  assert_string_equal(wait_job(job, 10), "cancelled");
  /* the daemon gave the task up: it takes the next job */
  train_merge_spec(spec, sizeof spec, "after", 2);
  int64_t next = submit(spec);
  assert_string_equal(wait_job(next, 60), "done");
  snapshot(job, "train/a", js, ts);
  assert_string_equal(ts, "cancelled");
  assert_true(alive("train-c"));
  stop_all(SIGTERM);
  check_logs();
}

/* ---- the whole fusion pipeline ---- */

static void fusion_spec(char *spec, size_t n, const char *name, const char *extra) {
  snprintf(spec, n,
           "name: %s\nstore: %s/store\nseed: 1\nmax_attempts: 4\n"
           "models:\n  - {name: pivot, path: %s, role: pivot}\n  - {name: s1, path: %s}\n  - {name: s2, path: %s}\n"
           "dataset: %s\neval: %s\nshards: 2\ntop_k: 4\nlambda: 0.9\n"
           "training: {epochs: 1, lr: 0.003, batch_size: 2, seq_len: 128, steps: 12, checkpoint_every: 3}\n"
           "merge: {method: ties, parameters: {density: 0.5}}\n%s",
           name, g_dir, g_piv, g_s1, g_s2, g_data, g_eval, extra ? extra : "");
}

static void start_logits(const char *model, const char *path, int i) {
  char e[512], id[64];
  exe(e, sizeof e, "fusechat-logits");
  snprintf(id, sizeof id, "logits-%s-%d", model, i);
  char *argv[] = {e, "--run-dir", g_run, "--id", id, "--heartbeat", "0.2", "--threads", "1", "--model", (char *)path,
                  "--name", (char *)model, NULL};
  spawn(id, argv);
}

static void start_fusion_daemons(int nlogits, int nalign) {
  start_coord();
  for (int i = 1; i <= nlogits; i++) {
    start_logits("pivot", g_piv, i);
    start_logits("s1", g_s1, i);
    start_logits("s2", g_s2, i);
  }
  for (int i = 1; i <= nalign; i++) {
    char id[32];
    snprintf(id, sizeof id, "align-%d", i);
    start_daemon("fusechat-align", id, NULL, NULL);
  }
  start_daemon("fusechat-train", "train-1", NULL, NULL);
  start_daemon("fusechat-merge", "merge-1", NULL, NULL);
  start_daemon("fusechat-eval", "eval-1", NULL, NULL);
}

/* Every stage as its own process; then the train daemon SIGKILLed mid-training and the
 * coordinator killed and restarted; the merged weights must be the same bytes. */
static void test_fusion_job(void **state) {
  (void)state;
  start_fusion_daemons(1, 1);
  char spec[4096], want[65], got[65];
  fusion_spec(spec, sizeof spec, "fuse-ref", "baselines: {sft: true, merges: [task_arithmetic]}\n");
  double t0 = fc_now();
  int64_t ref = submit(spec);
  assert_string_equal(wait_job(ref, 120), "done");
  fprintf(stderr, "fusion job: %.2f s\n", fc_now() - t0);
  sha_of("fuse-ref", "merged/model.safetensors", want);
  /* every model was evaluated, and the report has them all */
  static const char *const evals[] = {"pivot", "s1", "s2", "target-s1", "target-s2", "sft", "merged",
                                      "merged-task_arithmetic"};
  for (int e = 0; e < 8; e++) {
    char p[512];
    snprintf(p, sizeof p, "%s/store/fuse-ref/eval/%s.json", g_dir, evals[e]);
    assert_true(fc_path_exists(p));
  }

  fusion_spec(spec, sizeof spec, "fuse-chaos", NULL);
  int64_t job = submit(spec);
  t0 = fc_now();
  while (!has_checkpoint("fuse-chaos", "s1") && fc_now() - t0 < 60) usleep(2000);
  assert_true(has_checkpoint("fuse-chaos", "s1"));
  assert_int_equal(stop("train-1", SIGKILL), -1);
  start_daemon("fusechat-train", "train-2", NULL, NULL);
  usleep(200000);
  assert_int_equal(stop("coordinator", SIGKILL), -1);
  start_coord();
  assert_string_equal(wait_job(job, 120), "done");
  sha_of("fuse-chaos", "merged/model.safetensors", got);
  assert_string_equal(want, got);
  assert_true(file_contains("train-2.log", "resuming from the checkpoint"));
  stop_all(SIGTERM);
  check_logs();
}

/* Two logits daemons per model and three align daemons share the shards: same bytes. */
static void test_fusion_scale(void **state) {
  (void)state;
  char spec[4096], want[65], got[65];
  sha_of("fuse-ref", "merged/model.safetensors", want);
  start_fusion_daemons(2, 3);
  fusion_spec(spec, sizeof spec, "fuse-scale", "baselines: {sft: true, merges: [task_arithmetic]}\n");
  int64_t job = submit(spec);
  assert_string_equal(wait_job(job, 120), "done");
  sha_of("fuse-scale", "merged/model.safetensors", got);
  assert_string_equal(want, got);
  /* the shards were spread: more than one logits daemon of the pivot ran a task */
  int used = file_contains("logits-pivot-1.log", "shard") + file_contains("logits-pivot-2.log", "shard");
  fprintf(stderr, "pivot logits daemons used: %d\n", used);
  stop_all(SIGTERM);
  check_logs();
}

/* Sources of other families than the pivot's: a Mixtral (4 experts, top-2) and an InternLM2
 * (packed grouped wqkv) with tokenizers of their own; their logits daemons run the forward-only
 * engine, and the job goes through alignment, fusion, training, merging and evaluation. */
static void test_fusion_diverse_sources(void **state) {
  (void)state;
  char mx[160], il[160], spec[4096];
  snprintf(mx, sizeof mx, "%s/src-mixtral", g_dir);
  snprintf(il, sizeof il, "%s/src-internlm2", g_dir);
  char *corpus;
  size_t clen;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(g_data, &corpus, &clen, &err), 0);
  test_make_model_of("mixtral", mx, FC_TOK_SENTENCEPIECE, 420, corpus, clen, 21);
  test_make_model_of("internlm2", il, FC_TOK_BYTELEVEL, 380, corpus, clen, 22);
  free(corpus);
  start_coord();
  start_logits("pivot", g_piv, 1);
  start_logits("mx", mx, 1);
  start_logits("il", il, 1);
  start_daemon("fusechat-align", "align-1", NULL, NULL);
  start_daemon("fusechat-train", "train-1", NULL, NULL);
  start_daemon("fusechat-merge", "merge-1", NULL, NULL);
  start_daemon("fusechat-eval", "eval-1", NULL, NULL);
  snprintf(spec, sizeof spec,
           "name: fuse-diverse\nstore: %s/store\nseed: 1\nmax_attempts: 2\n"
           "models:\n  - {name: pivot, path: %s, role: pivot}\n  - {name: mx, path: %s}\n  - {name: il, path: %s}\n"
           "dataset: %s\neval: %s\nshards: 2\ntop_k: 4\nlambda: 0.9\n"
           "training: {epochs: 1, lr: 0.003, batch_size: 2, seq_len: 128, steps: 6, checkpoint_every: 3}\n"
           "merge: {method: ties, parameters: {density: 0.5}}\n",
           g_dir, g_piv, mx, il, g_data, g_eval);
  int64_t job = submit(spec);
  assert_string_equal(wait_job(job, 180), "done");
  /* Both sources were evaluated as they are, and the fused targets merged. */
  static const char *const evals[] = {"mx", "il", "target-mx", "target-il", "merged"};
  for (int e = 0; e < 5; e++) {
    char p[512];
    snprintf(p, sizeof p, "%s/store/fuse-diverse/eval/%s.json", g_dir, evals[e]);
    assert_true(fc_path_exists(p));
  }
  stop_all(SIGTERM);
  check_logs();
}

/* A source whose top-K came from elsewhere (models[].logits, one JSONL per shard, made here from
 * s1's own stores): no logits daemon of s1 runs, the align daemon imports the files, and the
 * job's s1 stores hold exactly the distributions that were exported. */
static void test_fusion_imported_source(void **state) {
  (void)state;
  char made[2][256], jl[2][256], spec[4096];
  for (int s = 0; s < 2; s++) {
    snprintf(made[s], sizeof made[s], "%s/made-s1.%d.topk", g_dir, s);
    snprintf(jl[s], sizeof jl[s], "%s/imp-s1.%d.jsonl", g_dir, s);
    fc_stage_logits_opts_t o = {.model_dir = g_s1, .out_path = made[s], .top_k = 4, .batch_size = 2, .threads = 1};
    o.data = (fc_stage_data_t){.path = g_data, .pivot_tok = g_piv, .tmpl = FC_CHAT_AUTO, .shard = (uint32_t)s,
                               .n_shards = 2, .max_len = 128};
    fc_err_t err = {0};
    if (fc_stage_logits(&o, NULL, NULL, NULL, &err)) fail_msg("%s", err.msg);
    test_export_jsonl(made[s], jl[s], 0, -1, 0, 0);
  }
  start_coord();
  start_logits("pivot", g_piv, 1);
  start_daemon("fusechat-align", "align-1", NULL, NULL);
  start_daemon("fusechat-train", "train-1", NULL, NULL);
  start_daemon("fusechat-merge", "merge-1", NULL, NULL);
  snprintf(spec, sizeof spec,
           "name: fuse-imported\nstore: %s/store\nseed: 1\nmax_attempts: 1\n"
           "models:\n  - {name: pivot, path: %s, role: pivot}\n  - {name: s1, path: %s, logits: '%s/imp-s1.{shard}.jsonl'}\n"
           "dataset: %s\nshards: 2\ntop_k: 4\n"
           "training: {epochs: 1, lr: 0.003, batch_size: 2, seq_len: 128, steps: 2, checkpoint_every: 0}\n",
           g_dir, g_piv, g_s1, g_dir, g_data);
  int64_t job = submit(spec);
  assert_string_equal(wait_job(job, 120), "done");
  assert_true(file_contains("align-1.log", "imported from"));
  fc_err_t err = {0};
  for (int s = 0; s < 2; s++) {
    char got[512];
    snprintf(got, sizeof got, "%s/store/fuse-imported/logits/s1.shard-%04d.topk", g_dir, s);
    fc_topk_reader_t *a = NULL, *b = NULL;
    assert_int_equal(fc_topk_open(&a, made[s], &err), 0);
    assert_int_equal(fc_topk_open(&b, got, &err), 0);
    assert_int_equal(fc_topk_count(a), fc_topk_count(b));
    assert_true(fc_topk_count(a) > 0);
    assert_true(fc_topk_tok_hash(a) == fc_topk_tok_hash(b));
    fc_topk_ex_t x = {0}, y = {0};
    uint32_t K = fc_topk_k(a);
    assert_int_equal(K, fc_topk_k(b));
    for (uint64_t e = 0; e < fc_topk_count(a); e++) {
      assert_int_equal(fc_topk_get(a, e, &x, &err), 0);
      assert_int_equal(fc_topk_get(b, e, &y, &err), 0);
      test_assert_topk_ex_equal(&x, &y, K);
    }
    fc_topk_ex_free(&x), fc_topk_ex_free(&y);
    fc_topk_close(&a), fc_topk_close(&b);
  }
  stop_all(SIGTERM);
  check_logs();
}

/* ---- the logits daemon's direct socket ---- */

static int serve_call(const char *ep, fc_msg_t *req, fc_msg_t *rep) {
  fc_err_t err = {0};
  for (int i = 0; i < 100; i++) { /* the daemon loads its model first */
    if (fc_net_call(ep, req, rep, 500, &err) == 0) return 0;
    usleep(50000);
  }
  fail_msg("%s: %s", ep, err.msg);
  return -1;
}

static void test_logits_serve(void **state) {
  (void)state;
  char ep[256];
  snprintf(ep, sizeof ep, "ipc://%s/logits-pivot.ipc", g_dir);
  start_coord();
  char e[512];
  exe(e, sizeof e, "fusechat-logits");
  char *argv[] = {e, "--run-dir", g_run, "--id", "logits-pivot", "--threads", "1", "--model", g_piv,
                  "--name", "pivot", "--serve", ep, NULL};
  spawn("logits-pivot", argv);
  /* ids in: the answer matches the full forward's top-K here */
  const int32_t ids[] = {1, 7, 42, 99, 3};
  fc_msg_t req = {.type = FC_MSG_LOGITS_REQUEST, .k = 4}, rep;
  fc_msg_set_ids(&req, ids, 5);
  serve_call(ep, &req, &rep);
  fc_msg_clear(&req);
  if (!rep.ok) fail_msg("%s", rep.error);
  assert_int_equal(rep.nids, 5);
  assert_int_equal(rep.k, 4);
  assert_string_equal(rep.text, "pivot");
  fc_model_t *m;
  fc_err_t err = {0};
  assert_int_equal(fc_model_load(&m, g_piv, &err), 0);
  const float *logits = fc_model_forward(m, ids, 1, 5, 0, &err);
  assert_non_null(logits);
  int V = fc_model_config(m)->vocab_size;
  for (int t = 0; t < 5; t++) {
    int32_t top[4];
    float lp[4];
    fc_topk_logprobs(logits + (size_t)t * V, V, 4, top, lp);
    for (int j = 0; j < 4; j++) {
      assert_int_equal(rep.top_ids[t * 4 + j], top[j]);
      assert_true(fabsf(rep.top_lp[t * 4 + j] - lp[j]) < 1e-4f);
    }
  }
  fc_model_destroy(&m);
  fc_msg_clear(&rep);
  /* text in, as a chat prompt */
  req = (fc_msg_t){.type = FC_MSG_LOGITS_REQUEST, .k = 3};
  fc_msg_set_str(&req.text, "What is 2 + 3?");
  fc_msg_set_str(&req.state, "chat");
  serve_call(ep, &req, &rep);
  fc_msg_clear(&req);
  assert_true(rep.ok);
  assert_true(rep.nids > 5 && rep.ntop == rep.nids * 3);
  fc_msg_clear(&rep);
  /* malformed and refused requests get an error reply; the daemon keeps serving */
  void *zc = zmq_ctx_new(), *s = zmq_socket(zc, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  assert_int_equal(zmq_connect(s, ep), 0);
  const uint8_t junk[][8] = {{0xdf, 0xff, 0xff, 0xff, 0xff}, {0x93, 1, 2}, {0xc1}, {0x81, 0xa1, 'v', 0x01}};
  for (size_t i = 0; i < sizeof junk / sizeof *junk; i++) {
    zmq_send(s, junk[i], 5, 0);
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&it, 1, 5000), 1);
    uint8_t buf[4096];
    int n = zmq_recv(s, buf, sizeof buf, 0);
    assert_true(n > 0);
    assert_int_equal(fc_msg_decode(buf, (size_t)n, &rep, &err), 0);
    assert_int_equal(rep.type, FC_MSG_LOGITS_REPLY);
    assert_false(rep.ok);
    fc_msg_clear(&rep);
  }
  zmq_send(s, "", 0, ZMQ_SNDMORE), zmq_send(s, "x", 1, 0); /* extra frames */
  zmq_close(s);
  zmq_ctx_term(zc);
  const int32_t bad_ids[] = {1, 1 << 30};
  fc_msg_t bad[3] = {{.type = FC_MSG_LOGITS_REQUEST, .k = 2}, {.type = FC_MSG_LOGITS_REQUEST, .k = 2},
                     {.type = FC_MSG_STATUS, .job = 1}};
  fc_msg_set_ids(&bad[0], bad_ids, 2);               /* id outside the vocabulary */
  fc_msg_set_ids(&bad[1], bad_ids, 1), fc_msg_set_str(&bad[1].text, "both"); /* text and ids */
  const char *why[3] = {"outside the vocabulary", "not both", "answers logits_request"};
  for (int i = 0; i < 3; i++) {
    serve_call(ep, &bad[i], &rep);
    assert_false(rep.ok);
    assert_non_null(strstr(rep.error, why[i]));
    fc_msg_clear(&rep), fc_msg_clear(&bad[i]);
  }
  /* a 10 MB prompt is refused at the message door; one that fits a message but not the model's
   * context is refused by the model, naming the context; the daemon serves on */
  const size_t bigs[2] = {10u << 20, 200u << 10};
  const char *big_why[2] = {"too long", "the model takes at most"};
  for (int i = 0; i < 2; i++) {
    char *big = fc_xmalloc(bigs[i]);
    memset(big, 'a', bigs[i] - 1);
    big[bigs[i] - 1] = 0;
    req = (fc_msg_t){.type = FC_MSG_LOGITS_REQUEST, .k = 1};
    fc_msg_set_str(&req.text, big);
    free(big);
    serve_call(ep, &req, &rep);
    assert_false(rep.ok);
    if (!strstr(rep.error, big_why[i])) fail_msg("a %zu-byte prompt: %s", bigs[i], rep.error);
    fc_msg_clear(&req), fc_msg_clear(&rep);
  }
  req = (fc_msg_t){.type = FC_MSG_LOGITS_REQUEST, .k = 1};
  fc_msg_set_ids(&req, ids, 2);
  serve_call(ep, &req, &rep);
  assert_true(rep.ok);
  fc_msg_clear(&req), fc_msg_clear(&rep);
  assert_true(alive("logits-pivot"));

  /* a CURVE-protected socket answers allow-listed keys only */
  char keys[256], allow[300], srvkey[300];
  snprintf(keys, sizeof keys, "%s/keys", g_dir);
  snprintf(allow, sizeof allow, "%s/allowed", g_dir);
  assert_int_equal(fc_mkdir_p(keys, &err), 0);
  assert_int_equal(fc_mkdir_p(allow, &err), 0);
  assert_int_equal(fc_curve_keygen(keys, "server", &err), 0);
  assert_int_equal(fc_curve_keygen(keys, "alice", &err), 0);
  assert_int_equal(fc_curve_keygen(keys, "mallory", &err), 0);
  char from[400], to[400];
  snprintf(from, sizeof from, "%s/alice.pub", keys);
  snprintf(to, sizeof to, "%s/alice.pub", allow);
  assert_int_equal(fc_copy_file(from, to, &err), 0);
  snprintf(srvkey, sizeof srvkey, "%s/server.key", keys);
  char ep2[256];
  snprintf(ep2, sizeof ep2, "ipc://%s/logits-curve.ipc", g_dir);
  char *argv2[] = {e, "--run-dir", g_run, "--id", "logits-curve", "--threads", "1", "--model", g_piv, "--name", "pivot",
                   "--serve", ep2, "--serve-key", srvkey, "--serve-allow", allow, NULL};
  spawn("logits-curve", argv2);
  char env_key[400], env_srv[400];
  snprintf(env_srv, sizeof env_srv, "%s/server.pub", keys);
  setenv("FUSECHAT_CURVE_SERVER", env_srv, 1);
  snprintf(env_key, sizeof env_key, "%s/alice.key", keys);
  setenv("FUSECHAT_CURVE_KEY", env_key, 1);
  req = (fc_msg_t){.type = FC_MSG_LOGITS_REQUEST, .k = 2};
  fc_msg_set_ids(&req, ids, 3);
  serve_call(ep2, &req, &rep);
  assert_true(rep.ok);
  assert_int_equal(rep.ntop, 6);
  fc_msg_clear(&rep);
  snprintf(env_key, sizeof env_key, "%s/mallory.key", keys);
  setenv("FUSECHAT_CURVE_KEY", env_key, 1);
  assert_int_not_equal(fc_net_call(ep2, &req, &rep, 700, &err), 0); /* no answer at all */
  unsetenv("FUSECHAT_CURVE_KEY"), unsetenv("FUSECHAT_CURVE_SERVER");
  assert_int_not_equal(fc_net_call(ep2, &req, &rep, 700, &err), 0);
  fc_msg_clear(&req);
  assert_true(alive("logits-curve"));
  assert_true(file_contains("logits-curve.log", "not in the allow-list"));
  stop_all(SIGTERM);
  check_logs();
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_train_merge_kill_and_resume, teardown),
      cmocka_unit_test_teardown(test_cancel, teardown),
      cmocka_unit_test_teardown(test_logits_serve, teardown),
      cmocka_unit_test_teardown(test_fusion_job, teardown),
      cmocka_unit_test_teardown(test_fusion_scale, teardown),
      cmocka_unit_test_teardown(test_fusion_diverse_sources, teardown),
      cmocka_unit_test_teardown(test_fusion_imported_source, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
