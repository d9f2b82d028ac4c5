/* Direct top-K queries (see fc_query.h): tokenizing, checking against the model's limits and
 * one forward pass. */
#include "fc_query.h"

#include <stdlib.h>
#include <string.h>

static int tokens(const fc_tok_t *tok, fc_chat_template_t tmpl, const fc_query_t *q, int vocab, int32_t **ids,
                  size_t *n, fc_err_t *err) {
  if (q->text && q->nids) return fc_err_set(err, FC_EINVAL, "give text or ids, not both");
  if (q->text) {
    if (!tok) return fc_err_set(err, FC_EINVAL, "the model has no tokenizer.json: send ids");
    if (!q->chat) return fc_tok_encode(tok, q->text, strlen(q->text), FC_TOK_ADD_SPECIAL, ids, NULL, n, err);
    char *txt;
    size_t len;
    int rc = fc_chat_render_prompt(tmpl, NULL, q->text, &txt, &len, err);
    if (rc) return rc;
    rc = fc_tok_encode(tok, txt, len, FC_TOK_PARSE_SPECIAL, ids, NULL, n, err);
    free(txt);
    return rc;
  }
  if (!q->nids) return fc_err_set(err, FC_EINVAL, "a query needs text or ids");
  for (size_t i = 0; i < q->nids; i++)
    if (q->ids[i] < 0 || q->ids[i] >= vocab)
      return fc_err_set(err, FC_EINVAL, "token id %d at %zu is outside the vocabulary (%d)", q->ids[i], i, vocab);
  *n = q->nids;
  *ids = fc_xmalloc(*n * sizeof **ids);
  memcpy(*ids, q->ids, *n * sizeof **ids);
  return 0;
}

int fc_query_topk(fc_model_t *model, const fc_tok_t *tok, fc_chat_template_t tmpl, const fc_query_t *q,
                  fc_query_result_t *r, fc_err_t *err) {
  memset(r, 0, sizeof *r);
  const fc_config_t *cfg = fc_model_config(model);
  if (q->k < 1) return fc_err_set(err, FC_EINVAL, "k is %d, it must be at least 1", q->k);
  int k = q->k > cfg->vocab_size ? cfg->vocab_size : q->k;
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = tokens(tok, tmpl, q, cfg->vocab_size, &ids, &n, err);
  if (!rc && n == 0) rc = fc_err_set(err, FC_EINVAL, "no tokens");
  if (!rc && (int64_t)n > cfg->max_position_embeddings)
    rc = fc_err_set(err, FC_EINVAL, "%zu tokens, the model takes at most %d", n, cfg->max_position_embeddings);
  if (!rc && q->max_entries && (size_t)k * n > q->max_entries)
    rc = fc_err_set(err, FC_EINVAL, "%zu tokens x top-%d do not fit one reply", n, k);
  if (rc) {
    free(ids);
    return rc;
  }
  r->ids = ids, r->n = n, r->k = k;
  r->top = fc_xmalloc(n * (size_t)k * sizeof *r->top);
  r->lp = fc_xmalloc(n * (size_t)k * sizeof *r->lp);
  if ((rc = fc_model_forward_topk(model, ids, 1, (int)n, k, NULL, r->top, r->lp, NULL, err))) fc_query_result_free(r);
  return rc;
}

void fc_query_result_free(fc_query_result_t *r) {
  free(r->ids), free(r->top), free(r->lp);
  memset(r, 0, sizeof *r);
}
