/* The training loop, its checkpoints (model + optimizer + data position) and resumption. */
#include "fc_train.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fc_config.h"
#include "fc_loss.h"
#include "fc_model.h"
#include "fc_train_shard.h"

static volatile sig_atomic_t g_stop;

void fc_train_request_stop(void) { g_stop = 1; }

/* The first SIGINT/SIGTERM asks for a checkpoint and a clean stop; a second one, with the
 * default action back in place, ends the process at once. */
static void on_signal(int sig) {
  g_stop = 1;
  signal(sig, SIG_DFL);
}

void fc_train_opts_default(fc_train_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->epochs = 1;
  o->batch_size = 4;
  o->grad_accum = 1;
  o->seq_len = 512;
  o->lr = 1e-5;
  o->schedule = FC_SCHED_COSINE;
  o->warmup = -1;
  o->warmup_ratio = 0.03;
  o->weight_decay = 0.0;
  o->beta1 = 0.9;
  o->beta2 = 0.95;
  o->eps = 1e-8;
  o->clip = 1.0;
  o->seed = 42;
  o->threads = 1;
  o->lambda = 0.9;
  o->save_dtype = FC_DT_F32;
  o->optimizer_dtype = FC_DT_F32;
}

/* ------------------------------------------------------------------ trainer state file */

static const char STATE_MAGIC[8] = {'F', 'C', 'T', 'R', 'A', 'I', 'N', '1'};
static const char STATE_END[8] = {'F', 'C', 'T', 'R', 'E', 'N', 'D', '1'};

/* What must agree between the run that wrote a checkpoint and the one resuming it for the
 * continuation to be the same computation. */
typedef struct run_shape {
  int64_t step, total_steps, next_row;
  int64_t batch_size, grad_accum, seq_len, shuffle, pack, rows;
  uint64_t seed;
  int64_t nparams;
  int64_t K;     /* fused-target entries per position, 0 without */
  double lambda; /* the gold CE weight when K > 0 */
} run_shape_t;

static int write_state(const char *path, const run_shape_t *rs, const fc_adamw_t *opt, fc_err_t *err) {
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc) return rc;
  if (fwrite(STATE_MAGIC, 8, 1, af.fp) != 1 || fwrite(rs, sizeof *rs, 1, af.fp) != 1) {
    fc_atomic_abort(&af);
    return fc_err_set(err, FC_EIO, "writing %s: %s", path, strerror(errno));
  }
  if ((rc = fc_adamw_write(opt, af.fp, err)) != 0) {
    fc_atomic_abort(&af);
    return rc;
  }
  if (fwrite(STATE_END, 8, 1, af.fp) != 1) {
    fc_atomic_abort(&af);
    return fc_err_set(err, FC_EIO, "writing %s: %s", path, strerror(errno));
  }
  return fc_atomic_commit(&af, err);
}

/* The run shape, then this rank's slice [lo, hi) of the n moments from the checkpoint ckpt
 * (written by any number of ranks: fc_train_shard.h). */
static int read_state(const char *ckpt, run_shape_t *rs, fc_adamw_t *opt, size_t n, size_t lo, size_t hi,
                      fc_err_t *err) {
  char *path = fc_path_join(ckpt, "trainer_state.bin");
  FILE *fp = fopen(path, "rb");
  int rc = 0;
  if (!fp) {
    rc = fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
    free(path);
    return rc;
  }
  char magic[8];
  if (fread(magic, 8, 1, fp) != 1 || memcmp(magic, STATE_MAGIC, 8) != 0 || fread(rs, sizeof *rs, 1, fp) != 1)
    rc = fc_err_set(err, FC_EFORMAT, "%s: not a trainer state file", path);
  else if (fseek(fp, -8, SEEK_END) != 0 || fread(magic, 8, 1, fp) != 1 || memcmp(magic, STATE_END, 8) != 0)
    rc = fc_err_set(err, FC_EFORMAT, "%s: truncated", path);
  fclose(fp);
  if (rc == 0 && rs->nparams != (int64_t)n)
    rc = fc_err_set(err, FC_EMISMATCH, "%s: %lld parameters, the model has %zu", path, (long long)rs->nparams, n);
  if (rc == 0) rc = fc_shard_load(ckpt, path, (long)(8 + sizeof *rs), n, lo, hi, opt, err);
  free(path);
  return rc;
}

/* ------------------------------------------------------------------ directories */

/* Removes a directory of plain files (our checkpoint directories). */
static void remove_flat_dir(const char *dir) {
  DIR *dp = opendir(dir);
  if (!dp) return;
  struct dirent *e;
  while ((e = readdir(dp))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *p = fc_path_join(dir, e->d_name);
    unlink(p);
    free(p);
  }
  closedir(dp);
  rmdir(dir);
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

char *fc_train_find_checkpoint(const char *out_dir, long *step) {
  DIR *dp = opendir(out_dir);
  if (!dp) return NULL;
  long best = -1;
  struct dirent *e;
  while ((e = readdir(dp))) {
    char *end;
    if (strncmp(e->d_name, "checkpoint-", 11) != 0) continue;
    long s = strtol(e->d_name + 11, &end, 10);
    if (*end || end == e->d_name + 11 || s <= best) continue;
    char *d = fc_path_join(out_dir, e->d_name);
    char *st = fc_path_join(d, "trainer_state.bin");
    if (fc_path_exists(st)) best = s;
    free(st);
    free(d);
  }
  closedir(dp);
  if (best < 0) return NULL;
  char name[64];
  snprintf(name, sizeof name, "checkpoint-%ld", best);
  if (step) *step = best;
  return fc_path_join(out_dir, name);
}

/* Deletes the oldest checkpoint-STEP directories beyond the newest `keep`. */
static void prune_checkpoints(const char *out_dir, int keep) {
  if (keep <= 0) return;
  for (;;) {
    DIR *dp = opendir(out_dir);
    if (!dp) return;
    long oldest = -1;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
      char *end;
      if (strncmp(e->d_name, "checkpoint-", 11) != 0) continue;
      long s = strtol(e->d_name + 11, &end, 10);
      if (*end || end == e->d_name + 11) continue;
      count++;
      if (oldest < 0 || s < oldest) oldest = s;
    }
    closedir(dp);
    if (count <= keep) return;
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%ld", oldest);
    char *d = fc_path_join(out_dir, name);
    remove_flat_dir(d);
    int gone = !fc_path_exists(d);
    free(d);
    if (!gone) return; /* not ours to remove (a subdirectory?): leave it */
  }
}

/* Tokenizer files that travel with every saved model: (source path, file name) pairs. */
typedef struct tok_files {
  char *src[4];
  const char *name[4];
  int n;
} tok_files_t;

static void tok_files_add(tok_files_t *t, const char *dir, const char *file, const char *name) {
  char *p = dir ? fc_path_join(dir, file) : fc_xstrdup(file);
  if (fc_path_exists(p) && t->n < 4) {
    t->src[t->n] = p;
    t->name[t->n++] = name;
  } else {
    free(p);
  }
}

static void tok_files_init(tok_files_t *t, const fc_train_opts_t *o) {
  memset(t, 0, sizeof *t);
  if (o->model_dir) {
    tok_files_add(t, o->model_dir, "tokenizer.json", "tokenizer.json");
    tok_files_add(t, o->model_dir, "tokenizer_config.json", "tokenizer_config.json");
    tok_files_add(t, o->model_dir, "special_tokens_map.json", "special_tokens_map.json");
  } else if (o->tokenizer_path) {
    tok_files_add(t, NULL, o->tokenizer_path, "tokenizer.json");
    /* a tokenizer_config.json beside the tokenizer (chat template, special tokens) */
    char *dir = fc_xstrdup(o->tokenizer_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    tok_files_add(t, slash ? dir : ".", "tokenizer_config.json", "tokenizer_config.json");
    free(dir);
  }
}

static void tok_files_free(tok_files_t *t) {
  for (int i = 0; i < t->n; i++) free(t->src[i]);
}

static int save_model_dir(const fc_model_t *m, const char *dir, fc_dtype_t dt, const tok_files_t *tf,
                          fc_err_t *err) {
  int rc = fc_model_save(m, dir, dt, err);
  for (int i = 0; rc == 0 && i < tf->n; i++) {
    char *dst = fc_path_join(dir, tf->name[i]);
    if (strcmp(tf->src[i], dst) != 0) rc = fc_copy_file(tf->src[i], dst, err);
    free(dst);
  }
  return rc;
}

/* The ranks' collective agreement on rc (the lowest), with a message on the ranks that did
 * not fail themselves. */
static int agree(const fc_comm_t *comm, int rc, fc_err_t *err) {
  if (!comm) return rc;
  int all = comm->agree(comm->ctx, rc);
  if (all != 0 && rc == 0) fc_err_set(err, all, "another training rank failed (its log says why)");
  return all;
}

/* Rank 0 builds the directory with the model and slice 0 of the optimizer, the other ranks add
 * their slices, then rank 0 renames it into place. */
static int save_checkpoint(const fc_model_t *m, const fc_adamw_t *opt, const run_shape_t *rs, const char *out,
                           const tok_files_t *tf, const fc_comm_t *comm, char **final_dir, fc_err_t *err) {
  const int rank = comm ? comm->rank : 0;
  char name[96];
  snprintf(name, sizeof name, ".checkpoint-%lld.tmp", (long long)rs->step);
  char *tmp = fc_path_join(out, name);
  snprintf(name, sizeof name, "checkpoint-%lld", (long long)rs->step);
  char *dst = fc_path_join(out, name);
  int rc = 0;
  if (rank == 0) {
    remove_flat_dir(tmp);
    rc = fc_mkdir_p(tmp, err);
    if (rc == 0) rc = save_model_dir(m, tmp, FC_DT_F32, tf, err);
    if (rc == 0) {
      char *sp = fc_path_join(tmp, "trainer_state.bin");
      rc = write_state(sp, rs, opt, err);
      free(sp);
    }
  }
  rc = agree(comm, rc, err);
  if (rc == 0 && rank > 0) rc = fc_shard_write(tmp, rank, comm->size, (size_t)rs->nparams, opt, err);
  rc = agree(comm, rc, err);
  if (rank > 0) {
    /* rank 0 renames (or removes) the directory; the others only learn whether it worked */
    free(tmp);
    free(dst);
    return agree(comm, 0, err);
  }
  if (rc == 0) {
    if (fc_path_exists(dst)) {
      /* an older run's checkpoint of the same step: move it aside, then drop it */
      snprintf(name, sizeof name, ".checkpoint-%lld.old", (long long)rs->step);
      char *old = fc_path_join(out, name);
      remove_flat_dir(old);
      if (rename(dst, old) != 0) rc = fc_err_set(err, FC_EIO, "cannot move %s aside: %s", dst, strerror(errno));
      if (rc == 0 && rename(tmp, dst) != 0) rc = fc_err_set(err, FC_EIO, "cannot rename %s: %s", tmp, strerror(errno));
      if (rc == 0) remove_flat_dir(old);
      free(old);
    } else if (rename(tmp, dst) != 0) {
      rc = fc_err_set(err, FC_EIO, "cannot rename %s to %s: %s", tmp, dst, strerror(errno));
    }
    fsync_dir(out);
  }
  if (rc != 0) {
    remove_flat_dir(tmp);
    fc_err_wrap(err, "writing checkpoint %s", dst);
    free(dst);
  } else if (final_dir) {
    *final_dir = dst;
  } else {
    free(dst);
  }
  free(tmp);
  if (comm) {
    int all = comm->agree(comm->ctx, rc);
    if (rc == 0) rc = all;
  }
  return rc;
}

/* ------------------------------------------------------------------ loss log */

/* Opens OUT/loss.csv for appending; a fresh run starts it anew, a resumed one keeps the rows of
 * steps up to the checkpoint (a killed run may have logged steps past it). */
static FILE *open_loss_log(const char *out, long keep_upto, fc_err_t *err) {
  char *path = fc_path_join(out, "loss.csv");
  const char *header = "step,loss,lr,grad_norm,ce,fusion,tokens\n";
  char *old = NULL;
  size_t len = 0;
  fc_err_t ignore = {0};
  if (keep_upto > 0 && fc_read_file(path, &old, &len, &ignore) != 0) old = NULL;
  fc_atomic_file_t af;
  if (fc_atomic_open(&af, path, err) != 0) {
    free(old), free(path);
    return NULL;
  }
  fputs(header, af.fp);
  if (old) {
    char *save = NULL;
    for (char *ln = strtok_r(old, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
      char *end;
      long s = strtol(ln, &end, 10);
      if (end != ln && *end == ',' && s <= keep_upto) fprintf(af.fp, "%s\n", ln);
    }
    free(old);
  }
  int rc = fc_atomic_commit(&af, err);
  FILE *fp = rc == 0 ? fopen(path, "a") : NULL;
  if (rc == 0 && !fp) fc_err_set(err, FC_EIO, "cannot open %s: %s", path, strerror(errno));
  free(path);
  return fp;
}

/* ------------------------------------------------------------------ the loop */

int fc_train_run(const fc_train_opts_t *o, fc_train_result_t *res, fc_err_t *err) {
  assert(o->data_path && o->out_dir && (o->model_dir || o->config_path));
  assert(o->batch_size > 0 && o->grad_accum > 0 && o->seq_len >= 2);
  fc_train_result_t r = {0};
  fc_model_t *m = NULL;
  fc_data_t *data = NULL;
  fc_adamw_t *opt = NULL;
  FILE *log = NULL;
  fc_batch_t *mb = NULL;
  char *ckpt = NULL;
  tok_files_t tf;
  tok_files_init(&tf, o);
  /* data parallel: this rank's place (comm of one process is the ordinary path) */
  const fc_comm_t *comm = o->comm && o->comm->size > 1 ? o->comm : NULL;
  const int R = comm ? comm->size : 1, rank = comm ? comm->rank : 0;
  int rc = rank == 0 ? fc_mkdir_p(o->out_dir, err) : 0;
  if ((rc = agree(comm, rc, err))) goto done;

  long start = 0;
  if (o->resume) ckpt = fc_train_find_checkpoint(o->out_dir, &start);
  if (o->resume && !ckpt && rank == 0) fc_warn("no checkpoint in %s: starting from the beginning", o->out_dir);
  if (ckpt) rc = fc_model_load(&m, ckpt, err);
  else if (o->model_dir) rc = fc_model_load(&m, o->model_dir, err);
  else {
    fc_config_t cfg;
    rc = fc_config_load(&cfg, o->config_path, err);
    if (rc == 0) rc = fc_model_init(&m, &cfg, o->seed, err);
  }
  if ((rc = agree(comm, rc, err))) goto done;
  fc_model_set_threads(m, o->threads);
  fc_model_set_checkpointing(m, o->checkpoint_activations);
  fc_loss_set_threads(o->threads);
  const fc_config_t *cfg = fc_model_config(m);

  fc_data_opts_t dopt = {o->seq_len, cfg->vocab_size, o->pack, o->shuffle, o->seed};
  rc = fc_data_load(&data, o->data_path, o->encoder, &dopt, err);
  if ((rc = agree(comm, rc, err))) goto done;
  size_t rows = fc_data_num_rows(data);
  if (fc_data_num_truncated(data) && rank == 0)
    fc_warn("%zu of %zu lines are longer than --seq-len %d and were truncated", fc_data_num_truncated(data),
            fc_data_num_lines(data), o->seq_len);
  const long per_step = (long)o->batch_size * o->grad_accum;
  long total = o->steps > 0 ? o->steps : (long)ceil(o->epochs * (double)rows / (double)per_step);
  if (total < 1) total = 1;
  long warmup = o->warmup >= 0 ? o->warmup : (long)ceil(o->warmup_ratio * (double)total);
  if (per_step < R) {
    rc = fc_err_set(err, FC_EINVAL, "%d ranks but only %ld rows per step (batch %d x accumulation %d): use at most %ld "
                    "ranks or a larger batch", R, per_step, o->batch_size, o->grad_accum, per_step);
    goto done;
  }

  if (o->fused_optimizer && (R > 1 || o->grad_accum > 1)) {
    rc = fc_err_set(err, FC_EINVAL, "the fused optimizer steps inside each backward: it needs one rank and no gradient "
                    "accumulation (%d ranks, accumulation %d)", R, o->grad_accum);
    goto done;
  }

  /* this rank's slice of the parameters: its AdamW moments (in optimizer_dtype), its share of
   * clipping and stepping */
  size_t np = fc_model_num_params(m), lo, hi;
  fc_comm_slice(np, R, rank, &lo, &hi);
  opt = fc_shard_adamw_new(m, lo, hi, (float)o->beta1, (float)o->beta2, (float)o->eps, (float)o->weight_decay,
                           o->optimizer_dtype);
  opt->threads = o->threads;

  run_shape_t rs = {0, total, 0, o->batch_size, o->grad_accum, o->seq_len, o->shuffle, o->pack,
                    (int64_t)rows, o->seed, (int64_t)np, o->targets ? o->targets->K : 0,
                    o->targets ? o->lambda : 1.0};
  if (ckpt) {
    run_shape_t saved;
    rc = read_state(ckpt, &saved, opt, np, lo, hi, err);
    if ((rc = agree(comm, rc, err))) goto done;
    if (saved.batch_size != rs.batch_size || saved.grad_accum != rs.grad_accum || saved.seq_len != rs.seq_len ||
        saved.shuffle != rs.shuffle || saved.pack != rs.pack || saved.rows != rs.rows || saved.seed != rs.seed ||
        saved.nparams != rs.nparams || saved.K != rs.K || saved.lambda != rs.lambda) {
      rc = fc_err_set(err, FC_EMISMATCH,
                      "%s was written with batch %lld, accum %lld, seq-len %lld, shuffle %lld, pack %lld, seed %llu, "
                      "%lld data rows, top-K %lld, lambda %g; this run differs (resume needs the same settings and data)",
                      ckpt, (long long)saved.batch_size, (long long)saved.grad_accum, (long long)saved.seq_len,
                      (long long)saved.shuffle, (long long)saved.pack, (unsigned long long)saved.seed,
                      (long long)saved.rows, (long long)saved.K, saved.lambda);
      goto done;
    }
    if (saved.total_steps != total && rank == 0)
      fc_warn("the checkpoint's run had %lld steps, this one %ld: the schedule changes", (long long)saved.total_steps,
              total);
    start = (long)saved.step;
    if (rank == 0) fc_info("resuming from %s (step %ld of %ld)", ckpt, start, total);
  }
  r.start_step = start;
  r.params = np;
  r.total_steps = total;
  r.steps_done = start;
  if (rank == 0 && !(log = open_loss_log(o->out_dir, ckpt ? start : 0, err))) rc = err ? err->code : FC_EIO;
  if ((rc = agree(comm, rc, err))) goto done;

  const int B = o->batch_size, G = o->grad_accum;
  mb = fc_xcalloc((size_t)G, sizeof *mb);
  float *params = fc_model_params(m), *grads = fc_model_grads(m);
  fc_fused_step_t fstep;
  if (o->fused_optimizer) fc_fused_step_init(&fstep, m, opt, o->clip);

  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  g_stop = 0;
  if (!o->no_signal_handlers) {
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }

  const int quiet = o->quiet || rank > 0;
  fc_progress_t prog;
  if (!quiet) fc_progress_start(&prog, "train", (double)(total - start));
  double t0 = fc_now(), comm_s = 0;
  long tokens_run = 0;
  for (long step = start + 1; step <= total && rc == 0; step++) {
    /* the rows this step reads follow from the step number alone; this rank takes its share
     * of them in micro-batches of at most B rows (one process: G micro-batches of B) */
    uint64_t first = (uint64_t)(step - 1) * (uint64_t)per_step;
    size_t share_lo, share_hi;
    fc_comm_slice((size_t)per_step, R, rank, &share_lo, &share_hi);
    const int nmb = (int)((share_hi - share_lo + (size_t)B - 1) / (size_t)B);
    long counted = 0, tokens = 0;
    for (int g = 0; g < nmb && rc == 0; g++) {
      size_t at = share_lo + (size_t)g * B;
      int rows_g = (int)(share_hi - at < (size_t)B ? share_hi - at : (size_t)B);
      rc = fc_data_batch(data, &mb[g], first + at, rows_g, o->targets, err);
      counted += mb[g].counted;
    }
    /* the loss is averaged over the counted positions of the whole step, on every rank */
    double st4[4] = {(double)counted, 0, 0, 0};
    if ((rc = agree(comm, rc, err)) || (comm && (rc = comm->sum(comm->ctx, st4, 1, err)))) break;
    counted = (long)st4[0];
    double norm = counted > 0 ? (double)counted : 1.0;
    double loss = 0, ce = 0, fu = 0;
    double gnorm, lr = o->lr * fc_sched_factor(o->schedule, step - 1, warmup, total);
    if (!o->fused_optimizer) fc_model_zero_grad(m); /* the fused step leaves them released (zero) */
    for (int g = 0; g < nmb && rc == 0; g++) {
      fc_batch_t *b = &mb[g];
      fc_fused_targets_t fused = {b->K, b->topk_ids, b->topk_logprobs};
      fc_loss_stats_t st;
      double l;
      /* the output layer goes chunk by chunk: no (B,T,V) logits or gradient is ever held */
      if (o->fused_optimizer) {
        rc = fc_fused_step_run(&fstep, (float)lr, b->ids, b->B, b->T, b->targets, b->K ? &fused : NULL,
                               (float)o->lambda, norm, &st, &l, err);
        if (rc == FC_EINVAL) fc_err_wrap(err, "step %ld (lower --lr?)", step); /* non-finite loss or gradient */
      } else
        rc = fc_model_loss_backward(m, b->ids, b->B, b->T, b->targets, b->K ? &fused : NULL, (float)o->lambda, norm,
                                    &st, &l, err);
      if (rc) break;
      loss += l;
      ce += st.ce;
      fu += st.fusion;
      tokens += b->tokens;
    }
    if ((rc = agree(comm, rc, err))) break;
    if (!comm) {
      if (!isfinite(loss)) {
        rc = fc_err_set(err, FC_EINVAL, "step %ld: the loss is %g (lower --lr?)", step, loss);
        break;
      }
      if (o->fused_optimizer) {
        gnorm = fstep.norm;
      } else {
        gnorm = fc_clip_grad_norm(grads, np, o->clip);
        /* a non-finite norm makes clipping a no-op and AdamW would write it into every
         * parameter: stop before the update, as the fused step does */
        if (!isfinite(gnorm)) {
          rc = fc_err_set(err, FC_EINVAL, "step %ld: the gradient norm is %g; no parameter was updated (lower --lr?)",
                          step, gnorm);
          break;
        }
        fc_adamw_step(opt, params, grads, (float)lr);
      }
    } else {
      /* sum the gradients into this rank's slice, clip by the global norm, step the slice, then
       * share the updated slices: every rank ends the step with the same weights */
      double c0 = fc_now();
      if ((rc = comm->reduce_scatter(comm->ctx, grads, np, err))) break;
      st4[0] = loss, st4[1] = ce, st4[2] = fu, st4[3] = fc_grad_sumsq(grads + lo, hi - lo);
      if ((rc = comm->sum(comm->ctx, st4, 4, err))) break;
      loss = st4[0], ce = st4[1], fu = st4[2], gnorm = sqrt(st4[3]);
      if (!isfinite(loss)) {
        rc = fc_err_set(err, FC_EINVAL, "step %ld: the loss is %g (lower --lr?)", step, loss);
        break;
      }
      if (!isfinite(gnorm)) { /* every rank sees the same summed norm, so all stop here */
        rc = fc_err_set(err, FC_EINVAL, "step %ld: the gradient norm is %g; no parameter was updated (lower --lr?)",
                        step, gnorm);
        break;
      }
      fc_clip_grad_scale(grads + lo, hi - lo, gnorm, o->clip);
      fc_adamw_step(opt, params + lo, grads + lo, (float)lr);
      if ((rc = comm->allgather(comm->ctx, params, np, err))) break;
      st4[0] = (double)tokens;
      if ((rc = comm->sum(comm->ctx, st4, 1, err))) break;
      tokens = (long)st4[0];
      comm_s += fc_now() - c0;
    }
    tokens_run += tokens;
    r.steps_done = step;
    r.last_loss = loss;
    if (log) {
      fprintf(log, "%ld,%.6f,%.6g,%.6g,%.6f,%.6f,%ld\n", step, loss, lr, gnorm, ce, fu, tokens);
      fflush(log);
    }
    int cancel = 0;
    if (o->progress && rank == 0) {
      char msg[128];
      snprintf(msg, sizeof msg, "step %ld/%ld loss %.4f lr %.3g", step, total, loss, lr);
      cancel = o->progress(o->progress_ctx, (double)step / (double)total, msg);
      if (cancel == FC_PROGRESS_ABORT) { /* no checkpoint: whatever we write now is not ours to write */
        r.interrupted = 1;
        rc = fc_err_set(err, FC_ECANCEL, "aborted after step %ld of %ld without a checkpoint", step, total);
        break;
      }
    }
    double el = fc_now() - t0;
    if (!quiet) {
      char extra[160];
      snprintf(extra, sizeof extra, "step %ld/%ld loss %.4f lr %.3g %.0f tok/s", step, total, loss, lr,
               el > 0 ? tokens_run / el : 0);
      fc_progress_update(&prog, (double)(step - start), extra);
    }
    if (o->log_every > 0 && step % o->log_every == 0 && rank == 0)
      fc_info("step %ld/%ld loss %.4f lr %.3g grad_norm %.3g", step, total, loss, lr, gnorm);
    int stop = g_stop || cancel || (o->stop_after > 0 && step >= o->stop_after);
    if (comm) {
      /* a signal or a cancel reaching any rank stops all of them after the same step */
      st4[0] = stop;
      if ((rc = comm->sum(comm->ctx, st4, 1, err))) break;
      stop = st4[0] > 0;
    }
    if ((o->checkpoint_every > 0 && step % o->checkpoint_every == 0) || step == total || stop) {
      rs.step = step;
      rs.next_row = (int64_t)(first + (uint64_t)per_step);
      char *where = NULL;
      if ((rc = save_checkpoint(m, opt, &rs, o->out_dir, &tf, comm, &where, err)) != 0) break;
      if (rank == 0) prune_checkpoints(o->out_dir, o->keep_checkpoints);
      if (stop && step < total) {
        r.interrupted = 1;
        rc = fc_err_set(err, FC_ECANCEL, "interrupted after step %ld of %ld; checkpoint in %s (continue with --resume)",
                        step, total, where ? where : o->out_dir);
      }
      free(where);
    }
  }
  double el = fc_now() - t0;
  long ran = r.steps_done - start;
  r.tokens_per_s = el > 0 ? tokens_run / el : 0;
  r.ms_per_step = ran > 0 ? 1e3 * el / ran : 0;
  r.comm_ms_per_step = ran > 0 ? 1e3 * comm_s / ran : 0;
  if (!quiet) {
    char extra[128];
    snprintf(extra, sizeof extra, "%ld steps, loss %.4f, %.1f ms/step", ran, r.last_loss, r.ms_per_step);
    fc_progress_end(&prog, extra);
  }
  if (!o->no_signal_handlers) {
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
  }
  if (rc == 0 && (g_stop || (o->stop_after > 0 && r.steps_done >= o->stop_after)) && r.steps_done < total) {
    r.interrupted = 1;
    rc = fc_err_set(err, FC_ECANCEL, "interrupted");
  }
  const int saving = rc == 0; /* the same on every rank: the loop's failures are agreed */
  if (rc == 0 && rank == 0) {
    rc = save_model_dir(m, o->out_dir, o->save_dtype, &tf, err);
    if (rc) fc_err_wrap(err, "saving the final model in %s", o->out_dir);
  }
  if (saving) rc = agree(comm, rc, err);

done:
  if (mb)
    for (int g = 0; g < o->grad_accum; g++) fc_batch_free(&mb[g]);
  free(mb);
  if (log) fclose(log);
  fc_adamw_destroy(&opt);
  fc_data_destroy(&data);
  fc_model_destroy(&m);
  free(ckpt);
  tok_files_free(&tf);
  if (res) *res = r;
  return rc;
}
