/* Merges that change a model's layout rather than its values: passthrough with mergekit's
 * slices (layer ranges of several models stacked into a new depth), checked tensor by tensor
 * against the bytes of the layers they came from, with the config's layer count following;
 * tokenizer_source (embedding rows put in one vocabulary's order, missing rows filled as
 * mergekit fills them), checked row by row on models with small distinct vocabularies, and
 * tokenizer_source union against the PyTorch reference tests/ref/make_union_fixtures.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
       "needs a base model"},
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

/* ---- tokenizer_source ---- */

/* Row r of model k's embedding holds 100 k + 10 r + j (base k = 0, m1 1, m2 2). */
static float rowv(int k, int r, int j) { return (float)(100 * k + 10 * r + j); }

#define H 3
/* A model directory with embed_tokens and lm_head of nrows rows, one layer tensor, and a
 * tokenizer.json with the given vocabulary JSON. */
static void make_model(const char *dir, int k, int nrows, const char *vocab, const char *added) {
  fc_err_t err = {0};
  assert_int_equal(fc_mkdir_p(dir, &err), 0);
  fc_st_spec_t sp[3] = {{.name = "model.embed_tokens.weight", .dtype = FC_DT_F32, .ndim = 2, .shape = {nrows, H}},
                        {.name = "model.layers.0.w", .dtype = FC_DT_F32, .ndim = 2, .shape = {2, 2}},
                        {.name = "lm_head.weight", .dtype = FC_DT_F32, .ndim = 2, .shape = {nrows, H}}};
  char *p = fc_path_join(dir, "model.safetensors");
  fc_st_writer_t *w;
  assert_int_equal(fc_st_writer_new(&w, p, sp, 3, NULL, &err), 0);
  free(p);
  float e[16 * H], l[4] = {(float)k, 1, 2, 3};
  for (int r = 0; r < nrows; r++)
    for (int j = 0; j < H; j++) e[r * H + j] = rowv(k, r, j);
  assert_int_equal(fc_st_writer_put_f32(w, 0, e, &err), 0);
  assert_int_equal(fc_st_writer_put_f32(w, 1, l, &err), 0);
  assert_int_equal(fc_st_writer_put_f32(w, 2, e, &err), 0);
  assert_int_equal(fc_st_writer_finish(&w, &err), 0);
  char tj[512];
  snprintf(tj, sizeof tj, "{\"model\": {\"type\": \"BPE\", \"vocab\": %s}, \"added_tokens\": %s}", vocab, added);
  p = fc_path_join(dir, "tokenizer.json");
  assert_int_equal(fc_write_text_file(p, tj, &err), 0);
  free(p);
  p = fc_path_join(dir, "config.json");
  assert_int_equal(fc_write_text_file(p, "{\"model_type\": \"llama\", \"vocab_size\": 3}", &err), 0);
  free(p);
}

/* Output rows want[t] = {k, r}: the permuted row of each input, or {-1, ..} the mean of two. */
typedef struct {
  int k[3], r[3]; /* per input (base, m1, m2): the model and row its permuted row copies */
  int mean;       /* the base's row is the mean of m1's row 3 and m2's row 2 */
} want_t;

static void check_embeds(const char *out, const want_t *want, int nv) {
  fc_st_t *o;
  fc_err_t err = {0};
  assert_int_equal(fc_st_open(&o, out, &err), 0);
  static const char *names[2] = {"model.embed_tokens.weight", "lm_head.weight"};
  for (int n = 0; n < 2; n++) {
    const fc_st_tensor_t *t = fc_st_find(o, names[n]);
    assert_non_null(t);
    assert_int_equal(t->shape[0], nv);
    const float *v = t->data;
    for (int r = 0; r < nv; r++)
      for (int j = 0; j < H; j++) {
        float in[3];
        for (int q = 0; q < 3; q++) in[q] = rowv(want[r].k[q], want[r].r[q], j);
        if (want[r].mean) in[0] = (rowv(1, 3, j) + rowv(2, 2, j)) / 2.0f;
        /* task_arithmetic, weights 1 and 0.5 */
        const float acc = 1.0f * (in[1] - in[0]) + 0.5f * (in[2] - in[0]), exp = in[0] + acc;
        if (v[r * H + j] != exp) fail_msg("%s[%d][%d] = %g, expected %g", names[n], r, j, v[r * H + j], exp);
      }
  }
  fc_st_close(&o);
}

static void test_tokenizer_source(void **state) {
  (void)state;
  char tmpl[] = "/tmp/fc_test_tok.XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  char b[600], m1[600], m2[600], out[600], yaml[4096];
  snprintf(b, sizeof b, "%s/base", tmpl);
  snprintf(m1, sizeof m1, "%s/m1", tmpl);
  snprintf(m2, sizeof m2, "%s/m2", tmpl);
  make_model(b, 0, 3, "{\"a\": 0, \"b\": 1, \"c\": 2}", "[]");
  make_model(m1, 1, 4, "{\"b\": 0, \"a\": 1, \"c\": 2}", "[{\"id\": 3, \"content\": \"d\"}]");
  make_model(m2, 2, 3, "{\"a\": 0, \"b\": 1, \"d\": 2}", "[]");
  const char *fmt = "merge_method: task_arithmetic\nbase_model: %s\nmodels:\n  - model: %s\n"
                    "  - model: %s\n    parameters: {weight: 0.5}\ntokenizer_source: %s\n%s";
  fc_err_t err = {0};
  /* The base's vocabulary a b c: m1's rows reordered; m2 lacks c, which the base and m1 have:
   * the base's row. */
  snprintf(out, sizeof out, "%s/out_base", tmpl);
  snprintf(yaml, sizeof yaml, fmt, b, m1, m2, "base", "chat_template: chatml\n");
  if (run_yaml(yaml, out, &err)) fail_msg("%s", err.msg);
  const want_t wb[3] = {{{0, 1, 2}, {0, 1, 0}, 0}, {{0, 1, 2}, {1, 0, 1}, 0}, {{0, 1, 0}, {2, 2, 2}, 0}};
  check_embeds(out, wb, 3);
  char path[700];
  snprintf(path, sizeof path, "%s/tokenizer_config.json", out);
  json_t *tc = json_load_file(path, 0, NULL);
  assert_non_null(tc);
  assert_non_null(strstr(json_string_value(json_object_get(tc, "chat_template")), "<|im_start|>"));
  json_decref(tc);
  /* m1's vocabulary b a c d: the base lacks d, which m1 and m2 have: their mean; m2 lacks c:
   * the base's row. The config's vocab_size and the tokenizer follow m1. */
  snprintf(out, sizeof out, "%s/out_m1", tmpl);
  snprintf(yaml, sizeof yaml, fmt, b, m1, m2, m1, "");
  if (run_yaml(yaml, out, &err)) fail_msg("%s", err.msg);
  const want_t wm[4] = {{{0, 1, 2}, {1, 0, 1}, 0}, {{0, 1, 2}, {0, 1, 0}, 0}, {{0, 1, 0}, {2, 2, 2}, 0},
                        {{0, 1, 2}, {0, 3, 2}, 1}};
  check_embeds(out, wm, 4);
  snprintf(path, sizeof path, "%s/config.json", out);
  json_t *cj = json_load_file(path, 0, NULL);
  assert_int_equal(json_integer_value(json_object_get(cj, "vocab_size")), 4);
  json_decref(cj);
  snprintf(path, sizeof path, "%s/tokenizer.json", out);
  json_t *tj = json_load_file(path, 0, NULL);
  assert_non_null(json_object_get(json_object_get(json_object_get(tj, "model"), "vocab"), "b"));
  assert_int_equal(json_array_size(json_object_get(tj, "added_tokens")), 1); /* m1's */
  json_decref(tj);
  /* Refused with a message: union, a name that is no model, an unknown chat template. */
  const char *bad[][2] = {{"/nowhere", "not base, union or a model"}};
  for (int i = 0; i < 1; i++) {
    snprintf(out, sizeof out, "%s/bad%d", tmpl, i);
    snprintf(yaml, sizeof yaml, fmt, b, m1, m2, bad[i][0], "");
    fc_err_t e = {0};
    assert_int_not_equal(run_yaml(yaml, out, &e), 0);
    if (!strstr(e.msg, bad[i][1])) fail_msg("'%s' lacks '%s'", e.msg, bad[i][1]);
  }
  snprintf(yaml, sizeof yaml, fmt, b, m1, m2, "base", "chat_template: vicuna\n");
  assert_int_not_equal(run_yaml(yaml, out, &err), 0);
  assert_non_null(strstr(err.msg, "chat_template 'vicuna' is not supported"));
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
}

/* ---- tokenizer_source: union ---- */

static char *read_text(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  static char buf[8192];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  return buf;
}

/* token -> id of a tokenizer.json as transformers reads it: model.vocab, then added_tokens. */
static json_t *tok_ids(json_t *tj) {
  json_t *ids = json_deep_copy(json_object_get(json_object_get(tj, "model"), "vocab"));
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(tj, "added_tokens"), i, e)
    json_object_set(ids, json_string_value(json_object_get(e, "content")), json_object_get(e, "id"));
  return ids;
}

static void check_union(const char *dir, const char *cas, const char *out) {
  char p[1200];
  snprintf(p, sizeof p, "%s/expected/%s.safetensors", dir, cas);
  fc_st_t *e, *o;
  fc_err_t err = {0};
  assert_int_equal(fc_st_open(&e, p, &err), 0);
  assert_int_equal(fc_st_open(&o, out, &err), 0);
  for (size_t k = 0; k < fc_st_count(e); k++) {
    const fc_st_tensor_t *te = fc_st_at(e, k), *to = fc_st_find(o, te->name);
    if (!to) fail_msg("%s: output lacks %s", cas, te->name);
    assert_int_equal(to->ndim, 2);
    if (to->shape[0] != te->shape[0] || to->shape[1] != te->shape[1])
      fail_msg("%s: %s is %lldx%lld, expected %lldx%lld", cas, te->name, (long long)to->shape[0],
               (long long)to->shape[1], (long long)te->shape[0], (long long)te->shape[1]);
    /* memcpy: a safetensors file need not pad its header (the reference writer, st_write.py,
     * does since it is shared), so floats may sit at any address. */
    const unsigned char *pa = to->data, *pb = te->data;
    for (int64_t i = 0; i < te->numel; i++) {
      float a, b;
      memcpy(&a, pa + 4 * i, 4);
      memcpy(&b, pb + 4 * i, 4);
      float d = a - b;
      if (d < 0) d = -d;
      if (d > 1e-6f * (1.0f + (b < 0 ? -b : b)))
        fail_msg("%s: %s row %lld col %lld = %.9g, reference %.9g", cas, te->name, (long long)(i / te->shape[1]),
                 (long long)(i % te->shape[1]), a, b);
    }
  }
  snprintf(p, sizeof p, "%s/expected/%s_vocab.json", dir, cas);
  json_t *want = json_load_file(p, 0, NULL);
  assert_non_null(want);
  snprintf(p, sizeof p, "%s/tokenizer.json", out);
  json_t *tj = json_load_file(p, 0, NULL);
  assert_non_null(tj);
  json_t *got = tok_ids(tj), *wv = json_object_get(want, "vocab");
  if (!json_equal(got, wv)) {
    char *a = json_dumps(got, JSON_SORT_KEYS), *b = json_dumps(wv, JSON_SORT_KEYS);
    fail_msg("%s: union vocabulary %s, reference %s", cas, a, b);
  }
  /* Each added token with the flags of the model that declared it first. */
  const char *key;
  json_t *we;
  json_object_foreach(json_object_get(want, "added"), key, we) {
    json_t *ge = NULL, *x;
    size_t i;
    json_array_foreach(json_object_get(tj, "added_tokens"), i, x) if (!strcmp(json_string_value(json_object_get(x, "content")), key)) ge = x;
    if (!ge || !json_equal(ge, we)) fail_msg("%s: added token '%s' differs from the reference", cas, key);
  }
  assert_int_equal(json_array_size(json_object_get(tj, "added_tokens")), json_object_size(json_object_get(want, "added")));
  snprintf(p, sizeof p, "%s/config.json", out);
  json_t *cj = json_load_file(p, 0, NULL);
  assert_int_equal(json_integer_value(json_object_get(cj, "vocab_size")), json_integer_value(json_object_get(want, "rows")));
  /* tokenizer_config.json's decoder lists the new added tokens too */
  snprintf(p, sizeof p, "%s/tokenizer_config.json", out);
  json_t *tc = json_load_file(p, 0, NULL);
  char id[32];
  snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(wv, "<|im_end|>")));
  assert_non_null(json_object_get(json_object_get(tc, "added_tokens_decoder"), id));
  json_decref(tc);
  json_decref(cj);
  json_decref(got);
  json_decref(tj);
  json_decref(want);
  fc_st_close(&o);
  fc_st_close(&e);
}

static void test_tokenizer_union(void **state) {
  (void)state;
  char *dir = fixture("union"), cwd[1024];
  assert_non_null(dir);
  assert_non_null(getcwd(cwd, sizeof cwd));
  char tmpl[] = "/tmp/fc_test_union.XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  assert_int_equal(chdir(dir), 0); /* the configs name models relative to their directory */
  static const char *cases[] = {"union", "union_pad"};
  for (int c = 0; c < 2; c++) {
    char yp[1200], out[700];
    snprintf(yp, sizeof yp, "%s/%s.yaml", dir, cases[c]);
    snprintf(out, sizeof out, "%s/%s", tmpl, cases[c]);
    fc_err_t err = {0};
    if (run_yaml(read_text(yp), out, &err)) fail_msg("%s: %s", cases[c], err.msg);
    check_union(dir, cases[c], out);
  }
  /* Refused with a message: per-token sources, both keys, passthrough. */
  const char *bad[][2] = {
      {"merge_method: linear\nmodels: [{model: m1}, {model: m2}]\ntokenizer:\n  source: union\n  tokens:\n"
       "    x: {source: m1}\n", "tokenizer.tokens (per-token embedding sources) is not supported"},
      {"merge_method: linear\nmodels: [{model: m1}, {model: m2}]\ntokenizer_source: base\ntokenizer: {source: union}\n",
       "not both"},
      {"merge_method: passthrough\nmodels: [{model: m1}]\ntokenizer_source: union\n", "not supported with passthrough"},
      {"merge_method: linear\nmodels: [{model: m1}, {model: m2}]\ntokenizer: {pad_to_multiple_of: 0}\n",
       "positive integer"}};
  for (int i = 0; i < 4; i++) {
    char out[700];
    snprintf(out, sizeof out, "%s/bad%d", tmpl, i);
    fc_err_t e = {0};
    assert_int_not_equal(run_yaml(bad[i][0], out, &e), 0);
    if (!strstr(e.msg, bad[i][1])) fail_msg("'%s' lacks '%s'", e.msg, bad[i][1]);
  }
  assert_int_equal(chdir(cwd), 0);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
  free(dir);
}

/* Merges by slices (mergekit's plan_slice: the layers of each slice's sources merged side by
 * side, parameters at the position within the slice) against tests/ref/make_merge_fixtures.py,
 * and the config's layer count following the new depth. */
static void test_slices_merge(void **state) {
  (void)state;
  static const char *cases[] = {"slices_slerp", "slices_ties"};
  char tmpl[] = "/tmp/fc_test_slices.XXXXXX", cwd[4096];
  assert_non_null(mkdtemp(tmpl));
  assert_non_null(getcwd(cwd, sizeof cwd));
  char *dir = fixture("");
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    char yaml[256], out[512], want[1200], dpath[1200];
    snprintf(yaml, sizeof yaml, "%s.yaml", cases[c]);
    snprintf(out, sizeof out, "%s/%s", tmpl, cases[c]);
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    fc_merge_yaml_t arena;
    fc_err_t err = {0};
    assert_int_equal(chdir(dir), 0); /* the configs name models relative to their directory */
    int rc = fc_merge_yaml_load(yaml, &cfg, &arena, &err);
    if (!rc) {
      cfg.threads = 2;
      rc = fc_merge_run(&cfg, out, &err);
      fc_merge_yaml_free(&arena);
    }
    assert_int_equal(chdir(cwd), 0);
    if (rc) fail_msg("%s: %s", cases[c], err.msg);
    snprintf(want, sizeof want, "%s/expected/%s.safetensors", dir, cases[c]);
    fc_st_t *g, *w;
    assert_int_equal(fc_st_open(&g, out, &err), 0);
    assert_int_equal(fc_st_open(&w, want, &err), 0);
    assert_int_equal(fc_st_count(g), fc_st_count(w));
    for (size_t k = 0; k < fc_st_count(w); k++) {
      const fc_st_tensor_t *tw = fc_st_at(w, k), *tg = fc_st_find(g, tw->name);
      if (!tg) fail_msg("%s: output lacks %s", cases[c], tw->name);
      assert_int_equal(tg->numel, tw->numel);
      float *fw = malloc((size_t)tw->numel * 4), *fg = malloc((size_t)tw->numel * 4);
      assert_int_equal(fc_st_to_f32(tw, fw, &err), 0);
      assert_int_equal(fc_st_to_f32(tg, fg, &err), 0);
      for (int64_t i = 0; i < tw->numel; i++)
        if (!(fabsf(fg[i] - fw[i]) <= 1e-6f * fabsf(fw[i]) + 1e-7f))
          fail_msg("%s: %s[%lld] = %.9g, expected %.9g", cases[c], tw->name, (long long)i, fg[i], fw[i]);
      free(fw), free(fg);
    }
    fc_st_close(&g);
    fc_st_close(&w);
    snprintf(dpath, sizeof dpath, "%s/expected/%s.depth", dir, cases[c]);
    FILE *f = fopen(dpath, "r");
    int depth = -1;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &depth), 1);
    fclose(f);
    snprintf(dpath, sizeof dpath, "%s/config.json", out);
    json_t *cj = json_load_file(dpath, 0, NULL);
    assert_non_null(cj);
    assert_int_equal(json_integer_value(json_object_get(cj, "num_hidden_layers")), depth);
    json_decref(cj);
  }
  /* Slices that cannot be merged: a clear message. */
  struct {
    const char *text, *needle;
  } bad[] = {
      {"merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nslices:\n"
       "  - sources: [{model: base, layer_range: [0, 2]}, {model: m1, layer_range: [0, 1]}]\n",
       "same number of layers"},
      {"merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nslices:\n"
       "  - sources: [{model: base, layer_range: [0, 1]}, {model: m1, layer_range: [0, 1]}]\n"
       "  - sources: [{model: base, layer_range: [1, 2]}, {model: m2, layer_range: [1, 2]}]\n",
       "not one of the first slice's models"},
      {"merge_method: ties\nbase_model: base\nslices:\n"
       "  - sources: [{model: m1, layer_range: [0, 1]}, {model: m2, layer_range: [0, 1]}]\n",
       "base model base is not among its sources"},
      {"merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nslices:\n"
       "  - sources: [{model: base, layer_range: [0, 1]}, {model: m1, layer_range: [1, 2]}]\n",
       "is missing from m1"},
      {"merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nslices:\n"
       "  - sources: [{model: base, layer_range: [1, 2]}, {model: m1, layer_range: [0, 1]}]\n",
       "does not have the shape"},
      {"merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nslices:\n"
       "  - sources: [{model: base, layer_range: [2, 4]}, {model: m1, layer_range: [1, 3]}]\n",
       "not within the 3 layers"},
      {"merge_method: slerp\nbase_model: base\nslices:\n"
       "  - sources: [{model: base, layer_range: [0, 1], parameters: {t: 0.5}}, {model: m1, layer_range: [0, 1]}]\n",
       "top-level parameters"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char out[512];
    snprintf(out, sizeof out, "%s/bad%zu", tmpl, i);
    fc_err_t e = {0};
    assert_int_equal(chdir(dir), 0);
    int rc = run_yaml(bad[i].text, out, &e);
    assert_int_equal(chdir(cwd), 0);
    assert_int_not_equal(rc, 0);
    if (!strstr(e.msg, bad[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, e.msg, bad[i].needle);
  }
  free(dir);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_passthrough_slices),
      cmocka_unit_test(test_slices_merge),
      cmocka_unit_test(test_tokenizer_source),
      cmocka_unit_test(test_tokenizer_union),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
