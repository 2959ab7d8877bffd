/* engine/ratelimit.h — per source address token buckets for failed
 * authentication (ARCHITECTURE.md, Auth): a client that keeps presenting bad
 * tokens is answered 429 before its next token is even hashed.
 *
 * One table per worker (no locks): an address's connections spread over N
 * workers get N buckets, so the effective rate is at most N times the setting.
 * The table is a fixed-size direct-mapped cache keyed by XXH3 of the address;
 * a colliding address takes the slot over with a full bucket (forgetting is
 * the safe direction: it never blocks an innocent client for long).
 */
#ifndef SLUICE_ENGINE_RATELIMIT_H
#define SLUICE_ENGINE_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define RATELIMIT_SLOTS 4096 /* power of two */

struct ratelimit_slot {
    uint8_t addr[16]; /* IPv6, or IPv4-mapped */
    uint32_t milli;   /* tokens x 1000 */
    uint64_t last_ms; /* when milli was last brought up to date */
    bool used;
};

struct ratelimit {
    unsigned rate;  /* failed attempts per second per address; 0 disables */
    unsigned burst; /* bucket size */
    struct ratelimit_slot slot[RATELIMIT_SLOTS];
};

/* rate 0 disables the limiter (every call allows). */
void ratelimit_init(struct ratelimit *rl, unsigned rate, unsigned burst);

/* True when addr may make another attempt now (its bucket holds a token). */
bool ratelimit_allow(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms);

/* Takes one token from addr's bucket for a failed attempt. */
void ratelimit_charge(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms);

/* The address the limits are kept by: a socket address as 16 bytes (IPv4 as
 * ::ffff:a.b.c.d); all zero for other families. */
struct sockaddr;
void ratelimit_addr(const struct sockaddr *sa, uint8_t out[16]);

#endif
