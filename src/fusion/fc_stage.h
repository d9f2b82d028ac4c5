/* The alignment-side stages of a fusion job as plain library calls, one per stage, shared by
 * fusectl and the stage daemons: logits (a model over a data shard -> top-K store), vocabulary
 * counting / merging / mapping, alignment of a source store onto the pivot's tokens, and fusion.
 *
 * Every stage writes its output atomically (temporary name, then rename), so a rerun or a retried
 * task gives the same bytes and a cancelled or failed one leaves nothing behind. progress (may be
 * NULL) is called now and then with the fraction done; a non-zero return stops the stage with
 * FC_ECANCEL.
 *
 * How stores of one job are tied together: the data is rendered once with the PIVOT's chat
 * template; every model tokenizes that same text with its own tokenizer. Long rows are cut at the
 * byte where the pivot's token max_len starts (so every model's store covers the same text), and
 * each example's tag holds a 32-bit hash of exactly the text its tokens cover. Stages that combine
 * stores check the example count and every tag, and refuse stores made from other data, shard,
 * template or length limit with FC_EMISMATCH. */
#ifndef FC_STAGE_H
#define FC_STAGE_H

#include <stdint.h>

#include "fc_chat.h"
#include "fc_fuse.h"
#include "fc_tok.h"
#include "fc_util.h"
#include "fc_vmap.h"

/* How the data rows become texts. Rows are the non-empty lines of a JSONL file: ShareGPT
 * conversations (anything fc_chat_parse_sharegpt accepts), rendered with tmpl, encoded as
 * rendered, loss on the assistant responses; or {"text": "..."} rows taken as they are, encoded
 * with the tokenizer's bos/eos added, loss on every token (both as training encodes them). Shard
 * i of n is the contiguous block of rows [i*N/n, (i+1)*N/n). */
typedef struct fc_stage_data {
  const char *path;           /* JSONL */
  const char *pivot_tok;      /* the pivot's tokenizer.json (or model dir): template + cut */
  fc_chat_template_t tmpl;    /* FC_CHAT_AUTO: the one fc_chat_template_for(pivot) names */
  uint32_t shard, n_shards;   /* 0, 1 for everything */
  uint32_t max_len;           /* pivot tokens per row at most (0 = 4096) */
} fc_stage_data_t;

/* One rendered row. */
typedef struct fc_stage_text {
  char *text;                 /* NUL-terminated, already cut to max_len pivot tokens */
  size_t len;
  fc_chat_span_t *spans;      /* response spans (inside len); NULL with nspans = 0 */
  size_t nspans;
  int all_loss;               /* a {"text"} row: every token carries loss */
  int cut;                    /* the row was longer than max_len pivot tokens */
} fc_stage_text_t;

/* Reads, renders and cuts the shard's rows. *out (caller frees with fc_stage_texts_free). */
int fc_stage_texts_load(const fc_stage_data_t *d, fc_stage_text_t **out, size_t *n, fc_err_t *err);
void fc_stage_texts_free(fc_stage_text_t *t, size_t n);
/* The tag the logits stage stores: a hash of the bytes the example's tokens cover. */
uint32_t fc_stage_text_hash(const char *text, size_t len);

/* ---- logits ---------------------------------------------------------------------------------- */
typedef struct fc_stage_logits_opts {
  const char *model_dir;      /* config.json, safetensors, tokenizer.json */
  fc_stage_data_t data;       /* data.pivot_tok NULL: the model is the pivot */
  const char *out_path;       /* the top-K store */
  uint32_t top_k;             /* 1..FC_TOPK_MAX_K */
  int batch_size;             /* examples per forward, >= 1 */
  int threads;                /* 0: leave OpenBLAS's default */
} fc_stage_logits_opts_t;

typedef struct fc_stage_logits_stats {
  uint64_t examples, tokens, response_tokens;
  uint64_t cut;               /* rows cut at max_len pivot tokens */
  uint64_t cut_own;           /* rows this model's tokenizer made longer than 4 * max_len tokens */
  double seconds;
} fc_stage_logits_stats_t;

/* Runs the model over the shard: per example its token ids, the mask of response tokens (tokens
 * starting inside an assistant span), the top-K next-token ids and log-probs per position, and
 * mean_ce = mean over response positions i (mask[i+1] = 1) of -log p(ids[i+1]) under the full
 * distribution (NAN when the example has none); tag = fc_stage_text_hash of the covered text.
 * Examples are batched (right padding) in input order. */
int fc_stage_logits(const fc_stage_logits_opts_t *o, fc_stage_logits_stats_t *st,
                    fc_progress_fn progress, void *pctx, fc_err_t *err);

/* ---- logits made elsewhere ------------------------------------------------------------------- */
typedef struct fc_stage_import_opts {
  const char *tok_path;       /* the source's tokenizer (model dir or tokenizer.json) */
  fc_stage_data_t data;       /* the fusion set shard, as for fc_stage_logits */
  const char *in_path;        /* .jsonl or .safetensors (fc_import.h) */
  const char *out_path;       /* the top-K store */
  const char *model_id;       /* recorded in the store (NULL: in_path) */
} fc_stage_import_opts_t;

/* Top-K distributions another tool computed (fc_import.h layouts) -> a top-K store like
 * fc_stage_logits writes: one example per row of the shard, in order. Each example's ids must be
 * exactly the source tokenizer's tokens of the row's text as fc_stage_logits would make them
 * (FC_EMISMATCH otherwise: the texts differ from the fusion set); mask and tag come from that
 * tokenization, mean_ce from target_logprobs when given (else NAN), entries sorted by log-prob. */
int fc_stage_logits_import(const fc_stage_import_opts_t *o, fc_stage_logits_stats_t *st, fc_err_t *err);

/* ---- vocabulary ------------------------------------------------------------------------------ */
/* Token texts of a tokenizer (tokenizer.json or model dir) for the transfer and the maps. The
 * vocabulary size is the tokenizer's, raised to config.json's vocab_size when tok_path is a model
 * directory (padded embedding rows), then to min_n; ids beyond the tokenizer get empty texts.
 * Counts and maps are tied to that exact vocabulary, so give every stage of one model the same
 * path kind (the model directory). Free with fc_vocab_free. */
int fc_stage_vocab_load(fc_vocab_t *out, const char *tok_path, uint32_t min_n, fc_err_t *err);

typedef struct fc_stage_count_opts {
  const char *src_tok, *piv_tok; /* tokenizers (files or model dirs) */
  /* Either the two stores of one shard (from fc_stage_logits)... */
  const char *src_topk, *piv_topk;
  /* ... or, when they are NULL, the data itself, tokenized here by both tokenizers exactly as
   * the logits stage does (same rendering, cut and token texts, so the same counts). */
  fc_stage_data_t data;
  const char *out_path;          /* counts file */
  int margin;                    /* alignment band (0 -> FC_ALIGN_DEFAULT_MARGIN) */
} fc_stage_count_opts_t;
int fc_stage_vocab_count(const fc_stage_count_opts_t *o, fc_progress_fn progress, void *pctx,
                         fc_err_t *err);
/* Sums count files (shards of one source/pivot pair) into one counts file. */
int fc_stage_vocab_merge(const char *const *paths, int n, const char *out_path, fc_err_t *err);
/* counts (needed for stats, may be NULL otherwise) + tokenizers -> map file. Special tokens the
 * two tokenizers name alike (bos, eos) are mapped to each other whatever the method. */
int fc_stage_vocab_map(const char *counts_path, const char *src_tok, const char *piv_tok,
                       fc_vmap_method_t method, int threads, const char *out_path, fc_err_t *err);

/* ---- align and fuse -------------------------------------------------------------------------- */
/* source store + pivot store (same shard) + map -> aligned store in pivot ids over the pivot's
 * tokens (see fc_fuse_align_store). */
int fc_stage_align(const char *src_topk, const char *piv_topk, const char *src_tok,
                   const char *piv_tok, const char *map_path, const char *out_path, int margin,
                   fc_xfer_stats_t *st, fc_progress_fn progress, void *pctx, fc_err_t *err);
/* pivot store + aligned stores -> fused store (the training targets). */
int fc_stage_fuse(fc_fuse_method_t method, const char *piv_topk, const char *const *aligned,
                  int n, const char *out_path, fc_fuse_summary_t *sum, fc_progress_fn progress,
                  void *pctx, fc_err_t *err);
/* Checks that a store describes the given data shard: as many examples as rows, and every tag
 * equal to the hash of the row's text covered by the store's tokens under tok (the store's own
 * tokenizer). */
int fc_stage_check_store(const char *topk_path, const char *tok_path, const fc_stage_data_t *d,
                         fc_err_t *err);

#endif
