/* The sparsifications of Model Breadcrumbs and DELLA (mergekit's magnitude_outliers and
 * della_magprune), applied to one block's deltas before the task-vector combination of
 * fc_merge_ties.c:
 * - breadcrumbs keeps, of each model's deltas ranked by magnitude (ties to the lower index, as
 *   TIES), those after the largest int(gamma n) and up to int(density n) of them: two top-k
 *   selections per model, sel[i] (the kept and the outliers) and sel[nm + i] (the outliers);
 * - DELLA ranks each row's |deltas| (ascending, ties to the lower index first), keeps element
 *   j with probability p_j = (density - epsilon) + 2 epsilon rank_j / (cols - 1) (the DARE
 *   draw, counter-based) and, with rescale, divides the kept by p_j. */
#include "fc_merge_impl.h"

int fc_merge_crumbs_prepare(job_t *J, const char *name, int threads, fc_err_t *err) {
  const int nm = J->nm;
  if (J->rescale)
    return fc_err_set(err, FC_EINVAL, "%s: rescale is not supported (mergekit's is a norm matching)",
                      fc_merge_method_name(J->method));
  const int64_t n = (int64_t)J->n;
  for (int i = 0; i < nm; i++) {
    if (J->dens[i] >= 1) continue; /* mergekit: no sparsification at all */
    int64_t target = (int64_t)(J->dens[i] * (double)n), ntop = (int64_t)(J->gam[i] * (double)n);
    int64_t nbot = n - target - ntop;
    if (nbot < 0) ntop += nbot; /* fewer outliers dropped, so that target elements remain */
    if (target <= 0) {
      J->none[i] = 1;
      continue;
    }
    (void)name;
    if (ntop + target < n) {
      J->sel[i].active = 1;
      J->sel[i].k = ntop + target;
    }
    if (ntop > 0) {
      J->sel[nm + i].active = 1;
      J->sel[nm + i].k = ntop;
    }
  }
  J->nsel = 2 * nm;
  fc_merge_ties_find(J, threads);
  return 0;
}

void fc_merge_crumbs_mask(const job_t *J, scratch_t *s, size_t blk, size_t cnt) {
  const int nm = J->nm;
  uint32_t keys[BLK];
  uint8_t in[BLK], out[BLK];
  for (int i = 0; i < nm; i++) {
    float *d = s->m + (size_t)i * BLK;
    if (J->none[i]) {
      memset(d, 0, cnt * sizeof *d);
      continue;
    }
    const sel_t *keep = &J->sel[i], *drop = &J->sel[nm + i];
    if (!keep->active && !drop->active) continue;
    for (size_t j = 0; j < cnt; j++) keys[j] = f2u(fabsf(d[j]));
    sel_block(keep, blk, keys, cnt, in);
    if (drop->active) {
      sel_block(drop, blk, keys, cnt, out);
      for (size_t j = 0; j < cnt; j++) in[j] &= !out[j];
    }
    for (size_t j = 0; j < cnt; j++) d[j] = in[j] ? d[j] : 0.0f;
  }
}

int fc_merge_della_prepare(job_t *J, const char *name, fc_err_t *err) {
  for (int i = 0; i < J->nm; i++) {
    const double d = J->dens[i], e = J->eps[i];
    if (d >= 1) continue;
    if (d <= 0) {
      J->none[i] = 1;
      continue;
    }
    if (d + e >= 1 || d - e <= 0)
      return fc_err_set(err, FC_EINVAL,
                        "%s: density %g and epsilon %g: density - epsilon and density + epsilon "
                        "must lie in (0, 1) (tensor '%s')",
                        fc_merge_method_name(J->method), d, e, name);
  }
  /* The probability of each rank, the same in every row: mergekit's, in f32 as its tensors,
   * (d - e) + (rank / (c - 1) * 2) * e. */
  const size_t c = J->ncols;
  const float rc = c > 1 ? (float)(c - 1) : 1.0f;
  J->dl_p = fc_xmalloc((size_t)J->nm * c * sizeof *J->dl_p);
  J->dl_thr = fc_xmalloc((size_t)J->nm * c * sizeof *J->dl_thr);
  for (int i = 0; i < J->nm; i++) {
    if (J->dens[i] >= 1 || J->none[i]) continue;
    const float p0 = (float)(J->dens[i] - J->eps[i]), e = (float)J->eps[i];
    for (size_t r = 0; r < c; r++) {
      const float rn = c > 1 ? (float)r / rc : 0.0f;
      const float p = p0 + rn * 2.0f * e;
      /* u < p with u = x 2^-32 is x < ceil(p 2^32) for the integer x (capped: p may round to 1). */
      J->dl_p[(size_t)i * c + r] = p;
      const double t = ceil((double)p * 0x1p32);
      J->dl_thr[(size_t)i * c + r] = t > (double)UINT32_MAX ? UINT32_MAX : (uint32_t)t;
    }
  }
  return 0;
}

/* Stable LSD radix sort of idx[0..c) by key (11 bits a pass; a pass whose digit is the same
 * for every key is skipped), with k2/i2 as the other buffers; returns the sorted indices. */
static uint32_t *rank_sort(uint32_t *key, uint32_t *idx, uint32_t *k2, uint32_t *i2, size_t c) {
  if (c == 0) return idx;
  for (int shift = 0; shift < 32; shift += 11) {
    uint32_t cntb[2048] = {0};
    for (size_t j = 0; j < c; j++) cntb[(key[j] >> shift) & 2047]++;
    if (cntb[(key[0] >> shift) & 2047] == c) continue;
    uint32_t pos = 0;
    for (int b = 0; b < 2048; b++) {
      uint32_t t = cntb[b];
      cntb[b] = pos;
      pos += t;
    }
    for (size_t j = 0; j < c; j++) {
      uint32_t p = cntb[(key[j] >> shift) & 2047]++;
      k2[p] = key[j];
      i2[p] = idx[j];
    }
    uint32_t *t = key;
    key = k2, k2 = t;
    t = idx, idx = i2, i2 = t;
  }
  return idx;
}

size_t fc_merge_rank_work(size_t c) { return 4 * c + 2 * RANK_BINS(c); }

/* The row radix-sorted whole: the fallback for rows the counting rank cannot bin well. */
static void rank_radix(const uint32_t *key, size_t c, uint32_t *rank, uint32_t *w) {
  uint32_t *mk = w, *mi = w + c, *k2 = mi + c, *i2 = k2 + c;
  for (size_t j = 0; j < c; j++) mk[j] = key[j], mi[j] = (uint32_t)j;
  const uint32_t *sorted = rank_sort(mk, mi, k2, i2, c);
  for (size_t p = 0; p < c; p++) rank[sorted[p]] = (uint32_t)p;
}

/* The counting rank: a histogram over the row's key range, as fine as RANK_BINS(c) bins allow
 * (zero keys in a bin of their own, below), hands each element the next rank of its bin, in
 * index order. Deltas of bf16 weights take few distinct values, so a bin mostly holds copies of
 * one key, and copies rank in index order: those ranks are final. The (key, index) pairs are
 * also laid out by those ranks; an insertion sort over them finds the few bins that hold
 * different keys out of order (comparing the index after the key keeps ties in index order)
 * and the ranks of what it moved are rewritten. A row too disordered for insertion is
 * radix-sorted whole. */
FC_HOT void fc_merge_rank_row(const uint32_t *key, size_t c, uint32_t *rank, uint32_t *w) {
  uint32_t mn = UINT32_MAX, mx = 0;
  for (size_t j = 0; j < c; j++) {
    const uint32_t k = key[j], kn = k | -(uint32_t)(k == 0); /* branch-free */
    mn = kn < mn ? kn : mn;
    mx = k > mx ? k : mx;
  }
  if (mn == UINT32_MAX) { /* every key is zero */
    for (size_t j = 0; j < c; j++) rank[j] = (uint32_t)j;
    return;
  }
  int sh = 0;
  while ((size_t)((mx - mn) >> sh) + 2 > RANK_BINS(c)) sh++;
  const size_t nb = (size_t)((mx - mn) >> sh) + 2;
  uint32_t *cnt = w + 4 * c;
  /* bin 0: zero keys; bin 1 + ((k - mn) >> sh) otherwise (branch-free) */
#define RBIN(k) (((((k) - mn) >> sh) + 1) & -(uint32_t)((k) != 0))
  memset(cnt, 0, nb * sizeof *cnt);
  for (size_t j = 0; j < c; j++) cnt[RBIN(key[j])]++;
  uint32_t acc = 0;
  for (size_t b = 0; b < nb; b++) {
    const uint32_t t = cnt[b];
    cnt[b] = acc;
    acc += t;
  }
  uint64_t *a = (uint64_t *)(void *)w;
  for (size_t j = 0; j < c; j++) {
    const uint32_t k = key[j], r = cnt[RBIN(k)]++;
    rank[j] = r;
    a[r] = (uint64_t)k << 32 | j;
  }
  size_t moves = 0, lo = c, hi = 0;
  for (size_t p = 1; p < c; p++) {
    const uint64_t x = a[p];
    if (a[p - 1] <= x) continue;
    size_t q = p;
    do a[q] = a[q - 1];
    while (--q > 0 && a[q - 1] > x);
    a[q] = x;
    moves += p - q;
    lo = q < lo ? q : lo;
    hi = p + 1;
    if (moves > 8 * c) { /* too disordered for insertion: sort the row whole */
      rank_radix(key, c, rank, w);
      return;
    }
  }
  for (size_t p = lo; p < hi; p++) rank[(uint32_t)a[p]] = (uint32_t)p;
#undef RBIN
}

/* s->rk[i][col]: the ascending rank of |d| of model i within row `row`, for every model. */
static void della_row(const job_t *J, scratch_t *s, int64_t row) {
  if (s->rk_row == row) return;
  const size_t c = J->ncols, nm = (size_t)J->nm;
  const size_t need = (nm + 3) * c + fc_merge_rank_work(c) + 1;
  if (s->rk_cap < need) {
    free(s->rk);
    s->rk = fc_xmalloc(need * sizeof *s->rk);
    s->rk_cap = need;
  }
  uint32_t *key = s->rk + nm * c, *w = key + c + ((nm + 1) * c & 1); /* w: 8-byte aligned */
  float *b = (float *)(w + fc_merge_rank_work(c)), *m = b + c;
  const size_t off = (size_t)row * c;
  const int bf = J->base->dtype == FC_DT_BF16;
  int b_loaded = !bf;
  if (!bf) load_f32(J->base, off, c, b);
  for (size_t i = 0; i < nm; i++) {
    if (J->dens[i] >= 1 || J->none[i]) continue;
    if (bf && J->models[i]->dtype == FC_DT_BF16) { /* the common case, straight from the mapping */
      const uint16_t *hb = (const uint16_t *)J->base->data + off, *hm = (const uint16_t *)J->models[i]->data + off;
      for (size_t j = 0; j < c; j++) {
        const uint32_t ub = (uint32_t)hb[j] << 16, um = (uint32_t)hm[j] << 16;
        float fb, fm;
        memcpy(&fb, &ub, 4);
        memcpy(&fm, &um, 4);
        key[j] = f2u(fabsf(fm - fb));
      }
    } else {
      if (!b_loaded) load_f32(J->base, off, c, b), b_loaded = 1;
      load_f32(J->models[i], off, c, m);
      for (size_t j = 0; j < c; j++) key[j] = f2u(fabsf(m[j] - b[j]));
    }
    fc_merge_rank_row(key, c, s->rk + i * c, w);
  }
  s->rk_row = row;
}

/* u[j] = the draw of element e0 + j, j < cnt (pairs of elements share one 64-bit draw). */
FC_INLINE void della_draws(uint64_t key, size_t e0, size_t cnt, uint32_t *u) {
  const size_t p0 = e0 / 2, p1 = (e0 + cnt + 1) / 2;
  uint32_t *v = u - (e0 & 1); /* element 2 p0 at v[0] */
  for (size_t p = p0; p < p1; p++) {
    const uint64_t r = mix64(key + p);
    v[2 * (p - p0)] = (uint32_t)(r >> 32);
    v[2 * (p - p0) + 1] = (uint32_t)r;
  }
}

FC_HOT void fc_merge_della_mask(const job_t *J, scratch_t *s, size_t blk, size_t cnt) {
  const int nm = J->nm;
  const size_t c = J->ncols, off = blk * BLK;
  for (int i = 0; i < nm; i++) {
    float *d = s->m + (size_t)i * BLK;
    if (J->none[i]) memset(d, 0, cnt * sizeof *d);
  }
  uint32_t ubuf[BLK + 2], *restrict u = ubuf + 1, tv[BLK];
  float pv[BLK];
  for (size_t j0 = 0; j0 < cnt;) {
    const int64_t row = (int64_t)((off + j0) / c);
    const size_t col0 = (off + j0) % c, j1 = j0 + (c - col0) < cnt ? j0 + (c - col0) : cnt;
    della_row(J, s, row);
    for (int i = 0; i < nm; i++) {
      if (J->dens[i] >= 1 || J->none[i]) continue;
      float *restrict d = s->m + (size_t)i * BLK + j0;
      const uint32_t *restrict rk = s->rk + (size_t)i * c + col0;
      const float *restrict pr = J->dl_p + (size_t)i * c;
      const uint32_t *restrict thr = J->dl_thr + (size_t)i * c;
      const size_t len = j1 - j0;
      della_draws(J->dkey[i], off + j0, len, u);
      /* The rank lookups alone, then the compare and select over whole vectors (branch-free:
       * the keep decision is a coin flip). */
      for (size_t j = 0; j < len; j++) tv[j] = thr[rk[j]];
      for (size_t j = 0; j < len; j++) u[j] = u[j] < tv[j] ? ~0u : 0u;
      if (J->rescale) {
        for (size_t j = 0; j < len; j++) pv[j] = pr[rk[j]];
        for (size_t j = 0; j < len; j++) d[j] = d[j] / pv[j];
      }
      for (size_t j = 0; j < len; j++) {
        uint32_t x;
        memcpy(&x, &d[j], 4);
        x &= u[j];
        memcpy(&d[j], &x, 4);
      }
    }
    j0 = j1;
  }
}
