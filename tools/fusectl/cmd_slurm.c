/* fusectl slurm: the operator's entry point to a Slurm cluster. The work (checking the cluster
 * section, starting the coordinator, sbatch of the worker arrays and the training allocation)
 * is deploy/slurm/fusechat-slurm, a shell script because it is mostly sbatch/scontrol calls;
 * this finds that script and runs it, so operators need only fusectl. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* cmd_slurm_queue.c */
int fc_slurm_queue(int argc, char **argv);

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl slurm up CLUSTER.env JOB.yaml RUN_DIR\n"
          "       fusectl slurm wait RUN_DIR\n"
          "       fusectl slurm down RUN_DIR\n"
          "       fusectl slurm queue RUN_DIR [--json]\n"
          "\n"
          "Runs a job on a Slurm cluster: 'up' checks the cluster section (partition, CPUs per\n"
          "training rank against the nodes, munge), starts the coordinator here and submits the\n"
          "stage daemons as sbatch jobs (logits workers as an array, one per model; align, merge\n"
          "and eval arrays; the train daemon in an allocation of training.ranks tasks, which runs\n"
          "each train task as an srun step of that many MPI ranks), then submits the job. 'wait'\n"
          "follows it to the end and stops everything; 'down' cancels the workers and stops the\n"
          "coordinator. 'queue' shows per kind of work the tasks ready, waiting and leased beside\n"
          "the Slurm elements and workers of that kind (what 'wait' scales with: see MAX_*_WORKERS).\n"
          "The CLUSTER.env keys are in 'fusectl slurm --help-cluster' and README's\n"
          "\"Slurm cluster\" section.\n"
          "\n"
          "The script run is fusechat-slurm: $FUSECHAT_SLURM, else the one beside fusectl (as\n"
          "installed), else the source tree's deploy/slurm/fusechat-slurm (a build directory).\n"
          "\n"
          "Exit status: 0 done, 1 failed (the message says what to change), 2 bad usage.\n");
}

/* The script: $FUSECHAT_SLURM, beside this executable, or the source tree this was built from. */
static int find_script(char *out, size_t n) {
  const char *env = getenv("FUSECHAT_SLURM");
  char self[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  self[k > 0 ? k : 0] = 0;
  char cand[3][PATH_MAX + 64];
  snprintf(cand[0], sizeof cand[0], "%s", env && *env ? env : "/nonexistent");
  snprintf(cand[1], sizeof cand[1], "%s/fusechat-slurm", dirname(self));
  snprintf(cand[2], sizeof cand[2], "%s", FC_SLURM_SCRIPT_SRC);
  for (int i = 0; i < 3; i++)
    if (access(cand[i], X_OK) == 0 && strlen(cand[i]) < n) {
      memcpy(out, cand[i], strlen(cand[i]) + 1);
      return 0;
    }
  return -1;
}

int fc_cmd_slurm(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return FC_EXIT_USAGE;
  }
  if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "queue")) return fc_slurm_queue(argc, argv);
  int want = !strcmp(argv[1], "up") ? 5 : !strcmp(argv[1], "wait") || !strcmp(argv[1], "down") ? 3 : 0;
  char script[PATH_MAX + 64];
  if (!strcmp(argv[1], "--help-cluster")) want = argc;
  else if (!want) return fc_cli_usage_error("slurm", "unknown action '%s' (up, wait, down or queue)", argv[1]);
  else if (argc != want)
    return fc_cli_usage_error("slurm", "'%s' takes %s", argv[1],
                              want == 5 ? "CLUSTER.env JOB.yaml RUN_DIR" : "RUN_DIR");
  if (find_script(script, sizeof script))
    return fc_cli_fail("slurm", "fusechat-slurm not found beside fusectl nor at %s: set FUSECHAT_SLURM",
                       FC_SLURM_SCRIPT_SRC);
  char **v = fc_xcalloc((size_t)argc + 1, sizeof *v);
  v[0] = script;
  for (int i = 1; i < argc; i++) v[i] = !strcmp(argv[i], "--help-cluster") ? "--help" : argv[i];
  fflush(NULL);
  execv(script, v);
  int rc = fc_cli_fail("slurm", "cannot run %s: %s", script, strerror(errno));
  free(v);
  return rc;
}
