/* Private to fc_tok: the tokenizer's structure (vocabulary and merge tables, the normalizer,
 * pre-tokenizer and decoder steps, added-token matchers), the byte buffers with offset maps
 * the pipeline passes along, and what the loading, encoding and decoding files share. */
#ifndef FC_TOK_IMPL_H
#define FC_TOK_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include "fc_tok.h"

#include "fc_utf8.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>

/* ---------- small containers ---------- */

typedef struct {
  char *b;
  uint32_t *o; /* original byte offset of each byte */
  size_t n, cap;
} nbuf_t;

static inline void nb_reserve(nbuf_t *nb, size_t extra) {
  if (nb->n + extra <= nb->cap) return;
  size_t cap = nb->cap ? nb->cap * 2 : 64;
  while (cap < nb->n + extra) cap *= 2;
  nb->b = fc_xrealloc(nb->b, cap);
  nb->o = fc_xrealloc(nb->o, cap * sizeof *nb->o);
  nb->cap = cap;
}
static inline void nb_put(nbuf_t *nb, const char *s, size_t n, uint32_t off) {
  nb_reserve(nb, n);
  memcpy(nb->b + nb->n, s, n);
  for (size_t i = 0; i < n; i++) nb->o[nb->n + i] = off;
  nb->n += n;
}
static inline void nb_free(nbuf_t *nb) {
  free(nb->b);
  free(nb->o);
  memset(nb, 0, sizeof *nb);
}

typedef struct {
  uint32_t s, e;
} span_t;
typedef struct {
  span_t *v;
  size_t n, cap;
} spans_t;
static inline void sp_push(spans_t *sp, uint32_t s, uint32_t e) {
  if (sp->n == sp->cap) {
    sp->cap = sp->cap ? sp->cap * 2 : 16;
    sp->v = fc_xrealloc(sp->v, sp->cap * sizeof *sp->v);
  }
  sp->v[sp->n].s = s;
  sp->v[sp->n].e = e;
  sp->n++;
}

typedef struct {
  int32_t *ids;
  uint32_t *off;
  size_t n, cap;
} out_t;
static inline void out_push(out_t *o, int32_t id, uint32_t off) {
  if (o->n == o->cap) {
    o->cap = o->cap ? o->cap * 2 : 64;
    o->ids = fc_xrealloc(o->ids, o->cap * sizeof *o->ids);
    o->off = fc_xrealloc(o->off, o->cap * sizeof *o->off);
  }
  o->ids[o->n] = id;
  o->off[o->n] = off;
  o->n++;
}

/* Unicode White_Space, as Rust's char::is_whitespace. */
static inline int is_ws(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}
#define WS_CLASS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* ---------- the tokenizer ---------- */

enum { N_UNORM, N_PREPEND, N_REPLACE };
typedef struct {
  int kind;
  const UNormalizer2 *un;
  uint32_t fast_below; /* code points below this are stable under the normal form */
  char *a, *b;
  size_t alen, blen;
} norm_op_t;

enum { P_SPLIT, P_BYTELEVEL, P_METASPACE };
enum { B_ISOLATED, B_REMOVED, B_PREV, B_NEXT, B_CONTIG };
typedef struct {
  int kind;
  pcre2_code *re;
  int behavior, invert;
  int add_prefix_space, use_regex;
  char repl[8];
  size_t repl_len;
  int prepend; /* 0 never, 1 always, 2 first */
  int split;
} pre_op_t;

enum { D_BYTELEVEL, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_METASPACE };
typedef struct {
  int kind;
  char *a, *b;
  size_t alen, blen;
  int start, stop, prepend;
} dec_op_t;

typedef struct {
  int32_t id;
  char *content;
  size_t len;
  char *m; /* the string matched: content, or content normalized for normalized tokens */
  size_t mlen;
  int special, lstrip, rstrip, single_word, normalized;
} added_t;

/* Added tokens matched in one phase: leftmost, then longest. */
typedef struct {
  added_t *v; /* sorted by first byte of m, then longer first */
  size_t n;
  int32_t first[256], end[256];
} matcher_t;

typedef struct {
  uint64_t key;
  int32_t rank, id;
} merge_ent_t;

struct fc_tok {
  fc_tok_kind_t kind;
  int32_t n_vocab;
  char **pieces;
  uint32_t *plen;
  uint8_t *in_model, *special;
  /* string -> id */
  int32_t *htab;
  uint32_t hmask;
  /* (a, b) -> rank, id */
  merge_ent_t *mtab;
  uint32_t mmask;
  int32_t n_merges;
  int32_t *merge_pairs; /* [n_merges][2] in rank order, for the hash */

  int byte_fallback, ignore_merges, fuse_unk, bytelevel_input;
  /* No vocabulary piece has a ▁ after another character, so no merge can cross the start of a
   * ▁-word: a long SentencePiece segment can be merged word by word with the same result. */
  int split_metaspace;
  int32_t unk_id;
  int32_t byte_ids[256]; /* byte-level: id of the byte's char; SP: <0xNN> */

  norm_op_t *norms;
  size_t n_norms;
  pre_op_t *pres;
  size_t n_pres;
  dec_op_t *decs;
  size_t n_decs;

  added_t *added;
  size_t n_added;
  /* HF splits non-normalized added tokens out of the raw text, then normalized ones out of
   * each normalized segment */
  matcher_t raw, norm;

  int32_t *prefix, *suffix;
  size_t n_prefix, n_suffix;
  int32_t bos, eos;
  uint64_t hash;
};

static inline uint64_t fnv(const void *p, size_t n, uint64_t h) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
#define FNV0 0xcbf29ce484222325ull

static inline int32_t lookup(const fc_tok_t *t, const char *s, size_t n) {
  uint32_t h = (uint32_t)fnv(s, n, FNV0) & t->hmask;
  for (;;) {
    int32_t id = t->htab[h];
    if (id < 0) return -1;
    if (t->plen[id] == n && !memcmp(t->pieces[id], s, n)) return id;
    h = (h + 1) & t->hmask;
  }
}
static inline int32_t lookup_model(const fc_tok_t *t, const char *s, size_t n) {
  int32_t id = lookup(t, s, n);
  return id >= 0 && t->in_model[id] ? id : -1;
}

static inline uint32_t mhash(uint64_t k) { return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32); }
static inline const merge_ent_t *merge_get(const fc_tok_t *t, int32_t a, int32_t b) {
  uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  uint32_t h = mhash(k) & t->mmask;
  for (;;) {
    const merge_ent_t *e = &t->mtab[h];
    if (e->key == k) return e;
    if (e->key == UINT64_MAX) return NULL;
    h = (h + 1) & t->mmask;
  }
}

/* The GPT-2 byte-level map (fc_tok.c): byte -> printable char (UTF-8, NUL-terminated) and its
 * length, code point -> byte (-1 if not a byte char). fc_tok_byte_map_init fills them once. */
extern char fc_tok_byte_chars[256][3];
extern uint8_t fc_tok_byte_char_len[256];
extern int16_t fc_tok_char_byte[324];
void fc_tok_byte_map_init(void);

/* Normalizes src into dst (both with offset maps) with one normalizer step (fc_tok_encode.c);
 * loading uses it on normalized added tokens. */
void fc_tok_run_norm(const norm_op_t *op, const nbuf_t *src, nbuf_t *dst);

#endif
