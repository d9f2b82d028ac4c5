/* fusechat-merge: the merge stage daemon (task kind merge): merges the pivot and the trained
 * target models with fc_merge_run, the method and its parameters taken from the task. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_daemon.h"
#include "fc_merge.h"

static int g_threads;

/* inputs: base (the pivot), then the models; outputs[0]: the merged model directory.
 * params: the merge table (method, weight and density for every model) and the method's own
 * parameters (fc_merge_set_param names). */
static int run_merge(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs < 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a merge task needs a base and at least one model, and one output");
  fc_merge_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, NULL, &p, err))) return rc;
  const char *method = p.method;
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  /* A job's "sce" is FuseChat's release, whose code produced the paper's numbers: the variance
   * selection only sets the weights, so the merge keeps the whole of each target's delta.
   * "sce-mergekit" is fc_merge's (and a mergekit config's) sce: unselected deltas are zeroed.
   * An explicit sce_mask_scope parameter still decides. */
  if (!strcmp(method, "sce")) {
    cfg.method = FC_MERGE_SCE;
    cfg.sce_mask_scope = FC_SCE_SCOPE_WEIGHTS;
  } else if (!strcmp(method, "sce-mergekit")) {
    cfg.method = FC_MERGE_SCE;
    cfg.sce_mask_scope = FC_SCE_SCOPE_DELTAS;
  } else if (fc_merge_method_parse(method, &cfg.method)) {
    return fc_err_set(err, FC_EINVAL, "unknown merge method '%s'", method);
  }
  /* the method's own parameters (the merge table is open): the merge floor checks them */
  for (size_t i = 0; i < t->nparams; i++)
    if (!fc_schema_param(fc_schema_find("merge"), t->params[i].key) &&
        (rc = fc_merge_set_param(&cfg, t->params[i].key, t->params[i].val, err)))
      return rc;
  /* DARE and TIES need a kept fraction below 1 to do anything; mergekit makes it required, the
   * job's baselines name only the method: 0.5 is the value the mergekit examples use */
  double weight = p.weight, density = p.density;
  if (density < 0)
    density = cfg.method == FC_MERGE_TIES || cfg.method == FC_MERGE_DARE_TIES || cfg.method == FC_MERGE_DARE_LINEAR ? 0.5 : 1;
  size_t n = t->ninputs - 1;
  fc_merge_model_t *models = fc_xcalloc(n, sizeof *models);
  for (size_t i = 0; i < n; i++) models[i] = (fc_merge_model_t){.path = t->inputs[1 + i], .weight = weight, .density = density};
  cfg.base = t->inputs[0];
  cfg.models = models;
  cfg.nmodels = (int)n;
  cfg.threads = g_threads;
  if (fc_merge_method_pairwise(cfg.method) && n != 1) {
    free(models);
    return fc_err_set(err, FC_EINVAL, "%s merges the base with exactly one model, not %zu",
                      fc_merge_method_name(cfg.method), n);
  }
  fc_merge_stats_t stats = {0};
  cfg.stats = &stats;
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = method};
  cfg.progress = fc_daemon_progress;
  cfg.progress_ctx = &pr;
  char *tmp = fc_outdir_begin(t->outputs[0], err);
  if (!tmp) {
    free(models);
    return FC_EIO;
  }
  rc = fc_merge_run(&cfg, tmp, err);
  if (rc == 0) rc = fc_outdir_commit(tmp, t->outputs[0], err);
  else fc_rmtree(tmp, &(fc_err_t){0});
  if (rc == 0) {
    fc_task_figure(ctx, "seconds", stats.seconds);
    if (stats.seconds > 0) fc_task_figure(ctx, "input_mb_per_s", stats.bytes_in / stats.seconds / 1e6);
    fc_info("task %lld: merged %d models (%s) into %s in %.2f s", (long long)t->id, cfg.nmodels, method,
            t->outputs[0], stats.seconds);
  }
  free(tmp);
  free(models);
  return rc;
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  (void)execs, (void)n, (void)err;
  g_threads = c->threads;
  return 0;
}

int main(int argc, char **argv) {
  static const fc_executor_t ex[] = {{"merge", NULL, run_merge}};
  fc_daemon_def_t def = {
      .prog = "fusechat-merge",
      .component = "merge",
      .description =
          "The merge stage daemon: serves tasks of kind 'merge'. A task names the base model (the\n"
          "pivot) as its first input and the trained target models after it; params.method is one\n"
          "of sce (FuseChat's release: the selection sets the weights only), sce-mergekit (mergekit's\n"
          "sce: unselected deltas zeroed), varm, linear, task_arithmetic, ties, dare_ties,\n"
          "dare_linear, slerp,\n"
          "other params are the method's (select_topk, t, normalize, rescale, seed; weight and\n"
          "density apply to every model; ties/dare default to density 0.5). The merged model is\n"
          "written to OUT.tmp and renamed to the task's output directory when complete.\n",
      .execs = ex,
      .nexecs = 1,
      .setup = setup,
  };
  return fc_daemon_main(argc, argv, &def);
}
