/* engine/clients.h — MQTT client ids connected now, across all workers.
 *
 * A CONNECT whose client id is already connected for the same device takes
 * over: the older connection is ended [MQTT-3.1.4-2] (MQTT 5: DISCONNECT 0x8E,
 * session taken over), wherever it is. The key is (org, device, client id), so
 * one device's id never reaches another device's, let alone another org's,
 * connection. The older connection may live on another worker: it is asked
 * through that worker's mailbox (woken by its eventfd) and ended there, by its
 * own thread. One lock guards the table and the mailboxes: it is taken per
 * CONNECT and per close of a registered connection, never per message.
 */
#ifndef SLUICE_ENGINE_CLIENTS_H
#define SLUICE_ENGINE_CLIENTS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/worker.h"

/* Longest client id registered (sessions refuse longer ones at CONNECT). */
#define CLIENTS_ID_MAX 256u

int clients_init(struct clients *cl);
void clients_free(struct clients *cl);

/* Registers (org, device, id) as held by ref. Returns 1 with *prev set when a
 * connection held it before (the caller kicks it with clients_kick), 0 when it
 * was free, -ENOMEM. */
int clients_claim(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id, size_t n,
                  struct conn_ref ref, struct conn_ref *prev);

/* Forgets (org, device, id) if ref still holds it (a newer holder stays). */
void clients_release(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                     size_t n, struct conn_ref ref);

/* Asks ref's worker to end that connection (if it is still the same one). */
void clients_kick(struct sluice_engine *e, struct conn_ref ref);

/* Takes up to cap kicks addressed to w (its own thread). Returns how many. */
size_t clients_take_kicks(struct worker *w, struct conn_ref *out, size_t cap);

#endif
