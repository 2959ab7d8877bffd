/* tests/unit/protocols/frame_auth_test.c — the handshake's cryptography
 * (protocols/frame_auth.c) against docs/frame-protocol.md §9. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "protocols/frame_auth.h"

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; *h; h++) {
        if (*h == ' ') continue;
        sscanf(h, "%2hhx", &out[n++]);
        h++;
    }
    return n;
}

static void same(const uint8_t *got, const char *hex, const char *what)
{
    uint8_t want[64];
    size_t n = unhex(hex, want);
    cr_assert(!memcmp(got, want, n), "%s differs", what);
}

static const char TOKEN[] = "slk_0123456789abcdef0123456789abcdef01234567";
static const char HELLO[] = "01 1b 01 00 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01";
static const char CHALLENGE[] = "02 11 101112131415161718191a1b1c1d1e1f 00";
static const char PROOF[] =
    "03 20 bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc";

Test(frame_auth, the_vector_handshake)
{
    struct frame_keys k;
    cr_assert_eq(frame_auth_derive(TOKEN, strlen(TOKEN), &k), 0);
    same(k.token_id, "4347b7175225e316", "token_id");
    same(k.client_key, "eda570aeba05268ad32dc3af7a776060ec2e2b10f074320b22a076a87cd956d3",
         "ClientKey");
    same(k.stored_key, "c88f34110c48bb78cbc7e3457ed95ce15bd752f7dafcc81ae5e590ce43ae82db",
         "StoredKey");
    same(k.server_key, "fb352130c3a759f4557162dcf695893ab69e1bcd8603cc2609d93efa70ac9322",
         "ServerKey");

    uint8_t msg[256], proof[32], ck[32], sig[32], key[32], sid[8];
    size_t n = unhex(HELLO, msg);
    n += unhex(CHALLENGE, msg + n);
    cr_assert_eq(frame_auth_proof(&k, msg, n, proof), 0);
    same(proof, "bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc", "proof");
    cr_assert(frame_auth_verify(k.stored_key, msg, n, proof));
    cr_assert(frame_auth_verify_key(k.stored_key, msg, n, proof, ck));
    cr_assert(!memcmp(ck, k.client_key, 32), "the recovered ClientKey");
    proof[31] ^= 1;
    cr_assert(!frame_auth_verify(k.stored_key, msg, n, proof), "a changed proof verifies");
    cr_assert(!frame_auth_verify(k.stored_key, msg, n - 1, proof), "another message verifies");
    /* a stolen store's values are no proof */
    cr_assert(!frame_auth_verify(k.stored_key, msg, n, k.stored_key));
    cr_assert(!frame_auth_verify(k.stored_key, msg, n, k.server_key));

    n += unhex(PROOF, msg + n);
    cr_assert_eq(frame_auth_server_signature(k.server_key, msg, n, sig), 0);
    same(sig, "1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f",
         "server_signature");
    cr_assert_eq(frame_auth_session_key(k.client_key, msg, n, key, sid), 0);
    same(key, "4e2df11b0a8f6ee1a9dc1f4e52adccd91af2a553c7edb4bf1b661b2ce054a555", "session_key");
    same(sid, "025dd5f8edec9bdd", "session_id");

    uint8_t head[9], body[32], mac[8];
    memcpy(head, sid, 8);
    head[8] = 7;
    size_t bn = unhex("150101 100a7b2274223a32312e357d", body);
    cr_assert_eq(frame_auth_udp_mac(key, 0, head, 9, body, bn, mac), 0);
    same(mac, "761523fa5d457607", "the device's datagram MAC");
    head[8] = 3;
    bn = unhex("200101", body);
    cr_assert_eq(frame_auth_udp_mac(key, 1, head, 9, body, bn, mac), 0);
    same(mac, "1065dc9b2b819444", "the server's datagram MAC");
}

Test(frame_auth, tokens_out_of_range_derive_nothing)
{
    struct frame_keys k;
    char big[80];
    memset(big, 'a', sizeof big);
    cr_assert_eq(frame_auth_derive("", 0, &k), -EIO);
    cr_assert_eq(frame_auth_derive(big, 65, &k), -EIO);
    cr_assert_eq(frame_auth_derive(big, 64, &k), 0);
}
