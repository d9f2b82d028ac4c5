/* What every fusectl subcommand shares: the command table, exit codes and error printing. */
#ifndef FC_CLI_H
#define FC_CLI_H

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

/* The subcommands, one file each under tools/fusectl/. */
#define FC_COMMANDS(X) \
  X(gen_data, "write generated chat tasks (the demo data) as JSONL") \
  X(inspect, "list the tensors of a safetensors file or model directory") \
  X(tokenize, "token ids of texts with a model's tokenizer (or --decode ids)") \
  X(tokenizer_train, "train a byte-level or SentencePiece-style BPE tokenizer.json") \
  X(train, "train or fine-tune a model (AdamW, fusion loss, checkpoints, resume)") \
  X(version, "print the version")

#define FC_DECLARE_CMD(name, summary) int fc_cmd_##name(int argc, char **argv);
FC_COMMANDS(FC_DECLARE_CMD)
#undef FC_DECLARE_CMD

#endif
