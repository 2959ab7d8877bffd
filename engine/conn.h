/* engine/conn.h — a generic connection and the seam every protocol plugs into.
 *
 * A connection is a socket with its in-flight io_uring operations, a
 * reassembly buffer for input not yet consumed, output buffers with a cap, one
 * deadline on the worker's timer wheel, the peer's address, and a protocol
 * session behind a small ops table. conn.c moves bytes and enforces the caps;
 * the session (session_http.c, session_mqtt.c, session_frame.c) turns
 * bytes into readings and answers. TLS (S5) sits between the two: ciphertext
 * in, plaintext to the session (the `tls` slot).
 *
 * Contract with sessions:
 *  - input() is called from the loop, never from inside another completion's
 *    handler chain: with new bytes, and again (with what is still buffered,
 *    possibly nothing) after the connection was posted — when a commit it
 *    waited on finished, when its output drained below the cap, when budget
 *    freed up. It returns how many bytes it consumed; the rest stays buffered
 *    and is offered again, with more, later. It stops early (returning less)
 *    when conn_output_full(), or when it waits for something.
 *  - durable() only records the outcome (no output, no parsing): the
 *    connection is posted and its input() runs once the loop has dispatched
 *    this turn's completions (nginx's posted events).
 *  - A session never frees its connection: conn_close() marks it, the slot is
 *    freed at the end of the loop turn once the kernel holds nothing of it.
 */
#ifndef SLUICE_ENGINE_CONN_H
#define SLUICE_ENGINE_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"
#include "engine/worker.h"

struct tls_ctx;
struct tls_conn;

/* Unsent output past which a session must stop producing (and input is no
 * longer read), and below which it is resumed. One answer may overshoot. */
#define CONN_OUT_HIGH (64u << 10)
#define CONN_OUT_LOW  (16u << 10)
/* Buffered input past which, while the session cannot consume it, recv is
 * cancelled and TCP flow control pushes back on the client. */
#define CONN_PAUSE_SLACK (64u << 10)
/* What may still arrive after a pause was decided (the completions already
 * posted): input beyond the session's own limit plus this closes. */
#define CONN_OVERSHOOT (4u << 20)

struct session_ops {
    const char *name;    /* "http", "admin" (metrics, logs) */
    size_t session_size; /* bytes of per-connection session state, allocated zeroed */
    /* The longest message the session accepts, so conn can cap buffered input. */
    size_t (*max_input)(const struct worker *w);
    /* Sent (best effort, non-blocking) to a client refused at the connection
     * limit, before closing it; NULL: just close. */
    const char *busy_reply;
    /* A new connection: set its first deadline. */
    void (*open)(struct worker *w, struct conn *c);
    /* Plaintext p[0..*n) (see the contract above). Returns bytes consumed from
     * the start. The bytes are the session's to rewrite in place, and it may
     * lower *n after moving the unconsumed tail down (a chunked decoder
     * dropping the framing it has decoded, so it is not buffered twice). */
    size_t (*input)(struct worker *w, struct conn *c, char *p, size_t *n);
    /* A commit the session waited on (ingest_commit's cookie) finished: err 0
     * when its readings are durable, else -errno (nothing of it was kept). */
    void (*durable)(struct worker *w, struct conn *c, uint64_t cookie, int err);
    /* The connection's deadline passed. */
    void (*timeout)(struct worker *w, struct conn *c);
    /* The engine is draining: close now if nothing is in progress, else make
     * the answer in progress the last. */
    void (*drain)(struct worker *w, struct conn *c);
    /* True when the session owes the peer nothing more (no answer waiting). */
    bool (*idle)(const struct conn *c);
    /* Another connection took this one's place (an MQTT client id connected
     * again): end it with the protocol's word for that (may be NULL). */
    void (*takeover)(struct worker *w, struct conn *c);
    /* The connection is being freed: release session resources (may be NULL). */
    void (*close)(struct worker *w, struct conn *c);
};

struct conn {
    int fd;
    uint32_t gen;
    uint32_t slot;
    uint8_t listener; /* enum listener_kind */
    bool recv_armed;  /* a multishot recv is outstanding */
    bool paused;      /* recv not re-armed / cancelled: backpressure */
    bool send_busy;   /* a send is in flight from out[0] */
    bool stopped;     /* the session will parse nothing more (an answer with close is queued) */
    bool finishing;   /* close once everything queued is sent */
    bool closing;     /* freed once no operation is in flight */
    bool on_dirty;    /* listed for a send at the end of the loop turn */
    bool on_posted;   /* listed for its session to run after this turn's completions */
    bool on_room;     /* waiting for pending commit bytes to drop */
    bool blocked;     /* the session stopped for a reason of its own (conn_block) */
    bool out_wait;    /* stopped with output full: post when it drains below CONN_OUT_LOW */
    bool lingering;   /* answered and shut down for writing: input is read and dropped */
    bool peer_closed;
    uint8_t inflight; /* operations the kernel still holds (recv, send, cancel) */

    const struct session_ops *ops;
    void *sess;           /* the protocol's per-connection state (ops->session_size bytes) */
    struct tls_conn *tls; /* TLS listeners: between the socket and the session */
    struct buf pt;        /* TLS: plaintext output staged by conn_send_reserve */

    struct buf in;     /* reassembly: received bytes not yet consumed */
    struct buf out[2]; /* [0] being sent, [1] accumulating */
    size_t out_off;    /* bytes of out[0] already sent */

    uint64_t deadline_ms; /* 0: none */
    struct conn *tnext, *tprev;
    uint32_t tslot;
    bool timed;

    uint8_t peer[16]; /* the client's address (IPv4 mapped into IPv6) */

    struct conn *next_dirty, *next_posted, *next_room, *next_free;
};

/* ---- for the loop (loop.c) ---- */

/* A connection accepted on fd for listener kind, served by ops: allocates a
 * slot and the session, arms recv. Returns the connection, or NULL when the
 * worker is at its connection limit or out of memory (fd is then refused with
 * ops->busy_reply and closed). */
struct conn *conn_open(struct worker *w, int fd, unsigned listener, const struct session_ops *ops,
                       struct tls_ctx *tls);

/* Completions of a connection's recv, send and cancel operations. */
void conn_on_recv(struct worker *w, struct io_uring_cqe *cqe);
void conn_on_send(struct worker *w, struct io_uring_cqe *cqe);
void conn_on_cancel(struct worker *w, struct io_uring_cqe *cqe);

/* Runs the sessions of posted connections (once this turn's completions are
 * dispatched), then submits the output of the turn. */
void conn_run_posted(struct worker *w);
void conn_flush_sends(struct worker *w);

/* Frees the slots of closed connections the kernel holds nothing of. */
void conn_reap(struct worker *w);

/* Fires the deadlines that passed (the wheel, ticked every WHEEL_TICK_MS). */
void conn_timers_run(struct worker *w);

/* The engine is draining: every session is told (ops->drain). */
void conn_drain_all(struct worker *w);
/* The drain timeout passed: every connection closes now. */
void conn_close_all(struct worker *w);

/* ---- for sessions ---- */

/* Queues n bytes of output; they leave in one send at the end of the loop
 * turn. On allocation failure the connection is closed. */
void conn_send(struct worker *w, struct conn *c, const void *p, size_t n);
/* Room for n more output bytes, to be committed with conn_send_commit; NULL
 * when the connection is closing or memory ran out (then it is closed). */
char *conn_send_reserve(struct worker *w, struct conn *c, size_t n);
void conn_send_commit(struct worker *w, struct conn *c, size_t n);
/* The connection came in on a TLS listener (readings say https / mqtts). */
static inline bool conn_is_tls(const struct conn *c)
{
    return c->tls != NULL;
}
/* Mutual TLS: the digest (store_cert_digest) of the client certificate the
 * handshake verified; false when there is none. */
bool conn_client_cert_digest(const struct conn *c, uint8_t out[32]);
/* True while unsent output is at or above CONN_OUT_HIGH: produce no more. */
bool conn_output_full(const struct conn *c);

/* The session stopped consuming for a reason of its own (answers waiting for
 * a commit): input piling up behind it pauses reading; the session posts c
 * when it can go on. Cleared before each input call. */
void conn_block(struct conn *c);

/* Nothing more will be parsed on c: once the session is idle and its output
 * is sent, the connection shuts down for writing and closes (lingering a
 * moment, reading and dropping what the client still sends, so that the
 * answer is not lost to a reset). */
void conn_stop(struct worker *w, struct conn *c);
/* Marks c closed now (pending output is dropped). */
void conn_close(struct worker *w, struct conn *c);

/* Sets c's one deadline (0: none); ops->timeout fires when it passes. */
void conn_set_deadline(struct worker *w, struct conn *c, uint64_t deadline_ms);

/* Another thread asked to end the connection (slot, gen): its session's
 * takeover op runs, unless it is gone already. */
void conn_kick(struct worker *w, uint32_t slot, uint32_t gen);

/* Another thread has news for the connection (slot, gen): its session runs
 * again after this turn's completions, unless it is gone already. */
void conn_wake(struct worker *w, uint32_t slot, uint32_t gen);

/* Runs c's session again after this turn's completions. */
void conn_post(struct worker *w, struct conn *c);

/* Whether c may hold `total` bytes of one unfinished message in memory: true
 * when its buffer already can, or the worker's request memory budget
 * (--max-request-memory) has room for the growth. The session answers "busy"
 * when not; the bytes themselves are buffered as they arrive. */
bool conn_can_hold(const struct worker *w, const struct conn *c, size_t total);

/* Grows c's buffer now to hold `total` bytes of one message of known size,
 * counted against the request memory budget (so a body that was let in
 * cannot be refused halfway). Returns 0 or -ENOMEM. */
int conn_reserve_input(struct worker *w, struct conn *c, size_t total);

/* Whether other connections of c's worker hold request memory (so waiting for
 * them can make room for c). */
bool conn_others_hold(const struct worker *w, const struct conn *c);

/* The session cannot go on until a worker budget has room — pending commit
 * bytes below --max-pending-bytes, or request memory freed: c is resumed
 * (posted) then and checks again. */
void conn_wait_room(struct worker *w, struct conn *c);
/* Takes c off the waiters (its deadline passed while it waited). */
void conn_unwait_room(struct worker *w, struct conn *c);

/* ---- for commit.c ---- */

/* The commit connection (slot, gen) waited on finished: calls its session's
 * durable op and posts it. A connection that has gone (gen differs) is
 * skipped: its readings are durable all the same. */
void conn_durable(struct worker *w, uint32_t slot, uint32_t gen, uint64_t cookie, int err);
/* A commit waiter that is no connection: conn_durable hands its cookie to
 * w->orphan_durable (the kept MQTT sessions' record of a QoS 2 reading, which
 * must learn the outcome even when its connection is gone). */
#define CONN_SLOT_NONE UINT32_MAX
/* Pending commit bytes (or request memory) dropped: resume the connections
 * that waited for room. */
void conn_room_freed(struct worker *w);

#endif
