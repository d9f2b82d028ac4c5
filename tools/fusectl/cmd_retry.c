/* fusectl retry: re-queues a failed or cancelled job, or one task. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl retry [OPTIONS] JOB\n"
         "       fusectl retry [OPTIONS] --task TASK\n"
         "\nRe-queues the failed and cancelled tasks of a failed or cancelled job with fresh\n"
         "attempts, or (--task, an id from 'fusectl status') one failed or cancelled task.\n"
         "\nOptions:\n"
         "  --task TASK      retry this task instead of a whole job\n" FC_CLIENT_ENDPOINT_HELP
         "  --help           this text\n");
}

int fc_cmd_retry(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"task", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "retry");
  fc_msg_t req = {.type = FC_MSG_RETRY};
  int o, rc;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 't') {
      if (fc_client_parse_id(optarg, &req.task)) return fc_cli_usage_error("retry", "--task wants a task id, not '%s'", optarg);
    } else if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("retry", "unknown option");
  }
  if (req.task && optind != argc) return fc_cli_usage_error("retry", "give a job or --task, not both");
  if (!req.task && (optind + 1 != argc || fc_client_parse_id(argv[optind], &req.job)))
    return fc_cli_usage_error("retry", "give one job id (or --task TASK)");
  json_t *r;
  if ((rc = fc_client_call(&c, &req, &r))) return rc;
  if (req.task) printf("task %lld re-queued\n", (long long)req.task);
  else printf("job %lld re-queued\n", (long long)req.job);
  json_decref(r);
  return 0;
}
