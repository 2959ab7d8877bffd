/* tests/unit/engine/auth_test.c — the immutable token table (engine/auth.c). */
#include <criterion/criterion.h>

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "engine/auth.h"
#include "storage/store.h"

/* splitmix64: reproducible digests without an RNG dependency */
static uint64_t mix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void fill_digest(uint8_t d[STORE_DIGEST_LEN], uint64_t *seed)
{
    for (int i = 0; i < STORE_DIGEST_LEN; i += 8) {
        uint64_t v = mix(seed);
        memcpy(d + i, &v, 8);
    }
}

static struct auth_entry *make_entries(size_t n, uint64_t seed)
{
    struct auth_entry *e = calloc(n ? n : 1, sizeof(*e));
    cr_assert_not_null(e);
    for (size_t i = 0; i < n; i++) {
        fill_digest(e[i].digest, &seed);
        e[i].device = (uint32_t)i + 1;
        e[i].org = (uint32_t)(i % 7) + 1;
        e[i].state = (i % 5 == 0) ? STORE_DEVICE_REVOKED : STORE_DEVICE_ACTIVE;
    }
    return e;
}

/* Every entry is found with its own fields; the same digest with its last byte
 * flipped, and fresh random digests, are not. */
static void build_and_check(size_t n)
{
    struct auth_entry *e = make_entries(n, 12345 + n);
    struct auth_table *t = auth_table_build(e, n, NULL, 0);
    cr_assert_not_null(t);
    cr_assert_eq(auth_table_size(t), n);
    for (size_t i = 0; i < n; i++) {
        const struct auth_entry *got = auth_table_lookup(t, e[i].digest);
        cr_assert_not_null(got, "entry %zu of %zu missing", i, n);
        cr_assert_eq(memcmp(got->digest, e[i].digest, STORE_DIGEST_LEN), 0);
        cr_assert_eq(got->device, e[i].device);
        cr_assert_eq(got->org, e[i].org);
        cr_assert_eq(got->state, e[i].state);

        uint8_t near[STORE_DIGEST_LEN];
        memcpy(near, e[i].digest, STORE_DIGEST_LEN);
        near[STORE_DIGEST_LEN - 1] ^= 0x01;
        cr_assert_null(auth_table_lookup(t, near), "last-byte neighbour of %zu matched", i);
        memcpy(near, e[i].digest, STORE_DIGEST_LEN);
        near[0] ^= 0x80;
        cr_assert_null(auth_table_lookup(t, near), "first-byte neighbour of %zu matched", i);
    }
    uint64_t seed = 999;
    for (int i = 0; i < 1000; i++) {
        uint8_t d[STORE_DIGEST_LEN];
        fill_digest(d, &seed);
        cr_assert_null(auth_table_lookup(t, d));
    }
    auth_table_free(t);
    free(e);
}

Test(auth, build_empty_table_misses_everything)
{
    build_and_check(0);
    struct auth_table *t = auth_table_build(NULL, 0, NULL, 0);
    cr_assert_not_null(t, "an empty store is a valid table, not an error");
    uint8_t zero[STORE_DIGEST_LEN] = {0};
    cr_assert_null(auth_table_lookup(t, zero));
    auth_table_free(t);
}

Test(auth, build_one_entry)
{
    build_and_check(1);
}

Test(auth, build_1000_entries)
{
    build_and_check(1000);
}

Test(auth, build_100000_entries)
{
    build_and_check(100000);
}

Test(auth, revoked_entries_stay_and_report_revoked)
{
    struct auth_entry e[2] = {0};
    memset(e[0].digest, 0x11, STORE_DIGEST_LEN);
    memset(e[1].digest, 0x22, STORE_DIGEST_LEN);
    e[0].device = 1;
    e[0].state = STORE_DEVICE_REVOKED;
    e[1].device = 2;
    e[1].state = STORE_DEVICE_ACTIVE;
    struct auth_table *t = auth_table_build(e, 2, NULL, 0);
    cr_assert_not_null(t);
    const struct auth_entry *got = auth_table_lookup(t, e[0].digest);
    cr_assert_not_null(got);
    cr_assert_eq(got->state, STORE_DEVICE_REVOKED);
    cr_assert_eq(got->device, 1);
    got = auth_table_lookup(t, e[1].digest);
    cr_assert_not_null(got);
    cr_assert_eq(got->state, STORE_DEVICE_ACTIVE);
    auth_table_free(t);
}

Test(auth, build_copies_its_input)
{
    struct auth_entry e = {.device = 5, .org = 6};
    memset(e.digest, 0x33, STORE_DIGEST_LEN);
    struct auth_table *t = auth_table_build(&e, 1, NULL, 0);
    cr_assert_not_null(t);
    uint8_t d[STORE_DIGEST_LEN];
    memcpy(d, e.digest, STORE_DIGEST_LEN);
    memset(&e, 0, sizeof(e));
    const struct auth_entry *got = auth_table_lookup(t, d);
    cr_assert_not_null(got);
    cr_assert_eq(got->device, 5);
    cr_assert_eq(got->org, 6);
    auth_table_free(t);
}

Test(auth, duplicate_digest_keeps_first_and_counts_once)
{
    struct auth_entry e[3] = {0};
    memset(e[0].digest, 0x44, STORE_DIGEST_LEN);
    memcpy(e[1].digest, e[0].digest, STORE_DIGEST_LEN);
    memset(e[2].digest, 0x55, STORE_DIGEST_LEN);
    e[0].device = 1;
    e[1].device = 2;
    e[2].device = 3;
    struct auth_table *t = auth_table_build(e, 3, NULL, 0);
    cr_assert_not_null(t);
    cr_assert_eq(auth_table_size(t), 2);
    cr_assert_eq(auth_table_lookup(t, e[0].digest)->device, 1);
    cr_assert_eq(auth_table_lookup(t, e[2].digest)->device, 3);
    auth_table_free(t);
}

/* Eight digests whose hashes all land on the last slot of the minimum table:
 * the probe run is as long as it gets and wraps around to slot 0. */
Test(auth, colliding_home_slots_wrap_around)
{
    struct auth_entry e[8] = {0};
    uint64_t seed = 7;
    size_t n = 0;
    while (n < 8) {
        fill_digest(e[n].digest, &seed);
        if ((XXH3_64bits(e[n].digest, STORE_DIGEST_LEN) & 15) == 15) {
            e[n].device = (uint32_t)n + 100;
            n++;
        }
    }
    struct auth_table *t = auth_table_build(e, 8, NULL, 0);
    cr_assert_not_null(t);
    for (size_t i = 0; i < 8; i++) {
        const struct auth_entry *got = auth_table_lookup(t, e[i].digest);
        cr_assert_not_null(got);
        cr_assert_eq(got->device, e[i].device);
    }
    /* a miss homed on the same slot walks the whole run and stops at a hole */
    uint8_t d[STORE_DIGEST_LEN];
    do
        fill_digest(d, &seed);
    while ((XXH3_64bits(d, STORE_DIGEST_LEN) & 15) != 15);
    cr_assert_null(auth_table_lookup(t, d));
    auth_table_free(t);
}

/* A digest that differs from a stored one only in byte `pos` and lands on the
 * same home slot of a one-entry table: the probe meets the stored entry first,
 * so only the full comparison can reject it. */
static void near_miss_same_slot(size_t pos)
{
    struct auth_entry e = {.device = 1};
    uint64_t seed = 31 + pos;
    fill_digest(e.digest, &seed);
    struct auth_table *t = auth_table_build(&e, 1, NULL, 0);
    cr_assert_not_null(t);
    uint64_t home = XXH3_64bits(e.digest, STORE_DIGEST_LEN) & 15;
    int tried = 0;
    for (unsigned v = 0; v < 256; v++) {
        uint8_t d[STORE_DIGEST_LEN];
        memcpy(d, e.digest, STORE_DIGEST_LEN);
        if (v == d[pos]) continue;
        d[pos] = (uint8_t)v;
        if ((XXH3_64bits(d, STORE_DIGEST_LEN) & 15) != home) continue;
        tried++;
        cr_assert_null(auth_table_lookup(t, d), "byte %zu = %u matched", pos, v);
    }
    cr_assert_gt(tried, 0, "no same-slot neighbour found for byte %zu", pos);
    auth_table_free(t);
}

Test(auth, digest_differing_in_last_byte_only_misses_on_same_slot)
{
    near_miss_same_slot(STORE_DIGEST_LEN - 1);
}

Test(auth, digest_differing_in_first_byte_only_misses_on_same_slot)
{
    near_miss_same_slot(0);
}

Test(auth, digest_differing_in_middle_byte_only_misses_on_same_slot)
{
    near_miss_same_slot(STORE_DIGEST_LEN / 2);
}

Test(auth, null_table_is_empty)
{
    uint8_t d[STORE_DIGEST_LEN] = {0};
    cr_assert_null(auth_table_lookup(NULL, d));
    cr_assert_eq(auth_table_size(NULL), 0);
    auth_table_free(NULL);
}

struct reader_arg {
    const struct auth_table *t;
    const struct auth_entry *e;
    size_t n;
    size_t bad;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    for (int round = 0; round < 5; round++)
        for (size_t i = 0; i < a->n; i++) {
            const struct auth_entry *got = auth_table_lookup(a->t, a->e[i].digest);
            if (!got || got->device != a->e[i].device) a->bad++;
        }
    return NULL;
}

Test(auth, concurrent_readers_all_see_every_entry)
{
    enum { N = 20000, T = 4 };
    struct auth_entry *e = make_entries(N, 4242);
    struct auth_table *t = auth_table_build(e, N, NULL, 0);
    cr_assert_not_null(t);
    pthread_t th[T];
    struct reader_arg arg[T];
    for (int i = 0; i < T; i++) {
        arg[i] = (struct reader_arg){t, e, N, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, reader, &arg[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(arg[i].bad, 0);
    }
    auth_table_free(t);
    free(e);
}

/* ---- loading from the store ---- */

static char tmpdir[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

Test(auth, load_from_real_store)
{
    struct store *s = NULL;
    struct auth_table *t = NULL;
    char data[128], tok[12][STORE_TOKEN_MAX], name[16];
    uint32_t org[3], dev[12];

    strcpy(tmpdir, "/tmp/sluice-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    snprintf(data, sizeof(data), "%s/data", tmpdir);
    cr_assert_eq(store_open(&s, data, 1), 0, "%s", store_last_error(NULL));

    cr_assert_eq(auth_table_load(s, &t), 0, "empty store loads");
    cr_assert_eq(auth_table_size(t), 0);
    auth_table_free(t);

    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "org%d", i);
        cr_assert_eq(store_org_add(s, name, &org[i]), 0);
    }
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof(name), "dev%d", i);
        cr_assert_eq(store_device_add(s, org[i % 3], name, tok[i], &dev[i]), 0);
    }
    cr_assert_eq(auth_table_load(s, &t), 0);
    cr_assert_eq(auth_table_size(t), 12);
    for (int i = 0; i < 12; i++) {
        uint8_t d[STORE_DIGEST_LEN];
        store_token_digest(tok[i], strlen(tok[i]), d);
        const struct auth_entry *got = auth_table_lookup(t, d);
        cr_assert_not_null(got, "token of dev%d not found", i);
        cr_assert_eq(got->device, dev[i]);
        cr_assert_eq(got->org, org[i % 3]);
        cr_assert_eq(got->state, STORE_DEVICE_ACTIVE);

        /* the token with its last character changed, or cut short, is unknown */
        char wrong[STORE_TOKEN_MAX];
        strcpy(wrong, tok[i]);
        size_t len = strlen(wrong);
        wrong[len - 1] = wrong[len - 1] == '0' ? '1' : '0';
        store_token_digest(wrong, len, d);
        cr_assert_null(auth_table_lookup(t, d));
        store_token_digest(tok[i], len - 1, d);
        cr_assert_null(auth_table_lookup(t, d));
    }
    auth_table_free(t);
    store_close(s);
    nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The frame protocol's lookup by token id: entries with verifiers only, the
 * first of two sharing an id wins, a miss on an unknown id. */
Test(auth, lookup_by_token_id)
{
    struct auth_entry *e = make_entries(100, 777);
    struct auth_keys k[50];
    for (int i = 0; i < 50; i++) {
        memset(k[i].stored_key, i, STORE_KEY_LEN);
        memset(k[i].server_key, 100 + i, STORE_KEY_LEN);
        e[2 * i].keys = (uint32_t)i + 1; /* even entries have verifiers */
    }
    memcpy(e[99].digest, e[98].digest, STORE_TOKEN_ID_LEN); /* odd: no keys, same id */
    struct auth_table *t = auth_table_build(e, 100, k, 50);
    cr_assert_not_null(t);
    for (int i = 0; i < 100; i++) {
        const struct auth_keys *got = NULL;
        const struct auth_entry *x = auth_table_lookup_id(t, e[i].digest, &got);
        if (i % 2) {
            cr_assert(i == 99 ? x == auth_table_lookup(t, e[98].digest) : x == NULL,
                      "entry %d has no verifiers", i);
            continue;
        }
        cr_assert_not_null(x, "entry %d", i);
        cr_assert_eq(x->device, e[i].device);
        cr_assert_eq(got->stored_key[0], i / 2);
        cr_assert_eq(got->server_key[0], 100 + i / 2);
    }
    /* a live session's check: the id, active, of the same device and org */
    cr_assert(auth_id_still_names(t, e[2].digest, e[2].device, e[2].org) ==
              (e[2].state == STORE_DEVICE_ACTIVE));
    cr_assert(!auth_id_still_names(t, e[2].digest, e[2].device + 1, e[2].org));
    cr_assert(!auth_id_still_names(t, e[2].digest, e[2].device, e[2].org + 1));
    cr_assert(!auth_id_still_names(t, e[0].digest, e[0].device, e[0].org), "entry 0 is revoked");
    uint8_t unknown[STORE_TOKEN_ID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
    const struct auth_keys *got = (const void *)1;
    cr_assert_null(auth_table_lookup_id(t, unknown, &got));
    cr_assert_null(got);
    cr_assert_null(auth_table_lookup_id(NULL, unknown, &got));
    /* an out-of-range verifier index is dropped, not followed */
    e[1].keys = 51;
    auth_table_free(t);
    t = auth_table_build(e, 100, k, 50);
    cr_assert_null(auth_table_lookup_id(t, e[1].digest, &got));
    auth_table_free(t);
    free(e);
}
