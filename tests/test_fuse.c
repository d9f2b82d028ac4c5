/* Unit tests for distribution transfer and fusion: each transfer rule on a constructed case
 * (incl. the one-hot on the gold NEXT token), mass merging and renormalisation, the CE fallback,
 * MinCE / AvgCE on constructed cases, and the store-level loops end to end on synthetic data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_fuse.h"
#include "synth_tok.h"
#include "test_support.h"

static char g_dir[64];

/* Identity-ish map over a small vocabulary, given explicitly. */
static fc_vmap_t make_map(uint32_t sv, uint32_t pv, uint32_t *map, uint8_t *how) {
  for (uint32_t i = 0; i < sv; i++) how[i] = map[i] == FC_VMAP_NONE ? FC_VMAP_BY_NONE : FC_VMAP_BY_SET;
  return (fc_vmap_t){.src_vocab = sv, .piv_vocab = pv, .map = map, .how = how};
}

static double mass(const float *lp, uint32_t k) {
  double s = 0;
  for (uint32_t x = 0; x < k; x++)
    if (lp[x] > -INFINITY) s += exp(lp[x]);
  return s;
}

static void test_rule_one_merge_renorm(void **state) {
  (void)state;
  static tvocab_t s, p;
  const char *st[] = {"a", "b", "c", "d", NULL};
  const char *pt[] = {"a", "b", "x", NULL};
  tvocab(&s, st);
  tvocab(&p, pt);
  uint32_t map[4] = {0, 1, 1, FC_VMAP_NONE};
  uint8_t how[4];
  fc_vmap_t m = make_map(4, 3, map, how);
  /* one source token "a" on one pivot token "a" */
  uint32_t sid[1] = {0}, pid[1] = {0};
  uint32_t tid[4] = {0, 1, 2, 3};
  float tlp[4] = {logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f)};
  uint32_t gs[2] = {0, 1}, gsrc[1] = {0};
  uint32_t oid[4];
  float olp[4];
  uint8_t rule[1];
  fc_xfer_stats_t stt = {0};
  fc_err_t err = {0};
  assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 1, tid, tlp, 4, pid, 1, gs, gsrc, 4, oid,
                                    olp, rule, &stt, &err), 0);
  assert_int_equal(rule[0], FC_XFER_ONE);
  /* c merges into b (0.3 + 0.2), d is dropped, then renormalised over 0.9 */
  assert_int_equal(oid[0], 1);
  assert_float_equal(expf(olp[0]), 0.5f / 0.9f, 1e-5);
  assert_int_equal(oid[1], 0);
  assert_float_equal(expf(olp[1]), 0.4f / 0.9f, 1e-5);
  assert_true(olp[2] == -INFINITY && olp[3] == -INFINITY);
  assert_float_equal(mass(olp, 4), 1.0, 1e-5);
  assert_int_equal(stt.dropped, 1);
  assert_int_equal(stt.merged, 1);
  /* a smaller output K keeps the best entry and renormalises it to 1 */
  assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 1, tid, tlp, 4, pid, 1, gs, gsrc, 1, oid,
                                    olp, rule, NULL, &err), 0);
  assert_int_equal(oid[0], 1);
  assert_float_equal(olp[0], 0, 1e-6);
  /* every entry unmapped: the one-hot rule; here at the last position -> empty */
  uint32_t tid2[1] = {3};
  float tlp2[1] = {0};
  assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 1, tid2, tlp2, 1, pid, 1, gs, gsrc, 2, oid,
                                    olp, rule, NULL, &err), 0);
  assert_int_equal(rule[0], FC_XFER_EMPTY);
  assert_true(olp[0] == -INFINITY);
  /* a map of other vocabulary sizes is refused */
  fc_vmap_t bad = make_map(3, 3, map, how);
  assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &bad, sid, 1, tid, tlp, 4, pid, 1, gs, gsrc, 4, oid,
                                    olp, rule, NULL, &err), FC_EMISMATCH);
}

static void test_rule_onehot_next(void **state) {
  (void)state;
  static tvocab_t s, p;
  const char *st[] = {" he", "llo", NULL};
  const char *pt[] = {" hel", "lo", "zz", NULL};
  tvocab(&s, st);
  tvocab(&p, pt);
  uint32_t map[2] = {2, 2};
  uint8_t how[2];
  fc_vmap_t m = make_map(2, 3, map, how);
  uint32_t sid[2] = {0, 1}, pid[2] = {0, 1};
  uint32_t tid[4] = {0, 1, 1, 0};
  float tlp[4] = {logf(0.9f), logf(0.1f), logf(0.7f), logf(0.3f)};
  uint32_t gs[3] = {0, 1, 2}, gsrc[2] = {0, 1};
  uint32_t oid[4];
  float olp[4];
  uint8_t rule[2];
  fc_err_t err = {0};
  assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 2, tid, tlp, 2, pid, 2, gs, gsrc, 2, oid,
                                    olp, rule, NULL, &err), 0);
  /* " he" vs " hel": no suffix relation -> one-hot on the NEXT pivot token "lo" (id 1), not on
   * the current token " hel" (id 0) */
  assert_int_equal(rule[0], FC_XFER_ONEHOT);
  assert_int_equal(oid[0], 1);
  assert_float_equal(olp[0], 0, 0);
  assert_true(olp[1] == -INFINITY);
  /* "lo" is a suffix of "llo": carried; both entries map to pivot 2 and merge to probability 1 */
  assert_int_equal(rule[1], FC_XFER_ONE);
  assert_int_equal(oid[2], 2);
  assert_float_equal(olp[2], 0, 1e-6);
}

static void test_rule_suffix_end_and_cover(void **state) {
  (void)state;
  static tvocab_t s, p;
  const char *st[] = {"a", "b", " ", "c", NULL};
  const char *pt[] = {"aa", "b", "cac", "z0", "z1", "z2", "z3", NULL};
  tvocab(&s, st);
  tvocab(&p, pt);
  uint32_t map[4] = {3, 4, 5, 6};
  uint8_t how[4];
  fc_vmap_t m = make_map(4, 7, map, how);
  fc_err_t err = {0};
  uint32_t oid[8];
  float olp[8];
  uint8_t rule[4];
  /* pivot "aa" "b" over source "a" "a" "b": both "a" are suffixes of "aa"; the second ends where
   * "aa" ends. Position 0 predicts "b"'s... give positions distinct distributions. */
  {
    uint32_t sid[3] = {0, 0, 1}, pid[2] = {0, 1};
    uint32_t tid[3] = {0, 1, 2}; /* K = 1: position i predicts source id tid[i] */
    float tlp[3] = {0, 0, 0};
    uint32_t gs[3] = {0, 2, 3}, gsrc[3] = {0, 1, 2};
    assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 3, tid, tlp, 1, pid, 2, gs, gsrc, 1, oid,
                                      olp, rule, NULL, &err), 0);
    assert_int_equal(rule[0], FC_XFER_SUFFIX);
    assert_int_equal(oid[0], map[1]); /* source position 1, not 0 */
    assert_int_equal(rule[1], FC_XFER_ONE);
    assert_int_equal(oid[1], map[2]);
  }
  /* A leading " " in the source only (a dummy-prefix space): pivot "cac" over source " " "c" "a"
   * "c". Counted from the start the ends are off by one, counted from the end of the text the
   * last "c" ends where "cac" ends -> rule 2 picks position 3, not the first "c" (1). */
  {
    static tvocab_t s2;
    const char *st2[] = {" ", "c", "a", NULL};
    tvocab(&s2, st2);
    uint32_t map2[3] = {3, 4, 5};
    uint8_t how2[3];
    fc_vmap_t m2 = make_map(3, 7, map2, how2);
    uint32_t sid[4] = {0, 1, 2, 1}, pid[1] = {2};
    uint32_t tid[4] = {0, 1, 2, 0};
    float tlp[4] = {0, -1, -2, -3};
    uint32_t gs[2] = {0, 4}, gsrc[4] = {0, 1, 2, 3};
    assert_int_equal(fc_fuse_transfer(&s2.v, &p.v, &m2, sid, 4, tid, tlp, 1, pid, 1, gs, gsrc, 1, oid,
                                      olp, rule, NULL, &err), 0);
    assert_int_equal(rule[0], FC_XFER_SUFFIX);
    assert_int_equal(oid[0], map2[0]); /* tid[3] = 0 -> pivot 3 */
    /* with a trailing " " as well, neither count matches: the greedy cover "c"+"a"+"c" consumes
     * "cac" exactly -> its last piece (position 3), not the first suffix-related "c" (1) */
    uint32_t sid5[5] = {0, 1, 2, 1, 0}, tid5[5] = {0, 1, 2, 0, 1};
    float tlp5[5] = {0, -1, -2, -3, -4};
    uint32_t gs5[2] = {0, 5}, gsrc5[5] = {0, 1, 2, 3, 4};
    assert_int_equal(fc_fuse_transfer(&s2.v, &p.v, &m2, sid5, 5, tid5, tlp5, 1, pid, 1, gs5, gsrc5, 1,
                                      oid, olp, rule, NULL, &err), 0);
    assert_int_equal(rule[0], FC_XFER_COVER);
    assert_int_equal(oid[0], map2[0]);
    /* no end match in either count and no cover ("c" "c" for "cac", inside "zzzz" .. "zzzz"):
     * the first suffix-related position */
    static tvocab_t s3;
    const char *st3[] = {" ", "c", "a", "zzzz", NULL};
    tvocab(&s3, st3);
    uint32_t map3[4] = {3, 4, 5, 6};
    uint8_t how3[4];
    fc_vmap_t m3 = make_map(4, 7, map3, how3);
    uint32_t sid3[4] = {3, 1, 1, 3}, tid3[4] = {0, 1, 2, 0};
    float tlp3[4] = {0, 0, 0, 0};
    uint32_t gs3[2] = {0, 2}, gsrc3[2] = {1, 2};
    assert_int_equal(fc_fuse_transfer(&s3.v, &p.v, &m3, sid3, 4, tid3, tlp3, 1, pid, 1, gs3, gsrc3, 1,
                                      oid, olp, rule, NULL, &err), 0);
    assert_int_equal(rule[0], FC_XFER_SUFFIX);
    assert_int_equal(oid[0], map3[1]); /* position 1's entry (source id 1) */
  }
  /* Several pieces, none suffix-related and no cover: one-hot on the next token */
  {
    uint32_t sid[2] = {1, 1}, pid[2] = {0, 3};
    uint32_t tid[2] = {0, 0};
    float tlp[2] = {0, 0};
    uint32_t gs[3] = {0, 2, 2}, gsrc[2] = {0, 1};
    assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 2, tid, tlp, 1, pid, 2, gs, gsrc, 1, oid,
                                      olp, rule, NULL, &err), 0);
    assert_int_equal(rule[0], FC_XFER_ONEHOT);
    assert_int_equal(oid[0], 3);
    assert_int_equal(rule[1], FC_XFER_EMPTY); /* last position, empty group */
  }
  /* A group pointing outside the source is an error */
  {
    uint32_t sid[1] = {0}, pid[1] = {0}, tid[1] = {0};
    float tlp[1] = {0};
    uint32_t gs[2] = {0, 1}, gsrc[1] = {5};
    assert_int_equal(fc_fuse_transfer(&s.v, &p.v, &m, sid, 1, tid, tlp, 1, pid, 1, gs, gsrc, 1, oid,
                                      olp, rule, NULL, &err), FC_EINVAL);
  }
}

static void test_ce_fallback(void **state) {
  (void)state;
  uint32_t ids[3] = {7, 8, 9};
  uint8_t mask[3] = {0, 1, 1};
  uint32_t tid[6] = {8, 1, 2, 3, 0, 0};
  float tlp[6] = {logf(0.5f), logf(0.3f), logf(0.4f), logf(0.3f), -INFINITY, -INFINITY};
  fc_topk_ex_t ex = {.n = 3, .ids = ids, .mask = mask, .top_ids = tid, .top_lp = tlp, .mean_ce = NAN};
  /* position 0: gold 8 present, p = 0.5; position 1: gold 9 absent, left mass 0.3 */
  float want = (float)((-log(0.5) - log(0.3)) / 2);
  assert_float_equal(fc_fuse_seq_ce(&ex, 2, 1e-6f), want, 1e-5);
  assert_float_equal(fc_fuse_ce(&ex, 2, 1e-6f), want, 1e-5);
  ex.mean_ce = 1.25f; /* the stored number is authoritative */
  assert_float_equal(fc_fuse_ce(&ex, 2, 1e-6f), 1.25f, 0);
  /* full mass on other ids: the floor */
  tlp[2] = 0;
  tlp[3] = -INFINITY;
  assert_float_equal(fc_fuse_seq_ce(&ex, 2, 1e-6f), (float)((-log(0.5) - log(1e-6)) / 2), 1e-3);
  mask[1] = mask[2] = 0;
  assert_true(isnan(fc_fuse_seq_ce(&ex, 2, 1e-6f)));
}

static void test_mince_avgce(void **state) {
  (void)state;
  uint32_t ids[2] = {1, 2};
  uint8_t mask[2] = {1, 1};
  /* K = 2; three candidates over 2 positions */
  uint32_t t0[4] = {5, 6, 5, 6}, t1[4] = {6, 0, 7, 0}, t2[4] = {9, 8, 9, 8};
  float l0[4] = {logf(0.6f), logf(0.4f), logf(0.3f), logf(0.3f)}; /* second: not normalised */
  float l1[4] = {0, -INFINITY, 0, -INFINITY};
  float l2[4] = {logf(0.5f), logf(0.5f), logf(0.5f), logf(0.5f)};
  fc_topk_ex_t c0 = {.n = 2, .ids = ids, .mask = mask, .top_ids = t0, .top_lp = l0};
  fc_topk_ex_t c1 = c0, c2 = c0;
  c1.top_ids = t1;
  c1.top_lp = l1;
  c2.top_ids = t2;
  c2.top_lp = l2;
  const fc_topk_ex_t *cands[3] = {&c0, &c1, &c2};
  fc_topk_ex_t out = {0};
  fc_err_t err = {0};
  int win;
  float ce[3] = {2.0f, 1.5f, NAN};
  assert_int_equal(fc_fuse_combine(FC_FUSE_MINCE, cands, ce, 3, 2, &out, &win, &err), 0);
  assert_int_equal(win, 1);
  assert_int_equal(out.tag, 1);
  assert_float_equal(out.mean_ce, 1.5f, 0);
  assert_int_equal(out.top_ids[0], 6);
  assert_float_equal(out.top_lp[0], 0, 1e-6);
  /* lower CE for the pivot: the pivot wins, its second position renormalised (0.3, 0.3 -> 0.5) */
  ce[0] = 1.0f;
  assert_int_equal(fc_fuse_combine(FC_FUSE_MINCE, cands, ce, 3, 2, &out, &win, &err), 0);
  assert_int_equal(win, 0);
  assert_float_equal(expf(out.top_lp[2]), 0.5f, 1e-5);
  assert_float_equal(expf(out.top_lp[3]), 0.5f, 1e-5);
  assert_int_equal(out.top_ids[2], 5); /* tie: smaller id first */
  /* ties go to the lower index */
  ce[1] = 1.0f;
  assert_int_equal(fc_fuse_combine(FC_FUSE_MINCE, cands, ce, 3, 2, &out, &win, &err), 0);
  assert_int_equal(win, 0);
  /* AvgCE: w = softmax(exp(-ce)) over the two finite candidates */
  ce[0] = 1.0f;
  ce[1] = 2.0f;
  assert_int_equal(fc_fuse_combine(FC_FUSE_AVGCE, cands, ce, 3, 2, &out, &win, &err), 0);
  assert_int_equal(win, -1);
  double r0 = exp(-1.0), r1 = exp(-2.0);
  double w0 = exp(r0) / (exp(r0) + exp(r1)), w1 = 1 - w0;
  /* position 0: id 5: w0*0.6, id 6: w0*0.4 + w1*1 */
  assert_int_equal(out.top_ids[0], 6);
  assert_float_equal(expf(out.top_lp[0]), w0 * 0.4 + w1, 1e-5);
  assert_int_equal(out.top_ids[1], 5);
  assert_float_equal(expf(out.top_lp[1]), w0 * 0.6, 1e-5);
  assert_float_equal(out.mean_ce, w0 * 1 + w1 * 2, 1e-5);
  /* position 1: 5: w0*.5, 6: w0*.5, 7: w1 -> K=2 keeps 7 and 5, renormalised */
  double a = w1, b = w0 * 0.5;
  assert_int_equal(out.top_ids[2], w1 > b ? 7 : 5);
  assert_float_equal(expf(out.top_lp[2]), (a > b ? a : b) / (a + b), 1e-5);
  assert_float_equal(mass(out.top_lp + 2, 2), 1, 1e-5);
  /* source alone: the last candidate whatever the CEs (here the highest, 2 against 1) */
  ce[2] = 2.0f;
  assert_int_equal(fc_fuse_combine(FC_FUSE_SOURCE, cands, ce, 3, 2, &out, &win, &err), 0);
  assert_int_equal(win, 2);
  assert_int_equal(out.tag, 2);
  assert_float_equal(out.mean_ce, 2.0f, 0);
  /* candidates over other tokens are refused */
  uint32_t ids2[2] = {1, 3};
  c2.ids = ids2;
  assert_int_equal(fc_fuse_combine(FC_FUSE_MINCE, cands, ce, 3, 2, &out, &win, &err), FC_EMISMATCH);
  fc_topk_ex_free(&out);
  fc_fuse_method_t mt;
  assert_int_equal(fc_fuse_method_parse("avgce", &mt), 0);
  assert_int_equal(mt, FC_FUSE_AVGCE);
  assert_int_equal(fc_fuse_method_parse("source", &mt), 0);
  assert_int_equal(mt, FC_FUSE_SOURCE);
  assert_int_equal(fc_fuse_method_parse("max", &mt), FC_EINVAL);
}

/* ---- end to end on synthetic stores ----------------------------------------------------- */

static fc_vocab_t synth_as_vocab(const synth_vocab_t *s) {
  uint32_t *start = fc_xmalloc(((size_t)s->n + 1) * 4), len = 0;
  for (uint32_t i = 0; i < s->n; i++) start[i] = len, len += s->len[i];
  start[s->n] = len;
  char *b = fc_xmalloc(len + 1);
  for (uint32_t i = 0; i < s->n; i++) memcpy(b + start[i], s->piece[i], s->len[i]);
  return (fc_vocab_t){s->n, b, start};
}

/* A store of ndoc documents tokenized by v, with "model" distributions that put most mass on
 * the true next token (so alignment-transferred distributions can be checked). */
static void make_store(const char *path, const synth_vocab_t *v, int ndoc, uint32_t k, float ce_base) {
  fc_err_t err = {0};
  fc_topk_writer_t *w = NULL;
  fc_topk_info_t info = {.model_id = "synth", .tok_hash = v->n, .k = k, .vocab = v->n};
  assert_int_equal(fc_topk_writer_new(&w, path, &info, &err), 0);
  fc_topk_ex_t ex = {0};
  static uint32_t ids[4096], st[4096];
  for (int d = 0; d < ndoc; d++) {
    uint32_t len;
    char *t = synth_text((uint64_t)d + 500, 600, &len);
    uint32_t n = synth_encode(v, t, len, ids, st);
    fc_topk_ex_reserve(&ex, n, k);
    ex.n = n;
    memcpy(ex.ids, ids, n * 4);
    for (uint32_t i = 0; i < n; i++) {
      ex.mask[i] = i > n / 3;
      for (uint32_t x = 0; x < k; x++) {
        ex.top_ids[i * k + x] = x == 0 && i + 1 < n ? ids[i + 1] : (ids[i] + 1 + x * 7) % v->n;
        ex.top_lp[i * k + x] = x == 0 ? logf(0.7f) : logf(0.3f / (float)k);
      }
    }
    ex.mean_ce = ce_base + (float)(d % 3) * 0.5f;
    assert_int_equal(fc_topk_writer_add(w, &ex, &err), 0);
    free(t);
  }
  assert_int_equal(fc_topk_writer_finish(w, &err), 0);
  fc_topk_writer_destroy(&w);
  fc_topk_ex_free(&ex);
}

static void test_stores_end_to_end(void **state) {
  (void)state;
  synth_vocab_t va, vb;
  synth_vocab_build(&va, 0, 32000);
  synth_vocab_build(&vb, 1, 32000);
  fc_vocab_t sv = synth_as_vocab(&va), pv = synth_as_vocab(&vb);
  char *src = fc_path_join(g_dir, "src.topk"), *piv = fc_path_join(g_dir, "piv.topk");
  char *al = fc_path_join(g_dir, "al.topk"), *fused = fc_path_join(g_dir, "fused.topk");
  make_store(src, &va, 6, 4, 1.0f);  /* source CE 1.0, 1.5, 2.0, ... */
  make_store(piv, &vb, 6, 4, 1.25f); /* pivot CE 1.25, 1.75, 2.25, ... */
  fc_err_t err = {0};
  fc_vcount_t *c = fc_vcount_new(sv.n, pv.n, fc_vocab_hash(&sv), fc_vocab_hash(&pv));
  assert_int_equal(fc_fuse_count_stores(c, src, piv, &sv, &pv, FC_ALIGN_DEFAULT_MARGIN, NULL, NULL, &err), 0);
  assert_true(fc_vcount_total(c) > 500);
  fc_vmap_t *m = NULL;
  assert_int_equal(fc_vmap_build(&m, FC_VMAP_STATS, c, &sv, &pv, 2, &err), 0);
  fc_xfer_stats_t st = {0};
  assert_int_equal(fc_fuse_align_store(src, piv, &sv, &pv, m, al, FC_ALIGN_DEFAULT_MARGIN, &st, NULL, NULL, &err), 0);
  uint64_t carried = st.by_rule[1] + st.by_rule[2] + st.by_rule[3], total = carried + st.by_rule[4];
  print_message("transfer: one %lu suffix %lu cover %lu one-hot %lu empty %lu\n",
                (unsigned long)st.by_rule[1], (unsigned long)st.by_rule[2], (unsigned long)st.by_rule[3],
                (unsigned long)st.by_rule[4], (unsigned long)st.by_rule[0]);
  assert_true(carried > total / 2);
  /* every aligned distribution sums to 1 within 1e-3 after storage; where the source's top entry
   * was the true next source token and the pivot token is carried one-to-one with the same text,
   * the top pivot entry usually is the next pivot token */
  fc_topk_reader_t *r = NULL, *rp = NULL;
  assert_int_equal(fc_topk_open(&r, al, &err), 0);
  assert_int_equal(fc_topk_open(&rp, piv, &err), 0);
  assert_int_equal(fc_topk_count(r), 6);
  fc_topk_ex_t ex = {0}, ep = {0};
  uint64_t agree = 0, checked = 0;
  for (uint64_t x = 0; x < 6; x++) {
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    assert_int_equal(fc_topk_get(rp, x, &ep, &err), 0);
    assert_int_equal(ex.n, ep.n);
    assert_memory_equal(ex.ids, ep.ids, ex.n * 4);
    assert_float_equal(ex.mean_ce, 1.0f + (float)(x % 3) * 0.5f, 0);
    for (uint32_t j = 0; j + 1 < ex.n; j++) {
      double s = mass(ex.top_lp + j * 4, 4);
      assert_true(fabs(s - 1) < 1e-3);
      checked++;
      agree += ex.top_ids[j * 4] == ep.ids[j + 1];
    }
  }
  print_message("top aligned entry == next pivot token at %.1f%% of positions\n", 100.0 * agree / checked);
  assert_true(agree > checked / 2);
  /* fuse: MinCE picks the source (CE 1.0 + 0.5 (d%3)) over the pivot (1.25 + ...) everywhere */
  fc_fuse_summary_t sum;
  const char *als[1] = {al};
  assert_int_equal(fc_fuse_stores(FC_FUSE_MINCE, piv, als, 1, fused, 1e-6f, &sum, NULL, NULL, &err), 0);
  assert_int_equal(sum.examples, 6);
  assert_int_equal(sum.wins[1], 6);
  fc_topk_reader_t *rf = NULL;
  fc_topk_ex_t ef = {0};
  assert_int_equal(fc_topk_open(&rf, fused, &err), 0);
  for (uint64_t x = 0; x < 6; x++) {
    assert_int_equal(fc_topk_get(rf, x, &ef, &err), 0);
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    assert_int_equal(ef.tag, 1);
    assert_memory_equal(ef.top_ids, ex.top_ids, (size_t)ex.n * 4 * 4);
    for (uint32_t e = 0; e < ex.n * 4; e++)
      if (ex.top_lp[e] > -INFINITY) assert_float_equal(ef.top_lp[e], ex.top_lp[e], 2 * FC_TOPK_LP_STEP);
  }
  /* AvgCE output is a valid distribution everywhere */
  assert_int_equal(fc_fuse_stores(FC_FUSE_AVGCE, piv, als, 1, fused, 1e-6f, &sum, NULL, NULL, &err), 0);
  fc_topk_close(&rf);
  assert_int_equal(fc_topk_open(&rf, fused, &err), 0);
  for (uint64_t x = 0; x < 6; x++) {
    assert_int_equal(fc_topk_get(rf, x, &ef, &err), 0);
    for (uint32_t j = 0; j + 1 < ef.n; j++) assert_true(fabs(mass(ef.top_lp + j * 4, 4) - 1) < 1e-3);
  }
  /* a store of another shape is refused with a message naming it */
  assert_int_equal(fc_fuse_stores(FC_FUSE_MINCE, piv, (const char *[]){src}, 1, fused, 1e-6f, &sum, NULL, NULL, &err),
                   FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "src.topk"));
  fc_topk_close(&rf);
  fc_topk_close(&r);
  fc_topk_close(&rp);
  fc_topk_ex_free(&ex);
  fc_topk_ex_free(&ep);
  fc_topk_ex_free(&ef);
  fc_vmap_destroy(&m);
  fc_vcount_destroy(&c);
  unlink(src);
  unlink(piv);
  unlink(al);
  unlink(fused);
  free(src);
  free(piv);
  free(al);
  free(fused);
  fc_vocab_free(&sv);
  fc_vocab_free(&pv);
  synth_vocab_free(&va);
  synth_vocab_free(&vb);
}

int main(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/fc_fuse_XXXXXX");
  if (!mkdtemp(g_dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rule_one_merge_renorm),
      cmocka_unit_test(test_rule_onehot_next),
      cmocka_unit_test(test_rule_suffix_end_and_cover),
      cmocka_unit_test(test_ce_fallback),
      cmocka_unit_test(test_mince_avgce),
      cmocka_unit_test(test_stores_end_to_end),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  rmdir(g_dir);
  return rc;
}
