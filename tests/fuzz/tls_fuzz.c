/* tests/fuzz/tls_fuzz.c — libFuzzer target for the TLS server side, through
 * the same memory callbacks the connection layer uses (protocols/tls.c).
 *
 * Input: a byte stream from a "client", cut into feeds at the lengths its
 * first byte selects (1..256 bytes, or all at once), as recv would deliver it.
 * Each feed goes to tls_conn_feed; the server's output (handshake records,
 * alerts) is counted and dropped; decrypted plaintext is counted. Invariants:
 * nothing crashes or leaks (ASan), a connection that returned TLS_ERROR is not
 * fed again (as conn.c closes it), and plaintext never appears before the
 * handshake completed. The certificate is made once (LLVMFuzzerInitialize), in
 * a temporary directory removed at once (tls_make_self_signed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "protocols/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct tls_ctx *ctx;

struct sink {
    struct tls_conn *t;
    size_t cipher, plain;
};

static int on_cipher(void *arg, const void *p, size_t n)
{
    struct sink *s = arg;
    (void)p;
    s->cipher += n;
    return 0;
}

static int on_plain(void *arg, const void *p, size_t n)
{
    struct sink *s = arg;
    (void)p;
    if (!tls_conn_ready(s->t)) abort(); /* plaintext before the handshake */
    s->plain += n;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/sluice-tls-fuzz-XXXXXX", crt[64], key[64], err[256];
    if (!mkdtemp(dir)) abort();
    snprintf(crt, sizeof crt, "%s/server.crt", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    if (tls_make_self_signed(crt, key, "fuzz", err, sizeof err) ||
        tls_ctx_new(&ctx, crt, key, err, sizeof err)) {
        fprintf(stderr, "tls_fuzz: %s\n", err);
        abort();
    }
    unlink(crt);
    unlink(key);
    rmdir(dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t step = data[0] ? data[0] : size;
    data++;
    size--;
    struct sink s = {tls_conn_new(ctx), 0, 0};
    if (!s.t) return 0;
    struct tls_io io = {on_cipher, on_plain, &s};
    for (size_t off = 0; off < size;) {
        size_t n = size - off < step ? size - off : step;
        uint8_t *copy = malloc(n); /* exactly sized: ASan sees any over-read */
        memcpy(copy, data + off, n);
        int rc = tls_conn_feed(s.t, copy, n, &io);
        free(copy);
        off += n;
        if (rc != TLS_OK) break;
    }
    tls_conn_free(s.t);
    return 0;
}
