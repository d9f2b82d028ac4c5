/* bench/real: the engine at the shapes of real checkpoints (Qwen2.5-0.5B, Llama-3.2-1B,
 * Qwen2.5-1.5B) with random bf16 weights generated into a scratch directory, real tokenizers and
 * chat conversations: load time, logits tokens/s (short chats and 2,048-token rows), train step
 * time, each phase's peak RSS (every phase runs in a child process of its own), every GEMM
 * candidate's rate at the model's shapes, and PyTorch on the same weights and batches in the same
 * run (bench/real_ref.py). */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fc_config.h"
#include "fc_data.h"
#include "fc_model.h"
#include "fc_optim.h"
#include "fc_st.h"
#include "fc_gendata.h"
#include "fc_tok.h"
#include "fc_train_src.h"
#include "fc_wlin.h"

#include "gemm_rates.h"

#ifndef FC_SOURCE_ROOT
#define FC_SOURCE_ROOT "."
#endif

typedef struct real_shape {
  const char *name, *type, *tok; /* tok: fixtures/tok folder of the family's tokenizer */
  int C, L, NH, NKV, F, V;
} real_shape_t;

static const real_shape_t shapes[] = {
    {"qwen2.5-0.5b", "qwen2", "qwen3", 896, 24, 14, 2, 4864, 151936},
    {"llama3.2-1b", "llama", "llama3", 2048, 16, 32, 8, 8192, 128256},
    {"qwen2.5-1.5b", "qwen2", "qwen3", 1536, 28, 12, 2, 8960, 151936},
};

typedef struct bench_opts {
  const char *dir;     /* scratch root: DIR/NAME/ model dirs, data, ids for the reference */
  const char *tok_dir; /* folder holding qwen3/ and llama3/ tokenizers */
  int threads, reps, train_reps, ref, train_ref, chats, ckpt, long_rows, fused;
  const char *opt_dtype;
  const char *lock; /* --lock FILE: each phase over 3 GB (ours, PyTorch's) holds flock(FILE) alone */
} bench_opts_t;

/* ------------------------------------------------------------------ printing */

/* A figure, or "n/a" where it was not measured (negative: missing). */
static const char *fig(char *buf, size_t cap, double v, int prec) {
  if (v < 0) snprintf(buf, cap, "n/a");
  else snprintf(buf, cap, "%.*f", prec, v);
  return buf;
}

/* "a/b x", or "n/a" when either side is missing. */
static const char *ratio(char *buf, size_t cap, double a, double b) {
  if (a <= 0 || b <= 0) snprintf(buf, cap, "n/a");
  else snprintf(buf, cap, "%.2fx", a / b);
  return buf;
}

/* One table row: ours, PyTorch's, and ours/PyTorch's (or PyTorch's/ours: inv). */
static void row(const char *label, double ours, double theirs, int prec, int inv) {
  char a[32], b[32], r[32];
  printf("%-22s %12s %12s %8s\n", label, fig(a, sizeof a, ours, prec), fig(b, sizeof b, theirs, prec),
         inv ? ratio(r, sizeof r, theirs, ours) : ratio(r, sizeof r, ours, theirs));
}

/* ------------------------------------------------------------------ the big-memory lock */

static int lock_fd = -1;

static void lock_take(const bench_opts_t *o) {
  if (!o->lock) return;
  fflush(stdout);
  lock_fd = open(o->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (lock_fd >= 0 && flock(lock_fd, LOCK_EX) != 0) close(lock_fd), lock_fd = -1;
  if (lock_fd < 0) fprintf(stderr, "real: cannot lock %s, running without it\n", o->lock);
}

static void lock_drop(void) {
  if (lock_fd >= 0) close(lock_fd); /* closing releases the flock */
  lock_fd = -1;
}

/* MemAvailable of /proc/meminfo in bytes (-1 when unknown). */
static double mem_available(void) {
  FILE *fp = fopen("/proc/meminfo", "r");
  char line[256];
  double kb = -1;
  while (fp && fgets(line, sizeof line, fp))
    if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
  if (fp) fclose(fp);
  return kb < 0 ? -1 : kb * 1024;
}

/* ------------------------------------------------------------------ generating a model */

static void shape_config(const real_shape_t *s, fc_config_t *c) {
  fc_config_default(c, s->type);
  c->hidden_size = s->C, c->num_layers = s->L, c->num_heads = s->NH, c->num_kv_heads = s->NKV;
  c->head_dim = s->C / s->NH, c->intermediate_size = s->F, c->vocab_size = s->V;
  c->tie_word_embeddings = 1;
  c->max_position_embeddings = 32768;
  snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
  if (!strcmp(s->type, "qwen2")) {
    c->rope_theta = 1000000.0f, c->rms_norm_eps = 1e-6f, c->attention_bias = 1;
  } else {
    c->rope_theta = 500000.0f, c->rms_norm_eps = 1e-5f;
    snprintf(c->rope_scaling_type, sizeof c->rope_scaling_type, "llama3");
    c->rope_factor = 32, c->rope_low_freq_factor = 1, c->rope_high_freq_factor = 4;
    c->rope_original_max_pos = 8192;
  }
}

/* The Hugging Face tensor list of a shape (llama / qwen2 naming; tied head, so no lm_head). */
static size_t shape_specs(const real_shape_t *s, fc_st_spec_t *sp, char (*names)[96]) {
  size_t n = 0;
  int64_t C = s->C, KV = (int64_t)s->C / s->NH * s->NKV, F = s->F;
#define SPEC(R, C2, ...)                                                                   \
  do {                                                                                     \
    snprintf(names[n], 96, __VA_ARGS__);                                                   \
    sp[n] = (fc_st_spec_t){.name = names[n], .dtype = FC_DT_BF16, .ndim = (C2) ? 2 : 1};   \
    sp[n].shape[0] = (R), sp[n].shape[1] = (C2);                                           \
    n++;                                                                                   \
  } while (0)
  SPEC(s->V, C, "model.embed_tokens.weight");
  int bias = !strcmp(s->type, "qwen2");
  for (int l = 0; l < s->L; l++) {
    SPEC(C, 0, "model.layers.%d.input_layernorm.weight", l);
    SPEC(C, C, "model.layers.%d.self_attn.q_proj.weight", l);
    if (bias) SPEC(C, 0, "model.layers.%d.self_attn.q_proj.bias", l);
    SPEC(KV, C, "model.layers.%d.self_attn.k_proj.weight", l);
    if (bias) SPEC(KV, 0, "model.layers.%d.self_attn.k_proj.bias", l);
    SPEC(KV, C, "model.layers.%d.self_attn.v_proj.weight", l);
    if (bias) SPEC(KV, 0, "model.layers.%d.self_attn.v_proj.bias", l);
    SPEC(C, C, "model.layers.%d.self_attn.o_proj.weight", l);
    SPEC(C, 0, "model.layers.%d.post_attention_layernorm.weight", l);
    SPEC(F, C, "model.layers.%d.mlp.gate_proj.weight", l);
    SPEC(F, C, "model.layers.%d.mlp.up_proj.weight", l);
    SPEC(C, F, "model.layers.%d.mlp.down_proj.weight", l);
  }
  SPEC(C, 0, "model.norm.weight");
#undef SPEC
  return n;
}

/* DIR/NAME/model: config.json, model.safetensors (bf16, uniform weights of std 0.02, norms 1,
 * biases 0) and the tokenizer files; kept between runs (made once). The bf16 values are made
 * straight from a fast generator and streamed into the file 8 MB at a time (no f32 model, no
 * whole-tensor buffer), so even the 1.5B shape is written in seconds. */
static int make_model(const bench_opts_t *o, const real_shape_t *s, char *mdir, size_t cap) {
  snprintf(mdir, cap, "%s/%s/model", o->dir, s->name);
  char path[4096];
  snprintf(path, sizeof path, "%s/model.safetensors", mdir);
  if (fc_path_exists(path)) return 0;
  fc_err_t err = {0};
  if (fc_mkdir_p(mdir, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  fc_config_t cfg;
  shape_config(s, &cfg);
  size_t cap_t = 2 + 12 * (size_t)s->L;
  fc_st_spec_t *specs = calloc(cap_t, sizeof *specs);
  char(*names)[96] = calloc(cap_t, sizeof *names);
  size_t nt = shape_specs(s, specs, names);
  fc_st_writer_t *w;
  int rc = fc_st_writer_new(&w, path, specs, nt, NULL, &err);
  if (!rc) rc = fc_st_writer_reserve(w, &err);
  enum { CHUNK = 4 << 20 }; /* bf16 values per write */
  uint16_t *buf = malloc(CHUNK * sizeof *buf);
  uint64_t x = 0x9e3779b97f4a7c15ull; /* xorshift64*: four 16-bit draws per step */
  for (size_t i = 0; !rc && i < nt; i++) {
    int norm = strstr(specs[i].name, "norm") != NULL, bias = strstr(specs[i].name, ".bias") != NULL;
    size_t numel = (size_t)specs[i].shape[0] * (size_t)(specs[i].ndim == 2 ? specs[i].shape[1] : 1);
    int fd;
    uint64_t off;
    if ((rc = fc_st_writer_put_at(w, i, &fd, &off, &err))) break;
    for (size_t done = 0; !rc && done < numel;) {
      size_t n = numel - done < CHUNK ? numel - done : CHUNK;
      for (size_t j = 0; j < n; j += 4) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        uint64_t r = x * 0x2545f4914f6cdd1dull;
        for (size_t q = 0; q < 4 && j + q < n; q++) {
          float v = norm ? 1.0f : bias ? 0.0f : 0.0693f * ((float)((r >> (16 * q)) & 0xffff) / 65536.0f - 0.5f);
          buf[j + q] = fc_f32_to_bf16(v);
        }
      }
      size_t bytes = n * 2, put = 0;
      while (put < bytes) {
        ssize_t k = pwrite(fd, (char *)buf + put, bytes - put, (off_t)(off + done * 2 + put));
        if (k <= 0) {
          rc = fc_err_set(&err, FC_EIO, "cannot write %s", path);
          break;
        }
        put += (size_t)k;
      }
      done += n;
    }
    if (!rc) fc_st_writer_put_done(w, i);
  }
  if (!rc) rc = fc_st_writer_finish(&w, &err);
  free(buf), free(specs), free(names);
  snprintf(path, sizeof path, "%s/config.json", mdir);
  if (!rc) rc = fc_config_save(&cfg, path, &err);
  const char *files[] = {"tokenizer.json", "tokenizer_config.json"};
  for (int i = 0; !rc && i < 2; i++) {
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s/%s", o->tok_dir, s->tok, files[i]);
    snprintf(dst, sizeof dst, "%s/%s", mdir, files[i]);
    rc = fc_copy_file(src, dst, &err);
  }
  if (rc) fprintf(stderr, "real: making %s: %s\n", mdir, err.msg);
  return rc ? 1 : 0;
}

/* DIR/chatsN.jsonl (N short chats) and DIR/long.jsonl (enough turns to pack 2,048-token rows). */
static int make_data(const bench_opts_t *o) {
  fc_err_t err = {0};
  char path[4096];
  fc_gendata_opts_t t = {.count = (size_t)o->chats, .split = FC_GENDATA_TRAIN, .seed = 5, .world_seed = 1,
                         .max_turns = 3};
  for (int f = 0; f < FC_GENDATA_NCLASSIC; f++) t.mix[f] = 1;
  snprintf(path, sizeof path, "%s/chats%d.jsonl", o->dir, o->chats);
  if (!fc_path_exists(path) && fc_gendata_write(&t, path, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  t.count = 1200, t.seed = 6, t.max_turns = 6;
  snprintf(path, sizeof path, "%s/long.jsonl", o->dir);
  if (!fc_path_exists(path) && fc_gendata_write(&t, path, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  return 0;
}

/* ------------------------------------------------------------------ phases (in a child) */

typedef struct phase_out {
  char text[2048]; /* "key value" lines */
  size_t len;
} phase_out_t;

static void put(phase_out_t *po, const char *key, double v) {
  po->len += (size_t)snprintf(po->text + po->len, sizeof po->text - po->len, "%s %.6g\n", key, v);
}

static double get(const char *text, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, key, kl) && p[kl] == ' ') return atof(p + kl + 1);
  return -1;
}

static int load_data(fc_data_t **d, const char *mdir, const char *file, int T, int pack, int V, fc_tok_t **tok) {
  fc_err_t err = {0};
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer.json", mdir);
  if (!*tok && fc_tok_load(tok, path, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  static fc_train_encoder_t enc;
  fc_train_encoder_init(&enc, *tok, FC_CHAT_AUTO);
  fc_data_opts_t dopt = {T, V, pack, 0, 1};
  if (fc_data_load(d, file, &enc.enc, &dopt, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  return 0;
}

/* Writes the batches for bench/real_ref.py: int32 B, T, non-padding tokens, then ids (B,T) and
 * targets (B,T). */
static void dump_batch(FILE *fp, const fc_batch_t *b) {
  if (!fp) return;
  int32_t hdr[3] = {b->B, b->T, (int32_t)b->tokens};
  fwrite(hdr, sizeof hdr, 1, fp);
  fwrite(b->ids, sizeof(int32_t), (size_t)b->B * b->T, fp);
  fwrite(b->targets, sizeof(int32_t), (size_t)b->B * b->T, fp);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Logits stage: batches of 8 short chats, then 2,048-token rows, top-10 + gold log-prob. */
static int phase_logits(const bench_opts_t *o, const char *mdir, const char *sdir, phase_out_t *po) {
  fc_err_t err = {0};
  double t0 = fc_now();
  fc_model_t *m;
  if (fc_model_load_mapped(&m, mdir, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  put(po, "load_s", fc_now() - t0);
  put(po, "in_place", fc_model_in_place(m));
  put(po, "wgemm", fc_wgemm_default());
  fc_model_set_threads(m, o->threads);
  int V = fc_model_config(m)->vocab_size;
  fc_tok_t *tok = NULL;
  char chats[64];
  snprintf(chats, sizeof chats, "chats%d.jsonl", o->chats);
  const char *files[2] = {chats, "long.jsonl"};
  const char *keys[2] = {"chat_tok_s", "long_tok_s"};
  int Bs[2] = {8, 1}, Ts[2] = {512, 2048}, packs[2] = {0, 1}, limit[2] = {1 << 30, o->long_rows};
  for (int k = 0; k < 2; k++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", o->dir, files[k]);
    fc_data_t *d;
    if (load_data(&d, mdir, path, Ts[k], packs[k], V, &tok)) return 1;
    snprintf(path, sizeof path, "%s/%s.ids", sdir, keys[k]);
    FILE *ids = fopen(path, "wb");
    size_t rows = fc_data_num_rows(d);
    int nb = (int)((rows + (size_t)Bs[k] - 1) / (size_t)Bs[k]);
    if (nb > limit[k]) nb = limit[k];
    double times[16];
    int reps = o->reps < 16 ? o->reps : 16;
    long tokens = 0;
    fc_batch_t b = {0};
    for (int r = 0; r < reps; r++) {
      double el = 0;
      tokens = 0;
      for (int i = 0; i < nb; i++) {
        size_t first = (size_t)i * Bs[k], n = rows - first < (size_t)Bs[k] ? rows - first : (size_t)Bs[k];
        if (fc_data_batch(d, &b, first, (int)n, NULL, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
        if (r == 0) dump_batch(ids, &b);
        int32_t *ti = malloc((size_t)b.B * b.T * 10 * sizeof *ti);
        float *tl = malloc((size_t)b.B * b.T * 10 * sizeof *tl), *gl = malloc((size_t)b.B * b.T * sizeof *gl);
        double s = fc_now();
        if (fc_model_forward_topk(m, b.ids, b.B, b.T, 10, b.targets, ti, tl, gl, &err))
          return fprintf(stderr, "real: %s\n", err.msg), 1;
        el += fc_now() - s;
        tokens += b.tokens;
        free(ti), free(tl), free(gl);
      }
      times[r] = el;
    }
    if (ids) fclose(ids);
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    put(po, keys[k], tokens / times[reps / 2]);
    put(po, k ? "long_tokens" : "chat_tokens", (double)tokens);
    fc_batch_free(&b);
    fc_data_destroy(&d);
  }
  fc_tok_destroy(&tok);
  fc_model_destroy(&m);
  return 0;
}

/* Training steps (forward, loss, backward, clipping, AdamW) at B x T packed rows. */
static int phase_train(const bench_opts_t *o, const char *mdir, const char *sdir, int B, int T, phase_out_t *po) {
  fc_err_t err = {0};
  fc_model_t *m;
  if (fc_model_load(&m, mdir, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  fc_model_set_threads(m, o->threads);
  fc_model_set_checkpointing(m, o->ckpt);
  int V = fc_model_config(m)->vocab_size;
  fc_tok_t *tok = NULL;
  char path[4096];
  snprintf(path, sizeof path, "%s/long.jsonl", o->dir);
  fc_data_t *d;
  if (load_data(&d, mdir, path, T, 1, V, &tok)) return 1;
  size_t np = fc_model_num_params(m), nt = fc_model_num_tensors(m);
  const fc_param_info_t **tens = malloc(nt * sizeof *tens);
  for (size_t i = 0; i < nt; i++) tens[i] = fc_model_tensor(m, i);
  fc_dtype_t odt = FC_DT_F32;
  if (o->opt_dtype && fc_dtype_parse(o->opt_dtype, &odt)) return fprintf(stderr, "real: bad optimizer dtype\n"), 1;
  fc_adamw_t *opt = fc_adamw_new_dtype(np, tens, nt, 0.9f, 0.95f, 1e-8f, 0.0f, odt);
  free(tens);
  opt->threads = o->threads;
  fc_loss_set_threads(o->threads);
  snprintf(path, sizeof path, "%s/train_%dx%d.ids", sdir, B, T);
  FILE *ids = fopen(path, "wb");
  fc_batch_t b = {0};
  int reps = o->train_reps < 16 ? o->train_reps : 16;
  double times[16];
  fc_fused_step_t fs;
  if (o->fused) fc_fused_step_init(&fs, m, opt, 1.0);
  for (int r = 0; r <= reps; r++) { /* step 0 warms up (first touches of grads and moments) */
    if (fc_data_batch(d, &b, (uint64_t)r * B, B, NULL, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
    dump_batch(ids, &b);
    double s = fc_now(), loss, norm = b.counted ? (double)b.counted : 1.0;
    if (o->fused) { /* the update inside backward: whole-model gradients never resident */
      if (fc_fused_step_run(&fs, 1e-5f, b.ids, b.B, b.T, b.targets, NULL, 1.0f, norm, NULL, &loss, &err))
        return fprintf(stderr, "real: %s\n", err.msg), 1;
    } else {
      fc_model_zero_grad(m);
      if (fc_model_loss_backward(m, b.ids, b.B, b.T, b.targets, NULL, 1.0f, norm, NULL, &loss, &err))
        return fprintf(stderr, "real: %s\n", err.msg), 1;
      fc_clip_grad_norm(fc_model_grads(m), np, 1.0);
      fc_adamw_step(opt, fc_model_params(m), fc_model_grads(m), 1e-5f);
    }
    if (r) times[r - 1] = fc_now() - s;
    if (r == 0) put(po, "loss0", loss);
  }
  if (ids) fclose(ids);
  qsort(times, (size_t)reps, sizeof *times, cmp_double);
  put(po, "step_s", times[reps / 2]);
  put(po, "tokens", (double)B * T);
  fc_batch_free(&b);
  fc_data_destroy(&d);
  fc_tok_destroy(&tok);
  fc_adamw_destroy(&opt);
  fc_model_destroy(&m);
  return 0;
}

/* The GEMMs of a forward over M tokens: q (and o) projection, gate/up, down, LM head. */
static void phase_gemm(const bench_opts_t *o, const real_shape_t *s, phase_out_t *po) {
  int M = 2048;
  struct {
    const char *name;
    int N, K;
  } g[] = {{"qo", s->C, s->C}, {"gate", s->F, s->C}, {"down", s->C, s->F}, {"head", s->V, s->C}};
  for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
    double rate[GEMM_NCAND];
    gemm_rates(i == 3 ? 512 : M, g[i].N, g[i].K, 2, o->threads, rate);
    for (int c = 0; c < GEMM_NCAND; c++) {
      char key[64];
      snprintf(key, sizeof key, "gemm_%s_%s", g[i].name, gemm_names[c]);
      put(po, key, rate[c]);
    }
  }
}

/* Runs one phase in a child; its "key value" lines land in out, its peak RSS under "rss_mb". */
static int run_phase(const bench_opts_t *o, const real_shape_t *s, const char *mdir, const char *sdir,
                     const char *phase, int B, int T, char *out, size_t cap) {
  int fd[2];
  if (pipe(fd)) return 1;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fd[0]);
    phase_out_t po = {{0}, 0};
    int rc = 0;
    if (!strcmp(phase, "logits")) rc = phase_logits(o, mdir, sdir, &po);
    else if (!strcmp(phase, "train")) rc = phase_train(o, mdir, sdir, B, T, &po);
    else phase_gemm(o, s, &po);
    if (write(fd[1], po.text, po.len) < 0) rc = 1;
    _exit(rc);
  }
  close(fd[1]);
  size_t n = 0;
  ssize_t got;
  while (n + 1 < cap && (got = read(fd[0], out + n, cap - 1 - n)) > 0) n += (size_t)got;
  out[n] = 0;
  close(fd[0]);
  int status;
  struct rusage ru;
  if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) return 1;
  snprintf(out + n, cap - n, "rss_mb %.1f\n", ru.ru_maxrss / 1024.0);
  return 0;
}

/* bench/real_ref.py on the same model dir and dumped batches; its "key value" lines into out. */
static void run_ref(const bench_opts_t *o, const char *mdir, const char *sdir, const char *what, char *out,
                    size_t cap, char *why, size_t why_cap) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/bench/real_ref.py --model %s --scratch %s --threads %d --reps %d %s",
           FC_SOURCE_ROOT, mdir, sdir, o->threads, o->reps, what);
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  size_t n = 0;
  out[0] = 0;
  if (!p) {
    snprintf(why, why_cap, "cannot run python3");
    return;
  }
  n = fread(out, 1, cap - 1, p);
  out[n] = 0;
  int st = pclose(p);
  /* the shell passes a killed child on as 128 + its signal */
  int sig = st == -1 ? 0 : WIFSIGNALED(st) ? WTERMSIG(st) : WIFEXITED(st) && WEXITSTATUS(st) > 128 ? WEXITSTATUS(st) - 128 : 0;
  if (sig) snprintf(why, why_cap, "PyTorch killed by signal %d%s", sig, sig == 9 ? ", out of memory?" : "");
  else if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st))
    snprintf(why, why_cap, "PyTorch failed (exit %d)", st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

static void usage(FILE *fp) {
  fprintf(fp,
          "Usage: real [--shapes qwen2.5-0.5b,llama3.2-1b,qwen2.5-1.5b] [--phases gemm,logits,train]\n"
          "            [--dir DIR] [--tok-dir DIR] [--threads N] [--reps R] [--train-reps R] [--chats N] [--long-rows N]\n"
          "            [--train-shapes 1x2048,8x256] [--checkpoint-activations] [--optimizer-dtype f32|bf16]\n"
          "            [--fused-optimizer] [--no-ref] [--no-train-ref] [--lock FILE]\n"
          "Random bf16 models of real shapes (made once in DIR, default /tmp/fusechat-real), real tokenizers\n"
          "(--tok-dir: qwen3/ and llama3/ folders; default tests/fixtures/tok, or FUSECHAT_REAL_TOK as\n"
          "tools/setup.sh fetches them) and generated chats. Prints per shape: load seconds, logits tokens/s on\n"
          "short chats and 2,048-token rows, train step seconds, peak RSS of each phase, PyTorch's figures on\n"
          "the same weights and batches (bench/real_ref.py), every GEMM candidate's GFLOP/s (the engine's own\n"
          "linear layer on bf16 weights in place among them) and the logits' share of the best one.\n"
          "--chats: how many short chats the logits phase runs (default 64); --long-rows: how many 2,048-token\n"
          "rows (default 2). --train-reps: timed train steps (default --reps; each after one warm-up step).\n"
          "--fused-optimizer: AdamW stepped inside backward (fc_fused_step_run).\n"
          "--checkpoint-activations also checkpoints PyTorch's layers (torch.utils.checkpoint). PyTorch's train step is\n"
          "skipped (n/a, with its estimate) when its memory estimate exceeds MemAvailable. --lock FILE: every logits\n"
          "and train phase, ours and PyTorch's, holds flock(FILE) while it runs, one at a time (on a shared machine:\n"
          "--lock /tmp/fc-bigmem.lock, and do not wrap the whole bench in flock, which would deadlock).\n");
}

int main(int argc, char **argv) {
  bench_opts_t o = {"/tmp/fusechat-real", NULL, 2, 3, 0, 1, 1, 64, 0, 2, 0, "f32", NULL};
  char shp[256] = "qwen2.5-0.5b", phases[64] = "gemm,logits,train", tshapes[64] = "8x256,1x2048";
  static const struct option opts[] = {
      {"shapes", 1, 0, 's'},  {"phases", 1, 0, 'p'},  {"dir", 1, 0, 'd'},   {"tok-dir", 1, 0, 'k'},
      {"threads", 1, 0, 'j'}, {"reps", 1, 0, 'r'},    {"no-ref", 0, 0, 'x'}, {"chats", 1, 0, 'c'},
      {"train-shapes", 1, 0, 't'}, {"checkpoint-activations", 0, 0, 'C'}, {"optimizer-dtype", 1, 0, 'O'},
      {"no-train-ref", 0, 0, 'X'}, {"long-rows", 1, 0, 'l'}, {"fused-optimizer", 0, 0, 'F'}, {"train-reps", 1, 0, 'R'}, {"lock", 1, 0, 'L'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    if (c == 's') snprintf(shp, sizeof shp, "%s", optarg);
    else if (c == 'p') snprintf(phases, sizeof phases, "%s", optarg);
    else if (c == 'd') o.dir = optarg;
    else if (c == 'k') o.tok_dir = optarg;
    else if (c == 'j') o.threads = atoi(optarg);
    else if (c == 'r') o.reps = atoi(optarg);
    else if (c == 'R') o.train_reps = atoi(optarg);
    else if (c == 'x') o.ref = 0;
    else if (c == 'X') o.train_ref = 0;
    else if (c == 'c') o.chats = atoi(optarg);
    else if (c == 'l') o.long_rows = atoi(optarg);
    else if (c == 'F') o.fused = 1;
    else if (c == 'L') o.lock = optarg;
    else if (c == 't') snprintf(tshapes, sizeof tshapes, "%s", optarg);
    else if (c == 'C') o.ckpt = 1;
    else if (c == 'O') o.opt_dtype = optarg;
    else if (c == 'h') return usage(stdout), 0;
    else return usage(stderr), 2;
  }
  if (!o.train_reps) o.train_reps = o.reps;
  /* Without the reference environment every PyTorch figure would read "failed (exit 1)". */
  if (o.ref && system("/usr/bin/python3 -c 'import torch, numpy' 2>/dev/null") != 0) {
    fprintf(stderr, "real: /usr/bin/python3 cannot import torch and numpy: PyTorch's figures are skipped "
                    "(install them with FUSECHAT_SETUP_REF=1 tools/setup.sh)\n");
    o.ref = 0;
  }
  if (o.threads <= 0 || o.reps <= 0 || o.train_reps <= 0 || o.chats <= 0 || o.long_rows <= 0) return usage(stderr), 2;
  if (!o.tok_dir) o.tok_dir = getenv("FUSECHAT_REAL_TOK") ? getenv("FUSECHAT_REAL_TOK") : FC_SOURCE_ROOT "/tests/fixtures/tok";
  extern void openblas_set_num_threads(int);
  openblas_set_num_threads(o.threads);
  fc_err_t err = {0};
  if (fc_mkdir_p(o.dir, &err)) return fprintf(stderr, "real: %s\n", err.msg), 1;
  if (make_data(&o)) return 1;
  printf("threads %d, reps %d (medians; train steps %d), tokenizers from %s, optimizer %s%s%s\n", o.threads, o.reps,
         o.train_reps, o.tok_dir,
         o.opt_dtype, o.ckpt ? ", activation checkpointing" : "", o.fused ? ", step fused into backward" : "");
  printf("ratio: fusechat's speed over PyTorch's (for seconds: PyTorch's over ours); for RSS: ours over PyTorch's\n");
  char *save = NULL;
  for (char *name = strtok_r(shp, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
    const real_shape_t *s = NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
      if (!strcmp(shapes[i].name, name)) s = &shapes[i];
    if (!s) return fprintf(stderr, "real: no shape %s\n", name), 2;
    char mdir[1024], sdir[1024];
    double t0 = fc_now();
    if (make_model(&o, s, mdir, sizeof mdir)) return 1;
    snprintf(sdir, sizeof sdir, "%s/%s", o.dir, s->name);
    fc_config_t cfg;
    shape_config(s, &cfg);
    double params = (double)fc_config_num_params(&cfg);
    printf("\n== %s: %.0fM parameters, bf16 file %.2f GB (made in %.0f s)\n", s->name, params / 1e6,
           params * 2 / 1e9, fc_now() - t0);
    static char out[8192], ref[8192];
    double best_gemm = 0;
    /* The linear layers' and the head's flops per token of a forward, over a measured rate against
     * the best candidate of the GEMM table (attention's products are left out). */
    double QD = (double)s->C, KVD = (double)s->C / s->NH * s->NKV;
    double lin = 2.0 * ((double)s->L * (s->C * QD + 2 * s->C * KVD + QD * s->C + 3.0 * s->C * s->F) +
                        (double)s->V * s->C);
    if (strstr(phases, "gemm")) {
      if (run_phase(&o, s, mdir, sdir, "gemm", 0, 0, out, sizeof out)) return fprintf(stderr, "real: gemm failed\n"), 1;
      printf("GEMM GFLOP/s (M = 2048 tokens; head M = 512):\n%-6s", "");
      for (int k = 0; k < GEMM_NCAND; k++) printf(" %17s", gemm_names[k]);
      printf("\n");
      const char *gn[] = {"qo", "gate", "down", "head"};
      for (int i = 0; i < 4; i++) {
        printf("%-6s", gn[i]);
        for (int k = 0; k < GEMM_NCAND; k++) {
          char key[64];
          snprintf(key, sizeof key, "gemm_%s_%s", gn[i], gemm_names[k]);
          char b[32];
          printf(" %17s", fig(b, sizeof b, get(out, key), 1));
          best_gemm = get(out, key) > best_gemm ? get(out, key) : best_gemm;
        }
        printf("\n");
      }
    }
    if (strstr(phases, "logits")) {
      lock_take(&o);
      int bad = run_phase(&o, s, mdir, sdir, "logits", 0, 0, out, sizeof out);
      lock_drop();
      if (bad) return fprintf(stderr, "real: logits failed\n"), 1;
      /* ours now, so a run stopped during PyTorch's phase keeps them */
      printf("fusechat logits: load %.2f s, chats %.1f tok/s, 2048-row %.1f tok/s, peak RSS %.0f MB\n",
             get(out, "load_s"), get(out, "chat_tok_s"), get(out, "long_tok_s"), get(out, "rss_mb"));
      fflush(stdout);
      ref[0] = 0;
      char why[160] = "not run (--no-ref, or no torch)";
      if (o.ref) {
        why[0] = 0;
        lock_take(&o);
        run_ref(&o, mdir, sdir, "--logits", ref, sizeof ref, why, sizeof why);
        lock_drop();
      }
      double fs = params * 2;
      printf("%-22s %12s %12s %8s\n", "logits", "fusechat", "pytorch", "ratio");
      row("load s", get(out, "load_s"), get(ref, "load_s"), 2, 1);
      row("chats tok/s", get(out, "chat_tok_s"), get(ref, "chat_tok_s"), 1, 0);
      row("2048-row tok/s", get(out, "long_tok_s"), get(ref, "long_tok_s"), 1, 0);
      row("peak RSS MB", get(out, "rss_mb"), get(ref, "rss_mb"), 0, 0);
      char rb[32];
      printf("%-22s %12.2f %12s   times the bf16 file\n", "", get(out, "rss_mb") * 1048576 / fs,
             fig(rb, sizeof rb, get(ref, "rss_mb") < 0 ? -1 : get(ref, "rss_mb") * 1048576 / fs, 2));
      if (why[0]) printf("pytorch n/a: %s\n", why);
      printf("weights %s, 16-bit GEMM under the panels: %s\n", get(out, "in_place") > 0 ? "in place" : "copied",
             fc_wgemm_name((fc_wgemm_t)get(out, "wgemm")));
      for (int k = 0; k < 2; k++) {
        double gf = lin * get(out, k ? "long_tok_s" : "chat_tok_s") / 1e9;
        printf("%-22s %12.1f GFLOP/s in the linear layers", k ? "2048-row GEMM rate" : "chats GEMM rate", gf);
        if (best_gemm > 0) printf(" = %.0f%% of the best candidate (%.1f)", 100 * gf / best_gemm, best_gemm);
        printf("\n");
      }
    }
    if (strstr(phases, "train")) {
      char ts[64], *s2 = NULL;
      snprintf(ts, sizeof ts, "%s", tshapes);
      for (char *bt = strtok_r(ts, ",", &s2); bt; bt = strtok_r(NULL, ",", &s2)) {
        int B = 0, T = 0;
        if (sscanf(bt, "%dx%d", &B, &T) != 2 || B <= 0 || T < 2) return usage(stderr), 2;
        lock_take(&o);
        int bad = run_phase(&o, s, mdir, sdir, "train", B, T, out, sizeof out);
        lock_drop();
        if (bad) return fprintf(stderr, "real: train failed\n"), 1;
        printf("fusechat train %s: step %.2f s, peak RSS %.0f MB, first loss %.4f\n", bt, get(out, "step_s"),
               get(out, "rss_mb"), get(out, "loss0"));
        fflush(stdout);
        ref[0] = 0;
        char what[80], why[160] = "not run (--no-ref, --no-train-ref, or no torch)";
        snprintf(what, sizeof what, "--train %dx%d%s", B, T, o.ckpt ? " --checkpoint" : "");
        /* PyTorch alone (under the lock): f32 weights, gradients and AdamW's two moments
         * (16 bytes per parameter), the logits, their log-softmax and both gradients
         * (4 x B*T*V floats), the kept activations (every layer's, or only each layer's input
         * when checkpointed, plus one layer's attention scores and probabilities). */
        double BT = (double)B * T, att = 3.0 * B * s->NH * (double)T * T * 4;
        double need = 16 * params + 4 * BT * s->V * 4 +
                      (o.ckpt ? s->L * BT * s->C * 4 + att : s->L * (att + BT * (8.0 * s->C + 4.0 * s->F) * 4));
        if (o.ref && o.train_ref) {
          why[0] = 0;
          lock_take(&o);
          double avail = mem_available();
          if (avail > 0 && need > avail)
            snprintf(why, sizeof why, "PyTorch would need ~%.1f GB (f32 AdamW: %.1f GB, logits %.1f GB), %.1f GB available",
                     need / 1e9, 16 * params / 1e9, 4 * BT * s->V * 4 / 1e9, avail / 1e9);
          else run_ref(&o, mdir, sdir, what, ref, sizeof ref, why, sizeof why);
          lock_drop();
        }
        printf("train %-16s %12s %12s %8s\n", bt, "fusechat", "pytorch", "ratio");
        row("step s", get(out, "step_s"), get(ref, "step_s"), 2, 1);
        row("peak RSS MB", get(out, "rss_mb"), get(ref, "rss_mb"), 0, 0);
        char b1[32], b2[32];
        printf("%-22s %12.1f %12s\n", "bytes per parameter", get(out, "rss_mb") * 1048576 / params,
               fig(b2, sizeof b2, get(ref, "rss_mb") < 0 ? -1 : get(ref, "rss_mb") * 1048576 / params, 1));
        printf("%-22s %12.4f %12s\n", "first loss", get(out, "loss0"), fig(b1, sizeof b1, get(ref, "loss0"), 4));
        /* a step's GEMM flops: the forward's and backward's twice that (recomputation not counted) */
        double tg = 3 * lin * BT / 1e9;
        double gs = get(out, "step_s"), gr = get(ref, "step_s");
        printf("%-22s %12.1f %12s GFLOP/s in the linear layers", "GEMM rate", tg / gs,
               fig(b1, sizeof b1, gr > 0 ? tg / gr : -1, 1));
        if (best_gemm > 0) printf(" = %.0f%% of the best candidate (%.1f)", 100 * tg / gs / best_gemm, best_gemm);
        printf("\n");
        if (why[0]) printf("pytorch n/a: %s\n", why);
      }
    }
    fflush(stdout);
  }
  return 0;
}
