/* protocols/frame.h — the sluice frame protocol, version 1 (docs/frame-protocol.md):
 * parser and encoder, both sides.
 *
 * Pure functions: no I/O, no allocation, no global state, no crypto (the
 * handshake's HMACs are the session's). Parsed bodies are (pointer, length)
 * slices into the caller's buffer.
 *
 * Use on a TCP stream:
 *   1. frame_peek() on the bytes so far: FRAME_INCOMPLETE means read more; 0
 *      gives the type and the whole frame length, so a frame above the limit is
 *      refused (ERROR 0x04) from its header, before it is buffered.
 *   2. frame_parse() once the whole frame is there.
 * Returns: >= 0 success, FRAME_INCOMPLETE, or a negated error code (FRAME_E_*),
 * the code an ERROR frame carries.
 */
#ifndef SLUICE_PROTOCOLS_FRAME_H
#define SLUICE_PROTOCOLS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_VERSION 1u

#define FRAME_INCOMPLETE (-1000)
#define FRAME_E_VERSION  (-0x01)
#define FRAME_E_AUTH     (-0x02)
#define FRAME_E_QUOTA    (-0x03)
#define FRAME_E_TOO_BIG  (-0x04)
#define FRAME_E_STORAGE  (-0x05)
#define FRAME_E_TAKEN    (-0x06)
#define FRAME_E_PROTOCOL (-0x07)
#define FRAME_E_SHUTDOWN (-0x08)
#define FRAME_E_TIMEOUT  (-0x09)

enum frame_type {
    FRAME_HELLO = 0x01,
    FRAME_CHALLENGE = 0x02,
    FRAME_PROOF = 0x03,
    FRAME_WELCOME = 0x04,
    FRAME_READING = 0x10,
    FRAME_READING_TIMED = 0x11,
    FRAME_BATCH = 0x12,
    FRAME_BATCH_TIMED = 0x13,
    FRAME_TIME = 0x14,
    FRAME_SEQ = 0x15, /* UDP: the sequence number of the datagram's next reading */
    FRAME_ACK = 0x20,
    FRAME_PING = 0x30,
    FRAME_PONG = 0x31,
    FRAME_BYE = 0x40,
    FRAME_ERROR = 0x7F,
};

#define FRAME_TOKEN_ID_LEN 8
#define FRAME_NONCE_LEN    16
#define FRAME_MAC_LEN      32
#define FRAME_TICKET_MAX   96
/* HELLO's flags (§2): a ticket follows (§5); the handshake, over TCP, makes a
 * UDP session (§6) instead of a TCP one. */
#define FRAME_HELLO_TICKET 0x01u
#define FRAME_HELLO_UDP    0x02u
#define FRAME_MESSAGE_MAX  200
#define FRAME_VARINT_MAX   10

struct frame_slice {
    const uint8_t *p;
    size_t n;
};

struct frame {
    uint8_t type;
    struct frame_slice body; /* the whole body */
    size_t total;            /* header + body bytes */
    union {
        struct {
            uint8_t version, flags;
            const uint8_t *token_id;     /* FRAME_TOKEN_ID_LEN bytes */
            const uint8_t *client_nonce; /* FRAME_NONCE_LEN bytes */
            uint64_t next_seq;
            struct frame_slice ticket; /* flags FRAME_HELLO_TICKET */
        } hello;
        struct {
            const uint8_t *server_nonce;
            uint64_t durable_seq;
        } challenge;
        struct {
            const uint8_t *proof; /* FRAME_MAC_LEN bytes */
        } proof;
        struct {
            const uint8_t *server_signature;
            uint64_t durable_seq, max_frame, window;
            struct frame_slice ticket;
        } welcome;
        struct {
            uint64_t dt_ms; /* READING_TIMED */
            struct frame_slice payload;
        } reading;
        struct {
            uint64_t count;
            struct frame_slice items; /* walked with frame_batch_next */
        } batch;
        struct {
            uint64_t value; /* TIME: t0_ms; SEQ: next reading's number; ACK: durable_seq */
        } num;
        struct {
            uint8_t code;
            uint64_t seq;
            struct frame_slice message;
        } error;
    } u;
};

/* Decodes a minimal varint at p[0..n): the bytes it took (1..10), 0 when
 * incomplete, -1 when overlong or not minimal. */
int frame_varint(const uint8_t *p, size_t n, uint64_t *out);
/* Encodes v at out (FRAME_VARINT_MAX bytes of room); returns its length. */
size_t frame_put_varint(uint8_t *out, uint64_t v);

/* The frame starting at p: *type and *total (header + body) once the header
 * is complete. Returns 0, FRAME_INCOMPLETE, or FRAME_E_PROTOCOL (a bad
 * varint, an unknown type). */
int frame_peek(const uint8_t *p, size_t n, uint8_t *type, size_t *total);

/* Parses the whole frame at p[0..n) (n >= its total). Returns 0 or a FRAME_E_*. */
int frame_parse(const uint8_t *p, size_t n, struct frame *out);

/* Walks a parsed BATCH / BATCH_TIMED: *off starts at 0. Returns 1 with the
 * next reading (and its dt_ms when timed, else 0), 0 at the end. (frame_parse
 * has checked that the items add up to count and fill the body exactly.) */
int frame_batch_next(const struct frame *f, size_t *off, uint64_t *dt_ms,
                     struct frame_slice *payload);

/* The device's clock for timed readings: TIME sets it, each timed reading
 * moves it on by its dt_ms. Starts zeroed (no TIME yet). */
struct frame_clock {
    uint64_t t_ms;
    int set;
};
/* Calls fn(ctx, dev_ms, payload) for each reading of a parsed READING,
 * READING_TIMED, BATCH or BATCH_TIMED frame, in order; dev_ms is the
 * device's time of a timed reading, 0 for an untimed one. Returns 0, fn's
 * first non-zero return (the walk stops there), or FRAME_E_PROTOCOL for a
 * timed reading before any TIME. */
typedef int (*frame_reading_fn)(void *ctx, uint64_t dev_ms, const struct frame_slice *payload);
int frame_readings(const struct frame *f, struct frame_clock *clk, frame_reading_fn fn, void *ctx);

/* Encoders: write one frame at out (cap bytes); return its length, 0 when it
 * does not fit. */
size_t frame_encode_hello(uint8_t *out, size_t cap, const uint8_t token_id[FRAME_TOKEN_ID_LEN],
                          const uint8_t nonce[FRAME_NONCE_LEN], uint64_t next_seq,
                          const uint8_t *ticket, size_t ticket_len);
/* The same with flags besides the ticket's (FRAME_HELLO_UDP); the ticket bit
 * follows ticket_len whatever flags says. */
size_t frame_encode_hello_flags(uint8_t *out, size_t cap, uint8_t flags,
                                const uint8_t token_id[FRAME_TOKEN_ID_LEN],
                                const uint8_t nonce[FRAME_NONCE_LEN], uint64_t next_seq,
                                const uint8_t *ticket, size_t ticket_len);
size_t frame_encode_challenge(uint8_t *out, size_t cap, const uint8_t nonce[FRAME_NONCE_LEN],
                              uint64_t durable_seq);
size_t frame_encode_proof(uint8_t *out, size_t cap, const uint8_t proof[FRAME_MAC_LEN]);
size_t frame_encode_welcome(uint8_t *out, size_t cap, const uint8_t signature[FRAME_MAC_LEN],
                            uint64_t durable_seq, uint64_t max_frame, uint64_t window,
                            const uint8_t *ticket, size_t ticket_len);
size_t frame_encode_reading(uint8_t *out, size_t cap, const void *payload, size_t n);
size_t frame_encode_num(uint8_t *out, size_t cap, uint8_t type,
                        uint64_t value);                           /* ACK, TIME, SEQ */
size_t frame_encode_empty(uint8_t *out, size_t cap, uint8_t type); /* PING, PONG, BYE */
size_t frame_encode_error(uint8_t *out, size_t cap, uint8_t code, uint64_t seq, const char *msg);

#endif
