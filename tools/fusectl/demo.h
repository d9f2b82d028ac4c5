/* fusectl demo's parts shared by the demo (cmd_demo.c) and its ablations (demo_ablate.c). */
#ifndef FC_DEMO_H
#define FC_DEMO_H

#include "fc_util.h"

/* Sizes of one version of the experiment (full or quick). */
typedef struct demo_recipe {
  const char *name;
  int pre_convs;      /* conversations each model is pre-trained on */
  int pre_steps;      /* optimizer steps of pre-training (scaled per model) */
  int fusion_convs;   /* the fusion set */
  int eval_per_family;
  int target_epochs;
  double target_lr;
  int batch;
} demo_recipe_t;

/* What a fusion job of the demo varies. */
typedef struct demo_job {
  const char *name;
  double lambda;
  int top_k;
  const char *fuse, *vocab_map;
  const char *baselines; /* merges besides the headline SCE, with plain SFT; NULL: none */
} demo_job_t;

void demo_pathf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Runs fusectl itself with argv (argv[0] "fusectl"); returns its exit status. */
int demo_run_self(char *const argv[]);
/* The data (fusion set, held-out set) and the three models under work (absolute), cached. */
int demo_prepare(const char *work, const demo_recipe_t *r, int threads, int fresh, fc_err_t *err);
/* The demo's settings (the paper's: lambda 0.9, K 10, MinCE, statistics map) under a name. */
void demo_job_default(demo_job_t *jo, const char *name);
int demo_write_job(const char *work, const demo_recipe_t *r, const demo_job_t *jo, const char *path, fc_err_t *err);
/* fusectl demo --ablations, after demo_prepare: returns the exit status. */
int demo_ablations(const char *work, const demo_recipe_t *r, int threads);

#endif
