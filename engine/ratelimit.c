/* engine/ratelimit.c — token buckets per source address; see ratelimit.h. */
#include "engine/ratelimit.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <xxhash.h>

void ratelimit_init(struct ratelimit *rl, unsigned rate, unsigned burst)
{
    memset(rl, 0, sizeof *rl);
    rl->rate = rate;
    rl->burst = burst ? burst : 1;
}

/* addr's slot with its bucket refilled up to now (a new or displaced address
 * starts full). */
static struct ratelimit_slot *refill(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms)
{
    struct ratelimit_slot *s = &rl->slot[XXH3_64bits(addr, 16) & (RATELIMIT_SLOTS - 1)];
    uint64_t full = (uint64_t)rl->burst * 1000;
    if (!s->used || memcmp(s->addr, addr, 16)) {
        memcpy(s->addr, addr, 16);
        s->used = true;
        s->milli = (uint32_t)full;
        s->last_ms = now_ms;
        return s;
    }
    if (now_ms > s->last_ms) {
        /* rate tokens per second = rate milli-tokens per millisecond */
        uint64_t add = (now_ms - s->last_ms) * rl->rate;
        s->milli = (uint32_t)(s->milli + add > full ? full : s->milli + add);
        s->last_ms = now_ms;
    }
    return s;
}

bool ratelimit_allow(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms)
{
    if (!rl->rate) return true;
    return refill(rl, addr, now_ms)->milli >= 1000;
}

void ratelimit_charge(struct ratelimit *rl, const uint8_t addr[16], uint64_t now_ms)
{
    if (!rl->rate) return;
    struct ratelimit_slot *s = refill(rl, addr, now_ms);
    s->milli = s->milli >= 1000 ? s->milli - 1000 : 0;
}

void ratelimit_addr(const struct sockaddr *sa, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else if (sa->sa_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    }
}
