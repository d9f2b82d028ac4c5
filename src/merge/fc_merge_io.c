/* The merge's inputs and output: the pages of the memory-mapped inputs (mapped ahead of each
 * run, dropped after each tensor) and the whole-model runner, which checks that the models
 * agree, streams every tensor into safetensors shards laid out like the base's, and copies
 * the base's config and tokenizer files. */
#include "fc_merge_impl.h"

#include "fc_par.h"

#include <jansson.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* linear only takes the base's layout; nuslerp interpolates the deltas from a base when given;
 * passthrough copies slices. */
int fc_merge_method_needs_base(fc_merge_method_t m) {
  return m != FC_MERGE_LINEAR && m != FC_MERGE_NUSLERP && m != FC_MERGE_MULTISLERP && m != FC_MERGE_KARCHER &&
         m != FC_MERGE_PASSTHROUGH;
}

/* Page handling for inputs mapped from files. A finished tensor's pages are dropped from our
 * mapping, so resident memory stays at the tensors in flight instead of growing to whole
 * models (the page cache keeps them anyway); pages are mapped ahead of use a run at a time,
 * which costs less than a fault per few pages. */
static void page_range(const void *p, size_t n, uintptr_t *a, uintptr_t *e) {
  const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), s = (uintptr_t)p;
  *a = s & ~(pg - 1);
  *e = (s + n + pg - 1) & ~(pg - 1);
}

static void release_pages(const fc_st_tensor_t *t) {
  if (!t || !t->nbytes) return;
  uintptr_t a, e;
  page_range(t->data, t->nbytes, &a, &e);
  madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Maps elements [e0, e1) of every input. */
void fc_merge_populate(const job_t *J, size_t e0, size_t e1) {
#ifdef MADV_POPULATE_READ
  for (int i = -1; i < J->nm; i++) {
    const fc_st_tensor_t *t = i < 0 ? J->base : J->models[i];
    if (!t || e1 <= e0) continue;
    size_t es = fc_dtype_size(t->dtype);
    uintptr_t a, e;
    page_range((const uint8_t *)t->data + e0 * es, (e1 - e0) * es, &a, &e);
    madvise((void *)a, e - a, MADV_POPULATE_READ);
  }
#else
  (void)J;
  (void)e0;
  (void)e1;
#endif
}

/* ---- whole-model runner ---- */

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* config.json with torch_dtype set to the output dtype (and num_hidden_layers to nlayers), and
 * the tokenizer files, from the base model's directory (when the base is a directory). */
int fc_merge_copy_side_files(const char *base_path, const char *out_dir, int dtype, int nlayers, fc_err_t *err) {
  return fc_merge_copy_side_files2(base_path, base_path, out_dir, dtype, nlayers, -1, err);
}

/* The ChatML template for chat_template: chatml (written from the format's definition). */
static const char CHATML[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* chat_template: "auto" keeps the tokenizer source's, "chatml" or a Jinja text (it has "{%" or
 * "{{") replaces it in tokenizer_config.json; anything else is refused before the merge. */
int fc_merge_chat_template_check(const char *t, fc_err_t *err) {
  if (!t || !strcmp(t, "auto") || !strcmp(t, "chatml") || strstr(t, "{%") || strstr(t, "{{")) return 0;
  return fc_err_set(err, FC_EINVAL, "chat_template '%s' is not supported (auto, chatml or a Jinja template)", t);
}

static int write_chat_template(const char *out_dir, const char *t, fc_err_t *err) {
  if (!t || !strcmp(t, "auto")) return 0;
  char *path = fc_path_join(out_dir, "tokenizer_config.json");
  json_t *root = fc_path_exists(path) ? json_load_file(path, 0, NULL) : json_object();
  int rc = 0;
  if (!root || !json_is_object(root)) rc = fc_err_set(err, FC_EFORMAT, "%s: not a JSON object", path);
  else {
    json_object_set_new(root, "chat_template", json_string(strcmp(t, "chatml") ? t : CHATML));
    char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    rc = fc_write_text_file(path, txt, err);
    free(txt);
  }
  json_decref(root);
  free(path);
  return rc;
}

/* config.json from cfg_dir (torch_dtype, layer count and vocab_size set when >= 0), the
 * tokenizer files from tok_dir. */
int fc_merge_copy_side_files2(const char *base_path, const char *tok_dir, const char *out_dir, int dtype,
                              int nlayers, long vocab, fc_err_t *err) {
  static const char *files[] = {"tokenizer.json",     "tokenizer_config.json", "special_tokens_map.json",
                                "tokenizer.model",    "vocab.json",            "merges.txt",
                                "added_tokens.json",  "generation_config.json", "chat_template.jinja"};
  char *cfg = fc_path_join(base_path, "config.json");
  int rc = 0;
  if (fc_path_exists(cfg)) {
    char *dst = fc_path_join(out_dir, "config.json");
    if (dtype < 0 && nlayers < 0 && vocab < 0) {
      rc = fc_copy_file(cfg, dst, err);
    } else {
      json_error_t jerr;
      json_t *root = json_load_file(cfg, 0, &jerr);
      if (!root) rc = fc_err_set(err, FC_EFORMAT, "%s: %s (line %d)", cfg, jerr.text, jerr.line);
      else {
        const char *tn = dtype == FC_DT_BF16 ? "bfloat16" : dtype == FC_DT_F16 ? "float16" : "float32";
        if (dtype >= 0) json_object_set_new(root, "torch_dtype", json_string(tn));
        /* The layer count under the key the config uses (GPT-2's n_layer), else Llama's. */
        const char *lk = json_object_get(root, "n_layer") && !json_object_get(root, "num_hidden_layers")
                             ? "n_layer" : "num_hidden_layers";
        if (nlayers >= 0) json_object_set_new(root, lk, json_integer(nlayers));
        if (vocab >= 0) json_object_set_new(root, "vocab_size", json_integer(vocab));
        char *txt = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        rc = fc_write_text_file(dst, txt, err);
        free(txt);
      }
    }
    free(dst);
  }
  free(cfg);
  for (size_t i = 0; i < sizeof files / sizeof files[0] && !rc; i++) {
    char *src = fc_path_join(tok_dir, files[i]);
    if (fc_path_exists(src)) {
      char *dst = fc_path_join(out_dir, files[i]);
      rc = fc_copy_file(src, dst, err);
      free(dst);
    }
    free(src);
  }
  return rc;
}

/* The tensors indexed by token (tokenizer_source permutes their rows). */
int fc_merge_vocab_tensor(const fc_st_tensor_t *t) {
  return t->ndim == 2 && (strstr(t->name, "embed_tokens") || strstr(t->name, "lm_head") || strstr(t->name, "wte"));
}

/* One embedding tensor merged from the inputs' rows put in the output vocabulary's order (f32
 * copies: the base, when used, as input 0 of perm). */
static int merge_permuted(workspace_t *ws, const fc_merge_cfg_t *tcfg, const fc_st_tensor_t *b,
                          const fc_st_tensor_t *const *ins, int nm, int32_t *const *perm, int nin, size_t nv,
                          size_t nrows, int use_base, int fd, uint64_t pos, fc_dtype_t dt, double *mw, int threads,
                          fc_err_t *err) {
  const size_t h = (size_t)b->shape[1];
  const int has_base = nin > nm;
  const fc_st_tensor_t *src[FC_MERGE_MAX_MODELS + 1];
  if (has_base) src[0] = b;
  for (int i = 0; i < nm; i++) src[nin - nm + i] = ins[i];
  fc_st_tensor_t *pt = fc_xcalloc((size_t)nin, sizeof *pt);
  const fc_st_tensor_t *pm[FC_MERGE_MAX_MODELS];
  for (int k = 0; k < nin; k++) {
    float *data = fc_xmalloc(nrows * h * sizeof *data);
    fc_merge_vocab_permute(src, nin, has_base ? 0 : -1, perm, nv, nrows, h, k, data);
    pt[k] = (fc_st_tensor_t){.name = b->name, .dtype = FC_DT_F32, .ndim = 2, .shape = {(int64_t)nrows, (int64_t)h},
                             .numel = (int64_t)(nrows * h), .nbytes = nrows * h * 4, .data = data};
    if (k >= nin - nm) pm[k - (nin - nm)] = &pt[k];
  }
  int rc = fc_merge_tensor_raw(ws, tcfg, b->name, use_base && has_base ? &pt[0] : NULL, pm, NULL, fd, pos, dt, mw,
                               threads, 0, err);
  for (int k = 0; k < nin; k++) free((void *)pt[k].data);
  free(pt);
  return rc;
}

int fc_merge_same_path(const char *a, const char *b) {
  char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
  int same = ra && rb ? !strcmp(ra, rb) : !strcmp(a, b);
  free(ra);
  free(rb);
  return same;
}
int fc_merge_run(const fc_merge_cfg_t *cfg_in, const char *out_dir, fc_err_t *err) {
  fc_merge_cfg_t cfg = *cfg_in;
  fc_merge_method_t M = cfg.method;
  if (M == FC_MERGE_PASSTHROUGH) {
    if (cfg.tokenizer_source)
      return fc_err_set(err, FC_EINVAL, "tokenizer_source is not supported with passthrough (the output takes the "
                        "first slice's tokenizer): remove it");
    fc_merge_slice_t whole = {cfg.nmodels == 1 ? cfg.models[0].path : NULL, 0, -1, 0};
    if (!cfg.nslices && cfg.nmodels != 1)
      return fc_err_set(err, FC_EINVAL, "passthrough copies one model or stacks slices (%d models given)", cfg.nmodels);
    if (!cfg.nslices) cfg.slices = &whole, cfg.nslices = 1;
    return fc_merge_passthrough_run(&cfg, out_dir, err);
  }
  if (cfg.nmodels < 1) return fc_err_set(err, FC_EINVAL, "no models to merge");
  const int use_base = M != FC_MERGE_LINEAR && cfg.base;
#define method_uses_base(m) use_base
  if (M == FC_MERGE_KARCHER && cfg.base)
    return fc_err_set(err, FC_EINVAL, "karcher averages the listed models; remove base_model (mergekit "
                      "would average it too: list it under models)");
  if (fc_merge_method_needs_base(M) && !cfg.base)
    return fc_err_set(err, FC_EINVAL, "%s needs a base model", fc_merge_method_name(M));
  int have_t = cfg.t == cfg.t;
  for (int s = 0; s < cfg.nsettings; s++) have_t |= cfg.settings[s].key == FC_MP_T;
  if (fc_merge_method_pairwise(M) && !have_t)
    return fc_err_set(err, FC_EINVAL, "%s needs the parameter t", fc_merge_method_name(M));
  if (cfg.dtype >= 0 && cfg.dtype != FC_DT_F32 && cfg.dtype != FC_DT_F16 && cfg.dtype != FC_DT_BF16)
    return fc_err_set(err, FC_EINVAL, "output dtype must be float32, float16 or bfloat16");
  /* Task-vector methods skip the base if it is also listed, as mergekit does. */
  fc_merge_model_t *list = fc_xmalloc((size_t)cfg.nmodels * sizeof *list);
  int *newidx = fc_xmalloc((size_t)cfg.nmodels * sizeof *newidx);
  int nm = 0;
  for (int i = 0; i < cfg.nmodels; i++) {
    newidx[i] = -1;
    if (method_uses_base(M) && fc_merge_same_path(cfg.models[i].path, cfg.base)) continue;
    newidx[i] = nm;
    list[nm++] = cfg.models[i];
  }
  /* The settings follow their models to the new indices (the skipped base's are dropped). */
  fc_merge_setting_t *sets = fc_xmalloc((size_t)(cfg.nsettings ? cfg.nsettings : 1) * sizeof *sets);
  int nsets = 0;
  for (int s = 0; s < cfg.nsettings; s++) {
    fc_merge_setting_t st = cfg.settings[s];
    if (st.model >= 0 && (st.model = newidx[st.model]) < 0) continue;
    sets[nsets++] = st;
  }
  free(newidx);
  cfg.settings = sets;
  cfg.nsettings = nsets;
  fc_merge_model_t tmodels[FC_MERGE_MAX_MODELS];
  int nlayers = 0;
  fc_merge_plan_t P = {.depth = -1};
  const char *base_path = cfg.base ? cfg.base : list[0].path;
  int rc = 0;
  fc_st_t *base = NULL, **st = fc_xcalloc((size_t)(nm ? nm : 1), sizeof *st);
  const fc_st_tensor_t **ins = fc_xcalloc((size_t)(nm ? nm : 1), sizeof *ins);
  fc_st_spec_t *specs = NULL;
  const char **fnames = NULL, **tnames = NULL;
  workspace_t ws = {0};
  fc_st_writer_t *w = NULL;
  const char *tok_dir = NULL;
  int32_t **perm = NULL;
  int nin = 0;
  size_t nvocab = 0, nrows = 0;
  char *union_tok = NULL, *union_added = NULL;
  if ((rc = fc_merge_chat_template_check(cfg.chat_template, err))) goto out;
  if (nm == 0) {
    rc = fc_err_set(err, FC_EINVAL, "no models besides the base to merge");
    goto out;
  }
  if (nm > FC_MERGE_MAX_MODELS) {
    rc = fc_err_set(err, FC_EINVAL, "at most %d models", FC_MERGE_MAX_MODELS);
    goto out;
  }
  if ((fc_merge_method_pairwise(M) || M == FC_MERGE_ARCEE_FUSION) && nm != 1) {
    rc = fc_err_set(err, FC_EINVAL, "%s merges the base with exactly one other model (%d given)",
                    fc_merge_method_name(M), nm);
    goto out;
  }
  cfg.models = list;
  cfg.nmodels = nm;
  /* Writing into an input's directory would replace that input. */
  for (int i = -1; i < nm; i++) {
    const char *p = i < 0 ? base_path : list[i].path;
    if (fc_merge_same_path(p, out_dir)) {
      rc = fc_err_set(err, FC_EINVAL, "the output directory %s is an input model", out_dir);
      goto out;
    }
  }
  if ((rc = fc_st_open(&base, base_path, err))) goto out;
  for (int i = 0; i < nm; i++)
    if ((rc = fc_st_open(&st[i], list[i].path, err))) goto out;
  /* tokenizer_source: the vocabulary of the base or of one model; the inputs' embedding rows
   * are put in its order (input 0 the base when one is named, then the models). */
  if (cfg.tokenizer_source) {
    const char *ts = cfg.tokenizer_source;
    const int uni = !strcmp(ts, "union");
    /* union: the tokenizer files (but tokenizer.json) come from the base, else the first model */
    tok_dir = !strcmp(ts, "base") || uni ? base_path : NULL;
    for (int i = -1; i < cfg_in->nmodels && !tok_dir; i++) {
      const char *p = i < 0 ? cfg.base : cfg_in->models[i].path;
      if (p && (!strcmp(p, ts) || fc_merge_same_path(p, ts))) tok_dir = p;
    }
    if (!tok_dir) {
      rc = fc_err_set(err, FC_EINVAL, "tokenizer_source '%s' is not base, union or a model of the merge", ts);
      goto out;
    }
    nin = nm + (cfg.base ? 1 : 0);
    const char **dirs = fc_xmalloc((size_t)nin * sizeof *dirs);
    if (cfg.base) dirs[0] = cfg.base;
    for (int i = 0; i < nm; i++) dirs[nin - nm + i] = list[i].path;
    perm = fc_xcalloc((size_t)nin, sizeof *perm);
    rc = uni ? fc_merge_vocab_union(dirs, nin, perm, &nvocab, &union_tok, &union_added, err)
             : fc_merge_vocab_perms(tok_dir, dirs, nin, perm, &nvocab, err);
    free(dirs);
    if (rc) goto out;
    nrows = nvocab;
    if (cfg.tokenizer_pad > 0 && nrows % (size_t)cfg.tokenizer_pad)
      nrows += (size_t)cfg.tokenizer_pad - nrows % (size_t)cfg.tokenizer_pad;
  } else if (cfg.tokenizer_pad > 0) {
    rc = fc_err_set(err, FC_EINVAL, "tokenizer pad_to_multiple_of needs a tokenizer source (base, union or a model)");
    goto out;
  }
  /* Same tensor names and shapes everywhere (merges by slices check theirs as they plan). */
  if (cfg.nslices) {
    rc = fc_merge_plan_slices(&P, &cfg, use_base ? base : NULL, st, list, nm, err);
  } else {
    P.nm = nm;
    for (size_t k = 0; k < fc_st_count(base); k++) {
      const fc_st_tensor_t *b = fc_st_at(base, k);
      fc_merge_plan_add(&P, fc_xstrdup(b->name), b, 0, b->shard);
    }
    size_t nt = fc_st_count(base);
    for (int i = 0; i < nm && !rc; i++) {
      for (size_t k = 0; k < nt && !rc; k++) {
        const fc_st_tensor_t *b = fc_st_at(base, k), *t = fc_st_find(st[i], b->name);
        if (!t) {
          rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' is missing from %s", b->name, list[i].path);
          break;
        }
        P.in[k * (size_t)nm + (size_t)i] = t;
        int same = t->ndim == b->ndim;
        for (int d = perm && fc_merge_vocab_tensor(b) ? 1 : 0; same && d < b->ndim; d++) same = t->shape[d] == b->shape[d];
        if (!same) {
          int vocab = strstr(b->name, "embed_tokens") || strstr(b->name, "lm_head") || strstr(b->name, "wte");
          rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' has shape %lldx... in %s but %lldx... in %s%s",
                          b->name, b->ndim ? (long long)t->shape[0] : 1LL, list[i].path,
                          b->ndim ? (long long)b->shape[0] : 1LL, base_path,
                          vocab ? " (the vocabularies differ in size; merging them is not supported)" : "");
        } else if (fc_merge_float_dt(b->dtype) != fc_merge_float_dt(t->dtype)) {
          rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' is %s in %s but %s in %s", b->name,
                          fc_dtype_name(t->dtype), list[i].path, fc_dtype_name(b->dtype), base_path);
        }
      }
      if (!rc && fc_st_count(st[i]) != nt) {
        for (size_t k = 0; k < fc_st_count(st[i]); k++)
          if (!fc_st_find(base, fc_st_at(st[i], k)->name)) {
            rc = fc_err_set(err, FC_EMISMATCH, "tensor '%s' of %s is not in the base %s",
                            fc_st_at(st[i], k)->name, list[i].path, base_path);
            break;
          }
      }
    }
    for (size_t k = 0; k < nt; k++) {
      int li = fc_merge_layer_index(P.name[k]);
      if (li + 1 > nlayers) nlayers = li + 1;
    }
    for (size_t k = 0; k < nt; k++) P.t[k] = fc_merge_layer_t(P.name[k], nlayers);
  }
  if (rc) goto out;
  if ((rc = fc_mkdir_p(out_dir, err))) goto out;
  const size_t nt = P.n;

  /* Output layout: the base's shards and order, the base's dtype unless cfg.dtype says. */
  specs = fc_xcalloc(nt ? nt : 1, sizeof *specs);
  fnames = fc_xcalloc(nt ? nt : 1, sizeof *fnames);
  tnames = fc_xcalloc(nt ? nt : 1, sizeof *tnames);
  size_t nshards = cfg.nslices ? 1 : fc_st_num_shards(base);
  uint64_t total = 0;
  for (size_t k = 0; k < nt; k++) {
    const fc_st_tensor_t *b = P.lay[k];
    specs[k].name = P.name[k];
    specs[k].ndim = b->ndim;
    memcpy(specs[k].shape, b->shape, sizeof b->shape);
    if (perm && fc_merge_vocab_tensor(b)) specs[k].shape[0] = (int64_t)nrows;
    fc_dtype_t od = b->dtype;
    if (fc_merge_float_dt(b->dtype)) {
      if (cfg.dtype >= 0) od = (fc_dtype_t)cfg.dtype;
      else if (od == FC_DT_F64) od = FC_DT_F32;
    }
    specs[k].dtype = od;
    tnames[k] = P.name[k];
    fnames[k] = nshards > 1 ? base_name(fc_st_shard_path(base, (size_t)P.shard[k])) : "model.safetensors";
    total += (uint64_t)b->numel * fc_dtype_size(od);
  }
  fc_merge_stats_t local = {0};
  fc_merge_stats_t *stats = cfg.stats ? cfg.stats : &local;
  memset(stats, 0, sizeof *stats);
  stats->nmodels = nm;
  for (int i = 0; i < nm; i++) stats->model_path[i] = list[i].path;
  double t0 = fc_now();
  int threads = cfg.threads > 0 ? cfg.threads : fc_par_cores();
  size_t nweighted = 0;
  for (size_t k = 0; k < nt && !rc;) {
    int shard = P.shard[k];
    size_t k1 = k;
    while (k1 < nt && P.shard[k1] == shard) k1++;
    char *path = fc_path_join(out_dir, fnames[k]);
    rc = fc_st_writer_new(&w, path, specs + k, k1 - k, (const char *const[]){"format", "pt", NULL}, err);
    free(path);
    /* A full disk fails here, before the work, not after. */
    if (!rc) rc = fc_st_writer_reserve(w, err);
    for (size_t j = k; j < k1 && !rc; j++) {
      const fc_st_tensor_t *b = P.lay[j];
      const char *name = P.name[j];
      for (int i = 0; i < nm; i++) ins[i] = P.in[j * (size_t)nm + (size_t)i];
      if (!fc_merge_float_dt(b->dtype)) {
        fc_warn("tensor '%s' is %s, not a float type: copied from the base", name,
                fc_dtype_name(b->dtype));
        rc = fc_st_writer_put_raw(w, j - k, b->data, b->nbytes, err);
      } else {
        double mw[FC_MERGE_MAX_MODELS];
        int fd;
        uint64_t pos;
        fc_merge_cfg_t tcfg = cfg;
        if (cfg.nsettings) fc_merge_resolve(&cfg, name, P.t[j], &tcfg, tmodels);
        rc = fc_st_writer_put_at(w, j - k, &fd, &pos, err);
        if (!rc && fc_merge_method_pairwise(M) && !(tcfg.t == tcfg.t))
          rc = fc_err_set(err, FC_EINVAL, "%s: no value of t applies to tensor '%s'", fc_merge_method_name(M),
                          name);
        if (!rc && perm && fc_merge_vocab_tensor(b)) {
          rc = merge_permuted(&ws, &tcfg, b, ins, nm, perm, nin, nvocab, nrows, method_uses_base(M), fd, pos,
                              specs[j].dtype, mw, threads, err);
        } else if (!rc)
          rc = fc_merge_tensor_raw(&ws, &tcfg, name, method_uses_base(M) ? b : NULL, ins, NULL, fd, pos,
                                specs[j].dtype, mw, threads, 1, err);
        if (!rc) {
          fc_st_writer_put_done(w, j - k);
          for (int i = 0; i < nm; i++) stats->mean_weight[i] += mw[i];
          nweighted++;
        }
      }
      stats->bytes_in += (double)b->nbytes * (method_uses_base(M) ? 1 : 0);
      for (int i = 0; i < nm; i++) stats->bytes_in += (double)ins[i]->nbytes;
      release_pages(b);
      for (int i = 0; i < nm; i++) release_pages(ins[i]);
      stats->ntensors++;
      if (!rc && cfg.progress && cfg.progress(cfg.progress_ctx, (double)(j + 1) / (double)nt, b->name))
        rc = fc_err_set(err, FC_ECANCEL, "merge cancelled after tensor '%s'", b->name);
    }
    if (!rc) rc = fc_st_writer_finish(&w, err);
    k = k1;
  }
  if (rc) goto out;
  for (int i = 0; i < nm && nweighted; i++) stats->mean_weight[i] /= (double)nweighted;
  {
    /* A file left by an earlier merge in the other layout would shadow this one. */
    char *ip = fc_path_join(out_dir, "model.safetensors.index.json");
    char *sp = fc_path_join(out_dir, "model.safetensors");
    if (nshards > 1) {
      unlink(sp);
      rc = fc_st_write_index(ip, nt, tnames, fnames, total, err);
    } else {
      unlink(ip);
    }
    free(ip);
    free(sp);
    if (rc) goto out;
  }
  if ((rc = fc_merge_copy_side_files2(base_path, tok_dir ? tok_dir : base_path, out_dir, cfg.dtype, P.depth,
                                      perm ? (long)nrows : -1, err)))
    goto out;
  if (union_tok && (rc = fc_merge_vocab_write_union(out_dir, union_tok, union_added, err))) goto out;
  if ((rc = write_chat_template(out_dir, cfg.chat_template, err))) goto out;
  stats->seconds = fc_now() - t0;
out:
  if (w) fc_st_writer_abort(&w);
  fc_merge_plan_free(&P);
  for (int k = 0; perm && k < nin; k++) free(perm[k]);
  free(perm);
  free(union_tok);
  free(union_added);
  free(ws.var);
  free(ws.bcnt);
  free(specs);
  free(fnames);
  free(tnames);
  for (int i = 0; i < nm; i++) fc_st_close(&st[i]);
  free(st);
  free(ins);
  fc_st_close(&base);
  free(list);
  free(sets);
  return rc;
#undef method_uses_base
}
