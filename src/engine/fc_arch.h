/* The source families beyond the Llama engine: mixtral (sparse mixture of experts), internlm2,
 * gemma, gemma2 and phi3, forward-only (a source needs top-K, never a backward: targets are the
 * pivot's Llama-family architecture). Their tensors keep their Hugging Face names and packing
 * (internlm2's grouped wqkv, phi3's qkv_proj and gate_up_proj), so fc_model.c loads, inits and
 * saves them with its generic code through fc_arch_layout; fc_model.c's forward entry points
 * hand these models over to fc_arch_forward / fc_arch_forward_topk. Not a public header. */
#ifndef FC_ARCH_H
#define FC_ARCH_H

#include "fc_model_impl.h"

/* 1 when the config's family is run by this module rather than the Llama engine. */
int fc_arch_handles(const fc_config_t *c);
/* The family's tensors in storage order: fills info[] (names malloc'ed) when info is non-NULL,
 * returns how many and sets *nparams to their total size in floats. */
size_t fc_arch_layout(const fc_config_t *c, fc_param_info_t *info, size_t *nparams);

/* As fc_model_forward (inference only: train must be 0) and fc_model_forward_topk. */
const float *fc_arch_forward(fc_model_t *m, const int32_t *ids, int B, int T, int train, fc_err_t *err);
int fc_arch_forward_topk(fc_model_t *m, const int32_t *ids, int B, int T, int K, const int32_t *targets,
                         int32_t *top_ids, float *top_lp, float *target_lp, fc_err_t *err);
/* Frees the module's per-model state (m->arch). */
void fc_arch_free(fc_model_t *m);

/* ---- inside the module (fc_arch.c, fc_arch_moe.c) ---- */

/* The mixture-of-experts MLP of one layer, added into x: for each of N rows of h (N,C) the
 * router picks experts_per_tok experts, their weights the softmax over the chosen router
 * logits (Hugging Face: softmax over all, top-k, renormalised); every expert runs its rows as
 * one batch (gather, SwiGLU GEMMs, weighted scatter-add). router (E,C); w1, w3 [E] (F,C);
 * w2 [E] (C,F). scratch grows as needed (*cap floats). */
typedef struct fc_moe_w {
  const float *router;
  const float *const *w1, *const *w2, *const *w3;
} fc_moe_w_t;
void fc_arch_moe_forward(float *x, const float *h, const fc_moe_w_t *w, const fc_config_t *c, int N,
                         float **scratch, size_t *cap);

#endif
