/* client/frame_client.c — the frame protocol's device client
 * (sluice_frame_client_* in include/sluice.h; docs/frame-protocol.md).
 *
 * libc and POSIX sockets only, no allocation: everything lives in the
 * caller's block, laid out by layout() below as
 *     [struct sluice_frame_client][ring entries][ring bytes][send buffer]
 * One connection at a time, driven by the caller's calls; nothing runs
 * between them. The socket is non-blocking and every wait is a poll() with
 * the call's deadline, so a silent server costs at most cfg.timeout_ms.
 *
 * Numbering (§4): the ring holds readings in order; the oldest one has
 * number first_seq once "numbered". Entries [0, sent) were written on the
 * live connection, whose next reading the server numbers first_seq + sent.
 */
/* plain C11 plus POSIX.1-2008 (sockets, poll, clock_gettime, getaddrinfo) when
 * built alone; inside the tree meson's _GNU_SOURCE gives the same */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "client/frame_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdalign.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/random.h>
#endif

#include "sluice.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* a port without it sets SO_NOSIGPIPE or ignores SIGPIPE */
#endif

#define HOST_MAX       256
#define RX_MAX         256 /* the largest server frame: ERROR, 1 + 2 + 1 + 10 + 200 bytes */
#define AUTH_MAX       128 /* HELLO (<= 39, no ticket) + CHALLENGE (<= 28) + PROOF (34) */
#define BACKOFF_MIN    100
#define BACKOFF_MAX    5000
#define FRAME_OVERHEAD 16 /* type, body length, count, item length: 32-bit varints */

struct entry {
    uint32_t off, len; /* the payload at bytes[off..off+len) */
};

struct sluice_frame_client {
    char host[HOST_MAX];
    unsigned port, timeout_ms;
    uint32_t max_readings, ring_bytes, max_reading, batch;
    int (*random)(void *arg, void *buf, size_t n);
    int (*dial)(void *arg, const char *host, unsigned port, unsigned timeout_ms);
    void *arg;
    struct frame_client_keys keys;

    /* the connection: fd -1 when there is none; a live one is past WELCOME */
    int fd;
    uint64_t window, max_frame;
    int pong_due, bye_due;
    uint8_t rx[RX_MAX];
    size_t rx_n;
    uint8_t *tx; /* one frame being written: tx[tx_off..tx_len) is still due */
    size_t tx_cap, tx_len, tx_off;

    /* the ring of readings not yet acknowledged */
    struct entry *ent;
    uint8_t *bytes;
    uint32_t head, count; /* ent[head] is the oldest */
    uint32_t sent;        /* written on this connection */
    uint32_t written;     /* written on some connection (>= sent): a resend's mark */
    uint32_t wpos;        /* where the next payload goes */
    int wrapped;          /* the newest payloads sit before the oldest ones */
    int numbered;
    uint64_t first_seq;

    /* retrying */
    int64_t retry_at;
    unsigned backoff_ms;
    int pending;      /* an error met after send() had queued: the next call's */
    int last_failure; /* the last transient error, said when the deadline passes */

    unsigned err_code; /* the last ERROR frame */
    uint64_t err_seq;
    char err_msg[FRAME_MESSAGE_MAX + 1];

    sluice_frame_stats st;
};

/* ---- keys and MACs (§3) ---- */

void frame_client_keys(struct frame_client_keys *keys, const char *token, size_t n,
                       uint8_t k_out[SHA256_LEN])
{
    static const char key_label[] = "sluice frame key v1";
    uint8_t h[SHA256_LEN], k[SHA256_LEN];
    sha256(token, n, h);
    memcpy(keys->token_id, h, FRAME_TOKEN_ID_LEN);
    sha256_hmac(token, n, key_label, sizeof key_label - 1, k);
    sha256_hmac(k, sizeof k, "Client Key", 10, keys->client_key);
    sha256(keys->client_key, SHA256_LEN, keys->stored_key);
    sha256_hmac(k, sizeof k, "Server Key", 10, keys->server_key);
    if (k_out) memcpy(k_out, k, sizeof k);
    sha256_wipe(k, sizeof k);
}

void frame_client_proof(const struct frame_client_keys *keys, const uint8_t *auth, size_t n,
                        uint8_t client_sig[SHA256_LEN], uint8_t proof[SHA256_LEN])
{
    uint8_t sig[SHA256_LEN];
    sha256_hmac(keys->stored_key, SHA256_LEN, auth, n, sig);
    for (int i = 0; i < SHA256_LEN; i++)
        proof[i] = keys->client_key[i] ^ sig[i];
    if (client_sig) memcpy(client_sig, sig, sizeof sig);
}

void frame_client_server_signature(const struct frame_client_keys *keys, const uint8_t *auth,
                                   size_t n, uint8_t out[SHA256_LEN])
{
    sha256_hmac(keys->server_key, SHA256_LEN, auth, n, out);
}

void frame_client_session_key(const struct frame_client_keys *keys, const uint8_t *auth, size_t n,
                              uint8_t out[SHA256_LEN])
{
    static const char label[] = "sluice session key v1";
    struct sha256_hmac h;
    sha256_hmac_init(&h, keys->client_key, SHA256_LEN);
    sha256_hmac_update(&h, label, sizeof label - 1);
    sha256_hmac_update(&h, auth, n);
    sha256_hmac_final(&h, out);
}

/* ---- time, randomness, transport: the platform ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(int64_t deadline)
{
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : left > 0x7fffffff ? 0x7fffffff : (int)left;
}

/* The port point for randomness: a platform without getrandom() replaces
 * this body (or passes cfg.random). */
static int port_random(void *arg, void *buf, size_t n)
{
    (void)arg;
#if defined(__linux__)
    uint8_t *p = buf;
    while (n) {
        ssize_t k = getrandom(p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
#else
    (void)buf, (void)n;
    return -1; /* no source: refuse to connect rather than send a guessable nonce */
#endif
}

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    return 0;
}

/* One TCP connect within the deadline: the fd, or -errno / ETIMEDOUT. */
static int tcp_connect(int family, const struct sockaddr *sa, socklen_t salen, int64_t deadline)
{
    int fd = socket(family, SOCK_STREAM, 0), rc, one = 1;
    if (fd < 0) return -errno;
    /* our frames are whole when written: Nagle would only delay them */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    rc = set_nonblocking(fd);
    if (rc == 0 && connect(fd, sa, salen) < 0) {
        rc = -errno;
        if (rc == -EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int k = poll(&p, 1, remaining(deadline));
            socklen_t len = sizeof rc;
            if (k == 0)
                rc = SLUICE_FRAME_ETIMEDOUT;
            else if (k < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &rc, &len) < 0)
                rc = -errno;
            else
                rc = -rc;
        }
    }
    if (rc == 0) return fd;
    close(fd);
    return rc;
}

/* TCP to host:port within the timeout. An address literal is connected to
 * directly: no resolver, and nothing allocated (getaddrinfo allocates its
 * answer); a name tries each address getaddrinfo gives, in order. */
static int tcp_dial(const char *host, unsigned port, unsigned timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    memset(&v4, 0, sizeof v4);
    memset(&v6, 0, sizeof v6);
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return tcp_connect(AF_INET, (struct sockaddr *)&v4, sizeof v4, deadline);
    }
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return tcp_connect(AF_INET6, (struct sockaddr *)&v6, sizeof v6, deadline);
    }

    char service[12];
    struct addrinfo hints, *ai = NULL;
    int rc = SLUICE_FRAME_ERESOLVE;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof service, "%u", port);
    if (getaddrinfo(host, service, &hints, &ai) != 0) return SLUICE_FRAME_ERESOLVE;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        rc = tcp_connect(a->ai_family, a->ai_addr, a->ai_addrlen, deadline);
        if (rc >= 0 || rc == SLUICE_FRAME_ETIMEDOUT) break;
    }
    freeaddrinfo(ai);
    return rc;
}

static int dial_default(void *arg, const char *host, unsigned port, unsigned timeout_ms)
{
    (void)arg;
    return tcp_dial(host, port, timeout_ms);
}

/* ---- the ring ---- */

static struct entry *at(struct sluice_frame_client *c, uint32_t i)
{
    return &c->ent[(c->head + i) % c->max_readings];
}

/* Where a payload of n bytes would go, or -1 when the ring has no room. */
static int64_t ring_place(const struct sluice_frame_client *c, size_t n, int *wraps)
{
    *wraps = 0;
    if (c->count == c->max_readings) return -1;
    if (n == 0) return c->wpos;
    if (c->count == 0) return n <= c->ring_bytes ? 0 : -1;
    uint32_t rpos = c->ent[c->head].off;
    if (c->wrapped) return c->wpos + n <= rpos ? (int64_t)c->wpos : -1;
    if (c->wpos + n <= c->ring_bytes) return c->wpos;
    if (n <= rpos) {
        *wraps = 1;
        return 0;
    }
    return -1;
}

/* Drops the k oldest readings: acknowledged, or given up. */
static void ring_drop(struct sluice_frame_client *c, uint32_t k, uint64_t *counter)
{
    for (; k && c->count; k--) {
        uint32_t off = c->ent[c->head].off;
        c->head = (c->head + 1) % c->max_readings;
        c->count--;
        c->first_seq++;
        (*counter)++;
        if (c->sent) c->sent--;
        if (c->written) c->written--;
        /* the oldest payload moved back to the start: the ring unwrapped */
        if (c->count && c->ent[c->head].off < off) c->wrapped = 0;
    }
    if (c->count == 0) c->wpos = 0, c->wrapped = 0;
}

/* Drops what durable_seq d covers; the caller checked d against what may be
 * covered. */
static void ring_ack(struct sluice_frame_client *c, uint64_t d)
{
    if (d > c->st.durable_seq) c->st.durable_seq = d;
    if (!c->numbered || d < c->first_seq) return;
    uint64_t k = d - c->first_seq + 1;
    if (k >= c->count) {
        /* all of them, and numbering goes on after d */
        ring_drop(c, c->count, &c->st.acked);
        c->first_seq = d + 1;
    } else {
        ring_drop(c, (uint32_t)k, &c->st.acked);
    }
}

/* ---- the connection ---- */

static int fatal(int rc)
{
    switch (rc) {
    case SLUICE_FRAME_ESTORAGE:
    case SLUICE_FRAME_ESHUTDOWN:
    case SLUICE_FRAME_EIDLE:
    case SLUICE_FRAME_ECLOSED:
    case SLUICE_FRAME_ERESOLVE: /* a device's DNS comes and goes with its link */
    case SLUICE_FRAME_ETIMEDOUT:
        return 0;
    default:
        /* -errno from the socket layer (refused, reset, unreachable) is transient */
        return rc <= -0x100 || rc == 0;
    }
}

static void drop_conn(struct sluice_frame_client *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->rx_n = c->tx_len = c->tx_off = 0;
    c->pong_due = c->bye_due = 0;
    c->sent = 0;
    /* nothing held: the next HELLO says 0 and the server numbers after its mark */
    if (c->count == 0) c->numbered = 0;
}

/* A connection failed with rc: close it, and back off when retrying may cure it. */
static int failed(struct sluice_frame_client *c, int rc)
{
    drop_conn(c);
    if (!fatal(rc)) {
        c->last_failure = rc;
        c->retry_at = now_ms() + c->backoff_ms;
        c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX ? BACKOFF_MAX : c->backoff_ms * 2;
    }
    return rc;
}

/* Writes p[0..n) whole within the deadline (the handshake's frames). */
static int write_all(struct sluice_frame_client *c, const uint8_t *p, size_t n, int64_t deadline)
{
    while (n) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
            p += k, n -= (size_t)k;
            c->st.bytes_out += (uint64_t)k;
            continue;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -errno;
        struct pollfd pf = {c->fd, POLLOUT, 0};
        int r = poll(&pf, 1, remaining(deadline));
        if (r == 0) return SLUICE_FRAME_ETIMEDOUT;
        if (r < 0 && errno != EINTR) return -errno;
    }
    return 0;
}

/* Reads what the socket has into rx. Returns 0, ECLOSED at EOF, -errno. */
static int read_some(struct sluice_frame_client *c)
{
    if (c->rx_n == RX_MAX) return SLUICE_FRAME_EBADFRAME; /* frame_peek let it through */
    ssize_t k = recv(c->fd, c->rx + c->rx_n, RX_MAX - c->rx_n, 0);
    if (k > 0) {
        c->rx_n += (size_t)k;
        c->st.bytes_in += (uint64_t)k;
        return 0;
    }
    if (k == 0) return SLUICE_FRAME_ECLOSED;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
}

/* The next whole frame at the start of rx: 1 with *f (a slice of rx, valid
 * until consume()), 0 when more bytes are needed, or EBADFRAME. */
static int next_frame(struct sluice_frame_client *c, struct frame *f)
{
    uint8_t type;
    size_t total;
    int rc = frame_peek(c->rx, c->rx_n, &type, &total);
    if (rc == FRAME_INCOMPLETE) return 0;
    if (rc || total > RX_MAX) return SLUICE_FRAME_EBADFRAME;
    if (total > c->rx_n) return 0;
    return frame_parse(c->rx, total, f) ? SLUICE_FRAME_EBADFRAME : 1;
}

static void consume(struct sluice_frame_client *c, size_t n)
{
    memmove(c->rx, c->rx + n, c->rx_n - n);
    c->rx_n -= n;
}

/* Keeps an ERROR frame readable and maps it to its code. */
static int on_error(struct sluice_frame_client *c, const struct frame *f)
{
    size_t m = f->u.error.message.n;
    c->err_code = f->u.error.code;
    c->err_seq = f->u.error.seq;
    if (m) memcpy(c->err_msg, f->u.error.message.p, m);
    c->err_msg[m] = 0;
    return SLUICE_FRAME_ECODE(f->u.error.code);
}

/* Waits for the next frame during the handshake, which must be `want` (or an
 * ERROR). Leaves it first in rx for the caller to consume. */
static int read_frame(struct sluice_frame_client *c, uint8_t want, struct frame *f,
                      int64_t deadline)
{
    for (;;) {
        int rc = next_frame(c, f);
        if (rc < 0) return rc;
        if (rc == 1) {
            if (f->type == FRAME_ERROR) return on_error(c, f);
            return f->type == want ? 0 : SLUICE_FRAME_EBADFRAME;
        }
        struct pollfd pf = {c->fd, POLLIN, 0};
        int r = poll(&pf, 1, remaining(deadline));
        if (r == 0) return SLUICE_FRAME_ETIMEDOUT;
        if (r < 0 && errno != EINTR) return -errno;
        if (r > 0 && (rc = read_some(c))) return rc;
    }
}

/* HELLO, CHALLENGE, PROOF, WELCOME on a fresh fd. Returns 0 with the
 * connection live, or an error with it closed. */
static int handshake(struct sluice_frame_client *c, int64_t deadline)
{
    uint8_t auth[AUTH_MAX], nonce[FRAME_NONCE_LEN], proof[SHA256_LEN], sig[SHA256_LEN];
    size_t n, hello_n, chal_n;
    struct frame f;
    int rc, fd;
    uint64_t next_seq = c->numbered ? c->first_seq : 0;

    if (c->random(c->arg, nonce, sizeof nonce)) return SLUICE_FRAME_ERANDOM;
    fd = c->dial(c->arg, c->host, c->port, (unsigned)remaining(deadline));
    if (fd < 0) return fd;
    c->fd = fd;
    if ((rc = set_nonblocking(fd))) goto fail;
    hello_n = frame_encode_hello(auth, sizeof auth, c->keys.token_id, nonce, next_seq, NULL, 0);
    if ((rc = write_all(c, auth, hello_n, deadline))) goto fail;

    if ((rc = read_frame(c, FRAME_CHALLENGE, &f, deadline))) goto fail;
    chal_n = f.total;
    if (hello_n + chal_n + 2 + SHA256_LEN > sizeof auth) {
        rc = SLUICE_FRAME_EBADFRAME; /* a CHALLENGE padded past its fields cannot parse */
        goto fail;
    }
    memcpy(auth + hello_n, c->rx, chal_n);
    consume(c, chal_n);
    frame_client_proof(&c->keys, auth, hello_n + chal_n, NULL, proof);
    n = hello_n + chal_n;
    n += frame_encode_proof(auth + n, sizeof auth - n, proof);
    if ((rc = write_all(c, auth + hello_n + chal_n, n - hello_n - chal_n, deadline))) goto fail;

    if ((rc = read_frame(c, FRAME_WELCOME, &f, deadline))) goto fail;
    frame_client_server_signature(&c->keys, auth, n, sig);
    if (!sha256_equal(sig, f.u.welcome.server_signature, SHA256_LEN)) {
        /* anyone can answer HELLO; only the server holding ServerKey can sign */
        rc = SLUICE_FRAME_ESIGNATURE;
        goto fail;
    }
    c->window = f.u.welcome.window;
    c->max_frame = f.u.welcome.max_frame;
    uint64_t d = f.u.welcome.durable_seq;
    consume(c, f.total);
    c->st.connects++;
    c->backoff_ms = BACKOFF_MIN;
    c->last_failure = 0;
    c->sent = 0;
    if (!c->numbered) {
        /* we said 0: ours are numbered after the server's final mark */
        c->numbered = 1;
        c->first_seq = d + 1;
        if (c->count && !c->st.first_seq) c->st.first_seq = c->first_seq;
        if (d > c->st.durable_seq) c->st.durable_seq = d;
    } else if (d >= c->first_seq) {
        /* An older connection's commits completed after its last ACK reached
         * us. The server numbers this connection's readings from the next_seq
         * we sent, so dropping the covered ones and sending the rest would
         * shift them; reconnecting with next_seq past d keeps every number
         * exact. Rare: it takes a connection lost with commits in flight. */
        ring_ack(c, d);
        drop_conn(c);
        return 1;
    } else if (d > c->st.durable_seq) {
        c->st.durable_seq = d;
    }
    sha256_wipe(auth, sizeof auth);
    return 0;
fail:
    sha256_wipe(auth, sizeof auth);
    drop_conn(c);
    return rc;
}

/* Connected, or why not. Waits out a backoff first, within the deadline. */
static int ensure(struct sluice_frame_client *c, int64_t deadline)
{
    if (c->fd >= 0) return 0;
    for (int tries = 0;; tries++) {
        int64_t now = now_ms();
        if (c->retry_at > now) {
            if (c->retry_at >= deadline) {
                poll(NULL, 0, remaining(deadline));
                return c->last_failure ? c->last_failure : SLUICE_FRAME_ETIMEDOUT;
            }
            poll(NULL, 0, (int)(c->retry_at - now));
        }
        int rc = handshake(c, deadline);
        if (rc == 1 && tries < 2) continue; /* re-handshake after the WELCOME above */
        if (rc == 1) rc = SLUICE_FRAME_EBADFRAME;
        return rc ? failed(c, rc) : 0;
    }
}

/* ---- readings out, ACKs in ---- */

static size_t varint_len(uint64_t v)
{
    size_t k = 1;
    while (v >>= 7)
        k++;
    return k;
}

/* Puts the next frame into the empty send buffer: a PONG owed, then the
 * readings due (force: fewer than cfg.batch too), then a BYE asked for.
 * Returns 0 or ELARGE (a held reading the server's max_frame cannot take). */
static int fill_tx(struct sluice_frame_client *c, int force)
{
    if (c->tx_off < c->tx_len) return 0;
    c->tx_len = c->tx_off = 0;
    if (c->pong_due) {
        c->tx_len = frame_encode_empty(c->tx, c->tx_cap, FRAME_PONG);
        c->pong_due = 0;
        return 0;
    }
    uint32_t due = c->count - c->sent;
    if (c->window && c->sent + (uint64_t)due > c->window)
        due = c->sent >= c->window ? 0 : (uint32_t)(c->window - c->sent);
    if (due && (force || due >= c->batch || c->count - c->sent > due)) {
        size_t cap = c->tx_cap;
        if (c->max_frame && c->max_frame < cap) cap = (size_t)c->max_frame;
        /* as many as fit one frame, up to cfg.batch */
        uint32_t k = 0;
        size_t items = 0, total = 0;
        while (k < due && k < c->batch) {
            size_t len = at(c, c->sent + k)->len;
            size_t it = items + varint_len(len) + len;
            size_t body = varint_len(k + 1) + it;
            size_t t = 1 + varint_len(body) + body;
            if (t > cap) break;
            items = it, total = t, k++;
        }
        struct entry *e = at(c, c->sent);
        if (k <= 1) {
            /* one reading: a READING frame, a byte or two smaller than a BATCH of one */
            total = frame_encode_reading(c->tx, cap, c->bytes + e->off, e->len);
            if (!total) return SLUICE_FRAME_ELARGE;
            k = 1;
        } else {
            size_t body = varint_len(k) + items, n = 0;
            c->tx[n++] = FRAME_BATCH;
            n += frame_put_varint(c->tx + n, body);
            n += frame_put_varint(c->tx + n, k);
            for (uint32_t i = 0; i < k; i++) {
                e = at(c, c->sent + i);
                n += frame_put_varint(c->tx + n, e->len);
                memcpy(c->tx + n, c->bytes + e->off, e->len);
                n += e->len;
            }
            (void)total;
        }
        c->tx_len = total;
        for (uint32_t i = 0; i < k; i++, c->sent++)
            if (c->sent < c->written) c->st.resent++;
        if (c->sent > c->written) c->written = c->sent;
        c->st.sent += k;
        uint64_t last = c->first_seq + c->sent - 1;
        if (last > c->st.last_seq) c->st.last_seq = last;
        return 0;
    }
    if (c->bye_due == 1 && c->sent == c->count) {
        c->tx_len = frame_encode_empty(c->tx, c->tx_cap, FRAME_BYE);
        c->bye_due = 2;
    }
    return 0;
}

/* Handles the frames in rx on a live connection. */
static int on_frames(struct sluice_frame_client *c)
{
    struct frame f;
    int rc;
    while ((rc = next_frame(c, &f)) == 1) {
        switch (f.type) {
        case FRAME_ACK: {
            uint64_t d = f.u.num.value;
            /* cumulative: it may not cover a reading this connection has not sent */
            if (d >= c->first_seq + c->sent) return SLUICE_FRAME_EBADFRAME;
            ring_ack(c, d);
            break;
        }
        case FRAME_PING:
            c->pong_due = 1;
            break;
        case FRAME_PONG:
            break;
        case FRAME_ERROR:
            return on_error(c, &f);
        default:
            return SLUICE_FRAME_EBADFRAME; /* a second CHALLENGE, a device's frame ... */
        }
        consume(c, f.total);
    }
    return rc;
}

enum until {
    UNTIL_IDLE,  /* nothing left to write without waiting (send's best effort) */
    UNTIL_ROOM,  /* the ring has room for a payload of `need` bytes */
    UNTIL_EMPTY, /* every reading acknowledged */
    UNTIL_EOF,   /* the server closed after our BYE */
};

static int done(struct sluice_frame_client *c, enum until u, size_t need)
{
    int wraps;
    switch (u) {
    case UNTIL_IDLE:
        return c->tx_off == c->tx_len;
    case UNTIL_ROOM:
        return ring_place(c, need, &wraps) >= 0;
    case UNTIL_EMPTY:
        return c->count == 0;
    case UNTIL_EOF:
        return 0;
    }
    return 1;
}

/* Moves frames both ways on the live connection until `u` holds or the
 * deadline passes. Reading never stops while we write: a server past its
 * window stops reading until its ACKs leave, and we must take them. */
static int pump(struct sluice_frame_client *c, int64_t deadline, enum until u, size_t need)
{
    int force = u != UNTIL_IDLE;
    for (int polled = 0;; polled = 1) {
        int rc = fill_tx(c, force);
        if (rc) return rc;
        /* idle: still take the ACKs (or an ERROR) already there, once */
        if (done(c, u, need) && (polled || u != UNTIL_IDLE)) return 0;
        struct pollfd pf = {c->fd, POLLIN, 0};
        if (c->tx_off < c->tx_len) pf.events |= POLLOUT;
        int r = poll(&pf, 1, remaining(deadline));
        if (r == 0) return done(c, u, need) ? 0 : SLUICE_FRAME_ETIMEDOUT;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            if ((rc = read_some(c)) && rc != SLUICE_FRAME_ECLOSED) return rc;
            int closed = rc;
            if ((rc = on_frames(c))) return rc; /* the frames before EOF count */
            if (closed) return closed;
        }
        if (pf.revents & POLLOUT) {
            ssize_t k = send(c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off, MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -errno;
            if (k > 0) {
                c->tx_off += (size_t)k;
                c->st.bytes_out += (uint64_t)k;
            }
        }
    }
}

/* Connects as needed and pumps until `u`, retrying transient failures,
 * within the deadline. */
static int drive(struct sluice_frame_client *c, int64_t deadline, enum until u, size_t need)
{
    for (;;) {
        if (done(c, u, need)) return 0;
        int rc = ensure(c, deadline);
        if (rc == 0) rc = pump(c, deadline, u, need);
        if (rc == 0) return 0;
        if (rc != SLUICE_FRAME_ETIMEDOUT && c->fd >= 0) failed(c, rc);
        /* a deadline passed with the connection fine: say so, keep it */
        if (fatal(rc) || (rc == SLUICE_FRAME_ETIMEDOUT && c->fd >= 0)) return rc;
        if (remaining(deadline) == 0) return rc;
    }
}

/* ---- the public API ---- */

void sluice_frame_config_init(sluice_frame_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_readings = 1024;
    cfg->ring_bytes = 64 * 1024;
    cfg->max_reading = 1024;
    cfg->batch = 1;
    cfg->timeout_ms = 10000;
}

struct layout {
    size_t ent, bytes, tx, total;
};

static int layout(const sluice_frame_config *cfg, struct layout *l)
{
    if (!cfg || !cfg->max_readings || !cfg->ring_bytes || !cfg->max_reading || !cfg->batch ||
        cfg->max_reading > cfg->ring_bytes || cfg->max_reading > 0x7fffffff - FRAME_OVERHEAD)
        return -1;
    size_t tx = cfg->max_reading + FRAME_OVERHEAD;
    if (tx < 1024) tx = 1024;
    l->ent = (sizeof(struct sluice_frame_client) + alignof(struct entry) - 1) /
             alignof(struct entry) * alignof(struct entry);
    l->bytes = l->ent + (size_t)cfg->max_readings * sizeof(struct entry);
    l->tx = l->bytes + cfg->ring_bytes;
    /* slack to align the start of an unaligned block */
    l->total = l->tx + tx + alignof(struct sluice_frame_client);
    return 0;
}

size_t sluice_frame_client_size(const sluice_frame_config *cfg)
{
    struct layout l;
    return layout(cfg, &l) ? 0 : l.total;
}

int sluice_frame_client_init(sluice_frame_client **out, void *mem, size_t memlen,
                             const sluice_frame_config *cfg)
{
    struct layout l;
    if (!out || !mem || layout(cfg, &l) || memlen < l.total || !cfg->host || !cfg->token ||
        !cfg->token[0] || strlen(cfg->host) >= HOST_MAX || !cfg->port || cfg->port > 65535)
        return SLUICE_FRAME_EINVAL;
    size_t skip = (alignof(struct sluice_frame_client) -
                   (uintptr_t)mem % alignof(struct sluice_frame_client)) %
                  alignof(struct sluice_frame_client);
    uint8_t *base = (uint8_t *)mem + skip;
    sluice_frame_client *c = (sluice_frame_client *)base;
    memset(c, 0, sizeof *c);
    strcpy(c->host, cfg->host);
    c->port = cfg->port;
    c->timeout_ms = cfg->timeout_ms;
    c->max_readings = cfg->max_readings;
    c->ring_bytes = cfg->ring_bytes;
    c->max_reading = cfg->max_reading;
    c->batch = cfg->batch;
    c->random = cfg->random ? cfg->random : port_random;
    c->dial = cfg->dial ? cfg->dial : dial_default;
    c->arg = cfg->arg;
    frame_client_keys(&c->keys, cfg->token, strlen(cfg->token), NULL);
    c->fd = -1;
    c->ent = (struct entry *)(base + l.ent);
    c->bytes = base + l.bytes;
    c->tx = base + l.tx;
    c->tx_cap = l.total - alignof(struct sluice_frame_client) - l.tx;
    c->numbered = cfg->first_seq != 0;
    c->first_seq = cfg->first_seq;
    c->backoff_ms = BACKOFF_MIN;
    *out = c;
    return 0;
}

int sluice_frame_client_connect(sluice_frame_client *c)
{
    int64_t deadline = now_ms() + c->timeout_ms;
    if (c->fd >= 0) return 0;
    int rc = handshake(c, deadline);
    if (rc == 1) rc = handshake(c, deadline); /* see the WELCOME case in handshake() */
    if (rc == 1) rc = SLUICE_FRAME_EBADFRAME;
    if (rc) return failed(c, rc);
    rc = pump(c, now_ms(), UNTIL_IDLE, 0);
    if (rc && rc != SLUICE_FRAME_ETIMEDOUT) return failed(c, rc);
    return 0;
}

int sluice_frame_client_send(sluice_frame_client *c, const void *payload, size_t n)
{
    int64_t deadline = now_ms() + c->timeout_ms;
    int rc = c->pending, wraps;
    c->pending = 0;
    if (rc) return rc;
    if (!payload && n) return SLUICE_FRAME_EINVAL;
    /* a READING frame of it must fit the server's max_frame too */
    if (n > c->max_reading || (c->max_frame && 1 + varint_len(n) + n > c->max_frame))
        return SLUICE_FRAME_ELARGE;
    if (ring_place(c, n, &wraps) < 0 && (rc = drive(c, deadline, UNTIL_ROOM, n))) return rc;

    int64_t off = ring_place(c, n, &wraps);
    struct entry *e = at(c, c->count);
    e->off = (uint32_t)off;
    e->len = (uint32_t)n;
    if (n) memcpy(c->bytes + off, payload, n);
    if (wraps) c->wrapped = 1;
    c->wpos = (uint32_t)off + (uint32_t)n;
    c->count++;
    c->st.queued++;
    if (c->numbered && !c->st.first_seq) c->st.first_seq = c->first_seq + c->count - 1;

    /* best effort now; what cannot go without waiting goes on a later call */
    if (c->fd < 0 && c->retry_at <= now_ms()) rc = ensure(c, deadline);
    if (rc == 0 && c->fd >= 0) {
        rc = pump(c, now_ms(), UNTIL_IDLE, 0);
        if (rc && rc != SLUICE_FRAME_ETIMEDOUT) failed(c, rc);
    }
    if (fatal(rc)) c->pending = rc;
    return 0;
}

int sluice_frame_client_flush(sluice_frame_client *c)
{
    int rc = c->pending;
    c->pending = 0;
    if (rc) return rc;
    return drive(c, now_ms() + c->timeout_ms, UNTIL_EMPTY, 0);
}

int sluice_frame_client_close(sluice_frame_client *c)
{
    int rc = 0;
    if (c->fd >= 0) {
        c->bye_due = 1;
        rc = pump(c, now_ms() + c->timeout_ms, UNTIL_EOF, 0);
        if (rc == SLUICE_FRAME_ECLOSED) rc = 0; /* what BYE asked for */
        drop_conn(c);
    }
    return rc;
}

uint32_t sluice_frame_client_drop(sluice_frame_client *c, uint32_t n)
{
    uint32_t k = n < c->count ? n : c->count;
    /* the server numbers a connection's readings by the order they came in:
     * the rest go again on a new one, under their own numbers */
    drop_conn(c);
    ring_drop(c, k, &c->st.dropped);
    /* numbering goes on (the next HELLO says first_seq, not 0), so that the
     * server records the dropped numbers as a gap rather than reuse them */
    return k;
}

void sluice_frame_client_stats(const sluice_frame_client *c, sluice_frame_stats *st)
{
    *st = c->st;
    st->held = c->count;
    st->window = (uint32_t)(c->window > UINT32_MAX ? UINT32_MAX : c->window);
}

unsigned sluice_frame_client_last_error(const sluice_frame_client *c, uint64_t *seq,
                                        const char **message)
{
    if (seq) *seq = c->err_seq;
    if (message) *message = c->err_msg;
    return c->err_code;
}

const char *sluice_frame_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case SLUICE_FRAME_EVERSION:
        return "unsupported protocol version (ERROR 0x01)";
    case SLUICE_FRAME_EAUTH:
        return "authentication failed (ERROR 0x02)";
    case SLUICE_FRAME_EQUOTA:
        return "quota exceeded (ERROR 0x03)";
    case SLUICE_FRAME_ETOOBIG:
        return "reading too large for the server (ERROR 0x04)";
    case SLUICE_FRAME_ESTORAGE:
        return "server storage unavailable (ERROR 0x05)";
    case SLUICE_FRAME_ETAKEN:
        return "taken over by a newer connection of this token (ERROR 0x06)";
    case SLUICE_FRAME_EPROTOCOL:
        return "the server saw a protocol error (ERROR 0x07)";
    case SLUICE_FRAME_ESHUTDOWN:
        return "server shutting down (ERROR 0x08)";
    case SLUICE_FRAME_EIDLE:
        return "idle or handshake timeout (ERROR 0x09)";
    case SLUICE_FRAME_EINVAL:
        return "invalid argument";
    case SLUICE_FRAME_ESIGNATURE:
        return "the server's signature does not verify: not the server of this token";
    case SLUICE_FRAME_EBADFRAME:
        return "the server sent a malformed or unexpected frame";
    case SLUICE_FRAME_ETIMEDOUT:
        return "timed out";
    case SLUICE_FRAME_ECLOSED:
        return "the server closed the connection";
    case SLUICE_FRAME_ERESOLVE:
        return "host name not resolved";
    case SLUICE_FRAME_ERANDOM:
        return "no random source";
    case SLUICE_FRAME_ELARGE:
        return "reading larger than the client's or the server's frame limit";
    }
    if (code <= SLUICE_FRAME_ECODE(0) && code > SLUICE_FRAME_ECODE(0x100))
        return "the server sent an ERROR of an unknown code";
    if (code < 0 && code > -0x100) return strerror(-code);
    return "unknown error";
}
