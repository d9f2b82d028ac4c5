/* TIES and DARE (and task arithmetic's generic path, DARE with nothing dropped): each model's
 * deltas are sparsified (TIES: its top density by magnitude, from fc_merge_select.c; DARE: a
 * seeded random drop), weighted, and either summed or reduced to the entries that agree with
 * the elected sign. The DARE mask is counter-based, so it does not depend on threads. */
#include "fc_merge_lanes.h"

uint64_t fc_merge_fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
  return h;
}

uint64_t fc_merge_dare_key(uint64_t seed, const char *name, int model) {
  return fc_splitmix64(fc_splitmix64(seed ^ fc_merge_fnv1a64(name)) + (uint64_t)model);
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
  return dare_keep_key(fc_merge_dare_key(seed, tensor_name, model), elem, density);
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

/* TIES and breadcrumbs, 8U elements: the generic path's masks (blocks whose ties are all in or
 * all out: model i keeps the keys in [lo[i], lo[i] + span[i])), weighting and combination, in
 * registers; U groups interleave their dependency chains. */
FC_INLINE void fused_ties_step(const job_t *J, const int nm, const uint16_t *const *mp, const uint16_t *bp, size_t j,
                               const uint32_t *lo, const uint32_t *span, vf8 *o, int U) {
  const vf8 one = {1, 1, 1, 1, 1, 1, 1, 1}, zero = {0};
  vf8 wd[FC_MERGE_MAX_MODELS][FU], b[FU], sgn[FU], mixed[FU] = {{0}}, div[FU] = {{0}};
  vu8 pos[FU];
  for (int u = 0; u < U; u++) b[u] = *ld8_bf16(bp + j + 8 * u);
  for (int i = 0; i < nm; i++) {
    const float wi = J->w[i];
    for (int u = 0; u < U; u++) {
      vf8 d = *ld8_bf16(mp[i] + j + 8 * u) - b[u];
      vu8 keep = (vu8)((((vu8)d & 0x7fffffffu) - lo[i]) < span[i]); /* lo 0, span 2^31: all */
      wd[i][u] = (vf8)((vu8)d & keep) * wi;
    }
  }
  if (!J->consensus) { /* breadcrumbs: the weighted sum, in model order */
    const vf8 dv = (vf8){0} + (float)J->divisor;
    for (int u = 0; u < U; u++) {
      vf8 m = zero;
      for (int i = 0; i < nm; i++) m += wd[i][u];
      if (J->normalize) m /= dv;
      if (J->lambda != 1.0f) m *= J->lambda;
      o[u] = b[u] + m;
    }
    return;
  }
  sign_pos(nm, (const vf8(*)[FU])wd, U, pos);
  sign_lanes(pos, sgn, U);
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
    if (J->lambda != 1.0f) mixed[u] *= J->lambda;
    o[u] = b[u] + mixed[u];
  }
}

/* sel_quota_lo, with 1 and *lo = 0 when S is inactive. */
static inline int sel_from(const sel_t *S, size_t blk, uint32_t *lo) {
  if (!S->active) return *lo = 0, 1;
  return sel_quota_lo(S, blk, lo);
}

/* Whether block blk can take the fused path: no selection keeps only some of its ties here.
 * Model i keeps keys in [lo[i], lo[i] + span[i]): from its selection's threshold up to
 * breadcrumbs' outliers (sel[nm + i]), or to 2^31, above every |delta|'s key. */
FC_INLINE int fused_lo(const job_t *J, size_t blk, uint32_t *lo, uint32_t *span) {
  for (int i = 0; i < J->nm; i++) {
    uint32_t hi = 0x80000000u;
    if (J->none[i]) {
      lo[i] = span[i] = 0;
      continue;
    }
    if (!sel_from(&J->sel[i], blk, &lo[i])) return 0;
    if (J->nsel > J->nm && J->sel[J->nm + i].active && !sel_from(&J->sel[J->nm + i], blk, &hi)) return 0;
    span[i] = hi > lo[i] ? hi - lo[i] : 0;
  }
  return 1;
}

/* One block of the fused TIES pass: elements [off, off+cnt). */
FC_INLINE void fused_block(const job_t *J, const int nm, size_t off, size_t cnt, const uint32_t *lo,
                           const uint32_t *span, void *dst, size_t doff) {
#define TIES_STEP(mp, bp, vp, j, o, U) fused_ties_step(J, nm, mp, bp, j, lo, span, o, U)
  FUSED_BLOCK(J, nm, off, cnt, NULL, dst, doff, TIES_STEP);
#undef TIES_STEP
}

/* TIES band pass for bf16 inputs, straight from the mapping: counts each model's keys above its
 * band, and inside it counts the table's keys per block and lists the others as candidates. */
FC_INLINE void fused_ties_band(const job_t *J, const int nm, scratch_t *s, size_t blk) {
  const size_t off = blk * BLK, cnt = J->n - off < BLK ? J->n - off : BLK;
  const uint16_t *bp = (const uint16_t *)J->base->data + off;
  for (int i = 0; i < J->nsel; i++) {
    const sel_t *S = &J->sel[i];
    if (!S->active || !S->band) continue;
    sel_t *T = &s->tc[i];
    const uint16_t *mp = (const uint16_t *)J->models[i % nm]->data + off;
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

#define CALL_TIES_BAND(J, s, blk, NM) fused_ties_band(J, NM, s, blk)
#define CALL_FUSED_BLOCK(J, off, cnt, lo, span, dst, doff, NM) fused_block(J, NM, off, cnt, lo, span, dst, doff)

/* TIES's selection passes (P_TIES_HIST, P_TIES_BAND) and the final pass of TIES, DARE and task
 * arithmetic (fused for bf16 TIES where the block allows). */
FC_HOT void fc_merge_ties_block(job_t *J, int kind, scratch_t *s, size_t blk) {
  const int nm = J->nm;
  const fc_merge_method_t M = J->method;
  size_t off = blk * BLK;
  uint32_t keys[BLK];
  if (kind == P_TIES_HIST) {
    size_t cnt = load_block(J, s, blk, 1);
    for (int i = 0; i < J->nsel; i++) {
      if (!J->sel[i].active || J->sel[i].done) continue;
      const float *d = s->m + (size_t)(i % nm) * BLK;
      for (size_t j = 0; j < cnt; j++) keys[j] = f2u(fabsf(d[j]));
      hist_add(J, s, i, keys, cnt, blk);
    }
    return;
  }
  if (kind == P_TIES_BAND) {
    if (J->fused == F_TIES) {
      WITH_NM(J->nm, CALL_TIES_BAND, J, s, blk);
      return;
    }
    size_t cnt = load_block(J, s, blk, 1);
    for (int i = 0; i < J->nsel; i++) {
      const sel_t *S = &J->sel[i];
      if (!S->active || !S->band) continue;
      sel_t *T = &s->tc[i];
      const float *d = s->m + (size_t)(i % nm) * BLK;
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
  assert(kind == P_FINAL);
  if (J->fused == F_TIES) {
    uint32_t lo[FC_MERGE_MAX_MODELS], span[FC_MERGE_MAX_MODELS];
    if (fused_lo(J, blk, lo, span)) {
      WITH_NM(J->nm, CALL_FUSED_BLOCK, J, off, J->n - off < BLK ? J->n - off : BLK, lo, span, s->dst, off - s->off0);
      return;
    }
  }
  size_t cnt = load_block(J, s, blk, 1);
  float *o = s->o;
  const float *b = s->b;
  int dare = M == FC_MERGE_DARE_LINEAR || M == FC_MERGE_DARE_TIES;
  const int consensus = J->consensus;
  if (M == FC_MERGE_TIES) ties_mask(J, s, blk, cnt);
  else if (M == FC_MERGE_BREADCRUMBS || M == FC_MERGE_BREADCRUMBS_TIES) fc_merge_crumbs_mask(J, s, blk, cnt);
  else if (M == FC_MERGE_DELLA || M == FC_MERGE_DELLA_LINEAR) fc_merge_della_mask(J, s, blk, cnt);
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
  if (J->lambda != 1.0f)
    for (size_t j = 0; j < cnt; j++) mixed[j] *= J->lambda;
  for (size_t j = 0; j < cnt; j++) o[j] = b[j] + mixed[j];
  store_out(s->dst, J->out_dt, off - s->off0, cnt, o);
}

/* TIES band setup for model i: its sample's |delta| keys give the band (and the tie table). */
static void ties_setup_model(job_t *J, int i, scratch_t *s, void *arg) {
  (void)arg;
  sel_t *S = &J->sel[i];
  if (!S->active) return;
  const fc_st_tensor_t *model = J->models[i % J->nm];
  size_t len = srun_len(J->n), ns = SRUNS * len;
  uint32_t *ks = fc_xmalloc(ns * sizeof *ks);
  float *b = s->b, *m = s->m;
  for (size_t r = 0; r < SRUNS; r++) {
    size_t off = (J->n / SRUNS) * r;
    load_f32(J->base, off, len, b);
    load_f32(model, off, len, m);
    for (size_t j = 0; j < len; j++) ks[r * len + j] = f2u(fabsf(m[j] - b[j]));
  }
  fc_merge_band_setup(S, ks, ns, (double)S->k / (double)J->n);
  if (J->fused == F_TIES) fc_merge_ttab_seed(S, ks, ns);
  free(ks);
}

static void ties_band_setup(job_t *J, int threads) {
  fc_merge_each(J, J->nsel, threads, ties_setup_model, NULL);
  if (J->fused == F_TIES) {
    size_t n = (size_t)J->nsel * J->nblocks * TTAB;
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

/* The thresholds of the active selections sel[0..nsel), by the band pass when the tensor is
 * large enough and the sample places the band well, else (or for the selections it missed) by
 * the radix select. */
void fc_merge_ties_find(job_t *J, int threads) {
  int any = 0;
  for (int i = 0; i < J->nsel; i++) any |= J->sel[i].active;
  if (any && J->n >= BAND_MIN) {
    ties_band_setup(J, threads);
    fc_merge_pass(J, P_TIES_BAND, threads);
    for (int i = 0; i < J->nsel; i++) {
      const uint16_t *bc = J->bcnt ? J->bcnt + (size_t)i * J->nblocks * TTAB : NULL;
      if (J->sel[i].active && !fc_merge_band_resolve(J, &J->sel[i], bc)) J->sel[i].band = 0;
      fc_merge_cand_free(&J->sel[i]);
    }
  }
  int left = 0;
  for (int i = 0; i < J->nsel; i++) left |= J->sel[i].active && !J->sel[i].done;
  if (left) fc_merge_run_select(J, P_TIES_HIST, threads);
}

/* TIES: each model's top-density threshold. */
int fc_merge_ties_prepare(job_t *J, const char *name, int threads, fc_err_t *err) {
  for (int i = 0; i < J->nm; i++) {
    if (J->dens[i] >= 1) continue;
    int64_t k = (int64_t)(J->dens[i] * (double)J->n);
    if (k <= 0)
      return fc_err_set(err, FC_EINVAL,
                        "ties: density %g keeps no element of tensor '%s' (%zu elements)",
                        J->dens[i], name, J->n);
    J->sel[i].active = 1;
    J->sel[i].k = k;
  }
  J->nsel = J->nm;
  fc_merge_ties_find(J, threads);
  return 0;
}
