/* The stage-parameter tables (see fc_schema.h) and the code that reads values through them.
 * Every default and range of a stage parameter is written here and nowhere else. */
#include "fc_schema.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "fc_num.h"

const char *fc_kv_get(const fc_kv_t *kv, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(kv[i].key, key)) return kv[i].val;
  return NULL;
}

#define STR(st, k, h) {.key = #k, .type = FC_PARAM_STR, .unit = "", .help = h, .off = offsetof(st, k)}
#define MAX_STEPS 1e9 /* optimizer steps and checkpoint periods */

/* Shared by the logits and align tables: one definition of top_k. */
#define TOP_K(st)                                                                                    \
  {.key = "top_k", .yaml = "top_k", .flag = "top-k", .sopt = 'k', .type = FC_PARAM_INT, .def = 10, .lo = 1, \
   .hi = FC_TOPK_MAX_K, .unit = "tokens", .help = "next tokens kept per position in the top-K stores",      \
   .off = offsetof(st, top_k)}
/* Shared by the logits and logits-import tables: an imported store must be cut where the pivot's is. */
#define MAX_LEN(st)                                                                                     \
  {.key = "max_len", .flag = "max-len", .sopt = 'l', .type = FC_PARAM_INT, .def = 4096, .lo = 1, .hi = 1 << 20, \
   .unit = "tokens", .help = "pivot tokens per example at most (a job sets it to training.seq_len)",            \
   .off = offsetof(st, max_len)}
#define SHARDS(st) \
  {.key = "shards", .type = FC_PARAM_INT, .def = 1, .lo = 1, .hi = 4096, .unit = "", .help = "shards the data is cut into", .off = offsetof(st, shards)}
#define SHARD(st) \
  {.key = "shard", .type = FC_PARAM_INT, .def = 0, .lo = 0, .hi = 4095, .unit = "", .help = "this task's shard (0-based)", .off = offsetof(st, shard)}
#define SOURCE_PIVOT(st)                                                                 \
  STR(st, source, "the source model's name"), STR(st, pivot, "the pivot model's name"), \
  STR(st, source_path, "the source model's directory (its tokenizer)"),                \
  STR(st, pivot_path, "the pivot model's directory (its tokenizer)")

static const fc_param_t JOB[] = {
    {.key = "name", .yaml = "name", .type = FC_PARAM_STR, .unit = "", .help = "the job's name (letters, digits, '.', '_', '-'; at most 64), required", .off = FC_PARAM_NOSTORE},
    {.key = "store", .yaml = "store", .type = FC_PARAM_STR, .unit = "", .help = "directory of every output, the job writes STORE/NAME/ (a shared filesystem across machines), required", .off = FC_PARAM_NOSTORE},
    {.key = "models", .yaml = "models", .type = FC_PARAM_LIST, .unit = "", .help = "[{name, path, role: pivot|source, logits}]: one pivot and at least one source; a source's logits: FILE (.jsonl or .safetensors, see fusectl logits-import) gives its top-K computed elsewhere, imported instead of run (with shards > 1 FILE has {shard}, the shard's number)", .off = FC_PARAM_NOSTORE},
    {.key = "dataset", .yaml = "dataset", .type = FC_PARAM_STR, .unit = "", .help = "the fusion set: JSONL conversations (ShareGPT conversations, or text), required with models", .off = FC_PARAM_NOSTORE},
    {.key = "eval", .yaml = "eval", .type = FC_PARAM_STR, .unit = "", .help = "held-out JSONL: every model gets an eval/NAME task and the job a results table", .off = FC_PARAM_NOSTORE},
    {.key = "shards", .yaml = "shards", .type = FC_PARAM_INT, .def = 1, .lo = 1, .hi = 4096, .unit = "", .help = "logits and alignment shards, spread over daemons", .off = offsetof(fc_job_params_t, shards)},
    {.key = "seed", .yaml = "seed", .type = FC_PARAM_U64, .def = 0, .lo = 0, .hi = (double)UINT64_MAX, .unit = "", .help = "seed of everything seeded; also the default of training.seed", .off = offsetof(fc_job_params_t, seed)},
    {.key = "max_attempts", .yaml = "max_attempts", .type = FC_PARAM_INT, .def = 3, .lo = 1, .hi = 100, .unit = "", .help = "attempts per task before the job fails", .off = offsetof(fc_job_params_t, max_attempts)},
    {.key = "parameters", .yaml = "merge.parameters", .type = FC_PARAM_MAP, .unit = "", .help = "the method's parameters, mergekit's names (select_topk, density, weight, t, lambda, gamma, epsilon, normalize, rescale, seed), checked at submit", .off = FC_PARAM_NOSTORE},
    {.key = "sft", .yaml = "baselines.sft", .type = FC_PARAM_BOOL, .def = 0, .unit = "", .help = "also plain SFT of the pivot on the same data (train/sft), evaluated like the others", .off = offsetof(fc_job_params_t, baseline_sft)},
    {.key = "merges", .yaml = "baselines.merges", .type = FC_PARAM_LIST, .unit = "", .help = "other merge methods of the same targets (merge/METHOD), each evaluated", .off = FC_PARAM_NOSTORE},
    {.key = "tasks", .yaml = "tasks", .type = FC_PARAM_LIST, .unit = "", .help = "instead of models: an explicit task list of {name, kind, cap, params, inputs, outputs, deps}; params of the kinds below are checked against their tables", .off = FC_PARAM_NOSTORE},
};

static const fc_param_t LOGITS[] = {
    STR(fc_logits_params_t, model, "the model's name in the job"),
    STR(fc_logits_params_t, pivot_path, "the pivot's directory: its chat template and cut apply to every model"),
    SHARD(fc_logits_params_t),
    SHARDS(fc_logits_params_t),
    TOP_K(fc_logits_params_t),
    MAX_LEN(fc_logits_params_t),
    {.key = "batch", .flag = "batch-size", .sopt = 'b', .type = FC_PARAM_INT, .def = 8, .lo = 1, .hi = 4096, .unit = "examples", .help = "examples per forward pass", .off = offsetof(fc_logits_params_t, batch)},
    {.key = "seed", .type = FC_PARAM_U64, .def = 0, .lo = 0, .hi = (double)UINT64_MAX, .unit = "", .help = "the job's seed (recorded; the stage is deterministic)", .off = offsetof(fc_logits_params_t, seed)},
};

/* A source whose top-K came from another tool (models[].logits): its file checked against the
 * fusion set and written as the store logits would have written. Only tokenizers are needed. */
static const fc_param_t LOGITS_IMPORT[] = {
    STR(fc_logits_import_params_t, model, "the model's name in the job"),
    STR(fc_logits_import_params_t, pivot_path, "the pivot's directory: its chat template and cut apply to every model"),
    SHARD(fc_logits_import_params_t),
    SHARDS(fc_logits_import_params_t),
    MAX_LEN(fc_logits_import_params_t),
    {.key = "model_id", .flag = "model-id", .sopt = 'n', .type = FC_PARAM_STR, .unit = "", .help = "name recorded in the store (default: the imported file)", .off = offsetof(fc_logits_import_params_t, model_id)},
    {.key = "seed", .type = FC_PARAM_U64, .def = 0, .lo = 0, .hi = (double)UINT64_MAX, .unit = "", .help = "the job's seed (recorded; the import is deterministic)", .off = offsetof(fc_logits_import_params_t, seed)},
};

static const fc_param_t VOCAB_MAP[] = {
    SOURCE_PIVOT(fc_vocab_map_params_t),
    {.key = "method", .yaml = "vocab_map", .flag = "method", .sopt = 'M', .type = FC_PARAM_ENUM, .sdef = "stats", .choices = "stats|mined|exact", .unit = "", .help = "vocabulary map: co-occurrence counts (stats), edit distance (mined) or exact", .off = offsetof(fc_vocab_map_params_t, method)},
};

static const fc_param_t ALIGN[] = {
    SOURCE_PIVOT(fc_align_params_t),
    SHARD(fc_align_params_t),
    TOP_K(fc_align_params_t),
    {.key = "fuse", .yaml = "fuse", .flag = "method", .sopt = 'M', .type = FC_PARAM_ENUM, .sdef = "mince", .choices = "mince|avgce|source", .unit = "", .help = "fusion of the aligned source with the pivot (source: the aligned source alone)", .off = offsetof(fc_align_params_t, fuse)},
};

#define TRAIN(k, ...) {.key = #k, .yaml = "training." #k, __VA_ARGS__, .off = offsetof(fc_train_params_t, k)}
static const fc_param_t TRAIN_P[] = {
    STR(fc_train_params_t, source, "the source model's name (sft: the baseline)"),
    STR(fc_train_params_t, pivot, "the pivot model's name"),
    {.key = "lambda", .yaml = "lambda", .flag = "lambda", .type = FC_PARAM_FLOAT, .def = 0.9, .lo = 0, .hi = 1, .unit = "", .help = "loss = lambda * CE(gold) + (1 - lambda) * CE(fused targets); no targets: CE alone", .off = offsetof(fc_train_params_t, lambda)},
    TRAIN(epochs, .flag = "epochs", .type = FC_PARAM_FLOAT, .def = 3, .lo = 0.001, .hi = 1000, .unit = "epochs", .help = "passes over the data (ignored with steps)"),
    TRAIN(lr, .flag = "lr", .type = FC_PARAM_FLOAT, .def = 5e-6, .lo = 0, .hi = 10, .unit = "", .help = "peak learning rate (AdamW)"),
    TRAIN(batch_size, .flag = "batch-size", .type = FC_PARAM_INT, .def = 8, .lo = 1, .hi = 65536, .unit = "rows", .help = "rows per micro-batch"),
    TRAIN(seq_len, .flag = "seq-len", .type = FC_PARAM_INT, .def = 2048, .lo = 2, .hi = 1 << 20, .unit = "tokens", .help = "longest row; the logits stage cuts examples at it too"),
    TRAIN(warmup, .flag = "warmup-ratio", .type = FC_PARAM_FLOAT, .def = 0.03, .lo = 0, .hi = 1, .unit = "", .help = "warm-up as a share of the steps"),
    TRAIN(weight_decay, .flag = "weight-decay", .type = FC_PARAM_FLOAT, .def = 0, .lo = 0, .hi = 10, .unit = "", .help = "decoupled weight decay on 2-D weights"),
    TRAIN(seed, .flag = "seed", .type = FC_PARAM_U64, .def = 0, .lo = 0, .hi = (double)UINT64_MAX, .unit = "", .help = "data order and initialisation (in a job: the job's seed unless given)"),
    TRAIN(steps, .flag = "steps", .type = FC_PARAM_INT, .def = 0, .lo = 0, .hi = MAX_STEPS, .unit = "steps", .help = "optimizer steps (0: from epochs)"),
    TRAIN(checkpoint_every, .flag = "checkpoint-every", .type = FC_PARAM_INT, .def = 20, .lo = 0, .hi = MAX_STEPS, .unit = "steps", .help = "checkpoint period, for resuming (0: only when stopped)"),
    TRAIN(checkpoint_activations, .flag = "checkpoint-activations", .type = FC_PARAM_BOOL, .def = 0, .unit = "", .help = "keep only each layer's input in the forward and recompute the layer in backward (about 1/3 more compute, far less activation memory)"),
    TRAIN(fused_optimizer, .flag = "fused-optimizer", .type = FC_PARAM_BOOL, .def = 0, .unit = "", .help = "step AdamW inside backward, each layer as soon as its gradients are final, so the whole gradient is never held (4 bytes per parameter less); clipping uses the previous step's norm; needs one rank and one micro-batch per step"),
    TRAIN(optimizer_dtype, .flag = "optimizer-dtype", .type = FC_PARAM_ENUM, .sdef = "F32", .choices = "F32|BF16", .unit = "", .help = "dtype of AdamW's moments; BF16 is stochastically rounded, parameters stay F32 (4 bytes per parameter less)"),
    TRAIN(ranks, .flag = "ranks", .type = FC_PARAM_INT, .def = 1, .lo = 1, .hi = FC_MAX_RANKS, .unit = "processes", .help = "data-parallel ranks (MPI: mpirun, or srun under Slurm); at most batch_size"),
};

static const fc_param_t MERGE[] = {
    {.key = "method", .yaml = "merge.method", .flag = "method", .sopt = 'm', .type = FC_PARAM_ENUM, .sdef = "sce",
     .choices = "sce|sce-mergekit|varm|linear|task_arithmetic|ties|dare_ties|dare_linear|breadcrumbs|breadcrumbs_ties|della|della_linear|slerp|nearswap|model_stock|nuslerp|multislerp|karcher|arcee_fusion|ram|ramplus_tl", .unit = "",
     .help = "merge method (sce: FuseChat's release, the selection sets the weights only; sce-mergekit: mergekit's, unselected deltas zeroed)", .off = offsetof(fc_merge_params_t, method)},
    {.key = "weight", .type = FC_PARAM_FLOAT, .def = 1, .lo = -100, .hi = 100, .unit = "", .help = "weight of every merged model", .off = offsetof(fc_merge_params_t, weight)},
    {.key = "density", .type = FC_PARAM_FLOAT, .def = -1, .lo = 0, .hi = 1, .unit = "", .help = "kept fraction of every model's deltas (default: 0.5 for ties and dare, else 1)", .off = offsetof(fc_merge_params_t, density)},
};

static const fc_param_t EVAL[] = {
    STR(fc_eval_params_t, model, "the model's name in the report"),
    STR(fc_eval_params_t, role, "pivot, source, target, sft, fused or merge"),
    {.key = "max_new_tokens", .flag = "max-new-tokens", .sopt = 'n', .type = FC_PARAM_INT, .def = 16, .lo = 1, .hi = 4096, .unit = "tokens", .help = "tokens generated per answer at most", .off = offsetof(fc_eval_params_t, max_new_tokens)},
    {.key = "batch_size", .flag = "batch-size", .sopt = 'b', .type = FC_PARAM_INT, .def = 32, .lo = 1, .hi = 4096, .unit = "prompts", .help = "prompts decoded together (results do not depend on it)", .off = offsetof(fc_eval_params_t, batch_size)},
    {.key = "limit", .flag = "limit", .type = FC_PARAM_INT, .def = 0, .lo = 0, .hi = 1e9, .unit = "rows", .help = "evaluate the first N rows of each family only (0: all)", .off = offsetof(fc_eval_params_t, limit)},
};

#define N(a) (sizeof a / sizeof *a)
static const fc_task_schema_t SCHEMAS[] = {
    {"job", "coordinator", "submit", JOB, N(JOB), sizeof(fc_job_params_t), 0},
    {"logits", "logits", "logits-dump", LOGITS, N(LOGITS), sizeof(fc_logits_params_t), 0},
    {"logits-import", "align", "logits-import", LOGITS_IMPORT, N(LOGITS_IMPORT), sizeof(fc_logits_import_params_t), 0},
    {"vocab-map", "align", "vocab-map", VOCAB_MAP, N(VOCAB_MAP), sizeof(fc_vocab_map_params_t), 0},
    {"align", "align", "fuse", ALIGN, N(ALIGN), sizeof(fc_align_params_t), 0},
    {"train", "train", "train", TRAIN_P, N(TRAIN_P), sizeof(fc_train_params_t), 0},
    {"merge", "merge", "merge", MERGE, N(MERGE), sizeof(fc_merge_params_t), 1},
    {"eval", "eval", "eval", EVAL, N(EVAL), sizeof(fc_eval_params_t), 0},
};

const fc_task_schema_t *fc_schema_all(size_t *n) {
  *n = N(SCHEMAS);
  return SCHEMAS;
}

const fc_task_schema_t *fc_schema_find(const char *kind) {
  for (size_t i = 0; kind && i < N(SCHEMAS); i++)
    if (!strcmp(SCHEMAS[i].kind, kind)) return &SCHEMAS[i];
  return NULL;
}

const char *fc_schema_daemon_of(const char *kind) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  return s && strcmp(kind, "job") ? s->daemon : NULL;
}

const fc_param_t *fc_schema_param(const fc_task_schema_t *s, const char *key) {
  for (size_t i = 0; i < s->nparams; i++)
    if (!strcmp(s->params[i].key, key)) return &s->params[i];
  return NULL;
}

#define AT(T) ((T *)((char *)out + p->off))
#define CAT(T) ((const T *)((const char *)in + p->off))

void fc_schema_defaults(const fc_task_schema_t *s, void *out) {
  memset(out, 0, s->size);
  for (size_t i = 0; i < s->nparams; i++) {
    const fc_param_t *p = &s->params[i];
    if (p->off == FC_PARAM_NOSTORE) continue;
    switch (p->type) {
    case FC_PARAM_INT: *AT(long) = (long)p->def; break;
    case FC_PARAM_U64: *AT(uint64_t) = (uint64_t)p->def; break;
    case FC_PARAM_FLOAT: *AT(double) = p->def; break;
    case FC_PARAM_BOOL: *AT(int) = p->def != 0; break;
    case FC_PARAM_STR:
    case FC_PARAM_ENUM: *AT(const char *) = p->sdef; break;
    default: break;
    }
  }
}

static int enum_has(const char *choices, const char *v) {
  size_t n = strlen(v);
  for (const char *c = choices; *c;) {
    const char *e = strchr(c, '|');
    size_t len = e ? (size_t)(e - c) : strlen(c);
    if (len == n && !memcmp(c, v, n)) return 1;
    c += len + (e != NULL);
  }
  return 0;
}

int fc_schema_set(const fc_param_t *p, const char *value, const char *what, void *out, fc_err_t *err) {
  long l;
  uint64_t u;
  double d;
  int b, rc = 0;
  switch (p->type) {
  case FC_PARAM_INT:
    if (!(rc = fc_num_long(value, (long)p->lo, (long)p->hi, &l, what, err)) && p->off != FC_PARAM_NOSTORE) *AT(long) = l;
    return rc;
  case FC_PARAM_U64:
    if (!(rc = fc_num_u64(value, 0, UINT64_MAX, &u, what, err)) && p->off != FC_PARAM_NOSTORE) *AT(uint64_t) = u;
    return rc;
  case FC_PARAM_FLOAT:
    if (!(rc = fc_num_double(value, p->lo, p->hi, &d, what, err)) && p->off != FC_PARAM_NOSTORE) *AT(double) = d;
    return rc;
  case FC_PARAM_BOOL:
    if (!(rc = fc_num_bool(value, &b, what, err)) && p->off != FC_PARAM_NOSTORE) *AT(int) = b;
    return rc;
  case FC_PARAM_ENUM:
    if (!enum_has(p->choices, value))
      return fc_err_set(err, FC_EINVAL, "%s is '%s', it must be one of %s", what, value, p->choices);
    /* fall through */
  case FC_PARAM_STR:
    if (!*value) return fc_err_set(err, FC_EINVAL, "%s is empty", what);
    if (p->off != FC_PARAM_NOSTORE) *AT(const char *) = value;
    return 0;
  default: return fc_err_set(err, FC_EINVAL, "%s must be a %s, not a plain value", what, fc_schema_type_name(p->type));
  }
}

static fc_schema_check_fn g_open_check;
void fc_schema_set_open_check(fc_schema_check_fn fn) { g_open_check = fn; }
int fc_schema_check_open(const char *key, const char *value, fc_err_t *err) {
  return g_open_check ? g_open_check(key, value, err) : 0;
}

int fc_schema_apply(const fc_task_schema_t *s, const fc_kv_t *kv, size_t n, void *out, fc_err_t *err) {
  for (size_t i = 0; i < n; i++) {
    const fc_param_t *p = fc_schema_param(s, kv[i].key);
    char what[160];
    snprintf(what, sizeof what, "%s parameter '%s'", s->kind, kv[i].key);
    if (!p) {
      if (s->open) continue; /* the method's own: the executor hands them on */
      char known[600] = "";
      size_t len = 0;
      for (size_t k = 0; k < s->nparams && len < sizeof known - 80; k++)
        len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", k ? ", " : "", s->params[k].key);
      return fc_err_set(err, FC_EINVAL, "unknown %s (known: %s)", what, known);
    }
    int rc = fc_schema_set(p, kv[i].val, what, out, err);
    if (rc) return rc;
  }
  return 0;
}

int fc_schema_parse(const char *kind, const fc_kv_t *kv, size_t n, void *out, fc_err_t *err) {
  const fc_task_schema_t *s = fc_schema_find(kind);
  if (!s) return fc_err_set(err, FC_EINVAL, "no parameter table for task kind '%s'", kind);
  fc_schema_defaults(s, out);
  return fc_schema_apply(s, kv, n, out, err);
}

const char *fc_schema_type_name(fc_param_type_t t) {
  static const char *const names[] = {"integer", "integer", "number", "boolean", "string", "choice", "list", "mapping"};
  return names[t];
}

static void fmt_num(const fc_param_t *p, double v, char *buf, size_t n) {
  if (p->type == FC_PARAM_FLOAT) fc_num_format_double(v, buf, (int)n);
  else if (p->type == FC_PARAM_U64 && v >= (double)UINT64_MAX) snprintf(buf, n, "2^64-1");
  else snprintf(buf, n, "%.0f", v);
}

void fc_schema_format_default(const fc_param_t *p, char *buf, size_t n) {
  switch (p->type) {
  case FC_PARAM_INT:
  case FC_PARAM_U64:
  case FC_PARAM_FLOAT:
    if (p->def < p->lo) snprintf(buf, n, "by method"); /* merge density */
    else fmt_num(p, p->def, buf, n);
    break;
  case FC_PARAM_BOOL: snprintf(buf, n, "%s", p->def ? "true" : "false"); break;
  case FC_PARAM_STR:
  case FC_PARAM_ENUM: snprintf(buf, n, "%s", p->sdef ? p->sdef : ""); break;
  default: snprintf(buf, n, "%s", ""); break;
  }
}

void fc_schema_format_range(const fc_param_t *p, char *buf, size_t n) {
  char lo[40], hi[40];
  switch (p->type) {
  case FC_PARAM_INT:
  case FC_PARAM_U64:
  case FC_PARAM_FLOAT:
    fmt_num(p, p->lo, lo, sizeof lo), fmt_num(p, p->hi, hi, sizeof hi);
    snprintf(buf, n, "[%s, %s]", lo, hi);
    break;
  case FC_PARAM_BOOL: snprintf(buf, n, "true|false"); break;
  case FC_PARAM_ENUM: snprintf(buf, n, "%s", p->choices); break;
  default: snprintf(buf, n, "%s", ""); break;
  }
}

void fc_schema_format_value(const fc_param_t *p, const void *in, char *buf, size_t n) {
  switch (p->type) {
  case FC_PARAM_INT: snprintf(buf, n, "%ld", *CAT(long)); break;
  case FC_PARAM_U64: snprintf(buf, n, "%" PRIu64, *CAT(uint64_t)); break;
  case FC_PARAM_FLOAT: fc_num_format_double(*CAT(double), buf, (int)n); break;
  case FC_PARAM_BOOL: snprintf(buf, n, "%s", *CAT(int) ? "true" : "false"); break;
  case FC_PARAM_STR:
  case FC_PARAM_ENUM: snprintf(buf, n, "%s", *CAT(const char *) ? *CAT(const char *) : ""); break;
  default: snprintf(buf, n, "%s", ""); break;
  }
}

/* One Markdown table cell and its closing bar; '|' inside would end the cell. */
static void md_cell(FILE *fp, const char *s, int code) {
  fputs(code && *s ? " `" : " ", fp);
  for (const char *c = s; *c; c++) {
    if (*c == '|') fputc('\\', fp);
    fputc(*c, fp);
  }
  fputs(code && *s ? "` |" : " |", fp);
}

/* JSON string body (the help texts are ASCII without control characters; quotes escaped). */
static void json_str(FILE *fp, const char *s) {
  fputc('"', fp);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', fp);
    fputc(*s, fp);
  }
  fputc('"', fp);
}

void fc_schema_reference(FILE *fp, int markdown) {
  if (markdown)
    fputs("| key | type | default | range | unit | stage (daemon) | meaning |\n"
          "| --- | --- | --- | --- | --- | --- | --- |\n",
          fp);
  else
    fputs("[", fp);
  int first = 1;
  for (size_t i = 0; i < N(SCHEMAS); i++)
    for (size_t k = 0; k < SCHEMAS[i].nparams; k++) {
      const fc_param_t *p = &SCHEMAS[i].params[k];
      if (!p->yaml) continue;
      int dup = 0; /* top_k feeds logits and align: listed once, at its first stage */
      for (size_t a = 0; a < i && !dup; a++)
        for (size_t b = 0; b < SCHEMAS[a].nparams && !dup; b++)
          dup = SCHEMAS[a].params[b].yaml && !strcmp(SCHEMAS[a].params[b].yaml, p->yaml);
      if (dup) continue;
      char def[64], range[160], stage[128];
      fc_schema_format_default(p, def, sizeof def);
      fc_schema_format_range(p, range, sizeof range);
      size_t len = 0;
      stage[0] = 0;
      for (size_t a = 0; a < N(SCHEMAS); a++)
        for (size_t b = 0; b < SCHEMAS[a].nparams; b++)
          if (SCHEMAS[a].params[b].yaml && !strcmp(SCHEMAS[a].params[b].yaml, p->yaml) && len < sizeof stage - 40)
            len += (size_t)snprintf(stage + len, sizeof stage - len, "%s%s (%s)", len ? ", " : "", SCHEMAS[a].kind,
                                    SCHEMAS[a].daemon);
      if (markdown) {
        fputc('|', fp);
        md_cell(fp, p->yaml, 1), md_cell(fp, fc_schema_type_name(p->type), 0), md_cell(fp, def, 1);
        md_cell(fp, range, 0), md_cell(fp, p->unit, 0), md_cell(fp, stage, 0), md_cell(fp, p->help, 0);
        fputc('\n', fp);
      } else {
        fprintf(fp, "%s\n  {\"key\": ", first ? "" : ",");
        json_str(fp, p->yaml);
        fprintf(fp, ", \"type\": \"%s\", \"default\": ", fc_schema_type_name(p->type));
        json_str(fp, def);
        fputs(", \"range\": ", fp);
        json_str(fp, range);
        fputs(", \"unit\": ", fp);
        json_str(fp, p->unit);
        fputs(", \"stage\": ", fp);
        json_str(fp, stage);
        fputs(", \"help\": ", fp);
        json_str(fp, p->help);
        fputs("}", fp);
      }
      first = 0;
    }
  if (!markdown) fputs("\n]\n", fp);
}
