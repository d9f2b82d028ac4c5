/* Shared plumbing of the job-side subcommands (see client.h). */
#include "client.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "fc_net.h"

void fc_client_init(fc_client_t *c, const char *cmd) {
  c->cmd = cmd;
  fc_net_default_endpoint(NULL, c->endpoint, sizeof c->endpoint);
  c->timeout_ms = 5000;
  c->limit = c->after = 0;
  c->one_page = 0;
}

int fc_client_option(fc_client_t *c, int code, const char *arg) {
  if (code == 'E') {
    snprintf(c->endpoint, sizeof c->endpoint, "%s", arg);
    return 0;
  }
  if (code == 'N' || code == 'A') {
    long v;
    if (fc_cli_parse_long(arg, &v) || v < (code == 'N' ? 1 : 0))
      return fc_cli_usage_error(c->cmd, "%s wants a %s number, not '%s'", code == 'N' ? "--limit" : "--after",
                                code == 'N' ? "positive" : "non-negative", arg);
    if (code == 'N') c->limit = v;
    else c->after = v;
    c->one_page = 1;
    return 0;
  }
  double s;
  if (fc_cli_parse_double(arg, &s) || !(s > 0 && s < 86400))
    return fc_cli_usage_error(c->cmd, "--timeout wants seconds, not '%s'", arg);
  c->timeout_ms = (int)(s * 1000);
  return 0;
}

int fc_client_call(fc_client_t *c, const fc_msg_t *req, json_t **out) {
  fc_msg_t rep;
  fc_err_t err = {0};
  *out = NULL;
  if (fc_net_call(c->endpoint, req, &rep, c->timeout_ms, &err)) return fc_cli_fail(c->cmd, "%s", err.msg);
  if (!rep.ok) {
    int rc = fc_cli_fail(c->cmd, "%s", rep.error ? rep.error : "the coordinator refused");
    fc_msg_clear(&rep);
    return rc;
  }
  json_error_t je;
  *out = json_loads(rep.text ? rep.text : "{}", 0, &je);
  fc_msg_clear(&rep);
  if (!*out) return fc_cli_fail(c->cmd, "bad reply from the coordinator: %s", je.text);
  return 0;
}

static json_t *rows_of(json_t *r, const char *rows) {
  if (!strcmp(rows, "tasks")) return json_object_get(json_array_get(json_object_get(r, "jobs"), 0), "tasks");
  return json_object_get(r, rows);
}

int fc_client_call_pages(fc_client_t *c, fc_msg_t *req, const char *rows, json_t **out) {
  req->since = c->after, req->limit = c->limit;
  int rc = fc_client_call(c, req, out);
  if (rc) return rc;
  if (c->one_page) {
    json_t *next = json_object_get(*out, "next");
    if (next) fprintf(stderr, "fusectl %s: more rows; next page: --after %lld\n", c->cmd, (long long)json_integer_value(next));
    return 0;
  }
  json_t *all = rows_of(*out, rows);
  int64_t next = json_integer_value(json_object_get(*out, "next"));
  while (next && json_is_array(all)) {
    req->since = next;
    json_t *page;
    if ((rc = fc_client_call(c, req, &page))) {
      json_decref(*out), *out = NULL;
      return rc;
    }
    json_array_extend(all, rows_of(page, rows));
    next = json_integer_value(json_object_get(page, "next"));
    json_decref(page);
  }
  json_object_del(*out, "next");
  return 0;
}

int fc_client_parse_id(const char *s, int64_t *id) {
  long v;
  if (fc_cli_parse_long(s, &v) || v <= 0) return -1;
  *id = v;
  return 0;
}

void fc_client_print_event(double t, int64_t job, int64_t task, const char *type, const char *msg) {
  time_t sec = (time_t)t;
  struct tm tm;
  localtime_r(&sec, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  if (task) printf("%s  job %lld  task %-5lld %-16s %s\n", buf, (long long)job, (long long)task, type, msg ? msg : "");
  else printf("%s  job %lld  %-27s %s\n", buf, (long long)job, type, msg ? msg : "");
  fflush(stdout);
}
