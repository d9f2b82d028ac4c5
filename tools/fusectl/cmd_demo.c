/* fusectl demo: the built-in fusion experiment. Generates chat tasks, trains a pivot and two
 * sources of different tokenizers and architectures from scratch (cached), then runs the
 * fusion job through the daemons on this machine and prints the evaluation table. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "fc_bpe_train.h"
#include "fc_config.h"
#include "fc_gendata.h"
#include "demo.h"
#include "plot.h"

extern char **environ;

/* snprintf for paths; the work directory is checked to be short enough that none truncates. */
void demo_pathf(char *buf, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, n, fmt, ap);
  va_end(ap);
}

static const demo_model_t models[] = {
    /* The pivot: general (every family equally) but small and briefly trained. */
    {"pivot", "pivot", "llama", FC_TOK_BYTELEVEL, 512, 128, 4, 4, 2, 352, "arith=1,convert=1,strings=1,facts=1", 0.5},
    /* Source A knows the world's facts and unit conversions (qwen2: q/k/v biases, MHA). */
    {"src-facts", "source", "qwen2", FC_TOK_BYTELEVEL, 768, 160, 3, 5, 5, 448, "facts=6,convert=3,arith=1,strings=1", 1.0},
    /* Source B is good at arithmetic and strings (SentencePiece vocabulary, GQA, deeper). */
    {"src-arith", "source", "mistral", FC_TOK_SENTENCEPIECE, 640, 128, 5, 4, 2, 384, "arith=6,strings=3,facts=1,convert=1", 1.0},
};
#define NMODELS (sizeof models / sizeof models[0])

/* 200 held-out prompts per family: a 95% interval of about +-7 points on an accuracy near 50%
 * (40 gave +-15, too wide to tell the models apart). The fusion set is half the size it was:
 * fusion should matter most where the data alone does not teach a family. */
static const demo_recipe_t full = {"full", 24000, 900, 2000, 200, 3, 2e-3, 32};
static const demo_recipe_t quick = {"quick", 3000, 120, 400, 12, 1, 1e-3, 16};
/* --fusion-convs: at least two batches of the quick recipe per shard; at most what one run of
 * the full recipe trains in reasonable time here. */
#define DEMO_MIN_FUSION_CONVS 64
#define DEMO_MAX_FUSION_CONVS 100000

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl demo [--workdir DIR] [--quick] [--threads N] [--fresh] [--ablations]\n"
          "                    [--sweeps LIST] [--fusion-convs N] [--experiment multi]\n"
          "\n"
          "Runs the built-in knowledge-fusion experiment end to end on this machine:\n"
          "  1. generates chat tasks (arith, convert, strings, facts) with held-out sets;\n"
          "  2. trains three models from scratch with their own BPE tokenizers: a general but\n"
          "     weak pivot (llama, byte-level BPE), a source strong on facts and conversions\n"
          "     (qwen2, another byte-level vocabulary) and a source strong on arithmetic and\n"
          "     strings (mistral-style, SentencePiece BPE); cached in DIR/models;\n"
          "  3. runs the fusion job through the daemons (fusectl run --local): logits of every\n"
          "     model, vocabulary maps, MinED alignment, MinCE fusion, one target per source,\n"
          "     SCE merge as FuseChat's release does it, plus the baselines (plain SFT, mergekit's\n"
          "     SCE, task arithmetic, TIES, DARE);\n"
          "  4. prints the evaluation tables (200 held-out prompts per family, 95%% bootstrap\n"
          "     intervals, marks for paired differences against the pivot and plain SFT) and\n"
          "     writes DIR/results.json (with per-item results) and loss-curve PNGs.\n"
          "\n"
          "Options:\n"
          "  --workdir DIR   where everything goes (default ./fusechat-demo)\n"
          "  --quick         a small version for tests (a few minutes)\n"
          "  --threads N     compute threads per training run and per job daemon (default 2)\n"
          "  --fresh         ignore cached data and models\n"
          "  --fusion-convs N  size of the fusion set (default 2000, 400 with --quick): one point\n"
          "                  of a sweep of fusion-set size (the models stay cached; the job and\n"
          "                  DIR/results.json are replaced)\n"
          "  --ablations     instead of the demo job, the paper's ablations on the same models\n"
          "                  (lambda, K, fusion function, vocabulary map, merges including\n"
          "                  SLERP of the two targets, and one multi-teacher target fused from\n"
          "                  the pivot and both sources at once): one job per setting, one\n"
          "                  table in DIR/ablations.txt (rewritten after each job: a run\n"
          "                  stopped early keeps its rows), one PNG per sweep in\n"
          "                  DIR/plots (an hour here at full size; --quick for a small version)\n"
          "  --sweeps LIST   with --ablations, only these (comma-separated): lambda, top_k,\n"
          "                  fuse, vocab_map, multi, merges (the base job runs always)\n"
          "  --experiment multi  instead of the demo, the multi-answer experiment (its own\n"
          "                  models and data in DIR/multi): the 'pick' family (name a letter of a\n"
          "                  word), where the source's distribution spreads over every right\n"
          "                  answer and the fusion set holds one drawn at random; a sweep of\n"
          "                  fusion-set size (64, 256, 1024; --fusion-convs N: one size) at lambda\n"
          "                  0.9 and 0.5, one table per size in DIR/multi/multi.txt (about 25\n"
          "                  minutes here; --quick: a small version)\n"
          "  -h, --help      show this help\n"
          "\n"
          "Exit status: 0 when the job completed and every model was scored, 1 otherwise.\n");
}

/* Runs fusectl itself with the given arguments; returns its exit status. */
int demo_run_self(char *const argv[]) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return -1;
  exe[n] = 0;
  fprintf(stderr, "demo: fusectl");
  for (int i = 1; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
  fputc('\n', stderr);
  pid_t pid;
  if (posix_spawn(&pid, exe, NULL, NULL, argv, environ) != 0) return -1;
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int demo_run_job(const char *job, const char *run, int threads, int quiet) {
  char th[16];
  snprintf(th, sizeof th, "%d", threads);
  char *argv[] = {"fusectl", "run", (char *)job, "--local", "--run-dir", (char *)run, "--threads", th,
                  quiet ? "--quiet" : NULL, NULL};
  return demo_run_self(argv);
}

/* Appends <|im_start|> and <|im_end|> as special tokens after a SentencePiece vocabulary, as
 * chat fine-tunes of Llama-2 do, so every model of the demo shares the ChatML template. */
static int add_chatml_tokens(const char *path, int first_id, fc_err_t *err) {
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr);
  if (!root) return fc_err_set(err, FC_EFORMAT, "%s: %s", path, jerr.text);
  json_t *added = json_object_get(root, "added_tokens");
  const char *names[] = {"<|im_start|>", "<|im_end|>"};
  for (int i = 0; i < 2; i++)
    json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", first_id + i, "content",
                                           names[i], "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0,
                                           "special", 1));
  char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(root);
  int rc = fc_write_text_file(path, s, err);
  free(s);
  return rc;
}

/* Every conversation's text, for training the tokenizers. */
static int write_corpus(const char *jsonl, const char *out, fc_err_t *err) {
  FILE *in = fopen(jsonl, "r");
  if (!in) return fc_err_set(err, FC_EIO, "cannot open %s: %s", jsonl, strerror(errno));
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, out, err);
  if (rc) {
    fclose(in);
    return rc;
  }
  char *line = NULL;
  size_t cap = 0;
  while (getline(&line, &cap, in) > 0) {
    json_t *row = json_loads(line, 0, NULL);
    json_t *conv = json_object_get(row, "conversations"), *turn;
    size_t i;
    json_array_foreach(conv, i, turn) fprintf(af.fp, "%s\n", json_string_value(json_object_get(turn, "value")));
    json_decref(row);
  }
  free(line);
  fclose(in);
  return fc_atomic_commit(&af, err);
}

int demo_gen(const char *dir, const char *name, size_t count, fc_gendata_split_t split, const char *mix, uint64_t seed,
             int max_turns, fc_err_t *err) {
  fc_gendata_opts_t o = {.count = count, .split = split, .seed = seed, .world_seed = 7, .max_turns = max_turns};
  int rc = fc_gendata_parse_mix(mix, o.mix, err);
  if (rc) return rc;
  char *p = fc_path_join(dir, name);
  rc = fc_gendata_write(&o, p, err);
  free(p);
  return rc;
}

int demo_prepare_model(const char *work, const demo_model_t *dm, const demo_recipe_t *r, int threads, int fresh,
                       uint64_t seed, fc_err_t *err) {
  char dir[4096], path[4096], stamp[512];
  demo_pathf(dir, sizeof dir, "%s/models/%s", work, dm->name);
  snprintf(stamp, sizeof stamp, "%s %s %d %d %d %d %d %d %s %d %d", r->name, dm->type, dm->vocab, dm->hidden,
           dm->layers, dm->heads, dm->kv_heads, dm->ffn, dm->mix, r->pre_convs, r->pre_steps);
  demo_pathf(path, sizeof path, "%s/demo-recipe.txt", dir);
  char *old = NULL;
  if (!fresh && fc_read_file(path, &old, NULL, NULL) == 0) {
    size_t n = strlen(old);
    if (n && old[n - 1] == '\n') old[n - 1] = 0; /* fc_write_text_file ends the file with one */
    int same = !strcmp(old, stamp);
    free(old);
    demo_pathf(path, sizeof path, "%s/model.safetensors", dir);
    if (same && fc_path_exists(path)) {
      fprintf(stderr, "demo: %s: cached in %s\n", dm->name, dir);
      return 0;
    }
  }
  int rc = fc_mkdir_p(dir, err);
  if (rc) return rc;
  char data[4096], tok[4096], cfgp[4096], corpus[4096];
  demo_pathf(data, sizeof data, "%s/data/pretrain-%s.jsonl", work, dm->name);
  demo_pathf(corpus, sizeof corpus, "%s/data/corpus-%s.txt", work, dm->name);
  demo_pathf(tok, sizeof tok, "%s/tokenizer.json", dir);
  demo_pathf(cfgp, sizeof cfgp, "%s/config.json", dir);
  char fname[128];
  snprintf(fname, sizeof fname, "pretrain-%s.jsonl", dm->name);
  char ddir[4096];
  demo_pathf(ddir, sizeof ddir, "%s/data", work);
  if ((rc = demo_gen(ddir, fname, (size_t)r->pre_convs, FC_GENDATA_TRAIN, dm->mix, seed, 2, err)) ||
      (rc = write_corpus(data, corpus, err)))
    return rc;
  fc_bpe_train_opts_t bo = {.kind = dm->tok, .vocab_size = dm->vocab, .split_digits = 1};
  if ((rc = fc_bpe_train_file(corpus, &bo, tok, err))) return rc;
  int vocab = dm->vocab;
  if (dm->tok == FC_TOK_SENTENCEPIECE) {
    if ((rc = add_chatml_tokens(tok, dm->vocab, err))) return rc;
    vocab += 2;
  }
  fc_config_t c;
  fc_config_default(&c, dm->type);
  c.hidden_size = dm->hidden;
  c.num_layers = dm->layers;
  c.num_heads = dm->heads;
  c.num_kv_heads = dm->kv_heads;
  c.head_dim = dm->hidden / dm->heads;
  c.intermediate_size = dm->ffn;
  c.vocab_size = vocab;
  c.max_position_embeddings = 512;
  c.tie_word_embeddings = dm->tok == FC_TOK_BYTELEVEL;
  if ((rc = fc_config_save(&c, cfgp, err))) return rc;
  char steps[32], th[16], bs[16];
  snprintf(steps, sizeof steps, "%d", (int)(r->pre_steps * dm->steps_scale));
  snprintf(th, sizeof th, "%d", threads);
  snprintf(bs, sizeof bs, "%d", r->batch);
  /* on a terminal the run draws its progress line with an ETA; otherwise one line per run */
  char *argv[] = {"fusectl", "train", "--config", cfgp, "--tokenizer", tok, "--data", data, "--out", dir,
                  "--steps", steps, "--batch-size", bs, "--seq-len", "128", "--lr", "3e-3", "--warmup", "20",
                  "--weight-decay", "0.01", "--threads", th, "--seed", "1", isatty(2) ? NULL : "--quiet", NULL};
  int st = demo_run_self(argv);
  if (st != 0)
    return fc_err_set(err, FC_EIO, "pre-training %s failed (%s %d)", dm->name, st > 128 ? "signal" : "exit status",
                      st > 128 ? st - 128 : st);
  /* path may name model.safetensors by now (the cache check): the stamp has its own file */
  demo_pathf(path, sizeof path, "%s/demo-recipe.txt", dir);
  return fc_write_text_file(path, stamp, err);
}

/* A loss curve per training run (loss.csv: step,loss,...) as a PNG, through gnuplot when the
 * machine has it. */
static void plot_one(const char *csv, const char *png, const char *title, char *list, size_t cap) {
  if (fc_plot_loss(csv, png, title)) return;
  size_t l = strlen(list);
  demo_pathf(list + l, cap - l, " %s", png);
}

static void plot_losses(const char *work, const char *job_dir) {
  char list[8192] = "", dir[4096], csv[4096], png[4096], title[256];
  demo_pathf(dir, sizeof dir, "%s/plots", work);
  if (fc_mkdir_p(dir, NULL)) return;
  for (size_t i = 0; i < NMODELS; i++) {
    demo_pathf(csv, sizeof csv, "%s/models/%s/loss.csv", work, models[i].name);
    demo_pathf(png, sizeof png, "%s/pretrain-%s.png", dir, models[i].name);
    snprintf(title, sizeof title, "pre-training %s", models[i].name);
    plot_one(csv, png, title, list, sizeof list);
    /* the fused target trained from the pivot for this source, or the SFT baseline for the pivot */
    const char *t = i == 0 ? "sft" : models[i].name;
    demo_pathf(csv, sizeof csv, "%s/targets/%s/loss.csv", job_dir, t);
    demo_pathf(png, sizeof png, "%s/target-%s.png", dir, t);
    snprintf(title, sizeof title, i == 0 ? "plain SFT of the pivot" : "fused target for %s", t);
    plot_one(csv, png, title, list, sizeof list);
  }
  if (list[0]) fprintf(stderr, "demo: loss curves:%s\n", list);
  else fprintf(stderr, "demo: no loss curves plotted (is gnuplot installed?)\n");
}

int demo_write_job(const char *work, const demo_recipe_t *r, const demo_job_t *jo, const char *path, fc_err_t *err) {
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc) return rc;
  FILE *f = af.fp;
  fprintf(f, "# The demo's fusion job (written by fusectl demo).\nname: %s\nstore: %s/store\n", jo->name, work);
  fprintf(f, "dataset: %s/data/%s\neval: %s/data/eval.jsonl\n", work, jo->dataset ? jo->dataset : "fusion.jsonl", work);
  fprintf(f, "shards: 2\ntop_k: %d\nlambda: %g\nfuse: %s\nvocab_map: %s\nseed: 1\nmodels:\n", jo->top_k, jo->lambda,
          jo->fuse, jo->vocab_map);
  const demo_model_t *ms = jo->models ? jo->models : models;
  size_t nm = jo->models ? (size_t)jo->nmodels : NMODELS;
  for (size_t i = 0; i < nm; i++)
    fprintf(f, "  - {name: %s, path: %s/models/%s, role: %s}\n", ms[i].name, work, ms[i].name, ms[i].role);
  fprintf(f, "training: {epochs: %d, lr: %g, batch_size: %d, seq_len: 128, warmup: 0.03, weight_decay: 0.0}\n",
          jo->epochs ? jo->epochs : r->target_epochs, r->target_lr, r->batch);
  fprintf(f, "merge: {method: sce, parameters: {select_topk: 0.1}}\n");
  if (jo->baselines) fprintf(f, "baselines: {sft: true, merges: [%s]}\n", jo->baselines);
  return fc_atomic_commit(&af, err);
}

void demo_job_default(demo_job_t *jo, const char *name) {
  *jo = (demo_job_t){.name = name, .lambda = 0.9, .top_k = 10, .fuse = "mince", .vocab_map = "stats",
                     .baselines = "sce-mergekit, task_arithmetic, ties, dare_ties"};
}

/* Data and the three models, cached. */
int demo_prepare(const char *awork, const demo_recipe_t *r, int threads, int fresh, fc_err_t *err) {
  char ddir[4096];
  demo_pathf(ddir, sizeof ddir, "%s/data", awork);
  int rc = fc_mkdir_p(ddir, err);
  /* The fusion set mixes every family; the held-out set has every family. */
  if (!rc) rc = demo_gen(ddir, "fusion.jsonl", (size_t)r->fusion_convs, FC_GENDATA_TRAIN, "arith=1,convert=1,strings=1,facts=1", 11, 2, err);
  if (!rc) {
    fc_gendata_opts_t o = {.split = FC_GENDATA_EVAL, .seed = 12, .world_seed = 7, .max_turns = 1};
    char *p = fc_path_join(ddir, "eval.jsonl");
    fc_atomic_file_t af;
    rc = fc_atomic_open(&af, p, err);
    for (int fam = 0; fam < FC_GENDATA_NCLASSIC && !rc; fam++) {
      char tmp[4096];
      demo_pathf(tmp, sizeof tmp, "%s/eval-%s.jsonl", ddir, fc_gendata_family_name((fc_gendata_family_t)fam));
      for (int k = 0; k < FC_GENDATA_NFAM; k++) o.mix[k] = k == fam;
      o.count = (size_t)r->eval_per_family;
      char *text = NULL;
      rc = fc_gendata_write(&o, tmp, err);
      if (!rc) rc = fc_read_file(tmp, &text, NULL, err);
      if (!rc) fputs(text, af.fp);
      free(text);
    }
    if (!rc) rc = fc_atomic_commit(&af, err);
    else fc_atomic_abort(&af);
    free(p);
  }
  for (size_t i = 0; i < NMODELS && !rc; i++) rc = demo_prepare_model(awork, &models[i], r, threads, fresh, 100 + i, err);
  return rc;
}

int fc_cmd_demo(int argc, char **argv) {
  static const struct option opts[] = {{"workdir", required_argument, 0, 'w'}, {"quick", no_argument, 0, 'q'},
                                       {"threads", required_argument, 0, 't'}, {"fresh", no_argument, 0, 'f'},
                                       {"ablations", no_argument, 0, 'a'}, {"fusion-convs", required_argument, 0, 'n'},
                                       {"experiment", required_argument, 0, 'x'}, {"sweeps", required_argument, 0, 's'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *work = "fusechat-demo";
  const demo_recipe_t *r = &full;
  long threads = 2, fusion_convs = 0;
  int fresh = 0, ablations = 0, multi = 0, c;
  unsigned sweeps = DEMO_SWEEPS_ALL;
  const char *sweeps_arg = NULL;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'w': work = optarg; break;
    case 'q': r = &quick; break;
    case 't':
      if (fc_cli_parse_long(optarg, &threads) || threads < 1 || threads > 256)
        return fc_cli_usage_error("demo", "--threads wants a count from 1 to 256");
      break;
    case 'f': fresh = 1; break;
    case 'a': ablations = 1; break;
    case 'n':
      if (fc_cli_parse_long(optarg, &fusion_convs) || fusion_convs < DEMO_MIN_FUSION_CONVS ||
          fusion_convs > DEMO_MAX_FUSION_CONVS)
        return fc_cli_usage_error("demo", "--fusion-convs wants a count from %d to %d", DEMO_MIN_FUSION_CONVS,
                                  DEMO_MAX_FUSION_CONVS);
      break;
    case 'x':
      if (strcmp(optarg, "multi")) return fc_cli_usage_error("demo", "--experiment knows 'multi', not '%s'", optarg);
      multi = 1;
      break;
    case 's':
      if (demo_ablation_sweeps(optarg, &sweeps))
        return fc_cli_usage_error("demo", "--sweeps takes a comma-separated list of %s, not '%s'", DEMO_SWEEP_NAMES,
                                  optarg);
      sweeps_arg = optarg;
      break;
    case 'h': usage(stdout); return 0;
    default: return fc_cli_usage_error("demo", "unknown option");
    }
  }
  if (optind != argc) return fc_cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);
  if (multi && ablations) return fc_cli_usage_error("demo", "--experiment and --ablations do not go together");
  if (sweeps_arg && !ablations) return fc_cli_usage_error("demo", "--sweeps goes with --ablations");
  demo_recipe_t rs = *r; /* the recipe with the fusion-set size asked for */
  if (fusion_convs) rs.fusion_convs = (int)fusion_convs;
  r = &rs;
  fc_err_t err = {0};
  char awork[4096];
  if (fc_mkdir_p(work, &err) || !realpath(work, awork)) return fc_cli_fail("demo", "%s", err.msg[0] ? err.msg : work);
  if (strlen(awork) > 2048) return fc_cli_fail("demo", "work directory path too long: %s", awork);
  if (multi) return demo_multi(awork, !strcmp(r->name, "quick"), (int)threads, fresh, (int)fusion_convs);
  double t0 = fc_now();
  char job[4096];
  int rc = demo_prepare(awork, r, (int)threads, fresh, &err);
  if (rc) return fc_cli_fail("demo", "%s", err.msg);
  fprintf(stderr, "demo: data and models ready in %.0f s\n", fc_now() - t0);
  if (ablations) return demo_ablations(awork, r, (int)threads, sweeps);
  demo_pathf(job, sizeof job, "%s/job.yaml", awork);
  char jname[64];
  snprintf(jname, sizeof jname, "demo-%s", r->name);
  demo_job_t jo;
  demo_job_default(&jo, jname);
  if ((rc = demo_write_job(awork, r, &jo, job, &err))) return fc_cli_fail("demo", "%s", err.msg);
  char run[4096];
  demo_pathf(run, sizeof run, "%s/run", awork);
  int st = demo_run_job(job, run, (int)threads, 0);
  char job_dir[4096], res[4096], res_out[4096];
  demo_pathf(job_dir, sizeof job_dir, "%s/store/demo-%s", awork, r->name);
  demo_pathf(res, sizeof res, "%s/results.json", job_dir);
  demo_pathf(res_out, sizeof res_out, "%s/results.json", awork);
  if (st == 0 && fc_copy_file(res, res_out, &err) != 0) return fc_cli_fail("demo", "%s", err.msg);
  plot_losses(awork, job_dir);
  fprintf(stderr, "demo: finished in %.0f s; results in %s\n", fc_now() - t0, res_out);
  return st == 0 ? 0 : FC_EXIT_FAIL;
}
