/* mergekit's tokenizer_source: the merged model takes the vocabulary of the base or of one named
 * model, and every model's embedding rows (embed_tokens, lm_head) are put in that vocabulary's
 * order before the merge. A row a model lacks is filled as mergekit's PermutedEmbeddings
 * fills it: from the one model that has the token, or the base's when several (the base among
 * them) have it, or their mean, or zeros when none has it. Vocabularies are read from each
 * model's tokenizer.json (model.vocab, as a token -> id mapping or Unigram's [piece, score]
 * list, and added_tokens). */
#include "fc_merge_impl.h"

#include <jansson.h>

typedef struct vocab {
  char **tok;      /* [n] the token of each id, NULL for unused ids */
  size_t n;
  uint32_t *slot;  /* open addressing: id + 1, 0 empty */
  size_t cap;
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
    memset(v->tok + v->n, 0, (id + 1 - v->n) * sizeof *v->tok);
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
  free(v->slot);
  memset(v, 0, sizeof *v);
}

static int vocab_load(const char *dir, vocab_t *v, fc_err_t *err) {
  char *path = fc_path_join(dir, "tokenizer.json");
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  int rc = 0;
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
    if (t && json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) <= 100000000)
      vocab_set(v, (size_t)json_integer_value(id), t);
  }
  vocab_index(v);
out:
  json_decref(root);
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
  *nv = out.n;
  vocab_free(&out);
  return rc;
}

void fc_merge_vocab_permute(const fc_st_tensor_t *const *ins, int nin, int base_k, int32_t *const *perm,
                            size_t nv, size_t h, int k, float *out) {
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
  free(row);
}
