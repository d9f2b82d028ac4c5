/* Reading and writing Hugging Face config.json for the Llama family. */
#include "fc_config.h"

#include <assert.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>

static int get_int(json_t *root, const char *key, int def, int *out, const char *what,
                   fc_err_t *err) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) return *out = def, 0;
  if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > (1 << 30))
    return fc_err_set(err, FC_EFORMAT, "%s: '%s' must be an integer", what, key);
  *out = (int)json_integer_value(v);
  return 0;
}

static int get_float(json_t *root, const char *key, float def, float *out, const char *what,
                     fc_err_t *err) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) return *out = def, 0;
  if (!json_is_number(v)) return fc_err_set(err, FC_EFORMAT, "%s: '%s' must be a number", what, key);
  *out = (float)json_number_value(v);
  return 0;
}

static int get_bool(json_t *root, const char *key, int def, int *out, const char *what,
                    fc_err_t *err) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) return *out = def, 0;
  if (!json_is_boolean(v)) return fc_err_set(err, FC_EFORMAT, "%s: '%s' must be true or false", what, key);
  *out = json_is_true(v);
  return 0;
}

/* bos/eos may be an integer or a list (Llama-3.1 lists several eos ids; the first is kept). */
static int get_token_id(json_t *root, const char *key, int *out, const char *what, fc_err_t *err) {
  json_t *v = json_object_get(root, key);
  if (json_is_array(v)) v = json_array_get(v, 0);
  if (!v || json_is_null(v)) return *out = -1, 0;
  if (!json_is_integer(v)) return fc_err_set(err, FC_EFORMAT, "%s: '%s' must be a token id", what, key);
  *out = (int)json_integer_value(v);
  return 0;
}

/* sliding_window: a positive integer, or null for none (kept as 0); absent gives def. */
static int get_window(json_t *root, int def, int *out, const char *what, fc_err_t *err) {
  json_t *v = json_object_get(root, "sliding_window");
  if (!v) return *out = def, 0;
  if (json_is_null(v)) return *out = 0, 0;
  if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 30))
    return fc_err_set(err, FC_EFORMAT, "%s: 'sliding_window' must be a positive integer or null", what);
  *out = (int)json_integer_value(v);
  return 0;
}

/* Qwen2's window options. Hugging Face drops the window unless use_sliding_window, then
 * windows the layers layer_types marks "sliding_attention", or without layer_types those at
 * index >= max_window_layers. */
static int parse_qwen2_window(fc_config_t *c, json_t *root, const char *what, fc_err_t *err) {
  int rc;
  if ((rc = get_bool(root, "use_sliding_window", 0, &c->use_sliding_window, what, err)) ||
      (rc = get_window(root, 4096, &c->sliding_window, what, err)) ||
      (rc = get_int(root, "max_window_layers", 28, &c->max_window_layers, what, err)))
    return rc;
  if (c->max_window_layers < 0)
    return fc_err_set(err, FC_EFORMAT, "%s: 'max_window_layers' must not be negative", what);
  json_t *lt = json_object_get(root, "layer_types");
  if (!lt || json_is_null(lt)) return 0;
  if (!json_is_array(lt) || json_array_size(lt) != (size_t)c->num_layers)
    return fc_err_set(err, FC_EFORMAT, "%s: 'layer_types' must list one type for each of the %d layers", what,
                      c->num_layers);
  if (c->num_layers > FC_CONFIG_MAX_LAYER_TYPES)
    return fc_err_set(err, FC_EUNSUPPORTED, "%s: 'layer_types' for more than %d layers is not supported", what,
                      FC_CONFIG_MAX_LAYER_TYPES);
  for (int l = 0; l < c->num_layers; l++) {
    const char *t = json_string_value(json_array_get(lt, (size_t)l));
    if (t && !strcmp(t, "full_attention")) {
      c->layer_sliding[l] = 0;
    } else if (t && !strcmp(t, "sliding_attention")) {
      /* Hugging Face refuses a sliding layer without a window (use_sliding_window false or
       * sliding_window null): so do we, rather than guess which one was meant. */
      if (!c->use_sliding_window || !c->sliding_window)
        return fc_err_set(err, FC_EFORMAT,
                          "%s: layer_types[%d] is sliding_attention but use_sliding_window is false or "
                          "sliding_window is null", what, l);
      c->layer_sliding[l] = 1;
    } else {
      return fc_err_set(err, FC_EUNSUPPORTED,
                        "%s: layer_types[%d] '%s' is not supported (full_attention, sliding_attention are)", what,
                        l, t ? t : "(not a string)");
    }
  }
  c->has_layer_types = 1;
  return 0;
}

int fc_config_layer_window(const fc_config_t *c, int layer) {
  assert(layer >= 0 && layer < c->num_layers);
  assert(!c->has_layer_types || c->num_layers <= FC_CONFIG_MAX_LAYER_TYPES);
  if (!strcmp(c->model_type, "mistral")) return c->sliding_window;
  if (strcmp(c->model_type, "qwen2") || !c->use_sliding_window || !c->sliding_window) return 0;
  if (c->has_layer_types) return c->layer_sliding[layer] ? c->sliding_window : 0;
  return layer >= c->max_window_layers ? c->sliding_window : 0;
}

void fc_config_default(fc_config_t *c, const char *model_type) {
  memset(c, 0, sizeof *c);
  snprintf(c->model_type, sizeof c->model_type, "%s", model_type);
  c->hidden_size = 256;
  c->intermediate_size = 688;
  c->num_layers = 4;
  c->num_heads = 4;
  c->num_kv_heads = 4;
  c->head_dim = 64;
  c->vocab_size = 4096;
  c->max_position_embeddings = 2048;
  c->rope_theta = 10000.0f;
  c->rms_norm_eps = 1e-5f;
  c->attention_bias = !strcmp(model_type, "qwen2");
  c->bos_token_id = c->eos_token_id = -1;
  snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
  c->initializer_range = 0.02f;
  c->max_window_layers = 28; /* inert: new models get no window (sliding_window 0) */
}

int fc_config_parse(fc_config_t *c, const char *text, const char *what, fc_err_t *err) {
  json_error_t jerr;
  json_t *root = json_loads(text, 0, &jerr);
  if (!root) return fc_err_set(err, FC_EFORMAT, "%s: %s (line %d)", what, jerr.text, jerr.line);
  int rc = 0;
  if (!json_is_object(root)) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: not a JSON object", what);
    goto out;
  }
  json_t *mt = json_object_get(root, "model_type");
  if (!json_is_string(mt)) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: no model_type", what);
    goto out;
  }
  const char *type = json_string_value(mt);
  if (strcmp(type, "llama") && strcmp(type, "mistral") && strcmp(type, "qwen2")) {
    rc = fc_err_set(err, FC_EUNSUPPORTED,
                    "%s: model_type '%s' is not supported (llama, mistral and qwen2 are)", what, type);
    goto out;
  }
  fc_config_default(c, type);
  int ab = 0, hd = 0;
  if ((rc = get_int(root, "hidden_size", 0, &c->hidden_size, what, err)) ||
      (rc = get_int(root, "intermediate_size", 0, &c->intermediate_size, what, err)) ||
      (rc = get_int(root, "num_hidden_layers", 0, &c->num_layers, what, err)) ||
      (rc = get_int(root, "num_attention_heads", 0, &c->num_heads, what, err)) ||
      (rc = get_int(root, "num_key_value_heads", -1, &c->num_kv_heads, what, err)) ||
      (rc = get_int(root, "head_dim", 0, &hd, what, err)) ||
      (rc = get_int(root, "vocab_size", 0, &c->vocab_size, what, err)) ||
      (rc = get_int(root, "max_position_embeddings", 2048, &c->max_position_embeddings, what, err)) ||
      (rc = get_float(root, "rope_theta", 10000.0f, &c->rope_theta, what, err)) ||
      (rc = get_float(root, "rms_norm_eps", 1e-6f, &c->rms_norm_eps, what, err)) ||
      (rc = get_float(root, "initializer_range", 0.02f, &c->initializer_range, what, err)) ||
      (rc = get_bool(root, "tie_word_embeddings", 0, &c->tie_word_embeddings, what, err)) ||
      (rc = get_bool(root, "attention_bias", 0, &ab, what, err)) ||
      (rc = get_bool(root, "mlp_bias", 0, &c->mlp_bias, what, err)) ||
      (rc = get_token_id(root, "bos_token_id", &c->bos_token_id, what, err)) ||
      (rc = get_token_id(root, "eos_token_id", &c->eos_token_id, what, err)))
    goto out;
  if (c->num_kv_heads < 0) c->num_kv_heads = c->num_heads;
  /* Qwen2 always has q/k/v biases and no o bias; Llama's attention_bias covers all four. */
  if (!strcmp(type, "qwen2")) c->attention_bias = 1, c->o_bias = 0;
  else c->attention_bias = c->o_bias = ab;
  json_t *dt = json_object_get(root, "torch_dtype");
  if (!dt) dt = json_object_get(root, "dtype");
  c->torch_dtype[0] = 0;
  if (json_is_string(dt)) snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", json_string_value(dt));
  if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_layers <= 0 ||
      c->num_heads <= 0 || c->num_kv_heads <= 0 || c->vocab_size <= 0) {
    rc = fc_err_set(err, FC_EFORMAT,
                    "%s: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, "
                    "num_key_value_heads and vocab_size must be positive",
                    what);
    goto out;
  }
  if (c->num_heads % c->num_kv_heads) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                    what, c->num_heads, c->num_kv_heads);
    goto out;
  }
  c->head_dim = hd > 0 ? hd : c->hidden_size / c->num_heads;
  if (hd <= 0 && c->hidden_size % c->num_heads) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                    what, c->hidden_size, c->num_heads);
    goto out;
  }
  if (c->head_dim % 2) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: head_dim %d must be even for rotary embeddings", what, c->head_dim);
    goto out;
  }
  if (c->rms_norm_eps <= 0 || c->rope_theta <= 0) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: rms_norm_eps and rope_theta must be positive", what);
    goto out;
  }
  /* Mistral windows every layer (sliding_window absent means Hugging Face's default 4096;
   * null means none); Llama has no window and ignores the keys. */
  if (!strcmp(type, "mistral") && (rc = get_window(root, 4096, &c->sliding_window, what, err))) goto out;
  if (!strcmp(type, "qwen2") && (rc = parse_qwen2_window(c, root, what, err))) goto out;
  json_t *act = json_object_get(root, "hidden_act");
  if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu"))) {
    rc = fc_err_set(err, FC_EUNSUPPORTED, "%s: hidden_act must be silu", what);
    goto out;
  }
  json_t *rs = json_object_get(root, "rope_scaling");
  if (rs && !json_is_null(rs)) {
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    const char *ts = json_is_string(t) ? json_string_value(t) : "";
    if (strcmp(ts, "linear") && strcmp(ts, "llama3") && strcmp(ts, "default")) {
      rc = fc_err_set(err, FC_EUNSUPPORTED, "%s: rope_scaling type '%s' is not supported (linear, llama3 are)",
                      what, ts);
      goto out;
    }
    if (strcmp(ts, "default")) {
      snprintf(c->rope_scaling_type, sizeof c->rope_scaling_type, "%s", ts);
      if ((rc = get_float(rs, "factor", 1.0f, &c->rope_factor, what, err)) ||
          (rc = get_float(rs, "low_freq_factor", 1.0f, &c->rope_low_freq_factor, what, err)) ||
          (rc = get_float(rs, "high_freq_factor", 4.0f, &c->rope_high_freq_factor, what, err)) ||
          (rc = get_int(rs, "original_max_position_embeddings", 8192, &c->rope_original_max_pos, what, err)))
        goto out;
    }
  }
out:
  json_decref(root);
  return rc;
}

int fc_config_load(fc_config_t *c, const char *path, fc_err_t *err) {
  struct stat sb;
  char *p = (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) ? fc_path_join(path, "config.json")
                                                          : fc_xstrdup(path);
  char *text;
  int rc = fc_read_file(p, &text, NULL, err);
  if (!rc) {
    rc = fc_config_parse(c, text, p, err);
    free(text);
  }
  free(p);
  return rc;
}

int fc_config_save(const fc_config_t *c, const char *path, fc_err_t *err) {
  json_t *r = json_object();
  const char *arch = !strcmp(c->model_type, "qwen2")     ? "Qwen2ForCausalLM"
                     : !strcmp(c->model_type, "mistral") ? "MistralForCausalLM"
                                                         : "LlamaForCausalLM";
  json_t *archs = json_array();
  json_array_append_new(archs, json_string(arch));
  json_object_set_new(r, "architectures", archs);
  json_object_set_new(r, "model_type", json_string(c->model_type));
  json_object_set_new(r, "hidden_size", json_integer(c->hidden_size));
  json_object_set_new(r, "intermediate_size", json_integer(c->intermediate_size));
  json_object_set_new(r, "num_hidden_layers", json_integer(c->num_layers));
  json_object_set_new(r, "num_attention_heads", json_integer(c->num_heads));
  json_object_set_new(r, "num_key_value_heads", json_integer(c->num_kv_heads));
  if (c->head_dim != c->hidden_size / c->num_heads) json_object_set_new(r, "head_dim", json_integer(c->head_dim));
  json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(r, "max_position_embeddings", json_integer(c->max_position_embeddings));
  json_object_set_new(r, "rope_theta", json_real(c->rope_theta));
  json_object_set_new(r, "rms_norm_eps", json_real(c->rms_norm_eps));
  json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
  if (strcmp(c->model_type, "qwen2")) json_object_set_new(r, "attention_bias", json_boolean(c->attention_bias));
  if (c->mlp_bias) json_object_set_new(r, "mlp_bias", json_true());
  json_object_set_new(r, "hidden_act", json_string("silu"));
  json_object_set_new(r, "initializer_range", json_real(c->initializer_range));
  if (c->bos_token_id >= 0) json_object_set_new(r, "bos_token_id", json_integer(c->bos_token_id));
  if (c->eos_token_id >= 0) json_object_set_new(r, "eos_token_id", json_integer(c->eos_token_id));
  json_object_set_new(r, "torch_dtype", json_string(c->torch_dtype[0] ? c->torch_dtype : "float32"));
  if (c->rope_scaling_type[0]) {
    json_t *rs = json_object();
    json_object_set_new(rs, "rope_type", json_string(c->rope_scaling_type));
    json_object_set_new(rs, "factor", json_real(c->rope_factor));
    if (!strcmp(c->rope_scaling_type, "llama3")) {
      json_object_set_new(rs, "low_freq_factor", json_real(c->rope_low_freq_factor));
      json_object_set_new(rs, "high_freq_factor", json_real(c->rope_high_freq_factor));
      json_object_set_new(rs, "original_max_position_embeddings", json_integer(c->rope_original_max_pos));
    }
    json_object_set_new(r, "rope_scaling", rs);
  }
  if (!strcmp(c->model_type, "mistral") || !strcmp(c->model_type, "qwen2"))
    json_object_set_new(r, "sliding_window", c->sliding_window ? json_integer(c->sliding_window) : json_null());
  if (!strcmp(c->model_type, "qwen2")) {
    json_object_set_new(r, "use_sliding_window", json_boolean(c->use_sliding_window));
    json_object_set_new(r, "max_window_layers", json_integer(c->max_window_layers));
    if (c->has_layer_types) {
      json_t *lt = json_array();
      for (int l = 0; l < c->num_layers; l++)
        json_array_append_new(lt, json_string(c->layer_sliding[l] ? "sliding_attention" : "full_attention"));
      json_object_set_new(r, "layer_types", lt);
    }
  }
  json_object_set_new(r, "use_cache", json_true());
  char *s = json_dumps(r, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
  json_decref(r);
  int rc = fc_write_text_file(path, s, err);
  free(s);
  return rc;
}

long long fc_config_num_params(const fc_config_t *c) {
  long long C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, HD = c->head_dim;
  long long q = (long long)c->num_heads * HD, kv = (long long)c->num_kv_heads * HD;
  long long attn = C * q + 2 * C * kv + q * C;
  if (c->attention_bias) attn += q + 2 * kv;
  if (c->o_bias) attn += C;
  long long mlp = 3 * C * F + (c->mlp_bias ? 2 * F + C : 0);
  long long layer = attn + mlp + 2 * C;
  return V * C * (c->tie_word_embeddings ? 1 : 2) + c->num_layers * layer + C;
}
