/* The training loop: a Llama-family model trained on JSONL data with AdamW, gold cross-entropy
 * and optionally the FuseChat fusion loss, with atomic checkpoints that resume bit-identically.
 *
 * Output directory layout:
 *   OUT/checkpoint-STEP/   config.json, model.safetensors (F32), tokenizer files, trainer_state.bin
 *                          (written every --checkpoint-every steps, at the end, and on SIGINT)
 *   OUT/                   the final model (config.json, model.safetensors, tokenizer files)
 *   OUT/loss.csv           step,loss,lr,grad_norm,ce,fusion,tokens  (one row per step)
 * A checkpoint directory is built under a temporary name and renamed into place, so a killed
 * run leaves either the whole checkpoint or none.
 *
 * trainer_state.bin holds the completed step, the next data row, the settings a continuation
 * must share (batch, accumulation, seq-len, shuffle, pack, seed, row and parameter counts) and
 * AdamW's step, m and v. There is no other random state to keep: the rows of step k are rows
 * k*B*G.. of the global order, and each epoch's shuffle is a function of (seed, epoch), so the
 * data position and the seed reproduce the continuation exactly (no dropout is used). */
#ifndef FC_TRAIN_H
#define FC_TRAIN_H

#include <stdint.h>

#include "fc_comm.h"
#include "fc_data.h"
#include "fc_optim.h"
#include "fc_st.h"
#include "fc_util.h"

typedef struct fc_train_opts {
  const char *model_dir;       /* start from these weights (tokenizer files copied from here) */
  const char *config_path;     /* or: a new model from this config.json, initialised with seed */
  const char *tokenizer_path;  /* tokenizer.json copied into outputs when training from scratch */
  const char *data_path;       /* JSONL (fc_data.h) */
  const char *out_dir;
  long steps;                  /* optimizer steps; 0: from epochs */
  double epochs;               /* used when steps == 0 */
  int batch_size;              /* rows per micro-batch (B) */
  int grad_accum;              /* micro-batches per step (G): a step sees B*G rows */
  int seq_len;                 /* longest row (T) */
  double lr;
  fc_sched_kind_t schedule;
  long warmup;                 /* warm-up steps; < 0: warmup_ratio of the steps, rounded up */
  double warmup_ratio;         /* default 0.03 (the FuseChat recipe) */
  double weight_decay, beta1, beta2, eps;
  double clip;                 /* max global gradient norm; <= 0 disables clipping */
  uint64_t seed;               /* model init (from scratch) and shuffling */
  int threads;
  int resume;                  /* continue from the newest OUT/checkpoint-STEP */
  int shuffle, pack;
  long checkpoint_every;       /* 0: only at the end (and on SIGINT) */
  int keep_checkpoints;        /* > 0: delete all but the newest this many checkpoints */
  double lambda;               /* weight of gold CE when fused targets are given */
  const fc_targets_source_t *targets; /* fused targets, or NULL for plain CE */
  const fc_data_encoder_t *encoder;   /* text/conversations lines, or NULL */
  fc_dtype_t save_dtype;       /* dtype of the final model (checkpoints are always F32) */
  int checkpoint_activations;  /* recompute each layer in backward (fc_model_set_checkpointing) */
  fc_dtype_t optimizer_dtype;  /* AdamW moments: FC_DT_F32 (default) or FC_DT_BF16 */
  int fused_optimizer;         /* AdamW inside backward (fc_fused_step_run): one rank, no accumulation */
  int quiet;                   /* no progress line */
  int log_every;               /* an info log line every this many steps (0: none) */
  int no_signal_handlers;      /* leave SIGINT/SIGTERM alone (daemons call fc_train_request_stop) */
  /* Called after every step with the fraction of the run done and "step S/N loss L lr R"
   * (a daemon's heartbeat); a non-zero return stops the run after a checkpoint, as SIGINT
   * does. May be NULL. */
  fc_progress_fn progress;
  void *progress_ctx;
  long stop_after;             /* > 0: checkpoint and stop after this step, as if interrupted
                                  (time-sliced runs and tests) */
  /* Data parallel over comm->size processes (NULL: this process alone). Every rank runs
   * fc_train_run with the same options; rank r reads its share fc_comm_slice(B*G, R, r) of each
   * step's rows in micro-batches of at most B, gradients are summed in rank order
   * (reduce-scatter), each rank clips and steps AdamW on its slice of the parameters, keeping
   * moments for that slice only (ZeRO-1), and the updated slices are gathered on all ranks.
   * Rank 0 writes the log, the progress and the models; every rank writes its optimizer slice
   * into checkpoints, which resume on any number of ranks. */
  const fc_comm_t *comm;
} fc_train_opts_t;

/* Defaults as the CLI documents them (lr 1e-5, cosine, warm-up 3%, B 4, G 1, T 512, ...). */
void fc_train_opts_default(fc_train_opts_t *o);

typedef struct fc_train_result {
  long start_step;     /* 0, or the checkpoint a resumed run started from */
  long steps_done;     /* the last completed step */
  long total_steps;
  double last_loss;    /* loss of the last step */
  double tokens_per_s; /* processed (non-padding) tokens per second, this run */
  double ms_per_step;
  int interrupted;     /* stopped by SIGINT/SIGTERM after writing a checkpoint */
  size_t params;       /* the model's parameter count */
  double comm_ms_per_step; /* ranks > 1: in the gradient reduce-scatter, the sums and the weight
                            * all-gather, waiting for the slower rank included (what overlapping
                            * them with the backward pass could hide at most) */
} fc_train_result_t;

/* Runs the loop. Returns 0 when all steps are done; FC_ECANCEL (message naming the checkpoint)
 * when interrupted by SIGINT or SIGTERM (handlers are installed for the duration of the call
 * unless no_signal_handlers) or fc_train_request_stop;
 * another FC_E* code on failure. res may be NULL. */
int fc_train_run(const fc_train_opts_t *o, fc_train_result_t *res, fc_err_t *err);

/* Asks a running fc_train_run to checkpoint and stop after the current step (what the signal
 * handlers do; async-signal-safe). */
void fc_train_request_stop(void);

/* The newest complete checkpoint directory in out_dir (new string), or NULL; *step gets its step. */
char *fc_train_find_checkpoint(const char *out_dir, long *step);

#endif
