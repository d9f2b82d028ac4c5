/* MinED token alignment: banded DTW over token edit distances, in code points for whole
 * characters and in bytes for tokens that split one (see fc_align.h). */
#include "fc_align.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "fc_topk.h" /* fc_hash64 */

enum { CACHE_BITS = 16, STACK_UNITS = 256 };
#define INF_COST 0x3fffffffu

/* Keyed by both strings' 64-bit hashes and lengths, so a wrong hit needs two simultaneous
 * 64-bit hash collisions. */
typedef struct cache_ent {
  uint64_t ha, hb;
  uint32_t la, lb;
  uint32_t dist;
  uint32_t used;
} cache_ent_t;

struct fc_aligner {
  int margin;
  cache_ent_t *cache; /* direct-mapped cache of edit distances keyed by both strings' hashes */
  /* per-call scratch, grown as needed */
  uint64_t *sh, *ph;    /* [n], [m] string hashes */
  uint32_t *su, *pu;    /* units per token */
  uint8_t *ss, *ps;     /* token holds part of a character: compared on bytes */
  uint32_t *lo, *hi;    /* [n] band per source row */
  uint64_t *rowoff;     /* [n + 1] offset of row i in mv */
  uint8_t *mv;          /* band cells: backtrack move */
  uint32_t *prev, *cur; /* [m] costs of the previous / current row (indexed j - lo) */
  size_t cap_n, cap_m, cap_mv;
  fc_align_stats_t st;
};

fc_aligner_t *fc_aligner_new(int margin) {
  fc_aligner_t *a = fc_xcalloc(1, sizeof *a);
  a->margin = margin < 0 ? 0 : margin;
  a->cache = fc_xcalloc((size_t)1 << CACHE_BITS, sizeof *a->cache);
  return a;
}

void fc_aligner_destroy(fc_aligner_t **pa) {
  fc_aligner_t *a = *pa;
  if (!a) return;
  free(a->cache);
  free(a->sh);
  free(a->ph);
  free(a->su);
  free(a->pu);
  free(a->ss);
  free(a->ps);
  free(a->lo);
  free(a->hi);
  free(a->rowoff);
  free(a->mv);
  free(a->prev);
  free(a->cur);
  free(a);
  *pa = NULL;
}

fc_align_stats_t fc_aligner_stats(const fc_aligner_t *a) { return a->st; }

void fc_align_result_free(fc_align_result_t *r) {
  free(r->src);
  free(r->piv);
  free(r->grp_start);
  free(r->grp_src);
  memset(r, 0, sizeof *r);
}

/* ---- edit distance over code points ---------------------------------------------------- */

/* Decodes one unit at s[*i]: a well-formed UTF-8 code point, or 0x110000 + byte for a stray byte. */
static inline uint32_t next_unit(const uint8_t *s, uint32_t len, uint32_t *i) {
  uint32_t c = s[*i];
  if (c < 0x80) {
    (*i)++;
    return c;
  }
  uint32_t need, cp;
  if (c >= 0xc2 && c <= 0xdf) need = 1, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) need = 2, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) need = 3, cp = c & 0x07;
  else {
    (*i)++;
    return 0x110000 + c;
  }
  if (*i + need >= len) {
    (*i)++;
    return 0x110000 + c;
  }
  for (uint32_t k = 1; k <= need; k++) {
    uint32_t b = s[*i + k];
    if ((b & 0xc0) != 0x80) {
      (*i)++;
      return 0x110000 + c;
    }
    cp = cp << 6 | (b & 0x3f);
  }
  *i += need + 1;
  return cp;
}

uint32_t fc_utf8_units(const char *s, uint32_t len) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < len; n++) next_unit((const uint8_t *)s, len, &i);
  return n;
}

/* Units of s; *split = 1 when one of them is a stray byte (part of a character). */
static uint32_t units_split(const char *s, uint32_t len, uint8_t *split) {
  uint32_t n = 0, stray = 0;
  for (uint32_t i = 0; i < len; n++) stray |= next_unit((const uint8_t *)s, len, &i) >= 0x110000;
  *split = (uint8_t)stray;
  return n;
}

uint32_t fc_utf8_decode_units(const char *s, uint32_t len, uint32_t *out) {
  uint32_t n = 0;
  for (uint32_t i = 0; i < len;) out[n++] = next_unit((const uint8_t *)s, len, &i);
  return n;
}

static uint32_t lev_units(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb,
                          uint32_t bound, uint32_t *row) {
  /* Common prefix and suffix never change the distance. */
  while (na && nb && a[0] == b[0]) a++, b++, na--, nb--;
  while (na && nb && a[na - 1] == b[nb - 1]) na--, nb--;
  if (na < nb) {
    const uint32_t *t = a;
    a = b;
    b = t;
    uint32_t tn = na;
    na = nb;
    nb = tn;
  }
  if (nb == 0) return na;
  if (na - nb >= bound) return na - nb;
  for (uint32_t j = 0; j <= nb; j++) row[j] = j;
  for (uint32_t i = 1; i <= na; i++) {
    uint32_t diag = row[0], rmin;
    row[0] = i;
    rmin = i;
    uint32_t ai = a[i - 1];
    for (uint32_t j = 1; j <= nb; j++) {
      uint32_t up = row[j];
      uint32_t v = diag + (ai != b[j - 1]);
      if (up + 1 < v) v = up + 1;
      if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
      diag = up;
      row[j] = v;
      if (v < rmin) rmin = v;
    }
    if (rmin >= bound) return rmin;
  }
  return row[nb];
}

/* The same DP over bytes, for strings in which every byte is one unit (ASCII or stray bytes):
 * no decoding needed. */
static uint32_t lev_bytes(const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb) {
  while (na && nb && a[0] == b[0]) a++, b++, na--, nb--;
  while (na && nb && a[na - 1] == b[nb - 1]) na--, nb--;
  if (na < nb) {
    const uint8_t *t = a;
    a = b;
    b = t;
    uint32_t tn = na;
    na = nb;
    nb = tn;
  }
  if (nb == 0) return na;
  uint32_t srow[STACK_UNITS + 1];
  uint32_t *row = nb <= STACK_UNITS ? srow : fc_xmalloc(((size_t)nb + 1) * 4);
  for (uint32_t j = 0; j <= nb; j++) row[j] = j;
  for (uint32_t i = 1; i <= na; i++) {
    uint32_t diag = row[0];
    row[0] = i;
    uint8_t ai = a[i - 1];
    for (uint32_t j = 1; j <= nb; j++) {
      uint32_t up = row[j];
      uint32_t v = diag + (ai != b[j - 1]);
      if (up + 1 < v) v = up + 1;
      if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
      diag = up;
      row[j] = v;
    }
  }
  uint32_t d = row[nb];
  if (row != srow) free(row);
  return d;
}

uint32_t fc_edit_distance_bounded(const char *a, uint32_t la, const char *b, uint32_t lb,
                                  uint32_t bound) {
  uint32_t sa[STACK_UNITS], sb[STACK_UNITS], srow[STACK_UNITS + 1];
  uint32_t *ua = la <= STACK_UNITS ? sa : fc_xmalloc((size_t)la * 4);
  uint32_t *ub = lb <= STACK_UNITS ? sb : fc_xmalloc((size_t)lb * 4);
  uint32_t *row = (la <= STACK_UNITS && lb <= STACK_UNITS) ? srow
                                                            : fc_xmalloc(((size_t)(la > lb ? la : lb) + 1) * 4);
  uint32_t na = fc_utf8_decode_units(a, la, ua), nb = fc_utf8_decode_units(b, lb, ub);
  uint32_t d = lev_units(ua, na, ub, nb, bound, row);
  if (ua != sa) free(ua);
  if (ub != sb) free(ub);
  if (row != srow) free(row);
  return d;
}

uint32_t fc_edit_distance_units(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb,
                                uint32_t bound) {
  uint32_t srow[STACK_UNITS + 1];
  uint32_t mx = na > nb ? na : nb;
  uint32_t *row = mx <= STACK_UNITS ? srow : fc_xmalloc(((size_t)mx + 1) * 4);
  uint32_t d = lev_units(a, na, b, nb, bound, row);
  if (row != srow) free(row);
  return d;
}

uint32_t fc_edit_distance(const char *a, uint32_t la, const char *b, uint32_t lb) {
  return fc_edit_distance_bounded(a, la, b, lb, UINT32_MAX);
}

uint32_t fc_token_distance(const char *a, uint32_t la, const char *b, uint32_t lb) {
  uint8_t xa, xb;
  uint32_t ua = units_split(a, la, &xa), ub = units_split(b, lb, &xb);
  if (xa || xb || (ua == la && ub == lb))
    return lev_bytes((const uint8_t *)a, la, (const uint8_t *)b, lb);
  return fc_edit_distance(a, la, b, lb);
}

/* ---- the DP --------------------------------------------------------------------------- */

#define GROW(p, cap, need)                                  \
  do {                                                      \
    if ((need) > (cap)) {                                   \
      (cap) = (need) * 2;                                   \
      (p) = fc_xrealloc((p), (cap) * sizeof *(p));          \
    }                                                       \
  } while (0)

static inline uint32_t pair_cost(fc_aligner_t *a, const fc_align_seq_t *s, const fc_align_seq_t *p,
                                 uint32_t i, uint32_t j) {
  uint32_t la = s->start[i + 1] - s->start[i], lb = p->start[j + 1] - p->start[j];
  uint64_t hs = a->sh[i], hp = a->ph[j];
  const char *ta = s->bytes + s->start[i], *tb = p->bytes + p->start[j];
  if (hs == hp && la == lb && memcmp(ta, tb, la) == 0) return 0;
  if (la == 0) return a->ps[j] ? lb : a->pu[j];
  if (lb == 0) return a->ss[i] ? la : a->su[i];
  uint64_t key = (hs * 0x9e3779b97f4a7c15ULL) ^ (hp + 0x632be59bd9b4e019ULL) ^ ((uint64_t)la << 40 | lb);
  key ^= key >> 29;
  cache_ent_t *e = &a->cache[(key * 0xbf58476d1ce4e5b9ULL) >> (64 - CACHE_BITS)];
  if (e->used && e->ha == hs && e->hb == hp && e->la == la && e->lb == lb) {
    a->st.cache_hits++;
    return e->dist;
  }
  a->st.ed_calls++;
  /* On bytes when every byte is a unit anyway, or when either token splits a character. */
  uint32_t d = (a->su[i] == la && a->pu[j] == lb) || a->ss[i] || a->ps[j]
                   ? lev_bytes((const uint8_t *)ta, la, (const uint8_t *)tb, lb)
                   : fc_edit_distance(ta, la, tb, lb);
  *e = (cache_ent_t){hs, hp, la, lb, d, 1};
  return d;
}

static int prepare(fc_aligner_t *a, const fc_align_seq_t *s, const fc_align_seq_t *p,
                   fc_err_t *err) {
  uint32_t n = s->n, m = p->n;
  if (n == 0 || m == 0) return fc_err_set(err, FC_EINVAL, "cannot align an empty token sequence");
  if ((uint64_t)s->start[n] + p->start[m] >= (1u << 29))
    return fc_err_set(err, FC_EINVAL, "sequence texts too long to align (%u + %u bytes)", s->start[n],
                      p->start[m]);
  if (a->cap_n < (size_t)n + 1) {
    a->cap_n = (size_t)n * 2 + 1;
    a->sh = fc_xrealloc(a->sh, a->cap_n * sizeof *a->sh);
    a->su = fc_xrealloc(a->su, a->cap_n * sizeof *a->su);
    a->ss = fc_xrealloc(a->ss, a->cap_n * sizeof *a->ss);
    a->lo = fc_xrealloc(a->lo, a->cap_n * sizeof *a->lo);
    a->hi = fc_xrealloc(a->hi, a->cap_n * sizeof *a->hi);
    a->rowoff = fc_xrealloc(a->rowoff, a->cap_n * sizeof *a->rowoff);
  }
  if (a->cap_m < (size_t)m + 1) {
    a->cap_m = (size_t)m * 2 + 1;
    a->ph = fc_xrealloc(a->ph, a->cap_m * sizeof *a->ph);
    a->pu = fc_xrealloc(a->pu, a->cap_m * sizeof *a->pu);
    a->ps = fc_xrealloc(a->ps, a->cap_m * sizeof *a->ps);
    a->prev = fc_xrealloc(a->prev, a->cap_m * sizeof *a->prev);
    a->cur = fc_xrealloc(a->cur, a->cap_m * sizeof *a->cur);
  }
  for (uint32_t i = 0; i < n; i++) {
    if (s->start[i + 1] < s->start[i]) return fc_err_set(err, FC_EINVAL, "source token starts not ascending at %u", i);
    a->sh[i] = fc_hash64(s->bytes + s->start[i], s->start[i + 1] - s->start[i], 0);
    a->su[i] = units_split(s->bytes + s->start[i], s->start[i + 1] - s->start[i], &a->ss[i]);
  }
  for (uint32_t j = 0; j < m; j++) {
    if (p->start[j + 1] < p->start[j]) return fc_err_set(err, FC_EINVAL, "pivot token starts not ascending at %u", j);
    a->ph[j] = fc_hash64(p->bytes + p->start[j], p->start[j + 1] - p->start[j], 0);
    a->pu[j] = units_split(p->bytes + p->start[j], p->start[j + 1] - p->start[j], &a->ps[j]);
  }
  return 0;
}

/* Band rows from the byte spans of the tokens; full = every row covers all pivot positions. */
static int make_band(fc_aligner_t *a, const fc_align_seq_t *s, const fc_align_seq_t *p, int full,
                     fc_err_t *err) {
  uint32_t n = s->n, m = p->n;
  if (full) {
    for (uint32_t i = 0; i < n; i++) a->lo[i] = 0, a->hi[i] = m - 1;
    return 0;
  }
#define SOFF(i) (s->off ? s->off[i] : s->start[i])
#define POFF(j) (p->off ? p->off[j] : p->start[j])
  for (uint32_t i = 1; i < n; i++)
    if (SOFF(i) < SOFF(i - 1)) return fc_err_set(err, FC_EINVAL, "source token offsets not ascending at %u", i);
  for (uint32_t j = 1; j < m; j++)
    if (POFF(j) < POFF(j - 1)) return fc_err_set(err, FC_EINVAL, "pivot token offsets not ascending at %u", j);
  uint32_t jl = 0, jh = 0;
  int64_t mg = a->margin;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t b = SOFF(i), len = s->start[i + 1] - s->start[i];
    uint64_t e = b + (len ? len : 1);
    /* first pivot token ending after b; last pivot token starting before e */
    while (jl + 1 < m && (uint64_t)POFF(jl) + (p->start[jl + 1] - p->start[jl] ? p->start[jl + 1] - p->start[jl] : 1) <= b)
      jl++;
    if (jh < jl) jh = jl;
    while (jh + 1 < m && POFF(jh + 1) < e) jh++;
    int64_t lo = (int64_t)jl - mg, hi = (int64_t)jh + mg;
    a->lo[i] = (uint32_t)(lo < 0 ? 0 : lo);
    a->hi[i] = (uint32_t)(hi > (int64_t)m - 1 ? (int64_t)m - 1 : hi);
  }
#undef SOFF
#undef POFF
  a->lo[0] = 0;
  a->hi[n - 1] = m - 1;
  for (uint32_t i = n - 1; i-- > 0;)
    if (a->lo[i] > a->lo[i + 1]) a->lo[i] = a->lo[i + 1];
  for (uint32_t i = 1; i < n; i++)
    if (a->hi[i] < a->hi[i - 1]) a->hi[i] = a->hi[i - 1];
  for (uint32_t i = 0; i + 1 < n; i++)
    if (a->lo[i + 1] > a->hi[i] + 1) a->hi[i] = a->lo[i + 1] - 1;
  return 0;
}

static int run_dp(fc_aligner_t *a, const fc_align_seq_t *s, const fc_align_seq_t *p,
                  fc_align_result_t *out, int full, fc_err_t *err) {
  memset(&a->st, 0, sizeof a->st);
  int rc = prepare(a, s, p, err);
  if (!rc) rc = make_band(a, s, p, full, err);
  if (rc) return rc;
  uint32_t n = s->n, m = p->n;
  uint64_t cells = 0;
  for (uint32_t i = 0; i < n; i++) {
    a->rowoff[i] = cells;
    cells += a->hi[i] - a->lo[i] + 1;
  }
  a->rowoff[n] = cells;
  a->st.cells = cells;
  GROW(a->mv, a->cap_mv, cells);
  uint32_t *prev = a->prev, *cur = a->cur;
  uint32_t plo = 0, phi = 0; /* previous row band; prev[j - plo] */
  for (uint32_t i = 0; i < n; i++) {
    uint32_t lo = a->lo[i], hi = a->hi[i];
    uint8_t *mv = a->mv + a->rowoff[i];
    uint32_t left = INF_COST;
    for (uint32_t j = lo; j <= hi; j++) {
      uint32_t best, move;
      if (i == 0 && j == 0) {
        best = 0;
        move = 3;
      } else {
        uint32_t dg = INF_COST, up = INF_COST;
        if (i > 0) {
          if (j > 0 && j - 1 >= plo && j - 1 <= phi) dg = prev[j - 1 - plo];
          if (j >= plo && j <= phi) up = prev[j - plo];
        }
        best = dg, move = 0;
        if (up < best) best = up, move = 1;
        if (left < best) best = left, move = 2;
      }
      uint32_t v = best >= INF_COST ? INF_COST : best + pair_cost(a, s, p, i, j);
      cur[j - lo] = v;
      mv[j - lo] = (uint8_t)move;
      left = v;
    }
    uint32_t *t = prev;
    prev = cur;
    cur = t;
    plo = lo;
    phi = hi;
  }
  uint32_t final = prev[m - 1 - plo];
  if (final >= INF_COST) return fc_err_set(err, FC_EINVAL, "alignment band does not connect the ends");
  /* backtrack */
  size_t maxp = (size_t)n + m;
  if (out->cap_path < maxp) {
    out->cap_path = (uint32_t)maxp;
    out->src = fc_xrealloc(out->src, maxp * 4);
    out->piv = fc_xrealloc(out->piv, maxp * 4);
    out->grp_src = fc_xrealloc(out->grp_src, maxp * 4);
  }
  if (out->cap_m < (size_t)m + 1) {
    out->cap_m = m + 1;
    out->grp_start = fc_xrealloc(out->grp_start, ((size_t)m + 1) * 4);
  }
  uint32_t i = n - 1, j = m - 1, k = 0;
  for (;;) {
    out->src[k] = i;
    out->piv[k] = j;
    k++;
    uint8_t mvv = a->mv[a->rowoff[i] + (j - a->lo[i])];
    if (mvv == 3) break;
    if (mvv == 0) i--, j--;
    else if (mvv == 1) i--;
    else j--;
  }
  for (uint32_t x = 0, y = k - 1; x < y; x++, y--) {
    uint32_t t = out->src[x];
    out->src[x] = out->src[y];
    out->src[y] = t;
    t = out->piv[x];
    out->piv[x] = out->piv[y];
    out->piv[y] = t;
  }
  out->n_path = k;
  out->cost = final;
  out->m = m;
  memset(out->grp_start, 0, ((size_t)m + 1) * 4);
  for (uint32_t x = 0; x < k; x++) out->grp_start[out->piv[x] + 1]++;
  for (uint32_t y = 0; y < m; y++) out->grp_start[y + 1] += out->grp_start[y];
  for (uint32_t x = 0; x < k; x++) out->grp_src[x] = out->src[x]; /* path order = grouped order */
  return 0;
}

int fc_align_mined(fc_aligner_t *a, const fc_align_seq_t *src, const fc_align_seq_t *piv,
                   fc_align_result_t *out, fc_err_t *err) {
  return run_dp(a, src, piv, out, 0, err);
}

int fc_align_full(fc_aligner_t *a, const fc_align_seq_t *src, const fc_align_seq_t *piv,
                  fc_align_result_t *out, fc_err_t *err) {
  return run_dp(a, src, piv, out, 1, err);
}
