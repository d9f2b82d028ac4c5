/* The UTF-8 codec the text floor shares: validity (Unicode's well-formed sequences: no
 * overlong forms, surrogates or code points above U+10FFFF), decoding, encoding, and the
 * lossy copy that replaces ill-formed bytes. */
#ifndef FC_UTF8_H
#define FC_UTF8_H

#include <stddef.h>
#include <stdint.h>

#include "fc_util.h"

#define FC_UTF8_MAX 4 /* bytes of the longest sequence */

/* Length of the well-formed sequence at p (n >= 1 bytes available), 0 if ill-formed or cut. */
static inline size_t fc_utf8_valid_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) len = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else
    return 0;
  if (n < len) return 0;
  if (p[1] < lo || p[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((p[i] & 0xc0) != 0x80) return 0;
  return len;
}

/* The sequence length a lead byte announces (1 for ASCII; for a continuation byte, 2). */
static inline size_t fc_utf8_seq_len(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* The code point of the sequence at p, *len its bytes (fc_utf8_seq_len of the lead byte). No
 * checks: p must hold a well-formed sequence, or at least *len readable bytes. */
static inline uint32_t fc_utf8_decode(const unsigned char *p, size_t *len) {
  unsigned c = p[0];
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if (c < 0xe0) {
    *len = 2;
    return ((c & 0x1f) << 6) | (p[1] & 0x3f);
  }
  if (c < 0xf0) {
    *len = 3;
    return ((c & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);
  }
  *len = 4;
  return ((c & 0x07) << 18) | ((p[1] & 0x3f) << 12) | ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
}

/* Decodes one code point with validity: its length (1 to 4) and *cp, or 0 when the bytes at p
 * (n available) are not a well-formed sequence. */
static inline size_t fc_utf8_next(const unsigned char *p, size_t n, uint32_t *cp) {
  size_t l = fc_utf8_valid_len(p, n);
  if (l) *cp = fc_utf8_decode(p, &l);
  return l;
}

/* Writes code point c (< 0x110000) to out (FC_UTF8_MAX bytes of room); returns its length. */
size_t fc_utf8_encode(uint32_t c, char *out);

/* Appends p[0..n) to s with each maximal ill-formed subpart replaced by one U+FFFD (as Rust's
 * String::from_utf8_lossy and the Unicode recommendation). */
void fc_utf8_put_lossy(fc_sbuf_t *s, const unsigned char *p, size_t n);

#endif
