/* AdamW, gradient clipping and learning-rate schedules (see fc_optim.h for the formulas). */
#include "fc_optim.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

fc_adamw_t *fc_adamw_new(size_t n, const fc_param_info_t *const *tensors, size_t ntensors,
                         float beta1, float beta2, float eps, float weight_decay) {
  fc_adamw_t *o = fc_xcalloc(1, sizeof *o);
  o->beta1 = beta1;
  o->beta2 = beta2;
  o->eps = eps;
  o->weight_decay = weight_decay;
  o->n = n;
  o->threads = 1;
  o->m = fc_xcalloc(n ? n : 1, sizeof *o->m);
  o->v = fc_xcalloc(n ? n : 1, sizeof *o->v);
  o->decay = fc_xcalloc(n ? n : 1, 1);
  if (!tensors) {
    memset(o->decay, 1, n);
  } else {
    for (size_t i = 0; i < ntensors; i++) {
      const fc_param_info_t *t = tensors[i];
      assert(t->offset + t->numel <= n);
      if (t->ndim == 2) memset(o->decay + t->offset, 1, t->numel);
    }
  }
  return o;
}

void fc_adamw_destroy(fc_adamw_t **po) {
  fc_adamw_t *o = *po;
  if (!o) return;
  free(o->m);
  free(o->v);
  free(o->decay);
  free(o);
  *po = NULL;
}

/* The update of elements [lo, hi), with the step's scalars already in float. */
typedef struct adamw_job {
  float *p, *m, *v;
  const float *g;
  const uint8_t *dec;
  size_t lo, hi;
  float decay_mul, fb1, f1b1, fb2, f1b2, bc2_sqrt, neg_step, eps;
} adamw_job_t;

static void *adamw_range(void *arg) {
  const adamw_job_t *j = arg;
  float *restrict p = j->p, *restrict m = j->m, *restrict v = j->v;
  const float *restrict g = j->g;
  const uint8_t *restrict dec = j->dec;
  for (size_t i = j->lo; i < j->hi; i++) {
    float pi = dec[i] ? p[i] * j->decay_mul : p[i];
    float gi = g[i];
    m[i] = m[i] * j->fb1 + gi * j->f1b1;
    v[i] = v[i] * j->fb2 + j->f1b2 * gi * gi;
    float denom = sqrtf(v[i]) / j->bc2_sqrt + j->eps;
    p[i] = pi + j->neg_step * (m[i] / denom);
  }
  return NULL;
}

void fc_adamw_step(fc_adamw_t *o, float *params, const float *grads, float lr) {
  o->step++;
  /* scalars in double as Python computes them, then used in float as torch's CPU kernels do */
  const double b1 = o->beta1, b2 = o->beta2;
  const double bc1 = 1.0 - pow(b1, (double)o->step);
  const double bc2 = 1.0 - pow(b2, (double)o->step);
  adamw_job_t base = {
      .p = params, .m = o->m, .v = o->v, .g = grads, .dec = o->decay, .lo = 0, .hi = o->n,
      .decay_mul = (float)(1.0 - (double)lr * o->weight_decay),
      .fb1 = (float)b1, .f1b1 = (float)(1.0 - b1), .fb2 = (float)b2, .f1b2 = (float)(1.0 - b2),
      .bc2_sqrt = (float)sqrt(bc2), .neg_step = (float)(-(double)lr / bc1), .eps = o->eps,
  };
  int nt = o->threads < 1 ? 1 : o->threads;
  if (o->n < 65536) nt = 1;
  adamw_job_t jobs[nt];
  pthread_t th[nt];
  int started[nt];
  for (int t = 0; t < nt; t++) {
    jobs[t] = base;
    jobs[t].lo = o->n * t / nt;
    jobs[t].hi = o->n * (t + 1) / nt;
    started[t] = t > 0 && pthread_create(&th[t], NULL, adamw_range, &jobs[t]) == 0;
  }
  adamw_range(&jobs[0]);
  for (int t = 1; t < nt; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    else adamw_range(&jobs[t]);
  }
}

static const char ADAMW_MAGIC[8] = {'F', 'C', 'A', 'D', 'A', 'M', 'W', '1'};

int fc_adamw_write(const fc_adamw_t *o, FILE *fp, fc_err_t *err) {
  uint64_t hdr[2] = {(uint64_t)o->step, (uint64_t)o->n};
  if (fwrite(ADAMW_MAGIC, 8, 1, fp) != 1 || fwrite(hdr, sizeof hdr, 1, fp) != 1 ||
      fwrite(o->m, sizeof(float), o->n, fp) != o->n || fwrite(o->v, sizeof(float), o->n, fp) != o->n)
    return fc_err_set(err, FC_EIO, "writing optimizer state: %s", strerror(errno));
  return 0;
}

int fc_adamw_read(fc_adamw_t *o, FILE *fp, fc_err_t *err) {
  char magic[8];
  uint64_t hdr[2];
  if (fread(magic, 8, 1, fp) != 1 || memcmp(magic, ADAMW_MAGIC, 8) != 0 ||
      fread(hdr, sizeof hdr, 1, fp) != 1)
    return fc_err_set(err, FC_EFORMAT, "optimizer state: bad or truncated header");
  if (hdr[1] != o->n)
    return fc_err_set(err, FC_EMISMATCH, "optimizer state has %llu parameters, the model %zu",
                      (unsigned long long)hdr[1], o->n);
  if (fread(o->m, sizeof(float), o->n, fp) != o->n || fread(o->v, sizeof(float), o->n, fp) != o->n)
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
