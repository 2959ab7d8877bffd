/* storage/logread.c — scanning and reading the per-worker segment logs; see log.h.
 *
 * Everything here reads with pread into one growable buffer per file being read
 * (1 MiB, grown to the largest record met, at most RECORD_HEADER_SIZE +
 * RECORD_MAX_BODY). mmap was rejected: the writer truncates a torn tail on
 * recovery, and a reader touching a truncated page of a mapping dies of SIGBUS.
 * A file being appended to is read up to the size it had when it was opened;
 * Linux publishes i_size only after the bytes below it are in the page cache, so
 * that prefix is complete (an in-progress write shows up as a truncated record).
 */
#include "storage/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


#define READ_CHUNK (1u << 20)
/* A cursor holds one buffer per worker; on a many-core machine 1 MiB each adds
 * up, so their chunks share this budget (but stay between 64 KiB and 1 MiB). */
#define CURSOR_READ_BUDGET (16u << 20)
#define CURSOR_MIN_CHUNK   (64u << 10)
#define SEG_NAME_DIGITS    20

/* Reasons a scan stops; log_scan.why points at one of these. */
static const char why_trunc_hdr[] = "truncated record header";
static const char why_trunc_body[] = "truncated record body";
static const char why_bad_hdr[] = "bad record header";
static const char why_checksum[] = "checksum mismatch";
static const char why_seq_gap[] = "sequence gap";
static const char why_bad_seg[] = "bad segment header";
static const char why_io[] = "read error";

/* ---- buffered pread over one file ---- */

struct seg_reader {
    int fd;
    uint64_t size; /* readable bytes: the file size when it was opened */
    uint8_t *buf;
    size_t cap;
    size_t chunk;  /* read-ahead size: the buffer's size unless a record needs more */
    uint64_t boff; /* file offset of buf[0] */
    size_t blen;   /* valid bytes in buf */
};

static void rd_init(struct seg_reader *rd, int fd, uint64_t size)
{
    rd->fd = fd;
    rd->size = size;
    rd->boff = 0;
    rd->blen = 0;
}

/* Makes file bytes [pos, pos + n) available at rd->buf + (pos - rd->boff),
 * reading ahead a whole buffer so the following records come for free.
 * Returns 0, -ENODATA when the file ends first (it shrank under us), -ENOMEM,
 * -errno from pread. */
static int rd_fill(struct seg_reader *rd, uint64_t pos, size_t n)
{
    if (pos >= rd->boff && pos - rd->boff <= rd->blen && rd->blen - (pos - rd->boff) >= n) return 0;
    if (n > rd->cap) {
        size_t cap = n > rd->chunk ? n : rd->chunk;
        uint8_t *nb = realloc(rd->buf, cap);
        if (!nb) return -ENOMEM;
        rd->buf = nb;
        rd->cap = cap;
    }
    /* Keep the part of the window that is still wanted (a record straddling
     * the end of the previous read) instead of reading it again. */
    if (pos >= rd->boff && pos - rd->boff < rd->blen) {
        size_t skip = (size_t)(pos - rd->boff);
        memmove(rd->buf, rd->buf + skip, rd->blen - skip);
        rd->blen -= skip;
    } else {
        rd->blen = 0;
    }
    rd->boff = pos;
    size_t want = rd->cap;
    if (pos >= rd->size)
        want = 0;
    else if (rd->size - pos < want)
        want = (size_t)(rd->size - pos);
    while (rd->blen < want) {
        ssize_t got = pread(rd->fd, rd->buf + rd->blen, want - rd->blen, (off_t)(pos + rd->blen));
        if (got < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (got == 0) break;
        rd->blen += (size_t)got;
    }
    return rd->blen >= n ? 0 : -ENODATA;
}

enum { REC_END = 0, REC_OK = 1, REC_STOP = 2 };

/* Reads and verifies the record at pos. Returns REC_OK (*r decoded, *body points
 * at r->length bytes inside the reader's buffer, valid until its next fill),
 * REC_END when pos is the end of the data, REC_STOP with *why set when the
 * record is incomplete, undecodable or fails its checksum, or -errno. */
static int rd_record(struct seg_reader *rd, uint64_t pos, struct record *r, const uint8_t **body,
                     const char **why)
{
    if (pos >= rd->size) return REC_END;
    if (rd->size - pos < RECORD_HEADER_SIZE) {
        *why = why_trunc_hdr;
        return REC_STOP;
    }
    int rc = rd_fill(rd, pos, RECORD_HEADER_SIZE);
    if (rc == -ENODATA) {
        *why = why_trunc_hdr;
        return REC_STOP;
    }
    if (rc < 0) return rc;
    if (record_decode(rd->buf + (pos - rd->boff), r) < 0) {
        *why = why_bad_hdr;
        return REC_STOP;
    }
    /* record_decode caps length at RECORD_MAX_BODY, so the fill below is bounded
     * whatever the file says. */
    if (rd->size - pos - RECORD_HEADER_SIZE < r->length) {
        *why = why_trunc_body;
        return REC_STOP;
    }
    rc = rd_fill(rd, pos, RECORD_HEADER_SIZE + (size_t)r->length);
    if (rc == -ENODATA) {
        *why = why_trunc_body;
        return REC_STOP;
    }
    if (rc < 0) return rc;
    const uint8_t *hdr = rd->buf + (pos - rd->boff);
    if (record_verify(hdr, r, hdr + RECORD_HEADER_SIZE) < 0) {
        *why = why_checksum;
        return REC_STOP;
    }
    *body = hdr + RECORD_HEADER_SIZE;
    return REC_OK;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got_out)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (k < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (k == 0) break;
        got += (size_t)k;
    }
    *got_out = got;
    return 0;
}

/* ---- scanning ---- */

int log_scan_segment(int fd, struct log_scan *out)
{
    struct seg_reader rd = {.fd = -1, .chunk = READ_CHUNK};
    uint8_t sh[SEGMENT_HEADER_SIZE];
    struct stat st;
    size_t got;
    int rc;

    memset(out, 0, sizeof *out);
    if (fstat(fd, &st) < 0) return -errno;
    rc = pread_full(fd, sh, sizeof sh, 0, &got);
    if (rc < 0) return rc;
    if (got < sizeof sh || segment_header_decode(sh, &out->hdr) < 0) return -EBADMSG;

    out->file_size = (uint64_t)st.st_size;
    out->valid_end = SEGMENT_HEADER_SIZE;
    out->next_seq = out->hdr.base_seq;
    rd_init(&rd, fd, out->file_size);
    for (;;) {
        struct record r;
        const uint8_t *body;
        const char *why = NULL;
        rc = rd_record(&rd, out->valid_end, &r, &body, &why);
        if (rc == REC_END) break;
        if (rc == REC_STOP) {
            out->why = why;
            break;
        }
        if (rc < 0) goto fail;
        if (r.seq != out->next_seq) {
            out->why = why_seq_gap;
            break;
        }
        out->valid_end += RECORD_HEADER_SIZE + (uint64_t)r.length;
        out->records++;
        out->next_seq = r.seq + 1;
        out->last_ns = r.recv_ns;
    }
    rc = 0;
fail:
    free(rd.buf);
    return rc;
}

/* Looks for a record that decodes, fits in the file and verifies at an offset
 * after `from` (where a scan stopped). Finding one means the damage at `from` is
 * followed by good data — corruption in the middle rather than a torn tail.
 * Candidates must carry a seq in [next_seq, next_seq + remaining/40]: a cheap
 * filter against record-like bytes inside payloads, which are client-chosen.
 * Returns 1 with *found set, 0 when there is none, -ENOMEM or -errno. */
int log_scan_resync(int fd, uint64_t from, uint64_t next_seq, uint64_t *found)
{
    struct seg_reader rd = {.fd = -1, .chunk = READ_CHUNK};
    struct stat st;
    int rc;

    if (fstat(fd, &st) < 0) return -errno;
    uint64_t size = (uint64_t)st.st_size;
    uint64_t max_seq = next_seq + (size > from ? (size - from) / RECORD_HEADER_SIZE : 0);
    rd_init(&rd, fd, size);
    uint64_t pos = from + 1;
    rc = 0;
    while (pos < size && size - pos >= RECORD_HEADER_SIZE) {
        rc = rd_fill(&rd, pos, RECORD_HEADER_SIZE);
        if (rc == -ENODATA) {
            rc = 0;
            break;
        }
        if (rc < 0) break;
        const uint8_t *p = rd.buf + (pos - rd.boff);
        size_t span = rd.blen - (size_t)(pos - rd.boff) - (RECORD_HEADER_SIZE - 1);
        const uint8_t *m = memchr(p, (uint8_t)(RECORD_MAGIC & 0xff), span);
        if (!m) {
            pos += span;
            continue;
        }
        pos += (uint64_t)(m - p);
        struct record r;
        if (record_decode(m, &r) == 0 && r.seq >= next_seq && r.seq <= max_seq &&
            size - pos - RECORD_HEADER_SIZE >= r.length) {
            rc = rd_fill(&rd, pos, RECORD_HEADER_SIZE + (size_t)r.length);
            if (rc < 0 && rc != -ENODATA) break;
            const uint8_t *hdr = rd.buf + (pos - rd.boff);
            if (rc == 0 && record_verify(hdr, &r, hdr + RECORD_HEADER_SIZE) == 0) {
                *found = pos;
                rc = 1;
                break;
            }
            rc = 0;
        }
        pos++;
    }
    free(rd.buf);
    return rc;
}

/* ---- the merging cursor ---- */

/* One worker's records: its segments in base-seq order, read one at a time. */
struct log_stream {
    unsigned worker;
    char dir[LOG_PATH_MAX];
    uint64_t *bases;
    size_t nseg;
    size_t iseg; /* segment open in rd, or the next to open when rd.fd < 0 */
    struct seg_reader rd;
    uint64_t pos;      /* offset of the head record in the open segment */
    uint64_t head_len; /* its size on disk, skipped on the next advance */
    uint64_t next_seq;
    int have_seq; /* next_seq is known (a segment has been opened) */
    struct record head;
    const uint8_t *body;
};

struct log_cursor {
    uint32_t org;
    struct log_stream *s;
    size_t n;
    size_t *heap; /* streams with a head record, min-heap on (recv_ns, worker, seq) */
    size_t nheap;
    size_t *todo; /* streams to advance before the next pick */
    size_t ntodo;
    const char *err_why;
    uint64_t err_off;
    char err_path[LOG_PATH_MAX + 32];
};

static void seg_path(char *buf, size_t cap, const struct log_stream *s, size_t i)
{
    snprintf(buf, cap, "%s/%0*" PRIu64 ".seg", s->dir, SEG_NAME_DIGITS, s->bases[i]);
}

/* Parses a run of decimal digits spanning exactly len bytes. */
static int parse_digits(const char *p, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0) return -1;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Lists "<20 digits>.seg" in s->dir into s->bases, sorted. Other names (a
 * future index file, a temporary) are not segments and are skipped. */
static int stream_list(struct log_stream *s)
{
    size_t cap = 0;
    int rc = 0;
    DIR *d = opendir(s->dir);
    if (!d) return errno == ENOTDIR ? 1 : -errno;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = errno ? -errno : 0;
            break;
        }
        uint64_t base;
        if (strlen(e->d_name) != SEG_NAME_DIGITS + 4 ||
            strcmp(e->d_name + SEG_NAME_DIGITS, ".seg") != 0 ||
            parse_digits(e->d_name, SEG_NAME_DIGITS, UINT64_MAX, &base) < 0)
            continue;
        if (s->nseg == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            uint64_t *nb = realloc(s->bases, ncap * sizeof *nb);
            if (!nb) {
                rc = -ENOMEM;
                break;
            }
            s->bases = nb;
            cap = ncap;
        }
        s->bases[s->nseg++] = base;
    }
    closedir(d);
    if (rc == 0 && s->nseg > 1) qsort(s->bases, s->nseg, sizeof *s->bases, cmp_u64);
    return rc;
}

static void stream_close_seg(struct log_stream *s)
{
    if (s->rd.fd >= 0) close(s->rd.fd);
    s->rd.fd = -1;
}

/* Ends s for good: it is never advanced again. */
static void stream_end(struct log_stream *s)
{
    stream_close_seg(s);
    s->iseg = s->nseg;
}

/* Records where reading failed, ends the stream and returns rc. */
static int stream_fail(struct log_cursor *c, struct log_stream *s, size_t iseg, uint64_t off,
                       const char *why, int rc)
{
    seg_path(c->err_path, sizeof c->err_path, s, iseg);
    c->err_off = off;
    c->err_why = why;
    stream_end(s);
    return rc;
}

/* Opens segment s->iseg and checks its header against its name, its place and
 * the previous segment. Returns 1 (open, s->pos at the first record), 0 (the
 * segment is to be skipped: deleted by retention since it was listed, or a newest
 * segment whose header was never completely written), -EBADMSG or -errno. */
static int stream_open_seg(struct log_cursor *c, struct log_stream *s)
{
    char path[LOG_PATH_MAX + 32];
    uint8_t sh[SEGMENT_HEADER_SIZE];
    struct segment_header h;
    struct stat st;
    size_t got;
    int newest = s->iseg + 1 == s->nseg;

    seg_path(path, sizeof path, s, s->iseg);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            s->have_seq = 0; /* a gap here is retention's doing, not damage */
            return 0;
        }
        return stream_fail(c, s, s->iseg, 0, why_io, -errno);
    }
    int rc = fstat(fd, &st) < 0 ? -errno : pread_full(fd, sh, sizeof sh, 0, &got);
    if (rc < 0) {
        close(fd);
        return stream_fail(c, s, s->iseg, 0, why_io, rc);
    }
    if (got < sizeof sh && newest) {
        close(fd); /* created, header not yet written: an in-progress roll */
        return 0;
    }
    if (got < sizeof sh || segment_header_decode(sh, &h) < 0 || h.base_seq != s->bases[s->iseg] ||
        h.org != c->org || h.worker != s->worker) {
        close(fd);
        return stream_fail(c, s, s->iseg, 0, why_bad_seg, -EBADMSG);
    }
    if (s->have_seq && h.base_seq != s->next_seq) {
        close(fd);
        return stream_fail(c, s, s->iseg, 0, why_seq_gap, -EBADMSG);
    }
    s->next_seq = h.base_seq;
    s->have_seq = 1;
    rd_init(&s->rd, fd, (uint64_t)st.st_size);
    s->pos = SEGMENT_HEADER_SIZE;
    s->head_len = 0;
    return 1;
}

/* Moves s to its next record. Returns 1 (s->head and s->body set), 0 when the
 * stream has ended cleanly, -EBADMSG or -errno (the stream is then ended and the
 * place recorded for log_cursor_error). */
static int stream_advance(struct log_cursor *c, struct log_stream *s)
{
    s->pos += s->head_len;
    s->head_len = 0;
    for (;;) {
        if (s->rd.fd < 0) {
            if (s->iseg >= s->nseg) return 0;
            int rc = stream_open_seg(c, s);
            if (rc < 0) return rc;
            if (rc == 0) {
                s->iseg++;
                continue;
            }
        }
        const char *why = NULL;
        int rc = rd_record(&s->rd, s->pos, &s->head, &s->body, &why);
        if (rc == REC_OK) {
            if (s->head.seq != s->next_seq)
                return stream_fail(c, s, s->iseg, s->pos, why_seq_gap, -EBADMSG);
            s->next_seq++;
            s->head_len = RECORD_HEADER_SIZE + (uint64_t)s->head.length;
            return 1;
        }
        if (rc == REC_END) {
            stream_close_seg(s);
            s->iseg++;
            continue;
        }
        if (rc == REC_STOP) {
            /* Only the newest segment can be mid-append; an incomplete record
             * anywhere else, or a failing one anywhere, is damage. */
            int torn = why == why_trunc_hdr || why == why_trunc_body;
            if (torn && s->iseg + 1 == s->nseg) {
                stream_end(s);
                return 0;
            }
            return stream_fail(c, s, s->iseg, s->pos, why, -EBADMSG);
        }
        return stream_fail(c, s, s->iseg, s->pos, why_io, rc);
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

/* Adds the worker directory `name` (already known to be "w<digits>") under
 * org_dir as a stream, unless it holds no segment. */
static int cursor_add_worker(struct log_cursor *c, size_t *cap, const char *org_dir,
                             const char *name, unsigned worker)
{
    if (c->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct log_stream *ns = realloc(c->s, ncap * sizeof *ns);
        if (!ns) return -ENOMEM;
        c->s = ns;
        *cap = ncap;
    }
    struct log_stream *s = &c->s[c->n];
    memset(s, 0, sizeof *s);
    s->rd.fd = -1;
    s->worker = worker;
    int n = snprintf(s->dir, sizeof s->dir, "%s/%s", org_dir, name);
    if (n < 0 || (size_t)n >= sizeof s->dir) return -ENAMETOOLONG;
    int rc = stream_list(s);
    if (rc < 0 || rc == 1 || s->nseg == 0) {
        free(s->bases); /* rc == 1: "w<N>" that is not a directory */
        return rc < 0 ? rc : 0;
    }
    c->n++;
    return 0;
}

static int cmp_stream_worker(const void *a, const void *b)
{
    const struct log_stream *x = a, *y = b;
    return (x->worker > y->worker) - (x->worker < y->worker);
}

int log_cursor_open(const char *data_dir, uint32_t org, struct log_cursor **out)
{
    char org_dir[LOG_PATH_MAX];
    size_t cap = 0;
    DIR *d = NULL;
    int rc;

    *out = NULL;
    struct log_cursor *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->org = org;
    rc = log_dir_path(org_dir, sizeof org_dir, data_dir, org, -1);
    if (rc < 0) goto fail;
    d = opendir(org_dir);
    if (!d) {
        rc = -errno;
        goto fail;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = errno ? -errno : 0;
            break;
        }
        uint64_t w;
        if (e->d_name[0] != 'w' ||
            parse_digits(e->d_name + 1, strlen(e->d_name + 1), INT_MAX, &w) < 0)
            continue;
        rc = cursor_add_worker(c, &cap, org_dir, e->d_name, (unsigned)w);
        if (rc < 0) break;
    }
    if (rc < 0) goto fail;
    /* Worker order only matters for ties, which head_less settles; sorting just
     * makes the cursor's own behaviour independent of readdir order. */
    if (c->n > 1) qsort(c->s, c->n, sizeof *c->s, cmp_stream_worker);
    size_t chunk = c->n ? CURSOR_READ_BUDGET / c->n : READ_CHUNK;
    chunk = chunk > READ_CHUNK ? READ_CHUNK : chunk < CURSOR_MIN_CHUNK ? CURSOR_MIN_CHUNK : chunk;
    for (size_t i = 0; i < c->n; i++)
        c->s[i].rd.chunk = chunk;
    c->heap = malloc((c->n ? c->n : 1) * sizeof *c->heap);
    c->todo = malloc((c->n ? c->n : 1) * sizeof *c->todo);
    if (!c->heap || !c->todo) {
        rc = -ENOMEM;
        goto fail;
    }
    /* Streams are first read by log_cursor_next, so that a damaged worker is
     * reported there, in order, instead of failing the whole open. */
    for (size_t i = 0; i < c->n; i++)
        c->todo[c->ntodo++] = c->n - 1 - i;
    closedir(d);
    *out = c;
    return 0;
fail:
    if (d) closedir(d);
    log_cursor_close(c);
    return rc;
}

int log_cursor_next(struct log_cursor *c, struct record *r, const uint8_t **body)
{
    while (c->ntodo > 0) {
        size_t idx = c->todo[--c->ntodo];
        int rc = stream_advance(c, &c->s[idx]);
        if (rc < 0) return rc;
        if (rc == 1) heap_push(c, idx);
    }
    if (c->nheap == 0) return 0;
    size_t idx = heap_pop(c);
    /* The record stays in its stream's buffer until the caller's next call, so
     * the stream is advanced then, not now. */
    c->todo[c->ntodo++] = idx;
    *r = c->s[idx].head;
    *body = c->s[idx].body;
    return 1;
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
