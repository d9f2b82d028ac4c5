/* The worker library every stage daemon is built on: it registers with the coordinator, leases
 * tasks, runs each on a compute thread through an executor callback, heartbeats progress, and
 * handles cancel, SIGTERM and coordinator restarts. An engine plugs in as an fc_executor_t. */
#ifndef FC_WORKER_H
#define FC_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fc_msg.h"
#include "fc_util.h"

/* A leased task, borrowed by the executor for the duration of its run. */
typedef struct fc_task {
  int64_t id, job;
  int64_t attempt; /* the lease's fencing token: 1 for the first lease, more for each later one */
  const char *work_dir; /* this attempt's own scratch directory (OUT0.work/ATTEMPT; NULL without
                         * outputs), created on demand by the executor; removed when the task
                         * is done or the lease is lost */
  const char *kind;
  const fc_msg_kv_t *params;
  size_t nparams;
  char *const *inputs;
  size_t ninputs;
  char *const *outputs; /* write each through fc_atomic_open/commit (temp name, rename) */
  size_t noutputs;
} fc_task_t;

typedef struct fc_task_ctx fc_task_ctx_t;

/* Called from the executor's thread; all are cheap and thread-safe. */
void fc_task_progress(fc_task_ctx_t *ctx, double fraction, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void fc_task_figure(fc_task_ctx_t *ctx, const char *name, double value);
/* True once the coordinator cancelled the task or the daemon is shutting down: return
 * FC_ECANCEL soon (outputs not committed are simply abandoned). */
bool fc_task_cancelled(const fc_task_ctx_t *ctx);
/* Fencing: true while this attempt still holds its lease as far as the worker knows. Call it
 * before writing anything that outlives the attempt (checkpoints, outputs). When the lease was
 * last confirmed longer ago than it lasts (the process was stopped, the coordinator is away) it
 * waits for the coordinator's word; false once the coordinator said the lease is gone, and then
 * the executor must return at once without writing. */
bool fc_task_fence(fc_task_ctx_t *ctx);
/* The fence of the task the calling compute thread runs (NULL on other threads), for code that
 * commits outputs without a context at hand (fc_outdir_commit). */
fc_task_ctx_t *fc_task_current(void);
/* Makes the newest earlier attempt's work directory this attempt's (a rename, so a resumed
 * task continues from its checkpoints) and removes the other earlier ones. */
int fc_task_adopt_work(const fc_task_t *task, fc_err_t *err);
const char *fc_task_param(const fc_task_t *task, const char *key);

/* Runs one task: 0 when every output is written, else an FC_E* code with err filled. */
typedef int (*fc_task_run_fn)(const fc_task_t *task, fc_task_ctx_t *ctx, fc_err_t *err);

typedef struct fc_executor {
  const char *kind; /* task kind it runs */
  const char *cap;  /* capability advertised (NULL: the kind), e.g. "logits:qwen" */
  fc_task_run_fn run;
} fc_executor_t;

typedef struct fc_worker_opts {
  const char *endpoint; /* coordinator ROUTER */
  const char *id;       /* unique worker id (NULL: HOST-PID) */
  const fc_executor_t *execs;
  size_t nexecs;
  double heartbeat;       /* seconds between heartbeats (1) */
  int finish_on_sigterm;  /* SIGTERM waits for the running task instead of handing it back */
  const struct fc_curve *curve; /* CURVE keys for a TCP coordinator (NULL: none) */
  int threads;            /* advertised resources */
  int64_t mem;
} fc_worker_opts_t;

/* Runs until SIGTERM/SIGINT (returns 0 after handing back or finishing its task). */
int fc_worker_run(const fc_worker_opts_t *opts, fc_err_t *err);

/* Artifacts of a finished task: size and SHA-256 of every output file (directories: every
 * regular file below). Fails when an output is missing. */
int fc_worker_artifacts(const fc_task_t *task, fc_msg_t *result, fc_err_t *err);

/* The test executors: `sleep` (params ms, fail; checkpoint=1: fenced checkpoint files in its
 * work directory every 100 ms; size: its outputs become sparse files of that many bytes) and
 * `checksum` (SHA-256 of each input, one hex line each, into outputs[0]; params ms, fail). Both
 * report progress and honour cancel. */
const fc_executor_t *fc_test_executors(size_t *n);

#endif
