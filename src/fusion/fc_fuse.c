/* Distribution transfer onto the pivot and MinCE / AvgCE fusion (rules in fc_fuse.h). */
#include "fc_fuse.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline const char *vtext(const fc_vocab_t *v, uint32_t id, uint32_t *len) {
  *len = v->start[id + 1] - v->start[id];
  return v->bytes + v->start[id];
}

static int suffix_related(const char *a, uint32_t la, const char *b, uint32_t lb) {
  if (la == 0 || lb == 0) return 0;
  if (la <= lb) return memcmp(b + lb - la, a, la) == 0;
  return memcmp(a + la - lb, b, lb) == 0;
}

static inline float logaddexp(float a, float b) {
  if (a == -INFINITY) return b;
  if (b == -INFINITY) return a;
  float m = a > b ? a : b;
  return m + log1pf(expf(-fabsf(a - b)));
}

typedef struct ent {
  uint32_t id;
  float lp;
} ent_t;

static int ent_cmp(const void *x, const void *y) {
  const ent_t *a = x, *b = y;
  if (a->lp != b->lp) return a->lp > b->lp ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

/* Sorts e[0..n), keeps the best k, renormalises them and writes k slots (absent padding). */
static void finish_entries(ent_t *e, uint32_t n, uint32_t k, uint32_t *ids, float *lp) {
  qsort(e, n, sizeof *e, ent_cmp);
  if (n > k) n = k;
  float z = -INFINITY;
  for (uint32_t x = 0; x < n; x++) z = logaddexp(z, e[x].lp);
  for (uint32_t x = 0; x < k; x++) {
    if (x < n) {
      ids[x] = e[x].id;
      lp[x] = e[x].lp - z;
    } else {
      ids[x] = 0;
      lp[x] = -INFINITY;
    }
  }
}

int fc_fuse_transfer(const fc_vocab_t *sv, const fc_vocab_t *pv, const fc_vmap_t *map,
                     const uint32_t *src_ids, uint32_t n, const uint32_t *src_top_ids,
                     const float *src_top_lp, uint32_t src_k, const uint32_t *piv_ids, uint32_t m,
                     const uint32_t *grp_start, const uint32_t *grp_src, uint32_t k_out,
                     uint32_t *out_ids, float *out_lp, uint8_t *rule, fc_xfer_stats_t *st,
                     fc_err_t *err) {
  assert(src_k >= 1 && src_k <= FC_TOPK_MAX_K && k_out >= 1 && k_out <= FC_TOPK_MAX_K);
  if (map->src_vocab != sv->n || map->piv_vocab != pv->n)
    return fc_err_set(err, FC_EMISMATCH, "vocabulary map is %u -> %u, vocabularies are %u -> %u",
                      map->src_vocab, map->piv_vocab, sv->n, pv->n);
  for (uint32_t i = 0; i < n; i++)
    if (src_ids[i] >= sv->n) return fc_err_set(err, FC_EINVAL, "source token id %u out of range", src_ids[i]);
  for (uint32_t j = 0; j < m; j++)
    if (piv_ids[j] >= pv->n) return fc_err_set(err, FC_EINVAL, "pivot token id %u out of range", piv_ids[j]);
  ent_t e[FC_TOPK_MAX_K];
  /* End offsets of source tokens in the shared text (cumulative text lengths), for rule 2. */
  uint64_t *send = fc_xmalloc(((size_t)n + 1) * 8), pend = 0, acc = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t l;
    vtext(sv, src_ids[i], &l);
    send[i] = acc += l;
  }
  uint64_t ptot = 0;
  for (uint32_t j = 0; j < m; j++) {
    uint32_t l;
    vtext(pv, piv_ids[j], &l);
    ptot += l;
  }
  int rc = 0;
  for (uint32_t j = 0; j < m; j++) {
    uint32_t tl;
    const char *t = vtext(pv, piv_ids[j], &tl);
    pend += tl;
    uint32_t g0 = grp_start[j], g1 = grp_start[j + 1];
    assert(g0 <= g1);
    int64_t use = -1;
    int how = FC_XFER_ONEHOT;
    if (g1 - g0 == 1) {
      uint32_t i = grp_src[g0], sl;
      if (i >= n) {
        rc = fc_err_set(err, FC_EINVAL, "alignment refers to source position %u of %u", i, n);
        break;
      }
      const char *s = vtext(sv, src_ids[i], &sl);
      if (suffix_related(s, sl, t, tl)) use = i, how = FC_XFER_ONE;
    } else if (g1 - g0 > 1) {
      int64_t first = -1, exact_end = -1;
      for (uint32_t g = g0; g < g1; g++) {
        uint32_t i = grp_src[g], sl;
        if (i >= n) {
          rc = fc_err_set(err, FC_EINVAL, "alignment refers to source position %u of %u", i, n);
          break;
        }
        const char *s = vtext(sv, src_ids[i], &sl);
        if (!suffix_related(s, sl, t, tl)) continue;
        if (first < 0) first = i;
        /* the same end counted from the start or from the end of the text (a prefix only one
         * tokenizer adds, such as a dummy-prefix space or a BOS text, shifts the former) */
        int same_end = send[i] == pend || acc - send[i] == ptot - pend;
        if (same_end && exact_end < 0) exact_end = i;
      }
      if (rc) break;
      if (exact_end >= 0) {
        use = exact_end;
        how = FC_XFER_SUFFIX;
      } else {
        uint32_t pos = 0;
        int64_t last = -1;
        for (uint32_t g = g0; g < g1 && pos < tl; g++) {
          uint32_t i = grp_src[g], sl;
          const char *s = vtext(sv, src_ids[i], &sl);
          if (sl > 0 && sl <= tl - pos && memcmp(t + pos, s, sl) == 0) {
            pos += sl;
            last = i;
          }
        }
        if (last >= 0 && pos == tl) use = last, how = FC_XFER_COVER;
        else if (first >= 0) use = first, how = FC_XFER_SUFFIX;
      }
    }
    uint32_t *oi = out_ids + (size_t)j * k_out;
    float *ol = out_lp + (size_t)j * k_out;
    uint32_t ne = 0;
    if (use >= 0) {
      const uint32_t *ti = src_top_ids + (size_t)use * src_k;
      const float *tp = src_top_lp + (size_t)use * src_k;
      for (uint32_t x = 0; x < src_k; x++) {
        if (!(tp[x] > -INFINITY)) continue;
        if (ti[x] >= map->src_vocab) {
          rc = fc_err_set(err, FC_EINVAL, "source top-K id %u out of range", ti[x]);
          break;
        }
        uint32_t pid = map->map[ti[x]];
        if (pid == FC_VMAP_NONE) {
          if (st) st->dropped++;
          continue;
        }
        uint32_t y = 0;
        while (y < ne && e[y].id != pid) y++;
        if (y < ne) {
          e[y].lp = logaddexp(e[y].lp, tp[x]);
          if (st) st->merged++;
        } else {
          e[ne].id = pid;
          e[ne].lp = tp[x];
          ne++;
        }
      }
      if (ne == 0) how = FC_XFER_ONEHOT;
    }
    if (rc) break;
    if (how == FC_XFER_ONEHOT && j + 1 < m) {
      e[0].id = piv_ids[j + 1];
      e[0].lp = 0;
      ne = 1;
    } else if (how == FC_XFER_ONEHOT) {
      how = FC_XFER_EMPTY;
      ne = 0;
    }
    finish_entries(e, ne, k_out, oi, ol);
    if (rule) rule[j] = (uint8_t)how;
    if (st) st->by_rule[how]++;
  }
  free(send);
  return rc;
}

/* ---- cross-entropy and fusion ------------------------------------------------------------- */

float fc_fuse_seq_ce(const fc_topk_ex_t *ex, uint32_t k, float floor_p) {
  double sum = 0;
  uint64_t cnt = 0;
  for (uint32_t i = 0; i + 1 < ex->n; i++) {
    if (!ex->mask[i + 1]) continue;
    uint32_t gold = ex->ids[i + 1];
    const uint32_t *ti = ex->top_ids + (size_t)i * k;
    const float *tp = ex->top_lp + (size_t)i * k;
    double mass = 0, lp = NAN;
    for (uint32_t x = 0; x < k; x++) {
      if (!(tp[x] > -INFINITY)) continue;
      mass += exp(tp[x]);
      if (ti[x] == gold && isnan(lp)) lp = tp[x];
    }
    if (isnan(lp)) {
      double rest = 1 - mass;
      lp = log(rest > floor_p ? rest : floor_p);
    }
    sum -= lp;
    cnt++;
  }
  return cnt ? (float)(sum / (double)cnt) : NAN;
}

float fc_fuse_ce(const fc_topk_ex_t *ex, uint32_t k, float floor_p) {
  return isfinite(ex->mean_ce) ? ex->mean_ce : fc_fuse_seq_ce(ex, k, floor_p);
}

int fc_fuse_method_parse(const char *name, fc_fuse_method_t *out) {
  if (!strcmp(name, "mince")) *out = FC_FUSE_MINCE;
  else if (!strcmp(name, "avgce")) *out = FC_FUSE_AVGCE;
  else if (!strcmp(name, "source")) *out = FC_FUSE_SOURCE;
  else return FC_EINVAL;
  return 0;
}

/* Renormalised copy of one position's entries into e; returns the count. */
static uint32_t load_pos(const fc_topk_ex_t *ex, uint32_t k, uint32_t j, ent_t *e) {
  uint32_t ne = 0;
  float z = -INFINITY;
  for (uint32_t x = 0; x < k; x++) {
    float lp = ex->top_lp[(size_t)j * k + x];
    if (!(lp > -INFINITY)) continue;
    uint32_t id = ex->top_ids[(size_t)j * k + x], y = 0;
    z = logaddexp(z, lp);
    while (y < ne && e[y].id != id) y++; /* a repeated id (not from a real top-K) is merged */
    if (y < ne) {
      e[y].lp = logaddexp(e[y].lp, lp);
      continue;
    }
    e[ne].id = id;
    e[ne].lp = lp;
    ne++;
  }
  for (uint32_t x = 0; x < ne; x++) e[x].lp -= z;
  return ne;
}

int fc_fuse_combine(fc_fuse_method_t method, const fc_topk_ex_t *const *cands, const float *ce,
                    int n, uint32_t k, fc_topk_ex_t *out, int *winner, fc_err_t *err) {
  assert(n >= 1 && n <= 16 && k >= 1 && k <= FC_TOPK_MAX_K);
  uint32_t m = cands[0]->n;
  for (int c = 1; c < n; c++) {
    if (cands[c]->n != m || memcmp(cands[c]->ids, cands[0]->ids, (size_t)m * 4) != 0)
      return fc_err_set(err, FC_EMISMATCH, "candidate %d is not over the same pivot tokens", c);
  }
  fc_topk_ex_reserve(out, m, k);
  out->n = m;
  memcpy(out->ids, cands[0]->ids, (size_t)m * 4);
  memcpy(out->mask, cands[0]->mask, m);
  ent_t e[FC_TOPK_MAX_K * 16];
  if (method == FC_FUSE_MINCE || method == FC_FUSE_SOURCE) {
    int w = method == FC_FUSE_SOURCE ? n - 1 : 0;
    for (int c = 1; c < n && method == FC_FUSE_MINCE; c++)
      if (isfinite(ce[c]) && (!isfinite(ce[w]) || ce[c] < ce[w])) w = c;
    for (uint32_t j = 0; j < m; j++) {
      uint32_t ne = load_pos(cands[w], k, j, e);
      finish_entries(e, ne, k, out->top_ids + (size_t)j * k, out->top_lp + (size_t)j * k);
    }
    out->mean_ce = ce[w];
    out->tag = (uint32_t)w;
    *winner = w;
    return 0;
  }
  /* AvgCE */
  double wt[16], rmax = -INFINITY, wsum = 0;
  for (int c = 0; c < n; c++) {
    wt[c] = isfinite(ce[c]) ? exp(-(double)ce[c]) : -INFINITY; /* reward */
    if (wt[c] > rmax) rmax = wt[c];
  }
  if (rmax == -INFINITY) {
    for (int c = 0; c < n; c++) wt[c] = c == 0;
  } else {
    for (int c = 0; c < n; c++) {
      wt[c] = wt[c] == -INFINITY ? 0 : exp(wt[c] - rmax);
      wsum += wt[c];
    }
    for (int c = 0; c < n; c++) wt[c] /= wsum;
  }
  double mce = 0;
  for (int c = 0; c < n; c++)
    if (wt[c] > 0) mce += wt[c] * ce[c];
  for (uint32_t j = 0; j < m; j++) {
    uint32_t ne = 0;
    for (int c = 0; c < n; c++) {
      if (wt[c] <= 0) continue;
      ent_t one[FC_TOPK_MAX_K];
      uint32_t no = load_pos(cands[c], k, j, one);
      float lw = (float)log(wt[c]);
      for (uint32_t x = 0; x < no; x++) {
        uint32_t y = 0;
        while (y < ne && e[y].id != one[x].id) y++;
        if (y == ne) {
          e[ne].id = one[x].id;
          e[ne].lp = -INFINITY;
          ne++;
        }
        e[y].lp = logaddexp(e[y].lp, one[x].lp + lw);
      }
    }
    finish_entries(e, ne, k, out->top_ids + (size_t)j * k, out->top_lp + (size_t)j * k);
  }
  out->mean_ce = (float)mce;
  out->tag = (uint32_t)n;
  *winner = -1;
  return 0;
}

/* ---- store loops ---------------------------------------------------------------------------- */

/* An alignment sequence over a store example's token texts (concatenated into buf). */
typedef struct seqbuf {
  char *bytes;
  uint32_t *start;
  size_t cap_b, cap_n;
} seqbuf_t;

static void seq_build(seqbuf_t *b, const fc_vocab_t *v, const uint32_t *ids, uint32_t n,
                      fc_align_seq_t *s) {
  if (b->cap_n < (size_t)n + 1) {
    b->cap_n = (size_t)n * 2 + 1;
    b->start = fc_xrealloc(b->start, b->cap_n * 4);
  }
  size_t len = 0;
  for (uint32_t i = 0; i < n; i++) len += v->start[ids[i] + 1] - v->start[ids[i]];
  if (b->cap_b < len + 1) {
    b->cap_b = len * 2 + 1;
    b->bytes = fc_xrealloc(b->bytes, b->cap_b);
  }
  uint32_t pos = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t l;
    const char *t = vtext(v, ids[i], &l);
    b->start[i] = pos;
    memcpy(b->bytes + pos, t, l);
    pos += l;
  }
  b->start[n] = pos;
  *s = (fc_align_seq_t){n, b->bytes, b->start, NULL};
}

static void seq_free(seqbuf_t *b) {
  free(b->bytes);
  free(b->start);
}

/* Opens a source and a pivot store that must hold the same examples. */
static int open_pair(const char *src_path, const char *piv_path, const fc_vocab_t *sv,
                     const fc_vocab_t *pv, fc_topk_reader_t **rs, fc_topk_reader_t **rp,
                     fc_err_t *err) {
  int rc = fc_topk_open(rs, src_path, err);
  if (rc) return rc;
  rc = fc_topk_open(rp, piv_path, err);
  if (rc) {
    fc_topk_close(rs);
    return rc;
  }
  if (fc_topk_count(*rs) != fc_topk_count(*rp))
    rc = fc_err_set(err, FC_EMISMATCH, "%s has %lu examples, %s has %lu", src_path,
                    (unsigned long)fc_topk_count(*rs), piv_path, (unsigned long)fc_topk_count(*rp));
  else if (fc_topk_vocab(*rs) > sv->n || fc_topk_vocab(*rp) > pv->n)
    rc = fc_err_set(err, FC_EMISMATCH, "store vocabularies (%u, %u) exceed the tokenizers' (%u, %u)",
                    fc_topk_vocab(*rs), fc_topk_vocab(*rp), sv->n, pv->n);
  if (rc) {
    fc_topk_close(rs);
    fc_topk_close(rp);
  }
  return rc;
}

/* Stores written by the logits stage carry a hash of each example's text in tag (0 = unknown):
 * two stores that disagree there describe different texts and must not be aligned. */
static int check_tags(const fc_topk_ex_t *a, const fc_topk_ex_t *b, uint64_t x, fc_err_t *err) {
  if (a->tag == b->tag) return 0;
  return fc_err_set(err, FC_EMISMATCH,
                    "example %lu: the stores hold different texts (text hash %08x vs %08x): made from "
                    "other data, shard, template or --max-len?",
                    (unsigned long)x, (unsigned)a->tag, (unsigned)b->tag);
}

static int report(fc_progress_fn progress, void *pctx, uint64_t done, uint64_t total,
                  const char *what, fc_err_t *err) {
  if (!progress) return 0;
  char msg[96];
  snprintf(msg, sizeof msg, "%s %lu/%lu examples", what, (unsigned long)done, (unsigned long)total);
  if (progress(pctx, total ? (double)done / (double)total : 1.0, msg))
    return fc_err_set(err, FC_ECANCEL, "%s cancelled after %lu of %lu examples", what,
                      (unsigned long)done, (unsigned long)total);
  return 0;
}

int fc_fuse_count_stores(fc_vcount_t *counts, const char *src_path, const char *piv_path,
                         const fc_vocab_t *sv, const fc_vocab_t *pv, int margin,
                         fc_progress_fn progress, void *pctx, fc_err_t *err) {
  fc_topk_reader_t *rs = NULL, *rp = NULL;
  int rc = open_pair(src_path, piv_path, sv, pv, &rs, &rp, err);
  if (rc) return rc;
  fc_aligner_t *al = fc_aligner_new(margin);
  fc_align_result_t res = {0};
  fc_topk_ex_t es = {0}, ep = {0};
  seqbuf_t bs = {0}, bp = {0};
  for (uint64_t x = 0; x < fc_topk_count(rs) && rc == 0; x++) {
    rc = report(progress, pctx, x, fc_topk_count(rs), "counting", err);
    if (!rc) rc = fc_topk_get(rs, x, &es, err);
    if (!rc) rc = fc_topk_get(rp, x, &ep, err);
    if (!rc) rc = check_tags(&es, &ep, x, err);
    if (rc || es.n == 0 || ep.n == 0) continue;
    fc_align_seq_t s, p;
    seq_build(&bs, sv, es.ids, es.n, &s);
    seq_build(&bp, pv, ep.ids, ep.n, &p);
    rc = fc_align_mined(al, &s, &p, &res, err);
    if (!rc) rc = fc_vcount_add_path(counts, es.ids, ep.ids, &res, err);
    if (rc) fc_err_wrap(err, "example %lu", (unsigned long)x);
  }
  seq_free(&bs);
  seq_free(&bp);
  fc_topk_ex_free(&es);
  fc_topk_ex_free(&ep);
  fc_align_result_free(&res);
  fc_aligner_destroy(&al);
  fc_topk_close(&rs);
  fc_topk_close(&rp);
  return rc;
}

int fc_fuse_align_store(const char *src_path, const char *piv_path, const fc_vocab_t *sv,
                        const fc_vocab_t *pv, const fc_vmap_t *map, const char *out_path,
                        int margin, fc_xfer_stats_t *st, fc_progress_fn progress, void *pctx,
                        fc_err_t *err) {
  fc_topk_reader_t *rs = NULL, *rp = NULL;
  int rc = open_pair(src_path, piv_path, sv, pv, &rs, &rp, err);
  if (rc) return rc;
  uint32_t k = fc_topk_k(rs);
  fc_topk_writer_t *w = NULL;
  char mid[4200];
  snprintf(mid, sizeof mid, "%s aligned to %s", fc_topk_model_id(rs), fc_topk_model_id(rp));
  fc_topk_info_t info = {.model_id = mid, .tok_hash = fc_topk_tok_hash(rp), .k = k, .vocab = pv->n};
  rc = fc_topk_writer_new(&w, out_path, &info, err);
  fc_aligner_t *al = fc_aligner_new(margin);
  fc_align_result_t res = {0};
  fc_topk_ex_t es = {0}, ep = {0}, eo = {0};
  seqbuf_t bs = {0}, bp = {0};
  uint8_t *rule = NULL;
  size_t rule_cap = 0;
  for (uint64_t x = 0; x < fc_topk_count(rs) && rc == 0; x++) {
    rc = report(progress, pctx, x, fc_topk_count(rs), "aligning", err);
    if (!rc) rc = fc_topk_get(rs, x, &es, err);
    if (!rc) rc = fc_topk_get(rp, x, &ep, err);
    if (!rc) rc = check_tags(&es, &ep, x, err);
    if (rc) break;
    fc_topk_ex_reserve(&eo, ep.n, k);
    eo.n = ep.n;
    memcpy(eo.ids, ep.ids, (size_t)ep.n * 4);
    memcpy(eo.mask, ep.mask, ep.n);
    eo.mean_ce = es.mean_ce;
    eo.tag = ep.tag;
    if (ep.n > 0 && es.n == 0) {
      rc = fc_err_set(err, FC_EMISMATCH, "example %lu: source has no tokens", (unsigned long)x);
      break;
    }
    if (ep.n > 0) {
      fc_align_seq_t s, p;
      seq_build(&bs, sv, es.ids, es.n, &s);
      seq_build(&bp, pv, ep.ids, ep.n, &p);
      rc = fc_align_mined(al, &s, &p, &res, err);
      if (rule_cap < ep.n) {
        rule_cap = (size_t)ep.n * 2;
        rule = fc_xrealloc(rule, rule_cap);
      }
      if (!rc)
        rc = fc_fuse_transfer(sv, pv, map, es.ids, es.n, es.top_ids, es.top_lp, k, ep.ids, ep.n,
                              res.grp_start, res.grp_src, k, eo.top_ids, eo.top_lp, rule, st, err);
      if (rc) {
        fc_err_wrap(err, "example %lu", (unsigned long)x);
        break;
      }
    }
    rc = fc_topk_writer_add(w, &eo, err);
  }
  if (!rc) rc = fc_topk_writer_finish(w, err);
  fc_topk_writer_destroy(&w);
  free(rule);
  seq_free(&bs);
  seq_free(&bp);
  fc_topk_ex_free(&es);
  fc_topk_ex_free(&ep);
  fc_topk_ex_free(&eo);
  fc_align_result_free(&res);
  fc_aligner_destroy(&al);
  fc_topk_close(&rs);
  fc_topk_close(&rp);
  return rc;
}

int fc_fuse_stores(fc_fuse_method_t method, const char *piv_path, const char *const *aligned_paths,
                   int n, const char *out_path, float floor_p, fc_fuse_summary_t *sum,
                   fc_progress_fn progress, void *pctx, fc_err_t *err) {
  if (n < 1 || n > 15) return fc_err_set(err, FC_EINVAL, "fuse takes 1 to 15 aligned stores, got %d", n);
  fc_topk_reader_t *r[16] = {0};
  int rc = fc_topk_open(&r[0], piv_path, err);
  for (int c = 1; c <= n && rc == 0; c++) {
    rc = fc_topk_open(&r[c], aligned_paths[c - 1], err);
    if (rc) break;
    if (fc_topk_count(r[c]) != fc_topk_count(r[0]) || fc_topk_k(r[c]) != fc_topk_k(r[0]) ||
        fc_topk_vocab(r[c]) != fc_topk_vocab(r[0]) || fc_topk_tok_hash(r[c]) != fc_topk_tok_hash(r[0]))
      rc = fc_err_set(err, FC_EMISMATCH, "%s does not match the pivot store %s (examples, K, vocabulary or tokenizer)",
                      aligned_paths[c - 1], piv_path);
  }
  fc_topk_writer_t *w = NULL;
  if (!rc) {
    char mid[128];
    snprintf(mid, sizeof mid, "fused (%s, %d sources)", method == FC_FUSE_MINCE ? "mince" : method == FC_FUSE_SOURCE ? "source" : "avgce", n);
    fc_topk_info_t info = {.model_id = mid, .tok_hash = fc_topk_tok_hash(r[0]), .k = fc_topk_k(r[0]),
                           .vocab = fc_topk_vocab(r[0])};
    rc = fc_topk_writer_new(&w, out_path, &info, err);
  }
  fc_topk_ex_t ex[16], out = {0};
  memset(ex, 0, sizeof ex);
  if (sum) memset(sum, 0, sizeof *sum);
  for (uint64_t x = 0; rc == 0 && x < fc_topk_count(r[0]); x++) {
    const fc_topk_ex_t *cands[16];
    float ce[16];
    uint32_t k = fc_topk_k(r[0]);
    rc = report(progress, pctx, x, fc_topk_count(r[0]), "fusing", err);
    for (int c = 0; c <= n && rc == 0; c++) {
      rc = fc_topk_get(r[c], x, &ex[c], err);
      if (!rc && c > 0) rc = check_tags(&ex[c], &ex[0], x, err);
      if (!rc && c > 0 && (ex[c].n != ex[0].n || memcmp(ex[c].ids, ex[0].ids, (size_t)ex[0].n * 4)))
        rc = fc_err_set(err, FC_EMISMATCH, "example %lu: %s is not over the pivot's tokens",
                        (unsigned long)x, aligned_paths[c - 1]);
      cands[c] = &ex[c];
      ce[c] = fc_fuse_ce(&ex[c], k, floor_p);
    }
    int win;
    if (!rc) rc = fc_fuse_combine(method, cands, ce, n + 1, k, &out, &win, err);
    if (rc) {
      fc_err_wrap(err, "example %lu", (unsigned long)x);
      break;
    }
    rc = fc_topk_writer_add(w, &out, err);
    if (sum) {
      sum->examples++;
      if (win >= 0) sum->wins[win]++;
    }
  }
  if (!rc) rc = fc_topk_writer_finish(w, err);
  fc_topk_writer_destroy(&w);
  for (int c = 0; c <= n; c++) {
    fc_topk_ex_free(&ex[c]);
    fc_topk_close(&r[c]);
  }
  fc_topk_ex_free(&out);
  return rc;
}
