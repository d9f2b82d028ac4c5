/* BPE tokenizer training: learns merges from a text corpus and writes a Hugging Face
 * tokenizer.json (byte-level, GPT-2/Qwen style; or SentencePiece style with byte fallback, as
 * Llama-2) that both fc_tok and the Hugging Face tokenizers library load. */
#ifndef FC_BPE_TRAIN_H
#define FC_BPE_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "fc_tok.h"
#include "fc_util.h"

typedef struct fc_bpe_train_opts {
  fc_tok_kind_t kind;
  int32_t vocab_size;    /* total, including special and byte tokens */
  int64_t min_frequency; /* a pair must occur this often to be merged (0 -> 2) */
  int verbose;           /* progress line on stderr */
  int split_digits;      /* every digit its own token, as Qwen2's pre-tokenizer and Llama's
                            SentencePiece model do: numbers then read digit by digit, which
                            small models need to learn arithmetic */
} fc_bpe_train_opts_t;

/* Trains on len bytes of UTF-8 text; *json receives the tokenizer.json text (caller frees).
 * Byte-level: ids 0..255 are the byte characters, merges follow, then the special tokens
 * <|endoftext|>, <|im_start|>, <|im_end|>. SentencePiece: <unk> <s> </s>, <0x00>..<0xFF>,
 * the characters covering 99.95% of the text, then merges; <s> is added as bos. */
int fc_bpe_train(const char *text, size_t len, const fc_bpe_train_opts_t *opts, char **json,
                 fc_err_t *err);
/* Reads corpus_path, trains, and writes out_path atomically. */
int fc_bpe_train_file(const char *corpus_path, const fc_bpe_train_opts_t *opts,
                      const char *out_path, fc_err_t *err);

#endif
