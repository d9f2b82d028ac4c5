/* One direct top-K query of a loaded model: text (plain, or rendered as one user turn of the chat
 * template) or token ids in, the k most likely next tokens and their log-probs at every position
 * out. The logits daemon's direct socket answers with it (the wire side lives in the daemon). */
#ifndef FC_QUERY_H
#define FC_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include "fc_chat.h"
#include "fc_model.h"
#include "fc_tok.h"

typedef struct fc_query {
  const char *text;    /* or ids (not both) */
  int chat;            /* text is one user turn: render it with the chat template */
  const int32_t *ids;
  size_t nids;
  int k;               /* 1.. ; more than the vocabulary is cut to it */
  size_t max_entries;  /* positions x k at most (what fits one reply); 0: no cap */
} fc_query_t;

typedef struct fc_query_result {
  int32_t *ids; /* [n] the tokens */
  size_t n;
  int k;
  int32_t *top; /* [n * k] */
  float *lp;    /* [n * k] */
} fc_query_result_t;

/* tok may be NULL (then only ids are accepted). Bad queries are FC_EINVAL with a message. */
int fc_query_topk(fc_model_t *model, const fc_tok_t *tok, fc_chat_template_t tmpl, const fc_query_t *q,
                  fc_query_result_t *r, fc_err_t *err);
void fc_query_result_free(fc_query_result_t *r);

#endif
