/* The alignment-side stages (logits, or logits imported, vocabulary counts and maps, align, fuse) as library calls
 * shared by fusectl and the stage daemons; see fc_stage.h for the contract. */
#include "fc_stage.h"

#include <assert.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fc_config.h"
#include "fc_import.h"
#include "fc_model.h"
#include "fc_topk.h"

#define DEFAULT_MAX_LEN 4096u
/* A model's own tokens of a row are capped at this many times max_len: a source tokenizer may
 * need more tokens than the pivot's for the same text, and cutting it would make its store cover
 * less text than the pivot's (which align then refuses by the text hash). */
#define OWN_LEN_FACTOR 4u

static int report(fc_progress_fn progress, void *pctx, double frac, const char *msg, fc_err_t *err) {
  if (progress && progress(pctx, frac, msg)) return fc_err_set(err, FC_ECANCEL, "cancelled (%s)", msg);
  return 0;
}

uint32_t fc_stage_text_hash(const char *text, size_t len) {
  uint64_t h = fc_hash64(text, len, 0x66757365u);
  return (uint32_t)(h ^ (h >> 32));
}

static uint32_t max_len_of(const fc_stage_data_t *d) { return d->max_len ? d->max_len : DEFAULT_MAX_LEN; }

void fc_stage_texts_free(fc_stage_text_t *t, size_t n) {
  for (size_t i = 0; t && i < n; i++) {
    free(t[i].text);
    free(t[i].spans);
  }
  free(t);
}

/* One JSONL row into text (+ spans): {"text": ...} or a conversation. */
static int render_row(const char *line, size_t len, fc_chat_template_t tmpl, fc_stage_text_t *t,
                      fc_err_t *err) {
  json_error_t je;
  json_t *root = json_loadb(line, len, 0, &je);
  if (!root) return fc_err_set(err, FC_EFORMAT, "not JSON: %s", je.text);
  json_t *txt = json_is_object(root) ? json_object_get(root, "text") : NULL;
  int has_conv = json_is_object(root) &&
                 (json_object_get(root, "conversations") || json_object_get(root, "messages"));
  int rc = 0;
  if (txt && !has_conv) {
    if (!json_is_string(txt)) {
      rc = fc_err_set(err, FC_EFORMAT, "\"text\" is not a string");
    } else {
      t->len = json_string_length(txt);
      t->text = fc_xmalloc(t->len + 1);
      memcpy(t->text, json_string_value(txt), t->len);
      t->text[t->len] = 0;
      t->all_loss = 1;
    }
    json_decref(root);
    return rc;
  }
  json_decref(root);
  fc_chat_conv_t conv = {0};
  rc = fc_chat_parse_sharegpt(line, len, &conv, err);
  if (!rc) rc = fc_chat_render(tmpl, conv.msgs, conv.n, &t->text, &t->len, &t->spans, &t->nspans, err);
  fc_chat_conv_free(&conv);
  return rc;
}

/* Conversations are encoded as rendered (the template writes bos itself); {"text"} rows with the
 * tokenizer's bos/eos added, as training (fc_train_src) encodes both, so a fused store lines up
 * with the trainer's tokens. */
static unsigned tok_flags(const fc_stage_text_t *t) {
  return FC_TOK_PARSE_SPECIAL | (t->all_loss ? FC_TOK_ADD_SPECIAL : 0u);
}

/* Cuts t at the start of pivot token max_len. */
static int cut_row(const fc_tok_t *ptok, uint32_t max_len, fc_stage_text_t *t, fc_err_t *err) {
  int32_t *ids = NULL;
  uint32_t *off = NULL;
  size_t n = 0;
  int rc = fc_tok_encode(ptok, t->text, t->len, tok_flags(t), &ids, &off, &n, err);
  if (!rc && n > max_len) {
    size_t cut = off[max_len];
    t->len = cut;
    t->text[cut] = 0;
    t->cut = 1;
    size_t k = 0;
    for (size_t s = 0; s < t->nspans; s++) {
      if (t->spans[s].start >= cut) continue;
      t->spans[k] = t->spans[s];
      if (t->spans[k].end > cut) t->spans[k].end = cut;
      k++;
    }
    t->nspans = k;
  }
  free(ids);
  free(off);
  return rc;
}

static int texts_load(const fc_stage_data_t *d, const fc_tok_t *ptok, fc_stage_text_t **out,
                      size_t *nout, fc_err_t *err) {
  assert(d->n_shards == 0 || d->shard < d->n_shards);
  char *buf = NULL;
  size_t blen = 0;
  int rc = fc_read_file(d->path, &buf, &blen, err);
  if (rc) return rc;
  /* the rows: non-blank lines */
  size_t nrows = 0, cap = 64;
  size_t *rs = fc_xmalloc(cap * sizeof *rs), *re = fc_xmalloc(cap * sizeof *re), *rl = fc_xmalloc(cap * sizeof *rl);
  size_t lineno = 0;
  for (size_t p = 0; p < blen;) {
    size_t e = p;
    while (e < blen && buf[e] != '\n') e++;
    lineno++;
    size_t q = p;
    while (q < e && (buf[q] == ' ' || buf[q] == '\t' || buf[q] == '\r')) q++;
    if (q < e) {
      if (nrows == cap) {
        cap *= 2;
        rs = fc_xrealloc(rs, cap * sizeof *rs);
        re = fc_xrealloc(re, cap * sizeof *re);
        rl = fc_xrealloc(rl, cap * sizeof *rl);
      }
      rs[nrows] = p;
      re[nrows] = e;
      rl[nrows] = lineno;
      nrows++;
    }
    p = e + 1;
  }
  uint32_t ns = d->n_shards ? d->n_shards : 1;
  size_t a = (size_t)((uint64_t)nrows * d->shard / ns), b = (size_t)((uint64_t)nrows * (d->shard + 1) / ns);
  fc_chat_template_t tmpl = d->tmpl == FC_CHAT_AUTO ? fc_chat_template_for(ptok) : d->tmpl;
  fc_stage_text_t *t = fc_xcalloc(b - a + 1, sizeof *t);
  for (size_t r = a; r < b && !rc; r++) {
    fc_stage_text_t *x = &t[r - a];
    rc = render_row(buf + rs[r], re[r] - rs[r], tmpl, x, err);
    if (!rc) rc = cut_row(ptok, max_len_of(d), x, err);
    if (rc) fc_err_wrap(err, "%s line %lu", d->path, (unsigned long)rl[r]);
  }
  free(buf);
  free(rs);
  free(re);
  free(rl);
  if (rc) {
    fc_stage_texts_free(t, b - a);
    return rc;
  }
  *out = t;
  *nout = b - a;
  return 0;
}

int fc_stage_texts_load(const fc_stage_data_t *d, fc_stage_text_t **out, size_t *n, fc_err_t *err) {
  fc_tok_t *ptok = NULL;
  int rc = fc_tok_load(&ptok, d->pivot_tok, err);
  if (rc) return fc_err_wrap(err, "pivot tokenizer");
  rc = texts_load(d, ptok, out, n, err);
  fc_tok_destroy(&ptok);
  return rc;
}

/* A row tokenized by one model's tokenizer, capped at OWN_LEN_FACTOR * max_len tokens, with the
 * loss mask and the tag of the text covered. */
typedef struct own_tokens {
  int32_t *ids;
  uint32_t *off;
  uint8_t *mask;
  size_t n;
  uint32_t tag;
  int cut;
} own_tokens_t;

static void own_free(own_tokens_t *o) {
  free(o->ids);
  free(o->off);
  free(o->mask);
  memset(o, 0, sizeof *o);
}

static int own_tokenize(const fc_tok_t *tok, const fc_stage_text_t *t, uint32_t max_len, own_tokens_t *o,
                        fc_err_t *err) {
  memset(o, 0, sizeof *o);
  int rc = fc_tok_encode(tok, t->text, t->len, tok_flags(t), &o->ids, &o->off, &o->n, err);
  if (rc) return rc;
  size_t cap = (size_t)max_len * OWN_LEN_FACTOR, cover = t->len;
  if (o->n > cap) {
    cover = o->off[cap] < t->len ? o->off[cap] : t->len;
    o->n = cap;
    o->cut = 1;
  }
  o->mask = fc_xmalloc(o->n + 1);
  if (t->all_loss)
    memset(o->mask, 1, o->n);
  else
    fc_chat_mask_tokens(t->spans, t->nspans, o->off, o->n, o->mask);
  o->tag = fc_stage_text_hash(t->text, cover);
  return 0;
}

/* ---- logits ---------------------------------------------------------------------------------- */

int fc_stage_logits(const fc_stage_logits_opts_t *o, fc_stage_logits_stats_t *st,
                    fc_progress_fn progress, void *pctx, fc_err_t *err) {
  fc_stage_logits_stats_t s = {0};
  double t0 = fc_now();
  /* the defaults are the logits stage's table (runtime/fc_schema.c); callers pass them */
  assert(o->top_k >= 1 && o->top_k <= FC_TOPK_MAX_K && o->batch_size >= 1);
  uint32_t K = o->top_k;
  int B = o->batch_size;
  uint32_t max_len = max_len_of(&o->data);
  fc_model_t *m = NULL;
  fc_tok_t *tok = NULL, *ptok = NULL;
  fc_stage_text_t *texts = NULL;
  size_t nt = 0;
  int rc = fc_model_load_mapped(&m, o->model_dir, err);
  if (rc) return fc_err_wrap(err, "model %s", o->model_dir);
  rc = fc_tok_load(&tok, o->model_dir, err);
  if (rc) fc_err_wrap(err, "tokenizer of %s", o->model_dir);
  if (!rc && o->data.pivot_tok) {
    rc = fc_tok_load(&ptok, o->data.pivot_tok, err);
    if (rc) fc_err_wrap(err, "pivot tokenizer");
  }
  if (!rc) rc = texts_load(&o->data, ptok ? ptok : tok, &texts, &nt, err);
  if (rc) {
    fc_tok_destroy(&ptok);
    fc_tok_destroy(&tok);
    fc_model_destroy(&m);
    return rc;
  }
  if (o->threads > 0) fc_model_set_threads(m, o->threads);
  int V = fc_model_config(m)->vocab_size;
  if (K > (uint32_t)V) K = (uint32_t)V;
  uint32_t tv = (uint32_t)fc_tok_vocab_size(tok);
  fc_topk_info_t info = {.model_id = o->model_dir, .tok_hash = fc_tok_hash(tok), .k = K,
                         .vocab = tv > (uint32_t)V ? tv : (uint32_t)V};
  fc_topk_writer_t *w = NULL;
  rc = fc_topk_writer_new(&w, o->out_path, &info, err);
  own_tokens_t *own = fc_xcalloc((size_t)B, sizeof *own);
  int32_t *ids = NULL, *tgt = NULL, *top = NULL;
  float *lp = NULL, *tlp = NULL;
  size_t cap_bt = 0;
  fc_topk_ex_t ex = {0};
  for (size_t x0 = 0; x0 < nt && !rc; x0 += (size_t)B) {
    char msg[96];
    snprintf(msg, sizeof msg, "logits %lu/%lu examples", (unsigned long)x0, (unsigned long)nt);
    rc = report(progress, pctx, (double)x0 / (double)nt, msg, err);
    int nb = (int)(nt - x0 < (size_t)B ? nt - x0 : (size_t)B);
    size_t T = 0;
    for (int b = 0; b < nb && !rc; b++) {
      rc = own_tokenize(tok, &texts[x0 + b], max_len, &own[b], err);
      if (rc) {
        fc_err_wrap(err, "example %lu", (unsigned long)(x0 + b));
        break;
      }
      for (size_t i = 0; i < own[b].n; i++)
        if (own[b].ids[i] < 0 || own[b].ids[i] >= V) {
          rc = fc_err_set(err, FC_EMISMATCH, "example %lu: token id %d is outside the model's vocabulary (%d)",
                          (unsigned long)(x0 + b), own[b].ids[i], V);
          break;
        }
      if (own[b].n > T) T = own[b].n;
    }
    if (!rc && T > 0) {
      if ((size_t)nb * T > cap_bt) {
        cap_bt = (size_t)nb * T;
        ids = fc_xrealloc(ids, cap_bt * sizeof *ids);
        tgt = fc_xrealloc(tgt, cap_bt * sizeof *tgt);
        tlp = fc_xrealloc(tlp, cap_bt * sizeof *tlp);
        top = fc_xrealloc(top, cap_bt * K * sizeof *top);
        lp = fc_xrealloc(lp, cap_bt * K * sizeof *lp);
      }
      for (int b = 0; b < nb; b++)
        for (size_t t = 0; t < T; t++) {
          ids[(size_t)b * T + t] = t < own[b].n ? own[b].ids[t] : 0;
          tgt[(size_t)b * T + t] = t + 1 < own[b].n ? own[b].ids[t + 1] : -1;
        }
      rc = fc_model_forward_topk(m, ids, nb, (int)T, (int)K, tgt, top, lp, tlp, err);
    }
    for (int b = 0; b < nb && !rc; b++) {
      own_tokens_t *ob = &own[b];
      uint32_t n = (uint32_t)ob->n;
      fc_topk_ex_reserve(&ex, n, K);
      ex.n = n;
      double ce = 0;
      uint64_t nresp = 0;
      for (uint32_t i = 0; i < n; i++) {
        ex.ids[i] = (uint32_t)ob->ids[i];
        ex.mask[i] = ob->mask[i];
        const int32_t *ti = top + ((size_t)b * T + i) * K;
        const float *tl = lp + ((size_t)b * T + i) * K;
        for (uint32_t k = 0; k < K; k++) {
          ex.top_ids[(size_t)i * K + k] = (uint32_t)ti[k];
          ex.top_lp[(size_t)i * K + k] = tl[k];
        }
        if (i + 1 < n && ob->mask[i + 1]) {
          ce -= tlp[(size_t)b * T + i];
          nresp++;
        }
      }
      ex.mean_ce = nresp ? (float)(ce / (double)nresp) : NAN;
      ex.tag = ob->tag;
      rc = fc_topk_writer_add(w, &ex, err);
      s.examples++;
      s.tokens += n;
      for (uint32_t i = 0; i < n; i++) s.response_tokens += ob->mask[i];
      s.cut += texts[x0 + b].cut;
      s.cut_own += ob->cut;
    }
    for (int b = 0; b < nb; b++) own_free(&own[b]);
  }
  if (!rc) rc = report(progress, pctx, 1.0, "logits done", err);
  if (!rc) rc = fc_topk_writer_finish(w, err);
  fc_topk_writer_destroy(&w);
  fc_topk_ex_free(&ex);
  free(own);
  free(ids);
  free(tgt);
  free(tlp);
  free(top);
  free(lp);
  fc_stage_texts_free(texts, nt);
  fc_tok_destroy(&ptok);
  fc_tok_destroy(&tok);
  fc_model_destroy(&m);
  s.seconds = fc_now() - t0;
  if (st) *st = s;
  return rc;
}

/* ---- vocabulary ------------------------------------------------------------------------------ */

static int tok_text_fn(void *ctx, uint32_t id, char *buf, size_t cap) {
  const fc_tok_t *tok = ctx;
  if ((int32_t)id >= fc_tok_vocab_size(tok)) return 0;
  size_t n = fc_tok_token_text(tok, (int32_t)id, buf, cap);
  return n > (size_t)INT32_MAX ? FC_EINVAL : (int)n;
}

/* The vocabulary size of a model: its tokenizer's, or config.json's vocab_size when the path is
 * a model directory and that is larger (padded embedding rows). */
static uint32_t vocab_n(const fc_tok_t *tok, const char *path) {
  uint32_t n = (uint32_t)fc_tok_vocab_size(tok);
  struct stat sb;
  if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
    char *cp = fc_path_join(path, "config.json");
    fc_config_t c;
    fc_err_t e = {0};
    if (fc_path_exists(cp) && fc_config_load(&c, cp, &e) == 0 && (uint32_t)c.vocab_size > n)
      n = (uint32_t)c.vocab_size;
    free(cp);
  }
  return n;
}

static int vocab_from_tok(fc_vocab_t *out, const fc_tok_t *tok, const char *path, fc_err_t *err) {
  return fc_vocab_from_fn(out, vocab_n(tok, path), tok_text_fn, (void *)tok, err);
}

int fc_stage_vocab_load(fc_vocab_t *out, const char *tok_path, uint32_t min_n, fc_err_t *err) {
  fc_tok_t *tok = NULL;
  int rc = fc_tok_load(&tok, tok_path, err);
  if (rc) return rc;
  uint32_t n = vocab_n(tok, tok_path);
  if (min_n > n) n = min_n;
  rc = fc_vocab_from_fn(out, n, tok_text_fn, tok, err);
  fc_tok_destroy(&tok);
  return rc;
}

/* Token texts of a sequence concatenated, as the store loops in fc_fuse.c build them. */
static void seq_of(const fc_vocab_t *v, const int32_t *ids, size_t n, char **bytes, uint32_t **start,
                   fc_align_seq_t *s) {
  size_t len = 0;
  for (size_t i = 0; i < n; i++) len += v->start[ids[i] + 1] - v->start[ids[i]];
  *bytes = fc_xrealloc(*bytes, len + 1);
  *start = fc_xrealloc(*start, (n + 1) * 4);
  uint32_t pos = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t a = v->start[ids[i]], l = v->start[ids[i] + 1] - a;
    (*start)[i] = pos;
    memcpy(*bytes + pos, v->bytes + a, l);
    pos += l;
  }
  (*start)[n] = pos;
  *s = (fc_align_seq_t){(uint32_t)n, *bytes, *start, NULL};
}

static int count_from_data(const fc_stage_count_opts_t *o, const fc_tok_t *stok, const fc_tok_t *ptok,
                           const fc_vocab_t *sv, const fc_vocab_t *pv, fc_vcount_t *c,
                           fc_progress_fn progress, void *pctx, fc_err_t *err) {
  fc_stage_data_t d = o->data;
  fc_stage_text_t *texts = NULL;
  size_t nt = 0;
  int rc = texts_load(&d, ptok, &texts, &nt, err);
  if (rc) return rc;
  uint32_t max_len = max_len_of(&d);
  fc_aligner_t *al = fc_aligner_new(o->margin > 0 ? o->margin : FC_ALIGN_DEFAULT_MARGIN);
  fc_align_result_t res = {0};
  char *bs = NULL, *bp = NULL;
  uint32_t *ss = NULL, *sp = NULL;
  uint32_t *us = NULL, *up = NULL;
  for (size_t x = 0; x < nt && !rc; x++) {
    char msg[96];
    snprintf(msg, sizeof msg, "counting %lu/%lu examples", (unsigned long)x, (unsigned long)nt);
    rc = report(progress, pctx, (double)x / (double)nt, msg, err);
    own_tokens_t a, b;
    if (!rc) rc = own_tokenize(stok, &texts[x], max_len, &a, err);
    if (rc) break;
    rc = own_tokenize(ptok, &texts[x], max_len, &b, err);
    if (rc) {
      own_free(&a);
      break;
    }
    if (a.n && b.n) {
      fc_align_seq_t s, p;
      seq_of(sv, a.ids, a.n, &bs, &ss, &s);
      seq_of(pv, b.ids, b.n, &bp, &sp, &p);
      rc = fc_align_mined(al, &s, &p, &res, err);
      us = fc_xrealloc(us, a.n * 4);
      up = fc_xrealloc(up, b.n * 4);
      for (size_t i = 0; i < a.n; i++) us[i] = (uint32_t)a.ids[i];
      for (size_t i = 0; i < b.n; i++) up[i] = (uint32_t)b.ids[i];
      if (!rc) rc = fc_vcount_add_path(c, us, up, &res, err);
      if (rc) fc_err_wrap(err, "example %lu", (unsigned long)x);
    }
    own_free(&a);
    own_free(&b);
  }
  free(bs);
  free(bp);
  free(ss);
  free(sp);
  free(us);
  free(up);
  fc_align_result_free(&res);
  fc_aligner_destroy(&al);
  fc_stage_texts_free(texts, nt);
  return rc;
}

/* The source and pivot tokenizers with their vocabularies, as the vocabulary stages use them.
 * tok_pair_free releases whatever tok_pair_load got to, failed or not. */
typedef struct {
  fc_tok_t *stok, *ptok;
  fc_vocab_t sv, pv;
} tok_pair_t;

static int tok_pair_load(tok_pair_t *p, const char *src_tok, const char *piv_tok, fc_err_t *err) {
  memset(p, 0, sizeof *p);
  if (fc_tok_load(&p->stok, src_tok, err)) return fc_err_wrap(err, "source tokenizer");
  if (fc_tok_load(&p->ptok, piv_tok, err)) return fc_err_wrap(err, "pivot tokenizer");
  int rc = vocab_from_tok(&p->sv, p->stok, src_tok, err);
  if (!rc) rc = vocab_from_tok(&p->pv, p->ptok, piv_tok, err);
  return rc;
}

static void tok_pair_free(tok_pair_t *p) {
  fc_vocab_free(&p->sv);
  fc_vocab_free(&p->pv);
  fc_tok_destroy(&p->stok);
  fc_tok_destroy(&p->ptok);
}

int fc_stage_vocab_count(const fc_stage_count_opts_t *o, fc_progress_fn progress, void *pctx,
                         fc_err_t *err) {
  tok_pair_t tp;
  int rc = tok_pair_load(&tp, o->src_tok, o->piv_tok, err);
  fc_tok_t *stok = tp.stok, *ptok = tp.ptok;
  const fc_vocab_t *sv = &tp.sv, *pv = &tp.pv;
  fc_vcount_t *c = NULL;
  if (!rc) {
    c = fc_vcount_new(sv->n, pv->n, fc_vocab_hash(sv), fc_vocab_hash(pv));
    if (o->src_topk || o->piv_topk) {
      assert(o->src_topk && o->piv_topk);
      rc = fc_fuse_count_stores(c, o->src_topk, o->piv_topk, sv, pv,
                                o->margin > 0 ? o->margin : FC_ALIGN_DEFAULT_MARGIN, progress, pctx, err);
    } else {
      rc = count_from_data(o, stok, ptok, sv, pv, c, progress, pctx, err);
    }
  }
  if (!rc) rc = fc_vcount_save(c, o->out_path, err);
  fc_vcount_destroy(&c);
  tok_pair_free(&tp);
  return rc;
}

int fc_stage_vocab_merge(const char *const *paths, int n, const char *out_path, fc_err_t *err) {
  fc_vcount_t *c = NULL;
  int rc = fc_vcount_merge_files(&c, paths, n, err);
  if (rc) return rc;
  rc = fc_vcount_save(c, out_path, err);
  fc_vcount_destroy(&c);
  return rc;
}

int fc_stage_vocab_map(const char *counts_path, const char *src_tok, const char *piv_tok,
                       fc_vmap_method_t method, int threads, const char *out_path, fc_err_t *err) {
  tok_pair_t tp;
  fc_vcount_t *c = NULL;
  fc_vmap_t *m = NULL;
  int rc = tok_pair_load(&tp, src_tok, piv_tok, err);
  if (!rc && method == FC_VMAP_STATS) {
    if (!counts_path)
      rc = fc_err_set(err, FC_EINVAL, "the stats map needs counts");
    else
      rc = fc_vcount_load(&c, counts_path, err);
  }
  if (!rc) rc = fc_vmap_build(&m, method, c, &tp.sv, &tp.pv, threads > 0 ? threads : 1, err);
  if (!rc) {
    int32_t sb = fc_tok_bos(tp.stok), pb = fc_tok_bos(tp.ptok), se = fc_tok_eos(tp.stok), pe = fc_tok_eos(tp.ptok);
    if (sb >= 0 && pb >= 0) fc_vmap_set(m, (uint32_t)sb, (uint32_t)pb);
    if (se >= 0 && pe >= 0) fc_vmap_set(m, (uint32_t)se, (uint32_t)pe);
    rc = fc_vmap_save(m, out_path, err);
  }
  fc_vmap_destroy(&m);
  fc_vcount_destroy(&c);
  tok_pair_free(&tp);
  return rc;
}

/* ---- align and fuse -------------------------------------------------------------------------- */

int fc_stage_align(const char *src_topk, const char *piv_topk, const char *src_tok,
                   const char *piv_tok, const char *map_path, const char *out_path, int margin,
                   fc_xfer_stats_t *st, fc_progress_fn progress, void *pctx, fc_err_t *err) {
  fc_vocab_t sv = {0}, pv = {0};
  fc_vmap_t *m = NULL;
  int rc = fc_stage_vocab_load(&sv, src_tok, 0, err);
  if (rc) return fc_err_wrap(err, "source tokenizer");
  rc = fc_stage_vocab_load(&pv, piv_tok, 0, err);
  if (rc) fc_err_wrap(err, "pivot tokenizer");
  if (!rc) rc = fc_vmap_load(&m, map_path, err);
  if (!rc && (m->src_vocab != sv.n || m->piv_vocab != pv.n || m->src_hash != fc_vocab_hash(&sv) ||
              m->piv_hash != fc_vocab_hash(&pv)))
    rc = fc_err_set(err, FC_EMISMATCH, "%s was made for other tokenizers (vocabularies %u -> %u, these are %u -> %u)",
                    map_path, m->src_vocab, m->piv_vocab, sv.n, pv.n);
  fc_xfer_stats_t s = {0};
  if (!rc)
    rc = fc_fuse_align_store(src_topk, piv_topk, &sv, &pv, m, out_path,
                             margin > 0 ? margin : FC_ALIGN_DEFAULT_MARGIN, &s, progress, pctx, err);
  if (st) *st = s;
  fc_vmap_destroy(&m);
  fc_vocab_free(&sv);
  fc_vocab_free(&pv);
  return rc;
}

int fc_stage_fuse(fc_fuse_method_t method, const char *piv_topk, const char *const *aligned,
                  int n, const char *out_path, fc_fuse_summary_t *sum, fc_progress_fn progress,
                  void *pctx, fc_err_t *err) {
  return fc_fuse_stores(method, piv_topk, aligned, n, out_path, 1e-6f, sum, progress, pctx, err);
}

int fc_stage_check_store(const char *topk_path, const char *tok_path, const fc_stage_data_t *d,
                         fc_err_t *err) {
  fc_topk_reader_t *r = NULL;
  fc_tok_t *tok = NULL, *ptok = NULL;
  fc_stage_text_t *texts = NULL;
  size_t nt = 0;
  int rc = fc_topk_open(&r, topk_path, err);
  if (rc) return rc;
  rc = fc_tok_load(&tok, tok_path, err);
  if (!rc && d->pivot_tok) rc = fc_tok_load(&ptok, d->pivot_tok, err);
  if (!rc) rc = texts_load(d, ptok ? ptok : tok, &texts, &nt, err);
  if (!rc && fc_topk_count(r) != nt)
    rc = fc_err_set(err, FC_EMISMATCH, "%s has %lu examples, the data shard has %lu", topk_path,
                    (unsigned long)fc_topk_count(r), (unsigned long)nt);
  if (!rc && fc_topk_tok_hash(r) != fc_tok_hash(tok))
    rc = fc_err_set(err, FC_EMISMATCH, "%s was not made with the tokenizer %s", topk_path, tok_path);
  fc_topk_ex_t ex = {0};
  for (size_t x = 0; x < nt && !rc; x++) {
    own_tokens_t o;
    rc = own_tokenize(tok, &texts[x], max_len_of(d), &o, err);
    if (rc) break;
    rc = fc_topk_get(r, x, &ex, err);
    if (!rc && (ex.n != o.n || ex.tag != o.tag))
      rc = fc_err_set(err, FC_EMISMATCH, "%s example %lu does not hold the data's text (%u tokens, hash %08x; "
                      "the data gives %lu tokens, hash %08x)", topk_path, (unsigned long)x, ex.n,
                      (unsigned)ex.tag, (unsigned long)o.n, (unsigned)o.tag);
    own_free(&o);
  }
  fc_topk_ex_free(&ex);
  fc_stage_texts_free(texts, nt);
  fc_tok_destroy(&ptok);
  fc_tok_destroy(&tok);
  fc_topk_close(&r);
  return rc;
}

/* ---- logits made elsewhere ------------------------------------------------------------------- */

/* One imported example checked against our tokenization of its row and turned into a store
 * example (entries by descending log-prob, absent ones last as id 0, -inf). */
static int import_example(const fc_import_ex_t *im, const own_tokens_t *o, uint32_t K, uint32_t vocab,
                          const char *path, unsigned long x, fc_topk_ex_t *ex, fc_err_t *err) {
  if (im->n != o->n)
    return fc_err_set(err, FC_EMISMATCH, "%s example %lu has %u tokens, the fusion set's text tokenized by the "
                      "source's tokenizer has %zu: the texts differ", path, x, im->n, o->n);
  for (uint32_t i = 0; i < im->n; i++)
    if (im->ids[i] != o->ids[i])
      return fc_err_set(err, FC_EMISMATCH, "%s example %lu token %u is id %d, the fusion set's text gives %d: the "
                        "texts (or tokenizers) differ", path, x, i, im->ids[i], o->ids[i]);
  fc_topk_ex_reserve(ex, im->n, K);
  ex->n = im->n;
  double ce = 0;
  uint64_t nresp = 0;
  for (uint32_t i = 0; i < im->n; i++) {
    ex->ids[i] = (uint32_t)o->ids[i];
    ex->mask[i] = o->mask[i];
    uint32_t *ti = ex->top_ids + (size_t)i * K;
    float *tl = ex->top_lp + (size_t)i * K;
    for (uint32_t k = 0; k < K; k++) {
      int32_t id = im->top_ids[(size_t)i * K + k];
      if (id >= (int32_t)vocab)
        return fc_err_set(err, FC_EMISMATCH, "%s example %lu position %u: top-K id %d is outside the vocabulary (%u)",
                          path, x, i, id, vocab);
      float lp = id < 0 ? -INFINITY : fminf(im->top_lp[(size_t)i * K + k], 0.0f);
      uint32_t j = k; /* insertion by descending log-prob */
      while (j > 0 && tl[j - 1] < lp) ti[j] = ti[j - 1], tl[j] = tl[j - 1], j--;
      ti[j] = id < 0 ? 0 : (uint32_t)id, tl[j] = lp;
    }
    if (im->target_lp && i + 1 < im->n && o->mask[i + 1]) ce -= im->target_lp[i], nresp++;
  }
  ex->mean_ce = im->target_lp && nresp ? (float)(ce / (double)nresp) : NAN;
  ex->tag = o->tag;
  return 0;
}

int fc_stage_logits_import(const fc_stage_import_opts_t *o, fc_stage_logits_stats_t *st, fc_err_t *err) {
  fc_stage_logits_stats_t s = {0};
  double t0 = fc_now();
  fc_tok_t *tok = NULL, *ptok = NULL;
  fc_stage_text_t *texts = NULL;
  size_t nt = 0;
  fc_import_t *im = NULL;
  fc_topk_writer_t *w = NULL;
  fc_topk_ex_t ex = {0};
  int rc = fc_tok_load(&tok, o->tok_path, err);
  if (rc) fc_err_wrap(err, "tokenizer of %s", o->tok_path);
  if (!rc && o->data.pivot_tok && (rc = fc_tok_load(&ptok, o->data.pivot_tok, err))) fc_err_wrap(err, "pivot tokenizer");
  if (!rc) rc = texts_load(&o->data, ptok ? ptok : tok, &texts, &nt, err);
  if (!rc) rc = fc_import_open(&im, o->in_path, err);
  uint32_t K = im ? fc_import_k(im) : 0, vocab = tok ? vocab_n(tok, o->tok_path) : 0;
  if (!rc) {
    fc_topk_info_t info = {.model_id = o->model_id ? o->model_id : o->in_path, .tok_hash = fc_tok_hash(tok), .k = K,
                           .vocab = vocab};
    rc = fc_topk_writer_new(&w, o->out_path, &info, err);
  }
  for (size_t x = 0; x < nt && !rc; x++) {
    own_tokens_t ot;
    fc_import_ex_t ie;
    if ((rc = own_tokenize(tok, &texts[x], max_len_of(&o->data), &ot, err))) break;
    int got = fc_import_next(im, &ie, err);
    if (got == 0)
      rc = fc_err_set(err, FC_EMISMATCH, "%s has %lu examples, the fusion set shard has %lu", o->in_path,
                      (unsigned long)x, (unsigned long)nt);
    else if (got < 0)
      rc = got;
    if (!rc) rc = import_example(&ie, &ot, K, vocab, o->in_path, (unsigned long)x, &ex, err);
    if (!rc) rc = fc_topk_writer_add(w, &ex, err);
    if (!rc) {
      s.examples++, s.tokens += ot.n, s.cut += texts[x].cut, s.cut_own += ot.cut;
      for (size_t i = 0; i < ot.n; i++) s.response_tokens += ot.mask[i];
    }
    own_free(&ot);
  }
  if (!rc) {
    fc_import_ex_t ie;
    int more = fc_import_next(im, &ie, err);
    if (more > 0)
      rc = fc_err_set(err, FC_EMISMATCH, "%s has more examples than the fusion set shard (%lu)", o->in_path,
                      (unsigned long)nt);
    else if (more < 0)
      rc = more;
  }
  if (!rc) rc = fc_topk_writer_finish(w, err);
  fc_topk_writer_destroy(&w);
  fc_topk_ex_free(&ex);
  fc_import_close(&im);
  fc_stage_texts_free(texts, nt);
  fc_tok_destroy(&ptok);
  fc_tok_destroy(&tok);
  s.seconds = fc_now() - t0;
  if (st) *st = s;
  return rc;
}
