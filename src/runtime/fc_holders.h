/* The coordinator's table of who holds which artifact (fc_artifact.h): the producer of every
 * output, every daemon that fetched a copy, and how to reach each (its artifact endpoint, public
 * key and whether its store is the coordinator's). Its own tables in the coordinator's
 * database, so a restarted coordinator still knows every holder. */
#ifndef FC_HOLDERS_H
#define FC_HOLDERS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "fc_msg.h"
#include "fc_util.h"

typedef struct fc_holders fc_holders_t;

struct sqlite3;
/* Borrows the coordinator's database connection (fc_db_sqlite) and adds its tables. */
int fc_holders_open(fc_holders_t **h, struct sqlite3 *db, fc_err_t *err);
void fc_holders_close(fc_holders_t **h);
/* A worker's registration: its artifact endpoint and key ("" : none) and whether its store is
 * the coordinator's (1), separate (0) or unknown (-1). */
int fc_holders_worker(fc_holders_t *h, const char *worker, const char *endpoint, const char *key, int shared,
                      double now, fc_err_t *err);
/* worker holds these artifacts now (its outputs, or copies it fetched). */
int fc_holders_add(fc_holders_t *h, const char *worker, const fc_msg_artifact_t *arts, size_t narts, fc_err_t *err);
/* The LOCATE reply: {"artifacts":[{path,size,sha256,holders:[{worker,endpoint,key}]}]} for every
 * recorded artifact at or below one of paths (of job, or any job when 0). Holders most recently
 * seen first; a holder on the coordinator's store stands for every daemon on it. */
int fc_holders_locate_json(fc_holders_t *h, int64_t job, char *const *paths, size_t npaths, char **json, fc_err_t *err);
/* Adds "store" (shared|separate|unknown) and "artifacts" (endpoint) to each row of a
 * {"workers":[...]} reply. */
int fc_holders_workers_json(fc_holders_t *h, const char *in, char **out, fc_err_t *err);
/* Appends to the JSON array out the workers not on the coordinator's store that hold one of
 * job's artifacts (their copies are theirs: removing the job does not reach them). */
int fc_holders_separate_of_job(fc_holders_t *h, int64_t job, json_t *out, fc_err_t *err);
/* Forgets holders of hashes no recorded artifact has any more (after a job was removed). */
int fc_holders_prune(fc_holders_t *h, fc_err_t *err);

#endif
