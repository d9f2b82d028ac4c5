/* Chat templates: renders ShareGPT conversations to the text a chat model was trained on
 * (ChatML or Llama-2 [INST]), with the byte spans of assistant responses so a loss mask over
 * tokens can be built from fc_tok_encode offsets. */
#ifndef FC_CHAT_H
#define FC_CHAT_H

#include <stddef.h>
#include <stdint.h>

#include "fc_tok.h"
#include "fc_util.h"

typedef enum { FC_CHAT_AUTO, FC_CHAT_CHATML, FC_CHAT_LLAMA2 } fc_chat_template_t;
typedef enum { FC_ROLE_SYSTEM, FC_ROLE_USER, FC_ROLE_ASSISTANT } fc_chat_role_t;

typedef struct fc_chat_msg {
  fc_chat_role_t role;
  const char *text; /* UTF-8, NUL-terminated */
} fc_chat_msg_t;

/* [start, end) byte range of an assistant response in the rendered text, including the
 * closing end-of-turn token (<|im_end|> or </s>). For Llama-2 the span starts at the space
 * after [/INST], because SentencePiece tokens carry that space (▁) at their start. */
typedef struct fc_chat_span {
  size_t start, end;
} fc_chat_span_t;

/* ChatML if the tokenizer has <|im_start|>, else Llama-2. */
fc_chat_template_t fc_chat_template_for(const fc_tok_t *tok);
const char *fc_chat_template_name(fc_chat_template_t t);
/* "chatml", "llama2" or "auto"; returns -1 if unknown. */
int fc_chat_template_parse(const char *name, fc_chat_template_t *out);

/* "human"/"user" -> user, "gpt"/"assistant" -> assistant, "system" -> system; -1 otherwise. */
int fc_chat_role_parse(const char *from, fc_chat_role_t *out);

/* A parsed ShareGPT record ({"conversations": [{"from": ..., "value": ...}, ...]}); owns the
 * strings. Also accepts a bare array of turns and "messages" with role/content. */
typedef struct fc_chat_conv {
  fc_chat_msg_t *msgs;
  size_t n;
} fc_chat_conv_t;
int fc_chat_parse_sharegpt(const char *json, size_t len, fc_chat_conv_t *conv, fc_err_t *err);
void fc_chat_conv_free(fc_chat_conv_t *conv);

/* Renders msgs with tmpl (not AUTO). *text is NUL-terminated (caller frees); *spans (caller
 * frees, may be NULL when none) get the assistant responses. Encode the text with
 * FC_TOK_PARSE_SPECIAL and without FC_TOK_ADD_SPECIAL: the template writes bos itself.
 * Llama-2 needs user/assistant alternation (a system message only first). */
int fc_chat_render(fc_chat_template_t tmpl, const fc_chat_msg_t *msgs, size_t n, char **text,
                   size_t *len, fc_chat_span_t **spans, size_t *nspans, fc_err_t *err);
/* A generation prompt: optional system message, one user turn, and the open assistant header. */
int fc_chat_render_prompt(fc_chat_template_t tmpl, const char *system, const char *user,
                          char **text, size_t *len, fc_err_t *err);
/* mask[i] = 1 if token i (starting at byte offsets[i]) starts inside a span, else 0. Spans
 * must be sorted (as fc_chat_render gives them). */
void fc_chat_mask_tokens(const fc_chat_span_t *spans, size_t nspans, const uint32_t *offsets,
                         size_t n, uint8_t *mask);

#endif
