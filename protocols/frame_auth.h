/* protocols/frame_auth.h — the frame protocol's handshake cryptography
 * (docs/frame-protocol.md §3), SCRAM-SHA-256 style, on wolfCrypt.
 *
 * Pure functions over caller buffers: no I/O, no allocation, no state. The
 * messages they sign are the handshake frames byte for byte as sent
 * (AuthMessage = HELLO || CHALLENGE; the server signature adds PROOF).
 * Returns: 0, or -EIO when wolfCrypt failed (never a partial result: the
 * outputs are zeroed then). frame_auth_verify returns true or false.
 */
#ifndef SLUICE_PROTOCOLS_FRAME_AUTH_H
#define SLUICE_PROTOCOLS_FRAME_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FRAME_KEY_LEN 32

struct frame_keys {
    uint8_t token_id[8];               /* SHA-256(T)[0..8) */
    uint8_t client_key[FRAME_KEY_LEN]; /* the device's secret: never stored by the server */
    uint8_t stored_key[FRAME_KEY_LEN]; /* SHA-256(ClientKey): the server's verifier */
    uint8_t server_key[FRAME_KEY_LEN]; /* the server's proof key */
};

/* Derives every key of token T (n bytes, 1..64). */
int frame_auth_derive(const char *token, size_t n, struct frame_keys *out);

/* HMAC-SHA-256 (the one primitive the rest is built of). */
int frame_auth_hmac(const void *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[FRAME_KEY_LEN]);

/* The device's proof over AuthMessage: ClientKey XOR HMAC(StoredKey, msg). */
int frame_auth_proof(const struct frame_keys *k, const void *msg, size_t n,
                     uint8_t proof[FRAME_KEY_LEN]);

/* The server's check: SHA-256(proof XOR HMAC(stored_key, msg)) == stored_key,
 * compared in constant time. */
bool frame_auth_verify(const uint8_t stored_key[FRAME_KEY_LEN], const void *msg, size_t n,
                       const uint8_t proof[FRAME_KEY_LEN]);

/* server_signature = HMAC(server_key, AuthMessage || PROOF frame): msg is
 * all three frames. */
int frame_auth_server_signature(const uint8_t server_key[FRAME_KEY_LEN], const void *msg, size_t n,
                                uint8_t out[FRAME_KEY_LEN]);

/* UDP (§6): the session key and id of a completed handshake; ClientKey is
 * the device's, or the one the server recovered from the proof. msg is
 * HELLO || CHALLENGE || PROOF as for the server signature. */
int frame_auth_session_key(const uint8_t client_key[FRAME_KEY_LEN], const void *msg, size_t n,
                           uint8_t key[FRAME_KEY_LEN], uint8_t session_id[8]);

/* The 8-byte MAC of a session datagram: dir 0 from the device, 1 from the
 * server; head is session_id || dgram_seq varint (hlen bytes), body the frames. */
int frame_auth_udp_mac(const uint8_t key[FRAME_KEY_LEN], uint8_t dir, const void *head, size_t hlen,
                       const void *body, size_t blen, uint8_t mac[8]);

/* The server's check of a proof that also hands back the recovered ClientKey
 * (for the UDP session key): like frame_auth_verify. */
bool frame_auth_verify_key(const uint8_t stored_key[FRAME_KEY_LEN], const void *msg, size_t n,
                           const uint8_t proof[FRAME_KEY_LEN], uint8_t client_key[FRAME_KEY_LEN]);

#endif
