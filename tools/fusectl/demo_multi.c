/* fusectl demo --experiment multi: a fusion experiment where the soft targets carry more than
 * the gold answer. The family is "pick" (name a letter of a word: several right answers); a
 * source trained on many draws spreads its answer over every right letter, while a row of the
 * fusion set holds one letter drawn at random. The pivot never saw the family. Evaluation
 * accepts any right letter and scores the probability of the whole set of them. One fusion job
 * per fusion-set size (the sweep) and lambda; one table per size, marks against the pivot and
 * against plain SFT on the same rows. Everything lives in WORK/multi. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"
#include "fc_eval.h"

/* The pivot knows the four single-answer families and not pick; the source is strong on pick.
 * Architectures and tokenizers as in the demo (llama byte-level BPE; qwen2 with its own). */
static const demo_model_t mmodels[] = {
    {"pivot", "pivot", "llama", FC_TOK_BYTELEVEL, 512, 128, 4, 4, 2, 352, "arith=1,convert=1,strings=1,facts=1", 0.5},
    {"src-pick", "source", "qwen2", FC_TOK_BYTELEVEL, 768, 160, 3, 5, 5, 448,
     "pick=6,strings=2,arith=1,convert=1,facts=1", 1.0},
};
#define NMM ((int)(sizeof mmodels / sizeof *mmodels))

static const demo_recipe_t mfull = {"multi", 12000, 500, 0, 200, 3, 2e-3, 32};
static const demo_recipe_t mquick = {"multi-quick", 2000, 80, 0, 24, 1, 1e-3, 16};

/* The sweep of fusion-set sizes: below, near and above what plain SFT needs to learn the
 * family from one drawn answer per prompt. */
static const int sweep_full[] = {64, 256, 1024};
static const int sweep_quick[] = {64};
static const double lambdas[] = {0.9, 0.5};
#define NLAMBDA 2

/* Targets train for about the same number of steps whatever the fusion-set size (a small set
 * is seen for many epochs): the sizes then differ in data, not in optimisation. */
static int epochs_for(const demo_recipe_t *r, int n) {
  int steps = r == &mquick ? 8 : 100;
  int e = (steps * r->batch + n - 1) / n;
  return e < r->target_epochs ? r->target_epochs : e;
}

/* In a second job (another lambda) only the fused target and its merge are new. */
static int keep_fused(const char *model, const void *ctx) {
  (void)ctx;
  return !strncmp(model, "target-", 7) || !strncmp(model, "merged-", 7);
}

static int run_job(const char *mwork, const demo_recipe_t *r, int n, int li, int threads) {
  char name[64], data[64], job[4096], run[4096];
  snprintf(name, sizeof name, "multi-%d-l%02d", n, (int)(lambdas[li] * 10 + 0.5));
  snprintf(data, sizeof data, "fusion-%d.jsonl", n);
  demo_job_t jo;
  demo_job_default(&jo, name);
  jo.lambda = lambdas[li];
  jo.models = mmodels, jo.nmodels = NMM, jo.dataset = data, jo.epochs = epochs_for(r, n);
  jo.baselines = li == 0 ? "" : NULL; /* plain SFT once per size: it does not depend on lambda */
  demo_pathf(job, sizeof job, "%s/%s.yaml", mwork, name);
  demo_pathf(run, sizeof run, "%s/run", mwork);
  fc_err_t err = {0};
  if (demo_write_job(mwork, r, &jo, job, &err)) return fc_cli_fail("demo", "%s", err.msg);
  int st = demo_run_job(job, run, threads, 1);
  return st ? fc_cli_fail("demo", "job %s failed (exit status %d)", name, st) : 0;
}

int demo_multi(const char *work, int quick, int threads, int fresh, int fusion_convs) {
  const demo_recipe_t *r = quick ? &mquick : &mfull;
  const int *sweep = quick ? sweep_quick : sweep_full;
  int nsweep = quick ? 1 : (int)(sizeof sweep_full / sizeof *sweep_full);
  if (fusion_convs) sweep = &fusion_convs, nsweep = 1;
  char mwork[4096], ddir[4096];
  demo_pathf(mwork, sizeof mwork, "%s/multi", work);
  demo_pathf(ddir, sizeof ddir, "%s/data", mwork);
  fc_err_t err = {0};
  double t0 = fc_now();
  int rc = fc_mkdir_p(ddir, &err);
  /* held out: pick only (the family the experiment is about); one answer per row drawn like the
   * training ones, every right one listed as valid */
  if (!rc) rc = demo_gen(ddir, "eval.jsonl", (size_t)r->eval_per_family, FC_GENDATA_EVAL, "pick=1", 12, 1, &err);
  for (int s = 0; s < nsweep && !rc; s++) {
    char name[64];
    snprintf(name, sizeof name, "fusion-%d.jsonl", sweep[s]);
    rc = demo_gen(ddir, name, (size_t)sweep[s], FC_GENDATA_TRAIN, "pick=1", 11, 1, &err);
  }
  for (int i = 0; i < NMM && !rc; i++) rc = demo_prepare_model(mwork, &mmodels[i], r, threads, fresh, 200 + (uint64_t)i, &err);
  if (rc) return fc_cli_fail("demo", "%s", err.msg);
  fprintf(stderr, "demo: multi: data and models ready in %.0f s\n", fc_now() - t0);
  for (int s = 0; s < nsweep && !rc; s++)
    for (int li = 0; li < NLAMBDA && !rc; li++) {
      fprintf(stderr, "demo: multi: fusion set of %d conversations (%d epochs), lambda %g (%.0f s so far)\n",
              sweep[s], epochs_for(r, sweep[s]), lambdas[li], fc_now() - t0);
      rc = run_job(mwork, r, sweep[s], li, threads);
    }
  if (rc) return rc;
  char out[4096];
  demo_pathf(out, sizeof out, "%s/multi.txt", mwork);
  FILE *f = fopen(out, "w");
  if (!f) return fc_cli_fail("demo", "cannot write %s", out);
  for (int s = 0; s < nsweep && !rc; s++) {
    demo_rows_t rows = {0};
    for (int li = 0; li < NLAMBDA && !rc; li++) {
      char path[4096], prefix[32];
      demo_pathf(path, sizeof path, "%s/store/multi-%d-l%02d/results.json", mwork, sweep[s],
                 (int)(lambdas[li] * 10 + 0.5));
      snprintf(prefix, sizeof prefix, "l%g:", lambdas[li]);
      rc = li ? demo_rows_add(&rows, path, prefix, keep_fused, NULL) : demo_rows_add(&rows, path, NULL, NULL, NULL);
    }
    if (!rc) {
      FILE *fps[2] = {stdout, f};
      for (int k = 0; k < 2; k++) {
        fprintf(fps[k], "\nFusion set: %d 'pick' conversations, %d epochs; rows without a prefix at lambda %g\n",
                sweep[s], epochs_for(r, sweep[s]), lambdas[0]);
        demo_rows_print(fps[k], &rows, "pivot", "sft");
      }
    }
    demo_rows_free(&rows);
  }
  fclose(f);
  fprintf(stderr, "demo: multi: finished in %.0f s; tables in %s\n", fc_now() - t0, out);
  return rc;
}
