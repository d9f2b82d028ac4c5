/* mergekit's parameter conventions, resolved per tensor: a per-model parameter given in the
 * global `parameters:` is every model's default, a list of numbers is a gradient over the
 * layers, and a list of {filter, value} conditions scopes values to tensors by name. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_merge.h"

int fc_merge_layer_span(const char *name, size_t *at, size_t *len) {
  /* "model.layers.12.mlp..." (Llama, Mistral, Qwen), "transformer.h.3.attn..." (GPT-2). */
  static const char *const marks[] = {"layers.", "h.", "blocks."};
  for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
    size_t len_m = strlen(marks[m]);
    for (const char *p = strstr(name, marks[m]); p; p = strstr(p + 1, marks[m])) {
      if (p != name && p[-1] != '.') continue;
      const char *q = p + len_m, *q0 = q;
      if (!isdigit((unsigned char)*q)) continue;
      long v = strtol(q, (char **)&q, 10);
      if ((*q == '.' || !*q) && v >= 0 && v < 1000000) {
        if (at) *at = (size_t)(q0 - name), *len = (size_t)(q - q0);
        return (int)v;
      }
    }
  }
  return -1;
}

int fc_merge_layer_index(const char *name) { return fc_merge_layer_span(name, NULL, NULL); }

double fc_merge_layer_t(const char *name, int nlayers) {
  int i = fc_merge_layer_index(name);
  if (i < 0) return 0; /* embeddings, final norm, lm_head: mergekit plans them at t = 0 */
  if (nlayers <= 1) return 1;
  return (double)i / (double)(nlayers - 1);
}

/* mergekit's evaluate_setting: the first condition that matches, interpolated at t. */
static int evaluate(const fc_merge_setting_t *st, const char *name, double t, double *out) {
  for (int c = 0; c < st->ncond; c++) {
    const fc_merge_cond_t *k = &st->cond[c];
    if (k->filter && strcmp(k->filter, "*") && !(name && strstr(name, k->filter))) continue;
    if (k->nv == 1) {
      *out = k->v[0];
      return 1;
    }
    double x = t * (double)(k->nv - 1);
    int i0 = (int)x, i1 = i0 + 1 < k->nv ? i0 + 1 : k->nv - 1;
    double f = x - i0;
    *out = (1 - f) * k->v[i0] + f * k->v[i1];
    return 1;
  }
  return 0;
}

static void set_model(fc_merge_model_t *m, fc_merge_param_t key, double v) {
  switch (key) {
  case FC_MP_WEIGHT: m->weight = v; break;
  case FC_MP_DENSITY: m->density = v; break;
  case FC_MP_GAMMA: m->gamma = v, m->has |= FC_MERGE_HAS_GAMMA; break;
  case FC_MP_EPSILON: m->epsilon = v, m->has |= FC_MERGE_HAS_EPSILON; break;
  default: break;
  }
}

void fc_merge_resolve(const fc_merge_cfg_t *cfg, const char *name, double t, fc_merge_cfg_t *out,
                      fc_merge_model_t *models_out) {
  *out = *cfg;
  memcpy(models_out, cfg->models, (size_t)cfg->nmodels * sizeof *models_out);
  out->models = models_out;
  /* Model-specific settings win over the global ones; within each, the first that evaluates. */
  for (int key = 0; key < FC_MP_COUNT; key++) {
    if (key <= FC_MP_EPSILON) {
      for (int i = 0; i < cfg->nmodels; i++) {
        int found = 0;
        for (int pass = 0; pass < 2 && !found; pass++)
          for (int s = 0; s < cfg->nsettings && !found; s++) {
            const fc_merge_setting_t *st = &cfg->settings[s];
            double v;
            if ((int)st->key != key || st->model != (pass ? -1 : i)) continue;
            if (evaluate(st, name, t, &v)) set_model(&models_out[i], (fc_merge_param_t)key, v), found = 1;
          }
      }
      continue;
    }
    for (int s = 0; s < cfg->nsettings; s++) {
      const fc_merge_setting_t *st = &cfg->settings[s];
      double v;
      if ((int)st->key != key || st->model != -1 || !evaluate(st, name, t, &v)) continue;
      if (key == FC_MP_T) out->t = v;
      else if (key == FC_MP_SELECT_TOPK) out->select_topk = v;
      else out->lambda = v;
      break;
    }
  }
}
