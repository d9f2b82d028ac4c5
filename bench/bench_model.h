/* What bench/forward and bench/train share: the model shapes they time, building a random Llama
 * model of one, and running the PyTorch reference script on the same shape. */
#ifndef FC_BENCH_MODEL_H
#define FC_BENCH_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_model.h"

#ifndef FC_SOURCE_ROOT
#define FC_SOURCE_ROOT "."
#endif

typedef struct shape {
  int C, L, NH, NKV, F, V; /* hidden, layers, heads, kv heads, ffn, vocab */
} shape_t;

/* The shape of hidden size C in shapes[n], or NULL. */
static inline const shape_t *bench_shape(const shape_t *shapes, size_t n, int C) {
  for (size_t i = 0; i < n; i++)
    if (shapes[i].C == C) return &shapes[i];
  return NULL;
}

/* A randomly initialised Llama model of shape s, computing on `threads` threads. */
static inline int bench_model_new(fc_model_t **m, fc_config_t *cfg, const shape_t *s, int threads, fc_err_t *err) {
  fc_config_default(cfg, "llama");
  cfg->hidden_size = s->C, cfg->num_layers = s->L, cfg->num_heads = s->NH, cfg->num_kv_heads = s->NKV;
  cfg->head_dim = s->C / s->NH, cfg->intermediate_size = s->F, cfg->vocab_size = s->V;
  int rc = fc_model_init(m, cfg, 1, err);
  if (!rc) fc_model_set_threads(*m, threads);
  return rc;
}

/* Runs bench/SCRIPT (Debian's python3 with torch) on shape s and returns the number it prints
 * after `key` ("key value" line), or 0 when it cannot run. */
static inline double bench_torch_ref(const char *script, const shape_t *s, int B, int T, int reps, int threads,
                                     const char *extra, const char *key) {
  char cmd[640];
  snprintf(cmd, sizeof cmd,
           "/usr/bin/python3 %s/bench/%s --hidden %d --layers %d --heads %d --kv-heads %d "
           "--ffn %d --vocab %d --batch %d --seq %d --reps %d --threads %d%s",
           FC_SOURCE_ROOT, script, s->C, s->L, s->NH, s->NKV, s->F, s->V, B, T, reps, threads, extra);
  FILE *p = popen(cmd, "r");
  char line[256];
  double v = 0;
  size_t kl = strlen(key);
  while (p && fgets(line, sizeof line, p))
    if (!strncmp(line, key, kl) && line[kl] == ' ') v = atof(line + kl + 1);
  if (p) pclose(p);
  return v;
}

#endif
