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
  float *row_mx, *row_scale; /* (N) or NULL: what fc_loss_grad_panel needs to redo the gradient */
} job_t;

/* The sparse target of position i (fused entries renormalised over the valid ones) into pk;
 * returns whether any entry is valid. Shared by the whole-row and the panel gradients so both
 * subtract the same values. */
static int sparse_target(const fc_fused_targets_t *fused, size_t i, double *pk) {
  const int K = fused->K;
  const int32_t *ids = fused->ids + i * (size_t)K;
  const float *lp = fused->logprobs + i * (size_t)K;
  double m = -INFINITY, s = 0;
  int any = 0;
  for (int k = 0; k < K; k++)
    if (ids[k] >= 0 && lp[k] > m) m = lp[k], any = 1;
  for (int k = 0; k < K; k++) {
    pk[k] = (ids[k] >= 0 && any) ? exp(lp[k] - m) : 0;
    s += pk[k];
  }
  for (int k = 0; k < K; k++)
    if (ids[k] >= 0 && any) pk[k] /= s;
  return any;
}

/* Subtracts the gold and sparse-target terms from dz, the gradient of columns [v0, v0 + n) of
 * position i, in the same order for any panel (so a column's value does not depend on where
 * the panel borders fall). */
static void subtract_targets(float *dz, int v0, int n, int32_t gold, const fc_fused_targets_t *fused, size_t i,
                             float lam, const double *pk, int any, double inv) {
  const int K = fused ? fused->K : 0;
  if (K == 0 || !any) {
    if (gold >= v0 && gold < v0 + n) dz[gold - v0] -= (float)inv; /* lambda*onehot + (1-lambda)*onehot */
    return;
  }
  const int32_t *ids = fused->ids + i * (size_t)K;
  if (gold >= v0 && gold < v0 + n) dz[gold - v0] -= (float)(lam * inv);
  for (int k = 0; k < K; k++)
    if (ids[k] >= v0 && ids[k] < v0 + n) dz[ids[k] - v0] -= (float)((1.0 - lam) * pk[k] * inv);
}

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
    any = sparse_target(j->fused, i, pk);
    double f = 0;
    for (int k = 0; k < K; k++)
      if (ids[k] >= 0 && any) f -= pk[k] * (zk[k] - lse);
    j->fu[i] = any ? f : j->ce[i];
  }
  const double inv = 1.0 / j->norm;
  const float scale = (float)(inv / sum);
  if (j->row_mx && j->row_scale) j->row_mx[i] = mx, j->row_scale[i] = scale;
  if (!dz) return;
  for (int v = 0; v < V; v++) dz[v] *= scale;
  subtract_targets(dz, 0, V, gold, j->fused, i, lam, pk, any, inv);
}

static void run(void *ctx, size_t lo, size_t hi) {
  const job_t *j = ctx;
  for (size_t i = lo; i < hi; i++) position(j, i);
}

double fc_loss_forward_backward(float *dlogits, fc_loss_stats_t *stats, const float *logits,
                                const int32_t *targets, const fc_fused_targets_t *fused,
                                float lambda, int B, int T, int V, double norm) {
  return fc_loss_forward_backward_rows(dlogits, stats, logits, targets, fused, lambda, B, T, V, norm, NULL, NULL);
}

double fc_loss_forward_backward_rows(float *dlogits, fc_loss_stats_t *stats, const float *logits,
                                     const int32_t *targets, const fc_fused_targets_t *fused, float lambda, int B,
                                     int T, int V, double norm, float *row_mx, float *row_scale) {
  assert(logits && targets && B > 0 && T > 0 && V > 0 && norm > 0);
  assert(!fused || (fused->K > 0 && fused->ids && fused->logprobs));
  size_t N = (size_t)B * T;
  double *ce = fc_xmalloc(2 * N * sizeof *ce), *fu = ce + N;
  job_t job = {dlogits, logits, targets, fused, lambda, V, norm, ce, fu, row_mx, row_scale};
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

/* ------------------------------------------------------------------ by vocabulary panels */

typedef struct panel_job {
  float *dz; /* (N, n) */
  const float *row_mx, *row_scale;
  const int32_t *targets;
  const fc_fused_targets_t *fused;
  float lambda;
  int v0, n;
  double norm;
} panel_job_t;

/* The same float operations position() applies to these columns: exp(z - max) rounded to
 * float, times the row's float scale, then the target terms. */
static void panel_rows(void *ctx, size_t lo, size_t hi) {
  const panel_job_t *j = ctx;
  const int n = j->n, K = j->fused ? j->fused->K : 0;
  for (size_t i = lo; i < hi; i++) {
    float *dz = j->dz + i * (size_t)n;
    int32_t gold = j->targets[i];
    if (gold < 0) {
      for (int v = 0; v < n; v++) dz[v] = 0;
      continue;
    }
    const float mx = j->row_mx[i], scale = j->row_scale[i];
    for (int v = 0; v < n; v++) {
      float e = expf(dz[v] - mx);
      dz[v] = e * scale;
    }
    double pk[K > 0 ? K : 1];
    int any = K > 0 ? sparse_target(j->fused, i, pk) : 0;
    subtract_targets(dz, j->v0, n, gold, j->fused, i, j->fused ? j->lambda : 1.0f, pk, any, 1.0 / j->norm);
  }
}

void fc_loss_grad_panel(float *dz, const float *row_mx, const float *row_scale, const int32_t *targets,
                        const fc_fused_targets_t *fused, float lambda, size_t N, int v0, int n, double norm) {
  assert(dz && row_mx && row_scale && targets && n > 0 && norm > 0);
  panel_job_t job = {dz, row_mx, row_scale, targets, fused, lambda, v0, n, norm};
  int nt = g_threads;
  if (N * (size_t)n < 65536) nt = 1;
  fc_par_for(N, 0, nt, panel_rows, &job);
}
