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
#include <xxhash.h>

#define READ_CHUNK (1u << 20)
/* A cursor holds one buffer per worker; on a many-core machine 1 MiB each adds
 * up, so their chunks share this budget (but stay between 64 KiB and 1 MiB). */
#define CURSOR_READ_BUDGET (16u << 20)
#define CURSOR_MIN_CHUNK   (64u << 10)

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

/* ---- names and listings (the internal helpers of log.h) ---- */

/* Parses a run of decimal digits spanning exactly len bytes, at most max. */
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

int log_name_base(const char *name, const char *ext, uint64_t *base)
{
    /* 20 digits can exceed 2^64: parse_digits refuses such a name, which is
     * not one of ours (strtoull would also take a sign or leading blanks). */
    if (strlen(name) != LOG_NAME_DIGITS + strlen(ext) || strcmp(name + LOG_NAME_DIGITS, ext) != 0 ||
        parse_digits(name, LOG_NAME_DIGITS, UINT64_MAX, base) < 0)
        return -EINVAL;
    return 0;
}

int log_file_path(char *buf, size_t cap, const char *dir, uint64_t base, const char *ext)
{
    int n = snprintf(buf, cap, "%s/%0*" PRIu64 "%s", dir, LOG_NAME_DIGITS, base, ext);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int log_worker_name(const char *name, unsigned *worker)
{
    uint64_t w;
    if (name[0] != 'w' || parse_digits(name + 1, strlen(name + 1), INT_MAX, &w) < 0) return -EINVAL;
    *worker = (unsigned)w;
    return 0;
}

int log_dir_each(const char *dir, int (*fn)(void *ctx, const char *name), void *ctx)
{
    int rc;
    DIR *d = opendir(dir);
    if (!d) return -errno;
    for (;;) {
        /* readdir tells the end from a failure only through errno */
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = errno ? -errno : 0;
            break;
        }
        rc = fn(ctx, e->d_name);
        if (rc < 0) break;
    }
    closedir(d);
    return rc;
}

/* ---- scanning ---- */

int log_scan_records(int fd, uint64_t from, uint64_t seq, struct log_scan *out, log_scan_fn fn,
                     void *ctx)
{
    struct seg_reader rd = {.fd = -1, .chunk = READ_CHUNK};
    struct stat st;
    int rc;

    memset(out, 0, sizeof *out);
    if (fstat(fd, &st) < 0) return -errno;
    out->file_size = (uint64_t)st.st_size;
    out->valid_end = from;
    out->next_seq = seq;
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
        if (fn) fn(ctx, out->valid_end, &r);
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

/* Reads and decodes the segment header at offset 0 of fd. Returns 0, -EBADMSG
 * (short or undecodable) or -errno. */
static int read_seg_header(int fd, struct segment_header *h)
{
    uint8_t sh[SEGMENT_HEADER_SIZE];
    size_t got = 0;
    int rc = pread_full(fd, sh, sizeof sh, 0, &got);
    if (rc < 0) return rc;
    if (got < sizeof sh || segment_header_decode(sh, h) < 0) return -EBADMSG;
    return 0;
}

int log_scan_segment(int fd, struct log_scan *out)
{
    struct segment_header h;

    memset(out, 0, sizeof *out);
    int rc = read_seg_header(fd, &h);
    if (rc < 0) return rc;
    rc = log_scan_records(fd, SEGMENT_HEADER_SIZE, h.base_seq, out, NULL, NULL);
    out->hdr = h;
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
        if (record_decode(m, &r) == 0 && (r.flags & RECORD_F_BATCH_START) && r.seq >= next_seq &&
            r.seq <= max_seq && size - pos - RECORD_HEADER_SIZE >= r.length) {
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

/* ---- the sparse time index ---- */

/* A segment of 2^64 bytes would need far less; anything larger is not an index
 * this code wrote, and is refused before it is read into memory. */
#define INDEX_MAX_FILE (64u << 20)

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* "<dir>/<base>.seg" → "<dir>/<base>.idx". Returns 0, -EINVAL (no ".seg"),
 * -ENAMETOOLONG. */
static int index_path(char *buf, size_t cap, const char *seg_path)
{
    size_t n = strlen(seg_path);
    if (n < 4 || strcmp(seg_path + n - 4, ".seg") != 0) return -EINVAL;
    if (n >= cap) return -ENAMETOOLONG;
    memcpy(buf, seg_path, n - 4);
    memcpy(buf + n - 4, ".idx", 5);
    return 0;
}

/* The base seq in a "<20 digits>.seg" file name at the end of path. */
static int seg_name_base(const char *path, uint64_t *base)
{
    const char *name = strrchr(path, '/');
    return log_name_base(name ? name + 1 : path, ".seg", base);
}

/* Checks what the checksum cannot: that the entries describe a segment this
 * one could be (a writer bug would otherwise send a reader into the middle of a
 * record). max_ns_before of entry 0 is not checked: nothing precedes it. */
static int index_sane(const struct log_index *x)
{
    if (x->n == 0) return 0;
    if (x->min_ns > x->max_ns) return -1; /* entries, yet no record */
    if (x->e[0].offset != SEGMENT_HEADER_SIZE || x->e[0].seq != x->base_seq) return -1;
    for (size_t i = 1; i < x->n; i++) {
        const struct log_index_entry *a = &x->e[i - 1], *b = &x->e[i];
        if (b->offset <= a->offset || b->seq <= a->seq ||
            b->seq - a->seq > (b->offset - a->offset) / RECORD_HEADER_SIZE ||
            b->max_ns_before > x->max_ns || (i >= 2 && b->max_ns_before < a->max_ns_before))
            return -1;
    }
    return 0;
}

int log_index_read(const char *seg_path, struct log_index *idx)
{
    char path[LOG_PATH_MAX];
    uint8_t *buf = NULL;
    struct stat st;
    size_t got = 0;
    uint64_t name_base;
    int fd = -1, rc;

    memset(idx, 0, sizeof *idx);
    rc = index_path(path, sizeof path, seg_path);
    if (rc < 0) return rc;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    rc = -EBADMSG;
    if (size < LOG_INDEX_HEADER_SIZE + 8 || size > INDEX_MAX_FILE ||
        (size - LOG_INDEX_HEADER_SIZE - 8) % LOG_INDEX_ENTRY_SIZE != 0)
        goto fail;
    buf = malloc((size_t)size);
    if (!buf) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = pread_full(fd, buf, (size_t)size, 0, &got);
    if (rc < 0) goto fail;
    rc = -EBADMSG;
    if (got != size || XXH3_64bits(buf, (size_t)size - 8) != get_le(buf + size - 8, 8) ||
        get_le(buf, 4) != LOG_INDEX_MAGIC || get_le(buf + 4, 2) != LOG_INDEX_VERSION ||
        get_le(buf + 6, 2) != LOG_INDEX_ENTRY_SIZE)
        goto fail;
    idx->base_seq = get_le(buf + 8, 8);
    idx->min_ns = get_le(buf + 16, 8);
    idx->max_ns = get_le(buf + 24, 8);
    if (seg_name_base(seg_path, &name_base) == 0 && name_base != idx->base_seq) goto fail;
    idx->n = (size_t)((size - LOG_INDEX_HEADER_SIZE - 8) / LOG_INDEX_ENTRY_SIZE);
    if (idx->n > 0) {
        idx->e = malloc(idx->n * sizeof *idx->e);
        if (!idx->e) {
            rc = -ENOMEM;
            goto fail;
        }
        idx->cap = idx->n;
    }
    for (size_t i = 0; i < idx->n; i++) {
        const uint8_t *p = buf + LOG_INDEX_HEADER_SIZE + i * LOG_INDEX_ENTRY_SIZE;
        idx->e[i].offset = get_le(p, 8);
        idx->e[i].seq = get_le(p + 8, 8);
        idx->e[i].max_ns_before = get_le(p + 16, 8);
    }
    if (index_sane(idx) < 0) goto fail;
    rc = 0;
fail:
    if (rc < 0) {
        free(idx->e);
        memset(idx, 0, sizeof *idx);
    }
    free(buf);
    close(fd);
    return rc;
}

struct index_builder {
    struct log_index idx;
    uint64_t max_before; /* largest recv_ns so far */
};

static void index_note(void *ctx, uint64_t offset, const struct record *r)
{
    struct index_builder *b = ctx;
    struct log_index *x = &b->idx;
    if (x->n == 0 || offset - x->e[x->n - 1].offset >= LOG_INDEX_INTERVAL) {
        if (x->n == x->cap) {
            size_t cap = x->cap ? x->cap * 2 : 16;
            struct log_index_entry *e = realloc(x->e, cap * sizeof *e);
            if (e) {
                x->e = e;
                x->cap = cap;
            }
        }
        /* Out of memory: the index just gets sparser (the next record that
         * finds room becomes the entry), which stays correct. Entry 0 must be
         * the first record, though, or none at all. */
        if (x->n < x->cap && (x->n > 0 || offset == SEGMENT_HEADER_SIZE))
            x->e[x->n++] = (struct log_index_entry){
                .offset = offset, .seq = r->seq, .max_ns_before = b->max_before};
    }
    if (r->recv_ns < x->min_ns) x->min_ns = r->recv_ns;
    if (r->recv_ns > x->max_ns) x->max_ns = r->recv_ns;
    if (r->recv_ns > b->max_before) b->max_before = r->recv_ns;
}

int log_index_build(const char *seg_path)
{
    struct index_builder b = {.idx = {.min_ns = UINT64_MAX, .max_ns = 0}};
    struct segment_header h;
    struct log_scan sc;
    uint64_t name_base;
    int rc;

    int fd = open(seg_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    rc = read_seg_header(fd, &h);
    if (rc < 0) goto fail;
    /* An index is found by its segment's name; one that disagrees with the
     * header would be refused by every reader. */
    if (seg_name_base(seg_path, &name_base) == 0 && name_base != h.base_seq) {
        rc = -EBADMSG;
        goto fail;
    }
    b.idx.base_seq = h.base_seq;
    rc = log_scan_records(fd, SEGMENT_HEADER_SIZE, h.base_seq, &sc, index_note, &b);
    if (rc < 0) goto fail;
    rc = log_index_write(seg_path, &b.idx);
fail:
    free(b.idx.e);
    close(fd);
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
        return stream_skip_seg(c, s, 0, why_io, -errno);
    }
    int rc = fstat(fd, &st) < 0 ? -errno : read_seg_header(fd, &h);
    if (rc == -EBADMSG && newest && st.st_size < (off_t)SEGMENT_HEADER_SIZE) {
        close(fd); /* created, header not yet written: an in-progress roll */
        return 2;
    }
    if (rc == 0 && (h.base_seq != s->bases[s->iseg] || h.org != c->org || h.worker != s->worker))
        rc = -EBADMSG;
    if (rc < 0) {
        close(fd);
        return stream_skip_seg(c, s, 0, rc == -EBADMSG ? why_bad_seg : why_io, rc);
    }
    if (s->have_seq && h.base_seq != s->next_seq) {
        close(fd);
        s->have_seq = 0; /* reported once; its records are read on the next call */
        return stream_error(c, s, 0, why_seq_gap, -EBADMSG);
    }
    s->next_seq = h.base_seq;
    s->have_seq = 1;
    rd_init(&s->rd, fd, (uint64_t)st.st_size);
    s->pos = SEGMENT_HEADER_SIZE;
    s->head_len = 0;
    if (seek.offset > SEGMENT_HEADER_SIZE) {
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
        int rc = rd_record(&s->rd, s->pos, &s->head, &s->body, &why);
        if (s->seek_check) {
            s->seek_check = 0;
            if (rc != REC_OK || s->head.seq != s->next_seq) {
                /* The index named a record that is not there: it lied, so read
                 * the segment from its start instead. */
                s->pos = SEGMENT_HEADER_SIZE;
                s->next_seq = s->bases[s->iseg];
                continue;
            }
        }
        if (rc == REC_OK && s->resynced) {
            s->resynced = 0; /* the damage was reported; seqs go on from here */
            s->next_seq = s->head.seq;
        }
        if (rc == REC_OK) {
            if (s->head.seq != s->next_seq) {
                /* Reported once; then the record, whose own bytes verified, is
                 * let through on the next call. */
                s->next_seq = s->head.seq;
                return stream_error(c, s, s->pos, why_seq_gap, -EBADMSG);
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
            s->head_len = RECORD_HEADER_SIZE + (uint64_t)s->head.length;
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
        if (rc == REC_END) {
            if (newest) {
                s->idle = 1; /* the fd stays open: log_cursor_poll reads on */
                return 0;
            }
            stream_close_seg(s);
            s->iseg++;
            continue;
        }
        if (rc == REC_STOP) {
            /* Only the newest segment can be mid-append; an incomplete record
             * anywhere else, or a failing one anywhere, is damage. */
            int torn = why == why_trunc_hdr || why == why_trunc_body;
            if (torn && newest) {
                s->idle = 1;
                return 0;
            }
            /* damage: report it once, then go on at the next batch that
             * verifies in this segment (the readings after it are intact), or
             * with the next segment when there is none */
            uint64_t found;
            int rs = log_scan_resync(s->rd.fd, s->pos, s->next_seq, &found);
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
        return stream_skip_seg(c, s, s->pos, why_io, rc);
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
    s->rd.chunk = READ_CHUNK;
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
    size_t chunk = c->n ? CURSOR_READ_BUDGET / c->n : READ_CHUNK;
    chunk = chunk > READ_CHUNK ? READ_CHUNK : chunk < CURSOR_MIN_CHUNK ? CURSOR_MIN_CHUNK : chunk;
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
