/* Alignment throughput (aligned tokens per second, one core) on ~5 MB of text between two
 * different tokenizations, beside the full-matrix DP and the Python reference method measured
 * in the same run; also the top-K store's bytes per token against raw u32 id + f32 storage.
 *
 * Tokenizers: until fc_tok is on main this uses the two synthetic greedy-longest-match
 * tokenizers of tests/synth_tok.h (SentencePiece-like vs byte-level-like pieces). To use real
 * ones, replace tokenize() below with fc_tok_encode + fc_tok_token_text: it only has to fill
 * token texts (concatenated), their starts and byte offsets. */
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_align.h"
#include "fc_topk.h"
#include "synth_tok.h"

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

/* The seam for real tokenizers: text in, token ids and texts out. */
static void tokenize(const synth_vocab_t *v, const char *text, uint32_t len, toks_t *t) {
  t->ids = fc_xmalloc(((size_t)len + 1) * 4);
  t->start = fc_xmalloc(((size_t)len + 2) * 4);
  t->n = synth_encode(v, text, len, t->ids, t->start);
  t->bytes = (char *)text; /* greedy segmentation: token texts are the text's bytes */
}

static void write_sample(FILE *f, const toks_t *t, uint32_t a, uint32_t b) {
  /* one line of tokens, each as hex bytes, for the Python reference */
  for (uint32_t i = a; i < b; i++) {
    for (uint32_t k = t->start[i]; k < t->start[i + 1]; k++) fprintf(f, "%02x", (uint8_t)t->bytes[k]);
    fputc(i + 1 < b ? ' ' : '\n', f);
  }
}

int main(int argc, char **argv) {
  uint32_t mb = argc > 1 ? (uint32_t)atoi(argv[1]) : 5;
  int margin = argc > 2 ? atoi(argv[2]) : FC_ALIGN_DEFAULT_MARGIN;
  printf("tokenizers: SYNTHETIC greedy longest-match (SentencePiece-like vs byte-level-like), "
         "not real fc_tok tokenizers yet\n");
  synth_vocab_t va, vb;
  synth_vocab_build(&va, 0, 64000);
  synth_vocab_build(&vb, 1, 64000);
  /* Documents of ~4 KB, as a dataset of conversations would give. */
  uint32_t doc = 4096, ndoc = mb * 1024 * 1024 / doc;
  char **texts = fc_xmalloc(ndoc * sizeof *texts);
  uint32_t *lens = fc_xmalloc(ndoc * 4);
  toks_t *ta = fc_xcalloc(ndoc, sizeof *ta), *tb = fc_xcalloc(ndoc, sizeof *tb);
  uint64_t bytes = 0, na = 0, nb = 0;
  for (uint32_t d = 0; d < ndoc; d++) {
    texts[d] = synth_text(d + 1, doc, &lens[d]);
    tokenize(&va, texts[d], lens[d], &ta[d]);
    tokenize(&vb, texts[d], lens[d], &tb[d]);
    bytes += lens[d];
    na += ta[d].n;
    nb += tb[d].n;
  }
  printf("text: %.2f MB in %u documents; source %lu tokens (vocab %u), pivot %lu tokens (vocab %u)\n",
         bytes / 1048576.0, ndoc, (unsigned long)na, va.n, (unsigned long)nb, vb.n);

  fc_aligner_t *al = fc_aligner_new(margin);
  fc_align_result_t res = {0};
  fc_err_t err = {0};
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
    fc_topk_info_t info = {.model_id = "bench", .k = 10, .vocab = 32000};
    fc_topk_ex_t ex = {0};
    fc_rng_t r;
    fc_rng_seed(&r, 9);
    int ok = fc_topk_writer_new(&w, path, &info, &err) == 0;
    for (uint32_t d = 0; ok && d < ndoc; d++) {
      fc_topk_ex_reserve(&ex, tb[d].n, 10);
      ex.n = tb[d].n;
      for (uint32_t i = 0; i < ex.n; i++) {
        ex.ids[i] = tb[d].ids[i] % 32000;
        ex.mask[i] = 1;
        float lp = -0.1f;
        for (int x = 0; x < 10; x++, lp -= (float)fc_rng_uniform(&r)) {
          ex.top_ids[i * 10 + x] = (uint32_t)(fc_rng_u64(&r) % 32000);
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
      printf("written store (K=10, vocab 32000, %u examples): %.2f bytes/token including header and index\n",
             ndoc, (double)ftell(f) / (double)nb);
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
    free(tb[d].ids);
    free(tb[d].start);
  }
  free(texts);
  free(lens);
  free(ta);
  free(tb);
  synth_vocab_free(&va);
  synth_vocab_free(&vb);
  return 0;
}
