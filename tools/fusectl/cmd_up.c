/* fusectl up: starts a coordinator and stage daemons on this machine over ipc:// in a private
 * run directory, with pid files that 'fusectl down' uses to stop them. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "fc_net.h"

static void usage(void) {
  printf("Usage: fusectl up [OPTIONS]\n"
         "\n"
         "Starts fusechat on this machine: a coordinator and stage daemons, talking over ipc://\n"
         "endpoints in a private run directory (mode 0700). Each daemon logs to RUN/NAME.log and\n"
         "leaves its pid in RUN/NAME.pid; 'fusectl down' stops them. Daemons are looked up in\n"
         "$FUSECHAT_BIN_DIR, then beside fusectl (build tree or install).\n"
         "\n"
         "Options:\n"
         "  --run-dir DIR        run directory (default $FUSECHAT_RUN_DIR, $XDG_RUNTIME_DIR/fusechat\n"
         "                       or /tmp/fusechat-UID); the database is RUN/coordinator.sqlite\n"
         "  --test-workers N     test stage daemons (sleep, checksum tasks) to start (default 2)\n"
         "  --lease-timeout SEC  passed to the coordinator (default 10)\n"
         "  --heartbeat SEC      passed to the workers (default 1)\n"
         "  --help               this text\n"
         "\nThen: export FUSECHAT_RUN_DIR=RUN (or FUSECHAT_ENDPOINT) and use the other commands.\n");
}

/* Finds a daemon binary; returns 0 and its path. */
static int fc_up_find_daemon(const char *name, char *out, size_t n) {
  const char *env = getenv("FUSECHAT_BIN_DIR");
  char self[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  self[k > 0 ? k : 0] = 0;
  char *dir = dirname(self);
  char cand[3][PATH_MAX + 64];
  snprintf(cand[0], sizeof cand[0], "%s/%s", env ? env : "/nonexistent", name);
  snprintf(cand[1], sizeof cand[1], "%s/../daemons/%s", dir, name);
  snprintf(cand[2], sizeof cand[2], "%s/%s", dir, name);
  for (int i = 0; i < 3; i++)
    if (access(cand[i], X_OK) == 0 && strlen(cand[i]) < n) {
      memcpy(out, cand[i], strlen(cand[i]) + 1);
      return 0;
    }
  return -1;
}

static int start(const char *run, const char *name, char *const argv[], fc_err_t *err) {
  char log[1024], pidf[1024];
  snprintf(log, sizeof log, "%s/%s.log", run, name);
  snprintf(pidf, sizeof pidf, "%s/%s.pid", run, name);
  pid_t p = fork();
  if (p < 0) return fc_err_set(err, FC_EIO, "fork: %s", strerror(errno));
  if (p == 0) {
    setsid();
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600), nul = open("/dev/null", O_RDONLY);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    if (nul >= 0) dup2(nul, 0);
    execv(argv[0], argv);
    _exit(127);
  }
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, pidf, err);
  if (rc) return rc;
  fprintf(af.fp, "%ld\n", (long)p);
  return fc_atomic_commit(&af, err);
}

int fc_cmd_up(int argc, char **argv) {
  static const struct option opts[] = {{"run-dir", required_argument, 0, 'r'}, {"test-workers", required_argument, 0, 'w'},
                                       {"lease-timeout", required_argument, 0, 'l'}, {"heartbeat", required_argument, 0, 'b'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  char run[512];
  fc_net_default_run_dir(run, sizeof run);
  long nworkers = 2;
  const char *lease = "10", *hb = "1";
  int o;
  double d;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
    case 'h': usage(); return 0;
    case 'r': snprintf(run, sizeof run, "%s", optarg); break;
    case 'w':
      if (fc_cli_parse_long(optarg, &nworkers) || nworkers < 0 || nworkers > 64)
        return fc_cli_usage_error("up", "--test-workers wants 0..64, not '%s'", optarg);
      break;
    case 'l':
      if (fc_cli_parse_double(optarg, &d) || !(d > 0)) return fc_cli_usage_error("up", "--lease-timeout wants seconds");
      lease = optarg;
      break;
    case 'b':
      if (fc_cli_parse_double(optarg, &d) || !(d >= 0.01)) return fc_cli_usage_error("up", "--heartbeat wants seconds");
      hb = optarg;
      break;
    default: return fc_cli_usage_error("up", "unknown option");
    }
  }
  if (optind < argc) return fc_cli_usage_error("up", "no arguments expected");
  fc_err_t err = {0};
  if (fc_net_prepare_run_dir(run, &err)) return fc_cli_fail("up", "%s", err.msg);
  char pidf[600];
  snprintf(pidf, sizeof pidf, "%s/coordinator.pid", run);
  if (fc_path_exists(pidf)) return fc_cli_fail("up", "%s exists: already up? ('fusectl down --run-dir %s' first)", pidf, run);
  char coord[PATH_MAX], worker[PATH_MAX];
  if (fc_up_find_daemon("fusechat-coordinator", coord, sizeof coord) ||
      fc_up_find_daemon("fusechat-worker-test", worker, sizeof worker))
    return fc_cli_fail("up", "cannot find the fusechat daemons (set FUSECHAT_BIN_DIR)");
  char db[600], endpoint[600];
  snprintf(db, sizeof db, "%s/coordinator.sqlite", run);
  fc_net_default_endpoint(run, endpoint, sizeof endpoint);
  char *cargv[] = {coord, "--run-dir", run, "--db", db, "--lease-timeout", (char *)lease, NULL};
  if (start(run, "coordinator", cargv, &err)) return fc_cli_fail("up", "%s", err.msg);
  for (long i = 0; i < nworkers; i++) {
    char name[64], id[128], host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "worker-test-%ld", i + 1);
    snprintf(id, sizeof id, "%s-%s", host, name);
    char *wargv[] = {worker, "--run-dir", run, "--id", id, "--heartbeat", (char *)hb, NULL};
    if (start(run, name, wargv, &err)) return fc_cli_fail("up", "%s", err.msg);
  }
  /* ready when the coordinator answers */
  fc_msg_t req = {.type = FC_MSG_LIST}, rep;
  for (int i = 0; i < 50; i++) {
    if (fc_net_call(endpoint, &req, &rep, 200, &err) == 0) {
      fc_msg_clear(&rep);
      printf("fusechat is up: coordinator and %ld test worker(s), run directory %s\n"
             "export FUSECHAT_RUN_DIR=%s\n", nworkers, run, run);
      return 0;
    }
    usleep(100000);
  }
  return fc_cli_fail("up", "the coordinator did not answer; see %s/coordinator.log", run);
}
