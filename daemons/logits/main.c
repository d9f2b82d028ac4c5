/* fusechat-logits: the logits stage daemon for one model. It advertises logits:NAME and runs the
 * job's logits(model, shard) tasks (fc_stage_logits), and with --serve it also answers direct
 * requests on its own socket: text or token ids in, the top-K next-token log-probs out. */
#include "fc_stage.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fc_chat.h"
#include "fc_daemon.h"
#include "fc_model.h"
#include "fc_net.h"
#include "fc_tok.h"

static const char *g_model_dir, *g_name, *g_serve, *g_serve_allow, *g_serve_key, *g_batch = "8";
static int g_threads;
static char g_cap[160];
static fc_executor_t g_exec;

/* ---- the logits task ---- */

/* inputs: the model directory, the data JSONL; outputs[0]: the shard's top-K store. params: shard,
 * shards, top_k, max_len, pivot_path (the pivot's template and cut apply to every model). */
static int run_logits(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->ninputs != 2 || t->noutputs != 1)
    return fc_err_set(err, FC_EINVAL, "a logits task needs the model and the data as inputs, and one output");
  long shard, shards, k, max_len, batch = atol(g_batch);
  int rc;
  if ((rc = fc_task_param_long(t, "shard", 0, &shard, err)) || (rc = fc_task_param_long(t, "shards", 1, &shards, err)) ||
      (rc = fc_task_param_long(t, "top_k", 10, &k, err)) || (rc = fc_task_param_long(t, "max_len", 0, &max_len, err)))
    return rc;
  if (shards < 1 || shard < 0 || shard >= shards || k < 1 || k > 256 || max_len < 0)
    return fc_err_set(err, FC_EINVAL, "logits task parameters out of range (shard %ld of %ld, top_k %ld)", shard, shards, k);
  fc_stage_logits_opts_t o = {.model_dir = t->inputs[0], .out_path = t->outputs[0], .top_k = (uint32_t)k,
                              .batch_size = (int)batch, .threads = g_threads};
  const char *piv = fc_task_param(t, "pivot_path");
  o.data = (fc_stage_data_t){.path = t->inputs[1], .pivot_tok = piv && strcmp(piv, t->inputs[0]) ? piv : NULL,
                             .tmpl = FC_CHAT_AUTO, .shard = (uint32_t)shard, .n_shards = (uint32_t)shards,
                             .max_len = (uint32_t)max_len};
  fc_daemon_progress_t pr = {.task = ctx, .from = 0, .to = 1, .stage = "logits"};
  fc_stage_logits_stats_t st = {0};
  if ((rc = fc_stage_logits(&o, &st, fc_daemon_progress, &pr, err))) return rc;
  fc_task_figure(ctx, "examples", (double)st.examples);
  fc_task_figure(ctx, "tokens", (double)st.tokens);
  if (st.seconds > 0) fc_task_figure(ctx, "tokens_per_s", (double)st.tokens / st.seconds);
  fc_info("task %lld: %s shard %ld/%ld: %llu examples, %llu tokens in %.2f s", (long long)t->id, g_name, shard,
          shards, (unsigned long long)st.examples, (unsigned long long)st.tokens, st.seconds);
  return 0;
}

/* ---- direct requests ---- */

static struct {
  pthread_t thread;
  atomic_int stop;
  void *zctx, *sock, *zap;
  fc_curve_allow_t allow;
  fc_model_t *model;
  fc_tok_t *tok;
  fc_chat_template_t tmpl;
  int running;
} S;

#define SERVE_MAX_K 256

/* Fills rep from req; errors become an error reply. */
static void answer(const fc_msg_t *req, fc_msg_t *rep) {
  fc_err_t err = {0};
  int32_t *ids = NULL;
  size_t n = 0;
  int rc = 0;
  rep->type = FC_MSG_LOGITS_REPLY;
  int k = req->k > 0 ? (int)req->k : 10;
  const fc_config_t *cfg = fc_model_config(S.model);
  if (req->type != FC_MSG_LOGITS_REQUEST) {
    rc = fc_err_set(&err, FC_EINVAL, "this socket answers logits_request, not %s", fc_msg_type_name(req->type));
  } else if (req->text && req->nids) {
    rc = fc_err_set(&err, FC_EINVAL, "give text or ids, not both");
  } else if (req->text) {
    if (!S.tok) {
      rc = fc_err_set(&err, FC_EINVAL, "the model has no tokenizer.json: send ids");
    } else if (req->state && !strcmp(req->state, "chat")) {
      char *txt;
      size_t len;
      if (!(rc = fc_chat_render_prompt(S.tmpl, NULL, req->text, &txt, &len, &err))) {
        rc = fc_tok_encode(S.tok, txt, len, FC_TOK_PARSE_SPECIAL, &ids, NULL, &n, &err);
        free(txt);
      }
    } else {
      rc = fc_tok_encode(S.tok, req->text, strlen(req->text), FC_TOK_ADD_SPECIAL, &ids, NULL, &n, &err);
    }
  } else if (req->nids) {
    n = req->nids;
    ids = fc_xmalloc(n * sizeof *ids);
    memcpy(ids, req->ids, n * sizeof *ids);
    for (size_t i = 0; i < n && !rc; i++)
      if (ids[i] < 0 || ids[i] >= cfg->vocab_size)
        rc = fc_err_set(&err, FC_EINVAL, "token id %d at %zu is outside the vocabulary (%d)", ids[i], i, cfg->vocab_size);
  } else {
    rc = fc_err_set(&err, FC_EINVAL, "a logits_request needs text or ids");
  }
  if (!rc && n == 0) rc = fc_err_set(&err, FC_EINVAL, "no tokens");
  if (!rc && (int64_t)n > cfg->max_position_embeddings)
    rc = fc_err_set(&err, FC_EINVAL, "%zu tokens, the model takes at most %d", n, cfg->max_position_embeddings);
  if (!rc && k > cfg->vocab_size) k = cfg->vocab_size;
  if (!rc && (size_t)k * n * 8 > FC_MSG_MAX_BYTES / 2)
    rc = fc_err_set(&err, FC_EINVAL, "%zu tokens x top-%d do not fit one reply", n, k);
  if (!rc) {
    int32_t *top = fc_xmalloc(n * (size_t)k * sizeof *top);
    float *lp = fc_xmalloc(n * (size_t)k * sizeof *lp);
    rc = fc_model_forward_topk(S.model, ids, 1, (int)n, k, NULL, top, lp, NULL, &err);
    if (!rc) {
      rep->ok = true, rep->k = k;
      fc_msg_set_ids(rep, ids, n);
      fc_msg_set_top(rep, top, lp, n * (size_t)k);
      fc_msg_set_str(&rep->text, g_name);
    }
    free(top), free(lp);
  }
  if (rc) rep->ok = false, fc_msg_set_str(&rep->error, err.msg);
  free(ids);
}

/* ZAP (RFC 27) for the CURVE-protected socket: 200 for allow-listed client keys, 400 else. */
static void zap_answer(void) {
  zmq_msg_t f[8];
  int n = 0, more = 1;
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, S.zap, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      break;
    }
    more = zmq_msg_more(&m);
    if (n < 8) f[n++] = m;
    else zmq_msg_close(&m);
  }
  if (n >= 2) {
    int ok = n >= 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
             zmq_msg_size(&f[6]) == 32 && fc_curve_allowed(&S.allow, zmq_msg_data(&f[6]));
    if (!ok) fc_warn("direct requests: refused a client that is not in the allow-list");
    zmq_send(S.zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(S.zap, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
    zmq_send(S.zap, ok ? "200" : "400", 3, ZMQ_SNDMORE);
    zmq_send(S.zap, ok ? "OK" : "not allowed", ok ? 2 : 11, ZMQ_SNDMORE);
    zmq_send(S.zap, "", 0, ZMQ_SNDMORE);
    zmq_send(S.zap, "", 0, 0);
  }
  for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

static void *serve_main(void *arg) {
  (void)arg;
  while (!atomic_load(&S.stop)) {
    zmq_pollitem_t it[2] = {{S.sock, 0, ZMQ_POLLIN, 0}, {S.zap, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(it, S.zap ? 2 : 1, 200) <= 0) continue;
    if (S.zap && (it[1].revents & ZMQ_POLLIN)) zap_answer();
    if (!(it[0].revents & ZMQ_POLLIN)) continue;
    /* envelope frames, then the message; a malformed request gets an error reply */
    zmq_msg_t fr[8];
    int nf = 0, more = 1;
    while (more) {
      zmq_msg_t *f = &fr[nf < 8 ? nf : 7];
      if (nf >= 8) zmq_msg_close(f);
      zmq_msg_init(f);
      if (zmq_msg_recv(f, S.sock, 0) < 0) {
        zmq_msg_close(f);
        break;
      }
      more = zmq_msg_more(f);
      if (nf < 8) nf++;
    }
    if (nf < 2) { /* a ROUTER always gives the identity first */
      for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
      continue;
    }
    fc_msg_t req, rep = {0};
    fc_err_t err = {0};
    if (fc_msg_decode(zmq_msg_data(&fr[nf - 1]), zmq_msg_size(&fr[nf - 1]), &req, &err)) {
      rep.type = FC_MSG_LOGITS_REPLY;
      rep.ok = false;
      fc_msg_set_str(&rep.error, err.msg);
      fc_warn("direct request: %s", err.msg);
    } else {
      double t0 = fc_now();
      answer(&req, &rep);
      fc_debug("direct request: %zu tokens, %s in %.1f ms", rep.nids, rep.ok ? "ok" : rep.error, 1e3 * (fc_now() - t0));
      fc_msg_clear(&req);
    }
    const void *env[7];
    size_t envlen[7];
    for (int i = 0; i < nf - 1; i++) env[i] = zmq_msg_data(&fr[i]), envlen[i] = zmq_msg_size(&fr[i]);
    if (fc_net_send(S.sock, env, envlen, (size_t)(nf - 1), &rep, &err)) fc_warn("direct reply: %s", err.msg);
    fc_msg_clear(&rep);
    for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
  }
  return NULL;
}

static int serve_start(const char *endpoint, fc_err_t *err) {
  int rc = fc_model_load(&S.model, g_model_dir, err);
  if (rc) return rc;
  fc_model_set_threads(S.model, g_threads);
  char *tp = fc_path_join(g_model_dir, "tokenizer.json");
  if (fc_path_exists(tp) && (rc = fc_tok_load(&S.tok, tp, err))) {
    free(tp);
    return rc;
  }
  free(tp);
  if (S.tok) S.tmpl = fc_chat_template_for(S.tok);
  S.zctx = zmq_ctx_new();
  fc_curve_t curve = {0};
  if (g_serve_allow) { /* CURVE: the handler must be bound before the socket it guards */
    if ((rc = fc_curve_load_pair(g_serve_key, &curve, err))) return rc;
    curve.enabled = 1;
    if ((rc = fc_curve_allow_load(g_serve_allow, &S.allow, err))) return rc;
    S.zap = zmq_socket(S.zctx, ZMQ_REP);
    if (zmq_bind(S.zap, "inproc://zeromq.zap.01") != 0)
      return fc_err_set(err, FC_EIO, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
  } else if (!strncmp(endpoint, "tcp://", 6)) {
    fc_warn("direct requests on %s are open to anyone who can connect: give --serve-allow DIR", endpoint);
  }
  S.sock = zmq_socket(S.zctx, ZMQ_ROUTER);
  if (S.zap && (rc = fc_curve_apply_server(S.sock, &curve, err))) return rc;
  int linger = 0;
  zmq_setsockopt(S.sock, ZMQ_LINGER, &linger, sizeof linger);
  int64_t maxsz = FC_MSG_MAX_BYTES + 1024;
  zmq_setsockopt(S.sock, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz);
  if (zmq_bind(S.sock, endpoint) != 0)
    return fc_err_set(err, FC_EIO, "cannot serve on %s: %s", endpoint, zmq_strerror(zmq_errno()));
  if (pthread_create(&S.thread, NULL, serve_main, NULL) != 0) return fc_err_set(err, FC_EIO, "cannot start a thread");
  S.running = 1;
  fc_info("serving direct logits requests for %s on %s", g_name, endpoint);
  return 0;
}

static void teardown(void) {
  if (S.running) {
    atomic_store(&S.stop, 1);
    pthread_join(S.thread, NULL);
  }
  if (S.sock) zmq_close(S.sock);
  if (S.zap) zmq_close(S.zap);
  if (S.allow.n || S.allow.keys) fc_curve_allow_free(&S.allow);
  if (S.zctx) zmq_ctx_term(S.zctx);
  fc_model_destroy(&S.model);
  fc_tok_destroy(&S.tok);
  memset(&S, 0, sizeof S);
}

static int setup(const fc_daemon_ctx_t *c, const fc_executor_t **execs, size_t *n, fc_err_t *err) {
  g_threads = c->threads;
  for (const char *p = g_name; *p; p++)
    if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
      return fc_err_set(err, FC_EINVAL, "--name '%s' may only use letters, digits, '.', '_', '-'", g_name);
  long b = atol(g_batch);
  if (b < 1 || b > 4096) return fc_err_set(err, FC_EINVAL, "--batch wants 1..4096, not '%s'", g_batch);
  if (!fc_path_exists(g_model_dir)) return fc_err_set(err, FC_EINVAL, "--model %s does not exist", g_model_dir);
  snprintf(g_cap, sizeof g_cap, "logits:%s", g_name);
  g_exec = (fc_executor_t){"logits", g_cap, run_logits};
  *execs = &g_exec, *n = 1;
  if ((g_serve_allow || g_serve_key) && !g_serve) return fc_err_set(err, FC_EINVAL, "--serve-allow and --serve-key go with --serve");
  if (!g_serve_allow != !g_serve_key) return fc_err_set(err, FC_EINVAL, "give both --serve-key and --serve-allow (or neither)");
  if (g_serve) {
    int rc = serve_start(g_serve, err);
    if (rc) {
      teardown();
      return rc;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static const fc_daemon_opt_t opts[] = {
      {"model", "DIR", "the model directory (config.json, safetensors, tokenizer.json)", &g_model_dir, 1},
      {"name", "NAME", "the model's name in job specs: the daemon serves capability logits:NAME", &g_name, 1},
      {"serve", "URL", "also answer direct requests (logits_request messages: text or token ids\n"
                       "in, top-K log-probs out) on this endpoint, e.g. ipc://RUN/logits-NAME.ipc\n"
                       "or tcp://*:5601 (see 'fusectl query')", &g_serve, 0},
      {"serve-key", "FILE", "protect --serve with CURVE: this key pair (fusectl keygen) is the server's;\n"
                            "clients set FUSECHAT_CURVE_SERVER to its .pub", &g_serve_key, 0},
      {"serve-allow", "DIR", "with --serve-key: only clients whose public keys are in DIR (*.pub files,\n"
                             "or one file of keys) get answers", &g_serve_allow, 0},
      {"batch", "N", "examples per forward in logits tasks (default 8)", &g_batch, 0},
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
                    "user turn and the open assistant header of the model's chat template) or ids, and k;\n"
                    "the logits_reply has the ids and, per position, the k most likely next ids and their\n"
                    "log-probs. Malformed requests get an error reply; the daemon keeps serving.\n",
  };
  return fc_daemon_main(argc, argv, &def);
}
