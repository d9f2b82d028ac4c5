/* Tokenizer throughput on one core: MB/s of text encoded (and decoded) by fc_tok for each
 * tokenizer family, on a generated 10 MB corpus of English prose, code and other scripts.
 * Usage: bench_tokenizer [TOKENIZER_DIR...] [--mb N] [--write-corpus FILE]
 * Without directories it uses tests/fixtures/tok/{llama2,qwen3,gpt2,llama3} of the source tree. The corpus can be
 * written out so bench/tokenizer_ref.js can time Hugging Face tokenizers on the same text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_bpe_train.h"
#include "fc_tok.h"

static const char *words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been",
    "knowledge", "fusion", "language", "model", "distribution", "alignment", "vocabulary",
    "tokenizer", "merging", "training", "conversation", "assistant", "response", "because",
    "however", "interesting", "international", "development", "understanding", "Paris",
    "London", "2024", "42", "3.14159", "1,000,000", "e-mail", "don't", "it's", "we'll",
};
static const char *code[] = {
    "    for (size_t i = 0; i < n; i++) {\n", "        sum += a[i] * b[i];\n", "    }\n",
    "def forward(self, x):\n", "    return self.proj(F.gelu(self.fc(x)))\n",
    "#include <stdio.h>\n", "int main(int argc, char **argv) {\n", "  return 0;\n}\n",
    "\tif (err != NULL) return -1;\n", "const x = await fetch(`/api/v1/items?id=${id}`);\n",
};
static const char *intl[] = {
    "这是一个关于知识融合的句子。", "日本語のテキストも少し入ります。", "Привет, как дела? ",
    "مرحبا بكم في النظام. ", "यह एक हिंदी वाक्य है। ", "Ελληνικά κείμενα εδώ. ", "한국어 문장입니다. ",
    "Emoji 😀👍🏽👨‍👩‍👧 ", "café naïve Straße ", "Tiếng Việt có dấu. ",
};

static char *make_corpus(size_t bytes, uint64_t seed) {
  fc_rng_t r;
  fc_rng_seed(&r, seed);
  char *s = fc_xmalloc(bytes + 256);
  size_t n = 0;
  while (n < bytes) {
    uint64_t kind = fc_rng_u64(&r) % 10;
    const char *piece;
    if (kind < 6) { /* a sentence of prose */
      int len = 5 + (int)(fc_rng_u64(&r) % 20);
      for (int i = 0; i < len && n < bytes; i++) {
        char made[32];
        piece = words[fc_rng_u64(&r) % (sizeof words / sizeof *words)];
        if (fc_rng_u64(&r) % 3 == 0) { /* a made-up word from syllables: a long-tailed vocabulary */
          static const char *syl[] = {"ka", "ri", "to", "men", "sa", "lo", "ve", "qui", "dra", "pon",
                                      "el", "ur", "ist", "ba", "nor", "tha", "ce", "gi", "mo", "stra"};
          int ns = 1 + (int)(fc_rng_u64(&r) % 3 + fc_rng_u64(&r) % 2), k = 0;
          for (int j = 0; j < ns; j++) {
            /* Zipf-like: low syllable indices are much more common */
            uint64_t u = fc_rng_u64(&r) % 400;
            const char *y = syl[u < 200 ? u % 5 : u < 320 ? 5 + u % 5 : 10 + u % 10];
            size_t yl = strlen(y);
            memcpy(made + k, y, yl);
            k += (int)yl;
          }
          made[k] = 0;
          piece = made;
        }
        size_t l = strlen(piece);
        if (n + l + 2 > bytes + 200) break;
        if (i == 0 && piece[0] >= 'a' && piece[0] <= 'z') {
          s[n++] = (char)(piece[0] - 32);
          memcpy(s + n, piece + 1, l - 1);
          n += l - 1;
        } else {
          memcpy(s + n, piece, l);
          n += l;
        }
        s[n++] = i + 1 == len ? '.' : ' ';
      }
      s[n++] = fc_rng_u64(&r) % 4 ? ' ' : '\n';
    } else if (kind < 8) {
      piece = code[fc_rng_u64(&r) % (sizeof code / sizeof *code)];
      size_t l = strlen(piece);
      if (n + l > bytes + 200) break;
      memcpy(s + n, piece, l);
      n += l;
    } else {
      piece = intl[fc_rng_u64(&r) % (sizeof intl / sizeof *intl)];
      size_t l = strlen(piece);
      if (n + l > bytes + 200) break;
      memcpy(s + n, piece, l);
      n += l;
    }
  }
  s[n] = 0;
  return s;
}

int main(int argc, char **argv) {
  const char *dirs[16];
  int nd = 0;
  double mb = 10;
  const char *write_corpus = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("Usage: bench_tokenizer [--mb MB] [--write-corpus FILE] [TOKENIZER_DIR...]\n"
             "Encodes and decodes a generated corpus (default 10 MB) with each tokenizer (default: the\n"
             "real tokenizer.json fixtures) on one core and prints MB/s beside Hugging Face's speed.\n");
      return 0;
    }
    if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atof(argv[++i]);
    else if (!strcmp(argv[i], "--write-corpus") && i + 1 < argc) write_corpus = argv[++i];
    else if (nd < 16) dirs[nd++] = argv[i];
  }
  static char defaults[4][512];
  if (!nd) {
    const char *fx = getenv("FC_FIXTURES") ? getenv("FC_FIXTURES") : FC_FIXTURES_DIR;
    const char *names[] = {"llama2", "qwen3", "gpt2", "llama3"};
    for (int i = 0; i < 4; i++) {
      snprintf(defaults[i], sizeof defaults[i], "%s/tok/%s", fx, names[i]);
      dirs[nd++] = defaults[i];
    }
  }
  size_t bytes = (size_t)(mb * 1e6);
  char *corpus = make_corpus(bytes, 1234);
  size_t clen = strlen(corpus);
  if (write_corpus) {
    FILE *fp = fopen(write_corpus, "wb");
    if (!fp || fwrite(corpus, 1, clen, fp) != clen || fclose(fp)) {
      fprintf(stderr, "cannot write %s\n", write_corpus);
      return 1;
    }
  }
  /* documents of about 4 KB, cut at a newline, like conversations */
  printf("(sentencepiece decodes of the concatenated ids differ from the corpus by design: each\n"
         " document got its own prepended \u2581; byte-level decodes are checked to equal it)\n");
  printf("corpus: %.1f MB generated (prose, code, 8 scripts, emoji), documents of ~4 KB\n", clen / 1e6);
  printf("%-28s %-13s %10s %10s %12s %10s\n", "tokenizer", "kind", "encode MB/s", "tokens/s", "bytes/token",
         "decode MB/s");
  for (int d = 0; d < nd; d++) {
    fc_tok_t *t;
    fc_err_t err = {0};
    if (fc_tok_load(&t, dirs[d], &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    size_t ntok = 0, pos = 0;
    int32_t *all = fc_xmalloc(clen * sizeof *all);
    double t0 = fc_now();
    while (pos < clen) {
      size_t end = pos + 4096 < clen ? pos + 4096 : clen;
      while (end < clen && corpus[end - 1] != '\n') end++;
      int32_t *ids;
      size_t n;
      if (fc_tok_encode(t, corpus + pos, end - pos, FC_TOK_PARSE_SPECIAL, &ids, NULL, &n, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
      }
      memcpy(all + ntok, ids, n * sizeof *ids);
      ntok += n;
      free(ids);
      pos = end;
    }
    double te = fc_now() - t0;
    t0 = fc_now();
    char *text;
    if (fc_tok_decode(t, all, ntok, 0, &text, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    double td = fc_now() - t0;
    const char *name = strrchr(dirs[d], '/') ? strrchr(dirs[d], '/') + 1 : dirs[d];
    printf("%-28s %-13s %10.1f %10.0f %12.2f %10.1f  (%zu tokens)%s\n", name,
           fc_tok_kind(t) == FC_TOK_BYTELEVEL ? "byte-level" : "sentencepiece", clen / 1e6 / te, ntok / te,
           (double)clen / (double)ntok, clen / 1e6 / td, ntok, fc_tok_kind(t) == FC_TOK_BYTELEVEL && strcmp(text, corpus) ? "  (DECODE DIFFERS FROM TEXT)" : "");
    free(text);
    free(all);
    fc_tok_destroy(&t);
  }
  /* trainer: an 8k vocabulary from the first 3 MB */
  size_t tlen = clen < 3000000 ? clen : 3000000;
  while (tlen < clen && corpus[tlen - 1] != '\n') tlen++;
  for (int kind = 0; kind < 2; kind++) {
    fc_bpe_train_opts_t o = {.kind = kind ? FC_TOK_SENTENCEPIECE : FC_TOK_BYTELEVEL, .vocab_size = 8000};
    char *json;
    fc_err_t err = {0};
    double t0 = fc_now();
    if (fc_bpe_train(corpus, tlen, &o, &json, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    double tt = fc_now() - t0;
    fc_tok_t *t;
    if (fc_tok_load_json(&t, json, strlen(json), NULL, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    printf("train %-13s vocab %d on %.1f MB: %.2f s\n", kind ? "sentencepiece" : "byte-level", fc_tok_vocab_size(t),
           tlen / 1e6, tt);
    fc_tok_destroy(&t);
    free(json);
  }
  free(corpus);
  return 0;
}
