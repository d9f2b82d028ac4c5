/* mergekit's arcee_fusion: a base and one model; each element's importance is |model - base|
 * times the KL divergence between the softmaxes of its row (the last dimension) in the model
 * and in the base, and the model's value is taken where the importance reaches the tensor's
 * median + 1.5 interquartile ranges (elsewhere the base's). mergekit estimates the quartiles
 * from a random sample of a million elements on larger tensors; here they are exact (the same
 * below a million elements). */
#include "fc_merge_impl.h"

#include "fc_par.h"

#define FUSION_EPS 1e-8 /* added to both softmaxes, as mergekit's */

/* Rows [chunk * per, ...) of the tensor: the KL divergence of each row's softmaxes (f64, cast
 * to f32 as mergekit's tensor), times each element's |difference|, into J->imp. */
static void fusion_rows(job_t *J, int chunk, scratch_t *s, void *arg) {
  (void)s;
  const size_t L = J->arow, nrows = J->n / L, per = *(const size_t *)arg;
  const size_t r0 = (size_t)chunk * per, r1 = r0 + per < nrows ? r0 + per : nrows;
  float *xb = fc_xmalloc(2 * L * sizeof *xb), *xm = xb + L;
  double *eb = fc_xmalloc(2 * L * sizeof *eb), *em = eb + L;
  for (size_t r = r0; r < r1; r++) {
    load_f32(J->base, r * L, L, xb);
    load_f32(J->models[0], r * L, L, xm);
    float mb = xb[0], mm = xm[0];
    for (size_t j = 1; j < L; j++) {
      mb = xb[j] > mb ? xb[j] : mb;
      mm = xm[j] > mm ? xm[j] : mm;
    }
    double sb = 0, sm = 0;
    for (size_t j = 0; j < L; j++) {
      eb[j] = exp((double)xb[j] - mb);
      em[j] = exp((double)xm[j] - mm);
      sb += eb[j];
      sm += em[j];
    }
    double kl = 0;
    for (size_t j = 0; j < L; j++) {
      const double p = em[j] / sm + FUSION_EPS, q = eb[j] / sb + FUSION_EPS;
      kl += p * log(p / q);
    }
    const float k32 = (float)kl;
    float *imp = J->imp + r * L;
    for (size_t j = 0; j < L; j++) imp[j] = fabsf(xm[j] - xb[j]) * k32;
  }
  free(xb);
  free(eb);
}

/* Order-preserving keys of floats (negative ones below positive ones) and back. */
static inline uint32_t fkey(float f) {
  const uint32_t u = f2u(f);
  return u & 0x80000000u ? ~u : u | 0x80000000u;
}
static inline float unkey(uint32_t k) {
  const uint32_t u = k & 0x80000000u ? k & 0x7fffffffu : ~k;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* The values of ascending ranks rk[0..3) of x[n]: a radix select on the keys' two halves. */
static void select3(const float *x, size_t n, const int64_t rk[3], float out[3]) {
  uint32_t *h = fc_xcalloc(NBIN, sizeof *h);
  for (size_t j = 0; j < n; j++) h[fkey(x[j]) >> 16]++;
  uint32_t bin[3];
  int64_t within[3];
  for (int t = 0; t < 3; t++) {
    int64_t acc = 0;
    uint32_t b = 0;
    while (acc + h[b] <= rk[t]) acc += h[b++];
    bin[t] = b;
    within[t] = rk[t] - acc;
  }
  for (int t = 0; t < 3; t++) {
    memset(h, 0, NBIN * sizeof *h);
    for (size_t j = 0; j < n; j++) {
      const uint32_t k = fkey(x[j]);
      if (k >> 16 == bin[t]) h[k & 0xffffu]++;
    }
    int64_t acc = 0;
    uint32_t lo = 0;
    while (acc + h[lo] <= within[t]) acc += h[lo++];
    out[t] = unkey(bin[t] << 16 | lo);
  }
  free(h);
}

void fc_merge_fusion_prepare(job_t *J, int threads) {
  J->imp = fc_xmalloc(J->n * sizeof *J->imp);
  const size_t nrows = J->n / J->arow;
  const int nch = nrows < (size_t)threads * 8 ? (int)nrows : threads * 8;
  size_t per = (nrows + (size_t)nch - 1) / (size_t)nch;
  fc_merge_each(J, nch, threads, fusion_rows, &per);
  /* mergekit's quantile positions: long(q * (n - 1)) in f32. */
  const float qs[3] = {0.25f, 0.5f, 0.75f}, nf = (float)(J->n - 1);
  int64_t rk[3];
  for (int t = 0; t < 3; t++) rk[t] = (int64_t)(qs[t] * nf);
  float v[3];
  select3(J->imp, J->n, rk, v);
  J->s0 = v[1] + 1.5f * (v[2] - v[0]);
}
