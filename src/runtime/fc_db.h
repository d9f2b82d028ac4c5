/* The coordinator's store: jobs, tasks and their dependencies, leases, workers, artifacts and an
 * append-only event log in SQLite (WAL). Every state change is one transaction, so a coordinator
 * killed at any point restarts from a consistent database. Times are unix seconds passed in by
 * the caller (tests drive the clock). */
#ifndef FC_DB_H
#define FC_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fc_job.h"
#include "fc_msg.h"
#include "fc_util.h"

typedef struct fc_db fc_db_t;

/* A failed attempt is retried after RETRY_BASE * 2^(attempts-1) seconds (at most RETRY_MAX),
 * times a jitter in [0.5, 1.5); the worker it failed on waits twice that. */
#define FC_DB_RETRY_BASE 0.25
#define FC_DB_RETRY_MAX 30.0
/* Reports: rows per page unless the client asks for fewer, and the most text one page holds
 * (well below a message's FC_MSG_MAX_TEXT). */
#define FC_DB_PAGE_ROWS 1000
#define FC_DB_PAGE_BYTES (2u << 20)

/* The schema version this code migrates to (PRAGMA user_version). */
int fc_db_schema_version(void);

int fc_db_open(fc_db_t **db, const char *path, fc_err_t *err);
void fc_db_close(fc_db_t **db);
/* The sqlite3 connection, for modules that keep their own tables in the same database (one
 * connection: a second one would see the first's read snapshots go stale). */
struct sqlite3 *fc_db_sqlite(fc_db_t *db);
/* Opens migrating only up to schema version `target` (tests of the migrations). */
int fc_db_open_at(fc_db_t **db, const char *path, int target, fc_err_t *err);

/* Stores a parsed job and its task DAG; refuses a second active job of the same name, except
 * that the byte-identical spec again answers with the active job's id (a submit is idempotent,
 * so a client may retry one whose answer it did not get). */
int fc_db_job_create(fc_db_t *db, const fc_job_t *job, const char *spec, double now, int64_t *job_id,
                     fc_err_t *err);

/* Records a worker (register) or refreshes its last-seen time (reg NULL). session names the
 * connection it registered from: when it differs from the stored one, the same id came back
 * from a new process, and the old one's leases are released at once as failed attempts
 * (*released gets how many). */
int fc_db_worker_seen(fc_db_t *db, const fc_msg_t *reg, const char *id, const char *session, double now,
                      int *released, fc_err_t *err);
int fc_db_worker_gone(fc_db_t *db, const char *id, double now, fc_err_t *err);
/* Ends every lease `worker` holds as a failed attempt with the reason why; *n gets how many. */
int fc_db_worker_release(fc_db_t *db, const char *worker, const char *why, double now, int *n, fc_err_t *err);
/* Deletes workers not seen since `before` that hold no lease; *n gets how many. */
int fc_db_workers_prune(fc_db_t *db, double before, int *n, fc_err_t *err);
/* Deletes one worker's row unless it holds a lease. */
int fc_db_worker_forget(fc_db_t *db, const char *worker, fc_err_t *err);

/* Leases the first queued task (by job, then task id) whose deps are done, whose capability is
 * in caps and whose retry backoff is over, to `worker` until now + lease_s. Returns 1 and fills
 * *assign (a task_assign message whose attempt is the lease's fencing token: the task's lease
 * count, which every later lease exceeds) when it leased one, 0 when there is nothing for this
 * worker, <0 on error. */
int fc_db_lease_next(fc_db_t *db, const char *worker, char *const *caps, size_t ncaps, double now,
                     double lease_s, fc_msg_t *assign, fc_err_t *err);
/* A heartbeat message (task, id, attempt, fraction, message, figures): extends the lease and
 * records the progress (*job gets the task's job). Returns 0, or 1 when the worker no longer
 * holds the task under that fencing token (lapsed, leased again, cancelled): it should stop. */
int fc_db_heartbeat(fc_db_t *db, const fc_msg_t *hb, double now, double lease_s, int64_t *job, fc_err_t *err);
/* Re-queues (attempts + 1) or fails every task whose lease lapsed before now; *n gets how many. */
int fc_db_expire(fc_db_t *db, double now, int *n, fc_err_t *err);
/* Moves every lease deadline to at least `deadline`: a restarted coordinator gives workers a
 * full lease period to reach it before their silence counts against them. *n gets how many. */
int fc_db_leases_grace(fc_db_t *db, double deadline, int *n, fc_err_t *err);
/* Earliest lease deadline or end of a retry backoff after now, or 0 when there is none. */
int fc_db_next_deadline(fc_db_t *db, double now, double *deadline, fc_err_t *err);
/* Task finished with these artifacts. Returns 1 (and changes nothing) when `worker` does not
 * hold the lease under fencing token `token`: a late result from a superseded attempt;
 * FC_EINVAL (nothing changed) when an artifact is not one of the task's outputs or below one.
 * final (the result message; NULL: none) gives the task's last message and figures. */
int fc_db_complete(fc_db_t *db, int64_t task, const char *worker, int64_t token, const fc_msg_artifact_t *arts,
                   size_t narts, const fc_msg_t *final, double now, fc_err_t *err);
/* Task failed (attempts + 1; re-queued until max_attempts, then the task and its job fail) or,
 * with handback, was given back unfinished (re-queued, attempts unchanged). 1 when not held. */
int fc_db_fail(fc_db_t *db, int64_t task, const char *worker, int64_t token, const char *error, bool handback,
               double now, fc_err_t *err);

typedef struct fc_db_holder {
  int64_t task;
  char worker[257];
} fc_db_holder_t;
/* Cancels a job's unfinished tasks; *holders lists the leases that were running (to notify). */
int fc_db_job_cancel(fc_db_t *db, int64_t job, double now, fc_db_holder_t **holders, size_t *nholders,
                     fc_err_t *err);
/* Re-queues a failed or cancelled job's failed/cancelled tasks with fresh attempts. */
int fc_db_job_retry(fc_db_t *db, int64_t job, double now, fc_err_t *err);
/* Re-queues one failed or cancelled task (and the job's cancelled ones) with fresh attempts. */
int fc_db_task_retry(fc_db_t *db, int64_t task, double now, fc_err_t *err);

/* What fc_db_job_remove took away: the job's name and directory, the declared outputs no
 * other job declares (the files to delete), and whether another job has the same directory. */
typedef struct fc_db_removed {
  char *name, *dir;
  char **outputs;
  size_t noutputs;
  int dir_shared;
} fc_db_removed_t;
/* Deletes a done, failed or cancelled job's rows (tasks, deps, artifacts, events, the job) and
 * logs a job.removed event in their place; its ids are never given again. FC_EINVAL for a
 * queued or running job, FC_ENOTFOUND for none. The files are the caller's. */
int fc_db_job_remove(fc_db_t *db, int64_t job, double now, fc_db_removed_t *out, fc_err_t *err);
void fc_db_removed_clear(fc_db_removed_t *r);

/* States as text: jobs queued|running|done|failed|cancelled, tasks also leased. */
int fc_db_job_state(fc_db_t *db, int64_t job, char state[16], fc_err_t *err);
int fc_db_task_state(fc_db_t *db, int64_t task, char state[16], int *attempts, fc_err_t *err);
int fc_db_task_id(fc_db_t *db, int64_t job, const char *name, int64_t *task, fc_err_t *err);

/* Reports as JSON text (malloc'ed), the payloads of the client replies, each one page: rows
 * after the cursor `after`, at most `limit` (0 or more than FC_DB_PAGE_ROWS: FC_DB_PAGE_ROWS)
 * and FC_DB_PAGE_BYTES of text. When rows are left the payload has "next": the cursor of the
 * next page. Status of one job pages its tasks (by task id); of all jobs (job 0), the jobs (by
 * id) with their task counts; list pages jobs, logs events (by event id), workers by row.
 * Status gives each task's figures as an object and each job its fraction, elapsed seconds and
 * ETA (null unless it runs) at `now`, the coordinator's time, which it also carries as "now". */
int fc_db_status_json(fc_db_t *db, int64_t job, int64_t after, int64_t limit, double now, char **json,
                      fc_err_t *err);
int fc_db_list_json(fc_db_t *db, int64_t after, int64_t limit, char **json, fc_err_t *err);
int fc_db_logs_json(fc_db_t *db, int64_t job, int64_t since, int64_t limit, char **json, fc_err_t *err);
int fc_db_workers_json(fc_db_t *db, int64_t after, int64_t limit, char **json, fc_err_t *err);
int fc_db_artifacts_json(fc_db_t *db, int64_t job, char **json, fc_err_t *err);

/* Metrics (fc_db_metrics.c): the store's series in the Prometheus text format, written to fp
 * (jobs and tasks by state, leases, retries, artifact bytes, the task duration histogram). The
 * histogram's upper bounds in seconds (+Inf is implied): */
#define FC_DB_DURATION_NBUCKETS 9
extern const double fc_db_duration_buckets[FC_DB_DURATION_NBUCKETS];
int fc_db_metrics(fc_db_t *db, FILE *fp, fc_err_t *err);
/* Writes a label value with the escapes the format asks for (\\, \", \n). */
void fc_db_metrics_label(FILE *fp, const char *v);

/* Calls fn for each event with id > after (in order); *last gets the last id seen. */
typedef void (*fc_db_event_fn)(void *arg, int64_t id, double time, int64_t job, int64_t task,
                               const char *type, const char *message);
int fc_db_events_after(fc_db_t *db, int64_t after, fc_db_event_fn fn, void *arg, int64_t *last,
                       fc_err_t *err);

#endif
