/* fusechat-eval: the evaluation stage daemon (task kind eval): one model on the held-out prompts,
 * exact match and answer loss per task family, written as eval/NAME.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_daemon.h"
#include "fc_eval.h"

static int g_threads;
static fc_eval_params_t g_defaults; /* the schema's, with --max-new-tokens and --batch */

/* inputs: the eval JSONL, the model directory; outputs[0]: the JSON file. params: the eval
 * table (model, the name in the report; max_new_tokens, batch_size, limit). */
static int run_eval(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs != 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "an eval task needs the eval data and the model as inputs, and one output");
  fc_eval_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, &g_defaults, &p, err))) return rc;
  fc_eval_opts_t o;
  fc_eval_opts_default(&o);
  o.max_new_tokens = (int)p.max_new_tokens, o.batch_size = (int)p.batch_size, o.limit = (int)p.limit;
  o.threads = g_threads;
  const char *name = p.model ? p.model : t->inputs[1];
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = name};
  fc_eval_result_t res;
  const char *data = t->inputs[0];
  if ((rc = fc_eval_run(t->inputs[1], &data, 1, &o, fc_daemon_progress, &pr, &res, err))) return rc;
  const char *role = fc_task_param(t, "role");
  snprintf(res.role, sizeof res.role, "%s", role ? role : "");
  const fc_eval_result_t *rp = &res;
  rc = fc_eval_write_json_file(t->outputs[0], &name, &rp, 1, err);
  if (!rc) {
    fc_task_figure(ctx, "accuracy", res.macro_accuracy);
    fc_task_figure(ctx, "loss", res.macro_loss);
    if (res.gen_seconds > 0) fc_task_figure(ctx, "tokens_per_s", (double)res.overall.generated / res.gen_seconds);
    fc_info("task %lld: %s: accuracy %.3f, loss %.4f over %d rows in %.2f s", (long long)t->id, name,
            res.macro_accuracy, res.macro_loss, res.overall.n, res.wall_seconds);
  }
  fc_eval_result_free(&res);
  return rc;
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  (void)execs, (void)n, (void)err;
  g_threads = c->threads;
  return 0;
}

int main(int argc, char **argv) {
  static const fc_executor_t ex[] = {{"eval", NULL, run_eval}};
  static const fc_daemon_opt_t opts[] = {
      {.name = "max-new-tokens", .arg = "N", .kind = "eval", .param = "max_new_tokens", .dest = &g_defaults},
      {.name = "batch", .arg = "N", .kind = "eval", .param = "batch_size", .dest = &g_defaults},
  };
  fc_daemon_def_t def = {
      .prog = "fusechat-eval",
      .component = "eval",
      .description =
          "The evaluation stage daemon: serves tasks of kind 'eval'. A task names the eval data\n"
          "(JSONL of one-turn ShareGPT conversations with a family) and one model directory; the\n"
          "daemon answers every prompt greedily, scores exact match and the loss of the gold answer\n"
          "per family, and writes {\"models\":[...]} to the task's output (eval/NAME.json), which\n"
          "'fusectl report JOB' gathers into the comparison table. A job has one eval task per\n"
          "model, so several eval daemons share the work.\n",
      .opts = opts,
      .nopts = 2,
      .execs = ex,
      .nexecs = 1,
      .setup = setup,
  };
  return fc_daemon_main(argc, argv, &def);
}
