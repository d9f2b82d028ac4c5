/* ZAP handler (see fc_zap.h): a REP socket on inproc://zeromq.zap.01 answering libzmq's
 * requests (version, request id, domain, address, identity, mechanism, credentials...) with
 * (version, request id, status, text, user id, metadata). */
#include "fc_zap.h"

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

struct fc_zap {
  void *sock;
  const fc_curve_allow_t *allow;
  const char *what;
  double last_warn;
  unsigned long refused;
};

int fc_zap_start(void *zctx, const fc_curve_allow_t *allow, const char *what, fc_zap_t **out, fc_err_t *err) {
  fc_zap_t *z = fc_xcalloc(1, sizeof *z);
  z->allow = allow, z->what = what ? what : "server";
  z->sock = zmq_socket(zctx, ZMQ_REP);
  if (!z->sock || zmq_bind(z->sock, "inproc://zeromq.zap.01") != 0) {
    int rc = fc_err_set(err, FC_EIO, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
    fc_zap_stop(&z);
    return rc;
  }
  *out = z;
  return 0;
}

void *fc_zap_socket(const fc_zap_t *z) { return z->sock; }

/* The decision on one handshake: mechanism and (for CURVE) the client's 32-byte key. A key is
 * accepted when the allow-lists give it at least one role (worker, operator, reader); what a
 * message may do with those roles is checked per message by the server, which finds them
 * from the connection's User-Id, the key set here. Returns the roles, 0 for a refusal. */
static unsigned decide(fc_zap_t *z, zmq_msg_t *mech, zmq_msg_t *key, char uid[41]) {
  uid[0] = 0;
  if (zmq_msg_size(mech) != 5 || memcmp(zmq_msg_data(mech), "CURVE", 5) || zmq_msg_size(key) != 32) return 0;
  unsigned roles = fc_curve_allowed(z->allow, zmq_msg_data(key)) & FC_ROLE_ALL;
  if (roles) zmq_z85_encode(uid, zmq_msg_data(key), 32);
  return roles;
}

void fc_zap_drain(fc_zap_t *z) {
  for (;;) {
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, z->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        break;
      }
      more = zmq_msg_more(&m);
      if (n < 8) f[n++] = m;
      else zmq_msg_close(&m);
    }
    if (n == 0) return;
    if (n >= 2) { /* a REP socket must answer every request it took */
      char uid[41] = "";
      int ok = n >= 7 && decide(z, &f[5], &f[6], uid) != 0;
      if (!ok) { /* a scanner must not fill the log: at most one line every 10 s */
        z->refused++;
        if (fc_now() - z->last_warn > 10) {
          fc_warn("%s: refused a client that is not in the allow-list (%lu so far)", z->what, z->refused);
          z->last_warn = fc_now();
        }
      }
      zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
      zmq_send(z->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
      zmq_send(z->sock, ok ? "200" : "400", 3, ZMQ_SNDMORE);
      zmq_send(z->sock, ok ? "OK" : "not allowed", ok ? 2 : 11, ZMQ_SNDMORE);
      zmq_send(z->sock, uid, strlen(uid), ZMQ_SNDMORE);
      zmq_send(z->sock, "", 0, 0);
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  }
}

void fc_zap_stop(fc_zap_t **zp) {
  fc_zap_t *z = *zp;
  if (!z) return;
  if (z->sock) zmq_close(z->sock);
  free(z);
  *zp = NULL;
}
