/* The one YAML reader: a small read-only tree over libyaml's document API, whose every node
 * knows its line and column so messages can say "job.yaml:12:5: ...". Job specs, the
 * `fusectl up` config and merge configs read through it. Duplicate keys are refused when the
 * file is read; aliases are expanded, with a cap on nodes and depth. */
#ifndef FC_YAML_H
#define FC_YAML_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

typedef enum { FC_YAML_SCALAR, FC_YAML_LIST, FC_YAML_MAP } fc_yaml_kind_t;

typedef struct fc_yaml_node fc_yaml_node_t;
struct fc_yaml_node {
  fc_yaml_kind_t kind;
  size_t line, col;     /* 1-based */
  const char *src;      /* the document's source name, for messages */
  const char *str;      /* SCALAR: the value (NUL-terminated) */
  int quoted;           /* SCALAR: written in quotes (so "10" is a string, not a number) */
  size_t n;             /* LIST: items, MAP: pairs */
  fc_yaml_node_t **item; /* LIST: the items; MAP: the values */
  const char **key;     /* MAP: the keys (always scalars) */
  fc_yaml_node_t **keynode; /* MAP: the key nodes (for messages about a key) */
};

typedef struct fc_yaml_doc fc_yaml_doc_t;

/* Reads one YAML document (source names it in messages). An empty document has root NULL. */
int fc_yaml_parse(const char *text, size_t len, const char *source, fc_yaml_doc_t **out, fc_err_t *err);
int fc_yaml_load_file(const char *path, fc_yaml_doc_t **out, fc_err_t *err);
void fc_yaml_destroy(fc_yaml_doc_t **doc);
const fc_yaml_node_t *fc_yaml_root(const fc_yaml_doc_t *doc);

/* The value of key in a mapping (NULL when absent or n is not a mapping). */
const fc_yaml_node_t *fc_yaml_get(const fc_yaml_node_t *map, const char *key);
/* The scalar's text, or NULL for a list or mapping. */
const char *fc_yaml_str(const fc_yaml_node_t *n);

/* Sets err to "SRC:LINE:COL: message" about node n and returns FC_EINVAL. */
int fc_yaml_error(const fc_yaml_node_t *n, fc_err_t *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Checks that n is a mapping whose keys are all in known (NULL-terminated); `what` names it
 * in the message ("the job spec", "'training'"), which lists the known keys. */
int fc_yaml_check_keys(const fc_yaml_node_t *n, const char *what, const char *const *known, fc_err_t *err);

/* Typed reads of a scalar with fc_num's range checks; messages name key and the position. */
int fc_yaml_string(const fc_yaml_node_t *n, const char *key, const char **out, fc_err_t *err);
int fc_yaml_long(const fc_yaml_node_t *n, const char *key, long lo, long hi, long *out, fc_err_t *err);
int fc_yaml_u64(const fc_yaml_node_t *n, const char *key, uint64_t lo, uint64_t hi, uint64_t *out, fc_err_t *err);
int fc_yaml_double(const fc_yaml_node_t *n, const char *key, double lo, double hi, double *out, fc_err_t *err);
int fc_yaml_bool(const fc_yaml_node_t *n, const char *key, int *out, fc_err_t *err);

#endif
