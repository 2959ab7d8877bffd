/* protocols/frame_auth.c — the frame handshake's cryptography; see frame_auth.h. */
#include "protocols/frame_auth.h"

#include <errno.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/sha256.h>

int frame_auth_hmac(const void *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[FRAME_KEY_LEN])
{
    Hmac h;
    int rc = wc_HmacInit(&h, NULL, INVALID_DEVID);
    if (rc == 0) rc = wc_HmacSetKey(&h, WC_SHA256, key, (word32)klen);
    if (rc == 0) rc = wc_HmacUpdate(&h, msg, (word32)mlen);
    if (rc == 0) rc = wc_HmacFinal(&h, out);
    wc_HmacFree(&h);
    if (rc == 0) return 0;
    memset(out, 0, FRAME_KEY_LEN);
    return -EIO;
}

int frame_auth_derive(const char *token, size_t n, struct frame_keys *out)
{
    static const char label[] = "sluice frame key v1";
    uint8_t k[FRAME_KEY_LEN], digest[32];
    int rc = -EIO;
    if (n == 0 || n > 64) goto done;
    if (wc_Sha256Hash((const byte *)token, (word32)n, digest) != 0 ||
        frame_auth_hmac(token, n, label, sizeof label - 1, k) ||
        frame_auth_hmac(k, sizeof k, "Client Key", 10, out->client_key) ||
        wc_Sha256Hash(out->client_key, FRAME_KEY_LEN, out->stored_key) != 0 ||
        frame_auth_hmac(k, sizeof k, "Server Key", 10, out->server_key))
        goto done;
    memcpy(out->token_id, digest, sizeof out->token_id);
    rc = 0;
done:
    explicit_bzero(k, sizeof k);
    if (rc) explicit_bzero(out, sizeof *out);
    return rc;
}

int frame_auth_proof(const struct frame_keys *k, const void *msg, size_t n,
                     uint8_t proof[FRAME_KEY_LEN])
{
    uint8_t sig[FRAME_KEY_LEN];
    if (frame_auth_hmac(k->stored_key, FRAME_KEY_LEN, msg, n, sig)) {
        memset(proof, 0, FRAME_KEY_LEN);
        return -EIO;
    }
    for (int i = 0; i < FRAME_KEY_LEN; i++)
        proof[i] = k->client_key[i] ^ sig[i];
    return 0;
}

bool frame_auth_verify_key(const uint8_t stored_key[FRAME_KEY_LEN], const void *msg, size_t n,
                           const uint8_t proof[FRAME_KEY_LEN], uint8_t client_key[FRAME_KEY_LEN])
{
    uint8_t sig[FRAME_KEY_LEN], h[32];
    if (frame_auth_hmac(stored_key, FRAME_KEY_LEN, msg, n, sig)) return false;
    for (int i = 0; i < FRAME_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    if (wc_Sha256Hash(client_key, FRAME_KEY_LEN, h) != 0) {
        explicit_bzero(client_key, FRAME_KEY_LEN);
        return false;
    }
    uint8_t acc = 0;
    for (int i = 0; i < FRAME_KEY_LEN; i++)
        acc |= (uint8_t)(h[i] ^ stored_key[i]);
    if (acc != 0) explicit_bzero(client_key, FRAME_KEY_LEN);
    return acc == 0;
}

bool frame_auth_verify(const uint8_t stored_key[FRAME_KEY_LEN], const void *msg, size_t n,
                       const uint8_t proof[FRAME_KEY_LEN])
{
    uint8_t ck[FRAME_KEY_LEN];
    bool ok = frame_auth_verify_key(stored_key, msg, n, proof, ck);
    explicit_bzero(ck, sizeof ck);
    return ok;
}

int frame_auth_session_key(const uint8_t client_key[FRAME_KEY_LEN], const void *msg, size_t n,
                           uint8_t key[FRAME_KEY_LEN], uint8_t session_id[8])
{
    static const char label[] = "sluice session key v1", idl[] = "sluice udp id v1";
    uint8_t id[FRAME_KEY_LEN];
    Hmac h;
    int rc = wc_HmacInit(&h, NULL, INVALID_DEVID);
    if (rc == 0) rc = wc_HmacSetKey(&h, WC_SHA256, client_key, FRAME_KEY_LEN);
    if (rc == 0) rc = wc_HmacUpdate(&h, (const byte *)label, sizeof label - 1);
    if (rc == 0) rc = wc_HmacUpdate(&h, msg, (word32)n);
    if (rc == 0) rc = wc_HmacFinal(&h, key);
    wc_HmacFree(&h);
    if (rc == 0) rc = frame_auth_hmac(key, FRAME_KEY_LEN, idl, sizeof idl - 1, id);
    if (rc != 0) {
        explicit_bzero(key, FRAME_KEY_LEN);
        return -EIO;
    }
    memcpy(session_id, id, 8);
    return 0;
}

int frame_auth_udp_mac(const uint8_t key[FRAME_KEY_LEN], uint8_t dir, const void *head, size_t hlen,
                       const void *body, size_t blen, uint8_t mac[8])
{
    static const char label[] = "sluice udp v1";
    uint8_t out[FRAME_KEY_LEN];
    Hmac h;
    int rc = wc_HmacInit(&h, NULL, INVALID_DEVID);
    if (rc == 0) rc = wc_HmacSetKey(&h, WC_SHA256, key, FRAME_KEY_LEN);
    if (rc == 0) rc = wc_HmacUpdate(&h, (const byte *)label, sizeof label - 1);
    if (rc == 0) rc = wc_HmacUpdate(&h, &dir, 1);
    if (rc == 0) rc = wc_HmacUpdate(&h, head, (word32)hlen);
    if (rc == 0) rc = wc_HmacUpdate(&h, body, (word32)blen);
    if (rc == 0) rc = wc_HmacFinal(&h, out);
    wc_HmacFree(&h);
    if (rc != 0) return -EIO;
    memcpy(mac, out, 8);
    return 0;
}

int frame_auth_server_signature(const uint8_t server_key[FRAME_KEY_LEN], const void *msg, size_t n,
                                uint8_t out[FRAME_KEY_LEN])
{
    return frame_auth_hmac(server_key, FRAME_KEY_LEN, msg, n, out);
}
