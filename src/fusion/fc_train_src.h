/* Where training rows come from besides token ids: the tokenizer and chat template for
 * {"text"} and {"conversations"} lines, and a top-K store (fc_topk.h) for fused targets,
 * adapted to the seams fc_data.h defines. */
#ifndef FC_TRAIN_SRC_H
#define FC_TRAIN_SRC_H

#include "fc_chat.h"
#include "fc_data.h"
#include "fc_tok.h"
#include "fc_topk.h"

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

/* Fused targets from a top-K store whose example i belongs to data line i (the alignment
 * stage writes one example per data line, in order). The example must hold the very tokens of
 * the line; entries absent in the store become empty slots. */
typedef struct fc_train_topk {
  fc_targets_source_t src; /* give &src to fc_train_opts_t.targets */
  fc_topk_reader_t *r;     /* owned */
  fc_topk_ex_t ex;
  int vocab;
} fc_train_topk_t;
/* vocab: the model's; store ids must be below it. */
int fc_train_topk_open(fc_train_topk_t *t, const char *path, int vocab, fc_err_t *err);
void fc_train_topk_close(fc_train_topk_t *t);

/* Fused targets from the stores of consecutive data shards (contiguous row blocks, in order) as
 * one source: data line i is found in the shard whose rows cover it. A job's train task reads
 * its targets so, and so does fusectl train with --targets given once per shard. Every store
 * must have the same K. */
typedef struct fc_train_shards {
  fc_targets_source_t src; /* give &src to fc_train_opts_t.targets */
  fc_train_topk_t *s;      /* [n], owned */
  size_t *first;           /* [n + 1]: the first data line of each shard, then the total */
  size_t n;
} fc_train_shards_t;
int fc_train_shards_open(fc_train_shards_t *sh, const char *const *paths, size_t n, int vocab, fc_err_t *err);
void fc_train_shards_close(fc_train_shards_t *sh);

#endif
