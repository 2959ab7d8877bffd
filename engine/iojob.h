/* engine/iojob.h — storage work that blocks, done off the event loop.
 *
 * Opening an org's log (mkdir, create, several fsyncs), rolling a segment
 * (index write, new segment, directory fsync), writing zeros ahead
 * synchronously, cutting a failed batch off the file, and suspending or
 * resuming an idle log all block in the kernel for milliseconds. A worker
 * hands them to the engine's storage helper thread ("sluice-io") and goes on
 * serving; the job comes back on the worker's done list and its eventfd wakes
 * the loop. While a job runs the helper owns the job's log_writer: the worker
 * touches nothing of it (commit.c keeps that log's batches in memory).
 * The queue is a mutex and a condition variable: a few jobs per org per
 * segment, never on the per-reading path.
 */
#ifndef SLUICE_ENGINE_IOJOB_H
#define SLUICE_ENGINE_IOJOB_H

#include <stdbool.h>
#include <stdint.h>

#include "storage/log.h"

struct worker;
struct sluice_engine;

enum iojob_kind {
    IOJOB_OPEN,     /* log_writer_open (recovering the newest segment) */
    IOJOB_RESUME,   /* reopen a suspended writer, no scan */
    IOJOB_ROLL,     /* seal the segment, start the next */
    IOJOB_RESERVE,  /* zeros written ahead for `need` bytes */
    IOJOB_TRUNCATE, /* cut the file back to lw->end (a failed batch's bytes) */
    IOJOB_SUSPEND,  /* cut the write-ahead, sync, close the descriptors */
    IOJOB_CALL,     /* call(e, j) on the helper, then done(w, j) on the worker (no log) */
};

struct iojob {
    enum iojob_kind kind;
    struct worker *w; /* gets the job back */
    struct log_writer *lw;
    uint32_t org;
    bool sync_first;    /* ROLL under --fsync interval: fdatasync the old segment first */
    bool was_direct;    /* ROLL: the writer was O_DIRECT before (to say when it no longer is) */
    uint64_t need, cap; /* RESERVE */
    int rc;             /* 0 or -errno, set by the helper */
    char report[LOG_PATH_MAX + 256]; /* OPEN: what recovery cut, else a note; "" when none */
    /* IOJOB_CALL: blocking work of another module (engine/clients.c writes the
     * kept MQTT sessions this way) without the helper knowing that module */
    void (*call)(struct sluice_engine *e, struct iojob *j);
    void (*done)(struct worker *w, struct iojob *j);
    void *arg;
    struct iojob *next;
};

/* Switches a freshly opened log to direct writes when --direct-io is on, every
 * batch is synced (--fsync batch|always) and the filesystem allows it (says so
 * on stderr when it does not). Blocking: start-up recovery or the helper. */
void iojob_log_direct(struct sluice_engine *e, struct log_writer *lw);

/* Queues j for the helper thread. Never blocks on I/O. */
void iojob_submit(struct sluice_engine *e, struct iojob *j);

/* The jobs the helper finished for w, oldest first (the list is taken). */
struct iojob *iojob_take_done(struct worker *w);

/* Starts and stops the helper thread (engine start / after the workers exit:
 * jobs still queued are run first). iojob_start returns 0 or -errno. */
int iojob_start(struct sluice_engine *e);
void iojob_stop(struct sluice_engine *e);

#endif
