/* The fused final pass for bf16 inputs (fc_merge.c: fused_block) against the generic block path
 * run on the same values as f32: the same results (the normalising division of linear and task
 * arithmetic, done there as a multiplication by the reciprocal, may move the last bit), the same
 * for 1 and 3 threads, and bf16 output rounded exactly as fc_f32_to_bf16 rounds the f32 output.
 * The generic path itself is checked against the PyTorch fixtures in test_merge.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_merge.h"
#include "fc_merge_impl.h"
#include "mem_tensor.h"

#define N 40011 /* several blocks and a tail that is not a multiple of 8 */

/* Base ~N(0, 0.05^2); models add small deltas, a third of them exactly zero and many equal in
 * magnitude (bf16 rounding), so TIES meets ties at its threshold. */
static void make_inputs(uint16_t *h[4], float *f[4], int n) {
  fc_rng_t r;
  fc_rng_seed(&r, 7);
  for (int i = 0; i < n; i++) {
    h[0][i] = fc_f32_to_bf16(0.05f * fc_rng_normal(&r));
    f[0][i] = fc_bf16_to_f32(h[0][i]);
  }
  for (int k = 1; k < 4; k++)
    for (int i = 0; i < n; i++) {
      float d = fc_rng_u64(&r) % 3 == 0 ? 0.0f : 0.005f * fc_rng_normal(&r);
      h[k][i] = fc_f32_to_bf16(f[0][i] + d);
      f[k][i] = fc_bf16_to_f32(h[k][i]);
    }
}

/* The base (index 0) and three models as bf16 and as f32 tensors, and the models' pointers. */
typedef struct {
  fc_st_tensor_t hb, fb, hm[3], fm[3];
  const fc_st_tensor_t *hin[3], *fin[3];
} inputs_t;

static void wrap_inputs(inputs_t *in, uint16_t *h[4], float *f[4], int64_t n) {
  in->hb = mk("t", FC_DT_BF16, h[0], n);
  in->fb = mk("t", FC_DT_F32, f[0], n);
  for (int k = 0; k < 3; k++) {
    in->hm[k] = mk("t", FC_DT_BF16, h[k + 1], n);
    in->fm[k] = mk("t", FC_DT_F32, f[k + 1], n);
    in->hin[k] = &in->hm[k];
    in->fin[k] = &in->fm[k];
  }
}

static void free_planes(uint16_t *h[4], float *f[4]) {
  for (int k = 0; k < 4; k++) {
    free(h[k]);
    free(f[k]);
  }
}

static int ulps(float a, float b) {
  int32_t x, y;
  memcpy(&x, &a, 4);
  memcpy(&y, &b, 4);
  if ((x < 0) != (y < 0)) return a == b ? 0 : 1 << 30;
  return abs(x - y);
}

static void test_fused_matches_generic(void **state) {
  (void)state;
  uint16_t *h[4];
  float *f[4];
  for (int k = 0; k < 4; k++) {
    h[k] = fc_xmalloc(N * 2);
    f[k] = fc_xmalloc(N * 4);
  }
  make_inputs(h, f, N);
  inputs_t in;
  wrap_inputs(&in, h, f, N);
  const fc_st_tensor_t *const *hin = in.hin, *const *fin = in.fin, *hbp = &in.hb, *fbp = &in.fb;
  float *o1 = fc_xmalloc(N * 4), *o3 = fc_xmalloc(N * 4), *want = fc_xmalloc(N * 4);
  /* band: also with the one-pass band selection (fc_merge_band_min 0), which has its own
   * bf16 pass for TIES. */
  struct {
    fc_merge_method_t m;
    int normalize;
    double dens;
    int max_ulps;
    double topk;
    fc_sce_scope_t scope;
    int band;
  } cases[] = {
      {FC_MERGE_LINEAR, 1, 1, 1, 1, 0, 0},          {FC_MERGE_LINEAR, 0, 1, 0, 1, 0, 0},
      {FC_MERGE_TASK_ARITHMETIC, 0, 1, 0, 1, 0, 0}, {FC_MERGE_TASK_ARITHMETIC, 1, 1, 1, 1, 0, 0},
      {FC_MERGE_DARE_LINEAR, -1, 1, 0, 1, 0, 0},    {FC_MERGE_VARM, -1, 1, 0, 1, 0, 0},
      {FC_MERGE_SLERP, -1, 1, 0, 1, 0, 0},          {FC_MERGE_TIES, 1, 0.3, 0, 1, 0, 0},
      {FC_MERGE_TIES, 0, 0.5, 0, 1, 0, 0},          {FC_MERGE_TIES, 1, 0.3, 0, 1, 0, 1},
      {FC_MERGE_SCE, -1, 1, 0, 0.3, FC_SCE_SCOPE_DELTAS, 0},
      {FC_MERGE_SCE, -1, 1, 0, 0.3, FC_SCE_SCOPE_DELTAS, 1},
      {FC_MERGE_SCE, -1, 1, 0, 0.3, FC_SCE_SCOPE_WEIGHTS, 0},
      {FC_MERGE_SCE, -1, 1, 0, 1, FC_SCE_SCOPE_DELTAS, 0},
      /* breadcrumbs (gamma 0.05, lambda 0.8 below): two selections per sparsified model */
      {FC_MERGE_BREADCRUMBS, 0, 0.3, 0, 1, 0, 0},   {FC_MERGE_BREADCRUMBS, 1, 0.5, 0, 1, 0, 1},
      {FC_MERGE_BREADCRUMBS_TIES, 1, 0.3, 0, 1, 0, 0}, {FC_MERGE_BREADCRUMBS_TIES, 0, 0.3, 0, 1, 0, 1},
      {FC_MERGE_TIES, 1, 0.3, 0, 1, 0, 0},          /* with lambda */
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    fc_merge_model_t mods[3] = {{.path = "a", .weight = 0.9, .density = cases[c].dens}, {.path = "b", .weight = 0.4, .density = 1.0}, {.path = "c", .weight = 0.7, .density = cases[c].dens}};
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = cases[c].m;
    cfg.models = mods;
    cfg.nmodels = fc_merge_method_pairwise(cases[c].m) ? 1 : 3;
    cfg.normalize = cases[c].normalize;
    cfg.t = 0.3;
    cfg.select_topk = cases[c].topk;
    cfg.sce_mask_scope = cases[c].scope;
    const int crumbs = cases[c].m == FC_MERGE_BREADCRUMBS || cases[c].m == FC_MERGE_BREADCRUMBS_TIES;
    if (crumbs || c + 1 == sizeof cases / sizeof cases[0]) cfg.lambda = 0.8;
    cfg.gamma = 0.05;
    fc_merge_band_min = cases[c].band ? 0 : (size_t)1 << 18;
    size_t hits = fc_merge_band_hits;
    fc_err_t err = {0};
    const fc_st_tensor_t *hbase = cases[c].m == FC_MERGE_LINEAR ? NULL : hbp;
    const fc_st_tensor_t *fbase = cases[c].m == FC_MERGE_LINEAR ? NULL : fbp;
    assert_int_equal(fc_merge_tensor(&cfg, "t", hbase, hin, o1, NULL, 1, &err), 0);
    /* The band pass resolved every selection (no fallback to the radix select). */
    if (cases[c].band)
      assert_int_equal(fc_merge_band_hits - hits, cases[c].m == FC_MERGE_TIES ? 2 : crumbs ? 4 : 1);
    assert_int_equal(fc_merge_tensor(&cfg, "t", hbase, hin, o3, NULL, 3, &err), 0);
    assert_int_equal(fc_merge_tensor(&cfg, "t", fbase, fin, want, NULL, 2, &err), 0);
    fc_merge_band_min = (size_t)1 << 18;
    if (memcmp(o1, o3, N * 4))
      fail_msg("%s (case %zu): 1 and 3 threads differ", fc_merge_method_name(cfg.method), c);
    int worst = 0, changed = 0;
    for (int i = 0; i < N; i++) {
      int u = ulps(o1[i], want[i]);
      if (u > worst) worst = u;
      changed += o1[i] != f[0][i];
    }
    if (worst > cases[c].max_ulps)
      fail_msg("%s (case %zu): %d ulps from the generic path", fc_merge_method_name(cfg.method), c, worst);
    if (changed < N / 5) fail_msg("case %zu: only %d elements differ from the base", c, changed);
  }
  free(o1);
  free(o3);
  free(want);
  free_planes(h, f);
}

/* Whole-model merges of bf16 files: the bf16 output is the f32 output rounded by
 * fc_f32_to_bf16, and the f32 output is the generic path's on the f32 values. */
static void test_fused_run_bf16_out(void **state) {
  (void)state;
  char tmpl[] = "/tmp/fc_test_merge_fused.XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  const int n0 = N, n1 = 13;
  uint16_t *h[4];
  float *f[4];
  for (int k = 0; k < 4; k++) {
    h[k] = fc_xmalloc(N * 2);
    f[k] = fc_xmalloc(N * 4);
  }
  make_inputs(h, f, N);
  fc_st_spec_t specs[2] = {{.name = "a.weight", .dtype = FC_DT_BF16, .ndim = 1, .shape = {n0}},
                           {.name = "b.weight", .dtype = FC_DT_BF16, .ndim = 1, .shape = {n1}}};
  char path[4][256];
  fc_err_t err = {0};
  for (int k = 0; k < 4; k++) {
    snprintf(path[k], sizeof path[k], "%s/m%d.safetensors", tmpl, k);
    fc_st_writer_t *w;
    assert_int_equal(fc_st_writer_new(&w, path[k], specs, 2, NULL, &err), 0);
    assert_int_equal(fc_st_writer_put_raw(w, 0, h[k], (size_t)n0 * 2, &err), 0);
    assert_int_equal(fc_st_writer_put_raw(w, 1, h[k] + 100, (size_t)n1 * 2, &err), 0);
    assert_int_equal(fc_st_writer_finish(&w, &err), 0);
  }
  fc_merge_method_t meths[] = {FC_MERGE_LINEAR, FC_MERGE_TASK_ARITHMETIC, FC_MERGE_TIES, FC_MERGE_SCE};
  for (size_t mi = 0; mi < sizeof meths / sizeof meths[0]; mi++) {
    fc_merge_model_t mods[3] = {{.path = path[1], .weight = 0.5, .density = 0.4}, {.path = path[2], .weight = 0.3, .density = 0.4}, {.path = path[3], .weight = 0.2, .density = 0.4}};
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = meths[mi];
    cfg.base = path[0];
    cfg.models = mods;
    cfg.nmodels = 3;
    cfg.threads = 2;
    cfg.select_topk = 0.25;
    char out_f[300], out_h[300];
    snprintf(out_f, sizeof out_f, "%s/out_f32_%zu", tmpl, mi);
    snprintf(out_h, sizeof out_h, "%s/out_bf16_%zu", tmpl, mi);
    cfg.dtype = FC_DT_F32;
    assert_int_equal(fc_merge_run(&cfg, out_f, &err), 0);
    cfg.dtype = FC_DT_BF16;
    assert_int_equal(fc_merge_run(&cfg, out_h, &err), 0);
    fc_st_t *sf, *sh;
    assert_int_equal(fc_st_open(&sf, out_f, &err), 0);
    assert_int_equal(fc_st_open(&sh, out_h, &err), 0);
    for (int t = 0; t < 2; t++) {
      const fc_st_tensor_t *tf = fc_st_at(sf, (size_t)t), *th = fc_st_at(sh, (size_t)t);
      assert_int_equal(tf->dtype, FC_DT_F32);
      assert_int_equal(th->dtype, FC_DT_BF16);
      int n = t ? n1 : n0, off = t ? 100 : 0;
      const float *of = tf->data;
      const uint16_t *oh = th->data;
      /* The generic path on the same values as f32. */
      fc_st_tensor_t fb = mk("x", FC_DT_F32, f[0] + off, n), fm[3];
      const fc_st_tensor_t *fin[3];
      for (int k = 0; k < 3; k++) {
        fm[k] = mk("x", FC_DT_F32, f[k + 1] + off, n);
        fin[k] = &fm[k];
      }
      float *want = fc_xmalloc((size_t)n * 4);
      fc_merge_cfg_t gc = cfg;
      assert_int_equal(fc_merge_tensor(&gc, t ? "b.weight" : "a.weight", meths[mi] == FC_MERGE_LINEAR ? NULL : &fb,
                                       fin, want, NULL, 1, &err), 0);
      for (int i = 0; i < n; i++) {
        if (oh[i] != fc_f32_to_bf16(of[i]))
          fail_msg("%s: bf16 output %d is %04x, the f32 output rounds to %04x", fc_merge_method_name(meths[mi]), i,
                   oh[i], fc_f32_to_bf16(of[i]));
        if (ulps(of[i], want[i]) > (meths[mi] == FC_MERGE_LINEAR ? 1 : 0))
          fail_msg("%s: element %d is %.9g, the generic path gives %.9g", fc_merge_method_name(meths[mi]), i,
                   of[i], want[i]);
      }
      free(want);
    }
    fc_st_close(&sf);
    fc_st_close(&sh);
  }
  free_planes(h, f);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
}

/* bf16 fine-tuning deltas take few distinct values, so the k-th largest |delta| sits in a tie
 * group holding a large share of the tensor. The fused band pass counts such groups per block
 * (and the heaviest with vector compares) instead of listing them: thresholds and the tie
 * quotas in index order must equal the generic path's, with the band resolving every
 * selection, for densities that cut into a tie group and for thread counts 1 and 3. */
static void test_fused_ties_tie_groups(void **state) {
  (void)state;
  const int n = 300007;
  uint16_t *h[4];
  float *f[4];
  for (int k = 0; k < 4; k++) {
    h[k] = fc_xmalloc((size_t)n * 2);
    f[k] = fc_xmalloc((size_t)n * 4);
  }
  fc_rng_t r;
  fc_rng_seed(&r, 11);
  for (int i = 0; i < n; i++) {
    h[0][i] = fc_f32_to_bf16(0.25f + 0.25f * (float)(fc_rng_u64(&r) % 4)); /* ulp 2^-9 .. 2^-8 */
    f[0][i] = fc_bf16_to_f32(h[0][i]);
  }
  /* Deltas of 0..5 ulps, mostly 1 or 2: a handful of distinct magnitudes. */
  static const int steps[16] = {0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 5, -1, -2};
  for (int k = 1; k < 4; k++)
    for (int i = 0; i < n; i++) {
      uint16_t b = h[0][i];
      h[k][i] = (uint16_t)(b + steps[fc_rng_u64(&r) % 16]);
      f[k][i] = fc_bf16_to_f32(h[k][i]);
    }
  inputs_t in;
  wrap_inputs(&in, h, f, n);
  float *o1 = fc_xmalloc((size_t)n * 4), *o3 = fc_xmalloc((size_t)n * 4), *want = fc_xmalloc((size_t)n * 4);
  const double dens[] = {0.2, 0.5, 0.77};
  for (size_t c = 0; c < sizeof dens / sizeof dens[0]; c++) {
    fc_merge_model_t mods[3] = {{.path = "a", .weight = 0.9, .density = dens[c]}, {.path = "b", .weight = 0.4, .density = dens[c]}, {.path = "c", .weight = 0.7, .density = dens[c]}};
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = FC_MERGE_TIES;
    cfg.models = mods;
    cfg.nmodels = 3;
    fc_err_t err = {0};
    fc_merge_band_min = 0;
    size_t hits = fc_merge_band_hits;
    assert_int_equal(fc_merge_tensor(&cfg, "t", &in.hb, in.hin, o1, NULL, 1, &err), 0);
    assert_int_equal(fc_merge_band_hits - hits, 3);
    assert_int_equal(fc_merge_tensor(&cfg, "t", &in.hb, in.hin, o3, NULL, 3, &err), 0);
    fc_merge_band_min = (size_t)1 << 40; /* the generic path's radix select */
    assert_int_equal(fc_merge_tensor(&cfg, "t", &in.fb, in.fin, want, NULL, 2, &err), 0);
    fc_merge_band_min = (size_t)1 << 18;
    if (memcmp(o1, o3, (size_t)n * 4)) fail_msg("density %g: 1 and 3 threads differ", dens[c]);
    for (int i = 0; i < n; i++)
      if (o1[i] != want[i])
        fail_msg("density %g: element %d is %.9g, the generic path gives %.9g", dens[c], i, o1[i], want[i]);
  }
  free(o1);
  free(o3);
  free(want);
  free_planes(h, f);
}

/* DELLA's row ranks (the counting rank and its fallbacks) against a plain sort of (key, index)
 * pairs, on rows of each kind it meets: bf16 values (one key per bin), bf16 deltas, deltas of
 * small weights (keys that differ in their low half within a bin), exact zeros, denormals, a
 * range too wide for the histogram, one bin too disordered for the insertion sort (one outlier
 * makes the bins coarse), all zero. */
static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_della_ranks(void **state) {
  (void)state;
  const size_t sizes[] = {1, 2, 7, 2048, 5633};
  fc_rng_t r;
  fc_rng_seed(&r, 11);
  for (int kind = 0; kind < 8; kind++)
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
      const size_t c = sizes[si];
      uint32_t *key = fc_xmalloc(c * 4), *rank = fc_xmalloc(c * 4);
      uint32_t *w = fc_xmalloc((fc_merge_rank_work(c) + 1) * 4);
      uint64_t *ref = fc_xmalloc(c * 8);
      for (size_t j = 0; j < c; j++) {
        float b = 0.05f * fc_rng_normal(&r), d = 0.005f * fc_rng_normal(&r), v;
        if (kind == 1) b *= 0.01f; /* small weights: deltas with many significant bits */
        b = fc_bf16_to_f32(fc_f32_to_bf16(b));
        v = fc_bf16_to_f32(fc_f32_to_bf16(b + d)) - b;
        if (kind == 0) v = fc_bf16_to_f32(fc_f32_to_bf16(d)); /* keys with an empty low half */
        if (kind <= 2 && fc_rng_u64(&r) % 3 == 0) v = 0; /* exact zeros */
        if (kind == 3) v = (fc_rng_u64(&r) % 4 == 0) ? 0 : (float)(fc_rng_u64(&r) % 1000) * 1e-42f;
        if (kind == 4) v = ldexpf(1.0f + (float)fc_rng_uniform(&r), (int)(fc_rng_u64(&r) % 200) - 120);
        if (kind == 5) v = 1.0f + (float)fc_rng_uniform(&r) * 0.007f; /* one bin, random low halves */
        if (kind == 6) v = 0;
        if (kind == 7) v = j == c / 2 ? 1e30f : 1.0f + (float)fc_rng_uniform(&r) * 0.007f; /* one outlier: one
                                                                   bin holds the rest, all different */
        key[j] = f2u(fabsf(v));
        ref[j] = (uint64_t)key[j] << 32 | j;
      }
      uint32_t *wa = w + ((uintptr_t)w % 8 ? 1 : 0);
      fc_merge_rank_row(key, c, rank, wa);
      qsort(ref, c, 8, cmp_u64);
      for (size_t p = 0; p < c; p++)
        if (rank[(uint32_t)ref[p]] != p)
          fail_msg("kind %d, %zu columns: element %u has rank %u, expected %zu", kind, c,
                   (uint32_t)ref[p], rank[(uint32_t)ref[p]], p);
      free(key);
      free(rank);
      free(w);
      free(ref);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fused_matches_generic),
      cmocka_unit_test(test_fused_run_bf16_out),
      cmocka_unit_test(test_fused_ties_tie_groups),
      cmocka_unit_test(test_della_ranks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
