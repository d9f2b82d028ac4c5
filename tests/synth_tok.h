/* Two simple deterministic tokenizers and a text generator, standing in for real tokenizers in
 * alignment tests and benchmarks until fc_tok is on main: greedy longest match over synthetic
 * vocabularies, one SentencePiece-like (words carry the preceding space: "▁word" whose text is
 * " word"; digits grouped) and one byte-level-like (space runs and newlines are their own tokens,
 * digits one by one, different sub-word pieces). Both fall back to single bytes, so every text
 * is covered. Header-only; used by tests/test_align.c and bench/align.c. */
#ifndef SYNTH_TOK_H
#define SYNTH_TOK_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fc_util.h"

typedef struct synth_vocab {
  uint32_t n, cap;
  char **piece;
  uint32_t *len;
  uint32_t *table; /* open addressing: id + 1, 0 = empty */
  uint32_t tcap;
  uint32_t maxlen;
} synth_vocab_t;

static __attribute__((unused)) uint64_t synth_hash(const char *s, uint32_t len) {
  uint64_t h = 1469598103934665603ULL;
  for (uint32_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
  return h;
}

static __attribute__((unused)) int64_t synth_find(const synth_vocab_t *v, const char *s, uint32_t len) {
  if (v->tcap == 0) return -1;
  uint32_t mask = v->tcap - 1, h = (uint32_t)synth_hash(s, len) & mask;
  for (;; h = (h + 1) & mask) {
    uint32_t e = v->table[h];
    if (!e) return -1;
    if (v->len[e - 1] == len && memcmp(v->piece[e - 1], s, len) == 0) return e - 1;
  }
}

static __attribute__((unused)) void synth_add(synth_vocab_t *v, const char *s, uint32_t len) {
  if (len == 0 || synth_find(v, s, len) >= 0) return;
  if (v->n == v->cap) {
    v->cap = v->cap ? v->cap * 2 : 1024;
    v->piece = fc_xrealloc(v->piece, v->cap * sizeof *v->piece);
    v->len = fc_xrealloc(v->len, v->cap * sizeof *v->len);
  }
  if ((v->n + 1) * 2 > v->tcap) {
    uint32_t nc = v->tcap ? v->tcap * 2 : 4096;
    free(v->table);
    v->table = fc_xcalloc(nc, sizeof *v->table);
    v->tcap = nc;
    for (uint32_t i = 0; i < v->n; i++) {
      uint32_t h = (uint32_t)synth_hash(v->piece[i], v->len[i]) & (nc - 1);
      while (v->table[h]) h = (h + 1) & (nc - 1);
      v->table[h] = i + 1;
    }
  }
  v->piece[v->n] = fc_xmalloc(len + 1);
  memcpy(v->piece[v->n], s, len);
  v->piece[v->n][len] = 0;
  v->len[v->n] = len;
  uint32_t h = (uint32_t)synth_hash(s, len) & (v->tcap - 1);
  while (v->table[h]) h = (h + 1) & (v->tcap - 1);
  v->table[h] = v->n + 1;
  if (len > v->maxlen) v->maxlen = len;
  v->n++;
}

static __attribute__((unused)) void synth_vocab_free(synth_vocab_t *v) {
  for (uint32_t i = 0; i < v->n; i++) free(v->piece[i]);
  free(v->piece);
  free(v->len);
  free(v->table);
  memset(v, 0, sizeof *v);
}

/* The lexicon: word i of a fixed pseudo-random list (letters, a few accented and CJK words). */
static __attribute__((unused)) uint32_t synth_word(uint32_t i, char *out) {
  static const char *syl[] = {"th", "e", "an", "re", "on", "in", "er", "st", "ing", "al", "ou",
                              "ch", "qu", "ly", "ment", "tion", "ca", "fé", "你", "好", "ß", "o"};
  uint64_t h = fc_splitmix64(i + 12345);
  uint32_t nsyl = 1 + (uint32_t)(h % 4), len = 0;
  h >>= 8;
  for (uint32_t k = 0; k < nsyl; k++, h >>= 5) {
    /* CJK and accented syllables are rarer */
    uint32_t s = (uint32_t)(h % 22);
    if (s >= 17 && (h & 0x300)) s = (uint32_t)(h % 17);
    size_t l = strlen(syl[s]);
    memcpy(out + len, syl[s], l);
    len += (uint32_t)l;
  }
  return len;
}

enum { SYNTH_LEXICON = 5000 };

/* style 0: SentencePiece-like; style 1: byte-level-like. */
static __attribute__((unused)) void synth_vocab_build(synth_vocab_t *v, int style, uint32_t size) {
  memset(v, 0, sizeof *v);
  char b[2] = {0, 0};
  for (int c = 0; c < 256; c++) {
    b[0] = (char)c;
    synth_add(v, b, 1);
  }
  char w[64], t[80];
  fc_rng_t r;
  fc_rng_seed(&r, 77 + (uint64_t)style);
  for (uint32_t i = 0; i < SYNTH_LEXICON && v->n < size; i++) {
    uint32_t l = synth_word(i, w);
    /* frequent words are whole tokens; both styles put the space in front of a word */
    if (i < (style ? 1500u : 2500u)) {
      t[0] = ' ';
      memcpy(t + 1, w, l);
      synth_add(v, t, l + 1);
      if (style) synth_add(v, w, l);
    }
    /* sub-word pieces: different lengths per style */
    uint32_t minp = style ? 2 : 3, maxp = style ? 3 : 5;
    for (uint32_t a = 0; a < l && v->n < size; a++)
      for (uint32_t pl = minp; pl <= maxp && a + pl <= l; pl++)
        if (fc_rng_uniform(&r) < 0.5) synth_add(v, w + a, pl);
  }
  if (style == 0) {
    synth_add(v, "00", 2);
    synth_add(v, "000", 3);
    synth_add(v, ", ", 2);
    synth_add(v, ". ", 2);
  } else {
    synth_add(v, "\n\n", 2);
    synth_add(v, "  ", 2);
    synth_add(v, "    ", 4);
    synth_add(v, ".\n", 2);
  }
}

/* Greedy longest match; writes ids and starts ([n + 1]); returns n. */
static __attribute__((unused)) uint32_t synth_encode(const synth_vocab_t *v, const char *text, uint32_t len, uint32_t *ids,
                             uint32_t *start) {
  uint32_t n = 0, pos = 0;
  while (pos < len) {
    uint32_t best = 1;
    int64_t id = -1;
    uint32_t maxl = v->maxlen < len - pos ? v->maxlen : len - pos;
    for (uint32_t l = maxl; l >= 1; l--) {
      int64_t f = synth_find(v, text + pos, l);
      if (f >= 0) {
        id = f;
        best = l;
        break;
      }
    }
    start[n] = pos;
    ids[n++] = (uint32_t)id;
    pos += best;
  }
  start[n] = pos;
  return n;
}

/* Text of about nbytes: Zipf-distributed words, punctuation, digits, newlines. */
static char *synth_text(uint64_t seed, uint32_t nbytes, uint32_t *out_len) {
  char *t = fc_xmalloc(nbytes + 128);
  uint32_t len = 0;
  fc_rng_t r;
  fc_rng_seed(&r, seed);
  char w[64];
  while (len < nbytes) {
    double u = fc_rng_uniform(&r);
    if (u < 0.03) {
      t[len++] = '\n';
      if (fc_rng_uniform(&r) < 0.5) t[len++] = '\n';
      continue;
    }
    if (u < 0.05) {
      len += (uint32_t)snprintf(t + len, 32, " %u", (unsigned)(fc_rng_u64(&r) % 100000));
      continue;
    }
    if (u < 0.12) {
      t[len++] = ".,;:!?"[fc_rng_u64(&r) % 6];
      continue;
    }
    /* Zipf-ish rank: inverse of a power of a uniform */
    double z = fc_rng_uniform(&r);
    uint32_t rank = (uint32_t)(SYNTH_LEXICON * z * z * z);
    t[len++] = ' ';
    uint32_t l = synth_word(rank, w);
    memcpy(t + len, w, l);
    len += l;
  }
  t[len] = 0;
  *out_len = len;
  return t;
}

#endif
