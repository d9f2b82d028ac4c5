/* Small pieces every module needs: error reporting, logging, number formats, files, time,
 * seeded random numbers and progress lines. */
#ifndef FC_UTIL_H
#define FC_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Runtime failures return one of these (negative) with a message in an fc_err_t. */
enum {
  FC_OK = 0,
  FC_EIO = -1,       /* a file or socket could not be read or written */
  FC_EFORMAT = -2,   /* input is malformed: corrupt file, bad JSON, bad message */
  FC_ENOMEM = -3,    /* an allocation failed */
  FC_EINVAL = -4,    /* a value is out of range or inconsistent with another */
  FC_ENOTFOUND = -5, /* a named thing (tensor, file, key) does not exist */
  FC_EMISMATCH = -6, /* inputs that must agree (shapes, dtypes, vocabularies) do not */
  FC_ECANCEL = -7,   /* the work was cancelled */
  FC_EUNSUPPORTED = -8,
};

typedef struct fc_err {
  int code;       /* last FC_E* code, 0 when none */
  char msg[1024]; /* one line, ready to print */
} fc_err_t;

/* Records a message in err (which may be NULL) and returns code, so callers can write
 * `return fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));`. */
int fc_err_set(fc_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the message already in err with more context ("loading model: ..."). */
int fc_err_wrap(fc_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *fc_strerror(int code);

/* Allocation that cannot fail silently: out of memory is not a condition we recover from. */
void *fc_xmalloc(size_t n);
void *fc_xcalloc(size_t n, size_t size);
void *fc_xrealloc(void *p, size_t n);
char *fc_xstrdup(const char *s);

/* Structured one-line logs on stderr: `ts=... level=info comp=NAME msg="..."`. */
typedef enum { FC_LOG_DEBUG, FC_LOG_INFO, FC_LOG_WARN, FC_LOG_ERROR } fc_log_level_t;
void fc_log_set_level(fc_log_level_t level);
void fc_log_set_component(const char *comp);
void fc_log(fc_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fc_info(...) fc_log(FC_LOG_INFO, __VA_ARGS__)
#define fc_warn(...) fc_log(FC_LOG_WARN, __VA_ARGS__)
#define fc_debug(...) fc_log(FC_LOG_DEBUG, __VA_ARGS__)

/* IEEE half and bfloat16 (round to nearest even on the way down). */
float fc_f16_to_f32(uint16_t h);
uint16_t fc_f32_to_f16(float f);
float fc_bf16_to_f32(uint16_t h);
uint16_t fc_f32_to_bf16(float f);

/* A growable byte string, kept NUL-terminated (b is NULL until the first put). */
typedef struct fc_sbuf {
  char *b;
  size_t n, cap;
} fc_sbuf_t;
void fc_sbuf_put(fc_sbuf_t *s, const void *p, size_t n);

/* Little-endian integers in byte buffers (our binary file formats). */
static inline void fc_put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fc_put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t fc_get_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fc_get_le64(const uint8_t *p) {
  return (uint64_t)fc_get_le32(p) | (uint64_t)fc_get_le32(p + 4) << 32;
}

/* Monotonic seconds. */
double fc_now(void);

/* Whole file into a NUL-terminated buffer (the NUL is not counted in *len). */
int fc_read_file(const char *path, char **out, size_t *len, fc_err_t *err);

/* Atomic file creation: write to PATH.tmp.<pid>, then fc_atomic_commit fsyncs and renames over
 * PATH, so readers never see a half-written file and a killed writer leaves none behind. */
typedef struct fc_atomic_file {
  FILE *fp;
  char *path;
  char *tmp;
} fc_atomic_file_t;
int fc_atomic_open(fc_atomic_file_t *af, const char *path, fc_err_t *err);
int fc_atomic_commit(fc_atomic_file_t *af, fc_err_t *err);
void fc_atomic_abort(fc_atomic_file_t *af);
/* Writes text, then a newline unless it ends with one, to path atomically. */
int fc_write_text_file(const char *path, const char *text, fc_err_t *err);
int fc_mkdir_p(const char *path, fc_err_t *err);
int fc_copy_file(const char *src, const char *dst, fc_err_t *err);
int fc_path_exists(const char *path);
/* Joins a directory and a file name into a new string. */
char *fc_path_join(const char *dir, const char *name);

/* Deterministic random numbers: splitmix64 for seeding and counter-based draws (the same
 * value for the same (seed, index) whatever the thread split), xoshiro256** for streams. */
uint64_t fc_splitmix64(uint64_t x);
typedef struct fc_rng {
  uint64_t s[4];
} fc_rng_t;
void fc_rng_seed(fc_rng_t *r, uint64_t seed);
uint64_t fc_rng_u64(fc_rng_t *r);
double fc_rng_uniform(fc_rng_t *r); /* [0, 1) with 53 bits */
float fc_rng_normal(fc_rng_t *r);   /* standard normal (Box-Muller) */

/* Progress of long work (a stage): called now and then with the fraction done and a short
 * message; a non-zero return asks the work to stop, which then returns FC_ECANCEL. Daemons
 * forward it as heartbeats, fusectl draws it as a progress line. */
typedef int (*fc_progress_fn)(void *ctx, double fraction, const char *message);
/* What a progress callback returns besides 0 (go on) and 1 (stop cleanly, saving what can be
 * resumed): stop at once and write nothing more (a worker that lost its lease). */
#define FC_PROGRESS_ABORT 2

/* A progress line on stderr, redrawn in place on a terminal and every few seconds otherwise. */
typedef struct fc_progress {
  const char *label;
  double total;
  double t0, last_draw;
  int tty;
} fc_progress_t;
void fc_progress_start(fc_progress_t *p, const char *label, double total);
void fc_progress_update(fc_progress_t *p, double done, const char *extra);
void fc_progress_end(fc_progress_t *p, const char *extra);

#endif
