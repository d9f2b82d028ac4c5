/* What the trainer needs from a group of processes training one model together (data parallel
 * with sharded optimizer state). The engine knows nothing of MPI: src/dist/ fills this table
 * over MPI; a NULL fc_comm_t * (or size 1) is one process, the trainer's ordinary path.
 *
 * Every operation is collective (all ranks call it, in the same order) and deterministic: sums
 * are taken in rank order, so the same rank count gives bitwise the same result run to run. */
#ifndef FC_COMM_H
#define FC_COMM_H

#include <stddef.h>

#include "fc_util.h"

typedef struct fc_comm {
  int rank, size;
  void *ctx;
  /* buf holds n floats on every rank. Afterwards the slice of this rank (fc_comm_slice) holds
   * the element-wise sum over ranks, added in rank order ((b_0 + b_1) + b_2) + ...; the rest of
   * buf is left as it was. */
  int (*reduce_scatter)(void *ctx, float *buf, size_t n, fc_err_t *err);
  /* Every rank's slice of buf (n floats) is copied into the same slice on all ranks. */
  int (*allgather)(void *ctx, float *buf, size_t n, fc_err_t *err);
  /* v (k values) becomes the sum over ranks, in rank order, on every rank. */
  int (*sum)(void *ctx, double *v, int k, fc_err_t *err);
  /* Gives every rank the lowest rc of all ranks (0 when all succeeded), so that a failure on
   * one rank stops all of them at the same point. */
  int (*agree)(void *ctx, int rc);
  /* Bytes this rank has sent in reduce_scatter and allgather so far (for the benchmark). */
  size_t bytes_sent;
} fc_comm_t;

/* The slice [*lo, *hi) of n elements that rank `rank` of `size` owns: contiguous, in rank order,
 * sizes differing by at most one. The one definition the trainer, the checkpoints and the
 * collectives share. */
static inline void fc_comm_slice(size_t n, int size, int rank, size_t *lo, size_t *hi) {
  *lo = n / (size_t)size * (size_t)rank + ((size_t)rank < n % (size_t)size ? (size_t)rank : n % (size_t)size);
  *hi = *lo + n / (size_t)size + ((size_t)rank < n % (size_t)size ? 1 : 0);
}

#endif
