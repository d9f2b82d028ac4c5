/* Linear layers on 16-bit weights used in place (bf16 or f16 straight from a memory-mapped
 * safetensors file): no f32 copy of the matrix is ever held. The weights are widened to f32 a
 * panel at a time into a small scratch buffer and multiplied by an f32 GEMM, so the arithmetic
 * is the f32 path's on the exactly widened values (activations are never rounded). */
#ifndef FC_WLIN_H
#define FC_WLIN_H

#include <stddef.h>
#include <stdint.h>

#include "fc_st.h"

/* The f32 GEMM under the panels: OpenBLAS's cblas_sgemm, or oneDNN's dnnl_sgemm or f32 matmul
 * primitive (when built with libdnnl). bench/real prints their rates at the real shapes; the
 * default is the fastest there (the matmul primitive where oneDNN is present).
 * FUSECHAT_WGEMM=openblas|dnnl_sgemm|dnnl_matmul overrides. */
typedef enum { FC_WGEMM_OPENBLAS, FC_WGEMM_DNNL, FC_WGEMM_DNNL_MATMUL, FC_WGEMM_N } fc_wgemm_t;
fc_wgemm_t fc_wgemm_default(void);
int fc_wgemm_available(fc_wgemm_t g);
const char *fc_wgemm_name(fc_wgemm_t g);

/* Floats of the panel scratch fc_wlinear_forward needs (one buffer per caller, reused). */
#define FC_WLIN_PANEL_FLOATS ((size_t)4 << 20)

/* out (N,OUT) (+)= inp (N,IN) @ w^T + bias, w (OUT,IN) in dtype dt (FC_DT_BF16 or FC_DT_F16).
 * panel: FC_WLIN_PANEL_FLOATS floats of scratch. threads: for the widening and the few-row
 * (decoding) kernel. */
void fc_wlinear_forward(float *out, const float *inp, const uint16_t *w, fc_dtype_t dt, const float *bias, int N,
                        int IN, int OUT, int accumulate, float *panel, fc_wgemm_t gemm, int threads);
/* Rows [r0, r0 + n) of w (OUT,IN) widened to f32 into out (n, IN). */
void fc_wlinear_rows(float *out, const uint16_t *w, fc_dtype_t dt, size_t r0, size_t n, size_t IN);

#endif
