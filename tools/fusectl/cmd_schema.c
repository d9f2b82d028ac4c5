/* fusectl schema: the job spec reference, generated from the stage-parameter tables (the
 * README's "Job spec reference" table is this command's output). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fc_schema.h"

static void usage(FILE *fp) {
  fprintf(fp, "Usage: fusectl schema [--markdown | --json]\n"
              "\n"
              "Prints every key a job spec (fusectl submit, fusectl run) may set: its type, default,\n"
              "allowed range, unit, the stage and daemon it goes to, and what it means. The values come\n"
              "from the same tables that check a spec at submit, give the daemons their defaults and\n"
              "make the flags of the offline commands, so they cannot disagree.\n"
              "\n"
              "Options:\n"
              "  --markdown   a Markdown table (default; the README's job spec reference)\n"
              "  --json       a JSON array of {key, type, default, range, unit, stage, help}\n"
              "  -h, --help   this text\n");
}

int fc_cmd_schema(int argc, char **argv) {
  static const struct option opts[] = {
      {"markdown", no_argument, 0, 'm'}, {"json", no_argument, 0, 'J'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  int c, markdown = 1;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': markdown = 1; break;
    case 'J': markdown = 0; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default: return fc_cli_usage_error("schema", "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return fc_cli_usage_error("schema", "unexpected argument '%s'", argv[optind]);
  fc_schema_reference(stdout, markdown);
  return FC_EXIT_OK;
}
