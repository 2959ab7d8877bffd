/* storage/log_scan.c — a segment's records in file order; see log_scan.h. */
#include "storage/log_scan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char log_scan_why_trunc_hdr[] = "truncated record header";
const char log_scan_why_trunc_body[] = "truncated record body";
const char log_scan_why_bad_hdr[] = "bad record header";
const char log_scan_why_checksum[] = "checksum mismatch";
const char log_scan_why_seq_gap[] = "sequence gap";
const char log_scan_why_bad_seg[] = "bad segment header";
const char log_scan_why_io[] = "read error";

/* ---- buffered pread over one file ---- */

void log_scan_reader_init(struct log_scan_reader *rd, int fd, uint64_t size,
                          const struct segment_header *hdr)
{
    rd->hdr = *hdr;
    rd->fd = fd;
    rd->size = size;
    rd->boff = 0;
    rd->blen = 0;
}

/* Makes file bytes [pos, pos + n) available at rd->buf + (pos - rd->boff),
 * reading ahead a whole buffer so the following records come for free.
 * Returns 0, -ENODATA when the file ends first (it shrank under us), -ENOMEM,
 * -errno from pread. */
int log_scan_fill(struct log_scan_reader *rd, uint64_t pos, size_t n)
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

/* Reads and verifies the record at pos. Returns LOG_SCAN_OK (*r decoded, *body points
 * at r->length bytes inside the reader's buffer, valid until its next fill),
 * LOG_SCAN_END when pos is the end of the data, LOG_SCAN_STOP with *why set when the
 * record is incomplete, undecodable or fails its checksum, or -errno. */
int log_scan_record(struct log_scan_reader *rd, uint64_t pos, struct record *r,
                    const uint8_t **body, const char **why)
{
    const size_t hs = record_header_size(rd->hdr.version);
    if (pos >= rd->size) return LOG_SCAN_END;
    if (rd->size - pos < hs) {
        *why = log_scan_why_trunc_hdr;
        return LOG_SCAN_STOP;
    }
    int rc = log_scan_fill(rd, pos, hs);
    if (rc == -ENODATA) {
        *why = log_scan_why_trunc_hdr;
        return LOG_SCAN_STOP;
    }
    if (rc < 0) return rc;
    if (record_decode(rd->buf + (pos - rd->boff), rd->hdr.version, r) < 0) {
        *why = log_scan_why_bad_hdr;
        return LOG_SCAN_STOP;
    }
    /* record_decode caps length at RECORD_MAX_BODY, so the fill below is bounded
     * whatever the file says. */
    if (rd->size - pos - hs < r->length) {
        *why = log_scan_why_trunc_body;
        return LOG_SCAN_STOP;
    }
    rc = log_scan_fill(rd, pos, hs + (size_t)r->length);
    if (rc == -ENODATA) {
        *why = log_scan_why_trunc_body;
        return LOG_SCAN_STOP;
    }
    if (rc < 0) return rc;
    const uint8_t *hdr = rd->buf + (pos - rd->boff);
    if (record_verify(hdr, r, rd->hdr.seed, hdr + hs) < 0) {
        *why = log_scan_why_checksum;
        return LOG_SCAN_STOP;
    }
    *body = hdr + hs;
    return LOG_SCAN_OK;
}

int log_scan_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got_out)
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

int log_scan_records(int fd, const struct segment_header *hdr, uint64_t from, uint64_t seq,
                     struct log_scan *out, log_scan_fn fn, void *ctx)
{
    struct log_scan_reader rd = {.fd = -1, .chunk = LOG_SCAN_CHUNK};
    struct stat st;
    int rc;

    memset(out, 0, sizeof *out);
    if (fstat(fd, &st) < 0) return -errno;
    out->file_size = (uint64_t)st.st_size;
    out->valid_end = from;
    out->next_seq = seq;
    log_scan_reader_init(&rd, fd, out->file_size, hdr);
    for (;;) {
        struct record r;
        const uint8_t *body;
        const char *why = NULL;
        rc = log_scan_record(&rd, out->valid_end, &r, &body, &why);
        if (rc == LOG_SCAN_END) break;
        if (rc == LOG_SCAN_STOP) {
            out->why = why;
            break;
        }
        if (rc < 0) goto fail;
        if (r.seq != out->next_seq) {
            out->why = log_scan_why_seq_gap;
            break;
        }
        if (fn) fn(ctx, out->valid_end, &r);
        out->valid_end += record_header_size(hdr->version) + (uint64_t)r.length;
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
int log_scan_header(int fd, struct segment_header *h)
{
    uint8_t sh[SEGMENT_HEADER_SIZE];
    size_t got = 0;
    int rc = log_scan_pread_full(fd, sh, sizeof sh, 0, &got);
    if (rc < 0) return rc;
    /* a v1 segment may be just its 32-byte header: decode says what is short */
    if (segment_header_decode(sh, got, h) < 0) return -EBADMSG;
    return 0;
}

int log_scan_segment(int fd, struct log_scan *out)
{
    struct segment_header h;

    memset(out, 0, sizeof *out);
    int rc = log_scan_header(fd, &h);
    if (rc < 0) return rc;
    rc = log_scan_records(fd, &h, segment_header_size(&h), h.base_seq, out, NULL, NULL);
    out->hdr = h;
    return rc;
}

/* The first record at or after *pos that decodes, starts a batch, has a seq
 * in [next_seq, max_seq], fits in the file and verifies; *pos is left at it.
 * *budget (when not NULL) is the number of bytes still allowed to be hashed
 * for candidates, which payloads full of record-like bytes can otherwise make
 * quadratic. Returns 1 with *r decoded, 0 when there is none, -E2BIG when the
 * budget ran out first, -ENOMEM or -errno. */
static int next_batch_start(struct log_scan_reader *rd, uint64_t *pos, uint64_t next_seq,
                            uint64_t max_seq, struct record *r, uint64_t *budget)
{
    const size_t hs = record_header_size(rd->hdr.version);
    const uint64_t size = rd->size;
    while (*pos < size && size - *pos >= hs) {
        int rc = log_scan_fill(rd, *pos, hs);
        if (rc == -ENODATA) return 0;
        if (rc < 0) return rc;
        const uint8_t *p = rd->buf + (*pos - rd->boff);
        size_t span = rd->blen - (size_t)(*pos - rd->boff) - (hs - 1);
        const uint8_t *m = memchr(p, (uint8_t)(RECORD_MAGIC & 0xff), span);
        if (!m) {
            *pos += span;
            continue;
        }
        *pos += (uint64_t)(m - p);
        if (record_decode(m, rd->hdr.version, r) == 0 && (r->flags & RECORD_F_BATCH_START) &&
            r->seq >= next_seq && r->seq <= max_seq && size - *pos - hs >= r->length) {
            uint64_t cost = hs + (uint64_t)r->length;
            if (budget && *budget < cost) return -E2BIG;
            if (budget) *budget -= cost;
            rc = log_scan_fill(rd, *pos, hs + (size_t)r->length);
            if (rc < 0 && rc != -ENODATA) return rc;
            const uint8_t *hdr = rd->buf + (*pos - rd->boff);
            if (rc == 0 && record_verify(hdr, r, rd->hdr.seed, hdr + hs) == 0) return 1;
        }
        (*pos)++;
    }
    return 0;
}

/* The largest seq a record after `from` could carry: one per smallest header. */
static uint64_t seq_bound(uint64_t size, uint64_t from, uint64_t next_seq, size_t hs)
{
    return next_seq + (size > from ? (size - from) / hs : 0);
}

/* Looks for a record that decodes, fits in the file and verifies at an offset
 * after `from` (where a scan stopped). Finding one means the damage at `from` is
 * followed by good data. Candidates must carry a seq in [next_seq, next_seq +
 * remaining/header size]. In a v1 segment that and the unkeyed checksum are all
 * that stands between record-like bytes inside payloads (client-chosen) and a
 * forged record; in a v2/v3 segment the checksum is keyed with the segment's
 * seed, which no client knows, so payload bytes do not verify.
 * Returns 1 with *found set, 0 when there is none, -ENOMEM or -errno. */
int log_scan_resync(int fd, const struct segment_header *h, uint64_t from, uint64_t next_seq,
                    uint64_t *found)
{
    struct log_scan_reader rd = {.fd = -1, .chunk = LOG_SCAN_CHUNK};
    struct stat st;
    struct record r;

    if (fstat(fd, &st) < 0) return -errno;
    uint64_t size = (uint64_t)st.st_size, pos = from + 1;
    log_scan_reader_init(&rd, fd, size, h);
    int rc =
        next_batch_start(&rd, &pos, next_seq,
                         seq_bound(size, from, next_seq, record_header_size(h->version)), &r, NULL);
    if (rc == 1) *found = pos;
    free(rd.buf);
    return rc;
}

/* v1/v2: the first later batch start decides (one batch in flight). v3: every
 * later verified batch start is looked at until one carries a durable_seq past
 * next_seq, since with K batches in flight the first K - 1 after a lost one
 * may be verified and yet never acknowledged. Records are skipped whole once
 * verified (bytes under a real record's checksum hold no other real record),
 * so honest data is hashed about once; the budget stops a tail stuffed with
 * record-like payloads from costing more than a few passes over the file. */
int log_scan_after_damage(int fd, const struct segment_header *h, uint64_t from, uint64_t next_seq,
                          struct log_scan_after *out)
{
    struct log_scan_reader rd = {.fd = -1, .chunk = LOG_SCAN_CHUNK};
    const size_t hs = record_header_size(h->version);
    struct stat st;
    struct record r;
    int rc;

    memset(out, 0, sizeof *out);
    if (fstat(fd, &st) < 0) return -errno;
    uint64_t size = (uint64_t)st.st_size, pos = from + 1;
    uint64_t max_seq = seq_bound(size, from, next_seq, hs);
    uint64_t budget = 4 * size + 2 * ((uint64_t)RECORD_HEADER_SIZE + RECORD_MAX_BODY);
    log_scan_reader_init(&rd, fd, size, h);
    for (;;) {
        rc = next_batch_start(&rd, &pos, next_seq, max_seq, &r, &budget);
        if (rc <= 0) break;
        if (out->batches++ == 0) out->first = pos;
        if (h->version < 3 || r.durable_seq > next_seq) {
            out->proof = pos;
            out->durable_seq = r.durable_seq;
            rc = LOG_SCAN_MIDDLE;
            break;
        }
        pos += hs + (uint64_t)r.length;
    }
    if (rc == -E2BIG) out->undecided = true;
    free(rd.buf);
    return rc;
}
