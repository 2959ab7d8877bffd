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
#define EPOCH_BUCKETS   4096u
#define DEVICE_BUCKETS  1024u
/* stored value: u32 org, u32 expiry_s, u64 expires_ms (0: connected), u16 n, u16 ids[n] */
#define VALUE_FIXED 18u

enum hold_state { HOLD_PENDING = 1, HOLD_HELD = 2 };

struct hold {
    uint16_t pid;
    uint8_t state; /* PENDING: its reading's commit is outstanding; HELD: durable */
};

struct client_entry {
    struct client_entry *next;  /* in its key's bucket */
    struct client_entry *enext; /* in its epoch's bucket */
    uint32_t org, device;
    struct conn_ref ref; /* the connection holding it, when attached */
    bool attached;
    bool dirty;          /* its key is on the dirty list */
    bool stored;         /* the store has a record for its key */
    uint32_t expiry_s;   /* > 0: kept after the connection ends */
    uint32_t epoch;      /* names this session's state; a clean start begins a new one */
    uint64_t expires_ms; /* detached and kept: when it ends (CLOCK_REALTIME) */
    uint16_t nholds;
    struct hold *holds; /* CLIENTS_QOS2_MAX, allocated at the first QoS 2 exchange */
    uint16_t n;
    char id[]; /* n bytes */
};

/* Kept sessions per device, so that one device cannot take every org's share. */
struct device_count {
    struct device_count *next;
    uint32_t device, n;
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
    cl->eb = calloc(EPOCH_BUCKETS, sizeof *cl->eb);
    cl->db = calloc(DEVICE_BUCKETS, sizeof *cl->db);
    if (!cl->b || !cl->eb || !cl->db) {
        free(cl->b);
        free(cl->eb);
        free(cl->db);
        return -ENOMEM;
    }
    pthread_mutex_init(&cl->lock, NULL);
    pthread_mutex_init(&cl->write_lock, NULL);
    atomic_init(&cl->written_seq, 0);
    atomic_init(&cl->kept, 0);
    cl->ready = true;
    return 0;
}

void clients_free(struct clients *cl)
{
    if (!cl->ready) return;
    for (size_t i = 0; i < CLIENTS_BUCKETS; i++) {
        struct client_entry *c = cl->b[i];
        while (c) {
            struct client_entry *next = c->next;
            free(c->holds);
            free(c);
            c = next;
        }
    }
    for (size_t i = 0; i < DEVICE_BUCKETS; i++) {
        struct device_count *d = cl->db[i];
        while (d) {
            struct device_count *next = d->next;
            free(d);
            d = next;
        }
    }
    free(cl->b);
    free(cl->eb);
    free(cl->db);
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
static struct client_entry **find(struct clients *cl, uint32_t org, uint32_t device, const void *id,
                                  size_t n)
{
    struct client_entry **pp = &cl->b[bucket(org, device, id, n)];
    while (*pp && !((*pp)->org == org && (*pp)->device == device && (*pp)->n == n &&
                    memcmp((*pp)->id, id, n) == 0))
        pp = &(*pp)->next;
    return pp;
}

/* ---- the epoch index: a commit's completion names its session by epoch ---- */

static struct client_entry *by_epoch(struct clients *cl, uint32_t epoch)
{
    struct client_entry *c = cl->eb[epoch % EPOCH_BUCKETS];
    while (c && c->epoch != epoch)
        c = c->enext;
    return c;
}

static void epoch_unlink(struct clients *cl, struct client_entry *c)
{
    struct client_entry **pp = &cl->eb[c->epoch % EPOCH_BUCKETS];
    while (*pp && *pp != c)
        pp = &(*pp)->enext;
    if (*pp) *pp = c->enext;
}

static void new_epoch(struct clients *cl, struct client_entry *c)
{
    if (c->epoch) epoch_unlink(cl, c);
    do
        c->epoch = ++cl->epochs;
    while (!c->epoch); /* 0 names no session */
    c->enext = cl->eb[c->epoch % EPOCH_BUCKETS];
    cl->eb[c->epoch % EPOCH_BUCKETS] = c;
}

/* ---- kept sessions counted, in all and per device ---- */

static struct device_count **device_slot(struct clients *cl, uint32_t device)
{
    struct device_count **pp = &cl->db[device % DEVICE_BUCKETS];
    while (*pp && (*pp)->device != device)
        pp = &(*pp)->next;
    return pp;
}

static uint32_t device_kept(struct clients *cl, uint32_t device)
{
    struct device_count *d = *device_slot(cl, device);
    return d ? d->n : 0;
}

/* c's expiry becomes expiry_s; the counts follow. Returns -ENOMEM when a
 * device count cannot be created (nothing changed). */
static int set_kept(struct clients *cl, struct client_entry *c, uint32_t expiry_s)
{
    bool was = c->expiry_s > 0, is = expiry_s > 0;
    if (was != is) {
        struct device_count **pp = device_slot(cl, c->device);
        if (is && !*pp) {
            if (!(*pp = calloc(1, sizeof **pp))) return -ENOMEM;
            (*pp)->device = c->device;
        }
        if (is) {
            (*pp)->n++;
            cl->kept++;
        } else if (*pp) {
            cl->kept--;
            if (--(*pp)->n == 0) {
                struct device_count *d = *pp;
                *pp = d->next;
                free(d);
            }
        }
    }
    c->expiry_s = expiry_s;
    return 0;
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

/* Unlinks (*pp == c) and frees c, which holds no kept state any more. */
static void entry_drop(struct clients *cl, struct client_entry **pp)
{
    struct client_entry *c = *pp;
    *pp = c->next;
    if (c->epoch) epoch_unlink(cl, c);
    free(c->holds);
    free(c);
}

/* ---- the dirty list: keys whose store record must be written ---- */

static bool append_key(struct clients *cl, uint16_t n, uint32_t org, uint32_t device,
                       const void *id)
{
    size_t need = 2 + 8 + n;
    if (cl->ndirty + need > cl->dirty_cap) {
        size_t cap = cl->dirty_cap ? cl->dirty_cap * 2 : 4096;
        while (cap < cl->ndirty + need)
            cap *= 2;
        uint8_t *p = realloc(cl->dirty, cap);
        if (!p) return false;
        cl->dirty = p;
        cl->dirty_cap = cap;
    }
    uint8_t *p = cl->dirty + cl->ndirty;
    memcpy(p, &n, 2);
    memcpy(p + 2, &org, 4);
    memcpy(p + 6, &device, 4);
    memcpy(p + 10, id, n);
    cl->ndirty += need;
    return true;
}

/* Puts c's key on the dirty list (under the lock). Returns the change's
 * number, 0 when the list cannot grow (out of memory: nothing will write it). */
static uint64_t mark(struct clients *cl, struct client_entry *c)
{
    if (!c->dirty) {
        if (!append_key(cl, c->n, c->org, c->device, c->id)) return 0;
        c->dirty = true;
    }
    return ++cl->dirty_seq;
}

/* The number of the newest change of c not yet written, 0 when none is. */
static uint64_t unwritten(const struct clients *cl, const struct client_entry *c)
{
    return c->dirty ? cl->dirty_seq : 0;
}

/* Drops what a kept session held (a clean start, an expiry set to 0). The
 * store's copy is deleted by the next write. */
static void forget_state(struct clients *cl, struct client_entry *c)
{
    if (c->stored || c->expiry_s || c->nholds) mark(cl, c);
    set_kept(cl, c, 0); /* never fails going to 0 */
    c->nholds = 0;
}

/* A connection's entry it no longer needs: freed, or kept as a tombstone while
 * the store still has a record of it (until the write deleting it is done, a
 * CONNECT for the key must know it has to wait for that write). */
static void retire(struct clients *cl, struct client_entry **pp)
{
    struct client_entry *c = *pp;
    c->attached = false;
    c->nholds = 0;
    if (c->stored || c->dirty)
        mark(cl, c);
    else
        entry_drop(cl, pp);
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
    if (expiry_s && !had &&
        (cl->kept >= CLIENTS_KEPT_MAX || device_kept(cl, device) >= CLIENTS_KEPT_PER_DEVICE)) {
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
    if (set_kept(cl, c, expiry_s)) {
        if (!c->attached && !c->stored && !c->dirty) entry_drop(cl, pp);
        rc = -ENOMEM;
        goto out;
    }
    if (c->attached) {
        out->prev = c->ref;
        out->took_over = true;
    }
    if (clean || !had) {
        /* a new session: what the store may still hold of an older one is
         * deleted before this CONNECT is answered */
        bool old = c->stored || c->dirty || c->nholds;
        c->nholds = 0;
        if (old) out->wait_seq = mark(cl, c);
        new_epoch(cl, c);
    } else {
        out->present = true;
    }
    c->ref = ref;
    c->attached = true;
    c->expires_ms = 0;
    /* kept: stored as connected, so a restart gives it its full expiry; a
     * resumed session not kept after (5.0 expiry 0) is deleted from the store */
    if (expiry_s || had) mark(cl, c);
    out->epoch = c->epoch;
    for (unsigned i = 0; i < c->nholds; i++)
        out->nids += c->holds[i].state == HOLD_HELD;
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
            retire(cl, pp);
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
        if (!expiry_s)
            forget_state(cl, c);
        else if (set_kept(cl, c, expiry_s) == 0)
            mark(cl, c);
    }
    pthread_mutex_unlock(&cl->lock);
}

/* ---- QoS 2 exchanges of kept sessions ---- */

static int hold_index(const struct client_entry *c, uint16_t pid)
{
    for (unsigned i = 0; i < c->nholds; i++)
        if (c->holds[i].pid == pid) return (int)i;
    return -1;
}

enum clients_qos2 clients_qos2_begin(struct sluice_engine *e, uint32_t epoch, uint16_t pid,
                                     uint64_t *seq)
{
    struct clients *cl = &e->clients;
    enum clients_qos2 r = CLIENTS_QOS2_NEW;
    *seq = 0;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = by_epoch(cl, epoch);
    int i = c ? hold_index(c, pid) : -1;
    if (!c) {
        r = CLIENTS_QOS2_GONE;
    } else if (i >= 0 && c->holds[i].state == HOLD_HELD) {
        r = CLIENTS_QOS2_HELD; /* a resend: answered once what says so is written */
        *seq = unwritten(cl, c);
    } else if (i >= 0) {
        r = CLIENTS_QOS2_NEW; /* resent while its first copy commits: stored again */
    } else if (!c->holds && !(c->holds = malloc(CLIENTS_QOS2_MAX * sizeof *c->holds))) {
        r = CLIENTS_QOS2_GONE;
    } else if (c->nholds >= CLIENTS_QOS2_MAX) {
        r = CLIENTS_QOS2_GONE;
    } else {
        c->holds[c->nholds++] = (struct hold){pid, HOLD_PENDING};
    }
    pthread_mutex_unlock(&cl->lock);
    return r;
}

uint64_t clients_qos2_durable(struct sluice_engine *e, uint32_t epoch, uint16_t pid, int err)
{
    struct clients *cl = &e->clients;
    uint64_t seq = 0;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = by_epoch(cl, epoch);
    int i = c ? hold_index(c, pid) : -1;
    if (i >= 0 && c->holds[i].state == HOLD_PENDING) {
        if (err) {
            c->holds[i] = c->holds[--c->nholds]; /* not stored: a resend is new */
        } else {
            c->holds[i].state = HOLD_HELD;
            if (!mark(cl, c)) c->holds[i] = c->holds[--c->nholds]; /* cannot be written */
        }
    }
    if (c && i >= 0) seq = unwritten(cl, c);
    pthread_mutex_unlock(&cl->lock);
    return seq;
}

bool clients_qos2_release(struct sluice_engine *e, uint32_t epoch, uint16_t pid, uint64_t *seq)
{
    struct clients *cl = &e->clients;
    *seq = 0;
    pthread_mutex_lock(&cl->lock);
    struct client_entry *c = by_epoch(cl, epoch);
    int i = c ? hold_index(c, pid) : -1;
    if (i >= 0) {
        bool held = c->holds[i].state == HOLD_HELD;
        c->holds[i] = c->holds[--c->nholds];
        if (held) *seq = mark(cl, c) ? cl->dirty_seq : UINT64_MAX; /* MAX: cannot be written */
    }
    pthread_mutex_unlock(&cl->lock);
    return i >= 0;
}

uint64_t clients_qos2_ticket(uint32_t epoch, uint16_t pid)
{
    return (uint64_t)epoch << 16 | pid;
}

void clients_orphan_durable(struct worker *w, uint64_t ticket, int err)
{
    clients_qos2_durable(w->eng, (uint32_t)(ticket >> 16), (uint16_t)ticket, err);
}

/* ---- the store ---- */

/* Key: u32 device, then the client id; value as VALUE_FIXED says. Integers
 * little-endian like the rest of the store's values (x86 and arm64 hosts);
 * nothing walks these keys in order. Only HELD ids are written: a PENDING one
 * is not durable yet, and its PUBREC has not been sent. */
static size_t encode_value(uint8_t *out, const struct client_entry *c)
{
    memcpy(out, &c->org, 4);
    memcpy(out + 4, &c->expiry_s, 4);
    uint64_t exp = c->attached ? 0 : c->expires_ms;
    memcpy(out + 8, &exp, 8);
    uint16_t n = 0;
    for (unsigned i = 0; i < c->nholds; i++)
        if (c->holds[i].state == HOLD_HELD) {
            memcpy(out + VALUE_FIXED + n * 2u, &c->holds[i].pid, 2);
            n++;
        }
    memcpy(out + 16, &n, 2);
    return VALUE_FIXED + n * 2u;
}

struct dirty_key {
    uint16_t n;
    uint32_t org, device;
    const uint8_t *id;
};

static size_t next_key(const uint8_t *list, size_t off, struct dirty_key *k)
{
    memcpy(&k->n, list + off, 2);
    memcpy(&k->org, list + off + 2, 4);
    memcpy(&k->device, list + off + 6, 4);
    k->id = list + off + 10;
    return off + 10u + k->n;
}

int clients_write(struct sluice_engine *e)
{
    struct clients *cl = &e->clients;
    pthread_mutex_lock(&cl->write_lock);
    pthread_mutex_lock(&cl->lock);
    uint8_t *list = cl->dirty;
    size_t len = cl->ndirty;
    uint64_t seq = cl->dirty_seq;
    size_t nkeys = 0;
    struct dirty_key k;
    for (size_t off = 0; off < len; nkeys++)
        off = next_key(list, off, &k);
    /* per key: 4 + n key bytes, then at most the fixed value and every id */
    size_t room = len + nkeys * (VALUE_FIXED + CLIENTS_QOS2_MAX * 2);
    struct store_kv *ops = nkeys ? malloc(nkeys * sizeof *ops) : NULL;
    uint8_t *buf = nkeys ? malloc(room) : NULL;
    if (nkeys && (!ops || !buf)) {
        pthread_mutex_unlock(&cl->lock);
        free(ops);
        free(buf);
        pthread_mutex_unlock(&cl->write_lock);
        return -ENOMEM; /* the keys stay on the list: a later write takes them */
    }
    cl->dirty = NULL;
    cl->ndirty = cl->dirty_cap = 0;
    uint8_t *p = buf;
    size_t nops = 0;
    for (size_t off = 0; off < len;) {
        off = next_key(list, off, &k);
        struct client_entry *c = *find(cl, k.org, k.device, k.id, k.n);
        struct store_kv *op = &ops[nops++];
        op->key = p;
        op->klen = 4u + k.n;
        memcpy(p, &k.device, 4);
        memcpy(p + 4, k.id, k.n);
        p += 4u + k.n;
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
    pthread_mutex_unlock(&cl->lock);
    int rc = nops ? store_sessions_apply(e->store, ops, nops) : 0;
    pthread_mutex_lock(&cl->lock);
    for (size_t off = 0, i = 0; off < len; i++) {
        off = next_key(list, off, &k);
        struct client_entry **pp = find(cl, k.org, k.device, k.id, k.n);
        struct client_entry *c = *pp;
        if (rc) {
            /* not written: back on the list, and nothing waiting is answered */
            if (c && !c->dirty)
                mark(cl, c);
            else if (!c)
                append_key(cl, k.n, k.org, k.device, k.id);
            continue;
        }
        if (!c) continue;
        c->stored = ops[i].vlen > 0;
        if (!c->stored && !c->dirty && !c->attached && !c->expiry_s)
            entry_drop(cl, pp); /* a tombstone, done with */
    }
    if (!rc) atomic_store(&cl->written_seq, seq);
    pthread_mutex_unlock(&cl->lock);
    /* retried every second while it fails: one line, then a count per window */
    uint64_t now = realtime_ms();
    if (rc)
        errlog_say(&cl->write_errs, now,
                   "writing MQTT sessions failed (tried again each second): %s",
                   store_last_error(e->store));
    errlog_tick(&cl->write_errs, now, "failed MQTT session writes");
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
    uint32_t org, expiry, device;
    uint64_t expires;
    memcpy(&org, v, 4);
    memcpy(&expiry, v + 4, 4);
    memcpy(&expires, v + 8, 8);
    memcpy(&device, k, 4);
    struct client_entry **pp = find(cl, org, device, k + 4, klen - 4);
    if (*pp) return 0; /* keys are unique: cannot happen */
    struct client_entry *c = entry_new(org, device, k + 4, klen - 4);
    if (!c) return -ENOMEM;
    *pp = c;
    c->stored = true;
    if (expiry > CLIENTS_EXPIRY_MAX) expiry = CLIENTS_EXPIRY_MAX;
    uint64_t latest = x->now + (uint64_t)expiry * 1000u;
    /* connected when sluiced stopped: its expiry runs from now (and never
     * beyond our longest, whatever the record says) */
    c->expires_ms = expires && expires < latest ? expires : latest;
    if (!expiry || c->expires_ms <= x->now ||
        (cl->kept >= CLIENTS_KEPT_MAX || device_kept(cl, device) >= CLIENTS_KEPT_PER_DEVICE)) {
        mark(cl, c); /* expired (or over a limit): a tombstone, deleted by the next write */
        return 0;
    }
    if (set_kept(cl, c, expiry) ||
        (nids && !(c->holds = malloc(CLIENTS_QOS2_MAX * sizeof *c->holds))))
        return -ENOMEM;
    for (unsigned i = 0; i < nids; i++) {
        memcpy(&c->holds[i].pid, v + VALUE_FIXED + i * 2u, 2);
        c->holds[i].state = HOLD_HELD;
    }
    c->nholds = nids;
    new_epoch(cl, c);
    if (!expires) mark(cl, c); /* store the expiry that now runs */
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
            if (!c->attached && c->expiry_s && c->expires_ms <= now) {
                forget_state(cl, c);
                retire(cl, pp);
                if (*pp != c) continue; /* dropped: *pp is the next one */
            }
            pp = &c->next;
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
    if (rc) {
        /* nothing is answered as if written; the changes are tried again */
        w->swrite_retry_ms = w->now_ms + 1000;
        return;
    }
    /* in order: the waits of one connection were added in its ack order */
    uint32_t keep = 0;
    for (uint32_t i = 0; i < w->nswaits; i++) {
        struct session_wait sw = w->swaits[i];
        if (sw.seq <= written)
            conn_durable(w, sw.slot, sw.gen, sw.cookie, 0);
        else
            w->swaits[keep++] = sw;
    }
    w->nswaits = keep;
}

void clients_submit(struct worker *w)
{
    if (!w->nswaits || w->swrite_busy || w->now_ms < w->swrite_retry_ms) return;
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
