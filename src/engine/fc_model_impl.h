/* Inside the model engine: the parameter/activation layout shared by fc_model.c (batched
 * forward, backward) and fc_generate.c (KV-cached decoding). Not a public header. */
#ifndef FC_MODEL_IMPL_H
#define FC_MODEL_IMPL_H

#include "fc_model.h"
#include "fc_wlin.h"

/* Pointers into the flat parameter (or gradient) buffer; biases are NULL when absent.
 * QD = NH*HD, KVD = NKV*HD. */
typedef struct fc_layer_w {
  float *ln1;      /* (C) input_layernorm */
  float *wq, *bq;  /* (QD, C), (QD) */
  float *wk, *bk;  /* (KVD, C), (KVD) */
  float *wv, *bv;  /* (KVD, C), (KVD) */
  float *wo, *bo;  /* (C, QD), (C) */
  float *ln2;      /* (C) post_attention_layernorm */
  float *wg, *bg;  /* (F, C), (F) gate_proj */
  float *wu, *bu;  /* (F, C), (F) up_proj */
  float *wd, *bd;  /* (C, F), (C) down_proj */
} fc_layer_w_t;

typedef struct fc_weights {
  float *embed;        /* (V, C) */
  fc_layer_w_t *layer; /* [L] */
  float *lnf;          /* (C) model.norm */
  float *head;         /* (V, C): lm_head, or embed when tied */
} fc_weights_t;

/* Activations of one forward, for B*T rows. With train, the per-layer fields (Ls) hold L
 * slices (what backward needs); without, one slice reused by every layer. ln1, ln2 and h are
 * always one slice: backward recomputes them. */
typedef struct fc_acts {
  float *x;      /* (L+1 | 1, BT, C) residual stream entering layer l ([L]: the final norm) */
  float *ln1;    /* (BT, C) */
  float *rstd1;  /* (Ls, BT) */
  float *q;      /* (Ls, BT, QD) after RoPE */
  float *k;      /* (Ls, BT, KVD) after RoPE */
  float *v;      /* (Ls, BT, KVD) */
  float *att;    /* (threads, min(T, 128), T) one block of query rows' softmax probabilities per thread,
                  zero where masked (future, out of window); backward recomputes them */
  float *atty;   /* (Ls, BT, QD) attention output, input of o_proj */
  float *xmid;   /* (Ls, BT, C) residual after attention */
  float *ln2;    /* (BT, C) */
  float *rstd2;  /* (Ls, BT) */
  float *g;      /* (Ls, BT, F) gate_proj output */
  float *u;      /* (Ls, BT, F) up_proj output */
  float *h;      /* (BT, F) silu(g) * u */
  float *lnf;    /* (BT, C) */
  float *rstdf;  /* (BT) */
  float *logits; /* (BT, V) */
} fc_acts_t;

/* Scratch for backward, allocated on first use for the same B*T. */
typedef struct fc_grad_acts {
  float *dx;    /* (BT, C) gradient of the residual stream */
  float *dln;   /* (BT, C) */
  float *dq;    /* (BT, QD) */
  float *dk;    /* (BT, KVD) */
  float *dv;    /* (BT, KVD) */
  float *datty; /* (BT, QD) */
  float *dh;    /* (BT, F) */
  float *dg;    /* (BT, F) */
  float *du;    /* (BT, F) */
  float *datt;  /* (threads, 2, T, T) probabilities and their gradient, per thread */
} fc_grad_acts_t;

struct fc_model {
  fc_config_t cfg;
  fc_param_info_t *info; /* [ntensors] */
  size_t ntensors, nparams;
  float *params; /* (nparams) */
  float *grads;  /* (nparams), NULL until the first backward; mmap'ed when grads_mapped */
  int grads_mapped;
  fc_grad_ready_fn grad_ready; /* fc_model_set_grad_ready */
  void *grad_ready_ctx;
  /* With grad_ready, fc_model_loss_backward hands the head's gradient over panel by panel of
   * vocabulary before the trunk's backward (head_streamed until the trunk's end); the rows a
   * tied embedding's gradient still adds to (the batch's tokens) wait for the trunk's end. */
  int head_streamed;
  uint8_t *head_wait; /* (V) 1: the row's gradient waits for the embedding's */
  fc_weights_t w, gw;
  int threads;
  int ckpt; /* activation checkpointing (fc_model_set_checkpointing) */
  /* RoPE tables (rope_len, HD/2), grown on demand. */
  float *rope_cos, *rope_sin;
  int rope_len;
  /* Activations for the last forward. */
  fc_acts_t acts;
  float *acts_mem;
  size_t acts_cap; /* floats allocated */
  size_t logits_floats; /* of acts.logits; the backward's scratch reuses them (fc_model_ga_reserve) */
  int B, T, acts_train, have_train_fwd;
  int32_t *ids; /* (B,T) ids of the last training forward */
  size_t ids_cap;
  fc_grad_acts_t ga;
  float *ga_mem;
  size_t ga_cap;
  float *scratch; /* (T, T) attention scores in inference mode */
  size_t scratch_cap;
  /* Source families run by fc_arch.c (forward only); NULL until their first forward. */
  struct fc_arch_state *arch;
  /* Weights in place (fc_model_load_mapped; inference only, params and grads stay NULL): the
   * safetensors mapping stays open and w's matrices point into it, in dtype wdt (F32, or
   * BF16/F16 then read as uint16_t through fc_model_linear); vectors are f32, mapped or
   * converted into `owned` (with any tensor the mapping cannot serve as it is). */
  fc_st_t *st;
  fc_dtype_t wdt;
  float *owned;
  float *panel; /* FC_WLIN_PANEL_FLOATS of widening scratch for 16-bit weights */
  fc_wgemm_t wgemm;
};

/* out (N,OUT) (+)= inp @ w^T + bias for one of m's weight matrices (w as found in m->w): the
 * f32 kernel (fc_linear_forward) when wdt is F32, the in-place 16-bit one otherwise. */
void fc_model_linear(fc_model_t *m, float *out, const float *inp, const float *w, const float *bias, int N, int IN,
                     int OUT, int accumulate);
/* x (n, C) = the embedding rows of ids[0..n). */
void fc_model_embed(const fc_model_t *m, float *x, const int32_t *ids, size_t n);

/* Loading (fc_model.c) shared with the in-place loader (fc_model_map.c). */
int fc_model_check_config(const fc_config_t *c, fc_err_t *err);
/* A model of cfg's tensor layout (info, ntensors, nparams); its f32 parameter buffer (and w
 * pointing into it) only with alloc. */
fc_model_t *fc_model_new_layout(const fc_config_t *cfg, int alloc);
/* Points w's fields at at[i] for tensor i (in the layout's order). */
void fc_model_layout_at(fc_model_t *m, float *const *at);
/* The file's tensor for m's tensor i into *out, its shape checked against the config's. */
int fc_model_file_tensor(const fc_model_t *m, const fc_st_t *st, size_t i, const char *dir,
                         const fc_st_tensor_t **out, fc_err_t *err);

/* Makes sure the RoPE tables cover positions [0, n). */
void fc_model_rope_reserve(fc_model_t *m, int n);

/* Shared by fc_model.c (trunk) and fc_head.c (the output layer). */
int fc_model_par_threads(const fc_model_t *m);
int fc_model_check_ids(const fc_model_t *m, const int32_t *ids, int B, int T, fc_err_t *err);
/* Everything up to the final norm: acts.lnf (BT, C); acts.logits gets head_rows rows. With train
 * the activations backward needs are kept and ids saved for the embedding's gradient. */
void fc_model_trunk_forward(fc_model_t *m, const int32_t *ids, int B, int T, int train, size_t head_rows);
/* The backward's scratch (ga) for B x T rows; with in_logits as much of it as fits in the
 * training forward's logits block (dead by the trunk's backward: fc_model_loss_backward). */
void fc_model_ga_reserve(fc_model_t *m, int B, int T, int in_logits);
/* Hands grad_ready the rows v in [v0, v1) of the head or embedding (C floats each, from float
 * offset off) whose head_wait flag is `waiting` (0 or 1), in runs of consecutive rows. */
void fc_model_ready_rows(fc_model_t *m, size_t off, int v0, int v1, int waiting);
/* Backward from ga.dln = d(final norm output) (BT, C) down to the embedding, accumulating into
 * the gradients (reserved by the caller: fc_model_grads, fc_model_ga_reserve). */
void fc_model_trunk_backward(fc_model_t *m);

/* FUSECHAT_PROFILE=1: seconds per forward/backward section, printed at exit (a bench aid for
 * single-model runs; the timers are process-wide). fc_model_prof(-1) starts a section. */
enum { PR_NORM, PR_QKV, PR_ROPE, PR_ATTN, PR_O, PR_GATEUP, PR_SWIGLU, PR_DOWN, PR_HEAD,
       PR_B_HEAD, PR_B_MLP, PR_B_O, PR_B_ATTN, PR_B_QKV, PR_B_NORM, PR_B_EMB, PR_N };
void fc_model_prof(int what);

/* The entry of a d0 x d1 tensor (d1 0: a vector) named name at offset off of the flat buffer;
 * both layouts (fc_model.c's and fc_arch.c's) describe their tensors with it. Returns numel. */
static inline size_t fc_param_info_fill(fc_param_info_t *pi, const char *name, int64_t d0, int64_t d1, size_t off) {
  size_t numel = (size_t)d0 * (size_t)(d1 ? d1 : 1);
  if (pi) {
    pi->name = fc_xstrdup(name);
    pi->ndim = d1 ? 2 : 1;
    pi->shape[0] = d0;
    pi->shape[1] = d1;
    pi->offset = off;
    pi->numel = numel;
  }
  return numel;
}

#endif
