/* Training memory paths against the plain ones they replace, on the PyTorch-checked fixture
 * models (tests/fixtures/model; the plain paths are checked against PyTorch in test_model,
 * test_loss and test_train):
 * - fc_model_loss_backward (output layer chunked over positions, logits turned into their
 *   gradient in place) against fc_model_forward + fc_loss_forward_backward + fc_model_backward;
 * - activation checkpointing: the same gradients bit for bit (backward recomputes each layer
 *   with the same code on the same inputs);
 * - bf16 AdamW moments: 200 steps on a small model stay within 1% of the f32 optimizer's loss,
 *   and their state file round-trips and refuses the other dtype;
 * - the optimizer step fused into backward (fc_model_set_grad_ready, fc_adamw_step_range,
 *   fc_model_release_grads): the unclipped whole step bit for bit, gradients released to zero,
 *   and 200 steps (unclipped, bf16 moments, checkpointing) within 1% of the f32 path's loss;
 *   and a non-finite loss refused before anything is updated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_loss.h"
#include "fc_model.h"
#include "fc_optim.h"

static const char *variants[] = {"llama_gqa",   "llama_mha_tied_bf16", "qwen2_tied", "llama_bias_llama3_f16",
                                  "mistral_swa", "qwen2_swa"};
#define NVAR (sizeof variants / sizeof variants[0])

static fc_model_t *load(const char *name) {
  const char *root = getenv("FC_FIXTURES");
  assert_non_null(root);
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/model/%s", root, name);
  fc_model_t *m;
  fc_err_t err = {0};
  int rc = fc_model_load(&m, dir, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  return m;
}

/* A batch of B rows of T random ids, targets the next id (-1 at row ends and on a few
 * positions), and K fused entries per position (some empty). */
typedef struct batch {
  int B, T, K;
  int32_t *ids, *targets, *fids;
  float *flp;
} batch_t;

static batch_t make_batch(int B, int T, int K, int V, uint64_t seed) {
  batch_t b = {B, T, K, malloc((size_t)B * T * 4), malloc((size_t)B * T * 4), malloc((size_t)B * T * K * 4 + 4),
               malloc((size_t)B * T * K * 4 + 4)};
  fc_rng_t r;
  fc_rng_seed(&r, seed);
  for (int i = 0; i < B * T; i++) b.ids[i] = (int32_t)(fc_rng_u64(&r) % (uint64_t)V);
  for (int i = 0; i < B * T; i++) {
    int last = i % T == T - 1;
    b.targets[i] = last || fc_rng_u64(&r) % 7 == 0 ? -1 : b.ids[i + 1];
    for (int k = 0; k < K; k++) {
      b.fids[(size_t)i * K + k] = fc_rng_u64(&r) % 5 == 0 ? -1 : (int32_t)(fc_rng_u64(&r) % (uint64_t)V);
      b.flp[(size_t)i * K + k] = -3.0f * (float)fc_rng_uniform(&r);
    }
  }
  return b;
}

static void free_batch(batch_t *b) { free(b->ids), free(b->targets), free(b->fids), free(b->flp); }

/* Per tensor, the largest difference against the tensor's largest magnitude. */
static double worst_rel(const fc_model_t *m, const float *a, const float *b) {
  double worst = 0;
  for (size_t t = 0; t < fc_model_num_tensors(m); t++) {
    const fc_param_info_t *pi = fc_model_tensor(m, t);
    double mx = 0, d = 0;
    for (size_t i = pi->offset; i < pi->offset + pi->numel; i++) {
      mx = fmax(mx, fabs(b[i]));
      d = fmax(d, fabs((double)a[i] - b[i]));
    }
    if (mx > 0) worst = fmax(worst, d / mx);
  }
  return worst;
}

/* Chunks of 5 rows (so chunks straddle rows) with fused targets: loss, CE and fusion terms
 * within 1e-6 relative and every gradient tensor within 1e-5 of its largest magnitude (the head's
 * products are summed in a different blocking, nothing else differs). */
static void test_loss_backward_chunked(void **state) {
  (void)state;
  setenv("FUSECHAT_HEAD_ROWS", "5", 1);
  for (size_t v = 0; v < NVAR; v++) {
    fc_model_t *m = load(variants[v]);
    int V = fc_model_config(m)->vocab_size, B = 3, T = 9, K = 4;
    batch_t b = make_batch(B, T, K, V, 17 + v);
    fc_fused_targets_t fused = {K, b.fids, b.flp};
    double norm = (double)fc_loss_count(b.targets, (size_t)B * T);
    fc_err_t err = {0};
    /* the plain path */
    const float *logits = fc_model_forward(m, b.ids, B, T, 1, &err);
    assert_non_null(logits);
    float *dl = malloc((size_t)B * T * V * sizeof *dl);
    fc_loss_stats_t st1, st2;
    double l1 = fc_loss_forward_backward(dl, &st1, logits, b.targets, &fused, 0.7f, B, T, V, norm);
    fc_model_zero_grad(m);
    assert_int_equal(fc_model_backward(m, dl, &err), 0);
    size_t np = fc_model_num_params(m);
    float *g1 = malloc(np * sizeof *g1);
    memcpy(g1, fc_model_grads(m), np * sizeof *g1);
    /* the chunked one */
    double l2 = 0;
    fc_model_zero_grad(m);
    assert_int_equal(fc_model_loss_backward(m, b.ids, B, T, b.targets, &fused, 0.7f, norm, &st2, &l2, &err), 0);
    double w = worst_rel(m, fc_model_grads(m), g1);
    printf("%-24s loss %.6f / %.6f, gradients worst relative diff %.2e\n", variants[v], l1, l2, w);
    assert_true(fabs(l1 - l2) <= 1e-6 * fabs(l1));
    assert_true(fabs(st1.ce - st2.ce) <= 1e-6 * fabs(st1.ce));
    assert_true(fabs(st1.fusion - st2.fusion) <= 1e-6 * fabs(st1.fusion));
    assert_int_equal(st1.counted, st2.counted);
    assert_true(w <= 1e-5);
    free(g1), free(dl);
    free_batch(&b);
    fc_model_destroy(&m);
  }
  unsetenv("FUSECHAT_HEAD_ROWS");
}

/* Checkpointed backward = plain backward, bit for bit, across sliding windows, biases, ties. */
static void test_checkpointing_same_gradients(void **state) {
  (void)state;
  for (size_t v = 0; v < NVAR; v++) {
    fc_model_t *m = load(variants[v]);
    int V = fc_model_config(m)->vocab_size, B = 2, T = 11;
    batch_t b = make_batch(B, T, 1, V, 5 + v);
    double norm = (double)fc_loss_count(b.targets, (size_t)B * T), l1, l2;
    fc_err_t err = {0};
    fc_model_zero_grad(m);
    assert_int_equal(fc_model_loss_backward(m, b.ids, B, T, b.targets, NULL, 1.0f, norm, NULL, &l1, &err), 0);
    size_t np = fc_model_num_params(m);
    float *g1 = malloc(np * sizeof *g1);
    memcpy(g1, fc_model_grads(m), np * sizeof *g1);
    fc_model_set_checkpointing(m, 1);
    fc_model_zero_grad(m);
    assert_int_equal(fc_model_loss_backward(m, b.ids, B, T, b.targets, NULL, 1.0f, norm, NULL, &l2, &err), 0);
    assert_true(l1 == l2);
    assert_memory_equal(fc_model_grads(m), g1, np * sizeof *g1);
    /* and the plain backward through fc_model_forward works checkpointed too */
    const float *lg = fc_model_forward(m, b.ids, B, T, 1, &err);
    assert_non_null(lg);
    float *dl = malloc((size_t)B * T * V * sizeof *dl);
    fc_loss_forward_backward(dl, NULL, lg, b.targets, NULL, 1.0f, B, T, V, norm);
    fc_model_zero_grad(m);
    assert_int_equal(fc_model_backward(m, dl, &err), 0);
    assert_true(worst_rel(m, fc_model_grads(m), g1) <= 1e-5);
    free(dl), free(g1);
    free_batch(&b);
    fc_model_destroy(&m);
  }
}

/* The optimizer fused into backward: each range stepped and its gradients released as soon as
 * they are final. */
typedef struct fused_ctx {
  fc_model_t *m;
  fc_adamw_t *o;
  size_t covered;
} fused_ctx_t;

static void fused_ready(void *ctx, size_t lo, size_t hi) {
  fused_ctx_t *f = ctx;
  f->covered += hi - lo;
  fc_adamw_step_range(f->o, fc_model_params(f->m), fc_model_grads(f->m), lo, hi);
  fc_model_release_grads(f->m, lo, hi);
}

/* Mean loss of steps 191..200 of 200 AdamW steps (lr 3e-3, clip 1, beta2 0.999) from the same
 * initial weights, a fresh batch every step from a noisy chain (the next token is the current
 * one + 1 half of the time, else random), so the loss settles near the chain's entropy instead
 * of memorised zero and 1% of it is a real margin. fused: fc_fused_step_run (clipped by the
 * previous step's norm). */
static double train_200(const char *name, fc_dtype_t odt, int ckpt, int fused, double *first) {
  fc_model_t *m = load(name);
  fc_model_set_checkpointing(m, ckpt);
  int V = fc_model_config(m)->vocab_size, B = 4, T = 16;
  size_t np = fc_model_num_params(m), nt = fc_model_num_tensors(m);
  const fc_param_info_t *tens[64];
  assert_true(nt <= 64);
  for (size_t i = 0; i < nt; i++) tens[i] = fc_model_tensor(m, i);
  fc_adamw_t *o = fc_adamw_new_dtype(np, tens, nt, 0.9f, 0.999f, 1e-8f, 0.01f, odt);
  double tail = 0;
  fc_err_t err = {0};
  for (int s = 0; s < 200; s++) {
    batch_t x = make_batch(B, T, 1, V, 1000 + (uint64_t)s);
    fc_rng_t r;
    fc_rng_seed(&r, 5000 + (uint64_t)s);
    for (int i = 0; i < B * T; i++)
      if (i % T && fc_rng_u64(&r) % 2) x.ids[i] = (x.ids[i - 1] + 1) % V;
    for (int i = 0; i < B * T; i++) x.targets[i] = i % T == T - 1 ? -1 : x.ids[i + 1];
    double loss, norm = (double)fc_loss_count(x.targets, (size_t)B * T);
    static fc_fused_step_t fs;
    if (s == 0 && fused) fc_fused_step_init(&fs, m, o, 1.0);
    if (fused) {
      assert_int_equal(fc_fused_step_run(&fs, 3e-3f, x.ids, B, T, x.targets, NULL, 1.0f, norm, NULL, &loss, &err), 0);
    } else {
      fc_model_zero_grad(m);
      assert_int_equal(fc_model_loss_backward(m, x.ids, B, T, x.targets, NULL, 1.0f, norm, NULL, &loss, &err), 0);
      fc_clip_grad_norm(fc_model_grads(m), np, 1.0);
      fc_adamw_step(o, fc_model_params(m), fc_model_grads(m), 3e-3f);
    }
    if (s == 0) *first = loss;
    if (s >= 190) tail += loss / 10;
    free_batch(&x);
  }
  fc_adamw_destroy(&o);
  fc_model_destroy(&m);
  return tail;
}

static void test_reduced_memory_training_loss(void **state) {
  (void)state;
  const char *models[] = {"llama_gqa", "qwen2_tied"};
  for (int i = 0; i < 2; i++) {
    double f0, f1, f2;
    double f3;
    double full = train_200(models[i], FC_DT_F32, 0, 0, &f0);
    double bf = train_200(models[i], FC_DT_BF16, 0, 0, &f1);
    double both = train_200(models[i], FC_DT_BF16, 1, 0, &f2);
    double all = train_200(models[i], FC_DT_BF16, 1, 1, &f3);
    /* the head's gradient over 16-column panels and 5-position chunks: the same steps but for
     * the order the gradient norm's squares are summed in (the previous step's clips this one) */
    setenv("FUSECHAT_HEAD_COLS", "16", 1), setenv("FUSECHAT_HEAD_ROWS", "5", 1);
    double panels = train_200(models[i], FC_DT_BF16, 1, 1, &f3);
    unsetenv("FUSECHAT_HEAD_COLS"), unsetenv("FUSECHAT_HEAD_ROWS");
    printf("%-12s loss %.4f -> f32 %.4f, bf16 moments %.4f (%+.3f%%), + checkpointing %.4f (%+.3f%%), + fused step "
           "%.4f (%+.3f%%), head in panels %.6f (%+.2e)\n",
           models[i], f0, full, bf, 100 * (bf - full) / full, both, 100 * (both - full) / full, all,
           100 * (all - full) / full, panels, (panels - all) / all);
    assert_true(full < 0.8 * f0); /* it did learn: the comparison means something */
    assert_true(fabs(bf - full) <= 0.01 * full);
    assert_true(fabs(both - full) <= 0.01 * full);
    assert_true(fabs(all - full) <= 0.01 * full);
    assert_true(fabs(panels - all) <= 2e-4 * all); /* seen: 3e-5 */
  }
}

/* The fused step (each range stepped and released inside backward) is the whole unclipped step
 * bit for bit, on every fixture family, in both moment dtypes, with and without fused targets;
 * and the released gradients read back as zero, as the next backward needs them. Once with the
 * head's gradient in one panel and one chunk of positions, once in panels of 16 vocabulary
 * columns (the last one narrower on most fixtures) over chunks of 5 positions: every panel
 * border and every tied row whose gradient waits for the embedding's must give the whole head's
 * values. (Panels of 13 columns would differ by an ulp: fc_head.c's train_panel_cols.) */
static void test_fused_step_same(void **state) {
  (void)state;
  fc_err_t err = {0};
  for (int crossed = 0; crossed < 2; crossed++) {
    if (crossed) setenv("FUSECHAT_HEAD_COLS", "16", 1), setenv("FUSECHAT_HEAD_ROWS", "5", 1);
    for (size_t v = 0; v < NVAR; v++)
      for (int bf = 0; bf < 2; bf++) {
        fc_model_t *a = load(variants[v]), *b = load(variants[v]);
        int V = fc_model_config(a)->vocab_size;
        size_t np = fc_model_num_params(a), nt = fc_model_num_tensors(a);
        const fc_param_info_t *tens[64];
        assert_true(nt <= 64);
        for (size_t i = 0; i < nt; i++) tens[i] = fc_model_tensor(a, i);
        fc_dtype_t dt = bf ? FC_DT_BF16 : FC_DT_F32;
        fc_adamw_t *oa = fc_adamw_new_dtype(np, tens, nt, 0.9f, 0.95f, 1e-8f, 0.1f, dt),
                   *ob = fc_adamw_new_dtype(np, tens, nt, 0.9f, 0.95f, 1e-8f, 0.1f, dt);
        fused_ctx_t fc = {b, ob, 0};
        fc_model_set_grad_ready(b, fused_ready, &fc);
        for (int s = 0; s < 4; s++) {
          batch_t x = make_batch(2, 12, 3, V, 77 + (uint64_t)s);
          fc_fused_targets_t ft = {3, x.fids, x.flp}, *f = s >= 2 ? &ft : NULL; /* the last two with targets */
          double la, lb, norm = (double)fc_loss_count(x.targets, 24);
          fc_model_zero_grad(a);
          assert_int_equal(fc_model_loss_backward(a, x.ids, 2, 12, x.targets, f, 0.7f, norm, NULL, &la, &err), 0);
          fc_adamw_step(oa, fc_model_params(a), fc_model_grads(a), 1e-3f);
          fc_adamw_begin(ob, 1e-3f);
          fc.covered = 0;
          assert_int_equal(fc_model_loss_backward(b, x.ids, 2, 12, x.targets, f, 0.7f, norm, NULL, &lb, &err), 0);
          assert_int_equal(fc.covered, np);
          assert_true(la == lb);
          const float *pa = fc_model_params(a), *pb = fc_model_params(b);
          for (size_t i = 0; i < np; i++)
            if (memcmp(pa + i, pb + i, sizeof *pa) != 0)
              fail_msg("%s%s step %d: parameter %zu is %.9g fused, %.9g whole", variants[v],
                       crossed ? " (16-column panels)" : "", s, i, pb[i], pa[i]);
          const float *g = fc_model_grads(b);
          for (size_t i = 0; i < np; i++)
            if (g[i] != 0.0f) fail_msg("%s: gradient %zu not released (%g)", variants[v], i, g[i]);
          free_batch(&x);
        }
        fc_adamw_destroy(&oa), fc_adamw_destroy(&ob);
        fc_model_destroy(&a), fc_model_destroy(&b);
      }
  }
  unsetenv("FUSECHAT_HEAD_COLS"), unsetenv("FUSECHAT_HEAD_ROWS");
}

/* One fused step on a fresh random batch of 2 x 12. */
static int fused_try(fc_fused_step_t *fs, uint64_t seed, double *loss, fc_err_t *err) {
  int V = fc_model_config(fs->m)->vocab_size;
  batch_t x = make_batch(2, 12, 1, V, seed);
  double norm = (double)fc_loss_count(x.targets, 24);
  int rc = fc_fused_step_run(fs, 1e-3f, x.ids, 2, 12, x.targets, NULL, 1.0f, norm, NULL, loss, err);
  free_batch(&x);
  return rc;
}

/* The fused step checks before it updates: a final norm of 1e38 makes the logits overflow and
 * the loss non-finite, and the step is refused both as the first step (its norm measured by an
 * extra backward) and as a later one (clipped by the previous norm), with the parameters, the
 * optimizer's step count and moments as they were and the gradients zero; with the norm
 * restored the same step goes through. Without the check the update runs inside backward and
 * the parameters turn NaN. */
static void test_fused_step_refuses_nonfinite(void **state) {
  (void)state;
  fc_model_t *m = load("qwen2_tied");
  size_t np = fc_model_num_params(m), nt = fc_model_num_tensors(m);
  const fc_param_info_t *tens[64], *lnf = NULL;
  assert_true(nt <= 64);
  for (size_t i = 0; i < nt; i++) {
    tens[i] = fc_model_tensor(m, i);
    if (!strcmp(tens[i]->name, "model.norm.weight")) lnf = tens[i];
  }
  assert_non_null(lnf);
  fc_adamw_t *o = fc_adamw_new_dtype(np, tens, nt, 0.9f, 0.95f, 1e-8f, 0.1f, FC_DT_F32);
  fc_fused_step_t fs;
  fc_fused_step_init(&fs, m, o, 1.0);
  float *p = fc_model_params(m), *saved = malloc(np * sizeof *saved), *ms = malloc(np * sizeof *ms),
        *vs = malloc(np * sizeof *vs), *norm_w = malloc(lnf->numel * sizeof *norm_w);
  memcpy(norm_w, p + lnf->offset, lnf->numel * sizeof *norm_w);
  fc_err_t err = {0};
  double loss;
  for (int round = 0; round < 2; round++) { /* 0: the first step, 1: a later one */
    for (size_t i = 0; i < lnf->numel; i++) p[lnf->offset + i] = 1e38f;
    memcpy(saved, p, np * sizeof *saved), memcpy(ms, o->m, np * sizeof *ms), memcpy(vs, o->v, np * sizeof *vs);
    long step = o->step;
    err = (fc_err_t){0};
    assert_int_equal(fused_try(&fs, 500 + (uint64_t)round, &loss, &err), FC_EINVAL);
    assert_non_null(strstr(err.msg, "loss"));
    assert_non_null(strstr(err.msg, "refused"));
    assert_memory_equal(p, saved, np * sizeof *saved);
    assert_memory_equal(o->m, ms, np * sizeof *ms);
    assert_memory_equal(o->v, vs, np * sizeof *vs);
    assert_int_equal(o->step, step);
    const float *g = fc_model_grads(m);
    for (size_t i = 0; i < np; i++)
      if (g[i] != 0.0f) fail_msg("gradient %zu left %g after the refused step", i, g[i]);
    memcpy(p + lnf->offset, norm_w, lnf->numel * sizeof *norm_w);
    assert_int_equal(fused_try(&fs, 500 + (uint64_t)round, &loss, &err), 0);
    assert_true(isfinite(loss));
    assert_int_equal(o->step, step + 1);
    assert_true(fs.norm > 0 && isfinite(fs.norm));
  }
  free(saved), free(ms), free(vs), free(norm_w);
  fc_adamw_destroy(&o);
  fc_model_destroy(&m);
}

static void test_bf16_state_roundtrip(void **state) {
  (void)state;
  size_t n = 1000;
  fc_adamw_t *o = fc_adamw_new_dtype(n, NULL, 0, 0.9f, 0.95f, 1e-8f, 0.0f, FC_DT_BF16);
  float *p = calloc(n, sizeof *p), *g = malloc(n * sizeof *g);
  for (size_t i = 0; i < n; i++) g[i] = (float)i / (float)n - 0.5f;
  fc_adamw_step(o, p, g, 1e-3f);
  fc_adamw_step(o, p, g, 1e-3f);
  FILE *fp = tmpfile();
  fc_err_t err = {0};
  assert_int_equal(fc_adamw_write(o, fp, &err), 0);
  rewind(fp);
  fc_adamw_t *o2 = fc_adamw_new_dtype(n, NULL, 0, 0.9f, 0.95f, 1e-8f, 0.0f, FC_DT_BF16);
  assert_int_equal(fc_adamw_read(o2, fp, &err), 0);
  assert_int_equal(o2->step, 2);
  assert_memory_equal(o2->m16, o->m16, n * 2);
  assert_memory_equal(o2->v16, o->v16, n * 2);
  rewind(fp);
  fc_adamw_t *o3 = fc_adamw_new(n, NULL, 0, 0.9f, 0.95f, 1e-8f, 0.0f);
  assert_int_equal(fc_adamw_read(o3, fp, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "bf16"));
  fclose(fp);
  fc_adamw_destroy(&o), fc_adamw_destroy(&o2), fc_adamw_destroy(&o3);
  free(p), free(g);
}

/* ZeRO-1 with BF16 moments: rank slices whose base is their offset step bitwise as the whole
 * optimizer does (the stochastic rounding hashes the global index), and a slice left at base 0
 * does not (what the base is for). */
static void test_bf16_slices_round_as_whole(void **state) {
  (void)state;
  size_t n = 1001, cut = 400;
  fc_adamw_t *whole = fc_adamw_new_dtype(n, NULL, 0, 0.9f, 0.999f, 1e-8f, 0.1f, FC_DT_BF16);
  fc_adamw_t *s0 = fc_adamw_new_dtype(cut, NULL, 0, 0.9f, 0.999f, 1e-8f, 0.1f, FC_DT_BF16);
  fc_adamw_t *s1 = fc_adamw_new_dtype(n - cut, NULL, 0, 0.9f, 0.999f, 1e-8f, 0.1f, FC_DT_BF16);
  fc_adamw_t *s1_local = fc_adamw_new_dtype(n - cut, NULL, 0, 0.9f, 0.999f, 1e-8f, 0.1f, FC_DT_BF16);
  s1->base = cut;
  float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q), *r = malloc(n * sizeof *r), *g = malloc(n * sizeof *g);
  for (size_t i = 0; i < n; i++) p[i] = q[i] = r[i] = 0.01f * (float)(i % 17), g[i] = sinf((float)i) * 1e-3f;
  for (int step = 0; step < 4; step++) {
    fc_adamw_step(whole, p, g, 1e-3f);
    fc_adamw_step(s0, q, g, 1e-3f);
    fc_adamw_step(s1, q + cut, g + cut, 1e-3f);
    fc_adamw_step(s1_local, r + cut, g + cut, 1e-3f);
  }
  assert_memory_equal(q, p, n * sizeof *p);
  assert_memory_equal(s0->m16, whole->m16, cut * 2);
  assert_memory_equal(s1->m16, whole->m16 + cut, (n - cut) * 2);
  assert_memory_equal(s1->v16, whole->v16 + cut, (n - cut) * 2);
  assert_true(memcmp(s1_local->m16, whole->m16 + cut, (n - cut) * 2) != 0);
  fc_adamw_destroy(&whole), fc_adamw_destroy(&s0), fc_adamw_destroy(&s1), fc_adamw_destroy(&s1_local);
  free(p), free(q), free(r), free(g);
}

/* The source families (fc_arch) through the chunked head: top-K in chunks of 5 rows equals the
 * full logits' log-softmax, and the training path refuses them (forward only) even with
 * checkpointing on, instead of running the Llama trunk over their absent layers. */
static void test_source_family_head(void **state) {
  (void)state;
  const char *types[] = {"mixtral", "gemma2", "phi3"};
  for (size_t t = 0; t < 3; t++) {
    fc_config_t c;
    fc_config_default(&c, types[t]);
    c.hidden_size = 32, c.intermediate_size = 40, c.num_layers = 2, c.num_heads = 4, c.num_kv_heads = 2;
    c.head_dim = 8, c.vocab_size = 64, c.num_experts = !strcmp(types[t], "mixtral") ? 4 : 0;
    if (!strcmp(types[t], "mixtral")) c.experts_per_tok = 2;
    fc_err_t err = {0};
    fc_model_t *m = NULL;
    assert_int_equal(fc_model_init(&m, &c, 3, &err), 0);
    enum { B = 2, T = 7, K = 4, V = 64 };
    int32_t ids[B * T], tg[B * T], top[B * T * K];
    float lp[B * T * K], tlp[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (i * 5 + 1) % V, tg[i] = (i * 3 + 2) % V;
    const float *lg = fc_model_forward(m, ids, B, T, 0, &err);
    assert_non_null(lg);
    float *full = malloc(sizeof(float) * B * T * V);
    memcpy(full, lg, sizeof(float) * B * T * V);
    setenv("FUSECHAT_HEAD_ROWS", "5", 1);
    assert_int_equal(fc_model_forward_topk(m, ids, B, T, K, tg, top, lp, tlp, &err), 0);
    unsetenv("FUSECHAT_HEAD_ROWS");
    for (int i = 0; i < B * T; i++) {
      double mx = -INFINITY, se = 0;
      for (int v = 0; v < V; v++) mx = fmax(mx, full[i * V + v]);
      for (int v = 0; v < V; v++) se += exp(full[i * V + v] - mx);
      double lse = mx + log(se);
      assert_true(fabs(tlp[i] - (full[i * V + tg[i]] - lse)) < 1e-5);
      assert_true(fabs(lp[i * K] - (full[i * V + top[i * K]] - lse)) < 1e-5);
      for (int v = 0; v < V; v++) assert_true(full[i * V + v] <= full[i * V + top[i * K]]);
    }
    fc_model_set_checkpointing(m, 1);
    double loss = 0;
    assert_int_equal(fc_model_loss_backward(m, ids, B, T, tg, NULL, 0.0f, B * T, NULL, &loss, &err), FC_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "forward only"));
    free(full);
    fc_model_destroy(&m);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loss_backward_chunked),
      cmocka_unit_test(test_checkpointing_same_gradients),
      cmocka_unit_test(test_reduced_memory_training_loss),
      cmocka_unit_test(test_fused_step_same),
      cmocka_unit_test(test_fused_step_refuses_nonfinite),
      cmocka_unit_test(test_bf16_state_roundtrip),
      cmocka_unit_test(test_bf16_slices_round_as_whole),
      cmocka_unit_test(test_source_family_head),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
