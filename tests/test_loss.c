/* Gold cross-entropy and sparse fusion loss (values and logit gradients) against PyTorch
 * autograd on dense float64 targets (tests/ref/make_train_fixtures.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_loss.h"
#include "fixture_json.h"

/* float32 logits, sums in double: the loss agrees to ~1e-6 relative, gradients to 1e-6 abs */
#define LOSS_RTOL 1e-5
#define GRAD_ATOL 1e-6

static void check_case(const json_t *c, int threads) {
  int B = (int)json_num(c, "B"), T = (int)json_num(c, "T"), V = (int)json_num(c, "V");
  int K = (int)json_num(c, "K");
  float lam = (float)json_num(c, "lambda");
  double norm = json_num(c, "norm");
  float *logits = json_floats(json_object_get(c, "logits"), NULL);
  int32_t *targets = json_ints(json_object_get(c, "targets"), NULL);
  int32_t *ids = json_ints(json_object_get(c, "ids"), NULL);
  float *lps = json_floats(json_object_get(c, "logprobs"), NULL);
  size_t nd;
  float *want = json_floats(json_object_get(c, "dlogits"), &nd);
  assert_int_equal(nd, (size_t)B * T * V);
  float *dl = malloc(nd * sizeof *dl);
  memset(dl, 0x7f, nd * sizeof *dl); /* garbage: every element must be written */
  fc_fused_targets_t fused = {K, ids, lps};
  fc_loss_stats_t st;
  fc_loss_set_threads(threads);
  double loss = fc_loss_forward_backward(dl, &st, logits, targets, K ? &fused : NULL, lam, B, T, V, norm);
  double wl = json_num(c, "loss");
  if (fabs(loss - wl) > LOSS_RTOL * fabs(wl))
    fail_msg("%s: loss %.9g, torch %.9g", json_string_value(json_object_get(c, "name")), loss, wl);
  assert_true(fabs(st.ce - json_num(c, "ce")) <= LOSS_RTOL * fabs(json_num(c, "ce")));
  assert_true(fabs(st.fusion - json_num(c, "fusion")) <= LOSS_RTOL * fabs(json_num(c, "fusion")) + 1e-12);
  assert_int_equal(st.counted, (long)json_num(c, "counted"));
  assert_int_equal(fc_loss_count(targets, (size_t)B * T), (long)json_num(c, "counted"));
  double maxd = 0;
  for (size_t i = 0; i < nd; i++) {
    double d = fabs((double)dl[i] - want[i]);
    if (!(d <= maxd)) maxd = d; /* NaN propagates */
  }
  if (!(maxd <= GRAD_ATOL))
    fail_msg("%s: max |dlogits - torch| = %g", json_string_value(json_object_get(c, "name")), maxd);
  /* evaluation without gradients gives the same loss */
  double l2 = fc_loss_forward_backward(NULL, NULL, logits, targets, K ? &fused : NULL, lam, B, T, V, norm);
  assert_true(l2 == loss);
  free(logits), free(targets), free(ids), free(lps), free(want), free(dl);
  fc_loss_set_threads(1);
}

static void test_cases(void **state) {
  (void)state;
  json_t *j = fixture_json("train/loss.json");
  assert_non_null(j);
  json_t *cases = json_object_get(j, "cases");
  assert_true(json_array_size(cases) >= 4);
  for (size_t i = 0; i < json_array_size(cases); i++) {
    check_case(json_array_get(cases, i), 1);
    check_case(json_array_get(cases, i), 3);
  }
  json_decref(j);
}

/* With gradient accumulation, two halves normalised by the whole batch's count add up to the
 * whole batch, loss and gradients. */
static void test_accumulation_split(void **state) {
  (void)state;
  json_t *j = fixture_json("train/loss.json");
  json_t *c = json_array_get(json_object_get(j, "cases"), 1);
  int B = (int)json_num(c, "B"), T = (int)json_num(c, "T"), V = (int)json_num(c, "V");
  int K = (int)json_num(c, "K");
  float *logits = json_floats(json_object_get(c, "logits"), NULL);
  int32_t *targets = json_ints(json_object_get(c, "targets"), NULL);
  int32_t *ids = json_ints(json_object_get(c, "ids"), NULL);
  float *lps = json_floats(json_object_get(c, "logprobs"), NULL);
  double norm = (double)fc_loss_count(targets, (size_t)B * T);
  size_t row = (size_t)T * V;
  float *d = malloc(B * row * sizeof *d);
  fc_fused_targets_t all = {K, ids, lps};
  double whole = fc_loss_forward_backward(d, NULL, logits, targets, &all, 0.9f, B, T, V, norm);
  double parts = 0;
  float *dp = malloc(row * sizeof *dp);
  for (int b = 0; b < B; b++) {
    fc_fused_targets_t one = {K, ids + (size_t)b * T * K, lps + (size_t)b * T * K};
    parts += fc_loss_forward_backward(dp, NULL, logits + b * row, targets + b * T, &one, 0.9f, 1, T, V, norm);
    for (size_t i = 0; i < row; i++) assert_true(dp[i] == d[b * row + i]);
  }
  assert_true(fabs(parts - whole) < 1e-9);
  assert_true(fabs(whole - json_num(c, "loss")) < 1e-5 * whole);
  free(d), free(dp), free(logits), free(targets), free(ids), free(lps);
  json_decref(j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cases),
      cmocka_unit_test(test_accumulation_split),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
