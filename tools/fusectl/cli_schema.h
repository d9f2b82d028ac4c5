/* The flags of the offline commands that run a stage (train, logits-dump, vocab-map, fuse, eval,
 * merge) come from the stage-parameter schema: the same names' defaults, ranges and help as a
 * job spec and the daemons, so a default cannot differ between them. */
#ifndef FC_CLI_SCHEMA_H
#define FC_CLI_SCHEMA_H

#include <getopt.h>
#include <stdio.h>

#include "fc_schema.h"

/* Long-option ids of schema flags without a short form start here. */
#define FC_CLI_SCHEMA_OPT 3000

/* Appends the long options of kind's flagged parameters to opts (room for them is the caller's)
 * and returns how many. The short ones need their letters with ':' in the getopt string. */
size_t fc_cli_schema_longopts(const char *kind, struct option *opts);
/* If getopt's c is one of kind's flags: checks arg into out (the kind's typed struct) and
 * returns 0, or prints the key, the value and the range and returns FC_EXIT_USAGE; *which is
 * the parameter. Returns -1 when c is not a schema flag. */
int fc_cli_schema_option(const char *cmd, const char *kind, int c, const char *arg, void *out, const fc_param_t **which);
/* The --help lines of kind's flags ("  -k, --top-k N   help (default 10; [1, 256])"), the
 * option column `width` wide. */
void fc_cli_schema_help(FILE *fp, const char *kind, int width);

#endif
