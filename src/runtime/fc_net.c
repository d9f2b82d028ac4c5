/* Endpoints, run directories and message framing over ZeroMQ (see fc_net.h). */
#include "fc_net.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stdint.h>
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

/* What the socket monitor saw while we waited: a refused key is a handshake failure with an
 * authentication status; without any event the peer never answered the TCP connect. */
typedef struct watch {
  void *mon;
  int connected, handshake_ok, auth_failed, auth_status, proto_failed;
} watch_t;

static void watch_read(watch_t *wt) {
  for (;;) {
    zmq_msg_t f1, f2;
    zmq_msg_init(&f1);
    if (zmq_msg_recv(&f1, wt->mon, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&f1);
      return;
    }
    uint16_t ev = 0;
    uint32_t val = 0;
    if (zmq_msg_size(&f1) >= 6) memcpy(&ev, zmq_msg_data(&f1), 2), memcpy(&val, (char *)zmq_msg_data(&f1) + 2, 4);
    zmq_msg_close(&f1);
    zmq_msg_init(&f2);
    zmq_msg_recv(&f2, wt->mon, 0); /* the address frame */
    zmq_msg_close(&f2);
    if (ev == ZMQ_EVENT_CONNECTED) wt->connected = 1;
    else if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) wt->handshake_ok = 1;
    else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) wt->auth_failed = 1, wt->auth_status = (int)val;
    else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) wt->proto_failed = 1;
  }
}

int fc_net_call(const char *endpoint, const fc_msg_t *req, fc_msg_t *reply, int timeout_ms, fc_err_t *err) {
  fc_curve_t curve;
  int rc = fc_curve_from_env(&curve, err);
  if (rc) return rc;
  return fc_net_call_curve(endpoint, &curve, req, reply, timeout_ms, err);
}

int fc_net_call_curve(const char *endpoint, const fc_curve_t *curve, const fc_msg_t *req, fc_msg_t *reply,
                      int timeout_ms, fc_err_t *err) {
  static atomic_int seq;
  memset(reply, 0, sizeof *reply);
  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  watch_t wt = {0};
  int linger = 0, rc;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  /* a refused CURVE handshake drops the only pipe, and a DEALER without pipes blocks in send */
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
  char monep[64];
  snprintf(monep, sizeof monep, "inproc://fc-net-monitor-%d", atomic_fetch_add(&seq, 1));
  if (zmq_socket_monitor(s, monep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
    wt.mon = zmq_socket(ctx, ZMQ_PAIR);
    if (zmq_connect(wt.mon, monep) != 0) zmq_close(wt.mon), wt.mon = NULL;
  }
  if ((rc = fc_curve_apply_client(s, curve, err))) goto out;
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
    if (wt.mon) watch_read(&wt);
    if (wt.auth_failed)
      rc = fc_err_set(err, FC_EINVAL, "%s refused our CURVE key %s (status %d): it is not in the allow-list", endpoint,
                      curve && curve->enabled ? curve->public_key : "-", wt.auth_status);
    else
      rc = fc_err_set(err, FC_EIO, "cannot send to %s: %s", endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  zmq_pollitem_t it[2] = {{s, 0, ZMQ_POLLIN, 0}, {wt.mon, 0, ZMQ_POLLIN, 0}};
  double deadline = fc_net_wall() + timeout_ms / 1000.0;
  int got = 0;
  for (;;) {
    long left = (long)((deadline - fc_net_wall()) * 1000);
    if (left <= 0) break;
    if (zmq_poll(it, wt.mon ? 2 : 1, left) < 0) break;
    if (it[0].revents & ZMQ_POLLIN) {
      got = 1;
      break;
    }
    if (wt.mon && (it[1].revents & ZMQ_POLLIN)) {
      watch_read(&wt);
      if (wt.auth_failed) break;
    }
  }
  if (!got) {
    if (wt.mon) watch_read(&wt);
    if (wt.auth_failed)
      rc = fc_err_set(err, FC_EINVAL, "%s refused our CURVE key %s (status %d): it is not in the allow-list", endpoint,
                      curve && curve->enabled ? curve->public_key : "-", wt.auth_status);
    else if (wt.proto_failed)
      rc = fc_err_set(err, FC_EINVAL, "the handshake with %s failed: check its public key (FUSECHAT_CURVE_SERVER) and "
                      "that both sides use CURVE", endpoint);
    else if (wt.connected && !wt.handshake_ok && curve && curve->enabled)
      rc = fc_err_set(err, FC_EIO, "%s accepted the connection but not the CURVE handshake within %.1f s (wrong server key?)",
                      endpoint, timeout_ms / 1000.0);
    else if (wt.connected)
      rc = fc_err_set(err, FC_EIO, "connected to %s but no answer within %.1f s (overloaded?)", endpoint, timeout_ms / 1000.0);
    else
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
  /* a logits daemon's socket answers with logits_reply (errors included) */
  bool logits = reply->type == FC_MSG_LOGITS_REPLY && (req->type == FC_MSG_LOGITS_REQUEST || !reply->ok);
  if (rc == 0 && reply->type != FC_MSG_REPLY && !logits) {
    fc_msg_type_t t = reply->type;
    fc_msg_clear(reply);
    rc = fc_err_set(err, FC_EFORMAT, "the coordinator answered with a %s message", fc_msg_type_name(t));
  }
out:
  zmq_socket_monitor(s, NULL, 0);
  if (wt.mon) zmq_close(wt.mon);
  zmq_close(s);
  zmq_ctx_term(ctx);
  return rc;
}

double fc_net_wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- CURVE ---- */

static int valid_z85_key(const char *k) {
  if (strlen(k) != 40) return 0;
  uint8_t bin[32];
  return zmq_z85_decode(bin, k) != NULL;
}

int fc_curve_keygen(const char *dir, const char *name, fc_err_t *err) {
  return fc_curve_keygen_owned(dir, name, (uid_t)-1, (gid_t)-1, err);
}

int fc_curve_keygen_owned(const char *dir, const char *name, uid_t uid, gid_t gid, fc_err_t *err) {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    return fc_err_set(err, FC_EUNSUPPORTED, "this libzmq has no CURVE support: %s", zmq_strerror(zmq_errno()));
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.key", dir, name);
  if (fc_path_exists(path)) return fc_err_set(err, FC_EINVAL, "%s exists; not overwriting a key", path);
  /* the secret is never readable by anyone else, not even for the instant before a chmod */
  fc_atomic_file_t af;
  mode_t old = umask(077);
  int rc = fc_atomic_open(&af, path, err);
  umask(old);
  if (rc) return rc;
  if (fchmod(fileno(af.fp), FC_CURVE_SECRET_MODE) != 0 ||
      ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fileno(af.fp), uid, gid) != 0)) {
    rc = fc_err_set(err, FC_EIO, "cannot set the owner or mode of %s: %s", path, strerror(errno));
    fc_atomic_abort(&af);
    return rc;
  }
  fprintf(af.fp, "public %s\nsecret %s\n", pub, sec);
  if ((rc = fc_atomic_commit(&af, err))) return rc;
  snprintf(path, sizeof path, "%s/%s.pub", dir, name);
  if ((rc = fc_atomic_open(&af, path, err))) return rc;
  if (fchmod(fileno(af.fp), FC_CURVE_PUBLIC_MODE) != 0 ||
      ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fileno(af.fp), uid, gid) != 0)) {
    rc = fc_err_set(err, FC_EIO, "cannot set the owner or mode of %s: %s", path, strerror(errno));
    fc_atomic_abort(&af);
    return rc;
  }
  fprintf(af.fp, "%s\n", pub);
  return fc_atomic_commit(&af, err);
}

/* Why a key file cannot be read, in the terms an admin fixes it with. */
static int key_unreadable(const char *path, fc_err_t *err) {
  int e = errno;
  struct stat st;
  if (stat(path, &st) != 0)
    return fc_err_set(err, FC_EINVAL, "cannot read key file %s: %s (running as uid %ld)", path, strerror(e),
                      (long)geteuid());
  return fc_err_set(err, FC_EINVAL,
                    "cannot read key file %s: %s; this process runs as uid %ld gid %ld, the file is owned by uid %ld "
                    "gid %ld with mode %04o: it needs read permission for uid %ld (e.g. chown %ld %s; chmod 0600 %s)",
                    path, strerror(e), (long)geteuid(), (long)getegid(), (long)st.st_uid, (long)st.st_gid,
                    (unsigned)(st.st_mode & 07777), (long)geteuid(), (long)geteuid(), path, path);
}

int fc_curve_load_pair(const char *path, fc_curve_t *c, fc_err_t *err) {
  char *text;
  size_t n;
  if (access(path, R_OK) != 0) return key_unreadable(path, err);
  int rc = fc_read_file(path, &text, &n, err);
  if (rc) return rc;
  char pub[64] = "", sec[64] = "";
  const char *p = strstr(text, "public "), *s = strstr(text, "secret ");
  if (p) sscanf(p + 7, "%63s", pub);
  if (s) sscanf(s + 7, "%63s", sec);
  free(text);
  if (!valid_z85_key(pub) || !valid_z85_key(sec))
    return fc_err_set(err, FC_EFORMAT, "%s is not a key file from 'fusectl keygen' (public/secret lines)", path);
  memcpy(c->public_key, pub, 41);
  memcpy(c->secret_key, sec, 41);
  return 0;
}

int fc_curve_load_public(const char *path, char key[41], fc_err_t *err) {
  char *text;
  size_t n;
  if (access(path, R_OK) != 0) return key_unreadable(path, err);
  int rc = fc_read_file(path, &text, &n, err);
  if (rc) return rc;
  char k[64] = "";
  const char *p = strstr(text, "public ");
  sscanf(p ? p + 7 : text, "%63s", k);
  free(text);
  if (!valid_z85_key(k)) return fc_err_set(err, FC_EFORMAT, "%s does not hold a Z85 public key", path);
  memcpy(key, k, 41);
  return 0;
}

int fc_curve_client_files(const char *key_file, const char *server_file, fc_curve_t *c, fc_err_t *err) {
  memset(c, 0, sizeof *c);
  if (!key_file && !server_file) return 0;
  if (!key_file || !server_file)
    return fc_err_set(err, FC_EINVAL, "CURVE needs both our key file and the coordinator's public key");
  int rc = fc_curve_load_pair(key_file, c, err);
  if (rc == 0) rc = fc_curve_load_public(server_file, c->server_key, err);
  c->enabled = rc == 0;
  return rc;
}

int fc_curve_from_env(fc_curve_t *c, fc_err_t *err) {
  const char *k = getenv("FUSECHAT_CURVE_KEY"), *s = getenv("FUSECHAT_CURVE_SERVER");
  return fc_curve_client_files(k && *k ? k : NULL, s && *s ? s : NULL, c, err);
}

int fc_curve_apply_client(void *sock, const fc_curve_t *c, fc_err_t *err) {
  if (!c || !c->enabled) return 0;
  if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, c->server_key, 40) || zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, c->public_key, 40) ||
      zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, c->secret_key, 40))
    return fc_err_set(err, FC_EUNSUPPORTED, "cannot set CURVE keys: %s", zmq_strerror(zmq_errno()));
  return 0;
}

int fc_curve_apply_server(void *sock, const fc_curve_t *c, fc_err_t *err) {
  if (!c || !c->enabled) return 0;
  int one = 1;
  if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) || zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, c->secret_key, 40))
    return fc_err_set(err, FC_EUNSUPPORTED, "cannot set CURVE keys: %s", zmq_strerror(zmq_errno()));
  return 0;
}

const char *fc_role_name(unsigned r) {
  static const char *const names[8] = {"none", "worker", "operator", "worker+operator", "reader", "worker+reader",
                                       "operator+reader", "worker+operator+reader"};
  return names[r & 7];
}

static int allow_add_file(fc_curve_allow_t *a, const char *path, unsigned roles, fc_err_t *err) {
  char *text;
  size_t n;
  int rc = fc_read_file(path, &text, &n, err);
  if (rc) return rc;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    while (isspace((unsigned char)*line)) line++;
    if (!*line || *line == '#') continue;
    char k[64] = "";
    sscanf(line, "%63s", k);
    if (!valid_z85_key(k)) {
      free(text);
      return fc_err_set(err, FC_EFORMAT, "%s: '%s' is not a Z85 public key", path, k);
    }
    size_t i;
    for (i = 0; i < a->n && memcmp(a->keys[i], k, 40); i++) {}
    if (i == a->n) {
      a->keys = fc_xrealloc(a->keys, (a->n + 1) * sizeof *a->keys);
      a->roles = fc_xrealloc(a->roles, (a->n + 1) * sizeof *a->roles);
      memcpy(a->keys[a->n], k, 41);
      a->roles[a->n++] = 0;
    }
    a->roles[i] |= roles;
  }
  free(text);
  return 0;
}

int fc_curve_allow_add(const char *path, unsigned roles, fc_curve_allow_t *a, fc_err_t *err) {
  DIR *d = opendir(path);
  if (!d) return allow_add_file(a, path, roles, err);
  struct dirent *e;
  int rc = 0;
  while (rc == 0 && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 4, ".pub")) continue;
    char *p = fc_path_join(path, e->d_name);
    rc = allow_add_file(a, p, roles, err);
    free(p);
  }
  closedir(d);
  return rc;
}

int fc_curve_allow_load(const char *path, fc_curve_allow_t *a, fc_err_t *err) {
  memset(a, 0, sizeof *a);
  int rc = fc_curve_allow_add(path, FC_ROLE_ALL, a, err);
  if (rc) fc_curve_allow_free(a);
  return rc;
}

unsigned fc_curve_roles(const fc_curve_allow_t *a, const char *z) {
  for (size_t i = 0; i < a->n; i++)
    if (!memcmp(a->keys[i], z, 40)) return a->roles[i];
  return 0;
}

unsigned fc_curve_allowed(const fc_curve_allow_t *a, const uint8_t key[32]) {
  char z[41];
  if (!zmq_z85_encode(z, key, 32)) return 0;
  return fc_curve_roles(a, z);
}

void fc_curve_allow_free(fc_curve_allow_t *a) {
  free(a->keys);
  free(a->roles);
  a->keys = NULL, a->roles = NULL, a->n = 0;
}

int fc_curve_check_private(const char *path, fc_err_t *err) {
  struct stat st;
  if (stat(path, &st) != 0) return fc_err_set(err, FC_EIO, "cannot stat %s: %s", path, strerror(errno));
  if (st.st_mode & 077)
    return fc_err_set(err, FC_EINVAL, "%s holds a secret key but is readable by others (mode %03o): chmod 600 it",
                      path, (unsigned)(st.st_mode & 0777));
  return 0;
}

int fc_ratelimit_pass(fc_ratelimit_t *r, double interval, unsigned *held) {
  double now = fc_net_wall();
  if (now < r->next) {
    r->held++;
    return 0;
  }
  *held = r->held;
  r->held = 0;
  r->next = now + interval;
  return 1;
}
