/* Helpers the cmocka tests share: fixture paths, small vocabularies from token lists, and a
 * tiny random model with a tokenizer trained on a corpus. Include after <cmocka.h>. */
#ifndef FC_TEST_SUPPORT_H
#define FC_TEST_SUPPORT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_bpe_train.h"
#include "fc_config.h"
#include "fc_model.h"
#include "fc_tok.h"
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

/* A two-layer random llama in dir (config.json, model.safetensors in f32) with a tokenizer of
 * the given kind and size trained on corpus[0..clen). initializer_range 0.5 gives peaked
 * distributions, so the cross-entropies of two such models differ visibly. */
static inline void test_make_model(const char *dir, fc_tok_kind_t kind, int vocab, const char *corpus,
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
  fc_config_default(&c, "llama");
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 16;
  c.vocab_size = fc_tok_vocab_size(tok);
  c.initializer_range = 0.5f;
  fc_model_t *m = NULL;
  assert_int_equal(fc_model_init(&m, &c, seed, &err), 0);
  assert_int_equal(fc_model_save(m, dir, FC_DT_F32, &err), 0);
  fc_model_destroy(&m);
  fc_tok_destroy(&tok);
  free(tp);
  free(json);
}

#endif
