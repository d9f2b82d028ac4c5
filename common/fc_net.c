/* Endpoints, run directories and message framing over ZeroMQ (see fc_net.h). */
#include "fc_net.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

void fc_net_default_run_dir(char *out, size_t n) {
  const char *d = getenv("FUSECHAT_RUN_DIR"), *x = getenv("XDG_RUNTIME_DIR");
  if (d && *d) snprintf(out, n, "%s", d);
  else if (x && *x) snprintf(out, n, "%s/fusechat", x);
  else snprintf(out, n, "/tmp/fusechat-%ld", (long)getuid());
}

int fc_net_prepare_run_dir(const char *dir, fc_err_t *err) {
  int rc = fc_mkdir_p(dir, err);
  if (rc) return rc;
  struct stat st;
  if (stat(dir, &st) != 0) return fc_err_set(err, FC_EIO, "cannot stat %s: %s", dir, strerror(errno));
  if (st.st_uid != getuid()) return fc_err_set(err, FC_EINVAL, "run directory %s belongs to another user", dir);
  if (chmod(dir, 0700) != 0) return fc_err_set(err, FC_EIO, "cannot chmod %s: %s", dir, strerror(errno));
  return 0;
}

void fc_net_default_endpoint(const char *run_dir, char *out, size_t n) {
  const char *e = getenv("FUSECHAT_ENDPOINT");
  if (!run_dir && e && *e) {
    snprintf(out, n, "%s", e);
    return;
  }
  char d[512];
  if (!run_dir) fc_net_default_run_dir(d, sizeof d), run_dir = d;
  snprintf(out, n, "ipc://%s/coord.ipc", run_dir);
}

int fc_net_events_endpoint(const char *ep, char *out, size_t n, fc_err_t *err) {
  if (!strncmp(ep, "ipc://", 6)) {
    const char *slash = strrchr(ep, '/');
    snprintf(out, n, "%.*s/events.ipc", (int)(slash - ep), ep);
    if (slash - ep < 6) snprintf(out, n, "%s.events", ep);
    return 0;
  }
  if (!strncmp(ep, "tcp://", 6)) {
    const char *colon = strrchr(ep, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (port > 0 && port < 65535 && *end == 0) {
      snprintf(out, n, "%.*s:%ld", (int)(colon - ep), ep, port + 1);
      return 0;
    }
  }
  return fc_err_set(err, FC_EINVAL, "cannot derive an event endpoint from '%s'; give --events", ep);
}

int fc_net_send(void *sock, const void *const *env, const size_t *envlen, size_t nenv, const fc_msg_t *m,
                fc_err_t *err) {
  uint8_t *buf;
  size_t len;
  fc_msg_encode(m, &buf, &len);
  for (size_t i = 0; i < nenv; i++)
    if (zmq_send(sock, env[i], envlen[i], ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
      free(buf);
      return fc_err_set(err, FC_EIO, "send: %s", zmq_strerror(zmq_errno()));
    }
  int rc = zmq_send(sock, buf, len, ZMQ_DONTWAIT);
  free(buf);
  if (rc < 0) return fc_err_set(err, FC_EIO, "send: %s", zmq_strerror(zmq_errno()));
  return 0;
}

int fc_net_call(const char *endpoint, const fc_msg_t *req, fc_msg_t *reply, int timeout_ms, fc_err_t *err) {
  memset(reply, 0, sizeof *reply);
  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, rc;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  if (zmq_connect(s, endpoint) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  uint8_t *buf;
  size_t len;
  fc_msg_encode(req, &buf, &len);
  rc = zmq_send(s, buf, len, 0);
  free(buf);
  if (rc < 0) {
    rc = fc_err_set(err, FC_EIO, "cannot send to %s: %s", endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, timeout_ms) <= 0) {
    rc = fc_err_set(err, FC_EIO, "no answer from the coordinator at %s within %.1f s (is it running?)", endpoint,
                    timeout_ms / 1000.0);
    goto out;
  }
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  if (zmq_msg_recv(&msg, s, 0) < 0) {
    zmq_msg_close(&msg);
    rc = fc_err_set(err, FC_EIO, "receive: %s", zmq_strerror(zmq_errno()));
    goto out;
  }
  rc = fc_msg_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), reply, err);
  zmq_msg_close(&msg);
  if (rc == 0 && reply->type != FC_MSG_REPLY) {
    fc_msg_clear(reply);
    rc = fc_err_set(err, FC_EFORMAT, "the coordinator answered with a %s message", fc_msg_type_name(reply->type));
  }
out:
  zmq_close(s);
  zmq_ctx_term(ctx);
  return rc;
}

double fc_net_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
