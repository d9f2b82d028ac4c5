/* The comparison table of a job's eval/NAME.json files (fusectl report, fusectl run). */
#ifndef FC_REPORT_H
#define FC_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "client.h"

/* Prints the table of the eval JSON files at paths (in that order) to fp (as_json: the same
 * table as one JSON object, "results" naming out_json) and, when out_json is given, writes them
 * together as {"models":[...]} there. Returns 0 or an exit code (printed). */
int fc_report_files(const char *cmd, char *const *paths, size_t n, const char *out_json, int as_json, FILE *fp);
/* The eval files of a job, from its artifacts (eval/... tasks, in task order), and the job's
 * directory (where results.json goes), both malloc'ed. Returns 0 or an exit code. */
int fc_report_job_files(fc_client_t *c, int64_t job, char ***paths, size_t *n, char **job_dir);

#endif
