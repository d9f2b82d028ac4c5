/* fusectl up's machinery, shared with fusectl run: finding the daemon binaries, starting them
 * detached with logs and pid files, and the YAML config of what to start. */
#include "up.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fc_net.h"
#include "fc_schema.h"
#include "fc_yaml.h"

void fc_up_plan_init(fc_up_plan_t *p) {
  memset(p, 0, sizeof *p);
  p->lease_timeout = 10;
  p->heartbeat = 1;
}

void fc_up_plan_free(fc_up_plan_t *p) {
  for (size_t i = 0; i < p->n; i++)
    for (int k = 0; p->d[i].args[k]; k++) free(p->d[i].args[k]);
  free(p->d);
  memset(p, 0, sizeof *p);
}

static void add_one(fc_up_plan_t *p, const char *prog, const char *name, char *const *extra, int nextra) {
  p->d = fc_xrealloc(p->d, (p->n + 1) * sizeof *p->d);
  fc_up_daemon_t *d = &p->d[p->n++];
  memset(d, 0, sizeof *d);
  snprintf(d->prog, sizeof d->prog, "%s", prog);
  snprintf(d->name, sizeof d->name, "%s", name);
  for (int k = 0; k < nextra && k < FC_UP_MAX_ARGS - 1; k++) d->args[k] = fc_xstrdup(extra[k]);
}

void fc_up_plan_add(fc_up_plan_t *p, const char *prog, const char *tag, int count, ...) {
  char *extra[FC_UP_MAX_ARGS];
  int n = 0;
  va_list ap;
  va_start(ap, count);
  for (char *a; (a = va_arg(ap, char *)) && n < FC_UP_MAX_ARGS - 1;) extra[n++] = a;
  va_end(ap);
  for (int i = 0; i < count; i++) {
    char name[96];
    snprintf(name, sizeof name, "%s%s%s-%d", prog, tag ? "-" : "", tag ? tag : "", i + 1);
    add_one(p, prog, name, extra, n);
  }
}

/* ---- config ---- */

/* The daemons the schema names for the task kinds, and the test daemon. */
static int daemon_known(const char *type, char *list, size_t n) {
  size_t ns, len = (size_t)snprintf(list, n, "worker-test");
  const fc_task_schema_t *all = fc_schema_all(&ns);
  int found = !strcmp(type ? type : "", "worker-test");
  for (size_t i = 0; i < ns; i++) {
    if (!strcmp(all[i].daemon, "coordinator")) continue;
    int dup = 0;
    for (size_t k = 0; k < i; k++) dup |= !strcmp(all[k].daemon, all[i].daemon);
    if (dup) continue;
    found |= type && !strcmp(type, all[i].daemon);
    if (len < n) len += (size_t)snprintf(list + len, n - len, ", %s", all[i].daemon);
  }
  return found;
}

static const char *const DAEMON_KEYS[] = {"type", "model", "name", "threads", "serve", "count", NULL};

/* One entry of daemons: (type, count, model, name, threads, serve) into count plan entries. */
static int load_daemon(fc_up_plan_t *p, const fc_yaml_node_t *d, const char *run_dir, fc_err_t *err) {
  if (d->kind != FC_YAML_MAP) return fc_yaml_error(d, err, "a daemon must be a mapping");
  int rc = fc_yaml_check_keys(d, "a daemon", DAEMON_KEYS, err);
  for (size_t i = 0; i < d->n && !rc; i++)
    if (d->item[i]->kind != FC_YAML_SCALAR) rc = fc_yaml_error(d->item[i], err, "'%s' must be a plain value", d->key[i]);
  if (rc) return rc;
  const char *type = fc_yaml_str(fc_yaml_get(d, "type")), *model = fc_yaml_str(fc_yaml_get(d, "model"));
  const char *name = fc_yaml_str(fc_yaml_get(d, "name")), *threads = NULL;
  long count = 1, nthreads;
  int serve = 0;
  const fc_yaml_node_t *v;
  if ((v = fc_yaml_get(d, "count")) && (rc = fc_yaml_long(v, "count", 0, 64, &count, err))) return rc;
  if ((v = fc_yaml_get(d, "serve")) && (rc = fc_yaml_bool(v, "serve", &serve, err))) return rc;
  if ((v = fc_yaml_get(d, "threads"))) {
    if ((rc = fc_yaml_long(v, "threads", 1, 4096, &nthreads, err))) return rc;
    threads = v->str;
  }
  char types[256];
  if (!daemon_known(type, types, sizeof types)) return fc_yaml_error(d, err, "a daemon needs a type: %s", types);
  int logits = !strcmp(type, "logits");
  if (logits && (!model || !name)) return fc_yaml_error(d, err, "a logits daemon needs model and name");
  if (!logits && (model || name || serve)) return fc_yaml_error(d, err, "model, name and serve are for logits daemons");
  for (long i = 0; i < count; i++) {
    char nm[96], ep[600];
    snprintf(nm, sizeof nm, "%s%s%s-%ld", type, logits ? "-" : "", logits ? name : "", i + 1);
    char *extra[FC_UP_MAX_ARGS];
    int ne = 0;
    if (logits) {
      extra[ne++] = "--model", extra[ne++] = (char *)model, extra[ne++] = "--name", extra[ne++] = (char *)name;
      if (serve && i == 0) { /* one direct socket per model */
        snprintf(ep, sizeof ep, "ipc://%s/logits-%s.ipc", run_dir, name);
        extra[ne++] = "--serve", extra[ne++] = ep;
      }
    }
    if (threads) extra[ne++] = "--threads", extra[ne++] = (char *)threads;
    add_one(p, type, nm, extra, ne);
  }
  return 0;
}

int fc_up_plan_load(fc_up_plan_t *p, const char *path, const char *run_dir, fc_err_t *err) {
  static const char *const keys[] = {"lease_timeout", "heartbeat", "daemons", NULL};
  fc_yaml_doc_t *doc;
  int rc = fc_yaml_load_file(path, &doc, err);
  if (rc) return rc;
  const fc_yaml_node_t *root = fc_yaml_root(doc), *v;
  if (!root || root->kind != FC_YAML_MAP) rc = fc_err_set(err, FC_EINVAL, "%s: the config must be a mapping", path);
  else rc = fc_yaml_check_keys(root, "the config", keys, err);
  if (!rc && (v = fc_yaml_get(root, "lease_timeout"))) rc = fc_yaml_double(v, "lease_timeout", 0.01, 3600, &p->lease_timeout, err);
  if (!rc && (v = fc_yaml_get(root, "heartbeat"))) rc = fc_yaml_double(v, "heartbeat", 0.01, 3600, &p->heartbeat, err);
  if (!rc && (v = fc_yaml_get(root, "daemons"))) {
    if (v->kind != FC_YAML_LIST) rc = fc_yaml_error(v, err, "'daemons' must be a list");
    for (size_t i = 0; i < v->n && !rc; i++) rc = load_daemon(p, v->item[i], run_dir, err);
  }
  fc_yaml_destroy(&doc);
  return rc;
}

/* ---- starting ---- */

static int find_daemon(const char *name, char *out, size_t n) {
  const char *env = getenv("FUSECHAT_BIN_DIR");
  char self[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  self[k > 0 ? k : 0] = 0;
  char *dir = dirname(self);
  char cand[3][PATH_MAX + 64];
  snprintf(cand[0], sizeof cand[0], "%s/%s", env ? env : "/nonexistent", name);
  snprintf(cand[1], sizeof cand[1], "%s/../daemons/%s", dir, name);
  snprintf(cand[2], sizeof cand[2], "%s/%s", dir, name);
  for (int i = 0; i < 3; i++)
    if (access(cand[i], X_OK) == 0 && strlen(cand[i]) < n) {
      memcpy(out, cand[i], strlen(cand[i]) + 1);
      return 0;
    }
  return -1;
}

static int start(const char *run, const char *name, char *const argv[], fc_err_t *err) {
  char log[1024], pidf[1024];
  snprintf(log, sizeof log, "%s/%s.log", run, name);
  snprintf(pidf, sizeof pidf, "%s/%s.pid", run, name);
  pid_t p = fork();
  if (p < 0) return fc_err_set(err, FC_EIO, "fork: %s", strerror(errno));
  if (p == 0) {
    setsid();
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600), nul = open("/dev/null", O_RDONLY);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    if (nul >= 0) dup2(nul, 0);
    execv(argv[0], argv);
    _exit(127);
  }
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, pidf, err);
  if (rc) return rc;
  fprintf(af.fp, "%ld\n", (long)p);
  return fc_atomic_commit(&af, err);
}

int fc_up_start(const char *cmd, const char *run, const fc_up_plan_t *p) {
  fc_err_t err = {0};
  if (fc_net_prepare_run_dir(run, &err)) return fc_cli_fail(cmd, "%s", err.msg);
  char pidf[600];
  snprintf(pidf, sizeof pidf, "%s/coordinator.pid", run);
  if (fc_path_exists(pidf)) return fc_cli_fail(cmd, "%s exists: already up? ('fusectl down --run-dir %s' first)", pidf, run);
  char coord[PATH_MAX];
  if (find_daemon("fusechat-coordinator", coord, sizeof coord))
    return fc_cli_fail(cmd, "cannot find fusechat-coordinator (set FUSECHAT_BIN_DIR)");
  char (*bins)[PATH_MAX] = fc_xcalloc(p->n ? p->n : 1, sizeof *bins);
  for (size_t i = 0; i < p->n; i++) {
    char prog[96];
    snprintf(prog, sizeof prog, "fusechat-%s", p->d[i].prog);
    if (find_daemon(prog, bins[i], sizeof bins[i])) {
      free(bins);
      return fc_cli_fail(cmd, "cannot find %s (set FUSECHAT_BIN_DIR)", prog);
    }
  }
  char db[600], endpoint[600], lease[32], hb[32], host[64] = "host";
  snprintf(db, sizeof db, "%s/coordinator.sqlite", run);
  snprintf(lease, sizeof lease, "%g", p->lease_timeout);
  snprintf(hb, sizeof hb, "%g", p->heartbeat);
  gethostname(host, sizeof host - 1);
  fc_net_default_endpoint(run, endpoint, sizeof endpoint);
  char *cargv[] = {coord, "--run-dir", (char *)run, "--db", db, "--lease-timeout", lease, NULL, NULL, NULL};
  if (p->metrics[0]) cargv[7] = "--metrics", cargv[8] = (char *)p->metrics;
  int rc = 0;
  if (start(run, "coordinator", cargv, &err)) rc = fc_cli_fail(cmd, "%s", err.msg);
  for (size_t i = 0; i < p->n && !rc; i++) {
    char id[256];
    snprintf(id, sizeof id, "%s-%s", host, p->d[i].name);
    char *argv[FC_UP_MAX_ARGS + 10] = {bins[i], "--run-dir", (char *)run, "--id", id, "--heartbeat", hb};
    int k = 7;
    for (int a = 0; p->d[i].args[a]; a++) argv[k++] = p->d[i].args[a];
    argv[k] = NULL;
    if (start(run, p->d[i].name, argv, &err)) rc = fc_cli_fail(cmd, "%s", err.msg);
  }
  free(bins);
  if (rc) return rc;
  fc_msg_t req = {.type = FC_MSG_LIST}, rep;
  const fc_curve_t plain = {0}; /* our coordinator is plain ipc://, whatever keys the environment names */
  for (int i = 0; i < 100; i++) {
    if (fc_net_call_curve(endpoint, &plain, &req, &rep, 200, &err) == 0) {
      fc_msg_clear(&rep);
      return 0;
    }
    usleep(100000);
  }
  return fc_cli_fail(cmd, "the coordinator did not answer; see %s/coordinator.log", run);
}
