/* The shared readers of src/util: the number parser (whole string, range checks, messages
 * naming the key and the range) and the YAML tree (positions, duplicate keys, alias caps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_num.h"
#include "fc_yaml.h"

static void test_num_long(void **state) {
  (void)state;
  long v = -7;
  fc_err_t err = {0};
  assert_int_equal(fc_num_long("8", 1, 10, &v, "'n'", &err), 0);
  assert_int_equal(v, 8);
  assert_int_equal(fc_num_long("-3", -5, 10, &v, "'n'", &err), 0);
  assert_int_equal(v, -3);
  /* what strtol/atol would take as 8 or 0 */
  const char *bad[] = {"8x", "", " 8", "8 ", "0x10", "1e3", "abc", "99999999999999999999999", "8.0"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    v = 5;
    assert_int_equal(fc_num_long(bad[i], 0, 1L << 40, &v, "'n'", &err), FC_EINVAL);
    assert_int_equal(v, 5);
    assert_non_null(strstr(err.msg, "'n' must be an integer"));
  }
  assert_int_equal(fc_num_long("1000", 1, 256, &v, "'top_k'", &err), FC_EINVAL);
  assert_string_equal(err.msg, "'top_k' is 1000, it must be in [1, 256]");
  assert_int_equal(fc_num_long("0", 1, 256, &v, "--top-k", &err), FC_EINVAL);
  assert_string_equal(err.msg, "--top-k is 0, it must be in [1, 256]");
  assert_int_equal(fc_num_long(NULL, 1, 256, &v, "x", NULL), FC_EINVAL);
}

static void test_num_u64_double_bool(void **state) {
  (void)state;
  uint64_t u = 0;
  fc_err_t err = {0};
  assert_int_equal(fc_num_u64("18446744073709551615", 0, UINT64_MAX, &u, "'seed'", &err), 0);
  assert_true(u == UINT64_MAX);
  assert_int_equal(fc_num_u64("-1", 0, UINT64_MAX, &u, "'seed'", &err), FC_EINVAL);
  assert_int_equal(fc_num_u64("+1", 0, UINT64_MAX, &u, "'seed'", &err), FC_EINVAL);
  assert_int_equal(fc_num_u64("18446744073709551616", 0, UINT64_MAX, &u, "'seed'", &err), FC_EINVAL);
  double d = 0;
  assert_int_equal(fc_num_double("5e-6", 0, 10, &d, "'lr'", &err), 0);
  assert_true(d == 5e-6);
  assert_int_equal(fc_num_double("1.5", 0, 1, &d, "'lambda'", &err), FC_EINVAL);
  assert_string_equal(err.msg, "'lambda' is 1.5, it must be in [0, 1]");
  const char *bad[] = {"nan", "inf", "-inf", "0.5x", "", " 0.5", "1e999", "fast"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    d = 0.25;
    assert_int_equal(fc_num_double(bad[i], -1e300, 1e300, &d, "'x'", &err), FC_EINVAL);
    assert_true(d == 0.25);
    assert_non_null(strstr(err.msg, "must be a number"));
  }
  assert_int_equal(fc_num_double("1e-320", 0, 1, &d, "'x'", &err), 0); /* a denormal is a number */
  int b = -1;
  assert_int_equal(fc_num_bool("Yes", &b, "'sft'", &err), 0);
  assert_int_equal(b, 1);
  assert_int_equal(fc_num_bool("off", &b, "'sft'", &err), 0);
  assert_int_equal(b, 0);
  assert_int_equal(fc_num_bool("maybe", &b, "'sft'", &err), FC_EINVAL);
  char buf[32];
  double vals[] = {5e-6, 0.1, 1.0 / 3, 2048, 1e-5};
  for (size_t i = 0; i < 5; i++) {
    fc_num_format_double(vals[i], buf, sizeof buf);
    assert_true(strtod(buf, NULL) == vals[i]);
  }
  fc_num_format_double(0.03, buf, sizeof buf);
  assert_string_equal(buf, "0.03");
}

static void test_yaml_tree(void **state) {
  (void)state;
  const char *text = "name: j1\n"
                     "training:\n"
                     "  lr: 1e-4\n"
                     "  seq_len: '12'\n"
                     "models:\n"
                     "  - {name: a, path: /x}\n"
                     "  - b\n";
  fc_yaml_doc_t *d;
  fc_err_t err = {0};
  assert_int_equal(fc_yaml_parse(text, strlen(text), "t.yaml", &d, &err), 0);
  const fc_yaml_node_t *r = fc_yaml_root(d);
  assert_int_equal(r->kind, FC_YAML_MAP);
  assert_int_equal(r->n, 3);
  assert_string_equal(fc_yaml_str(fc_yaml_get(r, "name")), "j1");
  const fc_yaml_node_t *tr = fc_yaml_get(r, "training");
  double lr;
  assert_int_equal(fc_yaml_double(fc_yaml_get(tr, "lr"), "lr", 0, 10, &lr, &err), 0);
  assert_true(lr == 1e-4);
  const fc_yaml_node_t *sl = fc_yaml_get(tr, "seq_len");
  assert_true(sl->quoted);
  assert_int_equal(sl->line, 4);
  assert_int_equal(sl->col, 12);
  long v;
  assert_int_equal(fc_yaml_long(sl, "seq_len", 2, 100, &v, &err), 0);
  assert_int_equal(v, 12);
  assert_int_equal(fc_yaml_long(sl, "seq_len", 20, 100, &v, &err), FC_EINVAL);
  assert_string_equal(err.msg, "t.yaml:4:12: 'seq_len' is 12, it must be in [20, 100]");
  const fc_yaml_node_t *m = fc_yaml_get(r, "models");
  assert_int_equal(m->kind, FC_YAML_LIST);
  assert_int_equal(m->n, 2);
  assert_string_equal(fc_yaml_str(fc_yaml_get(m->item[0], "path")), "/x");
  assert_null(fc_yaml_get(m->item[1], "path"));
  assert_null(fc_yaml_str(m));
  assert_int_equal(fc_yaml_long(m, "models", 0, 1, &v, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "t.yaml:6:3: 'models' must be a plain value"));
  static const char *const known[] = {"name", "models", NULL};
  assert_int_equal(fc_yaml_check_keys(r, "the job spec", known, &err), FC_EINVAL);
  assert_string_equal(err.msg, "t.yaml:2:1: unknown key 'training' in the job spec (known: name, models)");
  fc_yaml_destroy(&d);
  assert_null(d);
}

static void test_yaml_errors(void **state) {
  (void)state;
  fc_yaml_doc_t *d = NULL;
  fc_err_t err = {0};
  const char *dup = "a: 1\nb: 2\na: 3\n";
  assert_int_equal(fc_yaml_parse(dup, strlen(dup), "d.yaml", &d, &err), FC_EINVAL);
  assert_string_equal(err.msg, "d.yaml:3:1: 'a' given twice");
  assert_null(d);
  const char *broken = "a: [1, 2\n";
  assert_int_equal(fc_yaml_parse(broken, strlen(broken), "b.yaml", &d, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "b.yaml:"));
  assert_non_null(strstr(err.msg, "YAML error"));
  const char *cplx = "? [1]\n: 2\n";
  assert_int_equal(fc_yaml_parse(cplx, strlen(cplx), "k.yaml", &d, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "keys must be plain values"));
  /* nine levels of ten aliases each would expand to 10^9 nodes */
  char laughs[2048] = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  for (char c = 'b'; c <= 'j'; c++) {
    char line[128];
    snprintf(line, sizeof line, "%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n", c, c, c - 1, c - 1,
             c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1, c - 1);
    strcat(laughs, line);
  }
  assert_int_equal(fc_yaml_parse(laughs, strlen(laughs), "l.yaml", &d, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "too many nodes"));
  assert_int_equal(fc_yaml_parse("", 0, "e.yaml", &d, &err), 0);
  assert_null(fc_yaml_root(d));
  fc_yaml_destroy(&d);
  assert_int_equal(fc_yaml_load_file("/nonexistent/x.yaml", &d, &err), FC_EIO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_num_long),
      cmocka_unit_test(test_num_u64_double_bool),
      cmocka_unit_test(test_yaml_tree),
      cmocka_unit_test(test_yaml_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
