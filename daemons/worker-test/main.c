/* fusechat-worker-test: a stage daemon with only the test executors (sleep, checksum), used by
 * the end-to-end tests and benchmarks to drive the whole distributed machinery. */
#include "fc_daemon.h"

int main(int argc, char **argv) {
  fc_daemon_def_t def = {
      .prog = "fusechat-worker-test",
      .component = "worker-test",
      .description =
          "A fusechat stage daemon that runs the test task kinds: 'sleep' (waits params.ms, writes a\n"
          "line to each output) and 'checksum' (writes the SHA-256 of each input, one hex line each,\n"
          "to its output, after waiting params.ms). params.fail=1 makes either fail.\n"};
  def.execs = fc_test_executors(&def.nexecs);
  return fc_daemon_main(argc, argv, &def);
}
