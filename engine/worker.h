/* engine/worker.h — the state a worker thread owns, and the engine-wide state
 * it reads (not public).
 *
 * One struct worker per core, each with its own io_uring, listeners, provided
 * buffer ring, connections, timer wheel and open logs. Workers share only the
 * read-only config, the auth table pointer (swapped atomically by the control
 * thread), the storage helper's job queue (engine/iojob.c, off the data path)
 * and a few atomics; nothing on the data path takes a lock.
 *
 * The engine reads as its data path, one file a step:
 *   loop.c (accept, completions) → conn.c (bytes in and out, caps, timers)
 *   → [tls] → the protocol's session: session_http.c (device + admin; admin.c
 *   renders /metrics), session_mqtt.c (clients.c: client ids, kept sessions),
 *   session_frame.c (devseq.c: each device's durable mark) → ingest.c
 *   (authenticated readings → a log batch) → commit.c (write + fdatasync)
 *   → conn_durable → the session's durable op → its acknowledgement.
 *   Datagrams skip conn.c: loop.c → udp.c → ingest.c → commit.c → udp.c.
 * This header is only data and tiny inline helpers, so every step can include
 * it without any step depending on a later one.
 */
#ifndef SLUICE_ENGINE_WORKER_H
#define SLUICE_ENGINE_WORKER_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/auth.h"
#include "engine/auth_swap.h"
#include "engine/errlog.h"
#include "engine/ratelimit.h"
#include "sluice.h"

enum listener_kind {
    LISTENER_HTTP = 0,
    LISTENER_ADMIN,
    LISTENER_MQTT,
    LISTENER_HTTPS,  /* the HTTP session behind TLS */
    LISTENER_MQTTS,  /* the MQTT session behind TLS */
    LISTENER_FRAME,  /* the compact frame protocol */
    LISTENER_FRAMES, /* ... behind TLS */
    LISTENER_UDP,    /* frames in datagrams: a UDP socket on worker 0 (engine/udp.c) */
    LISTENER_KINDS
};

/* user_data = kind:8 | generation:24 | slot:32. The generation lets a completion
 * that arrives after its connection slot was reused be recognised and dropped. */
enum op_kind {
    OP_ACCEPT = 1,
    OP_RECV,
    OP_SEND,
    OP_CANCEL,
    OP_TIMER,
    OP_LOG_WRITE,
    OP_LOG_SYNC,
    OP_LOG_BGSYNC,     /* --fsync interval: a standalone fdatasync */
    OP_SYNC_TIMER,     /* --fsync interval: its period */
    OP_WAKE,           /* the worker's eventfd: stop requested, or storage jobs done */
    OP_LOG_AHEAD,      /* direct writers: zeros written ahead in the background */
    OP_LOG_AHEAD_SYNC, /* ... and their fsync */
    OP_UDP_RECV,       /* the UDP socket's multishot recvmsg */
};

static inline uint64_t op_pack(unsigned kind, uint32_t gen, uint32_t slot)
{
    return ((uint64_t)kind << 56) | ((uint64_t)(gen & 0xffffff) << 32) | slot;
}
static inline unsigned op_kind(uint64_t ud)
{
    return (unsigned)(ud >> 56);
}
static inline uint32_t op_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32) & 0xffffff;
}
static inline uint32_t op_slot(uint64_t ud)
{
    return (uint32_t)ud;
}

/* The fault seam (tests only): SLUICE_FAULT_INJECT="write|sync:ERRNO[:org=N]
 * [:after=K][:count=C]" fails matching log operations with -ERRNO, after letting
 * K pass, C times (0: forever). See docs/operations.md. */
enum fault_op { FAULT_WRITE = 1, FAULT_SYNC = 2 };
struct fault {
    int op;
    int err; /* positive errno; 0: no fault injection */
    uint32_t org;
    uint64_t after, count;
    _Atomic uint64_t seen;
};

#define WHEEL_SLOTS   1024
#define WHEEL_TICK_MS 100

/* Counters (monotonic) a worker updates and /metrics sums; relaxed atomics so
 * the admin session on worker 0 can read them while the others write. */
struct worker_stats {
    _Atomic uint64_t accepted_conns, closed_conns, refused_conns, requests, readings, bytes_in,
        bytes_out, commits, commit_failures, enobufs, auth_failures, auth_throttled, input_paused,
        accept_paused, request_memory_refused, logs_opened, logs_suspended, request_too_large,
        mqtt_connects, mqtt_connect_refused, mqtt_publishes, mqtt_disconnects_sent, mqtt_wills,
        mqtt_sessions_resumed, frame_sessions, frame_gaps;
    /* gauges */
    _Atomic uint64_t conns_open, pending_bytes, request_memory, logs_open;
};

/* Repeated errors of one kind print one line, then a count (engine/errlog.h). */
enum worker_errlog {
    ERRLOG_ACCEPT,
    ERRLOG_COMMIT,
    ERRLOG_LOG_OPEN,
    ERRLOG_LOG_IO,
    ERRLOG_MEMORY,
    ERRLOG_KINDS
};

struct conn;
struct commit_log;
struct session_ops;
struct iojob;
struct sluice_engine;
struct tls_ctx;

/* A connection named across threads: its worker, slot and generation. */
struct conn_ref {
    uint32_t worker, slot, gen;
};

struct worker {
    struct sluice_engine *eng;
    unsigned id;
    pthread_t thread;
    struct io_uring ring;
    unsigned ring_flags;

    int listen_fd[LISTENER_KINDS];
    bool accept_armed[LISTENER_KINDS];
    uint64_t accept_resume_ms; /* accepting paused (out of descriptors) until then; 0: not */
    int reserve_fd;            /* a spare descriptor, given up to refuse one client on EMFILE */

    struct io_uring_buf_ring *br;
    char *bufs;
    unsigned nbufs, bufsz;

    struct conn *conns;
    uint32_t nconns, conn_cap, live;
    struct conn *free_list;
    struct conn *dirty;  /* connections with output to send at the end of the turn */
    struct conn *posted; /* connections whose session runs again after this turn's completions */
    struct conn *reap;   /* closing connections to free once the kernel holds nothing of them */
    struct conn *room_waiters; /* paused until pending commit bytes drop below the budget */

    struct conn *wheel[WHEEL_SLOTS];
    uint64_t wheel_ms; /* time up to which the wheel has been processed */
    uint64_t now_ms;
    struct __kernel_timespec tick_ts, sync_ts;

    struct commit_log **logs; /* indexed by org id */
    uint32_t nlogs;
    struct commit_log *dirty_logs;
    unsigned logs_busy;    /* logs with a write, sync or storage job in flight */
    unsigned logs_open;    /* logs holding descriptors */
    unsigned logs_cap;     /* most logs kept open at once (from the descriptor limit) */
    uint64_t logs_scan_ms; /* when idle logs were last looked for */

    /* budgets (docs/operations.md, "Memory") */
    uint64_t pending_bytes;  /* record bytes in batches not yet durable */
    uint64_t request_memory; /* bytes of reassembly buffers (unfinished requests) */

    /* storage jobs done by the helper thread, handed back under the engine's
     * job lock; the worker's eventfd says there are some */
    struct iojob *jobs_done;
    uint64_t wake_buf;

    /* the token table of this loop turn, from the worker's reader slot (picked
     * up at the top of each turn, a quiescent point); auth_gen changes with it */
    const struct auth_table *auth;
    uint64_t auth_gen;
    struct auth_swap_reader *auth_reader;
    struct ratelimit *authrl; /* failed authentications per source address */

    void *http;      /* protocol state shared by the worker's HTTP sessions (session_http.c) */
    struct udp *udp; /* worker 0 with --udp: its sessions (engine/udp.c) */
    /* worker 0 answered a UDP session this worker's TCP connection offered
     * (engine/udp.h, "made over TCP"): look in the mailbox at the next wake */
    _Atomic bool udp_answers;

    int wake_fd; /* eventfd: sluice_engine_stop (async-signal-safe) and storage jobs */
    /* connections other workers asked this one to end (clients.c; under the
     * engine's clients lock) */
    struct conn_ref *kicks;
    uint32_t nkicks, kick_cap;
    /* acknowledgements waiting for kept MQTT sessions to be written, and
     * whether this worker's write is with the helper thread */
    void (*orphan_durable)(struct worker *w, uint64_t cookie, int err); /* conn.h CONN_SLOT_NONE */
    /* TLS: this worker's reference to the certificate new connections get,
     * and the one a reload handed over, taken at the next wake */
    struct tls_ctx *tls;
    _Atomic(struct tls_ctx *) tls_next;
    struct session_wait *swaits;
    uint32_t nswaits, swait_cap;
    bool swrite_busy;
    uint64_t swrite_retry_ms; /* a write failed: the next not before then */
    bool draining;
    uint64_t drain_deadline_ms;
    int error;
    struct errlog errlog[ERRLOG_KINDS];
    struct worker_stats st;
};

/* MQTT client ids connected now, and sessions kept between connections
 * (engine/clients.c). */
struct client_entry;
struct device_count;
struct clients {
    pthread_mutex_t lock;
    struct client_entry **b;  /* by (org, device, client id) */
    struct client_entry **eb; /* by session epoch */
    struct device_count **db; /* kept sessions per device */
    _Atomic uint32_t kept; /* entries with a session expiry (under the lock; /metrics reads it) */
    uint32_t epochs;       /* sessions begun (their epoch numbers) */
    /* keys changed since the last write to the store, [u16 n][org][device][id] */
    uint8_t *dirty;
    size_t ndirty, dirty_cap;
    uint64_t dirty_seq;           /* one more per change */
    _Atomic uint64_t written_seq; /* every change up to it is in the store */
    pthread_mutex_t write_lock;   /* one writer at a time, so the newest state lands last */
    struct errlog write_errs;     /* failed writes (under write_lock): a line, then counts */
    bool ready;
};

/* The frame protocol's per-device durable marks and live connections
 * (engine/devseq.c). */
struct devseq_entry;
struct udp_mail;
struct devseq {
    pthread_mutex_t lock;
    struct devseq_entry *v; /* open addressing by device id */
    uint32_t cap, n;        /* cap: a power of two, or 0 */
};

/* An acknowledgement waiting for the store write of the session change that
 * it reports (engine/clients.c): then conn_durable(slot, gen, cookie). */
struct session_wait {
    uint32_t slot, gen;
    uint64_t cookie, seq;
};

struct sluice_engine {
    sluice_config cfg;
    unsigned nworkers;
    struct worker *workers;
    struct store *store;
    struct tls_ctx *tls; /* the https / mqtts listeners' certificate and policy (newest) */
    char tls_cert[SLUICE_PATH_MAX + 32], tls_key[SLUICE_PATH_MAX + 32]; /* what reload reads */

    /* bound listeners: fds are per worker, ports shared */
    unsigned port[LISTENER_KINDS];
    char addr[LISTENER_KINDS][SLUICE_ADDR_MAX];

    struct auth_swap auth; /* one reader slot per worker; the control thread writes */
    struct clients clients;
    struct devseq devseq;
    struct udp_mail *udp_mail; /* --udp: sessions made over TCP, on their way to worker 0 */
    bool auth_ready;
    uint64_t store_gen;

    struct fault fault;
    bool dsync; /* batches made durable by RWF_DSYNC writes (--dsync, resolved at start) */

    /* the storage helper thread (engine/iojob.c) */
    pthread_t io_thread;
    bool io_started;
    pthread_mutex_t io_lock;
    pthread_cond_t io_cond;
    struct iojob *io_head, *io_tail;
    bool io_stop;

    _Atomic bool stopping;
    _Atomic unsigned ready_workers;
    pthread_t control;
    bool control_started;
};

/* An SQE, submitting the queue first when it is full (never fails for want of SQEs). */
static inline struct io_uring_sqe *worker_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

/* Publishes a gauge the worker alone writes (a plain store: no locked op). */
static inline void worker_gauge(_Atomic uint64_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

static inline void worker_count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

#endif
