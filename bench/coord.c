/* Coordinator throughput and failover. Starts a real coordinator on TCP loopback and drives it
 * with 50 simulated workers in this process:
 *   1. task assignments per second (each worker answers its task at once and asks for the next),
 *      beside the reference: bare ZeroMQ request/reply round trips per second with the same 50
 *      DEALERs against a ROUTER that only echoes (what the transport alone allows);
 *   2. time from a worker's death (its last heartbeat) to its task's reassignment, beside the
 *      lease timeout that bounds it from below.
 * Usage: bench/bench_coord [TASKS] (default 3000). */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "fc_msg.h"
#include "fc_net.h"

#define NW 50

static void *zctx;

static void *dealer(const char *ep, const char *id) {
  void *s = zmq_socket(zctx, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  if (id) zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
  zmq_connect(s, ep);
  return s;
}

static void send_m(void *s, const fc_msg_t *m) {
  fc_err_t err;
  if (fc_net_send(s, NULL, NULL, 0, m, &err)) fprintf(stderr, "send: %s\n", err.msg);
}

static int recv_m(void *s, fc_msg_t *m) {
  zmq_msg_t f;
  zmq_msg_init(&f);
  int rc = zmq_msg_recv(&f, s, 0);
  fc_err_t err;
  if (rc >= 0) rc = fc_msg_decode(zmq_msg_data(&f), zmq_msg_size(&f), m, &err);
  zmq_msg_close(&f);
  return rc;
}

static void hello(void *s, const char *id) {
  fc_msg_t m = {.type = FC_MSG_REGISTER, .threads = 1};
  fc_msg_set_str(&m.id, id);
  fc_msg_add_cap(&m, "sleep");
  send_m(s, &m);
  m.type = FC_MSG_LEASE_REQUEST;
  send_m(s, &m);
  fc_msg_clear(&m);
}

static int64_t submit(const char *ep, const char *name, int ntasks, const char *store) {
  size_t cap = 256 + (size_t)ntasks * 64;
  char *spec = malloc(cap);
  size_t n = (size_t)snprintf(spec, cap, "name: %s\nstore: %s\nmax_attempts: 3\ntasks:\n", name, store);
  for (int i = 0; i < ntasks; i++) n += (size_t)snprintf(spec + n, cap - n, "  - {name: t%d, kind: sleep}\n", i);
  fc_msg_t req = {.type = FC_MSG_SUBMIT, .text = spec}, rep;
  fc_err_t err;
  int64_t id = -1;
  for (int tries = 0; tries < 50 && id < 0; tries++) {
    if (fc_net_call(ep, &req, &rep, 10000, &err) == 0) {
      if (!rep.ok) fprintf(stderr, "submit: %s\n", rep.error);
      json_t *j = json_loads(rep.text ? rep.text : "{}", 0, NULL);
      id = json_integer_value(json_object_get(j, "job"));
      json_decref(j);
      fc_msg_clear(&rep);
    } else usleep(100000);
  }
  free(spec);
  return id;
}

/* 1. Assignments per second: every worker completes instantly. */
static double throughput(const char *ep, int ntasks, const char *store) {
  void *w[NW];
  char ids[NW][16];
  for (int i = 0; i < NW; i++) snprintf(ids[i], sizeof ids[i], "sim%02d", i), w[i] = dealer(ep, ids[i]), hello(w[i], ids[i]);
  usleep(200000);
  double t0 = fc_now();
  if (submit(ep, "bench", ntasks, store) < 0) return -1;
  int done = 0;
  zmq_pollitem_t it[NW];
  for (int i = 0; i < NW; i++) it[i] = (zmq_pollitem_t){w[i], 0, ZMQ_POLLIN, 0};
  while (done < ntasks) {
    if (zmq_poll(it, NW, 5000) <= 0) {
      fprintf(stderr, "stalled after %d tasks\n", done);
      break;
    }
    for (int i = 0; i < NW; i++) {
      if (!(it[i].revents & ZMQ_POLLIN)) continue;
      fc_msg_t m;
      if (recv_m(w[i], &m)) continue;
      if (m.type == FC_MSG_TASK_ASSIGN) {
        fc_msg_t r = {.type = FC_MSG_RESULT, .task = m.task, .ok = true};
        r.id = ids[i];
        send_m(w[i], &r);
        fc_msg_t q = {.type = FC_MSG_LEASE_REQUEST};
        q.id = ids[i];
        send_m(w[i], &q);
        done++;
      }
      fc_msg_clear(&m);
    }
  }
  double dt = fc_now() - t0;
  for (int i = 0; i < NW; i++) {
    fc_msg_t b = {.type = FC_MSG_BYE};
    b.id = ids[i];
    send_m(w[i], &b);
    zmq_close(w[i]);
  }
  return done / dt;
}

/* Reference: a ROUTER that echoes, 50 DEALERs doing the same request/reply loop. */
static void *echo(void *arg) {
  void *r = arg;
  for (;;) {
    zmq_msg_t id, body;
    zmq_msg_init(&id), zmq_msg_init(&body);
    if (zmq_msg_recv(&id, r, 0) < 0) break;
    zmq_msg_recv(&body, r, 0);
    if (zmq_msg_size(&body) == 4 && !memcmp(zmq_msg_data(&body), "stop", 4)) {
      zmq_msg_close(&id), zmq_msg_close(&body);
      break;
    }
    zmq_msg_send(&id, r, ZMQ_SNDMORE);
    zmq_msg_send(&body, r, 0);
  }
  return NULL;
}

static double echo_rate(const char *ep, int n) {
  void *r = zmq_socket(zctx, ZMQ_ROUTER);
  zmq_bind(r, ep);
  pthread_t th;
  pthread_create(&th, NULL, echo, r);
  void *w[NW];
  for (int i = 0; i < NW; i++) w[i] = dealer(ep, NULL);
  usleep(200000);
  fc_msg_t m = {.type = FC_MSG_TASK_ASSIGN, .task = 1, .job = 1, .attempt = 1};
  fc_msg_set_str(&m.kind, "sleep");
  uint8_t *buf;
  size_t len;
  fc_msg_encode(&m, &buf, &len);
  fc_msg_clear(&m);
  double t0 = fc_now();
  for (int i = 0; i < NW; i++) zmq_send(w[i], buf, len, 0);
  int done = 0;
  zmq_pollitem_t it[NW];
  for (int i = 0; i < NW; i++) it[i] = (zmq_pollitem_t){w[i], 0, ZMQ_POLLIN, 0};
  while (done < n) {
    if (zmq_poll(it, NW, 2000) <= 0) break;
    for (int i = 0; i < NW; i++) {
      if (!(it[i].revents & ZMQ_POLLIN)) continue;
      char b[256];
      zmq_recv(w[i], b, sizeof b, 0);
      done++;
      zmq_send(w[i], buf, len, 0);
    }
  }
  double dt = fc_now() - t0;
  void *s = dealer(ep, NULL);
  zmq_send(s, "stop", 4, 0);
  pthread_join(th, NULL);
  zmq_close(s);
  for (int i = 0; i < NW; i++) zmq_close(w[i]);
  zmq_close(r);
  free(buf);
  return done / dt;
}

/* 2. Failover: A takes a task, heartbeats once and goes silent; B waits. */
static double failover(const char *ep, const char *store, double *lease) {
  void *a = dealer(ep, "dead"), *b = dealer(ep, "alive");
  hello(a, "dead");
  usleep(100000);
  if (submit(ep, "failover", 1, store) < 0) return -1;
  fc_msg_t m;
  if (recv_m(a, &m) || m.type != FC_MSG_TASK_ASSIGN) return -1;
  int64_t task = m.task;
  fc_msg_clear(&m);
  fc_msg_t hb = {.type = FC_MSG_HEARTBEAT, .task = task, .fraction = 0.1};
  hb.id = "dead";
  send_m(a, &hb);
  double death = fc_now(); /* the last sign of life */
  hello(b, "alive");
  zmq_pollitem_t it = {b, 0, ZMQ_POLLIN, 0};
  double got = -1, last_ask = fc_now();
  while (fc_now() - death < 30) {
    if (zmq_poll(&it, 1, 50) > 0) {
      if (recv_m(b, &m) == 0 && m.type == FC_MSG_TASK_ASSIGN && m.task == task) got = fc_now();
      fc_msg_clear(&m);
      if (got > 0) break;
    }
    if (fc_now() - last_ask > 0.2) hello(b, "alive"), last_ask = fc_now(); /* an idle worker's tick */
  }
  zmq_close(a), zmq_close(b);
  (void)lease;
  return got > 0 ? got - death : -1;
}

int main(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    printf("Usage: FC_BUILD=BUILD_DIR coord [TASKS]\n"
           "Starts a coordinator and 50 simulated workers over TCP loopback, runs TASKS (3000) test\n"
           "tasks and prints task assignments per second beside bare ZeroMQ request/reply, then the\n"
           "time from a worker's SIGKILL to its task's reassignment.\n");
    return 0;
  }
  int ntasks = argc > 1 ? atoi(argv[1]) : 3000;
  if (ntasks <= 0) ntasks = 3000;
  signal(SIGPIPE, SIG_IGN);
  char tmp[] = "/tmp/fc-bench-XXXXXX";
  if (!mkdtemp(tmp)) return 1;
  char db[128], log[128], store[128], exe[512];
  snprintf(db, sizeof db, "%s/coord.sqlite", tmp);
  snprintf(log, sizeof log, "%s/coord.log", tmp);
  snprintf(store, sizeof store, "%s/store", tmp);
  const char *b = getenv("FC_BUILD");
  snprintf(exe, sizeof exe, "%s/daemons/fusechat-coordinator", b ? b : ".");
  int port = 20000 + getpid() % 20000;
  char ep[64], evp[64], echo_ep[64];
  snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
  snprintf(evp, sizeof evp, "tcp://127.0.0.1:%d", port + 1);
  snprintf(echo_ep, sizeof echo_ep, "tcp://127.0.0.1:%d", port + 2);
  double lease = 1.0;
  pid_t pid = fork();
  if (pid == 0) {
    freopen(log, "w", stderr);
    execl(exe, exe, "--run-dir", tmp, "--endpoint", ep, "--events", evp, "--db", db, "--lease-timeout", "1", (char *)NULL);
    _exit(127);
  }
  zctx = zmq_ctx_new();
  double ref = echo_rate(echo_ep, ntasks);
  double rate = throughput(ep, ntasks, store);
  double fo = failover(ep, store, &lease);
  printf("coordinator, %d simulated workers over TCP loopback, %d tasks:\n", NW, ntasks);
  printf("  task assignments/s (lease + result, each one SQLite transaction): %.0f\n", rate);
  printf("  reference: bare ZeroMQ request/reply round trips/s, same sockets:   %.0f  (coordinator at %.1f%%)\n", ref,
         100 * rate / ref);
  printf("  worker death -> task reassigned: %.3f s with a %.1f s lease timeout (overhead %.0f ms)\n", fo, lease,
         1000 * (fo - lease));
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  zmq_ctx_term(zctx);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  return system(cmd) == 0 && rate > 0 && fo > 0 ? 0 : 1;
}
