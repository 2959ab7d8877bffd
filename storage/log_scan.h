/* storage/log_scan.h — reading a segment's records in file order: the scan
 * recovery and the checkers use, the buffered reader the cursor is built on,
 * and the resynchronisation after damage.
 *
 * Everything here reads with pread into one growable buffer per file being read
 * (1 MiB, grown to the largest record met, at most RECORD_HEADER_SIZE +
 * RECORD_MAX_BODY). mmap was rejected: the writer truncates a torn tail on
 * recovery, and a reader touching a truncated page of a mapping dies of SIGBUS.
 * A file being appended to is read up to the size it had when it was opened;
 * Linux publishes i_size only after the bytes below it are in the page cache, so
 * that prefix is complete (an in-progress write shows up as a truncated record).
 */
#ifndef SLUICE_STORAGE_LOG_SCAN_H
#define SLUICE_STORAGE_LOG_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/record.h"

#define LOG_SCAN_CHUNK (1u << 20) /* a reader's default read-ahead */

struct log_scan {
    struct segment_header hdr;
    uint64_t file_size;
    uint64_t valid_end; /* offset just past the last record that verified */
    uint64_t records;   /* records that verified */
    uint64_t next_seq;  /* seq after the last good record (hdr.base_seq if none) */
    uint64_t last_ns;
    const char *why; /* NULL when valid_end == file_size; else the reason the scan stopped */
};

/* Reasons a scan stops; log_scan.why points at one of these (compare pointers). */
extern const char log_scan_why_trunc_hdr[];  /* "truncated record header" */
extern const char log_scan_why_trunc_body[]; /* "truncated record body" */
extern const char log_scan_why_bad_hdr[];    /* "bad record header" */
extern const char log_scan_why_checksum[];   /* "checksum mismatch" */
extern const char log_scan_why_seq_gap[];    /* "sequence gap" */
extern const char log_scan_why_bad_seg[];    /* "bad segment header" */
extern const char log_scan_why_io[];         /* "read error" */

/* Scans the segment open at fd from the start. Returns 0 (even when the tail is
 * bad: see valid_end / why), -EBADMSG when the segment header itself is bad, or
 * -errno on a read error. */
int log_scan_segment(int fd, struct log_scan *out);

/* Called for each record that verifies, in file order, with its offset. */
typedef void (*log_scan_fn)(void *ctx, uint64_t offset, const struct record *r);

/* Scans the records of the segment open at fd, whose header is hdr (its
 * version and seed say how records are read), from offset `from`, the first
 * expected to carry seq `seq`, calling fn (may be NULL) for each one that
 * verifies. Fills out like log_scan_segment except hdr (zeroed) and valid_end,
 * which starts at `from`. Lets a checker go on after damage (log_scan_resync).
 * Returns 0 or -errno. */
int log_scan_records(int fd, const struct segment_header *hdr, uint64_t from, uint64_t seq,
                     struct log_scan *out, log_scan_fn fn, void *ctx);

/* After a scan of the segment with header hdr stopped at `from`, looks for a verifying record
 * further on that starts a commit batch (RECORD_F_BATCH_START) and whose seq is at least next_seq:
 * where readable data resumes after damage. Returns 1 with its offset in *found, 0 when no later
 * batch follows, -errno on a read error. In v1/v2 (one batch in flight) finding one also proves
 * the damaged batch synced, damage in the middle; 0 is a torn tail, even if records of the torn
 * batch itself survive past the hole (power loss may keep any subset of an unsynced batch's
 * sectors). In v3 several batches may be in flight, so a later batch alone proves nothing:
 * log_scan_after_damage decides. In a v2/v3 segment a candidate must verify with the segment's
 * secret seed, which bytes that arrived as a payload cannot (docs/storage-format.md). In a
 * version 1 segment it is a heuristic: a crafted payload could imitate a record. */
int log_scan_resync(int fd, const struct segment_header *hdr, uint64_t from, uint64_t next_seq,
                    uint64_t *found);

/* What follows damage at a stop point (log_scan_after_damage). */
struct log_scan_after {
    uint64_t batches;     /* verified batch starts seen after the stop point (up to proof) */
    uint64_t first;       /* offset of the first of them (batches > 0) */
    uint64_t proof;       /* LOG_SCAN_MIDDLE: offset of the batch start that proves it */
    uint64_t durable_seq; /* v3: that batch start's durable_seq */
    bool undecided;       /* -E2BIG: too many record-like bytes to look at them all */
};

enum { LOG_SCAN_TORN = 0, LOG_SCAN_MIDDLE = 1 };

/* After a scan of the newest segment with header hdr stopped at `from` (its next
 * record expected to carry next_seq) with something other than zeros after it,
 * tells damage in the middle of acknowledged data from a torn tail, by the
 * recovery rule of the segment's version (docs/storage-format.md):
 *  v1, v2: LOG_SCAN_MIDDLE when a later batch start verifies (log_scan_resync);
 *  v3: LOG_SCAN_MIDDLE when a later verified batch start has durable_seq >
 *      next_seq, i.e. its writer knew the damaged record durable; verified
 *      batches after the stop that do not say so were in flight with the lost
 *      one and never acknowledged.
 * Returns LOG_SCAN_MIDDLE or LOG_SCAN_TORN with *out filled, -E2BIG (with
 * out->undecided) when the bytes after the stop hold more record-like
 * candidates than a bounded amount of hashing allows (the caller should keep
 * the file: nothing proves it torn), -ENOMEM or -errno. Memory: one read
 * buffer, at most RECORD_HEADER_SIZE + RECORD_MAX_BODY. */
int log_scan_after_damage(int fd, const struct segment_header *hdr, uint64_t from,
                          uint64_t next_seq, struct log_scan_after *out);

/* Reads and decodes the segment header at offset 0 of fd. Returns 0, -EBADMSG
 * (short, undecodable, or a v2 header failing its checksum) or -errno. */
int log_scan_header(int fd, struct segment_header *h);

/* pread until n bytes or the end of the file; *got_out says how many came.
 * Returns 0 or -errno. */
int log_scan_pread_full(int fd, void *buf, size_t n, uint64_t off, size_t *got_out);

/* ---- the buffered reader under the scans and the cursor ---- */

struct log_scan_reader {
    int fd;
    uint64_t size; /* readable bytes: the file size when it was opened */
    uint8_t *buf;
    size_t cap;
    size_t chunk;              /* read-ahead size: the buffer's size unless a record needs more */
    uint64_t boff;             /* file offset of buf[0] */
    size_t blen;               /* valid bytes in buf */
    struct segment_header hdr; /* of the segment read: its version and seed */
};

/* Points rd at fd (size readable bytes) of the segment with header hdr,
 * keeping its buffer. */
void log_scan_reader_init(struct log_scan_reader *rd, int fd, uint64_t size,
                          const struct segment_header *hdr);

/* Makes file bytes [pos, pos + n) available at rd->buf + (pos - rd->boff),
 * reading ahead a whole buffer so the following records come for free.
 * Returns 0, -ENODATA when the file ends first (it shrank under us), -ENOMEM,
 * -errno from pread. */
int log_scan_fill(struct log_scan_reader *rd, uint64_t pos, size_t n);

enum { LOG_SCAN_END = 0, LOG_SCAN_OK = 1, LOG_SCAN_STOP = 2 };

/* Reads and verifies the record at pos. Returns LOG_SCAN_OK (*r decoded, *body
 * points at r->length bytes inside the reader's buffer, valid until its next
 * fill), LOG_SCAN_END when pos is the end of the data, LOG_SCAN_STOP with *why
 * set when the record is incomplete, undecodable or fails its checksum, or
 * -errno. */
int log_scan_record(struct log_scan_reader *rd, uint64_t pos, struct record *r,
                    const uint8_t **body, const char **why);

#endif
