/* engine/commit.c — group commit of readings into the org's log.
 *
 * Each (worker, org) log has two batches: one filling with the readings of the
 * current loop turn, one in the kernel as a write linked to an fdatasync. At the
 * end of a turn the filling batch is sealed (sequence numbers and checksums
 * assigned) and submitted if no sync is in flight on that file; its responses
 * are released when the sync completes. Throughput therefore rises with load
 * while a lone client waits about one fdatasync.
 *
 * A failed write or sync is final for its batch: the file is cut back to where
 * the batch began, every reading in it is answered 503, and nothing is retried
 * and then acknowledged (a failed fsync may have dropped the dirty pages).
 */
#include "engine/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MAX (64u << 20) /* bytes a filling batch may hold before 503s */

struct waiter {
    uint32_t slot, gen, qidx;
};

struct batch {
    char *buf;
    size_t len, cap;
    uint32_t nrec;
    struct waiter *w;
    uint32_t nw, wcap;
};

struct commit_log {
    struct log_writer lw;
    struct batch b[2];
    int fill; /* index of the filling batch; the other is in flight when busy */
    bool busy;
    bool on_dirty;
    struct commit_log *next_dirty;
    size_t done;        /* bytes of the in-flight batch written so far */
    uint64_t first_seq; /* seq of the in-flight batch's first record */
    int err;
};

_Static_assert(sizeof(struct record) <= RECORD_HEADER_SIZE,
               "the unsealed record header is parked in the header's own bytes");

int commit_log_get(struct worker *w, uint32_t org, struct commit_log **out)
{
    if (org < w->nlogs && w->logs[org]) {
        *out = w->logs[org];
        return 0;
    }
    if (org >= w->nlogs) {
        uint32_t n = w->nlogs ? w->nlogs : 16;
        while (n <= org)
            n *= 2;
        struct commit_log **logs = realloc(w->logs, n * sizeof *logs);
        if (!logs)
            return -ENOMEM;
        memset(logs + w->nlogs, 0, (n - w->nlogs) * sizeof *logs);
        w->logs = logs;
        w->nlogs = n;
    }
    struct commit_log *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    char report[256];
    /* first reading of this org on this worker: open (and recover) its segment.
     * Blocking, but once per org per worker lifetime. */
    int rc = log_writer_open(&l->lw, w->eng->cfg.data_dir, org, w->id, report, sizeof report);
    if (rc) {
        fprintf(stderr, "sluiced: worker %u: cannot open log of org %u: %s\n", w->id, org,
                strerror(rc == -EBADMSG ? EBADMSG : -rc));
        free(l);
        return rc;
    }
    if (report[0])
        fprintf(stderr, "sluiced: recovery: %s\n", report);
    w->logs[org] = l;
    *out = l;
    return 0;
}

void commit_mark(struct commit_log *l, struct commit_mark *m)
{
    m->len = l->b[l->fill].len;
    m->nrec = l->b[l->fill].nrec;
}

void commit_rollback(struct commit_log *l, const struct commit_mark *m)
{
    l->b[l->fill].len = m->len;
    l->b[l->fill].nrec = m->nrec;
}

/* Appends one record with an unsealed header (the struct record parked in the
 * header bytes); commit_submit seals it. Returns 0, -E2BIG when the batch is
 * full, -ENOMEM. */
int commit_append(struct commit_log *l, const struct record *r, const void *payload, size_t n)
{
    struct batch *b = &l->b[l->fill];
    size_t need = RECORD_HEADER_SIZE + n;
    if (n > RECORD_MAX_BODY || b->len + need > BATCH_MAX)
        return -E2BIG;
    if (b->len + need > b->cap) {
        size_t cap = b->cap ? b->cap : 64 * 1024;
        while (cap < b->len + need)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p)
            return -ENOMEM;
        b->buf = p;
        b->cap = cap;
    }
    struct record h = *r;
    h.topic_len = 0;
    h.length = (uint32_t)n;
    memcpy(b->buf + b->len, &h, sizeof h);
    memcpy(b->buf + b->len + RECORD_HEADER_SIZE, payload, n);
    b->len += need;
    b->nrec++;
    return 0;
}

static void mark_dirty(struct worker *w, struct commit_log *l)
{
    if (l->on_dirty)
        return;
    l->on_dirty = true;
    l->next_dirty = w->dirty_logs;
    w->dirty_logs = l;
}

int commit_wait(struct worker *w, struct commit_log *l, struct conn *c, uint32_t qidx)
{
    struct batch *b = &l->b[l->fill];
    if (b->nw == b->wcap) {
        uint32_t cap = b->wcap ? b->wcap * 2 : 64;
        struct waiter *p = realloc(b->w, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        b->w = p;
        b->wcap = cap;
    }
    b->w[b->nw++] = (struct waiter){.slot = c->slot, .gen = c->gen, .qidx = qidx};
    c->q[qidx % CONN_QUEUE].waiting++;
    mark_dirty(w, l);
    return 0;
}

/* Assigns sequence numbers and computes checksums: done at submit time so a
 * failed batch gives its sequence numbers back and the log stays gap-free. */
static void seal(struct commit_log *l, struct batch *b)
{
    size_t off = 0;
    while (off < b->len) {
        struct record r;
        uint8_t *hdr = (uint8_t *)b->buf + off;
        memcpy(&r, hdr, sizeof r);
        r.seq = l->lw.next_seq++;
        record_encode(hdr, &r, NULL, hdr + RECORD_HEADER_SIZE, r.length);
        off += RECORD_HEADER_SIZE + r.length;
    }
}

static void submit_io(struct worker *w, struct commit_log *l)
{
    struct batch *b = &l->b[!l->fill];
    uint32_t org = l->lw.org;
    bool sync = w->eng->cfg.fsync != SLUICE_FSYNC_NEVER;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    io_uring_prep_write(sqe, l->lw.fd, b->buf + l->done, (unsigned)(b->len - l->done),
                        l->lw.end + l->done);
    io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_WRITE, 0, org));
    if (sync) {
        sqe->flags |= IOSQE_IO_LINK;
        sqe = io_uring_get_sqe(&w->ring);
        if (!sqe) {
            /* the linked pair must go in one submission: make room first */
            io_uring_submit(&w->ring);
            sqe = io_uring_get_sqe(&w->ring);
        }
        io_uring_prep_fsync(sqe, l->lw.fd, IORING_FSYNC_DATASYNC);
        io_uring_sqe_set_data64(sqe, op_pack(OP_LOG_SYNC, 0, org));
    }
}

void commit_submit(struct worker *w)
{
    struct commit_log *l = w->dirty_logs, *keep = NULL;
    w->dirty_logs = NULL;
    while (l) {
        struct commit_log *next = l->next_dirty;
        l->on_dirty = false;
        if (l->busy) {
            /* one sync in flight per file: this batch goes when it completes */
            l->on_dirty = true;
            l->next_dirty = keep;
            keep = l;
        } else if (l->b[l->fill].len) {
            struct batch *b = &l->b[l->fill];
            l->fill = !l->fill;
            l->first_seq = l->lw.next_seq;
            seal(l, b);
            l->busy = true;
            l->done = 0;
            l->err = 0;
            w->logs_busy++;
            submit_io(w, l);
        }
        l = next;
    }
    w->dirty_logs = keep;
}

static void release(struct worker *w, struct batch *b, bool ok)
{
    for (uint32_t i = 0; i < b->nw; i++) {
        struct waiter *wt = &b->w[i];
        struct conn *c = &w->conns[wt->slot];
        if (c->gen != wt->gen || c->closing)
            continue; /* the client left; its readings are durable all the same */
        struct pending_resp *p = &c->q[wt->qidx % CONN_QUEUE];
        if (!ok && p->status == 202) {
            p->status = 503;
            p->msg = strdup("{\"error\":\"storage unavailable\"}");
        }
        if (p->waiting)
            p->waiting--;
        ingest_flush_responses(w, c);
        worker_conn_progress(w, c);
    }
}

static void finish(struct worker *w, struct commit_log *l)
{
    struct batch *b = &l->b[!l->fill];
    bool ok = l->err == 0;
    if (ok) {
        l->lw.end += b->len;
        atomic_fetch_add_explicit(&w->st.commits, 1, memory_order_relaxed);
    } else {
        /* cut the file back to the last durable batch; the sequence numbers of
         * the failed batch are reused by the next one */
        if (ftruncate(l->lw.fd, (off_t)l->lw.end) != 0) {
            /* the tail now holds a partial batch; recovery's checksum walk
             * will cut it, and nothing of it was acknowledged */
        }
        l->lw.next_seq = l->first_seq;
        atomic_fetch_add_explicit(&w->st.commit_failures, 1, memory_order_relaxed);
        fprintf(stderr,
                "sluiced: worker %u: commit of %u readings to org %u failed: %s "
                "(answered 503, nothing acknowledged)\n",
                w->id, b->nrec, l->lw.org, strerror(-l->err));
    }
    l->busy = false;
    w->logs_busy--;
    release(w, b, ok);
    b->len = 0;
    b->nrec = 0;
    b->nw = 0;
    if (l->b[l->fill].len)
        mark_dirty(w, l);
}

void commit_complete(struct worker *w, struct io_uring_cqe *cqe)
{
    uint32_t org = op_slot(cqe->user_data);
    struct commit_log *l = w->logs[org];
    struct batch *b = &l->b[!l->fill];
    bool sync = w->eng->cfg.fsync != SLUICE_FSYNC_NEVER;
    if (op_kind(cqe->user_data) == OP_LOG_WRITE) {
        if (cqe->res < 0 && !l->err)
            l->err = cqe->res;
        else if (cqe->res > 0)
            l->done += (size_t)cqe->res;
        else if (cqe->res == 0 && !l->err)
            l->err = -EIO; /* no progress on a regular file: treat as failure */
        if (!sync) {
            if (!l->err && l->done < b->len)
                submit_io(w, l);
            else
                finish(w, l);
        }
        return;
    }
    /* the sync CQE ends the batch, unless a short write cancelled it */
    if (cqe->res == -ECANCELED && !l->err && l->done < b->len) {
        submit_io(w, l);
        return;
    }
    if (cqe->res < 0 && !l->err)
        l->err = cqe->res;
    finish(w, l);
}

void commit_close_all(struct worker *w)
{
    for (uint32_t i = 0; i < w->nlogs; i++) {
        struct commit_log *l = w->logs[i];
        if (!l)
            continue;
        log_writer_close(&l->lw);
        for (int k = 0; k < 2; k++) {
            free(l->b[k].buf);
            free(l->b[k].w);
        }
        free(l);
    }
    free(w->logs);
    w->logs = NULL;
    w->nlogs = 0;
}
