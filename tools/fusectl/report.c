/* Reads eval JSON fragments back into fc_eval results and prints fc_eval's table. */
#include "report.h"

#include <jansson.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include <math.h>

#include "cli.h"
#include "fc_artifact.h"
#include "fc_eval.h"
#include "fc_net.h"

/* A figure as JSON: null when it is not a number (no items, no loss). */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* One cell of the table: the figure and its bootstrap interval (null bounds when the result
 * has no items and the stored figure stands alone), and per reference model the paired
 * difference with its interval and the table's mark ("better", "worse" or null). */
static json_t *cell(const char *const *names, const fc_eval_result_t *const *res, int i, const int *refs, const char *fam,
                    int what) {
  double v, lo, hi;
  json_t *c;
  if (fc_eval_boot_ci(res[i], fam, what, &v, &lo, &hi)) {
    c = json_pack("{s:o, s:o, s:o}", "value", num(v), "lo", num(lo), "hi", num(hi));
  } else {
    int f = -1;
    for (int k = 0; fam && k < res[i]->nfam; k++)
      if (!strcmp(res[i]->fam[k].name, fam)) f = k;
    v = f >= 0 ? (what ? res[i]->fam[f].loss : res[i]->fam[f].accuracy) : (what ? res[i]->macro_loss : res[i]->macro_accuracy);
    return json_pack("{s:o, s:n, s:n}", "value", num(v), "lo", "hi");
  }
  json_t *vs = json_object();
  for (int r = 0; r < 2; r++) {
    double d;
    if (refs[r] < 0 || refs[r] == i || !fc_eval_boot_paired(res[i], res[refs[r]], fam, what, &d, &lo, &hi)) continue;
    int up = lo > 0, down = hi < 0;
    if (what) up = hi < 0, down = lo > 0; /* a lower loss is better */
    json_object_set_new(vs, names[refs[r]], json_pack("{s:o, s:o, s:o, s:o}", "diff", num(d), "lo", num(lo), "hi", num(hi),
                                                      "mark", up ? json_string("better") : down ? json_string("worse") : json_null()));
  }
  json_object_set_new(c, "vs", vs);
  return c;
}

/* The table as JSON: the same rows, columns, intervals and marks as fc_eval_print_table. */
static json_t *table_json(const char *const *names, const fc_eval_result_t *const *res, int n, int pivot, int sft) {
  int refs[2] = {pivot, sft};
  json_t *models = json_array();
  for (int i = 0; i < n; i++) {
    json_t *fams = json_object();
    for (int f = 0; f < res[i]->nfam; f++) {
      const char *fam = res[i]->fam[f].name;
      json_object_set_new(fams, fam, json_pack("{s:i, s:o, s:o}", "n", res[i]->fam[f].n, "accuracy",
                                               cell(names, res, i, refs, fam, 0), "loss", cell(names, res, i, refs, fam, 1)));
    }
    json_array_append_new(models, json_pack("{s:s, s:s, s:o, s:{s:o, s:o}}", "model", names[i], "role", res[i]->role,
                                            "families", fams, "macro", "accuracy", cell(names, res, i, refs, NULL, 0),
                                            "loss", cell(names, res, i, refs, NULL, 1)));
  }
  json_t *refj = json_array();
  for (int r = 0; r < 2; r++)
    if (refs[r] >= 0) json_array_append_new(refj, json_string(names[refs[r]]));
  return json_pack("{s:o, s:o, s:i, s:I, s:s, s:s}", "models", models, "references", refj, "resamples",
                   FC_EVAL_BOOT_RESAMPLES, "seed", (json_int_t)FC_EVAL_BOOT_SEED, "accuracy", "fraction correct",
                   "loss", "nats per gold token");
}

int fc_report_files(const char *cmd, char *const *paths, size_t n, const char *out_json, int as_json, FILE *fp) {
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
    fc_err_t err = {0};
    if (out_json && fc_eval_write_json_file(out_json, names, rp, (int)m, &err)) rc = fc_cli_fail(cmd, "%s", err.msg);
    if (!rc && as_json) {
      json_t *t = table_json(names, rp, (int)m, pivot, sft);
      json_object_set_new(t, "results", out_json ? json_string(out_json) : json_null());
      json_dumpf(t, fp, JSON_COMPACT);
      fputc('\n', fp);
      json_decref(t);
    } else if (!rc) {
      fc_eval_print_table(fp, names, rp, (int)m, pivot, sft);
    }
  }
  for (size_t i = 0; i < m; i++) fc_eval_result_free(&res[i]);
  for (size_t i = 0; i < n; i++) json_decref(docs[i]);
  free(docs), free(res), free(rp), free(names);
  return rc;
}

/* Eval files this machine does not see (the stores are on other machines): fetched by hash
 * from the daemons that hold them into a new directory under $TMPDIR, laid out as the store
 * is, which then stands for the job directory (results.json goes there). */
static int fetch_missing(fc_client_t *c, int64_t job, char **paths, size_t n, char **job_dir) {
  size_t missing = 0;
  for (size_t i = 0; i < n; i++) missing += !fc_path_exists(paths[i]);
  if (!missing) return 0;
  const char *t = getenv("TMPDIR");
  fc_store_t store = {0};
  snprintf(store.local, sizeof store.local, "%s/fusectl-report-XXXXXX", t && *t ? t : "/tmp");
  char *jd = strdup(*job_dir);
  snprintf(store.logical, sizeof store.logical, "%s", dirname(jd)); /* STORE of STORE/NAME */
  free(jd);
  if (!mkdtemp(store.local)) return fc_cli_fail(c->cmd, "cannot make a directory for the fetched results in %s", store.local);
  fc_curve_t curve;
  fc_err_t err = {0};
  uint64_t got = 0;
  if (fc_curve_from_env(&curve, &err) ||
      fc_artifact_ensure(c->endpoint, &curve, &store, NULL, job, paths, n, NULL, &got, &err))
    return fc_cli_fail(c->cmd, "fetching the evaluation results: %s", err.msg);
  for (size_t i = 0; i < n; i++) {
    char *l = fc_store_to_local(&store, paths[i]);
    free(paths[i]);
    paths[i] = l;
  }
  char *l = fc_store_to_local(&store, *job_dir);
  free(*job_dir);
  *job_dir = l;
  fprintf(stderr, "fusectl %s: %zu result file(s) fetched from the daemons into %s (%llu bytes)\n", c->cmd, missing, l,
          (unsigned long long)got);
  return fc_mkdir_p(l, &err) ? fc_cli_fail(c->cmd, "%s", err.msg) : 0;
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
  return fetch_missing(c, job, *paths, *n, job_dir);
}
