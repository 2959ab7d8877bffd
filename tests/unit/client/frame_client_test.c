/* tests/unit/client/frame_client_test.c — the device client (client/): its
 * SHA-256 (FIPS 180-2 vectors), HMAC-SHA-256 (RFC 4231), the key derivations
 * and handshake of docs/frame-protocol.md §3 against §9's vectors, and the
 * client driven over a socketpair by a scripted peer thread. */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/frame_client.h"
#include "client/sha256.h"
#include "protocols/frame.h"
#include "sluice.h"

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;
    for (; *h; h++) {
        if (*h == ' ') continue;
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (uint8_t)v;
        h++;
    }
    return n;
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

#define cr_assert_hex(bytes, n, want)                                                              \
    do {                                                                                           \
        char got_[2 * 256 + 1];                                                                    \
        hex((bytes), (n), got_);                                                                   \
        cr_assert_str_eq(got_, (want));                                                            \
    } while (0)

/* ---- SHA-256: FIPS 180-2 appendix B ---- */

Test(sha256, fips180_empty)
{
    uint8_t d[SHA256_LEN];
    sha256("", 0, d);
    cr_assert_hex(d, 32, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

Test(sha256, fips180_B1_abc)
{
    uint8_t d[SHA256_LEN];
    sha256("abc", 3, d);
    cr_assert_hex(d, 32, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

Test(sha256, fips180_B2_448_bits)
{
    /* 56 bytes: the padding's length field no longer fits the first block */
    static const char m[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    uint8_t d[SHA256_LEN];
    sha256(m, sizeof m - 1, d);
    cr_assert_hex(d, 32, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* and streamed a byte at a time */
    struct sha256 s;
    sha256_init(&s);
    for (size_t i = 0; i < sizeof m - 1; i++)
        sha256_update(&s, m + i, 1);
    sha256_final(&s, d);
    cr_assert_hex(d, 32, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(sha256, fips180_B3_million_a)
{
    /* in pieces of 1..97 bytes, so that every offset into a block is met */
    static uint8_t a[97];
    memset(a, 'a', sizeof a);
    struct sha256 s;
    uint8_t d[SHA256_LEN];
    sha256_init(&s);
    size_t left = 1000000, k = 1;
    while (left) {
        size_t n = k < left ? k : left;
        sha256_update(&s, a, n);
        left -= n;
        k = k % 97 + 1;
    }
    sha256_final(&s, d);
    cr_assert_hex(d, 32, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* ---- HMAC-SHA-256: RFC 4231 §4.2-4.8 ---- */

struct rfc4231 {
    const char *key_hex;
    size_t key_repeat; /* key_hex is one byte repeated this many times (0: as is) */
    const char *data;  /* text, or hex when data_repeat */
    size_t data_repeat;
    const char *mac; /* truncated in case 5 */
};

static const struct rfc4231 CASES[] = {
    {"0b", 20, "Hi There", 0, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"4a656665", 0, "what do ya want for nothing?", 0,
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"aa", 20, "dd", 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    {"0102030405060708090a0b0c0d0e0f10111213141516171819", 0, "cd", 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    {"0c", 20, "Test With Truncation", 0, "a3b6167473100ee06e0c796c2955552b"},
    {"aa", 131, "Test Using Larger Than Block-Size Key - Hash Key First", 0,
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    {"aa", 131,
     "This is a test using a larger than block-size key and a larger than block-size data. The "
     "key needs to be hashed before being used by the HMAC algorithm.",
     0, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

Test(hmac_sha256, rfc4231_cases_1_to_7)
{
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const struct rfc4231 *t = &CASES[i];
        uint8_t key[256], data[256], mac[SHA256_LEN];
        size_t kn = unhex(t->key_hex, key), dn;
        if (t->key_repeat) memset(key, key[0], kn = t->key_repeat);
        if (t->data_repeat) {
            unhex(t->data, data);
            memset(data, data[0], dn = t->data_repeat);
        } else {
            memcpy(data, t->data, dn = strlen(t->data));
        }
        sha256_hmac(key, kn, data, dn, mac);
        char got[65];
        hex(mac, strlen(t->mac) / 2, got);
        cr_assert_str_eq(got, t->mac, "RFC 4231 test case %zu", i + 1);
    }
}

/* ---- §9: the keys, the proof, the signatures ---- */

#define TOKEN "slk_0123456789abcdef0123456789abcdef01234567"

static const char HELLO[] = "01 1b 01 00 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01";
static const char CHALLENGE[] = "02 11 101112131415161718191a1b1c1d1e1f 00";
static const char PROOF[] =
    "03 20 bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc";
static const char WELCOME[] =
    "04 27 1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f "
    "00 808004 8020 00";
static const char SERVER_SIG[] = "1a1921860d3437f27fbabf7e3dae2786f9a90f0c27814f740c0d023a6158757f";
static const char READING[] = "10 0a 7b2274223a32312e357d";
static const char BATCH[] =
    "12 22 03 0a 7b2274223a32312e357d 0a 7b2274223a32312e367d 0a 7b2274223a32312e347d";
static const char ERROR_AUTH[] = "7f 16 02 00 746f6b656e206e6f74207265636f676e69736564";

Test(frame_client, s9_key_derivations)
{
    struct frame_client_keys k;
    uint8_t K[SHA256_LEN];
    frame_client_keys(&k, TOKEN, strlen(TOKEN), K);
    cr_assert_hex(k.token_id, 8, "4347b7175225e316");
    cr_assert_hex(K, 32, "ff250fe3d21205e8f2cde9fa70b005cbe119713d256a593c68251226540e52c6");
    cr_assert_hex(k.client_key, 32,
                  "eda570aeba05268ad32dc3af7a776060ec2e2b10f074320b22a076a87cd956d3");
    cr_assert_hex(k.stored_key, 32,
                  "c88f34110c48bb78cbc7e3457ed95ce15bd752f7dafcc81ae5e590ce43ae82db");
    cr_assert_hex(k.server_key, 32,
                  "fb352130c3a759f4557162dcf695893ab69e1bcd8603cc2609d93efa70ac9322");
}

Test(frame_client, s9_proof_signature_session_key)
{
    struct frame_client_keys k;
    uint8_t auth[256], sig[SHA256_LEN], proof[SHA256_LEN], out[SHA256_LEN];
    frame_client_keys(&k, TOKEN, strlen(TOKEN), NULL);
    size_t n = unhex(HELLO, auth);
    n += unhex(CHALLENGE, auth + n);
    frame_client_proof(&k, auth, n, sig, proof);
    cr_assert_hex(sig, 32, "560daccc25c3b65accc5fb23249d17f7294f2fde8319a4d77e7c6bef6756e90f");
    cr_assert_hex(proof, 32, "bba8dc629fc690d01fe8388c5eea7797c56104ce736d96dc5cdc1d471b8fbfdc");
    n += unhex(PROOF, auth + n);
    frame_client_server_signature(&k, auth, n, out);
    cr_assert_hex(out, 32, SERVER_SIG);
    frame_client_session_key(&k, auth, n, out);
    cr_assert_hex(out, 32, "4e2df11b0a8f6ee1a9dc1f4e52adccd91af2a553c7edb4bf1b661b2ce054a555");
}

/* ---- the client against a scripted peer ---- */

/* One connection's script: 'r' the client must send exactly these bytes,
 * 'w' the peer writes them, 'W' writes them a byte at a time (1 ms apart, so
 * that the client reads them cut at every byte), 'e' the client must close
 * without sending more, 's' the peer stays silent until the client closes,
 * 'c' the peer closes. Hex strings; NULL op ends it (then the peer closes). */
struct step {
    char op;
    const char *hex;
};

struct peer {
    int fd;
    const struct step *script;
    pthread_t thread;
    char why[2600]; /* empty: the client followed the script */
};

static int read_exact(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 5000) <= 0) return -1;
        ssize_t k = recv(fd, p + got, n - got, 0);
        if (k <= 0) return -1;
        got += (size_t)k;
    }
    return 0;
}

static void *peer_run(void *arg)
{
    struct peer *pe = arg;
    for (const struct step *s = pe->script; s->op && !pe->why[0]; s++) {
        uint8_t want[512], got[512];
        size_t n = s->hex ? unhex(s->hex, want) : 0;
        if (s->op == 'w') {
            if (send(pe->fd, want, n, MSG_NOSIGNAL) != (ssize_t)n)
                snprintf(pe->why, sizeof pe->why, "peer write failed: %s", strerror(errno));
        } else if (s->op == 'r') {
            if (read_exact(pe->fd, got, n)) {
                snprintf(pe->why, sizeof pe->why, "expected %s, the client sent less", s->hex);
            } else if (memcmp(got, want, n)) {
                char h[1025];
                hex(got, n, h);
                snprintf(pe->why, sizeof pe->why, "expected %s, got %s", s->hex, h);
            }
        } else if (s->op == 'e') {
            struct pollfd pf = {pe->fd, POLLIN, 0};
            ssize_t k = poll(&pf, 1, 5000) == 1 ? recv(pe->fd, got, sizeof got, 0) : -2;
            if (k != 0) snprintf(pe->why, sizeof pe->why, "expected EOF, got %zd", k);
        } else if (s->op == 'W') {
            for (size_t i = 0; i < n && !pe->why[0]; i++) {
                if (send(pe->fd, want + i, 1, MSG_NOSIGNAL) != 1)
                    snprintf(pe->why, sizeof pe->why, "peer write failed: %s", strerror(errno));
                usleep(1000);
            }
        } else if (s->op == 's') {
            struct pollfd pf = {pe->fd, POLLIN, 0};
            if (poll(&pf, 1, 10000) != 1 || recv(pe->fd, got, sizeof got, 0) != 0)
                snprintf(pe->why, sizeof pe->why, "the client did not give up on a silent peer");
        } else if (s->op == 'c') {
            break;
        }
    }
    close(pe->fd);
    return NULL;
}

/* Each dial gets the next connection, with its peer started. */
struct net {
    const struct step *scripts[4];
    struct peer peers[4];
    int dials;
    unsigned timeout_ms; /* 0: 3 s */
};

static int test_dial(void *arg, const char *host, unsigned port, unsigned timeout_ms)
{
    struct net *net = arg;
    int sv[2];
    if (net->dials == 4 || !net->scripts[net->dials]) return -ECONNREFUSED;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return -errno;
    struct peer *pe = &net->peers[net->dials++];
    pe->fd = sv[1];
    pe->script = net->scripts[net->dials - 1];
    pthread_create(&pe->thread, NULL, peer_run, pe);
    return sv[0];
}

/* The port point for randomness, fixed to §9's client_nonce 00 01 .. 0f. */
static int fixed_nonce(void *arg, void *buf, size_t n)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)i;
    return 0;
}

static void join(struct net *net)
{
    for (int i = 0; i < net->dials; i++) {
        pthread_join(net->peers[i].thread, NULL);
        cr_expect_str_empty(net->peers[i].why, "connection %d: %s", i + 1, net->peers[i].why);
    }
}

static uint8_t mem[1 << 16];

static sluice_frame_client *client(struct net *net, uint64_t first_seq, uint32_t batch,
                                   uint32_t max_readings)
{
    sluice_frame_config cfg;
    sluice_frame_client *c;
    sluice_frame_config_init(&cfg);
    cfg.host = "peer";
    cfg.port = 7000;
    cfg.token = TOKEN;
    cfg.first_seq = first_seq;
    cfg.batch = batch;
    cfg.max_readings = max_readings;
    cfg.ring_bytes = 4096;
    cfg.timeout_ms = net->timeout_ms ? net->timeout_ms : 3000;
    cfg.random = fixed_nonce;
    cfg.dial = test_dial;
    cfg.arg = net;
    cr_assert_leq(sluice_frame_client_size(&cfg), sizeof mem - 1);
    /* an odd address: the client aligns itself */
    cr_assert_eq(sluice_frame_client_init(&c, mem + 1, sizeof mem - 1, &cfg), 0);
    return c;
}

static const char T215[] = "{\"t\":21.5}";

/* §9 end to end: the client's HELLO (fixed nonce, next_seq 1), PROOF and
 * READING are the vectors, byte for byte. */
Test(frame_client, s9_handshake_and_reading_on_the_wire)
{
    static const struct step s[] = {
        {'r', HELLO},   {'w', CHALLENGE},  {'r', PROOF},   {'w', WELCOME},
        {'r', READING}, {'w', "20 01 01"}, {'r', "40 00"}, {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert_eq(st.acked, 1);
    cr_assert_eq(st.held, 0);
    cr_assert(st.first_seq == 1 && st.last_seq == 1 && st.durable_seq == 1);
    cr_assert_eq(st.window, 4096);
    cr_assert_eq(st.connects, 1);
    cr_assert_eq(st.bytes_out, 29 + 34 + 12 + 2);
    cr_assert_eq(st.bytes_in, 19 + 41 + 3);
}

/* §3 step 4: a WELCOME whose signature does not verify came from someone
 * without ServerKey: the client refuses it and sends nothing more. */
Test(frame_client, s3_wrong_server_signature_refused)
{
    char bad[sizeof WELCOME];
    memcpy(bad, WELCOME, sizeof WELCOME);
    bad[6] = bad[6] == '0' ? '1' : '0'; /* a bit of the signature's first byte */
    const struct step s[] = {{'r', HELLO}, {'w', CHALLENGE}, {'r', PROOF},
                             {'w', bad},   {'e', NULL},      {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_connect(c), SLUICE_FRAME_ESIGNATURE);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert_eq(st.connects, 0);
}

/* §7: an ERROR frame is its code, and its seq and message stay readable. */
Test(frame_client, s7_error_frame_maps_to_its_code)
{
    const struct step s[] = {{'r', HELLO}, {'w', ERROR_AUTH}, {'e', NULL}, {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_connect(c), SLUICE_FRAME_EAUTH);
    join(&net);
    uint64_t seq = 99;
    const char *msg = NULL;
    cr_assert_eq(sluice_frame_client_last_error(c, &seq, &msg), 2);
    cr_assert_eq(seq, 0);
    cr_assert_str_eq(msg, "token not recognised");
    cr_assert_str_eq(sluice_frame_strerror(SLUICE_FRAME_EAUTH),
                     "authentication failed (ERROR 0x02)");
    cr_assert_eq(SLUICE_FRAME_EAUTH, SLUICE_FRAME_ECODE(0x02));
}

/* §2 BATCH: with cfg.batch 3, three queued readings leave as §9's BATCH. */
Test(frame_client, s2_three_readings_leave_as_one_batch)
{
    const struct step s[] = {{'r', HELLO}, {'w', CHALLENGE},  {'r', PROOF},   {'w', WELCOME},
                             {'r', BATCH}, {'w', "20 01 03"}, {'r', "40 00"}, {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 3, 16);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.5}", 10), 0);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.6}", 10), 0);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.4}", 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
}

/* §4 resumption: the connection breaks before the ACK; the client reconnects
 * with next_seq = the oldest unacknowledged and sends it again. */
Test(frame_client, s4_resend_unacknowledged_after_reconnect)
{
    const struct step s1[] = {{'r', HELLO},   {'w', CHALLENGE}, {'r', PROOF},
                              {'w', WELCOME}, {'r', READING},   {0, NULL}};
    const struct step s2[] = {{'r', HELLO},   {'w', CHALLENGE},  {'r', PROOF},   {'w', WELCOME},
                              {'r', READING}, {'w', "20 01 01"}, {'r', "40 00"}, {0, NULL}};
    struct net net = {.scripts = {s1, s2}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.connects == 2 && st.sent == 2 && st.resent == 1 && st.acked == 1);
}

/* The WELCOME (signature over the handshake, not over WELCOME's fields) with
 * other durable_seq and window values. */
static void welcome_hex(uint64_t durable, uint64_t window, char *out)
{
    uint8_t sig[SHA256_LEN], f[128];
    unhex(SERVER_SIG, sig);
    size_t n = frame_encode_welcome(f, sizeof f, sig, durable, 65536, window, NULL, 0);
    hex(f, n, out);
}

static void hello_hex(uint64_t next_seq, char *out)
{
    uint8_t id[8], nonce[16], f[64];
    unhex("4347b7175225e316", id);
    fixed_nonce(NULL, nonce, sizeof nonce);
    hex(f, frame_encode_hello(f, sizeof f, id, nonce, next_seq, NULL, 0), out);
}

/* §4: WELCOME's durable_seq is final and covers the held reading (the old
 * connection's commit completed after it broke): the client drops it, and
 * since the server numbers from the next_seq it was told, it reconnects with
 * next_seq 0 rather than send a reading under a number already used. */
Test(frame_client, s4_welcome_covering_held_readings_drops_them)
{
    char w1[256], h0[128], w_again[256];
    welcome_hex(1, 4096, w1);
    hello_hex(0, h0);
    welcome_hex(1, 4096, w_again);
    const struct step s1[] = {{'r', HELLO},   {'w', CHALLENGE}, {'r', PROOF},
                              {'w', WELCOME}, {'r', READING},   {0, NULL}};
    const struct step s2[] = {{'r', HELLO}, {'w', CHALLENGE}, {'r', PROOF},
                              {'w', w1},    {'e', NULL},      {0, NULL}};
    /* the third HELLO says 0 and its AuthMessage differs: the peer only
     * checks the HELLO, then closes; the reading is already durable */
    const struct step s3[] = {{'r', h0}, {0, NULL}};
    struct net net = {.scripts = {s1, s2, s3}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.acked == 1 && st.held == 0 && st.durable_seq == 1);
    (void)w_again;
}

/* §7 window: WELCOME's window 1 lets one reading be unacknowledged; the
 * second waits for the first's ACK. And a ring of 2 readings makes the third
 * send() wait for ACKs (reading them) until there is room. */
Test(frame_client, s7_window_and_full_ring_wait_for_acks)
{
    char w[256];
    welcome_hex(0, 1, w);
    static const char R2[] = "10 0a 7b2274223a32312e367d", R3[] = "10 0a 7b2274223a32312e347d";
    const struct step s[] = {{'r', HELLO},   {'w', CHALLENGE},  {'r', PROOF},   {'w', w},
                             {'r', READING}, {'w', "20 01 01"}, {'r', R2},      {'w', "20 01 02"},
                             {'r', R3},      {'w', "20 01 03"}, {'r', "40 00"}, {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 2);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.5}", 10), 0);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.6}", 10), 0);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.4}", 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.acked == 3 && st.sent == 3 && st.last_seq == 3);
}

/* §4: a device without state says next_seq 0; its readings are numbered
 * after WELCOME's durable_seq. */
Test(frame_client, s4_next_seq_0_numbers_after_the_servers_mark)
{
    char h0[128], w[256];
    hello_hex(0, h0);
    /* the signature covers HELLO: compute the real one for next_seq 0 */
    struct frame_client_keys k;
    uint8_t auth[256], proof[SHA256_LEN], sig[SHA256_LEN], f[128];
    frame_client_keys(&k, TOKEN, strlen(TOKEN), NULL);
    size_t n = unhex(h0, auth);
    n += unhex(CHALLENGE, auth + n);
    frame_client_proof(&k, auth, n, NULL, proof);
    size_t pn = frame_encode_proof(auth + n, sizeof auth - n, proof);
    char proof_hex[80];
    hex(auth + n, pn, proof_hex);
    n += pn;
    frame_client_server_signature(&k, auth, n, sig);
    hex(f, frame_encode_welcome(f, sizeof f, sig, 41, 65536, 4096, NULL, 0), w);
    const struct step s[] = {{'r', h0},      {'w', CHALLENGE},  {'r', proof_hex}, {'w', w},
                             {'r', READING}, {'w', "20 01 2a"}, {'r', "40 00"},   {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 0, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.first_seq == 42 && st.last_seq == 42 && st.durable_seq == 42);
}

/* An ACK for a reading never sent is the server's bug: refused. */
Test(frame_client, ack_beyond_what_was_sent_is_refused)
{
    const struct step s[] = {{'r', HELLO},   {'w', CHALLENGE},  {'r', PROOF}, {'w', WELCOME},
                             {'r', READING}, {'w', "20 01 05"}, {'e', NULL},  {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), SLUICE_FRAME_EBADFRAME);
    join(&net);
}

/* §7 0x04: a reading the server will never take blocks the ring until the
 * device gives it up; the rest are then sent under their own numbers. */
Test(frame_client, s7_too_large_reading_is_given_up_by_drop)
{
    char h2[128], w[256];
    hello_hex(2, h2);
    struct frame_client_keys k;
    uint8_t auth[256], proof[SHA256_LEN], sig[SHA256_LEN], f[128];
    frame_client_keys(&k, TOKEN, strlen(TOKEN), NULL);
    size_t n = unhex(h2, auth);
    n += unhex(CHALLENGE, auth + n);
    frame_client_proof(&k, auth, n, NULL, proof);
    size_t pn = frame_encode_proof(auth + n, sizeof auth - n, proof);
    char proof_hex[80];
    hex(auth + n, pn, proof_hex);
    n += pn;
    frame_client_server_signature(&k, auth, n, sig);
    hex(f, frame_encode_welcome(f, sizeof f, sig, 0, 65536, 4096, NULL, 0), w);
    static const char R2[] = "10 0a 7b2274223a32312e367d";
    const struct step s1[] = {{'r', HELLO},   {'w', CHALLENGE},
                              {'r', PROOF},   {'w', WELCOME},
                              {'r', READING}, {'w', "7f 11 04 01 6672616d6520746f6f206c61726765"},
                              {'e', NULL},    {0, NULL}};
    const struct step s2[] = {{'r', h2}, {'w', CHALLENGE},  {'r', proof_hex}, {'w', w},
                              {'r', R2}, {'w', "20 01 02"}, {'r', "40 00"},   {0, NULL}};
    struct net net = {.scripts = {s1, s2}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), SLUICE_FRAME_ETOOBIG);
    uint64_t seq;
    const char *msg;
    cr_assert_eq(sluice_frame_client_last_error(c, &seq, &msg), 4);
    cr_assert(seq == 1 && !strcmp(msg, "frame too large"));
    cr_assert_eq(sluice_frame_client_drop(c, 5), 1);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.6}", 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.dropped == 1 && st.acked == 1 && st.held == 0 && st.last_seq == 2);
}

/* The server's frames cut at every byte: CHALLENGE, WELCOME and ACK arrive
 * one byte per read, and the client reassembles them. */
Test(frame_client, server_frames_cut_at_every_byte)
{
    const struct step s[] = {{'r', HELLO},   {'W', CHALLENGE},  {'r', PROOF},   {'W', WELCOME},
                             {'r', READING}, {'W', "20 01 01"}, {'r', "40 00"}, {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
}

/* A WELCOME cut short by the connection's end is no WELCOME. */
Test(frame_client, truncated_welcome_then_eof)
{
    char half[48];
    memcpy(half, WELCOME, 40);
    half[40] = 0;
    const struct step s[] = {{'r', HELLO}, {'w', CHALLENGE}, {'r', PROOF}, {'w', half}, {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_connect(c), SLUICE_FRAME_ECLOSED);
    join(&net);
}

/* Hostile server frames: a header announcing 1 MiB (refused from the header,
 * never buffered), an unknown type, a device's frame, a second CHALLENGE. */
Test(frame_client, hostile_server_frames_are_refused)
{
    static const char *const bad[] = {"02 80 80 40", "55 00", "10 01 78",
                                      "02 11 101112131415161718191a1b1c1d1e1f 00"};
    for (size_t i = 0; i < 4; i++) {
        const struct step hs[] = {{'r', HELLO}, {'w', bad[i]}, {'e', NULL}, {0, NULL}};
        /* after WELCOME: sent once the client's READING is in, so that it
         * meets the client waiting in flush */
        const struct step ws[] = {{'r', HELLO},   {'w', CHALLENGE}, {'r', PROOF}, {'w', WELCOME},
                                  {'r', READING}, {'w', bad[i]},    {'e', NULL},  {0, NULL}};
        struct net net = {.scripts = {i < 2 ? hs : ws}};
        sluice_frame_client *c = client(&net, 1, 1, 16);
        cr_assert_eq(sluice_frame_client_connect(c), i < 2 ? SLUICE_FRAME_EBADFRAME : 0, "case %zu",
                     i);
        if (i >= 2) {
            /* on a live connection it shows at the next call that reads */
            cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
            cr_assert_eq(sluice_frame_client_flush(c), SLUICE_FRAME_EBADFRAME, "case %zu", i);
        }
        join(&net);
    }
}

/* §2 PING from the server is answered with PONG, while the client waits. */
Test(frame_client, ping_is_answered_with_pong)
{
    const struct step s[] = {{'r', HELLO},   {'w', CHALLENGE}, {'r', PROOF},   {'w', WELCOME},
                             {'r', READING}, {'w', "30 00"},   {'r', "31 00"}, {'w', "20 01 01"},
                             {'r', "40 00"}, {0, NULL}};
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
}

/* A server that accepts and then says nothing costs one timeout, no more. */
Test(frame_client, silent_server_times_out)
{
    const struct step s[] = {{'r', HELLO}, {'s', NULL}, {0, NULL}};
    struct net net = {.scripts = {s}, .timeout_ms = 300};
    sluice_frame_client *c = client(&net, 1, 1, 16);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cr_assert_eq(sluice_frame_client_connect(c), SLUICE_FRAME_ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    cr_assert(ms >= 250 && ms < 1500, "took %ld ms", ms);
    join(&net);
}

Test(frame_client, init_refuses_small_memory_and_missing_fields)
{
    sluice_frame_config cfg;
    sluice_frame_client *c;
    sluice_frame_config_init(&cfg);
    cfg.host = "h";
    cfg.port = 1;
    cfg.token = TOKEN;
    size_t need = sluice_frame_client_size(&cfg);
    cr_assert_gt(need, 0);
    void *m = malloc(need);
    cr_assert_eq(sluice_frame_client_init(&c, m, need - 1, &cfg), SLUICE_FRAME_EINVAL);
    cr_assert_eq(sluice_frame_client_init(&c, m, need, &cfg), 0);
    cfg.token = NULL;
    cr_assert_eq(sluice_frame_client_init(&c, m, need, &cfg), SLUICE_FRAME_EINVAL);
    cfg.token = TOKEN;
    cfg.max_readings = 0;
    cr_assert_eq(sluice_frame_client_size(&cfg), 0);
    free(m);
    cr_assert_str_eq(sluice_frame_strerror(-ECONNREFUSED), strerror(ECONNREFUSED));
}

/* ---- §6 UDP: the datagram codec against §9, then the client against a
 * scripted peer over socketpair(AF_UNIX, SOCK_DGRAM) ---- */

static const char SESSION_KEY[] =
    "4e2df11b0a8f6ee1a9dc1f4e52adccd91af2a553c7edb4bf1b661b2ce054a555";
static const char SID[] = "025dd5f8edec9bdd";
static const char DGRAM7[] = "025dd5f8edec9bdd 07 150101 100a7b2274223a32312e357d 761523fa5d457607";
static const char SERVER_DGRAM3[] = "025dd5f8edec9bdd 03 200101 1065dc9b2b819444";

Test(frame_client_udp, s9_session_id_from_the_session_key)
{
    uint8_t key[SHA256_LEN], sid[FRAME_CLIENT_SID_LEN];
    unhex(SESSION_KEY, key);
    frame_client_session_id(key, sid);
    cr_assert_hex(sid, 8, SID);
}

Test(frame_client_udp, s9_device_datagram_7_sealed_byte_for_byte)
{
    uint8_t key[SHA256_LEN], sid[8], frames[64], out[128];
    unhex(SESSION_KEY, key);
    unhex(SID, sid);
    size_t n = unhex("150101 100a7b2274223a32312e357d", frames);
    size_t total = frame_client_dgram_seal(key, sid, 0, 7, frames, n, out, sizeof out);
    cr_assert_eq(total, 32);
    char want[128];
    uint8_t w[64];
    hex(w, unhex(DGRAM7, w), want);
    cr_assert_hex(out, total, want);
    /* in place: the frames already at out + 9 */
    memset(out, 0, sizeof out);
    memcpy(out + 9, frames, n);
    cr_assert_eq(frame_client_dgram_seal(key, sid, 0, 7, out + 9, n, out, sizeof out), 32);
    cr_assert_hex(out, total, want);
    /* one byte short of room: refused, not cut */
    cr_assert_eq(frame_client_dgram_seal(key, sid, 0, 7, frames, n, out, 31), 0);
}

Test(frame_client_udp, s9_server_datagram_3_opened_and_hostile_ones_refused)
{
    uint8_t key[SHA256_LEN], sid[8], d[64];
    unhex(SESSION_KEY, key);
    unhex(SID, sid);
    size_t n = unhex(SERVER_DGRAM3, d);
    uint64_t seq = 0;
    const uint8_t *f;
    size_t fn;
    cr_assert_eq(frame_client_dgram_open(key, sid, 1, d, n, &seq, &f, &fn), 1);
    cr_assert_eq(seq, 3);
    cr_assert_hex(f, fn, "200101");
    /* the device's direction: the MAC covers it */
    cr_assert_eq(frame_client_dgram_open(key, sid, 0, d, n, &seq, &f, &fn), 0);
    /* every bit flipped in turn: id, sequence, frames or MAC, never valid */
    for (size_t i = 0; i < n * 8; i++) {
        d[i / 8] ^= (uint8_t)(1u << (i % 8));
        cr_assert_eq(frame_client_dgram_open(key, sid, 1, d, n, &seq, &f, &fn), 0, "bit %zu", i);
        d[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    /* truncated at every length */
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(frame_client_dgram_open(key, sid, 1, d, k, &seq, &f, &fn), 0, "len %zu", k);
    /* the device's datagram 7 read as the server's: refused */
    n = unhex(DGRAM7, d);
    cr_assert_eq(frame_client_dgram_open(key, sid, 1, d, n, &seq, &f, &fn), 0);
    cr_assert_eq(frame_client_dgram_open(key, sid, 0, d, n, &seq, &f, &fn), 1);
    cr_assert_eq(seq, 7);
}

/* A handshake datagram, 00x8 | frames, as hex. */
static const char *hs(char *buf, const char *frames_hex)
{
    uint8_t b[512];
    memset(b, 0, 8);
    size_t n = 8 + unhex(frames_hex, b + 8);
    hex(b, n, buf);
    return buf;
}

/* A session datagram of §9's session (the client's HELLO with next_seq 1
 * and the fixed nonce makes it), dir 0 device, 1 server, as hex. */
static const char *sdg(char *buf, uint8_t dir, uint64_t dseq, const char *frames_hex)
{
    uint8_t key[SHA256_LEN], sid[8], f[256], out[300];
    unhex(SESSION_KEY, key);
    unhex(SID, sid);
    size_t n = unhex(frames_hex, f);
    hex(out, frame_client_dgram_seal(key, sid, dir, dseq, f, n, out, sizeof out), buf);
    return buf;
}

/* The datagram peer's ops: 'r' the next datagram must be exactly these
 * bytes, 'i' the next datagram is taken and dropped (lost on the way), 'w'
 * one datagram written, 'p' a pause of n ms (the hex string's value). */
static void *dgram_peer_run(void *arg)
{
    struct peer *pe = arg;
    for (const struct step *s = pe->script; s->op && !pe->why[0]; s++) {
        uint8_t want[512], got[2048];
        size_t n = s->hex && s->op != 'p' ? unhex(s->hex, want) : 0;
        if (s->op == 'w') {
            if (send(pe->fd, want, n, 0) != (ssize_t)n)
                snprintf(pe->why, sizeof pe->why, "peer write failed: %s", strerror(errno));
        } else if (s->op == 'r' || s->op == 'i') {
            struct pollfd pf = {pe->fd, POLLIN, 0};
            ssize_t k = poll(&pf, 1, 5000) == 1 ? recv(pe->fd, got, sizeof got, 0) : -1;
            if (k < 0) {
                snprintf(pe->why, sizeof pe->why, "step %zu: expected a datagram %s, none came",
                         (size_t)(s - pe->script), s->hex ? s->hex : "");
            } else if (s->op == 'r' && ((size_t)k != n || memcmp(got, want, n))) {
                char h[2 * 256 + 1];
                hex(got, (size_t)k > 256 ? 256 : (size_t)k, h);
                snprintf(pe->why, sizeof pe->why, "step %zu: expected %s, got %s",
                         (size_t)(s - pe->script), s->hex, h);
            }
        } else if (s->op == 'p') {
            usleep((useconds_t)atoi(s->hex) * 1000);
        }
    }
    close(pe->fd);
    return NULL;
}

static int test_dial_dgram(void *arg, const char *host, unsigned port, unsigned timeout_ms)
{
    struct net *net = arg;
    int sv[2];
    (void)host, (void)port, (void)timeout_ms;
    if (net->dials == 4 || !net->scripts[net->dials]) return -ECONNREFUSED;
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv)) return -errno;
    struct peer *pe = &net->peers[net->dials++];
    pe->fd = sv[1];
    pe->script = net->scripts[net->dials - 1];
    pthread_create(&pe->thread, NULL, dgram_peer_run, pe);
    return sv[0];
}

static sluice_frame_client *udp_client(struct net *net, uint32_t batch)
{
    sluice_frame_config cfg;
    sluice_frame_client *c;
    sluice_frame_config_init(&cfg);
    cfg.host = "peer";
    cfg.port = 7000;
    cfg.token = TOKEN;
    cfg.first_seq = 1; /* HELLO next_seq 1: §9's handshake, so §9's session */
    cfg.batch = batch;
    cfg.max_readings = 16;
    cfg.ring_bytes = 4096;
    cfg.timeout_ms = net->timeout_ms ? net->timeout_ms : 3000;
    cfg.random = fixed_nonce;
    cfg.udp = 1;
    cfg.dial_dgram = test_dial_dgram;
    cfg.arg = net;
    cr_assert_leq(sluice_frame_client_size(&cfg), sizeof mem - 1);
    cr_assert_eq(sluice_frame_client_init(&c, mem + 1, sizeof mem - 1, &cfg), 0);
    return c;
}

static long ms_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a->tv_sec) * 1000 + (b.tv_nsec - a->tv_nsec) / 1000000;
}

/* The handshake's three datagrams from the client and the server's two. */
struct hs_hex {
    char hello[128], chal[128], step3[512], welcome[256];
};

static void hs_vectors(struct hs_hex *h)
{
    char all[512];
    snprintf(all, sizeof all, "%s %s %s", HELLO, CHALLENGE, PROOF);
    hs(h->hello, HELLO);
    hs(h->chal, CHALLENGE);
    hs(h->step3, all);
    hs(h->welcome, WELCOME);
}

/* §6 + §9 end to end: the stateless handshake, then the client's own
 * encoder puts §9's reading in its datagram 7 (six PONGs to the server's
 * PINGs came first, since with cfg.batch 2 one reading waits for flush) and
 * takes §9's server datagram 3 (ACK 1) though datagrams 4..7 came before it
 * (the replay window keeps the ones it has not seen). */
Test(frame_client_udp, s9_datagram_7_and_server_datagram_3_on_the_wire)
{
    struct hs_hex h;
    hs_vectors(&h);
    char ping[6][128], pong[6][128], bye[128], ack[128], dg7[128], sd3[128];
    static const uint64_t ping_seq[6] = {1, 2, 4, 5, 6, 7};
    for (int i = 0; i < 6; i++) {
        sdg(ping[i], 1, ping_seq[i], "30 00");
        sdg(pong[i], 0, (uint64_t)i + 1, "31 00");
    }
    sdg(bye, 0, 8, "40 00");
    sdg(ack, 1, 8, "20 01 01");
    uint8_t b[64];
    hex(b, unhex(DGRAM7, b), dg7);
    hex(b, unhex(SERVER_DGRAM3, b), sd3);
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal},  {'r', h.step3}, {'w', h.welcome}, {'w', ping[0]},
        {'w', ping[1]}, {'w', ping[2]}, {'w', ping[3]}, {'w', ping[4]},   {'w', ping[5]},
        {'r', pong[0]}, {'r', pong[1]}, {'r', pong[2]}, {'r', pong[3]},   {'r', pong[4]},
        {'r', pong[5]}, {'r', dg7},     {'w', sd3},     {'r', bye},       {'w', ack},
        {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 2);
    cr_assert_eq(sluice_frame_client_connect(c), 0);
    usleep(100 * 1000); /* the PINGs are in */
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.acked == 1 && st.held == 0 && st.sent == 1 && st.resent == 0);
    cr_assert(st.first_seq == 1 && st.last_seq == 1 && st.durable_seq == 1);
    cr_assert_eq(st.connects, 1);
    cr_assert_eq(st.window, 4096);
    cr_assert_eq(st.ignored, 0);
}

/* §6: a server datagram that is not the session's is ignored, whatever it
 * says: an ERROR 0x02 with a bad MAC, an ERROR 0x06 of another session (a
 * good MAC under another key), a replay of the real ACK, a stray handshake
 * datagram. Acting on any of them would fail the flush. */
Test(frame_client_udp, s6_forged_and_replayed_server_datagrams_are_ignored)
{
    struct hs_hex h;
    hs_vectors(&h);
    char r1[128], ack[128], forged[256], other[256], bye[128], ack2[128], stray[128];
    sdg(r1, 0, 1, "150101 100a7b2274223a32312e357d");
    sdg(ack, 1, 1, "20 01 01");
    sdg(forged, 1, 2, "7f 06 02 00 62616421");
    forged[strlen(forged) - 1] ^= 1; /* the MAC's last bit */
    {
        uint8_t key[SHA256_LEN], sid[8], f[16], out[64];
        memset(key, 0x42, sizeof key);
        unhex(SID, sid);
        size_t n = unhex("7f 06 06 00 62616421", f);
        hex(out, frame_client_dgram_seal(key, sid, 1, 3, f, n, out, sizeof out), other);
    }
    hs(stray, CHALLENGE);
    sdg(bye, 0, 2, "40 00");
    sdg(ack2, 1, 2, "20 01 01");
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', h.welcome}, {'r', r1},
        {'w', forged},  {'w', other},  {'w', stray},   {'w', ack},       {'w', ack},
        {'r', bye},     {'w', ack2},   {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 1);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert_eq(sluice_frame_client_last_error(c, NULL, NULL), 0);
    cr_assert_eq(st.ignored, 4, "ignored %llu", (unsigned long long)st.ignored);
    cr_assert(st.acked == 1 && st.held == 0);
}

/* §6: the reading's datagram is lost; no ACK comes, and after the resend
 * timeout (2 RTTs, at least 200 ms) the reading goes again, with the same
 * SEQ, in the session's next datagram. */
Test(frame_client_udp, s6_resend_after_a_dropped_datagram)
{
    struct hs_hex h;
    hs_vectors(&h);
    char r1[128], r2[128], ack[128], bye[128], ack2[128];
    sdg(r1, 0, 1, "150101 100a7b2274223a32312e357d");
    sdg(r2, 0, 2, "150101 100a7b2274223a32312e357d");
    sdg(ack, 1, 1, "20 01 01");
    sdg(bye, 0, 3, "40 00");
    sdg(ack2, 1, 2, "20 01 01");
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', h.welcome}, {'r', r1},
        {'r', r2},      {'w', ack},    {'r', bye},     {'w', ack2},      {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 1);
    cr_assert_eq(sluice_frame_client_connect(c), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    long ms = ms_since(&t0);
    cr_assert(ms >= 190 && ms < 1500, "the resend came after %ld ms", ms);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.sent == 2 && st.resent == 1 && st.acked == 1, "sent %llu resent %llu",
              (unsigned long long)st.sent, (unsigned long long)st.resent);
}

/* §6 handshake: step 3 unanswered (a server still ending our older session
 * stays silent) is repeated, the same bytes, after 1 s; a WELCOME whose
 * signature does not verify is ignored (anyone can send a datagram), and
 * the real one taken. */
Test(frame_client_udp, s6_step_3_repeated_and_forged_welcome_ignored)
{
    struct hs_hex h;
    hs_vectors(&h);
    char bad[256], wbad[256];
    memcpy(bad, WELCOME, sizeof WELCOME);
    bad[6] = bad[6] == '0' ? '1' : '0';
    hs(wbad, bad);
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal},    {'r', h.step3}, {'r', h.step3},
        {'w', wbad},    {'w', h.welcome}, {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 1);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(sluice_frame_client_connect(c), 0);
    long ms = ms_since(&t0);
    cr_assert(ms >= 950 && ms < 2000, "step 3 again after %ld ms", ms);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.connects == 1 && st.ignored == 1);
}

/* §6: after 3 resends without any answer the session counts as lost (a
 * restarted server knows none and says nothing): the client shakes hands
 * again, on a new socket, HELLO's next_seq the oldest reading held, and the
 * new session's datagrams count from 1 again. */
Test(frame_client_udp, s6_new_handshake_after_3_unanswered_resends)
{
    struct hs_hex h;
    hs_vectors(&h);
    char r1[128], ack[128], bye[128], ack2[128];
    sdg(r1, 0, 1, "150101 100a7b2274223a32312e357d");
    sdg(ack, 1, 1, "20 01 01");
    sdg(bye, 0, 2, "40 00");
    sdg(ack2, 1, 2, "20 01 01");
    const struct step s1[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', h.welcome}, {'i', NULL},
        {'i', NULL},    {'i', NULL},   {'i', NULL},    {0, NULL},
    };
    const struct step s2[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', h.welcome}, {'r', r1},
        {'w', ack},     {'r', bye},    {'w', ack2},    {0, NULL},
    };
    struct net net = {.scripts = {s1, s2}, .timeout_ms = 8000};
    sluice_frame_client *c = udp_client(&net, 1);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.connects == 2 && st.acked == 1 && st.sent == 5 && st.resent == 4,
              "connects %llu sent %llu resent %llu", (unsigned long long)st.connects,
              (unsigned long long)st.sent, (unsigned long long)st.resent);
}

/* §6: an ERROR in a session datagram ends the session: 0x02 (revoked) is
 * final and its words stay readable. */
Test(frame_client_udp, s6_session_error_ends_it)
{
    struct hs_hex h;
    hs_vectors(&h);
    char r1[128], err[256];
    sdg(r1, 0, 1, "150101 100a7b2274223a32312e357d");
    sdg(err, 1, 1, "7f 0f 02 01 746f6b656e207265766f6b6564");
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', h.welcome},
        {'r', r1},      {'w', err},    {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 1);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), SLUICE_FRAME_EAUTH);
    join(&net);
    uint64_t seq;
    const char *msg;
    cr_assert_eq(sluice_frame_client_last_error(c, &seq, &msg), 2);
    cr_assert(seq == 1 && !strcmp(msg, "token revoked"));
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert_eq(st.held, 1);
}

/* §4 over UDP: WELCOME's durable_seq 1 covers the held reading 1 (an older
 * session's commit completed after its ACK was lost). SEQ numbers readings
 * explicitly, so the client takes it as acknowledged and sends reading 2
 * under its own number in the same session: no new handshake. */
Test(frame_client_udp, s4_welcome_covering_a_held_reading)
{
    struct hs_hex h;
    hs_vectors(&h);
    char wf[256], w1[256], r2[128], ack[128], bye[128], ack2[128];
    welcome_hex(1, 4096, wf);
    hs(w1, wf);
    sdg(r2, 0, 1, "150102 100a7b2274223a32312e367d");
    sdg(ack, 1, 1, "20 01 02");
    sdg(bye, 0, 2, "40 00");
    sdg(ack2, 1, 2, "20 01 02");
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', w1}, {'r', r2},
        {'w', ack},     {'r', bye},    {'w', ack2},    {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 1);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0); /* reading 1: the handshake */
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.6}", 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.connects == 1 && st.acked == 2 && st.sent == 1 && st.held == 0,
              "connects %llu acked %llu sent %llu", (unsigned long long)st.connects,
              (unsigned long long)st.acked, (unsigned long long)st.sent);
}

/* §6 go-back-N: reading 1's datagram is lost and reading 2's arrives past
 * the gap; the server drops it and answers ACK 0, which does not move. The
 * client resends from reading 1 at once, well before the 200 ms timer. */
Test(frame_client_udp, s6_ack_that_does_not_move_resends_at_once)
{
    struct hs_hex h;
    hs_vectors(&h);
    char r2[128], ack0[128], r1b[128], r2b[128], ack[128], bye[128], ack2[128];
    sdg(r2, 0, 2, "150102 100a7b2274223a32312e367d");
    sdg(ack0, 1, 1, "20 01 00");
    sdg(r1b, 0, 3, "150101 100a7b2274223a32312e357d");
    sdg(r2b, 0, 4, "150102 100a7b2274223a32312e367d");
    sdg(ack, 1, 2, "20 01 02");
    sdg(bye, 0, 5, "40 00");
    sdg(ack2, 1, 3, "20 01 02");
    const struct step s[] = {
        {'r', h.hello}, {'w', h.chal}, {'r', h.step3}, {'w', h.welcome}, {'i', NULL},
        {'r', r2},      {'p', "20"},   {'w', ack0},    {'r', r1b},       {'r', r2b},
        {'w', ack},     {'r', bye},    {'w', ack2},    {0, NULL},
    };
    struct net net = {.scripts = {s}};
    sluice_frame_client *c = udp_client(&net, 1);
    cr_assert_eq(sluice_frame_client_connect(c), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_send(c, "{\"t\":21.6}", 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    long ms = ms_since(&t0);
    cr_assert(ms < 150, "the resend waited %ld ms: the timer's, not the ACK's", ms);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.sent == 4 && st.resent == 2 && st.acked == 2);
}

/* ---- §6 "Handshake over TCP" (cfg.tcp_port): the handshake on a stream,
 * then §9's session of it in datagrams ---- */

static const char HELLO_UDP[] = "01 1b 01 02 4347b7175225e316 000102030405060708090a0b0c0d0e0f 01";
static const char PROOF_UDP[] =
    "03 20 066019ede37c28ac888c3b168569fee711302e319ce2b10c7efcf6b513ea2025";
static const char WELCOME_UDP[] =
    "04 26 d7d9b16122fc15efe704426a60bae75f7e038e43d7d3424111997213d81422a4 00 8040 8020 00";

/* One net, two kinds of dial: the first (TCP) a stream peer, the second a
 * datagram peer. */
static sluice_frame_client *tcp_udp_client(struct net *net)
{
    sluice_frame_config cfg;
    sluice_frame_client *c;
    sluice_frame_config_init(&cfg);
    cfg.host = "peer";
    cfg.port = 7001;
    cfg.tcp_port = 7000;
    cfg.token = TOKEN;
    cfg.first_seq = 1;
    cfg.max_readings = 16;
    cfg.ring_bytes = 4096;
    cfg.timeout_ms = net->timeout_ms ? net->timeout_ms : 3000;
    cfg.random = fixed_nonce;
    cfg.udp = 1;
    cfg.dial = test_dial;
    cfg.dial_dgram = test_dial_dgram;
    cfg.arg = net;
    cr_assert_eq(sluice_frame_client_init(&c, mem + 1, sizeof mem - 1, &cfg), 0);
    return c;
}

/* §9: HELLO with flags bit 1 and PROOF over it are the vectors; after WELCOME
 * the client closes the stream and its first datagram is dgram_seq 1 of the
 * session those frames make, byte for byte, on the datagram socket. */
Test(frame_client_udp, s6_handshake_over_tcp_then_the_sessions_datagrams)
{
    static const struct step tcp[] = {
        {'r', HELLO_UDP},   {'w', CHALLENGE}, {'r', PROOF_UDP},
        {'w', WELCOME_UDP}, {'e', NULL},      {0, NULL},
    };
    static const struct step udp[] = {
        {'r', "283bf90bd84365b6 01 150101 100a7b2274223a32312e357d 026f3fbd041e369d"},
        {'w', "283bf90bd84365b6 01 200101 97d8cc1ff4fb11ff"},
        {'r', "283bf90bd84365b6 02 4000 50e1858d345af00c"},
        {'w', "283bf90bd84365b6 02 200101 5d43b62beeac5bd0"},
        {0, NULL},
    };
    struct net net = {.scripts = {tcp, udp}};
    sluice_frame_client *c = tcp_udp_client(&net);
    cr_assert_eq(sluice_frame_client_send(c, T215, 10), 0);
    cr_assert_eq(sluice_frame_client_flush(c), 0);
    cr_assert_eq(sluice_frame_client_close(c), 0);
    join(&net);
    cr_assert_eq(net.dials, 2);
    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    cr_assert(st.acked == 1 && st.held == 0 && st.connects == 1 && st.ignored == 0);
    cr_assert(st.first_seq == 1 && st.last_seq == 1 && st.durable_seq == 1);
    cr_assert_eq(st.window, 4096);
}

/* A server without --udp answers the HELLO with ERROR 0x07: final, and no
 * datagram socket is opened. */
Test(frame_client_udp, s6_no_udp_listener_is_a_final_error)
{
    static const struct step tcp[] = {
        {'r', HELLO_UDP},
        {'w', "7f 11 07 00 6e6f20756470206c697374656e6572"},
        {'e', NULL},
        {0, NULL},
    };
    struct net net = {.scripts = {tcp}};
    sluice_frame_client *c = tcp_udp_client(&net);
    cr_assert_eq(sluice_frame_client_connect(c), SLUICE_FRAME_EPROTOCOL);
    join(&net);
    cr_assert_eq(net.dials, 1);
    const char *msg;
    uint64_t seq;
    cr_assert_eq(sluice_frame_client_last_error(c, &seq, &msg), 0x07);
    cr_assert_str_eq(msg, "no udp listener");
}

/* cfg.tcp_port is UDP's: without cfg.udp it is a bad config. */
Test(frame_client_udp, s6_tcp_port_without_udp_is_refused)
{
    sluice_frame_config cfg;
    sluice_frame_client *c;
    sluice_frame_config_init(&cfg);
    cfg.host = "peer";
    cfg.port = 7001;
    cfg.tcp_port = 7000;
    cfg.token = TOKEN;
    cr_assert_eq(sluice_frame_client_init(&c, mem, sizeof mem, &cfg), SLUICE_FRAME_EINVAL);
    cfg.udp = 1;
    cfg.tcp_port = 70000;
    cr_assert_eq(sluice_frame_client_init(&c, mem, sizeof mem, &cfg), SLUICE_FRAME_EINVAL);
}
