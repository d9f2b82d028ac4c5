/* Token alignment between two tokenizations of the same text (FuseLLM/FuseChat "MinED"): the
 * monotone path (0,0) -> (n-1,m-1) with steps (1,0), (0,1), (1,1) that minimises the summed
 * edit distance of the paired token strings (DTW with Levenshtein distance as the local cost).
 *
 * Token strings are byte strings given by the caller (what a token stands for: SentencePiece
 * `▁` and byte-level `Ġ`/`Ċ` already turned into the characters, byte-fallback tokens into their
 * byte). The local cost of a pair (fc_token_distance) is the edit distance in Unicode code points
 * when both tokens are made of whole UTF-8 characters, as in FuseChat. When either holds part of a
 * character (a byte-level or byte-fallback token cut inside a multi-byte sequence: emoji joined
 * by zero-width joiners, Hangul, rare CJK), the pair is compared on bytes, so such a token costs
 * what its bytes differ from its partner's; as units, its stray bytes would differ from every
 * whole character and the path through a split character would be arbitrary (the emoji family
 * 👨‍👩‍👧‍👦 between Llama-2 and Qwen3 cost 47 against an optimum of 26; tests/test_align.c).
 *
 * fc_align_mined restricts the DP to a band: source row i may only pair with pivot tokens whose
 * byte span overlaps token i's span, widened by `margin` tokens each side (and made monotone and
 * connected). Both tokenizations cover the same text, so the optimal path stays inside it; the
 * cost is O((n + m) * band width) time and one byte per band cell for the backtrack.
 * Ties between equal-cost predecessors are broken as FuseChat's dtw does: diagonal first, then
 * the source step (i-1, j), then the pivot step (i, j-1). */
#ifndef FC_ALIGN_H
#define FC_ALIGN_H

#include <stdint.h>

#include "fc_util.h"

/* A token sequence: token i's text is bytes[start[i] .. start[i+1]). off[i] is the byte offset of
 * token i in the shared text; NULL means start[i] (the texts concatenate to the text). */
typedef struct fc_align_seq {
  uint32_t n;
  const char *bytes;
  const uint32_t *start; /* [n + 1] */
  const uint32_t *off;   /* [n] or NULL */
} fc_align_seq_t;

/* The result: the path as (src[k], piv[k]) pairs in order, its cost, and per pivot position j
 * the source positions paired with it: grp_src[grp_start[j] .. grp_start[j+1]) (ascending). */
typedef struct fc_align_result {
  uint32_t n_path;
  uint32_t *src, *piv; /* [n_path] */
  int64_t cost;
  uint32_t m;
  uint32_t *grp_start; /* [m + 1] */
  uint32_t *grp_src;   /* [n_path] */
  uint32_t cap_path, cap_m;
} fc_align_result_t;

typedef struct fc_aligner fc_aligner_t;
/* margin: pivot tokens added each side of the overlap band. The band is a heuristic: the DTW
 * optimum can shift away from the character overlap to pair identical strings nearby, so a
 * narrow band may return a slightly costlier path. Measured on synthetic tokenizations of 40
 * documents (bench/align.c) with two real tokenizers (Llama-2 source, Qwen3 pivot): total cost
 * +0.78% at margin 4, equal to the full DP at margin 8, which still aligns 1.66 M pivot
 * tokens/s on one core. A margin wider than the sequences is exact. */
#define FC_ALIGN_DEFAULT_MARGIN 8
fc_aligner_t *fc_aligner_new(int margin);
void fc_aligner_destroy(fc_aligner_t **a);

/* Banded alignment. Both sequences must be non-empty. Errors: FC_EINVAL for inconsistent
 * offsets (not ascending). Reuses out's buffers (start from a zeroed result). */
int fc_align_mined(fc_aligner_t *a, const fc_align_seq_t *src, const fc_align_seq_t *piv,
                   fc_align_result_t *out, fc_err_t *err);
/* The plain O(n m) DP over the whole matrix (for tests and as a reference). */
int fc_align_full(fc_aligner_t *a, const fc_align_seq_t *src, const fc_align_seq_t *piv,
                  fc_align_result_t *out, fc_err_t *err);
void fc_align_result_free(fc_align_result_t *r);

/* The aligner's local cost of two token texts (see above): code points, or bytes when either
 * token splits a character. */
uint32_t fc_token_distance(const char *a, uint32_t la, const char *b, uint32_t lb);
/* Levenshtein distance between two UTF-8 byte strings, counted in code points; a stray byte is
 * one unit of its own, distinct from every code point. */
uint32_t fc_edit_distance(const char *a, uint32_t la, const char *b, uint32_t lb);
/* The same with an early exit: returns any value >= bound once the distance is known to be
 * >= bound. */
uint32_t fc_edit_distance_bounded(const char *a, uint32_t la, const char *b, uint32_t lb,
                                  uint32_t bound);
/* The same over already decoded units (from fc_utf8_decode_units, out has room for len units). */
uint32_t fc_utf8_decode_units(const char *s, uint32_t len, uint32_t *out);
uint32_t fc_edit_distance_units(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb,
                                uint32_t bound);
/* Number of edit-distance units (code points and stray bytes) in a byte string. */
uint32_t fc_utf8_units(const char *s, uint32_t len);

/* Statistics of the last alignment run by this aligner (for the benchmark). */
typedef struct fc_align_stats {
  uint64_t cells;       /* DP cells evaluated */
  uint64_t ed_calls;    /* edit distances computed (not short-circuited or cached) */
  uint64_t cache_hits;
} fc_align_stats_t;
fc_align_stats_t fc_aligner_stats(const fc_aligner_t *a);

#endif
