/* Task families for the demo: arithmetic, unit conversion, string transformations and facts
 * about a generated world. Which split an item belongs to is a hash of its content. */
#include "fc_gendata.h"

#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>

static const char *fam_names[FC_GENDATA_NFAM] = {"arith", "convert", "strings", "facts", "pick"};

const char *fc_gendata_family_name(fc_gendata_family_t f) { return fam_names[f]; }

int fc_gendata_family_parse(const char *s, fc_gendata_family_t *out) {
  for (int i = 0; i < FC_GENDATA_NFAM; i++)
    if (!strcmp(s, fam_names[i])) return *out = (fc_gendata_family_t)i, 0;
  return FC_EINVAL;
}

/* One in five items is held out. */
static fc_gendata_split_t split_of(uint64_t key) {
  return fc_splitmix64(key ^ 0x5eedf00dULL) % 5 == 0 ? FC_GENDATA_EVAL : FC_GENDATA_TRAIN;
}

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static uint64_t below(fc_rng_t *r, uint64_t n) { return fc_rng_u64(r) % n; }

/* ---- the world ---- */

/* 80 countries x 3 attributes, half of the pairs held out on 2 of 5 phrasings: about 240
 * distinct held-out fact questions, enough for 200 per family in the demo's evaluation. */
#define N_COUNTRIES 80
#define N_FACT_TEMPLATES 5
#define N_HELD_TEMPLATES 2

struct fc_gendata_world {
  char country[N_COUNTRIES][16];
  char capital[N_COUNTRIES][16];
  char ruler[N_COUNTRIES][16];
  int founded[N_COUNTRIES];
};

static const char *syll[] = {"ka", "lo", "mi", "ra", "ven", "dor", "sa", "tel", "zu", "mar",
                             "pe", "ri", "nol", "vo", "ta", "gen", "bru", "shi", "an", "el"};

static void make_name(fc_rng_t *r, char *out, int nsyl, const char *suffix) {
  out[0] = 0;
  for (int i = 0; i < nsyl; i++) strcat(out, syll[below(r, sizeof syll / sizeof syll[0])]);
  strcat(out, suffix);
  out[0] = (char)toupper((unsigned char)out[0]);
}

static int name_used(const fc_gendata_world_t *w, int n, const char *s) {
  for (int i = 0; i < n; i++)
    if (!strcmp(w->country[i], s) || !strcmp(w->capital[i], s) || !strcmp(w->ruler[i], s)) return 1;
  return 0;
}

fc_gendata_world_t *fc_gendata_world_new(uint64_t world_seed) {
  fc_gendata_world_t *w = fc_xcalloc(1, sizeof *w);
  fc_rng_t r;
  fc_rng_seed(&r, world_seed);
  static const char *csuf[] = {"ia", "land", "stan", "ora"};
  for (int i = 0; i < N_COUNTRIES; i++) {
    do make_name(&r, w->country[i], 2, csuf[below(&r, 4)]);
    while (name_used(w, i, w->country[i]));
    do make_name(&r, w->capital[i], 2 + (int)below(&r, 2), "");
    while (name_used(w, i, w->capital[i]) || !strcmp(w->capital[i], w->country[i]));
    do make_name(&r, w->ruler[i], 2, "");
    while (name_used(w, i, w->ruler[i]) || !strcmp(w->ruler[i], w->capital[i]) ||
           !strcmp(w->ruler[i], w->country[i]));
    w->founded[i] = 1100 + (int)below(&r, 800);
  }
  return w;
}

void fc_gendata_world_destroy(fc_gendata_world_t **w) {
  free(*w);
  *w = NULL;
}

/* ---- the families ---- */

static void draw_arith(fc_rng_t *r, fc_gendata_split_t split, fc_gendata_item_t *it) {
  for (;;) {
    int a = (int)below(r, 100), b = (int)below(r, 100), op = (int)below(r, 2);
    if (op == 1 && b > a) { int t = a; a = b; b = t; }
    if (split_of(((uint64_t)a << 20) ^ ((uint64_t)b << 2) ^ (uint64_t)op ^ 0xa11) != split) continue;
    snprintf(it->prompt, sizeof it->prompt, "What is %d %c %d?", a, op ? '-' : '+', b);
    snprintf(it->answer, sizeof it->answer, "%d", op ? a - b : a + b);
    return;
  }
}

static void draw_convert(fc_rng_t *r, fc_gendata_split_t split, fc_gendata_item_t *it) {
  /* twelve conversions x 99 amounts: about 240 held-out prompts */
  static const struct { const char *from, *to; int mul; } units[] = {
      {"km", "m", 1000}, {"m", "cm", 100}, {"kg", "g", 1000}, {"h", "min", 60}, {"min", "s", 60}, {"cm", "mm", 10},
      {"l", "ml", 1000}, {"t", "kg", 1000}, {"day", "h", 24}, {"week", "day", 7}, {"year", "month", 12},
      {"dozen", "item", 12}};
  for (;;) {
    int u = (int)below(r, (uint64_t)(sizeof units / sizeof *units)), n = 1 + (int)below(r, 99);
    if (split_of(((uint64_t)u << 16) ^ (uint64_t)n ^ 0xc0417) != split) continue;
    snprintf(it->prompt, sizeof it->prompt, "Convert %d %s to %s.", n, units[u].from, units[u].to);
    snprintf(it->answer, sizeof it->answer, "%d", n * units[u].mul);
    return;
  }
}

static int cmp_char(const void *a, const void *b) { return *(const char *)a - *(const char *)b; }

static void draw_strings(fc_rng_t *r, fc_gendata_split_t split, fc_gendata_item_t *it) {
  static const char letters[] = "abcdeghiklmnoprstuvw";
  for (;;) {
    char word[8];
    int n = 3 + (int)below(r, 4), op = (int)below(r, 3);
    for (int i = 0; i < n; i++) word[i] = letters[below(r, sizeof letters - 1)];
    word[n] = 0;
    if (split_of(hash_str(word) ^ (uint64_t)op) != split) continue;
    if (op == 0) {
      snprintf(it->prompt, sizeof it->prompt, "Reverse the word '%s'.", word);
      for (int i = 0; i < n; i++) it->answer[i] = word[n - 1 - i];
      it->answer[n] = 0;
    } else if (op == 1) {
      snprintf(it->prompt, sizeof it->prompt, "Sort the letters of '%s'.", word);
      memcpy(it->answer, word, (size_t)n + 1);
      qsort(it->answer, (size_t)n, 1, cmp_char);
    } else {
      char c = word[below(r, (uint64_t)n)];
      int k = 0;
      for (int i = 0; i < n; i++) k += word[i] == c;
      snprintf(it->prompt, sizeof it->prompt, "How many times does '%c' occur in '%s'?", c, word);
      snprintf(it->answer, sizeof it->answer, "%d", k);
    }
    return;
  }
}

/* Facts: every (country, attribute) is taught in training under some phrasings; for half of
 * them the last N_HELD_TEMPLATES phrasings are held out and are what the evaluation asks, so
 * the model must recall a fact it learned in other words (the other half teaches every
 * phrasing, so the held-out wordings themselves are not new). */
static void draw_facts(const fc_gendata_world_t *w, fc_rng_t *r, fc_gendata_split_t split, fc_gendata_item_t *it) {
  static const char *tmpl[3][N_FACT_TEMPLATES] = {
      {"What is the capital of %s?", "Name the capital city of %s.", "Tell me the capital of %s.",
       "Which city is the capital of %s?", "What city serves as the capital of %s?"},
      {"Who rules %s?", "Name the ruler of %s.", "Tell me who rules %s.", "Who is the ruler of %s?",
       "Which person rules %s?"},
      {"When was %s founded?", "In which year was %s founded?", "Tell me the founding year of %s.",
       "What year was %s founded in?", "Which year saw the founding of %s?"}};
  for (;;) {
    int c = (int)below(r, N_COUNTRIES), attr = (int)below(r, 3), t = (int)below(r, N_FACT_TEMPLATES);
    int held = fc_splitmix64(((uint64_t)c << 4) ^ (uint64_t)attr ^ 0xfac7) % 2 == 0;
    int is_eval_item = held && t >= N_FACT_TEMPLATES - N_HELD_TEMPLATES;
    if ((split == FC_GENDATA_EVAL) != is_eval_item) continue;
    snprintf(it->prompt, sizeof it->prompt, tmpl[attr][t], w->country[c]);
    if (attr == 0) snprintf(it->answer, sizeof it->answer, "%s", w->capital[c]);
    else if (attr == 1) snprintf(it->answer, sizeof it->answer, "%s", w->ruler[c]);
    else snprintf(it->answer, sizeof it->answer, "%d", w->founded[c]);
    return;
  }
}

/* Pick: any letter of the word is right. Training rows draw one of its distinct letters
 * uniformly, so a model trained on many of them learns to spread its answer over all of them;
 * a fusion set carries one draw per prompt, its source's distribution all of them. Words have
 * at least three distinct letters so that there is something to spread over. */
static void draw_pick(fc_rng_t *r, fc_gendata_split_t split, fc_gendata_item_t *it) {
  static const char letters[] = "abcdeghiklmnoprstuvw";
  for (;;) {
    char word[8];
    int n = 4 + (int)below(r, 3);
    for (int i = 0; i < n; i++) word[i] = letters[below(r, sizeof letters - 1)];
    word[n] = 0;
    char set[8];
    memcpy(set, word, (size_t)n + 1);
    qsort(set, (size_t)n, 1, cmp_char);
    int k = 0;
    for (int i = 0; i < n; i++)
      if (!k || set[k - 1] != set[i]) set[k++] = set[i];
    if (k < 3 || split_of(hash_str(word) ^ 0x91c4) != split) continue;
    snprintf(it->prompt, sizeof it->prompt, "Name a letter that occurs in '%s'.", word);
    it->nvalid = k;
    for (int i = 0; i < k; i++) it->valid[i][0] = set[i], it->valid[i][1] = 0;
    snprintf(it->answer, sizeof it->answer, "%c", set[below(r, (uint64_t)k)]);
    return;
  }
}

void fc_gendata_draw(const fc_gendata_world_t *w, fc_gendata_family_t fam, fc_gendata_split_t split, fc_rng_t *rng,
                  fc_gendata_item_t *item) {
  item->family = fam;
  item->nvalid = 0;
  switch (fam) {
  case FC_GENDATA_ARITH: draw_arith(rng, split, item); break;
  case FC_GENDATA_CONVERT: draw_convert(rng, split, item); break;
  case FC_GENDATA_STRINGS: draw_strings(rng, split, item); break;
  case FC_GENDATA_FACTS: draw_facts(w, rng, split, item); break;
  case FC_GENDATA_PICK: draw_pick(rng, split, item); break;
  default: assert(0);
  }
}

int fc_gendata_parse_mix(const char *s, double mix[FC_GENDATA_NFAM], fc_err_t *err) {
  for (int i = 0; i < FC_GENDATA_NFAM; i++) mix[i] = 0;
  char *copy = fc_xstrdup(s), *save = NULL;
  int rc = 0;
  double total = 0;
  for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(tok, '=');
    fc_gendata_family_t f;
    char *end;
    if (!eq) {
      rc = fc_err_set(err, FC_EINVAL, "mix entry '%s' is not FAMILY=WEIGHT", tok);
      break;
    }
    *eq = 0;
    if (fc_gendata_family_parse(tok, &f) != 0) {
      rc = fc_err_set(err, FC_EINVAL, "unknown family '%s' (arith, convert, strings, facts, pick)", tok);
      break;
    }
    double v = strtod(eq + 1, &end);
    if (end == eq + 1 || *end || v < 0) {
      rc = fc_err_set(err, FC_EINVAL, "weight of '%s' must be a non-negative number", tok);
      break;
    }
    mix[f] = v;
    total += v;
  }
  if (!rc && total <= 0) rc = fc_err_set(err, FC_EINVAL, "mix '%s' gives every family weight 0", s);
  free(copy);
  return rc;
}

static fc_gendata_family_t pick_family(fc_rng_t *r, const double mix[FC_GENDATA_NFAM]) {
  double total = 0;
  for (int i = 0; i < FC_GENDATA_NFAM; i++) total += mix[i];
  double u = fc_rng_uniform(r) * total;
  for (int i = 0; i < FC_GENDATA_NFAM; i++) {
    if (u < mix[i]) return (fc_gendata_family_t)i;
    u -= mix[i];
  }
  for (int i = FC_GENDATA_NFAM - 1; i >= 0; i--)
    if (mix[i] > 0) return (fc_gendata_family_t)i;
  return FC_GENDATA_ARITH;
}

/* One JSONL row: the conversation's turns and the family of its first question; held-out rows
 * also carry an id (FAMILY-INDEX), the same for every model scored on the file. */
static int write_row(FILE *fp, const fc_gendata_item_t *items, int n, const char *id) {
  json_t *row = json_object(), *conv = json_array();
  if (id) json_object_set_new(row, "id", json_string(id));
  if (id && items[0].nvalid) { /* held out: what the evaluation accepts */
    json_t *v = json_array();
    for (int k = 0; k < items[0].nvalid; k++) json_array_append_new(v, json_string(items[0].valid[k]));
    json_object_set_new(row, "valid", v);
  }
  for (int t = 0; t < n; t++) {
    json_t *h = json_object(), *g = json_object();
    json_object_set_new(h, "from", json_string("human"));
    json_object_set_new(h, "value", json_string(items[t].prompt));
    json_object_set_new(g, "from", json_string("gpt"));
    json_object_set_new(g, "value", json_string(items[t].answer));
    json_array_append_new(conv, h);
    json_array_append_new(conv, g);
  }
  json_object_set_new(row, "family", json_string(fc_gendata_family_name(items[0].family)));
  json_object_set_new(row, "conversations", conv);
  char *s = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(row);
  int ok = fputs(s, fp) != EOF && fputc('\n', fp) != EOF;
  free(s);
  return ok ? 0 : FC_EIO;
}

/* Held-out sets hold distinct prompts: an open-addressing set of prompt hashes. Returns 0 when
 * the prompt was already there. */
static int remember(uint64_t *set, size_t cap, const char *prompt) {
  uint64_t h = hash_str(prompt) | 1;
  size_t k = h % cap;
  while (set[k] && set[k] != h) k = (k + 1) % cap;
  if (set[k]) return 0;
  set[k] = h;
  return 1;
}

int fc_gendata_write(const fc_gendata_opts_t *o, const char *path, fc_err_t *err) {
  fc_gendata_world_t *w = fc_gendata_world_new(o->world_seed);
  fc_rng_t r;
  fc_rng_seed(&r, o->seed ^ ((uint64_t)o->split << 32));
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc) {
    fc_gendata_world_destroy(&w);
    return rc;
  }
  int eval = o->split == FC_GENDATA_EVAL;
  size_t seen_cap = eval ? 2 * o->count + 16 : 0;
  uint64_t *seen = eval ? fc_xcalloc(seen_cap, sizeof *seen) : NULL;
  fc_gendata_item_t items[8];
  for (size_t i = 0; i < o->count && !rc; i++) {
    int turns = eval || o->max_turns <= 1 ? 1 : 1 + (int)below(&r, (uint64_t)o->max_turns);
    for (int t = 0; t < turns; t++) fc_gendata_draw(w, pick_family(&r, o->mix), o->split, &r, &items[t]);
    for (int tries = 0; eval && !remember(seen, seen_cap, items[0].prompt); tries++) {
      if (tries == 20000) {
        rc = fc_err_set(err, FC_EINVAL, "only %zu distinct held-out items exist for this mix (asked for %zu)",
                        i, o->count);
        break;
      }
      fc_gendata_draw(w, pick_family(&r, o->mix), o->split, &r, &items[0]);
    }
    char id[48];
    snprintf(id, sizeof id, "%s-%zu", fc_gendata_family_name(items[0].family), i + 1);
    if (!rc && write_row(af.fp, items, turns, eval ? id : NULL)) rc = fc_err_set(err, FC_EIO, "cannot write %s", path);
  }
  free(seen);
  fc_gendata_world_destroy(&w);
  if (rc) {
    fc_atomic_abort(&af);
    return rc;
  }
  return fc_atomic_commit(&af, err);
}
