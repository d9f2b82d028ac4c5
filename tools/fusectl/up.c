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
#include <yaml.h>

#include "cli.h"
#include "fc_net.h"

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

static const char *scalar(yaml_document_t *doc, yaml_node_t *n) {
  (void)doc;
  return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int at(fc_err_t *err, const char *path, yaml_node_t *n, const char *msg, const char *arg) {
  return fc_err_set(err, FC_EINVAL, "%s:%zu: %s%s%s", path, n->start_mark.line + 1, msg, arg ? " " : "", arg ? arg : "");
}

int fc_up_plan_load(fc_up_plan_t *p, const char *path, const char *run_dir, fc_err_t *err) {
  char *text;
  size_t len;
  int rc = fc_read_file(path, &text, &len, err);
  if (rc) return rc;
  yaml_parser_t parser;
  yaml_document_t doc;
  yaml_parser_initialize(&parser);
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    rc = fc_err_set(err, FC_EINVAL, "%s:%zu: YAML error: %s", path, parser.problem_mark.line + 1,
                    parser.problem ? parser.problem : "?");
    yaml_parser_delete(&parser);
    free(text);
    return rc;
  }
  yaml_parser_delete(&parser);
  free(text);
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (!root || root->type != YAML_MAPPING_NODE) {
    rc = fc_err_set(err, FC_EINVAL, "%s: the config must be a mapping", path);
    goto out;
  }
  for (yaml_node_pair_t *kv = root->data.mapping.pairs.start; kv < root->data.mapping.pairs.top && !rc; kv++) {
    yaml_node_t *k = yaml_document_get_node(&doc, kv->key), *v = yaml_document_get_node(&doc, kv->value);
    const char *ks = scalar(&doc, k), *vs = scalar(&doc, v);
    if (!ks) { rc = at(err, path, k, "keys must be plain values", NULL); break; }
    if (!strcmp(ks, "lease_timeout") || !strcmp(ks, "heartbeat")) {
      double d;
      if (!vs || fc_cli_parse_double(vs, &d) || !(d >= 0.01 && d <= 3600)) rc = at(err, path, v, "want seconds for", ks);
      else if (ks[0] == 'l') p->lease_timeout = d;
      else p->heartbeat = d;
    } else if (!strcmp(ks, "daemons")) {
      if (v->type != YAML_SEQUENCE_NODE) { rc = at(err, path, v, "'daemons' must be a list", NULL); break; }
      for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top && !rc; it++) {
        yaml_node_t *d = yaml_document_get_node(&doc, *it);
        if (d->type != YAML_MAPPING_NODE) { rc = at(err, path, d, "a daemon must be a mapping", NULL); break; }
        const char *type = NULL, *model = NULL, *name = NULL, *threads = NULL;
        long count = 1;
        int serve = 0;
        for (yaml_node_pair_t *q = d->data.mapping.pairs.start; q < d->data.mapping.pairs.top && !rc; q++) {
          yaml_node_t *qk = yaml_document_get_node(&doc, q->key), *qv = yaml_document_get_node(&doc, q->value);
          const char *a = scalar(&doc, qk), *b = scalar(&doc, qv);
          if (!a || !b) rc = at(err, path, qk, "daemon keys and values must be plain", NULL);
          else if (!strcmp(a, "type")) type = b;
          else if (!strcmp(a, "model")) model = b;
          else if (!strcmp(a, "name")) name = b;
          else if (!strcmp(a, "threads")) threads = b;
          else if (!strcmp(a, "serve")) serve = !strcmp(b, "true");
          else if (!strcmp(a, "count")) {
            if (fc_cli_parse_long(b, &count) || count < 0 || count > 64) rc = at(err, path, qv, "count wants 0..64, not", b);
          } else rc = at(err, path, qk, "unknown daemon key", a);
        }
        if (rc) break;
        static const char *const types[] = {"logits", "align", "train", "merge", "eval", "worker-test", NULL};
        int ok = 0;
        for (int t = 0; types[t]; t++) ok |= type && !strcmp(type, types[t]);
        if (!ok) { rc = at(err, path, d, "a daemon needs a type: logits, align, train, merge, eval or worker-test", NULL); break; }
        int logits = !strcmp(type, "logits");
        if (logits && (!model || !name)) { rc = at(err, path, d, "a logits daemon needs model and name", NULL); break; }
        if (!logits && (model || name || serve)) { rc = at(err, path, d, "model, name and serve are for logits daemons", NULL); break; }
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
      }
    } else {
      rc = at(err, path, k, "unknown key", ks);
    }
  }
out:
  yaml_document_delete(&doc);
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
  char *cargv[] = {coord, "--run-dir", (char *)run, "--db", db, "--lease-timeout", lease, NULL};
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
  for (int i = 0; i < 100; i++) {
    if (fc_net_call(endpoint, &req, &rep, 200, &err) == 0) {
      fc_msg_clear(&rep);
      return 0;
    }
    usleep(100000);
  }
  return fc_cli_fail(cmd, "the coordinator did not answer; see %s/coordinator.log", run);
}
