/* Readers of top-K distributions made elsewhere (fc_import.h): JSONL line by line, safetensors
 * through the mapped reader. Every value is checked: ids non-negative, log-probs <= 0 (a small
 * rounding slack), lists of matching lengths. */
#include "fc_import.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_st.h"
#include "fc_topk.h"

/* Log-probs a little above 0 come from rounding in other tools; more is an error. */
#define IMPORT_LP_SLACK 1e-3f

struct fc_import {
  char *path;
  uint32_t K;
  uint64_t next; /* examples read */
  /* JSONL */
  FILE *fp;
  char *line;
  size_t line_cap;
  json_t *pending; /* the first example, parsed by open to learn K */
  /* safetensors */
  fc_st_t *st;
  const fc_st_tensor_t *off, *ids, *tids, *tlp, *tgt;
  uint64_t nex;
  /* the current example */
  int32_t *b_ids, *b_top;
  float *b_lp, *b_tgt;
  size_t cap_n, cap_nk;
};

static void reserve(fc_import_t *im, uint32_t n) {
  size_t nk = (size_t)n * im->K;
  if (n > im->cap_n) {
    im->b_ids = fc_xrealloc(im->b_ids, n * sizeof(int32_t));
    im->b_tgt = fc_xrealloc(im->b_tgt, n * sizeof(float));
    im->cap_n = n;
  }
  if (nk > im->cap_nk) {
    im->b_top = fc_xrealloc(im->b_top, nk * sizeof(int32_t));
    im->b_lp = fc_xrealloc(im->b_lp, nk * sizeof(float));
    im->cap_nk = nk;
  }
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

/* ---- JSONL ---- */

static json_t *read_json_line(fc_import_t *im, int *rc, fc_err_t *err) {
  ssize_t len;
  while ((len = getline(&im->line, &im->line_cap, im->fp)) >= 0) {
    char *p = im->line;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if (!*p) continue;
    json_error_t je;
    json_t *j = json_loads(p, 0, &je);
    if (!j || !json_is_object(j)) {
      json_decref(j);
      *rc = fc_err_set(err, FC_EFORMAT, "%s example %lu: not a JSON object (%s)", im->path,
                       (unsigned long)im->next, j ? "" : je.text);
      return NULL;
    }
    return j;
  }
  return NULL;
}

static uint32_t longest_list(json_t *lists) {
  size_t i, m = 0;
  json_t *l;
  json_array_foreach(lists, i, l) if (json_is_array(l) && json_array_size(l) > m) m = json_array_size(l);
  return (uint32_t)m;
}

static int bad_lp(float v) { return isnan(v) || v > IMPORT_LP_SLACK; }

static int jsonl_example(fc_import_t *im, json_t *j, fc_import_ex_t *ex, fc_err_t *err) {
  unsigned long x = (unsigned long)im->next;
  json_t *ids = json_object_get(j, "ids"), *ti = json_object_get(j, "topk_ids");
  json_t *tl = json_object_get(j, "topk_logprobs"), *tg = json_object_get(j, "target_logprobs");
  if (!json_is_array(ids) || !json_is_array(ti) || !json_is_array(tl))
    return fc_err_set(err, FC_EFORMAT, "%s example %lu: needs arrays ids, topk_ids and topk_logprobs", im->path, x);
  size_t n = json_array_size(ids);
  if (json_array_size(ti) != n || json_array_size(tl) != n || (tg && !json_is_null(tg) &&
                                                               (!json_is_array(tg) || json_array_size(tg) != n)))
    return fc_err_set(err, FC_EFORMAT, "%s example %lu: ids, topk_ids, topk_logprobs (and target_logprobs) must "
                      "have one entry per token (%zu)", im->path, x, n);
  reserve(im, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(ids, i), *a = json_array_get(ti, i), *b = json_array_get(tl, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24))
      return fc_err_set(err, FC_EFORMAT, "%s example %lu: ids[%zu] is not a token id", im->path, x, i);
    im->b_ids[i] = (int32_t)json_integer_value(v);
    if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) != json_array_size(b) ||
        json_array_size(a) > im->K)
      return fc_err_set(err, FC_EFORMAT, "%s example %lu position %zu: topk_ids and topk_logprobs must be lists of "
                        "the same length, at most K = %u", im->path, x, i, im->K);
    for (uint32_t k = 0; k < im->K; k++) {
      size_t o = i * im->K + k;
      im->b_top[o] = -1, im->b_lp[o] = -INFINITY;
      if (k >= json_array_size(a)) continue;
      json_t *ik = json_array_get(a, k), *lk = json_array_get(b, k);
      if (!json_is_integer(ik) || json_integer_value(ik) < 0 || json_integer_value(ik) >= (1 << 24) ||
          !json_is_number(lk) || bad_lp((float)json_number_value(lk)))
        return fc_err_set(err, FC_EFORMAT, "%s example %lu position %zu: entry %u is not an id with a log-prob <= 0",
                          im->path, x, i, k);
      im->b_top[o] = (int32_t)json_integer_value(ik);
      im->b_lp[o] = (float)json_number_value(lk);
    }
    if (tg && json_is_array(tg)) {
      json_t *t = json_array_get(tg, i);
      /* The last position has no next token: null there (or anything) is fine. */
      im->b_tgt[i] = json_is_number(t) ? (float)json_number_value(t) : NAN;
      if (i + 1 < n && (!json_is_number(t) || bad_lp(im->b_tgt[i])))
        return fc_err_set(err, FC_EFORMAT, "%s example %lu: target_logprobs[%zu] is not a log-prob <= 0", im->path, x,
                          i);
    }
  }
  ex->n = (uint32_t)n;
  ex->ids = im->b_ids, ex->top_ids = im->b_top, ex->top_lp = im->b_lp;
  ex->target_lp = tg && json_is_array(tg) ? im->b_tgt : NULL;
  return 1;
}

/* ---- safetensors ---- */

static int64_t ival(const fc_st_tensor_t *t, int64_t i) {
  return t->dtype == FC_DT_I64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

static int st_open_tensors(fc_import_t *im, fc_err_t *err) {
  int rc = fc_st_open(&im->st, im->path, err);
  if (rc) return rc;
  im->off = fc_st_find(im->st, "offsets"), im->ids = fc_st_find(im->st, "ids");
  im->tids = fc_st_find(im->st, "topk_ids"), im->tlp = fc_st_find(im->st, "topk_logprobs");
  im->tgt = fc_st_find(im->st, "target_logprobs");
  const fc_st_tensor_t *ints[] = {im->off, im->ids, im->tids};
  for (int i = 0; i < 3; i++)
    if (!ints[i] || (ints[i]->dtype != FC_DT_I32 && ints[i]->dtype != FC_DT_I64))
      return fc_err_set(err, FC_EFORMAT, "%s: needs I32 or I64 tensors offsets, ids and topk_ids", im->path);
  const fc_st_tensor_t *fl[] = {im->tlp, im->tgt};
  for (int i = 0; i < 2; i++)
    if ((i == 0 && !fl[i]) || (fl[i] && fl[i]->dtype != FC_DT_F32 && fl[i]->dtype != FC_DT_F16 &&
                               fl[i]->dtype != FC_DT_BF16))
      return fc_err_set(err, FC_EFORMAT, "%s: topk_logprobs (and target_logprobs) must be F32, F16 or BF16", im->path);
  int64_t N = im->ids->numel;
  if (im->off->ndim != 1 || im->off->numel < 1 || im->ids->ndim != 1 || im->tids->ndim != 2 ||
      im->tids->shape[0] != N || im->tlp->ndim != 2 || im->tlp->shape[0] != N ||
      im->tlp->shape[1] != im->tids->shape[1] || (im->tgt && (im->tgt->ndim != 1 || im->tgt->numel != N)))
    return fc_err_set(err, FC_EFORMAT, "%s: shapes must be offsets [E+1], ids [N], topk_ids and topk_logprobs [N, K], "
                      "target_logprobs [N]", im->path);
  if (im->tids->shape[1] < 1 || im->tids->shape[1] > FC_TOPK_MAX_K)
    return fc_err_set(err, FC_EFORMAT, "%s: K = %lld must be in [1, %d]", im->path, (long long)im->tids->shape[1],
                      FC_TOPK_MAX_K);
  im->K = (uint32_t)im->tids->shape[1];
  im->nex = (uint64_t)im->off->numel - 1;
  if (ival(im->off, 0) != 0 || ival(im->off, (int64_t)im->nex) != N)
    return fc_err_set(err, FC_EFORMAT, "%s: offsets must start at 0 and end at the token count %lld", im->path,
                      (long long)N);
  for (uint64_t e = 0; e < im->nex; e++)
    if (ival(im->off, (int64_t)e + 1) < ival(im->off, (int64_t)e))
      return fc_err_set(err, FC_EFORMAT, "%s: offsets must not decrease (at %lu)", im->path, (unsigned long)e);
  return 0;
}

static int st_example(fc_import_t *im, fc_import_ex_t *ex, fc_err_t *err) {
  if (im->next >= im->nex) return 0;
  unsigned long x = (unsigned long)im->next;
  int64_t a = ival(im->off, (int64_t)x), b = ival(im->off, (int64_t)x + 1);
  uint32_t n = (uint32_t)(b - a), K = im->K;
  reserve(im, n);
  int rc = fc_st_to_f32_range(im->tlp, (size_t)a * K, (size_t)n * K, im->b_lp, err);
  if (!rc && im->tgt) rc = fc_st_to_f32_range(im->tgt, (size_t)a, n, im->b_tgt, err);
  if (rc) return rc;
  for (uint32_t i = 0; i < n; i++) {
    int64_t id = ival(im->ids, a + i);
    if (id < 0 || id >= (1 << 24))
      return fc_err_set(err, FC_EFORMAT, "%s example %lu: ids[%u] = %lld is not a token id", im->path, x, i,
                        (long long)id);
    im->b_ids[i] = (int32_t)id;
    for (uint32_t k = 0; k < K; k++) {
      size_t o = (size_t)i * K + k;
      int64_t t = ival(im->tids, (a + i) * K + k);
      if (t < 0 || isinf(im->b_lp[o])) {
        im->b_top[o] = -1, im->b_lp[o] = -INFINITY;
        continue;
      }
      if (t >= (1 << 24) || bad_lp(im->b_lp[o]))
        return fc_err_set(err, FC_EFORMAT, "%s example %lu position %u: entry %u is not an id with a log-prob <= 0",
                          im->path, x, i, k);
      im->b_top[o] = (int32_t)t;
    }
  }
  ex->n = n;
  ex->ids = im->b_ids, ex->top_ids = im->b_top, ex->top_lp = im->b_lp;
  ex->target_lp = im->tgt ? im->b_tgt : NULL;
  return 1;
}

/* ---- entry points ---- */

int fc_import_open(fc_import_t **out, const char *path, fc_err_t *err) {
  *out = NULL;
  fc_import_t *im = fc_xcalloc(1, sizeof *im);
  im->path = fc_xstrdup(path);
  int rc = 0;
  if (ends_with(path, ".safetensors")) {
    rc = st_open_tensors(im, err);
  } else if (ends_with(path, ".jsonl")) {
    im->fp = fopen(path, "r");
    if (!im->fp) {
      rc = fc_err_set(err, FC_EIO, "%s: cannot open", path);
    } else {
      im->pending = read_json_line(im, &rc, err);
      if (im->pending) {
        json_t *tl = json_object_get(im->pending, "topk_logprobs");
        im->K = json_is_array(tl) ? longest_list(tl) : 0;
        if (im->K < 1 || im->K > FC_TOPK_MAX_K)
          rc = fc_err_set(err, FC_EFORMAT, "%s: the first example's topk_logprobs give K = %u, not in [1, %d]", path,
                          im->K, FC_TOPK_MAX_K);
      } else if (!rc) {
        rc = fc_err_set(err, FC_EFORMAT, "%s: no examples", path);
      }
    }
  } else {
    rc = fc_err_set(err, FC_EINVAL, "%s: the layout is told by the name, which must end in .jsonl or .safetensors",
                    path);
  }
  if (rc) {
    fc_import_close(&im);
    return rc;
  }
  *out = im;
  return 0;
}

void fc_import_close(fc_import_t **pim) {
  fc_import_t *im = *pim;
  if (!im) return;
  if (im->fp) fclose(im->fp);
  json_decref(im->pending);
  fc_st_close(&im->st);
  free(im->line), free(im->path);
  free(im->b_ids), free(im->b_top), free(im->b_lp), free(im->b_tgt);
  free(im);
  *pim = NULL;
}

uint32_t fc_import_k(const fc_import_t *im) { return im->K; }

int fc_import_next(fc_import_t *im, fc_import_ex_t *ex, fc_err_t *err) {
  int rc;
  if (im->st) {
    rc = st_example(im, ex, err);
  } else {
    json_t *j = im->pending;
    im->pending = NULL;
    rc = 0;
    if (!j) j = read_json_line(im, &rc, err);
    if (!j) return rc;
    rc = jsonl_example(im, j, ex, err);
    json_decref(j);
  }
  if (rc == 1) im->next++;
  return rc;
}
