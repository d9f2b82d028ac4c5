/* BPE training with incremental pair counts: words are counted once (pre-tokenized by the same
 * fc_tok pipeline that will encode with the result), every pair keeps its count and the words
 * it occurs in, and a merge only revisits those words, adjusting the counts of the pairs it
 * touches. A lazy max-heap picks the most frequent pair (ties: smaller ids first). */
#include "fc_bpe_train.h"

#include "fc_utf8.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---------- word counting ---------- */

typedef struct {
  char *s;
  uint32_t len;
  int64_t count;
} wc_ent_t;

typedef struct {
  wc_ent_t *v;
  uint32_t cap, n; /* open addressing, cap a power of two */
} wc_map_t;

static uint64_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
  return h;
}

static void wc_add(wc_map_t *m, const char *s, size_t len, int64_t c) {
  if ((m->n + 1) * 2 > m->cap) {
    uint32_t ncap = m->cap ? m->cap * 2 : 1024;
    wc_ent_t *nv = fc_xcalloc(ncap, sizeof *nv);
    for (uint32_t i = 0; i < m->cap; i++) {
      if (!m->v[i].s) continue;
      uint32_t h = (uint32_t)hash_bytes(m->v[i].s, m->v[i].len) & (ncap - 1);
      while (nv[h].s) h = (h + 1) & (ncap - 1);
      nv[h] = m->v[i];
    }
    free(m->v);
    m->v = nv;
    m->cap = ncap;
  }
  uint32_t h = (uint32_t)hash_bytes(s, len) & (m->cap - 1);
  while (m->v[h].s) {
    if (m->v[h].len == len && !memcmp(m->v[h].s, s, len)) {
      m->v[h].count += c;
      return;
    }
    h = (h + 1) & (m->cap - 1);
  }
  m->v[h].s = fc_xmalloc(len + 1);
  memcpy(m->v[h].s, s, len);
  m->v[h].s[len] = 0;
  m->v[h].len = (uint32_t)len;
  m->v[h].count = c;
  m->n++;
}

static void wc_free(wc_map_t *m) {
  for (uint32_t i = 0; i < m->cap; i++) free(m->v[i].s);
  free(m->v);
  memset(m, 0, sizeof *m);
}

static void count_word(void *ctx, const char *w, size_t len) { wc_add(ctx, w, len, 1); }

/* ---------- vocabulary being built ---------- */

typedef struct {
  char **s;
  uint32_t *len;
  int32_t n, cap;
  wc_map_t index; /* string -> id, stored in count */
} vocab_t;

static int32_t vocab_find(const vocab_t *v, const char *s, size_t len) {
  if (!v->index.cap) return -1;
  uint32_t h = (uint32_t)hash_bytes(s, len) & (v->index.cap - 1);
  while (v->index.v[h].s) {
    if (v->index.v[h].len == len && !memcmp(v->index.v[h].s, s, len)) return (int32_t)v->index.v[h].count;
    h = (h + 1) & (v->index.cap - 1);
  }
  return -1;
}

static int32_t vocab_add(vocab_t *v, const char *s, size_t len) {
  int32_t id = vocab_find(v, s, len);
  if (id >= 0) return id;
  if (v->n == v->cap) {
    v->cap = v->cap ? v->cap * 2 : 1024;
    v->s = fc_xrealloc(v->s, (size_t)v->cap * sizeof *v->s);
    v->len = fc_xrealloc(v->len, (size_t)v->cap * sizeof *v->len);
  }
  v->s[v->n] = fc_xmalloc(len + 1);
  memcpy(v->s[v->n], s, len);
  v->s[v->n][len] = 0;
  v->len[v->n] = (uint32_t)len;
  wc_add(&v->index, s, len, v->n);
  return v->n++;
}

/* Appends without looking for the string (special tokens that must keep their own id). */
static void vocab_push_raw(vocab_t *v, const char *s) {
  if (v->n == v->cap) {
    v->cap = v->cap ? v->cap * 2 : 1024;
    v->s = fc_xrealloc(v->s, (size_t)v->cap * sizeof *v->s);
    v->len = fc_xrealloc(v->len, (size_t)v->cap * sizeof *v->len);
  }
  v->s[v->n] = fc_xstrdup(s);
  v->len[v->n] = (uint32_t)strlen(s);
  v->n++;
}

static void vocab_free(vocab_t *v) {
  for (int32_t i = 0; i < v->n; i++) free(v->s[i]);
  free(v->s);
  free(v->len);
  wc_free(&v->index);
}

/* ---------- pairs ---------- */

typedef struct {
  uint64_t key; /* a << 32 | b, UINT64_MAX when empty */
  int64_t count;
  int32_t *words; /* word indices (may repeat or be stale; checked when used) */
  uint32_t nw, wcap;
} pair_t;

typedef struct {
  pair_t *v;
  uint32_t cap, n;
} pair_map_t;

static inline uint32_t phash(uint64_t k) { return (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32); }

static pair_t *pair_get(pair_map_t *m, int32_t a, int32_t b, int create) {
  uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  if (create && (m->n + 1) * 2 > m->cap) {
    uint32_t ncap = m->cap ? m->cap * 2 : 4096;
    pair_t *nv = fc_xmalloc(ncap * sizeof *nv);
    for (uint32_t i = 0; i < ncap; i++) nv[i].key = UINT64_MAX;
    for (uint32_t i = 0; i < m->cap; i++) {
      if (m->v[i].key == UINT64_MAX) continue;
      uint32_t h = phash(m->v[i].key) & (ncap - 1);
      while (nv[h].key != UINT64_MAX) h = (h + 1) & (ncap - 1);
      nv[h] = m->v[i];
    }
    free(m->v);
    m->v = nv;
    m->cap = ncap;
  }
  if (!m->cap) return NULL;
  uint32_t h = phash(k) & (m->cap - 1);
  while (m->v[h].key != UINT64_MAX) {
    if (m->v[h].key == k) return &m->v[h];
    h = (h + 1) & (m->cap - 1);
  }
  if (!create) return NULL;
  pair_t *p = &m->v[h];
  memset(p, 0, sizeof *p);
  p->key = k;
  m->n++;
  return p;
}

typedef struct {
  int64_t count;
  uint64_t key;
} heap_ent_t;

typedef struct {
  heap_ent_t *v;
  size_t n, cap;
} heap_t;

static inline int hbefore(const heap_ent_t *a, const heap_ent_t *b) {
  return a->count > b->count || (a->count == b->count && a->key < b->key);
}
static void heap_push(heap_t *h, int64_t count, uint64_t key) {
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 4096;
    h->v = fc_xrealloc(h->v, h->cap * sizeof *h->v);
  }
  heap_ent_t e = {count, key};
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!hbefore(&e, &h->v[p])) break;
    h->v[i] = h->v[p];
    i = p;
  }
  h->v[i] = e;
}
static heap_ent_t heap_pop(heap_t *h) {
  heap_ent_t top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && hbefore(&h->v[c + 1], &h->v[c])) c++;
    if (!hbefore(&h->v[c], &last)) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

typedef struct {
  int32_t *sym;
  uint32_t len;
  int64_t count;
  int32_t stamp; /* last merge step that visited this word */
} word_t;

typedef struct {
  pair_map_t pairs;
  heap_t heap;
  const uint8_t *frozen; /* ids that never merge (byte-fallback tokens) */
  /* pairs whose count changed in this step, to re-push on the heap */
  uint64_t *touched;
  size_t ntouched, tcap;
} state_t;

static void pair_adjust(state_t *st, int32_t a, int32_t b, int64_t delta, int32_t word) {
  if (st->frozen[a] || st->frozen[b]) return;
  pair_t *p = pair_get(&st->pairs, a, b, delta > 0);
  if (!p) return;
  p->count += delta;
  if (delta > 0) {
    if (p->nw == p->wcap) {
      p->wcap = p->wcap ? p->wcap * 2 : 4;
      p->words = fc_xrealloc(p->words, p->wcap * sizeof *p->words);
    }
    if (!p->nw || p->words[p->nw - 1] != word) p->words[p->nw++] = word;
  }
  if (st->ntouched == st->tcap) {
    st->tcap = st->tcap ? st->tcap * 2 : 1024;
    st->touched = fc_xrealloc(st->touched, st->tcap * sizeof *st->touched);
  }
  st->touched[st->ntouched++] = p->key;
}

/* ---------- output ---------- */

static json_t *added_token(int32_t id, const char *content) {
  return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content", content,
                   "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

static char *build_json(const fc_bpe_train_opts_t *o, const vocab_t *v, const int32_t *merges,
                        size_t nmerges, int32_t model_n) {
  json_t *root = json_object();
  json_object_set_new(root, "version", json_string("1.0"));
  json_object_set_new(root, "truncation", json_null());
  json_object_set_new(root, "padding", json_null());
  json_t *added = json_array();
  json_t *vocab = json_object();
  for (int32_t i = 0; i < model_n; i++) json_object_set_new(vocab, v->s[i], json_integer(i));
  json_t *mj = json_array();
  for (size_t i = 0; i < nmerges; i++)
    json_array_append_new(mj, json_pack("[s,s]", v->s[merges[2 * i]], v->s[merges[2 * i + 1]]));
  json_t *model = json_pack("{s:s, s:n}", "type", "BPE", "dropout");
  if (o->kind == FC_TOK_BYTELEVEL) {
    for (int32_t i = model_n; i < v->n; i++) json_array_append_new(added, added_token(i, v->s[i]));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(root, "normalizer", json_null());
    if (o->split_digits)
      /* Qwen2's pre-tokenizer: the GPT-4-style split with single digits, then bytes. */
      json_object_set_new(
          root, "pre_tokenizer",
          json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                    "pretokenizers", "type", "Split", "pattern", "Regex",
                    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                    "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
                    "trim_offsets", 0, "use_regex", 0));
    else
      json_object_set_new(root, "pre_tokenizer",
                          json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                    "trim_offsets", 1, "use_regex", 1));
    json_object_set_new(root, "post_processor",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                  "trim_offsets", 0, "use_regex", 1));
    json_object_set_new(root, "decoder",
                        json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                  "trim_offsets", 1, "use_regex", 1));
    json_object_set_new(model, "unk_token", json_null());
    json_object_set_new(model, "fuse_unk", json_false());
    json_object_set_new(model, "byte_fallback", json_false());
  } else {
    for (int32_t i = 0; i < 3; i++) json_array_append_new(added, added_token(i, v->s[i]));
    json_object_set_new(root, "added_tokens", added);
    json_object_set_new(
        root, "normalizer",
        json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers", "type",
                  "Prepend", "prepend", "\xe2\x96\x81", "type", "Replace", "pattern", "String", " ",
                  "content", "\xe2\x96\x81"));
    json_object_set_new(root, "pre_tokenizer", json_null());
    json_object_set_new(
        root, "post_processor",
        json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], "
                  "s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], "
                  "s:{s:{s:s, s:[i], s:[s]}}}",
                  "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
                  "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>", "type_id", 0,
                  "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", "<s>", "type_id", 1, "Sequence",
                  "id", "B", "type_id", 1, "special_tokens", "<s>", "id", "<s>", "ids", 1, "tokens", "<s>"));
    json_object_set_new(
        root, "decoder",
        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                  "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81", "content", " ", "type",
                  "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start", 1, "stop", 0));
    json_object_set_new(model, "unk_token", json_string("<unk>"));
    json_object_set_new(model, "fuse_unk", json_true());
    json_object_set_new(model, "byte_fallback", json_true());
  }
  json_object_set_new(model, "continuing_subword_prefix", json_null());
  json_object_set_new(model, "end_of_word_suffix", json_null());
  json_object_set_new(model, "ignore_merges", json_false());
  json_object_set_new(model, "vocab", vocab);
  json_object_set_new(model, "merges", mj);
  json_object_set_new(root, "model", model);
  char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(root);
  return s;
}

/* ---------- training ---------- */

typedef struct {
  uint32_t cp;
  int64_t count;
} cp_count_t;

static int cmp_cp_count(const void *a, const void *b) {
  const cp_count_t *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return x->cp < y->cp ? -1 : x->cp > y->cp;
}

/* The base vocabulary as a tokenizer.json (no merges), used to pre-tokenize the corpus with the
 * same pipeline the result will use. */
static int base_tokenizer(const fc_bpe_train_opts_t *o, const vocab_t *v, int32_t model_n, fc_tok_t **tok,
                          fc_err_t *err) {
  char *js = build_json(o, v, NULL, 0, model_n);
  int rc = fc_tok_load_json(tok, js, strlen(js), NULL, err);
  free(js);
  return rc;
}

int fc_bpe_train(const char *text, size_t len, const fc_bpe_train_opts_t *o, char **json, fc_err_t *err) {
  *json = NULL;
  int64_t minf = o->min_frequency > 0 ? o->min_frequency : 2;
  int sp = o->kind == FC_TOK_SENTENCEPIECE;
  static const char *byte_specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  int32_t min_vocab = sp ? 3 + 256 + 1 : 256 + 3;
  if (o->vocab_size < min_vocab || o->vocab_size > (1 << 24))
    return fc_err_set(err, FC_EINVAL, "vocabulary size %d out of range (%d..%d)", o->vocab_size, min_vocab, 1 << 24);

  vocab_t v = {0};
  int32_t model_target; /* model vocabulary size to reach */
  if (sp) {
    vocab_add(&v, "<unk>", 5);
    vocab_add(&v, "<s>", 3);
    vocab_add(&v, "</s>", 4);
    for (int b = 0; b < 256; b++) {
      char name[8];
      snprintf(name, sizeof name, "<0x%02X>", b);
      vocab_add(&v, name, 6);
    }
    model_target = o->vocab_size;
  } else {
    for (int b = 0; b < 256; b++) vocab_add(&v, fc_tok_byte_char((uint8_t)b), strlen(fc_tok_byte_char((uint8_t)b)));
    model_target = o->vocab_size - 3;
  }
  int rc = 0;
  fc_tok_t *base = NULL;
  wc_map_t words = {0};
  if (sp) {
    /* the alphabet: characters (spaces counted as ▁) covering 99.95% of the text, capped so
     * that at least a quarter of the vocabulary is left for merges */
    cp_count_t *cc = NULL;
    size_t ncc = 0, cccap = 0;
    wc_map_t cpmap = {0};
    int64_t total = 0;
    for (size_t i = 0; i < len;) {
      size_t l = fc_utf8_seq_len((unsigned char)text[i]);
      if (i + l > len) break;
      uint32_t c = fc_utf8_decode((const unsigned char *)text + i, &l);
      if (c == ' ') c = 0x2581;
      char key[4];
      memcpy(key, &c, 4);
      wc_add(&cpmap, key, 4, 1);
      total++;
      i += l;
    }
    for (uint32_t i = 0; i < cpmap.cap; i++) {
      if (!cpmap.v[i].s) continue;
      if (ncc == cccap) {
        cccap = cccap ? cccap * 2 : 256;
        cc = fc_xrealloc(cc, cccap * sizeof *cc);
      }
      memcpy(&cc[ncc].cp, cpmap.v[i].s, 4);
      cc[ncc++].count = cpmap.v[i].count;
    }
    wc_free(&cpmap);
    if (cc) qsort(cc, ncc, sizeof *cc, cmp_cp_count);
    int64_t covered = 0;
    size_t cap_chars = (size_t)(o->vocab_size - 259) * 3 / 4;
    if (cap_chars < 1) cap_chars = 1;
    int have_meta = 0;
    for (size_t i = 0; i < ncc && i < cap_chars && covered < total - total / 2000; i++) {
      char u[4];
      size_t l = fc_utf8_encode(cc[i].cp, u);
      vocab_add(&v, u, l);
      have_meta |= cc[i].cp == 0x2581;
      covered += cc[i].count;
    }
    if (!have_meta) vocab_add(&v, "\xe2\x96\x81", 3);
    free(cc);
  }
  int32_t base_n = v.n;
  if (!sp) {
    for (int i = 0; i < 3; i++) vocab_push_raw(&v, byte_specials[i]);
    rc = base_tokenizer(o, &v, base_n, &base, err);
    for (int i = 0; i < 3; i++) free(v.s[--v.n]); /* they go back at the end */
  } else
    rc = base_tokenizer(o, &v, base_n, &base, err);
  if (rc) goto done;
  if ((rc = fc_tok_pretokenize(base, text, len, FC_TOK_PARSE_SPECIAL, count_word, &words, err))) goto done;

  /* words as symbol sequences */
  uint8_t *frozen = fc_xcalloc((size_t)o->vocab_size + 16, 1);
  if (sp)
    for (int i = 0; i < 259; i++) frozen[i] = 1;
  word_t *w = fc_xcalloc(words.n ? words.n : 1, sizeof *w);
  int32_t nw = 0;
  for (uint32_t i = 0; i < words.cap; i++) {
    wc_ent_t *e = &words.v[i];
    if (!e->s) continue;
    word_t *x = &w[nw];
    x->sym = fc_xmalloc(e->len * sizeof *x->sym);
    x->count = e->count;
    x->stamp = -1;
    const unsigned char *p = (const unsigned char *)e->s;
    for (uint32_t k = 0; k < e->len;) {
      if (!sp) {
        x->sym[x->len++] = p[k++]; /* ids 0..255 are the bytes */
        continue;
      }
      size_t l = fc_utf8_seq_len(p[k]);
      if (k + l > e->len) l = 1;
      int32_t id = vocab_find(&v, e->s + k, l);
      if (id >= 259) x->sym[x->len++] = id;
      else
        for (size_t b = 0; b < l; b++) x->sym[x->len++] = 3 + p[k + b];
      k += (uint32_t)l;
    }
    nw++;
  }
  wc_free(&words);

  state_t st = {0};
  st.frozen = frozen;
  for (int32_t i = 0; i < nw; i++)
    for (uint32_t k = 0; k + 1 < w[i].len; k++) pair_adjust(&st, w[i].sym[k], w[i].sym[k + 1], w[i].count, i);
  for (uint32_t i = 0; i < st.pairs.cap; i++)
    if (st.pairs.v[i].key != UINT64_MAX && st.pairs.v[i].count > 0)
      heap_push(&st.heap, st.pairs.v[i].count, st.pairs.v[i].key);
  st.ntouched = 0;

  int32_t *merges = NULL;
  size_t nmerges = 0, mcap = 0;
  char *tmp = NULL;
  size_t tmpcap = 0;
  fc_progress_t prog;
  if (o->verbose) fc_progress_start(&prog, "bpe merges", model_target - v.n);
  int32_t step = 0;
  while (v.n < model_target && st.heap.n) {
    heap_ent_t top = heap_pop(&st.heap);
    int32_t a = (int32_t)(top.key >> 32), b = (int32_t)(uint32_t)top.key;
    pair_t *p = pair_get(&st.pairs, a, b, 0);
    /* stale entry: every count change also pushed the pair with its new count */
    if (!p || p->count != top.count) continue;
    if (p->count < minf) break;
    size_t al = v.len[a], bl = v.len[b];
    if (al + bl > tmpcap) {
      tmpcap = (al + bl) * 2;
      tmp = fc_xrealloc(tmp, tmpcap);
    }
    memcpy(tmp, v.s[a], al);
    memcpy(tmp + al, v.s[b], bl);
    /* never build a special or byte token's string out of text pieces: HF would then give the
     * added token the model's id */
    int32_t old = vocab_find(&v, tmp, al + bl);
    int banned = sp && old >= 0 && old < 259;
    for (int i = 0; i < 3 && !sp; i++)
      banned |= strlen(byte_specials[i]) == al + bl && !memcmp(byte_specials[i], tmp, al + bl);
    /* SentencePiece's split_digits: no piece holds a digit beside anything else. */
    for (size_t k = 0; k < al + bl && sp && o->split_digits && !banned; k++) banned = tmp[k] >= '0' && tmp[k] <= '9';
    if (banned) continue;
    int32_t nid = vocab_add(&v, tmp, al + bl);
    if (nmerges == mcap) {
      mcap = mcap ? mcap * 2 : 1024;
      merges = fc_xrealloc(merges, mcap * 2 * sizeof *merges);
    }
    merges[2 * nmerges] = a;
    merges[2 * nmerges + 1] = b;
    nmerges++;
    /* apply in every word holding the pair; copy the list since adjusting may grow it */
    uint32_t nlist = p->nw;
    int32_t *list = fc_xmalloc((nlist ? nlist : 1) * sizeof *list);
    memcpy(list, p->words, nlist * sizeof *list);
    for (uint32_t li = 0; li < nlist; li++) {
      word_t *x = &w[list[li]];
      if (x->stamp == step) continue;
      x->stamp = step;
      uint32_t out = 0, i = 0;
      while (i < x->len) {
        if (i + 1 < x->len && x->sym[i] == a && x->sym[i + 1] == b) {
          if (out > 0) {
            pair_adjust(&st, x->sym[out - 1], a, -x->count, list[li]);
            pair_adjust(&st, x->sym[out - 1], nid, x->count, list[li]);
          }
          pair_adjust(&st, a, b, -x->count, list[li]);
          if (i + 2 < x->len) {
            pair_adjust(&st, b, x->sym[i + 2], -x->count, list[li]);
            pair_adjust(&st, nid, x->sym[i + 2], x->count, list[li]);
          }
          x->sym[out++] = nid;
          i += 2;
        } else
          x->sym[out++] = x->sym[i++];
      }
      x->len = out;
    }
    free(list);
    p = pair_get(&st.pairs, a, b, 0); /* the table may have grown */
    if (p) {
      free(p->words);
      p->words = NULL;
      p->nw = p->wcap = 0;
    }
    for (size_t k = 0; k < st.ntouched; k++) {
      pair_t *q = pair_get(&st.pairs, (int32_t)(st.touched[k] >> 32), (int32_t)(uint32_t)st.touched[k], 0);
      if (q && q->count > 0 && q->key != top.key) heap_push(&st.heap, q->count, q->key);
    }
    st.ntouched = 0;
    step++;
    if (o->verbose && (step & 255) == 0) fc_progress_update(&prog, step, NULL);
  }
  if (o->verbose) fc_progress_end(&prog, NULL);
  int32_t model_n = v.n;
  if (!sp)
    for (int i = 0; i < 3; i++) vocab_push_raw(&v, byte_specials[i]);
  *json = build_json(o, &v, merges, nmerges, model_n);
  if (!*json) rc = fc_err_set(err, FC_ENOMEM, "cannot serialize the tokenizer");

  for (int32_t i = 0; i < nw; i++) free(w[i].sym);
  free(w);
  for (uint32_t i = 0; i < st.pairs.cap; i++)
    if (st.pairs.v[i].key != UINT64_MAX) free(st.pairs.v[i].words);
  free(st.pairs.v);
  free(st.heap.v);
  free(st.touched);
  free(merges);
  free(tmp);
  free(frozen);
done:
  fc_tok_destroy(&base);
  wc_free(&words);
  vocab_free(&v);
  return rc;
}

int fc_bpe_train_file(const char *corpus_path, const fc_bpe_train_opts_t *o, const char *out_path,
                      fc_err_t *err) {
  char *text;
  size_t len;
  int rc = fc_read_file(corpus_path, &text, &len, err);
  if (rc) return rc;
  char *json;
  rc = fc_bpe_train(text, len, o, &json, err);
  free(text);
  if (rc) return fc_err_wrap(err, "%s", corpus_path);
  rc = fc_write_text_file(out_path, json, err);
  free(json);
  return rc;
}
