/* Training rows from text and conversations (tokenizer + chat template, assistant-only loss) and
 * fused targets from a top-K store, through fc_data and the training loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_config.h"
#include "fc_train.h"
#include "fc_train_src.h"

static char g_dir[64];
static fc_tok_t *g_tok;

static char *path_in(const char *name) { return fc_path_join(g_dir, name); }

static void write_text(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

static const char *data_text =
    "{\"text\":\"The cat sat on the mat.\"}\n"
    "{\"conversations\":[{\"from\":\"system\",\"value\":\"Be brief.\"},{\"from\":\"human\",\"value\":\"What is 2+2?\"},"
    "{\"from\":\"gpt\",\"value\":\"4\"},{\"from\":\"human\",\"value\":\"And 3+3?\"},{\"from\":\"gpt\",\"value\":\"It is 6.\"}]}\n"
    "{\"input_ids\":[5,6,7]}\n";

static fc_data_t *load(const char *text, fc_train_encoder_t *enc) {
  char *p = path_in("d.jsonl");
  write_text(p, text);
  fc_data_opts_t o = {256, fc_tok_vocab_size(g_tok), 0, 0, 1};
  fc_data_t *d;
  fc_err_t err = {0};
  if (fc_data_load(&d, p, &enc->enc, &o, &err)) fail_msg("%s", err.msg);
  free(p);
  return d;
}

static void test_text_and_chat_rows(void **state) {
  (void)state;
  fc_train_encoder_t enc;
  fc_train_encoder_init(&enc, g_tok, FC_CHAT_AUTO);
  fc_data_t *d = load(data_text, &enc);
  assert_int_equal(fc_data_num_lines(d), 3);
  fc_batch_t b = {0};
  fc_err_t err = {0};
  /* text: the tokenizer's own encoding, loss on every next token */
  assert_int_equal(fc_data_batch(d, &b, 0, 1, NULL, &err), 0);
  int32_t *ids;
  size_t n;
  const char *s = "The cat sat on the mat.";
  assert_int_equal(fc_tok_encode(g_tok, s, strlen(s), FC_TOK_ADD_SPECIAL | FC_TOK_PARSE_SPECIAL, &ids, NULL, &n, &err), 0);
  assert_int_equal(b.T, (int)n);
  assert_memory_equal(b.ids, ids, n * sizeof *ids);
  assert_int_equal(b.counted, (long)n - 1);
  free(ids);

  /* conversation: ChatML (the tokenizer has <|im_start|>); the counted targets decode to the
   * two responses with their <|im_end|>, nothing of the prompts */
  assert_int_equal(fc_data_batch(d, &b, 1, 1, NULL, &err), 0);
  int32_t got[256];
  size_t ng = 0;
  for (int t = 0; t < b.T; t++)
    if (b.targets[t] >= 0) got[ng++] = b.targets[t];
  char *text;
  assert_int_equal(fc_tok_decode(g_tok, got, ng, 0, &text, &err), 0);
  if (strcmp(text, "4<|im_end|>It is 6.<|im_end|>") != 0) fail_msg("assistant tokens decode to '%s'", text);
  free(text);
  /* and the whole row is the rendered conversation */
  assert_int_equal(fc_tok_decode(g_tok, b.ids, (size_t)b.T, 0, &text, &err), 0);
  assert_non_null(strstr(text, "<|im_start|>user\nWhat is 2+2?<|im_end|>"));
  free(text);
  fc_batch_free(&b);
  fc_data_destroy(&d);

  /* a conversation the template cannot render names its line */
  char *p = path_in("bad.jsonl");
  write_text(p, "{\"input_ids\":[1]}\n{\"conversations\":[{\"from\":\"alien\",\"value\":\"x\"}]}\n");
  fc_data_opts_t o = {64, fc_tok_vocab_size(g_tok), 0, 0, 1};
  assert_true(fc_data_load(&d, p, &enc.enc, &o, &err) < 0);
  assert_non_null(strstr(err.msg, ":2:"));
  free(p);
}

/* A store with one example per data line of [from, to) holding the line's tokens. */
static void write_store_range(const char *path, fc_data_t *d, size_t from, size_t to, int corrupt_line, int K) {
  fc_err_t err = {0};
  fc_topk_writer_t *w = NULL;
  fc_topk_info_t info = {.model_id = "test", .tok_hash = fc_tok_hash(g_tok), .k = (uint32_t)K,
                         .vocab = (uint32_t)fc_tok_vocab_size(g_tok)};
  assert_int_equal(fc_topk_writer_new(&w, path, &info, &err), 0);
  fc_topk_ex_t ex = {0};
  fc_batch_t b = {0};
  for (size_t l = from; l < to; l++) {
    assert_int_equal(fc_data_batch(d, &b, l, 1, NULL, &err), 0);
    uint32_t n = (uint32_t)b.T;
    fc_topk_ex_reserve(&ex, n, (uint32_t)K);
    ex.n = n;
    for (uint32_t i = 0; i < n; i++) {
      ex.ids[i] = (uint32_t)b.ids[i] + ((int)l == corrupt_line && i == 1);
      ex.mask[i] = 1;
      for (int k = 0; k < K; k++) {
        ex.top_ids[i * K + k] = (uint32_t)((l * 31 + i * 7 + k * 13) % 900);
        ex.top_lp[i * K + k] = (k == K - 1 && i % 3 == 0) ? -INFINITY : -0.37f * (k + 1) - 0.01f * i;
      }
    }
    ex.mean_ce = 1;
    assert_int_equal(fc_topk_writer_add(w, &ex, &err), 0);
  }
  assert_int_equal(fc_topk_writer_finish(w, &err), 0);
  fc_topk_writer_destroy(&w);
  fc_topk_ex_free(&ex);
  fc_batch_free(&b);
}

static void write_store(const char *path, fc_data_t *d, fc_train_encoder_t *enc, int corrupt_line, int K) {
  (void)enc;
  write_store_range(path, d, 0, fc_data_num_lines(d), corrupt_line, K);
}

/* The stores of consecutive shards read as one: every line finds its own targets. */
static void test_sharded_targets(void **state) {
  (void)state;
  fc_train_encoder_t enc;
  fc_train_encoder_init(&enc, g_tok, FC_CHAT_AUTO);
  fc_data_t *d = load(data_text, &enc);
  size_t N = fc_data_num_lines(d);
  assert_true(N >= 3);
  char *p0 = path_in("s0.topk"), *p1 = path_in("s1.topk"), *p2 = path_in("s2.topk");
  write_store_range(p0, d, 0, 2, -1, 4);
  write_store_range(p1, d, 2, N, -1, 4);
  write_store_range(p2, d, 2, N, -1, 3);
  const char *paths[2] = {p0, p1};
  fc_train_shards_t sh;
  fc_err_t err = {0};
  assert_int_equal(fc_train_shards_open(&sh, paths, 2, fc_tok_vocab_size(g_tok), &err), 0);
  assert_int_equal(sh.src.K, 4);
  assert_int_equal(sh.first[2], N);
  fc_batch_t b = {0};
  for (size_t l = 0; l < N; l++) {
    assert_int_equal(fc_data_batch(d, &b, l, 1, &sh.src, &err), 0);
    assert_int_equal(b.topk_ids[1 * 4 + 0], (int32_t)((l * 31 + 1 * 7) % 900)); /* line l's own targets */
  }
  fc_train_shards_close(&sh);
  /* one shard short: the lines beyond are refused, naming the line */
  assert_int_equal(fc_train_shards_open(&sh, paths, 1, fc_tok_vocab_size(g_tok), &err), 0);
  assert_int_equal(fc_data_batch(d, &b, 2, 1, &sh.src, &err), FC_EMISMATCH);
  fc_train_shards_close(&sh);
  const char *mixed[2] = {p0, p2};
  assert_int_equal(fc_train_shards_open(&sh, mixed, 2, fc_tok_vocab_size(g_tok), &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "K 3"));
  fc_batch_free(&b);
  fc_data_destroy(&d);
  unlink(p0), unlink(p1), unlink(p2);
  free(p0), free(p1), free(p2);
}

static void test_store_targets(void **state) {
  (void)state;
  fc_train_encoder_t enc;
  fc_train_encoder_init(&enc, g_tok, FC_CHAT_AUTO);
  fc_data_t *d = load(data_text, &enc);
  char *sp = path_in("t.topk");
  const int K = 5;
  write_store(sp, d, &enc, -1, K);
  fc_train_topk_t st;
  fc_err_t err = {0};
  assert_int_equal(fc_train_topk_open(&st, sp, fc_tok_vocab_size(g_tok), &err), 0);
  assert_int_equal(st.src.K, K);
  fc_batch_t b = {0};
  assert_int_equal(fc_data_batch(d, &b, 1, 1, &st.src, &err), 0);
  for (int t = 0; t + 1 < b.T; t++)
    for (int k = 0; k < K; k++) {
      int32_t id = b.topk_ids[t * K + k];
      float lp = b.topk_logprobs[t * K + k];
      if (k == K - 1 && t % 3 == 0) {
        assert_int_equal(id, -1); /* absent in the store: an empty slot */
      } else {
        assert_int_equal(id, (int32_t)((1 * 31 + t * 7 + k * 13) % 900));
        assert_true(fabsf(lp - (-0.37f * (k + 1) - 0.01f * t)) <= FC_TOPK_LP_STEP / 2 + 1e-6f);
      }
    }
  fc_train_topk_close(&st);
  /* smaller model vocabulary than the store's: refused */
  assert_int_equal(fc_train_topk_open(&st, sp, 10, &err), FC_EMISMATCH);
  /* a store whose example differs from the data line: refused, naming the line */
  write_store(sp, d, &enc, 2, K);
  assert_int_equal(fc_train_topk_open(&st, sp, fc_tok_vocab_size(g_tok), &err), 0);
  assert_int_equal(fc_data_batch(d, &b, 2, 1, &st.src, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "data line 3"));
  fc_train_topk_close(&st);
  fc_batch_free(&b);
  fc_data_destroy(&d);
  unlink(sp);
  free(sp);
}

/* The whole loop from scratch on text + conversations with store targets runs to the end. */
static void test_train_with_store(void **state) {
  (void)state;
  fc_train_encoder_t enc;
  fc_train_encoder_init(&enc, g_tok, FC_CHAT_AUTO);
  char lines[8192] = "";
  for (int i = 0; i < 8; i++) strcat(lines, data_text);
  fc_data_t *d = load(lines, &enc);
  char *sp = path_in("t.topk");
  write_store(sp, d, &enc, -1, 4);
  fc_data_destroy(&d);
  char *cfgp = path_in("config.json"), *dp = path_in("d.jsonl"), *out = path_in("out");
  fc_config_t cfg;
  fc_config_default(&cfg, "qwen2");
  cfg.hidden_size = 32, cfg.intermediate_size = 64, cfg.num_layers = 1, cfg.num_heads = 2, cfg.num_kv_heads = 1;
  cfg.head_dim = 16, cfg.vocab_size = fc_tok_vocab_size(g_tok), cfg.tie_word_embeddings = 1;
  fc_err_t err = {0};
  assert_int_equal(fc_config_save(&cfg, cfgp, &err), 0);
  fc_train_topk_t st;
  assert_int_equal(fc_train_topk_open(&st, sp, cfg.vocab_size, &err), 0);
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  o.config_path = cfgp;
  o.data_path = dp;
  o.out_dir = out;
  o.steps = 12;
  o.batch_size = 3;
  o.lr = 1e-2;
  o.warmup = 0;
  o.encoder = &enc.enc;
  o.targets = &st.src;
  o.lambda = 0.5;
  o.quiet = 1;
  fc_train_result_t res;
  int rc = fc_train_run(&o, &res, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_int_equal(res.steps_done, 12);
  assert_true(isfinite(res.last_loss) && res.last_loss > 0);
  fc_train_topk_close(&st);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
  assert_int_equal(system(cmd), 0);
  unlink(sp), unlink(cfgp);
  free(sp), free(cfgp), free(dp), free(out);
}

/* The whole loop from scratch on text + conversation lines runs to the end and learns. */
static void test_train_text_from_scratch(void **state) {
  (void)state;
  fc_train_encoder_t enc;
  fc_train_encoder_init(&enc, g_tok, FC_CHAT_AUTO);
  char lines[8192] = "";
  for (int i = 0; i < 8; i++) strcat(lines, data_text);
  char *cfgp = path_in("config.json"), *dp = path_in("d.jsonl"), *out = path_in("out");
  write_text(dp, lines);
  fc_config_t cfg;
  fc_config_default(&cfg, "qwen2");
  cfg.hidden_size = 32, cfg.intermediate_size = 64, cfg.num_layers = 1, cfg.num_heads = 2, cfg.num_kv_heads = 1;
  cfg.head_dim = 16, cfg.vocab_size = fc_tok_vocab_size(g_tok), cfg.tie_word_embeddings = 1;
  fc_err_t err = {0};
  assert_int_equal(fc_config_save(&cfg, cfgp, &err), 0);
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  o.config_path = cfgp;
  o.data_path = dp;
  o.out_dir = out;
  o.steps = 24;
  o.batch_size = 3;
  o.lr = 1e-2;
  o.warmup = 0;
  o.encoder = &enc.enc;
  o.quiet = 1;
  fc_train_result_t res;
  int rc = fc_train_run(&o, &res, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_int_equal(res.steps_done, 24);
  assert_true(isfinite(res.last_loss) && res.last_loss < 0.5 * log((double)cfg.vocab_size));
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
  assert_int_equal(system(cmd), 0);
  unlink(cfgp);
  free(cfgp), free(dp), free(out);
}

int main(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/fc_test_train_src_XXXXXX");
  if (!mkdtemp(g_dir)) return 1;
  const char *fx = getenv("FC_FIXTURES");
  char tp[1024];
  snprintf(tp, sizeof tp, "%s/tok/trained_byte/tokenizer.json", fx ? fx : "tests/fixtures");
  fc_err_t err = {0};
  if (fc_tok_load(&g_tok, tp, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_text_and_chat_rows),
      cmocka_unit_test(test_store_targets),
      cmocka_unit_test(test_sharded_targets),
      cmocka_unit_test(test_train_with_store),
      cmocka_unit_test(test_train_text_from_scratch),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  fc_tok_destroy(&g_tok);
  char *d = path_in("d.jsonl");
  unlink(d);
  free(d);
  rmdir(g_dir);
  return rc;
}
