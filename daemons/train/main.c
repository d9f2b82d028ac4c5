/* fusechat-train: the training stage daemon (task kind train): fine-tunes the pivot on the data
 * with lambda * CE + (1 - lambda) * fusion against the fused top-K stores of its inputs (none:
 * plain SFT), checkpointing into the task's work directory so a re-leased task resumes. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fc_config.h"
#include "fc_daemon.h"
#include "fc_dist.h"
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
 * outputs[0]: the trained model directory. Work (checkpoints) goes to the attempt's work
 * directory (OUT.work/ATTEMPT, taking over the previous attempt's), renamed to OUT when done. */
static int launch_ranks(const fc_task_t *t, fc_task_ctx_t *ctx, int ranks, fc_err_t *err);

/* The training itself, in the daemon (ctx set) or as one rank of a launch (ctx NULL, comm set). */
static int train_task(const fc_task_t *t, fc_task_ctx_t *ctx, const fc_comm_t *comm, fc_err_t *err) {
  if (t->ninputs < 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a train task needs the pivot and the data as inputs, and one output");
  fc_train_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, &g_defaults, &p, err))) return rc;
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  if (p.ranks > p.batch_size)
    return fc_err_set(err, FC_EINVAL, "train task: ranks %ld exceeds batch_size %ld (each rank needs a row of every step)",
                      p.ranks, p.batch_size);
  if (p.ranks > 1 && !comm) return launch_ranks(t, ctx, (int)p.ranks, err);
  o.comm = comm;
  o.model_dir = t->inputs[0];
  o.data_path = t->inputs[1];
  o.epochs = p.epochs, o.steps = p.steps, o.batch_size = (int)p.batch_size, o.seq_len = (int)p.seq_len;
  o.lr = p.lr, o.warmup = -1, o.warmup_ratio = p.warmup, o.weight_decay = p.weight_decay, o.seed = p.seed;
  o.lambda = p.lambda, o.threads = g_threads, o.checkpoint_every = p.checkpoint_every, o.keep_checkpoints = 2;
  o.quiet = 1, o.no_signal_handlers = ctx != NULL; /* a rank checkpoints on SIGTERM itself */
  o.checkpoint_activations = p.checkpoint_activations;
  o.fused_optimizer = p.fused_optimizer;
  if (fc_dtype_parse(p.optimizer_dtype, &o.optimizer_dtype) != 0) /* the schema's choices are dtype names */
    return fc_err_set(err, FC_EINVAL, "optimizer_dtype '%s' is not a dtype", p.optimizer_dtype);
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = "train"};
  if (ctx) o.progress = fc_daemon_progress, o.progress_ctx = &pr;
  if (!t->work_dir) return fc_err_set(err, FC_EINVAL, "train task %lld has no work directory", (long long)t->id);
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
  fc_train_shards_t sh = {0};
  if (t->ninputs > 2) { /* none: plain SFT, the trainer's loss is CE alone */
    fc_config_t cfg;
    if ((rc = fc_config_load(&cfg, t->inputs[0], err))) goto out;
    if ((rc = fc_train_shards_open(&sh, (const char *const *)t->inputs + 2, t->ninputs - 2, cfg.vocab_size, err))) goto out;
    o.targets = &sh.src;
  }
  if (o.resume) fc_info("task %lld: resuming from the checkpoint at step %ld in %s", (long long)t->id, ck_step, work);
  if (ctx) fc_task_figure(ctx, "resumed_from_step", (double)ck_step);
  fc_train_result_t res;
  rc = fc_train_run(&o, &res, err);
  fc_train_shards_close(&sh);
  if (rc == 0 && ctx) {
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

/* The daemon's executor: this attempt's own directory, continuing the newest earlier attempt's
 * checkpoints (shared by the ranks when the task is launched on several). */
static int run_train(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  int rc = fc_task_adopt_work(t, err);
  return rc ? rc : train_task(t, ctx, NULL, err);
}

/* A task asking for ranks > 1 runs as `LAUNCHER fusechat-train --rank-task ...` (srun inside a
 * Slurm allocation, else mpirun): the ranks train into the attempt's work directory, checkpointing on SIGTERM (which
 * the launcher forwards when the task is cancelled or the daemon stops), and this process
 * commits the model when they all succeed. */
static int launch_ranks(const fc_task_t *t, fc_task_ctx_t *ctx, int ranks, fc_err_t *err) {
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return fc_err_set(err, FC_EIO, "cannot find the fusechat-train executable");
  self[len] = 0;
  size_t n = 0, cap = 16 + 2 * (t->nparams + t->ninputs); /* 11 fixed words, the NULL, some room */
  char **cmd = fc_xcalloc(cap, sizeof *cmd), num[32], idbuf[32];
  snprintf(idbuf, sizeof idbuf, "%lld", (long long)t->id);
  snprintf(num, sizeof num, "%d", g_threads);
  cmd[n++] = self, cmd[n++] = "--rank-task", cmd[n++] = idbuf, cmd[n++] = "--threads", cmd[n++] = num;
  char **kv = fc_xcalloc(t->nparams + 1, sizeof *kv);
  for (size_t i = 0; i < t->nparams; i++) {
    size_t l = strlen(t->params[i].key) + strlen(t->params[i].val) + 2;
    kv[i] = fc_xmalloc(l);
    snprintf(kv[i], l, "%s=%s", t->params[i].key, t->params[i].val);
    cmd[n++] = "--param", cmd[n++] = kv[i];
  }
  char ckpt[48]; /* the daemon's --checkpoint-every reaches the ranks, which start from the schema's */
  snprintf(ckpt, sizeof ckpt, "checkpoint_every=%ld", g_defaults.checkpoint_every);
  if (!fc_kv_get(t->params, t->nparams, "checkpoint_every")) cmd[n++] = "--param", cmd[n++] = ckpt;
  for (size_t i = 0; i < t->ninputs; i++) cmd[n++] = "--in", cmd[n++] = t->inputs[i];
  cmd[n++] = "--out", cmd[n++] = t->outputs[0];
  cmd[n++] = "--work", cmd[n++] = (char *)t->work_dir;
  char **argv = fc_dist_launch_argv(ranks, g_threads, cmd, err);
  for (size_t i = 0; i < t->nparams; i++) free(kv[i]);
  free(kv), free(cmd);
  if (!argv) return err->code;
  fc_info("task %lld: training on %d ranks with %s", (long long)t->id, ranks, argv[0]);
  fc_task_progress(ctx, 0, "train on %d ranks (%s)", ranks, argv[0]);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execvp(argv[0], argv);
    fprintf(stderr, "fusechat-train: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int rc = 0, status = 0, signalled = 0;
  if (pid < 0) rc = fc_err_set(err, FC_EIO, "fork: %s", strerror(errno));
  while (pid > 0) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) break;
    if (!signalled && fc_task_cancelled(ctx)) {
      kill(pid, SIGTERM); /* the launcher forwards it: every rank checkpoints and stops */
      signalled = 1;
    }
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  if (pid > 0 && rc == 0) {
    if (signalled) rc = fc_err_set(err, FC_ECANCEL, "train task %lld cancelled (the ranks checkpointed)", (long long)t->id);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      rc = fc_err_set(err, FC_EIO, "the %d training ranks failed (%s %d; their log is above)", ranks,
                      WIFEXITED(status) ? "exit status" : "signal",
                      WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
  fc_dist_argv_free(argv);
  if (rc) return rc;
  fc_task_figure(ctx, "ranks", (double)ranks);
  if (!fc_task_fence(ctx)) return fc_err_set(err, FC_ECANCEL, "the lease is gone");
  if (!(rc = drop_checkpoints(t->work_dir, err))) rc = fc_outdir_commit(t->work_dir, t->outputs[0], err);
  return rc;
}

/* fusechat-train --rank-task ID --threads N [--param K=V]... --in PATH... --out PATH --work DIR: one rank
 * of a data-parallel train task (started by launch_ranks through srun or mpirun). */
static int rank_main(int argc, char **argv) {
  fc_task_t t = {.kind = "train"};
  fc_msg_kv_t *params = fc_xcalloc((size_t)argc, sizeof *params);
  char **ins = fc_xcalloc((size_t)argc, sizeof *ins), *out[1] = {NULL};
  size_t np = 0, ni = 0;
  g_threads = 1;
  fc_schema_defaults(fc_schema_find("train"), &g_defaults);
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--param")) {
      char *eq = strchr(argv[i + 1], '=');
      if (!eq) break;
      *eq = 0;
      params[np].key = argv[i + 1], params[np++].val = eq + 1;
    } else if (!strcmp(argv[i], "--in")) ins[ni++] = argv[i + 1];
    else if (!strcmp(argv[i], "--out")) out[0] = argv[i + 1];
    else if (!strcmp(argv[i], "--work")) t.work_dir = argv[i + 1];
    else if (!strcmp(argv[i], "--threads")) g_threads = atoi(argv[i + 1]);
  }
  t.id = argc > 2 ? atoll(argv[2]) : 0;
  t.params = params, t.nparams = np, t.inputs = ins, t.ninputs = ni, t.outputs = out, t.noutputs = 1;
  fc_err_t err = {0};
  fc_comm_t *comm = NULL;
  int rc = out[0] ? fc_dist_init(NULL, NULL, &comm, &err) : fc_err_set(&err, FC_EINVAL, "--rank-task needs --out");
  if (rc == 0 && comm->size < 2) rc = fc_err_set(&err, FC_EINVAL, "--rank-task runs under srun or mpirun");
  if (rc == 0) rc = train_task(&t, NULL, comm, &err);
  if (rc) fprintf(stderr, "fusechat-train: rank %d: %s\n", comm ? comm->rank : 0, err.msg);
  fc_dist_finalize(&comm);
  free(params), free(ins);
  return rc ? 1 : 0;
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  (void)execs, (void)n, (void)err;
  g_threads = c->threads;
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--rank-task")) return rank_main(argc, argv);
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
          "A task with ranks > 1 (training.ranks) runs as that many data-parallel MPI ranks:\n"
          "the daemon starts them with srun inside a Slurm allocation, else mpirun\n"
          "(FUSECHAT_LAUNCHER chooses), as fusechat-train --rank-task; they share the\n"
          "attempt's checkpoints, and the model equals a one-process run within float rounding.\n"
          "\n"
          "Checkpoints go to OUT.work/ATTEMPT/checkpoint-STEP. A task handed back (SIGTERM, cancel) first\n"
          "checkpoints; a task re-leased after its daemon died resumes from the newest checkpoint\n"
          "and gives the same weights as an uninterrupted run. The finished model is renamed from\n"
          "the work directory to OUT.\n",
      .opts = opts,
      .nopts = 1,
      .execs = ex,
      .nexecs = 1,
      .setup = setup,
  };
  return fc_daemon_main(argc, argv, &def);
}
