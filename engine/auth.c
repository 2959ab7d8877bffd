/* engine/auth.c — the immutable token table; see auth.h.
 *
 * Entries live densely in one array; an open-addressing index of power-of-two
 * capacity (at least twice the entry count, so probe runs stay short) maps
 * XXH3-64(digest) to an entry index with linear probing. Everything is one allocation,
 * written once by auth_table_build() and only read afterwards, so any number of
 * threads may look up concurrently without synchronisation once the pointer to
 * the table has been published (the engine does that with a release store).
 */
#include "engine/auth.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define AUTH_MIN_CAPACITY 16u

struct auth_table {
    size_t n;
    size_t mask;     /* capacity - 1 */
    uint32_t *slots; /* entry index + 1; 0 marks an empty slot */
    uint32_t *ids;   /* the same, by token id, for entries with verifiers */
    struct auth_entry *entries;
    struct auth_keys *keys;
    size_t nkeys;
};

static uint64_t id_hash(const uint8_t *id)
{
    return XXH3_64bits(id, STORE_TOKEN_ID_LEN);
}

static uint64_t digest_hash(const uint8_t digest[STORE_DIGEST_LEN])
{
    return XXH3_64bits(digest, STORE_DIGEST_LEN);
}

/* Constant time: every byte is compared whatever the first difference, so the
 * time taken says nothing about how much of a stored digest was matched. */
static int digest_equal(const uint8_t *a, const uint8_t *b)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < STORE_DIGEST_LEN; i++)
        acc |= (uint8_t)(a[i] ^ b[i]);
    return acc == 0;
}

static size_t capacity_for(size_t n)
{
    size_t cap = AUTH_MIN_CAPACITY;
    while (cap < 2 * n)
        cap <<= 1;
    return cap;
}

/* Probes from the digest's home slot; returns the matching slot or the first
 * empty one. The table is never full (capacity >= 2n), so this terminates.
 * Every occupied slot on the way gets the full constant-time comparison: no
 * cheaper pre-filter decides a match, so the comparison is what is tested. */
static uint32_t *probe(const struct auth_table *t, const uint8_t *digest)
{
    for (size_t i = (size_t)digest_hash(digest) & t->mask;; i = (i + 1) & t->mask) {
        uint32_t *slot = &t->slots[i];
        if (*slot == 0 || digest_equal(t->entries[*slot - 1].digest, digest)) return slot;
    }
}

struct auth_table *auth_table_build(const struct auth_entry *entries, size_t n,
                                    const struct auth_keys *keys, size_t nkeys)
{
    struct auth_table *t = NULL;
    size_t cap;

    /* Entry indexes are stored as uint32_t + 1, and the byte count (< 256 per
     * entry with the slots and verifiers) must not overflow. */
    if (n >= UINT32_MAX || n > SIZE_MAX / 256 || nkeys > n) return NULL;
    cap = capacity_for(n);
    size_t bytes = sizeof(*t) + nkeys * sizeof(struct auth_keys) + n * sizeof(struct auth_entry) +
                   2 * cap * sizeof(uint32_t);
    t = calloc(1, bytes);
    if (!t) return NULL;
    /* The arrays need 4-byte alignment only, which the header (pointers and
     * sizes), 64-byte verifiers and a capacity in whole uint32_t preserve. */
    t->keys = (struct auth_keys *)(t + 1);
    t->nkeys = nkeys;
    if (nkeys) memcpy(t->keys, keys, nkeys * sizeof(*keys));
    t->slots = (uint32_t *)(t->keys + nkeys);
    t->ids = t->slots + cap;
    t->entries = (struct auth_entry *)(t->ids + cap);
    t->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t *slot = probe(t, entries[i].digest);
        if (*slot != 0) continue; /* duplicate digest: the first one wins */
        t->entries[t->n] = entries[i];
        if (t->entries[t->n].keys > nkeys) t->entries[t->n].keys = 0;
        *slot = (uint32_t)(++t->n);
        if (!t->entries[t->n - 1].keys) continue;
        /* by token id: device add keeps ids unique; should two share one, the
         * first wins and the other cannot use frames (never the wrong device) */
        for (size_t j = (size_t)id_hash(entries[i].digest) & t->mask;; j = (j + 1) & t->mask) {
            uint32_t *id = &t->ids[j];
            if (*id == 0) {
                *id = (uint32_t)t->n;
                break;
            }
            if (!memcmp(t->entries[*id - 1].digest, entries[i].digest, STORE_TOKEN_ID_LEN)) break;
        }
    }
    return t;
}

const struct auth_entry *auth_table_lookup_id(const struct auth_table *t, const uint8_t *token_id,
                                              const struct auth_keys **keys)
{
    *keys = NULL;
    if (!t) return NULL;
    /* token ids are public (they cross the wire): no constant-time need here;
     * the proof is what is checked in constant time */
    for (size_t j = (size_t)id_hash(token_id) & t->mask;; j = (j + 1) & t->mask) {
        uint32_t id = t->ids[j];
        if (id == 0) return NULL;
        const struct auth_entry *e = &t->entries[id - 1];
        if (!memcmp(e->digest, token_id, STORE_TOKEN_ID_LEN)) {
            *keys = &t->keys[e->keys - 1];
            return e;
        }
    }
}

struct load_ctx {
    struct auth_entry *v;
    size_t n, cap;
    struct auth_keys *k;
    size_t nk, kcap;
};

static int load_one(void *ctx, const uint8_t digest[STORE_DIGEST_LEN], uint32_t device,
                    uint32_t org, uint32_t state, const uint8_t *keys)
{
    struct load_ctx *c = ctx;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        struct auth_entry *v = realloc(c->v, cap * sizeof(*v));
        if (!v) return -ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    if (keys && c->nk == c->kcap) {
        size_t cap = c->kcap ? c->kcap * 2 : 1024;
        struct auth_keys *k = realloc(c->k, cap * sizeof(*k));
        if (!k) return -ENOMEM;
        c->k = k;
        c->kcap = cap;
    }
    struct auth_entry *e = &c->v[c->n++];
    memcpy(e->digest, digest, STORE_DIGEST_LEN);
    e->device = device;
    e->org = org;
    e->state = state;
    e->keys = 0;
    if (keys) {
        memcpy(c->k[c->nk].stored_key, keys, STORE_KEY_LEN);
        memcpy(c->k[c->nk].server_key, keys + STORE_KEY_LEN, STORE_KEY_LEN);
        e->keys = (uint32_t)++c->nk;
    }
    return 0;
}

int auth_table_load(struct store *s, struct auth_table **out)
{
    struct load_ctx c = {0};
    int rc;

    *out = NULL;
    rc = store_token_foreach(s, load_one, &c);
    if (rc != 0) goto done;
    *out = auth_table_build(c.v, c.n, c.k, c.nk);
    if (!*out) rc = -ENOMEM;
done:
    free(c.v);
    if (c.k) explicit_bzero(c.k, c.nk * sizeof(*c.k));
    free(c.k);
    return rc;
}

const struct auth_entry *auth_table_lookup(const struct auth_table *t,
                                           const uint8_t digest[STORE_DIGEST_LEN])
{
    if (!t) return NULL;
    const uint32_t *slot = probe(t, digest);
    return *slot ? &t->entries[*slot - 1] : NULL;
}

bool auth_id_still_names(const struct auth_table *t, const uint8_t *token_id, uint32_t device,
                         uint32_t org)
{
    const struct auth_keys *k;
    const struct auth_entry *e = auth_table_lookup_id(t, token_id, &k);
    return e && e->state == STORE_DEVICE_ACTIVE && e->device == device && e->org == org;
}

size_t auth_table_size(const struct auth_table *t)
{
    return t ? t->n : 0;
}

void auth_table_free(struct auth_table *t)
{
    free(t);
}

int auth_device(const struct auth_table *t, struct ratelimit *rl, const uint8_t peer[16],
                uint64_t now_ms, const char *tok, size_t n, const struct auth_entry **out)
{
    const struct auth_entry *e = NULL;
    *out = NULL;
    /* the token is looked up first, so a valid one is never refused for what
     * other clients at the same address did (CGNAT, a load balancer) */
    if (n && n <= AUTH_TOKEN_MAX && t) {
        uint8_t digest[STORE_DIGEST_LEN];
        store_token_digest(tok, n, digest);
        e = auth_table_lookup(t, digest);
    }
    if (e && e->state == STORE_DEVICE_ACTIVE) {
        *out = e;
        return AUTH_OK;
    }
    if (!ratelimit_allow(rl, peer, now_ms)) return AUTH_THROTTLED;
    ratelimit_charge(rl, peer, now_ms);
    return AUTH_FAIL;
}

int auth_device_cert(const struct auth_table *t, const uint8_t digest[STORE_DIGEST_LEN],
                     const struct auth_entry **out)
{
    const struct auth_entry *e = t ? auth_table_lookup(t, digest) : NULL;
    if (!e || e->state != STORE_DEVICE_ACTIVE) return AUTH_FAIL;
    *out = e;
    return AUTH_OK;
}
