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
#include <zmq.h>

#include "fc_artifact.h"
#include "fc_net.h"
#include "fc_sha256.h"
#include "fc_util.h"

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

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_fetch)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
