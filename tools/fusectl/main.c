/* fusectl: the one client of fusechat. Dispatches to a subcommand, like git. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_merge_check.h"
#include "fc_num.h"
#include "fc_schema.h"

#define FC_TABLE_ROW(name, summary) {#name, fc_cmd_##name, summary},
static const fc_cmd_t commands[] = {FC_COMMANDS(FC_TABLE_ROW)};
#undef FC_TABLE_ROW

int fc_cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fusectl %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nTry 'fusectl %s --help'.\n", cmd);
  va_end(ap);
  return FC_EXIT_USAGE;
}

int fc_cli_fail(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fusectl %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return FC_EXIT_FAIL;
}

/* Thin wrappers over fc_num (the one number parser): the callers check their own ranges. */
int fc_cli_parse_long(const char *s, long *out) { return fc_num_long(s, LONG_MIN, LONG_MAX, out, "", NULL) ? -1 : 0; }

int fc_cli_parse_double(const char *s, double *out) {
  return fc_num_double(s, -HUGE_VAL, HUGE_VAL, out, "", NULL) ? -1 : 0;
}

int fc_cli_parse_shard(const char *s, uint32_t *i, uint32_t *n) {
  char *end;
  errno = 0;
  unsigned long a = strtoul(s, &end, 10);
  if (errno || end == s || *end != '/' || *s == '-') return -1;
  const char *t = end + 1;
  unsigned long b = strtoul(t, &end, 10);
  if (errno || end == t || *end || *t == '-' || b == 0 || a >= b || b > 1000000) return -1;
  *i = (uint32_t)a;
  *n = (uint32_t)b;
  return 0;
}

int fc_cli_shard_option(const char *cmd, const char *arg, uint32_t *i, uint32_t *n) {
  if (fc_cli_parse_shard(arg, i, n) == 0) return 0;
  return fc_cli_usage_error(cmd, "--shard needs I/N with 0 <= I < N, not '%s'", arg);
}

int fc_cli_template_option(const char *cmd, const char *flag, const char *arg, fc_chat_template_t *t) {
  if (fc_chat_template_parse(arg, t) == 0) return 0;
  return fc_cli_usage_error(cmd, "%s is chatml, llama2 or auto, not '%s'", flag, arg);
}

int fc_cli_progress(void *ctx, double fraction, const char *message) {
  fc_progress_update(ctx, fraction, message);
  return 0;
}

int fc_cmd_version(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("Usage: fusectl version\n\nPrints the version of fusectl.\n");
    return 0;
  }
  if (argc > 1) return fc_cli_usage_error("version", "takes no arguments");
  printf("fusectl %s\n", FC_VERSION);
  return 0;
}

/* Table names are C identifiers; on the command line '_' is written '-' (gen_data = gen-data). */
static int name_matches(const char *table, const char *arg) {
  for (; *table && *arg; table++, arg++)
    if (*table != *arg && !(*table == '_' && *arg == '-')) return 0;
  return *table == *arg;
}

int fc_cli_parse_ids(const char *s, int32_t **out, int *n) {
  *out = NULL;
  *n = 0;
  int cap = 16, k = 0;
  int32_t *v = fc_xmalloc((size_t)cap * sizeof *v);
  const char *p = s;
  for (;;) {
    while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
    if (!*p) break;
    if (*p < '0' || *p > '9') goto bad;
    char *end;
    errno = 0;
    long x = strtol(p, &end, 10);
    if (errno || x > INT32_MAX || (*end && *end != ' ' && *end != ',' && *end != '\t' && *end != '\n')) goto bad;
    if (k == cap) v = fc_xrealloc(v, (size_t)(cap *= 2) * sizeof *v);
    v[k++] = (int32_t)x;
    p = end;
  }
  *out = v;
  *n = k;
  return 0;
bad:
  free(v);
  return -1;
}

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl COMMAND [OPTIONS] [ARGS]\n"
          "\n"
          "fusectl drives fusechat: knowledge fusion of chat language models. It works on\n"
          "Hugging Face model directories (config.json, *.safetensors, tokenizer.json) and\n"
          "talks to the fusechat daemons.\n"
          "\nCommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
  {
    char name[32];
    snprintf(name, sizeof name, "%s", commands[i].name);
    for (char *c = name; *c; c++)
      if (*c == '_') *c = '-';
    fprintf(fp, "  %-18s %s\n", name, commands[i].summary);
  }
  fprintf(fp, "\nRun 'fusectl COMMAND --help' for a command's options.\n"
              "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv) {
  fc_schema_set_open_check(fc_merge_check_param); /* merge.parameters of job specs */
  if (argc < 2) {
    usage(stderr);
    return FC_EXIT_USAGE;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) return fc_cmd_version(0, NULL);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (name_matches(commands[i].name, argv[1])) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "fusectl: unknown command '%s'\nTry 'fusectl --help'.\n", argv[1]);
  return FC_EXIT_USAGE;
}
