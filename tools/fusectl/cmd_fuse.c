/* fusectl fuse: the align and fuse stages from the command line: each source's top-K store is
 * carried onto the pivot's tokens through its vocabulary map, then the pivot's and the aligned
 * distributions are fused per example into the training targets (fc_stage_align, fc_stage_fuse). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fc_schema.h"
#include "fc_stage.h"

#define MAX_SOURCES 15

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl fuse --pivot DIR --pivot-topk FILE --source DIR --source-topk FILE --map FILE\n"
          "                    [--source DIR --source-topk FILE --map FILE ...] --out FILE.topk\n"
          "                    [--data FILE.jsonl] [OPTIONS]\n"
          "\n"
          "Builds the fused training targets (the input of training's --targets) for one shard:\n"
          "\n"
          "1. Align: for each source, every example of its top-K store is aligned token by token\n"
          "   with the same example of the pivot's store (MinED), and at each pivot position the\n"
          "   source's top-K distribution of the matching source position is carried over, its\n"
          "   ids mapped through the source's --map (from 'fusectl vocab-map'), entries landing\n"
          "   on one pivot id summed, renormalised over the kept entries; where no source\n"
          "   position matches, a one-hot on the gold next pivot token.\n"
          "2. Fuse: per example, the candidates are the pivot's own distributions and each\n"
          "   aligned source's. mince (default): the candidate with the lowest mean cross-entropy\n"
          "   on the response tokens (each model's own, stored by logits-dump) gives the target\n"
          "   for the whole example (ties go to the pivot). avgce: a per-position mixture with\n"
          "   weights softmax(exp(-CE)).\n"
          "\n"
          "--source, --source-topk and --map are repeated once per source, in the same order (up\n"
          "to %d sources). All stores must come from logits-dump runs over the same data shard\n"
          "with the same pivot tokenizer, template and --max-len: each example stores a hash of its\n"
          "text and mismatches are refused. With --data, the pivot store is also checked against\n"
          "the data itself (row count and texts; give the same --shard/--template/--max-len as to\n"
          "logits-dump).\n"
          "\n"
          "The aligned stores are written beside the output as FILE.topk.aligned<i> and removed\n"
          "at the end unless --keep-aligned. Everything is written atomically, so a rerun gives the\n"
          "same bytes.\n"
          "\n"
          "Options:\n"
          "  -P, --pivot DIR          the pivot model directory (or its tokenizer.json)\n"
          "  -p, --pivot-topk FILE    the pivot's top-K store\n"
          "  -S, --source DIR         a source model directory (or its tokenizer.json)\n"
          "  -s, --source-topk FILE   that source's top-K store\n"
          "  -m, --map FILE           that source's vocabulary map\n"
          "  -o, --out FILE           the fused store\n"
          "  -M, --method NAME        mince or avgce (default mince)\n"
          "  -d, --data FILE          check the pivot store against this dataset\n"
          "      --shard I/N          with --data: the shard the stores hold (default 0/1)\n"
          "      --template NAME      with --data: chatml, llama2 or auto (default auto)\n"
          "      --max-len T          with --data: as given to logits-dump (default 4096)\n"
          "      --margin M           alignment band (default %d)\n"
          "      --keep-aligned       keep the aligned stores\n"
          "  -q, --quiet              no progress lines\n"
          "  -h, --help               show this help\n"
          "\n"
          "Exit status: 0 success, 1 a file could not be read or written or the files do not\n"
          "describe the same examples, 2 bad usage.\n"
          "\n"
          "Example:\n"
          "  fusectl fuse --pivot models/pivot --pivot-topk pivot.0.topk --source models/src1 \\\n"
          "      --source-topk src1.0.topk --map src1.map --data train.jsonl --shard 0/4 --out fused.0.topk\n",
          MAX_SOURCES, FC_ALIGN_DEFAULT_MARGIN);
}

int fc_cmd_fuse(int argc, char **argv) {
  enum { O_SHARD = 256, O_TEMPLATE, O_MAXLEN, O_MARGIN, O_KEEP };
  static const struct option opts[] = {
      {"pivot", required_argument, 0, 'P'},       {"pivot-topk", required_argument, 0, 'p'},
      {"source", required_argument, 0, 'S'},      {"source-topk", required_argument, 0, 's'},
      {"map", required_argument, 0, 'm'},         {"out", required_argument, 0, 'o'},
      {"method", required_argument, 0, 'M'},      {"data", required_argument, 0, 'd'},
      {"shard", required_argument, 0, O_SHARD},   {"template", required_argument, 0, O_TEMPLATE},
      {"max-len", required_argument, 0, O_MAXLEN}, {"margin", required_argument, 0, O_MARGIN},
      {"keep-aligned", no_argument, 0, O_KEEP},   {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},              {0}};
  const char *cmd = "fuse", *pivot = NULL, *piv_topk = NULL, *out = NULL;
  const char *src[MAX_SOURCES + 1], *src_topk[MAX_SOURCES + 1], *maps[MAX_SOURCES + 1];
  int ns = 0, nst = 0, nm = 0, keep = 0, quiet = 0, c;
  long v, margin = FC_ALIGN_DEFAULT_MARGIN;
  /* defaults: the align and logits stages' tables (what a job's tasks get) */
  fc_fuse_method_t method;
  fc_fuse_method_parse(fc_schema_param(fc_schema_find("align"), "fuse")->sdef, &method);
  fc_stage_data_t d = {.tmpl = FC_CHAT_AUTO, .n_shards = 1,
                       .max_len = (uint32_t)fc_schema_param(fc_schema_find("logits"), "max_len")->def};
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "P:p:S:s:m:o:M:d:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'P': pivot = optarg; break;
    case 'p': piv_topk = optarg; break;
    case 'S':
    case 's':
    case 'm': {
      int *n = c == 'S' ? &ns : c == 's' ? &nst : &nm;
      const char **a = c == 'S' ? src : c == 's' ? src_topk : maps;
      if (*n == MAX_SOURCES) return fc_cli_usage_error(cmd, "at most %d sources", MAX_SOURCES);
      a[(*n)++] = optarg;
      break;
    }
    case 'o': out = optarg; break;
    case 'M':
      if (fc_fuse_method_parse(optarg, &method))
        return fc_cli_usage_error(cmd, "--method is mince or avgce, not '%s'", optarg);
      break;
    case 'd': d.path = optarg; break;
    case O_SHARD:
      if (fc_cli_shard_option(cmd, optarg, &d.shard, &d.n_shards)) return FC_EXIT_USAGE;
      break;
    case O_TEMPLATE:
      if (fc_cli_template_option(cmd, "--template", optarg, &d.tmpl)) return FC_EXIT_USAGE;
      break;
    case O_MAXLEN:
      if (fc_cli_parse_long(optarg, &v) || v < 1 || v > 1 << 20)
        return fc_cli_usage_error(cmd, "--max-len needs a positive integer, not '%s'", optarg);
      d.max_len = (uint32_t)v;
      break;
    case O_MARGIN:
      if (fc_cli_parse_long(optarg, &margin) || margin < 1 || margin > 1 << 20)
        return fc_cli_usage_error(cmd, "--margin needs a positive integer, not '%s'", optarg);
      break;
    case O_KEEP: keep = 1; break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default: return fc_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  if (optind != argc) return fc_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!pivot || !piv_topk || !out) return fc_cli_usage_error(cmd, "--pivot, --pivot-topk and --out are required");
  if (ns == 0) return fc_cli_usage_error(cmd, "at least one --source with --source-topk and --map is required");
  if (ns != nst || ns != nm)
    return fc_cli_usage_error(cmd, "give --source, --source-topk and --map once per source (%d, %d, %d given)", ns,
                              nst, nm);
  fc_err_t err = {0};
  if (d.path) {
    d.pivot_tok = pivot;
    if (fc_stage_check_store(piv_topk, pivot, &d, &err)) return fc_cli_fail(cmd, "%s", err.msg);
  }
  char *aligned[MAX_SOURCES];
  int rc = 0, made = 0;
  for (int i = 0; i < ns && !rc; i++) {
    size_t l = strlen(out) + 32;
    aligned[i] = fc_xmalloc(l);
    snprintf(aligned[i], l, "%s.aligned%d", out, i);
    made++;
    fc_progress_t pr;
    char label[64];
    snprintf(label, sizeof label, "align source %d", i + 1);
    fc_progress_start(&pr, label, 1.0);
    fc_xfer_stats_t st;
    rc = fc_stage_align(src_topk[i], piv_topk, src[i], pivot, maps[i], aligned[i], (int)margin, &st,
                        quiet ? NULL : fc_cli_progress, &pr, &err);
    if (rc) {
      fc_err_wrap(&err, "source %d (%s)", i + 1, src_topk[i]);
      break;
    }
    if (!quiet) {
      uint64_t carried = st.by_rule[FC_XFER_ONE] + st.by_rule[FC_XFER_SUFFIX] + st.by_rule[FC_XFER_COVER];
      uint64_t all = carried + st.by_rule[FC_XFER_ONEHOT] + st.by_rule[FC_XFER_EMPTY];
      char extra[96];
      snprintf(extra, sizeof extra, "(%.1f%% of pivot positions carry the source, %.1f%% one-hot)",
               all ? 100.0 * carried / all : 0.0, all ? 100.0 * st.by_rule[FC_XFER_ONEHOT] / all : 0.0);
      fc_progress_end(&pr, extra);
    }
  }
  fc_fuse_summary_t sum = {0};
  if (!rc) {
    fc_progress_t pr;
    fc_progress_start(&pr, "fuse", 1.0);
    rc = fc_stage_fuse(method, piv_topk, (const char *const *)aligned, ns, out, &sum,
                       quiet ? NULL : fc_cli_progress, &pr, &err);
    if (!rc && !quiet) fc_progress_end(&pr, "");
  }
  for (int i = 0; i < made; i++) {
    if (!keep || rc) unlink(aligned[i]);
    free(aligned[i]);
  }
  if (rc) return fc_cli_fail(cmd, "%s", err.msg);
  printf("%s: %lu examples fused (%s)", out, (unsigned long)sum.examples, method == FC_FUSE_MINCE ? "mince" : "avgce");
  if (method == FC_FUSE_MINCE) {
    printf("; won by pivot %lu", (unsigned long)sum.wins[0]);
    for (int i = 0; i < ns; i++) printf(", source %d %lu", i + 1, (unsigned long)sum.wins[i + 1]);
  }
  printf("\n");
  return FC_EXIT_OK;
}
