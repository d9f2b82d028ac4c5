/* Helpers the cmocka tests share: fixture paths, small vocabularies from token lists, and a
 * tiny random model with a tokenizer trained on a corpus. Include after <cmocka.h>. */
#ifndef FC_TEST_SUPPORT_H
#define FC_TEST_SUPPORT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_bpe_train.h"
#include "fc_config.h"
#include "fc_model.h"
#include "fc_tok.h"
#include "fc_topk.h"
#include "fc_util.h"
#include "fc_vmap.h"

/* The path of rel under the fixtures folder ($FC_FIXTURES, set by meson; tests/fixtures when
 * run by hand from the source root). Caller frees. */
static inline char *test_fixture(const char *rel) {
  const char *d = getenv("FC_FIXTURES");
  return fc_path_join(d ? d : "tests/fixtures", rel);
}

/* A vocabulary from a NULL-terminated list of token texts, in the caller's (static) storage. */
typedef struct tvocab {
  fc_vocab_t v;
  char buf[8192];
  uint32_t start[1024];
} tvocab_t;

static inline void tvocab(tvocab_t *t, const char *const *toks) {
  uint32_t n = 0, pos = 0;
  for (; toks[n]; n++) {
    t->start[n] = pos;
    size_t l = strlen(toks[n]);
    memcpy(t->buf + pos, toks[n], l);
    pos += (uint32_t)l;
  }
  t->start[n] = pos;
  t->v = (fc_vocab_t){n, t->buf, t->start};
}

/* A two-layer random model of family `type` in dir (config.json, model.safetensors in f32) with
 * a tokenizer of the given kind and size trained on corpus[0..clen). initializer_range 0.5 gives
 * peaked distributions, so the cross-entropies of two such models differ visibly. mixtral gets
 * 4 experts (top-2) and internlm2 4 query heads over 2 KV heads, so its packed wqkv is grouped. */
static inline void test_make_model_of(const char *type, const char *dir, fc_tok_kind_t kind, int vocab, const char *corpus,
                                   size_t clen, uint64_t seed) {
  fc_err_t err = {0};
  fc_bpe_train_opts_t bo = {.kind = kind, .vocab_size = vocab};
  char *json = NULL;
  assert_int_equal(fc_bpe_train(corpus, clen, &bo, &json, &err), 0);
  assert_int_equal(fc_mkdir_p(dir, &err), 0);
  char *tp = fc_path_join(dir, "tokenizer.json");
  FILE *fp = fopen(tp, "w");
  assert_non_null(fp);
  fputs(json, fp);
  fclose(fp);
  fc_tok_t *tok = NULL;
  assert_int_equal(fc_tok_load(&tok, tp, &err), 0);
  fc_config_t c;
  fc_config_default(&c, type);
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.vocab_size = fc_tok_vocab_size(tok);
  c.initializer_range = 0.5f;
  if (!strcmp(type, "mixtral")) {
    c.num_experts = 4;
    c.experts_per_tok = 2;
    c.intermediate_size = 32;
  }
  if (!strcmp(type, "internlm2")) {
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
  }
  fc_model_t *m = NULL;
  assert_int_equal(fc_model_init(&m, &c, seed, &err), 0);
  assert_int_equal(fc_model_save(m, dir, FC_DT_F32, &err), 0);
  fc_model_destroy(&m);
  fc_tok_destroy(&tok);
  free(tp);
  free(json);
}

/* test_make_model_of for the llama pivot family. */
static inline void test_make_model(const char *dir, fc_tok_kind_t kind, int vocab, const char *corpus,
                                   size_t clen, uint64_t seed) {
  test_make_model_of("llama", dir, kind, vocab, corpus, clen, seed);
}

/* Writes the store's distributions as the documented JSONL (with target_logprobs all -1 when
 * with_target; `bad` = example whose first id is altered, -1 none; skip_last drops a row;
 * the log-prob of example 1's first entry replaced by 0.5 when positive_lp), the layout
 * fusectl logits-import reads. */
static inline void test_export_jsonl(const char *store, const char *path, int with_target, long bad, int skip_last,
                                     int positive_lp) {
  fc_err_t err = {0};
  fc_topk_reader_t *r = NULL;
  assert_int_equal(fc_topk_open(&r, store, &err), 0);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fc_topk_ex_t ex = {0};
  uint32_t K = fc_topk_k(r);
  uint64_t n = fc_topk_count(r) - (skip_last ? 1 : 0);
  for (uint64_t x = 0; x < n; x++) {
    assert_int_equal(fc_topk_get(r, x, &ex, &err), 0);
    fprintf(fp, "{\"ids\": [");
    for (uint32_t i = 0; i < ex.n; i++)
      fprintf(fp, "%s%u", i ? "," : "", (long)x == bad && i == 0 ? (ex.ids[0] + 1) % 50 : ex.ids[i]);
    for (int part = 0; part < 2; part++) {
      fprintf(fp, "], \"%s\": [", part ? "topk_logprobs" : "topk_ids");
      for (uint32_t i = 0; i < ex.n; i++) {
        fprintf(fp, "%s[", i ? "," : "");
        int first = 1;
        for (uint32_t k = 0; k < K; k++) {
          float lp = ex.top_lp[(size_t)i * K + k];
          if (lp == -INFINITY) continue;
          if (part) fprintf(fp, "%s%.9g", first ? "" : ",", positive_lp && x == 1 && i == 0 && k == 0 ? 0.5f : lp);
          else fprintf(fp, "%s%u", first ? "" : ",", ex.top_ids[(size_t)i * K + k]);
          first = 0;
        }
        fprintf(fp, "]");
      }
    }
    fprintf(fp, "]");
    if (with_target) {
      fprintf(fp, ", \"target_logprobs\": [");
      for (uint32_t i = 0; i < ex.n; i++) fprintf(fp, "%s-1", i ? "," : "");
      fprintf(fp, "]");
    }
    fprintf(fp, "}\n\n");
  }
  fclose(fp);
  fc_topk_ex_free(&ex);
  fc_topk_close(&r);
}

/* Two top-K examples hold the same positions, mask and distributions (K entries a position). */
static inline void test_assert_topk_ex_equal(const fc_topk_ex_t *x, const fc_topk_ex_t *y, uint32_t K) {
  assert_int_equal(x->n, y->n);
  assert_int_equal(x->tag, y->tag);
  assert_memory_equal(x->ids, y->ids, x->n * sizeof *x->ids);
  assert_memory_equal(x->mask, y->mask, x->n);
  assert_memory_equal(x->top_ids, y->top_ids, (size_t)x->n * K * sizeof *x->top_ids);
  assert_memory_equal(x->top_lp, y->top_lp, (size_t)x->n * K * sizeof *x->top_lp);
}

#endif
