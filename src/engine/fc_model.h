/* The Llama-family transformer (llama, mistral, qwen2) in f32: parameters, gradients and
 * activations in flat buffers (llm.c style), batched full-sequence forward and backward
 * through cblas_sgemm, top-K next-token distributions. Generation lives in fc_generate.h.
 * Attention is causal; on the layers the config windows (Mistral sliding_window, Qwen2
 * use_sliding_window: fc_config_layer_window) position i sees only the last W positions,
 * i - W < j <= i, as Hugging Face does, in forward, backward and cached decoding alike.
 *
 * The training engine (fc_train.h) and the logits stage use this interface; the buffers'
 * layout is the implementation's (fc_model_impl.h). */
#ifndef FC_MODEL_H
#define FC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "fc_config.h"
#include "fc_loss.h"
#include "fc_st.h"
#include "fc_util.h"

typedef struct fc_model fc_model_t;
typedef void (*fc_grad_ready_fn)(void *ctx, size_t lo, size_t hi);

/* One named parameter tensor inside the flat parameter buffer, in Hugging Face naming
 * ("model.layers.0.self_attn.q_proj.weight", ...), so saving and loading are name-for-name. */
typedef struct fc_param_info {
  const char *name;
  int ndim;
  int64_t shape[2];
  size_t offset; /* in floats, into fc_model_params() and fc_model_grads() */
  size_t numel;
} fc_param_info_t;

/* Loads config.json + safetensors (f32, f16, bf16; converted once to an f32 copy) from a model dir:
 * the model for training (fc_model_params are its f32 master weights). */
int fc_model_load(fc_model_t **out, const char *dir, fc_err_t *err);
/* The same model for inference only, its weights used in place: the safetensors stay mapped
 * and the matrices are the file's bytes, f32 as they are (results bit-identical to
 * fc_model_load's), bf16/f16 widened to f32 a panel at a time inside each product (results
 * within f32 rounding of fc_model_load's: the products' blocking differs). Norms and biases
 * are f32 (converted when the file's are not). A file mixing matrix dtypes gets f32 copies of
 * the matrices that are not f32. The source families (fc_arch.h) load as fc_model_load does.
 * Forward, fc_model_forward_topk and generation work; training, gradients, params and
 * saving are refused (FC_EUNSUPPORTED, or an assert for the pointer getters). */
int fc_model_load_mapped(fc_model_t **out, const char *dir, fc_err_t *err);
/* Whether m's weights are used in place, and the dtype its matrices are used in. */
int fc_model_in_place(const fc_model_t *m);
fc_dtype_t fc_model_weight_dtype(const fc_model_t *m);
/* A new model with normal(0, initializer_range) weights (norms 1, biases 0), seeded. */
int fc_model_init(fc_model_t **out, const fc_config_t *cfg, uint64_t seed, fc_err_t *err);
void fc_model_destroy(fc_model_t **m);
const fc_config_t *fc_model_config(const fc_model_t *m);

/* The f32 parameters; NULL for a model whose weights are used in place. */
float *fc_model_params(fc_model_t *m);
size_t fc_model_num_params(const fc_model_t *m);
size_t fc_model_num_tensors(const fc_model_t *m);
const fc_param_info_t *fc_model_tensor(const fc_model_t *m, size_t i);
const fc_param_info_t *fc_model_find_tensor(const fc_model_t *m, const char *name);

/* Forward over a batch of B rows of T token ids (row-major (B,T)); right padding is harmless
 * (attention is causal, padded positions are excluded by the loss). Activations are kept for
 * fc_model_backward when `train` is non-zero. Returns logits (B,T,V), valid until the next
 * forward. Threads: OpenBLAS's (FUSECHAT_THREADS or fc_model_set_threads). */
const float *fc_model_forward(fc_model_t *m, const int32_t *ids, int B, int T, int train,
                              fc_err_t *err);
/* Gradients: zero them, then backward from dlogits (B,T,V) of the last training forward,
 * accumulating into fc_model_grads() (so gradient accumulation is repeated backward calls). */
void fc_model_zero_grad(fc_model_t *m);
int fc_model_backward(fc_model_t *m, const float *dlogits, fc_err_t *err);
float *fc_model_grads(fc_model_t *m);
void fc_model_set_threads(fc_model_t *m, int threads);

/* Top-K of log-softmax(logits) per position, by descending log-prob (partial selection). */
void fc_topk_logprobs(const float *logits, int V, int K, int32_t *ids, float *logprobs);

/* ---- the logits stage's forward pass, top-K selection and saving ---- */

/* Inference forward for the logits stage without the (B,T,V) logits: the LM head runs over
 * chunks of rows, and each position keeps its top-K (top_ids, top_lp: (B,T,K), descending) and,
 * when targets (B,T) is given, target_lp (B,T) = log-prob of targets[i] (NAN when the target is
 * outside the vocabulary, e.g. -1 for "none"). K may be 0. */
int fc_model_forward_topk(fc_model_t *m, const int32_t *ids, int B, int T, int K, const int32_t *targets,
                          int32_t *top_ids, float *top_lp, float *target_lp, fc_err_t *err);
/* fc_topk_logprobs given the row's log-sum-exp (for callers that already have it). */
void fc_topk_select(const float *logits, int V, int K, int32_t *ids, float *logprobs, float lse);

/* Training forward, loss and backward in one call, never holding (B,T,V) logits: the trunk
 * runs forward, then the LM head, log-softmax, the loss of fc_loss.h (gold CE, and the fusion
 * CE when fused != NULL) and the head's backward go chunk by chunk over positions (the logits
 * of a chunk become its gradient in place), then the trunk's backward. Gradients accumulate
 * into fc_model_grads() as fc_model_backward does; *loss and stats are what
 * fc_loss_forward_backward returns for the batch. */
int fc_model_loss_backward(fc_model_t *m, const int32_t *ids, int B, int T, const int32_t *targets,
                           const fc_fused_targets_t *fused, float lambda, double norm, fc_loss_stats_t *stats,
                           double *loss, fc_err_t *err);
/* Per-layer activation checkpointing for training: forward keeps only each layer's input and
 * backward recomputes the layer (about a third more compute, activations / ~13 at Qwen shapes).
 * Off by default. */
void fc_model_set_checkpointing(fc_model_t *m, int on);

/* Called during a backward (fc_model_loss_backward, fc_model_backward) as soon as the
 * gradients of parameters [lo, hi) (float offsets into fc_model_params/grads) are final: each
 * layer's tensors as their backward ends (last layer first), then the embedding's, then the final
 * norm's (and an untied head's); every parameter exactly once per backward. An optimizer can
 * step each range at once and fc_model_release_grads it, so whole-model gradients are never
 * resident. fc_model_loss_backward first hands over the head's gradient panel by panel of
 * vocabulary rows, before the layers (it is then formed a panel at a time, never whole); the
 * rows of a tied embedding that the batch's tokens also reach come last, after the embedding's
 * gradient is added to them. So at most one tensor's gradient, one head panel's and those rows
 * are held. Only meaningful without gradient accumulation over several backwards. NULL turns it
 * off. */
void fc_model_set_grad_ready(fc_model_t *m, fc_grad_ready_fn fn, void *ctx);
/* Zeroes gradients [lo, hi) and gives their whole pages back to the system (they return as
 * zero pages when next written): the next backward finds them zero, as after zero_grad. */
void fc_model_release_grads(fc_model_t *m, size_t lo, size_t hi);

/* Writes config.json + model.safetensors (dtype F32, F16 or BF16) atomically into dir. */
int fc_model_save(const fc_model_t *m, const char *dir, fc_dtype_t dtype, fc_err_t *err);

#endif
