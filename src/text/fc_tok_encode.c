/* Encoding with a loaded tokenizer: added tokens are split out of the raw text first, each
 * remaining segment is normalized, pre-tokenized into words, and each word is merged by rank;
 * the post-processor adds bos/eos. Every stage keeps a byte map back to the original text for
 * the offsets. */
#include "fc_tok_impl.h"

#include <assert.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

/* ---------- encoding ---------- */

/* Normalizes src into dst (both with offset maps); dst is reset first. */
void fc_tok_run_norm(const norm_op_t *op, const nbuf_t *src, nbuf_t *dst) {
  dst->n = 0;
  if (op->kind == N_PREPEND) {
    if (src->n) {
      nb_put(dst, op->a, op->alen, src->o[0]);
      nb_reserve(dst, src->n);
      memcpy(dst->b + dst->n, src->b, src->n);
      memcpy(dst->o + dst->n, src->o, src->n * sizeof *src->o);
      dst->n += src->n;
    }
    return;
  }
  if (op->kind == N_REPLACE) {
    size_t i = 0;
    while (i < src->n) {
      if (src->n - i >= op->alen && !memcmp(src->b + i, op->a, op->alen)) {
        nb_put(dst, op->b, op->blen, src->o[i]);
        i += op->alen;
      } else {
        nb_put(dst, src->b + i, 1, src->o[i]);
        i++;
      }
    }
    return;
  }
  /* Unicode normal form. Code points below fast_below and normalization-inert ones are
   * copied with exact offsets; a run starting at the last boundary before a non-inert code
   * point, up to the next boundary, goes through ICU, and if ICU changes it, all its output
   * bytes map to the run's start. */
  size_t i = 0, last_boundary = 0;
  UChar *u16 = NULL, *n16 = NULL;
  size_t u16cap = 0;
  const unsigned char *b = (const unsigned char *)src->b;
  while (i < src->n) {
    size_t l;
    uint32_t c = fc_utf8_decode(b + i, &l);
    if (c < op->fast_below || unorm2_isInert(op->un, (UChar32)c)) {
      last_boundary = i;
      nb_put(dst, src->b + i, l, src->o[i]);
      dst->o[dst->n - l] = src->o[i];
      for (size_t k = 1; k < l; k++) dst->o[dst->n - l + k] = src->o[i + k];
      i += l;
      continue;
    }
    if (unorm2_hasBoundaryBefore(op->un, (UChar32)c)) last_boundary = i;
    size_t cs = last_boundary, j = i + l;
    dst->n -= i - cs; /* take back the copied start of the run */
    while (j < src->n) {
      c = fc_utf8_decode(b + j, &l);
      if (c < op->fast_below || unorm2_hasBoundaryBefore(op->un, (UChar32)c)) break;
      j += l;
    }
    UErrorCode ue = U_ZERO_ERROR;
    int32_t n16len = 0;
    if (u16cap < (j - cs) * 4 + 8) {
      u16cap = (j - cs) * 4 + 8;
      u16 = fc_xrealloc(u16, u16cap * sizeof *u16);
      n16 = fc_xrealloc(n16, u16cap * 4 * sizeof *n16);
    }
    u_strFromUTF8(u16, (int32_t)u16cap, &n16len, src->b + cs, (int32_t)(j - cs), &ue);
    int normalized = U_SUCCESS(ue) ? unorm2_isNormalized(op->un, u16, n16len, &ue) : 1;
    int32_t outlen = 0;
    if (!normalized && U_SUCCESS(ue)) outlen = unorm2_normalize(op->un, u16, n16len, n16, (int32_t)u16cap * 4, &ue);
    if (normalized || U_FAILURE(ue)) { /* unchanged (or ICU failed: keep the text, lose nothing) */
      nb_reserve(dst, j - cs);
      memcpy(dst->b + dst->n, src->b + cs, j - cs);
      memcpy(dst->o + dst->n, src->o + cs, (j - cs) * sizeof *src->o);
      dst->n += j - cs;
    } else {
      char *u8 = fc_xmalloc((size_t)outlen * 3 + 4);
      int32_t u8len = 0;
      u_strToUTF8(u8, outlen * 3 + 4, &u8len, n16, outlen, &ue);
      nb_put(dst, u8, U_SUCCESS(ue) ? (size_t)u8len : 0, src->o[cs]);
      free(u8);
    }
    i = j;
    last_boundary = j;
  }
  free(u16);
  free(n16);
}

/* The state of splitting one piece: a pending segment that the next segments may join. */
typedef struct {
  spans_t *out;
  int behavior, invert, have_prev, prev_match;
  uint32_t ps, pe; /* the pending segment [ps, pe) */
} split_t;

static void split_emit(spans_t *out, uint32_t a, uint32_t b) {
  if (b > a) sp_push(out, a, b);
}

/* Whether a segment (match flag m) joins the pending one: MergedWithPrevious glues a match onto
 * the text before it, MergedWithNext glues text onto the match before it, Contiguous glues
 * adjacent matches. */
static int split_joins(int behavior, int prev_match, int m) {
  switch (behavior) {
  case B_PREV: return m && !prev_match;
  case B_NEXT: return prev_match && !m;
  case B_CONTIG: return prev_match && m;
  default: return 0;
  }
}

/* One segment [a, b) of a piece, m = 1 when the regex matched it. */
static void split_segment(split_t *st, uint32_t a, uint32_t b, int m) {
  if (b <= a) return;
  m ^= st->invert;
  if (st->behavior == B_ISOLATED || st->behavior == B_REMOVED) {
    if (st->behavior == B_ISOLATED || !m) split_emit(st->out, a, b);
    return;
  }
  if (st->have_prev && split_joins(st->behavior, st->prev_match, m)) {
    st->pe = b;
  } else {
    if (st->have_prev) split_emit(st->out, st->ps, st->pe);
    st->ps = a, st->pe = b, st->have_prev = 1;
  }
  st->prev_match = m;
}

/* Splits each piece of pieces (spans of buf) with op's regex, by its behavior. */
static void split_regex(const pre_op_t *op, const nbuf_t *buf, const spans_t *in, spans_t *out,
                        pcre2_match_data *md, int *re_err) {
  out->n = 0;
  for (size_t p = 0; p < in->n; p++) {
    uint32_t s = in->v[p].s, e = in->v[p].e;
    uint32_t pos = s, last = s;
    split_t st = {.out = out, .behavior = op->behavior, .invert = op->invert};
    while (pos <= e) {
      int rc = pcre2_match(op->re, (PCRE2_SPTR)buf->b, e, pos, PCRE2_NO_UTF_CHECK, md, NULL);
      if (rc < 0) {
        if (rc != PCRE2_ERROR_NOMATCH && !*re_err) *re_err = rc;
        break;
      }
      PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
      uint32_t ms = (uint32_t)ov[0], me = (uint32_t)ov[1];
      if (me == ms) { /* empty match: step one character */
        if (ms >= e) break;
        pos = ms + 1;
        while (pos < e && ((unsigned char)buf->b[pos] & 0xc0) == 0x80) pos++;
        continue;
      }
      split_segment(&st, last, ms, 0);
      split_segment(&st, ms, me, 1);
      last = pos = me;
    }
    split_segment(&st, last, e, 0);
    if (st.have_prev) split_emit(out, st.ps, st.pe);
  }
}

/* Rebuilds buf piece by piece: optional prefix on each piece, and ' ' -> repl. */
static void transform(nbuf_t *buf, spans_t *pieces, nbuf_t *tmp, const char *prefix, size_t plen,
                      int prefix_mode, const char *repl, size_t rlen) {
  /* prefix_mode: 0 none; 1 always unless the piece starts with prefix; 2 same but only for a
   * piece at original offset 0 (Metaspace "first"); 3 ByteLevel (unless it starts with ' '). */
  tmp->n = 0;
  for (size_t p = 0; p < pieces->n; p++) {
    uint32_t s = pieces->v[p].s, e = pieces->v[p].e;
    uint32_t ns = (uint32_t)tmp->n;
    int add = 0;
    if (prefix_mode == 3) add = !(e > s && buf->b[s] == ' ');
    else if (prefix_mode == 1 || prefix_mode == 2) {
      int starts = e - s >= plen && !memcmp(buf->b + s, prefix, plen);
      /* a leading space becomes the replacement below, so it counts as starting with it */
      if (repl && e > s && buf->b[s] == ' ') starts = 1;
      add = !starts && (prefix_mode == 1 || (e > s && buf->o[s] == 0));
    }
    if (add && e > s) nb_put(tmp, prefix, plen, buf->o[s]);
    for (uint32_t i = s; i < e; i++) {
      if (repl && buf->b[i] == ' ') nb_put(tmp, repl, rlen, buf->o[i]);
      else nb_put(tmp, buf->b + i, 1, buf->o[i]);
    }
    pieces->v[p].s = ns;
    pieces->v[p].e = (uint32_t)tmp->n;
  }
  nbuf_t t = *buf;
  *buf = *tmp;
  *tmp = t;
}

typedef struct {
  int32_t id, prev, next;
  uint32_t start, len;
} sym_t;
typedef struct {
  int32_t rank, pos, id;
} hent_t;

/* Per-call cache of short words -> ids (direct mapped): English text repeats a few hundred
 * words, and a lookup is much cheaper than merging. Per call, so encoding stays lock-free. */
enum { CACHE_KEY = 24, CACHE_IDS = 10 };
typedef struct {
  uint32_t h;
  uint8_t klen, n; /* klen 0: empty */
  uint8_t rel[CACHE_IDS]; /* each token's start within the word */
  char key[CACHE_KEY];
  int32_t ids[CACHE_IDS];
} cache_slot_t;

typedef struct {
  sym_t *syms;
  size_t scap;
  hent_t *heap;
  size_t hcap, hn;
  cache_slot_t *cache;
  uint32_t cmask;
  uint8_t rel[CACHE_IDS]; /* starts within the word of the first tokens bpe_word_uncached wrote */
} bpe_ws_t;

static inline int hless(const hent_t *a, const hent_t *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}
static void hpush(bpe_ws_t *w, hent_t e) {
  if (w->hn == w->hcap) {
    w->hcap = w->hcap ? w->hcap * 2 : 64;
    w->heap = fc_xrealloc(w->heap, w->hcap * sizeof *w->heap);
  }
  size_t i = w->hn++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!hless(&e, &w->heap[p])) break;
    w->heap[i] = w->heap[p];
    i = p;
  }
  w->heap[i] = e;
}
static hent_t hpop(bpe_ws_t *w) {
  hent_t top = w->heap[0], last = w->heap[--w->hn];
  size_t i = 0, n = w->hn;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && hless(&w->heap[c + 1], &w->heap[c])) c++;
    if (!hless(&w->heap[c], &last)) break;
    w->heap[i] = w->heap[c];
    i = c;
  }
  if (n) w->heap[i] = last;
  return top;
}

static void sym_push(bpe_ws_t *w, size_t *n, int32_t id, uint32_t start, uint32_t len) {
  if (*n == w->scap) {
    w->scap = w->scap ? w->scap * 2 : 64;
    w->syms = fc_xrealloc(w->syms, w->scap * sizeof *w->syms);
  }
  sym_t *s = &w->syms[*n];
  s->id = id;
  s->start = start;
  s->len = len;
  s->prev = (int32_t)*n - 1;
  s->next = (int32_t)*n + 1;
  (*n)++;
}

/* BPE over one pre-token word (bytes [s,e) of buf); appends ids with original offsets. */
static void bpe_word_uncached(const fc_tok_t *t, const nbuf_t *buf, uint32_t s, uint32_t e, bpe_ws_t *w,
                              out_t *out);

static void bpe_word(const fc_tok_t *t, const nbuf_t *buf, uint32_t s, uint32_t e, bpe_ws_t *w, out_t *out) {
  if (e <= s) return;
  if (!w->cache || e - s > CACHE_KEY) {
    bpe_word_uncached(t, buf, s, e, w, out);
    return;
  }
  uint32_t len = e - s, h = 2166136261u;
  for (uint32_t i = s; i < e; i++) h = (h ^ (unsigned char)buf->b[i]) * 16777619u;
  cache_slot_t *c = &w->cache[h & w->cmask];
  if (c->klen == len && c->h == h && !memcmp(c->key, buf->b + s, len)) {
    for (int k = 0; k < c->n; k++) out_push(out, c->ids[k], buf->o[s + c->rel[k]]);
    return;
  }
  size_t first = out->n;
  bpe_word_uncached(t, buf, s, e, w, out);
  size_t n = out->n - first;
  if (n > CACHE_IDS) return;
  c->klen = 0;
  for (size_t k = 0; k < n; k++) {
    c->rel[k] = w->rel[k];
    c->ids[k] = out->ids[first + k];
  }
  c->h = h;
  c->n = (uint8_t)n;
  memcpy(c->key, buf->b + s, len);
  c->klen = (uint8_t)len;
}

static void bpe_word_uncached(const fc_tok_t *t, const nbuf_t *buf, uint32_t s, uint32_t e, bpe_ws_t *w,
                              out_t *out) {
  const unsigned char *b = (const unsigned char *)buf->b;
  if (e <= s) return;
  if (t->ignore_merges) {
    int32_t id;
    if (t->bytelevel_input) {
      char small[256], *tmp = e - s <= 128 ? small : fc_xmalloc(2 * (size_t)(e - s));
      size_t k = 0;
      for (uint32_t i = s; i < e; i++) {
        memcpy(tmp + k, fc_tok_byte_chars[b[i]], fc_tok_byte_char_len[b[i]]);
        k += fc_tok_byte_char_len[b[i]];
      }
      id = lookup_model(t, tmp, k);
      if (tmp != small) free(tmp);
    } else
      id = lookup_model(t, buf->b + s, e - s);
    if (id >= 0) {
      out_push(out, id, buf->o[s]);
      w->rel[0] = 0;
      return;
    }
  }
  size_t n = 0;
  if (t->bytelevel_input) {
    for (uint32_t i = s; i < e; i++) {
      int32_t id = t->byte_ids[b[i]];
      if (id < 0) id = t->unk_id;
      if (id < 0) continue; /* HF drops symbols it cannot represent when there is no unk */
      sym_push(w, &n, id, i, 1);
    }
  } else {
    uint32_t i = s;
    while (i < e) {
      size_t l = fc_utf8_valid_len(b + i, e - i);
      if (!l) l = 1;
      int32_t id = lookup_model(t, buf->b + i, l);
      if (id >= 0) {
        sym_push(w, &n, id, i, (uint32_t)l);
      } else {
        int ok = t->byte_fallback;
        for (size_t k = 0; ok && k < l; k++) ok = t->byte_ids[b[i + k]] >= 0;
        if (ok) {
          for (size_t k = 0; k < l; k++) sym_push(w, &n, t->byte_ids[b[i + k]], i + (uint32_t)k, 1);
        } else if (t->unk_id >= 0) {
          if (t->fuse_unk && n && w->syms[n - 1].id == t->unk_id) w->syms[n - 1].len += (uint32_t)l;
          else sym_push(w, &n, t->unk_id, i, (uint32_t)l);
        }
      }
      i += (uint32_t)l;
    }
  }
  if (!n) return;
  w->syms[n - 1].next = -1;
  sym_t *sy = w->syms;
  if (n > 1) {
    w->hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
      const merge_ent_t *m = merge_get(t, sy[i].id, sy[i + 1].id);
      if (m) hpush(w, (hent_t){m->rank, (int32_t)i, m->id});
    }
    while (w->hn) {
      hent_t top = hpop(w);
      sym_t *a = &sy[top.pos];
      if (!a->len || a->next < 0) continue;
      sym_t *bn = &sy[a->next];
      const merge_ent_t *m = merge_get(t, a->id, bn->id);
      if (!m || m->id != top.id) continue;
      a->id = top.id;
      a->len += bn->len;
      bn->len = 0;
      a->next = bn->next;
      if (a->next >= 0) sy[a->next].prev = top.pos;
      if (a->prev >= 0) {
        const merge_ent_t *m2 = merge_get(t, sy[a->prev].id, a->id);
        if (m2) hpush(w, (hent_t){m2->rank, a->prev, m2->id});
      }
      if (a->next >= 0) {
        const merge_ent_t *m2 = merge_get(t, a->id, sy[a->next].id);
        if (m2) hpush(w, (hent_t){m2->rank, top.pos, m2->id});
      }
    }
  }
  size_t k = 0;
  for (int32_t i = 0; i >= 0; i = sy[i].next, k++) {
    out_push(out, sy[i].id, buf->o[sy[i].start]);
    if (k < CACHE_IDS) w->rel[k] = (uint8_t)(sy[i].start - s); /* only cached when short */
  }
}

typedef struct {
  nbuf_t a, b, c;
  spans_t p, q;
  bpe_ws_t w;
  pcre2_match_data *md;
  int re_err;             /* a PCRE2 error other than no-match (e.g. JIT stack exhausted) */
  fc_tok_word_fn word_fn; /* set: report words instead of encoding them */
  void *word_ctx;
} enc_ws_t;

static void do_word(const fc_tok_t *t, enc_ws_t *ws, uint32_t s, uint32_t e, out_t *out) {
  if (ws->word_fn) {
    if (e > s) ws->word_fn(ws->word_ctx, ws->a.b + s, e - s);
  } else
    bpe_word(t, &ws->a, s, e, &ws->w, out);
}

static int find_added(const matcher_t *mt, const char *text, size_t len, size_t from, unsigned flags,
                      size_t *ms, size_t *me);

/* Pre-tokenizes and BPE-encodes the normalized text in ws->a. */
static void pretok_bpe(const fc_tok_t *t, enc_ws_t *ws, out_t *out) {
  if (!ws->a.n) return;
  ws->p.n = 0;
  sp_push(&ws->p, 0, (uint32_t)ws->a.n);
  for (size_t k = 0; k < t->n_pres; k++) {
    const pre_op_t *op = &t->pres[k];
    if (op->kind == P_BYTELEVEL) {
      if (op->add_prefix_space) transform(&ws->a, &ws->p, &ws->b, " ", 1, 3, NULL, 0);
      if (!op->use_regex) continue;
    } else if (op->kind == P_METASPACE) {
      transform(&ws->a, &ws->p, &ws->b, op->repl, op->repl_len, op->prepend, op->repl, op->repl_len);
      if (!op->split) continue;
      /* split before every replacement character (MergedWithNext) */
      ws->q.n = 0;
      for (size_t p = 0; p < ws->p.n; p++) {
        uint32_t ps = ws->p.v[p].s, pe = ws->p.v[p].e, st = ps;
        for (uint32_t i = ps; i + op->repl_len <= pe; i++) {
          if (i > st && !memcmp(ws->a.b + i, op->repl, op->repl_len)) {
            sp_push(&ws->q, st, i);
            st = i;
          }
        }
        if (pe > st) sp_push(&ws->q, st, pe);
      }
      spans_t tmp = ws->p;
      ws->p = ws->q;
      ws->q = tmp;
      continue;
    }
    split_regex(op, &ws->a, &ws->p, &ws->q, ws->md, &ws->re_err);
    spans_t tmp = ws->p;
    ws->p = ws->q;
    ws->q = tmp;
  }
  for (size_t p = 0; p < ws->p.n; p++) {
    uint32_t s0 = ws->p.v[p].s, e0 = ws->p.v[p].e;
    if (t->split_metaspace) {
      const char *b = ws->a.b;
      for (uint32_t i = s0 + 1; i + 3 <= e0; i++) {
        if (memcmp(b + i, "\xe2\x96\x81", 3) || (i >= s0 + 3 && !memcmp(b + i - 3, "\xe2\x96\x81", 3)))
          continue;
        do_word(t, ws, s0, i, out);
        s0 = i;
      }
    }
    do_word(t, ws, s0, e0, out);
  }
}

/* Normalizes text[s,e), splits normalized added tokens out of it, and encodes the rest. */
static void encode_segment(const fc_tok_t *t, const char *text, uint32_t s, uint32_t e, unsigned flags,
                           enc_ws_t *ws, out_t *out) {
  ws->a.n = 0;
  nb_reserve(&ws->a, e - s);
  memcpy(ws->a.b, text + s, e - s);
  for (uint32_t i = s; i < e; i++) ws->a.o[i - s] = i;
  ws->a.n = e - s;
  for (size_t k = 0; k < t->n_norms; k++) {
    fc_tok_run_norm(&t->norms[k], &ws->a, &ws->b);
    nbuf_t tmp = ws->a;
    ws->a = ws->b;
    ws->b = tmp;
  }
  if (!t->norm.n) {
    pretok_bpe(t, ws, out);
    return;
  }
  nbuf_t whole = ws->a; /* ws->a becomes each piece between normalized added tokens in turn */
  ws->a = ws->c;
  size_t pos = 0;
  while (pos < whole.n) {
    size_t ms, me;
    int k = find_added(&t->norm, whole.b, whole.n, pos, flags, &ms, &me);
    size_t end = k >= 0 ? ms : whole.n;
    if (end > pos) {
      ws->a.n = 0;
      nb_reserve(&ws->a, end - pos);
      memcpy(ws->a.b, whole.b + pos, end - pos);
      memcpy(ws->a.o, whole.o + pos, (end - pos) * sizeof *whole.o);
      ws->a.n = end - pos;
      pretok_bpe(t, ws, out);
    }
    if (k < 0) break;
    if (!ws->word_fn) out_push(out, t->norm.v[k].id, whole.o[ms]);
    pos = me;
  }
  ws->c = ws->a;
  ws->a = whole;
}

/* Unicode \w as the Rust regex crate has it (Alphabetic, marks, decimal digits, connector
 * punctuation, joiners): HF's single_word test. */
static int is_word_char(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (c == 0x200c || c == 0x200d) return 1;
  if (u_hasBinaryProperty((UChar32)c, UCHAR_ALPHABETIC)) return 1;
  return (U_GET_GC_MASK((UChar32)c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

/* Finds the next added token in text[from, len) as HF's aho-corasick scan does: leftmost, then
 * longest; a match that fails single_word, or is a special token while special tokens are
 * plain text, is skipped whole and the scan goes on after it. Returns the index in mt->v or -1;
 * *ms and *me receive the match with lstrip/rstrip whitespace included (not before from). */
static int find_added(const matcher_t *mt, const char *text, size_t len, size_t from, unsigned flags,
                      size_t *ms, size_t *me) {
  if (!mt->n) return -1;
  const unsigned char *b = (const unsigned char *)text;
  size_t i = from;
  while (i < len) {
    int32_t k0 = mt->first[b[i]], k1 = mt->end[b[i]], k;
    for (k = k0; k < k1; k++) {
      const added_t *a = &mt->v[k];
      if (a->mlen <= len - i && !memcmp(text + i, a->m, a->mlen)) break;
    }
    if (k >= k1) {
      i++;
      continue;
    }
    const added_t *a = &mt->v[k];
    size_t s = i, e = i + a->mlen;
    int skip = a->special && !(flags & FC_TOK_PARSE_SPECIAL);
    if (!skip && a->single_word) {
      size_t l;
      if (s > 0) {
        size_t q = s - 1;
        while (q > 0 && (b[q] & 0xc0) == 0x80) q--;
        if (is_word_char(fc_utf8_decode(b + q, &l))) skip = 1;
      }
      if (e < len && is_word_char(fc_utf8_decode(b + e, &l))) skip = 1;
    }
    if (skip) {
      i = e;
      continue;
    }
    if (a->lstrip) {
      while (s > from) {
        size_t q = s - 1, l;
        while (q > from && (b[q] & 0xc0) == 0x80) q--;
        if (!is_ws(fc_utf8_decode(b + q, &l))) break;
        s = q;
      }
    }
    if (a->rstrip) {
      while (e < len) {
        size_t l;
        if (!is_ws(fc_utf8_decode(b + e, &l))) break;
        e += l;
      }
    }
    *ms = s;
    *me = e;
    return k;
  }
  return -1;
}

static int check_text(const char *text, size_t len, fc_err_t *err) {
  if (len > 0xffffffffu / 4) return fc_err_set(err, FC_EINVAL, "text too long (%zu bytes)", len);
  for (size_t i = 0; i < len;) {
    size_t l = fc_utf8_valid_len((const unsigned char *)text + i, len - i);
    if (!l) return fc_err_set(err, FC_EINVAL, "text is not valid UTF-8 at byte %zu", i);
    i += l;
  }
  return 0;
}

static void ws_init(enc_ws_t *ws) {
  memset(ws, 0, sizeof *ws);
  ws->md = pcre2_match_data_create(4, NULL);
}

static void ws_free(enc_ws_t *ws) {
  pcre2_match_data_free(ws->md);
  nb_free(&ws->a);
  nb_free(&ws->b);
  nb_free(&ws->c);
  free(ws->p.v);
  free(ws->q.v);
  free(ws->w.syms);
  free(ws->w.heap);
  free(ws->w.cache);
}

/* The text between added tokens goes through normalization, pre-tokenization and the model;
 * with push_added the added tokens themselves go to out at their offsets. */
static void encode_text(const fc_tok_t *t, const char *text, size_t len, unsigned flags, int push_added,
                        enc_ws_t *ws, out_t *out) {
  size_t pos = 0;
  while (pos < len) {
    size_t ms, me;
    int k = find_added(&t->raw, text, len, pos, flags, &ms, &me);
    size_t seg_end = k >= 0 ? ms : len;
    if (seg_end > pos) encode_segment(t, text, (uint32_t)pos, (uint32_t)seg_end, flags, ws, out);
    if (k < 0) break;
    if (push_added) out_push(out, t->raw.v[k].id, (uint32_t)ms);
    pos = me;
  }
}

static int regex_failed(int re_err, fc_err_t *err) {
  PCRE2_UCHAR msg[256];
  pcre2_get_error_message(re_err, msg, sizeof msg);
  return fc_err_set(err, FC_EINVAL, "pre-tokenizer regex failed: %s", (char *)msg);
}

int fc_tok_pretokenize(const fc_tok_t *t, const char *text, size_t len, unsigned flags,
                       fc_tok_word_fn fn, void *ctx, fc_err_t *err) {
  int rc = check_text(text, len, err);
  if (rc) return rc;
  out_t out = {0}; /* stays empty: words go to fn */
  enc_ws_t ws;
  ws_init(&ws);
  ws.word_fn = fn;
  ws.word_ctx = ctx;
  encode_text(t, text, len, flags, 0, &ws, &out);
  int re_err = ws.re_err;
  ws_free(&ws);
  return re_err ? regex_failed(re_err, err) : 0;
}

int fc_tok_encode(const fc_tok_t *t, const char *text, size_t len, unsigned flags, int32_t **ids,
                  uint32_t **offsets, size_t *n, fc_err_t *err) {
  *ids = NULL;
  if (offsets) *offsets = NULL;
  *n = 0;
  int rc = check_text(text, len, err);
  if (rc) return rc;
  out_t out = {0};
  enc_ws_t ws;
  ws_init(&ws);
  if (len >= 2048) {
    uint32_t slots = len >= 65536 ? 8192 : 1024;
    ws.w.cache = fc_xcalloc(slots, sizeof *ws.w.cache);
    ws.w.cmask = slots - 1;
  }
  if (flags & FC_TOK_ADD_SPECIAL)
    for (size_t k = 0; k < t->n_prefix; k++) out_push(&out, t->prefix[k], 0);
  encode_text(t, text, len, flags, 1, &ws, &out);
  if (flags & FC_TOK_ADD_SPECIAL)
    for (size_t k = 0; k < t->n_suffix; k++) out_push(&out, t->suffix[k], (uint32_t)len);
  int re_err = ws.re_err;
  ws_free(&ws);
  if (re_err) {
    free(out.ids);
    free(out.off);
    return regex_failed(re_err, err);
  }
  if (!out.ids) { /* callers get a valid (freeable) pointer even for no tokens */
    out.ids = fc_xmalloc(sizeof *out.ids);
    out.off = fc_xmalloc(sizeof *out.off);
  }
  *ids = out.ids;
  if (offsets) *offsets = out.off;
  else free(out.off);
  *n = out.n;
  return 0;
}
