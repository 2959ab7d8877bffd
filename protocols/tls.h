/* protocols/tls.h — TLS through wolfSSL, from memory to memory.
 *
 * No socket is involved: the connection layer (engine/conn.c) hands the
 * ciphertext its io_uring recv delivered to tls_conn_feed, which runs the
 * handshake and gives the decrypted bytes back through io->plain; whatever
 * wolfSSL has to send (handshake records, encrypted answers) comes out through
 * io->cipher, for the connection to queue and send with io_uring. So TLS adds
 * no blocking call and no thread, and the sessions after it see the same
 * plaintext bytes as on a plain listener.
 *
 * Policy (tls_ctx_new): TLS 1.2 and 1.3 only (the Debian build still enables
 * older versions: the minimum is set explicitly), ECDHE with AES-GCM or
 * ChaCha20-Poly1305, the server's cipher order.
 */
#ifndef SLUICE_PROTOCOLS_TLS_H
#define SLUICE_PROTOCOLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

struct tls_ctx;
struct tls_conn;

/* Loads a PEM certificate (chain) and its PEM private key. On failure writes
 * one line to err (a bad path, a key that does not match its certificate) and
 * returns -errno / -EINVAL. */
int tls_ctx_new(struct tls_ctx **out, const char *cert_path, const char *key_path, char *err,
                size_t errcap);
/* Mutual TLS: clients may present a certificate, which must then be signed
 * by a CA in ca_path (PEM); one that is not fails the handshake. A client
 * without one is let in (it authenticates with a token instead). */
int tls_ctx_client_ca(struct tls_ctx *ctx, const char *ca_path, char *err, size_t errcap);
/* Contexts are counted: tls_ctx_ref takes one more reference (a worker's),
 * tls_ctx_free drops one and frees the context with the last. Connections
 * made from it hold wolfSSL's own reference, so they outlive a swap. */
struct tls_ctx *tls_ctx_ref(struct tls_ctx *ctx);
void tls_ctx_free(struct tls_ctx *ctx);

/* Writes a self-signed ECDSA P-256 certificate valid for localhost,
 * 127.0.0.1, ::1 and host (when not NULL or empty) to cert_path, and its key
 * to key_path (mode 0600), for 825 days. Returns 0, or -errno with err set. */
int tls_make_self_signed(const char *cert_path, const char *key_path, const char *host,
                         char *err, size_t errcap);

/* Where tls_conn_feed / tls_conn_write deliver: ciphertext to send, and
 * decrypted plaintext. Each returns 0, or -1 to stop (the connection is
 * being closed). */
struct tls_io {
    int (*cipher)(void *arg, const void *p, size_t n);
    int (*plain)(void *arg, const void *p, size_t n);
    void *arg;
};

enum {
    TLS_OK = 0,        /* fed; more may come */
    TLS_CLOSED = 1,    /* the peer sent close_notify */
    TLS_ERROR = -1,    /* a protocol error or a refused handshake: close */
};

struct tls_conn *tls_conn_new(struct tls_ctx *ctx);
void tls_conn_free(struct tls_conn *t);

/* Ciphertext p[0..n) from the peer: all of it is taken (wolfSSL keeps
 * partial records). Returns TLS_OK, TLS_CLOSED or TLS_ERROR. */
int tls_conn_feed(struct tls_conn *t, const void *p, size_t n, const struct tls_io *io);

/* Encrypts p[0..n) (only once tls_conn_ready). Returns 0 or TLS_ERROR. */
int tls_conn_write(struct tls_conn *t, const void *p, size_t n, const struct tls_io *io);

/* The client's verified certificate as DER, copied into out (cap bytes):
 * its length, 0 when the client presented none (or it does not fit). */
size_t tls_conn_peer_cert(const struct tls_conn *t, unsigned char *out, size_t cap);

/* The handshake completed. */
bool tls_conn_ready(const struct tls_conn *t);

/* The negotiated protocol version ("TLSv1.3"), or "" before the handshake. */
const char *tls_conn_version(const struct tls_conn *t);

#endif
