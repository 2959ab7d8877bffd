/* storage/store.c — the credential and account store on LMDB; see store.h.
 *
 * Layout of the named databases (schema 1). Keys carry big-endian integers so
 * that a cursor walks them in numeric order; values are little-endian like the
 * log record format.
 *
 *   orgs     "n:" name                    -> u32 org id
 *            "i:" u32be id                -> u64 created_ns, name bytes
 *   devices  "n:" u32be org, name         -> u32 device id
 *            "o:" u32be org, u32be device -> (empty)  lists an org's devices by id
 *            "i:" u32be id                -> u32 org, u32 state, u64 created_ns,
 *                                            digest[32], name bytes
 *   tokens   digest[32]                   -> u32 device, u32 org, u32 state
 *                                            [, StoredKey[32], ServerKey[32]]
 *            (the frame protocol's verifiers, docs/frame-protocol.md §3: stored
 *            by device add since S6; older tokens and certificates have none)
 *   meta     "schema" -> u32, "generation" -> u64, "next_org" -> u32,
 *            "next_device" -> u32
 *   mqtt_sessions  (the engine's keys and values; created by the first write,
 *            so a store made before it is still schema 1)
 *
 * The environment is opened with MDB_NOTLS: read transactions are bound to the
 * transaction object rather than to the thread, which is what lets one thread
 * keep a reset read transaction for store_generation() and still open others,
 * and lets the daemon poll from whichever thread it likes.
 */
#include "storage/store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* wolfSSL requires its build options before any other of its headers. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/wolfcrypt/hash.h> /* wc_Sha256Hash */

#include "protocols/frame_auth.h"

#define STORE_FILE     "sluice.mdb"
#define STORE_MAP_SIZE (1ull << 30)
#define STORE_MAX_DBS  16
#define STORE_SCHEMA   1u
#define STORE_PATH_MAX 4096

#define TOKEN_PREFIX       "slk_"
#define TOKEN_RANDOM_BYTES 20 /* 160 bits */

#define ORG_REC_FIXED    8                                   /* created_ns */
#define DEVICE_REC_FIXED 48                                  /* org, state, created_ns, digest */
#define TOKEN_REC_LEN    12                                  /* device, org, state */
#define TOKEN_REC_KEYS   (TOKEN_REC_LEN + 2 * STORE_KEY_LEN) /* ... and the frame verifiers */

struct store {
    MDB_env *env;
    MDB_dbi orgs, devices, tokens, meta;
    MDB_dbi sessions;
    _Atomic int sessions_state; /* 0: not opened yet, 1: open */
    /* A reset read transaction kept for store_generation(); taken out with an
     * atomic exchange so concurrent pollers never share it. */
    _Atomic(MDB_txn *) gen_txn;
};

/* Per thread, like errno: a store shared by daemon threads must not see another
 * thread's message half-written, and store_open() has no store to hang it on. */
static _Thread_local char store_err[256] = "no error";

/* ---- encoding helpers ---- */

static void put32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static void put64le(uint8_t *p, uint64_t v)
{
    put32le(p, (uint32_t)v);
    put32le(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64le(const uint8_t *p)
{
    return (uint64_t)get32le(p) | ((uint64_t)get32le(p + 4) << 32);
}
static void put32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static uint32_t get32be(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- errors ---- */

__attribute__((format(printf, 2, 3))) static int set_err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(store_err, sizeof(store_err), fmt, ap);
    va_end(ap);
    return code;
}

/* Maps an LMDB return code to the store's convention and records its text.
 * Positive codes are errnos from the OS; LMDB's own codes are negative. */
static int mdb_fail(int rc, const char *what)
{
    set_err(0, "%s: %s", what, mdb_strerror(rc));
    if (rc > 0) return -rc;
    if (rc == MDB_MAP_FULL) return -ENOSPC;
    return -EIO;
}

static int corrupt(const char *what)
{
    return set_err(-EIO, "%s: corrupt record (wrong length)", what);
}

const char *store_last_error(const struct store *s)
{
    (void)s;
    return store_err;
}

/* ---- names ---- */

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* [A-Za-z0-9][A-Za-z0-9._-]{0,63}; returns the length or 0 when invalid. */
static size_t name_check(const char *name)
{
    size_t n = 0;
    if (!name || !is_alnum(name[0])) return 0;
    for (n = 1; name[n]; n++) {
        if (n >= STORE_NAME_MAX) return 0;
        if (!is_alnum(name[n]) && name[n] != '.' && name[n] != '_' && name[n] != '-') return 0;
    }
    return n;
}

static int all_digits(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* ---- transactions ---- */

/* Another process may have grown the map past our size: adopt it and retry. */
static int txn_begin(struct store *s, unsigned flags, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        rc = mdb_env_set_mapsize(s->env, 0);
        if (rc == 0) rc = mdb_txn_begin(s->env, NULL, flags, txn);
    }
    if (rc != 0) return mdb_fail(rc, "begin transaction");
    return 0;
}

static int meta_get32(struct store *s, MDB_txn *txn, const char *key, uint32_t def, uint32_t *out)
{
    MDB_val k = {strlen(key), (void *)key}, v;
    int rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = def;
        return 0;
    }
    if (rc != 0) return mdb_fail(rc, key);
    if (v.mv_size != 4) return corrupt(key);
    *out = get32le(v.mv_data);
    return 0;
}

static int meta_put32(struct store *s, MDB_txn *txn, const char *key, uint32_t val)
{
    uint8_t buf[4];
    MDB_val k = {strlen(key), (void *)key}, v = {sizeof(buf), buf};
    put32le(buf, val);
    int rc = mdb_put(txn, s->meta, &k, &v, 0);
    return rc ? mdb_fail(rc, key) : 0;
}

static int meta_get_generation(struct store *s, MDB_txn *txn, uint64_t *gen)
{
    MDB_val k = {10, "generation"}, v;
    int rc = mdb_get(txn, s->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *gen = 0;
        return 0;
    }
    if (rc != 0) return mdb_fail(rc, "generation");
    if (v.mv_size != 8) return corrupt("generation");
    *gen = get64le(v.mv_data);
    return 0;
}

/* Every write transaction ends here: the generation bump rides in the same
 * transaction, so a daemon that sees the new generation also sees the change. */
static int wtxn_commit(struct store *s, MDB_txn *txn)
{
    uint64_t gen = 0;
    uint8_t buf[8];
    MDB_val k = {10, "generation"}, v = {sizeof(buf), buf};
    int rc = meta_get_generation(s, txn, &gen);
    if (rc != 0) goto fail;
    put64le(buf, gen + 1);
    rc = mdb_put(txn, s->meta, &k, &v, 0);
    if (rc != 0) {
        rc = mdb_fail(rc, "generation");
        goto fail;
    }
    rc = mdb_txn_commit(txn);
    return rc ? mdb_fail(rc, "commit") : 0;
fail:
    mdb_txn_abort(txn);
    return rc;
}

/* ---- open / close ---- */

/* mkdir -p with mode 0700 for every directory it creates. */
static int make_dirs(const char *dir)
{
    char path[STORE_PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof(path))
        return set_err(-ENAMETOOLONG, "data directory: bad path length");
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return set_err(-errno, "mkdir %s: %s", path, strerror(errno));
        path[i] = saved;
    }
    struct stat st;
    if (stat(dir, &st) != 0) return set_err(-errno, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return set_err(-ENOTDIR, "%s: not a directory", dir);
    return 0;
}

static int open_dbs(struct store *s, int create)
{
    MDB_txn *txn = NULL;
    unsigned dflags = create ? MDB_CREATE : 0;
    uint32_t schema = 0;
    int rc = txn_begin(s, create ? 0 : MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    static const char *const names[] = {"orgs", "devices", "tokens", "meta"};
    MDB_dbi *dbis[] = {&s->orgs, &s->devices, &s->tokens, &s->meta};
    for (size_t i = 0; i < 4; i++) {
        rc = mdb_dbi_open(txn, names[i], dflags, dbis[i]);
        if (rc != 0) {
            rc = mdb_fail(rc, names[i]);
            goto fail;
        }
    }
    rc = meta_get32(s, txn, "schema", 0, &schema);
    if (rc != 0) goto fail;
    if (schema == 0 && create) {
        rc = meta_put32(s, txn, "schema", STORE_SCHEMA);
        if (rc != 0) goto fail;
        /* A fresh store starts at generation 1, never 0, so a poller that
         * starts from 0 always loads once. */
        return wtxn_commit(s, txn);
    }
    if (schema != STORE_SCHEMA) {
        rc = set_err(-EPROTO, "unsupported store schema %u (this build reads schema %u)", schema,
                     STORE_SCHEMA);
        goto fail;
    }
    /* Read-only or not, the commit is what keeps the DBI handles open. */
    rc = mdb_txn_commit(txn);
    return rc ? mdb_fail(rc, "open databases") : 0;
fail:
    mdb_txn_abort(txn);
    return rc;
}

int store_open(struct store **out, const char *data_dir, int create)
{
    char path[STORE_PATH_MAX];
    struct store *s = NULL;
    struct stat st;
    int rc, n;

    *out = NULL;
    n = snprintf(path, sizeof(path), "%s/%s", data_dir, STORE_FILE);
    if (n < 0 || (size_t)n >= sizeof(path))
        return set_err(-ENAMETOOLONG, "%s: path too long", data_dir);
    if (create) {
        rc = make_dirs(data_dir);
        if (rc != 0) return rc;
    } else if (stat(path, &st) != 0) {
        /* LMDB would create the file; without create the caller wants to know. */
        return set_err(-errno, "%s: %s", path, strerror(errno));
    }

    s = calloc(1, sizeof(*s));
    if (!s) return set_err(-ENOMEM, "store: out of memory");
    atomic_init(&s->gen_txn, NULL);
    rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        rc = mdb_fail(rc, "mdb_env_create");
        goto fail;
    }
    if ((rc = mdb_env_set_mapsize(s->env, STORE_MAP_SIZE)) != 0 ||
        (rc = mdb_env_set_maxdbs(s->env, STORE_MAX_DBS)) != 0) {
        rc = mdb_fail(rc, "configure environment");
        goto fail;
    }
    rc = mdb_env_open(s->env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600);
    if (rc != 0) {
        rc = mdb_fail(rc, path);
        goto fail;
    }
    /* Clear reader slots left by processes that died inside a read txn
     * (a killed CLI), which would otherwise pin old pages forever. */
    mdb_reader_check(s->env, NULL);
    rc = open_dbs(s, create);
    if (rc != 0) goto fail;
    *out = s;
    return 0;
fail:
    if (s->env) mdb_env_close(s->env);
    free(s);
    return rc;
}

void store_close(struct store *s)
{
    if (!s) return;
    MDB_txn *txn = atomic_exchange(&s->gen_txn, NULL);
    if (txn) mdb_txn_abort(txn);
    mdb_env_close(s->env);
    free(s);
}

/* ---- orgs ---- */

static size_t org_name_key(uint8_t *key, const char *name, size_t len)
{
    key[0] = 'n';
    key[1] = ':';
    memcpy(key + 2, name, len);
    return len + 2;
}

static void org_id_key(uint8_t key[6], uint32_t id)
{
    key[0] = 'i';
    key[1] = ':';
    put32be(key + 2, id);
}

/* Copies the name of an org record into name_out (STORE_NAME_MAX+1 bytes). */
static int org_decode(const MDB_val *v, uint64_t *created_ns, char *name_out)
{
    size_t nlen = v->mv_size - ORG_REC_FIXED;
    if (v->mv_size < ORG_REC_FIXED + 1 || nlen > STORE_NAME_MAX) return corrupt("org record");
    if (created_ns) *created_ns = get64le(v->mv_data);
    if (name_out) {
        memcpy(name_out, (const uint8_t *)v->mv_data + ORG_REC_FIXED, nlen);
        name_out[nlen] = '\0';
    }
    return 0;
}

static int org_get(struct store *s, MDB_txn *txn, uint32_t id, char *name_out)
{
    uint8_t key[6];
    MDB_val k = {sizeof(key), key}, v;
    org_id_key(key, id);
    int rc = mdb_get(txn, s->orgs, &k, &v);
    if (rc == MDB_NOTFOUND) return -ENOENT;
    if (rc != 0) return mdb_fail(rc, "org");
    return org_decode(&v, NULL, name_out);
}

int store_org_add(struct store *s, const char *name, uint32_t *id)
{
    size_t len = name_check(name);
    uint8_t nkey[2 + STORE_NAME_MAX], ikey[6], idv[4], rec[ORG_REC_FIXED + STORE_NAME_MAX];
    MDB_txn *txn = NULL;
    uint32_t next = 0;
    int rc;

    /* An all-digit name could not be told apart from an id in --org. */
    if (len == 0 || all_digits(name))
        return set_err(-EINVAL, "org '%.64s': invalid name", name ? name : "");
    rc = txn_begin(s, 0, &txn);
    if (rc != 0) return rc;
    rc = meta_get32(s, txn, "next_org", 1, &next);
    if (rc != 0) goto fail;
    if (next == 0 || next == UINT32_MAX) {
        rc = set_err(-ENOSPC, "org ids exhausted");
        goto fail;
    }
    MDB_val nk = {org_name_key(nkey, name, len), nkey}, nv = {sizeof(idv), idv};
    put32le(idv, next);
    rc = mdb_put(txn, s->orgs, &nk, &nv, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        rc = set_err(-EEXIST, "org '%s': already exists", name);
        goto fail;
    }
    if (rc != 0) {
        rc = mdb_fail(rc, "org name");
        goto fail;
    }
    org_id_key(ikey, next);
    put64le(rec, now_ns());
    memcpy(rec + ORG_REC_FIXED, name, len);
    MDB_val ik = {sizeof(ikey), ikey}, iv = {ORG_REC_FIXED + len, rec};
    rc = mdb_put(txn, s->orgs, &ik, &iv, MDB_NOOVERWRITE);
    if (rc != 0) {
        rc = rc == MDB_KEYEXIST ? corrupt("org id reused") : mdb_fail(rc, "org record");
        goto fail;
    }
    rc = meta_put32(s, txn, "next_org", next + 1);
    if (rc != 0) goto fail;
    rc = wtxn_commit(s, txn);
    if (rc == 0 && id) *id = next;
    return rc;
fail:
    mdb_txn_abort(txn);
    return rc;
}

/* Parses a decimal org id; 0 when s is not one (or does not fit). */
static uint32_t parse_id(const char *str)
{
    uint64_t v = 0;
    if (!all_digits(str)) return 0;
    for (; *str; str++) {
        v = v * 10 + (uint64_t)(*str - '0');
        if (v > UINT32_MAX) return 0;
    }
    return (uint32_t)v;
}

int store_org_find(struct store *s, const char *name_or_id, uint32_t *id, char *name_out)
{
    MDB_txn *txn = NULL;
    uint32_t found = 0;
    int rc;

    if (!name_or_id || !*name_or_id) return set_err(-EINVAL, "org '': invalid name");
    rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    if (all_digits(name_or_id)) {
        found = parse_id(name_or_id);
        rc = found ? org_get(s, txn, found, name_out) : -ENOENT;
    } else {
        size_t len = name_check(name_or_id);
        uint8_t nkey[2 + STORE_NAME_MAX];
        MDB_val k, v;
        if (len == 0) {
            rc = set_err(-EINVAL, "org '%.64s': invalid name", name_or_id);
            goto done;
        }
        k.mv_size = org_name_key(nkey, name_or_id, len);
        k.mv_data = nkey;
        rc = mdb_get(txn, s->orgs, &k, &v);
        if (rc == MDB_NOTFOUND) {
            rc = -ENOENT;
        } else if (rc != 0) {
            rc = mdb_fail(rc, "org name");
        } else if (v.mv_size != 4) {
            rc = corrupt("org name");
        } else {
            found = get32le(v.mv_data);
            if (name_out) memcpy(name_out, name_or_id, len + 1);
        }
    }
    if (rc == -ENOENT) set_err(0, "org '%s': not found", name_or_id);
done:
    mdb_txn_abort(txn);
    if (rc == 0 && id) *id = found;
    return rc;
}

int store_org_name(struct store *s, uint32_t id, char *name_out)
{
    MDB_txn *txn = NULL;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    rc = org_get(s, txn, id, name_out);
    mdb_txn_abort(txn);
    return rc;
}

int store_org_list(struct store *s, store_org_fn fn, void *ctx)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    uint8_t start[2] = {'i', ':'};
    MDB_val k = {sizeof(start), start}, v;
    char name[STORE_NAME_MAX + 1];
    uint64_t created = 0;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    rc = mdb_cursor_open(txn, s->orgs, &cur);
    if (rc != 0) {
        rc = mdb_fail(rc, "orgs cursor");
        goto done;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *kp = k.mv_data;
        if (k.mv_size < 2 || kp[0] != 'i' || kp[1] != ':') break;
        if (k.mv_size != 6) {
            rc = corrupt("org key");
            goto done;
        }
        rc = org_decode(&v, &created, name);
        if (rc != 0) goto done;
        rc = fn(ctx, get32be(kp + 2), name, created);
        if (rc != 0) goto done;
    }
    rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : mdb_fail(rc, "orgs cursor");
done:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- devices ---- */

static size_t device_name_key(uint8_t *key, uint32_t org, const char *name, size_t len)
{
    key[0] = 'n';
    key[1] = ':';
    put32be(key + 2, org);
    memcpy(key + 6, name, len);
    return len + 6;
}

static void device_id_key(uint8_t key[6], uint32_t id)
{
    key[0] = 'i';
    key[1] = ':';
    put32be(key + 2, id);
}

static void device_org_key(uint8_t key[10], uint32_t org, uint32_t id)
{
    key[0] = 'o';
    key[1] = ':';
    put32be(key + 2, org);
    put32be(key + 6, id);
}

struct device_rec {
    uint32_t org, state;
    uint64_t created_ns;
    char name[STORE_NAME_MAX + 1];
};

static int device_get(struct store *s, MDB_txn *txn, uint32_t id, struct device_rec *d)
{
    uint8_t key[6];
    MDB_val k = {sizeof(key), key}, v;
    device_id_key(key, id);
    int rc = mdb_get(txn, s->devices, &k, &v);
    if (rc == MDB_NOTFOUND) return -ENOENT;
    if (rc != 0) return mdb_fail(rc, "device");
    size_t nlen = v.mv_size - DEVICE_REC_FIXED;
    if (v.mv_size < DEVICE_REC_FIXED + 1 || nlen > STORE_NAME_MAX) return corrupt("device record");
    const uint8_t *p = v.mv_data;
    d->org = get32le(p);
    d->state = get32le(p + 4);
    d->created_ns = get64le(p + 8);
    memcpy(d->name, p + DEVICE_REC_FIXED, nlen);
    d->name[nlen] = '\0';
    return 0;
}

static const char hexdigits[] = "0123456789abcdef";

/* Fills token_out with "slk_" + 40 lowercase hex digits from wolfCrypt's DRBG. */
static int token_generate(char *token_out)
{
    WC_RNG rng;
    uint8_t raw[TOKEN_RANDOM_BYTES];
    int rc = wc_InitRng(&rng);
    if (rc != 0) return set_err(-EIO, "wc_InitRng: random generator unavailable");
    rc = wc_RNG_GenerateBlock(&rng, raw, sizeof(raw));
    wc_FreeRng(&rng);
    if (rc != 0) {
        explicit_bzero(raw, sizeof(raw));
        return set_err(-EIO, "wc_RNG_GenerateBlock: random generator failed");
    }
    memcpy(token_out, TOKEN_PREFIX, sizeof(TOKEN_PREFIX) - 1);
    char *p = token_out + sizeof(TOKEN_PREFIX) - 1;
    for (size_t i = 0; i < sizeof(raw); i++) {
        *p++ = hexdigits[raw[i] >> 4];
        *p++ = hexdigits[raw[i] & 15];
    }
    *p = '\0';
    explicit_bzero(raw, sizeof(raw));
    return 0;
}

void store_token_digest(const char *token, size_t len, uint8_t out[STORE_DIGEST_LEN])
{
    /* A failed hash must not leave stale bytes that could equal a real digest;
     * all-zero is no token's digest in practice. */
    if (len > UINT32_MAX || wc_Sha256Hash((const byte *)token, (word32)len, out) != 0)
        memset(out, 0, STORE_DIGEST_LEN);
}

int store_frame_keys(const char *token, size_t len, uint8_t stored_key[STORE_KEY_LEN],
                     uint8_t server_key[STORE_KEY_LEN])
{
    struct frame_keys k;
    if (len > STORE_TOKEN_MAX || frame_auth_derive(token, len, &k)) return -EIO;
    memcpy(stored_key, k.stored_key, STORE_KEY_LEN);
    memcpy(server_key, k.server_key, STORE_KEY_LEN);
    explicit_bzero(&k, sizeof k);
    return 0;
}

/* 1 when a stored digest begins with digest's first STORE_TOKEN_ID_LEN bytes
 * (digests sort as keys, so the first one at or after the prefix tells), 0
 * when none does, else a store error. */
static int token_id_taken(struct store *s, MDB_txn *txn, const uint8_t digest[STORE_DIGEST_LEN])
{
    MDB_cursor *cur;
    uint8_t prefix[STORE_DIGEST_LEN] = {0};
    memcpy(prefix, digest, STORE_TOKEN_ID_LEN);
    MDB_val k = {sizeof prefix, prefix}, v;
    int rc = mdb_cursor_open(txn, s->tokens, &cur);
    if (rc != 0) return mdb_fail(rc, "tokens cursor");
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc != 0) return mdb_fail(rc, "tokens cursor");
    return k.mv_size >= STORE_TOKEN_ID_LEN && !memcmp(k.mv_data, digest, STORE_TOKEN_ID_LEN);
}

#define CERT_LABEL "sluice device client certificate v1" /* with its NUL */

void store_cert_digest(const void *der, size_t len, uint8_t out[STORE_DIGEST_LEN])
{
    wc_Sha256 h;
    if (len > UINT32_MAX || wc_InitSha256(&h) != 0 ||
        wc_Sha256Update(&h, (const byte *)CERT_LABEL, sizeof CERT_LABEL) != 0 ||
        wc_Sha256Update(&h, (const byte *)der, (word32)len) != 0 || wc_Sha256Final(&h, out) != 0)
        memset(out, 0, STORE_DIGEST_LEN);
    wc_Sha256Free(&h);
}

int store_device_add_cert(struct store *s, uint32_t device_id,
                          const uint8_t digest[STORE_DIGEST_LEN])
{
    MDB_txn *txn;
    struct device_rec d;
    uint8_t tokv[TOKEN_REC_LEN];
    int rc = txn_begin(s, 0, &txn);
    if (rc != 0) return rc;
    rc = device_get(s, txn, device_id, &d);
    if (rc == -ENOENT) rc = set_err(-ENOENT, "no device %u", device_id);
    if (rc != 0) goto fail;
    put32le(tokv, device_id);
    put32le(tokv + 4, d.org);
    put32le(tokv + 8, d.state);
    MDB_val tk = {STORE_DIGEST_LEN, (void *)digest}, tv = {sizeof(tokv), tokv};
    rc = mdb_put(txn, s->tokens, &tk, &tv, MDB_NOOVERWRITE);
    if (rc != 0) {
        rc = rc == MDB_KEYEXIST ? set_err(-EEXIST, "that certificate is registered already")
                                : mdb_fail(rc, "certificate");
        goto fail;
    }
    return wtxn_commit(s, txn);
fail:
    mdb_txn_abort(txn);
    return rc;
}

int store_device_add(struct store *s, uint32_t org, const char *name, char *token_out,
                     uint32_t *device_id)
{
    size_t len = name_check(name);
    uint8_t nkey[6 + STORE_NAME_MAX], ikey[6], okey[10], idv[4], tokv[TOKEN_REC_KEYS];
    uint8_t rec[DEVICE_REC_FIXED + STORE_NAME_MAX], digest[STORE_DIGEST_LEN];
    MDB_txn *txn = NULL;
    uint32_t next = 0;
    int rc;

    token_out[0] = '\0';
    if (len == 0) return set_err(-EINVAL, "device '%.64s': invalid name", name ? name : "");
    rc = txn_begin(s, 0, &txn);
    if (rc != 0) return rc;
    rc = org_get(s, txn, org, NULL);
    if (rc != 0) {
        if (rc == -ENOENT) set_err(0, "org %u: not found", org);
        goto fail;
    }
    rc = meta_get32(s, txn, "next_device", 1, &next);
    if (rc != 0) goto fail;
    if (next == 0 || next == UINT32_MAX) {
        rc = set_err(-ENOSPC, "device ids exhausted");
        goto fail;
    }
    MDB_val nk = {device_name_key(nkey, org, name, len), nkey}, nv = {sizeof(idv), idv};
    put32le(idv, next);
    rc = mdb_put(txn, s->devices, &nk, &nv, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        rc = set_err(-EEXIST, "device '%s': already exists", name);
        goto fail;
    }
    if (rc != 0) {
        rc = mdb_fail(rc, "device name");
        goto fail;
    }

    /* A digest collision at 160 bits will not happen; if the RNG were broken
     * enough to repeat, refusing beats handing out a shared credential. The
     * frame protocol names a token by its digest's first 8 bytes (token_id),
     * which must be unique too: at 64 bits two tokens in a large fleet could
     * share one, and then a fresh token is drawn. */
    for (int tries = 0;; tries++) {
        rc = token_generate(token_out);
        if (rc != 0) goto fail;
        store_token_digest(token_out, strlen(token_out), digest);
        rc = token_id_taken(s, txn, digest);
        if (rc < 0) goto fail;
        if (rc == 0) break;
        if (tries == 8) {
            rc = set_err(-EIO, "token: token id collisions, random generator suspect");
            goto fail;
        }
    }
    put32le(tokv, next);
    put32le(tokv + 4, org);
    put32le(tokv + 8, STORE_DEVICE_ACTIVE);
    rc = store_frame_keys(token_out, strlen(token_out), tokv + TOKEN_REC_LEN,
                          tokv + TOKEN_REC_LEN + STORE_KEY_LEN);
    if (rc != 0) {
        rc = set_err(-EIO, "token: HMAC failed");
        goto fail;
    }
    MDB_val tk = {sizeof(digest), digest}, tv = {sizeof(tokv), tokv};
    rc = mdb_put(txn, s->tokens, &tk, &tv, MDB_NOOVERWRITE);
    if (rc != 0) {
        rc = rc == MDB_KEYEXIST ? set_err(-EIO, "token: digest collision") : mdb_fail(rc, "token");
        goto fail;
    }

    put32le(rec, org);
    put32le(rec + 4, STORE_DEVICE_ACTIVE);
    put64le(rec + 8, now_ns());
    memcpy(rec + 16, digest, sizeof(digest));
    memcpy(rec + DEVICE_REC_FIXED, name, len);
    device_id_key(ikey, next);
    MDB_val ik = {sizeof(ikey), ikey}, iv = {DEVICE_REC_FIXED + len, rec};
    rc = mdb_put(txn, s->devices, &ik, &iv, MDB_NOOVERWRITE);
    if (rc != 0) {
        rc = rc == MDB_KEYEXIST ? corrupt("device id reused") : mdb_fail(rc, "device record");
        goto fail;
    }
    device_org_key(okey, org, next);
    MDB_val ok = {sizeof(okey), okey}, ov = {0, okey};
    rc = mdb_put(txn, s->devices, &ok, &ov, 0);
    if (rc != 0) {
        rc = mdb_fail(rc, "device index");
        goto fail;
    }
    rc = meta_put32(s, txn, "next_device", next + 1);
    if (rc != 0) goto fail;
    rc = wtxn_commit(s, txn);
    if (rc != 0) {
        explicit_bzero(token_out, STORE_TOKEN_MAX);
        return rc;
    }
    if (device_id) *device_id = next;
    return 0;
fail:
    mdb_txn_abort(txn);
    explicit_bzero(token_out, STORE_TOKEN_MAX);
    return rc;
}

int store_device_find(struct store *s, uint32_t org, const char *name, uint32_t *device_id)
{
    size_t len = name_check(name);
    uint8_t nkey[6 + STORE_NAME_MAX];
    MDB_txn *txn = NULL;
    MDB_val k, v;
    int rc;

    if (len == 0) return set_err(-EINVAL, "device '%.64s': invalid name", name ? name : "");
    rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    k.mv_size = device_name_key(nkey, org, name, len);
    k.mv_data = nkey;
    rc = mdb_get(txn, s->devices, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rc = set_err(-ENOENT, "device '%s': not found", name);
    } else if (rc != 0) {
        rc = mdb_fail(rc, "device name");
    } else if (v.mv_size != 4) {
        rc = corrupt("device name");
    } else if (device_id) {
        *device_id = get32le(v.mv_data);
    }
    mdb_txn_abort(txn);
    return rc;
}

int store_device_name(struct store *s, uint32_t device_id, char *name_out, uint32_t *org)
{
    struct device_rec d;
    MDB_txn *txn = NULL;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    rc = device_get(s, txn, device_id, &d);
    mdb_txn_abort(txn);
    if (rc != 0) return rc;
    if (name_out) memcpy(name_out, d.name, strlen(d.name) + 1);
    if (org) *org = d.org;
    return 0;
}

int store_device_list(struct store *s, uint32_t org, store_device_fn fn, void *ctx)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    uint8_t start[10];
    MDB_val k = {6, start}, v;
    struct device_rec d;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    rc = org_get(s, txn, org, NULL);
    if (rc != 0) goto done;
    rc = mdb_cursor_open(txn, s->devices, &cur);
    if (rc != 0) {
        rc = mdb_fail(rc, "devices cursor");
        goto done;
    }
    device_org_key(start, org, 0);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const uint8_t *kp = k.mv_data;
        if (k.mv_size != 10 || memcmp(kp, start, 6) != 0) break;
        uint32_t id = get32be(kp + 6);
        rc = device_get(s, txn, id, &d);
        if (rc != 0) {
            if (rc == -ENOENT) rc = corrupt("device index");
            goto done;
        }
        rc = fn(ctx, id, d.name, d.state, d.created_ns);
        if (rc != 0) goto done;
    }
    rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : mdb_fail(rc, "devices cursor");
done:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- tokens ---- */

int store_token_foreach(struct store *s, store_token_fn fn, void *ctx)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    rc = mdb_cursor_open(txn, s->tokens, &cur);
    if (rc != 0) {
        rc = mdb_fail(rc, "tokens cursor");
        goto done;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != STORE_DIGEST_LEN ||
            (v.mv_size != TOKEN_REC_LEN && v.mv_size != TOKEN_REC_KEYS)) {
            rc = corrupt("token");
            goto done;
        }
        const uint8_t *p = v.mv_data;
        rc = fn(ctx, k.mv_data, get32le(p), get32le(p + 4), get32le(p + 8),
                v.mv_size == TOKEN_REC_KEYS ? p + TOKEN_REC_LEN : NULL);
        if (rc != 0) goto done;
    }
    rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : mdb_fail(rc, "tokens cursor");
done:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- MQTT sessions ---- */

/* The DBI is opened once, in a write transaction of its own (LMDB: a
 * transaction that opens a DBI must end before another may open one). */
static int sessions_dbi(struct store *s)
{
    if (atomic_load(&s->sessions_state) == 1) return 0;
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc != 0) return rc;
    rc = mdb_dbi_open(txn, "mqtt_sessions", MDB_CREATE, &s->sessions);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return mdb_fail(rc, "mqtt_sessions");
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) return mdb_fail(rc, "open mqtt_sessions");
    atomic_store(&s->sessions_state, 1);
    return 0;
}

int store_sessions_apply(struct store *s, const struct store_kv *ops, size_t n)
{
    if (n == 0) return 0;
    int rc = sessions_dbi(s);
    if (rc != 0) return rc;
    MDB_txn *txn;
    rc = txn_begin(s, 0, &txn);
    if (rc != 0) return rc;
    for (size_t i = 0; i < n; i++) {
        MDB_val k = {ops[i].klen, (void *)ops[i].key};
        if (ops[i].vlen) {
            MDB_val v = {ops[i].vlen, (void *)ops[i].val};
            rc = mdb_put(txn, s->sessions, &k, &v, 0);
        } else {
            rc = mdb_del(txn, s->sessions, &k, NULL);
            if (rc == MDB_NOTFOUND) rc = 0;
        }
        if (rc != 0) {
            mdb_txn_abort(txn);
            return mdb_fail(rc, "mqtt_sessions write");
        }
    }
    /* no generation bump: the device table did not change */
    rc = mdb_txn_commit(txn);
    return rc ? mdb_fail(rc, "mqtt_sessions commit") : 0;
}

int store_sessions_foreach(struct store *s, store_kv_fn fn, void *ctx)
{
    int rc = sessions_dbi(s);
    if (rc != 0) return rc;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != 0) return rc;
    rc = mdb_cursor_open(txn, s->sessions, &cur);
    if (rc != 0) {
        rc = mdb_fail(rc, "mqtt_sessions cursor");
        goto done;
    }
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rc = fn(ctx, k.mv_data, k.mv_size, v.mv_data, v.mv_size);
        if (rc != 0) goto done;
    }
    rc = (rc == 0 || rc == MDB_NOTFOUND) ? 0 : mdb_fail(rc, "mqtt_sessions cursor");
done:
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

/* ---- generation ---- */

int store_generation(struct store *s, uint64_t *gen)
{
    MDB_txn *txn = atomic_exchange(&s->gen_txn, NULL);
    int rc;

    /* Renewing a reset transaction reuses its reader slot: no slot search,
     * no allocation, which is what makes polling several times a second free. */
    if (txn) {
        rc = mdb_txn_renew(txn);
        if (rc != 0) {
            mdb_txn_abort(txn);
            txn = NULL;
        }
    }
    if (!txn) {
        rc = txn_begin(s, MDB_RDONLY, &txn);
        if (rc != 0) return rc;
    }
    rc = meta_get_generation(s, txn, gen);
    /* Reset, never hold: an open read snapshot would stop writers from reusing
     * pages and grow the file while the daemon runs. */
    mdb_txn_reset(txn);
    MDB_txn *expected = NULL;
    if (!atomic_compare_exchange_strong(&s->gen_txn, &expected, txn)) mdb_txn_abort(txn);
    return rc;
}
