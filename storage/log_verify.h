/* storage/log_verify.h — checking every segment and index of an org
 * (`sluice log verify`). */
#ifndef SLUICE_STORAGE_LOG_VERIFY_H
#define SLUICE_STORAGE_LOG_VERIFY_H

#include <stdint.h>

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

#endif
