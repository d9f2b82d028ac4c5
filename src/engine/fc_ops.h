/* The tensor kernels of the transformer (forward and backward), shared by the batched engine
 * (fc_model.c) and the KV-cached decoder (fc_generate.c). Row-major, outputs first, llm.c
 * style; every matrix product goes through cblas_sgemm. */
#ifndef FC_OPS_H
#define FC_OPS_H

#include <stddef.h>

/* out (N,OUT) = inp (N,IN) @ w^T (OUT,IN) + bias (OUT, may be NULL); with accumulate the
 * product is added to what out holds (used for residual adds). */
void fc_linear_forward(float *out, const float *inp, const float *w, const float *bias, int N, int IN,
                       int OUT, int accumulate);
/* dinp (N,IN) (+)= dout @ w; dw (OUT,IN) += dout^T @ inp; dbias (OUT) += colsum(dout).
 * dinp and dw may be NULL (not computed); accumulate_dinp adds into dinp instead of overwriting it. */
void fc_linear_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                        const float *w, int N, int IN, int OUT, int accumulate_dinp);

/* out (N,C) = w * x * rsqrt(mean(x^2) + eps), as Hugging Face computes it; rstd (N) kept for
 * backward (may be NULL). */
void fc_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                        float eps);
/* dinp (N,C) += d/dx; dw (C) += d/dw. */
void fc_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                         const float *rstd, int N, int C);

/* Rotary embedding in place on x (N rows of nheads*HD; row i is at position pos0 + i % T)
 * with the rotate-half convention: pairs (j, j+HD/2). cos/sin tables are (maxpos, HD/2).
 * inverse applies the transposed rotation (the backward). */
void fc_rope(float *x, int N, int T, int pos0, int nheads, int HD, const float *cos_t,
             const float *sin_t, int inverse);

/* h (N,F) = silu(g) * u. */
void fc_swiglu_forward(float *h, const float *g, const float *u, size_t n);
/* dg, du (N,F) from dh and the forward inputs. */
void fc_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n);

/* Row-wise softmax of n rows of S (row stride ld), row i being sequence position p = r0 + i:
 * columns 0..p take part, the rest become 0 (causal mask). With window W > 0 only columns
 * p-W+1..p take part and the earlier ones become 0 too (sliding-window attention); W = 0 is
 * the plain causal mask. */
void fc_causal_softmax(float *S, int r0, int n, int ld, int window);
/* In place: dP (n rows, ld; row i at position r0 + i) of a causal softmax P (same window)
 * becomes the gradient of the scores, P * (dP - rowsum(P * dP)) * scale; masked entries 0. */
void fc_causal_softmax_backward(float *dP, const float *P, int r0, int n, int ld, int window, float scale);
/* log(sum(exp(x))) over n values, stable (max subtracted first). */
float fc_logsumexp(const float *x, int n);

#endif
