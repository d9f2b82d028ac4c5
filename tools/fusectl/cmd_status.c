/* fusectl status: jobs and their tasks by stage, with state and progress. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_net.h"
#include "client.h"

static void usage(void) {
  printf("Usage: fusectl status [OPTIONS] [JOB]\n"
         "\n"
         "Shows a job (or every job) with its tasks grouped by stage: id, name, state, attempts\n"
         "(the running or successful one and the failed ones, of at most max_attempts),\n"
         "progress (a bar, and an ETA for running tasks) and the last message or error.\n"
         "\nOptions:\n"
         "  --json           print the coordinator's JSON report instead\n"
         "Pages: of a job's tasks with JOB, of the jobs without (each with the tasks that fit).\n"
         FC_CLIENT_PAGE_HELP FC_CLIENT_ENDPOINT_HELP
         "  --help           this text\n");
}

static const char *s(json_t *o, const char *k) {
  const char *v = json_string_value(json_object_get(o, k));
  return v ? v : "";
}

static void print_task(json_t *t, double now) {
  const char *msg = *s(t, "error") && strcmp(s(t, "state"), "done") ? s(t, "error") : s(t, "message");
  char figs[256] = "";
  json_t *f = json_object_get(t, "figures"), *v;
  const char *name;
  size_t used = 0;
  json_object_foreach(f, name, v) if (used < sizeof figs)
    used += (size_t)snprintf(figs + used, sizeof figs - used, "  %s=%g", name, json_number_value(v));
  /* A bar, and for running tasks an ETA from the time since the lease, both times the
   * coordinator's (the report's "now"), so this machine's clock does not matter. */
  double frac = json_number_value(json_object_get(t, "fraction"));
  double started = json_number_value(json_object_get(t, "started"));
  char bar[17], eta[32] = "";
  int fill = (int)(frac * 16 + 0.5);
  for (int i = 0; i < 16; i++) bar[i] = i < fill ? '#' : '.';
  bar[16] = 0;
  int running = !strcmp(s(t, "state"), "running") || !strcmp(s(t, "state"), "leased");
  if (running && frac > 0.005 && frac < 1 && started > 0) {
    double left = (now - started) * (1 - frac) / frac;
    snprintf(eta, sizeof eta, "  ETA %d:%02d", (int)(left / 60), (int)left % 60);
  }
  printf("    %-5lld %-24s %-9s %lld/%lld [%s] %5.1f%%%s  %s%s%s%s\n",
         (long long)json_integer_value(json_object_get(t, "id")), s(t, "name"), s(t, "state"),
         (long long)json_integer_value(json_object_get(t, "attempts")),
         (long long)json_integer_value(json_object_get(t, "max_attempts")), bar, 100 * frac, eta,
         *s(t, "worker") ? s(t, "worker") : "", *s(t, "worker") ? "  " : "", msg, figs);
}

/* Status of every job gives each job the tasks that fit its page ("more_tasks" when some did
 * not): fetch the rest of those jobs' tasks, page by page. */
static int rest_of_tasks(fc_client_t *c, json_t *r) {
  size_t i;
  json_t *j;
  json_array_foreach(json_object_get(r, "jobs"), i, j) {
    if (!json_is_true(json_object_get(j, "more_tasks"))) continue;
    json_t *tasks = json_object_get(j, "tasks");
    int64_t next = json_integer_value(json_object_get(json_array_get(tasks, json_array_size(tasks) - 1), "id"));
    while (next) {
      fc_msg_t q = {.type = FC_MSG_STATUS, .job = json_integer_value(json_object_get(j, "id")), .since = next};
      json_t *page;
      int rc = fc_client_call(c, &q, &page);
      if (rc) return rc;
      json_array_extend(tasks, json_object_get(json_array_get(json_object_get(page, "jobs"), 0), "tasks"));
      next = json_integer_value(json_object_get(page, "next"));
      json_decref(page);
    }
    json_object_del(j, "more_tasks");
  }
  return 0;
}

int fc_cmd_status(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, FC_CLIENT_PAGE_LONGOPTS, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "status");
  int o, rc, as_json = 0;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'j') as_json = 1;
    else if (o == 'E' || o == 'T' || o == 'N' || o == 'A') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("status", "unknown option");
  }
  fc_msg_t req = {.type = FC_MSG_STATUS};
  if (optind < argc && fc_client_parse_id(argv[optind++], &req.job)) return fc_cli_usage_error("status", "JOB must be a job id");
  if (optind < argc) return fc_cli_usage_error("status", "too many arguments");
  json_t *r;
  if ((rc = fc_client_call_pages(&c, &req, req.job ? "tasks" : "jobs", &r))) return rc;
  if (!req.job && !c.one_page && (rc = rest_of_tasks(&c, r))) {
    json_decref(r);
    return rc;
  }
  if (as_json) {
    char *t = json_dumps(r, JSON_INDENT(2));
    puts(t);
    free(t);
    json_decref(r);
    return 0;
  }
  size_t i, k;
  json_t *j, *t;
  json_array_foreach(json_object_get(r, "jobs"), i, j) {
    double el = json_number_value(json_object_get(j, "elapsed")), eta = json_number_value(json_object_get(j, "eta"));
    char eta_s[48] = "";
    if (json_is_number(json_object_get(j, "eta")))
      snprintf(eta_s, sizeof eta_s, "  ETA %d:%02d", (int)(eta / 60), (int)eta % 60);
    printf("job %lld  %s  %s, %.0f%%  elapsed %d:%02d%s%s%s\n", (long long)json_integer_value(json_object_get(j, "id")),
           s(j, "name"), s(j, "state"), 100 * json_number_value(json_object_get(j, "fraction")), (int)(el / 60),
           (int)el % 60, eta_s, *s(j, "error") ? "  " : "", s(j, "error"));
    /* by stage, stages in the order they first appear */
    json_t *tasks = json_object_get(j, "tasks");
    char *done = fc_xcalloc(json_array_size(tasks) + 1, 1);
    for (size_t first = 0; first < json_array_size(tasks); first++) {
      if (done[first]) continue;
      const char *stage = s(json_array_get(tasks, first), "kind");
      printf("  %s\n", stage);
      json_array_foreach(tasks, k, t) {
        if (done[k] || strcmp(stage, s(t, "kind"))) continue;
        done[k] = 1;
        print_task(t, json_number_value(json_object_get(r, "now")));
      }
    }
    free(done);
  }
  json_decref(r);
  return 0;
}
