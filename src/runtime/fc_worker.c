/* Worker library, the daemon (see fc_worker.h): it registers, leases tasks, heartbeats and
 * reports results; what an executor sees of it (its context, fence, work directory, artifacts)
 * is fc_worker_task.c, and what both share is fc_worker_impl.h. The libuv loop owns the DEALER
 * socket; each task runs on its own pthread and hands its result back through uv_async, so
 * heartbeats and cancels are served while the task computes; hashing the outputs happens on
 * that thread too.
 *
 * Fencing: the coordinator acknowledges each heartbeat with the lease length; the worker then
 * knows its lease holds until (send time of the heartbeat before) + LEASE_SAFETY x lease, and
 * fc_task_fence lets an executor write only inside that window, or after a fresh ack. The
 * routing id is the worker id plus a per-process nonce: the coordinator tells a restarted
 * process from the old one by it. */
#include "fc_worker_impl.h"

#include <glob.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <zmq.h>
#ifdef FC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define NOTIFY(...) sd_notifyf(0, __VA_ARGS__)
#else
#define NOTIFY(...) ((void)0)
#endif

#include <jansson.h>

#include "fc_artifact.h"
#include "fc_daemon.h"
#include "fc_net.h"

/* The share of a confirmed lease the worker relies on (clocks drift, messages take time). */
#define LEASE_SAFETY 0.8

static _Thread_local fc_task_ctx_t *t_current;

/* The context of the task the calling compute thread runs (compute() sets it). */
fc_task_ctx_t *fc_task_current(void) { return t_current; }

typedef struct wk {
  const fc_worker_opts_t *o;
  char id[256];
  uv_loop_t loop;
  uv_poll_t poll;
  uv_timer_t tick;
  uv_async_t done;
  uv_signal_t sigterm, sigint;
  void *zctx, *sock;
  int stopping;
  /* the task in progress (busy) */
  int busy;
  fc_msg_t assign;
  fc_task_t task;
  fc_task_ctx_t ctx;
  const fc_executor_t *exec;
  pthread_t thread;
  int result;
  fc_err_t err;
  char **logical_inputs; /* the task's inputs as the coordinator names them */
  /* registration and artifacts */
  int acked;
  double started, last_warn;
  fc_store_t store; /* written on the loop thread only while no task runs */
  fc_artifact_server_t *server;
  char *work_dir;  /* the attempt's (task.work_dir) */
  fc_msg_t report; /* the result, artifacts hashed on the compute thread */
  char ident[256]; /* routing id: the worker id and a per-process nonce */
  fc_ratelimit_t warn_send;
  double watchdog;  /* systemd's WatchdogSec in seconds (0: none) */
  int stall_warned; /* this task's stall was logged */
} wk_t;

static void drain(wk_t *w);
static void free_logical_inputs(wk_t *w);

static void send_msg(wk_t *w, const fc_msg_t *m) {
  fc_err_t err;
  unsigned held;
  /* a coordinator that refuses us (CURVE) or is away makes every send fail: say so now and then */
  if (fc_net_send(w->sock, NULL, NULL, 0, m, &err) && fc_ratelimit_pass(&w->warn_send, 30, &held))
    fc_warn("cannot send %s: %s%s", fc_msg_type_name(m->type), err.msg,
            held ? " (and more sends failed since the last warning)" : "");
}

static void send_register(wk_t *w) {
  fc_msg_t m = {.type = FC_MSG_REGISTER, .threads = w->o->threads, .mem = w->o->mem};
  fc_msg_set_str(&m.id, w->id);
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  fc_msg_set_str(&m.host, host);
  for (size_t i = 0; i < w->o->nexecs; i++) {
    const char *cap = w->o->execs[i].cap ? w->o->execs[i].cap : w->o->execs[i].kind;
    int dup = 0;
    for (size_t k = 0; k < m.ncaps && !dup; k++) dup = !strcmp(m.caps[k], cap);
    if (!dup) fc_msg_add_cap(&m, cap);
  }
  json_t *info = json_pack("{s:s, s:s, s:s}", "artifacts", w->server ? fc_artifact_server_endpoint(w->server) : "", "key",
                           w->o->curve && w->o->curve->enabled ? w->o->curve->public_key : "", "store", w->store.id);
  m.text = json_dumps(info, JSON_COMPACT);
  json_decref(info);
  send_msg(w, &m);
  fc_msg_clear(&m);
}

/* The coordinator's ack: we are registered (READY), and what our artifact server needs. */
static void registered(wk_t *w, const fc_msg_t *m) {
  json_t *ack = m->text ? json_loads(m->text, 0, NULL) : NULL;
  if (!json_object_get(ack, "store_id")) { /* not an ack */
    json_decref(ack);
    return;
  }
  int reregister = 0;
  if (!w->busy) { /* the store view changes only between tasks (the compute thread reads it) */
    snprintf(w->store.logical, sizeof w->store.logical, "%s", json_string_value(json_object_get(ack, "store")));
    snprintf(w->store.coord_id, sizeof w->store.coord_id, "%s", json_string_value(json_object_get(ack, "store_id")));
    /* The sentinel is read now, not only at start: a daemon started beside its coordinator may
     * look before the coordinator wrote it, and would then copy inputs it already has. The ack
     * proves it is written (the coordinator writes it before it binds). */
    if (w->store.local[0] && w->store.coord_id[0] && strcmp(w->store.id, w->store.coord_id)) {
      char id[65];
      fc_err_t e;
      if (fc_store_sentinel_read(w->store.local, id, &e) == 0 && strcmp(id, w->store.id)) {
        memcpy(w->store.id, id, sizeof id);
        reregister = 1; /* the coordinator records shared/separate from our registration */
      }
    }
  }
  if (w->server) {
    json_t *allow = json_object_get(ack, "allow"), *k;
    size_t n = json_array_size(allow), i;
    char(*keys)[41] = fc_xcalloc(n ? n : 1, sizeof *keys);
    json_array_foreach(allow, i, k) snprintf(keys[i], 41, "%s", json_string_value(k) ? json_string_value(k) : "");
    fc_artifact_server_allow(w->server, keys, n);
    free(keys);
    fc_artifact_server_set_store(w->server, &w->store);
  }
  if (!w->acked) {
    int shared = fc_store_shared(&w->store);
    fc_info("registered with the coordinator at %s; store %s%s%s", w->o->endpoint,
            shared == 1 ? "shared with the coordinator" : shared == 0 ? "separate (inputs are fetched)" : "not known to the coordinator",
            w->server ? ", artifacts served on " : "", w->server ? fc_artifact_server_endpoint(w->server) : "");
    NOTIFY("READY=1\nSTATUS=idle, registered with %s", w->o->endpoint);
    w->acked = 1;
  }
  json_decref(ack);
  if (reregister) send_register(w);
}

/* No ack yet: say so, with the endpoint, every few seconds (a wrong key gets no answer at all). */
static void unacked_warn(wk_t *w) {
  double now = fc_now();
  if (w->acked || now - w->last_warn < FC_WORKER_UNACKED_WARN) return;
  w->last_warn = now;
  fc_warn("no answer from the coordinator at %s for %.0f s (not running, unreachable, or it refuses our key %s)",
          w->o->endpoint, now - w->started, w->o->curve && w->o->curve->enabled ? w->o->curve->public_key : "(no CURVE)");
  NOTIFY("STATUS=waiting for the coordinator at %s (%.0f s)", w->o->endpoint, now - w->started);
}

static void send_lease_request(wk_t *w) {
  fc_msg_t m = {.type = FC_MSG_LEASE_REQUEST};
  m.id = w->id;
  send_msg(w, &m);
}

/* The task's progress and figures as they stand, into a heartbeat or the result. */
static void add_progress(wk_t *w, fc_msg_t *m) {
  pthread_mutex_lock(&w->ctx.mu);
  m->fraction = w->ctx.fraction;
  m->message = w->ctx.message[0] ? fc_xstrdup(w->ctx.message) : NULL;
  for (size_t i = 0; i < w->ctx.nfigs; i++) fc_msg_add_fig(m, w->ctx.figs[i].name, w->ctx.figs[i].val);
  pthread_mutex_unlock(&w->ctx.mu);
}

static void send_heartbeat(wk_t *w) {
  fc_msg_t m = {.type = FC_MSG_HEARTBEAT, .task = w->task.id, .attempt = w->task.attempt};
  m.id = w->id;
  pthread_mutex_lock(&w->ctx.mu);
  w->ctx.hb_prev = w->ctx.hb_last, w->ctx.hb_last = fc_now();
  pthread_mutex_unlock(&w->ctx.mu);
  add_progress(w, &m);
  send_msg(w, &m);
  m.id = NULL;
  fc_msg_clear(&m);
}

static void send_result_error(wk_t *w, int64_t task, int64_t attempt, const char *error, bool handback) {
  fc_msg_t m = {.type = FC_MSG_RESULT, .task = task, .attempt = attempt, .ok = false, .handback = handback};
  m.id = w->id;
  m.error = (char *)error;
  send_msg(w, &m);
}

/* Inputs missing here: fetched from their holders unless the store is the coordinator's (then
 * a missing input is a real loss, and the executor's error names it). */
static int fetch_inputs(wk_t *w) {
  if (fc_store_shared(&w->store) == 1) return 0;
  size_t missing = 0;
  for (size_t i = 0; i < w->task.ninputs; i++) missing += !fc_path_exists(w->task.inputs[i]);
  if (!missing) return 0;
  fc_task_progress(&w->ctx, 0, "fetching %zu input(s) from other machines", missing);
  uint64_t got = 0;
  int rc = fc_artifact_ensure(w->o->endpoint, w->o->curve, &w->store, w->id, w->task.job, w->logical_inputs,
                              w->task.ninputs, w->server, &got, &w->err);
  if (rc == 0 && got) fc_task_figure(&w->ctx, "fetched_bytes", (double)got);
  return rc;
}

static void *compute(void *arg) {
  wk_t *w = arg;
  t_current = &w->ctx;
  w->result = fetch_inputs(w);
  if (w->result == 0) w->result = w->exec->run(&w->task, &w->ctx, &w->err);
  /* hashing a large output takes minutes: here, not on the loop that heartbeats */
  w->report = (fc_msg_t){.type = FC_MSG_RESULT, .task = w->task.id, .attempt = w->task.attempt, .ok = true};
  if (w->result == 0 && !atomic_load(&w->ctx.lost)) w->result = fc_worker_artifacts(&w->task, &w->report, &w->err);
  t_current = NULL;
  uv_async_send(&w->done);
  return NULL;
}

static void stop(wk_t *w) {
  fc_msg_t m = {.type = FC_MSG_BYE};
  m.id = w->id;
  send_msg(w, &m);
  NOTIFY("STOPPING=1");
  fc_log_at(FC_LOG_INFO, 0, 0, w->id, "worker stopping");
  uv_stop(&w->loop);
}

/* Back on the loop thread: report the finished task and ask for the next. */
static void done_cb(uv_async_t *a) {
  wk_t *w = a->data;
  if (!w->busy) return;
  pthread_join(w->thread, NULL);
  w->busy = 0;
  int cancelled = atomic_load(&w->ctx.cancel);
  fc_err_t e;
  if (atomic_load(&w->ctx.lost)) {
    /* superseded: another attempt owns the task now; nothing of ours may stay behind */
    if (w->work_dir && fc_rmtree(w->work_dir, &e)) fc_warn("%s", e.msg);
    fc_log_at(FC_LOG_WARN, w->task.job, w->task.id, w->id, "attempt %lld: the lease is gone; stopped, reported nothing and removed %s",
              (long long)w->task.attempt, w->work_dir ? w->work_dir : "nothing");
  } else if (w->result == 0) {
    char *parent = fc_worker_work_parent(&w->task); /* every attempt's scratch is garbage now */
    if (parent && fc_rmtree(parent, &e)) fc_warn("%s", e.msg);
    free(parent);
    for (size_t i = 0; i < w->report.narts; i++) { /* served from here; named as the coordinator names them */
      fc_artifact_server_known(w->server, w->report.arts[i].path, w->report.arts[i].sha256);
      char *logical = fc_store_to_logical(&w->store, w->report.arts[i].path);
      free(w->report.arts[i].path);
      w->report.arts[i].path = logical;
    }
    add_progress(w, &w->report);
    w->report.fraction = 1;
    w->report.id = w->id;
    send_msg(w, &w->report);
    w->report.id = NULL;
    fc_log_at(FC_LOG_INFO, w->task.job, w->task.id, w->id, "task (%s) done, %zu artifact(s)", w->task.kind, w->report.narts);
  } else if (cancelled && w->stopping) {
    send_result_error(w, w->task.id, w->task.attempt, "worker shutting down", true);
    fc_log_at(FC_LOG_INFO, w->task.job, w->task.id, w->id, "task handed back (shutting down)");
  } else {
    send_result_error(w, w->task.id, w->task.attempt, w->err.msg[0] ? w->err.msg : fc_strerror(w->result), false);
    fc_log_at(FC_LOG_WARN, w->task.job, w->task.id, w->id, "task (%s) failed: %s", w->task.kind, w->err.msg);
  }
  fc_msg_clear(&w->report);
  free(w->work_dir);
  w->work_dir = NULL;
  for (size_t i = 0; i < w->ctx.nfigs; i++) free(w->ctx.figs[i].name);
  w->ctx.nfigs = 0;
  free_logical_inputs(w);
  fc_msg_clear(&w->assign);
  NOTIFY("STATUS=idle");
  if (w->stopping) stop(w);
  else send_lease_request(w);
  drain(w);
}

static void free_logical_inputs(wk_t *w) {
  for (size_t i = 0; w->logical_inputs && i < w->assign.ninputs; i++) free(w->logical_inputs[i]);
  free(w->logical_inputs);
  w->logical_inputs = NULL;
}

/* The coordinator's paths become this machine's (they differ only for a separate store
 * mounted elsewhere); the logical inputs are kept for LOCATE. */
static void map_paths(wk_t *w) {
  fc_msg_t *a = &w->assign;
  w->logical_inputs = fc_xcalloc(a->ninputs + 1, sizeof *w->logical_inputs);
  for (size_t i = 0; i < a->ninputs; i++) {
    w->logical_inputs[i] = a->inputs[i];
    a->inputs[i] = fc_store_to_local(&w->store, a->inputs[i]);
  }
  for (size_t i = 0; i < a->noutputs; i++) {
    char *local = fc_store_to_local(&w->store, a->outputs[i]);
    free(a->outputs[i]);
    a->outputs[i] = local;
  }
}

static void start_task(wk_t *w, fc_msg_t *m) {
  const fc_executor_t *ex = NULL;
  for (size_t i = 0; i < w->o->nexecs; i++)
    if (!strcmp(w->o->execs[i].kind, m->kind)) ex = &w->o->execs[i];
  if (w->busy || w->stopping || !ex) {
    /* not ours to run now: give it straight back (no attempt is charged for a handback) */
    char why[256];
    snprintf(why, sizeof why, "%s", !ex ? "no executor for this kind" : "worker busy or stopping");
    send_result_error(w, m->task, m->attempt, why, ex != NULL);
    fc_log_at(FC_LOG_WARN, m->job, m->task, w->id, "task (%s) refused: %s", m->kind, why);
    return;
  }
  w->assign = *m;
  memset(m, 0, sizeof *m); /* the worker owns it now */
  map_paths(w);
  fc_msg_t *a = &w->assign;
  w->task = (fc_task_t){.id = a->task, .job = a->job, .attempt = a->attempt, .kind = a->kind,
                        .params = a->params, .nparams = a->nparams, .inputs = a->inputs, .ninputs = a->ninputs,
                        .outputs = a->outputs, .noutputs = a->noutputs};
  char *parent = fc_worker_work_parent(&w->task);
  if (parent) {
    char tok[32];
    snprintf(tok, sizeof tok, "%lld", (long long)a->attempt);
    w->work_dir = fc_path_join(parent, tok);
    w->task.work_dir = w->work_dir;
    free(parent);
  }
  w->exec = ex;
  w->ctx.fraction = 0, w->ctx.message[0] = 0, w->ctx.nfigs = 0;
  atomic_store(&w->ctx.cancel, 0);
  atomic_store(&w->ctx.lost, 0);
  /* until the first ack: one heartbeat period and a second of trust */
  w->ctx.hb_last = w->ctx.hb_prev = w->ctx.progressed = fc_now();
  w->stall_warned = 0;
  w->ctx.valid_until = fc_now() + (w->o->heartbeat > 0 ? w->o->heartbeat : 1.0) + 1;
  w->err = (fc_err_t){0};
  for (size_t i = 0; i < a->noutputs; i++) { /* executors write straight into their directories */
    char *dir = fc_xstrdup(a->outputs[i]);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
      *slash = 0;
      fc_err_t e;
      if (fc_mkdir_p(dir, &e)) fc_warn("%s", e.msg);
    }
    free(dir);
    /* a SIGKILLed earlier attempt leaves its temp file: the output itself is never half written,
     * but the garbage should not pile up */
    char pat[4200];
    snprintf(pat, sizeof pat, "%s.tmp.*", a->outputs[i]);
    glob_t g;
    if (glob(pat, GLOB_NOSORT, NULL, &g) == 0)
      for (size_t k = 0; k < g.gl_pathc; k++) unlink(g.gl_pathv[k]);
    globfree(&g);
  }
  w->busy = 1;
  fc_log_at(FC_LOG_INFO, a->job, a->task, w->id, "task (%s) attempt %lld started", a->kind, (long long)a->attempt);
  NOTIFY("STATUS=task %lld (%s)", (long long)a->task, a->kind);
  if (pthread_create(&w->thread, NULL, compute, w) != 0) {
    w->busy = 0;
    send_result_error(w, a->task, a->attempt, "cannot start a compute thread", true);
    free_logical_inputs(w);
    fc_msg_clear(&w->assign);
    free(w->work_dir);
    w->work_dir = NULL;
    return;
  }
  send_heartbeat(w); /* marks it running at once */
}

/* A heartbeat ack {"task", "attempt", "lease"}: the lease holds a while longer. */
static void lease_confirmed(wk_t *w, const char *text) {
  json_t *j = text ? json_loads(text, 0, NULL) : NULL;
  if (j && w->busy && json_integer_value(json_object_get(j, "task")) == w->task.id &&
      json_integer_value(json_object_get(j, "attempt")) == w->task.attempt) {
    double lease = json_number_value(json_object_get(j, "lease"));
    pthread_mutex_lock(&w->ctx.mu);
    double until = w->ctx.hb_prev + LEASE_SAFETY * lease; /* the ack may answer the one before */
    if (until > w->ctx.valid_until) w->ctx.valid_until = until;
    pthread_cond_broadcast(&w->ctx.cv);
    pthread_mutex_unlock(&w->ctx.mu);
  }
  json_decref(j);
}

static void handle(wk_t *w, fc_msg_t *m) {
  switch (m->type) {
  case FC_MSG_TASK_ASSIGN: start_task(w, m); break;
  case FC_MSG_CANCEL:
    /* the lease is gone (lapsed and given to another attempt, or the job cancelled): stop, and
     * write nothing more */
    if (w->busy && m->task == w->task.id && !atomic_load(&w->ctx.lost)) {
      fc_log_at(FC_LOG_INFO, w->task.job, m->task, w->id, "the coordinator ended our lease; stopping");
      pthread_mutex_lock(&w->ctx.mu);
      atomic_store(&w->ctx.lost, 1);
      atomic_store(&w->ctx.cancel, 1);
      pthread_cond_broadcast(&w->ctx.cv);
      pthread_mutex_unlock(&w->ctx.mu);
    }
    break;
  case FC_MSG_REPLY:
    if (!m->ok) {
      unsigned held;
      if (fc_ratelimit_pass(&w->warn_send, 30, &held)) fc_warn("coordinator: %s", m->error ? m->error : "error");
    } else {
      registered(w, m); /* the registration's ack, or */
      lease_confirmed(w, m->text); /* a heartbeat's: each ignores the other's */
    }
    break;
  default: fc_warn("ignoring a %s message", fc_msg_type_name(m->type));
  }
}

static void drain(wk_t *w) {
  for (;;) {
    int events = 0;
    size_t sz = sizeof events;
    if (zmq_getsockopt(w->sock, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, w->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&f);
      return;
    }
    fc_msg_t m;
    fc_err_t err;
    if (zmq_msg_more(&f)) fc_warn("dropping a multipart message");
    else if (fc_msg_decode(zmq_msg_data(&f), zmq_msg_size(&f), &m, &err) == 0) {
      handle(w, &m);
      fc_msg_clear(&m);
    } else {
      fc_warn("dropping a message: %s", err.msg);
    }
    zmq_msg_close(&f);
  }
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  (void)status, (void)events;
  drain(p->data);
}

/* Busy: heartbeat. Idle: (re-)register and ask for work, which is also how a restarted
 * coordinator learns about us. */
/* systemd's watchdog: pinged from the loop while idle, and while a task runs only as long as
 * its compute thread reports progress within half the watchdog period, so a wedged executor
 * (not only a wedged loop) gets the daemon restarted and its task re-leased elsewhere. */
static void watchdog_ping(wk_t *w) {
  if (w->watchdog <= 0) return;
  double quiet = 0;
  if (w->busy) {
    pthread_mutex_lock(&w->ctx.mu);
    quiet = fc_now() - w->ctx.progressed;
    pthread_mutex_unlock(&w->ctx.mu);
  }
  if (quiet < w->watchdog / 2) {
    NOTIFY("WATCHDOG=1");
  } else if (!w->stall_warned) {
    fc_log_at(FC_LOG_WARN, w->task.job, w->task.id, w->id,
              "no progress from the task for %.0f s: withholding the watchdog ping (systemd restarts us after %.0f s)",
              quiet, w->watchdog);
    w->stall_warned = 1;
  }
}

static void tick_cb(uv_timer_t *t) {
  wk_t *w = t->data;
  watchdog_ping(w);
  /* a busy worker registers too: a restarted coordinator binds our id to this connection
   * before it accepts the heartbeat */
  if (w->busy) send_register(w), send_heartbeat(w);
  else if (!w->stopping) send_register(w), send_lease_request(w);
  unacked_warn(w);
  drain(w);
}

static void signal_cb(uv_signal_t *s, int signum) {
  wk_t *w = s->data;
  if (w->stopping) return;
  w->stopping = 1;
  atomic_store(&w->ctx.leaving, 1);
  fc_info("signal %d: %s", signum,
          !w->busy ? "leaving" : w->o->finish_on_sigterm ? "finishing the task, then leaving" : "handing the task back");
  if (!w->busy) stop(w);
  else if (!w->o->finish_on_sigterm) atomic_store(&w->ctx.cancel, 1);
  drain(w);
}

static void close_cb(uv_handle_t *h) { (void)h; }

int fc_worker_run(const fc_worker_opts_t *o, fc_err_t *err) {
  wk_t *w = fc_xcalloc(1, sizeof *w);
  w->o = o;
  if (o->id) snprintf(w->id, sizeof w->id, "%s", o->id);
  else {
    char host[200] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(w->id, sizeof w->id, "%s-%ld", host, (long)getpid());
  }
  pthread_mutex_init(&w->ctx.mu, NULL);
  w->started = w->last_warn = fc_now();
  if (o->store) {
    snprintf(w->store.local, sizeof w->store.local, "%s", o->store);
    fc_err_t e;
    if (fc_store_sentinel_read(o->store, w->store.id, &e)) fc_info("%s: a store of this machine only", e.msg);
  }
  pthread_cond_init(&w->ctx.cv, NULL);
  w->zctx = zmq_ctx_new();
  w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
  int linger = 2000, rc = 0;
  zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
  uint64_t nonce = fc_splitmix64((uint64_t)getpid() ^ ((uint64_t)(fc_now() * 1e9) << 16) ^ (uint64_t)time(NULL));
  snprintf(w->ident, sizeof w->ident, "%.200s#%016llx", w->id, (unsigned long long)nonce);
  zmq_setsockopt(w->sock, ZMQ_ROUTING_ID, w->ident, strlen(w->ident));
  int ivl = 100, ivlmax = 1000;
  zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
  zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL_MAX, &ivlmax, sizeof ivlmax);
  int64_t maxmsg = FC_MSG_MAX_BYTES + 1024;
  zmq_setsockopt(w->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  if ((rc = fc_curve_apply_client(w->sock, o->curve, err))) goto out;
  if (o->artifacts && (rc = fc_artifact_server_start(&w->server, o->artifacts, o->curve, err))) goto out;
  if (w->server) fc_artifact_server_set_store(w->server, &w->store);
  if (zmq_connect(w->sock, o->endpoint) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot connect to %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  uv_loop_init(&w->loop);
  int fd;
  size_t fdsz = sizeof fd;
  zmq_getsockopt(w->sock, ZMQ_FD, &fd, &fdsz);
  uv_poll_init(&w->loop, &w->poll, fd);
  w->poll.data = w;
  uv_poll_start(&w->poll, UV_READABLE, poll_cb);
  uv_timer_init(&w->loop, &w->tick);
  w->tick.data = w;
  uint64_t period = (uint64_t)((o->heartbeat > 0 ? o->heartbeat : 1.0) * 1000);
#ifdef FC_HAVE_SYSTEMD
  uint64_t wd_usec = 0;
  if (sd_watchdog_enabled(0, &wd_usec) > 0) {
    w->watchdog = (double)wd_usec * 1e-6;
    if (period > wd_usec / 4000) period = wd_usec / 4000 ? wd_usec / 4000 : 1; /* at least four pings a period */
  }
#endif
  uv_timer_start(&w->tick, tick_cb, period, period);
  uv_async_init(&w->loop, &w->done, done_cb);
  w->done.data = w;
  uv_signal_init(&w->loop, &w->sigterm);
  uv_signal_init(&w->loop, &w->sigint);
  w->sigterm.data = w->sigint.data = w;
  uv_signal_start(&w->sigterm, signal_cb, SIGTERM);
  uv_signal_start(&w->sigint, signal_cb, SIGINT);
  send_register(w);
  send_lease_request(w);
  fc_log_at(FC_LOG_INFO, 0, 0, w->id, "worker connecting to %s (READY once the coordinator answers)", o->endpoint);
  NOTIFY("STATUS=connecting to %s", o->endpoint);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  if (w->busy) { /* stopped by uv_stop while computing cannot happen; be safe */
    atomic_store(&w->ctx.cancel, 1);
    pthread_join(w->thread, NULL);
    free_logical_inputs(w);
    fc_msg_clear(&w->assign);
    fc_msg_clear(&w->report);
    free(w->work_dir);
  }
  uv_close((uv_handle_t *)&w->poll, close_cb);
  uv_close((uv_handle_t *)&w->tick, close_cb);
  uv_close((uv_handle_t *)&w->done, close_cb);
  uv_close((uv_handle_t *)&w->sigterm, close_cb);
  uv_close((uv_handle_t *)&w->sigint, close_cb);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
out:
  fc_artifact_server_stop(&w->server);
  zmq_close(w->sock);
  zmq_ctx_term(w->zctx);
  pthread_mutex_destroy(&w->ctx.mu);
  pthread_cond_destroy(&w->ctx.cv);
  free(w);
  return rc;
}
