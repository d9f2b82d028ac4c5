/* Network and worker helpers without processes: event endpoints, run directories, CURVE key
 * files and allow-lists, and the artifacts a worker records for a task's outputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "fc_net.h"
#include "fc_sha256.h"
#include "fc_worker.h"

static char dir[64];
static fc_err_t err;

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/fc-test-net-XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd);
}

static void write_file(const char *path, const char *text) {
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(text, fp);
  fclose(fp);
}

static void test_endpoints_and_run_dir(void **state) {
  (void)state;
  char out[256];
  assert_int_equal(fc_net_events_endpoint("ipc:///run/x/coord.ipc", out, sizeof out, &err), 0);
  assert_string_equal(out, "ipc:///run/x/events.ipc");
  assert_int_equal(fc_net_events_endpoint("tcp://10.0.0.1:5555", out, sizeof out, &err), 0);
  assert_string_equal(out, "tcp://10.0.0.1:5556");
  assert_int_equal(fc_net_events_endpoint("tcp://host", out, sizeof out, &err), FC_EINVAL);
  assert_int_equal(fc_net_events_endpoint("inproc://x", out, sizeof out, &err), FC_EINVAL);
  fc_net_default_endpoint("/r", out, sizeof out);
  assert_string_equal(out, "ipc:///r/coord.ipc");
  char run[128];
  snprintf(run, sizeof run, "%s/a/b/run", dir);
  assert_int_equal(fc_net_prepare_run_dir(run, &err), 0);
  struct stat st;
  assert_int_equal(stat(run, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  chmod(run, 0755);
  assert_int_equal(fc_net_prepare_run_dir(run, &err), 0); /* tightened again */
  assert_int_equal(stat(run, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
}

static void test_curve_files(void **state) {
  (void)state;
  assert_int_equal(fc_curve_keygen(dir, "a", &err), 0);
  assert_int_equal(fc_curve_keygen(dir, "a", &err), FC_EINVAL); /* never overwritten */
  char p[256], q[256];
  snprintf(p, sizeof p, "%s/a.key", dir);
  snprintf(q, sizeof q, "%s/a.pub", dir);
  fc_curve_t c;
  assert_int_equal(fc_curve_client_files(p, q, &c, &err), 0);
  assert_true(c.enabled);
  assert_string_equal(c.public_key, c.server_key); /* a.pub is a.key's public half */
  /* the secret key really belongs to the public key */
  char derived[41];
  assert_int_equal(zmq_curve_public(derived, c.secret_key), 0);
  assert_string_equal(derived, c.public_key);
  assert_int_equal(fc_curve_client_files(p, NULL, &c, &err), FC_EINVAL);
  assert_int_equal(fc_curve_client_files(NULL, NULL, &c, &err), 0);
  assert_false(c.enabled);
  write_file(q, "not a key\n");
  assert_int_equal(fc_curve_load_public(q, derived, &err), FC_EFORMAT);
  assert_int_equal(fc_curve_load_pair(q, &c, &err), FC_EFORMAT);
  /* allow-lists: a file of keys (comments allowed) or a directory of .pub files */
  fc_curve_t b;
  char bk[256];
  assert_int_equal(fc_curve_keygen(dir, "b", &err), 0);
  snprintf(bk, sizeof bk, "%s/b.key", dir);
  assert_int_equal(fc_curve_load_pair(bk, &b, &err), 0);
  assert_int_equal(fc_curve_load_pair(p, &c, &err), 0);
  char list[256], text[200];
  snprintf(list, sizeof list, "%s/allow.txt", dir);
  snprintf(text, sizeof text, "# clients\n\n  %s\n", b.public_key);
  write_file(list, text);
  fc_curve_allow_t a;
  assert_int_equal(fc_curve_allow_load(list, &a, &err), 0);
  assert_int_equal(a.n, 1);
  uint8_t raw[32];
  assert_non_null(zmq_z85_decode(raw, b.public_key));
  assert_true(fc_curve_allowed(&a, raw));
  assert_non_null(zmq_z85_decode(raw, c.public_key));
  assert_false(fc_curve_allowed(&a, raw));
  fc_curve_allow_free(&a);
  assert_int_equal(fc_curve_allow_load(dir, &a, &err), FC_EFORMAT); /* a.pub was overwritten with junk */
  snprintf(q, sizeof q, "%s/a.pub", dir);
  unlink(q);
  assert_int_equal(fc_curve_allow_load(dir, &a, &err), 0); /* b.pub only */
  assert_int_equal(a.n, 1);
  fc_curve_allow_free(&a);
}

static void test_artifacts(void **state) {
  (void)state;
  char out1[128], out2[128], p[256];
  snprintf(out1, sizeof out1, "%s/file.out", dir);
  snprintf(out2, sizeof out2, "%s/model", dir);
  write_file(out1, "abc");
  mkdir(out2, 0755);
  snprintf(p, sizeof p, "%s/sub", out2), mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/z.bin", out2), write_file(p, "zz");
  snprintf(p, sizeof p, "%s/a.json", out2), write_file(p, "{}");
  snprintf(p, sizeof p, "%s/sub/w.bin", out2), write_file(p, "");
  snprintf(p, sizeof p, "%s/a.json.tmp.123", out2), write_file(p, "half");
  char *outs[] = {out1, out2};
  fc_task_t t = {.kind = "test", .outputs = outs, .noutputs = 2};
  fc_msg_t r = {.type = FC_MSG_RESULT};
  assert_int_equal(fc_worker_artifacts(&t, &r, &err), 0);
  assert_int_equal(r.narts, 4); /* the temp file is not an artifact */
  assert_string_equal(r.arts[0].path, out1);
  assert_int_equal(r.arts[0].size, 3);
  assert_string_equal(r.arts[0].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  snprintf(p, sizeof p, "%s/a.json", out2);
  assert_string_equal(r.arts[1].path, p); /* name order, depth first */
  snprintf(p, sizeof p, "%s/sub/w.bin", out2);
  assert_string_equal(r.arts[2].path, p);
  assert_string_equal(r.arts[2].sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  snprintf(p, sizeof p, "%s/z.bin", out2);
  assert_string_equal(r.arts[3].path, p);
  fc_msg_clear(&r);
  unlink(out1);
  r = (fc_msg_t){.type = FC_MSG_RESULT};
  assert_int_equal(fc_worker_artifacts(&t, &r, &err), FC_ENOTFOUND);
  assert_non_null(strstr(err.msg, "did not write"));
  fc_msg_clear(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_endpoints_and_run_dir, setup, teardown),
      cmocka_unit_test_setup_teardown(test_curve_files, setup, teardown),
      cmocka_unit_test_setup_teardown(test_artifacts, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
