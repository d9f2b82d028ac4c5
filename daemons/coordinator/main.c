/* fusechat-coordinator: owns the job database and hands tasks to the stage daemons. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fc_coord.h"
#include "fc_merge_check.h"
#include "fc_net.h"
#include "fc_schema.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusechat-coordinator [OPTIONS]\n"
          "\n"
          "Runs the fusechat coordinator: it keeps jobs, tasks, leases and artifacts in an SQLite\n"
          "database, leases tasks to stage daemons that register with matching capabilities, and\n"
          "re-queues a task whose worker stops heartbeating. Killed at any point and started again\n"
          "on the same database, it continues every job.\n"
          "\n"
          "Options:\n"
          "  --run-dir DIR        private directory (made 0700) for ipc:// endpoints\n"
          "                       (default $FUSECHAT_RUN_DIR, $XDG_RUNTIME_DIR/fusechat or /tmp/fusechat-UID)\n"
          "  --endpoint URL       where workers and clients connect (default ipc://RUN/coord.ipc)\n"
          "  --events URL         event stream (PUB) (default ipc://RUN/events.ipc, or port+1 for tcp)\n"
          "  --db PATH            database file (default RUN/coordinator.sqlite)\n"
          "  --lease-timeout SEC  a task whose worker is silent this long is re-queued (default 10)\n"
          "  --curve-key FILE     serve with ZeroMQ CURVE using this key file (fusectl keygen)\n"
          "  --curve-allow PATH   client public keys with every role: a directory of *.pub or a\n"
          "                       file with one key per line\n"
          "  --curve-workers PATH keys that may only act as workers (register, report tasks)\n"
          "  --curve-operators PATH  keys that may submit, cancel, retry and read\n"
          "  --curve-readers PATH keys that may only read (status, list, logs, workers, artifacts)\n"
          "                       (with --curve-key at least one list must hold a key)\n"
          "  --insecure           allow a tcp:// endpoint without CURVE (anyone who reaches the\n"
          "                       port can act as any worker or operator)\n"
          "  --verbose            debug logging\n"
          "  --help               this text\n"
          "\n"
          "Refuses to start (exit 2) on an unsafe setup: tcp:// without CURVE (unless --insecure),\n"
          "a secret key file readable by group or others, CURVE with empty allow-lists. The\n"
          "database and its -wal/-shm files are created 0600.\n"
          "\n"
          "Stops cleanly on SIGTERM or SIGINT. Logs are one structured line each on stderr.\n"
          "Exit status: 0 clean stop, 1 runtime failure, 2 bad usage or unsafe configuration.\n");
}

int main(int argc, char **argv) {
  fc_schema_set_open_check(fc_merge_check_param); /* merge.parameters of submitted jobs */
  static const struct option opts[] = {
      {"run-dir", required_argument, 0, 'r'}, {"endpoint", required_argument, 0, 'e'},
      {"events", required_argument, 0, 'E'}, {"db", required_argument, 0, 'd'},
      {"lease-timeout", required_argument, 0, 'l'}, {"verbose", no_argument, 0, 'v'},
      {"curve-key", required_argument, 0, 'k'}, {"curve-allow", required_argument, 0, 'a'},
      {"curve-workers", required_argument, 0, 'W'}, {"curve-operators", required_argument, 0, 'O'},
      {"curve-readers", required_argument, 0, 'R'}, {"insecure", no_argument, 0, 'i'},
      {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  char run_dir[512], endpoint[600], events[600], db[600];
  const char *rd = NULL, *ep = NULL, *ev = NULL, *dbp = NULL, *ck = NULL, *ca = NULL, *cw = NULL, *co = NULL, *cr = NULL;
  int insecure = 0;
  double lease = 10;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    char *end;
    switch (c) {
    case 'r': rd = optarg; break;
    case 'e': ep = optarg; break;
    case 'E': ev = optarg; break;
    case 'd': dbp = optarg; break;
    case 'l':
      lease = strtod(optarg, &end);
      if (*end || end == optarg || !(lease > 0 && lease < 86400)) {
        fprintf(stderr, "fusechat-coordinator: --lease-timeout wants seconds in (0, 86400), not '%s'\n", optarg);
        return 2;
      }
      break;
    case 'v': fc_log_set_level(FC_LOG_DEBUG); break;
    case 'k': ck = optarg; break;
    case 'a': ca = optarg; break;
    case 'W': cw = optarg; break;
    case 'O': co = optarg; break;
    case 'R': cr = optarg; break;
    case 'i': insecure = 1; break;
    case 'h': usage(stdout); return 0;
    default: fprintf(stderr, "Try 'fusechat-coordinator --help'.\n"); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "fusechat-coordinator: unexpected argument '%s'\nTry 'fusechat-coordinator --help'.\n", argv[optind]);
    return 2;
  }
  fc_log_set_component("coordinator");
  fc_err_t err = {0};
  if (!ck && (ca || cw || co || cr)) {
    fprintf(stderr, "fusechat-coordinator: the allow-lists need --curve-key\n");
    return 2;
  }
  /* everything we create (database, -wal, -shm, sockets) is ours alone */
  umask(077);
  if (rd) snprintf(run_dir, sizeof run_dir, "%s", rd);
  else fc_net_default_run_dir(run_dir, sizeof run_dir);
  if (fc_net_prepare_run_dir(run_dir, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    return 1;
  }
  if (ep) snprintf(endpoint, sizeof endpoint, "%s", ep);
  else fc_net_default_endpoint(run_dir, endpoint, sizeof endpoint);
  if (ev) snprintf(events, sizeof events, "%s", ev);
  else if (fc_net_events_endpoint(endpoint, events, sizeof events, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    return 2;
  }
  if (!strncmp(endpoint, "tcp://", 6) && !ck && !insecure) {
    fc_log(FC_LOG_ERROR, "%s is reachable over the network without CURVE: give --curve-key and allow-lists, "
                         "or --insecure to accept that anyone reaching it can act as any worker or operator", endpoint);
    return 2;
  }
  if (!strncmp(endpoint, "tcp://", 6) && !ck) fc_warn("serving %s without CURVE (--insecure)", endpoint);
  if (ck && fc_curve_check_private(ck, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    return 2;
  }
  if (dbp) snprintf(db, sizeof db, "%s", dbp);
  else snprintf(db, sizeof db, "%s/coordinator.sqlite", run_dir);
  static const char *const sfx[3] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) { /* a database from before umask: tighten it */
    char p[640];
    snprintf(p, sizeof p, "%s%s", db, sfx[i]);
    chmod(p, 0600);
  }
  fc_coord_opts_t o = {.endpoint = endpoint, .events_endpoint = events, .db_path = db, .lease_timeout = lease,
                      .curve_key = ck, .curve_allow = ca, .curve_workers = cw, .curve_operators = co, .curve_readers = cr};
  if (fc_coord_run(&o, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    return err.code == FC_EINVAL ? 2 : 1;
  }
  return 0;
}
