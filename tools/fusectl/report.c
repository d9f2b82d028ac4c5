/* Reads eval JSON fragments back into fc_eval results and prints fc_eval's table. */
#include "report.h"

#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_eval.h"

int fc_report_files(const char *cmd, char *const *paths, size_t n, const char *out_json, FILE *fp) {
  json_t **docs = calloc(n ? n : 1, sizeof *docs);
  fc_eval_result_t *res = calloc(n ? n : 1, sizeof *res);
  const fc_eval_result_t **rp = calloc(n ? n : 1, sizeof *rp);
  const char **names = calloc(n ? n : 1, sizeof *names);
  size_t m = 0;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    json_error_t je;
    docs[i] = json_load_file(paths[i], 0, &je);
    if (!docs[i]) {
      rc = fc_cli_fail(cmd, "%s: %s", paths[i], je.text);
      break;
    }
    const json_t *arr = json_object_get(docs[i], "models"), *v;
    size_t k;
    if (!json_is_array(arr)) rc = fc_cli_fail(cmd, "%s: no \"models\" list (not an eval result)", paths[i]);
    json_array_foreach(arr, k, v) {
      if (rc) break;
      res = realloc(res, (m + 1) * sizeof *res), rp = realloc(rp, (m + 1) * sizeof *rp);
      names = realloc(names, (m + 1) * sizeof *names);
      if (fc_eval_result_from_json(v, &names[m], &res[m])) rc = fc_cli_fail(cmd, "%s: a model entry without model/families", paths[i]);
      else m++;
    }
  }
  if (!rc && m == 0) rc = fc_cli_fail(cmd, "no evaluation results");
  if (!rc) {
    /* the references of the marks: the pivot and plain SFT, by their role in the job */
    int pivot = -1, sft = -1;
    for (size_t i = 0; i < m; i++) {
      rp[i] = &res[i];
      if (pivot < 0 && !strcmp(res[i].role, "pivot")) pivot = (int)i;
      if (sft < 0 && !strcmp(res[i].role, "sft")) sft = (int)i;
    }
    fc_eval_print_table(fp, names, rp, (int)m, pivot, sft);
    fc_err_t err = {0};
    if (out_json && fc_eval_write_json_file(out_json, names, rp, (int)m, &err)) rc = fc_cli_fail(cmd, "%s", err.msg);
  }
  for (size_t i = 0; i < m; i++) fc_eval_result_free(&res[i]);
  for (size_t i = 0; i < n; i++) json_decref(docs[i]);
  free(docs), free(res), free(rp), free(names);
  return rc;
}

int fc_report_job_files(fc_client_t *c, int64_t job, char ***paths, size_t *n, char **job_dir) {
  *paths = NULL, *n = 0, *job_dir = NULL;
  fc_msg_t req = {.type = FC_MSG_ARTIFACTS, .job = job};
  json_t *r, *a;
  int rc = fc_client_call(c, &req, &r);
  if (rc) return rc;
  size_t i;
  json_array_foreach(json_object_get(r, "artifacts"), i, a) {
    const char *name = json_string_value(json_object_get(a, "name")), *path = json_string_value(json_object_get(a, "path"));
    size_t pl = path ? strlen(path) : 0;
    if (!name || strncmp(name, "eval/", 5) || pl < 5 || strcmp(path + pl - 5, ".json")) continue;
    *paths = realloc(*paths, (*n + 1) * sizeof **paths);
    (*paths)[(*n)++] = strdup(path);
    if (!*job_dir) { /* JOBDIR/eval/NAME.json */
      char *d = strdup(path), *e = strdup(dirname(d));
      *job_dir = strdup(dirname(e));
      free(d), free(e);
    }
  }
  json_decref(r);
  if (*n == 0) return fc_cli_fail(c->cmd, "job %lld has no evaluation results (yet)", (long long)job);
  return 0;
}
