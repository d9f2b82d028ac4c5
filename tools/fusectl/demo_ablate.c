/* fusectl demo --ablations: the paper's ablations on the demo's models and data. One fusion job
 * per setting (lambda, K, fusion function, vocabulary map; the others at the demo's values),
 * the merges of the base job's targets by every method through fusectl merge, then one table of
 * the one multi-teacher target (FuseLLM's "Multi": the pivot and both sources fused into one
 * target, from the base job's stores), then one table of every variant with bootstrap intervals
 * and marks against the pivot and plain SFT (DIR/ablations.txt, DIR/ablations.json) and one PNG
 * per sweep (DIR/plots/ablation-*.png). */
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
 * SLERP interpolates two models, as FuseChat v1 merges its two targets: the first target is the
 * base, the second the model, t = 0.5; the pivot takes no part. */
typedef struct merge_variant {
  const char *label, *method, *params[2];
  const char *densities;
  int between_targets; /* base = the first target, models = the second (slerp) */
} merge_variant_t;

static const merge_variant_t merges[] = {
    {"sce-0.1", "sce", {"select_topk=0.1", "sce_mask_scope=weights"}, NULL, 0},
    {"sce-0.5", "sce", {"select_topk=0.5", "sce_mask_scope=weights"}, NULL, 0},
    {"sce-1.0", "sce", {"select_topk=1.0", "sce_mask_scope=weights"}, NULL, 0},
    {"sce-mergekit-0.1", "sce", {"select_topk=0.1", "sce_mask_scope=deltas"}, NULL, 0},
    {"sce-mergekit-0.5", "sce", {"select_topk=0.5", "sce_mask_scope=deltas"}, NULL, 0},
    {"varm", "varm", {NULL, NULL}, NULL, 0},
    {"linear", "linear", {NULL, NULL}, NULL, 0},
    {"task_arithmetic", "task_arithmetic", {NULL, NULL}, NULL, 0},
    {"ties", "ties", {NULL, NULL}, "0.5,0.5", 0},
    {"dare_ties", "dare_ties", {NULL, NULL}, "0.5,0.5", 0},
    {"slerp", "slerp", {"t=0.5", NULL}, NULL, 1},
};
#define NMERGES (sizeof merges / sizeof *merges)

static const char *const series[] = {"merged-sce", "target-src-facts", "target-src-arith"};
#define NSERIES 3

/* The sources of the demo (cmd_demo.c's models after the pivot), in the job's order. */
static const char *const sources[] = {"src-facts", "src-arith"};
#define NSOURCES 2
/* The multi-teacher target's directory, and so its name in the table. */
#define MULTI_NAME "target-multi"

static const char *const sweep_names[] = {"lambda", "top_k", "fuse", "vocab_map", "multi", "merges"};
enum { SW_MULTI = 1u << 4, SW_MERGES = 1u << 5 };

int demo_ablation_sweeps(const char *list, unsigned *mask) {
  *mask = 0;
  const char *p = list;
  for (;;) {
    size_t n = strcspn(p, ","), k;
    for (k = 0; k < 6; k++)
      if (strlen(sweep_names[k]) == n && !strncmp(p, sweep_names[k], n)) break;
    if (k == 6) return -1;
    *mask |= 1u << k;
    if (!p[n]) return 0;
    p += n + 1;
  }
}

/* Whether a variant job runs under the mask: the base always, the others with their sweep. */
static int variant_on(const variant_t *v, unsigned mask) {
  for (int k = 0; k < 4; k++)
    if (!strcmp(v->sweep, sweep_names[k])) return (mask >> k) & 1;
  return 1;
}

static void job_name(const variant_t *v, char *buf, size_t n) {
  if (!strcmp(v->sweep, "base")) snprintf(buf, n, "abl-base");
  else snprintf(buf, n, "abl-%s-%s", v->sweep, v->value);
}

/* A variant job adds only its targets and their merge to the table. */
static int keep_series(const char *model, const void *ctx) {
  (void)ctx;
  for (int k = 0; k < NSERIES; k++)
    if (!strcmp(series[k], model)) return 1;
  return 0;
}

/* One line of a sweep's data file: the label, then per series macro accuracy (%) and loss with
 * their intervals; a series without a row gets NaN (gnuplot skips it). */
static void data_line(FILE *f, const demo_rows_t *rows, const char *label, const char *const names[NSERIES]) {
  fprintf(f, "%s", label);
  for (int s = 0; s < NSERIES; s++) {
    int i = names[s] ? demo_rows_find(rows, names[s]) : -1;
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
static void plot_sweep(const char *work, const char *sweep, const char *csv, const char *const *titles, int nseries) {
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
              s ? "" : ":xtic(1)", titles[s]);
    }
    fputc('\n', f);
  }
  fprintf(f, "unset multiplot\n");
  fclose(f);
  demo_pathf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", gp);
  if (system(cmd) == 0) fprintf(stderr, "demo: %s\n", png);
}

static void write_sweeps(const char *work, const demo_rows_t *rows, unsigned mask) {
  static const char *const *const sweeps = sweep_names;
  static const char *const base_value[] = {"0.9", "10", "mince", "stats"};
  for (int w = 0; w < 4; w++) {
    if (!((mask >> w) & 1)) continue;
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
    plot_sweep(work, sweeps[w], csv, series, NSERIES);
  }
  /* merges: one series, the merged model of each method */
  static const char *const one[] = {"merged model"};
  char csv[4096];
  FILE *f;
  demo_pathf(csv, sizeof csv, "%s/ablate/merges.csv", work);
  if ((mask & SW_MERGES) && (f = fopen(csv, "w"))) {
    for (size_t m = 0; m < NMERGES; m++) {
      char name[128];
      snprintf(name, sizeof name, "merge-%s", merges[m].label);
      const char *np[NSERIES] = {name, NULL, NULL};
      data_line(f, rows, merges[m].label, np);
    }
    fclose(f);
    plot_sweep(work, "merges", csv, one, 1);
  }
  /* pairwise targets and their merge against the one multi-teacher target, SFT beside them */
  static const char *const multi_rows[][2] = {{"SFT", "base:sft"},
                                              {"t-facts", "base:target-src-facts"},
                                              {"t-arith", "base:target-src-arith"},
                                              {"pair+SCE", "base:merged-sce"},
                                              {"Multi", MULTI_NAME}};
  static const char *const model[] = {"model"};
  demo_pathf(csv, sizeof csv, "%s/ablate/multi.csv", work);
  if (!(mask & SW_MULTI) || !(f = fopen(csv, "w"))) return;
  for (size_t m = 0; m < sizeof multi_rows / sizeof *multi_rows; m++) {
    const char *np[NSERIES] = {multi_rows[m][1], NULL, NULL};
    data_line(f, rows, multi_rows[m][0], np);
  }
  fclose(f);
  plot_sweep(work, "multi", csv, model, 1);
}

static int run_job(const char *work, const demo_recipe_t *r, const variant_t *v, int threads) {
  char name[128], job[4096], run[4096];
  job_name(v, name, sizeof name);
  demo_job_t jo;
  demo_job_default(&jo, name);
  jo.lambda = v->lambda, jo.top_k = v->top_k, jo.fuse = v->fuse, jo.vocab_map = v->vocab_map;
  jo.baselines = strcmp(v->sweep, "base") ? NULL : ""; /* the base job also trains plain SFT */
  demo_pathf(job, sizeof job, "%s/ablate/%s.yaml", work, name);
  demo_pathf(run, sizeof run, "%s/run-ablate", work);
  fc_err_t err = {0};
  if (demo_write_job(work, r, &jo, job, &err)) return fc_cli_fail("demo", "%s", err.msg);
  int st = demo_run_job(job, run, threads, 1);
  if (st) return fc_cli_fail("demo", "ablation job %s failed (exit status %d)", name, st);
  return 0;
}

/* The merges (when do_merges), then one evaluation of them and of the multi-teacher target
 * (multi, when not NULL) into DIR/ablate/merges.json. */
static int run_merges(const char *work, int do_merges, const char *multi, int threads) {
  char base[4096], t1[4096], t2[4096], eval[4096], json[4096], th[16];
  demo_pathf(base, sizeof base, "%s/models/pivot", work);
  demo_pathf(t1, sizeof t1, "%s/store/abl-base/targets/src-facts", work);
  demo_pathf(t2, sizeof t2, "%s/store/abl-base/targets/src-arith", work);
  demo_pathf(eval, sizeof eval, "%s/data/eval.jsonl", work);
  demo_pathf(json, sizeof json, "%s/ablate/merges.json", work);
  snprintf(th, sizeof th, "%d", threads);
  char dirs[NMERGES][4096];
  char *eargv[10 + 2 * NMERGES + 8];
  int ne = 0;
  eargv[ne++] = "fusectl", eargv[ne++] = "eval";
  for (size_t m = 0; m < NMERGES && do_merges; m++) {
    const merge_variant_t *mv = &merges[m];
    demo_pathf(dirs[m], sizeof dirs[m], "%s/ablate/merge-%s", work, mv->label);
    char *argv[24];
    int n = 0;
    argv[n++] = "fusectl", argv[n++] = "merge", argv[n++] = "--method", argv[n++] = (char *)mv->method;
    argv[n++] = "--base", argv[n++] = mv->between_targets ? t1 : base, argv[n++] = "--out", argv[n++] = dirs[m];
    argv[n++] = "--threads", argv[n++] = th, argv[n++] = "--quiet";
    for (int p = 0; p < 2; p++)
      if (mv->params[p]) argv[n++] = "--param", argv[n++] = (char *)mv->params[p];
    if (mv->densities) argv[n++] = "--densities", argv[n++] = (char *)mv->densities;
    argv[n++] = "--models";
    if (!mv->between_targets) argv[n++] = t1;
    argv[n++] = t2;
    argv[n] = NULL;
    int st = demo_run_self(argv);
    if (st) return fc_cli_fail("demo", "merge %s failed (exit status %d)", mv->label, st);
    eargv[ne++] = "--model", eargv[ne++] = dirs[m];
  }
  if (multi) eargv[ne++] = "--model", eargv[ne++] = (char *)multi;
  eargv[ne++] = "--data", eargv[ne++] = eval, eargv[ne++] = "--json", eargv[ne++] = json;
  eargv[ne++] = "--threads", eargv[ne++] = th, eargv[ne++] = "--quiet";
  eargv[ne] = NULL;
  int st = demo_run_self(eargv);
  return st ? fc_cli_fail("demo", "evaluating the merges and Multi failed (exit status %d)", st) : 0;
}

/* The paper's "Multi" row (FuseLLM): one target trained on the fusion of the pivot's and every
 * source's distributions at once, against the pairwise targets and their merge. A job fuses each
 * source with the pivot in its own align task, so these stages run here on the base job's
 * stores (the logits of every model over each shard and the vocabulary maps): fusectl fuse with
 * both sources per shard (MinCE over three candidates), then fusectl train with the job's
 * training settings (those demo_write_job gives, the schema's defaults for the rest, the job's
 * seed, the same threads), so the targets differ in their fused stores only. */
static int run_multi(const char *work, const demo_recipe_t *r, int threads, char *out, size_t nout) {
  char job[4096], dir[4096], data[4096], pivot[4096], th[16], ep[16], lr[32], bs[16], lam[32];
  char fused[2][4096], ptopk[4096], stopk[NSOURCES][4096], smodel[NSOURCES][4096], smap[NSOURCES][4096], shard[16];
  demo_pathf(job, sizeof job, "%s/store/abl-base", work);
  demo_pathf(dir, sizeof dir, "%s/ablate/multi", work);
  demo_pathf(data, sizeof data, "%s/data/fusion.jsonl", work);
  demo_pathf(pivot, sizeof pivot, "%s/models/pivot", work);
  demo_pathf(out, nout, "%s/ablate/%s", work, MULTI_NAME);
  fc_err_t err = {0};
  if (fc_mkdir_p(dir, &err)) return fc_cli_fail("demo", "%s", err.msg);
  snprintf(th, sizeof th, "%d", threads);
  for (int s = 0; s < 2; s++) { /* demo_write_job's two shards */
    demo_pathf(ptopk, sizeof ptopk, "%s/logits/pivot.shard-%04d.topk", job, s);
    demo_pathf(fused[s], sizeof fused[s], "%s/fused.shard-%04d.topk", dir, s);
    snprintf(shard, sizeof shard, "%d/2", s);
    char *argv[20 + 6 * NSOURCES];
    int n = 0;
    argv[n++] = "fusectl", argv[n++] = "fuse", argv[n++] = "--pivot", argv[n++] = pivot;
    argv[n++] = "--pivot-topk", argv[n++] = ptopk;
    for (int k = 0; k < NSOURCES; k++) {
      demo_pathf(smodel[k], sizeof smodel[k], "%s/models/%s", work, sources[k]);
      demo_pathf(stopk[k], sizeof stopk[k], "%s/logits/%s.shard-%04d.topk", job, sources[k], s);
      demo_pathf(smap[k], sizeof smap[k], "%s/vocab/%s.vmap", job, sources[k]);
      argv[n++] = "--source", argv[n++] = smodel[k], argv[n++] = "--source-topk", argv[n++] = stopk[k];
      argv[n++] = "--map", argv[n++] = smap[k];
    }
    /* the stores are checked against the shard of the data they claim (the job cuts at seq_len 128) */
    argv[n++] = "--data", argv[n++] = data, argv[n++] = "--shard", argv[n++] = shard, argv[n++] = "--max-len";
    argv[n++] = "128", argv[n++] = "--out", argv[n++] = fused[s], argv[n++] = "--quiet";
    argv[n] = NULL;
    int st = demo_run_self(argv);
    if (st) return fc_cli_fail("demo", "fusing the pivot and every source (shard %d) failed (exit status %d)", s, st);
  }
  snprintf(ep, sizeof ep, "%d", r->target_epochs);
  snprintf(lr, sizeof lr, "%g", r->target_lr);
  snprintf(bs, sizeof bs, "%d", r->batch);
  snprintf(lam, sizeof lam, "%g", variants[0].lambda); /* the base job's */
  char *argv[] = {"fusectl", "train", "--model", pivot, "--data", data, "--out", out, "--targets", fused[0],
                  "--targets", fused[1], "--lambda", lam, "--epochs", ep, "--lr", lr, "--batch-size", bs,
                  "--seq-len", "128", "--warmup-ratio", "0.03", "--weight-decay", "0", "--seed", "1",
                  "--threads", th, "--quiet", NULL};
  int st = demo_run_self(argv);
  return st ? fc_cli_fail("demo", "training the multi-teacher target failed (exit status %d)", st) : 0;
}

/* The table of the parts done so far (done: the variants' jobs, extra: merges.json), written
 * to DIR/ablations.txt and .json (so a run stopped early leaves the rows it has), and printed
 * with the plots when final. */
static int write_table(const char *work, const unsigned char *done, int extra, unsigned mask, int final) {
  demo_rows_t rows = {0};
  char path[4096];
  int rc = 0;
  for (size_t v = 0; v < NVARIANTS && !rc; v++) {
    if (!done[v]) continue;
    char name[128], prefix[128];
    job_name(&variants[v], name, sizeof name);
    int base = !strcmp(variants[v].sweep, "base");
    if (base) snprintf(prefix, sizeof prefix, "base:");
    else snprintf(prefix, sizeof prefix, "%s=%s:", variants[v].sweep, variants[v].value);
    demo_pathf(path, sizeof path, "%s/store/%s/results.json", work, name);
    rc = demo_rows_add(&rows, path, prefix, base ? NULL : keep_series, NULL);
  }
  demo_pathf(path, sizeof path, "%s/ablate/merges.json", work);
  if (!rc && extra) rc = demo_rows_add(&rows, path, NULL, NULL, NULL);
  if (!rc) {
    demo_pathf(path, sizeof path, "%s/ablations.txt", work);
    FILE *f = fopen(path, "w");
    if (!f) rc = fc_cli_fail("demo", "cannot write %s", path);
    else {
      if (!final) fprintf(f, "(partial: the ablation run has not finished)\n");
      demo_rows_print(f, &rows, "base:pivot", "base:sft");
      fclose(f);
      const fc_eval_result_t **rp = fc_xcalloc(rows.n ? (size_t)rows.n : 1, sizeof *rp);
      for (int i = 0; i < rows.n; i++) rp[i] = &rows.res[i];
      fc_err_t err = {0};
      demo_pathf(path, sizeof path, "%s/ablations.json", work);
      if (fc_eval_write_json_file(path, (const char *const *)rows.names, rp, rows.n, &err))
        rc = fc_cli_fail("demo", "%s", err.msg);
      free(rp);
      if (final) {
        demo_rows_print(stdout, &rows, "base:pivot", "base:sft");
        write_sweeps(work, &rows, mask);
      }
    }
  }
  demo_rows_free(&rows);
  return rc;
}

int demo_ablations(const char *work, const demo_recipe_t *r, int threads, unsigned mask) {
  char dir[4096];
  demo_pathf(dir, sizeof dir, "%s/ablate", work);
  fc_err_t err = {0};
  if (fc_mkdir_p(dir, &err)) return fc_cli_fail("demo", "%s", err.msg);
  demo_pathf(dir, sizeof dir, "%s/plots", work);
  if (fc_mkdir_p(dir, &err)) return fc_cli_fail("demo", "%s", err.msg);
  double t0 = fc_now();
  int rc = 0, njobs = 0, k = 0, extra = 0;
  unsigned char done[NVARIANTS] = {0};
  for (size_t v = 0; v < NVARIANTS; v++) njobs += variant_on(&variants[v], mask);
  /* the base job, then what reads its stores (Multi, the merges), then the other settings */
  char multi[4096];
  for (size_t v = 0; v < NVARIANTS && !rc; v++) {
    if (!variant_on(&variants[v], mask)) continue;
    fprintf(stderr, "demo: ablation %d/%d: %s %s (%.0f s so far)\n", ++k, njobs, variants[v].sweep, variants[v].value,
            fc_now() - t0);
    rc = run_job(work, r, &variants[v], threads);
    if (v == 0 && !rc && (mask & SW_MULTI)) {
      fprintf(stderr, "demo: ablation Multi: one target on the pivot and both sources fused (%.0f s so far)\n",
              fc_now() - t0);
      rc = run_multi(work, r, threads, multi, sizeof multi);
    }
    if (v == 0 && !rc && (mask & (SW_MULTI | SW_MERGES))) {
      if (mask & SW_MERGES) fprintf(stderr, "demo: ablation merges of the base job's targets (%.0f s so far)\n", fc_now() - t0);
      rc = run_merges(work, !!(mask & SW_MERGES), (mask & SW_MULTI) ? multi : NULL, threads);
      extra = !rc;
    }
    if (!rc) done[v] = 1, rc = write_table(work, done, extra, mask, 0);
  }
  if (rc) return rc;
  rc = write_table(work, done, extra, mask, 1);
  if (!rc)
    fprintf(stderr, "demo: ablations finished in %.0f s: %s/ablations.txt, %s/plots/ablation-*.png\n", fc_now() - t0,
            work, work);
  return rc;
}
