/* The one entry point every stage daemon's main() calls: the options all daemons share
 * (coordinator endpoint, id, heartbeat, CURVE keys, threads, logging), the daemon's own options
 * declared in a table, man-page style --help, then fc_worker_run with the daemon's executors. */
#ifndef FC_DAEMON_H
#define FC_DAEMON_H

#include <stddef.h>

#include "fc_schema.h"
#include "fc_worker.h"

/* One daemon-specific option. *value receives the argument (or "1" for a flag); it keeps its
 * initial value (the default) when the option is not given. An option for a stage parameter
 * names it instead (kind, param) with the kind's typed struct (dest): its help, default and
 * range come from the schema, the value is checked at start (exit 2) and becomes the default of
 * that parameter for the tasks that do not give it (fc_daemon_task_params). */
typedef struct fc_daemon_opt {
  const char *name;  /* long option name, without "--" */
  const char *arg;   /* metavariable in --help ("DIR"); NULL: a flag without argument */
  const char *help;  /* one or more lines, without the option itself (schema options: NULL) */
  const char **value;
  int required;      /* the daemon refuses to start without it */
  const char *kind, *param; /* a stage parameter: task kind and key */
  void *dest;               /* the kind's typed struct; fc_daemon_main fills in the defaults */
} fc_daemon_opt_t;

/* What the shared options parsed to; handed to the daemon's setup. */
typedef struct fc_daemon_ctx {
  const char *endpoint; /* coordinator endpoint */
  const char *id;       /* worker id, NULL: HOST-PID */
  int threads;          /* --threads (default: online cores) */
  const struct fc_curve *curve; /* --curve-key/--curve-server (enabled == 0 without them) */
} fc_daemon_ctx_t;

typedef struct fc_daemon_def {
  const char *prog;        /* "fusechat-logits" */
  const char *component;   /* log component, "logits" */
  const char *description; /* the DESCRIPTION paragraph of --help (lines end with \n) */
  const fc_daemon_opt_t *opts; /* daemon-specific options */
  size_t nopts;
  /* Static executors (NULL when setup provides them). */
  const fc_executor_t *execs;
  size_t nexecs;
  /* Optional, after option parsing: check the daemon's options (FC_EINVAL: a usage error,
   * exit 2), load what it serves, and set *execs and *nexecs (owned by the daemon) when the def has
   * none. Any other failure exits 1. */
  int (*setup)(const fc_daemon_ctx_t *ctx, const fc_executor_t **execs, size_t *nexecs, fc_err_t *err);
  /* Optional, after the worker stopped. */
  void (*teardown)(void);
  const char *extra_help; /* appended after OPTIONS (files, signals, examples), may be NULL */
} fc_daemon_def_t;

/* Parses argv, runs the daemon until SIGTERM/SIGINT. Returns the process exit code: 0 after a
 * clean stop or --help, 1 on a runtime failure, 2 on bad usage. */
int fc_daemon_main(int argc, char **argv, const fc_daemon_def_t *def);

/* Maps a task's cancellation into an fc_progress_fn: pass fc_daemon_progress with a
 * fc_daemon_progress_t as ctx to an engine; progress lines go to the coordinator, and a
 * cancelled task makes the engine stop (the callback returns non-zero). from/to scale the
 * engine's fraction into the task's. */
typedef struct fc_daemon_progress {
  fc_task_ctx_t *task;
  double from, to;
  const char *stage; /* prefix of the progress message */
} fc_daemon_progress_t;
int fc_daemon_progress(void *ctx, double fraction, const char *message);

/* A task's params as its kind's typed struct (fc_schema.h): defaults (the daemon's, from its
 * schema options, or the table's when NULL), then the task's own values, checked against the
 * table; FC_EINVAL names the key and its range. */
int fc_daemon_task_params(const fc_task_t *t, const void *defaults, void *out, fc_err_t *err);

/* Directory outputs written whole or not at all: fc_outdir_begin gives DIR.tmp (emptied), the
 * stage writes into it, fc_outdir_commit replaces DIR by it (rename), so a killed stage leaves
 * at most a stale DIR.tmp that the next attempt clears. */
char *fc_outdir_begin(const char *dir, fc_err_t *err); /* new string, NULL on failure */
int fc_outdir_commit(const char *tmp, const char *dir, fc_err_t *err);
/* Removes a file or directory tree (missing is fine). */
int fc_rmtree(const char *path, fc_err_t *err);

#endif
