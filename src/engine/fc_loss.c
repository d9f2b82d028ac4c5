/* Gold cross-entropy and sparse-target fusion loss with their logit gradients, one pass over
 * each position's |V| logits for the log-sum-exp and one to write the gradient. */
#include "fc_loss.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "fc_par.h"
#include "fc_util.h"

static int g_threads = 1;

void fc_loss_set_threads(int threads) { g_threads = threads < 1 ? 1 : threads; }

long fc_loss_count(const int32_t *targets, size_t n) {
  long c = 0;
  for (size_t i = 0; i < n; i++) c += targets[i] >= 0;
  return c;
}

typedef struct job {
  float *dlogits;
  const float *logits;
  const int32_t *targets;
  const fc_fused_targets_t *fused;
  float lambda;
  int V;
  double norm;
  double *ce, *fu; /* (N) per-position losses, summed in order afterwards */
} job_t;

/* One position: returns through ce/fu; writes its dlogits row. Every logit the loss needs is
 * read before the row is written, so dlogits may be the logits themselves (the chunked output
 * layer turns each chunk of logits into its gradient in place). */
static void position(const job_t *j, size_t i) {
  const int V = j->V;
  const float *z = j->logits + i * (size_t)V;
  float *dz = j->dlogits ? j->dlogits + i * (size_t)V : NULL;
  int32_t gold = j->targets[i];
  j->ce[i] = 0;
  j->fu[i] = 0;
  if (gold < 0) {
    if (dz)
      for (int v = 0; v < V; v++) dz[v] = 0;
    return;
  }
  assert(gold < V);
  const int K = j->fused ? j->fused->K : 0;
  const int32_t *ids = K > 0 ? j->fused->ids + i * (size_t)K : NULL;
  float zg = z[gold], zk[K > 0 ? K : 1];
  for (int k = 0; k < K; k++) {
    assert(ids[k] < V);
    zk[k] = ids[k] >= 0 ? z[ids[k]] : 0;
  }
  float mx = z[0];
  for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
  double sum = 0;
  if (dz) /* keep the exponentials: the gradient is them, scaled */
    for (int v = 0; v < V; v++) sum += (dz[v] = expf(z[v] - mx));
  else
    for (int v = 0; v < V; v++) sum += expf(z[v] - mx);
  double lse = mx + log(sum);
  j->ce[i] = lse - zg;

  /* the sparse target: renormalised over valid entries, or one-hot on gold when none */
  float lam = j->fused ? j->lambda : 1.0f;
  double pk[K > 0 ? K : 1];
  int any = 0;
  if (K > 0) {
    const float *lp = j->fused->logprobs + i * (size_t)K;
    double m = -INFINITY, s = 0;
    for (int k = 0; k < K; k++)
      if (ids[k] >= 0 && lp[k] > m) m = lp[k], any = 1;
    for (int k = 0; k < K; k++) {
      pk[k] = (ids[k] >= 0 && any) ? exp(lp[k] - m) : 0;
      s += pk[k];
    }
    double f = 0;
    for (int k = 0; k < K; k++)
      if (ids[k] >= 0 && any) {
        pk[k] /= s;
        f -= pk[k] * (zk[k] - lse);
      }
    j->fu[i] = any ? f : j->ce[i];
  }
  if (!dz) return;
  const double inv = 1.0 / j->norm;
  const float scale = (float)(inv / sum);
  for (int v = 0; v < V; v++) dz[v] *= scale;
  if (K == 0 || !any) {
    dz[gold] -= (float)inv; /* lambda*onehot + (1-lambda)*onehot */
    return;
  }
  dz[gold] -= (float)(lam * inv);
  for (int k = 0; k < K; k++)
    if (ids[k] >= 0) dz[ids[k]] -= (float)((1.0 - lam) * pk[k] * inv);
}

static void run(void *ctx, size_t lo, size_t hi) {
  const job_t *j = ctx;
  for (size_t i = lo; i < hi; i++) position(j, i);
}

double fc_loss_forward_backward(float *dlogits, fc_loss_stats_t *stats, const float *logits,
                                const int32_t *targets, const fc_fused_targets_t *fused,
                                float lambda, int B, int T, int V, double norm) {
  assert(logits && targets && B > 0 && T > 0 && V > 0 && norm > 0);
  assert(!fused || (fused->K > 0 && fused->ids && fused->logprobs));
  size_t N = (size_t)B * T;
  double *ce = fc_xmalloc(2 * N * sizeof *ce), *fu = ce + N;
  job_t job = {dlogits, logits, targets, fused, lambda, V, norm, ce, fu};
  int nt = g_threads;
  if (N * (size_t)V < 65536) nt = 1;
  fc_par_for(N, 0, nt, run, &job);
  double sce = 0, sfu = 0;
  long counted = 0;
  for (size_t i = 0; i < N; i++)
    if (targets[i] >= 0) {
      sce += ce[i];
      sfu += fu[i];
      counted++;
    }
  free(ce);
  sce /= norm;
  sfu /= norm;
  if (stats) {
    stats->ce = sce;
    stats->fusion = fused ? sfu : 0;
    stats->counted = counted;
  }
  return fused ? lambda * sce + (1.0 - lambda) * sfu : sce;
}
