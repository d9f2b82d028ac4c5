/* The coordinator store's figures in the Prometheus text exposition format (version 0.0.4):
 * jobs and tasks by state, leases, retries, recorded artifact bytes and a histogram of the
 * durations of done tasks by kind. Counters come from the event log, so they survive restarts. */
#include <sqlite3.h>
#include <string.h>

#include "fc_db.h"
#include "fc_db_impl.h"

const double fc_db_duration_buckets[FC_DB_DURATION_NBUCKETS] = {1, 5, 30, 60, 300, 900, 3600, 14400, 86400};

/* Every state a job or a task can be in: a state with no row still gets its zero, so series do
 * not come and go. */
static const char *const JOB_STATES[] = {"queued", "running", "done", "failed", "cancelled"};
static const char *const TASK_STATES[] = {"queued", "leased", "running", "done", "failed", "cancelled"};

/* A label value: backslash, double quote and newline escaped as the format asks. */
void fc_db_metrics_label(FILE *fp, const char *v) {
  for (; v && *v; v++) {
    if (*v == '\\' || *v == '"') fprintf(fp, "\\%c", *v);
    else if (*v == '\n') fputs("\\n", fp);
    else fputc(*v, fp);
  }
}

static int by_state(fc_db_t *db, FILE *fp, const char *sql, const char *metric, const char *help,
                    const char *const *states, size_t nstates, fc_err_t *err) {
  long long n[8] = {0};
  sqlite3_stmt *st = fc_db_stmt(db, sql, "");
  if (!st) return fc_db_err(db, err, metric);
  fprintf(fp, "# HELP %s %s\n# TYPE %s gauge\n", metric, help, metric);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *s = (const char *)sqlite3_column_text(st, 0);
    size_t i = 0;
    while (i < nstates && strcmp(states[i], s ? s : "")) i++;
    if (i < nstates) n[i] = sqlite3_column_int64(st, 1);
    else { /* a state this code does not know yet: still shown */
      fprintf(fp, "%s{state=\"", metric);
      fc_db_metrics_label(fp, s);
      fprintf(fp, "\"} %lld\n", (long long)sqlite3_column_int64(st, 1));
    }
  }
  sqlite3_reset(st);
  for (size_t i = 0; i < nstates; i++) fprintf(fp, "%s{state=\"%s\"} %lld\n", metric, states[i], n[i]);
  return 0;
}

static int scalar(fc_db_t *db, FILE *fp, const char *sql, const char *metric, const char *type, const char *help,
                  fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, sql, "");
  if (!st) return fc_db_err(db, err, metric);
  long long v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  fprintf(fp, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", metric, help, metric, type, metric, v);
  return 0;
}

static const char SQL_JOBS[] = "SELECT state, COUNT(*) FROM jobs GROUP BY state";
static const char SQL_TASKS[] = "SELECT state, COUNT(*) FROM tasks GROUP BY state";
static const char SQL_LEASES[] = "SELECT COUNT(*) FROM leases";
static const char SQL_RETRIES[] = "SELECT COUNT(*) FROM events WHERE type = 'task.retry'";
static const char SQL_ART_BYTES[] = "SELECT COALESCE(SUM(size), 0) FROM artifacts";
static const char SQL_DURATIONS[] =
    "SELECT kind, finished - started FROM tasks WHERE state = 'done' AND started IS NOT NULL"
    " AND finished IS NOT NULL ORDER BY kind";

/* One kind's histogram lines: cumulative bucket counts, then +Inf, sum and count. */
static void histogram(FILE *fp, const char *kind, const long long *cum, double sum, long long count) {
  static const char M[] = "fusechat_task_duration_seconds";
  for (int b = 0; b < FC_DB_DURATION_NBUCKETS; b++) {
    fprintf(fp, "%s_bucket{kind=\"", M);
    fc_db_metrics_label(fp, kind);
    fprintf(fp, "\",le=\"%g\"} %lld\n", fc_db_duration_buckets[b], cum[b]);
  }
  fprintf(fp, "%s_bucket{kind=\"", M);
  fc_db_metrics_label(fp, kind);
  fprintf(fp, "\",le=\"+Inf\"} %lld\n%s_sum{kind=\"", count, M);
  fc_db_metrics_label(fp, kind);
  fprintf(fp, "\"} %.17g\n%s_count{kind=\"", sum, M);
  fc_db_metrics_label(fp, kind);
  fprintf(fp, "\"} %lld\n", count);
}

static int durations(fc_db_t *db, FILE *fp, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, SQL_DURATIONS, "");
  if (!st) return fc_db_err(db, err, "durations");
  fputs("# HELP fusechat_task_duration_seconds Seconds from the last lease to done, of done tasks, by kind.\n"
        "# TYPE fusechat_task_duration_seconds histogram\n",
        fp);
  char kind[256] = "";
  long long cum[FC_DB_DURATION_NBUCKETS] = {0}, count = 0;
  double sum = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *k = (const char *)sqlite3_column_text(st, 0);
    if (!k) k = "";
    if (count && strcmp(k, kind)) { /* the rows come by kind: the previous one is complete */
      histogram(fp, kind, cum, sum, count);
      memset(cum, 0, sizeof cum), count = 0, sum = 0;
    }
    snprintf(kind, sizeof kind, "%s", k);
    double d = sqlite3_column_double(st, 1);
    if (d < 0) d = 0; /* a clock step between lease and done */
    for (int b = 0; b < FC_DB_DURATION_NBUCKETS; b++)
      if (d <= fc_db_duration_buckets[b]) cum[b]++;
    sum += d, count++;
  }
  sqlite3_reset(st);
  if (count) histogram(fp, kind, cum, sum, count);
  return 0;
}

int fc_db_metrics(fc_db_t *db, FILE *fp, fc_err_t *err) {
  int rc;
  if ((rc = by_state(db, fp, SQL_JOBS, "fusechat_jobs", "Jobs in the store by state.", JOB_STATES,
                     sizeof JOB_STATES / sizeof *JOB_STATES, err)) ||
      (rc = by_state(db, fp, SQL_TASKS, "fusechat_tasks", "Tasks in the store by state.", TASK_STATES,
                     sizeof TASK_STATES / sizeof *TASK_STATES, err)) ||
      (rc = scalar(db, fp, SQL_LEASES, "fusechat_leases", "gauge", "Leases held by workers now.", err)) ||
      (rc = scalar(db, fp, SQL_RETRIES, "fusechat_task_retries_total", "counter",
                   "Task retries (a failed attempt re-queued, or a retry asked by a client).", err)) ||
      (rc = scalar(db, fp, SQL_ART_BYTES, "fusechat_artifact_bytes", "gauge",
                   "Bytes of the artifacts recorded by done tasks.", err)))
    return rc;
  return durations(db, fp, err);
}
