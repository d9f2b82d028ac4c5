/* Coordinator loop (see fc_coord.h). ZeroMQ signals its fd edge-triggered: uv_poll only says
 * "something changed", so every wake-up and every send is followed by draining the socket while
 * ZMQ_EVENTS reports POLLIN, or a message can sit unread until the next unrelated wake-up. A
 * drain handles at most FC_COORD_BATCH messages and leaves the rest to an idle callback, so
 * lease expiry and signals are never starved by a backlog.
 *
 * Trust: with CURVE, the ZAP handler tags each connection with its client key, and each message
 * needs the role its type asks for (worker, operator, reader). A worker id is bound to the
 * connection (routing id) and key it registered from; its other messages are accepted only from
 * there, and task reports only under the lease's fencing token. */
#include "fc_coord.h"
#include "fc_coord_rm.h"

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
#include "fc_metrics.h"
#include "fc_msg.h"
#include "fc_net.h"
#include "fc_zap.h"

#define MAX_ENV 4
#define NBUCKETS 8192 /* > 2 * FC_COORD_MAX_WORKERS, a power of two */

typedef struct worker {
  char *id;
  struct worker *next_in_bucket;
  uint8_t ident[256]; /* ROUTER routing id of the connection it registered from */
  size_t nident;
  char key[41];       /* its CURVE key ("" without CURVE) */
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
  uv_timer_t expire, sweep;
  uv_idle_t more; /* runs drain again while a backlog is left */
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
  worker_t **workers; /* every known worker, for dispatch */
  size_t nworkers;
  worker_t *buckets[NBUCKETS]; /* the same by id */
  int stopping;
  /* the envelope of the message being handled, for replies, and its sender's key and roles */
  const void *env[MAX_ENV];
  size_t envlen[MAX_ENV];
  size_t nenv;
  char key[41];
  unsigned roles;
  fc_metrics_t *metrics; /* the /metrics server, when asked for */
  uint64_t fetched_bytes, fetches; /* artifact downloads between stores the daemons reported */
  fc_ratelimit_t warn_bad, warn_role, warn_ident, warn_send, warn_full;
} coord_t;

static void drain(coord_t *c);

/* ---- the worker table: a hash by id, plus a dense array for dispatch ---- */

static size_t bucket_of(const char *id) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 16777619u;
  return h & (NBUCKETS - 1);
}

static worker_t *find_worker(coord_t *c, const char *id) {
  for (worker_t *w = c->buckets[bucket_of(id)]; w; w = w->next_in_bucket)
    if (!strcmp(w->id, id)) return w;
  return NULL;
}

static void free_caps(worker_t *w) {
  for (size_t i = 0; i < w->ncaps; i++) free(w->caps[i]);
  free(w->caps);
  w->caps = NULL, w->ncaps = 0;
}

static void drop_worker(coord_t *c, size_t i) {
  worker_t *w = c->workers[i];
  worker_t **pp = &c->buckets[bucket_of(w->id)];
  while (*pp != w) pp = &(*pp)->next_in_bucket;
  *pp = w->next_in_bucket;
  c->workers[i] = c->workers[--c->nworkers];
  free_caps(w);
  free(w->id);
  free(w);
}

/* Warns at most once per FC_COORD_WARN_INTERVAL for each kind of trouble (a hostile or broken
 * peer must not fill the log), saying how many were held back. */
#define WARN_LIMITED_AT(c, rl, job, task, worker, ...)                                          \
  do {                                                                                          \
    unsigned held_;                                                                             \
    if (fc_ratelimit_pass(&(c)->rl, FC_COORD_WARN_INTERVAL, &held_)) {                          \
      char m_[1200];                                                                            \
      snprintf(m_, sizeof m_, __VA_ARGS__);                                                     \
      if (held_) fc_log_at(FC_LOG_WARN, job, task, worker, "%s (%u more like it held back)", m_, held_); \
      else fc_log_at(FC_LOG_WARN, job, task, worker, "%s", m_);                                 \
    }                                                                                           \
  } while (0)
#define WARN_LIMITED(c, rl, ...) WARN_LIMITED_AT(c, rl, 0, 0, NULL, __VA_ARGS__)

/* A new worker entry; when the table is full, one silent for a lease period and holding no
 * task makes room, else NULL. */
static worker_t *add_worker(coord_t *c, const char *id) {
  double now = fc_net_wall();
  if (c->nworkers >= FC_COORD_MAX_WORKERS) {
    size_t i;
    for (i = 0; i < c->nworkers; i++)
      if (!c->workers[i]->busy && now - c->workers[i]->last_seen > c->o->lease_timeout) break;
    if (i == c->nworkers) return NULL;
    fc_err_t err;
    fc_db_worker_forget(c->db, c->workers[i]->id, &err);
    drop_worker(c, i);
  }
  worker_t *w = fc_xcalloc(1, sizeof *w);
  w->id = fc_xstrdup(id);
  size_t b = bucket_of(id);
  w->next_in_bucket = c->buckets[b], c->buckets[b] = w;
  if (!(c->nworkers & (c->nworkers + 1))) /* grow at 1, 2, 4, ... entries */
    c->workers = fc_xrealloc(c->workers, (2 * c->nworkers + 2) * sizeof *c->workers);
  c->workers[c->nworkers++] = w;
  return w;
}

static int same_connection(const coord_t *c, const worker_t *w) {
  return c->nenv >= 1 && w->nident == c->envlen[0] && !memcmp(w->ident, c->env[0], w->nident) &&
         !strcmp(w->key, c->key);
}

static void bind_connection(coord_t *c, worker_t *w) {
  w->nident = c->nenv >= 1 && c->envlen[0] <= sizeof w->ident ? c->envlen[0] : 0;
  memcpy(w->ident, c->env[0], w->nident);
  memcpy(w->key, c->key, sizeof w->key);
}

/* The session text stored for a worker: its routing id in hex (a new process, a new one). */
static void session_of(const worker_t *w, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < w->nident; i++) out[2 * i] = hex[w->ident[i] >> 4], out[2 * i + 1] = hex[w->ident[i] & 15];
  out[2 * w->nident] = 0;
}

static void send_to_worker(coord_t *c, worker_t *w, const fc_msg_t *m) {
  const void *env[1] = {w->ident};
  size_t len[1] = {w->nident};
  fc_err_t err;
  if (fc_net_send(c->router, env, len, 1, m, &err))
    WARN_LIMITED_AT(c, warn_send, 0, m->task, w->id, "cannot send %s to the worker: %s", fc_msg_type_name(m->type), err.msg);
}

static void reply(coord_t *c, int ok, const char *error, const char *json) {
  if (json && strlen(json) > FC_MSG_MAX_TEXT) /* pages keep far below this; never send past it */
    ok = 0, error = "the reply would be too long; ask for a smaller page (--limit)", json = NULL;
  fc_msg_t r = {.type = FC_MSG_REPLY, .ok = ok != 0};
  fc_msg_set_str(&r.error, error);
  fc_msg_set_str(&r.text, json);
  fc_err_t err;
  if (fc_net_send(c->router, c->env, c->envlen, c->nenv, &r, &err)) WARN_LIMITED(c, warn_send, "cannot reply: %s", err.msg);
  fc_msg_clear(&r);
}

/* ---- roles and identity ---- */

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
  reply(c, 0, why, NULL);
  return 0;
}

/* A worker's messages other than register: from the connection and key it registered with. */
static worker_t *check_worker_identity(coord_t *c, const fc_msg_t *m) {
  worker_t *w = find_worker(c, m->id);
  const char *why = !w ? "is not registered (register first)" : !same_connection(c, w) ? "is registered from another connection" : NULL;
  if (!why) {
    w->last_seen = fc_net_wall();
    return w;
  }
  char msg[600];
  snprintf(msg, sizeof msg, "refused %s: worker %s %s", fc_msg_type_name(m->type), m->id, why);
  WARN_LIMITED_AT(c, warn_ident, 0, m->task, m->id, "%s", msg);
  reply(c, 0, msg, NULL);
  return NULL;
}

/* A register: binds the id to this connection. An id live on another key is refused; the same
 * id from a new connection is a new process of that worker, whose old leases the store releases. */
static worker_t *register_worker(coord_t *c, const fc_msg_t *m, double now, int *rebound) {
  worker_t *w = find_worker(c, m->id);
  *rebound = 0;
  if (w && !same_connection(c, w)) {
    if (strcmp(w->key, c->key) && now - w->last_seen <= c->o->lease_timeout) {
      char msg[600];
      snprintf(msg, sizeof msg, "refused register: worker id %s is in use by another key", m->id);
      WARN_LIMITED_AT(c, warn_ident, 0, 0, m->id, "%s", msg);
      reply(c, 0, msg, NULL);
      return NULL;
    }
    *rebound = 1;
    w->busy = 0, w->waiting = 0, w->recorded = 0;
  }
  if (!w && !(w = add_worker(c, m->id))) {
    WARN_LIMITED_AT(c, warn_full, 0, 0, m->id, "refused register: %d workers known, none silent", FC_COORD_MAX_WORKERS);
    reply(c, 0, "refused register: the coordinator knows too many workers", NULL);
    return NULL;
  }
  if (*rebound || !w->nident) bind_connection(c, w), w->recorded = 0;
  w->last_seen = now;
  return w;
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
  /* what an operator must see stands out: an attempt that failed is a warning, a task or job
   * that failed for good an error */
  fc_log_level_t level = !strcmp(type, "task.failed") || !strcmp(type, "job.failed") ? FC_LOG_ERROR
                         : !strcmp(type, "task.retry")                                ? FC_LOG_WARN
                                                                                       : FC_LOG_INFO;
  fc_log_at(level, job, task, NULL, "event %s: %s", type, message);
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
    worker_t *w = c->workers[i];
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
      WARN_LIMITED_AT(c, warn_send, a.job, a.task, w->id, "worker unreachable (%s); the task goes back to the queue",
                      err.msg);
      fc_db_fail(c->db, a.task, w->id, a.attempt, NULL, true, now, &err);
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
  if (fc_db_next_deadline(c->db, fc_net_wall(), &d, &err) || d == 0) {
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
      worker_t *w = find_worker(c, h[i].worker);
      if (!w) continue;
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = h[i].task};
      send_to_worker(c, w, &cm);
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
  reply(c, rc == 0, rc ? err.msg : NULL, json ? json : "{}");
  free(json);
  return 1;
}

/* Tells a worker its heartbeat held: the lease and its length, so it knows how long it may
 * write without hearing from us again (its fence). */
static void ack_heartbeat(coord_t *c, const fc_msg_t *m) {
  char text[160];
  snprintf(text, sizeof text, "{\"task\":%lld,\"attempt\":%lld,\"lease\":%.3f}", (long long)m->task,
           (long long)m->attempt, c->o->lease_timeout);
  reply(c, 1, NULL, text);
}

static void handle(coord_t *c, fc_msg_t *m) {
  fc_err_t err = {0};
  double now = fc_net_wall();
  worker_t *w;
  if (!check_role(c, m)) return;
  if (handle_artifacts(c, m)) return;
  switch (m->type) {
  case FC_MSG_REGISTER: {
    int rebound;
    if (!(w = register_worker(c, m, now, &rebound))) break;
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
    char session[2 * sizeof w->ident + 1];
    session_of(w, session);
    int released = 0;
    if (fc_db_worker_seen(c->db, m, m->id, session, now, &released, &err)) fc_warn("%s", err.msg);
    if (released) {
      fc_log_at(FC_LOG_INFO, 0, 0, m->id, "worker came back as a new process: %d lease(s) of the old one released", released);
      publish(c);
      dispatch(c, NULL);
    }
    w->recorded = now;
    break;
  }
  case FC_MSG_LEASE_REQUEST:
    if (!(w = check_worker_identity(c, m))) break;
    /* A request crossing an assignment in flight must not get the worker a second task; a
     * worker that never answered its assignment is free again once that lease could lapse. */
    if (w->busy && now - w->assigned < c->o->lease_timeout) break;
    w->busy = 0, w->waiting = 1;
    dispatch(c, w);
    break;
  case FC_MSG_HEARTBEAT: {
    if (!(w = check_worker_identity(c, m))) break;
    int64_t job = 0;
    int rc = fc_db_heartbeat(c->db, m, now, c->o->lease_timeout, &job, &err);
    if (rc < 0) fc_warn("heartbeat: %s", err.msg);
    if (rc == 1) { /* lapsed, reassigned or cancelled: tell the worker to stop */
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = m->task};
      send_to_worker(c, w, &cm);
      if (w->busy == m->task) w->busy = 0;
    } else if (rc == 0) {
      w->busy = m->task, w->assigned = now;
      ack_heartbeat(c, m);
      fc_msg_t e = {.type = FC_MSG_EVENT, .job = job, .task = m->task, .fraction = m->fraction, .time = now};
      e.state = (char *)"task.progress", e.message = m->message;
      fc_net_send(c->pub, NULL, NULL, 0, &e, &err);
    }
    publish(c);
    rearm(c);
    break;
  }
  case FC_MSG_RESULT: {
    if (!(w = check_worker_identity(c, m))) break;
    if (w->busy == m->task) w->busy = 0;
    int rc;
    if (m->ok) {
      rc = fc_db_complete(c->db, m->task, m->id, m->attempt, m->arts, m->narts, m, now, &err);
      if (rc == 0 && fc_holders_add(c->holders, m->id, m->arts, m->narts, &err)) fc_warn("%s", err.msg);
      if (rc == FC_EINVAL) rc = fc_db_fail(c->db, m->task, m->id, m->attempt, err.msg, false, now, &err);
    } else {
      rc = fc_db_fail(c->db, m->task, m->id, m->attempt, m->error, m->handback, now, &err);
    }
    if (rc < 0) fc_log_at(FC_LOG_ERROR, 0, m->task, m->id, "recording the task's result: %s", err.msg);
    if (rc == 1) { /* a superseded attempt: it must not think its work counted */
      fc_log_at(FC_LOG_INFO, 0, m->task, m->id, "refusing a result under lease %lld: not the current lease",
                (long long)m->attempt);
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = m->task};
      send_to_worker(c, w, &cm);
    }
    dispatch(c, NULL);
    break;
  }
  case FC_MSG_BYE:
    if (!(w = check_worker_identity(c, m))) break;
    w->waiting = 0, w->last_seen = 0, w->recorded = 0;
    if (fc_db_worker_gone(c->db, m->id, now, &err)) fc_warn("%s", err.msg);
    fc_log_at(FC_LOG_INFO, 0, 0, m->id, "worker left");
    break;
  default: handle_client(c, m);
  }
}

/* Reads every message the ROUTER has (see the note at the top). */
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

static void drain(coord_t *c) {
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

static void more_cb(uv_idle_t *h) { drain(h->data); }

/* Forgets workers silent for FC_COORD_WORKER_TTL, here and in the store. */
static void sweep_cb(uv_timer_t *t) {
  coord_t *c = t->data;
  double before = fc_net_wall() - FC_COORD_WORKER_TTL;
  for (size_t i = 0; i < c->nworkers;) {
    if (!c->workers[i]->busy && c->workers[i]->last_seen < before) drop_worker(c, i);
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
  expire_cb(&c.expire);
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
  while (c.nworkers) drop_worker(&c, c.nworkers - 1);
  free(c.workers);
  fc_holders_close(&c.holders);
  fc_db_close(&c.db);
  return rc;
}
