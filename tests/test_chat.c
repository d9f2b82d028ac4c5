/* Chat template tests: exact rendered text for ChatML and Llama-2, assistant spans, and the
 * token mask built from real tokenizers' offsets covering exactly the response tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_chat.h"
#include "fc_tok.h"

static fc_tok_t *load(const char *name) {
  const char *d = getenv("FC_FIXTURES");
  char path[1024];
  snprintf(path, sizeof path, "%s/tok/%s", d ? d : "tests/fixtures", name);
  fc_tok_t *t;
  fc_err_t err = {0};
  int rc = fc_tok_load(&t, path, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, 0);
  return t;
}

static const char *conv_json =
    "{\"conversations\":[{\"from\":\"system\",\"value\":\"Be brief.\"},"
    "{\"from\":\"human\",\"value\":\"What is 2+2?\"},{\"from\":\"gpt\",\"value\":\"4\"},"
    "{\"from\":\"human\",\"value\":\"Привет 😀\"},{\"from\":\"gpt\",\"value\":\" Hello there!\\n\"}]}";

static void test_render_chatml(void **state) {
  (void)state;
  fc_chat_conv_t c;
  fc_err_t err = {0};
  assert_int_equal(fc_chat_parse_sharegpt(conv_json, strlen(conv_json), &c, &err), 0);
  assert_int_equal(c.n, 5);
  char *text;
  size_t len, ns;
  fc_chat_span_t *sp;
  assert_int_equal(fc_chat_render(FC_CHAT_CHATML, c.msgs, c.n, &text, &len, &sp, &ns, &err), 0);
  const char *want = "<|im_start|>system\nBe brief.<|im_end|>\n"
                     "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                     "<|im_start|>assistant\n4<|im_end|>\n"
                     "<|im_start|>user\nПривет 😀<|im_end|>\n"
                     "<|im_start|>assistant\n Hello there!\n<|im_end|>\n";
  assert_string_equal(text, want);
  assert_int_equal(len, strlen(want));
  assert_int_equal(ns, 2);
  assert_int_equal(sp[0].end - sp[0].start, strlen("4<|im_end|>"));
  assert_memory_equal(text + sp[0].start, "4<|im_end|>", sp[0].end - sp[0].start);
  assert_memory_equal(text + sp[1].start, " Hello there!\n<|im_end|>", sp[1].end - sp[1].start);

  /* mask over Qwen tokens: the masked tokens are exactly the responses and their <|im_end|> */
  fc_tok_t *t = load("qwen3");
  assert_int_equal(fc_chat_template_for(t), FC_CHAT_CHATML);
  int32_t *ids;
  uint32_t *off;
  size_t n;
  assert_int_equal(fc_tok_encode(t, text, len, FC_TOK_PARSE_SPECIAL, &ids, &off, &n, &err), 0);
  uint8_t *mask = fc_xmalloc(n);
  fc_chat_mask_tokens(sp, ns, off, n, mask);
  int32_t *sel = fc_xmalloc(n * sizeof *sel);
  size_t k = 0, nend = 0;
  for (size_t i = 0; i < n; i++)
    if (mask[i]) {
      sel[k++] = ids[i];
      nend += ids[i] == fc_tok_piece_id(t, "<|im_end|>");
    }
  assert_int_equal(nend, 2);
  char *dec;
  assert_int_equal(fc_tok_decode(t, sel, k, 0, &dec, &err), 0);
  assert_string_equal(dec, "4<|im_end|> Hello there!\n<|im_end|>");
  free(dec);
  free(sel);
  free(mask);
  free(ids);
  free(off);
  fc_tok_destroy(&t);
  free(text);
  free(sp);
  fc_chat_conv_free(&c);
}

static void test_render_llama2(void **state) {
  (void)state;
  fc_chat_conv_t c;
  fc_err_t err = {0};
  assert_int_equal(fc_chat_parse_sharegpt(conv_json, strlen(conv_json), &c, &err), 0);
  char *text;
  size_t len, ns;
  fc_chat_span_t *sp;
  assert_int_equal(fc_chat_render(FC_CHAT_LLAMA2, c.msgs, c.n, &text, &len, &sp, &ns, &err), 0);
  const char *want = "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4 </s>"
                     "<s>[INST] Привет 😀 [/INST] Hello there! </s>";
  assert_string_equal(text, want);
  assert_int_equal(ns, 2);
  assert_memory_equal(text + sp[0].start, " 4 </s>", sp[0].end - sp[0].start);
  assert_memory_equal(text + sp[1].start, " Hello there! </s>", sp[1].end - sp[1].start);

  fc_tok_t *t = load("llama2");
  assert_int_equal(fc_chat_template_for(t), FC_CHAT_LLAMA2);
  int32_t *ids;
  uint32_t *off;
  size_t n;
  assert_int_equal(fc_tok_encode(t, text, len, FC_TOK_PARSE_SPECIAL, &ids, &off, &n, &err), 0);
  assert_int_equal(ids[0], 1); /* the template's own <s>, not doubled */
  assert_true(ids[1] != 1);
  uint8_t *mask = fc_xmalloc(n);
  fc_chat_mask_tokens(sp, ns, off, n, mask);
  /* masked tokens' texts, concatenated, are the spans' texts (▁ carries the space) */
  char got[256];
  size_t k = 0, neos = 0;
  for (size_t i = 0; i < n; i++)
    if (mask[i]) {
      k += fc_tok_token_text(t, ids[i], got + k, sizeof got - k);
      neos += ids[i] == 2;
    }
  assert_int_equal(neos, 2);
  const char *want_masked = " 4 </s> Hello there! </s>";
  assert_int_equal(k, strlen(want_masked));
  assert_memory_equal(got, want_masked, k);
  free(mask);
  free(ids);
  free(off);
  fc_tok_destroy(&t);
  free(text);
  free(sp);

  /* Llama-2 refuses two user turns in a row */
  fc_chat_msg_t bad[] = {{FC_ROLE_USER, "a"}, {FC_ROLE_USER, "b"}};
  assert_int_equal(fc_chat_render(FC_CHAT_LLAMA2, bad, 2, &text, &len, &sp, &ns, &err), FC_EFORMAT);
  fc_chat_conv_free(&c);
}

static void test_prompt_and_errors(void **state) {
  (void)state;
  char *text;
  size_t len;
  fc_err_t err = {0};
  assert_int_equal(fc_chat_render_prompt(FC_CHAT_CHATML, NULL, "Hi", &text, &len, &err), 0);
  assert_string_equal(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  assert_int_equal(len, strlen(text));
  free(text);
  assert_int_equal(fc_chat_render_prompt(FC_CHAT_LLAMA2, "S", " Hi ", &text, &len, &err), 0);
  assert_string_equal(text, "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi [/INST]");
  free(text);

  fc_chat_conv_t c;
  static const char *bad[] = {"", "{}", "[]", "{\"conversations\":[{\"from\":\"alien\",\"value\":\"x\"}]}",
                              "{\"conversations\":[{\"from\":\"human\"}]}", "{\"conversations\":3}"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(fc_chat_parse_sharegpt(bad[i], strlen(bad[i]), &c, &err), FC_EFORMAT);
    assert_null(c.msgs);
  }
  const char *msgs = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
  assert_int_equal(fc_chat_parse_sharegpt(msgs, strlen(msgs), &c, &err), 0);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.msgs[0].role, FC_ROLE_USER);
  fc_chat_conv_free(&c);

  fc_chat_template_t tt;
  assert_int_equal(fc_chat_template_parse("chatml", &tt), 0);
  assert_int_equal(tt, FC_CHAT_CHATML);
  assert_int_equal(fc_chat_template_parse("nope", &tt), -1);

  /* mask edge cases: empty spans list, tokens exactly at span ends */
  fc_chat_span_t sp[] = {{2, 4}, {6, 7}};
  uint32_t off[] = {0, 2, 3, 4, 5, 6, 7};
  uint8_t mask[7];
  fc_chat_mask_tokens(sp, 2, off, 7, mask);
  uint8_t want[] = {0, 1, 1, 0, 0, 1, 0};
  assert_memory_equal(mask, want, 7);
  fc_chat_mask_tokens(NULL, 0, off, 7, mask);
  for (int i = 0; i < 7; i++) assert_int_equal(mask[i], 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render_chatml),
      cmocka_unit_test(test_render_llama2),
      cmocka_unit_test(test_prompt_and_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
