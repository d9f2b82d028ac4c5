/* Unit tests for the vocabulary map: counts (merge of shards == whole, associativity, files),
 * the map's tie rules and fallbacks, the MinED search against brute force, file validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_vmap.h"
#include "synth_tok.h"
#include "test_support.h"

static char g_dir[64];

static fc_vocab_t synth_as_vocab(const synth_vocab_t *s) {
  fc_vocab_t v;
  uint32_t *start = fc_xmalloc(((size_t)s->n + 1) * 4), len = 0;
  for (uint32_t i = 0; i < s->n; i++) start[i] = len, len += s->len[i];
  start[s->n] = len;
  char *b = fc_xmalloc(len + 1);
  for (uint32_t i = 0; i < s->n; i++) memcpy(b + start[i], s->piece[i], s->len[i]);
  v.n = s->n;
  v.bytes = b;
  v.start = start;
  return v;
}

/* Counts of aligned pairs over documents [a, b) of the synthetic corpus. */
static void count_docs(fc_vcount_t *c, const synth_vocab_t *va, const synth_vocab_t *vb, int a, int b) {
  fc_aligner_t *al = fc_aligner_new(FC_ALIGN_DEFAULT_MARGIN);
  fc_align_result_t r = {0};
  fc_err_t err = {0};
  static uint32_t ia[4096], sa[4096], ib[4096], sb[4096];
  for (int d = a; d < b; d++) {
    uint32_t len;
    char *t = synth_text((uint64_t)d, 800, &len);
    uint32_t n = synth_encode(va, t, len, ia, sa), m = synth_encode(vb, t, len, ib, sb);
    fc_align_seq_t S = {n, t, sa, NULL}, P = {m, t, sb, NULL};
    assert_int_equal(fc_align_mined(al, &S, &P, &r, &err), 0);
    assert_int_equal(fc_vcount_add_path(c, ia, ib, &r, &err), 0);
    free(t);
  }
  fc_align_result_free(&r);
  fc_aligner_destroy(&al);
}

static void test_counts_merge(void **state) {
  (void)state;
  synth_vocab_t va, vb;
  synth_vocab_build(&va, 0, 32000);
  synth_vocab_build(&vb, 1, 32000);
  fc_vocab_t sv = synth_as_vocab(&va), pv = synth_as_vocab(&vb);
  uint64_t hs = fc_vocab_hash(&sv), hp = fc_vocab_hash(&pv);
  fc_vcount_t *whole = fc_vcount_new(va.n, vb.n, hs, hp);
  count_docs(whole, &va, &vb, 0, 30);
  fc_vcount_t *sh[3];
  char *paths[3];
  fc_err_t err = {0};
  for (int k = 0; k < 3; k++) {
    sh[k] = fc_vcount_new(va.n, vb.n, hs, hp);
    count_docs(sh[k], &va, &vb, 10 * k, 10 * k + 10);
    char name[32];
    snprintf(name, sizeof name, "shard%d.cnt", k);
    paths[k] = fc_path_join(g_dir, name);
    assert_int_equal(fc_vcount_save(sh[k], paths[k], &err), 0);
  }
  assert_true(fc_vcount_pairs(whole) > 100);
  assert_false(fc_vcount_equal(whole, sh[0]));
  /* merged files == whole */
  fc_vcount_t *merged = NULL;
  assert_int_equal(fc_vcount_merge_files(&merged, (const char *const *)paths, 3, &err), 0);
  assert_true(fc_vcount_equal(merged, whole));
  assert_int_equal(fc_vcount_total(merged), fc_vcount_total(whole));
  /* (a + b) + c == a + (b + c) */
  fc_vcount_t *l = fc_vcount_new(va.n, vb.n, hs, hp), *r = fc_vcount_new(va.n, vb.n, hs, hp);
  fc_vcount_t *bc = fc_vcount_new(va.n, vb.n, hs, hp);
  assert_int_equal(fc_vcount_merge(l, sh[0], &err), 0);
  assert_int_equal(fc_vcount_merge(l, sh[1], &err), 0);
  assert_int_equal(fc_vcount_merge(l, sh[2], &err), 0);
  assert_int_equal(fc_vcount_merge(bc, sh[1], &err), 0);
  assert_int_equal(fc_vcount_merge(bc, sh[2], &err), 0);
  assert_int_equal(fc_vcount_merge(r, sh[0], &err), 0);
  assert_int_equal(fc_vcount_merge(r, bc, &err), 0);
  assert_true(fc_vcount_equal(l, r));
  assert_true(fc_vcount_equal(l, whole));
  /* stats map from merged counts == from whole */
  fc_vmap_t *m1 = NULL, *m2 = NULL;
  assert_int_equal(fc_vmap_build(&m1, FC_VMAP_STATS, merged, &sv, &pv, 2, &err), 0);
  assert_int_equal(fc_vmap_build(&m2, FC_VMAP_STATS, whole, &sv, &pv, 1, &err), 0);
  assert_memory_equal(m1->map, m2->map, (size_t)va.n * 4);
  /* a count file of another vocabulary does not merge */
  fc_vcount_t *other = fc_vcount_new(va.n, vb.n, hs + 1, hp);
  fc_vcount_add(other, 1, 1, 1);
  assert_int_equal(fc_vcount_merge(merged, other, &err), FC_EMISMATCH);
  char *op = fc_path_join(g_dir, "other.cnt");
  assert_int_equal(fc_vcount_save(other, op, &err), 0);
  const char *mix[2] = {paths[0], op};
  fc_vcount_t *bad = NULL;
  assert_int_equal(fc_vcount_merge_files(&bad, mix, 2, &err), FC_EMISMATCH);
  assert_non_null(strstr(err.msg, "other.cnt"));
  /* stats map against counts of another vocabulary */
  fc_vmap_t *m3 = NULL;
  assert_int_equal(fc_vmap_build(&m3, FC_VMAP_STATS, other, &sv, &pv, 1, &err), FC_EMISMATCH);
  /* corrupt and truncated count files */
  char *buf;
  size_t len;
  assert_int_equal(fc_read_file(paths[0], &buf, &len, &err), 0);
  char *cp = fc_path_join(g_dir, "corrupt.cnt");
  for (size_t pos = 0; pos < len; pos += 1 + len / 300) {
    FILE *f = fopen(cp, "wb");
    buf[pos] ^= 0x10;
    fwrite(buf, 1, len, f);
    buf[pos] ^= 0x10;
    fclose(f);
    fc_vcount_t *c = NULL;
    assert_int_equal(fc_vcount_load(&c, cp, &err), FC_EFORMAT);
    f = fopen(cp, "wb");
    fwrite(buf, 1, pos, f);
    fclose(f);
    assert_int_equal(fc_vcount_load(&c, cp, &err), FC_EFORMAT);
  }
  unlink(cp);
  free(cp);
  free(buf);
  unlink(op);
  free(op);
  for (int k = 0; k < 3; k++) {
    unlink(paths[k]);
    free(paths[k]);
    fc_vcount_destroy(&sh[k]);
  }
  fc_vcount_destroy(&other);
  fc_vcount_destroy(&l);
  fc_vcount_destroy(&r);
  fc_vcount_destroy(&bc);
  fc_vcount_destroy(&merged);
  fc_vcount_destroy(&whole);
  fc_vmap_destroy(&m1);
  fc_vmap_destroy(&m2);
  fc_vocab_free(&sv);
  fc_vocab_free(&pv);
  synth_vocab_free(&va);
  synth_vocab_free(&vb);
}

static void test_tie_rules(void **state) {
  (void)state;
  static tvocab_t s, p;
  const char *st[] = {"ab", "cd", "hello", "zzzz", "\xe4\xbd\xa0", "", NULL};
  const char *pt[] = {"ab", "ax", "zz", "ab", "ay", "help", "", "hallo", "\xe4\xbd\xa0\xe5\xa5\xbd", NULL};
  tvocab(&s, st);
  tvocab(&p, pt);
  fc_err_t err = {0};
  fc_vcount_t *c = fc_vcount_new(s.v.n, p.v.n, fc_vocab_hash(&s.v), fc_vocab_hash(&p.v));
  /* src 0 "ab": equal counts 5 on "zz" (ed 2), "ay" (ed 1), "ax" (ed 1) -> "ax" (smaller id) */
  fc_vcount_add(c, 0, 2, 5);
  fc_vcount_add(c, 0, 4, 5);
  fc_vcount_add(c, 0, 1, 5);
  fc_vcount_add(c, 0, 0, 4); /* the same text but less frequent: count wins */
  /* src 1 "cd": a single aligned pair wins whatever its text */
  fc_vcount_add(c, 1, 5, 1);
  fc_vmap_t *m = NULL;
  assert_int_equal(fc_vmap_build(&m, FC_VMAP_STATS, c, &s.v, &p.v, 1, &err), 0);
  assert_int_equal(m->map[0], 1);
  assert_int_equal(m->how[0], FC_VMAP_BY_COUNT);
  assert_int_equal(m->map[1], 5);
  /* src 2 "hello": never aligned, no exact text -> MinED: "hallo" (1) beats "help" (2) */
  assert_int_equal(m->map[2], 7);
  assert_int_equal(m->how[2], FC_VMAP_BY_MINED);
  /* src 3 "zzzz": MinED "zz" (2) vs "ab"/"ax"/... (4) */
  assert_int_equal(m->map[3], 2);
  /* src 4 "你": code points: "你好" is 1 away, everything else 2 -> id 8 */
  assert_int_equal(m->map[4], 8);
  /* src 5 "": empty pivot texts are never candidates; every 2-unit token is at 2, smallest id 0 */
  assert_int_equal(m->map[5], 0);
  fc_vmap_destroy(&m);
  /* mined: exact first (smallest id among duplicates "ab" 0 and 3) */
  assert_int_equal(fc_vmap_build(&m, FC_VMAP_MINED, NULL, &s.v, &p.v, 1, &err), 0);
  assert_int_equal(m->map[0], 0);
  assert_int_equal(m->how[0], FC_VMAP_BY_EXACT);
  assert_int_equal(m->map[1], 0); /* "cd": distance 2 to all two-letter tokens, smallest id */
  assert_int_equal(m->map[2], 7);
  fc_vmap_destroy(&m);
  /* exact: no fallback */
  assert_int_equal(fc_vmap_build(&m, FC_VMAP_EXACT, NULL, &s.v, &p.v, 1, &err), 0);
  assert_int_equal(m->map[0], 0);
  assert_int_equal(m->map[1], FC_VMAP_NONE);
  assert_int_equal(m->map[2], FC_VMAP_NONE);
  fc_vmap_set(m, 1, 6);
  assert_int_equal(m->map[1], 6);
  /* save / load round trip and corrupt rejection */
  char *path = fc_path_join(g_dir, "m.vmap");
  assert_int_equal(fc_vmap_save(m, path, &err), 0);
  fc_vmap_t *l = NULL;
  assert_int_equal(fc_vmap_load(&l, path, &err), 0);
  assert_int_equal(l->src_vocab, m->src_vocab);
  assert_int_equal(l->method, FC_VMAP_EXACT);
  assert_memory_equal(l->map, m->map, (size_t)m->src_vocab * 4);
  assert_memory_equal(l->how, m->how, m->src_vocab);
  fc_vmap_destroy(&l);
  char *buf;
  size_t len;
  assert_int_equal(fc_read_file(path, &buf, &len, &err), 0);
  for (size_t pos = 0; pos < len; pos++) {
    buf[pos] ^= 0x41;
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    buf[pos] ^= 0x41;
    assert_int_equal(fc_vmap_load(&l, path, &err), FC_EFORMAT);
    f = fopen(path, "wb");
    fwrite(buf, 1, pos, f);
    fclose(f);
    assert_int_equal(fc_vmap_load(&l, path, &err), FC_EFORMAT);
  }
  unlink(path);
  free(path);
  free(buf);
  fc_vmap_destroy(&m);
  fc_vcount_destroy(&c);
  fc_vmap_method_t mt;
  assert_int_equal(fc_vmap_method_parse("stats", &mt), 0);
  assert_int_equal(mt, FC_VMAP_STATS);
  assert_int_equal(fc_vmap_method_parse("bogus", &mt), FC_EINVAL);
}

/* The pruned MinED search returns what a scan of the whole vocabulary returns. */
static void test_mined_vs_brute(void **state) {
  (void)state;
  fc_rng_t r;
  fc_rng_seed(&r, 3);
  static char buf[65536];
  static uint32_t start[4097];
  static const char *alpha[] = {"a", "b", "c", "d", "e", " ", "\xc3\xa9", "\xe4\xbd\xa0", "\xff"};
  uint32_t pos = 0, n = 3000;
  for (uint32_t i = 0; i < n; i++) {
    start[i] = pos;
    uint32_t l = (uint32_t)(fc_rng_u64(&r) % 8);
    for (uint32_t k = 0; k < l; k++) {
      const char *c = alpha[fc_rng_u64(&r) % 9];
      memcpy(buf + pos, c, strlen(c));
      pos += (uint32_t)strlen(c);
    }
  }
  start[n] = pos;
  fc_vocab_t v = {n, buf, start};
  fc_mined_index_t *ix = fc_mined_index_new(&v);
  for (int q = 0; q < 300; q++) {
    char qt[64];
    uint32_t ql = 0, l = (uint32_t)(fc_rng_u64(&r) % 12);
    for (uint32_t k = 0; k < l; k++) {
      const char *c = alpha[fc_rng_u64(&r) % 9];
      memcpy(qt + ql, c, strlen(c));
      ql += (uint32_t)strlen(c);
    }
    uint32_t best = UINT32_MAX, bid = FC_VMAP_NONE;
    for (uint32_t i = 0; i < n; i++) {
      if (start[i + 1] == start[i]) continue;
      uint32_t d = fc_edit_distance(qt, ql, buf + start[i], start[i + 1] - start[i]);
      if (d < best) best = d, bid = i;
    }
    uint32_t dist;
    uint32_t got = fc_mined_nearest(ix, qt, ql, &dist);
    assert_int_equal(got, bid);
    assert_int_equal(dist, best);
  }
  fc_mined_index_destroy(&ix);
}

static int text_fn(void *ctx, uint32_t id, char *out, size_t cap) {
  (void)ctx;
  if (id == 7) return FC_EINVAL;
  uint32_t len = id * 20000; /* grows past the initial 64 KB buffer */
  if (len <= cap)
    for (uint32_t i = 0; i < len; i++) out[i] = (char)('a' + (id + i) % 26);
  return (int)len;
}

static void test_vocab_from_fn(void **state) {
  (void)state;
  fc_vocab_t v;
  fc_err_t err = {0};
  assert_int_equal(fc_vocab_from_fn(&v, 7, text_fn, NULL, &err), 0);
  assert_int_equal(v.n, 7);
  assert_int_equal(v.start[6] - v.start[5], 5 * 20000);
  assert_int_equal(v.start[7], 21 * 20000);
  assert_memory_equal(v.bytes + v.start[2], "cde", 3);
  fc_vocab_free(&v);
  assert_int_equal(fc_vocab_from_fn(&v, 8, text_fn, NULL, &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "token 7"));
}

int main(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/fc_vmap_XXXXXX");
  if (!mkdtemp(g_dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_merge),
      cmocka_unit_test(test_tie_rules),
      cmocka_unit_test(test_mined_vs_brute),
      cmocka_unit_test(test_vocab_from_fn),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  rmdir(g_dir);
  return rc;
}
