/* Wire messages: every type round-trips, hand-packed (msgpack-c) input decodes to the expected
 * fields, and truncated, bit-flipped, random and hostile bytes are rejected without a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>

#include "fc_msg.h"
#include "fc_sha256.h"

static const char *HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/* A message of type t with every field that type carries set to a distinctive value. */
static void sample(fc_msg_t *m, fc_msg_type_t t) {
  memset(m, 0, sizeof *m);
  m->type = t;
  switch (t) {
  case FC_MSG_REGISTER:
    fc_msg_set_str(&m->id, "w-1"), fc_msg_set_str(&m->host, "node7");
    fc_msg_add_cap(m, "logits:qwen"), fc_msg_add_cap(m, "align");
    m->threads = 8, m->mem = 17179869184LL;
    break;
  case FC_MSG_LEASE_REQUEST: case FC_MSG_BYE: fc_msg_set_str(&m->id, "worker-\xc3\xa9"); break;
  case FC_MSG_TASK_ASSIGN:
    m->task = 1234567890123LL, m->job = 7, m->attempt = 3;
    fc_msg_set_str(&m->kind, "align");
    fc_msg_add_param(m, "top_k", "10"), fc_msg_add_param(m, "lambda", "0.9");
    fc_msg_add_input(m, "/store/a"), fc_msg_add_input(m, "/store/b");
    fc_msg_add_output(m, "/store/out");
    break;
  case FC_MSG_HEARTBEAT:
    fc_msg_set_str(&m->id, "w"), m->task = 9, m->fraction = 0.375;
    fc_msg_set_str(&m->message, "step 3/8");
    fc_msg_add_fig(m, "loss", 2.5), fc_msg_add_fig(m, "tok/s", -1e300);
    break;
  case FC_MSG_RESULT:
    fc_msg_set_str(&m->id, "w"), m->task = 9, m->ok = true, m->handback = true;
    fc_msg_add_artifact(m, "/store/out", 1ull << 40, HEX);
    fc_msg_set_str(&m->error, "none");
    m->fraction = 1, fc_msg_set_str(&m->message, "48/48 prompts"), fc_msg_add_fig(m, "loss", 0.25);
    break;
  case FC_MSG_LOCATE: m->job = 4, fc_msg_add_input(m, "/store/j/logits"); break;
  case FC_MSG_HOLDING: fc_msg_set_str(&m->id, "w"), fc_msg_add_artifact(m, "/store/j/a", 3, HEX), m->bytes = 3; break;
  case FC_MSG_CANCEL: m->task = -5; break;
  case FC_MSG_SUBMIT: fc_msg_set_str(&m->text, "name: x\ntasks: []\n"); break;
  case FC_MSG_STATUS: case FC_MSG_CANCEL_JOB: case FC_MSG_REMOVE_JOB: case FC_MSG_ARTIFACTS: m->job = 42; break;
  case FC_MSG_RETRY: m->job = 1, m->task = 2; break;
  case FC_MSG_LOGS: m->job = 3, m->since = 99; break;
  case FC_MSG_LIST: case FC_MSG_WORKERS: break;
  case FC_MSG_REPLY: m->ok = false, fc_msg_set_str(&m->error, "no such job"), fc_msg_set_str(&m->text, "{}"); break;
  case FC_MSG_EVENT:
    m->job = 1, m->task = 2, fc_msg_set_str(&m->kind, "train"), fc_msg_set_str(&m->state, "running");
    fc_msg_set_str(&m->message, "epoch 1"), m->fraction = 0.5, m->time = 1764000000.25;
    break;
  case FC_MSG_LOGITS_REQUEST: {
    const int32_t ids[] = {1, 70000, 0, 2147483647};
    fc_msg_set_ids(m, ids, 4);
    fc_msg_set_str(&m->text, "hello"), fc_msg_set_str(&m->state, "chat");
    m->k = 2;
    break;
  }
  case FC_MSG_LOGITS_REPLY: {
    const int32_t ids[] = {5, 6, 7}, top[] = {1, 2, 3, 4, 16777215, 0};
    const float lp[] = {-0.5f, -1.25f, -1e-30f, -88.f, -INFINITY, 0.f};
    m->ok = true, m->k = 2;
    fc_msg_set_ids(m, ids, 3), fc_msg_set_top(m, top, lp, 6);
    fc_msg_set_str(&m->text, "pivot");
    break;
  }
  default: fail();
  }
}

static void str_eq(const char *a, const char *b) {
  if (!a || !b) assert_ptr_equal(a, b);
  else assert_string_equal(a, b);
}

static void msg_eq(const fc_msg_t *a, const fc_msg_t *b) {
  assert_int_equal(a->type, b->type);
  str_eq(a->id, b->id), str_eq(a->host, b->host), str_eq(a->kind, b->kind);
  str_eq(a->message, b->message), str_eq(a->error, b->error), str_eq(a->text, b->text);
  str_eq(a->state, b->state);
  assert_int_equal(a->ncaps, b->ncaps);
  for (size_t i = 0; i < a->ncaps; i++) str_eq(a->caps[i], b->caps[i]);
  assert_int_equal(a->ninputs, b->ninputs);
  for (size_t i = 0; i < a->ninputs; i++) str_eq(a->inputs[i], b->inputs[i]);
  assert_int_equal(a->noutputs, b->noutputs);
  for (size_t i = 0; i < a->noutputs; i++) str_eq(a->outputs[i], b->outputs[i]);
  assert_int_equal(a->nparams, b->nparams);
  for (size_t i = 0; i < a->nparams; i++)
    str_eq(a->params[i].key, b->params[i].key), str_eq(a->params[i].val, b->params[i].val);
  assert_int_equal(a->nfigs, b->nfigs);
  for (size_t i = 0; i < a->nfigs; i++)
    str_eq(a->figs[i].name, b->figs[i].name), assert_true(a->figs[i].val == b->figs[i].val);
  assert_int_equal(a->narts, b->narts);
  for (size_t i = 0; i < a->narts; i++) {
    str_eq(a->arts[i].path, b->arts[i].path);
    assert_true(a->arts[i].size == b->arts[i].size);
    str_eq(a->arts[i].sha256, b->arts[i].sha256);
  }
  assert_true(a->threads == b->threads && a->mem == b->mem && a->task == b->task);
  assert_true(a->job == b->job && a->attempt == b->attempt && a->since == b->since && a->bytes == b->bytes);
  assert_true(a->fraction == b->fraction && a->time == b->time);
  assert_true(a->ok == b->ok && a->handback == b->handback);
  assert_true(a->k == b->k);
  assert_int_equal(a->nids, b->nids);
  if (a->nids) assert_memory_equal(a->ids, b->ids, a->nids * sizeof *a->ids);
  assert_int_equal(a->ntop, b->ntop);
  if (a->ntop) { /* bitwise: -inf and tiny values survive */
    assert_memory_equal(a->top_ids, b->top_ids, a->ntop * sizeof *a->top_ids);
    assert_memory_equal(a->top_lp, b->top_lp, a->ntop * sizeof *a->top_lp);
  }
}

static void test_round_trip_every_type(void **state) {
  (void)state;
  for (int t = 1; t < FC_MSG_NTYPES; t++) {
    fc_msg_t m, d;
    sample(&m, (fc_msg_type_t)t);
    uint8_t *buf;
    size_t len;
    fc_msg_encode(&m, &buf, &len);
    fc_err_t err = {0};
    int rc = fc_msg_decode(buf, len, &d, &err);
    if (rc) fail_msg("%s: %s", fc_msg_type_name((fc_msg_type_t)t), err.msg);
    msg_eq(&m, &d);
    fc_msg_clear(&d);
    fc_msg_clear(&m);
    free(buf);
  }
}

/* ---- hand-packed input through msgpack-c, independent of our encoder ---- */

static void pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}

static int decode_sb(msgpack_sbuffer *sb, fc_msg_t *m, fc_err_t *err) {
  return fc_msg_decode((const uint8_t *)sb->data, sb->size, m, err);
}

static void test_hand_packed_any_order_and_unknown_keys(void **state) {
  (void)state;
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 9);
  pk_str(&pk, "task"), msgpack_pack_uint8(&pk, 200);
  pk_str(&pk, "future"), msgpack_pack_array(&pk, 2), msgpack_pack_nil(&pk), msgpack_pack_bin(&pk, 3),
      msgpack_pack_bin_body(&pk, "abc", 3);
  pk_str(&pk, "kind"), pk_str(&pk, "logits");
  pk_str(&pk, "job"), msgpack_pack_int16(&pk, -300);
  pk_str(&pk, "attempt"), msgpack_pack_uint64(&pk, 2);
  pk_str(&pk, "params"), msgpack_pack_map(&pk, 1), pk_str(&pk, "model"), pk_str(&pk, "pivot");
  pk_str(&pk, "outputs"), msgpack_pack_array(&pk, 1), pk_str(&pk, "/o");
  pk_str(&pk, "type"), pk_str(&pk, "task_assign");
  pk_str(&pk, "v"), msgpack_pack_int(&pk, 1);
  fc_msg_t m;
  fc_err_t err = {0};
  assert_int_equal(decode_sb(&sb, &m, &err), 0);
  assert_int_equal(m.type, FC_MSG_TASK_ASSIGN);
  assert_int_equal(m.task, 200);
  assert_int_equal(m.job, -300);
  assert_int_equal(m.attempt, 2);
  assert_string_equal(m.kind, "logits");
  assert_string_equal(fc_msg_param(&m, "model"), "pivot");
  assert_null(fc_msg_param(&m, "nope"));
  assert_int_equal(m.noutputs, 1);
  assert_int_equal(m.ninputs, 0);
  fc_msg_clear(&m);
  msgpack_sbuffer_destroy(&sb);
}

/* Packs {v: version, type: type} plus a tail written by the callback. */
typedef void (*tail_fn)(msgpack_packer *);
static int decode_custom(int version, const char *type, size_t ntail, tail_fn tail, fc_err_t *err) {
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2 + ntail);
  pk_str(&pk, "v"), msgpack_pack_int(&pk, version);
  pk_str(&pk, "type"), pk_str(&pk, type);
  if (tail) tail(&pk);
  fc_msg_t m;
  int rc = decode_sb(&sb, &m, err);
  if (rc == 0) fc_msg_clear(&m);
  msgpack_sbuffer_destroy(&sb);
  return rc;
}

static void t_id(msgpack_packer *pk) { pk_str(pk, "id"), pk_str(pk, "w"); }
static void t_dup(msgpack_packer *pk) { pk_str(pk, "id"), pk_str(pk, "w"), pk_str(pk, "id"), pk_str(pk, "x"); }
static void t_id_int(msgpack_packer *pk) { pk_str(pk, "id"), msgpack_pack_int(pk, 5); }
static void t_nul(msgpack_packer *pk) { pk_str(pk, "id"), msgpack_pack_str(pk, 3), msgpack_pack_str_body(pk, "a\0b", 3); }
static void t_long_id(msgpack_packer *pk) {
  char s[300];
  memset(s, 'x', sizeof s - 1), s[sizeof s - 1] = 0;
  pk_str(pk, "id"), pk_str(pk, s);
}
static void t_bad_sha(msgpack_packer *pk) {
  pk_str(pk, "id"), pk_str(pk, "w"), pk_str(pk, "task"), msgpack_pack_int(pk, 1);
  pk_str(pk, "ok"), msgpack_pack_true(pk);
  pk_str(pk, "artifacts"), msgpack_pack_array(pk, 1), msgpack_pack_map(pk, 3);
  pk_str(pk, "path"), pk_str(pk, "/x"), pk_str(pk, "size"), msgpack_pack_int(pk, 1);
  pk_str(pk, "sha256"), pk_str(pk, "XYZ");
}
static void t_u64_big(msgpack_packer *pk) { pk_str(pk, "task"), msgpack_pack_uint64(pk, UINT64_MAX); }

static void pk_bin(msgpack_packer *pk, const char *key, const void *b, size_t n) {
  pk_str(pk, key), msgpack_pack_bin(pk, n), msgpack_pack_bin_body(pk, b, n);
}
static const uint8_t b8[8] = {1, 0, 0, 0, 2, 0, 0, 0};
static void t_k(msgpack_packer *pk) { pk_str(pk, "ok"), msgpack_pack_true(pk), pk_str(pk, "k"), msgpack_pack_int(pk, 1); }
static void t_top_ok(msgpack_packer *pk) { t_k(pk), pk_bin(pk, "ids", b8, 8), pk_bin(pk, "top_ids", b8, 8), pk_bin(pk, "top_lp", b8, 8); }
static void t_top_odd(msgpack_packer *pk) { t_k(pk), pk_bin(pk, "ids", b8, 5), pk_bin(pk, "top_ids", b8, 8), pk_bin(pk, "top_lp", b8, 8); }
static void t_top_mismatch(msgpack_packer *pk) { t_k(pk), pk_bin(pk, "ids", b8, 8), pk_bin(pk, "top_ids", b8, 8), pk_bin(pk, "top_lp", b8, 4); }
static void t_top_alone(msgpack_packer *pk) { t_k(pk), pk_bin(pk, "ids", b8, 8), pk_bin(pk, "top_ids", b8, 8), pk_str(pk, "x"), msgpack_pack_nil(pk); }
static void t_top_not_nk(msgpack_packer *pk) { t_k(pk), pk_bin(pk, "ids", b8, 4), pk_bin(pk, "top_ids", b8, 8), pk_bin(pk, "top_lp", b8, 8); }
static void t_ids_str(msgpack_packer *pk) { t_k(pk), pk_str(pk, "ids"), pk_str(pk, "1 2"), pk_str(pk, "x"), msgpack_pack_nil(pk), pk_str(pk, "y"), msgpack_pack_nil(pk); }
static void t_big_k(msgpack_packer *pk) { pk_str(pk, "k"), msgpack_pack_int(pk, 100000); }

static void test_rejects_bad_token_arrays(void **state) {
  (void)state;
  fc_err_t err = {0};
  assert_int_equal(decode_custom(1, "logits_reply", 5, t_top_ok, &err), 0);
  assert_int_equal(decode_custom(1, "logits_reply", 5, t_top_odd, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "32-bit"));
  assert_int_equal(decode_custom(1, "logits_reply", 5, t_top_mismatch, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "differ"));
  assert_int_equal(decode_custom(1, "logits_reply", 5, t_top_alone, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "together"));
  assert_int_equal(decode_custom(1, "logits_reply", 5, t_top_not_nk, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "ids x k"));
  assert_int_equal(decode_custom(1, "logits_reply", 5, t_ids_str, &err), FC_EFORMAT);
  assert_int_equal(decode_custom(1, "logits_request", 1, t_big_k, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "k must be"));
}

static void test_rejects_semantic_errors(void **state) {
  (void)state;
  fc_err_t err = {0};
  assert_int_equal(decode_custom(1, "bye", 1, t_id, &err), 0);
  assert_int_equal(decode_custom(2, "bye", 1, t_id, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "version"));
  assert_int_equal(decode_custom(1, "explode", 1, t_id, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "unknown type"));
  assert_int_equal(decode_custom(1, "bye", 0, NULL, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "without 'id'"));
  assert_int_equal(decode_custom(1, "bye", 2, t_dup, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "duplicate"));
  assert_int_equal(decode_custom(1, "bye", 1, t_id_int, &err), FC_EFORMAT);
  assert_int_equal(decode_custom(1, "bye", 1, t_nul, &err), FC_EFORMAT);
  assert_int_equal(decode_custom(1, "bye", 1, t_long_id, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "too long"));
  assert_int_equal(decode_custom(1, "result", 4, t_bad_sha, &err), FC_EFORMAT);
  assert_non_null(strstr(err.msg, "sha256"));
  assert_int_equal(decode_custom(1, "cancel", 1, t_u64_big, &err), FC_EFORMAT);
}

static void expect_bad(const uint8_t *b, size_t n) {
  fc_msg_t m;
  fc_err_t err = {0};
  assert_int_equal(fc_msg_decode(b, n, &m, &err), FC_EFORMAT);
  assert_true(strlen(err.msg) > 0);
  assert_int_equal(m.type, FC_MSG_NONE);
}

static void test_rejects_hostile_bytes(void **state) {
  (void)state;
  /* huge declared lengths must fail before any allocation */
  const uint8_t big_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
  const uint8_t big_arr[] = {0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff};
  const uint8_t big_str[] = {0x81, 0xdb, 0x7f, 0xff, 0xff, 0xff};
  const uint8_t big_bin[] = {0x81, 0xa1, 'x', 0xc6, 0xff, 0xff, 0xff, 0xff};
  const uint8_t not_map[] = {0x93, 1, 2, 3};
  const uint8_t never[] = {0x81, 0xa1, 'x', 0xc1};
  expect_bad(big_map, sizeof big_map);
  expect_bad(big_arr, sizeof big_arr);
  expect_bad(big_str, sizeof big_str);
  expect_bad(big_bin, sizeof big_bin);
  expect_bad(not_map, sizeof not_map);
  expect_bad(never, sizeof never);
  expect_bad(NULL, 0);
  /* deep nesting under an unknown key */
  uint8_t deep[200];
  size_t n = 0;
  deep[n++] = 0x81, deep[n++] = 0xa1, deep[n++] = 'x';
  while (n < sizeof deep - 1) deep[n++] = 0x91;
  deep[n++] = 0xc0;
  expect_bad(deep, n);
  /* oversized */
  uint8_t *huge = calloc(FC_MSG_MAX_BYTES + 1, 1);
  expect_bad(huge, FC_MSG_MAX_BYTES + 1);
  free(huge);
}

static void test_truncated_and_trailing(void **state) {
  (void)state;
  for (int t = 1; t < FC_MSG_NTYPES; t++) {
    fc_msg_t m;
    sample(&m, (fc_msg_type_t)t);
    uint8_t *buf;
    size_t len;
    fc_msg_encode(&m, &buf, &len);
    fc_msg_clear(&m);
    for (size_t cut = 0; cut < len; cut++) {
      /* a copy of exactly `cut` bytes so ASan sees any read past the end */
      uint8_t *c = malloc(cut ? cut : 1);
      memcpy(c, buf, cut);
      expect_bad(c, cut);
      free(c);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0xc0;
    expect_bad(longer, len + 1);
    free(longer);
    free(buf);
  }
}

/* Bit flips and random bytes: the decoder either rejects with a message or accepts something
 * that encodes and decodes again to the same message. */
static void check_any(const uint8_t *b, size_t n) {
  fc_msg_t m;
  fc_err_t err = {0};
  int rc = fc_msg_decode(b, n, &m, &err);
  if (rc) {
    assert_int_equal(rc, FC_EFORMAT);
    assert_true(strlen(err.msg) > 0);
    return;
  }
  uint8_t *again;
  size_t alen;
  fc_msg_encode(&m, &again, &alen);
  fc_msg_t d;
  assert_int_equal(fc_msg_decode(again, alen, &d, &err), 0);
  msg_eq(&m, &d);
  fc_msg_clear(&d);
  fc_msg_clear(&m);
  free(again);
}

static void test_bit_flips_and_random(void **state) {
  (void)state;
  fc_rng_t rng;
  fc_rng_seed(&rng, 12345);
  size_t accepted = 0, total = 0;
  for (int t = 1; t < FC_MSG_NTYPES; t++) {
    fc_msg_t m;
    sample(&m, (fc_msg_type_t)t);
    uint8_t *buf;
    size_t len;
    fc_msg_encode(&m, &buf, &len);
    fc_msg_clear(&m);
    uint8_t *c = malloc(len);
    for (size_t bit = 0; bit < len * 8; bit++) { /* every single-bit flip */
      memcpy(c, buf, len);
      c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
      check_any(c, len);
    }
    for (int k = 0; k < 300; k++) { /* random multi-byte damage */
      memcpy(c, buf, len);
      int flips = 1 + (int)(fc_rng_u64(&rng) % 4);
      for (int f = 0; f < flips; f++) c[fc_rng_u64(&rng) % len] = (uint8_t)fc_rng_u64(&rng);
      fc_msg_t probe;
      fc_err_t err;
      total++;
      if (fc_msg_decode(c, len, &probe, &err) == 0) accepted++, fc_msg_clear(&probe);
      check_any(c, len);
    }
    free(c);
    free(buf);
  }
  for (int k = 0; k < 3000; k++) {
    uint8_t r[64];
    size_t n = 1 + fc_rng_u64(&rng) % sizeof r;
    for (size_t i = 0; i < n; i++) r[i] = (uint8_t)fc_rng_u64(&rng);
    if (k % 2) r[0] = (uint8_t)(0x80 | (r[0] & 0x0f)); /* a map header, to get further in */
    check_any(r, n);
  }
  /* damage that keeps the structure valid is sometimes accepted, most is not */
  assert_true(accepted < total);
}

static void test_sha256_vectors(void **state) {
  (void)state;
  static const struct { const char *in; const char *hex; } v[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
  };
  for (size_t i = 0; i < 3; i++) {
    fc_sha256_t s;
    uint8_t d[32];
    char hex[65];
    fc_sha256_init(&s);
    fc_sha256_update(&s, v[i].in, strlen(v[i].in));
    fc_sha256_final(&s, d);
    fc_sha256_hex(d, hex);
    assert_string_equal(hex, v[i].hex);
  }
  /* one million 'a' fed in uneven pieces */
  fc_sha256_t s;
  fc_sha256_init(&s);
  char a[1000];
  memset(a, 'a', sizeof a);
  size_t done = 0, step = 1;
  while (done < 1000000) {
    size_t k = step < 1000000 - done ? step : 1000000 - done;
    if (k > sizeof a) k = sizeof a;
    fc_sha256_update(&s, a, k);
    done += k, step = step * 7 % 997 + 1;
  }
  uint8_t d[32];
  char hex[65];
  fc_sha256_final(&s, d);
  fc_sha256_hex(d, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  /* a file: digest and size */
  char path[64];
  snprintf(path, sizeof path, "/tmp/fc_test_sha.%d", (int)getpid());
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  fputs("abc", fp);
  fclose(fp);
  uint64_t size = 0;
  fc_err_t err;
  assert_int_equal(fc_sha256_file(path, hex, &size, &err), 0);
  unlink(path);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  assert_int_equal(size, 3);
  assert_int_equal(fc_sha256_file(path, hex, &size, &err), FC_EIO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_every_type),
      cmocka_unit_test(test_hand_packed_any_order_and_unknown_keys),
      cmocka_unit_test(test_rejects_semantic_errors),
      cmocka_unit_test(test_rejects_bad_token_arrays),
      cmocka_unit_test(test_rejects_hostile_bytes),
      cmocka_unit_test(test_truncated_and_trailing),
      cmocka_unit_test(test_bit_flips_and_random),
      cmocka_unit_test(test_sha256_vectors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
