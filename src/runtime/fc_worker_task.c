/* What an executor sees of the worker library (see fc_worker.h): its context (progress,
 * figures, cancel, the lease fence), its parameters, its attempt's work directory, the
 * artifacts of its outputs, and the two test executors. The daemon that leases and runs
 * tasks is fc_worker.c. */
#include "fc_worker_impl.h"

#include <errno.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fc_daemon.h"
#include "fc_sha256.h"

/* ---- the task's context ---- */

bool fc_task_fence(fc_task_ctx_t *ctx) {
  pthread_mutex_lock(&ctx->mu);
  double t0 = fc_now();
  while (!atomic_load(&ctx->lost) && fc_now() > ctx->valid_until) {
    if (atomic_load(&ctx->leaving) && fc_now() - t0 > 2) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&ctx->cv, &ctx->mu, &ts);
  }
  bool ok = !atomic_load(&ctx->lost) && fc_now() <= ctx->valid_until;
  pthread_mutex_unlock(&ctx->mu);
  return ok;
}

void fc_task_progress(fc_task_ctx_t *ctx, double fraction, const char *fmt, ...) {
  pthread_mutex_lock(&ctx->mu);
  ctx->fraction = fraction;
  ctx->progressed = fc_now();
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&ctx->mu);
}

void fc_task_figure(fc_task_ctx_t *ctx, const char *name, double value) {
  pthread_mutex_lock(&ctx->mu);
  size_t i;
  for (i = 0; i < ctx->nfigs; i++)
    if (!strcmp(ctx->figs[i].name, name)) break;
  if (i == ctx->nfigs && i < sizeof ctx->figs / sizeof ctx->figs[0]) ctx->figs[ctx->nfigs++].name = fc_xstrdup(name);
  if (i < ctx->nfigs) ctx->figs[i].val = value;
  ctx->progressed = fc_now();
  pthread_mutex_unlock(&ctx->mu);
}

bool fc_task_cancelled(const fc_task_ctx_t *ctx) { return atomic_load(&((fc_task_ctx_t *)ctx)->cancel) != 0; }

const char *fc_task_param(const fc_task_t *t, const char *key) {
  for (size_t i = 0; i < t->nparams; i++)
    if (!strcmp(t->params[i].key, key)) return t->params[i].val;
  return NULL;
}

/* ---- artifacts ---- */

/* Adds path (a file, or every regular file below a directory, in name order) to result.
 * Temp files of writers in progress are skipped. */
static int add_artifacts(const char *path, fc_msg_t *result, int depth, fc_err_t *err) {
  struct stat st;
  if (lstat(path, &st) != 0) return fc_err_set(err, FC_EIO, "cannot stat %s: %s", path, strerror(errno));
  if (S_ISREG(st.st_mode)) {
    if (strstr(path, ".tmp.")) return 0;
    char hex[65];
    uint64_t size;
    int rc = fc_sha256_file(path, hex, &size, err);
    if (rc == 0) fc_msg_add_artifact(result, path, size, hex);
    return rc;
  }
  if (!S_ISDIR(st.st_mode) || depth > 16) return 0;
  struct dirent **names;
  int n = scandir(path, &names, NULL, alphasort);
  if (n < 0) return fc_err_set(err, FC_EIO, "cannot list %s: %s", path, strerror(errno));
  int rc = 0;
  for (int i = 0; i < n; i++) {
    if (rc == 0 && strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
      char *child = fc_path_join(path, names[i]->d_name);
      rc = add_artifacts(child, result, depth + 1, err);
      free(child);
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int fc_worker_artifacts(const fc_task_t *t, fc_msg_t *result, fc_err_t *err) {
  for (size_t i = 0; i < t->noutputs; i++) {
    struct stat st;
    if (stat(t->outputs[i], &st) != 0)
      return fc_err_set(err, FC_ENOTFOUND, "the %s executor did not write %s", t->kind, t->outputs[i]);
    int rc = add_artifacts(t->outputs[i], result, 0, err);
    if (rc) return rc;
  }
  return 0;
}

/* ---- attempts' work directories ---- */

/* OUT0.work: the parent of every attempt's work directory. */
char *fc_worker_work_parent(const fc_task_t *t) {
  if (!t->noutputs) return NULL;
  size_t n = strlen(t->outputs[0]);
  while (n > 1 && t->outputs[0][n - 1] == '/') n--;
  char *p = fc_xcalloc(n + 8, 1);
  memcpy(p, t->outputs[0], n);
  memcpy(p + n, ".work", 6);
  return p;
}

int fc_task_adopt_work(const fc_task_t *t, fc_err_t *err) {
  char *parent = fc_worker_work_parent(t);
  if (!parent) return 0;
  struct dirent **names;
  int n = scandir(parent, &names, NULL, alphasort), rc = 0;
  long best = 0;
  for (int i = 0; i < n; i++) {
    char *end;
    long k = strtol(names[i]->d_name, &end, 10);
    if (!*end && k > best && k < t->attempt) best = k;
  }
  for (int i = 0; i < n; i++) {
    char *end;
    long k = strtol(names[i]->d_name, &end, 10);
    if (!*end && k > 0 && k < t->attempt) {
      char *p = fc_path_join(parent, names[i]->d_name);
      if (k == best && !fc_path_exists(t->work_dir)) {
        if (rename(p, t->work_dir) != 0) rc = fc_err_set(err, FC_EIO, "rename %s: %s", p, strerror(errno));
        else fc_log_at(FC_LOG_INFO, t->job, t->id, NULL, "attempt %lld continues the work of attempt %ld",
                       (long long)t->attempt, k);
      } else if (!rc) {
        rc = fc_rmtree(p, err);
      }
      free(p);
    }
    free(names[i]);
  }
  if (n >= 0) free(names);
  free(parent);
  return rc;
}

/* ---- test executors ---- */

/* Sleeps ms milliseconds in small steps, reporting progress and watching for cancel. */
/* With param silent=1 it reports no progress, as a wedged executor would. */
static int nap(const fc_task_t *t, fc_task_ctx_t *ctx, double from, double to, fc_err_t *err) {
  const char *s = fc_task_param(t, "ms"), *silent = fc_task_param(t, "silent");
  long ms = s ? atol(s) : 100;
  for (long done = 0; done < ms; done += 10) {
    if (fc_task_cancelled(ctx)) return fc_err_set(err, FC_ECANCEL, "cancelled");
    if (!silent || strcmp(silent, "1")) fc_task_progress(ctx, from + (to - from) * (double)done / (double)ms, "sleeping %ld/%ld ms", done, ms);
    usleep(10000);
  }
  return 0;
}

static int maybe_fail(const fc_task_t *t, fc_err_t *err) {
  const char *f = fc_task_param(t, "fail");
  if (f && !strcmp(f, "1")) return fc_err_set(err, FC_EINVAL, "failing as asked (param fail=1)");
  return 0;
}

/* With param checkpoint=1 the sleep leaves a checkpoint-N file in its work directory every
 * 100 ms, as a trainer would: fenced, so a superseded attempt adds none. */
static int run_sleep(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  const char *ck = fc_task_param(t, "checkpoint");
  int rc = 0;
  if (ck && !strcmp(ck, "1") && t->work_dir) {
    if ((rc = fc_task_adopt_work(t, err)) || (rc = fc_mkdir_p(t->work_dir, err))) return rc;
    const char *s = fc_task_param(t, "ms");
    long ms = s ? atol(s) : 100;
    for (long done = 0; done < ms; done += 100) {
      if (!fc_task_fence(ctx)) return fc_err_set(err, FC_ECANCEL, "the lease is gone");
      if (fc_task_cancelled(ctx)) return fc_err_set(err, FC_ECANCEL, "cancelled");
      char name[64];
      snprintf(name, sizeof name, "checkpoint-%ld", done / 100);
      char *p = fc_path_join(t->work_dir, name);
      fc_atomic_file_t af;
      if (!(rc = fc_atomic_open(&af, p, err))) {
        fprintf(af.fp, "step %ld\n", done);
        rc = fc_atomic_commit(&af, err);
      }
      free(p);
      if (rc) return rc;
      fc_task_progress(ctx, (double)done / (double)ms, "step %ld/%ld ms", done, ms);
      usleep(100000);
    }
  } else {
    rc = nap(t, ctx, 0, 1, err);
  }
  if (rc || (rc = maybe_fail(t, err))) return rc;
  if (!fc_task_fence(ctx)) return fc_err_set(err, FC_ECANCEL, "the lease is gone");
  const char *size = fc_task_param(t, "size"); /* a sparse output this long: slow to hash */
  for (size_t i = 0; i < t->noutputs; i++) {
    fc_atomic_file_t af;
    if ((rc = fc_atomic_open(&af, t->outputs[i], err))) return rc;
    fprintf(af.fp, "sleep %s ms\n", fc_task_param(t, "ms") ? fc_task_param(t, "ms") : "100");
    fflush(af.fp);
    if (size && ftruncate(fileno(af.fp), (off_t)atoll(size)) != 0) {
      fc_atomic_abort(&af);
      return fc_err_set(err, FC_EIO, "cannot extend %s: %s", t->outputs[i], strerror(errno));
    }
    if ((rc = fc_atomic_commit(&af, err))) return rc;
  }
  return 0;
}

static int run_checksum(const fc_task_t *t, fc_task_ctx_t *ctx, fc_err_t *err) {
  if (t->noutputs < 1) return fc_err_set(err, FC_EINVAL, "checksum needs an output");
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, t->outputs[0], err);
  if (rc) return rc;
  for (size_t i = 0; i < t->ninputs; i++) {
    char hex[65];
    uint64_t size;
    if ((rc = fc_sha256_file(t->inputs[i], hex, &size, err))) goto fail;
    fprintf(af.fp, "%s\n", hex);
    fc_task_figure(ctx, "bytes", (double)size);
  }
  if ((rc = nap(t, ctx, 0.1, 1, err)) || (rc = maybe_fail(t, err))) goto fail;
  return fc_atomic_commit(&af, err);
fail:
  fc_atomic_abort(&af);
  return rc;
}

const fc_executor_t *fc_test_executors(size_t *n) {
  static const fc_executor_t ex[] = {{"sleep", NULL, run_sleep}, {"checksum", NULL, run_checksum}};
  *n = 2;
  return ex;
}
