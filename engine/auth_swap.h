/* engine/auth_swap.h — publishing a new token table to running workers, and
 * freeing the old one only once no worker can still be reading it.
 *
 * Quiescent-state reclamation (QSBR, as in liburcu's qsbr flavour): the writer
 * (the control thread) swaps the table pointer and bumps an epoch; each reader
 * (a worker) passes a quiescent point once per loop turn, where it holds no
 * pointer into any table, and there publishes the epoch it has seen. A table
 * retired at epoch E is freed once every reader has published an epoch >= E:
 * each has since picked up a newer table, and everything it did with the old
 * one happened before (release/acquire on its published epoch). Readers never
 * wait and take no lock; the writer never waits either, it frees what it can
 * and tries again later.
 *
 * Threads: one writer (auth_swap_publish, auth_swap_reclaim, auth_swap_pending)
 * at a time; each reader slot is used by one thread.
 */
#ifndef SLUICE_ENGINE_AUTH_SWAP_H
#define SLUICE_ENGINE_AUTH_SWAP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/auth.h"

struct auth_swap;

/* One reader's slot, on a cache line of its own (the writer reads every slot;
 * readers write theirs each turn). */
struct auth_swap_reader {
    _Alignas(64) _Atomic uint64_t seen; /* epoch at the last quiescent point;
                                           UINT64_MAX: offline, holds nothing */
    struct auth_swap *swap;
    const struct auth_table *cur; /* the reader's table until its next quiescent point */
    uint64_t gen;                 /* bumped whenever cur changes: caches keyed on it go stale */
};

struct auth_swap_retired {
    struct auth_table *t;
    uint64_t epoch; /* the epoch that replaced it */
};

struct auth_swap {
    _Atomic(struct auth_table *) cur;
    _Atomic uint64_t epoch;
    struct auth_swap_reader *readers;
    unsigned nreaders;
    struct auth_swap_retired *retired; /* the writer's alone */
    size_t nretired, retired_cap;
};

/* Sets s up with nreaders reader slots (each online, at epoch 0) and initial as
 * the current table (may be NULL: no token is valid), which s then owns.
 * Returns 0 or -ENOMEM (initial is not taken then). */
int auth_swap_init(struct auth_swap *s, unsigned nreaders, struct auth_table *initial);

/* Reader slot i (< nreaders). */
struct auth_swap_reader *auth_swap_reader(struct auth_swap *s, unsigned i);

/* Writer: makes t (owned by s from now on) the current table; the one it
 * replaces is retired. Returns 0, or -ENOMEM when the retired list cannot grow:
 * nothing changed then and t is still the caller's. */
int auth_swap_publish(struct auth_swap *s, struct auth_table *t);

/* Writer: frees the retired tables that no reader can still hold. Returns how
 * many were freed. */
size_t auth_swap_reclaim(struct auth_swap *s);

/* Writer: how many retired tables wait to be freed. */
size_t auth_swap_pending(const struct auth_swap *s);

/* Reader, at a quiescent point (no pointer into a table held across it):
 * returns the current table, valid until the reader's next quiescent point or
 * auth_swap_offline, and publishes that the reader is done with older ones. */
const struct auth_table *auth_swap_quiesce(struct auth_swap_reader *r);

/* Reader: it will read no table again (a worker that exits), so it no longer
 * holds back reclamation. */
void auth_swap_offline(struct auth_swap_reader *r);

/* Frees every table and the reader slots. Only once no reader runs. */
void auth_swap_destroy(struct auth_swap *s);

#endif
