/* fusectl inspect: what a safetensors file or model directory holds. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "fc_config.h"
#include "fc_st.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl inspect [--json] FILE.safetensors|INDEX.json|MODEL_DIR\n"
          "\n"
          "Lists the tensors of a safetensors file, a sharded model's index, or a Hugging Face\n"
          "model directory: name, dtype, shape and size, in storage order. For a directory\n"
          "with a config.json, the model's hyper-parameters come first, then a line on its\n"
          "family (experts, packed projections, norms, soft caps, windows; pivot or source).\n"
          "\n"
          "Options:\n"
          "  --json     one JSON object per tensor, one per line\n"
          "  -h, --help show this help\n"
          "\n"
          "The file is validated as it is opened: a truncated or corrupt file is reported and\n"
          "the exit status is 1.\n");
}

int fc_cmd_inspect(int argc, char **argv) {
  static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0}};
  int json = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'j') json = 1;
    else if (c == 'h') return usage(stdout), 0;
    else return fc_cli_usage_error("inspect", "unknown option");
  }
  if (optind != argc - 1) return fc_cli_usage_error("inspect", "expected one FILE or DIR");
  const char *path = argv[optind];
  fc_err_t err = {0};
  struct stat sb;
  if (!json && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    char *cfgp = fc_path_join(path, "config.json");
    if (fc_path_exists(cfgp)) {
      fc_config_t cfg;
      if (fc_config_load(&cfg, cfgp, &err) != 0) {
        free(cfgp);
        return fc_cli_fail("inspect", "%s", err.msg);
      }
      printf("model_type %s: hidden %d, layers %d, heads %d (kv %d, head_dim %d), ffn %d, vocab %d, "
             "rope_theta %g, tied %s, qkv bias %s, %.1fM parameters\n",
             cfg.model_type, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads,
             cfg.head_dim, cfg.intermediate_size, cfg.vocab_size, cfg.rope_theta,
             cfg.tie_word_embeddings ? "yes" : "no", cfg.attention_bias ? "yes" : "no",
             fc_config_num_params(&cfg) / 1e6);
      char desc[1024];
      fc_config_describe(&cfg, desc, sizeof desc);
      printf("%s\n", desc);
    }
    free(cfgp);
  }
  fc_st_t *st;
  if (fc_st_open(&st, path, &err) != 0) return fc_cli_fail("inspect", "%s", err.msg);
  size_t total = 0;
  int64_t params = 0;
  for (size_t i = 0; i < fc_st_count(st); i++) {
    const fc_st_tensor_t *t = fc_st_at(st, i);
    char shape[160];
    size_t o = 0;
    shape[0] = 0;
    for (int d = 0; d < t->ndim; d++)
      o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%lld", d ? (json ? "," : "x") : "", (long long)t->shape[d]);
    if (json)
      printf("{\"name\":\"%s\",\"dtype\":\"%s\",\"shape\":[%s],\"bytes\":%zu,\"shard\":%d}\n", t->name,
             fc_dtype_name(t->dtype), shape, t->nbytes, t->shard);
    else
      printf("%-60s %-5s %-20s %12zu\n", t->name, fc_dtype_name(t->dtype), t->ndim ? shape : "scalar", t->nbytes);
    total += t->nbytes;
    params += t->numel;
  }
  if (!json)
    printf("%zu tensors, %lld elements, %.2f MB in %zu file%s\n", fc_st_count(st), (long long)params,
           total / 1e6, fc_st_num_shards(st), fc_st_num_shards(st) == 1 ? "" : "s");
  fc_st_close(&st);
  return 0;
}
