/* The direct-request server (see fc_serve.h): one thread polling the ROUTER socket and, with
 * CURVE, the ZAP handler; each request is decoded, answered and sent back on its envelope. */
#include "fc_serve.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fc_net.h"
#include "fc_zap.h"

struct fc_serve {
  fc_serve_opts_t o;
  pthread_t thread;
  atomic_int stop;
  int running;
  void *zctx, *sock;
  fc_zap_t *zap;
  fc_curve_allow_t allow;
};

/* One request: envelope frames, then the message. */
static void serve_one(fc_serve_t *s) {
  zmq_msg_t fr[8];
  int nf = 0, more = 1;
  while (more) {
    zmq_msg_t *f = &fr[nf < 8 ? nf : 7];
    if (nf >= 8) zmq_msg_close(f);
    zmq_msg_init(f);
    if (zmq_msg_recv(f, s->sock, 0) < 0) {
      zmq_msg_close(f);
      break;
    }
    more = zmq_msg_more(f);
    if (nf < 8) nf++;
  }
  if (nf < 2) { /* a ROUTER always gives the identity first */
    for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
    return;
  }
  fc_msg_t req, rep = {0};
  fc_err_t err = {0};
  if (fc_msg_decode(zmq_msg_data(&fr[nf - 1]), zmq_msg_size(&fr[nf - 1]), &req, &err)) {
    rep.type = s->o.error_type;
    rep.ok = false;
    fc_msg_set_str(&rep.error, err.msg);
    fc_warn("%s: %s", s->o.what, err.msg);
  } else {
    double t0 = fc_now();
    s->o.answer(s->o.ctx, &req, &rep);
    fc_debug("%s: %s in %.1f ms", s->o.what, rep.ok ? "ok" : rep.error, 1e3 * (fc_now() - t0));
    fc_msg_clear(&req);
  }
  const void *env[7];
  size_t envlen[7];
  for (int i = 0; i < nf - 1; i++) env[i] = zmq_msg_data(&fr[i]), envlen[i] = zmq_msg_size(&fr[i]);
  if (fc_net_send(s->sock, env, envlen, (size_t)(nf - 1), &rep, &err)) fc_warn("%s: reply: %s", s->o.what, err.msg);
  fc_msg_clear(&rep);
  for (int i = 0; i < nf; i++) zmq_msg_close(&fr[i]);
}

static void *serve_main(void *arg) {
  fc_serve_t *s = arg;
  while (!atomic_load(&s->stop)) {
    zmq_pollitem_t it[2] = {{s->sock, 0, ZMQ_POLLIN, 0}, {s->zap ? fc_zap_socket(s->zap) : NULL, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(it, s->zap ? 2 : 1, 200) <= 0) continue;
    if (s->zap && (it[1].revents & ZMQ_POLLIN)) fc_zap_drain(s->zap);
    if (it[0].revents & ZMQ_POLLIN) serve_one(s);
  }
  return NULL;
}

int fc_serve_start(const fc_serve_opts_t *o, fc_serve_t **out, fc_err_t *err) {
  *out = NULL;
  if (!o->curve_key != !o->curve_allow) return fc_err_set(err, FC_EINVAL, "CURVE needs both the server key and the allow-list");
  fc_serve_t *s = fc_xcalloc(1, sizeof *s);
  s->o = *o;
  s->zctx = zmq_ctx_new();
  fc_curve_t curve = {0};
  int rc = 0;
  if (o->curve_key) { /* the handler must be bound before the socket it guards */
    if ((rc = fc_curve_load_pair(o->curve_key, &curve, err)) || (rc = fc_curve_allow_load(o->curve_allow, &s->allow, err)) ||
        (rc = fc_zap_start(s->zctx, &s->allow, o->what, &s->zap, err)))
      goto fail;
    curve.enabled = 1;
  } else if (!strncmp(o->endpoint, "tcp://", 6)) {
    fc_warn("%s on %s are open to anyone who can connect: give a key and an allow-list", o->what, o->endpoint);
  }
  s->sock = zmq_socket(s->zctx, ZMQ_ROUTER);
  if (curve.enabled && (rc = fc_curve_apply_server(s->sock, &curve, err))) goto fail;
  int linger = 0;
  zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
  int64_t maxsz = FC_MSG_MAX_BYTES + 1024;
  zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxsz, sizeof maxsz);
  if (zmq_bind(s->sock, o->endpoint) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot serve on %s: %s", o->endpoint, zmq_strerror(zmq_errno()));
    goto fail;
  }
  if (pthread_create(&s->thread, NULL, serve_main, s) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot start a thread");
    goto fail;
  }
  s->running = 1;
  fc_info("serving %s on %s", o->what, o->endpoint);
  *out = s;
  return 0;
fail:
  fc_serve_stop(&s);
  return rc;
}

void fc_serve_stop(fc_serve_t **sp) {
  fc_serve_t *s = *sp;
  if (!s) return;
  if (s->running) {
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
  }
  if (s->sock) zmq_close(s->sock);
  fc_zap_stop(&s->zap);
  if (s->allow.n || s->allow.keys) fc_curve_allow_free(&s->allow);
  if (s->zctx) zmq_ctx_term(s->zctx);
  free(s);
  *sp = NULL;
}
