/* Model merging, streamed tensor by tensor. Each method is a few passes over fixed-size blocks
 * of one tensor: blocks are converted from the mapped file into small f32 scratch buffers, so
 * no pass materialises whole deltas; for bf16 models (the common case) the hot passes read the
 * mapping directly, eight elements at a time, each thread taking runs of blocks, and the final
 * pass writes the output file from each thread. Top-k selections (TIES magnitudes, SCE
 * variances) compare f32 bit patterns (non-negative floats order like integers): a sample
 * places a band around the k-th largest key, one pass counts the keys above it and collects
 * those inside (for bf16 TIES, the sample's frequent keys are counted per block instead), and
 * the exact threshold is found among them; when the sample misleads, a two-level radix select
 * runs instead. Floating-point reductions are summed per block and then in block order, and
 * integer counts are order-free, so results never depend on the thread count. */
#include "fc_merge.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The block loops are compiled twice, for AVX2 and for the baseline, and picked at load time
 * (GCC/Clang function multiversioning); the helpers are inlined into each version. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FC_HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define FC_HOT
#endif
#define FC_INLINE static inline __attribute__((always_inline))

#define BLK 8192 /* elements per block: a few scratch blocks fit in L2 (and a count fits u16) */
#define TTAB 128 /* positions of a tie-group table (open addressing, at most TTAB_MAX used) */
#define TTAB_MAX 48
#define NHEAVY 4
#define NBIN 65536

static const char *method_names[FC_MERGE_COUNT] = {
    [FC_MERGE_LINEAR] = "linear", [FC_MERGE_TASK_ARITHMETIC] = "task_arithmetic",
    [FC_MERGE_TIES] = "ties",     [FC_MERGE_DARE_TIES] = "dare_ties",
    [FC_MERGE_DARE_LINEAR] = "dare_linear", [FC_MERGE_SLERP] = "slerp",
    [FC_MERGE_SCE] = "sce",       [FC_MERGE_VARM] = "varm",
};

const char *fc_merge_method_name(fc_merge_method_t m) { return method_names[m]; }

int fc_merge_method_parse(const char *s, fc_merge_method_t *out) {
  for (int i = 0; i < FC_MERGE_COUNT; i++)
    if (!strcmp(s, method_names[i])) return *out = (fc_merge_method_t)i, 0;
  return FC_EINVAL;
}

void fc_merge_cfg_init(fc_merge_cfg_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->select_topk = 1.0;
  cfg->t = NAN;
  cfg->normalize = -1;
  cfg->rescale = -1;
  cfg->sce_mask_scope = FC_SCE_SCOPE_DELTAS;
  cfg->dtype = -1;
}

uint64_t fc_merge_fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return h;
}

static uint64_t dare_model_key(uint64_t seed, const char *name, int model) {
  return fc_splitmix64(fc_splitmix64(seed ^ fc_merge_fnv1a64(name)) + (uint64_t)model);
}

/* fc_splitmix64, inlined here because it runs once per element per model. */
static inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* One 64-bit draw covers two elements: 32 bits each (the high half for even indices). */
static inline uint32_t dare_u32(uint64_t key, uint64_t elem) {
  uint64_t r = mix64(key + (elem >> 1));
  return (uint32_t)(elem & 1 ? r : r >> 32);
}

static inline uint64_t dare_threshold(double density) {
  /* u < density with u = x 2^-32 is x < ceil(density 2^32) for the integer x. */
  return (uint64_t)ceil(density * 0x1p32);
}

static inline int dare_keep_key(uint64_t key, uint64_t elem, double density) {
  return dare_u32(key, elem) < dare_threshold(density);
}

int fc_merge_dare_keep(uint64_t seed, const char *tensor_name, int model, uint64_t elem,
                       double density) {
  return dare_keep_key(dare_model_key(seed, tensor_name, model), elem, density);
}

static int method_default_normalize(fc_merge_method_t m) {
  return m == FC_MERGE_LINEAR || m == FC_MERGE_TIES;
}
static int method_default_rescale(fc_merge_method_t m) {
  return m == FC_MERGE_DARE_TIES || m == FC_MERGE_DARE_LINEAR;
}
static int method_uses_base(fc_merge_method_t m) { return m != FC_MERGE_LINEAR; }

/* ---- block conversion ---- */

static inline uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* Dtypes are checked to be float types before merging. */
static inline void load_f32(const fc_st_tensor_t *t, size_t off, size_t cnt, float *dst) {
  int rc = fc_st_to_f32_range(t, off, cnt, dst, NULL);
  assert(rc == 0);
  (void)rc;
}

static inline uint16_t to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

FC_INLINE void store_out(void *out, fc_dtype_t dt, size_t off, size_t cnt, const float *src) {
  switch (dt) {
  case FC_DT_F32: memcpy((float *)out + off, src, 4 * cnt); break;
  case FC_DT_BF16: {
    uint16_t *o = (uint16_t *)out + off;
    for (size_t i = 0; i < cnt; i++) o[i] = to_bf16(src[i]);
    break;
  }
  case FC_DT_F16: {
    uint16_t *o = (uint16_t *)out + off;
    for (size_t i = 0; i < cnt; i++) o[i] = fc_f32_to_f16(src[i]);
    break;
  }
  default: assert(0 && "output dtype is f32, f16 or bf16");
  }
}

/* ---- one tensor's job ---- */

/* Top-k selection of the largest non-negative float keys with ties to the lower index:
 * threshold bits thr; elements with key > thr are in, key == thr are in while the running
 * count of ties is below need. all_eq: every tie is in (the common case, no per-block counts). */
typedef struct sel {
  int64_t k;
  int active; /* 0: keep everything (density >= 1) */
  uint32_t hi;
  uint32_t thr;
  int64_t need;
  int all_eq;
  int64_t *quota; /* [nblocks] ties block b may keep, when !all_eq */
  int done;       /* threshold found (by the band pass) */
  /* Band pass: keys in [lo, hi] (estimated from a sample to straddle the k-th largest) are
   * collected with their index; keys above hi are only counted. */
  int band;
  uint32_t lo, bhi;
  int64_t above;
  uint64_t *cidx; /* [nc] candidate indices, each block's contiguous and in index order */
  uint32_t *ckey; /* [nc] */
  float *cd;      /* sce: [nc][nm] the candidates' deltas */
  size_t nc, cap;
  /* Fused TIES: bf16 deltas take few distinct values near a quantile, some shared by a large
   * share of the band's elements. The keys most frequent in the sample's band are counted per
   * block (J->bcnt) instead of listed as candidates. */
  uint32_t tkey[TTAB];   /* key + 1 at its hash position, 0 empty */
  int64_t tcount[TTAB];  /* totals over the blocks, after the pass */
  int ntab;
  /* The few most frequent of them, often a few percent of the tensor each, are counted with
   * vector compares, so no element of theirs takes the per-element path. */
  int nheavy;
  uint32_t heavy[NHEAVY];
  int hpos[NHEAVY];      /* their table positions */
} sel_t;

typedef struct job {
  const fc_merge_cfg_t *cfg;
  fc_merge_method_t method;
  size_t n, nblocks;
  int nm;
  const fc_st_tensor_t *base;
  const fc_st_tensor_t *const *models;
  void *out;
  fc_dtype_t out_dt;
  float w[FC_MERGE_MAX_MODELS];     /* per-model weights as f32, as mergekit's weight tensor */
  double dens[FC_MERGE_MAX_MODELS];
  uint64_t dkey[FC_MERGE_MAX_MODELS];
  int normalize, rescale;
  double divisor; /* no-consensus methods: sum of weights (guarded) */
  sel_t sel[FC_MERGE_MAX_MODELS];   /* ties: per model; sce: sel[0] on variance */
  float *var;                       /* sce: [n] population variance across models */
  int select;                       /* sce: 1 select by variance, 0 keep all, -1 keep none */
  float sw[FC_MERGE_MAX_MODELS];    /* sce / varm weights */
  float s0, s1;                     /* slerp coefficients */
  double *part;                     /* [nblocks][npart] per-block partial sums */
  int npart;
  /* per-thread histogram passes */
  int pass;
  uint64_t *hist; /* merged [nsel][NBIN] */
  int nsel;
  int64_t *blk_eq; /* [nsel][nblocks] ties per block */
  int64_t *blk_nz; /* sce: [nblocks] non-zero variances per block */
  struct workspace *ws; /* buffers kept across tensors by fc_merge_run, or NULL */
  int fused;            /* F_*: the final pass reads bf16 inputs directly (fused_block) */
  int out_fd;           /* >= 0: the final pass pwrites its output at out_pos of this file */
  uint64_t out_pos;
  atomic_int out_errno; /* the first failed pwrite's errno */
  int page_io;          /* inputs are file mappings the first pass maps run by run */
  int populated;        /* a pass over the inputs has run (and mapped them) */
  uint16_t *bcnt;       /* fused TIES band pass: [nm][nblocks][TTAB] counts of sel[i].tkey */
  int fused_scale;      /* multiply the sum by fused_rdiv */
  double fused_rdiv;    /* 1 / divisor */
  pthread_mutex_t mu;
} job_t;

/* Buffers reused from tensor to tensor, so big ones are not faulted in afresh each time. */
typedef struct workspace {
  float *var;
  size_t var_cap;
  uint16_t *bcnt; /* fused TIES: tie-group counts per block */
  size_t bcnt_cap;
} workspace_t;

typedef struct scratch {
  float *b;  /* [BLK] base block */
  float *m;  /* [nm][BLK] model blocks (deltas for task-vector methods) */
  float *o;  /* [BLK] output block */
  double *a1, *a2, *a3; /* [BLK] per-element accumulators */
  uint32_t *hist; /* [nsel][NBIN] thread-local histograms */
  sel_t tc[FC_MERGE_MAX_MODELS]; /* thread-local band candidates (above, cidx, ckey, cd, nc) */
  void *dst;      /* where the final pass stores element off0 (J->out, or ob when writing to a file) */
  size_t off0;
  uint8_t *ob;    /* [FUSED_RUN * BLK] output elements of one run of blocks, for pwrite */
} scratch_t;

static void cand_push(sel_t *c, uint64_t idx, uint32_t key, const float *d, int nd) {
  if (c->nc == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 4096;
    c->cidx = fc_xrealloc(c->cidx, c->cap * sizeof *c->cidx);
    c->ckey = fc_xrealloc(c->ckey, c->cap * sizeof *c->ckey);
    if (nd) c->cd = fc_xrealloc(c->cd, c->cap * (size_t)nd * sizeof *c->cd);
  }
  c->cidx[c->nc] = idx;
  c->ckey[c->nc] = key;
  if (nd) memcpy(c->cd + c->nc * (size_t)nd, d, (size_t)nd * sizeof *d);
  c->nc++;
}

/* Appends a thread's candidates (whole blocks) to the job's. */
static void cand_merge(sel_t *dst, const sel_t *src, int nd) {
  dst->above += src->above;
  if (!src->nc) return;
  if (dst->nc + src->nc > dst->cap) {
    dst->cap = dst->nc + src->nc;
    dst->cidx = fc_xrealloc(dst->cidx, dst->cap * sizeof *dst->cidx);
    dst->ckey = fc_xrealloc(dst->ckey, dst->cap * sizeof *dst->ckey);
    if (nd) dst->cd = fc_xrealloc(dst->cd, dst->cap * (size_t)nd * sizeof *dst->cd);
  }
  memcpy(dst->cidx + dst->nc, src->cidx, src->nc * sizeof *src->cidx);
  memcpy(dst->ckey + dst->nc, src->ckey, src->nc * sizeof *src->ckey);
  if (nd) memcpy(dst->cd + dst->nc * (size_t)nd, src->cd, src->nc * (size_t)nd * sizeof *src->cd);
  dst->nc += src->nc;
}

static void cand_free(sel_t *c) {
  free(c->cidx);
  free(c->ckey);
  free(c->cd);
  c->cidx = NULL;
  c->ckey = NULL;
  c->cd = NULL;
  c->nc = c->cap = 0;
}

/* Loads block blk: base into s->b and each model (minus base when deltas) into s->m. */
FC_INLINE void load_range(const job_t *J, scratch_t *s, size_t off, size_t cnt, int deltas) {
  if (J->base) load_f32(J->base, off, cnt, s->b);
  for (int i = 0; i < J->nm; i++) {
    float *m = s->m + (size_t)i * BLK;
    load_f32(J->models[i], off, cnt, m);
    if (deltas)
      for (size_t j = 0; j < cnt; j++) m[j] -= s->b[j];
  }
}

FC_INLINE size_t load_block(const job_t *J, scratch_t *s, size_t blk, int deltas) {
  size_t off = blk * BLK, cnt = J->n - off < BLK ? J->n - off : BLK;
  load_range(J, s, off, cnt, deltas);
  return cnt;
}

/* SCE's selection key per element of the deltas in s->m, into v: n^3 times the population
 * variance across the n models, computed without a division as sum_i (n d_i - S)^2 with
 * S = sum_i d_i (f32, model order). It orders elements as the variance does and is zero
 * exactly when the deltas are equal. The fused path's var8 does the same operations, so both
 * give the same keys. */
FC_INLINE void block_var(const job_t *J, scratch_t *s, size_t cnt, float *v) {
  const int nm = J->nm;
  const float fnm = (float)nm;
  float *sum = (float *)s->a1;
  for (size_t j = 0; j < cnt; j++) sum[j] = 0, v[j] = 0;
  for (int i = 0; i < nm; i++) {
    const float *d = s->m + (size_t)i * BLK;
    for (size_t j = 0; j < cnt; j++) sum[j] += d[j];
  }
  for (int i = 0; i < nm; i++) {
    const float *d = s->m + (size_t)i * BLK;
    for (size_t j = 0; j < cnt; j++) {
      float e = fnm * d[j] - sum[j];
      v[j] += e * e;
    }
  }
}

/* Applies TIES's magnitude mask (sel per model) to deltas in s->m for block blk. */
FC_INLINE void ties_mask(const job_t *J, scratch_t *s, size_t blk, size_t cnt) {
  for (int i = 0; i < J->nm; i++) {
    const sel_t *S = &J->sel[i];
    if (!S->active) continue;
    float *d = s->m + (size_t)i * BLK;
    int64_t q = S->all_eq ? -1 : S->quota[blk];
    if (q <= 0) { /* all of this block's ties are in (-1) or none are (0) */
      const uint32_t lo = q < 0 ? S->thr : S->thr + 1;
      for (size_t j = 0; j < cnt; j++) d[j] = f2u(fabsf(d[j])) >= lo ? d[j] : 0.0f;
      continue;
    }
    for (size_t j = 0; j < cnt; j++) {
      uint32_t key = f2u(fabsf(d[j]));
      if (key > S->thr) continue;
      if (key == S->thr && q > 0) {
        q--;
        continue;
      }
      d[j] = 0.0f;
    }
  }
}

/* SCE selection mask for one block into keep[] (1 selected), from the block's variances v. */
FC_INLINE void sce_select(const job_t *J, size_t blk, size_t cnt, const float *v, uint8_t *keep) {
  if (J->select == 0) {
    memset(keep, 1, cnt);
    return;
  }
  if (J->select < 0) {
    memset(keep, 0, cnt);
    return;
  }
  const sel_t *S = &J->sel[0];
  int64_t q = S->all_eq ? -1 : S->quota[blk];
  if (q <= 0) {
    const uint32_t lo = q < 0 ? S->thr : S->thr + 1;
    for (size_t j = 0; j < cnt; j++) keep[j] = f2u(v[j]) >= lo;
    return;
  }
  for (size_t j = 0; j < cnt; j++) {
    uint32_t key = f2u(v[j]);
    keep[j] = key > S->thr || (key == S->thr && q > 0);
    if (key == S->thr && q > 0) q--;
  }
}

FC_INLINE void hist_add(const job_t *J, scratch_t *s, int si, const uint32_t *keys, size_t cnt,
                     size_t blk) {
  uint32_t *h = s->hist + (size_t)si * NBIN;
  const sel_t *S = &J->sel[si];
  if (S->done) return;
  if (J->pass == 0) {
    for (size_t j = 0; j < cnt; j++) h[keys[j] >> 16]++;
  } else if (J->pass == 1) {
    for (size_t j = 0; j < cnt; j++)
      if ((keys[j] >> 16) == S->hi) h[keys[j] & 0xffff]++;
  } else {
    int64_t e = 0;
    for (size_t j = 0; j < cnt; j++) e += keys[j] == S->thr;
    J->blk_eq[(size_t)si * J->nblocks + blk] = e;
  }
}

/* TIES sign election on weighted deltas wd[nm][BLK]: the majority sign is that of their sum
 * (zero counts as positive), an entry agrees when its sign equals it (a zero never does);
 * mixed += agreeing entries, div += their models' weights. */
FC_INLINE void combine_consensus(const float *wd, int nm, const float *w, size_t cnt, float *mixed,
                              float *div, double *sum) {
  for (size_t j = 0; j < cnt; j++) sum[j] = 0;
  for (int i = 0; i < nm; i++) {
    const float *d = wd + (size_t)i * BLK;
    for (size_t j = 0; j < cnt; j++) sum[j] += d[j];
  }
  /* Majority sign as +-1 floats, so the agreement test d * sgn > 0 vectorises. */
  float sgn[BLK];
  for (size_t j = 0; j < cnt; j++) sgn[j] = sum[j] >= 0 ? 1.0f : -1.0f;
  float am[BLK];
  for (int i = 0; i < nm; i++) {
    const float *d = wd + (size_t)i * BLK;
    const float wi = w[i];
    for (size_t j = 0; j < cnt; j++) am[j] = d[j] * sgn[j] > 0 ? 1.0f : 0.0f;
    for (size_t j = 0; j < cnt; j++) {
      mixed[j] += d[j] * am[j];
      div[j] += wi * am[j];
    }
  }
}

/* ---- fused final pass for bf16 models: no f32 scratch blocks ----
 * The weighted-sum methods read each input once, eight elements at a time straight from the
 * mapping, and write the output dtype directly: one pass over the data instead of a convert
 * pass per input, an accumulate pass per model and an output pass. The arithmetic is the
 * generic path's, element for element (f32, sums in model order), except that a
 * normalising division by the constant sum of weights is a multiplication by its reciprocal
 * (the f32 result can differ from the divided one in its last bit, rarely). */
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));
typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef uint16_t vh8 __attribute__((vector_size(16)));

/* Vectors pass through pointers: by value they would change the ABI between the clones. */
#define ld8_bf16(p) ld8_bf16_((p), &(vf8){0})
FC_INLINE vf8 *ld8_bf16_(const uint16_t *p, vf8 *dst) {
  vh8 h;
  memcpy(&h, p, sizeof h);
  vu8 u = __builtin_convertvector(h, vu8) << 16;
  *dst = (vf8)u;
  return dst;
}

FC_INLINE void st8(void *out, fc_dtype_t dt, size_t off, const vf8 *op) {
  const vf8 o = *op;
  if (dt == FC_DT_F32) {
    memcpy((float *)out + off, &o, sizeof o);
    return;
  }
  /* to_bf16, lane-wise: round to nearest even, NaNs stay quiet NaNs. */
  vu8 u = (vu8)o;
  vu8 r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  vu8 nan = (vu8)((vi8)(u & 0x7fffffffu) > 0x7f800000);
  vu8 q = ((u >> 16) | 0x40u) & nan;
  vh8 h = __builtin_convertvector((r & ~nan) | q, vh8);
  memcpy((uint16_t *)out + off, &h, sizeof h);
}

enum { F_NONE, F_SUM, F_DELTA_SUM, F_SLERP, F_TIES, F_SCE };

static inline int any8(vu8 m) {
  uint64_t q[4];
  memcpy(q, &m, sizeof q);
  return (q[0] | q[1] | q[2] | q[3]) != 0;
}

/* Bit l set for each set lane l of a mask, so the few set lanes can be visited with ctz
 * (fewer mispredicted branches than a test per lane). */
static inline unsigned lane_bits(vu8 m) {
  vu8 bits = m & (vu8){1, 2, 4, 8, 16, 32, 64, 128};
  unsigned b = 0;
  for (int l = 0; l < 8; l++) b |= bits[l];
  return b;
}

/* Output vectors for elements [j, j + 8U) of the fused path; mp/bp point at element 0 of the
 * block (or at zero-padded copies for the tail). */
#define FU 4          /* groups of eight per step, so their dependency chains interleave */
#define FUSED_RUN 16  /* blocks a thread takes at a time in the final pass (1 MB of bf16 input) */
#define FUSED_PF 512  /* prefetch distance in elements (1 KB of bf16) */
FC_INLINE void fused_step(const job_t *J, const int nm, const uint16_t *const *mp, const uint16_t *bp, size_t j,
                          vf8 *o, int U) {
  const int kind = J->fused, scale = J->fused_scale;
  const float *w = J->method == FC_MERGE_VARM ? J->sw : J->w;
  if (kind == F_SLERP) {
    for (int u = 0; u < U; u++) o[u] = J->s0 * *ld8_bf16(bp + j + 8 * u) + J->s1 * *ld8_bf16(mp[0] + j + 8 * u);
  } else if (kind == F_SUM) {
    vf8 acc[FU] = {{0}};
    for (int i = 0; i < nm; i++) {
      const float wi = w[i];
      for (int u = 0; u < U; u++) acc[u] += wi * *ld8_bf16(mp[i] + j + 8 * u);
    }
    for (int u = 0; u < U; u++) {
      if (scale) acc[u] *= (float)J->fused_rdiv;
      o[u] = acc[u];
    }
  } else {
    vf8 b[FU], mixed[FU] = {{0}};
    for (int u = 0; u < U; u++) b[u] = *ld8_bf16(bp + j + 8 * u);
    for (int i = 0; i < nm; i++) {
      const float wi = w[i];
      for (int u = 0; u < U; u++) mixed[u] += (*ld8_bf16(mp[i] + j + 8 * u) - b[u]) * wi;
    }
    for (int u = 0; u < U; u++) {
      if (scale) mixed[u] *= (float)J->fused_rdiv;
      o[u] = b[u] + mixed[u];
    }
  }
}

/* The majority-sign test (sum_i x_i >= 0, the sum taken exactly) for eight-lane groups x[i][u].
 * Two f32 values sum to zero only when they cancel exactly and rounding keeps the sign, so
 * one f32 addition decides; more terms are summed in f64, where a few f32 values sum exactly
 * (a rounded f32 partial sum could cancel to the wrong sign, and bf16 deltas often cancel). */
FC_INLINE void sign_pos(int nm, const vf8 (*x)[FU], int U, vu8 *pos) {
  typedef int64_t vl8 __attribute__((vector_size(64)));
  for (int u = 0; u < U; u++) {
    if (nm <= 2) {
      vf8 s = x[0][u];
      if (nm == 2) s += x[1][u];
      pos[u] = (vu8)(s >= (vf8){0});
      continue;
    }
    vd8 s = {0};
    for (int i = 0; i < nm; i++) s += __builtin_convertvector(x[i][u], vd8);
    pos[u] = (vu8)__builtin_convertvector((vl8)(s >= 0), vi8);
  }
}

/* TIES, 8U elements: the generic path's ties_mask (blocks whose ties are all in or all out),
 * weighting and combine_consensus, in registers; U groups interleave their dependency chains. */
FC_INLINE void fused_ties_step(const job_t *J, const int nm, const uint16_t *const *mp, const uint16_t *bp, size_t j,
                               const uint32_t *lo, vf8 *o, int U) {
  const vf8 one = {1, 1, 1, 1, 1, 1, 1, 1}, zero = {0};
  vf8 wd[FC_MERGE_MAX_MODELS][FU], b[FU], sgn[FU], mixed[FU] = {{0}}, div[FU] = {{0}};
  vu8 pos[FU];
  for (int u = 0; u < U; u++) b[u] = *ld8_bf16(bp + j + 8 * u);
  for (int i = 0; i < nm; i++) {
    const float wi = J->w[i];
    for (int u = 0; u < U; u++) {
      vf8 d = *ld8_bf16(mp[i] + j + 8 * u) - b[u];
      vu8 keep = (vu8)(((vu8)d & 0x7fffffffu) >= lo[i]); /* lo 0: every element */
      wd[i][u] = (vf8)((vu8)d & keep) * wi;
    }
  }
  sign_pos(nm, (const vf8(*)[FU])wd, U, pos);
  for (int u = 0; u < U; u++) sgn[u] = (vf8)(((vu8)one & pos[u]) | ((vu8)-one & ~pos[u]));
  /* Agreeing entries are added through a mask (the generic path multiplies by 1 or 0:
   * the same sums, as mixed starts at +0 and so never holds -0). */
  for (int i = 0; i < nm; i++) {
    const vu8 wi = (vu8)((vf8){0} + J->w[i]);
    for (int u = 0; u < U; u++) {
      vu8 agree = (vu8)(wd[i][u] * sgn[u] > zero);
      mixed[u] += (vf8)((vu8)wd[i][u] & agree);
      div[u] += (vf8)(wi & agree);
    }
  }
  for (int u = 0; u < U; u++) {
    vu8 dz = (vu8)(div[u] == zero);
    div[u] = (vf8)(((vu8)one & dz) | ((vu8)div[u] & ~dz));
    if (J->normalize) mixed[u] /= div[u];
    o[u] = b[u] + mixed[u];
  }
}

/* block_var on eight-lane vectors of deltas d[model][group]. */
FC_INLINE void var8(int nm, const vf8 (*d)[FU], vf8 *var, int U) {
  const float fnm = (float)nm;
  for (int u = 0; u < U; u++) {
    vf8 sum = {0}, ss = {0};
    for (int i = 0; i < nm; i++) sum += d[i][u];
    for (int i = 0; i < nm; i++) {
      vf8 e = fnm * d[i][u] - sum;
      ss += e * e;
    }
    var[u] = ss;
  }
}

/* SCE, 8U elements: the generic path's selection mask (lo: var keys kept from lo up; 0 keeps
 * all, or no mask), sign election on the raw deltas and the weighted mean of the agreeing. */
FC_INLINE void fused_sce_step(const job_t *J, const int nm, const uint16_t *const *mp, const uint16_t *bp,
                              const float *var, size_t j, uint32_t lo, int mask, vf8 *o, int U) {
  const vf8 one = {1, 1, 1, 1, 1, 1, 1, 1}, zero = {0};
  const vf8 floor6 = {1e-6f, 1e-6f, 1e-6f, 1e-6f, 1e-6f, 1e-6f, 1e-6f, 1e-6f};
  vf8 d[FC_MERGE_MAX_MODELS][FU], b[FU], sgn[FU], mixed[FU] = {{0}}, div[FU] = {{0}};
  for (int u = 0; u < U; u++) b[u] = *ld8_bf16(bp + j + 8 * u);
  for (int i = 0; i < nm; i++)
    for (int u = 0; u < U; u++) d[i][u] = *ld8_bf16(mp[i] + j + 8 * u) - b[u];
  if (mask) {
    /* The variances come from the selection pass's array, or are recomputed here from the
     * same deltas by the same arithmetic (cheaper than storing and reloading them). */
    vf8 v[FU];
    if (var) memcpy(v, var + j, (size_t)U * sizeof v[0]);
    else var8(nm, (const vf8(*)[FU])d, v, U);
    for (int u = 0; u < U; u++) {
      vu8 keep = (vu8)((vu8)v[u] >= lo);
      for (int i = 0; i < nm; i++) d[i][u] = (vf8)((vu8)d[i][u] & keep);
    }
  }
  vu8 pos[FU];
  sign_pos(nm, (const vf8(*)[FU])d, U, pos);
  for (int u = 0; u < U; u++) sgn[u] = (vf8)(((vu8)one & pos[u]) | ((vu8)-one & ~pos[u]));
  for (int i = 0; i < nm; i++) {
    const float wi = J->sw[i];
    const vu8 wv = (vu8)((vf8){0} + wi);
    for (int u = 0; u < U; u++) {
      vu8 agree = (vu8)(d[i][u] * sgn[u] > zero);
      mixed[u] += (vf8)((vu8)(d[i][u] * wi) & agree);
      div[u] += (vf8)(wv & agree);
    }
  }
  for (int u = 0; u < U; u++) {
    vu8 small = (vu8)(div[u] < floor6);
    div[u] = (vf8)(((vu8)floor6 & small) | ((vu8)div[u] & ~small));
    o[u] = b[u] + mixed[u] / div[u];
  }
}

/* Whether block blk can take the fused path (TIES: no model keeps only some of its ties here). */
FC_INLINE int fused_lo(const job_t *J, size_t blk, uint32_t *lo) {
  if (J->fused == F_SCE) {
    /* lo[0]: the variance key kept from; lo[1]: whether the deltas are masked at all. */
    lo[0] = 0;
    lo[1] = J->cfg->sce_mask_scope == FC_SCE_SCOPE_DELTAS && J->select != 0;
    if (!lo[1]) return 1;
    if (J->select < 0) return 0;
    const sel_t *S = &J->sel[0];
    int64_t q = S->all_eq ? -1 : S->quota[blk];
    if (q > 0) return 0;
    lo[0] = q < 0 ? S->thr : S->thr + 1;
    return 1;
  }
  if (J->fused != F_TIES) return 1;
  for (int i = 0; i < J->nm; i++) {
    const sel_t *S = &J->sel[i];
    if (!S->active) {
      lo[i] = 0;
      continue;
    }
    int64_t q = S->all_eq ? -1 : S->quota[blk];
    if (q > 0) return 0;
    lo[i] = q < 0 ? S->thr : S->thr + 1;
  }
  return 1;
}

/* One block of the fused path: elements [off, off+cnt). */
FC_INLINE void fused_block(const job_t *J, const int nm, size_t off, size_t cnt, const uint32_t *lo, void *dst,
                           size_t doff) {
  const uint16_t *mp[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) mp[i] = (const uint16_t *)J->models[i]->data + off;
  const uint16_t *bp = J->base ? (const uint16_t *)J->base->data + off : NULL;
  vf8 o[FU];
  size_t j = 0;
  const float *var = J->var ? J->var + off : NULL;
  if (J->fused == F_SCE) {
    for (; j + 8 * FU <= cnt; j += 8 * FU) {
      if (FUSED_PF) {
        for (int i = 0; i < nm; i++) __builtin_prefetch(mp[i] + j + FUSED_PF);
        __builtin_prefetch(bp + j + FUSED_PF);
      }
      fused_sce_step(J, nm, mp, bp, var, j, lo[0], (int)lo[1], o, FU);
      for (int u = 0; u < FU; u++) st8(dst, J->out_dt, doff + j + 8 * u, &o[u]);
    }
  }
  if (J->fused == F_TIES) {
    for (; j + 8 * FU <= cnt; j += 8 * FU) {
      if (FUSED_PF) {
        for (int i = 0; i < nm; i++) __builtin_prefetch(mp[i] + j + FUSED_PF);
        __builtin_prefetch(bp + j + FUSED_PF);
      }
      fused_ties_step(J, nm, mp, bp, j, lo, o, FU);
      for (int u = 0; u < FU; u++) st8(dst, J->out_dt, doff + j + 8 * u, &o[u]);
    }
  }
  for (; J->fused != F_TIES && J->fused != F_SCE && j + 8 * FU <= cnt; j += 8 * FU) {
    if (FUSED_PF) {
      for (int i = 0; i < nm; i++) __builtin_prefetch(mp[i] + j + FUSED_PF);
      if (bp) __builtin_prefetch(bp + j + FUSED_PF);
    }
    fused_step(J, nm, mp, bp, j, o, FU);
    for (int u = 0; u < FU; u++) st8(dst, J->out_dt, doff + j + 8 * u, &o[u]);
  }
  /* The tail, eight at a time through the same arithmetic, from zero-padded copies. */
  for (; j < cnt; j += 8) {
    uint16_t tb[8] = {0}, tm[FC_MERGE_MAX_MODELS][8];
    float tv[8] = {0};
    if (var) memcpy(tv, var + j, (cnt - j < 8 ? cnt - j : 8) * sizeof *tv);
    const uint16_t *tp[FC_MERGE_MAX_MODELS];
    size_t r = cnt - j < 8 ? cnt - j : 8;
    if (bp) memcpy(tb, bp + j, r * 2);
    for (int i = 0; i < nm; i++) {
      memset(tm[i], 0, sizeof tm[i]);
      memcpy(tm[i], mp[i] + j, r * 2);
      tp[i] = tm[i];
    }
    if (J->fused == F_TIES) fused_ties_step(J, nm, tp, tb, 0, lo, o, 1);
    else if (J->fused == F_SCE) fused_sce_step(J, nm, tp, tb, var ? tv : NULL, 0, lo[0], (int)lo[1], o, 1);
    else fused_step(J, nm, tp, tb, 0, o, 1);
    if (r == 8) st8(dst, J->out_dt, doff + j, &o[0]);
    else {
      float t[8];
      memcpy(t, &o[0], sizeof t);
      store_out(dst, J->out_dt, doff + j, r, t);
    }
  }
}

/* Calls F with the model count as a constant for the common counts, so the loops over models
 * unroll and their vectors stay in registers. */
#define WITH_NM(nm, F, ...)                       \
  do {                                            \
    switch (nm) {                                 \
    case 2: F(__VA_ARGS__, 2); break;             \
    case 3: F(__VA_ARGS__, 3); break;             \
    case 4: F(__VA_ARGS__, 4); break;             \
    default: F(__VA_ARGS__, nm); break;           \
    }                                             \
  } while (0)
#define CALL_SCE_VAR(J, s, blk, NM) fused_sce_var(J, NM, s, blk)
#define CALL_TIES_BAND(J, s, blk, NM) fused_ties_band(J, NM, s, blk)
#define CALL_FUSED_BLOCK(J, off, cnt, lo, dst, doff, NM) fused_block(J, NM, off, cnt, lo, dst, doff)

/* Pass kinds. */
enum { P_FINAL, P_TIES_HIST, P_TIES_BAND, P_SCE_VAR, P_SCE_HIST, P_SCE_W, P_SUMSQ, P_SLERP_DOT };
typedef struct par {
  job_t *J;
  int kind;
  atomic_size_t next;
} par_t;


static inline float bf16_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Position of key in S's tie-group table, or -1. */
static inline int ttab_find(const sel_t *S, uint32_t key) {
  const uint32_t k1 = key + 1;
  uint32_t h = (k1 * 0x9E3779B1u) >> 25;
  while (S->tkey[h] != k1) {
    if (S->tkey[h] == 0) return -1;
    h = (h + 1) & (TTAB - 1);
  }
  return (int)h;
}

/* TIES band pass for bf16 inputs, straight from the mapping: counts each model's keys above its
 * band, and inside it counts the table's keys per block and lists the others as candidates. */
FC_INLINE void fused_ties_band(const job_t *J, const int nm, scratch_t *s, size_t blk) {
  const size_t off = blk * BLK, cnt = J->n - off < BLK ? J->n - off : BLK;
  const uint16_t *bp = (const uint16_t *)J->base->data + off;
  for (int i = 0; i < nm; i++) {
    const sel_t *S = &J->sel[i];
    if (!S->active || !S->band) continue;
    sel_t *T = &s->tc[i];
    const uint16_t *mp = (const uint16_t *)J->models[i]->data + off;
    const uint32_t lo = S->lo, bhi = S->bhi, span = bhi - lo;
    uint16_t *bc = J->bcnt + ((size_t)i * J->nblocks + blk) * TTAB;
    const int nh = S->nheavy;
    vu8 above = {0}, hc[NHEAVY] = {{0}};
    for (size_t j = 0; j < cnt; j += 8) {
      vu8 key, valid = ~(vu8){0};
      if (j + 8 <= cnt) {
        if (FUSED_PF && j % 32 == 0) {
          __builtin_prefetch(mp + j + FUSED_PF);
          __builtin_prefetch(bp + j + FUSED_PF);
        }
        key = (vu8)(*ld8_bf16(mp + j) - *ld8_bf16(bp + j)) & 0x7fffffffu;
      } else {
        uint16_t tm[8] = {0}, tb[8] = {0};
        memcpy(tm, mp + j, (cnt - j) * 2);
        memcpy(tb, bp + j, (cnt - j) * 2);
        key = (vu8)(*ld8_bf16(tm) - *ld8_bf16(tb)) & 0x7fffffffu;
        for (int l = 0; l < 8; l++) valid[l] = j + (size_t)l < cnt ? ~0u : 0u;
      }
      above -= (vu8)(key > bhi) & valid;
      vu8 in = (vu8)(key - lo <= span) & valid;
      for (int h = 0; h < nh; h++) {
        vu8 eq = (vu8)(key == S->heavy[h]) & in;
        hc[h] -= eq;
        in &= ~eq;
      }
      if (!any8(in)) continue;
      for (unsigned m = lane_bits(in); m;) {
        int l = __builtin_ctz(m);
        m &= m - 1;
        int q = ttab_find(S, key[l]);
        if (q >= 0) bc[q]++;
        else cand_push(T, off + j + (size_t)l, key[l], NULL, 0);
      }
    }
    int64_t a = 0;
    for (int l = 0; l < 8; l++) a += above[l];
    T->above += a;
    for (int h = 0; h < nh; h++) {
      uint32_t c = 0;
      for (int l = 0; l < 8; l++) c += hc[h][l];
      bc[S->hpos[h]] += (uint16_t)c;
    }
  }
}

/* SCE variance pass for bf16 inputs, straight from the mapping: each block's count of non-zero
 * variances and, with a band, the sums of squared deltas of the elements above it (f64) and
 * the candidates inside it with their deltas. Variances are stored in J->var only when there
 * is one (no band, or the band missed and the radix select needs them). */
FC_INLINE void fused_sce_var(job_t *J, const int nm, scratch_t *s, size_t blk) {
  const size_t off = blk * BLK, cnt = J->n - off < BLK ? J->n - off : BLK;
  const uint16_t *bp = (const uint16_t *)J->base->data + off;
  const uint16_t *mp[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) mp[i] = (const uint16_t *)J->models[i]->data + off;
  float *v = J->var ? J->var + off : NULL;
  const sel_t *S = &J->sel[0];
  const int band = S->band;
  const uint32_t lo = S->lo, bhi = S->bhi, span = bhi - lo;
  sel_t *T = &s->tc[0];
  vd8 sq[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) sq[i] = (vd8){0};
  vu8 nzc = {0}, abv = {0};
  /* Squares are summed in f32 over 8 steps (32 per lane at most), then in f64. */
  vf8 sq32[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) sq32[i] = (vf8){0};
  int steps = 0;
  for (size_t j = 0; j < cnt; j += 8 * FU) {
    vf8 d[FC_MERGE_MAX_MODELS][FU], var[FU];
    int U = FU;
    size_t r = cnt - j;
    if (r >= 8 * FU) {
      if (FUSED_PF) {
        for (int i = 0; i < nm; i++) __builtin_prefetch(mp[i] + j + FUSED_PF);
        __builtin_prefetch(bp + j + FUSED_PF);
      }
      for (int u = 0; u < FU; u++) {
        vf8 b = *ld8_bf16(bp + j + 8 * u);
        for (int i = 0; i < nm; i++) d[i][u] = *ld8_bf16(mp[i] + j + 8 * u) - b;
      }
    } else {
      /* The tail from zero-padded copies; padding lanes are masked out below. */
      U = (int)((r + 7) / 8);
      uint16_t tb[8 * FU] = {0}, tm[8 * FU];
      memcpy(tb, bp + j, r * 2);
      for (int i = 0; i < nm; i++) {
        memset(tm, 0, sizeof tm);
        memcpy(tm, mp[i] + j, r * 2);
        for (int u = 0; u < U; u++) d[i][u] = *ld8_bf16(tm + 8 * u) - *ld8_bf16(tb + 8 * u);
      }
    }
    var8(nm, (const vf8(*)[FU])d, var, U);
    for (int u = 0; u < U; u++) {
      vu8 valid = ~(vu8){0};
      if (r < 8 * (size_t)u + 8)
        for (int l = 0; l < 8; l++) valid[l] = 8 * (size_t)u + (size_t)l < r ? ~0u : 0u;
      vu8 key = (vu8)var[u];
      if (v) memcpy(v + j + 8 * u, &var[u], (r < 8 * (size_t)u + 8 ? r - 8 * (size_t)u : 8) * sizeof(float));
      nzc -= (vu8)(key != 0) & valid;
      if (!band) continue;
      vu8 above = (vu8)(key > bhi) & valid, in = (vu8)(key - lo <= span) & valid;
      abv -= above;
      for (int i = 0; i < nm; i++) {
        vf8 x = (vf8)((vu8)d[i][u] & above);
        sq32[i] += x * x;
      }
      if (any8(in))
        for (unsigned m = lane_bits(in); m;) {
          int l = __builtin_ctz(m);
          m &= m - 1;
          float dv[FC_MERGE_MAX_MODELS];
          for (int i = 0; i < nm; i++) dv[i] = d[i][u][l];
          cand_push(T, off + j + 8 * (size_t)u + (size_t)l, key[l], dv, nm);
        }
    }
    if (band && (++steps == 8 || j + 8 * FU >= cnt)) {
      for (int i = 0; i < nm; i++) {
        sq[i] += __builtin_convertvector(sq32[i], vd8);
        sq32[i] = (vf8){0};
      }
      steps = 0;
    }
  }
  int64_t nz = 0, a = 0;
  for (int l = 0; l < 8; l++) nz += nzc[l], a += abv[l];
  J->blk_nz[blk] = nz;
  if (!band) return;
  T->above += a;
  double *part = J->part + blk * J->npart;
  for (int i = 0; i < nm; i++) {
    double t = 0;
    for (int l = 0; l < 8; l++) t += sq[i][l];
    part[i] = t;
  }
}

FC_HOT static void block_work(job_t *J, int kind, scratch_t *s, size_t blk) {
  const int nm = J->nm;
  const fc_merge_method_t M = J->method;
  size_t off = blk * BLK;
  uint32_t keys[BLK];
  uint8_t keep[BLK];
  switch (kind) {
  case P_TIES_HIST: {
    size_t cnt = load_block(J, s, blk, 1);
    for (int i = 0; i < nm; i++) {
      if (!J->sel[i].active || J->sel[i].done) continue;
      const float *d = s->m + (size_t)i * BLK;
      for (size_t j = 0; j < cnt; j++) keys[j] = f2u(fabsf(d[j]));
      hist_add(J, s, i, keys, cnt, blk);
    }
    return;
  }
  case P_SCE_VAR: {
    if (J->fused == F_SCE) {
      WITH_NM(J->nm, CALL_SCE_VAR, J, s, blk);
      return;
    }
    size_t cnt = load_block(J, s, blk, 1);
    float *v = J->var + off;
    block_var(J, s, cnt, v);
    int64_t nz = 0;
    for (size_t j = 0; j < cnt; j++) nz += v[j] != 0.0f;
    J->blk_nz[blk] = nz;
    const sel_t *S = &J->sel[0];
    if (S->band) {
      /* Sums of squares of the surely selected (above the band) now; band candidates keep
       * their deltas and are added once the exact threshold is known. */
      sel_t *T = &s->tc[0];
      float dv[FC_MERGE_MAX_MODELS];
      for (int i = 0; i < nm; i++) J->part[blk * J->npart + i] = 0;
      for (size_t j = 0; j < cnt; j++) {
        uint32_t key = f2u(v[j]);
        if (key > S->bhi) {
          T->above++;
          for (int i = 0; i < nm; i++) {
            double d = s->m[(size_t)i * BLK + j];
            J->part[blk * J->npart + i] += d * d;
          }
        } else if (key >= S->lo) {
          for (int i = 0; i < nm; i++) dv[i] = s->m[(size_t)i * BLK + j];
          cand_push(T, off + j, key, dv, nm);
        }
      }
    }
    return;
  }
  case P_TIES_BAND: {
    if (J->fused == F_TIES) {
      WITH_NM(J->nm, CALL_TIES_BAND, J, s, blk);
      return;
    }
    size_t cnt = load_block(J, s, blk, 1);
    for (int i = 0; i < nm; i++) {
      const sel_t *S = &J->sel[i];
      if (!S->active || !S->band) continue;
      sel_t *T = &s->tc[i];
      const float *d = s->m + (size_t)i * BLK;
      int64_t above = 0;
      const uint32_t lo = S->lo, bhi = S->bhi;
      for (size_t j = 0; j < cnt; j++) keys[j] = f2u(fabsf(d[j]));
      for (size_t j = 0; j < cnt; j++) above += keys[j] > bhi;
      /* Few keys fall in the band: test 16 at a time without branches, then find them. */
      const uint32_t span = bhi - lo;
      for (size_t j0 = 0; j0 < cnt; j0 += 16) {
        size_t e = j0 + 16 < cnt ? j0 + 16 : cnt;
        uint32_t any = 0;
        if (e == j0 + 16)
          for (size_t j = j0; j < j0 + 16; j++) any |= keys[j] - lo <= span;
        else any = 1;
        if (any)
          for (size_t j = j0; j < e; j++)
            if (keys[j] - lo <= span) cand_push(T, off + j, keys[j], NULL, 0);
      }
      T->above += above;
    }
    return;
  }
  case P_SCE_HIST: {
    size_t cnt = J->n - off < BLK ? J->n - off : BLK;
    for (size_t j = 0; j < cnt; j++) keys[j] = f2u(J->var[off + j]);
    hist_add(J, s, 0, keys, cnt, blk);
    return;
  }
  case P_SCE_W:
  case P_SUMSQ: {
    size_t cnt = load_block(J, s, blk, 1);
    if (kind == P_SCE_W) sce_select(J, blk, cnt, J->var ? J->var + off : NULL, keep);
    else memset(keep, 1, cnt);
    for (int i = 0; i < nm; i++) {
      const float *d = s->m + (size_t)i * BLK;
      double a = 0;
      for (size_t j = 0; j < cnt; j++)
        if (keep[j]) a += (double)d[j] * d[j];
      J->part[blk * J->npart + i] = a;
    }
    return;
  }
  case P_SLERP_DOT: {
    size_t cnt = load_block(J, s, blk, 0);
    const float *a = s->b, *b = s->m;
    double aa = 0, bb = 0, ab = 0;
    for (size_t j = 0; j < cnt; j++) {
      aa += (double)a[j] * a[j];
      bb += (double)b[j] * b[j];
      ab += (double)a[j] * b[j];
    }
    J->part[blk * 3] = aa;
    J->part[blk * 3 + 1] = bb;
    J->part[blk * 3 + 2] = ab;
    return;
  }
  default: break;
  }
  /* P_FINAL */
  if (J->fused) {
    uint32_t lo[FC_MERGE_MAX_MODELS];
    if (fused_lo(J, blk, lo)) {
      WITH_NM(J->nm, CALL_FUSED_BLOCK, J, off, J->n - off < BLK ? J->n - off : BLK, lo, s->dst, off - s->off0);
      return;
    }
  }
  int deltas = M != FC_MERGE_LINEAR && M != FC_MERGE_SLERP && M != FC_MERGE_VARM;
  size_t cnt = load_block(J, s, blk, deltas);
  float *o = s->o;
  const float *b = s->b;
  switch (M) {
  case FC_MERGE_LINEAR:
  case FC_MERGE_VARM: {
    const float *w = M == FC_MERGE_LINEAR ? J->w : J->sw;
    for (size_t j = 0; j < cnt; j++) o[j] = 0;
    for (int i = 0; i < nm; i++) {
      const float *m = s->m + (size_t)i * BLK, wi = w[i];
      for (size_t j = 0; j < cnt; j++) o[j] += wi * m[j];
    }
    if (M == FC_MERGE_LINEAR && J->normalize) {
      const float div = (float)J->divisor;
      for (size_t j = 0; j < cnt; j++) o[j] /= div;
    }
    break;
  }
  case FC_MERGE_SLERP:
    for (size_t j = 0; j < cnt; j++) o[j] = J->s0 * b[j] + J->s1 * s->m[j];
    break;
  case FC_MERGE_TASK_ARITHMETIC:
  case FC_MERGE_DARE_LINEAR:
  case FC_MERGE_TIES:
  case FC_MERGE_DARE_TIES: {
    int dare = M == FC_MERGE_DARE_LINEAR || M == FC_MERGE_DARE_TIES;
    int consensus = M == FC_MERGE_TIES || M == FC_MERGE_DARE_TIES;
    if (M == FC_MERGE_TIES) ties_mask(J, s, blk, cnt);
    /* Sparsified, weighted deltas in place: wd_i = w_i * d_i'. */
    for (int i = 0; i < nm; i++) {
      float *d = s->m + (size_t)i * BLK;
      const float wi = J->w[i];
      if (dare && J->dens[i] < 1) {
        const float dn = (float)J->dens[i];
        const uint64_t thr = dare_threshold(J->dens[i]), key = J->dkey[i] + off / 2;
        /* off is even, so the draws' pairs line up with the block's elements. */
        uint64_t r[BLK / 2];
        size_t np = cnt / 2;
        for (size_t p = 0; p < np; p++) r[p] = mix64(key + p);
        uint32_t *u = (uint32_t *)keys; /* keys[] is free in this pass */
        for (size_t p = 0; p < np; p++) {
          u[2 * p] = (uint32_t)(r[p] >> 32);
          u[2 * p + 1] = (uint32_t)r[p];
        }
        for (size_t j = 2 * np; j < cnt; j++) u[j] = dare_u32(J->dkey[i], off + j);
        if (thr <= UINT32_MAX) { /* else every element is kept */
          const uint32_t t32 = (uint32_t)thr;
          for (size_t j = 0; j < cnt; j++) d[j] = u[j] < t32 ? d[j] : 0.0f;
        }
        if (J->rescale)
          for (size_t j = 0; j < cnt; j++) d[j] = d[j] / dn;
      }
      for (size_t j = 0; j < cnt; j++) d[j] *= wi;
    }
    float *mixed = o, *div = (float *)s->a1;
    double *sum = s->a2;
    for (size_t j = 0; j < cnt; j++) mixed[j] = 0, div[j] = 0;
    if (consensus) {
      combine_consensus(s->m, nm, J->w, cnt, mixed, div, sum);
      for (size_t j = 0; j < cnt; j++) div[j] = div[j] == 0 ? 1.0f : div[j];
    } else {
      for (int i = 0; i < nm; i++) {
        const float *d = s->m + (size_t)i * BLK;
        for (size_t j = 0; j < cnt; j++) mixed[j] += d[j];
      }
      for (size_t j = 0; j < cnt; j++) div[j] = (float)J->divisor;
    }
    if (J->normalize)
      for (size_t j = 0; j < cnt; j++) mixed[j] /= div[j];
    for (size_t j = 0; j < cnt; j++) o[j] = b[j] + mixed[j];
    break;
  }
  case FC_MERGE_SCE: {
    int scope_deltas = J->cfg->sce_mask_scope == FC_SCE_SCOPE_DELTAS;
    if (scope_deltas && J->select != 0) {
      float vb[BLK];
      const float *v = J->var ? J->var + off : vb;
      if (!J->var && J->select > 0) block_var(J, s, cnt, vb);
      sce_select(J, blk, cnt, v, keep);
      for (int i = 0; i < nm; i++) {
        float *d = s->m + (size_t)i * BLK;
        for (size_t j = 0; j < cnt; j++) d[j] = keep[j] ? d[j] : 0.0f;
      }
    }
    /* mixed = sum_i sw_i m_i d_i, div = sum_i sw_i m_i, on the raw (unweighted) deltas. */
    float *mixed = o, *div = (float *)s->a1;
    double *sum = s->a2;
    for (size_t j = 0; j < cnt; j++) mixed[j] = 0, div[j] = 0, sum[j] = 0;
    for (int i = 0; i < nm; i++) {
      const float *d = s->m + (size_t)i * BLK;
      for (size_t j = 0; j < cnt; j++) sum[j] += d[j];
    }
    float sgn[BLK];
    for (size_t j = 0; j < cnt; j++) sgn[j] = sum[j] >= 0 ? 1.0f : -1.0f;
    for (int i = 0; i < nm; i++) {
      const float *d = s->m + (size_t)i * BLK;
      const float wi = J->sw[i];
      float am[BLK];
      for (size_t j = 0; j < cnt; j++) am[j] = d[j] * sgn[j] > 0 ? 1.0f : 0.0f;
      for (size_t j = 0; j < cnt; j++) {
        mixed[j] += am[j] * (d[j] * wi);
        div[j] += am[j] * wi;
      }
    }
    for (size_t j = 0; j < cnt; j++) o[j] = b[j] + mixed[j] / (div[j] < 1e-6f ? 1e-6f : div[j]);
    break;
  }
  default: assert(0);
  }
  store_out(s->dst, J->out_dt, off - s->off0, cnt, o);
}

/* Page handling for inputs mapped from files. A finished tensor's pages are dropped from our
 * mapping, so resident memory stays at the tensors in flight instead of growing to whole
 * models (the page cache keeps them anyway); pages are mapped ahead of use a run at a time,
 * which costs less than a fault per few pages. */
static void page_range(const void *p, size_t n, uintptr_t *a, uintptr_t *e) {
  const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), s = (uintptr_t)p;
  *a = s & ~(pg - 1);
  *e = (s + n + pg - 1) & ~(pg - 1);
}

static void release_pages(const fc_st_tensor_t *t) {
  if (!t || !t->nbytes) return;
  uintptr_t a, e;
  page_range(t->data, t->nbytes, &a, &e);
  madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Maps elements [e0, e1) of every input. */
static void populate_inputs(const job_t *J, size_t e0, size_t e1) {
#ifdef MADV_POPULATE_READ
  for (int i = -1; i < J->nm; i++) {
    const fc_st_tensor_t *t = i < 0 ? J->base : J->models[i];
    if (!t || e1 <= e0) continue;
    size_t es = fc_dtype_size(t->dtype);
    uintptr_t a, e;
    page_range((const uint8_t *)t->data + e0 * es, (e1 - e0) * es, &a, &e);
    madvise((void *)a, e - a, MADV_POPULATE_READ);
  }
#else
  (void)J;
  (void)e0;
  (void)e1;
#endif
}

static void *par_main(void *arg) {
  par_t *P = arg;
  job_t *J = P->J;
  scratch_t s;
  s.b = fc_xmalloc(BLK * sizeof(float));
  s.m = fc_xmalloc((size_t)(J->nm ? J->nm : 1) * BLK * sizeof(float));
  s.o = fc_xmalloc(BLK * sizeof(float));
  s.a1 = fc_xmalloc(3 * BLK * sizeof(double));
  s.a2 = s.a1 + BLK;
  s.a3 = s.a2 + BLK;
  int hist = P->kind == P_TIES_HIST || P->kind == P_SCE_HIST;
  s.hist = hist && J->pass < 2 ? fc_xcalloc((size_t)J->nsel * NBIN, sizeof(uint32_t)) : NULL;
  memset(s.tc, 0, sizeof s.tc);
  /* The fused passes take runs of blocks, so each thread streams long stretches of every input
   * (the hardware prefetchers lose track at each jump). */
  const int to_file = P->kind == P_FINAL && J->out_fd >= 0;
  const int fused_read = J->fused && (P->kind == P_FINAL || P->kind == P_TIES_BAND || P->kind == P_SCE_VAR);
  const size_t run = fused_read || J->page_io || (P->kind == P_FINAL && to_file) ? FUSED_RUN : 1;
  const size_t esz = fc_dtype_size(J->out_dt);
  s.dst = J->out;
  s.off0 = 0;
  s.ob = to_file ? fc_xmalloc(FUSED_RUN * BLK * esz) : NULL;
  for (;;) {
    size_t blk = atomic_fetch_add(&P->next, run);
    if (blk >= J->nblocks) break;
    size_t end = blk + run < J->nblocks ? blk + run : J->nblocks;
    if (to_file) {
      s.dst = s.ob;
      s.off0 = blk * BLK;
    }
    const size_t e0 = blk * BLK, e1 = end * BLK < J->n ? end * BLK : J->n;
    if (J->page_io && !J->populated) populate_inputs(J, e0, e1);
    for (size_t b = blk; b < end; b++) block_work(J, P->kind, &s, b);
    if (to_file) {
      /* The run's output goes to its place in the file from this thread while it is still
       * in cache: no tensor-sized buffer, no serial write after the pass. */
      size_t e1 = end * BLK < J->n ? end * BLK : J->n;
      const uint8_t *p = s.ob;
      size_t left = (e1 - s.off0) * esz;
      uint64_t pos = J->out_pos + (uint64_t)s.off0 * esz;
      while (left) {
        ssize_t w = pwrite(J->out_fd, p, left, (off_t)pos);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          int expect = 0;
          atomic_compare_exchange_strong(&J->out_errno, &expect, w < 0 ? errno : EIO);
          break;
        }
        p += w;
        pos += (uint64_t)w;
        left -= (size_t)w;
      }
    }
  }
  free(s.ob);
  pthread_mutex_lock(&J->mu);
  if (s.hist)
    for (size_t i = 0; i < (size_t)J->nsel * NBIN; i++) J->hist[i] += s.hist[i];
  if (P->kind == P_TIES_BAND || P->kind == P_SCE_VAR)
    for (int i = 0; i < J->nsel; i++) {
      cand_merge(&J->sel[i], &s.tc[i], P->kind == P_SCE_VAR ? J->nm : 0);
      cand_free(&s.tc[i]);
    }
  pthread_mutex_unlock(&J->mu);
  free(s.b);
  free(s.m);
  free(s.o);
  free(s.a1);
  free(s.hist);
  return NULL;
}

static void par_run(job_t *J, int kind, int threads) {
  par_t P = {.J = J, .kind = kind};
  atomic_init(&P.next, 0);
  int nt = threads < 1 ? 1 : threads;
  if ((size_t)nt > J->nblocks) nt = J->nblocks ? (int)J->nblocks : 1;
  pthread_t tid[64];
  if (nt > 64) nt = 64;
  int started = 0;
  for (int t = 1; t < nt; t++)
    if (pthread_create(&tid[started], NULL, par_main, &P) == 0) started++;
  par_main(&P);
  for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
  if (kind != P_SCE_HIST) J->populated = 1; /* the other passes read every input */
}

/* Runs a top-k selection for sel[0..nsel) over keys produced by pass kind. */
static void run_select(job_t *J, int kind, int threads) {
  J->hist = fc_xcalloc((size_t)J->nsel * NBIN, sizeof(uint64_t));
  int64_t above[FC_MERGE_MAX_MODELS];
  J->pass = 0;
  par_run(J, kind, threads);
  for (int si = 0; si < J->nsel; si++) {
    sel_t *S = &J->sel[si];
    if (!S->active || S->done) continue;
    const uint64_t *h = J->hist + (size_t)si * NBIN;
    int64_t acc = 0;
    int bin = NBIN - 1;
    for (; bin > 0; bin--) {
      if (acc + (int64_t)h[bin] >= S->k) break;
      acc += (int64_t)h[bin];
    }
    S->hi = (uint32_t)bin;
    above[si] = acc;
  }
  memset(J->hist, 0, (size_t)J->nsel * NBIN * sizeof(uint64_t));
  J->pass = 1;
  par_run(J, kind, threads);
  int any_partial = 0;
  for (int si = 0; si < J->nsel; si++) {
    sel_t *S = &J->sel[si];
    if (!S->active || S->done) continue;
    const uint64_t *h = J->hist + (size_t)si * NBIN;
    int64_t acc = above[si];
    int bin = NBIN - 1;
    for (; bin > 0; bin--) {
      if (acc + (int64_t)h[bin] >= S->k) break;
      acc += (int64_t)h[bin];
    }
    S->thr = S->hi << 16 | (uint32_t)bin;
    S->need = S->k - acc;
    S->all_eq = S->need == (int64_t)h[bin];
    if (!S->all_eq) any_partial = 1;
  }
  if (any_partial) {
    J->blk_eq = fc_xcalloc((size_t)J->nsel * J->nblocks, sizeof(int64_t));
    J->pass = 2;
    par_run(J, kind, threads);
    for (int si = 0; si < J->nsel; si++) {
      sel_t *S = &J->sel[si];
      if (!S->active || S->done || S->all_eq) continue;
      S->quota = fc_xmalloc(J->nblocks * sizeof(int64_t));
      int64_t left = S->need;
      /* quota[b]: -1 all of block b's ties are in, 0 none, else how many (in index order). */
      for (size_t b = 0; b < J->nblocks; b++) {
        int64_t e = J->blk_eq[(size_t)si * J->nblocks + b], take = e < left ? e : left;
        left -= take;
        S->quota[b] = take == e ? -1 : take;
      }
    }
    free(J->blk_eq);
    J->blk_eq = NULL;
  }
  free(J->hist);
  J->hist = NULL;
}

/* ---- band selection: one pass instead of the radix select's two or three ----
 * A sample of evenly spaced runs estimates where the k-th largest key lies; a pass then counts
 * the keys above a band around it and collects the keys inside, and the exact threshold is
 * found among the candidates. When the sample misleads (the k-th key is outside the band),
 * the radix select runs instead, so the result is the same either way. */
#define SRUNS 64 /* sample runs, evenly spaced */
#define SRUN 1024  /* elements per run, at most */
size_t fc_merge_band_hits;
size_t fc_merge_band_min = 1u << 18; /* smaller tensors go straight to the radix select */
#define BAND_MIN (fc_merge_band_min > SRUNS * 64 ? fc_merge_band_min : SRUNS * 64)
static size_t srun_len(size_t n) { return n / SRUNS < SRUN ? n / SRUNS : SRUN; }

static scratch_t *scratch_new(int nm) {
  scratch_t *s = fc_xcalloc(1, sizeof *s);
  s->b = fc_xmalloc(BLK * sizeof(float));
  s->m = fc_xmalloc((size_t)(nm ? nm : 1) * BLK * sizeof(float));
  s->a1 = fc_xmalloc(3 * BLK * sizeof(double));
  s->a2 = s->a1 + BLK;
  s->a3 = s->a2 + BLK;
  return s;
}

static void scratch_free(scratch_t *s) {
  free(s->b);
  free(s->m);
  free(s->a1);
  free(s);
}

/* The keys of ranks r[0] <= r[1] (0 = largest, each < n) of a[n], by a histogram of the top
 * 16 bits and then one of the low 16 bits of the keys in the bins found (two passes, no
 * branches on the data, unlike a quickselect). */
static void two_largest_ranks(const uint32_t *a, size_t n, const size_t r[2], uint32_t out[2]) {
  uint32_t *h = fc_xcalloc(2 * 65536, sizeof *h), *h2 = h + 65536;
  for (size_t i = 0; i < n; i++) h[a[i] >> 16]++;
  uint32_t bin[2] = {0, 0};
  size_t before[2] = {0, 0}, acc = 0;
  int t = 0;
  for (int b = 65535; b >= 0 && t < 2; b--) {
    while (t < 2 && acc + h[b] > r[t]) bin[t] = (uint32_t)b, before[t++] = acc;
    acc += h[b];
  }
  memset(h, 0, 2 * 65536 * sizeof *h);
  for (size_t i = 0; i < n; i++) {
    uint32_t hi = a[i] >> 16, lo16 = a[i] & 0xffff;
    h[lo16] += hi == bin[0];
    h2[lo16] += hi == bin[1];
  }
  for (t = 0; t < 2; t++) {
    const uint32_t *g = t ? h2 : h;
    size_t need = r[t] - before[t];
    acc = 0;
    int b = 65535;
    for (; b > 0 && acc + g[b] <= need; b--) acc += g[b];
    out[t] = bin[t] << 16 | (uint32_t)b;
  }
  free(h);
}

/* Band [lo, bhi] around the fraction q of largest keys in the sample ks[ns]. */
static void band_setup(sel_t *S, uint32_t *ks, size_t ns, double q) {
  if (q < 0) q = 0;
  if (q > 1) q = 1;
  double r = q * (double)ns, m = 4 * sqrt((double)ns * q * (1 - q)) + 32;
  double ih = floor(r - m), il = ceil(r + m);
  size_t rk[2] = {ih < 0 ? 0 : (size_t)ih, il >= (double)ns ? ns - 1 : (size_t)il};
  uint32_t key[2];
  two_largest_ranks(ks, ns, rk, key);
  S->bhi = ih < 0 ? UINT32_MAX : key[0];
  S->lo = il >= (double)ns ? 0 : key[1];
  S->band = 1;
  S->above = 0;
}

static int u32_asc(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  uint32_t key, count;
} keyrun_t;

static int keyrun_by_count(const void *a, const void *b) {
  const keyrun_t *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return x->key < y->key ? -1 : x->key > y->key;
}

/* Fills S's tie-group table with the keys most frequent in the sample's band. */
static void ttab_seed(sel_t *S, const uint32_t *ks, size_t ns) {
  memset(S->tkey, 0, sizeof S->tkey);
  S->ntab = 0;
  uint32_t *in = fc_xmalloc((ns ? ns : 1) * sizeof *in);
  size_t n = 0;
  for (size_t j = 0; j < ns; j++)
    if (ks[j] - S->lo <= S->bhi - S->lo) in[n++] = ks[j];
  qsort(in, n, sizeof *in, u32_asc);
  keyrun_t *runs = fc_xmalloc((n ? n : 1) * sizeof *runs);
  size_t nr = 0;
  for (size_t j = 0; j < n;) {
    size_t e = j;
    while (e < n && in[e] == in[j]) e++;
    runs[nr++] = (keyrun_t){in[j], (uint32_t)(e - j)};
    j = e;
  }
  qsort(runs, nr, sizeof *runs, keyrun_by_count);
  S->nheavy = 0;
  for (size_t r = 0; r < nr && S->ntab < TTAB_MAX && runs[r].count > 1; r++) {
    const uint32_t k1 = runs[r].key + 1;
    uint32_t h = (k1 * 0x9E3779B1u) >> 25;
    while (S->tkey[h]) h = (h + 1) & (TTAB - 1);
    S->tkey[h] = k1;
    S->ntab++;
    /* Heavy: at least 1 in 256 elements. A vector compare costs every element about a cycle
     * per eight; the per-element path costs a key's elements some 25 cycles each. */
    if (S->nheavy < NHEAVY && (size_t)runs[r].count * 256 >= ns) {
      S->heavy[S->nheavy] = runs[r].key;
      S->hpos[S->nheavy++] = (int)h;
    }
  }
  free(runs);
  free(in);
}

/* Runs fn(J, i, scratch, arg) for i in [0, n) over up to `threads` threads, each with its own
 * scratch blocks: the band setups' sampling, which would otherwise run on one thread while
 * the others wait. */
typedef void (*pfor_fn)(job_t *J, int i, scratch_t *s, void *arg);
typedef struct {
  job_t *J;
  pfor_fn fn;
  void *arg;
  int n;
  atomic_int next;
} pfor_t;

static void *pfor_main(void *a) {
  pfor_t *P = a;
  scratch_t *s = scratch_new(P->J->nm);
  for (int i; (i = atomic_fetch_add(&P->next, 1)) < P->n;) P->fn(P->J, i, s, P->arg);
  scratch_free(s);
  return NULL;
}

static void par_for(job_t *J, int n, int threads, pfor_fn fn, void *arg) {
  pfor_t P = {.J = J, .fn = fn, .arg = arg, .n = n};
  atomic_init(&P.next, 0);
  int nt = threads < 1 ? 1 : threads > 64 ? 64 : threads;
  if (nt > n) nt = n > 0 ? n : 1;
  pthread_t tid[64];
  int started = 0;
  for (int t = 1; t < nt; t++)
    if (pthread_create(&tid[started], NULL, pfor_main, &P) == 0) started++;
  pfor_main(&P);
  for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
}

/* TIES band setup for model i: its sample's |delta| keys give the band (and the tie table). */
static void ties_setup_model(job_t *J, int i, scratch_t *s, void *arg) {
  (void)arg;
  sel_t *S = &J->sel[i];
  if (!S->active) return;
  size_t len = srun_len(J->n), ns = SRUNS * len;
  uint32_t *ks = fc_xmalloc(ns * sizeof *ks);
  float *b = s->b, *m = s->m;
  for (size_t r = 0; r < SRUNS; r++) {
    size_t off = (J->n / SRUNS) * r;
    load_f32(J->base, off, len, b);
    load_f32(J->models[i], off, len, m);
    for (size_t j = 0; j < len; j++) ks[r * len + j] = f2u(fabsf(m[j] - b[j]));
  }
  band_setup(S, ks, ns, (double)S->k / (double)J->n);
  if (J->fused == F_TIES) ttab_seed(S, ks, ns);
  free(ks);
}

static void ties_band_setup(job_t *J, int threads) {
  par_for(J, J->nm, threads, ties_setup_model, NULL);
  if (J->fused == F_TIES) {
    size_t n = (size_t)J->nm * J->nblocks * TTAB;
    workspace_t *ws = J->ws;
    if (ws) {
      if (ws->bcnt_cap < n) {
        free(ws->bcnt);
        ws->bcnt = fc_xmalloc(n * sizeof *ws->bcnt);
        ws->bcnt_cap = n;
      }
      J->bcnt = ws->bcnt;
      memset(J->bcnt, 0, n * sizeof *J->bcnt);
    } else {
      J->bcnt = fc_xcalloc(n, sizeof *J->bcnt);
    }
  }
}

typedef struct {
  uint32_t *ks;
  size_t *nz; /* [SRUNS] non-zero keys per run */
} sce_sample_t;

/* SCE band setup, sample run r: its variance keys. */
static void sce_setup_run(job_t *J, int r, scratch_t *s, void *arg) {
  sce_sample_t *A = arg;
  size_t len = srun_len(J->n);
  float v[SRUN];
  load_range(J, s, (J->n / SRUNS) * (size_t)r, len, 1);
  block_var(J, s, len, v);
  size_t nz = 0;
  for (size_t j = 0; j < len; j++) {
    A->ks[(size_t)r * len + j] = f2u(v[j]);
    nz += v[j] != 0.0f;
  }
  A->nz[r] = nz;
}

static void sce_band_setup(job_t *J, double topk, int threads) {
  size_t len = srun_len(J->n), ns = SRUNS * len, nz = 0, nzr[SRUNS];
  sce_sample_t A = {fc_xmalloc(ns * sizeof(uint32_t)), nzr};
  par_for(J, SRUNS, threads, sce_setup_run, &A);
  for (size_t r = 0; r < SRUNS; r++) nz += nzr[r];
  band_setup(&J->sel[0], A.ks, ns, topk * (double)nz / (double)ns);
  free(A.ks);
}

/* Exact threshold from the band candidates, if the k-th largest key is among them. */
static int band_resolve(const job_t *J, sel_t *S, const uint16_t *bc) {
  int64_t k = S->k, ntab = 0;
  if (bc) {
    /* Totals of the table's keys; they take part below as candidates of weight tcount. */
    memset(S->tcount, 0, sizeof S->tcount);
    for (size_t b = 0; b < J->nblocks; b++)
      for (int q = 0; q < TTAB; q++) S->tcount[q] += bc[b * TTAB + (size_t)q];
    for (int q = 0; q < TTAB; q++) ntab += S->tcount[q];
  }
  if (!(S->above < k && k <= S->above + (int64_t)S->nc + ntab)) return 0;
  /* The kk-th largest candidate key, by a radix select on key - lo (all candidates are in
   * [lo, bhi]) with 11-bit digits from the top: the histogram stays in L1. */
  int64_t kk = k - S->above, acc = 0, eq = 0;
  const uint32_t span = S->bhi - S->lo;
  int bits = span ? 32 - __builtin_clz(span) : 1;
  int shift = bits > 11 ? bits - 11 : 0;
  uint32_t prefix = 0, pmask = 0;
  int64_t h[2048];
  for (;;) {
    memset(h, 0, sizeof h);
    for (size_t c = 0; c < S->nc; c++) {
      uint32_t x = S->ckey[c] - S->lo;
      h[(x >> shift) & 2047] += ((x ^ prefix) & pmask) == 0;
    }
    for (int q = 0; bc && q < TTAB; q++) {
      if (!S->tkey[q]) continue;
      uint32_t x = S->tkey[q] - 1 - S->lo;
      if (((x ^ prefix) & pmask) == 0) h[(x >> shift) & 2047] += S->tcount[q];
    }
    int d = 2047;
    for (; d > 0; d--) {
      if (acc + (int64_t)h[d] >= kk) break;
      acc += h[d];
    }
    prefix |= (uint32_t)d << shift;
    pmask |= 2047u << shift;
    eq = h[d];
    if (shift == 0) break;
    shift = shift > 11 ? shift - 11 : 0;
  }
  S->thr = S->lo + prefix;
  S->need = kk - acc;
  S->all_eq = S->need == eq;
  if (!S->all_eq) {
    /* The first `need` ties in index order are in: count each block's ties, then hand the
     * quota out in block order (within a block the final pass keeps them in index order). */
    int64_t *tot = fc_xcalloc(J->nblocks, sizeof *tot), left = S->need;
    for (size_t c = 0; c < S->nc; c++)
      if (S->ckey[c] == S->thr) tot[S->cidx[c] / BLK]++;
    int q = bc ? ttab_find(S, S->thr) : -1;
    for (size_t b = 0; q >= 0 && b < J->nblocks; b++) tot[b] += bc[b * TTAB + (size_t)q];
    S->quota = fc_xmalloc(J->nblocks * sizeof *S->quota);
    for (size_t b = 0; b < J->nblocks; b++) {
      int64_t take = tot[b] < left ? tot[b] : left;
      left -= take;
      S->quota[b] = take == tot[b] ? -1 : take;
    }
    free(tot);
  }
  S->done = 1;
  __atomic_fetch_add(&fc_merge_band_hits, 1, __ATOMIC_RELAXED);
  return 1;
}

/* SCE: adds the selected band candidates' squared deltas to the per-block partial sums. */
static void sce_band_weights(job_t *J) {
  const sel_t *S = &J->sel[0];
  size_t cur = SIZE_MAX;
  int64_t seen = 0, q = 0;
  for (size_t c = 0; c < S->nc; c++) {
    size_t b = S->cidx[c] / BLK;
    if (b != cur) cur = b, seen = 0, q = S->all_eq ? -1 : S->quota[b];
    uint32_t key = S->ckey[c];
    int in = key > S->thr;
    if (key == S->thr) in = q < 0 || seen++ < q;
    if (!in) continue;
    for (int i = 0; i < J->nm; i++) {
      double d = S->cd[c * (size_t)J->nm + (size_t)i];
      J->part[b * J->npart + (size_t)i] += d * d;
    }
  }
}

static void job_free(job_t *J) {
  if (!J->ws) free(J->bcnt);
  for (int i = 0; i < FC_MERGE_MAX_MODELS; i++) {
    free(J->sel[i].quota);
    cand_free(&J->sel[i]);
  }
  free(J->blk_nz);
  if (!J->ws) free(J->var);
  free(J->part);
  pthread_mutex_destroy(&J->mu);
}

/* J->var for the tensor, from the workspace kept across tensors when there is one. */
static void sce_var_alloc(job_t *J) {
  workspace_t *ws = J->ws;
  if (!ws) {
    J->var = fc_xmalloc(J->n * sizeof(float));
    return;
  }
  if (ws->var_cap < J->n) {
    free(ws->var);
    ws->var = fc_xmalloc(J->n * sizeof(float));
    ws->var_cap = J->n;
  }
  J->var = ws->var;
}

/* Sum of the per-block partials of column c, in block order. */
static double part_sum(const job_t *J, int c) {
  double s = 0;
  for (size_t b = 0; b < J->nblocks; b++) s += J->part[b * J->npart + c];
  return s;
}

/* out: the merged tensor in out_dt, in memory, or (out NULL) pwritten at out_pos of out_fd. */
static int merge_tensor_raw(workspace_t *ws, const fc_merge_cfg_t *cfg, const char *name, const fc_st_tensor_t *base,
                            const fc_st_tensor_t *const *models, void *out, int out_fd, uint64_t out_pos,
                            fc_dtype_t out_dt, double *model_w, int threads, int mapped, fc_err_t *err) {
  const int nm = cfg->nmodels;
  fc_merge_method_t M = cfg->method;
  assert(nm >= 1 && nm <= FC_MERGE_MAX_MODELS);
  assert(base || M == FC_MERGE_LINEAR);
  const fc_st_tensor_t *ref = base ? base : models[0];
  for (int i = 0; i < nm; i++)
    if (models[i]->numel != ref->numel)
      return fc_err_set(err, FC_EMISMATCH, "tensor '%s': %s has %lld elements, the base %lld", name,
                        cfg->models[i].path ? cfg->models[i].path : "a model",
                        (long long)models[i]->numel, (long long)ref->numel);
  if (M == FC_MERGE_SLERP && nm != 1)
    return fc_err_set(err, FC_EINVAL, "slerp merges the base with exactly one other model (%d given)",
                      nm);
  job_t J;
  memset(&J, 0, sizeof J);
  J.cfg = cfg;
  J.method = M;
  J.n = (size_t)ref->numel;
  J.nblocks = (J.n + BLK - 1) / BLK;
  J.nm = nm;
  J.base = base;
  J.models = models;
  J.out = out;
  J.out_fd = out ? -1 : out_fd;
  J.out_pos = out_pos;
  J.ws = ws;
  atomic_init(&J.out_errno, 0);
  J.out_dt = out_dt;
  J.normalize = cfg->normalize >= 0 ? cfg->normalize : method_default_normalize(M);
  J.rescale = cfg->rescale >= 0 ? cfg->rescale : method_default_rescale(M);
  pthread_mutex_init(&J.mu, NULL);
  double wsum = 0;
  for (int i = 0; i < nm; i++) {
    J.w[i] = (float)cfg->models[i].weight;
    J.dens[i] = cfg->models[i].density;
    J.dkey[i] = dare_model_key(cfg->seed, name, i);
    wsum += J.w[i];
  }
  int rc = 0;
  if (M == FC_MERGE_LINEAR) {
    if (J.normalize && wsum == 0) {
      rc = fc_err_set(err, FC_EINVAL, "linear: the model weights sum to zero (set normalize: false)");
      goto done;
    }
    J.divisor = wsum;
  } else {
    J.divisor = fabs(wsum) < 1e-8 ? 1.0 : wsum;
  }
  if (J.n == 0) goto done;

  {
    int bf = (out_dt == FC_DT_BF16 || out_dt == FC_DT_F32) && (!J.base || J.base->dtype == FC_DT_BF16);
    for (int i = 0; i < nm; i++) bf &= models[i]->dtype == FC_DT_BF16;
    int masked = 0;
    for (int i = 0; i < nm; i++) masked |= J.dens[i] < 1;
    J.fused_rdiv = 1.0 / J.divisor;
    if (!bf) J.fused = F_NONE;
    else if (M == FC_MERGE_LINEAR || M == FC_MERGE_VARM) {
      J.fused = F_SUM;
      J.fused_scale = M == FC_MERGE_LINEAR && J.normalize;
    } else if (M == FC_MERGE_TASK_ARITHMETIC || (M == FC_MERGE_DARE_LINEAR && !masked)) {
      J.fused = F_DELTA_SUM;
      J.fused_scale = J.normalize;
    } else if (M == FC_MERGE_SLERP) J.fused = F_SLERP;
    else if (M == FC_MERGE_TIES) J.fused = F_TIES;
    else if (M == FC_MERGE_SCE) J.fused = F_SCE;
  }
  /* File-mapped inputs: the first pass maps pages run by run in every worker, instead of one
   * thread mapping the whole tensor while the others wait. (Dropping them run by run too cost
   * more: every drop is a TLB shootdown across the workers.) */
  J.page_io = mapped;
  if (M == FC_MERGE_TIES) {
    int any = 0;
    for (int i = 0; i < nm; i++) {
      if (J.dens[i] >= 1) continue;
      int64_t k = (int64_t)(J.dens[i] * (double)J.n);
      if (k <= 0) {
        rc = fc_err_set(err, FC_EINVAL,
                        "ties: density %g keeps no element of tensor '%s' (%zu elements)",
                        J.dens[i], name, J.n);
        goto done;
      }
      J.sel[i].active = 1;
      J.sel[i].k = k;
      any = 1;
    }
    J.nsel = nm;
    if (any && J.n >= BAND_MIN) {
      ties_band_setup(&J, threads);
      par_run(&J, P_TIES_BAND, threads);
      for (int i = 0; i < nm; i++) {
        const uint16_t *bc = J.bcnt ? J.bcnt + (size_t)i * J.nblocks * TTAB : NULL;
        if (J.sel[i].active && !band_resolve(&J, &J.sel[i], bc)) J.sel[i].band = 0;
        cand_free(&J.sel[i]);
      }
    }
    int left = 0;
    for (int i = 0; i < nm; i++) left |= J.sel[i].active && !J.sel[i].done;
    if (left) run_select(&J, P_TIES_HIST, threads);
  } else if (M == FC_MERGE_SCE) {
    J.npart = nm > 1 ? nm : 1;
    J.part = fc_xcalloc(J.nblocks * (size_t)J.npart, sizeof(double));
    double tk = cfg->select_topk;
    int weights_done = 0;
    if (tk <= 0) J.select = -1;
    else if (tk >= 1) J.select = 0;
    else {
      J.blk_nz = fc_xcalloc(J.nblocks, sizeof *J.blk_nz);
      J.nsel = 1;
      if (J.n >= BAND_MIN) sce_band_setup(&J, tk, threads);
      /* With a band, the fused pass keeps no variances: the final pass recomputes them. */
      if (!J.sel[0].band || J.fused != F_SCE) sce_var_alloc(&J);
      par_run(&J, P_SCE_VAR, threads);
      int64_t nz = 0;
      for (size_t b = 0; b < J.nblocks; b++) nz += J.blk_nz[b];
      /* mergekit computes k = int(count_nonzero * density) with a float32 tensor product. */
      int64_t k = (int64_t)((float)nz * (float)tk);
      if (k == 0) J.select = -1;
      else {
        J.select = 1;
        J.sel[0].active = 1;
        J.sel[0].k = k;
        if (J.sel[0].band && band_resolve(&J, &J.sel[0], NULL)) {
          sce_band_weights(&J);
          weights_done = 1;
        } else {
          J.sel[0].band = 0;
          if (!J.var) {
            /* The band missed the threshold: variances again, kept this time. */
            cand_free(&J.sel[0]);
            sce_var_alloc(&J);
            par_run(&J, P_SCE_VAR, threads);
          }
          run_select(&J, P_SCE_HIST, threads);
        }
      }
      cand_free(&J.sel[0]);
    }
    if (!weights_done) {
      memset(J.part, 0, J.nblocks * (size_t)J.npart * sizeof(double));
      par_run(&J, P_SCE_W, threads);
    }
    double tot = 0, mw[FC_MERGE_MAX_MODELS];
    for (int i = 0; i < nm; i++) tot += mw[i] = part_sum(&J, i) / (double)J.n;
    for (int i = 0; i < nm; i++) J.sw[i] = fabs(tot) < 1e-6 ? 1.0f / nm : (float)(mw[i] / tot);
  } else if (M == FC_MERGE_VARM) {
    J.npart = nm;
    J.part = fc_xcalloc(J.nblocks * (size_t)J.npart, sizeof(double));
    par_run(&J, P_SUMSQ, threads);
    double tot = 0, mw[FC_MERGE_MAX_MODELS];
    for (int i = 0; i < nm; i++) tot += mw[i] = part_sum(&J, i) / (double)J.n;
    for (int i = 0; i < nm; i++) J.sw[i] = tot == 0 ? 1.0f / nm : (float)(mw[i] / tot);
  } else if (M == FC_MERGE_SLERP) {
    J.npart = 3;
    J.part = fc_xcalloc(J.nblocks * 3, sizeof(double));
    par_run(&J, P_SLERP_DOT, threads);
    double n0 = sqrt(part_sum(&J, 0)), n1 = sqrt(part_sum(&J, 1)), ab = part_sum(&J, 2);
    const double eps = 1e-8, t = cfg->t;
    double dot = ab / ((n0 > eps ? n0 : 1) * (n1 > eps ? n1 : 1));
    if (fabs(dot) > 0.9995) {
      J.s0 = (float)(1 - t);
      J.s1 = (float)t;
    } else {
      double th0 = acos(dot), s0 = sin(th0), tht = th0 * t;
      J.s0 = (float)(sin(th0 - tht) / s0);
      J.s1 = (float)(sin(tht) / s0);
    }
  }
  par_run(&J, P_FINAL, threads);
  if (atomic_load(&J.out_errno))
    rc = fc_err_set(err, FC_EIO, "cannot write tensor '%s': %s", name, strerror(atomic_load(&J.out_errno)));
done:
  if (model_w)
    for (int i = 0; i < nm; i++)
      model_w[i] = M == FC_MERGE_SCE || M == FC_MERGE_VARM ? J.sw[i] : J.w[i];
  job_free(&J);
  return rc;
}

int fc_merge_tensor(const fc_merge_cfg_t *cfg, const char *tensor_name, const fc_st_tensor_t *base,
                    const fc_st_tensor_t *const *models, float *out, double *model_w, int threads,
                    fc_err_t *err) {
  return merge_tensor_raw(NULL, cfg, tensor_name, base, models, out, -1, 0, FC_DT_F32, model_w, threads, 0, err);
}

/* ---- whole-model runner ---- */

static int is_float_dt(fc_dtype_t d) {
  return d == FC_DT_F32 || d == FC_DT_F16 || d == FC_DT_BF16 || d == FC_DT_F64;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* config.json with torch_dtype set to the output dtype, and the tokenizer files, from the base
 * model's directory (when the base is a directory). */
static int copy_side_files(const char *base_path, const char *out_dir, int dtype, fc_err_t *err) {
  static const char *files[] = {"tokenizer.json",     "tokenizer_config.json", "special_tokens_map.json",
                                "tokenizer.model",    "vocab.json",            "merges.txt",
                                "added_tokens.json",  "generation_config.json", "chat_template.jinja"};
  char *cfg = fc_path_join(base_path, "config.json");
  int rc = 0;
  if (fc_path_exists(cfg)) {
    char *dst = fc_path_join(out_dir, "config.json");
    if (dtype < 0) {
      rc = fc_copy_file(cfg, dst, err);
    } else {
      json_error_t jerr;
      json_t *root = json_load_file(cfg, 0, &jerr);
      if (!root) rc = fc_err_set(err, FC_EFORMAT, "%s: %s (line %d)", cfg, jerr.text, jerr.line);
      else {
        const char *tn = dtype == FC_DT_BF16 ? "bfloat16" : dtype == FC_DT_F16 ? "float16" : "float32";
        json_object_set_new(root, "torch_dtype", json_string(tn));
        char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        rc = fc_write_text_file(dst, txt, err);
        free(txt);
      }
    }
    free(dst);
  }
  free(cfg);
  for (size_t i = 0; i < sizeof files / sizeof files[0] && !rc; i++) {
    char *src = fc_path_join(base_path, files[i]);
    if (fc_path_exists(src)) {
      char *dst = fc_path_join(out_dir, files[i]);
      rc = fc_copy_file(src, dst, err);
      free(dst);
    }
    free(src);
  }
  return rc;
}

static int same_path(const char *a, const char *b) {
  char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
  int same = ra && rb ? !strcmp(ra, rb) : !strcmp(a, b);
  free(ra);
  free(rb);
  return same;
}

int fc_merge_run(const fc_merge_cfg_t *cfg_in, const char *out_dir, fc_err_t *err) {
  fc_merge_cfg_t cfg = *cfg_in;
  fc_merge_method_t M = cfg.method;
  if (cfg.nmodels < 1) return fc_err_set(err, FC_EINVAL, "no models to merge");
  if (method_uses_base(M) && !cfg.base)
    return fc_err_set(err, FC_EINVAL, "%s needs a base model", method_names[M]);
  if (M == FC_MERGE_SLERP && !(cfg.t == cfg.t))
    return fc_err_set(err, FC_EINVAL, "slerp needs the parameter t");
  if (cfg.dtype >= 0 && cfg.dtype != FC_DT_F32 && cfg.dtype != FC_DT_F16 && cfg.dtype != FC_DT_BF16)
    return fc_err_set(err, FC_EINVAL, "output dtype must be float32, float16 or bfloat16");
  /* Task-vector methods skip the base if it is also listed, as mergekit does. */
  fc_merge_model_t *list = fc_xmalloc((size_t)cfg.nmodels * sizeof *list);
  int nm = 0;
  for (int i = 0; i < cfg.nmodels; i++) {
    if (method_uses_base(M) && same_path(cfg.models[i].path, cfg.base)) continue;
    list[nm++] = cfg.models[i];
  }
  const char *base_path = cfg.base ? cfg.base : list[0].path;
  int rc = 0;
  fc_st_t *base = NULL, **st = fc_xcalloc((size_t)(nm ? nm : 1), sizeof *st);
  const fc_st_tensor_t **ins = fc_xcalloc((size_t)(nm ? nm : 1), sizeof *ins);
  fc_st_spec_t *specs = NULL;
  const char **fnames = NULL, **tnames = NULL;
  workspace_t ws = {0};
  fc_st_writer_t *w = NULL;
  if (nm == 0) {
    rc = fc_err_set(err, FC_EINVAL, "no models besides the base to merge");
    goto out;
  }
  if (nm > FC_MERGE_MAX_MODELS) {
    rc = fc_err_set(err, FC_EINVAL, "at most %d models", FC_MERGE_MAX_MODELS);
    goto out;
  }
  if (M == FC_MERGE_SLERP && nm != 1) {
    rc = fc_err_set(err, FC_EINVAL, "slerp merges the base with exactly one other model (%d given)", nm);
    goto out;
  }
  cfg.models = list;
  cfg.nmodels = nm;
  /* Writing into an input's directory would replace that input. */
  for (int i = -1; i < nm; i++) {
    const char *p = i < 0 ? base_path : list[i].path;
    if (same_path(p, out_dir)) {
      rc = fc_err_set(err, FC_EINVAL, "the output directory %s is an input model", out_dir);
      goto out;
    }
  }
  if ((rc = fc_st_open(&base, base_path, err))) goto out;
  for (int i = 0; i < nm; i++)
    if ((rc = fc_st_open(&st[i], list[i].path, err))) goto out;
  /* Same tensor names and shapes everywhere. */
  size_t nt = fc_st_count(base);
  for (int i = 0; i < nm && !rc; i++) {
    for (size_t k = 0; k < nt && !rc; k++) {
      const fc_st_tensor_t *b = fc_st_at(base, k), *t = fc_st_find(st[i], b->name);
      if (!t) {
        rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' is missing from %s", b->name, list[i].path);
        break;
      }
      int same = t->ndim == b->ndim;
      for (int d = 0; same && d < b->ndim; d++) same = t->shape[d] == b->shape[d];
      if (!same) {
        int vocab = strstr(b->name, "embed_tokens") || strstr(b->name, "lm_head") || strstr(b->name, "wte");
        rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' has shape %lldx... in %s but %lldx... in %s%s",
                        b->name, b->ndim ? (long long)t->shape[0] : 1LL, list[i].path,
                        b->ndim ? (long long)b->shape[0] : 1LL, base_path,
                        vocab ? " (the vocabularies differ in size; merging them is not supported)" : "");
      } else if (is_float_dt(b->dtype) != is_float_dt(t->dtype)) {
        rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' is %s in %s but %s in %s", b->name,
                        fc_dtype_name(t->dtype), list[i].path, fc_dtype_name(b->dtype), base_path);
      }
    }
    if (!rc && fc_st_count(st[i]) != nt) {
      for (size_t k = 0; k < fc_st_count(st[i]); k++)
        if (!fc_st_find(base, fc_st_at(st[i], k)->name)) {
          rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' of %s is not in the base %s",
                          fc_st_at(st[i], k)->name, list[i].path, base_path);
          break;
        }
    }
  }
  if (rc) goto out;
  if ((rc = fc_mkdir_p(out_dir, err))) goto out;

  /* Output layout: the base's shards and order, the base's dtype unless cfg.dtype says. */
  specs = fc_xcalloc(nt ? nt : 1, sizeof *specs);
  fnames = fc_xcalloc(nt ? nt : 1, sizeof *fnames);
  tnames = fc_xcalloc(nt ? nt : 1, sizeof *tnames);
  size_t nshards = fc_st_num_shards(base);
  uint64_t total = 0;
  for (size_t k = 0; k < nt; k++) {
    const fc_st_tensor_t *b = fc_st_at(base, k);
    specs[k].name = b->name;
    specs[k].ndim = b->ndim;
    memcpy(specs[k].shape, b->shape, sizeof b->shape);
    fc_dtype_t od = b->dtype;
    if (is_float_dt(b->dtype)) {
      if (cfg.dtype >= 0) od = (fc_dtype_t)cfg.dtype;
      else if (od == FC_DT_F64) od = FC_DT_F32;
    }
    specs[k].dtype = od;
    tnames[k] = b->name;
    fnames[k] = nshards > 1 ? base_name(fc_st_shard_path(base, (size_t)b->shard)) : "model.safetensors";
    total += (uint64_t)b->numel * fc_dtype_size(od);
  }
  fc_merge_stats_t local = {0};
  fc_merge_stats_t *stats = cfg.stats ? cfg.stats : &local;
  memset(stats, 0, sizeof *stats);
  stats->nmodels = nm;
  for (int i = 0; i < nm; i++) stats->model_path[i] = list[i].path;
  double t0 = fc_now();
  int threads = cfg.threads > 0 ? cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  size_t nweighted = 0;
  for (size_t k = 0; k < nt && !rc;) {
    int shard = fc_st_at(base, k)->shard;
    size_t k1 = k;
    while (k1 < nt && fc_st_at(base, k1)->shard == shard) k1++;
    char *path = fc_path_join(out_dir, fnames[k]);
    rc = fc_st_writer_new(&w, path, specs + k, k1 - k, (const char *const[]){"format", "pt", NULL}, err);
    free(path);
    /* A full disk fails here, before the work, not after. */
    if (!rc) rc = fc_st_writer_reserve(w, err);
    for (size_t j = k; j < k1 && !rc; j++) {
      const fc_st_tensor_t *b = fc_st_at(base, j);
      for (int i = 0; i < nm; i++) ins[i] = fc_st_find(st[i], b->name);
      if (!is_float_dt(b->dtype)) {
        fc_warn("tensor '%s' is %s, not a float type: copied from the base", b->name,
                fc_dtype_name(b->dtype));
        rc = fc_st_writer_put_raw(w, j - k, b->data, b->nbytes, err);
      } else {
        double mw[FC_MERGE_MAX_MODELS];
        int fd;
        uint64_t pos;
        rc = fc_st_writer_put_at(w, j - k, &fd, &pos, err);
        if (!rc)
          rc = merge_tensor_raw(&ws, &cfg, b->name, method_uses_base(M) ? b : NULL, ins, NULL, fd, pos,
                                specs[j].dtype, mw, threads, 1, err);
        if (!rc) {
          fc_st_writer_put_done(w, j - k);
          for (int i = 0; i < nm; i++) stats->mean_weight[i] += mw[i];
          nweighted++;
        }
      }
      stats->bytes_in += (double)b->nbytes * (method_uses_base(M) ? 1 : 0);
      for (int i = 0; i < nm; i++) stats->bytes_in += (double)ins[i]->nbytes;
      release_pages(b);
      for (int i = 0; i < nm; i++) release_pages(ins[i]);
      stats->ntensors++;
      if (!rc && cfg.progress && cfg.progress(cfg.progress_ctx, (double)(j + 1) / (double)nt, b->name))
        rc = fc_err_set(err, FC_ECANCEL, "merge cancelled after tensor '%s'", b->name);
    }
    if (!rc) rc = fc_st_writer_finish(&w, err);
    k = k1;
  }
  if (rc) goto out;
  for (int i = 0; i < nm && nweighted; i++) stats->mean_weight[i] /= (double)nweighted;
  {
    /* A file left by an earlier merge in the other layout would shadow this one. */
    char *ip = fc_path_join(out_dir, "model.safetensors.index.json");
    char *sp = fc_path_join(out_dir, "model.safetensors");
    if (nshards > 1) {
      unlink(sp);
      rc = fc_st_write_index(ip, nt, tnames, fnames, total, err);
    } else {
      unlink(ip);
    }
    free(ip);
    free(sp);
    if (rc) goto out;
  }
  if ((rc = copy_side_files(base_path, out_dir, cfg.dtype, err))) goto out;
  stats->seconds = fc_now() - t0;
out:
  if (w) fc_st_writer_abort(&w);
  free(ws.var);
  free(ws.bcnt);
  free(specs);
  free(fnames);
  free(tnames);
  for (int i = 0; i < nm; i++) fc_st_close(&st[i]);
  free(st);
  free(ins);
  fc_st_close(&base);
  free(list);
  return rc;
}
