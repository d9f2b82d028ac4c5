/* The stage-parameter schema: one table per task kind (logits, logits-import, vocab-map, align,
 * train, merge, eval) giving each parameter's key, type, default, range, unit and help, the job YAML key that
 * sets it, the flag of the matching offline fusectl command, and the daemon that runs the kind.
 * Job validation (fc_job.c), the typed option structs the daemons receive, the fusectl flags and
 * --help lines, `fusectl run --local`'s kind -> daemon mapping and the README's job reference
 * (`fusectl schema`) all read these tables, so each default and each limit is written once. */
#ifndef FC_SCHEMA_H
#define FC_SCHEMA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fc_limits.h"
#include "fc_msg.h"
#include "fc_util.h"

/* A task's parameters as the wire and the database carry them: text keys and values. */
typedef fc_msg_kv_t fc_kv_t;
const char *fc_kv_get(const fc_kv_t *kv, size_t n, const char *key);

typedef enum {
  FC_PARAM_INT,   /* long */
  FC_PARAM_U64,   /* uint64_t */
  FC_PARAM_FLOAT, /* double */
  FC_PARAM_BOOL,  /* int, 0 or 1 */
  FC_PARAM_STR,   /* const char *, borrowed from the task's params (or the default) */
  FC_PARAM_ENUM,  /* const char *, one of choices */
  FC_PARAM_LIST,  /* job spec structure only (documented, not stored) */
  FC_PARAM_MAP,
} fc_param_type_t;

typedef struct fc_param {
  const char *key;     /* the task parameter ("top_k") */
  const char *yaml;    /* the job YAML key that sets it ("top_k", "training.lr"); NULL: none */
  const char *flag;    /* the offline fusectl command's flag, without "--"; NULL: none */
  char sopt;           /* its short form ('k' for -k), 0: none */
  fc_param_type_t type;
  double def, lo, hi;  /* numeric default and range (BOOL: def only) */
  const char *sdef;    /* STR/ENUM default; NULL: no default (absent stays NULL) */
  const char *choices; /* ENUM: "stats|mined|exact" */
  const char *unit;    /* "tokens", "steps", "" */
  const char *help;
  size_t off;          /* where it lives in the kind's typed struct; FC_PARAM_NOSTORE: nowhere */
} fc_param_t;

#define FC_PARAM_NOSTORE SIZE_MAX

typedef struct fc_task_schema {
  const char *kind;    /* the task kind ("train"); "job" for the job spec's own keys */
  const char *daemon;  /* the daemon program that runs it, fusechat-DAEMON ("train") */
  const char *command; /* the offline fusectl command ("train"), NULL: none */
  const fc_param_t *params;
  size_t nparams;
  size_t size; /* of the typed struct */
  int open;    /* params not in the table go on to the method (merge: its own parameters) */
} fc_task_schema_t;

/* ---- the typed option structs (what a task's params parse to) ---- */

typedef struct fc_logits_params {
  const char *model, *pivot_path;
  long shard, shards, top_k, max_len, batch;
  uint64_t seed;
} fc_logits_params_t;

typedef struct fc_logits_import_params {
  const char *model, *pivot_path, *model_id;
  long shard, shards, max_len;
  uint64_t seed;
} fc_logits_import_params_t;

typedef struct fc_vocab_map_params {
  const char *source, *pivot, *source_path, *pivot_path, *method;
} fc_vocab_map_params_t;

typedef struct fc_align_params {
  const char *source, *pivot, *source_path, *pivot_path, *fuse;
  long shard, top_k;
} fc_align_params_t;

typedef struct fc_train_params {
  const char *source, *pivot;
  double lambda, epochs, lr, warmup, weight_decay;
  long batch_size, seq_len, steps, checkpoint_every; /* steps 0: from epochs */
  long ranks; /* data-parallel processes (1: in the daemon's own process) */
  uint64_t seed;
  int checkpoint_activations;  /* recompute each layer in backward */
  int fused_optimizer;         /* AdamW stepped inside backward, per layer */
  const char *optimizer_dtype; /* AdamW moments: "F32" or "BF16" (a dtype name) */
} fc_train_params_t;

typedef struct fc_merge_params {
  const char *method;
  double weight, density; /* density < 0: the method's default (fc_merge_params_density) */
} fc_merge_params_t;

typedef struct fc_eval_params {
  const char *model, *role;
  long max_new_tokens, batch_size, limit;
} fc_eval_params_t;

/* The job spec's own keys (the reference documents them beside the stage parameters). */
typedef struct fc_job_params {
  long shards, max_attempts;
  uint64_t seed; /* also the default of training.seed */
  int baseline_sft;
} fc_job_params_t;

/* ---- the tables ---- */

const fc_task_schema_t *fc_schema_all(size_t *n);
/* The table of a task kind ("train", "vocab-map", "job"), or NULL. */
const fc_task_schema_t *fc_schema_find(const char *kind);
const fc_param_t *fc_schema_param(const fc_task_schema_t *s, const char *key);

/* out (s->size bytes) gets every default. */
void fc_schema_defaults(const fc_task_schema_t *s, void *out);
/* Parses one value into out with p's type and range; the message names what ("'top_k'",
 * "--top-k") with the value and the allowed range. */
int fc_schema_set(const fc_param_t *p, const char *value, const char *what, void *out, fc_err_t *err);
/* Applies a task's params over out (already holding the defaults): unknown keys are an error
 * unless the schema is open. */
int fc_schema_apply(const fc_task_schema_t *s, const fc_kv_t *kv, size_t n, void *out, fc_err_t *err);
/* s's defaults, then kind's params: what a task executor starts with. */
int fc_schema_parse(const char *kind, const fc_kv_t *kv, size_t n, void *out, fc_err_t *err);

/* Text forms for help lines and references: "10", "[1, 256]", "stats|mined|exact", "integer". */
void fc_schema_format_default(const fc_param_t *p, char *buf, size_t n);
void fc_schema_format_range(const fc_param_t *p, char *buf, size_t n);
/* The value at p in a typed struct, as a task parameter's text ("" for an unset string). */
void fc_schema_format_value(const fc_param_t *p, const void *in, char *buf, size_t n);
const char *fc_schema_type_name(fc_param_type_t t);

/* Merge methods' own parameters are checked by the merge floor, which the runtime does not
 * include: the programs on top (fusectl, the coordinator) register its checker here. */
typedef int (*fc_schema_check_fn)(const char *key, const char *value, fc_err_t *err);
void fc_schema_set_open_check(fc_schema_check_fn fn);
/* Checks one parameter of an open schema that is not in its table (0 when no checker). */
int fc_schema_check_open(const char *key, const char *value, fc_err_t *err);

/* The job YAML reference: every job key with its type, default, range, unit, the stage and
 * daemon it goes to, and help. markdown: the README's table; else JSON. */
void fc_schema_reference(FILE *fp, int markdown);

/* The daemon that runs a task kind ("vocab-map" -> "align"), or NULL for an unknown kind. */
const char *fc_schema_daemon_of(const char *kind);

#endif
