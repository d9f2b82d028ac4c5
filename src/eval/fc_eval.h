/* Evaluation of a chat model on held-out prompts: greedy answers scored by exact match, and the
 * teacher-forced cross-entropy of the gold answers, per task family and overall (DESIGN §1.8). */
#ifndef FC_EVAL_H
#define FC_EVAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "fc_chat.h"
#include "fc_util.h"

/* Families are named by the data (a row's "family"), plus "all" for rows that name none. */
#define FC_EVAL_MAX_FAMILIES 8
#define FC_EVAL_FAMILY_NAME 16 /* bytes, the terminating zero included */
#define FC_EVAL_MAX_VALID 32   /* answers a row's "valid" list may hold */

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
  char name[FC_EVAL_FAMILY_NAME];
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

/* One scored row, kept for every run: what paired comparisons between models need. */
typedef struct fc_eval_item {
  char *id;       /* the row's "id", else its line ("LINE", or "FILE:LINE" from the second file on) */
  int family;     /* index into fc_eval_result_t.fam */
  int correct;
  double loss;    /* mean cross-entropy over the gold answer tokens (NAN when there are none) */
  int tokens;
} fc_eval_item_t;

typedef struct fc_eval_result {
  fc_eval_family_t fam[FC_EVAL_MAX_FAMILIES]; /* families in order of first appearance, "all" last */
  int nfam;
  fc_eval_family_t overall; /* micro: every row and every gold token counted once */
  double macro_accuracy;    /* mean of the family accuracies */
  double macro_loss;        /* mean of the family losses */
  double wall_seconds;      /* load + generation + loss */
  double gen_seconds;       /* in fc_generate_batch only */
  double loss_seconds;      /* in the teacher-forced forwards only */
  fc_eval_row_t *rows;      /* opts.keep_rows: one per scored row, in file order; else NULL */
  size_t nrows;
  fc_eval_item_t *items;    /* one per scored row, in file order */
  size_t nitems;
  char role[16];            /* the model's part in a job (pivot, source, sft, fused, merge); may be "" */
} fc_eval_result_t;

/* Exact match after trimming white space at both ends: how answers are scored. */
int fc_eval_match(const char *expected, const char *generated);

void fc_eval_result_free(fc_eval_result_t *r);

/* Loads the model and tokenizer in model_dir, reads the rows of the JSONL files (each a
 * ShareGPT record: the first human turn is the prompt, the gpt turn after it the answer;
 * "family" optional; "valid" optional: every right answer of a prompt that has several, the
 * gpt answer among them), and scores them. A row with "valid" counts as correct when the greedy
 * answer matches any of them, and its loss is -log of the probability of the whole set (each
 * answer's sequence probability, summed) per gold answer token. Bad rows (no gpt answer, unknown family, bad JSON) fail
 * the run with FILE:LINE in the message. progress (may be NULL) is called after each batch. */
int fc_eval_run(const char *model_dir, const char *const *data_paths, int npaths, const fc_eval_opts_t *opts,
                fc_progress_fn progress, void *pctx, fc_eval_result_t *result, fc_err_t *err);

/* One model's results as a JSON object (the fragment results.json holds per model):
 * {"model":NAME,"role":R (when set),"families":{F:{"n","correct","accuracy","loss","tokens","generated"}},
 *  "overall":{...},"macro_accuracy","macro_loss","wall_seconds","gen_seconds",
 *  "generated_tokens_per_second","items":[{"id","family","correct","loss","tokens"},...]}.
 * Returns 0, or FC_EIO if writing fails. */
int fc_eval_write_json(FILE *fp, const char *model_name, const fc_eval_result_t *r);
/* {"models":[fragment, ...]} written atomically to path. */
int fc_eval_write_json_file(const char *path, const char *const *model_names,
                            const fc_eval_result_t *const *results, int n, fc_err_t *err);

/* Reads one such object back (name borrowed from o); -1 when it is not one. */
int fc_eval_result_from_json(const json_t *o, const char **model_name, fc_eval_result_t *r);

/* The comparison tables (fc_eval_table.c): accuracy, then answer loss, one line per model, per
 * family and for the macro average the figure and its 95% bootstrap interval over items; a
 * mark where a paired bootstrap over the items both models answered finds the difference to a
 * reference model significant at 95%. ref_a / ref_b index the reference models (the pivot and
 * plain SFT in a job; -1: none). The same inputs print the same tables (fixed seeds). */
void fc_eval_print_table(FILE *fp, const char *const *model_names, const fc_eval_result_t *const *results, int n,
                         int ref_a, int ref_b);

/* Bootstrap over items (exposed for the tests): the resamples, the seed, the level. */
#define FC_EVAL_BOOT_RESAMPLES 2000
#define FC_EVAL_BOOT_SEED 20260u
/* Statistic of one family (by name) or the macro average (family NULL) of r: accuracy
 * (what == 0) or token-weighted answer loss (what == 1), and its 95% percentile interval;
 * returns the items used (0: none, the figures NAN). */
size_t fc_eval_boot_ci(const fc_eval_result_t *r, const char *family, int what, double *value, double *lo,
                       double *hi);
/* Paired: the difference a - b over the items both have (matched by id within the family),
 * its 95% interval; returns the pairs used (0: no comparison). */
size_t fc_eval_boot_paired(const fc_eval_result_t *a, const fc_eval_result_t *b, const char *family, int what,
                           double *diff, double *lo, double *hi);

#endif
