/* fusectl plot: the loss curves of a cluster job's training tasks as PNG files, one per task,
 * from the loss.csv each train task leaves in its output directory. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "fc_util.h"
#include "plot.h"

static void usage(void) {
  printf("Usage: fusectl plot [OPTIONS] JOB\n\nDraws the training loss of each of a job's train tasks\n"
         "(its output directory's loss.csv) as OUT/job-JOB-TASK.png with gnuplot, and prints the\n"
         "files written. Exit 1 when none could be drawn (no train task done, no gnuplot).\n"
         "\nOptions:\n"
         "  --out DIR        where the PNG files go (default: the current directory)\n" FC_CLIENT_ENDPOINT_HELP
         "  --help           this text\n");
}

int fc_cmd_plot(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "plot");
  const char *out = ".";
  int o, rc;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'o') out = optarg;
    else if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("plot", "unknown option");
  }
  fc_msg_t req = {.type = FC_MSG_STATUS};
  if (optind + 1 != argc || fc_client_parse_id(argv[optind], &req.job)) return fc_cli_usage_error("plot", "give one job id");
  json_t *st, *arts, *t, *a;
  if ((rc = fc_client_call_pages(&c, &req, "tasks", &st))) return rc;
  fc_msg_t areq = {.type = FC_MSG_ARTIFACTS, .job = req.job};
  if ((rc = fc_client_call(&c, &areq, &arts))) {
    json_decref(st);
    return rc;
  }
  int drawn = 0;
  size_t i, k;
  json_array_foreach(json_object_get(json_array_get(json_object_get(st, "jobs"), 0), "tasks"), i, t) {
    const char *kind = json_string_value(json_object_get(t, "kind")), *name = json_string_value(json_object_get(t, "name"));
    if (!kind || strcmp(kind, "train") || !name) continue;
    json_array_foreach(json_object_get(arts, "artifacts"), k, a) {
      const char *an = json_string_value(json_object_get(a, "name")), *path = json_string_value(json_object_get(a, "path"));
      if (!an || !path || strcmp(an, name)) continue;
      size_t l = strlen(path);
      char *csv = l >= 9 && !strcmp(path + l - 9, "/loss.csv") ? fc_xstrdup(path) : fc_path_join(path, "loss.csv");
      char file[512], *png;
      snprintf(file, sizeof file, "job-%lld-%s.png", (long long)req.job, name);
      for (char *p = file; *p; p++)
        if (*p == '/') *p = '-';
      png = fc_path_join(out, file);
      char title[300];
      snprintf(title, sizeof title, "job %lld %s", (long long)req.job, name);
      int ok = fc_plot_loss(csv, png, title) == 0;
      if (ok) printf("%s\n", png), drawn++;
      free(csv);
      free(png);
      if (ok) break; /* one curve per task */
    }
  }
  json_decref(st);
  json_decref(arts);
  if (!drawn) return fc_cli_fail("plot", "no loss curve drawn for job %lld (no done train task with a loss.csv, or no gnuplot)",
                                 (long long)req.job);
  return 0;
}
