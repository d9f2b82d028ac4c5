/* The one number parser: whole-string decimal integers and floats with range checks, used by
 * the stage-parameter schema, the YAML reader and every command-line option. "8x", "", " 8",
 * "nan" and out-of-range values are refused with a message naming the value and the range. */
#ifndef FC_NUM_H
#define FC_NUM_H

#include <stdint.h>

#include "fc_util.h"

/* Each parses all of s, checks lo <= value <= hi and stores it in *out. On failure returns
 * FC_EINVAL and, when err is not NULL, a message naming `what` (a key or an option, e.g.
 * "'top_k'" or "--top-k"), the value and the allowed range: "'top_k' is 1000, it must be in
 * [1, 256]" or "'top_k' must be an integer, not '8x'". *out is left unchanged. */
int fc_num_long(const char *s, long lo, long hi, long *out, const char *what, fc_err_t *err);
int fc_num_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out, const char *what, fc_err_t *err);
int fc_num_double(const char *s, double lo, double hi, double *out, const char *what, fc_err_t *err);
/* true/false, yes/no, on/off, 1/0 (any case). */
int fc_num_bool(const char *s, int *out, const char *what, fc_err_t *err);

/* A double printed so that it reads back to the same value, shortest of %g and %.17g. */
void fc_num_format_double(double v, char *buf, int n);

#endif
