/* Top-K distributions made by another tool, read for 'fusectl logits-import'. Two layouts, one
 * example per row of the fusion set shard, in order:
 *
 * JSONL (.jsonl): one object per line (blank lines skipped)
 *   {"ids": [n token ids of the source's tokenization],
 *    "topk_ids": [n lists of up to K ids: the most likely next tokens after position i],
 *    "topk_logprobs": [n lists of their log-probabilities, same lengths],
 *    "target_logprobs": [n log p(ids[i+1]) under the full distribution]   (optional)}
 *   K is the longest list of the first example; shorter lists leave entries absent.
 *
 * safetensors (.safetensors): every example's tokens concatenated, N tokens in all
 *   offsets          I32 or I64 [E + 1]  example e is tokens offsets[e] .. offsets[e+1]
 *   ids              I32 or I64 [N]
 *   topk_ids         I32 or I64 [N, K]   (-1: entry absent)
 *   topk_logprobs    F32, F16 or BF16 [N, K]
 *   target_logprobs  F32, F16 or BF16 [N]  (optional)
 *
 * Log-probs are natural-log values <= 0 (-inf: absent). Without target_logprobs the example's
 * mean cross-entropy is left unknown (NAN) and fusion estimates it from the top-K. */
#ifndef FC_IMPORT_H
#define FC_IMPORT_H

#include <stdint.h>

#include "fc_util.h"

typedef struct fc_import fc_import_t;

/* One example; buffers owned by the reader, valid until the next call. */
typedef struct fc_import_ex {
  uint32_t n;
  const int32_t *ids;     /* [n] */
  const int32_t *top_ids; /* [n * K], -1 where absent */
  const float *top_lp;    /* [n * K], -INFINITY where absent */
  const float *target_lp; /* [n] or NULL */
} fc_import_ex_t;

/* The layout is chosen by the file name's ending (.jsonl or .safetensors). */
int fc_import_open(fc_import_t **out, const char *path, fc_err_t *err);
void fc_import_close(fc_import_t **im);
uint32_t fc_import_k(const fc_import_t *im);
/* Next example: 1 when one was read, 0 at the end, a negative code on bad input. */
int fc_import_next(fc_import_t *im, fc_import_ex_t *ex, fc_err_t *err);

#endif
