/* fusectl vocab-map: the vocabulary stage from the command line: count aligned (source token,
 * pivot token) pairs over a dataset shard or a pair of top-K stores, merge count files, and build
 * the map from source ids to pivot ids (fc_stage_vocab_count / _merge / _map). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "fc_schema.h"
#include "fc_stage.h"

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: fusectl vocab-map --source DIR --pivot DIR --data FILE.jsonl [--shard I/N]\n"
          "                         (--out FILE.map | --counts-out FILE.counts) [OPTIONS]\n"
          "       fusectl vocab-map --source DIR --pivot DIR --source-topk FILE --pivot-topk FILE\n"
          "                         (--out FILE.map | --counts-out FILE.counts) [OPTIONS]\n"
          "       fusectl vocab-map --merge A.counts B.counts ... [--source DIR --pivot DIR]\n"
          "                         --out FILE [--counts-out FILE.counts] [OPTIONS]\n"
          "\n"
          "Maps every token id of a source model's vocabulary to a pivot token id, the map the\n"
          "distribution transfer ('fusectl fuse') carries source top-K entries through.\n"
          "\n"
          "Counting. Each example is aligned token by token (MinED, see 'fusectl align') under\n"
          "the two tokenizers and every (source id, pivot id) pair on the alignment path is\n"
          "counted. The examples come either from the data (rendered with the pivot's chat\n"
          "template, cut at --max-len pivot tokens, tokenized by both tokenizers: exactly what\n"
          "'fusectl logits-dump' stores) or from a source and a pivot top-K store of the same\n"
          "shard (made by logits-dump; their examples must hold the same texts). Both give the\n"
          "same counts.\n"
          "\n"
          "Mapping (--method):\n"
          "  stats  (default) each source id goes to the pivot id it was most often aligned with\n"
          "         (ties: smaller edit distance between the token texts, then smaller id); ids\n"
          "         never aligned fall back to 'mined'\n"
          "  mined  the pivot token with the same text, else the one at minimum edit distance\n"
          "  exact  the pivot token with the same text, else unmapped (its entries are dropped)\n"
          "The source's bos and eos go to the pivot's bos and eos whatever the method.\n"
          "\n"
          "Shards. With --shard I/N only that block of rows is counted; write the shard's counts\n"
          "with --counts-out and combine the shards with --merge. --merge reads count files and\n"
          "adds them pair by pair (the files must be counts of the same source and pivot\n"
          "vocabularies); with --source and --pivot the map is then built from the summed counts\n"
          "and written to --out (and the sum to --counts-out if given); without them the summed\n"
          "counts themselves are written to --out. Counts are merged, never maps: a map of\n"
          "summed counts is not a combination of per-shard maps.\n"
          "\n"
          "DIR is a model directory (its tokenizer.json, and config.json for the vocabulary size)\n"
          "or a tokenizer.json; give every stage of a job the same kind of path, since counts and\n"
          "maps are tied to the exact vocabulary. Outputs are written atomically.\n"
          "\n"
          "Options:\n"
          "  -S, --source DIR          the source model (or its tokenizer.json)\n"
          "  -P, --pivot DIR           the pivot model (or its tokenizer.json)\n"
          "  -d, --data FILE           the dataset, JSONL (as for logits-dump)\n"
          "  -s, --shard I/N           with --data: only shard I of N (default 0/1)\n"
          "  -t, --template NAME       with --data: chatml, llama2 or auto (default auto)\n"
          "  -l, --max-len T           with --data: pivot tokens per row at most (default 4096)\n"
          "      --source-topk FILE    count from this source store ...\n"
          "      --pivot-topk FILE     ... and this pivot store instead of the data\n"
          "      --merge               the arguments are count files to sum\n"
          "  -o, --out FILE            the map (or, for --merge without tokenizers, the counts)\n"
          "  -c, --counts-out FILE     also (or only) write the counts\n"
          "  -M, --method NAME         stats, mined or exact (default stats)\n"
          "  -j, --threads N           threads for the minimum-edit-distance search (default 1)\n"
          "  -q, --quiet               no progress line\n"
          "  -h, --help                show this help\n"
          "\n"
          "Exit status: 0 success, 1 a file could not be read or written or files do not match\n"
          "(other tokenizers, stores of other texts), 2 bad usage.\n"
          "\n"
          "Examples:\n"
          "  fusectl vocab-map --source models/src1 --pivot models/pivot --data train.jsonl --out src1.map\n"
          "  fusectl vocab-map --source models/src1 --pivot models/pivot --data train.jsonl \\\n"
          "      --shard 0/2 --counts-out src1.0.counts\n"
          "  fusectl vocab-map --merge src1.0.counts src1.1.counts --source models/src1 \\\n"
          "      --pivot models/pivot --out src1.map\n");
}

int fc_cmd_vocab_map(int argc, char **argv) {
  enum { O_STOPK = 256, O_PTOPK, O_MERGE };
  static const struct option opts[] = {
      {"source", required_argument, 0, 'S'},      {"pivot", required_argument, 0, 'P'},
      {"data", required_argument, 0, 'd'},        {"shard", required_argument, 0, 's'},
      {"template", required_argument, 0, 't'},    {"max-len", required_argument, 0, 'l'},
      {"source-topk", required_argument, 0, O_STOPK}, {"pivot-topk", required_argument, 0, O_PTOPK},
      {"merge", no_argument, 0, O_MERGE},         {"out", required_argument, 0, 'o'},
      {"counts-out", required_argument, 0, 'c'},  {"method", required_argument, 0, 'M'},
      {"threads", required_argument, 0, 'j'},     {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},              {0}};
  const char *cmd = "vocab-map", *out = NULL, *counts_out = NULL;
  fc_stage_count_opts_t co = {0};
  /* defaults: the vocab-map and logits stages' tables (what a job's tasks get) */
  co.data = (fc_stage_data_t){.tmpl = FC_CHAT_AUTO, .n_shards = 1,
                              .max_len = (uint32_t)fc_schema_param(fc_schema_find("logits"), "max_len")->def};
  fc_vmap_method_t method;
  fc_vmap_method_parse(fc_schema_param(fc_schema_find("vocab-map"), "method")->sdef, &method);
  int merge = 0, quiet = 0, sharded = 0, data_opts = 0, c;
  long v, threads = 1;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "S:P:d:s:t:l:o:c:M:j:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'S': co.src_tok = optarg; break;
    case 'P': co.piv_tok = optarg; break;
    case 'd': co.data.path = optarg; break;
    case 's':
      if (fc_cli_shard_option(cmd, optarg, &co.data.shard, &co.data.n_shards)) return FC_EXIT_USAGE;
      sharded = 1;
      break;
    case 't':
      if (fc_cli_template_option(cmd, "--template", optarg, &co.data.tmpl)) return FC_EXIT_USAGE;
      data_opts = 1;
      break;
    case 'l':
      if (fc_cli_parse_long(optarg, &v) || v < 1 || v > 1 << 20)
        return fc_cli_usage_error(cmd, "--max-len needs a positive integer, not '%s'", optarg);
      co.data.max_len = (uint32_t)v;
      data_opts = 1;
      break;
    case O_STOPK: co.src_topk = optarg; break;
    case O_PTOPK: co.piv_topk = optarg; break;
    case O_MERGE: merge = 1; break;
    case 'o': out = optarg; break;
    case 'c': counts_out = optarg; break;
    case 'M':
      if (fc_vmap_method_parse(optarg, &method))
        return fc_cli_usage_error(cmd, "--method is stats, mined or exact, not '%s'", optarg);
      break;
    case 'j':
      if (fc_cli_parse_long(optarg, &threads) || threads < 1 || threads > 1024)
        return fc_cli_usage_error(cmd, "--threads needs a positive integer, not '%s'", optarg);
      break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return FC_EXIT_OK;
    default: return fc_cli_usage_error(cmd, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
  }
  fc_err_t err = {0};
  int have_tok = co.src_tok || co.piv_tok;
  if (have_tok && !(co.src_tok && co.piv_tok)) return fc_cli_usage_error(cmd, "give both --source and --pivot");
  if (merge) {
    if (optind >= argc) return fc_cli_usage_error(cmd, "--merge needs count files");
    if (co.data.path || co.src_topk || co.piv_topk || sharded || data_opts)
      return fc_cli_usage_error(cmd, "--merge takes count files, not --data or stores");
    if (!out) return fc_cli_usage_error(cmd, "--out is required");
    if (!have_tok && counts_out) return fc_cli_usage_error(cmd, "without --source/--pivot, --out gets the counts");
    const char *const *files = (const char *const *)argv + optind;
    int n = argc - optind;
    if (!have_tok) {
      if (fc_stage_vocab_merge(files, n, out, &err)) return fc_cli_fail(cmd, "%s", err.msg);
      printf("%s: the sum of %d count files\n", out, n);
      return FC_EXIT_OK;
    }
    char *tmp = NULL;
    const char *cp = counts_out;
    if (!cp) {
      size_t l = strlen(out) + 48;
      tmp = fc_xmalloc(l);
      snprintf(tmp, l, "%s.counts.tmp.%ld", out, (long)getpid());
      cp = tmp;
    }
    int rc = fc_stage_vocab_merge(files, n, cp, &err);
    if (!rc) rc = fc_stage_vocab_map(cp, co.src_tok, co.piv_tok, method, (int)threads, out, &err);
    if (tmp) {
      unlink(tmp);
      free(tmp);
    }
    if (rc) return fc_cli_fail(cmd, "%s", err.msg);
    printf("%s: %s map from the sum of %d count files\n", out, fc_vmap_method_name(method), n);
    return FC_EXIT_OK;
  }
  if (optind != argc) return fc_cli_usage_error(cmd, "unexpected argument '%s' (count files go with --merge)",
                                                argv[optind]);
  if (!have_tok) return fc_cli_usage_error(cmd, "--source and --pivot are required");
  if (!out && !counts_out) return fc_cli_usage_error(cmd, "give --out, --counts-out or both");
  if (!!co.src_topk != !!co.piv_topk) return fc_cli_usage_error(cmd, "give both --source-topk and --pivot-topk");
  if (co.src_topk && (co.data.path || sharded || data_opts))
    return fc_cli_usage_error(cmd, "count from the stores or from --data, not both");
  int need_counts = counts_out || method == FC_VMAP_STATS;
  if (need_counts && !co.src_topk && !co.data.path)
    return fc_cli_usage_error(cmd, "--data FILE or --source-topk/--pivot-topk are needed to count");
  if (sharded && out && !counts_out)
    fprintf(stderr, "fusectl %s: warning: a map from one shard's counts; use --counts-out and --merge for all\n",
            cmd);
  char *tmp = NULL;
  int rc = 0;
  if (need_counts) {
    if (!counts_out) {
      size_t l = strlen(out) + 48;
      tmp = fc_xmalloc(l);
      snprintf(tmp, l, "%s.counts.tmp.%ld", out, (long)getpid());
    }
    co.out_path = counts_out ? counts_out : tmp;
    co.data.pivot_tok = co.piv_tok;
    fc_progress_t pr;
    fc_progress_start(&pr, "counting", 1.0);
    rc = fc_stage_vocab_count(&co, quiet ? NULL : fc_cli_progress, &pr, &err);
    if (!rc && !quiet) fc_progress_end(&pr, "");
  }
  if (!rc && out)
    rc = fc_stage_vocab_map(method == FC_VMAP_STATS ? co.out_path : NULL, co.src_tok, co.piv_tok, method,
                            (int)threads, out, &err);
  if (tmp) {
    unlink(tmp);
    free(tmp);
  }
  if (rc) return fc_cli_fail(cmd, "%s", err.msg);
  if (counts_out) printf("%s: counts\n", counts_out);
  if (out) printf("%s: %s map\n", out, fc_vmap_method_name(method));
  return FC_EXIT_OK;
}
