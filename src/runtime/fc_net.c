/* Endpoints, run directories and message framing over ZeroMQ (see fc_net.h). */
#include "fc_net.h"

#include <ctype.h>
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

int fc_net_call(const char *endpoint, const fc_msg_t *req, fc_msg_t *reply, int timeout_ms, fc_err_t *err) {
  memset(reply, 0, sizeof *reply);
  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, rc;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  /* a refused CURVE handshake drops the only pipe, and a DEALER without pipes blocks in send */
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
  fc_curve_t curve;
  if ((rc = fc_curve_from_env(&curve, err)) || (rc = fc_curve_apply_client(s, &curve, err))) goto out;
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
  /* a logits daemon's socket answers with logits_reply (errors included) */
  bool logits = reply->type == FC_MSG_LOGITS_REPLY && (req->type == FC_MSG_LOGITS_REQUEST || !reply->ok);
  if (rc == 0 && reply->type != FC_MSG_REPLY && !logits) {
    fc_msg_type_t t = reply->type;
    fc_msg_clear(reply);
    rc = fc_err_set(err, FC_EFORMAT, "the coordinator answered with a %s message", fc_msg_type_name(t));
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

/* ---- CURVE ---- */

static int valid_z85_key(const char *k) {
  if (strlen(k) != 40) return 0;
  uint8_t bin[32];
  return zmq_z85_decode(bin, k) != NULL;
}

int fc_curve_keygen(const char *dir, const char *name, fc_err_t *err) {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0)
    return fc_err_set(err, FC_EUNSUPPORTED, "this libzmq has no CURVE support: %s", zmq_strerror(zmq_errno()));
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.key", dir, name);
  if (fc_path_exists(path)) return fc_err_set(err, FC_EINVAL, "%s exists; not overwriting a key", path);
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc) return rc;
  fchmod(fileno(af.fp), 0600);
  fprintf(af.fp, "public %s\nsecret %s\n", pub, sec);
  if ((rc = fc_atomic_commit(&af, err))) return rc;
  snprintf(path, sizeof path, "%s/%s.pub", dir, name);
  if ((rc = fc_atomic_open(&af, path, err))) return rc;
  fprintf(af.fp, "%s\n", pub);
  return fc_atomic_commit(&af, err);
}

int fc_curve_load_pair(const char *path, fc_curve_t *c, fc_err_t *err) {
  char *text;
  size_t n;
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
