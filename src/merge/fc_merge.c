/* Model merging, streamed tensor by tensor; this file runs one tensor's job: the method's
 * preparation, then its passes over fixed-size blocks on a pool of threads. Blocks are
 * converted from the mapped file into small f32 scratch buffers, so no pass materialises whole
 * deltas; for bf16 models (the common case) the hot passes read the mapping directly, eight
 * elements at a time, each thread taking runs of blocks, and the final pass writes the output
 * file from each thread. Floating-point reductions are summed per block and then in block
 * order, and integer counts are order-free, so results never depend on the thread count.
 *
 * The methods live in fc_merge_linear.c (linear, task arithmetic, SLERP, VaRM's sum),
 * fc_merge_ties.c (TIES, DARE) and fc_merge_sce.c (SCE, VaRM's weights); the top-k selections
 * in fc_merge_select.c, the eight-lane vectors in fc_merge_lanes.h, the inputs' pages and the
 * whole-model runner in fc_merge_io.c. */
#include "fc_merge_impl.h"

#include "fc_par.h"

#include <errno.h>
#include <unistd.h>

static const char *method_names[FC_MERGE_COUNT] = {
    [FC_MERGE_LINEAR] = "linear", [FC_MERGE_TASK_ARITHMETIC] = "task_arithmetic",
    [FC_MERGE_TIES] = "ties",     [FC_MERGE_DARE_TIES] = "dare_ties",
    [FC_MERGE_DARE_LINEAR] = "dare_linear", [FC_MERGE_SLERP] = "slerp",
    [FC_MERGE_SCE] = "sce",       [FC_MERGE_VARM] = "varm",
    [FC_MERGE_BREADCRUMBS] = "breadcrumbs", [FC_MERGE_BREADCRUMBS_TIES] = "breadcrumbs_ties",
    [FC_MERGE_DELLA] = "della",   [FC_MERGE_DELLA_LINEAR] = "della_linear",
    [FC_MERGE_NEARSWAP] = "nearswap", [FC_MERGE_MODEL_STOCK] = "model_stock",
    [FC_MERGE_NUSLERP] = "nuslerp",   [FC_MERGE_MULTISLERP] = "multislerp",
    [FC_MERGE_KARCHER] = "karcher",   [FC_MERGE_PASSTHROUGH] = "passthrough",
    [FC_MERGE_ARCEE_FUSION] = "arcee_fusion", [FC_MERGE_RAM] = "ram",
    [FC_MERGE_RAMPLUS_TL] = "ramplus_tl",
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
  cfg->lambda = 1.0;
  cfg->gamma = NAN;
  cfg->epsilon = NAN;
  cfg->max_iter = 10;
  cfg->ram_r = 0.1;
  cfg->ram_alpha = 0.2;
  cfg->nuslerp_flatten = 1;
  cfg->tol = 1e-5;
  cfg->normalize = -1;
  cfg->rescale = -1;
  cfg->sce_mask_scope = FC_SCE_SCOPE_DELTAS;
  cfg->dtype = -1;
}
static int method_default_normalize(fc_merge_method_t m) {
  return m == FC_MERGE_LINEAR || m == FC_MERGE_TIES || m == FC_MERGE_DELLA || m == FC_MERGE_MULTISLERP;
}
static int method_default_rescale(fc_merge_method_t m) {
  return m == FC_MERGE_DARE_TIES || m == FC_MERGE_DARE_LINEAR || m == FC_MERGE_DELLA ||
         m == FC_MERGE_DELLA_LINEAR;
}

/* Per-thread scratch blocks; for pass `kind` (or -1: the band setups' sampling) also the
 * thread's histograms and, when the final pass writes a file, its run of output elements. */
static scratch_t *scratch_new(const job_t *J, int kind) {
  scratch_t *s = fc_xcalloc(1, sizeof *s);
  s->b = fc_xmalloc(BLK * sizeof(float));
  s->m = fc_xmalloc((size_t)(J->nm ? J->nm : 1) * BLK * sizeof(float));
  s->o = fc_xmalloc(BLK * sizeof(float));
  s->a1 = fc_xmalloc(3 * BLK * sizeof(double));
  s->a2 = s->a1 + BLK;
  s->a3 = s->a2 + BLK;
  int hist = kind == P_TIES_HIST || kind == P_SCE_HIST;
  s->hist = hist && J->pass < 2 ? fc_xcalloc((size_t)J->nsel * NBIN, sizeof(uint32_t)) : NULL;
  s->dst = J->out;
  s->rk_row = -1;
  s->ob = kind == P_FINAL && J->out_fd >= 0 ? fc_xmalloc(FUSED_RUN * BLK * fc_dtype_size(J->out_dt)) : NULL;
  return s;
}

static void scratch_free(scratch_t *s) {
  free(s->rk);
  free(s->ob);
  free(s->b);
  free(s->m);
  free(s->o);
  free(s->a1);
  free(s->hist);
  free(s);
}

typedef void (*block_fn)(job_t *J, int kind, scratch_t *s, size_t blk);

static void sum_fused(job_t *J, int kind, scratch_t *s, size_t blk) {
  (void)kind;
  fc_merge_sum_fused_block(J, s, blk);
}

/* The block function of pass kind for J's method. */
static block_fn pass_fn(const job_t *J, int kind) {
  switch (kind) {
  case P_TIES_HIST:
  case P_TIES_BAND: return fc_merge_ties_block;
  case P_SCE_VAR:
  case P_SCE_HIST:
  case P_SCE_W:
  case P_SUMSQ: return fc_merge_sce_block;
  case P_SLERP_DOT:
  case P_STOCK_DOT: return fc_merge_linear_block;
  case P_RAM_COUNT: return fc_merge_ram_block;
  default: break;
  }
  if (J->fused == F_SUM || J->fused == F_DELTA_SUM || J->fused == F_SLERP) return sum_fused;
  switch (J->method) {
  case FC_MERGE_LINEAR:
  case FC_MERGE_VARM:
  case FC_MERGE_SLERP:
  case FC_MERGE_NEARSWAP:
  case FC_MERGE_MODEL_STOCK:
  case FC_MERGE_NUSLERP:
  case FC_MERGE_MULTISLERP:
  case FC_MERGE_KARCHER:
  case FC_MERGE_ARCEE_FUSION: return fc_merge_linear_block;
  case FC_MERGE_SCE: return fc_merge_sce_block;
  case FC_MERGE_RAM:
  case FC_MERGE_RAMPLUS_TL: return fc_merge_ram_block;
  default: return fc_merge_ties_block;
  }
}

typedef struct pass {
  job_t *J;
  int kind;
  block_fn fn;
  int to_file; /* the final pass pwrites each run of blocks at its place in the output file */
} pass_t;

static void *pass_begin(void *ctx) {
  const pass_t *P = ctx;
  return scratch_new(P->J, P->kind);
}

/* Blocks [blk, end): one run. */
static void pass_range(void *ctx, void *local, size_t blk, size_t end) {
  const pass_t *P = ctx;
  job_t *J = P->J;
  scratch_t *s = local;
  if (P->to_file) {
    s->dst = s->ob;
    s->off0 = blk * BLK;
  }
  const size_t e0 = blk * BLK, e1 = end * BLK < J->n ? end * BLK : J->n;
  if (J->page_io && !J->populated) fc_merge_populate(J, e0, e1);
  for (size_t b = blk; b < end; b++) P->fn(J, P->kind, s, b);
  if (!P->to_file) return;
  /* The run's output goes to its place in the file from this thread while it is still in
   * cache: no tensor-sized buffer, no serial write after the pass. */
  const size_t esz = fc_dtype_size(J->out_dt);
  const uint8_t *p = s->ob;
  size_t left = (e1 - s->off0) * esz;
  uint64_t pos = J->out_pos + (uint64_t)s->off0 * esz;
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

/* A worker's results into the job's (fc_par runs this one worker at a time). */
static void pass_end(void *ctx, void *local) {
  const pass_t *P = ctx;
  job_t *J = P->J;
  scratch_t *s = local;
  if (s->hist)
    for (size_t i = 0; i < (size_t)J->nsel * NBIN; i++) J->hist[i] += s->hist[i];
  if (P->kind == P_TIES_BAND || P->kind == P_SCE_VAR)
    for (int i = 0; i < J->nsel; i++) {
      fc_merge_cand_merge(&J->sel[i], &s->tc[i], P->kind == P_SCE_VAR ? J->nm : 0);
      fc_merge_cand_free(&s->tc[i]);
    }
  scratch_free(s);
}

void fc_merge_pass(job_t *J, int kind, int threads) {
  pass_t P = {.J = J, .kind = kind, .fn = pass_fn(J, kind)};
  P.to_file = kind == P_FINAL && J->out_fd >= 0;
  /* The fused passes take runs of blocks, so each thread streams long stretches of every input
   * (the hardware prefetchers lose track at each jump). */
  const int fused_read = J->fused && (kind == P_FINAL || kind == P_TIES_BAND || kind == P_SCE_VAR);
  const size_t run = fused_read || J->page_io || P.to_file ? FUSED_RUN : 1;
  fc_par_job_t job = {.range = pass_range, .begin = pass_begin, .end = pass_end, .ctx = &P};
  fc_par_run(&job, J->nblocks, run, threads);
  if (kind != P_SCE_HIST) J->populated = 1; /* the other passes read every input */
}

typedef struct each {
  job_t *J;
  fc_merge_each_fn fn;
  void *arg;
} each_t;

static void *each_begin(void *ctx) { return scratch_new(((const each_t *)ctx)->J, -1); }
static void each_end(void *ctx, void *local) {
  (void)ctx;
  scratch_free(local);
}
static void each_range(void *ctx, void *local, size_t i0, size_t i1) {
  const each_t *E = ctx;
  for (size_t i = i0; i < i1; i++) E->fn(E->J, (int)i, local, E->arg);
}

void fc_merge_each(job_t *J, int n, int threads, fc_merge_each_fn fn, void *arg) {
  each_t E = {J, fn, arg};
  fc_par_job_t job = {.range = each_range, .begin = each_begin, .end = each_end, .ctx = &E};
  fc_par_run(&job, n > 0 ? (size_t)n : 0, 1, threads);
}

static void job_free(job_t *J) {
  if (!J->ws) free(J->bcnt);
  for (int i = 0; i < 2 * FC_MERGE_MAX_MODELS; i++) {
    free(J->sel[i].quota);
    fc_merge_cand_free(&J->sel[i]);
  }
  free(J->blk_nz);
  free(J->dl_p);
  free(J->dl_thr);
  free(J->imp);
  free(J->gc);
  if (!J->ws) free(J->var);
  free(J->part);
}

/* Sum of the per-block partials of column c, in block order. */
double fc_merge_part_sum(const job_t *J, int c) {
  double s = 0;
  for (size_t b = 0; b < J->nblocks; b++) s += J->part[b * J->npart + c];
  return s;
}

/* out: the merged tensor in out_dt, in memory, or (out NULL) pwritten at out_pos of out_fd. */
int fc_merge_tensor_raw(workspace_t *ws, const fc_merge_cfg_t *cfg, const char *name, const fc_st_tensor_t *base,
                            const fc_st_tensor_t *const *models, void *out, int out_fd, uint64_t out_pos,
                            fc_dtype_t out_dt, double *model_w, int threads, int mapped, fc_err_t *err) {
  const int nm = cfg->nmodels;
  fc_merge_method_t M = cfg->method;
  assert(nm >= 1 && nm <= FC_MERGE_MAX_MODELS);
  assert(base || M == FC_MERGE_LINEAR || M == FC_MERGE_NUSLERP || M == FC_MERGE_MULTISLERP ||
         M == FC_MERGE_KARCHER);
  assert(!base || M != FC_MERGE_KARCHER);
  const fc_st_tensor_t *ref = base ? base : models[0];
  for (int i = 0; i < nm; i++)
    if (models[i]->numel != ref->numel)
      return fc_err_set(err, FC_EMISMATCH, "tensor '%s': %s has %lld elements, the base %lld", name,
                        cfg->models[i].path ? cfg->models[i].path : "a model",
                        (long long)models[i]->numel, (long long)ref->numel);
  if (M == FC_MERGE_NUSLERP && nm != 2)
    return fc_err_set(err, FC_EINVAL, "nuslerp merges exactly two models (%d given besides the base)", nm);
  if (M == FC_MERGE_MODEL_STOCK && nm < 2)
    return fc_err_set(err, FC_EINVAL, "model_stock needs at least two models besides the base (%d given)", nm);
  if ((fc_merge_method_pairwise(M) || M == FC_MERGE_ARCEE_FUSION) && nm != 1)
    return fc_err_set(err, FC_EINVAL, "%s merges the base with exactly one other model (%d given)",
                      fc_merge_method_name(M), nm);
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
  double wsum = 0;
  J.lambda = (float)cfg->lambda;
  J.consensus = M == FC_MERGE_TIES || M == FC_MERGE_DARE_TIES || M == FC_MERGE_BREADCRUMBS_TIES ||
                M == FC_MERGE_DELLA;
  J.arow = ref->ndim >= 1 && ref->shape[ref->ndim - 1] > 0 ? (size_t)ref->shape[ref->ndim - 1] : J.n;
  J.ncols = ref->ndim >= 2 && ref->shape[0] > 0 ? J.n / (size_t)ref->shape[0] : J.n;
  /* Angles per row (mergekit's dim -1: the last dimension) or per column (dim 0, the vectors
   * along the first dimension); a 1-D tensor is one vector either way. */
  if ((M == FC_MERGE_NUSLERP && !cfg->nuslerp_flatten) || (M == FC_MERGE_MODEL_STOCK && cfg->filter_wise))
    J.grp = M == FC_MERGE_NUSLERP && cfg->nuslerp_row_wise && ref->ndim >= 2 ? G_COLS : G_ROWS;
  for (int i = 0; i < nm; i++) {
    const fc_merge_model_t *md = &cfg->models[i];
    J.w[i] = (float)md->weight;
    J.dens[i] = md->density;
    J.gam[i] = md->has & FC_MERGE_HAS_GAMMA ? md->gamma
               : isnan(cfg->gamma)          ? FC_MERGE_GAMMA_DEFAULT
                                            : cfg->gamma;
    J.eps[i] = md->has & FC_MERGE_HAS_EPSILON ? md->epsilon
               : isnan(cfg->epsilon)          ? FC_MERGE_EPSILON_DEFAULT
                                              : cfg->epsilon;
    J.dkey[i] = fc_merge_dare_key(cfg->seed, name, i);
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
    const int sum = M == FC_MERGE_TASK_ARITHMETIC || M == FC_MERGE_DARE_LINEAR;
    if (!bf || (sum && J.lambda != 1.0f)) J.fused = F_NONE; /* the fused sums have no lambda */
    else if (M == FC_MERGE_LINEAR || M == FC_MERGE_VARM) {
      J.fused = F_SUM;
      J.fused_scale = M == FC_MERGE_LINEAR && J.normalize;
    } else if (M == FC_MERGE_TASK_ARITHMETIC || (M == FC_MERGE_DARE_LINEAR && !masked)) {
      J.fused = F_DELTA_SUM;
      J.fused_scale = J.normalize;
    } else if (M == FC_MERGE_SLERP) J.fused = F_SLERP;
    else if (M == FC_MERGE_TIES || M == FC_MERGE_BREADCRUMBS || M == FC_MERGE_BREADCRUMBS_TIES)
      J.fused = F_TIES;
    else if (M == FC_MERGE_SCE) J.fused = F_SCE;
  }
  /* File-mapped inputs: the first pass maps pages run by run in every worker, instead of one
   * thread mapping the whole tensor while the others wait. (Dropping them run by run too cost
   * more: every drop is a TLB shootdown across the workers.) */
  J.page_io = mapped;
  if (M == FC_MERGE_TIES) rc = fc_merge_ties_prepare(&J, name, threads, err);
  else if (M == FC_MERGE_BREADCRUMBS || M == FC_MERGE_BREADCRUMBS_TIES)
    rc = fc_merge_crumbs_prepare(&J, name, threads, err);
  else if (M == FC_MERGE_DELLA || M == FC_MERGE_DELLA_LINEAR) rc = fc_merge_della_prepare(&J, name, err);
  else if (M == FC_MERGE_SCE) fc_merge_sce_prepare(&J, threads);
  else if (M == FC_MERGE_VARM) fc_merge_varm_prepare(&J, threads);
  else if (M == FC_MERGE_SLERP) fc_merge_slerp_prepare(&J, threads);
  else if (M == FC_MERGE_MODEL_STOCK) fc_merge_stock_prepare(&J, threads);
  else if (M == FC_MERGE_NUSLERP) fc_merge_nuslerp_prepare(&J, threads);
  else if (M == FC_MERGE_MULTISLERP) rc = fc_merge_multislerp_prepare(&J, name, threads, err);
  else if (M == FC_MERGE_KARCHER) fc_merge_karcher_prepare(&J, threads);
  else if (M == FC_MERGE_ARCEE_FUSION) fc_merge_fusion_prepare(&J, threads);
  else if (M == FC_MERGE_RAM || M == FC_MERGE_RAMPLUS_TL) fc_merge_ram_prepare(&J, threads);
  if (rc) goto done;
  fc_merge_pass(&J, P_FINAL, threads);
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
  return fc_merge_tensor_raw(NULL, cfg, tensor_name, base, models, out, -1, 0, FC_DT_F32, model_w, threads, 0, err);
}
