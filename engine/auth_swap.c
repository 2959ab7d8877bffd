/* engine/auth_swap.c — QSBR publication of the token table; see auth_swap.h. */
#include "engine/auth_swap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int auth_swap_init(struct auth_swap *s, unsigned nreaders, struct auth_table *initial)
{
    memset(s, 0, sizeof *s);
    size_t n = nreaders ? nreaders : 1;
    /* sizeof is a whole number of cache lines (the _Alignas member) */
    s->readers = aligned_alloc(64, n * sizeof *s->readers);
    if (!s->readers) return -ENOMEM;
    for (unsigned i = 0; i < nreaders; i++) {
        struct auth_swap_reader *r = &s->readers[i];
        memset(r, 0, sizeof *r);
        atomic_init(&r->seen, 0);
        r->swap = s;
    }
    s->nreaders = nreaders;
    atomic_init(&s->epoch, 0);
    atomic_init(&s->cur, initial);
    return 0;
}

struct auth_swap_reader *auth_swap_reader(struct auth_swap *s, unsigned i)
{
    return &s->readers[i];
}

int auth_swap_publish(struct auth_swap *s, struct auth_table *t)
{
    /* room first, so that a failure leaves the published state untouched */
    if (s->nretired == s->retired_cap) {
        size_t cap = s->retired_cap ? 2 * s->retired_cap : 8;
        struct auth_swap_retired *v = realloc(s->retired, cap * sizeof *v);
        if (!v) return -ENOMEM;
        s->retired = v;
        s->retired_cap = cap;
    }
    struct auth_table *old = atomic_exchange_explicit(&s->cur, t, memory_order_acq_rel);
    /* the bump comes after the exchange: a reader that sees the new epoch
     * (acquire) then loads the new table, never old */
    uint64_t epoch = atomic_fetch_add_explicit(&s->epoch, 1, memory_order_acq_rel) + 1;
    if (old) s->retired[s->nretired++] = (struct auth_swap_retired){old, epoch};
    return 0;
}

size_t auth_swap_reclaim(struct auth_swap *s)
{
    if (!s->nretired) return 0;
    uint64_t min = UINT64_MAX;
    for (unsigned i = 0; i < s->nreaders; i++) {
        uint64_t seen = atomic_load_explicit(&s->readers[i].seen, memory_order_acquire);
        if (seen < min) min = seen;
    }
    size_t freed = 0, kept = 0;
    for (size_t i = 0; i < s->nretired; i++) {
        if (s->retired[i].epoch <= min) {
            auth_table_free(s->retired[i].t);
            freed++;
        } else {
            s->retired[kept++] = s->retired[i];
        }
    }
    s->nretired = kept;
    return freed;
}

size_t auth_swap_pending(const struct auth_swap *s)
{
    return s->nretired;
}

const struct auth_table *auth_swap_quiesce(struct auth_swap_reader *r)
{
    struct auth_swap *s = r->swap;
    /* epoch before table: the epoch published below never claims more than
     * the table loaded reflects */
    uint64_t epoch = atomic_load_explicit(&s->epoch, memory_order_acquire);
    const struct auth_table *t = atomic_load_explicit(&s->cur, memory_order_acquire);
    if (t != r->cur) {
        r->cur = t;
        r->gen++;
    }
    /* release: every read this reader made of an older table happens before
     * the writer, seeing this epoch, frees that table */
    atomic_store_explicit(&r->seen, epoch, memory_order_release);
    return t;
}

void auth_swap_offline(struct auth_swap_reader *r)
{
    r->cur = NULL;
    r->gen++;
    atomic_store_explicit(&r->seen, UINT64_MAX, memory_order_release);
}

void auth_swap_destroy(struct auth_swap *s)
{
    for (size_t i = 0; i < s->nretired; i++)
        auth_table_free(s->retired[i].t);
    free(s->retired);
    auth_table_free(atomic_load_explicit(&s->cur, memory_order_acquire));
    free(s->readers);
    memset(s, 0, sizeof *s);
}
