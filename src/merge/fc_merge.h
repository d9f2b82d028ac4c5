/* Model merging (FuseChat's SCE and VaRM, and mergekit's linear, task arithmetic, TIES, DARE,
 * Model Breadcrumbs, DELLA and SLERP), streamed tensor by tensor over memory-mapped inputs so
 * memory stays at a few tensors.
 * Every method follows mergekit's definition (same parameter names, defaults and results); where
 * a detail is ours (tie-breaking, the DARE mask) it is stated here. */
/*
 * Notes on the definitions (read from mergekit's merge_methods/ and sparsify.py, and from
 * FuseAI's FuseChat/mergekit/.../sce_merging.py and FuseChat/merge/VaRM/merge.py):
 * - TIES keeps k = int(density * numel) elements of each d_i by |d_i| (mergekit: argsort;
 *   k == 0 is an error, as its assert); ties at the boundary go to the lower index. The
 *   majority sign is that of sum_i w_i d_i' (zero counts as positive); an entry agrees when
 *   sign(w_i d_i') equals it, so zeros never count; divisor sum_i w_i m_i, 0 -> 1.
 * - task_arithmetic / dare_linear: divisor sum_i w_i, |.| < 1e-8 -> 1, applied only when
 *   normalize (default off). linear divides by sum_i w_i when normalize (default on); a zero
 *   sum is an error here (mergekit would produce inf/nan).
 * - DARE: mergekit draws torch.bernoulli; ours is the counter-based mask below, so runs are
 *   reproducible across runs and thread counts. rescale divides survivors by density.
 * - SCE follows current mergekit (sce.py, 2025): k = int(count_nonzero(var) * select_topk)
 *   (a float32 product), weights from the *masked* deltas, uniform when their sum is below
 *   1e-6, divisor clamped to 1e-6. Older mergekit (2024) and FuseChat's release guard with
 *   "sum == 0 -> uniform" and "divisor == 0 -> 1" instead. Beware: with real fine-tuning
 *   deltas (|d| ~ 1e-4..1e-3) the mean squares sum to less than 1e-6 on many tensors, and then
 *   upstream SCE (and ours) silently uses uniform weights there.
 * - sce_mask_scope=weights reproduces FuseChat's release: the variance selection only feeds
 *   the weights; the erase step and the merge use the full deltas.
 * - VaRM: W_i = mean(d_i^2) / sum_j mean(d_j^2) per tensor, uniform when the sum is 0; the
 *   release script computes its weights offline from an analysis file.
 * - slerp: mergekit's (normalised copies for the angle, |dot| > 0.9995 -> lerp, eps 1e-8).
 * - nearswap: mergekit's, in f32: w = clamp(t / max(|base - model|, 1e-6), 0, 1),
 *   w model + (1 - w) base: the model's values where it is within t of the base.
 * - model_stock: mergekit's: c = the mean over pairs of models of
 *   clamp(d_i.d_j / max(|d_i| |d_j|, 1e-6), -1, 1) over the whole tensor (f64 sums), or with
 *   filter_wise over each row of the last dimension (a 1-D tensor is one row), t = N c /
 *   (1 + (N - 1) c) as f32, t (sum_i M_i / N) + (1 - t) base in f32; at least two models
 *   besides the base.
 * - nuslerp: mergekit's: two models, or their deltas when a base is given, t = w_1 / (w_0 +
 *   w_1) (0.5 when |w_0 + w_1| < 1e-6), the angle from the whole tensors (nuslerp_flatten, the
 *   default), else from each row of the last dimension, or with nuslerp_row_wise from each
 *   vector along the first (norms clamped to 1e-7, f64 sums), coefficients sin((1-t)th)/sin th
 *   and sin(t th)/sin th as f32 (lerp when |sin th| < 1e-8); mergekit divides the f32 sum by
 *   sin th instead (last-bit differences). Per-row sums take one thread per chunk of rows;
 *   per-column sums run in one thread.
 * - multislerp: mergekit projects the unit vectors u_i = x_i / (|x_i| + 1e-8) (x_i: the models,
 *   or their deltas from an optional base) to the tangent space at their normalised weighted
 *   mean m and back; the tangent sum is sum_i w_i (u_i - (u_i.m) m) = 0 in exact arithmetic,
 *   so the result is m |sum_i w_i u_i|^-1 times sum_i w_i |x_i|: here sum_i c_i x_i with f32
 *   coefficients from the Gram matrix (f64 sums). normalize_weights (default true) divides
 *   the weights by their sum; a zero mean falls back to the weighted sum for two models and is
 *   an error for more, as mergekit's, except that a tensor where every model equals the base
 *   (all norms zero, common for untouched norms) merges to the base.
 * - karcher: mergekit's iteration (equal weights, max_iter 10, tol 1e-5), run on coefficients
 *   over the models (the mean stays in their span), from their Gram matrix in f64; the result
 *   is sum_i c_i M_i with f32 c_i. mergekit averages the base too when one is named; here a
 *   base_model is refused.
 * - arcee_fusion: mergekit's: importance |M - B| kl_row, kl_row = sum p log(p / q) over the row
 *   (last dimension), p and q the softmaxes of M's and B's row plus 1e-8 (here in f64, the sum
 *   cast to f32); the model's value where importance >= median + 1.5 (q3 - q1), quartiles the
 *   sorted importances at int(q (n - 1)) (exact; mergekit samples a million elements of larger
 *   tensors at random), result B + (M - B) mask in f32.
 * - ram / ramplus_tl (mergekit's ram.py, RAM, arXiv 2601.13572): d_i = M_i - base counts as
 *   changed where |d_i| > epsilon (default 1e-5); where one model changed an element its delta
 *   is taken whole (ramplus_tl: times lambda_i), where c > 1 did the sum of theirs over c;
 *   ramplus_tl's lambda_i = 1 + r clamp(rho_i, 0, alpha), rho_i = shared_i / max(unique_i,
 *   epsilon) from model i's counts of changed elements others changed too / nobody else did,
 *   per tensor (mergekit's tensor-local variant), in f32 as its tensors.
 * - Per-element arithmetic is f32, sums over models in model order (as mergekit's with dtype
 *   float32; a sum of a few terms needs no wider accumulator). Exceptions, so that no rounding
 *   can decide a discrete choice: the majority sign of TIES/SCE is the sign of the exact sum
 *   (f64), and SCE selects on sum_i (n d_i - sum_j d_j)^2, which is n^3 times the population
 *   variance, orders elements as it does and needs no division. Long sums (mean squares, dot
 *   products) are f64. Results agree with the PyTorch reference within 1e-6 relative. mergekit
 *   computes in its config's `dtype` (often bf16), so a bf16 mergekit run agrees with ours to
 *   bf16 rounding. YAML `dtype`/`out_dtype` pick our output. With bf16 inputs, linear's and
 *   task arithmetic's normalisation multiplies by the reciprocal of the weight sum instead of
 *   dividing (the f32 result can differ in its last bit).
 * - DARE's rescale is 1/density (the DARE paper, mergekit 2024); mergekit's 2025 sparsify.py
 *   has a rescale_norm (l1/l2/linf norm matching) that newer versions may pass instead.
 * - breadcrumbs (mergekit's magnitude_outliers): target = int(density n), ntop = int(gamma n),
 *   fewer outliers when target + ntop > n; of the deltas by decreasing magnitude (ties to the
 *   lower index) the ntop first are dropped and the next target kept. mergekit slices
 *   sorted[nbot:-ntop], which keeps nothing when ntop is 0 (a small tensor, or gamma 0); we keep
 *   the target there, as the paper means. rescale (mergekit: l1 norm matching) is refused.
 *   Defaults: normalize off for both, gamma 0.01.
 * - DELLA (mergekit's della_magprune): ranks are taken within rows (2-D tensors: shape[0] rows;
 *   more dims: the rest flattened; 1-D: one row), ascending by |delta|, ties to the lower index;
 *   p = (density - epsilon) + rank / (cols - 1) * 2 epsilon in f32 (a one-column row: rank
 *   term 0, where mergekit divides by zero); the drop is the DARE draw with u < p. rescale
 *   divides survivors by their p (the DELLA paper's rescale, as our DARE's 1/density), where
 *   current mergekit matches the l1 norm instead. density - epsilon <= 0 or density + epsilon
 *   >= 1 is an error (mergekit's). Defaults: epsilon 0.15, rescale on, normalize on for della.
 * - lambda scales the merged delta of every task-vector method, after normalisation.
 * - Parameters per tensor (fc_merge_resolve): mergekit's config.py and plan.py. A model's own
 *   setting wins over a global one; within one, the first condition whose filter is a substring
 *   of the tensor's name; a gradient [v0..vk] at t is (1 - f) v_i + f v_(i+1), x = t k, i =
 *   int(x), f = x - i. The layer count is the largest layer index in the base's tensor names
 *   plus one (mergekit reads num_hidden_layers: the same for complete checkpoints).
 */
#ifndef FC_MERGE_H
#define FC_MERGE_H

#include <stddef.h>
#include <stdint.h>

#include "fc_st.h"
#include "fc_util.h"

typedef enum {
  FC_MERGE_LINEAR,          /* sum_i w_i M_i (/ sum_i w_i when normalize, default true) */
  FC_MERGE_TASK_ARITHMETIC, /* base + sum_i w_i d_i (/ sum w when normalize, default false) */
  FC_MERGE_TIES,            /* magnitude top-density, sign election, mean of agreeing (norm. on) */
  FC_MERGE_DARE_TIES,       /* random drop (counter mask), rescale 1/density, sign election */
  FC_MERGE_DARE_LINEAR,     /* random drop, rescale, weighted sum */
  FC_MERGE_SLERP,           /* spherical interpolation base -> other model, factor t */
  FC_MERGE_SCE,             /* FuseChat: select by variance, calculate weights, erase signs */
  FC_MERGE_VARM,            /* FuseChat v1: sum_i W_i M_i, W_i ~ mean(d_i^2) */
  FC_MERGE_BREADCRUMBS,     /* drop the largest gamma and the smallest deltas, weighted sum */
  FC_MERGE_BREADCRUMBS_TIES,/* the same sparsification, then TIES's sign election */
  FC_MERGE_DELLA,           /* magnitude-ranked random drop (epsilon), sign election (norm. on) */
  FC_MERGE_DELLA_LINEAR,    /* the same drop, weighted sum */
  FC_MERGE_NEARSWAP,        /* base -> one model, elementwise, by t / |difference| clamped */
  FC_MERGE_MODEL_STOCK,     /* t avg(M_i) + (1 - t) base, t from the mean angle of the deltas */
  FC_MERGE_NUSLERP,         /* slerp of two models (or their deltas from a base), t from weights */
  FC_MERGE_MULTISLERP,      /* barycentric interpolation of any number of models on the sphere */
  FC_MERGE_KARCHER,         /* Riemannian (Karcher) mean of the models' directions, mean norm */
  FC_MERGE_ARCEE_FUSION,    /* the model's values where their importance is an outlier, else base */
  FC_MERGE_RAM,             /* deltas changed by one model kept whole, by several averaged */
  FC_MERGE_RAMPLUS_TL,      /* RAM with each model's unique deltas scaled up by its overlap ratio */
  FC_MERGE_PASSTHROUGH,     /* layer ranges of models stacked into a new depth (slices), copied */
  FC_MERGE_COUNT
} fc_merge_method_t;

/* Methods that interpolate the base with exactly one other model by the parameter t. */
static inline int fc_merge_method_pairwise(fc_merge_method_t m) {
  return m == FC_MERGE_SLERP || m == FC_MERGE_NEARSWAP;
}

const char *fc_merge_method_name(fc_merge_method_t m);
/* Whether the method cannot run without a base model (fc_merge_run refuses it then). */
int fc_merge_method_needs_base(fc_merge_method_t m);
int fc_merge_method_parse(const char *s, fc_merge_method_t *out); /* 0 or FC_EINVAL */

/* Which elements SCE's selection applies to. */
typedef enum {
  FC_SCE_SCOPE_DELTAS,  /* upstream mergekit: unselected deltas are zeroed before erase/merge */
  FC_SCE_SCOPE_WEIGHTS, /* FuseChat release: selection only feeds the weight calculation */
} fc_sce_scope_t;

typedef struct fc_merge_model {
  const char *path; /* model directory, safetensors file or index (borrowed) */
  double weight;    /* per-model weight (default 1) */
  double density;   /* kept fraction for ties/dare/breadcrumbs/della (default 1) */
  /* Per-model breadcrumbs gamma / della epsilon, used when `has` says so (a zero-initialised
   * entry takes the config's global value). */
  double gamma, epsilon;
  unsigned has; /* FC_MERGE_HAS_* */
} fc_merge_model_t;
#define FC_MERGE_HAS_GAMMA 1u
#define FC_MERGE_HAS_EPSILON 2u
#define FC_MERGE_GAMMA_DEFAULT 0.01  /* mergekit's breadcrumbs default */
#define FC_MERGE_EPSILON_DEFAULT 0.15 /* mergekit's della default */

/* A parameter as mergekit's configs write it: a list of conditions, the first whose filter is
 * a substring of the tensor's name (NULL or "*": every tensor) gives the value; a value of
 * nv > 1 numbers is a gradient, interpolated at the tensor's layer position t in [0, 1]
 * (layer i of L: i / (L - 1); tensors outside the layers: 0). */
typedef struct fc_merge_cond {
  const char *filter;
  int nv;
  const double *v;
} fc_merge_cond_t;
typedef enum {
  FC_MP_WEIGHT, FC_MP_DENSITY, FC_MP_GAMMA, FC_MP_EPSILON, /* per model (or global default) */
  FC_MP_T, FC_MP_SELECT_TOPK, FC_MP_LAMBDA,                /* global */
  FC_MP_COUNT
} fc_merge_param_t;
typedef struct fc_merge_setting {
  fc_merge_param_t key;
  int model; /* index into cfg->models, or -1: the global parameters (per-model defaults) */
  int ncond;
  const fc_merge_cond_t *cond;
} fc_merge_setting_t;

/* Per-model summary filled by fc_merge_run (when cfg->stats is set). */
#define FC_MERGE_MAX_MODELS 64
typedef struct fc_merge_stats {
  int nmodels;                              /* models that carry a task vector / weight */
  const char *model_path[FC_MERGE_MAX_MODELS]; /* their paths (borrowed from the config) */
  double mean_weight[FC_MERGE_MAX_MODELS];  /* SCE/VaRM weight per model, mean over tensors */
  size_t ntensors;
  double bytes_in;                          /* bytes of input weights read */
  double seconds;
} fc_merge_stats_t;

/* One source of a slice: layers [first, last) of a model (last -1: to its end). Consecutive
 * entries with the same group form one slice (mergekit's `slices: - sources:`): passthrough
 * stacks slices of one source each; any other method merges a slice's sources layer by layer. */
typedef struct fc_merge_slice {
  const char *model;
  int first, last;
  int group;
} fc_merge_slice_t;

typedef struct fc_merge_cfg {
  fc_merge_method_t method;
  const char *base;               /* base model path; NULL for linear means the first model */
  const fc_merge_model_t *models; /* [nmodels] */
  int nmodels;
  /* Global parameters; a negative value / -1 means "the method's default" (mergekit's). */
  double select_topk; /* sce: fraction of non-zero-variance elements kept (default 1) */
  double t;           /* slerp: interpolation factor (required) */
  double lambda;      /* task-vector methods: the merged delta's scale (default 1) */
  double gamma;       /* breadcrumbs: fraction of largest deltas dropped (NAN: 0.01) */
  double epsilon;     /* della: half-width of the keep probabilities (NAN: 0.15) */
  int max_iter;       /* karcher: iterations (default 10) */
  double ram_r, ram_alpha; /* ramplus_tl: lambda_i = 1 + r clamp(rho_i, 0, alpha) (0.1, 0.2) */
  /* Angles per row instead of per tensor: nuslerp_flatten false (rows along the last
   * dimension, or along the first with nuslerp_row_wise true), model_stock's filter_wise. */
  int nuslerp_flatten, nuslerp_row_wise, filter_wise;
  double tol;         /* karcher: convergence tolerance (default 1e-5) */
  int normalize;      /* -1 default (linear, ties, della: 1; others: 0) */
  int rescale;        /* -1 default (dare_*, della*: 1): divide survivors by their keep
                         probability */
  fc_sce_scope_t sce_mask_scope;
  int dtype;          /* output fc_dtype_t, or -1 for the base's dtype */
  uint64_t seed;      /* DARE drop masks */
  int threads;        /* 0: all cores */
  fc_progress_fn progress; /* after each tensor: fraction of tensors done, the tensor's name;
                              non-zero stops the merge (FC_ECANCEL; no half-written
                              file is left, the index is not written) */
  void *progress_ctx;
  fc_merge_stats_t *stats; /* optional output */
  /* Parameters that vary by tensor (filters, layer gradients, global per-model defaults), in
   * the order they apply; fc_merge_run resolves them for each tensor (fc_merge_resolve). */
  const fc_merge_setting_t *settings;
  int nsettings;
  /* The slices stacked, in order (mergekit's slices: - sources: - model, layer_range). For a
   * method other than passthrough, models[] are the sources of each slice (every slice lists
   * the same models), their layers merged side by side; a gradient's t runs over each slice
   * (layer i of n: i / (n - 1), 1 for one layer) and tensors outside the layers come from the
   * first slice's sources (before the layers) and the last's (after them), at t = 0. */
  const fc_merge_slice_t *slices;
  int nslices;
  /* mergekit's tokenizer_source: NULL (the base's tokenizer, vocabularies must agree), "base",
   * "union" or a model's path as listed: the output's vocabulary, every model's embedding rows put in
   * its order (fc_merge_vocab.c). chat_template: NULL (the tokenizer source's), "chatml" or a
   * Jinja template, written into the output's tokenizer_config.json. */
  const char *tokenizer_source;
  const char *chat_template;
  /* tokenizer: {pad_to_multiple_of: N}: the embeddings' rows and vocab_size rounded up to a
   * multiple of N (0: none), the extra rows the mean of the real ones. */
  int tokenizer_pad;
} fc_merge_cfg_t;

/* The parameters of tensor `name` at layer position t: out is cfg with its settings applied,
 * models_out[cfg->nmodels] its models (out->models points at them). */
void fc_merge_resolve(const fc_merge_cfg_t *cfg, const char *name, double t, fc_merge_cfg_t *out,
                      fc_merge_model_t *models_out);
/* The layer position of a tensor: layer i of nlayers (from its name, "layers.I." or "h.I."):
 * i / (nlayers - 1) (1 for a single layer); 0 for tensors outside the layers. */
double fc_merge_layer_t(const char *name, int nlayers);
/* The layer index in a tensor's name, or -1. */
int fc_merge_layer_index(const char *name);
/* The same, and where its digits are in the name (at, len; may be NULL). */
int fc_merge_layer_span(const char *name, size_t *at, size_t *len);

/* Fills defaults: weight 1, density 1, normalize/rescale by method, dtype of base, seed 0. */
void fc_merge_cfg_init(fc_merge_cfg_t *cfg);

/* Merges the models into out_dir (created if needed): safetensors sharded like the base,
 * config.json (torch_dtype updated) and tokenizer files copied from the base. Tensor names and
 * shapes must agree across models; a mismatch is FC_EMISMATCH naming the tensor and model. */
int fc_merge_run(const fc_merge_cfg_t *cfg, const char *out_dir, fc_err_t *err);

/* Parses a mergekit-style YAML config into cfg. Strings (paths) are owned by *arena, freed with
 * fc_merge_yaml_free. Errors carry the file name and line. */
typedef struct fc_merge_yaml {
  fc_merge_model_t *models;
  char **strings;
  size_t nstrings;
  fc_merge_setting_t *settings;
  int nsettings;
  void **blocks; /* conditions and value lists */
  size_t nblocks;
} fc_merge_yaml_t;
int fc_merge_yaml_load(const char *path, fc_merge_cfg_t *cfg, fc_merge_yaml_t *arena,
                       fc_err_t *err);
int fc_merge_yaml_parse(const char *text, size_t len, const char *what, fc_merge_cfg_t *cfg,
                        fc_merge_yaml_t *arena, fc_err_t *err);
void fc_merge_yaml_free(fc_merge_yaml_t *arena);
/* chat_template's value is one fc_merge_run can write (auto, chatml, a Jinja template): 0, else
 * FC_EINVAL with a message. */
int fc_merge_chat_template_check(const char *t, fc_err_t *err);
/* Sets one global parameter by name (select_topk, t, lambda, gamma, epsilon, normalize, rescale,
 * sce_mask_scope, seed, int8_mask); used by the YAML parser and the CLI's --param k=v. */
int fc_merge_set_param(fc_merge_cfg_t *cfg, const char *key, const char *value, fc_err_t *err);

/* ---- per-tensor kernel, exposed for tests ----
 * One tensor of every input (raw, any float dtype) in, the merged tensor out as f32 [n].
 * models[i] is the tensor of cfg->models[i] (i < cfg->nmodels, base excluded for the
 * task-vector methods); base may be NULL only for linear. model_w[i] receives the weight SCE/VaRM gave model i (NULL
 * to skip). threads: worker count (results do not depend on it). tensor_name keys the DARE
 * mask: element j of model i is kept iff u < density, with
 *   h = splitmix64(seed ^ fnv1a64(name)); h = splitmix64(h + i); r = splitmix64(h + j / 2);
 *   u = (j even ? r >> 32 : r & 0xffffffff) * 2^-32   (one draw serves two elements).
 * Ties in magnitude (TIES) or variance (SCE) at the top-k boundary go to the lower index. */
int fc_merge_tensor(const fc_merge_cfg_t *cfg, const char *tensor_name, const fc_st_tensor_t *base,
                    const fc_st_tensor_t *const *models, float *out, double *model_w, int threads,
                    fc_err_t *err);

/* Tensors with at least this many elements find top-k thresholds with a sampled band and one
 * pass, smaller ones with a two-level radix select (same results; a knob for tests). */
extern size_t fc_merge_band_min;
extern size_t fc_merge_band_hits; /* selections the band pass resolved (not thread-safe; tests) */

/* The DARE keep decision, for tests and references. */
int fc_merge_dare_keep(uint64_t seed, const char *tensor_name, int model, uint64_t elem,
                       double density);
uint64_t fc_merge_fnv1a64(const char *s);

#endif
