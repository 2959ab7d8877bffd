/* tests/unit/engine/auth_swap_stress.h — readers looking up tokens while a
 * writer swaps tables, shared by the Criterion test (auth_swap_test.c) and the
 * plain program ThreadSanitizer runs (auth_swap_tsan.c: Criterion's own
 * start-up does not survive TSan, Snaipe/Criterion#274). Checks nothing
 * itself: it counts, and the callers judge. */
#ifndef SLUICE_TEST_AUTH_SWAP_STRESS_H
#define SLUICE_TEST_AUTH_SWAP_STRESS_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "engine/auth_swap.h"

#define TOKENS 64 /* a table of a few KiB: a freed one is reused or unmapped soon */
#define ORG    0x5e1ce

/* Token i's digest is the same in every table; its device says which table
 * (generation) the answer came from. */
static void digest_of(unsigned i, uint8_t d[STORE_DIGEST_LEN])
{
    memset(d, 0, STORE_DIGEST_LEN);
    for (unsigned b = 0; b < STORE_DIGEST_LEN; b++)
        d[b] = (uint8_t)(i * 131u + b * 7u + 1u);
}

static struct auth_table *table_of(uint32_t generation)
{
    struct auth_entry e[TOKENS];
    for (unsigned i = 0; i < TOKENS; i++) {
        digest_of(i, e[i].digest);
        e[i].device = generation;
        e[i].org = ORG + i;
        e[i].state = STORE_DEVICE_ACTIVE;
    }
    struct auth_table *t = auth_table_build(e, TOKENS, NULL, 0);
    if (!t) abort(); /* a few KiB: nothing sensible to test without them */
    return t;
}

struct stress {
    struct auth_swap s;
    atomic_uint published; /* generation of the newest table published */
    atomic_bool done;
    atomic_ulong lookups;
    atomic_uint bad; /* lookups whose answer was not a valid one */
};

struct stress_result {
    unsigned long lookups;
    unsigned bad;        /* wrong answers */
    size_t freed;        /* retired tables freed while the readers ran */
    size_t left;         /* retired tables still not freed when they stopped */
    size_t most_pending; /* most retired tables waiting at once */
    int failed_setup;    /* init, publish or pthread_create failed */
};

struct reader_arg {
    struct stress *st;
    unsigned id;
};

static void *reader_main(void *arg)
{
    struct reader_arg *a = arg;
    struct stress *st = a->st;
    struct auth_swap_reader *r = auth_swap_reader(&st->s, a->id);
    uint32_t last = 0;
    unsigned long n = 0;
    uint8_t d[STORE_DIGEST_LEN];
    while (!atomic_load_explicit(&st->done, memory_order_acquire)) {
        const struct auth_table *t = auth_swap_quiesce(r);
        /* a turn of the loop: several lookups in the same table */
        for (unsigned k = 0; k < 8; k++) {
            unsigned i = (unsigned)((n * 7 + k + a->id) % TOKENS);
            digest_of(i, d);
            const struct auth_entry *e = auth_table_lookup(t, d);
            uint32_t pub = atomic_load_explicit(&st->published, memory_order_acquire);
            /* valid: the token's own entry, from a generation that was published,
             * never older than one this reader already saw */
            if (!e || memcmp(e->digest, d, STORE_DIGEST_LEN) || e->org != ORG + i ||
                e->state != STORE_DEVICE_ACTIVE || e->device < last || e->device > pub)
                atomic_fetch_add(&st->bad, 1);
            else
                last = e->device;
            n++;
        }
        if (n % 1024 == 0) sched_yield(); /* share the cores with the writer */
    }
    atomic_fetch_add(&st->lookups, n);
    auth_swap_offline(r);
    return NULL;
}

#define STRESS_READERS_MAX 16

/* `readers` threads look up tokens in a loop while the writer publishes
 * `swaps` new tables, reclaiming as it goes; then, the readers still running,
 * it reclaims until nothing is left (or gives up after a million tries). */
static struct stress_result stress_run(unsigned readers, uint32_t swaps)
{
    static struct stress st;
    struct stress_result res = {0};
    pthread_t th[STRESS_READERS_MAX];
    struct reader_arg args[STRESS_READERS_MAX];
    unsigned started = 0;
    memset(&st, 0, sizeof st);
    atomic_store(&st.published, 1);
    if (readers > STRESS_READERS_MAX || auth_swap_init(&st.s, readers, table_of(1))) {
        res.failed_setup = 1;
        return res;
    }
    for (; started < readers; started++) {
        args[started] = (struct reader_arg){&st, started};
        if (pthread_create(&th[started], NULL, reader_main, &args[started])) break;
    }
    if (started < readers) {
        res.failed_setup = 1;
        swaps = 0;
        for (unsigned i = started; i < readers; i++)
            auth_swap_offline(auth_swap_reader(&st.s, i));
    }
    for (uint32_t g = 2; g <= swaps + 1; g++) {
        /* published is raised before the table exists for readers, so a reader
         * never sees a generation above it */
        atomic_store_explicit(&st.published, g, memory_order_release);
        struct auth_table *t = table_of(g);
        if (auth_swap_publish(&st.s, t)) {
            auth_table_free(t);
            res.failed_setup = 1;
            break;
        }
        res.freed += auth_swap_reclaim(&st.s);
        if (auth_swap_pending(&st.s) > res.most_pending)
            res.most_pending = auth_swap_pending(&st.s);
        if (g % 64 == 0) sched_yield();
    }
    for (unsigned spin = 0; auth_swap_pending(&st.s) && spin < 1000000; spin++) {
        res.freed += auth_swap_reclaim(&st.s);
        sched_yield();
    }
    res.left = auth_swap_pending(&st.s);
    atomic_store_explicit(&st.done, true, memory_order_release);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    res.lookups = atomic_load(&st.lookups);
    res.bad = atomic_load(&st.bad);
    auth_swap_destroy(&st.s);
    return res;
}

#endif
