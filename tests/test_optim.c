/* AdamW trajectories (decay on 2-D tensors only), global-norm clipping and the warm-up +
 * cosine/constant schedules against torch.optim.AdamW, clip_grad_norm_ and LambdaLR
 * (tests/ref/make_train_fixtures.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_optim.h"
#include "fixture_json.h"

/* float32 arithmetic in torch's order; the clip norm is summed in double here */
#define PARAM_ATOL 2e-6
#define PARAM_RTOL 1e-5

static void close_arrays(const float *got, const json_t *want, size_t n, const char *what, int step) {
  assert_int_equal(json_array_size(want), n);
  for (size_t i = 0; i < n; i++) {
    double w = json_number_value(json_array_get(want, i));
    if (!(fabs(got[i] - w) <= PARAM_ATOL + PARAM_RTOL * fabs(w)))
      fail_msg("%s after step %d, element %zu: %.9g, torch %.9g", what, step, i, got[i], w);
  }
}

static void test_adamw_trajectory(void **state) {
  (void)state;
  json_t *j = fixture_json("train/optim.json");
  assert_non_null(j);
  json_t *tens = json_object_get(j, "tensors");
  size_t nt = json_array_size(tens);
  fc_param_info_t info[8];
  const fc_param_info_t *ptrs[8];
  size_t off = 0;
  for (size_t i = 0; i < nt; i++) {
    json_t *shape = json_object_get(json_array_get(tens, i), "shape");
    info[i].name = json_string_value(json_object_get(json_array_get(tens, i), "name"));
    info[i].ndim = (int)json_array_size(shape);
    info[i].numel = 1;
    for (int d = 0; d < info[i].ndim; d++) {
      info[i].shape[d] = json_integer_value(json_array_get(shape, d));
      info[i].numel *= (size_t)info[i].shape[d];
    }
    info[i].offset = off;
    off += info[i].numel;
    ptrs[i] = &info[i];
  }
  size_t n;
  float *p = json_floats(json_object_get(j, "init"), &n);
  assert_int_equal(n, off);
  fc_adamw_t *o = fc_adamw_new(n, ptrs, nt, (float)json_num(j, "beta1"), (float)json_num(j, "beta2"),
                               (float)json_num(j, "eps"), (float)json_num(j, "weight_decay"));
  int steps = (int)json_num(j, "steps"), warmup = (int)json_num(j, "warmup");
  double lr = json_num(j, "lr"), clip = json_num(j, "clip");
  int clipped = 0;
  for (int s = 0; s < steps; s++) {
    float *g = json_floats(json_array_get(json_object_get(j, "grads"), s), NULL);
    double norm = fc_clip_grad_norm(g, n, clip);
    double wn = json_number_value(json_array_get(json_object_get(j, "norms"), s));
    assert_true(fabs(norm - wn) <= 1e-5 * wn);
    clipped += norm > clip;
    double f = fc_sched_factor(FC_SCHED_COSINE, s, warmup, steps);
    double wlr = json_number_value(json_array_get(json_object_get(j, "lrs"), s));
    assert_true(fabs(lr * f - wlr) <= 1e-12);
    fc_adamw_step(o, p, g, (float)(lr * f));
    close_arrays(p, json_array_get(json_object_get(j, "params"), s), n, "params", s + 1);
    free(g);
  }
  assert_true(clipped >= 2 && clipped < steps); /* the fixture exercises both branches */
  assert_int_equal(o->step, steps);
  close_arrays(o->m, json_object_get(j, "m"), n, "exp_avg", steps);
  close_arrays(o->v, json_object_get(j, "v"), n, "exp_avg_sq", steps);

  /* state round trip through a file */
  FILE *fp = tmpfile();
  fc_err_t err = {0};
  assert_int_equal(fc_adamw_write(o, fp, &err), 0);
  rewind(fp);
  fc_adamw_t *o2 = fc_adamw_new(n, ptrs, nt, 0.9f, 0.95f, 1e-8f, 0.1f);
  assert_int_equal(fc_adamw_read(o2, fp, &err), 0);
  assert_int_equal(o2->step, o->step);
  assert_memory_equal(o2->m, o->m, n * sizeof(float));
  assert_memory_equal(o2->v, o->v, n * sizeof(float));
  fclose(fp);
  fc_adamw_t *o3 = fc_adamw_new(n + 1, NULL, 0, 0.9f, 0.95f, 1e-8f, 0.1f);
  fp = tmpfile();
  assert_int_equal(fc_adamw_write(o, fp, &err), 0);
  rewind(fp);
  assert_int_equal(fc_adamw_read(o3, fp, &err), FC_EMISMATCH);
  fclose(fp);
  fp = tmpfile();
  fputs("garbage", fp);
  rewind(fp);
  assert_int_equal(fc_adamw_read(o3, fp, &err), FC_EFORMAT);
  fclose(fp);
  fc_adamw_destroy(&o3);
  fc_adamw_destroy(&o2);
  fc_adamw_destroy(&o);
  assert_null(o);
  free(p);
  json_decref(j);
}

static void test_schedules(void **state) {
  (void)state;
  json_t *j = fixture_json("train/optim.json");
  json_t *sch = json_object_get(j, "schedules");
  assert_true(json_array_size(sch) >= 5);
  for (size_t i = 0; i < json_array_size(sch); i++) {
    json_t *s = json_array_get(sch, i);
    fc_sched_kind_t kind;
    assert_int_equal(fc_sched_parse(json_string_value(json_object_get(s, "kind")), &kind), 0);
    long warmup = (long)json_num(s, "warmup"), total = (long)json_num(s, "total");
    json_t *f = json_object_get(s, "factors");
    for (size_t k = 0; k < json_array_size(f); k++) {
      double want = json_number_value(json_array_get(f, k));
      double got = fc_sched_factor(kind, (long)k, warmup, total);
      if (fabs(got - want) > 1e-12) fail_msg("schedule %zu step %zu: %.15g vs %.15g", i, k, got, want);
    }
  }
  fc_sched_kind_t k;
  assert_int_equal(fc_sched_parse("linear", &k), -1);
  json_decref(j);
}

/* Splitting the update over threads changes nothing. */
static void test_adamw_threads_same(void **state) {
  (void)state;
  size_t n = 200003;
  float *p1 = malloc(n * sizeof *p1), *p2 = malloc(n * sizeof *p2), *g = malloc(n * sizeof *g);
  fc_rng_t r;
  fc_rng_seed(&r, 5);
  for (size_t i = 0; i < n; i++) p1[i] = p2[i] = fc_rng_normal(&r), g[i] = fc_rng_normal(&r) * 0.01f;
  fc_param_info_t a = {"a", 2, {1000, 100}, 0, 100000}, b = {"b", 1, {100003, 0}, 100000, 100003};
  const fc_param_info_t *ts[2] = {&a, &b};
  fc_adamw_t *o1 = fc_adamw_new(n, ts, 2, 0.9f, 0.95f, 1e-8f, 0.1f), *o2 = fc_adamw_new(n, ts, 2, 0.9f, 0.95f, 1e-8f, 0.1f);
  o2->threads = 3;
  for (int s = 0; s < 3; s++) {
    fc_adamw_step(o1, p1, g, 1e-3f);
    fc_adamw_step(o2, p2, g, 1e-3f);
  }
  assert_memory_equal(p1, p2, n * sizeof *p1);
  assert_memory_equal(o1->v, o2->v, n * sizeof *p1);
  fc_adamw_destroy(&o1);
  fc_adamw_destroy(&o2);
  free(p1), free(p2), free(g);
}

/* The step taken in pieces (as the backward pass fuses it: last layers first, ranges cutting
 * through tensors and decay segments) is the whole step, bit for bit, in both moment dtypes. */
static void test_adamw_ranges_same(void **state) {
  (void)state;
  size_t n = 300007;
  for (int bf = 0; bf < 2; bf++) {
    float *p1 = malloc(n * sizeof *p1), *p2 = malloc(n * sizeof *p2), *g = malloc(n * sizeof *g);
    fc_rng_t r;
    fc_rng_seed(&r, 9);
    for (size_t i = 0; i < n; i++) p1[i] = p2[i] = fc_rng_normal(&r), g[i] = fc_rng_normal(&r) * 0.01f;
    /* a 1-D tensor between two 2-D ones, and an undeclared tail */
    fc_param_info_t a = {"a", 2, {1000, 100}, 0, 100000}, b = {"b", 1, {7, 0}, 100000, 7},
                    c = {"c", 2, {1000, 150}, 100007, 150000};
    const fc_param_info_t *ts[3] = {&c, &a, &b};
    fc_dtype_t dt = bf ? FC_DT_BF16 : FC_DT_F32;
    fc_adamw_t *o1 = fc_adamw_new_dtype(n, ts, 3, 0.9f, 0.95f, 1e-8f, 0.1f, dt),
               *o2 = fc_adamw_new_dtype(n, ts, 3, 0.9f, 0.95f, 1e-8f, 0.1f, dt);
    o1->threads = 2, o2->threads = 2;
    size_t cuts[] = {0, 3, 99999, 100003, 180000, 250007, 260000, n};
    for (int s = 0; s < 3; s++) {
      fc_adamw_step(o1, p1, g, 1e-3f);
      fc_adamw_begin(o2, 1e-3f);
      for (int k = 6; k >= 0; k--) fc_adamw_step_range(o2, p2, g, cuts[k], cuts[k + 1]);
    }
    assert_memory_equal(p1, p2, n * sizeof *p1);
    if (bf) assert_memory_equal(o1->v16, o2->v16, n * sizeof *o1->v16);
    else assert_memory_equal(o1->v, o2->v, n * sizeof *o1->v);
    /* weight decay only on the 2-D tensors: with zero gradient and moments, b and the tail stay */
    fc_adamw_t *o3 = fc_adamw_new_dtype(n, ts, 3, 0.9f, 0.95f, 1e-8f, 0.5f, dt);
    memset(g, 0, n * sizeof *g);
    memcpy(p2, p1, n * sizeof *p1);
    fc_adamw_step(o3, p2, g, 0.1f);
    assert_memory_equal(p2 + 100000, p1 + 100000, 7 * sizeof *p1);
    assert_memory_equal(p2 + 250007, p1 + 250007, (n - 250007) * sizeof *p1);
    assert_true(p2[5] == p1[5] * 0.95f && p2[100007] == p1[100007] * 0.95f);
    fc_adamw_destroy(&o1), fc_adamw_destroy(&o2), fc_adamw_destroy(&o3);
    free(p1), free(p2), free(g);
  }
}

static void test_clip_below_threshold_untouched(void **state) {
  (void)state;
  float g[4] = {0.1f, -0.2f, 0.3f, 0.0f};
  float c[4];
  memcpy(c, g, sizeof g);
  double nrm = fc_clip_grad_norm(g, 4, 1.0);
  assert_true(fabs(nrm - sqrt(0.01 + 0.04 + 0.09)) < 1e-7);
  assert_memory_equal(g, c, sizeof g);
  fc_clip_grad_norm(g, 4, 0.1); /* now clipped to norm ~0.1 */
  assert_true(fabs(sqrt((double)g[0] * g[0] + g[1] * g[1] + g[2] * g[2]) - 0.1) < 1e-6);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_adamw_trajectory),
      cmocka_unit_test(test_schedules),
      cmocka_unit_test(test_clip_below_threshold_untouched),
      cmocka_unit_test(test_adamw_threads_same),
      cmocka_unit_test(test_adamw_ranges_same),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
