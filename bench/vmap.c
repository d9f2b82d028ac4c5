/* Vocabulary map construction time (FuseLLM's MinED map: exact text, else nearest by edit
 * distance) for vocabularies of 32k-150k tokens, beside a brute-force scan of the whole pivot
 * vocabulary per source token measured on a sample in the same run.
 * Vocabularies are synthetic (substrings of generated text, as BPE pieces are), not real ones. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_vmap.h"
#include "synth_tok.h"

/* n distinct pieces cut from generated text at random places, lengths 1..12 bytes. */
static fc_vocab_t make_vocab(uint32_t n, uint64_t seed) {
  synth_vocab_t v;
  memset(&v, 0, sizeof v);
  uint32_t len;
  char *text = synth_text(seed, 4u << 20, &len);
  fc_rng_t r;
  fc_rng_seed(&r, seed * 7 + 1);
  while (v.n < n) {
    uint32_t a = (uint32_t)(fc_rng_u64(&r) % (len - 16));
    uint32_t l = 1 + (uint32_t)(fc_rng_u64(&r) % 12);
    while (a > 0 && ((uint8_t)text[a] & 0xc0) == 0x80) a--;
    synth_add(&v, text + a, l);
  }
  uint32_t *start = fc_xmalloc(((size_t)n + 1) * 4), tot = 0;
  for (uint32_t i = 0; i < n; i++) start[i] = tot, tot += v.len[i];
  start[n] = tot;
  char *b = fc_xmalloc(tot + 1);
  for (uint32_t i = 0; i < n; i++) memcpy(b + start[i], v.piece[i], v.len[i]);
  synth_vocab_free(&v);
  free(text);
  return (fc_vocab_t){n, b, start};
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  printf("vocabularies: SYNTHETIC (pieces of generated text), MinED search with %d threads\n", threads);
  uint32_t sizes[][2] = {{32000, 32000}, {32000, 152064}, {152064, 32000}};
  for (int c = 0; c < 3; c++) {
    fc_vocab_t sv = make_vocab(sizes[c][0], 11), pv = make_vocab(sizes[c][1], 22);
    fc_err_t err = {0};
    fc_vmap_t *m = NULL;
    double t0 = fc_now();
    if (fc_vmap_build(&m, FC_VMAP_MINED, NULL, &sv, &pv, threads, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    double dt = fc_now() - t0;
    uint32_t exact = 0, mined = 0;
    for (uint32_t s = 0; s < sv.n; s++) {
      exact += m->how[s] == FC_VMAP_BY_EXACT;
      mined += m->how[s] == FC_VMAP_BY_MINED;
    }
    /* brute force on a sample of the mined ones */
    fc_mined_index_t *ix = fc_mined_index_new(&pv);
    uint32_t sample = 0, agree = 0;
    double tb = fc_now();
    for (uint32_t s = 0; s < sv.n && sample < 30; s++) {
      if (m->how[s] != FC_VMAP_BY_MINED) continue;
      uint32_t best = UINT32_MAX, bid = 0, sl = sv.start[s + 1] - sv.start[s];
      for (uint32_t p = 0; p < pv.n; p++) {
        uint32_t pl = pv.start[p + 1] - pv.start[p];
        if (!pl) continue;
        uint32_t d = fc_edit_distance(sv.bytes + sv.start[s], sl, pv.bytes + pv.start[p], pl);
        if (d < best) best = d, bid = p;
      }
      agree += bid == m->map[s];
      sample++;
    }
    double tbs = (fc_now() - tb) / (sample ? sample : 1);
    printf("%6u -> %6u: %.2f s (%u exact, %u by MinED: %.0f MinED lookups/s); brute-force scan "
           "%.2f ms per token, would take %.0f s for the MinED ones; sample agrees %u/%u\n",
           sv.n, pv.n, dt, exact, mined, mined / dt, tbs * 1e3, tbs * mined, agree, sample);
    fc_mined_index_destroy(&ix);
    fc_vmap_destroy(&m);
    fc_vocab_free(&sv);
    fc_vocab_free(&pv);
  }
  return 0;
}
