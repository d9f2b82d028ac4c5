/* bench/forward: tokens/s and GFLOP/s of the batched logits forward on random Llama models of
 * hidden size 256, 512 and 1024, beside two references measured in the same run: the
 * machine's cblas_sgemm rate on a large square product, and PyTorch CPU running the same
 * shapes (bench/forward_ref.py, our plain-torch reference model). --moe times a Mixtral-like
 * sparse mixture-of-experts model instead (hidden 1024, 8 experts, top-2; fc_arch.c) against
 * the plain-torch Mixtral of tests/ref/make_arch_fixtures.py. */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_generate.h"
#include "fc_model.h"

#include "bench_model.h"

static const shape_t shapes[] = {
    {256, 4, 4, 4, 688, 8192},
    {512, 6, 8, 8, 1376, 16384},
    {1024, 8, 16, 8, 2752, 32000},
};
/* Mixtral-8x7B's proportions (ffn 3.5 x hidden, 4:1 grouped-query heads, 8 experts, top-2)
 * scaled to hidden 1024 and 2 layers, so that it and PyTorch's copy fit in memory together. */
static const shape_t moe_shape = {1024, 2, 16, 4, 3584, 32000};
#define MOE_EXPERTS 8
#define MOE_TOP 2

static double sgemm_gflops(int n, int reps) {
  float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float));
  float *c = malloc((size_t)n * n * sizeof(float));
  for (size_t i = 0; i < (size_t)n * n; i++) a[i] = (float)(i % 17) * 0.01f, b[i] = (float)(i % 13) * 0.01f;
  double best = 1e30;
  for (int r = 0; r < reps + 1; r++) {
    double t0 = fc_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double dt = fc_now() - t0;
    if (r && dt < best) best = dt; /* the first run warms up the thread pool */
  }
  free(a), free(b), free(c);
  return 2.0 * n * n * n / best / 1e9;
}

/* Useful flops per forward: 2 per weight per token for every matrix product (the embedding is
 * a gather), plus causal attention (QK^T and PV over the lower triangle). */
static double forward_flops(const fc_config_t *c, int B, int T) {
  double C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size, HD = c->head_dim;
  double QD = c->num_heads * HD, KVD = c->num_kv_heads * HD;
  double mlp = c->num_experts > 0 ? c->experts_per_tok * 3 * C * F + C * c->num_experts : 3 * C * F;
  double per_tok = c->num_layers * (C * QD * 2 + C * KVD * 2 + mlp) + C * V;
  double attn = (double)c->num_layers * c->num_heads * 2.0 * HD * (double)T * (T + 1) * B;
  return 2.0 * per_tok * B * T + attn;
}

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: forward [--tokens N] [--seq T] [--reps R] [--threads N] [--sizes 256,512,1024] [--no-ref]\n"
          "               [--train] [--moe]\n"
          "Times fc_model_forward (B = tokens/seq rows of seq tokens) on random models and prints\n"
          "tokens/s, GFLOP/s, the share of the machine's sgemm rate and the speed-up over PyTorch.\n"
          "--train times a training forward plus fc_model_backward (PyTorch: autograd), counting\n"
          "3x the forward's flops. --moe: the Mixtral-like mixture-of-experts model (hidden 1024,\n"
          "8 experts, top-2) instead of the Llama sizes (GFLOP/s counts the active experts only).\n");
}

int main(int argc, char **argv) {
  int tokens = 2048, seq = 512, reps = 3, threads = 0, ref = 1, train = 0, moe = 0;
  char sizes[64] = "256,512,1024";
  static const struct option opts[] = {{"tokens", 1, 0, 'n'}, {"seq", 1, 0, 't'},  {"reps", 1, 0, 'r'},
                                       {"threads", 1, 0, 'j'}, {"sizes", 1, 0, 's'}, {"no-ref", 0, 0, 'x'}, {"train", 0, 0, 'T'}, {"moe", 0, 0, 'M'},
                                       {"help", 0, 0, 'h'},    {0}};
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (o == 'n') tokens = atoi(optarg);
    else if (o == 't') seq = atoi(optarg);
    else if (o == 'r') reps = atoi(optarg);
    else if (o == 'j') threads = atoi(optarg);
    else if (o == 's') snprintf(sizes, sizeof sizes, "%s", optarg);
    else if (o == 'x') ref = 0;
    else if (o == 'T') train = 1;
    else if (o == 'M') moe = 1, snprintf(sizes, sizeof sizes, "%d", moe_shape.C);
    else if (o == 'h') return usage(stdout), 0;
    else return usage(stderr), 2;
  }
  if (tokens <= 0 || seq <= 0 || tokens % seq || reps <= 0 || (moe && train)) return usage(stderr), 2;
  if (threads <= 0) threads = getenv("FUSECHAT_THREADS") ? atoi(getenv("FUSECHAT_THREADS")) : 2;
  if (threads <= 0) threads = 2;
  int B = tokens / seq;
  extern void openblas_set_num_threads(int);
  openblas_set_num_threads(threads);
  printf("threads %d, batch %d x %d tokens, %s\n", threads, B, seq, train ? "forward + backward" : "forward");
  printf("sgemm: OpenBLAS 2048^3, best of runs just before and after each model's timing (the\n"
         "machine is shared, so the reference is re-measured next to each row)\n");
  printf("%-6s %-7s %10s %9s %9s %8s %8s %9s %12s %8s\n", "hidden", "params", "tokens/s", "GFLOP/s", "sgemm", "%sgemm", train ? "ms/step" : "ms/fwd", "top10 t/s",
         "torch tok/s", "speedup");
  char *save = NULL;
  for (char *tok = strtok_r(sizes, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int want = atoi(tok);
    const shape_t *s = moe ? (want == moe_shape.C ? &moe_shape : NULL)
                           : bench_shape(shapes, sizeof shapes / sizeof shapes[0], want);
    if (!s) {
      fprintf(stderr, "forward: no shape for hidden %d (256, 512, 1024)\n", want);
      return 2;
    }
    fc_config_t cfg;
    fc_model_t *m;
    fc_err_t err = {0};
    int rc_new;
    if (moe) { /* the mixtral family: fc_arch.c's forward with the batched experts */
      fc_config_default(&cfg, "mixtral");
      cfg.hidden_size = s->C, cfg.num_layers = s->L, cfg.num_heads = s->NH, cfg.num_kv_heads = s->NKV;
      cfg.head_dim = s->C / s->NH, cfg.intermediate_size = s->F, cfg.vocab_size = s->V;
      cfg.num_experts = MOE_EXPERTS, cfg.experts_per_tok = MOE_TOP;
      if (!(rc_new = fc_model_init(&m, &cfg, 1, &err))) fc_model_set_threads(m, threads);
    } else {
      rc_new = bench_model_new(&m, &cfg, s, threads, &err);
    }
    if (rc_new) {
      fprintf(stderr, "forward: %s\n", err.msg);
      return 1;
    }
    int32_t *ids = malloc((size_t)tokens * sizeof(int32_t));
    fc_rng_t r;
    fc_rng_seed(&r, 3);
    for (int i = 0; i < tokens; i++) ids[i] = (int32_t)(fc_rng_u64(&r) % (uint64_t)s->V);
    float *dlogits = NULL;
    if (train) {
      dlogits = malloc((size_t)tokens * s->V * sizeof(float));
      for (size_t i = 0; i < (size_t)tokens * s->V; i++) dlogits[i] = 1e-4f * fc_rng_normal(&r);
    }
    double peak = sgemm_gflops(2048, 2), best = 1e30;
    for (int i = 0; i < reps + 1; i++) { /* the first run allocates and faults pages in */
      double t0 = fc_now();
      if (!fc_model_forward(m, ids, B, seq, train, &err) || (train && fc_model_backward(m, dlogits, &err))) {
        fprintf(stderr, "forward: %s\n", err.msg);
        return 1;
      }
      double dt = fc_now() - t0;
      if (i) best = dt < best ? dt : best;
    }
    free(dlogits);
    /* The logits stage's path: chunked head, top-10 per position, no (B,T,V) buffer. */
    double best_topk = 1e30;
    if (!train) {
      int32_t *ti = malloc((size_t)tokens * 10 * sizeof(int32_t));
      float *tl = malloc((size_t)tokens * 10 * sizeof(float));
      for (int i = 0; i < reps; i++) {
        double t0 = fc_now();
        if (fc_model_forward_topk(m, ids, B, seq, 10, ids, ti, tl, NULL, &err)) {
          fprintf(stderr, "forward: %s\n", err.msg);
          return 1;
        }
        double dt = fc_now() - t0;
        best_topk = dt < best_topk ? dt : best_topk;
      }
      free(ti), free(tl);
    }
    double peak2 = sgemm_gflops(2048, 2);
    peak = peak2 > peak ? peak2 : peak;
    double gf = (train ? 3 : 1) * forward_flops(&cfg, B, seq) / best / 1e9;
    double tps = tokens / best, torch_tps = 0;
    char extra[64];
    snprintf(extra, sizeof extra, "%s", train ? " --train" : "");
    if (moe) snprintf(extra, sizeof extra, " --experts %d --top %d", MOE_EXPERTS, MOE_TOP);
    if (ref) torch_tps = bench_torch_ref("forward_ref.py", s, B, seq, reps, threads, extra, "tokens_per_s");
    char tt[32] = "-", sp[32] = "-";
    if (torch_tps > 0) snprintf(tt, sizeof tt, "%.0f", torch_tps), snprintf(sp, sizeof sp, "%.2fx", tps / torch_tps);
    char tk[32] = "-";
    if (!train) snprintf(tk, sizeof tk, "%.0f", tokens / best_topk);
    printf("%-6d %6.1fM %10.0f %9.1f %9.1f %7.0f%% %8.1f %9s %12s %8s\n", s->C, fc_model_num_params(m) / 1e6, tps,
           gf, peak, 100.0 * gf / peak, best * 1e3, tk, tt, sp);
    fflush(stdout);
    free(ids);
    fc_model_destroy(&m);
  }
  return 0;
}
