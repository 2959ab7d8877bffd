/* Unit tests for the per-address token buckets behind --auth-fail-rate. */
#include <criterion/criterion.h>
#include <string.h>

#include "engine/ratelimit.h"

static struct ratelimit rl;
static const uint8_t A[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
static const uint8_t B[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3};

Test(ratelimit, burst_then_refused_then_refilled_at_the_rate)
{
    ratelimit_init(&rl, 2, 4); /* 2 per second, burst 4 */
    for (int i = 0; i < 4; i++) {
        cr_assert(ratelimit_allow(&rl, A, 1000), "attempt %d within the burst", i);
        ratelimit_charge(&rl, A, 1000);
    }
    cr_assert_not(ratelimit_allow(&rl, A, 1000), "the fifth attempt at once");
    cr_assert_not(ratelimit_allow(&rl, A, 1499), "499 ms later: not yet one token");
    cr_assert(ratelimit_allow(&rl, A, 1500), "500 ms at 2/s is one token");
    ratelimit_charge(&rl, A, 1500);
    cr_assert_not(ratelimit_allow(&rl, A, 1500));
    cr_assert(ratelimit_allow(&rl, A, 100000), "a long pause refills");
}

Test(ratelimit, refill_is_capped_at_the_burst)
{
    ratelimit_init(&rl, 2, 4);
    ratelimit_charge(&rl, A, 0);
    for (int i = 0; i < 4; i++)
        ratelimit_charge(&rl, A, 3600 * 1000); /* an hour later */
    cr_assert_not(ratelimit_allow(&rl, A, 3600 * 1000), "more than the burst was saved up");
}

Test(ratelimit, addresses_have_their_own_buckets)
{
    ratelimit_init(&rl, 1, 1);
    ratelimit_charge(&rl, A, 0);
    cr_assert_not(ratelimit_allow(&rl, A, 0));
    cr_assert(ratelimit_allow(&rl, B, 0), "another address is not throttled");
}

Test(ratelimit, rate_zero_disables)
{
    ratelimit_init(&rl, 0, 0);
    for (int i = 0; i < 1000; i++)
        ratelimit_charge(&rl, A, 0);
    cr_assert(ratelimit_allow(&rl, A, 0));
}

Test(ratelimit, a_clock_that_does_not_move_forward_adds_nothing)
{
    ratelimit_init(&rl, 1000, 1);
    ratelimit_charge(&rl, A, 5000);
    cr_assert_not(ratelimit_allow(&rl, A, 4000), "time going back must not refill");
    cr_assert(ratelimit_allow(&rl, A, 5001));
}
