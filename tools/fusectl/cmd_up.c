/* fusectl up: starts a coordinator and stage daemons on this machine over ipc:// in a private
 * run directory, with pid files that 'fusectl down' uses to stop them. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "fc_net.h"
#include "up.h"

static void usage(void) {
  printf("Usage: fusectl up [OPTIONS]\n"
         "\n"
         "Starts fusechat on this machine: a coordinator and stage daemons, talking over ipc://\n"
         "endpoints in a private run directory (mode 0700). Each daemon logs to RUN/NAME.log and\n"
         "leaves its pid in RUN/NAME.pid; 'fusectl down' stops them. Daemons are looked up in\n"
         "$FUSECHAT_BIN_DIR, then beside fusectl (build tree or install).\n"
         "\n"
         "Without --config, the daemons are --test-workers test workers (sleep, checksum tasks).\n"
         "With --config FILE, the real stage daemons the file lists, e.g.\n"
         "\n"
         "  lease_timeout: 10        # seconds (coordinator)\n"
         "  heartbeat: 1             # seconds (workers)\n"
         "  daemons:\n"
         "    - {type: logits, model: /models/pivot, name: pivot, serve: true}\n"
         "    - {type: logits, model: /models/s1, name: s1, count: 2}\n"
         "    - {type: align, count: 2}\n"
         "    - {type: train, threads: 2}\n"
         "    - {type: merge}\n"
         "    - {type: eval}\n"
         "\n"
         "type is logits, align, train, merge, eval or worker-test; count (default 1) and threads\n"
         "apply to any; model and name (the job's model name) to logits, whose serve: true opens\n"
         "the direct socket ipc://RUN/logits-NAME.ipc (see 'fusectl query').\n"
         "\n"
         "Options:\n"
         "  --run-dir DIR        run directory (default $FUSECHAT_RUN_DIR, $XDG_RUNTIME_DIR/fusechat\n"
         "                       or /tmp/fusechat-UID); the database is RUN/coordinator.sqlite\n"
         "  --config FILE        the daemons to start (above)\n"
         "  --test-workers N     test stage daemons (sleep, checksum tasks) to start (default 2\n"
         "                       without --config, 0 with it)\n"
         "  --lease-timeout SEC  passed to the coordinator (default 10, or the config's)\n"
         "  --heartbeat SEC      passed to the workers (default 1, or the config's)\n"
         "  --metrics ADDR       the coordinator serves Prometheus metrics at http://ADDR/metrics\n"
         "                       (a numeric HOST:PORT; off by default)\n"
         "  --help               this text\n"
         "\nThen: export FUSECHAT_RUN_DIR=RUN (or FUSECHAT_ENDPOINT) and use the other commands.\n");
}

int fc_cmd_up(int argc, char **argv) {
  static const struct option opts[] = {{"run-dir", required_argument, 0, 'r'}, {"test-workers", required_argument, 0, 'w'},
                                       {"lease-timeout", required_argument, 0, 'l'}, {"heartbeat", required_argument, 0, 'b'},
                                       {"config", required_argument, 0, 'c'}, {"metrics", required_argument, 0, 'm'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  char run[512];
  fc_net_default_run_dir(run, sizeof run);
  long nworkers = -1;
  double lease = 0, hb = 0;
  const char *config = NULL, *metrics = NULL;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
    case 'h': usage(); return 0;
    case 'r': snprintf(run, sizeof run, "%s", optarg); break;
    case 'c': config = optarg; break;
    case 'm':
      if (strlen(optarg) >= sizeof ((fc_up_plan_t *)0)->metrics || !strchr(optarg, ':'))
        return fc_cli_usage_error("up", "--metrics wants a numeric HOST:PORT, not '%s'", optarg);
      metrics = optarg;
      break;
    case 'w':
      if (fc_cli_parse_long(optarg, &nworkers) || nworkers < 0 || nworkers > 64)
        return fc_cli_usage_error("up", "--test-workers wants 0..64, not '%s'", optarg);
      break;
    case 'l':
      if (fc_cli_parse_double(optarg, &lease) || !(lease > 0)) return fc_cli_usage_error("up", "--lease-timeout wants seconds");
      break;
    case 'b':
      if (fc_cli_parse_double(optarg, &hb) || !(hb >= 0.01)) return fc_cli_usage_error("up", "--heartbeat wants seconds");
      break;
    default: return fc_cli_usage_error("up", "unknown option");
    }
  }
  if (optind < argc) return fc_cli_usage_error("up", "no arguments expected");
  fc_up_plan_t plan;
  fc_up_plan_init(&plan);
  fc_err_t err = {0};
  if (config && fc_up_plan_load(&plan, config, run, &err)) {
    fc_up_plan_free(&plan);
    return fc_cli_fail("up", "%s", err.msg);
  }
  if (nworkers < 0) nworkers = config ? 0 : 2;
  if (nworkers) fc_up_plan_add(&plan, "worker-test", NULL, (int)nworkers, NULL);
  if (lease > 0) plan.lease_timeout = lease;
  if (hb > 0) plan.heartbeat = hb;
  if (metrics) snprintf(plan.metrics, sizeof plan.metrics, "%s", metrics);
  int rc = fc_up_start("up", run, &plan);
  if (!rc)
    printf("fusechat is up: coordinator and %zu daemon(s), run directory %s\nexport FUSECHAT_RUN_DIR=%s\n", plan.n, run, run);
  fc_up_plan_free(&plan);
  return rc;
}
