/* fusectl demo's parts shared by the demo (cmd_demo.c) and its ablations (demo_ablate.c). */
#ifndef FC_DEMO_H
#define FC_DEMO_H

#include <stdio.h>

#include "fc_eval.h"
#include "fc_gendata.h"
#include "fc_tok.h"
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

/* One model of an experiment: its tokenizer, its architecture and what it is trained on. */
typedef struct demo_model {
  const char *name, *role;
  const char *type;      /* llama, qwen2, mistral */
  fc_tok_kind_t tok;     /* byte-level or SentencePiece-style BPE */
  int vocab;             /* BPE vocabulary, before the two ChatML tokens */
  int hidden, layers, heads, kv_heads, ffn;
  const char *mix;       /* families it is trained on, weighted */
  double steps_scale;    /* share of the recipe's pre-training steps */
} demo_model_t;

/* What a fusion job of the demo varies. */
typedef struct demo_job {
  const char *name;
  double lambda;
  int top_k;
  const char *fuse, *vocab_map;
  const char *baselines; /* merges besides the headline SCE, with plain SFT; NULL: none */
  /* 0/NULL: the demo's (three models, data/fusion.jsonl, the recipe's epochs) */
  const demo_model_t *models;
  int nmodels;
  const char *dataset; /* under WORK/data */
  int epochs;
} demo_job_t;

void demo_pathf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Runs fusectl itself with argv (argv[0] "fusectl"); returns its exit status. */
int demo_run_self(char *const argv[]);
/* `fusectl run JOB --local --run-dir RUN --threads N [--quiet]` in a child: its exit status. The
 * job's daemons get the caller's thread count, so its sums do not change with the core count. */
int demo_run_job(const char *job, const char *run, int threads, int quiet);
/* The data (fusion set, held-out set) and the three models under work (absolute), cached. */
int demo_prepare(const char *work, const demo_recipe_t *r, int threads, int fresh, fc_err_t *err);
/* Writes WORK/data/NAME: count conversations of the mix (1..max_turns turns each), world 7. */
int demo_gen(const char *dir, const char *name, size_t count, fc_gendata_split_t split, const char *mix, uint64_t seed,
             int max_turns, fc_err_t *err);
/* Pre-trains one model from scratch into WORK/models/NAME on its own generated data (drawn
 * with seed); skipped when a model with the same recipe is there. */
int demo_prepare_model(const char *work, const demo_model_t *dm, const demo_recipe_t *r, int threads, int fresh,
                       uint64_t seed, fc_err_t *err);
/* The demo's settings (the paper's: lambda 0.9, K 10, MinCE, statistics map) under a name. */
void demo_job_default(demo_job_t *jo, const char *name);
int demo_write_job(const char *work, const demo_recipe_t *r, const demo_job_t *jo, const char *path, fc_err_t *err);
/* The rows of a table of several results files (demo_rows.c): names owned, results owned. */
typedef struct demo_rows {
  char **names;
  fc_eval_result_t *res;
  int n;
} demo_rows_t;
/* Whether a model of a results file joins the rows (ctx: the caller's). */
typedef int (*demo_keep_fn)(const char *model, const void *ctx);
/* Adds the models of a results.json (a job's or fusectl eval --json's) that keep accepts (every
 * one when keep is NULL), named PREFIX MODEL (prefix may be NULL). Returns 0 or the exit status. */
int demo_rows_add(demo_rows_t *rows, const char *path, const char *prefix, demo_keep_fn keep, const void *ctx);
/* The index of the row called name, -1 if none. */
int demo_rows_find(const demo_rows_t *rows, const char *name);
/* fc_eval_print_table of the rows, marks against the rows named pivot and sft (if there). */
void demo_rows_print(FILE *fp, const demo_rows_t *rows, const char *pivot, const char *sft);
void demo_rows_free(demo_rows_t *rows);

/* fusectl demo --experiment multi: returns the exit status. fusion_convs 0: the sweep. */
int demo_multi(const char *work, int quick, int threads, int fresh, int fusion_convs);
/* The parts of --ablations (--sweeps): a bit per name of DEMO_SWEEP_NAMES, in that order. */
#define DEMO_SWEEP_NAMES "lambda, top_k, fuse, vocab_map, multi, merges"
#define DEMO_SWEEPS_ALL 0x3fu
/* Parses a comma-separated list of those names into *mask; -1 on an unknown or empty one. */
int demo_ablation_sweeps(const char *list, unsigned *mask);
/* fusectl demo --ablations, after demo_prepare: the base job and the parts in sweeps; returns
 * the exit status. */
int demo_ablations(const char *work, const demo_recipe_t *r, int threads, unsigned sweeps);

#endif
