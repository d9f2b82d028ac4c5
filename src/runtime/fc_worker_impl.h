/* What the worker library's two halves share: fc_worker.c (the daemon: socket, loop, leases,
 * compute threads) and fc_worker_task.c (what an executor sees: its context, its work
 * directory, its outputs' artifacts; the test executors). Internal to those files. */
#ifndef FC_WORKER_IMPL_H
#define FC_WORKER_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "fc_worker.h"

/* A task's context, shared by the loop thread (cancel, the lease) and the compute thread
 * (progress, figures): the flags are atomic, the rest is under mu while a compute thread runs. */
struct fc_task_ctx {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* fence waiters: a fresh ack or the lease lost */
  double fraction;
  char message[512];
  fc_msg_fig_t figs[32];
  size_t nfigs;
  atomic_int cancel;
  atomic_int lost;    /* the coordinator said the lease is gone */
  atomic_int leaving; /* the daemon is stopping: fence waits give up */
  double valid_until; /* monotonic seconds: the lease holds at least until then */
  double hb_last, hb_prev; /* send times of the last two heartbeats */
  double progressed;       /* monotonic seconds of the compute thread's last progress or figure */
};

/* OUT0.work, the parent of every attempt's work directory of t (NULL without outputs). */
char *fc_worker_work_parent(const fc_task_t *t);

#endif
