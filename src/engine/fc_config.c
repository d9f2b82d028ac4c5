/* Reading and writing Hugging Face config.json: the Llama family and the source families. */
#include "fc_config.h"

#include <assert.h>
#include <jansson.h>
#include <math.h>
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
  const char *t = c->model_type;
  if (!strcmp(t, "mistral") || !strcmp(t, "mixtral") || !strcmp(t, "phi3")) return c->sliding_window;
  if (!strcmp(t, "gemma2")) return c->layer_sliding[layer] ? c->sliding_window : 0;
  if (strcmp(c->model_type, "qwen2") || !c->use_sliding_window || !c->sliding_window) return 0;
  if (c->has_layer_types) return c->layer_sliding[layer] ? c->sliding_window : 0;
  return layer >= c->max_window_layers ? c->sliding_window : 0;
}

static const char *const pivot_types[] = {"llama", "mistral", "qwen2", NULL};
static const char *const source_types[] = {"mixtral", "internlm2", "gemma", "gemma2", "phi3", NULL};

static int in_list(const char *const *list, const char *s) {
  for (; *list; list++)
    if (!strcmp(*list, s)) return 1;
  return 0;
}

int fc_config_is_pivot_type(const fc_config_t *c) { return in_list(pivot_types, c->model_type); }

/* Gemma2's windowed layers: layer_types when listed, else Hugging Face's default, every even
 * layer (0, 2, ...) sliding and the odd ones global. */
static int parse_gemma2_layers(fc_config_t *c, json_t *root, const char *what, fc_err_t *err) {
  if (c->num_layers > FC_CONFIG_MAX_LAYER_TYPES)
    return fc_err_set(err, FC_EUNSUPPORTED, "%s: gemma2 with more than %d layers is not supported", what,
                      FC_CONFIG_MAX_LAYER_TYPES);
  json_t *lt = json_object_get(root, "layer_types");
  if (lt && !json_is_null(lt) && (!json_is_array(lt) || json_array_size(lt) != (size_t)c->num_layers))
    return fc_err_set(err, FC_EFORMAT, "%s: 'layer_types' must list one type for each of the %d layers", what,
                      c->num_layers);
  for (int l = 0; l < c->num_layers; l++) {
    if (!lt || json_is_null(lt)) {
      c->layer_sliding[l] = l % 2 == 0;
      continue;
    }
    const char *t = json_string_value(json_array_get(lt, (size_t)l));
    if (!t || (strcmp(t, "full_attention") && strcmp(t, "sliding_attention")))
      return fc_err_set(err, FC_EUNSUPPORTED,
                        "%s: layer_types[%d] '%s' is not supported (full_attention, sliding_attention are)", what,
                        l, t ? t : "(not a string)");
    c->layer_sliding[l] = !strcmp(t, "sliding_attention");
  }
  c->has_layer_types = 1;
  return 0;
}

/* A float that may be null (then 0: the feature is off). */
static int get_float_or_null(json_t *root, const char *key, float def, float *out, const char *what,
                             fc_err_t *err) {
  json_t *v = json_object_get(root, key);
  if (v && json_is_null(v)) return *out = 0.0f, 0;
  return get_float(root, key, def, out, what, err);
}

static int parse_act(fc_config_t *c, json_t *root, const char *what, fc_err_t *err) {
  const int gemma = !strncmp(c->model_type, "gemma", 5);
  /* Gemma reads hidden_activation and, when absent, uses the tanh GELU whatever hidden_act
   * says (its configs carry the original "gelu"); the others read hidden_act. */
  json_t *act = json_object_get(root, gemma ? "hidden_activation" : "hidden_act");
  if (!act || json_is_null(act)) {
    c->act = gemma ? FC_ACT_GELU_TANH : FC_ACT_SILU;
    return 0;
  }
  const char *a = json_is_string(act) ? json_string_value(act) : "";
  if (!strcmp(a, "silu") || !strcmp(a, "swish")) c->act = FC_ACT_SILU;
  else if (gemma && (!strcmp(a, "gelu_pytorch_tanh") || !strcmp(a, "gelu_new"))) c->act = FC_ACT_GELU_TANH;
  else if (gemma && !strcmp(a, "gelu")) c->act = FC_ACT_GELU;
  else
    return fc_err_set(err, FC_EUNSUPPORTED, "%s: activation '%s' is not supported for %s (%s)", what, a,
                      c->model_type, gemma ? "gelu_pytorch_tanh, gelu, silu" : "silu");
  return 0;
}

/* The keys of the source families beyond the Llama ones. */
static int parse_source_type(fc_config_t *c, json_t *root, const char *what, fc_err_t *err) {
  const char *t = c->model_type;
  int rc = 0;
  if (!strcmp(t, "mixtral")) {
    if ((rc = get_int(root, "num_local_experts", 8, &c->num_experts, what, err)) ||
        (rc = get_int(root, "num_experts_per_tok", 2, &c->experts_per_tok, what, err)) ||
        (rc = get_window(root, 0, &c->sliding_window, what, err)))
      return rc;
    if (c->num_experts < 1 || c->experts_per_tok < 1 || c->experts_per_tok > c->num_experts)
      return fc_err_set(err, FC_EFORMAT, "%s: num_experts_per_tok %d must be in [1, num_local_experts %d]", what,
                        c->experts_per_tok, c->num_experts);
  } else if (!strcmp(t, "internlm2")) {
    int bias = 1; /* InternLM2Config's default: wqkv and wo have biases */
    if ((rc = get_bool(root, "bias", 1, &bias, what, err))) return rc;
    c->attention_bias = c->o_bias = bias;
  } else if (!strcmp(t, "gemma2")) {
    if ((rc = get_float(root, "query_pre_attn_scalar", 256.0f, &c->query_pre_attn_scalar, what, err)) ||
        (rc = get_float_or_null(root, "attn_logit_softcapping", 50.0f, &c->attn_softcap, what, err)) ||
        (rc = get_float_or_null(root, "final_logit_softcapping", 30.0f, &c->final_softcap, what, err)) ||
        (rc = get_window(root, 4096, &c->sliding_window, what, err)) ||
        (rc = parse_gemma2_layers(c, root, what, err)))
      return rc;
    if (c->query_pre_attn_scalar <= 0 || c->attn_softcap < 0 || c->final_softcap < 0)
      return fc_err_set(err, FC_EFORMAT, "%s: query_pre_attn_scalar must be positive and the soft caps not negative",
                        what);
  } else if (!strcmp(t, "phi3")) {
    if ((rc = get_window(root, 0, &c->sliding_window, what, err)) ||
        (rc = get_float(root, "partial_rotary_factor", 1.0f, &c->partial_rotary_factor, what, err)))
      return rc;
    int rd = (int)((float)c->head_dim * c->partial_rotary_factor);
    if (c->partial_rotary_factor <= 0 || c->partial_rotary_factor > 1 || rd < 2 || rd % 2)
      return fc_err_set(err, FC_EFORMAT, "%s: partial_rotary_factor %g must leave an even rotary width in (0, %d]",
                        what, c->partial_rotary_factor, c->head_dim);
  }
  return 0;
}

/* A list of exactly n positive numbers into out. */
static int get_factors(json_t *rs, const char *key, int n, float *out, const char *what, fc_err_t *err) {
  json_t *a = json_object_get(rs, key);
  if (!json_is_array(a) || json_array_size(a) != (size_t)n)
    return fc_err_set(err, FC_EFORMAT, "%s: rope_scaling '%s' must list %d numbers (rotary dims / 2)", what, key, n);
  for (int i = 0; i < n; i++) {
    json_t *v = json_array_get(a, (size_t)i);
    if (!json_is_number(v) || json_number_value(v) <= 0)
      return fc_err_set(err, FC_EFORMAT, "%s: rope_scaling '%s'[%d] must be a positive number", what, key, i);
    out[i] = (float)json_number_value(v);
  }
  return 0;
}

/* Phi3's longrope, as Hugging Face derives it: factor = max_position_embeddings /
 * original_max_position_embeddings, attention_factor (unless given) sqrt(1 + ln(factor) /
 * ln(original)) when factor > 1, else 1. */
static int parse_longrope(fc_config_t *c, json_t *root, json_t *rs, const char *what, fc_err_t *err) {
  int rd = (int)((float)c->head_dim * c->partial_rotary_factor), orig = 0, rc;
  if (rd / 2 > FC_CONFIG_MAX_ROPE_FACTORS)
    return fc_err_set(err, FC_EUNSUPPORTED, "%s: longrope over more than %d rotary dims is not supported", what,
                      2 * FC_CONFIG_MAX_ROPE_FACTORS);
  snprintf(c->rope_scaling_type, sizeof c->rope_scaling_type, "longrope");
  if ((rc = get_factors(rs, "short_factor", rd / 2, c->rope_short, what, err)) ||
      (rc = get_factors(rs, "long_factor", rd / 2, c->rope_long, what, err)) ||
      (rc = get_int(root, "original_max_position_embeddings", 0, &orig, what, err)))
    return rc;
  if (orig > 0) {
    c->rope_factor = (float)c->max_position_embeddings / (float)orig;
  } else {
    orig = c->max_position_embeddings;
    if ((rc = get_float(rs, "factor", 1.0f, &c->rope_factor, what, err))) return rc;
  }
  if (orig < 2 || c->rope_factor <= 0)
    return fc_err_set(err, FC_EFORMAT, "%s: longrope needs original_max_position_embeddings > 1", what);
  c->rope_original_max_pos = orig;
  float af = c->rope_factor <= 1.0f ? 1.0f : (float)sqrt(1.0 + log(c->rope_factor) / log((double)orig));
  json_t *v = json_object_get(rs, "attention_factor");
  if (v && !json_is_null(v)) return get_float(rs, "attention_factor", af, &c->rope_attn_factor, what, err);
  c->rope_attn_factor = af;
  return 0;
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
  c->act = !strncmp(model_type, "gemma", 5) ? FC_ACT_GELU_TANH : FC_ACT_SILU;
  c->partial_rotary_factor = 1.0f;
  if (!strcmp(model_type, "mixtral")) c->num_experts = 8, c->experts_per_tok = 2;
  if (!strcmp(model_type, "internlm2")) c->attention_bias = c->o_bias = 0;
  if (!strncmp(model_type, "gemma", 5)) c->tie_word_embeddings = 1;
  if (!strcmp(model_type, "gemma2")) {
    c->query_pre_attn_scalar = (float)c->head_dim;
    c->attn_softcap = 50.0f, c->final_softcap = 30.0f;
    for (int l = 0; l < c->num_layers; l++) c->layer_sliding[l] = l % 2 == 0;
    c->has_layer_types = 1;
  }
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
  if (!in_list(pivot_types, type) && !in_list(source_types, type)) {
    rc = fc_err_set(err, FC_EUNSUPPORTED, "%s: model_type '%s' is not supported (" FC_CONFIG_TYPES " are)", what,
                    type);
    goto out;
  }
  fc_config_default(c, type);
  const int source = in_list(source_types, type), gemma = !strncmp(type, "gemma", 5);
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
      (rc = get_bool(root, "tie_word_embeddings", gemma, &c->tie_word_embeddings, what, err)) ||
      (rc = get_bool(root, "attention_bias", 0, &ab, what, err)) ||
      (rc = get_bool(root, "mlp_bias", 0, &c->mlp_bias, what, err)) ||
      (rc = get_token_id(root, "bos_token_id", &c->bos_token_id, what, err)) ||
      (rc = get_token_id(root, "eos_token_id", &c->eos_token_id, what, err)))
    goto out;
  if (c->num_kv_heads < 0) c->num_kv_heads = c->num_heads;
  /* Qwen2 always has q/k/v biases and no o bias; Llama's attention_bias covers all four. */
  if (!strcmp(type, "qwen2")) c->attention_bias = 1, c->o_bias = 0;
  else if (!source || gemma) c->attention_bias = c->o_bias = ab;
  else c->attention_bias = c->o_bias = 0; /* mixtral, phi3; internlm2 reads "bias" below */
  if (source) c->mlp_bias = 0;            /* no source family has MLP biases */
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
  if ((rc = parse_act(c, root, what, err))) goto out;
  if (source && (rc = parse_source_type(c, root, what, err))) goto out;
  json_t *rs = json_object_get(root, "rope_scaling");
  if (rs && !json_is_null(rs)) {
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    const char *ts = json_is_string(t) ? json_string_value(t) : "";
    /* The Llama engine implements linear and llama3; the source engine (fc_arch) linear,
     * InternLM2's dynamic NTK scaling and Phi3's longrope. */
    const int ilm = !strcmp(type, "internlm2"), phi = !strcmp(type, "phi3");
    int ok = !strcmp(ts, "linear") || !strcmp(ts, "default") || (!source && !strcmp(ts, "llama3")) ||
             (ilm && !strcmp(ts, "dynamic")) || (phi && (!strcmp(ts, "longrope") || !strcmp(ts, "su")));
    if (!ok) {
      rc = fc_err_set(err, FC_EUNSUPPORTED, "%s: rope_scaling type '%s' is not supported for %s (%s are)", what,
                      ts, type, ilm ? "linear, dynamic" : phi ? "linear, longrope" : source ? "linear" : "linear, llama3");
      goto out;
    }
    if (phi && strcmp(ts, "linear") && strcmp(ts, "default")) {
      if ((rc = parse_longrope(c, root, rs, what, err))) goto out;
    } else if (strcmp(ts, "default")) {
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
  static const char *const archs_of[][2] = {
      {"qwen2", "Qwen2ForCausalLM"},   {"mistral", "MistralForCausalLM"},     {"mixtral", "MixtralForCausalLM"},
      {"gemma", "GemmaForCausalLM"},   {"gemma2", "Gemma2ForCausalLM"},       {"phi3", "Phi3ForCausalLM"},
      {"internlm2", "InternLM2ForCausalLM"}};
  const char *arch = "LlamaForCausalLM", *t = c->model_type;
  for (size_t i = 0; i < sizeof archs_of / sizeof archs_of[0]; i++)
    if (!strcmp(t, archs_of[i][0])) arch = archs_of[i][1];
  const int gemma = !strncmp(t, "gemma", 5);
  json_t *archs = json_array();
  json_array_append_new(archs, json_string(arch));
  json_object_set_new(r, "architectures", archs);
  json_object_set_new(r, "model_type", json_string(c->model_type));
  json_object_set_new(r, "hidden_size", json_integer(c->hidden_size));
  json_object_set_new(r, "intermediate_size", json_integer(c->intermediate_size));
  json_object_set_new(r, "num_hidden_layers", json_integer(c->num_layers));
  json_object_set_new(r, "num_attention_heads", json_integer(c->num_heads));
  json_object_set_new(r, "num_key_value_heads", json_integer(c->num_kv_heads));
  if (gemma || c->head_dim != c->hidden_size / c->num_heads)
    json_object_set_new(r, "head_dim", json_integer(c->head_dim));
  json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(r, "max_position_embeddings", json_integer(c->max_position_embeddings));
  json_object_set_new(r, "rope_theta", json_real(c->rope_theta));
  json_object_set_new(r, "rms_norm_eps", json_real(c->rms_norm_eps));
  json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
  if (fc_config_is_pivot_type(c) ? strcmp(t, "qwen2") : gemma)
    json_object_set_new(r, "attention_bias", json_boolean(c->attention_bias));
  if (!strcmp(t, "internlm2")) json_object_set_new(r, "bias", json_boolean(c->attention_bias));
  if (c->mlp_bias) json_object_set_new(r, "mlp_bias", json_true());
  static const char *const act_names[] = {"silu", "gelu_pytorch_tanh", "gelu"};
  json_object_set_new(r, gemma ? "hidden_activation" : "hidden_act", json_string(act_names[c->act]));
  if (!strcmp(t, "mixtral")) {
    json_object_set_new(r, "num_local_experts", json_integer(c->num_experts));
    json_object_set_new(r, "num_experts_per_tok", json_integer(c->experts_per_tok));
  }
  if (!strcmp(t, "gemma2")) {
    json_object_set_new(r, "query_pre_attn_scalar", json_real(c->query_pre_attn_scalar));
    json_object_set_new(r, "attn_logit_softcapping", c->attn_softcap > 0 ? json_real(c->attn_softcap) : json_null());
    json_object_set_new(r, "final_logit_softcapping",
                        c->final_softcap > 0 ? json_real(c->final_softcap) : json_null());
    json_t *lt = json_array();
    for (int l = 0; l < c->num_layers; l++)
      json_array_append_new(lt, json_string(c->layer_sliding[l] ? "sliding_attention" : "full_attention"));
    json_object_set_new(r, "layer_types", lt);
  }
  if (!strcmp(t, "phi3") && c->partial_rotary_factor != 1.0f)
    json_object_set_new(r, "partial_rotary_factor", json_real(c->partial_rotary_factor));
  json_object_set_new(r, "initializer_range", json_real(c->initializer_range));
  if (c->bos_token_id >= 0) json_object_set_new(r, "bos_token_id", json_integer(c->bos_token_id));
  if (c->eos_token_id >= 0) json_object_set_new(r, "eos_token_id", json_integer(c->eos_token_id));
  json_object_set_new(r, "torch_dtype", json_string(c->torch_dtype[0] ? c->torch_dtype : "float32"));
  if (!strcmp(c->rope_scaling_type, "longrope")) { /* phi3: the lists, and the length they switch at */
    json_t *rs = json_object(), *sf = json_array(), *lf = json_array();
    int rd = (int)((float)c->head_dim * c->partial_rotary_factor);
    for (int i = 0; i < rd / 2; i++) {
      json_array_append_new(sf, json_real(c->rope_short[i]));
      json_array_append_new(lf, json_real(c->rope_long[i]));
    }
    json_object_set_new(rs, "type", json_string("longrope"));
    json_object_set_new(rs, "short_factor", sf);
    json_object_set_new(rs, "long_factor", lf);
    json_object_set_new(rs, "attention_factor", json_real(c->rope_attn_factor));
    json_object_set_new(r, "rope_scaling", rs);
    json_object_set_new(r, "original_max_position_embeddings", json_integer(c->rope_original_max_pos));
  } else if (c->rope_scaling_type[0]) {
    json_t *rs = json_object();
    /* InternLM2's remote code reads "type"; the others "rope_type". */
    json_object_set_new(rs, !strcmp(t, "internlm2") ? "type" : "rope_type", json_string(c->rope_scaling_type));
    json_object_set_new(rs, "factor", json_real(c->rope_factor));
    if (!strcmp(c->rope_scaling_type, "llama3")) {
      json_object_set_new(rs, "low_freq_factor", json_real(c->rope_low_freq_factor));
      json_object_set_new(rs, "high_freq_factor", json_real(c->rope_high_freq_factor));
      json_object_set_new(rs, "original_max_position_embeddings", json_integer(c->rope_original_max_pos));
    }
    json_object_set_new(r, "rope_scaling", rs);
  }
  if (!strcmp(t, "mistral") || !strcmp(t, "qwen2") || !strcmp(t, "mixtral") || !strcmp(t, "gemma2") ||
      !strcmp(t, "phi3"))
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
  if (c->num_experts > 0) mlp = c->num_experts * 3 * C * F + C * c->num_experts; /* experts + router */
  long long layer = attn + mlp + (!strcmp(c->model_type, "gemma2") ? 4 : 2) * C;
  return V * C * (c->tie_word_embeddings ? 1 : 2) + c->num_layers * layer + C;
}

/* Which layers are windowed, as "W on layers 0,2,4" / "W on every layer" / "none". */
static void windows_text(const fc_config_t *c, char *buf, size_t n) {
  int nw = 0, first = 1;
  for (int l = 0; l < c->num_layers; l++) nw += fc_config_layer_window(c, l) > 0;
  if (!nw) {
    snprintf(buf, n, "none");
    return;
  }
  if (nw == c->num_layers) {
    snprintf(buf, n, "%d positions on every layer", c->sliding_window);
    return;
  }
  size_t o = (size_t)snprintf(buf, n, "%d positions on layers ", c->sliding_window);
  for (int l = 0; l < c->num_layers && o < n; l++)
    if (fc_config_layer_window(c, l) > 0) {
      o += (size_t)snprintf(buf + o, n - o, "%s%d", first ? "" : ",", l);
      first = 0;
    }
}

void fc_config_describe(const fc_config_t *c, char *buf, size_t n) {
  static const char *const act_names[] = {"SiLU (SwiGLU)", "GELU tanh (GeGLU)", "GELU erf (GeGLU)"};
  char win[256], rope[96];
  windows_text(c, win, sizeof win);
  if (c->rope_scaling_type[0]) snprintf(rope, sizeof rope, "%s x%g", c->rope_scaling_type, c->rope_factor);
  else snprintf(rope, sizeof rope, "none");
  const char *t = c->model_type, *role = fc_config_is_pivot_type(c) ? "pivot or source" : "source only (forward)";
  int rd = !strcmp(t, "phi3") ? (int)((float)c->head_dim * c->partial_rotary_factor) : c->head_dim;
  if (!strcmp(t, "mixtral"))
    snprintf(buf, n,
             "mixtral: sparse mixture of experts, %d SwiGLU experts per layer, top-%d per token weighted by the "
             "softmax over the chosen router logits; window %s; rope scaling %s; %s",
             c->num_experts, c->experts_per_tok, win, rope, role);
  else if (!strcmp(t, "internlm2"))
    snprintf(buf, n,
             "internlm2: packed wqkv grouped per KV head (%d query heads + k + v in each of %d groups), wqkv/wo "
             "bias %s, feed_forward w1/w3/w2 SwiGLU; rope scaling %s; %s",
             c->num_heads / c->num_kv_heads, c->num_kv_heads, c->attention_bias ? "yes" : "no", rope, role);
  else if (!strcmp(t, "gemma"))
    snprintf(buf, n, "gemma: %s MLP, RMSNorm scaled by (1 + w), embeddings times sqrt(%d); %s", act_names[c->act],
             c->hidden_size, role);
  else if (!strcmp(t, "gemma2"))
    snprintf(buf, n,
             "gemma2: %s MLP, RMSNorm (1 + w) before and after attention and MLP, embeddings times sqrt(%d), "
             "attention scale %g^-1/2, soft caps attention %g final %g (0 = off); window %s; %s",
             act_names[c->act], c->hidden_size, c->query_pre_attn_scalar, c->attn_softcap, c->final_softcap, win,
             role);
  else if (!strcmp(t, "phi3"))
    snprintf(buf, n,
             "phi3: packed qkv_proj and gate_up_proj, SwiGLU, rotary on %d of %d head dims; window %s; rope scaling "
             "%s; %s", rd, c->head_dim, win, rope, role);
  else
    snprintf(buf, n, "%s: Llama family, SwiGLU; window %s; rope scaling %s; %s", t, win, rope, role);
}
