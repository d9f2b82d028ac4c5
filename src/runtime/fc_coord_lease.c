/* The coordinator's side of the workers (see fc_coord_impl.h): the table of known workers, a
 * worker's registration and identity (an id is bound to the connection and key it registered
 * from), the dispatch of queued tasks to idle workers, lease expiry, and the workers' reports:
 * heartbeats (acknowledged with the lease length, the worker's fence) and results (recorded
 * only under the lease's fencing token). */
#include "fc_coord_impl.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- the worker table: a hash by id, plus a dense array for dispatch ---- */

static size_t bucket_of(const char *id) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 16777619u;
  return h & (NBUCKETS - 1);
}

worker_t *fc_coord_find_worker(coord_t *c, const char *id) {
  for (worker_t *w = c->buckets[bucket_of(id)]; w; w = w->next_in_bucket)
    if (!strcmp(w->id, id)) return w;
  return NULL;
}

static void free_caps(worker_t *w) {
  for (size_t i = 0; i < w->ncaps; i++) free(w->caps[i]);
  free(w->caps);
  w->caps = NULL, w->ncaps = 0;
}

void fc_coord_drop_worker(coord_t *c, size_t i) {
  worker_t *w = c->workers[i];
  worker_t **pp = &c->buckets[bucket_of(w->id)];
  while (*pp != w) pp = &(*pp)->next_in_bucket;
  *pp = w->next_in_bucket;
  c->workers[i] = c->workers[--c->nworkers];
  free_caps(w);
  free(w->id);
  free(w);
}

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
    fc_coord_drop_worker(c, i);
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

void fc_coord_send_to_worker(coord_t *c, worker_t *w, const fc_msg_t *m) {
  const void *env[1] = {w->ident};
  size_t len[1] = {w->nident};
  fc_err_t err;
  if (fc_net_send(c->router, env, len, 1, m, &err))
    WARN_LIMITED_AT(c, warn_send, 0, m->task, w->id, "cannot send %s to the worker: %s", fc_msg_type_name(m->type), err.msg);
}

/* ---- identity ---- */

/* A worker's messages other than register: from the connection and key it registered with. */
static worker_t *check_worker_identity(coord_t *c, const fc_msg_t *m) {
  worker_t *w = fc_coord_find_worker(c, m->id);
  const char *why = !w ? "is not registered (register first)" : !same_connection(c, w) ? "is registered from another connection" : NULL;
  if (!why) {
    w->last_seen = fc_net_wall();
    return w;
  }
  char msg[600];
  snprintf(msg, sizeof msg, "refused %s: worker %s %s", fc_msg_type_name(m->type), m->id, why);
  WARN_LIMITED_AT(c, warn_ident, 0, m->task, m->id, "%s", msg);
  fc_coord_reply(c, 0, msg, NULL);
  return NULL;
}

/* A register: binds the id to this connection. An id live on another key is refused; the same
 * id from a new connection is a new process of that worker, whose old leases the store releases. */
static worker_t *register_worker(coord_t *c, const fc_msg_t *m, double now, int *rebound) {
  worker_t *w = fc_coord_find_worker(c, m->id);
  *rebound = 0;
  if (w && !same_connection(c, w)) {
    if (strcmp(w->key, c->key) && now - w->last_seen <= c->o->lease_timeout) {
      char msg[600];
      snprintf(msg, sizeof msg, "refused register: worker id %s is in use by another key", m->id);
      WARN_LIMITED_AT(c, warn_ident, 0, 0, m->id, "%s", msg);
      fc_coord_reply(c, 0, msg, NULL);
      return NULL;
    }
    *rebound = 1;
    w->busy = 0, w->waiting = 0, w->recorded = 0;
  }
  if (!w && !(w = add_worker(c, m->id))) {
    WARN_LIMITED_AT(c, warn_full, 0, 0, m->id, "refused register: %d workers known, none silent", FC_COORD_MAX_WORKERS);
    fc_coord_reply(c, 0, "refused register: the coordinator knows too many workers", NULL);
    return NULL;
  }
  if (*rebound || !w->nident) bind_connection(c, w), w->recorded = 0;
  w->last_seen = now;
  return w;
}

/* ---- events, dispatch and lease expiry ---- */

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

void fc_coord_publish(coord_t *c) {
  fc_err_t err;
  if (fc_db_events_after(c->db, c->last_event, publish_cb, c, &c->last_event, &err))
    fc_warn("reading events: %s", err.msg);
}

static void rearm(coord_t *c);

/* Offers queued tasks to every idle, live worker, or only to `only` when just that worker
 * became idle (the others were offered everything when the queue last changed). */
void fc_coord_dispatch(coord_t *c, worker_t *only) {
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
  fc_coord_publish(c);
  rearm(c);
}

void fc_coord_expire_cb(uv_timer_t *t) {
  coord_t *c = t->data;
  int n;
  fc_err_t err;
  if (fc_db_expire(c->db, fc_net_wall(), &n, &err)) fc_log(FC_LOG_ERROR, "expiring leases: %s", err.msg);
  if (n) fc_info("%d lapsed lease(s) re-queued or failed", n);
  fc_coord_dispatch(c, NULL);
  fc_coord_drain(c);
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
  uv_timer_start(&c->expire, fc_coord_expire_cb, ms, 0);
}

/* ---- the workers' messages ---- */

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
  fc_coord_reply(c, 1, NULL, text);
  free(text);
  json_decref(ack);
}

/* Tells a worker its heartbeat held: the lease and its length, so it knows how long it may
 * write without hearing from us again (its fence). */
static void ack_heartbeat(coord_t *c, const fc_msg_t *m) {
  char text[160];
  snprintf(text, sizeof text, "{\"task\":%lld,\"attempt\":%lld,\"lease\":%.3f}", (long long)m->task,
           (long long)m->attempt, c->o->lease_timeout);
  fc_coord_reply(c, 1, NULL, text);
}

int fc_coord_handle_worker(coord_t *c, fc_msg_t *m) {
  fc_err_t err = {0};
  double now = fc_net_wall();
  worker_t *w;
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
      fc_coord_publish(c);
      fc_coord_dispatch(c, NULL);
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
    fc_coord_dispatch(c, w);
    break;
  case FC_MSG_HEARTBEAT: {
    if (!(w = check_worker_identity(c, m))) break;
    int64_t job = 0;
    int rc = fc_db_heartbeat(c->db, m, now, c->o->lease_timeout, &job, &err);
    if (rc < 0) fc_warn("heartbeat: %s", err.msg);
    if (rc == 1) { /* lapsed, reassigned or cancelled: tell the worker to stop */
      fc_msg_t cm = {.type = FC_MSG_CANCEL, .task = m->task};
      fc_coord_send_to_worker(c, w, &cm);
      if (w->busy == m->task) w->busy = 0;
    } else if (rc == 0) {
      w->busy = m->task, w->assigned = now;
      ack_heartbeat(c, m);
      fc_msg_t e = {.type = FC_MSG_EVENT, .job = job, .task = m->task, .fraction = m->fraction, .time = now};
      e.state = (char *)"task.progress", e.message = m->message;
      fc_net_send(c->pub, NULL, NULL, 0, &e, &err);
    }
    fc_coord_publish(c);
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
      fc_coord_send_to_worker(c, w, &cm);
    }
    fc_coord_dispatch(c, NULL);
    break;
  }
  case FC_MSG_BYE:
    if (!(w = check_worker_identity(c, m))) break;
    w->waiting = 0, w->last_seen = 0, w->recorded = 0;
    if (fc_db_worker_gone(c->db, m->id, now, &err)) fc_warn("%s", err.msg);
    fc_log_at(FC_LOG_INFO, 0, 0, m->id, "worker left");
    break;
  default: return 0;
  }
  return 1;
}
