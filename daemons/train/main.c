/* fusechat-train: the training stage daemon (task kind train): fine-tunes the pivot on the data
 * with lambda * CE + (1 - lambda) * fusion against the fused top-K stores of its inputs (none:
 * plain SFT), checkpointing into the task's work directory so a re-leased task resumes. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_config.h"
#include "fc_daemon.h"
#include "fc_train.h"
#include "fc_train_src.h"

static int g_threads;
static fc_train_params_t g_defaults; /* the schema's, with --checkpoint-every */

/* Checkpoints are only for resuming: the task's output is the final model. */
static int drop_checkpoints(const char *dir, fc_err_t *err) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d)))
    if (!strncmp(e->d_name, "checkpoint-", 11)) {
      char *p = fc_path_join(dir, e->d_name);
      rc = fc_rmtree(p, err);
      free(p);
    }
  closedir(d);
  return rc;
}

/* inputs: pivot model dir, data JSONL, then the fused stores of the shards in order (none: SFT).
 * outputs[0]: the trained model directory. Work (checkpoints) goes to OUT.train, renamed to OUT
 * when done. */
static int run_train(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs < 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a train task needs the pivot and the data as inputs, and one output");
  fc_train_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, &g_defaults, &p, err))) return rc;
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  o.model_dir = t->inputs[0];
  o.data_path = t->inputs[1];
  o.epochs = p.epochs, o.steps = p.steps, o.batch_size = (int)p.batch_size, o.seq_len = (int)p.seq_len;
  o.lr = p.lr, o.warmup = -1, o.warmup_ratio = p.warmup, o.weight_decay = p.weight_decay, o.seed = p.seed;
  o.lambda = p.lambda, o.threads = g_threads, o.checkpoint_every = p.checkpoint_every, o.keep_checkpoints = 2;
  o.quiet = 1, o.no_signal_handlers = 1;
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = "train"};
  o.progress = fc_daemon_progress, o.progress_ctx = &pr;
  size_t n = strlen(t->outputs[0]);
  char *work = fc_xcalloc(n + 8, 1);
  snprintf(work, n + 8, "%s.train", t->outputs[0]);
  long ck_step = 0;
  char *ck = fc_train_find_checkpoint(work, &ck_step);
  o.resume = ck != NULL;
  free(ck);
  o.out_dir = work;
  fc_tok_t *tok = NULL;
  char *tokp = fc_path_join(t->inputs[0], "tokenizer.json");
  fc_train_encoder_t enc;
  if (fc_path_exists(tokp)) {
    if ((rc = fc_tok_load(&tok, tokp, err))) goto out;
    fc_train_encoder_init(&enc, tok, FC_CHAT_AUTO);
    o.encoder = &enc.enc;
  }
  fc_train_shards_t sh = {0};
  if (t->ninputs > 2) { /* none: plain SFT, the trainer's loss is CE alone */
    fc_config_t cfg;
    if ((rc = fc_config_load(&cfg, t->inputs[0], err))) goto out;
    if ((rc = fc_train_shards_open(&sh, (const char *const *)t->inputs + 2, t->ninputs - 2, cfg.vocab_size, err))) goto out;
    o.targets = &sh.src;
  }
  if (o.resume) fc_info("task %lld: resuming from the checkpoint at step %ld in %s", (long long)t->id, ck_step, work);
  fc_task_figure(ctx, "resumed_from_step", (double)ck_step);
  fc_train_result_t res;
  rc = fc_train_run(&o, &res, err);
  fc_train_shards_close(&sh);
  if (rc == 0) {
    fc_task_figure(ctx, "loss", res.last_loss);
    fc_task_figure(ctx, "tokens_per_s", res.tokens_per_s);
    fc_task_figure(ctx, "ms_per_step", res.ms_per_step);
    fc_task_figure(ctx, "steps", (double)res.steps_done);
    fc_info("task %lld: trained steps %ld..%ld of %ld, loss %.4f, %.0f tokens/s", (long long)t->id, res.start_step,
            res.steps_done, res.total_steps, res.last_loss, res.tokens_per_s);
    if (!(rc = drop_checkpoints(work, err))) rc = fc_outdir_commit(work, t->outputs[0], err);
  }
out:
  fc_tok_destroy(&tok);
  free(tokp);
  free(work);
  return rc;
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  (void)execs, (void)n, (void)err;
  g_threads = c->threads;
  return 0;
}

int main(int argc, char **argv) {
  static const fc_executor_t ex[] = {{"train", NULL, run_train}};
  static const fc_daemon_opt_t opts[] = {
      {.name = "checkpoint-every", .arg = "STEPS", .kind = "train", .param = "checkpoint_every", .dest = &g_defaults}};
  fc_daemon_def_t def = {
      .prog = "fusechat-train",
      .component = "train",
      .description =
          "The training stage daemon: serves tasks of kind 'train'. A task's inputs are the pivot\n"
          "model directory, the training data (JSONL) and the fused top-K stores of the data's\n"
          "shards in order; it fine-tunes the pivot with lambda * CE + (1 - lambda) * fusion loss\n"
          "(no stores: plain SFT) with AdamW and writes the model to the task's output directory.\n"
          "params: the train table of 'fusectl schema' (lambda, training.*), defaults included.\n"
          "\n"
          "Checkpoints go to OUT.train/checkpoint-STEP. A task handed back (SIGTERM, cancel) first\n"
          "checkpoints; a task re-leased after its daemon died resumes from the newest checkpoint\n"
          "and gives the same weights as an uninterrupted run. The finished model is renamed from\n"
          "OUT.train to OUT.\n",
      .opts = opts,
      .nopts = 1,
      .execs = ex,
      .nexecs = 1,
      .setup = setup,
  };
  return fc_daemon_main(argc, argv, &def);
}
