/* engine/conn.c — connections: bytes in and out, their caps, backpressure,
 * deadlines, and the hand-off to the protocol session (see conn.h).
 *
 * Input lands in provided buffers and is given to the session in place; only
 * what it leaves unconsumed (a message split across receives) is copied into
 * the connection's reassembly buffer, whose memory is counted against the
 * worker's request memory. Output accumulates in out[1] and leaves in one
 * send per loop turn. When the session cannot consume (output at its cap,
 * answers waiting for a commit, the worker's commit budget used up) and input
 * piles up, recv is cancelled: TCP flow control pushes back on the client.
 */
#include "engine/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocols/tls.h"
#include "storage/store.h"

#define BUF_GROUP   0
#define IN_MIN_CAP  1024u /* first reassembly allocation; grows by doubling */
#define IN_KEEP_CAP 4096u /* an empty buffer larger than this is given back */
#define OUT_MIN_CAP 256u  /* first output allocation; grows by doubling */
#define LINGER_MS   2000u /* after the last answer: how long input is drained */

static void settle(struct worker *w, struct conn *c);

/* ---- timer wheel ---- */

static void timer_unlink(struct worker *w, struct conn *c)
{
    if (!c->timed) return;
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        w->wheel[c->tslot] = c->tnext;
    if (c->tnext) c->tnext->tprev = c->tprev;
    c->tnext = c->tprev = NULL;
    c->timed = false;
}

/* Hashed wheel: a deadline further away than one revolution simply stays in
 * its slot until it is due. */
void conn_set_deadline(struct worker *w, struct conn *c, uint64_t deadline_ms)
{
    if (c->closing) return;
    if (c->timed && c->deadline_ms == deadline_ms) return;
    timer_unlink(w, c);
    c->deadline_ms = deadline_ms;
    if (!deadline_ms) return;
    uint32_t s = (uint32_t)((deadline_ms / WHEEL_TICK_MS) % WHEEL_SLOTS);
    c->tslot = s;
    c->tprev = NULL;
    c->tnext = w->wheel[s];
    if (c->tnext) c->tnext->tprev = c;
    w->wheel[s] = c;
    c->timed = true;
}

void conn_timers_run(struct worker *w)
{
    uint64_t now = w->now_ms;
    uint64_t from = w->wheel_ms / WHEEL_TICK_MS, to = now / WHEEL_TICK_MS;
    if (to - from >= WHEEL_SLOTS) from = to - WHEEL_SLOTS + 1;
    for (uint64_t t = from; t <= to; t++) {
        struct conn *c = w->wheel[t % WHEEL_SLOTS];
        while (c) {
            struct conn *next = c->tnext;
            if (c->deadline_ms && c->deadline_ms <= now) {
                timer_unlink(w, c);
                c->deadline_ms = 0;
                if (c->lingering)
                    conn_close(w, c);
                else if (!c->closing)
                    c->ops->timeout(w, c);
                if (!c->closing) settle(w, c);
            }
            c = next;
        }
    }
    w->wheel_ms = now;
}

/* ---- request memory: every reassembly buffer's capacity is counted ---- */

static void in_account(struct worker *w, size_t old_cap, size_t new_cap)
{
    w->request_memory += new_cap;
    w->request_memory -= old_cap;
    worker_gauge(&w->st.request_memory, w->request_memory);
    /* a body waiting for request memory may fit now */
    if (new_cap < old_cap && w->room_waiters) conn_room_freed(w);
}

static int in_append(struct worker *w, struct conn *c, const char *p, size_t n)
{
    size_t old = c->in.cap;
    int rc = buf_reserve(&c->in, n, IN_MIN_CAP);
    if (c->in.cap != old) in_account(w, old, c->in.cap);
    if (rc) return rc;
    memcpy(c->in.p + c->in.len, p, n);
    c->in.len += n;
    return 0;
}

static void in_consume(struct worker *w, struct conn *c, size_t n)
{
    buf_consume(&c->in, n);
    if (!c->in.len && c->in.cap > IN_KEEP_CAP) {
        in_account(w, c->in.cap, 0);
        buf_free(&c->in);
    }
}

bool conn_can_hold(const struct worker *w, const struct conn *c, size_t total)
{
    if (total <= c->in.cap) return true;
    size_t cap = c->in.cap ? c->in.cap : IN_MIN_CAP;
    while (cap < total)
        cap *= 2;
    return w->request_memory - c->in.cap + cap <= w->eng->cfg.max_request_memory;
}

int conn_reserve_input(struct worker *w, struct conn *c, size_t total)
{
    if (total <= c->in.len) return 0;
    size_t old = c->in.cap;
    int rc = buf_reserve(&c->in, total - c->in.len, IN_MIN_CAP);
    if (c->in.cap != old) in_account(w, old, c->in.cap);
    return rc;
}

bool conn_others_hold(const struct worker *w, const struct conn *c)
{
    return w->request_memory > c->in.cap;
}

/* ---- slots ---- */

static struct conn *conn_alloc(struct worker *w)
{
    struct conn *c = w->free_list;
    if (c) {
        w->free_list = c->next_free;
    } else {
        if (w->nconns == w->conn_cap) return NULL;
        c = &w->conns[w->nconns];
        c->slot = w->nconns++;
        c->gen = 1;
    }
    uint32_t slot = c->slot, gen = c->gen;
    memset(c, 0, sizeof *c);
    c->slot = slot;
    c->gen = gen;
    c->fd = -1;
    return c;
}

static void cancel_recv(struct worker *w, struct conn *c)
{
    if (!c->recv_armed) return;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_cancel64(sqe, op_pack(OP_RECV, c->gen, c->slot), 0);
    io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, c->gen, c->slot));
    c->inflight++;
}

void conn_close(struct worker *w, struct conn *c)
{
    if (c->closing) return;
    c->closing = true;
    timer_unlink(w, c);
    conn_unwait_room(w, c);
    cancel_recv(w, c);
    /* shutdown() also wakes a send blocked on a full socket buffer */
    shutdown(c->fd, SHUT_RDWR);
    c->next_free = w->reap;
    w->reap = c;
}

void conn_reap(struct worker *w)
{
    struct conn **pp = &w->reap;
    while (*pp) {
        struct conn *c = *pp;
        if (c->inflight || c->on_posted || c->on_dirty) {
            /* the kernel (or a list of this turn) still refers to it */
            pp = &c->next_free;
            continue;
        }
        *pp = c->next_free;
        close(c->fd);
        if (c->ops->close) c->ops->close(w, c);
        free(c->sess);
        in_account(w, c->in.cap, 0);
        buf_free(&c->in);
        buf_free(&c->out[0]);
        buf_free(&c->out[1]);
        buf_free(&c->pt);
        tls_conn_free(c->tls);
        c->tls = NULL;
        c->gen = (c->gen + 1) & 0xffffff;
        if (!c->gen) c->gen = 1;
        c->fd = -1;
        c->ops = NULL;
        c->sess = NULL;
        c->next_free = w->free_list;
        w->free_list = c;
        w->live--;
        worker_gauge(&w->st.conns_open, w->live);
        worker_count(&w->st.closed_conns, 1);
    }
}

static void arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, op_pack(OP_RECV, c->gen, c->slot));
    c->recv_armed = true;
    c->inflight++;
}

/* The client's address as 16 bytes (IPv4 as ::ffff:a.b.c.d), for the
 * per-address limits; all zero when it cannot be read. */
static void peer_address(int fd, uint8_t out[16])
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(out, 0, 16);
    if (getpeername(fd, (struct sockaddr *)&ss, &len)) return;
    ratelimit_addr((const struct sockaddr *)&ss, out);
}

struct conn *conn_open(struct worker *w, int fd, unsigned listener, const struct session_ops *ops,
                       struct tls_ctx *tls)
{
    struct conn *c = w->draining ? NULL : conn_alloc(w);
    void *sess = c ? calloc(1, ops->session_size ? ops->session_size : 1) : NULL;
    struct tls_conn *t = sess && tls ? tls_conn_new(tls) : NULL;
    if (sess && tls && !t) {
        free(sess);
        sess = NULL;
    }
    if (!sess) {
        /* at the connection limit (or out of memory): say so rather than
         * leave the client guessing, without ever blocking the loop */
        if (c) {
            c->next_free = w->free_list;
            w->free_list = c;
        }
        if (ops->busy_reply && !tls && !w->draining) /* plaintext: not on a TLS port */
            (void)!send(fd, ops->busy_reply, strlen(ops->busy_reply), MSG_DONTWAIT | MSG_NOSIGNAL);
        close(fd);
        worker_count(&w->st.refused_conns, 1);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    peer_address(fd, c->peer);
    c->fd = fd;
    c->listener = (uint8_t)listener;
    c->ops = ops;
    c->sess = sess;
    c->tls = t;
    w->live++;
    worker_gauge(&w->st.conns_open, w->live);
    worker_count(&w->st.accepted_conns, 1);
    ops->open(w, c);
    arm_recv(w, c);
    return c;
}

/* ---- output ---- */

static size_t unsent(const struct conn *c)
{
    return c->out[0].len - c->out_off + c->out[1].len;
}

bool conn_output_full(const struct conn *c)
{
    return unsent(c) >= CONN_OUT_HIGH;
}

static void mark_dirty(struct worker *w, struct conn *c)
{
    if (c->on_dirty) return;
    c->on_dirty = true;
    c->next_dirty = w->dirty;
    w->dirty = c;
}

/* Room for n bytes at the end of what goes on the wire. */
static char *out_reserve(struct worker *w, struct conn *c, size_t n)
{
    if (c->closing) return NULL;
    /* small first: an idle connection keeps its output buffer, and most
     * answers are tens of bytes (MQTT acks) to a few hundred (HTTP) */
    if (buf_reserve(&c->out[1], n, OUT_MIN_CAP)) {
        errlog_say(&w->errlog[ERRLOG_MEMORY], w->now_ms,
                   "worker %u: out of memory for a connection's output; closing it", w->id);
        conn_close(w, c);
        return NULL;
    }
    return c->out[1].p + c->out[1].len;
}

static void out_commit(struct worker *w, struct conn *c, size_t n)
{
    c->out[1].len += n;
    if (n) mark_dirty(w, c);
}

/* ---- TLS: ciphertext in and out, plaintext to and from the session ---- */

bool conn_client_cert_digest(const struct conn *c, uint8_t out[32])
{
    unsigned char der[8192];
    size_t n = c->tls ? tls_conn_peer_cert(c->tls, der, sizeof der) : 0;
    if (!n) return false;
    store_cert_digest(der, n, out);
    return true;
}

struct tls_arg {
    struct worker *w;
    struct conn *c;
};

static int tls_cipher_out(void *arg, const void *p, size_t n)
{
    struct tls_arg *a = arg;
    char *dst = out_reserve(a->w, a->c, n);
    if (!dst) return -1;
    memcpy(dst, p, n);
    out_commit(a->w, a->c, n);
    return 0;
}

static int tls_plain_in(void *arg, const void *p, size_t n);

char *conn_send_reserve(struct worker *w, struct conn *c, size_t n)
{
    if (!c->tls) return out_reserve(w, c, n);
    if (c->closing) return NULL;
    if (buf_reserve(&c->pt, n, OUT_MIN_CAP)) {
        conn_close(w, c);
        return NULL;
    }
    return c->pt.p + c->pt.len;
}

void conn_send_commit(struct worker *w, struct conn *c, size_t n)
{
    if (!c->tls) {
        out_commit(w, c, n);
        return;
    }
    if (!n || c->closing) return;
    struct tls_arg a = {w, c};
    struct tls_io io = {tls_cipher_out, tls_plain_in, &a};
    /* encrypted at once (records of up to 16 KiB), queued like plain output */
    if (!tls_conn_ready(c->tls) || tls_conn_write(c->tls, c->pt.p, n, &io)) conn_close(w, c);
    c->pt.len = 0;
}

void conn_send(struct worker *w, struct conn *c, const void *p, size_t n)
{
    char *dst = conn_send_reserve(w, c, n);
    if (!dst) return;
    memcpy(dst, p, n);
    conn_send_commit(w, c, n);
}

static void submit_send(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->out[0].p + c->out_off, c->out[0].len - c->out_off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, op_pack(OP_SEND, c->gen, c->slot));
    c->send_busy = true;
    c->inflight++;
}

void conn_flush_sends(struct worker *w)
{
    struct conn *c = w->dirty;
    w->dirty = NULL;
    while (c) {
        struct conn *next = c->next_dirty;
        c->on_dirty = false;
        if (!c->closing && !c->send_busy && c->out[1].len) {
            struct buf t = c->out[0];
            c->out[0] = c->out[1];
            c->out[1] = t;
            c->out[1].len = 0;
            c->out_off = 0;
            submit_send(w, c);
        }
        c = next;
    }
}

/* Everything is said: shut down for writing (the FIN follows the answers) and
 * drain what the client still sends for a moment, so closing with unread
 * input does not reset the connection before it read its answer. */
static void linger(struct worker *w, struct conn *c)
{
    if (c->lingering || c->closing) return;
    if (c->peer_closed || w->draining) {
        conn_close(w, c);
        return;
    }
    c->lingering = true;
    shutdown(c->fd, SHUT_WR);
    in_consume(w, c, c->in.len);
    conn_set_deadline(w, c, w->now_ms + LINGER_MS);
    if (!c->recv_armed) arm_recv(w, c);
}

void conn_on_send(struct worker *w, struct io_uring_cqe *cqe)
{
    struct conn *c = &w->conns[op_slot(cqe->user_data)];
    if (c->gen != op_gen(cqe->user_data)) return;
    c->inflight--;
    c->send_busy = false;
    if (c->closing) return;
    if (cqe->res <= 0) {
        conn_close(w, c);
        return;
    }
    worker_count(&w->st.bytes_out, (uint64_t)cqe->res);
    c->out_off += (size_t)cqe->res;
    if (c->out_off < c->out[0].len) {
        submit_send(w, c);
        return;
    }
    c->out[0].len = 0;
    c->out_off = 0;
    if (c->out[1].len) mark_dirty(w, c);
    if (c->out_wait && unsent(c) < CONN_OUT_LOW) {
        c->out_wait = false;
        conn_post(w, c);
    }
    if (c->finishing && !unsent(c)) linger(w, c);
}

/* ---- input ---- */

void conn_block(struct conn *c)
{
    c->blocked = true;
}

void conn_stop(struct worker *w, struct conn *c)
{
    (void)w;
    c->stopped = true;
}

void conn_post(struct worker *w, struct conn *c)
{
    if (c->on_posted || c->closing) return;
    c->on_posted = true;
    c->next_posted = w->posted;
    w->posted = c;
}

void conn_wait_room(struct worker *w, struct conn *c)
{
    if (c->on_room) return;
    c->on_room = true;
    c->next_room = w->room_waiters;
    w->room_waiters = c;
}

void conn_unwait_room(struct worker *w, struct conn *c)
{
    if (!c->on_room) return;
    struct conn **pp = &w->room_waiters;
    while (*pp && *pp != c)
        pp = &(*pp)->next_room;
    if (*pp) *pp = c->next_room;
    c->on_room = false;
}

void conn_room_freed(struct worker *w)
{
    struct conn *c = w->room_waiters;
    w->room_waiters = NULL;
    while (c) {
        struct conn *next = c->next_room;
        c->on_room = false;
        conn_post(w, c);
        c = next;
    }
}

static bool can_run(const struct conn *c)
{
    return !c->closing && !c->stopped && !c->lingering && !c->on_room && !conn_output_full(c);
}

/* Gives p[0..n) to the session; returns what it consumed and sets *n to what
 * is left of the bytes (the session may have compacted them). */
static size_t run_session(struct worker *w, struct conn *c, char *p, size_t *n)
{
    c->blocked = false;
    return c->ops->input(w, c, p, n);
}

/* After the session ran (or could not): pause or resume reading, and close a
 * connection that has said everything. */
static void settle(struct worker *w, struct conn *c)
{
    if (c->closing || c->lingering) return;
    bool out_full = conn_output_full(c);
    bool blocked = c->blocked || c->on_room || out_full;
    if (out_full) c->out_wait = true;
    if ((c->stopped || c->peer_closed) && !blocked && c->ops->idle(c)) {
        c->finishing = true;
        if (!unsent(c)) linger(w, c);
        return;
    }
    bool pause = c->stopped || (blocked && c->in.len >= CONN_PAUSE_SLACK);
    if (pause && !c->paused) {
        c->paused = true;
        worker_count(&w->st.input_paused, 1);
        cancel_recv(w, c);
    } else if (!pause && c->paused) {
        c->paused = false;
        if (!c->recv_armed && !c->peer_closed) arm_recv(w, c);
    }
}

static void return_buffer(struct worker *w, unsigned bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * w->bufsz, w->bufsz, (unsigned short)bid,
                          io_uring_buf_ring_mask(w->nbufs), 0);
    io_uring_buf_ring_advance(w->br, 1);
}

/* More than any message plus what a pause can let through: a client that
 * ignores flow control, or a session that never consumes. Said and closed. */
static bool over_limit(struct worker *w, struct conn *c, size_t n)
{
    if (c->in.len + n <= c->ops->max_input(w) + CONN_OVERSHOOT) return false;
    errlog_say(&w->errlog[ERRLOG_MEMORY], w->now_ms,
               "worker %u: %s connection buffered %zu bytes, over its limit; closing it", w->id,
               c->ops->name, c->in.len + n);
    conn_close(w, c);
    return true;
}

static int tls_plain_in(void *arg, const void *p, size_t n)
{
    struct tls_arg *a = arg;
    struct conn *c = a->c;
    if (c->closing || c->stopped || c->lingering) return 0; /* dropped, like plain input then */
    if (over_limit(a->w, c, n)) return -1;
    if (in_append(a->w, c, p, n)) {
        errlog_say(&a->w->errlog[ERRLOG_MEMORY], a->w->now_ms,
                   "worker %u: out of memory for a connection's input; closing it", a->w->id);
        conn_close(a->w, c);
        return -1;
    }
    return 0;
}

/* Ciphertext: the handshake runs, records are decrypted into the input
 * buffer, and the session parses them there (TLS copies once anyway). */
static void tls_input(struct worker *w, struct conn *c, const char *data, size_t n)
{
    struct tls_arg a = {w, c};
    struct tls_io io = {tls_cipher_out, tls_plain_in, &a};
    int rc = tls_conn_feed(c->tls, data, n, &io);
    if (c->closing) return;
    if (rc == TLS_ERROR) {
        /* a refused handshake or a bad record: its alert (if any) goes out,
         * then the connection closes; nothing more is read */
        if (unsent(c)) {
            c->stopped = true;
            c->finishing = true;
        } else {
            conn_close(w, c);
        }
        return;
    }
    if (rc == TLS_CLOSED) c->peer_closed = true;
    if (c->in.len && can_run(c)) {
        size_t left = c->in.len;
        size_t used = run_session(w, c, c->in.p, &left);
        c->in.len = left;
        if (!c->closing) in_consume(w, c, used);
    }
    if (c->peer_closed && !c->closing) conn_post(w, c);
    settle(w, c);
}

/* New bytes in a provided buffer. Parsed in place when nothing is buffered
 * and the session can run; only an unconsumed tail is copied. */
static void input(struct worker *w, struct conn *c, char *data, size_t n)
{
    if (c->lingering || c->stopped) return; /* answered and closing: the rest is dropped */
    if (c->tls) {
        tls_input(w, c, data, n); /* the limit applies to the plaintext (tls_plain_in) */
        return;
    }
    if (over_limit(w, c, n)) return;
    if (c->in.len == 0 && can_run(c)) {
        size_t left = n;
        size_t used = run_session(w, c, data, &left);
        if (used < left && !c->closing && in_append(w, c, data + used, left - used)) {
            errlog_say(&w->errlog[ERRLOG_MEMORY], w->now_ms,
                       "worker %u: out of memory for a connection's input; closing it", w->id);
            conn_close(w, c);
        }
    } else {
        if (in_append(w, c, data, n)) {
            conn_close(w, c);
            return;
        }
        if (can_run(c)) {
            size_t left = c->in.len;
            size_t used = run_session(w, c, c->in.p, &left);
            c->in.len = left;
            if (!c->closing) in_consume(w, c, used);
        }
    }
    settle(w, c);
}

void conn_on_recv(struct worker *w, struct io_uring_cqe *cqe)
{
    uint32_t slot = op_slot(cqe->user_data);
    struct conn *c = &w->conns[slot];
    bool has_buf = cqe->flags & IORING_CQE_F_BUFFER;
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    if (c->gen != op_gen(cqe->user_data)) {
        if (has_buf) return_buffer(w, bid);
        return;
    }
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        c->recv_armed = false;
        c->inflight--;
    }
    if (cqe->res > 0) {
        worker_count(&w->st.bytes_in, (uint64_t)cqe->res);
        if (!c->closing) input(w, c, w->bufs + (size_t)bid * w->bufsz, (size_t)cqe->res);
        return_buffer(w, bid);
    } else if (cqe->res == 0) {
        /* the peer finished sending; answer what it asked (also requests still
         * buffered behind a full output), then close */
        c->peer_closed = true;
        if (c->lingering) {
            conn_close(w, c);
        } else if (!c->closing) {
            conn_post(w, c);
        }
    } else if (cqe->res == -ENOBUFS) {
        /* every provided buffer is in use: re-armed below, counted */
        worker_count(&w->st.enobufs, 1);
    } else if (cqe->res != -ECANCELED) {
        conn_close(w, c);
    }
    if (has_buf && cqe->res <= 0) return_buffer(w, bid);
    if (c->closing || c->peer_closed) return;
    if (!c->recv_armed && (!c->paused || c->lingering)) arm_recv(w, c);
}

void conn_on_cancel(struct worker *w, struct io_uring_cqe *cqe)
{
    struct conn *c = &w->conns[op_slot(cqe->user_data)];
    if (c->gen == op_gen(cqe->user_data)) c->inflight--;
}

void conn_run_posted(struct worker *w)
{
    /* sessions may post connections (their own or others') while running:
     * go on until the list stays empty */
    while (w->posted) {
        struct conn *c = w->posted;
        w->posted = c->next_posted;
        c->on_posted = false;
        if (c->closing || c->lingering) continue;
        if (can_run(c)) {
            size_t left = c->in.len;
            size_t used = run_session(w, c, c->in.p, &left);
            c->in.len = left;
            if (c->closing) continue;
            in_consume(w, c, used);
        } else if (c->stopped && !conn_output_full(c)) {
            /* parses nothing more, but its queued answers still go out */
            size_t none = 0;
            run_session(w, c, NULL, &none);
            if (c->closing) continue;
        }
        settle(w, c);
    }
}

void conn_kick(struct worker *w, uint32_t slot, uint32_t gen)
{
    if (slot >= w->nconns) return;
    struct conn *c = &w->conns[slot];
    if (c->gen != gen || c->closing || !c->ops || !c->ops->takeover) return;
    c->ops->takeover(w, c);
    conn_post(w, c);
}

void conn_wake(struct worker *w, uint32_t slot, uint32_t gen)
{
    if (slot >= w->nconns) return;
    struct conn *c = &w->conns[slot];
    if (c->gen != gen || c->closing || !c->ops) return;
    conn_post(w, c);
}

void conn_durable(struct worker *w, uint32_t slot, uint32_t gen, uint64_t cookie, int err)
{
    if (slot == CONN_SLOT_NONE) {
        if (w->orphan_durable) w->orphan_durable(w, cookie, err);
        return;
    }
    struct conn *c = &w->conns[slot];
    if (c->gen != gen || c->closing || !c->ops) return;
    c->ops->durable(w, c, cookie, err);
    conn_post(w, c);
}

void conn_drain_all(struct worker *w)
{
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd < 0 || c->closing) continue;
        if (c->lingering) {
            conn_close(w, c);
            continue;
        }
        c->ops->drain(w, c);
        if (!c->closing) settle(w, c);
    }
}

void conn_close_all(struct worker *w)
{
    for (uint32_t i = 0; i < w->nconns; i++)
        if (w->conns[i].fd >= 0 && !w->conns[i].closing) conn_close(w, &w->conns[i]);
}
