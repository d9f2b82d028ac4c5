/* Vocabulary map from a source model's token ids to the pivot's: sparse counts of aligned
 * (source id, pivot id) pairs over a dataset (mergeable across shards), and the map built from
 * them (FuseChat's statistics-based map) or from the token texts alone (FuseLLM's MinED map,
 * exact text match).
 *
 * Map rules, per source id s:
 *   stats  the pivot id most often aligned with s; ties: smaller edit distance between the two
 *          token texts, then smaller pivot id. Never-aligned ids fall back to `mined`.
 *   mined  the pivot token with exactly the same text (smallest id if several), else the
 *          pivot token at minimum edit distance (ties: smaller id). Pivot tokens with empty text
 *          are never candidates.
 *   exact  the same text, else FC_VMAP_NONE (the transfer drops such entries).
 * (The official FuseChat code ranks aligned candidates by edit distance x sigmoid(count) over a
 * dense |Vs| x |Vp| float64 matrix; we use the counts directly, sparse.) */
#ifndef FC_VMAP_H
#define FC_VMAP_H

#include <stdint.h>

#include "fc_align.h"
#include "fc_util.h"

#define FC_VMAP_NONE UINT32_MAX

/* The texts of every id of a vocabulary: id i is bytes[start[i] .. start[i+1]). */
typedef struct fc_vocab {
  uint32_t n;
  const char *bytes;
  const uint32_t *start; /* [n + 1] */
} fc_vocab_t;

/* Builds an owned fc_vocab_t by asking fn for each id's text (fn writes up to cap bytes and
 * returns the length, or a negative FC_E* code; a length > cap means "call again with more").
 * This is the seam for fc_tok_token_text. Free with fc_vocab_free. */
typedef int (*fc_token_text_fn)(void *ctx, uint32_t id, char *buf, size_t cap);
int fc_vocab_from_fn(fc_vocab_t *out, uint32_t n, fc_token_text_fn fn, void *ctx, fc_err_t *err);
void fc_vocab_free(fc_vocab_t *v);
/* Hash of all texts (to tie count and map files to a vocabulary). */
uint64_t fc_vocab_hash(const fc_vocab_t *v);

/* ---- counts ------------------------------------------------------------------------------- */
typedef struct fc_vcount fc_vcount_t;
fc_vcount_t *fc_vcount_new(uint32_t src_vocab, uint32_t piv_vocab, uint64_t src_hash,
                           uint64_t piv_hash);
void fc_vcount_destroy(fc_vcount_t **c);
void fc_vcount_add(fc_vcount_t *c, uint32_t src_id, uint32_t piv_id, uint64_t n);
/* Adds every (src_ids[path.src[k]], piv_ids[path.piv[k]]) pair of an alignment path. */
int fc_vcount_add_path(fc_vcount_t *c, const uint32_t *src_ids, const uint32_t *piv_ids,
                       const fc_align_result_t *path, fc_err_t *err);
uint64_t fc_vcount_get(const fc_vcount_t *c, uint32_t src_id, uint32_t piv_id);
uint64_t fc_vcount_pairs(const fc_vcount_t *c); /* distinct pairs */
uint64_t fc_vcount_total(const fc_vcount_t *c); /* sum of counts */
/* dst += src; FC_EMISMATCH when the vocabularies differ. */
int fc_vcount_merge(fc_vcount_t *dst, const fc_vcount_t *src, fc_err_t *err);
/* 1 when both hold exactly the same pairs and counts (and vocabularies). */
int fc_vcount_equal(const fc_vcount_t *a, const fc_vcount_t *b);
/* Count files: sorted (src, piv, count) entries with a checksum, written atomically. */
int fc_vcount_save(const fc_vcount_t *c, const char *path, fc_err_t *err);
int fc_vcount_load(fc_vcount_t **out, const char *path, fc_err_t *err);
/* Loads every file and sums them into one (what `vocab-map --merge` does). */
int fc_vcount_merge_files(fc_vcount_t **out, const char *const *paths, int n, fc_err_t *err);

/* ---- the map ------------------------------------------------------------------------------ */
typedef enum { FC_VMAP_STATS = 0, FC_VMAP_MINED = 1, FC_VMAP_EXACT = 2 } fc_vmap_method_t;
/* How each entry was decided. */
enum { FC_VMAP_BY_NONE = 0, FC_VMAP_BY_COUNT = 1, FC_VMAP_BY_EXACT = 2, FC_VMAP_BY_MINED = 3,
       FC_VMAP_BY_SET = 4 };

typedef struct fc_vmap {
  uint32_t src_vocab, piv_vocab;
  uint64_t src_hash, piv_hash;
  uint32_t method;
  uint32_t *map; /* [src_vocab] pivot id or FC_VMAP_NONE */
  uint8_t *how;  /* [src_vocab] FC_VMAP_BY_* */
} fc_vmap_t;

/* counts is required for FC_VMAP_STATS and ignored otherwise; threads >= 1 for the MinED
 * search. The vocabularies' sizes must match the counts'. */
int fc_vmap_build(fc_vmap_t **out, fc_vmap_method_t method, const fc_vcount_t *counts,
                  const fc_vocab_t *src, const fc_vocab_t *piv, int threads, fc_err_t *err);
/* Forces one entry (e.g. BOS/EOS to BOS/EOS). */
void fc_vmap_set(fc_vmap_t *m, uint32_t src_id, uint32_t piv_id);
void fc_vmap_destroy(fc_vmap_t **m);
int fc_vmap_save(const fc_vmap_t *m, const char *path, fc_err_t *err);
int fc_vmap_load(fc_vmap_t **out, const char *path, fc_err_t *err);
int fc_vmap_method_parse(const char *name, fc_vmap_method_t *out);
const char *fc_vmap_method_name(fc_vmap_method_t m);

/* The MinED search alone: the pivot id at minimum edit distance from text (ties: smaller id),
 * FC_VMAP_NONE for an empty pivot vocabulary. Builds its index on first use. */
typedef struct fc_mined_index fc_mined_index_t;
fc_mined_index_t *fc_mined_index_new(const fc_vocab_t *piv);
void fc_mined_index_destroy(fc_mined_index_t **ix);
uint32_t fc_mined_nearest(const fc_mined_index_t *ix, const char *text, uint32_t len,
                          uint32_t *dist);

#endif
