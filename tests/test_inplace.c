/* Weights used in place (fc_model_load_mapped): on F32 files the results are bit-identical to
 * the f32-copy load (logits, top-K, generation); on bf16/f16 files they match the PyTorch
 * fixtures (tests/ref/make_model_fixtures.py) as closely as the copy does; the 16-bit linear
 * kernel (fc_wlin.h) against a double-precision product at awkward shapes; training refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_generate.h"
#include "fc_model.h"
#include "fc_ops.h"
#include "fc_wlin.h"
#include "test_support.h"

static const char *f32_variants[] = {"llama_gqa", "qwen2_tied", "mistral_swa", "qwen2_swa"};
static const char *half_variants[] = {"llama_mha_tied_bf16", "llama_bias_llama3_f16"};

typedef struct pair {
  fc_model_t *copy, *mapped;
  fc_st_t *ref;
} pair_t;

static void open_pair(pair_t *p, const char *name) {
  char rel[256];
  fc_err_t err = {0};
  snprintf(rel, sizeof rel, "model/%s", name);
  char *dir = test_fixture(rel);
  snprintf(rel, sizeof rel, "model/%s.ref.safetensors", name);
  char *ref = test_fixture(rel);
  assert_int_equal(fc_model_load(&p->copy, dir, &err), 0);
  int rc = fc_model_load_mapped(&p->mapped, dir, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(fc_st_open(&p->ref, ref, &err), 0);
  assert_true(fc_model_in_place(p->mapped));
  assert_false(fc_model_in_place(p->copy));
  assert_null(fc_model_params(p->mapped));
  free(dir), free(ref);
}

static void close_pair(pair_t *p) {
  fc_model_destroy(&p->copy);
  fc_model_destroy(&p->mapped);
  fc_st_close(&p->ref);
}

static float max_abs_diff(const float *a, const float *b, size_t n, float *scale) {
  float d = 0, s = 0;
  for (size_t i = 0; i < n; i++) {
    d = fabsf(a[i] - b[i]) > d ? fabsf(a[i] - b[i]) : d;
    s = fabsf(b[i]) > s ? fabsf(b[i]) : s;
  }
  if (scale) *scale = s;
  return d;
}

/* F32 files: the mapping's bytes are the copy's, and the kernels are the same, so every result
 * is the same bit for bit (the README's demo table depends on it). */
static void test_f32_bitwise(void **state) {
  (void)state;
  for (size_t v = 0; v < sizeof f32_variants / sizeof *f32_variants; v++) {
    pair_t p;
    open_pair(&p, f32_variants[v]);
    assert_int_equal(fc_model_weight_dtype(p.mapped), FC_DT_F32);
    const fc_st_tensor_t *tid = fc_st_find(p.ref, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1], V = fc_model_config(p.copy)->vocab_size;
    size_t n = (size_t)B * T * V, BT = (size_t)B * T;
    fc_err_t err = {0};
    float *a = malloc(n * sizeof *a);
    const float *lg = fc_model_forward(p.copy, tid->data, B, T, 0, &err);
    assert_non_null(lg);
    memcpy(a, lg, n * sizeof *a);
    lg = fc_model_forward(p.mapped, tid->data, B, T, 0, &err);
    assert_non_null(lg);
    assert_memory_equal(a, lg, n * sizeof *a);
    enum { K = 5 };
    int32_t *ia = malloc(BT * K * sizeof *ia), *ib = malloc(BT * K * sizeof *ib);
    float *la = malloc(BT * K * sizeof *la), *lb = malloc(BT * K * sizeof *lb);
    float *ga = malloc(BT * sizeof *ga), *gb = malloc(BT * sizeof *gb);
    assert_int_equal(fc_model_forward_topk(p.copy, tid->data, B, T, K, tid->data, ia, la, ga, &err), 0);
    assert_int_equal(fc_model_forward_topk(p.mapped, tid->data, B, T, K, tid->data, ib, lb, gb, &err), 0);
    assert_memory_equal(ia, ib, BT * K * sizeof *ia);
    assert_memory_equal(la, lb, BT * K * sizeof *la);
    assert_memory_equal(ga, gb, BT * sizeof *ga);
    /* Cached decoding, one token at a time (the few-row path of 16-bit weights). */
    fc_kv_cache_t *ka, *kb;
    assert_int_equal(fc_kv_cache_new(&ka, p.copy, T, &err), 0);
    assert_int_equal(fc_kv_cache_new(&kb, p.mapped, T, &err), 0);
    for (int t = 0; t < T; t++) {
      const float *da = fc_model_decode(p.copy, ka, (const int32_t *)tid->data + t, 1, &err);
      assert_non_null(da);
      memcpy(a, da, (size_t)V * sizeof *a);
      const float *db = fc_model_decode(p.mapped, kb, (const int32_t *)tid->data + t, 1, &err);
      assert_non_null(db);
      assert_memory_equal(a, db, (size_t)V * sizeof *a);
    }
    fc_kv_cache_destroy(&ka), fc_kv_cache_destroy(&kb);
    free(a), free(ia), free(ib), free(la), free(lb), free(ga), free(gb);
    close_pair(&p);
  }
}

/* bf16/f16 files: the matrices stay 16-bit and are widened panel by panel, the arithmetic is
 * f32, so the logits meet the f32 test's bound against PyTorch (1e-4 of the largest magnitude,
 * as test_model) and sit within 1e-5 of the copy's (only the GEMM's blocking differs); top-K ids
 * equal PyTorch's. Cached decoding (the few-row kernel) within 1e-5 of the batched forward. */
static void test_half_vs_pytorch(void **state) {
  (void)state;
  for (size_t v = 0; v < sizeof half_variants / sizeof *half_variants; v++) {
    pair_t p;
    open_pair(&p, half_variants[v]);
    assert_int_not_equal(fc_model_weight_dtype(p.mapped), FC_DT_F32);
    const fc_st_tensor_t *tid = fc_st_find(p.ref, "ids"), *tl = fc_st_find(p.ref, "logits");
    int B = (int)tid->shape[0], T = (int)tid->shape[1], V = fc_model_config(p.copy)->vocab_size;
    size_t n = (size_t)B * T * V;
    fc_err_t err = {0};
    float *want = malloc(n * sizeof *want), *copy = malloc(n * sizeof *copy);
    assert_int_equal(fc_st_to_f32(tl, want, &err), 0);
    const float *lg = fc_model_forward(p.copy, tid->data, B, T, 0, &err);
    memcpy(copy, lg, n * sizeof *copy);
    lg = fc_model_forward(p.mapped, tid->data, B, T, 0, &err);
    assert_non_null(lg);
    float scale, d = max_abs_diff(lg, want, n, &scale), dc = max_abs_diff(lg, copy, n, NULL);
    printf("%-24s in place: max diff %.2e vs PyTorch, %.2e vs the f32 copy (max|ref| %.3f)\n", half_variants[v], d,
           dc, scale);
    assert_true(d <= 1e-4f * scale);
    assert_true(dc <= 1e-5f * scale);
    const fc_st_tensor_t *tk = fc_st_find(p.ref, "topk_ids");
    int K = (int)tk->shape[2];
    size_t BT = (size_t)B * T;
    int32_t *ids = malloc(BT * K * sizeof *ids);
    float *lp = malloc(BT * K * sizeof *lp);
    assert_int_equal(fc_model_forward_topk(p.mapped, tid->data, B, T, K, NULL, ids, lp, NULL, &err), 0);
    assert_memory_equal(ids, tk->data, BT * K * sizeof *ids);
    fc_kv_cache_t *kc;
    assert_int_equal(fc_kv_cache_new(&kc, p.mapped, T, &err), 0);
    for (int t = 0; t < T; t++) {
      const float *dl = fc_model_decode(p.mapped, kc, (const int32_t *)tid->data + t, 1, &err);
      assert_non_null(dl);
      assert_true(max_abs_diff(dl, copy + (size_t)t * V, (size_t)V, NULL) <= 1e-5f * scale);
    }
    fc_kv_cache_destroy(&kc);
    /* Inference only: a training forward or step is refused with a message. */
    assert_null(fc_model_forward(p.mapped, tid->data, B, T, 1, &err));
    assert_int_equal(err.code, FC_EUNSUPPORTED);
    double loss;
    assert_int_equal(fc_model_loss_backward(p.mapped, tid->data, B, T, tid->data, NULL, 1.0f, 1.0, NULL, &loss, &err),
                     FC_EUNSUPPORTED);
    free(want), free(copy), free(ids), free(lp);
    close_pair(&p);
  }
}

/* The 16-bit head streamed over panels of vocabulary columns (fc_head.c) against top-K taken from
 * the same model's whole logits rows: the same ids (heaps fed across panel borders, K larger than
 * a panel), log-probabilities and gold log-probabilities within 1e-5 (the log-sum-exp is combined
 * panel by panel; the panels' products are blocked differently). Ignored targets give NaN. */
static void test_half_head_panels(void **state) {
  (void)state;
  pair_t p;
  open_pair(&p, half_variants[0]);
  const fc_st_tensor_t *tid = fc_st_find(p.ref, "ids");
  int B = (int)tid->shape[0], T = (int)tid->shape[1], V = fc_model_config(p.mapped)->vocab_size;
  size_t BT = (size_t)B * T;
  int32_t *tg = malloc(BT * sizeof *tg);
  for (size_t i = 0; i < BT; i++) tg[i] = i % 5 == 4 ? -1 : (int32_t)((i * 7919) % (size_t)V);
  fc_err_t err = {0};
  float *full = malloc(BT * V * sizeof *full);
  const float *lg = fc_model_forward(p.mapped, tid->data, B, T, 0, &err);
  assert_non_null(lg);
  memcpy(full, lg, BT * V * sizeof *full);
  const char *cols[] = {"7", "16", "40"};
  int Ks[] = {3, 20};
  for (size_t c = 0; c < sizeof cols / sizeof *cols; c++)
    for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++) {
      int K = Ks[k];
      int32_t *ids = malloc(BT * K * sizeof *ids), *wid = malloc(BT * K * sizeof *wid);
      float *lp = malloc(BT * K * sizeof *lp), *wlp = malloc(BT * K * sizeof *wlp), *glp = malloc(BT * sizeof *glp);
      setenv("FUSECHAT_HEAD_COLS", cols[c], 1);
      assert_int_equal(fc_model_forward_topk(p.mapped, tid->data, B, T, K, tg, ids, lp, glp, &err), 0);
      unsetenv("FUSECHAT_HEAD_COLS");
      for (size_t r = 0; r < BT; r++) {
        const float *row = full + r * V;
        fc_topk_logprobs(row, V, K, wid + r * K, wlp + r * K);
        if (tg[r] < 0) {
          assert_true(isnan(glp[r]));
          continue;
        }
        float want = row[tg[r]] - fc_logsumexp(row, V);
        assert_true(fabsf(glp[r] - want) <= 1e-5f);
      }
      assert_memory_equal(ids, wid, BT * K * sizeof *ids);
      for (size_t i = 0; i < BT * K; i++) assert_true(fabsf(lp[i] - wlp[i]) <= 1e-5f);
      free(ids), free(wid), free(lp), free(wlp), free(glp);
    }
  free(tg), free(full);
  close_pair(&p);
}

/* More rows than one MLP block of the 16-bit path (512): the blocks together give the copy's
 * logits (within 1e-5 of their magnitude, as above), padding rows included. */
static void test_half_mlp_blocks(void **state) {
  (void)state;
  pair_t p;
  open_pair(&p, half_variants[0]);
  int B = 3, T = 200, V = fc_model_config(p.copy)->vocab_size;
  size_t n = (size_t)B * T * V;
  int32_t *ids = malloc((size_t)B * T * sizeof *ids);
  fc_rng_t r;
  fc_rng_seed(&r, 5);
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(fc_rng_u64(&r) % (uint64_t)V);
  fc_err_t err = {0};
  float *copy = malloc(n * sizeof *copy), scale;
  memcpy(copy, fc_model_forward(p.copy, ids, B, T, 0, &err), n * sizeof *copy);
  const float *lg = fc_model_forward(p.mapped, ids, B, T, 0, &err);
  assert_non_null(lg);
  float d = max_abs_diff(lg, copy, n, &scale);
  printf("%d x %d rows in place: max diff %.2e vs the f32 copy (max %.3f)\n", B, T, d, scale);
  assert_true(d <= 1e-5f * scale);
  free(ids), free(copy);
  close_pair(&p);
}

static uint16_t to_half(float f, fc_dtype_t dt) { return dt == FC_DT_BF16 ? fc_f32_to_bf16(f) : fc_f32_to_f16(f); }
static double from_half(uint16_t h, fc_dtype_t dt) { return dt == FC_DT_BF16 ? fc_bf16_to_f32(h) : fc_f16_to_f32(h); }

/* The kernel against a double-precision product of the same (widened) values: rows from 1 (the
 * few-row kernel) to 37, widths not a multiple of 16, several panels, bias and accumulate, on
 * every GEMM built in. Bound: 1e-5 of sum |x||w|, f32 rounding over a few thousand terms. */
static void test_wlinear_kernel(void **state) {
  (void)state;
  struct {
    int N, IN, OUT;
  } shp[] = {{1, 37, 19}, {3, 64, 300}, {5, 50, 33}, {37, 1000, 4200}, {8, 4100, 1030}};
  fc_dtype_t dts[] = {FC_DT_BF16, FC_DT_F16};
  fc_rng_t r;
  fc_rng_seed(&r, 3);
  float *panel = malloc(FC_WLIN_PANEL_FLOATS * sizeof *panel);
  for (size_t s = 0; s < sizeof shp / sizeof *shp; s++)
    for (int di = 0; di < 2; di++)
      for (int g = 0; g < FC_WGEMM_N; g++) {
        if (!fc_wgemm_available((fc_wgemm_t)g)) continue;
        int N = shp[s].N, IN = shp[s].IN, OUT = shp[s].OUT, acc = (int)(s % 2);
        fc_dtype_t dt = dts[di];
        uint16_t *w = malloc((size_t)OUT * IN * sizeof *w);
        float *x = malloc((size_t)N * IN * sizeof *x), *b = malloc((size_t)OUT * sizeof *b);
        float *y = malloc((size_t)N * OUT * sizeof *y), *y0 = malloc((size_t)N * OUT * sizeof *y0);
        for (size_t i = 0; i < (size_t)OUT * IN; i++) w[i] = to_half(0.1f * fc_rng_normal(&r), dt);
        for (size_t i = 0; i < (size_t)N * IN; i++) x[i] = fc_rng_normal(&r);
        for (int i = 0; i < OUT; i++) b[i] = fc_rng_normal(&r);
        for (size_t i = 0; i < (size_t)N * OUT; i++) y[i] = y0[i] = fc_rng_normal(&r);
        fc_wlinear_forward(y, x, w, dt, s % 3 ? b : NULL, N, IN, OUT, acc, panel, (fc_wgemm_t)g, 2);
        double worst = 0;
        for (int i = 0; i < N; i++)
          for (int o = 0; o < OUT; o++) {
            double sum = acc ? y0[(size_t)i * OUT + o] : 0, mag = fabs(sum);
            if (s % 3) sum += b[o], mag += fabs(b[o]);
            for (int k = 0; k < IN; k++) {
              double t = (double)x[(size_t)i * IN + k] * from_half(w[(size_t)o * IN + k], dt);
              sum += t, mag += fabs(t);
            }
            double e = fabs(y[(size_t)i * OUT + o] - sum) / mag;
            worst = e > worst ? e : worst;
          }
        if (worst > 1e-5)
          fprintf(stderr, "N %d IN %d OUT %d %s %s: relative error %.2e\n", N, IN, OUT, fc_dtype_name(dt),
                  fc_wgemm_name((fc_wgemm_t)g), worst);
        assert_true(worst <= 1e-5);
        free(w), free(x), free(b), free(y), free(y0);
      }
  free(panel);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_f32_bitwise), cmocka_unit_test(test_half_vs_pytorch), cmocka_unit_test(test_half_head_panels),
                                     cmocka_unit_test(test_half_mlp_blocks),
                                     cmocka_unit_test(test_wlinear_kernel)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
