/* mergekit's slices. Passthrough: layer ranges of several models stacked into a new depth,
 * tensors copied as they are (converted only when an output dtype is asked for), the layers
 * renumbered in order. As mergekit plans it, the tensors before the layers (embeddings) come
 * from the first slice's model and those after them (final norm, lm_head) from the last
 * slice's; config.json (num_hidden_layers set to the new depth) and the tokenizer files come
 * from the first slice's model.
 * Any other method (fc_merge_plan_slices): each slice lists the same models, each with a layer
 * range of the slice's length; output layer j of the slice merges layer first_i + j of every
 * model i, its parameters at t = j / (len - 1) (mergekit's plan_slice); the tensors outside the
 * layers are merged as they are, at t = 0. */
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
  s->dtype = fc_merge_float_dt(t->dtype) && dtype >= 0 ? (fc_dtype_t)dtype : t->dtype;
  P->names[P->n] = name;
  P->src[P->n++] = t;
}

int fc_merge_passthrough_run(const fc_merge_cfg_t *cfg, const char *out_dir, fc_err_t *err) {
  const int ns = cfg->nslices;
  if (ns < 1) return fc_err_set(err, FC_EINVAL, "passthrough needs slices (or exactly one model)");
  for (int s = 1; s < ns; s++)
    if (cfg->slices[s].group == cfg->slices[s - 1].group)
      return fc_err_set(err, FC_EINVAL, "slice %d has several sources: passthrough stacks one source per slice; "
                        "to merge the sources, name a merge method (e.g. slerp, linear, ties)", cfg->slices[s].group + 1);
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

/* ---- merges by slices: the plan of output tensors ------------------------------------------- */

void fc_merge_plan_add(fc_merge_plan_t *P, char *name, const fc_st_tensor_t *lay, double t, int shard) {
  assert(P->nm > 0);
  if (P->n == P->cap) {
    P->cap = P->cap ? 2 * P->cap : 64;
    P->name = fc_xrealloc(P->name, P->cap * sizeof *P->name);
    P->lay = fc_xrealloc(P->lay, P->cap * sizeof *P->lay);
    P->in = fc_xrealloc(P->in, P->cap * (size_t)P->nm * sizeof *P->in);
    P->t = fc_xrealloc(P->t, P->cap * sizeof *P->t);
    P->shard = fc_xrealloc(P->shard, P->cap * sizeof *P->shard);
  }
  P->name[P->n] = name, P->lay[P->n] = lay, P->t[P->n] = t, P->shard[P->n] = shard;
  for (int i = 0; i < P->nm; i++) P->in[P->n * (size_t)P->nm + (size_t)i] = NULL;
  P->n++;
}

void fc_merge_plan_free(fc_merge_plan_t *P) {
  for (size_t k = 0; k < P->n; k++) free(P->name[k]);
  free(P->name), free(P->lay), free(P->in), free(P->t), free(P->shard);
  memset(P, 0, sizeof *P);
}

/* Model i's input for the output tensor just added: its tensor `name`, checked against the
 * layout tensor. */
static int plan_input(fc_merge_plan_t *P, const fc_merge_cfg_t *cfg, fc_st_t *st, const char *path, int i,
                      const char *name, fc_err_t *err) {
  const fc_st_tensor_t *lay = P->lay[P->n - 1], *t = fc_st_find(st, name);
  if (!t) return fc_err_set(err, FC_EMISMATCH, "tensor '%s' is missing from %s", name, path);
  int same = t->ndim == lay->ndim;
  for (int d = cfg->tokenizer_source && fc_merge_vocab_tensor(lay) ? 1 : 0; same && d < lay->ndim; d++)
    same = t->shape[d] == lay->shape[d];
  if (!same)
    return fc_err_set(err, FC_EMISMATCH, "tensor '%s' of %s does not have the shape of '%s' it is merged with",
                      name, path, lay->name);
  if (fc_merge_float_dt(t->dtype) != fc_merge_float_dt(lay->dtype))
    return fc_err_set(err, FC_EMISMATCH, "tensor '%s' is %s in %s but '%s' is %s", name, fc_dtype_name(t->dtype),
                      path, lay->name, fc_dtype_name(lay->dtype));
  P->in[(P->n - 1) * (size_t)P->nm + (size_t)i] = t;
  return 0;
}

/* The sources of slice g (entries [a, b)): src[i] model i's, *bsrc the base's (NULL if it is not
 * a source); every source must be one of them, each once. */
static int group_sources(const fc_merge_cfg_t *cfg, int a, int b, const fc_merge_model_t *list, int nm,
                         const fc_merge_slice_t **src, const fc_merge_slice_t **bsrc, fc_err_t *err) {
  const int g = cfg->slices[a].group + 1;
  *bsrc = NULL;
  for (int i = 0; i < nm; i++) src[i] = NULL;
  for (int e = a; e < b; e++) {
    const fc_merge_slice_t *s = &cfg->slices[e];
    int found = 0;
    for (int i = 0; i < nm && !found; i++)
      if (!src[i] && fc_merge_same_path(s->model, list[i].path)) src[i] = s, found = 1;
    if (!found && !*bsrc && cfg->base && fc_merge_same_path(s->model, cfg->base)) *bsrc = s, found = 1;
    if (!found)
      return fc_err_set(err, FC_EINVAL, "slice %d: source %s is not one of the first slice's models, or is listed "
                        "twice (every slice merges the same models)", g, s->model);
  }
  for (int i = 0; i < nm; i++)
    if (!src[i])
      return fc_err_set(err, FC_EINVAL, "slice %d lacks %s (every slice merges the same models)", g, list[i].path);
  return 0;
}

int fc_merge_plan_slices(fc_merge_plan_t *P, const fc_merge_cfg_t *cfg, fc_st_t *base, fc_st_t *const *st,
                         const fc_merge_model_t *list, int nm, fc_err_t *err) {
  const fc_merge_slice_t *src[FC_MERGE_MAX_MODELS], *bsrc;
  P->nm = nm;
  P->depth = 0;
  /* The tensors' layout: the base's (it must be a source of every slice), else the first model's. */
  fc_st_t *lay = base ? base : st[0];
  int rc = 0;
  for (int pass = 0; pass < 3 && !rc; pass++) { /* before the layers, the layers, after them */
    if (pass != 1) {
      for (size_t k = 0; k < fc_st_count(lay) && !rc; k++) {
        const fc_st_tensor_t *t = fc_st_at(lay, k);
        if (fc_merge_layer_index(t->name) >= 0 || is_pre_weight(t->name) != (pass == 0)) continue;
        fc_merge_plan_add(P, fc_xstrdup(t->name), t, 0, 0);
        for (int i = 0; i < nm && !rc; i++) rc = plan_input(P, cfg, st[i], list[i].path, i, t->name, err);
      }
      continue;
    }
    for (int a = 0, b; a < cfg->nslices && !rc; a = b) {
      for (b = a + 1; b < cfg->nslices && cfg->slices[b].group == cfg->slices[a].group; b++) {}
      if ((rc = group_sources(cfg, a, b, list, nm, src, &bsrc, err))) break;
      if (base && !bsrc) {
        rc = fc_err_set(err, FC_EINVAL, "slice %d: the base model %s is not among its sources (name it in every "
                        "slice, with the layer range it contributes)", cfg->slices[a].group + 1, cfg->base);
        break;
      }
      const fc_merge_slice_t *ls = base ? bsrc : src[0];
      for (int e = a; e < b && !rc; e++) {
        const fc_merge_slice_t *s = &cfg->slices[e];
        fc_st_t *f = s == bsrc ? base : NULL;
        for (int i = 0; i < nm && !f; i++) f = s == src[i] ? st[i] : NULL;
        const int nl = model_layers(f), last = s->last < 0 ? nl : s->last;
        if (s->first < 0 || last <= s->first || last > nl)
          rc = fc_err_set(err, FC_EINVAL, "slice %d: layer_range [%d, %d] is not within the %d layers of %s",
                          s->group + 1, s->first, last, nl, s->model);
      }
      const int len = (ls->last < 0 ? model_layers(lay) : ls->last) - ls->first;
      for (int o = 0; o < len && !rc; o++, P->depth++) {
        const double t = len > 1 ? (double)o / (double)(len - 1) : 1.0; /* mergekit's plan_slice */
        for (size_t k = 0; k < fc_st_count(lay) && !rc; k++) {
          const fc_st_tensor_t *lt = fc_st_at(lay, k);
          if (fc_merge_layer_index(lt->name) != ls->first + o) continue;
          fc_merge_plan_add(P, renumber(lt->name, P->depth), lt, t, 0);
          for (int i = 0; i < nm && !rc; i++) {
            char *in = renumber(lt->name, src[i]->first + o);
            rc = plan_input(P, cfg, st[i], list[i].path, i, in, err);
            free(in);
          }
        }
      }
    }
  }
  return rc;
}
