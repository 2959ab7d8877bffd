/* storage/log_verify.c — verification of an org's logs; see log_verify.h. */
#include "storage/log_verify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log_index.h"
#include "storage/log_list.h"
#include "storage/log_scan.h"

struct verify {
    void (*report)(void *ctx, int severity, const char *path, uint64_t offset, const char *msg);
    void *ctx;
    struct log_verify_stats st;
};

__attribute__((format(printf, 5, 6))) static void
say(struct verify *v, int severity, const char *path, uint64_t offset, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (severity == LOG_VERIFY_ERROR)
        v->st.errors++;
    else
        v->st.warnings++;
    if (v->report) v->report(v->ctx, severity, path, offset, msg);
}

/* Compares a segment's records, as the scan meets them, with its index. Only
 * what readers rely on is checked: that every entry names the start of a record
 * and its seq, that no record before an entry is newer than its max_ns_before,
 * and that [min_ns, max_ns] covers every record. Bounds that are merely loose
 * (a writer that cut a failed batch keeps min/max wide) are fine. */
struct index_check {
    const struct log_index *x;
    size_t j;        /* next entry to meet */
    uint64_t seen;   /* records so far */
    uint64_t max_ns; /* the largest recv_ns so far */
    uint64_t min_ns;
    uint64_t bad_off; /* the first mismatch, if msg[0] */
    char msg[200];
};

static void index_mismatch(struct index_check *k, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void index_mismatch(struct index_check *k, uint64_t off, const char *fmt, ...)
{
    if (k->msg[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->msg, sizeof k->msg, fmt, ap);
    va_end(ap);
    k->bad_off = off;
}

static void index_check_record(void *ctx, uint64_t offset, const struct record *r)
{
    struct index_check *k = ctx;
    const struct log_index *x = k->x;
    if (x) {
        while (k->j < x->n && x->e[k->j].offset < offset) {
            index_mismatch(k, x->e[k->j].offset, "index entry is not at the start of a record");
            k->j++;
        }
        if (k->j < x->n && x->e[k->j].offset == offset) {
            const struct log_index_entry *e = &x->e[k->j++];
            if (e->seq != r->seq)
                index_mismatch(k, offset,
                               "index entry says seq %" PRIu64 ", the record is %" PRIu64, e->seq,
                               r->seq);
            else if (k->seen > 0 && e->max_ns_before < k->max_ns)
                index_mismatch(k, offset,
                               "index entry says records before it are at most %" PRIu64
                               " ns, one is %" PRIu64 " ns",
                               e->max_ns_before, k->max_ns);
        }
    }
    if (k->seen == 0 || r->recv_ns < k->min_ns) k->min_ns = r->recv_ns;
    if (k->seen == 0 || r->recv_ns > k->max_ns) k->max_ns = r->recv_ns;
    k->seen++;
}

/* Reads the seq of the record at off (known to decode: a scan stopped there on
 * a seq gap, or log_scan_resync found it). */
static int seq_at(int fd, const struct segment_header *sh, uint64_t off, uint64_t *seq)
{
    uint8_t h[RECORD_HEADER_SIZE];
    size_t n = record_header_size(sh->version);
    struct record r;
    ssize_t k = pread(fd, h, n, (off_t)off);
    if (k != (ssize_t)n || record_decode(h, sh->version, &r) < 0) return -1;
    *seq = r.seq;
    return 0;
}

/* Scans one segment to its end, going on after damage. Returns 0 when every
 * byte verified, 1 when something was reported, -errno when reading failed
 * (reported too). *next_seq: the seq after the last good record. */
static int verify_records(struct verify *v, const char *path, int fd, int newest,
                          const struct segment_header *h, struct index_check *k, uint64_t *next_seq)
{
    uint64_t from = segment_header_size(h), seq = h->base_seq, found;
    int damaged = 0;
    for (;;) {
        struct log_scan sc;
        int rc = log_scan_records(fd, h, from, seq, &sc, index_check_record, k);
        if (rc < 0) {
            say(v, LOG_VERIFY_ERROR, path, from, "read error: %s", strerror(-rc));
            return rc;
        }
        v->st.records += sc.records;
        *next_seq = sc.next_seq;
        if (!sc.why) break;
        uint64_t stop = sc.valid_end;
        if (sc.why == log_scan_why_seq_gap && seq_at(fd, h, stop, &seq) == 0) {
            say(v, LOG_VERIFY_ERROR, path, stop,
                "sequence gap: expected seq %" PRIu64 ", found %" PRIu64, sc.next_seq, seq);
            from = stop; /* the record itself verified: go on from it */
            damaged = 1;
            continue;
        }
        rc = log_scan_resync(fd, h, stop, sc.next_seq, &found);
        if (rc == 1 && newest && h->version >= 3) {
            /* v3, several batches in flight: verified batches after the stop
             * that do not know it durable are a torn tail, as the writer's
             * recovery will decide (and cut) */
            struct log_scan_after after;
            int j = log_scan_after_damage(fd, h, stop, sc.next_seq, &after);
            if (j == LOG_SCAN_TORN)
                rc = 0;
            else if (j < 0 && j != -E2BIG)
                rc = j;
        }
        if (rc < 0) {
            say(v, LOG_VERIFY_ERROR, path, stop, "read error: %s", strerror(-rc));
            return rc;
        }
        if (rc == 1 && seq_at(fd, h, found, &seq) == 0) {
            say(v, LOG_VERIFY_ERROR, path, stop,
                "%s; %" PRIu64 " bytes unreadable, valid records resume at offset %" PRIu64, sc.why,
                found - stop, found);
            from = found;
            damaged = 1;
            continue;
        }
        if (newest && log_all_zero(fd, stop, sc.file_size) == 1) {
            /* space written ahead by a running writer: the data ends here */
        } else if (newest) {
            say(v, LOG_VERIFY_WARNING, path, stop,
                "torn tail: %" PRIu64 " bytes after the last complete record (%s); a write in "
                "progress, or cut when sluiced next starts",
                sc.file_size - stop, sc.why);
        } else {
            say(v, LOG_VERIFY_ERROR, path, stop,
                "%s, nothing valid after it (%" PRIu64 " bytes lost)", sc.why, sc.file_size - stop);
            damaged = 1;
        }
        break;
    }
    return damaged;
}

/* Checks a sealed segment's index, if the segment itself verified. */
static void verify_index(struct verify *v, const char *seg, const struct index_check *k,
                         uint64_t valid_end)
{
    char idx[LOG_PATH_MAX + 32];
    snprintf(idx, sizeof idx, "%.*s%s", (int)(strlen(seg) - 4), seg, LOG_LIST_IDX);
    const struct log_index *x = k->x;
    if (k->msg[0]) {
        say(v, LOG_VERIFY_ERROR, idx, k->bad_off, "%s (range reads would miss records)", k->msg);
        return;
    }
    for (size_t j = k->j; j < x->n; j++) {
        say(v, LOG_VERIFY_ERROR, idx, x->e[j].offset,
            "index entry points past the last record (at %" PRIu64 ")", valid_end);
        return;
    }
    if (k->seen > 0 && (x->min_ns > x->max_ns || x->min_ns > k->min_ns || x->max_ns < k->max_ns))
        say(v, LOG_VERIFY_ERROR, idx, 0,
            "index time range does not cover the records' [%" PRIu64 ", %" PRIu64
            "] ns (range reads would skip them)",
            k->min_ns, k->max_ns);
}

static void verify_worker(struct verify *v, struct log_list_worker *w, uint32_t org)
{
    char path[LOG_PATH_MAX + 32];
    uint64_t prev_next = 0;
    int prev_known = 0; /* prev_next is where the next segment must start */

    for (size_t i = w->nseg; i < w->n; i++) {
        log_list_path(path, sizeof path, w, w->v[i].base, LOG_LIST_IDX);
        say(v, LOG_VERIFY_WARNING, path, 0,
            "index without its segment (an interrupted deletion; retention removes it)");
    }
    for (size_t i = 0; i < w->nseg; i++) {
        const struct log_list_seg *e = &w->v[i];
        int newest = i + 1 == w->nseg;
        int known = prev_known;
        struct segment_header h;
        uint8_t sh[SEGMENT_HEADER_SIZE];
        struct log_index x;
        struct index_check k = {0};
        int have_idx = 0;

        prev_known = 0;
        v->st.segments++;
        log_list_path(path, sizeof path, w, e->base, LOG_LIST_SEG);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != ENOENT) /* ENOENT: retention deleted it meanwhile */
                say(v, LOG_VERIFY_ERROR, path, 0, "cannot open: %s", strerror(errno));
            else
                v->st.segments--;
            continue;
        }
        ssize_t got = pread(fd, sh, sizeof sh, 0);
        int bad = got < 0 || segment_header_decode(sh, (size_t)got, &h) < 0;
        if (bad && got >= 0 && got < (ssize_t)sizeof sh && newest) {
            say(v, LOG_VERIFY_WARNING, path, 0,
                "segment header incomplete (%zd bytes): being created, or a crash the writer "
                "repairs on start",
                got);
            close(fd);
            continue;
        }
        if (bad) {
            say(v, LOG_VERIFY_ERROR, path, 0, "bad segment header");
            close(fd);
            continue;
        }
        if (h.org != org || h.worker != w->worker || h.base_seq != e->base)
            say(v, LOG_VERIFY_ERROR, path, 0,
                "segment header says org %" PRIu32 " worker %" PRIu32 " base %" PRIu64
                ", its place org %" PRIu32 " worker %u base %" PRIu64,
                h.org, h.worker, h.base_seq, org, w->worker, e->base);
        else if (known && h.base_seq != prev_next)
            say(v, LOG_VERIFY_ERROR, path, 0,
                "sequence gap: the previous segment ends before seq %" PRIu64
                ", this one starts at %" PRIu64,
                prev_next, h.base_seq);

        /* The newest segment's index is not checked: readers ignore it, and a
         * crash during a roll can leave one that the next roll rewrites. */
        if (!newest) {
            int rc = log_index_read(path, &x);
            if (rc == 0) {
                have_idx = 1;
                k.x = &x;
            } else if (rc == -ENOENT) {
                say(v, LOG_VERIFY_WARNING, path, 0, "no index: range reads scan this segment");
            } else {
                char idx[LOG_PATH_MAX + 32];
                snprintf(idx, sizeof idx, "%.*s%s", (int)(strlen(path) - 4), path, LOG_LIST_IDX);
                say(v, LOG_VERIFY_WARNING, idx, 0, "%s: readers ignore it",
                    rc == -EBADMSG ? "index fails verification" : strerror(-rc));
            }
        }
        uint64_t next = h.base_seq;
        int rc = verify_records(v, path, fd, newest, &h, &k, &next);
        if (rc == 0 && have_idx) {
            struct stat st;
            verify_index(v, path, &k, fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0);
        }
        /* After damage the segment's true end is unknown (and the writer
         * numbers the segment it continues in past anything it could hold),
         * so the next segment's start is not checked against it. */
        prev_known = rc == 0;
        prev_next = next;
        if (have_idx) free(x.e);
        close(fd);
    }
}

int log_verify_org(const char *data_dir, uint32_t org,
                   void (*report)(void *ctx, int severity, const char *path, uint64_t offset,
                                  const char *msg),
                   void *ctx, struct log_verify_stats *stats)
{
    struct verify v = {.report = report, .ctx = ctx};
    struct log_list_worker *ws;
    size_t nw;

    int rc = log_list_org(data_dir, org, &ws, &nw);
    if (rc < 0) return rc;
    for (size_t k = 0; k < nw; k++)
        verify_worker(&v, &ws[k], org);
    log_list_free(ws, nw);
    if (stats) {
        stats->segments += v.st.segments;
        stats->records += v.st.records;
        stats->errors += v.st.errors;
        stats->warnings += v.st.warnings;
    }
    return v.st.errors > INT_MAX ? INT_MAX : (int)v.st.errors;
}
