/* The rows of a demo table: the models of results.json files (a job's, or fusectl eval --json's)
 * collected under names, shared by the ablations (demo_ablate.c) and the multi-answer experiment
 * (demo_multi.c), which differ only in which models they keep and how they name them. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"

int demo_rows_add(demo_rows_t *rows, const char *path, const char *prefix, demo_keep_fn keep, const void *ctx) {
  json_error_t je;
  json_t *doc = json_load_file(path, 0, &je), *m;
  if (!doc) return fc_cli_fail("demo", "%s: %s", path, je.text);
  size_t i;
  json_array_foreach(json_object_get(doc, "models"), i, m) {
    const char *name;
    fc_eval_result_t r;
    if (fc_eval_result_from_json(m, &name, &r)) continue;
    if (keep && !keep(name, ctx)) {
      fc_eval_result_free(&r);
      continue;
    }
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix ? prefix : "", name);
    rows->names = fc_xrealloc(rows->names, (size_t)(rows->n + 1) * sizeof *rows->names);
    rows->res = fc_xrealloc(rows->res, (size_t)(rows->n + 1) * sizeof *rows->res);
    rows->names[rows->n] = fc_xstrdup(full);
    rows->res[rows->n++] = r;
  }
  json_decref(doc);
  return 0;
}

int demo_rows_find(const demo_rows_t *rows, const char *name) {
  for (int i = 0; i < rows->n; i++)
    if (!strcmp(rows->names[i], name)) return i;
  return -1;
}

void demo_rows_print(FILE *fp, const demo_rows_t *rows, const char *pivot, const char *sft) {
  const fc_eval_result_t **rp = fc_xcalloc(rows->n ? (size_t)rows->n : 1, sizeof *rp);
  for (int i = 0; i < rows->n; i++) rp[i] = &rows->res[i];
  fc_eval_print_table(fp, (const char *const *)rows->names, rp, rows->n, demo_rows_find(rows, pivot),
                      demo_rows_find(rows, sft));
  free(rp);
}

void demo_rows_free(demo_rows_t *rows) {
  for (int i = 0; i < rows->n; i++) free(rows->names[i]), fc_eval_result_free(&rows->res[i]);
  free(rows->names), free(rows->res);
  memset(rows, 0, sizeof *rows);
}
