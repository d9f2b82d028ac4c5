/* Removing a finished job from the coordinator's store (see fc_db_job_remove in fc_db.h): its
 * rows go in one transaction; which of its output paths may be deleted from disk is decided
 * here too, while the other jobs' rows still say which paths they declared. */
#include "fc_db.h"
#include "fc_db_impl.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

static int exec(fc_db_t *db, const char *sql, int64_t job, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, sql, "i", job);
  if (!st || sqlite3_step(st) != SQLITE_DONE) return fc_db_err(db, err, "removing a job");
  return 0;
}

/* Whether another job declares `path` as an output (two finished jobs of one name share their
 * directory: removing one must not take the other's files). */
static int declared_elsewhere(fc_db_t *db, int64_t job, const char *path, int *yes, fc_err_t *err) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT 1 FROM tasks t, json_each(t.outputs) o WHERE t.job <> ? AND o.value = ? LIMIT 1",
                                "is", job, path);
  if (!st) return fc_db_err(db, err, "query");
  *yes = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_reset(st);
  return 0;
}

int64_t fc_db_id_floor(fc_db_t *db, const char *name) {
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT id FROM id_floor WHERE name = ?", "s", name);
  if (!st) return 0; /* a database before migration 5 (only tests open one) */
  int64_t id = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  return id;
}

/* Records the highest id of table name (jobs or tasks) before rows go; floor: the old one. */
static int raise_floor(fc_db_t *db, const char *name, int64_t floor, fc_err_t *err) {
  static const char *const sql[2] = {"INSERT OR REPLACE INTO id_floor(name, id) VALUES('jobs', " FC_DB_NEXT_ID("jobs") " - 1)",
                                     "INSERT OR REPLACE INTO id_floor(name, id) VALUES('tasks', " FC_DB_NEXT_ID("tasks") " - 1)"};
  sqlite3_stmt *st = fc_db_stmt(db, sql[strcmp(name, "jobs") != 0], "i", floor);
  if (!st || sqlite3_step(st) != SQLITE_DONE) return fc_db_err(db, err, "keeping the used ids");
  return 0;
}

int fc_db_job_remove(fc_db_t *db, int64_t job, double now, fc_db_removed_t *out, fc_err_t *err) {
  memset(out, 0, sizeof *out);
  if (sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return fc_db_err(db, err, "begin");
  int rc = 0;
  sqlite3_stmt *st = fc_db_stmt(db, "SELECT state, name, dir FROM jobs WHERE id = ?", "i", job);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  if (sqlite3_step(st) != SQLITE_ROW) {
    sqlite3_reset(st);
    rc = fc_err_set(err, FC_ENOTFOUND, "no job %lld", (long long)job);
    goto out;
  }
  char state[16];
  snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 0));
  out->name = fc_xstrdup((const char *)sqlite3_column_text(st, 1));
  out->dir = fc_xstrdup((const char *)sqlite3_column_text(st, 2));
  sqlite3_reset(st);
  if (!strcmp(state, "queued") || !strcmp(state, "running")) {
    rc = fc_err_set(err, FC_EINVAL, "job %lld (%s) is %s; cancel it first ('fusectl rm --force' does)", (long long)job,
                    out->name, state);
    goto out;
  }
  /* the outputs to delete: every declared output of the job no other job declares */
  st = fc_db_stmt(db, "SELECT DISTINCT o.value FROM tasks t, json_each(t.outputs) o WHERE t.job = ? ORDER BY 1", "i", job);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  char **paths = NULL;
  size_t n = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    paths = fc_xrealloc(paths, (n + 1) * sizeof *paths);
    paths[n++] = fc_xstrdup((const char *)sqlite3_column_text(st, 0));
  }
  sqlite3_reset(st);
  for (size_t i = 0; i < n; i++) {
    int other = 0;
    if (rc == 0) rc = declared_elsewhere(db, job, paths[i], &other, err);
    if (rc == 0 && !other) {
      out->outputs = fc_xrealloc(out->outputs, (out->noutputs + 1) * sizeof *out->outputs);
      out->outputs[out->noutputs++] = paths[i];
    } else {
      free(paths[i]);
    }
  }
  free(paths);
  if (rc) goto out;
  int shared_dir = 0;
  st = fc_db_stmt(db, "SELECT 1 FROM jobs WHERE dir = ? AND id <> ? LIMIT 1", "si", out->dir, job);
  if (!st) {
    rc = fc_db_err(db, err, "query");
    goto out;
  }
  shared_dir = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_reset(st);
  out->dir_shared = shared_dir;
  /* the ids stay used (fc_db_impl.h), and the removal is itself an event: the event ids keep
   * growing too, which the coordinator's publisher counts on */
  if ((rc = raise_floor(db, "jobs", fc_db_id_floor(db, "jobs"), err)) ||
      (rc = raise_floor(db, "tasks", fc_db_id_floor(db, "tasks"), err)))
    goto out;
  if ((rc = exec(db, "DELETE FROM leases WHERE task IN (SELECT id FROM tasks WHERE job = ?)", job, err)) ||
      (rc = exec(db, "DELETE FROM deps WHERE task IN (SELECT id FROM tasks WHERE job = ?)", job, err)) ||
      (rc = exec(db, "DELETE FROM artifacts WHERE task IN (SELECT id FROM tasks WHERE job = ?)", job, err)) ||
      (rc = exec(db, "DELETE FROM tasks WHERE job = ?", job, err)) ||
      (rc = exec(db, "DELETE FROM events WHERE job = ?", job, err)) ||
      (rc = exec(db, "DELETE FROM jobs WHERE id = ?", job, err)))
    goto out;
  char msg[600];
  snprintf(msg, sizeof msg, "job '%s' removed by a client", out->name);
  st = fc_db_stmt(db, "INSERT INTO events(time, job, task, type, message) VALUES(?, ?, 0, 'job.removed', ?)", "dis", now, job,
                  msg);
  if (!st || sqlite3_step(st) != SQLITE_DONE) rc = fc_db_err(db, err, "event");
out:
  if (rc) {
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    fc_db_removed_clear(out);
    return rc;
  }
  if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    rc = fc_db_err(db, err, "commit");
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    fc_db_removed_clear(out);
  }
  return rc;
}

void fc_db_removed_clear(fc_db_removed_t *r) {
  for (size_t i = 0; i < r->noutputs; i++) free(r->outputs[i]);
  free(r->outputs);
  free(r->name);
  free(r->dir);
  memset(r, 0, sizeof *r);
}
