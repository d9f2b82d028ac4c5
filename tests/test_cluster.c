/* Artifacts between machines: the fetch protocol in-process (bytes, hash check, refused keys,
 * one shared download for concurrent fetches, throughput against a local copy), and two
 * "machines" on this host (separate stores, TCP + CURVE) running a job whose second task needs
 * the first one's output from the other store. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "fc_artifact.h"
#include "fc_net.h"
#include "fc_sha256.h"
#include "fc_util.h"
#include "test_proc.h"

static char g_tmp[64];

static void write_random(const char *path, size_t n) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  uint64_t x = 88172645463325252ull;
  uint64_t buf[8192];
  for (size_t done = 0; done < n;) {
    for (size_t i = 0; i < 8192; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17, buf[i] = x;
    size_t k = n - done < sizeof buf ? n - done : sizeof buf;
    assert_int_equal(fwrite(buf, 1, k, fp), k);
    done += k;
  }
  fclose(fp);
}

static double copy_file(const char *from, const char *to) {
  double t0 = fc_now();
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(in >= 0 && out >= 0);
  static char buf[1 << 20];
  ssize_t k;
  while ((k = read(in, buf, sizeof buf)) > 0) assert_int_equal(write(out, buf, (size_t)k), k);
  fsync(out);
  close(in), close(out);
  return fc_now() - t0;
}

typedef struct fetch_arg {
  fc_artifact_src_t src;
  const char *path, *sha, *dest;
  uint64_t size;
  const fc_curve_t *curve;
  int rc;
} fetch_arg_t;

static void *fetch_thread(void *p) {
  fetch_arg_t *a = p;
  fc_err_t err;
  a->rc = fc_artifact_fetch(&a->src, 1, a->path, a->sha, a->size, a->dest, a->curve, NULL, &err);
  return NULL;
}

static void test_fetch(void **state) {
  (void)state;
  snprintf(g_tmp, sizeof g_tmp, "/tmp/fc-cluster-XXXXXX");
  assert_non_null(mkdtemp(g_tmp));
  char a[128], b[128], file[256], dest[256], copy[256];
  snprintf(a, sizeof a, "%s/a", g_tmp), snprintf(b, sizeof b, "%s/b", g_tmp);
  assert_int_equal(mkdir(a, 0700), 0);
  snprintf(file, sizeof file, "%s/job/logits/s1.bin", a);
  fc_err_t err;
  char dir[256];
  snprintf(dir, sizeof dir, "%s/job/logits", a);
  assert_int_equal(fc_mkdir_p(dir, &err), 0);
  const size_t size = 128u << 20;
  write_random(file, size);
  char sha[65];
  uint64_t sz;
  assert_int_equal(fc_sha256_file(file, sha, &sz, &err), 0);

  /* the holder: store a, CURVE; the fetcher maps the coordinator's a onto b */
  fc_curve_t srv = {.enabled = 1}, cli = {.enabled = 1}, stranger = {.enabled = 1};
  assert_int_equal(zmq_curve_keypair(srv.public_key, srv.secret_key), 0);
  assert_int_equal(zmq_curve_keypair(cli.public_key, cli.secret_key), 0);
  assert_int_equal(zmq_curve_keypair(stranger.public_key, stranger.secret_key), 0);
  fc_artifact_server_t *s;
  assert_int_equal(fc_artifact_server_start(&s, "tcp://127.0.0.1:*", &srv, &err), 0);
  fc_store_t hs = {0};
  snprintf(hs.local, sizeof hs.local, "%s", a);
  fc_artifact_server_set_store(s, &hs);
  char allow[1][41];
  memcpy(allow[0], cli.public_key, 41);
  fc_artifact_server_allow(s, allow, 1);
  fc_artifact_src_t src = {0};
  snprintf(src.endpoint, sizeof src.endpoint, "%s", fc_artifact_server_endpoint(s));
  snprintf(src.key, sizeof src.key, "%s", srv.public_key);
  fc_store_t fs = {0};
  snprintf(fs.local, sizeof fs.local, "%s", b), snprintf(fs.logical, sizeof fs.logical, "%s", a);
  char *local = fc_store_to_local(&fs, file);
  snprintf(dest, sizeof dest, "%s", local);
  free(local);
  assert_non_null(strstr(dest, "/b/job/logits/s1.bin"));

  /* a wrong hash: nothing is written */
  char bad[65];
  memcpy(bad, sha, 65), bad[0] = bad[0] == '0' ? '1' : '0';
  assert_int_not_equal(fc_artifact_fetch(&src, 1, file, bad, size, dest, &cli, NULL, &err), 0);
  assert_false(fc_path_exists(dest));
  /* a key outside the allow-list gets nothing */
  uint64_t got = 0;
  assert_int_not_equal(fc_artifact_fetch(&src, 1, file, sha, size, dest, &stranger, &got, &err), 0);
  assert_false(fc_path_exists(dest));
  /* a path outside the holder's store is never served, whatever the hash */
  assert_int_not_equal(fc_artifact_fetch(&src, 1, "/etc/hostname", sha, size, dest, &cli, &got, &err), 0);

  /* two concurrent fetches: one download */
  uint64_t before = fc_artifact_server_bytes(s);
  fetch_arg_t fa[2];
  pthread_t th[2];
  double t0 = fc_now();
  for (int i = 0; i < 2; i++) {
    fa[i] = (fetch_arg_t){.src = src, .path = file, .sha = sha, .dest = dest, .size = size, .curve = &cli};
    assert_int_equal(pthread_create(&th[i], NULL, fetch_thread, &fa[i]), 0);
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL), assert_int_equal(fa[i].rc, 0);
  double tf = fc_now() - t0;
  assert_int_equal(fc_artifact_server_bytes(s) - before, size);
  char sha2[65];
  assert_int_equal(fc_sha256_file(dest, sha2, &sz, &err), 0);
  assert_string_equal(sha, sha2);
  /* a second fetch of a present file copies nothing */
  assert_int_equal(fc_artifact_fetch(&src, 1, file, sha, size, dest, &cli, &got, &err), 0);
  assert_int_equal(got, 0);

  /* throughput against a plain local copy, medians of 3 (the fetch also hashes) */
  snprintf(copy, sizeof copy, "%s/copy.bin", g_tmp);
  double tc[3], tfs[3];
  for (int r = 0; r < 3; r++) {
    tc[r] = copy_file(file, copy);
    unlink(dest);
    t0 = fc_now();
    assert_int_equal(fc_artifact_fetch(&src, 1, file, sha, size, dest, &cli, &got, &err), 0);
    tfs[r] = fc_now() - t0;
  }
  for (int i = 0; i < 3; i++)
    for (int j = i + 1; j < 3; j++) {
      if (tc[j] < tc[i]) { double x = tc[i]; tc[i] = tc[j]; tc[j] = x; }
      if (tfs[j] < tfs[i]) { double x = tfs[i]; tfs[i] = tfs[j]; tfs[j] = x; }
    }
  printf("# fetch over loopback CURVE: %.0f MB/s; local copy: %.0f MB/s; ratio %.2f (first, shared by 2: %.0f MB/s)\n",
         size / 1e6 / tfs[1], size / 1e6 / tc[1], tc[1] / tfs[1], size / 1e6 / tf);
  fc_artifact_server_stop(&s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
  assert_int_equal(system(cmd), 0);
}

/* ---- two machines on one host ---- */

static pid_t g_pids[8];
static int g_npids;

static pid_t spawn(const char *log, char *const argv[]) {
  pid_t p = test_spawn_logged(log, argv);
  assert_true(p >= 0);
  g_pids[g_npids++] = p;
  return p;
}

static void bin(char *out, size_t n, const char *name) {
  const char *b = getenv("FC_BUILD");
  snprintf(out, n, "%s/%s", b ? b : "build", name);
}

static int sh(char *out, size_t n, const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t k = fread(out, 1, n - 1, p);
  out[k] = 0;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int file_has(const char *path, const char *needle) {
  char *text;
  size_t n;
  fc_err_t err;
  if (fc_read_file(path, &text, &n, &err)) return 0;
  int ok = strstr(text, needle) != NULL;
  free(text);
  return ok;
}

/* Whether `fusectl status --json JOB` printed the job in that state (parsed: the report's
 * layout, indented or compact, is not the test's business). */
static int job_state_is(const char *json, const char *state) {
  json_t *r = json_loads(json, 0, NULL);
  const char *s = json_string_value(json_object_get(json_array_get(json_object_get(r, "jobs"), 0), "state"));
  int is = s && !strcmp(s, state);
  json_decref(r);
  return is;
}

/* Machine A: the coordinator (its store has the sentinel) and w1 on that store; machine B: w2
 * on its own store. The job's second task runs on B and needs the first one's output from A. */
static void test_two_stores(void **state) {
  (void)state;
  snprintf(g_tmp, sizeof g_tmp, "/tmp/fc-cluster-XXXXXX");
  assert_non_null(mkdtemp(g_tmp));
  char out[16384], b[512], coord[512], wt[512], fusectl[512], ep[128], env[1024];
  bin(coord, sizeof coord, "daemons/fusechat-coordinator");
  bin(wt, sizeof wt, "daemons/fusechat-worker-test");
  bin(fusectl, sizeof fusectl, "tools/fusectl");
  int port = 20000 + getpid() % 20000;
  snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
  /* keys as the guide makes them: each on its machine, only public keys copied */
  assert_int_equal(sh(out, sizeof out, "mkdir -p %s/a/keys/allowed %s/b/keys %s/client %s/a/store %s/b/store %s/a/run "
                      "%s/b/run && %s keygen --dir %s/a/keys coordinator && %s keygen --dir %s/a/keys gpu-a && "
                      "%s keygen --dir %s/b/keys cpu-b && %s keygen --dir %s/client alice && %s keygen --dir %s/client "
                      "stranger && cp %s/a/keys/gpu-a.pub %s/b/keys/cpu-b.pub %s/client/alice.pub %s/a/keys/allowed/ && "
                      "cp %s/a/keys/coordinator.pub %s/b/keys/ && cp %s/a/keys/coordinator.pub %s/client/",
                      g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, fusectl, g_tmp, fusectl, g_tmp, fusectl, g_tmp,
                      fusectl, g_tmp, fusectl, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp, g_tmp), 0);
  struct stat st;
  snprintf(b, sizeof b, "%s/client/alice.pub", g_tmp);
  assert_int_equal(stat(b, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
  char log[256], db[256], key[256], allow[256], store_a[256], store_b[256];
  snprintf(log, sizeof log, "%s/a/coord.log", g_tmp), snprintf(db, sizeof db, "%s/a/coord.sqlite", g_tmp);
  snprintf(key, sizeof key, "%s/a/keys/coordinator.key", g_tmp), snprintf(allow, sizeof allow, "%s/a/keys/allowed", g_tmp);
  snprintf(store_a, sizeof store_a, "%s/a/store", g_tmp), snprintf(store_b, sizeof store_b, "%s/b/store", g_tmp);
  char *cargv[] = {coord, "--db", db, "--endpoint", ep, "--curve-key", key, "--curve-allow", allow, "--store", store_a,
                   "--lease-timeout", "3", NULL};
  spawn(log, cargv);
  char k1[256], s1[256], k2[256], s2[256];
  snprintf(k1, sizeof k1, "%s/a/keys/gpu-a.key", g_tmp), snprintf(s1, sizeof s1, "%s/a/keys/coordinator.pub", g_tmp);
  snprintf(k2, sizeof k2, "%s/b/keys/cpu-b.key", g_tmp), snprintf(s2, sizeof s2, "%s/b/keys/coordinator.pub", g_tmp);
  snprintf(log, sizeof log, "%s/a/w1.log", g_tmp);
  char *w1[] = {wt, "--endpoint", ep, "--id", "w1", "--heartbeat", "0.2", "--curve-key", k1, "--curve-server", s1,
                "--store", store_a, "--artifacts", "tcp://127.0.0.1:*", NULL};
  spawn(log, w1);
  snprintf(env, sizeof env, "FUSECHAT_ENDPOINT=%s FUSECHAT_CURVE_KEY=%s/client/alice.key FUSECHAT_CURVE_SERVER=%s/client/coordinator.pub",
           ep, g_tmp, g_tmp);
  /* job: hog keeps w1 busy, so `two` waits for machine B */
  snprintf(b, sizeof b, "%s/job.yaml", g_tmp);
  FILE *fp = fopen(b, "w");
  assert_non_null(fp);
  fprintf(fp, "name: two-stores\nstore: %s\ntasks:\n"
              "  - {name: one, kind: sleep, outputs: [one.out], params: {ms: 100}}\n"
              "  - {name: hog, kind: sleep, deps: [one], outputs: [hog.out], params: {ms: 4000}}\n"
              "  - {name: two, kind: checksum, deps: [one], inputs: [%s/two-stores/one.out], outputs: [two.out],"
              " params: {ms: 100}}\n", store_a, store_a);
  fclose(fp);
  double t0 = fc_now();
  while (sh(out, sizeof out, "%s %s submit %s 2>&1", env, fusectl, b) != 0 && fc_now() - t0 < 10) usleep(200000);
  assert_non_null(strstr(out, "1"));
  /* hog running on w1: now machine B joins */
  t0 = fc_now();
  do sh(out, sizeof out, "%s %s status 1 2>&1", env, fusectl);
  while (!strstr(out, "hog") && fc_now() - t0 < 10 && usleep(100000) == 0);
  usleep(500000);
  snprintf(log, sizeof log, "%s/b/w2.log", g_tmp);
  char *w2[] = {wt, "--endpoint", ep, "--id", "w2", "--heartbeat", "0.2", "--curve-key", k2, "--curve-server", s2,
                "--store", store_b, "--artifacts", "tcp://127.0.0.1:*", NULL};
  spawn(log, w2);
  t0 = fc_now();
  int done = 0;
  while (!done && fc_now() - t0 < 30) {
    sh(out, sizeof out, "%s %s status --json 1 2>&1", env, fusectl);
    if (job_state_is(out, "failed")) break;
    done = job_state_is(out, "done");
    if (!done) usleep(200000);
  }
  if (!done) fprintf(stderr, "job did not finish: %s (logs in %s; FC_KEEP=1 keeps them)\n", out, g_tmp);
  assert_true(done);
  /* `two` ran on B with A's file fetched into B's store: B's checksum line is A's file's hash */
  char one_a[512], one_b[512], two_b[512], sha[65];
  uint64_t sz;
  fc_err_t err;
  snprintf(one_a, sizeof one_a, "%s/two-stores/one.out", store_a);
  snprintf(one_b, sizeof one_b, "%s/two-stores/one.out", store_b);
  snprintf(two_b, sizeof two_b, "%s/two-stores/two.out", store_b);
  assert_int_equal(fc_sha256_file(one_a, sha, &sz, &err), 0);
  assert_true(fc_path_exists(one_b));
  assert_true(file_has(two_b, sha));
  snprintf(b, sizeof b, "%s/two-stores/two.out", store_a);
  assert_false(fc_path_exists(b)); /* nothing written into A's store by B */
  snprintf(b, sizeof b, "%s/b/w2.log", g_tmp);
  assert_true(file_has(b, "fetched"));
  /* fusectl workers says which store each daemon has */
  assert_int_equal(sh(out, sizeof out, "%s %s workers 2>&1", env, fusectl), 0);
  assert_non_null(strstr(out, "shared"));
  assert_non_null(strstr(out, "separate"));
  /* a key outside the allow-list: told apart from no answer, and logged by the coordinator */
  int rc = sh(out, sizeof out, "FUSECHAT_ENDPOINT=%s FUSECHAT_CURVE_KEY=%s/client/stranger.key "
              "FUSECHAT_CURVE_SERVER=%s/client/coordinator.pub %s list --timeout 2 2>&1", ep, g_tmp, g_tmp, fusectl);
  assert_int_equal(rc, 1);
  assert_non_null(strstr(out, "refused"));
  char spub[64];
  snprintf(b, sizeof b, "%s/client/stranger.pub", g_tmp);
  fp = fopen(b, "r");
  assert_non_null(fp);
  assert_int_equal(fscanf(fp, "%63s", spub), 1);
  fclose(fp);
  snprintf(b, sizeof b, "%s/a/coord.log", g_tmp);
  assert_true(file_has(b, spub));
  rc = sh(out, sizeof out, "FUSECHAT_ENDPOINT=tcp://127.0.0.1:%d %s list --timeout 1 2>&1", port + 7, fusectl);
  assert_int_equal(rc, 1);
  assert_non_null(strstr(out, "no answer"));
  /* the daemons were READY only after the ack */
  snprintf(b, sizeof b, "%s/b/w2.log", g_tmp);
  assert_true(file_has(b, "registered with the coordinator"));
  assert_true(file_has(b, "store separate"));
}

/* Runs after test_two_stores whether it passed or not: a failed assertion must not leave the
 * daemons running (nor their directory, unless FC_KEEP names it for a post-mortem). */
static int stop_daemons(void **state) {
  (void)state;
  for (int i = g_npids - 1; i >= 0; i--) kill(g_pids[i], SIGTERM), waitpid(g_pids[i], NULL, 0);
  g_npids = 0;
  if (g_tmp[0] && !getenv("FC_KEEP")) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    if (system(cmd) != 0) return -1;
  }
  return 0;
}

/* A daemon that cannot read its key: which file, which uid, exit 2. */
static void test_unreadable_key(void **state) {
  (void)state;
  char wt[512], out[4096];
  if (geteuid() != 0) skip(); /* only root can run the daemon as another uid (setpriv) */
  bin(wt, sizeof wt, "daemons/fusechat-worker-test");
  snprintf(g_tmp, sizeof g_tmp, "/tmp/fc-cluster-XXXXXX");
  assert_non_null(mkdtemp(g_tmp));
  /* nobody (a uid without access to root's 0600 key) */
  int rc = sh(out, sizeof out, "cd %s && %s/tools/fusectl keygen w >/dev/null && chmod 755 %s && "
              "setpriv --reuid=65534 --regid=65534 --clear-groups %s --endpoint tcp://127.0.0.1:1 --curve-key %s/w.key "
              "--curve-server %s/w.pub 2>&1", g_tmp, getenv("FC_BUILD") ? getenv("FC_BUILD") : "build", g_tmp, wt, g_tmp, g_tmp);
  assert_int_equal(rc, 2);
  assert_non_null(strstr(out, "w.key"));
  assert_non_null(strstr(out, "uid"));
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_fetch), cmocka_unit_test_teardown(test_two_stores, stop_daemons),
                                     cmocka_unit_test(test_unreadable_key)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
