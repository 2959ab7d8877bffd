/* tests/unit/storage/store_test.c — the LMDB credential store (storage/store.c). */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "storage/store.h"
#include "segtest.h"

static char datadir[128];

static void setup(void)
{
    segtest_setup("sluice-store");
    snprintf(datadir, sizeof(datadir), "%s/data", root);
}

TestSuite(store, .init = setup, .fini = segtest_teardown);

static struct store *open_new(void)
{
    struct store *s = NULL;
    int rc = store_open(&s, datadir, 1);
    cr_assert_eq(rc, 0, "store_open: %d %s", rc, store_last_error(NULL));
    cr_assert_not_null(s);
    return s;
}

static int token_well_formed(const char *t)
{
    if (strlen(t) != 44 || strncmp(t, "slk_", 4) != 0) return 0;
    for (size_t i = 4; i < 44; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'))) return 0;
    return 1;
}

/* ---- open ---- */

Test(store, create_makes_private_data_dir_and_single_file_env)
{
    struct store *s = open_new();
    struct stat st;
    char path[256];
    cr_assert_eq(stat(datadir, &st), 0);
    cr_assert(S_ISDIR(st.st_mode));
    cr_assert_eq(st.st_mode & 0777, 0700, "data dir mode %o", st.st_mode & 0777);
    snprintf(path, sizeof(path), "%s/sluice.mdb", datadir);
    cr_assert_eq(stat(path, &st), 0, "sluice.mdb missing");
    cr_assert(S_ISREG(st.st_mode), "MDB_NOSUBDIR: the env is a file");
    snprintf(path, sizeof(path), "%s/sluice.mdb-lock", datadir);
    cr_assert_eq(stat(path, &st), 0, "sluice.mdb-lock missing");
    store_close(s);
}

Test(store, create_makes_missing_parents)
{
    struct store *s = NULL;
    snprintf(datadir, sizeof(datadir), "%s/a/b/data", root);
    cr_assert_eq(store_open(&s, datadir, 1), 0, "%s", store_last_error(NULL));
    store_close(s);
}

Test(store, open_without_create_on_missing_dir_is_enoent)
{
    struct store *s = (struct store *)1;
    cr_assert_eq(store_open(&s, datadir, 0), -ENOENT);
    cr_assert_null(s);
    cr_assert_neq(strstr(store_last_error(NULL), "sluice.mdb"), NULL, "%s", store_last_error(NULL));
    struct stat st;
    cr_assert_neq(stat(datadir, &st), 0, "open without create must not create the dir");
}

Test(store, open_without_create_on_empty_dir_is_enoent)
{
    struct store *s = NULL;
    cr_assert_eq(mkdir(datadir, 0700), 0);
    cr_assert_eq(store_open(&s, datadir, 0), -ENOENT);
    cr_assert_null(s);
}

Test(store, data_dir_that_is_a_file_is_refused)
{
    struct store *s = NULL;
    int fd = open(datadir, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(store_open(&s, datadir, 1), -ENOTDIR);
    cr_assert_null(s);
}

Test(store, garbage_env_file_is_an_error_not_a_crash)
{
    struct store *s = NULL;
    char path[256], junk[8192];
    cr_assert_eq(mkdir(datadir, 0700), 0);
    snprintf(path, sizeof(path), "%s/sluice.mdb", datadir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    memset(junk, 0x5a, sizeof(junk));
    cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    int rc = store_open(&s, datadir, 0);
    cr_assert_lt(rc, 0);
    cr_assert_null(s);
    cr_assert_gt(strlen(store_last_error(NULL)), 0);
}

Test(store, reopen_without_create_sees_everything)
{
    struct store *s = open_new();
    uint32_t org = 0, dev = 0, got = 0;
    char tok[STORE_TOKEN_MAX], name[STORE_NAME_MAX + 1];
    cr_assert_eq(store_org_add(s, "acme", &org), 0);
    cr_assert_eq(store_device_add(s, org, "pump-7", tok, &dev), 0);
    store_close(s);

    cr_assert_eq(store_open(&s, datadir, 0), 0, "%s", store_last_error(NULL));
    cr_assert_eq(store_org_find(s, "acme", &got, NULL), 0);
    cr_assert_eq(got, org);
    cr_assert_eq(store_device_find(s, org, "pump-7", &got), 0);
    cr_assert_eq(got, dev);
    cr_assert_eq(store_device_name(s, dev, name, &got), 0);
    cr_assert_str_eq(name, "pump-7");
    cr_assert_eq(got, org);
    /* ids continue after a reopen, they are not reused */
    cr_assert_eq(store_org_add(s, "beta", &got), 0);
    cr_assert_eq(got, org + 1);
    store_close(s);
}

Test(store, close_null_is_harmless)
{
    store_close(NULL);
}

/* ---- orgs ---- */

Test(store, org_ids_are_sequential_from_one)
{
    struct store *s = open_new();
    uint32_t id = 0;
    cr_assert_eq(store_org_add(s, "acme", &id), 0);
    cr_assert_eq(id, 1);
    cr_assert_eq(store_org_add(s, "beta", &id), 0);
    cr_assert_eq(id, 2);
    cr_assert_eq(store_org_add(s, "gamma", NULL), 0);
    store_close(s);
}

Test(store, org_find_by_name_and_by_id)
{
    struct store *s = open_new();
    uint32_t a = 0, b = 0, got = 0;
    char name[STORE_NAME_MAX + 1];
    cr_assert_eq(store_org_add(s, "acme", &a), 0);
    cr_assert_eq(store_org_add(s, "beta", &b), 0);

    cr_assert_eq(store_org_find(s, "beta", &got, name), 0);
    cr_assert_eq(got, b);
    cr_assert_str_eq(name, "beta");

    char idstr[16];
    snprintf(idstr, sizeof(idstr), "%u", a);
    memset(name, 'x', sizeof(name));
    cr_assert_eq(store_org_find(s, idstr, &got, name), 0);
    cr_assert_eq(got, a);
    cr_assert_str_eq(name, "acme");
    cr_assert_eq(store_org_find(s, "acme", &got, NULL), 0, "name_out may be NULL");

    cr_assert_eq(store_org_name(s, b, name), 0);
    cr_assert_str_eq(name, "beta");
    store_close(s);
}

Test(store, org_find_misses)
{
    struct store *s = open_new();
    uint32_t got = 0;
    cr_assert_eq(store_org_add(s, "acme", NULL), 0);
    cr_assert_eq(store_org_find(s, "nope", &got, NULL), -ENOENT);
    cr_assert_eq(store_org_find(s, "ACME", &got, NULL), -ENOENT, "names are case-sensitive");
    cr_assert_eq(store_org_find(s, "2", &got, NULL), -ENOENT);
    cr_assert_eq(store_org_find(s, "0", &got, NULL), -ENOENT, "ids start at 1");
    cr_assert_eq(store_org_find(s, "4294967297", &got, NULL), -ENOENT, "overflows u32");
    cr_assert_eq(store_org_find(s, "99999999999999999999999", &got, NULL), -ENOENT);
    cr_assert_eq(store_org_find(s, "", &got, NULL), -EINVAL);
    cr_assert_eq(store_org_find(s, "a/b", &got, NULL), -EINVAL);
    cr_assert_eq(store_org_find(s, "-1", &got, NULL), -EINVAL);
    cr_assert_eq(store_org_name(s, 2, NULL), -ENOENT);
    cr_assert_eq(store_org_name(s, 0, NULL), -ENOENT);
    store_close(s);
}

Test(store, org_find_accepts_leading_zero_ids)
{
    struct store *s = open_new();
    uint32_t got = 0;
    cr_assert_eq(store_org_add(s, "acme", NULL), 0);
    cr_assert_eq(store_org_find(s, "0001", &got, NULL), 0);
    cr_assert_eq(got, 1);
    store_close(s);
}

Test(store, org_duplicate_name_is_eexist_and_changes_nothing)
{
    struct store *s = open_new();
    uint32_t id = 0;
    uint64_t g1 = 0, g2 = 0;
    cr_assert_eq(store_org_add(s, "acme", &id), 0);
    cr_assert_eq(store_generation(s, &g1), 0);
    id = 77;
    cr_assert_eq(store_org_add(s, "acme", &id), -EEXIST);
    cr_assert_eq(id, 77, "id untouched on failure");
    cr_assert_eq(store_generation(s, &g2), 0);
    cr_assert_eq(g1, g2, "a failed write does not bump the generation");
    /* the failed add must not have consumed an id */
    cr_assert_eq(store_org_add(s, "beta", &id), 0);
    cr_assert_eq(id, 2);
    store_close(s);
}

static void expect_bad_org(struct store *s, const char *name)
{
    uint32_t id = 0;
    cr_expect_eq(store_org_add(s, name, &id), -EINVAL, "org name '%s' accepted",
                 name ? name : "(null)");
}

Test(store, org_bad_names_are_einval)
{
    struct store *s = open_new();
    char long65[66], long64[65];
    memset(long65, 'a', 65);
    long65[65] = '\0';
    memset(long64, 'a', 64);
    long64[64] = '\0';

    expect_bad_org(s, NULL);
    expect_bad_org(s, "");
    expect_bad_org(s, long65);
    expect_bad_org(s, "-acme");
    expect_bad_org(s, ".acme");
    expect_bad_org(s, "_acme");
    expect_bad_org(s, "a/b");
    expect_bad_org(s, "../etc");
    expect_bad_org(s, "a b");
    expect_bad_org(s, "a\nb");
    expect_bad_org(s, "caf\xc3\xa9");
    expect_bad_org(s, "a:b");
    expect_bad_org(s, "123");
    expect_bad_org(s, "0");

    uint32_t id = 0;
    cr_assert_eq(store_org_add(s, long64, &id), 0, "64 chars is the maximum, not over it");
    cr_assert_eq(store_org_add(s, "1a", &id), 0, "digits then a letter is a name");
    cr_assert_eq(store_org_add(s, "A.b_c-9", &id), 0);
    store_close(s);
}

struct org_row {
    uint32_t id;
    char name[STORE_NAME_MAX + 1];
    uint64_t created_ns;
};

struct org_rows {
    struct org_row row[16];
    int n;
    int stop_after;
};

static int collect_org(void *ctx, uint32_t id, const char *name, uint64_t created_ns)
{
    struct org_rows *r = ctx;
    cr_assert_lt(r->n, 16);
    r->row[r->n].id = id;
    strcpy(r->row[r->n].name, name);
    r->row[r->n].created_ns = created_ns;
    r->n++;
    return (r->stop_after && r->n == r->stop_after) ? 42 : 0;
}

Test(store, org_list_in_id_order_with_creation_time)
{
    struct store *s = open_new();
    struct org_rows r = {0};
    cr_assert_eq(store_org_list(s, collect_org, &r), 0);
    cr_assert_eq(r.n, 0, "empty store lists nothing");

    const char *names[] = {"zeta", "alpha", "mid"};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(store_org_add(s, names[i], NULL), 0);
    cr_assert_eq(store_org_list(s, collect_org, &r), 0);
    cr_assert_eq(r.n, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r.row[i].id, (uint32_t)i + 1);
        cr_assert_str_eq(r.row[i].name, names[i]);
        /* after 2020-01-01: a real CLOCK_REALTIME in ns, not seconds or zero */
        cr_assert_gt(r.row[i].created_ns, 1577836800ull * 1000000000ull);
    }
    cr_assert_leq(r.row[0].created_ns, r.row[2].created_ns);
    store_close(s);
}

Test(store, org_list_callback_nonzero_stops_and_is_returned)
{
    struct store *s = open_new();
    struct org_rows r = {.stop_after = 2};
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof(name), "o%d", i);
        cr_assert_eq(store_org_add(s, name, NULL), 0);
    }
    cr_assert_eq(store_org_list(s, collect_org, &r), 42);
    cr_assert_eq(r.n, 2);
    store_close(s);
}

/* ---- devices ---- */

struct dev_rows {
    uint32_t id[64];
    char name[64][STORE_NAME_MAX + 1];
    uint32_t state[64];
    int n;
};

static int collect_dev(void *ctx, uint32_t id, const char *name, uint32_t state,
                       uint64_t created_ns)
{
    struct dev_rows *r = ctx;
    cr_assert_lt(r->n, 64);
    cr_assert_gt(created_ns, 1577836800ull * 1000000000ull);
    r->id[r->n] = id;
    strcpy(r->name[r->n], name);
    r->state[r->n] = state;
    r->n++;
    return 0;
}

Test(store, device_add_find_name_list)
{
    struct store *s = open_new();
    uint32_t acme = 0, beta = 0, d1 = 0, d2 = 0, d3 = 0, got = 0, org = 0;
    char tok[STORE_TOKEN_MAX], name[STORE_NAME_MAX + 1];
    cr_assert_eq(store_org_add(s, "acme", &acme), 0);
    cr_assert_eq(store_org_add(s, "beta", &beta), 0);
    cr_assert_eq(store_device_add(s, acme, "pump-7", tok, &d1), 0);
    cr_assert_eq(store_device_add(s, beta, "valve", tok, &d2), 0);
    cr_assert_eq(store_device_add(s, acme, "gauge", tok, &d3), 0);
    cr_assert_eq(d1, 1, "device ids are global and start at 1");
    cr_assert_eq(d2, 2);
    cr_assert_eq(d3, 3);

    cr_assert_eq(store_device_find(s, acme, "gauge", &got), 0);
    cr_assert_eq(got, d3);
    cr_assert_eq(store_device_find(s, beta, "gauge", &got), -ENOENT, "names are per org");
    cr_assert_eq(store_device_find(s, acme, "valve", &got), -ENOENT);
    cr_assert_eq(store_device_find(s, acme, "a/b", &got), -EINVAL);

    cr_assert_eq(store_device_name(s, d2, name, &org), 0);
    cr_assert_str_eq(name, "valve");
    cr_assert_eq(org, beta);
    cr_assert_eq(store_device_name(s, d1, NULL, NULL), 0);
    cr_assert_eq(store_device_name(s, 99, name, &org), -ENOENT);
    cr_assert_eq(store_device_name(s, 0, name, &org), -ENOENT);

    struct dev_rows r = {0};
    cr_assert_eq(store_device_list(s, acme, collect_dev, &r), 0);
    cr_assert_eq(r.n, 2, "only acme's devices");
    cr_assert_eq(r.id[0], d1);
    cr_assert_str_eq(r.name[0], "pump-7");
    cr_assert_eq(r.state[0], STORE_DEVICE_ACTIVE);
    cr_assert_eq(r.id[1], d3);
    cr_assert_str_eq(r.name[1], "gauge");
    store_close(s);
}

Test(store, device_list_of_org_without_devices_is_empty)
{
    struct store *s = open_new();
    uint32_t a = 0, b = 0;
    char tok[STORE_TOKEN_MAX];
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    cr_assert_eq(store_org_add(s, "b", &b), 0);
    cr_assert_eq(store_device_add(s, b, "x", tok, NULL), 0);
    struct dev_rows r = {0};
    cr_assert_eq(store_device_list(s, a, collect_dev, &r), 0);
    cr_assert_eq(r.n, 0);
    cr_assert_eq(store_device_list(s, 9, collect_dev, &r), -ENOENT);
    store_close(s);
}

Test(store, device_list_many_orgs_does_not_bleed_across_org_boundary)
{
    /* org 1 and org 256 differ in one key byte; list must honour the whole prefix */
    struct store *s = open_new();
    char tok[STORE_TOKEN_MAX], name[16];
    uint32_t id = 0;
    for (int i = 0; i < 257; i++) {
        snprintf(name, sizeof(name), "org%d", i);
        cr_assert_eq(store_org_add(s, name, &id), 0);
    }
    cr_assert_eq(store_device_add(s, 1, "one", tok, NULL), 0);
    cr_assert_eq(store_device_add(s, 2, "two", tok, NULL), 0);
    cr_assert_eq(store_device_add(s, 256, "big", tok, NULL), 0);
    struct dev_rows r = {0};
    cr_assert_eq(store_device_list(s, 1, collect_dev, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_str_eq(r.name[0], "one");
    store_close(s);
}

Test(store, device_duplicate_in_org_is_eexist_other_org_is_fine)
{
    struct store *s = open_new();
    uint32_t a = 0, b = 0, d = 0;
    char tok[STORE_TOKEN_MAX];
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    cr_assert_eq(store_org_add(s, "b", &b), 0);
    cr_assert_eq(store_device_add(s, a, "pump", tok, &d), 0);
    cr_assert_eq(store_device_add(s, a, "pump", tok, &d), -EEXIST);
    cr_assert_eq(tok[0], '\0', "no token handed out on failure");
    cr_assert_eq(store_device_add(s, b, "pump", tok, &d), 0);
    cr_assert_eq(d, 2, "the failed add consumed no id");
    store_close(s);
}

Test(store, device_add_to_missing_org_is_enoent)
{
    struct store *s = open_new();
    char tok[STORE_TOKEN_MAX];
    cr_assert_eq(store_device_add(s, 1, "pump", tok, NULL), -ENOENT);
    cr_assert_eq(store_device_add(s, 0, "pump", tok, NULL), -ENOENT);
    store_close(s);
}

Test(store, device_bad_names_are_einval)
{
    struct store *s = open_new();
    uint32_t a = 0;
    char tok[STORE_TOKEN_MAX], long65[66];
    memset(long65, 'd', 65);
    long65[65] = '\0';
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    const char *bad[] = {"", "-x", "a/b", long65, "x y", "\x01", "."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(store_device_add(s, a, bad[i], tok, NULL), -EINVAL, "'%s'", bad[i]);
    cr_assert_eq(store_device_add(s, a, NULL, tok, NULL), -EINVAL);
    /* device names may be all digits: only org names double as ids */
    cr_assert_eq(store_device_add(s, a, "42", tok, NULL), 0);
    store_close(s);
}

/* ---- tokens ---- */

struct tok_rows {
    uint8_t digest[64][STORE_DIGEST_LEN];
    uint8_t keys[64][2 * STORE_KEY_LEN];
    bool has_keys[64];
    uint32_t device[64], org[64], state[64];
    int n;
};

static int collect_tok(void *ctx, const uint8_t digest[STORE_DIGEST_LEN], uint32_t device,
                       uint32_t org, uint32_t state, const uint8_t *keys)
{
    struct tok_rows *r = ctx;
    cr_assert_lt(r->n, 64);
    memcpy(r->digest[r->n], digest, STORE_DIGEST_LEN);
    r->has_keys[r->n] = keys != NULL;
    if (keys) memcpy(r->keys[r->n], keys, 2 * STORE_KEY_LEN);
    r->device[r->n] = device;
    r->org[r->n] = org;
    r->state[r->n] = state;
    r->n++;
    return 0;
}

Test(store, token_format_is_slk_and_40_lowercase_hex)
{
    struct store *s = open_new();
    uint32_t a = 0;
    char tok[STORE_TOKEN_MAX];
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    for (int i = 0; i < 20; i++) {
        char name[8];
        snprintf(name, sizeof(name), "d%d", i);
        cr_assert_eq(store_device_add(s, a, name, tok, NULL), 0);
        cr_assert(token_well_formed(tok), "token '%s'", tok);
    }
    store_close(s);
}

Test(store, token_digest_stored_is_sha256_of_token_and_token_is_not_stored)
{
    struct store *s = open_new();
    uint32_t a = 0, d = 0;
    char tok[STORE_TOKEN_MAX], path[256];
    uint8_t want[STORE_DIGEST_LEN];
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    cr_assert_eq(store_device_add(s, a, "dev", tok, &d), 0);
    store_token_digest(tok, strlen(tok), want);

    struct tok_rows r = {0};
    cr_assert_eq(store_token_foreach(s, collect_tok, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(memcmp(r.digest[0], want, STORE_DIGEST_LEN), 0);
    cr_assert_eq(r.device[0], d);
    cr_assert_eq(r.org[0], a);
    cr_assert_eq(r.state[0], STORE_DEVICE_ACTIVE);
    /* the frame verifiers are stored beside the digest */
    uint8_t sk[STORE_KEY_LEN], vk[STORE_KEY_LEN];
    cr_assert_eq(store_frame_keys(tok, strlen(tok), sk, vk), 0);
    cr_assert(r.has_keys[0]);
    cr_assert_eq(memcmp(r.keys[0], sk, STORE_KEY_LEN), 0);
    cr_assert_eq(memcmp(r.keys[0] + STORE_KEY_LEN, vk, STORE_KEY_LEN), 0);
    store_close(s);

    /* the token text (or its hex body) must appear nowhere in the file */
    snprintf(path, sizeof(path), "%s/sluice.mdb", datadir);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_null(memmem(buf, n, tok + 4, 16), "token stored in clear");
}

static void unhex32(const char *h, uint8_t out[32])
{
    for (int i = 0; i < 32; i++)
        sscanf(h + 2 * i, "%2hhx", &out[i]);
}

/* docs/frame-protocol.md §9: the verifiers of the vector token */
Test(store, frame_keys_match_the_protocol_vectors)
{
    static const char tok[] = "slk_0123456789abcdef0123456789abcdef01234567";
    uint8_t sk[32], vk[32], want[32];
    cr_assert_eq(store_frame_keys(tok, strlen(tok), sk, vk), 0);
    unhex32("c88f34110c48bb78cbc7e3457ed95ce15bd752f7dafcc81ae5e590ce43ae82db", want);
    cr_assert_eq(memcmp(sk, want, 32), 0, "StoredKey");
    unhex32("fb352130c3a759f4557162dcf695893ab69e1bcd8603cc2609d93efa70ac9322", want);
    cr_assert_eq(memcmp(vk, want, 32), 0, "ServerKey");
    uint8_t d[STORE_DIGEST_LEN];
    store_token_digest(tok, strlen(tok), d);
    static const uint8_t id[8] = {0x43, 0x47, 0xb7, 0x17, 0x52, 0x25, 0xe3, 0x16};
    cr_assert_eq(memcmp(d, id, 8), 0, "token_id is the digest's first 8 bytes");
    cr_assert_eq(store_frame_keys("", 0, sk, vk), -EIO);
}

Test(store, token_digest_known_vector)
{
    /* FIPS 180-2 example: SHA-256("abc") */
    static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                    0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                    0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    uint8_t out[STORE_DIGEST_LEN];
    store_token_digest("abcdef", 3, out);
    cr_assert_eq(memcmp(out, abc, 32), 0, "digest covers exactly len bytes");
    /* empty input hashes too (a header with an empty token) */
    static const uint8_t empty0[4] = {0xe3, 0xb0, 0xc4, 0x42};
    store_token_digest("", 0, out);
    cr_assert_eq(memcmp(out, empty0, 4), 0);
}

Test(store, two_tokens_differ)
{
    struct store *s = open_new();
    uint32_t a = 0;
    char t1[STORE_TOKEN_MAX], t2[STORE_TOKEN_MAX];
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    cr_assert_eq(store_device_add(s, a, "one", t1, NULL), 0);
    cr_assert_eq(store_device_add(s, a, "two", t2, NULL), 0);
    cr_assert_str_neq(t1, t2);
    store_close(s);
}

Test(store, token_foreach_sees_every_device)
{
    struct store *s = open_new();
    uint32_t orgs[3], dev[30];
    char tok[30][STORE_TOKEN_MAX], name[16];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "org%d", i);
        cr_assert_eq(store_org_add(s, name, &orgs[i]), 0);
    }
    for (int i = 0; i < 30; i++) {
        snprintf(name, sizeof(name), "dev%d", i);
        cr_assert_eq(store_device_add(s, orgs[i % 3], name, tok[i], &dev[i]), 0);
    }
    struct tok_rows r = {0};
    cr_assert_eq(store_token_foreach(s, collect_tok, &r), 0);
    cr_assert_eq(r.n, 30);
    for (int i = 0; i < 30; i++) {
        uint8_t want[STORE_DIGEST_LEN];
        int hits = 0;
        store_token_digest(tok[i], strlen(tok[i]), want);
        for (int j = 0; j < r.n; j++) {
            if (memcmp(r.digest[j], want, STORE_DIGEST_LEN) != 0) continue;
            hits++;
            cr_assert_eq(r.device[j], dev[i]);
            cr_assert_eq(r.org[j], orgs[i % 3]);
        }
        cr_assert_eq(hits, 1, "device %d seen %d times", i, hits);
    }
    store_close(s);
}

Test(store, token_foreach_on_empty_store_calls_nothing)
{
    struct store *s = open_new();
    struct tok_rows r = {0};
    cr_assert_eq(store_token_foreach(s, collect_tok, &r), 0);
    cr_assert_eq(r.n, 0);
    store_close(s);
}

/* ---- generation ---- */

Test(store, generation_increases_on_each_write)
{
    struct store *s = open_new();
    uint64_t g0 = 0, g = 0, prev;
    uint32_t a = 0;
    char tok[STORE_TOKEN_MAX];
    cr_assert_eq(store_generation(s, &g0), 0);
    cr_assert_gt(g0, 0, "a fresh store is past generation 0 so a poller loads once");

    prev = g0;
    cr_assert_eq(store_org_add(s, "a", &a), 0);
    cr_assert_eq(store_generation(s, &g), 0);
    cr_assert_gt(g, prev);
    prev = g;
    cr_assert_eq(store_device_add(s, a, "d", tok, NULL), 0);
    cr_assert_eq(store_generation(s, &g), 0);
    cr_assert_gt(g, prev);
    prev = g;

    /* reads leave it alone */
    struct tok_rows r = {0};
    cr_assert_eq(store_token_foreach(s, collect_tok, &r), 0);
    cr_assert_eq(store_org_find(s, "a", NULL, NULL), 0);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(store_generation(s, &g), 0);
        cr_assert_eq(g, prev);
    }
    store_close(s);
}

Test(store, generation_sees_writes_from_another_process)
{
    struct store *s = open_new();
    uint64_t before = 0, after = 0;
    uint32_t id = 0;
    cr_assert_eq(store_generation(s, &before), 0);

    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* the CLI's role: its own process, its own environment handle */
        struct store *c = NULL;
        int ok = store_open(&c, datadir, 0) == 0 && store_org_add(c, "fromchild", NULL) == 0;
        store_close(c);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");

    cr_assert_eq(store_generation(s, &after), 0);
    cr_assert_gt(after, before, "cached read txn must see the other process's commit");
    cr_assert_eq(store_org_find(s, "fromchild", &id, NULL), 0);
    store_close(s);
}

Test(store, last_error_is_never_null)
{
    cr_assert_not_null(store_last_error(NULL));
    struct store *s = open_new();
    cr_assert_eq(store_org_add(s, "", NULL), -EINVAL);
    cr_assert_not_null(store_last_error(s));
    cr_assert_gt(strlen(store_last_error(s)), 0);
    store_close(s);
}

/* ---- MQTT sessions ---- */

struct kv_seen {
    int n;
    char keys[4][16];
    size_t vlen[4];
};

static int collect_kv(void *ctx, const void *key, size_t klen, const void *val, size_t vlen)
{
    struct kv_seen *s = ctx;
    (void)val;
    cr_assert_lt(s->n, 4);
    cr_assert_lt(klen, sizeof s->keys[0]);
    memcpy(s->keys[s->n], key, klen);
    s->keys[s->n][klen] = '\0';
    s->vlen[s->n++] = vlen;
    return 0;
}

Test(store, sessions_put_delete_reopen_and_leave_the_generation_alone)
{
    struct store *s = open_new();
    struct kv_seen seen = {0};
    cr_assert_eq(store_sessions_foreach(s, collect_kv, &seen), 0, "empty: %s", store_last_error(s));
    cr_assert_eq(seen.n, 0);
    uint64_t g0, g1;
    cr_assert_eq(store_generation(s, &g0), 0);
    struct store_kv ops[] = {
        {"a", 1, "value-a", 7},
        {"b", 1, "value-b", 7},
        {"a", 1, "longer-a", 8}, /* later wins */
        {"c", 1, NULL, 0},       /* deleting what is not there is fine */
    };
    cr_assert_eq(store_sessions_apply(s, ops, 4), 0, "%s", store_last_error(s));
    struct store_kv del[] = {{"b", 1, NULL, 0}};
    cr_assert_eq(store_sessions_apply(s, del, 1), 0);
    cr_assert_eq(store_generation(s, &g1), 0);
    cr_assert_eq(g1, g0, "a session write must not make the daemon reload its tokens");
    store_close(s);

    cr_assert_eq(store_open(&s, datadir, 0), 0);
    cr_assert_eq(store_sessions_foreach(s, collect_kv, &seen), 0);
    cr_assert_eq(seen.n, 1);
    cr_assert_str_eq(seen.keys[0], "a");
    cr_assert_eq(seen.vlen[0], 8);
    store_close(s);
}
