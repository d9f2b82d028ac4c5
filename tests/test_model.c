/* The model engine against PyTorch (tests/ref/make_model_fixtures.py): logits, top-K,
 * gradients of every parameter, greedy generation, on small llama/mistral/qwen2 models in
 * several variants (mistral_swa and qwen2_swa with sliding windows of 3 and 4 positions, far
 * shorter than the sequences); plus padding, save/load round trips and bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fc_generate.h"
#include "fc_model.h"
#include "fc_tok.h"
#include "test_support.h"

static const char *variants[] = {"llama_gqa",   "llama_mha_tied_bf16", "qwen2_tied", "llama_bias_llama3_f16",
                                  "mistral_swa", "qwen2_swa"};
#define NVAR (sizeof variants / sizeof variants[0])

typedef struct fixture {
  fc_model_t *m;
  fc_st_t *ref;
} fixture_t;

static char *fixture_path(const char *name, const char *suffix) {
  char rel[256];
  snprintf(rel, sizeof rel, "model/%s%s", name, suffix);
  return test_fixture(rel);
}

static void open_fixture(fixture_t *f, const char *name) {
  fc_err_t err = {0};
  char *dir = fixture_path(name, "");
  char *ref = fixture_path(name, ".ref.safetensors");
  int rc = fc_model_load(&f->m, dir, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(fc_st_open(&f->ref, ref, &err), 0);
  free(dir);
  free(ref);
}

static void close_fixture(fixture_t *f) {
  fc_model_destroy(&f->m);
  fc_st_close(&f->ref);
}

static const fc_st_tensor_t *ref_tensor(fixture_t *f, const char *name) {
  const fc_st_tensor_t *t = fc_st_find(f->ref, name);
  if (!t) fprintf(stderr, "reference tensor %s missing\n", name);
  assert_non_null(t);
  return t;
}

/* f32 copy of a reference tensor (caller frees). */
static float *ref_f32(fixture_t *f, const char *name, size_t *n) {
  const fc_st_tensor_t *t = ref_tensor(f, name);
  float *out = malloc((size_t)t->numel * sizeof(float) + 1);
  fc_err_t err = {0};
  assert_int_equal(fc_st_to_f32(t, out, &err), 0);
  if (n) *n = (size_t)t->numel;
  return out;
}

static const int32_t *ref_i32(fixture_t *f, const char *name, size_t *n) {
  const fc_st_tensor_t *t = ref_tensor(f, name);
  assert_int_equal(t->dtype, FC_DT_I32);
  if (n) *n = (size_t)t->numel;
  return t->data;
}

static float max_abs(const float *a, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; i++) m = fabsf(a[i]) > m ? fabsf(a[i]) : m;
  return m;
}

static float max_diff(const float *a, const float *b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; i++) m = fabsf(a[i] - b[i]) > m ? fabsf(a[i] - b[i]) : m;
  return m;
}

/* Logits within 1e-4 of their largest magnitude: the engine and PyTorch compute the same f32
 * expressions but sum in different orders (sgemm blocking, attention), which moves results by
 * a few ulps per operation; 1e-4 relative is far below any real bug (a wrong sign, position or
 * scale shows up at 1e-1). Top-K ids must be identical, their log-probs within the same bound. */
static void test_forward_topk(void **state) {
  (void)state;
  for (size_t v = 0; v < NVAR; v++) {
    fixture_t f;
    open_fixture(&f, variants[v]);
    const fc_st_tensor_t *tid = ref_tensor(&f, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1];
    size_t n;
    float *want = ref_f32(&f, "logits", &n);
    fc_err_t err = {0};
    const float *got = fc_model_forward(f.m, tid->data, B, T, 0, &err);
    assert_non_null(got);
    int V = fc_model_config(f.m)->vocab_size;
    assert_int_equal(n, (size_t)B * T * V);
    float scale = max_abs(want, n), d = max_diff(got, want, n);
    printf("%-24s logits max|ref| %.3f max diff %.2e\n", variants[v], scale, d);
    assert_true(d <= 1e-4f * scale);
    /* Training mode must give the same logits (different activation layout). */
    got = fc_model_forward(f.m, tid->data, B, T, 1, &err);
    assert_true(max_diff(got, want, n) <= 1e-4f * scale);

    const fc_st_tensor_t *tk = ref_tensor(&f, "topk_ids");
    int K = (int)tk->shape[2];
    const int32_t *kid = tk->data;
    float *klp = ref_f32(&f, "topk_logprobs", NULL);
    int32_t ids[16];
    float lp[16];
    for (int p = 0; p < B * T; p++) {
      fc_topk_logprobs(got + (size_t)p * V, V, K, ids, lp);
      for (int j = 0; j < K; j++) {
        assert_int_equal(ids[j], kid[p * K + j]);
        assert_true(fabsf(lp[j] - klp[p * K + j]) <= 1e-4f * fmaxf(1.0f, fabsf(klp[p * K + j])));
      }
    }
    free(klp);
    free(want);
    close_fixture(&f);
  }
}

/* Gradients of sum(logits * R) for every parameter against torch.autograd: each tensor within
 * 1e-4 of its largest |grad| (same summation-order argument as the logits; gradients go
 * through more products, so the bound is stated per tensor rather than per element). */
static void test_backward(void **state) {
  (void)state;
  for (size_t v = 0; v < NVAR; v++) {
    fixture_t f;
    open_fixture(&f, variants[v]);
    const fc_st_tensor_t *tid = ref_tensor(&f, "ids");
    int B = (int)tid->shape[0], T = (int)tid->shape[1];
    float *R = ref_f32(&f, "R", NULL);
    fc_err_t err = {0};
    assert_non_null(fc_model_forward(f.m, tid->data, B, T, 1, &err));
    fc_model_zero_grad(f.m);
    assert_int_equal(fc_model_backward(f.m, R, &err), 0);
    const float *g = fc_model_grads(f.m);
    float worst = 0;
    for (size_t i = 0; i < fc_model_num_tensors(f.m); i++) {
      const fc_param_info_t *pi = fc_model_tensor(f.m, i);
      char name[256];
      snprintf(name, sizeof name, "grad.%s", pi->name);
      size_t n;
      float *want = ref_f32(&f, name, &n);
      assert_int_equal(n, pi->numel);
      float scale = max_abs(want, n), d = max_diff(g + pi->offset, want, n);
      if (d > 1e-4f * scale) fprintf(stderr, "%s: %s max diff %g, max|ref| %g\n", variants[v], pi->name, d, scale);
      assert_true(scale > 0);
      assert_true(d <= 1e-4f * scale);
      worst = fmaxf(worst, d / scale);
      free(want);
    }
    printf("%-24s gradients: worst relative diff %.2e over %zu tensors\n", variants[v], worst,
           fc_model_num_tensors(f.m));
    /* A second backward accumulates: gradients double. Per tensor again: a bias gradient is a
     * sum over rows that starts from the first backward's value the second time, so it rounds
     * differently, and where its terms cancel (qwen2_swa's k_proj.bias: 0.33 from terms near
     * 200) that is visible against the element but not against the tensor. */
    float *g1 = malloc(fc_model_num_params(f.m) * sizeof(float));
    memcpy(g1, g, fc_model_num_params(f.m) * sizeof(float));
    assert_int_equal(fc_model_backward(f.m, R, &err), 0);
    for (size_t t = 0; t < fc_model_num_tensors(f.m); t++) {
      const fc_param_info_t *pi = fc_model_tensor(f.m, t);
      float bound = 1e-5f * (1 + max_abs(g1 + pi->offset, pi->numel));
      for (size_t i = pi->offset; i < pi->offset + pi->numel; i++) assert_true(fabsf(g[i] - 2 * g1[i]) <= bound);
    }
    free(g1);
    free(R);
    close_fixture(&f);
  }
}

/* Long sequences: attention runs in 128-row blocks past 128 positions (forward and backward),
 * and positions up to 300 exercise the RoPE tables further; with mistral_swa's 3-token window
 * the second block's products start right of the keys no row of it can see. Same tolerances. */
static void test_long_sequence(void **state) {
  (void)state;
  static const struct {
    const char *name;
    int min_T;
  } longs[] = {{"llama_gqa", 257}, {"mistral_swa", 129}};
  for (size_t li = 0; li < sizeof longs / sizeof longs[0]; li++) {
  fixture_t f;
  open_fixture(&f, longs[li].name);
  const fc_st_tensor_t *tid = ref_tensor(&f, "long.ids");
  int T = (int)tid->shape[1];
  assert_true(T >= longs[li].min_T);
  size_t n;
  float *want = ref_f32(&f, "long.logits", &n), *R = ref_f32(&f, "long.R", NULL);
  fc_err_t err = {0};
  const float *got = fc_model_forward(f.m, tid->data, 1, T, 1, &err);
  assert_non_null(got);
  float scale = max_abs(want, n), d = max_diff(got, want, n);
  printf("long T=%d: logits max diff %.2e (max|ref| %.2f)\n", T, d, scale);
  assert_true(d <= 1e-4f * scale);
  fc_model_zero_grad(f.m);
  assert_int_equal(fc_model_backward(f.m, R, &err), 0);
  const float *g = fc_model_grads(f.m);
  float worst = 0;
  for (size_t i = 0; i < fc_model_num_tensors(f.m); i++) {
    const fc_param_info_t *pi = fc_model_tensor(f.m, i);
    char name[256];
    snprintf(name, sizeof name, "long.grad.%s", pi->name);
    float *gw = ref_f32(&f, name, &n);
    float sc = max_abs(gw, n), dd = max_diff(g + pi->offset, gw, n);
    if (dd > 1e-4f * sc) fprintf(stderr, "long: %s max diff %g, max|ref| %g\n", pi->name, dd, sc);
    assert_true(dd <= 1e-4f * sc);
    worst = fmaxf(worst, dd / sc);
    free(gw);
  }
  printf("long T=%d: gradients worst relative diff %.2e\n", T, worst);
  free(want), free(R);
  close_fixture(&f);
  }
}

/* Right padding: a shorter row padded with arbitrary ids gives the same logits at its real
 * positions as the unpadded row alone (attention is causal). */
static void test_padding(void **state) {
  (void)state;
  fixture_t f;
  open_fixture(&f, "qwen2_tied");
  const fc_st_tensor_t *tid = ref_tensor(&f, "ids");
  int T = (int)tid->shape[1], n = 7, V = fc_model_config(f.m)->vocab_size;
  const int32_t *ids = tid->data;
  fc_err_t err = {0};
  float *alone = malloc((size_t)n * V * sizeof(float));
  memcpy(alone, fc_model_forward(f.m, ids, 1, n, 0, &err), (size_t)n * V * sizeof(float));
  int32_t *batch = malloc(2 * (size_t)T * sizeof(int32_t));
  memcpy(batch, ids + T, (size_t)T * sizeof(int32_t)); /* row 0: another full row */
  for (int t = 0; t < T; t++) batch[T + t] = t < n ? ids[t] : 0;
  const float *got = fc_model_forward(f.m, batch, 2, T, 0, &err);
  float d = max_diff(got + (size_t)T * V, alone, (size_t)n * V);
  assert_true(d <= 1e-5f * max_abs(alone, (size_t)n * V));
  free(batch);
  free(alone);
  close_fixture(&f);
}

static void test_save_roundtrip(void **state) {
  (void)state;
  char tmpl[] = "/tmp/fc_model_test_XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  for (size_t v = 0; v < NVAR; v++) {
    fixture_t f;
    open_fixture(&f, variants[v]);
    fc_err_t err = {0};
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", tmpl, variants[v]);
    assert_int_equal(fc_model_save(f.m, dir, FC_DT_F32, &err), 0);
    fc_model_t *m2;
    assert_int_equal(fc_model_load(&m2, dir, &err), 0);
    assert_int_equal(fc_model_num_params(m2), fc_model_num_params(f.m));
    assert_memory_equal(fc_model_params(m2), fc_model_params(f.m), fc_model_num_params(f.m) * sizeof(float));
    const fc_config_t *a = fc_model_config(f.m), *b = fc_model_config(m2);
    assert_int_equal(a->tie_word_embeddings, b->tie_word_embeddings);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_string_equal(a->rope_scaling_type, b->rope_scaling_type);
    for (int l = 0; l < a->num_layers; l++)
      assert_int_equal(fc_config_layer_window(a, l), fc_config_layer_window(b, l));
    fc_model_destroy(&m2);
    /* Tied models write no lm_head.weight. */
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    fc_st_t *st;
    assert_int_equal(fc_st_open(&st, path, &err), 0);
    assert_int_equal(fc_st_find(st, "lm_head.weight") == NULL, a->tie_word_embeddings != 0);
    fc_st_close(&st);
    /* bf16: what loads back is each parameter rounded to bf16. */
    assert_int_equal(fc_model_save(f.m, dir, FC_DT_BF16, &err), 0);
    assert_int_equal(fc_model_load(&m2, dir, &err), 0);
    const float *p = fc_model_params(f.m), *q = fc_model_params(m2);
    for (size_t i = 0; i < fc_model_num_params(f.m); i++) assert_true(q[i] == fc_bf16_to_f32(fc_f32_to_bf16(p[i])));
    fc_model_destroy(&m2);
    close_fixture(&f);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
  }
  rmdir(tmpl);
}

static void test_topk_bruteforce(void **state) {
  (void)state;
  fc_rng_t r;
  fc_rng_seed(&r, 7);
  enum { V = 1000 };
  float lg[V];
  for (int trial = 0; trial < 20; trial++) {
    for (int i = 0; i < V; i++) lg[i] = 30.0f * fc_rng_normal(&r) + (trial == 0 ? 1e4f : 0); /* large offset: stability */
    int K = 1 + trial;
    int32_t ids[32];
    float lp[32];
    fc_topk_logprobs(lg, V, K, ids, lp);
    double mx = -1e30, s = 0;
    for (int i = 0; i < V; i++) mx = lg[i] > mx ? lg[i] : mx;
    for (int i = 0; i < V; i++) s += exp(lg[i] - mx);
    double lse = mx + log(s);
    int used[V] = {0};
    for (int j = 0; j < K; j++) {
      int best = -1;
      for (int i = 0; i < V; i++)
        if (!used[i] && (best < 0 || lg[i] > lg[best])) best = i;
      used[best] = 1;
      assert_int_equal(ids[j], best);
      assert_true(fabs(lp[j] - (lg[best] - lse)) <= 1e-3);
      assert_true(lp[j] <= 0);
    }
  }
}

static void test_bad_input(void **state) {
  (void)state;
  fixture_t f;
  open_fixture(&f, "llama_gqa");
  fc_err_t err = {0};
  int32_t ids[3] = {1, 2, 100000};
  assert_null(fc_model_forward(f.m, ids, 1, 3, 0, &err));
  assert_int_equal(err.code, FC_EINVAL);
  assert_non_null(strstr(err.msg, "100000"));
  close_fixture(&f);
  /* backward without a training forward */
  open_fixture(&f, "llama_gqa");
  assert_non_null(fc_model_forward(f.m, ids, 1, 2, 0, &err));
  float dl[2 * 160] = {0};
  assert_int_not_equal(fc_model_backward(f.m, dl, &err), 0);
  close_fixture(&f);
  /* a model dir whose weights do not match the config */
  fc_model_t *m;
  char tmpl[] = "/tmp/fc_model_bad_XXXXXX";
  assert_non_null(mkdtemp(tmpl));
  fc_config_t c;
  fc_config_default(&c, "llama");
  c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 1, c.num_heads = 2, c.num_kv_heads = 1;
  c.head_dim = 8, c.vocab_size = 20;
  assert_int_equal(fc_model_init(&m, &c, 1, &err), 0);
  assert_int_equal(fc_model_save(m, tmpl, FC_DT_F32, &err), 0);
  fc_model_destroy(&m);
  char cfgp[256], cmd[300];
  snprintf(cfgp, sizeof cfgp, "%s/config.json", tmpl);
  c.intermediate_size = 32;
  assert_int_equal(fc_config_save(&c, cfgp, &err), 0);
  assert_int_not_equal(fc_model_load(&m, tmpl, &err), 0);
  assert_null(m);
  assert_non_null(strstr(err.msg, "gate_proj"));
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
  assert_int_equal(system(cmd), 0);
}

static void test_init(void **state) {
  (void)state;
  fc_config_t c;
  fc_config_default(&c, "qwen2");
  c.hidden_size = 16, c.intermediate_size = 24, c.num_layers = 2, c.num_heads = 2, c.num_kv_heads = 1;
  c.head_dim = 8, c.vocab_size = 30, c.tie_word_embeddings = 1;
  fc_model_t *a, *b;
  fc_err_t err = {0};
  assert_int_equal(fc_model_init(&a, &c, 42, &err), 0);
  assert_int_equal(fc_model_init(&b, &c, 42, &err), 0);
  assert_int_equal((long long)fc_model_num_params(a), fc_config_num_params(&c));
  assert_memory_equal(fc_model_params(a), fc_model_params(b), fc_model_num_params(a) * sizeof(float));
  const fc_param_info_t *n = fc_model_find_tensor(a, "model.layers.1.post_attention_layernorm.weight");
  assert_non_null(n);
  assert_true(fc_model_params(a)[n->offset] == 1.0f);
  const fc_param_info_t *bq = fc_model_find_tensor(a, "model.layers.0.self_attn.q_proj.bias");
  assert_non_null(bq);
  assert_true(fc_model_params(a)[bq->offset] == 0.0f);
  assert_null(fc_model_find_tensor(a, "lm_head.weight"));
  fc_model_destroy(&a);
  fc_model_destroy(&b);
}

/* Greedy decoding with the KV cache reproduces the reference's greedy ids (which it computed
 * with full recomputation per step), including stopping at eos (qwen2_tied's eos is chosen
 * mid-way); the cached logits equal a full forward's. */
static void test_generate(void **state) {
  (void)state;
  for (size_t v = 0; v < NVAR; v++) {
    fixture_t f;
    open_fixture(&f, variants[v]);
    size_t np, ng;
    const int32_t *prompt = ref_i32(&f, "gen_prompt", &np);
    const int32_t *want = ref_i32(&f, "gen_greedy", &ng);
    fc_gen_opts_t o;
    fc_gen_opts_default(&o);
    o.max_tokens = 10;
    int32_t *out;
    int nout;
    fc_err_t err = {0};
    assert_int_equal(fc_generate(f.m, prompt, (int)np, &o, &out, &nout, &err), 0);
    assert_int_equal(nout, (int)ng);
    for (int i = 0; i < nout; i++) assert_int_equal(out[i], want[i]);
    /* The same with a near-zero nucleus (only the top token survives). */
    free(out);
    o.temperature = 1.0f, o.top_p = 1e-6f;
    assert_int_equal(fc_generate(f.m, prompt, (int)np, &o, &out, &nout, &err), 0);
    assert_int_equal(nout, (int)ng);
    for (int i = 0; i < nout; i++) assert_int_equal(out[i], want[i]);
    free(out);

    /* Cached decoding in pieces vs one full forward over the same ids. */
    const fc_st_tensor_t *tid = ref_tensor(&f, "ids");
    const int32_t *ids = tid->data;
    int T = (int)tid->shape[1], V = fc_model_config(f.m)->vocab_size;
    const float *full = fc_model_forward(f.m, ids, 1, T, 0, &err);
    float scale = max_abs(full, (size_t)T * V);
    fc_kv_cache_t *kc;
    assert_int_equal(fc_kv_cache_new(&kc, f.m, T, &err), 0);
    int at = 0, steps[] = {5, 1, 3, 1, 2};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
      const float *lg = fc_model_decode(f.m, kc, ids + at, steps[s], &err);
      assert_non_null(lg);
      at += steps[s];
      assert_true(max_diff(lg, full + (size_t)(at - 1) * V, (size_t)V) <= 1e-5f * scale);
    }
    assert_int_equal(fc_kv_cache_len(kc), T);
    assert_null(fc_model_decode(f.m, kc, ids, 1, &err)); /* full */
    assert_int_equal(err.code, FC_EINVAL);
    fc_kv_cache_destroy(&kc);
    close_fixture(&f);
  }
}

/* Sampling is reproducible for a seed and actually samples (not argmax) at temperature 2. */
static void test_sample(void **state) {
  (void)state;
  fixture_t f;
  open_fixture(&f, "llama_gqa");
  size_t np;
  const int32_t *prompt = ref_i32(&f, "gen_prompt", &np);
  fc_gen_opts_t o;
  fc_gen_opts_default(&o);
  o.max_tokens = 20, o.temperature = 2.0f, o.top_p = 0.95f, o.seed = 5, o.eos_id = -1;
  int32_t *a, *b, *g;
  int na, nb, ngr;
  fc_err_t err = {0};
  assert_int_equal(fc_generate(f.m, prompt, (int)np, &o, &a, &na, &err), 0);
  assert_int_equal(fc_generate(f.m, prompt, (int)np, &o, &b, &nb, &err), 0);
  assert_int_equal(na, 20);
  assert_int_equal(nb, 20);
  assert_memory_equal(a, b, 20 * sizeof(int32_t));
  o.temperature = 0;
  assert_int_equal(fc_generate(f.m, prompt, (int)np, &o, &g, &ngr, &err), 0);
  assert_int_equal(ngr, 20);
  assert_memory_not_equal(a, g, 20 * sizeof(int32_t));
  for (int i = 0; i < 20; i++) assert_true(a[i] >= 0 && a[i] < fc_model_config(f.m)->vocab_size);
  free(a), free(b), free(g);
  o.max_tokens = 0;
  assert_int_not_equal(fc_generate(f.m, prompt, (int)np, &o, &a, &na, &err), 0);
  close_fixture(&f);
}

/* Batched generation: every row equals generating it alone (greedy and sampled), rows of
 * different lengths stopping at different times; the reference prompt's row equals the
 * reference's greedy ids. */
static void test_generate_batch(void **state) {
  (void)state;
  for (size_t v = 0; v < NVAR; v++) {
    fixture_t f;
    open_fixture(&f, variants[v]);
    size_t np, ng;
    const int32_t *prompt = ref_i32(&f, "gen_prompt", &np);
    const int32_t *want = ref_i32(&f, "gen_greedy", &ng);
    const int32_t *ids = ref_tensor(&f, "ids")->data;
    const int32_t *prompts[4] = {ids, prompt, ids + 12, ids + 3};
    int lens[4] = {9, (int)np, 2, 1};
    for (int sampled = 0; sampled < 2; sampled++) {
      fc_gen_opts_t o;
      fc_gen_opts_default(&o);
      o.max_tokens = 10, o.seed = 11;
      if (sampled) o.temperature = 0.8f, o.top_p = 0.9f;
      int32_t *outs[4];
      int nouts[4];
      fc_err_t err = {0};
      assert_int_equal(fc_generate_batch(f.m, prompts, lens, 4, &o, outs, nouts, &err), 0);
      for (int i = 0; i < 4; i++) {
        fc_gen_opts_t oi = o;
        oi.seed = o.seed + (uint64_t)i;
        int32_t *one;
        int n1;
        assert_int_equal(fc_generate(f.m, prompts[i], lens[i], &oi, &one, &n1, &err), 0);
        assert_int_equal(nouts[i], n1);
        assert_memory_equal(outs[i], one, (size_t)n1 * sizeof(int32_t));
        free(one);
      }
      if (!sampled) {
        assert_int_equal(nouts[1], (int)ng);
        assert_memory_equal(outs[1], want, ng * sizeof(int32_t));
      }
      for (int i = 0; i < 4; i++) free(outs[i]);
    }
    close_fixture(&f);
  }
}

/* fusectl logits prints, per position, the top-K the engine computes; fusectl generate prints
 * the reference's greedy ids; bad usage exits 2, bad files 1. */
static int run(const char *cmd, char *out, size_t cap) {
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
  (void)state;
  const char *build = getenv("FC_BUILD");
  if (!build) {
    skip();
    return;
  }
  fixture_t f;
  open_fixture(&f, "llama_gqa");
  char *dir = fixture_path("llama_gqa", "");
  char cmd[1024], *out = malloc(1 << 16);
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl logits --model %s --ids '5, 17 3' --top-k 4", build, dir);
  assert_int_equal(run(cmd, out, 1 << 16), 0);
  int32_t ids[3] = {5, 17, 3}, top[4];
  float lp[4];
  fc_err_t err = {0};
  const float *lg = fc_model_forward(f.m, ids, 1, 3, 0, &err);
  int V = fc_model_config(f.m)->vocab_size;
  char *line = out;
  for (int p = 0; p < 3; p++) {
    fc_topk_logprobs(lg + (size_t)p * V, V, 4, top, lp);
    int pos, a[4];
    float b[4];
    assert_int_equal(sscanf(line, "{\"pos\":%d,\"ids\":[%d,%d,%d,%d],\"logprobs\":[%f,%f,%f,%f]}", &pos, &a[0], &a[1],
                            &a[2], &a[3], &b[0], &b[1], &b[2], &b[3]),
                     9);
    assert_int_equal(pos, p);
    for (int j = 0; j < 4; j++) {
      assert_int_equal(a[j], top[j]);
      assert_true(fabsf(b[j] - lp[j]) <= 1e-5f * (1 + fabsf(lp[j])));
    }
    line = strchr(line, '\n');
    assert_non_null(line);
    line++;
  }
  assert_int_equal(*line, 0);

  size_t np, ng;
  const int32_t *prompt = ref_i32(&f, "gen_prompt", &np);
  const int32_t *want = ref_i32(&f, "gen_greedy", &ng);
  int o = snprintf(cmd, sizeof cmd, "%s/tools/fusectl generate --model %s --max-tokens %zu --prompt-ids '", build, dir, ng);
  for (size_t i = 0; i < np; i++) o += snprintf(cmd + o, sizeof cmd - (size_t)o, "%d ", prompt[i]);
  snprintf(cmd + o, sizeof cmd - (size_t)o, "'");
  assert_int_equal(run(cmd, out, 1 << 16), 0);
  char expect[512];
  o = 0;
  for (size_t i = 0; i < ng; i++) o += snprintf(expect + o, sizeof expect - (size_t)o, "%s%d", i ? " " : "", want[i]);
  snprintf(expect + o, sizeof expect - (size_t)o, "\n");
  assert_string_equal(out, expect);

  snprintf(cmd, sizeof cmd, "%s/tools/fusectl logits --model %s --ids '1 -2' 2>/dev/null", build, dir);
  assert_int_equal(run(cmd, out, 1 << 16), 2);
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl logits --model %s --ids '1 999' 2>/dev/null", build, dir);
  assert_int_equal(run(cmd, out, 1 << 16), 1);
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl generate --model /nonexistent --prompt-ids 1 2>/dev/null", build);
  assert_int_equal(run(cmd, out, 1 << 16), 1);
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl generate --help", build);
  assert_int_equal(run(cmd, out, 1 << 16), 0);
  assert_non_null(strstr(out, "--temperature"));
  free(out);
  free(dir);
  close_fixture(&f);
}

/* The text forms of fusectl logits/generate: a random model over a small byte-level BPE
 * vocabulary (tests/fixtures/tok/trained_byte, ChatML specials); --text must give the top-K of
 * the ids fc_tok_encode produces, --chat must stop at <|im_end|>. */
static void test_cli_text(void **state) {
  (void)state;
  const char *build = getenv("FC_BUILD"), *fx = getenv("FC_FIXTURES");
  if (!build) {
    skip();
    return;
  }
  char tokp[512], dir[] = "/tmp/fc_model_cli_XXXXXX", cmd[1024];
  snprintf(tokp, sizeof tokp, "%s/tok/trained_byte/tokenizer.json", fx);
  assert_non_null(mkdtemp(dir));
  fc_err_t err = {0};
  fc_tok_t *tok;
  assert_int_equal(fc_tok_load(&tok, tokp, &err), 0);
  fc_config_t c;
  fc_config_default(&c, "qwen2");
  c.hidden_size = 32, c.intermediate_size = 64, c.num_layers = 2, c.num_heads = 4, c.num_kv_heads = 2;
  c.head_dim = 8, c.vocab_size = fc_tok_vocab_size(tok), c.initializer_range = 0.5f;
  fc_model_t *m;
  assert_int_equal(fc_model_init(&m, &c, 9, &err), 0);
  assert_int_equal(fc_model_save(m, dir, FC_DT_F32, &err), 0);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s/tokenizer.json'", tokp, dir);
  assert_int_equal(system(cmd), 0);

  const char *text = "hello <|im_end|> world";
  int32_t *ids;
  size_t n;
  assert_int_equal(fc_tok_encode(tok, text, strlen(text), FC_TOK_ADD_SPECIAL | FC_TOK_PARSE_SPECIAL, &ids, NULL, &n, &err), 0);
  int32_t *ti = malloc(n * 2 * sizeof(int32_t));
  float *tl = malloc(n * 2 * sizeof(float));
  assert_int_equal(fc_model_forward_topk(m, ids, 1, (int)n, 2, NULL, ti, tl, NULL, &err), 0);
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl logits --model %s --text '%s' -k 2", build, dir, text);
  char *out = malloc(1 << 16), want[256];
  assert_int_equal(run(cmd, out, 1 << 16), 0);
  char *line = out;
  for (size_t p = 0; p < n; p++) {
    snprintf(want, sizeof want, "{\"pos\":%zu,\"ids\":[%d,%d],", p, ti[2 * p], ti[2 * p + 1]);
    assert_memory_equal(line, want, strlen(want));
    line = strchr(line, '\n') + 1;
  }
  assert_int_equal(*line, 0);

  /* --chat with a ChatML vocabulary: generation ends at <|im_end|> or after max tokens. */
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl generate --model %s --chat hi --max-tokens 40 --output ids", build, dir);
  assert_int_equal(run(cmd, out, 1 << 16), 0);
  int32_t end = fc_tok_piece_id(tok, "<|im_end|>");
  assert_true(end >= 0);
  int count = 0, last = -1;
  for (char *p = strtok(out, " \n"); p; p = strtok(NULL, " \n")) {
    assert_int_not_equal(last, end); /* nothing after the end of the turn */
    last = atoi(p);
    count++;
  }
  assert_true(count == 40 || last == end);
  snprintf(cmd, sizeof cmd, "%s/tools/fusectl generate --model %s --prompt 'hello' --max-tokens 3", build, dir);
  assert_int_equal(run(cmd, out, 1 << 16), 0);
  assert_true(strlen(out) > 0 && out[strlen(out) - 1] == '\n');
  /* text forms without a tokenizer.json: a clear failure */
  snprintf(cmd, sizeof cmd, "rm '%s/tokenizer.json' && %s/tools/fusectl logits --model %s --text hi 2>/dev/null", dir,
           build, dir);
  assert_int_equal(run(cmd, out, 1 << 16), 1);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(out), free(ti), free(tl), free(ids);
  fc_model_destroy(&m);
  fc_tok_destroy(&tok);
}

/* The chunked top-K forward equals the full logits + fc_topk_logprobs, across several head
 * chunks (30 rows of 12 = 360 positions, 100 rows a chunk), and gives the targets' log-probs. */
static void test_forward_topk_chunked(void **state) {
  (void)state;
  fixture_t f;
  open_fixture(&f, "llama_mha_tied_bf16");
  const int32_t *ref_ids = ref_tensor(&f, "ids")->data;
  enum { B = 30, T = 12, K = 6 };
  int V = fc_model_config(f.m)->vocab_size;
  int32_t *ids = malloc(B * T * sizeof(int32_t)), *tg = malloc(B * T * sizeof(int32_t));
  for (int i = 0; i < B * T; i++) ids[i] = (ref_ids[i % 24] + i / 24) % V, tg[i] = (i * 7) % V;
  tg[5] = -1;
  int32_t *ti = malloc(B * T * K * sizeof(int32_t));
  float *tl = malloc(B * T * K * sizeof(float)), *tgl = malloc(B * T * sizeof(float));
  fc_err_t err = {0};
  setenv("FUSECHAT_HEAD_ROWS", "100", 1); /* 4 chunks, the last one partial */
  assert_int_equal(fc_model_forward_topk(f.m, ids, B, T, K, tg, ti, tl, tgl, &err), 0);
  unsetenv("FUSECHAT_HEAD_ROWS");
  const float *lg = fc_model_forward(f.m, ids, B, T, 0, &err);
  int32_t wi[K];
  float wl[K];
  for (int p = 0; p < B * T; p++) {
    fc_topk_logprobs(lg + (size_t)p * V, V, K, wi, wl);
    assert_memory_equal(ti + p * K, wi, sizeof wi);
    for (int j = 0; j < K; j++) assert_true(fabsf(tl[p * K + j] - wl[j]) <= 1e-5f * (1 + fabsf(wl[j])));
    if (p == 5) {
      assert_true(isnan(tgl[p]));
      continue;
    }
    /* log-softmax of the target from the logits directly, in double */
    double mx = -1e30, s = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, lg[(size_t)p * V + v]);
    for (int v = 0; v < V; v++) s += exp(lg[(size_t)p * V + v] - mx);
    double want = lg[(size_t)p * V + tg[p]] - mx - log(s);
    assert_true(fabs(tgl[p] - want) <= 1e-5 * (1 + fabs(want)));
  }
  assert_int_equal(fc_model_forward_topk(f.m, ids, B, T, 0, NULL, NULL, NULL, NULL, &err), 0);
  assert_int_not_equal(fc_model_forward_topk(f.m, ids, B, T, V + 1, NULL, ti, tl, NULL, &err), 0);
  free(ids), free(tg), free(ti), free(tl), free(tgl);
  close_fixture(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_topk), cmocka_unit_test(test_backward),
      cmocka_unit_test(test_padding),      cmocka_unit_test(test_long_sequence),      cmocka_unit_test(test_save_roundtrip),
      cmocka_unit_test(test_topk_bruteforce), cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_init),         cmocka_unit_test(test_generate),
      cmocka_unit_test(test_sample),       cmocka_unit_test(test_generate_batch),
      cmocka_unit_test(test_cli),          cmocka_unit_test(test_forward_topk_chunked),
      cmocka_unit_test(test_cli_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
