/* A parallel for over an index range: workers take chunks from a shared counter, the calling
 * thread being one of them, so a thread that cannot be started only costs parallelism. The
 * compute floors (merge passes, vocabulary mapping, losses, optimizer steps) use it instead of
 * each starting and joining their own threads. */
#ifndef FC_PAR_H
#define FC_PAR_H

#include <stddef.h>

/* Workers at the most, whatever the caller asks for. */
#define FC_PAR_MAX_THREADS 64

typedef struct fc_par_job {
  /* Runs indices [begin, end) (end - begin <= chunk). local: what begin returned. */
  void (*range)(void *ctx, void *local, size_t begin, size_t end);
  /* Optional: per worker, on its thread, before its first range (per-thread scratch). */
  void *(*begin)(void *ctx);
  /* Optional: per worker, after its last range; one worker at a time (merging results). */
  void (*end)(void *ctx, void *local);
  void *ctx;
} fc_par_job_t;

/* Runs job over [0, n) in chunks of `chunk` indices (0: n / threads rounded up, one even share
 * per worker) on up to `threads` workers (< 1 means 1), no more workers than chunks. Which
 * worker runs which chunk is not fixed: results must not depend on it. */
void fc_par_run(const fc_par_job_t *job, size_t n, size_t chunk, int threads);

/* fc_par_run without per-worker state: fn(ctx, begin, end). */
void fc_par_for(size_t n, size_t chunk, int threads, void (*fn)(void *ctx, size_t begin, size_t end),
                void *ctx);

/* Online processors (at least 1), for a "0: all cores" thread option. */
int fc_par_cores(void);

#endif
