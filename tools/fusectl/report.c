/* Reads eval JSON fragments back into fc_eval results and prints fc_eval's table. */
#include "report.h"

#include <jansson.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_eval.h"

static double num(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static void fam_from(const char *name, const json_t *o, fc_eval_family_t *f) {
  memset(f, 0, sizeof *f);
  snprintf(f->name, sizeof f->name, "%s", name);
  f->n = (int)json_integer_value(json_object_get(o, "n"));
  f->correct = (int)json_integer_value(json_object_get(o, "correct"));
  f->accuracy = num(o, "accuracy");
  f->loss = num(o, "loss");
  f->tokens = json_integer_value(json_object_get(o, "tokens"));
  f->generated = json_integer_value(json_object_get(o, "generated"));
}

/* One {"model":..., "families":{...}, ...} object into r (name borrowed from the JSON). */
static int result_from(const json_t *m, const char **name, fc_eval_result_t *r) {
  memset(r, 0, sizeof *r);
  const json_t *fams = json_object_get(m, "families"), *v;
  *name = json_string_value(json_object_get(m, "model"));
  if (!*name || !json_is_object(fams)) return -1;
  const char *k;
  json_object_foreach((json_t *)fams, k, v) {
    if (r->nfam == FC_EVAL_MAX_FAMILIES) break;
    fam_from(k, v, &r->fam[r->nfam++]);
  }
  fam_from("overall", json_object_get(m, "overall"), &r->overall);
  r->macro_accuracy = num(m, "macro_accuracy");
  r->macro_loss = num(m, "macro_loss");
  r->wall_seconds = num(m, "wall_seconds");
  r->gen_seconds = num(m, "gen_seconds");
  return 0;
}

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
      if (result_from(v, &names[m], &res[m])) rc = fc_cli_fail(cmd, "%s: a model entry without model/families", paths[i]);
      else m++;
    }
  }
  if (!rc && m == 0) rc = fc_cli_fail(cmd, "no evaluation results");
  if (!rc) {
    for (size_t i = 0; i < m; i++) rp[i] = &res[i];
    fc_eval_print_table(fp, names, rp, (int)m);
    fc_err_t err = {0};
    if (out_json && fc_eval_write_json_file(out_json, names, rp, (int)m, &err)) rc = fc_cli_fail(cmd, "%s", err.msg);
  }
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
