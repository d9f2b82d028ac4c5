/* What fc_db.c shares with fc_db_report.c: the handle and its cached, bound statements. */
#ifndef FC_DB_IMPL_H
#define FC_DB_IMPL_H

#include <sqlite3.h>

#include "fc_db.h"

#define NCACHE 96
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

#endif
