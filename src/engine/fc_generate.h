/* Text generation with the model engine: greedy or sampled (temperature, top-p, seeded)
 * decoding with a KV cache, stopping at eos or after max_tokens. */
#ifndef FC_GENERATE_H
#define FC_GENERATE_H

#include <stdint.h>

#include "fc_model.h"

typedef struct fc_gen_opts {
  int max_tokens;    /* new tokens at most (> 0) */
  float temperature; /* <= 0: greedy (argmax) */
  float top_p;       /* nucleus mass in (0, 1]; 1 (or <= 0) keeps every token */
  uint64_t seed;     /* sampling is deterministic for a seed */
  int eos_id;        /* stop after emitting this id; -2: the config's eos_token_id; -1: none */
} fc_gen_opts_t;

/* Defaults: 128 tokens, greedy, top_p 1, seed 0, eos from the config. */
void fc_gen_opts_default(fc_gen_opts_t *o);

/* Continues prompt[0..n) and returns the new ids (the eos included when it was emitted) in
 * *out (malloc'ed, caller frees) and their count in *nout. */
int fc_generate(fc_model_t *m, const int32_t *prompt, int n, const fc_gen_opts_t *opts, int32_t **out,
                int *nout, fc_err_t *err);

/* B prompts at once, for evaluation: each prompt is prefilled on its own, then every step
 * decodes one token of all unfinished rows together (one product of up to B rows per weight).
 * Row i samples with seed opts->seed + i, so row i alone equals fc_generate with that seed.
 * outs[i] (malloc'ed, caller frees) and nouts[i] receive row i's new ids. */
int fc_generate_batch(fc_model_t *m, const int32_t *const *prompts, const int *lens, int B,
                      const fc_gen_opts_t *opts, int32_t **outs, int *nouts, fc_err_t *err);

/* A KV cache for one sequence, for callers that drive decoding themselves. */
typedef struct fc_kv_cache fc_kv_cache_t;
int fc_kv_cache_new(fc_kv_cache_t **out, const fc_model_t *m, int capacity, fc_err_t *err);
void fc_kv_cache_destroy(fc_kv_cache_t **c);
int fc_kv_cache_len(const fc_kv_cache_t *c);
/* Feeds ids[0..n) after what the cache holds; returns the logits (V) of the last one, valid
 * until the next call. */
const float *fc_model_decode(fc_model_t *m, fc_kv_cache_t *c, const int32_t *ids, int n, fc_err_t *err);

#endif
