/* fusectl rm on the coordinator's side (see fc_coord_rm.h). Files are deleted only where the
 * coordinator can see them (its --store) and only below it: a job spec names its own paths,
 * so each one is checked against the store's real path before anything is unlinked. */
#include "fc_coord_rm.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_daemon.h"

/* p is strictly below dir (both real paths). */
static int below(const char *dir, const char *p) {
  size_t n = strlen(dir);
  return !strncmp(p, dir, n) && p[n] == '/' && p[n + 1];
}

/* path's parent, resolved; it must lie below the real store (the last component itself is
 * removed without following it: fc_rmtree does not follow links). */
static int safe_target(const char *real_store, const char *path) {
  if (path[0] != '/' || strstr(path, "/../") || strstr(path, "/./")) return 0;
  char parent[PATH_MAX], real[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", path);
  char *slash = strrchr(parent, '/');
  const char *last = slash + 1;
  if (!*last || !strcmp(last, "..") || !strcmp(last, ".")) return 0;
  *slash = 0;
  if (!realpath(parent[0] ? parent : "/", real)) return 0;
  return !strcmp(real, real_store) ? 0 : below(real_store, real); /* the job directory, never the store */
}

static int rmdir_empty(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)ftw;
  if (flag == FTW_DP) rmdir(p); /* fails, as it should, on a directory with files left */
  return 0;
}

static void remove_files(const char *store, const fc_db_removed_t *r, json_t *reply) {
  json_t *removed = json_object_get(reply, "removed");
  char real_store[PATH_MAX];
  if (!store) {
    json_object_set_new(reply, "files_left", json_string("the coordinator has no --store: it cannot see the outputs"));
    return;
  }
  if (!realpath(store, real_store)) {
    json_object_set_new(reply, "files_left", json_sprintf("cannot resolve the store %s: %s", store, strerror(errno)));
    return;
  }
  char dir[PATH_MAX];
  if (!realpath(r->dir, dir)) {
    json_object_set_new(reply, "files_left", errno == ENOENT ? json_null() : json_sprintf("%s: %s", r->dir, strerror(errno)));
    return;
  }
  if (!below(real_store, dir)) {
    json_object_set_new(reply, "files_left", json_sprintf("%s is not in the coordinator's store %s", r->dir, store));
    return;
  }
  int left = 0;
  for (size_t i = 0; i < r->noutputs; i++) {
    const char *p = r->outputs[i];
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    int existed = fc_path_exists(p);
    if (!existed && !fc_path_exists(tmp)) continue; /* made on another machine's store, or never */
    if (!safe_target(real_store, p)) {
      fc_warn("not removing %s: not below the store %s", p, real_store);
      left++;
      continue;
    }
    fc_err_t e;
    if (fc_rmtree(p, &e) || fc_rmtree(tmp, &e)) {
      fc_warn("removing job outputs: %s", e.msg);
      left++;
    } else if (existed) {
      json_array_append_new(removed, json_string(p));
    }
  }
  /* the directories its outputs were in, and the job directory, go when nothing else is in
   * them (another job of the same name, files the job did not declare) */
  if (!r->dir_shared) nftw(dir, rmdir_empty, 16, FTW_DEPTH | FTW_PHYS);
  int gone = !fc_path_exists(dir);
  json_object_set_new(reply, "dir_removed", json_boolean(gone));
  json_object_set_new(reply, "files_left", left ? json_sprintf("%d outputs could not be removed (see the coordinator's log)", left)
                                                : json_null());
}

int fc_coord_remove_job(fc_db_t *db, fc_holders_t *holders, const char *store, int64_t job, double now, char **json,
                        fc_err_t *err) {
  char state[16];
  int rc = fc_db_job_state(db, job, state, err);
  if (rc) return rc;
  json_t *copies = json_array();
  if ((rc = fc_holders_separate_of_job(holders, job, copies, err))) {
    json_decref(copies);
    return rc;
  }
  fc_db_removed_t r;
  if ((rc = fc_db_job_remove(db, job, now, &r, err))) {
    json_decref(copies);
    return rc;
  }
  fc_err_t e;
  if (fc_holders_prune(holders, &e)) fc_warn("%s", e.msg);
  json_t *reply = json_pack("{s:I, s:s, s:s, s:[], s:b, s:n, s:o}", "job", (json_int_t)job, "name", r.name, "dir", r.dir,
                            "removed", "dir_removed", 0, "files_left", "copies_left_on", copies);
  remove_files(store, &r, reply);
  fc_log_at(FC_LOG_INFO, job, 0, NULL, "job %lld (%s) removed: %zu outputs deleted", (long long)job, r.name,
         json_array_size(json_object_get(reply, "removed")));
  *json = json_dumps(reply, JSON_COMPACT);
  json_decref(reply);
  fc_db_removed_clear(&r);
  return 0;
}
