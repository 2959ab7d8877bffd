/* storage/record.c — record and segment header codec; see record.h. */
#include "storage/record.h"

#include <errno.h>
#include <string.h>
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

/* Header layout (offsets):
 *  0 u16 magic  2 u8 version  3 u8 flags  4 u32 length  8 u32 device
 * 12 u8 proto  13 u8 ctype  14 u16 topic_len  16 u64 recv_ns  24 u64 seq
 * 32 u64 XXH3-64(header[0,32) || body) */
static uint64_t record_sum(const uint8_t *hdr, const void *a, size_t alen, const void *b,
                           size_t blen)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, hdr, 32);
    if (alen) XXH3_64bits_update(&st, a, alen);
    if (blen) XXH3_64bits_update(&st, b, blen);
    return XXH3_64bits_digest(&st);
}

void record_encode(uint8_t out[RECORD_HEADER_SIZE], const struct record *r, const void *topic,
                   const void *payload, size_t payload_len)
{
    put16(out, RECORD_MAGIC);
    out[2] = RECORD_VERSION;
    out[3] = r->flags;
    put32(out + 4, (uint32_t)(r->topic_len + payload_len));
    put32(out + 8, r->device);
    out[12] = r->proto;
    out[13] = r->ctype;
    put16(out + 14, r->topic_len);
    put64(out + 16, r->recv_ns);
    put64(out + 24, r->seq);
    put64(out + 32, record_sum(out, topic, r->topic_len, payload, payload_len));
}

int record_decode(const uint8_t in[RECORD_HEADER_SIZE], struct record *r)
{
    if (get16(in) != RECORD_MAGIC || in[2] != RECORD_VERSION) return -EBADMSG;
    r->flags = in[3];
    r->length = get32(in + 4);
    r->device = get32(in + 8);
    r->proto = in[12];
    r->ctype = in[13];
    r->topic_len = get16(in + 14);
    r->recv_ns = get64(in + 16);
    r->seq = get64(in + 24);
    r->checksum = get64(in + 32);
    if (r->length > RECORD_MAX_BODY || r->topic_len > r->length) return -EBADMSG;
    return 0;
}

int record_verify(const uint8_t hdr[RECORD_HEADER_SIZE], const struct record *r, const void *body)
{
    return record_sum(hdr, body, r->length, NULL, 0) == r->checksum ? 0 : -EBADMSG;
}

void segment_header_encode(uint8_t out[SEGMENT_HEADER_SIZE], const struct segment_header *h)
{
    put32(out, SEGMENT_MAGIC);
    put16(out + 4, SEGMENT_VERSION);
    put16(out + 6, SEGMENT_HEADER_SIZE);
    put32(out + 8, h->worker);
    put32(out + 12, h->org);
    put64(out + 16, h->base_seq);
    put64(out + 24, h->created_ns);
}

int segment_header_decode(const uint8_t in[SEGMENT_HEADER_SIZE], struct segment_header *h)
{
    if (get32(in) != SEGMENT_MAGIC || get16(in + 4) != SEGMENT_VERSION ||
        get16(in + 6) != SEGMENT_HEADER_SIZE)
        return -EBADMSG;
    h->worker = get32(in + 8);
    h->org = get32(in + 12);
    h->base_seq = get64(in + 16);
    h->created_ns = get64(in + 24);
    return 0;
}

const char *record_proto_name(unsigned proto)
{
    static const char *const names[] = {"?", "http", "https", "mqtt", "mqtts", "frame", "udp"};
    return proto < sizeof names / sizeof names[0] ? names[proto] : "?";
}
