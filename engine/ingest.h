/* engine/ingest.h — the protocol-neutral step from authenticated readings to
 * a log batch.
 *
 * A session that has a request's readings (HTTP body elements, an MQTT
 * PUBLISH, frames) for one (device, org) opens a transaction, adds each
 * reading with its metadata, and commits: the readings join the org's filling
 * batch and the session gets a ticket — its cookie comes back through its
 * durable op once they are on disk (or failed). A request is all or nothing:
 * any error while adding, and the session aborts, leaving no trace in the log.
 */
#ifndef SLUICE_ENGINE_INGEST_H
#define SLUICE_ENGINE_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/commit.h"
#include "engine/worker.h"

struct conn;

/* What a protocol knows about a reading besides its payload. */
struct ingest_meta {
    uint8_t proto;     /* enum record_proto */
    uint8_t ctype;     /* enum record_ctype */
    uint8_t flags;     /* RECORD_F_RETAIN, RECORD_F_WILL */
    const char *topic; /* MQTT topic or NULL */
    uint16_t topic_len;
    uint64_t device_ts_ns; /* the device's own timestamp, 0 when none */
    uint64_t device_seq;   /* the device's own sequence number (frames), 0 when none */
};

struct ingest_txn {
    struct worker *w;
    struct commit_log *log;
    struct commit_mark mark;
    uint32_t device, org;
    uint64_t recv_ns;
    size_t readings;
};

/* Largest record bytes (headers included) one request may add: anything
 * larger can never be stored and is refused whole (HTTP 413). */
#define INGEST_REQUEST_MAX (64u << 20)

/* Opens a transaction for readings of (device, org), received now. Returns 0
 * or -ENOMEM. */
int ingest_begin(struct worker *w, uint32_t org, uint32_t device, struct ingest_txn *t);

/* Adds one reading. Returns 0; -EMSGSIZE when this reading is larger than a
 * record may hold; -E2BIG when the request grew past INGEST_REQUEST_MAX
 * (both: refuse the request as too large, never retry); -ENOMEM. After an
 * error the caller aborts. */
int ingest_add(struct ingest_txn *t, const struct ingest_meta *m, const void *payload, size_t n);

/* Commits the transaction: its readings wait for the batch's fdatasync and
 * the connection's session gets durable(cookie, err) then (c NULL: no
 * connection, w->orphan_durable gets the cookie: UDP sessions). A transaction
 * without readings is simply closed (nothing to wait for: returns 1).
 * Returns 0 (waiting), 1 (nothing to wait for), or -ENOMEM (aborted). */
int ingest_commit(struct ingest_txn *t, const struct conn *c, uint64_t cookie);

/* After ingest_commit returned 0: the same batch's outcome also goes to
 * w->orphan_durable(cookie, err), whether the connection is still there or
 * not (conn.h CONN_SLOT_NONE). Returns 0 or -ENOMEM (then only the
 * connection hears of it). */
int ingest_notify(struct ingest_txn *t, uint64_t cookie);
/* A reading of a device's own numbered stream (the frame protocol, TCP and
 * UDP): recorded with its sequence number and the device's time (ms, 0:
 * none), into t, which is opened for (org, device) first when *open is
 * false. Returns 0, -EMSGSIZE (over --max-body or a record's limit: refuse
 * it, never retry), or -ENOMEM / -errno. */
int ingest_add_numbered(struct worker *w, uint32_t org, uint32_t device, struct ingest_txn *t,
                        bool *open, uint8_t proto, uint64_t seq, uint64_t dev_ms,
                        const void *payload, size_t n);

/* A payload's content type as the non-HTTP protocols record it: JSON when
 * it is one JSON value, else opaque bytes. */
uint8_t ingest_ctype(const void *payload, size_t n);

/* Takes back everything the transaction added. */
void ingest_abort(struct ingest_txn *t);

/* False while the worker's bytes waiting for commit are at --max-pending-bytes:
 * sessions wait (conn_wait_room) before adding more. */
bool ingest_has_room(const struct worker *w);

#endif
