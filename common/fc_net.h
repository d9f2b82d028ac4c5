/* What the coordinator, the stage daemons and fusectl share about the network: default
 * endpoints in a private run directory, multipart ZeroMQ send/receive of fc_msg_t, and one
 * request/reply call for clients. */
#ifndef FC_NET_H
#define FC_NET_H

#include <stddef.h>

#include "fc_msg.h"
#include "fc_util.h"

/* The run directory: $FUSECHAT_RUN_DIR, else $XDG_RUNTIME_DIR/fusechat, else /tmp/fusechat-UID. */
void fc_net_default_run_dir(char *out, size_t n);
/* Creates dir (and parents) and makes it mode 0700, refusing one owned by another user. */
int fc_net_prepare_run_dir(const char *dir, fc_err_t *err);
/* ipc://RUN/coord.ipc, or $FUSECHAT_ENDPOINT when set (and run_dir is NULL). */
void fc_net_default_endpoint(const char *run_dir, char *out, size_t n);
/* The event (PUB) endpoint beside a coordinator endpoint: ipc://DIR/events.ipc for
 * ipc://DIR/coord.ipc, tcp://HOST:PORT+1 for tcp://HOST:PORT. */
int fc_net_events_endpoint(const char *endpoint, char *out, size_t n, fc_err_t *err);

/* Sends envelope frames (may be 0) then the encoded message, without blocking. */
int fc_net_send(void *sock, const void *const *env, const size_t *envlen, size_t nenv, const fc_msg_t *m,
                fc_err_t *err);
/* One request/reply round trip to the coordinator: connects a DEALER, sends req, waits up to
 * timeout_ms for the reply (decoded into *reply). */
int fc_net_call(const char *endpoint, const fc_msg_t *req, fc_msg_t *reply, int timeout_ms, fc_err_t *err);
/* Wall-clock unix seconds (leases are stored with it so they survive a restart). */
double fc_net_wall(void);

#endif
