/* storage/log_retention.c — retention by age and size; see log_retention.h. */
#include "storage/log_retention.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log_index.h"
#include "storage/log_list.h"

struct retention {
    void (*report)(void *ctx, const char *path, uint64_t bytes, const char *why);
    void *ctx;
    int deleted;
};

/* Deletes the segment w->v[i] and its index, durably. The index goes first: a
 * crash in between leaves a sealed segment without an index, which every
 * reader handles (and the next pass deletes by mtime); the other order could
 * leave an index whose segment is gone, harmless too but clutter. The
 * directory is synced before the next deletion so that a crash cannot keep a
 * later segment's deletion and lose an earlier one's: that would be a hole in
 * the worker's seqs, which readers report as corruption.
 * Returns 0 or -errno. */
static int delete_segment(struct retention *rt, struct log_list_worker *w, size_t i,
                          const char *why)
{
    char path[LOG_PATH_MAX + 32];
    struct log_list_seg *e = &w->v[i];

    log_list_path(path, sizeof path, w, e->base, LOG_LIST_IDX);
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
    log_list_path(path, sizeof path, w, e->base, LOG_LIST_SEG);
    int gone = unlink(path) == 0;
    if (!gone && errno != ENOENT) return -errno;
    int rc = log_fsync_dir(w->dir);
    if (rc < 0) return rc;
    /* ENOENT: someone else (another retention pass) deleted it first. */
    if (gone) {
        rt->deleted++;
        if (rt->report) rt->report(rt->ctx, path, e->bytes, why);
    }
    return 0;
}

/* Fills bytes and age_ns of w's segments. A segment that vanished meanwhile is
 * left with bytes 0 and age 0, so it is "deleted" first, finding ENOENT. */
static void retention_measure(struct log_list_worker *w)
{
    char path[LOG_PATH_MAX + 32];
    for (size_t i = 0; i < w->nseg; i++) {
        struct log_list_seg *e = &w->v[i];
        struct stat st;
        struct log_index x;
        log_list_path(path, sizeof path, w, e->base, LOG_LIST_SEG);
        if (stat(path, &st) < 0) continue;
        e->bytes = (uint64_t)st.st_size;
        e->age_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
        if (e->has_idx && log_index_read(path, &x) == 0) {
            /* An empty segment's records are vacuously all old. */
            e->age_ns = x.min_ns > x.max_ns ? 0 : x.max_ns;
            free(x.e);
        }
    }
}

int log_retention_apply(
    const char *data_dir, uint32_t org, uint64_t now_ns, uint64_t max_age_ns, uint64_t max_bytes,
    void (*report)(void *ctx, const char *path, uint64_t bytes, const char *why), void *ctx)
{
    struct retention rt = {.report = report, .ctx = ctx};
    struct log_list_worker *ws;
    size_t nw;
    char path[LOG_PATH_MAX + 32];

    int rc = log_list_org(data_dir, org, &ws, &nw);
    if (rc == -ENOENT) return 0;
    if (rc < 0) return rc;

    /* Orphan indexes first: they are not segments and count for nothing. An
     * index is written only for a segment that exists, so one without its
     * segment was left by an interrupted deletion. */
    for (size_t k = 0; k < nw; k++) {
        struct log_list_worker *w = &ws[k];
        for (size_t i = w->nseg; i < w->n; i++) {
            log_list_path(path, sizeof path, w, w->v[i].base, LOG_LIST_IDX);
            struct stat st;
            uint64_t bytes = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
            if (unlink(path) < 0) {
                if (errno == ENOENT) continue;
                rc = -errno;
                goto done;
            }
            rc = log_fsync_dir(w->dir);
            if (rc < 0) goto done;
            if (report) report(ctx, path, bytes, "orphan index");
        }
        retention_measure(w);
    }

    /* By age: from the front of each worker's log while the front is old
     * enough. A younger segment stops the walk even if later ones are older
     * (a clock step): deleting past it would leave a hole. The newest segment
     * (index nseg - 1) is never a candidate. */
    if (max_age_ns > 0 && now_ns > max_age_ns) {
        uint64_t cutoff = now_ns - max_age_ns;
        for (size_t k = 0; k < nw; k++) {
            struct log_list_worker *w = &ws[k];
            while (w->front + 1 < w->nseg && w->v[w->front].age_ns < cutoff) {
                rc = delete_segment(&rt, w, w->front, "age");
                if (rc < 0) goto done;
                w->front++;
            }
        }
    }

    /* By size: the oldest front segment across workers, until under the limit
     * or only newest segments remain. */
    if (max_bytes > 0) {
        uint64_t total = 0;
        for (size_t k = 0; k < nw; k++)
            for (size_t i = ws[k].front; i < ws[k].nseg; i++)
                total += ws[k].v[i].bytes;
        while (total > max_bytes) {
            struct log_list_worker *pick = NULL;
            for (size_t k = 0; k < nw; k++) {
                struct log_list_worker *w = &ws[k];
                if (w->front + 1 >= w->nseg) continue;
                if (!pick || w->v[w->front].age_ns < pick->v[pick->front].age_ns) pick = w;
            }
            if (!pick) break;
            rc = delete_segment(&rt, pick, pick->front, "size");
            if (rc < 0) goto done;
            total -= pick->v[pick->front].bytes;
            pick->front++;
        }
    }
    rc = rt.deleted;
done:
    log_list_free(ws, nw);
    return rc;
}
