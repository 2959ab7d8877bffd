/* protocols/tls.c — wolfSSL from memory to memory; see tls.h. */
#include "protocols/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* wolfSSL requires its build options before any other of its headers. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>

/* TLS 1.3 suites first, then TLS 1.2 ECDHE with AEAD ciphers only: no CBC, no
 * static RSA, no SHA-1 MACs. */
#define CIPHERS                                                                                    \
    "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"   \
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
#define CERT_DAYS 825 /* the longest a publicly trusted server certificate was allowed */

struct tls_ctx {
    WOLFSSL_CTX *ctx;
    _Atomic unsigned refs;
};

struct tls_conn {
    WOLFSSL *ssl;
    const unsigned char *src; /* ciphertext being fed */
    size_t srclen;
    const struct tls_io *io;
    bool ready;
};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;

static void init(void)
{
    init_rc = wolfSSL_Init() == WOLFSSL_SUCCESS ? 0 : -EIO;
}

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct tls_conn *t = arg;
    (void)ssl;
    if (!t->srclen) return WOLFSSL_CBIO_ERR_WANT_READ;
    size_t n = (size_t)sz < t->srclen ? (size_t)sz : t->srclen;
    memcpy(buf, t->src, n);
    t->src += n;
    t->srclen -= n;
    return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
    struct tls_conn *t = arg;
    (void)ssl;
    if (!t->io || t->io->cipher(t->io->arg, buf, (size_t)sz)) return WOLFSSL_CBIO_ERR_CONN_CLOSE;
    return sz;
}

static void say(char *err, size_t cap, const char *fmt, const char *a, const char *b)
{
    if (err && cap) snprintf(err, cap, fmt, a, b);
}

/* The public key of key_path's private key, as SubjectPublicKeyInfo DER
 * (ECC or RSA); 0 when it cannot be read that way. */
static int key_spki(const char *key_path, unsigned char *out, int cap)
{
    unsigned char pem[8192], der[8192];
    FILE *f = fopen(key_path, "rb");
    if (!f) return 0;
    size_t pn = fread(pem, 1, sizeof pem, f);
    fclose(f);
    int dn = wc_KeyPemToDer(pem, (int)pn, der, sizeof der, NULL);
    memset(pem, 0, sizeof pem);
    int n = 0;
    if (dn > 0) {
        ecc_key ecc;
        word32 idx = 0;
        if (wc_ecc_init(&ecc) == 0) {
            if (wc_EccPrivateKeyDecode(der, &idx, &ecc, (word32)dn) == 0)
                n = wc_EccPublicKeyToDer(&ecc, out, (word32)cap, 1);
            wc_ecc_free(&ecc);
        }
        RsaKey rsa;
        idx = 0;
        if (n <= 0 && wc_InitRsaKey(&rsa, NULL) == 0) {
            if (wc_RsaPrivateKeyDecode(der, &idx, &rsa, (word32)dn) == 0)
                n = wc_RsaKeyToPublicDer(&rsa, out, (word32)cap);
            wc_FreeRsaKey(&rsa);
        }
    }
    memset(der, 0, sizeof der);
    return n > 0 ? n : 0;
}

/* wolfSSL 5.5.4's wolfSSL_CTX_check_private_key accepts an ECC key of another
 * certificate: compare the public keys ourselves. -1: they differ; 0: they
 * match, or the key is of a kind this cannot read (wolfSSL's check stands). */
static int key_matches(const char *cert_path, const char *key_path)
{
    unsigned char a[2048], b[2048];
    int an = sizeof a;
    WOLFSSL_X509 *x = wolfSSL_X509_load_certificate_file(cert_path, WOLFSSL_FILETYPE_PEM);
    if (!x) return 0;
    int ok = wolfSSL_X509_get_pubkey_buffer(x, a, &an);
    wolfSSL_X509_free(x);
    int bn = key_spki(key_path, b, sizeof b);
    if (ok != WOLFSSL_SUCCESS || !bn) return 0;
    return an == bn && memcmp(a, b, (size_t)an) == 0 ? 0 : -1;
}

int tls_ctx_new(struct tls_ctx **out, const char *cert_path, const char *key_path, char *err,
                size_t errcap)
{
    *out = NULL;
    pthread_once(&init_once, init);
    if (init_rc) {
        say(err, errcap, "%s%s", "wolfSSL_Init failed", "");
        return init_rc;
    }
    if (access(cert_path, R_OK)) {
        int e = errno;
        say(err, errcap, "TLS certificate %s: %s", cert_path, strerror(e));
        return -e;
    }
    if (access(key_path, R_OK)) {
        int e = errno;
        say(err, errcap, "TLS key %s: %s", key_path, strerror(e));
        return -e;
    }
    struct tls_ctx *c = calloc(1, sizeof *c);
    if (c) atomic_init(&c->refs, 1);
    if (!c || !(c->ctx = wolfSSL_CTX_new(wolfSSLv23_server_method()))) {
        free(c);
        say(err, errcap, "%s%s", "out of memory for the TLS context", "");
        return -ENOMEM;
    }
    const char *why = NULL;
    if (wolfSSL_CTX_SetMinVersion(c->ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS)
        why = "cannot set the minimum TLS version";
    else if (wolfSSL_CTX_set_cipher_list(c->ctx, CIPHERS) != WOLFSSL_SUCCESS)
        why = "cannot set the cipher list";
    if (why) {
        say(err, errcap, "%s%s", why, "");
        tls_ctx_free(c);
        return -EINVAL;
    }
    if (wolfSSL_CTX_use_certificate_chain_file(c->ctx, cert_path) != WOLFSSL_SUCCESS) {
        say(err, errcap, "TLS certificate %s: %s", cert_path, "not a PEM certificate wolfSSL can load");
        tls_ctx_free(c);
        return -EINVAL;
    }
    if (wolfSSL_CTX_use_PrivateKey_file(c->ctx, key_path, WOLFSSL_FILETYPE_PEM) !=
        WOLFSSL_SUCCESS) {
        say(err, errcap, "TLS key %s: %s", key_path, "not a PEM private key wolfSSL can load");
        tls_ctx_free(c);
        return -EINVAL;
    }
    if (wolfSSL_CTX_check_private_key(c->ctx) != WOLFSSL_SUCCESS ||
        key_matches(cert_path, key_path)) {
        say(err, errcap, "TLS key %s does not match the certificate %s", key_path, cert_path);
        tls_ctx_free(c);
        return -EINVAL;
    }
    wolfSSL_CTX_set_options(c->ctx, WOLFSSL_OP_CIPHER_SERVER_PREFERENCE);
    /* key exchange groups: X25519 and the NIST curves clients use, not every
     * curve Debian's build knows (brainpool, secp256k1, X448, FFDHE) */
    int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};
    if (wolfSSL_CTX_set_groups(c->ctx, groups, 3) != WOLFSSL_SUCCESS) {
        say(err, errcap, "%s%s", "cannot set the key exchange groups", "");
        tls_ctx_free(c);
        return -EINVAL;
    }
    wolfSSL_CTX_SetIORecv(c->ctx, io_recv);
    wolfSSL_CTX_SetIOSend(c->ctx, io_send);
    *out = c;
    return 0;
}

struct tls_ctx *tls_ctx_ref(struct tls_ctx *c)
{
    if (c) atomic_fetch_add(&c->refs, 1);
    return c;
}

int tls_ctx_client_ca(struct tls_ctx *c, const char *ca_path, char *err, size_t errcap)
{
    if (access(ca_path, R_OK)) {
        int e = errno;
        say(err, errcap, "--tls-client-ca %s: %s", ca_path, strerror(e));
        return -e;
    }
    if (wolfSSL_CTX_load_verify_locations(c->ctx, ca_path, NULL) != WOLFSSL_SUCCESS) {
        say(err, errcap, "--tls-client-ca %s: %s", ca_path, "no PEM CA certificate wolfSSL can load");
        return -EINVAL;
    }
    wolfSSL_CTX_set_verify(c->ctx, WOLFSSL_VERIFY_PEER, NULL); /* asked for, not required */
    return 0;
}

size_t tls_conn_peer_cert(const struct tls_conn *t, unsigned char *out, size_t cap)
{
    if (!t->ready) return 0;
    WOLFSSL_X509 *x = wolfSSL_get_peer_certificate(t->ssl);
    if (!x) return 0;
    int n = 0;
    const unsigned char *der = wolfSSL_X509_get_der(x, &n);
    size_t len = der && n > 0 && (size_t)n <= cap ? (size_t)n : 0;
    if (len) memcpy(out, der, len);
    wolfSSL_X509_free(x);
    return len;
}

void tls_ctx_free(struct tls_ctx *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->ctx) wolfSSL_CTX_free(c->ctx);
    free(c);
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx)
{
    struct tls_conn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (!(t->ssl = wolfSSL_new(ctx->ctx))) {
        free(t);
        return NULL;
    }
    wolfSSL_SetIOReadCtx(t->ssl, t);
    wolfSSL_SetIOWriteCtx(t->ssl, t);
    return t;
}

void tls_conn_free(struct tls_conn *t)
{
    if (!t) return;
    wolfSSL_free(t->ssl);
    free(t);
}

bool tls_conn_ready(const struct tls_conn *t)
{
    return t->ready;
}

const char *tls_conn_version(const struct tls_conn *t)
{
    return t->ready ? wolfSSL_get_version(t->ssl) : "";
}

int tls_conn_feed(struct tls_conn *t, const void *p, size_t n, const struct tls_io *io)
{
    t->src = p;
    t->srclen = n;
    t->io = io;
    int rc = TLS_OK;
    if (!t->ready) {
        int r = wolfSSL_accept(t->ssl);
        if (r == WOLFSSL_SUCCESS) {
            t->ready = true;
        } else {
            int e = wolfSSL_get_error(t->ssl, r);
            if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE) rc = TLS_ERROR;
            goto out;
        }
    }
    for (;;) {
        char buf[16384];
        int r = wolfSSL_read(t->ssl, buf, sizeof buf);
        if (r > 0) {
            if (io->plain(io->arg, buf, (size_t)r)) {
                rc = TLS_ERROR;
                break;
            }
            continue;
        }
        int e = wolfSSL_get_error(t->ssl, r);
        if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) break;
        rc = e == WOLFSSL_ERROR_ZERO_RETURN ? TLS_CLOSED : TLS_ERROR;
        break;
    }
out:
    t->src = NULL;
    t->srclen = 0;
    t->io = NULL;
    return rc;
}

int tls_conn_write(struct tls_conn *t, const void *p, size_t n, const struct tls_io *io)
{
    if (!t->ready) return TLS_ERROR;
    t->io = io;
    const char *q = p;
    int rc = 0;
    while (n) {
        int chunk = n > 16384 ? 16384 : (int)n;
        int r = wolfSSL_write(t->ssl, q, chunk);
        if (r <= 0) {
            rc = TLS_ERROR;
            break;
        }
        q += r;
        n -= (size_t)r;
    }
    t->io = NULL;
    return rc;
}

/* ---- the self-signed certificate of a first start ---- */

/* GeneralNames: dNSName localhost [, host], iPAddress 127.0.0.1 and ::1. */
static int alt_names(unsigned char *out, size_t cap, const char *host)
{
    unsigned char body[512];
    size_t n = 0;
    const char *dns[2] = {"localhost", host};
    for (int i = 0; i < 2; i++) {
        const char *d = dns[i];
        size_t len = d ? strlen(d) : 0;
        if (!len || len > 200 || (i == 1 && !strcmp(d, "localhost"))) continue;
        body[n++] = 0x82;
        body[n++] = (unsigned char)len;
        memcpy(body + n, d, len);
        n += len;
    }
    static const unsigned char v4[] = {0x87, 4, 127, 0, 0, 1};
    static const unsigned char v6[] = {0x87, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    memcpy(body + n, v4, sizeof v4);
    n += sizeof v4;
    memcpy(body + n, v6, sizeof v6);
    n += sizeof v6;
    size_t head = n < 128 ? 2 : n < 256 ? 3 : 4;
    if (head + n > cap) return -1;
    out[0] = 0x30;
    if (n < 128) {
        out[1] = (unsigned char)n;
    } else if (n < 256) {
        out[1] = 0x81;
        out[2] = (unsigned char)n;
    } else {
        out[1] = 0x82;
        out[2] = (unsigned char)(n >> 8);
        out[3] = (unsigned char)n;
    }
    memcpy(out + head, body, n);
    return (int)(head + n);
}

static int write_file(const char *path, const unsigned char *p, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return -errno;
    int rc = 0;
    while (n && !rc) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno != EINTR) rc = -errno;
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        }
    }
    if (!rc && fsync(fd)) rc = -errno;
    if (close(fd) && !rc) rc = -errno;
    return rc;
}

int tls_make_self_signed(const char *cert_path, const char *key_path, const char *host,
                         char *err, size_t errcap)
{
    pthread_once(&init_once, init);
    WC_RNG rng;
    ecc_key key;
    Cert *cert = calloc(1, sizeof *cert);
    unsigned char *der = malloc(4096), *pem = malloc(8192);
    int rc = -EIO, sz;
    const char *step = "out of memory";
    bool rng_ok = false, key_ok = false;
    if (!cert || !der || !pem) {
        rc = -ENOMEM;
        goto out;
    }
    step = "random number generator";
    if (wc_InitRng(&rng)) goto out;
    rng_ok = true;
    step = "P-256 key generation";
    if (wc_ecc_init(&key)) goto out;
    key_ok = true;
    if (wc_ecc_make_key_ex(&rng, 32, &key, ECC_SECP256R1)) goto out;
    step = "certificate fields";
    if (wc_InitCert(cert)) goto out;
    snprintf(cert->subject.commonName, sizeof cert->subject.commonName, "localhost");
    snprintf(cert->subject.org, sizeof cert->subject.org, "sluice (self-signed)");
    cert->sigType = CTC_SHA256wECDSA;
    cert->daysValid = CERT_DAYS;
    cert->isCA = 0;
    sz = alt_names(cert->altNames, sizeof cert->altNames, host);
    if (sz < 0) goto out;
    cert->altNamesSz = sz;
    if (wc_SetExtKeyUsage(cert, "serverAuth")) goto out;
    step = "certificate signing";
    if (wc_MakeCert_ex(cert, der, 4096, ECC_TYPE, &key, &rng) < 0) goto out;
    sz = wc_SignCert_ex(cert->bodySz, cert->sigType, der, 4096, ECC_TYPE, &key, &rng);
    if (sz < 0) goto out;
    step = "PEM encoding";
    int pn = wc_DerToPem(der, (word32)sz, pem, 8192, CERT_TYPE);
    if (pn < 0) goto out;
    int kd = wc_EccKeyToDer(&key, der, 4096);
    if (kd < 0) goto out;
    /* the key first, private from the start: a reader never sees it open */
    int kn = wc_DerToPem(der, (word32)kd, pem + pn, (word32)(8192 - pn), ECC_PRIVATEKEY_TYPE);
    if (kn < 0) goto out;
    step = key_path;
    if ((rc = write_file(key_path, pem + pn, (size_t)kn, 0600))) goto out;
    step = cert_path;
    rc = write_file(cert_path, pem, (size_t)pn, 0644);
out:
    if (rc && err) {
        if (rc == -EIO)
            snprintf(err, errcap, "cannot make a self-signed certificate: %s failed", step);
        else
            snprintf(err, errcap, "cannot make a self-signed certificate: %s: %s", step,
                     strerror(-rc));
    }
    if (key_ok) wc_ecc_free(&key);
    if (rng_ok) wc_FreeRng(&rng);
    if (der) memset(der, 0, 4096);
    if (pem) memset(pem, 0, 8192);
    free(cert);
    free(der);
    free(pem);
    return rc;
}
