/* fusectl tokenize: token ids of texts (or text of ids) with a model's Hugging Face tokenizer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_tok.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl tokenize (--model DIR | --tokenizer FILE) [OPTIONS] [--] TEXT...\n"
          "       fusectl tokenize (--model DIR | --tokenizer FILE) [OPTIONS] --decode ID...\n"
          "\n"
          "Encodes each TEXT with the tokenizer of a Hugging Face model (its tokenizer.json, and\n"
          "tokenizer_config.json beside it if present) and prints one line per TEXT: the token ids\n"
          "separated by single spaces. The ids are those the Hugging Face tokenizers library gives\n"
          "with add_special_tokens=True. An empty TEXT prints an empty line (or only the bos id,\n"
          "for tokenizers that add one). With --decode, the arguments are token ids and the\n"
          "decoded text is printed on one line.\n"
          "\n"
          "Options:\n"
          "  -m, --model DIR        model directory containing tokenizer.json\n"
          "  -t, --tokenizer FILE   a tokenizer.json file\n"
          "  -n, --no-special       do not add bos/eos tokens\n"
          "  -p, --plain-special    treat special-token text such as <|im_end|> in TEXT as plain\n"
          "                         text (default: it becomes the special token)\n"
          "  -d, --decode           decode the ids given as arguments\n"
          "  -s, --skip-special     with --decode, leave special tokens out of the text\n"
          "  -h, --help             show this help\n"
          "  --                     end of options (for a TEXT starting with '-')\n"
          "\n"
          "Exit status: 0 success, 1 the tokenizer could not be loaded or an input was invalid\n"
          "(bad UTF-8, unknown id), 2 usage error.\n"
          "\n"
          "Example:\n"
          "  fusectl tokenize --model models/pivot 'Hello world' ''\n"
          "  fusectl tokenize --model models/pivot --decode 1 15043 3186\n");
}

int fc_cmd_tokenize(int argc, char **argv) {
  static const struct option opts[] = {
      {"model", required_argument, NULL, 'm'},   {"tokenizer", required_argument, NULL, 't'},
      {"no-special", no_argument, NULL, 'n'},    {"plain-special", no_argument, NULL, 'p'},
      {"decode", no_argument, NULL, 'd'},        {"skip-special", no_argument, NULL, 's'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
  };
  const char *path = NULL;
  int no_special = 0, plain = 0, decode = 0, skip = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "m:t:npdsh", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
    case 't':
      if (path) return fc_cli_usage_error("tokenize", "give only one of --model and --tokenizer");
      path = optarg;
      break;
    case 'n': no_special = 1; break;
    case 'p': plain = 1; break;
    case 'd': decode = 1; break;
    case 's': skip = 1; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default:
      return fc_cli_usage_error("tokenize", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (!path) return fc_cli_usage_error("tokenize", "--model DIR or --tokenizer FILE is required");
  if (optind >= argc) return fc_cli_usage_error("tokenize", decode ? "no ids to decode" : "no TEXT given");
  if (skip && !decode) return fc_cli_usage_error("tokenize", "--skip-special only applies to --decode");
  int32_t *ids = NULL;
  size_t nids = (size_t)(argc - optind);
  if (decode) {
    ids = fc_xmalloc(nids * sizeof *ids);
    for (size_t i = 0; i < nids; i++) {
      long v;
      if (fc_cli_parse_long(argv[optind + (int)i], &v) || v < 0 || v > 0x7fffffff) {
        free(ids);
        return fc_cli_usage_error("tokenize", "'%s' is not a token id", argv[optind + (int)i]);
      }
      ids[i] = (int32_t)v;
    }
  }
  fc_tok_t *tok;
  fc_err_t err = {0};
  if (fc_tok_load(&tok, path, &err)) {
    free(ids);
    return fc_cli_fail("tokenize", "%s", err.msg);
  }
  int rc = FC_EXIT_OK;
  if (decode) {
    char *text;
    if (fc_tok_decode(tok, ids, nids, skip, &text, &err)) rc = fc_cli_fail("tokenize", "%s", err.msg);
    else {
      printf("%s\n", text);
      free(text);
    }
  } else {
    unsigned flags = (no_special ? 0 : FC_TOK_ADD_SPECIAL) | (plain ? 0 : FC_TOK_PARSE_SPECIAL);
    for (int i = optind; i < argc && rc == FC_EXIT_OK; i++) {
      int32_t *out;
      size_t n;
      if (fc_tok_encode(tok, argv[i], strlen(argv[i]), flags, &out, NULL, &n, &err)) {
        rc = fc_cli_fail("tokenize", "text %d: %s", i - optind + 1, err.msg);
        break;
      }
      for (size_t k = 0; k < n; k++) printf(k ? " %d" : "%d", out[k]);
      putchar('\n');
      free(out);
    }
  }
  if (fflush(stdout)) rc = fc_cli_fail("tokenize", "cannot write the output");
  free(ids);
  fc_tok_destroy(&tok);
  return rc;
}
