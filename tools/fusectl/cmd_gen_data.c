/* fusectl gen-data: write the demo's generated chat tasks as ShareGPT JSONL. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_gendata.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl gen-data --out FILE [--count N] [--split train|eval] [--mix SPEC]\n"
          "                        [--seed S] [--world-seed W] [--max-turns T]\n"
          "\n"
          "Writes generated chat conversations, one JSON object per line:\n"
          "  {\"family\":F,\"conversations\":[{\"from\":\"human\",\"value\":Q},{\"from\":\"gpt\",\"value\":A}]}\n"
          "Families, each scored by exact match:\n"
          "  arith    sums and differences of numbers below 100\n"
          "  convert  unit conversions (km to m, h to min, ...)\n"
          "  strings  reverse a word, sort its letters, count a letter\n"
          "  facts    capitals, rulers and founding years of a generated world\n"
          "  pick     name a letter that occurs in a word: several right answers; training rows\n"
          "           hold one drawn at random, eval rows list every one (\"valid\"), and the\n"
          "           evaluation accepts any (not in the default mix)\n"
          "An item's split is a hash of its content, so the train and eval splits never share a\n"
          "prompt, whatever the counts and seeds. Facts are held out by phrasing: evaluation asks\n"
          "in words that training never used for that fact.\n"
          "\n"
          "Options:\n"
          "  --out FILE        where to write (atomically)\n"
          "  --count N         conversations to write (default 1000)\n"
          "  --split S         train (default) or eval; eval rows have one turn\n"
          "  --mix SPEC        family weights, e.g. arith=3,facts=1 (default: the first four equal)\n"
          "  --seed S          seed of the draws (default 1)\n"
          "  --world-seed W    seed of the facts' world; keep it fixed across splits (default 7)\n"
          "  --max-turns T     training conversations hold 1..T question/answer turns (default 1)\n"
          "  -h, --help        show this help\n");
}

int fc_cmd_gen_data(int argc, char **argv) {
  static const struct option opts[] = {
      {"out", required_argument, 0, 'o'},      {"count", required_argument, 0, 'n'},
      {"split", required_argument, 0, 's'},    {"mix", required_argument, 0, 'm'},
      {"seed", required_argument, 0, 'S'},     {"world-seed", required_argument, 0, 'W'},
      {"max-turns", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0}};
  fc_gendata_opts_t o = {.count = 1000, .split = FC_GENDATA_TRAIN, .seed = 1, .world_seed = 7, .max_turns = 1};
  for (int i = 0; i < FC_GENDATA_NCLASSIC; i++) o.mix[i] = 1;
  const char *out = NULL;
  fc_err_t err = {0};
  long v;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out = optarg; break;
    case 'n':
      if (fc_cli_parse_long(optarg, &v) || v < 0) return fc_cli_usage_error("gen-data", "--count needs a count");
      o.count = (size_t)v;
      break;
    case 's':
      if (!strcmp(optarg, "train")) o.split = FC_GENDATA_TRAIN;
      else if (!strcmp(optarg, "eval")) o.split = FC_GENDATA_EVAL;
      else return fc_cli_usage_error("gen-data", "--split is train or eval, not '%s'", optarg);
      break;
    case 'm':
      if (fc_gendata_parse_mix(optarg, o.mix, &err)) return fc_cli_usage_error("gen-data", "%s", err.msg);
      break;
    case 'S':
      if (fc_cli_parse_long(optarg, &v)) return fc_cli_usage_error("gen-data", "--seed needs an integer");
      o.seed = (uint64_t)v;
      break;
    case 'W':
      if (fc_cli_parse_long(optarg, &v)) return fc_cli_usage_error("gen-data", "--world-seed needs an integer");
      o.world_seed = (uint64_t)v;
      break;
    case 't':
      if (fc_cli_parse_long(optarg, &v) || v < 1 || v > 8) return fc_cli_usage_error("gen-data", "--max-turns is 1..8");
      o.max_turns = (int)v;
      break;
    case 'h': usage(stdout); return 0;
    default: return fc_cli_usage_error("gen-data", "unknown option");
    }
  }
  if (optind != argc) return fc_cli_usage_error("gen-data", "unexpected argument '%s'", argv[optind]);
  if (!out) return fc_cli_usage_error("gen-data", "--out is required");
  if (fc_gendata_write(&o, out, &err)) return fc_cli_fail("gen-data", "%s", err.msg);
  return 0;
}
