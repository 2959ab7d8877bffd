/* engine/devseq.h — the frame protocol's per-device sequence state, across
 * all workers: each device's durable high-water mark and its one live
 * connection (docs/frame-protocol.md §4).
 *
 * A device's readings carry its own sequence numbers. durable is the highest
 * one whose reading (and every one before it) is on disk; a reading at or
 * below it is acknowledged and not stored again. That is exact over TCP
 * because a device has one live connection at a time: a newer one (after its
 * proof) ends the older one and then waits until the older one's commits have
 * all completed before it learns the final mark (WELCOME) and stores anything.
 *
 * Commits of one device are therefore all from one connection, on one log,
 * and complete in order; each adds its reading count to durable. The outcome
 * reaches this table through the commit's own waiter (ingest_notify, cookie
 * devseq_ticket(device, count)), so a connection that went meanwhile loses
 * nothing. A failed commit breaks the chain: durable stops there (later
 * commits of the same connection, which fails, no longer count) until the
 * device's commits have all completed. Readings after a failure may then be
 * stored twice, never lost.
 *
 * One lock guards the table: taken per handshake, per commit submitted and
 * per commit completed (not per reading). Start-up fills it from the logs.
 */
#ifndef SLUICE_ENGINE_DEVSEQ_H
#define SLUICE_ENGINE_DEVSEQ_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/worker.h"

int devseq_init(struct devseq *d);
void devseq_free(struct devseq *d);

/* Start-up (before the workers run; engine.c reads the logs): a frame
 * reading of device with sequence number seq is on disk. Returns 0 or
 * -ENOMEM. */
int devseq_seed(struct devseq *d, uint32_t device, uint64_t seq);

/* What is durable for device now (CHALLENGE's hint; 0 when unknown). */
uint64_t devseq_durable(struct devseq *d, uint32_t device);

/* A connection whose proof verified wants to be device's. Returns 1 when it
 * is now (*durable final: devseq_start's next_seq rule applied), 0 when it
 * must ask again later (an older connection is being ended, or its commits
 * are still in flight: *kick is set once, the connection to end), -ENOMEM.
 * next_seq > durable + 1 records a gap: durable moves up to next_seq - 1 (the
 * readings between were lost on the device's side). */
int devseq_claim(struct devseq *d, uint32_t device, struct conn_ref me, uint64_t next_seq,
                 uint64_t *durable, struct conn_ref *kick, bool *must_kick, uint64_t *gap);
/* The owner `from` passes device to `to` (a TCP handshake handing the device
 * to the UDP session it made, docs/frame-protocol.md §6): true, with
 * *durable the mark, when from owned it and no newer connection has asked
 * for it (a kicked owner must end: handing on what the newer one waits for
 * would leave it waiting on an owner nobody ends). Nothing changes when
 * false. */
bool devseq_hand(struct devseq *d, uint32_t device, struct conn_ref from, struct conn_ref to,
                 uint64_t *durable);
/* The connection no longer speaks for device (closed, taken over). */
void devseq_release(struct devseq *d, uint32_t device, struct conn_ref me);

/* A commit of count readings is submitted for device (by its owner). Returns
 * 0, or -EIO while the chain is broken (an earlier commit failed). */
int devseq_submit(struct devseq *d, uint32_t device, uint32_t count);
/* The cookie of the commit's own waiter, and what conn_durable calls for it
 * (worker->orphan_durable, with DEVSEQ_TICKET set; bit 62 is the UDP
 * module's, engine/udp.h). count is at most DEVSEQ_COUNT_MAX (a commit's
 * readings are far fewer: a window). */
#define DEVSEQ_TICKET    (1ull << 63)
#define DEVSEQ_COUNT_MAX 0x3fffffffu
static inline uint64_t devseq_ticket(uint32_t device, uint32_t count)
{
    return DEVSEQ_TICKET | (uint64_t)(count & DEVSEQ_COUNT_MAX) << 32 | device;
}
void devseq_orphan_durable(struct worker *w, uint64_t ticket, int err);
/* The same, by fields (tests). */
void devseq_done(struct devseq *d, uint32_t device, uint32_t count, int err);

#endif
