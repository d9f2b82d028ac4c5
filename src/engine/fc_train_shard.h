/* Optimizer state sharded over data-parallel ranks (ZeRO-1) and its checkpoint files, so that a
 * checkpoint written by R ranks resumes on any other number of ranks (internal to fc_train.c).
 *
 * Rank r of R keeps AdamW moments for its slice fc_comm_slice(n, R, r) of the flat parameters.
 * In a checkpoint, trainer_state.bin carries slice 0 after its header (with R = 1 that is the
 * whole optimizer, the single-process format) and rank r > 0 writes optimizer-r-of-R.bin. A
 * reader with another rank count takes the parts of every old slice that overlap its own. */
#ifndef FC_TRAIN_SHARD_H
#define FC_TRAIN_SHARD_H

#include <stddef.h>

#include "fc_model.h"
#include "fc_optim.h"

/* AdamW over parameters [lo, hi) of the model: weight decay follows the model's tensors there. */
fc_adamw_t *fc_shard_adamw_new(const fc_model_t *m, size_t lo, size_t hi, float beta1, float beta2, float eps,
                               float weight_decay);

/* Writes rank's slice (rank >= 1) into dir/optimizer-RANK-of-SIZE.bin. */
int fc_shard_write(const char *dir, int rank, int size, size_t n, const fc_adamw_t *opt, fc_err_t *err);

/* Fills opt, the moments of slice [lo, hi) of n parameters, from checkpoint directory ckpt;
 * slice 0 is read from state_path at byte offset state_off. */
int fc_shard_load(const char *ckpt, const char *state_path, long state_off, size_t n, size_t lo, size_t hi,
                  fc_adamw_t *opt, fc_err_t *err);

#endif
