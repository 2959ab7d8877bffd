/* tests/unit/engine/udp_test.c — UDP sessions made over TCP (engine/udp.h,
 * docs/frame-protocol.md §6 "Handshake over TCP", §10): the mailbox that
 * carries them to worker 0 (its ceiling, tickets that name one offer only,
 * keys wiped, worker 0 woken), and worker 0 making them (on a ring and UDP
 * socket of its own): the device handed over in one step, or the answer
 * that says why not. The datagrams themselves: test_udp_tcp.py. */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "engine/auth.h"
#include "engine/clients.h"
#include "engine/devseq.h"
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

/* ---- worker 0 making the sessions ---- */

#define DEVICES (16384u + 1) /* one past the session table */

static struct auth_table *tokens;

/* device d's token id: 8 bytes of its digest */
static void token_id(uint32_t d, uint8_t out[8])
{
    memset(out, 0, 8);
    memcpy(out, &d, sizeof d);
    out[7] = 0x5a;
}

static void setup0(void)
{
    setup();
    cr_assert_eq(devseq_init(&e.devseq), 0);
    cr_assert_eq(clients_init(&e.clients), 0);
    struct auth_entry *en = calloc(DEVICES, sizeof *en);
    struct auth_keys k;
    memset(&k, 0, sizeof k);
    cr_assert_not_null(en);
    for (uint32_t d = 1; d <= DEVICES; d++) {
        token_id(d, en[d - 1].digest);
        en[d - 1].device = d;
        en[d - 1].org = 1;
        en[d - 1].state = STORE_DEVICE_ACTIVE;
        en[d - 1].keys = 1;
    }
    tokens = auth_table_build(en, DEVICES, &k, 1);
    free(en);
    cr_assert_not_null(tokens);
    struct worker *w = &ws[0];
    w->auth = tokens;
    w->auth_gen = 1;
    w->now_ms = 1000;
    for (int i = 0; i < LISTENER_KINDS; i++)
        w->listen_fd[i] = -1;
    cr_assert_eq(io_uring_queue_init(64, &w->ring, 0), 0);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    w->listen_fd[LISTENER_UDP] = fd;
    cr_assert_eq(udp_start(w), 0);
}

static void teardown0(void)
{
    udp_free(&ws[0]);
    io_uring_queue_exit(&ws[0].ring);
    for (int i = 0; i < 2; i++)
        free(ws[i].kicks);
    auth_table_free(tokens);
    clients_free(&e.clients);
    devseq_free(&e.devseq);
    teardown();
}

TestSuite(udp_make, .init = setup0, .fini = teardown0);

/* A TCP connection of worker 1 that has claimed device d (as try_claim does). */
static struct conn_ref tcp_owner(uint32_t d)
{
    struct conn_ref me = {1, d, 3}, kick;
    uint64_t durable, gap;
    bool must_kick;
    cr_assert_eq(devseq_claim(&e.devseq, d, me, 0, &durable, &kick, &must_kick, &gap), 1);
    return me;
}

static uint32_t post(uint32_t d, struct conn_ref from)
{
    struct udp_offer o = {.from = from, .device = d, .org = 1};
    token_id(d, o.token_id);
    memset(o.sid, 0, sizeof o.sid);
    memcpy(o.sid, &d, sizeof d); /* distinct ids, as HMAC output would be */
    o.sid[6] = 0x77;
    memset(o.key, 0xab, sizeof o.key);
    uint32_t t;
    cr_assert_eq(udp_offer_post(&e, &o, &t), 0);
    return t;
}

static enum udp_answer answer(uint32_t t, uint64_t *durable, struct conn_ref *sess)
{
    uint64_t d = 0;
    struct conn_ref s = {0, 0, 0};
    enum udp_answer a = udp_offer_answer(&e, t, &d, &s);
    if (durable) *durable = d;
    if (sess) *sess = s;
    return a;
}

Test(udp_make, s6_the_session_is_made_and_the_device_handed_to_it)
{
    cr_assert_eq(devseq_seed(&e.devseq, 7, 12), 0);
    struct conn_ref t7 = tcp_owner(7);
    uint32_t t = post(7, t7);
    (void)wakes(0);
    udp_take_offers(&ws[0]);
    /* the connection's worker is woken and names it */
    cr_assert_geq(wakes(1), 1);
    struct conn_ref out[4];
    cr_assert_eq(udp_take_answers(&ws[1], out, 4), 1);
    cr_assert(out[0].worker == t7.worker && out[0].slot == t7.slot && out[0].gen == t7.gen);
    cr_assert_eq(udp_take_answers(&ws[1], out, 4), 0, "told once");
    uint64_t durable;
    struct conn_ref sess;
    cr_assert_eq(answer(t, &durable, &sess), UDP_MADE);
    cr_assert_eq(durable, 12, "WELCOME's durable_seq: the mark");
    cr_assert(sess.worker == 0 && (sess.slot & UDP_SLOT_BIT));
    cr_assert_eq(answer(t, NULL, NULL), UDP_GONE, "an answer is taken once");
    /* the session owns the device: a newer claim kicks it, not the TCP connection */
    struct conn_ref c = {1, 99, 1}, kick;
    uint64_t dur, gap;
    bool must_kick;
    cr_assert_eq(devseq_claim(&e.devseq, 7, c, 0, &dur, &kick, &must_kick, &gap), 0);
    cr_assert(must_kick && kick.worker == sess.worker && kick.slot == sess.slot &&
              kick.gen == sess.gen);
    /* the TCP connection's release is no longer the device's */
    devseq_release(&e.devseq, 7, t7);
    cr_assert_eq(devseq_claim(&e.devseq, 7, c, 0, &dur, &kick, &must_kick, &gap), 0);
    /* the kick ends the session; then the claim goes through */
    udp_kick(&ws[0], sess.slot, sess.gen);
    cr_assert_eq(devseq_claim(&e.devseq, 7, c, 0, &dur, &kick, &must_kick, &gap), 1);
    cr_assert_eq(dur, 12);
}

Test(udp_make, s6_no_session_for_a_connection_that_lost_the_device)
{
    /* never claimed, and claimed but asked to end by a newer connection */
    uint32_t a = post(3, (struct conn_ref){1, 3, 3});
    struct conn_ref t4 = tcp_owner(4), newer = {1, 50, 1}, kick;
    uint64_t dur, gap;
    bool must_kick;
    cr_assert_eq(devseq_claim(&e.devseq, 4, newer, 0, &dur, &kick, &must_kick, &gap), 0);
    cr_assert(must_kick);
    uint32_t b = post(4, t4);
    udp_take_offers(&ws[0]);
    cr_assert_eq(answer(a, NULL, NULL), UDP_GONE);
    cr_assert_eq(answer(b, NULL, NULL), UDP_GONE);
    /* the newer one still gets the device once the kicked owner lets go */
    devseq_release(&e.devseq, 4, t4);
    cr_assert_eq(devseq_claim(&e.devseq, 4, newer, 0, &dur, &kick, &must_kick, &gap), 1);
}

Test(udp_make, s10_a_token_revoked_since_the_proof_makes_no_session)
{
    struct conn_ref t = tcp_owner(DEVICES + 5); /* no token names it */
    uint32_t k = post(DEVICES + 5, t);
    udp_take_offers(&ws[0]);
    cr_assert_eq(answer(k, NULL, NULL), UDP_REVOKED);
    /* the connection keeps the device until it closes */
    struct conn_ref kick, c = {1, 77, 1};
    uint64_t dur, gap;
    bool must_kick;
    cr_assert_eq(devseq_claim(&e.devseq, DEVICES + 5, c, 0, &dur, &kick, &must_kick, &gap), 0);
    cr_assert(must_kick && kick.slot == t.slot);
}

Test(udp_make, s10_a_full_session_table_answers_busy)
{
    for (uint32_t d = 1; d <= DEVICES; d += UDP_MAIL_MAX) {
        uint32_t t[UDP_MAIL_MAX], n = 0;
        for (uint32_t i = d; i < d + UDP_MAIL_MAX && i <= DEVICES; i++)
            t[n++] = post(i, tcp_owner(i));
        udp_take_offers(&ws[0]);
        for (uint32_t i = 0; i < n; i++) {
            enum udp_answer a = answer(t[i], NULL, NULL);
            if (d + i < DEVICES)
                cr_assert_eq(a, UDP_MADE, "device %u", d + i);
            else
                cr_assert_eq(a, UDP_FULL, "device %u, past the table", d + i);
        }
    }
}

Test(udp_make, s10_a_draining_server_makes_no_session)
{
    uint32_t t = post(9, tcp_owner(9));
    udp_drain(&ws[0]);
    udp_take_offers(&ws[0]);
    cr_assert_eq(answer(t, NULL, NULL), UDP_STOPPING);
}

/* The connection went before its WELCOME: the session made for it is ended
 * (worker 0 is asked, as for any takeover), so none is left that no device
 * knows of. */
Test(udp_make, s10_a_connection_gone_before_welcome_leaves_no_session)
{
    struct conn_ref t8 = tcp_owner(8);
    uint32_t t = post(8, t8);
    udp_take_offers(&ws[0]);
    udp_offer_cancel(&e, t);
    struct conn_ref k[4];
    cr_assert_eq(clients_take_kicks(&ws[0], k, 4), 1);
    cr_assert(k[0].worker == 0 && (k[0].slot & UDP_SLOT_BIT));
    udp_kick(&ws[0], k[0].slot, k[0].gen);
    struct conn_ref kick, c = {1, 88, 1};
    uint64_t dur, gap;
    bool must_kick;
    cr_assert_eq(devseq_claim(&e.devseq, 8, c, 0, &dur, &kick, &must_kick, &gap), 1);
    /* a cancel before worker 0 looked: nothing is made, nothing to end */
    uint32_t u = post(9, tcp_owner(9));
    udp_offer_cancel(&e, u);
    udp_take_offers(&ws[0]);
    cr_assert_eq(clients_take_kicks(&ws[0], k, 4), 0);
}
