/* Weights used in place for inference: the safetensors files stay memory-mapped and the model's
 * matrices are the file's bytes (f32 as they are, bf16/f16 through fc_wlin.h), so loading
 * copies nothing big and the model costs its file's size, shared with the page cache. */
#include "fc_model_impl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fc_arch.h"
#include "fc_ops.h"

/* The 16-bit dtype every matrix of the file shares, or F32 (the f32 path, with copies of the
 * matrices that are not f32) when they differ. */
static fc_dtype_t matrix_dtype(const fc_model_t *m, const fc_st_tensor_t *const *t) {
  fc_dtype_t dt = FC_DT_COUNT;
  for (size_t i = 0; i < m->ntensors; i++) {
    if (m->info[i].ndim != 2) continue;
    if (dt == FC_DT_COUNT) dt = t[i]->dtype;
    else if (t[i]->dtype != dt) return FC_DT_F32;
  }
  return dt == FC_DT_BF16 || dt == FC_DT_F16 ? dt : FC_DT_F32;
}

/* Floats of `owned` tensor i needs: 0 when the mapping serves it as it is. */
static size_t owned_floats(const fc_model_t *m, const fc_st_tensor_t *t, size_t i) {
  int matrix = m->info[i].ndim == 2;
  fc_dtype_t want = matrix ? m->wdt : FC_DT_F32;
  size_t align = fc_dtype_size(want);
  if (t->dtype == want && (uintptr_t)t->data % align == 0) return 0;
  size_t bytes = (size_t)t->numel * fc_dtype_size(want);
  return ((bytes + 3) / 4 + 15) & ~(size_t)15; /* 64-byte aligned slices */
}

int fc_model_load_mapped(fc_model_t **out, const char *dir, fc_err_t *err) {
  *out = NULL;
  fc_config_t cfg;
  int rc = fc_config_load(&cfg, dir, err);
  if (rc) return fc_err_wrap(err, "loading model %s", dir);
  if ((rc = fc_model_check_config(&cfg, err))) return rc;
  if (fc_arch_handles(&cfg)) return fc_model_load(out, dir, err); /* the source families copy */
  fc_st_t *st;
  if ((rc = fc_st_open(&st, dir, err))) return fc_err_wrap(err, "loading model %s", dir);
  fc_model_t *m = fc_model_new_layout(&cfg, 0);
  m->st = st;
  const fc_st_tensor_t **t = fc_xcalloc(m->ntensors, sizeof *t);
  float **at = fc_xcalloc(m->ntensors, sizeof *at);
  for (size_t i = 0; i < m->ntensors && !rc; i++) rc = fc_model_file_tensor(m, st, i, dir, &t[i], err);
  if (!rc) {
    m->wdt = matrix_dtype(m, t);
    size_t total = 0;
    for (size_t i = 0; i < m->ntensors; i++) total += owned_floats(m, t[i], i);
    if (total && posix_memalign((void **)&m->owned, 64, total * sizeof(float))) {
      fprintf(stderr, "fusechat: out of memory (%zu bytes of converted weights)\n", total * sizeof(float));
      abort();
    }
    size_t off = 0;
    for (size_t i = 0; i < m->ntensors && !rc; i++) {
      size_t n = owned_floats(m, t[i], i);
      if (!n) { /* the file's bytes: writes would fault, and nothing writes weights at inference */
        at[i] = (float *)(uintptr_t)t[i]->data;
        continue;
      }
      at[i] = m->owned + off;
      off += n;
      if (m->info[i].ndim == 2 && m->wdt != FC_DT_F32) {
        if (t[i]->dtype == m->wdt) memcpy(at[i], t[i]->data, t[i]->nbytes); /* misaligned in the file */
        else rc = fc_err_set(err, FC_EINVAL, "loading model %s: %s is not %s", dir, m->info[i].name,
                             fc_dtype_name(m->wdt)); /* unreachable: matrix_dtype saw them all */
      } else {
        rc = fc_st_to_f32(t[i], at[i], err);
      }
      if (rc) fc_err_wrap(err, "loading model %s: %s", dir, m->info[i].name);
    }
  }
  if (!rc) fc_model_layout_at(m, at);
  free(at);
  free((void *)t);
  if (rc) {
    fc_model_destroy(&m);
    return rc;
  }
  m->wgemm = fc_wgemm_default();
  *out = m;
  return 0;
}

int fc_model_in_place(const fc_model_t *m) { return m->st != NULL; }
fc_dtype_t fc_model_weight_dtype(const fc_model_t *m) { return m->wdt; }

void fc_model_linear(fc_model_t *m, float *out, const float *inp, const float *w, const float *bias, int N, int IN,
                     int OUT, int accumulate) {
  if (m->wdt == FC_DT_F32) {
    fc_linear_forward(out, inp, w, bias, N, IN, OUT, accumulate);
    return;
  }
  if (!m->panel && posix_memalign((void **)&m->panel, 64, FC_WLIN_PANEL_FLOATS * sizeof(float))) {
    fprintf(stderr, "fusechat: out of memory (weight panel)\n");
    abort();
  }
  fc_wlinear_forward(out, inp, (const uint16_t *)(const void *)w, m->wdt, bias, N, IN, OUT, accumulate, m->panel,
                     m->wgemm, fc_model_par_threads(m));
}

void fc_model_embed(const fc_model_t *m, float *x, const int32_t *ids, size_t n) {
  size_t C = (size_t)m->cfg.hidden_size;
  for (size_t i = 0; i < n; i++) {
    if (m->wdt == FC_DT_F32)
      memcpy(x + i * C, m->w.embed + (size_t)ids[i] * C, C * sizeof(float));
    else
      fc_wlinear_rows(x + i * C, (const uint16_t *)(const void *)m->w.embed, m->wdt, (size_t)ids[i], 1, C);
  }
}
