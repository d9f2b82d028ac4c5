/* SQLite store of the coordinator (see fc_db.h). Statements are prepared once and cached by
 * their SQL text's address; every public mutation runs in one BEGIN IMMEDIATE transaction. */
#include "fc_db.h"
#include "fc_db_impl.h"

#include <assert.h>
#include <math.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* Schema migrations, applied in order; user_version counts how many are in the database. */
static const char *const migrations[] = {
    "CREATE TABLE jobs(id INTEGER PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL,"
    "  dir TEXT NOT NULL, state TEXT NOT NULL, error TEXT, created REAL NOT NULL, finished REAL);"
    "CREATE TABLE tasks(id INTEGER PRIMARY KEY, job INTEGER NOT NULL REFERENCES jobs(id),"
    "  name TEXT NOT NULL, kind TEXT NOT NULL, cap TEXT NOT NULL, params TEXT NOT NULL,"
    "  inputs TEXT NOT NULL, outputs TEXT NOT NULL, state TEXT NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, error TEXT,"
    "  fraction REAL NOT NULL DEFAULT 0, message TEXT, worker TEXT, started REAL, finished REAL,"
    "  UNIQUE(job, name));"
    "CREATE INDEX tasks_by_state ON tasks(state, job, id);"
    "CREATE TABLE deps(task INTEGER NOT NULL REFERENCES tasks(id), dep INTEGER NOT NULL REFERENCES tasks(id),"
    "  PRIMARY KEY(task, dep)) WITHOUT ROWID;"
    "CREATE TABLE leases(task INTEGER PRIMARY KEY REFERENCES tasks(id), worker TEXT NOT NULL,"
    "  deadline REAL NOT NULL);"
    "CREATE TABLE workers(id TEXT PRIMARY KEY, caps TEXT NOT NULL, host TEXT, threads INTEGER,"
    "  mem INTEGER, state TEXT NOT NULL, registered REAL NOT NULL, last_seen REAL NOT NULL);"
    "CREATE TABLE artifacts(task INTEGER NOT NULL REFERENCES tasks(id), path TEXT NOT NULL,"
    "  size INTEGER NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY(task, path));"
    "CREATE TABLE events(id INTEGER PRIMARY KEY, time REAL NOT NULL, job INTEGER, task INTEGER,"
    "  type TEXT NOT NULL, message TEXT);"
    "CREATE INDEX events_by_job ON events(job, id);",
    /* 2: finding whether a job has unfinished tasks without scanning its done ones */
    "CREATE INDEX tasks_by_job_state ON tasks(job, state);",
    /* 3: the figures (name -> number) of a task's last heartbeat, as a JSON object */
    "ALTER TABLE tasks ADD COLUMN figures TEXT;",
    /* 4: fencing (a task's lease count is the token of its current lease), retry backoff that
     * keeps a failed task off the worker it failed on for longer, a worker's session (its
     * connection: a new one means the old process is gone), expiry of dead workers */
    "ALTER TABLE tasks ADD COLUMN leases INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE tasks ADD COLUMN retry_at REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE tasks ADD COLUMN avoid TEXT;"
    "ALTER TABLE tasks ADD COLUMN avoid_until REAL NOT NULL DEFAULT 0;"
    "ALTER TABLE leases ADD COLUMN token INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE workers ADD COLUMN session TEXT;"
    "CREATE INDEX tasks_by_retry ON tasks(state, retry_at);"
    "CREATE INDEX tasks_by_avoid ON tasks(state, avoid_until);"
    "CREATE INDEX leases_by_worker ON leases(worker);"
    "CREATE INDEX workers_by_seen ON workers(last_seen);",
    /* 5: ids are never given twice (fusectl rm deletes rows, and SQLite would hand the highest
     * ids out again): the highest job and task id ever used, kept when their rows go */
    "CREATE TABLE id_floor(name TEXT PRIMARY KEY, id INTEGER NOT NULL) WITHOUT ROWID;",
};
#define NMIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int fc_db_schema_version(void) { return NMIGRATIONS; }

int fc_db_err(fc_db_t *db, fc_err_t *err, const char *what) {
  return fc_err_set(err, FC_EIO, "database: %s: %s", what, sqlite3_errmsg(db->h));
}

/* A cached statement for sql, reset and bound by `fmt`: i int64, d double, s text (NULL: null). */
sqlite3_stmt *fc_db_stmt(fc_db_t *db, const char *sql, const char *fmt, ...) {
  sqlite3_stmt *st = NULL;
  int i;
  for (i = 0; i < NCACHE && db->cache[i].sql; i++)
    if (db->cache[i].sql == sql) {
      st = db->cache[i].st;
      break;
    }
  if (!st) {
    if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) return NULL;
    assert(i < NCACHE);
    db->cache[i].sql = sql, db->cache[i].st = st;
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  va_list ap;
  va_start(ap, fmt);
  for (int k = 0; fmt[k]; k++) {
    if (fmt[k] == 'i') sqlite3_bind_int64(st, k + 1, va_arg(ap, int64_t));
    else if (fmt[k] == 'd') sqlite3_bind_double(st, k + 1, va_arg(ap, double));
    else {
      const char *s = va_arg(ap, const char *);
      if (s) sqlite3_bind_text(st, k + 1, s, -1, SQLITE_TRANSIENT);
      else sqlite3_bind_null(st, k + 1);
    }
  }
  va_end(ap);
  return st;
}


/* Runs a statement to completion (no rows wanted). */
#define EXEC(db, err, sql, ...)                                                   \
  do {                                                                            \
    sqlite3_stmt *st_ = fc_db_stmt(db, sql, __VA_ARGS__);                               \
    if (!st_ || sqlite3_step(st_) != SQLITE_DONE) {                               \
      rc = fc_db_err(db, err, "update");                                              \
      goto out;                                                                   \
    }                                                                             \
  } while (0)

static int begin(fc_db_t *db, fc_err_t *err) {
  if (sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return fc_db_err(db, err, "begin");
  return 0;
}

static int end(fc_db_t *db, int rc, fc_err_t *err) {
  if (rc < 0) {
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    return rc;
  }
  if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    int e = fc_db_err(db, err, "commit");
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    return e;
  }
  return rc;
}

static const char SQL_EVENT[] = "INSERT INTO events(time, job, task, type, message) VALUES(?, ?, ?, ?, ?)";
static int event(fc_db_t *db, double now, int64_t job, int64_t task, const char *type, const char *msg,
                 fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, SQL_EVENT, "diiss", now, job, task, type, msg);
  if (!st || sqlite3_step(st) != SQLITE_DONE) return fc_db_err(db, err, "event");
  return 0;
}

struct sqlite3 *fc_db_sqlite(fc_db_t *db) { return db->h; }

int fc_db_open(fc_db_t **out, const char *path, fc_err_t *err) {
  return fc_db_open_at(out, path, NMIGRATIONS, err);
}

int fc_db_open_at(fc_db_t **out, const char *path, int target, fc_err_t *err) {
  assert(target >= 1 && target <= NMIGRATIONS);
  *out = NULL;
  fc_db_t *db = fc_xcalloc(1, sizeof *db);
  if (sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
    int rc = fc_err_set(err, FC_EIO, "cannot open database %s: %s", path, db->h ? sqlite3_errmsg(db->h) : "out of memory");
    sqlite3_close(db->h);
    free(db);
    return rc;
  }
  sqlite3_busy_timeout(db->h, 5000);
  /* WAL with synchronous=NORMAL: a commit survives a process crash (SIGKILL); only a power
   * loss can take back the last transactions. */
  int rc = 0;
  if (sqlite3_exec(db->h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
                   NULL, NULL, NULL) != SQLITE_OK) {
    rc = fc_db_err(db, err, "setting up");
    goto fail;
  }
  sqlite3_stmt *st;
  int version = 0;
  if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) {
    rc = fc_db_err(db, err, "reading the schema version");
    goto fail;
  }
  if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  if (version > NMIGRATIONS) {
    rc = fc_err_set(err, FC_EUNSUPPORTED, "database %s has schema version %d, newer than this program's %d",
                    path, version, NMIGRATIONS);
    goto fail;
  }
  for (int v = version; v < target; v++) {
    char *msg = NULL;
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d;", v + 1);
    if (sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db->h, migrations[v], NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db->h, pragma, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db->h, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
      rc = fc_err_set(err, FC_EIO, "database %s: migration to version %d: %s", path, v + 1, msg ? msg : "?");
      sqlite3_free(msg);
      sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
      goto fail;
    }
  }
  *out = db;
  return 0;
fail:
  sqlite3_close(db->h);
  free(db);
  return rc;
}

void fc_db_close(fc_db_t **dbp) {
  fc_db_t *db = *dbp;
  if (!db) return;
  for (int i = 0; i < NCACHE && db->cache[i].sql; i++) sqlite3_finalize(db->cache[i].st);
  sqlite3_close(db->h);
  free(db);
  *dbp = NULL;
}

static char *json_strs(char *const *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
  char *s = json_dumps(a, JSON_COMPACT);
  json_decref(a);
  return s;
}

int fc_db_job_create(fc_db_t *db, const fc_job_t *job, const char *spec, double now, int64_t *job_id,
                     fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  int64_t *ids = fc_xcalloc(job->ntasks ? job->ntasks : 1, sizeof *ids);
  int64_t task_floor = fc_db_id_floor(db, "tasks");
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT id, spec = ? FROM jobs WHERE name = ? AND state IN ('queued', 'running')",
                                "ss", spec, job->name);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  if (sqlite3_step(st) == SQLITE_ROW) {
    int64_t active = sqlite3_column_int64(st, 0);
    /* The same spec again is a client's retry after its answer was lost or late (a slow
     * coordinator, fusectl run twice): the job it meant is this one, not a second copy. */
    if (sqlite3_column_int(st, 1)) {
      *job_id = active;
      goto out;
    }
    rc = fc_err_set(err, FC_EINVAL, "job '%s' is already active (job %lld) with another spec; cancel it first",
                    job->name, (long long)active);
    goto out;
  }
  EXEC(db, err, "INSERT INTO jobs(id, name, spec, dir, state, created) VALUES(" FC_DB_NEXT_ID("jobs") ", ?, ?, ?, 'queued', ?)", "isssd",
       fc_db_id_floor(db, "jobs"), job->name, spec, job->dir, now);
  *job_id = sqlite3_last_insert_rowid(db->h);
  for (size_t i = 0; i < job->ntasks; i++) {
    const fc_job_task_t *t = &job->tasks[i];
    json_t *p = json_object();
    for (size_t k = 0; k < t->nparams; k++) json_object_set_new(p, t->params[k].key, json_string(t->params[k].val));
    char *params = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(p);
    char *in = json_strs(t->inputs, t->ninputs), *outs = json_strs(t->outputs, t->noutputs);
    st = fc_db_stmt(db, "INSERT INTO tasks(id, job, name, kind, cap, params, inputs, outputs, state, max_attempts)"
                  " VALUES(" FC_DB_NEXT_ID("tasks") ", ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
              "iissssssi", task_floor, *job_id, t->name, t->kind, t->cap, params, in, outs, (int64_t)job->max_attempts);
    int ok = st && sqlite3_step(st) == SQLITE_DONE;
    free(params), free(in), free(outs);
    if (!ok) {
      rc = fc_db_err(db, err, "adding a task");
      goto out;
    }
    ids[i] = sqlite3_last_insert_rowid(db->h);
    for (size_t d = 0; d < t->ndeps; d++)
      EXEC(db, err, "INSERT OR IGNORE INTO deps(task, dep) VALUES(?, ?)", "ii", ids[i], ids[t->deps[d]]);
  }
  char msg[256];
  snprintf(msg, sizeof msg, "job '%s' submitted with %zu tasks", job->name, job->ntasks);
  rc = event(db, now, *job_id, 0, "job.submitted", msg, err);
out:
  free(ids);
  return end(db, rc, err);
}

/* Inside a transaction: every lease `worker` holds ends as a failed attempt (why). */
static int release_leases(fc_db_t *db, const char *worker, const char *why, double now, int *n, fc_err_t *err);

int fc_db_worker_seen(fc_db_t *db, const fc_msg_t *reg, const char *id, const char *session, double now,
                      int *released, fc_err_t *err) {
  if (released) *released = 0;
  int rc = begin(db, err);
  if (rc) return rc;
  if (reg && session) {
    sqlite3_stmt *st = fc_db_stmt(db, "SELECT session FROM workers WHERE id = ?", "s", id);
    if (!st) {
      rc = fc_db_err(db, err, "query");
      goto out;
    }
    int changed = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL &&
                  strcmp((const char *)sqlite3_column_text(st, 0), session) != 0;
    sqlite3_reset(st);
    if (changed) { /* the same id from a new process: the old one's work is lost, re-queue it now */
      char why[400];
      snprintf(why, sizeof why, "worker %s restarted", id);
      int n = 0;
      if ((rc = release_leases(db, id, why, now, &n, err))) goto out;
      if (released) *released = n;
    }
  }
  if (reg) {
    char *caps = json_strs(reg->caps, reg->ncaps);
    sqlite3_stmt *st = fc_db_stmt(db,
                            "INSERT INTO workers(id, caps, host, threads, mem, state, registered, last_seen)"
                            " VALUES(?1, ?2, ?3, ?4, ?5, 'up', ?6, ?6) ON CONFLICT(id) DO UPDATE SET"
                            " caps = ?2, host = ?3, threads = ?4, mem = ?5, state = 'up', last_seen = ?6",
                            "sssiid", id, caps, reg->host, reg->threads, reg->mem, now);
    int ok = st && sqlite3_step(st) == SQLITE_DONE;
    free(caps);
    if (!ok) rc = fc_db_err(db, err, "recording a worker");
    if (!rc && session) EXEC(db, err, "UPDATE workers SET session = ? WHERE id = ?", "ss", session, id);
  } else {
    EXEC(db, err, "UPDATE workers SET last_seen = ?, state = 'up' WHERE id = ?", "ds", now, id);
  }
out:
  return end(db, rc, err);
}

int fc_db_worker_gone(fc_db_t *db, const char *id, double now, fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  EXEC(db, err, "UPDATE workers SET last_seen = ?, state = 'gone' WHERE id = ?", "ds", now, id);
out:
  return end(db, rc, err);
}

static int strlist(const char *json, void (*add)(fc_msg_t *, const char *), fc_msg_t *m) {
  json_t *a = json_loads(json, 0, NULL);
  if (!json_is_array(a)) return json_decref(a), -1;
  size_t i;
  json_t *v;
  json_array_foreach(a, i, v) if (json_is_string(v)) add(m, json_string_value(v));
  json_decref(a);
  return 0;
}

/* A failed task waits out its backoff, and longer on the worker it failed on. */
static const char SQL_NEXT[] =
    "SELECT t.id, t.job, t.kind, t.params, t.inputs, t.outputs, t.leases, t.name FROM tasks t"
    " JOIN jobs j ON j.id = t.job"
    " WHERE t.state = 'queued' AND j.state IN ('queued', 'running')"
    " AND t.cap IN (SELECT value FROM json_each(?1))"
    " AND t.retry_at <= ?2 AND (t.avoid IS NOT ?3 OR t.avoid_until <= ?2)"
    " AND NOT EXISTS (SELECT 1 FROM deps d JOIN tasks u ON u.id = d.dep WHERE d.task = t.id AND u.state <> 'done')"
    " ORDER BY t.job, t.id LIMIT 1";

int fc_db_lease_next(fc_db_t *db, const char *worker, char *const *caps, size_t ncaps, double now,
                     double lease_s, fc_msg_t *assign, fc_err_t *err) {
  memset(assign, 0, sizeof *assign);
  int rc = begin(db, err);
  if (rc) return rc;
  char *capj = json_strs(caps, ncaps);
  sqlite3_stmt *st = fc_db_stmt(db, SQL_NEXT, "sds", capj, now, worker);
  free(capj);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  int step = sqlite3_step(st);
  if (step == SQLITE_DONE) goto out; /* nothing for this worker */
  if (step != SQLITE_ROW) {
    rc = fc_db_err(db, err, "finding a task");
    goto out;
  }
  assign->type = FC_MSG_TASK_ASSIGN;
  assign->task = sqlite3_column_int64(st, 0);
  assign->job = sqlite3_column_int64(st, 1);
  fc_msg_set_str(&assign->kind, (const char *)sqlite3_column_text(st, 2));
  json_t *p = json_loads((const char *)sqlite3_column_text(st, 3), 0, NULL);
  const char *k;
  json_t *v;
  json_object_foreach(p, k, v) if (json_is_string(v)) fc_msg_add_param(assign, k, json_string_value(v));
  json_decref(p);
  strlist((const char *)sqlite3_column_text(st, 4), fc_msg_add_input, assign);
  strlist((const char *)sqlite3_column_text(st, 5), fc_msg_add_output, assign);
  assign->attempt = sqlite3_column_int64(st, 6) + 1;
  char msg[600];
  snprintf(msg, sizeof msg, "%s leased to %s (lease %lld)", (const char *)sqlite3_column_text(st, 7), worker,
           (long long)assign->attempt);
  sqlite3_reset(st);
  EXEC(db, err, "UPDATE tasks SET state = 'leased', worker = ?, started = ?, fraction = 0, message = NULL, leases = ?"
                " WHERE id = ?", "sdii", worker, now, assign->attempt, assign->task);
  EXEC(db, err, "INSERT OR REPLACE INTO leases(task, worker, deadline, token) VALUES(?, ?, ?, ?)", "isdi",
       assign->task, worker, now + lease_s, assign->attempt);
  EXEC(db, err, "UPDATE jobs SET state = 'running' WHERE id = ? AND state = 'queued'", "i", assign->job);
  rc = event(db, now, assign->job, assign->task, "task.leased", msg, err);
  if (rc == 0) rc = 1;
out:
  if (rc <= 0) fc_msg_clear(assign);
  return end(db, rc, err);
}

/* Whether worker holds task's lease under this fencing token; fills job and the task's name. */
static int holds(fc_db_t *db, int64_t task, const char *worker, int64_t token, int64_t *job, char *name,
                 size_t nname, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db,
                          "SELECT t.job, t.name FROM leases l JOIN tasks t ON t.id = l.task"
                          " WHERE l.task = ? AND l.worker = ? AND l.token = ?",
                          "isi", task, worker, token);
  if (!st) return fc_db_err(db, err, "query");
  int s = sqlite3_step(st);
  if (s == SQLITE_DONE) return 0;
  if (s != SQLITE_ROW) return fc_db_err(db, err, "reading a lease");
  *job = sqlite3_column_int64(st, 0);
  snprintf(name, nname, "%s", (const char *)sqlite3_column_text(st, 1));
  sqlite3_reset(st);
  return 1;
}

/* Inside a transaction: a task's progress, message and figures as a heartbeat or the result
 * reported them (figures kept as one JSON object; a figure that is not finite is null). */
static int record_progress(fc_db_t *db, int64_t task, const fc_msg_t *m, double fraction, fc_err_t *err) {
  json_t *f = json_object();
  for (size_t i = 0; i < m->nfigs; i++)
    json_object_set_new(f, m->figs[i].name, isfinite(m->figs[i].val) ? json_real(m->figs[i].val) : json_null());
  char *figs = json_dumps(f, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(f);
  sqlite3_stmt *up = fc_db_stmt(db, "UPDATE tasks SET fraction = ?, message = ?, figures = ? WHERE id = ?", "dssi",
                                fraction < 0 ? 0 : fraction > 1 ? 1 : fraction, m->message, figs, task);
  int ok = up && sqlite3_step(up) == SQLITE_DONE;
  free(figs);
  return ok ? 0 : fc_db_err(db, err, "recording progress");
}

int fc_db_heartbeat(fc_db_t *db, const fc_msg_t *hb, double now, double lease_s, int64_t *jobp, fc_err_t *err) {
  int64_t task = hb->task;
  const char *worker = hb->id;
  double fraction = hb->fraction;
  int rc = begin(db, err);
  if (rc) return rc;
  int64_t job = 0;
  char name[512];
  int h = holds(db, task, worker, hb->attempt, &job, name, sizeof name, err);
  if (h <= 0) {
    rc = h < 0 ? h : 1;
    goto out;
  }
  if (jobp) *jobp = job;
  EXEC(db, err, "UPDATE leases SET deadline = ? WHERE task = ?", "di", now + lease_s, task);
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT state FROM tasks WHERE id = ?", "i", task);
  if (st && sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "leased")) {
    sqlite3_reset(st);
    char msg[600];
    snprintf(msg, sizeof msg, "%s running on %s", name, worker);
    if ((rc = event(db, now, job, task, "task.running", msg, err))) goto out;
  }
  EXEC(db, err, "UPDATE tasks SET state = 'running' WHERE id = ?", "i", task);
  if ((rc = record_progress(db, task, hb, fraction, err))) goto out;
  EXEC(db, err, "UPDATE workers SET last_seen = ? WHERE id = ?", "ds", now, worker);
out:
  return end(db, rc, err);
}

/* Inside a transaction: one failed attempt of a leased task (lease already removed). */
static int attempt_failed(fc_db_t *db, int64_t task, int64_t job, const char *name, const char *error,
                          double now, fc_err_t *err) {
  int rc = 0;
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT attempts, max_attempts FROM tasks WHERE id = ?", "i", task);
  if (!st || sqlite3_step(st) != SQLITE_ROW) return fc_db_err(db, err, "reading a task");
  int attempts = sqlite3_column_int(st, 0) + 1, max = sqlite3_column_int(st, 1);
  sqlite3_reset(st);
  char msg[1200];
  if (attempts < max) {
    /* exponential backoff with jitter; the worker it failed on waits one more backoff */
    double d = FC_DB_RETRY_BASE * (double)(1u << (attempts - 1 < 16 ? attempts - 1 : 16));
    d = (d < FC_DB_RETRY_MAX ? d : FC_DB_RETRY_MAX) * (0.5 + (double)rand() / RAND_MAX);
    EXEC(db, err, "UPDATE tasks SET state = 'queued', attempts = ?, error = ?, avoid = worker, worker = NULL,"
                  " retry_at = ?, avoid_until = ? WHERE id = ?",
         "isddi", (int64_t)attempts, error, now + d, now + 2 * d, task);
    snprintf(msg, sizeof msg, "%s attempt %d of %d failed, re-queued: %s", name, attempts, max, error);
    return event(db, now, job, task, "task.retry", msg, err);
  }
  EXEC(db, err, "UPDATE tasks SET state = 'failed', attempts = ?, error = ?, finished = ? WHERE id = ?", "isdi",
       (int64_t)attempts, error, now, task);
  snprintf(msg, sizeof msg, "%s failed after %d attempts: %s", name, attempts, error);
  if ((rc = event(db, now, job, task, "task.failed", msg, err))) return rc;
  EXEC(db, err, "UPDATE jobs SET state = 'failed', error = ?, finished = ? WHERE id = ? AND state IN ('queued', 'running')",
       "sdi", msg, now, job);
  if (sqlite3_changes(db->h) > 0) rc = event(db, now, job, 0, "job.failed", msg, err);
out:
  return rc;
}

int fc_db_expire(fc_db_t *db, double now, int *n, fc_err_t *err) {
  *n = 0;
  int rc = begin(db, err);
  if (rc) return rc;
  for (;;) {
    sqlite3_stmt *st = fc_db_stmt(db,
                            "SELECT l.task, l.worker, t.job, t.name FROM leases l JOIN tasks t ON t.id = l.task"
                            " WHERE l.deadline < ? ORDER BY l.deadline LIMIT 1",
                            "d", now);
    if (!st) {
      rc = fc_db_err(db, err, "query");
      goto out;
    }
    int s = sqlite3_step(st);
    if (s == SQLITE_DONE) break;
    if (s != SQLITE_ROW) {
      rc = fc_db_err(db, err, "reading leases");
      goto out;
    }
    int64_t task = sqlite3_column_int64(st, 0), job = sqlite3_column_int64(st, 2);
    char worker[300], name[512], why[900];
    snprintf(worker, sizeof worker, "%s", (const char *)sqlite3_column_text(st, 1));
    snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(st, 3));
    sqlite3_reset(st);
    EXEC(db, err, "DELETE FROM leases WHERE task = ?", "i", task);
    snprintf(why, sizeof why, "lease lapsed: worker %s stopped heartbeating", worker);
    if ((rc = attempt_failed(db, task, job, name, why, now, err))) goto out;
    (*n)++;
  }
out:
  return end(db, rc, err);
}

static int release_leases(fc_db_t *db, const char *worker, const char *why, double now, int *n, fc_err_t *err) {
  int rc = 0;
  for (;;) {
    sqlite3_stmt *st = fc_db_stmt(db, "SELECT l.task, t.job, t.name FROM leases l JOIN tasks t ON t.id = l.task"
                                      " WHERE l.worker = ? LIMIT 1", "s", worker);
    if (!st) return fc_db_err(db, err, "query");
    int s = sqlite3_step(st);
    if (s == SQLITE_DONE) break;
    if (s != SQLITE_ROW) return fc_db_err(db, err, "reading leases");
    int64_t task = sqlite3_column_int64(st, 0), job = sqlite3_column_int64(st, 1);
    char name[512];
    snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(st, 2));
    sqlite3_reset(st);
    EXEC(db, err, "DELETE FROM leases WHERE task = ?", "i", task);
    if ((rc = attempt_failed(db, task, job, name, why, now, err))) return rc;
    (*n)++;
  }
out:
  return rc;
}

int fc_db_worker_release(fc_db_t *db, const char *worker, const char *why, double now, int *n, fc_err_t *err) {
  *n = 0;
  int rc = begin(db, err);
  if (rc) return rc;
  rc = release_leases(db, worker, why, now, n, err);
  return end(db, rc, err);
}

int fc_db_workers_prune(fc_db_t *db, double before, int *n, fc_err_t *err) {
  *n = 0;
  int rc = begin(db, err);
  if (rc) return rc;
  EXEC(db, err, "DELETE FROM workers WHERE last_seen < ? AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.worker = workers.id)",
       "d", before);
  *n = sqlite3_changes(db->h);
out:
  return end(db, rc, err);
}

int fc_db_worker_forget(fc_db_t *db, const char *worker, fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  EXEC(db, err, "DELETE FROM workers WHERE id = ? AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.worker = workers.id)",
       "s", worker);
out:
  return end(db, rc, err);
}

int fc_db_leases_grace(fc_db_t *db, double deadline, int *n, fc_err_t *err) {
  *n = 0;
  int rc = begin(db, err);
  if (rc) return rc;
  EXEC(db, err, "UPDATE leases SET deadline = ? WHERE deadline < ?", "dd", deadline, deadline);
  *n = sqlite3_changes(db->h);
out:
  return end(db, rc, err);
}

int fc_db_next_deadline(fc_db_t *db, double now, double *deadline, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT MIN(d) FROM (SELECT MIN(deadline) AS d FROM leases"
                                    " UNION ALL SELECT MIN(retry_at) FROM tasks WHERE state = 'queued' AND retry_at > ?1"
                                    " UNION ALL SELECT MIN(avoid_until) FROM tasks WHERE state = 'queued' AND avoid_until > ?1)",
                                "d", now);
  if (!st || sqlite3_step(st) != SQLITE_ROW) return fc_db_err(db, err, "query");
  *deadline = sqlite3_column_type(st, 0) == SQLITE_NULL ? 0 : sqlite3_column_double(st, 0);
  sqlite3_reset(st);
  return 0;
}

/* A result may only name the task's outputs or files below them. */
static int check_artifacts(fc_db_t *db, int64_t task, const fc_msg_artifact_t *arts, size_t narts, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT outputs FROM tasks WHERE id = ?", "i", task);
  if (!st || sqlite3_step(st) != SQLITE_ROW) return fc_db_err(db, err, "reading a task");
  json_t *outs = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
  sqlite3_reset(st);
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < narts; i++) {
    const char *p = arts[i].path;
    int ok = 0;
    size_t k;
    json_t *o;
    json_array_foreach(outs, k, o) {
      const char *out = json_string_value(o);
      size_t n = out ? strlen(out) : 0;
      if (out && !strncmp(p, out, n) && (p[n] == 0 || p[n] == '/') && !strstr(p + n, "/..")) ok = 1;
    }
    if (!ok) rc = fc_err_set(err, FC_EINVAL, "result names %s, which is not one of the task's outputs", p);
  }
  json_decref(outs);
  return rc;
}

int fc_db_complete(fc_db_t *db, int64_t task, const char *worker, int64_t token, const fc_msg_artifact_t *arts,
                   size_t narts, const fc_msg_t *final, double now, fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  int64_t job;
  char name[512], msg[700];
  int h = holds(db, task, worker, token, &job, name, sizeof name, err);
  if (h <= 0) {
    rc = h < 0 ? h : 1;
    goto out;
  }
  if ((rc = check_artifacts(db, task, arts, narts, err))) goto out;
  EXEC(db, err, "DELETE FROM leases WHERE task = ?", "i", task);
  /* the last word on the task's figures and message is the result's, not the last heartbeat's */
  if (final && (final->message || final->nfigs) && (rc = record_progress(db, task, final, 1, err))) goto out;
  EXEC(db, err, "UPDATE tasks SET state = 'done', fraction = 1, error = NULL, finished = ? WHERE id = ?", "di", now, task);
  EXEC(db, err, "DELETE FROM artifacts WHERE task = ?", "i", task);
  for (size_t i = 0; i < narts; i++)
    EXEC(db, err, "INSERT OR REPLACE INTO artifacts(task, path, size, sha256) VALUES(?, ?, ?, ?)", "isis", task,
         arts[i].path, (int64_t)arts[i].size, arts[i].sha256);
  snprintf(msg, sizeof msg, "%s done on %s", name, worker);
  if ((rc = event(db, now, job, task, "task.done", msg, err))) goto out;
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT EXISTS(SELECT 1 FROM tasks WHERE job = ? AND state IN"
                              " ('queued', 'leased', 'running', 'failed', 'cancelled'))", "i", job);
  if (!st || sqlite3_step(st) != SQLITE_ROW) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  int64_t left = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  if (left == 0) {
    EXEC(db, err, "UPDATE jobs SET state = 'done', error = NULL, finished = ? WHERE id = ?", "di", now, job);
    rc = event(db, now, job, 0, "job.done", "all tasks done", err);
  }
out:
  return end(db, rc, err);
}

int fc_db_fail(fc_db_t *db, int64_t task, const char *worker, int64_t token, const char *error, bool handback,
               double now, fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  int64_t job;
  char name[512];
  int h = holds(db, task, worker, token, &job, name, sizeof name, err);
  if (h <= 0) {
    rc = h < 0 ? h : 1;
    goto out;
  }
  EXEC(db, err, "DELETE FROM leases WHERE task = ?", "i", task);
  if (handback) {
    char msg[700];
    EXEC(db, err, "UPDATE tasks SET state = 'queued', worker = NULL, retry_at = 0, avoid = NULL WHERE id = ?", "i", task);
    snprintf(msg, sizeof msg, "%s handed back by %s", name, worker);
    rc = event(db, now, job, task, "task.handback", msg, err);
  } else {
    rc = attempt_failed(db, task, job, name, error ? error : "unknown error", now, err);
  }
out:
  return end(db, rc, err);
}

int fc_db_job_cancel(fc_db_t *db, int64_t job, double now, fc_db_holder_t **holders, size_t *nholders,
                     fc_err_t *err) {
  *holders = NULL, *nholders = 0;
  int rc = begin(db, err);
  if (rc) return rc;
  char state[16];
  if ((rc = fc_db_job_state(db, job, state, err))) goto out;
  if (strcmp(state, "queued") && strcmp(state, "running")) {
    rc = fc_err_set(err, FC_EINVAL, "job %lld is %s, there is nothing to cancel", (long long)job, state);
    goto out;
  }
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT l.task, l.worker FROM leases l JOIN tasks t ON t.id = l.task WHERE t.job = ?", "i", job);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    *holders = fc_xrealloc(*holders, (*nholders + 1) * sizeof **holders);
    (*holders)[*nholders].task = sqlite3_column_int64(st, 0);
    snprintf((*holders)[*nholders].worker, sizeof (*holders)[0].worker, "%s", (const char *)sqlite3_column_text(st, 1));
    (*nholders)++;
  }
  EXEC(db, err, "DELETE FROM leases WHERE task IN (SELECT id FROM tasks WHERE job = ?)", "i", job);
  EXEC(db, err, "UPDATE tasks SET state = 'cancelled', finished = ? WHERE job = ? AND state IN ('queued', 'leased', 'running')",
       "di", now, job);
  EXEC(db, err, "UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ?", "di", now, job);
  rc = event(db, now, job, 0, "job.cancelled", "cancelled by a client", err);
out:
  if (rc < 0) free(*holders), *holders = NULL, *nholders = 0;
  return end(db, rc, err);
}

int fc_db_job_retry(fc_db_t *db, int64_t job, double now, fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  char state[16];
  if ((rc = fc_db_job_state(db, job, state, err))) goto out;
  if (strcmp(state, "failed") && strcmp(state, "cancelled")) {
    rc = fc_err_set(err, FC_EINVAL, "job %lld is %s; only a failed or cancelled job can be retried", (long long)job, state);
    goto out;
  }
  EXEC(db, err, "UPDATE tasks SET state = 'queued', attempts = 0, error = NULL, worker = NULL, fraction = 0,"
                " retry_at = 0, avoid = NULL, avoid_until = 0"
                " WHERE job = ? AND state IN ('failed', 'cancelled')", "i", job);
  EXEC(db, err, "UPDATE jobs SET state = 'running', error = NULL, finished = NULL WHERE id = ?", "i", job);
  rc = event(db, now, job, 0, "job.retry", "failed and cancelled tasks re-queued", err);
out:
  return end(db, rc, err);
}

int fc_db_task_retry(fc_db_t *db, int64_t task, double now, fc_err_t *err) {
  int rc = begin(db, err);
  if (rc) return rc;
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT job, state, name FROM tasks WHERE id = ?", "i", task);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  if (sqlite3_step(st) != SQLITE_ROW) {
    rc = fc_err_set(err, FC_ENOTFOUND, "no task %lld", (long long)task);
    goto out;
  }
  int64_t job = sqlite3_column_int64(st, 0);
  char state[16], name[512], msg[600];
  snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 1));
  snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(st, 2));
  sqlite3_reset(st);
  if (strcmp(state, "failed") && strcmp(state, "cancelled")) {
    rc = fc_err_set(err, FC_EINVAL, "task %lld (%s) is %s; only a failed or cancelled task can be retried",
                    (long long)task, name, state);
    goto out;
  }
  EXEC(db, err, "UPDATE tasks SET state = 'queued', attempts = 0, error = NULL, worker = NULL, fraction = 0,"
                " retry_at = 0, avoid = NULL, avoid_until = 0"
                " WHERE id = ? OR (job = ? AND state = 'cancelled')", "ii", task, job);
  EXEC(db, err, "UPDATE jobs SET state = 'running', error = NULL, finished = NULL WHERE id = ? AND state <> 'running'", "i", job);
  snprintf(msg, sizeof msg, "%s re-queued by a client", name);
  rc = event(db, now, job, task, "task.retry", msg, err);
out:
  return end(db, rc, err);
}

int fc_db_job_state(fc_db_t *db, int64_t job, char state[16], fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT state FROM jobs WHERE id = ?", "i", job);
  if (!st) return fc_db_err(db, err, "query");
  if (sqlite3_step(st) != SQLITE_ROW) return fc_err_set(err, FC_ENOTFOUND, "no job %lld", (long long)job);
  snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_reset(st);
  return 0;
}

int fc_db_task_state(fc_db_t *db, int64_t task, char state[16], int *attempts, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT state, attempts FROM tasks WHERE id = ?", "i", task);
  if (!st) return fc_db_err(db, err, "query");
  if (sqlite3_step(st) != SQLITE_ROW) return fc_err_set(err, FC_ENOTFOUND, "no task %lld", (long long)task);
  snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 0));
  if (attempts) *attempts = sqlite3_column_int(st, 1);
  sqlite3_reset(st);
  return 0;
}

int fc_db_task_id(fc_db_t *db, int64_t job, const char *name, int64_t *task, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT id FROM tasks WHERE job = ? AND name = ?", "is", job, name);
  if (!st) return fc_db_err(db, err, "query");
  if (sqlite3_step(st) != SQLITE_ROW) return fc_err_set(err, FC_ENOTFOUND, "job %lld has no task '%s'", (long long)job, name);
  *task = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return 0;
}

int fc_db_events_after(fc_db_t *db, int64_t after, fc_db_event_fn fn, void *arg, int64_t *last, fc_err_t *err) {
  *last = after;
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT id, time, job, task, type, message FROM events WHERE id > ? ORDER BY id", "i", after);
  if (!st) return fc_db_err(db, err, "query");
  while (sqlite3_step(st) == SQLITE_ROW) {
    *last = sqlite3_column_int64(st, 0);
    fn(arg, *last, sqlite3_column_double(st, 1), sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
       (const char *)sqlite3_column_text(st, 4), (const char *)sqlite3_column_text(st, 5));
  }
  sqlite3_reset(st);
  return 0;
}
