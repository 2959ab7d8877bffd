/* engine/clients.h — MQTT client ids connected now, across all workers, and
 * the sessions kept between their connections.
 *
 * A CONNECT whose client id is already connected for the same device takes
 * over: the older connection is ended [MQTT-3.1.4-2] (MQTT 5: DISCONNECT 0x8E,
 * session taken over), wherever it is. The key is (org, device, client id), so
 * one device's id never reaches another device's, let alone another org's,
 * connection. The older connection may live on another worker: it is asked
 * through that worker's mailbox (woken by its eventfd) and ended there, by its
 * own thread. One lock guards the table and the mailboxes: it is taken per
 * CONNECT and per close of a registered connection, and per QoS 2 exchange of
 * a kept session, never per message otherwise.
 *
 * Kept sessions (3.1.1 clean session 0, 5.0 session expiry > 0): the entry
 * outlives its connection until the expiry, holding the packet ids of QoS 2
 * exchanges whose reading is durable and whose PUBREL has not come. Changes
 * are written to the store (DB mqtt_sessions) by the storage helper thread; an
 * acknowledgement that reports one (PUBREC: "held", PUBCOMP: "released"; a
 * CONNACK that replaces a session the store still holds) waits for that write,
 * so a restart, even kill -9, finds every id a client was told of and no id
 * of a session that ended. The store is read back at start-up. Entries that
 * the store still has a record of stay (as tombstones) until the write that
 * deletes it. The gaps, both a reading stored twice, never one lost: kill -9
 * after a QoS 2 reading was synced and before its id was written (the client
 * never had the PUBREC and sends the PUBLISH again), and a resend that arrives
 * while the first copy is still being committed.
 */
#ifndef SLUICE_ENGINE_CLIENTS_H
#define SLUICE_ENGINE_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/worker.h"

/* Longest client id registered (sessions refuse longer ones at CONNECT). */
#define CLIENTS_ID_MAX 256u
/* QoS 2 ids a kept session holds (as many as a connection may, MQTT_QOS2_HELD_MAX). */
#define CLIENTS_QOS2_MAX 256u
/* Sessions kept at once (connected or not), in all and per device (one
 * device cycling client ids cannot take every org's share): past either, a
 * CONNECT asking for one is refused (5.0 0x97 quota exceeded, 3.1.1 0x03
 * server unavailable). */
#define CLIENTS_KEPT_MAX        100000u
#define CLIENTS_KEPT_PER_DEVICE 128u
/* The longest a session is kept after its connection ends (7 days); 3.1.1
 * clean-session-0 sessions, which name no expiry, get this. */
#define CLIENTS_EXPIRY_MAX (7u * 24u * 3600u)

int clients_init(struct clients *cl);
void clients_free(struct clients *cl);

struct clients_claim {
    struct conn_ref prev; /* took_over: the connection to kick (clients_kick) */
    bool took_over;
    bool present;      /* a kept session resumed: CONNACK session present */
    uint32_t epoch;    /* names this session's state in the calls below */
    uint16_t nids;     /* QoS 2 exchanges it holds (they count as in flight) */
    uint64_t wait_seq; /* > 0: the CONNACK waits for this change to be written (what
                        * the store held of an older session is being deleted) */
};

/* Registers (org, device, id) as held by ref. clean: any kept state is
 * discarded (clean session / clean start). expiry_s: how long to keep the
 * session after the connection ends (0: not kept; capped by the caller).
 * Returns 0 with *out filled, -ENOSPC (CLIENTS_KEPT_MAX kept already, or
 * CLIENTS_KEPT_PER_DEVICE for this device), -ENOMEM. */
int clients_claim(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id, size_t n,
                  struct conn_ref ref, bool clean, uint32_t expiry_s, struct clients_claim *out);

/* The connection ends: a kept session stays until its expiry, any other is
 * forgotten. Only if ref still holds it (a newer holder stays). */
void clients_release(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                     size_t n, struct conn_ref ref);

/* MQTT 5 DISCONNECT with a Session Expiry Interval: the new expiry. */
void clients_set_expiry(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                        size_t n, struct conn_ref ref, uint32_t expiry_s);

/* QoS 2 exchanges of a kept session, named by its epoch. An id is PENDING
 * from its PUBLISH until its reading's commit completes, then HELD until its
 * PUBREL; only HELD ids are written to the store.
 * begin: a QoS 2 PUBLISH. NEW: store it (a PENDING id is recorded, unless one
 * is already, then it commits again: a resend during the first copy's commit);
 * HELD: a resend, answer PUBREC once change *seq is written (0: it is) and do
 * not store; GONE: not this session any more, or no room: store it untracked. */
enum clients_qos2 { CLIENTS_QOS2_NEW, CLIENTS_QOS2_HELD, CLIENTS_QOS2_GONE };
enum clients_qos2 clients_qos2_begin(struct sluice_engine *e, uint32_t epoch, uint16_t pid,
                                     uint64_t *seq);
/* The reading of pid committed (err 0: PENDING -> HELD) or failed (the id is
 * dropped). Called by the connection's durable op and, so that a connection
 * gone meanwhile loses nothing, by a waiter of its own on the same batch (the
 * second call changes nothing). Returns the change to wait for before PUBREC
 * (0: none unwritten). */
uint64_t clients_qos2_durable(struct sluice_engine *e, uint32_t epoch, uint16_t pid, int err);
/* PUBREL: true when pid was held; *seq the change to wait for before PUBCOMP
 * (0: none; UINT64_MAX: it cannot be written, out of memory). */
bool clients_qos2_release(struct sluice_engine *e, uint32_t epoch, uint16_t pid, uint64_t *seq);
/* The cookie of that second waiter (commit_wait with slot CONN_SLOT_NONE), and
 * what conn_durable calls for it (worker->orphan_durable). */
uint64_t clients_qos2_ticket(uint32_t epoch, uint16_t pid);
void clients_orphan_durable(struct worker *w, uint64_t ticket, int err);

/* The connection (slot, gen) on w waits for change seq to be in the store:
 * then conn_durable(slot, gen, cookie, 0). Returns 0 or -ENOMEM. */
int clients_wait(struct worker *w, uint32_t slot, uint32_t gen, uint64_t cookie, uint64_t seq);
/* End of a loop turn: hands the waited-for changes to the helper thread. */
void clients_submit(struct worker *w);
/* True while a write of w's is with the helper (the worker waits for it). */
bool clients_busy(const struct worker *w);

/* Writes every change since the last write to the store (blocking: the
 * helper thread, the control thread, after the workers stopped). 0 or -errno. */
int clients_write(struct sluice_engine *e);
/* Start-up: the kept sessions in the store, as detached entries (expired ones
 * are deleted). Returns how many were loaded, or -errno. */
int clients_load(struct sluice_engine *e);
/* Forgets detached sessions whose expiry passed (the control thread). */
void clients_expire(struct sluice_engine *e);

/* Asks ref's worker to end that connection (if it is still the same one). */
void clients_kick(struct sluice_engine *e, struct conn_ref ref);

/* Takes up to cap kicks addressed to w (its own thread). Returns how many. */
size_t clients_take_kicks(struct worker *w, struct conn_ref *out, size_t cap);

#endif
