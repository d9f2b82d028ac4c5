/* mergekit's passthrough with slices: layer ranges of several models stacked into a new depth,
 * tensors copied as they are (converted only when an output dtype is asked for), the layers
 * renumbered in order. As mergekit plans it, the tensors before the layers (embeddings) come
 * from the first slice's model and those after them (final norm, lm_head) from the last
 * slice's; config.json (num_hidden_layers set to the new depth) and the tokenizer files come
 * from the first slice's model. */
#include "fc_merge_impl.h"

#include <stdio.h>
#include <unistd.h>

/* Tensors outside the layers that mergekit's architectures list before them. */
static int is_pre_weight(const char *name) {
  return strstr(name, "embed") || strstr(name, "wte") || strstr(name, "wpe");
}

/* The layer count of a model: its largest layer index plus one. */
static int model_layers(const fc_st_t *st) {
  int n = 0;
  for (size_t k = 0; k < fc_st_count(st); k++) {
    int li = fc_merge_layer_index(fc_st_at(st, k)->name);
    if (li + 1 > n) n = li + 1;
  }
  return n;
}

/* name with its layer index replaced by idx. */
static char *renumber(const char *name, int idx) {
  size_t at, len;
  int li = fc_merge_layer_span(name, &at, &len);
  assert(li >= 0);
  (void)li;
  char num[16];
  int nl = snprintf(num, sizeof num, "%d", idx);
  size_t rest = strlen(name + at + len);
  char *s = fc_xmalloc(at + (size_t)nl + rest + 1);
  memcpy(s, name, at);
  memcpy(s + at, num, (size_t)nl);
  memcpy(s + at + nl, name + at + len, rest + 1);
  return s;
}

typedef struct plan {
  fc_st_spec_t *specs;
  char **names;
  const fc_st_tensor_t **src;
  size_t n, cap;
} plan_t;

static void plan_add(plan_t *P, const fc_st_tensor_t *t, char *name, int dtype) {
  if (P->n == P->cap) {
    P->cap = P->cap ? 2 * P->cap : 64;
    P->specs = fc_xrealloc(P->specs, P->cap * sizeof *P->specs);
    P->names = fc_xrealloc(P->names, P->cap * sizeof *P->names);
    P->src = fc_xrealloc(P->src, P->cap * sizeof *P->src);
  }
  fc_st_spec_t *s = &P->specs[P->n];
  memset(s, 0, sizeof *s);
  s->name = name;
  s->ndim = t->ndim;
  memcpy(s->shape, t->shape, sizeof t->shape);
  const int flt = t->dtype == FC_DT_F32 || t->dtype == FC_DT_F16 || t->dtype == FC_DT_BF16 || t->dtype == FC_DT_F64;
  s->dtype = flt && dtype >= 0 ? (fc_dtype_t)dtype : t->dtype;
  P->names[P->n] = name;
  P->src[P->n++] = t;
}

int fc_merge_passthrough_run(const fc_merge_cfg_t *cfg, const char *out_dir, fc_err_t *err) {
  const int ns = cfg->nslices;
  if (ns < 1) return fc_err_set(err, FC_EINVAL, "passthrough needs slices (or exactly one model)");
  fc_st_t **st = fc_xcalloc((size_t)ns, sizeof *st);
  plan_t P = {0};
  fc_st_writer_t *w = NULL;
  int rc = 0, depth = 0;
  double t0 = fc_now(), bytes = 0;
  for (int s = 0; s < ns && !rc; s++) {
    const fc_merge_slice_t *sl = &cfg->slices[s];
    if ((rc = fc_st_open(&st[s], sl->model, err))) break;
    int nl = model_layers(st[s]), a = sl->first, b = sl->last < 0 ? nl : sl->last;
    if (a < 0 || b <= a || b > nl)
      rc = fc_err_set(err, FC_EINVAL, "slice %d: layer_range [%d, %d] is not within the %d layers of %s", s + 1,
                      a, b, nl, sl->model);
  }
  if (rc) goto out;
  /* The output's tensors: before the layers, the slices' layers in order, after the layers. */
  for (size_t k = 0; k < fc_st_count(st[0]); k++) {
    const fc_st_tensor_t *t = fc_st_at(st[0], k);
    if (fc_merge_layer_index(t->name) < 0 && is_pre_weight(t->name)) plan_add(&P, t, fc_xstrdup(t->name), cfg->dtype);
  }
  for (int s = 0; s < ns; s++) {
    const fc_merge_slice_t *sl = &cfg->slices[s];
    int b = sl->last < 0 ? model_layers(st[s]) : sl->last;
    for (int l = sl->first; l < b; l++, depth++)
      for (size_t k = 0; k < fc_st_count(st[s]); k++) {
        const fc_st_tensor_t *t = fc_st_at(st[s], k);
        if (fc_merge_layer_index(t->name) == l) plan_add(&P, t, renumber(t->name, depth), cfg->dtype);
      }
  }
  for (size_t k = 0; k < fc_st_count(st[ns - 1]); k++) {
    const fc_st_tensor_t *t = fc_st_at(st[ns - 1], k);
    if (fc_merge_layer_index(t->name) < 0 && !is_pre_weight(t->name)) plan_add(&P, t, fc_xstrdup(t->name), cfg->dtype);
  }
  if ((rc = fc_mkdir_p(out_dir, err))) goto out;
  {
    char *path = fc_path_join(out_dir, "model.safetensors"), *ip = fc_path_join(out_dir, "model.safetensors.index.json");
    unlink(ip); /* an earlier sharded output would shadow this one */
    free(ip);
    rc = fc_st_writer_new(&w, path, P.specs, P.n, (const char *const[]){"format", "pt", NULL}, err);
    free(path);
  }
  if (!rc) rc = fc_st_writer_reserve(w, err);
  for (size_t i = 0; i < P.n && !rc; i++) {
    const fc_st_tensor_t *t = P.src[i];
    if (P.specs[i].dtype == t->dtype) {
      rc = fc_st_writer_put_raw(w, i, t->data, t->nbytes, err);
    } else {
      float *owned = NULL;
      const float *f = fc_st_f32(t, &owned, err);
      rc = f ? fc_st_writer_put_f32(w, i, f, err) : -1;
      free(owned);
    }
    bytes += (double)t->nbytes;
    if (!rc && cfg->progress && cfg->progress(cfg->progress_ctx, (double)(i + 1) / (double)P.n, P.names[i]))
      rc = fc_err_set(err, FC_ECANCEL, "merge cancelled after tensor '%s'", P.names[i]);
  }
  if (!rc) rc = fc_st_writer_finish(&w, err);
  if (!rc) rc = fc_merge_copy_side_files(cfg->slices[0].model, out_dir, cfg->dtype, depth, err);
  if (!rc && cfg->stats) {
    memset(cfg->stats, 0, sizeof *cfg->stats);
    cfg->stats->ntensors = P.n;
    cfg->stats->bytes_in = bytes;
    cfg->stats->seconds = fc_now() - t0;
  }
out:
  if (w) fc_st_writer_abort(&w);
  for (size_t i = 0; i < P.n; i++) free(P.names[i]);
  free(P.names);
  free(P.specs);
  free(P.src);
  for (int s = 0; s < ns; s++) fc_st_close(&st[s]);
  free(st);
  return rc;
}
