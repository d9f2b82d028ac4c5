/* The demo's task generator: answers are right (checked by recomputing them from the prompt),
 * train and eval never share a prompt, facts are consistent, output is deterministic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_gendata.h"

static void check_answer(const fc_gendata_item_t *it) {
  int a, b, n;
  char op, from[8], to[8], word[16], c;
  if (sscanf(it->prompt, "What is %d %c %d?", &a, &op, &b) == 3) {
    assert_int_equal(it->family, FC_GENDATA_ARITH);
    assert_int_equal(atoi(it->answer), op == '+' ? a + b : a - b);
  } else if (sscanf(it->prompt, "Convert %d %7s to %7[a-z].", &n, from, to) == 3) {
    static const char *u[][2] = {{"km", "m"}, {"m", "cm"}, {"kg", "g"},   {"h", "min"},     {"min", "s"},
                                 {"cm", "mm"}, {"l", "ml"}, {"t", "kg"}, {"day", "h"},     {"week", "day"},
                                 {"year", "month"}, {"dozen", "item"}};
    static const int mul[] = {1000, 100, 1000, 60, 60, 10, 1000, 1000, 24, 7, 12, 12};
    int found = 0;
    for (int i = 0; i < 12; i++)
      if (!strcmp(from, u[i][0]) && !strcmp(to, u[i][1])) assert_int_equal(atoi(it->answer), n * mul[i]), found = 1;
    assert_true(found);
  } else if (sscanf(it->prompt, "Reverse the word '%15[a-z]'.", word) == 1) {
    size_t len = strlen(word);
    assert_int_equal(strlen(it->answer), len);
    for (size_t i = 0; i < len; i++) assert_int_equal(it->answer[i], word[len - 1 - i]);
  } else if (sscanf(it->prompt, "Sort the letters of '%15[a-z]'.", word) == 1) {
    int counts[26] = {0};
    for (char *p = word; *p; p++) counts[*p - 'a']++;
    for (const char *p = it->answer; *p; p++) {
      counts[*p - 'a']--;
      if (p[1]) assert_true(p[0] <= p[1]);
    }
    for (int i = 0; i < 26; i++) assert_int_equal(counts[i], 0);
  } else if (sscanf(it->prompt, "How many times does '%c' occur in '%15[a-z]'?", &c, word) == 2) {
    int k = 0;
    for (char *p = word; *p; p++) k += *p == c;
    assert_int_equal(atoi(it->answer), k);
  } else {
    assert_int_equal(it->family, FC_GENDATA_FACTS);
  }
}

/* Facts: the attribute asked for, and the country: the last capitalised word after the first. */
static void fact_key(const fc_gendata_item_t *it, char *key, size_t n) {
  const char *attr = strstr(it->prompt, "capital") ? "capital" : strstr(it->prompt, "rule") ? "ruler" : "founded";
  char name[32] = "";
  for (const char *p = strchr(it->prompt, ' '); p; p = strchr(p + 1, ' '))
    if (p[1] >= 'A' && p[1] <= 'Z') sscanf(p + 1, "%31[A-Za-z]", name);
  assert_true(name[0]);
  snprintf(key, n, "%s/%s", attr, name);
}

static void test_answers_and_splits(void **state) {
  (void)state;
  fc_gendata_world_t *w = fc_gendata_world_new(7);
  fc_rng_t r;
  fc_rng_seed(&r, 3);
  enum { N = 4000 };
  static fc_gendata_item_t train[N], eval[N];
  for (int f = 0; f < FC_GENDATA_NCLASSIC; f++) {
    for (int i = 0; i < N / 4; i++) {
      fc_gendata_draw(w, (fc_gendata_family_t)f, FC_GENDATA_TRAIN, &r, &train[f * N / 4 + i]);
      fc_gendata_draw(w, (fc_gendata_family_t)f, FC_GENDATA_EVAL, &r, &eval[f * N / 4 + i]);
    }
  }
  for (int i = 0; i < N; i++) {
    check_answer(&train[i]);
    check_answer(&eval[i]);
    assert_true(strlen(train[i].answer) > 0);
  }
  /* No eval prompt is a training prompt. */
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) assert_string_not_equal(eval[i].prompt, train[j].prompt);
  /* Every held-out fact is taught in training in other words, with the same answer (240 facts:
   * enough training draws that each is drawn). */
  enum { NF = 8000 };
  static fc_gendata_item_t facts[NF];
  static char keys[NF][64];
  for (int j = 0; j < NF; j++) {
    fc_gendata_draw(w, FC_GENDATA_FACTS, FC_GENDATA_TRAIN, &r, &facts[j]);
    fact_key(&facts[j], keys[j], sizeof keys[j]);
  }
  for (int i = 3 * N / 4; i < N; i++) {
    char ke[64];
    fact_key(&eval[i], ke, sizeof ke);
    int taught = 0;
    for (int j = 0; j < NF; j++) {
      if (!strcmp(ke, keys[j])) {
        assert_string_not_equal(eval[i].prompt, facts[j].prompt);
        assert_string_equal(eval[i].answer, facts[j].answer);
        taught = 1;
      }
    }
    if (!taught) fail_msg("held-out fact %s never taught", ke);
  }
  fc_gendata_world_destroy(&w);
}

static void test_write_deterministic(void **state) {
  (void)state;
  fc_gendata_opts_t o = {.count = 200, .split = FC_GENDATA_TRAIN, .seed = 5, .world_seed = 7, .max_turns = 3};
  fc_err_t err = {0};
  assert_int_equal(fc_gendata_parse_mix("arith=2,strings=1", o.mix, &err), 0);
  assert_true(o.mix[FC_GENDATA_ARITH] == 2 && o.mix[FC_GENDATA_FACTS] == 0);
  char *a, *b;
  assert_int_equal(fc_gendata_write(&o, "/tmp/fc_tasks_a.jsonl", &err), 0);
  assert_int_equal(fc_gendata_write(&o, "/tmp/fc_tasks_b.jsonl", &err), 0);
  assert_int_equal(fc_read_file("/tmp/fc_tasks_a.jsonl", &a, NULL, &err), 0);
  assert_int_equal(fc_read_file("/tmp/fc_tasks_b.jsonl", &b, NULL, &err), 0);
  assert_string_equal(a, b);
  assert_null(strstr(a, "\"facts\"")); /* weight 0 */
  size_t lines = 0;
  for (char *p = a; *p; p++) lines += *p == '\n';
  assert_int_equal(lines, 200);
  free(a);
  free(b);
  /* Held-out facts are few: asking for more than exist is an error, not a loop. */
  o.split = FC_GENDATA_EVAL;
  o.count = 500;
  assert_int_equal(fc_gendata_parse_mix("facts=1", o.mix, &err), 0);
  assert_int_equal(fc_gendata_write(&o, "/tmp/fc_tasks_a.jsonl", &err), FC_EINVAL);
  assert_non_null(strstr(err.msg, "distinct held-out"));
  unlink("/tmp/fc_tasks_a.jsonl");
  unlink("/tmp/fc_tasks_b.jsonl");
  assert_int_equal(fc_gendata_parse_mix("arith", o.mix, &err), FC_EINVAL);
  assert_int_equal(fc_gendata_parse_mix("poetry=1", o.mix, &err), FC_EINVAL);
  assert_int_equal(fc_gendata_parse_mix("arith=0", o.mix, &err), FC_EINVAL);
}

/* Pick: every distinct letter of the word is listed as valid, nothing else; the training answer
 * is one of them, drawn across all of them; splits are disjoint. */
static void test_pick(void **state) {
  (void)state;
  fc_rng_t r;
  fc_rng_seed(&r, 9);
  enum { N = 1500 };
  static fc_gendata_item_t train[N], eval[N];
  for (int i = 0; i < N; i++) {
    fc_gendata_draw(NULL, FC_GENDATA_PICK, FC_GENDATA_TRAIN, &r, &train[i]);
    fc_gendata_draw(NULL, FC_GENDATA_PICK, FC_GENDATA_EVAL, &r, &eval[i]);
  }
  for (int i = 0; i < 2 * N; i++) {
    const fc_gendata_item_t *it = i < N ? &train[i] : &eval[i - N];
    char word[16];
    assert_int_equal(it->family, FC_GENDATA_PICK);
    assert_int_equal(sscanf(it->prompt, "Name a letter that occurs in '%15[a-z]'.", word), 1);
    int in[26] = {0}, k = 0;
    for (char *p = word; *p; p++) k += !in[*p - 'a'], in[*p - 'a'] = 1;
    assert_int_equal(it->nvalid, k);
    assert_true(k >= 3);
    int found = 0;
    for (int v = 0; v < it->nvalid; v++) {
      assert_int_equal(strlen(it->valid[v]), 1);
      assert_true(in[it->valid[v][0] - 'a']);
      if (v) assert_true(it->valid[v - 1][0] < it->valid[v][0]);
      found += !strcmp(it->valid[v], it->answer);
    }
    assert_int_equal(found, 1);
  }
  for (int i = 0; i < N; i++)
    for (int j = 0; j < N; j++) assert_string_not_equal(eval[i].prompt, train[j].prompt);
  /* the training answer is spread over the valid ones: the first, second and third of them
   * each come up for a good share of the words (uniform draws would give a third or less) */
  int at[FC_GENDATA_MAX_VALID] = {0};
  for (int i = 0; i < N; i++)
    for (int v = 0; v < train[i].nvalid; v++) at[v] += !strcmp(train[i].valid[v], train[i].answer);
  for (int v = 0; v < 3; v++) assert_true(at[v] > N / 8);
  /* written held-out rows list the valid answers; training rows do not */
  fc_gendata_opts_t o = {.count = 50, .split = FC_GENDATA_EVAL, .seed = 2, .world_seed = 7, .max_turns = 1};
  fc_err_t err = {0};
  assert_int_equal(fc_gendata_parse_mix("pick=1", o.mix, &err), 0);
  char *a;
  assert_int_equal(fc_gendata_write(&o, "/tmp/fc_tasks_pick.jsonl", &err), 0);
  assert_int_equal(fc_read_file("/tmp/fc_tasks_pick.jsonl", &a, NULL, &err), 0);
  assert_non_null(strstr(a, "{\"id\":\"pick-1\",\"valid\":["));
  free(a);
  o.split = FC_GENDATA_TRAIN;
  assert_int_equal(fc_gendata_write(&o, "/tmp/fc_tasks_pick.jsonl", &err), 0);
  assert_int_equal(fc_read_file("/tmp/fc_tasks_pick.jsonl", &a, NULL, &err), 0);
  assert_null(strstr(a, "\"valid\""));
  free(a);
  unlink("/tmp/fc_tasks_pick.jsonl");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_answers_and_splits),
      cmocka_unit_test(test_write_deterministic),
      cmocka_unit_test(test_pick),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
