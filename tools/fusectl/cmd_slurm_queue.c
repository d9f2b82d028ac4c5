/* fusectl slurm queue RUN_DIR: the job's queue beside its Slurm workers, per kind of work (a
 * task's cap: align, merge, train, eval, logits:MODEL): tasks ready to lease, waiting on their
 * dependencies, leased, done; Slurm elements pending and running; registered workers whose
 * Slurm element still runs, and how many of those hold no task. fusechat-slurm's wait loop reads
 * the plain table to scale the workers with the queue; --json is for other tools. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"

enum { READY, WAITING, LEASED, DONE, FAILED, PENDING, RUNNING, WORKERS, IDLE, NCOL };
static const char *const col_names[NCOL] = {"ready",   "waiting", "leased",  "done", "failed",
                                            "pending", "running", "workers", "idle"};

typedef struct {
  char key[160];  /* the cap */
  long n[NCOL];
  char jobs[512]; /* its Slurm elements (JOB_INDEX, or JOB), comma-separated, for scancel */
} row_t;

typedef struct {
  row_t *r;
  size_t n, cap;
  char (*alive)[64]; /* running Slurm elements, as the worker ids spell them: JOB_INDEX or JOB */
  size_t nalive, capalive;
} queue_t;

static row_t *row(queue_t *q, const char *key) {
  for (size_t i = 0; i < q->n; i++)
    if (!strcmp(q->r[i].key, key)) return &q->r[i];
  if (q->n == q->cap) {
    q->cap = q->cap ? 2 * q->cap : 8;
    q->r = fc_xrealloc(q->r, q->cap * sizeof *q->r);
  }
  row_t *r = &q->r[q->n++];
  memset(r, 0, sizeof *r);
  snprintf(r->key, sizeof r->key, "%s", key);
  return r;
}

/* KEY=VALUE words of RUN/env (what 'fusechat-slurm up' wrote) into our environment. */
static int load_env(const char *run) {
  char path[4200], line[2048];
  snprintf(path, sizeof path, "%s/env", run);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t got = fread(line, 1, sizeof line - 1, f);
  fclose(f);
  line[got] = 0;
  for (char *save = NULL, *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
    char *eq = strchr(w, '=');
    if (!eq) continue;
    *eq = 0;
    setenv(w, eq + 1, 1);
  }
  return 0;
}

static int read_line(const char *run, const char *name, char *out, size_t n) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", run, name);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t k = fread(out, 1, n - 1, f);
  fclose(f);
  out[k] = 0;
  out[strcspn(out, "\n")] = 0;
  return 0;
}

/* Line i (0-based) of RUN/models, the model a logits array element i serves. */
static int model_name(const char *run, long i, char *out, size_t n) {
  char path[4200], line[1024];
  snprintf(path, sizeof path, "%s/models", run);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int rc = -1;
  for (long k = 0; fgets(line, sizeof line, f); k++)
    if (k == i) {
      size_t len = strcspn(line, " \n");
      if (len >= n) len = n - 1;
      memcpy(out, line, len);
      out[len] = 0;
      rc = 0;
      break;
    }
  fclose(f);
  return rc;
}

/* The Slurm side: every element of the run's jobs still known to squeue, by kind. */
static void slurm_side(queue_t *q, const char *run) {
  char ids[4096] = "", line[512], cmd[4400], path[4200];
  snprintf(path, sizeof path, "%s/slurm-jobs", run);
  FILE *f = fopen(path, "r");
  size_t used = 0;
  while (f && fgets(line, sizeof line, f) && used + strlen(line) + 2 < sizeof ids) {
    line[strcspn(line, "\n")] = 0;
    if (!*line || strspn(line, "0123456789") != strlen(line)) continue;
    used += (size_t)snprintf(ids + used, sizeof ids - used, "%s%s", used ? "," : "", line);
  }
  if (f) fclose(f);
  if (!*ids) return;
  snprintf(cmd, sizeof cmd, "squeue -h -r -j %s -o '%%i %%j %%T' 2>/dev/null", ids);
  FILE *p = popen(cmd, "r");
  if (!p) return;
  while (fgets(line, sizeof line, p)) {
    char id[64], name[128], state[64], key[160];
    if (sscanf(line, "%63s %127s %63s", id, name, state) != 3 || strncmp(name, "fc-", 3)) continue;
    snprintf(key, sizeof key, "%s", name + 3);
    char *us = strchr(id, '_');
    if (!strcmp(key, "logits") && us) {
      char model[128];
      if (model_name(run, atol(us + 1), model, sizeof model) == 0) snprintf(key, sizeof key, "logits:%s", model);
    }
    /* COMPLETING and the like are on their way out: neither here nor coming */
    int running = !strcmp(state, "RUNNING");
    if (!running && strcmp(state, "PENDING") && strcmp(state, "CONFIGURING") && strcmp(state, "REQUEUED")) continue;
    row_t *r = row(q, key);
    r->n[running ? RUNNING : PENDING]++;
    if (strlen(r->jobs) + strlen(id) + 2 < sizeof r->jobs)
      snprintf(r->jobs + strlen(r->jobs), sizeof r->jobs - strlen(r->jobs), "%s%s", *r->jobs ? "," : "", id);
    if (running) {
      if (q->nalive == q->capalive) {
        q->capalive = q->capalive ? 2 * q->capalive : 16;
        q->alive = fc_xrealloc(q->alive, q->capalive * sizeof *q->alive);
      }
      snprintf(q->alive[q->nalive++], sizeof *q->alive, "%s", id);
    }
  }
  pclose(p);
}

/* A worker counts when its Slurm element runs: a worker id ends in slurm<JOB>_<INDEX> (arrays)
 * or slurm<JOB> (the train allocation); squeue spells those JOB_INDEX and JOB. */
static int alive(const queue_t *q, const char *worker) {
  const char *s = strstr(worker, "slurm");
  if (!s) return 0;
  for (size_t i = 0; i < q->nalive; i++)
    if (!strcmp(q->alive[i], s + 5)) return 1;
  return 0;
}

static void usage(FILE *fp) {
  fprintf(fp, "Usage: fusectl slurm queue RUN_DIR [--json]\n\n"
              "Per kind of work (a task's cap), for the job 'fusectl slurm up' started in RUN_DIR:\n"
              "  READY WAITING LEASED DONE FAILED   its tasks: ready to lease, waiting on others, leased, ...\n"
              "  PENDING RUNNING                    Slurm elements of that kind (squeue)\n"
              "  WORKERS IDLE                       registered workers whose element runs; those holding no task\n"
              "  SLURM_JOBS                         its Slurm elements (JOB_INDEX, or JOB), for scancel\n"
              "The first line is '# job ID STATE'.\n");
}

int fc_slurm_queue(int argc, char **argv) {
  const char *run = NULL;
  int as_json = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) as_json = 1;
    else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(stdout), 0;
    else if (!run && argv[i][0] != '-') run = argv[i];
    else return fc_cli_usage_error("slurm queue", "unexpected '%s' (RUN_DIR [--json])", argv[i]);
  }
  if (!run) return fc_cli_usage_error("slurm queue", "RUN_DIR missing");
  char jobid[64];
  int64_t job;
  if (load_env(run) || read_line(run, "job-id", jobid, sizeof jobid) || fc_client_parse_id(jobid, &job))
    return fc_cli_fail("slurm queue", "%s has no job started by 'fusectl slurm up' (no env or job-id)", run);
  fc_client_t c;
  fc_client_init(&c, "slurm queue");
  json_t *st, *ws, *t, *w;
  fc_msg_t req = {.type = FC_MSG_STATUS, .job = job};
  int rc = fc_client_call_pages(&c, &req, "tasks", &st);
  if (rc) return rc;
  fc_msg_t wreq = {.type = FC_MSG_WORKERS};
  if ((rc = fc_client_call_pages(&c, &wreq, "workers", &ws))) return json_decref(st), rc;
  queue_t q = {0};
  size_t i;
  json_t *j0 = json_array_get(json_object_get(st, "jobs"), 0);
  json_array_foreach(json_object_get(j0, "tasks"), i, t) {
    const char *cap = json_string_value(json_object_get(t, "cap"));
    const char *state = json_string_value(json_object_get(t, "state"));
    if (!cap || !state) continue;
    row_t *r = row(&q, cap);
    if (!strcmp(state, "queued")) r->n[json_is_true(json_object_get(t, "ready")) ||
                                        json_integer_value(json_object_get(t, "ready")) ? READY : WAITING]++;
    else if (!strcmp(state, "leased") || !strcmp(state, "running")) r->n[LEASED]++;
    else if (!strcmp(state, "done")) r->n[DONE]++;
    else r->n[FAILED]++;
  }
  slurm_side(&q, run);
  json_array_foreach(json_object_get(ws, "workers"), i, w) {
    const char *id = json_string_value(json_object_get(w, "id"));
    const char *state = json_string_value(json_object_get(w, "state"));
    const char *caps = json_string_value(json_object_get(w, "caps"));
    if (!id || !caps || !state || strcmp(state, "up") || !alive(&q, id)) continue;
    const char *tasks = json_string_value(json_object_get(w, "tasks"));
    /* caps is a JSON array of strings; every cap this worker serves counts it */
    json_t *ca = json_loads(caps, 0, NULL), *cv;
    size_t k;
    json_array_foreach(ca, k, cv) {
      if (!json_is_string(cv)) continue;
      row_t *r = row(&q, json_string_value(cv));
      r->n[WORKERS]++;
      if (!tasks || !*tasks) r->n[IDLE]++;
    }
    json_decref(ca);
  }
  if (as_json) {
    json_t *o = json_object(), *kinds = json_object();
    for (size_t k = 0; k < q.n; k++) {
      json_t *r = json_object();
      for (int c2 = 0; c2 < NCOL; c2++) json_object_set_new(r, col_names[c2], json_integer(q.r[k].n[c2]));
      json_object_set_new(r, "slurm_jobs", json_string(q.r[k].jobs));
      json_object_set_new(kinds, q.r[k].key, r);
    }
    json_object_set_new(o, "job", json_integer(job));
    json_t *js = json_object_get(j0, "state");
    json_object_set_new(o, "state", js ? json_incref(js) : json_null());
    json_object_set_new(o, "kinds", kinds);
    fc_client_print_json(o);
    json_decref(o);
  } else {
    const char *js = json_string_value(json_object_get(j0, "state"));
    printf("# job %lld %s\n", (long long)job, js ? js : "unknown");
    printf("%-20s %5s %7s %6s %5s %6s %7s %7s %7s %4s %s\n", "KIND", "READY", "WAITING", "LEASED", "DONE", "FAILED",
           "PENDING", "RUNNING", "WORKERS", "IDLE", "SLURM_JOBS");
    for (size_t k = 0; k < q.n; k++) {
      long *n = q.r[k].n;
      printf("%-20s %5ld %7ld %6ld %5ld %6ld %7ld %7ld %7ld %4ld %s\n", q.r[k].key, n[READY], n[WAITING], n[LEASED],
             n[DONE], n[FAILED], n[PENDING], n[RUNNING], n[WORKERS], n[IDLE], *q.r[k].jobs ? q.r[k].jobs : "-");
    }
  }
  free(q.r);
  free(q.alive);
  json_decref(st);
  json_decref(ws);
  return 0;
}
