/* Merges that change a model's layout rather than its values: passthrough with mergekit's
 * slices (layer ranges of several models stacked into a new depth), checked tensor by tensor
 * against the bytes of the layers they came from, with the config's layer count following. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_merge.h"

static char *fixture(const char *model) {
  const char *dir = getenv("FC_FIXTURES");
  assert_non_null(dir);
  char p[1024];
  snprintf(p, sizeof p, "%s/merge/%s", dir, model);
  return realpath(p, NULL);
}

static int run_yaml(const char *text, const char *out, fc_err_t *err) {
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  fc_merge_yaml_t arena;
  int rc = fc_merge_yaml_parse(text, strlen(text), "cfg.yaml", &cfg, &arena, err);
  if (rc) return rc;
  cfg.threads = 2;
  rc = fc_merge_run(&cfg, out, err);
  fc_merge_yaml_free(&arena);
  return rc;
}

/* Tensor `name` of out has the bytes of tensor `src_name` of model `src`. */
static void same_bytes(const fc_st_t *out, const char *name, const fc_st_t *src, const char *src_name) {
  const fc_st_tensor_t *a = fc_st_find(out, name), *b = fc_st_find(src, src_name);
  if (!a) fail_msg("output lacks %s", name);
  assert_non_null(b);
  assert_int_equal(a->dtype, b->dtype);
  assert_int_equal(a->nbytes, b->nbytes);
  if (memcmp(a->data, b->data, a->nbytes)) fail_msg("%s differs from %s of its source", name, src_name);
}

static void test_passthrough_slices(void **state) {
  (void)state;
  char *base = fixture("base"), *m1 = fixture("m1"), *m2 = fixture("m2");
  char tmpl[] = "/tmp/fc_test_layout.XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  char yaml[4096], out[600];
  snprintf(out, sizeof out, "%s/out", tmpl);
  /* The fixture models have layers 0..2 (layer 0 with four tensors, 1 and 2 with two). */
  snprintf(yaml, sizeof yaml,
           "slices:\n"
           "  - sources:\n      - model: %s\n        layer_range: [0, 1]\n"
           "  - sources:\n      - model: %s\n        layer_range: [1, 3]\n"
           "  - sources:\n      - model: %s\n        layer_range: [0, 1]\n"
           "merge_method: passthrough\ndtype: float32\n",
           base, m2, m1);
  fc_err_t err = {0};
  if (run_yaml(yaml, out, &err)) fail_msg("%s", err.msg);
  fc_st_t *o, *sb, *s1, *s2;
  assert_int_equal(fc_st_open(&o, out, &err), 0);
  assert_int_equal(fc_st_open(&sb, base, &err), 0);
  assert_int_equal(fc_st_open(&s1, m1, &err), 0);
  assert_int_equal(fc_st_open(&s2, m2, &err), 0);
  assert_int_equal(fc_st_count(o), 1 + 4 + 2 + 2 + 4 + 1);
  same_bytes(o, "model.embed_tokens.weight", sb, "model.embed_tokens.weight"); /* the first slice's */
  same_bytes(o, "model.norm.weight", s1, "model.norm.weight");                 /* the last slice's */
  static const char *l0[] = {"self_attn.q_proj.weight", "self_attn.q_proj.bias", "mlp.up_proj.weight",
                             "post_attention_layernorm.weight"};
  char a[256], b[256];
  for (int k = 0; k < 4; k++) {
    snprintf(a, sizeof a, "model.layers.0.%s", l0[k]);
    same_bytes(o, a, sb, a);
    snprintf(b, sizeof b, "model.layers.3.%s", l0[k]);
    same_bytes(o, b, s1, a);
  }
  for (int k = 0; k < 2; k++)
    for (int l = 1; l < 3; l++) {
      snprintf(a, sizeof a, "model.layers.%d.%s", l, l0[k == 0 ? 0 : 2]);
      same_bytes(o, a, s2, a); /* m2's layers 1 and 2 are the output's 1 and 2 */
    }
  assert_null(fc_st_find(o, "model.layers.4.mlp.up_proj.weight"));
  fc_st_close(&o);
  fc_st_close(&sb);
  fc_st_close(&s1);
  fc_st_close(&s2);
  char cpath[700];
  snprintf(cpath, sizeof cpath, "%s/config.json", out);
  json_t *cj = json_load_file(cpath, 0, NULL);
  assert_non_null(cj);
  assert_int_equal(json_integer_value(json_object_get(cj, "num_hidden_layers")), 4);
  assert_string_equal(json_string_value(json_object_get(cj, "model_type")), "llama");
  json_decref(cj);

  /* Bad slices: a clear message, nothing merged. */
  struct {
    const char *fmt, *needle;
  } bad[] = {
      {"slices:\n  - sources:\n      - model: %s\n        layer_range: [1, 5]\nmerge_method: passthrough\n",
       "not within the 3 layers"},
      {"slices:\n  - sources:\n      - model: %s\n        layer_range: [1, 1]\nmerge_method: passthrough\n",
       "first < end"},
      {"slices:\n  - sources:\n      - model: %s\n        layer_range: [0, 1]\nmerge_method: ties\n",
       "passthrough only"},
      {"slices:\n  - sources:\n      - model: %s\n        layer_range: [0, 1]\n      - model: x\n"
       "        layer_range: [0, 1]\nmerge_method: passthrough\n",
       "several sources"},
      {"slices:\n  - sources:\n      - model: %s\nmerge_method: passthrough\n", "without 'layer_range"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(yaml, sizeof yaml, bad[i].fmt, base);
    snprintf(out, sizeof out, "%s/bad%zu", tmpl, i);
    fc_err_t e = {0};
    assert_int_not_equal(run_yaml(yaml, out, &e), 0);
    if (!strstr(e.msg, bad[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, bad[i].needle);
  }
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
  free(base);
  free(m1);
  free(m2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_passthrough_slices),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
