/* Merging: every method against PyTorch references written from mergekit's and FuseChat's
 * definitions (tests/ref/make_merge_fixtures.py), run end to end from the YAML configs; the
 * result is the same for 1 and 3 threads; identities; clear errors naming the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_merge.h"
#include "mem_tensor.h"

static const char *CASES[] = {"linear",      "linear_nonorm", "task_arithmetic", "ties",
                              "ties_nonorm", "dare_ties",     "dare_linear",     "slerp",
                              "sce",         "sce_weights",   "sce_all",         "varm",
                              /* mergekit's configs as written (parameters resolved per tensor) */
                              "ties_global", "breadcrumbs",   "breadcrumbs_ties", "della",
                              "della_linear", "gradient",     "filter",          "filter_models",
                              "nearswap",    "model_stock",   "nuslerp",         "nuslerp_nobase",
                              "multislerp",  "multislerp_nobase", "karcher",    "arcee_fusion",
                              /* angles per row / column */
                              "nuslerp_rows", "nuslerp_cols_nobase", "model_stock_rows",
                              "ram",         "ramplus_tl"};

static char *merge_dir(void) {
  const char *dir = getenv("FC_FIXTURES");
  assert_non_null(dir);
  return fc_path_join(dir, "merge");
}

static char *tmpdir(void) {
  char tmpl[] = "/tmp/fc_test_merge.XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  return fc_xstrdup(tmpl);
}

static void rm_rf(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* Every tensor of got equals want within rel relative (1e-8 absolute near zero), plus `scale`
 * times the tensor's largest magnitude (for references in f64 where f32 sums cancel). */
static void compare_models_scaled(const char *got_path, const char *want_path, double rel, double scale) {
  fc_st_t *got, *want;
  fc_err_t err = {0};
  assert_int_equal(fc_st_open(&got, got_path, &err), 0);
  assert_int_equal(fc_st_open(&want, want_path, &err), 0);
  assert_int_equal(fc_st_count(got), fc_st_count(want));
  for (size_t k = 0; k < fc_st_count(want); k++) {
    const fc_st_tensor_t *w = fc_st_at(want, k), *g = fc_st_find(got, w->name);
    assert_non_null(g);
    assert_int_equal(g->numel, w->numel);
    float *ow, *og;
    const float *fw = fc_st_f32(w, &ow, &err), *fg = fc_st_f32(g, &og, &err);
    double big = 0;
    for (int64_t i = 0; i < w->numel; i++) big = fabs(fw[i]) > big ? fabs(fw[i]) : big;
    for (int64_t i = 0; i < w->numel; i++) {
      double tol = rel * fabs(fw[i]) + scale * big + 1e-8;
      if (!(fabs(fg[i] - fw[i]) <= tol))
        fail_msg("%s: tensor %s[%lld] = %.9g, expected %.9g", got_path, w->name, (long long)i, fg[i], fw[i]);
    }
    free(ow);
    free(og);
  }
  fc_st_close(&got);
  fc_st_close(&want);
}

static void compare_models(const char *got_path, const char *want_path, double rel) {
  compare_models_scaled(got_path, want_path, rel, 0);
}

static int run_case(const char *name, int threads, int dtype, const char *out, fc_merge_stats_t *stats,
                    fc_err_t *err) {
  char *dir = merge_dir();
  char yaml[64];
  snprintf(yaml, sizeof yaml, "%s.yaml", name);
  char cwd[4096];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0); /* the configs name models relative to their directory */
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  fc_merge_yaml_t arena;
  int rc = fc_merge_yaml_load(yaml, &cfg, &arena, err);
  if (rc == 0) {
    cfg.threads = threads;
    cfg.stats = stats;
    if (dtype >= 0) cfg.dtype = dtype;
    rc = fc_merge_run(&cfg, out, err);
    fc_merge_yaml_free(&arena);
  }
  assert_int_equal(chdir(cwd), 0);
  free(dir);
  return rc;
}

static void test_fixture_cases(void **state) {
  (void)state;
  for (int band = 0; band < 2; band++) {
  fc_merge_band_min = band ? 0 : (size_t)1 << 40; /* radix select, then the band pass */
  char *dir = merge_dir(), *tmp = tmpdir();
  char *wpath = fc_path_join(dir, "expected/weights.json");
  json_t *weights = json_load_file(wpath, 0, NULL);
  assert_non_null(weights);
  for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
    char out[600], want[600];
    snprintf(out, sizeof out, "%s/%s", tmp, CASES[c]);
    snprintf(want, sizeof want, "%s/expected/%s.safetensors", dir, CASES[c]);
    fc_merge_stats_t stats;
    fc_err_t err = {0};
    int rc = run_case(CASES[c], 2, -1, out, &stats, &err);
    if (rc) fail_msg("case %s: %s", CASES[c], err.msg);
    /* multislerp's reference is mergekit's algorithm literally, in f64: our f32 sums round
     * where it does not, visibly where the terms cancel (1e-6 of the tensor's scale). */
    compare_models_scaled(out, want, 1e-6, strstr(CASES[c], "slerp") || !strcmp(CASES[c], "karcher") ? 1e-6 : 0);
    /* Sharded like the base, with the side files. */
    const char *files[5] = {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "config.json", "tokenizer.json"};
    /* Without a base (nuslerp_nobase), the first model's layout: one file, no side files. */
    const int nobase = strstr(CASES[c], "nobase") != NULL || !strcmp(CASES[c], "karcher");
    if (nobase) files[0] = "model.safetensors";
    for (int f = 0; f < (nobase ? 1 : 5); f++) {
      char *p = fc_path_join(out, files[f]);
      assert_true(fc_path_exists(p));
      free(p);
    }
    json_t *ew = json_object_get(weights, CASES[c]);
    if (ew) {
      assert_int_equal(stats.nmodels, json_array_size(ew));
      for (int i = 0; i < stats.nmodels; i++)
        assert_true(fabs(stats.mean_weight[i] - json_real_value(json_array_get(ew, (size_t)i))) < 1e-6);
    }
  }
  /* bf16 output: the reference rounded to bf16. */
  char out[600], want[600];
  snprintf(out, sizeof out, "%s/linear_bf16", tmp);
  snprintf(want, sizeof want, "%s/expected/linear.safetensors", dir);
  fc_err_t err = {0};
  assert_int_equal(run_case("linear", 1, FC_DT_BF16, out, NULL, &err), 0);
  fc_st_t *st;
  assert_int_equal(fc_st_open(&st, out, &err), 0);
  assert_int_equal(fc_st_at(st, 0)->dtype, FC_DT_BF16);
  fc_st_close(&st);
  compare_models(out, want, 1.0 / 256);
  char *cfgp = fc_path_join(out, "config.json");
  json_t *cj = json_load_file(cfgp, 0, NULL);
  assert_string_equal(json_string_value(json_object_get(cj, "torch_dtype")), "bfloat16");
  json_decref(cj);
  free(cfgp);
  json_decref(weights);
  free(wpath);
  rm_rf(tmp);
  free(tmp);
  free(dir);
  }
  fc_merge_band_min = (size_t)1 << 18;
  /* Both fixture passes ran; the band resolved ties' and sce's selections on up_proj. */
  assert_true(fc_merge_band_hits >= 6);
}

/* ---- in-memory tensors ---- */

/* Methods that merge the base with exactly one other model. */
static int one_model(int meth) {
  return fc_merge_method_pairwise((fc_merge_method_t)meth) || meth == FC_MERGE_ARCEE_FUSION;
}

#define NBIG 50000 /* several blocks */

static void test_threads_invariant(void **state) {
  (void)state;
  fc_rng_t r;
  fc_rng_seed(&r, 99);
  float *b = fc_xmalloc(NBIG * 4), *m[3];
  uint16_t *mb = fc_xmalloc(NBIG * 2);
  for (int i = 0; i < NBIG; i++) b[i] = fc_rng_normal(&r);
  for (int k = 0; k < 3; k++) {
    m[k] = fc_xmalloc(NBIG * 4);
    for (int i = 0; i < NBIG; i++)
      m[k][i] = b[i] + (k == 2 ? 0.01f * fc_rng_normal(&r) : 0.25f * (float)((int)(fc_rng_u64(&r) % 5) - 2));
  }
  for (int i = 0; i < NBIG; i++) mb[i] = fc_f32_to_bf16(m[2][i]); /* a bf16 input too */
  fc_st_tensor_t tb = mk("x", FC_DT_F32, b, NBIG), t0 = mk("x", FC_DT_F32, m[0], NBIG),
                 t1 = mk("x", FC_DT_F32, m[1], NBIG), t2 = mk("x", FC_DT_BF16, mb, NBIG);
  const fc_st_tensor_t *ins[3] = {&t0, &t1, &t2};
  fc_merge_model_t mods[3] = {{.path = "a", .weight = 1.0, .density = 0.3}, {.path = "b", .weight = 0.5, .density = 0.6}, {.path = "c", .weight = 0.7, .density = 0.5}};
  float *o1 = fc_xmalloc(NBIG * 4), *o3 = fc_xmalloc(NBIG * 4);
  float *ob = fc_xmalloc(NBIG * 4);
  for (int meth = 0; meth < FC_MERGE_COUNT; meth++) {
    if (meth == FC_MERGE_PASSTHROUGH) continue; /* copies whole tensors (test_merge_layout) */
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = (fc_merge_method_t)meth;
    cfg.models = mods;
    cfg.nmodels = one_model(meth) ? 1 : meth == FC_MERGE_NUSLERP ? 2 : 3;
    cfg.t = 0.4;
    cfg.select_topk = 0.2;
    cfg.seed = 5;
    for (int scope = 0; scope < 2; scope++) {
      cfg.sce_mask_scope = (fc_sce_scope_t)scope;
      fc_err_t err = {0};
      double w1[3], w3[3];
      const fc_st_tensor_t *kb = meth == FC_MERGE_KARCHER ? NULL : &tb; /* karcher takes no base */
      assert_int_equal(fc_merge_tensor(&cfg, "x", kb, ins, o1, w1, 1, &err), 0);
      assert_int_equal(fc_merge_tensor(&cfg, "x", kb, ins, o3, w3, 3, &err), 0);
      if (memcmp(o1, o3, NBIG * 4)) fail_msg("%s differs between 1 and 3 threads", fc_merge_method_name(cfg.method));
      assert_memory_equal(w1, w3, sizeof(double) * (size_t)cfg.nmodels);
      /* The band selection (one pass) picks exactly what the radix select picks. */
      fc_merge_band_min = 0;
      size_t hits = fc_merge_band_hits;
      assert_int_equal(fc_merge_tensor(&cfg, "x", kb, ins, ob, w3, 3, &err), 0);
      if (meth == FC_MERGE_TIES) assert_int_equal(fc_merge_band_hits - hits, 3);
      if (meth == FC_MERGE_SCE) assert_int_equal(fc_merge_band_hits - hits, 1);
      assert_int_equal(fc_merge_tensor(&cfg, "x", kb, ins, o3, w3, 1, &err), 0);
      fc_merge_band_min = (size_t)1 << 18;
      if (memcmp(ob, o3, NBIG * 4)) fail_msg("%s (band) differs between 1 and 3 threads", fc_merge_method_name(cfg.method));
      for (int i = 0; i < NBIG; i++)
        if (fabsf(ob[i] - o1[i]) > 1e-6f * fabsf(o1[i]) + 1e-7f)
          fail_msg("%s: band and radix selections differ at %d: %g %g", fc_merge_method_name(cfg.method), i, ob[i], o1[i]);
    }
  }
  free(ob);
  /* TIES keeps exactly int(density * n) elements per model even with ties at the boundary. */
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  cfg.method = FC_MERGE_TIES;
  fc_merge_model_t one[1] = {{.path = "a", .weight = 1.0, .density = 0.3}};
  cfg.models = one;
  cfg.nmodels = 1;
  fc_err_t err = {0};
  assert_int_equal(fc_merge_tensor(&cfg, "x", &tb, ins, o1, NULL, 3, &err), 0);
  int kept = 0;
  for (int i = 0; i < NBIG; i++) kept += o1[i] != b[i];
  assert_int_equal(kept, (int)(0.3 * NBIG));
  free(o1);
  free(o3);
  free(b);
  free(mb);
  for (int k = 0; k < 3; k++) free(m[k]);
}

static void test_identities(void **state) {
  (void)state;
  enum { N = 3000 };
  float base[N], mdl[N], out[N];
  fc_rng_t r;
  fc_rng_seed(&r, 3);
  for (int i = 0; i < N; i++) {
    base[i] = fc_rng_normal(&r);
    mdl[i] = base[i] + 0.1f * fc_rng_normal(&r);
  }
  fc_st_tensor_t tb = mk("y", FC_DT_F32, base, N), tm = mk("y", FC_DT_F32, mdl, N);
  const fc_st_tensor_t *same[3] = {&tm, &tm, &tm}, *bases[3] = {&tb, &tb, &tb};
  fc_merge_model_t mods[3] = {{.path = "a", .weight = 0.2, .density = 1}, {.path = "b", .weight = 0.3, .density = 1}, {.path = "c", .weight = 0.5, .density = 1}};
  for (int meth = 0; meth < FC_MERGE_COUNT; meth++) {
    if (meth == FC_MERGE_PASSTHROUGH) continue; /* copies whole tensors (test_merge_layout) */
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = (fc_merge_method_t)meth;
    cfg.models = mods;
    cfg.nmodels = one_model(meth) ? 1 : meth == FC_MERGE_NUSLERP ? 2 : 3;
    cfg.t = 0.5;
    cfg.normalize = meth == FC_MERGE_TASK_ARITHMETIC || meth == FC_MERGE_DARE_LINEAR ? 1 : -1;
    fc_err_t err = {0};
    /* Identical models merge to that model (base = the model for slerp). */
    const fc_st_tensor_t *bb = one_model(meth) ? &tm
                               : meth == FC_MERGE_KARCHER                        ? NULL
                                                                                 : &tb;
    assert_int_equal(fc_merge_tensor(&cfg, "y", bb, same, out, NULL, 2, &err), 0);
    for (int i = 0; i < N; i++)
      if (fabsf(out[i] - mdl[i]) > 1e-6f * fabsf(mdl[i]) + 1e-7f)
        fail_msg("%s of identical models: [%d] %g != %g", fc_merge_method_name(cfg.method), i, out[i], mdl[i]);
    /* Models equal to the base merge to the base. */
    if (meth != FC_MERGE_LINEAR) {
      assert_int_equal(fc_merge_tensor(&cfg, "y", meth == FC_MERGE_KARCHER ? NULL : &tb, bases, out, NULL, 2, &err), 0);
      for (int i = 0; i < N; i++) /* exact, except VaRM's and karcher's sums of thirds */
        if (meth == FC_MERGE_VARM || meth == FC_MERGE_KARCHER ? fabsf(out[i] - base[i]) > 1e-6f * fabsf(base[i]) : out[i] != base[i])
          fail_msg("%s of base copies: [%d] %g != %g", fc_merge_method_name(cfg.method), i, out[i], base[i]);
    }
  }
  /* Linear with one model returns it exactly. */
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  cfg.method = FC_MERGE_LINEAR;
  fc_merge_model_t one[1] = {{.path = "a", .weight = 0.7, .density = 1}};
  cfg.models = one;
  cfg.nmodels = 1;
  fc_err_t err = {0};
  assert_int_equal(fc_merge_tensor(&cfg, "y", NULL, same, out, NULL, 1, &err), 0);
  for (int i = 0; i < N; i++) assert_true(fabsf(out[i] - mdl[i]) <= 1e-7f * fabsf(mdl[i]));
}

static void test_dare_mask(void **state) {
  (void)state;
  int kept = 0, again = 0;
  for (uint64_t j = 0; j < 100000; j++) {
    kept += fc_merge_dare_keep(1, "t", 0, j, 0.3);
    again += fc_merge_dare_keep(1, "t", 0, j, 0.3) == fc_merge_dare_keep(1, "t", 0, j, 0.3);
  }
  assert_int_equal(again, 100000);
  assert_true(abs(kept - 30000) < 600);
  int diff = 0;
  for (uint64_t j = 0; j < 1000; j++) diff += fc_merge_dare_keep(1, "t", 0, j, 0.5) != fc_merge_dare_keep(1, "t", 1, j, 0.5);
  assert_true(diff > 400 && diff < 600); /* models get independent masks */
}

/* A model directory with the given tensors (f32 zeros). */
static void write_model(const char *dir, int n, const char *const *names, const int64_t *rows) {
  fc_err_t err = {0};
  assert_int_equal(fc_mkdir_p(dir, &err), 0);
  fc_st_spec_t specs[8];
  for (int i = 0; i < n; i++) {
    memset(&specs[i], 0, sizeof specs[i]);
    specs[i].name = names[i];
    specs[i].dtype = FC_DT_F32;
    specs[i].ndim = 2;
    specs[i].shape[0] = rows[i];
    specs[i].shape[1] = 4;
  }
  char *p = fc_path_join(dir, "model.safetensors");
  fc_st_writer_t *w;
  assert_int_equal(fc_st_writer_new(&w, p, specs, (size_t)n, NULL, &err), 0);
  for (int i = 0; i < n; i++) {
    float buf[64] = {0};
    buf[0] = (float)i;
    assert_int_equal(fc_st_writer_put_f32(w, (size_t)i, buf, &err), 0);
  }
  assert_int_equal(fc_st_writer_finish(&w, &err), 0);
  free(p);
}

static void test_errors(void **state) {
  (void)state;
  char *tmp = tmpdir();
  char b[600], s[600], m[600], x[600], out[600];
  snprintf(b, sizeof b, "%s/base", tmp);
  snprintf(s, sizeof s, "%s/shape", tmp);
  snprintf(m, sizeof m, "%s/missing", tmp);
  snprintf(x, sizeof x, "%s/extra", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  const char *names[] = {"model.embed_tokens.weight", "layer.w", "layer.extra"};
  write_model(b, 2, names, (int64_t[]){8, 4});
  write_model(s, 2, names, (int64_t[]){9, 4});
  write_model(m, 1, names + 1, (int64_t[]){4});
  write_model(x, 3, names, (int64_t[]){8, 4, 2});
  struct {
    const char *model, *needle;
  } cases[] = {{s, "model.embed_tokens.weight"}, {s, "vocabularies differ"},
               {m, "model.embed_tokens.weight"}, {x, "layer.extra"}};
  for (int c = 0; c < 4; c++) {
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = FC_MERGE_TASK_ARITHMETIC;
    cfg.base = b;
    fc_merge_model_t mm = {.path = cases[c].model, .weight = 1, .density = 1};
    cfg.models = &mm;
    cfg.nmodels = 1;
    fc_err_t err = {0};
    assert_int_equal(fc_merge_run(&cfg, out, &err), FC_EMISMATCH);
    if (!strstr(err.msg, cases[c].needle)) fail_msg("error '%s' lacks '%s'", err.msg, cases[c].needle);
  }
  /* TIES with a density that keeps nothing names the tensor. */
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  cfg.method = FC_MERGE_TIES;
  cfg.base = b;
  fc_merge_model_t mm = {.path = x, .weight = 1, .density = 0.01};
  write_model(x, 2, names, (int64_t[]){8, 4});
  cfg.models = &mm;
  cfg.nmodels = 1;
  fc_err_t err = {0};
  assert_int_equal(fc_merge_run(&cfg, out, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "model.embed_tokens.weight"));
  rm_rf(tmp);
  free(tmp);
}

static void test_yaml(void **state) {
  (void)state;
  struct {
    const char *text, *needle;
  } bad[] = {
      {"merge_method: sce\nbase_model: b\nmodels:\n  - model: a\nparametrs: {}\n", ":5: unknown key 'parametrs'"},
      {"merge_method: magic\nmodels:\n  - model: a\n", ":1: unknown merge_method 'magic'"},
      {"merge_method: ties\nmodels:\n  - model: a\n    parameters: {density: 1.5}\n", ":4: density 1.5"},
      {"merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: x}\n", ":4: model parameter weight"},
      {"merge_method: sce\nmodels:\n  - model: a\nparameters:\n  select_topk: 2\n", ":5: parameter select_topk"},
      {"merge_method: sce\nmodels:\n  - model: a\nparameters:\n  sce_mask_scope: all\n", ":5: parameter sce_mask_scope"},
      {"merge_method: sce\nmodels: [\n", "cfg.yaml:"},
      {"base_model: b\nmodels:\n  - model: a\n", "no merge_method"},
      {"merge_method: linear\ndtype: int8\nmodels:\n  - model: a\n", ":2: dtype 'int8'"},
      {"merge_method: linear\nout_dtype: f8\nmodels:\n  - model: a\n", ":2: out_dtype 'f8'"},
      /* mergekit's parameter forms: each value of a gradient and a condition is checked */
      {"merge_method: ties\nmodels:\n  - model: a\nparameters:\n  density: [0.2, 1.4]\n", ":5: density 1.4"},
      {"merge_method: ties\nmodels:\n  - model: a\nparameters:\n  density: []\n", ":5: density: an empty list"},
      {"merge_method: slerp\nmodels:\n  - model: a\nparameters:\n  t:\n    - filter: mlp\n      valu: 1\n",
       ":7: unknown key 'valu' in a condition of t"},
      {"merge_method: slerp\nmodels:\n  - model: a\nparameters:\n  t:\n    - filter: mlp\n", "without 'value'"},
      {"merge_method: della\nmodels:\n  - model: a\n    parameters: {epsilon: 1}\n", ":4: epsilon 1 is outside"},
      {"merge_method: ties\nmodels:\n  - model: a\n    parameters: {t: 0.5}\n", ":4: unknown model parameter 't'"},
      {"merge_method: ties\nmodels:\n  - model: a\nparameters:\n  normalize: [1, 0]\n", ":5: parameter normalize takes a plain value"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    fc_merge_yaml_t arena;
    fc_err_t err = {0};
    assert_int_not_equal(fc_merge_yaml_parse(bad[i].text, strlen(bad[i].text), "cfg.yaml", &cfg, &arena, &err), 0);
    if (!strstr(err.msg, bad[i].needle)) fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].needle);
  }
  const char *good = "merge_method: dare_ties\nbase_model: /b\nmodels:\n  - model: /m1\n"
                     "    parameters: {weight: 0.4, density: 0.5}\n  - model: /m2\n"
                     "parameters:\n  normalize: true\n  int8_mask: true\nout_dtype: bfloat16\n"
                     "dtype: float32\nseed: 42\n";
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  fc_merge_yaml_t arena;
  fc_err_t err = {0};
  assert_int_equal(fc_merge_yaml_parse(good, strlen(good), "good.yaml", &cfg, &arena, &err), 0);
  assert_int_equal(cfg.method, FC_MERGE_DARE_TIES);
  assert_string_equal(cfg.base, "/b");
  assert_int_equal(cfg.nmodels, 2);
  assert_true(cfg.models[0].weight == 0.4 && cfg.models[0].density == 0.5);
  assert_true(cfg.models[1].weight == 1.0 && cfg.models[1].density == 1.0);
  assert_int_equal(cfg.normalize, 1);
  assert_int_equal(cfg.dtype, FC_DT_BF16);
  assert_int_equal(cfg.seed, 42);
  fc_merge_yaml_free(&arena);

  /* Per tensor: a model's own value, else the global default; filters by name; gradients by
   * layer position (fc_merge_run's t: layer i of L at i / (L - 1), other tensors at 0). */
  const char *vary = "merge_method: ties\nbase_model: b\nmodels:\n  - model: m1\n    parameters:\n"
                     "      density: [{filter: mlp, value: 0.9}]\n      weight: [0, 1, 0.5]\n  - model: m2\n"
                     "parameters:\n  density: [0.2, 0.6]\n  weight: 2\n  lambda:\n    - {filter: q_proj, value: 0.5}\n"
                     "  t: 0.25\n";
  fc_merge_cfg_init(&cfg);
  assert_int_equal(fc_merge_yaml_parse(vary, strlen(vary), "vary.yaml", &cfg, &arena, &err), 0);
  assert_true(cfg.models[0].density == 0.2 && cfg.models[0].weight == 0 && cfg.models[1].weight == 2);
  fc_merge_cfg_t tc;
  fc_merge_model_t tm[2];
  assert_true(fabs(fc_merge_layer_t("model.layers.3.mlp.up_proj.weight", 5) - 0.75) < 1e-15);
  assert_true(fc_merge_layer_t("model.embed_tokens.weight", 5) == 0);
  assert_true(fc_merge_layer_t("transformer.h.2.attn.c_attn.weight", 3) == 1);
  assert_int_equal(fc_merge_layer_index("model.layers.12.self_attn.q_proj.weight"), 12);
  assert_int_equal(fc_merge_layer_index("model.norm.weight"), -1);
  fc_merge_resolve(&cfg, "model.layers.3.mlp.up_proj.weight", 0.75, &tc, tm);
  assert_true(tm[0].density == 0.9 && fabs(tm[1].density - 0.5) < 1e-15);
  assert_true(fabs(tm[0].weight - 0.75) < 1e-15 && tm[1].weight == 2);
  assert_true(tc.lambda == 1 && tc.t == 0.25 && tc.models == tm);
  fc_merge_resolve(&cfg, "model.layers.1.self_attn.q_proj.weight", 0.25, &tc, tm);
  assert_true(fabs(tm[0].density - 0.3) < 1e-15 && fabs(tm[0].weight - 0.5) < 1e-15 && tc.lambda == 0.5);
  fc_merge_yaml_free(&arena);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixture_cases), cmocka_unit_test(test_threads_invariant),
      cmocka_unit_test(test_identities),    cmocka_unit_test(test_dare_mask),
      cmocka_unit_test(test_errors),        cmocka_unit_test(test_yaml),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
