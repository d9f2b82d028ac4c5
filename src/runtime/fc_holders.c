/* Artifact holders in the coordinator's database (see fc_holders.h). */
#include "fc_holders.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

struct fc_holders {
  sqlite3 *db;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS artifact_holders(sha256 TEXT NOT NULL, worker TEXT NOT NULL,"
    "  PRIMARY KEY(sha256, worker)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS worker_links(worker TEXT PRIMARY KEY, endpoint TEXT NOT NULL, key TEXT NOT NULL,"
    "  shared INTEGER NOT NULL, seen REAL NOT NULL);";

static int dberr(fc_holders_t *h, fc_err_t *err, const char *what) {
  return fc_err_set(err, FC_EIO, "holders: %s: %s", what, sqlite3_errmsg(h->db));
}

int fc_holders_open(fc_holders_t **out, sqlite3 *db, fc_err_t *err) {
  fc_holders_t *h = fc_xcalloc(1, sizeof *h);
  h->db = db;
  if (sqlite3_exec(h->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK) {
    int rc = dberr(h, err, "creating its tables");
    free(h);
    return rc;
  }
  *out = h;
  return 0;
}

void fc_holders_close(fc_holders_t **h) {
  if (!*h) return;
  free(*h);
  *h = NULL;
}

int fc_holders_worker(fc_holders_t *h, const char *worker, const char *endpoint, const char *key, int shared,
                      double now, fc_err_t *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO worker_links(worker, endpoint, key, shared, seen)"
                                " VALUES(?, ?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
    return dberr(h, err, "prepare");
  sqlite3_bind_text(st, 1, worker, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, endpoint ? endpoint : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, key ? key : "", -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, shared);
  sqlite3_bind_double(st, 5, now);
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : dberr(h, err, "recording a worker");
  sqlite3_finalize(st);
  return rc;
}

int fc_holders_add(fc_holders_t *h, const char *worker, const fc_msg_artifact_t *arts, size_t narts, fc_err_t *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->db, "INSERT OR IGNORE INTO artifact_holders(sha256, worker) VALUES(?, ?)", -1, &st, NULL) !=
      SQLITE_OK)
    return dberr(h, err, "prepare");
  int rc = 0;
  sqlite3_exec(h->db, "SAVEPOINT holders", NULL, NULL, NULL);
  for (size_t i = 0; rc == 0 && i < narts; i++) {
    sqlite3_bind_text(st, 1, arts[i].sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, worker, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) rc = dberr(h, err, "recording a holder");
    sqlite3_reset(st);
  }
  if (rc) sqlite3_exec(h->db, "ROLLBACK TO holders", NULL, NULL, NULL);
  sqlite3_exec(h->db, "RELEASE holders", NULL, NULL, NULL);
  sqlite3_finalize(st);
  return rc;
}

/* Holders of one hash: explicit ones, then (when one of them is on the coordinator's store)
 * every other daemon on that store; most recently seen first. */
static const char SQL_HOLDERS[] =
    "SELECT l.worker, l.endpoint, l.key FROM worker_links l WHERE l.endpoint != '' AND ("
    "  l.worker IN (SELECT worker FROM artifact_holders WHERE sha256 = ?1)"
    "  OR (l.shared = 1 AND EXISTS(SELECT 1 FROM artifact_holders a JOIN worker_links m ON m.worker = a.worker"
    "      WHERE a.sha256 = ?1 AND m.shared = 1)))"
    " ORDER BY l.seen DESC";

int fc_holders_locate_json(fc_holders_t *h, int64_t job, char *const *paths, size_t npaths, char **json, fc_err_t *err) {
  sqlite3_stmt *arts, *hold;
  if (sqlite3_prepare_v2(h->db,
                         "SELECT a.path, a.size, a.sha256 FROM artifacts a JOIN tasks t ON t.id = a.task"
                         " WHERE (?1 = 0 OR t.job = ?1) AND t.state = 'done' AND (a.path = ?2 OR"
                         " substr(a.path, 1, length(?2) + 1) = ?2 || '/') ORDER BY a.path",
                         -1, &arts, NULL) != SQLITE_OK)
    return dberr(h, err, "prepare");
  if (sqlite3_prepare_v2(h->db, SQL_HOLDERS, -1, &hold, NULL) != SQLITE_OK) {
    sqlite3_finalize(arts);
    return dberr(h, err, "prepare");
  }
  json_t *list = json_array();
  for (size_t i = 0; i < npaths; i++) {
    sqlite3_bind_int64(arts, 1, job);
    sqlite3_bind_text(arts, 2, paths[i], -1, SQLITE_STATIC);
    while (sqlite3_step(arts) == SQLITE_ROW) {
      const char *sha = (const char *)sqlite3_column_text(arts, 2);
      json_t *a = json_pack("{s:s, s:I, s:s}", "path", (const char *)sqlite3_column_text(arts, 0), "size",
                            (json_int_t)sqlite3_column_int64(arts, 1), "sha256", sha);
      json_t *hs = json_array();
      sqlite3_bind_text(hold, 1, sha, -1, SQLITE_TRANSIENT);
      while (sqlite3_step(hold) == SQLITE_ROW)
        json_array_append_new(hs, json_pack("{s:s, s:s, s:s}", "worker", (const char *)sqlite3_column_text(hold, 0),
                                            "endpoint", (const char *)sqlite3_column_text(hold, 1), "key",
                                            (const char *)sqlite3_column_text(hold, 2)));
      sqlite3_reset(hold);
      json_object_set_new(a, "holders", hs);
      json_array_append_new(list, a);
    }
    sqlite3_reset(arts);
  }
  sqlite3_finalize(arts);
  sqlite3_finalize(hold);
  json_t *root = json_pack("{s:o}", "artifacts", list);
  *json = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return 0;
}

int fc_holders_workers_json(fc_holders_t *h, const char *in, char **out, fc_err_t *err) {
  json_t *root = json_loads(in, 0, NULL), *w;
  if (!root) return fc_err_set(err, FC_EFORMAT, "holders: not JSON");
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->db, "SELECT endpoint, shared FROM worker_links WHERE worker = ?", -1, &st, NULL) != SQLITE_OK) {
    json_decref(root);
    return dberr(h, err, "prepare");
  }
  size_t i;
  json_array_foreach(json_object_get(root, "workers"), i, w) {
    const char *id = json_string_value(json_object_get(w, "id"));
    const char *store = "unknown", *ep = "";
    sqlite3_bind_text(st, 1, id ? id : "", -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW) {
      int shared = sqlite3_column_int(st, 1);
      store = shared == 1 ? "shared" : shared == 0 ? "separate" : "unknown";
      ep = (const char *)sqlite3_column_text(st, 0);
    }
    json_object_set_new(w, "store", json_string(store));
    json_object_set_new(w, "artifacts", json_string(ep ? ep : ""));
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  *out = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return 0;
}

int fc_holders_separate_of_job(fc_holders_t *h, int64_t job, json_t *out, fc_err_t *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(h->db,
                         "SELECT DISTINCT l.worker FROM artifact_holders a JOIN worker_links l ON l.worker = a.worker"
                         " WHERE l.shared <> 1 AND a.sha256 IN (SELECT r.sha256 FROM artifacts r JOIN tasks t"
                         " ON t.id = r.task WHERE t.job = ?) ORDER BY 1",
                         -1, &st, NULL) != SQLITE_OK)
    return dberr(h, err, "prepare");
  sqlite3_bind_int64(st, 1, job);
  while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(out, json_string((const char *)sqlite3_column_text(st, 0)));
  sqlite3_finalize(st);
  return 0;
}

int fc_holders_prune(fc_holders_t *h, fc_err_t *err) {
  if (sqlite3_exec(h->db, "DELETE FROM artifact_holders WHERE sha256 NOT IN (SELECT sha256 FROM artifacts)", NULL, NULL,
                   NULL) != SQLITE_OK)
    return dberr(h, err, "forgetting holders");
  return 0;
}
