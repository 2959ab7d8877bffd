/* tests/unit/engine/commit_test.c — ingest and group commit without a socket
 * (engine/ingest.c, engine/commit.c, through the seam of engine/conn.h).
 *
 * A worker here is a real io_uring, a real data directory and the real
 * storage helper thread, with one connection slot whose session only records
 * what its durable op was told. The tests pump completions one at a time, so
 * they can see exactly when an acknowledgement is released: only after its
 * batch's fdatasync completed, never with the write alone.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/commit.h"
#include "engine/conn.h"
#include "engine/ingest.h"
#include "engine/iojob.h"
#include "engine/worker.h"
#include "storage/log.h"

/* ---- a worker without sockets ---- */

struct seen {
    int calls;
    uint64_t cookie;
    int err;
    uint64_t order[16]; /* cookies in the order they were answered */
    int errs[16];
};

static struct seen seen;

static void t_durable(struct worker *w, struct conn *c, uint64_t cookie, int err)
{
    (void)w;
    (void)c;
    if (seen.calls < 16) {
        seen.order[seen.calls] = cookie;
        seen.errs[seen.calls] = err;
    }
    seen.calls++;
    seen.cookie = cookie;
    seen.err = err;
}
static size_t t_max_input(const struct worker *w)
{
    (void)w;
    return 1 << 20;
}
static bool t_idle(const struct conn *c)
{
    (void)c;
    return true;
}

static const struct session_ops test_ops = {
    .name = "test", .max_input = t_max_input, .durable = t_durable, .idle = t_idle};

static char root[512];
static struct sluice_engine eng;
static struct worker wk;
static struct conn conns[2];
/* log write and fdatasync completions dispatched so far */
static int sync_cqes, write_cqes;

static void setup(void)
{
    /* in the working directory (meson's: the build dir, on a real disk), so
     * that the cases with several commits in flight get O_DIRECT, which a
     * tmpfs /tmp would refuse */
    char cwd[400];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    snprintf(root, sizeof root, "%s/commit-test-XXXXXX", cwd);
    cr_assert_not_null(mkdtemp(root));
    memset(&eng, 0, sizeof eng);
    memset(&wk, 0, sizeof wk);
    memset(&seen, 0, sizeof seen);
    memset(conns, 0, sizeof conns);
    sync_cqes = write_cqes = 0;
    sluice_config_init(&eng.cfg);
    snprintf(eng.cfg.data_dir, sizeof eng.cfg.data_dir, "%s", root);
    eng.cfg.direct_io = false; /* tmpfs has no O_DIRECT; the page cache path is the same */
    eng.nworkers = 1;
    eng.workers = &wk;
    wk.eng = &eng;
    wk.id = 0;
    wk.logs_cap = 8;
    wk.wake_fd = eventfd(0, EFD_CLOEXEC);
    cr_assert_geq(wk.wake_fd, 0);
    cr_assert_eq(io_uring_queue_init(256, &wk.ring, 0), 0);
    wk.conns = conns;
    wk.nconns = wk.conn_cap = 2;
    for (int i = 0; i < 2; i++) {
        conns[i].slot = (uint32_t)i;
        conns[i].gen = 1;
        conns[i].fd = -1;
        conns[i].ops = &test_ops;
    }
    cr_assert_eq(iojob_start(&eng), 0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    iojob_stop(&eng);
    commit_close_all(&wk);
    io_uring_queue_exit(&wk.ring);
    close(wk.wake_fd);
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(commit, .init = setup, .fini = teardown, .timeout = 60);

/* Hands back finished storage jobs, if the helper said there are some. */
static bool take_jobs(int wait_ms)
{
    struct pollfd p = {.fd = wk.wake_fd, .events = POLLIN};
    if (poll(&p, 1, wait_ms) != 1) return false;
    uint64_t v;
    cr_assert_eq(read(wk.wake_fd, &v, sizeof v), (ssize_t)sizeof v);
    for (struct iojob *j = iojob_take_done(&wk), *next; j; j = next) {
        next = j->next;
        commit_job_done(&wk, j);
    }
    return true;
}

static void dispatch(struct io_uring_cqe *cqe)
{
    unsigned kind = op_kind(cqe->user_data);
    if (kind == OP_LOG_SYNC) sync_cqes++;
    if (kind == OP_LOG_WRITE) write_cqes++;
    commit_complete(&wk, cqe);
    io_uring_cqe_seen(&wk.ring, cqe);
}

/* Dispatches one completion (waiting up to a second); false when none came. */
static bool one_cqe(void)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = 1};
    io_uring_submit(&wk.ring);
    if (io_uring_wait_cqe_timeout(&wk.ring, &cqe, &ts)) return false;
    dispatch(cqe);
    return true;
}

/* Runs the commit machinery until it is quiet: submits, storage jobs,
 * completions, as the loop would. */
static void settle_all(void)
{
    for (int i = 0; i < 2000; i++) {
        commit_submit(&wk);
        io_uring_submit(&wk.ring);
        bool progressed = take_jobs(0);
        struct io_uring_cqe *cqe;
        while (io_uring_peek_cqe(&wk.ring, &cqe) == 0) {
            dispatch(cqe);
            progressed = true;
        }
        if (progressed) continue;
        if (!wk.logs_busy && !wk.dirty_logs) return;
        struct pollfd p[2] = {{.fd = wk.wake_fd, .events = POLLIN},
                              {.fd = wk.ring.ring_fd, .events = POLLIN}};
        poll(p, 2, 100);
    }
    cr_assert_fail("the commit machinery did not settle");
}

/* One request of n JSON readings for org on connection 0. */
static int request(uint32_t org, int n, uint64_t cookie)
{
    struct ingest_txn t;
    cr_assert_eq(ingest_begin(&wk, org, 1, &t), 0);
    struct ingest_meta m = {.proto = RECORD_PROTO_HTTP, .ctype = RECORD_CTYPE_JSON};
    for (int i = 0; i < n; i++) {
        char p[32];
        int len = snprintf(p, sizeof p, "{\"i\":%d}", i);
        cr_assert_eq(ingest_add(&t, &m, p, (size_t)len), 0);
    }
    return ingest_commit(&t, &conns[0], cookie);
}

static size_t stored(uint32_t org)
{
    struct log_cursor *c;
    if (log_cursor_open(root, org, &c)) return 0;
    struct record r;
    const uint8_t *body;
    size_t n = 0;
    while (log_cursor_next(c, &r, &body) == 1)
        n++;
    log_cursor_close(c);
    return n;
}

/* ---- tests ---- */

Test(commit, ack_waits_for_the_fdatasync_not_the_write)
{
    cr_assert_eq(request(1, 3, 42), 0);
    /* the log of a new org opens, and gets space, in the background */
    do
        commit_submit(&wk);
    while (take_jobs(300));
    cr_assert(wk.logs_busy, "no batch in flight");
    /* the write and its linked fdatasync: dispatch them one at a time */
    cr_assert(one_cqe(), "no completion for the batch write");
    cr_expect_eq(write_cqes, 1);
    cr_expect_eq(seen.calls, 0, "acknowledged after the write, before its fdatasync");
    cr_assert(one_cqe(), "no completion for the batch fdatasync");
    cr_expect_eq(sync_cqes, 1);
    cr_expect_eq(seen.calls, 1, "not acknowledged after the fdatasync");
    cr_expect_eq(seen.cookie, 42);
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(stored(1), 3);
    cr_expect_eq(wk.pending_bytes, 0, "pending bytes not given back");
}

Test(commit, a_failed_sync_fails_the_batch_and_keeps_nothing)
{
    eng.fault = (struct fault){.op = FAULT_SYNC, .err = EIO, .count = 1};
    cr_assert_eq(request(1, 2, 7), 0);
    settle_all();
    cr_expect_eq(seen.calls, 1);
    cr_expect_eq(seen.err, -EIO, "the waiter was not told the sync failed");
    cr_expect_eq(stored(1), 0, "a failed batch's readings are in the log");
    /* the next batch goes after the failed one was cut off, and is kept */
    cr_assert_eq(request(1, 1, 8), 0);
    settle_all();
    cr_expect_eq(seen.calls, 2);
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(stored(1), 1);
}

/* What queued behind a failed batch fails with it: written after the cut it
 * would be durable while a reading before it is lost (a frame device's mark,
 * read back from the log after a restart, would then skip that reading). */
Test(commit, a_failed_sync_fails_the_batch_filling_behind_it)
{
    eng.fault = (struct fault){.op = FAULT_SYNC, .err = EIO, .count = 1};
    cr_assert_eq(request(1, 2, 7), 0);
    do
        commit_submit(&wk);
    while (take_jobs(300));
    cr_assert(wk.logs_busy, "no batch in flight");
    cr_assert(one_cqe(), "no completion for the batch write");
    /* a second request fills the next batch while the first one syncs */
    cr_assert_eq(request(1, 3, 8), 0);
    cr_assert(one_cqe(), "no completion for the batch fdatasync");
    cr_expect_eq(seen.calls, 2, "the batch behind the failed one was not answered");
    cr_expect_eq(seen.cookie, 8);
    cr_expect_eq(seen.err, -EIO, "the batch behind the failed one did not fail");
    settle_all();
    cr_expect_eq(stored(1), 0, "readings behind a failed batch are in the log");
    cr_assert_eq(request(1, 1, 9), 0);
    settle_all();
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(stored(1), 1);
}

Test(commit, an_aborted_request_leaves_no_trace)
{
    struct ingest_txn t;
    cr_assert_eq(ingest_begin(&wk, 1, 1, &t), 0);
    struct ingest_meta m = {.proto = RECORD_PROTO_HTTP, .ctype = RECORD_CTYPE_JSON};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ingest_add(&t, &m, "{}", 2), 0);
    ingest_abort(&t);
    cr_expect_eq(wk.pending_bytes, 0);
    cr_assert_eq(request(1, 1, 1), 0);
    settle_all();
    cr_expect_eq(stored(1), 1, "readings of the aborted request were written");
}

Test(commit, what_can_never_be_stored_is_refused_before_the_log)
{
    struct ingest_txn t;
    cr_assert_eq(ingest_begin(&wk, 1, 1, &t), 0);
    struct ingest_meta m = {.proto = RECORD_PROTO_HTTP, .ctype = RECORD_CTYPE_OCTET};
    size_t big = RECORD_MAX_BODY + 1;
    char *p = calloc(1, big);
    cr_assert_not_null(p);
    cr_expect_eq(ingest_add(&t, &m, p, big), -EMSGSIZE, "a reading over the record limit");
    /* many readings that fit one by one, but not as one request */
    int rc = 0;
    size_t n = 0;
    while (!rc && n < 100) {
        rc = ingest_add(&t, &m, p, 8u << 20);
        n++;
    }
    cr_expect_eq(rc, -E2BIG, "a request over INGEST_REQUEST_MAX");
    cr_expect_leq(n * (8u << 20), (size_t)INGEST_REQUEST_MAX + (8u << 20));
    ingest_abort(&t);
    free(p);
    settle_all();
    cr_expect_eq(stored(1), 0);
}

Test(commit, the_pending_budget_resumes_waiting_connections)
{
    eng.cfg.max_pending_bytes = 64; /* one small request fills it */
    cr_expect(ingest_has_room(&wk));
    cr_assert_eq(request(1, 2, 1), 0);
    cr_expect_geq(wk.pending_bytes, 2 * (RECORD_HEADER_SIZE + 7));
    cr_expect_not(ingest_has_room(&wk), "a full budget still has room");
    conn_wait_room(&wk, &conns[1]);
    cr_expect(conns[1].on_room);
    settle_all();
    cr_expect(ingest_has_room(&wk));
    cr_expect_not(conns[1].on_room, "the waiting connection was not resumed");
    cr_expect(conns[1].on_posted, "the waiting connection was not posted");
}

Test(commit, idle_logs_are_closed_and_reopen_on_the_next_write)
{
    eng.cfg.log_idle_timeout_ms = 1;
    cr_assert_eq(request(3, 1, 1), 0);
    settle_all();
    cr_expect_eq(wk.logs_open, 1);
    wk.now_ms += 5000;
    commit_tick(&wk);
    settle_all();
    cr_expect_eq(wk.logs_open, 0, "the idle log still holds descriptors");
    cr_assert_eq(request(3, 2, 2), 0);
    settle_all();
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(seen.cookie, 2);
    cr_expect_eq(stored(3), 3, "readings before and after the reopen");
}

Test(commit, past_its_share_of_descriptors_a_worker_closes_the_oldest_idle_log)
{
    wk.logs_cap = 2;
    for (uint32_t org = 1; org <= 5; org++) {
        wk.now_ms += 10;
        cr_assert_eq(request(org, 1, org), 0);
        settle_all();
        cr_expect_eq(seen.err, 0, "org %u", org);
        cr_expect_leq(wk.logs_open, 2, "org %u: %u logs open", org, wk.logs_open);
    }
    for (uint32_t org = 1; org <= 5; org++)
        cr_expect_eq(stored(org), 1, "org %u", org);
}

Test(commit, fsync_always_syncs_each_request_alone)
{
    eng.cfg.fsync = SLUICE_FSYNC_ALWAYS;
    cr_assert_eq(request(1, 1, 1), 0);
    cr_assert_eq(request(1, 1, 2), 0);
    cr_assert_eq(request(1, 1, 3), 0);
    settle_all();
    cr_expect_eq(seen.calls, 3);
    cr_expect_eq(sync_cqes, 3, "three requests, %d fdatasyncs", sync_cqes);
    cr_expect_eq(stored(1), 3);
}

/* ---- several commits in flight (--commits-in-flight) ---- */

/* Several commits in flight need direct writes (through the page cache a log
 * keeps one in flight): where this directory refuses O_DIRECT, skip. */
static void want_direct(void)
{
    char p[600];
    snprintf(p, sizeof p, "%s/probe", root);
    int fd = open(p, O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) cr_skip_test("O_DIRECT refused in %s (%s)", root, strerror(errno));
    close(fd);
    unlink(p);
    eng.cfg.direct_io = true;
}

/* Waits for the next completion and hands back a copy, marked seen: the test
 * dispatches it when it chooses, to play the kernel completing syncs out of
 * order. */
static struct io_uring_cqe take_cqe(void)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = 2};
    io_uring_submit(&wk.ring);
    cr_assert_eq(io_uring_wait_cqe_timeout(&wk.ring, &cqe, &ts), 0, "no completion came");
    struct io_uring_cqe copy = *cqe;
    io_uring_cqe_seen(&wk.ring, cqe);
    return copy;
}

static void deliver(struct io_uring_cqe c)
{
    unsigned kind = op_kind(c.user_data);
    if (kind == OP_LOG_SYNC) sync_cqes++;
    if (kind == OP_LOG_WRITE) write_cqes++;
    commit_complete(&wk, &c);
}

/* Starts one batch of a request of n readings: its write completes (and is
 * dispatched, so the next write may go), its sync's completion is held. */
static struct io_uring_cqe batch_in_flight(uint32_t org, int n, uint64_t cookie)
{
    cr_assert_eq(request(org, n, cookie), 0);
    do
        commit_submit(&wk);
    while (take_jobs(50));
    struct io_uring_cqe c = take_cqe();
    cr_assert_eq(op_kind(c.user_data), OP_LOG_WRITE, "the batch's write did not come first");
    deliver(c);
    c = take_cqe();
    cr_assert_eq(op_kind(c.user_data), OP_LOG_SYNC, "no fdatasync behind the write");
    return c;
}

static void out_of_order(void)
{
    want_direct(); /* through the page cache syncs never overlap (below) */
    eng.cfg.commits_in_flight = 4;
    struct io_uring_cqe s1 = batch_in_flight(1, 2, 1);
    struct io_uring_cqe s2 = batch_in_flight(1, 3, 2);
    struct io_uring_cqe s3 = batch_in_flight(1, 1, 3);
    cr_expect_eq(wk.logs_busy, 3, "three batches should be in flight at once");
    deliver(s3);
    deliver(s2);
    cr_expect_eq(seen.calls, 0, "a later batch was acknowledged before the first was durable");
    deliver(s1);
    cr_assert_eq(seen.calls, 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(seen.order[i], (uint64_t)i + 1, "answer %d went to request %llu", i,
                     (unsigned long long)seen.order[i]);
        cr_expect_eq(seen.errs[i], 0);
    }
    settle_all();
    cr_expect_eq(stored(1), 6);
}

Test(commit, with_syncs_completing_out_of_order_acknowledgements_leave_in_log_order)
{
    out_of_order();
}

/* Through the page cache a log keeps one batch in flight whatever K: Linux
 * reports a writeback error once per open file, to whichever fdatasync looks
 * first, so overlapping syncs on one descriptor could hand an earlier batch's
 * error to a later one and let the earlier be acknowledged. */
Test(commit, through_the_page_cache_syncs_never_overlap)
{
    eng.cfg.commits_in_flight = 4; /* direct_io off (setup) */
    struct io_uring_cqe s1 = batch_in_flight(1, 1, 1);
    cr_assert_eq(request(1, 1, 2), 0);
    commit_submit(&wk);
    io_uring_submit(&wk.ring);
    struct io_uring_cqe *cqe;
    cr_expect_neq(io_uring_peek_cqe(&wk.ring, &cqe), 0,
                  "a second buffered batch went while the first one's sync ran");
    cr_expect_eq(wk.logs_busy, 1);
    deliver(s1);
    settle_all();
    cr_expect_eq(seen.calls, 2);
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(stored(1), 2);
}

Test(commit, records_carry_the_durable_end_their_batch_was_sealed_with)
{
    want_direct();
    eng.cfg.commits_in_flight = 4;
    struct io_uring_cqe s1 = batch_in_flight(1, 2, 1); /* seqs 0, 1 */
    struct io_uring_cqe s2 = batch_in_flight(1, 3, 2); /* 2..4, batch 1 in flight */
    deliver(s1);
    struct io_uring_cqe s3 = batch_in_flight(1, 1, 3); /* 5, batch 2 the oldest in flight */
    deliver(s2);
    deliver(s3);
    cr_assert_eq(request(1, 1, 4), 0); /* 6, nothing in flight */
    settle_all();
    cr_assert_eq(seen.calls, 4);
    const uint64_t want[] = {0, 0, 0, 0, 0, 2, 6};
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, 1, &c), 0);
    struct record r;
    const uint8_t *body;
    size_t n = 0;
    while (log_cursor_next(c, &r, &body) == 1) {
        cr_assert_lt(n, 7);
        cr_expect_eq(r.seq, n);
        cr_expect_eq(r.durable_seq, want[n], "seq %zu: durable_seq %llu, want %llu", n,
                     (unsigned long long)r.durable_seq, (unsigned long long)want[n]);
        n++;
    }
    log_cursor_close(c);
    cr_expect_eq(n, 7);
}

Test(commit, no_more_than_k_batches_are_in_flight)
{
    want_direct();
    eng.cfg.commits_in_flight = 2;
    struct io_uring_cqe s1 = batch_in_flight(1, 1, 1);
    struct io_uring_cqe s2 = batch_in_flight(1, 1, 2);
    /* a third request waits in the filling batch: no write goes */
    cr_assert_eq(request(1, 1, 3), 0);
    commit_submit(&wk);
    io_uring_submit(&wk.ring);
    struct io_uring_cqe *cqe;
    cr_expect_neq(io_uring_peek_cqe(&wk.ring, &cqe), 0, "a third batch went with two in flight");
    cr_expect_eq(wk.logs_busy, 2);
    deliver(s1);
    cr_expect_eq(seen.calls, 1);
    /* one retired: the third goes */
    commit_submit(&wk);
    struct io_uring_cqe c = take_cqe();
    cr_assert_eq(op_kind(c.user_data), OP_LOG_WRITE, "the third batch did not go");
    deliver(c);
    struct io_uring_cqe s3 = take_cqe();
    deliver(s2);
    deliver(s3);
    settle_all();
    cr_expect_eq(seen.calls, 3);
    cr_expect_eq(stored(1), 3);
}

/* The fault seam with K in flight: a sync failing for batch n fails n and
 * every later batch in flight, although their own syncs succeed (and complete
 * first), and none of them is acknowledged; what was before n stays. */
static void failing_batch(int n_fail)
{
    want_direct();
    eng.cfg.commits_in_flight = 4;
    eng.fault = (struct fault){.op = FAULT_SYNC, .err = EIO, .after = (uint64_t)n_fail - 1,
                               .count = 1};
    struct io_uring_cqe s[3];
    for (int i = 0; i < 3; i++)
        s[i] = batch_in_flight(1, i + 1, (uint64_t)i + 1); /* 1, 2, 3 readings */
    cr_assert_eq(request(1, 4, 9), 0); /* filling behind them */
    deliver(s[2]);
    deliver(s[1]);
    deliver(s[0]);
    cr_assert_eq(seen.calls, 4, "%d answers", seen.calls);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(seen.errs[i], i + 1 < n_fail ? 0 : -EIO, "batch %d: %d", i + 1,
                     seen.errs[i]);
    cr_expect_eq(seen.order[3], 9);
    cr_expect_eq(seen.errs[3], -EIO, "the batch filling behind them did not fail");
    settle_all();
    size_t kept = 0;
    for (int i = 1; i < n_fail; i++)
        kept += (size_t)i;
    cr_expect_eq(stored(1), kept, "%zu readings stored, want %zu", stored(1), kept);
    /* the log goes on from the cut, gap-free */
    cr_assert_eq(request(1, 1, 10), 0);
    settle_all();
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(stored(1), kept + 1);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, 1, &c), 0);
    struct record r;
    const uint8_t *body;
    uint64_t want = 0;
    while (log_cursor_next(c, &r, &body) == 1)
        cr_expect_eq(r.seq, want++, "a gap in the log after the cut");
    log_cursor_close(c);
}

Test(commit, a_failed_first_sync_fails_every_later_batch_in_flight)
{
    failing_batch(1);
}

Test(commit, a_failed_middle_sync_keeps_the_batch_before_and_fails_the_rest)
{
    failing_batch(2);
}

Test(commit, a_failed_write_in_flight_fails_it_and_the_later_batches)
{
    want_direct();
    eng.cfg.commits_in_flight = 3;
    struct io_uring_cqe s1 = batch_in_flight(1, 1, 1);
    eng.fault = (struct fault){.op = FAULT_WRITE, .err = ENOSPC, .count = 1};
    cr_assert_eq(request(1, 2, 2), 0);
    commit_submit(&wk);
    deliver(take_cqe()); /* its write fails ... */
    deliver(take_cqe()); /* ... and its sync ends it */
    cr_expect_eq(seen.calls, 0, "answered before the batch before it was durable");
    deliver(s1);
    settle_all();
    cr_assert_eq(seen.calls, 2);
    cr_expect_eq(seen.errs[0], 0);
    cr_expect_eq(seen.errs[1], -ENOSPC);
    cr_expect_eq(stored(1), 1);
}

/* --dsync on: one RWF_DSYNC write per batch, no fdatasync; the acknowledgement
 * follows the write's completion, and the fault seam's sync failure is that
 * write's. */
Test(commit, dsync_writes_make_a_batch_durable_without_an_fdatasync)
{
    eng.dsync = true;
    cr_assert_eq(request(1, 2, 1), 0);
    cr_assert_eq(request(1, 1, 2), 0);
    settle_all();
    cr_expect_eq(seen.calls, 2);
    cr_expect_eq(seen.err, 0);
    cr_expect_eq(sync_cqes, 0, "an fdatasync with --dsync on");
    cr_expect_geq(write_cqes, 1);
    cr_expect_eq(stored(1), 3);
    eng.fault = (struct fault){.op = FAULT_SYNC, .err = EIO, .count = 1};
    cr_assert_eq(request(1, 1, 3), 0);
    settle_all();
    cr_expect_eq(seen.err, -EIO, "a failed RWF_DSYNC write was acknowledged");
    cr_expect_eq(stored(1), 3);
}
