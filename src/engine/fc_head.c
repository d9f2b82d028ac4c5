/* The output layer, never holding (B,T,V) logits: the LM head runs over chunks of positions, for
 * the logits stage (top-K log-probabilities and the gold token's) and for training (loss and the
 * head's backward, each chunk's logits turned into their gradient in place); and the top-K
 * selection itself. */
#include "fc_model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fc_arch.h"
#include "fc_loss.h"
#include "fc_ops.h"

/* Rows of the LM head computed at a time by fc_model_forward_topk: as many as fit in 128 MB of
 * logits (whole batches at small vocabularies, where bigger products run faster), at least 256
 * (100 MB at V = 150k). */
#define HEAD_CHUNK_FLOATS ((size_t)32 << 20)

/* Rows per chunk for BT rows of V logits (FUSECHAT_HEAD_ROWS overrides: memory limits, tests). */
static size_t head_chunk(size_t BT, int V) {
  size_t chunk = HEAD_CHUNK_FLOATS / (size_t)V;
  if (chunk < 256) chunk = 256;
  const char *e = getenv("FUSECHAT_HEAD_ROWS");
  if (e && atol(e) > 0) chunk = (size_t)atol(e);
  return chunk > BT ? BT : chunk;
}

static void sift_down(float *v, int32_t *id, int n, int i);

/* Logits of the 16-bit head in place held at a time by the streamed top-K: BT rows x a panel of
 * vocabulary columns (16 MB: at 2,048 rows still 2,048 columns a product, and each panel is
 * widened once whatever its width). */
#define HEAD_PANEL_FLOATS ((size_t)4 << 20)

/* Vocabulary columns per panel for BT rows: a multiple of 16 that the widening does in one piece
 * (FUSECHAT_HEAD_COLS overrides: tests cross panel borders on small vocabularies). */
static int head_panel_cols(const fc_model_t *m, size_t BT) {
  size_t V = (size_t)m->cfg.vocab_size, C = (size_t)m->cfg.hidden_size;
  size_t pc = HEAD_PANEL_FLOATS / BT, most = FC_WLIN_PANEL_FLOATS / C;
  if (pc > most) pc = most;
  pc &= ~(size_t)15;
  if (pc < 16) pc = 16;
  const char *e = getenv("FUSECHAT_HEAD_COLS");
  if (e && atol(e) > 0) pc = (size_t)atol(e);
  return (int)(pc > V ? V : pc);
}

/* The top-K stage on a 16-bit head used in place, streamed over panels of vocabulary columns
 * instead of chunks of positions: each panel of the head is widened to f32 once per forward (a
 * chunk of positions widens the whole head again: 16 times for a batch of 8 x 512 rows), and no
 * 256 x V block of logits is held (155 MB at V = 152k, the most of what a 0.5B model's logits
 * stage holds beside its file). Each row keeps its K-heap in its output slots, fed in column
 * order as fc_topk_select feeds it (same ids, same ties), and its log-sum-exp combined panel by
 * panel (a rounding away from the one-pass value). */
static void head_topk_streamed(fc_model_t *m, size_t BT, int K, const int32_t *targets, int32_t *top_ids,
                               float *top_lp, float *target_lp) {
  int V = m->cfg.vocab_size, C = m->cfg.hidden_size, pc = head_panel_cols(m, BT);
  fc_acts_t *a = &m->acts;
  float *lse = fc_xmalloc(BT * sizeof *lse), *gold = fc_xmalloc(BT * sizeof *gold);
  const uint16_t *head = (const uint16_t *)(const void *)m->w.head;
  for (int v0 = 0; v0 < V; v0 += pc) {
    int n = V - v0 < pc ? V - v0 : pc;
    fc_model_linear(m, a->logits, a->lnf, (const float *)(const void *)(head + (size_t)v0 * C), NULL, (int)BT, C, n,
                    0);
#ifdef _OPENMP
#pragma omp parallel for num_threads(fc_model_par_threads(m)) schedule(static) if (fc_model_par_threads(m) > 1 && BT > 1)
#endif
    for (size_t r = 0; r < BT; r++) {
      const float *lg = a->logits + r * (size_t)n;
      float p = fc_logsumexp(lg, n);
      if (v0 == 0) lse[r] = p;
      else { /* log(e^lse + e^p) */
        float hi = lse[r] > p ? lse[r] : p, lo = lse[r] > p ? p : lse[r];
        lse[r] = hi + log1pf(expf(lo - hi));
      }
      if (targets && targets[r] >= v0 && targets[r] < v0 + n) gold[r] = lg[targets[r] - v0];
      int32_t *id = top_ids + r * (size_t)K;
      float *val = top_lp + r * (size_t)K;
      int j = 0;
      for (; j < n && v0 + j < K; j++) { /* the first K columns fill the heap */
        id[v0 + j] = v0 + j, val[v0 + j] = lg[j];
        if (v0 + j == K - 1)
          for (int i = K / 2 - 1; i >= 0; i--) sift_down(val, id, K, i);
      }
      for (; j < n; j++)
        if (lg[j] > val[0]) {
          val[0] = lg[j], id[0] = v0 + j;
          sift_down(val, id, K, 0);
        }
    }
  }
  for (size_t r = 0; r < BT; r++) {
    int32_t *id = top_ids + r * (size_t)K;
    float *val = top_lp + r * (size_t)K;
    for (int n = K - 1; n > 0; n--) { /* heap sort in place: descending */
      float tv = val[0];
      val[0] = val[n], val[n] = tv;
      int32_t ti = id[0];
      id[0] = id[n], id[n] = ti;
      sift_down(val, id, n, 0);
    }
    for (int j = 0; j < K; j++) val[j] -= lse[r];
    if (targets && target_lp) target_lp[r] = targets[r] >= 0 && targets[r] < V ? gold[r] - lse[r] : NAN;
  }
  free(lse), free(gold);
}

int fc_model_forward_topk(fc_model_t *m, const int32_t *ids, int B, int T, int K, const int32_t *targets,
                          int32_t *top_ids, float *top_lp, float *target_lp, fc_err_t *err) {
  if (fc_arch_handles(&m->cfg)) return fc_arch_forward_topk(m, ids, B, T, K, targets, top_ids, top_lp, target_lp, err);
  int rc = fc_model_check_ids(m, ids, B, T, err);
  if (rc) return rc;
  int V = m->cfg.vocab_size, C = m->cfg.hidden_size;
  if (K < 0 || K > V) return fc_err_set(err, FC_EINVAL, "forward: top-K %d is outside [0, %d]", K, V);
  size_t BT = (size_t)B * T, chunk = head_chunk(BT, V);
  if (m->st && m->wdt != FC_DT_F32 && K > 0) { /* (f32 in place stays bit-identical to a loaded copy) */
    size_t pc = (size_t)head_panel_cols(m, BT);
    fc_model_trunk_forward(m, ids, B, T, 0, (BT * pc + (size_t)V - 1) / (size_t)V);
    m->have_train_fwd = 0;
    head_topk_streamed(m, BT, K, targets, top_ids, top_lp, target_lp);
    fc_model_prof(PR_HEAD);
    return 0;
  }
  fc_model_trunk_forward(m, ids, B, T, 0, chunk);
  m->have_train_fwd = 0;
  fc_acts_t *a = &m->acts;
  for (size_t r0 = 0; r0 < BT; r0 += chunk) {
    int n = (int)(BT - r0 < chunk ? BT - r0 : chunk);
    fc_model_linear(m, a->logits, a->lnf + r0 * C, m->w.head, NULL, n, C, V, 0);
#ifdef _OPENMP
#pragma omp parallel for num_threads(fc_model_par_threads(m)) schedule(static) if (fc_model_par_threads(m) > 1 && n > 1)
#endif
    for (int i = 0; i < n; i++) {
      const float *lg = a->logits + (size_t)i * V;
      size_t row = r0 + (size_t)i;
      float lse = fc_logsumexp(lg, V);
      if (K > 0) fc_topk_select(lg, V, K, top_ids + row * K, top_lp + row * K, lse);
      if (targets && target_lp)
        target_lp[row] = targets[row] >= 0 && targets[row] < V ? lg[targets[row]] - lse : NAN;
    }
  }
  fc_model_prof(PR_HEAD);
  return 0;
}

/* Vocabulary columns per panel of the streamed head gradient: 16 MB of it (n x C) held until
 * stepped. A multiple of 64, so every column sits in the same kind of GEMM tile as in the whole
 * head's products (OpenBLAS's edge tiles round differently from its full ones: panels of 13
 * columns give 1-ulp differences, of 16 none). FUSECHAT_HEAD_COLS overrides, as for the logits. */
static int train_panel_cols(const fc_model_t *m) {
  size_t V = (size_t)m->cfg.vocab_size, pc = FC_WLIN_PANEL_FLOATS / (size_t)m->cfg.hidden_size;
  pc &= ~(size_t)63;
  if (pc < 64) pc = 64;
  const char *e = getenv("FUSECHAT_HEAD_COLS");
  if (e && atol(e) > 0) pc = (size_t)atol(e);
  return (int)(pc > V ? V : pc);
}

/* The head's gradient one panel of vocabulary columns at a time, each handed to grad_ready as
 * soon as it is whole, so the V x C gradient (545 MB at Qwen2.5-0.5B) is never held: the panel's
 * logits again, chunk by chunk of positions as the loss pass took them (the same products, so
 * the same values), their gradient from the kept row_mx, row_scale (fc_loss_grad_panel), and
 * the panel's share of the gradient summed over the chunks in the same order as the whole
 * head's. Costs one more head-sized product (the logits). A tied embedding's rows of the
 * batch's tokens still get the embedding's gradient at the trunk's end: they wait
 * (m->head_wait), handed over then by fc_model_trunk_backward. */
static void head_backward_panels(fc_model_t *m, size_t BT, size_t chunk, const int32_t *targets,
                                 const fc_fused_targets_t *fused, float lambda, double norm, const float *row_mx,
                                 const float *row_scale) {
  int V = m->cfg.vocab_size, C = m->cfg.hidden_size, pc = train_panel_cols(m);
  fc_acts_t *a = &m->acts;
  size_t hoff = (size_t)(m->gw.head - m->grads);
  if (!m->head_wait) m->head_wait = fc_xmalloc((size_t)V);
  memset(m->head_wait, 0, (size_t)V);
  if (m->cfg.tie_word_embeddings)
    for (size_t i = 0; i < BT; i++) m->head_wait[m->ids[i]] = 1;
  for (int v0 = 0; v0 < V; v0 += pc) {
    int n = V - v0 < pc ? V - v0 : pc;
    const float *w = m->w.head + (size_t)v0 * C;
    float *dw = m->gw.head + (size_t)v0 * C;
    for (size_t r0 = 0; r0 < BT; r0 += chunk) {
      int nr = (int)(BT - r0 < chunk ? BT - r0 : chunk);
      fc_linear_forward(a->logits, a->lnf + r0 * C, w, NULL, nr, C, n, 0);
      fc_model_prof(PR_HEAD);
      fc_fused_targets_t part;
      if (fused) part = (fc_fused_targets_t){fused->K, fused->ids + r0 * fused->K, fused->logprobs + r0 * fused->K};
      fc_loss_grad_panel(a->logits, row_mx + r0, row_scale + r0, targets + r0, fused ? &part : NULL, lambda,
                         (size_t)nr, v0, n, norm);
      fc_linear_backward(NULL, dw, NULL, a->logits, a->lnf + r0 * C, NULL, nr, C, n, 0);
      fc_model_prof(PR_B_HEAD);
    }
    fc_model_ready_rows(m, hoff, v0, v0 + n, 0); /* the panel's rows that do not wait */
  }
  m->head_streamed = 1;
}

int fc_model_loss_backward(fc_model_t *m, const int32_t *ids, int B, int T, const int32_t *targets,
                           const fc_fused_targets_t *fused, float lambda, double norm, fc_loss_stats_t *stats,
                           double *loss, fc_err_t *err) {
  if (fc_arch_handles(&m->cfg)) /* the source families have no backward (fc_arch.h) */
    return fc_err_set(err, FC_EUNSUPPORTED, "model_type %s is a source family (forward only): training needs %s",
                      m->cfg.model_type, FC_CONFIG_PIVOT_TYPES);
  if (m->st)
    return fc_err_set(err, FC_EUNSUPPORTED, "training: the model's weights are used in place (inference only)");
  int rc = fc_model_check_ids(m, ids, B, T, err);
  if (rc) return rc;
  int V = m->cfg.vocab_size, C = m->cfg.hidden_size;
  size_t BT = (size_t)B * T, chunk = head_chunk(BT, V);
  fc_model_trunk_forward(m, ids, B, T, 1, chunk);
  fc_model_grads(m);
  fc_model_ga_reserve(m, B, T, 1);
  fc_acts_t *a = &m->acts;
  fc_loss_stats_t sum = {0, 0, 0};
  double total = 0;
  /* With the step fused into backward the head's gradient is formed after this pass, panel by
   * panel (head_backward_panels), from what the pass keeps per position. */
  const int streamed = m->grad_ready != NULL;
  float *row_mx = streamed ? fc_xmalloc(2 * BT * sizeof *row_mx) : NULL, *row_scale = row_mx ? row_mx + BT : NULL;
  fc_model_prof(-1);
  for (size_t r0 = 0; r0 < BT; r0 += chunk) {
    int n = (int)(BT - r0 < chunk ? BT - r0 : chunk);
    fc_linear_forward(a->logits, a->lnf + r0 * C, m->w.head, NULL, n, C, V, 0);
    fc_model_prof(PR_HEAD);
    fc_fused_targets_t part;
    if (fused) part = (fc_fused_targets_t){fused->K, fused->ids + r0 * fused->K, fused->logprobs + r0 * fused->K};
    fc_loss_stats_t st;
    total += fc_loss_forward_backward_rows(a->logits, &st, a->logits, targets + r0, fused ? &part : NULL, lambda, 1,
                                           n, V, norm, row_mx ? row_mx + r0 : NULL, row_scale ? row_scale + r0 : NULL);
    sum.ce += st.ce, sum.fusion += st.fusion, sum.counted += st.counted;
    /* The chunk's share of d(lnf) and (unless streamed) of the head's gradient. */
    fc_linear_backward(m->ga.dln + r0 * C, streamed ? NULL : m->gw.head, NULL, a->logits, a->lnf + r0 * C, m->w.head,
                       n, C, V, 0);
    fc_model_prof(PR_B_HEAD);
  }
  /* With the optimizer step fused into backward (fc_model_set_grad_ready) the updates begin
   * with the head's panels: a non-finite loss stops the step here, before any parameter
   * changes, and leaves the gradients zero. */
  if (m->grad_ready && !isfinite(total)) {
    free(row_mx);
    fc_model_release_grads(m, 0, m->nparams);
    return fc_err_set(err, FC_EINVAL, "the loss is %g: the step is refused before any parameter is updated", total);
  }
  if (streamed) head_backward_panels(m, BT, chunk, targets, fused, lambda, norm, row_mx, row_scale);
  free(row_mx);
  fc_model_trunk_backward(m);
  if (stats) *stats = sum;
  if (loss) *loss = total;
  return 0;
}

/* ---------------------------------------------------------------- top-K */

static void sift_down(float *v, int32_t *id, int n, int i) {
  /* min-heap on (value, then larger id counts as smaller so ties keep the lower id) */
  for (;;) {
    int l = 2 * i + 1, r = l + 1, s = i;
    if (l < n && (v[l] < v[s] || (v[l] == v[s] && id[l] > id[s]))) s = l;
    if (r < n && (v[r] < v[s] || (v[r] == v[s] && id[r] > id[s]))) s = r;
    if (s == i) return;
    float tv = v[i];
    v[i] = v[s], v[s] = tv;
    int32_t ti = id[i];
    id[i] = id[s], id[s] = ti;
    i = s;
  }
}

void fc_topk_logprobs(const float *logits, int V, int K, int32_t *ids, float *logprobs) {
  if (K > V) K = V;
  if (K <= 0) return;
  fc_topk_select(logits, V, K, ids, logprobs, fc_logsumexp(logits, V));
}

void fc_topk_select(const float *logits, int V, int K, int32_t *ids, float *logprobs, float lse) {
  if (K > V) K = V;
  if (K <= 0) return;
  /* K-sized min-heap of the best seen so far: O(V log K). */
  for (int j = 0; j < K; j++) ids[j] = j, logprobs[j] = logits[j];
  for (int i = K / 2 - 1; i >= 0; i--) sift_down(logprobs, ids, K, i);
  for (int j = K; j < V; j++)
    if (logits[j] > logprobs[0]) {
      logprobs[0] = logits[j], ids[0] = j;
      sift_down(logprobs, ids, K, 0);
    }
  /* Heap sort in place: repeatedly move the minimum to the end -> descending order. */
  for (int n = K - 1; n > 0; n--) {
    float tv = logprobs[0];
    logprobs[0] = logprobs[n], logprobs[n] = tv;
    int32_t ti = ids[0];
    ids[0] = ids[n], ids[n] = ti;
    sift_down(logprobs, ids, n, 0);
  }
  for (int j = 0; j < K; j++) logprobs[j] -= lse;
}

