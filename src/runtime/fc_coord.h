/* The coordinator: one libuv loop over a ZeroMQ ROUTER (workers and clients), a PUB socket for
 * events and the SQLite store. It keeps no state that matters outside the database, so a
 * coordinator killed at any point and started again continues every job. */
#ifndef FC_COORD_H
#define FC_COORD_H

#include "fc_util.h"

typedef struct fc_coord_opts {
  const char *endpoint;        /* ROUTER: ipc://RUN/coord.ipc or tcp://HOST:PORT */
  const char *events_endpoint; /* PUB */
  const char *db_path;
  double lease_timeout; /* seconds without a heartbeat before a task goes back to the queue */
  const char *curve_key;   /* our CURVE key file (fusectl keygen); NULL: no CURVE */
  const char *curve_allow; /* keys with every role: a directory of *.pub or a file */
  const char *curve_workers;   /* keys that may act as workers only */
  const char *curve_operators; /* keys that may submit, cancel, retry and read */
  const char *curve_readers;   /* keys that may only read (status, list, logs, workers, artifacts) */
} fc_coord_opts_t;

/* Workers known at once: a registration past this first evicts one silent for a lease period,
 * else it is refused. Workers not seen for FC_COORD_WORKER_TTL are forgotten (also in the store). */
#define FC_COORD_MAX_WORKERS 4096
#define FC_COORD_WORKER_TTL 600.0
/* Messages handled per turn of the event loop before timers and signals get their turn. */
#define FC_COORD_BATCH 256
/* At most one warning of a kind per this many seconds (the rest are counted). */
#define FC_COORD_WARN_INTERVAL 5.0

/* Runs until SIGTERM or SIGINT (returns 0) or a fatal error. */
int fc_coord_run(const fc_coord_opts_t *opts, fc_err_t *err);

#endif
