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
 *
 * UDP (§6): "the connection" is a session on a connected datagram socket.
 * Entries [0, sent) went out in this pass of go-back-N: a resend sets sent
 * back to 0. The timers (resend, handshake repeats) are deadlines checked in
 * the same poll() loops, so they run only inside the caller's calls.
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

#define UDP_RX_MAX    512  /* a server datagram: at most an ERROR in a session datagram (240) */
#define UDP_OVERHEAD  38   /* session id 8, dgram_seq 10, SEQ frame 12, MAC 8 */
#define DGRAM_DEFAULT 1200 /* fits any path's MTU (§6) */
#define DGRAM_MIN     64
/* Datagrams of readings unacknowledged at once: at most UDP_FLIGHT, at
 * least CWND_MIN (the datagrams after a lost one draw the ACKs that do not
 * move, which resend it at once rather than after a timeout) */
#define UDP_FLIGHT     32
#define CWND_MIN       8
#define RTO_MIN        200   /* ms: a resend waits 2 RTTs, at least this ... */
#define RTO_MAX        5000  /* ... doubling up to this */
#define UNANSWERED_MAX 3     /* resends without any answer before the session counts as lost */
#define GOBACK_MIN     1     /* ms: the least time between two resends prompted by ACKs */
#define HS_FIRST       1000  /* ms: a handshake datagram is repeated after this, doubling ... */
#define HS_MAX         8000  /* ... up to this */
#define CHALLENGE_TTL  30000 /* ms: the server takes a CHALLENGE for 32 s at least */

struct entry {
    uint32_t off, len; /* the payload at bytes[off..off+len) */
};

struct sluice_frame_client {
    char host[HOST_MAX];
    unsigned port, timeout_ms;
    uint32_t max_readings, ring_bytes, max_reading, batch;
    int (*random)(void *arg, void *buf, size_t n);
    int (*dial)(void *arg, const char *host, unsigned port, unsigned timeout_ms);
    int (*dial_dgram)(void *arg, const char *host, unsigned port, unsigned timeout_ms);
    void *arg;
    struct frame_client_keys keys;
    int udp;
    uint32_t dgram_max;
    unsigned tcp_port; /* UDP: the handshake over TCP to this port (0: over UDP) */

    /* the connection: fd -1 when there is none; a live one is past WELCOME */
    int fd;
    uint64_t window, max_frame;
    int pong_due, bye_due;
    uint8_t rx[UDP_RX_MAX]; /* TCP uses RX_MAX of it; UDP one datagram */
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

    /* the UDP session, valid while fd >= 0 */
    uint8_t skey[SHA256_LEN], sid[FRAME_CLIENT_SID_LEN];
    uint64_t out_dseq;        /* our last dgram_seq */
    uint64_t in_max, in_seen; /* the server's newest dgram_seq; the 64 before it, a bit each */
    uint64_t top;             /* the highest number an ACK of this session may cover */
    uint64_t rtt_seq;         /* a reading sent once, timed from rtt_at (0: none) */
    int64_t rtt_at, rto_at;   /* rto_at: when to resend (0: nothing in flight) */
    int64_t pass_at;          /* when this pass (from the oldest) began */
    unsigned srtt, rto_n, unanswered;
    uint64_t flight[UDP_FLIGHT]; /* the last reading of each datagram in flight, in order */
    uint32_t flight_n;
    uint32_t cwnd, ssthresh, cwnd_acc; /* the datagrams that may be in flight (AIMD) */
    uint32_t redo; /* entries [sent, redo) were in flight when the pass began again */
    int blocked;   /* the socket buffer is full: wait for POLLOUT */

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

void frame_client_session_id(const uint8_t key[SHA256_LEN], uint8_t sid[FRAME_CLIENT_SID_LEN])
{
    static const char label[] = "sluice udp id v1";
    uint8_t id[SHA256_LEN];
    sha256_hmac(key, SHA256_LEN, label, sizeof label - 1, id);
    memcpy(sid, id, FRAME_CLIENT_SID_LEN);
}

/* mac = HMAC(key, "sluice udp v1" || dir || head[0..hn) || frames)[0..8) */
static void dgram_mac(const uint8_t key[SHA256_LEN], uint8_t dir, const uint8_t *head, size_t hn,
                      const uint8_t *frames, size_t n, uint8_t mac[SHA256_LEN])
{
    static const char label[] = "sluice udp v1";
    struct sha256_hmac h;
    sha256_hmac_init(&h, key, SHA256_LEN);
    sha256_hmac_update(&h, label, sizeof label - 1);
    sha256_hmac_update(&h, &dir, 1);
    sha256_hmac_update(&h, head, hn);
    sha256_hmac_update(&h, frames, n);
    sha256_hmac_final(&h, mac);
}

size_t frame_client_dgram_seal(const uint8_t key[SHA256_LEN],
                               const uint8_t sid[FRAME_CLIENT_SID_LEN], uint8_t dir,
                               uint64_t dgram_seq, const uint8_t *frames, size_t n, uint8_t *out,
                               size_t cap)
{
    uint8_t head[FRAME_CLIENT_SID_LEN + FRAME_VARINT_MAX], mac[SHA256_LEN];
    memcpy(head, sid, FRAME_CLIENT_SID_LEN);
    size_t h = FRAME_CLIENT_SID_LEN + frame_put_varint(head + FRAME_CLIENT_SID_LEN, dgram_seq);
    if (cap < h || n > cap - h || cap - h - n < FRAME_CLIENT_MAC8) return 0;
    if (frames != out + h) memmove(out + h, frames, n);
    memcpy(out, head, h);
    dgram_mac(key, dir, out, h, out + h, n, mac);
    memcpy(out + h + n, mac, FRAME_CLIENT_MAC8);
    return h + n + FRAME_CLIENT_MAC8;
}

int frame_client_dgram_open(const uint8_t key[SHA256_LEN], const uint8_t sid[FRAME_CLIENT_SID_LEN],
                            uint8_t dir, const uint8_t *p, size_t n, uint64_t *dgram_seq,
                            const uint8_t **frames, size_t *fn)
{
    uint8_t mac[SHA256_LEN];
    if (n < FRAME_CLIENT_SID_LEN + 1 + FRAME_CLIENT_MAC8) return 0;
    if (!sha256_equal(p, sid, FRAME_CLIENT_SID_LEN)) return 0;
    int vl = frame_varint(p + FRAME_CLIENT_SID_LEN, n - FRAME_CLIENT_SID_LEN - FRAME_CLIENT_MAC8,
                          dgram_seq);
    if (vl <= 0) return 0;
    size_t h = FRAME_CLIENT_SID_LEN + (size_t)vl, body = n - h - FRAME_CLIENT_MAC8;
    dgram_mac(key, dir, p, h, p + h, body, mac);
    if (!sha256_equal(mac, p + n - FRAME_CLIENT_MAC8, FRAME_CLIENT_MAC8)) return 0;
    *frames = p + h;
    *fn = body;
    return 1;
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

/* A UDP socket connect()ed to the address (nothing is sent: connect only
 * names the peer, so that send() and recv() need no address and datagrams
 * from anyone else are not read). The fd, or -errno. */
static int udp_connect(int family, const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(family, SOCK_DGRAM, 0), rc;
    if (fd < 0) return -errno;
    if (connect(fd, sa, salen) == 0) return fd;
    rc = -errno;
    close(fd);
    return rc;
}

static int sock_connect(int type, int family, const struct sockaddr *sa, socklen_t salen,
                        int64_t deadline)
{
    return type == SOCK_DGRAM ? udp_connect(family, sa, salen)
                              : tcp_connect(family, sa, salen, deadline);
}

/* TCP (type SOCK_STREAM) or UDP (SOCK_DGRAM) to host:port within the
 * timeout. An address literal is connected to directly: no resolver, and
 * nothing allocated (getaddrinfo allocates its answer); a name tries each
 * address getaddrinfo gives, in order. */
static int host_dial(const char *host, unsigned port, unsigned timeout_ms, int type)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
    memset(&v4, 0, sizeof v4);
    memset(&v6, 0, sizeof v6);
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)port);
        return sock_connect(type, AF_INET, (struct sockaddr *)&v4, sizeof v4, deadline);
    }
    if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)port);
        return sock_connect(type, AF_INET6, (struct sockaddr *)&v6, sizeof v6, deadline);
    }

    char service[12];
    struct addrinfo hints, *ai = NULL;
    int rc = SLUICE_FRAME_ERESOLVE;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = type;
    snprintf(service, sizeof service, "%u", port);
    if (getaddrinfo(host, service, &hints, &ai) != 0) return SLUICE_FRAME_ERESOLVE;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        rc = sock_connect(type, a->ai_family, a->ai_addr, a->ai_addrlen, deadline);
        if (rc >= 0 || rc == SLUICE_FRAME_ETIMEDOUT) break;
    }
    freeaddrinfo(ai);
    return rc;
}

static int dial_default(void *arg, const char *host, unsigned port, unsigned timeout_ms)
{
    (void)arg;
    return host_dial(host, port, timeout_ms, SOCK_STREAM);
}

static int dial_dgram_default(void *arg, const char *host, unsigned port, unsigned timeout_ms)
{
    (void)arg;
    return host_dial(host, port, timeout_ms, SOCK_DGRAM);
}

static size_t varint_len(uint64_t v)
{
    size_t k = 1;
    while (v >>= 7)
        k++;
    return k;
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
        if (c->redo) c->redo--;
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
    if (c->udp) {
        sha256_wipe(c->skey, sizeof c->skey);
        memset(c->sid, 0, sizeof c->sid);
        c->out_dseq = c->in_max = c->in_seen = c->top = c->rtt_seq = 0;
        c->rto_at = 0;
        c->rto_n = c->unanswered = c->flight_n = c->redo = 0;
        c->blocked = 0;
    }
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

/* ---- UDP (§6): datagrams, the handshake ---- */

/* The resend timeout: 2 RTTs, at least RTO_MIN, doubled per resend without
 * an answer, at most RTO_MAX. */
static unsigned rto(const struct sluice_frame_client *c)
{
    unsigned base = 2 * c->srtt < RTO_MIN ? RTO_MIN : 2 * c->srtt;
    unsigned t = base << (c->rto_n > 5 ? 5 : c->rto_n);
    return t > RTO_MAX ? RTO_MAX : t;
}

static void rtt_sample(struct sluice_frame_client *c, int64_t ms)
{
    unsigned r = ms <= 0 ? 1 : ms > 60000 ? 60000 : (unsigned)ms;
    c->srtt = c->srtt ? (7 * c->srtt + r) / 8 : r;
}

/* Sends one datagram. Returns 0 when it left or was lost the way UDP loses
 * datagrams (an ICMP port unreachable from an earlier one, no route now, no
 * buffer in the stack: the timers resend), 1 when the socket buffer is full
 * (not sent), or -errno. */
static int dgram_send(struct sluice_frame_client *c, const uint8_t *p, size_t n)
{
    for (;;) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
        if (k >= 0) {
            c->st.bytes_out += (uint64_t)n;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
        if (errno == ECONNREFUSED || errno == ENOBUFS || errno == EHOSTUNREACH ||
            errno == ENETUNREACH)
            return 0;
        return -errno;
    }
}

/* The next datagram waiting, into rx: its length, 0 when none is, -errno.
 * An ICMP port unreachable (nobody listens, yet) is silence here. */
static int dgram_recv(struct sluice_frame_client *c)
{
    for (;;) {
        ssize_t k = recv(c->fd, c->rx, sizeof c->rx, 0);
        if (k > 0) {
            c->st.bytes_in += (uint64_t)k;
            return (int)k;
        }
        if (k == 0) {
            c->st.ignored++; /* an empty datagram is nobody's frame */
            return 0;
        }
        if (errno == EINTR || errno == ECONNREFUSED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -errno;
    }
}

static void udp_session_begin(struct sluice_frame_client *c, const uint8_t *auth, size_t n,
                              uint64_t window, uint64_t max_frame, uint64_t d);

/* The handshake over UDP on a fresh socket: 00x8|HELLO, then
 * 00x8|HELLO|CHALLENGE|PROOF, each repeated after HS_FIRST doubling while no
 * answer comes (a lost datagram, a server still ending our older session),
 * until WELCOME or ERROR or the deadline. Returns 0 with the session live,
 * or an error with the socket closed. */
static int udp_handshake(struct sluice_frame_client *c, int64_t deadline)
{
    static const uint8_t zero[FRAME_CLIENT_SID_LEN];
    uint8_t dg[FRAME_CLIENT_SID_LEN + AUTH_MAX], *auth = dg + FRAME_CLIENT_SID_LEN;
    uint8_t nonce[FRAME_NONCE_LEN], proof[SHA256_LEN], sig[SHA256_LEN];
    size_t hello_n = 0, chal_n = 0, n = 0;
    int64_t next_at = 0, chal_at = 0, sent_at = 0;
    unsigned wait = HS_FIRST, sends = 0;
    int rc, fd, bad_sig = 0;
    uint64_t next_seq = c->numbered ? c->first_seq : 0;
    struct frame f;

    memset(dg, 0, FRAME_CLIENT_SID_LEN);
    fd = c->dial_dgram(c->arg, c->host, c->port, (unsigned)remaining(deadline));
    if (fd < 0) return fd;
    c->fd = fd;
    if ((rc = set_nonblocking(fd))) goto fail;
    for (;;) {
        int64_t now = now_ms();
        /* a CHALLENGE that old is about to be refused as stale: from HELLO again */
        if (chal_n && now - chal_at > CHALLENGE_TTL) hello_n = chal_n = 0;
        if (!hello_n) {
            if (c->random(c->arg, nonce, sizeof nonce)) {
                rc = SLUICE_FRAME_ERANDOM;
                goto fail;
            }
            hello_n =
                frame_encode_hello(auth, AUTH_MAX, c->keys.token_id, nonce, next_seq, NULL, 0);
            wait = HS_FIRST, next_at = now, sends = 0;
        }
        if (now >= deadline) {
            rc = bad_sig ? SLUICE_FRAME_ESIGNATURE : SLUICE_FRAME_ETIMEDOUT;
            goto fail;
        }
        if (now >= next_at) {
            /* step 3 is idempotent: the same bytes again */
            if ((rc = dgram_send(c, dg, FRAME_CLIENT_SID_LEN + (chal_n ? n : hello_n))) < 0)
                goto fail;
            sent_at = now, sends++;
            next_at = now + wait;
            wait = wait * 2 > HS_MAX ? HS_MAX : wait * 2;
        }
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, remaining(next_at < deadline ? next_at : deadline));
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            goto fail;
        }
        if (r <= 0) continue;
        if ((pf.revents & POLLHUP) && !(pf.revents & POLLIN)) {
            rc = SLUICE_FRAME_ECLOSED; /* a datagram socketpair's peer went away */
            goto fail;
        }
        for (;;) {
            int k = dgram_recv(c);
            uint8_t type;
            size_t total;
            if (k < 0) {
                rc = k;
                goto fail;
            }
            if (k == 0) break;
            /* one frame after 8 zero bytes, or not a handshake answer */
            if ((size_t)k <= FRAME_CLIENT_SID_LEN || memcmp(c->rx, zero, FRAME_CLIENT_SID_LEN) ||
                frame_peek(c->rx + FRAME_CLIENT_SID_LEN, (size_t)k - FRAME_CLIENT_SID_LEN, &type,
                           &total) ||
                total != (size_t)k - FRAME_CLIENT_SID_LEN ||
                frame_parse(c->rx + FRAME_CLIENT_SID_LEN, total, &f)) {
                c->st.ignored++;
                continue;
            }
            if (f.type == FRAME_ERROR) {
                rc = on_error(c, &f);
                goto fail;
            }
            if (f.type == FRAME_CHALLENGE && !chal_n &&
                hello_n + total + 2 + SHA256_LEN <= AUTH_MAX) {
                memcpy(auth + hello_n, c->rx + FRAME_CLIENT_SID_LEN, total);
                chal_n = total;
                frame_client_proof(&c->keys, auth, hello_n + chal_n, NULL, proof);
                n = hello_n + chal_n;
                n += frame_encode_proof(auth + n, AUTH_MAX - n, proof);
                chal_at = now_ms();
                if (sends == 1) rtt_sample(c, chal_at - sent_at); /* Karn: one HELLO only */
                wait = HS_FIRST, next_at = chal_at, sends = 0;    /* step 3 at once */
                continue;
            }
            if (f.type == FRAME_WELCOME && chal_n) {
                frame_client_server_signature(&c->keys, auth, n, sig);
                if (sha256_equal(sig, f.u.welcome.server_signature, SHA256_LEN)) goto welcome;
                bad_sig++; /* anyone can send a datagram: wait for the real one */
            }
            c->st.ignored++; /* a repeated CHALLENGE, a forged WELCOME ... */
        }
    }
welcome:
    udp_session_begin(c, auth, n, f.u.welcome.window, f.u.welcome.max_frame,
                      f.u.welcome.durable_seq);
    sha256_wipe(dg, sizeof dg);
    return 0;
fail:
    sha256_wipe(dg, sizeof dg);
    drop_conn(c);
    return rc;
}

/* The session of a verified WELCOME (over UDP or TCP): its key and id from
 * auth (HELLO | CHALLENGE | PROOF, n bytes), numbering as after any
 * handshake, c->fd the session's datagram socket. */
static void udp_session_begin(struct sluice_frame_client *c, const uint8_t *auth, size_t n,
                              uint64_t window, uint64_t max_frame, uint64_t d)
{
    c->window = window;
    c->max_frame = max_frame;
    frame_client_session_key(&c->keys, auth, n, c->skey);
    frame_client_session_id(c->skey, c->sid);
    c->out_dseq = c->in_max = c->in_seen = c->rtt_seq = 0;
    c->rto_at = 0;
    c->rto_n = c->unanswered = c->flight_n = c->redo = 0;
    c->cwnd = CWND_MIN, c->ssthresh = UDP_FLIGHT, c->cwnd_acc = 0;
    c->blocked = 0;
    c->pass_at = now_ms();
    c->sent = 0;
    c->st.connects++;
    c->backoff_ms = BACKOFF_MIN;
    c->last_failure = 0;
    if (!c->numbered) {
        /* we said 0: ours are numbered after the server's final mark */
        c->numbered = 1;
        c->first_seq = d + 1;
        if (c->count && !c->st.first_seq) c->st.first_seq = c->first_seq;
    } else if (d >= c->first_seq) {
        /* §4: held readings that WELCOME covers. Over UDP every datagram's
         * SEQ names its readings' numbers, so dropping the covered ones does
         * not shift the rest: nothing to reconnect for. */
        ring_ack(c, d);
    }
    if (d > c->st.durable_seq) c->st.durable_seq = d;
    c->top = d;
}

/* HELLO (with flags), CHALLENGE, PROOF and WELCOME over a fresh stream from
 * cfg.dial to host:port, the WELCOME's signature checked (anyone can answer
 * HELLO; only the server holding ServerKey can sign). Leaves c->fd open, the
 * AuthMessage and PROOF in auth[0..*n) and the WELCOME in *f, still in c->rx;
 * on an error the caller wipes auth and drops the connection. */
static int stream_handshake(struct sluice_frame_client *c, unsigned port, uint8_t flags,
                            uint8_t auth[AUTH_MAX], size_t *n, struct frame *f, int64_t deadline)
{
    uint8_t nonce[FRAME_NONCE_LEN], proof[SHA256_LEN], sig[SHA256_LEN];
    uint64_t next_seq = c->numbered ? c->first_seq : 0;
    int rc;

    if (c->random(c->arg, nonce, sizeof nonce)) return SLUICE_FRAME_ERANDOM;
    int fd = c->dial(c->arg, c->host, port, (unsigned)remaining(deadline));
    if (fd < 0) return fd;
    c->fd = fd;
    if ((rc = set_nonblocking(fd))) return rc;
    size_t hello_n = frame_encode_hello_flags(auth, AUTH_MAX, flags, c->keys.token_id, nonce,
                                              next_seq, NULL, 0);
    if ((rc = write_all(c, auth, hello_n, deadline))) return rc;

    if ((rc = read_frame(c, FRAME_CHALLENGE, f, deadline))) return rc;
    size_t chal_n = f->total;
    if (hello_n + chal_n + 2 + SHA256_LEN > AUTH_MAX)
        return SLUICE_FRAME_EBADFRAME; /* a CHALLENGE padded past its fields cannot parse */
    memcpy(auth + hello_n, c->rx, chal_n);
    consume(c, chal_n);
    frame_client_proof(&c->keys, auth, hello_n + chal_n, NULL, proof);
    *n = hello_n + chal_n;
    *n += frame_encode_proof(auth + *n, AUTH_MAX - *n, proof);
    if ((rc = write_all(c, auth + hello_n + chal_n, *n - hello_n - chal_n, deadline))) return rc;

    if ((rc = read_frame(c, FRAME_WELCOME, f, deadline))) return rc;
    frame_client_server_signature(&c->keys, auth, *n, sig);
    if (!sha256_equal(sig, f->u.welcome.server_signature, SHA256_LEN))
        return SLUICE_FRAME_ESIGNATURE;
    return 0;
}

/* §6 over TCP (cfg.tcp_port): HELLO with flags bit 1, CHALLENGE, PROOF and
 * WELCOME on a stream from cfg.dial to host:tcp_port, which the server closes
 * after WELCOME (we close ours at once: nothing more is said there); the
 * session's datagrams then go on a fresh socket from cfg.dial_dgram, as after
 * a UDP handshake. Returns 0 with the session live, or an error with every
 * socket closed. */
static int udp_handshake_tcp(struct sluice_frame_client *c, int64_t deadline)
{
    uint8_t auth[AUTH_MAX];
    size_t n;
    struct frame f;
    int rc, fd;

    if ((rc = stream_handshake(c, c->tcp_port, FRAME_HELLO_UDP, auth, &n, &f, deadline))) goto fail;
    uint64_t window = f.u.welcome.window, max_frame = f.u.welcome.max_frame;
    uint64_t d = f.u.welcome.durable_seq;
    close(c->fd);
    c->fd = -1;
    c->rx_n = 0;
    fd = c->dial_dgram(c->arg, c->host, c->port, (unsigned)remaining(deadline));
    if (fd < 0) {
        rc = fd;
        goto fail;
    }
    c->fd = fd;
    if ((rc = set_nonblocking(fd))) goto fail;
    udp_session_begin(c, auth, n, window, max_frame, d);
    sha256_wipe(auth, sizeof auth);
    return 0;
fail:
    sha256_wipe(auth, sizeof auth);
    drop_conn(c);
    return rc;
}

/* HELLO, CHALLENGE, PROOF, WELCOME on a fresh fd. Returns 0 with the
 * connection live, or an error with it closed. */
static int handshake(struct sluice_frame_client *c, int64_t deadline)
{
    uint8_t auth[AUTH_MAX];
    size_t n;
    struct frame f;
    int rc;

    if (c->udp) return c->tcp_port ? udp_handshake_tcp(c, deadline) : udp_handshake(c, deadline);
    if ((rc = stream_handshake(c, c->port, 0, auth, &n, &f, deadline))) goto fail;
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
        return c->udp ? !c->blocked : c->tx_off == c->tx_len;
    case UNTIL_ROOM:
        return ring_place(c, need, &wraps) >= 0;
    case UNTIL_EMPTY:
        return c->count == 0;
    case UNTIL_EOF:
        return 0;
    }
    return 1;
}

/* ---- UDP (§6): readings out, ACKs in, resends ---- */

/* The bytes a datagram of one reading of n bytes takes at most. */
static size_t udp_single(size_t n)
{
    return UDP_OVERHEAD + 1 + varint_len(n) + n;
}

/* Starts the pass again from the oldest reading not acknowledged (§6:
 * go-back-N; the server stores in order and dropped what followed a gap). */
static void go_back(struct sluice_frame_client *c, int64_t now)
{
    /* a loss: a go-back-N pass resends the whole flight, so under loss a
     * smaller one wastes fewer bytes (halved; TCP's congestion avoidance) */
    c->ssthresh = c->cwnd / 2 < CWND_MIN ? CWND_MIN : c->cwnd / 2;
    c->cwnd = c->ssthresh;
    c->cwnd_acc = 0;
    if (c->sent > c->redo) c->redo = c->sent;
    c->sent = 0;
    c->flight_n = 0;
    c->rtt_seq = 0; /* Karn: a resent reading's ACK times nothing */
    c->pass_at = now;
}

/* Sends the datagrams of readings due (force: fewer than cfg.batch too; a
 * resend always) while fewer than UDP_FLIGHT datagrams and the window's
 * readings are unacknowledged: SEQ, then one READING or a BATCH of up to
 * cfg.batch that fits cfg.dgram_max. Returns 0, ELARGE, or -errno. */
static int udp_fill(struct sluice_frame_client *c, int force)
{
    int64_t now = now_ms();
    size_t cap = c->tx_cap;
    if (c->max_frame && c->max_frame < cap) cap = (size_t)c->max_frame;
    size_t lim = c->dgram_max < cap ? c->dgram_max : cap;
    c->blocked = 0;
    while (c->flight_n < c->cwnd) {
        uint32_t due = c->count - c->sent;
        if (c->window && c->sent + (uint64_t)due > c->window)
            due = c->sent >= c->window ? 0 : (uint32_t)(c->window - c->sent);
        if (!due || !(force || c->sent < c->redo || due >= c->batch || c->count - c->sent > due))
            return 0;
        struct entry *e = at(c, c->sent);
        if (udp_single(e->len) > cap) return SLUICE_FRAME_ELARGE;
        uint64_t first = c->first_seq + c->sent, dseq = c->out_dseq + 1;
        uint8_t *p = c->tx;
        size_t h = FRAME_CLIENT_SID_LEN + varint_len(dseq), o = h;
        o += frame_encode_num(p + o, cap - o, FRAME_SEQ, first);
        /* as many as fit the datagram, up to cfg.batch; the first one always */
        uint32_t k = 0;
        size_t items = 0;
        while (k < due && k < c->batch) {
            size_t len = at(c, c->sent + k)->len;
            size_t it = items + varint_len(len) + len;
            size_t body = varint_len(k + 1) + it;
            if (k && o + 1 + varint_len(body) + body + FRAME_CLIENT_MAC8 > lim) break;
            items = it, k++;
        }
        if (k == 1) {
            o += frame_encode_reading(p + o, cap - o, c->bytes + e->off, e->len);
        } else {
            size_t body = varint_len(k) + items;
            p[o++] = FRAME_BATCH;
            o += frame_put_varint(p + o, body);
            o += frame_put_varint(p + o, k);
            for (uint32_t i = 0; i < k; i++) {
                e = at(c, c->sent + i);
                o += frame_put_varint(p + o, e->len);
                memcpy(p + o, c->bytes + e->off, e->len);
                o += e->len;
            }
        }
        size_t total = frame_client_dgram_seal(c->skey, c->sid, 0, dseq, p + h, o - h, p, cap);
        if (!total) return SLUICE_FRAME_ELARGE;
        int rc = dgram_send(c, p, total);
        if (rc < 0) return rc;
        if (rc == 1) {
            c->blocked = 1;
            return 0;
        }
        c->out_dseq = dseq;
        for (uint32_t i = 0; i < k; i++, c->sent++)
            if (c->sent < c->written) c->st.resent++;
        uint64_t last = first + k - 1;
        if (c->sent > c->written) {
            /* its last reading goes for the first time: its ACK times a round trip */
            if (!c->rtt_seq) c->rtt_seq = last, c->rtt_at = now;
            c->written = c->sent;
        }
        c->st.sent += k;
        if (last > c->st.last_seq) c->st.last_seq = last;
        if (last > c->top) c->top = last;
        c->flight[c->flight_n++] = last;
        if (!c->rto_at) c->rto_at = now + rto(c);
    }
    return 0;
}

static void udp_on_ack(struct sluice_frame_client *c, uint64_t d)
{
    int64_t now = now_ms();
    uint64_t acked = c->first_seq - 1;
    if (d > acked) {
        if (c->rtt_seq && d >= c->rtt_seq) {
            rtt_sample(c, now - c->rtt_at);
            c->rtt_seq = 0;
        }
        ring_ack(c, d);
        uint32_t i = 0;
        while (i < c->flight_n && c->flight[i] <= d) {
            /* each datagram acknowledged grows the flight: by one below
             * ssthresh, by one per flight's worth above it */
            if (c->cwnd < c->ssthresh || ++c->cwnd_acc >= c->cwnd) c->cwnd++, c->cwnd_acc = 0;
            if (c->cwnd > UDP_FLIGHT) c->cwnd = UDP_FLIGHT;
            i++;
        }
        memmove(c->flight, c->flight + i, (c->flight_n - i) * sizeof *c->flight);
        c->flight_n -= i;
        c->rto_n = 0;
        c->rto_at = c->sent ? now + rto(c) : 0;
    } else if (d == acked && c->sent &&
               now - c->pass_at >= (c->srtt > GOBACK_MIN ? c->srtt : GOBACK_MIN)) {
        /* an ACK that does not move, a round trip or more after this pass
         * began (earlier ones answer the pass before): the server's answer
         * to readings past a gap, which it dropped. Resending now beats
         * waiting for the timer. */
        go_back(c, now);
    }
}

/* The resend timer fired: resend from the oldest, or after UNANSWERED_MAX
 * resends without any answer give the session up (a server that restarted
 * knows none and answers nothing): ECLOSED, and the next handshake starts. */
static int udp_on_timer(struct sluice_frame_client *c, int64_t now)
{
    if (c->unanswered >= UNANSWERED_MAX) return SLUICE_FRAME_ECLOSED;
    c->unanswered++;
    if (c->rto_n < 8) c->rto_n++;
    go_back(c, now);
    c->rto_at = now + rto(c);
    return 0;
}

/* The server's datagram q: 1 when new (and now marked seen), 0 when seen
 * before or older than the 64 before the newest. */
static int udp_fresh(struct sluice_frame_client *c, uint64_t q)
{
    if (!q) return 0;
    if (q > c->in_max) {
        uint64_t step = q - c->in_max;
        c->in_seen = (step >= 64 ? 0 : c->in_seen << step) | 1;
        c->in_max = q;
        return 1;
    }
    uint64_t back = c->in_max - q;
    if (back >= 64 || (c->in_seen >> back & 1)) return 0;
    c->in_seen |= 1ull << back;
    return 1;
}

/* One session datagram of frames f[0..n): numbered and sealed, sent. */
static int udp_send_frames(struct sluice_frame_client *c, const uint8_t *f, size_t n)
{
    uint8_t dg[FRAME_CLIENT_SID_LEN + FRAME_VARINT_MAX + 8 + FRAME_CLIENT_MAC8];
    size_t total =
        frame_client_dgram_seal(c->skey, c->sid, 0, c->out_dseq + 1, f, n, dg, sizeof dg);
    int rc = total ? dgram_send(c, dg, total) : SLUICE_FRAME_EINVAL;
    if (rc >= 0) c->out_dseq++; /* a full buffer loses it: a PONG or a BYE may be */
    return rc < 0 ? rc : 0;
}

/* The datagram in rx[0..n): ignored unless it is this session's, verified
 * and fresh; its frames handled. Returns 0, a mapped ERROR, EBADFRAME. */
static int udp_on_dgram(struct sluice_frame_client *c, size_t n)
{
    uint64_t dseq;
    const uint8_t *fr;
    size_t fn, off = 0;
    if (!frame_client_dgram_open(c->skey, c->sid, 1, c->rx, n, &dseq, &fr, &fn) ||
        !udp_fresh(c, dseq)) {
        c->st.ignored++; /* forged, another session's, a late handshake answer, replayed */
        return 0;
    }
    c->unanswered = 0;
    while (off < fn) {
        uint8_t type, pong[2];
        size_t total;
        struct frame f;
        if (frame_peek(fr + off, fn - off, &type, &total) || total > fn - off ||
            frame_parse(fr + off, total, &f))
            return SLUICE_FRAME_EBADFRAME; /* the server's own, MAC and all */
        off += total;
        switch (f.type) {
        case FRAME_ACK:
            /* cumulative: it may not cover a reading this session has not sent */
            if (f.u.num.value > c->top) return SLUICE_FRAME_EBADFRAME;
            udp_on_ack(c, f.u.num.value);
            break;
        case FRAME_PING: {
            int rc = udp_send_frames(c, pong, frame_encode_empty(pong, sizeof pong, FRAME_PONG));
            if (rc) return rc;
            break;
        }
        case FRAME_PONG:
            break;
        case FRAME_ERROR:
            return on_error(c, &f);
        default:
            return SLUICE_FRAME_EBADFRAME;
        }
    }
    return 0;
}

/* Reads every datagram waiting. */
static int udp_read_all(struct sluice_frame_client *c)
{
    for (;;) {
        int k = dgram_recv(c), rc;
        if (k <= 0) return k;
        if ((rc = udp_on_dgram(c, (size_t)k))) return rc;
    }
}

/* pump() over UDP: datagrams out as the flight allows, ACKs in, the resend
 * timer, until `u` holds or the deadline passes. */
static int udp_pump(struct sluice_frame_client *c, int64_t deadline, enum until u, size_t need)
{
    int force = u != UNTIL_IDLE;
    for (int polled = 0;; polled = 1) {
        int rc = udp_fill(c, force);
        if (rc) return rc;
        if (done(c, u, need) && (polled || u != UNTIL_IDLE)) return 0;
        int64_t until = deadline;
        if (c->rto_at && c->rto_at < until) until = c->rto_at;
        struct pollfd pf = {c->fd, POLLIN, 0};
        if (c->blocked) pf.events |= POLLOUT;
        int r = poll(&pf, 1, remaining(until));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r > 0 && (pf.revents & (POLLIN | POLLERR)) && (rc = udp_read_all(c))) return rc;
        if (r > 0 && (pf.revents & POLLHUP) && !(pf.revents & POLLIN)) return SLUICE_FRAME_ECLOSED;
        int64_t now = now_ms();
        if (c->rto_at && now >= c->rto_at && (rc = udp_on_timer(c, now))) return rc;
        if (now >= deadline) {
            if ((rc = udp_fill(c, force))) return rc;
            return done(c, u, need) ? 0 : SLUICE_FRAME_ETIMEDOUT;
        }
    }
}

/* close() over UDP: BYE until a datagram of the session answers (the
 * server acks and ends the session at the first BYE it gets, so a BYE after
 * that meets silence), up to 3 times one resend timeout apart. */
static int udp_close(struct sluice_frame_client *c, int64_t deadline)
{
    for (int tries = 0; tries < 3; tries++) {
        uint8_t bye[2];
        int rc = udp_send_frames(c, bye, frame_encode_empty(bye, sizeof bye, FRAME_BYE));
        if (rc) return rc;
        int64_t until = now_ms() + rto(c);
        if (until > deadline) until = deadline;
        c->unanswered = 1;
        while (c->unanswered) {
            struct pollfd pf = {c->fd, POLLIN, 0};
            int r = poll(&pf, 1, remaining(until));
            if (r < 0 && errno != EINTR) return -errno;
            if (r == 0) break;
            if (r > 0 && (rc = udp_read_all(c))) return rc;
            if (r > 0 && (pf.revents & POLLHUP) && !(pf.revents & POLLIN)) break;
        }
        if (!c->unanswered || now_ms() >= deadline) break;
    }
    return c->count ? SLUICE_FRAME_ETIMEDOUT : 0;
}

/* Moves frames both ways on the live connection until `u` holds or the
 * deadline passes. Reading never stops while we write: a server past its
 * window stops reading until its ACKs leave, and we must take them. */
static int pump(struct sluice_frame_client *c, int64_t deadline, enum until u, size_t need)
{
    if (c->udp) return udp_pump(c, deadline, u, need);
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
        cfg->max_reading > cfg->ring_bytes ||
        cfg->max_reading > 0x7fffffff - FRAME_OVERHEAD - UDP_OVERHEAD ||
        (cfg->udp && cfg->dgram_max && (cfg->dgram_max < DGRAM_MIN || cfg->dgram_max > 0xffff)))
        return -1;
    size_t tx = cfg->max_reading + FRAME_OVERHEAD;
    if (cfg->udp) {
        /* a datagram of cfg.dgram_max, or one reading alone in a larger one */
        size_t dmax = cfg->dgram_max ? cfg->dgram_max : DGRAM_DEFAULT;
        tx += UDP_OVERHEAD;
        if (tx < dmax) tx = dmax;
    }
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
        !cfg->token[0] || strlen(cfg->host) >= HOST_MAX || !cfg->port || cfg->port > 65535 ||
        cfg->tcp_port > 65535 || (cfg->tcp_port && !cfg->udp))
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
    c->dial_dgram = cfg->dial_dgram ? cfg->dial_dgram : dial_dgram_default;
    c->arg = cfg->arg;
    c->udp = cfg->udp != 0;
    c->dgram_max = cfg->dgram_max ? cfg->dgram_max : DGRAM_DEFAULT;
    c->tcp_port = cfg->tcp_port;
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
    if (n > c->max_reading ||
        (c->max_frame && (c->udp ? udp_single(n) : 1 + varint_len(n) + n) > c->max_frame))
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
    if (c->fd >= 0 && c->udp) {
        rc = udp_close(c, now_ms() + c->timeout_ms);
        drop_conn(c);
    } else if (c->fd >= 0) {
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
