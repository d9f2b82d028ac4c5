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
}

int fc_client_option(fc_client_t *c, int code, const char *arg) {
  if (code == 'E') {
    snprintf(c->endpoint, sizeof c->endpoint, "%s", arg);
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
