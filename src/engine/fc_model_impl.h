/* Inside the model engine: the parameter/activation layout shared by fc_model.c (batched
 * forward, backward) and fc_generate.c (KV-cached decoding). Not a public header. */
#ifndef FC_MODEL_IMPL_H
#define FC_MODEL_IMPL_H

#include "fc_model.h"

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
  float *att;    /* (Ls, B, NH, T, T) softmax probabilities, zero where masked (future, out of window) */
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
  float *grads;  /* (nparams), NULL until the first backward */
  fc_weights_t w, gw;
  int threads;
  /* RoPE tables (rope_len, HD/2), grown on demand. */
  float *rope_cos, *rope_sin;
  int rope_len;
  /* Activations for the last forward. */
  fc_acts_t acts;
  float *acts_mem;
  size_t acts_cap; /* floats allocated */
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
};

/* Makes sure the RoPE tables cover positions [0, n). */
void fc_model_rope_reserve(fc_model_t *m, int n);

#endif
