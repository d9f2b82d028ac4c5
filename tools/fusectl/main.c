/* fusectl: the one client of fusechat. Dispatches to a subcommand, like git. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

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

int fc_cli_parse_long(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

int fc_cli_parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

int fc_cmd_version(int argc, char **argv) {
  (void)argc;
  (void)argv;
  printf("fusectl %s\n", FC_VERSION);
  return 0;
}

/* Command names are C identifiers in the table; on the command line '_' is spelled '-'. */
static int cmd_name_eq(const char *arg, const char *name) {
  for (; *arg && *name; arg++, name++)
    if (*arg != *name && !(*arg == '-' && *name == '_')) return 0;
  return *arg == *name;
}

static void print_cmd_name(FILE *fp, const char *name) {
  char buf[64];
  size_t i = 0;
  for (; name[i] && i + 1 < sizeof buf; i++) buf[i] = name[i] == '_' ? '-' : name[i];
  buf[i] = 0;
  fprintf(fp, "  %-18s", buf);
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
    print_cmd_name(fp, commands[i].name);
    fprintf(fp, " %s\n", commands[i].summary);
  }
  fprintf(fp, "\nRun 'fusectl COMMAND --help' for a command's options.\n"
              "Exit status: 0 success, 1 failure, 2 usage error.\n");
}

int main(int argc, char **argv) {
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
    if (cmd_name_eq(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "fusectl: unknown command '%s'\nTry 'fusectl --help'.\n", argv[1]);
  return FC_EXIT_USAGE;
}
