/* The coordinator store's reports: the JSON payloads of the client replies, in pages bounded
 * by a row count and a byte budget so no reply outgrows a message. */
#include <jansson.h>
#include <string.h>

#include "fc_db.h"
#include "fc_db_impl.h"

/* One page of rows from st: a JSON object per row, columns by name (integers, reals, text,
 * null). The statement yields rows in cursor order; column `key` is the cursor. It stops at
 * `limit` rows or once *budget bytes of text are used (after at least one row), and returns
 * in *next the cursor to continue from when rows are left (else 0). */
static json_t *rows(sqlite3_stmt *st, int key, int64_t limit, size_t *budget, int64_t *next) {
  json_t *a = json_array();
  int64_t n = 0, last = 0;
  if (next) *next = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    if (n >= limit || (n > 0 && *budget == 0)) {
      if (next) *next = last;
      break;
    }
    json_t *o = json_object();
    size_t bytes = 16;
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      json_t *v;
      bytes += strlen(sqlite3_column_name(st, c)) + 8;
      switch (sqlite3_column_type(st, c)) {
      case SQLITE_INTEGER: v = json_integer(sqlite3_column_int64(st, c)), bytes += 20; break;
      case SQLITE_FLOAT: v = json_real(sqlite3_column_double(st, c)), bytes += 24; break;
      case SQLITE_NULL: v = json_null(); break;
      default:
        v = json_string((const char *)sqlite3_column_text(st, c));
        bytes += 2 * (size_t)sqlite3_column_bytes(st, c); /* escapes can double it */
        break;
      }
      json_object_set_new(o, sqlite3_column_name(st, c), v ? v : json_null());
    }
    json_array_append_new(a, o);
    last = sqlite3_column_int64(st, key);
    n++;
    *budget = bytes >= *budget ? 0 : *budget - bytes;
  }
  sqlite3_reset(st);
  return a;
}

static int64_t page_rows(int64_t limit) { return limit <= 0 || limit > FC_DB_PAGE_ROWS ? FC_DB_PAGE_ROWS : limit; }

static int dump(json_t *root, int64_t next, char **json) {
  if (next) json_object_set_new(root, "next", json_integer(next));
  *json = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return 0;
}

/* A task's attempts: the failed ones (the column, which max_attempts bounds) and the one that
 * runs or succeeded; an attempt handed back unfinished is none. `ready`: queued with every
 * dependency done, so a free worker with its cap would lease it now (what autoscalers watch);
 * `leases`: how many times it was leased. */
static const char SQL_TASKS[] =
    "SELECT id, name, kind, cap, state, attempts + (state IN ('leased', 'running', 'done')) AS attempts,"
    " attempts AS failed_attempts, max_attempts, fraction, message, figures, worker, error,"
    " started, finished, leases, (state = 'queued' AND NOT EXISTS (SELECT 1 FROM deps d JOIN tasks u"
    " ON u.id = d.dep WHERE d.task = tasks.id AND u.state <> 'done')) AS ready"
    " FROM tasks WHERE job = ? AND id > ? ORDER BY id";

/* A job's progress as the coordinator sees it at `now`: elapsed seconds (to its end once it
 * ended), the mean fraction of its tasks, and while it runs an ETA from the two. The client
 * shows these as they are: its own clock may be off. */
static int job_timing(fc_db_t *db, json_t *j, double now, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT AVG(CASE state WHEN 'done' THEN 1.0 ELSE fraction END) FROM tasks WHERE job = ?",
                                "i", (int64_t)json_integer_value(json_object_get(j, "id")));
  if (!st || sqlite3_step(st) != SQLITE_ROW) return fc_db_err(db, err, "query");
  double frac = sqlite3_column_double(st, 0);
  sqlite3_reset(st);
  json_t *fin = json_object_get(j, "finished");
  double created = json_number_value(json_object_get(j, "created"));
  double elapsed = (json_is_number(fin) ? json_number_value(fin) : now) - created;
  if (elapsed < 0) elapsed = 0;
  const char *state = json_string_value(json_object_get(j, "state"));
  json_object_set_new(j, "fraction", json_real(frac));
  json_object_set_new(j, "elapsed", json_real(elapsed));
  int running = state && (!strcmp(state, "running") || !strcmp(state, "queued"));
  json_object_set_new(j, "eta", running && frac > 0.005 && frac < 1 ? json_real(elapsed * (1 - frac) / frac) : json_null());
  return 0;
}

/* The figures column holds a JSON object as text: the report carries the object itself. */
static void figures_as_objects(json_t *tasks) {
  size_t i;
  json_t *t;
  json_array_foreach(tasks, i, t) {
    const char *text = json_string_value(json_object_get(t, "figures"));
    json_t *f = text ? json_loads(text, 0, NULL) : NULL;
    json_object_set_new(t, "figures", json_is_object(f) ? f : json_object());
    if (f && !json_is_object(f)) json_decref(f);
  }
}

int fc_db_status_json(fc_db_t *db, int64_t job, int64_t after, int64_t limit, double now, char **json,
                      fc_err_t *err) {
  size_t budget = FC_DB_PAGE_BYTES;
  int64_t n = page_rows(limit), next = 0;
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT id, name, state, error, dir, created, finished FROM jobs"
                                    " WHERE (?1 = 0 AND id > ?2) OR id = ?1 ORDER BY id", "ii", job, job ? 0 : after);
  if (!st) return fc_db_err(db, err, "query");
  json_t *jobs = rows(st, 0, job ? 1 : n, &budget, job ? NULL : &next);
  if (job && json_array_size(jobs) == 0) {
    json_decref(jobs);
    return fc_err_set(err, FC_ENOTFOUND, "no job %lld", (long long)job);
  }
  size_t i;
  json_t *j;
  json_array_foreach(jobs, i, j) {
    /* one job: a page of its tasks; every job: as many tasks as the page has room for */
    int64_t tnext = 0;
    st = fc_db_stmt(db, SQL_TASKS, "ii", (int64_t)json_integer_value(json_object_get(j, "id")), job ? after : 0);
    if (!st) {
      json_decref(jobs);
      return fc_db_err(db, err, "query");
    }
    json_t *tasks = rows(st, 0, job ? n : FC_DB_PAGE_ROWS, &budget, &tnext);
    figures_as_objects(tasks);
    json_object_set_new(j, "tasks", tasks);
    int rc = job_timing(db, j, now, err);
    if (rc) {
      json_decref(jobs);
      return rc;
    }
    if (tnext && job) next = tnext;
    else if (tnext) json_object_set_new(j, "more_tasks", json_true());
  }
  json_t *root = json_object();
  json_object_set_new(root, "jobs", jobs);
  json_object_set_new(root, "now", json_real(now));
  return dump(root, next, json);
}

int fc_db_list_json(fc_db_t *db, int64_t after, int64_t limit, char **json, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db,
                          "SELECT j.id, j.name, j.state, j.created, j.finished,"
                          " (SELECT COUNT(*) FROM tasks t WHERE t.job = j.id) AS tasks,"
                          " (SELECT COUNT(*) FROM tasks t WHERE t.job = j.id AND t.state = 'done') AS done"
                          " FROM jobs j WHERE j.id > ? ORDER BY j.id", "i", after);
  if (!st) return fc_db_err(db, err, "query");
  size_t budget = FC_DB_PAGE_BYTES;
  int64_t next;
  json_t *root = json_object();
  json_object_set_new(root, "jobs", rows(st, 0, page_rows(limit), &budget, &next));
  return dump(root, next, json);
}

int fc_db_logs_json(fc_db_t *db, int64_t job, int64_t since, int64_t limit, char **json, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT id, time, job, task, type, message FROM events WHERE job = ? AND id > ? ORDER BY id",
                          "ii", job, since);
  if (!st) return fc_db_err(db, err, "query");
  size_t budget = FC_DB_PAGE_BYTES;
  int64_t next;
  json_t *root = json_object();
  json_object_set_new(root, "events", rows(st, 0, page_rows(limit), &budget, &next));
  return dump(root, next, json);
}

int fc_db_workers_json(fc_db_t *db, int64_t after, int64_t limit, char **json, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db,
                          "SELECT w.rowid AS row, w.id, w.caps, w.host, w.threads, w.mem, w.state, w.last_seen,"
                          " (SELECT group_concat(task) FROM leases l WHERE l.worker = w.id) AS tasks"
                          " FROM workers w WHERE w.rowid > ? ORDER BY w.rowid", "i", after);
  if (!st) return fc_db_err(db, err, "query");
  size_t budget = FC_DB_PAGE_BYTES;
  int64_t next;
  json_t *root = json_object();
  json_object_set_new(root, "workers", rows(st, 0, page_rows(limit), &budget, &next));
  return dump(root, next, json);
}

int fc_db_artifacts_json(fc_db_t *db, int64_t job, char **json, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db,
                          "SELECT a.task, t.name, a.path, a.size, a.sha256 FROM artifacts a JOIN tasks t ON t.id = a.task"
                          " WHERE t.job = ? ORDER BY a.task, a.path", "i", job);
  if (!st) return fc_db_err(db, err, "query");
  json_t *root = json_object();
  size_t budget = FC_MSG_MAX_TEXT / 2;
  json_object_set_new(root, "artifacts", rows(st, 0, INT64_MAX, &budget, NULL));
  return dump(root, 0, json);
}

