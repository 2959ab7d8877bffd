/* storage/store.h — the credential and account store, on LMDB.
 *
 * Environment: DATA/sluice.mdb (a single file, MDB_NOSUBDIR) with named DBs
 * `orgs`, `devices`, `tokens`, `meta` (and later users, members, usage). Tokens
 * are never stored: only their SHA-256 digest (wolfCrypt). Every write bumps
 * meta.generation so a running daemon notices and reloads its token table.
 * The CLI writes while sluiced runs; LMDB's locking makes that safe.
 *
 * Returns: 0 on success, -EEXIST (name taken), -ENOENT (no such org/device),
 * -EINVAL (bad name), -EIO (LMDB error; store_last_error() says which), -errno
 * (among them -ENOSPC: map full or ids exhausted; -EPROTO: unknown schema).
 *
 * Threads: a struct store may be used from several threads at once (the env is
 * opened MDB_NOTLS; every call runs its own transaction). Open it once per
 * process: LMDB forbids two handles on one environment in the same process.
 * Callbacks of the *_list/_foreach functions run inside a read transaction: keep
 * them short; a non-zero return stops the walk and is returned to the caller.
 */
#ifndef SLUICE_STORAGE_STORE_H
#define SLUICE_STORAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_NAME_MAX   64 /* org and device names: [A-Za-z0-9][A-Za-z0-9._-]{0,63} */
#define STORE_TOKEN_MAX  64 /* printable token length incl. NUL */
#define STORE_DIGEST_LEN 32 /* SHA-256 */

enum store_device_state { STORE_DEVICE_ACTIVE = 0, STORE_DEVICE_REVOKED = 1 };

struct store;

/* Opens (creating DATA, mode 0700 with missing parents, and the environment
 * when create is set) the store. Without create a missing DATA/sluice.mdb is
 * -ENOENT and nothing is created; -ENOTDIR when DATA is not a directory. */
int store_open(struct store **out, const char *data_dir, int create);
void store_close(struct store *s);
/* Text of the last failure of a store call in the calling thread (per thread,
 * like errno; s may be NULL, e.g. after store_open failed). Never NULL. */
const char *store_last_error(const struct store *s);

/* Orgs: ids are assigned sequentially from 1. */
int store_org_add(struct store *s, const char *name, uint32_t *id);
/* Finds an org by name or decimal id; name_out (STORE_NAME_MAX+1 bytes) may be NULL.
 * -ENOENT when absent, -EINVAL when name_or_id is neither a name nor an id. */
int store_org_find(struct store *s, const char *name_or_id, uint32_t *id, char *name_out);
int store_org_name(struct store *s, uint32_t id, char *name_out);
typedef int (*store_org_fn)(void *ctx, uint32_t id, const char *name, uint64_t created_ns);
int store_org_list(struct store *s, store_org_fn fn, void *ctx);

/* Devices: ids are global, sequential from 1; names unique within an org.
 * store_device_add generates a token of >= 128 random bits (wolfCrypt RNG),
 * writes it NUL-terminated to token_out (STORE_TOKEN_MAX bytes) and stores only
 * its digest. */
int store_device_add(struct store *s, uint32_t org, const char *name, char *token_out,
                     uint32_t *device_id);
int store_device_find(struct store *s, uint32_t org, const char *name, uint32_t *device_id);
int store_device_name(struct store *s, uint32_t device_id, char *name_out, uint32_t *org);
typedef int (*store_device_fn)(void *ctx, uint32_t id, const char *name, uint32_t state,
                               uint64_t created_ns);
int store_device_list(struct store *s, uint32_t org, store_device_fn fn, void *ctx);

/* Tokens: every stored digest with its device, org and state, and the frame
 * protocol's verifiers (StoredKey then ServerKey, 2 x STORE_KEY_LEN bytes) or
 * NULL when the token has none (made before they were stored; a certificate). */
typedef int (*store_token_fn)(void *ctx, const uint8_t digest[STORE_DIGEST_LEN], uint32_t device,
                              uint32_t org, uint32_t state, const uint8_t *keys);
int store_token_foreach(struct store *s, store_token_fn fn, void *ctx);

/* SHA-256 of a token as presented on the wire. */
void store_token_digest(const char *token, size_t len, uint8_t out[STORE_DIGEST_LEN]);

/* The frame protocol (docs/frame-protocol.md §3) names a token by the first
 * STORE_TOKEN_ID_LEN bytes of its digest, and proves it against two
 * verifiers derived from it: StoredKey = SHA-256(ClientKey) and ServerKey.
 * Neither lets anyone make a proof, so the store can keep them. device add
 * stores them with the token and keeps token ids unique. Returns 0, or -EIO
 * (a token longer than 64 bytes, or the HMAC failed). */
#define STORE_TOKEN_ID_LEN 8
#define STORE_KEY_LEN      32
int store_frame_keys(const char *token, size_t len, uint8_t stored_key[STORE_KEY_LEN],
                     uint8_t server_key[STORE_KEY_LEN]);

/* Client certificates (mutual TLS): SHA-256 over a label of their own and the
 * certificate's DER, so that no token (at most 64 bytes, hashed bare) can ever
 * have the digest of a certificate, which is public. store_device_add_cert
 * registers one for a device, beside its token in `tokens` (the daemon's table
 * then maps it to the device and org alike). -ENOENT no such device, -EEXIST
 * that certificate is registered already. */
void store_cert_digest(const void *der, size_t len, uint8_t out[STORE_DIGEST_LEN]);
int store_device_add_cert(struct store *s, uint32_t device_id,
                          const uint8_t digest[STORE_DIGEST_LEN]);

/* MQTT sessions kept between connections (DB `mqtt_sessions`, created on first
 * use). Keys and values are the engine's (engine/clients.c encodes them); the
 * store only keeps them. These writes do not bump meta.generation: they are the
 * daemon's own state, not the device table.
 * store_sessions_apply writes n puts (vlen > 0) and deletes (vlen == 0) in one
 * durable transaction, in order. */
struct store_kv {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
};
int store_sessions_apply(struct store *s, const struct store_kv *ops, size_t n);
typedef int (*store_kv_fn)(void *ctx, const void *key, size_t klen, const void *val, size_t vlen);
int store_sessions_foreach(struct store *s, store_kv_fn fn, void *ctx);

/* meta.generation: bumped by every write. A cheap read-only transaction. */
int store_generation(struct store *s, uint64_t *gen);

#endif
