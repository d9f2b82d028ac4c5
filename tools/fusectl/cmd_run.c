/* fusectl run JOB.yaml --local: the whole job on this machine in one command: start a coordinator
 * and the stage daemons the job needs, submit, follow progress, print the evaluation table, stop. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "client.h"
#include "fc_job.h"
#include "fc_net.h"
#include "fc_schema.h"
#include "report.h"
#include "up.h"

static void usage(void) {
  printf("Usage: fusectl run --local [OPTIONS] JOB.yaml\n"
         "\n"
         "Runs a job spec on this machine: starts a coordinator, one logits daemon per model of the\n"
         "job and one each of align, train, merge and eval (those its tasks need) over ipc:// in a\n"
         "private run directory, submits the job, shows the progress of its tasks until it ends,\n"
         "prints the evaluation table (fusectl report) and stops the daemons. The run directory\n"
         "keeps the database and the daemons' logs.\n"
         "\n"
         "Options:\n"
         "  --local              run here (the only mode for now; a cluster takes 'fusectl submit')\n"
         "  --run-dir DIR        run directory (default: a new /tmp/fusechat-run-XXXXXX)\n"
         "  --threads N          compute threads per daemon (default: all cores)\n"
         "  --lease-timeout SEC  coordinator lease timeout (default 10)\n"
         "  --keep-up            leave the daemons running afterwards ('fusectl down --run-dir DIR')\n"
         "  --quiet              no progress lines\n"
         "  --help               this text\n"
         "\nExit status: 0 the job completed, 1 it failed or was cancelled (or could not start),\n"
         "2 bad usage.\n");
}

static volatile sig_atomic_t g_interrupted;
static void on_int(int sig) {
  (void)sig;
  g_interrupted = 1;
}

static int down(const char *run) {
  char *argv[] = {"down", "--run-dir", (char *)run, NULL};
  optind = 1;
  return fc_cmd_down(3, argv);
}

/* Prints a line per task whose state or progress message changed; returns the job state. */
static void follow(json_t *job, json_t **last, int quiet) {
  json_t *t;
  size_t i;
  json_array_foreach(json_object_get(job, "tasks"), i, t) {
    const char *name = json_string_value(json_object_get(t, "name"));
    const char *state = json_string_value(json_object_get(t, "state"));
    const char *msg = json_string_value(json_object_get(t, "message"));
    const char *e = json_string_value(json_object_get(t, "error"));
    double frac = json_number_value(json_object_get(t, "fraction"));
    char line[1024];
    snprintf(line, sizeof line, "%-10s %3.0f%%  %s", state ? state : "?", 100 * frac,
             e && *e ? e : (msg ? msg : ""));
    const char *prev = json_string_value(json_object_get(*last, name ? name : ""));
    if (prev && !strcmp(prev, line)) continue;
    json_object_set_new(*last, name ? name : "", json_string(line));
    if (!quiet) printf("  %-28s %s\n", name ? name : "?", line);
  }
  fflush(stdout);
}

/* Wall time of the job against the sum of its tasks' lease-to-finish times. */
static void timing(json_t *job) {
  double first = INFINITY, last = 0, sum = 0;
  json_t *t;
  size_t i;
  json_array_foreach(json_object_get(job, "tasks"), i, t) {
    double s = json_number_value(json_object_get(t, "started")), f = json_number_value(json_object_get(t, "finished"));
    if (!(s > 0 && f >= s)) continue;
    sum += f - s;
    if (s < first) first = s;
    if (f > last) last = f;
  }
  double created = json_number_value(json_object_get(job, "created"));
  double finished = json_number_value(json_object_get(job, "finished"));
  if (created > 0 && finished >= created && isfinite(first))
    printf("timing: job %.2f s from submit to end (first lease after %.2f s); tasks %.2f s of compute in sum\n",
           finished - created, first - created, sum);
}

int fc_cmd_run(int argc, char **argv) {
  static const struct option opts[] = {{"local", no_argument, 0, 'L'}, {"run-dir", required_argument, 0, 'r'},
                                       {"threads", required_argument, 0, 't'}, {"lease-timeout", required_argument, 0, 'l'},
                                       {"keep-up", no_argument, 0, 'k'}, {"quiet", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *rd = NULL, *threads = NULL;
  int local = 0, keep = 0, quiet = 0, o;
  double lease = 10;
  long tv;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
    case 'h': usage(); return 0;
    case 'L': local = 1; break;
    case 'r': rd = optarg; break;
    case 'k': keep = 1; break;
    case 'q': quiet = 1; break;
    case 't':
      if (fc_cli_parse_long(optarg, &tv) || tv < 1 || tv > 4096) return fc_cli_usage_error("run", "--threads wants 1..4096");
      threads = optarg;
      break;
    case 'l':
      if (fc_cli_parse_double(optarg, &lease) || !(lease > 0)) return fc_cli_usage_error("run", "--lease-timeout wants seconds");
      break;
    default: return fc_cli_usage_error("run", "unknown option");
    }
  }
  if (optind + 1 != argc) return fc_cli_usage_error("run", "give one job spec (JOB.yaml)");
  if (!local) return fc_cli_usage_error("run", "only --local is supported: for a cluster use 'fusectl submit'");
  const char *spec = argv[optind];
  char *text;
  size_t len;
  fc_err_t err = {0};
  if (fc_read_file(spec, &text, &len, &err)) return fc_cli_fail("run", "%s", err.msg);
  fc_job_t *job;
  if (fc_job_parse(text, len, spec, &job, &err)) { /* refused before anything starts */
    free(text);
    fc_cli_fail("run", "%s", err.msg);
    return FC_EXIT_USAGE;
  }
  char run[512];
  if (rd) snprintf(run, sizeof run, "%s", rd);
  else {
    snprintf(run, sizeof run, "/tmp/fusechat-run-XXXXXX");
    if (!mkdtemp(run)) {
      free(text), fc_job_destroy(&job);
      return fc_cli_fail("run", "cannot make a run directory");
    }
  }
  /* the daemons the tasks need: one logits per model, and one of each daemon the schema names
   * for the other kinds (kinds without a table are the test daemon's) */
  fc_up_plan_t plan;
  fc_up_plan_init(&plan);
  plan.lease_timeout = lease;
  const char *need[32];
  size_t nneed = 0;
  for (size_t i = 0; i < job->ntasks; i++) {
    const char *d = fc_schema_daemon_of(job->tasks[i].kind);
    if (!d) d = "worker-test";
    if (!strcmp(d, "logits")) continue;
    size_t k = 0;
    while (k < nneed && strcmp(need[k], d)) k++;
    if (k == nneed && nneed < 32) need[nneed++] = d;
  }
  for (size_t m = 0; m < job->nmodels; m++) {
    if (threads) fc_up_plan_add(&plan, "logits", job->models[m].name, 1, "--model", job->models[m].path, "--name",
                                job->models[m].name, "--threads", threads, NULL);
    else fc_up_plan_add(&plan, "logits", job->models[m].name, 1, "--model", job->models[m].path, "--name",
                        job->models[m].name, NULL);
  }
  for (size_t k = 0; k < nneed; k++) {
    if (threads && strcmp(need[k], "worker-test")) fc_up_plan_add(&plan, need[k], NULL, 1, "--threads", threads, NULL);
    else fc_up_plan_add(&plan, need[k], NULL, 1, NULL);
  }
  fc_job_destroy(&job);
  int rc = fc_up_start("run", run, &plan);
  fc_up_plan_free(&plan);
  if (rc) {
    free(text);
    down(run);
    return rc;
  }
  printf("run directory %s (logs, database)\n", run);
  fc_client_t c;
  fc_client_init(&c, "run");
  fc_net_default_endpoint(run, c.endpoint, sizeof c.endpoint);
  c.timeout_ms = 10000;
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = text};
  json_t *r;
  rc = fc_client_call(&c, &req, &r);
  free(text);
  if (rc) {
    if (!keep) down(run);
    return rc;
  }
  int64_t id = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  printf("job %lld submitted\n", (long long)id);
  signal(SIGINT, on_int);
  json_t *last = json_object(), *final = NULL;
  char state[32] = "";
  int cancelled_by_us = 0;
  while (1) {
    if (g_interrupted && !cancelled_by_us) {
      fc_msg_t cq = {.type = FC_MSG_CANCEL_JOB, .job = id};
      if (fc_client_call(&c, &cq, &r) == 0) json_decref(r);
      fprintf(stderr, "fusectl run: interrupted: job %lld cancelled\n", (long long)id);
      cancelled_by_us = 1;
    }
    fc_msg_t sq = {.type = FC_MSG_STATUS, .job = id};
    if ((rc = fc_client_call(&c, &sq, &r))) break;
    json_t *j = json_array_get(json_object_get(r, "jobs"), 0);
    snprintf(state, sizeof state, "%s", json_string_value(json_object_get(j, "state")));
    follow(j, &last, quiet);
    if (strcmp(state, "running") && strcmp(state, "queued")) {
      final = json_incref(j);
      json_decref(r);
      break;
    }
    json_decref(r);
    usleep(300000);
  }
  json_decref(last);
  signal(SIGINT, SIG_DFL);
  if (!rc) {
    printf("job %lld %s\n", (long long)id, state);
    if (final) timing(final);
    if (!strcmp(state, "done")) {
      char **paths = NULL, *dir = NULL;
      size_t n = 0;
      if (need[3] && fc_report_job_files(&c, id, &paths, &n, &dir) == 0) {
        char *res = fc_path_join(dir, "results.json");
        if (fc_report_files("run", paths, n, res, stdout) == 0) printf("results: %s\n", res);
        free(res);
      }
      for (size_t i = 0; i < n; i++) free(paths[i]);
      free(paths), free(dir);
    } else {
      rc = FC_EXIT_FAIL;
    }
  }
  json_decref(final);
  if (!keep) down(run);
  else printf("still up: export FUSECHAT_RUN_DIR=%s; 'fusectl down' stops it\n", run);
  return rc;
}
