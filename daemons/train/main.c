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
static const char *g_ckpt_every = "20";

/* The fused stores of consecutive shards (contiguous row blocks, in order) as one target source. */
typedef struct shards {
  fc_targets_source_t src;
  fc_train_topk_t *s;
  size_t *first; /* [n + 1]: first data line of each shard */
  size_t n;
} shards_t;

static int shards_fill(void *ctx, size_t line, const int32_t *tokens, size_t ntokens, int32_t *ids, float *lp,
                       fc_err_t *err) {
  shards_t *sh = ctx;
  for (size_t i = 0; i < sh->n; i++)
    if (line < sh->first[i + 1])
      return sh->s[i].src.fill(sh->s[i].src.ctx, line - sh->first[i], tokens, ntokens, ids, lp, err);
  return fc_err_set(err, FC_EMISMATCH, "data line %zu is beyond the fused stores (%zu examples)", line,
                    sh->first[sh->n]);
}

static void shards_close(shards_t *sh) {
  for (size_t i = 0; i < sh->n; i++) fc_train_topk_close(&sh->s[i]);
  free(sh->s), free(sh->first);
  memset(sh, 0, sizeof *sh);
}

static int shards_open(shards_t *sh, char *const *paths, size_t n, int vocab, fc_err_t *err) {
  memset(sh, 0, sizeof *sh);
  sh->s = fc_xcalloc(n, sizeof *sh->s);
  sh->first = fc_xcalloc(n + 1, sizeof *sh->first);
  for (size_t i = 0; i < n; i++) {
    int rc = fc_train_topk_open(&sh->s[i], paths[i], vocab, err);
    if (rc) return shards_close(sh), rc;
    sh->n = i + 1;
    if (i && sh->s[i].src.K != sh->s[0].src.K)
      return shards_close(sh), fc_err_set(err, FC_EMISMATCH, "%s: K %d, the first shard has %d", paths[i],
                                          sh->s[i].src.K, sh->s[0].src.K);
    sh->first[i + 1] = sh->first[i] + fc_topk_count(sh->s[i].r);
  }
  sh->src = (fc_targets_source_t){.ctx = sh, .K = sh->s[0].src.K, .fill = shards_fill};
  return 0;
}

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
 * outputs[0]: the trained model directory. Work (checkpoints) goes to the attempt's work
 * directory (OUT.work/ATTEMPT, taking over the previous attempt's), renamed to OUT when done. */
static int run_train(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs < 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a train task needs the pivot and the data as inputs, and one output");
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  long epochs, batch, seq, steps, ckpt, seed;
  double lambda, lr, warmup, wd;
  int rc;
  if ((rc = fc_task_param_long(t, "epochs", 1, &epochs, err)) || (rc = fc_task_param_long(t, "batch_size", 4, &batch, err)) ||
      (rc = fc_task_param_long(t, "seq_len", 512, &seq, err)) || (rc = fc_task_param_long(t, "steps", 0, &steps, err)) ||
      (rc = fc_task_param_long(t, "checkpoint_every", atol(g_ckpt_every), &ckpt, err)) ||
      (rc = fc_task_param_long(t, "seed", 42, &seed, err)) ||
      (rc = fc_task_param_double(t, "lambda", 0.9, &lambda, err)) || (rc = fc_task_param_double(t, "lr", 1e-5, &lr, err)) ||
      (rc = fc_task_param_double(t, "warmup", 0.03, &warmup, err)) ||
      (rc = fc_task_param_double(t, "weight_decay", 0, &wd, err)))
    return rc;
  if (epochs < 1 || batch < 1 || seq < 2 || steps < 0 || ckpt < 0 || seed < 0 || !(lambda >= 0 && lambda <= 1) ||
      !(lr >= 0) || !(warmup >= 0 && warmup <= 1))
    return fc_err_set(err, FC_EINVAL, "train task parameters out of range");
  o.model_dir = t->inputs[0];
  o.data_path = t->inputs[1];
  o.epochs = (double)epochs, o.steps = steps, o.batch_size = (int)batch, o.seq_len = (int)seq;
  o.lr = lr, o.warmup = -1, o.warmup_ratio = warmup, o.weight_decay = wd, o.seed = (uint64_t)seed;
  o.lambda = lambda, o.threads = g_threads, o.checkpoint_every = ckpt, o.keep_checkpoints = 2;
  o.quiet = 1, o.no_signal_handlers = 1;
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = "train"};
  o.progress = fc_daemon_progress, o.progress_ctx = &pr;
  /* this attempt's own directory, continuing the newest earlier attempt's checkpoints */
  if ((rc = fc_task_adopt_work(t, err))) return rc;
  char *work = fc_xstrdup(t->work_dir);
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
  shards_t sh = {0};
  if (t->ninputs > 2) {
    fc_config_t cfg;
    if ((rc = fc_config_load(&cfg, t->inputs[0], err))) goto out;
    if ((rc = shards_open(&sh, t->inputs + 2, t->ninputs - 2, cfg.vocab_size, err))) goto out;
    o.targets = &sh.src;
  } else {
    o.lambda = 1; /* plain SFT */
  }
  if (o.resume) fc_info("task %lld: resuming from the checkpoint at step %ld in %s", (long long)t->id, ck_step, work);
  fc_task_figure(ctx, "resumed_from_step", (double)ck_step);
  fc_train_result_t res;
  rc = fc_train_run(&o, &res, err);
  shards_close(&sh);
  if (rc == 0) {
    fc_task_figure(ctx, "loss", res.last_loss);
    fc_task_figure(ctx, "tokens_per_s", res.tokens_per_s);
    fc_task_figure(ctx, "ms_per_step", res.ms_per_step);
    fc_task_figure(ctx, "steps", (double)res.steps_done);
    fc_info("task %lld: trained steps %ld..%ld of %ld, loss %.4f, %.0f tokens/s", (long long)t->id, res.start_step,
            res.steps_done, res.total_steps, res.last_loss, res.tokens_per_s);
    if (!fc_task_fence(ctx)) rc = fc_err_set(err, FC_ECANCEL, "the lease is gone");
    else if (!(rc = drop_checkpoints(work, err))) rc = fc_outdir_commit(work, t->outputs[0], err);
  }
out:
  fc_tok_destroy(&tok);
  free(tokp);
  free(work);
  return rc;
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  (void)execs, (void)n;
  g_threads = c->threads;
  char *end;
  long v = strtol(g_ckpt_every, &end, 10);
  if (*end || end == g_ckpt_every || v < 0)
    return fc_err_set(err, FC_EINVAL, "--checkpoint-every wants a number of steps, not '%s'", g_ckpt_every);
  return 0;
}

int main(int argc, char **argv) {
  static const fc_executor_t ex[] = {{"train", NULL, run_train}};
  static const fc_daemon_opt_t opts[] = {
      {"checkpoint-every", "STEPS", "checkpoint every STEPS optimizer steps, for tasks whose params do not\n"
                                    "say (default 20; 0: only when stopped)", &g_ckpt_every, 0}};
  fc_daemon_def_t def = {
      .prog = "fusechat-train",
      .component = "train",
      .description =
          "The training stage daemon: serves tasks of kind 'train'. A task's inputs are the pivot\n"
          "model directory, the training data (JSONL) and the fused top-K stores of the data's\n"
          "shards in order; it fine-tunes the pivot with lambda * CE + (1 - lambda) * fusion loss\n"
          "(no stores: plain SFT) with AdamW and writes the model to the task's output directory.\n"
          "params: lambda, epochs (or steps), lr, batch_size, seq_len, warmup (ratio), weight_decay,\n"
          "seed, checkpoint_every.\n"
          "\n"
          "Checkpoints go to OUT.work/ATTEMPT/checkpoint-STEP. A task handed back (SIGTERM, cancel) first\n"
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
