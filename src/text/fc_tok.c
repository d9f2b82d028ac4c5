/* Hugging Face tokenizer.json (BPE) loading: the model's vocabulary and merges, the
 * normalizer, pre-tokenizer, decoder and post-processor steps, the added tokens and the
 * bos/eos choice (tokenizer_config.json first). The pipeline follows the Rust `tokenizers`
 * crate; encoding is in fc_tok_encode.c, decoding and token texts in fc_tok_decode.c. */
#include "fc_tok_impl.h"

#include <jansson.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pthread.h>

/* ---------- byte-level map ---------- */

char fc_tok_byte_chars[256][3];
uint8_t fc_tok_byte_char_len[256];
int16_t fc_tok_char_byte[324]; /* code point -> byte, -1 if not a byte char */

static void byte_map_build(void) {
  int n = 0;
  for (int i = 0; i < 324; i++) fc_tok_char_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    uint32_t cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) cp = (uint32_t)b;
    else cp = 256 + (uint32_t)n++;
    fc_tok_byte_char_len[b] = (uint8_t)fc_utf8_encode(cp, fc_tok_byte_chars[b]);
    fc_tok_byte_chars[b][fc_tok_byte_char_len[b]] = 0;
    fc_tok_char_byte[cp] = (int16_t)b;
  }
}

void fc_tok_byte_map_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, byte_map_build);
}

const char *fc_tok_byte_char(uint8_t b) {
  fc_tok_byte_map_init();
  return fc_tok_byte_chars[b];
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
  uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* PCRE2 refuses UCP with LITERAL */
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
      fc_tok_run_norm(&t->norms[k], &a, &b);
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
  fc_tok_byte_map_init();
  for (int b = 0; b < 256; b++) {
    if (t->bytelevel_input) {
      t->byte_ids[b] = lookup_model(t, fc_tok_byte_chars[b], fc_tok_byte_char_len[b]);
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
#ifdef __GLIBC__
  /* A 150k-token tokenizer.json (11 MB of text) parses into ~70 MB of small blocks, all free
   * now but lying below the tables built from them, so glibc would keep them as RSS for good
   * (a 0.5B model's logits stage is 1 GB of weights beside them): hand their pages back. */
  malloc_trim(0);
#endif
  return rc;
}
