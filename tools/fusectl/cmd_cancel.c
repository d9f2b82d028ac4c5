/* fusectl cancel: stops a job; running tasks are told to stop. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl cancel [OPTIONS] JOB\n\nCancels a queued or running job: its unfinished tasks are\n"
         "cancelled and the workers running them are told to stop. 'fusectl retry JOB' resumes it.\n"
         "\nOptions:\n" FC_CLIENT_ENDPOINT_HELP "  --help           this text\n");
}

int fc_cmd_cancel(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "cancel");
  int o, rc;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("cancel", "unknown option");
  }
  fc_msg_t req = {.type = FC_MSG_CANCEL_JOB};
  if (optind + 1 != argc || fc_client_parse_id(argv[optind], &req.job)) return fc_cli_usage_error("cancel", "give one job id");
  json_t *r;
  if ((rc = fc_client_call(&c, &req, &r))) return rc;
  printf("job %lld cancelled\n", (long long)req.job);
  json_decref(r);
  return 0;
}
