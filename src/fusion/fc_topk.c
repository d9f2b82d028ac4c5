/* Top-K store: streaming writer and validated memory-mapped reader (format in fc_topk.h). */
#include "fc_topk.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char k_magic[8] = {'F', 'C', 'T', 'O', 'P', 'K', '\r', '\n'};
enum { HDR_FIXED = 64, EX_HDR = 16, MAX_MODEL_ID = 4096 };

uint64_t fc_hash64(const void *data, size_t len, uint64_t seed) {
  /* Word-at-a-time multiply-xorshift mix: fast enough to check every example on each read. */
  const uint8_t *p = data;
  uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (len + 1));
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h ^= w * 0xff51afd7ed558ccdULL;
    h = (h << 31 | h >> 33) * 0xc4ceb9fe1a85ec53ULL;
    p += 8;
    len -= 8;
  }
  uint64_t w = 0;
  for (size_t i = 0; i < len; i++) w |= (uint64_t)p[i] << (8 * i);
  h ^= w * 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 29;
  return h;
}

uint16_t fc_topk_lp_encode(float lp) {
  if (!(lp > -INFINITY)) return 0xffff; /* absent (or NaN) */
  if (lp >= 0) return 0;
  float c = -lp * 2048.0f + 0.5f;
  if (c >= 65534.0f) return 65534;
  return (uint16_t)c;
}

float fc_topk_lp_decode(uint16_t c) {
  return c == 0xffff ? -INFINITY : -(float)c * FC_TOPK_LP_STEP;
}

static uint32_t id_bytes_for(uint32_t vocab) { return vocab <= 65536 ? 2 : 3; }

uint64_t fc_topk_example_bytes(uint32_t n, uint32_t k, uint32_t vocab) {
  uint64_t ib = id_bytes_for(vocab);
  return EX_HDR + (uint64_t)n * ib + (n + 7) / 8 + (uint64_t)n * k * (ib + 2);
}


/* ---------------------------------------------------------------------------------------- */

struct fc_topk_writer {
  fc_atomic_file_t af;
  char *model_id;
  uint32_t model_id_len, k, vocab, ib;
  uint64_t tok_hash;
  uint64_t pos;                 /* file offset of the next example */
  uint64_t *off, *sum, n, cap;  /* index being built */
  uint8_t *buf;
  size_t buf_cap;
  int failed;
};

static void build_header(uint8_t *h, uint32_t ib, uint32_t k, uint32_t vocab, uint64_t n,
                         uint64_t tok_hash, uint64_t index_off, uint32_t model_id_len) {
  memset(h, 0, HDR_FIXED);
  memcpy(h, k_magic, 8);
  fc_put_le32(h + 8, FC_TOPK_VERSION);
  fc_put_le32(h + 12, ib);
  fc_put_le32(h + 16, k);
  fc_put_le32(h + 20, vocab);
  fc_put_le64(h + 24, n);
  fc_put_le64(h + 32, tok_hash);
  fc_put_le64(h + 40, index_off);
  fc_put_le32(h + 48, model_id_len);
}

static uint64_t header_checksum(const uint8_t *h, const uint8_t *model_id, uint32_t model_id_len,
                                const uint8_t *index, size_t index_len) {
  uint64_t c = fc_hash64(h, 56, 1);
  c = fc_hash64(model_id, model_id_len, c);
  return fc_hash64(index, index_len, c);
}

int fc_topk_writer_new(fc_topk_writer_t **out, const char *path, const fc_topk_info_t *info,
                       fc_err_t *err) {
  assert(info && info->k >= 1 && info->k <= FC_TOPK_MAX_K && info->vocab >= 1 &&
         info->vocab <= (1u << 24));
  const char *mid = info->model_id ? info->model_id : "";
  size_t mlen = strlen(mid);
  if (mlen > MAX_MODEL_ID) return fc_err_set(err, FC_EINVAL, "model id longer than %d bytes", MAX_MODEL_ID);
  fc_topk_writer_t *w = fc_xcalloc(1, sizeof *w);
  int rc = fc_atomic_open(&w->af, path, err);
  if (rc) {
    free(w);
    return rc;
  }
  w->model_id = fc_xstrdup(mid);
  w->model_id_len = (uint32_t)mlen;
  w->k = info->k;
  w->vocab = info->vocab;
  w->ib = id_bytes_for(info->vocab);
  w->tok_hash = info->tok_hash;
  uint8_t h[HDR_FIXED] = {0}; /* placeholder, rewritten by finish */
  if (fwrite(h, 1, HDR_FIXED, w->af.fp) != HDR_FIXED ||
      fwrite(mid, 1, mlen, w->af.fp) != mlen) {
    fc_topk_writer_destroy(&w);
    return fc_err_set(err, FC_EIO, "cannot write %s", path);
  }
  w->pos = HDR_FIXED + mlen;
  *out = w;
  return 0;
}

static void put_id(uint8_t *p, uint32_t v, uint32_t ib) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  if (ib == 3) p[2] = (uint8_t)(v >> 16);
}
static uint32_t get_id(const uint8_t *p, uint32_t ib) {
  uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8;
  if (ib == 3) v |= (uint32_t)p[2] << 16;
  return v;
}

int fc_topk_writer_add(fc_topk_writer_t *w, const fc_topk_ex_t *ex, fc_err_t *err) {
  if (w->failed) return fc_err_set(err, FC_EIO, "top-K writer already failed");
  uint32_t n = ex->n, k = w->k, ib = w->ib;
  for (uint64_t i = 0; i < n; i++) {
    if (ex->ids[i] >= w->vocab)
      return fc_err_set(err, FC_EINVAL, "token id %u at position %lu is outside the vocabulary (%u)",
                        ex->ids[i], (unsigned long)i, w->vocab);
    for (uint32_t j = 0; j < k; j++) {
      float lp = ex->top_lp[i * k + j];
      if (lp > -INFINITY && ex->top_ids[i * k + j] >= w->vocab)
        return fc_err_set(err, FC_EINVAL, "top-K id %u at position %lu is outside the vocabulary (%u)",
                          ex->top_ids[i * k + j], (unsigned long)i, w->vocab);
    }
  }
  uint64_t size = fc_topk_example_bytes(n, k, w->vocab);
  if (size > w->buf_cap) {
    w->buf_cap = size * 2;
    w->buf = fc_xrealloc(w->buf, w->buf_cap);
  }
  uint8_t *p = w->buf;
  fc_put_le32(p, n);
  uint32_t ce_bits;
  memcpy(&ce_bits, &ex->mean_ce, 4);
  fc_put_le32(p + 4, ce_bits);
  fc_put_le32(p + 8, ex->tag);
  uint32_t n_resp = 0;
  for (uint32_t i = 0; i < n; i++) n_resp += ex->mask[i] != 0;
  fc_put_le32(p + 12, n_resp);
  p += EX_HDR;
  for (uint32_t i = 0; i < n; i++, p += ib) put_id(p, ex->ids[i], ib);
  memset(p, 0, (n + 7) / 8);
  for (uint32_t i = 0; i < n; i++)
    if (ex->mask[i]) p[i >> 3] |= (uint8_t)(1u << (i & 7));
  p += (n + 7) / 8;
  uint64_t nk = (uint64_t)n * k;
  for (uint64_t i = 0; i < nk; i++, p += ib) {
    int absent = !(ex->top_lp[i] > -INFINITY);
    put_id(p, absent ? 0 : ex->top_ids[i], ib);
  }
  for (uint64_t i = 0; i < nk; i++, p += 2) {
    uint16_t c = fc_topk_lp_encode(ex->top_lp[i]);
    p[0] = (uint8_t)c;
    p[1] = (uint8_t)(c >> 8);
  }
  if (fwrite(w->buf, 1, size, w->af.fp) != size) {
    w->failed = 1;
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", w->af.tmp, strerror(errno));
  }
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 256;
    w->off = fc_xrealloc(w->off, w->cap * sizeof *w->off);
    w->sum = fc_xrealloc(w->sum, w->cap * sizeof *w->sum);
  }
  w->off[w->n] = w->pos;
  w->sum[w->n] = fc_hash64(w->buf, size, 7);
  w->n++;
  w->pos += size;
  return 0;
}

int fc_topk_writer_finish(fc_topk_writer_t *w, fc_err_t *err) {
  if (w->failed) return fc_err_set(err, FC_EIO, "top-K writer already failed");
  size_t ilen = (size_t)(2 * w->n + 1) * 8;
  uint8_t *index = fc_xmalloc(ilen);
  for (uint64_t i = 0; i < w->n; i++) fc_put_le64(index + 8 * i, w->off[i]);
  fc_put_le64(index + 8 * w->n, w->pos);
  for (uint64_t i = 0; i < w->n; i++) fc_put_le64(index + 8 * (w->n + 1 + i), w->sum[i]);
  uint8_t h[HDR_FIXED];
  build_header(h, w->ib, w->k, w->vocab, w->n, w->tok_hash, w->pos, w->model_id_len);
  fc_put_le64(h + 56, header_checksum(h, (const uint8_t *)w->model_id, w->model_id_len, index, ilen));
  int ok = fwrite(index, 1, ilen, w->af.fp) == ilen && fseek(w->af.fp, 0, SEEK_SET) == 0 &&
           fwrite(h, 1, HDR_FIXED, w->af.fp) == HDR_FIXED;
  free(index);
  if (!ok) {
    w->failed = 1;
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", w->af.tmp, strerror(errno));
  }
  int rc = fc_atomic_commit(&w->af, err);
  if (rc) w->failed = 1;
  return rc;
}

void fc_topk_writer_destroy(fc_topk_writer_t **pw) {
  fc_topk_writer_t *w = *pw;
  if (!w) return;
  if (w->af.fp || w->af.tmp) fc_atomic_abort(&w->af);
  free(w->model_id);
  free(w->off);
  free(w->sum);
  free(w->buf);
  free(w);
  *pw = NULL;
}

/* ---------------------------------------------------------------------------------------- */

struct fc_topk_reader {
  uint8_t *map;
  size_t size;
  char *path;
  char *model_id;
  uint32_t ib, k, vocab;
  uint64_t n, tok_hash;
  const uint8_t *index; /* offsets[n+1] then checksums[n] */
};

int fc_topk_open(fc_topk_reader_t **out, const char *path, fc_err_t *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int rc = fc_err_set(err, FC_EIO, "cannot stat %s: %s", path, strerror(errno));
    close(fd);
    return rc;
  }
  size_t size = (size_t)st.st_size;
  if (size < HDR_FIXED) {
    close(fd);
    return fc_err_set(err, FC_EFORMAT, "%s: not a top-K store (%zu bytes, too short)", path, size);
  }
  uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return fc_err_set(err, FC_EIO, "cannot map %s: %s", path, strerror(errno));
  int rc = 0;
  const uint8_t *h = map;
  uint32_t ib = fc_get_le32(h + 12), k = fc_get_le32(h + 16), vocab = fc_get_le32(h + 20), mlen = fc_get_le32(h + 48);
  uint64_t n = fc_get_le64(h + 24), index_off = fc_get_le64(h + 40);
  if (memcmp(h, k_magic, 8) != 0) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: not a top-K store (bad magic)", path);
  } else if (fc_get_le32(h + 8) != FC_TOPK_VERSION) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: top-K store version %u, this build reads %d", path,
                    fc_get_le32(h + 8), FC_TOPK_VERSION);
  } else if ((ib != 2 && ib != 3) || ib != id_bytes_for(vocab) || k < 1 || k > FC_TOPK_MAX_K ||
             vocab < 1 || vocab > (1u << 24) || mlen > MAX_MODEL_ID) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: bad header (id bytes %u, K %u, vocab %u, model id %u bytes)",
                    path, ib, k, vocab, mlen);
  } else if (n > size / 16 || index_off < HDR_FIXED + (uint64_t)mlen || index_off > size ||
             size - index_off != (2 * n + 1) * 8) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: truncated or corrupt (%zu bytes; header says %lu examples, index at %lu)",
                    path, size, (unsigned long)n, (unsigned long)index_off);
  } else if (fc_get_le64(h + 56) != header_checksum(h, map + HDR_FIXED, mlen, map + index_off,
                                               (size_t)(2 * n + 1) * 8)) {
    rc = fc_err_set(err, FC_EFORMAT, "%s: header or index checksum mismatch (corrupt file)", path);
  } else {
    const uint8_t *ix = map + index_off;
    uint64_t prev = HDR_FIXED + mlen;
    for (uint64_t i = 0; i <= n && rc == 0; i++) {
      uint64_t o = fc_get_le64(ix + 8 * i);
      if (o != prev && i == 0) rc = -1;
      if (o < prev || o > index_off || (i == n && o != index_off)) rc = -1;
      if (i > 0 && rc == 0) {
        uint64_t len = o - prev;
        if (len < EX_HDR) rc = -1;
        else if (fc_topk_example_bytes(fc_get_le32(map + prev), k, vocab) != len) rc = -1;
      }
      prev = o;
    }
    if (rc) rc = fc_err_set(err, FC_EFORMAT, "%s: example index is not monotone or out of bounds", path);
  }
  if (rc) {
    munmap(map, size);
    return rc;
  }
  fc_topk_reader_t *r = fc_xcalloc(1, sizeof *r);
  r->map = map;
  r->size = size;
  r->path = fc_xstrdup(path);
  r->model_id = fc_xmalloc(mlen + 1);
  memcpy(r->model_id, map + HDR_FIXED, mlen);
  r->model_id[mlen] = 0;
  r->ib = ib;
  r->k = k;
  r->vocab = vocab;
  r->n = n;
  r->tok_hash = fc_get_le64(h + 32);
  r->index = map + index_off;
  *out = r;
  return 0;
}

void fc_topk_close(fc_topk_reader_t **pr) {
  fc_topk_reader_t *r = *pr;
  if (!r) return;
  munmap(r->map, r->size);
  free(r->path);
  free(r->model_id);
  free(r);
  *pr = NULL;
}

uint64_t fc_topk_count(const fc_topk_reader_t *r) { return r->n; }
uint32_t fc_topk_k(const fc_topk_reader_t *r) { return r->k; }
uint32_t fc_topk_vocab(const fc_topk_reader_t *r) { return r->vocab; }
uint64_t fc_topk_tok_hash(const fc_topk_reader_t *r) { return r->tok_hash; }
const char *fc_topk_model_id(const fc_topk_reader_t *r) { return r->model_id; }

uint32_t fc_topk_len(const fc_topk_reader_t *r, uint64_t idx) {
  assert(idx < r->n);
  return fc_get_le32(r->map + fc_get_le64(r->index + 8 * idx));
}

void fc_topk_ex_reserve(fc_topk_ex_t *ex, uint32_t n, uint32_t k) {
  uint32_t cap = n < 16 ? 16 : n;
  if (!ex->ids || ex->cap < n) {
    ex->ids = fc_xrealloc(ex->ids, (size_t)cap * sizeof *ex->ids);
    ex->mask = fc_xrealloc(ex->mask, cap);
    ex->cap = cap;
  }
  uint64_t ne = (uint64_t)ex->cap * k;
  if (!ex->top_ids || ex->cap_entries < ne) {
    ex->top_ids = fc_xrealloc(ex->top_ids, ne * sizeof *ex->top_ids);
    ex->top_lp = fc_xrealloc(ex->top_lp, ne * sizeof *ex->top_lp);
    ex->cap_entries = ne;
  }
}

void fc_topk_ex_free(fc_topk_ex_t *ex) {
  free(ex->ids);
  free(ex->mask);
  free(ex->top_ids);
  free(ex->top_lp);
  memset(ex, 0, sizeof *ex);
}

int fc_topk_get(const fc_topk_reader_t *r, uint64_t idx, fc_topk_ex_t *ex, fc_err_t *err) {
  if (idx >= r->n)
    return fc_err_set(err, FC_EINVAL, "%s: example %lu out of range (%lu examples)", r->path,
                      (unsigned long)idx, (unsigned long)r->n);
  uint64_t o = fc_get_le64(r->index + 8 * idx), e = fc_get_le64(r->index + 8 * (idx + 1));
  const uint8_t *p = r->map + o;
  if (fc_hash64(p, e - o, 7) != fc_get_le64(r->index + 8 * (r->n + 1 + idx)))
    return fc_err_set(err, FC_EFORMAT, "%s: example %lu is corrupt (checksum mismatch)", r->path,
                      (unsigned long)idx);
  uint32_t n = fc_get_le32(p), k = r->k, ib = r->ib;
  fc_topk_ex_reserve(ex, n, k);
  ex->n = n;
  memcpy(&ex->mean_ce, p + 4, 4);
  ex->tag = fc_get_le32(p + 8);
  uint32_t n_resp = fc_get_le32(p + 12), cnt = 0;
  p += EX_HDR;
  for (uint32_t i = 0; i < n; i++, p += ib) {
    ex->ids[i] = get_id(p, ib);
    if (ex->ids[i] >= r->vocab) goto bad;
  }
  for (uint32_t i = 0; i < n; i++) {
    ex->mask[i] = (p[i >> 3] >> (i & 7)) & 1;
    cnt += ex->mask[i];
  }
  if (cnt != n_resp) goto bad;
  p += (n + 7) / 8;
  uint64_t nk = (uint64_t)n * k;
  const uint8_t *q = p + nk * ib;
  for (uint64_t i = 0; i < nk; i++, p += ib, q += 2) {
    ex->top_ids[i] = get_id(p, ib);
    ex->top_lp[i] = fc_topk_lp_decode((uint16_t)(q[0] | q[1] << 8));
    if (ex->top_ids[i] >= r->vocab) goto bad;
  }
  return 0;
bad:
  return fc_err_set(err, FC_EFORMAT, "%s: example %lu has inconsistent content", r->path,
                    (unsigned long)idx);
}
