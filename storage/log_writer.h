/* storage/log_writer.h — the writer side of a worker's log: opening and
 * recovering the newest segment, space written ahead, direct I/O, rolling.
 *
 * The writer here only opens, recovers and names files: the engine owns the
 * batching and the io_uring write + fdatasync (engine/commit.c), writing sealed
 * batches at w->end and advancing end/next_seq when they are durable.
 */
#ifndef SLUICE_STORAGE_LOG_WRITER_H
#define SLUICE_STORAGE_LOG_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/log_index.h"
#include "storage/log_name.h"
#include "storage/record.h"

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
    uint64_t seed;       /* the segment's seed: record_encode keys checksums with it */
    bool index_complete; /* idx covers the segment from its first record */
    struct log_index idx;
    char path[LOG_PATH_MAX];
};

/* Opens (creating directories and the first segment as needed, fsyncing the
 * directory after a create) the newest segment of (org, worker) for appending.
 * An existing segment's records are verified; a torn tail is truncated and
 * described in report (empty string when nothing was cut), damage in the
 * middle is left alone and reported, by the recovery rule of the segment's
 * version (log_scan_after_damage). New segments are always format v3, each
 * with a fresh seed (w->seed); when the newest segment is v1 or v2 it is
 * sealed (index written) and a v3 one started, also reported.
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

/* Cuts the segment back to w->end (a failed batch, and those written after
 * it, lie past it), durably, and drops the space written ahead with them; a direct
 * writer reads the block holding end again, since the batches staged after
 * the failed one had moved its copy on. Returns 0 or -errno. */
int log_writer_cut(struct log_writer *w);

/* Seals the current segment (writes its index) and starts a new one whose base
 * is w->next_seq, fsyncing the directory. Call only with no write in flight.
 * Returns 0 or -errno; on failure the old segment stays current. */
int log_writer_roll(struct log_writer *w);

#endif
