/* tests/unit/engine/auth_swap_test.c — publishing token tables to readers and
 * freeing the old ones only when no reader can hold them (engine/auth_swap.c). */
#include <criterion/criterion.h>

#include "auth_swap_stress.h"

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

Test(auth_swap, concurrent_lookups_while_tables_are_swapped_thousands_of_times, .timeout = 60)
{
    const uint32_t swaps = 4000;
    struct stress_result r = stress_run(4, swaps);
    cr_assert_eq(r.failed_setup, 0);
    cr_assert_gt(r.lookups, 0);
    cr_assert_eq(r.bad, 0, "%u of %lu lookups answered wrong", r.bad, r.lookups);
    cr_assert_eq(r.left, 0, "%zu retired tables never reclaimed while the readers ran", r.left);
    cr_assert_eq(r.freed, swaps, "freed %zu of the %u retired tables", r.freed, swaps);
    cr_log_info("%lu lookups, %zu tables freed, at most %zu waiting at once", r.lookups, r.freed,
                r.most_pending);
}
