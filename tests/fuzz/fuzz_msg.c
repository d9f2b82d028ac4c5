/* libFuzzer target for the wire decoder. Build and run (clang only):
 *   CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz_msg
 *   ./build-fuzz/tests/fuzz/fuzz_msg -max_len=4096 -max_total_time=60 -rss_limit_mb=512
 * Whatever the input, decoding must not crash, and an accepted message must re-encode and decode
 * to the same encoding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fc_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fc_msg_t m;
  fc_err_t err;
  if (fc_msg_decode(data, size, &m, &err) != 0) return 0;
  uint8_t *a, *b;
  size_t alen, blen;
  fc_msg_encode(&m, &a, &alen);
  fc_msg_t d;
  if (fc_msg_decode(a, alen, &d, &err) != 0) abort();
  fc_msg_encode(&d, &b, &blen);
  if (alen != blen || memcmp(a, b, alen) != 0) abort();
  free(a), free(b);
  fc_msg_clear(&m), fc_msg_clear(&d);
  return 0;
}
