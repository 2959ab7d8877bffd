/* storage/log_cursor.h — reading an org's log: every worker's segments merged
 * by receive time, optionally within a time range, optionally following the
 * writers as they append.
 */
#ifndef SLUICE_STORAGE_LOG_CURSOR_H
#define SLUICE_STORAGE_LOG_CURSOR_H

#include <stdint.h>

#include "storage/record.h"

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

#endif
