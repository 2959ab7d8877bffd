/* storage/record.c — record and segment header codec; see record.h. */
#include "storage/record.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/random.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16);
}
static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

/* Record header layouts (offsets):
 * v1:  0 u16 magic  2 u8 version  3 u8 flags  4 u32 length  8 u32 device
 *     12 u8 proto  13 u8 ctype  14 u16 topic_len  16 u64 recv_ns  24 u64 seq
 *     32 u64 XXH3-64(header[0,32) || body)
 * v2: the same first 32 bytes (version 2), then
 *     32 u64 device_ts_ns  40 u64 device_seq
 *     48 u64 XXH3-64 seeded with the segment's seed (header[0,48) || body)
 * v3: v2's first 48 bytes (version 3), then
 *     48 u64 durable_seq
 *     56 u64 XXH3-64 seeded with the segment's seed (header[0,56) || body) */
#define SUM_AT_V1 32u
#define SUM_AT_V2 48u
#define SUM_AT_V3 56u

_Static_assert(SUM_AT_V1 + 8 == RECORD_HEADER_SIZE_V1, "v1: the checksum ends the header");
_Static_assert(SUM_AT_V2 + 8 == RECORD_HEADER_SIZE_V2, "v2: the checksum ends the header");
_Static_assert(SUM_AT_V3 + 8 == RECORD_HEADER_SIZE, "v3: the checksum ends the header");

static uint64_t record_sum(const uint8_t *hdr, size_t hlen, uint64_t seed, const void *a,
                           size_t alen, const void *b, size_t blen)
{
    XXH3_state_t st;
    /* reset_withSeed compares the state's old seed to skip re-deriving the
     * secret: a state on the stack must be marked fresh first, or a stale one
     * holding the same seed keeps a secret that is not there any more */
    XXH3_INITSTATE(&st);
    /* seed 0 is the unseeded hash: v1 passes 0, a v2/v3 seed is never 0 */
    XXH3_64bits_reset_withSeed(&st, seed);
    XXH3_64bits_update(&st, hdr, hlen);
    if (alen) XXH3_64bits_update(&st, a, alen);
    if (blen) XXH3_64bits_update(&st, b, blen);
    return XXH3_64bits_digest(&st);
}

/* Where the checksum of a record of `version` sits (the header's last 8 bytes). */
static size_t sum_at(unsigned version)
{
    return version == 1 ? SUM_AT_V1 : version == 2 ? SUM_AT_V2 : SUM_AT_V3;
}

size_t record_header_size(unsigned version)
{
    return sum_at(version) + 8;
}

size_t record_encode(uint8_t *out, const struct record *r, uint64_t seed, const void *topic,
                     const void *payload, size_t payload_len)
{
    unsigned v = r->version == 1 || r->version == 2 ? r->version : RECORD_VERSION;
    size_t at = sum_at(v);
    put16(out, RECORD_MAGIC);
    out[2] = (uint8_t)v;
    out[3] = r->flags;
    put32(out + 4, (uint32_t)(r->topic_len + payload_len));
    put32(out + 8, r->device);
    out[12] = r->proto;
    out[13] = r->ctype;
    put16(out + 14, r->topic_len);
    put64(out + 16, r->recv_ns);
    put64(out + 24, r->seq);
    if (v >= 2) {
        put64(out + 32, r->device_ts_ns);
        put64(out + 40, r->device_seq);
    }
    if (v >= 3) put64(out + 48, r->durable_seq);
    /* v1's checksum is unkeyed (seed 0 is XXH3's unseeded value) */
    put64(out + at,
          record_sum(out, at, v == 1 ? 0 : seed, topic, r->topic_len, payload, payload_len));
    return at + 8;
}

int record_decode(const uint8_t *in, unsigned version, struct record *r)
{
    if (get16(in) != RECORD_MAGIC || in[2] != version || version < 1 || version > 3)
        return -EBADMSG;
    r->version = in[2];
    r->flags = in[3];
    r->length = get32(in + 4);
    r->device = get32(in + 8);
    r->proto = in[12];
    r->ctype = in[13];
    r->topic_len = get16(in + 14);
    r->recv_ns = get64(in + 16);
    r->seq = get64(in + 24);
    r->device_ts_ns = version >= 2 ? get64(in + 32) : 0;
    r->device_seq = version >= 2 ? get64(in + 40) : 0;
    r->durable_seq = version >= 3 ? get64(in + 48) : 0;
    r->checksum = get64(in + sum_at(version));
    if (r->length > RECORD_MAX_BODY || r->topic_len > r->length) return -EBADMSG;
    /* a batch is written before it is durable, so no writer can have known
     * its own records durable: such a header is damage, and must not count as
     * proof that an earlier batch was durable */
    if (r->durable_seq > r->seq) return -EBADMSG;
    return 0;
}

int record_verify(const uint8_t *hdr, const struct record *r, uint64_t seed, const void *body)
{
    unsigned v = r->version;
    uint64_t sum = record_sum(hdr, sum_at(v), v == 1 ? 0 : seed, body, r->length, NULL, 0);
    return sum == r->checksum ? 0 : -EBADMSG;
}

/* Segment header layouts:
 * v1:  0 u32 magic  4 u16 version 1  6 u16 size 32  8 u32 worker  12 u32 org
 *     16 u64 base_seq  24 u64 created_ns
 * v2:  the same with version 2, size 48, then 32 u64 seed
 *     40 u64 XXH3-64(header[0,40))
 * v3:  v2's layout with version 3: the segment changed only in its records,
 *     and the version keeps a v2 reader from misreading them */
size_t segment_header_size(const struct segment_header *h)
{
    return h->version == 1 ? SEGMENT_HEADER_SIZE_V1 : SEGMENT_HEADER_SIZE;
}

size_t segment_header_encode(uint8_t *out, const struct segment_header *h)
{
    unsigned v = h->version == 1 || h->version == 2 ? h->version : SEGMENT_VERSION;
    size_t size = v == 1 ? SEGMENT_HEADER_SIZE_V1 : SEGMENT_HEADER_SIZE;
    put32(out, SEGMENT_MAGIC);
    put16(out + 4, (uint16_t)v);
    put16(out + 6, (uint16_t)size);
    put32(out + 8, h->worker);
    put32(out + 12, h->org);
    put64(out + 16, h->base_seq);
    put64(out + 24, h->created_ns);
    if (v >= 2) {
        put64(out + 32, h->seed);
        put64(out + 40, XXH3_64bits(out, 40));
    }
    return size;
}

int segment_header_decode(const uint8_t *in, size_t len, struct segment_header *h)
{
    if (len < SEGMENT_HEADER_SIZE_V1 || get32(in) != SEGMENT_MAGIC) return -EBADMSG;
    unsigned v = get16(in + 4), size = get16(in + 6);
    bool seeded = v == 2 || v == 3;
    if (!((v == 1 && size == SEGMENT_HEADER_SIZE_V1) || (seeded && size == SEGMENT_HEADER_SIZE)) ||
        len < size)
        return -EBADMSG;
    /* v2/v3's checksum: a flipped seed would otherwise fail every record of
     * the segment one by one, as if each were damaged */
    if (seeded && (XXH3_64bits(in, 40) != get64(in + 40) || get64(in + 32) == 0)) return -EBADMSG;
    h->version = (uint16_t)v;
    h->worker = get32(in + 8);
    h->org = get32(in + 12);
    h->base_seq = get64(in + 16);
    h->created_ns = get64(in + 24);
    h->seed = seeded ? get64(in + 32) : 0;
    return 0;
}

int record_seed_new(uint64_t *seed)
{
    uint64_t v = 0;
    while (v == 0) {
        ssize_t got = getrandom(&v, sizeof v, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -errno;
        if (got != (ssize_t)sizeof v) v = 0;
    }
    *seed = v;
    return 0;
}

const char *record_proto_name(unsigned proto)
{
    static const char *const names[] = {"?", "http", "https", "mqtt", "mqtts", "frame", "udp"};
    return proto < sizeof names / sizeof names[0] ? names[proto] : "?";
}
