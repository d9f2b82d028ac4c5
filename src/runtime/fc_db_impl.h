/* What fc_db.c shares with fc_db_report.c: the handle and its cached, bound statements. */
#ifndef FC_DB_IMPL_H
#define FC_DB_IMPL_H

#include <sqlite3.h>

#include "fc_db.h"

#define NCACHE 128
struct fc_db {
  sqlite3 *h;
  struct {
    const char *sql;
    sqlite3_stmt *st;
  } cache[NCACHE];
};

/* "database: WHAT: sqlite's message" as FC_EIO. */
int fc_db_err(fc_db_t *db, fc_err_t *err, const char *what);
/* A cached statement for sql (keyed by the string's address), reset and bound by `fmt`:
 * i int64, d double, s text (NULL: null). NULL when it does not prepare. */
sqlite3_stmt *fc_db_stmt(fc_db_t *db, const char *sql, const char *fmt, ...);

/* SQL for the next id of table t (jobs or tasks), past its rows and past the bound parameter:
 * the highest id it ever had (fc_db_id_floor; fc_db_job_remove raises it before deleting). */
#define FC_DB_NEXT_ID(t) "max(coalesce((SELECT max(id) FROM " t "), 0), ?) + 1"
/* The highest id table `name` ever gave out as far as removals go (0: none removed, or a
 * database from before migration 5). */
int64_t fc_db_id_floor(fc_db_t *db, const char *name);

#endif
