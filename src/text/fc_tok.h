/* Hugging Face tokenizers in C: loads a tokenizer.json with a BPE model (byte-level as in
 * GPT-2/Llama-3/Qwen, or SentencePiece-style as in Llama-2/Mistral) and encodes/decodes with
 * the same ids the Rust `tokenizers` library produces. */
#ifndef FC_TOK_H
#define FC_TOK_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

typedef struct fc_tok fc_tok_t;
typedef enum { FC_TOK_BYTELEVEL, FC_TOK_SENTENCEPIECE } fc_tok_kind_t;

enum {
  FC_TOK_ADD_SPECIAL = 1u << 0,   /* add bos/eos as the post-processor / tokenizer_config says */
  FC_TOK_PARSE_SPECIAL = 1u << 1, /* match special added tokens in the text (else: plain text) */
};

/* path = a tokenizer.json, or a model directory containing one. tokenizer_config.json beside
 * it (if present) supplies bos/eos names and add_bos_token/add_eos_token. */
int fc_tok_load(fc_tok_t **out, const char *path, fc_err_t *err);
/* Same, from JSON text already in memory (config_json may be NULL). */
int fc_tok_load_json(fc_tok_t **out, const char *json, size_t len, const char *config_json,
                     fc_err_t *err);
void fc_tok_destroy(fc_tok_t **tok);

/* Encodes len bytes of UTF-8 text. offsets (may be NULL) receive each token's start byte in
 * text (added bos/eos get the offset of the text's start or end). Non-special added tokens are
 * always matched; special ones only with FC_TOK_PARSE_SPECIAL. Invalid UTF-8 is an error.
 * Caller frees *ids and *offsets. Thread-safe on a shared tokenizer. */
int fc_tok_encode(const fc_tok_t *tok, const char *text, size_t len, unsigned flags,
                  int32_t **ids, uint32_t **offsets, size_t *n, fc_err_t *err);
/* Decodes ids with the tokenizer's decoder into a NUL-terminated string (caller frees). */
int fc_tok_decode(const fc_tok_t *tok, const int32_t *ids, size_t n, int skip_special,
                  char **text, fc_err_t *err);

int32_t fc_tok_vocab_size(const fc_tok_t *tok);            /* max id + 1 incl. added tokens */
const char *fc_tok_piece(const fc_tok_t *tok, int32_t id);   /* raw vocabulary string or NULL */
int32_t fc_tok_piece_id(const fc_tok_t *tok, const char *piece); /* -1 if none */
/* The text bytes a token stands for (▁ -> ' ', byte-level chars -> bytes, <0xNN> -> the byte,
 * added tokens -> their content). Returns the full length; writes at most cap bytes. */
size_t fc_tok_token_text(const fc_tok_t *tok, int32_t id, char *buf, size_t cap);
int32_t fc_tok_bos(const fc_tok_t *tok);
int32_t fc_tok_eos(const fc_tok_t *tok);
int fc_tok_is_special(const fc_tok_t *tok, int32_t id);
fc_tok_kind_t fc_tok_kind(const fc_tok_t *tok);
/* Stable 64-bit hash of vocabulary + merges + added tokens (tags stored logits). */
uint64_t fc_tok_hash(const fc_tok_t *tok);

/* Calls fn for each word the BPE model would see in text: after added tokens are split out
 * (per flags), normalization and pre-tokenization. Byte-level words are raw bytes (before the
 * byte -> char map); SentencePiece words are normalized (▁ for spaces). Used by the trainer. */
typedef void (*fc_tok_word_fn)(void *ctx, const char *word, size_t len);
int fc_tok_pretokenize(const fc_tok_t *tok, const char *text, size_t len, unsigned flags,
                       fc_tok_word_fn fn, void *ctx, fc_err_t *err);

/* The GPT-2 byte -> printable character map (as UTF-8, at most 2 bytes + NUL). */
const char *fc_tok_byte_char(uint8_t b);

#endif
