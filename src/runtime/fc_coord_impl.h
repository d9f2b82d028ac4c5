/* What the coordinator's two halves share: fc_coord.c (the loop, the socket, requests from
 * clients, roles, /metrics) and fc_coord_lease.c (the worker table, registration, dispatch of
 * queued tasks, lease expiry and the workers' reports). Internal to those files. */
#ifndef FC_COORD_IMPL_H
#define FC_COORD_IMPL_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "fc_coord.h"
#include "fc_db.h"
#include "fc_holders.h"
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

/* ---- fc_coord_lease.c ---- */

worker_t *fc_coord_find_worker(coord_t *c, const char *id);
/* Forgets c->workers[i] (the last entry takes its place). */
void fc_coord_drop_worker(coord_t *c, size_t i);
void fc_coord_send_to_worker(coord_t *c, worker_t *w, const fc_msg_t *m);
/* Sends the events the last transactions appended to the log. */
void fc_coord_publish(coord_t *c);
/* Offers queued tasks to every idle, live worker, or only to `only` (see fc_coord_lease.c). */
void fc_coord_dispatch(coord_t *c, worker_t *only);
/* The lease timer: lapsed leases back to the queue (or failed), then dispatch and drain. */
void fc_coord_expire_cb(uv_timer_t *t);
/* A worker's message (register, lease request, heartbeat, result, bye), handled; 0 when m is
 * not one of them. The sender's role was checked. */
int fc_coord_handle_worker(coord_t *c, fc_msg_t *m);

/* ---- fc_coord.c ---- */

/* Answers the message being handled (its envelope is in c). */
void fc_coord_reply(coord_t *c, int ok, const char *error, const char *json);
/* Reads every message the ROUTER has, FC_COORD_BATCH at a time. */
void fc_coord_drain(coord_t *c);

#endif
