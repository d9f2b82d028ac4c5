/* fusechat-logits: the logits stage daemon for one model. It advertises logits:NAME and runs the
 * job's logits(model, shard) tasks (fc_stage_logits), and with --serve it also answers direct
 * requests on its own socket (fc_serve): text or token ids in, the top-K next-token log-probs
 * out (fc_query). This file is the wiring: options, the task's parameters, the wire format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_chat.h"
#include "fc_daemon.h"
#include "fc_model.h"
#include "fc_query.h"
#include "fc_serve.h"
#include "fc_stage.h"
#include "fc_tok.h"

static const char *g_model_dir, *g_name, *g_serve, *g_serve_allow, *g_serve_key;
static fc_logits_params_t g_defaults; /* the schema's, with --batch */
static int g_threads;
static char g_cap[160];
static fc_executor_t g_exec;

/* ---- the logits task ---- */

/* inputs: the model directory, the data JSONL; outputs[0]: the shard's top-K store. params: the
 * logits table (shard, shards, top_k, max_len, batch, pivot_path: the pivot's template and cut
 * apply to every model). */
static int run_logits(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs != 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a logits task needs the model and the data as inputs, and one output");
  fc_logits_params_t p;
  int rc;
  if ((rc = fc_daemon_task_params(t, &g_defaults, &p, err))) return rc;
  if (p.shard >= p.shards) return fc_err_set(err, FC_EINVAL, "logits task: shard %ld of %ld", p.shard, p.shards);
  fc_stage_logits_opts_t o = {.model_dir = t->inputs[0], .out_path = t->outputs[0], .top_k = (uint32_t)p.top_k,
                              .batch_size = (int)p.batch, .threads = g_threads};
  const char *piv = p.pivot_path;
  o.data = (fc_stage_data_t){.path = t->inputs[1], .pivot_tok = piv && strcmp(piv, t->inputs[0]) ? piv : NULL,
                             .tmpl = FC_CHAT_AUTO, .shard = (uint32_t)p.shard, .n_shards = (uint32_t)p.shards,
                             .max_len = (uint32_t)p.max_len};
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = "logits"};
  fc_stage_logits_stats_t st = {0};
  if ((rc = fc_stage_logits(&o, &st, fc_daemon_progress, &pr, err))) return rc;
  fc_task_figure(ctx, "examples", (double)st.examples);
  fc_task_figure(ctx, "tokens", (double)st.tokens);
  if (st.seconds > 0) fc_task_figure(ctx, "tokens_per_s", (double)st.tokens / st.seconds);
  fc_info("task %lld: %s shard %ld/%ld: %llu examples, %llu tokens in %.2f s", (long long)t->id, g_name, p.shard,
          p.shards, (unsigned long long)st.examples, (unsigned long long)st.tokens, st.seconds);
  return 0;
}

/* ---- direct requests ---- */

static struct {
  fc_serve_t *server;
  fc_model_t *model;
  fc_tok_t *tok;
  fc_chat_template_t tmpl;
} S;

/* logits_request -> logits_reply; errors become an error reply. k defaults to the table's top_k
 * and is bounded by the same limit as the stores. */
static void answer(void *ctx, const fc_msg_t *req, fc_msg_t *rep) {
  (void)ctx;
  fc_err_t err = {0};
  rep->type = FC_MSG_LOGITS_REPLY;
  fc_query_t q = {.text = req->text, .chat = req->state && !strcmp(req->state, "chat"), .ids = req->ids,
                  .nids = req->nids, .k = req->k > 0 ? (int)req->k : (int)g_defaults.top_k,
                  .max_entries = FC_MSG_MAX_BYTES / 2 / 8};
  fc_query_result_t r;
  int rc = 0;
  if (req->type != FC_MSG_LOGITS_REQUEST)
    rc = fc_err_set(&err, FC_EINVAL, "this socket answers logits_request, not %s", fc_msg_type_name(req->type));
  else if (req->k > FC_TOPK_MAX_K)
    rc = fc_err_set(&err, FC_EINVAL, "k is %lld, it must be in [1, %d]", (long long)req->k, FC_TOPK_MAX_K);
  else rc = fc_query_topk(S.model, S.tok, S.tmpl, &q, &r, &err);
  if (rc) {
    rep->ok = false, fc_msg_set_str(&rep->error, err.msg);
    return;
  }
  rep->ok = true, rep->k = r.k;
  fc_msg_set_ids(rep, r.ids, r.n);
  fc_msg_set_top(rep, r.top, r.lp, r.n * (size_t)r.k);
  fc_msg_set_str(&rep->text, g_name);
  fc_query_result_free(&r);
}

static int serve_start(fc_err_t *err) {
  int rc = fc_model_load_mapped(&S.model, g_model_dir, err);
  if (rc) return rc;
  fc_model_set_threads(S.model, g_threads);
  char *tp = fc_path_join(g_model_dir, "tokenizer.json");
  if (fc_path_exists(tp)) rc = fc_tok_load(&S.tok, tp, err);
  free(tp);
  if (rc) return rc;
  if (S.tok) S.tmpl = fc_chat_template_for(S.tok);
  fc_serve_opts_t o = {.endpoint = g_serve, .curve_key = g_serve_key, .curve_allow = g_serve_allow,
                       .error_type = FC_MSG_LOGITS_REPLY, .answer = answer, .what = "direct logits requests"};
  return fc_serve_start(&o, &S.server, err);
}

static void teardown(void) {
  fc_serve_stop(&S.server);
  fc_model_destroy(&S.model);
  fc_tok_destroy(&S.tok);
  memset(&S, 0, sizeof S);
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  g_threads = c->threads;
  for (const char *p = g_name; *p; p++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
      return fc_err_set(err, FC_EINVAL, "--name '%s' may only use letters, digits, '.', '_', '-'", g_name);
  if (!fc_path_exists(g_model_dir)) return fc_err_set(err, FC_EINVAL, "--model %s does not exist", g_model_dir);
  snprintf(g_cap, sizeof g_cap, "logits:%s", g_name);
  g_exec = (fc_executor_t){"logits", g_cap, run_logits};
  *execs = &g_exec, *n = 1;
  if ((g_serve_allow || g_serve_key) && !g_serve) return fc_err_set(err, FC_EINVAL, "--serve-allow and --serve-key go with --serve");
  if (!g_serve_allow != !g_serve_key) return fc_err_set(err, FC_EINVAL, "give both --serve-key and --serve-allow (or neither)");
  if (g_serve) {
    int rc = serve_start(err);
    if (rc) {
      teardown();
      return rc;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static const fc_daemon_opt_t opts[] = {
      {.name = "model", .arg = "DIR", .help = "the model directory (config.json, safetensors, tokenizer.json)",
       .value = &g_model_dir, .required = 1},
      {.name = "name", .arg = "NAME", .help = "the model's name in job specs: the daemon serves capability logits:NAME",
       .value = &g_name, .required = 1},
      {.name = "serve", .arg = "URL", .help = "also answer direct requests (logits_request messages: text or token ids\n"
                                              "in, top-K log-probs out) on this endpoint, e.g. ipc://RUN/logits-NAME.ipc\n"
                                              "or tcp://*:5601 (see 'fusectl query')", .value = &g_serve},
      {.name = "serve-key", .arg = "FILE", .help = "protect --serve with CURVE: this key pair (fusectl keygen) is the server's;\n"
                                                   "clients set FUSECHAT_CURVE_SERVER to its .pub", .value = &g_serve_key},
      {.name = "serve-allow", .arg = "DIR", .help = "with --serve-key: only clients whose public keys are in DIR (*.pub files,\n"
                                                    "or one file of keys) get answers", .value = &g_serve_allow},
      {.name = "batch", .arg = "N", .kind = "logits", .param = "batch", .dest = &g_defaults},
  };
  fc_daemon_def_t def = {
      .prog = "fusechat-logits",
      .component = "logits",
      .description =
          "The logits stage daemon for one model: serves tasks of kind 'logits' for capability\n"
          "logits:NAME. A task runs the model over one shard of the job's data (rendered with the\n"
          "pivot's chat template, cut at max_len pivot tokens) and writes the top-K next-token\n"
          "log-probs of every position to a top-K store, atomically. Run one per model of a job\n"
          "(or several for a big model: they share its shards).\n",
      .opts = opts,
      .nopts = sizeof opts / sizeof *opts,
      .setup = setup,
      .teardown = teardown,
      .extra_help = "Direct requests: a logits_request carries text (with state \"chat\": rendered as one\n"
                    "user turn and the open assistant header of the model's chat template) or ids, and k\n"
                    "(default: the top_k default of 'fusectl schema', at most the stores' limit); the\n"
                    "logits_reply has the ids and, per position, the k most likely next ids and their\n"
                    "log-probs. Malformed requests get an error reply; the daemon keeps serving.\n",
  };
  return fc_daemon_main(argc, argv, &def);
}
