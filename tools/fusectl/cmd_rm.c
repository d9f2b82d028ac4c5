/* fusectl rm: deletes a finished job's rows and its outputs in the store. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl rm [OPTIONS] JOB\n\nDeletes a done, failed or cancelled job: its tasks, events and\n"
         "artifact records at the coordinator, and its outputs in the coordinator's store (when the\n"
         "coordinator was started with --store). Files in the separate stores of other machines'\n"
         "daemons (their outputs, the copies they fetched) stay there; the daemons are named.\n"
         "A queued or running job is refused unless --force.\n"
         "\nOptions:\n"
         "  --force          cancel the job first when it is queued or running\n" FC_CLIENT_JSON_HELP
         FC_CLIENT_ENDPOINT_HELP "  --help           this text\n");
}

/* --force: cancel the job when it is still active (a finished one is left as it is). */
static int cancel_if_active(fc_client_t *c, int64_t job) {
  fc_msg_t req = {.type = FC_MSG_STATUS, .job = job, .limit = 1};
  json_t *r;
  int rc = fc_client_call(c, &req, &r);
  if (rc) return rc;
  const char *st = json_string_value(json_object_get(json_array_get(json_object_get(r, "jobs"), 0), "state"));
  int active = st && (!strcmp(st, "queued") || !strcmp(st, "running"));
  json_decref(r);
  if (!active) return 0;
  fc_msg_t cancel = {.type = FC_MSG_CANCEL_JOB, .job = job};
  if ((rc = fc_client_call(c, &cancel, &r))) return rc;
  json_decref(r);
  fprintf(stderr, "fusectl rm: job %lld cancelled\n", (long long)job);
  return 0;
}

int fc_cmd_rm(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"force", no_argument, 0, 'f'}, {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "rm");
  int o, rc, force = 0, as_json = 0;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'f') force = 1;
    else if (o == 'j') as_json = 1;
    else if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("rm", "unknown option");
  }
  fc_msg_t req = {.type = FC_MSG_REMOVE_JOB};
  if (optind + 1 != argc || fc_client_parse_id(argv[optind], &req.job)) return fc_cli_usage_error("rm", "give one job id");
  if (force && (rc = cancel_if_active(&c, req.job))) return rc;
  json_t *r;
  if ((rc = fc_client_call(&c, &req, &r))) return rc;
  if (as_json) {
    fc_client_print_json(r);
  } else {
    json_t *removed = json_object_get(r, "removed"), *copies = json_object_get(r, "copies_left_on");
    printf("job %lld (%s) removed; %zu outputs deleted from %s\n", (long long)req.job,
           json_string_value(json_object_get(r, "name")), json_array_size(removed),
           json_string_value(json_object_get(r, "dir")));
    const char *left = json_string_value(json_object_get(r, "files_left"));
    if (left) printf("files left: %s\n", left);
    size_t i;
    json_t *w;
    json_array_foreach(copies, i, w) printf("copies left in the separate store of %s\n", json_string_value(w));
  }
  json_decref(r);
  return 0;
}
