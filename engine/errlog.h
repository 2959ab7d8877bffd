/* engine/errlog.h — rate-limited error lines (issue S3: log floods).
 *
 * An error that repeats (a failed commit per request on a full disk, accept
 * out of descriptors) prints its first line at once; the ones that follow
 * within ERRLOG_WINDOW_MS are counted, and when the window is over one line
 * says how many there were: "... 13,523 more in the last 10 s (last: ...)".
 * One struct per kind of error per worker: no locks, no allocation.
 */
#ifndef SLUICE_ENGINE_ERRLOG_H
#define SLUICE_ENGINE_ERRLOG_H

#include <stdint.h>

#define ERRLOG_WINDOW_MS 10000

struct errlog {
    uint64_t window_end_ms; /* 0: no window open (the next error prints) */
    uint64_t suppressed;    /* errors counted, not printed, in this window */
    char last[200];         /* the newest suppressed message, for the summary */
};

/* Reports one error: printed (with "sluiced: " before it) when no window is
 * open, which opens one; else counted. */
__attribute__((format(printf, 3, 4))) void errlog_say(struct errlog *e, uint64_t now_ms,
                                                      const char *fmt, ...);

/* Closes a window that is over, printing the count of what it held (nothing
 * when it held none). Call from a periodic tick. */
void errlog_tick(struct errlog *e, uint64_t now_ms, const char *what);

#endif
