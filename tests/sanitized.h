/* FC_SANITIZED: 1 when this test is built with AddressSanitizer (tools/test.sh --sanitize, what
 * CI runs), known at compile time. Heavy tests use it to run smaller sizes there, and
 * memory-growth bounds to allow for ASan's allocator (redzones, quarantine, shadow). */
#ifndef FC_TEST_SANITIZED_H
#define FC_TEST_SANITIZED_H

#if defined(__SANITIZE_ADDRESS__)
#define FC_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FC_SANITIZED 1
#endif
#endif
#ifndef FC_SANITIZED
#define FC_SANITIZED 0
#endif

#endif
