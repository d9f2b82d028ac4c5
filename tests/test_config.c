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
  fc_config_t c;
  fc_err_t err = {0};
  assert_int_equal(fc_config_load(&c, "/nonexistent", &err), FC_EIO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_real),
      cmocka_unit_test(test_save_load),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
