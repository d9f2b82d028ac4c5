/* The command that starts R ranks of a program: a step of the Slurm allocation we run in, or
 * mpirun on this host. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_dist.h"

static void push(char ***v, size_t *n, const char *s) {
  *v = fc_xrealloc(*v, (*n + 2) * sizeof **v);
  (*v)[(*n)++] = fc_xstrdup(s);
  (*v)[*n] = NULL;
}

char **fc_dist_launch_argv(int ranks, int threads, char *const *cmd, fc_err_t *err) {
  const char *want = getenv("FUSECHAT_LAUNCHER");
  const char *launcher = want && *want ? want : getenv("SLURM_JOB_ID") ? "srun" : "mpirun";
  if (strcmp(launcher, "srun") != 0 && strcmp(launcher, "mpirun") != 0) {
    fc_err_set(err, FC_EINVAL, "FUSECHAT_LAUNCHER is '%s': srun or mpirun", launcher);
    return NULL;
  }
  if (!fc_dist_have_mpi()) {
    fc_err_set(err, FC_EUNSUPPORTED,
               "training on %d ranks needs MPI: install libopenmpi-dev and openmpi-bin and rebuild", ranks);
    return NULL;
  }
  char **v = NULL, num[32];
  size_t n = 0;
  if (threads < 1) threads = 1;
  if (!strcmp(launcher, "srun")) {
    push(&v, &n, "srun");
    snprintf(num, sizeof num, "--ntasks=%d", ranks);
    push(&v, &n, num);
    snprintf(num, sizeof num, "--cpus-per-task=%d", threads);
    push(&v, &n, num);
    push(&v, &n, "--mpi=pmix");
    push(&v, &n, "--kill-on-bad-exit=1");
    /* a step inside a job step's allocation (a worker's batch job) must not wait for CPUs the
     * worker itself holds */
    push(&v, &n, "--overlap");
  } else {
    push(&v, &n, "mpirun");
    push(&v, &n, "-n");
    snprintf(num, sizeof num, "%d", ranks);
    push(&v, &n, num);
    push(&v, &n, "--bind-to");
    push(&v, &n, "none");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores > 0 && (long)ranks > cores) push(&v, &n, "--oversubscribe");
    if (geteuid() == 0) push(&v, &n, "--allow-run-as-root");
  }
  for (size_t i = 0; cmd[i]; i++) push(&v, &n, cmd[i]);
  return v;
}

void fc_dist_argv_free(char **argv) {
  if (!argv) return;
  for (size_t i = 0; argv[i]; i++) free(argv[i]);
  free(argv);
}
