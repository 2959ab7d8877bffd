/* storage/log_cursor.c — the merging cursor over an org's logs; see
 * log_cursor.h. */
#include "storage/log_cursor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log_index.h"
#include "storage/log_name.h"
#include "storage/log_scan.h"

/* A cursor holds one buffer per worker; on a many-core machine 1 MiB each adds
 * up, so their chunks share this budget (but stay between 64 KiB and 1 MiB). */
#define CURSOR_READ_BUDGET (16u << 20)
#define CURSOR_MIN_CHUNK   (64u << 10)

/* One worker's records: its segments in base-seq order, read one at a time. */
struct log_stream {
    unsigned worker;
    char dir[LOG_PATH_MAX];
    uint64_t *bases;
    size_t nseg;
    size_t iseg; /* segment open in rd, or the next to open when rd.fd < 0 */
    struct log_scan_reader rd;
    uint64_t pos;      /* offset of the head record in the open segment */
    uint64_t head_len; /* its size on disk, skipped on the next advance */
    uint64_t next_seq;
    int have_seq;     /* next_seq is known (a segment has been opened) */
    int idle;         /* at the end of what is there: only log_cursor_poll wakes it */
    int seek_check;   /* pos came from an index: check the record there first */
    int run;          /* records skipped since the last head include one >= until */
    uint64_t run_max; /* the largest recv_ns among them */
    int placeholder;  /* head stands for that run (see stream_advance): not yielded */
    int resynced;     /* pos was found past damage: take its record's seq as it is */
    struct record head;
    const uint8_t *body;
};

struct log_cursor {
    uint32_t org;
    uint64_t since, until; /* records outside [since, until) are not yielded */
    int ranged;            /* since or until was given: indexes are worth reading */
    char org_dir[LOG_PATH_MAX];
    struct log_stream *s;
    size_t n, cap;
    size_t *heap; /* streams with a head record, min-heap on (recv_ns, worker, seq) */
    size_t nheap;
    size_t *todo; /* streams to advance before the next pick */
    size_t ntodo;
    size_t slots; /* room in heap and todo */
    const char *err_why;
    uint64_t err_off;
    char err_path[LOG_PATH_MAX + 32];
};

/* The path of the stream's segment i; the buffers it is given always fit it. */
static void seg_path(char *buf, size_t cap, const struct log_stream *s, size_t i)
{
    log_file_path(buf, cap, s->dir, s->bases[i], ".seg");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

struct base_list {
    uint64_t *v;
    size_t n, cap;
};

/* log_dir_each callback of list_bases: keeps the segment names. */
static int list_bases_entry(void *ctx, const char *name)
{
    struct base_list *l = ctx;
    uint64_t base;
    if (log_name_base(name, ".seg", &base) < 0) return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        uint64_t *nb = realloc(l->v, ncap * sizeof *nb);
        if (!nb) return -ENOMEM;
        l->v = nb;
        l->cap = ncap;
    }
    l->v[l->n++] = base;
    return 0;
}

/* Lists "<20 digits>.seg" in dir into a sorted array. Other names (index
 * files, temporaries) are not segments and are skipped. Returns 0 (*out may be
 * NULL when *n is 0), 1 when dir is not a directory, -errno. */
static int list_bases(const char *dir, uint64_t **out, size_t *n)
{
    struct base_list l = {0};

    *out = NULL;
    *n = 0;
    int rc = log_dir_each(dir, list_bases_entry, &l);
    if (rc < 0) {
        free(l.v);
        return rc == -ENOTDIR ? 1 : rc;
    }
    if (l.n > 1) qsort(l.v, l.n, sizeof *l.v, cmp_u64);
    *out = l.v;
    *n = l.n;
    return 0;
}

/* Appends the segments of s->dir newer than the ones it knows (the writer has
 * rolled). Returns 0 or -errno. */
static int stream_relist(struct log_stream *s)
{
    uint64_t *v;
    size_t n, k = 0;
    int rc = list_bases(s->dir, &v, &n);
    if (rc != 0) return rc < 0 ? rc : 0;
    if (s->nseg > 0)
        while (k < n && v[k] <= s->bases[s->nseg - 1])
            k++;
    if (k < n) {
        uint64_t *nb = realloc(s->bases, (s->nseg + n - k) * sizeof *nb);
        if (!nb) {
            free(v);
            return -ENOMEM;
        }
        memcpy(nb + s->nseg, v + k, (n - k) * sizeof *nb);
        s->bases = nb;
        s->nseg += n - k;
    }
    free(v);
    return 0;
}

static void stream_close_seg(struct log_stream *s)
{
    if (s->rd.fd >= 0) close(s->rd.fd);
    s->rd.fd = -1;
}

/* Records where reading failed, for log_cursor_error, and returns rc. */
static int stream_error(struct log_cursor *c, struct log_stream *s, uint64_t off, const char *why,
                        int rc)
{
    seg_path(c->err_path, sizeof c->err_path, s, s->iseg);
    c->err_off = off;
    c->err_why = why;
    return rc;
}

/* Gives up on the current segment after damage: the stream goes on with the
 * worker's next segment (after a crash the writer continues in a new segment
 * past a damaged one, so ending the stream would hide everything written
 * since). The next segment's first seq cannot be checked: where the damaged one
 * really ended is unknown. Returns rc. */
static int stream_skip_seg(struct log_cursor *c, struct log_stream *s, uint64_t off,
                           const char *why, int rc)
{
    stream_error(c, s, off, why, rc);
    stream_close_seg(s);
    s->iseg++;
    s->have_seq = 0;
    s->seek_check = 0;
    return rc;
}

/* With a time range, decides from segment s->iseg's index whether it can be
 * skipped whole (returns 1; a segment of records all at or after `until` then
 * joins the stream's skipped run, see stream_advance) or where to start reading
 * it (*seek: an entry whose offset is past the segment header, else left
 * alone). Indexes are only trusted for sealed segments: the newest one is
 * still being written. */
static int stream_use_index(const struct log_cursor *c, struct log_stream *s,
                            struct log_index_entry *seek)
{
    char path[LOG_PATH_MAX + 32];
    struct log_index x;

    if (!c->ranged || s->iseg + 1 >= s->nseg) return 0;
    seg_path(path, sizeof path, s, s->iseg);
    if (log_index_read(path, &x) < 0) return 0; /* absent or bad: scan */
    int skip = x.min_ns > x.max_ns || x.max_ns < c->since || x.min_ns >= c->until;
    if (skip && x.min_ns <= x.max_ns && x.max_ns >= c->until) {
        s->run = 1;
        if (x.max_ns > s->run_max) s->run_max = x.max_ns;
    }
    /* The last entry whose max_ns_before < since: every record before it is
     * older than the range, whatever the clock did inside the segment. Entry 0
     * is the segment's start anyway; stopping at the first entry that fails
     * keeps this safe even if max_ns_before were not monotonic. */
    for (size_t i = 1; !skip && i < x.n && x.e[i].max_ns_before < c->since; i++)
        *seek = x.e[i];
    free(x.e);
    return skip;
}

/* Opens segment s->iseg and checks its header against its name, its place and
 * the previous segment. Returns 1 (open, s->pos at the first record to read),
 * 0 (nothing opened, s->iseg moved on: deleted by retention since it was
 * listed, or skipped by the time range), 2 (the newest segment's header is not
 * completely written yet: wait), -EBADMSG or -errno (reported; s->iseg has
 * moved on past a bad segment, or stays for a sequence gap, which is reported
 * once and then let through). */
static int stream_open_seg(struct log_cursor *c, struct log_stream *s)
{
    char path[LOG_PATH_MAX + 32];
    struct log_index_entry seek = {0};
    struct segment_header h;
    struct stat st;
    int newest = s->iseg + 1 == s->nseg;

    if (stream_use_index(c, s, &seek)) {
        s->iseg++;
        s->have_seq = 0; /* the skipped segment's last seq is not known */
        return 0;
    }
    seg_path(path, sizeof path, s, s->iseg);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            s->iseg++;
            s->have_seq = 0; /* a gap here is retention's doing, not damage */
            return 0;
        }
        return stream_skip_seg(c, s, 0, log_scan_why_io, -errno);
    }
    int rc = fstat(fd, &st) < 0 ? -errno : log_scan_header(fd, &h);
    if (rc == -EBADMSG && newest && st.st_size < (off_t)SEGMENT_HEADER_SIZE) {
        /* created, header not yet (completely) written: an in-progress roll
         * (a complete v1 header is shorter, and decodes) */
        close(fd);
        return 2;
    }
    if (rc == 0 && (h.base_seq != s->bases[s->iseg] || h.org != c->org || h.worker != s->worker))
        rc = -EBADMSG;
    if (rc < 0) {
        close(fd);
        return stream_skip_seg(c, s, 0, rc == -EBADMSG ? log_scan_why_bad_seg : log_scan_why_io,
                               rc);
    }
    if (s->have_seq && h.base_seq != s->next_seq) {
        close(fd);
        s->have_seq = 0; /* reported once; its records are read on the next call */
        return stream_error(c, s, 0, log_scan_why_seq_gap, -EBADMSG);
    }
    s->next_seq = h.base_seq;
    s->have_seq = 1;
    log_scan_reader_init(&s->rd, fd, (uint64_t)st.st_size, &h);
    s->pos = segment_header_size(&h);
    s->head_len = 0;
    if (seek.offset > s->pos) {
        s->pos = seek.offset;
        s->next_seq = seek.seq;
        s->seek_check = 1;
    }
    return 1;
}

/* Moves s to its next record in the range. Records before `since` are dropped
 * here: while one of them would head the stream in a full merge, only records
 * older still (so out of range too) could be picked. Records at or after
 * `until` cannot simply be dropped: after a clock step back, the stream's later
 * records come out after them in a full merge, and so after other workers'
 * records that are older than them. A run of skipped records behaves in the
 * merge exactly like one record keyed by the run's largest recv_ns (the stream
 * is held back until the others' heads pass that value), so the stream yields
 * such a placeholder head, which log_cursor_next pops and drops; only then
 * comes the record after the run. That keeps the range cursor's output
 * identical to a filtered full one, even when whole segments are skipped.
 * Returns 1 (s->head and s->body set),
 * 0 when the stream has nothing more for now (s->idle: the end of its newest
 * segment, maybe in the middle of a record being written), -EBADMSG or -errno
 * (reported for log_cursor_error; the stream has moved past the damage and the
 * next call goes on). */
static int stream_advance(struct log_cursor *c, struct log_stream *s)
{
    s->pos += s->head_len;
    s->head_len = 0;
    for (;;) {
        if (s->rd.fd < 0) {
            if (s->iseg >= s->nseg) {
                s->idle = 1;
                return 0;
            }
            int rc = stream_open_seg(c, s);
            if (rc < 0) return rc;
            if (rc == 0) continue;
            if (rc == 2) {
                s->idle = 1;
                return 0;
            }
        }
        int newest = s->iseg + 1 == s->nseg;
        const char *why = NULL;
        int rc = log_scan_record(&s->rd, s->pos, &s->head, &s->body, &why);
        if (s->seek_check) {
            s->seek_check = 0;
            if (rc != LOG_SCAN_OK || s->head.seq != s->next_seq) {
                /* The index named a record that is not there: it lied, so read
                 * the segment from its start instead. */
                s->pos = segment_header_size(&s->rd.hdr);
                s->next_seq = s->bases[s->iseg];
                continue;
            }
        }
        if (rc == LOG_SCAN_OK && s->resynced) {
            s->resynced = 0; /* the damage was reported; seqs go on from here */
            s->next_seq = s->head.seq;
        }
        if (rc == LOG_SCAN_OK) {
            if (s->head.seq != s->next_seq) {
                /* Reported once; then the record, whose own bytes verified, is
                 * let through on the next call. */
                s->next_seq = s->head.seq;
                return stream_error(c, s, s->pos, log_scan_why_seq_gap, -EBADMSG);
            }
            uint64_t ns = s->head.recv_ns;
            if (ns >= c->since && ns < c->until && s->run) {
                /* The record is read again after the placeholder. */
                s->head.recv_ns = s->run_max;
                s->placeholder = 1;
                s->run = 0;
                s->run_max = 0;
                return 1;
            }
            s->next_seq++;
            s->head_len = record_header_size(s->rd.hdr.version) + (uint64_t)s->head.length;
            if (ns < c->since || ns >= c->until) {
                if (ns >= c->until) {
                    s->run = 1;
                    if (ns > s->run_max) s->run_max = ns;
                }
                s->pos += s->head_len;
                s->head_len = 0;
                continue;
            }
            return 1;
        }
        if (rc == LOG_SCAN_END) {
            if (newest) {
                s->idle = 1; /* the fd stays open: log_cursor_poll reads on */
                return 0;
            }
            stream_close_seg(s);
            s->iseg++;
            continue;
        }
        if (rc == LOG_SCAN_STOP) {
            /* Only the newest segment can be mid-append; an incomplete record
             * anywhere else, or a failing one anywhere, is damage. */
            int torn = why == log_scan_why_trunc_hdr || why == log_scan_why_trunc_body;
            if (torn && newest) {
                s->idle = 1;
                return 0;
            }
            /* v3, several batches in flight: in the newest segment, verified
             * batches after a record that does not verify are, unless one of
             * them knew that record durable, batches written along with a
             * lost or unfinished one (a live writer's writes need not
             * complete in order), which the writer's recovery cuts: the end
             * of the data for now */
            struct log_scan_after after;
            if (newest && s->rd.hdr.version >= 3 &&
                log_scan_after_damage(s->rd.fd, &s->rd.hdr, s->pos, s->next_seq, &after) ==
                    LOG_SCAN_TORN) {
                s->idle = 1;
                return 0;
            }
            /* damage: report it once, then go on at the next batch that
             * verifies in this segment (the readings after it are intact), or
             * with the next segment when there is none */
            uint64_t found;
            int rs = log_scan_resync(s->rd.fd, &s->rd.hdr, s->pos, s->next_seq, &found);
            if (rs == 1) {
                stream_error(c, s, s->pos, why, -EBADMSG);
                s->pos = found;
                s->resynced = 1;
                return -EBADMSG;
            }
            if (rs == 0 && newest) {
                /* the newest segment has space written ahead of the writer
                 * (zeros), and a batch being written shows there as a record
                 * that does not verify yet: with no later batch after it this
                 * is the end of the data for now, as the writer's recovery
                 * would also decide (log_cursor_poll looks again) */
                s->idle = 1;
                return 0;
            }
            return stream_skip_seg(c, s, s->pos, why, -EBADMSG);
        }
        return stream_skip_seg(c, s, s->pos, log_scan_why_io, rc);
    }
}

static int head_less(const struct log_cursor *c, size_t a, size_t b)
{
    const struct log_stream *x = &c->s[a], *y = &c->s[b];
    if (x->head.recv_ns != y->head.recv_ns) return x->head.recv_ns < y->head.recv_ns;
    if (x->worker != y->worker) return x->worker < y->worker;
    return x->head.seq < y->head.seq;
}

static void heap_push(struct log_cursor *c, size_t idx)
{
    size_t i = c->nheap++;
    c->heap[i] = idx;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!head_less(c, c->heap[i], c->heap[p])) break;
        size_t t = c->heap[i];
        c->heap[i] = c->heap[p];
        c->heap[p] = t;
        i = p;
    }
}

static size_t heap_pop(struct log_cursor *c)
{
    size_t top = c->heap[0];
    c->heap[0] = c->heap[--c->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->nheap && head_less(c, c->heap[l], c->heap[m])) m = l;
        if (r < c->nheap && head_less(c, c->heap[r], c->heap[m])) m = r;
        if (m == i) break;
        size_t t = c->heap[i];
        c->heap[i] = c->heap[m];
        c->heap[m] = t;
        i = m;
    }
    return top;
}

/* Makes room for one more stream in heap and todo. */
static int cursor_slots(struct log_cursor *c)
{
    if (c->n < c->slots) return 0;
    size_t ns = c->slots ? c->slots * 2 : 8;
    size_t *h = realloc(c->heap, ns * sizeof *h);
    if (!h) return -ENOMEM;
    c->heap = h;
    size_t *t = realloc(c->todo, ns * sizeof *t);
    if (!t) return -ENOMEM;
    c->todo = t;
    c->slots = ns;
    return 0;
}

/* Adds worker directory `name` (already known to be "w<digits>") as a stream,
 * unless it holds no segment yet (log_cursor_poll looks again). Returns 1 when
 * added, 0 when not, -errno. */
static int cursor_add_worker(struct log_cursor *c, const char *name, unsigned worker)
{
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 8;
        struct log_stream *ns = realloc(c->s, ncap * sizeof *ns);
        if (!ns) return -ENOMEM;
        c->s = ns;
        c->cap = ncap;
    }
    int rc = cursor_slots(c);
    if (rc < 0) return rc;
    struct log_stream *s = &c->s[c->n];
    memset(s, 0, sizeof *s);
    s->rd.fd = -1;
    s->rd.chunk = LOG_SCAN_CHUNK;
    s->worker = worker;
    int n = snprintf(s->dir, sizeof s->dir, "%s/%s", c->org_dir, name);
    if (n < 0 || (size_t)n >= sizeof s->dir) return -ENAMETOOLONG;
    rc = list_bases(s->dir, &s->bases, &s->nseg);
    if (rc < 0 || rc == 1 || s->nseg == 0) {
        free(s->bases); /* rc == 1: "w<N>" that is not a directory */
        return rc < 0 ? rc : 0;
    }
    c->n++;
    return 1;
}

static int cmp_stream_worker(const void *a, const void *b)
{
    const struct log_stream *x = a, *y = b;
    return (x->worker > y->worker) - (x->worker < y->worker);
}

static int cursor_has_worker(const struct log_cursor *c, unsigned worker)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->s[i].worker == worker) return 1;
    return 0;
}

/* log_dir_each callback of cursor_scan_workers: adds a worker directory the
 * cursor does not have yet. */
static int cursor_scan_entry(void *ctx, const char *name)
{
    struct log_cursor *c = ctx;
    unsigned w;
    if (log_worker_name(name, &w) < 0 || cursor_has_worker(c, w)) return 0;
    int rc = cursor_add_worker(c, name, w);
    return rc < 0 ? rc : 0;
}

/* Adds every worker directory of the org not yet in the cursor that has a
 * segment. New streams are queued to be read. Returns 0 or -errno. */
static int cursor_scan_workers(struct log_cursor *c)
{
    size_t first = c->n;
    /* On failure, the streams added before it are queued all the same. */
    int rc = log_dir_each(c->org_dir, cursor_scan_entry, c);
    /* Worker order only matters for ties, which head_less settles; sorting just
     * makes the cursor's own behaviour independent of readdir order. */
    if (c->n - first > 1) qsort(c->s + first, c->n - first, sizeof *c->s, cmp_stream_worker);
    /* One buffer per worker: on a many-core machine 1 MiB each adds up, so
     * their chunks share a budget. */
    size_t chunk = c->n ? CURSOR_READ_BUDGET / c->n : LOG_SCAN_CHUNK;
    chunk = chunk > LOG_SCAN_CHUNK     ? LOG_SCAN_CHUNK
            : chunk < CURSOR_MIN_CHUNK ? CURSOR_MIN_CHUNK
                                       : chunk;
    for (size_t i = first; i < c->n; i++)
        c->s[i].rd.chunk = chunk;
    /* Streams are first read by log_cursor_next, so that a damaged worker is
     * reported there, in order, instead of failing the whole open. */
    for (size_t i = c->n; i > first; i--)
        c->todo[c->ntodo++] = i - 1;
    return rc;
}

int log_cursor_open_range(const char *data_dir, uint32_t org, uint64_t since_ns, uint64_t until_ns,
                          struct log_cursor **out)
{
    int rc;

    *out = NULL;
    struct log_cursor *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->org = org;
    c->since = since_ns;
    c->until = until_ns ? until_ns : UINT64_MAX;
    c->ranged = since_ns != 0 || until_ns != 0;
    rc = log_dir_path(c->org_dir, sizeof c->org_dir, data_dir, org, -1);
    if (rc < 0) goto fail;
    rc = cursor_slots(c);
    if (rc < 0) goto fail;
    rc = cursor_scan_workers(c);
    if (rc < 0) goto fail;
    *out = c;
    return 0;
fail:
    log_cursor_close(c);
    return rc;
}

int log_cursor_open(const char *data_dir, uint32_t org, struct log_cursor **out)
{
    return log_cursor_open_range(data_dir, org, 0, 0, out);
}

int log_cursor_next(struct log_cursor *c, struct record *r, const uint8_t **body)
{
    for (;;) {
        while (c->ntodo > 0) {
            size_t idx = c->todo[c->ntodo - 1];
            int rc = stream_advance(c, &c->s[idx]);
            if (rc < 0) return rc; /* stays queued: the stream goes on next call */
            c->ntodo--;
            if (rc == 1) heap_push(c, idx);
        }
        if (c->nheap == 0) return 0;
        size_t idx = heap_pop(c);
        /* The record stays in its stream's buffer until the caller's next call,
         * so the stream is advanced then, not now. */
        c->todo[c->ntodo++] = idx;
        if (c->s[idx].placeholder) {
            c->s[idx].placeholder = 0; /* it has held the stream back: done */
            continue;
        }
        *r = c->s[idx].head;
        *body = c->s[idx].body;
        return 1;
    }
}

int log_cursor_poll(struct log_cursor *c)
{
    int rc = cursor_scan_workers(c);
    if (rc < 0 && rc != -ENOENT) return rc; /* no org dir yet: no worker either */
    for (size_t i = 0; i < c->n; i++) {
        struct log_stream *s = &c->s[i];
        if (!s->idle) continue;
        /* The listing comes before the size: once a newer segment exists, the
         * writer has finished with this one, so a size read after the listing
         * is final, and an incomplete record then is damage, not a write in
         * progress. */
        rc = stream_relist(s);
        if (rc < 0) return rc;
        if (s->rd.fd >= 0) {
            struct stat st;
            if (fstat(s->rd.fd, &st) < 0) return -errno;
            /* Drop the buffered window every time: records are written over
             * the zeros a writer wrote ahead without the size changing, and a
             * restarted writer may have cut a torn tail that is still in it. */
            s->rd.size = (uint64_t)st.st_size;
            s->rd.blen = 0;
        }
        s->idle = 0;
        c->todo[c->ntodo++] = i;
    }
    return 0;
}

/* Where the last failure returned by log_cursor_next happened: *path (valid until
 * the next log_cursor_next or log_cursor_close) and *offset (the record's byte
 * offset in that file; 0 for a bad segment header or a gap between segments).
 * Returns the static reason (the log_scan.why texts, "bad segment header",
 * "read error"), or NULL when log_cursor_next has not failed. */
const char *log_cursor_error(const struct log_cursor *c, const char **path, uint64_t *offset)
{
    if (!c->err_why) return NULL;
    if (path) *path = c->err_path;
    if (offset) *offset = c->err_off;
    return c->err_why;
}

void log_cursor_close(struct log_cursor *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        stream_close_seg(&c->s[i]);
        free(c->s[i].rd.buf);
        free(c->s[i].bases);
    }
    free(c->s);
    free(c->heap);
    free(c->todo);
    free(c);
}
