/* Job specs: a YAML file naming the models, data, hyper-parameters and merge method, expanded into
 * the task DAG of DESIGN.md section 2 (logits -> vocab-map -> align -> train -> merge -> eval), or
 * an explicit `tasks:` list (what the tests and custom jobs use). With `eval:`, every model (pivot,
 * sources, targets, baselines, the fused merge) gets its own eval/NAME task writing eval/NAME.json. */
#ifndef FC_JOB_H
#define FC_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "fc_schema.h"
#include "fc_util.h"

typedef enum { FC_ROLE_PIVOT, FC_ROLE_SOURCE } fc_role_t;

typedef struct fc_job_model {
  char *name, *path;
  char *logits; /* a source's top-K computed elsewhere ("{shard}" per shard), NULL: run it */
  fc_role_t role;
} fc_job_model_t;

typedef struct fc_job_task {
  char *name; /* unique in the job: "logits/pivot/0", "align/s1/2", "merge" */
  char *kind; /* what the executor does: logits, vocab-map, align, train, merge, eval, ... */
  char *cap;  /* the capability a worker needs: "logits:MODEL" for logits, else the kind */
  fc_kv_t *params;
  size_t nparams;
  char **inputs;
  size_t ninputs;
  char **outputs; /* under the job directory, deterministic */
  size_t noutputs;
  size_t *deps; /* indices of earlier tasks */
  size_t ndeps;
} fc_job_task_t;

typedef struct fc_job {
  char *name;
  char *store; /* store directory; the job's files go under store/name */
  char *dir;   /* store/name */
  char *dataset, *eval;
  fc_job_model_t *models;
  size_t nmodels;
  /* the stage parameters, typed through the schema: defaults, then what the spec gives */
  fc_job_params_t opts;
  fc_logits_params_t logits;
  fc_vocab_map_params_t vmap;
  fc_align_params_t align;
  fc_train_params_t train;
  fc_merge_params_t merge;
  fc_kv_t *given; /* the YAML paths of the stage parameters the spec gave, and their text */
  size_t ngiven;
  int max_attempts;
  char *merge_method;
  fc_kv_t *merge_params;
  size_t nmerge_params;
  /* baselines: {sft: true, merges: [...]}: train/sft (lambda 1, no fused targets) and
   * merge/METHOD over the same targets; each is evaluated like every other model */
  char **baseline_merges;
  size_t nbaseline_merges;
  fc_job_task_t *tasks; /* the expanded DAG, in an order where deps come first */
  size_t ntasks;
} fc_job_t;

/* Parses and validates a job YAML (`source` names it in error messages, "FILE:LINE:COL: ...")
 * and expands its DAG. */
int fc_job_parse(const char *text, size_t len, const char *source, fc_job_t **out, fc_err_t *err);
void fc_job_destroy(fc_job_t **job);
/* Index of a task by name, or -1. */
long fc_job_find_task(const fc_job_t *job, const char *name);

#endif
