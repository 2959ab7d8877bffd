/* storage/log.h — per-organisation, per-worker append-only logs.
 *
 * Layout: DATA/logs/<org-id>/w<N>/<base-seq, 20 digits>.seg, each file a segment
 * (record.h). Each worker appends only to its own files; readers merge workers by
 * receive time. The writer side here only opens, recovers and names files: the
 * engine owns the batching and the io_uring write + fdatasync (engine/commit.c).
 */
#ifndef SLUICE_STORAGE_LOG_H
#define SLUICE_STORAGE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "storage/record.h"

#define LOG_PATH_MAX 4096

/* Writes "DATA/logs/<org>" (worker < 0) or "DATA/logs/<org>/w<worker>" to buf.
 * Returns 0 or -ENAMETOOLONG. */
int log_dir_path(char *buf, size_t cap, const char *data_dir, uint32_t org, int worker);

/* ---- writer ---- */
struct log_writer {
    int fd;
    uint32_t org;
    unsigned worker;
    uint64_t end;      /* file offset where the next batch is written */
    uint64_t next_seq; /* seq of the next record */
    char path[LOG_PATH_MAX];
};

/* Opens (creating directories and the first segment as needed, fsyncing the
 * directory after a create) the newest segment of (org, worker) for appending.
 * An existing segment's records are verified; a torn tail is truncated and
 * described in report (empty string when nothing was cut).
 * Returns 0 or -errno / -EBADMSG. */
int log_writer_open(struct log_writer *w, const char *data_dir, uint32_t org, unsigned worker,
                    char *report, size_t report_cap);
void log_writer_close(struct log_writer *w);

/* ---- scanning and reading (storage/logread.c) ---- */
struct log_scan {
    struct segment_header hdr;
    uint64_t file_size;
    uint64_t valid_end; /* offset just past the last record that verified */
    uint64_t records;   /* records that verified */
    uint64_t next_seq;  /* seq after the last good record (hdr.base_seq if none) */
    uint64_t last_ns;
    const char *why;    /* NULL when valid_end == file_size; else the reason the scan stopped */
};

/* Scans the segment open at fd from the start. Returns 0 (even when the tail is
 * bad: see valid_end / why), -EBADMSG when the segment header itself is bad, or
 * -errno on a read error. */
int log_scan_segment(int fd, struct log_scan *out);

/* After a scan stopped at `from`, looks for a verifying record further on whose
 * seq is at least next_seq. Returns 1 with its offset in *found (the damage is in
 * the middle of the file: do not truncate), 0 when nothing good follows (a torn
 * tail), or -errno. A heuristic: a crafted payload could imitate a record. */
int log_scan_resync(int fd, uint64_t from, uint64_t next_seq, uint64_t *found);

struct log_cursor;

/* Opens a cursor over every segment of every worker of org, yielding records in
 * receive-time order (ties: worker, then seq). Returns 0, -ENOENT when the org
 * has no log directory (callers treat it as empty), -errno. */
int log_cursor_open(const char *data_dir, uint32_t org, struct log_cursor **out);

/* Next record. Returns 1 with *r filled and *body pointing at r->length bytes
 * (topic then payload), valid until the next call; 0 at the end; -EBADMSG when a
 * record fails verification anywhere but a torn tail of a worker's newest
 * segment (that worker's stream then ends; the others go on), -errno. */
int log_cursor_next(struct log_cursor *c, struct record *r, const uint8_t **body);

/* After log_cursor_next failed: the reason, and the file and offset at fault. */
const char *log_cursor_error(const struct log_cursor *c, const char **path, uint64_t *offset);
void log_cursor_close(struct log_cursor *c);

#endif
