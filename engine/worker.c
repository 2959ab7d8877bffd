/* engine/worker.c — one worker thread: its io_uring, listeners, provided-buffer
 * ring, connections, timer wheel and the loop that drives them.
 *
 * Loop turn: submit what the last turn produced (log writes, sends), wait for at
 * least one completion, dispatch every completion, then free the connections
 * that were closed during the turn (never inside their own handlers).
 */
#include "engine/engine.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING_ENTRIES 4096
#define BUF_COUNT    1024 /* provided buffers per worker (power of two) */
#define BUF_SIZE     16384
#define BUF_GROUP    0
/* While a connection cannot make progress (its response queue is full), input
 * beyond this much is not read: recv is cancelled and TCP flow control pushes
 * back on the client. */
#define PAUSE_SLACK (256u << 10)

uint64_t worker_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* An SQE, submitting the queue first when it is full (never fails for want of SQEs). */
static struct io_uring_sqe *get_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

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

/* Sets the connection's single deadline (0 clears it). Hashed wheel: a deadline
 * further away than one revolution simply stays in its slot until it is due. */
void worker_set_deadline(struct worker *w, struct conn *c, uint64_t deadline_ms)
{
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

static void timer_run(struct worker *w)
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
                ingest_timeout(w, c);
            }
            c = next;
        }
    }
    w->wheel_ms = now;
}

/* ---- connections ---- */

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
    w->live++;
    return c;
}

/* Marks c closed. Its operations are cancelled; the slot is freed by reap()
 * at the end of the loop turn once the kernel holds nothing of it. */
void conn_close(struct worker *w, struct conn *c)
{
    if (c->closing) return;
    c->closing = true;
    timer_unlink(w, c);
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_cancel64(sqe, op_pack(OP_RECV, c->gen, c->slot), 0);
        io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, c->gen, c->slot));
        c->inflight++;
    }
    /* shutdown() also wakes a send blocked on a full socket buffer */
    shutdown(c->fd, SHUT_RDWR);
    c->next_free = w->reap;
    w->reap = c;
}

static void reap(struct worker *w)
{
    struct conn **pp = &w->reap;
    while (*pp) {
        struct conn *c = *pp;
        if (c->inflight) {
            pp = &c->next_free;
            continue;
        }
        *pp = c->next_free;
        close(c->fd);
        for (uint32_t i = c->qhead; i != c->qtail; i++)
            free(c->q[i % CONN_QUEUE].msg);
        free(c->rbuf);
        free(c->out[0].p);
        free(c->out[1].p);
        c->gen = (c->gen + 1) & 0xffffff;
        if (!c->gen) c->gen = 1;
        c->fd = -1;
        c->next_free = w->free_list;
        w->free_list = c;
        w->live--;
        atomic_fetch_add_explicit(&w->st.closed_conns, 1, memory_order_relaxed);
    }
}

static void arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, op_pack(OP_RECV, c->gen, c->slot));
    c->recv_armed = true;
    c->inflight++;
}

static void arm_accept(struct worker *w, unsigned kind)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_multishot_accept(sqe, w->listen_fd[kind], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, op_pack(OP_ACCEPT, 0, kind));
    w->accept_armed[kind] = true;
}

static void arm_timer(struct worker *w)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    w->tick_ts.tv_sec = 0;
    w->tick_ts.tv_nsec = WHEEL_TICK_MS * 1000000L;
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, op_pack(OP_TIMER, 0, 0));
}

/* --fsync interval: the period of the background fdatasync */
static void arm_sync_timer(struct worker *w)
{
    unsigned ms = w->eng->cfg.fsync_interval_ms;
    struct io_uring_sqe *sqe = get_sqe(w);
    w->sync_ts.tv_sec = ms / 1000;
    w->sync_ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    io_uring_prep_timeout(sqe, &w->sync_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, op_pack(OP_SYNC_TIMER, 0, 0));
}

static int outbuf_reserve(struct outbuf *b, size_t n)
{
    if (b->len + n <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void conn_mark_dirty(struct worker *w, struct conn *c)
{
    if (c->on_dirty) return;
    c->on_dirty = true;
    c->next_dirty = w->dirty;
    w->dirty = c;
}

char *worker_send_reserve(struct worker *w, struct conn *c, size_t n)
{
    if (c->closing || outbuf_reserve(&c->out[1], n)) return NULL;
    conn_mark_dirty(w, c);
    return c->out[1].p + c->out[1].len;
}

/* Queues bytes to c; they leave in one send at the end of the loop turn. Only
 * out[1] is appended to: out[0] may be in the kernel's hands. */
void worker_send(struct worker *w, struct conn *c, const char *p, size_t n)
{
    char *dst = worker_send_reserve(w, c, n);
    if (!dst) {
        conn_close(w, c); /* out of memory for a response: nothing sane to say */
        return;
    }
    memcpy(dst, p, n);
    c->out[1].len += n;
}

static void submit_send(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->out[0].p + c->out_off, c->out[0].len - c->out_off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, op_pack(OP_SEND, c->gen, c->slot));
    c->send_busy = true;
    c->inflight++;
}

static void flush_sends(struct worker *w)
{
    struct conn *c = w->dirty;
    w->dirty = NULL;
    while (c) {
        struct conn *next = c->next_dirty;
        c->on_dirty = false;
        if (!c->closing && !c->send_busy && c->out[1].len) {
            struct outbuf t = c->out[0];
            c->out[0] = c->out[1];
            c->out[1] = t;
            c->out[1].len = 0;
            c->out_off = 0;
            submit_send(w, c);
        }
        c = next;
    }
}

/* Parses the reassembly buffer when the response queue has room, and drops
 * what the parser consumed. */
static void parse_buffered(struct worker *w, struct conn *c)
{
    if (c->qtail - c->qhead >= CONN_QUEUE) return;
    size_t used = ingest_http(w, c, c->rbuf, c->rlen);
    if (used) {
        memmove(c->rbuf, c->rbuf + used, c->rlen - used);
        c->rlen -= used;
    }
}

/* True once a connection that is closing (it asked to, or the peer finished
 * sending) has nothing left to say. */
static bool conn_finished(const struct conn *c)
{
    return (c->stop_input || c->peer_closed) && c->qhead == c->qtail && !c->send_busy &&
           !c->out[1].len;
}

/* Re-runs the parser over buffered input (after responses freed queue room),
 * resumes a paused recv, and closes a connection that has finished. */
void worker_conn_progress(struct worker *w, struct conn *c)
{
    if (c->closing) return;
    if (c->rlen && !c->stop_input) parse_buffered(w, c);
    if (c->closing) return;
    if (conn_finished(c)) {
        conn_close(w, c);
        return;
    }
    ingest_deadline(w, c);
    if (c->paused && !c->stop_input && c->qtail - c->qhead < CONN_QUEUE) {
        c->paused = false;
        if (!c->recv_armed && !c->peer_closed) arm_recv(w, c);
    }
}

static int rbuf_append(struct conn *c, const char *p, size_t n, size_t cap)
{
    if (c->rlen + n > cap) return -E2BIG;
    if (c->rlen + n > c->rcap) {
        size_t ncap = c->rcap ? c->rcap : BUF_SIZE;
        while (ncap < c->rlen + n)
            ncap *= 2;
        char *q = realloc(c->rbuf, ncap);
        if (!q) return -ENOMEM;
        c->rbuf = q;
        c->rcap = ncap;
    }
    memcpy(c->rbuf + c->rlen, p, n);
    c->rlen += n;
    return 0;
}

/* New bytes in a provided buffer. Parsed in place when nothing is pending;
 * only an incomplete tail is copied into the connection's reassembly buffer. */
static void conn_input(struct worker *w, struct conn *c, char *data, size_t n)
{
    const struct sluice_engine *e = w->eng;
    /* a request may be a full head plus a body whose chunked framing can be
     * several times the decoded size; past this the client is abusive */
    size_t cap = HTTP_MAX_HEADER_BYTES + 4 * e->cfg.max_body + PAUSE_SLACK;
    if (c->stop_input) return;
    if (c->rlen == 0) {
        size_t used = ingest_http(w, c, data, n);
        if (used < n && !c->closing && rbuf_append(c, data + used, n - used, cap)) conn_close(w, c);
    } else {
        if (rbuf_append(c, data, n, cap)) {
            conn_close(w, c);
            return;
        }
        parse_buffered(w, c);
    }
    if (c->closing) return;
    /* queue full and input piling up: stop reading, TCP pushes back. (A large
     * body still arriving is not "piling up": it is bounded by cap above.) */
    if (c->qtail - c->qhead >= CONN_QUEUE && c->rlen >= PAUSE_SLACK && c->recv_armed &&
        !c->paused) {
        c->paused = true;
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_cancel64(sqe, op_pack(OP_RECV, c->gen, c->slot), 0);
        io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, c->gen, c->slot));
        c->inflight++;
    }
}

static void return_buffer(struct worker *w, unsigned bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * w->bufsz, w->bufsz, (unsigned short)bid,
                          io_uring_buf_ring_mask(w->nbufs), 0);
    io_uring_buf_ring_advance(w->br, 1);
}

/* The client's address as 16 bytes (IPv4 as ::ffff:a.b.c.d), for the
 * per-address limits; all zero when it cannot be read. */
static void peer_address(int fd, uint8_t out[16])
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    memset(out, 0, 16);
    if (getpeername(fd, (struct sockaddr *)&ss, &len)) return;
    if (ss.ss_family == AF_INET6) {
        memcpy(out, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    } else if (ss.ss_family == AF_INET) {
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    }
}

static void on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
    unsigned kind = op_slot(cqe->user_data);
    if (!(cqe->flags & IORING_CQE_F_MORE)) w->accept_armed[kind] = false;
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED && !w->draining)
            fprintf(stderr, "sluiced: worker %u: accept: %s\n", w->id, strerror(-cqe->res));
    } else {
        int fd = cqe->res;
        struct conn *c = w->draining ? NULL : conn_alloc(w);
        if (!c) {
            close(fd); /* at the connection limit or draining: refuse */
        } else {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            peer_address(fd, c->peer);
            c->fd = fd;
            c->kind = (uint8_t)kind;
            atomic_fetch_add_explicit(&w->st.accepted_conns, 1, memory_order_relaxed);
            /* the first request's header deadline starts at accept (nginx's
             * client_header_timeout), so a silent connection is cut off too */
            c->phase = PHASE_HEAD;
            c->req_deadline_ms = w->now_ms + w->eng->cfg.header_timeout_ms;
            worker_set_deadline(w, c, c->req_deadline_ms);
            arm_recv(w, c);
        }
    }
    if (!w->accept_armed[kind] && !w->draining && w->listen_fd[kind] >= 0) arm_accept(w, kind);
}

static void on_recv(struct worker *w, struct io_uring_cqe *cqe)
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
        atomic_fetch_add_explicit(&w->st.bytes_in, (uint64_t)cqe->res, memory_order_relaxed);
        if (!c->closing) conn_input(w, c, w->bufs + (size_t)bid * w->bufsz, (size_t)cqe->res);
        return_buffer(w, bid);
    } else if (cqe->res == 0) {
        /* the peer finished sending; answer what it asked (also requests still
         * buffered behind a full response queue), then close */
        c->peer_closed = true;
    } else if (cqe->res == -ENOBUFS) {
        atomic_fetch_add_explicit(&w->st.enobufs, 1, memory_order_relaxed);
    } else if (cqe->res != -ECANCELED) {
        conn_close(w, c);
    }
    if (has_buf && cqe->res <= 0) return_buffer(w, bid);
    if (c->closing) return;
    if (c->peer_closed) {
        worker_conn_progress(w, c);
        return;
    }
    if (!c->recv_armed && !c->paused) arm_recv(w, c);
}

static void on_send(struct worker *w, struct io_uring_cqe *cqe)
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
    atomic_fetch_add_explicit(&w->st.bytes_out, (uint64_t)cqe->res, memory_order_relaxed);
    c->out_off += (size_t)cqe->res;
    if (c->out_off < c->out[0].len) {
        submit_send(w, c);
        return;
    }
    c->out[0].len = 0;
    c->out_off = 0;
    if (c->out[1].len) conn_mark_dirty(w, c);
    worker_conn_progress(w, c);
}

static void begin_drain(struct worker *w)
{
    w->draining = true;
    w->drain_deadline_ms = w->now_ms + w->eng->cfg.drain_timeout_ms;
    for (unsigned k = 0; k < LISTENER_KINDS; k++) {
        if (w->listen_fd[k] < 0) continue;
        if (w->accept_armed[k]) {
            struct io_uring_sqe *sqe = get_sqe(w);
            io_uring_prep_cancel64(sqe, op_pack(OP_ACCEPT, 0, k), 0);
            io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, 0, UINT32_MAX));
        }
        close(w->listen_fd[k]);
        w->listen_fd[k] = -1;
    }
    /* idle connections go now; the others finish their request and close */
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd < 0 || c->closing) continue;
        if (c->phase == PHASE_IDLE && c->rlen == 0 && c->qhead == c->qtail && !c->send_busy &&
            !c->out[1].len)
            conn_close(w, c);
    }
}

static void on_tick(struct worker *w)
{
    struct sluice_engine *e = w->eng;
    if (!w->draining && atomic_load_explicit(&e->stopping, memory_order_acquire)) begin_drain(w);
    if (w->draining && w->now_ms >= w->drain_deadline_ms) {
        for (uint32_t i = 0; i < w->nconns; i++)
            if (w->conns[i].fd >= 0 && !w->conns[i].closing) conn_close(w, &w->conns[i]);
    }
    timer_run(w);
    if (!(w->draining && w->live == 0)) arm_timer(w);
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    switch (op_kind(cqe->user_data)) {
    case OP_ACCEPT:
        on_accept(w, cqe);
        break;
    case OP_RECV:
        on_recv(w, cqe);
        break;
    case OP_SEND:
        on_send(w, cqe);
        break;
    case OP_CANCEL:
        if (op_slot(cqe->user_data) != UINT32_MAX) {
            struct conn *c = &w->conns[op_slot(cqe->user_data)];
            if (c->gen == op_gen(cqe->user_data)) c->inflight--;
        }
        break;
    case OP_TIMER:
        on_tick(w);
        break;
    case OP_WAKE:
        /* stop requested: drain now rather than at the next tick */
        if (!w->draining && atomic_load_explicit(&w->eng->stopping, memory_order_acquire))
            begin_drain(w);
        break;
    case OP_LOG_WRITE:
    case OP_LOG_SYNC:
    case OP_LOG_BGSYNC:
    case OP_LOG_AHEAD:
    case OP_LOG_AHEAD_SYNC:
        commit_complete(w, cqe);
        break;
    case OP_SYNC_TIMER:
        commit_interval_sync(w);
        if (!(w->draining && w->live == 0)) arm_sync_timer(w);
        break;
    }
}

/* Picks up a new auth table and tells the control thread which epoch this
 * worker has reached, so it can free tables no worker can still be reading. */
static void observe_auth(struct worker *w)
{
    struct sluice_engine *e = w->eng;
    uint64_t epoch = atomic_load_explicit(&e->auth_epoch, memory_order_acquire);
    const struct auth_table *t = atomic_load_explicit(&e->auth, memory_order_acquire);
    if (t != w->auth) {
        w->auth = t;
        w->auth_gen = epoch + 1;
    }
    atomic_store_explicit(&w->observed_epoch, epoch, memory_order_release);
}

static int ring_setup(struct worker *w)
{
    static const unsigned tries[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        p.flags = tries[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = RING_ENTRIES * 4;
        rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
        if (rc == 0) {
            w->ring_flags = tries[i];
            break;
        }
    }
    if (rc) return rc;
    /* io_uring_enter by registered index: no fdget/fdput of the ring per
     * call (measured ~4 % more durable requests/s at -c64). Older kernels
     * refuse; the plain fd works the same. */
    io_uring_register_ring_fd(&w->ring);

    w->nbufs = BUF_COUNT;
    w->bufsz = BUF_SIZE;
    size_t ring_bytes = w->nbufs * sizeof(struct io_uring_buf);
    w->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    w->bufs = malloc((size_t)w->nbufs * w->bufsz);
    if (w->br == MAP_FAILED || !w->bufs) return -ENOMEM;
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)w->br, .ring_entries = w->nbufs, .bgid = BUF_GROUP};
    rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (rc) return rc;
    io_uring_buf_ring_init(w->br);
    for (unsigned i = 0; i < w->nbufs; i++)
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * w->bufsz, w->bufsz, (unsigned short)i,
                              io_uring_buf_ring_mask(w->nbufs), (int)i);
    io_uring_buf_ring_advance(w->br, (int)w->nbufs);
    return 0;
}

static void pin(struct worker *w)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu <= 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w->id % (unsigned)ncpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sluice_engine *e = w->eng;
    pin(w);
    int rc = ring_setup(w);
    if (rc) {
        fprintf(stderr, "sluiced: worker %u: io_uring setup failed: %s\n", w->id, strerror(-rc));
        w->error = SLUICE_ENOURING;
        atomic_store(&e->stopping, true);
        atomic_fetch_add(&e->ready_workers, 1);
        return NULL;
    }
    w->now_ms = w->wheel_ms = worker_now_ms();
    observe_auth(w);
    for (unsigned k = 0; k < LISTENER_KINDS; k++)
        if (w->listen_fd[k] >= 0) arm_accept(w, k);
    arm_timer(w);
    if (w->wake_fd >= 0) {
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_poll_add(sqe, w->wake_fd, POLLIN);
        io_uring_sqe_set_data64(sqe, op_pack(OP_WAKE, 0, 0));
    }
    if (e->cfg.fsync == SLUICE_FSYNC_INTERVAL) arm_sync_timer(w);
    atomic_fetch_add(&e->ready_workers, 1);

    while (!(w->draining && w->live == 0 && w->logs_busy == 0 && !w->dirty_logs)) {
        commit_submit(w);
        flush_sends(w);
        rc = io_uring_submit_and_wait(&w->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            fprintf(stderr, "sluiced: worker %u: io_uring_enter: %s\n", w->id, strerror(-rc));
            w->error = SLUICE_EIO;
            break;
        }
        w->now_ms = worker_now_ms();
        observe_auth(w);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        reap(w);
    }
    /* drained: everything acknowledged; tear down */
    commit_close_all(w);
    io_uring_unregister_buf_ring(&w->ring, BUF_GROUP);
    io_uring_queue_exit(&w->ring);
    munmap(w->br, w->nbufs * sizeof(struct io_uring_buf));
    free(w->bufs);
    return NULL;
}
