/* engine/ingest.c — authenticated readings into the org's filling batch; see
 * ingest.h. */
#include "engine/ingest.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "engine/conn.h"
#include "protocols/json.h"

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int ingest_begin(struct worker *w, uint32_t org, uint32_t device, struct ingest_txn *t)
{
    memset(t, 0, sizeof *t);
    t->w = w;
    t->org = org;
    t->device = device;
    t->recv_ns = realtime_ns();
    int rc = commit_log_get(w, org, &t->log);
    if (rc) return rc;
    commit_mark(t->log, &t->mark);
    return 0;
}

int ingest_add(struct ingest_txn *t, const struct ingest_meta *m, const void *payload, size_t n)
{
    if (n + m->topic_len > RECORD_MAX_BODY) return -EMSGSIZE;
    if (commit_since(t->log, &t->mark) + RECORD_HEADER_SIZE + m->topic_len + n > INGEST_REQUEST_MAX)
        return -E2BIG;
    struct record r = {.flags = m->flags,
                       .proto = m->proto,
                       .ctype = m->ctype,
                       .device = t->device,
                       .recv_ns = t->recv_ns,
                       .device_ts_ns = m->device_ts_ns,
                       .device_seq = m->device_seq};
    int rc = commit_append(t->log, &r, m->topic, m->topic_len, payload, n);
    if (rc == -E2BIG) return -EMSGSIZE;
    if (rc) return rc;
    t->readings++;
    return 0;
}

int ingest_commit(struct ingest_txn *t, const struct conn *c, uint64_t cookie)
{
    if (!t->readings) return 1;
    size_t bytes = commit_since(t->log, &t->mark);
    int rc = c ? commit_wait(t->w, t->log, c->slot, c->gen, cookie, bytes)
               : commit_wait(t->w, t->log, CONN_SLOT_NONE, 0, cookie, bytes);
    if (rc) {
        ingest_abort(t);
        return rc;
    }
    worker_count(&t->w->st.readings, t->readings);
    return 0;
}

int ingest_notify(struct ingest_txn *t, uint64_t cookie)
{
    return commit_wait(t->w, t->log, CONN_SLOT_NONE, 0, cookie, 0);
}

int ingest_add_numbered(struct worker *w, uint32_t org, uint32_t device, struct ingest_txn *t,
                        bool *open, uint8_t proto, uint64_t seq, uint64_t dev_ms,
                        const void *payload, size_t n)
{
    if (n > w->eng->cfg.max_body) return -EMSGSIZE;
    if (!*open) {
        int rc = ingest_begin(w, org, device, t);
        if (rc) return rc;
        *open = true;
    }
    struct ingest_meta m = {
        .proto = proto,
        .ctype = ingest_ctype(payload, n),
        .device_ts_ns = dev_ms * 1000000u,
        .device_seq = seq,
    };
    int rc = ingest_add(t, &m, payload, n);
    return rc == -E2BIG ? -EMSGSIZE : rc;
}

uint8_t ingest_ctype(const void *payload, size_t n)
{
    struct json_error jerr;
    return n && json_validate(payload, n, &jerr) == 0 ? RECORD_CTYPE_JSON : RECORD_CTYPE_OCTET;
}

void ingest_abort(struct ingest_txn *t)
{
    if (t->log) commit_rollback(t->log, &t->mark);
    t->readings = 0;
}

bool ingest_has_room(const struct worker *w)
{
    return w->pending_bytes < w->eng->cfg.max_pending_bytes;
}
