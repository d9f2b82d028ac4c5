/* mergekit's tokenizer_source: the merged model takes the vocabulary of the base, of one named
 * model or the union of all of theirs, and every model's embedding rows (embed_tokens, lm_head)
 * are put in that vocabulary's order before the merge. A row a model lacks is filled as mergekit's PermutedEmbeddings
 * fills it: from the one model that has the token, or the base's when several (the base among
 * them) have it, or their mean, or zeros when none has it. Vocabularies are read from each
 * model's tokenizer.json (model.vocab, as a token -> id mapping or Unigram's [piece, score]
 * list, and added_tokens). */
#include "fc_merge_impl.h"

#include <jansson.h>

typedef struct vocab {
  char **tok;      /* [n] the token of each id, NULL for unused ids */
  size_t n;
  uint8_t *added;  /* [n] 1 for ids listed in added_tokens */
  uint32_t *slot;  /* open addressing: id + 1, 0 empty */
  size_t cap;
  size_t limit;    /* config.json's vocab_size (ids at or above it are unused), else SIZE_MAX */
  json_t *root;    /* the parsed tokenizer.json */
} vocab_t;

static uint64_t vhash(const char *s) { return fc_merge_fnv1a64(s); }

static int64_t vocab_find(const vocab_t *v, const char *t) {
  for (size_t h = vhash(t) & (v->cap - 1);; h = (h + 1) & (v->cap - 1)) {
    uint32_t s = v->slot[h];
    if (!s) return -1;
    if (!strcmp(v->tok[s - 1], t)) return s - 1;
  }
}

static void vocab_set(vocab_t *v, size_t id, const char *t) {
  if (id >= v->n) {
    v->tok = fc_xrealloc(v->tok, (id + 1) * sizeof *v->tok);
    v->added = fc_xrealloc(v->added, id + 1);
    memset(v->tok + v->n, 0, (id + 1 - v->n) * sizeof *v->tok);
    memset(v->added + v->n, 0, id + 1 - v->n);
    v->n = id + 1;
  }
  free(v->tok[id]);
  v->tok[id] = fc_xstrdup(t);
}

static void vocab_index(vocab_t *v) {
  v->cap = 16;
  while (v->cap < 2 * v->n) v->cap *= 2;
  v->slot = fc_xcalloc(v->cap, sizeof *v->slot);
  for (size_t id = 0; id < v->n; id++) {
    if (!v->tok[id] || vocab_find(v, v->tok[id]) >= 0) continue; /* the first id of a token */
    size_t h = vhash(v->tok[id]) & (v->cap - 1);
    while (v->slot[h]) h = (h + 1) & (v->cap - 1);
    v->slot[h] = (uint32_t)id + 1;
  }
}

static void vocab_free(vocab_t *v) {
  for (size_t i = 0; i < v->n; i++) free(v->tok[i]);
  free(v->tok);
  free(v->added);
  free(v->slot);
  json_decref(v->root);
  memset(v, 0, sizeof *v);
}

static int vocab_load(const char *dir, vocab_t *v, fc_err_t *err) {
  char *path = fc_path_join(dir, "tokenizer.json");
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  int rc = 0;
  v->limit = SIZE_MAX;
  if (!root) {
    rc = fc_err_set(err, FC_EFORMAT, "tokenizer_source: cannot read %s: %s", path, je.text);
    goto out;
  }
  json_t *voc = json_object_get(json_object_get(root, "model"), "vocab");
  const char *key;
  json_t *val;
  size_t i;
  if (json_is_object(voc)) {
    json_object_foreach(voc, key, val) {
      if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) > 100000000) {
        rc = fc_err_set(err, FC_EFORMAT, "%s: token '%s' has no valid id", path, key);
        goto out;
      }
      vocab_set(v, (size_t)json_integer_value(val), key);
    }
  } else if (json_is_array(voc)) { /* Unigram: [[piece, score], ...], the id is the position */
    json_array_foreach(voc, i, val) {
      const char *t = json_string_value(json_array_get(val, 0));
      if (!t) {
        rc = fc_err_set(err, FC_EFORMAT, "%s: vocab entry %zu is not [piece, score]", path, i);
        goto out;
      }
      vocab_set(v, i, t);
    }
  } else {
    rc = fc_err_set(err, FC_EFORMAT, "%s: no model.vocab", path);
    goto out;
  }
  json_array_foreach(json_object_get(root, "added_tokens"), i, val) {
    json_t *id = json_object_get(val, "id");
    const char *t = json_string_value(json_object_get(val, "content"));
    if (t && json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) <= 100000000) {
      vocab_set(v, (size_t)json_integer_value(id), t);
      v->added[json_integer_value(id)] = 1;
    }
  }
  vocab_index(v);
  /* mergekit reads the model's vocab_size (a multimodal config's under text_config) */
  char *cp = fc_path_join(dir, "config.json");
  json_t *cfg = fc_path_exists(cp) ? json_load_file(cp, 0, NULL) : NULL;
  json_t *vs = json_object_get(cfg, "vocab_size");
  if (!vs) vs = json_object_get(json_object_get(cfg, "text_config"), "vocab_size");
  if (json_is_integer(vs) && json_integer_value(vs) > 0) v->limit = (size_t)json_integer_value(vs);
  json_decref(cfg);
  free(cp);
out:
  v->root = root;
  free(path);
  return rc;
}

int fc_merge_vocab_perms(const char *src_dir, const char *const *dirs, int nin, int32_t **perm, size_t *nv,
                         fc_err_t *err) {
  vocab_t out = {0}, in = {0};
  int rc = vocab_load(src_dir, &out, err);
  for (int k = 0; k < nin && !rc; k++) {
    perm[k] = NULL;
    if ((rc = vocab_load(dirs[k], &in, err))) break;
    perm[k] = fc_xmalloc(out.n * sizeof *perm[k]);
    for (size_t t = 0; t < out.n; t++) perm[k][t] = out.tok[t] ? (int32_t)vocab_find(&in, out.tok[t]) : -1;
    vocab_free(&in);
  }
  vocab_free(&in);
  *nv = out.n;
  vocab_free(&out);
  return rc;
}

/* The token's entry in a tokenizer.json's added_tokens. */
static json_t *added_entry(json_t *root, const char *t) {
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(root, "added_tokens"), i, e) {
    const char *c = json_string_value(json_object_get(e, "content"));
    if (c && !strcmp(c, t)) return e;
  }
  return NULL;
}

/* mergekit's get_stripped_tokenizer: the base's tokens at ids at or above its vocab_size leave
 * model.vocab, added_tokens and the merges that use them (BPE only, as there). */
static int strip_root(vocab_t *b, const char *dir, fc_err_t *err) {
  json_t *model = json_object_get(b->root, "model"), *voc = json_object_get(model, "vocab");
  if (b->limit >= b->n) return 0;
  if (!json_is_object(voc))
    return fc_err_set(err, FC_EINVAL, "tokenizer_source union: %s has tokens at or above its vocab_size %zu and "
                      "is not a BPE tokenizer (mergekit cannot strip those either)", dir, b->limit);
  const char *key;
  json_t *val, *arr = json_object_get(b->root, "added_tokens");
  void *tmp;
  json_object_foreach_safe(voc, tmp, key, val) if (json_integer_value(val) >= (json_int_t)b->limit)
      json_object_del(voc, key);
  for (size_t i = json_array_size(arr); i-- > 0;)
    if (json_integer_value(json_object_get(json_array_get(arr, i), "id")) >= (json_int_t)b->limit)
      json_array_remove(arr, i);
  json_t *merges = json_object_get(model, "merges");
  for (size_t i = json_array_size(merges); i-- > 0;) {
    json_t *m = json_array_get(merges, i);
    int drop = 0;
    if (json_is_string(m)) { /* "left right" */
      char *two = fc_xstrdup(json_string_value(m)), *sp = strchr(two, ' ');
      if (sp) *sp = 0;
      drop = vocab_find(b, two) >= (int64_t)b->limit || (sp && vocab_find(b, sp + 1) >= (int64_t)b->limit);
      free(two);
    } else {
      for (size_t j = 0; j < json_array_size(m); j++) {
        const char *t = json_string_value(json_array_get(m, j));
        drop |= t && vocab_find(b, t) >= (int64_t)b->limit;
      }
    }
    if (drop) json_array_remove(merges, i);
  }
  for (size_t id = b->limit; id < b->n; id++) free(b->tok[id]);
  b->n = b->limit;
  free(b->slot);
  vocab_index(b);
  return 0;
}

/* Token t gets the next id of the union (the tokenizers library's: after the highest id). */
static void union_add(vocab_t *u, const char *t) {
  size_t id = u->n;
  vocab_set(u, id, t);
  size_t h = vhash(t) & (u->cap - 1);
  while (u->slot[h]) h = (h + 1) & (u->cap - 1);
  u->slot[h] = (uint32_t)id + 1;
  if (2 * u->n > u->cap) { /* keep the table at most half full */
    free(u->slot);
    vocab_index(u);
  }
}

/* mergekit's build_union_tokenizer, with its one open detail fixed: mergekit walks each
 * tokenizer's get_vocab(), a hash map whose order is arbitrary; we walk ids in ascending order.
 * The output starts as the stripped tokenizer of dirs[0] (the base, else the first model); then
 * every other token of every input (dirs in order, ids below that input's vocab_size) that is
 * an added token of none of them gets the next id as a plain added token (normalized, not
 * special); then the added tokens of all inputs (first seen by content, ids ascending) that the
 * output still lacks, with their flags. */
int fc_merge_vocab_union(const char *const *dirs, int nin, int32_t **perm, size_t *nv, char **tok_json,
                         char **added_json, fc_err_t *err) {
  vocab_t *in = fc_xcalloc((size_t)nin, sizeof *in), u = {0};
  json_t *newadd = json_array();
  int rc = 0;
  *tok_json = *added_json = NULL;
  for (int k = 0; k < nin && !rc; k++) rc = vocab_load(dirs[k], &in[k], err);
  if (!rc) rc = strip_root(&in[0], dirs[0], err);
  if (rc) goto out;
  u.limit = SIZE_MAX;
  for (size_t id = 0; id < in[0].n; id++)
    if (in[0].tok[id]) vocab_set(&u, id, in[0].tok[id]);
  vocab_index(&u);
  /* The added tokens of all inputs, first seen by content: (input, id) pairs in that order. */
  vocab_t seen = {0};
  seen.cap = 16;
  seen.slot = fc_xcalloc(seen.cap, sizeof *seen.slot);
  size_t nadd = 0, *add_k = NULL, *add_id = NULL;
  for (int k = 0; k < nin; k++)
    for (size_t id = 0; id < in[k].n && id < in[k].limit; id++) {
      if (!in[k].tok[id] || !in[k].added[id] || vocab_find(&seen, in[k].tok[id]) >= 0) continue;
      union_add(&seen, in[k].tok[id]);
      add_k = fc_xrealloc(add_k, (nadd + 1) * sizeof *add_k);
      add_id = fc_xrealloc(add_id, (nadd + 1) * sizeof *add_id);
      add_k[nadd] = (size_t)k, add_id[nadd++] = id;
    }
  for (int k = 0; k < nin; k++)
    for (size_t id = 0; id < in[k].n && id < in[k].limit; id++) {
      const char *t = in[k].tok[id];
      if (!t || vocab_find(&seen, t) >= 0 || vocab_find(&u, t) >= 0) continue;
      union_add(&u, t);
      json_t *e = json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)(u.n - 1), "content", t,
                            "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 1, "special", 0);
      json_array_append_new(newadd, e);
    }
  for (size_t a = 0; a < nadd; a++) {
    const vocab_t *src = &in[add_k[a]];
    const char *t = src->tok[add_id[a]];
    if (vocab_find(&u, t) >= 0) continue;
    union_add(&u, t);
    json_t *e = json_deep_copy(added_entry(src->root, t));
    if (!e) e = json_pack("{s:s, s:b, s:b, s:b, s:b, s:b}", "content", t, "single_word", 0, "lstrip", 0,
                          "rstrip", 0, "normalized", 1, "special", 0);
    json_object_set_new(e, "id", json_integer((json_int_t)(u.n - 1)));
    json_array_append_new(newadd, e);
  }
  free(add_k);
  free(add_id);
  vocab_free(&seen);
  /* The output tokenizer.json: the stripped base's with the new entries in added_tokens. */
  json_t *arr = json_object_get(in[0].root, "added_tokens");
  if (!json_is_array(arr)) json_object_set_new(in[0].root, "added_tokens", arr = json_array());
  json_array_extend(arr, newadd);
  *tok_json = json_dumps(in[0].root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  *added_json = json_dumps(newadd, JSON_COMPACT);
  /* Each input's rows in the union's order; ids at or above its vocab_size are unused. */
  for (int k = 0; k < nin; k++) {
    perm[k] = fc_xmalloc(u.n * sizeof *perm[k]);
    for (size_t t = 0; t < u.n; t++) {
      int64_t p = u.tok[t] ? vocab_find(&in[k], u.tok[t]) : -1;
      perm[k][t] = p >= 0 && (size_t)p < in[k].limit ? (int32_t)p : -1;
    }
  }
  *nv = u.n;
out:
  for (int k = 0; k < nin; k++) vocab_free(&in[k]);
  free(in);
  vocab_free(&u);
  json_decref(newadd);
  return rc;
}

/* The union's tokenizer.json into out_dir, and its new tokens in tokenizer_config.json's
 * added_tokens_decoder when that file has one (transformers reads both). */
int fc_merge_vocab_write_union(const char *out_dir, const char *tok_json, const char *added_json, fc_err_t *err) {
  char *path = fc_path_join(out_dir, "tokenizer.json");
  int rc = fc_write_text_file(path, tok_json, err);
  free(path);
  if (rc) return rc;
  path = fc_path_join(out_dir, "tokenizer_config.json");
  json_t *cfg = fc_path_exists(path) ? json_load_file(path, 0, NULL) : NULL;
  json_t *dec = json_object_get(cfg, "added_tokens_decoder"), *add = json_loads(added_json, 0, NULL);
  if (json_is_object(dec) && add) {
    size_t i;
    json_t *e;
    json_array_foreach(add, i, e) {
      char id[32];
      snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(e, "id")));
      json_t *c = json_deep_copy(e);
      json_object_del(c, "id");
      json_object_set_new(dec, id, c);
    }
    char *txt = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    rc = fc_write_text_file(path, txt, err);
    free(txt);
  }
  json_decref(add);
  json_decref(cfg);
  free(path);
  return rc;
}

void fc_merge_vocab_permute(const fc_st_tensor_t *const *ins, int nin, int base_k, int32_t *const *perm,
                            size_t nv, size_t nrows, size_t h, int k, float *out) {
  float *row = fc_xmalloc(h * sizeof *row);
  for (size_t t = 0; t < nv; t++) {
    float *o = out + t * h;
    const int32_t p = perm[k][t];
    if (p >= 0 && (int64_t)p < ins[k]->shape[0]) {
      load_f32(ins[k], (size_t)p * h, h, o);
      continue;
    }
    int present = 0, donor = -1;
    for (int q = 0; q < nin; q++)
      if (perm[q][t] >= 0 && (int64_t)perm[q][t] < ins[q]->shape[0]) present++, donor = donor < 0 ? q : donor;
    memset(o, 0, h * sizeof *o);
    if (present == 0) continue; /* no model has the token: zeros */
    if (present > 1 && base_k >= 0 && perm[base_k][t] >= 0 && (int64_t)perm[base_k][t] < ins[base_k]->shape[0])
      donor = base_k;
    if (present == 1 || donor == base_k) {
      load_f32(ins[donor], (size_t)perm[donor][t] * h, h, o);
      continue;
    }
    for (int q = 0; q < nin; q++) { /* the mean of the models that have it, in input order */
      if (perm[q][t] < 0 || (int64_t)perm[q][t] >= ins[q]->shape[0]) continue;
      load_f32(ins[q], (size_t)perm[q][t] * h, h, row);
      for (size_t j = 0; j < h; j++) o[j] += row[j];
    }
    for (size_t j = 0; j < h; j++) o[j] /= (float)present;
  }
  /* pad_to_multiple_of: the rows past the vocabulary take the mean of its rows, as mergekit
   * (after vocab-expansion practice) fills them; the sum in double. */
  if (nrows > nv) {
    double *acc = fc_xcalloc(h, sizeof *acc);
    for (size_t t = 0; t < nv; t++)
      for (size_t j = 0; j < h; j++) acc[j] += out[t * h + j];
    for (size_t j = 0; j < h; j++) row[j] = nv ? (float)(acc[j] / (double)nv) : 0.0f;
    for (size_t t = nv; t < nrows; t++) memcpy(out + t * h, row, h * sizeof *row);
    free(acc);
  }
  free(row);
}
