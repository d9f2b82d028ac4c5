/* SHA-256 (FIPS 180-4), for artifact checksums: the coordinator records what each task wrote. */
#ifndef FC_SHA256_H
#define FC_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

typedef struct fc_sha256 {
  uint32_t h[8];
  uint64_t len; /* bytes hashed so far */
  uint8_t buf[64];
  size_t nbuf;
} fc_sha256_t;

void fc_sha256_init(fc_sha256_t *s);
void fc_sha256_update(fc_sha256_t *s, const void *data, size_t n);
void fc_sha256_final(fc_sha256_t *s, uint8_t out[32]);
/* Lowercase hex of a digest into hex[65]. */
void fc_sha256_hex(const uint8_t digest[32], char hex[65]);
/* Hashes a whole file; *size gets its length. */
int fc_sha256_file(const char *path, char hex[65], uint64_t *size, fc_err_t *err);

#endif
