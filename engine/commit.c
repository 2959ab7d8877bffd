/* engine/commit.c — group commit of readings into the org's log.
 *
 * Each (worker, org) log has a ring of batches: one filling with the readings
 * of the current loop turn, and up to --commits-in-flight (K) in the kernel,
 * each a write linked to an fdatasync (or one RWF_DSYNC write, --dsync). At the
 * end of a turn the filling batch is sealed (sequence numbers and checksums
 * assigned) and submitted when fewer than K are in flight and no write is:
 * writes go one at a time, in log order, so a direct write may rewrite the
 * block holding the previous batch's end, while the syncs overlap. A batch's
 * waiters are completed when it and every batch before it are durable:
 * acknowledgements leave strictly in log order. With K = 1 throughput rises
 * with load while a lone client waits about one fdatasync; with K > 1 a few
 * clients each waiting for their own reading no longer queue behind one sync.
 *
 * Every record carries the log's durable end when its batch was sealed (the
 * first seq not yet durable), so recovery can tell a batch lost in flight,
 * with later unacknowledged batches on disk, from damage to durable data
 * (docs/storage-format.md).
 *
 * A failed write or sync is final for its batch: every waiter of it gets the
 * error, and nothing is retried and then acknowledged (a failed fsync may have
 * dropped the dirty pages). Every later batch in flight and the batch filling
 * behind them fail too, whatever their own syncs say, so nothing received
 * after a lost reading is acknowledged ahead of it; once they have all come
 * back the file is cut back to where the failed batch began.
 *
 * What blocks — opening a log, rolling a segment, writing zeros ahead when the
 * background write-ahead fell behind, cutting a failed batch off, closing an
 * idle log — is a storage job (engine/iojob.h) run by the helper thread; while
 * one runs, the log's readings keep filling its batch in memory.
 */
#include "engine/commit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/conn.h"
#include "engine/iojob.h"

#define ROLL_RETRY_MS 1000 /* a failed roll is tried again after this */

struct waiter {
    uint32_t slot, gen;
    uint64_t cookie;
    size_t end; /* batch length after this request's readings (--fsync always splits here) */
};

struct batch {
    char *buf;
    size_t len, cap;
    uint32_t nrec;
    struct waiter *w;
    uint32_t nw, wcap;
    /* once started (sealed and submitted): */
    uint64_t off;          /* file offset of its first byte */
    uint64_t first_seq;    /* seq of its first record */
    size_t done;           /* bytes written so far */
    uint64_t dio_off;      /* direct writes: the staged write */
    size_t dio_len;
    unsigned short_writes; /* direct writes: times it came back short */
    int err;
    int inject_write, inject_sync; /* fault seam: results to substitute */
    bool complete;                 /* durable, or failed: waits to be retired in order */
};

struct commit_log {
    struct log_writer lw;
    struct batch *b;   /* ring of nb: the batches in flight from head, then the filling one */
    unsigned nb;       /* --commits-in-flight + 1 */
    unsigned head;     /* the oldest batch in flight */
    unsigned inflight; /* batches started and not yet retired */
    bool writing;      /* one of them has its write in flight (writes go one at a time) */
    bool failing;      /* one of them failed: start nothing until all are retired */
    int fail_err;      /* the first failure met in log order while retiring ... */
    uint64_t fail_off, fail_seq; /* ... and where its batch began: the cut */
    bool on_dirty;
    struct commit_log *next_dirty;
    bool open;       /* lw holds descriptors: batches can be written */
    bool suspended;  /* lw keeps its position without descriptors (idle) */
    bool was_direct; /* suspended while writing O_DIRECT */
    bool job;        /* a storage job owns lw (engine/iojob.h) */
    struct iojob io;
    uint64_t last_write_ms; /* for idle suspension and the choice of which log to close */
    uint64_t roll_retry_ms; /* a failed roll: not before then */
    int inject_bgsync;      /* fault seam: the result to substitute for a background sync */
    bool unsynced;          /* --fsync interval: written but not yet synced */
    bool truncate_pending;         /* a failed batch could not be cut off the file yet */
    bool bgsync;                   /* --fsync interval: a background fdatasync is in flight */
    bool ahead;                    /* direct writers: zeros being written ahead (write + fsync) */
    int ahead_err;
    uint64_t ahead_from;
    size_t ahead_len;
};

_Static_assert(sizeof(struct record) <= RECORD_HEADER_SIZE,
               "the unsealed record header is parked in the header's own bytes");

/* Makes room for org in w->logs. Returns 0 or -ENOMEM. */
static int logs_reserve(struct worker *w, uint32_t org)
{
    if (org < w->nlogs) return 0;
    uint32_t n = w->nlogs ? w->nlogs : 16;
    while (n <= org)
        n *= 2;
    struct commit_log **logs = realloc(w->logs, n * sizeof *logs);
    if (!logs) return -ENOMEM;
    memset(logs + w->nlogs, 0, (n - w->nlogs) * sizeof *logs);
    w->logs = logs;
    w->nlogs = n;
    return 0;
}

/* A log with its ring of batches (empty until first filled). */
static struct commit_log *log_new(struct worker *w)
{
    struct commit_log *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->nb = w->eng->cfg.commits_in_flight + 1;
    if (l->nb < 2 || l->nb > SLUICE_COMMITS_IN_FLIGHT_MAX + 1) l->nb = 2;
    if (!(l->b = calloc(l->nb, sizeof *l->b))) {
        free(l);
        return NULL;
    }
    return l;
}

static void log_free(struct commit_log *l)
{
    for (unsigned k = 0; k < l->nb; k++) {
        free(l->b[k].buf);
        free(l->b[k].w);
    }
    free(l->b);
    free(l);
}

/* The batch after those in flight: the one readings go to now. (The ring
 * is not part of the log's const-ness: a const log still names its batch.) */
static struct batch *filling(const struct commit_log *l)
{
    return &l->b[(l->head + l->inflight) % l->nb];
}

static void logs_open_changed(struct worker *w, int d)
{
    w->logs_open = (unsigned)((int)w->logs_open + d);
    worker_gauge(&w->st.logs_open, w->logs_open);
}

int commit_log_adopt(struct worker *w, const struct log_writer *lw)
{
    struct commit_log *l;
    if (logs_reserve(w, lw->org) || !(l = log_new(w))) return -ENOMEM;
    l->lw = *lw;
    l->open = true;
    w->logs[lw->org] = l;
    logs_open_changed(w, 1);
    return 0;
}

static void start_job(struct worker *w, struct commit_log *l, enum iojob_kind kind)
{
    l->job = true;
    l->io.kind = kind;
    l->io.w = w;
    l->io.lw = &l->lw;
    l->io.org = l->lw.org;
    w->logs_busy++;
    iojob_submit(w->eng, &l->io);
}

static bool log_idle(const struct commit_log *l)
{
    return l->open && !l->job && !l->inflight && !l->bgsync && !l->ahead && !l->unsynced &&
           !filling(l)->len && !l->truncate_pending;
}

static void suspend(struct worker *w, struct commit_log *l)
{
    l->was_direct = l->lw.dfd >= 0;
    start_job(w, l, IOJOB_SUSPEND);
}

/* A log is about to take descriptors: past the worker's share of the open
 * files limit, the least recently written idle log gives its up first. */
static void make_room_for_a_log(struct worker *w)
{
    if (w->logs_open < w->logs_cap) return;
    struct commit_log *lru = NULL;
    for (uint32_t i = 0; i < w->nlogs; i++) {
        struct commit_log *l = w->logs[i];
        if (l && log_idle(l) && (!lru || l->last_write_ms < lru->last_write_ms)) lru = l;
    }
    if (lru) suspend(w, lru);
}

/* Opens (or reopens) l in the background. */
static void start_open(struct worker *w, struct commit_log *l)
{
    make_room_for_a_log(w);
    l->io.was_direct = l->was_direct;
    start_job(w, l, l->suspended ? IOJOB_RESUME : IOJOB_OPEN);
}

int commit_log_get(struct worker *w, uint32_t org, struct commit_log **out)
{
    struct commit_log *l = org < w->nlogs ? w->logs[org] : NULL;
    if (!l) {
        /* an org first seen after start-up (recovery opened the others) */
        if (logs_reserve(w, org) || !(l = log_new(w))) return -ENOMEM;
        l->lw.fd = l->lw.dfd = -1;
        l->lw.org = org;
        w->logs[org] = l;
    }
    if (!l->open && !l->job) start_open(w, l);
    l->last_write_ms = w->now_ms;
    *out = l;
    return 0;
}

void commit_mark(struct commit_log *l, struct commit_mark *m)
{
    m->len = filling(l)->len;
    m->nrec = filling(l)->nrec;
}

void commit_rollback(struct commit_log *l, const struct commit_mark *m)
{
    filling(l)->len = m->len;
    filling(l)->nrec = m->nrec;
}

size_t commit_since(const struct commit_log *l, const struct commit_mark *m)
{
    return filling(l)->len - m->len;
}

/* Appends one record with an unsealed header (the struct record parked in the
 * header bytes); commit_submit seals it. A batch has no size limit of its own:
 * a request's size is capped by ingest.c, the bytes waiting for commit by the
 * worker's budget (--max-pending-bytes), which stops reading past it. */
int commit_append(struct commit_log *l, const struct record *r, const void *topic, size_t topic_len,
                  const void *payload, size_t n)
{
    struct batch *b = filling(l);
    size_t need = RECORD_HEADER_SIZE + topic_len + n;
    if (topic_len + n > RECORD_MAX_BODY || topic_len > UINT16_MAX) return -E2BIG;
    if (b->len + need > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < b->len + need)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p) return -ENOMEM;
        b->buf = p;
        b->cap = cap;
    }
    struct record h = *r;
    h.topic_len = (uint16_t)topic_len;
    h.length = (uint32_t)(topic_len + n);
    memcpy(b->buf + b->len, &h, sizeof h);
    if (topic_len) memcpy(b->buf + b->len + RECORD_HEADER_SIZE, topic, topic_len);
    if (n) memcpy(b->buf + b->len + RECORD_HEADER_SIZE + topic_len, payload, n);
    b->len += need;
    b->nrec++;
    return 0;
}

static void mark_dirty(struct worker *w, struct commit_log *l)
{
    if (l->on_dirty) return;
    l->on_dirty = true;
    l->next_dirty = w->dirty_logs;
    w->dirty_logs = l;
}

static void pending_changed(struct worker *w, uint64_t added, uint64_t removed)
{
    uint64_t max = w->eng->cfg.max_pending_bytes;
    bool was_full = w->pending_bytes >= max;
    w->pending_bytes = w->pending_bytes + added - removed;
    worker_gauge(&w->st.pending_bytes, w->pending_bytes);
    if (was_full && w->pending_bytes < max) conn_room_freed(w);
}

int commit_wait(struct worker *w, struct commit_log *l, uint32_t slot, uint32_t gen,
                uint64_t cookie, size_t bytes)
{
    struct batch *b = filling(l);
    if (b->nw == b->wcap) {
        uint32_t cap = b->wcap ? b->wcap * 2 : 64;
        struct waiter *p = realloc(b->w, cap * sizeof *p);
        if (!p) return -ENOMEM;
        b->w = p;
        b->wcap = cap;
    }
    b->w[b->nw++] = (struct waiter){.slot = slot, .gen = gen, .cookie = cookie, .end = b->len};
    pending_changed(w, bytes, 0);
    mark_dirty(w, l);
    return 0;
}

/* Assigns sequence numbers and computes checksums: done at submit time so a
 * failed batch gives its sequence numbers back and the log stays gap-free.
 * `durable` is the first seq not yet durable: the oldest batch in flight's,
 * or with none this batch's own (--fsync interval|never: every record before
 * it acknowledged, the writes going one at a time). Never past the batch's
 * first seq: no writer knows its own batch durable (decode refuses that). */
static void seal(struct commit_log *l, struct batch *b, uint64_t durable)
{
    size_t off = 0;
    b->nrec = 0;
    while (off < b->len) {
        struct record r;
        uint8_t *hdr = (uint8_t *)b->buf + off;
        memcpy(&r, hdr, sizeof r);
        r.seq = l->lw.next_seq++;
        r.durable_seq = durable;
        if (off == 0) r.flags |= RECORD_F_BATCH_START;
        log_writer_note(&l->lw, l->lw.end + off, r.seq, r.recv_ns);
        const uint8_t *body = hdr + RECORD_HEADER_SIZE;
        record_encode(hdr, &r, l->lw.seed, body, body + r.topic_len, r.length - r.topic_len);
        off += RECORD_HEADER_SIZE + r.length;
        b->nrec++;
    }
}

/* --fsync always: only the first request of the batch goes to disk now; the
 * rest moves to the (empty) filling batch and waits for its own sync. */
static void split_first_request(struct commit_log *l, struct batch *b)
{
    if (b->nw < 2 || b->w[0].end >= b->len) return;
    /* waiters that add no bytes of their own (ingest_notify) stay with the
     * request before them */
    uint32_t k = 1;
    while (k < b->nw && b->w[k].end <= b->w[0].end)
        k++;
    if (k == b->nw) return;
    struct batch *rest = filling(l);
    size_t cut = b->w[0].end, n = b->len - cut;
    struct batch t = *rest;
    if (t.cap < n || t.wcap < b->nw - k) {
        /* no room: submit the batch whole rather than fail readings */
        size_t cap = t.cap > n ? t.cap : n;
        char *p = realloc(t.buf, cap);
        struct waiter *wp = p ? realloc(t.w, (b->nw - k) * sizeof *wp) : NULL;
        if (p) {
            t.buf = p;
            t.cap = cap;
        }
        if (!wp) {
            *rest = t;
            return;
        }
        t.w = wp;
        t.wcap = b->nw - k;
    }
    memcpy(t.buf, b->buf + cut, n);
    t.len = n;
    t.nw = b->nw - k;
    for (uint32_t i = 0; i < t.nw; i++) {
        t.w[i] = b->w[i + k];
        t.w[i].end -= cut;
    }
    *rest = t;
    b->len = cut;
    b->nw = k;
}
/* The fault seam: io_uring bypasses libc, so LD_PRELOAD cannot fail a write. When
 * SLUICE_FAULT_INJECT selects this operation, a NOP stands in for it and its
 * completion carries the chosen error (see engine.c for the syntax). */
static bool inject(struct worker *w, struct commit_log *l, int op, int *slot)
{
    struct sluice_engine *e = w->eng;
    if (!e->fault.err || e->fault.op != op || (e->fault.org && e->fault.org != l->lw.org))
        return false;
    uint64_t n = atomic_fetch_add(&e->fault.seen, 1);
    if (n < e->fault.after || (e->fault.count && n >= e->fault.after + e->fault.count))
        return false;
    *slot = -e->fault.err;
    return true;
}

/* Whether a batch is made durable by one RWF_DSYNC write (else write +
 * linked fdatasync, or, --fsync interval|never, a plain write). */
static bool dsync_writes(const struct worker *w)
{
    return w->eng->dsync && commit_syncs_batches(w);
}

/* Submits b's write (what is left of it) and, syncing batches, its linked
 * fdatasync. The batch's ring index rides in the completions. */
static void submit_io(struct worker *w, struct commit_log *l, struct batch *b)
{
    uint32_t org = l->lw.org, idx = (uint32_t)(b - l->b);
    bool dsync = dsync_writes(w), linked = commit_syncs_batches(w) && !dsync;
    /* The pair goes in a submission of its own. io_uring plugs block I/O for
     * a whole submission, so a direct write queued with the turn's responses
     * would reach the device only after all those sends ran (measured: ~150 µs
     * at 64 connections); SQEs already queued go first, without it. */
    if (io_uring_sq_ready(&w->ring)) io_uring_submit(&w->ring);
    if (io_uring_sq_space_left(&w->ring) < 2) io_uring_submit(&w->ring);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (inject(w, l, FAULT_WRITE, &b->inject_write) ||
        (dsync && inject(w, l, FAULT_SYNC, &b->inject_sync)))
        io_uring_prep_nop(sqe);
    else if (l->lw.dfd >= 0) /* staged whole; a short write is redone whole */
        io_uring_prep_write(sqe, l->lw.dfd, l->lw.stage, (unsigned)b->dio_len, b->dio_off);
    else
        io_uring_prep_write(sqe, l->lw.fd, b->buf + b->done, (unsigned)(b->len - b->done),
                            b->off + b->done);
    if (dsync && sqe->opcode == IORING_OP_WRITE) sqe->rw_flags = RWF_DSYNC;
    io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_WRITE, idx, org));
    if (linked) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = io_uring_get_sqe(&w->ring);
        if (inject(w, l, FAULT_SYNC, &b->inject_sync))
            io_uring_prep_nop(sqe);
        else
            io_uring_prep_fsync(sqe, l->lw.fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_SYNC, idx, org));
    }
    l->writing = true;
    io_uring_submit(&w->ring);
}

bool commit_syncs_batches(const struct worker *w)
{
    return w->eng->cfg.fsync == SLUICE_FSYNC_BATCH || w->eng->cfg.fsync == SLUICE_FSYNC_ALWAYS;
}

/* Rolls to a new segment when the batch would push the current one past its
 * size, or the current one is older than its age limit. A failed roll is
 * reported and writing goes on in the old segment (it just grows larger);
 * the roll is tried again a moment later. */
static bool roll_due(struct worker *w, struct commit_log *l, size_t incoming)
{
    const sluice_config *cfg = &w->eng->cfg;
    struct log_writer *lw = &l->lw;
    if (lw->end <= SEGMENT_HEADER_SIZE || w->now_ms < l->roll_retry_ms) return false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    bool full = lw->end + incoming > cfg->segment_bytes;
    bool old = cfg->segment_age_ms && now - lw->created_ns > cfg->segment_age_ms * 1000000ull;
    return full || old;
}

static void retire(struct worker *w, struct commit_log *l);
static void cut_failed(struct worker *w, struct commit_log *l);

/* Direct writers keep the space ahead written in the background: the next step
 * of zeros and its fsync go to io_uring when less than half a step is left, so
 * a batch rarely waits for a reserve job. */
static void write_ahead(struct worker *w, struct commit_log *l)
{
    uint64_t from;
    size_t len;
    if (l->ahead || !log_writer_ahead_wanted(&l->lw, w->eng->cfg.segment_bytes, &from, &len))
        return;
    if (io_uring_sq_space_left(&w->ring) < 2) io_uring_submit(&w->ring);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    io_uring_prep_write(sqe, l->lw.dfd, log_zeros(), (unsigned)len, from);
    io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_AHEAD, 0, l->lw.org));
    sqe->flags |= IOSQE_IO_LINK;
    sqe = io_uring_get_sqe(&w->ring);
    io_uring_prep_fsync(sqe, l->lw.fd, 0); /* full: the new size and blocks, see log.c */
    io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_AHEAD_SYNC, 0, l->lw.org));
    l->ahead = true;
    l->ahead_err = 0;
    l->ahead_from = from;
    l->ahead_len = len;
    w->logs_busy++;
}

/* Space for the filling batch past end (direct writes cover whole blocks). */
static uint64_t space_needed(const struct commit_log *l, size_t len)
{
    return l->lw.dfd >= 0 ? log_writer_dio_need(&l->lw, len) : len;
}

/* Completes the waiters of b with err and empties it. */
static void release(struct worker *w, struct batch *b, int err)
{
    for (uint32_t i = 0; i < b->nw; i++)
        conn_durable(w, b->w[i].slot, b->w[i].gen, b->w[i].cookie, err);
    size_t len = b->len;
    b->len = 0;
    b->nrec = 0;
    b->nw = 0;
    pending_changed(w, 0, len);
}

/* The filling batch cannot be written (its log would not open, no space for
 * it): its waiters get err; nothing was sealed, no sequence number used. */
static void fail_unwritten(struct worker *w, struct commit_log *l, int err)
{
    struct batch *b = filling(l);
    if (!b->len) return;
    worker_count(&w->st.commit_failures, 1);
    errlog_say(&w->errlog[ERRLOG_COMMIT], w->now_ms,
               "worker %u: %u readings to org %u not written: %s (answered as failed, nothing "
               "acknowledged)",
               w->id, b->nrec, l->lw.org, strerror(-err));
    release(w, b, err);
}

/* Starts the filling batch's write (+ linked fdatasync). Called with no write
 * in flight, fewer than K batches in flight, the log open, space reserved and
 * no roll due. The batch's bytes are placed at lw.end, which moves past them
 * now: the next batch follows them whether or not they are durable yet. */
static void start_batch(struct worker *w, struct commit_log *l)
{
    struct batch *b = filling(l);
    uint64_t durable = l->inflight ? l->b[l->head].first_seq : l->lw.next_seq;
    l->inflight++;
    if (w->eng->cfg.fsync == SLUICE_FSYNC_ALWAYS) split_first_request(l, b);
    b->first_seq = l->lw.next_seq;
    b->off = l->lw.end;
    seal(l, b, durable);
    b->done = 0;
    b->err = 0;
    b->short_writes = 0;
    b->complete = false;
    l->last_write_ms = w->now_ms;
    w->logs_busy++;
    bool direct = l->lw.dfd >= 0;
    if (direct) {
        if (!log_writer_dio_stage(&l->lw, b->buf, b->len, &b->dio_off, &b->dio_len)) {
            b->err = -ENOMEM;
            b->complete = true;
            l->failing = true;
            retire(w, l);
            return;
        }
        /* the block that will hold the new end, as it will be on disk: the
         * next batch's head (written after this write has completed) */
        log_writer_dio_done(&l->lw, b->len);
    }
    l->lw.end += b->len;
    submit_io(w, l, b);
    if (direct) write_ahead(w, l);
}

/* Whether l's filling batch can go now; else what it waits for is started
 * (a storage job) or will complete on its own (a write in flight). */
static bool ready_to_write(struct worker *w, struct commit_log *l)
{
    struct batch *fb = filling(l);
    if (l->job) return false;
    if (!l->open) {
        start_open(w, l);
        return false;
    }
    /* one write at a time, at most K batches in flight, none after a failed
     * one until all are back, nothing while a background sync of the file
     * runs (--fsync interval, which a roll must not overtake). Through the
     * page cache the syncs must not overlap: Linux reports a writeback error
     * once per open file, to whichever fdatasync looks first, so a later
     * batch's sync could take an earlier batch's error and let that one be
     * acknowledged. A direct write reports its own error, and its sync is a
     * cache flush that answers each caller. */
    unsigned k = l->lw.dfd >= 0 ? l->nb - 1 : 1;
    if (l->writing || l->failing || l->inflight >= k || l->bgsync) return false;
    if (l->truncate_pending) {
        /* a failed batch's bytes may remain past end: nothing may be written
         * after them (a later batch start would make them look durable to
         * recovery) until the file is cut back */
        cut_failed(w, l);
        return false;
    }
    bool roll = roll_due(w, l, fb->len);
    /* zeros being written ahead where this batch would go, or that a roll
     * would cut: go when that completes */
    if (l->ahead && (roll || l->lw.end + space_needed(l, fb->len) > l->lw.alloc)) return false;
    bool room = l->lw.end + space_needed(l, fb->len) <= l->lw.alloc;
    /* a storage job owns the writer: it starts once nothing is in flight */
    if ((roll || !room) && l->inflight) return false;
    if (roll) {
        l->io.sync_first = l->unsynced;
        l->io.was_direct = l->lw.dfd >= 0;
        l->unsynced = false;
        start_job(w, l, IOJOB_ROLL);
        return false;
    }
    if (!room) {
        /* space written ahead, so the sync has no file size to persist; no
         * space at all (ENOSPC) fails this batch before it is written */
        l->io.need = space_needed(l, fb->len);
        l->io.cap = w->eng->cfg.segment_bytes;
        start_job(w, l, IOJOB_RESERVE);
        return false;
    }
    return true;
}

void commit_submit(struct worker *w)
{
    struct commit_log *l = w->dirty_logs, *keep = NULL;
    w->dirty_logs = NULL;
    while (l) {
        struct commit_log *next = l->next_dirty;
        l->on_dirty = false;
        if (filling(l)->len) {
            if (ready_to_write(w, l)) {
                start_batch(w, l);
            } else {
                /* goes when what it waits for completes */
                l->on_dirty = true;
                l->next_dirty = keep;
                keep = l;
            }
        }
        l = next;
    }
    /* start_batch() above may have queued logs anew: keep those as well */
    while (keep) {
        struct commit_log *next = keep->next_dirty;
        keep->next_dirty = w->dirty_logs;
        w->dirty_logs = keep;
        keep = next;
    }
}

/* A failed batch's bytes are cut off the file at once, before readers (or a
 * later batch) can take them for data; zeros being written ahead land first
 * (the cut takes them too). */
static void cut_failed(struct worker *w, struct commit_log *l)
{
    if (l->truncate_pending && !l->job && !l->inflight && !l->ahead)
        start_job(w, l, IOJOB_TRUNCATE);
}

/* Completes, in log order, the batches in flight that are done: a batch's
 * waiters hear only once every earlier batch has. The first failure met
 * fails every batch after it, done or not; when the last of them is back
 * the log is cut back to where the failed one began, and the filling batch
 * fails too. */
static void retire(struct worker *w, struct commit_log *l)
{
    while (l->inflight && l->b[l->head].complete) {
        struct batch *b = &l->b[l->head];
        int err = l->fail_err ? l->fail_err : b->err;
        if (err && !l->fail_err) {
            l->fail_err = err;
            l->fail_off = b->off;
            l->fail_seq = b->first_seq;
            errlog_say(&w->errlog[ERRLOG_COMMIT], w->now_ms,
                       "worker %u: commit of %u readings to org %u failed: %s (answered as "
                       "failed with every later one, nothing acknowledged)",
                       w->id, b->nrec, l->lw.org, strerror(-err));
        }
        if (err) {
            worker_count(&w->st.commit_failures, 1);
        } else {
            l->unsynced = !commit_syncs_batches(w);
            worker_count(&w->st.commits, 1);
        }
        l->head = (l->head + 1) % l->nb;
        l->inflight--;
        w->logs_busy--;
        release(w, b, err);
    }
    if (l->fail_err && !l->inflight) {
        /* cut the file back to the last durable batch (a storage job, before
         * the next batch); the sequence numbers of the failed batches are
         * reused by the next one. What queued behind fails with them: written
         * after the cut, it would be durable while the readings before it are
         * not, and a device that numbers its readings (frames) would find,
         * after a restart, a mark past readings it was never told were
         * stored, and not send them again. */
        int err = l->fail_err;
        l->lw.end = l->fail_off;
        l->lw.next_seq = l->fail_seq;
        log_writer_unnote(&l->lw);
        l->truncate_pending = true;
        l->fail_err = 0;
        l->failing = false;
        fail_unwritten(w, l, err);
        cut_failed(w, l);
    }
    if (filling(l)->len) mark_dirty(w, l);
}

void commit_job_done(struct worker *w, struct iojob *j)
{
    struct commit_log *l = w->logs[j->org];
    l->job = false;
    w->logs_busy--;
    switch (j->kind) {
    case IOJOB_OPEN:
    case IOJOB_RESUME:
        if (j->report[0]) fprintf(stderr, "sluiced: recovery: %s\n", j->report);
        if (j->rc) {
            errlog_say(&w->errlog[ERRLOG_LOG_OPEN], w->now_ms,
                       "worker %u: cannot open the log of org %u: %s", w->id, l->lw.org,
                       strerror(-j->rc));
            fail_unwritten(w, l, j->rc);
            break;
        }
        l->open = true;
        l->suspended = false;
        logs_open_changed(w, 1);
        worker_count(&w->st.logs_opened, 1);
        break;
    case IOJOB_ROLL:
        if (j->report[0]) fprintf(stderr, "sluiced: worker %u: %s\n", w->id, j->report);
        if (j->rc) {
            l->roll_retry_ms = w->now_ms + ROLL_RETRY_MS;
            errlog_say(&w->errlog[ERRLOG_LOG_IO], w->now_ms,
                       "worker %u: cannot roll %s: %s (continuing in it)", w->id, l->lw.path,
                       strerror(-j->rc));
        } else if (j->was_direct && l->lw.dfd < 0) {
            fprintf(stderr,
                    "sluiced: worker %u: %s refused O_DIRECT; writing it through the page cache\n",
                    w->id, l->lw.path);
        }
        break;
    case IOJOB_RESERVE:
        if (j->rc) fail_unwritten(w, l, j->rc);
        break;
    case IOJOB_TRUNCATE:
        if (j->rc) {
            /* the file still cannot be cut back: fail this batch unwritten */
            errlog_say(&w->errlog[ERRLOG_LOG_IO], w->now_ms,
                       "worker %u: cannot cut a failed batch off %s: %s", w->id, l->lw.path,
                       strerror(-j->rc));
            fail_unwritten(w, l, j->rc);
        } else {
            l->truncate_pending = false;
        }
        break;
    case IOJOB_SUSPEND:
        if (j->rc) {
            errlog_say(&w->errlog[ERRLOG_LOG_IO], w->now_ms,
                       "worker %u: cannot close idle log %s: %s", w->id, l->lw.path,
                       strerror(-j->rc));
            break;
        }
        l->open = false;
        l->suspended = true;
        logs_open_changed(w, -1);
        worker_count(&w->st.logs_suspended, 1);
        if (!filling(l)->len) {
            /* an idle log costs only its position until it is written again */
            for (unsigned k = 0; k < l->nb; k++) {
                free(l->b[k].buf);
                free(l->b[k].w);
                l->b[k] = (struct batch){0};
            }
        }
        break;
    case IOJOB_CALL: /* not a log's: loop.c hands these to their own done() */
        break;
    }
    if (filling(l)->len) mark_dirty(w, l);
}


void commit_tick(struct worker *w)
{
    uint64_t idle = w->eng->cfg.log_idle_timeout_ms;
    if (w->draining || !idle || w->now_ms < w->logs_scan_ms + 1000) return;
    w->logs_scan_ms = w->now_ms;
    for (uint32_t i = 0; i < w->nlogs; i++) {
        struct commit_log *l = w->logs[i];
        if (l && log_idle(l) && w->now_ms >= l->last_write_ms + idle) suspend(w, l);
    }
}

void commit_complete(struct worker *w, struct io_uring_cqe *cqe)
{
    uint32_t org = op_slot(cqe->user_data);
    struct commit_log *l = w->logs[org];
    struct batch *b = &l->b[op_gen(cqe->user_data) % l->nb];
    bool linked = commit_syncs_batches(w) && !dsync_writes(w);
    int res = cqe->res;
    switch (op_kind(cqe->user_data)) {
    case OP_LOG_WRITE:
        if (b->inject_write) {
            res = b->inject_write;
            b->inject_write = 0;
        } else if (b->inject_sync && !linked) { /* a RWF_DSYNC write is its own sync */
            res = b->inject_sync;
            b->inject_sync = 0;
        }
        if (res == -EINVAL && l->lw.dfd >= 0 && !b->err) {
            /* the filesystem took O_DIRECT but not this write (alignment it did
             * not announce): nothing was written; write the batch again through
             * the page cache, now and from now on. With a linked sync, its
             * cancellation follows and resubmits. */
            fprintf(stderr,
                    "sluiced: worker %u: direct write to %s refused (%s); writing it through "
                    "the page cache\n",
                    w->id, l->lw.path, strerror(-res));
            log_writer_buffered(&l->lw);
            b->done = 0;
            if (!linked) submit_io(w, l, b);
            return;
        }
        if (res < 0 && !b->err)
            b->err = res;
        else if (res > 0 && l->lw.dfd < 0)
            b->done += (size_t)res;
        else if (res > 0 && (size_t)res == b->dio_len)
            b->done = b->len;
        else if (res > 0 && ++b->short_writes > 3 && !b->err)
            b->err = -EIO; /* a direct write that keeps coming back short */
        else if (res == 0 && !b->err)
            b->err = -EIO; /* no progress on a regular file: treat as failure */
        if (b->err) l->failing = true;
        if (b->err || b->done == b->len) {
            /* the write is over: the next batch's may start (its sync, if
             * linked, runs on) */
            l->writing = false;
            if (filling(l)->len) mark_dirty(w, l);
        }
        if (!linked) {
            if (!b->err && b->done < b->len) {
                submit_io(w, l, b);
            } else {
                b->complete = true;
                retire(w, l);
            }
        }
        return;
    case OP_LOG_SYNC:
        if (b->inject_sync) {
            res = b->inject_sync;
            b->inject_sync = 0;
        }
        /* the sync CQE ends the batch, unless its write came back short (the
         * sync was cancelled) or refused and to be redone through the page
         * cache: then it covered nothing of the rest, which goes again */
        if (!b->err && b->done < b->len) {
            submit_io(w, l, b);
            return;
        }
        if (res < 0 && !b->err) b->err = res;
        if (b->err) l->failing = true;
        b->complete = true;
        retire(w, l);
        return;
    case OP_LOG_AHEAD:
        if (res != (int)l->ahead_len) l->ahead_err = res < 0 ? res : -EIO;
        return; /* its fsync (cancelled on failure) completes the step */
    case OP_LOG_AHEAD_SYNC:
        if (res < 0 && !l->ahead_err) l->ahead_err = res;
        /* a failed batch meanwhile cut the file back (alloc moved): this step
         * is moot; a failed step leaves alloc as it was, and a reserve job
         * tries again (and reports) when a batch needs the space */
        if (!l->ahead_err && l->lw.alloc == l->ahead_from)
            l->lw.alloc = l->ahead_from + l->ahead_len;
        l->ahead = false;
        w->logs_busy--;
        cut_failed(w, l);
        if (filling(l)->len) mark_dirty(w, l);
        return;
    case OP_LOG_BGSYNC:
        if (l->inject_bgsync) {
            res = l->inject_bgsync;
            l->inject_bgsync = 0;
        }
        l->bgsync = false;
        w->logs_busy--;
        if (res < 0) {
            /* already acknowledged: --fsync interval's documented loss window */
            worker_count(&w->st.commit_failures, 1);
            errlog_say(&w->errlog[ERRLOG_COMMIT], w->now_ms,
                       "worker %u: background fdatasync of org %u failed: %s; readings "
                       "acknowledged since the last good sync may be lost",
                       w->id, l->lw.org, strerror(-res));
        }
        if (filling(l)->len) mark_dirty(w, l);
        return;
    }
}

void commit_interval_sync(struct worker *w)
{
    for (uint32_t i = 0; i < w->nlogs; i++) {
        struct commit_log *l = w->logs[i];
        if (!l || !l->open || l->job || !l->unsynced || l->bgsync || l->inflight) continue;
        struct io_uring_sqe *sqe = worker_sqe(w);
        int fake = 0;
        if (inject(w, l, FAULT_SYNC, &fake)) {
            io_uring_prep_nop(sqe);
            l->inject_bgsync = fake; /* substituted for the NOP's 0 on completion */
        } else {
            io_uring_prep_fsync(sqe, l->lw.fd, IORING_FSYNC_DATASYNC);
        }
        io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_BGSYNC, 0, l->lw.org));
        l->unsynced = false;
        l->bgsync = true;
        w->logs_busy++;
    }
}

void commit_close_all(struct worker *w)
{
    for (uint32_t i = 0; i < w->nlogs; i++) {
        struct commit_log *l = w->logs[i];
        if (!l) continue;
        /* a clean stop leaves nothing unsynced, whatever the mode */
        if (l->open && l->lw.fd >= 0 && fdatasync(l->lw.fd))
            fprintf(stderr, "sluiced: worker %u: final fdatasync of %s failed: %s\n", w->id,
                    l->lw.path, strerror(errno));
        if (l->open)
            log_writer_close(&l->lw);
        else {
            free(l->lw.tail);
            free(l->lw.stage);
            free(l->lw.idx.e);
        }
        log_free(l);
    }
    free(w->logs);
    w->logs = NULL;
    w->nlogs = 0;
    w->logs_open = 0;
}
