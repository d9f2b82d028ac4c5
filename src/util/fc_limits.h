/* Limits shared by several floors (the top-K store, the stage-parameter schema, the direct
 * logits server, the CLI): one definition each. */
#ifndef FC_LIMITS_H
#define FC_LIMITS_H

/* Most next-token entries a top-K store keeps per position (the k of the stores and of direct
 * logits requests). */
#define FC_TOPK_MAX_K 256

/* Most data-parallel ranks one training task may run as (training.ranks, fusectl train --ranks). */
#define FC_MAX_RANKS 4096

#endif
