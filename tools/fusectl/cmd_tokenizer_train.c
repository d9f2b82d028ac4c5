/* fusectl tokenizer-train: learn a BPE tokenizer.json from a text corpus. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fc_bpe_train.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl tokenizer-train --corpus FILE --vocab-size N --kind byte|sentencepiece\n"
          "                               --out FILE [--min-frequency N] [--split-digits] [--quiet]\n"
          "\n"
          "Learns a BPE tokenizer from a UTF-8 text corpus and writes it as a Hugging Face\n"
          "tokenizer.json that fusechat and the Hugging Face tokenizers library load alike.\n"
          "\n"
          "  byte           byte-level BPE as GPT-2/Qwen: the 256 byte characters, merges, and the\n"
          "                 special tokens <|endoftext|>, <|im_start|>, <|im_end|> (ChatML)\n"
          "  sentencepiece  SentencePiece-style BPE as Llama-2: <unk> <s> </s>, byte fallback\n"
          "                 tokens <0x00>..<0xFF>, the characters covering 99.95%% of the corpus,\n"
          "                 merges; spaces become \xe2\x96\x81 and <s> is added at the start\n"
          "\n"
          "Options:\n"
          "  -c, --corpus FILE        training text (UTF-8)\n"
          "  -v, --vocab-size N       total vocabulary size including special tokens\n"
          "                           (at least 259 for byte, 260 for sentencepiece)\n"
          "  -k, --kind KIND          byte or sentencepiece\n"
          "  -o, --out FILE           output tokenizer.json (written atomically)\n"
          "  -f, --min-frequency N    stop when the best pair occurs fewer times (default 2);\n"
          "                           the vocabulary may then be smaller than N\n"
          "  -d, --split-digits       every digit its own token (Qwen2's pre-tokenizer for byte,\n"
          "                           Llama's split_digits for sentencepiece)\n"
          "  -q, --quiet              no progress line\n"
          "  -h, --help               show this help\n"
          "\n"
          "Exit status: 0 success, 1 the corpus could not be read or the output written,\n"
          "2 usage error.\n"
          "\n"
          "Example:\n"
          "  fusectl tokenizer-train --corpus data/corpus.txt --vocab-size 4096 --kind byte \\\n"
          "      --out models/tiny/tokenizer.json\n");
}

int fc_cmd_tokenizer_train(int argc, char **argv) {
  static const struct option opts[] = {
      {"corpus", required_argument, NULL, 'c'}, {"vocab-size", required_argument, NULL, 'v'},
      {"kind", required_argument, NULL, 'k'},   {"out", required_argument, NULL, 'o'},
      {"min-frequency", required_argument, NULL, 'f'}, {"quiet", no_argument, NULL, 'q'},
      {"split-digits", no_argument, NULL, 'd'},
      {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
  };
  const char *corpus = NULL, *out = NULL, *kind = NULL;
  long vs = -1, minf = 2;
  int quiet = 0, split_digits = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "c:v:k:o:f:qdh", opts, NULL)) != -1) {
    switch (c) {
    case 'c': corpus = optarg; break;
    case 'o': out = optarg; break;
    case 'k': kind = optarg; break;
    case 'v':
      if (fc_cli_parse_long(optarg, &vs) || vs < 1)
        return fc_cli_usage_error("tokenizer-train", "--vocab-size: '%s' is not a positive integer", optarg);
      break;
    case 'f':
      if (fc_cli_parse_long(optarg, &minf) || minf < 1)
        return fc_cli_usage_error("tokenizer-train", "--min-frequency: '%s' is not a positive integer", optarg);
      break;
    case 'q': quiet = 1; break;
    case 'd': split_digits = 1; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default:
      return fc_cli_usage_error("tokenizer-train", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return fc_cli_usage_error("tokenizer-train", "unexpected argument '%s'", argv[optind]);
  if (!corpus || !out || !kind || vs < 0)
    return fc_cli_usage_error("tokenizer-train", "--corpus, --vocab-size, --kind and --out are required");
  fc_bpe_train_opts_t o = {0};
  if (!strcmp(kind, "byte") || !strcmp(kind, "bytelevel") || !strcmp(kind, "byte-level")) o.kind = FC_TOK_BYTELEVEL;
  else if (!strcmp(kind, "sentencepiece") || !strcmp(kind, "sp")) o.kind = FC_TOK_SENTENCEPIECE;
  else return fc_cli_usage_error("tokenizer-train", "--kind must be byte or sentencepiece, not '%s'", kind);
  long minv = o.kind == FC_TOK_BYTELEVEL ? 259 : 260;
  if (vs < minv || vs > (1 << 24))
    return fc_cli_usage_error("tokenizer-train", "--vocab-size must be between %ld and %d", minv, 1 << 24);
  o.vocab_size = (int32_t)vs;
  o.min_frequency = minf;
  o.split_digits = split_digits;
  o.verbose = !quiet;
  fc_err_t err = {0};
  double t0 = fc_now();
  if (fc_bpe_train_file(corpus, &o, out, &err)) return fc_cli_fail("tokenizer-train", "%s", err.msg);
  if (!quiet) fprintf(stderr, "fusectl tokenizer-train: wrote %s in %.2f s\n", out, fc_now() - t0);
  return FC_EXIT_OK;
}
