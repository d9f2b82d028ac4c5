/* The coordinator's `remove_job` request (fusectl rm): the job's rows, its outputs in the
 * coordinator's store, and what could not be reached. Internal to fc_coord.c. */
#ifndef FC_COORD_RM_H
#define FC_COORD_RM_H

#include <stdint.h>

#include "fc_db.h"
#include "fc_holders.h"

/* Removes job (done, failed or cancelled) from db and holders; deletes its declared outputs
 * (and their stale DIR.tmp) below store, the coordinator's store directory (NULL: it sees no
 * store, and no file is touched). *json gets the reply: {"job", "name", "dir", "removed":
 * [paths], "dir_removed", "files_left": null or why, "copies_left_on": [workers on separate
 * stores that hold copies]}. */
int fc_coord_remove_job(fc_db_t *db, fc_holders_t *holders, const char *store, int64_t job, double now, char **json,
                        fc_err_t *err);

#endif
