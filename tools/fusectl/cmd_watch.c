/* fusectl watch: follows a job on the coordinator's event stream until it ends. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "cli.h"
#include "client.h"
#include "fc_net.h"

static void usage(void) {
  printf("Usage: fusectl watch [OPTIONS] JOB\n\nPrints a job's state changes and task progress as they\n"
         "happen, from the coordinator's event stream, and exits when the job ends: status 0 when\n"
         "it is done, 1 when it failed or was cancelled.\n"
         "\nOptions:\n"
         "  --json           one JSON object per line: {time, job, task, type, message[, fraction]}\n"
         "  --events URL     the event stream (default: beside the endpoint, ipc://RUN/events.ipc)\n"
         FC_CLIENT_ENDPOINT_HELP "  --help           this text\n");
}

static int g_json; /* --json: events as JSON lines */

/* One event, as text or as a JSON line (fraction < 0: none). */
static void print_event(double time, int64_t job, int64_t task, const char *type, const char *msg, double fraction) {
  if (!g_json) {
    fc_client_print_event(time, job, task, type, msg);
    return;
  }
  json_t *e = json_pack("{s:f, s:I, s:I, s:s, s:s}", "time", time, "job", (json_int_t)job, "task", (json_int_t)task,
                        "type", type ? type : "", "message", msg ? msg : "");
  if (fraction >= 0) json_object_set_new(e, "fraction", json_real(fraction));
  fc_client_print_json(e);
  json_decref(e);
}

/* 0 running, 1 done, 2 failed or cancelled, -1 error (printed). */
static int job_state(fc_client_t *c, int64_t job) {
  fc_msg_t req = {.type = FC_MSG_STATUS, .job = job};
  json_t *r;
  if (fc_client_call(c, &req, &r)) return -1;
  const char *s = json_string_value(json_object_get(json_array_get(json_object_get(r, "jobs"), 0), "state"));
  int st = !s ? -1 : !strcmp(s, "done") ? 1 : (!strcmp(s, "failed") || !strcmp(s, "cancelled")) ? 2 : 0;
  if (s && st) { /* ended before or between events (a late subscription, a restart): say so as the stream would */
    char type[32];
    snprintf(type, sizeof type, "job.%s", s);
    print_event(fc_now(), job, 0, type, "(from status)", -1);
  }
  json_decref(r);
  return st;
}

int fc_cmd_watch(int argc, char **argv) {
  static const struct option opts[] = {FC_CLIENT_LONGOPTS, {"events", required_argument, 0, 'v'}, {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  fc_client_t c;
  fc_client_init(&c, "watch");
  const char *events = NULL;
  int o, rc;
  g_json = 0;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'v') events = optarg;
    else if (o == 'j') g_json = 1;
    else if (o == 'E' || o == 'T') {
      if ((rc = fc_client_option(&c, o, optarg))) return rc;
    } else return fc_cli_usage_error("watch", "unknown option");
  }
  int64_t job;
  if (optind + 1 != argc || fc_client_parse_id(argv[optind], &job)) return fc_cli_usage_error("watch", "give one job id");
  char ev[600];
  fc_err_t err = {0};
  if (events) snprintf(ev, sizeof ev, "%s", events);
  else if (fc_net_events_endpoint(c.endpoint, ev, sizeof ev, &err)) return fc_cli_usage_error("watch", "%s", err.msg);
  void *ctx = zmq_ctx_new(), *sub = zmq_socket(ctx, ZMQ_SUB);
  int linger = 0;
  zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
  fc_curve_t curve;
  if (fc_curve_from_env(&curve, &err) || fc_curve_apply_client(sub, &curve, &err)) {
    rc = fc_cli_fail("watch", "%s", err.msg);
    goto out;
  }
  if (zmq_connect(sub, ev) != 0) {
    rc = fc_cli_fail("watch", "cannot connect to %s: %s", ev, zmq_strerror(zmq_errno()));
    goto out;
  }
  /* Subscribed first, then asked: an end that happens in between is still seen. */
  int st = job_state(&c, job);
  double last_poll = fc_now();
  int last_pct = -1;
  int64_t last_task = 0;
  while (st == 0) {
    zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 1000) > 0) {
      zmq_msg_t f;
      zmq_msg_init(&f);
      fc_msg_t m;
      if (zmq_msg_recv(&f, sub, 0) >= 0 && fc_msg_decode(zmq_msg_data(&f), zmq_msg_size(&f), &m, &err) == 0) {
        if (m.type == FC_MSG_EVENT && m.job == job) {
          if (!strcmp(m.state, "task.progress")) {
            int pct = (int)(m.fraction * 100);
            if (pct / 10 != last_pct / 10 || m.task != last_task) /* every 10% per task */
              print_event(m.time, job, m.task, "progress", m.message, m.fraction), last_pct = pct, last_task = m.task;
          } else {
            print_event(m.time, job, m.task, m.state, m.message, -1);
          }
          if (!strcmp(m.state, "job.done")) st = 1;
          else if (!strcmp(m.state, "job.failed") || !strcmp(m.state, "job.cancelled")) st = 2;
        }
        fc_msg_clear(&m);
      }
      zmq_msg_close(&f);
    }
    if (st == 0 && fc_now() - last_poll > 3) { /* events are not replayed after a coordinator restart */
      int s2 = job_state(&c, job);
      if (s2 != 0) st = s2;
      last_poll = fc_now();
    }
  }
  rc = st == 1 ? 0 : FC_EXIT_FAIL;
out:
  zmq_close(sub);
  zmq_ctx_term(ctx);
  return rc;
}
