/* Generated chat tasks for the demo fusion: ShareGPT-style conversations from task families
 * a small model can learn and that are scored by exact match. Deterministic from seeds; every
 * item belongs to the training or the held-out split by a hash of its content, so the two
 * never share a prompt whatever counts or seeds are asked for. */
#ifndef FC_GENDATA_H
#define FC_GENDATA_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

/* The four single-answer families the demo uses, then PICK ("Name a letter that occurs in
 * 'word'."), whose prompts have several right answers: a training row carries one of them drawn
 * at random, a held-out row every one of them ("valid"), for the multi-answer experiment. It is
 * last so the classic families keep their numbers, and it is in no default mix. */
typedef enum { FC_GENDATA_ARITH, FC_GENDATA_CONVERT, FC_GENDATA_STRINGS, FC_GENDATA_FACTS, FC_GENDATA_PICK,
               FC_GENDATA_NFAM } fc_gendata_family_t;
#define FC_GENDATA_NCLASSIC 4 /* the single-answer families, first in the enum */
#define FC_GENDATA_MAX_VALID 8

const char *fc_gendata_family_name(fc_gendata_family_t f);
int fc_gendata_family_parse(const char *s, fc_gendata_family_t *out);

typedef enum { FC_GENDATA_TRAIN, FC_GENDATA_EVAL } fc_gendata_split_t;

/* One question/answer pair. */
typedef struct fc_gendata_item {
  fc_gendata_family_t family;
  char prompt[256];
  char answer[64];
  int nvalid;                            /* 0: the answer is the only right one */
  char valid[FC_GENDATA_MAX_VALID][8];   /* every right answer (the answer among them), sorted */
} fc_gendata_item_t;

/* The made-up world the facts family asks about (same world_seed, same facts). */
typedef struct fc_gendata_world fc_gendata_world_t;
fc_gendata_world_t *fc_gendata_world_new(uint64_t world_seed);
void fc_gendata_world_destroy(fc_gendata_world_t **w);

/* Draws one item of a family and split; rng drives the draw. */
void fc_gendata_draw(const fc_gendata_world_t *w, fc_gendata_family_t fam, fc_gendata_split_t split, fc_rng_t *rng,
                  fc_gendata_item_t *item);

typedef struct fc_gendata_opts {
  size_t count;                /* conversations to write */
  double mix[FC_GENDATA_NFAM];    /* relative weight of each family (need not sum to 1) */
  fc_gendata_split_t split;
  uint64_t seed;               /* draws */
  uint64_t world_seed;         /* the facts' world */
  int max_turns;               /* training conversations carry 1..max_turns Q/A turns */
} fc_gendata_opts_t;

/* Writes JSONL: {"family":F,"conversations":[{"from":"human","value":Q},{"from":"gpt","value":A},...]}
 * (eval rows always have one turn and start with "id":"FAMILY-N", N the row's number; an eval
 * row of a family with several right answers also has "valid":[A1,A2,...]). Atomic. */
int fc_gendata_write(const fc_gendata_opts_t *o, const char *path, fc_err_t *err);
/* "arith=2,facts=1" into weights; families not named get 0. */
int fc_gendata_parse_mix(const char *s, double mix[FC_GENDATA_NFAM], fc_err_t *err);

#endif
