/* What the job-side fusectl subcommands share: finding the coordinator and one call to it. */
#ifndef FC_CLIENT_H
#define FC_CLIENT_H

#include <jansson.h>
#include <stdint.h>

#include "fc_msg.h"

#define FC_CLIENT_ENDPOINT_HELP                                                          \
  "  --endpoint URL   the coordinator (default $FUSECHAT_ENDPOINT, else\n"               \
  "                   ipc://RUN/coord.ipc with RUN = $FUSECHAT_RUN_DIR,\n"                \
  "                   $XDG_RUNTIME_DIR/fusechat or /tmp/fusechat-UID)\n"                  \
  "  --timeout SEC    how long to wait for the coordinator (default 5)\n"               \
  "CURVE (tcp://): $FUSECHAT_CURVE_KEY names our key file and $FUSECHAT_CURVE_SERVER\n" \
  "the coordinator's public key file (see 'fusectl keygen').\n"

#define FC_CLIENT_PAGE_HELP                                                              \
  "  --limit N        one page of at most N rows (the coordinator caps it at 1000)\n"  \
  "  --after CURSOR   the page after CURSOR (printed as 'next page: --after CURSOR')\n" \
  "                   Without either, every page is fetched and printed.\n"

/* The endpoint option and timeout every client command takes, and paging for reports. */
typedef struct fc_client {
  const char *cmd;
  char endpoint[600];
  int timeout_ms;
  int64_t limit, after; /* --limit/--after */
  int one_page;         /* either was given */
} fc_client_t;

void fc_client_init(fc_client_t *c, const char *cmd);
/* Handles --endpoint/--timeout (codes 'E' and 'T') and --limit/--after ('N', 'A') inside a
 * getopt_long loop; returns 0, or an exit code for a bad value. */
int fc_client_option(fc_client_t *c, int code, const char *arg);
/* Sends req and returns the reply's JSON payload (*out, caller decrefs). On failure prints
 * "fusectl CMD: ..." and returns FC_EXIT_FAIL. */
int fc_client_call(fc_client_t *c, const fc_msg_t *req, json_t **out);
/* A paged report (list, status, workers, logs): req gets since/limit; the rows of every page
 * (or the one asked for) are gathered in the first reply's array `rows` ("tasks": the first
 * job's tasks). A single page whose report goes on says so on stderr. */
int fc_client_call_pages(fc_client_t *c, fc_msg_t *req, const char *rows, json_t **out);
/* Parses a positive id; returns 0 or -1. */
int fc_client_parse_id(const char *s, int64_t *id);
/* Prints one event line: "TIME  job J  task T  TYPE  message". */
void fc_client_print_event(double time, int64_t job, int64_t task, const char *type, const char *msg);

#define FC_CLIENT_LONGOPTS {"endpoint", required_argument, 0, 'E'}, {"timeout", required_argument, 0, 'T'}
#define FC_CLIENT_PAGE_LONGOPTS {"limit", required_argument, 0, 'N'}, {"after", required_argument, 0, 'A'}

#endif
