/* engine/commit.h — group commit of readings into the org's log.
 *
 * commit.c knows logs, batches and waiters — never a protocol or a status
 * code. A waiter is (connection slot, generation, cookie); when its batch's
 * fdatasync completes (or the batch fails), conn_durable() hands the cookie
 * and the error to the connection's session.
 */
#ifndef SLUICE_ENGINE_COMMIT_H
#define SLUICE_ENGINE_COMMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/worker.h"
#include "storage/log.h"

struct commit_log;
struct iojob;

struct commit_mark {
    size_t len;
    uint32_t nrec;
};

/* The worker's log of org, created on first use. A new or suspended log is
 * opened in the background (engine/iojob.h): readings may be appended at once
 * and are written when it is open. Returns 0 or -ENOMEM. */
int commit_log_get(struct worker *w, uint32_t org, struct commit_log **out);

/* Where the filling batch ends now, and back to there (nothing written yet). */
void commit_mark(struct commit_log *l, struct commit_mark *m);
void commit_rollback(struct commit_log *l, const struct commit_mark *m);

/* Appends one record (header from r, then its body: topic_len topic bytes,
 * MQTT only, and n payload bytes) to the filling batch. Returns 0, -E2BIG when
 * the body is larger than a record may hold, -ENOMEM. */
int commit_append(struct commit_log *l, const struct record *r, const void *topic, size_t topic_len,
                  const void *payload, size_t n);

/* Bytes the records appended since mark m take in the batch. */
size_t commit_since(const struct commit_log *l, const struct commit_mark *m);

/* The readings appended since the last commit_wait, `bytes` long, are a
 * request that waits for this batch: when it is durable (or failed),
 * conn_durable(slot, gen, cookie, err) runs. Counts the bytes as pending.
 * Returns 0 or -ENOMEM (then nothing is registered: roll back). */
int commit_wait(struct worker *w, struct commit_log *l, uint32_t slot, uint32_t gen,
                uint64_t cookie, size_t bytes);

/* End of a loop turn: seals and submits every filling batch that can go. */
void commit_submit(struct worker *w);
/* A log write, sync, or write-ahead completion. */
void commit_complete(struct worker *w, struct io_uring_cqe *cqe);
/* A storage job of a log came back from the helper thread. */
void commit_job_done(struct worker *w, struct iojob *j);
/* Periodic: suspends logs idle for --log-idle-timeout. */
void commit_tick(struct worker *w);
/* After the loop ended: everything synced and closed. */
void commit_close_all(struct worker *w);

/* True when acknowledgements wait for an fdatasync (batch, always). */
bool commit_syncs_batches(const struct worker *w);
/* --fsync interval: start a background fdatasync of every log written since. */
void commit_interval_sync(struct worker *w);

/* Hands a log recovered at start-up (open, ready to append) to its worker. */
int commit_log_adopt(struct worker *w, const struct log_writer *lw);

#endif
