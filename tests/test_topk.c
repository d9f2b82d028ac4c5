/* Unit tests for the top-K store: round trips within the quantisation error, random access,
 * and rejection of truncated or corrupted files at many positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_topk.h"

static char g_dir[64];

static char *tmp_path(const char *name) { return fc_path_join(g_dir, name); }

/* Fills a random example: logprobs of a random distribution, sorted descending, some absent. */
static void make_example(fc_rng_t *r, fc_topk_ex_t *ex, uint32_t n, uint32_t k, uint32_t vocab) {
  fc_topk_ex_reserve(ex, n, k);
  ex->n = n;
  for (uint32_t i = 0; i < n; i++) {
    ex->ids[i] = (uint32_t)(fc_rng_u64(r) % vocab);
    ex->mask[i] = fc_rng_uniform(r) < 0.6;
    float lp = -(float)fc_rng_uniform(r) * 2;
    for (uint32_t j = 0; j < k; j++) {
      ex->top_ids[i * k + j] = (uint32_t)(fc_rng_u64(r) % vocab);
      ex->top_lp[i * k + j] = lp;
      lp -= (float)fc_rng_uniform(r) * 5;
      if (j == k - 1 && i % 7 == 3) ex->top_lp[i * k + j] = -INFINITY;
    }
  }
  ex->mean_ce = (float)fc_rng_uniform(r) * 3;
  ex->tag = (uint32_t)(fc_rng_u64(r) & 0xffff);
}

static void write_store(const char *path, uint32_t k, uint32_t vocab, uint32_t count, uint64_t seed,
                        uint32_t max_n) {
  fc_err_t err = {0};
  fc_topk_writer_t *w = NULL;
  fc_topk_info_t info = {.model_id = "test-model", .tok_hash = 0x1234, .k = k, .vocab = vocab};
  assert_int_equal(fc_topk_writer_new(&w, path, &info, &err), 0);
  fc_rng_t r;
  fc_rng_seed(&r, seed);
  fc_topk_ex_t ex = {0};
  for (uint32_t e = 0; e < count; e++) {
    make_example(&r, &ex, 1 + (uint32_t)(fc_rng_u64(&r) % max_n), k, vocab);
    assert_int_equal(fc_topk_writer_add(w, &ex, &err), 0);
  }
  assert_false(fc_path_exists(path));
  assert_int_equal(fc_topk_writer_finish(w, &err), 0);
  fc_topk_writer_destroy(&w);
  fc_topk_ex_free(&ex);
}

static void check_roundtrip(uint32_t k, uint32_t vocab) {
  char *path = tmp_path("rt.topk");
  write_store(path, k, vocab, 25, 99, 40);
  fc_err_t err = {0};
  fc_topk_reader_t *rd = NULL;
  assert_int_equal(fc_topk_open(&rd, path, &err), 0);
  assert_int_equal(fc_topk_count(rd), 25);
  assert_int_equal(fc_topk_k(rd), k);
  assert_int_equal(fc_topk_vocab(rd), vocab);
  assert_int_equal(fc_topk_tok_hash(rd), 0x1234);
  assert_string_equal(fc_topk_model_id(rd), "test-model");
  fc_rng_t r;
  fc_rng_seed(&r, 99);
  fc_topk_ex_t want = {0}, got = {0};
  double max_err = 0;
  for (uint32_t e = 0; e < 25; e++) {
    make_example(&r, &want, 1 + (uint32_t)(fc_rng_u64(&r) % 40), k, vocab);
    /* random access: read this one and a random other one first */
    assert_int_equal(fc_topk_get(rd, (e * 7) % 25, &got, &err), 0);
    assert_int_equal(fc_topk_get(rd, e, &got, &err), 0);
    assert_int_equal(got.n, want.n);
    assert_int_equal(fc_topk_len(rd, e), want.n);
    assert_float_equal(got.mean_ce, want.mean_ce, 0);
    assert_int_equal(got.tag, want.tag);
    for (uint32_t i = 0; i < want.n; i++) {
      assert_int_equal(got.ids[i], want.ids[i]);
      assert_int_equal(got.mask[i], want.mask[i]);
      for (uint32_t j = 0; j < k; j++) {
        float a = want.top_lp[i * k + j], b = got.top_lp[i * k + j];
        if (a == -INFINITY) {
          assert_true(b == -INFINITY);
          continue;
        }
        assert_int_equal(got.top_ids[i * k + j], want.top_ids[i * k + j]);
        double d = a < FC_TOPK_LP_MIN ? (b == FC_TOPK_LP_MIN ? 0 : 1) : fabs((double)a - b);
        if (d > max_err) max_err = d;
      }
    }
  }
  assert_true(max_err <= FC_TOPK_LP_STEP / 2 * 1.001);
  assert_true(max_err > 0); /* the comparison is not vacuous */
  fc_topk_ex_free(&want);
  fc_topk_ex_free(&got);
  fc_topk_close(&rd);
  unlink(path);
  free(path);
}

static void test_roundtrip_u16(void **state) {
  (void)state;
  check_roundtrip(10, 32000);
}

static void test_roundtrip_u24(void **state) {
  (void)state;
  check_roundtrip(4, 151646);
}

static void test_lp_code(void **state) {
  (void)state;
  assert_int_equal(fc_topk_lp_encode(0), 0);
  assert_int_equal(fc_topk_lp_encode(-INFINITY), 0xffff);
  assert_int_equal(fc_topk_lp_encode(-1000), 65534);
  assert_true(fc_topk_lp_decode(0xffff) == -INFINITY);
  for (float lp = 0; lp > -31.9f; lp -= 0.001237f)
    assert_true(fabsf(fc_topk_lp_decode(fc_topk_lp_encode(lp)) - lp) <= FC_TOPK_LP_STEP / 2 + 1e-6f);
  /* bytes per token at K=10 stay within the K*6 budget for both id widths */
  assert_true(fc_topk_example_bytes(1000, 10, 32000) / 1000.0 <= 60);
  assert_true(fc_topk_example_bytes(1000, 10, 152064) / 1000.0 <= 60);
}

static void test_bad_input(void **state) {
  (void)state;
  char *path = tmp_path("bad.topk");
  fc_err_t err = {0};
  fc_topk_writer_t *w = NULL;
  fc_topk_info_t info = {.model_id = "m", .k = 2, .vocab = 100};
  assert_int_equal(fc_topk_writer_new(&w, path, &info, &err), 0);
  uint32_t ids[2] = {5, 100};
  uint8_t mask[2] = {1, 1};
  uint32_t tids[4] = {1, 2, 3, 4};
  float tlp[4] = {-0.1f, -2, -0.5f, -1};
  fc_topk_ex_t ex = {.n = 2, .ids = ids, .mask = mask, .top_ids = tids, .top_lp = tlp};
  assert_int_equal(fc_topk_writer_add(w, &ex, &err), FC_EINVAL);
  fc_topk_writer_destroy(&w); /* unfinished: nothing left behind */
  assert_false(fc_path_exists(path));
  fc_topk_reader_t *rd = NULL;
  assert_int_equal(fc_topk_open(&rd, path, &err), FC_EIO);
  free(path);
}

static void test_empty_store(void **state) {
  (void)state;
  char *path = tmp_path("empty.topk");
  write_store(path, 3, 50, 0, 1, 40);
  fc_err_t err = {0};
  fc_topk_reader_t *rd = NULL;
  assert_int_equal(fc_topk_open(&rd, path, &err), 0);
  assert_int_equal(fc_topk_count(rd), 0);
  fc_topk_ex_t ex = {0};
  assert_int_equal(fc_topk_get(rd, 0, &ex, &err), FC_EINVAL);
  fc_topk_close(&rd);
  unlink(path);
  free(path);
}

/* Reads every example; returns the first error or 0. */
static int read_all(const char *path, fc_err_t *err) {
  fc_topk_reader_t *rd = NULL;
  int rc = fc_topk_open(&rd, path, err);
  if (rc) return rc;
  fc_topk_ex_t ex = {0};
  for (uint64_t i = 0; i < fc_topk_count(rd) && rc == 0; i++) rc = fc_topk_get(rd, i, &ex, err);
  fc_topk_ex_free(&ex);
  fc_topk_close(&rd);
  return rc;
}

static void test_corrupt(void **state) {
  (void)state;
  char *path = tmp_path("c.topk"), *bad = tmp_path("c2.topk");
  write_store(path, 3, 300, 6, 5, 12);
  /* (short examples keep the byte-by-byte loops quick under the sanitizers) */
  char *buf;
  size_t len;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(path, &buf, &len, &err), 0);
  assert_int_equal(read_all(path, &err), 0);
  /* every truncation */
  for (size_t cut = 0; cut < len; cut++) {
    FILE *f = fopen(bad, "wb");
    fwrite(buf, 1, cut, f);
    fclose(f);
    err.msg[0] = 0;
    assert_int_equal(read_all(bad, &err), FC_EFORMAT);
    assert_non_null(strstr(err.msg, bad));
  }
  /* a flipped bit at every byte */
  for (size_t pos = 0; pos < len; pos++) {
    buf[pos] ^= (char)(1 << (pos % 8));
    FILE *f = fopen(bad, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    buf[pos] ^= (char)(1 << (pos % 8));
    int rc = read_all(bad, &err);
    if (rc != FC_EFORMAT) fail_msg("flip at %zu of %zu not detected (rc %d)", pos, len, rc);
  }
  /* an appended byte */
  FILE *f = fopen(bad, "wb");
  fwrite(buf, 1, len, f);
  fputc(0, f);
  fclose(f);
  assert_int_equal(read_all(bad, &err), FC_EFORMAT);
  unlink(bad);
  unlink(path);
  free(buf);
  free(path);
  free(bad);
}

int main(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/fc_topk_XXXXXX");
  if (!mkdtemp(g_dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lp_code),       cmocka_unit_test(test_roundtrip_u16),
      cmocka_unit_test(test_roundtrip_u24), cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_empty_store),   cmocka_unit_test(test_corrupt),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  rmdir(g_dir);
  return rc;
}
