/* Private to the merge floor: one tensor's job (the state every pass shares), the per-thread
 * scratch, the block loads and stores, and the functions the method files give each other.
 * The helpers are inlined into each method's hot block functions (FC_HOT). */
#ifndef FC_MERGE_IMPL_H
#define FC_MERGE_IMPL_H

#include "fc_merge.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The block functions are compiled for x86-64-v4 (AVX-512), AVX2 and the baseline, and picked
 * at load time (GCC's function multiversioning); the helpers are inlined into each version. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FC_HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define FC_HOT
#endif
#define FC_INLINE static inline __attribute__((always_inline))

/* How nuslerp and model_stock take their angles: over the whole tensor, per row (the last
 * dimension: element e in vector e / arow), per column (element e in vector e % ncols). */
enum { G_TENSOR = 0, G_ROWS, G_COLS };

#define BLK 8192 /* elements per block: a few scratch blocks fit in L2 (and a count fits u16) */
#define TTAB 128 /* positions of a tie-group table (open addressing, at most TTAB_MAX used) */
#define TTAB_MAX 48
#define NHEAVY 4
#define NBIN 65536
#define FUSED_RUN 16 /* blocks a thread takes at a time in the final pass (1 MB of bf16 input) */

/* Band selection samples SRUNS evenly spaced runs of at most SRUN elements (fc_merge_select.c). */
#define SRUNS 64
#define SRUN 1024
#define BAND_MIN (fc_merge_band_min > SRUNS * 64 ? fc_merge_band_min : SRUNS * 64)
static inline size_t srun_len(size_t n) { return n / SRUNS < SRUN ? n / SRUNS : SRUN; }

/* Pass kinds: what one run over the tensor's blocks computes. */
enum { P_FINAL, P_TIES_HIST, P_TIES_BAND, P_SCE_VAR, P_SCE_HIST, P_SCE_W, P_SUMSQ, P_SLERP_DOT, P_STOCK_DOT,
       P_RAM_COUNT };
/* Fused final passes (bf16 inputs read straight from the mapping, fc_merge_lanes.h). */
enum { F_NONE, F_SUM, F_DELTA_SUM, F_SLERP, F_TIES, F_SCE };

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
  double gam[FC_MERGE_MAX_MODELS];  /* breadcrumbs: fraction of largest deltas dropped */
  double eps[FC_MERGE_MAX_MODELS];  /* della: half-width of the keep probabilities */
  uint8_t none[FC_MERGE_MAX_MODELS]; /* breadcrumbs: the model keeps no delta */
  uint64_t dkey[FC_MERGE_MAX_MODELS];
  size_t ncols;   /* della: elements per row (ranks are taken within rows) */
  float *dl_p;     /* della: [nm][ncols] keep probability of each rank */
  uint32_t *dl_thr; /* della: [nm][ncols] draws below this are kept (p 2^32 rounded up, capped) */
  float lambda;   /* task-vector methods: scale of the merged delta */
  int consensus;  /* the method elects a sign (TIES, DARE-TIES, breadcrumbs_ties, DELLA) */
  int normalize, rescale;
  double divisor; /* no-consensus methods: sum of weights (guarded) */
  /* ties: sel[i] per model; breadcrumbs: also sel[nm + i], model i's dropped outliers;
   * sce: sel[0] on variance. A selection si ranks model si % nm's |deltas|. */
  sel_t sel[2 * FC_MERGE_MAX_MODELS];
  float *var;                       /* sce: [n] population variance across models */
  int select;                       /* sce: 1 select by variance, 0 keep all, -1 keep none */
  float sw[FC_MERGE_MAX_MODELS];    /* sce / varm weights */
  float s0, s1;                     /* slerp coefficients; arcee_fusion: s0 the threshold */
  float *imp;                       /* arcee_fusion: [n] importance of each element */
  size_t arow;                      /* arcee_fusion, G_ROWS: elements per row (the last dimension) */
  int grp;                          /* G_TENSOR (one angle), G_ROWS or G_COLS (one per vector) */
  float *gc;                        /* G_ROWS/G_COLS: [ngroups][2] the vector's coefficients */
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
  sel_t tc[2 * FC_MERGE_MAX_MODELS]; /* thread-local band candidates (above, cidx, ckey, cd, nc) */
  /* della: the ranks within their row of the last row seen, per model, and sort buffers */
  uint32_t *rk;
  int64_t rk_row;
  size_t rk_cap;
  void *dst;      /* where the final pass stores element off0 (J->out, or ob when writing to a file) */
  size_t off0;
  uint8_t *ob;    /* [FUSED_RUN * BLK] output elements of one run of blocks, for pwrite */
} scratch_t;

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

/* ---- the DARE/DELLA draws ---- */

/* fc_splitmix64, inlined because it runs once per element per model. */
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

/* ---- top-k selection (fc_merge_select.c) ---- */

/* Appends one band candidate (index, key and, for SCE, its nd deltas) to c. */
static inline void cand_push(sel_t *c, uint64_t idx, uint32_t key, const float *d, int nd) {
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

/* The radix select's pass over one block's keys for selection si: pass 0 counts the top 16 bits
 * (s->hist), pass 1 the low 16 bits of the keys in bin S->hi, pass 2 the block's ties. */
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

/* Membership of one block's keys in selection S (found): in[j] = 1 for the selected. */
FC_INLINE void sel_block(const sel_t *S, size_t blk, const uint32_t *keys, size_t cnt, uint8_t *in) {
  if (!S->active) {
    memset(in, 1, cnt);
    return;
  }
  int64_t q = S->all_eq ? -1 : S->quota[blk];
  if (q <= 0) { /* all of this block's ties are in (-1) or none are (0) */
    const uint32_t lo = q < 0 ? S->thr : S->thr + 1;
    for (size_t j = 0; j < cnt; j++) in[j] = keys[j] >= lo;
    return;
  }
  for (size_t j = 0; j < cnt; j++) {
    const int tie = keys[j] == S->thr && q > 0;
    in[j] = keys[j] > S->thr || tie;
    q -= tie;
  }
}

void fc_merge_cand_merge(sel_t *dst, const sel_t *src, int nd);
void fc_merge_cand_free(sel_t *c);
/* Radix select for sel[0..nsel) over the keys pass `kind` produces (two or three passes). */
void fc_merge_run_select(job_t *J, int kind, int threads);
/* Band [lo, bhi] around the fraction q of largest keys in the sample ks[ns]. */
void fc_merge_band_setup(sel_t *S, uint32_t *ks, size_t ns, double q);
/* Fills S's tie-group table with the keys most frequent in the sample's band. */
void fc_merge_ttab_seed(sel_t *S, const uint32_t *ks, size_t ns);
/* Exact threshold from the band candidates (and tie-group counts bc), if the k-th largest key
 * is among them: 1 and S->done, else 0. */
int fc_merge_band_resolve(const job_t *J, sel_t *S, const uint16_t *bc);

/* ---- one tensor's job and its passes (fc_merge.c) ---- */

/* Merges one tensor: out, the merged tensor in out_dt in memory, or (out NULL) pwritten at
 * out_pos of out_fd. ws: buffers kept across tensors, or NULL. mapped: the inputs are file
 * mappings (the first pass maps their pages run by run). */
int fc_merge_tensor_raw(workspace_t *ws, const fc_merge_cfg_t *cfg, const char *name,
                        const fc_st_tensor_t *base, const fc_st_tensor_t *const *models, void *out,
                        int out_fd, uint64_t out_pos, fc_dtype_t out_dt, double *model_w, int threads,
                        int mapped, fc_err_t *err);

/* Runs pass `kind` over every block of J on up to `threads` threads. */
void fc_merge_pass(job_t *J, int kind, int threads);
/* Runs fn(J, i, scratch, arg) for i in [0, n) on up to `threads` threads, each with its own
 * scratch blocks (the band setups' sampling). */
typedef void (*fc_merge_each_fn)(job_t *J, int i, scratch_t *s, void *arg);
void fc_merge_each(job_t *J, int n, int threads, fc_merge_each_fn fn, void *arg);
/* Sum of the per-block partials of column c, in block order. */
double fc_merge_part_sum(const job_t *J, int c);

/* ---- input pages and side files (fc_merge_io.c), passthrough (fc_merge_slices.c) ---- */

/* config.json (torch_dtype set to dtype when >= 0, num_hidden_layers to nlayers when >= 0) and
 * the tokenizer files, from the model directory src to out_dir. */
int fc_merge_copy_side_files(const char *src, const char *out_dir, int dtype, int nlayers, fc_err_t *err);
/* The same with the tokenizer files from tok_dir and vocab_size set when vocab >= 0. */
int fc_merge_copy_side_files2(const char *src, const char *tok_dir, const char *out_dir, int dtype, int nlayers,
                              long vocab, fc_err_t *err);

int fc_merge_passthrough_run(const fc_merge_cfg_t *cfg, const char *out_dir, fc_err_t *err);

/* The output tensors of a merge, in order: name (owned), the tensor that gives its layout (the
 * base's, or the first model's when the method has no base), each model's input (in[k * nm + i]),
 * the layer position t its parameters are resolved at, and its output shard. */
typedef struct fc_merge_plan {
  size_t n, cap;
  int nm;
  char **name;
  const fc_st_tensor_t **lay, **in;
  double *t;
  int *shard;
  int depth; /* output layers: -1 when the layout is the base's own */
} fc_merge_plan_t;
void fc_merge_plan_add(fc_merge_plan_t *P, char *name, const fc_st_tensor_t *lay, double t, int shard);
void fc_merge_plan_free(fc_merge_plan_t *P);
/* The plan of a merge by slices (cfg->nslices, method not passthrough): list[nm] the models
 * (the base left out when the method uses it), st their files, base the base's (or NULL). */
int fc_merge_plan_slices(fc_merge_plan_t *P, const fc_merge_cfg_t *cfg, fc_st_t *base, fc_st_t *const *st,
                         const fc_merge_model_t *list, int nm, fc_err_t *err);
int fc_merge_same_path(const char *a, const char *b);
/* The dtypes a merge computes on (others are copied from the base). */
static inline int fc_merge_float_dt(fc_dtype_t d) {
  return d == FC_DT_F32 || d == FC_DT_F16 || d == FC_DT_BF16 || d == FC_DT_F64;
}
/* The tensors indexed by token (tokenizer_source permutes their rows). */
int fc_merge_vocab_tensor(const fc_st_tensor_t *t);
/* tokenizer_source (fc_merge_vocab.c): perm[k][t], the row of input k (model directory dirs[k])
 * holding token t of src_dir's vocabulary (*nv tokens), or -1; each perm[k] is malloc'd. */
int fc_merge_vocab_perms(const char *src_dir, const char *const *dirs, int nin, int32_t **perm, size_t *nv,
                         fc_err_t *err);
/* tokenizer_source union: the same perm over the union of dirs' vocabularies (dirs[0] the base,
 * else the first model), and the output's tokenizer.json text and a JSON array of the entries it
 * added (for fc_merge_vocab_write_union), both malloc'd. */
int fc_merge_vocab_union(const char *const *dirs, int nin, int32_t **perm, size_t *nv, char **tok_json,
                         char **added_json, fc_err_t *err);
int fc_merge_vocab_write_union(const char *out_dir, const char *tok_json, const char *added_json, fc_err_t *err);
/* Input k's embedding rows [nrows][h] in that vocabulary (f32), the rows it lacks filled as
 * mergekit does; base_k: the base's index among the inputs, or -1; rows nv..nrows (padding)
 * the mean of the first nv. */
void fc_merge_vocab_permute(const fc_st_tensor_t *const *ins, int nin, int base_k, int32_t *const *perm,
                            size_t nv, size_t nrows, size_t h, int k, float *out);

/* Maps elements [e0, e1) of every input ahead of use. */
void fc_merge_populate(const job_t *J, size_t e0, size_t e1);

/* ---- the methods: preparation (selections, weights, coefficients) and block passes ---- */

/* fc_merge_linear.c: linear, task arithmetic's and VaRM's fused sums, SLERP. */
void fc_merge_slerp_prepare(job_t *J, int threads);
/* model_stock's t (in J->s0) from the deltas' squared norms and pairwise dot products. */
void fc_merge_stock_prepare(job_t *J, int threads);
/* nuslerp's coefficients (J->s0, J->s1) from the two models' (or deltas') angle. */
void fc_merge_nuslerp_prepare(job_t *J, int threads);
/* multislerp's per-model coefficients (J->sw) from the Gram matrix of the models (or deltas). */
int fc_merge_multislerp_prepare(job_t *J, const char *name, int threads, fc_err_t *err);
/* karcher's per-model coefficients (J->sw), its iteration run on coefficients over the models. */
void fc_merge_karcher_prepare(job_t *J, int threads);
void fc_merge_linear_block(job_t *J, int kind, scratch_t *s, size_t blk);
void fc_merge_ram_prepare(job_t *J, int threads);
void fc_merge_ram_block(job_t *J, int kind, scratch_t *s, size_t blk);
void fc_merge_sum_fused_block(job_t *J, scratch_t *s, size_t blk);
/* fc_merge_fusion.c: arcee_fusion's importance (J->imp) and threshold (J->s0). */
void fc_merge_fusion_prepare(job_t *J, int threads);
/* fc_merge_ties.c: TIES, DARE and task arithmetic's generic path. */
uint64_t fc_merge_dare_key(uint64_t seed, const char *tensor_name, int model);
int fc_merge_ties_prepare(job_t *J, const char *name, int threads, fc_err_t *err);
void fc_merge_ties_find(job_t *J, int threads);
void fc_merge_ties_block(job_t *J, int kind, scratch_t *s, size_t blk);
/* fc_merge_sparse.c: breadcrumbs' two selections per model and DELLA's ranked drop, applied to
 * one block's deltas in s->m (before weighting). */
int fc_merge_crumbs_prepare(job_t *J, const char *name, int threads, fc_err_t *err);
int fc_merge_della_prepare(job_t *J, const char *name, fc_err_t *err);
void fc_merge_crumbs_mask(const job_t *J, scratch_t *s, size_t blk, size_t cnt);
void fc_merge_della_mask(const job_t *J, scratch_t *s, size_t blk, size_t cnt);
/* DELLA's ranks: rank[j] = the ascending rank of key[j] among key[0..c), ties to the lower
 * index; w: fc_merge_rank_work(c) words of scratch. (Exposed for tests.) */
#define RANK_BINS(c) (2 * (c) + 1024) /* widest histogram the counting rank takes */
size_t fc_merge_rank_work(size_t c);
void fc_merge_rank_row(const uint32_t *key, size_t c, uint32_t *rank, uint32_t *w);
/* fc_merge_sce.c: SCE and VaRM's weights. */
void fc_merge_sce_prepare(job_t *J, int threads);
void fc_merge_varm_prepare(job_t *J, int threads);
void fc_merge_sce_block(job_t *J, int kind, scratch_t *s, size_t blk);

#endif
