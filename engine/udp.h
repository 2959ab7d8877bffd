/* engine/udp.h — the frame protocol over UDP (docs/frame-protocol.md §6),
 * served by worker 0 alone.
 *
 * One socket, one multishot recvmsg into a provided buffer ring of its own.
 * Handshakes are stateless (the CHALLENGE's nonce is a MAC over the HELLO and
 * its source, so a forged address leaves nothing behind); a completed one
 * makes a session named by its session id, which claims the device like a
 * TCP connection does (engine/devseq.h) and stores readings in order, each
 * datagram's as one transaction of the worker's group commit. Its commits'
 * outcome comes back through the orphan waiter (ticket with DEVSEQ_UDP) and
 * the ACK datagrams leave at the end of the loop turn, sent directly (a
 * datagram that the socket buffer cannot take is dropped: the device resends).
 *
 * Why worker 0 alone: a device's datagrams must meet its session, and a
 * device behind NAT may change its source port between datagrams, which
 * SO_REUSEPORT would hash to another worker. One core takes a few hundred
 * thousand datagrams a second; batching readings into datagrams is how a
 * device gets more through.
 */
#ifndef SLUICE_ENGINE_UDP_H
#define SLUICE_ENGINE_UDP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/worker.h"
#include "protocols/frame.h"
#include "protocols/frame_auth.h"

/* The largest datagram taken (WELCOME's max_frame) and a session's window. */
#define UDP_DGRAM_MAX 8192u
#define UDP_WINDOW    4096u
/* A UDP session's name in conn_ref.slot (kicks from devseq claims). */
#define UDP_SLOT_BIT (1u << 31)
/* The orphan ticket of a UDP session's commit carries this besides DEVSEQ_TICKET. */
#define DEVSEQ_UDP (1ull << 62)

/* Worker 0, at start: the buffer ring and session table for the socket in
 * w->listen_fd[LISTENER_UDP], and its first recvmsg. Returns 0 or a SLUICE_E*
 * code (printed). */
int udp_start(struct worker *w);
void udp_on_recv(struct worker *w, struct io_uring_cqe *cqe);
/* The commit of a session's readings of device finished (its orphan waiter). */
void udp_durable(struct worker *w, uint32_t device, int err);
/* A newer connection of the device took over: the session ends (ERROR 0x06). */
void udp_kick(struct worker *w, uint32_t slot, uint32_t gen);
/* End of a loop turn: the ACKs due leave. */
void udp_flush(struct worker *w);
/* Every tick: idle sessions expire (once a second). */
void udp_tick(struct worker *w);
/* The engine stops: no more datagrams are read; sessions end with ERROR 0x08
 * once their commits completed. */
void udp_drain(struct worker *w);
void udp_free(struct worker *w);

/* ---- sessions made over TCP (docs/frame-protocol.md §6, HELLO flags bit 1) ----
 *
 * A TCP connection, on any worker, runs the handshake, claims the device
 * (devseq) and derives the session's key and id; the session itself must live
 * in worker 0's table. The connection posts it to a mailbox (one lock, at
 * most UDP_MAIL_MAX entries, no allocation after start) and wakes worker 0,
 * which at its next wake makes the session and takes the device over from
 * the connection in one step (devseq_hand), then wakes the connection's
 * worker; the connection finds the answer and sends WELCOME or an ERROR. The
 * key is in the mailbox only until worker 0 took it (wiped then, and on
 * cancel). A connection that goes before its answer cancels: a session made
 * for it meanwhile is ended, so none is left that no device knows of. */
#define UDP_MAIL_MAX 256u

struct udp_offer {
    struct conn_ref from; /* the TCP connection, owner of the device now */
    uint32_t device, org;
    uint8_t token_id[FRAME_TOKEN_ID_LEN];
    uint8_t sid[8];
    uint8_t key[FRAME_KEY_LEN];
};

enum udp_answer {
    UDP_PENDING = 0, /* worker 0 has not looked yet */
    UDP_MADE,        /* the session is live, the device its own: WELCOME */
    UDP_FULL,        /* the session table (or the used-handshake table) is full: 0x05 */
    UDP_REVOKED,     /* the token no longer names the device: 0x02 */
    UDP_GONE,        /* the connection no longer owns the device (a newer one asked): 0x06 */
    UDP_STOPPING,    /* the engine is draining: 0x08 */
};

/* Engine start with --udp, and its end. Returns 0 or SLUICE_ENOMEM. */
int udp_mail_init(struct sluice_engine *e);
void udp_mail_free(struct sluice_engine *e);

/* Posts o (any worker; its key is wiped here whatever happens) and wakes
 * worker 0. Returns 0 with *ticket naming the entry, -ENOSPC when the
 * mailbox is full, -ENOTCONN when the engine serves no UDP. */
int udp_offer_post(struct sluice_engine *e, struct udp_offer *o, uint32_t *ticket);
/* The answer to ticket: UDP_PENDING, or the answer (the entry is freed then:
 * ask once); for UDP_MADE *durable is the device's mark and *session the
 * session's name (for clients_kick, should the connection not WELCOME it). */
enum udp_answer udp_offer_answer(struct sluice_engine *e, uint32_t ticket, uint64_t *durable,
                                 struct conn_ref *session);
/* The connection gives up on ticket (it ends, or failed): the entry is freed,
 * and a session made for it is ended (ERROR 0x06 would go to no address). */
void udp_offer_cancel(struct sluice_engine *e, uint32_t ticket);
/* Worker 0, at its wakes and ticks: makes the sessions posted. */
void udp_take_offers(struct worker *w);
/* Any worker, at its wakes: up to cap connections of w whose answer came
 * (to run again, conn_wake). Returns how many. */
size_t udp_take_answers(struct worker *w, struct conn_ref *out, size_t cap);

#endif
