/* Merge configs in mergekit's YAML form (merge_method, base_model, models with per-model
 * parameters, global parameters, dtype, seed), parsed with libyaml's document API so every
 * error can name its line. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "fc_merge.h"

static int parse_bool(const char *v, int *out) {
  if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") || !strcmp(v, "1"))
    return *out = 1, 0;
  if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcmp(v, "0"))
    return *out = 0, 0;
  return -1;
}

static int parse_num(const char *v, double *out) {
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(d)) return -1;
  *out = d;
  return 0;
}

int fc_merge_set_param(fc_merge_cfg_t *cfg, const char *key, const char *value, fc_err_t *err) {
  double d;
  int b;
  if (!strcmp(key, "select_topk") || !strcmp(key, "t")) {
    if (parse_num(value, &d))
      return fc_err_set(err, FC_EINVAL, "parameter %s: '%s' is not a number", key, value);
    if (d < 0 || d > 1)
      return fc_err_set(err, FC_EINVAL, "parameter %s: %g is outside [0, 1]", key, d);
    if (key[0] == 't') cfg->t = d;
    else cfg->select_topk = d;
    return 0;
  }
  if (!strcmp(key, "normalize") || !strcmp(key, "rescale") || !strcmp(key, "int8_mask")) {
    if (parse_bool(value, &b))
      return fc_err_set(err, FC_EINVAL, "parameter %s: '%s' is not true or false", key, value);
    if (!strcmp(key, "normalize")) cfg->normalize = b;
    else if (!strcmp(key, "rescale")) cfg->rescale = b;
    /* int8_mask only changes mergekit's mask storage type, never the result. */
    return 0;
  }
  if (!strcmp(key, "sce_mask_scope")) {
    if (!strcmp(value, "deltas")) cfg->sce_mask_scope = FC_SCE_SCOPE_DELTAS;
    else if (!strcmp(value, "weights")) cfg->sce_mask_scope = FC_SCE_SCOPE_WEIGHTS;
    else
      return fc_err_set(err, FC_EINVAL, "parameter sce_mask_scope: '%s' is not deltas or weights",
                        value);
    return 0;
  }
  if (!strcmp(key, "seed")) {
    char *end;
    errno = 0;
    unsigned long long s = strtoull(value, &end, 0);
    if (errno || end == value || *end || value[0] == '-')
      return fc_err_set(err, FC_EINVAL, "parameter seed: '%s' is not a non-negative integer", value);
    cfg->seed = s;
    return 0;
  }
  return fc_err_set(err, FC_EINVAL,
                    "unknown parameter '%s' (known: select_topk, t, normalize, rescale, "
                    "sce_mask_scope, seed, int8_mask)",
                    key);
}

typedef struct yctx {
  yaml_document_t doc;
  const char *what;
  fc_err_t *err;
  fc_merge_yaml_t *arena;
} yctx_t;

static int yerr(yctx_t *y, const yaml_node_t *n, const char *fmt, const char *a, const char *b) {
  char msg[sizeof y->err->msg + 600];
  snprintf(msg, sizeof msg, fmt, a ? a : "", b ? b : "");
  return fc_err_set(y->err, FC_EFORMAT, "%s:%zu: %s", y->what, n ? n->start_mark.line + 1 : 0, msg);
}

static const char *scalar(yctx_t *y, yaml_node_t *n) {
  (void)y;
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static char *keep(yctx_t *y, const char *s) {
  fc_merge_yaml_t *a = y->arena;
  a->strings = fc_xrealloc(a->strings, (a->nstrings + 1) * sizeof *a->strings);
  return a->strings[a->nstrings++] = fc_xstrdup(s);
}

static int model_params(yctx_t *y, yaml_node_t *map, fc_merge_model_t *m) {
  if (map->type != YAML_MAPPING_NODE) return yerr(y, map, "parameters must be a mapping%s%s", 0, 0);
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key), *vn = yaml_document_get_node(&y->doc, p->value);
    const char *k = scalar(y, kn), *v = scalar(y, vn);
    if (!k) return yerr(y, kn, "parameter names must be plain strings%s%s", 0, 0);
    double d;
    if (!v || parse_num(v, &d)) return yerr(y, vn, "model parameter %s must be a number%s", k, 0);
    if (!strcmp(k, "weight")) m->weight = d;
    else if (!strcmp(k, "density")) {
      if (d < 0 || d > 1) return yerr(y, vn, "density %s is outside [0, 1]%s", v, 0);
      m->density = d;
    } else return yerr(y, kn, "unknown model parameter '%s' (known: weight, density)%s", k, 0);
  }
  return 0;
}

static int parse_models(yctx_t *y, yaml_node_t *seq, fc_merge_cfg_t *cfg) {
  if (seq->type != YAML_SEQUENCE_NODE) return yerr(y, seq, "models must be a list%s%s", 0, 0);
  int n = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
  if (n == 0) return yerr(y, seq, "models is empty%s%s", 0, 0);
  if (n > FC_MERGE_MAX_MODELS) return yerr(y, seq, "too many models%s%s", 0, 0);
  fc_merge_model_t *ms = fc_xcalloc((size_t)n, sizeof *ms);
  y->arena->models = ms;
  for (int i = 0; i < n; i++) {
    yaml_node_t *it = yaml_document_get_node(&y->doc, seq->data.sequence.items.start[i]);
    ms[i].weight = 1.0;
    ms[i].density = 1.0;
    if (it->type != YAML_MAPPING_NODE) return yerr(y, it, "each model is a mapping with 'model: PATH'%s%s", 0, 0);
    for (yaml_node_pair_t *p = it->data.mapping.pairs.start; p < it->data.mapping.pairs.top; p++) {
      yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key), *vn = yaml_document_get_node(&y->doc, p->value);
      const char *k = scalar(y, kn);
      if (!k) return yerr(y, kn, "keys must be plain strings%s%s", 0, 0);
      if (!strcmp(k, "model")) {
        const char *v = scalar(y, vn);
        if (!v || !*v) return yerr(y, vn, "model must be a path%s%s", 0, 0);
        ms[i].path = keep(y, v);
      } else if (!strcmp(k, "parameters")) {
        int rc = model_params(y, vn, &ms[i]);
        if (rc) return rc;
      } else return yerr(y, kn, "unknown key '%s' in a model entry (known: model, parameters)%s", k, 0);
    }
    if (!ms[i].path) return yerr(y, it, "model entry without 'model: PATH'%s%s", 0, 0);
  }
  cfg->models = ms;
  cfg->nmodels = n;
  return 0;
}

int fc_merge_yaml_parse(const char *text, size_t len, const char *what, fc_merge_cfg_t *cfg,
                        fc_merge_yaml_t *arena, fc_err_t *err) {
  memset(arena, 0, sizeof *arena);
  yaml_parser_t parser;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  yctx_t y = {.what = what, .err = err, .arena = arena};
  if (!yaml_parser_load(&parser, &y.doc)) {
    int rc = fc_err_set(err, FC_EFORMAT, "%s:%zu: %s", what, parser.problem_mark.line + 1,
                        parser.problem ? parser.problem : "invalid YAML");
    yaml_parser_delete(&parser);
    return rc;
  }
  yaml_parser_delete(&parser);
  int rc = 0, have_method = 0, have_out_dtype = 0;
  yaml_node_t *root = yaml_document_get_root_node(&y.doc);
  if (!root || root->type != YAML_MAPPING_NODE) {
    rc = yerr(&y, root, "the config must be a mapping (merge_method, base_model, models, ...)%s%s", 0, 0);
    goto done;
  }
  for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top && !rc; p++) {
    yaml_node_t *kn = yaml_document_get_node(&y.doc, p->key), *vn = yaml_document_get_node(&y.doc, p->value);
    const char *k = scalar(&y, kn), *v = scalar(&y, vn);
    if (!k) {
      rc = yerr(&y, kn, "keys must be plain strings%s%s", 0, 0);
    } else if (!strcmp(k, "merge_method")) {
      fc_merge_method_t m;
      if (!v || fc_merge_method_parse(v, &m))
        rc = yerr(&y, vn, "unknown merge_method '%s' (known: linear, task_arithmetic, ties, dare_ties, "
                  "dare_linear, slerp, sce, varm)%s", v ? v : "?", 0);
      else cfg->method = m, have_method = 1;
    } else if (!strcmp(k, "base_model")) {
      if (!v || !*v) rc = yerr(&y, vn, "base_model must be a path%s%s", 0, 0);
      else cfg->base = keep(&y, v);
    } else if (!strcmp(k, "models")) {
      rc = parse_models(&y, vn, cfg);
    } else if (!strcmp(k, "parameters")) {
      if (vn->type != YAML_MAPPING_NODE) {
        rc = yerr(&y, vn, "parameters must be a mapping%s%s", 0, 0);
        break;
      }
      for (yaml_node_pair_t *q = vn->data.mapping.pairs.start; q < vn->data.mapping.pairs.top && !rc; q++) {
        yaml_node_t *pk = yaml_document_get_node(&y.doc, q->key), *pv = yaml_document_get_node(&y.doc, q->value);
        const char *a = scalar(&y, pk), *b = scalar(&y, pv);
        if (!a || !b) {
          rc = yerr(&y, pk, "parameters take plain values (per-layer lists are not supported)%s%s", 0, 0);
          break;
        }
        fc_err_t e = {0};
        if (fc_merge_set_param(cfg, a, b, &e)) rc = yerr(&y, pv, "%s%s", e.msg, 0);
      }
    } else if (!strcmp(k, "dtype") || !strcmp(k, "out_dtype")) {
      /* mergekit: dtype is its compute dtype and the output's unless out_dtype says; we always
       * compute in f32, so both only choose the output dtype, out_dtype first. */
      fc_dtype_t dt;
      if (!v || fc_dtype_parse(v, &dt) || (dt != FC_DT_F32 && dt != FC_DT_F16 && dt != FC_DT_BF16))
        rc = yerr(&y, vn, "%s '%s' is not float32, float16 or bfloat16", k, v ? v : "?");
      else if (k[0] == 'o' || !have_out_dtype) cfg->dtype = (int)dt;
      if (k[0] == 'o') have_out_dtype = 1;
    } else if (!strcmp(k, "seed")) {
      fc_err_t e = {0};
      if (!v || fc_merge_set_param(cfg, "seed", v, &e)) rc = yerr(&y, vn, "%s%s", v ? e.msg : "seed must be an integer", 0);
    } else if (!strcmp(k, "tokenizer_source")) {
      if (!v || strcmp(v, "base"))
        rc = yerr(&y, vn, "tokenizer_source '%s' is not supported (the tokenizer comes from the base)%s",
                  v ? v : "?", 0);
    } else {
      rc = yerr(&y, kn, "unknown key '%s' (known: merge_method, base_model, models, parameters, dtype, "
                "seed, tokenizer_source)%s", k, 0);
    }
  }
  if (!rc && !have_method) rc = yerr(&y, root, "no merge_method%s%s", 0, 0);
  if (!rc && !cfg->nmodels) rc = yerr(&y, root, "no models%s%s", 0, 0);
done:
  yaml_document_delete(&y.doc);
  if (rc) fc_merge_yaml_free(arena);
  return rc;
}

int fc_merge_yaml_load(const char *path, fc_merge_cfg_t *cfg, fc_merge_yaml_t *arena, fc_err_t *err) {
  char *text;
  size_t len;
  int rc = fc_read_file(path, &text, &len, err);
  if (rc) return rc;
  rc = fc_merge_yaml_parse(text, len, path, cfg, arena, err);
  free(text);
  return rc;
}

void fc_merge_yaml_free(fc_merge_yaml_t *a) {
  for (size_t i = 0; i < a->nstrings; i++) free(a->strings[i]);
  free(a->strings);
  free(a->models);
  memset(a, 0, sizeof *a);
}
