/* What every fusectl subcommand shares: the command table, exit codes and error printing. */
#ifndef FC_CLI_H
#define FC_CLI_H

#include <stdint.h>

#include "fc_chat.h"
#include "fc_util.h"

/* Exit codes: 0 success, 1 the work failed (bad file, I/O, remote error), 2 bad usage. */
enum { FC_EXIT_OK = 0, FC_EXIT_FAIL = 1, FC_EXIT_USAGE = 2 };

typedef struct fc_cmd {
  const char *name;
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
  const char *summary;
} fc_cmd_t;

/* Prints "fusectl CMD: message" and a pointer to --help; returns FC_EXIT_USAGE. */
int fc_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "fusectl CMD: message"; returns FC_EXIT_FAIL. */
int fc_cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses a whole decimal/float argument; returns 0 on success. */
int fc_cli_parse_long(const char *s, long *out);
int fc_cli_parse_double(const char *s, double *out);
/* Token ids separated by spaces or commas ("1 2 3", "1,2,3") into a malloc'ed array; returns
 * 0 on success, -1 on anything that is not a non-negative integer list (then *out is NULL). */
int fc_cli_parse_ids(const char *s, int32_t **out, int *n);

/* "I/N" (0 <= I < N) into *i, *n; returns 0 on success, -1 otherwise. */
int fc_cli_parse_shard(const char *s, uint32_t *i, uint32_t *n);
/* A stage command's --shard I/N and its chat template flag (named by flag): 0, or non-zero
 * after saying what the flag takes (the caller exits FC_EXIT_USAGE). */
int fc_cli_shard_option(const char *cmd, const char *arg, uint32_t *i, uint32_t *n);
int fc_cli_template_option(const char *cmd, const char *flag, const char *arg, fc_chat_template_t *t);
/* An fc_progress_fn drawing ctx, an fc_progress_t started with total 1, on stderr. Never
 * cancels. */
int fc_cli_progress(void *ctx, double fraction, const char *message);

/* The subcommands, one file each under tools/fusectl/. */
#define FC_COMMANDS(X) \
  X(align, "show the token alignment of one text under two tokenizers") \
  X(artifacts, "list the files a job wrote, with SHA-256") \
  X(cancel, "cancel a job") \
  X(down, "stop what 'fusectl up' started") \
  X(fuse, "align source top-K stores onto the pivot and fuse them into training targets") \
  X(eval, "score models on held-out prompts: exact match and loss per task family") \
  X(demo, "run the built-in fusion experiment end to end and print its table") \
  X(gen_data, "write generated chat tasks (the demo data) as JSONL") \
  X(inspect, "list the tensors of a safetensors file or model directory") \
  X(generate, "continue a prompt with a model (greedy or sampled)") \
  X(keygen, "make a CURVE key pair for TCP deployments") \
  X(list, "list jobs") \
  X(logits, "top-K next-token log-probabilities of a model at every position") \
  X(logits_dump, "run a model over a chat dataset shard into a top-K store") \
  X(logits_import, "top-K distributions computed elsewhere (JSONL, safetensors) into a top-K store") \
  X(logs, "print a job's event log") \
  X(merge, "merge models of one architecture (sce, varm, ties, dare, slerp, linear...)") \
  X(query, "ask a logits daemon directly for top-K next-token log-probs") \
  X(plot, "draw the loss curves of a job's training tasks as PNG (gnuplot)") \
  X(report, "the evaluation table of a job (and its results.json)") \
  X(retry, "re-queue a failed or cancelled job or task") \
  X(rm, "delete a finished job: its records and its outputs in the store") \
  X(run, "run a job spec on this machine: up, submit, watch, report, down") \
  X(slurm, "run a job on a Slurm cluster: workers as sbatch jobs, training as srun steps") \
  X(schema, "print the job spec reference: every stage parameter, its default and range") \
  X(status, "show jobs and their tasks by stage") \
  X(submit, "submit a job spec (YAML) to the coordinator") \
  X(tokenize, "token ids of texts with a model's tokenizer (or --decode ids)") \
  X(tokenizer_train, "train a byte-level or SentencePiece-style BPE tokenizer.json") \
  X(train, "train or fine-tune a model (AdamW, fusion loss, checkpoints, resume)") \
  X(up, "start a coordinator and stage daemons on this machine") \
  X(version, "print the version") \
  X(vocab_map, "count aligned token pairs and map a source vocabulary onto the pivot's") \
  X(watch, "follow a job's events until it ends") \
  X(workers, "list the registered stage daemons")

#define FC_DECLARE_CMD(name, summary) int fc_cmd_##name(int argc, char **argv);
FC_COMMANDS(FC_DECLARE_CMD)
#undef FC_DECLARE_CMD

#endif
