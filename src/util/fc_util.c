/* Error reporting, logging, number formats, files, time, random numbers and progress lines. */
#include "fc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int fc_err_set(fc_err_t *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

int fc_err_wrap(fc_err_t *err, const char *fmt, ...) {
  if (!err) return FC_EINVAL;
  char prefix[512], old[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  /* Truncation is fine: the message stays one readable line. */
  size_t n = strlen(prefix);
  if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
  memcpy(err->msg, prefix, n);
  err->msg[n] = ':';
  err->msg[n + 1] = ' ';
  size_t room = sizeof err->msg - n - 3;
  size_t m = strnlen(old, room);
  memcpy(err->msg + n + 2, old, m);
  err->msg[n + 2 + m] = 0;
  return err->code;
}

const char *fc_strerror(int code) {
  switch (code) {
  case FC_OK: return "ok";
  case FC_EIO: return "I/O error";
  case FC_EFORMAT: return "malformed input";
  case FC_ENOMEM: return "out of memory";
  case FC_EINVAL: return "invalid value";
  case FC_ENOTFOUND: return "not found";
  case FC_EMISMATCH: return "mismatch";
  case FC_ECANCEL: return "cancelled";
  case FC_EUNSUPPORTED: return "unsupported";
  default: return "unknown error";
  }
}

static void oom(size_t n) {
  fprintf(stderr, "fusechat: out of memory allocating %zu bytes\n", n);
  abort();
}

void *fc_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *fc_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) oom(n * size);
  return p;
}

void *fc_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *fc_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = fc_xmalloc(n);
  memcpy(d, s, n);
  return d;
}

void fc_sbuf_put(fc_sbuf_t *s, const void *p, size_t n) {
  if (s->n + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    while (cap < s->n + n + 1) cap *= 2;
    s->b = fc_xrealloc(s->b, cap);
    s->cap = cap;
  }
  if (n) memcpy(s->b + s->n, p, n);
  s->n += n;
  s->b[s->n] = 0;
}

/* ---- logging ---- */

static fc_log_level_t g_log_level = FC_LOG_INFO;
static char g_log_comp[64] = "fusechat";

void fc_log_set_level(fc_log_level_t level) { g_log_level = level; }

void fc_log_set_component(const char *comp) {
  snprintf(g_log_comp, sizeof g_log_comp, "%s", comp);
}

/* One record: ts, level, comp, then job=/task=/worker= when given (0 or NULL: left out), then
 * the quoted message. A worker id with a space, quote or backslash is quoted like msg. */
static void vlog(fc_log_level_t level, int64_t job, int64_t task, const char *worker, const char *fmt, va_list ap) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  if (level < g_log_level) return;
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  /* Quote-escape so each record stays one parseable line. */
  char esc[4200], wesc[600] = "";
  size_t o = 0;
  for (const char *s = msg; *s && o + 3 < sizeof esc; s++) {
    if (*s == '"' || *s == '\\') esc[o++] = '\\', esc[o++] = *s;
    else if (*s == '\n') esc[o++] = '\\', esc[o++] = 'n';
    else esc[o++] = *s;
  }
  esc[o] = 0;
  char fields[800] = "";
  size_t fl = 0;
  if (job > 0) fl += (size_t)snprintf(fields + fl, sizeof fields - fl, " job=%lld", (long long)job);
  if (task > 0 && fl < sizeof fields) fl += (size_t)snprintf(fields + fl, sizeof fields - fl, " task=%lld", (long long)task);
  if (worker && *worker && fl < sizeof fields) {
    int plain = 1;
    o = 0;
    for (const char *s = worker; *s && o + 3 < sizeof wesc; s++) {
      if (*s == '"' || *s == '\\' || *s == ' ' || *s == '=' || *s == '\n') plain = 0;
      if (*s == '"' || *s == '\\') wesc[o++] = '\\';
      wesc[o++] = *s == '\n' ? ' ' : *s;
    }
    wesc[o] = 0;
    snprintf(fields + fl, sizeof fields - fl, plain ? " worker=%s" : " worker=\"%s\"", wesc);
  }
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char tbuf[32];
  strftime(tbuf, sizeof tbuf, "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(stderr, "ts=%s.%03ldZ level=%s comp=%s%s msg=\"%s\"\n", tbuf, ts.tv_nsec / 1000000L, names[level], g_log_comp,
          fields, esc);
}

void fc_log(fc_log_level_t level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, 0, 0, NULL, fmt, ap);
  va_end(ap);
}

void fc_log_at(fc_log_level_t level, int64_t job, int64_t task, const char *worker, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(level, job, task, worker, fmt, ap);
  va_end(ap);
}

/* ---- number formats ---- */

static inline uint32_t f2u(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline float u2f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

float fc_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return u2f(sign);
    /* subnormal: value = man * 2^-24 */
    float v = (float)man * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
  return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t fc_f32_to_f16(float f) {
  uint32_t u = f2u(f);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to infinity */
  if (a < 0x38800000u) {
    /* subnormal or zero in half: scale so the half ulp (2^-24) is 1, round to even */
    float v = u2f(a) * 16777216.0f;
    uint32_t r = (uint32_t)lrintf(v);
    return (uint16_t)(sign | r);
  }
  uint32_t man = a & 0x7fffff;
  uint32_t exp = (a >> 23) - 112;
  uint32_t h = (exp << 10) | (man >> 13);
  uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

float fc_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t fc_f32_to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

double fc_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- files ---- */

int fc_read_file(const char *path, char **out, size_t *len, fc_err_t *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = fc_xmalloc(cap);
  for (;;) {
    if (n + 1 >= cap) buf = fc_xrealloc(buf, cap *= 2);
    size_t r = fread(buf + n, 1, cap - n - 1, fp);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(fp);
  fclose(fp);
  if (bad) {
    free(buf);
    return fc_err_set(err, FC_EIO, "cannot read %s", path);
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return 0;
}

int fc_atomic_open(fc_atomic_file_t *af, const char *path, fc_err_t *err) {
  size_t n = strlen(path) + 32;
  af->path = fc_xstrdup(path);
  af->tmp = fc_xmalloc(n);
  snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
  af->fp = fopen(af->tmp, "wb");
  if (!af->fp) {
    int rc = fc_err_set(err, FC_EIO, "cannot create %s: %s", af->tmp, strerror(errno));
    free(af->path);
    free(af->tmp);
    af->path = af->tmp = NULL;
    return rc;
  }
  return 0;
}

int fc_atomic_commit(fc_atomic_file_t *af, fc_err_t *err) {
  int rc = 0;
  if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0)
    rc = fc_err_set(err, FC_EIO, "cannot write %s: %s", af->tmp, strerror(errno));
  if (fclose(af->fp) != 0 && rc == 0)
    rc = fc_err_set(err, FC_EIO, "cannot write %s: %s", af->tmp, strerror(errno));
  af->fp = NULL;
  if (rc == 0 && rename(af->tmp, af->path) != 0)
    rc = fc_err_set(err, FC_EIO, "cannot rename %s to %s: %s", af->tmp, af->path, strerror(errno));
  if (rc != 0) unlink(af->tmp);
  free(af->path);
  free(af->tmp);
  af->path = af->tmp = NULL;
  return rc;
}

void fc_atomic_abort(fc_atomic_file_t *af) {
  if (af->fp) fclose(af->fp);
  if (af->tmp) unlink(af->tmp);
  free(af->path);
  free(af->tmp);
  af->fp = NULL;
  af->path = af->tmp = NULL;
}

int fc_write_text_file(const char *path, const char *text, fc_err_t *err) {
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc) return rc;
  size_t n = strlen(text);
  if (fwrite(text, 1, n, af.fp) != n || ((n == 0 || text[n - 1] != '\n') && fputc('\n', af.fp) == EOF)) {
    fc_atomic_abort(&af);
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", path, strerror(errno));
  }
  return fc_atomic_commit(&af, err);
}

int fc_mkdir_p(const char *path, fc_err_t *err) {
  char *p = fc_xstrdup(path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      int rc = fc_err_set(err, FC_EIO, "cannot create directory %s: %s", p, strerror(errno));
      free(p);
      return rc;
    }
    *s = '/';
  }
  int rc = 0;
  if (mkdir(p, 0755) != 0 && errno != EEXIST)
    rc = fc_err_set(err, FC_EIO, "cannot create directory %s: %s", p, strerror(errno));
  free(p);
  return rc;
}

int fc_copy_file(const char *src, const char *dst, fc_err_t *err) {
  FILE *in = fopen(src, "rb");
  if (!in) return fc_err_set(err, FC_EIO, "cannot open %s: %s", src, strerror(errno));
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, dst, err);
  if (rc) {
    fclose(in);
    return rc;
  }
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
    if (fwrite(buf, 1, n, af.fp) != n) {
      fclose(in);
      fc_atomic_abort(&af);
      return fc_err_set(err, FC_EIO, "cannot write %s", dst);
    }
  }
  int bad = ferror(in);
  fclose(in);
  if (bad) {
    fc_atomic_abort(&af);
    return fc_err_set(err, FC_EIO, "cannot read %s", src);
  }
  return fc_atomic_commit(&af, err);
}

int fc_path_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

char *fc_path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = fc_xmalloc(n);
  if (dir[0] && dir[strlen(dir) - 1] == '/') snprintf(p, n, "%s%s", dir, name);
  else snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* ---- random numbers ---- */

uint64_t fc_splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void fc_rng_seed(fc_rng_t *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) {
    x = fc_splitmix64(x);
    r->s[i] = x;
  }
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t fc_rng_u64(fc_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return res;
}

double fc_rng_uniform(fc_rng_t *r) { return (double)(fc_rng_u64(r) >> 11) * 0x1.0p-53; }

float fc_rng_normal(fc_rng_t *r) {
  double u1 = fc_rng_uniform(r), u2 = fc_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ---- progress ---- */

void fc_progress_start(fc_progress_t *p, const char *label, double total) {
  p->label = label;
  p->total = total;
  p->t0 = p->last_draw = fc_now();
  p->tty = isatty(2);
}

static void fmt_eta(char *buf, size_t n, double s) {
  if (s < 0 || s > 1e7) snprintf(buf, n, "--:--");
  else if (s >= 3600) snprintf(buf, n, "%d:%02d:%02d", (int)s / 3600, ((int)s / 60) % 60, (int)s % 60);
  else snprintf(buf, n, "%02d:%02d", (int)s / 60, (int)s % 60);
}

void fc_progress_update(fc_progress_t *p, double done, const char *extra) {
  double now = fc_now();
  if (now - p->last_draw < (p->tty ? 0.2 : 5.0)) return;
  p->last_draw = now;
  double frac = p->total > 0 ? done / p->total : 0;
  if (frac > 1) frac = 1;
  double el = now - p->t0;
  char eta[32];
  fmt_eta(eta, sizeof eta, frac > 0 ? el * (1 - frac) / frac : -1);
  char bar[31];
  int fill = (int)(frac * 30);
  for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
  bar[30] = 0;
  fprintf(stderr, "%s%s [%s] %5.1f%% ETA %s %s%s", p->tty ? "\r" : "", p->label, bar, frac * 100,
          eta, extra ? extra : "", p->tty ? "\033[K" : "\n");
}

void fc_progress_end(fc_progress_t *p, const char *extra) {
  double el = fc_now() - p->t0;
  fprintf(stderr, "%s%s done in %.1fs %s%s\n", p->tty ? "\r" : "", p->label, el,
          extra ? extra : "", p->tty ? "\033[K" : "");
}
