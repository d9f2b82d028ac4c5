/* JSONL training data: row formation, padding and targets, truncation, packing, per-epoch
 * shuffling, fused-target copying and the errors bad lines give. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_data.h"

static char *write_tmp(const char *text) {
  char *path = strdup("/tmp/fc_test_data_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static fc_data_t *load(const char *text, int T, int pack, int shuffle, const fc_data_encoder_t *enc) {
  char *p = write_tmp(text);
  fc_data_opts_t o = {T, 100, pack, shuffle, 7};
  fc_data_t *d;
  fc_err_t err = {0};
  int rc = fc_data_load(&d, p, enc, &o, &err);
  if (rc) fail_msg("load: %s", err.msg);
  unlink(p);
  free(p);
  return d;
}

static const char *three = "{\"input_ids\":[1,2,3,4]}\n\n{\"input_ids\":[5,6]}\n"
                           "{\"input_ids\":[7,8,9,10,11,12,13], \"loss_mask\":[0,0,0,1,1,0,1]}\n";

static void test_rows_and_targets(void **state) {
  (void)state;
  fc_data_t *d = load(three, 5, 0, 0, NULL);
  assert_int_equal(fc_data_num_lines(d), 3);
  assert_int_equal(fc_data_num_rows(d), 3);
  assert_int_equal(fc_data_num_tokens(d), 13);
  assert_int_equal(fc_data_num_truncated(d), 1);
  fc_batch_t b = {0};
  fc_err_t err = {0};
  assert_int_equal(fc_data_batch(d, &b, 0, 2, NULL, &err), 0);
  assert_int_equal(b.T, 4); /* longest row of this batch */
  int32_t ids[] = {1, 2, 3, 4, 5, 6, 0, 0};
  int32_t tg[] = {2, 3, 4, -1, 6, -1, -1, -1};
  assert_memory_equal(b.ids, ids, sizeof ids);
  assert_memory_equal(b.targets, tg, sizeof tg);
  assert_int_equal(b.counted, 4);
  /* rows 2,3 = line 3 (truncated to 5, masked) and line 1 again (wrapped into epoch 1) */
  assert_int_equal(fc_data_batch(d, &b, 2, 2, NULL, &err), 0);
  assert_int_equal(b.T, 5);
  int32_t ids2[] = {7, 8, 9, 10, 11, 1, 2, 3, 4, 0};
  int32_t tg2[] = {-1, -1, 10, 11, -1, 2, 3, 4, -1, -1};
  assert_memory_equal(b.ids, ids2, sizeof ids2);
  assert_memory_equal(b.targets, tg2, sizeof tg2);
  assert_int_equal(b.counted, 5);
  fc_batch_free(&b);
  fc_data_destroy(&d);
  assert_null(d);
}

static void test_pack(void **state) {
  (void)state;
  fc_data_t *d = load(three, 4, 1, 0, NULL);
  assert_int_equal(fc_data_num_rows(d), 4); /* 13 tokens in rows of 4 */
  fc_batch_t b = {0};
  fc_err_t err = {0};
  assert_int_equal(fc_data_batch(d, &b, 0, 4, NULL, &err), 0);
  assert_int_equal(b.T, 4);
  int32_t ids[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 0, 0};
  /* token 7's mask is 0 (no loss predicting it), 8: 0, 9: 0, 10: 1, 11: 1, 12: 0, 13: 1 */
  int32_t tg[] = {2, 3, 4, -1, 6, -1, -1, -1, 10, 11, -1, -1, -1, -1, -1, -1};
  assert_memory_equal(b.ids, ids, sizeof ids);
  assert_memory_equal(b.targets, tg, sizeof tg);
  fc_batch_free(&b);
  fc_data_destroy(&d);
}

static void test_shuffle(void **state) {
  (void)state;
  char text[4096] = "";
  for (int i = 0; i < 40; i++) sprintf(text + strlen(text), "{\"input_ids\":[%d,1]}\n", i);
  fc_data_t *d = load(text, 8, 0, 1, NULL), *d2 = load(text, 8, 0, 1, NULL);
  int seen[40] = {0}, moved = 0, differs = 0;
  for (uint64_t r = 0; r < 40; r++) {
    size_t l = fc_data_row_line(d, r);
    seen[l]++;
    moved += l != r;
    differs += fc_data_row_line(d, r + 40) != l; /* epoch 1 has another order */
  }
  for (int i = 0; i < 40; i++) assert_int_equal(seen[i], 1);
  assert_true(moved > 20 && differs > 20);
  /* the same (seed, epoch) gives the same order, asked in any sequence */
  for (uint64_t r = 119; r + 1 > 0 && r < 120; r -= 7) assert_int_equal(fc_data_row_line(d2, r), fc_data_row_line(d, r));
  fc_batch_t b = {0};
  fc_err_t err = {0};
  assert_int_equal(fc_data_batch(d, &b, 45, 1, NULL, &err), 0);
  assert_int_equal(b.ids[0], (int32_t)fc_data_row_line(d, 45));
  fc_batch_free(&b);
  fc_data_destroy(&d);
  fc_data_destroy(&d2);
}

/* A store stand-in: position i of line l has ids {l*10+i, -1, 99} and log-probs {-1,-2,-3}. */
static int fake_fill(void *ctx, size_t line, const int32_t *tokens, size_t n, int32_t *ids, float *lp, fc_err_t *err) {
  (void)ctx, (void)tokens;
  if (line == 99) return fc_err_set(err, FC_EMISMATCH, "no such line");
  for (size_t i = 0; i < n; i++) {
    ids[i * 3] = (int32_t)(line * 10 + i), ids[i * 3 + 1] = -1, ids[i * 3 + 2] = 99;
    lp[i * 3] = -1, lp[i * 3 + 1] = -2, lp[i * 3 + 2] = -3;
  }
  return 0;
}

static void test_fused_targets(void **state) {
  (void)state;
  fc_targets_source_t tg = {NULL, 3, fake_fill};
  fc_data_t *d = load(three, 5, 0, 0, NULL);
  fc_batch_t b = {0};
  fc_err_t err = {0};
  assert_int_equal(fc_data_batch(d, &b, 1, 2, &tg, &err), 0);
  assert_int_equal(b.K, 3);
  /* row 0 = line 1 (2 tokens): position 0 from the store, the rest empty */
  assert_int_equal(b.topk_ids[0], 10);
  assert_int_equal(b.topk_ids[2], 99);
  assert_int_equal(b.topk_ids[3], -1);
  assert_true(b.topk_logprobs[2] == -3.0f);
  /* row 1 = line 2 truncated to 5: positions 0..3 from the store */
  const int32_t *r1 = b.topk_ids + 5 * 3;
  for (int t = 0; t < 4; t++) assert_int_equal(r1[t * 3], 20 + t);
  assert_int_equal(r1[4 * 3], -1);
  fc_data_destroy(&d);
  /* packed: positions whose next token starts another line get no store entry */
  d = load(three, 4, 1, 0, NULL);
  assert_int_equal(fc_data_batch(d, &b, 0, 2, &tg, &err), 0);
  int32_t want[8] = {0, 1, 2, -1, 10, -1, 20, 21};
  for (int t = 0; t < 7; t++) assert_int_equal(b.topk_ids[t * 3], want[t]);
  fc_batch_free(&b);
  fc_data_destroy(&d);
}

static int enc_text(void *ctx, const char *text, size_t len, int32_t **ids, size_t *n, fc_err_t *err) {
  (void)ctx, (void)err;
  *ids = malloc((len + 1) * sizeof **ids);
  for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
  *n = len;
  return 0;
}

static void test_text_encoder_seam(void **state) {
  (void)state;
  fc_data_encoder_t enc = {NULL, enc_text, NULL};
  fc_data_t *d = load("{\"text\":\"abc\"}\n", 8, 0, 0, &enc);
  fc_batch_t b = {0};
  fc_err_t err = {0};
  assert_int_equal(fc_data_batch(d, &b, 0, 1, NULL, &err), 0);
  assert_int_equal(b.T, 3);
  assert_int_equal(b.ids[0], 'a');
  assert_int_equal(b.targets[1], 'c');
  fc_batch_free(&b);
  fc_data_destroy(&d);
}

static void expect_error(const char *text, const fc_data_encoder_t *enc, int code, const char *needle) {
  char *p = write_tmp(text);
  fc_data_opts_t o = {8, 100, 0, 0, 1};
  fc_data_t *d = (fc_data_t *)1;
  fc_err_t err = {0};
  int rc = fc_data_load(&d, p, enc, &o, &err);
  unlink(p);
  free(p);
  assert_int_equal(rc, code);
  assert_null(d);
  if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_errors(void **state) {
  (void)state;
  expect_error("{\"input_ids\":[1]}\n{\"input_ids\":[1,\n", NULL, FC_EFORMAT, ":2: bad JSON");
  expect_error("{\"input_ids\":[1]}\n\n{\"input_ids\":[1,100]}\n", NULL, FC_EFORMAT, ":3: input_ids[1]");
  expect_error("{\"input_ids\":[1,-1]}\n", NULL, FC_EFORMAT, ":1: input_ids[1]");
  expect_error("{\"input_ids\":\"x\"}\n", NULL, FC_EFORMAT, "not an array");
  expect_error("[1,2]\n", NULL, FC_EFORMAT, "not a JSON object");
  expect_error("{\"foo\":1}\n", NULL, FC_EFORMAT, "expected \"input_ids\"");
  expect_error("{\"input_ids\":[1,2],\"loss_mask\":[1]}\n", NULL, FC_EFORMAT, "loss_mask");
  expect_error("{\"text\":\"hi\"}\n", NULL, FC_EUNSUPPORTED, ":1: \"text\" lines need a tokenizer");
  expect_error("{\"conversations\":[]}\n", NULL, FC_EUNSUPPORTED, "chat template");
  expect_error("\n\n", NULL, FC_EFORMAT, "no data lines");
  /* an encoder's ids are checked against the vocabulary too ('d' is 100, the vocabulary 100) */
  fc_data_encoder_t enc = {NULL, enc_text, NULL};
  expect_error("{\"text\":\"abc\"}\n{\"text\":\"d\"}\n", &enc, FC_EMISMATCH, ":2: token 0 has id 100");
  fc_data_opts_t o = {8, 100, 0, 0, 1};
  fc_data_t *d;
  fc_err_t err = {0};
  assert_int_equal(fc_data_load(&d, "/nonexistent/x.jsonl", NULL, &o, &err), FC_EIO);
  /* a store that fails names the data line */
  fc_targets_source_t tg = {NULL, 3, fake_fill};
  char text[4096] = "";
  for (int i = 0; i < 100; i++) strcat(text, "{\"input_ids\":[1,2]}\n");
  d = load(text, 8, 0, 0, NULL);
  fc_batch_t b = {0};
  assert_int_equal(fc_data_batch(d, &b, 99, 1, &tg, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "data line 100"));
  fc_batch_free(&b);
  fc_data_destroy(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rows_and_targets), cmocka_unit_test(test_pack),
      cmocka_unit_test(test_shuffle),          cmocka_unit_test(test_fused_targets),
      cmocka_unit_test(test_text_encoder_seam), cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
