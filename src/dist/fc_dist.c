/* fc_comm_t over MPI: deterministic reduce-scatter (each rank sums its slice from every rank's
 * buffer in rank order), all-gather of slices, rank-ordered sums of a few doubles. MPI is only
 * called from the thread that called fc_dist_init (MPI_THREAD_FUNNELED). */
#include "fc_dist.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef FC_HAVE_MPI
#include <mpi.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
/* Open MPI keeps allocations from MPI_Init to exit in components it dlcloses at MPI_Finalize,
 * so LeakSanitizer reports them with unknown frames that no suppression can name; what the
 * MPI calls below allocate on this thread is theirs, so LSan ignores it (ours stays checked). */
#define MPI_OWN_BEGIN() __lsan_disable()
#define MPI_OWN_END() __lsan_enable()
#else
#define MPI_OWN_BEGIN() ((void)0)
#define MPI_OWN_END() ((void)0)
#endif
#endif

int fc_dist_have_mpi(void) {
#ifdef FC_HAVE_MPI
  return 1;
#else
  return 0;
#endif
}

int fc_dist_launched_size(void) {
  /* OpenMPI's mpirun, then srun's PMIx and PMI-2 */
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};
  for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
    const char *v = getenv(vars[i]);
    if (v && atoi(v) > 0) return atoi(v);
  }
  return 1;
}

typedef struct dist {
  fc_comm_t comm;
  float *acc, *tmp; /* one slice each: the running sum and the slice being received */
  size_t cap;
  size_t sent;
  int mpi; /* MPI_Init was called */
} dist_t;

#ifdef FC_HAVE_MPI
static int slice_count(size_t n, int size, int rank, size_t *lo) {
  size_t hi;
  fc_comm_slice(n, size, rank, lo, &hi);
  assert(hi - *lo <= (size_t)INT_MAX); /* MPI counts are ints: 8 GiB of floats per slice */
  return (int)(hi - *lo);
}

static int mpi_reduce_scatter(void *ctx, float *buf, size_t n, fc_err_t *err) {
  (void)err;
  dist_t *d = ctx;
  const int R = d->comm.size, me = d->comm.rank;
  size_t lo;
  int cnt = slice_count(n, R, me, &lo);
  if ((size_t)cnt > d->cap) {
    free(d->acc), free(d->tmp);
    d->cap = (size_t)cnt;
    d->acc = fc_xmalloc(d->cap * sizeof *d->acc);
    d->tmp = fc_xmalloc(d->cap * sizeof *d->tmp);
  }
  /* send every other rank its slice of our buffer (those slices are not written here) */
  MPI_Request *req = fc_xcalloc((size_t)R, sizeof *req);
  for (int r = 0; r < R; r++) {
    req[r] = MPI_REQUEST_NULL;
    if (r == me) continue;
    size_t rlo;
    int rc = slice_count(n, R, r, &rlo);
    MPI_Isend(buf + rlo, rc, MPI_FLOAT, r, 0, MPI_COMM_WORLD, &req[r]);
    d->sent += (size_t)rc * sizeof(float);
  }
  /* our slice: ((b_0 + b_1) + b_2) + ..., the same association on every run */
  float *acc = d->acc, *own = buf + lo;
  for (int s = 0; s < R; s++) {
    const float *src = own;
    if (s != me) {
      MPI_Recv(s == 0 ? acc : d->tmp, cnt, MPI_FLOAT, s, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      src = s == 0 ? acc : d->tmp;
    }
    if (s == 0) {
      if (src != acc) memcpy(acc, src, (size_t)cnt * sizeof *acc);
    } else {
      for (int i = 0; i < cnt; i++) acc[i] += src[i];
    }
  }
  MPI_Waitall(R, req, MPI_STATUSES_IGNORE);
  free(req);
  memcpy(own, acc, (size_t)cnt * sizeof *acc);
  return 0;
}

static int mpi_allgather(void *ctx, float *buf, size_t n, fc_err_t *err) {
  (void)err;
  dist_t *d = ctx;
  const int R = d->comm.size;
  int *counts = fc_xmalloc((size_t)R * sizeof *counts), *displs = fc_xmalloc((size_t)R * sizeof *displs);
  for (int r = 0; r < R; r++) {
    size_t lo;
    counts[r] = slice_count(n, R, r, &lo);
    assert(lo <= (size_t)INT_MAX);
    displs[r] = (int)lo;
  }
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
  d->sent += (size_t)counts[d->comm.rank] * sizeof(float) * (size_t)(R - 1);
  free(counts), free(displs);
  return 0;
}

static int mpi_sum(void *ctx, double *v, int k, fc_err_t *err) {
  (void)err;
  dist_t *d = ctx;
  const int R = d->comm.size;
  double *all = fc_xmalloc((size_t)R * (size_t)k * sizeof *all);
  MPI_Allgather(v, k, MPI_DOUBLE, all, k, MPI_DOUBLE, MPI_COMM_WORLD);
  for (int i = 0; i < k; i++) {
    double s = all[i];
    for (int r = 1; r < R; r++) s += all[(size_t)r * k + i];
    v[i] = s;
  }
  free(all);
  return 0;
}

static int mpi_agree(void *ctx, int rc) {
  (void)ctx;
  int all = rc;
  MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all;
}
#endif

int fc_dist_init(int *argc, char ***argv, fc_comm_t **out, fc_err_t *err) {
  dist_t *d = fc_xcalloc(1, sizeof *d);
  d->comm.size = 1;
  d->comm.ctx = d;
  int want = fc_dist_launched_size();
  if (want > 1) {
#ifdef FC_HAVE_MPI
    int provided;
    MPI_OWN_BEGIN();
    int irc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_OWN_END();
    if (irc != MPI_SUCCESS) {
      free(d);
      return fc_err_set(err, FC_EIO, "MPI_Init failed (is this process started by mpirun or srun --mpi=pmix?)");
    }
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->comm.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->comm.size);
    if (d->comm.size != want) {
      /* srun without a PMI plugin MPI understands starts R singletons */
      int got = d->comm.size;
      MPI_Finalize();
      free(d);
      return fc_err_set(err, FC_EINVAL,
                        "started as one of %d tasks but MPI sees %d: launch with mpirun, or srun --mpi=pmix "
                        "(srun --mpi=list shows what this Slurm has)", want, got);
    }
    d->comm.reduce_scatter = mpi_reduce_scatter;
    d->comm.allgather = mpi_allgather;
    d->comm.sum = mpi_sum;
    d->comm.agree = mpi_agree;
#else
    (void)argc, (void)argv;
    free(d);
    return fc_err_set(err, FC_EUNSUPPORTED,
                      "started as one of %d ranks, but this fusechat was built without MPI (install "
                      "libopenmpi-dev and rebuild)", want);
#endif
  }
  *out = &d->comm;
  return 0;
}

void fc_dist_finalize(fc_comm_t **pc) {
  if (!*pc) return;
  dist_t *d = (*pc)->ctx;
#ifdef FC_HAVE_MPI
  if (d->mpi) {
    MPI_OWN_BEGIN();
    MPI_Finalize();
    MPI_OWN_END();
  }
#endif
  free(d->acc), free(d->tmp);
  free(d);
  *pc = NULL;
}

size_t fc_dist_bytes_sent(const fc_comm_t *c) { return c ? ((const dist_t *)c->ctx)->sent : 0; }
