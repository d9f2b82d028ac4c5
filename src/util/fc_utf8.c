/* fc_utf8: encoding and the lossy copy (the decoders are inline in fc_utf8.h). */
#include "fc_utf8.h"

size_t fc_utf8_encode(uint32_t c, char *out) {
  if (c < 0x80) {
    out[0] = (char)c;
    return 1;
  }
  if (c < 0x800) {
    out[0] = (char)(0xc0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3f));
    return 2;
  }
  if (c < 0x10000) {
    out[0] = (char)(0xe0 | (c >> 12));
    out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[2] = (char)(0x80 | (c & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | (c >> 18));
  out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((c >> 6) & 0x3f));
  out[3] = (char)(0x80 | (c & 0x3f));
  return 4;
}

void fc_utf8_put_lossy(fc_sbuf_t *s, const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t l = fc_utf8_valid_len(p + i, n - i);
    if (l) {
      size_t j = i + l;
      while (j < n && (l = fc_utf8_valid_len(p + j, n - j))) j += l;
      fc_sbuf_put(s, p + i, j - i);
      i = j;
      continue;
    }
    /* The maximal subpart: the lead byte and the continuation bytes that could still have
     * completed a well-formed sequence. */
    unsigned c = p[i];
    size_t k = 1;
    if (c >= 0xc2 && c <= 0xf4) {
      unsigned lo = 0x80, hi = 0xbf;
      size_t want = c <= 0xdf ? 2 : c <= 0xef ? 3 : 4;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
      if (i + 1 < n && p[i + 1] >= lo && p[i + 1] <= hi) {
        k = 2;
        while (k < want && i + k < n && (p[i + k] & 0xc0) == 0x80) k++;
      }
    }
    fc_sbuf_put(s, "\xef\xbf\xbd", 3);
    i += k;
  }
}
