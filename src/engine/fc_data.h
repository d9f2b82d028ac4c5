/* Training data: a JSONL file read once into token rows with loss masks, cut into batches of
 * ids and next-token targets (see fc_loss.h for the position convention), optionally with the
 * fused top-K targets of each position. */
#ifndef FC_DATA_H
#define FC_DATA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

typedef struct fc_data fc_data_t;

/* Turns text and conversations into pivot tokens. Either callback may be NULL, and then lines
 * of that kind are an error naming the line. Outputs are malloc'd and owned by the caller. */
typedef struct fc_data_encoder {
  void *ctx;
  /* {"text": "..."}: all tokens carry loss (whether BOS/EOS are added is the encoder's call). */
  int (*text)(void *ctx, const char *text, size_t len, int32_t **ids, size_t *n, fc_err_t *err);
  /* {"conversations": [...]}: the rendered chat; loss_mask[i] = 1 where token i is part of an
   * assistant turn (a token's loss is on predicting it from the tokens before). */
  int (*chat)(void *ctx, const json_t *conversations, int32_t **ids, uint8_t **loss_mask, size_t *n,
              fc_err_t *err);
} fc_data_encoder_t;

/* Fused top-K targets of each line (a top-K store written by the alignment stage): fills the
 * (ntokens, K) ids and log-probs of line `line` (0-based, counting data lines, blank lines
 * excluded), position i holding the distribution of token i+1 as fc_loss.h describes. Empty
 * slots have id -1. tokens are the line's own token ids, so a source can check that it holds
 * the same sequence; a different length or different tokens are an error (FC_EMISMATCH). */
typedef struct fc_targets_source {
  void *ctx;
  int K;
  int (*fill)(void *ctx, size_t line, const int32_t *tokens, size_t ntokens, int32_t *ids,
              float *logprobs, fc_err_t *err);
} fc_targets_source_t;

typedef struct fc_data_opts {
  int seq_len;        /* T: longest row; longer lines are truncated (and counted) */
  int vocab_size;     /* ids must be in [0, vocab_size) */
  int pack;           /* concatenate all lines and cut rows of exactly seq_len tokens */
  int shuffle;        /* reorder rows each epoch (a permutation from seed and epoch) */
  uint64_t seed;
} fc_data_opts_t;

/* Line formats:
 *   {"input_ids": [int, ...]}                      loss on every next token
 *   {"input_ids": [...], "loss_mask": [0|1, ...]}  loss where the mask of the *predicted* token is 1
 *   {"text": "..."}                                 encoded with enc->text, loss on all
 *   {"conversations": [{"from":..,"value":..}, ..]} enc->chat, loss on assistant tokens
 * Blank lines are skipped. Anything else is FC_EFORMAT naming PATH:LINE. */
int fc_data_load(fc_data_t **out, const char *path, const fc_data_encoder_t *enc,
                 const fc_data_opts_t *opts, fc_err_t *err);
void fc_data_destroy(fc_data_t **d);

size_t fc_data_num_lines(const fc_data_t *d);
size_t fc_data_num_rows(const fc_data_t *d);   /* lines, or packed rows with --pack */
size_t fc_data_num_tokens(const fc_data_t *d); /* tokens of all lines (before truncation) */
size_t fc_data_num_truncated(const fc_data_t *d); /* lines longer than seq_len */

typedef struct fc_batch {
  int B, T;              /* rows, and the padded length (longest row of the batch, <= seq_len) */
  int32_t *ids;          /* (B,T) token ids, right-padded with 0 */
  int32_t *targets;      /* (B,T) next-token targets, -1 where nothing is counted */
  int K;                 /* 0 without fused targets */
  int32_t *topk_ids;     /* (B,T,K) fused target ids (-1 empty), or NULL */
  float *topk_logprobs;  /* (B,T,K) */
  long counted;          /* positions with a target */
  long tokens;           /* non-padding tokens */
} fc_batch_t;

/* The batch of rows first .. first+B-1 in the global row order: row r is row r % N of epoch
 * r / N (N = fc_data_num_rows), in file order or, with shuffle, in that epoch's permutation.
 * tg may be NULL. The batch's buffers are reused across calls; free with fc_batch_free. */
int fc_data_batch(fc_data_t *d, fc_batch_t *b, uint64_t first, int B, const fc_targets_source_t *tg,
                  fc_err_t *err);
void fc_batch_free(fc_batch_t *b);

/* The data line that global row r reads (unpacked), for messages and tests. */
size_t fc_data_row_line(fc_data_t *d, uint64_t r);

#endif
