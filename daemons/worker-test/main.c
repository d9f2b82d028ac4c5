/* fusechat-worker-test: a stage daemon with only the test executors (sleep, checksum), used by
 * the end-to-end tests and benchmarks to drive the whole distributed machinery. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_net.h"
#include "fc_worker.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusechat-worker-test [OPTIONS]\n"
          "\n"
          "A fusechat stage daemon that runs the test task kinds: 'sleep' (waits params.ms, writes a\n"
          "line to each output) and 'checksum' (writes the SHA-256 of each input, one hex line each,\n"
          "to its output, after waiting params.ms). params.fail=1 makes either fail.\n"
          "\n"
          "Options:\n"
          "  --run-dir DIR        run directory holding the coordinator's ipc:// endpoint\n"
          "  --endpoint URL       coordinator endpoint (default ipc://RUN/coord.ipc)\n"
          "  --id ID              worker id, unique in the cluster (default HOST-PID)\n"
          "  --heartbeat SEC      seconds between heartbeats (default 1)\n"
          "  --finish-on-term     on SIGTERM finish the running task instead of handing it back\n"
          "  --curve-key FILE     our CURVE key file (fusectl keygen), for a tcp:// coordinator\n"
          "  --curve-server FILE  the coordinator's public key (.pub), with --curve-key\n"
          "  --verbose            debug logging\n"
          "  --help               this text\n");
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"run-dir", required_argument, 0, 'r'}, {"endpoint", required_argument, 0, 'e'},
      {"id", required_argument, 0, 'i'}, {"heartbeat", required_argument, 0, 'b'},
      {"finish-on-term", no_argument, 0, 'f'}, {"verbose", no_argument, 0, 'v'},
      {"curve-key", required_argument, 0, 'k'}, {"curve-server", required_argument, 0, 's'},
      {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *rd = NULL, *ep = NULL, *id = NULL, *ck = NULL, *cs = NULL;
  double hb = 1;
  int finish = 0, c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 'r': rd = optarg; break;
    case 'e': ep = optarg; break;
    case 'i': id = optarg; break;
    case 'b':
      hb = strtod(optarg, &end);
      if (*end || end == optarg || !(hb >= 0.01 && hb <= 3600)) {
        fprintf(stderr, "fusechat-worker-test: --heartbeat wants seconds in [0.01, 3600], not '%s'\n", optarg);
        return 2;
      }
      break;
    case 'f': finish = 1; break;
    case 'v': fc_log_set_level(FC_LOG_DEBUG); break;
    case 'k': ck = optarg; break;
    case 's': cs = optarg; break;
    case 'h': usage(stdout); return 0;
    default: fprintf(stderr, "Try 'fusechat-worker-test --help'.\n"); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "fusechat-worker-test: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  fc_log_set_component("worker-test");
  char endpoint[600];
  if (ep) snprintf(endpoint, sizeof endpoint, "%s", ep);
  else fc_net_default_endpoint(rd, endpoint, sizeof endpoint);
  fc_worker_opts_t o = {.endpoint = endpoint, .id = id, .heartbeat = hb, .finish_on_sigterm = finish,
                        .threads = (int)sysconf(_SC_NPROCESSORS_ONLN)};
  o.execs = fc_test_executors(&o.nexecs);
  fc_err_t err = {0};
  fc_curve_t curve;
  if (fc_curve_client_files(ck, cs, &curve, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    return 2;
  }
  o.curve = &curve;
  if (fc_worker_run(&o, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    return 1;
  }
  return 0;
}
