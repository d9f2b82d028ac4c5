/* Evaluation of a chat model on held-out prompts: greedy answers scored by exact match, and the
 * teacher-forced cross-entropy of the gold answers, per task family and overall (DESIGN §1.8). */
#ifndef FC_EVAL_H
#define FC_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fc_chat.h"
#include "fc_util.h"

/* Families are the fc_tasks ones plus "all" for rows that name none. */
#define FC_EVAL_MAX_FAMILIES 8

typedef struct fc_eval_opts {
  int max_new_tokens;          /* generated tokens per answer at most (default 16) */
  int batch_size;              /* prompts decoded together (default 32) */
  int threads;                 /* compute threads; 0 keeps the engine's default */
  fc_chat_template_t tmpl;     /* FC_CHAT_AUTO: from the tokenizer (ChatML if it has <|im_start|>) */
  int limit;                   /* rows per family at most (the first ones in file order); 0: all */
  int keep_rows;               /* fill fc_eval_result_t.rows (prompt, expected, got) */
} fc_eval_opts_t;

void fc_eval_opts_default(fc_eval_opts_t *o);

typedef struct fc_eval_family {
  char name[16];
  int n;               /* rows scored */
  int correct;         /* exact matches */
  double accuracy;     /* correct / n */
  double loss;         /* mean cross-entropy (nats) over gold answer tokens, end-of-turn included */
  long long tokens;    /* gold answer tokens in that mean */
  long long generated; /* tokens generated for these rows */
} fc_eval_family_t;

typedef struct fc_eval_row {
  int family;     /* index into fc_eval_result_t.fam */
  char *prompt;   /* the human turn */
  char *expected; /* the gpt answer */
  char *got;      /* the decoded greedy answer, cut at the end-of-turn token */
  int correct;
  int generated;  /* tokens generated (the end-of-turn token included when emitted) */
  int stopped;    /* 1 if the end of turn was reached, 0 if max_new_tokens cut it */
  double loss;    /* mean CE over this row's gold answer tokens */
  int tokens;
} fc_eval_row_t;

typedef struct fc_eval_result {
  fc_eval_family_t fam[FC_EVAL_MAX_FAMILIES]; /* families present, in fc_tasks order, "all" last */
  int nfam;
  fc_eval_family_t overall; /* micro: every row and every gold token counted once */
  double macro_accuracy;    /* mean of the family accuracies */
  double macro_loss;        /* mean of the family losses */
  double wall_seconds;      /* load + generation + loss */
  double gen_seconds;       /* in fc_generate_batch only */
  double loss_seconds;      /* in the teacher-forced forwards only */
  fc_eval_row_t *rows;      /* opts.keep_rows: one per scored row, in file order; else NULL */
  size_t nrows;
} fc_eval_result_t;

void fc_eval_result_free(fc_eval_result_t *r);

/* Loads the model and tokenizer in model_dir, reads the rows of the JSONL files (each a
 * ShareGPT record: the first human turn is the prompt, the gpt turn after it the answer;
 * "family" optional), and scores them. Bad rows (no gpt answer, unknown family, bad JSON) fail
 * the run with FILE:LINE in the message. progress (may be NULL) is called after each batch. */
int fc_eval_run(const char *model_dir, const char *const *data_paths, int npaths, const fc_eval_opts_t *opts,
                fc_progress_fn progress, void *pctx, fc_eval_result_t *result, fc_err_t *err);

/* One model's results as a JSON object (the fragment results.json holds per model):
 * {"model":NAME,"families":{F:{"n","correct","accuracy","loss","tokens","generated"}},
 *  "overall":{...},"macro_accuracy","macro_loss","wall_seconds","gen_seconds",
 *  "generated_tokens_per_second"}. Returns 0, or FC_EIO if writing fails. */
int fc_eval_write_json(FILE *fp, const char *model_name, const fc_eval_result_t *r);
/* {"models":[fragment, ...]} written atomically to path. */
int fc_eval_write_json_file(const char *path, const char *const *model_names,
                            const fc_eval_result_t *const *results, int n, fc_err_t *err);

/* The comparison table: one line per model; per family "acc% (correct/n) loss", then the
 * average (mean over families of accuracy and loss); columns aligned. Families are the union
 * over the results, in the order they first appear. */
void fc_eval_print_table(FILE *fp, const char *const *model_names, const fc_eval_result_t *const *results, int n);

#endif
