/* Evaluation: each held-out prompt is rendered with the model's chat template and answered
 * greedily (many prompts per decoding step through fc_generate_batch), the answer is scored by
 * exact match, and the gold answer's mean token cross-entropy comes from one teacher-forced
 * forward per batch (fc_model_forward_topk with K = 0: target log-probs without (B,T,V)). */
#include "fc_eval.h"

#include <assert.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_generate.h"
#include "fc_model.h"
#include "fc_tasks.h"
#include "fc_tok.h"

#define FAM_ALL FC_FAM_COUNT /* rows without a family */

void fc_eval_opts_default(fc_eval_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->max_new_tokens = 16;
  o->batch_size = 32;
  o->tmpl = FC_CHAT_AUTO;
}

static const char *fam_name(int f) { return f == FAM_ALL ? "all" : fc_family_name((fc_family_t)f); }

void fc_eval_result_free(fc_eval_result_t *r) {
  for (size_t i = 0; i < r->nrows; i++) free(r->rows[i].prompt), free(r->rows[i].expected), free(r->rows[i].got);
  free(r->rows);
  memset(r, 0, sizeof *r);
}

/* One data row, tokenized. */
typedef struct row {
  int fam;
  char *system, *prompt, *answer; /* system may be NULL */
  int32_t *pids;                   /* the generation prompt */
  int np;
  int32_t *ids, *targets;          /* the whole conversation; targets[t] = ids[t+1] on answer tokens, else -1 */
  int nt;
  int ntok;                        /* answer tokens (targets >= 0) */
  /* filled by scoring */
  char *got;
  int correct, generated, stopped;
  double nll;
} row_t;

static void rows_free(row_t *rows, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(rows[i].system), free(rows[i].prompt), free(rows[i].answer), free(rows[i].got);
    free(rows[i].pids), free(rows[i].ids), free(rows[i].targets);
  }
  free(rows);
}

/* Parses one JSONL line into *r (strings owned by r). */
static int parse_row(const char *line, size_t len, const char *path, long lineno, row_t *r, fc_err_t *err) {
  memset(r, 0, sizeof *r);
  json_error_t je;
  json_t *root = json_loadb(line, len, 0, &je);
  if (!root) return fc_err_set(err, FC_EFORMAT, "%s:%ld: not JSON: %s", path, lineno, je.text);
  json_t *fam = json_is_object(root) ? json_object_get(root, "family") : NULL;
  r->fam = FAM_ALL;
  int rc = 0;
  if (fam && !json_is_null(fam)) {
    fc_family_t f;
    if (!json_is_string(fam)) {
      rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: \"family\" must be a string", path, lineno);
    } else if (!strcmp(json_string_value(fam), "all")) {
      r->fam = FAM_ALL;
    } else if (fc_family_parse(json_string_value(fam), &f)) {
      rc = fc_err_set(err, FC_EFORMAT, "%s:%ld: unknown family '%.64s' (known: arith, convert, strings, facts, all)",
                      path, lineno, json_string_value(fam));
    } else {
      r->fam = (int)f;
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
  fc_chat_conv_free(&conv);
  return rc;
}

static int read_rows(const char *const *paths, int npaths, int limit, row_t **out, size_t *nout, fc_err_t *err) {
  row_t *rows = NULL;
  size_t n = 0, cap = 0;
  int per_fam[FC_FAM_COUNT + 1] = {0}, rc = 0;
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
        rc = parse_row(text + a, e - a, paths[p], lineno, &r, err);
        if (!rc && (!limit || per_fam[r.fam] < limit)) {
          per_fam[r.fam]++;
          if (n == cap) {
            cap = cap ? cap * 2 : 64;
            rows = fc_xrealloc(rows, cap * sizeof *rows);
          }
          rows[n++] = r;
        } else {
          free(r.system), free(r.prompt), free(r.answer);
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

/* Renders and tokenizes a row: the generation prompt, and the full conversation with targets
 * on the assistant span (the answer and its end-of-turn token). */
static int tokenize_row(const fc_tok_t *tok, fc_chat_template_t tmpl, row_t *r, fc_err_t *err) {
  char *text;
  size_t len, n;
  int rc = fc_chat_render_prompt(tmpl, r->system, r->prompt, &text, &len, err);
  if (rc) return rc;
  rc = fc_tok_encode(tok, text, len, FC_TOK_PARSE_SPECIAL, &r->pids, NULL, &n, err);
  free(text);
  if (rc) return rc;
  r->np = (int)n;
  fc_chat_msg_t m[3];
  size_t nm = 0;
  if (r->system) m[nm++] = (fc_chat_msg_t){FC_ROLE_SYSTEM, r->system};
  m[nm++] = (fc_chat_msg_t){FC_ROLE_USER, r->prompt};
  m[nm++] = (fc_chat_msg_t){FC_ROLE_ASSISTANT, r->answer};
  fc_chat_span_t *spans;
  size_t nspans;
  if ((rc = fc_chat_render(tmpl, m, nm, &text, &len, &spans, &nspans, err))) return rc;
  uint32_t *offs = NULL;
  rc = fc_tok_encode(tok, text, len, FC_TOK_PARSE_SPECIAL, &r->ids, &offs, &n, err);
  free(text);
  if (!rc) {
    uint8_t *mask = fc_xmalloc(n ? n : 1);
    fc_chat_mask_tokens(spans, nspans, offs, n, mask);
    r->nt = (int)n;
    r->targets = fc_xmalloc((n ? n : 1) * sizeof(int32_t));
    for (size_t t = 0; t < n; t++) {
      /* position t predicts token t + 1; position 0 itself is never a target */
      r->targets[t] = t + 1 < n && mask[t + 1] ? r->ids[t + 1] : -1;
      r->ntok += r->targets[t] >= 0;
    }
    free(mask);
  }
  free(offs);
  free(spans);
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

/* Teacher-forced log-probs of rows[0..B) padded on the right to the longest. */
static int score_loss(fc_model_t *m, row_t *rows, int B, fc_err_t *err) {
  int T = 0;
  for (int i = 0; i < B; i++) T = rows[i].nt > T ? rows[i].nt : T;
  size_t BT = (size_t)B * T;
  int32_t *ids = fc_xcalloc(BT, sizeof *ids), *tg = fc_xmalloc(BT * sizeof *tg);
  float *lp = fc_xmalloc(BT * sizeof *lp);
  for (size_t k = 0; k < BT; k++) tg[k] = -1;
  for (int i = 0; i < B; i++) {
    memcpy(ids + (size_t)i * T, rows[i].ids, (size_t)rows[i].nt * sizeof *ids);
    memcpy(tg + (size_t)i * T, rows[i].targets, (size_t)rows[i].nt * sizeof *tg);
  }
  int rc = fc_model_forward_topk(m, ids, B, T, 0, tg, NULL, NULL, lp, err);
  for (int i = 0; i < B && !rc; i++) {
    double s = 0;
    for (int t = 0; t < rows[i].nt; t++)
      if (tg[(size_t)i * T + t] >= 0) s -= lp[(size_t)i * T + t];
    rows[i].nll = s;
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
  int rc = read_rows(data_paths, npaths, opts->limit, &rows, &nrows, err);
  if (rc) return rc;
  if ((rc = fc_model_load(&m, model_dir, err))) {
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
    if (rows[i].np + opts->max_new_tokens > cfg->max_position_embeddings || rows[i].nt > cfg->max_position_embeddings) {
      rc = fc_err_set(err, FC_EINVAL, "row %zu: the prompt (%d tokens) plus %d new tokens, or the conversation (%d tokens), is longer than the model's context of %d",
                      i + 1, rows[i].np, opts->max_new_tokens, rows[i].nt, cfg->max_position_embeddings);
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
      br[i].correct = !rc && fc_tasks_match(br[i].answer, br[i].got);
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

  /* Aggregate: families in fc_tasks order, "all" last. */
  int slot[FC_FAM_COUNT + 1];
  for (int f = 0; f <= FC_FAM_COUNT; f++) slot[f] = -1;
  for (size_t i = 0; i < nrows; i++) slot[rows[i].fam] = 0;
  for (int f = 0; f <= FC_FAM_COUNT; f++)
    if (slot[f] == 0) {
      slot[f] = result->nfam++;
      snprintf(result->fam[slot[f]].name, sizeof result->fam[0].name, "%s", fam_name(f));
    }
  double *nll = fc_xcalloc((size_t)result->nfam + 1, sizeof *nll);
  snprintf(result->overall.name, sizeof result->overall.name, "overall");
  for (size_t i = 0; i < nrows; i++) {
    fc_eval_family_t *fs[2] = {&result->fam[slot[rows[i].fam]], &result->overall};
    double *ns[2] = {&nll[slot[rows[i].fam]], &nll[result->nfam]};
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
  if (opts->keep_rows) {
    result->rows = fc_xcalloc(nrows, sizeof *result->rows);
    result->nrows = nrows;
    for (size_t i = 0; i < nrows; i++) {
      fc_eval_row_t *o = &result->rows[i];
      o->family = slot[rows[i].fam];
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
  json_t *o = json_object(), *fams = json_object();
  json_object_set_new(o, "model", json_string(name));
  for (int f = 0; f < r->nfam; f++) json_object_set_new(fams, r->fam[f].name, fam_json(&r->fam[f]));
  json_object_set_new(o, "families", fams);
  json_object_set_new(o, "overall", fam_json(&r->overall));
  json_object_set_new(o, "macro_accuracy", num_or_null(r->macro_accuracy));
  json_object_set_new(o, "macro_loss", num_or_null(r->macro_loss));
  json_object_set_new(o, "wall_seconds", num_or_null(r->wall_seconds));
  json_object_set_new(o, "gen_seconds", num_or_null(r->gen_seconds));
  json_object_set_new(o, "generated_tokens_per_second",
                      num_or_null(r->gen_seconds > 0 ? (double)r->overall.generated / r->gen_seconds : NAN));
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

static void fmt_cell(char *buf, size_t cap, const fc_eval_family_t *f) {
  if (!f) snprintf(buf, cap, "-");
  else if (f->tokens) snprintf(buf, cap, "%.1f%% (%d/%d) %.3f", 100 * f->accuracy, f->correct, f->n, f->loss);
  else snprintf(buf, cap, "%.1f%% (%d/%d) -", 100 * f->accuracy, f->correct, f->n);
}

void fc_eval_print_table(FILE *fp, const char *const *model_names, const fc_eval_result_t *const *results, int n) {
  /* the union of families, in order of first appearance */
  const char *fams[FC_EVAL_MAX_FAMILIES * 4];
  int nf = 0;
  for (int i = 0; i < n; i++)
    for (int f = 0; f < results[i]->nfam; f++) {
      int seen = 0;
      for (int k = 0; k < nf; k++) seen |= !strcmp(fams[k], results[i]->fam[f].name);
      if (!seen && nf < (int)(sizeof fams / sizeof *fams)) fams[nf++] = results[i]->fam[f].name;
    }
  int ncol = nf + 2; /* model, families..., average */
  size_t *w = fc_xcalloc((size_t)ncol, sizeof *w);
  char(*cells)[80] = fc_xcalloc((size_t)(n + 1) * ncol, sizeof *cells);
  snprintf(cells[0], 80, "model");
  for (int k = 0; k < nf; k++) snprintf(cells[1 + k], 80, "%s acc (n) loss", fams[k]);
  snprintf(cells[ncol - 1], 80, "average acc loss");
  for (int i = 0; i < n; i++) {
    char(*row)[80] = cells + (size_t)(i + 1) * ncol;
    snprintf(row[0], 80, "%s", model_names[i]);
    for (int k = 0; k < nf; k++) {
      const fc_eval_family_t *f = NULL;
      for (int j = 0; j < results[i]->nfam; j++)
        if (!strcmp(results[i]->fam[j].name, fams[k])) f = &results[i]->fam[j];
      fmt_cell(row[1 + k], 80, f);
    }
    if (isfinite(results[i]->macro_loss))
      snprintf(row[ncol - 1], 80, "%.1f%% %.3f", 100 * results[i]->macro_accuracy, results[i]->macro_loss);
    else
      snprintf(row[ncol - 1], 80, "%.1f%% -", 100 * results[i]->macro_accuracy);
  }
  for (int i = 0; i <= n; i++)
    for (int k = 0; k < ncol; k++) {
      size_t l = strlen(cells[(size_t)i * ncol + k]);
      w[k] = l > w[k] ? l : w[k];
    }
  for (int i = 0; i <= n; i++) {
    for (int k = 0; k < ncol; k++) {
      const char *c = cells[(size_t)i * ncol + k];
      /* the model name left-aligned, the figures right-aligned */
      if (k == 0) fprintf(fp, "%-*s", (int)w[k], c);
      else fprintf(fp, "  %*s", (int)w[k], c);
    }
    fputc('\n', fp);
  }
  free(w);
  free(cells);
}
