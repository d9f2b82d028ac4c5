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
  const char *curve_allow; /* allowed client public keys: a directory of *.pub or a file;
                            * SIGHUP reads it again */
  const char *store;       /* the store jobs write to, when the coordinator sees it: it gets a
                            * sentinel so daemons on the same filesystem know (NULL: none) */
} fc_coord_opts_t;

/* Runs until SIGTERM or SIGINT (returns 0) or a fatal error. */
int fc_coord_run(const fc_coord_opts_t *opts, fc_err_t *err);

#endif
