/* Top-K store: per-example top-K next-token distributions of one model over one dataset shard,
 * written as a stream and read back by memory map with random access by example index.
 *
 * File layout (all integers little-endian):
 *   header   "FCTOPK\r\n" magic, u32 version, u32 id_bytes (2 or 3), u32 K, u32 vocab,
 *            u64 n_examples, u64 tok_hash, u64 index_off, u32 model_id_len, u32 reserved,
 *            u64 checksum (of the header bytes before it, the model id and the index),
 *            then model_id_len bytes of model id.
 *   examples one after another (see below), starting right after the model id.
 *   index    at index_off: u64 offset[n_examples + 1] (offset[n] = index_off), then
 *            u64 example_checksum[n_examples].
 * One example: u32 n (tokens), f32 mean_ce, u32 tag, u32 n_resp, then
 *   ids      n * id_bytes       the token ids of the sequence
 *   mask     ceil(n / 8) bytes  bit i set = token i is a response token (carries loss)
 *   top ids  n * K * id_bytes   position i: the K most likely ids for token i + 1
 *   top lp   n * K * u16        code c = round(-logprob * 2048), c = 0xffff = entry absent
 * The log-prob code is linear in -logprob with step 1/2048 nat, so the absolute error of a stored
 * log-prob is at most 1/4096 nat (2.4e-4) for log-probs >= -31.99; smaller ones are clamped
 * there (probability < 1.3e-14). At K = 10 with 16-bit ids that is 42.1 bytes per token (53.1
 * with 24-bit ids) against 80 for raw u32 id + f32 log-prob.
 * mean_ce is the model's own mean cross-entropy over response tokens computed from its full
 * distribution when the logits were made (NAN if unknown); tag is free for the writer (the fused
 * store puts the index of the winning model there).
 * Every example is checked against its checksum when read, so a flipped byte anywhere in the
 * file is an FC_EFORMAT error, never a crash or a silently wrong value. */
#ifndef FC_TOPK_H
#define FC_TOPK_H

#include <assert.h>
#include <stdint.h>

#include "fc_limits.h"
#include "fc_util.h"

#define FC_TOPK_VERSION 1
/* FC_TOPK_MAX_K comes from fc_limits.h */
#define FC_TOPK_LP_STEP (1.0f / 2048.0f) /* quantisation step of a stored log-prob, nats */
#define FC_TOPK_LP_MIN (-65534.0f / 2048.0f)

typedef struct fc_topk_info {
  const char *model_id; /* free text naming the model (<= 4096 bytes) */
  uint64_t tok_hash;    /* hash of the tokenizer, so stores of one tokenizer can be told apart */
  uint32_t k;           /* 1..FC_TOPK_MAX_K */
  uint32_t vocab;       /* ids are < vocab; <= 2^24 */
} fc_topk_info_t;

/* One example as given to the writer or decoded by the reader. Absent top-K entries have
 * lp = -INFINITY (their id is 0). mask[i] is 0 or 1. */
typedef struct fc_topk_ex {
  uint32_t n;
  uint32_t *ids;     /* [n] */
  uint8_t *mask;     /* [n] */
  uint32_t *top_ids; /* [n * K] */
  float *top_lp;     /* [n * K] */
  float mean_ce;
  uint32_t tag;
  uint32_t cap;          /* owned buffers (fc_topk_ex_reserve): capacity in tokens */
  uint64_t cap_entries;  /* ... and in top-K entries */
} fc_topk_ex_t;

/* Streaming writer: examples are appended in order; nothing is visible at path before
 * fc_topk_writer_finish renames the finished file into place. */
typedef struct fc_topk_writer fc_topk_writer_t;
int fc_topk_writer_new(fc_topk_writer_t **out, const char *path, const fc_topk_info_t *info,
                       fc_err_t *err);
int fc_topk_writer_add(fc_topk_writer_t *w, const fc_topk_ex_t *ex, fc_err_t *err);
int fc_topk_writer_finish(fc_topk_writer_t *w, fc_err_t *err);
/* Frees the writer; an unfinished file is removed. */
void fc_topk_writer_destroy(fc_topk_writer_t **w);

typedef struct fc_topk_reader fc_topk_reader_t;
/* Maps and validates the file (magic, version, sizes, index monotone and in bounds, checksum). */
int fc_topk_open(fc_topk_reader_t **out, const char *path, fc_err_t *err);
void fc_topk_close(fc_topk_reader_t **r);
uint64_t fc_topk_count(const fc_topk_reader_t *r);
uint32_t fc_topk_k(const fc_topk_reader_t *r);
uint32_t fc_topk_vocab(const fc_topk_reader_t *r);
uint64_t fc_topk_tok_hash(const fc_topk_reader_t *r);
const char *fc_topk_model_id(const fc_topk_reader_t *r);
/* Decodes example idx into ex, growing ex's buffers as needed (start from a zeroed ex and free
 * it with fc_topk_ex_free). Checks the example's checksum and structure. */
int fc_topk_get(const fc_topk_reader_t *r, uint64_t idx, fc_topk_ex_t *ex, fc_err_t *err);
/* Token count of example idx without decoding it. */
uint32_t fc_topk_len(const fc_topk_reader_t *r, uint64_t idx);
void fc_topk_ex_reserve(fc_topk_ex_t *ex, uint32_t n, uint32_t k);
void fc_topk_ex_free(fc_topk_ex_t *ex);

/* The log-prob code and back (exposed for tests and the benchmark). */
uint16_t fc_topk_lp_encode(float lp);
float fc_topk_lp_decode(uint16_t c);
/* Bytes one example of n tokens takes in a file with these parameters. */
uint64_t fc_topk_example_bytes(uint32_t n, uint32_t k, uint32_t vocab);
/* 64-bit hash of a byte range, used as the file checksums. */
uint64_t fc_hash64(const void *data, size_t len, uint64_t seed);

#endif
