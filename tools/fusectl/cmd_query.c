/* fusectl query: asks a logits daemon directly (its --serve socket) for the top-K next-token
 * log-probs of a text or of token ids, without a job. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fc_limits.h"
#include "fc_net.h"
#include "fc_num.h"

static void usage(void) {
  printf("Usage: fusectl query --endpoint URL (--text TEXT [--chat] | --ids IDS) [OPTIONS]\n"
         "\n"
         "Sends one logits_request to a logits daemon started with --serve URL and prints, for\n"
         "every position, the token id and the k most likely next tokens with their log-probs:\n"
         "  POS  ID  ->  ID:LOGPROB ID:LOGPROB ...\n"
         "A tcp:// daemon with CURVE uses $FUSECHAT_CURVE_KEY and $FUSECHAT_CURVE_SERVER.\n"
         "\n"
         "Options:\n"
         "  --endpoint URL   the daemon's --serve endpoint (ipc://... or tcp://HOST:PORT)\n"
         "  --text TEXT      text, tokenized by the daemon (bos added as the tokenizer says)\n"
         "  --chat           render TEXT as one user turn with the model's chat template and the\n"
         "                   open assistant header (the next token is the answer's first)\n"
         "  --ids IDS        token ids instead of text (\"1 2 3\" or \"1,2,3\")\n"
         "  -k, --top-k K    entries per position (default 5, at most %d)\n"
         "  --last           print only the last position (what comes next)\n"
         "  --timeout SEC    give up after SEC seconds (default 30)\n"
         "  --help           this text\n"
         "\nExit status: 0 answered, 1 the daemon refused or did not answer, 2 bad usage.\n",
         FC_TOPK_MAX_K);
}

int fc_cmd_query(int argc, char **argv) {
  static const struct option opts[] = {{"endpoint", required_argument, 0, 'E'}, {"text", required_argument, 0, 't'},
                                       {"chat", no_argument, 0, 'c'}, {"ids", required_argument, 0, 'i'},
                                       {"top-k", required_argument, 0, 'k'}, {"last", no_argument, 0, 'l'},
                                       {"timeout", required_argument, 0, 'T'}, {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *ep = NULL, *text = NULL, *ids_s = NULL;
  int chat = 0, last = 0, o;
  long k = 5;
  double timeout = 30;
  fc_err_t nerr = {0};
  while ((o = getopt_long(argc, argv, "hk:", opts, NULL)) != -1) {
    switch (o) {
    case 'h': usage(); return 0;
    case 'E': ep = optarg; break;
    case 't': text = optarg; break;
    case 'c': chat = 1; break;
    case 'i': ids_s = optarg; break;
    case 'l': last = 1; break;
    case 'k':
      if (fc_num_long(optarg, 1, FC_TOPK_MAX_K, &k, "--top-k", &nerr)) return fc_cli_usage_error("query", "%s", nerr.msg);
      break;
    case 'T':
      if (fc_cli_parse_double(optarg, &timeout) || !(timeout > 0 && timeout < 86400))
        return fc_cli_usage_error("query", "--timeout wants seconds, not '%s'", optarg);
      break;
    default: return fc_cli_usage_error("query", "unknown option or missing value");
    }
  }
  if (optind < argc) return fc_cli_usage_error("query", "unexpected argument '%s'", argv[optind]);
  if (!ep) return fc_cli_usage_error("query", "--endpoint URL is required (the daemon's --serve)");
  if (!text == !ids_s) return fc_cli_usage_error("query", "give exactly one of --text or --ids");
  if (chat && !text) return fc_cli_usage_error("query", "--chat goes with --text");
  fc_msg_t req = {.type = FC_MSG_LOGITS_REQUEST, .k = k}, rep;
  if (ids_s) {
    int32_t *ids;
    int n;
    if (fc_cli_parse_ids(ids_s, &ids, &n) || n == 0) return fc_cli_usage_error("query", "--ids wants non-negative integers");
    fc_msg_set_ids(&req, ids, (size_t)n);
    free(ids);
  } else {
    fc_msg_set_str(&req.text, text);
    if (chat) fc_msg_set_str(&req.state, "chat");
  }
  fc_err_t err = {0};
  int rc = fc_net_call(ep, &req, &rep, (int)(timeout * 1000), &err);
  fc_msg_clear(&req);
  if (rc) return fc_cli_fail("query", "%s", err.msg);
  if (rep.type != FC_MSG_LOGITS_REPLY) {
    rc = fc_cli_fail("query", "%s answered with a %s message, not a logits_reply", ep, fc_msg_type_name(rep.type));
  } else if (!rep.ok) {
    rc = fc_cli_fail("query", "%s", rep.error ? rep.error : "refused");
  } else {
    printf("# model %s, %zu tokens, top-%lld\n", rep.text ? rep.text : "?", rep.nids, (long long)rep.k);
    for (size_t i = last ? rep.nids - 1 : 0; i < rep.nids; i++) {
      printf("%zu\t%d\t->", i, rep.ids[i]);
      for (int64_t j = 0; j < rep.k; j++)
        printf(" %d:%.4f", rep.top_ids[i * (size_t)rep.k + (size_t)j], rep.top_lp[i * (size_t)rep.k + (size_t)j]);
      printf("\n");
    }
  }
  fc_msg_clear(&rep);
  return rc;
}
