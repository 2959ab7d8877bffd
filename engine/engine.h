/* engine/engine.h — internals shared by the engine's files (not public).
 *
 * One struct worker per core, each with its own io_uring, listeners, provided
 * buffer ring, connections, timer wheel and open logs. Workers share only the
 * read-only config, the auth table pointer (swapped atomically by the control
 * thread) and a few atomics; nothing on the data path takes a lock.
 */
#ifndef SLUICE_ENGINE_ENGINE_H
#define SLUICE_ENGINE_ENGINE_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/auth.h"
#include "engine/ratelimit.h"
#include "protocols/http.h"
#include "sluice.h"
#include "storage/log.h"

enum listener_kind { LISTENER_HTTP = 0, LISTENER_ADMIN, LISTENER_KINDS };

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
    OP_WAKE,           /* the worker's eventfd: sluice_engine_stop was called */
    OP_LOG_AHEAD,      /* direct writers: zeros written ahead in the background */
    OP_LOG_AHEAD_SYNC, /* ... and their fsync */
};

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

#define CONN_QUEUE 32 /* responses a connection may have outstanding (pipelining depth) */

struct outbuf {
    char *p;
    size_t len, cap;
};

/* A response waiting for its readings to become durable; responses leave in order. */
struct pending_resp {
    uint16_t status;
    uint8_t close;
    uint8_t waiting; /* commits still outstanding for this response */
    uint32_t accepted;
    char *msg; /* error body (malloc'd) or NULL */
};

enum conn_phase { PHASE_IDLE = 0, PHASE_HEAD, PHASE_BODY };

struct conn {
    int fd;
    uint32_t gen;
    uint32_t slot;
    uint8_t kind; /* enum listener_kind */
    uint8_t phase;
    bool recv_armed; /* a multishot recv is outstanding */
    bool paused;     /* recv cancelled for backpressure */
    bool send_busy;  /* a send is in flight from out[0] */
    bool stop_input; /* a response with close was queued: parse nothing more */
    bool closing;    /* freed once no operation is in flight */
    bool on_dirty;   /* listed for a send at the end of the loop turn */
    bool peer_closed;
    uint8_t inflight; /* operations the kernel still holds (recv, send, cancel) */

    char *rbuf; /* reassembly buffer: bytes not yet consumed */
    size_t rlen, rcap;
    struct outbuf out[2]; /* [0] being sent, [1] accumulating */
    size_t out_off;       /* bytes of out[0] already sent */

    uint64_t deadline_ms; /* 0: none */
    struct conn *tnext, *tprev;
    uint32_t tslot;
    bool timed;

    /* the request in progress */
    struct http_chunked chunked;
    uint64_t req_deadline_ms; /* absolute deadline */
    uint32_t head_scanned;    /* head bytes already searched for a newline */
    uint32_t head_len;        /* once the head parsed: its length ... */
    uint64_t body_need;       /* ... its Content-Length ... */
    bool body_chunked;        /* ... or chunked framing */
    bool expect_continue;
    bool sent_continue;

    struct pending_resp q[CONN_QUEUE];
    uint32_t qhead, qtail;

    uint8_t peer[16]; /* the client's address (IPv4 mapped into IPv6) */

    /* the last token seen on this connection and what it resolved to */
    uint64_t auth_gen;
    uint8_t tok_len;
    char tok[64];
    uint32_t device, org;
    bool tok_ok;

    struct conn *next_dirty, *next_free;
};

#define WHEEL_SLOTS   1024
#define WHEEL_TICK_MS 100

struct commit_log;

struct worker_stats {
    _Atomic uint64_t accepted_conns, closed_conns, requests, readings, bytes_in, bytes_out, commits,
        commit_failures, enobufs, auth_failures, auth_throttled;
};

struct sluice_engine;

struct worker {
    struct sluice_engine *eng;
    unsigned id;
    pthread_t thread;
    struct io_uring ring;
    unsigned ring_flags;

    int listen_fd[LISTENER_KINDS];
    bool accept_armed[LISTENER_KINDS];

    struct io_uring_buf_ring *br;
    char *bufs;
    unsigned nbufs, bufsz;

    struct conn *conns;
    uint32_t nconns, conn_cap, live;
    struct conn *free_list;
    struct conn *dirty; /* connections with output to send */
    struct conn *reap;  /* closing connections to free at the end of the turn */

    struct conn *wheel[WHEEL_SLOTS];
    uint64_t wheel_ms; /* time up to which the wheel has been processed */
    uint64_t now_ms;
    struct __kernel_timespec tick_ts, sync_ts;

    struct commit_log **logs; /* indexed by org id */
    uint32_t nlogs;
    struct commit_log *dirty_logs;
    unsigned logs_busy; /* logs with a write or sync in flight */

    const struct auth_table *auth;
    uint64_t auth_gen;
    struct ratelimit *authrl; /* failed authentications per source address */
    _Atomic uint64_t observed_epoch;

    char *scratch; /* gunzip output, max_body bytes */
    size_t scratch_cap;
    void *zs;                /* z_stream, reused across requests */
    struct http_request req; /* the request being handled (large: kept off the stack) */

    int wake_fd; /* eventfd written by sluice_engine_stop (async-signal-safe) */
    bool draining;
    uint64_t drain_deadline_ms;
    bool done;
    int error;
    struct worker_stats st;
};

struct sluice_engine {
    sluice_config cfg;
    unsigned nworkers;
    struct worker *workers;
    struct store *store;

    /* bound listeners: fds are per worker, ports shared */
    unsigned port[LISTENER_KINDS];
    char addr[LISTENER_KINDS][SLUICE_ADDR_MAX];

    _Atomic(const struct auth_table *) auth;
    _Atomic uint64_t auth_epoch; /* bumped after each swap */
    struct auth_table *retired;
    uint64_t retired_epoch;
    uint64_t store_gen;

    struct fault fault;

    _Atomic bool stopping;
    _Atomic unsigned ready_workers;
    pthread_t control;
    int control_pipe[2];
};

/* worker.c */
void *worker_main(void *arg);
uint64_t worker_now_ms(void);
/* Queues bytes for c; they leave in one send at the end of the loop turn. */
void worker_send(struct worker *w, struct conn *c, const char *p, size_t n);
/* Room for n more output bytes (commit them by adding to c->out[1].len), or NULL
 * when the connection is closing or memory ran out. */
char *worker_send_reserve(struct worker *w, struct conn *c, size_t n);
/* Sets c's one deadline (0: none); ingest_timeout fires when it passes. */
void worker_set_deadline(struct worker *w, struct conn *c, uint64_t deadline_ms);
/* Marks c closed; its slot is freed at the end of the loop turn. */
void conn_close(struct worker *w, struct conn *c);
/* After responses left the queue: parse buffered input, resume a paused recv,
 * close a connection that has said everything. */
void worker_conn_progress(struct worker *w, struct conn *c);

/* ingest.c: HTTP requests from parsed bytes to queued responses */
/* Parses and handles the complete requests in p[0..n) (the connection's unread
 * input, starting at a request boundary). Returns the bytes consumed. */
size_t ingest_http(struct worker *w, struct conn *c, char *p, size_t n);
/* Sends the queued responses whose readings are durable, in order. */
void ingest_flush_responses(struct worker *w, struct conn *c);
/* Recomputes c's deadline from its state (request in progress, idle, waiting). */
void ingest_deadline(struct worker *w, struct conn *c);
/* c's deadline passed: 408 for a request in progress, else close. */
void ingest_timeout(struct worker *w, struct conn *c);

/* commit.c: group commit of readings to the org's log */
struct commit_mark {
    size_t len;
    uint32_t nrec;
};
int commit_log_get(struct worker *w, uint32_t org, struct commit_log **out);
void commit_mark(struct commit_log *l, struct commit_mark *m);
void commit_rollback(struct commit_log *l, const struct commit_mark *m);
int commit_append(struct commit_log *l, const struct record *r, const void *payload, size_t n);
int commit_wait(struct worker *w, struct commit_log *l, struct conn *c, uint32_t qidx);
void commit_submit(struct worker *w);
void commit_complete(struct worker *w, struct io_uring_cqe *cqe);
void commit_close_all(struct worker *w);
/* True when acknowledgements wait for an fdatasync (batch, always). */
bool commit_syncs_batches(const struct worker *w);
/* --fsync interval: start a background fdatasync of every log written since. */
void commit_interval_sync(struct worker *w);
/* Hands a log recovered at start-up to its worker. */
int commit_log_adopt(struct worker *w, const struct log_writer *lw);
/* Switches a freshly opened log to direct writes when --direct-io is on, every
 * batch is synced (--fsync batch|always) and the filesystem allows it (says so
 * on stderr when it does not). */
void commit_log_direct(struct sluice_engine *e, struct log_writer *lw);

#endif
