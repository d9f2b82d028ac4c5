/* fusectl keygen: a ZeroMQ CURVE key pair for a daemon or a client. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "fc_net.h"

static void usage(void) {
  printf("Usage: fusectl keygen [OPTIONS] NAME\n"
         "\n"
         "Makes a CURVE key pair for TCP deployments: DIR/NAME.key (public and secret key, mode\n"
         "0600; keep it private) and DIR/NAME.pub (the public key, to copy where it is trusted).\n"
         "The coordinator runs with --curve-key coordinator.key --curve-allow DIR_OF_CLIENT_PUBS;\n"
         "workers with --curve-key NAME.key --curve-server coordinator.pub; fusectl with\n"
         "FUSECHAT_CURVE_KEY=NAME.key FUSECHAT_CURVE_SERVER=coordinator.pub.\n"
         "\nOptions:\n"
         "  --dir DIR   where to write the files (default .)\n"
         "  --help      this text\n");
}

int fc_cmd_keygen(int argc, char **argv) {
  static const struct option opts[] = {{"dir", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *dir = ".";
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'd') dir = optarg;
    else return fc_cli_usage_error("keygen", "unknown option");
  }
  if (optind + 1 != argc) return fc_cli_usage_error("keygen", "give one key name");
  const char *name = argv[optind];
  for (const char *p = name; *p; p++)
    if (*p == '/' || *p == ' ') return fc_cli_usage_error("keygen", "NAME is a file name, not '%s'", name);
  fc_err_t err = {0};
  if (fc_curve_keygen(dir, name, &err)) return fc_cli_fail("keygen", "%s", err.msg);
  printf("%s/%s.key and %s/%s.pub written\n", dir, name, dir, name);
  return 0;
}
