/* engine/auth.h — the in-memory token table.
 *
 * An immutable open-addressing hash table (XXH3 over the SHA-256 digest) from
 * token digest to {device, org, state}. It is built off the data path from the
 * store, published by one atomic pointer swap, and read without locks; the engine
 * frees a retired table once every worker has passed a loop turn (epochs).
 */
#ifndef SLUICE_ENGINE_AUTH_H
#define SLUICE_ENGINE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/ratelimit.h"
#include "storage/store.h"

#define AUTH_TOKEN_MAX 64 /* longer "tokens" are refused without hashing */

struct auth_entry {
    uint8_t digest[STORE_DIGEST_LEN];
    uint32_t device;
    uint32_t org;
    uint32_t state; /* enum store_device_state */
    uint32_t keys;  /* the frame verifiers: index + 1 into the keys array, 0: none */
};

/* A token's frame protocol verifiers (store_frame_keys). */
struct auth_keys {
    uint8_t stored_key[STORE_KEY_LEN];
    uint8_t server_key[STORE_KEY_LEN];
};

struct auth_table;

/* Builds a table from n entries and nkeys verifiers (both copied; entries name
 * theirs by index + 1 in keys). Returns NULL on allocation failure. */
struct auth_table *auth_table_build(const struct auth_entry *entries, size_t n,
                                    const struct auth_keys *keys, size_t nkeys);

/* Builds a table from every token in the store. Returns 0 or a store error. */
int auth_table_load(struct store *s, struct auth_table **out);

/* Looks a digest up; the comparison of the stored digest is constant time.
 * Returns the entry (valid while the table is) or NULL. */
const struct auth_entry *auth_table_lookup(const struct auth_table *t,
                                           const uint8_t digest[STORE_DIGEST_LEN]);

size_t auth_table_size(const struct auth_table *t);

/* The frame protocol's lookup: the entry whose digest starts with token_id
 * (STORE_TOKEN_ID_LEN bytes) and has verifiers, with *keys set; NULL when
 * none (t may be NULL). The state is the caller's to check. */
const struct auth_entry *auth_table_lookup_id(const struct auth_table *t, const uint8_t *token_id,
                                              const struct auth_keys **keys);
/* Whether token_id still names an active token of (device, org): a live
 * frame session asks after the table changed (revocation, rotation). */
bool auth_id_still_names(const struct auth_table *t, const uint8_t *token_id, uint32_t device,
                         uint32_t org);

enum auth_result { AUTH_OK = 0, AUTH_FAIL, AUTH_THROTTLED };

/* Resolves a device token against table t (may be NULL: nothing is valid).
 * A valid, active token is AUTH_OK with *out set, always: the limiter only
 * ever slows down failing attempts, so a device behind the same address as a
 * misbehaving one is never locked out. A missing, unknown or revoked token is
 * AUTH_THROTTLED when peer has used up its failed attempts (rl, per second per
 * address), else AUTH_FAIL (and the attempt is charged to peer). Callers
 * answer AUTH_FAIL alike for all three causes (no oracle). */
int auth_device(const struct auth_table *t, struct ratelimit *rl, const uint8_t peer[16],
                uint64_t now_ms, const char *tok, size_t n, const struct auth_entry **out);
/* A client certificate's digest (store_cert_digest): AUTH_OK with *out when
 * it is registered to an active device, else AUTH_FAIL. No limiter: a
 * certificate the CA did not sign never gets past the handshake. */
int auth_device_cert(const struct auth_table *t, const uint8_t digest[STORE_DIGEST_LEN],
                     const struct auth_entry **out);
void auth_table_free(struct auth_table *t);

#endif
