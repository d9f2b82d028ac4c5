/* Adapters from the tokenizer, chat templates and top-K stores to fc_data's seams. */
#include "fc_train_src.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int enc_text(void *ctx, const char *text, size_t len, int32_t **ids, size_t *n, fc_err_t *err) {
  fc_train_encoder_t *e = ctx;
  return fc_tok_encode(e->tok, text, len, FC_TOK_ADD_SPECIAL | FC_TOK_PARSE_SPECIAL, ids, NULL, n, err);
}

static int enc_chat(void *ctx, const json_t *conv, int32_t **ids, uint8_t **mask, size_t *n, fc_err_t *err) {
  fc_train_encoder_t *e = ctx;
  *ids = NULL, *mask = NULL, *n = 0;
  char *js = json_dumps(conv, JSON_COMPACT);
  if (!js) return fc_err_set(err, FC_ENOMEM, "cannot serialise the conversation");
  fc_chat_conv_t c = {0};
  int rc = fc_chat_parse_sharegpt(js, strlen(js), &c, err);
  free(js);
  if (rc) return rc;
  char *text = NULL;
  size_t tlen = 0, nspans = 0;
  fc_chat_span_t *spans = NULL;
  uint32_t *offsets = NULL;
  fc_chat_template_t t = e->tmpl == FC_CHAT_AUTO ? fc_chat_template_for(e->tok) : e->tmpl;
  rc = fc_chat_render(t, c.msgs, c.n, &text, &tlen, &spans, &nspans, err);
  if (rc == 0) rc = fc_tok_encode(e->tok, text, tlen, FC_TOK_PARSE_SPECIAL, ids, &offsets, n, err);
  if (rc == 0) {
    *mask = fc_xmalloc(*n ? *n : 1);
    fc_chat_mask_tokens(spans, nspans, offsets, *n, *mask);
  }
  free(text);
  free(spans);
  free(offsets);
  fc_chat_conv_free(&c);
  return rc;
}

void fc_train_encoder_init(fc_train_encoder_t *e, const fc_tok_t *tok, fc_chat_template_t tmpl) {
  e->tok = tok;
  e->tmpl = tmpl;
  e->enc.ctx = e;
  e->enc.text = enc_text;
  e->enc.chat = enc_chat;
}

static int topk_fill(void *ctx, size_t line, const int32_t *tokens, size_t ntokens, int32_t *ids, float *lp,
                     fc_err_t *err) {
  fc_train_topk_t *t = ctx;
  if (line >= fc_topk_count(t->r))
    return fc_err_set(err, FC_EMISMATCH, "the top-K store has %llu examples, the data more",
                      (unsigned long long)fc_topk_count(t->r));
  int rc = fc_topk_get(t->r, line, &t->ex, err);
  if (rc) return rc;
  if (t->ex.n != ntokens)
    return fc_err_set(err, FC_EMISMATCH, "store example %zu has %u tokens, the data line %zu", line, t->ex.n, ntokens);
  for (size_t i = 0; i < ntokens; i++)
    if ((int64_t)t->ex.ids[i] != tokens[i])
      return fc_err_set(err, FC_EMISMATCH, "store example %zu differs from the data line at token %zu (%u vs %d)",
                        line, i, t->ex.ids[i], tokens[i]);
  const size_t K = (size_t)t->src.K;
  for (size_t i = 0; i < ntokens * K; i++) {
    if (isinf(t->ex.top_lp[i]) && t->ex.top_lp[i] < 0) {
      ids[i] = -1, lp[i] = 0;
    } else if (t->ex.top_ids[i] >= (uint32_t)t->vocab) {
      return fc_err_set(err, FC_EMISMATCH, "store example %zu: target id %u is outside the model's vocabulary (%d)",
                        line, t->ex.top_ids[i], t->vocab);
    } else {
      ids[i] = (int32_t)t->ex.top_ids[i], lp[i] = t->ex.top_lp[i];
    }
  }
  return 0;
}

int fc_train_topk_open(fc_train_topk_t *t, const char *path, int vocab, fc_err_t *err) {
  memset(t, 0, sizeof *t);
  int rc = fc_topk_open(&t->r, path, err);
  if (rc) return rc;
  if (fc_topk_vocab(t->r) > (uint32_t)vocab) {
    rc = fc_err_set(err, FC_EMISMATCH, "%s: the store's vocabulary (%u) is larger than the model's (%d)", path,
                    fc_topk_vocab(t->r), vocab);
    fc_topk_close(&t->r);
    return rc;
  }
  t->vocab = vocab;
  t->src.ctx = t;
  t->src.K = (int)fc_topk_k(t->r);
  t->src.fill = topk_fill;
  return 0;
}

void fc_train_topk_close(fc_train_topk_t *t) {
  fc_topk_close(&t->r);
  fc_topk_ex_free(&t->ex);
}

/* ---- several shards as one source ---- */

static int shards_fill(void *ctx, size_t line, const int32_t *tokens, size_t ntokens, int32_t *ids, float *lp,
                       fc_err_t *err) {
  fc_train_shards_t *sh = ctx;
  for (size_t i = 0; i < sh->n; i++)
    if (line < sh->first[i + 1])
      return sh->s[i].src.fill(sh->s[i].src.ctx, line - sh->first[i], tokens, ntokens, ids, lp, err);
  return fc_err_set(err, FC_EMISMATCH, "data line %zu is beyond the fused stores (%zu examples)", line,
                    sh->first[sh->n]);
}

void fc_train_shards_close(fc_train_shards_t *sh) {
  for (size_t i = 0; i < sh->n; i++) fc_train_topk_close(&sh->s[i]);
  free(sh->s), free(sh->first);
  memset(sh, 0, sizeof *sh);
}

int fc_train_shards_open(fc_train_shards_t *sh, const char *const *paths, size_t n, int vocab, fc_err_t *err) {
  memset(sh, 0, sizeof *sh);
  if (n == 0) return fc_err_set(err, FC_EINVAL, "no target stores");
  sh->s = fc_xcalloc(n, sizeof *sh->s);
  sh->first = fc_xcalloc(n + 1, sizeof *sh->first);
  for (size_t i = 0; i < n; i++) {
    int rc = fc_train_topk_open(&sh->s[i], paths[i], vocab, err);
    if (rc) return fc_train_shards_close(sh), rc;
    sh->n = i + 1;
    if (i && sh->s[i].src.K != sh->s[0].src.K) { /* the message first: closing frees what it names */
      rc = fc_err_set(err, FC_EMISMATCH, "%s: K %d, the first shard has %d", paths[i], sh->s[i].src.K, sh->s[0].src.K);
      fc_train_shards_close(sh);
      return rc;
    }
    sh->first[i + 1] = sh->first[i] + fc_topk_count(sh->s[i].r);
  }
  sh->src = (fc_targets_source_t){.ctx = sh, .K = sh->s[0].src.K, .fill = shards_fill};
  return 0;
}
