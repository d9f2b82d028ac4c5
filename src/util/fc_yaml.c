/* A read-only YAML tree built from libyaml's document (see fc_yaml.h). The tree owns copies of
 * every string, so libyaml's document is dropped once the tree is built. */
#include "fc_yaml.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "fc_num.h"

/* Aliases are expanded into copies: these caps keep a "billion laughs" file from doing harm. */
enum { MAX_NODES = 1000000, MAX_DEPTH = 64 };

struct fc_yaml_doc {
  char *src;
  fc_yaml_node_t *root;
  size_t nodes;
  /* every allocation of the tree, freed together */
  void **blocks;
  size_t nblocks, cap;
};

static void *own(fc_yaml_doc_t *d, void *p) {
  if (d->nblocks == d->cap) d->blocks = fc_xrealloc(d->blocks, (d->cap = d->cap ? 2 * d->cap : 64) * sizeof *d->blocks);
  return d->blocks[d->nblocks++] = p;
}

static int build(fc_yaml_doc_t *d, yaml_document_t *yd, yaml_node_t *yn, int depth, fc_yaml_node_t **out,
                 fc_err_t *err) {
  if (depth > MAX_DEPTH || ++d->nodes > MAX_NODES)
    return fc_err_set(err, FC_EINVAL, "%s:%zu:%zu: the document nests too deep or expands to too many nodes", d->src,
                      yn->start_mark.line + 1, yn->start_mark.column + 1);
  fc_yaml_node_t *n = own(d, fc_xcalloc(1, sizeof *n));
  n->line = yn->start_mark.line + 1, n->col = yn->start_mark.column + 1, n->src = d->src;
  *out = n;
  if (yn->type == YAML_SCALAR_NODE) {
    n->kind = FC_YAML_SCALAR;
    char *s = own(d, fc_xmalloc(yn->data.scalar.length + 1));
    memcpy(s, yn->data.scalar.value, yn->data.scalar.length);
    s[yn->data.scalar.length] = 0;
    n->str = s;
    n->quoted = yn->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                yn->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
    return 0;
  }
  if (yn->type == YAML_SEQUENCE_NODE) {
    n->kind = FC_YAML_LIST;
    n->n = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
    n->item = own(d, fc_xcalloc(n->n + 1, sizeof *n->item));
    for (size_t i = 0; i < n->n; i++) {
      int rc = build(d, yd, yaml_document_get_node(yd, yn->data.sequence.items.start[i]), depth + 1, &n->item[i], err);
      if (rc) return rc;
    }
    return 0;
  }
  n->kind = FC_YAML_MAP;
  n->n = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
  n->item = own(d, fc_xcalloc(n->n + 1, sizeof *n->item));
  n->keynode = own(d, fc_xcalloc(n->n + 1, sizeof *n->keynode));
  n->key = own(d, fc_xcalloc(n->n + 1, sizeof *n->key));
  for (size_t i = 0; i < n->n; i++) {
    yaml_node_pair_t *p = &yn->data.mapping.pairs.start[i];
    int rc = build(d, yd, yaml_document_get_node(yd, p->key), depth + 1, &n->keynode[i], err);
    if (rc) return rc;
    if (n->keynode[i]->kind != FC_YAML_SCALAR) return fc_yaml_error(n->keynode[i], err, "keys must be plain values");
    n->key[i] = n->keynode[i]->str;
    for (size_t k = 0; k < i; k++)
      if (!strcmp(n->key[k], n->key[i])) return fc_yaml_error(n->keynode[i], err, "'%s' given twice", n->key[i]);
    if ((rc = build(d, yd, yaml_document_get_node(yd, p->value), depth + 1, &n->item[i], err))) return rc;
  }
  return 0;
}

int fc_yaml_parse(const char *text, size_t len, const char *source, fc_yaml_doc_t **out, fc_err_t *err) {
  *out = NULL;
  fc_yaml_doc_t *d = fc_xcalloc(1, sizeof *d);
  d->src = fc_xstrdup(source ? source : "yaml");
  yaml_parser_t parser;
  yaml_document_t yd;
  if (!yaml_parser_initialize(&parser)) {
    fc_yaml_destroy(&d);
    return fc_err_set(err, FC_ENOMEM, "cannot start the YAML parser");
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &yd)) {
    int rc = fc_err_set(err, FC_EINVAL, "%s:%zu:%zu: YAML error: %s%s%s", d->src, parser.problem_mark.line + 1,
                        parser.problem_mark.column + 1, parser.problem ? parser.problem : "?",
                        parser.context ? " " : "", parser.context ? parser.context : "");
    yaml_parser_delete(&parser);
    fc_yaml_destroy(&d);
    return rc;
  }
  yaml_parser_delete(&parser);
  yaml_node_t *root = yaml_document_get_root_node(&yd);
  int rc = root ? build(d, &yd, root, 0, &d->root, err) : 0;
  yaml_document_delete(&yd);
  if (rc) {
    fc_yaml_destroy(&d);
    return rc;
  }
  *out = d;
  return 0;
}

int fc_yaml_load_file(const char *path, fc_yaml_doc_t **out, fc_err_t *err) {
  char *text;
  size_t len;
  *out = NULL;
  int rc = fc_read_file(path, &text, &len, err);
  if (rc) return rc;
  rc = fc_yaml_parse(text, len, path, out, err);
  free(text);
  return rc;
}

void fc_yaml_destroy(fc_yaml_doc_t **dp) {
  fc_yaml_doc_t *d = *dp;
  if (!d) return;
  for (size_t i = 0; i < d->nblocks; i++) free(d->blocks[i]);
  free(d->blocks), free(d->src), free(d);
  *dp = NULL;
}

const fc_yaml_node_t *fc_yaml_root(const fc_yaml_doc_t *doc) { return doc ? doc->root : NULL; }

const fc_yaml_node_t *fc_yaml_get(const fc_yaml_node_t *map, const char *key) {
  if (!map || map->kind != FC_YAML_MAP) return NULL;
  for (size_t i = 0; i < map->n; i++)
    if (!strcmp(map->key[i], key)) return map->item[i];
  return NULL;
}

const char *fc_yaml_str(const fc_yaml_node_t *n) { return n && n->kind == FC_YAML_SCALAR ? n->str : NULL; }

int fc_yaml_error(const fc_yaml_node_t *n, fc_err_t *err, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return fc_err_set(err, FC_EINVAL, "%s:%zu:%zu: %s", n->src, n->line, n->col, msg);
}

int fc_yaml_check_keys(const fc_yaml_node_t *n, const char *what, const char *const *known, fc_err_t *err) {
  if (n->kind != FC_YAML_MAP) return fc_yaml_error(n, err, "%s must be a mapping", what);
  for (size_t i = 0; i < n->n; i++) {
    int found = 0;
    for (const char *const *q = known; *q && !found; q++) found = !strcmp(*q, n->key[i]);
    if (found) continue;
    char list[600] = "";
    size_t len = 0;
    for (const char *const *q = known; *q && len < sizeof list - 80; q++)
      len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", q == known ? "" : ", ", *q);
    return fc_yaml_error(n->keynode[i], err, "unknown key '%s' in %s (known: %s)", n->key[i], what, list);
  }
  return 0;
}

int fc_yaml_string(const fc_yaml_node_t *n, const char *key, const char **out, fc_err_t *err) {
  if (n->kind != FC_YAML_SCALAR) return fc_yaml_error(n, err, "'%s' must be a plain value", key);
  *out = n->str;
  return 0;
}

/* The number readers: fc_num's message, prefixed with the position. */
#define NUM_READ(call)                                                            \
  do {                                                                            \
    char what[160];                                                               \
    fc_err_t e = {0};                                                             \
    if (n->kind != FC_YAML_SCALAR) return fc_yaml_error(n, err, "'%s' must be a plain value", key); \
    snprintf(what, sizeof what, "'%s'", key);                                     \
    if (call) return fc_yaml_error(n, err, "%s", e.msg);                          \
    return 0;                                                                     \
  } while (0)

int fc_yaml_long(const fc_yaml_node_t *n, const char *key, long lo, long hi, long *out, fc_err_t *err) {
  NUM_READ(fc_num_long(n->str, lo, hi, out, what, &e));
}
int fc_yaml_u64(const fc_yaml_node_t *n, const char *key, uint64_t lo, uint64_t hi, uint64_t *out, fc_err_t *err) {
  NUM_READ(fc_num_u64(n->str, lo, hi, out, what, &e));
}
int fc_yaml_double(const fc_yaml_node_t *n, const char *key, double lo, double hi, double *out, fc_err_t *err) {
  NUM_READ(fc_num_double(n->str, lo, hi, out, what, &e));
}
int fc_yaml_bool(const fc_yaml_node_t *n, const char *key, int *out, fc_err_t *err) {
  NUM_READ(fc_num_bool(n->str, out, what, &e));
}
