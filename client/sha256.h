/* client/sha256.h — SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104) for the
 * frame client.
 *
 * Written for the device client, which must build with libc alone (embedded
 * Linux, small RTOS ports): no wolfSSL, no allocation, no global state, no
 * table larger than the 64 round constants. Internal to libsluice (hidden);
 * the server side hashes with wolfSSL.
 *
 * Streaming use: sha256_init, sha256_update as often as needed, sha256_final
 * (which leaves the state unusable until the next init). The one-shot
 * functions do the three steps.
 */
#ifndef SLUICE_CLIENT_SHA256_H
#define SLUICE_CLIENT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN   32
#define SHA256_BLOCK 64

struct sha256 {
    uint32_t h[8];
    uint64_t bytes; /* message length so far */
    uint8_t buf[SHA256_BLOCK];
    size_t n; /* bytes waiting in buf, < SHA256_BLOCK */
};

struct sha256_hmac {
    struct sha256 inner, outer; /* both keyed at init */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *p, size_t n);
void sha256_final(struct sha256 *s, uint8_t out[SHA256_LEN]);
void sha256(const void *p, size_t n, uint8_t out[SHA256_LEN]);

/* A key longer than a block is hashed first (RFC 2104 §2). */
void sha256_hmac_init(struct sha256_hmac *h, const void *key, size_t klen);
void sha256_hmac_update(struct sha256_hmac *h, const void *p, size_t n);
void sha256_hmac_final(struct sha256_hmac *h, uint8_t out[SHA256_LEN]);
void sha256_hmac(const void *key, size_t klen, const void *p, size_t n, uint8_t out[SHA256_LEN]);

/* 1 when a[0..n) equals b[0..n), in time that depends on n only (for MACs). */
int sha256_equal(const uint8_t *a, const uint8_t *b, size_t n);

/* Overwrites n bytes in a way the compiler does not drop as a dead store:
 * keys on the stack are wiped before their frame is reused. */
void sha256_wipe(void *p, size_t n);

#endif
