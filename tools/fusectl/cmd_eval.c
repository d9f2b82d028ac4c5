/* fusectl eval: score models on held-out chat prompts (exact match and gold-answer loss per
 * task family) and print one comparison table. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_schema.h"
#include "fc_eval.h"

#define MAX_MODELS 64
#define MAX_DATA 64

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl eval --model DIR [--model DIR ...] --data FILE.jsonl [OPTIONS]\n"
          "\n"
          "Scores each model on held-out prompts and prints one table, a line per model.\n"
          "Every data row is a ShareGPT record (as 'fusectl gen-data --split eval' writes):\n"
          "  {\"family\":F,\"conversations\":[{\"from\":\"human\",\"value\":Q},{\"from\":\"gpt\",\"value\":A}]}\n"
          "The human turn is rendered with the model's chat template as a generation prompt\n"
          "and answered greedily until the end-of-turn token (<|im_end|> for ChatML, </s> for\n"
          "Llama-2) or --max-new-tokens; the answer is correct if it equals A after trimming\n"
          "white space. The loss is the mean cross-entropy (nats per token) of A and its\n"
          "end-of-turn token under the model, teacher-forced. Families are what the rows name\n"
          "(up to 7); rows without \"family\" count as family \"all\". A row's \"id\" (else its\n"
          "line) names it in the per-item results. A row with several right answers lists\n"
          "them as \"valid\":[A1,A2,...] (A among them): any of them is correct, and its loss\n"
          "is -log of the probability of the whole set (the answers' sequence probabilities\n"
          "summed) per token of A.\n"
          "\n"
          "Two tables, accuracy then loss: per family and for the macro average (the mean over\n"
          "families) the figure and its 95%% bootstrap interval over the rows; with several\n"
          "models, +/- marks a difference from the first model that a paired bootstrap over the\n"
          "same rows finds significant (fixed seed: the same input prints the same tables).\n"
          "\n"
          "Options:\n"
          "  -m, --model DIR          Hugging Face model directory (config.json, safetensors,\n"
          "                           tokenizer.json); repeat for more models\n"
          "  -d, --data FILE          evaluation rows (JSONL); repeat to concatenate files\n"

          "  -j, --threads N          compute threads (default: FUSECHAT_THREADS or all cores)\n"

          "      --template NAME      chatml or llama2 instead of the tokenizer's own (auto)\n"
          "      --json FILE          also write the results as JSON ({\"models\":[...]})\n"
          "      --show N             print the first N rows of each model: prompt, expected\n"
          "                           and generated answer\n"
          "  -q, --quiet              no progress line on stderr\n"
          "  -h, --help               show this help\n");
  fc_cli_schema_help(fp, "eval", 26);
  fprintf(fp, "%s",

          "\n"
          "Exit status: 0 success, 1 a model or data file could not be loaded or is\n"
          "malformed (a row without a gpt answer, more than 7 families), 2 bad usage.\n");
}

typedef struct {
  fc_progress_t p;
  int quiet;
} prog_ctx_t;

static int on_progress(void *ctx, double fraction, const char *msg) {
  prog_ctx_t *c = ctx;
  if (!c->quiet) fc_progress_update(&c->p, fraction, msg);
  return 0;
}

static const char *base_name(const char *path, char *buf, size_t cap) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  size_t s = n;
  while (s > 0 && path[s - 1] != '/') s--;
  snprintf(buf, cap, "%.*s", (int)(n - s), path + s);
  return buf;
}

/* A model's answer on one line: control characters escaped, the rest as it is. */
static void put_escaped(const char *s) {
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '\n') fputs("\\n", stdout);
    else if (ch == '\t') fputs("\\t", stdout);
    else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
    else putchar(ch);
  }
}

static int positive(const char *s, long max, long *out) {
  return !fc_cli_parse_long(s, out) && *out > 0 && *out <= max;
}

int fc_cmd_eval(int argc, char **argv) {
  static const struct option base[] = {
      {"model", required_argument, 0, 'm'},       {"data", required_argument, 0, 'd'},
      {"threads", required_argument, 0, 'j'},     {"template", required_argument, 0, 'T'},
      {"json", required_argument, 0, 'J'},        {"show", required_argument, 0, 'S'},
      {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'}};
  struct option opts[32] = {0};
  memcpy(opts, base, sizeof base);
  fc_cli_schema_longopts("eval", opts + sizeof base / sizeof *base);
  fc_eval_params_t ep; /* max_new_tokens, batch_size, limit: the eval stage's table */
  fc_schema_defaults(fc_schema_find("eval"), &ep);
  const char *models[MAX_MODELS], *data[MAX_DATA], *json = NULL;
  int nm = 0, nd = 0, quiet = 0;
  long l, show = 0;
  fc_eval_opts_t eo;
  fc_eval_opts_default(&eo);
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "m:d:n:b:j:qh", opts, NULL)) != -1) {
    int src = fc_cli_schema_option("eval", "eval", c, optarg, &ep, NULL);
    if (src > 0) return src;
    if (src == 0) continue;
    switch (c) {
    case 'm':
      if (nm == MAX_MODELS) return fc_cli_usage_error("eval", "at most %d models", MAX_MODELS);
      models[nm++] = optarg;
      break;
    case 'd':
      if (nd == MAX_DATA) return fc_cli_usage_error("eval", "at most %d data files", MAX_DATA);
      data[nd++] = optarg;
      break;
    case 'j':
      if (!positive(optarg, 1024, &l))
        return fc_cli_usage_error("eval", "--threads needs a positive integer, not '%s'", optarg);
      eo.threads = (int)l;
      break;
    case 'T':
      if (fc_cli_template_option("eval", "--template", optarg, &eo.tmpl)) return FC_EXIT_USAGE;
      break;
    case 'J': json = optarg; break;
    case 'S':
      if (fc_cli_parse_long(optarg, &show) || show < 0)
        return fc_cli_usage_error("eval", "--show needs a non-negative integer, not '%s'", optarg);
      break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return 0;
    default: return fc_cli_usage_error("eval", "unknown option");
    }
  }
  if (optind != argc) return fc_cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
  eo.max_new_tokens = (int)ep.max_new_tokens, eo.batch_size = (int)ep.batch_size, eo.limit = (int)ep.limit;
  if (!nm) return fc_cli_usage_error("eval", "--model is required");
  if (!nd) return fc_cli_usage_error("eval", "--data is required");
  eo.keep_rows = show > 0;

  fc_eval_result_t *res = fc_xcalloc((size_t)nm, sizeof *res);
  const fc_eval_result_t **rp = fc_xcalloc((size_t)nm, sizeof *rp);
  char(*names)[256] = fc_xcalloc((size_t)nm, sizeof *names);
  const char **np = fc_xcalloc((size_t)nm, sizeof *np);
  int rc = 0, done = 0;
  for (int i = 0; i < nm && !rc; i++) {
    base_name(models[i], names[i], sizeof names[i]);
    for (int k = 0; k < i; k++) /* two models of the same directory name: show the paths */
      if (!strcmp(names[k], names[i])) snprintf(names[i], sizeof names[i], "%s", models[i]);
    np[i] = names[i];
    rp[i] = &res[i];
    prog_ctx_t pc = {.quiet = quiet};
    char label[300];
    snprintf(label, sizeof label, "eval %s", names[i]);
    fc_progress_start(&pc.p, label, 1.0);
    fc_err_t err = {0};
    if (fc_eval_run(models[i], data, nd, &eo, on_progress, &pc, &res[i], &err)) {
      rc = fc_cli_fail("eval", "%s", err.msg);
      break;
    }
    done++;
    if (!quiet) {
      char extra[128];
      snprintf(extra, sizeof extra, "(%d prompts, %.0f generated tokens/s)", res[i].overall.n,
               res[i].gen_seconds > 0 ? res[i].overall.generated / res[i].gen_seconds : 0.0);
      fc_progress_end(&pc.p, extra);
    }
  }
  if (!rc) {
    for (int i = 0; i < nm && show > 0; i++) {
      printf("== %s: first %ld rows\n", names[i], show);
      for (size_t k = 0; k < res[i].nrows && k < (size_t)show; k++) {
        const fc_eval_row_t *r = &res[i].rows[k];
        printf("[%s] %s\n  prompt:   ", res[i].fam[r->family].name, r->correct ? "ok" : "WRONG");
        put_escaped(r->prompt);
        printf("\n  expected: ");
        put_escaped(r->expected);
        printf("\n  got:      ");
        put_escaped(r->got);
        printf("%s\n", r->stopped ? "" : "  (cut at --max-new-tokens)");
      }
      printf("\n");
    }
    fc_eval_print_table(stdout, np, rp, nm, nm > 1 ? 0 : -1, -1); /* marks against the first model */
    if (fflush(stdout)) rc = fc_cli_fail("eval", "cannot write the output");
  }
  if (!rc && json) {
    fc_err_t err = {0};
    if (fc_eval_write_json_file(json, np, rp, nm, &err)) rc = fc_cli_fail("eval", "%s", err.msg);
  }
  for (int i = 0; i < done; i++) fc_eval_result_free(&res[i]);
  free(res), free(rp), free(names), free(np);
  return rc;
}
