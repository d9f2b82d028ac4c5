/* The metrics HTTP server (see fc_metrics.h). It runs on the coordinator's loop, so a render
 * reads the store between two messages and never races it. A connection lives until its answer
 * is written, its request outgrows FC_METRICS_MAX_REQUEST, or FC_METRICS_TIMEOUT_MS passes. */
#include "fc_metrics.h"

#include <stdlib.h>
#include <string.h>

typedef struct conn {
  uv_tcp_t tcp; /* first: the handle's address is the connection's */
  uv_timer_t timer;
  struct fc_metrics *owner;
  struct conn *next;
  char req[FC_METRICS_MAX_REQUEST];
  size_t len;
  int closing, open_handles, answered;
  uv_write_t wr;
  char *resp;
} conn_t;

struct fc_metrics {
  uv_tcp_t listener;
  fc_metrics_render_fn render;
  void *arg;
  conn_t *conns;
  int nconns, stopping;
};

int fc_metrics_parse_addr(const char *addr, struct sockaddr_storage *sa, fc_err_t *err) {
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  if (!colon || colon == addr || !colon[1])
    return fc_err_set(err, FC_EINVAL, "metrics address '%s' is not HOST:PORT (e.g. 127.0.0.1:9464)", addr ? addr : "");
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 1 || port > 65535) return fc_err_set(err, FC_EINVAL, "metrics address '%s': bad port", addr);
  char host[256];
  size_t hl = (size_t)(colon - addr);
  if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') addr++, hl -= 2; /* [v6]:port */
  if (hl >= sizeof host) return fc_err_set(err, FC_EINVAL, "metrics address '%s': host too long", addr);
  memcpy(host, addr, hl), host[hl] = 0;
  memset(sa, 0, sizeof *sa);
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) != 0)
    return fc_err_set(err, FC_EINVAL, "metrics address '%s': '%s' is not a numeric IPv4 or IPv6 address", addr, host);
  return 0;
}

static void maybe_free(fc_metrics_t *m);

static void conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->open_handles) return;
  fc_metrics_t *m = c->owner;
  for (conn_t **pp = &m->conns; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  m->nconns--;
  free(c->resp);
  free(c);
  maybe_free(m);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->tcp, conn_closed);
  uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void timeout_cb(uv_timer_t *t) { conn_close(t->data); }

static void written(uv_write_t *w, int status) {
  (void)status;
  conn_close(w->data);
}

static void respond(conn_t *c, const char *status, const char *body, size_t blen) {
  c->answered = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  char head[256];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    status, blen);
  c->resp = fc_xmalloc((size_t)hl + blen);
  memcpy(c->resp, head, (size_t)hl);
  if (blen) memcpy(c->resp + hl, body, blen);
  uv_buf_t b = uv_buf_init(c->resp, (unsigned)((size_t)hl + blen));
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, written) != 0) conn_close(c);
}

/* A whole request head is in: answer it. */
static void serve(conn_t *c) {
  const char *r = c->req;
  int get = !strncmp(r, "GET ", 4), head = !strncmp(r, "HEAD ", 5);
  if (!get && !head) {
    static const char msg[] = "only GET /metrics is served\n";
    respond(c, "405 Method Not Allowed", msg, sizeof msg - 1);
    return;
  }
  const char *path = r + (get ? 4 : 5);
  size_t pl = strcspn(path, " ?\r\n");
  if (pl != 8 || strncmp(path, "/metrics", 8)) {
    static const char msg[] = "not found: the metrics are at /metrics\n";
    respond(c, "404 Not Found", msg, sizeof msg - 1);
    return;
  }
  char *text = NULL;
  size_t len = 0;
  FILE *fp = open_memstream(&text, &len);
  fc_err_t err = {0};
  int rc = fp ? c->owner->render(c->owner->arg, fp, &err) : fc_err_set(&err, FC_ENOMEM, "no memory");
  if (fp) fclose(fp);
  if (rc) {
    fc_warn("metrics: %s", err.msg);
    respond(c, "500 Internal Server Error", err.msg, strlen(err.msg));
  } else {
    respond(c, "200 OK", text, head ? 0 : len);
  }
  free(text);
}

static void alloc_cb(uv_handle_t *h, size_t want, uv_buf_t *b) {
  conn_t *c = h->data;
  (void)want;
  *b = uv_buf_init(c->req + c->len, (unsigned)(sizeof c->req - 1 - c->len));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = s->data;
  (void)b;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (c->answered) return;
  c->len += (size_t)n;
  c->req[c->len] = 0;
  if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) serve(c);
  else if (c->len >= sizeof c->req - 1) {
    static const char msg[] = "request too large\n";
    respond(c, "431 Request Header Fields Too Large", msg, sizeof msg - 1);
  }
}

static void accept_cb(uv_stream_t *srv, int status) {
  fc_metrics_t *m = srv->data;
  if (status < 0 || m->stopping) return;
  conn_t *c = fc_xcalloc(1, sizeof *c);
  c->owner = m;
  uv_tcp_init(srv->loop, &c->tcp);
  uv_timer_init(srv->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = m->conns, m->conns = c, m->nconns++;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) != 0 || m->nconns > FC_METRICS_MAX_CONNS) {
    conn_close(c); /* a scraper that floods us waits for the next round */
    return;
  }
  uv_timer_start(&c->timer, timeout_cb, FC_METRICS_TIMEOUT_MS, 0);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

int fc_metrics_start(uv_loop_t *loop, const char *addr, fc_metrics_render_fn render, void *arg, fc_metrics_t **out,
                     fc_err_t *err) {
  struct sockaddr_storage sa;
  int rc = fc_metrics_parse_addr(addr, &sa, err);
  if (rc) return rc;
  fc_metrics_t *m = fc_xcalloc(1, sizeof *m);
  m->render = render, m->arg = arg;
  uv_tcp_init(loop, &m->listener);
  m->listener.data = m;
  int e = uv_tcp_bind(&m->listener, (const struct sockaddr *)&sa, 0);
  if (!e) e = uv_listen((uv_stream_t *)&m->listener, 64, accept_cb);
  if (e) {
    fc_err_set(err, FC_EIO, "cannot serve metrics on %s: %s", addr, uv_strerror(e));
    fc_metrics_stop(&m);
    return FC_EIO;
  }
  *out = m;
  return 0;
}

static void listener_closed(uv_handle_t *h) {
  fc_metrics_t *m = h->data;
  m->listener.data = NULL; /* marks it closed */
  maybe_free(m);
}

static void maybe_free(fc_metrics_t *m) {
  if (m->stopping && !m->listener.data && !m->conns) free(m);
}

void fc_metrics_stop(fc_metrics_t **mp) {
  fc_metrics_t *m = *mp;
  if (!m) return;
  *mp = NULL;
  m->stopping = 1;
  for (conn_t *c = m->conns; c; c = c->next) conn_close(c);
  uv_close((uv_handle_t *)&m->listener, listener_closed);
}
