/* Unit tests for fc_util: number formats, atomic files, random numbers, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_util.h"

static void test_f16_roundtrip(void **state) {
  (void)state;
  /* Every finite half converts to f32 and back to itself. */
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00) continue;
    float f = fc_f16_to_f32((uint16_t)h);
    assert_int_equal(fc_f32_to_f16(f), h);
  }
  assert_float_equal(fc_f16_to_f32(0x3c00), 1.0f, 0);
  assert_float_equal(fc_f16_to_f32(0xc000), -2.0f, 0);
  assert_float_equal(fc_f16_to_f32(0x0001), 5.9604644775390625e-8f, 0);
  assert_int_equal(fc_f32_to_f16(65520.0f), 0x7c00); /* rounds to +inf */
  assert_int_equal(fc_f32_to_f16(65519.0f), 0x7bff);
  /* Ties go to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10. */
  assert_int_equal(fc_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
  assert_int_equal(fc_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
}

static void test_bf16(void **state) {
  (void)state;
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7f80) == 0x7f80) continue;
    assert_int_equal(fc_f32_to_bf16(fc_bf16_to_f32((uint16_t)h)), h);
  }
  assert_int_equal(fc_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);     /* tie to even (down) */
  assert_int_equal(fc_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie to even (up) */
  assert_true(isnan(fc_bf16_to_f32(fc_f32_to_bf16(NAN))));
}

static void test_atomic_file(void **state) {
  (void)state;
  char dir[] = "/tmp/fc_test_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char *path = fc_path_join(dir, "a.txt");
  fc_err_t err = {0};
  fc_atomic_file_t af;
  assert_int_equal(fc_atomic_open(&af, path, &err), 0);
  fputs("hello", af.fp);
  assert_false(fc_path_exists(path)); /* not visible before commit */
  assert_int_equal(fc_atomic_commit(&af, &err), 0);
  char *buf;
  size_t n;
  assert_int_equal(fc_read_file(path, &buf, &n, &err), 0);
  assert_int_equal(n, 5);
  assert_string_equal(buf, "hello");
  free(buf);
  assert_int_equal(fc_atomic_open(&af, path, &err), 0);
  fputs("partial", af.fp);
  fc_atomic_abort(&af);
  assert_int_equal(fc_read_file(path, &buf, &n, &err), 0);
  assert_string_equal(buf, "hello"); /* an aborted write leaves the old file */
  free(buf);
  unlink(path);
  free(path);
  rmdir(dir);
  assert_int_equal(fc_read_file("/nonexistent/x", &buf, &n, &err), FC_EIO);
  assert_non_null(strstr(err.msg, "/nonexistent/x"));
}

static void test_rng(void **state) {
  (void)state;
  fc_rng_t a, b;
  fc_rng_seed(&a, 42);
  fc_rng_seed(&b, 42);
  double sum = 0, sq = 0;
  for (int i = 0; i < 100000; i++) {
    assert_int_equal(fc_rng_u64(&a), fc_rng_u64(&b));
    double x = fc_rng_normal(&a);
    (void)fc_rng_normal(&b);
    sum += x;
    sq += x * x;
  }
  assert_true(fabs(sum / 100000) < 0.02);
  assert_true(fabs(sq / 100000 - 1.0) < 0.03);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_f16_roundtrip),
      cmocka_unit_test(test_bf16),
      cmocka_unit_test(test_atomic_file),
      cmocka_unit_test(test_rng),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
