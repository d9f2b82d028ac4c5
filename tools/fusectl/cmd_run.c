/* fusectl run JOB.yaml --local: the whole job on this machine in one command: start a coordinator
 * and the stage daemons the job needs, submit, follow progress, print the evaluation table, stop. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
         "\nA daemon that exits during the run (a model that does not load, say) fails the run with\n"
         "the daemon's own error message; SIGINT and SIGTERM cancel the job and stop the daemons.\n"
         "\nExit status: 0 the job completed, 1 it failed or was cancelled (or could not start),\n"
         "2 bad usage.\n");
}

static volatile sig_atomic_t g_interrupted;
static void on_int(int sig) {
  (void)sig;
  g_interrupted = 1;
}

/* The daemons started for this run (their pid files' names), to notice one that died. */
typedef struct started {
  char (*names)[96];
  size_t n;
} started_t;

/* The last error a daemon logged (msg="..." of its last level=error line, else its last line). */
static void last_error(const char *run, const char *name, char *out, size_t n) {
  char p[700], *text;
  size_t len;
  fc_err_t err;
  snprintf(out, n, "no message (see %s/%s.log)", run, name);
  snprintf(p, sizeof p, "%s/%s.log", run, name);
  if (fc_read_file(p, &text, &len, &err)) return;
  char *best = NULL, *lastline = NULL;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (*line && strncmp(line, "Try '", 5)) lastline = line; /* not the usage hint */
    if (strstr(line, "level=error")) best = line;
  }
  const char *pick = best ? best : lastline;
  const char *m = pick ? strstr(pick, "msg=\"") : NULL;
  if (m) {
    m += 5;
    size_t k = strlen(m);
    if (k && m[k - 1] == '"') k--;
    snprintf(out, n, "%.*s", (int)k, m);
  } else if (pick) {
    snprintf(out, n, "%s", pick);
  }
  free(text);
}

/* Returns 1 and fills why when one of the run's daemons has exited. */
static int daemon_died(const char *run, const started_t *st, char *why, size_t n) {
  for (size_t i = 0; i < st->n; i++) {
    char p[700], *text;
    size_t len;
    fc_err_t err;
    snprintf(p, sizeof p, "%s/%s.pid", run, st->names[i]);
    if (fc_read_file(p, &text, &len, &err)) continue;
    pid_t pid = (pid_t)atol(text);
    free(text);
    int status;
    if (pid <= 0 || waitpid(pid, &status, WNOHANG) != pid) continue;
    char msg[600];
    last_error(run, st->names[i], msg, sizeof msg);
    if (WIFEXITED(status))
      snprintf(why, n, "%s exited with status %d: %s", st->names[i], WEXITSTATUS(status), msg);
    else
      snprintf(why, n, "%s was killed by signal %d: %s", st->names[i], WIFSIGNALED(status) ? WTERMSIG(status) : 0, msg);
    return 1;
  }
  return 0;
}

static int down(const char *run) {
  char *argv[] = {"down", "--run-dir", (char *)run, NULL};
  optind = 1;
  return fc_cmd_down(3, argv);
}

/* One task's line: state, progress, message (or error). */
static void task_line(json_t *t, char *line, size_t n) {
  const char *state = json_string_value(json_object_get(t, "state"));
  const char *msg = json_string_value(json_object_get(t, "message"));
  const char *e = json_string_value(json_object_get(t, "error"));
  double frac = json_number_value(json_object_get(t, "fraction"));
  snprintf(line, n, "%-10s %3.0f%%  %s", state ? state : "?", 100 * frac, e && *e ? e : (msg ? msg : ""));
}

/* Without a terminal: a line per task whose state or progress message changed. */
static void follow_lines(json_t *job, json_t **last, int quiet) {
  json_t *t;
  size_t i;
  json_array_foreach(json_object_get(job, "tasks"), i, t) {
    const char *name = json_string_value(json_object_get(t, "name"));
    char line[1024];
    task_line(t, line, sizeof line);
    const char *prev = json_string_value(json_object_get(*last, name ? name : ""));
    if (prev && !strcmp(prev, line)) continue;
    json_object_set_new(*last, name ? name : "", json_string(line));
    if (!quiet) printf("  %-28s %s\n", name ? name : "?", line);
  }
  fflush(stdout);
}

#define TABLE_ROWS 16 /* task lines at most in the redrawn table, so it fits a terminal */

/* On a terminal: the task table redrawn in place: a count per state, then the tasks that are
 * running, failed or retried (then queued ones), up to TABLE_ROWS. *drawn is the height of the
 * previous drawing, to move back over it. */
static void follow_table(json_t *job, int *drawn, double t0) {
  static const char *const states[] = {"done", "running", "leased", "queued", "failed", "cancelled"};
  int count[6] = {0}, other = 0;
  json_t *tasks = json_object_get(job, "tasks"), *t;
  size_t i;
  json_array_foreach(tasks, i, t) {
    const char *st = json_string_value(json_object_get(t, "state"));
    int k = 0;
    while (k < 6 && (!st || strcmp(st, states[k]))) k++;
    if (k < 6) count[k]++;
    else other++;
  }
  if (*drawn) printf("\033[%dA", *drawn);
  int lines = 0;
  printf("\r  job: %zu tasks, %d done, %d running, %d queued", json_array_size(tasks), count[0],
         count[1] + count[2], count[3]);
  if (count[4]) printf(", %d failed", count[4]);
  if (count[5]) printf(", %d cancelled", count[5]);
  if (other) printf(", %d other", other);
  printf("  (%.0f s)\033[K\n", fc_now() - t0);
  lines++;
  /* running first, then failed, then the queued ones next in line */
  static const int order[] = {1, 2, 4, 3};
  for (int o = 0; o < 4; o++)
    json_array_foreach(tasks, i, t) {
      if (lines > TABLE_ROWS) break;
      const char *st = json_string_value(json_object_get(t, "state"));
      if (!st || strcmp(st, states[order[o]])) continue;
      char line[1024];
      task_line(t, line, sizeof line);
      printf("  %-28.28s %.100s\033[K\n", json_string_value(json_object_get(t, "name")), line);
      lines++;
    }
  for (int k = lines; k < *drawn; k++) printf("\033[K\n"); /* clear what the last drawing left below */
  if (lines < *drawn) printf("\033[%dA", *drawn - lines);
  *drawn = lines;
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
  /* our own coordinator, plain on ipc://: a cluster's CURVE keys in the environment (a
   * session that also talks to one) must not be offered to it */
  unsetenv("FUSECHAT_CURVE_KEY"), unsetenv("FUSECHAT_CURVE_SERVER");
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
  started_t started = {fc_xcalloc(plan.n + 1, sizeof *started.names), plan.n + 1};
  snprintf(started.names[0], sizeof started.names[0], "coordinator");
  for (size_t i = 0; i < plan.n; i++) snprintf(started.names[i + 1], sizeof started.names[0], "%s", plan.d[i].name);
  /* from here on a SIGTERM (a service manager, a job scheduler) stops what we started */
  signal(SIGINT, on_int);
  signal(SIGTERM, on_int);
  int rc = fc_up_start("run", run, &plan);
  fc_up_plan_free(&plan);
  if (!rc && g_interrupted) rc = fc_cli_fail("run", "interrupted while starting");
  if (rc) {
    free(text), free(started.names);
    down(run);
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
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
    free(started.names);
    if (!keep) down(run);
    return rc;
  }
  int64_t id = json_integer_value(json_object_get(r, "job"));
  json_decref(r);
  printf("job %lld submitted\n", (long long)id);
  json_t *last = json_object(), *final = NULL;
  char state[32] = "", died[1024] = "";
  int cancelled_by_us = 0, tty = !quiet && isatty(1), drawn = 0;
  double t0 = fc_now();
  while (1) {
    int dead = !cancelled_by_us && daemon_died(run, &started, died, sizeof died);
    if ((g_interrupted || dead) && !cancelled_by_us) {
      fc_msg_t cq = {.type = FC_MSG_CANCEL_JOB, .job = id};
      if (fc_client_call(&c, &cq, &r) == 0) json_decref(r);
      if (dead) fprintf(stderr, "fusectl run: daemon %s; job %lld cancelled\n", died, (long long)id);
      else fprintf(stderr, "fusectl run: interrupted: job %lld cancelled\n", (long long)id);
      cancelled_by_us = 1;
      if (dead && !strncmp(died, "coordinator", 11)) { /* nobody left to ask */
        rc = FC_EXIT_FAIL;
        break;
      }
    }
    fc_msg_t sq = {.type = FC_MSG_STATUS, .job = id};
    if ((rc = fc_client_call(&c, &sq, &r))) break;
    json_t *j = json_array_get(json_object_get(r, "jobs"), 0);
    snprintf(state, sizeof state, "%s", json_string_value(json_object_get(j, "state")));
    if (tty) follow_table(j, &drawn, t0);
    else follow_lines(j, &last, quiet);
    if (strcmp(state, "running") && strcmp(state, "queued")) {
      final = json_incref(j);
      json_decref(r);
      break;
    }
    json_decref(r);
    usleep(300000);
  }
  json_decref(last);
  free(started.names);
  if (!rc) {
    printf("job %lld %s%s%s\n", (long long)id, state, died[0] ? ": daemon " : "", died);
    if (final) timing(final);
    if (!strcmp(state, "done")) {
      char **paths = NULL, *dir = NULL;
      size_t n = 0;
      if (need[3] && fc_report_job_files(&c, id, &paths, &n, &dir) == 0) {
        char *res = fc_path_join(dir, "results.json");
        if (fc_report_files("run", paths, n, res, 0, stdout) == 0) printf("results: %s\n", res);
        free(res);
      }
      for (size_t i = 0; i < n; i++) free(paths[i]);
      free(paths), free(dir);
    } else {
      /* even with --quiet: say why */
      const char *why = json_string_value(json_object_get(final, "error"));
      if (why && *why) fprintf(stderr, "fusectl run: job %lld %s: %s\n", (long long)id, state, why);
      rc = FC_EXIT_FAIL;
    }
  }
  json_decref(final);
  if (!keep || g_interrupted) down(run);
  else printf("still up: export FUSECHAT_RUN_DIR=%s; 'fusectl down' stops it\n", run);
  while (waitpid(-1, NULL, WNOHANG) > 0) {} /* the daemons were our children: reap the stopped */
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  return rc;
}
