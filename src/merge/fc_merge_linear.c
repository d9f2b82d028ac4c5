/* The merges that are weighted sums of whole tensors: linear, VaRM's final sum (its weights
 * come from fc_merge_sce.c), task arithmetic's fused path (its generic path is DARE's with
 * nothing dropped, in fc_merge_ties.c) and SLERP (its angle from one pass of dot products). */
#include "fc_merge_lanes.h"

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

/* One block of the fused sums (F_SUM, F_DELTA_SUM, F_SLERP): elements [off, off+cnt). */
FC_INLINE void fused_block(const job_t *J, const int nm, size_t off, size_t cnt, void *dst, size_t doff) {
  const uint16_t *mp[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) mp[i] = (const uint16_t *)J->models[i]->data + off;
  const uint16_t *bp = J->base ? (const uint16_t *)J->base->data + off : NULL;
  vf8 o[FU];
  size_t j = 0;
  for (; j + 8 * FU <= cnt; j += 8 * FU) {
    if (FUSED_PF) {
      for (int i = 0; i < nm; i++) __builtin_prefetch(mp[i] + j + FUSED_PF);
      if (bp) __builtin_prefetch(bp + j + FUSED_PF);
    }
    fused_step(J, nm, mp, bp, j, o, FU);
    for (int u = 0; u < FU; u++) st8(dst, J->out_dt, doff + j + 8 * u, &o[u]);
  }
  /* The tail, eight at a time through the same arithmetic, from zero-padded copies. */
  for (; j < cnt; j += 8) {
    uint16_t tb[8], tm[FC_MERGE_MAX_MODELS][8];
    const uint16_t *tp[FC_MERGE_MAX_MODELS];
    size_t r = cnt - j < 8 ? cnt - j : 8;
    tail_copy(nm, mp, bp, j, r, tb, tm, tp);
    fused_step(J, nm, tp, tb, 0, o, 1);
    st_tail(dst, J->out_dt, doff + j, r, &o[0]);
  }
}

#define CALL_FUSED_BLOCK(J, off, cnt, dst, doff, NM) fused_block(J, NM, off, cnt, dst, doff)

FC_HOT void fc_merge_sum_fused_block(job_t *J, scratch_t *s, size_t blk) {
  const size_t off = blk * BLK;
  WITH_NM(J->nm, CALL_FUSED_BLOCK, J, off, J->n - off < BLK ? J->n - off : BLK, s->dst, off - s->off0);
}

/* The vector (row or column, J->grp) element e belongs to. */
static inline size_t group_of(const job_t *J, size_t e) { return J->grp == G_ROWS ? e / J->arow : e % J->ncols; }

/* P_SLERP_DOT (the squared norms and the dot product of base and model, per block) and the
 * generic final pass of linear, VaRM, SLERP and NearSwap. */
FC_HOT void fc_merge_linear_block(job_t *J, int kind, scratch_t *s, size_t blk) {
  const int nm = J->nm;
  const fc_merge_method_t M = J->method;
  const size_t off = blk * BLK;
  if (kind == P_SLERP_DOT) { /* slerp: base and model; nuslerp: the two models (or deltas) */
    const int nu = M == FC_MERGE_NUSLERP;
    size_t cnt = load_block(J, s, blk, nu && J->base);
    const float *a = nu ? s->m : s->b, *b = nu ? s->m + BLK : s->m;
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
  if (kind == P_STOCK_DOT) { /* columns: |d_i|^2, then d_i.d_j for i < j (d: deltas, if a base) */
    size_t cnt = load_block(J, s, blk, J->base != NULL);
    double *pt = J->part + blk * (size_t)J->npart;
    int c = nm;
    for (int i = 0; i < nm; i++) {
      const float *a = s->m + (size_t)i * BLK;
      double aa = 0;
      for (size_t j = 0; j < cnt; j++) aa += (double)a[j] * a[j];
      pt[i] = aa;
      for (int k = i + 1; k < nm; k++, c++) {
        const float *b = s->m + (size_t)k * BLK;
        double ab = 0;
        for (size_t j = 0; j < cnt; j++) ab += (double)a[j] * b[j];
        pt[c] = ab;
      }
    }
    return;
  }
  assert(kind == P_FINAL);
  size_t cnt = load_block(J, s, blk, (M == FC_MERGE_NUSLERP || M == FC_MERGE_MULTISLERP) && J->base);
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
  case FC_MERGE_MULTISLERP:
  case FC_MERGE_KARCHER:
    for (size_t j = 0; j < cnt; j++) o[j] = 0;
    for (int i = 0; i < nm; i++) {
      const float *m = s->m + (size_t)i * BLK, ci = J->sw[i];
      for (size_t j = 0; j < cnt; j++) o[j] += ci * m[j];
    }
    if (J->base)
      for (size_t j = 0; j < cnt; j++) o[j] = b[j] + o[j];
    break;
  case FC_MERGE_NUSLERP: {
    const float *m0 = s->m, *m1 = s->m + BLK;
    if (J->grp)
      for (size_t j = 0; j < cnt; j++) {
        const float *c = J->gc + 2 * group_of(J, off + j);
        o[j] = c[0] * m0[j] + c[1] * m1[j];
      }
    else
      for (size_t j = 0; j < cnt; j++) o[j] = J->s0 * m0[j] + J->s1 * m1[j];
    if (J->base)
      for (size_t j = 0; j < cnt; j++) o[j] = b[j] + o[j];
    break;
  }
  case FC_MERGE_MODEL_STOCK: {
    const float t = J->s0, fn = (float)nm;
    for (size_t j = 0; j < cnt; j++) o[j] = 0;
    for (int i = 0; i < nm; i++) {
      const float *m = s->m + (size_t)i * BLK;
      for (size_t j = 0; j < cnt; j++) o[j] += m[j];
    }
    if (J->grp)
      for (size_t j = 0; j < cnt; j++) {
        const float tg = J->gc[2 * group_of(J, off + j)];
        o[j] = tg * (o[j] / fn) + (1 - tg) * b[j];
      }
    else
      for (size_t j = 0; j < cnt; j++) o[j] = t * (o[j] / fn) + (1 - t) * b[j];
    break;
  }
  case FC_MERGE_NEARSWAP: {
    const float t = (float)J->cfg->t, *m = s->m;
    for (size_t j = 0; j < cnt; j++) {
      float ad = fabsf(b[j] - m[j]);
      ad = ad < 1e-6f ? 1e-6f : ad;
      float w = t / ad;
      w = w < 0 ? 0 : w > 1 ? 1 : w;
      o[j] = w * m[j] + (1 - w) * b[j];
    }
    break;
  }
  case FC_MERGE_ARCEE_FUSION: {
    const float *m = s->m, *im = J->imp + off, thr = J->s0;
    for (size_t j = 0; j < cnt; j++) o[j] = b[j] + (m[j] - b[j]) * (im[j] >= thr ? 1.0f : 0.0f);
    break;
  }
  default: assert(0);
  }
  store_out(s->dst, J->out_dt, off - s->off0, cnt, o);
}

/* ---- angles per vector (nuslerp_flatten false, model_stock filter_wise) ---- */

/* Per vector: the models' (deltas', with a base) |v_i|^2, then v_i.v_k for i < k (f64). */
typedef struct gsum {
  double *sum; /* [ngroups][np] */
  int np;
  size_t per;  /* rows per chunk */
} gsum_t;

static void load_vectors(const job_t *J, size_t off, size_t len, float *v, float *b) {
  for (int i = 0; i < J->nm; i++) load_f32(J->models[i], off, len, v + (size_t)i * len);
  if (!J->base) return;
  load_f32(J->base, off, len, b);
  for (int i = 0; i < J->nm; i++)
    for (size_t j = 0; j < len; j++) v[(size_t)i * len + j] -= b[j];
}

static void group_rows(job_t *J, int chunk, scratch_t *s, void *arg) {
  (void)s;
  gsum_t *G = arg;
  const int nm = J->nm;
  const size_t L = J->arow, nrows = J->n / L, r0 = (size_t)chunk * G->per;
  const size_t r1 = r0 + G->per < nrows ? r0 + G->per : nrows;
  float *v = fc_xmalloc(((size_t)nm + 1) * L * sizeof *v), *b = v + (size_t)nm * L;
  for (size_t r = r0; r < r1; r++) {
    load_vectors(J, r * L, L, v, b);
    double *out = G->sum + r * (size_t)G->np;
    int c = nm;
    for (int i = 0; i < nm; i++) {
      const float *x = v + (size_t)i * L;
      double xx = 0;
      for (size_t j = 0; j < L; j++) xx += (double)x[j] * x[j];
      out[i] = xx;
      for (int k = i + 1; k < nm; k++, c++) {
        const float *y = v + (size_t)k * L;
        double xy = 0;
        for (size_t j = 0; j < L; j++) xy += (double)x[j] * y[j];
        out[c] = xy;
      }
    }
  }
  free(v);
}

/* The sums of every vector; returns how many vectors. Columns go row by row in one thread
 * (each column's sums run down the rows). */
static size_t group_sums(job_t *J, int threads, gsum_t *G) {
  const int nm = J->nm;
  G->np = nm + nm * (nm - 1) / 2;
  if (J->grp == G_ROWS) {
    const size_t nrows = J->n / J->arow;
    const int nch = nrows < (size_t)threads * 8 ? (int)nrows : threads * 8;
    G->per = (nrows + (size_t)nch - 1) / (size_t)nch;
    G->sum = fc_xcalloc(nrows * (size_t)G->np, sizeof *G->sum);
    fc_merge_each(J, nch, threads, group_rows, G);
    return nrows;
  }
  const size_t C = J->ncols, R = J->n / C;
  G->sum = fc_xcalloc(C * (size_t)G->np, sizeof *G->sum);
  float *v = fc_xmalloc(((size_t)nm + 1) * C * sizeof *v), *b = v + (size_t)nm * C;
  for (size_t r = 0; r < R; r++) {
    load_vectors(J, r * C, C, v, b);
    for (size_t j = 0; j < C; j++) {
      double *out = G->sum + j * (size_t)G->np;
      int c = nm;
      for (int i = 0; i < nm; i++) {
        const double x = v[(size_t)i * C + j];
        out[i] += x * x;
        for (int k = i + 1; k < nm; k++, c++) out[c] += x * v[(size_t)k * C + j];
      }
    }
  }
  free(v);
  return C;
}

/* model_stock's t from the squared norms and pairwise dots of the deltas (one vector or a
 * whole tensor): the mean pairwise cosine c, t = N c / (1 + (N - 1) c). */
static float stock_t(int nm, const double *sq, const double *dot) {
  double cs = 0;
  int c = 0;
  for (int i = 0; i < nm; i++)
    for (int k = i + 1; k < nm; k++, c++) {
      double np = sqrt(sq[i]) * sqrt(sq[k]);
      double cos = dot[c] / (np > 1e-6 ? np : 1e-6);
      cs += cos < -1 ? -1 : cos > 1 ? 1 : cos;
    }
  cs /= (double)(nm * (nm - 1) / 2);
  return (float)((double)nm * cs / (1 + (double)(nm - 1) * cs));
}

/* nuslerp's coefficients of v0 and v1 at t from |v0|^2, |v1|^2 and v0.v1. */
static void nuslerp_coef(double t, double aa, double bb, double ab, float *c0, float *c1) {
  const double n0 = sqrt(aa), n1 = sqrt(bb);
  double cos = ab / ((n0 > 1e-7 ? n0 : 1e-7) * (n1 > 1e-7 ? n1 : 1e-7));
  double th = acos(cos < -1 ? -1 : cos > 1 ? 1 : cos), st = sin(th);
  if (fabs(st) < 1e-8) {
    *c0 = (float)(1 - t);
    *c1 = (float)t;
  } else {
    *c0 = (float)(sin((1 - t) * th) / st);
    *c1 = (float)(sin(t * th) / st);
  }
}

void fc_merge_stock_prepare(job_t *J, int threads) {
  const int nm = J->nm;
  if (J->grp) {
    gsum_t G = {0};
    const size_t ng = group_sums(J, threads, &G);
    J->gc = fc_xmalloc(2 * ng * sizeof *J->gc);
    for (size_t g = 0; g < ng; g++) J->gc[2 * g] = stock_t(nm, G.sum + g * (size_t)G.np, G.sum + g * (size_t)G.np + nm);
    free(G.sum);
    return;
  }
  J->npart = nm + nm * (nm - 1) / 2;
  J->part = fc_xcalloc(J->nblocks * (size_t)J->npart, sizeof(double));
  fc_merge_pass(J, P_STOCK_DOT, threads);
  double sums[FC_MERGE_MAX_MODELS + FC_MERGE_MAX_MODELS * (FC_MERGE_MAX_MODELS - 1) / 2];
  for (int c = 0; c < J->npart; c++) sums[c] = fc_merge_part_sum(J, c);
  J->s0 = stock_t(nm, sums, sums + nm);
}

typedef double gram_t[FC_MERGE_MAX_MODELS][FC_MERGE_MAX_MODELS];

/* The Gram matrix of the models (or their deltas, with a base) and their norms (f64 sums). */
static void gram(job_t *J, int threads, gram_t g, double *nrm) {
  const int nm = J->nm;
  J->npart = nm + nm * (nm - 1) / 2;
  J->part = fc_xcalloc(J->nblocks * (size_t)J->npart, sizeof(double));
  fc_merge_pass(J, P_STOCK_DOT, threads);
  int c = nm;
  for (int i = 0; i < nm; i++) {
    g[i][i] = fc_merge_part_sum(J, i);
    nrm[i] = sqrt(g[i][i]);
    for (int k = i + 1; k < nm; k++, c++) g[i][k] = g[k][i] = fc_merge_part_sum(J, c);
  }
}

/* |sum_i a_i x_i| from the Gram matrix. */
static double span_norm(int nm, gram_t g, const double *a) {
  double s = 0;
  for (int i = 0; i < nm; i++)
    for (int k = 0; k < nm; k++) s += a[i] * a[k] * g[i][k];
  return sqrt(s > 0 ? s : 0);
}

void fc_merge_karcher_prepare(job_t *J, int threads) {
  const int nm = J->nm;
  const double tol = J->cfg->tol, alpha = 1.0 / nm;
  gram_t g;
  double nrm[FC_MERGE_MAX_MODELS], na[FC_MERGE_MAX_MODELS] = {0}, a[FC_MERGE_MAX_MODELS] = {0};
  gram(J, threads, g, nrm);
  double asum = 0, scale = 0;
  int first = -1;
  for (int i = 0; i < nm; i++) {
    scale += alpha * nrm[i];
    if (nrm[i] > tol) asum += alpha, first = first < 0 ? i : first;
  }
  for (int i = 0; i < nm; i++) J->sw[i] = 0;
  if (first < 0) return; /* every model is (nearly) zero: zeros, as mergekit */
  /* u = sum_i a_i x_i: the normalised weighted mean of the unit vectors to start. */
  for (int i = 0; i < nm; i++)
    if (nrm[i] > tol) na[i] = alpha / asum, a[i] = na[i] / nrm[i];
  double nu = span_norm(nm, g, a);
  if (nu < tol) {
    memset(a, 0, sizeof a);
    a[first] = 1 / nrm[first];
  } else {
    for (int i = 0; i < nm; i++) a[i] /= nu;
  }
  for (int it = 0; it < J->cfg->max_iter; it++) {
    double t[FC_MERGE_MAX_MODELS] = {0};
    for (int i = 0; i < nm; i++) {
      if (nrm[i] <= tol) continue;
      double dot = 0;
      for (int k = 0; k < nm; k++) dot += a[k] * g[k][i];
      dot /= nrm[i];
      dot = dot < -1 ? -1 : dot > 1 ? 1 : dot;
      const double th = acos(dot);
      if (th < tol) continue;
      const double f = na[i] * th / sin(th); /* T += f (u_i - dot u) */
      t[i] += f / nrm[i];
      for (int k = 0; k < nm; k++) t[k] -= f * dot * a[k];
    }
    const double nt = span_norm(nm, g, t);
    if (nt < tol) break;
    for (int k = 0; k < nm; k++) a[k] = cos(nt) * a[k] + sin(nt) * t[k] / nt;
    const double un = span_norm(nm, g, a);
    if (un > tol)
      for (int k = 0; k < nm; k++) a[k] /= un;
  }
  for (int i = 0; i < nm; i++) J->sw[i] = (float)(scale * a[i]);
}

int fc_merge_multislerp_prepare(job_t *J, const char *name, int threads, fc_err_t *err) {
  const int nm = J->nm;
  const double eps = 1e-8;
  double w[FC_MERGE_MAX_MODELS], ws = 0, nrm[FC_MERGE_MAX_MODELS];
  for (int i = 0; i < nm; i++) ws += w[i] = J->cfg->models[i].weight;
  if (J->normalize)
    for (int i = 0; i < nm; i++) w[i] /= ws;
  gram_t g;
  gram(J, threads, g, nrm);
  /* |sum_i w_i u_i|^2 with u_i = x_i / (|x_i| + eps). */
  double mm = 0, avg = 0;
  for (int i = 0; i < nm; i++) {
    avg += nrm[i] * w[i];
    for (int k = 0; k < nm; k++) mm += w[i] * w[k] * g[i][k] / ((nrm[i] + eps) * (nrm[k] + eps));
  }
  const double mn = sqrt(mm > 0 ? mm : 0);
  if (avg == 0) { /* every model equals the base (or is zero): nothing to interpolate */
    for (int i = 0; i < nm; i++) J->sw[i] = 0;
    return 0;
  }
  if (mn < eps) {
    if (nm != 2)
      return fc_err_set(err, FC_EINVAL, "multislerp: the weighted mean of the models' directions is zero "
                        "in tensor '%s' (antipodal models with balancing weights?)", name);
    for (int i = 0; i < nm; i++) J->sw[i] = (float)w[i];
    return 0;
  }
  for (int i = 0; i < nm; i++) J->sw[i] = (float)(w[i] / (nrm[i] + eps) / mn * avg);
  return 0;
}

void fc_merge_nuslerp_prepare(job_t *J, int threads) {
  const double w0 = J->cfg->models[0].weight, w1 = J->cfg->models[1].weight;
  const double t = fabs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  if (J->grp) {
    gsum_t G = {0};
    const size_t ng = group_sums(J, threads, &G);
    J->gc = fc_xmalloc(2 * ng * sizeof *J->gc);
    for (size_t g = 0; g < ng; g++) {
      const double *q = G.sum + g * (size_t)G.np;
      nuslerp_coef(t, q[0], q[1], q[2], &J->gc[2 * g], &J->gc[2 * g + 1]);
    }
    free(G.sum);
    return;
  }
  J->npart = 3;
  J->part = fc_xcalloc(J->nblocks * 3, sizeof(double));
  fc_merge_pass(J, P_SLERP_DOT, threads);
  nuslerp_coef(t, fc_merge_part_sum(J, 0), fc_merge_part_sum(J, 1), fc_merge_part_sum(J, 2), &J->s0, &J->s1);
}

/* SLERP's coefficients s0 (base) and s1 (model) from the angle between the two tensors. */
void fc_merge_slerp_prepare(job_t *J, int threads) {
  J->npart = 3;
  J->part = fc_xcalloc(J->nblocks * 3, sizeof(double));
  fc_merge_pass(J, P_SLERP_DOT, threads);
  double n0 = sqrt(fc_merge_part_sum(J, 0)), n1 = sqrt(fc_merge_part_sum(J, 1)),
         ab = fc_merge_part_sum(J, 2);
  const double eps = 1e-8, t = J->cfg->t;
  double dot = ab / ((n0 > eps ? n0 : 1) * (n1 > eps ? n1 : 1));
  if (fabs(dot) > 0.9995) {
    J->s0 = (float)(1 - t);
    J->s1 = (float)t;
  } else {
    double th0 = acos(dot), s0 = sin(th0), tht = th0 * t;
    J->s0 = (float)(sin(th0 - tht) / s0);
    J->s1 = (float)(sin(tht) / s0);
  }
}
