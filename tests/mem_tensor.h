/* A one-dimensional safetensors tensor over memory the test owns, for calling the per-tensor
 * APIs (fc_merge_tensor) without files. */
#ifndef FC_TEST_MEM_TENSOR_H
#define FC_TEST_MEM_TENSOR_H

#include <string.h>

#include "fc_st.h"

static inline fc_st_tensor_t mk(const char *name, fc_dtype_t dt, const void *data, int64_t n) {
  fc_st_tensor_t t;
  memset(&t, 0, sizeof t);
  t.name = name;
  t.dtype = dt;
  t.ndim = 1;
  t.shape[0] = n;
  t.numel = n;
  t.nbytes = (size_t)n * fc_dtype_size(dt);
  t.data = data;
  return t;
}

#endif
