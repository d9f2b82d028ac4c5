/* fusectl train: fine-tune (or train from scratch) a Llama-family model on JSONL data, with the
 * FuseChat fusion loss when fused top-K targets are given. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_schema.h"
#include "fc_config.h"
#include "fc_dist.h"
#include "fc_train.h"
#include "fc_train_src.h"

static void usage(FILE *fp) {
  fprintf(fp,
    "Usage: fusectl train (--model DIR | --config FILE --tokenizer FILE) --data FILE.jsonl --out DIR\n"
    "                     [options]\n"
    "\n"
    "Trains a Llama-family model (llama, mistral, qwen2) with AdamW on next-token prediction.\n"
    "With --model the weights of a Hugging Face model directory are the starting point; with\n"
    "--config a new model is initialised from config.json (normal(0, initializer_range), seeded).\n"
    "\n"
    "Data (--data): JSON Lines, one row per line (blank lines are skipped):\n"
    "  {\"input_ids\": [1, 2, ...]}                  loss on every next token\n"
    "  {\"input_ids\": [...], \"loss_mask\": [0,1,..]} loss on predicting tokens whose mask is 1\n"
    "  {\"text\": \"...\"}                             the model's tokenizer.json (bos/eos as it adds\n"
    "                                             them), loss on every next token\n"
    "  {\"conversations\": [{\"from\": \"human\", ...}]} chat template, loss on assistant tokens\n"
    "Rows are right-padded to the longest row of the batch (padding carries no loss); rows longer\n"
    "than --seq-len are truncated (a warning says how many). Optimizer step k reads rows\n"
    "k*B*G .. k*B*G + B*G - 1 of the data in order, wrapping around at the end of an epoch.\n"
    "\n"
    "Output (--out DIR):\n"
    "  DIR/config.json, DIR/model.safetensors   the trained model (plus tokenizer files)\n"
    "  DIR/checkpoint-STEP/                     model + optimizer state + data position\n"
    "  DIR/loss.csv                             step,loss,lr,grad_norm,ce,fusion,tokens per step\n"
    "\n"
    "Model and data:\n"
    "  --model DIR            start from this model (tokenizer files are copied from it)\n"
    "  --config FILE          or train from scratch with this config.json ...\n"
    "  --tokenizer FILE       ... and this tokenizer.json (copied into the outputs)\n"
    "  --data FILE            training data (JSONL, see above)\n"
    "  --out DIR              output directory (created)\n"
    "  --pack                 concatenate all lines and cut rows of exactly T tokens (a position\n"
    "                         whose next token starts another line gets no fused target)\n"
    "  --shuffle              a new row order every epoch (from --seed and the epoch)\n"
    "  --chat-template NAME   for conversations: auto (ChatML if the tokenizer has <|im_start|>,\n"
    "                         else Llama-2), chatml or llama2 (default auto)\n"
    "  --targets FILE         fused top-K targets: a top-K store whose example i holds the tokens of\n"
    "                         data line i (as the alignment stage writes it) and their targets;\n"
    "                         give it once per shard, in order, for the stores of a sharded job\n"
    "\n"
    "Stage parameters (the train table of 'fusectl schema': a job's defaults too):\n");
  fc_cli_schema_help(fp, "train", 24);
  fprintf(fp,
    "\n"
    "Optimization:\n"
    "  --grad-accum G         micro-batches per optimizer step; their gradients add up and the\n"
    "                         loss is averaged over all counted tokens of the B*G rows (default 1)\n"
    "  --schedule S           constant or cosine (default cosine; both after linear warm-up)\n"
    "  --warmup W             warm-up steps (default: --warmup-ratio of the steps, rounded up)\n"
    "  --beta1 B1 --beta2 B2  Adam moments (default 0.9, 0.95)\n"
    "  --eps E                Adam epsilon (default 1e-8)\n"
    "  --clip C               max global gradient norm, 0 to disable (default 1.0)\n"
    "\n"
    "Running:\n"
    "  --threads N            compute threads (default 1; per rank with --ranks)\n"
    "  --keep-checkpoints K   keep only the newest K checkpoints (default 2, as the daemon; 0: all)\n"
    "  --resume               continue from the newest checkpoint in DIR; the result is bitwise\n"
    "                         the same as an uninterrupted run with the same options\n"
    "  --save-dtype D         dtype of the final model: F32 (default), BF16 or F16\n"
    "  --stop-after N         checkpoint and stop after step N (exit status 1), for runs in slices\n"
    "  --quiet                no progress line\n"
    "  -h, --help             show this help\n"
    "\n"
    "--ranks R runs this command on R processes (MPI): under srun inside a Slurm allocation, else\n"
    "mpirun (FUSECHAT_LAUNCHER=srun|mpirun chooses). Each rank reads 1/R of every step's B*G rows\n"
    "in micro-batches of at most B, gradients are summed in rank order (bitwise the same run to\n"
    "run), and each rank keeps AdamW state for 1/R of the weights (ZeRO-1). Same B*G as one\n"
    "process: the same weights within float rounding. Checkpoints resume on any number of ranks.\n"
    "Started by mpirun/srun directly, fusectl train joins the launch without --ranks.\n"    "\n"
    "The learning rate at step k (0-based) is LR * k/W during warm-up, then LR (constant) or\n"
    "LR * 0.5 * (1 + cos(pi * (k - W) / (N - W))) (cosine), as transformers' schedules.\n"
    "SIGINT or SIGTERM finishes the current step, writes a checkpoint and exits with status 1;\n"
    "run again with --resume to continue. A second SIGINT stops at once (the last checkpoint\n"
    "written stays intact: checkpoints appear whole or not at all).\n"
    "\n"
    "Exit status: 0 trained, 1 failed or interrupted (message on stderr), 2 bad usage.\n");
}

enum {
  O_MODEL = 256, O_CONFIG, O_TOKENIZER, O_DATA, O_OUT, O_STEPS, O_EPOCHS, O_BATCH, O_ACCUM, O_SEQ, O_LR,
  O_SCHED, O_WARMUP, O_WD, O_B1, O_B2, O_EPS, O_CLIP, O_SEED, O_THREADS, O_RESUME, O_SHUFFLE, O_PACK,
  O_CKPT, O_TARGETS, O_LAMBDA, O_DTYPE, O_QUIET, O_STOP, O_TEMPLATE, O_KEEP,
};

/* Runs this same command on `ranks` processes (argv without --ranks) through srun or mpirun;
 * returns only on failure. */
static int relaunch(int ranks, int threads, int argc, char **argv) {
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return fc_cli_fail("train", "cannot find the fusectl executable (/proc/self/exe)");
  self[len] = 0;
  char **cmd = fc_xcalloc((size_t)argc + 2, sizeof *cmd);
  size_t n = 0;
  cmd[n++] = self;
  cmd[n++] = "train";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ranks")) i++;
    else if (strncmp(argv[i], "--ranks=", 8) != 0) cmd[n++] = argv[i];
  }
  fc_err_t err = {0};
  char **launch = fc_dist_launch_argv(ranks, threads, cmd, &err);
  free(cmd);
  if (!launch) return fc_cli_fail("train", "%s", err.msg);
  fflush(NULL);
  execvp(launch[0], launch);
  int rc = fc_cli_fail("train", "cannot run %s: %s (install it, or set FUSECHAT_LAUNCHER)", launch[0], strerror(errno));
  fc_dist_argv_free(launch);
  return rc;
}

int fc_cmd_train(int argc, char **argv) {
  static const struct option base[] = {
      {"model", required_argument, 0, O_MODEL},       {"config", required_argument, 0, O_CONFIG},
      {"tokenizer", required_argument, 0, O_TOKENIZER}, {"data", required_argument, 0, O_DATA},
      {"out", required_argument, 0, O_OUT},           
           
      {"grad-accum", required_argument, 0, O_ACCUM},  
                   {"schedule", required_argument, 0, O_SCHED},
      {"warmup", required_argument, 0, O_WARMUP},     
      {"beta1", required_argument, 0, O_B1},          {"beta2", required_argument, 0, O_B2},
      {"eps", required_argument, 0, O_EPS},           {"clip", required_argument, 0, O_CLIP},
               {"threads", required_argument, 0, O_THREADS},
      {"resume", no_argument, 0, O_RESUME},           {"shuffle", no_argument, 0, O_SHUFFLE},
      {"pack", no_argument, 0, O_PACK},               
      {"targets", required_argument, 0, O_TARGETS},   
      {"save-dtype", required_argument, 0, O_DTYPE},  {"quiet", no_argument, 0, O_QUIET},
      {"stop-after", required_argument, 0, O_STOP},
      {"chat-template", required_argument, 0, O_TEMPLATE},
      {"keep-checkpoints", required_argument, 0, O_KEEP},
      
      {"help", no_argument, 0, 'h'}};
  struct option opts[64] = {0};
  memcpy(opts, base, sizeof base);
  fc_cli_schema_longopts("train", opts + sizeof base / sizeof *base);
  fc_train_params_t tp; /* the stage parameters: the train table's defaults and ranges */
  fc_schema_defaults(fc_schema_find("train"), &tp);
  const fc_param_t *which;
  int src;
  fc_train_opts_t o;
  fc_train_opts_default(&o);
  o.keep_checkpoints = 2;
  const char *targets[256];
  size_t ntargets = 0;
  fc_chat_template_t tmpl = FC_CHAT_AUTO;
  int c, have_lambda = 0;
  long lv;
  double dv;
  optind = 1;
  opterr = 0;
#define NEED_LONG(name, lo, hi, dst)                                                           \
  do {                                                                                         \
    if (fc_cli_parse_long(optarg, &lv) != 0 || lv < (lo) || lv > (hi))                         \
      return fc_cli_usage_error("train", "--%s wants an integer in [%ld, %ld], not '%s'", name, \
                                (long)(lo), (long)(hi), optarg);                               \
    dst = lv;                                                                                  \
  } while (0)
#define NEED_DOUBLE(name, lo, hi, dst)                                                          \
  do {                                                                                          \
    if (fc_cli_parse_double(optarg, &dv) != 0 || !(dv >= (lo) && dv <= (hi)))                   \
      return fc_cli_usage_error("train", "--%s wants a number in [%g, %g], not '%s'", name,      \
                                (double)(lo), (double)(hi), optarg);                            \
    dst = dv;                                                                                   \
  } while (0)
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if ((src = fc_cli_schema_option("train", "train", c, optarg, &tp, &which)) >= 0) {
      if (src) return src;
      have_lambda |= !strcmp(which->key, "lambda");
      continue;
    }
    switch (c) {
    case O_MODEL: o.model_dir = optarg; break;
    case O_CONFIG: o.config_path = optarg; break;
    case O_TOKENIZER: o.tokenizer_path = optarg; break;
    case O_DATA: o.data_path = optarg; break;
    case O_OUT: o.out_dir = optarg; break;
    case O_ACCUM: NEED_LONG("grad-accum", 1, 65536, o.grad_accum); break;
    case O_SCHED:
      if (fc_sched_parse(optarg, &o.schedule) != 0)
        return fc_cli_usage_error("train", "--schedule is constant or cosine, not '%s'", optarg);
      break;
    case O_WARMUP: NEED_LONG("warmup", 0, 1000000000L, o.warmup); break;
    case O_B1: NEED_DOUBLE("beta1", 0, 0.999999, o.beta1); break;
    case O_B2: NEED_DOUBLE("beta2", 0, 0.999999999, o.beta2); break;
    case O_EPS: NEED_DOUBLE("eps", 0, 1, o.eps); break;
    case O_CLIP: NEED_DOUBLE("clip", 0, 1e30, o.clip); break;
    case O_THREADS: NEED_LONG("threads", 1, 256, o.threads); break;
    case O_RESUME: o.resume = 1; break;
    case O_SHUFFLE: o.shuffle = 1; break;
    case O_PACK: o.pack = 1; break;
    case O_TARGETS:
      if (ntargets == sizeof targets / sizeof *targets) return fc_cli_usage_error("train", "more than 256 --targets");
      targets[ntargets++] = optarg;
      break;
    case O_DTYPE:
      if (fc_dtype_parse(optarg, &o.save_dtype) != 0 ||
          (o.save_dtype != FC_DT_F32 && o.save_dtype != FC_DT_BF16 && o.save_dtype != FC_DT_F16))
        return fc_cli_usage_error("train", "--save-dtype is F32, BF16 or F16, not '%s'", optarg);
      break;
    case O_QUIET: o.quiet = 1; break;
    case O_TEMPLATE:
      if (fc_cli_template_option("train", "--chat-template", optarg, &tmpl)) return FC_EXIT_USAGE;
      break;
    case O_KEEP: NEED_LONG("keep-checkpoints", 0, 1000000, o.keep_checkpoints); break;
    case O_STOP: NEED_LONG("stop-after", 1, 1000000000L, o.stop_after); break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default:
      return fc_cli_usage_error("train", "unknown option or missing value: %s", argv[optind - 1]);
    }
  }
#undef NEED_LONG
#undef NEED_DOUBLE
  o.lambda = tp.lambda, o.epochs = tp.epochs, o.lr = tp.lr, o.batch_size = (int)tp.batch_size;
  o.seq_len = (int)tp.seq_len, o.warmup_ratio = tp.warmup, o.weight_decay = tp.weight_decay, o.seed = tp.seed;
  o.steps = tp.steps, o.checkpoint_every = tp.checkpoint_every;
  o.checkpoint_activations = tp.checkpoint_activations;
  o.fused_optimizer = tp.fused_optimizer;
  if (fc_dtype_parse(tp.optimizer_dtype, &o.optimizer_dtype) != 0) /* the schema's choices are dtype names */
    return fc_cli_usage_error("train", "--optimizer-dtype '%s' is not a dtype", tp.optimizer_dtype);
  if (optind != argc) return fc_cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
  if (!o.model_dir == !o.config_path) return fc_cli_usage_error("train", "give exactly one of --model DIR or --config FILE");
  if (o.config_path && !o.tokenizer_path)
    return fc_cli_usage_error("train", "--config needs --tokenizer FILE (the tokenizer.json the model is for)");
  if (o.model_dir && o.tokenizer_path)
    return fc_cli_usage_error("train", "--tokenizer goes with --config; a --model directory has its own");
  if (!o.data_path) return fc_cli_usage_error("train", "--data FILE.jsonl is required");
  if (!o.out_dir) return fc_cli_usage_error("train", "--out DIR is required");
  if (have_lambda && !ntargets) return fc_cli_usage_error("train", "--lambda only applies with --targets");
  int ranks = (int)tp.ranks;
  if (ranks > 1 && fc_dist_launched_size() > 1)
    return fc_cli_usage_error("train", "--ranks is for starting the ranks; this process already is one of %d",
                              fc_dist_launched_size());
  if (ranks > (long)o.batch_size * o.grad_accum)
    return fc_cli_usage_error("train", "--ranks %d exceeds the %ld rows of a step (--batch-size x --grad-accum)", ranks,
                              (long)o.batch_size * o.grad_accum);
  if (ranks > 1) return relaunch(ranks, o.threads, argc, argv);
  fc_err_t err = {0};
  fc_comm_t *comm = NULL;
  if (fc_dist_init(NULL, NULL, &comm, &err) != 0) return fc_cli_fail("train", "%s", err.msg);
  o.comm = comm;
  const int rank = comm->rank;
  /* the tokenizer (for text and conversation lines), when the model comes with one */
  fc_tok_t *tok = NULL;
  char *tokp = o.model_dir ? fc_path_join(o.model_dir, "tokenizer.json") : fc_xstrdup(o.tokenizer_path);
  if (fc_path_exists(tokp) && fc_tok_load(&tok, tokp, &err) != 0) {
    int r = fc_cli_fail("train", "%s", err.msg);
    free(tokp);
    fc_dist_finalize(&comm);
    return r;
  }
  free(tokp);
  fc_train_encoder_t enc;
  if (tok) {
    fc_train_encoder_init(&enc, tok, tmpl);
    o.encoder = &enc.enc;
  }
  fc_train_shards_t store;
  int have_store = 0, rc = 0;
  if (ntargets) { /* one store, or the stores of consecutive shards */
    fc_config_t cfg;
    rc = fc_config_load(&cfg, o.model_dir ? o.model_dir : o.config_path, &err);
    if (rc == 0) rc = fc_train_shards_open(&store, targets, ntargets, cfg.vocab_size, &err);
    if (rc == 0) {
      have_store = 1;
      o.targets = &store.src;
    }
  }
  fc_train_result_t res;
  if (rc == 0) rc = fc_train_run(&o, &res, &err);
  if (have_store) fc_train_shards_close(&store);
  fc_tok_destroy(&tok);
  if (rc == 0 && rank == 0 && comm->size > 1 && res.steps_done > res.start_step)
    printf("data parallel: %d ranks, rank 0 sent %.0f bytes per step (%zu parameters, %zu float bytes);"
           " communication %.1f ms/step of %.1f\n", comm->size,
           (double)fc_dist_bytes_sent(comm) / (double)(res.steps_done - res.start_step), res.params,
           res.params * sizeof(float), res.comm_ms_per_step, res.ms_per_step);
  fc_dist_finalize(&comm);
  if (rc != 0) return fc_cli_fail("train", "%s", err.msg);
  if (rank == 0)
    printf("trained %ld steps (%ld this run): final loss %.4f, %.0f tokens/s, %.1f ms/step; model in %s\n",
         res.steps_done, res.steps_done - res.start_step, res.last_loss, res.tokens_per_s, res.ms_per_step, o.out_dir);
  return FC_EXIT_OK;
}
