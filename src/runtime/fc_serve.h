/* A direct-request server: a ROUTER socket on its own thread answering one message with one
 * reply through a handler, optionally behind CURVE with an allow-list (fc_zap). The logits
 * daemon's --serve socket is one; a malformed request gets an error reply and the server keeps
 * serving. */
#ifndef FC_SERVE_H
#define FC_SERVE_H

#include "fc_msg.h"
#include "fc_util.h"

/* Fills rep (zeroed) from req; runs on the server's thread. */
typedef void (*fc_serve_fn)(void *ctx, const fc_msg_t *req, fc_msg_t *rep);

typedef struct fc_serve_opts {
  const char *endpoint;    /* ipc://... or tcp://... */
  const char *curve_key;   /* the server's key pair file, with curve_allow; NULL: no CURVE */
  const char *curve_allow; /* client public keys (a directory of *.pub or one file) */
  fc_msg_type_t error_type; /* the reply type for a request that does not decode */
  fc_serve_fn answer;
  void *ctx;
  const char *what;        /* names the server in log lines ("direct logits requests") */
} fc_serve_opts_t;

typedef struct fc_serve fc_serve_t;
int fc_serve_start(const fc_serve_opts_t *o, fc_serve_t **out, fc_err_t *err);
/* Stops the thread (within 200 ms) and closes everything. */
void fc_serve_stop(fc_serve_t **s);

#endif
