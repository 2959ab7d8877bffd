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
 * further on that starts a commit batch (RECORD_F_BATCH_START) and whose seq is at least next_seq.
 * Returns 1 with its offset in *found: a later batch was written, so the damaged one had been
 * synced and the damage is in the middle of the file (do not truncate). Returns 0 when no later
 * batch follows: a torn tail, even if records of the torn batch itself survive past the hole (power
 * loss may keep any subset of an unsynced batch's sectors). -errno on a read error. In a version 2
 * segment a candidate must verify with the segment's secret seed, which bytes that arrived as a
 * payload cannot (docs/storage-format.md). In a version 1 segment it is a heuristic: a crafted
 * payload could imitate a record. */
int log_scan_resync(int fd, const struct segment_header *hdr, uint64_t from, uint64_t next_seq,
                    uint64_t *found);

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
