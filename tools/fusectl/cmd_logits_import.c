/* fusectl logits-import: top-K distributions computed by another tool (any model, any
 * architecture) into our top-K store, checked against the fusion set (fc_stage_logits_import). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_schema.h"
#include "fc_stage.h"
#include "fc_topk.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl logits-import --source DIR --data FILE.jsonl --in FILE --out FILE.topk [OPTIONS]\n"
          "\n"
          "Turns top-K next-token distributions that another tool computed into the top-K store\n"
          "'fusectl logits-dump' writes, so that any model can be a fusion source. FILE holds one\n"
          "example per row of the fusion set (or of its shard), in order: the token ids of the\n"
          "row's text under the source's tokenizer and, at every position, up to K next-token ids\n"
          "with their log-probabilities (natural log, log-softmax over the whole vocabulary).\n"
          "\n"
          "Layouts, told by the name's ending:\n"
          "  .jsonl        one object per line:\n"
          "                {\"ids\": [n ids], \"topk_ids\": [n lists of up to K ids],\n"
          "                 \"topk_logprobs\": [n lists of their log-probs],\n"
          "                 \"target_logprobs\": [n values log p(ids[i+1])]   (optional)}\n"
          "                K is the longest list of the first line.\n"
          "  .safetensors  the examples' tokens concatenated (N tokens):\n"
          "                offsets [E+1] (I32/I64), ids [N] (I32/I64), topk_ids [N,K] (I32/I64,\n"
          "                -1 = absent), topk_logprobs [N,K] (F32/F16/BF16), target_logprobs [N]\n"
          "                (optional)\n"
          "\n"
          "The texts are checked: each row of --data is rendered with the pivot's chat template\n"
          "and cut as logits-dump does it, tokenized with the source's tokenizer (DIR), and the\n"
          "imported ids must be exactly those tokens; the row count must match too. A mismatch is\n"
          "an error naming the example. The loss mask and the text hash come from that\n"
          "tokenization. Without target_logprobs the source's mean cross-entropy is left unknown\n"
          "and fusion estimates it from the top-K.\n"
          "\n"
          "Options:\n"
          "  -S, --source DIR            the source's tokenizer.json or model directory\n"
          "  -d, --data FILE             the fusion set, JSONL (as for logits-dump)\n"
          "  -i, --in FILE               the distributions to import (.jsonl or .safetensors)\n"
          "  -o, --out FILE              the top-K store to write\n"
          "  -s, --shard I/N             FILE covers only shard I of N (default 0/1)\n"
          "  -t, --template NAME         chatml, llama2 or auto (default auto)\n"
          "  -p, --pivot-tokenizer PATH  the pivot's tokenizer.json or model directory (default:\n"
          "                              the source is the pivot)\n"
          "  -h, --help                  show this help\n");
  fc_cli_schema_help(fp, "logits-import", 29);
  fprintf(fp,
          "\n"
          "Exit status: 0 success, 1 unreadable or invalid input or texts that differ, 2 bad usage.\n"
          "\n"
          "Example:\n"
          "  fusectl logits-import --source models/big --pivot-tokenizer models/pivot \\\n"
          "      --data train.jsonl --in big-topk.jsonl --out big.0.topk\n");
}

int fc_cmd_logits_import(int argc, char **argv) {
  static const struct option base[] = {
      {"source", required_argument, 0, 'S'},    {"data", required_argument, 0, 'd'},
      {"in", required_argument, 0, 'i'},        {"out", required_argument, 0, 'o'},
      {"shard", required_argument, 0, 's'},     {"template", required_argument, 0, 't'},
      {"pivot-tokenizer", required_argument, 0, 'p'}, {"help", no_argument, 0, 'h'}};
  struct option opts[32] = {0};
  memcpy(opts, base, sizeof base);
  fc_cli_schema_longopts("logits-import", opts + sizeof base / sizeof *base);
  const char *cmd = "logits-import";
  fc_logits_import_params_t ip; /* max_len, model_id: the logits-import table */
  fc_schema_defaults(fc_schema_find("logits-import"), &ip);
  fc_stage_import_opts_t o = {0};
  o.data = (fc_stage_data_t){.tmpl = FC_CHAT_AUTO, .shard = 0, .n_shards = 1};
  int c, rc;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "S:d:i:o:s:t:p:l:n:h", opts, NULL)) != -1) {
    if ((rc = fc_cli_schema_option(cmd, "logits-import", c, optarg, &ip, NULL)) >= 0) {
      if (rc) return rc;
      continue;
    }
    switch (c) {
    case 'S': o.tok_path = optarg; break;
    case 'd': o.data.path = optarg; break;
    case 'i': o.in_path = optarg; break;
    case 'o': o.out_path = optarg; break;
    case 'p': o.data.pivot_tok = optarg; break;
    case 's':
      if (fc_cli_shard_option(cmd, optarg, &o.data.shard, &o.data.n_shards)) return FC_EXIT_USAGE;
      break;
    case 't':
      if (fc_cli_template_option(cmd, "--template", optarg, &o.data.tmpl)) return FC_EXIT_USAGE;
      break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default: return fc_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  o.data.max_len = (uint32_t)ip.max_len, o.model_id = ip.model_id;
  if (optind != argc) return fc_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!o.tok_path || !o.data.path || !o.in_path || !o.out_path)
    return fc_cli_usage_error(cmd, "--source, --data, --in and --out are required");
  fc_stage_logits_stats_t st;
  fc_err_t err = {0};
  if (fc_stage_logits_import(&o, &st, &err)) return fc_cli_fail(cmd, "%s", err.msg);
  fprintf(stderr, "fusectl %s: %lu examples, %lu tokens (%lu response) written to %s\n", cmd,
          (unsigned long)st.examples, (unsigned long)st.tokens, (unsigned long)st.response_tokens, o.out_path);
  return FC_EXIT_OK;
}
