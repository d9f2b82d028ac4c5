/* Decoding with a KV cache: each step feeds only the new tokens, attending over the cached
 * keys and values of every earlier position (or, on a sliding-window layer, of the last W: the
 * cache keeps every position, the products start at the window's first key). The source
 * families (fc_arch.c: mixtral, internlm2, gemma, ...) have no cached path: their "cache" keeps
 * the ids and each step runs the batched forward over all of them (slower, same result). */
#include "fc_generate.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_model_impl.h"
#include "fc_ops.h"

struct fc_kv_cache {
  int cap, len;
  int32_t *hist; /* (cap) ids fed so far, source families only (k, v unused) */
  float *k, *v; /* (L, cap, KVD) after RoPE / as projected */
  /* Scratch for up to n_cap new rows per call. */
  int n_cap;
  float *x;      /* (n, C) */
  float *ln;     /* (n, C) */
  float *xmid;   /* (n, C) */
  float *q;      /* (n, QD) */
  float *atty;   /* (n, QD) */
  float *g;      /* (n, F) */
  float *u;      /* (n, F) */
  float *h;      /* (n, F) */
  float *S;      /* (n, cap) attention scores */
  float *logits; /* (V) */
};

/* The rest of a layer for n rows once attention has filled s->atty: the output projection onto
 * the residual, then the SwiGLU MLP onto it, leaving the layer's output in s->x. */
static void layer_tail(fc_model_t *m, fc_kv_cache_t *s, const fc_layer_w_t *w, const fc_config_t *c, int n) {
  int C = c->hidden_size, F = c->intermediate_size, QD = c->num_heads * c->head_dim;
  memcpy(s->xmid, s->x, (size_t)n * C * sizeof(float));
  fc_model_linear(m, s->xmid, s->atty, w->wo, w->bo, n, QD, C, 1);
  fc_rmsnorm_forward(s->ln, NULL, s->xmid, w->ln2, n, C, c->rms_norm_eps);
  fc_model_linear(m, s->g, s->ln, w->wg, w->bg, n, C, F, 0);
  fc_model_linear(m, s->u, s->ln, w->wu, w->bu, n, C, F, 0);
  fc_swiglu_forward(s->h, s->g, s->u, (size_t)n * F);
  memcpy(s->x, s->xmid, (size_t)n * C * sizeof(float));
  fc_model_linear(m, s->x, s->h, w->wd, w->bd, n, F, C, 1);
}

int fc_kv_cache_new(fc_kv_cache_t **out, const fc_model_t *m, int capacity, fc_err_t *err) {
  *out = NULL;
  if (capacity <= 0) return fc_err_set(err, FC_EINVAL, "KV cache capacity %d must be positive", capacity);
  const fc_config_t *c = &m->cfg;
  /* Every buffer here and in the scratch grows with the capacity: a prompt past the model's
   * context would ask for terabytes instead of being refused. */
  if (c->max_position_embeddings > 0 && capacity > c->max_position_embeddings)
    return fc_err_set(err, FC_EINVAL, "%d positions (prompt plus new tokens) exceed the model's context of %d",
                      capacity, c->max_position_embeddings);
  size_t KVD = (size_t)c->num_kv_heads * c->head_dim;
  fc_kv_cache_t *kc = fc_xcalloc(1, sizeof *kc);
  kc->cap = capacity;
  if (!fc_config_is_pivot_type(c)) {
    kc->hist = fc_xmalloc((size_t)capacity * sizeof(int32_t));
    kc->logits = fc_xmalloc((size_t)c->vocab_size * sizeof(float));
    *out = kc;
    return 0;
  }
  kc->k = fc_xmalloc((size_t)c->num_layers * capacity * KVD * sizeof(float));
  kc->v = fc_xmalloc((size_t)c->num_layers * capacity * KVD * sizeof(float));
  kc->logits = fc_xmalloc((size_t)c->vocab_size * sizeof(float));
  *out = kc;
  return 0;
}

static void free_scratch(fc_kv_cache_t *c) {
  free(c->x), free(c->ln), free(c->xmid), free(c->q), free(c->atty);
  free(c->g), free(c->u), free(c->h), free(c->S);
}

void fc_kv_cache_destroy(fc_kv_cache_t **pc) {
  fc_kv_cache_t *c = *pc;
  if (!c) return;
  free_scratch(c);
  free(c->k), free(c->v), free(c->logits), free(c->hist);
  free(c);
  *pc = NULL;
}

int fc_kv_cache_len(const fc_kv_cache_t *c) { return c->len; }

static void scratch_reserve(fc_kv_cache_t *kc, const fc_config_t *c, int n) {
  if (n <= kc->n_cap) return;
  free_scratch(kc);
  size_t C = c->hidden_size, F = c->intermediate_size, QD = (size_t)c->num_heads * c->head_dim;
  kc->x = fc_xmalloc(n * C * sizeof(float));
  kc->ln = fc_xmalloc(n * C * sizeof(float));
  kc->xmid = fc_xmalloc(n * C * sizeof(float));
  kc->q = fc_xmalloc(n * QD * sizeof(float));
  kc->atty = fc_xmalloc(n * QD * sizeof(float));
  kc->g = fc_xmalloc(n * F * sizeof(float));
  kc->u = fc_xmalloc(n * F * sizeof(float));
  kc->h = fc_xmalloc(n * F * sizeof(float));
  kc->S = fc_xmalloc((size_t)n * kc->cap * sizeof(float));
  kc->n_cap = n;
}

const float *fc_model_decode(fc_model_t *m, fc_kv_cache_t *kc, const int32_t *ids, int n, fc_err_t *err) {
  const fc_config_t *c = &m->cfg;
  if (n <= 0) {
    fc_err_set(err, FC_EINVAL, "decode: no tokens to feed");
    return NULL;
  }
  if (kc->len + n > kc->cap) {
    fc_err_set(err, FC_EINVAL, "decode: %d tokens do not fit the KV cache (%d of %d used)", n, kc->len, kc->cap);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    if (ids[i] < 0 || ids[i] >= c->vocab_size) {
      fc_err_set(err, FC_EINVAL, "decode: token id %d is outside the vocabulary (%d)", ids[i], c->vocab_size);
      return NULL;
    }
  if (kc->hist) { /* a source family: the whole forward again over every id so far */
    memcpy(kc->hist + kc->len, ids, (size_t)n * sizeof(int32_t));
    const float *lg = fc_model_forward(m, kc->hist, 1, kc->len + n, 0, err);
    if (!lg) return NULL;
    memcpy(kc->logits, lg + (size_t)(kc->len + n - 1) * c->vocab_size, (size_t)c->vocab_size * sizeof(float));
    kc->len += n;
    return kc->logits;
  }
  scratch_reserve(kc, c, n);
  int pos0 = kc->len, total = pos0 + n;
  fc_model_rope_reserve(m, total);
  int C = c->hidden_size, HD = c->head_dim, NH = c->num_heads;
  int rep = c->num_heads / c->num_kv_heads, QD = NH * HD, KVD = c->num_kv_heads * HD;
  float scale = 1.0f / sqrtf((float)HD);
  fc_model_embed(m, kc->x, ids, (size_t)n);
  for (int l = 0; l < c->num_layers; l++) {
    const fc_layer_w_t *w = &m->w.layer[l];
    float *K = kc->k + (size_t)l * kc->cap * KVD, *V = kc->v + (size_t)l * kc->cap * KVD;
    fc_rmsnorm_forward(kc->ln, NULL, kc->x, w->ln1, n, C, c->rms_norm_eps);
    fc_model_linear(m, kc->q, kc->ln, w->wq, w->bq, n, C, QD, 0);
    fc_model_linear(m, K + (size_t)pos0 * KVD, kc->ln, w->wk, w->bk, n, C, KVD, 0);
    fc_model_linear(m, V + (size_t)pos0 * KVD, kc->ln, w->wv, w->bv, n, C, KVD, 0);
    fc_rope(kc->q, n, n, pos0, NH, HD, m->rope_cos, m->rope_sin, 0);
    fc_rope(K + (size_t)pos0 * KVD, n, n, pos0, c->num_kv_heads, HD, m->rope_cos, m->rope_sin, 0);
    /* Keys before c0 are outside every new row's window: the scores S (n, total - c0) start
     * at key c0, so row i is at position pos0 + i - c0 of them. */
    int win = fc_config_layer_window(c, l), c0 = win > 0 && pos0 - win + 1 > 0 ? pos0 - win + 1 : 0;
    int ns = total - c0;
    for (int h = 0; h < NH; h++) {
      const float *Kh = K + (size_t)c0 * KVD + (size_t)(h / rep) * HD;
      const float *Vh = V + (size_t)c0 * KVD + (size_t)(h / rep) * HD;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, ns, HD, scale, kc->q + (size_t)h * HD, QD, Kh, KVD,
                  0.0f, kc->S, ns);
      fc_causal_softmax(kc->S, pos0 - c0, n, ns, win);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, HD, ns, 1.0f, kc->S, ns, Vh, KVD, 0.0f,
                  kc->atty + (size_t)h * HD, QD);
    }
    layer_tail(m, kc, w, c, n);
  }
  /* Only the last position's distribution is needed. */
  const float *last = kc->x + (size_t)(n - 1) * C;
  fc_rmsnorm_forward(kc->ln, NULL, last, m->w.lnf, 1, C, c->rms_norm_eps);
  fc_model_linear(m, kc->logits, kc->ln, m->w.head, NULL, 1, C, c->vocab_size, 0);
  kc->len = total;
  return kc->logits;
}

void fc_gen_opts_default(fc_gen_opts_t *o) {
  o->max_tokens = 128;
  o->temperature = 0.0f;
  o->top_p = 1.0f;
  o->seed = 0;
  o->eos_id = -2;
}

typedef struct idx_prob {
  float p;
  int32_t id;
} idx_prob_t;

static int by_prob_desc(const void *a, const void *b) {
  const idx_prob_t *x = a, *y = b;
  if (x->p != y->p) return x->p < y->p ? 1 : -1;
  return x->id - y->id;
}

static int32_t argmax(const float *v, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; i++)
    if (v[i] > v[best]) best = i;
  return best;
}

/* Softmax at the temperature, keep the smallest most-probable set whose mass reaches top_p,
 * draw from it. */
static int32_t sample(const float *logits, int V, float temperature, float top_p, fc_rng_t *rng, idx_prob_t *buf) {
  float mx = logits[0];
  for (int i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
  double sum = 0;
  for (int i = 0; i < V; i++) {
    buf[i].p = expf((logits[i] - mx) / temperature);
    buf[i].id = i;
    sum += buf[i].p;
  }
  int keep = V;
  if (top_p > 0 && top_p < 1) {
    qsort(buf, (size_t)V, sizeof *buf, by_prob_desc);
    double acc = 0;
    for (int i = 0; i < V; i++) {
      acc += buf[i].p / sum;
      if (acc >= top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (int i = 0; i < keep; i++) sum += buf[i].p;
  }
  double r = fc_rng_uniform(rng) * sum, acc = 0;
  for (int i = 0; i < keep; i++) {
    acc += buf[i].p;
    if (r < acc) return buf[i].id;
  }
  return buf[keep - 1].id;
}

int fc_generate(fc_model_t *m, const int32_t *prompt, int n, const fc_gen_opts_t *opts, int32_t **out,
                int *nout, fc_err_t *err) {
  *out = NULL;
  *nout = 0;
  if (n <= 0) return fc_err_set(err, FC_EINVAL, "generate: the prompt is empty");
  if (opts->max_tokens <= 0) return fc_err_set(err, FC_EINVAL, "generate: max_tokens must be positive");
  const fc_config_t *c = &m->cfg;
  int eos = opts->eos_id == -2 ? c->eos_token_id : opts->eos_id;
  fc_kv_cache_t *kc;
  int rc = fc_kv_cache_new(&kc, m, n + opts->max_tokens, err);
  if (rc) return rc;
  int32_t *res = fc_xmalloc((size_t)opts->max_tokens * sizeof(int32_t));
  idx_prob_t *buf = opts->temperature > 0 ? fc_xmalloc((size_t)c->vocab_size * sizeof *buf) : NULL;
  fc_rng_t rng;
  fc_rng_seed(&rng, opts->seed);
  int k = 0;
  const float *logits = fc_model_decode(m, kc, prompt, n, err);
  while (logits) {
    int32_t next = opts->temperature > 0 ? sample(logits, c->vocab_size, opts->temperature, opts->top_p, &rng, buf)
                                         : argmax(logits, c->vocab_size);
    res[k++] = next;
    if (next == eos || k == opts->max_tokens) break;
    logits = fc_model_decode(m, kc, &next, 1, err);
  }
  free(buf);
  fc_kv_cache_destroy(&kc);
  if (!logits) {
    free(res);
    return err && err->code ? err->code : FC_EINVAL;
  }
  *out = res;
  *nout = k;
  return 0;
}

/* One decoding step for n sequences, each with its own cache and position: row i feeds ids[i]
 * to caches[i]; logits (n, V) of each row's new position. Scratch of the first cache. */
static int decode_rows(fc_model_t *m, fc_kv_cache_t **caches, const int32_t *ids, int n, float *logits,
                       fc_kv_cache_t *sc, fc_err_t *err) {
  const fc_config_t *c = &m->cfg;
  int C = c->hidden_size, HD = c->head_dim, NH = c->num_heads;
  int rep = NH / c->num_kv_heads, QD = NH * HD, KVD = c->num_kv_heads * HD;
  float scale = 1.0f / sqrtf((float)HD);
  int maxpos = 0;
  for (int i = 0; i < n; i++) {
    if (caches[i]->len >= caches[i]->cap)
      return fc_err_set(err, FC_EINVAL, "decode: the KV cache of row %d is full", i);
    if (ids[i] < 0 || ids[i] >= c->vocab_size)
      return fc_err_set(err, FC_EINVAL, "decode: token id %d is outside the vocabulary (%d)", ids[i], c->vocab_size);
    maxpos = caches[i]->len + 1 > maxpos ? caches[i]->len + 1 : maxpos;
  }
  fc_model_rope_reserve(m, maxpos);
  scratch_reserve(sc, c, n);
  float *knew = fc_xmalloc((size_t)n * KVD * sizeof(float)), *vnew = fc_xmalloc((size_t)n * KVD * sizeof(float));
  fc_model_embed(m, sc->x, ids, (size_t)n);
  for (int l = 0; l < c->num_layers; l++) {
    const fc_layer_w_t *w = &m->w.layer[l];
    int win = fc_config_layer_window(c, l);
    fc_rmsnorm_forward(sc->ln, NULL, sc->x, w->ln1, n, C, c->rms_norm_eps);
    fc_model_linear(m, sc->q, sc->ln, w->wq, w->bq, n, C, QD, 0);
    fc_model_linear(m, knew, sc->ln, w->wk, w->bk, n, C, KVD, 0);
    fc_model_linear(m, vnew, sc->ln, w->wv, w->bv, n, C, KVD, 0);
    for (int i = 0; i < n; i++) {
      fc_kv_cache_t *kc = caches[i];
      int pos = kc->len;
      float *K = kc->k + (size_t)l * kc->cap * KVD, *V = kc->v + (size_t)l * kc->cap * KVD;
      float *q = sc->q + (size_t)i * QD, *y = sc->atty + (size_t)i * QD;
      memcpy(K + (size_t)pos * KVD, knew + (size_t)i * KVD, (size_t)KVD * sizeof(float));
      memcpy(V + (size_t)pos * KVD, vnew + (size_t)i * KVD, (size_t)KVD * sizeof(float));
      fc_rope(q, 1, 1, pos, NH, HD, m->rope_cos, m->rope_sin, 0);
      fc_rope(K + (size_t)pos * KVD, 1, 1, pos, c->num_kv_heads, HD, m->rope_cos, m->rope_sin, 0);
      /* The row sees keys [c0, pos]: all of them, or the last W on a sliding-window layer. */
      int c0 = win > 0 && pos - win + 1 > 0 ? pos - win + 1 : 0, ns = pos + 1 - c0;
      for (int h = 0; h < NH; h++) {
        const float *Kh = K + (size_t)c0 * KVD + (size_t)(h / rep) * HD;
        const float *Vh = V + (size_t)c0 * KVD + (size_t)(h / rep) * HD;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, ns, HD, scale, q + (size_t)h * HD, QD, Kh, KVD,
                    0.0f, sc->S, ns);
        fc_causal_softmax(sc->S, pos - c0, 1, ns, win);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, HD, ns, 1.0f, sc->S, ns, Vh, KVD, 0.0f,
                    y + (size_t)h * HD, QD);
      }
    }
    layer_tail(m, sc, w, c, n);
  }
  fc_rmsnorm_forward(sc->ln, NULL, sc->x, m->w.lnf, n, C, c->rms_norm_eps);
  fc_model_linear(m, logits, sc->ln, m->w.head, NULL, n, C, c->vocab_size, 0);
  for (int i = 0; i < n; i++) caches[i]->len++;
  free(knew);
  free(vnew);
  return 0;
}

int fc_generate_batch(fc_model_t *m, const int32_t *const *prompts, const int *lens, int B,
                      const fc_gen_opts_t *opts, int32_t **outs, int *nouts, fc_err_t *err) {
  for (int i = 0; i < B; i++) outs[i] = NULL, nouts[i] = 0;
  if (B <= 0) return fc_err_set(err, FC_EINVAL, "generate: no prompts");
  if (opts->max_tokens <= 0) return fc_err_set(err, FC_EINVAL, "generate: max_tokens must be positive");
  for (int i = 0; i < B; i++)
    if (lens[i] <= 0) return fc_err_set(err, FC_EINVAL, "generate: prompt %d is empty", i);
  const fc_config_t *c = &m->cfg;
  if (!fc_config_is_pivot_type(c)) { /* no batched decoding for the source families: row by row */
    int rc = 0;
    for (int i = 0; i < B && !rc; i++) {
      fc_gen_opts_t oi = *opts;
      oi.seed = opts->seed + (uint64_t)i;
      rc = fc_generate(m, prompts[i], lens[i], &oi, &outs[i], &nouts[i], err);
    }
    if (rc)
      for (int i = 0; i < B; i++) free(outs[i]), outs[i] = NULL, nouts[i] = 0;
    return rc;
  }
  int V = c->vocab_size, eos = opts->eos_id == -2 ? c->eos_token_id : opts->eos_id, rc = 0;
  fc_kv_cache_t **caches = fc_xcalloc((size_t)B, sizeof *caches), **act = fc_xcalloc((size_t)B, sizeof *act);
  fc_rng_t *rng = fc_xmalloc((size_t)B * sizeof *rng);
  int *rows = fc_xmalloc((size_t)B * sizeof *rows);
  int32_t *next = fc_xmalloc((size_t)B * sizeof *next);
  float *logits = fc_xmalloc((size_t)B * V * sizeof(float));
  idx_prob_t *buf = opts->temperature > 0 ? fc_xmalloc((size_t)V * sizeof *buf) : NULL;
  fc_kv_cache_t *sc = NULL;
  for (int i = 0; i < B && !rc; i++) {
    outs[i] = fc_xmalloc((size_t)opts->max_tokens * sizeof(int32_t));
    fc_rng_seed(&rng[i], opts->seed + (uint64_t)i);
    if ((rc = fc_kv_cache_new(&caches[i], m, lens[i] + opts->max_tokens, err))) break;
    const float *lg = fc_model_decode(m, caches[i], prompts[i], lens[i], err);
    if (!lg) rc = err && err->code ? err->code : FC_EINVAL;
    else memcpy(logits + (size_t)i * V, lg, (size_t)V * sizeof(float));
  }
  if (!rc) rc = fc_kv_cache_new(&sc, m, 1, err);
  int n = B; /* rows whose logits are in logits[0..n) in the order rows[] */
  for (int i = 0; i < B; i++) rows[i] = i;
  while (!rc && n > 0) {
    int k = 0;
    for (int j = 0; j < n; j++) {
      int i = rows[j];
      const float *lg = logits + (size_t)j * V;
      int32_t t = opts->temperature > 0 ? sample(lg, V, opts->temperature, opts->top_p, &rng[i], buf) : argmax(lg, V);
      outs[i][nouts[i]++] = t;
      if (t == eos || nouts[i] == opts->max_tokens) continue;
      rows[k] = i, next[k] = t, act[k] = caches[i];
      k++;
    }
    n = k;
    if (n > 0) {
      /* the scratch cache must hold the longest row's scores */
      int longest = 0;
      for (int j = 0; j < n; j++) longest = act[j]->cap > longest ? act[j]->cap : longest;
      if (sc->cap < longest) {
        fc_kv_cache_destroy(&sc);
        if ((rc = fc_kv_cache_new(&sc, m, longest, err))) break;
      }
      rc = decode_rows(m, act, next, n, logits, sc, err);
    }
  }
  for (int i = 0; i < B; i++) fc_kv_cache_destroy(&caches[i]);
  fc_kv_cache_destroy(&sc);
  free(caches), free(act), free(rng), free(rows), free(next), free(logits), free(buf);
  if (rc)
    for (int i = 0; i < B; i++) free(outs[i]), outs[i] = NULL, nouts[i] = 0;
  return rc;
}
