/* The training loop end to end on small models: three AdamW steps against PyTorch (gold CE and
 * fusion loss), bitwise resumption (stopped run and SIGINT), refusing to resume with other
 * settings, and learning a generated corpus from scratch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fc_config.h"
#include "fc_st.h"
#include "fc_train.h"
#include "fixture_json.h"

/* After three AdamW steps (lr 1e-2, eps 1e-6) the weights agree with PyTorch to this: the
 * forward/backward sums run in another order, and Adam's m/sqrt(v) amplifies the relative error
 * of small gradients up to about |g| / eps. */
#define WEIGHT_ATOL 2e-5
#define LOSS_RTOL 1e-5

static char g_fixtures[1024];

static const char *fx(const char *rel) {
  static char buf[4][2048];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", g_fixtures, rel);
  return buf[k];
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/fc_test_train_XXXXXX");
  assert_non_null(mkdtemp(d));
  return d;
}

static void rm_rf(const char *d) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  assert_int_equal(system(cmd), 0);
}

/* fused targets from train/train_targets.json, through the seam fc_data uses */
static json_t *g_targets;
static int json_fill(void *ctx, size_t line, const int32_t *tokens, size_t n, int32_t *ids, float *lp,
                     fc_err_t *err) {
  json_t *j = ctx;
  (void)tokens;
  int K = (int)json_integer_value(json_object_get(j, "K"));
  json_t *l = json_array_get(json_object_get(j, "lines"), line);
  json_t *ji = json_object_get(l, "ids"), *jl = json_object_get(l, "logprobs");
  if (!l || json_array_size(ji) != n * (size_t)K) return fc_err_set(err, FC_EMISMATCH, "line %zu: length", line);
  for (size_t i = 0; i < n * (size_t)K; i++) {
    ids[i] = (int32_t)json_integer_value(json_array_get(ji, i));
    lp[i] = (float)json_number_value(json_array_get(jl, i));
  }
  return 0;
}

static void base_opts(fc_train_opts_t *o, const char *out) {
  fc_train_opts_default(o);
  o->model_dir = fx("model/llama_gqa");
  o->data_path = fx("train/train_data.jsonl");
  o->out_dir = out;
  o->steps = 3;
  o->batch_size = 2;
  o->grad_accum = 2;
  o->seq_len = 10;
  o->lr = 1e-2;
  o->warmup = 1;
  o->weight_decay = 0.1;
  o->eps = 1e-6;
  o->clip = 1.0;
  o->quiet = 1;
}

static double read_last_loss(const char *out, int step) {
  char path[1200], line[512];
  snprintf(path, sizeof path, "%s/loss.csv", out);
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  double loss = NAN;
  while (fgets(line, sizeof line, fp)) {
    int s;
    double l;
    if (sscanf(line, "%d,%lf", &s, &l) == 2 && s == step) loss = l;
  }
  fclose(fp);
  return loss;
}

static int count_steps(void *ctx, double fraction, const char *msg) {
  long *seen = ctx;
  long step, total;
  assert_int_equal(sscanf(msg, "step %ld/%ld", &step, &total), 2);
  assert_int_equal(step, *seen + 1); /* in order, once each */
  assert_int_equal(total, 3);
  assert_true(fabs(fraction - step / 3.0) < 1e-12);
  *seen = step;
  return 0;
}

static void compare_with_torch(const char *name, int fused) {
  char *out = tmpdir();
  fc_train_opts_t o;
  base_opts(&o, out);
  fc_targets_source_t tg = {g_targets, 4, json_fill};
  if (fused) {
    o.targets = &tg;
    o.lambda = 0.7;
  }
  long seen = 0;
  o.progress = count_steps;
  o.progress_ctx = &seen;
  o.no_signal_handlers = 1;
  fc_err_t err = {0};
  fc_train_result_t res;
  int rc = fc_train_run(&o, &res, &err);
  if (rc) fail_msg("%s: %s", name, err.msg);
  assert_int_equal(res.steps_done, 3);
  assert_int_equal(seen, 3);

  char ref[256];
  snprintf(ref, sizeof ref, "train/%s.ref.safetensors", name);
  fc_st_t *want, *got;
  assert_int_equal(fc_st_open(&want, fx(ref), &err), 0);
  char model[1200];
  snprintf(model, sizeof model, "%s/model.safetensors", out);
  assert_int_equal(fc_st_open(&got, model, &err), 0);
  assert_int_equal(fc_st_count(got), fc_st_count(want));
  double maxd = 0, maxmove = 0;
  float *init_owned = NULL;
  fc_st_t *init;
  assert_int_equal(fc_st_open(&init, fx("model/llama_gqa/model.safetensors"), &err), 0);
  for (size_t i = 0; i < fc_st_count(want); i++) {
    const fc_st_tensor_t *w = fc_st_at(want, i), *g = fc_st_find(got, w->name), *s = fc_st_find(init, w->name);
    assert_non_null(g);
    assert_int_equal(g->numel, w->numel);
    const float *wf = w->data, *gf = g->data, *sf = fc_st_f32(s, &init_owned, &err);
    for (int64_t k = 0; k < w->numel; k++) {
      double d = fabs((double)gf[k] - wf[k]);
      if (!(d <= maxd)) maxd = d;
      double mv = fabs((double)wf[k] - sf[k]);
      if (mv > maxmove) maxmove = mv;
    }
    free(init_owned);
    init_owned = NULL;
  }
  /* the steps moved weights by far more than the tolerance (else the test could not fail) */
  assert_true(maxmove > 100 * WEIGHT_ATOL);
  if (!(maxd <= WEIGHT_ATOL)) fail_msg("%s: max |weight - torch| = %g", name, maxd);
  print_message("%s: max |weight - torch| %.3g (weights moved up to %.3g)\n", name, maxd, maxmove);

  /* per-step losses as logged */
  json_t *losses = json_loads(fc_st_meta(want, "losses"), 0, NULL);
  for (int s = 1; s <= 3; s++) {
    double wl = json_number_value(json_array_get(losses, s - 1)), gl = read_last_loss(out, s);
    if (!(fabs(gl - wl) <= LOSS_RTOL * wl + 1e-6)) fail_msg("%s step %d: loss %.7f, torch %.7f", name, s, gl, wl);
  }
  json_decref(losses);
  fc_st_close(&init);
  fc_st_close(&want);
  fc_st_close(&got);
  rm_rf(out);
  free(out);
}

static void test_adamw3_ce(void **state) {
  (void)state;
  compare_with_torch("adamw3_ce", 0);
}

static void test_adamw3_fusion(void **state) {
  (void)state;
  compare_with_torch("adamw3_fusion", 1);
}

static void assert_files_equal(const char *a, const char *b) {
  char *x, *y;
  size_t nx, ny;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(a, &x, &nx, &err), 0);
  assert_int_equal(fc_read_file(b, &y, &ny, &err), 0);
  assert_int_equal(nx, ny);
  if (memcmp(x, y, nx) != 0) fail_msg("%s and %s differ", a, b);
  free(x);
  free(y);
}

static int cancel_at_3(void *ctx, double fraction, const char *msg) {
  (void)ctx, (void)msg;
  return fraction >= 0.5; /* after step 3 of 6 */
}

static void resume_opts(fc_train_opts_t *o, const char *out, const fc_targets_source_t *tg) {
  base_opts(o, out);
  o->steps = 6;
  o->shuffle = 1;
  o->targets = tg;
  o->lambda = 0.8;
  o->checkpoint_every = 2;
}

static void test_resume_bitwise(void **state) {
  (void)state;
  char *a = tmpdir(), *b = tmpdir();
  fc_targets_source_t tg = {g_targets, 4, json_fill};
  fc_train_opts_t o;
  fc_err_t err = {0};
  resume_opts(&o, a, &tg);
  o.keep_checkpoints = 2;
  assert_int_equal(fc_train_run(&o, NULL, &err), 0);
  resume_opts(&o, b, &tg);
  o.progress = cancel_at_3; /* a daemon cancelling the work: checkpoint, FC_ECANCEL */
  fc_train_result_t res;
  assert_int_equal(fc_train_run(&o, &res, &err), FC_ECANCEL);
  assert_true(res.interrupted);
  assert_non_null(strstr(err.msg, "checkpoint-3"));
  long step;
  char *ck = fc_train_find_checkpoint(b, &step);
  assert_non_null(ck);
  assert_int_equal(step, 3);
  free(ck);
  /* a resume with other settings would not be the same computation: refused */
  resume_opts(&o, b, &tg);
  o.resume = 1;
  o.batch_size = 1;
  assert_int_equal(fc_train_run(&o, NULL, &err), FC_EMISMATCH);
  resume_opts(&o, b, &tg);
  o.resume = 1;
  o.lambda = 0.5;
  assert_int_equal(fc_train_run(&o, NULL, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "lambda 0.8"));
  resume_opts(&o, b, &tg);
  o.resume = 1;
  assert_int_equal(fc_train_run(&o, &res, &err), 0);
  assert_int_equal(res.start_step, 3);
  /* checkpoints every 2 steps, pruned to the newest 2 in run a */
  long step6;
  char *ck6 = fc_train_find_checkpoint(a, &step6);
  assert_int_equal(step6, 6);
  free(ck6);
  char pa[1200], pb[1200];
  snprintf(pa, sizeof pa, "%s/checkpoint-2", a);
  assert_false(fc_path_exists(pa));
  snprintf(pa, sizeof pa, "%s/checkpoint-4", a);
  assert_true(fc_path_exists(pa));
  snprintf(pb, sizeof pb, "%s/checkpoint-2", b); /* run b kept all */
  assert_true(fc_path_exists(pb));
  const char *files[] = {"model.safetensors", "checkpoint-6/model.safetensors", "checkpoint-6/trainer_state.bin",
                         "loss.csv"};
  for (int i = 0; i < 4; i++) {
    snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
    snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
    assert_files_equal(pa, pb);
  }
  rm_rf(a), rm_rf(b);
  free(a), free(b);
}

/* SIGINT in the middle of a run: the child checkpoints and stops; resuming gives the weights of
 * an uninterrupted run. */
static void test_sigint_resume(void **state) {
  (void)state;
  char *a = tmpdir(), *b = tmpdir();
  fc_train_opts_t o;
  fc_err_t err = {0};
  base_opts(&o, a);
  o.steps = 400;
  o.lr = 1e-3;
  assert_int_equal(fc_train_run(&o, NULL, &err), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    base_opts(&o, b);
    o.steps = 400;
    o.lr = 1e-3;
    int rc = fc_train_run(&o, NULL, &err);
    _exit(rc == FC_ECANCEL ? 3 : rc == 0 ? 0 : 4);
  }
  char csv[1200];
  snprintf(csv, sizeof csv, "%s/loss.csv", b);
  for (int i = 0; i < 20000; i++) { /* wait until a few steps are logged */
    usleep(1000);
    FILE *fp = fopen(csv, "r");
    int lines = 0;
    char buf[256];
    while (fp && fgets(buf, sizeof buf, fp)) lines++;
    if (fp) fclose(fp);
    if (lines >= 4) break;
  }
  kill(pid, SIGINT);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  if (WEXITSTATUS(st) == 0) {
    print_message("the run finished before SIGINT arrived; nothing to resume\n");
  } else {
    assert_int_equal(WEXITSTATUS(st), 3);
    long step;
    char *ck = fc_train_find_checkpoint(b, &step);
    assert_non_null(ck);
    assert_true(step >= 3 && step < 400);
    free(ck);
    base_opts(&o, b);
    o.steps = 400;
    o.lr = 1e-3;
    o.resume = 1;
    assert_int_equal(fc_train_run(&o, NULL, &err), 0);
  }
  char pa[1200], pb[1200];
  snprintf(pa, sizeof pa, "%s/model.safetensors", a);
  snprintf(pb, sizeof pb, "%s/model.safetensors", b);
  assert_files_equal(pa, pb);
  rm_rf(a), rm_rf(b);
  free(a), free(b);
}

/* A model trained from scratch on a generated corpus: each line is a rule marker (0: count by
 * 1, 1: count by 5, modulo 62 over tokens 2..63), a random start, then the sequence. Only the
 * start is unpredictable (ln 62 / 23 = 0.18 nats per token on average); learning the two rules
 * needs attention back to the marker. Uniform guessing is ln 64 = 4.16. */
#define LEARN_STEPS 150
#define LEARN_TARGET 0.3   /* mean loss of the last 10 steps */
#define LEARN_SECONDS 60.0

static void test_learns_from_scratch(void **state) {
  (void)state;
  char *dir = tmpdir();
  char cfgp[1300], datap[1200], out[1200];
  snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
  snprintf(datap, sizeof datap, "%s/data.jsonl", dir);
  snprintf(out, sizeof out, "%s/out", dir);
  fc_config_t cfg;
  fc_config_default(&cfg, "llama");
  cfg.hidden_size = 64, cfg.intermediate_size = 128, cfg.num_layers = 2, cfg.num_heads = 4;
  cfg.num_kv_heads = 2, cfg.head_dim = 16, cfg.vocab_size = 64, cfg.max_position_embeddings = 64;
  fc_err_t err = {0};
  assert_int_equal(fc_config_save(&cfg, cfgp, &err), 0);
  FILE *fp = fopen(datap, "w");
  fc_rng_t rng;
  fc_rng_seed(&rng, 99);
  for (int l = 0; l < 256; l++) {
    int rule = (int)(fc_rng_u64(&rng) % 2), v = 2 + (int)(fc_rng_u64(&rng) % 62);
    fprintf(fp, "{\"input_ids\":[%d", rule);
    for (int t = 0; t < 23; t++, v = 2 + (v - 2 + (rule ? 5 : 1)) % 62) fprintf(fp, ",%d", v);
    fprintf(fp, "]}\n");
  }
  fclose(fp);
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  o.config_path = cfgp;
  o.tokenizer_path = datap; /* any file: it is only copied */
  o.data_path = datap;
  o.out_dir = out;
  o.steps = LEARN_STEPS;
  o.batch_size = 8;
  o.seq_len = 24;
  o.lr = 1e-2;
  o.warmup = 10;
  o.shuffle = 1;
  o.quiet = 1;
  double t0 = fc_now();
  fc_train_result_t res;
  int rc = fc_train_run(&o, &res, &err);
  if (rc) fail_msg("%s", err.msg);
  double el = fc_now() - t0;
  double first = read_last_loss(out, 1), tail = 0;
  for (int s = LEARN_STEPS - 9; s <= LEARN_STEPS; s++) tail += read_last_loss(out, s) / 10;
  print_message("from scratch: loss %.3f -> %.3f (last 10 steps) in %d steps, %.1f s\n", first, tail,
                LEARN_STEPS, el);
  assert_true(first > 3.5);
  assert_true(tail < LEARN_TARGET);
  assert_true(el < LEARN_SECONDS);
  /* the output is a loadable model directory with the tokenizer beside it */
  snprintf(cfgp, sizeof cfgp, "%s/tokenizer.json", out);
  assert_true(fc_path_exists(cfgp));
  fc_config_t back;
  assert_int_equal(fc_config_load(&back, out, &err), 0);
  assert_int_equal(back.hidden_size, 64);
  rm_rf(dir);
  free(dir);
}

static void test_bad_inputs(void **state) {
  (void)state;
  char *dir = tmpdir();
  char datap[1200];
  snprintf(datap, sizeof datap, "%s/bad.jsonl", dir);
  FILE *fp = fopen(datap, "w");
  fputs("{\"input_ids\":[1,2,3]}\n{\"input_ids\":[1,2,999]}\n", fp);
  fclose(fp);
  fc_train_opts_t o;
  base_opts(&o, dir);
  o.data_path = datap;
  fc_err_t err = {0};
  assert_int_equal(fc_train_run(&o, NULL, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, ":2:"));
  base_opts(&o, dir);
  o.model_dir = "/nonexistent/model";
  assert_true(fc_train_run(&o, NULL, &err) < 0);
  rm_rf(dir);
  free(dir);
}

int main(void) {
  const char *f = getenv("FC_FIXTURES");
  snprintf(g_fixtures, sizeof g_fixtures, "%s", f ? f : "tests/fixtures");
  g_targets = fixture_json("train/train_targets.json");
  if (!g_targets) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_adamw3_ce),      cmocka_unit_test(test_adamw3_fusion),
      cmocka_unit_test(test_resume_bitwise), cmocka_unit_test(test_sigint_resume),
      cmocka_unit_test(test_learns_from_scratch), cmocka_unit_test(test_bad_inputs),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  json_decref(g_targets);
  return rc;
}
