/* storage/log_writer.c — creating, recovering and extending a worker's log
 * segment; see log_writer.h. Appending is the engine's (engine/commit.c): it
 * writes sealed batches at w->end through io_uring and advances end/next_seq
 * when they are durable. */
#include "storage/log_writer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/log_scan.h"

/* mkdir that makes the new entry durable: the parent is fsynced after a create. */
static int mkdir_durable(const char *path)
{
    if (mkdir(path, 0750) == 0) {
        char parent[LOG_PATH_MAX];
        snprintf(parent, sizeof parent, "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash) {
            *slash = '\0';
            return log_fsync_dir(parent[0] ? parent : "/");
        }
        return 0;
    }
    return errno == EEXIST ? 0 : -errno;
}

/* Newest segment (highest base seq) in dir, or -ENOENT. */
struct newest {
    uint64_t base;
    bool found;
};

static int newest_visit(void *ctx, const char *name)
{
    struct newest *n = ctx;
    uint64_t v;
    if (log_name_base(name, ".seg", &v) == 0 && (!n->found || v > n->base)) {
        n->base = v;
        n->found = true;
    }
    return 0;
}

/* Newest segment (highest base seq) in dir, -ENOENT when there is none, or the
 * listing's -errno (a failed listing must not pass for "the newest is older"). */
static int newest_segment(const char *dir, uint64_t *base)
{
    struct newest n = {0};
    int rc = log_dir_each(dir, newest_visit, &n);
    if (rc) return rc;
    if (!n.found) return -ENOENT;
    *base = n.base;
    return 0;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Points w at the segment open on fd: data up to end, zeros up to alloc, the
 * next record numbered next_seq, and an empty in-memory index. */
static void writer_at(struct log_writer *w, int fd, uint64_t base, uint64_t end, uint64_t alloc,
                      uint64_t next_seq, bool index_complete)
{
    w->fd = fd;
    w->end = end;
    w->alloc = alloc;
    w->next_seq = next_seq;
    w->idx.n = 0;
    w->idx.base_seq = base;
    w->idx.min_ns = UINT64_MAX;
    w->idx.max_ns = 0;
    w->index_complete = index_complete;
}

/* Creates segment <dir>/<base>.seg with its header, durably (file and name).
 * replace: an existing file of that name is overwritten (a newest segment that
 * a crash left shorter than its header). */
static int create_segment(struct log_writer *w, const char *dir, uint64_t base, bool replace)
{
    int n = snprintf(w->path, sizeof w->path, "%s/%020" PRIu64 ".seg", dir, base);
    if (n < 0 || (size_t)n >= sizeof w->path) return -ENAMETOOLONG;
    int fd = open(w->path, O_RDWR | O_CREAT | O_CLOEXEC | (replace ? O_TRUNC : O_EXCL), 0640);
    if (fd < 0) return -errno;
    uint8_t hdr[SEGMENT_HEADER_SIZE];
    struct segment_header h = {.version = SEGMENT_VERSION,
                               .worker = w->worker,
                               .org = w->org,
                               .base_seq = base,
                               .created_ns = now_ns()};
    /* a fresh seed per segment: it keys the checksums of its records, so
     * record-like bytes a device sends can never verify here */
    int rc = record_seed_new(&h.seed);
    errno = 0;
    if (!rc && (pwrite(fd, hdr, segment_header_encode(hdr, &h), 0) != (ssize_t)sizeof hdr ||
                fdatasync(fd)))
        rc = errno ? -errno : -EIO;
    if (!rc) rc = log_fsync_dir(dir); /* the new name must survive a crash too */
    if (rc) {
        close(fd);
        unlink(w->path);
        return rc;
    }
    w->created_ns = h.created_ns;
    w->seed = h.seed;
    writer_at(w, fd, base, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE, base, true);
    return 0;
}

/* zeros to write ahead and to compare against; aligned for direct writes (in
 * .bss: reading it maps the shared zero page, it costs no memory) */
static uint8_t zeros[1 << 20] __attribute__((aligned(LOG_DIO_ALIGN)));

static uint64_t dio_round_up(uint64_t v)
{
    return (v + LOG_DIO_ALIGN - 1) & ~(uint64_t)(LOG_DIO_ALIGN - 1);
}

/* Writes the zeros of [w->alloc, want) directly, from the aligned block that
 * holds alloc (want is aligned). That block is rewritten as it is on disk:
 * w->tail when it also holds end, else zeros (all past end is zeros).
 * Returns where writing stopped (want when all went). */
static uint64_t zero_fill_direct(struct log_writer *w, uint64_t want)
{
    uint64_t at = w->alloc & ~(uint64_t)(LOG_DIO_ALIGN - 1);
    if (at < want && at == (w->end & ~(uint64_t)(LOG_DIO_ALIGN - 1))) {
        if (pwrite(w->dfd, w->tail, LOG_DIO_ALIGN, (off_t)at) != (ssize_t)LOG_DIO_ALIGN)
            return w->alloc;
        at += LOG_DIO_ALIGN;
    }
    while (at < want) {
        size_t n = want - at < sizeof zeros ? (size_t)(want - at) : sizeof zeros;
        ssize_t put = pwrite(w->dfd, zeros, n, (off_t)at);
        if (put <= 0) break;
        at += (uint64_t)put & ~(uint64_t)(LOG_DIO_ALIGN - 1);
        if ((size_t)put % LOG_DIO_ALIGN) break; /* a short direct write: stop here */
    }
    return at > w->alloc ? at : w->alloc;
}

int log_writer_reserve(struct log_writer *w, uint64_t need, uint64_t cap)
{
    if (w->end + need <= w->alloc) return 0;
    uint64_t want = w->alloc + LOG_PREALLOC_STEP;
    if (want > cap) want = cap;
    if (want < w->end + need) want = w->end + need;
    for (int attempt = 0; attempt < 2; attempt++) {
        uint64_t at = w->alloc;
        errno = 0;
        if (w->dfd >= 0) {
            want = dio_round_up(want);
            at = zero_fill_direct(w, want);
            /* A direct write that extends the file leaves the new size and the
             * new blocks' allocation to the filesystem's metadata, which a
             * later commit's fdatasync need not write: overwriting blocks
             * changes no size. Make them durable now (full fsync: whatever
             * the filesystem marks dirty), once per step, before any batch
             * is written into them. */
            if (at >= want && fsync(w->fd)) at = w->alloc;
        }
        while (at < want && w->dfd < 0) {
            size_t n = want - at < sizeof zeros ? (size_t)(want - at) : sizeof zeros;
            ssize_t put = pwrite(w->fd, zeros, n, (off_t)at);
            if (put <= 0) break;
            at += (uint64_t)put;
        }
        if (at >= want) {
            w->alloc = want;
            return 0;
        }
        int err = errno ? errno : EIO;
        /* take back a partial extension: the file must not end in a half step
         * that later looks like anything but zeros */
        if (ftruncate(w->fd, (off_t)w->alloc)) return -errno;
        uint64_t least = w->dfd >= 0 ? dio_round_up(w->end + need) : w->end + need;
        if (err != ENOSPC || want <= least) return -err;
        want = least; /* a full disk may still hold just this batch */
    }
    return -ENOSPC;
}

/* The newest segment is of an older version (1 or 2), now open in w and
 * recovered by its own version's rule: the writer appends records of the
 * current version only, so it seals that segment as it is and goes on in a
 * new one; an empty old segment is replaced by a current one of the same base.
 * Adds a line to report. Returns 0 or -errno (w is closed then). */
static int writer_upgrade(struct log_writer *w, const char *dir, unsigned old, char *report,
                          size_t report_cap)
{
    size_t used = strlen(report);
    int rc;
    if (w->next_seq == w->idx.base_seq) {
        close(w->fd);
        w->fd = -1;
        rc = create_segment(w, dir, w->idx.base_seq, true);
    } else {
        rc = log_writer_roll(w);
    }
    if (rc) {
        log_writer_close(w);
        return rc;
    }
    snprintf(report + used, report_cap - used,
             "%sversion %u segment sealed; continuing in version %u segment %s", used ? "; " : "",
             old, SEGMENT_VERSION, w->path);
    return 0;
}

int log_writer_open(struct log_writer *w, const char *data_dir, uint32_t org, unsigned worker,
                    char *report, size_t report_cap)
{
    char dir[LOG_PATH_MAX - 32]; /* room left for "/<20 digits>.seg" */
    int rc;
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->dfd = -1;
    w->org = org;
    w->worker = worker;
    report[0] = '\0';

    snprintf(dir, sizeof dir, "%s/logs", data_dir);
    if ((rc = mkdir_durable(dir))) return rc;
    if ((rc = log_dir_path(dir, sizeof dir, data_dir, org, -1)) || (rc = mkdir_durable(dir)))
        return rc;
    if ((rc = log_dir_path(dir, sizeof dir, data_dir, org, (int)worker)) ||
        (rc = mkdir_durable(dir)))
        return rc;

    uint64_t base = 0;
    rc = newest_segment(dir, &base);
    if (rc == -ENOENT) return create_segment(w, dir, 0, false);
    if (rc) return rc;

    snprintf(w->path, sizeof w->path, "%s/%020" PRIu64 ".seg", dir, base);
    int fd = open(w->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat st;
    struct segment_header sh;
    if (fstat(fd, &st) == 0 && st.st_size < (off_t)SEGMENT_HEADER_SIZE &&
        log_scan_header(fd, &sh) == -EBADMSG) {
        /* died between creating the segment and making its header durable:
         * nothing was ever written after it, so start it again (a complete
         * v1 header is shorter than a v2 one, and decodes) */
        close(fd);
        snprintf(report, report_cap, "%s: segment shorter than its header, recreated", w->path);
        return create_segment(w, dir, base, true);
    }
    struct log_scan scan;
    rc = log_scan_segment(fd, &scan);
    if (rc == 0 && (scan.hdr.org != org || scan.hdr.worker != worker || scan.hdr.base_seq != base))
        rc = -EBADMSG; /* a file copied or renamed into the wrong place */
    if (rc == -EBADMSG) {
        /* not a segment of ours at this place: keep it for the operator and
         * `sluice log verify`, and write on in a new segment numbered past
         * anything it could hold */
        uint64_t size = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
        close(fd);
        snprintf(report, report_cap,
                 "%s: bad segment header; left untouched, continuing in a new segment", w->path);
        return create_segment(w, dir, base + size / RECORD_HEADER_MIN + 1, false);
    }
    if (rc) {
        close(fd);
        return rc;
    }
    w->created_ns = scan.hdr.created_ns;
    uint64_t alloc = scan.file_size;
    rc = log_all_zero(fd, scan.valid_end, scan.file_size);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (rc == 1) {
        /* space written ahead (log_writer_reserve) and not used yet: the log
         * ends at valid_end, nothing was cut */
    } else if (scan.valid_end < scan.file_size) {
        struct log_scan_after after;
        rc = log_scan_after_damage(fd, &scan.hdr, scan.valid_end, scan.next_seq, &after);
        if (rc < 0 && rc != -E2BIG) {
            close(fd);
            return rc;
        }
        if (rc != LOG_SCAN_TORN) {
            /* damage in the middle: a later batch proves the damaged record
             * durable (v1/v2: it was written at all; v3: its durable_seq
             * passes the record), so it was acknowledged and this is no torn
             * tail. Also when too many candidates left it undecided: nothing
             * proves the tail torn, and cutting could lose acknowledged data.
             * Keep the file as it is for `sluice log verify` and the
             * operator; continue in a new segment numbered past anything the
             * damaged one can hold. */
            uint64_t bound = scan.next_seq + (scan.file_size - scan.valid_end) / RECORD_HEADER_MIN;
            char proof[96] = "";
            if (after.undecided)
                snprintf(proof, sizeof proof, "too many record-like bytes after it to tell");
            else if (scan.hdr.version >= 3)
                snprintf(proof, sizeof proof,
                         "at %" PRIu64 ", written when seq %" PRIu64 " was durable", after.proof,
                         after.durable_seq);
            else
                snprintf(proof, sizeof proof, "at %" PRIu64, after.proof);
            close(fd);
            snprintf(report, report_cap,
                     "%s: corrupt record at offset %" PRIu64 " (%s) with valid records after it "
                     "(%s); left untouched, continuing in a new segment",
                     w->path, scan.valid_end, scan.why ? scan.why : "bad record", proof);
            return create_segment(w, dir, bound + 1, false);
        }
        /* a torn tail: batches that were being written when the process died;
         * none of it was acknowledged (acks follow the fdatasync, in log
         * order), including v3 batches after the hole that reached the disk
         * whole while an earlier one did not */
        if (ftruncate(fd, (off_t)scan.valid_end) || fdatasync(fd)) {
            rc = -errno;
            close(fd);
            return rc;
        }
        int n = snprintf(
            report, report_cap, "%s: cut %" PRIu64 " bytes after offset %" PRIu64 " (%s)", w->path,
            scan.file_size - scan.valid_end, scan.valid_end, scan.why ? scan.why : "torn tail");
        if (after.batches && n > 0 && (size_t)n < report_cap)
            snprintf(report + n, report_cap - (size_t)n,
                     ", with %" PRIu64 " verified but never acknowledged batch%s from offset "
                     "%" PRIu64,
                     after.batches, after.batches == 1 ? "" : "es", after.first);
        alloc = scan.valid_end;
    }
    /* records written before this open are not in the in-memory index; the
     * roll rebuilds the index by scanning instead */
    writer_at(w, fd, base, scan.valid_end, alloc, scan.next_seq, scan.records == 0);
    w->seed = scan.hdr.seed;
    if (scan.hdr.version == SEGMENT_VERSION) return 0;
    return writer_upgrade(w, dir, scan.hdr.version, report, report_cap);
}

void log_writer_note(struct log_writer *w, uint64_t offset, uint64_t seq, uint64_t recv_ns)
{
    struct log_index *x = &w->idx;
    uint64_t last = x->n ? x->e[x->n - 1].offset : 0;
    if (x->n == 0 || offset - last >= LOG_INDEX_INTERVAL) {
        if (x->n == x->cap) {
            size_t cap = x->cap ? x->cap * 2 : 64;
            struct log_index_entry *e = realloc(x->e, cap * sizeof *e);
            if (e) {
                x->e = e;
                x->cap = cap;
            }
        }
        if (x->n < x->cap)
            x->e[x->n++] =
                (struct log_index_entry){.offset = offset, .seq = seq, .max_ns_before = x->max_ns};
    }
    if (recv_ns < x->min_ns) x->min_ns = recv_ns;
    if (recv_ns > x->max_ns) x->max_ns = recv_ns;
}

void log_writer_unnote(struct log_writer *w)
{
    /* min/max may stay a little wide: they are bounds readers use to skip, and
     * a wider bound only skips less */
    while (w->idx.n && w->idx.e[w->idx.n - 1].offset >= w->end)
        w->idx.n--;
}

int log_writer_roll(struct log_writer *w)
{
    char dir[LOG_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", w->path);
    char *slash = strrchr(dir, '/');
    if (!slash) return -EINVAL;
    *slash = '\0';
    /* a sealed segment ends at its last record: cut the space written ahead,
     * durably, before anything can follow it */
    if (w->alloc > w->end) {
        if (ftruncate(w->fd, (off_t)w->end) || fdatasync(w->fd)) return -errno;
        w->alloc = w->end;
    }
    /* the index is a hint: failing to write it must not stop the log */
    if (w->index_complete)
        log_index_write(w->path, &w->idx);
    else
        log_index_build(w->path);
    int old = w->fd, old_direct = w->dfd;
    struct log_writer next = *w;
    int rc = create_segment(&next, dir, w->next_seq, false);
    if (rc) return rc; /* w is untouched: the old segment stays current */
    close(old);
    next.dfd = -1;
    *w = next;
    if (old_direct >= 0) {
        close(old_direct);
        /* the same filesystem took O_DIRECT a moment ago; should it refuse
         * now, the new segment is written through the page cache */
        log_writer_direct(w);
    }
    return 0;
}

/* Reads the LOG_DIO_ALIGN-byte block holding w->end into w->tail through fd,
 * as it is on disk up to end; past end is zeros on disk (written ahead) or
 * nothing: kept zeros here. Returns 0 or -errno. */
static int read_tail(struct log_writer *w, int fd)
{
    uint64_t at = w->end & ~(uint64_t)(LOG_DIO_ALIGN - 1);
    size_t head = (size_t)(w->end - at);
    memset(w->tail, 0, LOG_DIO_ALIGN);
    ssize_t got = pread(fd, w->tail, LOG_DIO_ALIGN, (off_t)at);
    if (got < 0 || (size_t)got < head) return got < 0 ? -errno : -EIO;
    memset(w->tail + head, 0, LOG_DIO_ALIGN - head);
    return 0;
}

int log_writer_direct(struct log_writer *w)
{
    if (!w->tail) {
        void *p;
        if (posix_memalign(&p, LOG_DIO_ALIGN, LOG_DIO_ALIGN)) return -ENOMEM;
        w->tail = p;
    }
    int fd = open(w->path, O_RDWR | O_DIRECT | O_CLOEXEC);
    if (fd < 0) return -errno;
    /* where the kernel says what direct I/O needs (6.1+), check that our
     * alignment is enough; elsewhere a refused write falls back at run time */
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
        uint32_t off_align = sx.stx_dio_offset_align, mem_align = sx.stx_dio_mem_align;
        int why = off_align == 0                                           ? EOPNOTSUPP
                  : off_align > LOG_DIO_ALIGN || LOG_DIO_ALIGN % off_align ? EINVAL
                  : mem_align > LOG_DIO_ALIGN                              ? EINVAL
                                                                           : 0;
        if (why) {
            close(fd);
            return -why;
        }
    }
    int rc = read_tail(w, fd);
    if (rc) {
        close(fd);
        return rc;
    }
    w->dfd = fd;
    return 0;
}

_Static_assert(sizeof zeros >= LOG_PREALLOC_STEP, "one step of zeros is one write");

const void *log_zeros(void)
{
    return zeros;
}

bool log_writer_ahead_wanted(const struct log_writer *w, uint64_t cap, uint64_t *from, size_t *len)
{
    if (w->dfd < 0 || w->alloc % LOG_DIO_ALIGN || w->alloc - w->end >= LOG_PREALLOC_STEP / 2)
        return false;
    uint64_t want = w->alloc + LOG_PREALLOC_STEP;
    if (want > cap) want = cap;
    want = dio_round_up(want);
    if (want <= w->alloc) return false;
    *from = w->alloc;
    *len = (size_t)(want - w->alloc);
    return true;
}

void log_writer_buffered(struct log_writer *w)
{
    if (w->dfd >= 0) close(w->dfd);
    w->dfd = -1;
}

uint64_t log_writer_dio_need(const struct log_writer *w, size_t len)
{
    uint64_t head = w->end & (LOG_DIO_ALIGN - 1);
    return dio_round_up(head + len) - head;
}

const void *log_writer_dio_stage(struct log_writer *w, const void *batch, size_t len, uint64_t *off,
                                 size_t *wlen)
{
    size_t head = (size_t)(w->end & (LOG_DIO_ALIGN - 1));
    size_t total = head + len, n = (size_t)dio_round_up(total);
    if (n > w->stage_cap) {
        size_t cap = w->stage_cap ? w->stage_cap : 4 * LOG_DIO_ALIGN;
        while (cap < n)
            cap *= 2;
        void *p;
        if (posix_memalign(&p, LOG_DIO_ALIGN, cap)) return NULL;
        free(w->stage);
        w->stage = p;
        w->stage_cap = cap;
    }
    memcpy(w->stage, w->tail, head);
    memcpy(w->stage + head, batch, len);
    memset(w->stage + total, 0, n - total);
    *off = w->end - head;
    *wlen = n;
    return w->stage;
}

void log_writer_dio_done(struct log_writer *w, size_t len)
{
    size_t total = (size_t)(w->end & (LOG_DIO_ALIGN - 1)) + len;
    size_t block = total & ~(size_t)(LOG_DIO_ALIGN - 1), head = total - block;
    memcpy(w->tail, w->stage + block, head);
    memset(w->tail + head, 0, LOG_DIO_ALIGN - head);
}

void log_writer_close(struct log_writer *w)
{
    if (w->fd >= 0 && w->alloc > w->end && ftruncate(w->fd, (off_t)w->end) == 0)
        fdatasync(w->fd); /* best effort: recovery treats a zero tail as free space anyway */
    if (w->fd >= 0) close(w->fd);
    if (w->dfd >= 0) close(w->dfd);
    w->fd = w->dfd = -1;
    free(w->tail);
    free(w->stage);
    w->tail = w->stage = NULL;
    w->stage_cap = 0;
    free(w->idx.e);
    w->idx.e = NULL;
    w->idx.n = w->idx.cap = 0;
}

int log_writer_cut(struct log_writer *w)
{
    /* durably: a crash before the next batch's sync must not bring back
     * batches whose requests were answered as failed */
    if (ftruncate(w->fd, (off_t)w->end) || fdatasync(w->fd)) return -errno;
    w->alloc = w->end; /* the space ahead went too */
    return w->dfd < 0 ? 0 : read_tail(w, w->dfd);
}
