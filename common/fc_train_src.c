/* Adapters from the tokenizer and chat templates to fc_data's encoder seam. */
#include "fc_train_src.h"

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
