/* Transformer kernels: linear layers through cblas_sgemm, RMSNorm, rotary embedding, SwiGLU,
 * each with its backward. */
#include "fc_ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

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
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dw, IN);
  if (dbias)
    for (int i = 0; i < N; i++) {
      const float *d = dout + (size_t)i * OUT;
      for (int j = 0; j < OUT; j++) dbias[j] += d[j];
    }
}

void fc_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                        float eps) {
  for (int i = 0; i < N; i++) {
    const float *x = inp + (size_t)i * C;
    float *o = out + (size_t)i * C;
    float ss = 0.0f;
    for (int j = 0; j < C; j++) ss += x[j] * x[j];
    float r = 1.0f / sqrtf(ss / (float)C + eps);
    for (int j = 0; j < C; j++) o[j] = w[j] * (x[j] * r);
    if (rstd) rstd[i] = r;
  }
}

void fc_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                         const float *rstd, int N, int C) {
  for (int i = 0; i < N; i++) {
    const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
    float *dx = dinp + (size_t)i * C;
    float r = rstd[i], dot = 0.0f;
    for (int j = 0; j < C; j++) {
      dot += dy[j] * w[j] * x[j];
      dw[j] += dy[j] * x[j] * r;
    }
    /* y = w x r with r = (mean(x^2)+eps)^-1/2, so dr/dx_j = -r^3 x_j / C. */
    float c = dot * r * r / (float)C;
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

void fc_swiglu_forward(float *h, const float *g, const float *u, size_t n) {
  for (size_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void fc_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + expf(-g[i]));
    du[i] = dh[i] * g[i] * s;
    dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

void fc_causal_softmax(float *S, int r0, int n, int ld) {
  for (int i = 0; i < n; i++) {
    float *s = S + (size_t)i * ld;
    int last = r0 + i;
    float mx = s[0];
    for (int j = 1; j <= last; j++) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j <= last; j++) {
      s[j] = expf(s[j] - mx);
      sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j <= last; j++) s[j] *= inv;
    for (int j = last + 1; j < ld; j++) s[j] = 0.0f;
  }
}
