/* bench/train: milliseconds per training step (forward + cross-entropy + backward + clipping +
 * AdamW) on random Llama models of hidden size 128, 256 and 512, beside PyTorch CPU running the
 * same model, batch and sequence in the same run (bench/train_ref.py). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_loss.h"
#include "fc_model.h"
#include "fc_optim.h"

#include "bench_model.h"

static const shape_t shapes[] = {
    {128, 4, 4, 4, 344, 4096},
    {256, 4, 4, 4, 688, 8192},
    {512, 6, 8, 8, 1376, 16384},
};

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void usage(FILE *fp) {
  fprintf(fp, "Usage: train [--batch B] [--seq T] [--reps R] [--threads N] [--sizes 128,256,512] [--no-ref]\n"
              "Times one training step of fc_model + fc_loss + fc_optim (median of R) on random models\n"
              "and the same step in PyTorch; prints ms/step, tokens/s and the speed-up.\n");
}

int main(int argc, char **argv) {
  int B = 4, T = 256, reps = 3, threads = 0, ref = 1;
  char sizes[64] = "128,256,512";
  static const struct option opts[] = {{"batch", 1, 0, 'b'},   {"seq", 1, 0, 't'},   {"reps", 1, 0, 'r'},
                                       {"threads", 1, 0, 'j'}, {"sizes", 1, 0, 's'}, {"no-ref", 0, 0, 'x'},
                                       {"help", 0, 0, 'h'},    {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'b') B = atoi(optarg);
    else if (o == 't') T = atoi(optarg);
    else if (o == 'r') reps = atoi(optarg);
    else if (o == 'j') threads = atoi(optarg);
    else if (o == 's') snprintf(sizes, sizeof sizes, "%s", optarg);
    else if (o == 'x') ref = 0;
    else if (o == 'h') return usage(stdout), 0;
    else return usage(stderr), 2;
  }
  if (B <= 0 || T <= 1 || reps <= 0 || reps > 100) return usage(stderr), 2;
  if (threads <= 0) threads = getenv("FUSECHAT_THREADS") ? atoi(getenv("FUSECHAT_THREADS")) : 2;
  if (threads <= 0) threads = 2;
  printf("threads %d, batch %d x %d tokens, median of %d steps\n", threads, B, T, reps);
  printf("%-6s %7s %9s %10s %12s %8s\n", "hidden", "params", "ms/step", "tokens/s", "torch ms", "speedup");
  char *save = NULL;
  for (char *tok = strtok_r(sizes, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int want = atoi(tok);
    const shape_t *s = bench_shape(shapes, sizeof shapes / sizeof shapes[0], want);
    if (!s) {
      fprintf(stderr, "train: no shape for hidden %d (128, 256, 512)\n", want);
      return 2;
    }
    fc_config_t cfg;
    fc_model_t *m;
    fc_err_t err = {0};
    if (bench_model_new(&m, &cfg, s, threads, &err)) {
      fprintf(stderr, "train: %s\n", err.msg);
      return 1;
    }
    fc_loss_set_threads(threads);
    size_t np = fc_model_num_params(m), nt = fc_model_num_tensors(m);
    const fc_param_info_t **tens = malloc(nt * sizeof *tens);
    for (size_t i = 0; i < nt; i++) tens[i] = fc_model_tensor(m, i);
    fc_adamw_t *opt = fc_adamw_new(np, tens, nt, 0.9f, 0.95f, 1e-8f, 0.1f);
    free(tens);
    opt->threads = threads;
    int32_t *ids = malloc((size_t)B * (T + 1) * sizeof *ids), *x = malloc((size_t)B * T * sizeof *x);
    int32_t *y = malloc((size_t)B * T * sizeof *y);
    fc_rng_t r;
    fc_rng_seed(&r, 3);
    for (int i = 0; i < B * (T + 1); i++) ids[i] = (int32_t)(fc_rng_u64(&r) % (uint64_t)s->V);
    for (int b = 0; b < B; b++)
      for (int t = 0; t < T; t++) x[b * T + t] = ids[b * (T + 1) + t], y[b * T + t] = ids[b * (T + 1) + t + 1];
    float *dlogits = malloc((size_t)B * T * s->V * sizeof *dlogits);
    double times[101], parts[101][4]; /* forward, loss, backward, clip + AdamW */
    for (int rep = 0; rep <= reps; rep++) { /* rep 0 warms up */
      double t0 = fc_now();
      fc_model_zero_grad(m);
      const float *logits = fc_model_forward(m, x, B, T, 1, &err);
      double t1 = fc_now();
      if (!logits) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
      }
      fc_loss_forward_backward(dlogits, NULL, logits, y, NULL, 1.0f, B, T, s->V, (double)B * T);
      double t2 = fc_now();
      if (fc_model_backward(m, dlogits, &err)) {
        fprintf(stderr, "train: %s\n", err.msg);
        return 1;
      }
      double t3 = fc_now();
      fc_clip_grad_norm(fc_model_grads(m), np, 1.0);
      fc_adamw_step(opt, fc_model_params(m), fc_model_grads(m), 1e-4f);
      times[rep] = fc_now() - t0;
      parts[rep][0] = t1 - t0, parts[rep][1] = t2 - t1, parts[rep][2] = t3 - t2, parts[rep][3] = t0 + times[rep] - t3;
    }
    double avg[4] = {0, 0, 0, 0};
    for (int rep = 1; rep <= reps; rep++)
      for (int k = 0; k < 4; k++) avg[k] += 1e3 * parts[rep][k] / reps;
    qsort(times + 1, (size_t)reps, sizeof *times, cmp_double);
    double ms = 1e3 * times[1 + reps / 2], torch_ms = 0;
    if (ref) torch_ms = bench_torch_ref("train_ref.py", s, B, T, reps, threads, "", "ms_per_step");
    char tm[32] = "-", sp[32] = "-";
    if (torch_ms > 0) snprintf(tm, sizeof tm, "%.1f", torch_ms), snprintf(sp, sizeof sp, "%.2fx", torch_ms / ms);
    printf("%-6d %6.1fM %9.1f %10.0f %12s %8s   (fwd %.0f, loss %.0f, bwd %.0f, adamw %.0f ms)\n", s->C, np / 1e6,
           ms, B * T / (ms / 1e3), tm, sp, avg[0], avg[1], avg[2], avg[3]);
    fflush(stdout);
    free(ids), free(x), free(y), free(dlogits);
    fc_adamw_destroy(&opt);
    fc_model_destroy(&m);
  }
  return 0;
}
