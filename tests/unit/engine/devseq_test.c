/* tests/unit/engine/devseq_test.c — the frame protocol's per-device marks and
 * live connections (engine/devseq.c): the rules that make resends exact. */
#include <criterion/criterion.h>

#include <errno.h>

#include "engine/devseq.h"

static struct devseq d;

static void setup(void)
{
    cr_assert_eq(devseq_init(&d), 0);
}

static void teardown(void)
{
    devseq_free(&d);
}

static const struct conn_ref A = {0, 1, 1}, B = {1, 7, 3};

static int claim(struct conn_ref me, uint64_t next, uint64_t *durable, bool *kicked,
                 struct conn_ref *kick)
{
    uint64_t gap;
    return devseq_claim(&d, 42, me, next, durable, kick, kicked, &gap);
}

TestSuite(devseq, .init = setup, .fini = teardown);

Test(devseq, a_new_device_starts_at_zero_and_counts_its_commits)
{
    uint64_t dur = 99;
    bool kicked;
    struct conn_ref k;
    cr_assert_eq(claim(A, 0, &dur, &kicked, &k), 1);
    cr_assert_eq(dur, 0);
    cr_assert_eq(devseq_submit(&d, 42, 10), 0);
    cr_assert_eq(devseq_submit(&d, 42, 5), 0);
    devseq_done(&d, 42, 10, 0);
    cr_assert_eq(devseq_durable(&d, 42), 10);
    devseq_done(&d, 42, 5, 0);
    cr_assert_eq(devseq_durable(&d, 42), 15);
}

Test(devseq, seeds_from_the_logs_keep_the_highest)
{
    cr_assert_eq(devseq_seed(&d, 42, 7), 0);
    cr_assert_eq(devseq_seed(&d, 42, 3), 0);
    cr_assert_eq(devseq_durable(&d, 42), 7);
    cr_assert_eq(devseq_durable(&d, 43), 0);
}

/* MQTT-style takeover: the newer connection asks the older one to end
 * (once), and is refused until the older one let go and its commits are
 * done; only then is the mark final. */
Test(devseq, a_newer_connection_waits_for_the_older_ones_commits)
{
    uint64_t dur;
    bool kicked;
    struct conn_ref k;
    cr_assert_eq(claim(A, 0, &dur, &kicked, &k), 1);
    cr_assert_eq(devseq_submit(&d, 42, 4), 0);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 0);
    cr_assert(kicked && k.worker == A.worker && k.slot == A.slot && k.gen == A.gen);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 0);
    cr_assert(!kicked, "asked once");
    devseq_release(&d, 42, A);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 0, "A's commit is still in flight");
    devseq_done(&d, 42, 4, 0);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 1);
    cr_assert_eq(dur, 4);
    devseq_release(&d, 42, A); /* a stale release changes nothing */
    cr_assert_eq(claim(A, 0, &dur, &kicked, &k), 0);
    cr_assert(kicked);
}

Test(devseq, a_failed_commit_stops_the_mark_until_the_chain_drains)
{
    uint64_t dur;
    bool kicked;
    struct conn_ref k;
    cr_assert_eq(claim(A, 0, &dur, &kicked, &k), 1);
    cr_assert_eq(devseq_submit(&d, 42, 3), 0);
    cr_assert_eq(devseq_submit(&d, 42, 3), 0);
    devseq_done(&d, 42, 3, -EIO);
    cr_assert_eq(devseq_submit(&d, 42, 1), -EIO, "nothing more while broken");
    devseq_done(&d, 42, 3, 0); /* stored behind the hole: does not count */
    cr_assert_eq(devseq_durable(&d, 42), 0);
    devseq_release(&d, 42, A);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 1);
    cr_assert_eq(dur, 0);
    cr_assert_eq(devseq_submit(&d, 42, 2), 0, "the next connection starts afresh");
}

Test(devseq, a_next_seq_beyond_the_mark_records_a_gap)
{
    uint64_t dur, gap;
    bool kicked;
    struct conn_ref k;
    cr_assert_eq(devseq_seed(&d, 42, 10), 0);
    cr_assert_eq(devseq_claim(&d, 42, A, 25, &dur, &k, &kicked, &gap), 1);
    cr_assert_eq(dur, 24);
    cr_assert_eq(gap, 14);
    devseq_release(&d, 42, A);
    cr_assert_eq(devseq_claim(&d, 42, B, 5, &dur, &k, &kicked, &gap), 1);
    cr_assert(dur == 24 && gap == 0, "a resend from below the mark is no gap");
}

Test(devseq, many_devices_grow_the_table)
{
    for (uint32_t i = 1; i <= 5000; i++)
        cr_assert_eq(devseq_seed(&d, i, i * 3), 0);
    for (uint32_t i = 1; i <= 5000; i++)
        cr_assert_eq(devseq_durable(&d, i), i * 3);
}

Test(devseq, tickets_carry_device_and_count)
{
    uint64_t t = devseq_ticket(0xfffffffeu, 4096);
    cr_assert(t & DEVSEQ_TICKET);
    cr_assert_eq((uint32_t)t, 0xfffffffeu);
    cr_assert_eq((t >> 32) & 0x7fffffffu, 4096);
}

/* §6 over TCP: the TCP connection that claimed the device hands it to its UDP
 * session; the session is the owner then (the TCP connection's release is a
 * no-op, a newer claim kicks the session). */
Test(devseq, a_handshake_over_tcp_hands_the_device_to_its_udp_session)
{
    const struct conn_ref U = {0, 1u << 31 | 5, 2}, C = {2, 9, 4};
    uint64_t dur;
    bool kicked;
    struct conn_ref k;
    cr_assert_eq(devseq_seed(&d, 42, 12), 0);
    cr_assert_eq(claim(A, 0, &dur, &kicked, &k), 1);
    dur = 0;
    cr_assert(devseq_hand(&d, 42, A, U, &dur));
    cr_assert_eq(dur, 12);
    devseq_release(&d, 42, A); /* the TCP connection closes: the session stays the owner */
    cr_assert_eq(claim(C, 0, &dur, &kicked, &k), 0);
    cr_assert(kicked && k.worker == U.worker && k.slot == U.slot && k.gen == U.gen);
    /* only the owner can hand the device on */
    cr_assert(!devseq_hand(&d, 42, A, B, &dur));
    cr_assert(!devseq_hand(&d, 43, A, B, &dur));
}

/* A newer connection asked the owner to end (and waits for that): the owner
 * must not hand the device on, or the newer one would wait on a session no
 * one ends. */
Test(devseq, a_kicked_owner_cannot_hand_the_device_on)
{
    const struct conn_ref U = {0, 1u << 31 | 5, 2};
    uint64_t dur = 77;
    bool kicked;
    struct conn_ref k;
    cr_assert_eq(claim(A, 0, &dur, &kicked, &k), 1);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 0);
    cr_assert(kicked);
    dur = 77;
    cr_assert(!devseq_hand(&d, 42, A, U, &dur));
    cr_assert_eq(dur, 77);
    devseq_release(&d, 42, A);
    cr_assert_eq(claim(B, 0, &dur, &kicked, &k), 1);
}
