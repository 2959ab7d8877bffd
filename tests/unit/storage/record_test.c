/* tests/unit/storage/record_test.c — record and segment header codec (format v3, and
 * the v2 and v1 it still reads).
 *
 * The byte layout is pinned here on purpose: records written by one build must be
 * readable by the next, so a layout change has to break a test, not just round-trip. */
#include <criterion/criterion.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "storage/record.h"
#include "segtest.h"

static const char topic[] = "plant/7/pump";
static const char payload[] = "{\"t\":21.5,\"rpm\":1450}";
static const uint64_t seed = 0x243f6a8885a308d3ull; /* a segment's seed */

static struct record sample(void)
{
    struct record r = {
        .flags = RECORD_F_RETAIN | RECORD_F_WILL,
        .proto = RECORD_PROTO_MQTTS,
        .ctype = RECORD_CTYPE_JSON,
        .topic_len = sizeof topic - 1,
        .device = 0xa1b2c3d4u,
        .recv_ns = 0x0123456789abcdefull,
        .seq = 0xfedcba9876543210ull,
        .device_ts_ns = 0x0a0b0c0d0e0f1011ull,
        .device_seq = 0x2122232425262728ull,
        .durable_seq = 0xfedcba9876543200ull, /* the batch's durable end, below seq */
    };
    return r;
}

/* Body as stored on disk: topic then payload. */
static size_t sample_body(uint8_t *out)
{
    memcpy(out, topic, sizeof topic - 1);
    memcpy(out + sizeof topic - 1, payload, sizeof payload - 1);
    return sizeof topic - 1 + sizeof payload - 1;
}

Test(record, round_trip_all_fields)
{
    uint8_t hdr[RECORD_HEADER_SIZE], body[128];
    struct record in = sample(), out;
    size_t n = sample_body(body);

    cr_expect_eq(record_encode(hdr, &in, seed, topic, payload, sizeof payload - 1),
                 RECORD_HEADER_SIZE);
    memset(&out, 0xaa, sizeof out);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &out), 0);
    cr_expect_eq(out.version, RECORD_VERSION);
    cr_expect_eq(out.flags, in.flags);
    cr_expect_eq(out.proto, in.proto);
    cr_expect_eq(out.ctype, in.ctype);
    cr_expect_eq(out.topic_len, in.topic_len);
    cr_expect_eq(out.length, n);
    cr_expect_eq(out.device, in.device);
    cr_expect_eq(out.recv_ns, in.recv_ns);
    cr_expect_eq(out.seq, in.seq);
    cr_expect_eq(out.device_ts_ns, in.device_ts_ns);
    cr_expect_eq(out.device_seq, in.device_seq);
    cr_expect_eq(out.durable_seq, in.durable_seq);
    cr_expect_eq(record_verify(hdr, &out, seed, body), 0);
}

/* record.c layout comment: offsets, widths and little-endian order are the format. */
Test(record, header_layout_is_pinned)
{
    uint8_t hdr[RECORD_HEADER_SIZE], body[128];
    struct record r = sample();
    size_t n = sample_body(body);

    cr_expect_eq(RECORD_HEADER_SIZE, 64);
    cr_expect_eq(RECORD_HEADER_SIZE % 8, 0, "8-byte aligned fields and size");
    cr_expect_eq(record_header_size(3), 64);
    cr_expect_eq(record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1), 64);
    cr_expect_eq(hdr[0], 'S');
    cr_expect_eq(hdr[1], 'R');
    cr_expect_eq(hdr[2], 3);
    cr_expect_eq(hdr[3], r.flags);
    cr_expect_eq(le(hdr + 4, 4), n);
    cr_expect_eq(le(hdr + 8, 4), r.device);
    cr_expect_eq(hdr[12], r.proto);
    cr_expect_eq(hdr[13], r.ctype);
    cr_expect_eq(le(hdr + 14, 2), r.topic_len);
    cr_expect_eq(le(hdr + 16, 8), r.recv_ns);
    cr_expect_eq(le(hdr + 24, 8), r.seq);
    cr_expect_eq(le(hdr + 32, 8), r.device_ts_ns);
    cr_expect_eq(le(hdr + 40, 8), r.device_seq);
    cr_expect_eq(le(hdr + 48, 8), r.durable_seq);

    /* The checksum is XXH3-64 seeded with the segment's seed, of header[0,56)
     * followed by the body, computed here in one shot so the streaming code in
     * record.c is checked, not trusted. */
    uint8_t all[56 + 128];
    memcpy(all, hdr, 56);
    memcpy(all + 56, body, n);
    cr_expect_eq(le(hdr + 56, 8), XXH3_64bits_withSeed(all, 56 + n, seed));
    cr_expect_neq(le(hdr + 56, 8), XXH3_64bits(all, 56 + n), "the seed is used");
}

/* Version-2 records (written before format v3) still read and encode exactly as
 * before: 56-byte header, no durable_seq (read as 0), the checksum over [0,48). */
Test(record, v2_layout_still_reads)
{
    uint8_t hdr[RECORD_HEADER_SIZE], body[128];
    struct record r = sample(), d;
    size_t n = sample_body(body);

    r.version = 2;
    memset(hdr, 0xee, sizeof hdr);
    cr_expect_eq(record_header_size(2), RECORD_HEADER_SIZE_V2);
    cr_expect_eq(record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1), 56);
    cr_expect_eq(hdr[56], 0xee, "nothing written past a v2 header");
    cr_expect_eq(hdr[2], 2);
    cr_expect_eq(le(hdr + 24, 8), r.seq);
    cr_expect_eq(le(hdr + 32, 8), r.device_ts_ns);
    cr_expect_eq(le(hdr + 40, 8), r.device_seq);
    uint8_t all[48 + 128];
    memcpy(all, hdr, 48);
    memcpy(all + 48, body, n);
    cr_expect_eq(le(hdr + 48, 8), XXH3_64bits_withSeed(all, 48 + n, seed));

    memset(&d, 0xaa, sizeof d);
    cr_assert_eq(record_decode(hdr, 2, &d), 0);
    cr_expect_eq(d.version, 2);
    cr_expect_eq(d.seq, r.seq);
    cr_expect_eq(d.device_ts_ns, r.device_ts_ns);
    cr_expect_eq(d.device_seq, r.device_seq);
    cr_expect_eq(d.durable_seq, 0, "v2 has no durable_seq");
    cr_expect_eq(record_verify(hdr, &d, seed, body), 0);
    body[3] ^= 1;
    cr_expect_eq(record_verify(hdr, &d, seed, body), -EBADMSG);
    /* versions do not mix: a v3 reader refuses a v2 record and the other way round */
    cr_expect_eq(record_decode(hdr, 3, &d), -EBADMSG);
    r.version = 0;
    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    cr_expect_eq(record_decode(hdr, 2, &d), -EBADMSG);
}

/* durable_seq is covered by the checksum, and a header claiming its own batch
 * durable (durable_seq above its seq) is impossible: no writer knows a batch
 * durable before writing it, so such a header is damage, never proof. */
Test(record, v3_durable_seq_is_checked_and_bounded_by_seq)
{
    uint8_t hdr[RECORD_HEADER_SIZE], body[128];
    struct record r = sample(), d;
    sample_body(body);

    r.durable_seq = r.seq; /* a batch's first record: everything before it durable */
    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &d), 0);
    cr_expect_eq(d.durable_seq, r.seq);
    cr_expect_eq(record_verify(hdr, &d, seed, body), 0);
    r.durable_seq = 0; /* nothing durable yet */
    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &d), 0);
    cr_expect_eq(d.durable_seq, 0);
    /* moved past the record's seq: refused before any checksum */
    put_le(hdr + 48, r.seq + 1, 8);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
    /* changed within bounds: the checksum catches it */
    put_le(hdr + 48, r.seq - 5, 8);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &d), 0);
    cr_expect_eq(record_verify(hdr, &d, seed, body), -EBADMSG);
}

/* D8: the v2 checksum is keyed. A record built byte for byte right but with
 * another seed — what a device that embeds a record in its payload can at best
 * do, never having seen the segment's seed; 0 is the likeliest guess, the
 * unseeded hash — decodes but does not verify. */
Test(record, D8_forged_with_wrong_seed_is_rejected)
{
    uint8_t hdr[RECORD_HEADER_SIZE], body[128];
    struct record r = sample(), d;
    size_t n = sample_body(body);
    static const uint64_t guesses[] = {0, 1, seed ^ 1, seed + 1, UINT64_MAX};

    (void)n;
    for (size_t i = 0; i < sizeof guesses / sizeof guesses[0]; i++) {
        record_encode(hdr, &r, guesses[i], topic, payload, sizeof payload - 1);
        cr_assert_eq(record_decode(hdr, RECORD_VERSION, &d), 0);
        cr_expect_eq(record_verify(hdr, &d, seed, body), -EBADMSG, "guessed seed %" PRIx64,
                     guesses[i]);
        cr_expect_eq(record_verify(hdr, &d, guesses[i], body), 0);
    }
    /* a valid v1 record (unkeyed checksum) is not a record of a v3 segment at all */
    struct record v1 = sample();
    v1.version = 1;
    cr_expect_eq(record_encode(hdr, &v1, 0, topic, payload, sizeof payload - 1),
                 RECORD_HEADER_SIZE_V1);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
}

/* Version-1 records (written before format v2) still read: 40-byte header,
 * unseeded XXH3-64 over [0,32) and the body, no device time or seq. */
Test(record, v1_layout_still_reads)
{
    uint8_t hdr[RECORD_HEADER_SIZE_V1], body[128];
    struct record r = sample(), d;
    size_t n = sample_body(body);

    /* built by hand, as a v1 writer laid it out */
    memset(hdr, 0, sizeof hdr);
    hdr[0] = 'S';
    hdr[1] = 'R';
    hdr[2] = 1;
    hdr[3] = r.flags;
    put_le(hdr + 4, n, 4);
    put_le(hdr + 8, r.device, 4);
    hdr[12] = r.proto;
    hdr[13] = r.ctype;
    put_le(hdr + 14, r.topic_len, 2);
    put_le(hdr + 16, r.recv_ns, 8);
    put_le(hdr + 24, r.seq, 8);
    uint8_t all[32 + 128];
    memcpy(all, hdr, 32);
    memcpy(all + 32, body, n);
    put_le(hdr + 32, XXH3_64bits(all, 32 + n), 8);

    memset(&d, 0xaa, sizeof d);
    cr_assert_eq(record_decode(hdr, 1, &d), 0);
    cr_expect_eq(d.version, 1);
    cr_expect_eq(d.flags, r.flags);
    cr_expect_eq(d.length, n);
    cr_expect_eq(d.device, r.device);
    cr_expect_eq(d.topic_len, r.topic_len);
    cr_expect_eq(d.recv_ns, r.recv_ns);
    cr_expect_eq(d.seq, r.seq);
    cr_expect_eq(d.device_ts_ns, 0);
    cr_expect_eq(d.device_seq, 0);
    cr_expect_eq(record_verify(hdr, &d, seed, body), 0, "v1 has no key: the seed is ignored");
    body[0] ^= 1;
    cr_expect_eq(record_verify(hdr, &d, 0, body), -EBADMSG);
    body[0] ^= 1;
    /* a v1 encode writes exactly these bytes */
    uint8_t again[RECORD_HEADER_SIZE];
    r.version = 1;
    cr_expect_eq(record_encode(again, &r, seed, topic, payload, sizeof payload - 1),
                 RECORD_HEADER_SIZE_V1);
    cr_expect(memcmp(again, hdr, RECORD_HEADER_SIZE_V1) == 0);
    /* and a v2 segment's reader does not take it, nor a v1 reader a v2 record */
    cr_expect_eq(record_decode(hdr, 2, &d), -EBADMSG);
    r.version = 0;
    record_encode(again, &r, seed, topic, payload, sizeof payload - 1);
    cr_expect_eq(record_decode(again, 1, &d), -EBADMSG);
}

Test(record, empty_topic_and_payload)
{
    uint8_t hdr[RECORD_HEADER_SIZE];
    struct record in = sample(), out;

    in.topic_len = 0;
    record_encode(hdr, &in, seed, NULL, NULL, 0);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &out), 0);
    cr_expect_eq(out.length, 0);
    cr_expect_eq(out.topic_len, 0);
    cr_expect_eq(record_verify(hdr, &out, seed, NULL), 0);
    cr_expect_eq(le(hdr + 56, 8), XXH3_64bits_withSeed(hdr, 56, seed));

    /* topic only (an MQTT publish with an empty payload) */
    in.topic_len = sizeof topic - 1;
    record_encode(hdr, &in, seed, topic, NULL, 0);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &out), 0);
    cr_expect_eq(out.length, sizeof topic - 1);
    cr_expect_eq(record_verify(hdr, &out, seed, topic), 0);

    /* payload only (HTTP) */
    in.topic_len = 0;
    record_encode(hdr, &in, seed, NULL, payload, sizeof payload - 1);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &out), 0);
    cr_expect_eq(out.length, sizeof payload - 1);
    cr_expect_eq(record_verify(hdr, &out, seed, payload), 0);
}

/* A payload split differently between topic and body hashes the same bytes, but the
 * topic_len header field is covered, so the two records still differ. */
Test(record, topic_boundary_is_covered)
{
    uint8_t a[RECORD_HEADER_SIZE], b[RECORD_HEADER_SIZE], body[128];
    struct record r = sample();
    size_t n = sample_body(body);

    record_encode(a, &r, seed, body, body + r.topic_len, n - r.topic_len);
    r.topic_len--;
    record_encode(b, &r, seed, body, body + r.topic_len, n - r.topic_len);
    cr_expect_neq(le(a + 56, 8), le(b + 56, 8));
}

/* Format doc: the checksum detects a torn or flipped record. Every single-bit flip
 * of header or body must make decode or verify fail. A flipped length can claim up
 * to 8 MiB more body, so the body buffer is sized for the largest accepted record
 * and verify never reads outside it. */
Test(record, every_bit_flip_is_detected)
{
    uint8_t hdr[RECORD_HEADER_SIZE], bad[RECORD_HEADER_SIZE];
    uint8_t *body = calloc(1, RECORD_MAX_BODY);
    struct record r = sample(), d;
    size_t n;

    cr_assert_not_null(body);
    n = sample_body(body);
    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    cr_assert_eq(record_decode(hdr, RECORD_VERSION, &d), 0);
    cr_assert_eq(record_verify(hdr, &d, seed, body), 0);

    for (size_t bit = 0; bit < RECORD_HEADER_SIZE * 8; bit++) {
        memcpy(bad, hdr, sizeof bad);
        bad[bit / 8] ^= (uint8_t)(1u << bit % 8);
        int rc = record_decode(bad, RECORD_VERSION, &d);
        if (rc == 0) rc = record_verify(bad, &d, seed, body);
        cr_expect_eq(rc, -EBADMSG, "header bit %zu flip not detected", bit);
    }
    for (size_t bit = 0; bit < n * 8; bit++) {
        body[bit / 8] ^= (uint8_t)(1u << bit % 8);
        cr_assert_eq(record_decode(hdr, RECORD_VERSION, &d), 0);
        cr_expect_eq(record_verify(hdr, &d, seed, body), -EBADMSG, "body bit %zu flip not detected",
                     bit);
        body[bit / 8] ^= (uint8_t)(1u << bit % 8);
    }
    /* A torn tail: the body is cut short and the rest is zeros on disk. */
    memset(body + n - 1, 0, 1);
    cr_expect_eq(record_verify(hdr, &d, seed, body), -EBADMSG);
    free(body);
}

Test(record, bad_magic_rejected)
{
    uint8_t hdr[RECORD_HEADER_SIZE];
    struct record r = sample(), d;

    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    for (int i = 0; i < 2; i++) {
        uint8_t bad[RECORD_HEADER_SIZE];
        memcpy(bad, hdr, sizeof bad);
        bad[i] ^= 0x20; /* "sR" / "Sr" */
        cr_expect_eq(record_decode(bad, RECORD_VERSION, &d), -EBADMSG, "magic byte %d", i);
    }
    uint8_t zero[RECORD_HEADER_SIZE] = {0};
    cr_expect_eq(record_decode(zero, RECORD_VERSION, &d), -EBADMSG,
                 "an all-zero (preallocated) header");
    cr_expect_eq(record_decode(zero, 1, &d), -EBADMSG);
    uint8_t ones[RECORD_HEADER_SIZE];
    memset(ones, 0xff, sizeof ones);
    cr_expect_eq(record_decode(ones, RECORD_VERSION, &d), -EBADMSG);
}

Test(record, bad_version_rejected)
{
    uint8_t hdr[RECORD_HEADER_SIZE];
    struct record r = sample(), d;
    static const uint8_t versions[] = {0, 1, 2, 4, 0x81, 0xff};

    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    for (size_t i = 0; i < sizeof versions; i++) {
        hdr[2] = versions[i];
        cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG, "version %u", versions[i]);
    }
    /* nor does a reader accept a version no segment has */
    hdr[2] = 4;
    cr_expect_eq(record_decode(hdr, 4, &d), -EBADMSG);
}

Test(record, length_over_max_body_rejected)
{
    uint8_t hdr[RECORD_HEADER_SIZE];
    struct record r = sample(), d;

    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    put_le(hdr + 4, RECORD_MAX_BODY, 4);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), 0, "exactly RECORD_MAX_BODY is allowed");
    cr_expect_eq(d.length, RECORD_MAX_BODY);
    put_le(hdr + 4, RECORD_MAX_BODY + 1, 4);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
    put_le(hdr + 4, UINT32_MAX, 4);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
    put_le(hdr + 4, 1u << 31, 4);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
}

Test(record, topic_len_over_length_rejected)
{
    uint8_t hdr[RECORD_HEADER_SIZE];
    struct record r = sample(), d;
    uint32_t n = (uint32_t)(r.topic_len + sizeof payload - 1);

    record_encode(hdr, &r, seed, topic, payload, sizeof payload - 1);
    hdr[14] = (uint8_t)n;
    hdr[15] = (uint8_t)(n >> 8);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), 0,
                 "topic_len == length: all topic, no payload");
    hdr[14] = (uint8_t)(n + 1);
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
    hdr[14] = hdr[15] = 0xff;
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
    put_le(hdr + 4, 0, 4);
    hdr[14] = 1;
    hdr[15] = 0;
    cr_expect_eq(record_decode(hdr, RECORD_VERSION, &d), -EBADMSG);
}

/* ---------------------------------------------------------------- segment header */

static const struct segment_header seg_sample = {
    .worker = 3,
    .org = 0x01020304u,
    .base_seq = 0x1122334455667788ull,
    .created_ns = 0x99aabbccddeeff00ull,
    .seed = 0x0123456789abcdefull,
};

Test(segment, round_trip_and_layout)
{
    uint8_t b[SEGMENT_HEADER_SIZE + 8];
    struct segment_header out;

    memset(b, 0xee, sizeof b);
    cr_expect_eq(segment_header_encode(b, &seg_sample), SEGMENT_HEADER_SIZE);
    cr_expect_eq(b[SEGMENT_HEADER_SIZE], 0xee, "nothing written past the header");
    cr_expect(memcmp(b, "SLSG", 4) == 0, "magic bytes on disk spell SLSG");
    cr_expect_eq(le(b + 4, 2), 3);
    cr_expect_eq(le(b + 6, 2), 48);
    cr_expect_eq(le(b + 8, 4), seg_sample.worker);
    cr_expect_eq(le(b + 12, 4), seg_sample.org);
    cr_expect_eq(le(b + 16, 8), seg_sample.base_seq);
    cr_expect_eq(le(b + 24, 8), seg_sample.created_ns);
    cr_expect_eq(le(b + 32, 8), seg_sample.seed);
    cr_expect_eq(le(b + 40, 8), XXH3_64bits(b, 40));

    memset(&out, 0, sizeof out);
    cr_assert_eq(segment_header_decode(b, SEGMENT_HEADER_SIZE, &out), 0);
    cr_expect_eq(out.version, 3);
    cr_expect_eq(out.worker, seg_sample.worker);
    cr_expect_eq(out.org, seg_sample.org);
    cr_expect_eq(out.base_seq, seg_sample.base_seq);
    cr_expect_eq(out.created_ns, seg_sample.created_ns);
    cr_expect_eq(out.seed, seg_sample.seed);
    cr_expect_eq(segment_header_size(&out), SEGMENT_HEADER_SIZE);
}

/* The v2 header has a checksum of its own: a flipped seed would otherwise fail
 * every record after it, each as if damaged. Every bit flip is caught. */
Test(segment, every_bit_flip_is_detected)
{
    uint8_t good[SEGMENT_HEADER_SIZE], b[SEGMENT_HEADER_SIZE];
    struct segment_header out;

    segment_header_encode(good, &seg_sample);
    for (size_t bit = 0; bit < SEGMENT_HEADER_SIZE * 8; bit++) {
        memcpy(b, good, sizeof b);
        b[bit / 8] ^= (uint8_t)(1u << bit % 8);
        cr_expect_eq(segment_header_decode(b, sizeof b, &out), -EBADMSG, "bit %zu", bit);
    }
    /* cut short: a header being written */
    for (size_t n = 0; n < SEGMENT_HEADER_SIZE; n++)
        cr_expect_eq(segment_header_decode(good, n, &out), -EBADMSG, "%zu bytes", n);
    /* a seed of 0 is never written (it is the unkeyed hash) */
    struct segment_header z = seg_sample;
    z.seed = 0;
    segment_header_encode(b, &z);
    cr_expect_eq(segment_header_decode(b, sizeof b, &out), -EBADMSG);
}

/* v3's segment header is v2's with version 3; a v2 one still reads and
 * encodes byte for byte as before. */
Test(segment, v2_header_still_reads)
{
    uint8_t b[SEGMENT_HEADER_SIZE], v3[SEGMENT_HEADER_SIZE];
    struct segment_header out, v2 = seg_sample;

    v2.version = 2;
    cr_expect_eq(segment_header_encode(b, &v2), SEGMENT_HEADER_SIZE);
    cr_expect_eq(le(b + 4, 2), 2);
    cr_expect_eq(le(b + 6, 2), 48);
    cr_expect_eq(le(b + 32, 8), v2.seed);
    cr_expect_eq(le(b + 40, 8), XXH3_64bits(b, 40));
    cr_assert_eq(segment_header_decode(b, sizeof b, &out), 0);
    cr_expect_eq(out.version, 2);
    cr_expect_eq(out.seed, v2.seed);
    cr_expect_eq(segment_header_size(&out), SEGMENT_HEADER_SIZE);
    segment_header_encode(v3, &seg_sample);
    cr_expect(memcmp(b + 6, v3 + 6, 34) == 0, "v2 and v3 differ in version and checksum only");
    cr_expect_neq(le(b + 40, 8), le(v3 + 40, 8));
}

Test(segment, v1_header_still_reads)
{
    uint8_t b[SEGMENT_HEADER_SIZE];
    struct segment_header out, v1 = seg_sample;

    v1.version = 1;
    memset(b, 0xee, sizeof b);
    cr_expect_eq(segment_header_encode(b, &v1), SEGMENT_HEADER_SIZE_V1);
    cr_expect_eq(b[SEGMENT_HEADER_SIZE_V1], 0xee);
    cr_expect_eq(le(b + 4, 2), 1);
    cr_expect_eq(le(b + 6, 2), 32);
    cr_expect_eq(le(b + 16, 8), v1.base_seq);
    /* a v1 file may be just its header: 32 bytes are enough */
    cr_assert_eq(segment_header_decode(b, SEGMENT_HEADER_SIZE_V1, &out), 0);
    cr_expect_eq(out.version, 1);
    cr_expect_eq(out.seed, 0, "v1 has no seed");
    cr_expect_eq(out.base_seq, v1.base_seq);
    cr_expect_eq(out.created_ns, v1.created_ns);
    cr_expect_eq(segment_header_size(&out), SEGMENT_HEADER_SIZE_V1);
    cr_expect_eq(segment_header_decode(b, SEGMENT_HEADER_SIZE_V1 - 1, &out), -EBADMSG);
}

Test(segment, rejects_bad_magic_version_and_size)
{
    uint8_t good[SEGMENT_HEADER_SIZE], b[SEGMENT_HEADER_SIZE];
    struct segment_header out;

    segment_header_encode(good, &seg_sample);
    for (int i = 0; i < 4; i++) {
        memcpy(b, good, sizeof b);
        b[i] ^= 0x01;
        cr_expect_eq(segment_header_decode(b, sizeof b, &out), -EBADMSG, "magic byte %d", i);
    }
    static const uint16_t versions[] = {0, 1, 2, 4, 0x100, 0xffff};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        memcpy(b, good, sizeof b);
        b[4] = (uint8_t)versions[i];
        b[5] = (uint8_t)(versions[i] >> 8);
        cr_expect_eq(segment_header_decode(b, sizeof b, &out), -EBADMSG, "version %u", versions[i]);
    }
    static const uint16_t sizes[] = {0, 31, 32, 33, 47, 49, 64, 0x2000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        memcpy(b, good, sizeof b);
        b[6] = (uint8_t)sizes[i];
        b[7] = (uint8_t)(sizes[i] >> 8);
        cr_expect_eq(segment_header_decode(b, sizeof b, &out), -EBADMSG, "header size %u",
                     sizes[i]);
    }
    uint8_t zero[SEGMENT_HEADER_SIZE] = {0};
    cr_expect_eq(segment_header_decode(zero, sizeof zero, &out), -EBADMSG);
    /* A record header where a segment header is expected. */
    uint8_t rec[RECORD_HEADER_SIZE];
    struct record r = sample();
    record_encode(rec, &r, seed, topic, payload, sizeof payload - 1);
    cr_expect_eq(segment_header_decode(rec, sizeof rec, &out), -EBADMSG);
}

/* The magics differ in their first bytes, so a reader pointed at the wrong offset
 * never mistakes one header for the other. */
Test(segment, record_decode_rejects_segment_header)
{
    uint8_t b[RECORD_HEADER_SIZE] = {0};
    struct record d;

    segment_header_encode(b, &seg_sample);
    cr_expect_eq(record_decode(b, RECORD_VERSION, &d), -EBADMSG);
    cr_expect_eq(record_decode(b, 1, &d), -EBADMSG);
}

Test(record, seed_new_is_random_and_never_zero)
{
    uint64_t a = 0, b = 0;
    cr_assert_eq(record_seed_new(&a), 0);
    cr_assert_eq(record_seed_new(&b), 0);
    cr_expect_neq(a, 0);
    cr_expect_neq(b, 0);
    cr_expect_neq(a, b, "two segments get different seeds");
}

Test(record, proto_names)
{
    cr_expect_str_eq(record_proto_name(RECORD_PROTO_HTTP), "http");
    cr_expect_str_eq(record_proto_name(RECORD_PROTO_HTTPS), "https");
    cr_expect_str_eq(record_proto_name(RECORD_PROTO_MQTT), "mqtt");
    cr_expect_str_eq(record_proto_name(RECORD_PROTO_MQTTS), "mqtts");
    cr_expect_str_eq(record_proto_name(RECORD_PROTO_FRAME), "frame");
    cr_expect_str_eq(record_proto_name(RECORD_PROTO_UDP), "udp");
    cr_expect_str_eq(record_proto_name(0), "?");
    cr_expect_str_eq(record_proto_name(7), "?");
    cr_expect_str_eq(record_proto_name(255), "?");
    cr_expect_str_eq(record_proto_name(UINT_MAX), "?");
}
