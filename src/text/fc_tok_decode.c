/* Decoding ids back to text with the tokenizer's decoder steps, and the per-token queries
 * (pieces, special flags, the text bytes a token stands for). */
#include "fc_tok_impl.h"

/* ---------- decoding ---------- */

typedef struct {
  fc_sbuf_t *v;
  size_t n, cap;
} toks_t;

static void toks_add(toks_t *ts, const char *s, size_t n) {
  if (ts->n == ts->cap) {
    ts->cap = ts->cap ? ts->cap * 2 : 16;
    ts->v = fc_xrealloc(ts->v, ts->cap * sizeof *ts->v);
  }
  ts->v[ts->n] = (fc_sbuf_t){0};
  fc_sbuf_put(&ts->v[ts->n], s, n);
  ts->n++;
}
static void toks_free(toks_t *ts) {
  for (size_t i = 0; i < ts->n; i++) free(ts->v[i].b);
  free(ts->v);
  memset(ts, 0, sizeof *ts);
}
static void fuse(toks_t *ts) {
  if (ts->n <= 1) return;
  fc_sbuf_t all = {0};
  for (size_t i = 0; i < ts->n; i++) fc_sbuf_put(&all, ts->v[i].b, ts->v[i].n);
  toks_free(ts);
  toks_add(ts, all.b ? all.b : "", all.n);
  free(all.b);
}
static void replace_in(fc_sbuf_t *s, const char *a, size_t al, const char *b, size_t bl) {
  fc_sbuf_t r = {0};
  size_t i = 0;
  fc_sbuf_put(&r, "", 0);
  while (i < s->n) {
    if (s->n - i >= al && !memcmp(s->b + i, a, al)) {
      fc_sbuf_put(&r, b, bl);
      i += al;
    } else
      fc_sbuf_put(&r, s->b + i, 1), i++;
  }
  free(s->b);
  *s = r;
}
static int parse_byte_token(const fc_sbuf_t *s) {
  if (s->n != 6 || memcmp(s->b, "<0x", 3) || s->b[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    char c = s->b[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

static void run_dec(const dec_op_t *op, toks_t *ts) {
  switch (op->kind) {
  case D_BYTELEVEL: {
    fc_sbuf_t bytes = {0};
    for (size_t i = 0; i < ts->n; i++) {
      const unsigned char *p = (const unsigned char *)ts->v[i].b;
      size_t n = ts->v[i].n, mark = bytes.n, j = 0;
      int ok = 1;
      while (j < n) {
        size_t l;
        uint32_t c = fc_utf8_decode(p + j, &l);
        if (c >= 324 || fc_tok_char_byte[c] < 0) {
          ok = 0;
          break;
        }
        unsigned char by = (unsigned char)fc_tok_char_byte[c];
        fc_sbuf_put(&bytes, &by, 1);
        j += l;
      }
      if (!ok) { /* HF keeps such a token's own bytes */
        bytes.n = mark;
        fc_sbuf_put(&bytes, p, n);
      }
    }
    fc_sbuf_t s = {0};
    fc_sbuf_put(&s, "", 0);
    if (bytes.n) fc_utf8_put_lossy(&s, (const unsigned char *)bytes.b, bytes.n);
    free(bytes.b);
    toks_free(ts);
    toks_add(ts, s.b, s.n);
    free(s.b);
    break;
  }
  case D_REPLACE:
    for (size_t i = 0; i < ts->n; i++) replace_in(&ts->v[i], op->a, op->alen, op->b, op->blen);
    break;
  case D_BYTEFALLBACK: {
    toks_t r = {0};
    fc_sbuf_t pend = {0};
    for (size_t i = 0; i <= ts->n; i++) {
      int bv = i < ts->n ? parse_byte_token(&ts->v[i]) : -1;
      if (bv >= 0) {
        unsigned char c = (unsigned char)bv;
        fc_sbuf_put(&pend, &c, 1);
        continue;
      }
      if (pend.n) {
        int valid = 1;
        for (size_t j = 0; j < pend.n;) {
          size_t l = fc_utf8_valid_len((const unsigned char *)pend.b + j, pend.n - j);
          if (!l) {
            valid = 0;
            break;
          }
          j += l;
        }
        if (valid) toks_add(&r, pend.b, pend.n);
        else
          for (size_t j = 0; j < pend.n; j++) toks_add(&r, "\xef\xbf\xbd", 3);
        pend.n = 0;
      }
      if (i < ts->n) toks_add(&r, ts->v[i].b, ts->v[i].n);
    }
    free(pend.b);
    toks_free(ts);
    *ts = r;
    break;
  }
  case D_FUSE: fuse(ts); break;
  case D_STRIP:
    for (size_t i = 0; i < ts->n; i++) {
      fc_sbuf_t *s = &ts->v[i];
      size_t a = 0, e = s->n;
      for (int k = 0; k < op->start && e - a >= op->alen && !memcmp(s->b + a, op->a, op->alen); k++) a += op->alen;
      for (int k = 0; k < op->stop && e - a >= op->alen && !memcmp(s->b + e - op->alen, op->a, op->alen); k++) e -= op->alen;
      memmove(s->b, s->b + a, e - a);
      s->n = e - a;
      s->b[s->n] = 0;
    }
    break;
  case D_METASPACE:
    for (size_t i = 0; i < ts->n; i++) {
      fc_sbuf_t *s = &ts->v[i];
      int drop = i == 0 && op->prepend && s->n >= op->alen && !memcmp(s->b, op->a, op->alen);
      replace_in(s, op->a, op->alen, " ", 1);
      if (drop) {
        memmove(s->b, s->b + 1, s->n);
        s->n--;
      }
    }
    break;
  }
}

int fc_tok_decode(const fc_tok_t *t, const int32_t *ids, size_t n, int skip_special, char **text,
                  fc_err_t *err) {
  *text = NULL;
  toks_t ts = {0};
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= t->n_vocab || !t->pieces[ids[i]]) {
      toks_free(&ts);
      return fc_err_set(err, FC_EINVAL, "token id %d is not in the vocabulary", ids[i]);
    }
    if (skip_special && t->special[ids[i]]) continue;
    toks_add(&ts, t->pieces[ids[i]], t->plen[ids[i]]);
  }
  for (size_t k = 0; k < t->n_decs; k++) run_dec(&t->decs[k], &ts);
  fuse(&ts);
  *text = ts.n ? ts.v[0].b : fc_xstrdup("");
  if (ts.n) ts.v[0].b = NULL;
  toks_free(&ts);
  return 0;
}

/* ---------- queries ---------- */

int32_t fc_tok_vocab_size(const fc_tok_t *t) { return t->n_vocab; }
const char *fc_tok_piece(const fc_tok_t *t, int32_t id) {
  return id >= 0 && id < t->n_vocab ? t->pieces[id] : NULL;
}
int32_t fc_tok_piece_id(const fc_tok_t *t, const char *piece) { return lookup(t, piece, strlen(piece)); }
int32_t fc_tok_bos(const fc_tok_t *t) { return t->bos; }
int32_t fc_tok_eos(const fc_tok_t *t) { return t->eos; }
int fc_tok_is_special(const fc_tok_t *t, int32_t id) {
  return id >= 0 && id < t->n_vocab && t->special[id];
}
fc_tok_kind_t fc_tok_kind(const fc_tok_t *t) { return t->kind; }
uint64_t fc_tok_hash(const fc_tok_t *t) { return t->hash; }

size_t fc_tok_token_text(const fc_tok_t *t, int32_t id, char *buf, size_t cap) {
  const char *p = fc_tok_piece(t, id);
  if (!p) return 0;
  size_t n = t->plen[id], k = 0;
#define PUT(c)                     \
  do {                             \
    if (k < cap) buf[k] = (char)(c); \
    k++;                           \
  } while (0)
  if (!t->in_model[id] || t->special[id]) {
    for (size_t i = 0; i < n; i++) PUT(p[i]);
    return k;
  }
  if (t->kind == FC_TOK_BYTELEVEL) {
    for (size_t i = 0; i < n;) {
      size_t l;
      uint32_t c = fc_utf8_decode((const unsigned char *)p + i, &l);
      if (c < 324 && fc_tok_char_byte[c] >= 0) PUT(fc_tok_char_byte[c]);
      else
        for (size_t j = 0; j < l; j++) PUT(p[i + j]);
      i += l;
    }
    return k;
  }
  fc_sbuf_t s = {.b = (char *)p, .n = n};
  int bv = parse_byte_token(&s);
  if (bv >= 0) {
    PUT(bv);
    return k;
  }
  for (size_t i = 0; i < n;) {
    if (n - i >= 3 && !memcmp(p + i, "\xe2\x96\x81", 3)) {
      PUT(' ');
      i += 3;
    } else {
      PUT(p[i]); /* not PUT(p[i++]): PUT skips its argument when the buffer is full */
      i++;
    }
  }
#undef PUT
  return k;
}
