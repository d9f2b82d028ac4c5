/* Hugging Face tokenizer.json (BPE) loader, encoder and decoder. The pipeline follows the Rust
 * `tokenizers` crate: added tokens are split out of the raw text first, each remaining segment
 * is normalized, pre-tokenized into words, and each word is merged by rank; a post-processor
 * adds bos/eos. Every stage keeps a byte map back to the original text for offsets. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "fc_tok.h"

#include "fc_utf8.h"

#include <assert.h>
#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

/* ---------- small containers ---------- */

typedef struct {
  char *b;
  uint32_t *o; /* original byte offset of each byte */
  size_t n, cap;
} nbuf_t;

static void nb_reserve(nbuf_t *nb, size_t extra) {
  if (nb->n + extra <= nb->cap) return;
  size_t cap = nb->cap ? nb->cap * 2 : 64;
  while (cap < nb->n + extra) cap *= 2;
  nb->b = fc_xrealloc(nb->b, cap);
  nb->o = fc_xrealloc(nb->o, cap * sizeof *nb->o);
  nb->cap = cap;
}
static void nb_put(nbuf_t *nb, const char *s, size_t n, uint32_t off) {
  nb_reserve(nb, n);
  memcpy(nb->b + nb->n, s, n);
  for (size_t i = 0; i < n; i++) nb->o[nb->n + i] = off;
  nb->n += n;
}
static void nb_free(nbuf_t *nb) {
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
static void sp_push(spans_t *sp, uint32_t s, uint32_t e) {
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
static void out_push(out_t *o, int32_t id, uint32_t off) {
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
static int is_ws(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}
#define WS_CLASS "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* ---------- byte-level map ---------- */

static char g_byte_char[256][3];
static uint8_t g_byte_char_len[256];
static int16_t g_char_byte[324]; /* code point -> byte, -1 if not a byte char */

static void byte_map_build(void) {
  int n = 0;
  for (int i = 0; i < 324; i++) g_char_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    uint32_t cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) cp = (uint32_t)b;
    else cp = 256 + (uint32_t)n++;
    g_byte_char_len[b] = (uint8_t)fc_utf8_encode(cp, g_byte_char[b]);
    g_byte_char[b][g_byte_char_len[b]] = 0;
    g_char_byte[cp] = (int16_t)b;
  }
}

static void byte_map_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, byte_map_build);
}

const char *fc_tok_byte_char(uint8_t b) {
  byte_map_init();
  return g_byte_char[b];
}

/* ---------- tokenizer ---------- */

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

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ull;
  }
  return h;
}
#define FNV0 0xcbf29ce484222325ull

static int32_t lookup(const fc_tok_t *t, const char *s, size_t n) {
  uint32_t h = (uint32_t)fnv(s, n, FNV0) & t->hmask;
  for (;;) {
    int32_t id = t->htab[h];
    if (id < 0) return -1;
    if (t->plen[id] == n && !memcmp(t->pieces[id], s, n)) return id;
    h = (h + 1) & t->hmask;
  }
}
static int32_t lookup_model(const fc_tok_t *t, const char *s, size_t n) {
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

void fc_tok_destroy(fc_tok_t **tp) {
  fc_tok_t *t = *tp;
  if (!t) return;
  for (int32_t i = 0; i < t->n_vocab; i++) free(t->pieces[i]);
  free(t->pieces);
  free(t->plen);
  free(t->in_model);
  free(t->special);
  free(t->htab);
  free(t->mtab);
  free(t->merge_pairs);
  for (size_t i = 0; i < t->n_norms; i++) {
    free(t->norms[i].a);
    free(t->norms[i].b);
  }
  free(t->norms);
  for (size_t i = 0; i < t->n_pres; i++)
    if (t->pres[i].re) pcre2_code_free(t->pres[i].re);
  free(t->pres);
  for (size_t i = 0; i < t->n_decs; i++) {
    free(t->decs[i].a);
    free(t->decs[i].b);
  }
  free(t->decs);
  for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
  free(t->added);
  for (size_t i = 0; i < t->raw.n; i++) free(t->raw.v[i].m);
  for (size_t i = 0; i < t->norm.n; i++) free(t->norm.v[i].m);
  free(t->raw.v);
  free(t->norm.v);
  free(t->prefix);
  free(t->suffix);
  free(t);
  *tp = NULL;
}

/* ---------- loading ---------- */

static const char *jstr(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : NULL;
}
static int jbool(json_t *o, const char *k, int def) {
  json_t *v = json_object_get(o, k);
  return json_is_boolean(v) ? json_is_true(v) : def;
}

/* Rewrites \s and \S as explicit Unicode White_Space classes: PCRE2's \s under UCP is not the
 * White_Space property the Rust regex crate uses (it misses U+0085). */
static char *rewrite_regex(const char *p) {
  fc_sbuf_t s = {0};
  int in_class = 0;
  for (size_t i = 0; p[i]; i++) {
    if (p[i] == '\\' && p[i + 1]) {
      char c = p[i + 1];
      if (c == 's') {
        fc_sbuf_put(&s, in_class ? WS_CLASS : "[" WS_CLASS "]", strlen(in_class ? WS_CLASS : "[" WS_CLASS "]"));
        i++;
        continue;
      }
      if (c == 'S' && !in_class) {
        fc_sbuf_put(&s, "[^" WS_CLASS "]", strlen("[^" WS_CLASS "]"));
        i++;
        continue;
      }
      fc_sbuf_put(&s, p + i, 2);
      i++;
      continue;
    }
    if (p[i] == '[' && !in_class) {
      in_class = 1;
      fc_sbuf_put(&s, p + i, 1);
      if (p[i + 1] == '^') fc_sbuf_put(&s, p + ++i, 1);
      if (p[i + 1] == ']') fc_sbuf_put(&s, p + ++i, 1);
      continue;
    }
    if (p[i] == ']' && in_class) in_class = 0;
    fc_sbuf_put(&s, p + i, 1);
  }
  if (!s.b) return fc_xstrdup("");
  return s.b;
}

static int compile_re(pcre2_code **out, const char *pat, int literal, fc_err_t *err) {
  int ec;
  PCRE2_SIZE eo;
  char *p = literal ? fc_xstrdup(pat) : rewrite_regex(pat);
  uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)p, PCRE2_ZERO_TERMINATED, opts, &ec, &eo, NULL);
  free(p);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(ec, msg, sizeof msg);
    return fc_err_set(err, FC_EUNSUPPORTED, "cannot compile pre-tokenizer regex at %zu: %s",
                      (size_t)eo, (char *)msg);
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if no JIT */
  *out = re;
  return 0;
}

static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static void grow(void **v, size_t *cap, size_t n, size_t sz) {
  if (n < *cap) return;
  *cap = *cap ? *cap * 2 : 4;
  *v = fc_xrealloc(*v, *cap * sz);
}

/* Normalizers, pre-tokenizers and decoders nest the same way: a "Sequence" step lists steps. */
typedef int (*parse_step_fn)(fc_tok_t *t, json_t *j, size_t *cap, fc_err_t *err);
static int parse_sequence(fc_tok_t *t, json_t *j, const char *key, parse_step_fn fn, size_t *cap, fc_err_t *err) {
  json_t *arr = json_object_get(j, key), *v;
  size_t i;
  json_array_foreach(arr, i, v) {
    int rc = fn(t, v, cap, err);
    if (rc) return rc;
  }
  return 0;
}

/* A Replace step (normalizer or decoder): a String pattern and its replacement. */
static int parse_replace(json_t *j, const char *what, char **a, size_t *alen, char **b, size_t *blen,
                         fc_err_t *err) {
  const char *p = jstr(json_object_get(j, "pattern"), "String");
  const char *c = jstr(j, "content");
  if (!p || !c || !*p) return fc_err_set(err, FC_EUNSUPPORTED, "Replace %s: only String patterns supported", what);
  *a = fc_xstrdup(p);
  *alen = strlen(p);
  *b = fc_xstrdup(c);
  *blen = strlen(c);
  return 0;
}

static int parse_norm(fc_tok_t *t, json_t *j, size_t *cap, fc_err_t *err) {
  if (!j || json_is_null(j)) return 0;
  const char *type = jstr(j, "type");
  if (!type) return fc_err_set(err, FC_EFORMAT, "normalizer without a type");
  if (!strcmp(type, "Sequence")) return parse_sequence(t, j, "normalizers", parse_norm, cap, err);
  grow((void **)&t->norms, cap, t->n_norms, sizeof *t->norms);
  norm_op_t *op = &t->norms[t->n_norms];
  memset(op, 0, sizeof *op);
  UErrorCode ue = U_ZERO_ERROR;
  if (!strcmp(type, "NFC")) {
    op->kind = N_UNORM;
    op->un = unorm2_getNFCInstance(&ue);
    op->fast_below = 0x300;
  } else if (!strcmp(type, "NFD")) {
    op->kind = N_UNORM;
    op->un = unorm2_getNFDInstance(&ue);
    op->fast_below = 0xc0;
  } else if (!strcmp(type, "NFKC")) {
    op->kind = N_UNORM;
    op->un = unorm2_getNFKCInstance(&ue);
    op->fast_below = 0xa0;
  } else if (!strcmp(type, "NFKD")) {
    op->kind = N_UNORM;
    op->un = unorm2_getNFKDInstance(&ue);
    op->fast_below = 0xa0;
  } else if (!strcmp(type, "Prepend")) {
    const char *p = jstr(j, "prepend");
    if (!p) return fc_err_set(err, FC_EFORMAT, "Prepend normalizer without 'prepend'");
    op->kind = N_PREPEND;
    op->a = fc_xstrdup(p);
    op->alen = strlen(p);
  } else if (!strcmp(type, "Replace")) {
    int rc = parse_replace(j, "normalizer", &op->a, &op->alen, &op->b, &op->blen, err);
    if (rc) return rc;
    op->kind = N_REPLACE;
  } else {
    return fc_err_set(err, FC_EUNSUPPORTED, "normalizer '%s' not supported", type);
  }
  if (U_FAILURE(ue)) return fc_err_set(err, FC_EUNSUPPORTED, "ICU: %s", u_errorName(ue));
  t->n_norms++;
  return 0;
}

static int parse_pre(fc_tok_t *t, json_t *j, size_t *cap, fc_err_t *err) {
  if (!j || json_is_null(j)) return 0;
  const char *type = jstr(j, "type");
  if (!type) return fc_err_set(err, FC_EFORMAT, "pre_tokenizer without a type");
  if (!strcmp(type, "Sequence")) return parse_sequence(t, j, "pretokenizers", parse_pre, cap, err);
  grow((void **)&t->pres, cap, t->n_pres, sizeof *t->pres);
  pre_op_t *op = &t->pres[t->n_pres];
  memset(op, 0, sizeof *op);
  int rc = 0;
  if (!strcmp(type, "Split")) {
    json_t *pat = json_object_get(j, "pattern");
    const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
    const char *beh = jstr(j, "behavior");
    op->kind = P_SPLIT;
    op->invert = jbool(j, "invert", 0);
    if (!beh || !strcmp(beh, "Isolated")) op->behavior = B_ISOLATED;
    else if (!strcmp(beh, "Removed")) op->behavior = B_REMOVED;
    else if (!strcmp(beh, "MergedWithPrevious")) op->behavior = B_PREV;
    else if (!strcmp(beh, "MergedWithNext")) op->behavior = B_NEXT;
    else if (!strcmp(beh, "Contiguous")) op->behavior = B_CONTIG;
    else return fc_err_set(err, FC_EUNSUPPORTED, "Split behavior '%s' not supported", beh);
    if (re) rc = compile_re(&op->re, re, 0, err);
    else if (lit) rc = compile_re(&op->re, lit, 1, err);
    else return fc_err_set(err, FC_EFORMAT, "Split pre-tokenizer without a pattern");
  } else if (!strcmp(type, "ByteLevel")) {
    op->kind = P_BYTELEVEL;
    op->add_prefix_space = jbool(j, "add_prefix_space", 0);
    op->use_regex = jbool(j, "use_regex", 1);
    if (op->use_regex) rc = compile_re(&op->re, GPT2_RE, 0, err);
    t->bytelevel_input = 1;
  } else if (!strcmp(type, "Digits")) {
    op->kind = P_SPLIT;
    op->behavior = jbool(j, "individual_digits", 0) ? B_ISOLATED : B_CONTIG;
    rc = compile_re(&op->re, "\\p{N}", 0, err);
  } else if (!strcmp(type, "Metaspace")) {
    const char *r = jstr(j, "replacement");
    const char *ps = jstr(j, "prepend_scheme");
    op->kind = P_METASPACE;
    if (!r) r = "\xe2\x96\x81";
    op->repl_len = strlen(r);
    if (op->repl_len >= sizeof op->repl) return fc_err_set(err, FC_EFORMAT, "Metaspace replacement too long");
    memcpy(op->repl, r, op->repl_len);
    op->prepend = ps ? (!strcmp(ps, "always") ? 1 : !strcmp(ps, "first") ? 2 : 0)
                     : jbool(j, "add_prefix_space", 1);
    op->split = jbool(j, "split", 1);
  } else {
    return fc_err_set(err, FC_EUNSUPPORTED, "pre_tokenizer '%s' not supported", type);
  }
  if (rc) return rc;
  t->n_pres++;
  return 0;
}

static int parse_dec(fc_tok_t *t, json_t *j, size_t *cap, fc_err_t *err) {
  if (!j || json_is_null(j)) return 0;
  const char *type = jstr(j, "type");
  if (!type) return fc_err_set(err, FC_EFORMAT, "decoder without a type");
  if (!strcmp(type, "Sequence")) return parse_sequence(t, j, "decoders", parse_dec, cap, err);
  grow((void **)&t->decs, cap, t->n_decs, sizeof *t->decs);
  dec_op_t *op = &t->decs[t->n_decs];
  memset(op, 0, sizeof *op);
  if (!strcmp(type, "ByteLevel")) op->kind = D_BYTELEVEL;
  else if (!strcmp(type, "ByteFallback")) op->kind = D_BYTEFALLBACK;
  else if (!strcmp(type, "Fuse")) op->kind = D_FUSE;
  else if (!strcmp(type, "Replace")) {
    int rc = parse_replace(j, "decoder", &op->a, &op->alen, &op->b, &op->blen, err);
    if (rc) return rc;
    op->kind = D_REPLACE;
  } else if (!strcmp(type, "Strip")) {
    const char *c = jstr(j, "content");
    op->kind = D_STRIP;
    op->a = fc_xstrdup(c ? c : " ");
    op->alen = strlen(op->a);
    op->start = (int)json_integer_value(json_object_get(j, "start"));
    op->stop = (int)json_integer_value(json_object_get(j, "stop"));
  } else if (!strcmp(type, "Metaspace")) {
    const char *r = jstr(j, "replacement");
    const char *ps = jstr(j, "prepend_scheme");
    op->kind = D_METASPACE;
    op->a = fc_xstrdup(r ? r : "\xe2\x96\x81");
    op->alen = strlen(op->a);
    op->prepend = ps ? strcmp(ps, "never") != 0 : jbool(j, "add_prefix_space", 1);
  } else {
    return fc_err_set(err, FC_EUNSUPPORTED, "decoder '%s' not supported", type);
  }
  t->n_decs++;
  return 0;
}

static int cmp_added(const void *a, const void *b) {
  const added_t *x = a, *y = b;
  unsigned char cx = (unsigned char)x->m[0], cy = (unsigned char)y->m[0];
  if (cx != cy) return cx < cy ? -1 : 1;
  if (x->mlen != y->mlen) return x->mlen > y->mlen ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Resolves a token name from tokenizer_config.json ("<s>" or {"content": "<s>"}). */
static int32_t config_token(const fc_tok_t *t, json_t *cfg, const char *key) {
  json_t *v = json_object_get(cfg, key);
  if (json_is_object(v)) v = json_object_get(v, "content");
  if (!json_is_string(v)) return -1;
  return lookup(t, json_string_value(v), json_string_length(v));
}

static void push_id(int32_t **v, size_t *n, int32_t id) {
  *v = fc_xrealloc(*v, (*n + 1) * sizeof **v);
  (*v)[(*n)++] = id;
}

static int parse_post(fc_tok_t *t, json_t *pp, fc_err_t *err) {
  if (!pp || json_is_null(pp)) return 0;
  const char *type = jstr(pp, "type");
  if (!type) return fc_err_set(err, FC_EFORMAT, "post_processor without a type");
  if (!strcmp(type, "Sequence")) {
    json_t *arr = json_object_get(pp, "processors"), *v;
    size_t i;
    json_array_foreach(arr, i, v) {
      int rc = parse_post(t, v, err);
      if (rc) return rc;
    }
    return 0;
  }
  if (!strcmp(type, "ByteLevel")) return 0; /* only trims offsets */
  if (!strcmp(type, "TemplateProcessing")) {
    json_t *single = json_object_get(pp, "single"), *sp = json_object_get(pp, "special_tokens"), *v;
    size_t i;
    int seen_seq = 0;
    json_array_foreach(single, i, v) {
      json_t *st = json_object_get(v, "SpecialToken");
      if (!st) {
        seen_seq = 1;
        continue;
      }
      const char *name = jstr(st, "id");
      json_t *ids = json_object_get(json_object_get(sp, name ? name : ""), "ids"), *x;
      if (!json_is_array(ids)) return fc_err_set(err, FC_EFORMAT, "template token '%s' has no ids", name ? name : "?");
      size_t k;
      json_array_foreach(ids, k, x) {
        int32_t id = (int32_t)json_integer_value(x);
        if (seen_seq) push_id(&t->suffix, &t->n_suffix, id);
        else push_id(&t->prefix, &t->n_prefix, id);
      }
    }
    return 0;
  }
  if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
    json_t *cls = json_object_get(pp, "cls"), *sep = json_object_get(pp, "sep");
    push_id(&t->prefix, &t->n_prefix, (int32_t)json_integer_value(json_array_get(cls, 1)));
    push_id(&t->suffix, &t->n_suffix, (int32_t)json_integer_value(json_array_get(sep, 1)));
    return 0;
  }
  return fc_err_set(err, FC_EUNSUPPORTED, "post_processor '%s' not supported", type);
}

static int load_model(fc_tok_t *t, json_t *root, fc_err_t *err) {
  json_t *model = json_object_get(root, "model");
  const char *mt = jstr(model, "type");
  if (!model || (mt && strcmp(mt, "BPE")))
    return fc_err_set(err, FC_EUNSUPPORTED, "model type '%s' not supported (BPE only)", mt ? mt : "?");
  json_t *vocab = json_object_get(model, "vocab");
  if (!json_is_object(vocab)) return fc_err_set(err, FC_EFORMAT, "model.vocab is not an object");
  const char *cs = jstr(model, "continuing_subword_prefix"), *ew = jstr(model, "end_of_word_suffix");
  if ((cs && *cs) || (ew && *ew))
    return fc_err_set(err, FC_EUNSUPPORTED, "BPE continuing_subword_prefix/end_of_word_suffix not supported");
  json_t *dropout = json_object_get(model, "dropout");
  if (json_is_number(dropout) && json_number_value(dropout) > 0)
    return fc_err_set(err, FC_EUNSUPPORTED, "BPE dropout not supported");
  t->byte_fallback = jbool(model, "byte_fallback", 0);
  t->ignore_merges = jbool(model, "ignore_merges", 0);
  t->fuse_unk = jbool(model, "fuse_unk", 0);

  /* size: max id over vocab and added tokens */
  int32_t maxid = -1;
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 0x7fffffff - 1)
      return fc_err_set(err, FC_EFORMAT, "vocab entry '%s' has a bad id", key);
    if (json_integer_value(v) > maxid) maxid = (int32_t)json_integer_value(v);
  }
  json_t *added = json_object_get(root, "added_tokens");
  size_t i;
  json_array_foreach(added, i, v) {
    json_t *id = json_object_get(v, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) > 0x7fffffff - 1 ||
        !jstr(v, "content") || !*jstr(v, "content"))
      return fc_err_set(err, FC_EFORMAT, "added token %zu is malformed", i);
    if (json_integer_value(id) > maxid) maxid = (int32_t)json_integer_value(id);
  }
  if (maxid < 0) return fc_err_set(err, FC_EFORMAT, "empty vocabulary");
  if (maxid >= (1 << 26)) return fc_err_set(err, FC_EFORMAT, "vocabulary ids too large");
  t->n_vocab = maxid + 1;
  t->pieces = fc_xcalloc((size_t)t->n_vocab, sizeof *t->pieces);
  t->plen = fc_xcalloc((size_t)t->n_vocab, sizeof *t->plen);
  t->in_model = fc_xcalloc((size_t)t->n_vocab, 1);
  t->special = fc_xcalloc((size_t)t->n_vocab, 1);
  uint32_t hcap = 16;
  while (hcap < (uint32_t)t->n_vocab * 2u + 16) hcap *= 2;
  t->htab = fc_xmalloc(hcap * sizeof *t->htab);
  memset(t->htab, 0xff, hcap * sizeof *t->htab);
  t->hmask = hcap - 1;
  json_object_foreach(vocab, key, v) {
    int32_t id = (int32_t)json_integer_value(v);
    size_t n = strlen(key);
    if (t->pieces[id]) return fc_err_set(err, FC_EFORMAT, "vocab id %d used twice", id);
    if (lookup(t, key, n) >= 0) return fc_err_set(err, FC_EFORMAT, "vocab string repeated");
    t->pieces[id] = fc_xstrdup(key);
    t->plen[id] = (uint32_t)n;
    t->in_model[id] = 1;
    uint32_t h = (uint32_t)fnv(key, n, FNV0) & t->hmask;
    while (t->htab[h] >= 0) h = (h + 1) & t->hmask;
    t->htab[h] = id;
  }
  t->n_added = json_array_size(added);
  t->added = fc_xcalloc(t->n_added ? t->n_added : 1, sizeof *t->added);
  json_array_foreach(added, i, v) {
    added_t *a = &t->added[i];
    a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
    a->content = fc_xstrdup(jstr(v, "content"));
    a->len = strlen(a->content);
    a->special = jbool(v, "special", 0);
    a->lstrip = jbool(v, "lstrip", 0);
    a->rstrip = jbool(v, "rstrip", 0);
    a->single_word = jbool(v, "single_word", 0);
    a->normalized = jbool(v, "normalized", !a->special);
    t->special[a->id] = (uint8_t)a->special;
    if (!t->pieces[a->id]) {
      t->pieces[a->id] = fc_xstrdup(a->content);
      t->plen[a->id] = (uint32_t)a->len;
      if (lookup(t, a->content, a->len) < 0) {
        uint32_t h = (uint32_t)fnv(a->content, a->len, FNV0) & t->hmask;
        while (t->htab[h] >= 0) h = (h + 1) & t->hmask;
        t->htab[h] = a->id;
      }
    }
  }

  const char *unk = jstr(model, "unk_token");
  t->unk_id = unk ? lookup(t, unk, strlen(unk)) : -1;

  /* merges */
  json_t *merges = json_object_get(model, "merges");
  size_t nm = json_array_size(merges);
  uint32_t mcap = 16;
  while (mcap < nm * 2 + 16) mcap *= 2;
  t->mtab = fc_xmalloc(mcap * sizeof *t->mtab);
  for (uint32_t k = 0; k < mcap; k++) t->mtab[k].key = UINT64_MAX;
  t->mmask = mcap - 1;
  t->merge_pairs = fc_xmalloc((nm ? nm : 1) * 2 * sizeof *t->merge_pairs);
  char *tmp = NULL;
  size_t tmpcap = 0;
  json_array_foreach(merges, i, v) {
    const char *a, *b;
    size_t al, bl;
    if (json_is_string(v)) {
      a = json_string_value(v);
      const char *sp = strchr(a, ' ');
      if (!sp || strchr(sp + 1, ' ')) {
        free(tmp);
        return fc_err_set(err, FC_EFORMAT, "merge %zu is not 'a b'", i);
      }
      al = (size_t)(sp - a);
      b = sp + 1;
      bl = strlen(b);
    } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
               json_is_string(json_array_get(v, 1))) {
      a = json_string_value(json_array_get(v, 0));
      b = json_string_value(json_array_get(v, 1));
      al = strlen(a);
      bl = strlen(b);
    } else {
      free(tmp);
      return fc_err_set(err, FC_EFORMAT, "merge %zu is malformed", i);
    }
    if (al + bl + 1 > tmpcap) {
      tmpcap = (al + bl + 1) * 2;
      tmp = fc_xrealloc(tmp, tmpcap);
    }
    memcpy(tmp, a, al);
    memcpy(tmp + al, b, bl);
    int32_t ia = lookup_model(t, a, al), ib = lookup_model(t, b, bl), in = lookup_model(t, tmp, al + bl);
    if (ia < 0 || ib < 0 || in < 0) {
      free(tmp);
      return fc_err_set(err, FC_EFORMAT, "merge %zu uses a token not in the vocabulary", i);
    }
    uint64_t k = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint32_t h = mhash(k) & t->mmask;
    while (t->mtab[h].key != UINT64_MAX && t->mtab[h].key != k) h = (h + 1) & t->mmask;
    if (t->mtab[h].key == k) continue; /* HF keeps the first rank of a repeated pair */
    t->mtab[h].key = k;
    t->mtab[h].rank = (int32_t)i;
    t->mtab[h].id = in;
    t->merge_pairs[2 * t->n_merges] = ia;
    t->merge_pairs[2 * t->n_merges + 1] = ib;
    t->n_merges++;
  }
  free(tmp);
  return 0;
}

static void run_norm(const norm_op_t *op, const nbuf_t *src, nbuf_t *dst);

static void matcher_add(matcher_t *m, const added_t *a, const char *str, size_t len) {
  if (!len) return;
  m->v = fc_xrealloc(m->v, (m->n + 1) * sizeof *m->v);
  added_t *x = &m->v[m->n++];
  *x = *a;
  x->m = fc_xmalloc(len + 1);
  memcpy(x->m, str, len);
  x->m[len] = 0;
  x->mlen = len;
}

static void matcher_index(matcher_t *m) {
  if (m->n) qsort(m->v, m->n, sizeof *m->v, cmp_added);
  for (int c = 0; c < 256; c++) m->first[c] = m->end[c] = 0;
  for (size_t k = m->n; k-- > 0;) m->first[(unsigned char)m->v[k].m[0]] = (int32_t)k;
  for (size_t k = 0; k < m->n; k++) m->end[(unsigned char)m->v[k].m[0]] = (int32_t)k + 1;
}

static void build_matchers(fc_tok_t *t) {
  nbuf_t a = {0}, b = {0};
  for (size_t i = 0; i < t->n_added; i++) {
    const added_t *x = &t->added[i];
    if (!x->normalized) {
      matcher_add(&t->raw, x, x->content, x->len);
      continue;
    }
    a.n = 0;
    nb_put(&a, x->content, x->len, 0);
    for (size_t k = 0; k < t->n_norms; k++) {
      run_norm(&t->norms[k], &a, &b);
      nbuf_t tmp = a;
      a = b;
      b = tmp;
    }
    matcher_add(&t->norm, x, a.b, a.n);
  }
  nb_free(&a);
  nb_free(&b);
  matcher_index(&t->raw);
  matcher_index(&t->norm);
}

static int load_root(fc_tok_t *t, json_t *root, json_t *cfg, fc_err_t *err) {
  int rc = load_model(t, root, err);
  if (rc) return rc;
  size_t cap = 0;
  if ((rc = parse_norm(t, json_object_get(root, "normalizer"), &cap, err))) return rc;
  cap = 0;
  if ((rc = parse_pre(t, json_object_get(root, "pre_tokenizer"), &cap, err))) return rc;
  cap = 0;
  if ((rc = parse_dec(t, json_object_get(root, "decoder"), &cap, err))) return rc;
  if ((rc = parse_post(t, json_object_get(root, "post_processor"), err))) return rc;
  build_matchers(t);

  t->kind = t->bytelevel_input ? FC_TOK_BYTELEVEL : FC_TOK_SENTENCEPIECE;
  if (!t->bytelevel_input && !t->ignore_merges) {
    t->split_metaspace = 1;
    for (int32_t id = 0; id < t->n_vocab && t->split_metaspace; id++) {
      if (!t->in_model[id]) continue;
      const char *p = t->pieces[id];
      for (size_t k = 1; k + 3 <= t->plen[id]; k++)
        if (!memcmp(p + k, "\xe2\x96\x81", 3) && !(k >= 3 && !memcmp(p + k - 3, "\xe2\x96\x81", 3))) {
          t->split_metaspace = 0;
          break;
        }
    }
  }
  byte_map_init();
  for (int b = 0; b < 256; b++) {
    if (t->bytelevel_input) {
      t->byte_ids[b] = lookup_model(t, g_byte_char[b], g_byte_char_len[b]);
    } else {
      char name[8];
      snprintf(name, sizeof name, "<0x%02X>", b);
      t->byte_ids[b] = lookup_model(t, name, 6);
    }
  }

  /* bos/eos: tokenizer_config.json names first, then the template, then common names */
  t->bos = t->eos = -1;
  if (cfg) {
    t->bos = config_token(t, cfg, "bos_token");
    t->eos = config_token(t, cfg, "eos_token");
    json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
    if (json_is_boolean(ab) || json_is_boolean(ae)) {
      /* transformers rebuilds the template from these flags (LlamaTokenizerFast) */
      t->n_prefix = t->n_suffix = 0;
      if (json_is_true(ab) && t->bos >= 0) push_id(&t->prefix, &t->n_prefix, t->bos);
      if (json_is_true(ae) && t->eos >= 0) push_id(&t->suffix, &t->n_suffix, t->eos);
    }
  }
  if (t->bos < 0 && t->n_prefix) t->bos = t->prefix[0];
  if (t->eos < 0 && t->n_suffix) t->eos = t->suffix[t->n_suffix - 1];
  static const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>", "<bos>"};
  static const char *eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"};
  for (size_t k = 0; k < 4 && t->bos < 0; k++) t->bos = lookup(t, bos_names[k], strlen(bos_names[k]));
  for (size_t k = 0; k < 4 && t->eos < 0; k++) t->eos = lookup(t, eos_names[k], strlen(eos_names[k]));

  /* hash: pieces in id order, special flags, merges in rank order, the kind */
  uint64_t h = FNV0;
  for (int32_t id = 0; id < t->n_vocab; id++) {
    uint8_t f = (uint8_t)(t->pieces[id] ? 1 + t->special[id] + 2 * t->in_model[id] : 0);
    h = fnv(&f, 1, h);
    if (t->pieces[id]) h = fnv(t->pieces[id], t->plen[id] + 1, h);
  }
  h = fnv(t->merge_pairs, (size_t)t->n_merges * 2 * sizeof(int32_t), h);
  uint8_t kind = (uint8_t)t->kind;
  t->hash = fnv(&kind, 1, h);
  return 0;
}

int fc_tok_load_json(fc_tok_t **out, const char *json, size_t len, const char *config_json,
                     fc_err_t *err) {
  json_error_t je;
  *out = NULL;
  json_t *root = json_loadb(json, len, 0, &je);
  if (!root || !json_is_object(root)) {
    json_decref(root);
    return fc_err_set(err, FC_EFORMAT, "tokenizer.json: %s (line %d)", je.text, je.line);
  }
  json_t *cfg = NULL;
  if (config_json) {
    cfg = json_loads(config_json, JSON_DECODE_INT_AS_REAL, &je);
    if (!cfg || !json_is_object(cfg)) {
      json_decref(cfg);
      json_decref(root);
      return fc_err_set(err, FC_EFORMAT, "tokenizer_config.json: %s (line %d)", je.text, je.line);
    }
  }
  fc_tok_t *t = fc_xcalloc(1, sizeof *t);
  int rc = load_root(t, root, cfg, err);
  json_decref(root);
  json_decref(cfg);
  if (rc) {
    fc_tok_destroy(&t);
    return rc;
  }
  *out = t;
  return 0;
}

int fc_tok_load(fc_tok_t **out, const char *path, fc_err_t *err) {
  char *file = NULL, *dir = NULL;
  size_t plen = strlen(path);
  if (plen >= 5 && !strcmp(path + plen - 5, ".json")) {
    file = fc_xstrdup(path);
    const char *slash = strrchr(path, '/');
    dir = slash ? strndup(path, (size_t)(slash - path)) : fc_xstrdup(".");
  } else {
    dir = fc_xstrdup(path);
    file = fc_path_join(path, "tokenizer.json");
  }
  char *text = NULL, *cfg = NULL;
  size_t len, clen;
  int rc = fc_read_file(file, &text, &len, err);
  if (!rc) {
    char *cpath = fc_path_join(dir, "tokenizer_config.json");
    if (fc_path_exists(cpath) && (rc = fc_read_file(cpath, &cfg, &clen, err)))
      fc_err_wrap(err, "tokenizer config");
    free(cpath);
  }
  if (!rc) {
    rc = fc_tok_load_json(out, text, len, cfg, err);
    if (rc) fc_err_wrap(err, "%s", file);
  }
  free(text);
  free(cfg);
  free(file);
  free(dir);
  return rc;
}

/* ---------- encoding ---------- */

/* Normalizes src into dst (both with offset maps); dst is reset first. */
static void run_norm(const norm_op_t *op, const nbuf_t *src, nbuf_t *dst) {
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

/* Splits each piece of pieces (spans of buf) with op's regex, by its behavior. */
static void split_regex(const pre_op_t *op, const nbuf_t *buf, const spans_t *in, spans_t *out,
                        pcre2_match_data *md, int *re_err) {
  out->n = 0;
  for (size_t p = 0; p < in->n; p++) {
    uint32_t s = in->v[p].s, e = in->v[p].e;
    /* segments: (start, end, is_match) */
    uint32_t pos = s, last = s;
    int have_prev = 0, prev_match = 0;
    uint32_t ps = 0, pe = 0; /* pending segment for merging behaviors */
#define EMIT(a, b)                         \
  do {                                     \
    if ((b) > (a)) sp_push(out, (a), (b)); \
  } while (0)
    /* process one segment [a,b) with flag m */
#define SEG(a, b, m)                                                   \
  do {                                                                 \
    uint32_t sa_ = (a), sb_ = (b);                                     \
    int m_ = (m) ^ op->invert;                                         \
    if (sb_ <= sa_) break;                                             \
    switch (op->behavior) {                                            \
    case B_ISOLATED: EMIT(sa_, sb_); break;                            \
    case B_REMOVED:                                                    \
      if (!m_) EMIT(sa_, sb_);                                         \
      break;                                                           \
    case B_PREV:                                                       \
      if (m_ && have_prev && !prev_match) pe = sb_;                    \
      else {                                                           \
        if (have_prev) EMIT(ps, pe);                                   \
        ps = sa_, pe = sb_, have_prev = 1;                             \
      }                                                                \
      prev_match = m_;                                                 \
      break;                                                           \
    case B_NEXT:                                                       \
      if (have_prev && prev_match && !m_) pe = sb_;                    \
      else {                                                           \
        if (have_prev) EMIT(ps, pe);                                   \
        ps = sa_, pe = sb_, have_prev = 1;                             \
      }                                                                \
      prev_match = m_;                                                 \
      break;                                                           \
    case B_CONTIG:                                                     \
      if (have_prev && prev_match && m_) pe = sb_;                     \
      else {                                                           \
        if (have_prev) EMIT(ps, pe);                                   \
        ps = sa_, pe = sb_, have_prev = 1;                             \
      }                                                                \
      prev_match = m_;                                                 \
      break;                                                           \
    }                                                                  \
  } while (0)
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
      SEG(last, ms, 0);
      SEG(ms, me, 1);
      last = pos = me;
    }
    SEG(last, e, 0);
    if (have_prev) EMIT(ps, pe);
#undef SEG
#undef EMIT
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
        memcpy(tmp + k, g_byte_char[b[i]], g_byte_char_len[b[i]]);
        k += g_byte_char_len[b[i]];
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
    run_norm(&t->norms[k], &ws->a, &ws->b);
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

int fc_tok_pretokenize(const fc_tok_t *t, const char *text, size_t len, unsigned flags,
                       fc_tok_word_fn fn, void *ctx, fc_err_t *err) {
  int rc = check_text(text, len, err);
  if (rc) return rc;
  out_t out = {0};
  enc_ws_t ws;
  memset(&ws, 0, sizeof ws);
  ws.md = pcre2_match_data_create(4, NULL);
  ws.word_fn = fn;
  ws.word_ctx = ctx;
  size_t pos = 0;
  while (pos < len) {
    size_t ms, me;
    int k = find_added(&t->raw, text, len, pos, flags, &ms, &me);
    size_t seg_end = k >= 0 ? ms : len;
    if (seg_end > pos) encode_segment(t, text, (uint32_t)pos, (uint32_t)seg_end, flags, &ws, &out);
    if (k < 0) break;
    pos = me;
  }
  pcre2_match_data_free(ws.md);
  nb_free(&ws.a);
  nb_free(&ws.b);
  nb_free(&ws.c);
  free(ws.p.v);
  free(ws.q.v);
  if (ws.re_err) return fc_err_set(err, FC_EINVAL, "pre-tokenizer regex failed (PCRE2 error %d)", ws.re_err);
  return 0;
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
  memset(&ws, 0, sizeof ws);
  ws.md = pcre2_match_data_create(4, NULL);
  if (len >= 2048) {
    uint32_t slots = len >= 65536 ? 8192 : 1024;
    ws.w.cache = fc_xcalloc(slots, sizeof *ws.w.cache);
    ws.w.cmask = slots - 1;
  }
  if (flags & FC_TOK_ADD_SPECIAL)
    for (size_t k = 0; k < t->n_prefix; k++) out_push(&out, t->prefix[k], 0);
  size_t pos = 0;
  while (pos < len) {
    size_t ms, me;
    int k = find_added(&t->raw, text, len, pos, flags, &ms, &me);
    size_t seg_end = k >= 0 ? ms : len;
    if (seg_end > pos) encode_segment(t, text, (uint32_t)pos, (uint32_t)seg_end, flags, &ws, &out);
    if (k < 0) break;
    out_push(&out, t->raw.v[k].id, (uint32_t)ms);
    pos = me;
  }
  if (flags & FC_TOK_ADD_SPECIAL)
    for (size_t k = 0; k < t->n_suffix; k++) out_push(&out, t->suffix[k], (uint32_t)len);
  int re_err = ws.re_err;
  pcre2_match_data_free(ws.md);
  nb_free(&ws.a);
  nb_free(&ws.b);
  nb_free(&ws.c);
  free(ws.p.v);
  free(ws.q.v);
  free(ws.w.syms);
  free(ws.w.heap);
  free(ws.w.cache);
  if (re_err) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(re_err, msg, sizeof msg);
    free(out.ids);
    free(out.off);
    return fc_err_set(err, FC_EINVAL, "pre-tokenizer regex failed: %s", (char *)msg);
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
        if (c >= 324 || g_char_byte[c] < 0) {
          ok = 0;
          break;
        }
        unsigned char by = (unsigned char)g_char_byte[c];
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
      if (c < 324 && g_char_byte[c] >= 0) PUT(g_char_byte[c]);
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
