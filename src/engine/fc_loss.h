/* Training losses on a model's logits: token cross-entropy against the gold next token and the
 * FuseChat fusion loss against a sparse top-K target distribution, with their gradient with
 * respect to the logits written in the same pass (the only |V|-sized output per position). */
#ifndef FC_LOSS_H
#define FC_LOSS_H

#include <stddef.h>
#include <stdint.h>

/* Alignment of positions (the convention everywhere in training):
 *   logits[b,t,:] is the model's prediction for token t+1 of row b.
 *   targets[b,t]  is the gold token at t+1 when that token carries loss, else -1 (padding, the
 *                 last position of a row, prompt tokens of a conversation, ...).
 *   fused[b,t,k]  is the k-th entry of the fused *next-token* distribution at position t, the
 *                 same position logits[b,t,:] predicts (top-K stores are written this way).
 * Only positions with targets[b,t] >= 0 count, for both terms. */
typedef struct fc_fused_targets {
  int K;                   /* entries per position */
  const int32_t *ids;      /* (B,T,K) token ids; < 0 marks an empty slot */
  const float *logprobs;   /* (B,T,K) log-probabilities (any scale: renormalised over the valid
                              entries of a position, i.e. softmax at temperature 1) */
} fc_fused_targets_t;

typedef struct fc_loss_stats {
  double ce;      /* this call's share of the mean gold cross-entropy (sum / norm) */
  double fusion;  /* this call's share of the mean fusion cross-entropy (sum / norm) */
  long counted;   /* positions with a target in this call */
} fc_loss_stats_t;

/* Loss over logits (B,T,V):
 *   L = (1/norm) * sum_{counted (b,t)} [ lambda * CE(gold) + (1 - lambda) * CE(fused) ]
 * with CE(gold) = -log softmax(z)[target] and CE(fused) = -sum_k p_k log softmax(z)[id_k],
 * p = softmax over the valid entries' logprobs (repeated ids simply add up). A counted position
 * whose fused entries are all empty takes a one-hot on the gold token as its fused target.
 * fused == NULL means plain cross-entropy (lambda is then ignored and taken as 1).
 * norm is the number of counted positions of the whole batch: with gradient accumulation the
 * micro-batches' returns add up to the batch mean. Returns L; writes dlogits (B,T,V) =
 * dL/dlogits = (softmax - lambda*onehot - (1-lambda)*p) / norm at counted positions and 0
 * elsewhere (dlogits may be NULL for evaluation; it may be logits itself, overwritten in place). Log-sum-exp with max
 * subtraction, sums in double. stats may be NULL. */
double fc_loss_forward_backward(float *dlogits, fc_loss_stats_t *stats, const float *logits,
                                const int32_t *targets, const fc_fused_targets_t *fused,
                                float lambda, int B, int T, int V, double norm);

/* The same, also keeping per position what fc_loss_grad_panel needs to write any columns of the
 * gradient again from their logits: row_mx (N) the largest logit, row_scale (N) 1 / (norm * the
 * sum of exponentials), both as the whole-row pass used them (either may be NULL: neither kept). */
double fc_loss_forward_backward_rows(float *dlogits, fc_loss_stats_t *stats, const float *logits,
                                     const int32_t *targets, const fc_fused_targets_t *fused, float lambda, int B,
                                     int T, int V, double norm, float *row_mx, float *row_scale);

/* dz (N, n): the logits of vocabulary columns [v0, v0 + n) of N positions in, their gradient
 * out, bit for bit the columns fc_loss_forward_backward writes for the whole rows (given the
 * same logits and the row_mx, row_scale it kept): the head's gradient can then be formed one
 * panel of vocabulary at a time, each panel final as soon as its rows are done. targets,
 * fused, lambda and norm as there, for these N positions. */
void fc_loss_grad_panel(float *dz, const float *row_mx, const float *row_scale, const int32_t *targets,
                        const fc_fused_targets_t *fused, float lambda, size_t N, int v0, int n, double norm);

/* Positions are spread over this many threads (default 1; results do not depend on it). */
void fc_loss_set_threads(int threads);

/* Counted positions (targets >= 0) among n. */
long fc_loss_count(const int32_t *targets, size_t n);

#endif
