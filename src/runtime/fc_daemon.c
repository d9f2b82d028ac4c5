/* Shared stage-daemon entry: option parsing (shared + per-daemon table), --help, CURVE setup,
 * then the worker library. */
#include "fc_daemon.h"

#define _XOPEN_SOURCE 700
#include <assert.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fc_net.h"
#include "fc_num.h"

enum { OPT_RUN_DIR = 1000, OPT_ENDPOINT, OPT_ID, OPT_HEARTBEAT, OPT_FINISH, OPT_CURVE_KEY,
       OPT_CURVE_SERVER, OPT_VERBOSE, OPT_HELP, OPT_THREADS, OPT_OWN = 2000 };

static void usage(const fc_daemon_def_t *d, FILE *fp) {
  fprintf(fp, "Usage: %s [OPTIONS]\n\n", d->prog);
  fputs(d->description, fp);
  if (d->nopts) {
    fprintf(fp, "\n%s options:\n", d->prog);
    for (size_t i = 0; i < d->nopts; i++) {
      const fc_daemon_opt_t *o = &d->opts[i];
      char head[128], help[512];
      snprintf(head, sizeof head, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
      const fc_param_t *p = o->param ? fc_schema_param(fc_schema_find(o->kind), o->param) : NULL;
      if (p) { /* from the schema, so the daemon, the job reference and fusectl agree */
        char def[64], range[160];
        fc_schema_format_default(p, def, sizeof def), fc_schema_format_range(p, range, sizeof range);
        snprintf(help, sizeof help, "%s, for %s tasks that do not give %s\n(default %s; %s)", p->help, o->kind,
                 p->key, def, range);
      } else {
        snprintf(help, sizeof help, "%s", o->help);
      }
      /* help lines after the first are indented to the help column */
      fprintf(fp, "  %-20s ", head);
      for (const char *s = help; *s; s++) {
        fputc(*s, fp);
        if (*s == '\n' && s[1]) fprintf(fp, "  %-20s ", "");
      }
      if (o->required) fputs(" (required)", fp);
      fputc('\n', fp);
    }
  }
  fputs("\nCommon options:\n"
        "  --run-dir DIR        run directory holding the coordinator's ipc:// endpoint (default\n"
        "                       $FUSECHAT_RUN_DIR, $XDG_RUNTIME_DIR/fusechat or /tmp/fusechat-UID)\n"
        "  --endpoint URL       coordinator endpoint (default ipc://RUN/coord.ipc)\n"
        "  --id ID              worker id, unique in the cluster (default HOST-PID)\n"
        "  --heartbeat SEC      seconds between heartbeats (default 1)\n"
        "  --threads N          compute threads (default: the online cores)\n"
        "  --finish-on-term     on SIGTERM finish the running task instead of handing it back\n"
        "  --curve-key FILE     our CURVE key file (fusectl keygen), for a tcp:// coordinator\n"
        "  --curve-server FILE  the coordinator's public key (.pub), with --curve-key\n"
        "  --verbose            debug logging\n"
        "  --help               this text\n",
        fp);
  if (d->extra_help) fprintf(fp, "\n%s", d->extra_help);
  fputs("\nLogs go to stderr as one record per line (ts=... level=... comp=... msg=\"...\"). The\n"
        "daemon tells systemd READY=1 once connected (Type=notify). SIGTERM hands the running task\n"
        "back to the coordinator (or finishes it, --finish-on-term) and exits 0.\n"
        "Exit status: 0 clean stop, 1 runtime failure, 2 bad usage.\n",
        fp);
}

static int bad(const fc_daemon_def_t *d, const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", d->prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry '%s --help'.\n", d->prog);
  return 2;
}

int fc_daemon_main(int argc, char **argv, const fc_daemon_def_t *def) {
  static const struct option common[] = {
      {"run-dir", required_argument, 0, OPT_RUN_DIR}, {"endpoint", required_argument, 0, OPT_ENDPOINT},
      {"id", required_argument, 0, OPT_ID}, {"heartbeat", required_argument, 0, OPT_HEARTBEAT},
      {"finish-on-term", no_argument, 0, OPT_FINISH}, {"verbose", no_argument, 0, OPT_VERBOSE},
      {"curve-key", required_argument, 0, OPT_CURVE_KEY}, {"curve-server", required_argument, 0, OPT_CURVE_SERVER},
      {"threads", required_argument, 0, OPT_THREADS}, {"help", no_argument, 0, OPT_HELP}};
  size_t nc = sizeof common / sizeof *common;
  struct option *opts = fc_xcalloc(nc + def->nopts + 1, sizeof *opts);
  memcpy(opts, common, sizeof common);
  for (size_t i = 0; i < def->nopts; i++)
    opts[nc + i] = (struct option){def->opts[i].name, def->opts[i].arg ? required_argument : no_argument, 0,
                                   OPT_OWN + (int)i};
  const char *rd = NULL, *ep = NULL, *id = NULL, *ck = NULL, *cs = NULL;
  double hb = 1;
  long threads = sysconf(_SC_NPROCESSORS_ONLN);
  int finish = 0, c, rc = 0;
  int *seen = fc_xcalloc(def->nopts + 1, sizeof *seen);
  for (size_t i = 0; i < def->nopts; i++)
    if (def->opts[i].param) {
      assert(def->opts[i].dest && fc_schema_param(fc_schema_find(def->opts[i].kind), def->opts[i].param));
      fc_schema_defaults(fc_schema_find(def->opts[i].kind), def->opts[i].dest);
    }
  opterr = 0;
  fc_err_t nerr = {0};
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case OPT_RUN_DIR: rd = optarg; break;
    case OPT_ENDPOINT: ep = optarg; break;
    case OPT_ID: id = optarg; break;
    case OPT_HEARTBEAT:
      if (fc_num_double(optarg, 0.01, 3600, &hb, "--heartbeat", &nerr)) {
        rc = bad(def, "%s", nerr.msg);
        goto out;
      }
      break;
    case OPT_THREADS:
      if (fc_num_long(optarg, 1, 4096, &threads, "--threads", &nerr)) {
        rc = bad(def, "%s", nerr.msg);
        goto out;
      }
      break;
    case OPT_FINISH: finish = 1; break;
    case OPT_VERBOSE: fc_log_set_level(FC_LOG_DEBUG); break;
    case OPT_CURVE_KEY: ck = optarg; break;
    case OPT_CURVE_SERVER: cs = optarg; break;
    case 'h':
    case OPT_HELP: usage(def, stdout); goto out;
    default:
      if (c >= OPT_OWN && c < OPT_OWN + (int)def->nopts) {
        const fc_daemon_opt_t *o = &def->opts[c - OPT_OWN];
        if (o->param) {
          char what[80];
          fc_err_t e = {0};
          snprintf(what, sizeof what, "--%s", o->name);
          if (fc_schema_set(fc_schema_param(fc_schema_find(o->kind), o->param), optarg, what, o->dest, &e)) {
            rc = bad(def, "%s", e.msg);
            goto out;
          }
        } else {
          *o->value = o->arg ? optarg : "1";
        }
        seen[c - OPT_OWN] = 1;
        break;
      }
      rc = bad(def, "unknown option or missing argument: '%s'", argv[optind - 1]);
      goto out;
    }
  }
  if (optind < argc) {
    rc = bad(def, "unexpected argument '%s'", argv[optind]);
    goto out;
  }
  for (size_t i = 0; i < def->nopts; i++)
    if (def->opts[i].required && !seen[i] && !*def->opts[i].value) {
      rc = bad(def, "--%s is required", def->opts[i].name);
      goto out;
    }
  fc_log_set_component(def->component);
  char endpoint[600];
  if (ep) snprintf(endpoint, sizeof endpoint, "%s", ep);
  else fc_net_default_endpoint(rd, endpoint, sizeof endpoint);
  fc_err_t err = {0};
  fc_curve_t curve;
  if (fc_curve_client_files(ck, cs, &curve, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    rc = 2;
    goto out;
  }
  fc_worker_opts_t o = {.endpoint = endpoint, .id = id, .heartbeat = hb, .finish_on_sigterm = finish,
                        .threads = (int)threads, .execs = def->execs, .nexecs = def->nexecs, .curve = &curve};
  fc_daemon_ctx_t dctx = {.endpoint = endpoint, .id = id, .threads = (int)threads, .curve = &curve};
  if (def->setup) {
    int src = def->setup(&dctx, &o.execs, &o.nexecs, &err);
    if (src) {
      if (src == FC_EINVAL) rc = bad(def, "%s", err.msg);
      else fc_log(FC_LOG_ERROR, "%s", err.msg), rc = 1;
      goto out;
    }
  }
  if (!o.nexecs) {
    fc_log(FC_LOG_ERROR, "no task kinds to serve");
    rc = 1;
    goto teardown;
  }
  if (fc_worker_run(&o, &err)) {
    fc_log(FC_LOG_ERROR, "%s", err.msg);
    rc = 1;
  }
teardown:
  if (def->teardown) def->teardown();
out:
  free(opts);
  free(seen);
  return rc;
}

int fc_daemon_progress(void *ctx, double fraction, const char *message) {
  fc_daemon_progress_t *p = ctx;
  if (fraction < 0) fraction = 0;
  if (fraction > 1) fraction = 1;
  fc_task_progress(p->task, p->from + (p->to - p->from) * fraction, "%s%s%s", p->stage ? p->stage : "",
                   p->stage && message && *message ? ": " : "", message ? message : "");
  /* the engine may checkpoint after this returns: only while the lease is ours */
  if (!fc_task_fence(p->task)) return FC_PROGRESS_ABORT;
  return fc_task_cancelled(p->task) ? 1 : 0;
}

int fc_daemon_task_params(const fc_task_t *t, const void *defaults, void *out, fc_err_t *err) {
  const fc_task_schema_t *s = fc_schema_find(t->kind);
  if (!s) return fc_err_set(err, FC_EINVAL, "no parameter table for task kind '%s'", t->kind);
  if (defaults) memcpy(out, defaults, s->size);
  else fc_schema_defaults(s, out);
  return fc_schema_apply(s, t->params, t->nparams, out, err);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)ftw;
  return (flag == FTW_DP ? rmdir(p) : unlink(p)) && errno != ENOENT ? -1 : 0;
}

int fc_rmtree(const char *path, fc_err_t *err) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : fc_err_set(err, FC_EIO, "%s: %s", path, strerror(errno));
  if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return fc_err_set(err, FC_EIO, "cannot remove %s: %s", path, strerror(errno));
  return 0;
}

char *fc_outdir_begin(const char *dir, fc_err_t *err) {
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/') n--;
  char *tmp = fc_xcalloc(n + 8, 1);
  memcpy(tmp, dir, n);
  memcpy(tmp + n, ".tmp", 5);
  if (fc_rmtree(tmp, err) || fc_mkdir_p(tmp, err)) {
    free(tmp);
    return NULL;
  }
  return tmp;
}

int fc_outdir_commit(const char *tmp, const char *dir, fc_err_t *err) {
  fc_task_ctx_t *task = fc_task_current();
  if (task && !fc_task_fence(task)) { /* a superseded attempt must not replace the output */
    fc_rmtree(tmp, err);
    return fc_err_set(err, FC_ECANCEL, "the lease is gone: not replacing %s", dir);
  }
  /* rename() cannot replace a non-empty directory: move the old one aside first */
  struct stat st;
  if (stat(dir, &st) == 0) {
    char *old = fc_xcalloc(strlen(dir) + 8, 1);
    sprintf(old, "%s.old", dir);
    int rc = fc_rmtree(old, err);
    if (!rc && rename(dir, old) != 0) rc = fc_err_set(err, FC_EIO, "rename %s: %s", dir, strerror(errno));
    if (!rc && rename(tmp, dir) != 0) rc = fc_err_set(err, FC_EIO, "rename %s -> %s: %s", tmp, dir, strerror(errno));
    if (!rc) rc = fc_rmtree(old, err);
    free(old);
    return rc;
  }
  if (rename(tmp, dir) != 0) return fc_err_set(err, FC_EIO, "rename %s -> %s: %s", tmp, dir, strerror(errno));
  return 0;
}
