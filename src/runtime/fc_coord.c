/* Coordinator loop (see fc_coord.h): the ROUTER and its drain, roles, the requests of clients
 * (submit, status, cancel, ...), signals, /metrics and fc_coord_run. The workers' side (the
 * worker table, dispatch, leases and reports) is fc_coord_lease.c; what both share is in
 * fc_coord_impl.h.
 *
 * ZeroMQ signals its fd edge-triggered: uv_poll only says "something changed", so every wake-up
 * and every send is followed by draining the socket while ZMQ_EVENTS reports POLLIN, or a
 * message can sit unread until the next unrelated wake-up. A drain handles at most
 * FC_COORD_BATCH messages and leaves the rest to an idle callback, so lease expiry and signals
 * are never starved by a backlog.
 *
 * Trust: with CURVE, the ZAP handler tags each connection with its client key, and each message
 * needs the role its type asks for (worker, operator, reader). A worker id is bound to the
 * connection (routing id) and key it registered from; its other messages are accepted only from
 * there, and task reports only under the lease's fencing token (fc_coord_lease.c). */
#include "fc_coord_impl.h"
#include "fc_coord_rm.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <zmq.h>

#ifdef FC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#define NOTIFY(...) sd_notifyf(0, __VA_ARGS__)
#else
#define NOTIFY(...) ((void)0)
#endif

#include "fc_artifact.h"
#include "fc_job.h"

void fc_coord_reply(coord_t *c, int ok, const char *error, const char *json) {
  if (json && strlen(json) > FC_MSG_MAX_TEXT) /* pages keep far below this; never send past it */
    ok = 0, error = "the reply would be too long; ask for a smaller page (--limit)", json = NULL;
  fc_msg_t r = {.type = FC_MSG_REPLY, .ok = ok != 0};
  fc_msg_set_str(&r.error, error);
  fc_msg_set_str(&r.text, json);
  fc_err_t err;
  if (fc_net_send(c->router, c->env, c->envlen, c->nenv, &r, &err)) WARN_LIMITED(c, warn_send, "cannot reply: %s", err.msg);
  fc_msg_clear(&r);
}

/* ---- roles ---- */

/* The role a message type needs. */
static unsigned role_needed(fc_msg_type_t t) {
  switch (t) {
  case FC_MSG_REGISTER:
  case FC_MSG_LEASE_REQUEST:
  case FC_MSG_HEARTBEAT:
  case FC_MSG_RESULT:
  case FC_MSG_BYE: return FC_ROLE_WORKER;
  case FC_MSG_SUBMIT:
  case FC_MSG_CANCEL_JOB:
  case FC_MSG_REMOVE_JOB:
  case FC_MSG_RETRY: return FC_ROLE_OPERATOR;
  case FC_MSG_HOLDING: return FC_ROLE_WORKER;
  case FC_MSG_LOCATE: return FC_ROLE_ALL; /* daemons fetching inputs, and operators */
  default: return FC_ROLE_READER | FC_ROLE_OPERATOR; /* reading: either */
  }
}

/* Whether the sender's key holds the role m needs; a refusal is answered, naming the role. */
static int check_role(coord_t *c, const fc_msg_t *m) {
  unsigned need = role_needed(m->type);
  if (c->roles & need) return 1;
  const char *name = need == FC_ROLE_WORKER ? "worker" : need == FC_ROLE_OPERATOR ? "operator" : "reader";
  char why[200];
  snprintf(why, sizeof why, "refused: a %s message needs the %s role, which this key (%.8s...) lacks",
           fc_msg_type_name(m->type), name, c->key[0] ? c->key : "none");
  WARN_LIMITED(c, warn_role, "%s", why);
  fc_coord_reply(c, 0, why, NULL);
  return 0;
}

/* ---- requests ---- */

static void handle_client(coord_t *c, fc_msg_t *m) {
  fc_err_t err = {0};
  char *json = NULL;
  int rc = 0;
  double now = fc_net_wall();
  switch (m->type) {
  case FC_MSG_SUBMIT: {
    fc_job_t *job;
    int64_t id;
    rc = fc_job_parse(m->text, strlen(m->text), "job", &job, &err);
    if (rc == 0) {
      rc = fc_db_job_create(c->db, job, m->text, now, &id, &err);
      if (rc == 0) {
        char buf[128];
        snprintf(buf, sizeof buf, "{\"job\":%lld,\"tasks\":%zu}", (long long)id, job->ntasks);
        json = fc_xstrdup(buf);
      }
      fc_job_destroy(&job);
    }
    break;
  }
  case FC_MSG_STATUS: rc = fc_db_status_json(c->db, m->job, m->since, m->limit, fc_net_wall(), &json, &err); break;
  case FC_MSG_LIST: rc = fc_db_list_json(c->db, m->since, m->limit, &json, &err); break;
  case FC_MSG_LOGS: rc = fc_db_logs_json(c->db, m->job, m->since, m->limit, &json, &err); break;
  case FC_MSG_ARTIFACTS: {
    char st[16];
    rc = fc_db_job_state(c->db, m->job, st, &err);
    if (rc == 0) rc = fc_db_artifacts_json(c->db, m->job, &json, &err);
    break;
  }
  case FC_MSG_CANCEL_JOB: {
    fc_db_holder_t *h;
    size_t nh;
    rc = fc_db_job_cancel(c->db, m->job, now, &h, &nh, &err);
    for (size_t i = 0; rc == 0 && i < nh; i++) {
      worker_t *w = fc_coord_find_worker(c, h[i].worker);
      if (!w) continue;
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = h[i].task};
      fc_coord_send_to_worker(c, w, &cm);
    }
    if (rc == 0) free(h);
    break;
  }
  case FC_MSG_REMOVE_JOB: rc = fc_coord_remove_job(c->db, c->holders, c->o->store, m->job, now, &json, &err); break;
  case FC_MSG_RETRY:
    if (m->task) rc = fc_db_task_retry(c->db, m->task, now, &err);
    else if (m->job) rc = fc_db_job_retry(c->db, m->job, now, &err);
    else rc = fc_err_set(&err, FC_EINVAL, "retry needs a job or a task");
    break;
  default: rc = fc_err_set(&err, FC_EINVAL, "unexpected %s message", fc_msg_type_name(m->type));
  }
  fc_coord_reply(c, rc == 0, rc ? err.msg : NULL, json ? json : "{}");
  free(json);
  fc_coord_dispatch(c, NULL);
}

/* Artifact location requests (LOCATE from a daemon or fusectl, HOLDING from a daemon that
 * fetched copies); 0 when m is not one of them. */
static int handle_artifacts(coord_t *c, fc_msg_t *m) {
  fc_err_t err = {0};
  char *json = NULL;
  int rc;
  if (m->type == FC_MSG_LOCATE) rc = fc_holders_locate_json(c->holders, m->job, m->inputs, m->ninputs, &json, &err);
  else if (m->type == FC_MSG_HOLDING) {
    rc = fc_holders_add(c->holders, m->id, m->arts, m->narts, &err);
    if (m->bytes > 0) c->fetched_bytes += (uint64_t)m->bytes, c->fetches++;
  }
  else if (m->type == FC_MSG_WORKERS) {
    char *raw = NULL;
    rc = fc_db_workers_json(c->db, m->since, m->limit, &raw, &err);
    if (rc == 0) rc = fc_holders_workers_json(c->holders, raw, &json, &err);
    free(raw);
  } else return 0;
  fc_coord_reply(c, rc == 0, rc ? err.msg : NULL, json ? json : "{}");
  free(json);
  return 1;
}

/* One message: its role checked, then artifacts, the workers' messages, or a client's request. */
static void handle(coord_t *c, fc_msg_t *m) {
  if (!check_role(c, m)) return;
  if (handle_artifacts(c, m)) return;
  if (fc_coord_handle_worker(c, m)) return;
  handle_client(c, m);
}

static void more_cb(uv_idle_t *h);

/* The sender's key (the ZAP handler's User-Id) and its roles; every role without CURVE, where
 * only our own user can reach the ipc:// socket in the 0700 run directory. */
static void sender_of(coord_t *c, zmq_msg_t *payload) {
  c->key[0] = 0;
  c->roles = c->curve.enabled ? 0 : FC_ROLE_ALL;
  if (!c->curve.enabled) return;
  const char *uid = zmq_msg_gets(payload, "User-Id");
  if (uid && strlen(uid) == 40) {
    memcpy(c->key, uid, 41);
    c->roles = fc_curve_roles(&c->allow, uid);
  }
}

void fc_coord_drain(coord_t *c) {
  for (int done = 0;; done++) {
    int events = 0;
    size_t sz = sizeof events;
    if (zmq_getsockopt(c->router, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) {
      uv_idle_stop(&c->more);
      return;
    }
    if (done == FC_COORD_BATCH || c->stopping) { /* the rest on the next turn of the loop */
      if (!c->stopping) uv_idle_start(&c->more, more_cb);
      return;
    }
    zmq_msg_t frames[MAX_ENV + 1];
    size_t n = 0;
    int more = 1, bad = 0;
    while (more) {
      zmq_msg_t f;
      zmq_msg_init(&f);
      if (zmq_msg_recv(&f, c->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        bad = 1;
        break;
      }
      more = zmq_msg_more(&f);
      if (n < MAX_ENV + 1) frames[n++] = f;
      else zmq_msg_close(&f), bad = 1; /* too many frames: not one of ours */
    }
    if (!bad && n >= 2) {
      c->nenv = n - 1;
      for (size_t i = 0; i + 1 < n; i++) c->env[i] = zmq_msg_data(&frames[i]), c->envlen[i] = zmq_msg_size(&frames[i]);
      fc_msg_t m;
      fc_err_t err;
      sender_of(c, &frames[n - 1]);
      if (fc_msg_decode(zmq_msg_data(&frames[n - 1]), zmq_msg_size(&frames[n - 1]), &m, &err) == 0) {
        handle(c, &m);
        fc_msg_clear(&m);
      } else {
        WARN_LIMITED(c, warn_bad, "dropping a message: %s", err.msg);
        fc_coord_reply(c, 0, err.msg, NULL);
      }
      c->nenv = 0;
    }
    for (size_t i = 0; i < n; i++) zmq_msg_close(&frames[i]);
  }
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  (void)status, (void)events;
  fc_coord_drain(p->data);
}

static void more_cb(uv_idle_t *h) { fc_coord_drain(h->data); }

/* Forgets workers silent for FC_COORD_WORKER_TTL, here and in the store. */
static void sweep_cb(uv_timer_t *t) {
  coord_t *c = t->data;
  double before = fc_net_wall() - FC_COORD_WORKER_TTL;
  for (size_t i = 0; i < c->nworkers;) {
    if (!c->workers[i]->busy && c->workers[i]->last_seen < before) fc_coord_drop_worker(c, i);
    else i++;
  }
  int n;
  fc_err_t err;
  if (fc_db_workers_prune(c->db, before, &n, &err)) fc_warn("forgetting old workers: %s", err.msg);
  else if (n) fc_info("forgot %d worker(s) silent for %.0f s", n, FC_COORD_WORKER_TTL);
}

/* CURVE handshakes (fc_zap: allow-listed keys, each connection tagged with its key). */
static void zap_cb(uv_poll_t *p, int status, int events) {
  (void)status, (void)events;
  coord_t *c = p->data;
  fc_zap_drain(c->zap);
}

static void signal_cb(uv_signal_t *s, int signum) {
  coord_t *c = s->data;
  fc_info("signal %d: stopping", signum);
  c->stopping = 1;
  NOTIFY("STOPPING=1");
  uv_stop(c->loop);
}

/* The allow-lists of opts, each key with the roles of the lists naming it; none is an error. */
static int load_allow(const fc_coord_opts_t *o, fc_curve_allow_t *a, fc_err_t *err) {
  const char *lists[4] = {o->curve_allow, o->curve_workers, o->curve_operators, o->curve_readers};
  const unsigned roles[4] = {FC_ROLE_ALL, FC_ROLE_WORKER, FC_ROLE_OPERATOR | FC_ROLE_READER, FC_ROLE_READER};
  memset(a, 0, sizeof *a);
  int rc = 0;
  for (int i = 0; i < 4 && rc == 0; i++)
    if (lists[i]) rc = fc_curve_allow_add(lists[i], roles[i], a, err);
  if (rc == 0 && !a->n)
    rc = fc_err_set(err, FC_EINVAL, "CURVE needs client keys: the allow-lists (--curve-allow, --curve-workers, "
                                    "--curve-operators, --curve-readers) hold none");
  if (rc) fc_curve_allow_free(a);
  return rc;
}

/* SIGHUP: the allow-lists again (a revoked key is refused from its next connection on). */
static void sighup_cb(uv_signal_t *s, int signum) {
  coord_t *c = s->data;
  (void)signum;
  if (!c->curve.enabled) {
    fc_info("SIGHUP: no allow-list to reload");
    return;
  }
  fc_curve_allow_t a;
  fc_err_t err;
  if (load_allow(c->o, &a, &err)) {
    fc_warn("SIGHUP: keeping the old allow-lists: %s", err.msg);
    return;
  }
  fc_curve_allow_free(&c->allow);
  c->allow = a;
  fc_zap_allow(c->zap, &c->allow);
  fc_info("SIGHUP: allow-lists reloaded, %zu key(s)", a.n);
}

static void close_cb(uv_handle_t *h) { (void)h; }

/* The /metrics text: the store's series, then the live workers (heard from within a lease
 * period) by the kinds they run, each kind counted once per worker. */
static int render_metrics(void *arg, FILE *fp, fc_err_t *err) {
  coord_t *c = arg;
  int rc = fc_db_metrics(c->db, fp, err);
  if (rc) return rc;
  double now = fc_net_wall();
  fputs("# HELP fusechat_workers Live workers (heard from within a lease period) by task kind they run.\n"
        "# TYPE fusechat_workers gauge\n", fp);
  size_t live = 0, nkinds = 0, *count = NULL;
  const char **kinds = NULL; /* borrowed from the workers' caps; kinds are few */
  for (size_t i = 0; i < c->nworkers; i++) {
    const worker_t *w = c->workers[i];
    if (now - w->last_seen > c->o->lease_timeout) continue;
    live++;
    for (size_t k = 0; k < w->ncaps; k++) {
      size_t l = 0, j = 0;
      while (l < k && strcmp(w->caps[l], w->caps[k])) l++;
      if (l < k) continue; /* listed twice by this worker: counted once */
      while (j < nkinds && strcmp(kinds[j], w->caps[k])) j++;
      if (j == nkinds) {
        kinds = fc_xrealloc(kinds, (nkinds + 1) * sizeof *kinds);
        count = fc_xrealloc(count, (nkinds + 1) * sizeof *count);
        kinds[nkinds] = w->caps[k], count[nkinds++] = 0;
      }
      count[j]++;
    }
  }
  for (size_t j = 0; j < nkinds; j++) {
    fputs("fusechat_workers{kind=\"", fp);
    fc_db_metrics_label(fp, kinds[j]);
    fprintf(fp, "\"} %zu\n", count[j]);
  }
  free(kinds);
  free(count);
  fprintf(fp, "# HELP fusechat_workers_live Live workers (heard from within a lease period).\n"
              "# TYPE fusechat_workers_live gauge\nfusechat_workers_live %zu\n", live);
  /* counted from the daemons' holding reports, which carry the bytes each one downloaded
   * itself: since this coordinator started (a counter's reset is Prometheus's to handle) */
  fprintf(fp, "# HELP fusechat_artifact_fetched_bytes_total Bytes of artifacts daemons fetched from other stores.\n"
              "# TYPE fusechat_artifact_fetched_bytes_total counter\nfusechat_artifact_fetched_bytes_total %llu\n"
              "# HELP fusechat_artifact_fetches_total Tasks' input fetches from other stores that downloaded bytes.\n"
              "# TYPE fusechat_artifact_fetches_total counter\nfusechat_artifact_fetches_total %llu\n",
          (unsigned long long)c->fetched_bytes, (unsigned long long)c->fetches);
  return 0;
}

static void skip_event(void *arg, int64_t id, double time, int64_t job, int64_t task, const char *type,
                       const char *message) {
  (void)arg, (void)id, (void)time, (void)job, (void)task, (void)type, (void)message;
}

int fc_coord_run(const fc_coord_opts_t *o, fc_err_t *err) {
  coord_t c = {.o = o};
  int rc = fc_db_open(&c.db, o->db_path, err);
  if (rc) return rc;
  if ((rc = fc_holders_open(&c.holders, fc_db_sqlite(c.db), err)) ||
      (o->store && (rc = fc_store_sentinel_ensure(o->store, c.store_id, err)))) {
    fc_holders_close(&c.holders);
    fc_db_close(&c.db);
    return rc;
  }
  /* Events already in the log were published by the previous run. */
  if ((rc = fc_db_events_after(c.db, 0, skip_event, NULL, &c.last_event, err))) {
    fc_db_close(&c.db);
    return rc;
  }
  c.zctx = zmq_ctx_new();
  if (o->curve_key) {
    if ((rc = fc_curve_check_private(o->curve_key, err)) || (rc = fc_curve_load_pair(o->curve_key, &c.curve, err)) ||
        (rc = load_allow(o, &c.allow, err)))
      goto out;
    c.curve.enabled = 1;
    if ((rc = fc_zap_start(c.zctx, &c.allow, "coordinator", &c.zap, err))) goto out;
  }
  c.router = zmq_socket(c.zctx, ZMQ_ROUTER);
  c.pub = zmq_socket(c.zctx, ZMQ_PUB);
  int one = 1, linger = 500;
  zmq_setsockopt(c.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
  zmq_setsockopt(c.router, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
  zmq_setsockopt(c.router, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(c.pub, ZMQ_LINGER, &linger, sizeof linger);
  int64_t maxmsg = FC_MSG_MAX_BYTES + 1024;
  zmq_setsockopt(c.router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  if ((rc = fc_curve_apply_server(c.router, &c.curve, err)) || (rc = fc_curve_apply_server(c.pub, &c.curve, err))) goto out;
  if (zmq_bind(c.router, o->endpoint) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot bind %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  if (zmq_bind(c.pub, o->events_endpoint) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot bind %s: %s", o->events_endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  c.loop = fc_xmalloc(sizeof *c.loop);
  uv_loop_init(c.loop);
  int fd;
  size_t fdsz = sizeof fd;
  zmq_getsockopt(c.router, ZMQ_FD, &fd, &fdsz);
  uv_poll_init(c.loop, &c.poll, fd);
  c.poll.data = &c;
  uv_poll_start(&c.poll, UV_READABLE, poll_cb);
  if (c.zap) {
    zmq_getsockopt(fc_zap_socket(c.zap), ZMQ_FD, &fd, &fdsz);
    uv_poll_init(c.loop, &c.zap_poll, fd);
    c.zap_poll.data = &c;
    uv_poll_start(&c.zap_poll, UV_READABLE, zap_cb);
  }
  uv_timer_init(c.loop, &c.expire);
  c.expire.data = &c;
  uv_timer_init(c.loop, &c.sweep);
  c.sweep.data = &c;
  uv_timer_start(&c.sweep, sweep_cb, 10000, 10000);
  uv_idle_init(c.loop, &c.more);
  c.more.data = &c;
  uv_signal_init(c.loop, &c.sigterm);
  uv_signal_init(c.loop, &c.sigint);
  c.sigterm.data = c.sigint.data = &c;
  uv_signal_start(&c.sigterm, signal_cb, SIGTERM);
  uv_signal_start(&c.sigint, signal_cb, SIGINT);
  uv_signal_init(c.loop, &c.sighup);
  c.sighup.data = &c;
  uv_signal_start(&c.sighup, sighup_cb, SIGHUP);
  if (o->metrics && (rc = fc_metrics_start(c.loop, o->metrics, render_metrics, &c, &c.metrics, err))) {
    c.stopping = 1; /* close what is open, as a stop would */
    goto stop;
  }
  if (o->store) fc_info("store %s (sentinel %.12s...): daemons that see it share it", o->store, c.store_id);
  fc_info("coordinator on %s, events on %s, database %s, lease timeout %.1f s%s%s%s", o->endpoint, o->events_endpoint,
          o->db_path, o->lease_timeout, c.curve.enabled ? ", CURVE" : "", o->metrics ? ", metrics on http://" : "",
          o->metrics ? o->metrics : "");
  /* Leases from before a restart: while we were down no heartbeat could reach us, so every
   * holder gets a full lease period from now before its silence counts. */
  int n;
  if (fc_db_leases_grace(c.db, fc_net_wall() + o->lease_timeout, &n, err) == 0 && n)
    fc_info("%d lease(s) from before the restart extended by %.1f s", n, o->lease_timeout);
  fc_coord_expire_cb(&c.expire);
  NOTIFY("READY=1\nSTATUS=serving on %s", o->endpoint);
  uv_run(c.loop, UV_RUN_DEFAULT);
  rc = 0;
stop:
  fc_metrics_stop(&c.metrics);
  uv_close((uv_handle_t *)&c.poll, close_cb);
  if (c.zap) uv_close((uv_handle_t *)&c.zap_poll, close_cb);
  uv_close((uv_handle_t *)&c.expire, close_cb);
  uv_close((uv_handle_t *)&c.sweep, close_cb);
  uv_close((uv_handle_t *)&c.more, close_cb);
  uv_close((uv_handle_t *)&c.sigterm, close_cb);
  uv_close((uv_handle_t *)&c.sigint, close_cb);
  uv_close((uv_handle_t *)&c.sighup, close_cb);
  uv_run(c.loop, UV_RUN_DEFAULT);
  uv_loop_close(c.loop);
  free(c.loop);
out:
  zmq_close(c.router);
  zmq_close(c.pub);
  fc_zap_stop(&c.zap);
  zmq_ctx_term(c.zctx);
  fc_curve_allow_free(&c.allow);
  while (c.nworkers) fc_coord_drop_worker(&c, c.nworkers - 1);
  free(c.workers);
  fc_holders_close(&c.holders);
  fc_db_close(&c.db);
  return rc;
}
