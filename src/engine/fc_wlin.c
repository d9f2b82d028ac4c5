/* Linear layers on bf16/f16 weights used in place: panels of the weight matrix widened to f32
 * (exact: every bf16 and f16 value is an f32) then one f32 GEMM per panel; a direct kernel for
 * a few rows (decoding), where widening a panel would cost as much as the product. */
#include "fc_wlin.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "fc_util.h"

#ifdef FC_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FC_VEC __attribute__((target_clones("avx2", "default")))
#else
#define FC_VEC
#endif

/* Up to this many rows the direct kernel runs (reads each weight once, widened in registers). */
#define FEW_ROWS 4

int fc_wgemm_available(fc_wgemm_t g) {
#ifdef FC_HAVE_DNNL
  (void)g;
  return 1;
#else
  return g == FC_WGEMM_OPENBLAS;
#endif
}

const char *fc_wgemm_name(fc_wgemm_t g) {
  return g == FC_WGEMM_DNNL ? "dnnl_sgemm" : g == FC_WGEMM_DNNL_MATMUL ? "dnnl_matmul" : "openblas";
}

fc_wgemm_t fc_wgemm_default(void) {
  const char *e = getenv("FUSECHAT_WGEMM");
  for (int g = 0; e && g < FC_WGEMM_N; g++)
    if (!strcmp(e, fc_wgemm_name((fc_wgemm_t)g)) && fc_wgemm_available((fc_wgemm_t)g)) return (fc_wgemm_t)g;
  return fc_wgemm_available(FC_WGEMM_DNNL_MATMUL) ? FC_WGEMM_DNNL_MATMUL : FC_WGEMM_OPENBLAS;
}

/* IEEE half to f32 without a call per element (subnormals by the float multiply). */
static inline float f16_widen(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
  if (e == 0x1f) {
    u = s | 0x7f800000u | (m << 13);
  } else if (e) {
    u = s | ((e + 112) << 23) | (m << 13);
  } else {
    float f = (float)m * (1.0f / 16777216.0f); /* m * 2^-24 */
    memcpy(&u, &f, 4);
    u |= s;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

FC_VEC static void widen_bf16(float *out, const uint16_t *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)w[i] << 16;
    memcpy(&out[i], &u, 4);
  }
}

static void widen(float *out, const uint16_t *w, fc_dtype_t dt, size_t n) {
  if (dt == FC_DT_BF16) {
    widen_bf16(out, w, n);
  } else {
    for (size_t i = 0; i < n; i++) out[i] = f16_widen(w[i]);
  }
}

void fc_wlinear_rows(float *out, const uint16_t *w, fc_dtype_t dt, size_t r0, size_t n, size_t IN) {
  widen(out, w + r0 * IN, dt, n * IN);
}

/* out[o] for n <= FEW_ROWS input rows: one pass over w's row o, widened 16 values at a time. */
FC_VEC static void few_rows_bf16(float *out, const float *inp, const uint16_t *wr, int n, int IN, int OUT, int o,
                                 int accumulate, float b) {
  for (int r = 0; r < n; r++) {
    const float *x = inp + (size_t)r * IN;
    float acc[16] = {0};
    int k = 0;
    for (; k + 16 <= IN; k += 16)
      for (int j = 0; j < 16; j++) {
        uint32_t u = (uint32_t)wr[k + j] << 16;
        float wf;
        memcpy(&wf, &u, 4);
        acc[j] += x[k + j] * wf;
      }
    float s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    for (; k < IN; k++) {
      uint32_t u = (uint32_t)wr[k] << 16;
      float wf;
      memcpy(&wf, &u, 4);
      s += x[k] * wf;
    }
    float *y = out + (size_t)r * OUT + o;
    *y = (accumulate ? *y : 0.0f) + s + b;
  }
}

static void few_rows(float *out, const float *inp, const uint16_t *w, fc_dtype_t dt, const float *bias, int n, int IN,
                     int OUT, int accumulate, int threads) {
  (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && OUT >= 256)
#endif
  for (int o = 0; o < OUT; o++) {
    const uint16_t *wr = w + (size_t)o * IN;
    float b = bias ? bias[o] : 0.0f;
    if (dt == FC_DT_BF16) {
      few_rows_bf16(out, inp, wr, n, IN, OUT, o, accumulate, b);
    } else {
      for (int r = 0; r < n; r++) {
        const float *x = inp + (size_t)r * IN;
        float s = 0;
        for (int k = 0; k < IN; k++) s += x[k] * f16_widen(wr[k]);
        float *y = out + (size_t)r * OUT + o;
        *y = (accumulate ? *y : 0.0f) + s + b;
      }
    }
  }
}

#ifdef FC_HAVE_DNNL
/* c (M,N; row stride ldc) (+)= a (M,K) @ b^T (b: N,K) by oneDNN's f32 matmul primitive; the
 * primitives of repeated shapes come from oneDNN's primitive cache. Returns 0 when oneDNN
 * declines (the caller falls back to dnnl_sgemm). The engine and stream are made by the first
 * call; a model's products run on one thread (its forward), so that needs no lock. */
static int matmul_nt(int M, int N, int K, const float *a, const float *b, int accumulate, float *c, int ldc) {
  static dnnl_engine_t eng;
  static dnnl_stream_t st;
  static int ready; /* 1 ok, -1 failed */
  if (!ready) {
    ready = dnnl_engine_create(&eng, dnnl_cpu, 0) == dnnl_success &&
                    dnnl_stream_create(&st, eng, dnnl_stream_default_flags) == dnnl_success
                ? 1
                : -1;
  }
  if (ready < 0) return 0;
  dnnl_memory_desc_t amd, bmd, cmd;
  dnnl_dims_t ad = {M, K}, as = {K, 1}, bd = {K, N}, bs = {1, K}, cd = {M, N}, cs = {ldc, 1};
  dnnl_memory_desc_init_by_strides(&amd, 2, ad, dnnl_f32, as);
  dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dnnl_f32, bs);
  dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs);
  dnnl_matmul_desc_t md;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t p = NULL;
  int ok = 0;
  if (dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd) == dnnl_success &&
      dnnl_primitive_attr_create(&attr) == dnnl_success) {
    if (accumulate && dnnl_post_ops_create(&po) == dnnl_success) {
      dnnl_post_ops_append_sum(po, 1.0f);
      dnnl_primitive_attr_set_post_ops(attr, po);
    }
    if (dnnl_primitive_desc_create(&pd, &md, attr, eng, NULL) == dnnl_success &&
        dnnl_primitive_create(&p, pd) == dnnl_success) {
      dnnl_memory_t am, bm, cm;
      dnnl_memory_create(&am, &amd, eng, (void *)a);
      dnnl_memory_create(&bm, &bmd, eng, (void *)b);
      dnnl_memory_create(&cm, &cmd, eng, c);
      dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
      ok = dnnl_primitive_execute(p, st, 3, args) == dnnl_success && dnnl_stream_wait(st) == dnnl_success;
      dnnl_memory_destroy(am), dnnl_memory_destroy(bm), dnnl_memory_destroy(cm);
    }
  }
  if (p) dnnl_primitive_destroy(p);
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  return ok;
}
#endif

static void sgemm_nt(fc_wgemm_t g, int M, int N, int K, const float *a, const float *b, float beta, float *c,
                     int ldc) {
#ifdef FC_HAVE_DNNL
  if (g == FC_WGEMM_DNNL_MATMUL && matmul_nt(M, N, K, a, b, beta != 0.0f, c, ldc)) return;
  if (g != FC_WGEMM_OPENBLAS) {
    dnnl_sgemm('N', 'T', M, N, K, 1.0f, a, K, b, K, beta, c, ldc);
    return;
  }
#endif
  (void)g;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, beta, c, ldc);
}

void fc_wlinear_forward(float *out, const float *inp, const uint16_t *w, fc_dtype_t dt, const float *bias, int N,
                        int IN, int OUT, int accumulate, float *panel, fc_wgemm_t gemm, int threads) {
  if (threads < 1) threads = 1;
  if (N <= FEW_ROWS) {
    few_rows(out, inp, w, dt, bias, N, IN, OUT, accumulate, threads);
    return;
  }
  /* Panels of equal height (a multiple of 16 rows), each at most FC_WLIN_PANEL_FLOATS. */
  size_t most = FC_WLIN_PANEL_FLOATS / (size_t)IN, np = ((size_t)OUT + most - 1) / most;
  size_t nb = (((size_t)OUT + np - 1) / np + 15) & ~(size_t)15;
  if (nb > most) nb = most;
  for (size_t o0 = 0; o0 < (size_t)OUT; o0 += nb) {
    size_t n = (size_t)OUT - o0 < nb ? (size_t)OUT - o0 : nb, per = (n + (size_t)threads - 1) / (size_t)threads;
    (void)per;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (int t = 0; t < threads; t++) {
      size_t a = (size_t)t * per, b = a + per < n ? a + per : n;
      if (a < b) widen(panel + a * IN, w + (o0 + a) * IN, dt, (b - a) * IN);
    }
    float *c = out + o0;
    if (bias && !accumulate)
      for (int i = 0; i < N; i++) memcpy(c + (size_t)i * OUT, bias + o0, n * sizeof(float));
    else if (bias)
      for (int i = 0; i < N; i++)
        for (size_t j = 0; j < n; j++) c[(size_t)i * OUT + j] += bias[o0 + j];
    sgemm_nt(gemm, N, (int)n, IN, inp, panel, bias || accumulate ? 1.0f : 0.0f, c, OUT);
  }
}
