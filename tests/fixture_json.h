/* Helpers for tests reading JSON reference fixtures (written by tests/ref/ scripts). */
#ifndef FC_TEST_FIXTURE_JSON_H
#define FC_TEST_FIXTURE_JSON_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static inline json_t *fixture_json(const char *rel) {
  const char *dir = getenv("FC_FIXTURES");
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", rel);
  json_error_t e;
  json_t *j = json_load_file(path, 0, &e);
  if (!j) fprintf(stderr, "cannot load %s: %s (line %d)\n", path, e.text, e.line);
  return j;
}

/* A JSON number array as a new float / int32 buffer. */
static inline float *json_floats(const json_t *a, size_t *n) {
  size_t len = json_array_size(a);
  float *out = malloc((len ? len : 1) * sizeof *out);
  for (size_t i = 0; i < len; i++) out[i] = (float)json_number_value(json_array_get(a, i));
  if (n) *n = len;
  return out;
}

static inline int32_t *json_ints(const json_t *a, size_t *n) {
  size_t len = json_array_size(a);
  int32_t *out = malloc((len ? len : 1) * sizeof *out);
  for (size_t i = 0; i < len; i++) out[i] = (int32_t)json_integer_value(json_array_get(a, i));
  if (n) *n = len;
  return out;
}

static inline double json_num(const json_t *o, const char *key) {
  return json_number_value(json_object_get(o, key));
}

#endif
