/* Job spec parsing (through fc_yaml, so every error can name the line) and DAG expansion. The
 * stage parameters a spec may set, their defaults and ranges come from the schema (fc_schema.c):
 * a bad value is refused here, at submit, never by a daemon on every retry. */
#include "fc_job.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fc_yaml.h"

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

static int get_str(const fc_yaml_node_t *n, const char *key, char **out, fc_err_t *err) {
  const char *s;
  int rc = fc_yaml_string(n, key, &s, err);
  if (rc) return rc;
  if (!*s) return fc_yaml_error(n, err, "'%s' is empty", key);
  free(*out);
  *out = fc_xstrdup(s);
  return 0;
}

/* A mapping of scalars to scalars (task params, merge parameters). */
static int get_kv(const fc_yaml_node_t *n, const char *key, fc_kv_t **kv, size_t *nkv, fc_err_t *err) {
  if (n->kind != FC_YAML_MAP) return fc_yaml_error(n, err, "'%s' must be a mapping", key);
  for (size_t i = 0; i < n->n; i++) {
    if (n->item[i]->kind != FC_YAML_SCALAR) return fc_yaml_error(n->item[i], err, "'%s.%s' must be a plain value", key, n->key[i]);
    kv_push(kv, nkv, n->key[i], n->item[i]->str);
  }
  return 0;
}

static int get_strlist(const fc_yaml_node_t *n, const char *key, char ***v, size_t *nv, fc_err_t *err) {
  if (n->kind != FC_YAML_LIST) return fc_yaml_error(n, err, "'%s' must be a list", key);
  for (size_t i = 0; i < n->n; i++) {
    const char *s;
    int rc = fc_yaml_string(n->item[i], key, &s, err);
    if (rc) return rc;
    str_push(v, nv, s);
  }
  return 0;
}

#define SHARD_MARK "{shard}" /* in models[].logits: the shard's number */

/* The typed struct of a table, in the job. */
static void *typed(fc_job_t *j, const fc_task_schema_t *s) {
  if (!strcmp(s->kind, "job")) return &j->opts;
  if (!strcmp(s->kind, "logits")) return &j->logits;
  if (!strcmp(s->kind, "vocab-map")) return &j->vmap;
  if (!strcmp(s->kind, "align")) return &j->align;
  if (!strcmp(s->kind, "train")) return &j->train;
  if (!strcmp(s->kind, "merge")) return &j->merge;
  return NULL;
}

/* The node at a job YAML path ("top_k", "training.lr"; one level of section at most). */
static const fc_yaml_node_t *at_path(const fc_yaml_node_t *root, const char *path) {
  const char *dot = strchr(path, '.');
  if (!dot) return fc_yaml_get(root, path);
  char sec[64];
  snprintf(sec, sizeof sec, "%.*s", (int)(dot - path), path);
  return fc_yaml_get(fc_yaml_get(root, sec), dot + 1);
}

/* The known keys at the top (section NULL) or in a section, from the schema's YAML paths. */
static int check_section(const fc_yaml_node_t *n, const char *section, fc_err_t *err) {
  size_t ns;
  const fc_task_schema_t *all = fc_schema_all(&ns);
  const char *known[128];
  size_t nk = 0, sl = section ? strlen(section) : 0;
  for (size_t i = 0; i < ns; i++)
    for (size_t k = 0; k < all[i].nparams; k++) {
      const char *y = all[i].params[k].yaml;
      if (!y) continue;
      char key[64];
      const char *dot = strchr(y, '.');
      if (section) {
        if (strncmp(y, section, sl) || y[sl] != '.') continue;
        snprintf(key, sizeof key, "%s", y + sl + 1);
      } else {
        snprintf(key, sizeof key, "%.*s", dot ? (int)(dot - y) : (int)strlen(y), y);
      }
      bool dup = false;
      for (size_t q = 0; q < nk && !dup; q++) dup = !strcmp(known[q], key);
      if (!dup && nk < 127) known[nk++] = fc_xstrdup(key);
    }
  known[nk] = NULL;
  if (section && !nk) return 0; /* not a section: the value's own check speaks */
  char what[80];
  snprintf(what, sizeof what, section ? "'%s'" : "the job spec", section);
  int rc = fc_yaml_check_keys(n, what, known, err);
  for (size_t q = 0; q < nk; q++) free((char *)known[q]);
  return rc;
}

/* Every stage parameter the spec gives, checked against its table into the job's typed structs;
 * j->given records the YAML paths given (the expansion writes only those). */
static int parse_stage_params(fc_job_t *j, const fc_yaml_node_t *root, fc_err_t *err) {
  size_t ns;
  const fc_task_schema_t *all = fc_schema_all(&ns);
  int rc = check_section(root, NULL, err);
  for (size_t i = 0; i < root->n && !rc; i++)
    if (root->item[i]->kind == FC_YAML_MAP && strcmp(root->key[i], "tasks") && strcmp(root->key[i], "models"))
      rc = check_section(root->item[i], root->key[i], err);
  for (size_t i = 0; i < ns && !rc; i++) {
    void *st = typed(j, &all[i]);
    if (!st) continue;
    for (size_t k = 0; k < all[i].nparams && !rc; k++) {
      const fc_param_t *p = &all[i].params[k];
      const fc_yaml_node_t *v = p->yaml ? at_path(root, p->yaml) : NULL;
      if (!v || p->off == FC_PARAM_NOSTORE) continue;
      char what[96];
      snprintf(what, sizeof what, "'%s'", p->yaml);
      if (v->kind != FC_YAML_SCALAR) return fc_yaml_error(v, err, "%s must be a plain value", what);
      fc_err_t e = {0};
      if (fc_schema_set(p, v->str, what, st, &e)) return fc_yaml_error(v, err, "%s", e.msg);
      if (!fc_kv_get(j->given, j->ngiven, p->yaml)) kv_push(&j->given, &j->ngiven, p->yaml, v->str);
    }
  }
  return rc;
}

/* A task's params against its kind's table (kinds without one, like the tests', pass). */
static int check_task_params(const fc_yaml_node_t *n, const char *kind, const fc_kv_t *kv, size_t nkv, fc_err_t *err) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  if (!s || !strcmp(kind, "job")) return 0;
  void *st = fc_xcalloc(1, s->size);
  fc_schema_defaults(s, st);
  fc_err_t e = {0};
  int rc = fc_schema_apply(s, kv, nkv, st, &e);
  for (size_t i = 0; i < nkv && !rc && s->open; i++)
    if (!fc_schema_param(s, kv[i].key)) rc = fc_schema_check_open(kv[i].key, kv[i].val, &e);
  free(st);
  return rc ? fc_yaml_error(n, err, "%s", e.msg) : 0;
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

/* The stage parameters of kind that the spec gave (typed values in st, canonical text); the
 * daemon takes the rest from the same table's defaults. */
static void given_params(const fc_job_t *j, fc_job_task_t *t, const char *kind, const void *st, const char *skip) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  for (size_t i = 0; i < s->nparams; i++) {
    const fc_param_t *p = &s->params[i];
    if (!p->yaml || !fc_kv_get(j->given, j->ngiven, p->yaml) || (skip && !strcmp(p->key, skip))) continue;
    char v[256];
    fc_schema_format_value(p, st, v, sizeof v);
    param(t, p->key, "%s", v);
  }
}

/* The train params: the given ones, and the seed, which defaults to the job's. The SFT baseline
 * has no fused stores, so lambda means nothing to it (the trainer uses CE alone). */
static void train_params(fc_job_t *j, fc_job_task_t *t, int sft) {
  given_params(j, t, "train", &j->train, sft ? "lambda" : NULL);
  if (!fc_kv_get(j->given, j->ngiven, "training.seed")) param(t, "seed", "%" PRIu64, j->train.seed);
}

/* path with every SHARD_MARK replaced by s. Caller frees. */
static char *shard_path(const char *path, size_t s) {
  char num[32], *out = fc_xstrdup(path), *at;
  snprintf(num, sizeof num, "%zu", s);
  while ((at = strstr(out, SHARD_MARK))) {
    size_t pre = (size_t)(at - out);
    char *n = fc_xmalloc(strlen(out) + strlen(num) + 1);
    sprintf(n, "%.*s%s%s", (int)pre, out, num, at + strlen(SHARD_MARK));
    free(out);
    out = n;
  }
  return out;
}

/* logits(model, shard) -> vocab-map(source) -> align(source, shard) -> train(source) -> merge -> eval */
static void expand_pipeline(fc_job_t *j) {
  size_t S = (size_t)j->opts.shards, M = j->nmodels, pivot = 0;
  for (size_t m = 0; m < M; m++)
    if (j->models[m].role == FC_ROLE_PIVOT) pivot = m;
  const char *pn = j->models[pivot].name;
  size_t *logits = fc_xcalloc(M * S, sizeof *logits);
  for (size_t m = 0; m < M; m++)
    for (size_t s = 0; s < S; s++) {
      char cap[128];
      snprintf(cap, sizeof cap, "logits:%s", j->models[m].name);
      logits[m * S + s] = j->ntasks;
      const char *imp = j->models[m].logits;
      fc_job_task_t *t = imp ? add_task(j, "logits-import", "align", "logits/%s/%zu", j->models[m].name, s)
                             : add_task(j, "logits", cap, "logits/%s/%zu", j->models[m].name, s);
      param(t, "model", "%s", j->models[m].name);
      param(t, "shard", "%zu", s), param(t, "shards", "%zu", S);
      if (!imp) given_params(j, t, "logits", &j->logits, NULL); /* top_k, batch: the file has its own */
      param(t, "seed", "%" PRIu64, j->opts.seed);
      param(t, "max_len", "%ld", j->train.seq_len); /* examples are cut where training cuts them */
      param(t, "pivot_path", "%s", j->models[pivot].path); /* its template and cut for every model */
      str_push(&t->inputs, &t->ninputs, j->models[m].path);
      str_push(&t->inputs, &t->ninputs, j->dataset);
      if (imp) {
        char *f = shard_path(imp, s);
        str_push(&t->inputs, &t->ninputs, f);
        free(f);
      }
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
    given_params(j, t, "vocab-map", &j->vmap, NULL);
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
      param(t, "shard", "%zu", s);
      given_params(j, t, "align", &j->align, NULL);
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
    train_params(j, t, 0);
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
  if (j->opts.baseline_sft) {
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
    if (j->opts.baseline_sft) {
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

static int parse_tasks(fc_job_t *j, const fc_yaml_node_t *list, fc_err_t *err) {
  static const char *const keys[] = {"name", "kind", "cap", "params", "inputs", "outputs", "deps", NULL};
  if (list->kind != FC_YAML_LIST) return fc_yaml_error(list, err, "'tasks' must be a list");
  if (list->n > 10000) return fc_yaml_error(list, err, "more than 10000 tasks");
  for (size_t i = 0; i < list->n; i++) {
    const fc_yaml_node_t *n = list->item[i], *v;
    if (fc_yaml_check_keys(n, "a task", keys, err)) return FC_EINVAL;
    char *name = NULL, *kind = NULL;
    if (!(v = fc_yaml_get(n, "name"))) return fc_yaml_error(n, err, "a task needs a 'name'");
    if (get_str(v, "name", &name, err)) return FC_EINVAL;
    if (!(v = fc_yaml_get(n, "kind"))) {
      int rc = fc_yaml_error(n, err, "task '%s' needs a 'kind'", name);
      free(name);
      return rc;
    }
    if (get_str(v, "kind", &kind, err)) return free(name), FC_EINVAL;
    bool dup = fc_job_find_task(j, name) >= 0;
    fc_job_task_t *t = add_task(j, kind, NULL, "%s", name);
    free(name), free(kind);
    if (dup) return fc_yaml_error(n, err, "task '%s' is defined twice", t->name);
    if ((v = fc_yaml_get(n, "cap")) && get_str(v, "cap", &t->cap, err)) return FC_EINVAL;
    if ((v = fc_yaml_get(n, "params")) &&
        (get_kv(v, "params", &t->params, &t->nparams, err) || check_task_params(v, t->kind, t->params, t->nparams, err)))
      return FC_EINVAL;
    if ((v = fc_yaml_get(n, "inputs")) && get_strlist(v, "inputs", &t->inputs, &t->ninputs, err)) return FC_EINVAL;
    if ((v = fc_yaml_get(n, "outputs"))) {
      char **outs = NULL;
      size_t nouts = 0;
      int rc = get_strlist(v, "outputs", &outs, &nouts, err);
      for (size_t k = 0; k < nouts; k++) {
        if (rc == 0 && (outs[k][0] == '/' || strstr(outs[k], "..") || !outs[k][0]))
          rc = fc_yaml_error(v, err, "output '%s' must be a relative path inside the job directory", outs[k]);
        if (rc == 0) out_path(j, t, "%s", outs[k]);
        free(outs[k]);
      }
      free(outs);
      if (rc) return rc;
    }
    if ((v = fc_yaml_get(n, "deps"))) {
      char **deps = NULL;
      size_t ndeps = 0;
      int rc = get_strlist(v, "deps", &deps, &ndeps, err);
      for (size_t k = 0; k < ndeps; k++) {
        long d = fc_job_find_task(j, deps[k]);
        if (rc == 0 && (d < 0 || (size_t)d == j->ntasks - 1))
          rc = fc_yaml_error(v, err, "task '%s' depends on '%s', which is not a task listed before it", t->name, deps[k]);
        if (rc == 0) add_dep(t, (size_t)d);
        free(deps[k]);
      }
      free(deps);
      if (rc) return rc;
    }
  }
  return 0;
}

static int parse_models(fc_job_t *j, const fc_yaml_node_t *models, fc_err_t *err) {
  static const char *const model_keys[] = {"name", "path", "role", "logits", NULL};
  if (models->kind != FC_YAML_LIST) return fc_yaml_error(models, err, "'models' must be a list");
  size_t npivot = 0;
  for (size_t i = 0; i < models->n; i++) {
    const fc_yaml_node_t *n = models->item[i], *v;
    if (fc_yaml_check_keys(n, "a model", model_keys, err)) return FC_EINVAL;
    j->models = fc_xrealloc(j->models, (j->nmodels + 1) * sizeof *j->models);
    fc_job_model_t *m = &j->models[j->nmodels++];
    memset(m, 0, sizeof *m);
    if (!(v = fc_yaml_get(n, "name"))) return fc_yaml_error(n, err, "a model needs a 'name'");
    if (get_str(v, "name", &m->name, err)) return FC_EINVAL;
    if (!name_ok(m->name)) return fc_yaml_error(v, err, "model name '%s' may only use letters, digits, '.', '_', '-'", m->name);
    for (size_t k = 0; k + 1 < j->nmodels; k++)
      if (!strcmp(j->models[k].name, m->name)) return fc_yaml_error(v, err, "model '%s' is listed twice", m->name);
    if (!(v = fc_yaml_get(n, "path"))) return fc_yaml_error(n, err, "model '%s' needs a 'path'", m->name);
    if (get_str(v, "path", &m->path, err)) return FC_EINVAL;
    const char *role = "source";
    if ((v = fc_yaml_get(n, "role")) && fc_yaml_string(v, "role", &role, err)) return FC_EINVAL;
    if (!strcmp(role, "pivot")) m->role = FC_ROLE_PIVOT, npivot++;
    else if (!strcmp(role, "source")) m->role = FC_ROLE_SOURCE;
    else return fc_yaml_error(v, err, "role must be 'pivot' or 'source', not '%s'", role);
    if ((v = fc_yaml_get(n, "logits"))) { /* the pivot is trained, so its logits are always run */
      if (m->role == FC_ROLE_PIVOT) return fc_yaml_error(v, err, "'logits' is for sources; the pivot's are computed");
      if (get_str(v, "logits", &m->logits, err)) return FC_EINVAL;
      if (j->opts.shards > 1 && !strstr(m->logits, SHARD_MARK))
        return fc_yaml_error(v, err, "with shards: %ld, model '%s''s logits file needs %s (the shard's number)",
                             j->opts.shards, m->name, SHARD_MARK);
    }
  }
  if (npivot != 1) return fc_yaml_error(models, err, "exactly one model must have role: pivot (found %zu)", npivot);
  if (j->nmodels < 2) return fc_yaml_error(models, err, "at least one source model is needed beside the pivot");
  return 0;
}

/* merge.parameters: weight/density through the merge table, the method's own through the merge
 * floor's checker; baselines.merges: each a merge method. */
static int parse_merge(fc_job_t *j, const fc_yaml_node_t *root, fc_err_t *err) {
  const fc_task_schema_t *ms = fc_schema_find("merge");
  const fc_param_t *method = fc_schema_param(ms, "method");
  const fc_yaml_node_t *v;
  j->merge_method = fc_xstrdup(j->merge.method);
  j->merge.method = j->merge_method;
  if ((v = at_path(root, "merge.parameters"))) {
    if (get_kv(v, "parameters", &j->merge_params, &j->nmerge_params, err)) return FC_EINVAL;
    for (size_t i = 0; i < v->n; i++) {
      const fc_param_t *p = fc_schema_param(ms, v->key[i]);
      char what[96];
      snprintf(what, sizeof what, "'merge.parameters.%s'", v->key[i]);
      fc_err_t e = {0};
      fc_merge_params_t scratch;
      int rc = p == method ? fc_err_set(&e, FC_EINVAL, "give the method as merge.method")
               : p ? fc_schema_set(p, v->item[i]->str, what, &scratch, &e)
                   : fc_schema_check_open(v->key[i], v->item[i]->str, &e);
      if (rc) return fc_yaml_error(v->keynode[i], err, "%s", e.msg);
    }
  }
  if ((v = at_path(root, "baselines.merges"))) {
    if (get_strlist(v, "merges", &j->baseline_merges, &j->nbaseline_merges, err)) return FC_EINVAL;
    for (size_t b = 0; b < j->nbaseline_merges; b++) {
      fc_err_t e = {0};
      fc_merge_params_t scratch;
      if (fc_schema_set(method, j->baseline_merges[b], "a baseline merge method", &scratch, &e))
        return fc_yaml_error(v, err, "%s", e.msg);
      for (size_t k = 0; k < b; k++)
        if (!strcmp(j->baseline_merges[k], j->baseline_merges[b]))
          return fc_yaml_error(v, err, "merge method '%s' listed twice in baselines", j->baseline_merges[b]);
    }
  }
  return 0;
}

static int parse_root(fc_job_t *j, const fc_yaml_node_t *root, const char *src, fc_err_t *err) {
  const fc_yaml_node_t *v;
  fc_schema_defaults(fc_schema_find("job"), &j->opts);
  fc_schema_defaults(fc_schema_find("logits"), &j->logits);
  fc_schema_defaults(fc_schema_find("vocab-map"), &j->vmap);
  fc_schema_defaults(fc_schema_find("align"), &j->align);
  fc_schema_defaults(fc_schema_find("train"), &j->train);
  fc_schema_defaults(fc_schema_find("merge"), &j->merge);
  if (!root) return fc_err_set(err, FC_EINVAL, "%s: empty job spec", src);
  if (root->kind != FC_YAML_MAP) return fc_yaml_error(root, err, "the job spec must be a mapping");
  if (parse_stage_params(j, root, err)) return FC_EINVAL;
  j->max_attempts = (int)j->opts.max_attempts;
  if (j->train.ranks > j->train.batch_size) /* a bound between two parameters: the table holds single ranges */
    return fc_yaml_error(at_path(root, "training.ranks"), err,
                         "training.ranks %ld exceeds training.batch_size %ld: each rank needs at least one row "
                         "of every step (lower ranks or raise batch_size)", j->train.ranks, j->train.batch_size);
  if (!fc_kv_get(j->given, j->ngiven, "training.seed")) j->train.seed = j->opts.seed; /* its documented default */
  if (!(v = fc_yaml_get(root, "name"))) return fc_yaml_error(root, err, "the job needs a 'name'");
  if (get_str(v, "name", &j->name, err)) return FC_EINVAL;
  if (!name_ok(j->name)) return fc_yaml_error(v, err, "job name '%s' may only use letters, digits, '.', '_', '-' (at most 64)", j->name);
  if (!(v = fc_yaml_get(root, "store"))) return fc_yaml_error(root, err, "the job needs a 'store' directory");
  if (get_str(v, "store", &j->store, err)) return FC_EINVAL;
  j->dir = fc_path_join(j->store, j->name);
  const fc_yaml_node_t *tasks = fc_yaml_get(root, "tasks"), *models = fc_yaml_get(root, "models");
  if (tasks && models) return fc_yaml_error(tasks, err, "give either 'models' (the fusion pipeline) or 'tasks', not both");
  if (tasks) return parse_tasks(j, tasks, err);
  if (!models) return fc_yaml_error(root, err, "the job needs 'models' (or an explicit 'tasks' list)");
  if (parse_models(j, models, err)) return FC_EINVAL;
  if (!(v = fc_yaml_get(root, "dataset"))) return fc_yaml_error(root, err, "the job needs a 'dataset'");
  if (get_str(v, "dataset", &j->dataset, err)) return FC_EINVAL;
  if ((v = fc_yaml_get(root, "eval")) && get_str(v, "eval", &j->eval, err)) return FC_EINVAL;
  if (parse_merge(j, root, err)) return FC_EINVAL;
  expand_pipeline(j);
  for (size_t a = 0; a < j->ntasks; a++) /* a model named like a baseline ("sft", "target-x") */
    for (size_t b = 0; b < a; b++)
      if (!strcmp(j->tasks[a].name, j->tasks[b].name))
        return fc_yaml_error(models, err, "two tasks would be called '%s': rename the model", j->tasks[a].name);
  return 0;
}

int fc_job_parse(const char *text, size_t len, const char *source, fc_job_t **out, fc_err_t *err) {
  *out = NULL;
  const char *src = source ? source : "job";
  fc_yaml_doc_t *doc;
  int rc = fc_yaml_parse(text, len, src, &doc, err);
  if (rc) return rc;
  fc_job_t *j = fc_xcalloc(1, sizeof *j);
  rc = parse_root(j, fc_yaml_root(doc), src, err);
  fc_yaml_destroy(&doc);
  if (rc == 0 && j->ntasks == 0) rc = fc_err_set(err, FC_EINVAL, "%s: the job has no tasks", src);
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
  for (size_t i = 0; i < j->nmodels; i++) free(j->models[i].name), free(j->models[i].path), free(j->models[i].logits);
  free(j->models);
  free_kv(j->merge_params, j->nmerge_params);
  free_kv(j->given, j->ngiven);
  free_strs(j->baseline_merges, j->nbaseline_merges);
  free(j->name), free(j->store), free(j->dir), free(j->dataset), free(j->eval), free(j->merge_method);
  free(j);
  *jp = NULL;
}
