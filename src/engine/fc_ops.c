/* Transformer kernels: linear layers through cblas_sgemm, RMSNorm, rotary embedding, SwiGLU,
 * each with its backward. */
#include "fc_ops.h"

/* Lets the compiler turn the clamps below into selects (comparisons cannot trap here), so the
 * loops vectorize; results are unchanged. */
#pragma GCC optimize("no-trapping-math")

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The element-wise loops are built twice, for AVX2 and for any x86-64 (chosen at load time).
 * They stay on one thread: OpenMP teams spinning beside OpenBLAS's own threads on the same
 * cores cost more than the loops (measured on 2 cores). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FC_VEC __attribute__((target_clones("avx2", "default")))
#else
#define FC_VEC
#endif
#define FC_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
#define FC_SIMD FC_PRAGMA(omp simd)
#define FC_SIMD_SUM(v) FC_PRAGMA(omp simd reduction(+ : v))
#define FC_SIMD_MAX(v) FC_PRAGMA(omp simd reduction(max : v))
#else
#define FC_SIMD_MAX(v)
#define FC_SIMD
#define FC_SIMD_SUM(v)
#endif

/* Denormals flushed to zero inside the exp loops: the vectorized code also evaluates the
 * clamped branch for every lane (g / (1 + e^88) for SiLU), whose denormal results cost a
 * microcode assist each and made the loop 25x slower. Values below 1e-38 do not matter here. */
#if defined(__SSE__)
#include <xmmintrin.h>
#define FC_FTZ_BEGIN unsigned fc_csr_ = _mm_getcsr(); _mm_setcsr(fc_csr_ | 0x8040u)
#define FC_FTZ_END _mm_setcsr(fc_csr_)
#else
#define FC_FTZ_BEGIN
#define FC_FTZ_END
#endif

/* exp for the softmax and SiLU loops, written so the compiler vectorizes it (libm's expf is a
 * call per element): Cephes' expf polynomial (about 1 ulp on the reduced range) times 2^n
 * built in the exponent bits. Inputs are clamped to the range where 2^n is a normal float. */
static inline float fast_expf(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  float t = x * 1.44269504088896341f + 12582912.0f; /* round to nearest via 1.5 * 2^23 */
  float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float z = r * r;
  float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
             1.6666665459e-1f) * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  union {
    int32_t i;
    float f;
  } p2 = {.i = ((int32_t)n + 127) << 23};
  return y * p2.f;
}

void fc_linear_forward(float *out, const float *inp, const float *w, const float *bias, int N, int IN,
                       int OUT, int accumulate) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, inp, IN, w, IN,
              accumulate ? 1.0f : 0.0f, out, OUT);
  if (bias)
    for (int i = 0; i < N; i++) {
      float *o = out + (size_t)i * OUT;
      for (int j = 0; j < OUT; j++) o[j] += bias[j];
    }
}

void fc_linear_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                        const float *w, int N, int IN, int OUT, int accumulate_dinp) {
  if (dinp)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, OUT, 1.0f, dout, OUT, w, IN,
                accumulate_dinp ? 1.0f : 0.0f, dinp, IN);
  if (dw) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dw, IN);
  if (dbias)
    for (int i = 0; i < N; i++) {
      const float *d = dout + (size_t)i * OUT;
      for (int j = 0; j < OUT; j++) dbias[j] += d[j];
    }
}

FC_VEC void fc_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                               float eps) {
  for (int i = 0; i < N; i++) {
    const float *x = inp + (size_t)i * C;
    float *o = out + (size_t)i * C;
    float ss = 0.0f;
    FC_SIMD_SUM(ss)
    for (int j = 0; j < C; j++) ss += x[j] * x[j];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    for (int j = 0; j < C; j++) o[j] = w[j] * (x[j] * r);
    if (rstd) rstd[i] = r;
  }
}

FC_VEC void fc_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                                const float *rstd, int N, int C) {
  for (int i = 0; i < N; i++) {
    const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
    float *dx = dinp + (size_t)i * C;
    float r = rstd[i], dot = 0.0f;
    FC_SIMD_SUM(dot)
    for (int j = 0; j < C; j++) {
      dot += dy[j] * w[j] * x[j];
      dw[j] += dy[j] * x[j] * r;
    }
    /* y = w x r with r = (mean(x^2)+eps)^-1/2, so dr/dx_j = -r^3 x_j / C. */
    float c = dot * r * r / (float)C;
    FC_SIMD
    for (int j = 0; j < C; j++) dx[j] += r * (dy[j] * w[j] - x[j] * c);
  }
}

void fc_rope(float *x, int N, int T, int pos0, int nheads, int HD, const float *cos_t,
             const float *sin_t, int inverse) {
  int half = HD / 2;
  float sgn = inverse ? -1.0f : 1.0f;
  for (int i = 0; i < N; i++) {
    int pos = pos0 + i % T;
    const float *c = cos_t + (size_t)pos * half, *s = sin_t + (size_t)pos * half;
    for (int h = 0; h < nheads; h++) {
      float *v = x + ((size_t)i * nheads + h) * HD;
      for (int j = 0; j < half; j++) {
        float a = v[j], b = v[j + half], sn = sgn * s[j];
        v[j] = a * c[j] - b * sn;
        v[j + half] = b * c[j] + a * sn;
      }
    }
  }
}

FC_VEC void fc_swiglu_forward(float *h, const float *g, const float *u, size_t n) {
  FC_FTZ_BEGIN;
  FC_SIMD
  for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + fast_expf(-g[i])) * u[i];
  FC_FTZ_END;
}

FC_VEC void fc_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
  FC_FTZ_BEGIN;
  FC_SIMD
  for (size_t i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + fast_expf(-g[i]));
    du[i] = dh[i] * g[i] * s;
    dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
  FC_FTZ_END;
}

/* The softmax rows, inlined into both entry points below: with window a literal 0 `first` folds
 * to 0 and the plain causal mask compiles to the loops it always had. */
static inline __attribute__((always_inline)) void softmax_rows(float *S, int r0, int n, int ld, int window) {
  for (int i = 0; i < n; i++) {
    float *s = S + (size_t)i * ld;
    int last = r0 + i, first = window > 0 && last - window + 1 > 0 ? last - window + 1 : 0;
    for (int j = 0; j < first; j++) s[j] = 0.0f;
    float mx = s[first];
    FC_SIMD_MAX(mx)
    for (int j = first + 1; j <= last; j++) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
    FC_SIMD_SUM(sum)
    for (int j = first; j <= last; j++) {
      s[j] = fast_expf(s[j] - mx);
      sum += s[j];
    }
    float inv = 1.0f / sum;
    FC_SIMD
    for (int j = first; j <= last; j++) s[j] *= inv;
    for (int j = last + 1; j < ld; j++) s[j] = 0.0f;
  }
}

FC_VEC void fc_causal_softmax(float *S, int r0, int n, int ld, int window) {
  FC_FTZ_BEGIN;
  if (window > 0) softmax_rows(S, r0, n, ld, window);
  else softmax_rows(S, r0, n, ld, 0);
  FC_FTZ_END;
}

static inline __attribute__((always_inline)) void softmax_backward_rows(float *dS, const float *P, int r0, int n,
                                                                        int ld, int window, float scale) {
  for (int i = 0; i < n; i++) {
    const float *p = P + (size_t)i * ld;
    float *d = dS + (size_t)i * ld, dot = 0.0f;
    int last = r0 + i, first = window > 0 && last - window + 1 > 0 ? last - window + 1 : 0;
    for (int j = 0; j < first; j++) d[j] = 0.0f;
    FC_SIMD_SUM(dot)
    for (int j = first; j <= last; j++) dot += p[j] * d[j];
    FC_SIMD
    for (int j = first; j <= last; j++) d[j] = p[j] * (d[j] - dot) * scale;
    for (int j = last + 1; j < ld; j++) d[j] = 0.0f;
  }
}

FC_VEC void fc_causal_softmax_backward(float *dS, const float *P, int r0, int n, int ld, int window, float scale) {
  if (window > 0) softmax_backward_rows(dS, P, r0, n, ld, window, scale);
  else softmax_backward_rows(dS, P, r0, n, ld, 0, scale);
}

FC_VEC float fc_logsumexp(const float *x, int n) {
  float mx = x[0];
  FC_SIMD_MAX(mx)
  for (int j = 1; j < n; j++) mx = x[j] > mx ? x[j] : mx;
  FC_FTZ_BEGIN;
  float sum = 0.0f;
  FC_SIMD_SUM(sum)
  for (int j = 0; j < n; j++) sum += fast_expf(x[j] - mx);
  FC_FTZ_END;
  return mx + logf(sum);
}
