/* Top-k selection of the largest non-negative f32 keys (TIES magnitudes, SCE variances), ties
 * to the lower index, comparing bit patterns (non-negative floats order like integers). The
 * radix select finds the threshold in two or three passes over the keys. The band selection
 * needs one: a sample of evenly spaced runs estimates where the k-th largest key lies, a pass
 * counts the keys above a band around it and collects the keys inside, and the exact
 * threshold is found among those candidates. When the sample misleads (the k-th key is
 * outside the band), the radix select runs instead, so the result is the same either way. */
#include "fc_merge_impl.h"

size_t fc_merge_band_hits;
size_t fc_merge_band_min = 1u << 18; /* smaller tensors go straight to the radix select */

/* Appends a thread's candidates (whole blocks) to the job's. */
void fc_merge_cand_merge(sel_t *dst, const sel_t *src, int nd) {
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

void fc_merge_cand_free(sel_t *c) {
  free(c->cidx);
  free(c->ckey);
  free(c->cd);
  c->cidx = NULL;
  c->ckey = NULL;
  c->cd = NULL;
  c->nc = c->cap = 0;
}

/* Runs a top-k selection for sel[0..nsel) over keys produced by pass kind. */
void fc_merge_run_select(job_t *J, int kind, int threads) {
  J->hist = fc_xcalloc((size_t)J->nsel * NBIN, sizeof(uint64_t));
  int64_t above[FC_MERGE_MAX_MODELS];
  J->pass = 0;
  fc_merge_pass(J, kind, threads);
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
  fc_merge_pass(J, kind, threads);
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
    fc_merge_pass(J, kind, threads);
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
void fc_merge_band_setup(sel_t *S, uint32_t *ks, size_t ns, double q) {
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
void fc_merge_ttab_seed(sel_t *S, const uint32_t *ks, size_t ns) {
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

/* Exact threshold from the band candidates, if the k-th largest key is among them. */
int fc_merge_band_resolve(const job_t *J, sel_t *S, const uint16_t *bc) {
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
