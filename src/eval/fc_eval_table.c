/* The evaluation tables with their uncertainty: percentile bootstrap intervals over the scored
 * items, and paired bootstrap tests of a model against a reference model (the pivot, plain SFT)
 * over the items both answered. Items are resampled within each family (the macro average is a
 * stratified statistic), every comparison draws from its own generator seeded with a constant,
 * so a row's figures depend only on the two models' items and the table is reproducible. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_eval.h"

#define LEVEL_LO 0.025 /* 95% two-sided */

/* The items of one family of a result, as indices. */
typedef struct famitems {
  const fc_eval_result_t *r;
  size_t *idx;
  size_t n;
} famitems_t;

static int fam_index(const fc_eval_result_t *r, const char *family) {
  for (int f = 0; f < r->nfam; f++)
    if (!strcmp(r->fam[f].name, family)) return f;
  return -1;
}

static famitems_t fam_items(const fc_eval_result_t *r, int fam) {
  famitems_t fi = {r, fc_xmalloc((r->nitems ? r->nitems : 1) * sizeof(size_t)), 0};
  for (size_t i = 0; i < r->nitems; i++)
    if (r->items[i].family == fam) fi.idx[fi.n++] = i;
  return fi;
}

/* Accumulates one item into a (numerator, denominator) pair: accuracy counts items, loss
 * weights each item by its gold tokens (as the family loss does); items without a loss or with
 * no tokens count once in the loss (results read back from older files carry no tokens). */
static void add_item(const fc_eval_item_t *it, int what, double *num, double *den) {
  if (what == 0) {
    *num += it->correct, *den += 1;
  } else if (isfinite(it->loss)) {
    double w = it->tokens > 0 ? it->tokens : 1;
    *num += it->loss * w, *den += w;
  }
}

static double ratio(double num, double den) { return den > 0 ? num / den : NAN; }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The percentile interval of B resampled statistics (sorted in place). */
static void percentile(double *v, int B, double *lo, double *hi) {
  qsort(v, (size_t)B, sizeof *v, cmp_double);
  *lo = v[(int)(LEVEL_LO * B)];
  *hi = v[(int)((1 - LEVEL_LO) * B) - 1];
}

/* One stratum of a (possibly paired) comparison: the items of model a and, when paired, the
 * matched items of model b (pa[k] and pb[k] are the same prompt). */
typedef struct stratum {
  const fc_eval_item_t *a, *b;
  size_t *pa, *pb;
  size_t n;
} stratum_t;

/* value(a) - value(b) (b NULL: value(a)) over the strata, from their items, or from a resample
 * when rng is set: the mean over strata of each stratum's statistic. */
static double stat(const stratum_t *s, int ns, int what, int paired, fc_rng_t *rng) {
  double total = 0;
  int used = 0;
  for (int k = 0; k < ns; k++) {
    if (!s[k].n) continue;
    double na = 0, da = 0, nb = 0, db = 0;
    for (size_t i = 0; i < s[k].n; i++) {
      size_t j = rng ? (size_t)(fc_rng_u64(rng) % s[k].n) : i;
      add_item(&s[k].a[s[k].pa[j]], what, &na, &da);
      if (paired) add_item(&s[k].b[s[k].pb[j]], what, &nb, &db);
    }
    total += ratio(na, da) - (paired ? ratio(nb, db) : 0);
    used++;
  }
  return used ? total / used : NAN;
}

static void boot(const stratum_t *s, int ns, int what, int paired, double *value, double *lo, double *hi) {
  *value = stat(s, ns, what, paired, NULL);
  double *v = fc_xmalloc(FC_EVAL_BOOT_RESAMPLES * sizeof *v);
  fc_rng_t rng;
  fc_rng_seed(&rng, FC_EVAL_BOOT_SEED);
  for (int b = 0; b < FC_EVAL_BOOT_RESAMPLES; b++) v[b] = stat(s, ns, what, paired, &rng);
  percentile(v, FC_EVAL_BOOT_RESAMPLES, lo, hi);
  free(v);
}

size_t fc_eval_boot_ci(const fc_eval_result_t *r, const char *family, int what, double *value, double *lo,
                       double *hi) {
  stratum_t s[FC_EVAL_MAX_FAMILIES];
  int ns = 0;
  size_t total = 0;
  for (int f = 0; f < r->nfam; f++) {
    if (family && strcmp(r->fam[f].name, family)) continue;
    famitems_t fi = fam_items(r, f);
    s[ns++] = (stratum_t){r->items, NULL, fi.idx, NULL, fi.n};
    total += fi.n;
  }
  *value = *lo = *hi = NAN;
  if (total) boot(s, ns, what, 0, value, lo, hi);
  for (int k = 0; k < ns; k++) free(s[k].pa);
  return total;
}

static int cmp_id(const void *x, const void *y) {
  return strcmp((*(const fc_eval_item_t *const *)x)->id, (*(const fc_eval_item_t *const *)y)->id);
}

/* The items of family fa of a and fb of b with the same id, as two parallel index lists. */
static stratum_t pair_family(const fc_eval_result_t *a, int fa, const fc_eval_result_t *b, int fb) {
  famitems_t ia = fam_items(a, fa), ib = fam_items(b, fb);
  const fc_eval_item_t **sb = fc_xmalloc((ib.n ? ib.n : 1) * sizeof *sb);
  for (size_t i = 0; i < ib.n; i++) sb[i] = &b->items[ib.idx[i]];
  qsort(sb, ib.n, sizeof *sb, cmp_id);
  stratum_t s = {a->items, b->items, fc_xmalloc((ia.n ? ia.n : 1) * sizeof(size_t)),
                 fc_xmalloc((ia.n ? ia.n : 1) * sizeof(size_t)), 0};
  for (size_t i = 0; i < ia.n; i++) {
    const char *id = a->items[ia.idx[i]].id;
    size_t lo = 0, hi = ib.n;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (strcmp(sb[mid]->id, id) < 0) lo = mid + 1;
      else hi = mid;
    }
    if (lo < ib.n && !strcmp(sb[lo]->id, id)) s.pa[s.n] = ia.idx[i], s.pb[s.n++] = (size_t)(sb[lo] - b->items);
  }
  free(ia.idx), free(ib.idx), free(sb);
  return s;
}

size_t fc_eval_boot_paired(const fc_eval_result_t *a, const fc_eval_result_t *b, const char *family, int what,
                           double *diff, double *lo, double *hi) {
  stratum_t s[FC_EVAL_MAX_FAMILIES];
  int ns = 0;
  size_t total = 0;
  for (int f = 0; f < a->nfam; f++) {
    if (family && strcmp(a->fam[f].name, family)) continue;
    int g = fam_index(b, a->fam[f].name);
    if (g < 0) continue;
    s[ns] = pair_family(a, f, b, g);
    total += s[ns++].n;
  }
  *diff = *lo = *hi = NAN;
  if (total) boot(s, ns, what, 1, diff, lo, hi);
  for (int k = 0; k < ns; k++) free(s[k].pa), free(s[k].pb);
  return total;
}

/* ---- printing ---- */

#define CELL 48

/* The mark of model i against reference ref: better / worse when the paired interval excludes
 * zero (better: higher accuracy, lower loss), else a space. */
static char mark(const fc_eval_result_t *const *res, int i, int ref, const char *family, int what, char better,
                 char worse) {
  if (ref < 0 || ref == i) return ' ';
  double d, lo, hi;
  if (!fc_eval_boot_paired(res[i], res[ref], family, what, &d, &lo, &hi)) return ' ';
  int up = lo > 0, down = hi < 0;
  if (what == 1) { /* a lower loss is better */
    int t = up;
    up = down, down = t;
  }
  return up ? better : down ? worse : ' ';
}

static void print_one(FILE *fp, const char *const *names, const fc_eval_result_t *const *res, int n, int ref_a,
                      int ref_b, int what, const char **fams, int nf) {
  int ncol = nf + 2; /* model, families..., macro */
  size_t *w = fc_xcalloc((size_t)ncol, sizeof *w);
  char(*cells)[CELL] = fc_xcalloc((size_t)(n + 1) * ncol, sizeof *cells);
  snprintf(cells[0], CELL, "model");
  for (int k = 0; k < nf; k++) {
    int items = 0; /* the family's size, from the first model that has it */
    for (int i = 0; i < n && !items; i++) {
      int f = fam_index(res[i], fams[k]);
      if (f >= 0) items = res[i]->fam[f].n;
    }
    snprintf(cells[1 + k], CELL, "%s (n=%d)", fams[k], items);
  }
  snprintf(cells[ncol - 1], CELL, "macro");
  for (int i = 0; i < n; i++) {
    char(*row)[CELL] = cells + (size_t)(i + 1) * ncol;
    snprintf(row[0], CELL, "%s", names[i]);
    for (int k = 0; k <= nf; k++) {
      const char *fam = k < nf ? fams[k] : NULL;
      double v, lo, hi;
      char *c = row[1 + k];
      if (fam && fam_index(res[i], fam) < 0) {
        snprintf(c, CELL, "-");
        continue;
      }
      if (!fc_eval_boot_ci(res[i], fam, what, &v, &lo, &hi)) { /* no items: the stored figure */
        int f = fam ? fam_index(res[i], fam) : -1;
        v = f >= 0 ? (what ? res[i]->fam[f].loss : res[i]->fam[f].accuracy)
                   : (what ? res[i]->macro_loss : res[i]->macro_accuracy);
        snprintf(c, CELL, what ? "%.3f [-]   " : "%.1f [-]   ", what ? v : 100 * v);
        continue;
      }
      char ma = mark(res, i, ref_a, fam, what, '+', '-'), mb = mark(res, i, ref_b, fam, what, '>', '<');
      if (what) snprintf(c, CELL, "%.3f [%.3f,%.3f] %c%c", v, lo, hi, ma, mb);
      else snprintf(c, CELL, "%.1f [%.1f,%.1f] %c%c", 100 * v, 100 * lo, 100 * hi, ma, mb);
    }
  }
  for (int i = 0; i <= n; i++)
    for (int k = 0; k < ncol; k++) {
      size_t l = strlen(cells[(size_t)i * ncol + k]);
      w[k] = l > w[k] ? l : w[k];
    }
  for (int i = 0; i <= n; i++) {
    for (int k = 0; k < ncol; k++) {
      const char *c = cells[(size_t)i * ncol + k];
      if (k == 0) fprintf(fp, "%-*s", (int)w[k], c);
      else fprintf(fp, "  %*s", (int)w[k], c);
    }
    fputc('\n', fp);
  }
  free(w);
  free(cells);
}

void fc_eval_print_table(FILE *fp, const char *const *names, const fc_eval_result_t *const *results, int n,
                         int ref_a, int ref_b) {
  /* the union of families, in order of first appearance */
  const char *fams[FC_EVAL_MAX_FAMILIES * 4];
  int nf = 0;
  for (int i = 0; i < n; i++)
    for (int f = 0; f < results[i]->nfam; f++) {
      int seen = 0;
      for (int k = 0; k < nf; k++) seen |= !strcmp(fams[k], results[i]->fam[f].name);
      if (!seen && nf < (int)(sizeof fams / sizeof *fams)) fams[nf++] = results[i]->fam[f].name;
    }
  if (ref_a >= n) ref_a = -1;
  if (ref_b >= n) ref_b = -1;
  fprintf(fp, "Exact-match accuracy (%%) with its 95%% bootstrap interval over the items\n");
  print_one(fp, names, results, n, ref_a, ref_b, 0, fams, nf);
  fprintf(fp, "\nAnswer loss (nats per gold token) with its 95%% bootstrap interval\n");
  print_one(fp, names, results, n, ref_a, ref_b, 1, fams, nf);
  if (ref_a >= 0 || ref_b >= 0) {
    fprintf(fp, "\nMarks (paired bootstrap over the same items, 95%%; better = higher accuracy, lower loss):");
    if (ref_a >= 0) fprintf(fp, " +/- better/worse than %s;", names[ref_a]);
    if (ref_b >= 0) fprintf(fp, " >/< better/worse than %s;", names[ref_b]);
    fprintf(fp, " %d resamples, seed %u.\n", FC_EVAL_BOOT_RESAMPLES, FC_EVAL_BOOT_SEED);
  }
}
