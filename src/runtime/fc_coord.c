/* Coordinator loop (see fc_coord.h). ZeroMQ signals its fd edge-triggered: uv_poll only says
 * "something changed", so every wake-up and every send is followed by draining the socket while
 * ZMQ_EVENTS reports POLLIN, or a message can sit unread until the next unrelated wake-up. */
#include "fc_coord.h"

#include <errno.h>
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
#include "fc_db.h"
#include "fc_holders.h"
#include "fc_job.h"
#include "fc_msg.h"
#include "fc_net.h"
#include "fc_zap.h"

#define MAX_ENV 4

typedef struct worker {
  char *id;
  uint8_t ident[256]; /* ROUTER routing id */
  size_t nident;
  char **caps;
  size_t ncaps;
  int waiting;      /* asked for a task and has none */
  int64_t busy;     /* task assigned and not yet reported */
  double assigned;  /* wall time of that assignment */
  double last_seen; /* wall time */
  double recorded;  /* when the database last got its registration */
} worker_t;

typedef struct coord {
  const fc_coord_opts_t *o;
  uv_loop_t *loop;
  uv_poll_t poll;
  uv_timer_t expire;
  uv_signal_t sigterm, sigint, sighup;
  void *zctx, *router, *pub;
  fc_zap_t *zap;
  uv_poll_t zap_poll;
  fc_curve_t curve;
  fc_curve_allow_t allow;
  fc_db_t *db;
  fc_holders_t *holders;
  char store_id[65]; /* the store's sentinel ("" : no --store) */
  int64_t last_event;
  worker_t *workers;
  size_t nworkers;
  int stopping;
  /* the envelope of the message being handled, for replies */
  const void *env[MAX_ENV];
  size_t envlen[MAX_ENV];
  size_t nenv;
} coord_t;

static void drain(coord_t *c);

static worker_t *find_worker(coord_t *c, const char *id) {
  for (size_t i = 0; i < c->nworkers; i++)
    if (!strcmp(c->workers[i].id, id)) return &c->workers[i];
  return NULL;
}

static void free_caps(worker_t *w) {
  for (size_t i = 0; i < w->ncaps; i++) free(w->caps[i]);
  free(w->caps);
  w->caps = NULL, w->ncaps = 0;
}

static worker_t *touch_worker(coord_t *c, const char *id) {
  worker_t *w = find_worker(c, id);
  if (!w) {
    c->workers = fc_xrealloc(c->workers, (c->nworkers + 1) * sizeof *c->workers);
    w = &c->workers[c->nworkers++];
    memset(w, 0, sizeof *w);
    w->id = fc_xstrdup(id);
  }
  if (c->nenv >= 1 && c->envlen[0] <= sizeof w->ident) {
    memcpy(w->ident, c->env[0], c->envlen[0]);
    w->nident = c->envlen[0];
  }
  w->last_seen = fc_net_wall();
  return w;
}

static void send_to_worker(coord_t *c, worker_t *w, const fc_msg_t *m) {
  const void *env[1] = {w->ident};
  size_t len[1] = {w->nident};
  fc_err_t err;
  if (fc_net_send(c->router, env, len, 1, m, &err))
    fc_warn("cannot send %s to worker %s: %s", fc_msg_type_name(m->type), w->id, err.msg);
}

static void reply(coord_t *c, int ok, const char *error, const char *json) {
  fc_msg_t r = {.type = FC_MSG_REPLY, .ok = ok != 0};
  fc_msg_set_str(&r.error, error);
  fc_msg_set_str(&r.text, json);
  fc_err_t err;
  if (fc_net_send(c->router, c->env, c->envlen, c->nenv, &r, &err)) fc_warn("cannot reply: %s", err.msg);
  fc_msg_clear(&r);
}

static void publish_cb(void *arg, int64_t id, double time, int64_t job, int64_t task, const char *type,
                       const char *message) {
  coord_t *c = arg;
  (void)id;
  fc_msg_t e = {.type = FC_MSG_EVENT, .job = job, .task = task, .time = time};
  fc_msg_set_str(&e.state, type);
  fc_msg_set_str(&e.message, message);
  fc_err_t err;
  fc_net_send(c->pub, NULL, NULL, 0, &e, &err); /* PUB drops when nobody listens; fine */
  fc_msg_clear(&e);
  fc_info("event job=%lld task=%lld %s: %s", (long long)job, (long long)task, type, message);
}

/* Sends the events the last transactions appended to the log. */
static void publish(coord_t *c) {
  fc_err_t err;
  if (fc_db_events_after(c->db, c->last_event, publish_cb, c, &c->last_event, &err))
    fc_warn("reading events: %s", err.msg);
}

static void rearm(coord_t *c);

/* Offers queued tasks to every idle, live worker, or only to `only` when just that worker
 * became idle (the others were offered everything when the queue last changed). */
static void dispatch(coord_t *c, worker_t *only) {
  double now = fc_net_wall();
  for (size_t i = 0; i < c->nworkers && !c->stopping; i++) {
    worker_t *w = &c->workers[i];
    if ((only && w != only) || !w->waiting || w->busy || now - w->last_seen > c->o->lease_timeout) continue;
    fc_msg_t a;
    fc_err_t err;
    int rc = fc_db_lease_next(c->db, w->id, w->caps, w->ncaps, now, c->o->lease_timeout, &a, &err);
    if (rc < 0) {
      fc_log(FC_LOG_ERROR, "leasing: %s", err.msg);
      return;
    }
    if (rc == 0) continue;
    const void *env[1] = {w->ident};
    size_t len[1] = {w->nident};
    if (fc_net_send(c->router, env, len, 1, &a, &err)) {
      /* unreachable (ROUTER_MANDATORY): give the task straight back */
      fc_warn("worker %s unreachable (%s); task %lld goes back to the queue", w->id, err.msg, (long long)a.task);
      fc_db_fail(c->db, a.task, w->id, NULL, true, now, &err);
      w->waiting = 0;
    } else {
      w->waiting = 0, w->busy = a.task, w->assigned = now;
    }
    fc_msg_clear(&a);
  }
  publish(c);
  rearm(c);
}

static void expire_cb(uv_timer_t *t) {
  coord_t *c = t->data;
  int n;
  fc_err_t err;
  if (fc_db_expire(c->db, fc_net_wall(), &n, &err)) fc_log(FC_LOG_ERROR, "expiring leases: %s", err.msg);
  if (n) fc_info("%d lapsed lease(s) re-queued or failed", n);
  dispatch(c, NULL);
  drain(c);
}

/* Wakes up just after the earliest lease deadline. */
static void rearm(coord_t *c) {
  double d;
  fc_err_t err;
  if (fc_db_next_deadline(c->db, &d, &err) || d == 0) {
    uv_timer_stop(&c->expire);
    return;
  }
  double wait = d - fc_net_wall();
  uint64_t ms = wait <= 0 ? 0 : (uint64_t)(wait * 1000) + 5;
  uv_timer_start(&c->expire, expire_cb, ms, 0);
}

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
  case FC_MSG_STATUS: rc = fc_db_status_json(c->db, m->job, &json, &err); break;
  case FC_MSG_LIST: rc = fc_db_list_json(c->db, &json, &err); break;
  case FC_MSG_LOGS: rc = fc_db_logs_json(c->db, m->job, m->since, &json, &err); break;
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
      worker_t *w = find_worker(c, h[i].worker);
      if (!w) continue;
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = h[i].task};
      send_to_worker(c, w, &cm);
    }
    if (rc == 0) free(h);
    break;
  }
  case FC_MSG_RETRY:
    if (m->task) rc = fc_db_task_retry(c->db, m->task, now, &err);
    else if (m->job) rc = fc_db_job_retry(c->db, m->job, now, &err);
    else rc = fc_err_set(&err, FC_EINVAL, "retry needs a job or a task");
    break;
  default: rc = fc_err_set(&err, FC_EINVAL, "unexpected %s message", fc_msg_type_name(m->type));
  }
  reply(c, rc == 0, rc ? err.msg : NULL, json ? json : "{}");
  free(json);
  dispatch(c, NULL);
}

/* The registration's artifact side: where the worker serves its artifacts, and the ack that
 * makes it READY, carrying what its artifact server needs (our allow-list, our store). */
static void register_ack(coord_t *c, const fc_msg_t *m, double now) {
  json_t *info = m->text ? json_loads(m->text, 0, NULL) : NULL;
  const char *ep = json_string_value(json_object_get(info, "artifacts"));
  const char *key = json_string_value(json_object_get(info, "key"));
  const char *store = json_string_value(json_object_get(info, "store"));
  int shared = !c->store_id[0] ? -1 : store && !strcmp(store, c->store_id) ? 1 : 0;
  fc_err_t err;
  if (fc_holders_worker(c->holders, m->id, ep, key, shared, now, &err)) fc_warn("%s", err.msg);
  json_decref(info);
  json_t *ack = json_pack("{s:s, s:s, s:s}", "store", c->o->store ? c->o->store : "", "store_id", c->store_id,
                          "worker", m->id);
  json_t *allow = json_array();
  for (size_t i = 0; i < c->allow.n; i++) json_array_append_new(allow, json_string(c->allow.keys[i]));
  json_object_set_new(ack, "allow", allow);
  char *text = json_dumps(ack, JSON_COMPACT);
  reply(c, 1, NULL, text);
  free(text);
  json_decref(ack);
}

/* Artifact location requests (LOCATE from a daemon or fusectl, HOLDING from a daemon that
 * fetched copies); 0 when m is not one of them. */
static int handle_artifacts(coord_t *c, fc_msg_t *m) {
  fc_err_t err = {0};
  char *json = NULL;
  int rc;
  if (m->type == FC_MSG_LOCATE) rc = fc_holders_locate_json(c->holders, m->job, m->inputs, m->ninputs, &json, &err);
  else if (m->type == FC_MSG_HOLDING) rc = fc_holders_add(c->holders, m->id, m->arts, m->narts, &err);
  else if (m->type == FC_MSG_WORKERS) {
    char *raw = NULL;
    rc = fc_db_workers_json(c->db, &raw, &err);
    if (rc == 0) rc = fc_holders_workers_json(c->holders, raw, &json, &err);
    free(raw);
  } else return 0;
  reply(c, rc == 0, rc ? err.msg : NULL, json ? json : "{}");
  free(json);
  return 1;
}

static void handle(coord_t *c, fc_msg_t *m) {
  fc_err_t err = {0};
  double now = fc_net_wall();
  worker_t *w;
  if (handle_artifacts(c, m)) return;
  switch (m->type) {
  case FC_MSG_REGISTER: {
    w = touch_worker(c, m->id);
    register_ack(c, m, now);
    /* idle workers re-register every tick: only a change, or a 5 s old record, is written */
    int same = w->ncaps == m->ncaps;
    for (size_t i = 0; same && i < m->ncaps; i++) same = !strcmp(w->caps[i], m->caps[i]);
    if (same && now - w->recorded < 5) break;
    free_caps(w);
    for (size_t i = 0; i < m->ncaps; i++) {
      w->caps = fc_xrealloc(w->caps, (w->ncaps + 1) * sizeof *w->caps);
      w->caps[w->ncaps++] = fc_xstrdup(m->caps[i]);
    }
    if (fc_db_worker_seen(c->db, m, m->id, now, &err)) fc_warn("%s", err.msg);
    w->recorded = now;
    break;
  }
  case FC_MSG_LEASE_REQUEST:
    w = touch_worker(c, m->id);
    /* A request crossing an assignment in flight must not get the worker a second task; a
     * worker that never answered its assignment is free again once that lease could lapse. */
    if (w->busy && now - w->assigned < c->o->lease_timeout) break;
    w->busy = 0, w->waiting = 1;
    dispatch(c, w);
    break;
  case FC_MSG_HEARTBEAT: {
    w = touch_worker(c, m->id);
    int64_t job = 0;
    int rc = fc_db_heartbeat(c->db, m, now, c->o->lease_timeout, &job, &err);
    if (rc < 0) fc_warn("heartbeat: %s", err.msg);
    if (rc == 1) { /* lapsed, reassigned or cancelled: tell the worker to stop */
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = m->task};
      send_to_worker(c, w, &cm);
      if (w->busy == m->task) w->busy = 0;
    } else if (rc == 0) {
      w->busy = m->task, w->assigned = now;
      fc_msg_t e = {.type = FC_MSG_EVENT, .job = job, .task = m->task, .fraction = m->fraction, .time = now};
      e.state = (char *)"task.progress", e.message = m->message;
      fc_net_send(c->pub, NULL, NULL, 0, &e, &err);
    }
    publish(c);
    rearm(c);
    break;
  }
  case FC_MSG_RESULT: {
    w = touch_worker(c, m->id);
    if (w->busy == m->task) w->busy = 0;
    int rc;
    if (m->ok) {
      rc = fc_db_complete(c->db, m->task, m->id, m->arts, m->narts, now, &err);
      if (rc == 0 && fc_holders_add(c->holders, m->id, m->arts, m->narts, &err)) fc_warn("%s", err.msg);
      if (rc == FC_EINVAL) rc = fc_db_fail(c->db, m->task, m->id, err.msg, false, now, &err);
    } else {
      rc = fc_db_fail(c->db, m->task, m->id, m->error, m->handback, now, &err);
    }
    if (rc < 0) fc_log(FC_LOG_ERROR, "recording the result of task %lld: %s", (long long)m->task, err.msg);
    if (rc == 1) fc_info("ignoring a late result for task %lld from %s", (long long)m->task, m->id);
    dispatch(c, NULL);
    break;
  }
  case FC_MSG_BYE:
    if ((w = find_worker(c, m->id))) w->waiting = 0, w->last_seen = 0, w->recorded = 0;
    if (fc_db_worker_gone(c->db, m->id, now, &err)) fc_warn("%s", err.msg);
    fc_info("worker %s left", m->id);
    break;
  default: handle_client(c, m);
  }
}

/* Reads every message the ROUTER has (see the note at the top). */
static void drain(coord_t *c) {
  for (;;) {
    int events = 0;
    size_t sz = sizeof events;
    if (zmq_getsockopt(c->router, ZMQ_EVENTS, &events, &sz) != 0 || !(events & ZMQ_POLLIN)) return;
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
      if (fc_msg_decode(zmq_msg_data(&frames[n - 1]), zmq_msg_size(&frames[n - 1]), &m, &err) == 0) {
        handle(c, &m);
        fc_msg_clear(&m);
      } else {
        fc_warn("dropping a message: %s", err.msg);
        reply(c, 0, err.msg, NULL);
      }
      c->nenv = 0;
    }
    for (size_t i = 0; i < n; i++) zmq_msg_close(&frames[i]);
  }
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  (void)status, (void)events;
  drain(p->data);
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

/* SIGHUP: the allow-list again (a revoked key is refused from its next connection on). */
static void sighup_cb(uv_signal_t *s, int signum) {
  coord_t *c = s->data;
  (void)signum;
  if (!c->o->curve_allow || !c->curve.enabled) {
    fc_info("SIGHUP: no allow-list to reload");
    return;
  }
  fc_curve_allow_t a;
  fc_err_t err;
  if (fc_curve_allow_load(c->o->curve_allow, &a, &err)) {
    fc_warn("SIGHUP: keeping the old allow-list: %s", err.msg);
    return;
  }
  fc_curve_allow_free(&c->allow);
  c->allow = a;
  fc_zap_allow(c->zap, &c->allow);
  fc_info("SIGHUP: allow-list %s reloaded, %zu key(s)", c->o->curve_allow, a.n);
}

static void close_cb(uv_handle_t *h) { (void)h; }

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
    if (!o->curve_allow) {
      rc = fc_err_set(err, FC_EINVAL, "CURVE needs an allow-list of client keys (--curve-allow)");
      goto out;
    }
    if ((rc = fc_curve_load_pair(o->curve_key, &c.curve, err)) || (rc = fc_curve_allow_load(o->curve_allow, &c.allow, err)))
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
  uv_signal_init(c.loop, &c.sigterm);
  uv_signal_init(c.loop, &c.sigint);
  c.sigterm.data = c.sigint.data = &c;
  uv_signal_start(&c.sigterm, signal_cb, SIGTERM);
  uv_signal_start(&c.sigint, signal_cb, SIGINT);
  uv_signal_init(c.loop, &c.sighup);
  c.sighup.data = &c;
  uv_signal_start(&c.sighup, sighup_cb, SIGHUP);
  if (o->store) fc_info("store %s (sentinel %.12s...): daemons that see it share it", o->store, c.store_id);
  fc_info("coordinator on %s, events on %s, database %s, lease timeout %.1f s%s", o->endpoint, o->events_endpoint,
          o->db_path, o->lease_timeout, c.curve.enabled ? ", CURVE" : "");
  /* Leases from before a restart: while we were down no heartbeat could reach us, so every
   * holder gets a full lease period from now before its silence counts. */
  int n;
  if (fc_db_leases_grace(c.db, fc_net_wall() + o->lease_timeout, &n, err) == 0 && n)
    fc_info("%d lease(s) from before the restart extended by %.1f s", n, o->lease_timeout);
  expire_cb(&c.expire);
  NOTIFY("READY=1\nSTATUS=serving on %s", o->endpoint);
  uv_run(c.loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&c.poll, close_cb);
  if (c.zap) uv_close((uv_handle_t *)&c.zap_poll, close_cb);
  uv_close((uv_handle_t *)&c.expire, close_cb);
  uv_close((uv_handle_t *)&c.sigterm, close_cb);
  uv_close((uv_handle_t *)&c.sigint, close_cb);
  uv_close((uv_handle_t *)&c.sighup, close_cb);
  uv_run(c.loop, UV_RUN_DEFAULT);
  uv_loop_close(c.loop);
  free(c.loop);
  rc = 0;
out:
  zmq_close(c.router);
  zmq_close(c.pub);
  fc_zap_stop(&c.zap);
  zmq_ctx_term(c.zctx);
  fc_curve_allow_free(&c.allow);
  for (size_t i = 0; i < c.nworkers; i++) free(c.workers[i].id), free_caps(&c.workers[i]);
  free(c.workers);
  fc_holders_close(&c.holders);
  fc_db_close(&c.db);
  return rc;
}
