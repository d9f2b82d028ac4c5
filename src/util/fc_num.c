/* Whole-string number parsing with range checks (see fc_num.h). strtol/strtod accept leading
 * blanks and stop at the first bad character; we refuse both, so "8x" is an error, not 8. */
#include "fc_num.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int starts_ok(const char *s) { return s && *s && !isspace((unsigned char)*s); }

int fc_num_long(const char *s, long lo, long hi, long *out, const char *what, fc_err_t *err) {
  char *end;
  errno = 0;
  long v = starts_ok(s) ? strtol(s, &end, 10) : 0;
  if (!starts_ok(s) || errno || end == s || *end)
    return fc_err_set(err, FC_EINVAL, "%s must be an integer in [%ld, %ld], not '%s'", what, lo, hi, s ? s : "");
  if (v < lo || v > hi) return fc_err_set(err, FC_EINVAL, "%s is %ld, it must be in [%ld, %ld]", what, v, lo, hi);
  *out = v;
  return 0;
}

int fc_num_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out, const char *what, fc_err_t *err) {
  char *end;
  errno = 0;
  unsigned long long v = starts_ok(s) && *s != '-' && *s != '+' ? strtoull(s, &end, 10) : 0;
  if (!starts_ok(s) || *s == '-' || *s == '+' || errno || end == s || *end)
    return fc_err_set(err, FC_EINVAL, "%s must be an integer in [%" PRIu64 ", %" PRIu64 "], not '%s'", what, lo, hi,
                      s ? s : "");
  if (v < lo || v > hi)
    return fc_err_set(err, FC_EINVAL, "%s is %llu, it must be in [%" PRIu64 ", %" PRIu64 "]", what, v, lo, hi);
  *out = v;
  return 0;
}

int fc_num_double(const char *s, double lo, double hi, double *out, const char *what, fc_err_t *err) {
  char *end;
  errno = 0;
  double v = starts_ok(s) ? strtod(s, &end) : 0;
  /* ERANGE on underflow still gives a usable (tiny or zero) value; overflow gives inf */
  if (!starts_ok(s) || end == s || *end || !isfinite(v) || (errno && errno != ERANGE) ||
      (errno == ERANGE && fabs(v) > 1))
    return fc_err_set(err, FC_EINVAL, "%s must be a number in [%g, %g], not '%s'", what, lo, hi, s ? s : "");
  if (!(v >= lo && v <= hi)) return fc_err_set(err, FC_EINVAL, "%s is %g, it must be in [%g, %g]", what, v, lo, hi);
  *out = v;
  return 0;
}

int fc_num_bool(const char *s, int *out, const char *what, fc_err_t *err) {
  static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
  for (int i = 0; s && i < 4; i++) {
    if (!strcasecmp(s, yes[i])) return *out = 1, 0;
    if (!strcasecmp(s, no[i])) return *out = 0, 0;
  }
  return fc_err_set(err, FC_EINVAL, "%s must be true or false, not '%s'", what, s ? s : "");
}

void fc_num_format_double(double v, char *buf, int n) {
  snprintf(buf, (size_t)n, "%g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, (size_t)n, "%.17g", v);
}
