/* tests/unit/protocols/frame_test.c — the frame protocol's parser and encoders
 * (protocols/frame.c) against the test vectors of docs/frame-protocol.md §9. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/frame.h"

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; *h; h++) {
        if (*h == ' ') continue;
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h++;
    }
    return n;
}

static const char HELLO[] = "01 1b 01 00 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01";
static const char CHALLENGE[] = "02 11 101112131415161718191a1b1c1d1e1f 00";
static const char PROOF[] =
    "03 20 bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc";
static const char WELCOME[] =
    "04 27 1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f "
    "00 808004 8020 00";
static const char READING[] = "10 0a 7b2274223a32312e357d";
static const char TIMED[] = "11 0c fa01 7b2274223a32312e357d";
static const char BATCH[] =
    "12 22 03 0a 7b2274223a32312e357d 0a 7b2274223a32312e367d 0a 7b2274223a32312e347d";
static const char ACK[] = "20 02 e807";
static const char TIME[] = "14 06 80ac9adea334";
static const char BATCH_TIMED[] =
    "13 1a 02 00 0a 7b2274223a32312e357d e807 0a 7b2274223a32312e367d";
static const char SEQ[] = "15 01 01";
static const char ERROR[] = "7f 16 02 00 746f6b656e206e6f74207265636f676e69736564";

struct seen_readings {
    int n;
    uint64_t ms[8];
};

static int collect(void *ctx, uint64_t dev_ms, const struct frame_slice *pl)
{
    struct seen_readings *s = ctx;
    cr_assert_eq(pl->n, 10);
    if (s->n < 8) s->ms[s->n] = dev_ms;
    s->n++;
    return 0;
}

/* Parses a vector in an exactly sized heap copy (ASan sees any over-read). */
static int parse_hex(const char *hex, struct frame *f, uint8_t **keep, size_t *n)
{
    uint8_t tmp[512];
    *n = unhex(hex, tmp);
    *keep = malloc(*n);
    memcpy(*keep, tmp, *n);
    return frame_parse(*keep, *n, f);
}

Test(frame, vectors_parse)
{
    struct frame f;
    uint8_t *b;
    size_t n;
    cr_assert_eq(parse_hex(HELLO, &f, &b, &n), 0);
    cr_assert_eq(f.type, FRAME_HELLO);
    cr_assert_eq(f.total, 29);
    cr_assert_eq(f.u.hello.version, 1);
    cr_assert_eq(f.u.hello.next_seq, 1);
    cr_assert_eq(f.u.hello.token_id[0], 0x43);
    cr_assert_eq(f.u.hello.client_nonce[15], 0x0f);
    free(b);
    cr_assert_eq(parse_hex(CHALLENGE, &f, &b, &n), 0);
    cr_assert_eq(f.u.challenge.durable_seq, 0);
    cr_assert_eq(f.u.challenge.server_nonce[0], 0x10);
    free(b);
    cr_assert_eq(parse_hex(PROOF, &f, &b, &n), 0);
    cr_assert_eq(f.u.proof.proof[0], 0xbb);
    free(b);
    cr_assert_eq(parse_hex(WELCOME, &f, &b, &n), 0);
    cr_assert_eq(f.total, 41);
    cr_assert_eq(f.u.welcome.server_signature[0], 0x1a);
    cr_assert(f.u.welcome.durable_seq == 0 && f.u.welcome.max_frame == 65536 &&
              f.u.welcome.window == 4096 && f.u.welcome.ticket.n == 0);
    free(b);
    cr_assert_eq(parse_hex(READING, &f, &b, &n), 0);
    cr_assert_eq(f.total, 12);
    cr_assert(f.u.reading.payload.n == 10 && !memcmp(f.u.reading.payload.p, "{\"t\":21.5}", 10));
    free(b);
    cr_assert_eq(parse_hex(TIMED, &f, &b, &n), 0);
    cr_assert_eq(f.u.reading.dt_ms, 250);
    cr_assert_eq(f.u.reading.payload.n, 10);
    free(b);
    cr_assert_eq(parse_hex(BATCH, &f, &b, &n), 0);
    cr_assert_eq(f.u.batch.count, 3);
    size_t off = 0, seen = 0;
    uint64_t dt;
    struct frame_slice pl;
    const char *want[] = {"{\"t\":21.5}", "{\"t\":21.6}", "{\"t\":21.4}"};
    while (frame_batch_next(&f, &off, &dt, &pl) == 1) {
        cr_assert(pl.n == 10 && !memcmp(pl.p, want[seen], 10));
        seen++;
    }
    cr_assert_eq(seen, 3);
    free(b);
    cr_assert_eq(parse_hex(ACK, &f, &b, &n), 0);
    cr_assert_eq(f.u.num.value, 1000);
    free(b);
    cr_assert_eq(parse_hex(TIME, &f, &b, &n), 0);
    cr_assert(f.type == FRAME_TIME && f.u.num.value == 1796299200000ull);
    free(b);
    cr_assert_eq(parse_hex(SEQ, &f, &b, &n), 0);
    cr_assert(f.type == FRAME_SEQ && f.u.num.value == 1);
    free(b);
    /* timed readings get the device's clock: TIME's t0, then + dt each */
    cr_assert_eq(parse_hex(BATCH_TIMED, &f, &b, &n), 0);
    struct frame_clock clk = {0};
    struct seen_readings sr = {0};
    cr_assert_eq(frame_readings(&f, &clk, collect, &sr), FRAME_E_PROTOCOL, "timed before TIME");
    clk = (struct frame_clock){.t_ms = 1796299200000ull, .set = 1};
    sr.n = 0;
    cr_assert_eq(frame_readings(&f, &clk, collect, &sr), 0);
    cr_assert(sr.n == 2 && sr.ms[0] == 1796299200000ull && sr.ms[1] == 1796299201000ull);
    cr_assert_eq(clk.t_ms, 1796299201000ull);
    free(b);
    cr_assert_eq(parse_hex(ERROR, &f, &b, &n), 0);
    cr_assert_eq(f.u.error.code, 2);
    cr_assert(f.u.error.message.n == 20 &&
              !memcmp(f.u.error.message.p, "token not recognised", 20));
    free(b);
}

static void same(const char *hex, const uint8_t *got, size_t n)
{
    uint8_t want[512];
    size_t wn = unhex(hex, want);
    cr_assert_eq(n, wn, "length %zu, want %zu for %s", n, wn, hex);
    cr_assert(!memcmp(got, want, n), "bytes differ for %s", hex);
}

Test(frame, encoders_reproduce_the_vectors)
{
    uint8_t out[512], id[8], nonce[16], sn[16], proof[32];
    unhex("4347b7175225e316", id);
    for (int i = 0; i < 16; i++) {
        nonce[i] = (uint8_t)i;
        sn[i] = (uint8_t)(0x10 + i);
    }
    unhex("bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc", proof);
    same(HELLO, out, frame_encode_hello(out, sizeof out, id, nonce, 1, NULL, 0));
    same(CHALLENGE, out, frame_encode_challenge(out, sizeof out, sn, 0));
    same(PROOF, out, frame_encode_proof(out, sizeof out, proof));
    uint8_t ssig[32];
    unhex("1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f", ssig);
    same(WELCOME, out, frame_encode_welcome(out, sizeof out, ssig, 0, 65536, 4096, NULL, 0));
    same(READING, out, frame_encode_reading(out, sizeof out, "{\"t\":21.5}", 10));
    same(ACK, out, frame_encode_num(out, sizeof out, FRAME_ACK, 1000));
    same(TIME, out, frame_encode_num(out, sizeof out, FRAME_TIME, 1796299200000ull));
    same(SEQ, out, frame_encode_num(out, sizeof out, FRAME_SEQ, 1));
    same("30 00", out, frame_encode_empty(out, sizeof out, FRAME_PING));
    same("31 00", out, frame_encode_empty(out, sizeof out, FRAME_PONG));
    same("40 00", out, frame_encode_empty(out, sizeof out, FRAME_BYE));
    same(ERROR, out, frame_encode_error(out, sizeof out, 2, 0, "token not recognised"));
    same("01 1b 01 02 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01", out,
         frame_encode_hello_flags(out, sizeof out, FRAME_HELLO_UDP, id, nonce, 1, NULL, 0));
    /* the ticket bit follows the ticket, whatever flags says */
    same(HELLO, out,
         frame_encode_hello_flags(out, sizeof out, FRAME_HELLO_TICKET, id, nonce, 1, NULL, 0));
    /* too small a buffer: 0, never a partial frame */
    cr_assert_eq(frame_encode_reading(out, 11, "{\"t\":21.5}", 10), 0);
    cr_assert_eq(frame_encode_hello(out, 28, id, nonce, 1, NULL, 0), 0);
    /* WELCOME round trip */
    uint8_t sig[32] = {1, 2, 3}, tk[5] = {9, 9, 9, 9, 9};
    size_t wn = frame_encode_welcome(out, sizeof out, sig, 7, 65536, 1024, tk, sizeof tk);
    struct frame f;
    cr_assert_eq(frame_parse(out, wn, &f), 0);
    cr_assert(f.u.welcome.durable_seq == 7 && f.u.welcome.max_frame == 65536 &&
              f.u.welcome.window == 1024);
    cr_assert(f.u.welcome.ticket.n == 5 && f.u.welcome.server_signature[2] == 3);
}

Test(frame, every_proper_prefix_is_incomplete)
{
    const char *all[] = {HELLO, CHALLENGE,   PROOF, WELCOME, READING, TIMED,
                         BATCH, BATCH_TIMED, TIME,  SEQ,     ACK,     ERROR};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        uint8_t b[512];
        size_t n = unhex(all[i], b);
        for (size_t k = 0; k < n; k++) {
            uint8_t type;
            size_t total;
            int rc = frame_peek(b, k, &type, &total);
            cr_assert(rc == FRAME_INCOMPLETE || (rc == 0 && total > k), "%s prefix %zu", all[i], k);
        }
    }
}

Test(frame, varints_minimal_and_bounded)
{
    uint64_t v;
    cr_assert_eq(frame_varint((const uint8_t *)"\x00", 1, &v), 1);
    cr_assert_eq(v, 0);
    cr_assert_eq(frame_varint((const uint8_t *)"\xe8\x07", 2, &v), 2);
    cr_assert_eq(v, 1000);
    cr_assert_eq(frame_varint((const uint8_t *)"\x80\x00", 2, &v), -1); /* not minimal */
    cr_assert_eq(frame_varint((const uint8_t *)"\x80", 1, &v), 0);      /* incomplete */
    uint8_t max[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    cr_assert_eq(frame_varint(max, 10, &v), 10);
    cr_assert_eq(v, UINT64_MAX);
    max[9] = 0x02; /* past 64 bits */
    cr_assert_eq(frame_varint(max, 10, &v), -1);
    uint8_t eleven[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
    cr_assert_eq(frame_varint(eleven, 11, &v), -1);
    uint8_t out[10];
    cr_assert_eq(frame_put_varint(out, UINT64_MAX), 10);
}

Test(frame, malformed_frames_refused)
{
    struct frame f;
    uint8_t *b;
    size_t n;
    /* an unknown type, from its first byte */
    uint8_t t;
    size_t total;
    cr_assert_eq(frame_peek((const uint8_t *)"\x55\x00", 2, &t, &total), FRAME_E_PROTOCOL);
    /* a length claiming 2^62 bytes is known from the header: the session refuses it (too big) */
    uint8_t huge[10] = {0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40};
    cr_assert_eq(frame_peek(huge, 10, &t, &total), 0);
    cr_assert_gt(total, (size_t)1 << 40);
    /* another version */
    cr_assert_eq(
        parse_hex("01 1b 02 00 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01", &f, &b, &n),
        FRAME_E_VERSION);
    free(b);
    /* §6 over TCP: HELLO flags bit 1 asks for a UDP session; no ticket follows */
    cr_assert_eq(
        parse_hex("01 1b 01 02 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01", &f, &b, &n),
        0);
    cr_assert(f.u.hello.flags == FRAME_HELLO_UDP && f.u.hello.ticket.n == 0 &&
              f.u.hello.next_seq == 1);
    free(b);
    /* unknown HELLO flags */
    cr_assert_eq(
        parse_hex("01 1b 01 04 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01", &f, &b, &n),
        FRAME_E_PROTOCOL);
    free(b);
    /* bytes left over in a CHALLENGE, a short PROOF */
    cr_assert_eq(parse_hex("02 12 101112131415161718191a1b1c1d1e1f 00 00", &f, &b, &n),
                 FRAME_E_PROTOCOL);
    free(b);
    cr_assert_eq(parse_hex("03 02 bba8", &f, &b, &n), FRAME_E_PROTOCOL);
    free(b);
    /* a BATCH whose count does not match its items, one with count 0, an item overrunning */
    cr_assert_eq(parse_hex("12 0d 02 0a 7b2274223a32312e357d", &f, &b, &n), FRAME_E_PROTOCOL);
    free(b);
    cr_assert_eq(parse_hex("12 01 00", &f, &b, &n), FRAME_E_PROTOCOL);
    free(b);
    cr_assert_eq(parse_hex("12 04 01 0a 7b22", &f, &b, &n), FRAME_E_PROTOCOL);
    free(b);
    /* an ACK with a non-minimal varint */
    cr_assert_eq(parse_hex("20 02 8000", &f, &b, &n), FRAME_E_PROTOCOL);
    free(b);
    /* an empty-bodied frame with a body */
    cr_assert_eq(parse_hex("30 01 00", &f, &b, &n), FRAME_E_PROTOCOL);
    free(b);
}
