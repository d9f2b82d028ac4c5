/* fusectl logits: a model's top-K next-token distribution at every position of a sequence. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_model.h"
#include "fc_tok.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl logits --model DIR (--ids \"ID ...\" | --text TEXT [--no-special]) [OPTIONS]\n"
          "\n"
          "Runs the model over one token sequence and prints, for every position, the K most\n"
          "likely next tokens and their log-probabilities (log-softmax over the whole\n"
          "vocabulary), as one JSON object per line:\n"
          "  {\"pos\":0,\"ids\":[...],\"logprobs\":[...]}\n"
          "ids are in descending order of log-probability; position p predicts token p+1.\n"
          "\n"
          "Options:\n"
          "  -m, --model DIR     Hugging Face model directory (config.json, *.safetensors)\n"
          "  -i, --ids LIST      token ids separated by spaces or commas\n"
          "      --text TEXT     text to tokenize with the model's tokenizer.json (special-token\n"
          "                      text such as <|im_end|> is matched as that token)\n"
          "      --no-special    with --text: do not add bos/eos\n"
          "  -k, --top-k K       entries per position (default 10, at most the vocabulary)\n"
          "  -j, --threads N     compute threads (default: FUSECHAT_THREADS or all cores)\n"
          "  -h, --help          show this help\n"
          "\n"
          "Exit status: 0 success, 1 the model could not be loaded or run, 2 bad usage.\n");
}

int fc_cmd_logits(int argc, char **argv) {
  static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"ids", required_argument, 0, 'i'},
                                       {"text", required_argument, 0, 't'},  {"no-special", no_argument, 0, 'n'},
                                       {"top-k", required_argument, 0, 'k'}, {"threads", required_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'},        {0}};
  const char *model = NULL, *ids_s = NULL, *text = NULL;
  long K = 10, threads = 0;
  int no_special = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "m:i:k:j:h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': model = optarg; break;
    case 'i': ids_s = optarg; break;
    case 't': text = optarg; break;
    case 'n': no_special = 1; break;
    case 'k':
      if (fc_cli_parse_long(optarg, &K) || K <= 0 || K > 1000000)
        return fc_cli_usage_error("logits", "--top-k needs a positive integer, not '%s'", optarg);
      break;
    case 'j':
      if (fc_cli_parse_long(optarg, &threads) || threads <= 0 || threads > 1024)
        return fc_cli_usage_error("logits", "--threads needs a positive integer, not '%s'", optarg);
      break;
    case 'h': usage(stdout); return 0;
    default: return fc_cli_usage_error("logits", "unknown option");
    }
  }
  if (optind != argc) return fc_cli_usage_error("logits", "unexpected argument '%s'", argv[optind]);
  if (!model) return fc_cli_usage_error("logits", "--model is required");
  if (!!ids_s == !!text) return fc_cli_usage_error("logits", "give exactly one of --ids and --text");
  if (no_special && !text) return fc_cli_usage_error("logits", "--no-special goes with --text");
  int32_t *ids = NULL;
  int n = 0;
  fc_err_t err = {0};
  if (text) {
    fc_tok_t *tok;
    if (fc_tok_load(&tok, model, &err)) return fc_cli_fail("logits", "%s", err.msg);
    size_t nt = 0;
    unsigned flags = (no_special ? 0 : FC_TOK_ADD_SPECIAL) | FC_TOK_PARSE_SPECIAL;
    int rc = fc_tok_encode(tok, text, strlen(text), flags, &ids, NULL, &nt, &err);
    fc_tok_destroy(&tok);
    if (rc) return fc_cli_fail("logits", "%s", err.msg);
    if (nt == 0) {
      free(ids);
      return fc_cli_fail("logits", "the text encodes to no tokens");
    }
    n = (int)nt;
  } else if (fc_cli_parse_ids(ids_s, &ids, &n) || n == 0) {
    return fc_cli_usage_error("logits", "--ids needs token ids separated by spaces or commas");
  }
  fc_model_t *m;
  if (fc_model_load_mapped(&m, model, &err)) {
    free(ids);
    return fc_cli_fail("logits", "%s", err.msg);
  }
  if (threads) fc_model_set_threads(m, (int)threads);
  const fc_config_t *cfg = fc_model_config(m);
  int V = cfg->vocab_size;
  if (K > V) K = V;
  /* The chunked top-K forward: the (n, V) logits are never held at once. */
  int32_t *top = fc_xmalloc((size_t)n * K * sizeof *top);
  float *lp = fc_xmalloc((size_t)n * K * sizeof *lp);
  int rc = 0;
  if (fc_model_forward_topk(m, ids, 1, n, (int)K, NULL, top, lp, NULL, &err)) {
    rc = fc_cli_fail("logits", "%s", err.msg);
  } else {
    for (int p = 0; p < n; p++) {
      printf("{\"pos\":%d,\"ids\":[", p);
      for (int j = 0; j < K; j++) printf("%s%d", j ? "," : "", top[(size_t)p * K + j]);
      printf("],\"logprobs\":[");
      for (int j = 0; j < K; j++) printf("%s%.7g", j ? "," : "", lp[(size_t)p * K + j]);
      printf("]}\n");
    }
    if (fflush(stdout)) rc = fc_cli_fail("logits", "cannot write the output");
  }
  free(top);
  free(lp);
  fc_model_destroy(&m);
  free(ids);
  return rc;
}
