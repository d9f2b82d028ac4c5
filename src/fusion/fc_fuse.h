/* Distribution transfer (a source model's top-K distributions carried onto the pivot's
 * tokenization and vocabulary) and the fusion functions MinCE / AvgCE that build the training
 * target, plus the store-level loops the `fusectl align`, `vocab-map` and `fuse` commands run.
 *
 * Transfer, for pivot position j (token text T = text of pivot token j) and S = the source
 * positions the alignment path pairs with j (ascending), "t suffix-related to T" meaning one of
 * the two non-empty texts is a suffix of the other:
 *   1. |S| = 1 and text(S[0]) suffix-related to T             -> use source position S[0];
 *   2. |S| > 1 and some suffix-related position ends exactly where T ends in the shared text
 *      (byte offsets = cumulative token text lengths of each sequence, counted from the start
 *      or from the end of the text, so that a prefix only one tokenizer adds, like a
 *      SentencePiece dummy-prefix space or a BOS text, does not hide it) -> the first such;
 *   3. else (|S| > 1) greedy cover: walk S in order, consuming each piece that is a prefix of
 *      what remains of T; if T is consumed exactly, use the last consumed piece; else the first
 *      suffix-related position of S if any;
 *   4. else a one-hot on the gold NEXT pivot token, id of pivot token j + 1 (position j predicts
 *      token j + 1; FuseLLM's code puts the one-hot on token j itself, a bug we do not copy);
 *      at the last position there is no next token and the distribution is empty.
 * "Use source position i": each of its K entries (source id s, log-prob l) goes to pivot id
 * map[s] (entries whose map is FC_VMAP_NONE are dropped); log-probs landing on one pivot id are
 * summed in probability (log-sum-exp); the entries are sorted by probability (ties: smaller id),
 * cut to the output K, and renormalised over the kept entries: l_k -= logsumexp(l), i.e. the
 * softmax over the kept entries at temperature 1. If every entry was dropped, rule 4 applies.
 * Why the end check: position i predicts what follows source token i, which is what follows T
 * only if both end at the same byte. The design's plain "first suffix-related" picks, for T = "aa"
 * over pieces "a", "a", the first "a", which predicts the second "a", not what follows T. With
 * consistent offsets a complete cover ends where T ends, so rule 3 matters when the two texts
 * differ at both ends and the end check fails.
 *
 * Cross-entropy of a sequence (used to rank candidates): the stored mean_ce of an example is the
 * authoritative number (computed from the model's full distribution over its own tokens when
 * the logits were made). When it is not finite, fc_fuse_seq_ce computes a fallback from the
 * top-K alone over response positions (position i where mask[i + 1] = 1, gold = ids[i + 1]):
 * -log p(gold) if gold is among the entries, else -log max(1 - sum_k p_k, floor), the mass the
 * K entries leave (an upper bound on p(gold)), floored.
 *
 * Fusion over candidates c = 0 (the pivot's own distributions) .. n-1 (aligned sources), each
 * first renormalised over its K entries (FuseChat's collator takes a softmax over the stored
 * top-K logits):
 *   MinCE  the candidate with the lowest CE wins the whole sequence (ties: lower index, so the
 *          pivot on ties); a candidate with a non-finite CE never wins unless all are.
 *   AvgCE  weights w = softmax_c(exp(-CE_c)) (FuseLLM's `distill_weighted_as_gt`: reward
 *          1 / exp(CE), softmax over rewards); per position the mixture sum_c w_c q_c, cut to the
 *          K most probable ids and renormalised over them. Non-finite CE: weight 0. */
#ifndef FC_FUSE_H
#define FC_FUSE_H

#include <stdint.h>

#include "fc_align.h"
#include "fc_topk.h"
#include "fc_util.h"
#include "fc_vmap.h"

enum { FC_XFER_EMPTY = 0, FC_XFER_ONE = 1, FC_XFER_SUFFIX = 2, FC_XFER_COVER = 3,
       FC_XFER_ONEHOT = 4 };

typedef struct fc_xfer_stats {
  uint64_t by_rule[5];   /* pivot positions per FC_XFER_* rule */
  uint64_t dropped;      /* source entries dropped (unmapped ids) */
  uint64_t merged;       /* source entries merged into another on the same pivot id */
} fc_xfer_stats_t;

/* The transfer for one sequence given its alignment groups (grp_start [m + 1], grp_src).
 * Source: n tokens with ids and top-K (src_k entries per position, lp = -INFINITY absent).
 * Output: m positions x k_out entries (pivot ids and log-probs, absent = -INFINITY); rule[j]
 * (optional) gets the FC_XFER_* used. Token texts come from the vocabularies. */
int fc_fuse_transfer(const fc_vocab_t *sv, const fc_vocab_t *pv, const fc_vmap_t *map,
                     const uint32_t *src_ids, uint32_t n, const uint32_t *src_top_ids,
                     const float *src_top_lp, uint32_t src_k, const uint32_t *piv_ids, uint32_t m,
                     const uint32_t *grp_start, const uint32_t *grp_src, uint32_t k_out,
                     uint32_t *out_ids, float *out_lp, uint8_t *rule, fc_xfer_stats_t *st,
                     fc_err_t *err);

/* Fallback sequence CE from the top-K alone (see above); NAN when no response position. */
float fc_fuse_seq_ce(const fc_topk_ex_t *ex, uint32_t k, float floor_p);
/* The CE used to rank an example: its stored mean_ce if finite, else the fallback. */
float fc_fuse_ce(const fc_topk_ex_t *ex, uint32_t k, float floor_p);

/* SOURCE takes the last candidate (the aligned source) whatever the CEs: the paper's "source
 * alone" comparison, distillation without the pivot's say. */
typedef enum { FC_FUSE_MINCE = 0, FC_FUSE_AVGCE = 1, FC_FUSE_SOURCE = 2 } fc_fuse_method_t;
int fc_fuse_method_parse(const char *name, fc_fuse_method_t *out);

/* Fuses candidates (all over the same m pivot tokens, k entries each) into out (reserved by the
 * call; ids and mask copied from cands[0]); *winner = index of the MinCE winner (SOURCE: n - 1),
 * -1 for AvgCE.
 * out->mean_ce = the winner's CE (MinCE) or the weighted mean of the CEs (AvgCE);
 * out->tag = the winner index (MinCE) or n (AvgCE). */
int fc_fuse_combine(fc_fuse_method_t method, const fc_topk_ex_t *const *cands, const float *ce,
                    int n, uint32_t k, fc_topk_ex_t *out, int *winner, fc_err_t *err);

/* ---- store-level loops (what the CLI commands run) ---------------------------------------- */

/* vocab-map: aligns every example of a source store with the same example of the pivot store
 * and adds the path's (source id, pivot id) pairs to counts. */
int fc_fuse_count_stores(fc_vcount_t *counts, const char *src_path, const char *piv_path,
                         const fc_vocab_t *sv, const fc_vocab_t *pv, int margin,
                         fc_progress_fn progress, void *pctx, fc_err_t *err);
/* align: writes out_path, a store in pivot ids over the pivot's tokens holding the source's
 * transferred distributions (K of the source store), mean_ce = the source's own stored CE,
 * tag = the pivot example's tag (the text hash; st counts the rules used).
 * All loops: examples must pair up by tag (the logits stage stores a hash of the example's
 * text there), else FC_EMISMATCH naming the example; progress (may be NULL) is called once per
 * example and a non-zero return stops the loop with FC_ECANCEL (no output file is left). */
int fc_fuse_align_store(const char *src_path, const char *piv_path, const fc_vocab_t *sv,
                        const fc_vocab_t *pv, const fc_vmap_t *map, const char *out_path,
                        int margin, fc_xfer_stats_t *st, fc_progress_fn progress, void *pctx,
                        fc_err_t *err);

typedef struct fc_fuse_summary {
  uint64_t examples;
  uint64_t wins[16]; /* MinCE: examples won per candidate (0 = pivot) */
} fc_fuse_summary_t;
/* fuse: the pivot store plus n aligned stores (from fc_fuse_align_store) -> the fused store, the
 * training input. All must have the same examples over the same pivot tokens. */
int fc_fuse_stores(fc_fuse_method_t method, const char *piv_path, const char *const *aligned_paths,
                   int n, const char *out_path, float floor_p, fc_fuse_summary_t *sum,
                   fc_progress_fn progress, void *pctx, fc_err_t *err);

#endif
