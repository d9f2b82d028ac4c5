/* config.json reading for llama, mistral and qwen2, writing, and the errors bad configs give. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_config.h"

/* As published with Qwen2-0.5B (trimmed to the fields we read). */
static const char *qwen2 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"bos_token_id\":151643,\"eos_token_id\":151643,"
    "\"hidden_act\":\"silu\",\"hidden_size\":896,\"intermediate_size\":4864,"
    "\"max_position_embeddings\":131072,\"model_type\":\"qwen2\",\"num_attention_heads\":14,"
    "\"num_hidden_layers\":24,\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,"
    "\"rope_theta\":1000000.0,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\","
    "\"vocab_size\":151936,\"rope_scaling\":null,\"sliding_window\":131072}";

/* As published with Llama-3.1-8B (eos is a list, llama3 rope scaling). */
static const char *llama31 =
    "{\"model_type\":\"llama\",\"hidden_size\":4096,\"intermediate_size\":14336,"
    "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"
    "\"vocab_size\":128256,\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,"
    "\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009],\"attention_bias\":false,"
    "\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"},\"torch_dtype\":\"bfloat16\"}";

static void test_parse_real(void **state) {
  (void)state;
  fc_config_t c;
  fc_err_t err = {0};
  assert_int_equal(fc_config_parse(&c, qwen2, "qwen2", &err), 0);
  assert_string_equal(c.model_type, "qwen2");
  assert_int_equal(c.hidden_size, 896);
  assert_int_equal(c.num_heads, 14);
  assert_int_equal(c.num_kv_heads, 2);
  assert_int_equal(c.head_dim, 64);
  assert_int_equal(c.vocab_size, 151936);
  assert_true(c.attention_bias && !c.o_bias && c.tie_word_embeddings);
  assert_float_equal(c.rope_theta, 1e6f, 1);
  assert_float_equal(c.rms_norm_eps, 1e-6f, 1e-12);
  /* Qwen2-0.5B has 494M parameters (tied head). */
  assert_true(llabs(fc_config_num_params(&c) - 494032768LL) < 1000);
  assert_int_equal(fc_config_parse(&c, llama31, "llama31", &err), 0);
  assert_int_equal(c.eos_token_id, 128001);
  assert_string_equal(c.rope_scaling_type, "llama3");
  assert_float_equal(c.rope_factor, 8.0f, 0);
  assert_int_equal(c.rope_original_max_pos, 8192);
  assert_false(c.attention_bias || c.tie_word_embeddings);
  /* Llama-3.1-8B has 8.03B parameters. */
  assert_true(llabs(fc_config_num_params(&c) - 8030261248LL) < 1000);
}

static void test_save_load(void **state) {
  (void)state;
  fc_config_t c, d;
  fc_err_t err = {0};
  fc_config_default(&c, "mistral");
  c.hidden_size = 96;
  c.num_heads = 6;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.tie_word_embeddings = 1;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  char dir[] = "/tmp/fc_cfg_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char *p = fc_path_join(dir, "config.json");
  assert_int_equal(fc_config_save(&c, p, &err), 0);
  assert_int_equal(fc_config_load(&d, dir, &err), 0);
  assert_string_equal(d.model_type, "mistral");
  assert_int_equal(d.hidden_size, 96);
  assert_int_equal(d.num_kv_heads, 2);
  assert_int_equal(d.head_dim, 16);
  assert_int_equal(d.tie_word_embeddings, 1);
  assert_int_equal(d.eos_token_id, 2);
  assert_float_equal(d.rms_norm_eps, c.rms_norm_eps, 1e-12);
  unlink(p);
  rmdir(dir);
  free(p);
}

/* A small config of the given type with extra JSON members appended (caller frees). */
static char *small_cfg(const char *type, int layers, const char *extra) {
  char *s = malloc(1024);
  snprintf(s, 1024,
           "{\"model_type\":\"%s\",\"hidden_size\":64,\"intermediate_size\":128,"
           "\"num_hidden_layers\":%d,\"num_attention_heads\":4,\"vocab_size\":10%s%s}",
           type, layers, extra[0] ? "," : "", extra);
  return s;
}

static void parse_ok(fc_config_t *c, const char *type, int layers, const char *extra) {
  char *j = small_cfg(type, layers, extra);
  fc_err_t err = {0};
  int rc = fc_config_parse(c, j, "cfg", &err);
  if (rc) fail_msg("%s: %s", j, err.msg);
  free(j);
}

/* The window of each layer, as a string of W values ("0 0 3"). */
static const char *windows(const fc_config_t *c) {
  static char buf[256];
  int o = 0;
  for (int l = 0; l < c->num_layers; l++) o += snprintf(buf + o, sizeof buf - (size_t)o, "%s%d", l ? " " : "", fc_config_layer_window(c, l));
  return buf;
}

/* Which layers get a sliding window, following Hugging Face's MistralConfig and Qwen2Config
 * (Mistral: every layer, absent means 4096, null none; Qwen2: only with use_sliding_window,
 * layer_types if listed, else layers >= max_window_layers; Llama: never). */
static void test_sliding_window(void **state) {
  (void)state;
  fc_config_t c;
  parse_ok(&c, "mistral", 3, "\"sliding_window\":4096"); /* Mistral-7B-v0.1 */
  assert_string_equal(windows(&c), "4096 4096 4096");
  parse_ok(&c, "mistral", 2, "\"sliding_window\":null"); /* Mistral-7B-v0.2 */
  assert_string_equal(windows(&c), "0 0");
  parse_ok(&c, "mistral", 2, "");
  assert_string_equal(windows(&c), "4096 4096");
  /* Mistral ignores layer_types (Hugging Face warns and windows every layer). */
  parse_ok(&c, "mistral", 2, "\"sliding_window\":5,\"layer_types\":[\"full_attention\",\"full_attention\"]");
  assert_string_equal(windows(&c), "5 5");
  parse_ok(&c, "llama", 2, "\"sliding_window\":5");
  assert_string_equal(windows(&c), "0 0");
  /* Qwen2 as published: a window size but use_sliding_window false. */
  parse_ok(&c, "qwen2", 3, "\"sliding_window\":131072,\"max_window_layers\":1,\"use_sliding_window\":false");
  assert_string_equal(windows(&c), "0 0 0");
  assert_int_equal(c.sliding_window, 131072);
  parse_ok(&c, "qwen2", 3, "\"sliding_window\":7,\"max_window_layers\":1,\"use_sliding_window\":true");
  assert_string_equal(windows(&c), "0 7 7");
  parse_ok(&c, "qwen2", 3, "\"use_sliding_window\":true,\"max_window_layers\":2");
  assert_string_equal(windows(&c), "0 0 4096");
  parse_ok(&c, "qwen2", 30, "\"use_sliding_window\":true"); /* max_window_layers defaults to 28 */
  assert_int_equal(fc_config_layer_window(&c, 27), 0);
  assert_int_equal(fc_config_layer_window(&c, 28), 4096);
  parse_ok(&c, "qwen2", 3, "\"use_sliding_window\":true,\"sliding_window\":null,\"max_window_layers\":0");
  assert_string_equal(windows(&c), "0 0 0");
  parse_ok(&c, "qwen2", 3,
           "\"use_sliding_window\":true,\"sliding_window\":9,\"max_window_layers\":0,\"layer_types\":"
           "[\"sliding_attention\",\"full_attention\",\"sliding_attention\"]");
  assert_string_equal(windows(&c), "9 0 9");
  parse_ok(&c, "qwen2", 2, "\"layer_types\":[\"full_attention\",\"full_attention\"]");
  assert_string_equal(windows(&c), "0 0");

  /* Written back so that both we and Hugging Face read the same windows. */
  char dir[] = "/tmp/fc_cfg_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char *p = fc_path_join(dir, "config.json");
  fc_err_t err = {0};
  const char *cases[][2] = {
      {"mistral", "\"sliding_window\":3"},
      {"mistral", "\"sliding_window\":null"},
      {"qwen2", "\"use_sliding_window\":true,\"sliding_window\":4,\"max_window_layers\":2"},
      {"qwen2", "\"use_sliding_window\":false,\"sliding_window\":4,\"max_window_layers\":1"},
      {"qwen2", "\"use_sliding_window\":true,\"sliding_window\":4,\"layer_types\":"
                "[\"full_attention\",\"sliding_attention\",\"full_attention\"]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fc_config_t d;
    parse_ok(&c, cases[i][0], 3, cases[i][1]);
    char want[256];
    snprintf(want, sizeof want, "%s", windows(&c));
    assert_int_equal(fc_config_save(&c, p, &err), 0);
    assert_int_equal(fc_config_load(&d, p, &err), 0);
    if (strcmp(windows(&d), want)) fail_msg("case %zu: %s after saving, %s before", i, windows(&d), want);
    assert_int_equal(d.sliding_window, c.sliding_window);
    assert_int_equal(d.use_sliding_window, c.use_sliding_window);
    assert_int_equal(d.has_layer_types, c.has_layer_types);
  }
  /* A new model has no window, and says so explicitly (Hugging Face's default is 4096). */
  fc_config_default(&c, "mistral");
  assert_int_equal(c.sliding_window, 0);
  assert_int_equal(fc_config_save(&c, p, &err), 0);
  char *text;
  assert_int_equal(fc_read_file(p, &text, NULL, &err), 0);
  assert_non_null(strstr(text, "\"sliding_window\": null"));
  free(text);
  unlink(p);
  rmdir(dir);
  free(p);
}

static void expect_error(const char *json, const char *needle) {
  fc_config_t c;
  fc_err_t err = {0};
  int rc = fc_config_parse(&c, json, "cfg", &err);
  assert_int_not_equal(rc, 0);
  if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
}

static void test_errors(void **state) {
  (void)state;
  expect_error("{", "cfg");
  expect_error("[]", "not a JSON object");
  expect_error("{\"model_type\":\"gpt2\"}", "'gpt2' is not supported");
  expect_error("{\"model_type\":\"llama\",\"hidden_size\":64}", "must be positive");
  expect_error("{\"model_type\":\"llama\",\"hidden_size\":\"x\"}", "'hidden_size' must be an integer");
  expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":3,"
               "\"vocab_size\":10}", "not a multiple of num_key_value_heads");
  expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,"
               "\"hidden_act\":\"gelu\"}", "silu");
  expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":10,"
               "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}", "'yarn' is not supported");
  static const char *bad_windows[][3] = {
      {"mistral", "\"sliding_window\":-1", "'sliding_window' must be a positive integer or null"},
      {"mistral", "\"sliding_window\":0", "'sliding_window' must be a positive integer or null"},
      {"mistral", "\"sliding_window\":\"4096\"", "'sliding_window' must be a positive integer or null"},
      {"qwen2", "\"use_sliding_window\":true,\"sliding_window\":-4096", "'sliding_window' must be"},
      {"qwen2", "\"use_sliding_window\":1", "'use_sliding_window' must be true or false"},
      {"qwen2", "\"max_window_layers\":-1", "'max_window_layers' must not be negative"},
      {"qwen2", "\"layer_types\":[\"full_attention\"]", "one type for each of the 2 layers"},
      {"qwen2", "\"layer_types\":\"full_attention\"", "one type for each of the 2 layers"},
      {"qwen2", "\"use_sliding_window\":true,\"layer_types\":[\"full_attention\",\"chunked_attention\"]",
       "layer_types[1] 'chunked_attention' is not supported"},
      {"qwen2", "\"use_sliding_window\":true,\"layer_types\":[\"full_attention\",3]",
       "layer_types[1] '(not a string)'"},
      {"qwen2", "\"layer_types\":[\"sliding_attention\",\"full_attention\"]",
       "layer_types[0] is sliding_attention but use_sliding_window is false"},
      {"qwen2", "\"use_sliding_window\":true,\"sliding_window\":null,\"layer_types\":"
                "[\"full_attention\",\"sliding_attention\"]",
       "sliding_window is null"},
  };
  for (size_t i = 0; i < sizeof bad_windows / sizeof bad_windows[0]; i++) {
    char *j = small_cfg(bad_windows[i][0], 2, bad_windows[i][1]);
    expect_error(j, bad_windows[i][2]);
    free(j);
  }
  fc_config_t c;
  fc_err_t err = {0};
  assert_int_equal(fc_config_load(&c, "/nonexistent", &err), FC_EIO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_real),
      cmocka_unit_test(test_save_load),
      cmocka_unit_test(test_sliding_window),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
