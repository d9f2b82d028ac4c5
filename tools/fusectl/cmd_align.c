/* fusectl align: the MinED token alignment of one text under two tokenizers, to inspect what the
 * vocabulary counts and the distribution transfer are built from. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_align.h"
#include "fc_tok.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl align --source-tokenizer PATH --pivot-tokenizer PATH --text TEXT [OPTIONS]\n"
          "\n"
          "Tokenizes TEXT with both tokenizers (special-token text such as <|im_end|> becomes the\n"
          "special token where a tokenizer has it; no bos/eos is added) and prints the alignment\n"
          "the fusion stages use: the monotone path from the first to the last token pair, with\n"
          "steps that advance the source, the pivot or both, minimising the summed edit distance\n"
          "between the paired token texts (MinED): in code points, or in bytes when either token\n"
          "holds part of a UTF-8 character (byte-fallback and byte-level pieces of emoji, CJK,\n"
          "Hangul). A token's text is what it stands for: SentencePiece '\xe2\x96\x81' is a space,\n"
          "byte-level characters are their bytes.\n"
          "\n"
          "Without --json, one line per path step: source position and token, pivot position and\n"
          "token (texts quoted, control characters escaped), then the total cost. With --json, one\n"
          "line:\n"
          "  {\"pairs\":[[s,p],...],\"cost\":C}\n"
          "where each [s,p] pairs source position s with pivot position p (0-based).\n"
          "\n"
          "Options:\n"
          "  -s, --source-tokenizer PATH  a tokenizer.json or a model directory holding one\n"
          "  -p, --pivot-tokenizer PATH   the same for the pivot\n"
          "  -t, --text TEXT              the text to align\n"
          "  -m, --margin M               alignment band: pivot tokens added each side of the\n"
          "                               byte overlap (default %d; a large value gives the exact\n"
          "                               unbanded optimum)\n"
          "      --full                   the plain O(n m) alignment instead of the band\n"
          "  -J, --json                   print JSON\n"
          "  -h, --help                   show this help\n"
          "\n"
          "Exit status: 0 success, 1 a tokenizer could not be loaded or TEXT is not valid UTF-8\n"
          "or tokenizes to nothing, 2 bad usage.\n"
          "\n"
          "Example:\n"
          "  fusectl align --source-tokenizer models/llama2 --pivot-tokenizer models/qwen \\\n"
          "      --text 'The answer is 42.'\n",
          FC_ALIGN_DEFAULT_MARGIN);
}

typedef struct seq {
  int32_t *ids;
  size_t n;
  char *bytes;
  uint32_t *start;
} seq_t;

static int encode(const fc_tok_t *tok, const char *text, seq_t *s, fc_align_seq_t *as, fc_err_t *err) {
  uint32_t *off = NULL;
  int rc = fc_tok_encode(tok, text, strlen(text), FC_TOK_PARSE_SPECIAL, &s->ids, &off, &s->n, err);
  free(off);
  if (rc) return rc;
  size_t len = 0;
  char probe[1];
  for (size_t i = 0; i < s->n; i++) len += fc_tok_token_text(tok, s->ids[i], probe, 0);
  s->bytes = fc_xmalloc(len + 1);
  s->start = fc_xmalloc((s->n + 1) * sizeof *s->start);
  size_t pos = 0;
  for (size_t i = 0; i < s->n; i++) {
    s->start[i] = (uint32_t)pos;
    pos += fc_tok_token_text(tok, s->ids[i], s->bytes + pos, len + 1 - pos);
  }
  s->start[s->n] = (uint32_t)pos;
  *as = (fc_align_seq_t){(uint32_t)s->n, s->bytes, s->start, NULL};
  return 0;
}

/* Prints token i quoted and escaped; returns the columns it took (one per code point). */
static int print_token(const seq_t *s, uint32_t i) {
  int w = 2;
  for (uint32_t b = s->start[i]; b < s->start[i + 1]; b++) {
    unsigned char ch = (unsigned char)s->bytes[b];
    if (ch == '"' || ch == '\\' || ch == '\n' || ch == '\t') w += 2;
    else if (ch < 0x20 || ch == 0x7f) w += 4;
    else if ((ch & 0xc0) != 0x80) w += 1;
  }
  putchar('"');
  for (uint32_t b = s->start[i]; b < s->start[i + 1]; b++) {
    unsigned char ch = (unsigned char)s->bytes[b];
    if (ch == '"' || ch == '\\') printf("\\%c", ch);
    else if (ch == '\n') printf("\\n");
    else if (ch == '\t') printf("\\t");
    else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
    else putchar(ch);
  }
  putchar('"');
  return w;
}

int fc_cmd_align(int argc, char **argv) {
  static const struct option opts[] = {
      {"source-tokenizer", required_argument, 0, 's'}, {"pivot-tokenizer", required_argument, 0, 'p'},
      {"text", required_argument, 0, 't'},             {"margin", required_argument, 0, 'm'},
      {"full", no_argument, 0, 'F'},                   {"json", no_argument, 0, 'J'},
      {"help", no_argument, 0, 'h'},                   {0}};
  const char *cmd = "align", *sp = NULL, *pp = NULL, *text = NULL;
  long margin = FC_ALIGN_DEFAULT_MARGIN;
  int json = 0, full = 0, c;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "s:p:t:m:Jh", opts, NULL)) != -1) {
    switch (c) {
    case 's': sp = optarg; break;
    case 'p': pp = optarg; break;
    case 't': text = optarg; break;
    case 'm':
      if (fc_cli_parse_long(optarg, &margin) || margin < 0 || margin > 1 << 20)
        return fc_cli_usage_error(cmd, "--margin needs a non-negative integer, not '%s'", optarg);
      break;
    case 'F': full = 1; break;
    case 'J': json = 1; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default: return fc_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind != argc) return fc_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!sp || !pp || !text)
    return fc_cli_usage_error(cmd, "--source-tokenizer, --pivot-tokenizer and --text are required");
  fc_err_t err = {0};
  fc_tok_t *st = NULL, *pt = NULL;
  if (fc_tok_load(&st, sp, &err)) return fc_cli_fail(cmd, "source tokenizer: %s", err.msg);
  if (fc_tok_load(&pt, pp, &err)) {
    fc_tok_destroy(&st);
    return fc_cli_fail(cmd, "pivot tokenizer: %s", err.msg);
  }
  seq_t s = {0}, p = {0};
  fc_align_seq_t as, ap;
  fc_align_result_t res = {0};
  fc_aligner_t *al = fc_aligner_new((int)margin);
  int rc = encode(st, text, &s, &as, &err);
  if (!rc) rc = encode(pt, text, &p, &ap, &err);
  if (!rc && (s.n == 0 || p.n == 0)) rc = fc_err_set(&err, FC_EINVAL, "the text has no tokens");
  if (!rc) rc = full ? fc_align_full(al, &as, &ap, &res, &err) : fc_align_mined(al, &as, &ap, &res, &err);
  if (!rc) {
    if (json) {
      printf("{\"pairs\":[");
      for (uint32_t k = 0; k < res.n_path; k++) printf("%s[%u,%u]", k ? "," : "", res.src[k], res.piv[k]);
      printf("],\"cost\":%lld}\n", (long long)res.cost);
    } else {
      printf("%6s %8s  %-24s %6s %8s  %s\n", "src", "id", "source token", "pivot", "id", "pivot token");
      for (uint32_t k = 0; k < res.n_path; k++) {
        printf("%6u %8d  ", res.src[k], s.ids[res.src[k]]);
        int w = print_token(&s, res.src[k]);
        printf("%*s %6u %8d  ", w < 24 ? 24 - w : 0, "", res.piv[k], p.ids[res.piv[k]]);
        print_token(&p, res.piv[k]);
        putchar('\n');
      }
      printf("cost %lld over %u steps (%zu source tokens, %zu pivot tokens)\n", (long long)res.cost, res.n_path,
             s.n, p.n);
    }
    if (fflush(stdout)) rc = fc_err_set(&err, FC_EIO, "cannot write the output");
  }
  free(s.ids);
  free(s.bytes);
  free(s.start);
  free(p.ids);
  free(p.bytes);
  free(p.start);
  fc_align_result_free(&res);
  fc_aligner_destroy(&al);
  fc_tok_destroy(&st);
  fc_tok_destroy(&pt);
  return rc ? fc_cli_fail(cmd, "%s", err.msg) : FC_EXIT_OK;
}
