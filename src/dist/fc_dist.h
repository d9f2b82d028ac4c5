/* Process groups for data-parallel training. fc_dist_init joins the MPI job this process was
 * started in (by mpirun or srun) and hands the trainer an fc_comm_t (fc_comm.h); outside such a
 * launch, or when fusechat was built without MPI, it gives a group of one. fc_dist_launch_argv
 * builds the command that starts R ranks of a program: srun inside a Slurm allocation, mpirun
 * elsewhere. MPI stays out of the compute floors: only the programs that train link this. */
#ifndef FC_DIST_H
#define FC_DIST_H

#include <stddef.h>

#include "fc_comm.h"
#include "fc_util.h"

/* 1 when fusechat was built with MPI (libopenmpi-dev found). */
int fc_dist_have_mpi(void);

/* Ranks the environment says this process was launched as one of (OMPI_COMM_WORLD_SIZE,
 * PMIX/PMI under srun), 1 when none. */
int fc_dist_launched_size(void);

/* Joins the launch (MPI_Init) when fc_dist_launched_size() > 1, else a group of one. A launch
 * of several ranks without MPI support is an error that says so. */
int fc_dist_init(int *argc, char ***argv, fc_comm_t **out, fc_err_t *err);
void fc_dist_finalize(fc_comm_t **c);

/* Bytes this rank sent in the gradient and weight exchanges so far. */
size_t fc_dist_bytes_sent(const fc_comm_t *c);

/* The command (NULL-terminated, new strings; free with fc_dist_argv_free) running cmd on
 * `ranks` processes: "srun --ntasks R --cpus-per-task T --kill-on-bad-exit=1" when
 * SLURM_JOB_ID is set (a step of the allocation), else "mpirun -n R --bind-to none" (as root
 * with --allow-run-as-root, and --oversubscribe when R exceeds the cores). FUSECHAT_LAUNCHER
 * overrides the choice (srun or mpirun). */
char **fc_dist_launch_argv(int ranks, int threads, char *const *cmd, fc_err_t *err);
void fc_dist_argv_free(char **argv);

#endif
