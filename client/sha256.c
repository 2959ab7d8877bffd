/* client/sha256.c — SHA-256 after FIPS 180-4 §6.2, HMAC after RFC 2104; see
 * sha256.h. Written for size and clarity rather than speed: the client hashes
 * a few hundred bytes per handshake. */
#include "client/sha256.h"

#include <string.h>

/* FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube
 * roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, unsigned r)
{
    return (x >> r) | (x << (32 - r));
}

/* §6.2.2: one 512-bit block into the state. The message schedule is kept as a
 * 16-word ring (W[t] only needs W[t-2], W[t-7], W[t-15], W[t-16]), which
 * saves 192 bytes of stack on small targets. */
static void block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[16], a, b, c, d, e, f, g, hh;
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t wt;
        if (t < 16) {
            wt = w[t];
        } else {
            uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
            uint32_t s0 = ror(w15, 7) ^ ror(w15, 18) ^ (w15 >> 3);
            uint32_t s1 = ror(w2, 17) ^ ror(w2, 19) ^ (w2 >> 10);
            wt = w[t & 15] = w[t & 15] + s0 + w[(t - 7) & 15] + s1;
        }
        uint32_t t1 = hh + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[t] + wt;
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void sha256_init(struct sha256 *s)
{
    /* §5.3.3: the fractional parts of the square roots of the first 8 primes */
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof H0);
    s->bytes = 0;
    s->n = 0;
}

void sha256_update(struct sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->bytes += n;
    if (s->n) {
        size_t k = SHA256_BLOCK - s->n < n ? SHA256_BLOCK - s->n : n;
        memcpy(s->buf + s->n, p, k);
        s->n += k, p += k, n -= k;
        if (s->n < SHA256_BLOCK) return;
        block(s->h, s->buf);
        s->n = 0;
    }
    for (; n >= SHA256_BLOCK; p += SHA256_BLOCK, n -= SHA256_BLOCK)
        block(s->h, p);
    if (n) memcpy(s->buf, p, n);
    s->n = n;
}

void sha256_final(struct sha256 *s, uint8_t out[SHA256_LEN])
{
    /* §5.1.1: a 1 bit, zeros up to 448 mod 512, the length in bits (64, big-endian) */
    uint64_t bits = s->bytes * 8;
    s->buf[s->n++] = 0x80;
    if (s->n > SHA256_BLOCK - 8) {
        memset(s->buf + s->n, 0, SHA256_BLOCK - s->n);
        block(s->h, s->buf);
        s->n = 0;
    }
    memset(s->buf + s->n, 0, SHA256_BLOCK - 8 - s->n);
    for (int i = 0; i < 8; i++)
        s->buf[SHA256_BLOCK - 1 - i] = (uint8_t)(bits >> (8 * i));
    block(s->h, s->buf);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
    sha256_wipe(s, sizeof *s);
}

void sha256(const void *p, size_t n, uint8_t out[SHA256_LEN])
{
    struct sha256 s;
    sha256_init(&s);
    sha256_update(&s, p, n);
    sha256_final(&s, out);
}

void sha256_hmac_init(struct sha256_hmac *h, const void *key, size_t klen)
{
    /* RFC 2104 §2: H(K ^ opad, H(K ^ ipad, text)), K zero-padded to a block */
    uint8_t k[SHA256_BLOCK], pad[SHA256_BLOCK];
    memset(k, 0, sizeof k);
    if (klen > SHA256_BLOCK)
        sha256(key, klen, k);
    else if (klen)
        memcpy(k, key, klen);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    sha256_init(&h->inner);
    sha256_update(&h->inner, pad, sizeof pad);
    for (int i = 0; i < SHA256_BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    sha256_init(&h->outer);
    sha256_update(&h->outer, pad, sizeof pad);
    sha256_wipe(k, sizeof k);
    sha256_wipe(pad, sizeof pad);
}

void sha256_hmac_update(struct sha256_hmac *h, const void *p, size_t n)
{
    sha256_update(&h->inner, p, n);
}

void sha256_hmac_final(struct sha256_hmac *h, uint8_t out[SHA256_LEN])
{
    uint8_t in[SHA256_LEN];
    sha256_final(&h->inner, in);
    sha256_update(&h->outer, in, sizeof in);
    sha256_final(&h->outer, out);
    sha256_wipe(in, sizeof in);
}

void sha256_hmac(const void *key, size_t klen, const void *p, size_t n, uint8_t out[SHA256_LEN])
{
    struct sha256_hmac h;
    sha256_hmac_init(&h, key, klen);
    sha256_hmac_update(&h, p, n);
    sha256_hmac_final(&h, out);
}

int sha256_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

void sha256_wipe(void *p, size_t n)
{
    /* a store through a volatile pointer may not be elided (C11 6.7.3p7);
     * memset_s and explicit_bzero are not in every libc a port meets */
    volatile uint8_t *v = p;
    while (n--)
        *v++ = 0;
}
