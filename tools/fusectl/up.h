/* Starting daemons on this machine (fusectl up, fusectl run --local): what to start, and the
 * start itself with pid files in the run directory that fusectl down reads. */
#ifndef FC_UP_H
#define FC_UP_H

#include <stddef.h>

#include "fc_util.h"

#define FC_UP_MAX_ARGS 12

/* One daemon process: the program (fusechat-PROG), its log/pid name and its own options. */
typedef struct fc_up_daemon {
  char prog[48];  /* "logits", "align", "train", "merge", "eval", "worker-test" */
  char name[96];  /* "logits-qwen-1": RUN/NAME.log, RUN/NAME.pid, the worker id HOST-NAME */
  char *args[FC_UP_MAX_ARGS]; /* owned, NULL-terminated */
} fc_up_daemon_t;

typedef struct fc_up_plan {
  double lease_timeout, heartbeat; /* 10, 1 */
  char metrics[64];                /* the coordinator's --metrics HOST:PORT ("" : none) */
  fc_up_daemon_t *d;
  size_t n;
} fc_up_plan_t;

void fc_up_plan_init(fc_up_plan_t *p);
/* Adds count daemons of one program, named PROG[-TAG]-I; extra options follow (NULL-terminated). */
void fc_up_plan_add(fc_up_plan_t *p, const char *prog, const char *tag, int count, ...);
void fc_up_plan_free(fc_up_plan_t *p);
/* Reads an up config (YAML: lease_timeout, heartbeat, daemons: [{type, count, model, name,
 * serve, threads}]). */
int fc_up_plan_load(fc_up_plan_t *p, const char *path, const char *run_dir, fc_err_t *err);
/* Starts the coordinator (database RUN/coordinator.sqlite) and the plan's daemons and waits until
 * the coordinator answers. Returns 0 or an exit code (the message printed as fusectl CMD). */
int fc_up_start(const char *cmd, const char *run, const fc_up_plan_t *p);

#endif
