/* engine/loop.c — one worker thread: its io_uring, listeners, provided-buffer
 * ring, and the loop that drives connections and commits.
 *
 * Loop turn: submit what the last turn produced (log writes, sends), wait for
 * at least one completion, dispatch every completion (recv bytes go to their
 * session at once; a finished commit only records its outcome and posts its
 * connections), run the posted sessions, then free the connections that were
 * closed during the turn (never inside their own handlers).
 */
#include "engine/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/commit.h"
#include "engine/conn.h"
#include "engine/iojob.h"
#include "engine/session_http.h"
#include "engine/clients.h"
#include "engine/session_frame.h"
#include "engine/session_mqtt.h"
#include "engine/udp.h"
#include "protocols/tls.h"

#define RING_ENTRIES    4096
#define BUF_COUNT       1024 /* provided buffers per worker (power of two) */
#define BUF_SIZE        16384
#define BUF_GROUP       0
#define ACCEPT_PAUSE_MS 100 /* out of descriptors: accepting resumes after this */

static const struct session_ops *const listener_ops[LISTENER_KINDS] = {
    [LISTENER_HTTP] = &session_http_ops,    [LISTENER_ADMIN] = &session_admin_ops,
    [LISTENER_MQTT] = &session_mqtt_ops,    [LISTENER_HTTPS] = &session_http_ops,
    [LISTENER_MQTTS] = &session_mqtt_ops,   [LISTENER_FRAME] = &session_frame_ops,
    [LISTENER_FRAMES] = &session_frame_ops,
};

uint64_t loop_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void arm_accept(struct worker *w, unsigned kind)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_multishot_accept(sqe, w->listen_fd[kind], NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, op_pack(OP_ACCEPT, 0, kind));
    w->accept_armed[kind] = true;
}

static void arm_timer(struct worker *w)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    w->tick_ts.tv_sec = 0;
    w->tick_ts.tv_nsec = WHEEL_TICK_MS * 1000000L;
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, op_pack(OP_TIMER, 0, 0));
}

static void arm_sync_timer(struct worker *w)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    unsigned ms = w->eng->cfg.fsync_interval_ms;
    w->sync_ts.tv_sec = ms / 1000;
    w->sync_ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    io_uring_prep_timeout(sqe, &w->sync_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, op_pack(OP_SYNC_TIMER, 0, 0));
}

/* The eventfd says: stop requested, or storage jobs are done. */
static void arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_buf, sizeof w->wake_buf, 0);
    io_uring_sqe_set_data64(sqe, op_pack(OP_WAKE, 0, 0));
}

/* Out of descriptors: a pending client is told so (the reserve descriptor
 * makes room to accept it), and accepting pauses instead of spinning on
 * EMFILE; the tick resumes it (nginx's way). Said once per window. */
static void accept_out_of_fds(struct worker *w, unsigned kind, int err)
{
    worker_count(&w->st.accept_paused, 1);
    errlog_say(&w->errlog[ERRLOG_ACCEPT], w->now_ms,
               "worker %u: accept on %s: %s; pausing accepts for %u ms (raise the open files "
               "limit, or lower --max-connections)",
               w->id, listener_ops[kind]->name, strerror(-err), ACCEPT_PAUSE_MS);
    w->accept_resume_ms = w->now_ms + ACCEPT_PAUSE_MS;
    if (w->reserve_fd >= 0) {
        close(w->reserve_fd);
        w->reserve_fd = -1;
        /* the listening socket blocks (io_uring waits on it): take a client
         * only when one is there */
        struct pollfd pfd = {.fd = w->listen_fd[kind], .events = POLLIN};
        int fd = poll(&pfd, 1, 0) == 1
                     ? accept4(w->listen_fd[kind], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
                     : -1;
        if (fd >= 0) {
            const char *busy = listener_ops[kind]->busy_reply;
            if (busy) (void)!send(fd, busy, strlen(busy), MSG_DONTWAIT | MSG_NOSIGNAL);
            close(fd);
            worker_count(&w->st.refused_conns, 1);
        }
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

static void on_accept(struct worker *w, struct io_uring_cqe *cqe)
{
    unsigned kind = op_slot(cqe->user_data);
    if (!(cqe->flags & IORING_CQE_F_MORE)) w->accept_armed[kind] = false;
    if (cqe->res == -EMFILE || cqe->res == -ENFILE) {
        if (w->accept_armed[kind]) {
            /* a multishot that went on after the error would spin on it */
            struct io_uring_sqe *sqe = worker_sqe(w);
            io_uring_prep_cancel64(sqe, op_pack(OP_ACCEPT, 0, kind), 0);
            io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, 0, UINT32_MAX));
        }
        if (!w->draining) accept_out_of_fds(w, kind, cqe->res);
    } else if (cqe->res < 0) {
        if (cqe->res != -ECANCELED && !w->draining)
            errlog_say(&w->errlog[ERRLOG_ACCEPT], w->now_ms, "worker %u: accept: %s", w->id,
                       strerror(-cqe->res));
    } else {
        bool tls = kind == LISTENER_HTTPS || kind == LISTENER_MQTTS || kind == LISTENER_FRAMES;
        conn_open(w, cqe->res, kind, listener_ops[kind], tls ? w->tls : NULL);
    }
    if (!w->accept_armed[kind] && !w->draining && !w->accept_resume_ms && w->listen_fd[kind] >= 0)
        arm_accept(w, kind);
}

static void resume_accepts(struct worker *w)
{
    if (!w->accept_resume_ms || w->now_ms < w->accept_resume_ms) return;
    w->accept_resume_ms = 0;
    if (w->draining) return;
    for (unsigned k = 0; k < LISTENER_KINDS; k++)
        if (w->listen_fd[k] >= 0 && !w->accept_armed[k] && k != LISTENER_UDP) arm_accept(w, k);
}

static void begin_drain(struct worker *w)
{
    w->draining = true;
    w->drain_deadline_ms = w->now_ms + w->eng->cfg.drain_timeout_ms;
    udp_drain(w); /* its socket stays open for the last ACKs */
    for (unsigned k = 0; k < LISTENER_KINDS; k++) {
        if (w->listen_fd[k] < 0 || k == LISTENER_UDP) continue;
        if (w->accept_armed[k]) {
            struct io_uring_sqe *sqe = worker_sqe(w);
            io_uring_prep_cancel64(sqe, op_pack(OP_ACCEPT, 0, k), 0);
            io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, 0, UINT32_MAX));
        }
        close(w->listen_fd[k]);
        w->listen_fd[k] = -1;
    }
    /* idle and silent connections go now; the others finish their request */
    conn_drain_all(w);
}

static void on_tick(struct worker *w)
{
    struct sluice_engine *e = w->eng;
    if (!w->draining && atomic_load_explicit(&e->stopping, memory_order_acquire)) begin_drain(w);
    if (w->draining && w->now_ms >= w->drain_deadline_ms) conn_close_all(w);
    conn_timers_run(w);
    resume_accepts(w);
    commit_tick(w);
    udp_tick(w);
    static const char *const what[ERRLOG_KINDS] = {
        "accept errors", "commit failures", "log open failures", "log I/O errors", "out of memory"};
    for (unsigned i = 0; i < ERRLOG_KINDS; i++)
        errlog_tick(&w->errlog[i], w->now_ms, what[i]);
    if (!(w->draining && w->live == 0)) arm_timer(w);
}

static void on_wake(struct worker *w, struct io_uring_cqe *cqe)
{
    /* a reloaded certificate: new connections get it, live ones keep theirs */
    struct tls_ctx *reloaded = atomic_exchange(&w->tls_next, NULL);
    if (reloaded) {
        tls_ctx_free(w->tls);
        w->tls = reloaded;
    }
    struct iojob *j = iojob_take_done(w);
    while (j) {
        struct iojob *next = j->next;
        if (j->kind == IOJOB_CALL)
            j->done(w, j);
        else
            commit_job_done(w, j);
        j = next;
    }
    struct conn_ref kicks[32];
    size_t nk;
    while ((nk = clients_take_kicks(w, kicks, 32)))
        for (size_t i = 0; i < nk; i++)
            if (kicks[i].slot & UDP_SLOT_BIT)
                udp_kick(w, kicks[i].slot, kicks[i].gen);
            else
                conn_kick(w, kicks[i].slot, kicks[i].gen);
    /* UDP sessions made over TCP: worker 0 makes those offered, and the
     * connections whose answer came run again */
    udp_take_offers(w);
    while ((nk = udp_take_answers(w, kicks, 32)))
        for (size_t i = 0; i < nk; i++)
            conn_wake(w, kicks[i].slot, kicks[i].gen);
    if (!w->draining && atomic_load_explicit(&w->eng->stopping, memory_order_acquire))
        begin_drain(w);
    if (cqe->res >= 0 || cqe->res == -EINTR || cqe->res == -EAGAIN) arm_wake(w);
}

static void dispatch(struct worker *w, struct io_uring_cqe *cqe)
{
    switch (op_kind(cqe->user_data)) {
    case OP_ACCEPT:
        on_accept(w, cqe);
        break;
    case OP_RECV:
        conn_on_recv(w, cqe);
        break;
    case OP_SEND:
        conn_on_send(w, cqe);
        break;
    case OP_CANCEL:
        if (op_slot(cqe->user_data) != UINT32_MAX) conn_on_cancel(w, cqe);
        break;
    case OP_TIMER:
        on_tick(w);
        break;
    case OP_WAKE:
        on_wake(w, cqe);
        break;
    case OP_LOG_WRITE:
    case OP_LOG_SYNC:
    case OP_LOG_BGSYNC:
    case OP_LOG_AHEAD:
    case OP_LOG_AHEAD_SYNC:
        commit_complete(w, cqe);
        break;
    case OP_UDP_RECV:
        udp_on_recv(w, cqe);
        break;
    case OP_SYNC_TIMER:
        commit_interval_sync(w);
        if (!(w->draining && w->live == 0)) arm_sync_timer(w);
        break;
    }
}

/* The quiescent point of the auth table (engine/auth_swap.h): at the top of a
 * turn the worker holds no pointer into a table, so it takes the current one
 * and lets the control thread free those it no longer uses. */
static void observe_auth(struct worker *w)
{
    w->auth = auth_swap_quiesce(w->auth_reader);
    w->auth_gen = w->auth_reader->gen;
}

static void ring_teardown(struct worker *w)
{
    if (w->br) {
        io_uring_unregister_buf_ring(&w->ring, BUF_GROUP);
        munmap(w->br, w->nbufs * sizeof(struct io_uring_buf));
        w->br = NULL;
    }
    free(w->bufs);
    w->bufs = NULL;
    io_uring_queue_exit(&w->ring);
}

/* Returns 0, or a SLUICE_E* code with the reason printed (nothing is left
 * set up then). */
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
    if (rc) {
        fprintf(stderr, "sluiced: worker %u: io_uring setup failed: %s\n", w->id, strerror(-rc));
        return rc == -ENOMEM ? SLUICE_ENOMEM : SLUICE_ENOURING;
    }
    /* io_uring_enter by registered index: no fdget/fdput of the ring per
     * call (measured ~4 % more durable requests/s at -c64). Older kernels
     * refuse; the plain fd works the same. */
    io_uring_register_ring_fd(&w->ring);

    w->nbufs = BUF_COUNT;
    w->bufsz = BUF_SIZE;
    size_t ring_bytes = w->nbufs * sizeof(struct io_uring_buf);
    w->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    w->bufs = malloc((size_t)w->nbufs * w->bufsz);
    if (w->br == MAP_FAILED || !w->bufs) {
        fprintf(stderr, "sluiced: worker %u: out of memory for %u receive buffers of %u bytes\n",
                w->id, w->nbufs, w->bufsz);
        if (w->br != MAP_FAILED) munmap(w->br, ring_bytes);
        w->br = NULL;
        ring_teardown(w);
        return SLUICE_ENOMEM;
    }
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)w->br, .ring_entries = w->nbufs, .bgid = BUF_GROUP};
    rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (rc) {
        fprintf(stderr, "sluiced: worker %u: io_uring buffer ring: %s\n", w->id, strerror(-rc));
        munmap(w->br, ring_bytes);
        w->br = NULL;
        ring_teardown(w);
        return rc == -ENOMEM ? SLUICE_ENOMEM : SLUICE_ENOURING;
    }
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

static void stop_all(struct sluice_engine *e)
{
    atomic_store(&e->stopping, true);
    uint64_t one = 1;
    for (unsigned i = 0; i < e->nworkers; i++)
        if (e->workers[i].wake_fd >= 0 && write(e->workers[i].wake_fd, &one, sizeof one) < 0) {
            /* the tick notices the flag within 100 ms all the same */
        }
}

void *loop_main(void *arg)
{
    struct worker *w = arg;
    struct sluice_engine *e = w->eng;
    char name[16];
    snprintf(name, sizeof name, "sluice-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    pin(w);
    int rc = ring_setup(w);
    if (rc) {
        w->error = rc;
        auth_swap_offline(w->auth_reader);
        atomic_store(&e->stopping, true);
        atomic_fetch_add(&e->ready_workers, 1);
        return NULL;
    }
    w->now_ms = w->wheel_ms = loop_now_ms();
    observe_auth(w);
    for (unsigned k = 0; k < LISTENER_KINDS; k++)
        if (w->listen_fd[k] >= 0 && k != LISTENER_UDP) arm_accept(w, k);
    if ((rc = udp_start(w))) {
        w->error = rc;
        ring_teardown(w);
        auth_swap_offline(w->auth_reader);
        atomic_store(&e->stopping, true);
        atomic_fetch_add(&e->ready_workers, 1);
        return NULL;
    }
    arm_timer(w);
    arm_wake(w);
    if (e->cfg.fsync == SLUICE_FSYNC_INTERVAL) arm_sync_timer(w);
    atomic_fetch_add(&e->ready_workers, 1);

    while (
        !(w->draining && w->live == 0 && w->logs_busy == 0 && !w->dirty_logs && !clients_busy(w))) {
        commit_submit(w);
        clients_submit(w);
        conn_flush_sends(w);
        rc = io_uring_submit_and_wait(&w->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            fprintf(stderr, "sluiced: worker %u: io_uring_enter: %s; stopping\n", w->id,
                    strerror(-rc));
            w->error = SLUICE_EIO;
            stop_all(e); /* the others drain; this worker's readings were not acknowledged */
            break;
        }
        w->now_ms = loop_now_ms();
        observe_auth(w);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        conn_run_posted(w);
        udp_flush(w);
        conn_reap(w);
    }
    /* drained: everything acknowledged; tear down */
    auth_swap_offline(w->auth_reader);
    w->auth = NULL;
    commit_close_all(w);
    session_http_worker_free(w);
    udp_free(w);
    ring_teardown(w);
    return NULL;
}
