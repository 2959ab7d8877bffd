/* storage/log_list.h — an org's log files as maintenance sees them: per worker
 * directory, the segments and the index files by base seq (storage/ only).
 *
 * Retention and verification walk the directories themselves rather than
 * through a cursor: retention must not read records at all (it decides from
 * indexes and file times), and verification must go on past damage that ends
 * a cursor's segment.
 */
#ifndef SLUICE_STORAGE_LOG_LIST_H
#define SLUICE_STORAGE_LOG_LIST_H

#include <stddef.h>
#include <stdint.h>

#include "storage/log_name.h"

#define LOG_LIST_SEG ".seg"
#define LOG_LIST_IDX ".idx"

/* One base seq of a worker directory: its segment and/or its index. */
struct log_list_seg {
    uint64_t base;
    int has_seg, has_idx;
    uint64_t bytes;  /* retention: the segment's size */
    uint64_t age_ns; /* retention: its newest record's time, or its mtime */
};

struct log_list_worker {
    unsigned worker;
    char dir[LOG_PATH_MAX];
    struct log_list_seg *v;
    size_t n, cap;
    size_t nseg;  /* entries with a segment; they come first after list_worker */
    size_t front; /* retention: the first segment not deleted */
};

/* Lists every "w<N>" directory of org with its files, sorted by N; in each,
 * the entries with a segment first, by base, then index files without a
 * segment. Anything but "<20 digits>.seg" and "<20 digits>.idx" is left out.
 * Returns 0 (*out NULL when *n is 0; free with log_list_free), -ENOENT when
 * the org has no log directory, -errno. */
int log_list_org(const char *data_dir, uint32_t org, struct log_list_worker **out, size_t *n);

void log_list_free(struct log_list_worker *ws, size_t n);

/* Writes the path of w's file (base, ext) to buf; the buffers it is given
 * (LOG_PATH_MAX + 32) always fit the name. */
void log_list_path(char *buf, size_t cap, const struct log_list_worker *w, uint64_t base,
                   const char *ext);

#endif
