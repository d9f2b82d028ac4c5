/* SCE (FuseChat): select the elements whose deltas vary most across the models (a top-k on
 * their variance, fc_merge_select.c), weigh each model by its mean squared selected delta, and
 * merge the deltas that agree with the elected sign. VaRM's weights (mean squared deltas of
 * everything) come from the same pass; its final sum is fc_merge_linear.c's. */
#include "fc_merge_lanes.h"

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
  const vf8 zero = {0};
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
  sign_lanes(pos, sgn, U);
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

/* Whether block blk can take the fused path (no partial ties here). lo[0]: the variance key
 * kept from; lo[1]: whether the deltas are masked at all. */
FC_INLINE int fused_lo(const job_t *J, size_t blk, uint32_t *lo) {
  lo[0] = 0;
  lo[1] = J->cfg->sce_mask_scope == FC_SCE_SCOPE_DELTAS && J->select != 0;
  if (!lo[1]) return 1;
  if (J->select < 0) return 0;
  return sel_quota_lo(&J->sel[0], blk, &lo[0]);
}

/* One block of the fused SCE pass: elements [off, off+cnt). */
FC_INLINE void fused_block(const job_t *J, const int nm, size_t off, size_t cnt, const uint32_t *lo, void *dst,
                           size_t doff) {
#define SCE_STEP(mp, bp, vp, j, o, U) fused_sce_step(J, nm, mp, bp, vp, j, lo[0], (int)lo[1], o, U)
  FUSED_BLOCK(J, nm, off, cnt, J->var ? J->var + off : NULL, dst, doff, SCE_STEP);
#undef SCE_STEP
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

#define CALL_SCE_VAR(J, s, blk, NM) fused_sce_var(J, NM, s, blk)
#define CALL_FUSED_BLOCK(J, off, cnt, lo, dst, doff, NM) fused_block(J, NM, off, cnt, lo, dst, doff)

/* SCE's passes: variances (P_SCE_VAR), their radix select (P_SCE_HIST), the weights' sums of
 * squares (P_SCE_W, and VaRM's P_SUMSQ over every element) and the final merge. */
FC_HOT void fc_merge_sce_block(job_t *J, int kind, scratch_t *s, size_t blk) {
  const int nm = J->nm;
  size_t off = blk * BLK;
  uint8_t keep[BLK];
  if (kind == P_SCE_VAR) {
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
  if (kind == P_SCE_HIST) {
    uint32_t keys[BLK];
    size_t cnt = J->n - off < BLK ? J->n - off : BLK;
    for (size_t j = 0; j < cnt; j++) keys[j] = f2u(J->var[off + j]);
    hist_add(J, s, 0, keys, cnt, blk);
    return;
  }
  if (kind == P_SCE_W || kind == P_SUMSQ) {
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
  assert(kind == P_FINAL);
  if (J->fused == F_SCE) {
    uint32_t lo[FC_MERGE_MAX_MODELS];
    if (fused_lo(J, blk, lo)) {
      WITH_NM(J->nm, CALL_FUSED_BLOCK, J, off, J->n - off < BLK ? J->n - off : BLK, lo, s->dst, off - s->off0);
      return;
    }
  }
  size_t cnt = load_block(J, s, blk, 1);
  float *o = s->o;
  const float *b = s->b;
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
  store_out(s->dst, J->out_dt, off - s->off0, cnt, o);
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
  fc_merge_each(J, SRUNS, threads, sce_setup_run, &A);
  for (size_t r = 0; r < SRUNS; r++) nz += nzr[r];
  fc_merge_band_setup(&J->sel[0], A.ks, ns, topk * (double)nz / (double)ns);
  free(A.ks);
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

/* SCE's selection threshold (band pass or radix select) and its weights sw. */
void fc_merge_sce_prepare(job_t *J, int threads) {
  const int nm = J->nm;
  J->npart = nm > 1 ? nm : 1;
  J->part = fc_xcalloc(J->nblocks * (size_t)J->npart, sizeof(double));
  double tk = J->cfg->select_topk;
  int weights_done = 0;
  if (tk <= 0) J->select = -1;
  else if (tk >= 1) J->select = 0;
  else {
    J->blk_nz = fc_xcalloc(J->nblocks, sizeof *J->blk_nz);
    J->nsel = 1;
    if (J->n >= BAND_MIN) sce_band_setup(J, tk, threads);
    /* With a band, the fused pass keeps no variances: the final pass recomputes them. */
    if (!J->sel[0].band || J->fused != F_SCE) sce_var_alloc(J);
    fc_merge_pass(J, P_SCE_VAR, threads);
    int64_t nz = 0;
    for (size_t b = 0; b < J->nblocks; b++) nz += J->blk_nz[b];
    /* mergekit computes k = int(count_nonzero * density) with a float32 tensor product. */
    int64_t k = (int64_t)((float)nz * (float)tk);
    if (k == 0) J->select = -1;
    else {
      J->select = 1;
      J->sel[0].active = 1;
      J->sel[0].k = k;
      if (J->sel[0].band && fc_merge_band_resolve(J, &J->sel[0], NULL)) {
        sce_band_weights(J);
        weights_done = 1;
      } else {
        J->sel[0].band = 0;
        if (!J->var) {
          /* The band missed the threshold: variances again, kept this time. */
          fc_merge_cand_free(&J->sel[0]);
          sce_var_alloc(J);
          fc_merge_pass(J, P_SCE_VAR, threads);
        }
        fc_merge_run_select(J, P_SCE_HIST, threads);
      }
    }
    fc_merge_cand_free(&J->sel[0]);
  }
  if (!weights_done) {
    memset(J->part, 0, J->nblocks * (size_t)J->npart * sizeof(double));
    fc_merge_pass(J, P_SCE_W, threads);
  }
  double tot = 0, mw[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) tot += mw[i] = fc_merge_part_sum(J, i) / (double)J->n;
  for (int i = 0; i < nm; i++) J->sw[i] = fabs(tot) < 1e-6 ? 1.0f / nm : (float)(mw[i] / tot);
}

/* VaRM's weights: W_i ~ mean(d_i^2) over the tensor, uniform when all are zero. */
void fc_merge_varm_prepare(job_t *J, int threads) {
  const int nm = J->nm;
  J->npart = nm;
  J->part = fc_xcalloc(J->nblocks * (size_t)J->npart, sizeof(double));
  fc_merge_pass(J, P_SUMSQ, threads);
  double tot = 0, mw[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) tot += mw[i] = fc_merge_part_sum(J, i) / (double)J->n;
  for (int i = 0; i < nm; i++) J->sw[i] = tot == 0 ? 1.0f / nm : (float)(mw[i] / tot);
}
