/* safetensors reader and writer: files written by an independent Python writer are read with
 * PyTorch's values, our own files round-trip, and corrupt files are rejected without a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_st.h"
#include "test_support.h"

static json_t *expected(void) {
  char *p = test_fixture("st/expected.json");
  json_t *j = json_load_file(p, 0, NULL);
  free(p);
  assert_non_null(j);
  return j;
}

static void check_tensor(const fc_st_t *st, json_t *exp, const char *name) {
  const fc_st_tensor_t *t = fc_st_find(st, name);
  assert_non_null(t);
  json_t *shape = json_object_get(json_object_get(exp, "shapes"), name);
  assert_int_equal(t->ndim, json_array_size(shape));
  for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], json_integer_value(json_array_get(shape, d)));
  json_t *vals = json_object_get(json_object_get(exp, "values"), name);
  if (!vals) return;
  assert_int_equal(t->numel, json_array_size(vals));
  float *owned;
  fc_err_t err = {0};
  const float *f = fc_st_f32(t, &owned, &err);
  assert_non_null(f);
  for (int64_t i = 0; i < t->numel; i++)
    assert_true(f[i] == (float)json_real_value(json_array_get(vals, (size_t)i)));
  free(owned);
}

static void test_read_reference(void **state) {
  (void)state;
  json_t *exp = expected();
  char *p = test_fixture("st/basic.safetensors");
  fc_st_t *st;
  fc_err_t err = {0};
  assert_int_equal(fc_st_open(&st, p, &err), 0);
  assert_int_equal(fc_st_count(st), 6);
  const char *names[] = {"a.weight", "b.half", "c.bf16", "d.scalar", "e.empty", "f.ids"};
  for (int i = 0; i < 6; i++) check_tensor(st, exp, names[i]);
  assert_int_equal(fc_st_find(st, "b.half")->dtype, FC_DT_F16);
  assert_int_equal(fc_st_find(st, "c.bf16")->dtype, FC_DT_BF16);
  assert_int_equal(fc_st_find(st, "d.scalar")->ndim, 0);
  assert_int_equal(fc_st_find(st, "d.scalar")->numel, 1);
  assert_null(fc_st_find(st, "nope"));
  assert_string_equal(fc_st_meta(st, "note"), "fixture");
  assert_int_equal(fc_st_meta_count(st), 2);
  /* integer tensors are readable raw but not as floats */
  float dummy[6];
  assert_int_equal(fc_st_to_f32(fc_st_find(st, "f.ids"), dummy, &err), FC_EUNSUPPORTED);
  fc_st_close(&st);
  assert_null(st);
  free(p);
  json_decref(exp);
}

static void test_read_sharded(void **state) {
  (void)state;
  json_t *exp = expected();
  char *dir = test_fixture("st/sharded");
  fc_st_t *st;
  fc_err_t err = {0};
  assert_int_equal(fc_st_open(&st, dir, &err), 0);
  assert_int_equal(fc_st_num_shards(st), 2);
  assert_int_equal(fc_st_count(st), 3);
  check_tensor(st, exp, "model.embed_tokens.weight");
  check_tensor(st, exp, "model.norm.weight");
  check_tensor(st, exp, "lm_head.weight");
  assert_int_equal(fc_st_find(st, "lm_head.weight")->shard, 1);
  fc_st_close(&st);
  free(dir);
  json_decref(exp);
}

static char *tmpdir(void) {
  char tmpl[] = "/tmp/fc_st_XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  return strdup(tmpl);
}

static void test_write_roundtrip(void **state) {
  (void)state;
  char *dir = tmpdir();
  char *path = fc_path_join(dir, "w.safetensors");
  fc_st_spec_t specs[] = {
      {"x", FC_DT_F32, 2, {3, 4}}, {"y", FC_DT_F16, 1, {5}}, {"z", FC_DT_BF16, 3, {2, 1, 3}}};
  float x[12], y[5], z[6];
  for (int i = 0; i < 12; i++) x[i] = (float)i * 0.1f - 0.5f;
  for (int i = 0; i < 5; i++) y[i] = (float)i * 1.337f;
  for (int i = 0; i < 6; i++) z[i] = (float)i * -3.3f;
  const char *meta[] = {"format", "pt", NULL};
  fc_st_writer_t *w;
  fc_err_t err = {0};
  assert_int_equal(fc_st_writer_new(&w, path, specs, 3, meta, &err), 0);
  assert_int_equal(fc_st_writer_put_f32(w, 0, x, &err), 0);
  assert_false(fc_path_exists(path)); /* nothing visible before finish */
  assert_int_equal(fc_st_writer_put_f32(w, 1, y, &err), 0);
  assert_int_equal(fc_st_writer_put_f32(w, 2, z, &err), 0);
  assert_int_equal(fc_st_writer_finish(&w, &err), 0);
  fc_st_t *st;
  assert_int_equal(fc_st_open(&st, path, &err), 0);
  assert_int_equal(fc_st_count(st), 3);
  assert_string_equal(fc_st_at(st, 0)->name, "x"); /* storage order = declaration order */
  assert_int_equal(((uintptr_t)fc_st_at(st, 0)->data) % 8, 0);
  float out[12];
  assert_int_equal(fc_st_to_f32(fc_st_find(st, "x"), out, &err), 0);
  assert_memory_equal(out, x, sizeof x);
  assert_int_equal(fc_st_to_f32(fc_st_find(st, "y"), out, &err), 0);
  for (int i = 0; i < 5; i++) assert_true(out[i] == fc_f16_to_f32(fc_f32_to_f16(y[i])));
  assert_int_equal(fc_st_to_f32(fc_st_find(st, "z"), out, &err), 0);
  for (int i = 0; i < 6; i++) assert_true(out[i] == fc_bf16_to_f32(fc_f32_to_bf16(z[i])));
  assert_string_equal(fc_st_meta(st, "format"), "pt");
  fc_st_close(&st);
  /* An unfinished writer leaves nothing behind. */
  char *path2 = fc_path_join(dir, "never.safetensors");
  assert_int_equal(fc_st_writer_new(&w, path2, specs, 3, NULL, &err), 0);
  assert_int_equal(fc_st_writer_put_f32(w, 0, x, &err), 0);
  assert_int_not_equal(fc_st_writer_finish(&w, &err), 0);
  assert_false(fc_path_exists(path2));
  /* Duplicate names are refused. */
  fc_st_spec_t dup[] = {{"a", FC_DT_F32, 1, {1}}, {"a", FC_DT_F32, 1, {1}}};
  assert_int_equal(fc_st_writer_new(&w, path2, dup, 2, NULL, &err), FC_EINVAL);
  /* An index over our own file opens through the directory. */
  const char *names[] = {"x", "y", "z"}, *files[] = {"w.safetensors", "w.safetensors", "w.safetensors"};
  char *idx = fc_path_join(dir, "model.safetensors.index.json");
  assert_int_equal(fc_st_write_index(idx, 3, names, files, 0, &err), 0);
  assert_int_equal(fc_st_open(&st, dir, &err), 0);
  assert_int_equal(fc_st_count(st), 3);
  fc_st_close(&st);
  unlink(idx);
  unlink(path);
  rmdir(dir);
  free(idx);
  free(path2);
  free(path);
  free(dir);
}

static void write_bytes(const char *path, const void *buf, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(buf, 1, n, f), n);
  fclose(f);
}

/* A file from a header string and a data length. */
static void write_hdr(const char *path, const char *hdr, size_t data_len) {
  size_t h = strlen(hdr);
  unsigned char *buf = calloc(1, 8 + h + data_len);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(buf + 8, hdr, h);
  write_bytes(path, buf, 8 + h + data_len);
  free(buf);
}

static void expect_reject(const char *path, const char *needle) {
  fc_st_t *st = NULL;
  fc_err_t err = {0};
  int rc = fc_st_open(&st, path, &err);
  if (rc == 0) fail_msg("accepted a bad file (expected %s)", needle ? needle : "an error");
  assert_null(st);
  if (needle && !strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_reject_corrupt(void **state) {
  (void)state;
  char *dir = tmpdir();
  char *bad = fc_path_join(dir, "bad.safetensors");
  /* Every truncation of a valid file is rejected. */
  char *good = test_fixture("st/basic.safetensors");
  char *buf;
  size_t n;
  fc_err_t err = {0};
  assert_int_equal(fc_read_file(good, &buf, &n, &err), 0);
  for (size_t len = 0; len < n; len++) {
    write_bytes(bad, buf, len);
    expect_reject(bad, NULL);
  }
  /* Bytes flipped anywhere in the header never crash the reader. */
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (unsigned char)buf[i];
  fc_rng_t rng;
  fc_rng_seed(&rng, 7);
  for (int trial = 0; trial < 3000; trial++) {
    char *copy = malloc(n);
    memcpy(copy, buf, n);
    size_t at = 8 + fc_rng_u64(&rng) % hlen;
    copy[at] = (char)(fc_rng_u64(&rng) & 0xff);
    write_bytes(bad, copy, n);
    fc_st_t *st = NULL;
    if (fc_st_open(&st, bad, &err) == 0) {
      /* If it still parses, every tensor must lie inside the file. */
      for (size_t i = 0; i < fc_st_count(st); i++) assert_true(fc_st_at(st, i)->nbytes <= n);
      fc_st_close(&st);
    }
    free(copy);
  }
  free(buf);
  free(good);

  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8);
  expect_reject(bad, "not valid JSON");
  write_hdr(bad, "[1,2]", 0);
  expect_reject(bad, "not a JSON object");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F99\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
  expect_reject(bad, "unsupported dtype F99");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
  expect_reject(bad, "shape x dtype");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
  expect_reject(bad, "overlaps");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
  expect_reject(bad, "gap");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 10);
  expect_reject(bad, "after the last tensor");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
  expect_reject(bad, "truncated");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8);
  expect_reject(bad, "bad shape");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8);
  expect_reject(bad, "lacks");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
  expect_reject(bad, "JSON");
  write_hdr(bad, "{\"__metadata__\":{\"k\":1}}", 0);
  expect_reject(bad, "not a string");
  unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
  write_bytes(bad, huge, sizeof huge);
  expect_reject(bad, "limit");
  expect_reject("/nonexistent/model.safetensors", "cannot open");
  expect_reject(dir, "no model.safetensors");
  /* An index that names a tensor its shard does not hold. */
  char *idx = fc_path_join(dir, "model.safetensors.index.json");
  write_hdr(bad, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
  FILE *f = fopen(idx, "w");
  fputs("{\"weight_map\":{\"a\":\"bad.safetensors\",\"b\":\"bad.safetensors\"}}", f);
  fclose(f);
  expect_reject(dir, "'b' is not in");
  unlink(idx);
  unlink(bad);
  rmdir(dir);
  free(idx);
  free(bad);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_read_reference),
      cmocka_unit_test(test_read_sharded),
      cmocka_unit_test(test_write_roundtrip),
      cmocka_unit_test(test_reject_corrupt),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
