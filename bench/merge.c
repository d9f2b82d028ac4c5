/* Merge throughput: GB/s of input weights per method on a base and three models of ~1 GB each
 * (bf16, Llama-like shapes, generated into /tmp and deleted after), with each run's peak RSS,
 * beside the machine's memory bandwidth measured as a streaming copy in the same run.
 * The copy is given as bytes copied per second (bytes in per second, the merge's unit: a copy
 * is the one-model "merge") and as bytes read + written per second (STREAM's convention, twice
 * the former). Each method runs --reps times (each in its own process) and the median run is
 * reported, per wall second and per CPU-second (steadier when other work shares the machine),
 * with the load average before and after.
 * Each merge process first touches and frees as much memory as its output will take (as the
 * copy touches its buffers before it is timed): on a VM, pages the guest freed may have been
 * handed back to the host and fault in slowly, which made runs differ by 2x at random.
 * Usage: bench_merge [--mb SIZE_PER_MODEL] [--threads N] [--reps N] [--dir DIR] [--out-dir DIR]
 *                    [--only M] [--keep DIR] [--cold] */
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fc_merge.h"

typedef struct {
  char *dst;
  const char *src;
  size_t n;
} copy_arg_t;

static void *copy_main(void *a) {
  copy_arg_t *c = a;
  memcpy(c->dst, c->src, c->n);
  return NULL;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

typedef struct {
  double gbs;     /* bytes copied (read) per wall second */
  double gb_cpu;  /* bytes copied per CPU second (all threads) */
} copy_rate_t;

/* Streaming copy between two 512 MB buffers split over the threads, repeated until it has read
 * as many bytes as the linear merge reads, timed as a whole like the merges: bytes copied per
 * second and per CPU-second. */
static copy_rate_t copy_bandwidth(int threads, double bytes_read) {
  size_t n = 512u << 20;
  char *a = fc_xmalloc(n), *b = fc_xmalloc(n);
  memset(a, 1, n);
  memset(b, 2, n);
  int reps = (int)(bytes_read / (double)n + 0.5);
  if (reps < 1) reps = 1;
  double t0 = fc_now(), c0 = cpu_seconds(), moved = 0;
  for (int rep = 0; rep < reps; rep++) {
    pthread_t tid[64];
    copy_arg_t args[64];
    size_t per = n / (size_t)threads;
    for (int t = 0; t < threads; t++) {
      args[t] = (copy_arg_t){b + per * (size_t)t, a + per * (size_t)t, per};
      pthread_create(&tid[t], NULL, copy_main, &args[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
    moved += (double)per * threads;
  }
  copy_rate_t r = {moved / (fc_now() - t0) / 1e9, moved / (cpu_seconds() - c0) / 1e9};
  free(a);
  free(b);
  return r;
}

static void print_load(const char *when) {
  double la[3];
  if (getloadavg(la, 3) == 3) printf("load average %s: %.2f %.2f %.2f\n", when, la[0], la[1], la[2]);
}

typedef struct {
  const uint64_t *p;
  size_t n;
  uint64_t sum;
} sum_arg_t;

static void *sum_main(void *a) {
  sum_arg_t *c = a;
  uint64_t s = 0;
  for (size_t i = 0; i < c->n; i++) s += c->p[i];
  c->sum = s;
  return NULL;
}

/* The rate of just reading the three models through their mappings (tensor by tensor, split
 * over the threads, pages dropped after each tensor as the merge does): the ceiling for a
 * merge that reads from the page cache. */
static double mmap_read_rate(char paths[][1100], int threads, double *gb_cpu) {
  double bytes = 0, t0 = fc_now(), c0 = cpu_seconds();
  *gb_cpu = 0;
  for (int m = 1; m <= 3; m++) {
    fc_st_t *st;
    fc_err_t err = {0};
    if (fc_st_open(&st, paths[m], &err)) return 0;
    for (size_t k = 0; k < fc_st_count(st); k++) {
      const fc_st_tensor_t *t = fc_st_at(st, k);
      size_t words = t->nbytes / 8, per = words / (size_t)threads;
      pthread_t tid[64];
      sum_arg_t args[64];
      for (int i = 0; i < threads; i++) {
        args[i] = (sum_arg_t){(const uint64_t *)t->data + per * (size_t)i, i == threads - 1 ? words - per * (size_t)i : per, 0};
        pthread_create(&tid[i], NULL, sum_main, &args[i]);
      }
      for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
      bytes += (double)t->nbytes;
      long pg = sysconf(_SC_PAGESIZE);
      uintptr_t a = (uintptr_t)t->data & ~(uintptr_t)(pg - 1);
      madvise((void *)a, (uintptr_t)t->data + t->nbytes - a, MADV_DONTNEED);
    }
    fc_st_close(&st);
  }
  *gb_cpu = bytes / (cpu_seconds() - c0) / 1e9;
  return bytes / (fc_now() - t0) / 1e9;
}

typedef struct {
  int fd;
  const char *buf;
  size_t chunk, nchunks, first, step;
  int err;
} wr_arg_t;

static void *write_main(void *a) {
  wr_arg_t *w = a;
  for (size_t c = w->first; c < w->nchunks; c += w->step)
    if (pwrite(w->fd, w->buf, w->chunk, (off_t)(c * w->chunk)) != (ssize_t)w->chunk) w->err = 1;
  return NULL;
}

/* Seconds to write a new file of `bytes` in out_dir the way the merge writes its output (pwrite
 * of 256 KB runs from every thread, then fsync): the floor under any merge that writes a model
 * of that size there, however fast it reads and computes. Memory warmed as for the merges. */
static double write_floor(const char *out_dir, double bytes, int threads) {
  const size_t chunk = 256u << 10, nchunks = (size_t)(bytes / (double)chunk);
  char path[700];
  snprintf(path, sizeof path, "%.600s/write_floor.%d", out_dir, (int)getpid());
  char *warm = malloc((size_t)(bytes * 1.1));
  if (warm) {
    memset(warm, 1, (size_t)(bytes * 1.1));
    free(warm);
  }
  char *buf = fc_xmalloc(chunk);
  memset(buf, 3, chunk);
  int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
  if (fd < 0) {
    free(buf);
    return 0;
  }
  double t0 = fc_now();
  pthread_t tid[64];
  wr_arg_t args[64];
  for (int t = 0; t < threads; t++) {
    args[t] = (wr_arg_t){fd, buf, chunk, nchunks, (size_t)t, (size_t)threads, 0};
    pthread_create(&tid[t], NULL, write_main, &args[t]);
  }
  int err = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tid[t], NULL);
    err |= args[t].err;
  }
  err |= fsync(fd) != 0;
  double dt = fc_now() - t0;
  close(fd);
  unlink(path);
  free(buf);
  return err ? 0 : dt;
}

/* A Llama-like layout scaled so the model has about mb megabytes of bf16 weights. */
static size_t make_specs(fc_st_spec_t **out, char ***names, double mb) {
  const int64_t C = 2048, F = 5632, V = 32000;
  double per_layer = (4.0 * C * C + 3.0 * C * F) * 2, fixed = (double)V * C * 2;
  int layers = (int)((mb * 1e6 - fixed) / per_layer + 0.5);
  if (layers < 1) layers = 1;
  size_t n = 1 + (size_t)layers * 9 + 1;
  fc_st_spec_t *s = fc_xcalloc(n, sizeof *s);
  char **nm = fc_xcalloc(n, sizeof *nm);
  size_t k = 0;
  char buf[128];
#define ADD(NAME, R, CC)                                                                 \
  do {                                                                                   \
    nm[k] = fc_xstrdup(NAME);                                                            \
    s[k] = (fc_st_spec_t){.name = nm[k], .dtype = FC_DT_BF16, .ndim = (CC) ? 2 : 1};     \
    s[k].shape[0] = (R);                                                                 \
    s[k].shape[1] = (CC);                                                                \
    k++;                                                                                 \
  } while (0)
  ADD("model.embed_tokens.weight", V, C);
  static const char *lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                              "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
  for (int l = 0; l < layers; l++) {
    for (int j = 0; j < 7; j++) {
      snprintf(buf, sizeof buf, "model.layers.%d.%s.weight", l, lin[j]);
      ADD(buf, j < 4 ? C : j < 6 ? F : C, j < 4 ? C : j < 6 ? C : F);
    }
    snprintf(buf, sizeof buf, "model.layers.%d.input_layernorm.weight", l);
    ADD(buf, C, 0);
    snprintf(buf, sizeof buf, "model.layers.%d.post_attention_layernorm.weight", l);
    ADD(buf, C, 0);
  }
  ADD("model.norm.weight", C, 0);
#undef ADD
  *out = s;
  *names = nm;
  return k;
}

static int write_model(const char *dir, const fc_st_spec_t *s, size_t n, uint64_t seed, fc_err_t *err) {
  if (fc_mkdir_p(dir, err)) return -1;
  char *p = fc_path_join(dir, "model.safetensors");
  fc_st_writer_t *w;
  int rc = fc_st_writer_new(&w, p, s, n, NULL, err);
  free(p);
  if (rc) return rc;
  uint16_t *buf = NULL;
  size_t cap = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    size_t cnt = (size_t)s[i].shape[0] * (size_t)(s[i].ndim == 2 ? s[i].shape[1] : 1);
    if (cnt > cap) {
      free(buf);
      buf = fc_xmalloc(cnt * 2);
      cap = cnt;
    }
    /* The base (seed 0) is a hash of the index; models add a seeded perturbation to it, so
     * deltas are small and varied like fine-tunes'. */
    for (size_t j = 0; j < cnt; j++) {
      uint64_t h = fc_splitmix64(((uint64_t)i << 40) ^ j);
      float v = ((float)(h >> 40) * 0x1p-24f - 0.5f) * 0.1f;
      if (seed) {
        uint64_t q = fc_splitmix64(h ^ seed);
        v += ((float)(q >> 40) * 0x1p-24f - 0.5f) * 0.01f;
      }
      buf[j] = fc_f32_to_bf16(v);
    }
    rc = fc_st_writer_put_raw(w, i, buf, cnt * 2, err);
  }
  free(buf);
  if (rc) {
    fc_st_writer_abort(&w);
    return rc;
  }
  return fc_st_writer_finish(&w, err);
}

typedef struct {
  double seconds, bytes_in, cpu, maxrss;
  int rc;
} result_t;

/* Index of the median of x[n] (the lower middle for even n). */
static int median_index(const double *x, int n) {
  for (int i = 0; i < n; i++) {
    int below = 0, equal = 0;
    for (int j = 0; j < n; j++) below += x[j] < x[i], equal += x[j] == x[i];
    if (below <= (n - 1) / 2 && (n - 1) / 2 < below + equal) return i;
  }
  return 0;
}

static int median_index_copy(const copy_rate_t *c, int n) {
  double x[64];
  for (int i = 0; i < n; i++) x[i] = c[i].gbs;
  return median_index(x, n);
}

/* One merge in a child process of its own, so its peak RSS and CPU time are its own. */
static result_t run_once(char paths[][1100], const char *out, fc_merge_method_t m, double p, int threads,
                         double warm) {
  result_t res = {.rc = -1};
  int pfd[2];
  if (pipe(pfd)) return res;
  pid_t pid = fork();
  if (pid == 0) {
    close(pfd[0]);
    if (warm) {
      /* Touches and frees as much memory as the output takes, so the output's pages are
       * ones the hypervisor backs already (see --cold). */
      size_t nb = (size_t)(warm * 1.1);
      char *w = malloc(nb);
      if (w) {
        memset(w, 1, nb);
        free(w);
      }
    }
    fc_merge_model_t mods[3];
    for (int i = 0; i < 3; i++) mods[i] = (fc_merge_model_t){.path = paths[i + 1], .weight = 1.0 / 3, .density = p ? p : 1};
    fc_merge_cfg_t cfg;
    fc_merge_cfg_init(&cfg);
    cfg.method = m;
    cfg.base = m == FC_MERGE_LINEAR ? NULL : paths[0];
    cfg.models = mods;
    cfg.nmodels = fc_merge_method_pairwise(m) ? 1 : 3;
    cfg.t = 0.5;
    cfg.select_topk = 0.1;
    cfg.threads = threads;
    fc_merge_stats_t st;
    cfg.stats = &st;
    result_t r = {0};
    fc_err_t e = {0};
    r.rc = fc_merge_run(&cfg, out, &e);
    if (r.rc) fprintf(stderr, "bench_merge: %s\n", e.msg);
    r.seconds = st.seconds;
    r.bytes_in = st.bytes_in;
    if (write(pfd[1], &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    _exit(0);
  }
  close(pfd[1]);
  if (pid < 0 || read(pfd[0], &res, sizeof res) != (ssize_t)sizeof res) res.rc = -1;
  close(pfd[0]);
  if (pid < 0) return res;
  int status;
  struct rusage ru;
  wait4(pid, &status, 0, &ru);
  res.cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
            ru.ru_stime.tv_usec / 1e6;
  res.maxrss = (double)ru.ru_maxrss * 1024;
  return res;
}

int main(int argc, char **argv) {
  double mb = 1024;
  int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
  const char *dir = "/tmp", *odir = "/dev/shm";
  static const struct option opts[] = {{"mb", required_argument, 0, 'm'},
                                       {"threads", required_argument, 0, 'j'},
                                       {"reps", required_argument, 0, 'r'},
                                       {"dir", required_argument, 0, 'd'},
                                       {"out-dir", required_argument, 0, 'o'},
                                       {"only", required_argument, 0, 'x'},
                                       {"keep", required_argument, 0, 'k'},
                                       {"cold", no_argument, 0, 'c'},
                                       {"help", no_argument, 0, 'h'},
                                       {0}};
  const char *only = NULL, *keep = NULL; /* --keep DIR: reuse/keep the models there */
  int c, reps = 3, cold = 0;
  while ((c = getopt_long(argc, argv, "m:j:d:o:", opts, NULL)) != -1) {
    if (c == 'm') mb = atof(optarg);
    else if (c == 'r') reps = atoi(optarg);
    else if (c == 'j') threads = atoi(optarg);
    else if (c == 'd') dir = optarg;
    else if (c == 'o') odir = optarg;
    else if (c == 'x') only = optarg;
    else if (c == 'k') keep = optarg;
    else if (c == 'c') cold = 1;
    else if (c == 'h') {
      printf("Usage: bench_merge [--mb MB_PER_MODEL] [--threads N] [--reps N] [--dir DIR] [--out-dir DIR]\n"
             "                   [--only METHOD] [--keep DIR]\n"
             "Merges a generated base and three models (default 1024 MB each, bf16) with every method\n"
             "(each --reps times, default 3, the median run reported) and prints GB/s, CPU seconds and\n"
             "peak RSS beside a streaming copy of the same bytes. --keep DIR keeps the generated models\n"
             "there (and reuses them on the next run); --only METHOD runs linear and METHOD.\n"
             "Each merge process first touches and frees as much memory as its output takes: on a VM,\n"
             "pages the guest freed may have gone back to the host and fault in slowly, and that took\n"
             "runs from 0.44 to 0.93 s at random; --cold skips it (the copy's buffers are warm too).\n");
      return 0;
    } else {
      fprintf(stderr, "usage: bench_merge [--mb MB_PER_MODEL] [--threads N] [--reps N] [--dir DIR] [--out-dir DIR] [--only METHOD] [--keep DIR] [--cold]\n");
      return 2;
    }
  }
  if (threads < 1) threads = 1;
  if (reps < 1) reps = 1;
  char root[600], out[600];
  if (keep) snprintf(root, sizeof root, "%.500s", keep);
  else snprintf(root, sizeof root, "%.500s/fc_bench_merge.%d", dir, (int)getpid());
  snprintf(out, sizeof out, "%.500s/fc_bench_merge_out.%d", odir, (int)getpid());
  fc_st_spec_t *specs;
  char **names;
  size_t n = make_specs(&specs, &names, mb);
  size_t maxt = 0, total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t b = (size_t)specs[i].shape[0] * (size_t)(specs[i].ndim == 2 ? specs[i].shape[1] : 1) * 2;
    if (b > maxt) maxt = b;
    total += b;
  }
  printf("models: base + 3, %zu tensors, %.0f MB each (bf16), largest tensor %.0f MB; %d threads\n", n,
         total / 1e6, maxt / 1e6, threads);
  fflush(stdout);
  fc_err_t err = {0};
  char paths[4][1100];
  double tg = fc_now();
  for (int m = 0; m < 4; m++) {
    snprintf(paths[m], sizeof paths[m], "%.500s/%s", root, m ? (const char *[]){"", "m1", "m2", "m3"}[m] : "base");
    char *probe = fc_path_join(paths[m], "model.safetensors");
    int have = keep && fc_path_exists(probe);
    free(probe);
    if (!have && write_model(paths[m], specs, n, (uint64_t)m * 7919, &err)) {
      fprintf(stderr, "bench_merge: %s\n", err.msg);
      return 1;
    }
  }
  printf("generated in %.1f s under %s (outputs under %s)\n", fc_now() - tg, root, odir);
  print_load("before");
  /* The copy and the read, like the merges, as the median of reps runs. */
  copy_rate_t bws[64];
  double rds[64], rdcs[64];
  int nr = reps < 64 ? reps : 64;
  for (int i = 0; i < nr; i++) {
    bws[i] = copy_bandwidth(threads, 3.0 * (double)total);
    rds[i] = mmap_read_rate(paths, threads, &rdcs[i]);
  }
  copy_rate_t bw = bws[median_index_copy(bws, nr)];
  double rd = rds[median_index(rds, nr)], rd_cpu = rdcs[median_index(rds, nr)];
  printf("memory bandwidth, streaming copy of %.1f GB (%d threads): %.2f GB/s copied = %.2f GB/s read+written;\n"
         "                 %.2f GB copied per cpu-s\n",
         3.0 * (double)total / 1e9, threads, bw.gbs, 2 * bw.gbs, bw.gb_cpu);
  printf("reading the 3 models through their mappings (no merge): %.2f GB/s, %.2f GB/cpu-s\n", rd, rd_cpu);
  if (fc_mkdir_p(odir, &err) == 0) {
    double wf[64];
    for (int i = 0; i < nr; i++) wf[i] = write_floor(odir, (double)total, threads);
    double w = wf[median_index(wf, nr)];
    if (w > 0)
      printf("writing one model's %.2f GB to %s as a merge writes its output: %.3f s, %.2f GB/s;\n"
             "  so linear (3 models in) cannot beat %.2f GB/s in = %.0f%% of the copy, even with free reads\n",
             (double)total / 1e9, odir, w, (double)total / w / 1e9, 3.0 * (double)total / w / 1e9,
             100 * 3.0 * (double)total / w / 1e9 / bw.gbs);
  }
  printf("(median of %d runs each; %% of copy = GB/s of input weights / GB/s copied)\n\n", reps);
  printf("%-16s %7s %8s %7s %7s %8s %8s %7s %8s %6s\n", "method", "seconds", "GB/s in", "% of",
         "cpu s", "cpu s/GB", "GB/cpu-s", "% of", "peak RSS", "RSS/");
  printf("%-16s %7s %8s %7s %7s %8s %8s %7s %8s %6s\n", "", "(wall)", "(wall)", "copy", "", "", "",
         "copy", "MB", "tensor");
  struct {
    fc_merge_method_t m;
    const char *label;
    double p;
  } runs[] = {{FC_MERGE_LINEAR, "linear", 0},           {FC_MERGE_TASK_ARITHMETIC, "task_arithmetic", 0},
              {FC_MERGE_TIES, "ties (d=0.5)", 0.5},     {FC_MERGE_DARE_TIES, "dare_ties (0.5)", 0.5},
              {FC_MERGE_DARE_LINEAR, "dare_linear", 0.5}, {FC_MERGE_SLERP, "slerp", 0},
              {FC_MERGE_SCE, "sce (topk 0.1)", 0},      {FC_MERGE_VARM, "varm", 0},
              {FC_MERGE_BREADCRUMBS, "breadcrumbs", 0.5}, {FC_MERGE_BREADCRUMBS_TIES, "bc_ties (0.5)", 0.5},
              {FC_MERGE_DELLA, "della (0.5)", 0.5},     {FC_MERGE_DELLA_LINEAR, "della_linear", 0.5}};
  double linear_s = 0, linear_cpu = 0, ties_s = 0, ties_cpu = 0;
  for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
    /* --only M runs linear, TIES (the reference of the sparsifying methods) and M. */
    if (only && r && runs[r].m != FC_MERGE_TIES && strcmp(only, fc_merge_method_name(runs[r].m))) continue;
    result_t all[64];
    int ok = 1;
    for (int k = 0; k < nr && ok; k++) {
      all[k] = run_once(paths, out, runs[r].m, runs[r].p, threads, cold ? 0 : (double)total);
      if (getenv("BENCH_VERBOSE")) fprintf(stderr, "  %s run %d: %.3f s wall, %.3f cpu s\n", runs[r].label, k + 1, all[k].seconds, all[k].cpu);
      ok = all[k].rc == 0;
      char cmd[1400];
      snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
      if (system(cmd)) {}
    }
    double secs[64];
    for (int k = 0; k < nr; k++) secs[k] = all[k].seconds;
    result_t res = ok ? all[median_index(secs, nr)] : (result_t){.rc = -1};
    if (res.rc) {
      printf("%-16s failed\n", runs[r].label);
      continue;
    }
    if (r == 0) linear_s = res.seconds;
    double gbs = res.bytes_in / res.seconds / 1e9, rss = res.maxrss;
    int nin = runs[r].m == FC_MERGE_LINEAR ? 3 : fc_merge_method_pairwise(runs[r].m) ? 2 : 4;
    /* CPU seconds of the run (all threads): a figure the other load on the machine disturbs
     * less than the wall clock. */
    double cpu = res.cpu;
    if (r == 0) linear_cpu = cpu;
    /* "% of copy" (cpu): GB of weights in per CPU-second against the copy's GB per CPU-second,
     * the comparison the other load on the machine disturbs least. */
    printf("%-16s %7.2f %8.2f %6.0f%% %7.2f %8.3f %8.2f %6.0f%% %8.0f %6.2f   (%.1fx linear wall, %.1fx cpu)\n",
           runs[r].label, res.seconds, gbs, 100 * gbs / bw.gbs, cpu, cpu / (res.bytes_in / 1e9),
           res.bytes_in / cpu / 1e9, 100 * res.bytes_in / cpu / 1e9 / bw.gb_cpu, rss / 1e6,
           rss / ((double)maxt * nin), res.seconds / linear_s, cpu / linear_cpu);
    if (runs[r].m == FC_MERGE_TIES) ties_s = res.seconds, ties_cpu = cpu;
    else if (runs[r].m >= FC_MERGE_BREADCRUMBS && ties_s > 0)
      printf("%-16s %.2fx ties wall, %.2fx ties cpu\n", "", res.seconds / ties_s, cpu / ties_cpu);
    fflush(stdout);
  }
  print_load("after");
  char cmd[1400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", keep ? "" : root, out);
  if (system(cmd)) {}
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  free(specs);
  return 0;
}
