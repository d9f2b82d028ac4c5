/* AdamW as torch.optim.AdamW computes it, global-norm gradient clipping as
 * torch.nn.utils.clip_grad_norm_, and learning-rate schedules as Hugging Face transformers
 * defines them, over the model's flat parameter and gradient buffers. */
#ifndef FC_OPTIM_H
#define FC_OPTIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fc_model.h"
#include "fc_util.h"

typedef struct fc_adamw {
  float beta1, beta2, eps, weight_decay;
  size_t n;          /* parameters */
  float *m;          /* (n) first moment */
  float *v;          /* (n) second moment */
  uint8_t *decay;    /* (n) 1 where weight decay applies (2-D tensors), else 0 */
  long step;         /* completed steps */
  int threads;       /* the update is split over this many threads (default 1; same result) */
} fc_adamw_t;

/* Moments start at zero. `tensors` (count ntensors) says which ranges are 2-D weight matrices:
 * only those are decayed (biases and norm weights are not), as is usual for transformers.
 * tensors == NULL decays everything. */
fc_adamw_t *fc_adamw_new(size_t n, const fc_param_info_t *const *tensors, size_t ntensors,
                         float beta1, float beta2, float eps, float weight_decay);
void fc_adamw_destroy(fc_adamw_t **o);

/* One step at learning rate lr, in torch's order (torch 1.13 _single_tensor_adamw):
 *   step += 1;  p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
 *   p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps). */
void fc_adamw_step(fc_adamw_t *o, float *params, const float *grads, float lr);

/* The optimizer state (step, m, v) in a small binary file section, checked on reading. */
int fc_adamw_write(const fc_adamw_t *o, FILE *fp, fc_err_t *err);
int fc_adamw_read(fc_adamw_t *o, FILE *fp, fc_err_t *err);

/* Global L2 norm of grads; when above max_norm (> 0) scales them by max_norm/(norm + 1e-6),
 * as clip_grad_norm_. Returns the norm before clipping. */
double fc_clip_grad_norm(float *grads, size_t n, double max_norm);
/* The two halves of it, for gradients split over ranks: the sum of squares (in double) of a
 * part, and the scaling of a part once the global norm is known. */
double fc_grad_sumsq(const float *grads, size_t n);
void fc_clip_grad_scale(float *grads, size_t n, double norm, double max_norm);

typedef enum { FC_SCHED_CONSTANT, FC_SCHED_COSINE } fc_sched_kind_t;

/* The learning-rate multiplier at optimizer step `step` (0-based: the step about to be taken),
 * as transformers' LambdaLR schedules give it:
 *   warm-up (step < warmup):  step / max(1, warmup)           (so the very first step has 0)
 *   constant:                 1
 *   cosine:                   max(0, 0.5 * (1 + cos(pi * progress))),
 *                             progress = (step - warmup) / max(1, total - warmup)
 * (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup with num_cycles 0.5). */
double fc_sched_factor(fc_sched_kind_t kind, long step, long warmup, long total);
int fc_sched_parse(const char *s, fc_sched_kind_t *out);

#endif
