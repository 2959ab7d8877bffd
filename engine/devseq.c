/* engine/devseq.c — the frame protocol's per-device durable marks and live
 * connections; see devseq.h. */
#include "engine/devseq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct devseq_entry {
    uint32_t device;   /* 0: an empty slot (device ids start at 1) */
    uint32_t inflight; /* commits submitted and not completed */
    uint64_t durable;
    struct conn_ref owner;
    bool owned;
    bool kicked; /* the owner was asked to end (once) */
    bool broken; /* a commit failed: durable stays until inflight is 0 */
};

int devseq_init(struct devseq *d)
{
    memset(d, 0, sizeof *d);
    return pthread_mutex_init(&d->lock, NULL) ? -ENOMEM : 0;
}

void devseq_free(struct devseq *d)
{
    free(d->v);
    d->v = NULL;
    d->cap = d->n = 0;
    pthread_mutex_destroy(&d->lock);
}

static uint32_t home(uint32_t device, uint32_t cap)
{
    return (device * 2654435761u) & (cap - 1); /* Knuth's multiplicative hash */
}

/* device's entry, or NULL (under the lock). */
static struct devseq_entry *find(struct devseq *d, uint32_t device)
{
    if (!d->cap) return NULL;
    for (uint32_t i = home(device, d->cap);; i = (i + 1) & (d->cap - 1)) {
        if (d->v[i].device == device) return &d->v[i];
        if (!d->v[i].device) return NULL;
    }
}

/* device's entry, made if new (under the lock); NULL when memory ran out.
 * Entries are never removed: one per device that ever sent frames. */
static struct devseq_entry *get(struct devseq *d, uint32_t device)
{
    struct devseq_entry *e = find(d, device);
    if (e) return e;
    if ((d->n + 1) * 2 > d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 1024;
        struct devseq_entry *v = calloc(cap, sizeof *v);
        if (!v) return NULL;
        for (uint32_t j = 0; j < d->cap; j++) {
            if (!d->v[j].device) continue;
            uint32_t i = home(d->v[j].device, cap);
            while (v[i].device)
                i = (i + 1) & (cap - 1);
            v[i] = d->v[j];
        }
        free(d->v);
        d->v = v;
        d->cap = cap;
    }
    uint32_t i = home(device, d->cap);
    while (d->v[i].device)
        i = (i + 1) & (d->cap - 1);
    d->v[i] = (struct devseq_entry){.device = device};
    d->n++;
    return &d->v[i];
}

int devseq_seed(struct devseq *d, uint32_t device, uint64_t seq)
{
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = get(d, device);
    if (e && seq > e->durable) e->durable = seq;
    pthread_mutex_unlock(&d->lock);
    return e ? 0 : -ENOMEM;
}

uint64_t devseq_durable(struct devseq *d, uint32_t device)
{
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = find(d, device);
    uint64_t v = e ? e->durable : 0;
    pthread_mutex_unlock(&d->lock);
    return v;
}

static bool same_ref(struct conn_ref a, struct conn_ref b)
{
    return a.worker == b.worker && a.slot == b.slot && a.gen == b.gen;
}

int devseq_claim(struct devseq *d, uint32_t device, struct conn_ref me, uint64_t next_seq,
                 uint64_t *durable, struct conn_ref *kick, bool *must_kick, uint64_t *gap)
{
    int rc;
    *must_kick = false;
    *gap = 0;
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = get(d, device);
    if (!e) {
        rc = -ENOMEM;
        goto done;
    }
    if (e->owned && !same_ref(e->owner, me)) {
        if (!e->kicked) {
            e->kicked = true;
            *kick = e->owner;
            *must_kick = true;
        }
        rc = 0;
        goto done;
    }
    if (e->inflight) { /* the older connection's last commits */
        rc = 0;
        goto done;
    }
    e->owned = true;
    e->kicked = false;
    e->owner = me;
    e->broken = false;
    if (next_seq > e->durable + 1) {
        *gap = next_seq - 1 - e->durable;
        e->durable = next_seq - 1;
    }
    *durable = e->durable;
    rc = 1;
done:
    pthread_mutex_unlock(&d->lock);
    return rc;
}

bool devseq_hand(struct devseq *d, uint32_t device, struct conn_ref from, struct conn_ref to,
                 uint64_t *durable)
{
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = find(d, device);
    bool ok = e && e->owned && !e->kicked && same_ref(e->owner, from);
    if (ok) {
        e->owner = to;
        *durable = e->durable;
    }
    pthread_mutex_unlock(&d->lock);
    return ok;
}

void devseq_release(struct devseq *d, uint32_t device, struct conn_ref me)
{
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = find(d, device);
    if (e && e->owned && same_ref(e->owner, me)) {
        e->owned = false;
        e->kicked = false;
    }
    pthread_mutex_unlock(&d->lock);
}

int devseq_submit(struct devseq *d, uint32_t device, uint32_t count)
{
    int rc = -EIO;
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = find(d, device);
    if (e && !e->broken) {
        e->inflight++;
        rc = 0;
    }
    (void)count;
    pthread_mutex_unlock(&d->lock);
    return rc;
}

void devseq_done(struct devseq *d, uint32_t device, uint32_t count, int err)
{
    pthread_mutex_lock(&d->lock);
    struct devseq_entry *e = find(d, device);
    if (e && e->inflight) {
        e->inflight--;
        if (err)
            e->broken = true;
        else if (!e->broken)
            e->durable += count;
        if (!e->inflight && !e->owned) e->broken = false;
    }
    pthread_mutex_unlock(&d->lock);
}

void devseq_orphan_durable(struct worker *w, uint64_t ticket, int err)
{
    devseq_done(&w->eng->devseq, (uint32_t)ticket, (uint32_t)(ticket >> 32) & DEVSEQ_COUNT_MAX,
                err);
}
