/* The alignment stages end to end on two tiny random models with different tokenizers (a
 * byte-level pivot, a SentencePiece-style source, both trained here): logits over the same data,
 * counts per shard and merged, map, align, fuse; checked against independent computations
 * (full-logits CE, the chat spans), for determinism, and for refusing stores that disagree. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_bpe_train.h"
#include "fc_model.h"
#include "fc_st.h"
#include "fc_stage.h"
#include "fc_gendata.h"
#include "fc_topk.h"
#include "test_support.h"

static char g_dir[512];
static char *g_data, *g_data2, *g_piv, *g_src; /* data files, model dirs */

static char *P(const char *name) { return fc_path_join(g_dir, name); }

static int setup(void **state) {
  (void)state;
  fc_err_t err = {0};
  g_data = P("data.jsonl");
  g_data2 = P("data2.jsonl");
  fc_gendata_opts_t o = {.count = 24, .mix = {1, 1, 1, 1}, .split = FC_GENDATA_TRAIN, .seed = 3, .world_seed = 7,
                     .max_turns = 2};
  if (fc_gendata_write(&o, g_data, &err)) return -1;
  o.seed = 4; /* same row count, other texts */
  if (fc_gendata_write(&o, g_data2, &err)) return -1;
  char *corpus;
  size_t clen;
  if (fc_read_file(g_data, &corpus, &clen, &err)) return -1;
  g_piv = P("pivot");
  g_src = P("source");
  test_make_model(g_piv, FC_TOK_BYTELEVEL, 420, corpus, clen, 11);
  test_make_model(g_src, FC_TOK_SENTENCEPIECE, 460, corpus, clen, 12);
  free(corpus);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
  if (system(cmd)) return -1;
  free(g_data);
  free(g_data2);
  free(g_piv);
  free(g_src);
  return 0;
}

static fc_stage_logits_opts_t lopts(const char *model, const char *data, const char *out, uint32_t shard,
                                    uint32_t nsh) {
  fc_stage_logits_opts_t o = {.model_dir = model, .out_path = out, .top_k = 8, .batch_size = 5, .threads = 1};
  o.data = (fc_stage_data_t){.path = data, .pivot_tok = g_piv, .tmpl = FC_CHAT_AUTO, .shard = shard,
                             .n_shards = nsh, .max_len = 512};
  return o;
}

static void logits(const char *model, const char *data, const char *out, uint32_t shard, uint32_t nsh) {
  fc_err_t err = {0};
  fc_stage_logits_opts_t o = lopts(model, data, out, shard, nsh);
  fc_stage_logits_stats_t st;
  int rc = fc_stage_logits(&o, &st, NULL, NULL, &err);
  if (rc) print_message("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(st.cut, 0);
}

static int files_equal(const char *a, const char *b) {
  char *x, *y;
  size_t lx, ly;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(a, &x, &lx, &err), 0);
  assert_int_equal(fc_read_file(b, &y, &ly, &err), 0);
  int eq = lx == ly && memcmp(x, y, lx) == 0;
  free(x);
  free(y);
  return eq;
}

static double mass(const float *lp, uint32_t k) {
  double s = 0;
  for (uint32_t i = 0; i < k; i++)
    if (lp[i] > -INFINITY) s += exp(lp[i]);
  return s;
}

/* mean_ce and the top-K of a store example against the model's full logits. */
static void check_against_full_logits(const char *model, const char *store) {
  fc_err_t err = {0};
  fc_model_t *m = NULL;
  assert_int_equal(fc_model_load(&m, model, &err), 0);
  fc_topk_reader_t *r = NULL;
  assert_int_equal(fc_topk_open(&r, store, &err), 0);
  int V = fc_model_config(m)->vocab_size;
  uint32_t K = fc_topk_k(r);
  fc_topk_ex_t ex = {0};
  for (uint64_t x = 0; x < 3; x++) {
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    int32_t *ids = malloc(ex.n * sizeof *ids);
    for (uint32_t i = 0; i < ex.n; i++) ids[i] = (int32_t)ex.ids[i];
    const float *lg = fc_model_forward(m, ids, 1, (int)ex.n, 0, &err);
    assert_non_null(lg);
    double ce = 0;
    int cnt = 0;
    for (uint32_t i = 0; i < ex.n; i++) {
      const float *row = lg + (size_t)i * V;
      double mx = -INFINITY, s = 0;
      for (int v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
      for (int v = 0; v < V; v++) s += exp(row[v] - mx);
      double lse = mx + log(s);
      if (i + 1 < ex.n && ex.mask[i + 1]) {
        ce -= row[ex.ids[i + 1]] - lse;
        cnt++;
      }
      /* the first stored entry is the arg-max, its log-prob within the quantisation step */
      int am = 0;
      for (int v = 1; v < V; v++) am = row[v] > row[am] ? v : am;
      assert_float_equal(ex.top_lp[(size_t)i * K], row[am] - lse, 1e-3);
      assert_true(row[ex.top_ids[(size_t)i * K]] >= row[am] - 1e-5f);
      assert_true(mass(ex.top_lp + (size_t)i * K, K) <= 1 + 1e-3);
    }
    assert_true(cnt > 0);
    assert_float_equal(ex.mean_ce, ce / cnt, 1e-3 * (ce / cnt));
    free(ids);
  }
  fc_topk_ex_free(&ex);
  fc_topk_close(&r);
  fc_model_destroy(&m);
}

/* Masks: on the byte-level pivot, the masked tokens spell exactly the assistant turns (each
 * followed by <|im_end|>); on the source, a token is masked iff it starts inside a response. */
static void check_masks(const char *store, const char *tokdir, int exact_text) {
  fc_err_t err = {0};
  fc_tok_t *tok = NULL;
  assert_int_equal(fc_tok_load(&tok, tokdir, &err), 0);
  fc_topk_reader_t *r = NULL;
  assert_int_equal(fc_topk_open(&r, store, &err), 0);
  char *buf;
  size_t blen;
  assert_int_equal(fc_read_file(g_data, &buf, &blen, &err), 0);
  fc_topk_ex_t ex = {0};
  char *line = buf;
  for (uint64_t x = 0; x < fc_topk_count(r); x++) {
    char *nl = strchr(line, '\n');
    size_t ll = nl ? (size_t)(nl - line) : strlen(line);
    fc_chat_conv_t conv = {0};
    assert_int_equal(fc_chat_parse_sharegpt(line, ll, &conv, &err), 0);
    char want[8192] = "", got[8192] = "";
    for (size_t i = 0; i < conv.n; i++)
      if (conv.msgs[i].role == FC_ROLE_ASSISTANT) {
        strcat(want, conv.msgs[i].text);
        strcat(want, "<|im_end|>");
      }
    char *text;
    size_t tl, nsp;
    fc_chat_span_t *sp;
    assert_int_equal(fc_chat_render(FC_CHAT_CHATML, conv.msgs, conv.n, &text, &tl, &sp, &nsp, &err), 0);
    free(sp);
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    int32_t *ids;
    uint32_t *off;
    size_t n;
    assert_int_equal(fc_tok_encode(tok, text, tl, FC_TOK_PARSE_SPECIAL, &ids, &off, &n, &err), 0);
    assert_int_equal(n, ex.n);
    size_t gl = 0;
    uint32_t masked = 0;
    for (size_t i = 0; i < n; i++) {
      assert_int_equal((uint32_t)ids[i], ex.ids[i]);
      if (ex.mask[i]) {
        gl += fc_tok_token_text(tok, ids[i], got + gl, sizeof got - gl - 1);
        masked++;
      }
      /* independent of the spans: inside a response iff the last "<|im_start|>" before the
       * token's start opened an assistant turn and no "<|im_end|>" closed it before the start */
      const char *open = NULL, *close = NULL;
      for (const char *p = text; p < text + off[i]; p++) {
        if (!strncmp(p, "<|im_start|>assistant\n", 22) && p + 22 <= text + off[i]) open = p + 22;
        if (!strncmp(p, "<|im_end|>", 10) && p + 10 <= text + off[i]) close = p;
      }
      int inside = open && (!close || close < open);
      if (ex.mask[i] != inside) {
        char tt[64];
        size_t l = fc_tok_token_text(tok, ids[i], tt, 63);
        tt[l < 63 ? l : 63] = 0;
        print_message("example %lu token %zu '%s' at %u: mask %d, expected %d\n", (unsigned long)x, i, tt, off[i],
                      ex.mask[i], inside);
      }
      assert_int_equal(ex.mask[i], inside);
    }
    got[gl] = 0;
    assert_true(masked > 0);
    if (exact_text) assert_string_equal(got, want);
    free(ids);
    free(off);
    free(text);
    fc_chat_conv_free(&conv);
    line = nl ? nl + 1 : line + ll;
  }
  free(buf);
  fc_topk_ex_free(&ex);
  fc_topk_close(&r);
  fc_tok_destroy(&tok);
}

static void check_normalised(const char *store) {
  fc_err_t err = {0};
  fc_topk_reader_t *r = NULL;
  assert_int_equal(fc_topk_open(&r, store, &err), 0);
  fc_topk_ex_t ex = {0};
  uint32_t K = fc_topk_k(r);
  uint64_t positions = 0;
  for (uint64_t x = 0; x < fc_topk_count(r); x++) {
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    for (uint32_t j = 0; j + 1 < ex.n; j++) {
      double s = mass(ex.top_lp + (size_t)j * K, K);
      if (fabs(s - 1) > 1e-3) print_message("%s example %lu pos %u: mass %f\n", store, (unsigned long)x, j, s);
      assert_true(fabs(s - 1) < 1e-3);
      positions++;
    }
  }
  assert_true(positions > 100);
  fc_topk_ex_free(&ex);
  fc_topk_close(&r);
}

static int cancel_at_half(void *ctx, double frac, const char *msg) {
  (void)msg;
  (*(int *)ctx)++;
  return frac >= 0.5;
}

/* A copy of a store with every mean_ce replaced. */
static void with_ce(const char *in, const char *out, float ce) {
  fc_err_t err = {0};
  fc_topk_reader_t *r = NULL;
  assert_int_equal(fc_topk_open(&r, in, &err), 0);
  fc_topk_info_t info = {.model_id = fc_topk_model_id(r), .tok_hash = fc_topk_tok_hash(r), .k = fc_topk_k(r),
                         .vocab = fc_topk_vocab(r)};
  fc_topk_writer_t *w = NULL;
  assert_int_equal(fc_topk_writer_new(&w, out, &info, &err), 0);
  fc_topk_ex_t ex = {0};
  for (uint64_t x = 0; x < fc_topk_count(r); x++) {
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    ex.mean_ce = ce;
    assert_int_equal(fc_topk_writer_add(w, &ex, &err), 0);
  }
  assert_int_equal(fc_topk_writer_finish(w, &err), 0);
  fc_topk_writer_destroy(&w);
  fc_topk_ex_free(&ex);
  fc_topk_close(&r);
}

/* The fused store equals the given candidate's distributions everywhere. */
static void check_fused_is(const char *fused, const char *cand) {
  fc_err_t err = {0};
  fc_topk_reader_t *a = NULL, *b = NULL;
  assert_int_equal(fc_topk_open(&a, fused, &err), 0);
  assert_int_equal(fc_topk_open(&b, cand, &err), 0);
  fc_topk_ex_t ea = {0}, eb = {0};
  uint32_t K = fc_topk_k(a);
  for (uint64_t x = 0; x < fc_topk_count(a); x++) {
    assert_int_equal(fc_topk_get(a, x, &ea, &err), 0);
    assert_int_equal(fc_topk_get(b, x, &eb, &err), 0);
    for (uint32_t j = 0; j + 1 < ea.n; j++) {
      /* the candidate renormalised over its kept entries */
      double s = mass(eb.top_lp + (size_t)j * K, K);
      for (uint32_t k = 0; k < K; k++) {
        size_t e = (size_t)j * K + k;
        if (eb.top_lp[e] == -INFINITY) continue;
        uint32_t f = 0; /* the same id in the fused entries (the order of near-ties may differ) */
        while (f < K && ea.top_ids[(size_t)j * K + f] != eb.top_ids[e]) f++;
        assert_true(f < K);
        assert_float_equal(ea.top_lp[(size_t)j * K + f], eb.top_lp[e] - log(s), 3 * FC_TOPK_LP_STEP);
      }
    }
  }
  fc_topk_ex_free(&ea);
  fc_topk_ex_free(&eb);
  fc_topk_close(&a);
  fc_topk_close(&b);
}

static void test_pipeline(void **state) {
  (void)state;
  fc_err_t err = {0};
  char *pt = P("piv.topk"), *st = P("src.topk"), *pt2 = P("piv_again.topk");
  double t0 = fc_now();
  logits(g_piv, g_data, pt, 0, 1);
  logits(g_src, g_data, st, 0, 1);
  print_message("logits of both models: %.2f s\n", fc_now() - t0);
  check_against_full_logits(g_piv, pt);
  check_against_full_logits(g_src, st);
  check_masks(pt, g_piv, 1);
  check_masks(st, g_src, 0);
  /* another batch size, same bytes */
  fc_stage_logits_opts_t o = lopts(g_piv, g_data, pt2, 0, 1);
  o.batch_size = 1;
  assert_int_equal(fc_stage_logits(&o, NULL, NULL, NULL, &err), 0);
  int same_batch1 = files_equal(pt, pt2);
  print_message("batch size 1 vs 5: %s bytes\n", same_batch1 ? "identical" : "different");
  logits(g_piv, g_data, pt2, 0, 1);
  assert_true(files_equal(pt, pt2));
  /* the stores describe the data */
  fc_stage_data_t d = {.path = g_data, .pivot_tok = g_piv, .n_shards = 1, .max_len = 512};
  assert_int_equal(fc_stage_check_store(st, g_src, &d, &err), 0);
  assert_int_equal(fc_stage_check_store(pt, g_piv, &d, &err), 0);
  d.path = g_data2;
  assert_int_equal(fc_stage_check_store(st, g_src, &d, &err), FC_EMISMATCH);

  /* counts: from the stores, from the data, and per shard merged */
  char *cw = P("whole.counts"), *cd = P("data.counts"), *c0 = P("s0.counts"), *c1 = P("s1.counts");
  char *cm = P("merged.counts");
  fc_stage_count_opts_t co = {.src_tok = g_src, .piv_tok = g_piv, .src_topk = st, .piv_topk = pt, .out_path = cw};
  assert_int_equal(fc_stage_vocab_count(&co, NULL, NULL, &err), 0);
  fc_stage_count_opts_t cdo = {.src_tok = g_src, .piv_tok = g_piv, .out_path = cd,
                               .data = {.path = g_data, .pivot_tok = g_piv, .n_shards = 1, .max_len = 512}};
  assert_int_equal(fc_stage_vocab_count(&cdo, NULL, NULL, &err), 0);
  for (uint32_t s = 0; s < 2; s++) {
    char *sp = P(s ? "p1.topk" : "p0.topk"), *ss = P(s ? "q1.topk" : "q0.topk");
    logits(g_piv, g_data, sp, s, 2);
    logits(g_src, g_data, ss, s, 2);
    fc_stage_count_opts_t cs = {.src_tok = g_src, .piv_tok = g_piv, .src_topk = ss, .piv_topk = sp,
                                .out_path = s ? c1 : c0};
    assert_int_equal(fc_stage_vocab_count(&cs, NULL, NULL, &err), 0);
    if (s == 0) {
      /* a shard's store against the whole data's: different example counts */
      fc_stage_count_opts_t bad = cs;
      bad.piv_topk = pt;
      bad.out_path = cm;
      assert_int_equal(fc_stage_vocab_count(&bad, NULL, NULL, &err), FC_EMISMATCH);
      assert_non_null(strstr(err.msg, "examples"));
      assert_false(fc_path_exists(cm));
    }
    free(sp);
    free(ss);
  }
  const char *parts[2] = {c0, c1};
  assert_int_equal(fc_stage_vocab_merge(parts, 2, cm, &err), 0);
  fc_vcount_t *a = NULL, *b = NULL, *c = NULL, *s0 = NULL;
  assert_int_equal(fc_vcount_load(&a, cw, &err), 0);
  assert_int_equal(fc_vcount_load(&b, cm, &err), 0);
  assert_int_equal(fc_vcount_load(&c, cd, &err), 0);
  assert_int_equal(fc_vcount_load(&s0, c0, &err), 0);
  assert_true(fc_vcount_total(a) > 1000);
  assert_true(fc_vcount_equal(a, b));
  assert_true(fc_vcount_equal(a, c));
  assert_false(fc_vcount_equal(a, s0));
  fc_vcount_destroy(&a);
  fc_vcount_destroy(&b);
  fc_vcount_destroy(&c);
  fc_vcount_destroy(&s0);

  /* map, align, fuse */
  char *mp = P("src.map"), *al = P("src.aligned"), *al2 = P("src.aligned2"), *fu = P("fused.topk");
  char *fu2 = P("fused2.topk");
  assert_int_equal(fc_stage_vocab_map(cm, g_src, g_piv, FC_VMAP_STATS, 1, mp, &err), 0);
  fc_xfer_stats_t xs;
  assert_int_equal(fc_stage_align(st, pt, g_src, g_piv, mp, al, 0, &xs, NULL, NULL, &err), 0);
  uint64_t carried = xs.by_rule[1] + xs.by_rule[2] + xs.by_rule[3];
  print_message("transfer: one %lu suffix %lu cover %lu one-hot %lu empty %lu\n", (unsigned long)xs.by_rule[1],
                (unsigned long)xs.by_rule[2], (unsigned long)xs.by_rule[3], (unsigned long)xs.by_rule[4],
                (unsigned long)xs.by_rule[0]);
  assert_true(carried > xs.by_rule[4]);
  check_normalised(al);
  assert_int_equal(fc_stage_align(st, pt, g_src, g_piv, mp, al2, 0, NULL, NULL, NULL, &err), 0);
  assert_true(files_equal(al, al2));
  const char *als[1] = {al};
  fc_fuse_summary_t sum;
  assert_int_equal(fc_stage_fuse(FC_FUSE_MINCE, pt, als, 1, fu, &sum, NULL, NULL, &err), 0);
  assert_int_equal(sum.examples, 24);
  print_message("MinCE: pivot wins %lu, source wins %lu\n", (unsigned long)sum.wins[0], (unsigned long)sum.wins[1]);
  check_normalised(fu);
  assert_int_equal(fc_stage_fuse(FC_FUSE_MINCE, pt, als, 1, fu2, &sum, NULL, NULL, &err), 0);
  assert_true(files_equal(fu, fu2));
  assert_int_equal(fc_stage_fuse(FC_FUSE_AVGCE, pt, als, 1, fu2, &sum, NULL, NULL, &err), 0);
  check_normalised(fu2);

  /* MinCE by construction: the source (CE 0.5 vs the pivot's 3) wins everything, then the pivot */
  char *pc = P("piv_ce.topk"), *ac = P("al_ce.topk");
  with_ce(pt, pc, 3.0f);
  with_ce(al, ac, 0.5f);
  const char *acs[1] = {ac};
  assert_int_equal(fc_stage_fuse(FC_FUSE_MINCE, pc, acs, 1, fu2, &sum, NULL, NULL, &err), 0);
  assert_int_equal(sum.wins[1], 24);
  check_fused_is(fu2, ac);
  with_ce(pt, pc, 0.25f);
  assert_int_equal(fc_stage_fuse(FC_FUSE_MINCE, pc, acs, 1, fu2, &sum, NULL, NULL, &err), 0);
  assert_int_equal(sum.wins[0], 24);
  check_fused_is(fu2, pc);

  /* the same row count over other texts is refused by the text hashes */
  char *sx = P("src_other.topk"), *ax = P("al_other.topk");
  logits(g_src, g_data2, sx, 0, 1);
  assert_int_equal(fc_stage_align(sx, pt, g_src, g_piv, mp, ax, 0, NULL, NULL, NULL, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "different texts"));
  assert_false(fc_path_exists(ax));
  /* ... and an aligned store of other texts by fuse */
  char *px = P("piv_other.topk");
  logits(g_piv, g_data2, px, 0, 1);
  assert_int_equal(fc_stage_fuse(FC_FUSE_MINCE, px, als, 1, fu2, &sum, NULL, NULL, &err), FC_EMISMATCH);
  /* a map made for other tokenizers */
  assert_int_equal(fc_stage_align(st, pt, g_piv, g_piv, mp, ax, 0, NULL, NULL, NULL, &err), FC_EMISMATCH);

  /* cancellation: FC_ECANCEL and no file */
  int calls = 0;
  char *cx = P("cancelled.topk");
  fc_stage_logits_opts_t oc = lopts(g_src, g_data, cx, 0, 1);
  assert_int_equal(fc_stage_logits(&oc, NULL, cancel_at_half, &calls, &err), FC_ECANCEL);
  assert_true(calls >= 2);
  assert_false(fc_path_exists(cx));
  assert_int_equal(fc_stage_align(st, pt, g_src, g_piv, mp, cx, 0, NULL, cancel_at_half, &calls, &err),
                   FC_ECANCEL);
  assert_false(fc_path_exists(cx));

  char *all[] = {pt, st, pt2, cw, cd, c0, c1, cm, mp, al, al2, fu, fu2, pc, ac, sx, ax, px, cx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

/* Rows longer than max_len are cut at the same text byte for every model, so the stores still
 * pair up; the mask and texts follow the cut. */
static void test_cut(void **state) {
  (void)state;
  fc_err_t err = {0};
  char *pt = P("cut_p.topk"), *st = P("cut_s.topk"), *al = P("cut.aligned"), *mp = P("cut.map");
  fc_stage_logits_opts_t o = lopts(g_piv, g_data, pt, 0, 1);
  o.data.max_len = 24;
  fc_stage_logits_stats_t s;
  assert_int_equal(fc_stage_logits(&o, &s, NULL, NULL, &err), 0);
  assert_true(s.cut > 0);
  assert_true(s.tokens <= 24 * s.examples);
  o.model_dir = g_src;
  o.out_path = st;
  assert_int_equal(fc_stage_logits(&o, &s, NULL, NULL, &err), 0);
  assert_int_equal(s.cut_own, 0);
  assert_int_equal(fc_stage_vocab_map(NULL, g_src, g_piv, FC_VMAP_MINED, 1, mp, &err), 0);
  int rc = fc_stage_align(st, pt, g_src, g_piv, mp, al, 0, NULL, NULL, NULL, &err);
  if (rc) print_message("%s\n", err.msg);
  assert_int_equal(rc, 0);
  fc_stage_data_t d = {.path = g_data, .pivot_tok = g_piv, .n_shards = 1, .max_len = 24};
  assert_int_equal(fc_stage_check_store(st, g_src, &d, &err), 0);
  d.max_len = 25;
  assert_int_equal(fc_stage_check_store(st, g_src, &d, &err), FC_EMISMATCH);
  /* a store cut elsewhere does not pair with it */
  char *full = P("cut_full.topk");
  logits(g_src, g_data, full, 0, 1);
  assert_int_equal(fc_stage_align(full, pt, g_src, g_piv, mp, al, 0, NULL, NULL, NULL, &err), FC_EMISMATCH);
  unlink(full);
  free(full);
  free(pt);
  free(st);
  free(al);
  free(mp);
}

static void test_bad_input(void **state) {
  (void)state;
  fc_err_t err = {0};
  char *bad = P("bad.jsonl"), *out = P("bad.topk");
  FILE *fp = fopen(bad, "w");
  fputs("{\"text\": \"hello\"}\n\n{\"conversations\": 5}\n", fp);
  fclose(fp);
  fc_stage_logits_opts_t o = lopts(g_piv, bad, out, 0, 1);
  int rc = fc_stage_logits(&o, NULL, NULL, NULL, &err);
  assert_true(rc < 0);
  assert_non_null(strstr(err.msg, "line 3"));
  assert_false(fc_path_exists(out));
  /* {"text"} rows alone are fine: loss on every token */
  fp = fopen(bad, "w");
  fputs("{\"text\": \"Ada has 3 apples\"}\n", fp);
  fclose(fp);
  assert_int_equal(fc_stage_logits(&o, NULL, NULL, NULL, &err), 0);
  fc_topk_reader_t *r = NULL;
  fc_topk_ex_t ex = {0};
  assert_int_equal(fc_topk_open(&r, out, &err), 0);
  assert_int_equal(fc_topk_get(r, 0, &ex, &err), 0);
  for (uint32_t i = 0; i < ex.n; i++) assert_int_equal(ex.mask[i], 1);
  assert_true(isfinite(ex.mean_ce));
  fc_topk_close(&r);
  fc_topk_ex_free(&ex);
  o.model_dir = "/nonexistent";
  assert_true(fc_stage_logits(&o, NULL, NULL, NULL, &err) < 0);
  unlink(bad);
  unlink(out);
  free(bad);
  free(out);
}

/* ---- logits-import ---- */

static void export_safetensors(const char *store, const char *path) {
  fc_err_t err = {0};
  fc_topk_reader_t *r = NULL;
  assert_int_equal(fc_topk_open(&r, store, &err), 0);
  uint32_t K = fc_topk_k(r);
  uint64_t E = fc_topk_count(r), N = 0;
  for (uint64_t x = 0; x < E; x++) N += fc_topk_len(r, x);
  int32_t *off = malloc((E + 1) * sizeof *off), *ids = malloc(N * sizeof *ids), *ti = malloc(N * K * sizeof *ti);
  float *tl = malloc(N * K * sizeof *tl);
  fc_topk_ex_t ex = {0};
  off[0] = 0;
  for (uint64_t x = 0; x < E; x++) {
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    for (uint32_t i = 0; i < ex.n; i++) {
      size_t t = (size_t)off[x] + i;
      ids[t] = (int32_t)ex.ids[i];
      for (uint32_t k = 0; k < K; k++) {
        float lp = ex.top_lp[(size_t)i * K + k];
        ti[t * K + k] = lp == -INFINITY ? -1 : (int32_t)ex.top_ids[(size_t)i * K + k];
        tl[t * K + k] = lp;
      }
    }
    off[x + 1] = off[x] + (int32_t)ex.n;
  }
  fc_st_spec_t sp[4] = {{.name = "offsets", .dtype = FC_DT_I32, .ndim = 1, .shape = {(int64_t)E + 1}},
                        {.name = "ids", .dtype = FC_DT_I32, .ndim = 1, .shape = {(int64_t)N}},
                        {.name = "topk_ids", .dtype = FC_DT_I32, .ndim = 2, .shape = {(int64_t)N, K}},
                        {.name = "topk_logprobs", .dtype = FC_DT_F32, .ndim = 2, .shape = {(int64_t)N, K}}};
  fc_st_writer_t *w = NULL;
  assert_int_equal(fc_st_writer_new(&w, path, sp, 4, NULL, &err), 0);
  assert_int_equal(fc_st_writer_put_raw(w, 0, off, (E + 1) * 4, &err), 0);
  assert_int_equal(fc_st_writer_put_raw(w, 1, ids, N * 4, &err), 0);
  assert_int_equal(fc_st_writer_put_raw(w, 2, ti, N * K * 4, &err), 0);
  assert_int_equal(fc_st_writer_put_f32(w, 3, tl, &err), 0);
  assert_int_equal(fc_st_writer_finish(&w, &err), 0);
  free(off), free(ids), free(ti), free(tl);
  fc_topk_ex_free(&ex);
  fc_topk_close(&r);
}

static int import(const char *data, const char *in, const char *out, fc_err_t *err) {
  fc_stage_import_opts_t o = {.tok_path = g_src, .in_path = in, .out_path = out};
  o.data = (fc_stage_data_t){.path = data, .pivot_tok = g_piv, .tmpl = FC_CHAT_AUTO, .shard = 0, .n_shards = 1,
                             .max_len = 512};
  return fc_stage_logits_import(&o, NULL, err);
}

/* Distributions exported from a store the logits stage made and imported back give the same
 * store (but mean_ce, which the import takes from target_logprobs); texts that differ from the
 * fusion set, missing rows and bad values are refused. */
static void test_import(void **state) {
  (void)state;
  fc_err_t err = {0};
  char *dumped = P("imp.src.topk"), *jl = P("imp.jsonl"), *stp = P("imp.safetensors");
  char *out_j = P("imp.j.topk"), *out_s = P("imp.s.topk");
  logits(g_src, g_data, dumped, 0, 1);
  test_export_jsonl(dumped, jl, 1, -1, 0, 0);
  export_safetensors(dumped, stp);
  int rc = import(g_data, jl, out_j, &err);
  if (rc) print_message("%s\n", err.msg);
  assert_int_equal(rc, 0);
  rc = import(g_data, stp, out_s, &err);
  if (rc) print_message("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(fc_stage_check_store(out_j, g_src, &(fc_stage_data_t){.path = g_data, .pivot_tok = g_piv,
                                         .tmpl = FC_CHAT_AUTO, .n_shards = 1, .max_len = 512}, &err), 0);
  const char *outs[2] = {out_j, out_s};
  fc_topk_reader_t *a = NULL, *b = NULL;
  assert_int_equal(fc_topk_open(&a, dumped, &err), 0);
  for (int v = 0; v < 2; v++) {
    assert_int_equal(fc_topk_open(&b, outs[v], &err), 0);
    assert_int_equal(fc_topk_count(a), fc_topk_count(b));
    assert_int_equal(fc_topk_k(a), fc_topk_k(b));
    assert_true(fc_topk_tok_hash(a) == fc_topk_tok_hash(b));
    fc_topk_ex_t x = {0}, y = {0};
    uint32_t K = fc_topk_k(a);
    for (uint64_t e = 0; e < fc_topk_count(a); e++) {
      assert_int_equal(fc_topk_get(a, e, &x, &err), 0);
      assert_int_equal(fc_topk_get(b, e, &y, &err), 0);
      test_assert_topk_ex_equal(&x, &y, K);
      if (v == 1) assert_true(isnan(y.mean_ce));
      else assert_true(isnan(x.mean_ce) ? isnan(y.mean_ce) : fabsf(y.mean_ce - 1.0f) < 1e-6f);
    }
    fc_topk_ex_free(&x), fc_topk_ex_free(&y);
    fc_topk_close(&b);
  }
  fc_topk_close(&a);
  /* Refusals; nothing is left at the output path. */
  char *bad = P("imp.bad.jsonl"), *out_bad = P("imp.bad.topk");
  assert_int_equal(import(g_data2, jl, out_bad, &err), FC_EMISMATCH); /* other texts, same row count */
  assert_non_null(strstr(err.msg, "texts"));
  test_export_jsonl(dumped, bad, 0, 3, 0, 0);
  assert_int_equal(import(g_data, bad, out_bad, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "example 3"));
  test_export_jsonl(dumped, bad, 0, -1, 1, 0);
  assert_int_equal(import(g_data, bad, out_bad, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "examples"));
  test_export_jsonl(dumped, bad, 0, -1, 0, 1);
  assert_int_equal(import(g_data, bad, out_bad, &err), FC_EFORMAT);
  assert_int_equal(import(g_data, "/nonexistent.jsonl", out_bad, &err), FC_EIO);
  assert_int_equal(import(g_data, dumped, out_bad, &err), FC_EINVAL); /* neither .jsonl nor .safetensors */
  assert_false(fc_path_exists(out_bad));
  const char *junk[] = {"{\"ids\": [1,2], \"topk_ids\": [[1]], \"topk_logprobs\": [[-1]]}\n", "[1,2]\n", "\n"};
  for (int j = 0; j < 3; j++) {
    FILE *fp = fopen(bad, "w");
    fputs(junk[j], fp);
    fclose(fp);
    assert_int_equal(import(g_data, bad, out_bad, &err), FC_EFORMAT);
  }
  unlink(bad), unlink(dumped), unlink(jl), unlink(stp), unlink(out_j), unlink(out_s);
  free(bad), free(out_bad), free(dumped), free(jl), free(stp), free(out_j), free(out_s);
}

int main(int argc, char **argv) {
  /* --make-models DIR: only write the two models and data files into DIR (for tests/cli.sh). */
  if (argc == 3 && !strcmp(argv[1], "--make-models")) {
    snprintf(g_dir, sizeof g_dir, "%s", argv[2]);
    fc_err_t err = {0};
    int rc = fc_mkdir_p(g_dir, &err) ? -1 : setup(NULL);
    free(g_data);
    free(g_data2);
    free(g_piv);
    free(g_src);
    return rc ? 1 : 0;
  }
  snprintf(g_dir, sizeof g_dir, "/tmp/fc_stage_XXXXXX");
  if (!mkdtemp(g_dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_cut),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_import),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
