/* tests/unit/engine/auth_swap_test.c — publishing token tables to readers and
 * freeing the old ones only when no reader can hold them (engine/auth_swap.c). */
#include <criterion/criterion.h>

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
    struct auth_table *t = auth_table_build(e, TOKENS);
    cr_assert_not_null(t);
    return t;
}

Test(auth_swap, a_retired_table_waits_for_every_reader_to_pass_a_quiescent_point)
{
    struct auth_swap s;
    cr_assert_eq(auth_swap_init(&s, 2, table_of(1)), 0);
    struct auth_swap_reader *r0 = auth_swap_reader(&s, 0), *r1 = auth_swap_reader(&s, 1);
    const struct auth_table *t0 = auth_swap_quiesce(r0), *t1 = auth_swap_quiesce(r1);
    cr_assert_eq(t0, t1);

    cr_assert_eq(auth_swap_publish(&s, table_of(2)), 0);
    cr_assert_eq(auth_swap_reclaim(&s), 0, "freed while both readers may hold it");
    cr_assert_eq(auth_swap_pending(&s), 1);

    uint64_t gen0 = r0->gen;
    const struct auth_table *n0 = auth_swap_quiesce(r0);
    cr_assert_neq(n0, t0, "reader 0 did not pick up the new table");
    cr_assert_neq(r0->gen, gen0, "the reader's generation did not change with its table");
    cr_assert_eq(auth_swap_reclaim(&s), 0, "freed while reader 1 may hold it");

    /* reader 1 still reads the old table: it must be intact */
    uint8_t d[STORE_DIGEST_LEN];
    digest_of(3, d);
    const struct auth_entry *e = auth_table_lookup(t1, d);
    cr_assert(e && e->device == 1 && e->org == ORG + 3);

    cr_assert_eq(auth_swap_quiesce(r1), n0);
    cr_assert_eq(auth_swap_reclaim(&s), 1);
    cr_assert_eq(auth_swap_pending(&s), 0);

    /* a quiescent point without a swap in between changes nothing */
    gen0 = r0->gen;
    cr_assert_eq(auth_swap_quiesce(r0), n0);
    cr_assert_eq(r0->gen, gen0);
    auth_swap_destroy(&s);
}

Test(auth_swap, an_offline_reader_does_not_hold_back_reclamation)
{
    struct auth_swap s;
    cr_assert_eq(auth_swap_init(&s, 3, table_of(1)), 0);
    for (unsigned i = 0; i < 3; i++)
        auth_swap_quiesce(auth_swap_reader(&s, i));
    auth_swap_offline(auth_swap_reader(&s, 2));
    for (uint32_t g = 2; g < 6; g++)
        cr_assert_eq(auth_swap_publish(&s, table_of(g)), 0);
    cr_assert_eq(auth_swap_reclaim(&s), 0);
    auth_swap_quiesce(auth_swap_reader(&s, 0));
    auth_swap_quiesce(auth_swap_reader(&s, 1));
    cr_assert_eq(auth_swap_reclaim(&s), 4, "the tables of 4 swaps are all unreachable now");
    auth_swap_destroy(&s);
}

Test(auth_swap, a_reader_that_never_started_holds_back_reclamation)
{
    struct auth_swap s;
    cr_assert_eq(auth_swap_init(&s, 2, table_of(1)), 0);
    auth_swap_quiesce(auth_swap_reader(&s, 0));
    cr_assert_eq(auth_swap_publish(&s, table_of(2)), 0);
    auth_swap_quiesce(auth_swap_reader(&s, 0));
    /* reader 1 may load the first table at any moment before its first
     * quiescent point publishes anything */
    cr_assert_eq(auth_swap_reclaim(&s), 0);
    auth_swap_destroy(&s); /* frees the retired table too (leak-checked under ASan) */
}

Test(auth_swap, starts_from_no_table)
{
    struct auth_swap s;
    cr_assert_eq(auth_swap_init(&s, 1, NULL), 0);
    cr_assert_null(auth_swap_quiesce(auth_swap_reader(&s, 0)));
    cr_assert_eq(auth_swap_publish(&s, table_of(7)), 0);
    cr_assert_eq(auth_swap_pending(&s), 0, "there was nothing to retire");
    cr_assert_not_null(auth_swap_quiesce(auth_swap_reader(&s, 0)));
    auth_swap_destroy(&s);
}

/* --- readers looking up tokens while the writer swaps tables ------------- */

#define READERS 4
#define SWAPS   4000

struct stress {
    struct auth_swap s;
    atomic_uint published; /* generation of the newest table published */
    atomic_bool done;
    atomic_ulong lookups;
    atomic_uint bad; /* lookups whose answer was not a valid one */
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
        if (n % 1024 == 0) sched_yield(); /* share two cores with the writer */
    }
    atomic_fetch_add(&st->lookups, n);
    auth_swap_offline(r);
    return NULL;
}

Test(auth_swap, concurrent_lookups_while_tables_are_swapped_thousands_of_times, .timeout = 60)
{
    static struct stress st;
    memset(&st, 0, sizeof st);
    atomic_store(&st.published, 1);
    cr_assert_eq(auth_swap_init(&st.s, READERS, table_of(1)), 0);
    pthread_t th[READERS];
    struct reader_arg args[READERS];
    for (unsigned i = 0; i < READERS; i++) {
        args[i] = (struct reader_arg){&st, i};
        cr_assert_eq(pthread_create(&th[i], NULL, reader_main, &args[i]), 0);
    }
    size_t freed = 0, most_pending = 0;
    for (uint32_t g = 2; g <= SWAPS + 1; g++) {
        /* published is raised before the table exists for readers, so a reader
         * never sees a generation above it */
        atomic_store_explicit(&st.published, g, memory_order_release);
        cr_assert_eq(auth_swap_publish(&st.s, table_of(g)), 0);
        freed += auth_swap_reclaim(&st.s);
        if (auth_swap_pending(&st.s) > most_pending) most_pending = auth_swap_pending(&st.s);
        if (g % 64 == 0) sched_yield();
    }
    /* with the readers still running, every retired table must become free */
    for (unsigned spin = 0; auth_swap_pending(&st.s) && spin < 1000000; spin++) {
        freed += auth_swap_reclaim(&st.s);
        sched_yield();
    }
    size_t left = auth_swap_pending(&st.s);
    atomic_store_explicit(&st.done, true, memory_order_release);
    for (unsigned i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(atomic_load(&st.bad), 0, "%u of %lu lookups answered wrong",
                 atomic_load(&st.bad), atomic_load(&st.lookups));
    cr_assert_gt(atomic_load(&st.lookups), 0);
    cr_assert_eq(left, 0, "%zu retired tables never reclaimed while the readers ran", left);
    cr_assert_eq(freed, SWAPS, "freed %zu of the %d retired tables", freed, SWAPS);
    cr_log_info("%lu lookups, %zu tables freed, at most %zu waiting at once",
                atomic_load(&st.lookups), freed, most_pending);
    auth_swap_destroy(&st.s);
}
