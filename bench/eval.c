/* bench/eval: evaluation throughput (generated tokens/s, prompts/s) of fc_eval_run on a random
 * Llama model of hidden size 256 with a BPE tokenizer trained on the demo tasks, at several
 * batch sizes; batch 1 (one sequence decoded at a time) is the reference beside the batched
 * figures. The lead budgets the demo's eval stage from these numbers.
 *
 * Usage: bench_eval [--rows N] [--max-new-tokens N] [--threads N] [--vocab V] [--keep DIR]
 *                   [--batch B (only this batch size)] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_bpe_train.h"
#include "fc_eval.h"
#include "fc_model.h"
#include "fc_gendata.h"

int main(int argc, char **argv) {
  int rows = 256, max_new = 16, threads = 2, vocab = 8192;
  const char *keep = NULL;
  int only = 0;
  static const struct option opts[] = {{"rows", required_argument, 0, 'r'},
                                       {"max-new-tokens", required_argument, 0, 'n'},
                                       {"threads", required_argument, 0, 'j'},
                                       {"vocab", required_argument, 0, 'v'},
                                       {"keep", required_argument, 0, 'k'},
                                       {"batch", required_argument, 0, 'b'},
                                       {"help", no_argument, 0, 'h'},
                                       {0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'r': rows = atoi(optarg); break;
    case 'n': max_new = atoi(optarg); break;
    case 'j': threads = atoi(optarg); break;
    case 'v': vocab = atoi(optarg); break;
    case 'k': keep = optarg; break;
    case 'b': only = atoi(optarg); break;
    case 'h':
      printf("Usage: bench_eval [--rows N] [--max-new-tokens N] [--threads N] [--vocab V] [--keep DIR] [--batch B]\n"
             "Evaluates a random model on generated prompts at batch 1 and 32 and prints generated\n"
             "tokens/s.\n");
      return 0;
    default: fprintf(stderr, "usage: bench_eval [--rows N] [--max-new-tokens N] [--threads N] [--vocab V] [--keep DIR] [--batch B]\n"); return 2;
    }
  }
  if (rows <= 0 || max_new <= 0 || threads <= 0 || vocab < 600) {
    fprintf(stderr, "bench_eval: bad arguments\n");
    return 2;
  }
  fc_err_t err = {0};
  char tmp[] = "/tmp/fc_bench_eval_XXXXXX";
  const char *dir = keep;
  if (!dir) {
    if (!mkdtemp(tmp)) return perror("mkdtemp"), 1;
    dir = tmp;
  } else if (fc_mkdir_p(dir, &err)) {
    fprintf(stderr, "bench_eval: %s\n", err.msg);
    return 1;
  }
  char *train = fc_path_join(dir, "train.jsonl"), *data = fc_path_join(dir, "eval.jsonl");
  char *tokp = fc_path_join(dir, "tokenizer.json");
  fc_gendata_opts_t to = {.count = 2000, .split = FC_GENDATA_TRAIN, .seed = 1, .world_seed = 7, .max_turns = 1};
  for (int f = 0; f < FC_GENDATA_NCLASSIC; f++) to.mix[f] = 1;
  fc_gendata_opts_t eo_ = to;
  eo_.count = (size_t)rows, eo_.split = FC_GENDATA_EVAL, eo_.seed = 2;
  fc_bpe_train_opts_t bo = {.kind = FC_TOK_BYTELEVEL, .vocab_size = vocab < 2048 ? vocab : 2048};
  fc_config_t cfg;
  fc_config_default(&cfg, "qwen2");
  cfg.vocab_size = vocab;
  fc_model_t *m = NULL;
  if (fc_gendata_write(&to, train, &err) || fc_gendata_write(&eo_, data, &err) ||
      fc_bpe_train_file(train, &bo, tokp, &err) || fc_model_init(&m, &cfg, 1, &err) ||
      fc_model_save(m, dir, FC_DT_F32, &err)) {
    fprintf(stderr, "bench_eval: %s\n", err.msg);
    return 1;
  }
  printf("model: qwen2 hidden %d, %d layers, %d heads, ffn %d, vocab %d (%.1fM params); %d eval prompts, "
         "max %d new tokens, %d threads\n",
         cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, cfg.vocab_size,
         fc_config_num_params(&cfg) / 1e6, rows, max_new, threads);
  fc_model_destroy(&m);
  printf("%-6s %10s %10s %10s %10s %12s %10s\n", "batch", "wall s", "gen s", "loss s", "prompts/s", "gen tok/s",
         "vs batch 1");
  static const int batches[] = {1, 8, 32, 64};
  double ref = 0;
  for (size_t b = 0; b < sizeof batches / sizeof *batches; b++) {
    if (only && batches[b] != only) continue;
    fc_eval_opts_t o;
    fc_eval_opts_default(&o);
    o.batch_size = batches[b];
    o.max_new_tokens = max_new;
    o.threads = threads;
    fc_eval_result_t r;
    const char *paths[] = {data};
    if (fc_eval_run(dir, paths, 1, &o, NULL, NULL, &r, &err)) {
      fprintf(stderr, "bench_eval: %s\n", err.msg);
      return 1;
    }
    double tps = r.overall.generated / r.gen_seconds;
    if (ref == 0) ref = tps;
    printf("%-6d %10.2f %10.2f %10.2f %10.1f %12.0f %9.2fx\n", batches[b], r.wall_seconds, r.gen_seconds,
           r.loss_seconds, r.overall.n / r.wall_seconds, tps, tps / ref);
    fflush(stdout);
    fc_eval_result_free(&r);
  }
  if (!keep) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "bench_eval: could not remove %s\n", dir);
  }
  free(train), free(data), free(tokp);
  return 0;
}
