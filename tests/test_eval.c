/* Evaluation end to end on models whose answers we fix by hand: a "constant" model (attention and
 * MLP outputs zeroed, so the residual stream is the token's embedding; one-hot embeddings and an
 * LM head written as a bigram table) that answers every prompt with the same string. Checks
 * exact-match counts per family, stop at the end-of-turn token, truncation at max_new_tokens,
 * the gold loss against a cross-entropy recomputed here with fc_model_forward + log-softmax,
 * batch-size independence (also on a random model), bad input, the table and the JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fc_bpe_train.h"
#include "fc_chat.h"
#include "fc_eval.h"
#include "fc_model.h"
#include "fc_tok.h"

#define ANSWER "KQ!" /* what the constant model says; rare characters, so one token each */
#define HIDDEN 32

typedef struct fix {
  char dir[64];      /* the constant model */
  char rdir[80];     /* a random model with the same tokenizer */
  char data[96];     /* the rows below */
  fc_tok_t *tok;
  fc_chat_template_t tmpl;
  fc_tok_kind_t kind;
  int nanswer;       /* tokens of ANSWER */
} fix_t;

/* " Ka Kb": SentencePiece learns "▁K", so " KQ! </s>" has one "▁" piece only (states must differ) */
static const char *corpus_line = "the quick brown fox jumps over 12 lazy dogs; what is 3 + 4? convert 5 km to m. Ka Kb\n";

/* Family, question, gold answer; expected correct under the constant model. */
static const struct {
  const char *family, *q, *a;
  int correct;
} rows[] = {
    {"arith", "What is 1 + 1?", ANSWER, 1},
    {"arith", "What is 2 + 2?", "4", 0},
    {"arith", "What is 3 + 3?", "  " ANSWER " ", 1}, /* white space is trimmed */
    {"convert", "Convert 1 km to m.", ANSWER, 1},
    {"convert", "Convert 2 km to m.", "KQ", 0},
    {"facts", "Who rules Zorbia?", "Queen Ada", 0},
    {NULL, "Say it.", ANSWER, 1},
    {"strings", "Reverse the word 'abc'.", "cba", 0},
    {"strings", "Reverse the word 'dog'.", ANSWER "!", 0},
};
#define NROWS (sizeof rows / sizeof *rows)

static void write_rows(const char *path) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (size_t i = 0; i < NROWS; i++) {
    json_t *o = json_object(), *conv = json_array();
    if (rows[i].family) json_object_set_new(o, "family", json_string(rows[i].family));
    json_array_append_new(conv, json_pack("{s:s,s:s}", "from", "human", "value", rows[i].q));
    json_array_append_new(conv, json_pack("{s:s,s:s}", "from", "gpt", "value", rows[i].a));
    json_object_set_new(o, "conversations", conv);
    char *s = json_dumps(o, JSON_COMPACT);
    fprintf(f, "%s\n%s", s, i == 3 ? "\n" : ""); /* a blank line is skipped */
    free(s);
    json_decref(o);
  }
  fclose(f);
}

static int setup_kind(void **state, fc_tok_kind_t kind) {
  fix_t *f = calloc(1, sizeof *f);
  f->kind = kind;
  fc_err_t err = {0};
  snprintf(f->dir, sizeof f->dir, "/tmp/fc_eval_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->rdir, sizeof f->rdir, "%s/random", f->dir);
  snprintf(f->data, sizeof f->data, "%s/rows.jsonl", f->dir);
  assert_int_equal(fc_mkdir_p(f->rdir, &err), 0);

  /* tokenizer */
  size_t L = strlen(corpus_line), reps = 40;
  char *corpus = malloc(L * reps + 1);
  for (size_t i = 0; i < reps; i++) memcpy(corpus + i * L, corpus_line, L);
  corpus[L * reps] = 0;
  fc_bpe_train_opts_t to = {.kind = kind, .vocab_size = 320};
  char *json;
  assert_int_equal(fc_bpe_train(corpus, L * reps, &to, &json, &err), 0);
  free(corpus);
  assert_int_equal(fc_tok_load_json(&f->tok, json, strlen(json), NULL, &err), 0);
  f->tmpl = fc_chat_template_for(f->tok);
  assert_int_equal(f->tmpl, kind == FC_TOK_BYTELEVEL ? FC_CHAT_CHATML : FC_CHAT_LLAMA2);
  for (int d = 0; d < 2; d++) {
    char *p = fc_path_join(d ? f->rdir : f->dir, "tokenizer.json");
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fputs(json, fp);
    fclose(fp);
    free(p);
  }
  free(json);

  /* the chain of states: the prompt's last token -> answer tokens -> end of turn -> filler */
  char *ptext;
  size_t plen, n;
  assert_int_equal(fc_chat_render_prompt(f->tmpl, NULL, "hi", &ptext, &plen, &err), 0);
  int32_t *pids, *aids;
  assert_int_equal(fc_tok_encode(f->tok, ptext, plen, FC_TOK_PARSE_SPECIAL, &pids, NULL, &n, &err), 0);
  int32_t chain[16];
  int nc = 0;
  chain[nc++] = pids[n - 1];
  free(ptext);
  int32_t eot;
  if (f->tmpl == FC_CHAT_CHATML) {
    assert_int_equal(fc_tok_encode(f->tok, ANSWER, strlen(ANSWER), 0, &aids, NULL, &n, &err), 0);
    eot = fc_tok_piece_id(f->tok, "<|im_end|>");
  } else {
    /* Llama-2: what follows "[/INST]" in the full rendering (" KQ! </s>"), up to </s> */
    size_t np = n, nt, tl, ns;
    fc_chat_msg_t msgs[2] = {{FC_ROLE_USER, "hi"}, {FC_ROLE_ASSISTANT, ANSWER}};
    char *text;
    fc_chat_span_t *spans;
    int32_t *ids;
    assert_int_equal(fc_chat_render(f->tmpl, msgs, 2, &text, &tl, &spans, &ns, &err), 0);
    assert_int_equal(fc_tok_encode(f->tok, text, tl, FC_TOK_PARSE_SPECIAL, &ids, NULL, &nt, &err), 0);
    assert_true(nt > np + 1);
    assert_memory_equal(ids, pids, np * sizeof *ids);
    eot = fc_tok_eos(f->tok);
    assert_int_equal(ids[nt - 1], eot);
    n = nt - 1 - np;
    aids = malloc(n * sizeof *aids);
    memcpy(aids, ids + np, n * sizeof *aids);
    free(text), free(spans), free(ids);
  }
  free(pids);
  assert_true(n >= 2); /* so max_new_tokens = 1 truncates */
  f->nanswer = (int)n;
  for (size_t i = 0; i < n; i++) chain[nc++] = aids[i];
  free(aids);
  assert_true(eot >= 0);
  chain[nc++] = eot;
  for (int32_t id = 0;; id++) { /* after the end of turn: any other token */
    int used = 0;
    for (int i = 0; i < nc; i++) used |= chain[i] == id;
    if (!used) {
      chain[nc++] = id;
      break;
    }
  }
  for (int i = 0; i < nc; i++)
    for (int j = 0; j < i; j++) assert_true(chain[i] != chain[j]); /* a bigram table needs distinct states */

  fc_config_t c;
  fc_config_default(&c, "llama");
  c.hidden_size = HIDDEN, c.intermediate_size = 48, c.num_layers = 2, c.num_heads = 4, c.num_kv_heads = 2;
  c.head_dim = 8, c.vocab_size = fc_tok_vocab_size(f->tok), c.max_position_embeddings = 256;
  c.eos_token_id = kind == FC_TOK_BYTELEVEL ? fc_tok_piece_id(f->tok, "<|endoftext|>") : fc_tok_eos(f->tok);
  fc_model_t *m;
  assert_int_equal(fc_model_init(&m, &c, 3, &err), 0);
  assert_int_equal(fc_model_save(m, f->rdir, FC_DT_F32, &err), 0);
  float *P = fc_model_params(m);
  for (int l = 0; l < c.num_layers; l++) {
    const char *zero[] = {"self_attn.o_proj.weight", "mlp.down_proj.weight"};
    for (int k = 0; k < 2; k++) {
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.%s", l, zero[k]);
      const fc_param_info_t *t = fc_model_find_tensor(m, name);
      assert_non_null(t);
      memset(P + t->offset, 0, t->numel * sizeof(float));
    }
  }
  const fc_param_info_t *emb = fc_model_find_tensor(m, "model.embed_tokens.weight");
  const fc_param_info_t *head = fc_model_find_tensor(m, "lm_head.weight");
  assert_non_null(emb);
  assert_non_null(head);
  float *E = P + emb->offset, *H = P + head->offset;
  memset(E, 0, emb->numel * sizeof(float));
  for (int v = 0; v < c.vocab_size; v++) E[(size_t)v * HIDDEN + HIDDEN - 1] = 1; /* other tokens: one default state */
  for (int i = 0; i < nc; i++) {
    E[(size_t)chain[i] * HIDDEN + HIDDEN - 1] = 0;
    E[(size_t)chain[i] * HIDDEN + i] = 1;
    /* the head keeps its small random weights, so the losses are not trivial */
    if (i + 1 < nc) H[(size_t)chain[i + 1] * HIDDEN + i] += 2.0f;
  }
  assert_int_equal(fc_model_save(m, f->dir, FC_DT_F32, &err), 0);
  fc_model_destroy(&m);
  write_rows(f->data);
  *state = f;
  return 0;
}

static int setup_bytelevel(void **state) { return setup_kind(state, FC_TOK_BYTELEVEL); }
static int setup_sentencepiece(void **state) { return setup_kind(state, FC_TOK_SENTENCEPIECE); }

static int teardown(void **state) {
  fix_t *f = *state;
  if (!f) return 0;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
  fc_tok_destroy(&f->tok);
  free(f);
  return 0;
}

static const fc_eval_family_t *fam(const fc_eval_result_t *r, const char *name) {
  for (int i = 0; i < r->nfam; i++)
    if (!strcmp(r->fam[i].name, name)) return &r->fam[i];
  fail_msg("family %s missing", name);
  return NULL;
}

static void run(const fix_t *f, const char *dir, int max_new, int batch, fc_eval_result_t *r) {
  fc_eval_opts_t o;
  fc_eval_opts_default(&o);
  o.max_new_tokens = max_new;
  o.batch_size = batch;
  o.keep_rows = 1;
  fc_err_t err = {0};
  const char *paths[] = {f->data};
  int rc = fc_eval_run(dir, paths, 1, &o, NULL, NULL, r, &err);
  if (rc) fail_msg("%s", err.msg);
}

/* Mean CE of the gold answer (and its end-of-turn token) recomputed with the full-logits forward:
 * the answer tokens are found from separate encodings of prompt and answer, not from spans. */
static void reference_loss_qa(const fix_t *f, const char *dir, const char *q, const char *a, double *nll,
                              int *ntok) {
  fc_err_t err = {0};
  fc_model_t *m;
  assert_int_equal(fc_model_load(&m, dir, &err), 0);
  char *ptext;
  size_t plen, np, na, nt;
  assert_int_equal(fc_chat_render_prompt(f->tmpl, NULL, q, &ptext, &plen, &err), 0);
  int32_t *pids, *aids, *ids;
  assert_int_equal(fc_tok_encode(f->tok, ptext, plen, FC_TOK_PARSE_SPECIAL, &pids, NULL, &np, &err), 0);
  fc_chat_msg_t msgs[2] = {{FC_ROLE_USER, q}, {FC_ROLE_ASSISTANT, a}};
  char *text;
  size_t len, ns;
  fc_chat_span_t *spans;
  assert_int_equal(fc_chat_render(f->tmpl, msgs, 2, &text, &len, &spans, &ns, &err), 0);
  assert_int_equal(fc_tok_encode(f->tok, text, len, FC_TOK_PARSE_SPECIAL, &ids, NULL, &nt, &err), 0);
  assert_memory_equal(ids, pids, np * sizeof *ids);
  if (f->tmpl == FC_CHAT_CHATML) {
    /* the full rendering is prompt + answer + <|im_end|> + "\n" */
    assert_int_equal(fc_tok_encode(f->tok, a, strlen(a), 0, &aids, NULL, &na, &err), 0);
    assert_int_equal(nt, np + na + 2);
    assert_memory_equal(ids + np, aids, na * sizeof *ids);
    assert_int_equal(ids[np + na], fc_tok_piece_id(f->tok, "<|im_end|>"));
  } else {
    /* prompt + " answer </s>": everything after the prompt but the </s> */
    aids = NULL;
    na = nt - np - 1;
    assert_int_equal(ids[nt - 1], fc_tok_eos(f->tok));
  }
  const float *logits = fc_model_forward(m, ids, 1, (int)nt, 0, &err);
  assert_non_null(logits);
  int V = fc_model_config(m)->vocab_size;
  double s = 0;
  for (size_t t = np; t <= np + na; t++) { /* token t predicted at position t - 1 */
    const float *lg = logits + (t - 1) * V;
    double mx = lg[0], z = 0;
    for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    for (int v = 0; v < V; v++) z += exp(lg[v] - mx);
    s += mx + log(z) - lg[ids[t]];
  }
  *nll = s;
  *ntok = (int)na + 1;
  free(ptext), free(pids), free(aids), free(text), free(spans), free(ids);
  fc_model_destroy(&m);
}

static void reference_loss(const fix_t *f, const char *dir, size_t i, double *nll, int *ntok) {
  reference_loss_qa(f, dir, rows[i].q, rows[i].a, nll, ntok);
}

static void test_constant_model(void **state) {
  fix_t *f = *state;
  fc_eval_result_t r;
  run(f, f->dir, 16, 32, &r);
  assert_int_equal(r.nrows, NROWS);
  assert_int_equal(r.overall.n, NROWS);
  int want = 0;
  for (size_t i = 0; i < NROWS; i++) {
    const fc_eval_row_t *row = &r.rows[i];
    if (f->tmpl == FC_CHAT_CHATML) assert_string_equal(row->got, ANSWER);
    else assert_true(fc_eval_match(ANSWER, row->got)); /* the decoder may keep the space before </s> */
    assert_int_equal(row->correct, rows[i].correct);
    /* stopped at <|im_end|> (emitted, then nothing more), not at the 16-token limit */
    assert_int_equal(row->stopped, 1);
    assert_int_equal(row->generated, f->nanswer + 1);
    assert_string_equal(r.fam[row->family].name, rows[i].family ? rows[i].family : "all");
    want += rows[i].correct;
  }
  assert_int_equal(r.overall.correct, want);
  /* families in order of first appearance, "all" last */
  const char *order[] = {"arith", "convert", "facts", "strings", "all"};
  assert_int_equal(r.nfam, 5);
  for (int i = 0; i < 5; i++) assert_string_equal(r.fam[i].name, order[i]);
  assert_int_equal(fam(&r, "arith")->n, 3);
  assert_int_equal(fam(&r, "arith")->correct, 2);
  assert_int_equal(fam(&r, "convert")->correct, 1);
  assert_int_equal(fam(&r, "strings")->correct, 0);
  assert_int_equal(fam(&r, "facts")->correct, 0);
  assert_int_equal(fam(&r, "all")->correct, 1);
  assert_float_equal(fam(&r, "arith")->accuracy, 2.0 / 3, 1e-12);
  double macro = (2.0 / 3 + 0.5 + 0 + 0 + 1) / 5;
  assert_float_equal(r.macro_accuracy, macro, 1e-12);
  assert_int_equal(r.overall.generated, (long long)NROWS * (f->nanswer + 1));

  /* losses: per row, per family and overall against the independent recomputation */
  double fnll[5] = {0}, tot = 0;
  long long ftok[5] = {0}, ttok = 0;
  for (size_t i = 0; i < NROWS; i++) {
    double nll;
    int nt;
    reference_loss(f, f->dir, i, &nll, &nt);
    assert_int_equal(r.rows[i].tokens, nt);
    assert_float_equal(r.rows[i].loss, nll / nt, 1e-4 * (1 + nll / nt));
    int k = r.rows[i].family;
    fnll[k] += nll, ftok[k] += nt, tot += nll, ttok += nt;
  }
  for (int k = 0; k < 5; k++) {
    assert_int_equal(r.fam[k].tokens, ftok[k]);
    assert_float_equal(r.fam[k].loss, fnll[k] / ftok[k], 1e-4 * (1 + fnll[k] / ftok[k]));
  }
  assert_int_equal(r.overall.tokens, ttok);
  assert_float_equal(r.overall.loss, tot / ttok, 1e-4 * (1 + tot / ttok));
  /* the model is sure of its own answer and not of the others: the loss sees the difference */
  assert_true(r.rows[0].loss < 0.5);
  assert_true(r.rows[1].loss > 2.0);
  /* the items: one per row, named by line (the blank line after the fourth row counts) */
  assert_int_equal(r.nitems, NROWS);
  for (size_t i = 0; i < NROWS; i++) {
    char id[16];
    snprintf(id, sizeof id, "%zu", i + 1 + (i > 3));
    assert_string_equal(r.items[i].id, id);
    assert_int_equal(r.items[i].family, r.rows[i].family);
    assert_int_equal(r.items[i].correct, rows[i].correct);
    assert_int_equal(r.items[i].tokens, r.rows[i].tokens);
    assert_float_equal(r.items[i].loss, r.rows[i].loss, 1e-12);
  }
  fc_eval_result_free(&r);
}

static void test_truncation(void **state) {
  fix_t *f = *state;
  fc_eval_result_t r;
  run(f, f->dir, 1, 4, &r);
  for (size_t i = 0; i < NROWS; i++) {
    assert_int_equal(r.rows[i].generated, 1);
    assert_int_equal(r.rows[i].stopped, 0);
    assert_int_equal(r.rows[i].correct, 0);
    assert_true(strlen(r.rows[i].got) < strlen(ANSWER));
    assert_memory_equal(r.rows[i].got, ANSWER, strlen(r.rows[i].got));
  }
  assert_int_equal(r.overall.correct, 0);
  fc_eval_result_free(&r);
  /* exactly enough for the answer but not for <|im_end|>: right, yet not stopped */
  run(f, f->dir, f->nanswer, 3, &r);
  for (size_t i = 0; i < NROWS; i++) {
    assert_string_equal(r.rows[i].got, ANSWER);
    assert_int_equal(r.rows[i].stopped, 0);
    assert_int_equal(r.rows[i].correct, rows[i].correct);
  }
  fc_eval_result_free(&r);
}

static void same_results(const fc_eval_result_t *a, const fc_eval_result_t *b) {
  assert_int_equal(a->nrows, b->nrows);
  for (size_t i = 0; i < a->nrows; i++) {
    assert_string_equal(a->rows[i].got, b->rows[i].got);
    assert_int_equal(a->rows[i].generated, b->rows[i].generated);
    assert_int_equal(a->rows[i].correct, b->rows[i].correct);
    assert_float_equal(a->rows[i].loss, b->rows[i].loss, 1e-5 * (1 + a->rows[i].loss));
  }
  assert_int_equal(a->nfam, b->nfam);
  for (int k = 0; k < a->nfam; k++) {
    assert_int_equal(a->fam[k].correct, b->fam[k].correct);
    assert_int_equal(a->fam[k].tokens, b->fam[k].tokens);
  }
  assert_int_equal(a->overall.generated, b->overall.generated);
}

static void test_batch_size_independent(void **state) {
  fix_t *f = *state;
  for (int d = 0; d < 2; d++) {
    const char *dir = d ? f->rdir : f->dir;
    fc_eval_result_t a, b;
    run(f, dir, 6, 1, &a);
    run(f, dir, 6, 7, &b); /* a full batch and a partial one */
    same_results(&a, &b);
    if (d) {
      /* the random model's answers differ between prompts, so batching really is exercised */
      int differ = 0;
      for (size_t i = 1; i < a.nrows; i++) differ |= strcmp(a.rows[i].got, a.rows[0].got) != 0;
      assert_true(differ);
      double nll;
      int nt;
      reference_loss(f, dir, 5, &nll, &nt);
      assert_float_equal(b.rows[5].loss, nll / nt, 1e-4 * (1 + nll / nt));
    }
    fc_eval_result_free(&a);
    fc_eval_result_free(&b);
  }
}

static void test_limit(void **state) {
  fix_t *f = *state;
  fc_eval_opts_t o;
  fc_eval_opts_default(&o);
  o.limit = 1;
  fc_eval_result_t r;
  fc_err_t err = {0};
  const char *paths[] = {f->data, f->data}; /* two files: still one row per family */
  assert_int_equal(fc_eval_run(f->dir, paths, 2, &o, NULL, NULL, &r, &err), 0);
  assert_int_equal(r.nfam, 5);
  for (int k = 0; k < r.nfam; k++) assert_int_equal(r.fam[k].n, 1);
  assert_null(r.rows);
  fc_eval_result_free(&r);
  o.limit = 0;
  assert_int_equal(fc_eval_run(f->dir, paths, 2, &o, NULL, NULL, &r, &err), 0);
  assert_int_equal(r.overall.n, 2 * NROWS);
  assert_int_equal(fam(&r, "arith")->correct, 4);
  fc_eval_result_free(&r);
}

static int cancel_after_first(void *ctx, double fraction, const char *msg) {
  (void)msg;
  int *calls = ctx;
  assert_true(fraction > 0 && fraction <= 1);
  return ++*calls >= 1;
}

static void expect_error(const fix_t *f, const char *dir, const char *content, int code, const char *needle) {
  char path[128];
  snprintf(path, sizeof path, "%s/bad.jsonl", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  fputs(content, fp);
  fclose(fp);
  fc_eval_opts_t o;
  fc_eval_opts_default(&o);
  fc_eval_result_t r;
  fc_err_t err = {0};
  const char *paths[] = {path};
  int rc = fc_eval_run(dir, paths, 1, &o, NULL, NULL, &r, &err);
  if ((code ? rc != code : rc >= 0) || !strstr(err.msg, needle))
    fail_msg("wanted %d with '%s', got %d: %s", code, needle, rc, err.msg);
  assert_int_equal(r.nrows, 0);
  assert_int_equal(r.nfam, 0);
}

static void test_bad_input(void **state) {
  fix_t *f = *state;
  const char *good = "{\"conversations\":[{\"from\":\"human\",\"value\":\"q\"},{\"from\":\"gpt\",\"value\":\"a\"}]}\n";
  char buf[1024];
  snprintf(buf, sizeof buf, "%s{\"family\":\"arith\",\"conversations\":[{\"from\":\"human\",\"value\":\"q\"}]}\n", good);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:2: no gpt answer");
  /* families are whatever the data names, within a name length and a count */
  snprintf(buf, sizeof buf, "%s%s{\"family\":\"a-family-name-too-long\",%s", good, good, good + 1);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:3: family name 'a-family-name-too-long' is empty or longer");
  buf[0] = 0;
  for (int k = 0; k < FC_EVAL_MAX_FAMILIES; k++)
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "{\"family\":\"f%d\",%s", k, good + 1);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:8: more than 7 task families");
  snprintf(buf, sizeof buf, "{\"id\":3,%s", good + 1);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:1: \"id\" must be a string");
  snprintf(buf, sizeof buf, "{\"family\":7,%s", good + 1);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:1: \"family\" must be a string");
  expect_error(f, f->dir, "{\"conversations\":[{\"from\":\"gpt\",\"value\":\"a\"}]}\n", FC_EFORMAT, "no human turn");
  expect_error(f, f->dir, "{\"conversations\":\n", FC_EFORMAT, "bad.jsonl:1: not JSON");
  expect_error(f, f->dir, "\n  \n", FC_EFORMAT, "no rows");
  /* models that are not there or not complete */
  expect_error(f, "/nonexistent/model", good, 0, "/nonexistent/model");
  char path[128];
  snprintf(path, sizeof path, "%s/random/tokenizer.json", f->dir);
  char moved[140];
  snprintf(moved, sizeof moved, "%s.away", path);
  assert_int_equal(rename(path, moved), 0);
  fc_err_t err = {0};
  fc_eval_opts_t o;
  fc_eval_opts_default(&o);
  fc_eval_result_t r;
  const char *paths[] = {f->data};
  assert_true(fc_eval_run(f->rdir, paths, 1, &o, NULL, NULL, &r, &err) < 0);
  assert_non_null(strstr(err.msg, "random"));
  assert_int_equal(rename(moved, path), 0);
  /* a missing data file */
  const char *none[] = {"/nonexistent/rows.jsonl"};
  assert_true(fc_eval_run(f->dir, none, 1, &o, NULL, NULL, &r, &err) < 0);
  assert_non_null(strstr(err.msg, "/nonexistent/rows.jsonl"));
  /* cancelled from the progress callback after the first batch */
  o.batch_size = 2;
  int calls = 0;
  assert_int_equal(fc_eval_run(f->dir, paths, 1, &o, cancel_after_first, &calls, &r, &err), FC_ECANCEL);
  assert_int_equal(calls, 1);
}

/* Rows with several right answers ("valid"): correct when the greedy answer is any of them; the
 * loss is -log of the summed sequence probabilities of the valid answers, per gold token,
 * against the same recomputation as above; a row without "valid" is scored as before; a gold
 * answer outside its valid list is refused. */
static void test_valid_answers(void **state) {
  fix_t *f = *state;
  static const struct {
    const char *q, *gold, *valid[3];
    int correct;
  } vr[] = {
      {"What is 1 + 1?", "4", {"4", ANSWER, NULL}, 1}, /* the model's answer is valid, not the gold */
      {"What is 2 + 2?", "5", {"4", "5", NULL}, 0},
      {"What is 3 + 3?", "6", {NULL, NULL, NULL}, 0}, /* no list: the gold answer alone */
      {"What is 4 + 4?", ANSWER, {ANSWER, NULL, NULL}, 1},
  };
  enum { NV = sizeof vr / sizeof *vr };
  char path[128];
  snprintf(path, sizeof path, "%s/valid.jsonl", f->dir);
  FILE *fp = fopen(path, "w");
  assert_non_null(fp);
  for (int i = 0; i < NV; i++) {
    json_t *o = json_object(), *conv = json_array(), *va = json_array();
    for (int k = 0; k < 3 && vr[i].valid[k]; k++) json_array_append_new(va, json_string(vr[i].valid[k]));
    if (json_array_size(va)) json_object_set(o, "valid", va);
    json_decref(va);
    json_object_set_new(o, "family", json_string("pick"));
    json_array_append_new(conv, json_pack("{s:s,s:s}", "from", "human", "value", vr[i].q));
    json_array_append_new(conv, json_pack("{s:s,s:s}", "from", "gpt", "value", vr[i].gold));
    json_object_set_new(o, "conversations", conv);
    char *text = json_dumps(o, JSON_COMPACT);
    fprintf(fp, "%s\n", text);
    free(text);
    json_decref(o);
  }
  fclose(fp);
  fc_eval_opts_t o;
  fc_eval_opts_default(&o);
  o.keep_rows = 1;
  o.batch_size = 3; /* rows with and without lists in one batch, and a batch split */
  fc_eval_result_t r;
  fc_err_t err = {0};
  const char *paths[] = {path};
  if (fc_eval_run(f->dir, paths, 1, &o, NULL, NULL, &r, &err)) fail_msg("%s", err.msg);
  assert_int_equal(r.nrows, NV);
  for (int i = 0; i < NV; i++) {
    assert_int_equal(r.rows[i].correct, vr[i].correct);
    double gold_nll, p = 0;
    int gold_nt, nt;
    reference_loss_qa(f, f->dir, vr[i].q, vr[i].gold, &gold_nll, &gold_nt);
    if (!vr[i].valid[0]) p = exp(-gold_nll);
    for (int k = 0; k < 3 && vr[i].valid[k]; k++) {
      double nll;
      reference_loss_qa(f, f->dir, vr[i].q, vr[i].valid[k], &nll, &nt);
      p += exp(-nll);
    }
    double want = -log(p) / gold_nt;
    assert_int_equal(r.rows[i].tokens, gold_nt);
    assert_float_equal(r.rows[i].loss, want, 1e-4 * (1 + want));
  }
  /* the first row: the set holds the model's own answer, so its loss is far below the gold's */
  double gold_nll;
  int gold_nt;
  reference_loss_qa(f, f->dir, vr[0].q, vr[0].gold, &gold_nll, &gold_nt);
  assert_true(r.rows[0].loss < 0.5 && gold_nll / gold_nt > 2.0);
  assert_int_equal(r.fam[0].correct, 2);
  fc_eval_result_free(&r);
  const char *tail = ",\"conversations\":[{\"from\":\"human\",\"value\":\"q\"},{\"from\":\"gpt\",\"value\":\"a\"}]}\n";
  char buf[512];
  snprintf(buf, sizeof buf, "{\"valid\":[\"b\",\"c\"]%s", tail);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:1: the gpt answer is not among the \"valid\" ones");
  snprintf(buf, sizeof buf, "{\"valid\":[]%s", tail);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:1: \"valid\" must be a list");
  snprintf(buf, sizeof buf, "{\"valid\":[\"a\",3]%s", tail);
  expect_error(f, f->dir, buf, FC_EFORMAT, "bad.jsonl:1: \"valid\" holds something that is not a string");
}

static void test_match(void **state) {
  (void)state;
  assert_true(fc_eval_match("42", " 42\n"));
  assert_false(fc_eval_match("42", "420"));
  assert_false(fc_eval_match("Ralo", "ralo"));
  assert_true(fc_eval_match("", "  "));
}

/* A result of one family "f" with n items "i0".."i{n-1}": correct where the pattern says, loss
 * base + the item's index in units of 1e-3, two tokens each. */
static void synth_result(fc_eval_result_t *r, int n, int (*correct)(int), double base) {
  memset(r, 0, sizeof *r);
  r->nfam = 1;
  snprintf(r->fam[0].name, sizeof r->fam[0].name, "f");
  r->items = calloc((size_t)n, sizeof *r->items);
  r->nitems = (size_t)n;
  for (int i = 0; i < n; i++) {
    char id[16];
    snprintf(id, sizeof id, "i%d", i);
    r->items[i] = (fc_eval_item_t){strdup(id), 0, correct(i), base + 1e-3 * i, 2};
    r->fam[0].correct += correct(i);
  }
  r->fam[0].n = n;
  r->fam[0].accuracy = r->macro_accuracy = (double)r->fam[0].correct / n;
}
static int every_other(int i) { return i % 2; }
static int all_but_tenth(int i) { return i % 10 != 0; }
static int none(int i) { return (void)i, 0; }

static void test_bootstrap(void **state) {
  (void)state;
  fc_eval_result_t half, most, zero, half2;
  synth_result(&half, 200, every_other, 1.0);
  synth_result(&most, 200, all_but_tenth, 0.5);
  synth_result(&zero, 200, none, 1.0);
  synth_result(&half2, 200, every_other, 1.0);
  /* p = 0.5 over 200 items: the interval is about +-1.96 * sqrt(0.25 / 200) = +-0.069 */
  double v, lo, hi;
  assert_int_equal(fc_eval_boot_ci(&half, "f", 0, &v, &lo, &hi), 200);
  assert_float_equal(v, 0.5, 1e-12);
  assert_true(fabs((0.5 - lo) - 0.069) < 0.012 && fabs((hi - 0.5) - 0.069) < 0.012);
  /* the macro average of one family is that family; the loss is the token-weighted mean */
  double v2, lo2, hi2;
  fc_eval_boot_ci(&half, NULL, 0, &v2, &lo2, &hi2);
  assert_true(v2 == v && lo2 == lo && hi2 == hi);
  fc_eval_boot_ci(&half, "f", 1, &v, &lo, &hi);
  assert_float_equal(v, 1.0 + 1e-3 * 199 / 2, 1e-12);
  assert_true(lo < v && v < hi);
  /* no spread, no interval */
  fc_eval_boot_ci(&zero, "f", 0, &v, &lo, &hi);
  assert_true(v == 0 && lo == 0 && hi == 0);
  assert_int_equal(fc_eval_boot_ci(&zero, "nope", 0, &v, &lo, &hi), 0);
  assert_true(isnan(v));
  /* paired: identical items give exactly zero; 90% against 50% is far outside the noise */
  assert_int_equal(fc_eval_boot_paired(&half, &half2, "f", 0, &v, &lo, &hi), 200);
  assert_true(v == 0 && lo == 0 && hi == 0);
  fc_eval_boot_paired(&most, &half, "f", 0, &v, &lo, &hi);
  assert_float_equal(v, 0.4, 1e-12);
  assert_true(lo > 0.3 && hi < 0.5);
  fc_eval_boot_paired(&most, &half, NULL, 1, &v, &lo, &hi);
  assert_float_equal(v, -0.5, 1e-12);
  assert_true(fabs(lo + 0.5) < 1e-9 && fabs(hi + 0.5) < 1e-9); /* the same difference on every item */
  /* pairs are by id: items the other model lacks are left out */
  free(half2.items[0].id);
  half2.items[0].id = strdup("other");
  assert_int_equal(fc_eval_boot_paired(&half, &half2, "f", 0, &v, &lo, &hi), 199);

  /* the table marks what the paired test finds, and prints the same text twice */
  const char *names[] = {"base", "better", "same"};
  const fc_eval_result_t *rs[] = {&half, &most, &half2};
  char *buf[2];
  size_t len[2];
  for (int k = 0; k < 2; k++) {
    FILE *mem = open_memstream(&buf[k], &len[k]);
    fc_eval_print_table(mem, names, rs, 3, 0, -1);
    fclose(mem);
  }
  assert_string_equal(buf[0], buf[1]);
  assert_non_null(strstr(buf[0], "f (n=200)"));
  fc_eval_boot_ci(&most, "f", 0, &v, &lo, &hi);
  char cell[64];
  snprintf(cell, sizeof cell, "better  %.1f [%.1f,%.1f] + ", 100 * v, 100 * lo, 100 * hi);
  assert_non_null(strstr(buf[0], cell));
  fc_eval_boot_ci(&half2, "f", 1, &v, &lo, &hi);
  snprintf(cell, sizeof cell, "%.3f [%.3f,%.3f]   ", v, lo, hi);
  assert_non_null(strstr(strstr(buf[0], "\nsame"), cell)); /* no mark: not different */
  assert_non_null(strstr(buf[0], "+/- better/worse than base"));
  free(buf[0]), free(buf[1]);
  fc_eval_result_free(&half), fc_eval_result_free(&most), fc_eval_result_free(&zero), fc_eval_result_free(&half2);
}

static void test_table_and_json(void **state) {
  fix_t *f = *state;
  fc_eval_result_t a, b;
  run(f, f->dir, 16, 32, &a);
  run(f, f->rdir, 4, 32, &b);
  const char *names[] = {"constant", "random-model"};
  const fc_eval_result_t *rs[] = {&a, &b};
  char *buf;
  size_t len;
  FILE *mem = open_memstream(&buf, &len);
  fc_eval_print_table(mem, names, rs, 2, 0, -1);
  fclose(mem);
  /* two tables of three lines of equal width, titled, then the legend */
  int lines = 0;
  size_t w0 = 0;
  for (char *p = buf, *nl; (nl = strchr(p, '\n')) && lines < 4; p = nl + 1, lines++) {
    if (lines == 1) w0 = (size_t)(nl - p);
    else if (lines > 1) assert_int_equal((size_t)(nl - p), w0);
  }
  assert_non_null(strstr(buf, "arith (n=3)"));
  assert_non_null(strstr(buf, "Answer loss"));
  double v, lo, hi;
  fc_eval_boot_ci(&a, "arith", 0, &v, &lo, &hi);
  assert_float_equal(v, 2.0 / 3, 1e-12);
  char cell[64];
  snprintf(cell, sizeof cell, "66.7 [%.1f,%.1f]", 100 * lo, 100 * hi);
  assert_non_null(strstr(buf, cell));
  fc_eval_boot_ci(&a, NULL, 1, &v, &lo, &hi);
  assert_float_equal(v, a.macro_loss, 1e-9);
  snprintf(cell, sizeof cell, "%.3f [%.3f,%.3f]", a.macro_loss, lo, hi);
  assert_non_null(strstr(buf, cell));
  assert_non_null(strstr(buf, "\nconstant "));
  free(buf);

  char path[128];
  snprintf(path, sizeof path, "%s/results.json", f->dir);
  fc_err_t err = {0};
  snprintf(a.role, sizeof a.role, "pivot");
  assert_int_equal(fc_eval_write_json_file(path, names, rs, 2, &err), 0);
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  assert_non_null(root);
  json_t *m0 = json_array_get(json_object_get(root, "models"), 0);
  assert_string_equal(json_string_value(json_object_get(m0, "model")), "constant");
  assert_string_equal(json_string_value(json_object_get(m0, "role")), "pivot");
  json_t *ar = json_object_get(json_object_get(m0, "families"), "arith");
  assert_int_equal(json_integer_value(json_object_get(ar, "correct")), 2);
  assert_int_equal(json_integer_value(json_object_get(ar, "n")), 3);
  assert_float_equal(json_real_value(json_object_get(ar, "loss")), a.fam[0].loss, 1e-6);
  assert_int_equal(json_integer_value(json_object_get(json_object_get(m0, "overall"), "correct")), a.overall.correct);
  assert_int_equal(json_array_size(json_object_get(root, "models")), 2);
  /* items: id, family, correct, loss; read back they are the same */
  json_t *items = json_object_get(m0, "items");
  assert_int_equal(json_array_size(items), NROWS);
  json_t *i0 = json_array_get(items, 0);
  assert_string_equal(json_string_value(json_object_get(i0, "id")), "1");
  assert_string_equal(json_string_value(json_object_get(i0, "family")), "arith");
  assert_true(json_is_true(json_object_get(i0, "correct")));
  assert_float_equal(json_real_value(json_object_get(i0, "loss")), a.items[0].loss, 1e-6);
  fc_eval_result_t back;
  const char *name;
  assert_int_equal(fc_eval_result_from_json(m0, &name, &back), 0);
  assert_string_equal(name, "constant");
  assert_string_equal(back.role, "pivot");
  assert_int_equal(back.nitems, a.nitems);
  for (size_t i = 0; i < a.nitems; i++) {
    assert_string_equal(back.items[i].id, a.items[i].id);
    assert_string_equal(back.fam[back.items[i].family].name, a.fam[a.items[i].family].name);
    assert_int_equal(back.items[i].correct, a.items[i].correct);
    assert_int_equal(back.items[i].tokens, a.items[i].tokens);
  }
  fc_eval_result_free(&back);
  json_decref(root);
  /* the one-model fragment is the same object */
  mem = open_memstream(&buf, &len);
  assert_int_equal(fc_eval_write_json(mem, "constant", &a), 0);
  fclose(mem);
  root = json_loads(buf, 0, &je);
  assert_non_null(root);
  assert_string_equal(json_string_value(json_object_get(root, "model")), "constant");
  assert_float_equal(json_real_value(json_object_get(root, "macro_accuracy")), a.macro_accuracy, 1e-7);
  json_decref(root);
  free(buf);
  fc_eval_result_free(&a);
  fc_eval_result_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constant_model),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_batch_size_independent),
      cmocka_unit_test(test_limit),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_valid_answers),
      cmocka_unit_test(test_table_and_json),
      cmocka_unit_test(test_match),
      cmocka_unit_test(test_bootstrap),
  };
  /* Llama-2 style: SentencePiece tokenizer, [INST] template, </s> ends the turn */
  const struct CMUnitTest sp_tests[] = {
      cmocka_unit_test(test_constant_model),
      cmocka_unit_test(test_batch_size_independent),
  };
  int failed = cmocka_run_group_tests_name("chatml", tests, setup_bytelevel, teardown);
  return failed + cmocka_run_group_tests_name("llama2", sp_tests, setup_sentencepiece, teardown);
}
