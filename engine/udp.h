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

#endif
