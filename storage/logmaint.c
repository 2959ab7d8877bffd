/* storage/logmaint.c — log retention and verification; see log.h.
 *
 * Both walk an org's directories themselves rather than through a cursor:
 * retention must not read records at all (it decides from indexes and file
 * times), and verification must go on past damage that ends a cursor's segment.
 */
#include "storage/log.h"

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

#define NAME_SEG ".seg"
#define NAME_IDX ".idx"

/* ---- listing ---- */

/* One base seq of a worker directory: its segment and/or its index. */
struct seg_entry {
    uint64_t base;
    int has_seg, has_idx;
    uint64_t bytes;  /* retention: the segment's size */
    uint64_t age_ns; /* retention: its newest record's time, or its mtime */
};

struct worker_dir {
    unsigned worker;
    char dir[LOG_PATH_MAX];
    struct seg_entry *v;
    size_t n, cap;
    size_t nseg;  /* entries with a segment; they come first after list_worker */
    size_t front; /* retention: the first segment not deleted */
};

/* Segments sort first, by base; then index files without a segment, by base. */
static int cmp_entry(const void *a, const void *b)
{
    const struct seg_entry *x = a, *y = b;
    if (x->has_seg != y->has_seg) return y->has_seg - x->has_seg;
    return (x->base > y->base) - (x->base < y->base);
}

static int entry_add(struct worker_dir *w, uint64_t base, int is_seg)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->v[i].base == base) {
            if (is_seg)
                w->v[i].has_seg = 1;
            else
                w->v[i].has_idx = 1;
            return 0;
        }
    }
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 16;
        struct seg_entry *nv = realloc(w->v, ncap * sizeof *nv);
        if (!nv) return -ENOMEM;
        w->v = nv;
        w->cap = ncap;
    }
    w->v[w->n++] = (struct seg_entry){.base = base, .has_seg = is_seg, .has_idx = !is_seg};
    return 0;
}

/* log_dir_each callback of list_worker. Anything but "<20 digits>.seg" and
 * "<20 digits>.idx" (an index being written under a temporary name, an
 * operator's file) is not ours to judge or delete. */
static int list_worker_entry(void *ctx, const char *name)
{
    uint64_t base;
    if (log_name_base(name, NAME_SEG, &base) == 0) return entry_add(ctx, base, 1);
    if (log_name_base(name, NAME_IDX, &base) == 0) return entry_add(ctx, base, 0);
    return 0;
}

/* Lists the segments and indexes of w->dir. Returns 0, 1 when it is not a
 * directory, -errno. */
static int list_worker(struct worker_dir *w)
{
    int rc = log_dir_each(w->dir, list_worker_entry, w);
    if (rc < 0) return rc == -ENOTDIR ? 1 : rc;
    if (w->n > 1) qsort(w->v, w->n, sizeof *w->v, cmp_entry);
    w->nseg = 0;
    while (w->nseg < w->n && w->v[w->nseg].has_seg)
        w->nseg++;
    return 0;
}

/* The buffers it is given always fit the name. */
static void entry_path(char *buf, size_t cap, const struct worker_dir *w, uint64_t base,
                       const char *ext)
{
    log_file_path(buf, cap, w->dir, base, ext);
}

static void free_workers(struct worker_dir *ws, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ws[i].v);
    free(ws);
}

static int cmp_worker(const void *a, const void *b)
{
    const struct worker_dir *x = a, *y = b;
    return (x->worker > y->worker) - (x->worker < y->worker);
}

struct org_list {
    const char *org_dir;
    struct worker_dir *ws;
    size_t n, cap;
};

/* log_dir_each callback of list_org: lists a "w<N>" directory's files. */
static int list_org_entry(void *ctx, const char *name)
{
    struct org_list *l = ctx;
    unsigned wn;
    if (log_worker_name(name, &wn) < 0) return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        struct worker_dir *nw = realloc(l->ws, ncap * sizeof *nw);
        if (!nw) return -ENOMEM;
        l->ws = nw;
        l->cap = ncap;
    }
    struct worker_dir *w = &l->ws[l->n];
    memset(w, 0, sizeof *w);
    w->worker = wn;
    int k = snprintf(w->dir, sizeof w->dir, "%s/%s", l->org_dir, name);
    if (k < 0 || (size_t)k >= sizeof w->dir) return -ENAMETOOLONG;
    int rc = list_worker(w);
    if (rc < 0) {
        free(w->v);
        return rc;
    }
    if (rc == 0) l->n++; /* rc 1: "w<N>" that is not a directory */
    return 0;
}

/* Lists every "w<N>" directory of org with its files, sorted by N. Returns 0
 * (*out NULL when *n is 0), -ENOENT when the org has no log directory, -errno. */
static int list_org(const char *data_dir, uint32_t org, struct worker_dir **out, size_t *n)
{
    char org_dir[LOG_PATH_MAX];
    struct org_list l = {.org_dir = org_dir};

    *out = NULL;
    *n = 0;
    int rc = log_dir_path(org_dir, sizeof org_dir, data_dir, org, -1);
    if (rc < 0) return rc;
    rc = log_dir_each(org_dir, list_org_entry, &l);
    if (rc < 0) {
        free_workers(l.ws, l.n);
        return rc;
    }
    if (l.n > 1) qsort(l.ws, l.n, sizeof *l.ws, cmp_worker);
    *out = l.ws;
    *n = l.n;
    return 0;
}

/* ---- retention ---- */

struct retention {
    void (*report)(void *ctx, const char *path, uint64_t bytes, const char *why);
    void *ctx;
    int deleted;
};

/* Deletes the segment w->v[i] and its index, durably. The index goes first: a
 * crash in between leaves a sealed segment without an index, which every
 * reader handles (and the next pass deletes by mtime); the other order could
 * leave an index whose segment is gone, harmless too but clutter. The
 * directory is synced before the next deletion so that a crash cannot keep a
 * later segment's deletion and lose an earlier one's: that would be a hole in
 * the worker's seqs, which readers report as corruption.
 * Returns 0 or -errno. */
static int delete_segment(struct retention *rt, struct worker_dir *w, size_t i, const char *why)
{
    char path[LOG_PATH_MAX + 32];
    struct seg_entry *e = &w->v[i];

    entry_path(path, sizeof path, w, e->base, NAME_IDX);
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
    entry_path(path, sizeof path, w, e->base, NAME_SEG);
    int gone = unlink(path) == 0;
    if (!gone && errno != ENOENT) return -errno;
    int rc = log_fsync_dir(w->dir);
    if (rc < 0) return rc;
    /* ENOENT: someone else (another retention pass) deleted it first. */
    if (gone) {
        rt->deleted++;
        if (rt->report) rt->report(rt->ctx, path, e->bytes, why);
    }
    return 0;
}

/* Fills bytes and age_ns of w's segments. A segment that vanished meanwhile is
 * left with bytes 0 and age 0, so it is "deleted" first, finding ENOENT. */
static void retention_measure(struct worker_dir *w)
{
    char path[LOG_PATH_MAX + 32];
    for (size_t i = 0; i < w->nseg; i++) {
        struct seg_entry *e = &w->v[i];
        struct stat st;
        struct log_index x;
        entry_path(path, sizeof path, w, e->base, NAME_SEG);
        if (stat(path, &st) < 0) continue;
        e->bytes = (uint64_t)st.st_size;
        e->age_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
        if (e->has_idx && log_index_read(path, &x) == 0) {
            /* An empty segment's records are vacuously all old. */
            e->age_ns = x.min_ns > x.max_ns ? 0 : x.max_ns;
            free(x.e);
        }
    }
}

int log_retention_apply(
    const char *data_dir, uint32_t org, uint64_t now_ns, uint64_t max_age_ns, uint64_t max_bytes,
    void (*report)(void *ctx, const char *path, uint64_t bytes, const char *why), void *ctx)
{
    struct retention rt = {.report = report, .ctx = ctx};
    struct worker_dir *ws;
    size_t nw;
    char path[LOG_PATH_MAX + 32];

    int rc = list_org(data_dir, org, &ws, &nw);
    if (rc == -ENOENT) return 0;
    if (rc < 0) return rc;

    /* Orphan indexes first: they are not segments and count for nothing. An
     * index is written only for a segment that exists, so one without its
     * segment was left by an interrupted deletion. */
    for (size_t k = 0; k < nw; k++) {
        struct worker_dir *w = &ws[k];
        for (size_t i = w->nseg; i < w->n; i++) {
            entry_path(path, sizeof path, w, w->v[i].base, NAME_IDX);
            struct stat st;
            uint64_t bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
            if (unlink(path) < 0) {
                if (errno == ENOENT) continue;
                rc = -errno;
                goto done;
            }
            rc = log_fsync_dir(w->dir);
            if (rc < 0) goto done;
            if (report) report(ctx, path, bytes, "orphan index");
        }
        retention_measure(w);
    }

    /* By age: from the front of each worker's log while the front is old
     * enough. A younger segment stops the walk even if later ones are older
     * (a clock step): deleting past it would leave a hole. The newest segment
     * (index nseg - 1) is never a candidate. */
    if (max_age_ns > 0 && now_ns > max_age_ns) {
        uint64_t cutoff = now_ns - max_age_ns;
        for (size_t k = 0; k < nw; k++) {
            struct worker_dir *w = &ws[k];
            while (w->front + 1 < w->nseg && w->v[w->front].age_ns < cutoff) {
                rc = delete_segment(&rt, w, w->front, "age");
                if (rc < 0) goto done;
                w->front++;
            }
        }
    }

    /* By size: the oldest front segment across workers, until under the limit
     * or only newest segments remain. */
    if (max_bytes > 0) {
        uint64_t total = 0;
        for (size_t k = 0; k < nw; k++)
            for (size_t i = ws[k].front; i < ws[k].nseg; i++)
                total += ws[k].v[i].bytes;
        while (total > max_bytes) {
            struct worker_dir *pick = NULL;
            for (size_t k = 0; k < nw; k++) {
                struct worker_dir *w = &ws[k];
                if (w->front + 1 >= w->nseg) continue;
                if (!pick || w->v[w->front].age_ns < pick->v[pick->front].age_ns) pick = w;
            }
            if (!pick) break;
            rc = delete_segment(&rt, pick, pick->front, "size");
            if (rc < 0) goto done;
            total -= pick->v[pick->front].bytes;
            pick->front++;
        }
    }
    rc = rt.deleted;
done:
    free_workers(ws, nw);
    return rc;
}

/* ---- verification ---- */

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
static int seq_at(int fd, uint64_t off, uint64_t *seq)
{
    uint8_t h[RECORD_HEADER_SIZE];
    struct record r;
    ssize_t k = pread(fd, h, sizeof h, (off_t)off);
    if (k != (ssize_t)sizeof h || record_decode(h, &r) < 0) return -1;
    *seq = r.seq;
    return 0;
}

/* Scans one segment to its end, going on after damage. Returns 0 when every
 * byte verified, 1 when something was reported, -errno when reading failed
 * (reported too). *next_seq: the seq after the last good record. */
static int verify_records(struct verify *v, const char *path, int fd, int newest, uint64_t base,
                          struct index_check *k, uint64_t *next_seq)
{
    uint64_t from = SEGMENT_HEADER_SIZE, seq = base, found;
    int damaged = 0;
    for (;;) {
        struct log_scan sc;
        int rc = log_scan_records(fd, from, seq, &sc, index_check_record, k);
        if (rc < 0) {
            say(v, LOG_VERIFY_ERROR, path, from, "read error: %s", strerror(-rc));
            return rc;
        }
        v->st.records += sc.records;
        *next_seq = sc.next_seq;
        if (!sc.why) break;
        uint64_t stop = sc.valid_end;
        if (strcmp(sc.why, "sequence gap") == 0 && seq_at(fd, stop, &seq) == 0) {
            say(v, LOG_VERIFY_ERROR, path, stop,
                "sequence gap: expected seq %" PRIu64 ", found %" PRIu64, sc.next_seq, seq);
            from = stop; /* the record itself verified: go on from it */
            damaged = 1;
            continue;
        }
        rc = log_scan_resync(fd, stop, sc.next_seq, &found);
        if (rc < 0) {
            say(v, LOG_VERIFY_ERROR, path, stop, "read error: %s", strerror(-rc));
            return rc;
        }
        if (rc == 1 && seq_at(fd, found, &seq) == 0) {
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
    snprintf(idx, sizeof idx, "%.*s%s", (int)(strlen(seg) - 4), seg, NAME_IDX);
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

static void verify_worker(struct verify *v, struct worker_dir *w, uint32_t org)
{
    char path[LOG_PATH_MAX + 32];
    uint64_t prev_next = 0;
    int prev_known = 0; /* prev_next is where the next segment must start */

    for (size_t i = w->nseg; i < w->n; i++) {
        entry_path(path, sizeof path, w, w->v[i].base, NAME_IDX);
        say(v, LOG_VERIFY_WARNING, path, 0,
            "index without its segment (an interrupted deletion; retention removes it)");
    }
    for (size_t i = 0; i < w->nseg; i++) {
        const struct seg_entry *e = &w->v[i];
        int newest = i + 1 == w->nseg;
        int known = prev_known;
        struct segment_header h;
        uint8_t sh[SEGMENT_HEADER_SIZE];
        struct log_index x;
        struct index_check k = {0};
        int have_idx = 0;

        prev_known = 0;
        v->st.segments++;
        entry_path(path, sizeof path, w, e->base, NAME_SEG);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != ENOENT) /* ENOENT: retention deleted it meanwhile */
                say(v, LOG_VERIFY_ERROR, path, 0, "cannot open: %s", strerror(errno));
            else
                v->st.segments--;
            continue;
        }
        ssize_t got = pread(fd, sh, sizeof sh, 0);
        if (got >= 0 && got < (ssize_t)sizeof sh && newest) {
            say(v, LOG_VERIFY_WARNING, path, 0,
                "segment header incomplete (%zd bytes): being created, or a crash the writer "
                "repairs on start",
                got);
            close(fd);
            continue;
        }
        if (got != (ssize_t)sizeof sh || segment_header_decode(sh, &h) < 0) {
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
                snprintf(idx, sizeof idx, "%.*s%s", (int)(strlen(path) - 4), path, NAME_IDX);
                say(v, LOG_VERIFY_WARNING, idx, 0, "%s: readers ignore it",
                    rc == -EBADMSG ? "index fails verification" : strerror(-rc));
            }
        }
        uint64_t next = h.base_seq;
        int rc = verify_records(v, path, fd, newest, h.base_seq, &k, &next);
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
    struct worker_dir *ws;
    size_t nw;

    int rc = list_org(data_dir, org, &ws, &nw);
    if (rc < 0) return rc;
    for (size_t k = 0; k < nw; k++)
        verify_worker(&v, &ws[k], org);
    free_workers(ws, nw);
    if (stats) {
        stats->segments += v.st.segments;
        stats->records += v.st.records;
        stats->errors += v.st.errors;
        stats->warnings += v.st.warnings;
    }
    return v.st.errors > INT_MAX ? INT_MAX : (int)v.st.errors;
}
