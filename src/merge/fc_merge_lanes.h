/* Private to the merge floor: eight-lane vectors for the fused passes, which read bf16 inputs
 * straight from the mapping and write the output dtype directly (GCC vector extensions, so
 * each FC_HOT clone compiles them for its own instruction set). */
#ifndef FC_MERGE_LANES_H
#define FC_MERGE_LANES_H

#include "fc_merge_impl.h"

/* ---- fused final pass for bf16 models: no f32 scratch blocks ----
 * The weighted-sum methods read each input once, eight elements at a time straight from the
 * mapping, and write the output dtype directly: one pass over the data instead of a convert
 * pass per input, an accumulate pass per model and an output pass. The arithmetic is the
 * generic path's, element for element (f32, sums in model order), except that a
 * normalising division by the constant sum of weights is a multiplication by its reciprocal
 * (the f32 result can differ from the divided one in its last bit, rarely). */
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd8 __attribute__((vector_size(64)));
typedef uint32_t vu8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef uint16_t vh8 __attribute__((vector_size(16)));

/* Vectors pass through pointers: by value they would change the ABI between the clones. */
#define ld8_bf16(p) ld8_bf16_((p), &(vf8){0})
FC_INLINE vf8 *ld8_bf16_(const uint16_t *p, vf8 *dst) {
  vh8 h;
  memcpy(&h, p, sizeof h);
  vu8 u = __builtin_convertvector(h, vu8) << 16;
  *dst = (vf8)u;
  return dst;
}

FC_INLINE void st8(void *out, fc_dtype_t dt, size_t off, const vf8 *op) {
  const vf8 o = *op;
  if (dt == FC_DT_F32) {
    memcpy((float *)out + off, &o, sizeof o);
    return;
  }
  /* to_bf16, lane-wise: round to nearest even, NaNs stay quiet NaNs. */
  vu8 u = (vu8)o;
  vu8 r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  vu8 nan = (vu8)((vi8)(u & 0x7fffffffu) > 0x7f800000);
  vu8 q = ((u >> 16) | 0x40u) & nan;
  vh8 h = __builtin_convertvector((r & ~nan) | q, vh8);
  memcpy((uint16_t *)out + off, &h, sizeof h);
}

static inline int any8(vu8 m) {
  uint64_t q[4];
  memcpy(q, &m, sizeof q);
  return (q[0] | q[1] | q[2] | q[3]) != 0;
}

/* Bit l set for each set lane l of a mask, so the few set lanes can be visited with ctz
 * (fewer mispredicted branches than a test per lane). */
static inline unsigned lane_bits(vu8 m) {
  vu8 bits = m & (vu8){1, 2, 4, 8, 16, 32, 64, 128};
  unsigned b = 0;
  for (int l = 0; l < 8; l++) b |= bits[l];
  return b;
}

#define FU 4          /* groups of eight per step, so their dependency chains interleave */
#define FUSED_PF 512  /* prefetch distance in elements (1 KB of bf16) */

/* The majority-sign test (sum_i x_i >= 0, the sum taken exactly) for eight-lane groups x[i][u].
 * Two f32 values sum to zero only when they cancel exactly and rounding keeps the sign, so
 * one f32 addition decides; more terms are summed in f64, where a few f32 values sum exactly
 * (a rounded f32 partial sum could cancel to the wrong sign, and bf16 deltas often cancel). */
FC_INLINE void sign_pos(int nm, const vf8 (*x)[FU], int U, vu8 *pos) {
  typedef int64_t vl8 __attribute__((vector_size(64)));
  for (int u = 0; u < U; u++) {
    if (nm <= 2) {
      vf8 s = x[0][u];
      if (nm == 2) s += x[1][u];
      pos[u] = (vu8)(s >= (vf8){0});
      continue;
    }
    vd8 s = {0};
    for (int i = 0; i < nm; i++) s += __builtin_convertvector(x[i][u], vd8);
    pos[u] = (vu8)__builtin_convertvector((vl8)(s >= 0), vi8);
  }
}

/* Majority sign as +-1 lanes from pos (sign_pos). */
FC_INLINE void sign_lanes(const vu8 *pos, vf8 *sgn, int U) {
  const vf8 one = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int u = 0; u < U; u++) sgn[u] = (vf8)(((vu8)one & pos[u]) | ((vu8)-one & ~pos[u]));
}

/* The fused blocks' tail: elements [j, j + r) (r <= 8) of base and models, copied into
 * zero-padded eight-element buffers tb and tm (tp[i] points at tm[i]). */
FC_INLINE void tail_copy(int nm, const uint16_t *const *mp, const uint16_t *bp, size_t j, size_t r,
                         uint16_t *tb, uint16_t (*tm)[8], const uint16_t **tp) {
  memset(tb, 0, 8 * sizeof *tb);
  if (bp) memcpy(tb, bp + j, r * 2);
  for (int i = 0; i < nm; i++) {
    memset(tm[i], 0, sizeof tm[i]);
    memcpy(tm[i], mp[i] + j, r * 2);
    tp[i] = tm[i];
  }
}

/* Stores the first r (<= 8) lanes of o at element doff of the output. */
FC_INLINE void st_tail(void *dst, fc_dtype_t dt, size_t doff, size_t r, const vf8 *o) {
  if (r == 8) {
    st8(dst, dt, doff, o);
    return;
  }
  float t[8];
  memcpy(t, o, sizeof t);
  store_out(dst, dt, doff, r, t);
}

/* The fused passes' walk over one block (TIES, SCE): elements [off, off + cnt) of the bf16
 * inputs, FU groups of eight per STEP with the inputs prefetched ahead, each stored in the
 * output dtype at doff; the tail eight at a time through the same STEP from zero-padded copies
 * (var, per-element f32 extras or NULL, copied with them). STEP(mp, bp, vp, j, o, U) computes
 * o[0..U) for elements j.. of mp[i] and bp (vp: var at the same place). A macro, so that each
 * pass's step is inlined in its loop as if written there. */
#define FUSED_BLOCK(J, nm, off, cnt, var, dst, doff, STEP)                                  \
  do {                                                                                      \
    const uint16_t *mp_[FC_MERGE_MAX_MODELS];                                               \
    for (int i_ = 0; i_ < (nm); i_++) mp_[i_] = (const uint16_t *)(J)->models[i_]->data + (off); \
    const uint16_t *bp_ = (const uint16_t *)(J)->base->data + (off);                        \
    const float *var_ = (var);                                                              \
    vf8 o_[FU];                                                                             \
    size_t j_ = 0;                                                                          \
    for (; j_ + 8 * FU <= (cnt); j_ += 8 * FU) {                                            \
      if (FUSED_PF) {                                                                       \
        for (int i_ = 0; i_ < (nm); i_++) __builtin_prefetch(mp_[i_] + j_ + FUSED_PF);      \
        __builtin_prefetch(bp_ + j_ + FUSED_PF);                                            \
      }                                                                                     \
      STEP(mp_, bp_, var_, j_, o_, FU);                                                     \
      for (int u_ = 0; u_ < FU; u_++) st8(dst, (J)->out_dt, (doff) + j_ + 8 * u_, &o_[u_]); \
    }                                                                                       \
    for (; j_ < (cnt); j_ += 8) {                                                           \
      uint16_t tb_[8], tm_[FC_MERGE_MAX_MODELS][8];                                         \
      const uint16_t *tp_[FC_MERGE_MAX_MODELS];                                             \
      float tv_[8] = {0};                                                                   \
      const size_t r_ = (cnt) - j_ < 8 ? (cnt) - j_ : 8;                                    \
      if (var_) memcpy(tv_, var_ + j_, r_ * sizeof *tv_);                                   \
      tail_copy(nm, mp_, bp_, j_, r_, tb_, tm_, tp_);                                       \
      STEP(tp_, tb_, var_ ? tv_ : NULL, 0, o_, 1);                                          \
      st_tail(dst, (J)->out_dt, (doff) + j_, r_, &o_[0]);                                   \
    }                                                                                       \
  } while (0)

/* The key from which selection S keeps the elements of block blk, when it keeps all of the
 * block's ties at its threshold or none of them: 1 and *lo; else 0 (the fused passes then take
 * the block the general way). */
static inline int sel_quota_lo(const sel_t *S, size_t blk, uint32_t *lo) {
  const int64_t q = S->all_eq ? -1 : S->quota[blk];
  if (q > 0) return 0;
  *lo = q < 0 ? S->thr : S->thr + 1;
  return 1;
}

/* Calls F with the model count as a constant for the common counts, so the loops over models
 * unroll and their vectors stay in registers. */
#define WITH_NM(nm, F, ...)                       \
  do {                                            \
    switch (nm) {                                 \
    case 2: F(__VA_ARGS__, 2); break;             \
    case 3: F(__VA_ARGS__, 3); break;             \
    case 4: F(__VA_ARGS__, 4); break;             \
    default: F(__VA_ARGS__, nm); break;           \
    }                                             \
  } while (0)

#endif
