/* fusectl logs: a job's event log, optionally followed until the job ends. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl logs [OPTIONS] JOB\n\nPrints a job's event log (submission, leases, progress\n"
         "milestones, retries, failures) from the coordinator's database.\n"
         "\nOptions:\n"
         "  -f, --follow     keep printing new events until the job ends\n" FC_CLIENT_PAGE_HELP
         FC_CLIENT_ENDPOINT_HELP
         "  --help           this text\n");
}

int fc_cmd_logs(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, FC_CLIENT_PAGE_LONGOPTS, {"follow", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "logs");
  int o, rc, follow = 0;
  while ((o = getopt_long(argc, argv, "hf", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'f') follow = 1;
    else if (o == 'E' || o == 'T' || o == 'N' || o == 'A') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("logs", "unknown option");
  }
  fc_msg_t req = {.type = FC_MSG_LOGS};
  if (optind + 1 != argc || fc_client_parse_id(argv[optind], &req.job)) return fc_cli_usage_error("logs", "give one job id");
  if (c.one_page && follow) return fc_cli_usage_error("logs", "--follow prints every page; drop --limit/--after");
  for (;;) {
    json_t *r, *e;
    if ((rc = fc_client_call_pages(&c, &req, "events", &r))) return rc;
    size_t i;
    int ended = 0;
    json_array_foreach(json_object_get(r, "events"), i, e) {
      const char *type = json_string_value(json_object_get(e, "type"));
      fc_client_print_event(json_number_value(json_object_get(e, "time")), req.job,
                            json_integer_value(json_object_get(e, "task")), type,
                            json_string_value(json_object_get(e, "message")));
      req.since = json_integer_value(json_object_get(e, "id"));
      ended = !strcmp(type, "job.done") || !strcmp(type, "job.failed") || !strcmp(type, "job.cancelled");
    }
    json_decref(r);
    c.after = req.since; /* the next round starts after the last event printed */
    if (!follow || ended) return 0;
    usleep(500000);
  }
}
