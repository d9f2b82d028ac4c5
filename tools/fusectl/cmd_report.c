/* fusectl report: the evaluation table of a job (one row per model: pivot, sources, fused targets,
 * baselines, merges) from its eval/NAME.json files, and results.json beside them. */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "fc_util.h"
#include "report.h"

static void usage(void) {
  printf("Usage: fusectl report [OPTIONS] JOB\n"
         "       fusectl report --dir JOBDIR\n"
         "\n"
         "Prints the comparison table of a job's evaluations: one line per model (the pivot, every\n"
         "source, every fused target, the baselines and every merge), per task family the exact-\n"
         "match accuracy (correct/n) and the loss of the gold answers, then the averages. The eval\n"
         "files are found through the coordinator (the job's eval/... artifacts; fetched from the\n"
         "daemons that hold them when this machine does not see the store) or, with --dir,\n"
         "read from JOBDIR/eval/*.json (in name order). All of them are also written together to\n"
         "JOBDIR/results.json (or --out FILE).\n"
         "\n"
         "Options:\n"
         "  --dir JOBDIR     read the files from a job directory, no coordinator needed\n"
         "  --out FILE       write the merged results here instead of JOBDIR/results.json\n"
         "  --no-write       only print the table\n"
         "  --json           the table as one JSON object: per model and family (and the macro\n"
         "                   average) accuracy and loss with their intervals, the paired\n"
         "                   differences to the pivot and plain SFT with the marks\n" FC_CLIENT_ENDPOINT_HELP
         "  --help           this text\n");
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int fc_cmd_report(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"dir", required_argument, 0, 'd'},
                                       {"out", required_argument, 0, 'o'}, {"no-write", no_argument, 0, 'n'}, {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "report");
  const char *dir = NULL, *out = NULL;
  int o, rc, nowrite = 0, as_json = 0;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else if (o == 'd') dir = optarg;
    else if (o == 'o') out = optarg;
    else if (o == 'n') nowrite = 1;
    else if (o == 'j') as_json = 1;
    else return fc_cli_usage_error("report", "unknown option");
  }
  char **paths = NULL, *job_dir = NULL;
  size_t n = 0;
  if (dir) {
    if (optind != argc) return fc_cli_usage_error("report", "--dir takes no job id");
    char *ed = fc_path_join(dir, "eval");
    DIR *d = opendir(ed);
    if (!d) {
      rc = fc_cli_fail("report", "cannot read %s", ed);
      free(ed);
      return rc;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
      size_t l = strlen(e->d_name);
      if (l > 5 && !strcmp(e->d_name + l - 5, ".json") && e->d_name[0] != '.') {
        paths = realloc(paths, (n + 1) * sizeof *paths);
        paths[n++] = fc_path_join(ed, e->d_name);
      }
    }
    closedir(d);
    free(ed);
    qsort(paths, n, sizeof *paths, cmp);
    job_dir = strdup(dir);
  } else {
    int64_t job;
    if (optind + 1 != argc || fc_client_parse_id(argv[optind], &job)) return fc_cli_usage_error("report", "give one job id (or --dir JOBDIR)");
    if ((rc = fc_report_job_files(&c, job, &paths, &n, &job_dir))) return rc;
  }
  char *res = out ? strdup(out) : fc_path_join(job_dir, "results.json");
  rc = fc_report_files("report", paths, n, nowrite ? NULL : res, as_json, stdout);
  if (!rc && !nowrite && !as_json) printf("results: %s\n", res);
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths), free(job_dir), free(res);
  return rc;
}
