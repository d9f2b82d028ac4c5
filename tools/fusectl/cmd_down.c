/* fusectl down: stops what 'fusectl up' started, workers first, through their pid files. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fc_net.h"

static void usage(void) {
  printf("Usage: fusectl down [OPTIONS]\n"
         "\n"
         "Stops the daemons 'fusectl up' started in a run directory: each gets SIGTERM (workers\n"
         "first, so they hand back or finish their tasks, then the coordinator), then SIGKILL if it\n"
         "has not exited after --wait seconds. Pid files are removed; the database is kept.\n"
         "\nOptions:\n"
         "  --run-dir DIR   run directory (default as for 'fusectl up')\n"
         "  --wait SEC      how long to wait for each daemon (default 10)\n"
         "  --help          this text\n");
}

/* Whether pid is still one of our daemons (the pid may have been reused). */
static int is_daemon(pid_t pid) {
  char p[64], cmd[512] = "";
  snprintf(p, sizeof p, "/proc/%ld/cmdline", (long)pid);
  FILE *fp = fopen(p, "r");
  if (!fp) return 0;
  size_t n = fread(cmd, 1, sizeof cmd - 1, fp);
  fclose(fp);
  cmd[n] = 0;
  return strstr(cmd, "fusechat-") != NULL;
}

static int stop_one(const char *run, const char *file, double wait) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", run, file);
  FILE *fp = fopen(path, "r");
  long pid = 0;
  if (!fp) return 0;
  if (fscanf(fp, "%ld", &pid) != 1) pid = 0;
  fclose(fp);
  int killed = 0;
  if (pid > 1 && is_daemon((pid_t)pid)) {
    kill((pid_t)pid, SIGTERM);
    double t0 = fc_now();
    while (is_daemon((pid_t)pid) && fc_now() - t0 < wait) usleep(50000);
    if (is_daemon((pid_t)pid)) kill((pid_t)pid, SIGKILL), killed = 1;
    printf("%.*s stopped%s\n", (int)(strlen(file) - 4), file, killed ? " (SIGKILL)" : "");
  }
  unlink(path);
  return 1;
}

int fc_cmd_down(int argc, char **argv) {
  static const struct option opts[] = {{"run-dir", required_argument, 0, 'r'}, {"wait", required_argument, 0, 'w'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  char run[512];
  fc_net_default_run_dir(run, sizeof run);
  double wait = 10;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'r') snprintf(run, sizeof run, "%s", optarg);
    else if (o == 'w') {
      if (fc_cli_parse_double(optarg, &wait) || wait < 0) return fc_cli_usage_error("down", "--wait wants seconds");
    } else return fc_cli_usage_error("down", "unknown option");
  }
  if (optind < argc) return fc_cli_usage_error("down", "no arguments expected");
  DIR *d = opendir(run);
  if (!d) return fc_cli_fail("down", "cannot open %s: %s", run, strerror(errno));
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len > 4 && !strcmp(e->d_name + len - 4, ".pid") && strcmp(e->d_name, "coordinator.pid"))
      n += stop_one(run, e->d_name, wait);
  }
  closedir(d);
  n += stop_one(run, "coordinator.pid", wait);
  if (n == 0) return fc_cli_fail("down", "nothing is up in %s", run);
  return 0;
}
