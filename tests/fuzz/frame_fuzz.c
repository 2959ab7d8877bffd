/* tests/fuzz/frame_fuzz.c — libFuzzer target for the frame protocol's parser
 * (protocols/frame.c).
 *
 * Input: one connection's byte stream. Frames are peeked and parsed in turn,
 * as a session would, until an error or an incomplete frame. Invariants (abort
 * on violation): peek and parse agree on the length; every slice lies inside
 * its frame; a BATCH walks exactly count items; any proper prefix of a frame
 * is FRAME_INCOMPLETE (or a total beyond it); a parsed READING / ACK / ERROR
 * encodes back to the same bytes; frame_readings walks every reading of a
 * READING / BATCH once, inside the frame. Each frame is parsed from an exactly sized
 * heap copy, so ASan sees any over-read.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/frame.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "frame_fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(struct frame_slice s, const uint8_t *b, size_t n)
{
    return s.p == NULL ? s.n == 0 : (s.p >= b && s.p + s.n <= b + n);
}

struct walk {
    const uint8_t *b;
    size_t n;
    uint64_t calls;
};

static int each(void *ctx, uint64_t dev_ms, const struct frame_slice *pl)
{
    struct walk *w = ctx;
    (void)dev_ms;
    CHECK(inside(*pl, w->b, w->n));
    w->calls++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        uint8_t type;
        size_t total;
        int rc = frame_peek(data + off, size - off, &type, &total);
        if (rc) break;
        if (total > size - off || total > (1u << 20)) break;
        for (size_t k = 0; k < total; k += 1 + total / 16) {
            uint8_t t2;
            size_t tot2;
            int r2 = frame_peek(data + off, k, &t2, &tot2);
            CHECK(r2 == FRAME_INCOMPLETE || (r2 == 0 && tot2 == total));
        }
        uint8_t *b = malloc(total ? total : 1);
        memcpy(b, data + off, total);
        struct frame f;
        rc = frame_parse(b, total, &f);
        if (rc == 0) {
            CHECK(f.total == total && f.type == type);
            CHECK(inside(f.body, b, total));
            if (type == FRAME_READING || type == FRAME_READING_TIMED)
                CHECK(inside(f.u.reading.payload, b, total));
            if (type == FRAME_ERROR) CHECK(inside(f.u.error.message, b, total));
            if (type == FRAME_BATCH || type == FRAME_BATCH_TIMED) {
                size_t o = 0;
                uint64_t dt, n = 0;
                struct frame_slice pl;
                while (frame_batch_next(&f, &o, &dt, &pl) == 1) {
                    CHECK(inside(pl, b, total));
                    n++;
                }
                CHECK(n == f.u.batch.count);
            }
            if (type >= FRAME_READING && type <= FRAME_BATCH_TIMED) {
                /* the sessions' walk: every reading once, inside the frame;
                 * timed ones refused until a TIME set the clock */
                struct walk wk = {b, total, 0};
                struct frame_clock clk = {0};
                int wr = frame_readings(&f, &clk, each, &wk);
                bool timed = type == FRAME_READING_TIMED || type == FRAME_BATCH_TIMED;
                uint64_t want = type <= FRAME_READING_TIMED ? 1 : f.u.batch.count;
                if (timed)
                    CHECK(wr == FRAME_E_PROTOCOL || want == 0);
                else
                    CHECK(wr == 0 && wk.calls == want);
                clk = (struct frame_clock){.t_ms = 1, .set = 1};
                wk.calls = 0;
                CHECK(frame_readings(&f, &clk, each, &wk) == 0 && wk.calls == want);
            }
            uint8_t out[1 << 12];
            size_t en = 0;
            if (type == FRAME_READING && total <= sizeof out)
                en = frame_encode_reading(out, sizeof out, f.u.reading.payload.p,
                                          f.u.reading.payload.n);
            if (type == FRAME_ACK) en = frame_encode_num(out, sizeof out, FRAME_ACK, f.u.num.value);
            if (en) CHECK(en == total && !memcmp(out, b, total));
        }
        free(b);
        if (rc) break;
        off += total;
    }
    return 0;
}
