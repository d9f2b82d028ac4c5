/* Artifacts between machines (see fc_artifact.h): store sentinels and path mapping, the holder's
 * server thread and the fetcher's credit-based download. */
#include "fc_artifact.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "fc_sha256.h"
#include "fc_zap.h"

#define MAGIC "FCA1"
#define LOCATE_TIMEOUT_MS 10000

/* ---- stores ---- */

static int read_sentinel(const char *dir, char id[65]) {
  char *p = fc_path_join(dir, FC_STORE_SENTINEL), *text;
  size_t n;
  fc_err_t e;
  int rc = fc_read_file(p, &text, &n, &e);
  free(p);
  id[0] = 0;
  if (rc) return rc;
  char v[65] = "";
  sscanf(text, "id %64s", v);
  free(text);
  if (strlen(v) != 64) return FC_EFORMAT;
  memcpy(id, v, 65);
  return 0;
}

int fc_store_sentinel_ensure(const char *dir, char id[65], fc_err_t *err) {
  if (read_sentinel(dir, id) == 0) return 0;
  int rc = fc_mkdir_p(dir, err);
  if (rc) return rc;
  uint8_t raw[32];
  FILE *r = fopen("/dev/urandom", "rb");
  if (!r || fread(raw, 1, sizeof raw, r) != sizeof raw) {
    if (r) fclose(r);
    return fc_err_set(err, FC_EIO, "cannot read /dev/urandom");
  }
  fclose(r);
  fc_sha256_hex(raw, id); /* 64 hex digits of randomness */
  char *p = fc_path_join(dir, FC_STORE_SENTINEL);
  fc_atomic_file_t af;
  if ((rc = fc_atomic_open(&af, p, err)) == 0) {
    fchmod(fileno(af.fp), 0644);
    fprintf(af.fp, "id %s\n# written by fusechat-coordinator: daemons that read this id share its store\n", id);
    rc = fc_atomic_commit(&af, err);
  }
  free(p);
  return rc;
}

int fc_store_sentinel_read(const char *dir, char id[65], fc_err_t *err) {
  if (read_sentinel(dir, id) == 0) return 0;
  return fc_err_set(err, FC_ENOTFOUND, "%s has no readable %s", dir, FC_STORE_SENTINEL);
}

int fc_store_shared(const fc_store_t *s) {
  if (!s->coord_id[0]) return -1;
  return s->id[0] && !strcmp(s->id, s->coord_id);
}

/* prefix/rest when path is prefix or below it, else NULL */
static const char *below(const char *path, const char *prefix) {
  size_t n = strlen(prefix);
  while (n > 1 && prefix[n - 1] == '/') n--;
  if (!n || strncmp(path, prefix, n) || (path[n] && path[n] != '/')) return NULL;
  return path + n;
}

static char *swap_prefix(const char *path, const char *from, const char *to) {
  const char *rest = from[0] && to[0] && strcmp(from, to) ? below(path, from) : NULL;
  if (!rest) return fc_xstrdup(path);
  size_t n = strlen(to);
  while (n > 1 && to[n - 1] == '/') n--;
  char *out = fc_xmalloc(n + strlen(rest) + 1);
  memcpy(out, to, n);
  strcpy(out + n, rest);
  return out;
}

char *fc_store_to_local(const fc_store_t *s, const char *path) {
  return fc_store_shared(s) == 1 ? fc_xstrdup(path) : swap_prefix(path, s->logical, s->local);
}

char *fc_store_to_logical(const fc_store_t *s, const char *path) {
  return fc_store_shared(s) == 1 ? fc_xstrdup(path) : swap_prefix(path, s->local, s->logical);
}

/* ---- the holder ---- */

typedef struct known {
  char *path;
  uint64_t size;
  int64_t mtime_ns;
  char sha[65];
} known_t;

struct fc_artifact_server {
  pthread_t thread;
  atomic_int stop;
  atomic_uint_fast64_t bytes;
  void *zctx, *router;
  fc_zap_t *zap; /* with CURVE: the coordinator's allow-list, empty until the registration ack */
  char endpoint[300];
  pthread_mutex_t mu; /* guards what the loop thread changes under the server thread */
  fc_store_t store;
  known_t *known;
  size_t nknown;
};

static void put_u64(uint8_t b[8], uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_u64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
  return v;
}

static int64_t mtime_ns(const struct stat *st) { return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec; }

/* Whether local has content sha (cached by size and mtime; hashed once otherwise). */
static int verified(fc_artifact_server_t *s, const char *local, const struct stat *st, const char *sha) {
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->nknown; i++) {
    known_t *k = &s->known[i];
    if (!strcmp(k->path, local) && k->size == (uint64_t)st->st_size && k->mtime_ns == mtime_ns(st)) {
      int ok = !strcmp(k->sha, sha);
      pthread_mutex_unlock(&s->mu);
      return ok;
    }
  }
  pthread_mutex_unlock(&s->mu);
  char hex[65];
  uint64_t size;
  fc_err_t e;
  if (fc_sha256_file(local, hex, &size, &e)) return 0;
  fc_artifact_server_known(s, local, hex);
  return !strcmp(hex, sha);
}

/* Checks a request and opens the file it names; a status text when refused. */
static int open_request(fc_artifact_server_t *s, const char *sha, const char *path, const char **why) {
  pthread_mutex_lock(&s->mu);
  char *local = fc_store_to_local(&s->store, path);
  char root[PATH_MAX] = "";
  int have_root = s->store.local[0] && realpath(s->store.local, root) != NULL;
  pthread_mutex_unlock(&s->mu);
  char real[PATH_MAX];
  int fd = -1;
  struct stat st;
  if (!have_root) *why = "this daemon serves no store";
  else if (!realpath(local, real) || !below(real, root)) *why = "no such artifact in this store";
  else if ((fd = open(real, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    *why = "cannot open the artifact";
  else if (!verified(s, real, &st, sha)) *why = "the file here has other content";
  else *why = NULL;
  if (*why && fd >= 0) close(fd), fd = -1;
  free(local);
  return fd;
}

/* One request: frames ident | MAGIC | sha | path | offset | length. */
static void serve_request(fc_artifact_server_t *s, int *fd, char *cur_sha, char *cur_path) {
  zmq_msg_t f[6];
  int n = 0, more = 1;
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s->router, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      break;
    }
    more = zmq_msg_more(&m);
    if (n < 6) f[n++] = m;
    else zmq_msg_close(&m), n = 7;
  }
  if (n != 6 || zmq_msg_size(&f[1]) != 4 || memcmp(zmq_msg_data(&f[1]), MAGIC, 4) || zmq_msg_size(&f[2]) != 64 ||
      zmq_msg_size(&f[3]) == 0 || zmq_msg_size(&f[3]) >= 4096 || zmq_msg_size(&f[4]) != 8 || zmq_msg_size(&f[5]) != 4) {
    for (int i = 0; i < n && i < 6; i++) zmq_msg_close(&f[i]);
    return; /* not ours: no answer */
  }
  char sha[65], path[4096];
  memcpy(sha, zmq_msg_data(&f[2]), 64), sha[64] = 0;
  memcpy(path, zmq_msg_data(&f[3]), zmq_msg_size(&f[3])), path[zmq_msg_size(&f[3])] = 0;
  uint64_t off = get_u64(zmq_msg_data(&f[4]));
  const uint8_t *lb = zmq_msg_data(&f[5]);
  uint32_t len = (uint32_t)lb[0] | (uint32_t)lb[1] << 8 | (uint32_t)lb[2] << 16 | (uint32_t)lb[3] << 24;
  if (len > FC_ARTIFACT_CHUNK) len = FC_ARTIFACT_CHUNK;
  const char *why = NULL;
  if (*fd < 0 || strcmp(sha, cur_sha) || strcmp(path, cur_path)) { /* a new file: check it once */
    if (*fd >= 0) close(*fd);
    *fd = open_request(s, sha, path, &why);
    if (*fd >= 0) strcpy(cur_sha, sha), snprintf(cur_path, 4096, "%s", path);
    else cur_sha[0] = 0;
  }
  zmq_msg_t data;
  zmq_msg_init_size(&data, *fd >= 0 ? len : 0);
  if (*fd >= 0) {
    ssize_t got = pread(*fd, zmq_msg_data(&data), len, (off_t)off);
    if (got < 0) why = "read error";
    else if ((size_t)got < len) { /* the last chunk */
      zmq_msg_t shorter;
      zmq_msg_init_size(&shorter, (size_t)got);
      memcpy(zmq_msg_data(&shorter), zmq_msg_data(&data), (size_t)got);
      zmq_msg_close(&data);
      data = shorter;
    }
  }
  uint8_t ob[8];
  put_u64(ob, off);
  const char *status = why ? why : "ok";
  atomic_fetch_add(&s->bytes, why ? 0 : zmq_msg_size(&data));
  zmq_msg_send(&f[0], s->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(s->router, MAGIC, 4, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(s->router, status, strlen(status), ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(s->router, ob, 8, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_msg_send(&data, s->router, ZMQ_DONTWAIT);
  zmq_msg_close(&data);
  for (int i = 0; i < 6; i++) zmq_msg_close(&f[i]);
}

static void *server_main(void *arg) {
  fc_artifact_server_t *s = arg;
  int fd = -1;
  char cur_sha[65] = "", *cur_path = fc_xcalloc(1, 4096);
  while (!atomic_load(&s->stop)) {
    zmq_pollitem_t it[2] = {{s->router, 0, ZMQ_POLLIN, 0}, {s->zap ? fc_zap_socket(s->zap) : NULL, 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(it, s->zap ? 2 : 1, 200) < 0) continue;
    if (s->zap && (it[1].revents & ZMQ_POLLIN)) fc_zap_drain(s->zap);
    if (it[0].revents & ZMQ_POLLIN) serve_request(s, &fd, cur_sha, cur_path);
  }
  if (fd >= 0) close(fd);
  free(cur_path);
  return NULL;
}

/* A wildcard bind (tcp://STAR:P, tcp://0.0.0.0:P) is reachable under the host name. */
static void advertise(fc_artifact_server_t *s, const char *last) {
  const char *host = last + 6, *colon = strrchr(last, ':');
  if (strncmp(last, "tcp://", 6) || !colon) {
    snprintf(s->endpoint, sizeof s->endpoint, "%s", last);
    return;
  }
  if (!strncmp(host, "0.0.0.0:", 8) || !strncmp(host, "*:", 2) || !strncmp(host, "[::]:", 5)) {
    char name[256] = "localhost";
    gethostname(name, sizeof name - 1);
    snprintf(s->endpoint, sizeof s->endpoint, "tcp://%s%s", name, colon);
  } else {
    snprintf(s->endpoint, sizeof s->endpoint, "%s", last);
  }
}

int fc_artifact_server_start(fc_artifact_server_t **out, const char *bind, const fc_curve_t *curve, fc_err_t *err) {
  fc_artifact_server_t *s = fc_xcalloc(1, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  s->zctx = zmq_ctx_new();
  int rc = 0;
  if (curve && curve->enabled && (rc = fc_zap_start(s->zctx, NULL, "artifact server", &s->zap, err))) goto fail;
  s->router = zmq_socket(s->zctx, ZMQ_ROUTER);
  int linger = 0, hwm = 4 * FC_ARTIFACT_CREDIT * 16;
  zmq_setsockopt(s->router, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if ((rc = fc_curve_apply_server(s->router, curve, err))) goto fail;
  if (zmq_bind(s->router, bind) != 0) {
    rc = fc_err_set(err, FC_EINVAL, "artifact server: cannot bind %s: %s", bind, zmq_strerror(zmq_errno()));
    goto fail;
  }
  char last[300];
  size_t ln = sizeof last;
  zmq_getsockopt(s->router, ZMQ_LAST_ENDPOINT, last, &ln);
  advertise(s, last);
  if (pthread_create(&s->thread, NULL, server_main, s) != 0) {
    rc = fc_err_set(err, FC_EIO, "artifact server: cannot start its thread");
    goto fail;
  }
  *out = s;
  return 0;
fail:
  if (s->router) zmq_close(s->router);
  fc_zap_stop(&s->zap);
  zmq_ctx_term(s->zctx);
  pthread_mutex_destroy(&s->mu);
  free(s);
  return rc;
}

const char *fc_artifact_server_endpoint(const fc_artifact_server_t *s) { return s->endpoint; }

void fc_artifact_server_set_store(fc_artifact_server_t *s, const fc_store_t *store) {
  pthread_mutex_lock(&s->mu);
  s->store = *store;
  pthread_mutex_unlock(&s->mu);
}

void fc_artifact_server_allow(fc_artifact_server_t *s, char (*keys)[41], size_t n) {
  fc_curve_allow_t a = {.keys = keys, .n = n};
  if (s->zap) fc_zap_allow(s->zap, &a); /* without CURVE there is nothing to check */
}

void fc_artifact_server_known(fc_artifact_server_t *s, const char *local_path, const char *sha256) {
  if (!s) return;
  char real[PATH_MAX];
  struct stat st;
  if (!realpath(local_path, real) || stat(real, &st) != 0) return;
  pthread_mutex_lock(&s->mu);
  size_t i;
  for (i = 0; i < s->nknown && strcmp(s->known[i].path, real); i++) {}
  if (i == s->nknown) {
    s->known = fc_xrealloc(s->known, (s->nknown + 1) * sizeof *s->known);
    s->known[s->nknown++].path = fc_xstrdup(real);
  }
  s->known[i].size = (uint64_t)st.st_size, s->known[i].mtime_ns = mtime_ns(&st);
  snprintf(s->known[i].sha, sizeof s->known[i].sha, "%s", sha256);
  pthread_mutex_unlock(&s->mu);
}

uint64_t fc_artifact_server_bytes(const fc_artifact_server_t *s) {
  return atomic_load(&((fc_artifact_server_t *)s)->bytes);
}

void fc_artifact_server_stop(fc_artifact_server_t **sp) {
  fc_artifact_server_t *s = *sp;
  if (!s) return;
  atomic_store(&s->stop, 1);
  pthread_join(s->thread, NULL);
  zmq_close(s->router);
  fc_zap_stop(&s->zap);
  zmq_ctx_term(s->zctx);
  for (size_t i = 0; i < s->nknown; i++) free(s->known[i].path);
  free(s->known);
  pthread_mutex_destroy(&s->mu);
  free(s);
  *sp = NULL;
}

/* ---- the fetcher ---- */

static int send_request(void *sock, const char *sha, const char *path, uint64_t off, uint32_t len) {
  uint8_t ob[8], lb[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24)};
  put_u64(ob, off);
  if (zmq_send(sock, MAGIC, 4, ZMQ_SNDMORE) < 0 || zmq_send(sock, sha, 64, ZMQ_SNDMORE) < 0 ||
      zmq_send(sock, path, strlen(path), ZMQ_SNDMORE) < 0 || zmq_send(sock, ob, 8, ZMQ_SNDMORE) < 0 ||
      zmq_send(sock, lb, 4, 0) < 0)
    return -1;
  return 0;
}

/* One download from one holder into fd (truncated first). */
static int download(const fc_artifact_src_t *src, const char *path, const char *sha256, uint64_t size, int fd,
                    const fc_curve_t *curve, fc_err_t *err) {
  void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
  int linger = 0, tmo = FC_ARTIFACT_TIMEOUT_MS, rc = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
  fc_curve_t c = {0};
  if (curve && curve->enabled) {
    c = *curve;
    snprintf(c.server_key, sizeof c.server_key, "%s", src->key);
  }
  fc_sha256_t h;
  fc_sha256_init(&h);
  uint64_t asked = 0, got = 0;
  int inflight = 0;
  if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot reset the temporary file: %s", strerror(errno));
    goto out;
  }
  if ((rc = fc_curve_apply_client(s, &c, err))) goto out;
  if (zmq_connect(s, src->endpoint) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot connect to %s: %s", src->endpoint, zmq_strerror(zmq_errno()));
    goto out;
  }
  while (got < size) {
    /* credit: keep FC_ARTIFACT_CREDIT chunk requests outstanding, one more per chunk received */
    while (inflight < FC_ARTIFACT_CREDIT && asked < size) {
      uint32_t len = size - asked < FC_ARTIFACT_CHUNK ? (uint32_t)(size - asked) : FC_ARTIFACT_CHUNK;
      if (send_request(s, sha256, path, asked, len) < 0) {
        rc = fc_err_set(err, FC_EIO, "%s does not answer (send: %s)", src->endpoint, zmq_strerror(zmq_errno()));
        goto out;
      }
      asked += len, inflight++;
    }
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, FC_ARTIFACT_TIMEOUT_MS) <= 0) {
      rc = fc_err_set(err, FC_EIO, "%s did not answer within %d s", src->endpoint, FC_ARTIFACT_TIMEOUT_MS / 1000);
      goto out;
    }
    zmq_msg_t f[4];
    int n = 0, more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, s, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
      more = zmq_msg_more(&m);
      if (n < 4) f[n++] = m;
      else zmq_msg_close(&m);
    }
    int bad = n != 4 || zmq_msg_size(&f[0]) != 4 || memcmp(zmq_msg_data(&f[0]), MAGIC, 4) || zmq_msg_size(&f[2]) != 8;
    if (!bad && (zmq_msg_size(&f[1]) != 2 || memcmp(zmq_msg_data(&f[1]), "ok", 2)))
      rc = fc_err_set(err, FC_ENOTFOUND, "%s: %.*s", src->endpoint, (int)zmq_msg_size(&f[1]), (char *)zmq_msg_data(&f[1]));
    else if (bad || get_u64(zmq_msg_data(&f[2])) != got ||
             zmq_msg_size(&f[3]) != (size - got < FC_ARTIFACT_CHUNK ? size - got : FC_ARTIFACT_CHUNK))
      rc = fc_err_set(err, FC_EFORMAT, "%s sent a malformed, short or out-of-order chunk", src->endpoint);
    else {
      const uint8_t *d = zmq_msg_data(&f[3]);
      size_t len = zmq_msg_size(&f[3]);
      fc_sha256_update(&h, d, len);
      for (size_t w = 0; w < len && rc == 0;) {
        ssize_t k = write(fd, d + w, len - w);
        if (k < 0 && errno != EINTR) rc = fc_err_set(err, FC_EIO, "write: %s", strerror(errno));
        if (k > 0) w += (size_t)k;
      }
      got += len, inflight--;
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
    if (rc) goto out;
  }
  uint8_t dig[32];
  char hex[65];
  fc_sha256_final(&h, dig);
  fc_sha256_hex(dig, hex);
  if (strcmp(hex, sha256))
    rc = fc_err_set(err, FC_EMISMATCH, "%s from %s has SHA-256 %s, not %s", path, src->endpoint, hex, sha256);
out:
  zmq_close(s);
  zmq_ctx_term(ctx);
  return rc;
}

int fc_artifact_fetch(const fc_artifact_src_t *srcs, size_t nsrc, const char *path, const char *sha256, uint64_t size,
                      const char *dest, const fc_curve_t *curve, uint64_t *fetched, fc_err_t *err) {
  if (fetched) *fetched = 0;
  char *dir = fc_xstrdup(dest), *slash = strrchr(dir, '/');
  if (slash && slash != dir) *slash = 0;
  int rc = slash ? fc_mkdir_p(dir, err) : 0;
  free(dir);
  if (rc) return rc;
  /* one download per file: whoever holds the lock fetches, the others then find the file */
  size_t dl = strlen(dest);
  char *lock = fc_xmalloc(dl + 32), *tmp = fc_xmalloc(dl + 64);
  snprintf(lock, dl + 32, "%s.tmp.fetch-lock", dest);
  snprintf(tmp, dl + 64, "%s.tmp.fetch-%ld", dest, (long)getpid());
  int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644), fd = -1;
  if (lfd < 0 || flock(lfd, LOCK_EX) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot lock %s: %s", lock, strerror(errno));
    goto out;
  }
  struct stat st;
  if (stat(dest, &st) == 0 && (uint64_t)st.st_size == size) goto out; /* another fetch finished it */
  fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = fc_err_set(err, FC_EIO, "cannot create %s: %s", tmp, strerror(errno));
    goto out;
  }
  rc = fc_err_set(err, FC_ENOTFOUND, "no daemon holds %s (its producer left and nobody has a copy)", path);
  char why[2048] = "";
  for (size_t i = 0; i < nsrc; i++) {
    fc_err_t e = {0};
    if ((rc = download(&srcs[i], path, sha256, size, fd, curve, &e)) == 0) break;
    size_t wl = strlen(why);
    snprintf(why + wl, sizeof why - wl, "%s%s", wl ? "; " : "", e.msg);
    rc = fc_err_set(err, rc, "cannot fetch %s: %s", path, why);
  }
  if (rc == 0 && (fsync(fd) != 0 || rename(tmp, dest) != 0))
    rc = fc_err_set(err, FC_EIO, "cannot rename %s to %s: %s", tmp, dest, strerror(errno));
  if (rc == 0 && fetched) *fetched = size;
out:
  if (fd >= 0) close(fd);
  if (rc) unlink(tmp);
  if (lfd >= 0) unlink(lock), close(lfd);
  free(lock), free(tmp);
  return rc;
}

/* The sources of one LOCATE entry. */
static size_t sources(json_t *a, fc_artifact_src_t **out) {
  json_t *hs = json_object_get(a, "holders"), *h;
  size_t i, n = 0;
  *out = fc_xcalloc(json_array_size(hs) + 1, sizeof **out);
  json_array_foreach(hs, i, h) {
    const char *ep = json_string_value(json_object_get(h, "endpoint")), *key = json_string_value(json_object_get(h, "key"));
    if (!ep || !*ep) continue;
    snprintf((*out)[n].endpoint, sizeof (*out)[n].endpoint, "%s", ep);
    snprintf((*out)[n].key, sizeof (*out)[n].key, "%s", key ? key : "");
    n++;
  }
  return n;
}

int fc_artifact_ensure(const char *endpoint, const fc_curve_t *curve, const fc_store_t *store, const char *worker_id,
                       int64_t job, char *const *inputs, size_t ninputs, fc_artifact_server_t *server,
                       uint64_t *fetched, fc_err_t *err) {
  if (fetched) *fetched = 0;
  if (!ninputs) return 0;
  fc_msg_t req = {.type = FC_MSG_LOCATE, .job = job}, rep;
  for (size_t i = 0; i < ninputs; i++) fc_msg_add_input(&req, inputs[i]);
  int rc = fc_net_call_curve(endpoint, curve, &req, &rep, LOCATE_TIMEOUT_MS, err);
  fc_msg_clear(&req);
  if (rc) return rc;
  if (!rep.ok) {
    rc = fc_err_set(err, FC_EIO, "locating artifacts: %s", rep.error ? rep.error : "refused");
    fc_msg_clear(&rep);
    return rc;
  }
  json_t *root = json_loads(rep.text ? rep.text : "{}", 0, NULL), *a;
  fc_msg_clear(&rep);
  fc_msg_t hold = {.type = FC_MSG_HOLDING};
  size_t i;
  json_array_foreach(json_object_get(root, "artifacts"), i, a) {
    const char *path = json_string_value(json_object_get(a, "path")), *sha = json_string_value(json_object_get(a, "sha256"));
    json_int_t size = json_integer_value(json_object_get(a, "size"));
    if (!path || !sha || strlen(sha) != 64 || size < 0) continue;
    char *local = fc_store_to_local(store, path);
    struct stat st;
    if (stat(local, &st) != 0 || (uint64_t)st.st_size != (uint64_t)size) {
      fc_artifact_src_t *src;
      size_t nsrc = sources(a, &src);
      uint64_t got = 0;
      double t0 = fc_now();
      rc = fc_artifact_fetch(src, nsrc, path, sha, (uint64_t)size, local, curve, &got, err);
      free(src);
      if (rc) {
        free(local);
        break;
      }
      if (got) {
        double dt = fc_now() - t0;
        fc_info("fetched %s (%.1f MB in %.2f s, %.0f MB/s)", path, got / 1e6, dt, dt > 0 ? got / 1e6 / dt : 0);
        if (fetched) *fetched += got;
      }
      fc_artifact_server_known(server, local, sha);
      fc_msg_add_artifact(&hold, path, (uint64_t)size, sha);
    }
    free(local);
  }
  json_decref(root);
  if (rc == 0 && worker_id && hold.narts) {
    fc_msg_set_str(&hold.id, worker_id);
    hold.bytes = fetched ? (int64_t)*fetched : 0;
    fc_err_t e;
    if (fc_net_call_curve(endpoint, curve, &hold, &rep, LOCATE_TIMEOUT_MS, &e) == 0) fc_msg_clear(&rep);
    else fc_warn("could not tell the coordinator what we hold now: %s", e.msg);
  }
  fc_msg_clear(&hold);
  return rc;
}
