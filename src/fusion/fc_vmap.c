/* Vocabulary map: sparse aligned-pair counts, their files, and the map (rules in fc_vmap.h). */
#include "fc_vmap.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fc_par.h"
#include "fc_topk.h" /* fc_hash64 */

/* ---- vocabularies -------------------------------------------------------------------------- */

int fc_vocab_from_fn(fc_vocab_t *out, uint32_t n, fc_token_text_fn fn, void *ctx, fc_err_t *err) {
  size_t cap = 1 << 16, len = 0;
  char *bytes = fc_xmalloc(cap);
  uint32_t *start = fc_xmalloc(((size_t)n + 1) * 4);
  for (uint32_t i = 0; i < n; i++) {
    start[i] = (uint32_t)len;
    for (;;) {
      int r = fn(ctx, i, bytes + len, cap - len);
      if (r < 0) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err && err->code == r && err->msg[0] ? err->msg : fc_strerror(r));
        free(bytes);
        free(start);
        return fc_err_set(err, r, "cannot get the text of token %u: %s", i, why);
      }
      if ((size_t)r <= cap - len) {
        len += (size_t)r;
        break;
      }
      while (cap - len < (size_t)r) cap *= 2;
      bytes = fc_xrealloc(bytes, cap);
    }
    if (len >= UINT32_MAX / 2) {
      free(bytes);
      free(start);
      return fc_err_set(err, FC_EINVAL, "vocabulary texts too large");
    }
  }
  start[n] = (uint32_t)len;
  out->n = n;
  out->bytes = bytes;
  out->start = start;
  return 0;
}

void fc_vocab_free(fc_vocab_t *v) {
  free((void *)v->bytes);
  free((void *)v->start);
  memset(v, 0, sizeof *v);
}

uint64_t fc_vocab_hash(const fc_vocab_t *v) {
  uint64_t h = fc_hash64(v->start, ((size_t)v->n + 1) * 4, v->n);
  return fc_hash64(v->bytes, v->start[v->n], h);
}

static inline const char *tok_text(const fc_vocab_t *v, uint32_t id, uint32_t *len) {
  *len = v->start[id + 1] - v->start[id];
  return v->bytes + v->start[id];
}

/* ---- counts -------------------------------------------------------------------------------- */

#define EMPTY_KEY UINT64_MAX

struct fc_vcount {
  uint32_t src_vocab, piv_vocab;
  uint64_t src_hash, piv_hash;
  uint64_t *keys, *vals, cap, used;
};

fc_vcount_t *fc_vcount_new(uint32_t src_vocab, uint32_t piv_vocab, uint64_t src_hash,
                           uint64_t piv_hash) {
  fc_vcount_t *c = fc_xcalloc(1, sizeof *c);
  c->src_vocab = src_vocab;
  c->piv_vocab = piv_vocab;
  c->src_hash = src_hash;
  c->piv_hash = piv_hash;
  c->cap = 1024;
  c->keys = fc_xmalloc(c->cap * 8);
  c->vals = fc_xcalloc(c->cap, 8);
  memset(c->keys, 0xff, c->cap * 8);
  return c;
}

void fc_vcount_destroy(fc_vcount_t **pc) {
  fc_vcount_t *c = *pc;
  if (!c) return;
  free(c->keys);
  free(c->vals);
  free(c);
  *pc = NULL;
}

static inline uint64_t slot_of(uint64_t key, uint64_t cap) {
  return (fc_splitmix64(key)) & (cap - 1);
}

static void grow(fc_vcount_t *c) {
  uint64_t oc = c->cap, *ok = c->keys, *ov = c->vals;
  c->cap *= 2;
  c->keys = fc_xmalloc(c->cap * 8);
  memset(c->keys, 0xff, c->cap * 8);
  c->vals = fc_xcalloc(c->cap, 8);
  for (uint64_t i = 0; i < oc; i++) {
    if (ok[i] == EMPTY_KEY) continue;
    uint64_t h = slot_of(ok[i], c->cap);
    while (c->keys[h] != EMPTY_KEY) h = (h + 1) & (c->cap - 1);
    c->keys[h] = ok[i];
    c->vals[h] = ov[i];
  }
  free(ok);
  free(ov);
}

void fc_vcount_add(fc_vcount_t *c, uint32_t s, uint32_t p, uint64_t n) {
  assert(s < c->src_vocab && p < c->piv_vocab);
  if ((c->used + 1) * 10 > c->cap * 7) grow(c);
  uint64_t key = (uint64_t)s << 32 | p, h = slot_of(key, c->cap);
  while (c->keys[h] != EMPTY_KEY && c->keys[h] != key) h = (h + 1) & (c->cap - 1);
  if (c->keys[h] == EMPTY_KEY) {
    c->keys[h] = key;
    c->used++;
  }
  c->vals[h] += n;
}

uint64_t fc_vcount_get(const fc_vcount_t *c, uint32_t s, uint32_t p) {
  uint64_t key = (uint64_t)s << 32 | p, h = slot_of(key, c->cap);
  while (c->keys[h] != EMPTY_KEY) {
    if (c->keys[h] == key) return c->vals[h];
    h = (h + 1) & (c->cap - 1);
  }
  return 0;
}

int fc_vcount_add_path(fc_vcount_t *c, const uint32_t *src_ids, const uint32_t *piv_ids,
                       const fc_align_result_t *path, fc_err_t *err) {
  for (uint32_t k = 0; k < path->n_path; k++) {
    uint32_t s = src_ids[path->src[k]], p = piv_ids[path->piv[k]];
    if (s >= c->src_vocab || p >= c->piv_vocab)
      return fc_err_set(err, FC_EINVAL, "aligned pair (%u, %u) outside the vocabularies (%u, %u)", s, p,
                        c->src_vocab, c->piv_vocab);
    fc_vcount_add(c, s, p, 1);
  }
  return 0;
}

uint64_t fc_vcount_pairs(const fc_vcount_t *c) { return c->used; }

uint64_t fc_vcount_total(const fc_vcount_t *c) {
  uint64_t t = 0;
  for (uint64_t i = 0; i < c->cap; i++)
    if (c->keys[i] != EMPTY_KEY) t += c->vals[i];
  return t;
}

static int same_vocab(const fc_vcount_t *a, const fc_vcount_t *b) {
  return a->src_vocab == b->src_vocab && a->piv_vocab == b->piv_vocab &&
         a->src_hash == b->src_hash && a->piv_hash == b->piv_hash;
}

int fc_vcount_merge(fc_vcount_t *dst, const fc_vcount_t *src, fc_err_t *err) {
  if (!same_vocab(dst, src))
    return fc_err_set(err, FC_EMISMATCH, "count files are for different vocabularies (%u x %u vs %u x %u, or different texts)",
                      dst->src_vocab, dst->piv_vocab, src->src_vocab, src->piv_vocab);
  for (uint64_t i = 0; i < src->cap; i++)
    if (src->keys[i] != EMPTY_KEY)
      fc_vcount_add(dst, (uint32_t)(src->keys[i] >> 32), (uint32_t)src->keys[i], src->vals[i]);
  return 0;
}

int fc_vcount_equal(const fc_vcount_t *a, const fc_vcount_t *b) {
  if (!same_vocab(a, b) || a->used != b->used) return 0;
  for (uint64_t i = 0; i < a->cap; i++)
    if (a->keys[i] != EMPTY_KEY &&
        fc_vcount_get(b, (uint32_t)(a->keys[i] >> 32), (uint32_t)a->keys[i]) != a->vals[i])
      return 0;
  return 1;
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}


/* Both files: 48-byte header (magic, u32 version, u32 a, u32 b, u32 c, u64 hash1, u64 hash2,
 * u64 count), payload, u64 checksum of everything before it. */
enum { VHDR = 48 };
static const char k_cnt_magic[8] = {'F', 'C', 'V', 'C', 'N', 'T', '\r', '\n'};
static const char k_map_magic[8] = {'F', 'C', 'V', 'M', 'A', 'P', '\r', '\n'};

static int write_blob(const char *path, uint8_t *buf, size_t len, fc_err_t *err) {
  fc_put_le64(buf + len - 8, fc_hash64(buf, len - 8, 3));
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc) return rc;
  if (fwrite(buf, 1, len, af.fp) != len) {
    fc_atomic_abort(&af);
    return fc_err_set(err, FC_EIO, "cannot write %s: %s", path, strerror(errno));
  }
  return fc_atomic_commit(&af, err);
}

/* Reads a file and checks magic, version, size and checksum; on success *buf holds it. */
static int read_blob(const char *path, const char magic[8], const char *what, uint8_t **buf,
                     size_t *len, fc_err_t *err) {
  char *b;
  int rc = fc_read_file(path, &b, len, err);
  if (rc) return rc;
  *buf = (uint8_t *)b;
  if (*len < VHDR + 8 || memcmp(b, magic, 8) != 0)
    rc = fc_err_set(err, FC_EFORMAT, "%s: not a %s file", path, what);
  else if (fc_get_le32(*buf + 8) != 1)
    rc = fc_err_set(err, FC_EFORMAT, "%s: %s file version %u, this build reads 1", path, what, fc_get_le32(*buf + 8));
  else if (fc_get_le64(*buf + *len - 8) != fc_hash64(*buf, *len - 8, 3))
    rc = fc_err_set(err, FC_EFORMAT, "%s: %s file is truncated or corrupt (checksum mismatch)", path, what);
  if (rc) free(b);
  return rc;
}

int fc_vcount_save(const fc_vcount_t *c, const char *path, fc_err_t *err) {
  uint64_t n = c->used;
  uint64_t *keys = fc_xmalloc((n + 1) * 8);
  uint64_t k = 0;
  for (uint64_t i = 0; i < c->cap; i++)
    if (c->keys[i] != EMPTY_KEY) keys[k++] = c->keys[i];
  qsort(keys, n, 8, cmp_u64);
  size_t len = VHDR + n * 16 + 8;
  uint8_t *buf = fc_xcalloc(len, 1);
  memcpy(buf, k_cnt_magic, 8);
  fc_put_le32(buf + 8, 1);
  fc_put_le32(buf + 12, c->src_vocab);
  fc_put_le32(buf + 16, c->piv_vocab);
  fc_put_le64(buf + 24, c->src_hash);
  fc_put_le64(buf + 32, c->piv_hash);
  fc_put_le64(buf + 40, n);
  for (uint64_t i = 0; i < n; i++) {
    fc_put_le64(buf + VHDR + 16 * i, keys[i]);
    fc_put_le64(buf + VHDR + 16 * i + 8, fc_vcount_get(c, (uint32_t)(keys[i] >> 32), (uint32_t)keys[i]));
  }
  free(keys);
  int rc = write_blob(path, buf, len, err);
  free(buf);
  return rc;
}

int fc_vcount_load(fc_vcount_t **out, const char *path, fc_err_t *err) {
  uint8_t *b;
  size_t len;
  int rc = read_blob(path, k_cnt_magic, "vocabulary count", &b, &len, err);
  if (rc) return rc;
  uint32_t sv = fc_get_le32(b + 12), pv = fc_get_le32(b + 16);
  uint64_t n = fc_get_le64(b + 40);
  if (sv == 0 || pv == 0 || sv > (1u << 24) || pv > (1u << 24) || n > len / 16 || len != VHDR + n * 16 + 8) {
    free(b);
    return fc_err_set(err, FC_EFORMAT, "%s: bad vocabulary count header", path);
  }
  fc_vcount_t *c = fc_vcount_new(sv, pv, fc_get_le64(b + 24), fc_get_le64(b + 32));
  uint64_t prev = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t key = fc_get_le64(b + VHDR + 16 * i), v = fc_get_le64(b + VHDR + 16 * i + 8);
    uint32_t s = (uint32_t)(key >> 32), p = (uint32_t)key;
    if (s >= sv || p >= pv || v == 0 || (i > 0 && key <= prev)) {
      fc_vcount_destroy(&c);
      free(b);
      return fc_err_set(err, FC_EFORMAT, "%s: bad entry %lu", path, (unsigned long)i);
    }
    prev = key;
    fc_vcount_add(c, s, p, v);
  }
  free(b);
  *out = c;
  return 0;
}

int fc_vcount_merge_files(fc_vcount_t **out, const char *const *paths, int n, fc_err_t *err) {
  if (n < 1) return fc_err_set(err, FC_EINVAL, "no count files to merge");
  fc_vcount_t *acc = NULL;
  int rc = fc_vcount_load(&acc, paths[0], err);
  for (int i = 1; i < n && rc == 0; i++) {
    fc_vcount_t *c = NULL;
    rc = fc_vcount_load(&c, paths[i], err);
    if (!rc) {
      rc = fc_vcount_merge(acc, c, err);
      if (rc) fc_err_wrap(err, "merging %s", paths[i]);
    }
    fc_vcount_destroy(&c);
  }
  if (rc) {
    fc_vcount_destroy(&acc);
    return rc;
  }
  *out = acc;
  return 0;
}

/* ---- MinED index ------------------------------------------------------------------------- */

struct fc_mined_index {
  const fc_vocab_t *piv;
  uint32_t max_units;
  uint32_t *bstart; /* [max_units + 2] bucket of unit length u: ids[bstart[u] .. bstart[u+1]) */
  uint32_t *ids;    /* pivot ids by unit length, ascending within a bucket */
  uint64_t *sig;    /* [2n] per id: two bit sets of its units (two hashes to 64 classes) */
  uint32_t *units;  /* decoded units of every pivot token, id i at units[ustart[i] ..] */
  uint64_t *ustart; /* [n + 1] */
};

static uint64_t unit_sig(const char *s, uint32_t len, uint32_t mult) {
  /* Every unit in a (mod 64) class; a class present in one string and absent from the other
   * needs at least one edit, which gives a cheap lower bound. Classes by code point hash. */
  uint64_t sig = 0;
  const uint8_t *p = (const uint8_t *)s;
  for (uint32_t i = 0; i < len;) {
    uint32_t c = p[i], need = 0, cp = c;
    if (c >= 0xc2 && c <= 0xdf) need = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) need = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) need = 3, cp = c & 0x07;
    else if (c >= 0x80) cp = 0x110000 + c;
    int ok = i + need < len;
    for (uint32_t k = 1; ok && k <= need; k++) {
      if ((p[i + k] & 0xc0) != 0x80) ok = 0;
      else cp = cp << 6 | (p[i + k] & 0x3f);
    }
    if (!ok || need == 0) {
      if (need) cp = 0x110000 + c;
      i++;
    } else {
      i += need + 1;
    }
    sig |= 1ULL << ((cp * mult) >> 26);
  }
  return sig;
}

fc_mined_index_t *fc_mined_index_new(const fc_vocab_t *piv) {
  fc_mined_index_t *ix = fc_xcalloc(1, sizeof *ix);
  ix->piv = piv;
  uint32_t n = piv->n, *units = fc_xmalloc(((size_t)n + 1) * 4);
  ix->sig = fc_xmalloc(((size_t)n + 1) * 16);
  ix->ustart = fc_xmalloc(((size_t)n + 1) * 8);
  ix->units = fc_xmalloc(((size_t)piv->start[n] + 1) * 4);
  uint64_t upos = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint32_t len;
    const char *t = tok_text(piv, i, &len);
    ix->ustart[i] = upos;
    units[i] = fc_utf8_decode_units(t, len, ix->units + upos);
    upos += units[i];
    ix->sig[2 * i] = unit_sig(t, len, 0x9e3779b1u);
    ix->sig[2 * i + 1] = unit_sig(t, len, 0x85ebca6bu);
    if (units[i] > ix->max_units) ix->max_units = units[i];
  }
  ix->ustart[n] = upos;
  ix->bstart = fc_xcalloc((size_t)ix->max_units + 2, 4);
  for (uint32_t i = 0; i < n; i++)
    if (units[i] > 0) ix->bstart[units[i] + 1]++;
  for (uint32_t u = 0; u <= ix->max_units; u++) ix->bstart[u + 1] += ix->bstart[u];
  ix->ids = fc_xmalloc(((size_t)n + 1) * 4);
  uint32_t *fill = fc_xmalloc(((size_t)ix->max_units + 1) * 4);
  memcpy(fill, ix->bstart, ((size_t)ix->max_units + 1) * 4);
  for (uint32_t i = 0; i < n; i++)
    if (units[i] > 0) ix->ids[fill[units[i]]++] = i;
  free(fill);
  free(units);
  return ix;
}

void fc_mined_index_destroy(fc_mined_index_t **pix) {
  fc_mined_index_t *ix = *pix;
  if (!ix) return;
  free(ix->bstart);
  free(ix->ids);
  free(ix->sig);
  free(ix->units);
  free(ix->ustart);
  free(ix);
  *pix = NULL;
}

/* SWAR popcount: the builtin is a library call without -mpopcnt. */
static inline uint32_t popc(uint64_t x) {
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
  return (uint32_t)((x * 0x0101010101010101ULL) >> 56);
}

static void scan_bucket(const fc_mined_index_t *ix, uint32_t u, const uint32_t *q, uint32_t nq,
                        const uint64_t *qsig, uint32_t delta, uint32_t *best, uint32_t *best_id) {
  if (u == 0 || u > ix->max_units) return;
  for (uint32_t k = ix->bstart[u]; k < ix->bstart[u + 1]; k++) {
    uint32_t id = ix->ids[k];
    /* a class present in one string only needs one edit per class */
    uint64_t c0 = ix->sig[2 * id], c1 = ix->sig[2 * id + 1];
    uint32_t lb = delta, x;
    if ((x = popc(qsig[0] & ~c0)) > lb) lb = x;
    if ((x = popc(c0 & ~qsig[0])) > lb) lb = x;
    if ((x = popc(qsig[1] & ~c1)) > lb) lb = x;
    if ((x = popc(c1 & ~qsig[1])) > lb) lb = x;
    if (lb > *best || (lb == *best && id > *best_id)) continue;
    uint32_t d = fc_edit_distance_units(q, nq, ix->units + ix->ustart[id], u,
                                        *best == UINT32_MAX ? UINT32_MAX : *best + 1);
    if (d < *best || (d == *best && id < *best_id)) {
      *best = d;
      *best_id = id;
    }
  }
}

uint32_t fc_mined_nearest(const fc_mined_index_t *ix, const char *text, uint32_t len,
                          uint32_t *dist) {
  uint32_t sq[256], *q = len <= 256 ? sq : fc_xmalloc((size_t)len * 4);
  uint32_t nq = fc_utf8_decode_units(text, len, q);
  uint64_t qsig[2] = {unit_sig(text, len, 0x9e3779b1u), unit_sig(text, len, 0x85ebca6bu)};
  uint32_t best = UINT32_MAX, best_id = FC_VMAP_NONE;
  for (uint32_t delta = 0; delta <= best; delta++) {
    if (delta > nq && nq + delta > ix->max_units) break;
    scan_bucket(ix, nq + delta, q, nq, qsig, delta, &best, &best_id);
    if (delta > 0 && delta <= nq) scan_bucket(ix, nq - delta, q, nq, qsig, delta, &best, &best_id);
    if (delta == UINT32_MAX) break;
  }
  if (q != sq) free(q);
  if (dist) *dist = best;
  return best_id;
}

/* ---- the map ---------------------------------------------------------------------------- */

int fc_vmap_method_parse(const char *name, fc_vmap_method_t *out) {
  if (!strcmp(name, "stats")) *out = FC_VMAP_STATS;
  else if (!strcmp(name, "mined")) *out = FC_VMAP_MINED;
  else if (!strcmp(name, "exact")) *out = FC_VMAP_EXACT;
  else return FC_EINVAL;
  return 0;
}

const char *fc_vmap_method_name(fc_vmap_method_t m) {
  return m == FC_VMAP_STATS ? "stats" : m == FC_VMAP_MINED ? "mined" : "exact";
}

static fc_vmap_t *vmap_alloc(uint32_t sv, uint32_t pv) {
  fc_vmap_t *m = fc_xcalloc(1, sizeof *m);
  m->src_vocab = sv;
  m->piv_vocab = pv;
  m->map = fc_xmalloc(((size_t)sv + 1) * 4);
  m->how = fc_xcalloc((size_t)sv + 1, 1);
  for (uint32_t i = 0; i < sv; i++) m->map[i] = FC_VMAP_NONE;
  return m;
}

void fc_vmap_destroy(fc_vmap_t **pm) {
  fc_vmap_t *m = *pm;
  if (!m) return;
  free(m->map);
  free(m->how);
  free(m);
  *pm = NULL;
}

void fc_vmap_set(fc_vmap_t *m, uint32_t s, uint32_t p) {
  assert(s < m->src_vocab && (p < m->piv_vocab || p == FC_VMAP_NONE));
  m->map[s] = p;
  m->how[s] = FC_VMAP_BY_SET;
}

typedef struct mined_job {
  fc_vmap_t *m;
  const fc_vocab_t *src;
  const fc_mined_index_t *ix;
  const uint32_t *todo;
} mined_job_t;

/* The nearest pivot token of todo[k0..k1) (each independent of the others). */
static void mined_range(void *ctx, size_t k0, size_t k1) {
  const mined_job_t *j = ctx;
  for (size_t k = k0; k < k1; k++) {
    uint32_t s = j->todo[k], len;
    const char *t = tok_text(j->src, s, &len);
    uint32_t p = fc_mined_nearest(j->ix, t, len, NULL);
    j->m->map[s] = p;
    j->m->how[s] = p == FC_VMAP_NONE ? FC_VMAP_BY_NONE : FC_VMAP_BY_MINED;
  }
}

int fc_vmap_build(fc_vmap_t **out, fc_vmap_method_t method, const fc_vcount_t *counts,
                  const fc_vocab_t *src, const fc_vocab_t *piv, int threads, fc_err_t *err) {
  if (method == FC_VMAP_STATS) {
    if (!counts) return fc_err_set(err, FC_EINVAL, "the stats map needs alignment counts");
    if (counts->src_vocab != src->n || counts->piv_vocab != piv->n)
      return fc_err_set(err, FC_EMISMATCH, "counts are for vocabularies %u x %u, tokenizers have %u x %u",
                        counts->src_vocab, counts->piv_vocab, src->n, piv->n);
    if (counts->src_hash != fc_vocab_hash(src) || counts->piv_hash != fc_vocab_hash(piv))
      return fc_err_set(err, FC_EMISMATCH, "counts were made with different tokenizers (vocabulary hash differs)");
  }
  fc_vmap_t *m = vmap_alloc(src->n, piv->n);
  m->method = method;
  m->src_hash = fc_vocab_hash(src);
  m->piv_hash = fc_vocab_hash(piv);
  if (method == FC_VMAP_STATS) {
    uint64_t *best_cnt = fc_xcalloc((size_t)src->n + 1, 8);
    uint32_t *best_ed = fc_xmalloc(((size_t)src->n + 1) * 4);
    for (uint64_t i = 0; i < counts->cap; i++) {
      if (counts->keys[i] == EMPTY_KEY) continue;
      uint32_t s = (uint32_t)(counts->keys[i] >> 32), p = (uint32_t)counts->keys[i];
      uint64_t c = counts->vals[i];
      if (c < best_cnt[s]) continue;
      uint32_t sl, pl;
      const char *st = tok_text(src, s, &sl), *pt = tok_text(piv, p, &pl);
      if (c > best_cnt[s]) {
        best_cnt[s] = c;
        m->map[s] = p;
        best_ed[s] = UINT32_MAX; /* computed only when a tie needs it */
        continue;
      }
      if (best_ed[s] == UINT32_MAX) {
        uint32_t bl;
        const char *bt = tok_text(piv, m->map[s], &bl);
        best_ed[s] = fc_edit_distance(st, sl, bt, bl);
      }
      uint32_t d = fc_edit_distance(st, sl, pt, pl);
      if (d < best_ed[s] || (d == best_ed[s] && p < m->map[s])) {
        m->map[s] = p;
        best_ed[s] = d;
      }
    }
    for (uint32_t s = 0; s < src->n; s++)
      if (best_cnt[s]) m->how[s] = FC_VMAP_BY_COUNT;
    free(best_cnt);
    free(best_ed);
  }
  /* exact text matches for the ids still open: a hash table of pivot texts, smallest id kept */
  uint32_t tcap = 1;
  while (tcap < 2 * piv->n + 2) tcap *= 2;
  uint32_t *table = fc_xcalloc(tcap, 4);
  for (uint32_t p = 0; p < piv->n; p++) {
    uint32_t pl;
    const char *pt = tok_text(piv, p, &pl);
    if (pl == 0) continue;
    uint32_t h = (uint32_t)fc_hash64(pt, pl, 5) & (tcap - 1);
    int dup = 0;
    while (table[h]) {
      uint32_t ql;
      const char *qt = tok_text(piv, table[h] - 1, &ql);
      if (ql == pl && memcmp(qt, pt, pl) == 0) {
        dup = 1;
        break;
      }
      h = (h + 1) & (tcap - 1);
    }
    if (!dup) table[h] = p + 1;
  }
  uint32_t *todo = fc_xmalloc(((size_t)src->n + 1) * 4), n_todo = 0;
  for (uint32_t s = 0; s < src->n; s++) {
    if (m->how[s] != FC_VMAP_BY_NONE) continue;
    uint32_t sl;
    const char *st = tok_text(src, s, &sl);
    uint32_t h = (uint32_t)fc_hash64(st, sl, 5) & (tcap - 1);
    while (sl && table[h]) {
      uint32_t ql;
      const char *qt = tok_text(piv, table[h] - 1, &ql);
      if (ql == sl && memcmp(qt, st, sl) == 0) {
        m->map[s] = table[h] - 1;
        m->how[s] = FC_VMAP_BY_EXACT;
        break;
      }
      h = (h + 1) & (tcap - 1);
    }
    if (m->how[s] == FC_VMAP_BY_NONE) todo[n_todo++] = s;
  }
  free(table);
  if (method != FC_VMAP_EXACT && n_todo > 0) {
    fc_mined_index_t *ix = fc_mined_index_new(piv);
    mined_job_t job = {m, src, ix, todo};
    /* Tokens cost unevenly (their lengths differ): small chunks keep the workers even. */
    fc_par_for(n_todo, 64, threads, mined_range, &job);
    fc_mined_index_destroy(&ix);
  }
  free(todo);
  *out = m;
  return 0;
}

int fc_vmap_save(const fc_vmap_t *m, const char *path, fc_err_t *err) {
  size_t len = VHDR + (size_t)m->src_vocab * 5 + 8;
  uint8_t *buf = fc_xcalloc(len, 1);
  memcpy(buf, k_map_magic, 8);
  fc_put_le32(buf + 8, 1);
  fc_put_le32(buf + 12, m->src_vocab);
  fc_put_le32(buf + 16, m->piv_vocab);
  fc_put_le32(buf + 20, m->method);
  fc_put_le64(buf + 24, m->src_hash);
  fc_put_le64(buf + 32, m->piv_hash);
  fc_put_le64(buf + 40, m->src_vocab);
  for (uint32_t s = 0; s < m->src_vocab; s++) {
    fc_put_le32(buf + VHDR + 4 * (size_t)s, m->map[s]);
    buf[VHDR + 4 * (size_t)m->src_vocab + s] = m->how[s];
  }
  int rc = write_blob(path, buf, len, err);
  free(buf);
  return rc;
}

int fc_vmap_load(fc_vmap_t **out, const char *path, fc_err_t *err) {
  uint8_t *b;
  size_t len;
  int rc = read_blob(path, k_map_magic, "vocabulary map", &b, &len, err);
  if (rc) return rc;
  uint32_t sv = fc_get_le32(b + 12), pv = fc_get_le32(b + 16), method = fc_get_le32(b + 20);
  if (sv == 0 || pv == 0 || sv > (1u << 24) || pv > (1u << 24) || method > 2 ||
      fc_get_le64(b + 40) != sv || len != VHDR + (size_t)sv * 5 + 8) {
    free(b);
    return fc_err_set(err, FC_EFORMAT, "%s: bad vocabulary map header", path);
  }
  fc_vmap_t *m = vmap_alloc(sv, pv);
  m->method = method;
  m->src_hash = fc_get_le64(b + 24);
  m->piv_hash = fc_get_le64(b + 32);
  for (uint32_t s = 0; s < sv; s++) {
    m->map[s] = fc_get_le32(b + VHDR + 4 * (size_t)s);
    m->how[s] = b[VHDR + 4 * (size_t)sv + s];
    if ((m->map[s] >= pv && m->map[s] != FC_VMAP_NONE) || m->how[s] > FC_VMAP_BY_SET ||
        ((m->map[s] == FC_VMAP_NONE) != (m->how[s] == FC_VMAP_BY_NONE) && m->how[s] != FC_VMAP_BY_SET)) {
      fc_vmap_destroy(&m);
      free(b);
      return fc_err_set(err, FC_EFORMAT, "%s: bad map entry for source id %u", path, s);
    }
  }
  free(b);
  *out = m;
  return 0;
}
