/* fusectl submit: sends a job spec to the coordinator. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "client.h"
#include "fc_job.h"

static void usage(void) {
  printf("Usage: fusectl submit [OPTIONS] JOB.yaml\n"
         "\n"
         "Checks a job spec (the same validation the coordinator does, so mistakes are reported\n"
         "with their line here) and submits it. Prints the new job's id.\n"
         "Paths in the spec are used as written by the daemons: give absolute paths.\n"
         "\nOptions:\n" FC_CLIENT_ENDPOINT_HELP
         "  --help           this text\n");
}

int fc_cmd_submit(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "submit");
  int o, rc;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("submit", "unknown option");
  }
  if (optind + 1 != argc) return fc_cli_usage_error("submit", "give exactly one job file");
  char *text;
  size_t len;
  fc_err_t err = {0};
  if (fc_read_file(argv[optind], &text, &len, &err)) return fc_cli_fail("submit", "%s", err.msg);
  fc_job_t *job;
  if (fc_job_parse(text, len, argv[optind], &job, &err)) { /* a bad spec is bad input: nothing is sent */
    free(text);
    fc_cli_fail("submit", "%s", err.msg);
    return FC_EXIT_USAGE;
  }
  fc_job_destroy(&job);
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = text};
  json_t *r;
  rc = fc_client_call(&c, &req, &r);
  free(text);
  if (rc) return rc;
  printf("job %lld submitted (%lld tasks)\n", (long long)json_integer_value(json_object_get(r, "job")),
         (long long)json_integer_value(json_object_get(r, "tasks")));
  json_decref(r);
  return 0;
}
