/* fc_par: the chunked parallel for (see fc_par.h). */
#include "fc_par.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct par {
  const fc_par_job_t *job;
  size_t n, chunk;
  atomic_size_t next;
  pthread_mutex_t mu;
} par_t;

static void *worker(void *arg) {
  par_t *P = arg;
  const fc_par_job_t *J = P->job;
  void *local = J->begin ? J->begin(J->ctx) : NULL;
  for (;;) {
    size_t b = atomic_fetch_add(&P->next, P->chunk);
    if (b >= P->n) break;
    size_t e = P->n - b < P->chunk ? P->n : b + P->chunk;
    J->range(J->ctx, local, b, e);
  }
  if (J->end) {
    pthread_mutex_lock(&P->mu);
    J->end(J->ctx, local);
    pthread_mutex_unlock(&P->mu);
  }
  return NULL;
}

void fc_par_run(const fc_par_job_t *job, size_t n, size_t chunk, int threads) {
  int nt = threads < 1 ? 1 : threads > FC_PAR_MAX_THREADS ? FC_PAR_MAX_THREADS : threads;
  if (chunk == 0) chunk = n / (size_t)nt + (n % (size_t)nt != 0);
  if (chunk == 0) chunk = 1;
  size_t nchunks = n / chunk + (n % chunk != 0);
  if ((size_t)nt > nchunks) nt = nchunks ? (int)nchunks : 1;
  par_t P = {.job = job, .n = n, .chunk = chunk};
  atomic_init(&P.next, 0);
  pthread_mutex_init(&P.mu, NULL);
  pthread_t tid[FC_PAR_MAX_THREADS];
  int started = 0;
  for (int t = 1; t < nt; t++)
    if (pthread_create(&tid[started], NULL, worker, &P) == 0) started++;
  worker(&P);
  for (int t = 0; t < started; t++) pthread_join(tid[t], NULL);
  pthread_mutex_destroy(&P.mu);
}

typedef struct {
  void (*fn)(void *ctx, size_t begin, size_t end);
  void *ctx;
} plain_t;

static void plain_range(void *ctx, void *local, size_t b, size_t e) {
  (void)local;
  const plain_t *p = ctx;
  p->fn(p->ctx, b, e);
}

void fc_par_for(size_t n, size_t chunk, int threads, void (*fn)(void *ctx, size_t begin, size_t end),
                void *ctx) {
  plain_t p = {fn, ctx};
  fc_par_job_t job = {.range = plain_range, .ctx = &p};
  fc_par_run(&job, n, chunk, threads);
}

int fc_par_cores(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > FC_PAR_MAX_THREADS ? FC_PAR_MAX_THREADS : (int)n;
}
