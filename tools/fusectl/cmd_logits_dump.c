/* fusectl logits-dump: the logits stage from the command line (a model over a data shard into a
 * top-K store), the same code a logits daemon runs (fc_stage_logits). */
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
          "Usage: fusectl logits-dump --model DIR --data FILE.jsonl --out FILE.topk [OPTIONS]\n"
          "\n"
          "Runs a model over every example of a chat dataset (or one shard of it) and writes a\n"
          "top-K store: per example the token ids, the loss mask (1 on tokens of assistant\n"
          "responses), at every position the K most likely next tokens with their\n"
          "log-probabilities (log-softmax over the whole vocabulary), and the model's mean\n"
          "cross-entropy on the response tokens. This is the input of 'fusectl vocab-map' and\n"
          "'fusectl fuse'.\n"
          "\n"
          "Rows of FILE.jsonl are ShareGPT conversations ({\"conversations\":[{\"from\":\"human\",\n"
          "\"value\":...},{\"from\":\"gpt\",\"value\":...}]}, or \"messages\" with role/content),\n"
          "rendered with the PIVOT model's chat template, or {\"text\": ...} rows taken as they\n"
          "are with loss on every token. Blank lines are skipped. The rendered text is tokenized\n"
          "with this model's own tokenizer (DIR/tokenizer.json), special-token text included;\n"
          "{\"text\"} rows also get the tokenizer's bos/eos, as 'fusectl train' encodes them.\n"
          "For a source model, give the pivot's tokenizer with --pivot-tokenizer so that every\n"
          "model sees the same text; each example stores a hash of its text, and the later stages\n"
          "refuse stores whose texts differ.\n"
          "\n"
          "Rows longer than --max-len pivot tokens are cut at the start of pivot token MAX-LEN\n"
          "(the same byte for every model); a warning gives how many. This model's own tokens\n"
          "are further capped at 4 x MAX-LEN.\n"
          "\n"
          "The output is written to a temporary name and renamed when complete, so an interrupted\n"
          "run leaves no partial file and a rerun with the same options writes the same bytes.\n"
          "\n"
          "Options:\n"
          "  -m, --model DIR             Hugging Face model directory (config.json, safetensors,\n"
          "                              tokenizer.json)\n"
          "  -d, --data FILE             the dataset, JSONL\n"
          "  -o, --out FILE              the top-K store to write\n"

          "  -s, --shard I/N             only shard I of N (0-based): the contiguous block of rows\n"
          "                              [I*R/N, (I+1)*R/N) of the R non-blank rows (default 0/1)\n"
          "  -t, --template NAME         chatml, llama2 or auto (default auto: chatml when the\n"
          "                              pivot tokenizer has <|im_start|>, else llama2)\n"
          "  -p, --pivot-tokenizer PATH  the pivot's tokenizer.json or model directory (default:\n"
          "                              this model is the pivot)\n"

          "  -j, --threads N             compute threads (default: FUSECHAT_THREADS or all cores)\n"
          "  -q, --quiet                 no progress line\n"
          "  -h, --help                  show this help\n");
  fc_cli_schema_help(fp, "logits", 29);
  fprintf(fp,

          "\n"
          "Exit status: 0 success, 1 a file could not be read or written or the inputs are\n"
          "invalid (bad JSON on a line, tokenizer ids outside the model), 2 bad usage.\n"
          "\n"
          "Example:\n"
          "  fusectl logits-dump --model models/pivot --data train.jsonl --out pivot.0.topk --shard 0/4\n"
          "  fusectl logits-dump --model models/src1 --pivot-tokenizer models/pivot \\\n"
          "      --data train.jsonl --out src1.0.topk --shard 0/4\n");
}

int fc_cmd_logits_dump(int argc, char **argv) {
  static const struct option base[] = {
      {"model", required_argument, 0, 'm'},      {"data", required_argument, 0, 'd'},
      {"out", required_argument, 0, 'o'},        {"shard", required_argument, 0, 's'},
      {"template", required_argument, 0, 't'},   {"pivot-tokenizer", required_argument, 0, 'p'},
      {"threads", required_argument, 0, 'j'},    {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'}};
  struct option opts[32] = {0};
  memcpy(opts, base, sizeof base);
  fc_cli_schema_longopts("logits", opts + sizeof base / sizeof *base);
  const char *cmd = "logits-dump";
  fc_logits_params_t lp; /* top_k, max_len, batch: the logits stage's table */
  fc_schema_defaults(fc_schema_find("logits"), &lp);
  fc_stage_logits_opts_t o = {0};
  o.data = (fc_stage_data_t){.tmpl = FC_CHAT_AUTO, .shard = 0, .n_shards = 1};
  int quiet = 0, c, rc;
  long v;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "m:d:o:k:s:t:p:b:l:j:qh", opts, NULL)) != -1) {
    if ((rc = fc_cli_schema_option(cmd, "logits", c, optarg, &lp, NULL)) >= 0) {
      if (rc) return rc;
      continue;
    }
    switch (c) {
    case 'm': o.model_dir = optarg; break;
    case 'd': o.data.path = optarg; break;
    case 'o': o.out_path = optarg; break;
    case 'p': o.data.pivot_tok = optarg; break;
    case 's':
      if (fc_cli_shard_option(cmd, optarg, &o.data.shard, &o.data.n_shards)) return FC_EXIT_USAGE;
      break;
    case 't':
      if (fc_cli_template_option(cmd, "--template", optarg, &o.data.tmpl)) return FC_EXIT_USAGE;
      break;
    case 'j':
      if (fc_cli_parse_long(optarg, &v) || v < 1 || v > 1024)
        return fc_cli_usage_error(cmd, "--threads needs a positive integer, not '%s'", optarg);
      o.threads = (int)v;
      break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default: return fc_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  o.top_k = (uint32_t)lp.top_k, o.batch_size = (int)lp.batch, o.data.max_len = (uint32_t)lp.max_len;
  if (optind != argc) return fc_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!o.model_dir || !o.data.path || !o.out_path)
    return fc_cli_usage_error(cmd, "--model, --data and --out are required");
  fc_progress_t pr;
  fc_progress_start(&pr, "logits", 1.0);
  fc_stage_logits_stats_t st;
  fc_err_t err = {0};
  rc = fc_stage_logits(&o, &st, quiet ? NULL : fc_cli_progress, &pr, &err);
  if (rc) return fc_cli_fail(cmd, "%s", err.msg);
  if (!quiet) {
    char extra[128];
    snprintf(extra, sizeof extra, "(%.0f tokens/s)", st.seconds > 0 ? (double)st.tokens / st.seconds : 0.0);
    fc_progress_end(&pr, extra);
  }
  if (st.cut) fprintf(stderr, "fusectl %s: warning: %lu of %lu rows were longer than %u pivot tokens and were cut\n",
                      cmd, (unsigned long)st.cut, (unsigned long)st.examples, o.data.max_len);
  if (st.cut_own)
    fprintf(stderr, "fusectl %s: warning: %lu rows took more than %u tokens of this model and were cut; "
                    "their stores will not pair with the pivot's\n",
            cmd, (unsigned long)st.cut_own, 4 * o.data.max_len);
  printf("%s: %lu examples, %lu tokens (%lu in responses)\n", o.out_path, (unsigned long)st.examples,
         (unsigned long)st.tokens, (unsigned long)st.response_tokens);
  return FC_EXIT_OK;
}
