/* The CURVE authentication handler (ZAP, RFC 27) every CURVE-protected socket of a process
 * shares: the coordinator's and the logits daemon's direct socket. libzmq asks it about each
 * handshake; it accepts client keys of the allow-list and tags the connection with the key
 * (Z85) as its User-Id, so a server can look up per message what that key may do
 * (zmq_msg_gets(msg, "User-Id")). Who is accepted is decided in one function (decide() in
 * fc_zap.c): a key holding any role of the allow-lists (fc_curve_allow_add); a server checks
 * per message whether the key's roles cover it (fc_curve_roles on the User-Id). */
#ifndef FC_ZAP_H
#define FC_ZAP_H

#include "fc_net.h"

typedef struct fc_zap fc_zap_t;

/* Binds the handler in zctx; call it before binding the sockets it guards. allow is borrowed
 * and must outlive the handler; `what` names the server in log lines. */
int fc_zap_start(void *zctx, const fc_curve_allow_t *allow, const char *what, fc_zap_t **out, fc_err_t *err);
/* The handler's socket, to poll for ZMQ_POLLIN (or its ZMQ_FD in an event loop). */
void *fc_zap_socket(const fc_zap_t *z);
/* Answers every pending handshake; never blocks. */
void fc_zap_drain(fc_zap_t *z);
void fc_zap_stop(fc_zap_t **z);

#endif
