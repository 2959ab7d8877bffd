/* storage/log_retention.h — deleting an org's old segments by age and size. */
#ifndef SLUICE_STORAGE_LOG_RETENTION_H
#define SLUICE_STORAGE_LOG_RETENTION_H

#include <stdint.h>

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

#endif
