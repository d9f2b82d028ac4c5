/* fusectl demo --ablations: the paper's ablations on the demo's models and data. One fusion job
 * per setting (lambda, K, fusion function, vocabulary map; the others at the demo's values),
 * the merges of the base job's targets by every method through fusectl merge, then one table of
 * every variant with bootstrap intervals and marks against the pivot and plain SFT
 * (DIR/ablations.txt, DIR/ablations.json) and one PNG per sweep (DIR/plots/ablation-*.png). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"
#include "fc_eval.h"

/* One fusion job of a sweep; the base job (sweep "base") also trains plain SFT. */
typedef struct variant {
  const char *sweep, *value;
  double lambda;
  int top_k;
  const char *fuse, *vocab_map;
} variant_t;

static const variant_t variants[] = {
    {"base", "", 0.9, 10, "mince", "stats"},
    {"lambda", "0.7", 0.7, 10, "mince", "stats"},
    {"lambda", "0.5", 0.5, 10, "mince", "stats"},
    {"top_k", "1", 0.9, 1, "mince", "stats"},
    {"top_k", "5", 0.9, 5, "mince", "stats"},
    {"top_k", "20", 0.9, 20, "mince", "stats"},
    {"fuse", "avgce", 0.9, 10, "avgce", "stats"},
    {"fuse", "source", 0.9, 10, "source", "stats"},
    {"vocab_map", "mined", 0.9, 10, "mince", "mined"},
    {"vocab_map", "exact", 0.9, 10, "mince", "exact"},
};
#define NVARIANTS (sizeof variants / sizeof *variants)

/* The merges of the base job's two targets (fusectl merge speaks mergekit: its sce zeroes the
 * unselected deltas unless sce_mask_scope=weights, the FuseChat release that a job's sce is).
 * SLERP is left out: it interpolates the base with one model, and there are two targets. */
typedef struct merge_variant {
  const char *label, *method, *params[2];
  const char *densities;
} merge_variant_t;

static const merge_variant_t merges[] = {
    {"sce-0.1", "sce", {"select_topk=0.1", "sce_mask_scope=weights"}, NULL},
    {"sce-0.5", "sce", {"select_topk=0.5", "sce_mask_scope=weights"}, NULL},
    {"sce-1.0", "sce", {"select_topk=1.0", "sce_mask_scope=weights"}, NULL},
    {"sce-mergekit-0.1", "sce", {"select_topk=0.1", "sce_mask_scope=deltas"}, NULL},
    {"sce-mergekit-0.5", "sce", {"select_topk=0.5", "sce_mask_scope=deltas"}, NULL},
    {"varm", "varm", {NULL, NULL}, NULL},
    {"linear", "linear", {NULL, NULL}, NULL},
    {"task_arithmetic", "task_arithmetic", {NULL, NULL}, NULL},
    {"ties", "ties", {NULL, NULL}, "0.5,0.5"},
    {"dare_ties", "dare_ties", {NULL, NULL}, "0.5,0.5"},
};
#define NMERGES (sizeof merges / sizeof *merges)

static const char *const series[] = {"merged-sce", "target-src-facts", "target-src-arith"};
#define NSERIES 3

static void job_name(const variant_t *v, char *buf, size_t n) {
  if (!strcmp(v->sweep, "base")) snprintf(buf, n, "abl-base");
  else snprintf(buf, n, "abl-%s-%s", v->sweep, v->value);
}

/* The collected rows: names owned, results owned. */
typedef struct rows {
  char **names;
  fc_eval_result_t *res;
  int n;
} rows_t;

/* Adds the models of a results file (only those named in keep, if keep is set), renamed
 * PREFIX:MODEL when prefix is set. */
static int add_rows(rows_t *rows, const char *path, const char *prefix, const char *const *keep, int nkeep) {
  json_error_t je;
  json_t *doc = json_load_file(path, 0, &je), *m;
  if (!doc) return fc_cli_fail("demo", "%s: %s", path, je.text);
  size_t i;
  json_array_foreach(json_object_get(doc, "models"), i, m) {
    const char *name;
    fc_eval_result_t r;
    if (fc_eval_result_from_json(m, &name, &r)) continue;
    int want = !keep;
    for (int k = 0; k < nkeep && !want; k++) want = !strcmp(keep[k], name);
    if (!want) {
      fc_eval_result_free(&r);
      continue;
    }
    rows->names = fc_xrealloc(rows->names, (size_t)(rows->n + 1) * sizeof *rows->names);
    rows->res = fc_xrealloc(rows->res, (size_t)(rows->n + 1) * sizeof *rows->res);
    char full[256];
    if (prefix) snprintf(full, sizeof full, "%s:%s", prefix, name);
    else snprintf(full, sizeof full, "%s", name);
    rows->names[rows->n] = fc_xstrdup(full);
    rows->res[rows->n++] = r;
  }
  json_decref(doc);
  return 0;
}

static int find_row(const rows_t *rows, const char *name) {
  for (int i = 0; i < rows->n; i++)
    if (!strcmp(rows->names[i], name)) return i;
  return -1;
}

/* One line of a sweep's data file: the label, then per series macro accuracy (%) and loss with
 * their intervals; a series without a row gets NaN (gnuplot skips it). */
static void data_line(FILE *f, const rows_t *rows, const char *label, const char *const names[NSERIES]) {
  fprintf(f, "%s", label);
  for (int s = 0; s < NSERIES; s++) {
    int i = names[s] ? find_row(rows, names[s]) : -1;
    for (int what = 0; what < 2; what++) {
      double v = NAN, lo = NAN, hi = NAN;
      if (i >= 0) fc_eval_boot_ci(&rows->res[i], NULL, what, &v, &lo, &hi);
      double k = what ? 1 : 100;
      fprintf(f, ",%.6g,%.6g,%.6g", k * v, k * lo, k * hi);
    }
  }
  fputc('\n', f);
}

/* The PNG of one sweep from its data file: accuracy and loss side by side, one line with error
 * bars per series. */
static void plot_sweep(const char *work, const char *sweep, const char *csv, int nseries) {
  char png[4096], gp[4096], cmd[8300];
  demo_pathf(png, sizeof png, "%s/plots/ablation-%s.png", work, sweep);
  demo_pathf(gp, sizeof gp, "%s/ablate/%s.gp", work, sweep);
  FILE *f = fopen(gp, "w");
  if (!f) return;
  fprintf(f, "set terminal png size 1000,440\nset output '%s'\nset datafile separator ','\n", png);
  fprintf(f, "set multiplot layout 1,2 title 'ablation: %s (95%% bootstrap intervals)'\nset key top left\n", sweep);
  fprintf(f, "set xlabel '%s'\nset offsets 0.3,0.3,0,0\n", sweep);
  for (int what = 0; what < 2; what++) {
    fprintf(f, "set title '%s'\nplot ", what ? "macro answer loss (nats/token)" : "macro accuracy (%)");
    for (int s = 0; s < nseries; s++) {
      int c = 2 + 6 * s + 3 * what;
      fprintf(f, "%s'%s' using 0:%d:%d:%d%s with yerrorlines title '%s'", s ? ", " : "", csv, c, c + 1, c + 2,
              s ? "" : ":xtic(1)", series[s]);
    }
    fputc('\n', f);
  }
  fprintf(f, "unset multiplot\n");
  fclose(f);
  demo_pathf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", gp);
  if (system(cmd) == 0) fprintf(stderr, "demo: %s\n", png);
}

static void write_sweeps(const char *work, const rows_t *rows) {
  static const char *const sweeps[] = {"lambda", "top_k", "fuse", "vocab_map"};
  static const char *const base_value[] = {"0.9", "10", "mince", "stats"};
  for (int w = 0; w < 4; w++) {
    char csv[4096];
    demo_pathf(csv, sizeof csv, "%s/ablate/%s.csv", work, sweeps[w]);
    FILE *f = fopen(csv, "w");
    if (!f) continue;
    if (!strcmp(sweeps[w], "lambda")) { /* lambda 1 is plain SFT: the same model for every series */
      const char *sft[NSERIES] = {"base:sft", "base:sft", "base:sft"};
      data_line(f, rows, "1.0 (SFT)", sft);
    }
    for (size_t v = 0; v < NVARIANTS; v++) {
      const variant_t *va = &variants[v];
      int base = !strcmp(va->sweep, "base");
      if (!base && strcmp(va->sweep, sweeps[w])) continue;
      char names[NSERIES][128];
      const char *np[NSERIES];
      for (int s = 0; s < NSERIES; s++) {
        if (base) snprintf(names[s], sizeof names[s], "base:%s", series[s]);
        else snprintf(names[s], sizeof names[s], "%s=%s:%s", va->sweep, va->value, series[s]);
        np[s] = names[s];
      }
      data_line(f, rows, base ? base_value[w] : va->value, np);
    }
    fclose(f);
    plot_sweep(work, sweeps[w], csv, NSERIES);
  }
  /* merges: one series, the merged model of each method */
  char csv[4096];
  demo_pathf(csv, sizeof csv, "%s/ablate/merges.csv", work);
  FILE *f = fopen(csv, "w");
  if (!f) return;
  for (size_t m = 0; m < NMERGES; m++) {
    char name[128];
    snprintf(name, sizeof name, "merge-%s", merges[m].label);
    const char *np[NSERIES] = {name, NULL, NULL};
    data_line(f, rows, merges[m].label, np);
  }
  fclose(f);
  plot_sweep(work, "merges", csv, 1);
}

static int run_job(const char *work, const demo_recipe_t *r, const variant_t *v, int threads) {
  char name[128], job[4096], run[4096], th[16];
  job_name(v, name, sizeof name);
  demo_job_t jo;
  demo_job_default(&jo, name);
  jo.lambda = v->lambda, jo.top_k = v->top_k, jo.fuse = v->fuse, jo.vocab_map = v->vocab_map;
  jo.baselines = strcmp(v->sweep, "base") ? NULL : ""; /* the base job also trains plain SFT */
  demo_pathf(job, sizeof job, "%s/ablate/%s.yaml", work, name);
  demo_pathf(run, sizeof run, "%s/run-ablate", work);
  snprintf(th, sizeof th, "%d", threads);
  fc_err_t err = {0};
  if (demo_write_job(work, r, &jo, job, &err)) return fc_cli_fail("demo", "%s", err.msg);
  char *argv[] = {"fusectl", "run", job, "--local", "--run-dir", run, "--threads", th, "--quiet", NULL};
  int st = demo_run_self(argv);
  if (st) return fc_cli_fail("demo", "ablation job %s failed (exit status %d)", name, st);
  return 0;
}

static int run_merges(const char *work, int threads) {
  char base[4096], t1[4096], t2[4096], eval[4096], json[4096], th[16];
  demo_pathf(base, sizeof base, "%s/models/pivot", work);
  demo_pathf(t1, sizeof t1, "%s/store/abl-base/targets/src-facts", work);
  demo_pathf(t2, sizeof t2, "%s/store/abl-base/targets/src-arith", work);
  demo_pathf(eval, sizeof eval, "%s/data/eval.jsonl", work);
  demo_pathf(json, sizeof json, "%s/ablate/merges.json", work);
  snprintf(th, sizeof th, "%d", threads);
  char dirs[NMERGES][4096];
  char *eargv[8 + 2 * NMERGES + 8];
  int ne = 0;
  eargv[ne++] = "fusectl", eargv[ne++] = "eval";
  for (size_t m = 0; m < NMERGES; m++) {
    const merge_variant_t *mv = &merges[m];
    demo_pathf(dirs[m], sizeof dirs[m], "%s/ablate/merge-%s", work, mv->label);
    char *argv[24];
    int n = 0;
    argv[n++] = "fusectl", argv[n++] = "merge", argv[n++] = "--method", argv[n++] = (char *)mv->method;
    argv[n++] = "--base", argv[n++] = base, argv[n++] = "--out", argv[n++] = dirs[m];
    argv[n++] = "--threads", argv[n++] = th, argv[n++] = "--quiet";
    for (int p = 0; p < 2; p++)
      if (mv->params[p]) argv[n++] = "--param", argv[n++] = (char *)mv->params[p];
    if (mv->densities) argv[n++] = "--densities", argv[n++] = (char *)mv->densities;
    argv[n++] = "--models", argv[n++] = t1, argv[n++] = t2;
    argv[n] = NULL;
    int st = demo_run_self(argv);
    if (st) return fc_cli_fail("demo", "merge %s failed (exit status %d)", mv->label, st);
    eargv[ne++] = "--model", eargv[ne++] = dirs[m];
  }
  eargv[ne++] = "--data", eargv[ne++] = eval, eargv[ne++] = "--json", eargv[ne++] = json;
  eargv[ne++] = "--threads", eargv[ne++] = th, eargv[ne++] = "--quiet";
  eargv[ne] = NULL;
  int st = demo_run_self(eargv);
  return st ? fc_cli_fail("demo", "evaluating the merges failed (exit status %d)", st) : 0;
}

int demo_ablations(const char *work, const demo_recipe_t *r, int threads) {
  char dir[4096];
  demo_pathf(dir, sizeof dir, "%s/ablate", work);
  fc_err_t err = {0};
  if (fc_mkdir_p(dir, &err)) return fc_cli_fail("demo", "%s", err.msg);
  demo_pathf(dir, sizeof dir, "%s/plots", work);
  if (fc_mkdir_p(dir, &err)) return fc_cli_fail("demo", "%s", err.msg);
  double t0 = fc_now();
  int rc = 0;
  for (size_t v = 0; v < NVARIANTS && !rc; v++) {
    fprintf(stderr, "demo: ablation %zu/%zu: %s %s (%.0f s so far)\n", v + 1, NVARIANTS, variants[v].sweep,
            variants[v].value, fc_now() - t0);
    rc = run_job(work, r, &variants[v], threads);
  }
  if (!rc) {
    fprintf(stderr, "demo: ablation merges of the base job's targets\n");
    rc = run_merges(work, threads);
  }
  if (rc) return rc;
  /* the table: the base job whole, each variant's targets and merge, every merge method */
  rows_t rows = {0};
  char path[4096];
  for (size_t v = 0; v < NVARIANTS && !rc; v++) {
    char name[128], prefix[128];
    job_name(&variants[v], name, sizeof name);
    int base = !strcmp(variants[v].sweep, "base");
    if (base) snprintf(prefix, sizeof prefix, "base");
    else snprintf(prefix, sizeof prefix, "%s=%s", variants[v].sweep, variants[v].value);
    demo_pathf(path, sizeof path, "%s/store/%s/results.json", work, name);
    rc = add_rows(&rows, path, prefix, base ? NULL : series, base ? 0 : NSERIES);
  }
  demo_pathf(path, sizeof path, "%s/ablate/merges.json", work);
  if (!rc) rc = add_rows(&rows, path, NULL, NULL, 0);
  if (!rc) {
    const fc_eval_result_t **rp = fc_xcalloc((size_t)rows.n, sizeof *rp);
    for (int i = 0; i < rows.n; i++) rp[i] = &rows.res[i];
    int pivot = find_row(&rows, "base:pivot"), sft = find_row(&rows, "base:sft");
    demo_pathf(path, sizeof path, "%s/ablations.txt", work);
    FILE *f = fopen(path, "w");
    if (!f) rc = fc_cli_fail("demo", "cannot write %s", path);
    else {
      fc_eval_print_table(f, (const char *const *)rows.names, rp, rows.n, pivot, sft);
      fclose(f);
      fc_eval_print_table(stdout, (const char *const *)rows.names, rp, rows.n, pivot, sft);
      demo_pathf(path, sizeof path, "%s/ablations.json", work);
      if (fc_eval_write_json_file(path, (const char *const *)rows.names, rp, rows.n, &err))
        rc = fc_cli_fail("demo", "%s", err.msg);
      write_sweeps(work, &rows);
      fprintf(stderr, "demo: ablations finished in %.0f s: %s/ablations.txt, %s/plots/ablation-*.png\n",
              fc_now() - t0, work, work);
    }
    free(rp);
  }
  for (int i = 0; i < rows.n; i++) free(rows.names[i]), fc_eval_result_free(&rows.res[i]);
  free(rows.names), free(rows.res);
  return rc;
}
