/* Job specs: the pipeline expands to the DESIGN.md DAG with deterministic paths; explicit task
 * lists keep their deps; bad specs fail with the line of the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fc_job.h"

static fc_job_t *parse_ok(const char *text) {
  fc_job_t *j;
  fc_err_t err = {0};
  int rc = fc_job_parse(text, strlen(text), "t.yaml", &j, &err);
  if (rc) fail_msg("%s", err.msg);
  return j;
}

static void expect_err(const char *text, const char *needle) {
  fc_job_t *j;
  fc_err_t err = {0};
  int rc = fc_job_parse(text, strlen(text), "t.yaml", &j, &err);
  if (rc == 0) fail_msg("accepted a bad spec (wanted '%s')", needle);
  assert_null(j);
  if (!strstr(err.msg, needle)) fail_msg("error '%s' does not contain '%s'", err.msg, needle);
}

static const fc_job_task_t *task(const fc_job_t *j, const char *name) {
  long i = fc_job_find_task(j, name);
  if (i < 0) fail_msg("no task %s", name);
  return &j->tasks[i];
}

static int has_dep(const fc_job_t *j, const fc_job_task_t *t, const char *name) {
  for (size_t i = 0; i < t->ndeps; i++)
    if (!strcmp(j->tasks[t->deps[i]].name, name)) return 1;
  return 0;
}

static void test_pipeline_expansion(void **state) {
  (void)state;
  char path[1024];
  snprintf(path, sizeof path, "%s/jobs/pipeline.yaml", getenv("FC_FIXTURES"));
  char *text;
  size_t len;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(path, &text, &len, &err), 0);
  fc_job_t *j = parse_ok(text);
  free(text);
  assert_string_equal(j->name, "demo");
  assert_string_equal(j->dir, "/srv/store/demo");
  assert_int_equal(j->nmodels, 3);
  assert_int_equal(j->models[2].role, FC_ROLE_SOURCE);
  assert_int_equal(j->logits.top_k, 8);
  assert_true(j->train.lambda == 0.8 && j->train.lr == 1e-4 && j->train.seed == 7);
  /* 3 models x 2 shards logits; per source vocab-map + 2 align + train; merge; eval of the 3
   * models, 2 targets and the merge */
  assert_int_equal(j->ntasks, 6 + 2 * 4 + 1 + 6);
  for (size_t i = 0; i < j->ntasks; i++) /* deps always point backwards */
    for (size_t d = 0; d < j->tasks[i].ndeps; d++) assert_true(j->tasks[i].deps[d] < i);
  const fc_job_task_t *t = task(j, "logits/s2/1");
  assert_string_equal(t->cap, "logits:s2");
  assert_string_equal(t->outputs[0], "/srv/store/demo/logits/s2.shard-0001.topk");
  assert_string_equal(fc_kv_get(t->params, t->nparams, "top_k"), "8");
  t = task(j, "vocab-map/s1");
  assert_int_equal(t->ndeps, 4);
  assert_true(has_dep(j, t, "logits/s1/0") && has_dep(j, t, "logits/pivot/1"));
  assert_false(has_dep(j, t, "logits/s2/0"));
  t = task(j, "align/s1/1");
  assert_string_equal(t->cap, "align");
  assert_int_equal(t->ndeps, 3);
  assert_true(has_dep(j, t, "logits/s1/1") && has_dep(j, t, "logits/pivot/1") && has_dep(j, t, "vocab-map/s1"));
  t = task(j, "train/s2");
  assert_true(has_dep(j, t, "align/s2/0") && has_dep(j, t, "align/s2/1") && !has_dep(j, t, "align/s1/0"));
  assert_string_equal(fc_kv_get(t->params, t->nparams, "lambda"), "0.8");
  assert_string_equal(t->outputs[0], "/srv/store/demo/targets/s2");
  t = task(j, "merge");
  assert_true(has_dep(j, t, "train/s1") && has_dep(j, t, "train/s2"));
  assert_string_equal(fc_kv_get(t->params, t->nparams, "select_topk"), "0.1");
  assert_string_equal(fc_kv_get(t->params, t->nparams, "method"), "sce");
  t = task(j, "eval/merged");
  assert_true(has_dep(j, t, "merge"));
  assert_int_equal(t->ndeps, 1);
  assert_string_equal(t->inputs[0], "/d/eval.jsonl");
  assert_string_equal(t->inputs[1], "/srv/store/demo/merged");
  assert_string_equal(t->outputs[0], "/srv/store/demo/eval/merged.json");
  t = task(j, "eval/pivot");
  assert_int_equal(t->ndeps, 0);
  assert_string_equal(t->inputs[1], "/m/pivot");
  t = task(j, "eval/target-s2");
  assert_true(has_dep(j, t, "train/s2") && t->ndeps == 1);
  assert_int_equal(fc_job_find_task(j, "train/sft"), -1);
  fc_job_destroy(&j);
  assert_null(j);
}

static void test_baselines(void **state) {
  (void)state;
  fc_job_t *j = parse_ok("name: d\nstore: /s\ndataset: /d\neval: /e\nlambda: 0.7\n"
                         "models:\n  - {name: p, path: /p, role: pivot}\n  - {name: a, path: /a}\n  - {name: b, path: /b}\n"
                         "merge: {method: sce}\n"
                         "baselines: {sft: true, merges: [task_arithmetic, ties, dare_ties]}\n");
  /* 3 logits, 2 vocab-map, 2 align, 2 train, sft, merge, 3 baseline merges, 3+2+1+1+3 evals */
  assert_int_equal(j->ntasks, 3 + 2 + 2 + 2 + 1 + 1 + 3 + 10);
  for (size_t i = 0; i < j->ntasks; i++)
    for (size_t d = 0; d < j->tasks[i].ndeps; d++) assert_true(j->tasks[i].deps[d] < i);
  const fc_job_task_t *t = task(j, "train/sft");
  assert_string_equal(t->kind, "train");
  assert_null(fc_kv_get(t->params, t->nparams, "lambda")); /* no targets: CE alone, in the trainer */
  assert_int_equal(t->ndeps, 0); /* plain SFT needs no fused targets: it starts at once */
  assert_int_equal(t->ninputs, 2);
  assert_string_equal(t->inputs[0], "/p");
  assert_string_equal(t->outputs[0], "/s/d/targets/sft");
  t = task(j, "merge/dare_ties");
  assert_string_equal(fc_kv_get(t->params, t->nparams, "method"), "dare_ties");
  assert_true(has_dep(j, t, "train/a") && has_dep(j, t, "train/b") && t->ndeps == 2);
  assert_string_equal(t->inputs[0], "/p");
  assert_string_equal(t->outputs[0], "/s/d/merged-dare_ties");
  static const char *const evals[] = {"p", "a", "b", "target-a", "target-b", "sft", "merged",
                                      "merged-task_arithmetic", "merged-ties", "merged-dare_ties"};
  for (size_t e = 0; e < 10; e++) {
    char name[64], out[96];
    snprintf(name, sizeof name, "eval/%s", evals[e]);
    snprintf(out, sizeof out, "/s/d/eval/%s.json", evals[e]);
    t = task(j, name);
    assert_string_equal(t->kind, "eval");
    assert_string_equal(t->inputs[0], "/e");
    assert_string_equal(t->outputs[0], out);
  }
  assert_true(has_dep(j, task(j, "eval/sft"), "train/sft"));
  assert_true(has_dep(j, task(j, "eval/merged-ties"), "merge/ties"));
  fc_job_destroy(&j);
  const char *base = "name: d\nstore: /s\ndataset: /d\neval: /e\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: a, path: /a}\n";
  char buf[1024];
  snprintf(buf, sizeof buf, "%sbaselines: {merges: [average]}\n", base);
  expect_err(buf, "a baseline merge method is 'average'");
  snprintf(buf, sizeof buf, "%sbaselines: {merges: [ties, ties]}\n", base);
  expect_err(buf, "listed twice");
  /* the job's sce is FuseChat's release; mergekit's SCE has its own name, the old alias is gone */
  snprintf(buf, sizeof buf, "%sbaselines: {merges: [sce-weights]}\n", base);
  expect_err(buf, "a baseline merge method is 'sce-weights', it must be one of sce|sce-mergekit|");
  /* the fusion function and vocabulary map reach the align and vocab-map tasks */
  snprintf(buf, sizeof buf, "%sfuse: avgce\nvocab_map: exact\n", base);
  j = parse_ok(buf);
  assert_string_equal(fc_kv_get(task(j, "align/a/0")->params, task(j, "align/a/0")->nparams, "fuse"), "avgce");
  assert_string_equal(fc_kv_get(task(j, "vocab-map/a")->params, task(j, "vocab-map/a")->nparams, "method"), "exact");
  fc_job_destroy(&j);
  snprintf(buf, sizeof buf, "%sfuse: maxce\n", base);
  expect_err(buf, "'fuse' is 'maxce', it must be one of mince|avgce|source");
  snprintf(buf, sizeof buf, "%svocab_map: fuzzy\n", base);
  expect_err(buf, "'vocab_map' is 'fuzzy', it must be one of stats|mined|exact");
  snprintf(buf, sizeof buf, "%smerge: {method: sce, parameters: {select_topk: 0.1}}\nbaselines: {merges: [sce-mergekit]}\n", base);
  j = parse_ok(buf);
  assert_string_equal(fc_kv_get(task(j, "merge/sce-mergekit")->params, task(j, "merge/sce-mergekit")->nparams,
                                "select_topk"), "0.1");
  assert_string_equal(fc_kv_get(task(j, "merge/sce-mergekit")->params, task(j, "merge/sce-mergekit")->nparams,
                                "method"), "sce-mergekit");
  assert_string_equal(task(j, "eval/merged-sce-mergekit")->outputs[0], "/s/d/eval/merged-sce-mergekit.json");
  fc_job_destroy(&j);
  snprintf(buf, sizeof buf, "%sbaselines: {sft: maybe}\n", base);
  expect_err(buf, "'baselines.sft' must be true or false, not 'maybe'");
  snprintf(buf, sizeof buf, "%sbaselines: {dpo: true}\n", base);
  expect_err(buf, "unknown key 'dpo' in 'baselines'");
  expect_err("name: d\nstore: /s\ndataset: /d\neval: /e\nmodels:\n  - {name: p, path: /p, role: pivot}\n"
             "  - {name: merged, path: /a}\n", "two tasks would be called 'eval/merged'");
}

/* The example job of deploy/example-cluster parses (the operator guide points at it). */
static void test_deploy_example(void **state) {
  (void)state;
  char path[1024];
  snprintf(path, sizeof path, "%s/../../deploy/example-cluster/job.yaml", getenv("FC_FIXTURES"));
  char *text;
  size_t len;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(path, &text, &len, &err), 0);
  fc_job_t *j = parse_ok(text);
  free(text);
  assert_int_equal(j->opts.shards, 8);
  assert_int_equal(j->train.checkpoint_every, 200);
  assert_true(fc_job_find_task(j, "eval/merged-dare_ties") >= 0);
  assert_string_equal(fc_kv_get(j->tasks[fc_job_find_task(j, "train/s1")].params,
                                j->tasks[fc_job_find_task(j, "train/s1")].nparams, "checkpoint_every"), "200");
  fc_job_destroy(&j);
}

static void test_explicit_tasks(void **state) {
  (void)state;
  fc_job_t *j = parse_ok("name: t\nstore: /tmp/s\nmax_attempts: 5\ntasks:\n"
                         "  - {name: a, kind: checksum, inputs: [/etc/hostname], outputs: [a.out]}\n"
                         "  - {name: b, kind: sleep, cap: slow, params: {ms: 10}, deps: [a], outputs: [x/b.out]}\n");
  assert_int_equal(j->ntasks, 2);
  assert_int_equal(j->max_attempts, 5);
  assert_string_equal(j->tasks[1].cap, "slow");
  assert_string_equal(j->tasks[0].cap, "checksum");
  assert_string_equal(j->tasks[1].outputs[0], "/tmp/s/t/x/b.out");
  assert_int_equal(j->tasks[1].ndeps, 1);
  assert_int_equal(j->tasks[1].deps[0], 0);
  assert_string_equal(fc_kv_get(j->tasks[1].params, j->tasks[1].nparams, "ms"), "10");
  fc_job_destroy(&j);
}

/* training.ranks reaches each train task when given (the daemon launches that many ranks) and
 * is absent otherwise (the daemon's default: one process). */
static void test_ranks_param(void **state) {
  (void)state;
  const char *base = "name: d\nstore: /s\ndataset: /d\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: s, path: /s}\n";
  char buf[1024];
  snprintf(buf, sizeof buf, "%straining: {batch_size: 4, ranks: 2}\n", base);
  fc_job_t *j = parse_ok(buf);
  assert_int_equal(j->train.ranks, 2);
  const fc_job_task_t *t = task(j, "train/s");
  assert_non_null(fc_kv_get(t->params, t->nparams, "ranks"));
  assert_string_equal(fc_kv_get(t->params, t->nparams, "ranks"), "2");
  fc_job_destroy(&j);
  j = parse_ok(base);
  assert_int_equal(j->train.ranks, 1);
  t = task(j, "train/s");
  assert_null(fc_kv_get(t->params, t->nparams, "ranks"));
  fc_job_destroy(&j);
}

/* models[].logits: the source's logits tasks become logits-import tasks on the align daemon,
 * reading the shard's file; the pivot's stay logits tasks; the spec is checked at the door. */
static void test_imported_logits(void **state) {
  (void)state;
  fc_job_t *j = parse_ok("name: d\nstore: /s\ndataset: /d.jsonl\nshards: 2\ntop_k: 6\ntraining: {seq_len: 64}\n"
                         "models:\n  - {name: p, path: /p, role: pivot}\n  - {name: s, path: /m/s, logits: '/x/s.{shard}.jsonl'}\n");
  const fc_job_task_t *t = task(j, "logits/s/1");
  assert_string_equal(t->kind, "logits-import");
  assert_string_equal(t->cap, "align");
  assert_int_equal(t->ninputs, 3);
  assert_string_equal(t->inputs[0], "/m/s");
  assert_string_equal(t->inputs[1], "/d.jsonl");
  assert_string_equal(t->inputs[2], "/x/s.1.jsonl");
  assert_string_equal(t->outputs[0], "/s/d/logits/s.shard-0001.topk");
  assert_string_equal(fc_kv_get(t->params, t->nparams, "max_len"), "64");
  assert_string_equal(fc_kv_get(t->params, t->nparams, "pivot_path"), "/p");
  assert_null(fc_kv_get(t->params, t->nparams, "top_k")); /* the file has its own K */
  fc_logits_import_params_t ip; /* what the align daemon will parse */
  fc_err_t err = {0};
  assert_int_equal(fc_schema_parse("logits-import", t->params, t->nparams, &ip, &err), 0);
  assert_int_equal(ip.shard, 1);
  assert_int_equal(ip.shards, 2);
  assert_int_equal(ip.max_len, 64);
  t = task(j, "logits/p/0");
  assert_string_equal(t->kind, "logits");
  assert_string_equal(fc_kv_get(t->params, t->nparams, "top_k"), "6");
  assert_true(has_dep(j, task(j, "vocab-map/s"), "logits/s/0"));
  fc_job_destroy(&j);
  const char *base = "name: d\nstore: /s\ndataset: /d\n";
  char buf[512];
  snprintf(buf, sizeof buf, "%sshards: 2\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: s, path: /s, logits: /x.jsonl}\n", base);
  expect_err(buf, "logits file needs {shard}");
  snprintf(buf, sizeof buf, "%smodels:\n  - {name: p, path: /p, role: pivot, logits: /x.jsonl}\n  - {name: s, path: /s}\n", base);
  expect_err(buf, "'logits' is for sources");
}

static void test_errors_name_the_line(void **state) {
  (void)state;
  const char *base = "name: d\nstore: /s\ndataset: /d\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: s, path: /s}\n";
  char buf[1024];
  snprintf(buf, sizeof buf, "%sbogus: 1\n", base);
  expect_err(buf, "t.yaml:7:1: unknown key 'bogus'");
  snprintf(buf, sizeof buf, "%stop_k: 0\n", base);
  expect_err(buf, "t.yaml:7:8: 'top_k' is 0");
  snprintf(buf, sizeof buf, "%slambda: lots\n", base);
  expect_err(buf, "'lambda' must be a number");
  snprintf(buf, sizeof buf, "%smerge: {method: average}\n", base);
  expect_err(buf, "'merge.method' is 'average', it must be one of sce|");
  /* each stage parameter is checked against its table at the first door */
  snprintf(buf, sizeof buf, "%straining: {seq_len: 1}\n", base);
  expect_err(buf, "t.yaml:7:21: 'training.seq_len' is 1, it must be in [2, 1048576]");
  snprintf(buf, sizeof buf, "%stop_k: 1000\n", base);
  expect_err(buf, "'top_k' is 1000, it must be in [1, 256]");
  snprintf(buf, sizeof buf, "%slambda: 1.5\n", base);
  expect_err(buf, "'lambda' is 1.5, it must be in [0, 1]");
  snprintf(buf, sizeof buf, "%straining: {batch_size: 8x}\n", base);
  expect_err(buf, "'training.batch_size' must be an integer in [1, 65536], not '8x'");
  /* training.ranks: its own range from the table, and the bound against batch_size */
  snprintf(buf, sizeof buf, "%straining: {ranks: 0}\n", base);
  expect_err(buf, "'training.ranks' is 0, it must be in [1, 4096]");
  snprintf(buf, sizeof buf, "%straining: {batch_size: 2, ranks: 3}\n", base);
  expect_err(buf, "t.yaml:7:34: training.ranks 3 exceeds training.batch_size 2");
  snprintf(buf, sizeof buf, "%straining: {lr: [1]}\n", base);
  expect_err(buf, "'training.lr' must be a plain value");
  snprintf(buf, sizeof buf, "%sbaselines: {merges: [ties, mean]}\n", base);
  expect_err(buf, "a baseline merge method is 'mean'");
  snprintf(buf, sizeof buf, "%smerge: {method: ties, parameters: {density: 2}}\n", base);
  expect_err(buf, "'merge.parameters.density' is 2, it must be in [0, 1]");
  /* explicit tasks of a known kind go through the same table */
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a, kind: logits, params: {top_k: 0}}\n",
             "t.yaml:4:37: logits parameter 'top_k' is 0, it must be in [1, 256]");
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a, kind: train, params: {momentum: 1}}\n",
             "unknown train parameter 'momentum'");
  snprintf(buf, sizeof buf, "%straining: {epochs: 1, lr: 1, momentum: 2}\n", base);
  expect_err(buf, "unknown key 'momentum' in 'training'");
  expect_err("name: d\nstore: /s\ndataset: /d\nmodels:\n  - {name: p, path: /p, role: pivot}\n", "at least one source");
  expect_err("name: d\nstore: /s\ndataset: /d\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: q, path: /q, role: pivot}\n", "exactly one model");
  expect_err("name: d\nstore: /s\ndataset: /d\nmodels:\n  - {name: p, path: /p, role: teacher}\n", "t.yaml:5:31: role must be");
  expect_err("name: d\nstore: /s\nmodels:\n  - {name: p, path: /p, role: pivot}\n  - {name: p, path: /q}\n", "listed twice");
  expect_err("name: d\nstore: /s\nmodels: [\n", "t.yaml:4:1: YAML error");
  expect_err("name: 'a b'\nstore: /s\ntasks: []\n", "job name");
  expect_err("store: /s\ntasks: []\n", "needs a 'name'");
  expect_err("name: x\nstore: /s\ntasks: []\n", "no tasks");
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a, kind: k, deps: [b]}\n  - {name: b, kind: k}\n", "t.yaml:4:30: task 'a' depends on 'b'");
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a, kind: k, deps: [a]}\n", "depends on 'a'");
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a, kind: k}\n  - {name: a, kind: k}\n", "defined twice");
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a, kind: k, outputs: [../../etc/passwd]}\n", "relative path inside");
  expect_err("name: x\nstore: /s\ntasks:\n  - {name: a}\n", "needs a 'kind'");
  expect_err("", "empty job spec");
  expect_err("- 1\n- 2\n", "must be a mapping");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pipeline_expansion),
      cmocka_unit_test(test_baselines),
      cmocka_unit_test(test_deploy_example),
      cmocka_unit_test(test_ranks_param),
      cmocka_unit_test(test_explicit_tasks),
      cmocka_unit_test(test_imported_logits),
      cmocka_unit_test(test_errors_name_the_line),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
