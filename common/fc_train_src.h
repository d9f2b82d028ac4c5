/* Where training rows come from besides token ids: the tokenizer and chat template for
 * {"text"} and {"conversations"} lines, adapted to the seam fc_data.h defines. (Fused targets
 * from a top-K store plug into fc_targets_source_t the same way once fc_topk.h is on main.) */
#ifndef FC_TRAIN_SRC_H
#define FC_TRAIN_SRC_H

#include "fc_chat.h"
#include "fc_data.h"
#include "fc_tok.h"

/* Text: fc_tok_encode with bos/eos added as the tokenizer adds them and special tokens matched
 * (what HF's tokenizer(text) does). Conversations: rendered with the chat template (AUTO picks
 * ChatML when the tokenizer has <|im_start|>, else Llama-2), encoded with special tokens matched
 * and none added, loss on the tokens that start inside an assistant response. */
typedef struct fc_train_encoder {
  fc_data_encoder_t enc; /* give &enc to fc_data_load / fc_train_opts_t.encoder */
  const fc_tok_t *tok;   /* borrowed */
  fc_chat_template_t tmpl;
} fc_train_encoder_t;
void fc_train_encoder_init(fc_train_encoder_t *e, const fc_tok_t *tok, fc_chat_template_t tmpl);

#endif
