/* mergekit's RAM and RAM+ (Reinforced Agent Merging, tensor-local): an element's delta counts
 * as changed where it exceeds epsilon; an element one model changed takes that model's delta
 * whole (RAM+: scaled by the model's lambda), one that several changed takes their mean, one
 * nobody changed stays at the base. RAM+ first counts, per model, its changed elements that
 * others changed too (shared) and those nobody else did (unique). Definitions in fc_merge.h. */
#include "fc_merge_impl.h"

/* How many models changed element j of the block (deltas in s->m), and a bit mask of which. */
static inline int changed(const job_t *J, const scratch_t *s, size_t j, float eps, uint64_t *who) {
  int c = 0;
  uint64_t w = 0;
  for (int i = 0; i < J->nm; i++)
    if (fabsf(s->m[(size_t)i * BLK + j]) > eps) c++, w |= 1ull << i;
  *who = w;
  return c;
}

FC_HOT void fc_merge_ram_block(job_t *J, int kind, scratch_t *s, size_t blk) {
  const int nm = J->nm;
  const size_t off = blk * BLK, cnt = load_block(J, s, blk, 1);
  const float eps = J->s0;
  if (kind == P_RAM_COUNT) { /* per block: shared_i, then unique_i */
    double *pt = J->part + blk * (size_t)J->npart;
    for (int i = 0; i < 2 * nm; i++) pt[i] = 0;
    for (size_t j = 0; j < cnt; j++) {
      uint64_t who;
      const int c = changed(J, s, j, eps, &who);
      for (int i = 0; i < nm && c; i++)
        if (who >> i & 1) pt[c > 1 ? i : nm + i] += 1;
    }
    return;
  }
  assert(kind == P_FINAL);
  const float *lam = J->method == FC_MERGE_RAMPLUS_TL ? J->sw : NULL;
  float *o = s->o;
  for (size_t j = 0; j < cnt; j++) {
    uint64_t who;
    const int c = changed(J, s, j, eps, &who);
    float acc = 0;
    /* mergekit's sum over models of d_i m_i u lambda_i + d_i m_i v / max(c, 1), with masks
     * u (c == 1) and v (c > 1): the same f32 terms in model order */
    for (int i = 0; i < nm; i++) {
      const float d = who >> i & 1 ? s->m[(size_t)i * BLK + j] : 0.0f;
      acc += c == 1 ? (lam ? d * lam[i] : d) : d / (float)(c > 1 ? c : 1);
    }
    o[j] = s->b[j] + acc;
  }
  store_out(s->dst, J->out_dt, off - s->off0, cnt, o);
}

void fc_merge_ram_prepare(job_t *J, int threads) {
  const fc_merge_model_t *m0 = &J->cfg->models[0];
  const double eps = m0->has & FC_MERGE_HAS_EPSILON ? m0->epsilon : isnan(J->cfg->epsilon) ? 1e-5 : J->cfg->epsilon;
  J->s0 = (float)eps;
  if (J->method != FC_MERGE_RAMPLUS_TL) return;
  const int nm = J->nm;
  J->npart = 2 * nm;
  J->part = fc_xcalloc(J->nblocks * (size_t)J->npart, sizeof(double));
  fc_merge_pass(J, P_RAM_COUNT, threads);
  /* rho and lambda in f32, as mergekit's tensors: counts / clamp(counts, epsilon) */
  const float r = (float)J->cfg->ram_r, alpha = (float)J->cfg->ram_alpha;
  for (int i = 0; i < nm; i++) {
    const float shared = (float)fc_merge_part_sum(J, i), unique = (float)fc_merge_part_sum(J, nm + i);
    float rho = shared / (unique > J->s0 ? unique : J->s0);
    rho = rho < 0 ? 0 : rho > alpha ? alpha : rho;
    J->sw[i] = 1.0f + r * rho;
  }
}
