/* config.json of a model the engine runs: the Llama family (llama, mistral, qwen2: pivots and
 * sources) and the forward-only source families (mixtral, internlm2, gemma, gemma2, phi3), read
 * from and written to the Hugging Face format. */
#ifndef FC_CONFIG_H
#define FC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

/* Most layers a config.json may list in layer_types. */
#define FC_CONFIG_MAX_LAYER_TYPES 512

/* Most entries of phi3's longrope short_factor / long_factor lists (rotary dims / 2). */
#define FC_CONFIG_MAX_ROPE_FACTORS 256

/* Every model_type the engine loads, and those it can also train (pivots, targets). */
#define FC_CONFIG_TYPES "llama, mistral, qwen2, mixtral, internlm2, gemma, gemma2, phi3"
#define FC_CONFIG_PIVOT_TYPES "llama, mistral, qwen2"

/* The MLP's activation (hidden_act / hidden_activation). */
typedef enum fc_act { FC_ACT_SILU = 0, FC_ACT_GELU_TANH, FC_ACT_GELU } fc_act_t;

typedef struct fc_config {
  char model_type[32];     /* one of FC_CONFIG_TYPES */
  int hidden_size;         /* C */
  int intermediate_size;   /* F, the SwiGLU width */
  int num_layers;          /* L */
  int num_heads;           /* NH (query heads) */
  int num_kv_heads;        /* NKV, divides NH (grouped-query attention) */
  int head_dim;            /* HD, usually C / NH */
  int vocab_size;          /* V */
  int max_position_embeddings;
  float rope_theta;
  float rms_norm_eps;
  int tie_word_embeddings; /* lm_head shares embed_tokens */
  int attention_bias;      /* q/k/v projections have biases (qwen2 always; llama when set) */
  int o_bias;              /* o_proj has a bias too (llama attention_bias) */
  int mlp_bias;            /* llama mlp_bias */
  int bos_token_id, eos_token_id; /* -1 when absent */
  char torch_dtype[16];    /* "float32", "bfloat16", ... ("" when absent) */
  /* rope_scaling: none, "linear" (positions / factor) or "llama3" (frequency-dependent). */
  char rope_scaling_type[16];
  float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
  int rope_original_max_pos;
  float initializer_range;
  /* Sliding-window attention, as Hugging Face: on a windowed layer query position i sees keys
   * j with i - W < j <= i (W positions, itself included). Which layers are windowed:
   * mistral: all when sliding_window is set; qwen2: only with use_sliding_window, then the
   * layers marked in layer_types or else those with index >= max_window_layers; llama: none.
   * Ask fc_config_layer_window() rather than reading these. */
  int sliding_window;     /* W from config.json, 0 when null (mistral and qwen2 default 4096) */
  int use_sliding_window; /* qwen2 */
  int max_window_layers;  /* qwen2 (default 28) */
  int has_layer_types;    /* qwen2: config.json lists layer_types (written back then) */
  uint8_t layer_sliding[FC_CONFIG_MAX_LAYER_TYPES]; /* [L] with has_layer_types: 1 = sliding */
  /* Source families (forward only, fc_arch.h). */
  fc_act_t act;              /* MLP activation: silu, or gemma's GELU (tanh approximation or erf) */
  int num_experts;           /* mixtral num_local_experts (0: a dense MLP) */
  int experts_per_tok;       /* mixtral num_experts_per_tok */
  float query_pre_attn_scalar; /* gemma2: attention scale is its -1/2 power (0: head_dim) */
  float attn_softcap;        /* gemma2 attn_logit_softcapping: cap * tanh(s / cap), 0 = none */
  float final_softcap;       /* gemma2 final_logit_softcapping, on the LM head's logits */
  float partial_rotary_factor; /* phi3: RoPE turns the first head_dim * factor dims (1 = all) */
  /* phi3 rope_scaling "longrope" (also "su"): per-frequency divisors, short_factor while the
   * sequence fits original_max_position_embeddings (rope_original_max_pos), long_factor past
   * it; cos and sin scaled by rope_attn_factor. [rotary dims / 2] entries each. */
  float rope_short[FC_CONFIG_MAX_ROPE_FACTORS], rope_long[FC_CONFIG_MAX_ROPE_FACTORS];
  float rope_attn_factor;
} fc_config_t;

/* path: config.json or a model directory holding it. Validates the numbers and rejects model
 * types and options the engine does not implement, naming them. */
int fc_config_load(fc_config_t *c, const char *path, fc_err_t *err);
/* Parses config JSON text (used by tests and by fc_config_load). */
int fc_config_parse(fc_config_t *c, const char *json_text, const char *what, fc_err_t *err);
/* Writes a config.json that Hugging Face transformers can load (atomically). */
int fc_config_save(const fc_config_t *c, const char *path, fc_err_t *err);
/* Sensible defaults for a new small model of the given type (used by model init). */
void fc_config_default(fc_config_t *c, const char *model_type);
/* 1 when the type is one the training engine implements (FC_CONFIG_PIVOT_TYPES). */
int fc_config_is_pivot_type(const fc_config_t *c);
/* The attention window of layer `layer`: W when it uses sliding-window attention, 0 when it
 * attends to every earlier position. */
int fc_config_layer_window(const fc_config_t *c, int layer);
/* One line on what the family does beyond the shared hyper-parameters (experts and routing,
 * packed projections, norms, soft caps, windows, RoPE scaling) and whether it can be a pivot or
 * only a source; written into buf (NUL-terminated, truncated to n). */
void fc_config_describe(const fc_config_t *c, char *buf, size_t n);
/* Parameter count of the model the config describes. */
long long fc_config_num_params(const fc_config_t *c);

#endif
