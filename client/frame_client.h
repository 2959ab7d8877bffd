/* client/frame_client.h — the frame client's internals that tests check
 * against docs/frame-protocol.md §9: the key derivations of §3, the
 * handshake's MACs, and UDP's session id and datagram MACs (§6). The client itself is public:
 * sluice_frame_client_* in include/sluice.h. Hidden inside libsluice.
 */
#ifndef SLUICE_CLIENT_FRAME_CLIENT_H
#define SLUICE_CLIENT_FRAME_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "client/sha256.h"
#include "protocols/frame.h"

/* What a device keeps of its token (§3): never the token itself, nor K. */
struct frame_client_keys {
    uint8_t token_id[FRAME_TOKEN_ID_LEN];
    uint8_t client_key[SHA256_LEN];
    uint8_t stored_key[SHA256_LEN];
    uint8_t server_key[SHA256_LEN];
};

/* Derives token_id, ClientKey, StoredKey and ServerKey from token[0..n).
 * K, the intermediate, is written to k_out when not NULL (for tests) and
 * wiped otherwise. */
void frame_client_keys(struct frame_client_keys *keys, const char *token, size_t n,
                       uint8_t k_out[SHA256_LEN]);

/* ClientSignature = HMAC(StoredKey, AuthMessage) and client_proof =
 * ClientKey XOR ClientSignature; auth is HELLO || CHALLENGE as sent.
 * client_sig may be NULL. */
void frame_client_proof(const struct frame_client_keys *keys, const uint8_t *auth, size_t n,
                        uint8_t client_sig[SHA256_LEN], uint8_t proof[SHA256_LEN]);

/* server_signature = HMAC(ServerKey, AuthMessage || PROOF frame); auth is the
 * three frames as sent. */
void frame_client_server_signature(const struct frame_client_keys *keys, const uint8_t *auth,
                                   size_t n, uint8_t out[SHA256_LEN]);

/* session_key = HMAC(ClientKey, "sluice session key v1" || AuthMessage ||
 * PROOF frame) (§6, for UDP's datagram MACs). */
void frame_client_session_key(const struct frame_client_keys *keys, const uint8_t *auth, size_t n,
                              uint8_t out[SHA256_LEN]);

/* ---- UDP datagrams (§6) ---- */

#define FRAME_CLIENT_SID_LEN 8 /* session_id */
#define FRAME_CLIENT_MAC8    8 /* a session datagram's MAC */

/* session_id = HMAC(session_key, "sluice udp id v1")[0..8). */
void frame_client_session_id(const uint8_t key[SHA256_LEN], uint8_t sid[FRAME_CLIENT_SID_LEN]);

/* Writes the session datagram sid | dgram_seq | frames[0..n) | mac8 at out
 * (cap bytes), dir 0 from the device, 1 from the server. frames may already
 * sit at out + 8 + the varint's length (written in place). Returns its
 * length, 0 when it does not fit. */
size_t frame_client_dgram_seal(const uint8_t key[SHA256_LEN],
                               const uint8_t sid[FRAME_CLIENT_SID_LEN], uint8_t dir,
                               uint64_t dgram_seq, const uint8_t *frames, size_t n, uint8_t *out,
                               size_t cap);

/* Checks the session datagram p[0..n): its session id is sid and its MAC
 * (direction dir) verifies. Returns 1 with *dgram_seq and the frames as
 * (*frames, *fn), a slice of p; 0 when it is not one of this session's (the
 * caller ignores it). Replays are the caller's to spot. */
int frame_client_dgram_open(const uint8_t key[SHA256_LEN], const uint8_t sid[FRAME_CLIENT_SID_LEN],
                            uint8_t dir, const uint8_t *p, size_t n, uint64_t *dgram_seq,
                            const uint8_t **frames, size_t *fn);

#endif
