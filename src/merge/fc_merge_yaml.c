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
  if (!strcmp(key, "r") || !strcmp(key, "alpha")) {
    if (parse_num(value, &d) || d < 0)
      return fc_err_set(err, FC_EINVAL, "parameter %s: '%s' is not a non-negative number", key, value);
    if (key[0] == 'r') cfg->ram_r = d;
    else cfg->ram_alpha = d;
    return 0;
  }
  if (!strcmp(key, "max_iter")) {
    if (parse_num(value, &d) || d != floor(d) || d < 0 || d > 100000)
      return fc_err_set(err, FC_EINVAL, "parameter max_iter: '%s' is not an integer in [0, 100000]", value);
    cfg->max_iter = (int)d;
    return 0;
  }
  if (!strcmp(key, "tol")) {
    if (parse_num(value, &d) || d < 0)
      return fc_err_set(err, FC_EINVAL, "parameter tol: '%s' is not a non-negative number", value);
    cfg->tol = d;
    return 0;
  }
  if (!strcmp(key, "lambda") || !strcmp(key, "gamma") || !strcmp(key, "epsilon")) {
    if (parse_num(value, &d))
      return fc_err_set(err, FC_EINVAL, "parameter %s: '%s' is not a number", key, value);
    if (key[0] != 'l' && (d < 0 || d >= 1))
      return fc_err_set(err, FC_EINVAL, "parameter %s: %g is outside [0, 1)", key, d);
    if (key[0] == 'l') cfg->lambda = d;
    else if (key[0] == 'g') cfg->gamma = d;
    else cfg->epsilon = d;
    return 0;
  }
  if (!strcmp(key, "normalize") || !strcmp(key, "rescale") || !strcmp(key, "int8_mask") ||
      !strcmp(key, "filter_wise") || !strcmp(key, "nuslerp_flatten") || !strcmp(key, "nuslerp_row_wise") ||
      !strcmp(key, "normalize_weights")) {
    if (parse_bool(value, &b))
      return fc_err_set(err, FC_EINVAL, "parameter %s: '%s' is not true or false", key, value);
    if (key[0] == 'f') cfg->filter_wise = b;
    else if (!strcmp(key, "nuslerp_flatten")) cfg->nuslerp_flatten = b;
    else if (!strcmp(key, "nuslerp_row_wise")) cfg->nuslerp_row_wise = b;
    else if (!strcmp(key, "normalize") || !strcmp(key, "normalize_weights")) cfg->normalize = b;
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
                    "unknown parameter '%s' (known: select_topk, t, lambda, gamma, epsilon, "
                    "normalize, rescale, sce_mask_scope, seed, int8_mask, filter_wise, nuslerp_flatten, "
                    "nuslerp_row_wise, normalize_weights, max_iter, tol, r, alpha)",
                    key);
}

typedef struct yctx {
  yaml_document_t doc;
  const char *what;
  fc_err_t *err;
  fc_merge_yaml_t *arena;
  const char *scope; /* "model parameter" or "parameter", for messages */
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

static void *hold(yctx_t *y, size_t bytes) {
  fc_merge_yaml_t *a = y->arena;
  a->blocks = fc_xrealloc(a->blocks, (a->nblocks + 1) * sizeof *a->blocks);
  return a->blocks[a->nblocks++] = fc_xcalloc(1, bytes ? bytes : 1);
}

static const char *const PNAMES[FC_MP_COUNT] = {"weight", "density", "gamma", "epsilon", "t", "select_topk",
                                                "lambda"};

static int param_key(const char *k) {
  for (int i = 0; i < FC_MP_COUNT; i++)
    if (!strcmp(k, PNAMES[i])) return i;
  return -1;
}

/* Range of one value of parameter key (each value of a gradient is checked). */
static int check_value(yctx_t *y, yaml_node_t *n, int key, double d) {
  char v[64];
  snprintf(v, sizeof v, "%g", d);
  if ((key == FC_MP_DENSITY || key == FC_MP_T || key == FC_MP_SELECT_TOPK) && (d < 0 || d > 1))
    return yerr(y, n, "%s %s is outside [0, 1]", PNAMES[key], v);
  if ((key == FC_MP_GAMMA || key == FC_MP_EPSILON) && (d < 0 || d >= 1))
    return yerr(y, n, "%s %s is outside [0, 1)", PNAMES[key], v);
  return 0;
}

/* A value: a number or a list of numbers (a layer gradient). */
static int parse_value(yctx_t *y, yaml_node_t *n, int key, fc_merge_cond_t *c) {
  double d;
  const char *v = scalar(y, n);
  if (v) {
    if (parse_num(v, &d)) {
      char what[64];
      snprintf(what, sizeof what, "%s %s", y->scope, PNAMES[key]);
      return yerr(y, n, "%s must be a number or a list of numbers ('%s')", what, v);
    }
    double *vals = hold(y, sizeof *vals);
    vals[0] = d;
    c->nv = 1;
    c->v = vals;
    return check_value(y, n, key, d);
  }
  if (n->type != YAML_SEQUENCE_NODE) return yerr(y, n, "%s must be a number or a list of numbers%s", PNAMES[key], 0);
  int nv = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
  if (nv == 0) return yerr(y, n, "%s: an empty list%s", PNAMES[key], 0);
  double *vals = hold(y, (size_t)nv * sizeof *vals);
  for (int i = 0; i < nv; i++) {
    yaml_node_t *e = yaml_document_get_node(&y->doc, n->data.sequence.items.start[i]);
    const char *ev = scalar(y, e);
    if (!ev || parse_num(ev, &vals[i])) return yerr(y, e, "%s: a gradient's values are numbers%s", PNAMES[key], 0);
    int rc = check_value(y, e, key, vals[i]);
    if (rc) return rc;
  }
  c->nv = nv;
  c->v = vals;
  return 0;
}

/* One {filter, value} condition. */
static int parse_cond(yctx_t *y, yaml_node_t *n, int key, fc_merge_cond_t *c) {
  yaml_node_t *value = NULL;
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key), *vn = yaml_document_get_node(&y->doc, p->value);
    const char *k = scalar(y, kn);
    if (k && !strcmp(k, "filter")) {
      const char *f = scalar(y, vn);
      if (!f) return yerr(y, vn, "filter must be a string%s%s", 0, 0);
      c->filter = keep(y, f);
    } else if (k && !strcmp(k, "value")) {
      value = vn;
    } else {
      return yerr(y, kn, "unknown key '%s' in a condition of %s (known: filter, value)", k ? k : "?", PNAMES[key]);
    }
  }
  if (!value) return yerr(y, n, "a condition of %s without 'value'%s", PNAMES[key], 0);
  return parse_value(y, value, key, c);
}

/* A parameter in any of mergekit's forms, appended to the settings (model -1: global). */
static int add_setting(yctx_t *y, yaml_node_t *n, int key, int model) {
  fc_merge_yaml_t *a = y->arena;
  fc_merge_cond_t *cs;
  int nc = 1, rc = 0;
  int conds = n->type == YAML_SEQUENCE_NODE && n->data.sequence.items.top > n->data.sequence.items.start &&
              yaml_document_get_node(&y->doc, n->data.sequence.items.start[0])->type == YAML_MAPPING_NODE;
  if (conds) {
    nc = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    cs = hold(y, (size_t)nc * sizeof *cs);
    for (int i = 0; i < nc && !rc; i++) {
      yaml_node_t *e = yaml_document_get_node(&y->doc, n->data.sequence.items.start[i]);
      if (e->type != YAML_MAPPING_NODE) return yerr(y, e, "%s: each condition is {filter, value}%s", PNAMES[key], 0);
      rc = parse_cond(y, e, key, &cs[i]);
    }
  } else {
    cs = hold(y, sizeof *cs);
    rc = n->type == YAML_MAPPING_NODE ? parse_cond(y, n, key, cs) : parse_value(y, n, key, cs);
  }
  if (rc) return rc;
  a->settings = fc_xrealloc(a->settings, (size_t)(a->nsettings + 1) * sizeof *a->settings);
  a->settings[a->nsettings++] = (fc_merge_setting_t){(fc_merge_param_t)key, model, nc, cs};
  return 0;
}

static int model_params(yctx_t *y, yaml_node_t *map, int model) {
  y->scope = "model parameter";
  if (map->type != YAML_MAPPING_NODE) return yerr(y, map, "parameters must be a mapping%s%s", 0, 0);
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key), *vn = yaml_document_get_node(&y->doc, p->value);
    const char *k = scalar(y, kn);
    if (!k) return yerr(y, kn, "parameter names must be plain strings%s%s", 0, 0);
    int key = param_key(k);
    if (key < 0 || key > FC_MP_EPSILON)
      return yerr(y, kn, "unknown model parameter '%s' (known: weight, density, gamma, epsilon)%s", k, 0);
    int rc = add_setting(y, vn, key, model);
    if (rc) return rc;
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
        int rc = model_params(y, vn, i);
        if (rc) return rc;
      } else return yerr(y, kn, "unknown key '%s' in a model entry (known: model, parameters)%s", k, 0);
    }
    if (!ms[i].path) return yerr(y, it, "model entry without 'model: PATH'%s%s", 0, 0);
  }
  cfg->models = ms;
  cfg->nmodels = n;
  return 0;
}

/* One slice source {model, layer_range} into *out (group g). */
static int parse_source(yctx_t *y, yaml_node_t *e, int g, fc_merge_slice_t *out) {
  if (e->type != YAML_MAPPING_NODE) return yerr(y, e, "a source is a mapping {model, layer_range}%s%s", 0, 0);
  yaml_node_t *range = NULL;
  out->group = g;
  out->last = -1;
  for (yaml_node_pair_t *p = e->data.mapping.pairs.start; p < e->data.mapping.pairs.top; p++) {
    yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key), *vn = yaml_document_get_node(&y->doc, p->value);
    const char *k = scalar(y, kn), *v = scalar(y, vn);
    if (k && !strcmp(k, "model")) {
      if (!v || !*v) return yerr(y, vn, "model must be a path%s%s", 0, 0);
      out->model = keep(y, v);
    } else if (k && !strcmp(k, "layer_range")) {
      range = vn;
    } else if (k && !strcmp(k, "parameters")) {
      return yerr(y, kn, "parameters of a slice source are not supported: give them under the top-level "
                  "parameters (they apply to every slice)%s%s", 0, 0);
    } else {
      return yerr(y, kn, "unknown key '%s' in a slice source (known: model, layer_range)%s", k ? k : "?", 0);
    }
  }
  if (!out->model) return yerr(y, e, "a slice source without 'model: PATH'%s%s", 0, 0);
  if (!range) return yerr(y, e, "a slice source without 'layer_range: [first, end]'%s%s", 0, 0);
  double ab[2];
  int ok = range->type == YAML_SEQUENCE_NODE && range->data.sequence.items.top - range->data.sequence.items.start == 2;
  for (int j = 0; ok && j < 2; j++) {
    const char *v = scalar(y, yaml_document_get_node(&y->doc, range->data.sequence.items.start[j]));
    ok = v && !parse_num(v, &ab[j]) && ab[j] == floor(ab[j]) && ab[j] >= 0 && ab[j] < 1e6;
  }
  if (!ok || ab[1] <= ab[0])
    return yerr(y, range, "layer_range must be [first, end], integers with first < end%s%s", 0, 0);
  out->first = (int)ab[0];
  out->last = (int)ab[1];
  return 0;
}

/* slices: - sources: - {model: PATH, layer_range: [a, b]}, ...: every source becomes one entry of
 * cfg->slices, tagged with its slice (group). A slice with several sources merges them (the
 * layers of each source side by side, as mergekit's plan_slice); its sources must span the same
 * number of layers. */
static int parse_slices(yctx_t *y, yaml_node_t *seq, fc_merge_cfg_t *cfg) {
  if (seq->type != YAML_SEQUENCE_NODE) return yerr(y, seq, "slices must be a list%s%s", 0, 0);
  int n = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start), total = 0;
  if (n == 0) return yerr(y, seq, "slices is empty%s%s", 0, 0);
  for (int i = 0; i < n; i++) {
    yaml_node_t *it = yaml_document_get_node(&y->doc, seq->data.sequence.items.start[i]);
    if (it->type != YAML_MAPPING_NODE) return yerr(y, it, "each slice is a mapping with 'sources'%s%s", 0, 0);
    for (yaml_node_pair_t *p = it->data.mapping.pairs.start; p < it->data.mapping.pairs.top; p++) {
      yaml_node_t *vn = yaml_document_get_node(&y->doc, p->value);
      const char *k = scalar(y, yaml_document_get_node(&y->doc, p->key));
      if (k && !strcmp(k, "sources") && vn->type == YAML_SEQUENCE_NODE)
        total += (int)(vn->data.sequence.items.top - vn->data.sequence.items.start);
    }
  }
  fc_merge_slice_t *sl = hold(y, (size_t)(total ? total : 1) * sizeof *sl);
  int ns = 0;
  for (int i = 0; i < n; i++) {
    yaml_node_t *it = yaml_document_get_node(&y->doc, seq->data.sequence.items.start[i]), *src = NULL;
    for (yaml_node_pair_t *p = it->data.mapping.pairs.start; p < it->data.mapping.pairs.top; p++) {
      yaml_node_t *kn = yaml_document_get_node(&y->doc, p->key);
      const char *k = scalar(y, kn);
      if (k && !strcmp(k, "sources")) src = yaml_document_get_node(&y->doc, p->value);
      else if (k && (!strcmp(k, "parameters") || !strcmp(k, "base_model") || !strcmp(k, "residual_weight")))
        return yerr(y, kn, "'%s' of one slice is not supported: give it at the top level (it applies to every "
                    "slice)%s", k, 0);
      else return yerr(y, kn, "unknown key '%s' in a slice (known: sources)%s", k ? k : "?", 0);
    }
    if (!src || src->type != YAML_SEQUENCE_NODE || src->data.sequence.items.top == src->data.sequence.items.start)
      return yerr(y, it, "a slice needs 'sources', a list of {model, layer_range}%s%s", 0, 0);
    const int first = ns;
    for (yaml_node_item_t *e = src->data.sequence.items.start; e < src->data.sequence.items.top; e++) {
      int rc = parse_source(y, yaml_document_get_node(&y->doc, *e), i, &sl[ns]);
      if (rc) return rc;
      if (sl[ns].last - sl[ns].first != sl[first].last - sl[first].first) {
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", sl[first].last - sl[first].first);
        snprintf(b, sizeof b, "%d", sl[ns].last - sl[ns].first);
        return yerr(y, src, "the sources of a slice must span the same number of layers (%s and %s)", a, b);
      }
      ns++;
    }
  }
  cfg->slices = sl;
  cfg->nslices = ns;
  return 0;
}

/* The models of a merge given by slices: the sources of the first slice, in order (fc_merge_run
 * checks that every slice has the same ones). */
static int slice_models(yctx_t *y, yaml_node_t *root, fc_merge_cfg_t *cfg) {
  int n = 0;
  while (n < cfg->nslices && cfg->slices[n].group == cfg->slices[0].group) n++;
  if (n > FC_MERGE_MAX_MODELS) return yerr(y, root, "too many sources in a slice%s%s", 0, 0);
  fc_merge_model_t *ms = fc_xcalloc((size_t)n, sizeof *ms);
  y->arena->models = ms;
  for (int i = 0; i < n; i++) ms[i].path = cfg->slices[i].model, ms[i].weight = 1.0, ms[i].density = 1.0;
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
  yctx_t y = {.what = what, .err = err, .arena = arena, .scope = "parameter"};
  if (!yaml_parser_load(&parser, &y.doc)) {
    int rc = fc_err_set(err, FC_EFORMAT, "%s:%zu: %s", what, parser.problem_mark.line + 1,
                        parser.problem ? parser.problem : "invalid YAML");
    yaml_parser_delete(&parser);
    return rc;
  }
  yaml_parser_delete(&parser);
  int rc = 0, have_method = 0, have_out_dtype = 0, have_tok = 0;
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
                  "dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear, slerp, nearswap, "
                  "model_stock, nuslerp, multislerp, karcher, arcee_fusion, passthrough, sce, varm)%s",
                  v ? v : "?", 0);
      else cfg->method = m, have_method = 1;
    } else if (!strcmp(k, "base_model")) {
      if (!v || !*v) rc = yerr(&y, vn, "base_model must be a path%s%s", 0, 0);
      else cfg->base = keep(&y, v);
    } else if (!strcmp(k, "models")) {
      rc = parse_models(&y, vn, cfg);
    } else if (!strcmp(k, "slices")) {
      rc = parse_slices(&y, vn, cfg);
    } else if (!strcmp(k, "parameters")) {
      if (vn->type != YAML_MAPPING_NODE) {
        rc = yerr(&y, vn, "parameters must be a mapping%s%s", 0, 0);
        break;
      }
      for (yaml_node_pair_t *q = vn->data.mapping.pairs.start; q < vn->data.mapping.pairs.top && !rc; q++) {
        yaml_node_t *pk = yaml_document_get_node(&y.doc, q->key), *pv = yaml_document_get_node(&y.doc, q->value);
        const char *a = scalar(&y, pk), *b = scalar(&y, pv);
        if (!a) {
          rc = yerr(&y, pk, "parameter names must be plain strings%s%s", 0, 0);
          break;
        }
        int key = param_key(a);
        fc_err_t e = {0};
        /* Per-model parameters are every model's default; t, select_topk and lambda may vary by
         * layer and tensor; a plain value of those is set directly (a CLI --param overrides it). */
        y.scope = "parameter";
        if (key >= 0 && (key <= FC_MP_EPSILON || !b)) rc = add_setting(&y, pv, key, -1);
        else if (!b) rc = yerr(&y, pv, "parameter %s takes a plain value%s", a, 0);
        else if (fc_merge_set_param(cfg, a, b, &e)) rc = yerr(&y, pv, "%s%s", e.msg, 0);
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
    } else if (!strcmp(k, "tokenizer_source") || !strcmp(k, "tokenizer")) {
      /* tokenizer_source: X, or mergekit's newer form tokenizer: {source: X (union when
       * absent), pad_to_multiple_of: N}; not both, as mergekit refuses. */
      yaml_node_t *sn = vn;
      const char *sv = NULL;
      if (have_tok) rc = yerr(&y, kn, "give tokenizer_source or tokenizer, not both%s%s", 0, 0);
      have_tok = 1;
      if (!rc && k[9] == 0 && vn->type == YAML_MAPPING_NODE) {
        sn = NULL;
        sv = "union";
        for (yaml_node_pair_t *q = vn->data.mapping.pairs.start; q < vn->data.mapping.pairs.top && !rc; q++) {
          yaml_node_t *pk = yaml_document_get_node(&y.doc, q->key), *pv = yaml_document_get_node(&y.doc, q->value);
          const char *a = scalar(&y, pk), *b = scalar(&y, pv);
          char *end = NULL;
          long n = b ? strtol(b, &end, 10) : 0;
          if (a && !strcmp(a, "source")) sn = pv, sv = b;
          else if (a && !strcmp(a, "pad_to_multiple_of") && b && *b && !*end && n > 0 && n <= 1 << 20)
            cfg->tokenizer_pad = (int)n;
          else if (a && !strcmp(a, "pad_to_multiple_of"))
            rc = yerr(&y, pv, "tokenizer pad_to_multiple_of must be a positive integer%s%s", 0, 0);
          else if (a && !strcmp(a, "tokens"))
            rc = yerr(&y, pk, "tokenizer.tokens (per-token embedding sources) is not supported: remove it and "
                      "the rows a model lacks are filled as mergekit's defaults fill them (the one model that "
                      "has the token, else the base's row, else the mean)%s%s", 0, 0);
          else rc = yerr(&y, pk, "unknown key '%s' under tokenizer (supported: source, pad_to_multiple_of)%s",
                         a ? a : "?", 0);
        }
      } else if (!rc) {
        sv = scalar(&y, sn);
      }
      if (!rc && (!sv || !*sv))
        rc = yerr(&y, sn ? sn : vn, "%s must be base, union or a model's name%s", k, 0);
      else if (!rc) cfg->tokenizer_source = keep(&y, sv);
    } else if (!strcmp(k, "chat_template")) {
      fc_err_t e = {0};
      if (!v || !*v) rc = yerr(&y, vn, "chat_template must be a name or a template%s%s", 0, 0);
      else if (fc_merge_chat_template_check(v, &e)) rc = yerr(&y, vn, "%s%s", e.msg, 0);
      else cfg->chat_template = keep(&y, v);
    } else {
      rc = yerr(&y, kn, "unknown key '%s' (known: merge_method, base_model, models, slices, parameters, "
                "dtype, out_dtype, seed, tokenizer_source, tokenizer, chat_template)%s", k, 0);
    }
  }
  if (!rc && !have_method) rc = yerr(&y, root, "no merge_method%s%s", 0, 0);
  if (!rc && !cfg->nmodels && !cfg->nslices) rc = yerr(&y, root, "no models (or slices)%s%s", 0, 0);
  if (!rc && cfg->nmodels && cfg->nslices) rc = yerr(&y, root, "give models or slices, not both%s%s", 0, 0);
  if (!rc && cfg->nslices && cfg->method != FC_MERGE_PASSTHROUGH) rc = slice_models(&y, root, cfg);
  if (!rc && cfg->nmodels) {
    for (int s = 0; s < arena->nsettings; s++)
      if (arena->settings[s].model >= cfg->nmodels) rc = yerr(&y, root, "a model's parameters without the model%s%s", 0, 0);
    /* The models' plain view (tensors outside the layers, no filter): what the kernel API and
     * the CLI see; fc_merge_run resolves the settings again for each tensor. */
    cfg->settings = arena->settings;
    cfg->nsettings = arena->nsettings;
    fc_merge_cfg_t view;
    fc_merge_model_t *ms = fc_xmalloc((size_t)cfg->nmodels * sizeof *ms);
    fc_merge_resolve(cfg, NULL, 0, &view, ms);
    memcpy(arena->models, ms, (size_t)cfg->nmodels * sizeof *ms);
    free(ms);
  }
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
  for (size_t i = 0; i < a->nblocks; i++) free(a->blocks[i]);
  free(a->blocks);
  free(a->settings);
  memset(a, 0, sizeof *a);
}
