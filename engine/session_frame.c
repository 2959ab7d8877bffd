/* engine/session_frame.c — the compact frame protocol's device session over
 * TCP (docs/frame-protocol.md), plain on --frame and inside TLS on --frames.
 *
 * Handshake: HELLO (token id, client nonce, next_seq) → CHALLENGE (server
 * nonce, what is durable now) → PROOF (the device proves it holds the token,
 * checked against the verifiers the store keeps: frame_auth.c) → WELCOME
 * (our own proof, the final durable mark, max_frame, window). An unknown
 * token id gets a CHALLENGE like any other and fails at PROOF (no oracle).
 *
 * After the proof the connection claims the device (engine/devseq.c): an
 * older connection of it is ended (ERROR 0x06) and, until its commits have
 * completed, this one waits (polling at the wheel's tick; readings stay
 * buffered). Then WELCOME gives the final mark, and readings are numbered
 * from next_seq (or from the mark + 1 when the device said 0): those at or
 * below the mark are acknowledged and not stored again.
 *
 * The frames of one input call become one transaction, committed with the
 * worker's group commit; once durable, one ACK per commit carries the
 * device's durable mark. A device may have `window` readings unacknowledged:
 * past it reading stops until ACKs leave. Limits, each with an ERROR before
 * the close: a frame over max_frame from its header (0x04), a reading over
 * --max-body (0x04), bad input (0x07), no HELLO or PROOF within the header
 * deadline (0x09), idle past --idle-timeout (0x09), a failed commit (0x05,
 * after the ACKs due), draining (0x08, after the ACKs due).
 *
 * A HELLO with flags bit 1 makes a UDP session instead (§6, "over TCP"): the
 * same handshake and claim, then the session (its key and id derived from
 * the recovered ClientKey) is offered to worker 0's UDP table (engine/udp.h)
 * and WELCOME waits for its answer; after WELCOME the connection closes.
 * Nothing after PROOF is read as a frame: bytes there are ERROR 0x07.
 */
#include "engine/session_frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine/auth.h"
#include "engine/clients.h"
#include "engine/conn.h"
#include "engine/devseq.h"
#include "engine/ingest.h"
#include "engine/udp.h"
#include "protocols/frame.h"
#include "protocols/frame_auth.h"

/* The largest sequence number a device may start from: far beyond any fleet's
 * lifetime, and far enough from 2^64 that counting on never wraps. */
#define FRAME_SEQ_MAX (1ull << 62)
/* Readings a device may have unacknowledged (WELCOME's window). */
#define FRAME_WINDOW 4096u
/* A frame may hold this much besides its largest reading (a BATCH's headers). */
#define FRAME_SLACK (64u << 10)
/* While waiting for an older connection of the device to end, how long at
 * most (then ERROR 0x09), and how often to look. */
#define CLAIM_WAIT_MS 10000u
#define CLAIM_POLL_MS WHEEL_TICK_MS
/* HELLO (with the longest ticket) + CHALLENGE + PROOF, as sent. */
#define HS_MAX                                                                                     \
    (2 + 27 + FRAME_VARINT_MAX + FRAME_VARINT_MAX + FRAME_TICKET_MAX + 3 + 16 + FRAME_VARINT_MAX + \
     2 + FRAME_MAC_LEN)

enum { FS_HELLO, FS_PROOF, FS_CLAIM, FS_HANDOFF, FS_READY };

/* Only during the handshake (freed at WELCOME): idle connections stay small. */
struct frame_hs {
    bool known; /* the token id has verifiers (else the proof fails whatever it is) */
    struct auth_keys keys;
    uint8_t skey[FRAME_KEY_LEN], sid[8]; /* a UDP session's (HELLO flags bit 1) */
    size_t len;                          /* bytes of msg: HELLO, CHALLENGE, then PROOF */
    uint8_t msg[HS_MAX];
};

struct frame_sess {
    uint8_t state;
    bool owned;      /* devseq: this connection speaks for the device */
    bool failed;     /* a commit failed: ERROR 0x05 once the others completed */
    bool bye;        /* the device said BYE */
    bool draining;   /* the engine is stopping */
    bool ack_due;    /* a commit completed: the durable mark may have moved */
    bool final_sent; /* the closing frames (ERROR, or the last ACK) are queued */
    bool udp;        /* HELLO asked for a UDP session: no readings here */
    bool offered;    /* the session is in worker 0's mailbox: ticket names it */
    uint32_t ticket;
    uint32_t device, org;
    uint64_t auth_gen;
    uint8_t token_id[FRAME_TOKEN_ID_LEN];
    uint64_t hello_next;      /* HELLO's next_seq */
    uint64_t next;            /* the sequence number of the next reading to arrive */
    uint64_t dup_upto;        /* readings at or below this are durable already */
    uint64_t durable;         /* the device's mark as last read from devseq */
    uint64_t acked;           /* the highest durable_seq sent */
    uint32_t inflight;        /* this connection's commits not completed */
    struct frame_clock clock; /* the device's, for timed readings (ms since the epoch) */
    uint64_t last_rx_ms;
    uint64_t claim_since_ms;
    struct frame_hs *hs;
};

static struct frame_sess *sess(const struct conn *c)
{
    return c->sess;
}

static struct conn_ref ref_of(const struct worker *w, const struct conn *c)
{
    return (struct conn_ref){w->id, c->slot, c->gen};
}

static size_t max_frame(const struct worker *w)
{
    return (size_t)w->eng->cfg.max_body + FRAME_SLACK;
}

static size_t max_input(const struct worker *w)
{
    return max_frame(w);
}

static void send_frame(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    if (n) conn_send(w, c, p, n);
}

/* Ends the connection with ERROR code: seq is the first reading not stored
 * (0: the next one to arrive, once readings flow). Nothing more is parsed; it
 * closes once its output is sent and its commits completed. */
static void fail(struct worker *w, struct conn *c, uint8_t code, uint64_t seq, const char *msg)
{
    struct frame_sess *s = sess(c);
    if (!seq && s->state == FS_READY) seq = s->next;
    if (s->offered) {
        /* no WELCOME will say the session exists: it must not either */
        udp_offer_cancel(w->eng, s->ticket);
        s->offered = false;
    }
    uint8_t out[2 + FRAME_VARINT_MAX + 1 + FRAME_VARINT_MAX + FRAME_MESSAGE_MAX];
    if (!s->final_sent) send_frame(w, c, out, frame_encode_error(out, sizeof out, code, seq, msg));
    s->final_sent = true;
    conn_stop(w, c);
    conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
}

/* An ACK when the device's mark moved past what it was told. */
static void send_ack(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (s->final_sent) return;
    if (s->ack_due) {
        s->ack_due = false;
        s->durable = devseq_durable(&w->eng->devseq, s->device);
    }
    if (s->durable <= s->acked || s->state != FS_READY) return;
    uint8_t out[2 + FRAME_VARINT_MAX];
    send_frame(w, c, out, frame_encode_num(out, sizeof out, FRAME_ACK, s->durable));
    s->acked = s->durable;
}

/* The handshake's state (the verifiers, AuthMessage) is wiped and freed. */
static void drop_handshake(struct frame_sess *s)
{
    if (!s->hs) return;
    explicit_bzero(s->hs, sizeof *s->hs);
    free(s->hs);
    s->hs = NULL;
}

static void release(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (!s->owned) return;
    devseq_release(&w->eng->devseq, s->device, ref_of(w, c));
    s->owned = false;
}

static void on_hello(struct worker *w, struct conn *c, const struct frame *f, const uint8_t *raw)
{
    struct frame_sess *s = sess(c);
    if (f->u.hello.version != FRAME_VERSION) {
        fail(w, c, 0x01, 0, "speaks 1");
        return;
    }
    if (f->u.hello.flags & FRAME_HELLO_UDP) {
        /* said before any CHALLENGE: it costs nothing and tells of no token */
        if (!w->eng->udp_mail) {
            fail(w, c, 0x07, 0, "no udp listener");
            return;
        }
        s->udp = true;
    }
    if (!(s->hs = calloc(1, sizeof *s->hs))) {
        fail(w, c, 0x05, 0, "out of memory");
        return;
    }
    if (f->u.hello.next_seq > FRAME_SEQ_MAX) {
        fail(w, c, 0x07, 0, "next_seq out of range");
        return;
    }
    memcpy(s->token_id, f->u.hello.token_id, FRAME_TOKEN_ID_LEN);
    s->hello_next = f->u.hello.next_seq;
    const struct auth_keys *k;
    const struct auth_entry *e = auth_table_lookup_id(w->auth, s->token_id, &k);
    uint64_t hint = 0;
    if (e && e->state == STORE_DEVICE_ACTIVE) {
        s->hs->known = true;
        s->hs->keys = *k;
        s->device = e->device;
        s->org = e->org;
        s->auth_gen = w->auth_gen;
        hint = devseq_durable(&w->eng->devseq, e->device);
    }
    /* tickets (flags bit 0) are not issued by this server: a HELLO with one
     * simply goes on with CHALLENGE (§5) */
    uint8_t nonce[FRAME_NONCE_LEN];
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) {
        fail(w, c, 0x05, 0, "no randomness");
        return;
    }
    memcpy(s->hs->msg, raw, f->total);
    size_t n = frame_encode_challenge(s->hs->msg + f->total, HS_MAX - f->total, nonce, hint);
    if (!n) {
        fail(w, c, 0x07, 0, "HELLO too long");
        return;
    }
    send_frame(w, c, s->hs->msg + f->total, n);
    s->hs->len = f->total + n;
    s->state = FS_PROOF;
}

/* The device is this connection's: its UDP session goes to worker 0, and
 * WELCOME waits for the answer (on_answer), at most CLAIM_WAIT_MS. */
static void offer(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    struct udp_offer o = {.from = ref_of(w, c), .device = s->device, .org = s->org};
    memcpy(o.token_id, s->token_id, sizeof o.token_id);
    memcpy(o.sid, s->hs->sid, sizeof o.sid);
    memcpy(o.key, s->hs->skey, sizeof o.key);
    explicit_bzero(s->hs->skey, sizeof s->hs->skey); /* worker 0's to keep now */
    int rc = udp_offer_post(w->eng, &o, &s->ticket); /* wipes o.key */
    if (rc) {
        fail(w, c, rc == -ENOSPC ? 0x05 : 0x07, 0,
             rc == -ENOSPC ? "server busy" : "no udp listener");
        return;
    }
    s->offered = true;
    s->state = FS_HANDOFF;
    s->claim_since_ms = w->now_ms;
    conn_set_deadline(w, c, w->now_ms + CLAIM_WAIT_MS);
}

/* Worker 0's answer, if it came: WELCOME and the close, or the ERROR that
 * says why there is no session. pending: bytes the device sent after PROOF. */
static void on_answer(struct worker *w, struct conn *c, bool pending)
{
    struct frame_sess *s = sess(c);
    uint64_t durable = 0;
    struct conn_ref session;
    enum udp_answer a = udp_offer_answer(w->eng, s->ticket, &durable, &session);
    if (a == UDP_PENDING) return;
    s->offered = false;
    if (a != UDP_MADE) {
        static const struct {
            uint8_t code;
            const char *msg;
        } why[] = {
            [UDP_FULL] = {0x05, "server busy"},
            [UDP_REVOKED] = {0x02, "token revoked"},
            [UDP_GONE] = {0x06, "taken over by a newer connection"},
            [UDP_STOPPING] = {0x08, "server shutting down"},
        };
        fail(w, c, why[a].code, 0, why[a].msg);
        return;
    }
    s->owned = false; /* the session's now (devseq_hand) */
    uint8_t sig[FRAME_MAC_LEN];
    if (pending ||
        frame_auth_server_signature(s->hs->keys.server_key, s->hs->msg, s->hs->len, sig)) {
        /* the session was made, and no WELCOME will tell of it: ended */
        clients_kick(w->eng, session);
        fail(w, c, pending ? 0x07 : 0x05, 0,
             pending ? "nothing may follow PROOF: readings go over udp" : "signature failed");
        return;
    }
    uint8_t out[2 + FRAME_MAC_LEN + 4 * FRAME_VARINT_MAX];
    send_frame(
        w, c, out,
        frame_encode_welcome(out, sizeof out, sig, durable, UDP_DGRAM_MAX, UDP_WINDOW, NULL, 0));
    drop_handshake(s);
    worker_count(&w->st.frame_sessions, 1);
    /* said everything: FIN after WELCOME (conn lingers so no reset eats it) */
    s->final_sent = true;
    conn_stop(w, c);
    conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
}

/* Takes the device for this connection, or arranges to ask again. */
static void try_claim(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    struct conn_ref kick;
    bool must_kick;
    uint64_t durable, gap;
    int rc = devseq_claim(&w->eng->devseq, s->device, ref_of(w, c), s->hello_next, &durable, &kick,
                          &must_kick, &gap);
    if (must_kick) clients_kick(w->eng, kick);
    if (rc < 0) {
        fail(w, c, 0x05, 0, "out of memory");
        return;
    }
    if (rc == 0) {
        if (w->now_ms >= s->claim_since_ms + CLAIM_WAIT_MS)
            fail(w, c, 0x09, 0, "an older connection of this device did not end in time");
        else
            conn_set_deadline(w, c, w->now_ms + CLAIM_POLL_MS);
        return;
    }
    s->owned = true;
    s->durable = s->acked = s->dup_upto = durable;
    s->next = s->hello_next ? s->hello_next : durable + 1;
    if (gap) worker_count(&w->st.frame_gaps, gap);
    if (s->udp) {
        offer(w, c);
        return;
    }
    uint8_t out[2 + FRAME_MAC_LEN + 4 * FRAME_VARINT_MAX];
    uint8_t sig[FRAME_MAC_LEN];
    if (frame_auth_server_signature(s->hs->keys.server_key, s->hs->msg, s->hs->len, sig)) {
        fail(w, c, 0x05, 0, "signature failed");
        return;
    }
    send_frame(
        w, c, out,
        frame_encode_welcome(out, sizeof out, sig, durable, max_frame(w), FRAME_WINDOW, NULL, 0));
    drop_handshake(s);
    s->state = FS_READY;
    worker_count(&w->st.frame_sessions, 1);
}

static void on_proof(struct worker *w, struct conn *c, const struct frame *f, const uint8_t *raw)
{
    struct frame_sess *s = sess(c);
    struct frame_hs *hs = s->hs;
    uint8_t ck[FRAME_KEY_LEN];
    /* a UDP session's key comes from the ClientKey the proof gives back */
    bool ok = hs->known &&
              frame_auth_verify_key(hs->keys.stored_key, hs->msg, hs->len, f->u.proof.proof, ck);
    if (!ok) {
        /* the limiter only ever slows failing attempts (as for HTTP tokens) */
        bool allowed = ratelimit_allow(w->authrl, c->peer, w->now_ms);
        if (allowed) ratelimit_charge(w->authrl, c->peer, w->now_ms);
        worker_count(allowed ? &w->st.auth_failures : &w->st.auth_throttled, 1);
        fail(w, c, 0x02, 0, "authentication failed");
        return;
    }
    memcpy(hs->msg + hs->len, raw, f->total);
    hs->len += f->total;
    int rc = s->udp ? frame_auth_session_key(ck, hs->msg, hs->len, hs->skey, hs->sid) : 0;
    explicit_bzero(ck, sizeof ck);
    if (rc) {
        fail(w, c, 0x05, 0, "session key failed");
        return;
    }
    s->state = FS_CLAIM;
    s->claim_since_ms = w->now_ms;
    try_claim(w, c);
}

/* Revocation and rotation reach live sessions: when the token table changed,
 * the token id must still name an active token of the same device. */
static bool still_authorized(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (s->auth_gen == w->auth_gen) return true;
    if (!auth_id_still_names(w->auth, s->token_id, s->device, s->org)) return false;
    s->auth_gen = w->auth_gen;
    return true;
}

struct txn_state {
    struct worker *w;
    struct conn *c;
    struct ingest_txn t;
    bool open;
    uint32_t count;
    uint64_t first; /* the sequence number of its first reading */
};

/* Adds one reading (sequence number s->next) unless it is durable already
 * (a frame_readings callback). Returns 0, or the ERROR code to end with. */
static int add_reading(void *ctx, uint64_t dev_ms, const struct frame_slice *pl)
{
    struct txn_state *x = ctx;
    struct worker *w = x->w;
    struct frame_sess *s = sess(x->c);
    uint64_t seq = s->next++;
    if (seq <= s->dup_upto) return 0; /* resent after a reconnect: acknowledged, not stored */
    if (!x->open) x->first = seq;
    int rc = ingest_add_numbered(w, s->org, s->device, &x->t, &x->open, RECORD_PROTO_FRAME, seq,
                                 dev_ms, pl->p, pl->n);
    if (rc) return rc == -EMSGSIZE ? 0x04 : 0x05;
    x->count++;
    return 0;
}

/* Commits what this input call added. */
static void commit(struct worker *w, struct conn *c, struct txn_state *x)
{
    struct frame_sess *s = sess(c);
    if (!x->open) return;
    x->open = false;
    if (!x->count) {
        ingest_abort(&x->t);
        return;
    }
    if (devseq_submit(&w->eng->devseq, s->device, x->count)) {
        ingest_abort(&x->t);
        s->failed = true;
        return;
    }
    int rc = ingest_commit(&x->t, c, x->count);
    if (rc != 0) {
        /* aborted (out of memory): nothing of it was kept */
        devseq_done(&w->eng->devseq, s->device, 0, 0);
        s->failed = true;
        return;
    }
    s->inflight++;
    if (ingest_notify(&x->t, devseq_ticket(s->device, x->count))) {
        /* the mark cannot learn this commit's outcome: count it as failed (its
         * readings are resent after the reconnect: stored twice, never lost) */
        devseq_done(&w->eng->devseq, s->device, x->count, -ENOMEM);
    }
}

/* The closing frames once nothing is in flight: the ACK due, then the reason. */
static void finish_if_done(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (s->final_sent || s->inflight) return;
    if (s->failed) {
        send_ack(w, c);
        fail(w, c, 0x05, s->durable + 1, "storage unavailable");
    } else if (s->draining) {
        send_ack(w, c);
        fail(w, c, 0x08, 0, "server shutting down");
    } else if (s->bye) {
        send_ack(w, c);
        s->final_sent = true;
        conn_stop(w, c);
    }
}

static void set_deadline(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (s->final_sent || s->state == FS_CLAIM || s->state == FS_HANDOFF)
        return;                       /* set by fail() / try_claim() / offer() */
    if (s->state != FS_READY) return; /* the handshake deadline from accept */
    if (s->inflight || c->on_room || c->blocked)
        conn_set_deadline(w, c, 0); /* the server, not the device, is what is slow */
    else
        conn_set_deadline(w, c, s->last_rx_ms + w->eng->cfg.idle_timeout_ms);
}

static size_t input(struct worker *w, struct conn *c, char *p, size_t *np)
{
    struct frame_sess *s = sess(c);
    size_t off = 0, n = *np;
    const uint8_t *u = (const uint8_t *)p;
    struct txn_state x = {.w = w, .c = c, .open = false};

    send_ack(w, c);
    if (s->state == FS_CLAIM && !s->final_sent) try_claim(w, c);
    if (s->state == FS_HANDOFF && !s->final_sent) on_answer(w, c, n > 0);
    if (s->state == FS_READY && !s->final_sent && !still_authorized(w, c))
        fail(w, c, 0x02, s->next, "token revoked");
    while (off < n && !c->stopped && !c->closing && !s->final_sent) {
        if (s->failed || s->bye || s->draining) break;
        if (conn_output_full(c)) break; /* resumed when the device has read */
        if (s->udp && s->state >= FS_CLAIM) {
            /* a UDP session's readings go in datagrams: nothing follows PROOF here */
            fail(w, c, 0x07, 0, "nothing may follow PROOF: readings go over udp");
            break;
        }
        if (s->state == FS_CLAIM) {
            conn_block(c); /* readings wait for WELCOME's mark */
            break;
        }
        uint8_t type;
        size_t total;
        int rc = frame_peek(u + off, n - off, &type, &total);
        if (rc == FRAME_INCOMPLETE) break;
        if (rc < 0) {
            fail(w, c, 0x07, 0, "bad frame");
            break;
        }
        if (total > max_frame(w)) {
            fail(w, c, 0x04, s->state == FS_READY ? s->next : 0, "frame too large");
            break;
        }
        if (n - off < total) {
            /* the rest of a large frame: its buffer now (--max-request-memory) */
            if (!conn_can_hold(w, c, total)) {
                if (conn_others_hold(w, c))
                    conn_wait_room(w, c);
                else
                    fail(w, c, 0x05, s->next, "server busy");
            } else if (conn_reserve_input(w, c, total)) {
                fail(w, c, 0x05, s->next, "server busy");
            }
            break;
        }
        bool reading = type >= FRAME_READING && type <= FRAME_BATCH_TIMED;
        if (reading && s->state == FS_READY) {
            if (s->next - 1 >= s->durable + FRAME_WINDOW) {
                conn_block(c); /* the window is full: resumed when a commit completes */
                break;
            }
            if (!ingest_has_room(w)) {
                conn_wait_room(w, c);
                break;
            }
        }
        struct frame f;
        rc = frame_parse(u + off, total, &f);
        if (rc == FRAME_E_VERSION) {
            fail(w, c, 0x01, 0, "speaks 1"); /* §11: the versions this server speaks */
            break;
        }
        if (rc < 0) {
            fail(w, c, 0x07, 0, "malformed frame");
            break;
        }
        const uint8_t *raw = u + off;
        off += total;
        s->last_rx_ms = w->now_ms;
        if (s->state == FS_HELLO) {
            if (f.type != FRAME_HELLO)
                fail(w, c, 0x07, 0, "expected HELLO");
            else
                on_hello(w, c, &f, raw);
            continue;
        }
        if (s->state == FS_PROOF) {
            if (f.type != FRAME_PROOF)
                fail(w, c, 0x07, 0, "expected PROOF");
            else
                on_proof(w, c, &f, raw);
            continue;
        }
        switch (f.type) {
        case FRAME_READING:
        case FRAME_READING_TIMED:
        case FRAME_BATCH:
        case FRAME_BATCH_TIMED:
            rc = frame_readings(&f, &s->clock, add_reading, &x);
            if (rc == FRAME_E_PROTOCOL) rc = 0x07;
            if (rc) {
                /* nothing of this input call is kept; what came before it is */
                uint64_t first = x.open ? x.first : s->next - 1;
                if (x.open) ingest_abort(&x.t);
                x.open = false;
                fail(w, c, (uint8_t)rc, first,
                     rc == 0x04   ? "reading too large"
                     : rc == 0x07 ? "timed reading before TIME"
                                  : "storage unavailable");
            }
            break;
        case FRAME_TIME:
            s->clock.t_ms = f.u.num.value;
            s->clock.set = 1;
            break;
        case FRAME_PING: {
            uint8_t out[2];
            send_frame(w, c, out, frame_encode_empty(out, sizeof out, FRAME_PONG));
            break;
        }
        case FRAME_PONG:
            break;
        case FRAME_BYE:
            s->bye = true;
            break;
        default: /* HELLO, PROOF again; server frames */
            fail(w, c, 0x07, 0, "unexpected frame");
            break;
        }
    }
    if (!c->closing)
        commit(w, c, &x);
    else if (x.open)
        ingest_abort(&x.t);
    if (!c->closing) {
        finish_if_done(w, c);
        set_deadline(w, c);
    }
    *np = n;
    return off;
}

static void durable(struct worker *w, struct conn *c, uint64_t cookie, int err)
{
    struct frame_sess *s = sess(c);
    (void)cookie;
    if (s->inflight) s->inflight--;
    if (err) s->failed = true;
    s->ack_due = true;
    s->last_rx_ms = w->now_ms;
}

static void timeout(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (s->final_sent || c->stopped) {
        conn_close(w, c); /* an answer to close that was never taken */
        return;
    }
    switch (s->state) {
    case FS_HELLO:
        fail(w, c, 0x09, 0, "no HELLO in time");
        break;
    case FS_PROOF:
        fail(w, c, 0x09, 0, "no PROOF in time");
        break;
    case FS_CLAIM:
        conn_post(w, c); /* look again */
        conn_set_deadline(w, c, w->now_ms + CLAIM_POLL_MS);
        break;
    case FS_HANDOFF:
        fail(w, c, 0x09, 0, "the udp listener did not take the session in time");
        break;
    default:
        fail(w, c, 0x09, s->next, "idle timeout");
        break;
    }
}

static void drain(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    s->draining = true;
    if (s->state != FS_READY) {
        fail(w, c, 0x08, 0, "server shutting down");
        return;
    }
    conn_post(w, c); /* the ACKs due, then ERROR 0x08 */
}

static bool idle(const struct conn *c)
{
    const struct frame_sess *s = sess(c);
    return s->inflight == 0 && (s->final_sent || (!s->draining && !s->bye && !s->failed));
}

static void open_conn(struct worker *w, struct conn *c)
{
    /* HELLO and PROOF must come within the header deadline from accept */
    conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
}

static void takeover(struct worker *w, struct conn *c)
{
    release(w, c); /* the newer connection waits for our commits, not for us */
    fail(w, c, 0x06, 0, "taken over by a newer connection");
}

static void close_conn(struct worker *w, struct conn *c)
{
    struct frame_sess *s = sess(c);
    if (s->offered) udp_offer_cancel(w->eng, s->ticket); /* gone before its WELCOME */
    s->offered = false;
    release(w, c);
    drop_handshake(s);
}

const struct session_ops session_frame_ops = {
    .name = "frame",
    .session_size = sizeof(struct frame_sess),
    .max_input = max_input,
    .busy_reply = NULL,
    .open = open_conn,
    .input = input,
    .durable = durable,
    .timeout = timeout,
    .drain = drain,
    .idle = idle,
    .takeover = takeover,
    .close = close_conn,
};
