/* The stage-parameter tables: every default inside its range, one definition for a key that
 * feeds several stages, typed parsing that refuses what atol took, and the daemons' view (a
 * task's params over the table's defaults) agreeing with the job reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <string.h>

#include "fc_schema.h"

static void test_tables_are_consistent(void **state) {
  (void)state;
  size_t ns;
  const fc_task_schema_t *all = fc_schema_all(&ns);
  assert_true(ns >= 7);
  for (size_t i = 0; i < ns; i++)
    for (size_t k = 0; k < all[i].nparams; k++) {
      const fc_param_t *p = &all[i].params[k];
      assert_non_null(p->help);
      assert_true(p->off == FC_PARAM_NOSTORE || p->off < all[i].size);
      if (p->type == FC_PARAM_INT || p->type == FC_PARAM_U64 || p->type == FC_PARAM_FLOAT) {
        assert_true(p->lo <= p->hi);
        /* inside its range, but for merge density whose default is the method's */
        assert_true((p->def >= p->lo && p->def <= p->hi) || (!strcmp(all[i].kind, "merge") && !strcmp(p->key, "density")));
      }
      if (p->type == FC_PARAM_ENUM) {
        assert_non_null(strstr(p->choices, p->sdef));
        /* the default parses as a value of its own table */
        void *st = test_calloc(1, all[i].size);
        assert_int_equal(fc_schema_set(p, p->sdef, "x", st, NULL), 0);
        test_free(st);
      }
      for (size_t a = 0; a <= i; a++) /* a YAML key feeding several stages has one definition */
        for (size_t b = 0; b < all[a].nparams; b++) {
          const fc_param_t *q = &all[a].params[b];
          if (q == p || !q->yaml || !p->yaml || strcmp(q->yaml, p->yaml)) continue;
          assert_true(q->def == p->def && q->lo == p->lo && q->hi == p->hi && q->type == p->type);
        }
    }
  assert_string_equal(fc_schema_daemon_of("vocab-map"), "align");
  assert_string_equal(fc_schema_daemon_of("train"), "train");
  assert_string_equal(fc_schema_daemon_of("logits-import"), "align"); /* tokenizers only */
  assert_null(fc_schema_daemon_of("sleep"));
  assert_null(fc_schema_daemon_of("job"));
  const fc_param_t *k = fc_schema_param(fc_schema_find("logits"), "top_k");
  assert_true(k->hi == FC_TOPK_MAX_K);
}

static void test_task_params(void **state) {
  (void)state;
  fc_train_params_t p;
  fc_err_t err = {0};
  /* no params: the table's defaults, the same the job reference prints */
  assert_int_equal(fc_schema_parse("train", NULL, 0, &p, &err), 0);
  const fc_task_schema_t *t = fc_schema_find("train");
  assert_true(p.lr == fc_schema_param(t, "lr")->def);
  assert_true(p.seq_len == (long)fc_schema_param(t, "seq_len")->def);
  assert_true(p.batch_size == (long)fc_schema_param(t, "batch_size")->def);
  char text[64];
  fc_schema_format_default(fc_schema_param(t, "lr"), text, sizeof text);
  fc_schema_format_value(fc_schema_param(t, "lr"), &p, text + 32, 32);
  assert_string_equal(text, text + 32);
  fc_kv_t kv[] = {{"lr", "1e-4"}, {"seq_len", "64"}, {"seed", "7"}, {"source", "s1"}};
  assert_int_equal(fc_schema_parse("train", kv, 4, &p, &err), 0);
  assert_true(p.lr == 1e-4 && p.seq_len == 64 && p.seed == 7);
  assert_string_equal(p.source, "s1");
  fc_kv_t bad[] = {{"batch_size", "8x"}};
  assert_int_equal(fc_schema_parse("train", bad, 1, &p, &err), FC_EINVAL);
  assert_string_equal(err.msg, "train parameter 'batch_size' must be an integer in [1, 65536], not '8x'");
  fc_kv_t seq[] = {{"seq_len", "1"}};
  assert_int_equal(fc_schema_parse("train", seq, 1, &p, &err), FC_EINVAL);
  assert_string_equal(err.msg, "train parameter 'seq_len' is 1, it must be in [2, 1048576]");
  fc_kv_t unk[] = {{"momentum", "0.9"}};
  assert_int_equal(fc_schema_parse("train", unk, 1, &p, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "unknown train parameter 'momentum'"));
  /* merge is open: the method's own parameters pass to the merge floor */
  fc_merge_params_t m;
  fc_kv_t mk[] = {{"method", "ties"}, {"select_topk", "0.1"}};
  assert_int_equal(fc_schema_parse("merge", mk, 2, &m, &err), 0);
  assert_string_equal(m.method, "ties");
  assert_true(m.density < 0); /* the method's default */
  fc_kv_t mm[] = {{"method", "average"}};
  assert_int_equal(fc_schema_parse("merge", mm, 1, &m, &err), FC_EINVAL);
  fc_logits_params_t l;
  fc_kv_t lk[] = {{"top_k", "257"}};
  assert_int_equal(fc_schema_parse("logits", lk, 1, &l, &err), FC_EINVAL);
  assert_int_equal(fc_schema_parse("no-such-kind", NULL, 0, &l, &err), FC_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tables_are_consistent),
      cmocka_unit_test(test_task_params),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
