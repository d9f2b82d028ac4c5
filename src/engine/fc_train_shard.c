/* Sharded AdamW state (ZeRO-1) and its checkpoint files; see fc_train_shard.h. */
#include "fc_train_shard.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fc_comm.h"

static const char SHARD_MAGIC[8] = {'F', 'C', 'O', 'S', 'H', 'R', 'D', '1'};

fc_adamw_t *fc_shard_adamw_new(const fc_model_t *m, size_t lo, size_t hi, float beta1, float beta2, float eps,
                               float weight_decay) {
  size_t nt = fc_model_num_tensors(m), k = 0;
  fc_param_info_t *part = fc_xcalloc(nt ? nt : 1, sizeof *part);
  const fc_param_info_t **tens = fc_xcalloc(nt ? nt : 1, sizeof *tens);
  for (size_t i = 0; i < nt; i++) {
    const fc_param_info_t *t = fc_model_tensor(m, i);
    size_t a = t->offset > lo ? t->offset : lo, b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
    if (a >= b) continue;
    /* the tensor's part inside the slice, at slice-relative offsets; ndim decides the decay */
    part[k] = *t;
    part[k].offset = a - lo;
    part[k].numel = b - a;
    tens[k] = &part[k];
    k++;
  }
  fc_adamw_t *o = fc_adamw_new(hi - lo, tens, k, beta1, beta2, eps, weight_decay);
  free(tens);
  free(part);
  return o;
}

static char *shard_path(const char *dir, int rank, int size) {
  char name[64];
  snprintf(name, sizeof name, "optimizer-%d-of-%d.bin", rank, size);
  return fc_path_join(dir, name);
}

int fc_shard_write(const char *dir, int rank, int size, size_t n, const fc_adamw_t *opt, fc_err_t *err) {
  char *path = shard_path(dir, rank, size);
  fc_atomic_file_t af;
  int rc = fc_atomic_open(&af, path, err);
  if (rc == 0) {
    int64_t hdr[3] = {rank, size, (int64_t)n};
    if (fwrite(SHARD_MAGIC, 8, 1, af.fp) != 1 || fwrite(hdr, sizeof hdr, 1, af.fp) != 1)
      rc = fc_err_set(err, FC_EIO, "writing %s: %s", path, strerror(errno));
    if (rc == 0) rc = fc_adamw_write(opt, af.fp, err);
    if (rc == 0) rc = fc_atomic_commit(&af, err);
    else fc_atomic_abort(&af);
  }
  free(path);
  return rc;
}

/* How many ranks wrote the checkpoint: optimizer-1-of-R.bin names R, none means one. */
static int checkpoint_ranks(const char *ckpt) {
  DIR *dp = opendir(ckpt);
  if (!dp) return 1;
  int ranks = 1;
  struct dirent *e;
  while ((e = readdir(dp))) {
    int r, s;
    char tail[8];
    if (sscanf(e->d_name, "optimizer-%d-of-%d.bi%1s", &r, &s, tail) == 3 && r == 1 && s > 1) ranks = s;
  }
  closedir(dp);
  return ranks;
}

/* Opens old slice s of `ranks` positioned at its AdamW section. */
static FILE *open_slice(const char *ckpt, const char *state_path, long state_off, int s, int ranks, size_t n,
                        fc_err_t *err) {
  if (s == 0) {
    FILE *fp = fopen(state_path, "rb");
    if (!fp) fc_err_set(err, FC_EIO, "cannot open %s: %s", state_path, strerror(errno));
    else if (fseek(fp, state_off, SEEK_SET) != 0) fclose(fp), fp = NULL, fc_err_set(err, FC_EFORMAT, "%s: truncated", state_path);
    return fp;
  }
  char *path = shard_path(ckpt, s, ranks);
  FILE *fp = fopen(path, "rb");
  char magic[8];
  int64_t hdr[3];
  if (!fp) {
    fc_err_set(err, FC_EIO, "cannot open %s: %s (a checkpoint of %d ranks needs every rank's file)", path,
               strerror(errno), ranks);
  } else if (fread(magic, 8, 1, fp) != 1 || memcmp(magic, SHARD_MAGIC, 8) != 0 || fread(hdr, sizeof hdr, 1, fp) != 1 ||
             hdr[0] != s || hdr[1] != ranks || hdr[2] != (int64_t)n) {
    fclose(fp), fp = NULL;
    fc_err_set(err, FC_EFORMAT, "%s: not slice %d of %d of a %zu-parameter optimizer", path, s, ranks, n);
  }
  free(path);
  return fp;
}

int fc_shard_load(const char *ckpt, const char *state_path, long state_off, size_t n, size_t lo, size_t hi,
                  fc_adamw_t *opt, fc_err_t *err) {
  int ranks = checkpoint_ranks(ckpt);
  for (int s = 0; s < ranks; s++) {
    size_t a, b;
    fc_comm_slice(n, ranks, s, &a, &b);
    size_t x = a > lo ? a : lo, y = b < hi ? b : hi;
    if (x >= y) continue;
    FILE *fp = open_slice(ckpt, state_path, state_off, s, ranks, n, err);
    if (!fp) return err ? err->code : FC_EIO;
    int rc;
    if (a == lo && b == hi) {
      rc = fc_adamw_read(opt, fp, err); /* the same slice: no copy */
    } else {
      /* another rank count: read the old slice whole, keep the overlap */
      fc_adamw_t *old = fc_adamw_new(b - a, NULL, 0, opt->beta1, opt->beta2, opt->eps, opt->weight_decay);
      rc = fc_adamw_read(old, fp, err);
      if (rc == 0) {
        memcpy(opt->m + (x - lo), old->m + (x - a), (y - x) * sizeof *opt->m);
        memcpy(opt->v + (x - lo), old->v + (x - a), (y - x) * sizeof *opt->v);
        opt->step = old->step;
      }
      fc_adamw_destroy(&old);
    }
    fclose(fp);
    if (rc) return fc_err_wrap(err, "optimizer slice %d of %d in %s", s, ranks, ckpt), rc;
  }
  return 0;
}
