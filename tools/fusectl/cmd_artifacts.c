/* fusectl artifacts: the files a job's finished tasks wrote, with sizes and SHA-256. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl artifacts [OPTIONS] JOB\n\nLists every file a job's finished tasks recorded:\n"
         "SHA-256, size in bytes, task and path (sha256sum-like, one per line).\n"
         "\nOptions:\n" FC_CLIENT_JSON_HELP FC_CLIENT_ENDPOINT_HELP "  --help           this text\n");
}

int fc_cmd_artifacts(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "artifacts");
  int o, rc, as_json = 0;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'j') as_json = 1;
    else if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("artifacts", "unknown option");
  }
  fc_msg_t req = {.type = FC_MSG_ARTIFACTS};
  if (optind + 1 != argc || fc_client_parse_id(argv[optind], &req.job)) return fc_cli_usage_error("artifacts", "give one job id");
  json_t *r, *a;
  if ((rc = fc_client_call(&c, &req, &r))) return rc;
  if (as_json) {
    fc_client_print_json(r);
    json_decref(r);
    return 0;
  }
  size_t i;
  json_array_foreach(json_object_get(r, "artifacts"), i, a)
    printf("%s  %12lld  %-20s %s\n", json_string_value(json_object_get(a, "sha256")),
           (long long)json_integer_value(json_object_get(a, "size")), json_string_value(json_object_get(a, "name")),
           json_string_value(json_object_get(a, "path")));
  json_decref(r);
  return 0;
}
