/* tests/unit/engine/auth_swap_tsan.c — the auth table swap under concurrent
 * lookups as a plain program, so that ThreadSanitizer can run it (Criterion
 * cannot start under TSan). Exit 0 when every lookup was answered from a live,
 * published table and every retired table was freed; 1 otherwise. */
#include <stdio.h>

#include "auth_swap_stress.h"

int main(void)
{
    const uint32_t swaps = 3000;
    struct stress_result r = stress_run(4, swaps);
    int ok = !r.failed_setup && r.lookups > 0 && r.bad == 0 && r.left == 0 && r.freed == swaps;
    printf("%s: %lu lookups, %u wrong; %zu of %u retired tables freed, %zu left, at most %zu "
           "waiting%s\n",
           ok ? "ok" : "FAIL", r.lookups, r.bad, r.freed, swaps, r.left, r.most_pending,
           r.failed_setup ? "; setup failed" : "");
    return ok ? 0 : 1;
}
