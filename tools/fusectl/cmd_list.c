/* fusectl list: every job with its state and how many tasks are done. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl list [OPTIONS]\n\nLists the coordinator's jobs: id, name, state, tasks done.\n"
         "\nOptions:\n" FC_CLIENT_PAGE_HELP FC_CLIENT_ENDPOINT_HELP "  --help           this text\n");
}

int fc_cmd_list(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, FC_CLIENT_PAGE_LONGOPTS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "list");
  int o, rc;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'E' || o == 'T' || o == 'N' || o == 'A') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("list", "unknown option");
  }
  if (optind < argc) return fc_cli_usage_error("list", "no arguments expected");
  fc_msg_t req = {.type = FC_MSG_LIST};
  json_t *r, *j;
  if ((rc = fc_client_call_pages(&c, &req, "jobs", &r))) return rc;
  size_t i;
  printf("%-6s %-24s %-10s %s\n", "JOB", "NAME", "STATE", "DONE");
  json_array_foreach(json_object_get(r, "jobs"), i, j)
    printf("%-6lld %-24s %-10s %lld/%lld\n", (long long)json_integer_value(json_object_get(j, "id")),
           json_string_value(json_object_get(j, "name")), json_string_value(json_object_get(j, "state")),
           (long long)json_integer_value(json_object_get(j, "done")), (long long)json_integer_value(json_object_get(j, "tasks")));
  json_decref(r);
  return 0;
}
