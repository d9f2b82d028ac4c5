/* A minimal HTTP/1.x server on a libuv loop for Prometheus scrapes: GET /metrics answers the
 * text a render callback writes; anything else gets 404 or 405. One request per connection. */
#ifndef FC_METRICS_H
#define FC_METRICS_H

#include <stdio.h>
#include <uv.h>

#include "fc_util.h"

/* Connections served at once (more are closed at accept), the largest request head read, and
 * how long a connection may take to send its request and read the answer. */
#define FC_METRICS_MAX_CONNS 16
#define FC_METRICS_MAX_REQUEST 8192
#define FC_METRICS_TIMEOUT_MS 5000

typedef struct fc_metrics fc_metrics_t;
/* Writes the exposition text to fp; returns 0, or <0 with err set (the scrape gets a 500). */
typedef int (*fc_metrics_render_fn)(void *arg, FILE *fp, fc_err_t *err);

/* Parses "HOST:PORT" ("127.0.0.1:9464", "[::1]:9464") and listens there on loop. */
int fc_metrics_start(uv_loop_t *loop, const char *addr, fc_metrics_render_fn render, void *arg, fc_metrics_t **out,
                     fc_err_t *err);
/* Closes the listener and every open connection; the loop must run once more to finish. */
void fc_metrics_stop(fc_metrics_t **m);
/* 0 when addr parses as HOST:PORT (for option checking before anything starts). */
int fc_metrics_parse_addr(const char *addr, struct sockaddr_storage *sa, fc_err_t *err);

#endif
