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
  fc_dtype_t dtype;  /* of the moments: FC_DT_F32, or FC_DT_BF16 (half the memory) */
  float *m;          /* (n) first moment (f32), else NULL */
  float *v;          /* (n) second moment (f32), else NULL */
  uint16_t *m16;     /* (n) first moment (bf16), else NULL */
  uint16_t *v16;     /* (n) second moment (bf16), else NULL */
  /* Where weight decay applies (2-D tensors), as sorted segments covering [0, n): segment k
   * ends (exclusive) at seg_end[k] and is decayed when seg_decay[k] (a byte per parameter
   * would cost 1.5 GB at 1.5B parameters). */
  size_t nseg, *seg_end;
  uint8_t *seg_decay;
  float lr;          /* the step's learning rate between fc_adamw_begin and the ranges */
  size_t base;       /* global index of element 0 (a rank's slice: its offset), the stochastic
                      * rounding's element index, so slices round as the whole would */
  long step;         /* completed steps */
  int threads;       /* the update is split over this many threads (default 1; same result) */
} fc_adamw_t;

/* Moments start at zero. `tensors` (count ntensors) says which ranges are 2-D weight matrices:
 * only those are decayed (biases and norm weights are not), as is usual for transformers.
 * tensors == NULL decays everything. */
fc_adamw_t *fc_adamw_new(size_t n, const fc_param_info_t *const *tensors, size_t ntensors,
                         float beta1, float beta2, float eps, float weight_decay);
/* The same with the moments kept in `dtype`: FC_DT_BF16 stores m and v as bfloat16 (4 bytes
 * per parameter instead of 8) while the parameters stay f32 (the master weights). Each update
 * is computed in f32 and rounded stochastically to bf16, with the random bits a hash of (step,
 * element), so small updates survive on average (round-to-nearest would drop every v update
 * below 1/256 of v, i.e. all of them with beta2 = 0.999) and a resumed run repeats the
 * uninterrupted one bit for bit. */
fc_adamw_t *fc_adamw_new_dtype(size_t n, const fc_param_info_t *const *tensors, size_t ntensors, float beta1,
                               float beta2, float eps, float weight_decay, fc_dtype_t dtype);
void fc_adamw_destroy(fc_adamw_t **o);

/* One step at learning rate lr, in torch's order (torch 1.13 _single_tensor_adamw):
 *   step += 1;  p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
 *   p -= lr/(1-b1^step) * m / (sqrt(v)/sqrt(1-b2^step) + eps). */
void fc_adamw_step(fc_adamw_t *o, float *params, const float *grads, float lr);

/* The same step in pieces, for an update fused into the backward pass (each tensor stepped as
 * soon as its gradient is final, so whole-model gradients are never held): fc_adamw_begin
 * counts the step and fixes lr, then fc_adamw_step_range updates elements [lo, hi) (indices
 * into params/grads as fc_adamw_step takes them); the ranges must cover [0, n) once per step.
 * The result is fc_adamw_step's, bit for bit. */
void fc_adamw_begin(fc_adamw_t *o, float lr);
void fc_adamw_step_range(fc_adamw_t *o, float *params, const float *grads, size_t lo, size_t hi);

/* A training step with the update fused into the backward pass (fc_model_set_grad_ready): each
 * layer's tensors are clipped, stepped and their gradients released as soon as they are final,
 * so the model's gradients are never all resident (at 1.5B parameters that is 6 GB less).
 * Global-norm clipping needs the whole gradient's norm before the first update, which only
 * exists after the last one; so the scale comes from the previous step's norm, and the first
 * step measures its own norm with an extra backward that steps nothing (then it is exact).
 * No gradient accumulation over several backwards (each backward steps). */
typedef struct fc_fused_step {
  fc_model_t *m;
  fc_adamw_t *o;
  double clip;       /* max norm, 0: no clipping */
  double scale_norm; /* the norm the clipping of this step uses (the previous step's) */
  double norm;       /* after a step: its own gradient norm, before clipping */
  double sumsq;
  int measure;
  int bad;        /* a range's gradient was not finite: it and the ranges after it are not stepped */
  size_t covered; /* parameters whose gradient has come in this backward */
  size_t stepped; /* of which updated */
  size_t bad_lo;  /* the first non-finite range's first parameter */
} fc_fused_step_t;

/* Installs the hook on m (fc_model_set_grad_ready); m's gradients must be zero (as a new model
 * or after fc_model_zero_grad). */
void fc_fused_step_init(fc_fused_step_t *f, fc_model_t *m, fc_adamw_t *o, double clip);
/* fc_model_loss_backward with the AdamW step at lr inside it (arguments as there). Checks come
 * before updates: a non-finite loss (known before the first layer's backward) or, on the first
 * step, a non-finite gradient norm (measured whole before any update) refuses the step with no
 * parameter or optimizer state changed (FC_EINVAL, gradients left zero). Later steps only know
 * the norm at the end, so each range's gradient is checked as it comes: from the first
 * non-finite one on nothing more is stepped, and the error says how many parameters (the layers
 * above it) had already been updated. */
int fc_fused_step_run(fc_fused_step_t *f, float lr, const int32_t *ids, int B, int T, const int32_t *targets,
                      const fc_fused_targets_t *fused, float lambda, double norm, fc_loss_stats_t *stats,
                      double *loss, fc_err_t *err);

/* The optimizer state (step, m, v) in a small binary file section, checked on reading (the
 * moments' dtype must be the reader's). */
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
