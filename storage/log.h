/* storage/log.h — per-organisation, per-worker append-only logs.
 *
 * Layout: DATA/logs/<org-id>/w<N>/<base-seq, 20 digits>.seg, each file a segment
 * (record.h). Each worker appends only to its own files; readers merge workers by
 * receive time. The writer side here only opens, recovers and names files: the
 * engine owns the batching and the io_uring write + fdatasync (engine/commit.c).
 */
#ifndef SLUICE_STORAGE_LOG_H
#define SLUICE_STORAGE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/record.h"

#define LOG_PATH_MAX 4096

/* Writes "DATA/logs/<org>" (worker < 0) or "DATA/logs/<org>/w<worker>" to buf.
 * Returns 0 or -ENAMETOOLONG. */
int log_dir_path(char *buf, size_t cap, const char *data_dir, uint32_t org, int worker);

/* ---- sparse time index ----
 * Each sealed segment <base>.seg gets <base>.idx, written once when the writer
 * rolls to a new segment (fdatasync'ed, then renamed into place). It is a hint:
 * readers verify its checksum and fall back to scanning when it is absent or bad.
 * Layout (little-endian): header {u32 magic "SLIX", u16 version 1, u16 entry size
 * 24, u64 base_seq, u64 min_ns, u64 max_ns} (32 bytes); entries; u64 XXH3-64 of
 * everything before it. An entry {offset, seq, max_ns_before} says record `seq`
 * starts at byte `offset` and every record before it was received at or before
 * max_ns_before, so a reader looking for recv_ns >= T may start at the last entry
 * whose max_ns_before < T even when the clock stepped back. Entries are at least
 * LOG_INDEX_INTERVAL bytes apart; the first is at offset SEGMENT_HEADER_SIZE. */
#define LOG_INDEX_MAGIC       0x58494c53u /* "SLIX" */
#define LOG_INDEX_VERSION     1u
#define LOG_INDEX_HEADER_SIZE 32u
#define LOG_INDEX_ENTRY_SIZE  24u
#define LOG_INDEX_INTERVAL    (1u << 20)

struct log_index_entry {
    uint64_t offset;
    uint64_t seq;
    uint64_t max_ns_before;
};

struct log_index {
    uint64_t base_seq;
    uint64_t min_ns, max_ns; /* min_ns > max_ns when the segment has no record */
    size_t n, cap;
    struct log_index_entry *e;
};

/* Writes idx next to the segment at seg_path (".seg" → ".idx") durably.
 * Returns 0 or -errno. (storage/log.c) */
int log_index_write(const char *seg_path, const struct log_index *idx);

/* Reads and verifies the index of the segment at seg_path. Returns 0 (free
 * idx->e with free()), -ENOENT when there is none, -EBADMSG when it fails
 * verification, -errno. (storage/logread.c) */
int log_index_read(const char *seg_path, struct log_index *idx);

/* Builds the index of a segment by scanning it (records up to the first that
 * fails verification) and writes it with log_index_write. Used when a writer
 * rolls a segment it did not see from its start (after a restart).
 * Returns 0 or -errno. (storage/logread.c) */
int log_index_build(const char *seg_path);

/* ---- writer ---- */
struct log_writer {
    int fd;
    int dfd;        /* the same segment opened O_DIRECT, or -1 (log_writer_direct) */
    uint8_t *tail;  /* with dfd: the LOG_DIO_ALIGN-byte block holding end, as on disk */
    uint8_t *stage; /* with dfd: aligned buffer of the write being staged */
    size_t stage_cap;
    uint32_t org;
    unsigned worker;
    uint64_t end;        /* file offset where the next batch is written */
    uint64_t alloc;      /* file size: [end, alloc) is zero-filled space written ahead */
    uint64_t next_seq;   /* seq of the next record */
    uint64_t created_ns; /* when the current segment was created */
    bool index_complete; /* idx covers the segment from its first record */
    struct log_index idx;
    char path[LOG_PATH_MAX];
};

/* Opens (creating directories and the first segment as needed, fsyncing the
 * directory after a create) the newest segment of (org, worker) for appending.
 * An existing segment's records are verified; a torn tail is truncated and
 * described in report (empty string when nothing was cut).
 * Returns 0 or -errno / -EBADMSG. */
int log_writer_open(struct log_writer *w, const char *data_dir, uint32_t org, unsigned worker,
                    char *report, size_t report_cap);
/* Closes the segment, first cutting the zero-filled space past w->end (and
 * syncing that), so a cleanly closed segment ends at its last record. */
void log_writer_close(struct log_writer *w);

/* Notes a record about to be written at `offset` (called while sealing a batch,
 * in order) for the segment's time index. Never fails: an index that cannot grow
 * just gets sparser. */
void log_writer_note(struct log_writer *w, uint64_t offset, uint64_t seq, uint64_t recv_ns);

/* Forgets index notes at or past w->end (their batch failed and was cut off). */
void log_writer_unnote(struct log_writer *w);

/* Makes sure the segment has zero-filled space for `need` more bytes at w->end,
 * extending it by at least LOG_PREALLOC_STEP (but not past `cap`, the segment
 * size limit, unless need requires it). Appends then overwrite blocks that are
 * already allocated and written, so the batch's fdatasync has no file size to
 * persist (on ext4 that is most of its cost); the size changes once per step.
 * Returns 0 or -errno (-ENOSPC: not even `need` bytes could be had). */
#define LOG_PREALLOC_STEP (1u << 20)
int log_writer_reserve(struct log_writer *w, uint64_t need, uint64_t cap);

/* ---- direct I/O appends ----
 * With O_DIRECT an append is issued to the device from the submitting thread
 * and completes by interrupt: no page cache, no writeback, no kernel worker
 * thread on the event loop's core. Direct writes must start and end on
 * LOG_DIO_ALIGN boundaries, so a batch is written as the block that holds the
 * current end (its head already on disk, kept in w->tail), the batch, and zeros
 * up to the next boundary: bytes that were zeros on disk already (space written
 * ahead), and the rewritten head is byte for byte what is there — the same
 * block the page cache's writeback would rewrite. */
#define LOG_DIO_ALIGN 4096u

/* Opens the current segment a second time with O_DIRECT and reads its tail
 * block; from then on log_writer_reserve writes zeros directly and
 * log_writer_roll carries the mode to the next segment. Returns 0, or -errno
 * when the filesystem refuses O_DIRECT (the writer stays buffered; not an
 * error for the caller to report). */
int log_writer_direct(struct log_writer *w);

/* Writing ahead in the background (direct writers only): when less than half
 * a step of space is left past end, returns true with the next step's
 * [*from, *from + *len) — from is the current alloc, block-aligned, so no
 * batch write overlaps it. The caller writes *len bytes of log_zeros() there
 * with O_DIRECT, fsyncs (as log_writer_reserve does), then sets alloc to
 * *from + *len; a failure leaves alloc as it was and log_writer_reserve
 * tries again when a batch needs the space. */
bool log_writer_ahead_wanted(const struct log_writer *w, uint64_t cap, uint64_t *from, size_t *len);
const void *log_zeros(void); /* LOG_PREALLOC_STEP zero bytes, LOG_DIO_ALIGN-aligned */

/* Back to writing through the page cache (closes the O_DIRECT descriptor). */
void log_writer_buffered(struct log_writer *w);

/* Lays out the `len` bytes at `batch` for one direct write at w->end: returns
 * the aligned buffer (w->stage) and sets *off and *wlen (multiples of
 * LOG_DIO_ALIGN). The space must have been reserved with
 * log_writer_dio_need(w, len). NULL when the buffer cannot grow (ENOMEM). */
const void *log_writer_dio_stage(struct log_writer *w, const void *batch, size_t len, uint64_t *off,
                                 size_t *wlen);

/* Bytes past w->end a direct write of `len` bytes covers (len plus the zero
 * padding to the next boundary): what to pass to log_writer_reserve. */
uint64_t log_writer_dio_need(const struct log_writer *w, size_t len);

/* The staged write of `len` bytes succeeded: keeps the block that now holds
 * the end. Call before advancing w->end. */
void log_writer_dio_done(struct log_writer *w, size_t len);

/* Seals the current segment (writes its index) and starts a new one whose base
 * is w->next_seq, fsyncing the directory. Call only with no write in flight.
 * Returns 0 or -errno; on failure the old segment stays current. */
int log_writer_roll(struct log_writer *w);

/* ---- scanning and reading (storage/logread.c) ---- */
struct log_scan {
    struct segment_header hdr;
    uint64_t file_size;
    uint64_t valid_end; /* offset just past the last record that verified */
    uint64_t records;   /* records that verified */
    uint64_t next_seq;  /* seq after the last good record (hdr.base_seq if none) */
    uint64_t last_ns;
    const char *why; /* NULL when valid_end == file_size; else the reason the scan stopped */
};

/* Scans the segment open at fd from the start. Returns 0 (even when the tail is
 * bad: see valid_end / why), -EBADMSG when the segment header itself is bad, or
 * -errno on a read error. */
int log_scan_segment(int fd, struct log_scan *out);

/* Called for each record that verifies, in file order, with its offset. */
typedef void (*log_scan_fn)(void *ctx, uint64_t offset, const struct record *r);

/* Scans the records of the segment open at fd from offset `from`, the first
 * expected to carry seq `seq`, calling fn (may be NULL) for each one that
 * verifies. Fills out like log_scan_segment except hdr (zeroed) and valid_end,
 * which starts at `from`. Lets a checker go on after damage (log_scan_resync).
 * Returns 0 or -errno. */
int log_scan_records(int fd, uint64_t from, uint64_t seq, struct log_scan *out, log_scan_fn fn,
                     void *ctx);

/* After a scan stopped at `from`, looks for a verifying record further on that
 * starts a commit batch (RECORD_F_BATCH_START) and whose seq is at least
 * next_seq. Returns 1 with its offset in *found: a later batch was written, so
 * the damaged one had been synced and the damage is in the middle of the file
 * (do not truncate). Returns 0 when no later batch follows: a torn tail, even if
 * records of the torn batch itself survive past the hole (power loss may keep
 * any subset of an unsynced batch's sectors). -errno on a read error.
 * A heuristic: a crafted payload could imitate a record. */
int log_scan_resync(int fd, uint64_t from, uint64_t next_seq, uint64_t *found);

struct log_cursor;

/* Opens a cursor over every segment of every worker of org, yielding records in
 * receive-time order (ties: worker, then seq). Returns 0, -ENOENT when the org
 * has no log directory (callers treat it as empty), -errno. */
int log_cursor_open(const char *data_dir, uint32_t org, struct log_cursor **out);

/* Like log_cursor_open, yielding only records with since_ns <= recv_ns <
 * until_ns (0: unbounded) — exactly those a full cursor would, in the same
 * order. Sealed segments whose valid index puts all their records outside the
 * range are not read at all (so not verified either: `log verify` is the
 * check), and reading starts at the last index entry whose max_ns_before <
 * since_ns. The newest segment's index, and any that is absent or fails its
 * checks, is not used. Returns as log_cursor_open. */
int log_cursor_open_range(const char *data_dir, uint32_t org, uint64_t since_ns, uint64_t until_ns,
                          struct log_cursor **out);

/* Next record. Returns 1 with *r filled and *body pointing at r->length bytes
 * (topic then payload), valid until the next call; 0 when nothing more is there
 * (see log_cursor_poll); -EBADMSG when a record fails verification anywhere but a
 * torn tail of a worker's newest segment, or a worker's seqs skip, -errno. After
 * a failure (log_cursor_error says where) the worker's stream goes on: after a
 * damaged record at the next commit batch start that verifies in the same
 * segment (log_scan_resync), else with its next segment (also after a damaged
 * segment header); with the record itself after a seq gap. Call again until it
 * returns 0. */
int log_cursor_next(struct log_cursor *c, struct record *r, const uint8_t **body);

/* For following a live log: after log_cursor_next returned 0, picks up what was
 * written since — records appended to the newest segments (a record cut short
 * at the end is waited for), new segments, new worker directories — so that the
 * next log_cursor_next calls yield them. Cheap (a few directory listings and
 * fstats per worker); meant to be called every few hundred ms. Records found by
 * one poll are merged by time among themselves, not with those already yielded.
 * Returns 0 or -errno. */
int log_cursor_poll(struct log_cursor *c);

/* After log_cursor_next failed: the reason, and the file and offset at fault. */
const char *log_cursor_error(const struct log_cursor *c, const char **path, uint64_t *offset);
void log_cursor_close(struct log_cursor *c);

/* ---- retention and verification (storage/logmaint.c) ---- */

/* Deletes sealed segments of org (never a worker's newest: it is being written),
 * each with its index: first those whose records are all older than now_ns -
 * max_age_ns (max_age_ns 0: no age limit), then, while the org's segments total
 * more than max_bytes (0: no limit), the oldest remaining across workers.
 * A segment's age is its index's max_ns, or the file's mtime without a valid
 * index. Each worker's segments go oldest-base first and only from the front,
 * so that a worker's log never gets a hole in its seqs. Index files left
 * without their segment by an interrupted deletion are removed too. report (may
 * be NULL) is called after each deletion with the segment's (or orphan index's)
 * path, size and the reason ("age", "size", "orphan index"). Returns the number
 * of segments deleted (0 when the org has no logs) or -errno (what was deleted
 * before the failure stays deleted, and was reported). */
int log_retention_apply(
    const char *data_dir, uint32_t org, uint64_t now_ns, uint64_t max_age_ns, uint64_t max_bytes,
    void (*report)(void *ctx, const char *path, uint64_t bytes, const char *why), void *ctx);

enum log_severity {
    LOG_VERIFY_WARNING = 1, /* worth knowing, nothing lost or wrong */
    LOG_VERIFY_ERROR = 2,   /* corruption: records lost or reads would be wrong */
};

/* Totals of log_verify_org, added to (so one struct can sum several orgs). */
struct log_verify_stats {
    uint64_t segments, records; /* segment files examined, records that verified */
    uint64_t errors, warnings;
};

/* Checks every segment and index of org. Errors: a bad or misplaced segment
 * header, a record that fails verification (each damaged stretch once, at the
 * offset where it starts; checking resumes at the next record that verifies),
 * an incomplete record anywhere but at the end of a worker's newest segment, a
 * seq gap within or between a worker's segments, a valid index that does not
 * match its segment (range reads would miss records). Warnings: a torn tail of
 * a worker's newest segment (a write in progress, or a crash the writer cuts on
 * start), a missing or unreadable index of a sealed segment, an index without a
 * segment. report (may be NULL) gets one call per problem: severity, the file,
 * the byte offset (0 when about the whole file) and a message. stats (may be
 * NULL) is added to. Returns the number of errors (>= 0), -ENOENT when the org
 * has no log directory, -errno (listing failed or out of memory). */
int log_verify_org(const char *data_dir, uint32_t org,
                   void (*report)(void *ctx, int severity, const char *path, uint64_t offset,
                                  const char *msg),
                   void *ctx, struct log_verify_stats *stats);

/* ---- internal helpers: storage/ only (storage/logread.c) ----
 * The naming rules of the layout above, kept in one place so that the writer,
 * the readers and maintenance agree on which files are segments. */
#define LOG_NAME_DIGITS 20 /* a segment's base seq in its file name */

/* Parses a segment or index file name: exactly LOG_NAME_DIGITS decimal digits
 * (no sign, the value fitting in u64) followed by ext (".seg", ".idx").
 * Returns 0 with *base set, or -EINVAL. */
int log_name_base(const char *name, const char *ext, uint64_t *base);

/* Writes "<dir>/<base, LOG_NAME_DIGITS digits><ext>" to buf.
 * Returns 0 or -ENAMETOOLONG. */
int log_file_path(char *buf, size_t cap, const char *dir, uint64_t base, const char *ext);

/* Parses a worker directory name: "w" then decimal digits up to INT_MAX.
 * Returns 0 with *worker set, or -EINVAL. */
int log_worker_name(const char *name, unsigned *worker);

/* Calls fn with each entry name of dir ("." and ".." included), stopping when
 * fn returns < 0. Returns 0, fn's negative code, or -errno (opendir's: -ENOENT,
 * -ENOTDIR ...; or readdir's). */
int log_dir_each(const char *dir, int (*fn)(void *ctx, const char *name), void *ctx);

/* 1 when every byte of [from, to) in fd is zero (an empty range included): the
 * space a writer wrote ahead (log_writer_reserve), which ends a newest segment's
 * data without being a torn tail. 0 when a byte is not, -errno. */
int log_all_zero(int fd, uint64_t from, uint64_t to);

/* fsync()s a directory, making the names created or removed in it durable.
 * Returns 0 or -errno. */
int log_fsync_dir(const char *dir);

#endif
