/* fusectl keygen: a ZeroMQ CURVE key pair for a daemon or a client. */
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_net.h"

static void usage(void) {
  printf("Usage: fusectl keygen [OPTIONS] NAME\n"
         "\n"
         "Makes a CURVE key pair for TCP deployments: DIR/NAME.key (public and secret key, mode\n"
         "0600, owned by the caller or --owner; keep it private: make it on the machine and as the\n"
         "user that uses it) and DIR/NAME.pub (the public key, mode 0644, to copy where it is\n"
         "trusted, e.g. into the coordinator's allow-list directory).\n"
         "The coordinator runs with --curve-key coordinator.key --curve-allow DIR_OF_CLIENT_PUBS;\n"
         "workers with --curve-key NAME.key --curve-server coordinator.pub; fusectl with\n"
         "FUSECHAT_CURVE_KEY=NAME.key FUSECHAT_CURVE_SERVER=coordinator.pub.\n"
         "\nOptions:\n"
         "  --dir DIR   where to write the files (default .)\n"
         "  --owner USER[:GROUP]  owner of both files (root only; default the caller), e.g.\n"
         "              fusechat for the keys the daemons read\n"
         "  --help      this text\n");
}

int fc_cmd_keygen(int argc, char **argv) {
  static const struct option opts[] = {{"dir", required_argument, 0, 'd'}, {"owner", required_argument, 0, 'o'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *dir = ".";
  uid_t uid = (uid_t)-1;
  gid_t gid = (gid_t)-1;
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'h') return usage(), 0;
    if (o == 'd') dir = optarg;
    else if (o == 'o') {
      char user[256];
      snprintf(user, sizeof user, "%s", optarg);
      char *colon = strchr(user, ':');
      if (colon) *colon++ = 0;
      struct passwd *pw = getpwnam(user);
      if (!pw) return fc_cli_usage_error("keygen", "--owner: no user '%s'", user);
      uid = pw->pw_uid, gid = pw->pw_gid;
      if (colon && *colon) {
        struct group *gr = getgrnam(colon);
        if (!gr) return fc_cli_usage_error("keygen", "--owner: no group '%s'", colon);
        gid = gr->gr_gid;
      }
    }
    else return fc_cli_usage_error("keygen", "unknown option");
  }
  if (optind + 1 != argc) return fc_cli_usage_error("keygen", "give one key name");
  const char *name = argv[optind];
  for (const char *p = name; *p; p++)
    if (*p == '/' || *p == ' ') return fc_cli_usage_error("keygen", "NAME is a file name, not '%s'", name);
  fc_err_t err = {0};
  if (fc_curve_keygen_owned(dir, name, uid, gid, &err)) return fc_cli_fail("keygen", "%s", err.msg);
  printf("%s/%s.key and %s/%s.pub written\n", dir, name, dir, name);
  return 0;
}
