/* What the coordinator, the stage daemons and fusectl share about the network: default
 * endpoints in a private run directory, multipart ZeroMQ send/receive of fc_msg_t, and one
 * request/reply call for clients. */
#ifndef FC_NET_H
#define FC_NET_H

#include <stddef.h>
#include <stdint.h>

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
/* One request/reply round trip to the coordinator (or a logits daemon's --serve socket, which
 * answers logits_reply): connects a DEALER, sends req, waits up to timeout_ms for the reply
 * (decoded into *reply). */
int fc_net_call(const char *endpoint, const fc_msg_t *req, fc_msg_t *reply, int timeout_ms, fc_err_t *err);
/* ZeroMQ CURVE for TCP deployments: every daemon and client has a key pair (fusectl keygen);
 * the coordinator accepts only the public keys in its allow-list. Key files hold Z85 text:
 * NAME.key "public KEY\nsecret KEY\n" (mode 0600), NAME.pub "KEY\n". */
typedef struct fc_curve {
  int enabled;
  char public_key[41], secret_key[41];
  char server_key[41]; /* clients: the coordinator's public key */
} fc_curve_t;
/* Writes dir/name.key and dir/name.pub for a fresh key pair. */
int fc_curve_keygen(const char *dir, const char *name, fc_err_t *err);
/* Reads a .key file (both keys). */
int fc_curve_load_pair(const char *path, fc_curve_t *c, fc_err_t *err);
/* Reads a public key from a .pub file (or the public line of a .key file). */
int fc_curve_load_public(const char *path, char key[41], fc_err_t *err);
/* A client setup from own key file and the server's public key file (both or neither). */
int fc_curve_client_files(const char *key_file, const char *server_file, fc_curve_t *c, fc_err_t *err);
/* Clients: $FUSECHAT_CURVE_KEY (own .key) and $FUSECHAT_CURVE_SERVER (the coordinator's .pub). */
int fc_curve_from_env(fc_curve_t *c, fc_err_t *err);
/* Applies c to a socket before connect (client) or bind (server); no-op when not enabled. */
int fc_curve_apply_client(void *sock, const fc_curve_t *c, fc_err_t *err);
int fc_curve_apply_server(void *sock, const fc_curve_t *c, fc_err_t *err);
/* Roles a client key can hold: a worker may register and report tasks, an operator may
 * submit, cancel and retry, a reader may only look (operators can read too). */
enum { FC_ROLE_WORKER = 1, FC_ROLE_OPERATOR = 2, FC_ROLE_READER = 4, FC_ROLE_ALL = 7 };
/* Names the roles in r ("worker", "operator", "reader", joined by '+'). */
const char *fc_role_name(unsigned r);
/* An allow-list: a directory of *.pub files or one file of keys, one per line, each key with
 * the roles it was listed for. */
typedef struct fc_curve_allow {
  char (*keys)[41];
  unsigned *roles;
  size_t n;
} fc_curve_allow_t;
/* Loads a list whose keys get every role (a is emptied first). */
int fc_curve_allow_load(const char *path, fc_curve_allow_t *a, fc_err_t *err);
/* Adds the keys of a list with `roles` (a key already listed gains them). */
int fc_curve_allow_add(const char *path, unsigned roles, fc_curve_allow_t *a, fc_err_t *err);
/* The roles of a raw 32-byte key; 0 when it is not allowed. */
unsigned fc_curve_allowed(const fc_curve_allow_t *a, const uint8_t key[32]);
/* The same for a Z85 key text. */
unsigned fc_curve_roles(const fc_curve_allow_t *a, const char *z85);
void fc_curve_allow_free(fc_curve_allow_t *a);
/* Refuses a secret key file that its group or others may read (FC_EINVAL). */
int fc_curve_check_private(const char *path, fc_err_t *err);

/* A warning that may fire at most once per interval; the ones held back are counted and
 * reported with the next that passes. */
typedef struct fc_ratelimit {
  double next;
  unsigned held;
} fc_ratelimit_t;
/* True when a warning may be logged now; *held gets how many were held back before it. */
int fc_ratelimit_pass(fc_ratelimit_t *r, double interval, unsigned *held);

/* Wall-clock unix seconds (leases are stored with it so they survive a restart). */
double fc_net_wall(void);

#endif
