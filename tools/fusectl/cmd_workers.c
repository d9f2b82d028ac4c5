/* fusectl workers: the stage daemons the coordinator knows. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "client.h"
#include "fc_net.h"

static void usage(void) {
  printf("Usage: fusectl workers [OPTIONS]\n\nLists registered workers: id, state, host, seconds since last\n"
         "heard from, tasks held, capabilities.\n"
         "\nOptions:\n" FC_CLIENT_PAGE_HELP FC_CLIENT_ENDPOINT_HELP "  --help           this text\n");
}

int fc_cmd_workers(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, FC_CLIENT_PAGE_LONGOPTS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "workers");
  int o, rc;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'E' || o == 'T' || o == 'N' || o == 'A') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("workers", "unknown option");
  }
  if (optind < argc) return fc_cli_usage_error("workers", "no arguments expected");
  fc_msg_t req = {.type = FC_MSG_WORKERS};
  json_t *r, *w;
  if ((rc = fc_client_call_pages(&c, &req, "workers", &r))) return rc;
  size_t i;
  double now = fc_net_wall();
  printf("%-24s %-5s %-16s %8s %-8s %s\n", "ID", "STATE", "HOST", "SEEN", "TASKS", "CAPABILITIES");
  json_array_foreach(json_object_get(r, "workers"), i, w) {
    const char *tasks = json_string_value(json_object_get(w, "tasks"));
    const char *host = json_string_value(json_object_get(w, "host"));
    printf("%-24s %-5s %-16s %7.1fs %-8s %s\n", json_string_value(json_object_get(w, "id")),
           json_string_value(json_object_get(w, "state")), host ? host : "-",
           now - json_number_value(json_object_get(w, "last_seen")), tasks ? tasks : "-",
           json_string_value(json_object_get(w, "caps")));
  }
  json_decref(r);
  return 0;
}
