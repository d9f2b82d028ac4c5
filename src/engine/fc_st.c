/* safetensors reader (validating, mmap) and streaming writer. The reader is strict in the way
 * the reference implementation is: the tensors must tile the data buffer exactly, so a
 * truncated, padded or overlapping file is rejected before any tensor is touched. */
#include "fc_st.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <assert.h>

static const struct {
  const char *name;
  size_t size;
} dtypes[FC_DT_COUNT] = {
    [FC_DT_F32] = {"F32", 4}, [FC_DT_F16] = {"F16", 2}, [FC_DT_BF16] = {"BF16", 2},
    [FC_DT_F64] = {"F64", 8}, [FC_DT_I64] = {"I64", 8}, [FC_DT_I32] = {"I32", 4},
    [FC_DT_I16] = {"I16", 2}, [FC_DT_I8] = {"I8", 1},   [FC_DT_U8] = {"U8", 1},
    [FC_DT_BOOL] = {"BOOL", 1},
};

size_t fc_dtype_size(fc_dtype_t dt) { return dtypes[dt].size; }
const char *fc_dtype_name(fc_dtype_t dt) { return dtypes[dt].name; }

int fc_dtype_parse(const char *s, fc_dtype_t *out) {
  for (int i = 0; i < FC_DT_COUNT; i++)
    if (!strcmp(s, dtypes[i].name)) return *out = (fc_dtype_t)i, 0;
  static const struct {
    const char *alias;
    fc_dtype_t dt;
  } aliases[] = {{"float32", FC_DT_F32}, {"f32", FC_DT_F32},   {"float16", FC_DT_F16},
                 {"f16", FC_DT_F16},     {"half", FC_DT_F16},  {"bfloat16", FC_DT_BF16},
                 {"bf16", FC_DT_BF16},   {"float", FC_DT_F32}, {"float64", FC_DT_F64}};
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (!strcmp(s, aliases[i].alias)) return *out = aliases[i].dt, 0;
  return FC_EINVAL;
}

typedef struct st_file {
  char *path;
  void *map;
  size_t size;
  json_t *meta; /* the __metadata__ object or NULL */
} st_file_t;

struct fc_st {
  st_file_t *files;
  size_t nfiles;
  fc_st_tensor_t *tensors; /* storage order */
  size_t ntensors;
  fc_st_tensor_t **by_name; /* sorted by name, for lookup */
};

static int cmp_name(const void *a, const void *b) {
  return strcmp((*(fc_st_tensor_t *const *)a)->name, (*(fc_st_tensor_t *const *)b)->name);
}

typedef struct span {
  uint64_t begin, end;
  size_t idx;
} span_t;

static int cmp_span(const void *a, const void *b) {
  const span_t *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* Parses one file's header and appends its tensors. */
static int open_file(fc_st_t *st, const char *path, fc_err_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    close(fd);
    return fc_err_set(err, FC_EIO, "cannot stat %s: %s", path, strerror(errno));
  }
  size_t size = (size_t)sb.st_size;
  if (size < 8) {
    close(fd);
    return fc_err_set(err, FC_EFORMAT, "%s: not a safetensors file (%zu bytes, too short)", path,
                      size);
  }
  void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return fc_err_set(err, FC_EIO, "cannot map %s: %s", path, strerror(errno));
  st->files = fc_xrealloc(st->files, (st->nfiles + 1) * sizeof *st->files);
  st_file_t *f = &st->files[st->nfiles++];
  f->path = fc_xstrdup(path);
  f->map = map;
  f->size = size;
  f->meta = NULL;
  int shard = (int)(st->nfiles - 1);

  const uint8_t *p = map;
  uint64_t hlen = fc_get_le64(p);
  if (hlen > FC_ST_MAX_HEADER)
    return fc_err_set(err, FC_EFORMAT, "%s: header length %llu exceeds the %u byte limit", path,
                      (unsigned long long)hlen, FC_ST_MAX_HEADER);
  if (hlen > size - 8)
    return fc_err_set(err, FC_EFORMAT,
                      "%s: truncated: header says %llu bytes but the file has %zu after the length",
                      path, (unsigned long long)hlen, size - 8);
  const uint8_t *data = p + 8 + hlen;
  uint64_t dsize = size - 8 - hlen;

  json_error_t jerr;
  json_t *root = json_loadb((const char *)p + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return fc_err_set(err, FC_EFORMAT, "%s: header is not valid JSON: %s (at byte %d)", path,
                      jerr.text, jerr.position);
  if (!json_is_object(root)) {
    json_decref(root);
    return fc_err_set(err, FC_EFORMAT, "%s: header is not a JSON object", path);
  }
  size_t first = st->ntensors, count = json_object_size(root);
  st->tensors = fc_xrealloc(st->tensors, (st->ntensors + count) * sizeof *st->tensors);
  span_t *spans = fc_xmalloc(count * sizeof *spans);
  size_t nspans = 0;
  const char *key;
  json_t *val;
  int rc = 0;
  json_object_foreach(root, key, val) {
    if (!strcmp(key, "__metadata__")) {
      if (!json_is_object(val)) {
        rc = fc_err_set(err, FC_EFORMAT, "%s: __metadata__ is not an object", path);
        break;
      }
      const char *mk;
      json_t *mv;
      json_object_foreach(val, mk, mv) {
        if (!json_is_string(mv)) {
          rc = fc_err_set(err, FC_EFORMAT, "%s: metadata value for '%s' is not a string", path, mk);
          break;
        }
      }
      if (rc) break;
      f->meta = json_incref(val);
      continue;
    }
    json_t *jdt = json_object_get(val, "dtype"), *jshape = json_object_get(val, "shape");
    json_t *joff = json_object_get(val, "data_offsets");
    if (!json_is_object(val) || !json_is_string(jdt) || !json_is_array(jshape) ||
        !json_is_array(joff) || json_array_size(joff) != 2) {
      rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' lacks dtype, shape or data_offsets", path,
                      key);
      break;
    }
    fc_st_tensor_t *t = &st->tensors[st->ntensors];
    memset(t, 0, sizeof *t);
    int found = 0;
    for (int d = 0; d < FC_DT_COUNT; d++)
      if (!strcmp(json_string_value(jdt), dtypes[d].name)) t->dtype = (fc_dtype_t)d, found = 1;
    if (!found) {
      rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' has unsupported dtype %s", path, key,
                      json_string_value(jdt));
      break;
    }
    if (json_array_size(jshape) > FC_ST_MAX_DIMS) {
      rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' has %zu dimensions (at most %d)", path,
                      key, json_array_size(jshape), FC_ST_MAX_DIMS);
      break;
    }
    t->ndim = (int)json_array_size(jshape);
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim && !rc; d++) {
      json_t *jd = json_array_get(jshape, d);
      if (!json_is_integer(jd) || json_integer_value(jd) < 0 ||
          (uint64_t)json_integer_value(jd) > (1ull << 40))
        rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' has a bad shape", path, key);
      else {
        t->shape[d] = json_integer_value(jd);
        numel *= (uint64_t)t->shape[d];
        if (numel > (1ull << 40))
          rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' is implausibly large", path, key);
      }
    }
    if (rc) break;
    json_t *jb = json_array_get(joff, 0), *je = json_array_get(joff, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < json_integer_value(jb)) {
      rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' has bad data_offsets", path, key);
      break;
    }
    uint64_t b = (uint64_t)json_integer_value(jb), e = (uint64_t)json_integer_value(je);
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)(numel * dtypes[t->dtype].size);
    if (e - b != t->nbytes) {
      rc = fc_err_set(err, FC_EFORMAT,
                      "%s: tensor '%s' has %llu bytes of data but shape x dtype needs %zu", path,
                      key, (unsigned long long)(e - b), t->nbytes);
      break;
    }
    if (e > dsize) {
      rc = fc_err_set(err, FC_EFORMAT,
                      "%s: truncated: tensor '%s' ends at byte %llu of a %llu byte data buffer",
                      path, key, (unsigned long long)e, (unsigned long long)dsize);
      break;
    }
    t->name = key; /* re-pointed to an owned copy below */
    t->data = data + b;
    t->shard = shard;
    spans[nspans++] = (span_t){b, e, st->ntensors};
    st->ntensors++;
  }
  if (!rc) {
    /* The tensors must tile [0, dsize) exactly: no overlap, no gap, nothing after the last. */
    qsort(spans, nspans, sizeof *spans, cmp_span);
    uint64_t pos = 0;
    for (size_t i = 0; i < nspans && !rc; i++) {
      if (spans[i].begin != pos)
        rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' %s at byte %llu (expected %llu)", path,
                        st->tensors[spans[i].idx].name,
                        spans[i].begin < pos ? "overlaps the previous one" : "leaves a gap",
                        (unsigned long long)spans[i].begin, (unsigned long long)pos);
      pos = spans[i].end;
    }
    if (!rc && pos != dsize)
      rc = fc_err_set(err, FC_EFORMAT, "%s: %llu bytes of data after the last tensor", path,
                      (unsigned long long)(dsize - pos));
  }
  if (!rc) {
    /* Storage order within the file, and names owned by us (the JSON is freed). */
    fc_st_tensor_t *tmp = fc_xmalloc((nspans ? nspans : 1) * sizeof *tmp);
    for (size_t i = 0; i < nspans; i++) {
      tmp[i] = st->tensors[spans[i].idx];
      tmp[i].name = fc_xstrdup(tmp[i].name);
    }
    memcpy(st->tensors + first, tmp, nspans * sizeof *tmp);
    free(tmp);
  } else {
    for (size_t i = first; i < st->ntensors; i++) st->tensors[i].name = NULL;
    st->ntensors = first;
  }
  free(spans);
  json_decref(root);
  return rc;
}

static int finish_index(fc_st_t *st, fc_err_t *err) {
  st->by_name = fc_xmalloc((st->ntensors ? st->ntensors : 1) * sizeof *st->by_name);
  for (size_t i = 0; i < st->ntensors; i++) st->by_name[i] = &st->tensors[i];
  qsort(st->by_name, st->ntensors, sizeof *st->by_name, cmp_name);
  for (size_t i = 1; i < st->ntensors; i++)
    if (!strcmp(st->by_name[i]->name, st->by_name[i - 1]->name))
      return fc_err_set(err, FC_EFORMAT, "tensor '%s' appears in more than one shard",
                        st->by_name[i]->name);
  return 0;
}

static int open_index(fc_st_t *st, const char *index_path, fc_err_t *err) {
  json_error_t jerr;
  json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return fc_err_set(err, FC_EFORMAT, "%s: %s (line %d)", index_path, jerr.text, jerr.line);
  json_t *wm = json_object_get(root, "weight_map");
  if (!json_is_object(wm)) {
    json_decref(root);
    return fc_err_set(err, FC_EFORMAT, "%s: no weight_map object", index_path);
  }
  char *dir = fc_xstrdup(index_path);
  char *slash = strrchr(dir, '/');
  if (slash) slash[1] = 0;
  else strcpy(dir, "./");
  /* Distinct shard files, in first-seen order. */
  const char **names = NULL;
  size_t nnames = 0;
  const char *key;
  json_t *val;
  int rc = 0;
  json_object_foreach(wm, key, val) {
    if (!json_is_string(val) || strchr(json_string_value(val), '/')) {
      rc = fc_err_set(err, FC_EFORMAT, "%s: bad file name for tensor '%s'", index_path, key);
      break;
    }
    size_t i;
    for (i = 0; i < nnames; i++)
      if (!strcmp(names[i], json_string_value(val))) break;
    if (i == nnames) {
      names = fc_xrealloc(names, (nnames + 1) * sizeof *names);
      names[nnames++] = json_string_value(val);
    }
  }
  for (size_t i = 0; i < nnames && !rc; i++) {
    char *p = fc_path_join(dir, names[i]);
    rc = open_file(st, p, err);
    free(p);
  }
  if (!rc) rc = finish_index(st, err);
  if (!rc) {
    json_object_foreach(wm, key, val) {
      const fc_st_tensor_t *t = fc_st_find(st, key);
      if (!t || strcmp(strrchr(st->files[t->shard].path, '/') + 1, json_string_value(val))) {
        rc = fc_err_set(err, FC_EFORMAT, "%s: tensor '%s' is not in %s", index_path, key,
                        json_string_value(val));
        break;
      }
    }
  }
  free(names);
  free(dir);
  json_decref(root);
  return rc;
}

static int open_single(fc_st_t *st, const char *path, fc_err_t *err) {
  int rc = open_file(st, path, err);
  return rc ? rc : finish_index(st, err);
}

int fc_st_open(fc_st_t **out, const char *path, fc_err_t *err) {
  *out = NULL;
  fc_st_t *st = fc_xcalloc(1, sizeof *st);
  struct stat sb;
  int rc;
  if (stat(path, &sb) != 0) {
    rc = fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
  } else if (S_ISDIR(sb.st_mode)) {
    char *idx = fc_path_join(path, "model.safetensors.index.json");
    char *single = fc_path_join(path, "model.safetensors");
    if (fc_path_exists(idx)) rc = open_index(st, idx, err);
    else if (fc_path_exists(single)) rc = open_single(st, single, err);
    else
      rc = fc_err_set(err, FC_ENOTFOUND,
                      "%s: no model.safetensors or model.safetensors.index.json", path);
    free(idx);
    free(single);
  } else {
    size_t n = strlen(path);
    if (n > 11 && !strcmp(path + n - 11, ".index.json")) rc = open_index(st, path, err);
    else rc = open_single(st, path, err);
  }
  if (rc) {
    fc_st_close(&st);
    return rc;
  }
  *out = st;
  return 0;
}

void fc_st_close(fc_st_t **pst) {
  fc_st_t *st = *pst;
  if (!st) return;
  for (size_t i = 0; i < st->ntensors; i++) free((char *)st->tensors[i].name);
  for (size_t i = 0; i < st->nfiles; i++) {
    munmap(st->files[i].map, st->files[i].size);
    free(st->files[i].path);
    json_decref(st->files[i].meta);
  }
  free(st->files);
  free(st->tensors);
  free(st->by_name);
  free(st);
  *pst = NULL;
}

size_t fc_st_count(const fc_st_t *st) { return st->ntensors; }

const fc_st_tensor_t *fc_st_at(const fc_st_t *st, size_t i) {
  assert(i < st->ntensors);
  return &st->tensors[i];
}

const fc_st_tensor_t *fc_st_find(const fc_st_t *st, const char *name) {
  fc_st_tensor_t key = {.name = name}, *kp = &key;
  fc_st_tensor_t **hit = bsearch(&kp, st->by_name, st->ntensors, sizeof *st->by_name, cmp_name);
  return hit ? *hit : NULL;
}

size_t fc_st_num_shards(const fc_st_t *st) { return st->nfiles; }
const char *fc_st_shard_path(const fc_st_t *st, size_t shard) { return st->files[shard].path; }

const char *fc_st_meta(const fc_st_t *st, const char *key) {
  if (!st->nfiles || !st->files[0].meta) return NULL;
  return json_string_value(json_object_get(st->files[0].meta, key));
}

size_t fc_st_meta_count(const fc_st_t *st) {
  return st->nfiles && st->files[0].meta ? json_object_size(st->files[0].meta) : 0;
}

void fc_st_meta_at(const fc_st_t *st, size_t i, const char **key, const char **value) {
  const char *k;
  json_t *v;
  size_t n = 0;
  json_object_foreach(st->files[0].meta, k, v) {
    if (n++ == i) {
      *key = k;
      *value = json_string_value(v);
      return;
    }
  }
  assert(0 && "metadata index out of range");
}

int fc_st_to_f32(const fc_st_tensor_t *t, float *out, fc_err_t *err) {
  return fc_st_to_f32_range(t, 0, (size_t)t->numel, out, err);
}

int fc_st_to_f32_range(const fc_st_tensor_t *t, size_t off, size_t n, float *out, fc_err_t *err) {
  assert(off + n <= (size_t)t->numel);
  const uint8_t *p = (const uint8_t *)t->data + off * fc_dtype_size(t->dtype);
  switch (t->dtype) {
  case FC_DT_F32: memcpy(out, p, n * 4); return 0;
  case FC_DT_F16:
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, p + 2 * i, 2);
      out[i] = fc_f16_to_f32(h);
    }
    return 0;
  case FC_DT_BF16:
    /* The widening shift written out (not fc_bf16_to_f32, a call per element) vectorises:
     * the merge converts blocks of bf16 through here. */
    for (size_t i = 0; i < n; i++) {
      uint16_t h;
      memcpy(&h, p + 2 * i, 2);
      uint32_t u = (uint32_t)h << 16;
      memcpy(&out[i], &u, 4);
    }
    return 0;
  case FC_DT_F64:
    for (size_t i = 0; i < n; i++) {
      double d;
      memcpy(&d, p + 8 * i, 8);
      out[i] = (float)d;
    }
    return 0;
  default:
    return fc_err_set(err, FC_EUNSUPPORTED, "tensor '%s' has dtype %s, not a float type", t->name,
                      fc_dtype_name(t->dtype));
  }
}

const float *fc_st_f32(const fc_st_tensor_t *t, float **owned, fc_err_t *err) {
  *owned = NULL;
  if (t->dtype == FC_DT_F32 && ((uintptr_t)t->data & 3) == 0) return t->data;
  float *buf = fc_xmalloc((size_t)t->numel * sizeof(float));
  if (fc_st_to_f32(t, buf, err) != 0) {
    free(buf);
    return NULL;
  }
  *owned = buf;
  return buf;
}

/* ---- writer ---- */

struct fc_st_writer {
  fc_atomic_file_t af;
  fc_st_spec_t *specs;
  size_t n, next;
  uint16_t *conv; /* conversion buffer for f16/bf16 output */
  size_t conv_cap;
  uint64_t total; /* file size once complete */
};

static size_t spec_bytes(const fc_st_spec_t *s) {
  size_t n = 1;
  for (int d = 0; d < s->ndim; d++) n *= (size_t)s->shape[d];
  return n * fc_dtype_size(s->dtype);
}

int fc_st_writer_new(fc_st_writer_t **out, const char *path, const fc_st_spec_t *specs, size_t n,
                     const char *const *meta, fc_err_t *err) {
  *out = NULL;
  json_t *root = json_object();
  if (meta && meta[0]) {
    json_t *m = json_object();
    for (size_t i = 0; meta[i] && meta[i + 1]; i += 2) json_object_set_new(m, meta[i], json_string(meta[i + 1]));
    json_object_set_new(root, "__metadata__", m);
  }
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    assert(specs[i].ndim >= 0 && specs[i].ndim <= FC_ST_MAX_DIMS);
    json_t *t = json_object(), *shape = json_array();
    json_object_set_new(t, "dtype", json_string(fc_dtype_name(specs[i].dtype)));
    for (int d = 0; d < specs[i].ndim; d++) json_array_append_new(shape, json_integer(specs[i].shape[d]));
    json_object_set_new(t, "shape", shape);
    uint64_t sz = spec_bytes(&specs[i]);
    json_t *offs = json_array();
    json_array_append_new(offs, json_integer((json_int_t)off));
    json_array_append_new(offs, json_integer((json_int_t)(off + sz)));
    json_object_set_new(t, "data_offsets", offs);
    off += sz;
    if (json_object_set_new(root, specs[i].name, t) != 0 || json_object_size(root) != i + 1 + (meta && meta[0])) {
      json_decref(root);
      return fc_err_set(err, FC_EINVAL, "duplicate tensor name '%s'", specs[i].name);
    }
  }
  char *hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(root);
  size_t hlen = strlen(hdr);
  size_t padded = (hlen + 7) & ~(size_t)7; /* keeps the data 8-byte aligned for mmap users */
  fc_st_writer_t *w = fc_xcalloc(1, sizeof *w);
  int rc = fc_atomic_open(&w->af, path, err);
  if (rc) {
    free(hdr);
    free(w);
    return rc;
  }
  uint8_t len8[8];
  fc_put_le64(len8, padded);
  int ok = fwrite(len8, 1, 8, w->af.fp) == 8 && fwrite(hdr, 1, hlen, w->af.fp) == hlen;
  for (size_t i = hlen; i < padded && ok; i++) ok = fputc(' ', w->af.fp) != EOF;
  free(hdr);
  if (!ok) {
    fc_atomic_abort(&w->af);
    free(w);
    return fc_err_set(err, FC_EIO, "cannot write %s", path);
  }
  w->specs = fc_xmalloc((n ? n : 1) * sizeof *w->specs);
  for (size_t i = 0; i < n; i++) {
    w->specs[i] = specs[i];
    w->specs[i].name = fc_xstrdup(specs[i].name);
  }
  w->n = n;
  w->total = 8 + padded + off;
  *out = w;
  return 0;
}

int fc_st_writer_reserve(fc_st_writer_t *w, fc_err_t *err) {
  if (fflush(w->af.fp) == EOF)
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", w->af.tmp, strerror(errno));
  int rc = fallocate(fileno(w->af.fp), FALLOC_FL_KEEP_SIZE, 0, (off_t)w->total);
  if (rc == 0 || errno == EOPNOTSUPP || errno == ENOSYS) return 0;
  return fc_err_set(err, FC_EIO, "cannot reserve %.1f MB for %s: %s",
                    (double)w->total / 1e6, w->af.tmp, strerror(errno));
}

int fc_st_writer_put_raw(fc_st_writer_t *w, size_t i, const void *data, size_t nbytes,
                         fc_err_t *err) {
  assert(i == w->next && i < w->n && "tensors are written in declaration order");
  assert(nbytes == spec_bytes(&w->specs[i]));
  if (nbytes && fwrite(data, 1, nbytes, w->af.fp) != nbytes)
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", w->af.tmp, strerror(errno));
  w->next++;
  return 0;
}

int fc_st_writer_put_at(fc_st_writer_t *w, size_t i, int *fd, uint64_t *offset, fc_err_t *err) {
  assert(i == w->next && i < w->n && "tensors are written in declaration order");
  off_t pos;
  if (fflush(w->af.fp) == EOF || (pos = ftello(w->af.fp)) < 0)
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", w->af.tmp, strerror(errno));
  *fd = fileno(w->af.fp);
  *offset = (uint64_t)pos;
  return 0;
}

void fc_st_writer_put_done(fc_st_writer_t *w, size_t i) {
  assert(i == w->next && i < w->n && "tensors are written in declaration order");
  /* The stream's position moves past the bytes written around it (fseeko, not the fd's). */
  off_t pos = ftello(w->af.fp);
  int rc = fseeko(w->af.fp, pos + (off_t)spec_bytes(&w->specs[i]), SEEK_SET);
  assert(rc == 0);
  (void)rc;
  w->next++;
}

int fc_st_writer_put_f32(fc_st_writer_t *w, size_t i, const float *data, fc_err_t *err) {
  const fc_st_spec_t *s = &w->specs[i];
  size_t n = spec_bytes(s) / fc_dtype_size(s->dtype);
  if (s->dtype == FC_DT_F32) return fc_st_writer_put_raw(w, i, data, n * 4, err);
  assert((s->dtype == FC_DT_F16 || s->dtype == FC_DT_BF16) && "writer converts to f32/f16/bf16");
  if (w->conv_cap < n) {
    free(w->conv);
    w->conv = fc_xmalloc(n * sizeof *w->conv);
    w->conv_cap = n;
  }
  for (size_t k = 0; k < n; k++)
    w->conv[k] = s->dtype == FC_DT_F16 ? fc_f32_to_f16(data[k]) : fc_f32_to_bf16(data[k]);
  return fc_st_writer_put_raw(w, i, w->conv, n * 2, err);
}

static void writer_free(fc_st_writer_t *w) {
  for (size_t i = 0; i < w->n; i++) free((char *)w->specs[i].name);
  free(w->specs);
  free(w->conv);
  free(w);
}

int fc_st_writer_finish(fc_st_writer_t **pw, fc_err_t *err) {
  fc_st_writer_t *w = *pw;
  *pw = NULL;
  int rc;
  if (w->next != w->n) {
    fc_atomic_abort(&w->af);
    rc = fc_err_set(err, FC_EINVAL, "only %zu of %zu tensors were written", w->next, w->n);
  } else {
    rc = fc_atomic_commit(&w->af, err);
  }
  writer_free(w);
  return rc;
}

void fc_st_writer_abort(fc_st_writer_t **pw) {
  fc_st_writer_t *w = *pw;
  if (!w) return;
  fc_atomic_abort(&w->af);
  writer_free(w);
  *pw = NULL;
}

int fc_st_write_index(const char *path, size_t n, const char *const *names,
                      const char *const *files, uint64_t total_size, fc_err_t *err) {
  json_t *root = json_object(), *meta = json_object(), *wm = json_object();
  json_object_set_new(meta, "total_size", json_integer((json_int_t)total_size));
  json_object_set_new(root, "metadata", meta);
  for (size_t i = 0; i < n; i++) json_object_set_new(wm, names[i], json_string(files[i]));
  json_object_set_new(root, "weight_map", wm);
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(root);
  int rc = fc_write_text_file(path, s, err);
  free(s);
  return rc;
}
