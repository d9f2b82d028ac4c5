/* The merge floor's check of one method parameter by name and value, in the shape the runtime's
 * schema takes (fc_schema_set_open_check), so a job's merge.parameters are refused at submit
 * with the merge floor's own names and ranges, not duplicated in the runtime. */
#ifndef FC_MERGE_CHECK_H
#define FC_MERGE_CHECK_H

#include "fc_merge.h"

static inline int fc_merge_check_param(const char *key, const char *value, fc_err_t *err) {
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  return fc_merge_set_param(&cfg, key, value, err);
}

#endif
