/* AdamW, gradient clipping and learning-rate schedules (see fc_optim.h for the formulas). */
#include "fc_optim.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_par.h"

fc_adamw_t *fc_adamw_new(size_t n, const fc_param_info_t *const *tensors, size_t ntensors,
                         float beta1, float beta2, float eps, float weight_decay) {
  return fc_adamw_new_dtype(n, tensors, ntensors, beta1, beta2, eps, weight_decay, FC_DT_F32);
}

static int cmp_offset(const void *a, const void *b) {
  const fc_param_info_t *x = *(const fc_param_info_t *const *)a, *y = *(const fc_param_info_t *const *)b;
  return (x->offset > y->offset) - (x->offset < y->offset);
}

fc_adamw_t *fc_adamw_new_dtype(size_t n, const fc_param_info_t *const *tensors, size_t ntensors, float beta1,
                               float beta2, float eps, float weight_decay, fc_dtype_t dtype) {
  assert(dtype == FC_DT_F32 || dtype == FC_DT_BF16);
  fc_adamw_t *o = fc_xcalloc(1, sizeof *o);
  o->dtype = dtype;
  o->beta1 = beta1;
  o->beta2 = beta2;
  o->eps = eps;
  o->weight_decay = weight_decay;
  o->n = n;
  o->threads = 1;
  if (dtype == FC_DT_BF16) {
    o->m16 = fc_xcalloc(n ? n : 1, sizeof *o->m16);
    o->v16 = fc_xcalloc(n ? n : 1, sizeof *o->v16);
  } else {
    o->m = fc_xcalloc(n ? n : 1, sizeof *o->m);
    o->v = fc_xcalloc(n ? n : 1, sizeof *o->v);
  }
  /* Decayed segments: the 2-D tensors sorted by offset, the gaps between them not decayed. */
  size_t nd = 0;
  const fc_param_info_t **d = fc_xcalloc(ntensors ? ntensors : 1, sizeof *d);
  for (size_t i = 0; tensors && i < ntensors; i++) {
    assert(tensors[i]->offset + tensors[i]->numel <= n);
    if (tensors[i]->ndim == 2 && tensors[i]->numel) d[nd++] = tensors[i];
  }
  qsort(d, nd, sizeof *d, cmp_offset);
  o->seg_end = fc_xcalloc(2 * nd + 2, sizeof *o->seg_end);
  o->seg_decay = fc_xcalloc(2 * nd + 2, 1);
  size_t at = 0;
  if (!tensors) {
    o->seg_end[0] = n, o->seg_decay[0] = 1, o->nseg = 1;
  } else {
    for (size_t i = 0; i < nd; i++) {
      if (d[i]->offset > at) o->seg_end[o->nseg] = d[i]->offset, o->seg_decay[o->nseg++] = 0;
      o->seg_end[o->nseg] = d[i]->offset + d[i]->numel, o->seg_decay[o->nseg++] = 1;
      at = d[i]->offset + d[i]->numel;
    }
    if (at < n || !o->nseg) o->seg_end[o->nseg] = n, o->seg_decay[o->nseg++] = 0;
  }
  free(d);
  return o;
}

void fc_adamw_destroy(fc_adamw_t **po) {
  fc_adamw_t *o = *po;
  if (!o) return;
  free(o->m);
  free(o->v);
  free(o->m16);
  free(o->v16);
  free(o->seg_end);
  free(o->seg_decay);
  free(o);
  *po = NULL;
}

/* The update of elements [lo, hi), with the step's scalars already in float. */
typedef struct adamw_job {
  float *p, *m, *v;
  uint16_t *m16, *v16;
  uint32_t seed; /* the step's share of the stochastic-rounding hash */
  size_t base;   /* added to the element index in that hash (fc_adamw_t.base) */
  const float *g;
  const fc_adamw_t *o; /* its decay segments */
  size_t off;          /* element 0 of the parallel loop is element off of params/grads */
  float decay_mul, fb1, f1b1, fb2, f1b2, bc2_sqrt, neg_step, eps;
} adamw_job_t;

/* Multiplying by 1 is exact, so the undecayed segments get p unchanged, as p * 1.0f. */
static void adamw_seg(const adamw_job_t *j, size_t lo, size_t hi, float dmul) {
  float *restrict p = j->p, *restrict m = j->m, *restrict v = j->v;
  const float *restrict g = j->g;
  for (size_t i = lo; i < hi; i++) {
    float pi = p[i] * dmul;
    float gi = g[i];
    m[i] = m[i] * j->fb1 + gi * j->f1b1;
    v[i] = v[i] * j->fb2 + j->f1b2 * gi * gi;
    float denom = sqrtf(v[i]) / j->bc2_sqrt + j->eps;
    p[i] = pi + j->neg_step * (m[i] / denom);
  }
}

static inline float bf16_to_f32(uint16_t b) {
  union {
    uint32_t u;
    float f;
  } x = {.u = (uint32_t)b << 16};
  return x.f;
}

/* f32 -> bf16, rounded up with probability (the dropped bits / 2^16): the 16 random bits come
 * from a hash of the element index and the step's seed. */
static inline uint16_t f32_to_bf16_sr(float f, size_t i, uint32_t seed) {
  union {
    float f;
    uint32_t u;
  } x = {.f = f};
  uint32_t h = (uint32_t)i * 0x9E3779B1u ^ seed;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return (uint16_t)((x.u + (h & 0xFFFFu)) >> 16); /* finite moments: no NaN/Inf handling needed */
}

static void adamw_seg_bf16(const adamw_job_t *j, size_t lo, size_t hi, float dmul) {
  float *restrict p = j->p;
  uint16_t *restrict m = j->m16, *restrict v = j->v16;
  const float *restrict g = j->g;
  for (size_t i = lo; i < hi; i++) {
    float pi = p[i] * dmul;
    float gi = g[i];
    float mi = bf16_to_f32(m[i]) * j->fb1 + gi * j->f1b1;
    float vi = bf16_to_f32(v[i]) * j->fb2 + j->f1b2 * gi * gi;
    float denom = sqrtf(vi) / j->bc2_sqrt + j->eps;
    p[i] = pi + j->neg_step * (mi / denom);
    m[i] = f32_to_bf16_sr(mi, j->base + i, j->seed);
    v[i] = f32_to_bf16_sr(vi, j->base + i, j->seed ^ 0x5bd1e995u);
  }
}

/* Elements [lo, hi) of the parallel loop (shifted by off), split at the decay segments. */
static void adamw_range(void *arg, size_t lo, size_t hi) {
  const adamw_job_t *j = arg;
  const fc_adamw_t *o = j->o;
  lo += j->off, hi += j->off;
  size_t a = 0, b = o->nseg; /* first segment ending after lo */
  while (a < b) {
    size_t mid = (a + b) / 2;
    if (o->seg_end[mid] <= lo) a = mid + 1;
    else b = mid;
  }
  for (size_t k = a; k < o->nseg && lo < hi; k++) {
    size_t e = o->seg_end[k] < hi ? o->seg_end[k] : hi;
    float dmul = o->seg_decay[k] ? j->decay_mul : 1.0f;
    if (o->dtype == FC_DT_BF16) adamw_seg_bf16(j, lo, e, dmul);
    else adamw_seg(j, lo, e, dmul);
    lo = e;
  }
}

static void adamw_run(fc_adamw_t *o, float *params, const float *grads, float lr, size_t lo, size_t hi) {
  /* scalars in double as Python computes them, then used in float as torch's CPU kernels do */
  const double b1 = o->beta1, b2 = o->beta2;
  const double bc1 = 1.0 - pow(b1, (double)o->step);
  const double bc2 = 1.0 - pow(b2, (double)o->step);
  adamw_job_t base = {
      .p = params, .m = o->m, .v = o->v, .m16 = o->m16, .v16 = o->v16,
      .seed = (uint32_t)((uint64_t)o->step * 0xC2B2AE3Du), .base = o->base, .g = grads, .o = o, .off = lo,
      .decay_mul = (float)(1.0 - (double)lr * o->weight_decay),
      .fb1 = (float)b1, .f1b1 = (float)(1.0 - b1), .fb2 = (float)b2, .f1b2 = (float)(1.0 - b2),
      .bc2_sqrt = (float)sqrt(bc2), .neg_step = (float)(-(double)lr / bc1), .eps = o->eps,
  };
  int nt = o->threads < 1 ? 1 : o->threads;
  if (hi - lo < 65536) nt = 1;
  fc_par_for(hi - lo, 0, nt, adamw_range, &base);
}

void fc_adamw_step(fc_adamw_t *o, float *params, const float *grads, float lr) {
  o->step++;
  adamw_run(o, params, grads, lr, 0, o->n);
}

void fc_adamw_begin(fc_adamw_t *o, float lr) {
  o->step++;
  o->lr = lr;
}

void fc_adamw_step_range(fc_adamw_t *o, float *params, const float *grads, size_t lo, size_t hi) {
  assert(lo <= hi && hi <= o->n);
  if (hi > lo) adamw_run(o, params, grads, o->lr, lo, hi);
}

/* ------------------------------------------------------------------ fused into backward */

static void fused_ready(void *ctx, size_t lo, size_t hi) {
  fc_fused_step_t *f = ctx;
  float *g = fc_model_grads(f->m);
  double ss = fc_grad_sumsq(g + lo, hi - lo);
  f->sumsq += ss;
  f->covered += hi - lo;
  if (!isfinite(ss) && !f->bad) f->bad = 1, f->bad_lo = lo;
  if (!f->measure && !f->bad) {
    if (f->clip > 0 && f->scale_norm > 0) fc_clip_grad_scale(g + lo, hi - lo, f->scale_norm, f->clip);
    fc_adamw_step_range(f->o, fc_model_params(f->m), g, lo, hi);
    f->stepped += hi - lo;
  }
  fc_model_release_grads(f->m, lo, hi);
}

void fc_fused_step_init(fc_fused_step_t *f, fc_model_t *m, fc_adamw_t *o, double clip) {
  *f = (fc_fused_step_t){.m = m, .o = o, .clip = clip, .scale_norm = -1};
  fc_model_set_grad_ready(m, fused_ready, f);
}

int fc_fused_step_run(fc_fused_step_t *f, float lr, const int32_t *ids, int B, int T, const int32_t *targets,
                      const fc_fused_targets_t *fused, float lambda, double norm, fc_loss_stats_t *stats,
                      double *loss, fc_err_t *err) {
  assert(fc_model_num_params(f->m) == f->o->n && "the optimizer covers the whole model");
  int rc = 0;
  f->bad = 0, f->stepped = 0;
  if (f->clip > 0 && f->scale_norm < 0) { /* the first step: its norm first, nothing stepped */
    f->measure = 1, f->sumsq = 0, f->covered = 0;
    rc = fc_model_loss_backward(f->m, ids, B, T, targets, fused, lambda, norm, NULL, NULL, err);
    f->measure = 0, f->scale_norm = sqrt(f->sumsq);
    if (!rc && !isfinite(f->scale_norm))
      rc = fc_err_set(err, FC_EINVAL, "the gradient norm is %g: the step is refused before any parameter is updated",
                      f->scale_norm);
    if (rc) {
      f->scale_norm = -1; /* measured again by the next step */
      return rc;
    }
  }
  f->sumsq = 0, f->covered = 0;
  long step0 = f->o->step;
  fc_adamw_begin(f->o, lr);
  rc = fc_model_loss_backward(f->m, ids, B, T, targets, fused, lambda, norm, stats, loss, err);
  assert(rc || f->covered == f->o->n);
  f->norm = sqrt(f->sumsq);
  f->scale_norm = f->norm;
  if (!rc && f->bad)
    rc = fc_err_set(err, FC_EINVAL,
                    "the gradient is not finite from parameter %zu on: %zu of %zu parameters had been updated "
                    "before it was seen (the step fused into backward cannot hold the rest back)",
                    f->bad_lo, f->stepped, f->o->n);
  if (rc) {
    if (!f->stepped) f->o->step = step0; /* refused whole: the optimizer as it was */
    f->scale_norm = -1;
  }
  return rc;
}

static const char ADAMW_MAGIC[8] = {'F', 'C', 'A', 'D', 'A', 'M', 'W', '1'};
static const char ADAMW_MAGIC_BF16[8] = {'F', 'C', 'A', 'D', 'A', 'M', 'W', 'B'};

int fc_adamw_write(const fc_adamw_t *o, FILE *fp, fc_err_t *err) {
  uint64_t hdr[2] = {(uint64_t)o->step, (uint64_t)o->n};
  int bf = o->dtype == FC_DT_BF16;
  size_t es = bf ? sizeof(uint16_t) : sizeof(float);
  const void *m = bf ? (const void *)o->m16 : (const void *)o->m, *v = bf ? (const void *)o->v16 : (const void *)o->v;
  if (fwrite(bf ? ADAMW_MAGIC_BF16 : ADAMW_MAGIC, 8, 1, fp) != 1 || fwrite(hdr, sizeof hdr, 1, fp) != 1 ||
      fwrite(m, es, o->n, fp) != o->n || fwrite(v, es, o->n, fp) != o->n)
    return fc_err_set(err, FC_EIO, "writing optimizer state: %s", strerror(errno));
  return 0;
}

int fc_adamw_read(fc_adamw_t *o, FILE *fp, fc_err_t *err) {
  char magic[8];
  uint64_t hdr[2];
  int bf = o->dtype == FC_DT_BF16;
  if (fread(magic, 8, 1, fp) != 1 || (memcmp(magic, ADAMW_MAGIC, 8) != 0 && memcmp(magic, ADAMW_MAGIC_BF16, 8) != 0) ||
      fread(hdr, sizeof hdr, 1, fp) != 1)
    return fc_err_set(err, FC_EFORMAT, "optimizer state: bad or truncated header");
  if (memcmp(magic, bf ? ADAMW_MAGIC_BF16 : ADAMW_MAGIC, 8) != 0)
    return fc_err_set(err, FC_EMISMATCH, "optimizer state has %s moments, this run keeps them in %s",
                      bf ? "f32" : "bf16", bf ? "bf16" : "f32");
  if (hdr[1] != o->n)
    return fc_err_set(err, FC_EMISMATCH, "optimizer state has %llu parameters, the model %zu",
                      (unsigned long long)hdr[1], o->n);
  size_t es = bf ? sizeof(uint16_t) : sizeof(float);
  void *m = bf ? (void *)o->m16 : (void *)o->m, *v = bf ? (void *)o->v16 : (void *)o->v;
  if (fread(m, es, o->n, fp) != o->n || fread(v, es, o->n, fp) != o->n)
    return fc_err_set(err, FC_EFORMAT, "optimizer state: truncated moments");
  o->step = (long)hdr[0];
  return 0;
}

double fc_grad_sumsq(const float *grads, size_t n) {
  double ss = 0;
  for (size_t i = 0; i < n; i++) ss += (double)grads[i] * grads[i];
  return ss;
}

void fc_clip_grad_scale(float *grads, size_t n, double norm, double max_norm) {
  if (max_norm <= 0) return;
  double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    float c = (float)coef;
    for (size_t i = 0; i < n; i++) grads[i] *= c;
  }
}

double fc_clip_grad_norm(float *grads, size_t n, double max_norm) {
  double norm = sqrt(fc_grad_sumsq(grads, n));
  fc_clip_grad_scale(grads, n, norm, max_norm);
  return norm;
}

double fc_sched_factor(fc_sched_kind_t kind, long step, long warmup, long total) {
  if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
  if (kind == FC_SCHED_CONSTANT) return 1.0;
  long span = total - warmup;
  double progress = (double)(step - warmup) / (double)(span > 1 ? span : 1);
  double f = 0.5 * (1.0 + cos(M_PI * 2.0 * 0.5 * progress));
  return f > 0 ? f : 0;
}

int fc_sched_parse(const char *s, fc_sched_kind_t *out) {
  if (strcmp(s, "constant") == 0) *out = FC_SCHED_CONSTANT;
  else if (strcmp(s, "cosine") == 0) *out = FC_SCHED_COSINE;
  else return -1;
  return 0;
}
