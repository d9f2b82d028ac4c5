/* Chat templates (ChatML, Llama-2) for ShareGPT conversations, with assistant spans. The
 * Llama-2 layout follows the template shipped with Llama-2-chat in transformers: content is
 * stripped, the system prompt goes inside the first [INST] in <<SYS>> markers. */
#include "fc_chat.h"

#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void puts_(fc_sbuf_t *s, const char *p) { fc_sbuf_put(s, p, strlen(p)); }

/* Python's str.strip() for the ASCII whitespace chat data has. */
static void put_stripped(fc_sbuf_t *s, const char *p) {
  size_t a = 0, e = strlen(p);
  while (a < e && (p[a] == ' ' || p[a] == '\t' || p[a] == '\n' || p[a] == '\r')) a++;
  while (e > a && (p[e - 1] == ' ' || p[e - 1] == '\t' || p[e - 1] == '\n' || p[e - 1] == '\r')) e--;
  fc_sbuf_put(s, p + a, e - a);
}

fc_chat_template_t fc_chat_template_for(const fc_tok_t *tok) {
  return fc_tok_piece_id(tok, "<|im_start|>") >= 0 ? FC_CHAT_CHATML : FC_CHAT_LLAMA2;
}

const char *fc_chat_template_name(fc_chat_template_t t) {
  return t == FC_CHAT_CHATML ? "chatml" : t == FC_CHAT_LLAMA2 ? "llama2" : "auto";
}

int fc_chat_template_parse(const char *name, fc_chat_template_t *out) {
  if (!strcmp(name, "chatml")) *out = FC_CHAT_CHATML;
  else if (!strcmp(name, "llama2") || !strcmp(name, "llama-2")) *out = FC_CHAT_LLAMA2;
  else if (!strcmp(name, "auto")) *out = FC_CHAT_AUTO;
  else return -1;
  return 0;
}

int fc_chat_role_parse(const char *from, fc_chat_role_t *out) {
  if (!strcmp(from, "human") || !strcmp(from, "user")) *out = FC_ROLE_USER;
  else if (!strcmp(from, "gpt") || !strcmp(from, "assistant") || !strcmp(from, "chatgpt")) *out = FC_ROLE_ASSISTANT;
  else if (!strcmp(from, "system")) *out = FC_ROLE_SYSTEM;
  else return -1;
  return 0;
}

void fc_chat_conv_free(fc_chat_conv_t *c) {
  for (size_t i = 0; i < c->n; i++) free((char *)c->msgs[i].text);
  free(c->msgs);
  c->msgs = NULL;
  c->n = 0;
}

int fc_chat_parse_sharegpt(const char *json, size_t len, fc_chat_conv_t *c, fc_err_t *err) {
  c->msgs = NULL;
  c->n = 0;
  json_error_t je;
  json_t *root = json_loadb(json, len, 0, &je);
  if (!root) return fc_err_set(err, FC_EFORMAT, "conversation: %s", je.text);
  json_t *turns = root;
  if (json_is_object(root)) {
    turns = json_object_get(root, "conversations");
    if (!turns) turns = json_object_get(root, "messages");
  }
  if (!json_is_array(turns) || !json_array_size(turns)) {
    json_decref(root);
    return fc_err_set(err, FC_EFORMAT, "conversation: no 'conversations' array of turns");
  }
  c->msgs = fc_xcalloc(json_array_size(turns), sizeof *c->msgs);
  size_t i;
  json_t *t;
  json_array_foreach(turns, i, t) {
    json_t *from = json_object_get(t, "from"), *val = json_object_get(t, "value");
    if (!from) from = json_object_get(t, "role");
    if (!val) val = json_object_get(t, "content");
    fc_chat_role_t role;
    if (!json_is_string(from) || !json_is_string(val) || fc_chat_role_parse(json_string_value(from), &role)) {
      json_decref(root);
      fc_chat_conv_free(c);
      return fc_err_set(err, FC_EFORMAT, "conversation turn %zu: needs 'from' (human, gpt or system) and 'value'", i);
    }
    if (memchr(json_string_value(val), 0, json_string_length(val))) {
      json_decref(root);
      fc_chat_conv_free(c);
      return fc_err_set(err, FC_EFORMAT, "conversation turn %zu: text contains a NUL", i);
    }
    c->msgs[c->n].role = role;
    c->msgs[c->n].text = fc_xstrdup(json_string_value(val));
    c->n++;
  }
  json_decref(root);
  return 0;
}

static void add_span(fc_chat_span_t **spans, size_t *n, size_t s, size_t e) {
  *spans = fc_xrealloc(*spans, (*n + 1) * sizeof **spans);
  (*spans)[*n].start = s;
  (*spans)[*n].end = e;
  (*n)++;
}

int fc_chat_render(fc_chat_template_t tmpl, const fc_chat_msg_t *msgs, size_t n, char **text, size_t *len,
                   fc_chat_span_t **spans, size_t *nspans, fc_err_t *err) {
  assert(tmpl == FC_CHAT_CHATML || tmpl == FC_CHAT_LLAMA2);
  *text = NULL;
  *len = 0;
  *spans = NULL;
  *nspans = 0;
  fc_sbuf_t s = {0};
  puts_(&s, "");
  fc_chat_span_t *sp = NULL;
  size_t nsp = 0;
  if (tmpl == FC_CHAT_CHATML) {
    static const char *names[] = {"system", "user", "assistant"};
    for (size_t i = 0; i < n; i++) {
      puts_(&s, "<|im_start|>");
      puts_(&s, names[msgs[i].role]);
      puts_(&s, "\n");
      size_t st = s.n;
      puts_(&s, msgs[i].text);
      puts_(&s, "<|im_end|>");
      if (msgs[i].role == FC_ROLE_ASSISTANT) add_span(&sp, &nsp, st, s.n);
      puts_(&s, "\n");
    }
  } else {
    size_t i = 0;
    const char *system = NULL;
    if (n && msgs[0].role == FC_ROLE_SYSTEM) system = msgs[i++].text;
    int want_user = 1;
    for (; i < n; i++) {
      fc_chat_role_t r = msgs[i].role;
      if (r == FC_ROLE_SYSTEM || (r == FC_ROLE_USER) != want_user) {
        free(s.b);
        free(sp);
        return fc_err_set(err, FC_EFORMAT,
                          "the llama2 template needs user/assistant turns alternating from a user turn "
                          "(a system turn only first); turn %zu breaks that", i);
      }
      if (r == FC_ROLE_USER) {
        puts_(&s, "<s>[INST] ");
        if (system) {
          puts_(&s, "<<SYS>>\n");
          put_stripped(&s, system);
          puts_(&s, "\n<</SYS>>\n\n");
          system = NULL;
        }
        put_stripped(&s, msgs[i].text);
        puts_(&s, " [/INST]");
      } else {
        size_t st = s.n; /* the space: SentencePiece pieces carry it at their start */
        puts_(&s, " ");
        put_stripped(&s, msgs[i].text);
        puts_(&s, " </s>");
        add_span(&sp, &nsp, st, s.n);
      }
      want_user = !want_user;
    }
  }
  *text = s.b;
  *len = s.n;
  *spans = sp;
  *nspans = nsp;
  return 0;
}

int fc_chat_render_prompt(fc_chat_template_t tmpl, const char *system, const char *user, char **text,
                          size_t *len, fc_err_t *err) {
  fc_chat_msg_t m[2];
  size_t n = 0;
  if (system) m[n++] = (fc_chat_msg_t){FC_ROLE_SYSTEM, system};
  m[n++] = (fc_chat_msg_t){FC_ROLE_USER, user};
  fc_chat_span_t *spans;
  size_t ns;
  int rc = fc_chat_render(tmpl, m, n, text, len, &spans, &ns, err);
  if (rc) return rc;
  free(spans);
  fc_sbuf_t s = {*text, *len, *len + 1};
  if (tmpl == FC_CHAT_CHATML) puts_(&s, "<|im_start|>assistant\n");
  *text = s.b;
  *len = s.n;
  return 0;
}

void fc_chat_mask_tokens(const fc_chat_span_t *spans, size_t nspans, const uint32_t *offsets, size_t n,
                         uint8_t *mask) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    while (k < nspans && spans[k].end <= offsets[i]) k++;
    mask[i] = k < nspans && offsets[i] >= spans[k].start && offsets[i] < spans[k].end;
  }
}
