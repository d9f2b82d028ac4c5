/* The Llama-family engine: parameter layout under Hugging Face names, loading and saving,
 * batched forward and backward over (B, T) token ids, top-K log-probabilities. */
#include "fc_model_impl.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fc_arch.h"
#include "fc_ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern void openblas_set_num_threads(int);
extern int openblas_get_num_threads(void);

/* Threads for the attention heads (OpenMP); OpenBLAS runs single-threaded inside them. */
int fc_model_par_threads(const fc_model_t *m) {
#ifdef _OPENMP
  return m->threads > 0 ? m->threads : omp_get_max_threads();
#else
  (void)m;
  return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/* ---------------------------------------------------------------- parameter layout */

typedef struct layout_ctx {
  fc_model_t *m;
  int build; /* append fc_param_info_t entries (first pass) */
  size_t off, idx;
  float *const *at; /* tensor i lives at at[i] (weights in place), instead of base + offset */
} layout_ctx_t;

static float *lay(layout_ctx_t *c, float *base, const char *name, int64_t d0, int64_t d1) {
  size_t n = fc_param_info_fill(c->build ? &c->m->info[c->idx] : NULL, name, d0, d1, c->off);
  float *p = c->at ? c->at[c->idx] : base ? base + c->off : NULL;
  c->off += n;
  c->idx++;
  return p;
}

/* Walks the tensors in a fixed order (embedding, layers, final norm, lm_head), so the flat
 * buffer's layout is the same for parameters and gradients. */
static size_t layout(fc_model_t *m, float *base, fc_weights_t *w, int build, float *const *at);
void fc_model_layout_at(fc_model_t *m, float *const *at) { layout(m, NULL, &m->w, 0, at); }

static size_t layout(fc_model_t *m, float *base, fc_weights_t *w, int build, float *const *at) {
  const fc_config_t *c = &m->cfg;
  layout_ctx_t lc = {m, build, 0, 0, at};
  int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  int64_t QD = (int64_t)c->num_heads * c->head_dim, KVD = (int64_t)c->num_kv_heads * c->head_dim;
  char nm[128];
  w->embed = lay(&lc, base, "model.embed_tokens.weight", V, C);
  for (int l = 0; l < c->num_layers; l++) {
    fc_layer_w_t *L = &w->layer[l];
    memset(L, 0, sizeof *L);
#define P(field, suffix, d0, d1)                                   \
  do {                                                             \
    snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);      \
    L->field = lay(&lc, base, nm, d0, d1);                         \
  } while (0)
    P(ln1, "input_layernorm.weight", C, 0);
    P(wq, "self_attn.q_proj.weight", QD, C);
    if (c->attention_bias) P(bq, "self_attn.q_proj.bias", QD, 0);
    P(wk, "self_attn.k_proj.weight", KVD, C);
    if (c->attention_bias) P(bk, "self_attn.k_proj.bias", KVD, 0);
    P(wv, "self_attn.v_proj.weight", KVD, C);
    if (c->attention_bias) P(bv, "self_attn.v_proj.bias", KVD, 0);
    P(wo, "self_attn.o_proj.weight", C, QD);
    if (c->o_bias) P(bo, "self_attn.o_proj.bias", C, 0);
    P(ln2, "post_attention_layernorm.weight", C, 0);
    P(wg, "mlp.gate_proj.weight", F, C);
    if (c->mlp_bias) P(bg, "mlp.gate_proj.bias", F, 0);
    P(wu, "mlp.up_proj.weight", F, C);
    if (c->mlp_bias) P(bu, "mlp.up_proj.bias", F, 0);
    P(wd, "mlp.down_proj.weight", C, F);
    if (c->mlp_bias) P(bd, "mlp.down_proj.bias", C, 0);
#undef P
  }
  w->lnf = lay(&lc, base, "model.norm.weight", C, 0);
  w->head = c->tie_word_embeddings ? w->embed : lay(&lc, base, "lm_head.weight", V, C);
  if (build) m->ntensors = lc.idx;
  return lc.off;
}

static size_t count_tensors(const fc_config_t *c) {
  size_t per = 9 + (c->attention_bias ? 3 : 0) + (c->o_bias ? 1 : 0) + (c->mlp_bias ? 3 : 0);
  return 2 + (size_t)c->num_layers * per + (c->tie_word_embeddings ? 0 : 1);
}

static void threads_from_env(fc_model_t *m) {
  const char *e = getenv("FUSECHAT_THREADS");
  int t = e ? atoi(e) : 0;
  if (t > 0) fc_model_set_threads(m, t);
}

fc_model_t *fc_model_new_layout(const fc_config_t *cfg, int alloc) {
  fc_model_t *m = fc_xcalloc(1, sizeof *m);
  m->cfg = *cfg;
  if (fc_arch_handles(cfg)) { /* a source family: its own tensor list, forward in fc_arch.c */
    m->info = fc_xcalloc(fc_arch_layout(cfg, NULL, NULL), sizeof *m->info);
    m->ntensors = fc_arch_layout(cfg, m->info, &m->nparams);
    m->params = fc_xmalloc(m->nparams * sizeof(float));
    threads_from_env(m);
    return m;
  }
  m->info = fc_xcalloc(count_tensors(cfg), sizeof *m->info);
  m->w.layer = fc_xcalloc((size_t)cfg->num_layers, sizeof *m->w.layer);
  m->gw.layer = fc_xcalloc((size_t)cfg->num_layers, sizeof *m->gw.layer);
  m->nparams = layout(m, NULL, &m->w, 1, NULL);
  m->wdt = FC_DT_F32;
  if (alloc) {
    m->params = fc_xmalloc(m->nparams * sizeof(float));
    layout(m, m->params, &m->w, 0, NULL);
  }
  threads_from_env(m);
  return m;
}

int fc_model_check_config(const fc_config_t *c, fc_err_t *err) {
  if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_layers <= 0 || c->num_heads <= 0 ||
      c->num_kv_heads <= 0 || c->head_dim <= 0 || c->head_dim % 2 || c->vocab_size <= 0 ||
      c->num_heads % c->num_kv_heads || c->rms_norm_eps <= 0 || c->rope_theta <= 0 || c->sliding_window < 0 ||
      c->max_window_layers < 0 || (c->has_layer_types && c->num_layers > FC_CONFIG_MAX_LAYER_TYPES))
    return fc_err_set(err, FC_EINVAL,
                      "model config is inconsistent (sizes, heads, head_dim, eps, rope_theta, sliding window)");
  return 0;
}

int fc_model_init(fc_model_t **out, const fc_config_t *cfg, uint64_t seed, fc_err_t *err) {
  *out = NULL;
  int rc = fc_model_check_config(cfg, err);
  if (rc) return rc;
  fc_model_t *m = fc_model_new_layout(cfg, 1);
  fc_rng_t r;
  fc_rng_seed(&r, seed);
  float std = cfg->initializer_range > 0 ? cfg->initializer_range : 0.02f;
  for (size_t i = 0; i < m->ntensors; i++) {
    const fc_param_info_t *pi = &m->info[i];
    float *p = m->params + pi->offset;
    const char *suf = strrchr(pi->name, '.');
    if (strstr(pi->name, "norm.weight")) {
      for (size_t j = 0; j < pi->numel; j++) p[j] = 1.0f;
    } else if (suf && !strcmp(suf, ".bias")) {
      memset(p, 0, pi->numel * sizeof(float));
    } else {
      for (size_t j = 0; j < pi->numel; j++) p[j] = std * fc_rng_normal(&r);
    }
  }
  *out = m;
  return 0;
}

int fc_model_file_tensor(const fc_model_t *m, const fc_st_t *st, size_t i, const char *dir,
                       const fc_st_tensor_t **out, fc_err_t *err) {
  const fc_param_info_t *pi = &m->info[i];
  const fc_st_tensor_t *t = fc_st_find(st, pi->name);
  if (!t) return fc_err_set(err, FC_ENOTFOUND, "loading model %s: tensor %s is missing", dir, pi->name);
  int ok = t->ndim == pi->ndim && t->shape[0] == pi->shape[0] && (pi->ndim == 1 || t->shape[1] == pi->shape[1]);
  if (!ok)
    return fc_err_set(err, FC_EMISMATCH,
                      "loading model %s: tensor %s has shape [%lld%s%lld] in the file, config says [%lld,%lld]",
                      dir, pi->name, (long long)t->shape[0], t->ndim > 1 ? "," : "",
                      t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)pi->shape[0], (long long)pi->shape[1]);
  *out = t;
  return 0;
}

int fc_model_load(fc_model_t **out, const char *dir, fc_err_t *err) {
  *out = NULL;
  fc_config_t cfg;
  int rc = fc_config_load(&cfg, dir, err);
  if (rc) return fc_err_wrap(err, "loading model %s", dir);
  if ((rc = fc_model_check_config(&cfg, err))) return rc;
  fc_st_t *st;
  if ((rc = fc_st_open(&st, dir, err))) return fc_err_wrap(err, "loading model %s", dir);
  fc_model_t *m = fc_model_new_layout(&cfg, 1);
  for (size_t i = 0; i < m->ntensors && !rc; i++) {
    const fc_st_tensor_t *t;
    if (!(rc = fc_model_file_tensor(m, st, i, dir, &t, err)) && (rc = fc_st_to_f32(t, m->params + m->info[i].offset, err)))
      fc_err_wrap(err, "loading model %s: %s", dir, m->info[i].name);
  }
  fc_st_close(&st);
  if (rc) {
    fc_model_destroy(&m);
    return rc;
  }
  *out = m;
  return 0;
}

void fc_model_destroy(fc_model_t **pm) {
  fc_model_t *m = *pm;
  if (!m) return;
  for (size_t i = 0; i < m->ntensors; i++) free((char *)m->info[i].name);
  free(m->info);
  free(m->params);
  if (m->grads_mapped) munmap(m->grads, m->nparams * sizeof(float));
  else free(m->grads);
  fc_st_close(&m->st);
  free(m->owned);
  free(m->panel);
  free(m->w.layer);
  free(m->gw.layer);
  free(m->rope_cos);
  free(m->rope_sin);
  free(m->acts_mem);
  free(m->ga_mem);
  free(m->ids);
  free(m->head_wait);
  fc_arch_free(m);
  free(m);
  *pm = NULL;
}

const fc_config_t *fc_model_config(const fc_model_t *m) { return &m->cfg; }
float *fc_model_params(fc_model_t *m) { return m->params; }
size_t fc_model_num_params(const fc_model_t *m) { return m->nparams; }
size_t fc_model_num_tensors(const fc_model_t *m) { return m->ntensors; }
const fc_param_info_t *fc_model_tensor(const fc_model_t *m, size_t i) {
  return i < m->ntensors ? &m->info[i] : NULL;
}
const fc_param_info_t *fc_model_find_tensor(const fc_model_t *m, const char *name) {
  for (size_t i = 0; i < m->ntensors; i++)
    if (!strcmp(m->info[i].name, name)) return &m->info[i];
  return NULL;
}

void fc_model_set_threads(fc_model_t *m, int threads) {
  if (threads < 1) threads = 1;
  m->threads = threads;
  openblas_set_num_threads(threads);
}

float *fc_model_grads(fc_model_t *m) {
  assert(!m->st && "a model with weights in place has no gradients");
  if (!m->grads) {
    /* An anonymous mapping (zero pages until written), so ranges can be handed back to the
     * system page by page (fc_model_release_grads). */
    void *g = m->nparams ? mmap(NULL, m->nparams * sizeof(float), PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                         : MAP_FAILED;
    m->grads_mapped = g != MAP_FAILED;
    m->grads = m->grads_mapped ? g : fc_xcalloc(m->nparams ? m->nparams : 1, sizeof(float));
    if (!m->arch && !fc_arch_handles(&m->cfg)) layout(m, m->grads, &m->gw, 0, NULL);
  }
  return m->grads;
}

void fc_model_zero_grad(fc_model_t *m) { memset(fc_model_grads(m), 0, m->nparams * sizeof(float)); }

void fc_model_release_grads(fc_model_t *m, size_t lo, size_t hi) {
  assert(lo <= hi && hi <= m->nparams);
  char *a = (char *)(fc_model_grads(m) + lo), *b = (char *)(m->grads + hi);
  uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
  char *pa = (char *)(((uintptr_t)a + pg - 1) & ~(pg - 1)), *pb = (char *)((uintptr_t)b & ~(pg - 1));
  /* only the pages wholly inside the range go back: the edges may hold a neighbour's values */
  if (m->grads_mapped && pb > pa && madvise(pa, (size_t)(pb - pa), MADV_DONTNEED) == 0) {
    memset(a, 0, (size_t)(pa - a));
    memset(pb, 0, (size_t)(b - pb));
  } else {
    memset(a, 0, (size_t)(b - a));
  }
}

void fc_model_set_grad_ready(fc_model_t *m, fc_grad_ready_fn fn, void *ctx) {
  m->grad_ready = fn;
  m->grad_ready_ctx = ctx;
}

/* ---------------------------------------------------------------- RoPE */

void fc_model_rope_reserve(fc_model_t *m, int n) {
  if (n <= m->rope_len) return;
  int cap = m->rope_len ? m->rope_len : 64;
  while (cap < n) cap *= 2;
  const fc_config_t *c = &m->cfg;
  int half = c->head_dim / 2;
  float *inv = fc_xmalloc((size_t)half * sizeof(float));
  for (int i = 0; i < half; i++) {
    /* As Hugging Face: 1 / theta^(2i/HD) in f32. */
    inv[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    if (!strcmp(c->rope_scaling_type, "linear") && c->rope_factor > 0) {
      inv[i] /= c->rope_factor;
    } else if (!strcmp(c->rope_scaling_type, "llama3")) {
      /* Llama 3.1: long wavelengths slowed by factor, short ones kept, a smooth blend between. */
      double f = c->rope_factor, lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
      double old = c->rope_original_max_pos;
      double lo_wl = old / lo, hi_wl = old / hi, wl = 2.0 * M_PI / inv[i];
      double v = inv[i];
      if (wl > lo_wl) {
        v = v / f;
      } else if (wl >= hi_wl) {
        double s = (old / wl - lo) / (hi - lo);
        v = (1.0 - s) * v / f + s * v;
      }
      inv[i] = (float)v;
    }
  }
  m->rope_cos = fc_xrealloc(m->rope_cos, (size_t)cap * half * sizeof(float));
  m->rope_sin = fc_xrealloc(m->rope_sin, (size_t)cap * half * sizeof(float));
  for (int p = 0; p < cap; p++)
    for (int i = 0; i < half; i++) {
      float a = (float)p * inv[i]; /* the angle is an f32 product in the reference too */
      m->rope_cos[(size_t)p * half + i] = (float)cos((double)a);
      m->rope_sin[(size_t)p * half + i] = (float)sin((double)a);
    }
  m->rope_len = cap;
  free(inv);
}

/* ---------------------------------------------------------------- activations */

/* Inference on 16-bit weights in place runs the MLP over blocks of this many rows, so its
 * (rows, F) activations stay small beside a model that costs only its file (at Qwen2.5-0.5B
 * shapes 8 x 512 rows would hold 240 MB of them). The f32 path keeps whole batches: its
 * results stay bit-identical to what they were. */
#define MLP_ROWS ((size_t)512)

static size_t mlp_rows(const fc_model_t *m, int train, size_t BT) {
  return !train && m->wdt != FC_DT_F32 && BT > MLP_ROWS ? MLP_ROWS : BT;
}

/* Query rows per block of the attention products (forward and backward). */
#define ATT_BLK 128

/* Rows of the forward's probability scratch per thread. */
static size_t att_rows(int T) { return (size_t)(T < ATT_BLK ? T : ATT_BLK); }

static size_t acts_layout(fc_model_t *m, float *base, int B, int T, int train, size_t head_rows) {
  const fc_config_t *c = &m->cfg;
  size_t BT = (size_t)B * T, C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size;
  size_t QD = (size_t)c->num_heads * c->head_dim, KVD = (size_t)c->num_kv_heads * c->head_dim;
  /* With activation checkpointing only the residual stream entering each layer is kept; backward
   * recomputes the rest of a layer's activations into one slice. */
  size_t Ls = train && !m->ckpt ? (size_t)c->num_layers : 1, Lx = train ? (size_t)c->num_layers + 1 : 1;
  /* ln1, ln2 and h are one slice even for training: backward recomputes them (cheap
   * element-wise work) instead of keeping 2C + F floats per token per layer. */
  size_t Fr = mlp_rows(m, train, BT); /* rows of g, u and h */
  size_t att = (size_t)fc_model_par_threads(m) * att_rows(T) * T;
  size_t sizes[] = {Lx * BT * C, BT * C,      Ls * BT,     Ls * BT * QD, Ls * BT * KVD, Ls * BT * KVD,
                    att,         Ls * BT * QD, Ls * BT * C, BT * C,       Ls * BT,      Ls * Fr * F,
                    Ls * Fr * F, Fr * F,      BT * C,      BT,           head_rows * V};
  float **ptrs[] = {&m->acts.x, &m->acts.ln1, &m->acts.rstd1, &m->acts.q, &m->acts.k, &m->acts.v,
                    &m->acts.att, &m->acts.atty, &m->acts.xmid, &m->acts.ln2, &m->acts.rstd2,
                    &m->acts.g, &m->acts.u, &m->acts.h, &m->acts.lnf, &m->acts.rstdf, &m->acts.logits};
  size_t off = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    if (base) *ptrs[i] = base + off;
    off += (sizes[i] + 15) & ~(size_t)15; /* 64-byte aligned slices */
  }
  if (base) m->logits_floats = head_rows * V;
  return off;
}

static void acts_reserve(fc_model_t *m, int B, int T, int train, size_t head_rows) {
  size_t need = acts_layout(m, NULL, B, T, train, head_rows);
  if (need > m->acts_cap) {
    free(m->acts_mem);
    if (posix_memalign((void **)&m->acts_mem, 64, need * sizeof(float))) m->acts_mem = NULL;
    if (!m->acts_mem) {
      fprintf(stderr, "fusechat: out of memory (%zu bytes of activations)\n", need * sizeof(float));
      abort();
    }
    m->acts_cap = need;
  }
  acts_layout(m, m->acts_mem, B, T, train, head_rows);
}

/* ---------------------------------------------------------------- attention */

/* First key column a row block starting at query r0 can see under window W (0: none). */
static int window_col0(int r0, int window) { return window > 0 && r0 - window + 1 > 0 ? r0 - window + 1 : 0; }

/* Rows [r0, r0+n) of P (T,T) = causal softmax(Q K^T * scale) for one (b, head), into Pb (n rows,
 * ld T); Q rows ld QD, K rows ld KVD; window W > 0 also masks keys j <= i - W (sliding-window
 * attention). The product skips the masked upper triangle and, with a window, the columns left
 * of the block's window (the softmax zeroes them). */
static void attn_probs_block(float *Pb, const float *Q, const float *K, int r0, int n, int T, int HD, int QD,
                             int KVD, float scale, int window) {
  int c0 = window_col0(r0, window);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r0 + n - c0, HD, scale, Q + (size_t)r0 * QD, QD,
              K + (size_t)c0 * KVD, KVD, 0.0f, Pb + c0, T);
  fc_causal_softmax(Pb, r0, n, T, window);
}

/* P (T,T) whole, in row blocks (backward uses every block twice). */
static void attn_probs(float *P, const float *Q, const float *K, int T, int HD, int QD, int KVD, float scale,
                       int window) {
  for (int r0 = 0; r0 < T; r0 += ATT_BLK)
    attn_probs_block(P + (size_t)r0 * T, Q, K, r0, T - r0 < ATT_BLK ? T - r0 : ATT_BLK, T, HD, QD, KVD, scale,
                     window);
}

static void attention_forward(fc_model_t *m, float *atty, const float *q, const float *k, const float *v, int B,
                              int T, int window) {
  const fc_config_t *c = &m->cfg;
  int NH = c->num_heads, HD = c->head_dim, rep = c->num_heads / c->num_kv_heads;
  int QD = NH * HD, KVD = c->num_kv_heads * HD;
  float scale = 1.0f / sqrtf((float)HD);
  int nthr = fc_model_par_threads(m), saved = openblas_get_num_threads();
  /* Heads in parallel, each product single-threaded: these products are small (T x T x HD)
   * and OpenBLAS's own threading costs more than it gains on them. */
  if (nthr > 1) openblas_set_num_threads(1);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthr) schedule(dynamic, 1) if (nthr > 1)
#endif
  for (int bh = 0; bh < B * NH; bh++) {
    int b = bh / NH, h = bh % NH;
    /* One block of probabilities at a time: (ATT_BLK, T) per thread, not (T, T) (33 MB for two
     * threads at T = 2048, a twentieth of a 0.5B model's whole logits stage). */
    float *Pb = m->acts.att + (size_t)thread_id() * att_rows(T) * T;
    const float *Q = q + (size_t)b * T * QD + (size_t)h * HD;
    const float *K = k + (size_t)b * T * KVD + (size_t)(h / rep) * HD;
    const float *Vv = v + (size_t)b * T * KVD + (size_t)(h / rep) * HD;
    float *Y = atty + (size_t)b * T * QD + (size_t)h * HD;
    for (int r0 = 0; r0 < T; r0 += ATT_BLK) {
      int n = T - r0 < ATT_BLK ? T - r0 : ATT_BLK, c0 = window_col0(r0, window);
      attn_probs_block(Pb, Q, K, r0, n, T, HD, QD, KVD, scale, window);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, HD, r0 + n - c0, 1.0f, Pb + c0, T,
                  Vv + (size_t)c0 * KVD, KVD, 0.0f, Y + (size_t)r0 * QD, QD);
    }
  }
  if (nthr > 1) openblas_set_num_threads(saved);
}

/* dq (BT,QD) = ..., dk, dv (BT,KVD) accumulated (+=; zeroed by the caller) from datty. The
 * probabilities are recomputed from q and k rather than stored: (B,NH,T,T) per layer would
 * dominate training memory. */
static void attention_backward(fc_model_t *m, float *dq, float *dk, float *dv, const float *datty,
                               const float *q, const float *k, const float *v, int B, int T, int window) {
  const fc_config_t *c = &m->cfg;
  int NH = c->num_heads, NKV = c->num_kv_heads, HD = c->head_dim, rep = NH / NKV;
  int QD = NH * HD, KVD = NKV * HD;
  float scale = 1.0f / sqrtf((float)HD);
  const int blk = ATT_BLK;
  int nthr = fc_model_par_threads(m), saved = openblas_get_num_threads();
  if (nthr > 1) openblas_set_num_threads(1);
  /* One task per (b, kv head): the query heads sharing it accumulate into the same dk, dv. */
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthr) schedule(dynamic, 1) if (nthr > 1)
#endif
  for (int bk = 0; bk < B * NKV; bk++) {
    int b = bk / NKV, kh = bk % NKV;
    float *P = m->ga.datt + (size_t)thread_id() * 2 * T * T, *dP = P + (size_t)T * T;
    size_t ko = (size_t)b * T * KVD + (size_t)kh * HD;
    const float *K = k + ko, *Vv = v + ko;
    for (int h = kh * rep; h < (kh + 1) * rep; h++) {
      size_t qo = (size_t)b * T * QD + (size_t)h * HD;
      const float *Q = q + qo, *dY = datty + qo;
      attn_probs(P, Q, K, T, HD, QD, KVD, scale, window);
      /* Row blocks of queries [r0, r0+n) see keys [c0, r0+n) (c0 = 0 without a window): every
       * product skips the masked upper triangle and the keys left of the window. Per block:
       * dP = dY V^T; dV += P^T dY; dS = softmax'(dP); dQ = dS K; dK += dS^T Q. */
      for (int r0 = 0; r0 < T; r0 += blk) {
        int n = T - r0 < blk ? T - r0 : blk, c0 = window_col0(r0, window), w = r0 + n - c0;
        const float *Pb = P + (size_t)r0 * T, *dYb = dY + (size_t)r0 * QD, *Qb = Q + (size_t)r0 * QD;
        const float *Kc = K + (size_t)c0 * KVD, *Vc = Vv + (size_t)c0 * KVD;
        float *dPb = dP + (size_t)r0 * T, *dkc = dk + ko + (size_t)c0 * KVD, *dvc = dv + ko + (size_t)c0 * KVD;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, w, HD, 1.0f, dYb, QD, Vc, KVD, 0.0f, dPb + c0, T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w, HD, n, 1.0f, Pb + c0, T, dYb, QD, 1.0f, dvc, KVD);
        fc_causal_softmax_backward(dPb, Pb, r0, n, T, window, scale);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, HD, w, 1.0f, dPb + c0, T, Kc, KVD, 0.0f,
                    dq + qo + (size_t)r0 * QD, QD);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, w, HD, n, 1.0f, dPb + c0, T, Qb, QD, 1.0f, dkc, KVD);
      }
    }
  }
  if (nthr > 1) openblas_set_num_threads(saved);
}

/* ---------------------------------------------------------------- forward */

/* FUSECHAT_PROFILE=1: seconds per forward/backward section, printed at exit (a bench aid for
 * single-model runs; the timers are process-wide). */
static const char *pr_names[PR_N] = {"norm", "qkv", "rope", "attn", "o", "gate_up", "swiglu", "down", "head",
                                     "b_head", "b_mlp", "b_o", "b_attn", "b_qkv", "b_norm", "b_embed"};
static double pr_t[PR_N];
static _Atomic int pr_on = -1;
static double pr_last;
static void pr_report(void) {
  for (int i = 0; i < PR_N; i++) fprintf(stderr, "profile %-8s %8.3f s\n", pr_names[i], pr_t[i]);
}
void fc_model_prof(int what) {
  if (pr_on < 0) {
    int on = getenv("FUSECHAT_PROFILE") != NULL, expect = -1;
    if (atomic_compare_exchange_strong(&pr_on, &expect, on) && on) atexit(pr_report);
  }
  if (!pr_on) return;
  double t = fc_now();
  if (what >= 0) pr_t[what] += t - pr_last;
  pr_last = t;
}

int fc_model_check_ids(const fc_model_t *m, const int32_t *ids, int B, int T, fc_err_t *err) {
  if (B <= 0 || T <= 0) return fc_err_set(err, FC_EINVAL, "forward: batch %d x %d is empty", B, T);
  size_t BT = (size_t)B * T;
  for (size_t i = 0; i < BT; i++)
    if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
      return fc_err_set(err, FC_EINVAL, "forward: token id %d at %zu is outside the vocabulary (%d)", ids[i], i,
                        m->cfg.vocab_size);
  return 0;
}

/* Where layer l's activations live: slice l when training keeps every layer's, else slice 0
 * (inference, or checkpointed training, which recomputes them). */
typedef struct layer_acts {
  float *xin, *xout, *q, *k, *v, *atty, *xmid, *g, *u, *rstd1, *rstd2;
} layer_acts_t;

static layer_acts_t layer_acts(fc_model_t *m, int l) {
  const fc_config_t *c = &m->cfg;
  size_t BT = (size_t)m->B * m->T, C = c->hidden_size, F = c->intermediate_size;
  size_t QD = (size_t)c->num_heads * c->head_dim, KVD = (size_t)c->num_kv_heads * c->head_dim;
  size_t s = m->acts_train && !m->ckpt ? (size_t)l : 0, x = m->acts_train ? (size_t)l : 0;
  fc_acts_t *a = &m->acts;
  layer_acts_t r = {a->x + x * BT * C, a->x + (m->acts_train ? x + 1 : 0) * BT * C, a->q + s * BT * QD,
                    a->k + s * BT * KVD, a->v + s * BT * KVD, a->atty + s * BT * QD, a->xmid + s * BT * C,
                    a->g + s * BT * F, a->u + s * BT * F, a->rstd1 + s * BT, a->rstd2 + s * BT};
  return r;
}

/* Layer l on the batch of the current forward; with `full` 0 it stops after the gate/up
 * projections (what a checkpointed backward needs recomputed: h and the layer's output are
 * not). */
static void layer_forward(fc_model_t *m, int l, int full) {
  const fc_config_t *c = &m->cfg;
  int B = m->B, T = m->T, N = B * T;
  size_t BT = (size_t)N;
  int C = c->hidden_size, F = c->intermediate_size;
  int HD = c->head_dim, QD = c->num_heads * HD, KVD = c->num_kv_heads * HD;
  const fc_layer_w_t *w = &m->w.layer[l];
  layer_acts_t la = layer_acts(m, l);
  float *ln1 = m->acts.ln1, *ln2 = m->acts.ln2, *h = m->acts.h;
  fc_rmsnorm_forward(ln1, la.rstd1, la.xin, w->ln1, N, C, c->rms_norm_eps);
  fc_model_prof(PR_NORM);
  fc_model_linear(m, la.q, ln1, w->wq, w->bq, N, C, QD, 0);
  fc_model_linear(m, la.k, ln1, w->wk, w->bk, N, C, KVD, 0);
  fc_model_linear(m, la.v, ln1, w->wv, w->bv, N, C, KVD, 0);
  fc_model_prof(PR_QKV);
  fc_rope(la.q, N, T, 0, c->num_heads, HD, m->rope_cos, m->rope_sin, 0);
  fc_rope(la.k, N, T, 0, c->num_kv_heads, HD, m->rope_cos, m->rope_sin, 0);
  fc_model_prof(PR_ROPE);
  attention_forward(m, la.atty, la.q, la.k, la.v, B, T, fc_config_layer_window(c, l));
  fc_model_prof(PR_ATTN);
  memcpy(la.xmid, la.xin, BT * C * sizeof(float));
  fc_model_linear(m, la.xmid, la.atty, w->wo, w->bo, N, QD, C, 1);
  fc_model_prof(PR_O);
  fc_rmsnorm_forward(ln2, la.rstd2, la.xmid, w->ln2, N, C, c->rms_norm_eps);
  fc_model_prof(PR_NORM);
  if (full) memcpy(la.xout, la.xmid, BT * C * sizeof(float));
  size_t rows = mlp_rows(m, m->acts_train, BT);
  for (size_t r0 = 0; r0 < BT; r0 += rows) {
    int n = (int)(BT - r0 < rows ? BT - r0 : rows);
    fc_model_linear(m, la.g, ln2 + r0 * C, w->wg, w->bg, n, C, F, 0);
    fc_model_linear(m, la.u, ln2 + r0 * C, w->wu, w->bu, n, C, F, 0);
    fc_model_prof(PR_GATEUP);
    if (!full) return; /* training (whole batch): backward's recomputation stops here */
    fc_swiglu_forward(h, la.g, la.u, (size_t)n * F);
    fc_model_prof(PR_SWIGLU);
    fc_model_linear(m, la.xout + r0 * C, h, w->wd, w->bd, n, F, C, 1);
    fc_model_prof(PR_DOWN);
  }
}

void fc_model_trunk_forward(fc_model_t *m, const int32_t *ids, int B, int T, int train, size_t head_rows) {
  const fc_config_t *c = &m->cfg;
  size_t BT = (size_t)B * T;
  acts_reserve(m, B, T, train, head_rows);
  fc_model_rope_reserve(m, T);
  m->B = B, m->T = T, m->acts_train = train, m->have_train_fwd = 0;
  int C = c->hidden_size, L = c->num_layers;
  fc_acts_t *a = &m->acts;
  fc_model_embed(m, a->x, ids, BT);
  fc_model_prof(-1);
  for (int l = 0; l < L; l++) layer_forward(m, l, 1);
  const float *xl = a->x + (train ? (size_t)L : 0) * BT * C;
  fc_rmsnorm_forward(a->lnf, a->rstdf, xl, m->w.lnf, (int)BT, C, c->rms_norm_eps);
  if (train) {
    if (BT > m->ids_cap) {
      m->ids = fc_xrealloc(m->ids, BT * sizeof(int32_t));
      m->ids_cap = BT;
    }
    memcpy(m->ids, ids, BT * sizeof(int32_t));
  }
}

const float *fc_model_forward(fc_model_t *m, const int32_t *ids, int B, int T, int train, fc_err_t *err) {
  if (fc_arch_handles(&m->cfg)) return fc_arch_forward(m, ids, B, T, train, err);
  if (fc_model_check_ids(m, ids, B, T, err)) return NULL;
  if (train && m->st) {
    fc_err_set(err, FC_EUNSUPPORTED, "forward: the model's weights are used in place (inference only), not trained");
    return NULL;
  }
  train = train ? 1 : 0;
  size_t BT = (size_t)B * T;
  fc_model_trunk_forward(m, ids, B, T, train, BT);
  fc_acts_t *a = &m->acts;
  fc_model_linear(m, a->logits, a->lnf, m->w.head, NULL, (int)BT, m->cfg.hidden_size, m->cfg.vocab_size, 0);
  fc_model_prof(PR_HEAD);
  m->have_train_fwd = train;
  return a->logits;
}

/* ---------------------------------------------------------------- backward */

void fc_model_ga_reserve(fc_model_t *m, int B, int T, int in_logits) {
  const fc_config_t *c = &m->cfg;
  size_t BT = (size_t)B * T, C = c->hidden_size, F = c->intermediate_size;
  size_t QD = (size_t)c->num_heads * c->head_dim, KVD = (size_t)c->num_kv_heads * c->head_dim;
  enum { NGA = 10 };
  size_t sizes[NGA] = {BT * C, BT * C, BT * QD, BT * KVD, BT * KVD, BT * QD, BT * F, BT * F, BT * F,
                       (size_t)fc_model_par_threads(m) * 2 * T * T};
  float **ptrs[NGA] = {&m->ga.dx, &m->ga.dln, &m->ga.dq, &m->ga.dk, &m->ga.dv, &m->ga.datty,
                       &m->ga.dh, &m->ga.dg, &m->ga.du, &m->ga.datt};
  /* in_logits: the head's logits block is dead once the trunk's backward starts (its d(lnf) is in
   * dln), and the trunk's scratch is not used before: all but dx and dln go into that block as far
   * as they fit, largest first (at Qwen2.5-0.5B, 8 x 256: 130 MB of the 144 MB, in a 148 MB
   * block). */
  size_t room = in_logits && m->acts_train ? m->logits_floats : 0, used = 0;
  int in_block[NGA] = {0};
  for (;;) {
    int best = -1;
    for (int i = 2; i < NGA; i++) {
      size_t sz = (sizes[i] + 15) & ~(size_t)15;
      if (!in_block[i] && used + sz <= room && (best < 0 || sz > sizes[best])) best = i;
    }
    if (best < 0) break;
    in_block[best] = 1;
    *ptrs[best] = m->acts.logits + used;
    used += (sizes[best] + 15) & ~(size_t)15;
  }
  size_t need = 0;
  for (int i = 0; i < NGA; i++)
    if (!in_block[i]) need += (sizes[i] + 15) & ~(size_t)15;
  if (need > m->ga_cap) {
    free(m->ga_mem);
    if (posix_memalign((void **)&m->ga_mem, 64, need * sizeof(float))) m->ga_mem = NULL;
    if (!m->ga_mem) {
      fprintf(stderr, "fusechat: out of memory (%zu bytes of gradient scratch)\n", need * sizeof(float));
      abort();
    }
    m->ga_cap = need;
  }
  size_t off = 0;
  for (int i = 0; i < NGA; i++)
    if (!in_block[i]) {
      *ptrs[i] = m->ga_mem + off;
      off += (sizes[i] + 15) & ~(size_t)15;
    }
}

int fc_model_backward(fc_model_t *m, const float *dlogits, fc_err_t *err) {
  if (!m->have_train_fwd || !m->acts_train)
    return fc_err_set(err, FC_EINVAL, "backward: no training forward to go back through");
  int N = m->B * m->T;
  fc_model_grads(m);
  fc_model_ga_reserve(m, m->B, m->T, 0); /* the caller's logits stay valid until the next forward */
  fc_model_prof(-1);
  fc_linear_backward(m->ga.dln, m->gw.head, NULL, dlogits, m->acts.lnf, m->w.head, N, m->cfg.hidden_size,
                     m->cfg.vocab_size, 0);
  fc_model_prof(PR_B_HEAD);
  fc_model_trunk_backward(m);
  return 0;
}

/* Hands grad_ready the gradients [lo, hi) as soon as they are final: tensor by tensor inside a
 * layer, so one layer's whole gradient is never held (178 MB at Qwen2.5-1.5B), only its
 * largest matrix's. */
static void ready(fc_model_t *m, const float *lo, const float *hi) {
  if (m->grad_ready) m->grad_ready(m->grad_ready_ctx, (size_t)(lo - m->grads), (size_t)(hi - m->grads));
}

void fc_model_ready_rows(fc_model_t *m, size_t off, int v0, int v1, int waiting) {
  const size_t C = (size_t)m->cfg.hidden_size;
  for (int v = v0; v < v1;) {
    int e = v;
    while (e < v1 && (m->head_wait[e] != 0) == waiting) e++;
    if (e > v) m->grad_ready(m->grad_ready_ctx, off + (size_t)v * C, off + (size_t)e * C);
    v = e + 1;
  }
}

void fc_model_trunk_backward(fc_model_t *m) {
  const fc_config_t *c = &m->cfg;
  int B = m->B, T = m->T, N = B * T;
  size_t BT = (size_t)N;
  int C = c->hidden_size, F = c->intermediate_size, L = c->num_layers;
  int HD = c->head_dim, QD = c->num_heads * HD, KVD = c->num_kv_heads * HD;
  fc_acts_t *a = &m->acts;
  fc_grad_acts_t *ga = &m->ga;
  fc_weights_t *gw = &m->gw;
  /* Final norm, from d(lnf) in ga->dln. */
  memset(ga->dx, 0, BT * C * sizeof(float));
  fc_rmsnorm_backward(ga->dx, gw->lnf, ga->dln, a->x + (size_t)L * BT * C, m->w.lnf, a->rstdf, N, C);
  fc_model_prof(PR_B_NORM);
  for (int l = L - 1; l >= 0; l--) {
    const fc_layer_w_t *w = &m->w.layer[l];
    fc_layer_w_t *dw = &gw->layer[l];
    /* Checkpointed: this layer's activations again, from the residual stream kept at its input. */
    if (m->ckpt) layer_forward(m, l, 0);
    layer_acts_t la = layer_acts(m, l);
    float *ln1 = a->ln1, *ln2 = a->ln2, *h = a->h;
    /* Recompute what the forward did not keep per layer (bit-identical: same code, inputs). */
    fc_rmsnorm_forward(ln1, NULL, la.xin, w->ln1, N, C, c->rms_norm_eps);
    fc_rmsnorm_forward(ln2, NULL, la.xmid, w->ln2, N, C, c->rms_norm_eps);
    fc_swiglu_forward(h, la.g, la.u, BT * F);
    /* MLP: xout = xmid + down(h) */
    fc_linear_backward(ga->dh, dw->wd, dw->bd, ga->dx, h, w->wd, N, F, C, 0);
    ready(m, dw->wd, l + 1 < L ? gw->layer[l + 1].ln1 : gw->lnf); /* down_proj (its bias) */
    fc_swiglu_backward(ga->dg, ga->du, ga->dh, la.g, la.u, BT * F);
    fc_linear_backward(ga->dln, dw->wg, dw->bg, ga->dg, ln2, w->wg, N, C, F, 0);
    ready(m, dw->wg, dw->wu);
    fc_linear_backward(ga->dln, dw->wu, dw->bu, ga->du, ln2, w->wu, N, C, F, 1);
    ready(m, dw->wu, dw->wd);
    fc_model_prof(PR_B_MLP);
    fc_rmsnorm_backward(ga->dx, dw->ln2, ga->dln, la.xmid, w->ln2, la.rstd2, N, C);
    ready(m, dw->ln2, dw->wg);
    fc_model_prof(PR_B_NORM);
    /* Attention: xmid = xin + o(attention(rope(q), rope(k), v)) */
    fc_linear_backward(ga->datty, dw->wo, dw->bo, ga->dx, la.atty, w->wo, N, QD, C, 0);
    ready(m, dw->wo, dw->ln2);
    fc_model_prof(PR_B_O);
    memset(ga->dk, 0, BT * KVD * sizeof(float));
    memset(ga->dv, 0, BT * KVD * sizeof(float));
    attention_backward(m, ga->dq, ga->dk, ga->dv, ga->datty, la.q, la.k, la.v, B, T, fc_config_layer_window(c, l));
    fc_rope(ga->dq, N, T, 0, c->num_heads, HD, m->rope_cos, m->rope_sin, 1);
    fc_rope(ga->dk, N, T, 0, c->num_kv_heads, HD, m->rope_cos, m->rope_sin, 1);
    fc_model_prof(PR_B_ATTN);
    fc_linear_backward(ga->dln, dw->wq, dw->bq, ga->dq, ln1, w->wq, N, C, QD, 0);
    ready(m, dw->wq, dw->wk);
    fc_linear_backward(ga->dln, dw->wk, dw->bk, ga->dk, ln1, w->wk, N, C, KVD, 1);
    ready(m, dw->wk, dw->wv);
    fc_linear_backward(ga->dln, dw->wv, dw->bv, ga->dv, ln1, w->wv, N, C, KVD, 1);
    ready(m, dw->wv, dw->wo);
    fc_model_prof(PR_B_QKV);
    fc_rmsnorm_backward(ga->dx, dw->ln1, ga->dln, la.xin, w->ln1, la.rstd1, N, C);
    fc_model_prof(PR_B_NORM);
    ready(m, dw->ln1, dw->wq);
  }
  /* Embedding: rows gathered by id, so gradients scatter-add (with the head's when tied). */
  for (size_t i = 0; i < BT; i++) {
    float *d = gw->embed + (size_t)m->ids[i] * C;
    const float *src = ga->dx + i * C;
    for (int j = 0; j < C; j++) d[j] += src[j];
  }
  fc_model_prof(PR_B_EMB);
  if (m->grad_ready) {
    size_t first = (size_t)((L ? gw->layer[0].ln1 : gw->lnf) - m->grads), lnf = (size_t)(gw->lnf - m->grads);
    if (!m->head_streamed) {
      m->grad_ready(m->grad_ready_ctx, 0, first);            /* embedding */
      m->grad_ready(m->grad_ready_ctx, lnf, m->nparams); /* norm, head */
    } else if (c->tie_word_embeddings) { /* the rest of the embedding: the batch's rows */
      fc_model_ready_rows(m, 0, 0, c->vocab_size, 1);
      m->grad_ready(m->grad_ready_ctx, lnf, m->nparams);
    } else { /* the head has been handed over: the embedding and the final norm are left */
      m->grad_ready(m->grad_ready_ctx, 0, first);
      m->grad_ready(m->grad_ready_ctx, lnf, lnf + (size_t)C);
    }
  }
  m->head_streamed = 0;
}

void fc_model_set_checkpointing(fc_model_t *m, int on) {
  m->ckpt = on ? 1 : 0;
  m->have_train_fwd = 0; /* the activation layout changes */
}

/* ---------------------------------------------------------------- save */

int fc_model_save(const fc_model_t *m, const char *dir, fc_dtype_t dtype, fc_err_t *err) {
  assert(m->params && "saving needs the f32 parameters (fc_model_load, not fc_model_load_mapped)");
  if (dtype != FC_DT_F32 && dtype != FC_DT_F16 && dtype != FC_DT_BF16)
    return fc_err_set(err, FC_EINVAL, "saving model: dtype %s is not F32, F16 or BF16", fc_dtype_name(dtype));
  int rc = fc_mkdir_p(dir, err);
  if (rc) return rc;
  fc_config_t cfg = m->cfg;
  snprintf(cfg.torch_dtype, sizeof cfg.torch_dtype, "%s",
           dtype == FC_DT_F32 ? "float32" : dtype == FC_DT_F16 ? "float16" : "bfloat16");
  fc_st_spec_t *specs = fc_xcalloc(m->ntensors, sizeof *specs);
  for (size_t i = 0; i < m->ntensors; i++) {
    specs[i].name = m->info[i].name;
    specs[i].dtype = dtype;
    specs[i].ndim = m->info[i].ndim;
    specs[i].shape[0] = m->info[i].shape[0];
    specs[i].shape[1] = m->info[i].shape[1];
  }
  char *path = fc_path_join(dir, "model.safetensors");
  static const char *const meta[] = {"format", "pt", NULL};
  fc_st_writer_t *w = NULL;
  rc = fc_st_writer_new(&w, path, specs, m->ntensors, meta, err);
  for (size_t i = 0; !rc && i < m->ntensors; i++) rc = fc_st_writer_put_f32(w, i, m->params + m->info[i].offset, err);
  if (!rc) rc = fc_st_writer_finish(&w, err);
  else if (w) fc_st_writer_abort(&w);
  free(path);
  free(specs);
  if (!rc) {
    char *cp = fc_path_join(dir, "config.json");
    rc = fc_config_save(&cfg, cp, err);
    free(cp);
  }
  if (rc) fc_err_wrap(err, "saving model to %s", dir);
  return rc;
}
