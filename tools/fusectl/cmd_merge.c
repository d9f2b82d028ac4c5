/* fusectl merge: merge models of one architecture from a mergekit-style YAML config or from
 * command-line flags. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_merge.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl merge CONFIG.yaml --out DIR [--threads N] [--dtype DT]\n"
          "       fusectl merge --method METHOD --base DIR --models DIR [DIR...] --out DIR\n"
          "                     [--weights W,W,...] [--densities D,D,...] [--param KEY=VALUE]...\n"
          "                     [--dtype DT] [--threads N]\n"
          "\n"
          "Merges models of one architecture (same tensor names and shapes) tensor by tensor,\n"
          "streaming from memory-mapped safetensors, so memory stays at a few tensors. The\n"
          "output directory gets safetensors sharded like the base, and the base's config.json\n"
          "and tokenizer files. Methods follow mergekit's definitions, so a mergekit config\n"
          "gives the same weights:\n"
          "  linear           sum_i w_i M_i / sum_i w_i  (normalize: true); the base, if given,\n"
          "                   only supplies the layout, config and tokenizer\n"
          "  task_arithmetic  base + sum_i w_i d_i, d_i = M_i - base\n"
          "  ties             keep each d_i's top density by magnitude, elect the sign, mean of\n"
          "                   the agreeing entries\n"
          "  dare_ties        drop with probability 1-density (seeded), rescale, elect the sign\n"
          "  dare_linear      drop, rescale, weighted sum\n"
          "  breadcrumbs      drop each d_i's largest gamma and smallest, keep density; weighted sum\n"
          "  breadcrumbs_ties the same drop, then elect the sign\n"
          "  della            drop with probabilities ranked by magnitude in each row (density\n"
          "                   +- epsilon), rescale, elect the sign\n"
          "  della_linear     the same drop, weighted sum\n"
          "  slerp            spherical interpolation from the base to one model by t\n"
          "  nearswap         per element, the model's value where within t of the base's:\n"
          "                   w = clamp(t / |base - model|, 0, 1), w model + (1 - w) base\n"
          "  model_stock      t avg_i M_i + (1 - t) base, t = N c / (1 + (N - 1) c) from the\n"
          "                   mean cosine c between the models' deltas\n"
          "  nuslerp          spherical interpolation of two models (their deltas when a base\n"
          "                   is given), t = w_1 / (w_0 + w_1)\n"
          "  multislerp       weighted interpolation of any number of models (or deltas) on the\n"
          "                   sphere: their weighted mean direction times their weighted mean norm\n"
          "  karcher          the models' Riemannian mean direction (max_iter, tol) times their\n"
          "                   mean norm (no base)\n"
          "  arcee_fusion     the model's values where |model - base| times its row's softmax KL\n"
          "                   divergence reaches median + 1.5 IQR, else the base's (one model)\n"
          "  ram              deltas above epsilon that one model changed taken whole, those\n"
          "                   several changed averaged (RAM)\n"
          "  ramplus_tl       RAM with each model's unique deltas times 1 + r clamp(rho, 0,\n"
          "                   alpha), rho its shared / unique count in the tensor (RAM+)\n"
          "  passthrough      copy one model, or stack layer ranges of models (slices:, below)\n"
          "  sce              FuseChat: select by variance (select_topk), weights by mean(d^2),\n"
          "                   erase minority signs\n"
          "  varm             FuseChat v1: sum_i W_i M_i with W_i ~ mean(d_i^2)\n"
          "\n"
          "CONFIG.yaml (as mergekit's):\n"
          "  merge_method: sce\n"
          "  base_model: /models/pivot\n"
          "  models:\n"
          "    - model: /models/target1\n"
          "      parameters: {weight: 1.0, density: 0.5}\n"
          "  parameters: {select_topk: 0.1}\n"
          "  # any number may be a list (a gradient over the layers) or a list of\n"
          "  # {filter: NAME, value: V} (by tensor name); per-model keys given here\n"
          "  # (weight, density, gamma, epsilon) are every model's default\n"
          "  dtype: bfloat16\n"
          "  seed: 0\n"
          "  # slices instead of models: passthrough stacks them in order,\n"
          "  # one source each:\n"
          "  # slices:\n"
          "  #   - sources: [{model: /models/a, layer_range: [0, 16]}]\n"
          "  #   - sources: [{model: /models/b, layer_range: [8, 24]}]\n"
          "  # any other method merges each slice's sources layer by layer (every\n"
          "  # slice lists the same models, the base among them; gradients run over\n"
          "  # each slice):\n"
          "  #   - sources: [{model: /models/base, layer_range: [0, 32]},\n"
          "  #               {model: /models/b, layer_range: [0, 32]}]\n"
          "\n"
          "Global parameters (--param KEY=VALUE or parameters:):\n"
          "  select_topk=F     sce: fraction of non-zero-variance elements selected (default 1)\n"
          "  sce_mask_scope=S  sce: 'deltas' (mergekit: unselected deltas are zeroed, default) or\n"
          "                    'weights' (FuseChat release: selection only feeds the weights;\n"
          "                    a fusion job's 'sce' is this one, its 'sce-mergekit' the default)\n"
          "  t=F               slerp: interpolation factor, 0 = base (required)\n"
          "  normalize=B       divide by the sum of weights (default true for linear, ties, della)\n"
          "  rescale=B         dare, della: divide survivors by their keep probability (default true)\n"
          "  lambda=F          task-vector methods: scale of the merged delta (default 1)\n"
          "  gamma=F           breadcrumbs: fraction of largest deltas dropped (default 0.01)\n"
          "  epsilon=F         della: half-width of the keep probabilities (default 0.15)\n"
          "  seed=N            dare, della: seed of the drop masks (default 0)\n"
          "  nuslerp_flatten=B nuslerp: one angle per tensor (default true); false: per row\n"
          "  nuslerp_row_wise=B nuslerp without flatten: per column instead (default false)\n"
          "  filter_wise=B     model_stock: one t per row (default false)\n"
          "  r=F, alpha=F      ramplus_tl: lambda = 1 + r clamp(rho, 0, alpha) (0.1, 0.2);\n"
          "                    ram's epsilon (default 1e-5): deltas above it count as changed\n"
          "\n"
          "Options:\n"
          "  -o, --out DIR       output model directory (required)\n"
          "  -m, --method M      merge method (short form)\n"
          "  -b, --base DIR      base model (short form)\n"
          "      --models DIR... models to merge (short form)\n"
          "      --weights LIST  comma-separated per-model weights (default 1)\n"
          "      --densities LIST comma-separated per-model densities (default 1)\n"
          "  -p, --param K=V     a global parameter, may be repeated\n"
          "      --dtype DT      output dtype: float32, float16 or bfloat16 (default: the base's)\n"
          "  -j, --threads N     worker threads (default: all cores); results do not depend on it\n"
          "  -q, --quiet         no progress line\n"
          "  -h, --help          show this help\n"
          "\n"
          "For task-vector methods a model listed with the base's path is skipped (as mergekit).\n"
          "DARE masks are counter-based (seed, tensor name, model, element): the same output for\n"
          "any thread count. Models whose tensors differ in name or shape (e.g. vocabulary\n"
          "sizes) are refused with the tensor named.\n"
          "\n"
          "Exit status: 0 merged, 1 the merge failed (bad model, mismatch, I/O), 2 usage error.\n");
}

static int on_progress(void *ctx, double fraction, const char *tensor) {
  fc_progress_update(ctx, fraction, tensor);
  return 0;
}

static int parse_list(const char *s, double *out, int max) {
  int n = 0;
  char *dup = fc_xstrdup(s), *save = NULL;
  for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (n == max || fc_cli_parse_double(tok, &out[n])) {
      free(dup);
      return -1;
    }
    n++;
  }
  free(dup);
  return n;
}

int fc_cmd_merge(int argc, char **argv) {
  enum { O_MODELS = 1000, O_WEIGHTS, O_DENS, O_DTYPE };
  static const struct option opts[] = {
      {"out", required_argument, 0, 'o'},      {"method", required_argument, 0, 'm'},
      {"base", required_argument, 0, 'b'},     {"models", required_argument, 0, O_MODELS},
      {"weights", required_argument, 0, O_WEIGHTS}, {"densities", required_argument, 0, O_DENS},
      {"param", required_argument, 0, 'p'},    {"dtype", required_argument, 0, O_DTYPE},
      {"threads", required_argument, 0, 'j'},  {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},           {0}};
  const char *out = NULL, *method = NULL, *base = NULL, *dtype = NULL;
  const char *wlist = NULL, *dlist = NULL;
  char **params = fc_xcalloc((size_t)argc + 1, sizeof *params);
  char **models = fc_xcalloc((size_t)argc + 1, sizeof *models);
  int nparams = 0, nmodels = 0, quiet = 0, c, rc = FC_EXIT_OK;
  long threads = 0;
  fc_merge_yaml_t arena = {0};
  fc_merge_model_t *list = NULL;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:m:b:p:j:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out = optarg; break;
    case 'm': method = optarg; break;
    case 'b': base = optarg; break;
    case O_MODELS: models[nmodels++] = optarg; break;
    case O_WEIGHTS: wlist = optarg; break;
    case O_DENS: dlist = optarg; break;
    case 'p': params[nparams++] = optarg; break;
    case O_DTYPE: dtype = optarg; break;
    case 'j':
      if (fc_cli_parse_long(optarg, &threads) || threads < 1 || threads > 64) {
        rc = fc_cli_usage_error("merge", "--threads takes a number from 1 to 64");
        goto done;
      }
      break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); goto done;
    default: rc = fc_cli_usage_error("merge", "unknown option"); goto done;
    }
  }
  if (!out) {
    rc = fc_cli_usage_error("merge", "--out DIR is required");
    goto done;
  }
  fc_merge_cfg_t cfg;
  fc_merge_cfg_init(&cfg);
  fc_err_t err = {0};
  if (method || nmodels) {
    /* Short form: extra positional arguments are more models (--models A B C). */
    for (int i = optind; i < argc; i++) models[nmodels++] = argv[i];
    if (!method || !nmodels) {
      rc = fc_cli_usage_error("merge", "the short form needs --method and --models");
      goto done;
    }
    fc_merge_method_t m;
    if (fc_merge_method_parse(method, &m)) {
      rc = fc_cli_usage_error("merge", "unknown method '%s'", method);
      goto done;
    }
    if (nmodels > FC_MERGE_MAX_MODELS) {
      rc = fc_cli_usage_error("merge", "at most %d models", FC_MERGE_MAX_MODELS);
      goto done;
    }
    cfg.method = m;
    cfg.base = base;
    list = fc_xcalloc((size_t)nmodels, sizeof *list);
    double v[FC_MERGE_MAX_MODELS];
    for (int i = 0; i < nmodels; i++) list[i] = (fc_merge_model_t){.path = models[i], .weight = 1.0, .density = 1.0};
    if (wlist) {
      if (parse_list(wlist, v, FC_MERGE_MAX_MODELS) != nmodels) {
        rc = fc_cli_usage_error("merge", "--weights needs one number per model (%d)", nmodels);
        goto done;
      }
      for (int i = 0; i < nmodels; i++) list[i].weight = v[i];
    }
    if (dlist) {
      int n = parse_list(dlist, v, FC_MERGE_MAX_MODELS);
      int ok = n == nmodels;
      for (int i = 0; ok && i < n; i++) ok = v[i] >= 0 && v[i] <= 1;
      if (!ok) {
        rc = fc_cli_usage_error("merge", "--densities needs one number in [0, 1] per model (%d)", nmodels);
        goto done;
      }
      for (int i = 0; i < nmodels; i++) list[i].density = v[i];
    }
    cfg.models = list;
    cfg.nmodels = nmodels;
  } else {
    if (optind != argc - 1) {
      rc = fc_cli_usage_error("merge", "expected one CONFIG.yaml (or the --method/--models form)");
      goto done;
    }
    if (base || wlist || dlist) {
      rc = fc_cli_usage_error("merge", "--base/--weights/--densities belong to the short form");
      goto done;
    }
    if (fc_merge_yaml_load(argv[optind], &cfg, &arena, &err)) {
      rc = fc_cli_fail("merge", "%s", err.msg);
      goto done;
    }
  }
  for (int i = 0; i < nparams; i++) {
    char *eq = strchr(params[i], '=');
    if (!eq) {
      rc = fc_cli_usage_error("merge", "--param takes KEY=VALUE, not '%s'", params[i]);
      goto done;
    }
    *eq = 0;
    if (fc_merge_set_param(&cfg, params[i], eq + 1, &err)) {
      rc = fc_cli_usage_error("merge", "%s", err.msg);
      goto done;
    }
  }
  if (dtype) {
    fc_dtype_t dt;
    if (fc_dtype_parse(dtype, &dt) || (dt != FC_DT_F32 && dt != FC_DT_F16 && dt != FC_DT_BF16)) {
      rc = fc_cli_usage_error("merge", "--dtype must be float32, float16 or bfloat16");
      goto done;
    }
    cfg.dtype = (int)dt;
  }
  if (fc_merge_method_needs_base(cfg.method) && !cfg.base) {
    rc = fc_cli_usage_error("merge", "%s needs a base model", fc_merge_method_name(cfg.method));
    goto done;
  }
  cfg.threads = (int)threads;
  fc_merge_stats_t stats;
  cfg.stats = &stats;
  fc_progress_t prog;
  if (!quiet) {
    fc_progress_start(&prog, "merge", 1);
    cfg.progress = on_progress;
    cfg.progress_ctx = &prog;
  }
  int mrc = fc_merge_run(&cfg, out, &err);
  if (!quiet) fc_progress_end(&prog, mrc ? "(failed)" : NULL);
  if (mrc) {
    rc = fc_cli_fail("merge", "%s", err.msg);
    goto done;
  }
  printf("merged %zu tensors with %s into %s: %.2f GB in %.2f s (%.2f GB/s)\n", stats.ntensors,
         fc_merge_method_name(cfg.method), out, stats.bytes_in / 1e9, stats.seconds,
         stats.seconds > 0 ? stats.bytes_in / 1e9 / stats.seconds : 0);
  if (cfg.method == FC_MERGE_SCE || cfg.method == FC_MERGE_VARM) {
    printf("per-model weights (mean over tensors):\n");
    for (int i = 0; i < stats.nmodels; i++)
      printf("  %-50s %.4f\n", stats.model_path[i], stats.mean_weight[i]);
  }
done:
  fc_merge_yaml_free(&arena);
  free(list);
  free(params);
  free(models);
  return rc;
}
