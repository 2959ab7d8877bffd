/* engine/clients.c — connected MQTT client ids and the takeover mailboxes;
 * see clients.h. */
#include "engine/clients.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "engine/conn.h"
#include "engine/iojob.h"
#include "storage/store.h"

#define CLIENTS_BUCKETS 4096u
/* stored value: u32 org, u32 expiry_s, u64 expires_ms (0: connected), u16 n, u16 ids[n] */
#define VALUE_FIXED 18u

struct client_entry {
    struct client_entry *next;
    uint32_t org, device;
    struct conn_ref ref; /* the connection holding it, when attached */
    bool attached;
    bool dirty;          /* its key is on the dirty list */
    uint32_t expiry_s;   /* > 0: kept after the connection ends */
    uint32_t epoch;      /* a clean start begins a new one */
    uint64_t expires_ms; /* detached and kept: when it ends (CLOCK_REALTIME) */
    uint16_t nids;
    uint16_t *ids; /* CLIENTS_QOS2_MAX, allocated at the first QoS 2 id held */
    uint16_t n;
    char id[]; /* n bytes */
};

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int clients_init(struct clients *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->b = calloc(CLIENTS_BUCKETS, sizeof *cl->b);
    if (!cl->b) return -ENOMEM;
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->write_lock, NULL);
    atomic_init(&cl->written_seq, 0);
    cl->ready = true;
    return 0;
}

static void entry_free(struct client_entry *c)
{
    free(c->ids);
    free(c);
}

void clients_free(struct clients *cl)
{
    if (!cl->ready) return;
    for (size_t i = 0; i < CLIENTS_BUCKETS; i++) {
        struct client_entry *c = cl->b[i];
        while (c) {
            struct client_entry *next = c->next;
            entry_free(c);
            c = next;
        }
    }
    free(cl->b);
    free(cl->dirty);
    pthread_mutex_destroy(&cl->lock);
    pthread_mutex_destroy(&cl->write_lock);
    cl->ready = false;
}

static size_t bucket(uint32_t org, uint32_t device, const void *id, size_t n)
{
    uint8_t key[8 + CLIENTS_ID_MAX];
    memcpy(key, &org, 4);
    memcpy(key + 4, &device, 4);
    memcpy(key + 8, id, n);
    return (size_t)(XXH3_64bits(key, 8 + n) % CLIENTS_BUCKETS);
}

/* The link pointing at the entry for the key, or at the NULL ending its chain. */
static struct client_entry **find(struct clients *cl, uint32_t org, uint32_t device,
                                  const void *id, size_t n)
{
    struct client_entry **pp = &cl->b[bucket(org, device, id, n)];
    while (*pp && !((*pp)->org == org && (*pp)->device == device && (*pp)->n == n &&
                    memcmp((*pp)->id, id, n) == 0))
        pp = &(*pp)->next;
    return pp;
}

static struct client_entry *entry_new(uint32_t org, uint32_t device, const void *id, size_t n)
{
    struct client_entry *c = calloc(1, sizeof *c + n);
    if (!c) return NULL;
    c->org = org;
    c->device = device;
    c->n = (uint16_t)n;
    memcpy(c->id, id, n);
    return c;
}

/* Puts c's key on the dirty list (under the lock). Returns the change's
 * number, 0 when the list cannot grow (the change waits for a later one). */
static uint64_t mark(struct clients *cl, struct client_entry *c)
{
    if (!c->dirty) {
        size_t need = 2 + 8 + c->n;
        if (cl->ndirty + need > cl->dirty_cap) {
            size_t cap = cl->dirty_cap ? cl->dirty_cap * 2 : 4096;
            while (cap < cl->ndirty + need)
                cap *= 2;
            uint8_t *p = realloc(cl->dirty, cap);
            if (!p) return 0;
            cl->dirty = p;
            cl->dirty_cap = cap;
        }
        uint8_t *p = cl->dirty + cl->ndirty;
        memcpy(p, &c->n, 2);
        memcpy(p + 2, &c->org, 4);
        memcpy(p + 6, &c->device, 4);
        memcpy(p + 10, c->id, c->n);
        cl->ndirty += need;
        c->dirty = true;
    }
    return ++cl->dirty_seq;
}

/* Drops what a kept session held (a clean start, an expiry set to 0). */
static void forget_state(struct clients *cl, struct client_entry *c)
{
    if (c->expiry_s || c->nids) mark(cl, c);
    if (c->expiry_s) cl->kept--;
    c->expiry_s = 0;
    c->nids = 0;
}

int clients_claim(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id, size_t n,
                  struct conn_ref ref, bool clean, uint32_t expiry_s, struct clients_claim *out)
{
    struct clients *cl = &e->clients;
    if (n > CLIENTS_ID_MAX) return -EINVAL;
    memset(out, 0, sizeof *out);
    uint64_t now = realtime_ms();
    pthread_mutex_lock(&cl->lock);
    struct client_entry **pp = find(cl, org, device, id, n);
    struct client_entry *c = *pp;
    int rc = 0;
    if (c && !c->attached && c->expiry_s && c->expires_ms <= now) forget_state(cl, c); /* expired */
    bool had = c && c->expiry_s;
    if (expiry_s && !had && cl->kept >= CLIENTS_KEPT_MAX) {
        rc = -ENOSPC;
        goto out;
    }
    if (!c) {
        if (!(c = entry_new(org, device, id, n))) {
            rc = -ENOMEM;
            goto out;
        }
        *pp = c;
    }
    if (c->attached) {
        out->prev = c->ref;
        out->took_over = true;
    }
    if (clean || !had) {
        forget_state(cl, c);
        c->epoch = ++cl->epochs; /* engine-wide: an old connection's late call never matches */
    } else {
        out->present = true;
        cl->kept--; /* counted again below */
    }
    c->ref = ref;
    c->attached = true;
    c->expires_ms = 0;
    c->expiry_s = expiry_s;
    if (expiry_s) {
        cl->kept++;
        mark(cl, c); /* kept: stored as connected, so a restart gives it its full expiry */
    }
    out->epoch = c->epoch;
    out->nids = c->nids;
out:
    pthread_mutex_unlock(&cl->lock);
    return rc;
}

static bool holds(const struct client_entry *c, struct conn_ref ref)
{
    return c && c->attached && c->ref.worker == ref.worker && c->ref.slot == ref.slot &&
           c->ref.gen == ref.gen;
}

void clients_release(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                     size_t n, struct conn_ref ref)
{
    struct clients *cl = &e->clients;
    if (n > CLIENTS_ID_MAX) return;
    uint64_t now = realtime_ms();
    pthread_mutex_lock(&cl->lock);
    struct client_entry **pp = find(cl, org, device, id, n);
    struct client_entry *c = *pp;
    if (holds(c, ref)) {
        if (c->expiry_s) {
            c->attached = false;
            c->expires_ms = now + (uint64_t)c->expiry_s * 1000u;
            mark(cl, c);
        } else {
            *pp = c->next; /* a key still on the dirty list is deleted from the store */
            entry_free(c);
        }
    }
    pthread_mutex_unlock(&cl->lock);
}

void clients_set_expiry(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                        size_t n, struct conn_ref ref, uint32_t expiry_s)
{
    struct clients *cl = &e->clients;
    if (n > CLIENTS_ID_MAX) return;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = *find(cl, org, device, id, n);
    if (holds(c, ref) && c->expiry_s != expiry_s) {
        if (!expiry_s) {
            forget_state(cl, c);
        } else {
            if (!c->expiry_s) cl->kept++;
            c->expiry_s = expiry_s;
            mark(cl, c);
        }
    }
    pthread_mutex_unlock(&cl->lock);
}

/* The session of epoch, under the lock; NULL when it is not (any more): a
 * clean start began another. (A resumed session with expiry 0 holds its ids
 * while connected, and is not kept after.) */
static struct client_entry *kept(struct clients *cl, uint32_t org, uint32_t device,
                                 const void *id, size_t n, uint32_t epoch)
{
    if (n > CLIENTS_ID_MAX) return NULL;
    struct client_entry *c = *find(cl, org, device, id, n);
    return c && c->epoch == epoch ? c : NULL;
}

static int id_index(const struct client_entry *c, uint16_t pid)
{
    for (unsigned i = 0; i < c->nids; i++)
        if (c->ids[i] == pid) return (int)i;
    return -1;
}

bool clients_qos2_held(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                       size_t n, uint32_t epoch, uint16_t pid)
{
    struct clients *cl = &e->clients;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = kept(cl, org, device, id, n, epoch);
    bool held = c && id_index(c, pid) >= 0;
    pthread_mutex_unlock(&cl->lock);
    return held;
}

uint64_t clients_qos2_hold(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                           size_t n, uint32_t epoch, uint16_t pid)
{
    struct clients *cl = &e->clients;
    uint64_t seq = 0;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = kept(cl, org, device, id, n, epoch);
    if (c && !c->ids) c->ids = malloc(CLIENTS_QOS2_MAX * sizeof *c->ids);
    if (c && c->ids && id_index(c, pid) < 0 && c->nids < CLIENTS_QOS2_MAX) {
        c->ids[c->nids++] = pid;
        seq = mark(cl, c);
    }
    pthread_mutex_unlock(&cl->lock);
    return seq;
}

bool clients_qos2_release(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                          size_t n, uint32_t epoch, uint16_t pid, uint64_t *seq)
{
    struct clients *cl = &e->clients;
    *seq = 0;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = kept(cl, org, device, id, n, epoch);
    int i = c ? id_index(c, pid) : -1;
    if (i >= 0) {
        c->ids[i] = c->ids[--c->nids];
        *seq = mark(cl, c);
    }
    pthread_mutex_unlock(&cl->lock);
    return i >= 0;
}

/* ---- the store ---- */

static void put32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* little-endian like the rest of the store's values (x86 and arm64 hosts) */
static size_t encode_value(uint8_t *out, const struct client_entry *c)
{
    memcpy(out, &c->org, 4);
    memcpy(out + 4, &c->expiry_s, 4);
    uint64_t exp = c->attached ? 0 : c->expires_ms;
    memcpy(out + 8, &exp, 8);
    memcpy(out + 16, &c->nids, 2);
    if (c->nids) memcpy(out + VALUE_FIXED, c->ids, c->nids * 2u);
    return VALUE_FIXED + c->nids * 2u;
}

int clients_write(struct sluice_engine *e)
{
    struct clients *cl = &e->clients;
    pthread_mutex_lock(&cl->write_lock);
    pthread_mutex_lock(&cl->lock);
    uint8_t *list = cl->dirty;
    size_t len = cl->ndirty;
    uint64_t seq = cl->dirty_seq;
    cl->dirty = NULL;
    cl->ndirty = cl->dirty_cap = 0;
    size_t nkeys = 0;
    for (size_t off = 0; off < len; nkeys++) {
        uint16_t n;
        memcpy(&n, list + off, 2);
        off += 10u + n;
    }
    /* per key: 4 + n key bytes, then the value */
    size_t room = len + nkeys * (2 + VALUE_FIXED + CLIENTS_QOS2_MAX * 2);
    struct store_kv *ops = nkeys ? malloc(nkeys * sizeof *ops) : NULL;
    uint8_t *buf = nkeys ? malloc(room) : NULL;
    int rc = 0;
    size_t nops = 0;
    if (nkeys && (!ops || !buf)) {
        rc = -ENOMEM; /* the keys stay on the list (their flags are still set): a later write */
        cl->dirty = list;
        cl->ndirty = cl->dirty_cap = len;
        list = NULL;
    } else {
        uint8_t *p = buf;
        for (size_t off = 0; off < len;) {
            uint16_t n;
            uint32_t org, device;
            memcpy(&n, list + off, 2);
            memcpy(&org, list + off + 2, 4);
            memcpy(&device, list + off + 6, 4);
            const uint8_t *id = list + off + 10;
            off += 10u + n;
            struct client_entry *c = *find(cl, org, device, id, n);
            struct store_kv *op = &ops[nops++];
            op->key = p;
            op->klen = 4u + n;
            put32be(p, device);
            memcpy(p + 4, id, n);
            p += 4u + n;
            op->val = p;
            op->vlen = 0; /* gone, or no longer kept: deleted */
            if (c) {
                c->dirty = false;
                if (c->expiry_s) {
                    op->vlen = encode_value(p, c);
                    p += op->vlen;
                }
            }
        }
    }
    pthread_mutex_unlock(&cl->lock);
    if (!rc && nops) {
        rc = store_sessions_apply(e->store, ops, nops);
        if (rc)
            fprintf(stderr, "sluiced: writing MQTT sessions failed: %s\n",
                    store_last_error(e->store));
    }
    if (!rc) atomic_store(&cl->written_seq, seq);
    free(ops);
    free(buf);
    free(list);
    pthread_mutex_unlock(&cl->write_lock);
    return rc;
}

struct load_ctx {
    struct sluice_engine *e;
    uint64_t now;
    int loaded;
};

static int load_one(void *arg, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct load_ctx *x = arg;
    struct clients *cl = &x->e->clients;
    const uint8_t *k = key, *v = val;
    uint16_t nids;
    if (klen < 4 || klen > 4 + CLIENTS_ID_MAX || vlen < VALUE_FIXED) return 0; /* not ours: skip */
    memcpy(&nids, v + 16, 2);
    if (nids > CLIENTS_QOS2_MAX || vlen != VALUE_FIXED + nids * 2u) return 0;
    uint32_t org, expiry;
    uint64_t expires;
    memcpy(&org, v, 4);
    memcpy(&expiry, v + 4, 4);
    memcpy(&expires, v + 8, 8);
    struct client_entry *c = entry_new(org, get32be(k), k + 4, klen - 4);
    if (!c) return -ENOMEM;
    c->expiry_s = expiry < CLIENTS_EXPIRY_MAX ? expiry : CLIENTS_EXPIRY_MAX;
    /* connected when sluiced stopped: its expiry runs from now */
    c->expires_ms = expires ? expires : x->now + (uint64_t)c->expiry_s * 1000u;
    if (nids && !(c->ids = malloc(CLIENTS_QOS2_MAX * sizeof *c->ids))) {
        entry_free(c);
        return -ENOMEM;
    }
    c->nids = nids;
    if (nids) memcpy(c->ids, v + VALUE_FIXED, nids * 2u);
    struct client_entry **pp = find(cl, c->org, c->device, c->id, c->n);
    if (*pp || !c->expiry_s || c->expires_ms <= x->now || cl->kept >= CLIENTS_KEPT_MAX) {
        c->expiry_s = 0; /* expired (or a duplicate): deleted by the next write */
        c->next = NULL;
        mark(cl, c);
        entry_free(c);
        return 0;
    }
    if (!expires) mark(cl, c); /* store the expiry that now runs */
    *pp = c;
    cl->kept++;
    x->loaded++;
    return 0;
}

int clients_load(struct sluice_engine *e)
{
    struct load_ctx x = {.e = e, .now = realtime_ms()};
    pthread_mutex_lock(&e->clients.lock);
    int rc = store_sessions_foreach(e->store, load_one, &x);
    pthread_mutex_unlock(&e->clients.lock);
    if (rc) return rc;
    if (e->clients.ndirty) clients_write(e);
    return x.loaded;
}

void clients_expire(struct sluice_engine *e)
{
    struct clients *cl = &e->clients;
    uint64_t now = realtime_ms();
    pthread_mutex_lock(&cl->lock);
    for (size_t i = 0; i < CLIENTS_BUCKETS; i++) {
        struct client_entry **pp = &cl->b[i];
        while (*pp) {
            struct client_entry *c = *pp;
            if (!c->attached && c->expires_ms <= now) {
                forget_state(cl, c);
                *pp = c->next;
                entry_free(c);
            } else {
                pp = &c->next;
            }
        }
    }
    pthread_mutex_unlock(&cl->lock);
}

/* ---- acknowledgements waiting for a write ---- */

int clients_wait(struct worker *w, uint32_t slot, uint32_t gen, uint64_t cookie, uint64_t seq)
{
    if (w->nswaits == w->swait_cap) {
        uint32_t cap = w->swait_cap ? w->swait_cap * 2 : 64;
        struct session_wait *p = realloc(w->swaits, cap * sizeof *p);
        if (!p) return -ENOMEM;
        w->swaits = p;
        w->swait_cap = cap;
    }
    w->swaits[w->nswaits++] = (struct session_wait){slot, gen, cookie, seq};
    return 0;
}

static void write_job(struct sluice_engine *e, struct iojob *j)
{
    j->rc = clients_write(e);
}

static void write_done(struct worker *w, struct iojob *j)
{
    uint64_t written = atomic_load(&w->eng->clients.written_seq);
    int rc = j->rc;
    free(j);
    w->swrite_busy = false;
    /* in order: the waits of one connection were added in its ack order */
    uint32_t keep = 0;
    for (uint32_t i = 0; i < w->nswaits; i++) {
        struct session_wait sw = w->swaits[i];
        if (sw.seq <= written || rc)
            conn_durable(w, sw.slot, sw.gen, sw.cookie, 0); /* a failed write was said on stderr */
        else
            w->swaits[keep++] = sw;
    }
    w->nswaits = keep;
}

void clients_submit(struct worker *w)
{
    if (!w->nswaits || w->swrite_busy) return;
    struct iojob *j = calloc(1, sizeof *j);
    if (!j) return; /* the next turn tries again */
    j->kind = IOJOB_CALL;
    j->w = w;
    j->call = write_job;
    j->done = write_done;
    w->swrite_busy = true;
    iojob_submit(w->eng, j);
}

bool clients_busy(const struct worker *w)
{
    return w->swrite_busy;
}

void clients_kick(struct sluice_engine *e, struct conn_ref ref)
{
    struct clients *cl = &e->clients;
    if (ref.worker >= e->nworkers) return;
    struct worker *w = &e->workers[ref.worker];
    pthread_mutex_lock(&cl->lock);
    bool queued = false;
    if (w->nkicks == w->kick_cap) {
        uint32_t cap = w->kick_cap ? w->kick_cap * 2 : 16;
        struct conn_ref *p = realloc(w->kicks, cap * sizeof *p);
        if (p) {
            w->kicks = p;
            w->kick_cap = cap;
        }
    }
    if (w->nkicks < w->kick_cap) {
        w->kicks[w->nkicks++] = ref;
        queued = true;
    }
    pthread_mutex_unlock(&cl->lock);
    uint64_t one = 1;
    if (queued && write(w->wake_fd, &one, sizeof one) < 0) {
        /* an eventfd counter does not overflow in practice */
    }
}

size_t clients_take_kicks(struct worker *w, struct conn_ref *out, size_t cap)
{
    struct clients *cl = &w->eng->clients;
    pthread_mutex_lock(&cl->lock);
    size_t n = w->nkicks < cap ? w->nkicks : cap;
    if (n) {
        memcpy(out, w->kicks, n * sizeof *out);
        memmove(w->kicks, w->kicks + n, (w->nkicks - n) * sizeof *out);
        w->nkicks -= (uint32_t)n;
    }
    pthread_mutex_unlock(&cl->lock);
    return n;
}
