/* safetensors files: a validating, memory-mapping reader (single file, sharded index or model
 * directory) and a streaming, atomic writer. Format: u64 little-endian header length N, N
 * bytes of JSON {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {k: v}},
 * then the data buffer. */
#ifndef FC_ST_H
#define FC_ST_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

typedef enum {
  FC_DT_F32,
  FC_DT_F16,
  FC_DT_BF16,
  FC_DT_F64,
  FC_DT_I64,
  FC_DT_I32,
  FC_DT_I16,
  FC_DT_I8,
  FC_DT_U8,
  FC_DT_BOOL,
  FC_DT_COUNT
} fc_dtype_t;

size_t fc_dtype_size(fc_dtype_t dt);
const char *fc_dtype_name(fc_dtype_t dt); /* "F32", "BF16", ... as in the file */
/* Accepts the file names ("F16") and the torch/config names ("float16", "bfloat16", "float32"). */
int fc_dtype_parse(const char *s, fc_dtype_t *out);

#define FC_ST_MAX_DIMS 8
/* Header length limit, as in the reference implementation (100 MB). */
#define FC_ST_MAX_HEADER (100u * 1000u * 1000u)

typedef struct fc_st_tensor {
  const char *name;
  fc_dtype_t dtype;
  int ndim;
  int64_t shape[FC_ST_MAX_DIMS];
  int64_t numel;
  size_t nbytes;
  const void *data; /* inside the read-only mapping; valid until fc_st_close */
  int shard;        /* which file of a sharded model */
} fc_st_tensor_t;

typedef struct fc_st fc_st_t;

/* path: a .safetensors file, a model.safetensors.index.json, or a directory holding either. */
int fc_st_open(fc_st_t **out, const char *path, fc_err_t *err);
void fc_st_close(fc_st_t **st);
/* Tensors in storage order (shard, then offset), so walking them reads the files in order. */
size_t fc_st_count(const fc_st_t *st);
const fc_st_tensor_t *fc_st_at(const fc_st_t *st, size_t i);
const fc_st_tensor_t *fc_st_find(const fc_st_t *st, const char *name);
size_t fc_st_num_shards(const fc_st_t *st);
const char *fc_st_shard_path(const fc_st_t *st, size_t shard);
/* __metadata__ value of the first file, NULL when absent. */
const char *fc_st_meta(const fc_st_t *st, const char *key);
size_t fc_st_meta_count(const fc_st_t *st);
void fc_st_meta_at(const fc_st_t *st, size_t i, const char **key, const char **value);

/* Converts a float tensor (F32, F16, BF16, F64) to f32; other dtypes are FC_EUNSUPPORTED. */
int fc_st_to_f32(const fc_st_tensor_t *t, float *out, fc_err_t *err);
/* Elements [off, off + n) of t into out[n], as fc_st_to_f32. */
int fc_st_to_f32_range(const fc_st_tensor_t *t, size_t off, size_t n, float *out, fc_err_t *err);
/* f32 view of a float tensor: the mapping itself when it is F32 and aligned (then *owned is
 * NULL), otherwise a converted copy returned in *owned, which the caller frees. */
const float *fc_st_f32(const fc_st_tensor_t *t, float **owned, fc_err_t *err);

/* ---- writer ---- */

typedef struct fc_st_spec {
  const char *name;
  fc_dtype_t dtype;
  int ndim;
  int64_t shape[FC_ST_MAX_DIMS];
} fc_st_spec_t;

typedef struct fc_st_writer fc_st_writer_t;

/* Declares every tensor up front (the header comes first in the file), then takes their data
 * in declaration order, so a merge can stream tensor by tensor. meta: NULL or key, value, ...,
 * NULL. The file appears at path only on fc_st_writer_finish. */
int fc_st_writer_new(fc_st_writer_t **out, const char *path, const fc_st_spec_t *specs, size_t n,
                     const char *const *meta, fc_err_t *err);
/* Tensor i (the next one in order) from f32 values, converted to its declared dtype. */
/* Reserves the complete file's blocks now (fallocate), so a full disk fails before any work is
 * done instead of after it, and later writes find their pages allocated. A filesystem without
 * fallocate is no error. */
int fc_st_writer_reserve(fc_st_writer_t *w, fc_err_t *err);
int fc_st_writer_put_f32(fc_st_writer_t *w, size_t i, const float *data, fc_err_t *err);
/* Tensor i as raw bytes already in its declared dtype. */
int fc_st_writer_put_raw(fc_st_writer_t *w, size_t i, const void *data, size_t nbytes,
                         fc_err_t *err);
/* Tensor i (the next one in order) written by the caller, possibly from several threads: the
 * file's descriptor and the absolute offset of the tensor's first byte; write its bytes there
 * with pwrite, then fc_st_writer_put_done. */
int fc_st_writer_put_at(fc_st_writer_t *w, size_t i, int *fd, uint64_t *offset, fc_err_t *err);
void fc_st_writer_put_done(fc_st_writer_t *w, size_t i);
int fc_st_writer_finish(fc_st_writer_t **w, fc_err_t *err);
void fc_st_writer_abort(fc_st_writer_t **w);

/* Writes model.safetensors.index.json: tensor names[i] lives in file files[i]. */
int fc_st_write_index(const char *path, size_t n, const char *const *names,
                      const char *const *files, uint64_t total_size, fc_err_t *err);

#endif
