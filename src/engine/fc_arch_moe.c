/* Mixtral's sparse mixture-of-experts MLP, forward only. The router picks experts per token;
 * tokens are then regrouped by expert so that each expert runs its tokens as one batch: one
 * GEMM per expert weight rather than per token, then a weighted scatter-add back. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fc_arch.h"
#include "fc_ops.h"

/* Row-major f32 scratch carved into slices (ints share the buffer: same size as a float). */
static void *carve(float *base, size_t *off, size_t n) {
  void *p = base + *off;
  *off += (n + 15) & ~(size_t)15;
  return p;
}

/* Router for one token: probabilities over all E experts (softmax in f32), the k largest
 * (ties: lower expert first), renormalised to sum to 1, as Hugging Face's MixtralSparseMoeBlock
 * computes them (mathematically the softmax over the chosen logits). */
static void route(const float *logit, int E, int k, int32_t *sel, float *wt, float *prob) {
  float mx = logit[0], sum = 0.0f;
  for (int e = 1; e < E; e++) mx = logit[e] > mx ? logit[e] : mx;
  for (int e = 0; e < E; e++) sum += prob[e] = expf(logit[e] - mx);
  for (int e = 0; e < E; e++) prob[e] /= sum;
  float chosen = 0.0f;
  for (int j = 0; j < k; j++) {
    int best = -1;
    for (int e = 0; e < E; e++) {
      int taken = 0;
      for (int i = 0; i < j; i++) taken |= sel[i] == e;
      if (!taken && (best < 0 || prob[e] > prob[best])) best = e;
    }
    sel[j] = best;
    wt[j] = prob[best];
    chosen += prob[best];
  }
  for (int j = 0; j < k; j++) wt[j] /= chosen;
}

void fc_arch_moe_forward(float *x, const float *h, const fc_moe_w_t *w, const fc_config_t *c, int N,
                         float **scratch, size_t *cap) {
  int C = c->hidden_size, F = c->intermediate_size, E = c->num_experts, k = c->experts_per_tok;
  size_t NK = (size_t)N * k;
  size_t need = 0, sizes[] = {(size_t)N * E, NK, NK, (size_t)E, (size_t)E + 1, NK, NK, NK * C, NK * F, NK * F,
                              NK * C};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) need += (sizes[i] + 15) & ~(size_t)15;
  if (need > *cap) {
    free(*scratch);
    *scratch = fc_xmalloc(need * sizeof(float));
    *cap = need;
  }
  size_t off = 0;
  float *logits = carve(*scratch, &off, sizes[0]);
  int32_t *sel = carve(*scratch, &off, NK);
  float *wt = carve(*scratch, &off, NK);
  float *prob = carve(*scratch, &off, (size_t)E);
  int32_t *start = carve(*scratch, &off, (size_t)E + 1);
  int32_t *row_tok = carve(*scratch, &off, NK);
  float *row_wt = carve(*scratch, &off, NK);
  float *xe = carve(*scratch, &off, NK * C), *g = carve(*scratch, &off, NK * F);
  float *u = carve(*scratch, &off, NK * F), *o = carve(*scratch, &off, NK * C);

  fc_linear_forward(logits, h, w->router, NULL, N, C, E, 0);
  for (int i = 0; i < N; i++) route(logits + (size_t)i * E, E, k, sel + (size_t)i * k, wt + (size_t)i * k, prob);
  /* Rows grouped by expert, tokens in order within each: start[e] .. start[e+1]. */
  memset(start, 0, ((size_t)E + 1) * sizeof(int32_t));
  for (size_t r = 0; r < NK; r++) start[sel[r] + 1]++;
  for (int e = 0; e < E; e++) start[e + 1] += start[e];
  int32_t *fill = (int32_t *)prob; /* E ints: the router is done with prob */
  for (int e = 0; e < E; e++) fill[e] = start[e];
  for (size_t r = 0; r < NK; r++) {
    int32_t pos = fill[sel[r]]++;
    row_tok[pos] = (int32_t)(r / (size_t)k);
    row_wt[pos] = wt[r];
    memcpy(xe + (size_t)pos * C, h + (r / (size_t)k) * C, (size_t)C * sizeof(float));
  }
  for (int e = 0; e < E; e++) {
    int n = start[e + 1] - start[e];
    if (!n) continue;
    size_t r0 = (size_t)start[e];
    fc_linear_forward(g + r0 * F, xe + r0 * C, w->w1[e], NULL, n, C, F, 0);
    fc_linear_forward(u + r0 * F, xe + r0 * C, w->w3[e], NULL, n, C, F, 0);
    fc_swiglu_forward(g + r0 * F, g + r0 * F, u + r0 * F, (size_t)n * F);
    fc_linear_forward(o + r0 * C, g + r0 * F, w->w2[e], NULL, n, F, C, 0);
  }
  for (size_t pos = 0; pos < NK; pos++) {
    float *xr = x + (size_t)row_tok[pos] * C;
    const float *orow = o + pos * C;
    float a = row_wt[pos];
    for (int j = 0; j < C; j++) xr[j] += a * orow[j];
  }
}
