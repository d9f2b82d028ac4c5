/* Evaluation: each held-out prompt is rendered with the model's chat template and answered
 * greedily (many prompts per decoding step through fc_generate_batch), the answer is scored by
 * exact match, and the gold answer's mean token cross-entropy comes from one teacher-forced
 * forward per batch (fc_model_forward_topk with K = 0: target log-probs without (B,T,V)). */
#include "fc_eval.h"

#include <assert.h>
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_generate.h"
#include "fc_model.h"
#include "fc_tok.h"

#define FAM_ALL (-1) /* rows without a family, until they get the "all" slot */

void fc_eval_opts_default(fc_eval_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->max_new_tokens = 16;
  o->batch_size = 32;
  o->tmpl = FC_CHAT_AUTO;
}

int fc_eval_match(const char *expected, const char *generated) {
  while (isspace((unsigned char)*generated)) generated++;
  while (isspace((unsigned char)*expected)) expected++;
  size_t ne = strlen(expected), ng = strlen(generated);
  while (ne && isspace((unsigned char)expected[ne - 1])) ne--;
  while (ng && isspace((unsigned char)generated[ng - 1])) ng--;
  return ne == ng && !memcmp(expected, generated, ne);
}

void fc_eval_result_free(fc_eval_result_t *r) {
  for (size_t i = 0; i < r->nrows; i++) free(r->rows[i].prompt), free(r->rows[i].expected), free(r->rows[i].got);
  free(r->rows);
  for (size_t i = 0; i < r->nitems; i++) free(r->items[i].id);
  free(r->items);
  memset(r, 0, sizeof *r);
}

/* The families of a run, named by the data, in order of first appearance. */
typedef struct famtab {
  char name[FC_EVAL_MAX_FAMILIES][FC_EVAL_FAMILY_NAME];
  int n;
} famtab_t;

/* One data row, tokenized. */
typedef struct row {
  int fam;                         /* index into the famtab_t, or FAM_ALL */
  char *id;                        /* the row's "id", else FILE:LINE; stable across models */
  char *system, *prompt, *answer; /* system may be NULL */
  int32_t *pids;                   /* the generation prompt */
  int np;
  int32_t *ids, *targets;          /* the whole conversation; targets[t] = ids[t+1] on answer tokens, else -1 */
  int nt;
  int ntok;                        /* answer tokens (targets >= 0) */
  /* "valid": every right answer, when the prompt has several (the answer among them); each
   * is tokenized as a conversation of its own so that its probability can be scored */
  int nvalid;
  char **valid;
  int32_t **vids, **vtg;
  int *vnt;
  /* filled by scoring */
  char *got;
  int correct, generated, stopped;
  double nll;
} row_t;

static void rows_free(row_t *rows, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(rows[i].id), free(rows[i].system), free(rows[i].prompt), free(rows[i].answer), free(rows[i].got);
    free(rows[i].pids), free(rows[i].ids), free(rows[i].targets);
    for (int v = 0; v < rows[i].nvalid; v++) {
      free(rows[i].valid[v]);
      if (rows[i].vids) free(rows[i].vids[v]), free(rows[i].vtg[v]);
    }
    free(rows[i].valid), free(rows[i].vids), free(rows[i].vtg), free(rows[i].vnt);
  }
  free(rows);
}

/* Parses one JSONL line into *r (strings owned by r); a new family name joins ft. */
static int parse_row(const char *line, size_t len, const char *path, int file, long lineno, famtab_t *ft, row_t *r,
                     fc_err_t *err) {
  memset(r, 0, sizeof *r);
  json_error_t je;
  json_t *root = json_loadb(line, len, 0, &je);
  if (!root) return fc_err_set(err, FC_EFORMAT, "%s:%ld: not JSON: %s", path, lineno, je.text);
  json_t *fam = json_is_object(root) ? json_object_get(root, "family") : NULL;
  json_t *id = json_is_object(root) ? json_object_get(root, "id") : NULL;
  json_t *valid = json_is_object(root) ? json_object_get(root, "valid") : NULL;
  r->fam = FAM_ALL;
  int rc = 0;
  if (valid && !json_is_null(valid)) {
    size_t k;
    json_t *v;
    if (!json_is_array(valid) || json_array_size(valid) == 0 || json_array_size(valid) > FC_EVAL_MAX_VALID)
      rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: \"valid\" must be a list of 1 to %d answers", path, lineno,
                      FC_EVAL_MAX_VALID);
    json_array_foreach(valid, k, v) if (!rc && !json_is_string(v)) rc = fc_err_set(
        err, FC_EFORMAT, "%s:%ld: \"valid\" holds something that is not a string", path, lineno);
    if (!rc) {
      r->valid = fc_xcalloc(json_array_size(valid), sizeof *r->valid);
      json_array_foreach(valid, k, v) r->valid[r->nvalid++] = fc_xstrdup(json_string_value(v));
    }
  }
  if (id && !json_is_null(id) && !json_is_string(id))
    rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: \"id\" must be a string", path, lineno);
  if (!rc && json_is_string(id)) {
    r->id = fc_xstrdup(json_string_value(id));
  } else if (!rc) {
    char buf[32];
    if (file) snprintf(buf, sizeof buf, "%d:%ld", file + 1, lineno);
    else snprintf(buf, sizeof buf, "%ld", lineno);
    r->id = fc_xstrdup(buf);
  }
  if (!rc && fam && !json_is_null(fam)) {
    const char *fs = json_string_value(fam);
    if (!json_is_string(fam)) {
      rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: \"family\" must be a string", path, lineno);
    } else if (!*fs || strlen(fs) >= FC_EVAL_FAMILY_NAME) {
      rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: family name '%.64s' is empty or longer than %d bytes", path, lineno,
                      fs, FC_EVAL_FAMILY_NAME - 1);
    } else if (strcmp(fs, "all")) {
      int k = 0;
      while (k < ft->n && strcmp(ft->name[k], fs)) k++;
      if (k == ft->n) {
        if (ft->n == FC_EVAL_MAX_FAMILIES - 1) /* one slot stays for "all" */
          rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: more than %d task families", path, lineno,
                          FC_EVAL_MAX_FAMILIES - 1);
        else
          snprintf(ft->name[ft->n++], FC_EVAL_FAMILY_NAME, "%s", fs);
      }
      r->fam = k;
    }
  }
  json_decref(root);
  if (rc) return rc;
  fc_chat_conv_t conv;
  if ((rc = fc_chat_parse_sharegpt(line, len, &conv, err))) return fc_err_wrap(err, "%s:%ld", path, lineno);
  size_t i = 0;
  if (conv.n && conv.msgs[0].role == FC_ROLE_SYSTEM) r->system = fc_xstrdup(conv.msgs[i++].text);
  while (i < conv.n && conv.msgs[i].role != FC_ROLE_USER) i++;
  if (i == conv.n) {
    rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: no human turn to use as the prompt", path, lineno);
  } else {
    r->prompt = fc_xstrdup(conv.msgs[i].text);
    size_t j = i + 1;
    if (j == conv.n || conv.msgs[j].role != FC_ROLE_ASSISTANT)
      rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: no gpt answer after the human turn", path, lineno);
    else
      r->answer = fc_xstrdup(conv.msgs[j].text);
  }
  /* the gold answer must be one of the valid ones, or the two scores would disagree */
  int gold_valid = !r->nvalid;
  for (int v = 0; !rc && v < r->nvalid; v++) gold_valid |= fc_eval_match(r->valid[v], r->answer);
  if (!rc && !gold_valid)
    rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: the gpt answer is not among the \"valid\" ones", path, lineno);
  fc_chat_conv_free(&conv);
  return rc;
}

static int read_rows(const char *const *paths, int npaths, int limit, famtab_t *ft, row_t **out, size_t *nout,
                     fc_err_t *err) {
  row_t *rows = NULL;
  size_t n = 0, cap = 0;
  int per_fam[FC_EVAL_MAX_FAMILIES + 1] = {0}, rc = 0; /* [0]: no family */
  for (int p = 0; p < npaths && !rc; p++) {
    char *text;
    size_t len;
    if ((rc = fc_read_file(paths[p], &text, &len, err))) break;
    long lineno = 0;
    for (size_t a = 0; a < len && !rc;) {
      size_t e = a;
      while (e < len && text[e] != '\n') e++;
      lineno++;
      size_t s = a;
      while (s < e && (text[s] == ' ' || text[s] == '\t' || text[s] == '\r')) s++;
      if (s < e) {
        row_t r;
        rc = parse_row(text + a, e - a, paths[p], p, lineno, ft, &r, err);
        if (!rc && (!limit || per_fam[r.fam + 1] < limit)) {
          per_fam[r.fam + 1]++;
          if (n == cap) {
            cap = cap ? cap * 2 : 64;
            rows = fc_xrealloc(rows, cap * sizeof *rows);
          }
          rows[n++] = r;
        } else {
          free(r.id), free(r.system), free(r.prompt), free(r.answer);
          for (int v = 0; v < r.nvalid; v++) free(r.valid[v]);
          free(r.valid);
        }
      }
      a = e + 1;
    }
    free(text);
    if (!rc && n == 0 && p == npaths - 1) rc = fc_err_set(err, FC_EFORMAT, "%s: no rows to evaluate", paths[p]);
  }
  if (rc) {
    rows_free(rows, n);
    return rc;
  }
  *out = rows;
  *nout = n;
  return 0;
}

/* Renders and tokenizes one conversation (system, prompt, answer) with targets on the assistant
 * span (the answer and its end-of-turn token): *ids, *targets (nt each), *ntok targets. */
static int tokenize_conv(const fc_tok_t *tok, fc_chat_template_t tmpl, const char *system, const char *prompt,
                         const char *answer, int32_t **ids, int32_t **targets, int *nt, int *ntok, fc_err_t *err) {
  fc_chat_msg_t m[3];
  size_t nm = 0, len, n;
  char *text;
  if (system) m[nm++] = (fc_chat_msg_t){FC_ROLE_SYSTEM, system};
  m[nm++] = (fc_chat_msg_t){FC_ROLE_USER, prompt};
  m[nm++] = (fc_chat_msg_t){FC_ROLE_ASSISTANT, answer};
  fc_chat_span_t *spans;
  size_t nspans;
  int rc = fc_chat_render(tmpl, m, nm, &text, &len, &spans, &nspans, err);
  if (rc) return rc;
  uint32_t *offs = NULL;
  rc = fc_tok_encode(tok, text, len, FC_TOK_PARSE_SPECIAL, ids, &offs, &n, err);
  free(text);
  *ntok = 0;
  if (!rc) {
    uint8_t *mask = fc_xmalloc(n ? n : 1);
    fc_chat_mask_tokens(spans, nspans, offs, n, mask);
    *nt = (int)n;
    *targets = fc_xmalloc((n ? n : 1) * sizeof(int32_t));
    for (size_t t = 0; t < n; t++) {
      /* position t predicts token t + 1; position 0 itself is never a target */
      (*targets)[t] = t + 1 < n && mask[t + 1] ? (*ids)[t + 1] : -1;
      *ntok += (*targets)[t] >= 0;
    }
    free(mask);
  }
  free(offs);
  free(spans);
  return rc;
}

/* Renders and tokenizes a row: the generation prompt, the conversation with the gold answer,
 * and one conversation per valid answer when the row lists them. */
static int tokenize_row(const fc_tok_t *tok, fc_chat_template_t tmpl, row_t *r, fc_err_t *err) {
  char *text;
  size_t len, n;
  int rc = fc_chat_render_prompt(tmpl, r->system, r->prompt, &text, &len, err);
  if (rc) return rc;
  rc = fc_tok_encode(tok, text, len, FC_TOK_PARSE_SPECIAL, &r->pids, NULL, &n, err);
  free(text);
  if (rc) return rc;
  r->np = (int)n;
  rc = tokenize_conv(tok, tmpl, r->system, r->prompt, r->answer, &r->ids, &r->targets, &r->nt, &r->ntok, err);
  if (rc || !r->nvalid) return rc;
  r->vids = fc_xcalloc((size_t)r->nvalid, sizeof *r->vids);
  r->vtg = fc_xcalloc((size_t)r->nvalid, sizeof *r->vtg);
  r->vnt = fc_xcalloc((size_t)r->nvalid, sizeof *r->vnt);
  for (int v = 0; v < r->nvalid && !rc; v++) {
    int ntok;
    rc = tokenize_conv(tok, tmpl, r->system, r->prompt, r->valid[v], &r->vids[v], &r->vtg[v], &r->vnt[v], &ntok, err);
  }
  return rc;
}

/* Decodes ids; ids the tokenizer does not have (a model's vocabulary is often padded beyond
 * it) become U+FFFD, so such an answer is never taken for a right one. */
static int decode_ids(const fc_tok_t *tok, const int32_t *ids, int n, char **out, fc_err_t *err) {
  int32_t V = fc_tok_vocab_size(tok);
  char *res = fc_xstrdup("");
  size_t len = 0;
  for (int a = 0; a <= n;) {
    int e = a;
    while (e < n && ids[e] >= 0 && ids[e] < V) e++;
    char *piece;
    int rc = fc_tok_decode(tok, ids + a, (size_t)(e - a), 1, &piece, err);
    if (rc) {
      free(res);
      return rc;
    }
    size_t pl = strlen(piece);
    res = fc_xrealloc(res, len + pl + 4);
    memcpy(res + len, piece, pl + 1);
    len += pl;
    free(piece);
    if (e < n) memcpy(res + len, "\xEF\xBF\xBD", 4), len += 3;
    a = e + 1;
  }
  *out = res;
  return 0;
}

/* Teacher-forced log-probs of rows[0..B), every conversation padded on the right to the
 * longest. A row with valid answers scores each of them: its nll is -log of the probability the
 * model gives the whole set (log-sum-exp of the answers' sequence log-probs), still divided by
 * the gold answer's tokens in the means, so a model that spreads its mass over the right
 * answers is not charged for not putting all of it on the one that happened to be drawn. */
static int score_loss(fc_model_t *m, row_t *rows, int B, fc_err_t *err) {
  int T = 0, S = 0;
  for (int i = 0; i < B; i++) {
    S += rows[i].nvalid ? rows[i].nvalid : 1;
    for (int v = 0; v < (rows[i].nvalid ? rows[i].nvalid : 1); v++) {
      int nt = rows[i].nvalid ? rows[i].vnt[v] : rows[i].nt;
      T = nt > T ? nt : T;
    }
  }
  size_t ST = (size_t)S * T;
  int32_t *ids = fc_xcalloc(ST, sizeof *ids), *tg = fc_xmalloc(ST * sizeof *tg);
  float *lp = fc_xmalloc(ST * sizeof *lp);
  for (size_t k = 0; k < ST; k++) tg[k] = -1;
  for (int i = 0, s = 0; i < B; i++)
    for (int v = 0; v < (rows[i].nvalid ? rows[i].nvalid : 1); v++, s++) {
      const row_t *r = &rows[i];
      int nt = r->nvalid ? r->vnt[v] : r->nt;
      memcpy(ids + (size_t)s * T, r->nvalid ? r->vids[v] : r->ids, (size_t)nt * sizeof *ids);
      memcpy(tg + (size_t)s * T, r->nvalid ? r->vtg[v] : r->targets, (size_t)nt * sizeof *tg);
    }
  int rc = fc_model_forward_topk(m, ids, S, T, 0, tg, NULL, NULL, lp, err);
  for (int i = 0, s = 0; i < B && !rc; i++) {
    int nv = rows[i].nvalid ? rows[i].nvalid : 1;
    double lse_max = -INFINITY, seq[FC_EVAL_MAX_VALID];
    for (int v = 0; v < nv; v++, s++) {
      double sum = 0;
      for (int t = 0; t < T; t++)
        if (tg[(size_t)s * T + t] >= 0) sum += lp[(size_t)s * T + t];
      seq[v] = sum;
      lse_max = sum > lse_max ? sum : lse_max;
    }
    double acc = 0;
    for (int v = 0; v < nv; v++) acc += exp(seq[v] - lse_max);
    rows[i].nll = -(lse_max + log(acc));
  }
  free(ids), free(tg), free(lp);
  return rc;
}

int fc_eval_run(const char *model_dir, const char *const *data_paths, int npaths, const fc_eval_opts_t *opts,
                fc_progress_fn progress, void *pctx, fc_eval_result_t *result, fc_err_t *err) {
  assert(opts->max_new_tokens > 0 && opts->batch_size > 0 && npaths > 0);
  memset(result, 0, sizeof *result);
  double t0 = fc_now();
  fc_model_t *m = NULL;
  fc_tok_t *tok = NULL;
  row_t *rows = NULL;
  size_t nrows = 0;
  famtab_t ft = {0};
  int rc = read_rows(data_paths, npaths, opts->limit, &ft, &rows, &nrows, err);
  if (rc) return rc;
  if ((rc = fc_model_load_mapped(&m, model_dir, err))) {
    fc_err_wrap(err, "%s", model_dir);
    goto done;
  }
  if ((rc = fc_tok_load(&tok, model_dir, err))) {
    fc_err_wrap(err, "%s", model_dir);
    goto done;
  }
  const fc_config_t *cfg = fc_model_config(m);
  if (fc_tok_vocab_size(tok) > cfg->vocab_size) {
    rc = fc_err_set(err, FC_EMISMATCH, "%s: the tokenizer has %d tokens but the model only %d", model_dir,
                    fc_tok_vocab_size(tok), cfg->vocab_size);
    goto done;
  }
  if (opts->threads > 0) fc_model_set_threads(m, opts->threads);
  fc_chat_template_t tmpl = opts->tmpl == FC_CHAT_AUTO ? fc_chat_template_for(tok) : opts->tmpl;
  /* The end of an assistant turn: <|im_end|> for ChatML, eos (</s>) for Llama-2. Generation
   * stops there; eos tokens of either kind also cut the decoded answer. */
  int32_t stop = tmpl == FC_CHAT_CHATML ? fc_tok_piece_id(tok, "<|im_end|>") : fc_tok_eos(tok);
  if (stop < 0 && tmpl == FC_CHAT_LLAMA2) stop = cfg->eos_token_id;
  if (stop < 0) {
    rc = fc_err_set(err, FC_EMISMATCH, "%s: the tokenizer has no end-of-turn token for the %s template", model_dir,
                    fc_chat_template_name(tmpl));
    goto done;
  }
  int32_t cut_ids[3] = {stop, fc_tok_eos(tok), cfg->eos_token_id};
  for (size_t i = 0; i < nrows; i++) {
    if ((rc = tokenize_row(tok, tmpl, &rows[i], err))) {
      fc_err_wrap(err, "row %zu", i + 1);
      goto done;
    }
    int longest = rows[i].nt;
    for (int v = 0; v < rows[i].nvalid; v++) longest = rows[i].vnt[v] > longest ? rows[i].vnt[v] : longest;
    if (rows[i].np + opts->max_new_tokens > cfg->max_position_embeddings || longest > cfg->max_position_embeddings) {
      rc = fc_err_set(err, FC_EINVAL, "row %zu: the prompt (%d tokens) plus %d new tokens, or the conversation (%d tokens), is longer than the model's context of %d",
                      i + 1, rows[i].np, opts->max_new_tokens, longest, cfg->max_position_embeddings);
      goto done;
    }
  }
  fc_gen_opts_t go;
  fc_gen_opts_default(&go);
  go.max_tokens = opts->max_new_tokens;
  go.eos_id = stop;
  int bs = opts->batch_size;
  const int32_t **pp = fc_xmalloc((size_t)bs * sizeof *pp);
  int *plen = fc_xmalloc((size_t)bs * sizeof *plen), *nouts = fc_xmalloc((size_t)bs * sizeof *nouts);
  int32_t **outs = fc_xcalloc((size_t)bs, sizeof *outs);
  for (size_t b0 = 0; b0 < nrows && !rc; b0 += (size_t)bs) {
    int B = nrows - b0 < (size_t)bs ? (int)(nrows - b0) : bs;
    row_t *br = rows + b0;
    for (int i = 0; i < B; i++) pp[i] = br[i].pids, plen[i] = br[i].np;
    double t1 = fc_now();
    if ((rc = fc_generate_batch(m, pp, plen, B, &go, outs, nouts, err))) break;
    result->gen_seconds += fc_now() - t1;
    for (int i = 0; i < B && !rc; i++) {
      int cut = nouts[i];
      for (int k = 0; k < nouts[i] && cut == nouts[i]; k++)
        for (int s = 0; s < 3; s++)
          if (cut_ids[s] >= 0 && outs[i][k] == cut_ids[s]) cut = k;
      br[i].generated = nouts[i];
      br[i].stopped = cut < nouts[i];
      rc = decode_ids(tok, outs[i], cut, &br[i].got, err);
      br[i].correct = !rc && fc_eval_match(br[i].answer, br[i].got);
      for (int v = 0; v < br[i].nvalid && !rc; v++) br[i].correct |= fc_eval_match(br[i].valid[v], br[i].got);
    }
    for (int i = 0; i < B; i++) free(outs[i]), outs[i] = NULL;
    if (rc) break;
    t1 = fc_now();
    if ((rc = score_loss(m, br, B, err))) break;
    result->loss_seconds += fc_now() - t1;
    if (progress) {
      char msg[64];
      snprintf(msg, sizeof msg, "%zu/%zu prompts", b0 + (size_t)B, nrows);
      if (progress(pctx, (double)(b0 + (size_t)B) / (double)nrows, msg)) rc = fc_err_set(err, FC_ECANCEL, "eval cancelled");
    }
  }
  free(pp), free(plen), free(nouts), free(outs);
  if (rc) goto done;

  /* Aggregate: families in order of first appearance, "all" last (when some row has none). */
  int slot[FC_EVAL_MAX_FAMILIES + 1]; /* [0]: no family */
  for (int f = 0; f <= ft.n; f++) slot[f] = -1;
  for (size_t i = 0; i < nrows; i++) slot[rows[i].fam + 1] = 0;
  for (int f = 1; f <= ft.n + 1; f++) {
    int k = f == ft.n + 1 ? 0 : f;
    if (slot[k] == 0) {
      slot[k] = result->nfam++;
      snprintf(result->fam[slot[k]].name, sizeof result->fam[0].name, "%s", k ? ft.name[k - 1] : "all");
    }
  }
  double *nll = fc_xcalloc((size_t)result->nfam + 1, sizeof *nll);
  snprintf(result->overall.name, sizeof result->overall.name, "overall");
  for (size_t i = 0; i < nrows; i++) {
    fc_eval_family_t *fs[2] = {&result->fam[slot[rows[i].fam + 1]], &result->overall};
    double *ns[2] = {&nll[slot[rows[i].fam + 1]], &nll[result->nfam]};
    for (int k = 0; k < 2; k++) {
      fs[k]->n++;
      fs[k]->correct += rows[i].correct;
      fs[k]->tokens += rows[i].ntok;
      fs[k]->generated += rows[i].generated;
      *ns[k] += rows[i].nll;
    }
  }
  for (int f = 0; f <= result->nfam; f++) {
    fc_eval_family_t *fs = f < result->nfam ? &result->fam[f] : &result->overall;
    fs->accuracy = fs->n ? (double)fs->correct / fs->n : 0;
    fs->loss = fs->tokens ? nll[f] / (double)fs->tokens : NAN;
    if (f < result->nfam) {
      result->macro_accuracy += fs->accuracy / result->nfam;
      result->macro_loss += fs->loss / result->nfam;
    }
  }
  free(nll);
  result->items = fc_xcalloc(nrows ? nrows : 1, sizeof *result->items);
  result->nitems = nrows;
  for (size_t i = 0; i < nrows; i++) {
    fc_eval_item_t *it = &result->items[i];
    it->id = rows[i].id, rows[i].id = NULL;
    it->family = slot[rows[i].fam + 1];
    it->correct = rows[i].correct;
    it->tokens = rows[i].ntok;
    it->loss = rows[i].ntok ? rows[i].nll / rows[i].ntok : NAN;
  }
  if (opts->keep_rows) {
    result->rows = fc_xcalloc(nrows, sizeof *result->rows);
    result->nrows = nrows;
    for (size_t i = 0; i < nrows; i++) {
      fc_eval_row_t *o = &result->rows[i];
      o->family = slot[rows[i].fam + 1];
      o->prompt = rows[i].prompt, rows[i].prompt = NULL;
      o->expected = rows[i].answer, rows[i].answer = NULL;
      o->got = rows[i].got, rows[i].got = NULL;
      o->correct = rows[i].correct;
      o->generated = rows[i].generated;
      o->stopped = rows[i].stopped;
      o->tokens = rows[i].ntok;
      o->loss = rows[i].ntok ? rows[i].nll / rows[i].ntok : NAN;
    }
  }
  result->wall_seconds = fc_now() - t0;
done:
  rows_free(rows, nrows);
  fc_tok_destroy(&tok);
  fc_model_destroy(&m);
  if (rc) fc_eval_result_free(result);
  return rc;
}

/* ---- output ---- */

static json_t *num_or_null(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *fam_json(const fc_eval_family_t *f) {
  json_t *o = json_object();
  json_object_set_new(o, "n", json_integer(f->n));
  json_object_set_new(o, "correct", json_integer(f->correct));
  json_object_set_new(o, "accuracy", num_or_null(f->accuracy));
  json_object_set_new(o, "loss", num_or_null(f->loss));
  json_object_set_new(o, "tokens", json_integer(f->tokens));
  json_object_set_new(o, "generated", json_integer(f->generated));
  return o;
}

static json_t *result_json(const char *name, const fc_eval_result_t *r) {
  json_t *o = json_object(), *fams = json_object(), *items = json_array();
  json_object_set_new(o, "model", json_string(name));
  if (r->role[0]) json_object_set_new(o, "role", json_string(r->role));
  for (int f = 0; f < r->nfam; f++) json_object_set_new(fams, r->fam[f].name, fam_json(&r->fam[f]));
  json_object_set_new(o, "families", fams);
  json_object_set_new(o, "overall", fam_json(&r->overall));
  json_object_set_new(o, "macro_accuracy", num_or_null(r->macro_accuracy));
  json_object_set_new(o, "macro_loss", num_or_null(r->macro_loss));
  json_object_set_new(o, "wall_seconds", num_or_null(r->wall_seconds));
  json_object_set_new(o, "gen_seconds", num_or_null(r->gen_seconds));
  json_object_set_new(o, "generated_tokens_per_second",
                      num_or_null(r->gen_seconds > 0 ? (double)r->overall.generated / r->gen_seconds : NAN));
  for (size_t i = 0; i < r->nitems; i++) {
    const fc_eval_item_t *it = &r->items[i];
    json_array_append_new(items, json_pack("{s:s, s:s, s:b, s:o, s:i}", "id", it->id, "family",
                                           r->fam[it->family].name, "correct", it->correct, "loss",
                                           num_or_null(it->loss), "tokens", it->tokens));
  }
  json_object_set_new(o, "items", items);
  return o;
}

int fc_eval_write_json(FILE *fp, const char *model_name, const fc_eval_result_t *r) {
  json_t *o = result_json(model_name, r);
  int rc = json_dumpf(o, fp, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
  json_decref(o);
  return rc ? FC_EIO : 0;
}

int fc_eval_write_json_file(const char *path, const char *const *model_names,
                            const fc_eval_result_t *const *results, int n, fc_err_t *err) {
  json_t *root = json_object(), *arr = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(arr, result_json(model_names[i], results[i]));
  json_object_set_new(root, "models", arr);
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
  json_decref(root);
  int rc = fc_write_text_file(path, text, err);
  free(text);
  return rc;
}

static double num(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static void fam_from(const char *name, const json_t *o, fc_eval_family_t *f) {
  memset(f, 0, sizeof *f);
  snprintf(f->name, sizeof f->name, "%s", name);
  f->n = (int)json_integer_value(json_object_get(o, "n"));
  f->correct = (int)json_integer_value(json_object_get(o, "correct"));
  f->accuracy = num(o, "accuracy");
  f->loss = num(o, "loss");
  f->tokens = json_integer_value(json_object_get(o, "tokens"));
  f->generated = json_integer_value(json_object_get(o, "generated"));
}

int fc_eval_result_from_json(const json_t *m, const char **name, fc_eval_result_t *r) {
  memset(r, 0, sizeof *r);
  const json_t *fams = json_object_get(m, "families"), *v, *items = json_object_get(m, "items");
  *name = json_string_value(json_object_get(m, "model"));
  if (!*name || !json_is_object(fams)) return -1;
  const char *k;
  json_object_foreach((json_t *)fams, k, v) {
    if (r->nfam == FC_EVAL_MAX_FAMILIES) break;
    fam_from(k, v, &r->fam[r->nfam++]);
  }
  fam_from("overall", json_object_get(m, "overall"), &r->overall);
  r->macro_accuracy = num(m, "macro_accuracy");
  r->macro_loss = num(m, "macro_loss");
  r->wall_seconds = num(m, "wall_seconds");
  r->gen_seconds = num(m, "gen_seconds");
  snprintf(r->role, sizeof r->role, "%s", json_is_string(json_object_get(m, "role")) ?
           json_string_value(json_object_get(m, "role")) : "");
  /* items whose family the object does not list are dropped: they could not be tabled */
  size_t i;
  if (json_is_array(items)) r->items = fc_xcalloc(json_array_size(items) + 1, sizeof *r->items);
  json_array_foreach(items, i, v) {
    const char *id = json_string_value(json_object_get(v, "id"));
    const char *fam = json_string_value(json_object_get(v, "family"));
    int f = 0;
    while (fam && f < r->nfam && strcmp(r->fam[f].name, fam)) f++;
    if (!id || !fam || f == r->nfam) continue;
    fc_eval_item_t *it = &r->items[r->nitems++];
    it->id = fc_xstrdup(id);
    it->family = f;
    it->correct = json_is_true(json_object_get(v, "correct"));
    it->loss = num(v, "loss");
    it->tokens = (int)json_integer_value(json_object_get(v, "tokens"));
  }
  return 0;
}
