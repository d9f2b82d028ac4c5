/* Job spec parsing (libyaml document API, so every error can name the line) and DAG expansion. */
#include "fc_job.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct ctx {
  yaml_document_t doc;
  const char *src;
  fc_err_t *err;
} ctx_t;

static int at(ctx_t *c, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int at(ctx_t *c, const yaml_node_t *n, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return fc_err_set(c->err, FC_EINVAL, "%s:%zu:%zu: %s", c->src, n->start_mark.line + 1,
                    n->start_mark.column + 1, msg);
}

static yaml_node_t *node(ctx_t *c, int id) { return yaml_document_get_node(&c->doc, id); }

static const char *scalar(const yaml_node_t *n) {
  return n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int want_scalar(ctx_t *c, yaml_node_t *n, const char *key, const char **out) {
  if (!(*out = scalar(n))) return at(c, n, "'%s' must be a plain value", key);
  return 0;
}

static int get_str(ctx_t *c, yaml_node_t *n, const char *key, char **out) {
  const char *s;
  if (want_scalar(c, n, key, &s)) return FC_EINVAL;
  if (!*s) return at(c, n, "'%s' is empty", key);
  free(*out);
  *out = fc_xstrdup(s);
  return 0;
}

static int get_long(ctx_t *c, yaml_node_t *n, const char *key, long lo, long hi, long *out) {
  const char *s;
  if (want_scalar(c, n, key, &s)) return FC_EINVAL;
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return at(c, n, "'%s' must be an integer, not '%s'", key, s);
  if (v < lo || v > hi) return at(c, n, "'%s' is %ld, it must be in [%ld, %ld]", key, v, lo, hi);
  *out = v;
  return 0;
}

static int get_int(ctx_t *c, yaml_node_t *n, const char *key, long lo, long hi, int *out) {
  long v;
  if (get_long(c, n, key, lo, hi, &v)) return FC_EINVAL;
  *out = (int)v;
  return 0;
}

static int get_u64(ctx_t *c, yaml_node_t *n, const char *key, uint64_t *out) {
  const char *s;
  if (want_scalar(c, n, key, &s)) return FC_EINVAL;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || *s == '-') return at(c, n, "'%s' must be a non-negative integer, not '%s'", key, s);
  *out = v;
  return 0;
}

static int get_double(ctx_t *c, yaml_node_t *n, const char *key, double lo, double hi, double *out) {
  const char *s;
  if (want_scalar(c, n, key, &s)) return FC_EINVAL;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v)) return at(c, n, "'%s' must be a number, not '%s'", key, s);
  if (v < lo || v > hi) return at(c, n, "'%s' is %g, it must be in [%g, %g]", key, v, lo, hi);
  *out = v;
  return 0;
}

static bool name_ok(const char *s) {
  if (!*s || strlen(s) > 64 || *s == '.') return false;
  for (; *s; s++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *s)) return false;
  return true;
}

static void kv_push(fc_kv_t **kv, size_t *n, const char *k, const char *v) {
  *kv = fc_xrealloc(*kv, (*n + 1) * sizeof **kv);
  (*kv)[*n].key = fc_xstrdup(k);
  (*kv)[(*n)++].val = fc_xstrdup(v);
}

static void str_push(char ***v, size_t *n, const char *s) {
  *v = fc_xrealloc(*v, (*n + 1) * sizeof **v);
  (*v)[(*n)++] = fc_xstrdup(s);
}

const char *fc_kv_get(const fc_kv_t *kv, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(kv[i].key, key)) return kv[i].val;
  return NULL;
}

/* A mapping of scalars to scalars (task params, merge parameters). */
static int get_kv(ctx_t *c, yaml_node_t *n, const char *key, fc_kv_t **kv, size_t *nkv) {
  if (n->type != YAML_MAPPING_NODE) return at(c, n, "'%s' must be a mapping", key);
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key), *v = node(c, p->value);
    const char *ks = scalar(k), *vs = scalar(v);
    if (!ks) return at(c, k, "keys of '%s' must be plain values", key);
    if (!vs) return at(c, v, "'%s.%s' must be a plain value", key, ks);
    if (fc_kv_get(*kv, *nkv, ks)) return at(c, k, "'%s.%s' given twice", key, ks);
    kv_push(kv, nkv, ks, vs);
  }
  return 0;
}

static int get_strlist(ctx_t *c, yaml_node_t *n, const char *key, char ***v, size_t *nv) {
  if (n->type != YAML_SEQUENCE_NODE) return at(c, n, "'%s' must be a list", key);
  for (yaml_node_item_t *i = n->data.sequence.items.start; i < n->data.sequence.items.top; i++) {
    const char *s;
    if (want_scalar(c, node(c, *i), key, &s)) return FC_EINVAL;
    str_push(v, nv, s);
  }
  return 0;
}

/* Checks that every key of mapping n is in `known` (NULL-terminated) and appears once. */
static int check_keys(ctx_t *c, yaml_node_t *n, const char *what, const char *const *known) {
  if (n->type != YAML_MAPPING_NODE) return at(c, n, "%s must be a mapping", what);
  for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node(c, p->key);
    const char *ks = scalar(k);
    if (!ks) return at(c, k, "keys of %s must be plain values", what);
    bool found = false;
    for (const char *const *q = known; *q; q++) found |= !strcmp(*q, ks);
    if (!found) return at(c, k, "unknown key '%s' in %s", ks, what);
    for (yaml_node_pair_t *o = n->data.mapping.pairs.start; o < p; o++)
      if (!strcmp(scalar(node(c, o->key)), ks)) return at(c, k, "'%s' given twice in %s", ks, what);
  }
  return 0;
}

static yaml_node_t *lookup(ctx_t *c, yaml_node_t *map, const char *key) {
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
    const char *ks = scalar(node(c, p->key));
    if (ks && !strcmp(ks, key)) return node(c, p->value);
  }
  return NULL;
}

/* Merge methods a job may name (the merge daemon reads them): fc_merge's, except that a job's
 * "sce" is FuseChat's release (the selection sets the weights only), the headline merge, and
 * upstream mergekit's SCE (unselected deltas zeroed) is "sce-mergekit". */
#define MERGE_METHODS "sce, sce-mergekit, varm, linear, task_arithmetic, ties, dare_ties, dare_linear, slerp"
static bool merge_method_ok(const char *m) {
  static const char *const methods[] = {"sce", "sce-mergekit", "varm", "linear", "task_arithmetic",
                                        "ties", "dare_ties", "dare_linear", "slerp", NULL};
  for (const char *const *q = methods; *q; q++)
    if (!strcmp(*q, m)) return true;
  return false;
}

/* ---- DAG building ---- */

static fc_job_task_t *add_task(fc_job_t *j, const char *kind, const char *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static fc_job_task_t *add_task(fc_job_t *j, const char *kind, const char *cap, const char *fmt, ...) {
  j->tasks = fc_xrealloc(j->tasks, (j->ntasks + 1) * sizeof *j->tasks);
  fc_job_task_t *t = &j->tasks[j->ntasks++];
  memset(t, 0, sizeof *t);
  char name[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  t->name = fc_xstrdup(name);
  t->kind = fc_xstrdup(kind);
  t->cap = fc_xstrdup(cap ? cap : kind);
  return t;
}

static void add_dep(fc_job_task_t *t, size_t dep) {
  t->deps = fc_xrealloc(t->deps, (t->ndeps + 1) * sizeof *t->deps);
  t->deps[t->ndeps++] = dep;
}

static void out_path(fc_job_t *j, fc_job_task_t *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void out_path(fc_job_t *j, fc_job_task_t *t, const char *fmt, ...) {
  char rel[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rel, sizeof rel, fmt, ap);
  va_end(ap);
  char *p = fc_path_join(j->dir, rel);
  t->outputs = fc_xrealloc(t->outputs, (t->noutputs + 1) * sizeof *t->outputs);
  t->outputs[t->noutputs++] = p;
}

static void param(fc_job_task_t *t, const char *k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void param(fc_job_task_t *t, const char *k, const char *fmt, ...) {
  char v[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(v, sizeof v, fmt, ap);
  va_end(ap);
  kv_push(&t->params, &t->nparams, k, v);
}

static void train_params(fc_job_t *j, fc_job_task_t *t, double lambda) {
  param(t, "lambda", "%.17g", lambda), param(t, "epochs", "%d", j->train.epochs);
  param(t, "lr", "%.17g", j->train.lr), param(t, "batch_size", "%d", j->train.batch_size);
  param(t, "seq_len", "%d", j->train.seq_len), param(t, "warmup", "%.17g", j->train.warmup);
  param(t, "weight_decay", "%.17g", j->train.weight_decay);
  param(t, "seed", "%" PRIu64, j->train.seed);
  if (j->train.steps) param(t, "steps", "%ld", j->train.steps);
  if (j->train.checkpoint_every) param(t, "checkpoint_every", "%ld", j->train.checkpoint_every);
}

/* logits(model, shard) -> vocab-map(source) -> align(source, shard) -> train(source) -> merge -> eval */
static void expand_pipeline(fc_job_t *j) {
  size_t S = (size_t)j->shards, M = j->nmodels, pivot = 0;
  for (size_t m = 0; m < M; m++)
    if (j->models[m].role == FC_ROLE_PIVOT) pivot = m;
  const char *pn = j->models[pivot].name;
  size_t *logits = fc_xcalloc(M * S, sizeof *logits);
  for (size_t m = 0; m < M; m++)
    for (size_t s = 0; s < S; s++) {
      char cap[128];
      snprintf(cap, sizeof cap, "logits:%s", j->models[m].name);
      logits[m * S + s] = j->ntasks;
      fc_job_task_t *t = add_task(j, "logits", cap, "logits/%s/%zu", j->models[m].name, s);
      param(t, "model", "%s", j->models[m].name);
      param(t, "shard", "%zu", s), param(t, "shards", "%zu", S);
      param(t, "top_k", "%d", j->top_k), param(t, "seed", "%" PRIu64, j->seed);
      param(t, "max_len", "%d", j->train.seq_len);
      param(t, "pivot_path", "%s", j->models[pivot].path); /* its template and cut for every model */
      str_push(&t->inputs, &t->ninputs, j->models[m].path);
      str_push(&t->inputs, &t->ninputs, j->dataset);
      out_path(j, t, "logits/%s.shard-%04zu.topk", j->models[m].name, s);
    }
  /* stage by stage (the lease order is by task id), each across the sources */
  size_t *vmaps = fc_xcalloc(M, sizeof *vmaps), *aligns = fc_xcalloc(M, sizeof *aligns);
  size_t *trains = fc_xcalloc(M, sizeof *trains);
  for (size_t m = 0; m < M; m++) {
    if (m == pivot) continue;
    const char *sn = j->models[m].name;
    vmaps[m] = j->ntasks;
    fc_job_task_t *t = add_task(j, "vocab-map", "align", "vocab-map/%s", sn);
    param(t, "source", "%s", sn), param(t, "pivot", "%s", pn);
    param(t, "source_path", "%s", j->models[m].path), param(t, "pivot_path", "%s", j->models[pivot].path);
    param(t, "method", "%s", j->vocab_map);
    for (size_t s = 0; s < S; s++) {
      size_t a = logits[m * S + s], b = logits[pivot * S + s];
      add_dep(t, a), add_dep(t, b);
      str_push(&t->inputs, &t->ninputs, j->tasks[a].outputs[0]);
      str_push(&t->inputs, &t->ninputs, j->tasks[b].outputs[0]);
    }
    out_path(j, t, "vocab/%s.vmap", sn);
  }
  for (size_t m = 0; m < M; m++) {
    if (m == pivot) continue;
    const char *sn = j->models[m].name;
    aligns[m] = j->ntasks;
    for (size_t s = 0; s < S; s++) {
      fc_job_task_t *t = add_task(j, "align", NULL, "align/%s/%zu", sn, s);
      param(t, "source", "%s", sn), param(t, "pivot", "%s", pn);
      param(t, "shard", "%zu", s), param(t, "top_k", "%d", j->top_k), param(t, "fuse", "%s", j->fuse);
      param(t, "source_path", "%s", j->models[m].path), param(t, "pivot_path", "%s", j->models[pivot].path);
      size_t deps[3] = {logits[m * S + s], logits[pivot * S + s], vmaps[m]};
      for (int d = 0; d < 3; d++) {
        add_dep(t, deps[d]);
        str_push(&t->inputs, &t->ninputs, j->tasks[deps[d]].outputs[0]);
      }
      out_path(j, t, "align/%s.shard-%04zu.fused", sn, s);
    }
  }
  for (size_t m = 0; m < M; m++) {
    if (m == pivot) continue;
    const char *sn = j->models[m].name;
    trains[m] = j->ntasks;
    fc_job_task_t *t = add_task(j, "train", NULL, "train/%s", sn);
    param(t, "source", "%s", sn), param(t, "pivot", "%s", pn);
    train_params(j, t, j->lambda);
    str_push(&t->inputs, &t->ninputs, j->models[pivot].path);
    str_push(&t->inputs, &t->ninputs, j->dataset);
    for (size_t s = 0; s < S; s++) {
      add_dep(t, aligns[m] + s);
      str_push(&t->inputs, &t->ninputs, j->tasks[aligns[m] + s].outputs[0]);
    }
    out_path(j, t, "targets/%s", sn);
  }
  size_t merge = j->ntasks;
  fc_job_task_t *t = add_task(j, "merge", NULL, "merge");
  param(t, "method", "%s", j->merge_method);
  for (size_t i = 0; i < j->nmerge_params; i++) param(t, j->merge_params[i].key, "%s", j->merge_params[i].val);
  str_push(&t->inputs, &t->ninputs, j->models[pivot].path);
  for (size_t m = 0; m < M; m++)
    if (m != pivot) {
      add_dep(t, trains[m]);
      str_push(&t->inputs, &t->ninputs, j->tasks[trains[m]].outputs[0]);
    }
  out_path(j, t, "merged");
  /* baselines: plain SFT of the pivot on the same data, and other merges of the same targets */
  size_t sft = 0, *bmerges = fc_xcalloc(j->nbaseline_merges + 1, sizeof *bmerges);
  if (j->baseline_sft) {
    sft = j->ntasks;
    t = add_task(j, "train", NULL, "train/sft");
    param(t, "source", "sft"), param(t, "pivot", "%s", pn);
    train_params(j, t, 1);
    str_push(&t->inputs, &t->ninputs, j->models[pivot].path);
    str_push(&t->inputs, &t->ninputs, j->dataset);
    out_path(j, t, "targets/sft");
  }
  for (size_t b = 0; b < j->nbaseline_merges; b++) {
    bmerges[b] = j->ntasks;
    t = add_task(j, "merge", NULL, "merge/%s", j->baseline_merges[b]);
    param(t, "method", "%s", j->baseline_merges[b]);
    /* the merge's parameters too (select_topk for sce-mergekit against sce): a baseline differs
     * from the headline merge in its method only */
    for (size_t i = 0; i < j->nmerge_params; i++) param(t, j->merge_params[i].key, "%s", j->merge_params[i].val);
    str_push(&t->inputs, &t->ninputs, j->models[pivot].path);
    for (size_t m = 0; m < M; m++)
      if (m != pivot) {
        add_dep(t, trains[m]);
        str_push(&t->inputs, &t->ninputs, j->tasks[trains[m]].outputs[0]);
      }
    out_path(j, t, "merged-%s", j->baseline_merges[b]);
  }
  /* one eval task per model, so evaluation spreads across eval daemons */
  if (j->eval) {
    for (size_t m = 0; m < M; m++) {
      t = add_task(j, "eval", NULL, "eval/%s", j->models[m].name);
      param(t, "model", "%s", j->models[m].name), param(t, "role", m == pivot ? "pivot" : "source");
      str_push(&t->inputs, &t->ninputs, j->eval);
      str_push(&t->inputs, &t->ninputs, j->models[m].path);
      out_path(j, t, "eval/%s.json", j->models[m].name);
    }
    for (size_t m = 0; m < M; m++) {
      if (m == pivot) continue;
      t = add_task(j, "eval", NULL, "eval/target-%s", j->models[m].name);
      param(t, "model", "target-%s", j->models[m].name), param(t, "role", "target");
      add_dep(t, trains[m]);
      str_push(&t->inputs, &t->ninputs, j->eval);
      str_push(&t->inputs, &t->ninputs, j->tasks[trains[m]].outputs[0]);
      out_path(j, t, "eval/target-%s.json", j->models[m].name);
    }
    if (j->baseline_sft) {
      t = add_task(j, "eval", NULL, "eval/sft");
      param(t, "model", "sft"), param(t, "role", "sft");
      add_dep(t, sft);
      str_push(&t->inputs, &t->ninputs, j->eval);
      str_push(&t->inputs, &t->ninputs, j->tasks[sft].outputs[0]);
      out_path(j, t, "eval/sft.json");
    }
    t = add_task(j, "eval", NULL, "eval/merged");
    param(t, "model", "merged-%s", j->merge_method), param(t, "role", "fused");
    add_dep(t, merge);
    str_push(&t->inputs, &t->ninputs, j->eval);
    str_push(&t->inputs, &t->ninputs, j->tasks[merge].outputs[0]);
    out_path(j, t, "eval/merged.json");
    for (size_t b = 0; b < j->nbaseline_merges; b++) {
      t = add_task(j, "eval", NULL, "eval/merged-%s", j->baseline_merges[b]);
      param(t, "model", "merged-%s", j->baseline_merges[b]), param(t, "role", "merge");
      add_dep(t, bmerges[b]);
      str_push(&t->inputs, &t->ninputs, j->eval);
      str_push(&t->inputs, &t->ninputs, j->tasks[bmerges[b]].outputs[0]);
      out_path(j, t, "eval/merged-%s.json", j->baseline_merges[b]);
    }
  }
  free(bmerges);
  free(logits), free(vmaps), free(aligns), free(trains);
}

static int parse_tasks(ctx_t *c, fc_job_t *j, yaml_node_t *list) {
  static const char *const keys[] = {"name", "kind", "cap", "params", "inputs", "outputs", "deps", NULL};
  if (list->type != YAML_SEQUENCE_NODE) return at(c, list, "'tasks' must be a list");
  if (list->data.sequence.items.top - list->data.sequence.items.start > 10000)
    return at(c, list, "more than 10000 tasks");
  for (yaml_node_item_t *i = list->data.sequence.items.start; i < list->data.sequence.items.top; i++) {
    yaml_node_t *n = node(c, *i), *v;
    if (check_keys(c, n, "a task", keys)) return FC_EINVAL;
    char *name = NULL, *kind = NULL;
    if (!(v = lookup(c, n, "name"))) return at(c, n, "a task needs a 'name'");
    if (get_str(c, v, "name", &name)) return FC_EINVAL;
    if (!(v = lookup(c, n, "kind"))) {
      int rc = at(c, n, "task '%s' needs a 'kind'", name);
      free(name);
      return rc;
    }
    if (get_str(c, v, "kind", &kind)) return free(name), FC_EINVAL;
    bool dup = fc_job_find_task(j, name) >= 0;
    fc_job_task_t *t = add_task(j, kind, NULL, "%s", name);
    free(name), free(kind);
    if (dup) return at(c, n, "task '%s' is defined twice", t->name);
    if ((v = lookup(c, n, "cap")) && get_str(c, v, "cap", &t->cap)) return FC_EINVAL;
    if ((v = lookup(c, n, "params")) && get_kv(c, v, "params", &t->params, &t->nparams)) return FC_EINVAL;
    if ((v = lookup(c, n, "inputs")) && get_strlist(c, v, "inputs", &t->inputs, &t->ninputs)) return FC_EINVAL;
    if ((v = lookup(c, n, "outputs"))) {
      char **outs = NULL;
      size_t nouts = 0;
      int rc = get_strlist(c, v, "outputs", &outs, &nouts);
      for (size_t k = 0; k < nouts; k++) {
        if (rc == 0 && (outs[k][0] == '/' || strstr(outs[k], "..") || !outs[k][0]))
          rc = at(c, v, "output '%s' must be a relative path inside the job directory", outs[k]);
        if (rc == 0) out_path(j, t, "%s", outs[k]);
        free(outs[k]);
      }
      free(outs);
      if (rc) return rc;
    }
    if ((v = lookup(c, n, "deps"))) {
      char **deps = NULL;
      size_t ndeps = 0;
      int rc = get_strlist(c, v, "deps", &deps, &ndeps);
      for (size_t k = 0; k < ndeps; k++) {
        long d = fc_job_find_task(j, deps[k]);
        if (rc == 0 && (d < 0 || (size_t)d == j->ntasks - 1))
          rc = at(c, v, "task '%s' depends on '%s', which is not a task listed before it", t->name, deps[k]);
        if (rc == 0) add_dep(t, (size_t)d);
        free(deps[k]);
      }
      free(deps);
      if (rc) return rc;
    }
  }
  return 0;
}

static int parse_root(ctx_t *c, fc_job_t *j) {
  static const char *const keys[] = {"name", "store", "models", "dataset", "shards", "top_k", "lambda", "fuse", "vocab_map",
                                     "training", "merge", "eval", "seed", "max_attempts", "tasks", "baselines",
                                     NULL};
  static const char *const baseline_keys[] = {"sft", "merges", NULL};
  static const char *const train_keys[] = {"epochs", "lr", "batch_size", "seq_len", "warmup",
                                           "weight_decay", "seed", "steps", "checkpoint_every", NULL};
  static const char *const model_keys[] = {"name", "path", "role", NULL};
  static const char *const merge_keys[] = {"method", "parameters", NULL};
  yaml_node_t *root = yaml_document_get_root_node(&c->doc), *v;
  if (!root) return fc_err_set(c->err, FC_EINVAL, "%s: empty job spec", c->src);
  if (check_keys(c, root, "the job spec", keys)) return FC_EINVAL;
  if (!(v = lookup(c, root, "name"))) return at(c, root, "the job needs a 'name'");
  if (get_str(c, v, "name", &j->name)) return FC_EINVAL;
  if (!name_ok(j->name)) return at(c, v, "job name '%s' may only use letters, digits, '.', '_', '-' (at most 64)", j->name);
  if (!(v = lookup(c, root, "store"))) return at(c, root, "the job needs a 'store' directory");
  if (get_str(c, v, "store", &j->store)) return FC_EINVAL;
  j->dir = fc_path_join(j->store, j->name);
  j->shards = 1, j->top_k = 10, j->lambda = 0.9, j->max_attempts = 3;
  j->train.epochs = 3, j->train.lr = 5e-6, j->train.batch_size = 8, j->train.seq_len = 2048;
  j->train.warmup = 0.03, j->train.weight_decay = 0.0;
  if ((v = lookup(c, root, "seed")) && get_u64(c, v, "seed", &j->seed)) return FC_EINVAL;
  j->train.seed = j->seed;
  if ((v = lookup(c, root, "max_attempts")) && get_int(c, v, "max_attempts", 1, 100, &j->max_attempts)) return FC_EINVAL;
  yaml_node_t *tasks = lookup(c, root, "tasks"), *models = lookup(c, root, "models");
  if (tasks && models) return at(c, tasks, "give either 'models' (the fusion pipeline) or 'tasks', not both");
  if (tasks) return parse_tasks(c, j, tasks);
  if (!models) return at(c, root, "the job needs 'models' (or an explicit 'tasks' list)");
  if (models->type != YAML_SEQUENCE_NODE) return at(c, models, "'models' must be a list");
  size_t npivot = 0;
  for (yaml_node_item_t *i = models->data.sequence.items.start; i < models->data.sequence.items.top; i++) {
    yaml_node_t *n = node(c, *i);
    if (check_keys(c, n, "a model", model_keys)) return FC_EINVAL;
    j->models = fc_xrealloc(j->models, (j->nmodels + 1) * sizeof *j->models);
    fc_job_model_t *m = &j->models[j->nmodels++];
    memset(m, 0, sizeof *m);
    if (!(v = lookup(c, n, "name"))) return at(c, n, "a model needs a 'name'");
    if (get_str(c, v, "name", &m->name)) return FC_EINVAL;
    if (!name_ok(m->name)) return at(c, v, "model name '%s' may only use letters, digits, '.', '_', '-'", m->name);
    for (size_t k = 0; k + 1 < j->nmodels; k++)
      if (!strcmp(j->models[k].name, m->name)) return at(c, v, "model '%s' is listed twice", m->name);
    if (!(v = lookup(c, n, "path"))) return at(c, n, "model '%s' needs a 'path'", m->name);
    if (get_str(c, v, "path", &m->path)) return FC_EINVAL;
    const char *role = "source";
    if ((v = lookup(c, n, "role")) && want_scalar(c, v, "role", &role)) return FC_EINVAL;
    if (!strcmp(role, "pivot")) m->role = FC_ROLE_PIVOT, npivot++;
    else if (!strcmp(role, "source")) m->role = FC_ROLE_SOURCE;
    else return at(c, v, "role must be 'pivot' or 'source', not '%s'", role);
  }
  if (npivot != 1) return at(c, models, "exactly one model must have role: pivot (found %zu)", npivot);
  if (j->nmodels < 2) return at(c, models, "at least one source model is needed beside the pivot");
  if (!(v = lookup(c, root, "dataset"))) return at(c, root, "the job needs a 'dataset'");
  if (get_str(c, v, "dataset", &j->dataset)) return FC_EINVAL;
  if ((v = lookup(c, root, "eval")) && get_str(c, v, "eval", &j->eval)) return FC_EINVAL;
  if ((v = lookup(c, root, "shards")) && get_int(c, v, "shards", 1, 4096, &j->shards)) return FC_EINVAL;
  if ((v = lookup(c, root, "top_k")) && get_int(c, v, "top_k", 1, 256, &j->top_k)) return FC_EINVAL;
  if ((v = lookup(c, root, "lambda")) && get_double(c, v, "lambda", 0, 1, &j->lambda)) return FC_EINVAL;
  /* the paper's comparisons (the align daemon reads them): fusion function and vocabulary map */
  j->fuse = fc_xstrdup("mince"), j->vocab_map = fc_xstrdup("stats");
  if ((v = lookup(c, root, "fuse"))) {
    if (get_str(c, v, "fuse", &j->fuse)) return FC_EINVAL;
    if (strcmp(j->fuse, "mince") && strcmp(j->fuse, "avgce") && strcmp(j->fuse, "source"))
      return at(c, v, "unknown fusion function '%s' (mince, avgce, source)", j->fuse);
  }
  if ((v = lookup(c, root, "vocab_map"))) {
    if (get_str(c, v, "vocab_map", &j->vocab_map)) return FC_EINVAL;
    if (strcmp(j->vocab_map, "stats") && strcmp(j->vocab_map, "mined") && strcmp(j->vocab_map, "exact"))
      return at(c, v, "unknown vocabulary map '%s' (stats, mined, exact)", j->vocab_map);
  }
  if ((v = lookup(c, root, "training"))) {
    yaml_node_t *tr = v;
    if (check_keys(c, tr, "'training'", train_keys)) return FC_EINVAL;
    if ((v = lookup(c, tr, "epochs")) && get_int(c, v, "epochs", 1, 1000, &j->train.epochs)) return FC_EINVAL;
    if ((v = lookup(c, tr, "lr")) && get_double(c, v, "lr", 0, 10, &j->train.lr)) return FC_EINVAL;
    if ((v = lookup(c, tr, "batch_size")) && get_int(c, v, "batch_size", 1, 65536, &j->train.batch_size)) return FC_EINVAL;
    if ((v = lookup(c, tr, "seq_len")) && get_int(c, v, "seq_len", 1, 1 << 20, &j->train.seq_len)) return FC_EINVAL;
    if ((v = lookup(c, tr, "warmup")) && get_double(c, v, "warmup", 0, 1, &j->train.warmup)) return FC_EINVAL;
    if ((v = lookup(c, tr, "weight_decay")) && get_double(c, v, "weight_decay", 0, 10, &j->train.weight_decay)) return FC_EINVAL;
    if ((v = lookup(c, tr, "seed")) && get_u64(c, v, "seed", &j->train.seed)) return FC_EINVAL;
    if ((v = lookup(c, tr, "steps")) && get_long(c, v, "steps", 1, 1000000000L, &j->train.steps)) return FC_EINVAL;
    if ((v = lookup(c, tr, "checkpoint_every")) &&
        get_long(c, v, "checkpoint_every", 1, 1000000000L, &j->train.checkpoint_every))
      return FC_EINVAL;
  }
  j->merge_method = fc_xstrdup("sce");
  if ((v = lookup(c, root, "merge"))) {
    yaml_node_t *mg = v;
    if (check_keys(c, mg, "'merge'", merge_keys)) return FC_EINVAL;
    if ((v = lookup(c, mg, "method"))) {
      if (get_str(c, v, "method", &j->merge_method)) return FC_EINVAL;
      if (!merge_method_ok(j->merge_method))
        return at(c, v, "unknown merge method '%s' (%s)", j->merge_method, MERGE_METHODS);
    }
    if ((v = lookup(c, mg, "parameters")) && get_kv(c, v, "parameters", &j->merge_params, &j->nmerge_params)) return FC_EINVAL;
  }
  if ((v = lookup(c, root, "baselines"))) {
    yaml_node_t *bl = v;
    if (check_keys(c, bl, "'baselines'", baseline_keys)) return FC_EINVAL;
    if ((v = lookup(c, bl, "sft"))) {
      const char *s;
      if (want_scalar(c, v, "sft", &s)) return FC_EINVAL;
      if (!strcmp(s, "true")) j->baseline_sft = 1;
      else if (strcmp(s, "false")) return at(c, v, "'sft' must be true or false, not '%s'", s);
    }
    if ((v = lookup(c, bl, "merges"))) {
      if (get_strlist(c, v, "merges", &j->baseline_merges, &j->nbaseline_merges)) return FC_EINVAL;
      for (size_t b = 0; b < j->nbaseline_merges; b++) {
        if (!merge_method_ok(j->baseline_merges[b]))
          return at(c, v, "unknown merge method '%s' in baselines (%s)", j->baseline_merges[b], MERGE_METHODS);
        for (size_t k = 0; k < b; k++)
          if (!strcmp(j->baseline_merges[k], j->baseline_merges[b]))
            return at(c, v, "merge method '%s' listed twice in baselines", j->baseline_merges[b]);
      }
    }
  }
  expand_pipeline(j);
  for (size_t a = 0; a < j->ntasks; a++) /* a model named like a baseline ("sft", "target-x") */
    for (size_t b = 0; b < a; b++)
      if (!strcmp(j->tasks[a].name, j->tasks[b].name))
        return at(c, models, "two tasks would be called '%s': rename the model", j->tasks[a].name);
  return 0;
}

int fc_job_parse(const char *text, size_t len, const char *source, fc_job_t **out, fc_err_t *err) {
  *out = NULL;
  ctx_t c = {.src = source ? source : "job", .err = err};
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) return fc_err_set(err, FC_ENOMEM, "cannot start the YAML parser");
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &c.doc)) {
    int rc = fc_err_set(err, FC_EINVAL, "%s:%zu:%zu: YAML error: %s %s", c.src, parser.problem_mark.line + 1,
                        parser.problem_mark.column + 1, parser.problem ? parser.problem : "",
                        parser.context ? parser.context : "");
    yaml_parser_delete(&parser);
    return rc;
  }
  yaml_parser_delete(&parser);
  fc_job_t *j = fc_xcalloc(1, sizeof *j);
  int rc = parse_root(&c, j);
  yaml_document_delete(&c.doc);
  if (rc == 0 && j->ntasks == 0) rc = fc_err_set(err, FC_EINVAL, "%s: the job has no tasks", c.src);
  if (rc) {
    fc_job_destroy(&j);
    return rc;
  }
  *out = j;
  return 0;
}

long fc_job_find_task(const fc_job_t *job, const char *name) {
  for (size_t i = 0; i < job->ntasks; i++)
    if (!strcmp(job->tasks[i].name, name)) return (long)i;
  return -1;
}

static void free_kv(fc_kv_t *kv, size_t n) {
  for (size_t i = 0; i < n; i++) free(kv[i].key), free(kv[i].val);
  free(kv);
}

static void free_strs(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

void fc_job_destroy(fc_job_t **jp) {
  fc_job_t *j = *jp;
  if (!j) return;
  for (size_t i = 0; i < j->ntasks; i++) {
    fc_job_task_t *t = &j->tasks[i];
    free(t->name), free(t->kind), free(t->cap);
    free_kv(t->params, t->nparams);
    free_strs(t->inputs, t->ninputs), free_strs(t->outputs, t->noutputs);
    free(t->deps);
  }
  free(j->tasks);
  for (size_t i = 0; i < j->nmodels; i++) free(j->models[i].name), free(j->models[i].path);
  free(j->models);
  free_kv(j->merge_params, j->nmerge_params);
  free_strs(j->baseline_merges, j->nbaseline_merges);
  free(j->name), free(j->store), free(j->dir), free(j->dataset), free(j->eval), free(j->merge_method);
  free(j->fuse), free(j->vocab_map);
  free(j);
  *jp = NULL;
}
