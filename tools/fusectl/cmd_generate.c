/* fusectl generate: continue a prompt with a model, greedy or sampled. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_chat.h"
#include "fc_generate.h"
#include "fc_model.h"
#include "fc_tok.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl generate --model DIR (--prompt-ids \"ID ...\" | --prompt TEXT | --chat TEXT)\n"
          "                        [OPTIONS]\n"
          "\n"
          "Continues the prompt with the model (KV-cached decoding). With --prompt-ids it prints\n"
          "the new token ids on one line, separated by spaces; with --prompt or --chat it prints\n"
          "the new text (special tokens left out). Decoding stops after the end-of-sequence\n"
          "token (an id printed with the rest) or after --max-tokens tokens.\n"
          "\n"
          "Options:\n"
          "  -m, --model DIR        Hugging Face model directory (config.json, *.safetensors,\n"
          "                         tokenizer.json for the text forms)\n"
          "  -p, --prompt-ids LIST  prompt token ids separated by spaces or commas\n"
          "      --prompt TEXT      prompt text, encoded with bos/eos as the tokenizer adds them\n"
          "      --chat TEXT        a user message, rendered with the model's chat template\n"
          "                         (ChatML or Llama-2) and an open assistant turn; decoding\n"
          "                         stops at the end of the assistant's turn\n"
          "      --system TEXT      with --chat: a system message first\n"
          "      --output ids|text  what to print (default: ids for --prompt-ids, else text)\n"
          "  -n, --max-tokens N     new tokens at most (default 128)\n"
          "  -t, --temperature T    0 (default) decodes greedily; above 0 samples from\n"
          "                         softmax(logits / T)\n"
          "      --top-p P          with sampling: draw only from the most likely tokens whose\n"
          "                         probabilities add up to P (default 1: all)\n"
          "  -s, --seed S           seed of the sampler (default 0); the same seed gives the\n"
          "                         same tokens\n"
          "      --eos ID           stop at this id instead of the config's eos_token_id\n"
          "                         (-1: never stop early)\n"
          "  -j, --threads N        compute threads (default: FUSECHAT_THREADS or all cores)\n"
          "  -h, --help             show this help\n"
          "\n"
          "Exit status: 0 success, 1 the model could not be loaded or run, 2 bad usage.\n");
}

int fc_cmd_generate(int argc, char **argv) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},       {"prompt-ids", required_argument, 0, 'p'},
      {"prompt", required_argument, 0, 'P'},      {"max-tokens", required_argument, 0, 'n'},
      {"temperature", required_argument, 0, 't'}, {"top-p", required_argument, 0, 'T'},
      {"seed", required_argument, 0, 's'},        {"eos", required_argument, 0, 'e'},
      {"threads", required_argument, 0, 'j'},     {"help", no_argument, 0, 'h'},
      {"chat", required_argument, 0, 'C'},        {"system", required_argument, 0, 'S'},
      {"output", required_argument, 0, 'o'},      {0}};
  const char *model = NULL, *ids_s = NULL, *text = NULL, *chat = NULL, *system = NULL;
  int output = -1; /* 0 ids, 1 text */
  fc_gen_opts_t go;
  fc_gen_opts_default(&go);
  long l, threads = 0;
  double d;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "m:p:n:t:s:j:h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': model = optarg; break;
    case 'p': ids_s = optarg; break;
    case 'P': text = optarg; break;
    case 'C': chat = optarg; break;
    case 'S': system = optarg; break;
    case 'o':
      if (!strcmp(optarg, "ids")) output = 0;
      else if (!strcmp(optarg, "text")) output = 1;
      else return fc_cli_usage_error("generate", "--output is ids or text, not '%s'", optarg);
      break;
    case 'n':
      if (fc_cli_parse_long(optarg, &l) || l <= 0 || l > 1000000)
        return fc_cli_usage_error("generate", "--max-tokens needs a positive integer, not '%s'", optarg);
      go.max_tokens = (int)l;
      break;
    case 't':
      if (fc_cli_parse_double(optarg, &d) || !(d >= 0) || d > 1e6)
        return fc_cli_usage_error("generate", "--temperature needs a number >= 0, not '%s'", optarg);
      go.temperature = (float)d;
      break;
    case 'T':
      if (fc_cli_parse_double(optarg, &d) || !(d > 0) || d > 1)
        return fc_cli_usage_error("generate", "--top-p needs a number in (0, 1], not '%s'", optarg);
      go.top_p = (float)d;
      break;
    case 's':
      if (fc_cli_parse_long(optarg, &l) || l < 0)
        return fc_cli_usage_error("generate", "--seed needs a non-negative integer, not '%s'", optarg);
      go.seed = (uint64_t)l;
      break;
    case 'e':
      if (fc_cli_parse_long(optarg, &l) || l < -1 || l > INT32_MAX)
        return fc_cli_usage_error("generate", "--eos needs a token id or -1, not '%s'", optarg);
      go.eos_id = (int)l;
      break;
    case 'j':
      if (fc_cli_parse_long(optarg, &threads) || threads <= 0 || threads > 1024)
        return fc_cli_usage_error("generate", "--threads needs a positive integer, not '%s'", optarg);
      break;
    case 'h': usage(stdout); return 0;
    default: return fc_cli_usage_error("generate", "unknown option");
    }
  }
  if (optind != argc) return fc_cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
  if (!model) return fc_cli_usage_error("generate", "--model is required");
  if ((ids_s != NULL) + (text != NULL) + (chat != NULL) != 1)
    return fc_cli_usage_error("generate", "give exactly one of --prompt-ids, --prompt and --chat");
  if (system && !chat) return fc_cli_usage_error("generate", "--system goes with --chat");
  if (output < 0) output = ids_s ? 0 : 1;
  int32_t *ids = NULL;
  int n = 0;
  fc_tok_t *tok = NULL;
  fc_err_t err = {0};
  if (ids_s) {
    if (fc_cli_parse_ids(ids_s, &ids, &n) || n == 0)
      return fc_cli_usage_error("generate", "--prompt-ids needs token ids separated by spaces or commas");
  }
  if (!ids_s || output == 1) {
    if (fc_tok_load(&tok, model, &err)) {
      free(ids);
      return fc_cli_fail("generate", "%s", err.msg);
    }
  }
  if (!ids_s) {
    char *rendered = NULL;
    size_t len = 0, nt = 0;
    unsigned flags = FC_TOK_PARSE_SPECIAL;
    int rc = 0;
    if (chat) {
      /* The template writes bos itself; the turn ends at <|im_end|> (ChatML) or eos. */
      fc_chat_template_t tmpl = fc_chat_template_for(tok);
      rc = fc_chat_render_prompt(tmpl, system, chat, &rendered, &len, &err);
      if (!rc && tmpl == FC_CHAT_CHATML && go.eos_id == -2) {
        int32_t end = fc_tok_piece_id(tok, "<|im_end|>");
        if (end >= 0) go.eos_id = end;
      }
    } else {
      rendered = fc_xstrdup(text);
      len = strlen(rendered);
      flags |= FC_TOK_ADD_SPECIAL;
    }
    if (!rc) rc = fc_tok_encode(tok, rendered, len, flags, &ids, NULL, &nt, &err);
    free(rendered);
    if (rc || nt == 0) {
      fc_tok_destroy(&tok);
      free(ids);
      return rc ? fc_cli_fail("generate", "%s", err.msg) : fc_cli_fail("generate", "the prompt encodes to no tokens");
    }
    n = (int)nt;
  }
  fc_model_t *m;
  if (fc_model_load_mapped(&m, model, &err)) {
    free(ids);
    fc_tok_destroy(&tok);
    return fc_cli_fail("generate", "%s", err.msg);
  }
  if (threads) fc_model_set_threads(m, (int)threads);
  int32_t *out = NULL;
  int nout = 0, rc = 0;
  if (fc_generate(m, ids, n, &go, &out, &nout, &err)) {
    rc = fc_cli_fail("generate", "%s", err.msg);
  } else if (output == 1) {
    char *s = NULL;
    if (fc_tok_decode(tok, out, (size_t)nout, 1, &s, &err)) {
      rc = fc_cli_fail("generate", "%s", err.msg);
    } else {
      printf("%s\n", s);
      free(s);
    }
  } else {
    for (int i = 0; i < nout; i++) printf("%s%d", i ? " " : "", out[i]);
    printf("\n");
  }
  if (!rc && fflush(stdout)) rc = fc_cli_fail("generate", "cannot write the output");
  free(out);
  free(ids);
  fc_tok_destroy(&tok);
  fc_model_destroy(&m);
  return rc;
}
