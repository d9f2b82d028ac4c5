/* Alignment throughput (aligned tokens per second, one core) on ~5 MB of text between two real
 * tokenizers of different families (Llama-2's SentencePiece BPE as the source, Qwen3's byte-level
 * BPE as the pivot, from tests/fixtures/tok), beside the full-matrix DP and the Python reference
 * method measured in the same run; also the top-K store's bytes per token against raw u32 id +
 * f32 storage.
 *
 * The text: this repository's own sources and the multilingual tokenizer test corpus (real prose
 * and code, Unicode, emoji), interleaved with generated chat conversations rendered in ChatML
 * (what the pipeline aligns), cut into ~4 KB documents at line ends. Token strings are what the
 * stages use: fc_tok_token_text of each id, concatenated. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_align.h"
#include "fc_chat.h"
#include "fc_gendata.h"
#include "fc_tok.h"
#include "fc_topk.h"

/* CPU seconds of this thread: the machine is shared, so one core's throughput is measured in
 * CPU time (wall time is printed too). */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct toks {
  uint32_t n;
  uint32_t *ids, *start;
  char *bytes; /* token texts, concatenated */
} toks_t;

static int tokenize(const fc_tok_t *tok, const char *text, uint32_t len, toks_t *t) {
  int32_t *ids;
  size_t n;
  fc_err_t err = {0};
  if (fc_tok_encode(tok, text, len, FC_TOK_PARSE_SPECIAL, &ids, NULL, &n, &err)) {
    fprintf(stderr, "tokenize: %s\n", err.msg);
    return -1;
  }
  size_t cap = (size_t)len * 2 + 64, pos = 0;
  t->bytes = fc_xmalloc(cap);
  t->ids = fc_xmalloc((n + 1) * 4);
  t->start = fc_xmalloc((n + 1) * 4);
  for (size_t i = 0; i < n; i++) {
    size_t l = fc_tok_token_text(tok, ids[i], t->bytes + pos, cap - pos);
    while (l > cap - pos) {
      cap *= 2;
      t->bytes = fc_xrealloc(t->bytes, cap);
      l = fc_tok_token_text(tok, ids[i], t->bytes + pos, cap - pos);
    }
    t->ids[i] = (uint32_t)ids[i];
    t->start[i] = (uint32_t)pos;
    pos += l;
  }
  t->start[n] = (uint32_t)pos;
  t->n = (uint32_t)n;
  free(ids);
  return 0;
}

static void write_sample(FILE *f, const toks_t *t, uint32_t a, uint32_t b) {
  /* one line of tokens, each as hex bytes, for the Python reference */
  for (uint32_t i = a; i < b; i++) {
    for (uint32_t k = t->start[i]; k < t->start[i + 1]; k++) fprintf(f, "%02x", (uint8_t)t->bytes[k]);
    fputc(i + 1 < b ? ' ' : '\n', f);
  }
}

typedef struct buf {
  char *p;
  size_t n, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = fc_xrealloc(b->p, b->cap);
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void add_file(buf_t *b, const char *path) {
  char *t;
  size_t n;
  fc_err_t err = {0};
  if (fc_read_file(path, &t, &n, &err) == 0) {
    buf_add(b, t, n);
    if (n && t[n - 1] != '\n') buf_add(b, "\n", 1);
    free(t);
  }
}

/* The repository's .c/.h/.py/.md files under dir (sorted, so the corpus is the same every run). */
static void add_dir(buf_t *b, const char *dir) {
  struct dirent **ents;
  int n = scandir(dir, &ents, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    const char *e = strrchr(ents[i]->d_name, '.');
    if (e && (!strcmp(e, ".c") || !strcmp(e, ".h") || !strcmp(e, ".py") || !strcmp(e, ".md"))) {
      char *p = fc_path_join(dir, ents[i]->d_name);
      add_file(b, p);
      free(p);
    }
    free(ents[i]);
  }
  if (n >= 0) free(ents);
}

/* Generated conversations rendered in ChatML, about `bytes` of them. */
static int add_chats(buf_t *b, size_t bytes) {
  char path[] = "/tmp/fc_bench_chats_XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return -1;
  close(fd);
  fc_gendata_opts_t o = {.count = bytes / 150 + 1, .mix = {1, 1, 1, 1}, .split = FC_GENDATA_TRAIN, .seed = 1,
                     .world_seed = 1, .max_turns = 3};
  fc_err_t err = {0};
  char *data = NULL;
  size_t len = 0;
  int rc = fc_gendata_write(&o, path, &err);
  if (!rc) rc = fc_read_file(path, &data, &len, &err);
  unlink(path);
  for (char *line = data; !rc && line && *line && b->n < bytes;) {
    char *nl = strchr(line, '\n');
    size_t ll = nl ? (size_t)(nl - line) : strlen(line);
    fc_chat_conv_t conv = {0};
    char *text;
    size_t tl, nsp;
    fc_chat_span_t *sp;
    if (fc_chat_parse_sharegpt(line, ll, &conv, &err) == 0 &&
        fc_chat_render(FC_CHAT_CHATML, conv.msgs, conv.n, &text, &tl, &sp, &nsp, &err) == 0) {
      buf_add(b, text, tl);
      free(text);
      free(sp);
    }
    fc_chat_conv_free(&conv);
    line = nl ? nl + 1 : line + ll;
  }
  free(data);
  return rc;
}

/* The next document of about want bytes from b at *pos, ending at a line end. */
static size_t next_doc(const buf_t *b, size_t *pos, size_t want) {
  if (*pos >= b->n) *pos = 0;
  size_t a = *pos, e = a + want < b->n ? a + want : b->n;
  while (e < b->n && b->p[e - 1] != '\n') e++;
  *pos = e;
  return a;
}

int main(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("Usage: bench_align [MB [MARGIN]]\n"
           "Aligns MB (default 5) of text tokenized by two real tokenizers (Llama-2 source, Qwen3\n"
           "pivot) on one core and prints aligned tokens/s beside the full DP and the Python\n"
           "reference, and the top-K store's bytes per token.\n");
    return 0;
  }
  uint32_t mb = argc > 1 ? (uint32_t)atoi(argv[1]) : 5;
  if (argc > 1 && mb == 0) {
    fprintf(stderr, "bench_align: MB must be a positive number (try --help)\n");
    return 2;
  }
  int margin = argc > 2 ? atoi(argv[2]) : FC_ALIGN_DEFAULT_MARGIN;
  fc_err_t err = {0};
  fc_tok_t *tok_s = NULL, *tok_p = NULL;
  if (fc_tok_load(&tok_s, FC_SOURCE_DIR "/tests/fixtures/tok/llama2", &err) ||
      fc_tok_load(&tok_p, FC_SOURCE_DIR "/tests/fixtures/tok/qwen3", &err)) {
    fprintf(stderr, "bench_align: %s\n", err.msg);
    return 1;
  }
  printf("tokenizers: source Llama-2 (SentencePiece BPE, vocab %d), pivot Qwen3 (byte-level BPE, vocab %d)\n",
         fc_tok_vocab_size(tok_s), fc_tok_vocab_size(tok_p));
  buf_t real = {0}, chats = {0};
  static const char *dirs[] = {"common", "tools/fusectl", "tests", "bench", "daemons", "proto"};
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
    char *d = fc_path_join(FC_SOURCE_DIR, dirs[i]);
    add_dir(&real, d);
    free(d);
  }
  add_file(&real, FC_SOURCE_DIR "/tests/fixtures/tok/train_corpus.txt");
  size_t total = (size_t)mb * 1024 * 1024;
  if (add_chats(&chats, total / 2 + 1) || real.n == 0) {
    fprintf(stderr, "bench_align: cannot build the corpus\n");
    return 1;
  }
  /* Documents of ~4 KB, alternating real text and conversations. */
  uint32_t doc = 4096, ndoc = 0, capd = 64;
  char **texts = fc_xmalloc(capd * sizeof *texts);
  uint32_t *lens = fc_xmalloc(capd * 4);
  size_t pr = 0, pc = 0, got = 0;
  while (got < total) {
    const buf_t *b = ndoc % 2 ? &chats : &real;
    size_t *pos = ndoc % 2 ? &pc : &pr;
    size_t a = next_doc(b, pos, doc);
    if (ndoc == capd) {
      capd *= 2;
      texts = fc_xrealloc(texts, capd * sizeof *texts);
      lens = fc_xrealloc(lens, capd * 4);
    }
    lens[ndoc] = (uint32_t)(*pos - a);
    texts[ndoc] = fc_xmalloc(lens[ndoc] + 1);
    memcpy(texts[ndoc], b->p + a, lens[ndoc]);
    texts[ndoc][lens[ndoc]] = 0;
    got += lens[ndoc];
    ndoc++;
  }
  free(real.p);
  free(chats.p);
  toks_t *ta = fc_xcalloc(ndoc, sizeof *ta), *tb = fc_xcalloc(ndoc, sizeof *tb);
  uint64_t bytes = 0, na = 0, nb = 0;
  double tt0 = cpu_now();
  for (uint32_t d = 0; d < ndoc; d++) {
    if (tokenize(tok_s, texts[d], lens[d], &ta[d]) || tokenize(tok_p, texts[d], lens[d], &tb[d])) return 1;
    bytes += lens[d];
    na += ta[d].n;
    nb += tb[d].n;
  }
  double ttok = cpu_now() - tt0;
  printf("text: %.2f MB in %u documents; source %lu tokens, pivot %lu tokens "
         "(tokenizing both: %.2f s CPU, not counted below)\n",
         bytes / 1048576.0, ndoc, (unsigned long)na, (unsigned long)nb, ttok);

  fc_aligner_t *al = fc_aligner_new(margin);
  fc_align_result_t res = {0};
  uint64_t cells = 0, edc = 0, hits = 0, path = 0;
  int64_t cost = 0;
  double t0 = fc_now(), c0 = cpu_now();
  for (uint32_t d = 0; d < ndoc; d++) {
    fc_align_seq_t s = {ta[d].n, ta[d].bytes, ta[d].start, NULL};
    fc_align_seq_t p = {tb[d].n, tb[d].bytes, tb[d].start, NULL};
    if (fc_align_mined(al, &s, &p, &res, &err)) {
      fprintf(stderr, "align: %s\n", err.msg);
      return 1;
    }
    fc_align_stats_t st = fc_aligner_stats(al);
    cells += st.cells;
    edc += st.ed_calls;
    hits += st.cache_hits;
    cost += res.cost;
    path += res.n_path;
  }
  double wall = fc_now() - t0, dt = cpu_now() - c0;
  printf("banded MinED (margin %d): %.2f s CPU (%.2f s wall), %.2f M pivot tokens/s, %.2f M source+pivot tokens/s, "
         "%.1f cells/row, %.2f edit distances computed per token, cache hit rate %.1f%%, cost %ld\n",
         margin, dt, wall, nb / dt / 1e6, (na + nb) / dt / 1e6, (double)cells / na, (double)edc / nb,
         100.0 * hits / (hits + edc + 1e-9), (long)cost);

  /* The full O(nm) DP on a subset, and the banded cost on the same subset. */
  uint32_t nsub = ndoc < 40 ? ndoc : 40;
  int64_t cost_full = 0, cost_band = 0;
  uint64_t sub_tok = 0;
  t0 = cpu_now();
  for (uint32_t d = 0; d < nsub; d++) {
    fc_align_seq_t s = {ta[d].n, ta[d].bytes, ta[d].start, NULL};
    fc_align_seq_t p = {tb[d].n, tb[d].bytes, tb[d].start, NULL};
    fc_align_full(al, &s, &p, &res, &err);
    cost_full += res.cost;
    sub_tok += tb[d].n;
  }
  double dtf = cpu_now() - t0;
  for (uint32_t d = 0; d < nsub; d++) {
    fc_align_seq_t s = {ta[d].n, ta[d].bytes, ta[d].start, NULL};
    fc_align_seq_t p = {tb[d].n, tb[d].bytes, tb[d].start, NULL};
    fc_align_mined(al, &s, &p, &res, &err);
    cost_band += res.cost;
  }
  printf("full O(nm) DP on %u documents: %.3f M pivot tokens/s (banded is %.0fx faster); "
         "cost full %ld vs banded %ld (+%.4f%%)\n",
         nsub, sub_tok / dtf / 1e6, (sub_tok / dtf) > 0 ? (nb / dt) / (sub_tok / dtf) : 0,
         (long)cost_full, (long)cost_band, 100.0 * (cost_band - cost_full) / (cost_full + 1e-9));

  /* Python reference (FuseChat's dtw with a pure-Python Levenshtein) on a few documents. */
  char sample[] = "/tmp/fc_bench_align_XXXXXX";
  int fd = mkstemp(sample);
  if (fd >= 0) {
    FILE *f = fdopen(fd, "w");
    for (uint32_t d = 0; d < 3 && d < ndoc; d++) {
      write_sample(f, &ta[d], 0, ta[d].n < 400 ? ta[d].n : 400);
      write_sample(f, &tb[d], 0, tb[d].n < 400 ? tb[d].n : 400);
    }
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s/bench/align_ref.py %s 2>/dev/null", FC_SOURCE_DIR, sample);
    FILE *pp = popen(cmd, "r");
    double ref = 0;
    if (pp && fscanf(pp, "%lf", &ref) == 1 && ref > 0)
      printf("Python reference (full DTW, pure-Python edit distance): %.0f pivot tokens/s; "
             "banded C is %.0fx faster\n", ref, (nb / dt) / ref);
    else
      printf("Python reference: not run (python3 or bench/align_ref.py unavailable)\n");
    if (pp) pclose(pp);
    unlink(sample);
  }

  /* Log-prob quantisation error: our u16 code vs f16, on log-probs uniform in [-30, 0]. */
  {
    fc_rng_t r;
    fc_rng_seed(&r, 5);
    double emax = 0, esum = 0, hmax = 0, hsum = 0;
    int cnt = 1000000;
    for (int i = 0; i < cnt; i++) {
      float lp = -30.0f * (float)fc_rng_uniform(&r);
      double e = fabs((double)fc_topk_lp_decode(fc_topk_lp_encode(lp)) - lp);
      double h = fabs((double)fc_f16_to_f32(fc_f32_to_f16(lp)) - lp);
      emax = e > emax ? e : emax;
      hmax = h > hmax ? h : hmax;
      esum += e;
      hsum += h;
    }
    printf("log-prob error over [-30, 0] nats: u16 code max %.2e mean %.2e; f16 max %.2e mean %.2e\n",
           emax, esum / cnt, hmax, hsum / cnt);
  }
  /* Top-K store size at K = 10. */
  for (int v = 0; v < 2; v++) {
    uint32_t vocab = v ? 152064 : 32000;
    uint64_t b = fc_topk_example_bytes(1000, 10, vocab);
    printf("top-K store at K=10, vocab %u: %.2f bytes/token (raw u32 id + f32 per entry: %d bytes/token, "
           "budget K*6 = 60)\n",
           vocab, b / 1000.0, 10 * 8);
  }
  /* ... and measured on a written file: the pivot tokenization of the whole text, K = 10. */
  {
    char path[] = "/tmp/fc_bench_topk_XXXXXX";
    int tfd = mkstemp(path);
    if (tfd >= 0) close(tfd);
    fc_topk_writer_t *w = NULL;
    uint32_t pv = (uint32_t)fc_tok_vocab_size(tok_p);
    fc_topk_info_t info = {.model_id = "bench", .k = 10, .vocab = pv};
    fc_topk_ex_t ex = {0};
    fc_rng_t r;
    fc_rng_seed(&r, 9);
    int ok = fc_topk_writer_new(&w, path, &info, &err) == 0;
    for (uint32_t d = 0; ok && d < ndoc; d++) {
      fc_topk_ex_reserve(&ex, tb[d].n, 10);
      ex.n = tb[d].n;
      for (uint32_t i = 0; i < ex.n; i++) {
        ex.ids[i] = tb[d].ids[i];
        ex.mask[i] = 1;
        float lp = -0.1f;
        for (int x = 0; x < 10; x++, lp -= (float)fc_rng_uniform(&r)) {
          ex.top_ids[i * 10 + x] = (uint32_t)(fc_rng_u64(&r) % pv);
          ex.top_lp[i * 10 + x] = lp;
        }
      }
      ex.mean_ce = 1;
      ok = fc_topk_writer_add(w, &ex, &err) == 0;
    }
    if (ok) ok = fc_topk_writer_finish(w, &err) == 0;
    fc_topk_writer_destroy(&w);
    fc_topk_ex_free(&ex);
    FILE *f = ok ? fopen(path, "rb") : NULL;
    if (f) {
      fseek(f, 0, SEEK_END);
      printf("written store (K=10, pivot vocab %u, %u examples): %.2f bytes/token including header and index "
             "(raw u32 id + f32: 80)\n", pv, ndoc, (double)ftell(f) / (double)nb);
      fclose(f);
    }
    unlink(path);
  }
  fc_align_result_free(&res);
  fc_aligner_destroy(&al);
  for (uint32_t d = 0; d < ndoc; d++) {
    free(texts[d]);
    free(ta[d].ids);
    free(ta[d].start);
    free(ta[d].bytes);
    free(tb[d].ids);
    free(tb[d].start);
    free(tb[d].bytes);
  }
  free(texts);
  free(lens);
  free(ta);
  free(tb);
  fc_tok_destroy(&tok_s);
  fc_tok_destroy(&tok_p);
  return 0;
}
