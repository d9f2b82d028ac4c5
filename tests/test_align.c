/* Unit tests for MinED token alignment: hand-checked alignments, edit distance in code points,
 * banded DP == full DP == brute-force enumeration of monotone paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fc_align.h"
#include "synth_tok.h"
#include "test_support.h"

/* A sequence built from a NULL-terminated list of token texts. */
typedef struct seq {
  fc_align_seq_t s;
  char buf[4096];
  uint32_t start[512];
} seq_t;

static void seq_from(seq_t *q, const char *const *toks) {
  uint32_t n = 0, pos = 0;
  for (; toks[n]; n++) {
    q->start[n] = pos;
    size_t l = strlen(toks[n]);
    memcpy(q->buf + pos, toks[n], l);
    pos += (uint32_t)l;
  }
  q->start[n] = pos;
  q->s = (fc_align_seq_t){.n = n, .bytes = q->buf, .start = q->start, .off = NULL};
}

static void test_edit_distance(void **state) {
  (void)state;
  assert_int_equal(fc_edit_distance("kitten", 6, "sitting", 7), 3);
  assert_int_equal(fc_edit_distance("", 0, "abc", 3), 3);
  assert_int_equal(fc_edit_distance("abc", 3, "abc", 3), 0);
  /* code points, not bytes: "é" (2 bytes) vs "e" is one substitution */
  assert_int_equal(fc_edit_distance("caf\xc3\xa9", 5, "cafe", 4), 1);
  assert_int_equal(fc_edit_distance("\xe4\xbd\xa0\xe5\xa5\xbd", 6, "\xe4\xbd\xa0", 3), 1);
  /* a stray byte is its own unit: byte-fallback token <0xE4> vs the full character */
  assert_int_equal(fc_edit_distance("\xe4", 1, "\xe4\xbd\xa0", 3), 1);
  assert_int_equal(fc_edit_distance("\xe4", 1, "\xe4", 1), 0);
  assert_int_equal(fc_utf8_units("a\xc3\xa9\xe4\xbd\xa0\xf0\x9f\x98\x80\xff", 11), 5);
  /* the aligner's local cost: code points between whole characters, bytes once a token splits
   * one (the byte of 你 against 你 differs by two bytes, against "a你" by three) */
  assert_int_equal(fc_token_distance("caf\xc3\xa9", 5, "cafe", 4), 1);
  assert_int_equal(fc_token_distance("\xe4\xbd\xa0", 3, "\xe5\xa5\xbd", 3), 1);
  assert_int_equal(fc_token_distance("\xe4", 1, "\xe4\xbd\xa0", 3), 2);
  assert_int_equal(fc_token_distance("a\xe4\xbd\xa0", 4, "\xe4", 1), 3);
  assert_int_equal(fc_token_distance("\xbd\xa0", 2, "", 0), 2);
  assert_int_equal(fc_token_distance("kitten", 6, "sitting", 7), 3);
  /* bounded: stops early but never reports less than the bound when the distance exceeds it */
  assert_true(fc_edit_distance_bounded("aaaaaaaa", 8, "bbbbbbbb", 8, 3) >= 3);
  assert_int_equal(fc_edit_distance_bounded("abcd", 4, "abce", 4, 3), 1);
  /* long strings use the heap path */
  char a[600], b[600];
  memset(a, 'x', 600);
  memcpy(b, a, 600);
  b[0] = 'y';
  b[599] = 'z';
  assert_int_equal(fc_edit_distance(a, 600, b, 600), 2);
  assert_int_equal(fc_edit_distance(a, 600, b, 300), 301);
}

static void expect_groups(const fc_align_result_t *r, const int *want /* per pivot: count, ids... */) {
  const int *w = want;
  for (uint32_t j = 0; j < r->m; j++) {
    int cnt = *w++;
    assert_int_equal(r->grp_start[j + 1] - r->grp_start[j], cnt);
    for (int x = 0; x < cnt; x++) assert_int_equal(r->grp_src[r->grp_start[j] + x], *w++);
  }
}

static void test_hand_checked(void **state) {
  (void)state;
  fc_aligner_t *a = fc_aligner_new(2);
  fc_align_result_t r = {0};
  fc_err_t err = {0};
  seq_t s, p;
  /* one-to-many: one pivot token covered by several source tokens */
  const char *s1[] = {"Hel", "lo", " wor", "ld", NULL};
  const char *p1[] = {"Hello", " world", NULL};
  seq_from(&s, s1);
  seq_from(&p, p1);
  assert_int_equal(fc_align_mined(a, &s.s, &p.s, &r, &err), 0);
  /* path (0,0)(1,0)(2,1)(3,1): d(Hel,Hello)=2 + d(lo,Hello)=3 + d( wor, world)=2 + d(ld, world)=4 */
  assert_int_equal(r.n_path, 4);
  assert_int_equal(r.cost, 11);
  int g1[] = {2, 0, 1, 2, 2, 3};
  expect_groups(&r, g1);
  /* many-to-one: several pivot tokens on one source token */
  assert_int_equal(fc_align_mined(a, &p.s, &s.s, &r, &err), 0);
  assert_int_equal(r.cost, 11);
  int g2[] = {1, 0, 1, 0, 1, 1, 1, 1};
  expect_groups(&r, g2);
  /* identical tokenizations: the diagonal at cost 0 */
  assert_int_equal(fc_align_mined(a, &s.s, &s.s, &r, &err), 0);
  assert_int_equal(r.cost, 0);
  assert_int_equal(r.n_path, 4);
  for (uint32_t k = 0; k < 4; k++) assert_int_equal(r.src[k], r.piv[k]);
  /* Unicode and byte-fallback tokens: "你好" as two characters vs as bytes + one character */
  const char *s3[] = {" ", "\xe4", "\xbd", "\xa0", "\xe5\xa5\xbd", "!", NULL};
  const char *p3[] = {" \xe4\xbd\xa0", "\xe5\xa5\xbd!", NULL};
  seq_from(&s, s3);
  seq_from(&p, p3);
  assert_int_equal(fc_align_mined(a, &s.s, &p.s, &r, &err), 0);
  /* d(" ", " 你")=1; a byte of 你 splits the character, so it is compared on bytes: 3 against
   * " 你" (4 bytes) -> all three bytes on pivot 0 costs 1+3+3+3 = 10 (against 好! they would
   * cost 4); 好 and ! on pivot 1: d(好, 好!)=1 + d(!, 好!)=1 */
  assert_int_equal(r.cost, 12);
  int g3[] = {4, 0, 1, 2, 3, 2, 4, 5};
  expect_groups(&r, g3);
  fc_align_result_t f = {0};
  assert_int_equal(fc_align_full(a, &s.s, &p.s, &f, &err), 0);
  assert_int_equal(f.cost, r.cost);
  /* empty sequence is an error, not a crash */
  fc_align_seq_t empty = {.n = 0, .bytes = "", .start = (uint32_t[]){0}};
  assert_int_equal(fc_align_mined(a, &empty, &p.s, &r, &err), FC_EINVAL);
  fc_align_result_free(&r);
  fc_align_result_free(&f);
  fc_aligner_destroy(&a);
}

/* Minimum over all monotone paths, by recursion (tiny inputs only). */
static int64_t brute(const seq_t *s, const seq_t *p, uint32_t i, uint32_t j) {
  const fc_align_seq_t *a = &s->s, *b = &p->s;
  int64_t d = fc_edit_distance(a->bytes + a->start[i], a->start[i + 1] - a->start[i],
                               b->bytes + b->start[j], b->start[j + 1] - b->start[j]);
  if (i == 0 && j == 0) return d;
  int64_t best = INT64_MAX;
  if (i > 0 && j > 0) {
    int64_t v = brute(s, p, i - 1, j - 1);
    if (v < best) best = v;
  }
  if (i > 0) {
    int64_t v = brute(s, p, i - 1, j);
    if (v < best) best = v;
  }
  if (j > 0) {
    int64_t v = brute(s, p, i, j - 1);
    if (v < best) best = v;
  }
  return best + d;
}

/* Random segmentation of text into tokens of 1..maxlen bytes (on UTF-8 boundaries). */
static void random_seg(fc_rng_t *r, const char *text, uint32_t len, int maxlen, seq_t *q) {
  memcpy(q->buf, text, len);
  uint32_t n = 0, pos = 0;
  while (pos < len) {
    q->start[n++] = pos;
    int take = 1 + (int)(fc_rng_u64(r) % (uint64_t)maxlen);
    for (int t = 0; t < take && pos < len; t++) {
      pos++;
      while (pos < len && ((uint8_t)text[pos] & 0xc0) == 0x80) pos++;
    }
  }
  q->start[n] = pos;
  q->s = (fc_align_seq_t){.n = n, .bytes = q->buf, .start = q->start, .off = NULL};
}

static void random_text(fc_rng_t *r, char *out, uint32_t nchars, uint32_t *len) {
  static const char *alpha[] = {"a", "b", " ", "c", "\xc3\xa9", "\xe4\xbd\xa0", "\n", "d"};
  uint32_t l = 0;
  for (uint32_t i = 0; i < nchars; i++) {
    const char *c = alpha[fc_rng_u64(r) % 8];
    size_t cl = strlen(c);
    memcpy(out + l, c, cl);
    l += (uint32_t)cl;
  }
  *len = l;
}

static void check_path(const fc_align_result_t *r, uint32_t n, uint32_t m, const seq_t *s,
                       const seq_t *p) {
  assert_int_equal(r->src[0], 0);
  assert_int_equal(r->piv[0], 0);
  assert_int_equal(r->src[r->n_path - 1], n - 1);
  assert_int_equal(r->piv[r->n_path - 1], m - 1);
  int64_t sum = 0;
  for (uint32_t k = 0; k < r->n_path; k++) {
    if (k) {
      uint32_t di = r->src[k] - r->src[k - 1], dj = r->piv[k] - r->piv[k - 1];
      assert_true(di <= 1 && dj <= 1 && di + dj >= 1);
    }
    const fc_align_seq_t *a = &s->s, *b = &p->s;
    sum += fc_edit_distance(a->bytes + a->start[r->src[k]], a->start[r->src[k] + 1] - a->start[r->src[k]],
                            b->bytes + b->start[r->piv[k]], b->start[r->piv[k] + 1] - b->start[r->piv[k]]);
  }
  assert_int_equal(sum, r->cost); /* the reported cost is the cost of the reported path */
}

static void test_random_vs_brute(void **state) {
  (void)state;
  fc_rng_t r;
  fc_rng_seed(&r, 7);
  fc_aligner_t *a = fc_aligner_new(2);
  fc_align_result_t rb = {0}, rf = {0};
  fc_err_t err = {0};
  static seq_t s, p;
  char text[256];
  for (int iter = 0; iter < 300; iter++) {
    uint32_t len;
    random_text(&r, text, 3 + (uint32_t)(fc_rng_u64(&r) % 9), &len);
    random_seg(&r, text, len, 3, &s);
    random_seg(&r, text, len, 4, &p);
    if (s.s.n > 7 || p.s.n > 7) continue;
    assert_int_equal(fc_align_full(a, &s.s, &p.s, &rf, &err), 0);
    assert_int_equal(fc_align_mined(a, &s.s, &p.s, &rb, &err), 0);
    int64_t want = brute(&s, &p, s.s.n - 1, p.s.n - 1);
    assert_int_equal(rf.cost, want);
    assert_int_equal(rb.cost, want);
    check_path(&rf, s.s.n, p.s.n, &s, &p);
    check_path(&rb, s.s.n, p.s.n, &s, &p);
  }
  /* unrelated random token strings (not a segmentation of one text) against brute force */
  for (int iter = 0; iter < 200; iter++) {
    char t1[64], t2[64];
    uint32_t l1, l2;
    random_text(&r, t1, 2 + (uint32_t)(fc_rng_u64(&r) % 8), &l1);
    random_text(&r, t2, 2 + (uint32_t)(fc_rng_u64(&r) % 8), &l2);
    random_seg(&r, t1, l1, 2, &s);
    random_seg(&r, t2, l2, 2, &p);
    if (s.s.n > 7 || p.s.n > 7) continue;
    assert_int_equal(fc_align_full(a, &s.s, &p.s, &rf, &err), 0);
    assert_int_equal(rf.cost, brute(&s, &p, s.s.n - 1, p.s.n - 1));
    check_path(&rf, s.s.n, p.s.n, &s, &p);
  }
  fc_align_result_free(&rb);
  fc_align_result_free(&rf);
  fc_aligner_destroy(&a);
}

/* Longer texts. With a margin wider than the sequences the band is the whole matrix, so the
 * banded DP must equal the full one exactly on any input; with the default margin, on two
 * realistic tokenizations of the same text (tests/synth_tok.h), the band may only miss paths
 * that shift far from the character overlap, so its cost is >= the full DP's and within 0.1%. */
static void test_band_equals_full(void **state) {
  (void)state;
  fc_rng_t r;
  fc_rng_seed(&r, 11);
  fc_aligner_t *wide = fc_aligner_new(100000), *a = fc_aligner_new(FC_ALIGN_DEFAULT_MARGIN);
  fc_align_result_t rb = {0}, rf = {0};
  fc_err_t err = {0};
  static seq_t s, p;
  char text[1024];
  for (int iter = 0; iter < 100; iter++) {
    uint32_t len;
    random_text(&r, text, 40 + (uint32_t)(fc_rng_u64(&r) % 100), &len);
    random_seg(&r, text, len, 1 + (int)(fc_rng_u64(&r) % 5), &s);
    random_seg(&r, text, len, 1 + (int)(fc_rng_u64(&r) % 5), &p);
    assert_int_equal(fc_align_full(a, &s.s, &p.s, &rf, &err), 0);
    assert_int_equal(fc_align_mined(wide, &s.s, &p.s, &rb, &err), 0);
    assert_int_equal(rb.cost, rf.cost);
    check_path(&rb, s.s.n, p.s.n, &s, &p);
  }
  synth_vocab_t va, vb;
  synth_vocab_build(&va, 0, 32000);
  synth_vocab_build(&vb, 1, 32000);
  int64_t full = 0, band = 0;
  static uint32_t ia[4096], sa[4096], ib[4096], sb[4096];
  for (int d = 0; d < 12; d++) {
    uint32_t len;
    char *t = synth_text((uint64_t)d + 100, 1500, &len);
    uint32_t n = synth_encode(&va, t, len, ia, sa), m = synth_encode(&vb, t, len, ib, sb);
    fc_align_seq_t S = {n, t, sa, NULL}, P = {m, t, sb, NULL};
    assert_int_equal(fc_align_full(a, &S, &P, &rf, &err), 0);
    assert_int_equal(fc_align_mined(a, &S, &P, &rb, &err), 0);
    assert_true(rb.cost >= rf.cost);
    assert_true(rf.cost > 0);
    full += rf.cost;
    band += rb.cost;
    /* explicit offsets equal to the starts give the same result as NULL offsets */
    fc_align_seq_t S2 = {n, t, sa, sa};
    int64_t c = rb.cost;
    assert_int_equal(fc_align_mined(a, &S2, &P, &rb, &err), 0);
    assert_int_equal(rb.cost, c);
    free(t);
  }
  print_message("banded cost %ld vs full %ld (+%.4f%%)\n", (long)band, (long)full,
                100.0 * (double)(band - full) / (double)full);
  assert_true((double)(band - full) <= 0.001 * (double)full);
  synth_vocab_free(&va);
  synth_vocab_free(&vb);
  fc_align_result_free(&rb);
  fc_align_result_free(&rf);
  fc_aligner_destroy(&a);
  fc_aligner_destroy(&wide);
}

/* Offsets that go backwards are an input error. */
static void test_bad_offsets(void **state) {
  (void)state;
  fc_aligner_t *a = fc_aligner_new(2);
  fc_align_result_t r = {0};
  fc_err_t err = {0};
  seq_t s, p;
  const char *t[] = {"a", "b", "c", NULL};
  seq_from(&s, t);
  seq_from(&p, t);
  uint32_t off[3] = {0, 5, 2};
  s.s.off = off;
  assert_int_equal(fc_align_mined(a, &s.s, &p.s, &r, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "offsets"));
  fc_align_result_free(&r);
  fc_aligner_destroy(&a);
}

/* Against FuseChat's dtw re-implemented in Python (tests/ref/align_ref.py): same cost and the
 * same path, tie-breaking included, on random sequences with Unicode and byte-fallback tokens
 * (the latter compared on bytes, as fc_token_distance does). */
static void hex_tokens(json_t *arr, seq_t *q) {
  uint32_t n = 0, pos = 0;
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    const char *h = json_string_value(v);
    q->start[n++] = pos;
    for (size_t k = 0; h[k] && h[k + 1]; k += 2) {
      unsigned b;
      sscanf(h + k, "%2x", &b);
      q->buf[pos++] = (char)b;
    }
  }
  q->start[n] = pos;
  q->s = (fc_align_seq_t){.n = n, .bytes = q->buf, .start = q->start, .off = NULL};
}

static void test_python_reference(void **state) {
  (void)state;
  const char *dir = getenv("FC_FIXTURES");
  char path[1024];
  snprintf(path, sizeof path, "%s/align/dtw_ref.json", dir ? dir : "tests/fixtures");
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  if (!root) fail_msg("cannot load %s: %s", path, jerr.text);
  fc_aligner_t *a = fc_aligner_new(FC_ALIGN_DEFAULT_MARGIN), *wide = fc_aligner_new(1 << 20);
  fc_align_result_t r = {0};
  fc_err_t err = {0};
  static seq_t s, p;
  size_t i;
  json_t *c;
  int n = 0;
  json_array_foreach(root, i, c) {
    hex_tokens(json_object_get(c, "src"), &s);
    hex_tokens(json_object_get(c, "piv"), &p);
    json_t *want = json_object_get(c, "path");
    int64_t cost = (int64_t)json_number_value(json_object_get(c, "cost"));
    for (int which = 0; which < 2; which++) {
      if (which == 0) assert_int_equal(fc_align_full(a, &s.s, &p.s, &r, &err), 0);
      else assert_int_equal(fc_align_mined(wide, &s.s, &p.s, &r, &err), 0);
      assert_int_equal(r.cost, cost);
      assert_int_equal(r.n_path, json_array_size(want));
      for (uint32_t k = 0; k < r.n_path; k++) {
        json_t *pr = json_array_get(want, k);
        assert_int_equal(r.src[k], json_integer_value(json_array_get(pr, 0)));
        assert_int_equal(r.piv[k], json_integer_value(json_array_get(pr, 1)));
      }
    }
    assert_int_equal(fc_align_mined(a, &s.s, &p.s, &r, &err), 0);
    assert_true(r.cost >= cost);
    n++;
  }
  assert_int_equal(n, 60);
  json_decref(root);
  fc_align_result_free(&r);
  fc_aligner_destroy(&a);
  fc_aligner_destroy(&wide);
}

/* ---- split characters under real tokenizers ---------------------------------------------- */

/* An independent reference for the local cost, written out plainly: a token made of whole
 * UTF-8 characters is a string of code points; a token holding part of a character (a byte
 * that is not inside a complete, well-formed sequence of the token) is compared on bytes, and so
 * is anything it is paired with. */
static int ref_whole_chars(const uint8_t *t, uint32_t n, uint32_t *cps, uint32_t *ncp) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < n; k++) {
    uint8_t c = t[i];
    uint32_t need, cp;
    if (c < 0x80) need = 0, cp = c;
    else if (c >= 0xc2 && c <= 0xdf) need = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) need = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) need = 3, cp = c & 0x07;
    else return 0;
    if (i + need >= n && need) return 0;
    for (uint32_t x = 1; x <= need; x++) {
      if ((t[i + x] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (t[i + x] & 0x3f);
    }
    cps[k] = cp;
    i += need + 1;
  }
  *ncp = k;
  return 1;
}

static int64_t ref_lev(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb) {
  int64_t *row = malloc(((size_t)nb + 1) * sizeof *row);
  for (uint32_t j = 0; j <= nb; j++) row[j] = j;
  for (uint32_t i = 1; i <= na; i++) {
    int64_t diag = row[0];
    row[0] = i;
    for (uint32_t j = 1; j <= nb; j++) {
      int64_t up = row[j], v = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < v) v = up + 1;
      if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
      diag = up;
      row[j] = v;
    }
  }
  int64_t d = row[nb];
  free(row);
  return d;
}

/* bytes_only: every pair on bytes (the pure byte measure, reported beside). */
static int64_t ref_cost(const fc_align_seq_t *s, uint32_t i, const fc_align_seq_t *p, uint32_t j,
                        int bytes_only) {
  const uint8_t *a = (const uint8_t *)s->bytes + s->start[i], *b = (const uint8_t *)p->bytes + p->start[j];
  uint32_t la = s->start[i + 1] - s->start[i], lb = p->start[j + 1] - p->start[j], na, nb;
  uint32_t *ua = malloc(((size_t)la + 1) * 4), *ub = malloc(((size_t)lb + 1) * 4);
  if (bytes_only || !ref_whole_chars(a, la, ua, &na) || !ref_whole_chars(b, lb, ub, &nb)) {
    for (uint32_t k = 0; k < la; k++) ua[k] = a[k];
    for (uint32_t k = 0; k < lb; k++) ub[k] = b[k];
    na = la, nb = lb;
  }
  int64_t d = ref_lev(ua, na, ub, nb);
  free(ua);
  free(ub);
  return d;
}

/* The optimal alignment cost: the full DTW table, no band, no cache. */
static int64_t ref_dtw(const fc_align_seq_t *s, const fc_align_seq_t *p, int bytes_only) {
  uint32_t n = s->n, m = p->n;
  int64_t *acc = malloc((size_t)n * m * sizeof *acc);
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < m; j++) {
      int64_t best = 0;
      if (i || j) {
        best = INT64_MAX;
        if (i && j && acc[(i - 1) * m + j - 1] < best) best = acc[(i - 1) * m + j - 1];
        if (i && acc[(i - 1) * m + j] < best) best = acc[(i - 1) * m + j];
        if (j && acc[i * m + j - 1] < best) best = acc[i * m + j - 1];
      }
      acc[i * m + j] = best + ref_cost(s, i, p, j, bytes_only);
    }
  int64_t c = acc[(size_t)n * m - 1];
  free(acc);
  return c;
}

typedef struct tokseq {
  fc_align_seq_t s;
  int32_t *ids;
  char *bytes;
  uint32_t *start;
} tokseq_t;

/* Token texts as the fusion stages build them (fc_tok_token_text of each id). */
static void tokseq_encode(const fc_tok_t *t, const char *text, tokseq_t *q) {
  uint32_t *off = NULL;
  size_t n = 0;
  fc_err_t err = {0};
  assert_int_equal(fc_tok_encode(t, text, strlen(text), 0, &q->ids, &off, &n, &err), 0);
  free(off);
  size_t len = 0;
  char probe[1];
  for (size_t i = 0; i < n; i++) len += fc_tok_token_text(t, q->ids[i], probe, 0);
  q->bytes = malloc(len + 1);
  q->start = malloc((n + 1) * sizeof *q->start);
  size_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    q->start[i] = (uint32_t)pos;
    pos += fc_tok_token_text(t, q->ids[i], q->bytes + pos, len + 1 - pos);
  }
  q->start[n] = (uint32_t)pos;
  q->s = (fc_align_seq_t){(uint32_t)n, q->bytes, q->start, NULL};
}

static void tokseq_free(tokseq_t *q) {
  free(q->ids);
  free(q->bytes);
  free(q->start);
}

static fc_tok_t *load_tok(const char *name) {
  char rel[64];
  snprintf(rel, sizeof rel, "tok/%s", name);
  char *path = test_fixture(rel);
  fc_tok_t *t = NULL;
  fc_err_t err = {0};
  if (fc_tok_load(&t, path, &err)) fail_msg("load %s: %s", path, err.msg);
  free(path);
  return t;
}

#define FAMILY "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7\xe2\x80\x8d\xf0\x9f\x91\xa6"

/* Texts whose characters Llama-2 spells as byte-fallback tokens and Qwen3 splits across
 * byte-level tokens (emoji with zero-width joiners, Hangul, rare CJK), aligned both ways: the
 * path the aligner returns must cost the reference optimum, and its reported cost must be the
 * reference cost of that path. */
static void test_split_characters(void **state) {
  (void)state;
  fc_tok_t *ll = load_tok("llama2"), *qw = load_tok("qwen3");
  static const char *texts[] = {
      FAMILY,
      " " FAMILY,
      FAMILY FAMILY,
      "The family: " FAMILY " is here.",
      "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xed\x85\x8d\xec\x8a\xa4\xed\x8a\xb8 \xeb\xb6\x84\xed\x95\xb4",
      "\xe6\xb7\xb1\xe5\xba\xa6\xe5\xad\xa6\xe4\xb9\xa0\xe6\xa8\xa1\xe5\x9e\x8b\xe8\x9e\x8d\xe5\x90\x88 \xf0\xa0\x80\x80\xe9\xbe\x98",
      "caf\xc3\xa9 \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd ok",
      NULL};
  fc_aligner_t *a = fc_aligner_new(FC_ALIGN_DEFAULT_MARGIN), *wide = fc_aligner_new(1 << 20);
  fc_align_result_t r = {0};
  fc_err_t err = {0};
  for (int k = 0; texts[k]; k++)
    for (int dir = 0; dir < 2; dir++) {
      tokseq_t s, p;
      tokseq_encode(dir ? qw : ll, texts[k], &s);
      tokseq_encode(dir ? ll : qw, texts[k], &p);
      int64_t opt = ref_dtw(&s.s, &p.s, 0), opt_bytes = ref_dtw(&s.s, &p.s, 1);
      for (int w = 0; w < 2; w++) {
        assert_int_equal((w ? fc_align_full : fc_align_mined)(w ? wide : a, &s.s, &p.s, &r, &err), 0);
        int64_t got = 0, got_bytes = 0;
        for (uint32_t x = 0; x < r.n_path; x++) {
          got += ref_cost(&s.s, r.src[x], &p.s, r.piv[x], 0);
          got_bytes += ref_cost(&s.s, r.src[x], &p.s, r.piv[x], 1);
        }
        if (!w)
          print_message("text %d %s: %u x %u tokens: path %ld (optimum %ld), on bytes alone %ld (optimum %ld)\n",
                        k, dir ? "qwen3->llama2" : "llama2->qwen3", s.s.n, p.s.n, (long)got, (long)opt,
                        (long)got_bytes, (long)opt_bytes);
        assert_int_equal(got, opt);
        assert_int_equal(r.cost, got);
      }
      tokseq_free(&s);
      tokseq_free(&p);
    }
  fc_align_result_free(&r);
  fc_aligner_destroy(&a);
  fc_aligner_destroy(&wide);
  fc_tok_destroy(&ll);
  fc_tok_destroy(&qw);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_edit_distance),
      cmocka_unit_test(test_hand_checked),
      cmocka_unit_test(test_random_vs_brute),
      cmocka_unit_test(test_band_equals_full),
      cmocka_unit_test(test_bad_offsets),
      cmocka_unit_test(test_python_reference),
      cmocka_unit_test(test_split_characters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
