/* protocols/frame.c — the frame protocol's parser and encoder; see frame.h and
 * docs/frame-protocol.md. */
#include "protocols/frame.h"

#include <stdbool.h>
#include <string.h>

int frame_varint(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < FRAME_VARINT_MAX; i++) {
        if (i == n) return 0;
        uint8_t b = p[i];
        if (i == 9 && b > 1) return -1; /* past 64 bits */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0) return -1; /* not minimal: a trailing zero group */
            *out = v;
            return (int)i + 1;
        }
    }
    return -1;
}

size_t frame_put_varint(uint8_t *out, uint64_t v)
{
    size_t i = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[i++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return i;
}

static int known(uint8_t t)
{
    switch (t) {
    case FRAME_HELLO:
    case FRAME_CHALLENGE:
    case FRAME_PROOF:
    case FRAME_WELCOME:
    case FRAME_READING:
    case FRAME_READING_TIMED:
    case FRAME_BATCH:
    case FRAME_BATCH_TIMED:
    case FRAME_TIME:
    case FRAME_SEQ:
    case FRAME_ACK:
    case FRAME_PING:
    case FRAME_PONG:
    case FRAME_BYE:
    case FRAME_ERROR:
        return 1;
    default:
        return 0;
    }
}

int frame_peek(const uint8_t *p, size_t n, uint8_t *type, size_t *total)
{
    if (n < 1) return FRAME_INCOMPLETE;
    if (!known(p[0])) return FRAME_E_PROTOCOL;
    uint64_t len;
    int k = frame_varint(p + 1, n - 1, &len);
    if (k == 0) return FRAME_INCOMPLETE;
    if (k < 0 || len > SIZE_MAX / 2) return FRAME_E_PROTOCOL;
    *type = p[0];
    *total = 1 + (size_t)k + (size_t)len;
    return 0;
}

/* A cursor over a body: every read checks what is left. */
struct rd {
    const uint8_t *p;
    size_t n, off;
    int bad;
};

static const uint8_t *take(struct rd *r, size_t k)
{
    if (r->bad || r->n - r->off < k) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *q = r->p + r->off;
    r->off += k;
    return q;
}

static uint64_t num(struct rd *r)
{
    uint64_t v = 0;
    if (r->bad) return 0;
    int k = frame_varint(r->p + r->off, r->n - r->off, &v);
    if (k <= 0) {
        r->bad = 1;
        return 0;
    }
    r->off += (size_t)k;
    return v;
}

static struct frame_slice rest(struct rd *r)
{
    struct frame_slice s = {r->bad ? NULL : r->p + r->off, r->bad ? 0 : r->n - r->off};
    r->off = r->n;
    return s;
}

static struct frame_slice counted(struct rd *r, size_t max)
{
    uint64_t len = num(r);
    if (len > max) r->bad = 1;
    const uint8_t *q = r->bad ? NULL : take(r, (size_t)len);
    return (struct frame_slice){q, q ? (size_t)len : 0};
}

int frame_parse(const uint8_t *p, size_t n, struct frame *f)
{
    uint8_t type;
    size_t total;
    memset(f, 0, sizeof *f);
    int rc = frame_peek(p, n, &type, &total);
    if (rc == FRAME_INCOMPLETE || (rc == 0 && total > n)) return FRAME_E_PROTOCOL;
    if (rc) return rc;
    uint64_t blen = 0; /* frame_peek decoded it already: k > 0 */
    int k = frame_varint(p + 1, n - 1, &blen);
    f->type = type;
    f->total = total;
    f->body = (struct frame_slice){p + 1 + k, (size_t)blen};
    struct rd r = {f->body.p, f->body.n, 0, 0};
    switch (type) {
    case FRAME_HELLO: {
        const uint8_t *v = take(&r, 2);
        if (v) {
            f->u.hello.version = v[0];
            f->u.hello.flags = v[1];
            /* another version may lay its HELLO out otherwise: say so first */
            if (v[0] != FRAME_VERSION) return FRAME_E_VERSION;
        }
        f->u.hello.token_id = take(&r, FRAME_TOKEN_ID_LEN);
        f->u.hello.client_nonce = take(&r, FRAME_NONCE_LEN);
        f->u.hello.next_seq = num(&r);
        if (!r.bad && (f->u.hello.flags & FRAME_HELLO_TICKET))
            f->u.hello.ticket = counted(&r, FRAME_TICKET_MAX);
        if (!r.bad && (f->u.hello.flags & ~(FRAME_HELLO_TICKET | FRAME_HELLO_UDP)))
            r.bad = 1; /* unknown flags */
        break;
    }
    case FRAME_CHALLENGE:
        f->u.challenge.server_nonce = take(&r, FRAME_NONCE_LEN);
        f->u.challenge.durable_seq = num(&r);
        break;
    case FRAME_PROOF:
        f->u.proof.proof = take(&r, FRAME_MAC_LEN);
        break;
    case FRAME_WELCOME:
        f->u.welcome.server_signature = take(&r, FRAME_MAC_LEN);
        f->u.welcome.durable_seq = num(&r);
        f->u.welcome.max_frame = num(&r);
        f->u.welcome.window = num(&r);
        f->u.welcome.ticket = counted(&r, FRAME_TICKET_MAX);
        break;
    case FRAME_READING:
        f->u.reading.payload = rest(&r);
        break;
    case FRAME_READING_TIMED:
        f->u.reading.dt_ms = num(&r);
        f->u.reading.payload = rest(&r);
        break;
    case FRAME_BATCH:
    case FRAME_BATCH_TIMED: {
        f->u.batch.count = num(&r);
        f->u.batch.items = rest(&r);
        if (!r.bad && f->u.batch.count == 0) r.bad = 1;
        /* the items must add up exactly: walk them once here */
        size_t off = 0;
        uint64_t dt, seen = 0;
        struct frame_slice pl;
        int got = 0;
        while (!r.bad && (got = frame_batch_next(f, &off, &dt, &pl)) == 1)
            seen++;
        if (!r.bad && (got < 0 || seen != f->u.batch.count)) r.bad = 1;
        break;
    }
    case FRAME_TIME:
    case FRAME_SEQ:
    case FRAME_ACK:
        f->u.num.value = num(&r);
        break;
    case FRAME_PING:
    case FRAME_PONG:
    case FRAME_BYE:
        break;
    case FRAME_ERROR: {
        const uint8_t *c = take(&r, 1);
        if (c) f->u.error.code = c[0];
        f->u.error.seq = num(&r);
        f->u.error.message = rest(&r);
        if (f->u.error.message.n > FRAME_MESSAGE_MAX) r.bad = 1;
        break;
    }
    }
    if (r.bad || r.off != r.n) return FRAME_E_PROTOCOL; /* short, or bytes left over */
    return 0;
}

int frame_batch_next(const struct frame *f, size_t *off, uint64_t *dt_ms,
                     struct frame_slice *payload)
{
    const struct frame_slice *it = &f->u.batch.items;
    struct rd r = {it->p, it->n, *off, 0};
    if (r.off == r.n) return 0;
    *dt_ms = f->type == FRAME_BATCH_TIMED ? num(&r) : 0;
    *payload = counted(&r, SIZE_MAX);
    if (r.bad) return FRAME_E_PROTOCOL;
    *off = r.off;
    return 1;
}

static int clock_step(struct frame_clock *clk, uint64_t dt)
{
    if (!clk->set) return FRAME_E_PROTOCOL;
    clk->t_ms += dt;
    return 0;
}

int frame_readings(const struct frame *f, struct frame_clock *clk, frame_reading_fn fn, void *ctx)
{
    int rc;
    if (f->type == FRAME_READING) return fn(ctx, 0, &f->u.reading.payload);
    if (f->type == FRAME_READING_TIMED) {
        if ((rc = clock_step(clk, f->u.reading.dt_ms))) return rc;
        return fn(ctx, clk->t_ms, &f->u.reading.payload);
    }
    if (f->type != FRAME_BATCH && f->type != FRAME_BATCH_TIMED) return 0;
    size_t off = 0;
    uint64_t dt;
    struct frame_slice pl;
    while (frame_batch_next(f, &off, &dt, &pl) == 1) {
        bool timed = f->type == FRAME_BATCH_TIMED;
        if (timed && (rc = clock_step(clk, dt))) return rc;
        if ((rc = fn(ctx, timed ? clk->t_ms : 0, &pl))) return rc;
    }
    return 0;
}

/* ---- encoders ---- */

struct wr {
    uint8_t *p;
    size_t cap, n;
};

static void put(struct wr *w, const void *src, size_t k)
{
    if (w->n + k <= w->cap && k) memcpy(w->p + w->n, src, k);
    w->n += k;
}

static void put_num(struct wr *w, uint64_t v)
{
    uint8_t b[FRAME_VARINT_MAX];
    put(w, b, frame_put_varint(b, v));
}

static size_t varint_len(uint64_t v)
{
    size_t k = 1;
    while (v >>= 7)
        k++;
    return k;
}

/* Writes type and length, then the caller's body of blen bytes; returns the
 * total, 0 when cap is too small. */
static size_t head(struct wr *w, uint8_t type, size_t blen)
{
    put(w, &type, 1);
    put_num(w, blen);
    return w->n + blen <= w->cap ? w->n + blen : 0;
}

size_t frame_encode_hello(uint8_t *out, size_t cap, const uint8_t token_id[FRAME_TOKEN_ID_LEN],
                          const uint8_t nonce[FRAME_NONCE_LEN], uint64_t next_seq,
                          const uint8_t *ticket, size_t ticket_len)
{
    return frame_encode_hello_flags(out, cap, 0, token_id, nonce, next_seq, ticket, ticket_len);
}

size_t frame_encode_hello_flags(uint8_t *out, size_t cap, uint8_t flags,
                                const uint8_t token_id[FRAME_TOKEN_ID_LEN],
                                const uint8_t nonce[FRAME_NONCE_LEN], uint64_t next_seq,
                                const uint8_t *ticket, size_t ticket_len)
{
    if (ticket_len > FRAME_TICKET_MAX) return 0;
    size_t blen = 2 + FRAME_TOKEN_ID_LEN + FRAME_NONCE_LEN + varint_len(next_seq) +
                  (ticket_len ? varint_len(ticket_len) + ticket_len : 0);
    struct wr w = {out, cap, 0};
    size_t total = head(&w, FRAME_HELLO, blen);
    flags = (uint8_t)(flags & ~FRAME_HELLO_TICKET);
    uint8_t vf[2] = {FRAME_VERSION, (uint8_t)(flags | (ticket_len ? FRAME_HELLO_TICKET : 0))};
    put(&w, vf, 2);
    put(&w, token_id, FRAME_TOKEN_ID_LEN);
    put(&w, nonce, FRAME_NONCE_LEN);
    put_num(&w, next_seq);
    if (ticket_len) {
        put_num(&w, ticket_len);
        put(&w, ticket, ticket_len);
    }
    return total && w.n == total ? total : 0;
}

size_t frame_encode_challenge(uint8_t *out, size_t cap, const uint8_t nonce[FRAME_NONCE_LEN],
                              uint64_t durable_seq)
{
    struct wr w = {out, cap, 0};
    size_t total = head(&w, FRAME_CHALLENGE, FRAME_NONCE_LEN + varint_len(durable_seq));
    put(&w, nonce, FRAME_NONCE_LEN);
    put_num(&w, durable_seq);
    return total && w.n == total ? total : 0;
}

size_t frame_encode_proof(uint8_t *out, size_t cap, const uint8_t proof[FRAME_MAC_LEN])
{
    struct wr w = {out, cap, 0};
    size_t total = head(&w, FRAME_PROOF, FRAME_MAC_LEN);
    put(&w, proof, FRAME_MAC_LEN);
    return total && w.n == total ? total : 0;
}

size_t frame_encode_welcome(uint8_t *out, size_t cap, const uint8_t signature[FRAME_MAC_LEN],
                            uint64_t durable_seq, uint64_t max_frame, uint64_t window,
                            const uint8_t *ticket, size_t ticket_len)
{
    if (ticket_len > FRAME_TICKET_MAX) return 0;
    struct wr w = {out, cap, 0};
    size_t total = head(&w, FRAME_WELCOME,
                        FRAME_MAC_LEN + varint_len(durable_seq) + varint_len(max_frame) +
                            varint_len(window) + varint_len(ticket_len) + ticket_len);
    put(&w, signature, FRAME_MAC_LEN);
    put_num(&w, durable_seq);
    put_num(&w, max_frame);
    put_num(&w, window);
    put_num(&w, ticket_len);
    put(&w, ticket, ticket_len);
    return total && w.n == total ? total : 0;
}

size_t frame_encode_reading(uint8_t *out, size_t cap, const void *payload, size_t n)
{
    struct wr w = {out, cap, 0};
    size_t total = head(&w, FRAME_READING, n);
    put(&w, payload, n);
    return total && w.n == total ? total : 0;
}

size_t frame_encode_num(uint8_t *out, size_t cap, uint8_t type, uint64_t value)
{
    if (type != FRAME_ACK && type != FRAME_TIME && type != FRAME_SEQ) return 0;
    struct wr w = {out, cap, 0};
    size_t total = head(&w, type, varint_len(value));
    put_num(&w, value);
    return total && w.n == total ? total : 0;
}

size_t frame_encode_empty(uint8_t *out, size_t cap, uint8_t type)
{
    if (type != FRAME_PING && type != FRAME_PONG && type != FRAME_BYE) return 0;
    struct wr w = {out, cap, 0};
    size_t total = head(&w, type, 0);
    return total && w.n == total ? total : 0;
}

size_t frame_encode_error(uint8_t *out, size_t cap, uint8_t code, uint64_t seq, const char *msg)
{
    size_t m = msg ? strlen(msg) : 0;
    if (m > FRAME_MESSAGE_MAX) m = FRAME_MESSAGE_MAX;
    struct wr w = {out, cap, 0};
    size_t total = head(&w, FRAME_ERROR, 1 + varint_len(seq) + m);
    put(&w, &code, 1);
    put_num(&w, seq);
    put(&w, msg, m);
    return total && w.n == total ? total : 0;
}
