/* fusechat-align: the alignment stage daemon. vocab-map(source): token co-occurrence counts over
 * every shard's pair of stores, summed, into the source -> pivot vocabulary map. align(source,
 * shard): the source's top-K distributions transferred onto the pivot's tokens and fused (MinCE)
 * with the pivot's own, giving the fused store the train task reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_daemon.h"
#include "fc_stage.h"

static int g_threads;
static fc_vocab_map_params_t g_vmap; /* the schema's defaults, with --vocab-map */
static fc_align_params_t g_align;    /* ... with --fuse */

static int need_paths(const char *src_tok, const char *piv_tok, fc_err_t *err) {
  if (!src_tok || !piv_tok) return fc_err_set(err, FC_EINVAL, "the task needs params source_path and pivot_path");
  return 0;
}

/* inputs: (source store, pivot store) of every shard; outputs[0]: the map. Counts go to a work
 * directory beside the output, removed afterwards. */
static int run_vocab_map(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  fc_vocab_map_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, &g_vmap, &p, err)) || (rc = need_paths(p.source_path, p.pivot_path, err))) return rc;
  const char *st = p.source_path, *pt = p.pivot_path, *mname = p.method;
  if (t->ninputs == 0 || t->ninputs % 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a vocab-map task needs (source, pivot) store pairs and one output");
  fc_vmap_method_t method;
  if (fc_vmap_method_parse(mname, &method)) return fc_err_set(err, FC_EINVAL, "unknown vocabulary map method '%s'", mname);
  size_t S = t->ninputs / 2;
  char *work = fc_outdir_begin(t->outputs[0], err);
  if (!work) return FC_EIO;
  char **counts = fc_xcalloc(S, sizeof *counts);
  for (size_t s = 0; s < S && !rc; s++) {
    char name[64];
    snprintf(name, sizeof name, "shard-%04zu.counts", s);
    counts[s] = fc_path_join(work, name);
    fc_stage_count_opts_t o = {.src_tok = st, .piv_tok = pt, .src_topk = t->inputs[2 * s],
                               .piv_topk = t->inputs[2 * s + 1], .out_path = counts[s]};
    fc_daemon_progress_t pr = {.task = ctx, .from = 0.9 * (double)s / (double)S, .to = 0.9 * (double)(s + 1) / (double)S,
                               .stage = "count"};
    rc = fc_stage_vocab_count(&o, fc_daemon_progress, &pr, err);
  }
  char *merged = fc_path_join(work, "all.counts");
  if (!rc && !(rc = fc_task_cancelled(ctx) ? fc_err_set(err, FC_ECANCEL, "cancelled") : 0))
    rc = fc_stage_vocab_merge((const char *const *)counts, (int)S, merged, err);
  if (!rc) {
    fc_task_progress(ctx, 0.92, "map (%s)", mname);
    rc = fc_stage_vocab_map(merged, st, pt, method, g_threads, t->outputs[0], err);
  }
  fc_err_t e2 = {0};
  fc_rmtree(work, &e2);
  for (size_t s = 0; s < S; s++) free(counts[s]);
  free(counts), free(merged), free(work);
  if (!rc) fc_info("task %lld: vocabulary map %s over %zu shards", (long long)t->id, t->outputs[0], S);
  return rc;
}

/* inputs: source store, pivot store, map; outputs[0]: the fused store (pivot + aligned source). */
static int run_align(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  fc_align_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, &g_align, &p, err)) || (rc = need_paths(p.source_path, p.pivot_path, err))) return rc;
  const char *st = p.source_path, *pt = p.pivot_path;
  if (t->ninputs != 3 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "an align task needs the source store, the pivot store and the map, and one output");
  fc_fuse_method_t fm;
  if (fc_fuse_method_parse(p.fuse, &fm)) return fc_err_set(err, FC_EINVAL, "unknown fusion method '%s'", p.fuse);
  size_t n = strlen(t->outputs[0]);
  char *aligned = fc_xcalloc(n + 16, 1);
  snprintf(aligned, n + 16, "%s.aligned", t->outputs[0]);
  fc_xfer_stats_t xs = {0};
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 0.7, .stage = "align"};
  double t0 = fc_now();
  rc = fc_stage_align(t->inputs[0], t->inputs[1], st, pt, t->inputs[2], aligned, 0, &xs, fc_daemon_progress, &pr, err);
  if (!rc) {
    fc_daemon_progress_t pf = {.task = ctx, .from = 0.7, .to = 1, .stage = "fuse"};
    const char *cands[1] = {aligned};
    fc_fuse_summary_t sum = {0};
    rc = fc_stage_fuse(fm, t->inputs[1], cands, 1, t->outputs[0], &sum, fc_daemon_progress, &pf, err);
    if (!rc) {
      fc_task_figure(ctx, "examples", (double)sum.examples);
      fc_task_figure(ctx, "source_wins", (double)sum.wins[1]);
      fc_task_figure(ctx, "dropped_entries", (double)xs.dropped);
      fc_info("task %lld: %s: %llu examples, the source won %llu (MinCE), %.2f s", (long long)t->id, t->outputs[0],
              (unsigned long long)sum.examples, (unsigned long long)sum.wins[1], fc_now() - t0);
    }
  }
  remove(aligned);
  free(aligned);
  return rc;
}

/* A source whose top-K another tool computed (job models[].logits): inputs: the source's model
 * directory (its tokenizer), the data JSONL, the imported file; outputs[0]: the shard's top-K
 * store, as a logits task would write it. Only tokenizers are read, so it runs here rather than
 * on a logits daemon that would load the model. */
static int run_logits_import(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs != 3 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL,
                      "a logits-import task needs the model, the data and the imported file as inputs, and one output");
  fc_logits_import_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, NULL, &p, err))) return rc;
  if (p.shard >= p.shards) return fc_err_set(err, FC_EINVAL, "logits-import task: shard %ld of %ld", p.shard, p.shards);
  const char *piv = p.pivot_path;
  fc_stage_import_opts_t o = {.tok_path = t->inputs[0], .in_path = t->inputs[2], .out_path = t->outputs[0],
                              .model_id = p.model_id};
  o.data = (fc_stage_data_t){.path = t->inputs[1], .pivot_tok = piv && strcmp(piv, t->inputs[0]) ? piv : NULL,
                             .tmpl = FC_CHAT_AUTO, .shard = (uint32_t)p.shard, .n_shards = (uint32_t)p.shards,
                             .max_len = (uint32_t)p.max_len};
  fc_task_progress(ctx, 0.0, "import %s", t->inputs[2]);
  fc_stage_logits_stats_t st = {0};
  if ((rc = fc_stage_logits_import(&o, &st, err))) return rc;
  fc_task_figure(ctx, "examples", (double)st.examples);
  fc_task_figure(ctx, "tokens", (double)st.tokens);
  fc_info("task %lld: %s shard %ld/%ld imported from %s: %llu examples, %llu tokens", (long long)t->id, p.model,
          p.shard, p.shards, t->inputs[2], (unsigned long long)st.examples, (unsigned long long)st.tokens);
  return 0;
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  (void)execs, (void)n, (void)err;
  g_threads = c->threads;
  return 0;
}

int main(int argc, char **argv) {
  static const fc_executor_t ex[] = {
      {"vocab-map", "align", run_vocab_map},
      {"align", "align", run_align},
      {"logits-import", "align", run_logits_import},
  };
  static const fc_daemon_opt_t opts[] = {
      {.name = "vocab-map", .arg = "METHOD", .kind = "vocab-map", .param = "method", .dest = &g_vmap},
      {.name = "fuse", .arg = "METHOD", .kind = "align", .param = "fuse", .dest = &g_align},
  };
  fc_daemon_def_t def = {
      .prog = "fusechat-align",
      .component = "align",
      .description =
          "The alignment stage daemon (capability 'align'), for three task kinds:\n"
          "  logits-import  inputs: a source's model directory, the data and a top-K file made by\n"
          "             another tool (fusectl logits-import's layouts). Checks its texts against\n"
          "             the data's shard and writes the top-K store a logits task would.\n"
          "  vocab-map  inputs: the (source, pivot) top-K stores of every shard. Counts which\n"
          "             source token meets which pivot token in the aligned sequences, sums the\n"
          "             shards and writes the source -> pivot vocabulary map.\n"
          "  align      inputs: the source and pivot stores of one shard and the map. Transfers\n"
          "             the source's distributions onto the pivot's tokens and fuses them with\n"
          "             the pivot's own (MinCE: per example the one with the lower cross-entropy\n"
          "             on the gold tokens), writing the fused store the train task reads.\n"
          "vocab-map and align need params source_path and pivot_path (the models' tokenizers). Outputs are\n"
          "written under temporary names and renamed.\n",
      .opts = opts,
      .nopts = 2,
      .execs = ex,
      .nexecs = 3,
      .setup = setup,
  };
  return fc_daemon_main(argc, argv, &def);
}
