/* The GEMM candidates bench/real weighs against each other at the shapes of a model: OpenBLAS
 * cblas_sgemm, oneDNN's dnnl_sgemm, oneDNN's matmul primitive in f32 and in bf16 x bf16 ->
 * f32, and the engine's own linear layer on bf16 weights used in place (fc_wlin.h: panels
 * widened to f32 under OpenBLAS or dnnl_sgemm; f32 activations). Each rate is the best of a few runs of out (M,N) = in (M,K) @ w^T (w is (N,K), the way a
 * linear layer's weight is stored). */
#ifndef FC_BENCH_GEMM_RATES_H
#define FC_BENCH_GEMM_RATES_H

#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fc_util.h"
#include "fc_wlin.h"

#ifdef FC_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

enum { GEMM_OPENBLAS, GEMM_DNNL_SGEMM, GEMM_DNNL_F32, GEMM_DNNL_BF16, GEMM_WLIN, GEMM_NCAND = GEMM_WLIN + FC_WGEMM_N };
static const char *const gemm_names[GEMM_NCAND] = {"openblas_sgemm",  "dnnl_sgemm",   "dnnl_matmul_f32", "dnnl_matmul_bf16",
                                                   "wlin+openblas",   "wlin+sgemm", "wlin+matmul"};

static inline uint16_t gemm_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
  return (uint16_t)(u >> 16);
}

#ifdef FC_HAVE_DNNL
/* One matmul primitive of (M,K) x (N,K)^T in data type dt (dst always f32), run `reps` times. */
static inline double dnnl_matmul_best(int M, int N, int K, dnnl_data_type_t dt, const void *a, const void *w,
                                      float *c, int reps) {
  dnnl_engine_t eng;
  dnnl_stream_t st;
  if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) return 0;
  dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
  dnnl_memory_desc_t amd, wmd, cmd;
  dnnl_dims_t ad = {M, K}, wd = {K, N}, cd = {M, N};
  dnnl_memory_desc_init_by_tag(&amd, 2, ad, dt, dnnl_ab);
  dnnl_memory_desc_init_by_tag(&wmd, 2, wd, dt, dnnl_ba); /* (K,N) stored column-major = w (N,K) */
  dnnl_memory_desc_init_by_tag(&cmd, 2, cd, dnnl_f32, dnnl_ab);
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t p = NULL;
  double best = 0;
  if (dnnl_matmul_desc_init(&md, &amd, &wmd, NULL, &cmd) == dnnl_success &&
      dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) == dnnl_success &&
      dnnl_primitive_create(&p, pd) == dnnl_success) {
    dnnl_memory_t am, wm, cm;
    dnnl_memory_create(&am, &amd, eng, (void *)a);
    dnnl_memory_create(&wm, &wmd, eng, (void *)w);
    dnnl_memory_create(&cm, &cmd, eng, c);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}};
    double tbest = 1e30;
    for (int r = 0; r < reps + 1; r++) {
      double t0 = fc_now();
      dnnl_primitive_execute(p, st, 3, args);
      dnnl_stream_wait(st);
      double dt1 = fc_now() - t0;
      if (r && dt1 < tbest) tbest = dt1; /* run 0 creates the kernels and the thread team */
    }
    best = 2.0 * M * N * K / tbest / 1e9;
    dnnl_memory_destroy(am), dnnl_memory_destroy(wm), dnnl_memory_destroy(cm);
  }
  if (p) dnnl_primitive_destroy(p);
  if (pd) dnnl_primitive_desc_destroy(pd);
  dnnl_stream_destroy(st);
  dnnl_engine_destroy(eng);
  return best;
}
#endif

/* GFLOP/s of every candidate at (M,N,K) into rate[GEMM_NCAND]; 0 where unavailable. */
static inline void gemm_rates(int M, int N, int K, int reps, int threads, double rate[GEMM_NCAND]) {
  size_t na = (size_t)M * K, nw = (size_t)N * K, nc = (size_t)M * N;
  float *a = malloc(na * sizeof *a), *w = malloc(nw * sizeof *w), *c = malloc(nc * sizeof *c);
  fc_rng_t r;
  fc_rng_seed(&r, 7);
  for (size_t i = 0; i < na; i++) a[i] = (float)fc_rng_uniform(&r) - 0.5f;
  for (size_t i = 0; i < nw; i++) w[i] = 0.04f * ((float)fc_rng_uniform(&r) - 0.5f);
  memset(rate, 0, GEMM_NCAND * sizeof *rate);
  double best = 1e30;
  for (int i = 0; i < reps + 1; i++) {
    double t0 = fc_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, w, K, 0.0f, c, N);
    double dt = fc_now() - t0;
    if (i && dt < best) best = dt;
  }
  rate[GEMM_OPENBLAS] = 2.0 * M * N * K / best / 1e9;
  uint16_t *wb = malloc(nw * sizeof *wb);
  for (size_t i = 0; i < nw; i++) wb[i] = gemm_to_bf16(w[i]);
  float *panel = malloc(FC_WLIN_PANEL_FLOATS * sizeof *panel);
  for (int g = 0; g < FC_WGEMM_N; g++) {
    if (!fc_wgemm_available((fc_wgemm_t)g)) continue;
    best = 1e30;
    for (int i = 0; i < reps + 1; i++) {
      double t0 = fc_now();
      fc_wlinear_forward(c, a, wb, FC_DT_BF16, NULL, M, K, N, 0, panel, (fc_wgemm_t)g, threads);
      double dt = fc_now() - t0;
      if (i && dt < best) best = dt;
    }
    rate[GEMM_WLIN + g] = 2.0 * M * N * K / best / 1e9;
  }
  free(panel);
#ifdef FC_HAVE_DNNL
  best = 1e30;
  for (int i = 0; i < reps + 1; i++) {
    double t0 = fc_now();
    dnnl_sgemm('N', 'T', M, N, K, 1.0f, a, K, w, K, 0.0f, c, N);
    double dt = fc_now() - t0;
    if (i && dt < best) best = dt;
  }
  rate[GEMM_DNNL_SGEMM] = 2.0 * M * N * K / best / 1e9;
  rate[GEMM_DNNL_F32] = dnnl_matmul_best(M, N, K, dnnl_f32, a, w, c, reps);
  uint16_t *ab = malloc(na * sizeof *ab);
  for (size_t i = 0; i < na; i++) ab[i] = gemm_to_bf16(a[i]);
  rate[GEMM_DNNL_BF16] = dnnl_matmul_best(M, N, K, dnnl_bf16, ab, wb, c, reps);
  free(ab);
#endif
  free(a), free(w), free(c), free(wb);
}

#endif
