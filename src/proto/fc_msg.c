/* MessagePack codec for fc_msg_t. Encoding goes through msgpack-c's packer. Decoding uses our own
 * bounded reader instead of msgpack_unpack: msgpack-c allocates a declared array or map length
 * before it checks that the bytes exist, so six hostile bytes can ask it for gigabytes. Ours
 * checks every length against the bytes left and our limits before it allocates anything. */
#include "fc_msg.h"

#include <assert.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---- the message table ---- */

typedef enum { K_STR, K_I64, K_F64, K_BOOL, K_STRLIST, K_KV, K_FIGS, K_ARTS, K_RES, K_I32S, K_F32S } kind_t;

typedef struct field {
  const char *key;
  kind_t kind;
  size_t off;  /* of the value (or the array pointer) in fc_msg_t */
  size_t noff; /* of the count for lists */
  size_t max;  /* max string length for K_STR */
} field_t;

#define OFF(f) offsetof(fc_msg_t, f)
enum {
  F_ID, F_HOST, F_CAPS, F_RES, F_TASK, F_JOB, F_ATTEMPT, F_SINCE, F_KIND, F_PARAMS, F_INPUTS,
  F_OUTPUTS, F_FRACTION, F_MESSAGE, F_FIGS, F_OK, F_HANDBACK, F_ARTS, F_ERROR, F_TEXT, F_STATE,
  F_TIME, F_IDS, F_K, F_TOP_IDS, F_TOP_LP, F_LIMIT, F_BYTES, F_NFIELDS
};
static const field_t fields[F_NFIELDS] = {
    [F_ID] = {"id", K_STR, OFF(id), 0, 256},
    [F_HOST] = {"host", K_STR, OFF(host), 0, 256},
    [F_CAPS] = {"caps", K_STRLIST, OFF(caps), OFF(ncaps), 256},
    [F_RES] = {"resources", K_RES, 0, 0, 0},
    [F_TASK] = {"task", K_I64, OFF(task), 0, 0},
    [F_JOB] = {"job", K_I64, OFF(job), 0, 0},
    [F_ATTEMPT] = {"attempt", K_I64, OFF(attempt), 0, 0},
    [F_SINCE] = {"since", K_I64, OFF(since), 0, 0},
    [F_KIND] = {"kind", K_STR, OFF(kind), 0, 64},
    [F_PARAMS] = {"params", K_KV, OFF(params), OFF(nparams), FC_MSG_MAX_STR},
    [F_INPUTS] = {"inputs", K_STRLIST, OFF(inputs), OFF(ninputs), 4096},
    [F_OUTPUTS] = {"outputs", K_STRLIST, OFF(outputs), OFF(noutputs), 4096},
    [F_FRACTION] = {"fraction", K_F64, OFF(fraction), 0, 0},
    [F_MESSAGE] = {"message", K_STR, OFF(message), 0, 4096},
    [F_FIGS] = {"figures", K_FIGS, OFF(figs), OFF(nfigs), 128},
    [F_OK] = {"ok", K_BOOL, OFF(ok), 0, 0},
    [F_HANDBACK] = {"handback", K_BOOL, OFF(handback), 0, 0},
    [F_ARTS] = {"artifacts", K_ARTS, OFF(arts), OFF(narts), 4096},
    [F_ERROR] = {"error", K_STR, OFF(error), 0, 8192},
    [F_TEXT] = {"text", K_STR, OFF(text), 0, FC_MSG_MAX_TEXT},
    [F_STATE] = {"state", K_STR, OFF(state), 0, 32},
    [F_TIME] = {"time", K_F64, OFF(time), 0, 0},
    [F_IDS] = {"ids", K_I32S, OFF(ids), OFF(nids), 0},
    [F_K] = {"k", K_I64, OFF(k), 0, 0},
    [F_TOP_IDS] = {"top_ids", K_I32S, OFF(top_ids), OFF(ntop), 0},
    [F_TOP_LP] = {"top_lp", K_F32S, OFF(top_lp), OFF(ntop), 0},
    [F_LIMIT] = {"limit", K_I64, OFF(limit), 0, 0},
    [F_BYTES] = {"bytes", K_I64, OFF(bytes), 0, 0},
};

#define B(f) (1u << (f))
typedef struct msgdef {
  const char *name;
  uint32_t fields;   /* carried */
  uint32_t required; /* must be present when decoding */
} msgdef_t;
static const msgdef_t defs[FC_MSG_NTYPES] = {
    [FC_MSG_REGISTER] = {"register", B(F_ID) | B(F_CAPS) | B(F_HOST) | B(F_RES) | B(F_TEXT), B(F_ID) | B(F_CAPS)},
    [FC_MSG_LEASE_REQUEST] = {"lease_request", B(F_ID), B(F_ID)},
    [FC_MSG_TASK_ASSIGN] = {"task_assign",
                            B(F_TASK) | B(F_JOB) | B(F_KIND) | B(F_PARAMS) | B(F_INPUTS) |
                                B(F_OUTPUTS) | B(F_ATTEMPT),
                            B(F_TASK) | B(F_JOB) | B(F_KIND) | B(F_ATTEMPT)},
    [FC_MSG_HEARTBEAT] = {"heartbeat", B(F_ID) | B(F_TASK) | B(F_ATTEMPT) | B(F_FRACTION) | B(F_MESSAGE) | B(F_FIGS),
                          B(F_ID) | B(F_TASK)},
    [FC_MSG_RESULT] = {"result",
                       B(F_ID) | B(F_TASK) | B(F_ATTEMPT) | B(F_OK) | B(F_ARTS) | B(F_ERROR) | B(F_HANDBACK) |
                           B(F_FRACTION) | B(F_MESSAGE) | B(F_FIGS),
                       B(F_ID) | B(F_TASK) | B(F_OK)},
    [FC_MSG_BYE] = {"bye", B(F_ID), B(F_ID)},
    [FC_MSG_CANCEL] = {"cancel", B(F_TASK), B(F_TASK)},
    [FC_MSG_SUBMIT] = {"submit", B(F_TEXT), B(F_TEXT)},
    [FC_MSG_STATUS] = {"status", B(F_JOB) | B(F_SINCE) | B(F_LIMIT), 0},
    [FC_MSG_LIST] = {"list", B(F_SINCE) | B(F_LIMIT), 0},
    [FC_MSG_CANCEL_JOB] = {"cancel_job", B(F_JOB), B(F_JOB)},
    [FC_MSG_RETRY] = {"retry", B(F_JOB) | B(F_TASK), 0},
    [FC_MSG_LOGS] = {"logs", B(F_JOB) | B(F_SINCE) | B(F_LIMIT), B(F_JOB)},
    [FC_MSG_WORKERS] = {"workers", B(F_SINCE) | B(F_LIMIT), 0},
    [FC_MSG_ARTIFACTS] = {"artifacts", B(F_JOB), B(F_JOB)},
    [FC_MSG_REPLY] = {"reply", B(F_OK) | B(F_ERROR) | B(F_TEXT), B(F_OK)},
    [FC_MSG_EVENT] = {"event",
                      B(F_JOB) | B(F_TASK) | B(F_KIND) | B(F_STATE) | B(F_MESSAGE) | B(F_FRACTION) |
                          B(F_TIME),
                      B(F_JOB) | B(F_STATE)},
    [FC_MSG_LOGITS_REQUEST] = {"logits_request", B(F_TEXT) | B(F_STATE) | B(F_IDS) | B(F_K), B(F_K)},
    [FC_MSG_LOGITS_REPLY] = {"logits_reply",
                             B(F_OK) | B(F_ERROR) | B(F_TEXT) | B(F_IDS) | B(F_K) | B(F_TOP_IDS) | B(F_TOP_LP),
                             B(F_OK)},
    [FC_MSG_LOCATE] = {"locate", B(F_JOB) | B(F_INPUTS), B(F_INPUTS)},
    [FC_MSG_HOLDING] = {"holding", B(F_ID) | B(F_ARTS) | B(F_BYTES), B(F_ID) | B(F_ARTS)},
    [FC_MSG_REMOVE_JOB] = {"remove_job", B(F_JOB), B(F_JOB)},
};

const char *fc_msg_type_name(fc_msg_type_t t) {
  if (t <= FC_MSG_NONE || t >= FC_MSG_NTYPES) return "?";
  return defs[t].name;
}

#define AT(m, T, off) ((T *)((char *)(m) + (off)))

/* ---- encoding ---- */

static void pack_str(msgpack_packer *pk, const char *s) {
  size_t n = strlen(s);
  msgpack_pack_str(pk, n);
  msgpack_pack_str_body(pk, s, n);
}

static void pack_field(msgpack_packer *pk, const fc_msg_t *m, const field_t *f) {
  pack_str(pk, f->key);
  switch (f->kind) {
  case K_STR: pack_str(pk, *AT(m, char *const, f->off)); break;
  case K_I64: msgpack_pack_int64(pk, *AT(m, const int64_t, f->off)); break;
  case K_F64: msgpack_pack_double(pk, *AT(m, const double, f->off)); break;
  case K_BOOL:
    if (*AT(m, const bool, f->off)) msgpack_pack_true(pk);
    else msgpack_pack_false(pk);
    break;
  case K_STRLIST: {
    char **v = *AT(m, char **const, f->off);
    size_t n = *AT(m, const size_t, f->noff);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) pack_str(pk, v[i]);
    break;
  }
  case K_KV: {
    size_t n = m->nparams;
    msgpack_pack_map(pk, n);
    for (size_t i = 0; i < n; i++) pack_str(pk, m->params[i].key), pack_str(pk, m->params[i].val);
    break;
  }
  case K_FIGS:
    msgpack_pack_map(pk, m->nfigs);
    for (size_t i = 0; i < m->nfigs; i++)
      pack_str(pk, m->figs[i].name), msgpack_pack_double(pk, m->figs[i].val);
    break;
  case K_ARTS:
    msgpack_pack_array(pk, m->narts);
    for (size_t i = 0; i < m->narts; i++) {
      msgpack_pack_map(pk, 3);
      pack_str(pk, "path"), pack_str(pk, m->arts[i].path);
      pack_str(pk, "size"), msgpack_pack_uint64(pk, m->arts[i].size);
      pack_str(pk, "sha256"), pack_str(pk, m->arts[i].sha256);
    }
    break;
  case K_I32S:
  case K_F32S: {
    const void *v = *AT(m, const void *const, f->off);
    size_t n = *AT(m, const size_t, f->noff);
    msgpack_pack_bin(pk, 4 * n);
    uint8_t le[4];
    for (size_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, (const char *)v + 4 * i, 4);
      for (int b = 0; b < 4; b++) le[b] = (uint8_t)(u >> (8 * b));
      msgpack_pack_bin_body(pk, le, 4);
    }
    break;
  }
  case K_RES:
    msgpack_pack_map(pk, 2);
    pack_str(pk, "threads"), msgpack_pack_int64(pk, m->threads);
    pack_str(pk, "mem"), msgpack_pack_int64(pk, m->mem);
    break;
  }
}

static bool field_present(const fc_msg_t *m, const field_t *f) {
  if (f->kind == K_I32S || f->kind == K_F32S) return *AT(m, const size_t, f->noff) > 0;
  return f->kind != K_STR || *AT(m, char *const, f->off) != NULL;
}

void fc_msg_encode(const fc_msg_t *m, uint8_t **out, size_t *len) {
  assert(m->type > FC_MSG_NONE && m->type < FC_MSG_NTYPES);
  const msgdef_t *d = &defs[m->type];
  size_t n = 2;
  for (int i = 0; i < F_NFIELDS; i++)
    if ((d->fields & B(i)) && field_present(m, &fields[i])) n++;
    else assert(!(d->required & B(i)));
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, n);
  pack_str(&pk, "v");
  msgpack_pack_int(&pk, FC_PROTO_VERSION);
  pack_str(&pk, "type");
  pack_str(&pk, d->name);
  for (int i = 0; i < F_NFIELDS; i++)
    if ((d->fields & B(i)) && field_present(m, &fields[i])) pack_field(&pk, m, &fields[i]);
  if (!sb.data) { /* cannot happen (a map header is always written), but keep the contract */
    msgpack_sbuffer_write(&sb, "", 0);
  }
  *out = (uint8_t *)sb.data;
  *len = sb.size;
}

/* ---- the bounded reader ---- */

typedef struct rd {
  const uint8_t *p, *end;
  fc_err_t *err;
} rd_t;

static int bad(rd_t *r, const char *what) { return fc_err_set(r->err, FC_EFORMAT, "bad message: %s", what); }

static int need(rd_t *r, size_t n) {
  if ((size_t)(r->end - r->p) < n) return bad(r, "truncated");
  return 0;
}

static uint64_t be(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}

/* Reads a header byte and its big-endian length/value of n bytes. */
static int rd_be(rd_t *r, int n, uint64_t *v) {
  if (need(r, (size_t)n)) return FC_EFORMAT;
  *v = be(r->p, n);
  r->p += n;
  return 0;
}

static int rd_map(rd_t *r, size_t *n) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p++;
  uint64_t v;
  if ((b & 0xf0) == 0x80) v = b & 0x0f;
  else if (b == 0xde) { if (rd_be(r, 2, &v)) return FC_EFORMAT; }
  else if (b == 0xdf) { if (rd_be(r, 4, &v)) return FC_EFORMAT; }
  else return bad(r, "expected a map");
  if (v > FC_MSG_MAX_LIST || v * 2 > (uint64_t)(r->end - r->p)) return bad(r, "map too long");
  *n = (size_t)v;
  return 0;
}

static int rd_array(rd_t *r, size_t *n) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p++;
  uint64_t v;
  if ((b & 0xf0) == 0x90) v = b & 0x0f;
  else if (b == 0xdc) { if (rd_be(r, 2, &v)) return FC_EFORMAT; }
  else if (b == 0xdd) { if (rd_be(r, 4, &v)) return FC_EFORMAT; }
  else return bad(r, "expected an array");
  if (v > FC_MSG_MAX_LIST || v > (uint64_t)(r->end - r->p)) return bad(r, "array too long");
  *n = (size_t)v;
  return 0;
}

/* A string in place (not NUL-terminated). */
static int rd_strv(rd_t *r, const char **s, size_t *len, size_t max) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p++;
  uint64_t v;
  if ((b & 0xe0) == 0xa0) v = b & 0x1f;
  else if (b == 0xd9) { if (rd_be(r, 1, &v)) return FC_EFORMAT; }
  else if (b == 0xda) { if (rd_be(r, 2, &v)) return FC_EFORMAT; }
  else if (b == 0xdb) { if (rd_be(r, 4, &v)) return FC_EFORMAT; }
  else return bad(r, "expected a string");
  if (v > max) return bad(r, "string too long");
  if (need(r, (size_t)v)) return FC_EFORMAT;
  *s = (const char *)r->p;
  *len = (size_t)v;
  r->p += v;
  if (memchr(*s, 0, *len)) return bad(r, "NUL byte in a string");
  return 0;
}

static int rd_str(rd_t *r, char **out, size_t max) {
  const char *s;
  size_t n;
  if (rd_strv(r, &s, &n, max)) return FC_EFORMAT;
  char *c = fc_xmalloc(n + 1);
  memcpy(c, s, n);
  c[n] = 0;
  *out = c;
  return 0;
}

static int rd_i64(rd_t *r, int64_t *out) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p++;
  uint64_t v;
  if (b <= 0x7f) { *out = b; return 0; }
  if (b >= 0xe0) { *out = (int8_t)b; return 0; }
  switch (b) {
  case 0xcc: case 0xcd: case 0xce: case 0xcf: {
    int n = 1 << (b - 0xcc);
    if (rd_be(r, n, &v)) return FC_EFORMAT;
    if (v > INT64_MAX) return bad(r, "integer out of range");
    *out = (int64_t)v;
    return 0;
  }
  case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
    int n = 1 << (b - 0xd0);
    if (rd_be(r, n, &v)) return FC_EFORMAT;
    if (n < 8) { /* sign-extend */
      uint64_t sign = 1ull << (8 * n - 1);
      v = (v ^ sign) - sign;
    }
    memcpy(out, &v, 8);
    return 0;
  }
  default: return bad(r, "expected an integer");
  }
}

static int rd_f64(rd_t *r, double *out) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p;
  uint64_t v;
  if (b == 0xca) {
    r->p++;
    if (rd_be(r, 4, &v)) return FC_EFORMAT;
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    *out = f;
    return 0;
  }
  if (b == 0xcb) {
    r->p++;
    if (rd_be(r, 8, &v)) return FC_EFORMAT;
    memcpy(out, &v, 8);
    return 0;
  }
  int64_t i;
  if (rd_i64(r, &i)) return bad(r, "expected a number");
  *out = (double)i;
  return 0;
}

static int rd_bool(rd_t *r, bool *out) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p++;
  if (b == 0xc2 || b == 0xc3) {
    *out = b == 0xc3;
    return 0;
  }
  return bad(r, "expected a boolean");
}

/* Skips one value of any type (unknown keys are ignored for forward compatibility). */
static int rd_skip(rd_t *r, int depth) {
  if (depth > FC_MSG_MAX_DEPTH) return bad(r, "nesting too deep");
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p;
  uint64_t v;
  size_t n;
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) { r->p++; return 0; }
  if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
    if (rd_map(r, &n)) return FC_EFORMAT;
    for (size_t i = 0; i < 2 * n; i++)
      if (rd_skip(r, depth + 1)) return FC_EFORMAT;
    return 0;
  }
  if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
    if (rd_array(r, &n)) return FC_EFORMAT;
    for (size_t i = 0; i < n; i++)
      if (rd_skip(r, depth + 1)) return FC_EFORMAT;
    return 0;
  }
  if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb) {
    const char *s;
    return rd_strv(r, &s, &n, FC_MSG_MAX_BYTES);
  }
  r->p++;
  int lenbytes = 0;
  size_t fixed = 0;
  switch (b) {
  case 0xc4: lenbytes = 1; break; /* bin 8/16/32 */
  case 0xc5: lenbytes = 2; break;
  case 0xc6: lenbytes = 4; break;
  case 0xc7: lenbytes = 1; fixed = 1; break; /* ext 8/16/32: length then a type byte */
  case 0xc8: lenbytes = 2; fixed = 1; break;
  case 0xc9: lenbytes = 4; fixed = 1; break;
  case 0xca: fixed = 4; break;
  case 0xcb: fixed = 8; break;
  case 0xcc: case 0xd0: fixed = 1; break;
  case 0xcd: case 0xd1: fixed = 2; break;
  case 0xce: case 0xd2: fixed = 4; break;
  case 0xcf: case 0xd3: fixed = 8; break;
  case 0xd4: fixed = 2; break; /* fixext 1..16 with their type byte */
  case 0xd5: fixed = 3; break;
  case 0xd6: fixed = 5; break;
  case 0xd7: fixed = 9; break;
  case 0xd8: fixed = 17; break;
  default: return bad(r, "invalid type byte"); /* 0xc1 is never used */
  }
  v = 0;
  if (lenbytes && rd_be(r, lenbytes, &v)) return FC_EFORMAT;
  if (v > FC_MSG_MAX_BYTES) return bad(r, "value too long");
  if (need(r, (size_t)v + fixed)) return FC_EFORMAT;
  r->p += v + fixed;
  return 0;
}

static bool key_is(const char *s, size_t n, const char *key) {
  return strlen(key) == n && memcmp(s, key, n) == 0;
}

static int rd_artifact(rd_t *r, fc_msg_artifact_t *a) {
  size_t n;
  if (rd_map(r, &n)) return FC_EFORMAT;
  int seen = 0;
  for (size_t i = 0; i < n; i++) {
    const char *k;
    size_t kn;
    if (rd_strv(r, &k, &kn, 64)) return FC_EFORMAT;
    if (key_is(k, kn, "path") && !(seen & 1)) {
      if (rd_str(r, &a->path, 4096)) return FC_EFORMAT;
      seen |= 1;
    } else if (key_is(k, kn, "size") && !(seen & 2)) {
      int64_t v;
      if (rd_i64(r, &v)) return FC_EFORMAT;
      if (v < 0) return bad(r, "negative artifact size");
      a->size = (uint64_t)v;
      seen |= 2;
    } else if (key_is(k, kn, "sha256") && !(seen & 4)) {
      const char *s;
      size_t sn;
      if (rd_strv(r, &s, &sn, 64)) return FC_EFORMAT;
      int hex = sn == 64; /* s is a view into the message, not NUL-terminated: no str* here */
      for (size_t j = 0; hex && j < sn; j++) hex = (s[j] >= '0' && s[j] <= '9') || (s[j] >= 'a' && s[j] <= 'f');
      if (!hex) return bad(r, "artifact sha256 is not 64 hex digits");
      memcpy(a->sha256, s, 64);
      a->sha256[64] = 0;
      seen |= 4;
    } else if (rd_skip(r, 1)) {
      return FC_EFORMAT;
    }
  }
  if (seen != 7) return bad(r, "artifact needs path, size and sha256");
  return 0;
}

/* A bin of little-endian 32-bit values into a new array; *n must agree when already set (top_ids
 * and top_lp share their count). */
static int rd_bin32(rd_t *r, void **out, size_t *n) {
  if (need(r, 1)) return FC_EFORMAT;
  uint8_t b = *r->p++;
  uint64_t v;
  if (b == 0xc4) { if (rd_be(r, 1, &v)) return FC_EFORMAT; }
  else if (b == 0xc5) { if (rd_be(r, 2, &v)) return FC_EFORMAT; }
  else if (b == 0xc6) { if (rd_be(r, 4, &v)) return FC_EFORMAT; }
  else return bad(r, "expected binary data");
  if (v % 4) return bad(r, "binary data is not a whole number of 32-bit values");
  if (need(r, (size_t)v)) return FC_EFORMAT;
  if (*n && *n != v / 4) return bad(r, "top_ids and top_lp differ in length");
  size_t cnt = (size_t)v / 4;
  uint32_t *a = fc_xmalloc(cnt ? 4 * cnt : 4);
  for (size_t i = 0; i < cnt; i++, r->p += 4)
    a[i] = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 | (uint32_t)r->p[3] << 24;
  *out = a;
  *n = cnt;
  return 0;
}

static int rd_field(rd_t *r, fc_msg_t *m, const field_t *f) {
  size_t n;
  switch (f->kind) {
  case K_STR: return rd_str(r, AT(m, char *, f->off), f->max);
  case K_I64: return rd_i64(r, AT(m, int64_t, f->off));
  case K_F64: return rd_f64(r, AT(m, double, f->off));
  case K_BOOL: return rd_bool(r, AT(m, bool, f->off));
  case K_STRLIST: {
    if (rd_array(r, &n)) return FC_EFORMAT;
    char **v = fc_xcalloc(n ? n : 1, sizeof *v);
    *AT(m, char **, f->off) = v;
    for (size_t i = 0; i < n; i++) {
      if (rd_str(r, &v[i], f->max)) return FC_EFORMAT;
      *AT(m, size_t, f->noff) = i + 1; /* so fc_msg_clear frees what was read */
    }
    return 0;
  }
  case K_KV:
    if (rd_map(r, &n)) return FC_EFORMAT;
    m->params = fc_xcalloc(n ? n : 1, sizeof *m->params);
    for (size_t i = 0; i < n; i++) {
      if (rd_str(r, &m->params[i].key, 256)) return FC_EFORMAT;
      m->nparams = i + 1;
      if (rd_str(r, &m->params[i].val, f->max)) return FC_EFORMAT;
    }
    return 0;
  case K_FIGS:
    if (rd_map(r, &n)) return FC_EFORMAT;
    m->figs = fc_xcalloc(n ? n : 1, sizeof *m->figs);
    for (size_t i = 0; i < n; i++) {
      if (rd_str(r, &m->figs[i].name, f->max)) return FC_EFORMAT;
      m->nfigs = i + 1;
      if (rd_f64(r, &m->figs[i].val)) return FC_EFORMAT;
    }
    return 0;
  case K_ARTS:
    if (rd_array(r, &n)) return FC_EFORMAT;
    m->arts = fc_xcalloc(n ? n : 1, sizeof *m->arts);
    for (size_t i = 0; i < n; i++) {
      m->narts = i + 1;
      if (rd_artifact(r, &m->arts[i])) return FC_EFORMAT;
    }
    return 0;
  case K_I32S:
  case K_F32S:
    return rd_bin32(r, AT(m, void *, f->off), AT(m, size_t, f->noff));
  case K_RES:
    if (rd_map(r, &n)) return FC_EFORMAT;
    for (size_t i = 0; i < n; i++) {
      const char *k;
      size_t kn;
      if (rd_strv(r, &k, &kn, 64)) return FC_EFORMAT;
      if (key_is(k, kn, "threads")) { if (rd_i64(r, &m->threads)) return FC_EFORMAT; }
      else if (key_is(k, kn, "mem")) { if (rd_i64(r, &m->mem)) return FC_EFORMAT; }
      else if (rd_skip(r, 1)) return FC_EFORMAT;
    }
    return 0;
  }
  return bad(r, "internal: unknown field kind");
}

static int decode(rd_t *r, fc_msg_t *m) {
  size_t n;
  if (rd_map(r, &n)) return FC_EFORMAT;
  /* `v` and `type` may come in any order, so keep the other fields' positions for a second pass. */
  int64_t version = -1;
  fc_msg_type_t type = FC_MSG_NONE;
  const uint8_t *start = r->p;
  for (size_t i = 0; i < n; i++) {
    const char *k, *s;
    size_t kn, sn;
    if (rd_strv(r, &k, &kn, 256)) return FC_EFORMAT;
    if (key_is(k, kn, "v")) {
      if (rd_i64(r, &version)) return FC_EFORMAT;
    } else if (key_is(k, kn, "type")) {
      if (rd_strv(r, &s, &sn, 64)) return FC_EFORMAT;
      for (int t = 1; t < FC_MSG_NTYPES; t++)
        if (key_is(s, sn, defs[t].name)) type = (fc_msg_type_t)t;
      if (type == FC_MSG_NONE) return fc_err_set(r->err, FC_EFORMAT, "bad message: unknown type '%.*s'", (int)sn, s);
    } else if (rd_skip(r, 1)) {
      return FC_EFORMAT;
    }
  }
  if (r->p != r->end) return bad(r, "trailing bytes after the message");
  if (version < 0) return bad(r, "no protocol version 'v'");
  if (version != FC_PROTO_VERSION)
    return fc_err_set(r->err, FC_EFORMAT, "bad message: protocol version %lld, we speak %d", (long long)version, FC_PROTO_VERSION);
  if (type == FC_MSG_NONE) return bad(r, "no 'type'");
  m->type = type;
  const msgdef_t *d = &defs[type];
  uint32_t seen = 0;
  r->p = start;
  for (size_t i = 0; i < n; i++) {
    const char *k;
    size_t kn;
    if (rd_strv(r, &k, &kn, 256)) return FC_EFORMAT;
    int fi = -1;
    for (int j = 0; j < F_NFIELDS; j++)
      if ((d->fields & B(j)) && key_is(k, kn, fields[j].key)) fi = j;
    if (fi < 0) {
      if (rd_skip(r, 1)) return FC_EFORMAT;
      continue;
    }
    if (seen & B(fi)) return fc_err_set(r->err, FC_EFORMAT, "bad message: duplicate key '%s'", fields[fi].key);
    seen |= B(fi);
    if (rd_field(r, m, &fields[fi])) return fc_err_wrap(r->err, "%s.%s", d->name, fields[fi].key);
  }
  uint32_t missing = d->required & ~seen;
  if (missing) {
    for (int j = 0; j < F_NFIELDS; j++)
      if (missing & B(j))
        return fc_err_set(r->err, FC_EFORMAT, "bad message: %s without '%s'", d->name, fields[j].key);
  }
  if (m->fraction != m->fraction) return bad(r, "fraction is NaN");
  if ((m->top_ids == NULL) != (m->top_lp == NULL)) return bad(r, "top_ids and top_lp come together");
  if (type == FC_MSG_LOGITS_REQUEST && (m->k < 0 || m->k > 256)) return bad(r, "k must be in [0, 256]");
  if (m->ntop && (m->k <= 0 || m->ntop != (size_t)m->k * m->nids)) return bad(r, "top entries are not ids x k");
  return 0;
}

int fc_msg_decode(const uint8_t *buf, size_t len, fc_msg_t *m, fc_err_t *err) {
  memset(m, 0, sizeof *m);
  if (len > FC_MSG_MAX_BYTES)
    return fc_err_set(err, FC_EFORMAT, "bad message: %zu bytes, the limit is %u", len, FC_MSG_MAX_BYTES);
  if (len == 0) return fc_err_set(err, FC_EFORMAT, "bad message: empty");
  rd_t r = {buf, buf + len, err};
  int rc = decode(&r, m);
  if (rc) fc_msg_clear(m);
  return rc;
}

/* ---- ownership helpers ---- */

static void free_strs(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

void fc_msg_clear(fc_msg_t *m) {
  free(m->id), free(m->host), free(m->kind), free(m->message), free(m->error), free(m->text);
  free(m->state);
  free_strs(m->caps, m->ncaps);
  free_strs(m->inputs, m->ninputs);
  free_strs(m->outputs, m->noutputs);
  for (size_t i = 0; i < m->nparams; i++) free(m->params[i].key), free(m->params[i].val);
  free(m->params);
  for (size_t i = 0; i < m->nfigs; i++) free(m->figs[i].name);
  free(m->figs);
  for (size_t i = 0; i < m->narts; i++) free(m->arts[i].path);
  free(m->arts);
  free(m->ids), free(m->top_ids), free(m->top_lp);
  memset(m, 0, sizeof *m);
}

static void push_str(char ***v, size_t *n, const char *s) {
  *v = fc_xrealloc(*v, (*n + 1) * sizeof **v);
  (*v)[(*n)++] = fc_xstrdup(s);
}

void fc_msg_add_cap(fc_msg_t *m, const char *cap) { push_str(&m->caps, &m->ncaps, cap); }
void fc_msg_add_input(fc_msg_t *m, const char *path) { push_str(&m->inputs, &m->ninputs, path); }
void fc_msg_add_output(fc_msg_t *m, const char *path) { push_str(&m->outputs, &m->noutputs, path); }

void fc_msg_add_param(fc_msg_t *m, const char *key, const char *val) {
  m->params = fc_xrealloc(m->params, (m->nparams + 1) * sizeof *m->params);
  m->params[m->nparams].key = fc_xstrdup(key);
  m->params[m->nparams++].val = fc_xstrdup(val);
}

void fc_msg_add_fig(fc_msg_t *m, const char *name, double val) {
  m->figs = fc_xrealloc(m->figs, (m->nfigs + 1) * sizeof *m->figs);
  m->figs[m->nfigs].name = fc_xstrdup(name);
  m->figs[m->nfigs++].val = val;
}

void fc_msg_add_artifact(fc_msg_t *m, const char *path, uint64_t size, const char *sha256) {
  assert(strlen(sha256) == 64);
  m->arts = fc_xrealloc(m->arts, (m->narts + 1) * sizeof *m->arts);
  fc_msg_artifact_t *a = &m->arts[m->narts++];
  a->path = fc_xstrdup(path);
  a->size = size;
  memcpy(a->sha256, sha256, 65);
}

void fc_msg_set_str(char **field, const char *s) {
  free(*field);
  *field = s ? fc_xstrdup(s) : NULL;
}

void fc_msg_set_ids(fc_msg_t *m, const int32_t *ids, size_t n) {
  free(m->ids);
  m->ids = fc_xmalloc(n ? n * sizeof *ids : 4);
  if (n) memcpy(m->ids, ids, n * sizeof *ids);
  m->nids = n;
}

void fc_msg_set_top(fc_msg_t *m, const int32_t *ids, const float *lp, size_t n) {
  free(m->top_ids), free(m->top_lp);
  m->top_ids = fc_xmalloc(n ? n * sizeof *ids : 4);
  m->top_lp = fc_xmalloc(n ? n * sizeof *lp : 4);
  if (n) memcpy(m->top_ids, ids, n * sizeof *ids), memcpy(m->top_lp, lp, n * sizeof *lp);
  m->ntop = n;
}

const char *fc_msg_param(const fc_msg_t *m, const char *key) {
  for (size_t i = 0; i < m->nparams; i++)
    if (!strcmp(m->params[i].key, key)) return m->params[i].val;
  return NULL;
}
