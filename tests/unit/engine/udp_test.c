/* tests/unit/engine/udp_test.c — the mailbox that carries a UDP session made
 * over TCP to worker 0 (engine/udp.h, docs/frame-protocol.md §6 "Handshake
 * over TCP"): its ceiling, tickets that name one offer only, keys wiped, and
 * worker 0 woken. Making the sessions needs worker 0's ring: the integration
 * tests (test_udp_tcp.py) do that. */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/udp.h"

static struct sluice_engine e;
static struct worker ws[2];

static void setup(void)
{
    memset(&e, 0, sizeof e);
    memset(ws, 0, sizeof ws);
    e.workers = ws;
    e.nworkers = 2;
    for (int i = 0; i < 2; i++) {
        ws[i].id = (unsigned)i;
        ws[i].eng = &e;
        ws[i].wake_fd = eventfd(0, EFD_NONBLOCK);
        cr_assert_geq(ws[i].wake_fd, 0);
    }
    cr_assert_eq(udp_mail_init(&e), 0);
}

static void teardown(void)
{
    udp_mail_free(&e);
    for (int i = 0; i < 2; i++)
        close(ws[i].wake_fd);
}

TestSuite(udp_mail, .init = setup, .fini = teardown);

static struct udp_offer offer(uint32_t device)
{
    struct udp_offer o = {.from = {1, 7, 3}, .device = device, .org = 1};
    memset(o.key, 0xab, sizeof o.key);
    memset(o.sid, (int)device, sizeof o.sid);
    return o;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

/* wakes of worker i since the last look */
static uint64_t wakes(int i)
{
    uint64_t n = 0;
    if (read(ws[i].wake_fd, &n, sizeof n) != (ssize_t)sizeof n) return 0;
    return n;
}

Test(udp_mail, s6_an_offer_wakes_worker_0_and_waits_for_its_answer)
{
    struct udp_offer o = offer(5);
    uint32_t t;
    uint64_t durable = 99;
    struct conn_ref sess;
    cr_assert_eq(udp_offer_post(&e, &o, &t), 0);
    cr_assert(all_zero(o.key, sizeof o.key), "the poster's copy of the key is wiped");
    cr_assert_eq(wakes(0), 1);
    cr_assert_eq(wakes(1), 0);
    cr_assert_eq(udp_offer_answer(&e, t, &durable, &sess), UDP_PENDING);
    cr_assert_eq(durable, 99);
    /* nothing answered: no connection of worker 1 runs again */
    struct conn_ref out[4];
    cr_assert_eq(udp_take_answers(&ws[1], out, 4), 0);
}

Test(udp_mail, s10_the_mailbox_holds_256_offers_at_most)
{
    uint32_t t[UDP_MAIL_MAX], extra;
    for (uint32_t i = 0; i < UDP_MAIL_MAX; i++) {
        struct udp_offer o = offer(i + 1);
        cr_assert_eq(udp_offer_post(&e, &o, &t[i]), 0, "offer %u", i);
    }
    struct udp_offer o = offer(1000);
    cr_assert_eq(udp_offer_post(&e, &o, &extra), -ENOSPC);
    cr_assert(all_zero(o.key, sizeof o.key), "a refused offer's key is wiped too");
    /* a connection that gives up frees its entry for the next */
    udp_offer_cancel(&e, t[17]);
    o = offer(1001);
    cr_assert_eq(udp_offer_post(&e, &o, &extra), 0);
    cr_assert_neq(extra, t[17], "a reused entry gets a new ticket");
}

Test(udp_mail, s6_a_ticket_names_one_offer_only)
{
    uint32_t a, b;
    uint64_t d = 0;
    struct conn_ref sess;
    struct udp_offer o = offer(5);
    cr_assert_eq(udp_offer_post(&e, &o, &a), 0);
    udp_offer_cancel(&e, a);
    cr_assert_eq(udp_offer_answer(&e, a, &d, &sess), UDP_GONE);
    o = offer(6);
    cr_assert_eq(udp_offer_post(&e, &o, &b), 0); /* the same entry, reused */
    cr_assert_neq(a, b);
    /* the old ticket neither reads nor cancels the new offer */
    cr_assert_eq(udp_offer_answer(&e, a, &d, &sess), UDP_GONE);
    udp_offer_cancel(&e, a);
    cr_assert_eq(udp_offer_answer(&e, b, &d, &sess), UDP_PENDING);
}

Test(udp_mail, s6_without_udp_there_is_no_mailbox)
{
    udp_mail_free(&e);
    struct udp_offer o = offer(5);
    uint32_t t;
    uint64_t d;
    struct conn_ref sess;
    cr_assert_eq(udp_offer_post(&e, &o, &t), -ENOTCONN);
    cr_assert(all_zero(o.key, sizeof o.key));
    cr_assert_eq(udp_offer_answer(&e, 0, &d, &sess), UDP_GONE);
    udp_offer_cancel(&e, 0);
    cr_assert_eq(wakes(0), 0);
    cr_assert_eq(udp_mail_init(&e), 0); /* for teardown */
}
