/* Forward-only engine for the source families (fc_arch.h): their tensors under Hugging Face
 * names, the layer stack with each family's variations, the chunked LM head with top-K.
 *   mixtral    Mistral attention, mixture-of-experts MLP (fc_arch_moe.c)
 *   internlm2  packed wqkv grouped per KV head [q x rep, k, v], wo, w1/w3/w2, optional biases,
 *              linear or dynamic-NTK RoPE scaling
 *   gemma      GeGLU, RMSNorm scaling by (1 + w), embeddings times sqrt(hidden), tied head
 *   gemma2     + norms after attention and after the MLP, attention scale query_pre_attn_scalar,
 *              tanh soft-capping of attention scores and final logits, alternating windows
 *   phi3       packed qkv_proj [q, k, v] and gate_up_proj [gate, up], partial rotary, longrope */
#include "fc_arch.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);

/* Rows of the LM head computed at a time (as fc_model_forward_topk: 128 MB of logits, >= 256). */
#define ARCH_HEAD_CHUNK_FLOATS ((size_t)32 << 20)
/* Query rows per attention block: products skip most of the masked upper triangle. */
#define ARCH_ATTN_BLOCK 128

typedef struct arch_layer {
  /* ln_in before attention; ln_mlp before the MLP; ln_post_attn, ln_post_mlp (gemma2) on the
   * attention and MLP outputs before their residual adds. */
  const float *ln_in, *ln_mlp, *ln_post_attn, *ln_post_mlp;
  const float *wq, *bq, *wk, *bk, *wv, *bv; /* separate projections */
  const float *wqkv, *bqkv;                 /* packed (internlm2, phi3) */
  const float *wo, *bo;
  const float *wg, *wu, *wd, *wgu; /* dense MLP; wgu packed [gate; up] (phi3) */
  const float *router;             /* (E, C) mixtral */
  const float **w1, **w2, **w3;    /* [E] experts */
} arch_layer_t;

typedef struct fc_arch_state {
  arch_layer_t *layer;
  const float *embed, *lnf, *head;
  float *plus1; /* gemma: every norm's (1 + w), the weights the layers use */
  float *buf;   /* activations */
  size_t cap;
  float *moe; /* mixture-of-experts scratch */
  size_t moe_cap;
  float *rope_cos, *rope_sin; /* (T, rd/2) for the last forward's T */
  float *logits;              /* (B*T, V) of fc_arch_forward, or a head chunk's of the top-K path */
  size_t logits_cap;
} arch_state_t;

static const char *const families[] = {"mixtral", "internlm2", "gemma", "gemma2", "phi3", NULL};

int fc_arch_handles(const fc_config_t *c) {
  for (const char *const *f = families; *f; f++)
    if (!strcmp(*f, c->model_type)) return 1;
  return 0;
}

static int is(const fc_config_t *c, const char *t) { return !strcmp(c->model_type, t); }

/* ---------------------------------------------------------------- tensor layout */

typedef struct walk {
  fc_param_info_t *info;
  const float *base;
  size_t off, n;
} walk_t;

static const float *put(walk_t *w, const char *name, int64_t d0, int64_t d1) {
  size_t numel = fc_param_info_fill(w->info ? &w->info[w->n] : NULL, name, d0, d1, w->off);
  const float *p = w->base ? w->base + w->off : NULL;
  w->off += numel;
  w->n++;
  return p;
}

/* One walk over the family's tensors serves the layout (info) and the weight pointers (s). */
static void walk(const fc_config_t *c, walk_t *w, arch_state_t *s) {
  int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, E = c->num_experts;
  int64_t QD = (int64_t)c->num_heads * c->head_dim, KVD = (int64_t)c->num_kv_heads * c->head_dim;
  const int ilm = is(c, "internlm2"), phi = is(c, "phi3");
  char nm[160];
  arch_layer_t dummy;
  const float *p = put(w, ilm ? "model.tok_embeddings.weight" : "model.embed_tokens.weight", V, C);
  if (s) s->embed = p;
  for (int l = 0; l < c->num_layers; l++) {
    arch_layer_t *L = s ? &s->layer[l] : &dummy;
#define T_(field, d0, d1, ...)                                      \
  do {                                                              \
    snprintf(nm, sizeof nm, "model.layers.%d.%s", l, __VA_ARGS__);  \
    L->field = put(w, nm, d0, d1);                                  \
  } while (0)
    if (ilm) {
      T_(ln_in, C, 0, "attention_norm.weight");
      T_(wqkv, QD + 2 * KVD, C, "attention.wqkv.weight");
      if (c->attention_bias) T_(bqkv, QD + 2 * KVD, 0, "attention.wqkv.bias");
      T_(wo, C, QD, "attention.wo.weight");
      if (c->o_bias) T_(bo, C, 0, "attention.wo.bias");
      T_(ln_mlp, C, 0, "ffn_norm.weight");
      T_(wg, F, C, "feed_forward.w1.weight");
      T_(wu, F, C, "feed_forward.w3.weight");
      T_(wd, C, F, "feed_forward.w2.weight");
      continue;
    }
    T_(ln_in, C, 0, "input_layernorm.weight");
    if (phi) {
      T_(wqkv, QD + 2 * KVD, C, "self_attn.qkv_proj.weight");
    } else {
      T_(wq, QD, C, "self_attn.q_proj.weight");
      if (c->attention_bias) T_(bq, QD, 0, "self_attn.q_proj.bias");
      T_(wk, KVD, C, "self_attn.k_proj.weight");
      if (c->attention_bias) T_(bk, KVD, 0, "self_attn.k_proj.bias");
      T_(wv, KVD, C, "self_attn.v_proj.weight");
      if (c->attention_bias) T_(bv, KVD, 0, "self_attn.v_proj.bias");
    }
    T_(wo, C, QD, "self_attn.o_proj.weight");
    if (c->o_bias) T_(bo, C, 0, "self_attn.o_proj.bias");
    if (is(c, "gemma2")) {
      T_(ln_post_attn, C, 0, "post_attention_layernorm.weight");
      T_(ln_mlp, C, 0, "pre_feedforward_layernorm.weight");
      T_(ln_post_mlp, C, 0, "post_feedforward_layernorm.weight");
    } else {
      T_(ln_mlp, C, 0, "post_attention_layernorm.weight");
    }
    if (E > 0) {
      T_(router, E, C, "block_sparse_moe.gate.weight");
      for (int e = 0; e < E; e++) {
        const float *a, *b, *d;
        snprintf(nm, sizeof nm, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e);
        a = put(w, nm, F, C);
        snprintf(nm, sizeof nm, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e);
        b = put(w, nm, C, F);
        snprintf(nm, sizeof nm, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e);
        d = put(w, nm, F, C);
        if (s) L->w1[e] = a, L->w2[e] = b, L->w3[e] = d;
      }
    } else if (phi) {
      T_(wgu, 2 * F, C, "mlp.gate_up_proj.weight");
      T_(wd, C, F, "mlp.down_proj.weight");
    } else {
      T_(wg, F, C, "mlp.gate_proj.weight");
      T_(wu, F, C, "mlp.up_proj.weight");
      T_(wd, C, F, "mlp.down_proj.weight");
    }
#undef T_
  }
  p = put(w, "model.norm.weight", C, 0);
  if (s) s->lnf = p;
  if (c->tie_word_embeddings) {
    if (s) s->head = s->embed;
  } else {
    p = put(w, ilm ? "output.weight" : "lm_head.weight", V, C);
    if (s) s->head = p;
  }
}

size_t fc_arch_layout(const fc_config_t *c, fc_param_info_t *info, size_t *nparams) {
  walk_t w = {info, NULL, 0, 0};
  walk(c, &w, NULL);
  if (nparams) *nparams = w.off;
  return w.n;
}

void fc_arch_free(fc_model_t *m) {
  arch_state_t *s = m->arch;
  if (!s) return;
  if (s->layer)
    for (int l = 0; l < m->cfg.num_layers; l++) {
      free(s->layer[l].w1);
      free(s->layer[l].w2);
      free(s->layer[l].w3);
    }
  free(s->layer);
  free(s->plus1);
  free(s->buf);
  free(s->moe);
  free(s->rope_cos);
  free(s->rope_sin);
  free(s->logits);
  free(s);
  m->arch = NULL;
}

/* Gemma scales by (1 + w): the layers get copies holding 1 + w, made once. */
static const float *plus1(arch_state_t *s, size_t *used, const float *w, int C) {
  if (!w) return NULL;
  float *o = s->plus1 + *used;
  for (int j = 0; j < C; j++) o[j] = 1.0f + w[j];
  *used += (size_t)C;
  return o;
}

/* The weight pointers, resolved on the first forward (after load or init filled params). */
static arch_state_t *state(fc_model_t *m) {
  if (m->arch) return m->arch;
  const fc_config_t *c = &m->cfg;
  arch_state_t *s = fc_xcalloc(1, sizeof *s);
  s->layer = fc_xcalloc((size_t)c->num_layers, sizeof *s->layer);
  for (int l = 0; l < c->num_layers && c->num_experts > 0; l++) {
    s->layer[l].w1 = fc_xcalloc((size_t)c->num_experts, sizeof(float *));
    s->layer[l].w2 = fc_xcalloc((size_t)c->num_experts, sizeof(float *));
    s->layer[l].w3 = fc_xcalloc((size_t)c->num_experts, sizeof(float *));
  }
  walk_t w = {NULL, m->params, 0, 0};
  walk(c, &w, s);
  if (!strncmp(c->model_type, "gemma", 5)) {
    size_t used = 0, C = (size_t)c->hidden_size;
    s->plus1 = fc_xmalloc((4 * (size_t)c->num_layers + 1) * C * sizeof(float));
    for (int l = 0; l < c->num_layers; l++) {
      arch_layer_t *L = &s->layer[l];
      L->ln_in = plus1(s, &used, L->ln_in, (int)C);
      L->ln_mlp = plus1(s, &used, L->ln_mlp, (int)C);
      L->ln_post_attn = plus1(s, &used, L->ln_post_attn, (int)C);
      L->ln_post_mlp = plus1(s, &used, L->ln_post_mlp, (int)C);
    }
    s->lnf = plus1(s, &used, s->lnf, (int)C);
  }
  m->arch = s;
  return s;
}

/* ---------------------------------------------------------------- RoPE */

static int rotary_dim(const fc_config_t *c) {
  return is(c, "phi3") ? (int)((float)c->head_dim * c->partial_rotary_factor) : c->head_dim;
}

/* cos/sin (T, rd/2) for this forward's length: InternLM2's dynamic NTK scaling makes the base
 * depend on it, so the tables are rebuilt per T. Angles are f32 products, as in PyTorch. */
static void rope_tables(arch_state_t *s, const fc_config_t *c, int T) {
  int rd = rotary_dim(c), half = rd / 2;
  double base = c->rope_theta;
  const int dyn = !strcmp(c->rope_scaling_type, "dynamic"), lin = !strcmp(c->rope_scaling_type, "linear");
  float f = c->rope_factor > 0 ? c->rope_factor : 1.0f;
  if (dyn && T > c->max_position_embeddings)
    base *= pow(f * T / (double)c->max_position_embeddings - (f - 1.0), (double)rd / (rd - 2));
  s->rope_cos = fc_xrealloc(s->rope_cos, (size_t)T * half * sizeof(float));
  s->rope_sin = fc_xrealloc(s->rope_sin, (size_t)T * half * sizeof(float));
  /* Phi3's longrope: short factors while the sequence fits the original length, long past it;
   * cos and sin scaled by the attention factor. */
  const int longrope = !strcmp(c->rope_scaling_type, "longrope");
  const float *ext = longrope ? (T > c->rope_original_max_pos ? c->rope_long : c->rope_short) : NULL;
  float mscale = longrope ? c->rope_attn_factor : 1.0f;
  for (int i = 0; i < half; i++) {
    float inv = 1.0f / powf((float)base, (float)(2 * i) / (float)rd);
    if (ext) inv = 1.0f / (ext[i] * powf((float)base, (float)(2 * i) / (float)rd));
    /* HF divides inv_freq by the factor; InternLM2's own code divides the positions. */
    if (lin && !is(c, "internlm2")) inv /= f;
    for (int p = 0; p < T; p++) {
      float pos = lin && is(c, "internlm2") ? (float)p / f : (float)p;
      float a = pos * inv;
      s->rope_cos[(size_t)p * half + i] = (float)cos((double)a) * mscale;
      s->rope_sin[(size_t)p * half + i] = (float)sin((double)a) * mscale;
    }
  }
}

/* Rotate-half RoPE on the first rd dims of each head; row r is at position r % T. */
static void rope_apply(const arch_state_t *s, float *x, int N, int T, int nheads, int HD, int rd) {
  int half = rd / 2;
  for (int r = 0; r < N; r++) {
    const float *cs = s->rope_cos + (size_t)(r % T) * half, *sn = s->rope_sin + (size_t)(r % T) * half;
    for (int h = 0; h < nheads; h++) {
      float *v = x + ((size_t)r * nheads + h) * HD;
      for (int j = 0; j < half; j++) {
        float a = v[j], b = v[j + half];
        v[j] = a * cs[j] - b * sn[j];
        v[j + half] = b * cs[j] + a * sn[j];
      }
    }
  }
}

/* ---------------------------------------------------------------- layer pieces */

static int n_threads(const fc_model_t *m) {
#ifdef _OPENMP
  return m->threads > 0 ? m->threads : omp_get_max_threads();
#else
  (void)m;
  return 1;
#endif
}

/* q (N,QD), k, v (N,KVD) from the packed projection out (N, QD + 2 KVD). */
static void unpack_qkv(float *q, float *k, float *v, const float *qkv, const fc_config_t *c, int N) {
  int HD = c->head_dim, NKV = c->num_kv_heads, rep = c->num_heads / NKV;
  size_t QD = (size_t)c->num_heads * HD, KVD = (size_t)NKV * HD, W = QD + 2 * KVD;
  for (int r = 0; r < N; r++) {
    const float *src = qkv + (size_t)r * W;
    float *qr = q + (size_t)r * QD, *kr = k + (size_t)r * KVD, *vr = v + (size_t)r * KVD;
    if (is(c, "phi3")) { /* [q heads | k heads | v heads] */
      memcpy(qr, src, QD * sizeof(float));
      memcpy(kr, src + QD, KVD * sizeof(float));
      memcpy(vr, src + QD + KVD, KVD * sizeof(float));
      continue;
    }
    /* internlm2: per KV group g, [q heads g*rep .. g*rep+rep-1 | k head g | v head g]. */
    for (int g = 0; g < NKV; g++) {
      const float *grp = src + (size_t)g * (rep + 2) * HD;
      memcpy(qr + (size_t)g * rep * HD, grp, (size_t)rep * HD * sizeof(float));
      memcpy(kr + (size_t)g * HD, grp + (size_t)rep * HD, (size_t)HD * sizeof(float));
      memcpy(vr + (size_t)g * HD, grp + (size_t)(rep + 1) * HD, (size_t)HD * sizeof(float));
    }
  }
}

/* cap * tanh(x / cap) over n values (gemma2's soft-capping). */
static void softcap(float *x, size_t n, float cap) {
  for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] / cap);
}

/* Causal attention per (row, head), grouped-query, with an optional window and soft cap:
 * atty (B*T, QD). P: (threads, T, T) scratch. */
static void attention(const fc_model_t *m, float *atty, const float *q, const float *k, const float *v, float *P_all,
                      int B, int T, int window) {
  const fc_config_t *c = &m->cfg;
  int NH = c->num_heads, HD = c->head_dim, rep = NH / c->num_kv_heads;
  int QD = NH * HD, KVD = c->num_kv_heads * HD;
  float scale = 1.0f / sqrtf(is(c, "gemma2") ? c->query_pre_attn_scalar : (float)HD);
  float cap = is(c, "gemma2") ? c->attn_softcap : 0.0f;
  int nthr = n_threads(m), saved = openblas_get_num_threads();
  if (nthr > 1) openblas_set_num_threads(1); /* heads in parallel, each product on one thread */
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthr) schedule(dynamic, 1) if (nthr > 1)
#endif
  for (int bh = 0; bh < B * NH; bh++) {
    int b = bh / NH, h = bh % NH;
#ifdef _OPENMP
    float *P = P_all + (size_t)omp_get_thread_num() * T * T;
#else
    float *P = P_all;
#endif
    const float *Q = q + (size_t)b * T * QD + (size_t)h * HD;
    const float *K = k + (size_t)b * T * KVD + (size_t)(h / rep) * HD;
    const float *Vv = v + (size_t)b * T * KVD + (size_t)(h / rep) * HD;
    float *Y = atty + (size_t)b * T * QD + (size_t)h * HD;
    for (int r0 = 0; r0 < T; r0 += ARCH_ATTN_BLOCK) {
      int n = T - r0 < ARCH_ATTN_BLOCK ? T - r0 : ARCH_ATTN_BLOCK;
      int c0 = window > 0 && r0 - window + 1 > 0 ? r0 - window + 1 : 0, w = r0 + n - c0;
      float *Pb = P + (size_t)r0 * T;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w, HD, scale, Q + (size_t)r0 * QD, QD,
                  K + (size_t)c0 * KVD, KVD, 0.0f, Pb + c0, T);
      if (cap > 0)
        for (int i = 0; i < n; i++) softcap(Pb + (size_t)i * T + c0, (size_t)w, cap);
      fc_causal_softmax(Pb, r0, n, T, window);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, HD, w, 1.0f, Pb + c0, T, Vv + (size_t)c0 * KVD,
                  KVD, 0.0f, Y + (size_t)r0 * QD, QD);
    }
  }
  if (nthr > 1) openblas_set_num_threads(saved);
}

/* h (N,F) = act(g) * u, rows of g and u ld apart (phi3's packed rows: ld 2F). */
static void gated(float *h, const float *g, const float *u, int N, int F, size_t ld, fc_act_t act) {
  for (int r = 0; r < N; r++) {
    const float *gr = g + (size_t)r * ld, *ur = u + (size_t)r * ld;
    float *hr = h + (size_t)r * F;
    if (act == FC_ACT_SILU) {
      fc_swiglu_forward(hr, gr, ur, (size_t)F);
    } else if (act == FC_ACT_GELU_TANH) {
      for (int j = 0; j < F; j++) {
        float x = gr[j];
        hr[j] = 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))) * ur[j];
      }
    } else {
      for (int j = 0; j < F; j++) hr[j] = 0.5f * gr[j] * (1.0f + erff(gr[j] * 0.70710678118654752f)) * ur[j];
    }
  }
}

/* ---------------------------------------------------------------- the trunk */

typedef struct acts {
  float *x, *hn, *q, *k, *v, *qkv, *atty, *o, *g, *u, *hf, *P;
} acts_t;

static void acts_reserve(fc_model_t *m, arch_state_t *s, acts_t *a, int B, int T) {
  const fc_config_t *c = &m->cfg;
  size_t BT = (size_t)B * T, C = c->hidden_size, F = c->intermediate_size;
  size_t QD = (size_t)c->num_heads * c->head_dim, KVD = (size_t)c->num_kv_heads * c->head_dim;
  int dense = c->num_experts == 0, packed = is(c, "phi3") || is(c, "internlm2");
  size_t sizes[] = {BT * C, BT * C, BT * QD, BT * KVD, BT * KVD, packed ? BT * (QD + 2 * KVD) : 0, BT * QD, BT * C,
                    dense ? BT * F * 2 : 0, dense ? BT * F : 0, dense ? BT * F : 0,
                    (size_t)n_threads(m) * T * T};
  float **ptrs[] = {&a->x, &a->hn, &a->q, &a->k, &a->v, &a->qkv, &a->atty, &a->o, &a->g, &a->u, &a->hf, &a->P};
  size_t need = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) need += (sizes[i] + 15) & ~(size_t)15;
  if (need > s->cap) {
    free(s->buf);
    s->buf = fc_xmalloc(need * sizeof(float));
    s->cap = need;
  }
  size_t off = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    *ptrs[i] = s->buf + off;
    off += (sizes[i] + 15) & ~(size_t)15;
  }
}

/* Everything up to the final norm, left in a->hn (B*T, C). */
static void trunk(fc_model_t *m, arch_state_t *s, acts_t *a, const int32_t *ids, int B, int T) {
  const fc_config_t *c = &m->cfg;
  int N = B * T, C = c->hidden_size, F = c->intermediate_size, HD = c->head_dim;
  int QD = c->num_heads * HD, KVD = c->num_kv_heads * HD;
  float eps = c->rms_norm_eps;
  acts_reserve(m, s, a, B, T);
  rope_tables(s, c, T);
  /* Gemma multiplies embeddings by sqrt(hidden) rounded to the activations' dtype. */
  float emb_scale = !strncmp(c->model_type, "gemma", 5) ? (float)sqrt((double)C) : 1.0f;
  for (int i = 0; i < N; i++) {
    const float *e = s->embed + (size_t)ids[i] * C;
    float *x = a->x + (size_t)i * C;
    for (int j = 0; j < C; j++) x[j] = e[j] * emb_scale;
  }
  for (int l = 0; l < c->num_layers; l++) {
    const arch_layer_t *L = &s->layer[l];
    fc_rmsnorm_forward(a->hn, NULL, a->x, L->ln_in, N, C, eps);
    if (L->wqkv) {
      fc_linear_forward(a->qkv, a->hn, L->wqkv, L->bqkv, N, C, QD + 2 * KVD, 0);
      unpack_qkv(a->q, a->k, a->v, a->qkv, c, N);
    } else {
      fc_linear_forward(a->q, a->hn, L->wq, L->bq, N, C, QD, 0);
      fc_linear_forward(a->k, a->hn, L->wk, L->bk, N, C, KVD, 0);
      fc_linear_forward(a->v, a->hn, L->wv, L->bv, N, C, KVD, 0);
    }
    rope_apply(s, a->q, N, T, c->num_heads, HD, rotary_dim(c));
    rope_apply(s, a->k, N, T, c->num_kv_heads, HD, rotary_dim(c));
    attention(m, a->atty, a->q, a->k, a->v, a->P, B, T, fc_config_layer_window(c, l));
    if (L->ln_post_attn) {
      fc_linear_forward(a->o, a->atty, L->wo, L->bo, N, QD, C, 0);
      fc_rmsnorm_forward(a->o, NULL, a->o, L->ln_post_attn, N, C, eps);
      for (size_t i = 0; i < (size_t)N * C; i++) a->x[i] += a->o[i];
    } else {
      fc_linear_forward(a->x, a->atty, L->wo, L->bo, N, QD, C, 1);
    }
    fc_rmsnorm_forward(a->hn, NULL, a->x, L->ln_mlp, N, C, eps);
    if (c->num_experts > 0) {
      fc_moe_w_t mw = {L->router, L->w1, L->w2, L->w3};
      fc_arch_moe_forward(a->x, a->hn, &mw, c, N, &s->moe, &s->moe_cap);
      continue;
    }
    if (L->wgu) {
      fc_linear_forward(a->g, a->hn, L->wgu, NULL, N, C, 2 * F, 0);
      gated(a->hf, a->g, a->g + F, N, F, (size_t)2 * F, c->act);
    } else {
      fc_linear_forward(a->g, a->hn, L->wg, NULL, N, C, F, 0);
      fc_linear_forward(a->u, a->hn, L->wu, NULL, N, C, F, 0);
      gated(a->hf, a->g, a->u, N, F, (size_t)F, c->act);
    }
    if (L->ln_post_mlp) {
      fc_linear_forward(a->o, a->hf, L->wd, NULL, N, F, C, 0);
      fc_rmsnorm_forward(a->o, NULL, a->o, L->ln_post_mlp, N, C, eps);
      for (size_t i = 0; i < (size_t)N * C; i++) a->x[i] += a->o[i];
    } else {
      fc_linear_forward(a->x, a->hf, L->wd, NULL, N, F, C, 1);
    }
  }
  fc_rmsnorm_forward(a->hn, NULL, a->x, s->lnf, N, C, eps);
}

static int check_input(const fc_model_t *m, const int32_t *ids, int B, int T, fc_err_t *err) {
  if (B <= 0 || T <= 0) return fc_err_set(err, FC_EINVAL, "forward: batch %d x %d is empty", B, T);
  for (size_t i = 0; i < (size_t)B * T; i++)
    if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
      return fc_err_set(err, FC_EINVAL, "forward: token id %d at %zu is outside the vocabulary (%d)", ids[i], i,
                        m->cfg.vocab_size);
  return 0;
}

/* logits (n, V) of n final-normed rows, soft-capped for gemma2. */
static void head(const fc_model_t *m, const arch_state_t *s, float *logits, const float *hn, int n) {
  const fc_config_t *c = &m->cfg;
  fc_linear_forward(logits, hn, s->head, NULL, n, c->hidden_size, c->vocab_size, 0);
  if (is(c, "gemma2") && c->final_softcap > 0) softcap(logits, (size_t)n * c->vocab_size, c->final_softcap);
}

/* The logits buffer, kept between calls (a fresh one costs its page faults every forward). */
static float *logits_reserve(arch_state_t *s, size_t need) {
  if (need > s->logits_cap) {
    free(s->logits);
    s->logits = fc_xmalloc(need * sizeof(float));
    s->logits_cap = need;
  }
  return s->logits;
}

const float *fc_arch_forward(fc_model_t *m, const int32_t *ids, int B, int T, int train, fc_err_t *err) {
  if (train) {
    fc_err_set(err, FC_EUNSUPPORTED, "model_type %s is a source family (forward only): training needs %s",
               m->cfg.model_type, FC_CONFIG_PIVOT_TYPES);
    return NULL;
  }
  if (check_input(m, ids, B, T, err)) return NULL;
  arch_state_t *s = state(m);
  acts_t a;
  trunk(m, s, &a, ids, B, T);
  size_t BT = (size_t)B * T;
  head(m, s, logits_reserve(s, BT * m->cfg.vocab_size), a.hn, (int)BT);
  return s->logits;
}

int fc_arch_forward_topk(fc_model_t *m, const int32_t *ids, int B, int T, int K, const int32_t *targets,
                         int32_t *top_ids, float *top_lp, float *target_lp, fc_err_t *err) {
  int rc = check_input(m, ids, B, T, err);
  if (rc) return rc;
  int V = m->cfg.vocab_size, C = m->cfg.hidden_size;
  if (K < 0 || K > V) return fc_err_set(err, FC_EINVAL, "forward: top-K %d is outside [0, %d]", K, V);
  arch_state_t *s = state(m);
  acts_t a;
  trunk(m, s, &a, ids, B, T);
  size_t BT = (size_t)B * T, chunk = ARCH_HEAD_CHUNK_FLOATS / (size_t)V;
  if (chunk < 256) chunk = 256;
  const char *e = getenv("FUSECHAT_HEAD_ROWS");
  if (e && atol(e) > 0) chunk = (size_t)atol(e);
  if (chunk > BT) chunk = BT;
  float *logits = logits_reserve(s, chunk * (size_t)V);
  for (size_t r0 = 0; r0 < BT; r0 += chunk) {
    int n = (int)(BT - r0 < chunk ? BT - r0 : chunk);
    head(m, s, logits, a.hn + r0 * C, n);
#ifdef _OPENMP
#pragma omp parallel for num_threads(n_threads(m)) schedule(static) if (n_threads(m) > 1 && n > 1)
#endif
    for (int i = 0; i < n; i++) {
      const float *lg = logits + (size_t)i * V;
      size_t row = r0 + (size_t)i;
      float lse = fc_logsumexp(lg, V);
      if (K > 0) fc_topk_select(lg, V, K, top_ids + row * K, top_lp + row * K, lse);
      if (targets && target_lp) target_lp[row] = targets[row] >= 0 && targets[row] < V ? lg[targets[row]] - lse : NAN;
    }
  }
  return 0;
}
