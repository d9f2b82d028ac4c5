/* JSONL training data held in memory as one token stream with per-token loss flags; batches
 * are cut from it per step (unpacked lines or packed rows, optionally shuffled per epoch). */
#include "fc_data.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fc_data {
  fc_data_opts_t o;
  int32_t *tok;       /* (ntok) all lines' tokens, concatenated */
  uint8_t *loss;      /* (ntok) 1 when predicting this token carries loss */
  size_t ntok, cap;
  size_t *line_off;   /* (nlines+1) start of each line in tok */
  size_t nlines, lcap;
  size_t truncated;
  size_t nrows;
  uint64_t perm_epoch; /* epoch whose permutation is in perm (UINT64_MAX: none) */
  size_t *perm;        /* (nrows) */
  int32_t *scratch_ids; /* a line's fused targets while copying */
  float *scratch_lp;
  size_t scratch_cap;
};

static void push_tokens(fc_data_t *d, const int32_t *ids, const uint8_t *mask, size_t n) {
  if (d->ntok + n > d->cap) {
    while (d->ntok + n > d->cap) d->cap = d->cap ? d->cap * 2 : 4096;
    d->tok = fc_xrealloc(d->tok, d->cap * sizeof *d->tok);
    d->loss = fc_xrealloc(d->loss, d->cap);
  }
  memcpy(d->tok + d->ntok, ids, n * sizeof *ids);
  if (mask) memcpy(d->loss + d->ntok, mask, n);
  else memset(d->loss + d->ntok, 1, n);
  d->ntok += n;
  if (d->nlines + 2 > d->lcap) {
    d->lcap = d->lcap ? d->lcap * 2 : 256;
    d->line_off = fc_xrealloc(d->line_off, d->lcap * sizeof *d->line_off);
  }
  d->line_off[d->nlines + 1] = d->ntok;
  d->nlines++;
  if (n > (size_t)d->o.seq_len) d->truncated++;
}

/* One parsed JSON line into ids (+ mask). Returns 0 or an error without position context. */
static int parse_line(fc_data_t *d, json_t *j, const fc_data_encoder_t *enc, int32_t **ids,
                      uint8_t **mask, size_t *n, fc_err_t *err) {
  *ids = NULL, *mask = NULL, *n = 0;
  if (!json_is_object(j)) return fc_err_set(err, FC_EFORMAT, "not a JSON object");
  json_t *a;
  if ((a = json_object_get(j, "input_ids"))) {
    if (!json_is_array(a)) return fc_err_set(err, FC_EFORMAT, "\"input_ids\" is not an array");
    size_t len = json_array_size(a);
    *ids = fc_xmalloc((len ? len : 1) * sizeof **ids);
    for (size_t i = 0; i < len; i++) {
      json_t *v = json_array_get(a, i);
      if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= d->o.vocab_size)
        return fc_err_set(err, FC_EFORMAT, "input_ids[%zu] is not a token id in [0, %d)", i, d->o.vocab_size);
      (*ids)[i] = (int32_t)json_integer_value(v);
    }
    *n = len;
    json_t *m = json_object_get(j, "loss_mask");
    if (m) {
      if (!json_is_array(m) || json_array_size(m) != len)
        return fc_err_set(err, FC_EFORMAT, "\"loss_mask\" is not an array as long as input_ids");
      *mask = fc_xmalloc(len ? len : 1);
      for (size_t i = 0; i < len; i++) {
        json_t *v = json_array_get(m, i);
        if (!json_is_integer(v) && !json_is_boolean(v))
          return fc_err_set(err, FC_EFORMAT, "loss_mask[%zu] is not 0/1", i);
        (*mask)[i] = json_is_integer(v) ? json_integer_value(v) != 0 : json_is_true(v);
      }
    }
    return 0;
  }
  if ((a = json_object_get(j, "text"))) {
    if (!json_is_string(a)) return fc_err_set(err, FC_EFORMAT, "\"text\" is not a string");
    if (!enc || !enc->text)
      return fc_err_set(err, FC_EUNSUPPORTED, "\"text\" lines need a tokenizer (--model or --tokenizer)");
    return enc->text(enc->ctx, json_string_value(a), json_string_length(a), ids, n, err);
  }
  if ((a = json_object_get(j, "conversations"))) {
    if (!json_is_array(a)) return fc_err_set(err, FC_EFORMAT, "\"conversations\" is not an array");
    if (!enc || !enc->chat)
      return fc_err_set(err, FC_EUNSUPPORTED, "\"conversations\" lines need a tokenizer with a chat template");
    return enc->chat(enc->ctx, a, ids, mask, n, err);
  }
  return fc_err_set(err, FC_EFORMAT, "expected \"input_ids\", \"text\" or \"conversations\"");
}

int fc_data_load(fc_data_t **out, const char *path, const fc_data_encoder_t *enc,
                 const fc_data_opts_t *opts, fc_err_t *err) {
  assert(opts->seq_len >= 2 && opts->vocab_size > 0);
  *out = NULL;
  FILE *fp = fopen(path, "rb");
  if (!fp) return fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
  fc_data_t *d = fc_xcalloc(1, sizeof *d);
  d->o = *opts;
  d->perm_epoch = UINT64_MAX;
  d->lcap = 256;
  d->line_off = fc_xmalloc(d->lcap * sizeof *d->line_off);
  d->line_off[0] = 0;
  char *line = NULL;
  size_t lcap = 0, lineno = 0;
  ssize_t len;
  int rc = 0;
  while ((len = getline(&line, &lcap, fp)) >= 0) {
    lineno++;
    size_t k = 0;
    while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' || line[k] == '\n')) k++;
    if (k == (size_t)len) continue;
    json_error_t je;
    json_t *j = json_loadb(line, (size_t)len, 0, &je);
    if (!j) {
      rc = fc_err_set(err, FC_EFORMAT, "%s:%zu: bad JSON: %s", path, lineno, je.text);
      break;
    }
    int32_t *ids;
    uint8_t *mask;
    size_t n;
    rc = parse_line(d, j, enc, &ids, &mask, &n, err);
    json_decref(j);
    for (size_t i = 0; rc == 0 && i < n; i++) /* an encoder's ids too: the model indexes with them */
      if (ids[i] < 0 || ids[i] >= d->o.vocab_size)
        rc = fc_err_set(err, FC_EMISMATCH, "token %zu has id %d, outside the model's vocabulary (%d)", i, ids[i],
                        d->o.vocab_size);
    if (rc == 0) push_tokens(d, ids, mask, n);
    free(ids);
    free(mask);
    if (rc != 0) {
      fc_err_wrap(err, "%s:%zu", path, lineno);
      break;
    }
  }
  if (rc == 0 && ferror(fp)) rc = fc_err_set(err, FC_EIO, "reading %s: %s", path, strerror(errno));
  free(line);
  fclose(fp);
  if (rc == 0 && d->nlines == 0) rc = fc_err_set(err, FC_EFORMAT, "%s: no data lines", path);
  if (rc != 0) {
    fc_data_destroy(&d);
    return rc;
  }
  if (opts->pack) {
    d->nrows = (d->ntok + (size_t)opts->seq_len - 1) / (size_t)opts->seq_len;
    d->truncated = 0; /* nothing is cut off when packing */
  } else {
    d->nrows = d->nlines;
  }
  d->perm = fc_xmalloc(d->nrows * sizeof *d->perm);
  *out = d;
  return 0;
}

void fc_data_destroy(fc_data_t **pd) {
  fc_data_t *d = *pd;
  if (!d) return;
  free(d->tok);
  free(d->loss);
  free(d->line_off);
  free(d->perm);
  free(d->scratch_ids);
  free(d->scratch_lp);
  free(d);
  *pd = NULL;
}

size_t fc_data_num_lines(const fc_data_t *d) { return d->nlines; }
size_t fc_data_num_rows(const fc_data_t *d) { return d->nrows; }
size_t fc_data_num_tokens(const fc_data_t *d) { return d->ntok; }
size_t fc_data_num_truncated(const fc_data_t *d) { return d->truncated; }

/* The row index (within an epoch's file order) that global row r reads. */
static size_t row_of(fc_data_t *d, uint64_t r) {
  uint64_t epoch = r / d->nrows;
  size_t pos = (size_t)(r % d->nrows);
  if (!d->o.shuffle) return pos;
  if (d->perm_epoch != epoch) {
    /* Fisher-Yates from a generator seeded by (seed, epoch) alone, so any step of any epoch
     * can be reproduced without replaying the ones before (resume needs only the position). */
    fc_rng_t rng;
    fc_rng_seed(&rng, fc_splitmix64(d->o.seed ^ fc_splitmix64(epoch + 0x5eedULL)));
    for (size_t i = 0; i < d->nrows; i++) d->perm[i] = i;
    for (size_t i = d->nrows - 1; i > 0; i--) {
      size_t j = (size_t)(fc_rng_u64(&rng) % (i + 1));
      size_t t = d->perm[i];
      d->perm[i] = d->perm[j];
      d->perm[j] = t;
    }
    d->perm_epoch = epoch;
  }
  return d->perm[pos];
}

size_t fc_data_row_line(fc_data_t *d, uint64_t r) { return row_of(d, r); }

/* [start, start+len) of a row in the token stream */
static void row_span(const fc_data_t *d, size_t row, size_t *start, size_t *len) {
  size_t T = (size_t)d->o.seq_len;
  if (d->o.pack) {
    *start = row * T;
    *len = d->ntok - *start < T ? d->ntok - *start : T;
  } else {
    *start = d->line_off[row];
    size_t n = d->line_off[row + 1] - *start;
    *len = n < T ? n : T;
  }
}

/* The line holding stream position g (binary search over line starts). */
static size_t line_at(const fc_data_t *d, size_t g) {
  size_t lo = 0, hi = d->nlines; /* line_off[lo] <= g < line_off[hi] */
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (d->line_off[mid] <= g) lo = mid;
    else hi = mid;
  }
  return lo;
}

static int fill_line(fc_data_t *d, const fc_targets_source_t *tg, size_t line, fc_err_t *err) {
  size_t n = d->line_off[line + 1] - d->line_off[line];
  size_t need = (n ? n : 1) * (size_t)tg->K;
  if (need > d->scratch_cap) {
    d->scratch_cap = need;
    d->scratch_ids = fc_xrealloc(d->scratch_ids, need * sizeof *d->scratch_ids);
    d->scratch_lp = fc_xrealloc(d->scratch_lp, need * sizeof *d->scratch_lp);
  }
  int rc = tg->fill(tg->ctx, line, d->tok + d->line_off[line], n, d->scratch_ids, d->scratch_lp, err);
  if (rc != 0) return fc_err_wrap(err, "fused targets of data line %zu", line + 1);
  return 0;
}

int fc_data_batch(fc_data_t *d, fc_batch_t *b, uint64_t first, int B, const fc_targets_source_t *tg,
                  fc_err_t *err) {
  assert(B > 0);
  size_t rows[B], starts[B], lens[B];
  size_t T = 1;
  for (int i = 0; i < B; i++) {
    rows[i] = row_of(d, first + (uint64_t)i);
    row_span(d, rows[i], &starts[i], &lens[i]);
    if (lens[i] > T) T = lens[i];
  }
  int K = tg ? tg->K : 0;
  /* buffers sized for the longest possible batch, so reuse never reallocates */
  if (b->B != B || b->K != K || !b->ids) {
    fc_batch_free(b);
    size_t cells = (size_t)B * d->o.seq_len;
    b->ids = fc_xmalloc(cells * sizeof *b->ids);
    b->targets = fc_xmalloc(cells * sizeof *b->targets);
    if (K) {
      b->topk_ids = fc_xmalloc(cells * K * sizeof *b->topk_ids);
      b->topk_logprobs = fc_xmalloc(cells * K * sizeof *b->topk_logprobs);
    }
  }
  b->B = B;
  b->T = (int)T;
  b->K = K;
  b->counted = 0;
  b->tokens = 0;
  for (int i = 0; i < B; i++) {
    b->tokens += (long)lens[i];
    int32_t *ids = b->ids + (size_t)i * T, *tgt = b->targets + (size_t)i * T;
    for (size_t t = 0; t < T; t++) {
      ids[t] = t < lens[i] ? d->tok[starts[i] + t] : 0;
      size_t g = starts[i] + t + 1; /* the token position t predicts */
      int counted = t + 1 < lens[i] && d->loss[g];
      tgt[t] = counted ? d->tok[g] : -1;
      b->counted += counted;
    }
    if (!K) continue;
    int32_t *kid = b->topk_ids + (size_t)i * T * K;
    float *klp = b->topk_logprobs + (size_t)i * T * K;
    for (size_t c = 0; c < T * (size_t)K; c++) kid[c] = -1, klp[c] = 0;
    /* copy each overlapping line's targets; a position whose next token starts another line
     * (packing) keeps empty slots, which fc_loss treats as a one-hot on the gold token */
    size_t t = 0;
    while (t + 1 < lens[i]) {
      size_t g = starts[i] + t, line = d->o.pack ? line_at(d, g) : rows[i];
      int rc = fill_line(d, tg, line, err);
      if (rc != 0) return rc;
      size_t lend = d->line_off[line + 1];
      for (; t + 1 < lens[i] && starts[i] + t + 1 < lend; t++) {
        size_t local = starts[i] + t - d->line_off[line];
        memcpy(kid + t * K, d->scratch_ids + local * K, K * sizeof *kid);
        memcpy(klp + t * K, d->scratch_lp + local * K, K * sizeof *klp);
      }
      t++; /* the line's last token (or the row's end) */
    }
  }
  return 0;
}

void fc_batch_free(fc_batch_t *b) {
  free(b->ids);
  free(b->targets);
  free(b->topk_ids);
  free(b->topk_logprobs);
  memset(b, 0, sizeof *b);
}
