/* sluice-bench — the load generator of INTERFACE.md ("sluice-bench"): HTTP, MQTT and
 * the compact frame protocol.
 *
 *   sluice-bench http --target HOST:PORT --token T [--connections C] [--duration S]
 *                [--payload BYTES] [--readings N] [--pipeline N] [--rate R/s] [--json]
 *                [--path P]
 *   sluice-bench mqtt --target HOST:PORT --token T [--connections C] [--duration S]
 *                [--payload BYTES] [--qos 0|1|2] [--pipeline N] [--rate R/s] [--json]
 *                [--topic T] [--mqtt-version 4|5] [--session-expiry S]
 *   sluice-bench frame --target HOST:PORT --token T|--token-file FILE [--connections C]
 *                [--duration S] [--payload BYTES] [--batch N] [--pipeline N] [--rate R/s]
 *                [--json]
 *   sluice-bench udp --target HOST:PORT --token T|--token-file FILE [--connections C]
 *                [--duration S] [--payload BYTES] [--batch N] [--pipeline N] [--rate R/s]
 *                [--json]
 *
 * One thread, one epoll loop, C connections (udp: C devices, a UDP socket
 * each); the loop, the connection life cycle (connect, reconnect after a
 * loss, timeouts), the --rate schedule, the histogram and the report are
 * shared, and each protocol supplies a small table of hooks (struct proto):
 * what to send on connect, how to start one request, when a connection has
 * room for another, how to read answers (a datagram protocol: how to read).
 *
 * HTTP: every connection keeps up to --pipeline POSTs in flight; each response
 * is matched to the oldest outstanding request on its connection (HTTP/1.1
 * answers in order), and the time from the start of that request's write to
 * the end of its response body goes into a log-linear histogram. Responses
 * are read only as far as the status line and Content-Length, so any HTTP/1.1
 * server can be driven (nginx with `return 204;` for the side-by-side
 * comparison).
 *
 * MQTT: the real wire format (3.1.1 or 5.0), so Mosquitto is driven
 * unchanged. CONNECT (clean session, keepalive 60, client id
 * sluice-bench-<pid>-<n>, username "bench", password = the token), CONNACK 0,
 * then PUBLISH to --topic at --qos with a JSON payload of exactly --payload
 * bytes. QoS 1/2: up to --pipeline publishes per connection not yet
 * acknowledged (capped by a 5.0 CONNACK's Receive Maximum); packet ids cycle
 * through 1..65535 and never reuse one still in flight; latency runs from the
 * start of the PUBLISH to its PUBACK (QoS 1) or PUBCOMP (QoS 2, after PUBREC
 * and our PUBREL). QoS 0 has nothing to time: latency is reported as n/a and
 * readings/s counts publishes sent; each connection sends a PINGREQ every
 * second, and a last one at the end, so "sent" only counts publishes the
 * server has read up to a PINGRESP (the PINGREQ round trips are reported
 * separately). After --duration no new publish starts, and the run waits (up
 * to DRAIN_NS) for the ones in flight to be acknowledged.
 *
 * Frame (docs/frame-protocol.md, over TCP): each connection has a token of
 * its own (--token for one connection, else --token-file, one token per line,
 * connection i using line i), because a second connection with a token takes
 * the first over (ERROR 0x06). HELLO with next_seq 0 (a device without
 * stored state), CHALLENGE, PROOF computed from the token as §3 says (SHA-256
 * and HMAC-SHA-256 from wolfCrypt), and readings right after PROOF, before
 * WELCOME; WELCOME's server signature is checked (a server without the
 * token's ServerKey is refused), and its durable_seq is the base the
 * connection's readings are numbered from. Readings are READING frames, or
 * BATCH frames of --batch readings, each a JSON payload of exactly --payload
 * bytes; --pipeline readings per connection may be unacknowledged (default 64,
 * or 4 x --batch when more; capped by WELCOME's window). A reading's latency
 * runs from the start of its frame to the ACK whose durable_seq covers it:
 * the durable-ack latency. After --duration no new frame starts, and the run
 * waits (up to DRAIN_NS) for the ACKs of those in flight. --rate counts
 * frames (R x --batch readings/s).
 *
 * UDP (docs/frame-protocol.md §6): the frame protocol in datagrams, one
 * connected UDP socket per device (--connections), each with its own token as
 * in frame mode, on the same loop (the "connect" of a UDP socket completes at
 * once; struct proto's recv hook reads datagrams instead of a stream). The
 * stateless handshake: 00x8 | HELLO (next_seq 0 the first time), 00x8 |
 * CHALLENGE, 00x8 | HELLO | CHALLENGE | PROOF, 00x8 | WELCOME, whose server
 * signature is checked; step 1 or 3 goes again after 1 s, doubling, and no
 * WELCOME within REQUEST_TIMEOUT_NS is "no_welcome" and a new handshake.
 * Readings wait for WELCOME (its durable_seq numbers them), then go in session
 * datagrams, session_id | dgram_seq | SEQ | READING or BATCH of --batch | mac8,
 * each at most UDP_DGRAM_MAX (1,200) bytes: a --batch x --payload that cannot
 * fit is refused at the start. --pipeline readings per device may be
 * unacknowledged (capped by WELCOME's window); the server's ACK datagrams
 * (MAC checked) are cumulative. Readings not acknowledged within 2 RTTs (the
 * smoothed ACK round trip, at least 200 ms, doubling up to 5 s) go again,
 * go-back-N from the oldest one not acknowledged, counted as "resends"
 * (readings sent again); after UDP_SILENT_RESENDS resends without any answer
 * the device shakes hands again with next_seq = its oldest reading not
 * acknowledged, keeping what it holds, as after an ERROR it may retry (quota,
 * storage, taken over, shutdown) or an ICMP port unreachable ("connect").
 * Latency runs from a reading's first send (--rate: when it was due) to the
 * ACK covering it. At the end each device says BYE.
 *
 * --rate R runs an open loop instead: request i is due at start + i/R seconds
 * whatever the answers do, and goes out on the next connection (round robin)
 * with room for it (under its window); when none has room it waits, and its
 * latency still counts from when it was due, so a server that stalls shows in
 * the percentiles instead of slowing the client down (the coordinated
 * omission a closed loop suffers). Requests still waiting at the end are
 * reported as "unsent": the server fell behind the offered rate.
 *
 * Error kinds in the report, shared: "connect" failed connection attempts;
 * "reset" connections the peer closed (FIN or RST) while requests were in
 * flight (MQTT: at any time after CONNACK); "timeout" connections dropped
 * because an answer took longer than REQUEST_TIMEOUT_NS. HTTP: "http_NNN" per
 * non-2xx status; "bad_response" a response that could not be parsed (no
 * status line, head over RBUF_CAP bytes, chunked or length-less bodies, an
 * unsolicited response). MQTT: "connack_0xNN" a refused CONNECT (the
 * connection is not retried); "no_connack" a connection closed, or silent for
 * REQUEST_TIMEOUT_NS, before any CONNACK; "puback_0xNN", "pubrec_0xNN",
 * "pubcomp_0xNN" a 5.0 reason code >= 0x80 (the publish was refused);
 * "disconnect_0xNN" a DISCONNECT from the server; "malformed" a server packet
 * that cannot be parsed or answers nothing we sent; "server_max_qos",
 * "server_max_packet_size" a 5.0 CONNACK that rules out the run's --qos or
 * publish size; "unacknowledged" publishes never acknowledged (QoS 0: never
 * followed by a PINGRESP) by the end. Frame and UDP: "error_<name>" per ERROR code
 * (error_version, error_auth, error_quota, error_too_large, error_storage,
 * error_taken_over, error_protocol, error_shutdown, error_timeout, else
 * error_0xNN); "bad_signature" a WELCOME not signed with the token's
 * ServerKey; "no_welcome" a connection closed, or silent for
 * REQUEST_TIMEOUT_NS, before its WELCOME; "server_window",
 * "server_max_frame" a WELCOME whose window or max_frame is under one
 * --batch frame; "malformed" a server frame that does not parse, comes out of
 * order or acknowledges readings never sent; "unacknowledged" readings no ACK
 * covered by the end. Version, auth, too-large, protocol, signature and limit
 * failures are not retried on that connection; quota and storage errors are
 * retried after a second, the rest after RECONNECT_DELAY_NS. UDP also:
 * "resends" readings sent again after a timeout (on loopback the server
 * should never need them: each is a datagram it dropped or an ACK later than
 * 2 RTTs), "connect" an ICMP port unreachable (nothing listens), "malformed"
 * also a datagram with our session id whose MAC is wrong.
 *
 * Exit: 0 run completed (HTTP: whatever the statuses; MQTT, frame, UDP: with
 * no errors of any kind); 1 cannot connect at all or a system failure; 2 bad
 * usage or a mode / option that is not implemented yet; 3 (MQTT, frame, UDP) the
 * run completed but a reading was refused or left unacknowledged, or a
 * connection was refused or dropped.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* wolfSSL requires its build options before any other of its headers. */
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/random.h>

#include "protocols/frame.h"
#include "protocols/frame_auth.h"

#define MAX_CONNECTIONS    10000
#define MAX_DURATION_S     3600.0
#define MAX_PIPELINE       1024
#define MAX_FRAME_PIPELINE 65536 /* frame: readings unacknowledged per connection */
#define MAX_BATCH          4096
#define FRAME_PIPELINE     64 /* frame: the default window, or 4 x --batch when more */
#define MAX_PAYLOAD        (1 << 20)
#define MAX_READINGS       100000
#define MAX_RATE           10000000.0
#define MAX_BODY           (64 << 20)
#define RBUF_CAP           16384 /* a response head (an MQTT packet) longer than this is bad */
#define REQUEST_TIMEOUT_NS (5 * NS_PER_S)
#define RECONNECT_DELAY_NS (100 * NS_PER_MS) /* after a failed connect, not to spin */
#define DRAIN_NS           (5 * NS_PER_S)    /* MQTT: how long the end waits for acks */
#define NS_PER_S           1000000000LL
#define NS_PER_MS          1000000LL

/* UDP (§6) */
#define UDP_SID_LEN   8
#define UDP_MAC_LEN   8
#define UDP_DGRAM_MAX 1200 /* what a datagram of ours may take: any path MTU carries it (§6) */
/* a session datagram's bytes besides its READING / BATCH frame, at the widest:
 * session_id, dgram_seq, SEQ (type, length, seq), mac */
#define UDP_OVERHEAD       (UDP_SID_LEN + FRAME_VARINT_MAX + 2 + FRAME_VARINT_MAX + UDP_MAC_LEN)
#define UDP_HS_RETRY_NS    NS_PER_S /* handshake step 1 or 3 again after 1 s, doubling */
#define UDP_RTO_MIN_NS     (200 * NS_PER_MS)
#define UDP_RTO_MAX_NS     (5 * NS_PER_S)
#define UDP_SILENT_RESENDS 3  /* resends without any answer before a new handshake */
#define UDP_PUMP_DGRAMS    64 /* datagrams per pump call before yielding to the loop */
#define UDP_RECV_DGRAMS    64 /* datagrams per readable event */

#define MQTT_KEEPALIVE_S 60
#define MQTT_OBUF_FILL   16384 /* QoS 0: publishes queued per send() */
#define MQTT_PUMP_ROUNDS 16    /* sends per pump call before yielding to the loop */

/* Histogram: 1 µs buckets below 1024 µs, then 128 buckets per power of two
 * (under 0.8 % relative width) up to 2^26 µs (67 s); slower goes in the last. */
#define HIST_LINEAR 1024
#define HIST_SUB    128
#define HIST_OCT    16
#define HIST_N      (HIST_LINEAR + HIST_OCT * HIST_SUB)

enum mode { MODE_HTTP, MODE_MQTT, MODE_FRAME, MODE_UDP };
/* frame: where a connection's handshake is */
enum fr_phase { FR_HELLO, FR_PROOF, FR_LIVE }; /* awaiting CHALLENGE, WELCOME; welcomed */
enum conn_state { CONN_DEAD, CONN_CONNECTING, CONN_OPEN };
enum slot_state { SLOT_FREE, SLOT_WAIT_ACK, SLOT_WAIT_REC, SLOT_WAIT_COMP };

/* MQTT: one QoS 1/2 publish in flight. Slot i of a window of W carries packet
 * ids i+1, i+1+W, i+1+2W, ... (wrapping within 1..65535), so ids in flight
 * are distinct and an ack finds its slot at (id - 1) % W. */
struct slot {
    int64_t start_ns; /* latency counts from here (--rate: when it was due) */
    int64_t sent_ns;  /* the timeout counts from here */
    uint16_t pid;     /* 0: never used */
    uint8_t state;
};

/* frame: one READING / BATCH frame not yet covered by an ACK (UDP: one
 * datagram's readings). */
struct fr_out {
    int64_t start_ns; /* latency counts from here (--rate: when it was due) */
    int64_t sent_ns;  /* the timeout counts from here (UDP: its latest send) */
    uint64_t end;     /* readings of the connection up to and including this frame */
    uint64_t first;   /* UDP: readings before this datagram's */
    unsigned sends;   /* UDP: how often it went out (Karn: a resent one times no RTT) */
};

struct conn {
    int fd;
    enum conn_state state;
    WOLFSSL *ssl;          /* https / mqtts: the TLS session on fd */
    bool handshaking;      /* TCP is up, the TLS handshake is not done */
    int tls_retry;         /* a write that hit WANT_WRITE: retried with the same length */
    WOLFSSL_SESSION *sess; /* --resume: the session to offer on the next connect */
    bool want_out;         /* EPOLLOUT registered: a write hit EAGAIN */
    bool pending;          /* on the reconnect list */
    bool refused;          /* MQTT: CONNECT refused; never reconnected */
    int64_t reconnect_at;  /* CONN_DEAD: when to try again */
    int64_t opened_at;     /* when the TCP connection was established */
    unsigned inflight;     /* requests started and not yet answered */
    size_t rlen;           /* bytes in rbuf */
    /* HTTP */
    bool sending;      /* the request at sent_count - 1 is partly written */
    size_t out_off;    /* bytes of the current request already written */
    unsigned head;     /* ring index of the next request's send time */
    int64_t *start_ns; /* ring of --pipeline send times */
    size_t body_left;  /* bytes of the current response body still to skip */
    int status;        /* status of the response whose body is being skipped */
    bool close_after;  /* that response said Connection: close */
    /* MQTT */
    bool ready;         /* CONNACK 0 received */
    bool ping_out;      /* a PINGREQ is unanswered */
    unsigned window;    /* publishes allowed in flight on this connection */
    unsigned nfree;     /* slots in the free queue */
    unsigned free_head; /* free queue: ring of slot indices, oldest first */
    struct slot *slots; /* --pipeline of them */
    uint16_t *free_q;   /* --pipeline of them */
    int64_t ping_at;    /* when the last PINGREQ was queued */
    uint64_t pubs;      /* publishes queued on this connection */
    uint64_t ping_mark; /* pubs when the unanswered PINGREQ was queued */
    uint64_t confirmed; /* pubs read by the server up to the last PINGRESP */
    uint8_t *obuf;      /* bytes to send (MQTT, frame): [ooff, olen) */
    size_t ooff, olen;
    /* frame: readings are numbered from the connection's start (k = 1, 2, ...);
     * WELCOME's durable_seq is the base, so reading k is number base + k */
    uint8_t phase;     /* enum fr_phase */
    uint8_t auth[192]; /* HELLO || CHALLENGE || PROOF, as sent: the AuthMessage */
    size_t auth_len, hello_len;
    uint64_t base;                /* WELCOME's durable_seq */
    uint64_t fsent, facked;       /* readings queued, and acknowledged, on this connection */
    unsigned fhead, fcount, fcap; /* ring of frames in flight */
    struct fr_out *fring;
    /* UDP: readings are numbered base + k across handshakes (base: the first
     * WELCOME's durable_seq); what a device holds survives a new handshake */
    bool welcomed;                   /* a WELCOME came once: base is known */
    unsigned fnext;                  /* datagrams from fhead sent in this pass (go-back-N: 0) */
    uint8_t ukey[FRAME_KEY_LEN];     /* the session key */
    uint8_t usid[UDP_SID_LEN];       /* the session id */
    uint64_t udseq;                  /* our datagrams in this session */
    int64_t hs_start, hs_at, hs_rto; /* handshake: begun, last datagram, wait before again */
    int64_t srtt;                    /* smoothed ACK round trip (ns; 0: none yet) */
    unsigned backoff;                /* resend timeouts since the last ACK that moved */
    unsigned unanswered;             /* resends since the server was last heard */
    char rbuf[RBUF_CAP];
};

struct opts {
    enum mode mode;
    const char *host;
    const char *port;
    const char *token;
    const char *path;
    const char *topic;
    long connections;
    double duration;
    long payload;
    long readings;
    long pipeline;
    long qos;
    long mqtt_version;
    long session_expiry; /* MQTT: > 0 asks for a kept session (3.1.1 clean session 0) */
    double rate;         /* requests/s offered in an open loop; 0: closed loop */
    bool json;
    bool tls;               /* https / mqtts */
    bool handshakes;        /* https: a new connection (and handshake) per request */
    bool resume;            /* with --handshakes: resume the previous session */
    const char *cacert;     /* verify the server against this PEM file (else no verification) */
    const char *token_file; /* frame: one token per line, one per connection */
    const char **tokens;    /* frame: --token, or the lines of --token-file */
    long ntokens;
    long batch; /* frame: readings per frame (1: READING frames, else BATCH) */
};

struct hist {
    uint64_t n[HIST_N];
    uint64_t max_us;
};

struct stats {
    uint64_t responses;
    uint64_t ok;          /* 2xx responses; MQTT: acknowledged publishes */
    uint64_t status[600]; /* by status code */
    uint64_t bytes_sent;
    uint64_t err_connect, err_reset, err_timeout, err_bad, err_tls;
    uint64_t handshakes, resumed; /* TLS handshakes completed, of them resumed */
    struct hist lat;
    /* MQTT */
    uint64_t sent;      /* publishes started */
    uint64_t refused;   /* publishes answered with a reason code >= 0x80 */
    uint64_t confirmed; /* QoS 0: publishes followed by a PINGRESP */
    uint64_t err_no_connack, err_max_qos, err_max_packet;
    uint64_t connack[256], puback[256], pubrec[256], pubcomp[256], disconnect[256];
    struct hist ping;  /* PINGREQ round trips */
    unsigned recv_max; /* the smallest Receive Maximum a 5.0 server gave (0: none) */
    /* frame */
    uint64_t ferror[256]; /* ERROR frames by code */
    uint64_t err_signature, err_no_welcome, err_window, err_max_frame;
    uint64_t welcomed;   /* handshakes completed */
    struct hist hs;      /* connect (UDP: HELLO) to WELCOME */
    unsigned min_window; /* the smallest window a WELCOME gave (0: none) */
    /* UDP: readings sent again, the timeouts that sent them, new handshakes, datagrams
     * sent, session datagrams received (ACKs) */
    uint64_t resent, resend_rounds, rehandshakes, dgrams, dgrams_in;
};

struct bench;

/* What a protocol plugs into the shared loop. */
struct proto {
    void (*opened)(struct bench *b, struct conn *c); /* the TCP connect completed */
    void (*pump)(struct bench *b, struct conn *c);   /* write what is due */
    void (*parse)(struct bench *b, struct conn *c);  /* consume rbuf */
    bool (*has_room)(const struct bench *b, const struct conn *c);
    void (*begin)(struct bench *b, struct conn *c, int64_t start_ns); /* one more request */
    void (*tick)(struct bench *b, struct conn *c, int64_t now);       /* every 100 ms: timeouts */
    bool (*drained)(const struct bench *b, const struct conn *c);     /* nothing left to await */
    void (*recv)(struct bench *b, struct conn *c); /* datagrams: reads them (NULL: a stream) */
};

struct bench {
    struct opts o;
    const struct proto *p;
    WOLFSSL_CTX *tls; /* client context for https / mqtts */
    int ep;
    struct addrinfo *ai;
    char *req; /* HTTP: the request; MQTT: the PUBLISH (packet id patched per send) */
    size_t req_len;
    size_t pid_off; /* MQTT: where the packet id sits in req */
    char *connect;  /* MQTT: the CONNECT, client id "sluice-bench-<pid>-00000" patched */
    size_t connect_len, cid_off;
    size_t obuf_cap; /* MQTT: per connection */
    size_t reserve;  /* MQTT: obuf room kept for PUBRELs and a PINGREQ; frame: PROOF, PONG */
    struct frame_keys *keys; /* frame: per token (§3) */
    WC_RNG rng;              /* frame: client nonces */
    struct conn *conns;
    unsigned *pending; /* indices of dead connections waiting to reconnect */
    size_t npending;
    long nrefused; /* MQTT: connections whose CONNECT was refused */
    bool ever_connected;
    int last_connect_errno; /* for the "cannot connect" line */
    bool stopping;          /* past the deadline: send nothing new */
    bool drained;           /* the end's wait for acks is over: what is unacked is an error */
    int64_t t0;             /* --rate: the schedule's origin, the first connection's open */
    int64_t until;          /* --rate: the end of the run; nothing due after it is sent */
    uint64_t issued;        /* --rate: requests started, in schedule order */
    long rr;                /* --rate: the connection to try first */
    bool backlogged;        /* --rate: a due request found no connection with room */
    bool progressed;        /* a progress line is on stderr */
    struct stats st;
};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("sluice-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static const char usage_text[] =
    "usage: sluice-bench http|https|mqtt|mqtts|frame|udp --target HOST:PORT --token T\n"
    "         [--connections C (1)] [--duration S (10, max 3600)] [--payload BYTES (64)]\n"
    "         [--pipeline N (1)] [--rate R/s] [--json]\n"
    "  http:  [--readings N (1)] [--path P (/v1/readings)]\n"
    "  mqtt:  [--qos 0|1|2 (1)] [--topic T (readings)] [--mqtt-version 4|5 (4, i.e. 3.1.1)]\n"
    "         password = the token, username \"bench\"; --pipeline: QoS 1/2 publishes\n"
    "         unacknowledged per connection (capped by a 5.0 server's Receive Maximum)\n"
    "         [--session-expiry S (0)]: > 0 asks for a kept session (3.1.1: clean\n"
    "         session 0; 5.0: Session Expiry Interval S)\n"
    "--rate: open loop, R requests/s whatever the answers; latency counts from when\n"
    "        each request was due (without it: closed loop, each connection sends its\n"
    "        next request when the previous one is answered)\n"
    "https, mqtts: the same over TLS (wolfSSL, TLS 1.2 minimum); [--cacert FILE] verifies\n"
    "        the server (default: no verification); [--handshakes]: a new connection and\n"
    "        handshake per request (https: Connection: close; mqtts: per acknowledged\n"
    "        publish), [--resume]: each resuming the previous session\n"
    "frame: the compact frame protocol over TCP (docs/frame-protocol.md); each connection\n"
    "         needs its own token: --token T (one connection) or --token-file FILE (one\n"
    "         token per line, used in turn); [--batch N (1)]: readings per frame (1: READING\n"
    "         frames, else BATCH); --pipeline: readings unacknowledged per connection\n"
    "         (64, or 4 x --batch when more; capped by the server's window); --rate counts\n"
    "         frames; latency runs from a reading's send to the ACK that says it is durable\n"
    "udp:   the same protocol in datagrams (sluiced --udp): --connections devices, a UDP\n"
    "         socket and a token each; --batch readings per datagram, each datagram at most\n"
    "         1200 bytes (a --batch x --payload that cannot fit is refused); --pipeline:\n"
    "         readings unacknowledged per device; what no ACK covers within 2 RTTs (at\n"
    "         least 200 ms) is sent again from the oldest one (errors: \"resends\"); --rate\n"
    "         counts datagrams\n"
    "mode replay is not implemented yet\n";

/* ---- histogram ---- */

static unsigned hist_index(uint64_t us)
{
    if (us < HIST_LINEAR) return (unsigned)us;
    unsigned e = 63 - (unsigned)__builtin_clzll(us); /* >= 10 */
    unsigned oct = e - 10;
    if (oct >= HIST_OCT) return HIST_N - 1;
    unsigned sub = (unsigned)(us >> (e - 7)) & (HIST_SUB - 1);
    return HIST_LINEAR + oct * HIST_SUB + sub;
}

/* The middle of bucket i, in µs. */
static uint64_t hist_value(unsigned i)
{
    if (i < HIST_LINEAR) return i;
    unsigned oct = (i - HIST_LINEAR) / HIST_SUB, sub = (i - HIST_LINEAR) % HIST_SUB;
    unsigned e = oct + 10;
    uint64_t width = 1ULL << (e - 7);
    return (1ULL << e) + sub * width + width / 2;
}

/* n samples of ns each (frame: the readings one ACK covers in a BATCH). */
static void hist_add(struct hist *h, int64_t ns, uint64_t n)
{
    uint64_t us = (uint64_t)(ns > 0 ? ns / 1000 : 0);
    h->n[hist_index(us)] += n;
    if (us > h->max_us) h->max_us = us;
}

static void hist_record(struct hist *h, int64_t ns)
{
    hist_add(h, ns, 1);
}

static uint64_t hist_total(const struct hist *h)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_N; i++)
        total += h->n[i];
    return total;
}

/* Value at quantile q (0..1]; never above the exact maximum, so p50 <= ... <= max. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t total = hist_total(h);
    if (total == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)total + 0.999999);
    if (want < 1) want = 1;
    if (want > total) want = total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->n[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return v > h->max_us ? h->max_us : v;
        }
    }
    return h->max_us;
}

/* ---- argument parsing ---- */

static long parse_long(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        usage_error("%s wants an integer from %ld to %ld, got '%s'", flag, lo, hi, s);
    return v;
}

/* "R" or "R/s", R a positive number of requests per second. */
static double parse_rate(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && !strcmp(end, "/s")) end += 2;
    if (errno || end == s || *end || !(v > 0) || v > MAX_RATE)
        usage_error("--rate wants requests per second in (0, %.0f], got '%s'", MAX_RATE, s);
    return v;
}

static bool header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return false;
    return true;
}

/* Splits HOST:PORT (or [V6]:PORT) in place. */
static void parse_target(char *t, struct opts *o)
{
    char *colon = strrchr(t, ':');
    if (!colon || colon == t || !colon[1]) usage_error("--target wants HOST:PORT, got '%s'", t);
    *colon = '\0';
    o->port = colon + 1;
    parse_long("--target port", o->port, 1, 65535);
    if (t[0] == '[') {
        size_t n = strlen(t);
        if (n < 3 || t[n - 1] != ']') usage_error("--target wants [ADDR]:PORT for IPv6");
        t[n - 1] = '\0';
        t++;
    }
    o->host = t;
}

/* frame --token-file: one token per line (blank lines skipped), the same
 * checks as --token; o->token stays NULL. */
static void read_tokens(struct opts *o)
{
    FILE *f = fopen(o->token_file, "r");
    if (!f) usage_error("--token-file %s: %s", o->token_file, strerror(errno));
    char *line = NULL;
    size_t cap = 0, have = 0;
    ssize_t n;
    long lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0) continue;
        if (!header_safe(line) || n > 65535)
            usage_error("--token-file %s line %ld: a token is at most 65535 bytes, free of "
                        "control characters",
                        o->token_file, lineno);
        if ((size_t)o->ntokens == have) {
            have = have ? 2 * have : 64;
            o->tokens = realloc(o->tokens, have * sizeof *o->tokens);
            if (!o->tokens) usage_error("out of memory for --token-file %s", o->token_file);
        }
        if (!(o->tokens[o->ntokens++] = strdup(line)))
            usage_error("out of memory for --token-file %s", o->token_file);
    }
    free(line);
    fclose(f);
    if (o->ntokens == 0) usage_error("--token-file %s holds no token", o->token_file);
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    for (; v >= 0x80; v >>= 7)
        n++;
    return n;
}

/* The bytes of the frame fr_build makes: a READING (batch 1), else a BATCH
 * of `batch` readings, of `payload` bytes each. */
static size_t fr_unit_len(long batch, long payload)
{
    size_t item = varint_len((uint64_t)payload) + (size_t)payload;
    if (batch == 1) return 1 + item;
    size_t body = varint_len((uint64_t)batch) + (size_t)batch * item;
    return 1 + varint_len(body) + body;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* frame: a token is at most 64 bytes (frame_auth_derive), and the
 * connections' tokens must differ, or they take each other over (ERROR 0x06)
 * for the whole run. */
static void check_frame_tokens(const struct opts *o)
{
    size_t n = (size_t)o->connections;
    for (size_t i = 0; i < n; i++)
        if (strlen(o->tokens[i]) > 64)
            usage_error("%s: a frame token is at most 64 bytes ('sluice device add' prints them)",
                        o->token_file ? o->token_file : "--token");
    const char **v = malloc(n * sizeof *v);
    if (!v) usage_error("out of memory for %zu tokens", n);
    memcpy(v, o->tokens, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(v[i - 1], v[i]))
            usage_error("%s holds a token twice among the first %zu: each connection needs "
                        "its own",
                        o->token_file, n);
    free(v);
}

static void parse_args(int argc, char **argv, struct opts *o)
{
    static const char *const later[] = {"replay"};
    if (argc < 2) usage_error("missing mode (http, mqtt); try --help");
    const char *mode = argv[1];
    if (!strcmp(mode, "--help") || !strcmp(mode, "-h")) {
        fputs(usage_text, stdout);
        exit(0);
    }
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
        if (!strcmp(mode, later[i])) usage_error("%s is not implemented yet", mode);
    if (strcmp(mode, "http") && strcmp(mode, "mqtt") && strcmp(mode, "https") &&
        strcmp(mode, "mqtts") && strcmp(mode, "frame") && strcmp(mode, "udp"))
        usage_error("unknown mode '%s' (http, https, mqtt, mqtts, frame, udp, replay)", mode);

    *o = (struct opts){.mode = !strcmp(mode, "frame")     ? MODE_FRAME
                               : !strcmp(mode, "udp")     ? MODE_UDP
                               : strncmp(mode, "http", 4) ? MODE_MQTT
                                                          : MODE_HTTP,
                       .tls = !strcmp(mode, "https") || !strcmp(mode, "mqtts"),
                       .connections = 1,
                       .duration = 10,
                       .payload = 64,
                       .readings = 1,
                       .pipeline = 1,
                       .qos = 1,
                       .mqtt_version = 4,
                       .topic = "readings",
                       .path = "/v1/readings",
                       .batch = 1};
    /* frame: the frame protocol over TCP or UDP (tokens, --batch, windows alike) */
    bool mqtt = o->mode == MODE_MQTT, frame = o->mode == MODE_FRAME || o->mode == MODE_UDP;
    bool pipeline_given = false;
    char *target = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--handshakes") || !strcmp(a, "--resume")) {
            if (!o->tls) usage_error("%s applies to https and mqtts", a);
            o->handshakes = true;
            if (!strcmp(a, "--resume")) o->resume = true;
            continue;
        }
        if (strncmp(a, "--", 2)) usage_error("unexpected argument '%s'", a);
        if (i + 1 >= argc) usage_error("%s needs a value", a);
        char *v = argv[++i];
        bool http_only = !strcmp(a, "--readings") || !strcmp(a, "--path");
        bool mqtt_only = !strcmp(a, "--qos") || !strcmp(a, "--topic") ||
                         !strcmp(a, "--mqtt-version") || !strcmp(a, "--session-expiry");
        bool frame_only = !strcmp(a, "--batch") || !strcmp(a, "--token-file");
        if ((http_only && o->mode != MODE_HTTP) || (mqtt_only && !mqtt) || (frame_only && !frame))
            usage_error("%s does not apply to %s", a, mode);
        if (!strcmp(a, "--target")) {
            target = v;
        } else if (!strcmp(a, "--token")) {
            o->token = v;
        } else if (!strcmp(a, "--connections")) {
            o->connections = parse_long(a, v, 1, MAX_CONNECTIONS);
        } else if (!strcmp(a, "--duration")) {
            char *end;
            errno = 0;
            o->duration = strtod(v, &end);
            if (errno || end == v || *end || !(o->duration > 0) || o->duration > MAX_DURATION_S)
                usage_error("--duration wants seconds in (0, 3600], got '%s'", v);
        } else if (!strcmp(a, "--payload")) {
            o->payload = parse_long(a, v, mqtt || frame ? 2 : 1, MAX_PAYLOAD);
        } else if (!strcmp(a, "--readings")) {
            o->readings = parse_long(a, v, 1, MAX_READINGS);
        } else if (!strcmp(a, "--pipeline")) {
            o->pipeline = parse_long(a, v, 1, frame ? MAX_FRAME_PIPELINE : MAX_PIPELINE);
            pipeline_given = true;
        } else if (!strcmp(a, "--batch")) {
            o->batch = parse_long(a, v, 1, MAX_BATCH);
        } else if (!strcmp(a, "--token-file")) {
            o->token_file = v;
        } else if (!strcmp(a, "--path")) {
            o->path = v;
        } else if (!strcmp(a, "--rate")) {
            o->rate = parse_rate(v);
        } else if (!strcmp(a, "--qos")) {
            o->qos = parse_long(a, v, 0, 2);
        } else if (!strcmp(a, "--topic")) {
            o->topic = v;
        } else if (!strcmp(a, "--mqtt-version")) {
            o->mqtt_version = parse_long(a, v, 4, 5);
        } else if (!strcmp(a, "--session-expiry")) {
            o->session_expiry = parse_long(a, v, 0, 0xFFFFFFFFL);
        } else if (!strcmp(a, "--cacert")) {
            if (!o->tls) usage_error("--cacert applies to https and mqtts");
            o->cacert = v;
        } else {
            usage_error("unknown option '%s'", a);
        }
    }
    if (!target) usage_error("--target HOST:PORT is required");
    if (o->token && o->token_file) usage_error("give --token or --token-file, not both");
    if (o->token_file) {
        read_tokens(o);
    } else {
        if (!o->token) usage_error("--token is required%s", frame ? " (or --token-file)" : "");
        if (!o->token[0] || !header_safe(o->token) || strlen(o->token) > 65535)
            usage_error("--token must be non-empty, at most 65535 bytes and free of control "
                        "characters");
        o->tokens = &o->token;
        o->ntokens = 1;
    }
    if (frame && o->ntokens < o->connections)
        usage_error("%ld connections need %ld tokens, %s has %ld (a second connection with a "
                    "token takes the first over)",
                    o->connections, o->connections, o->token_file ? o->token_file : "--token",
                    o->ntokens);
    if (frame) check_frame_tokens(o);
    if (frame && !pipeline_given) {
        o->pipeline = FRAME_PIPELINE > 4 * o->batch ? FRAME_PIPELINE : 4 * o->batch;
    } else if (frame && o->pipeline < o->batch) {
        usage_error("--pipeline %ld is under --batch %ld: no batch would fit in the window",
                    o->pipeline, o->batch);
    }
    if (frame && o->payload * o->batch > MAX_BODY)
        usage_error("--payload x --batch is over %d bytes", MAX_BODY);
    if (o->mode == MODE_UDP && UDP_OVERHEAD + fr_unit_len(o->batch, o->payload) > UDP_DGRAM_MAX) {
        long fit = o->batch;
        while (fit > 0 && UDP_OVERHEAD + fr_unit_len(fit, o->payload) > UDP_DGRAM_MAX)
            fit--;
        char why[96];
        if (fit)
            snprintf(why, sizeof why, "at most %ld readings of %ld bytes fit", fit, o->payload);
        else
            snprintf(why, sizeof why, "not even one reading of %ld bytes fits", o->payload);
        usage_error("udp: --batch %ld x --payload %ld makes datagrams of up to %zu bytes, over "
                    "%d (what any path carries): %s",
                    o->batch, o->payload, UDP_OVERHEAD + fr_unit_len(o->batch, o->payload),
                    UDP_DGRAM_MAX, why);
    }
    if (o->path[0] != '/' || !header_safe(o->path) || strchr(o->path, ' '))
        usage_error("--path must start with '/' and hold no spaces or control characters");
    /* a topic name, not a filter: no wildcards (MQTT-3.3.2-2) */
    if (!o->topic[0] || strlen(o->topic) > 65535 || strpbrk(o->topic, "+#") ||
        !header_safe(o->topic))
        usage_error("--topic wants a topic name: non-empty, no '+' or '#', no control "
                    "characters");
    if (o->payload * o->readings > MAX_BODY)
        usage_error("--payload x --readings is over %d bytes", MAX_BODY);
    parse_target(target, o);
}

/* ---- HTTP ---- */

/* Appends one reading of about `size` bytes: fixed fields, then a padding
 * string that makes up the rest (a reading never goes below the fixed part). */
static size_t put_reading(char *p, long size, long seq)
{
    int n = sprintf(p, "{\"seq\":%ld,\"temp\":21.5,\"pad\":\"", seq);
    long pad = size - n - 2;
    if (pad > 0) {
        memset(p + n, 'x', (size_t)pad);
        n += (int)pad;
    }
    memcpy(p + n, "\"}", 2);
    return (size_t)n + 2;
}

/* Builds the one request every connection sends over and over. */
static void http_build(struct bench *b)
{
    const struct opts *o = &b->o;
    size_t per = (size_t)o->payload + 64;
    size_t cap = per * (size_t)o->readings + 2 + 1024 + strlen(o->token) + strlen(o->path) +
                 strlen(o->host) + 64;
    char *body = malloc(per * (size_t)o->readings + 4);
    b->req = malloc(cap);
    if (!body || !b->req) {
        fprintf(stderr, "sluice-bench: out of memory for a %zu byte request\n", cap);
        exit(1);
    }
    size_t blen = 0;
    if (o->readings > 1) body[blen++] = '[';
    for (long i = 0; i < o->readings; i++) {
        if (i) body[blen++] = ',';
        blen += put_reading(body + blen, o->payload, i);
    }
    if (o->readings > 1) body[blen++] = ']';
    bool v6 = strchr(o->host, ':') != NULL;
    int h = snprintf(b->req, cap,
                     "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nX-Auth-Token: %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                     o->path, v6 ? "[" : "", o->host, v6 ? "]" : "", o->port, o->token, blen,
                     o->handshakes ? "Connection: close\r\n" : "");
    memcpy(b->req + h, body, blen);
    b->req_len = (size_t)h + blen;
    free(body);
}

static void conn_kill(struct bench *b, struct conn *c, int64_t delay_ns);
static void conn_lost(struct bench *b, struct conn *c);
static void conn_set_out(struct bench *b, struct conn *c, bool want);

static void http_bad(struct bench *b, struct conn *c)
{
    b->st.err_bad++;
    conn_kill(b, c, RECONNECT_DELAY_NS);
}

static bool http_has_room(const struct bench *b, const struct conn *c)
{
    return c->state == CONN_OPEN && !c->sending && c->inflight < (unsigned)b->o.pipeline &&
           !c->close_after;
}

/* send / recv, through TLS on https and mqtts: -1 with errno EAGAIN when the
 * socket (or the TLS record under way) must wait, ECONNRESET on any other
 * failure. A TLS write that waited is retried with the same length, as
 * wolfSSL requires (the caller retries from the same offset). */
static ssize_t io_send(struct bench *b, struct conn *c, const void *p, size_t n)
{
    if (!c->ssl) return send(c->fd, p, n, MSG_NOSIGNAL);
    int want = c->tls_retry ? c->tls_retry : (int)(n > 16384 ? 16384 : n);
    int r = wolfSSL_write(c->ssl, p, want);
    if (r > 0) {
        c->tls_retry = 0;
        return r;
    }
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_WRITE || e == WOLFSSL_ERROR_WANT_READ) {
        c->tls_retry = want;
        errno = EAGAIN;
        return -1;
    }
    b->st.err_tls++;
    errno = ECONNRESET;
    return -1;
}

static ssize_t io_recv(struct bench *b, struct conn *c, void *p, size_t n)
{
    if (!c->ssl) return recv(c->fd, p, n, 0);
    int r = wolfSSL_read(c->ssl, p, (int)n);
    if (r > 0) return r;
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == WOLFSSL_ERROR_ZERO_RETURN) return 0;
    (void)b;
    errno = ECONNRESET;
    return -1;
}

/* Starts a request whose latency counts from start_ns. */
static void http_begin(struct bench *b, struct conn *c, int64_t start_ns)
{
    c->start_ns[c->head] = start_ns;
    c->head = (c->head + 1) % (unsigned)b->o.pipeline;
    c->inflight++;
    c->sending = true;
    c->out_off = 0;
}

/* Writes the request under way, then (closed loop) new ones until --pipeline
 * are in flight or the socket is full; under --rate, rate_dispatch starts them. */
static void http_pump(struct bench *b, struct conn *c)
{
    while (c->state == CONN_OPEN) {
        if (!c->sending) {
            if (b->o.rate > 0 || b->stopping || !http_has_room(b, c)) break;
            http_begin(b, c, now_ns());
        }
        ssize_t n = io_send(b, c, b->req + c->out_off, b->req_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                conn_set_out(b, c, true);
                return;
            }
            conn_lost(b, c);
            return;
        }
        b->st.bytes_sent += (uint64_t)n;
        c->out_off += (size_t)n;
        if (c->out_off == b->req_len) c->sending = false;
    }
    if (c->state == CONN_OPEN) conn_set_out(b, c, false);
}

static void http_response_done(struct bench *b, struct conn *c)
{
    if (c->inflight == 0) {
        http_bad(b, c); /* an answer to no request at all */
        return;
    }
    /* An answer before its request is fully written (a 401 or 413 sent after
     * the head alone): count it, then start over, because whether the server
     * still reads the rest of the body is its choice. */
    bool early = c->inflight == 1 && c->sending;
    unsigned p = (unsigned)b->o.pipeline;
    unsigned tail = (c->head + p - c->inflight) % p;
    c->inflight--;
    hist_record(&b->st.lat, now_ns() - c->start_ns[tail]);
    b->st.responses++;
    if (c->status >= 200 && c->status < 300) b->st.ok++;
    b->st.status[c->status]++;
    if (early) {
        c->sending = false;
        conn_kill(b, c, 0);
    } else if (c->close_after && c->inflight == 0 && !c->sending) {
        conn_kill(b, c, 0);
    }
}
/* Case-insensitive header match at the start of a line; returns the value. */
static const char *header_value(const char *line, const char *end, const char *name)
{
    size_t n = strlen(name);
    if ((size_t)(end - line) <= n || strncasecmp(line, name, n) || line[n] != ':') return NULL;
    const char *v = line + n + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    return v;
}

static bool has_token(const char *v, const char *end, const char *tok)
{
    size_t n = strlen(tok);
    for (; v + n <= end; v++)
        if (!strncasecmp(v, tok, n)) return true;
    return false;
}

/* Parses the response head in [p, end) (end points at the blank line's CRLF
 * CRLF). Returns 0 with c->status / body_left / close_after set, -1 when the
 * server's response cannot be followed (no status, chunked, no length). */
static int parse_head(struct conn *c, const char *p, const char *end)
{
    if (end - p < 12 || strncmp(p, "HTTP/1.", 7) || p[8] != ' ') return -1;
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        status = status * 10 + (p[i] - '0');
    }
    if (status < 100 || status > 599) return -1;
    bool http10 = p[7] == '0';
    bool have_len = false, keep_alive = false, close = false;
    size_t len = 0;
    const char *line = memchr(p, '\n', (size_t)(end - p));
    line = line ? line + 1 : end;
    while (line < end) {
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        if (!eol) eol = end;
        const char *v;
        if ((v = header_value(line, eol, "content-length"))) {
            size_t n = 0;
            if (v == eol) return -1;
            for (; v < eol && *v >= '0' && *v <= '9'; v++) {
                if (n > (SIZE_MAX - 9) / 10) return -1;
                n = n * 10 + (size_t)(*v - '0');
            }
            if (have_len && n != len) return -1;
            have_len = true;
            len = n;
        } else if ((v = header_value(line, eol, "transfer-encoding"))) {
            if (has_token(v, eol, "chunked"))
                return -1; /* not followed: the servers we drive send lengths */
        } else if ((v = header_value(line, eol, "connection"))) {
            if (has_token(v, eol, "close")) close = true;
            if (has_token(v, eol, "keep-alive")) keep_alive = true;
        }
        line = eol + 2;
    }
    c->status = status;
    c->close_after = close || (http10 && !keep_alive);
    if (status < 200 || status == 204 || status == 304) {
        c->body_left = 0;
        return 0;
    }
    if (!have_len) return -1;
    c->body_left = len;
    return 0;
}

/* Consumes whole responses from rbuf; keeps a partial head for the next read. */
static void http_parse(struct bench *b, struct conn *c)
{
    size_t pos = 0;
    while (c->state == CONN_OPEN) {
        if (c->body_left > 0) {
            size_t take = c->rlen - pos < c->body_left ? c->rlen - pos : c->body_left;
            pos += take;
            c->body_left -= take;
            if (c->body_left > 0) break;
            http_response_done(b, c);
            continue;
        }
        if (pos == c->rlen) break;
        const char *start = c->rbuf + pos;
        const char *hend = memmem(start, c->rlen - pos, "\r\n\r\n", 4);
        if (!hend) {
            if (pos == 0 && c->rlen == RBUF_CAP)
                http_bad(b, c); /* a head that does not fit is not one we follow */
            break;
        }
        if (parse_head(c, start, hend + 2) < 0) {
            http_bad(b, c);
            return;
        }
        pos = (size_t)(hend + 4 - c->rbuf);
        if (c->status < 200) continue; /* interim (100 Continue): the final one follows */
        if (c->body_left == 0) http_response_done(b, c);
    }
    if (c->state != CONN_OPEN) return;
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
}

static void http_opened(struct bench *b, struct conn *c)
{
    http_pump(b, c);
}

/* Drops the connection when its oldest outstanding request is older than the timeout. */
static void http_tick(struct bench *b, struct conn *c, int64_t now)
{
    unsigned p = (unsigned)b->o.pipeline;
    if (c->state != CONN_OPEN || c->inflight == 0) return;
    unsigned tail = (c->head + p - c->inflight) % p;
    if (now - c->start_ns[tail] > REQUEST_TIMEOUT_NS) {
        b->st.err_timeout++;
        conn_kill(b, c, 0);
    }
}

/* HTTP does not wait for answers at the end (they are not counted then). */
static bool http_drained(const struct bench *b, const struct conn *c)
{
    (void)b;
    (void)c;
    return true;
}

static const struct proto proto_http = {http_opened, http_pump, http_parse,   http_has_room,
                                        http_begin,  http_tick, http_drained, NULL};

/* ---- MQTT: packets out ---- */

enum {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* Writes the Variable Byte Integer n (< 2^28) at p; returns its length. */
static size_t mqc_put_varint(uint8_t *p, size_t n)
{
    size_t i = 0;
    do {
        uint8_t byte = n & 0x7f;
        n >>= 7;
        p[i++] = (uint8_t)(byte | (n ? 0x80 : 0));
    } while (n);
    return i;
}

static size_t mqc_put_str(uint8_t *p, const void *s, size_t n)
{
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

/* A JSON object of exactly `size` bytes (size >= 2): {"v":123,"pad":"xx…"}
 * when it fits, else "{" spaces "}". */
static void mqc_payload(uint8_t *p, long size)
{
    static const char fixed[] = "{\"v\":123,\"pad\":\"";
    size_t f = sizeof fixed - 1;
    if ((size_t)size >= f + 2) {
        memcpy(p, fixed, f);
        memset(p + f, 'x', (size_t)size - f - 2);
        memcpy(p + size - 2, "\"}", 2);
    } else {
        p[0] = '{';
        memset(p + 1, ' ', (size_t)size - 2);
        p[size - 1] = '}';
    }
}

/* Builds the CONNECT (client id patched per connection) and the PUBLISH every
 * connection repeats (packet id patched per publish), and sizes the
 * per-connection output buffer. */
static void mqtt_build(struct bench *b)
{
    const struct opts *o = &b->o;
    bool v5 = o->mqtt_version == 5;
    size_t tlen = strlen(o->topic), klen = strlen(o->token);
    char cid[64];
    int cidn = snprintf(cid, sizeof cid, "sluice-bench-%ld-%05d", (long)getpid(), 0);

    /* CONNECT: "MQTT", level, flags (username, password, clean session), keepalive */
    long keep = o->session_expiry;
    size_t rl = 2 + 4 + 1 + 1 + 2 + (v5 ? (keep ? 6 : 1) : 0) + 2 + (size_t)cidn + 2 + 5 + 2 + klen;
    b->connect = malloc(rl + 5);
    b->req_len = 1 + 4 + 2 + tlen + 2 + 1 + (size_t)o->payload;
    b->req = malloc(b->req_len + 8);
    if (!b->connect || !b->req) {
        fprintf(stderr, "sluice-bench: out of memory for a %ld byte payload\n", o->payload);
        exit(1);
    }
    uint8_t *p = (uint8_t *)b->connect;
    size_t n = 0;
    p[n++] = MQTT_CONNECT << 4;
    n += mqc_put_varint(p + n, rl);
    n += mqc_put_str(p + n, "MQTT", 4);
    p[n++] = (uint8_t)o->mqtt_version;
    /* clean session, except 3.1.1 asking for a kept one (5.0 starts clean and
     * asks for its expiry; the client ids are new for every run either way) */
    p[n++] = 0x80 | 0x40 | (v5 || !keep ? 0x02 : 0);
    p[n++] = 0;
    p[n++] = MQTT_KEEPALIVE_S;
    if (v5 && keep) { /* Session Expiry Interval */
        p[n++] = 5;
        p[n++] = 0x11;
        p[n++] = (uint8_t)(keep >> 24);
        p[n++] = (uint8_t)(keep >> 16);
        p[n++] = (uint8_t)(keep >> 8);
        p[n++] = (uint8_t)keep;
    } else if (v5) {
        p[n++] = 0; /* no properties */
    }
    b->cid_off = n + 2 + (size_t)cidn - 5;
    n += mqc_put_str(p + n, cid, (size_t)cidn);
    n += mqc_put_str(p + n, "bench", 5);
    n += mqc_put_str(p + n, o->token, klen);
    b->connect_len = n;

    /* PUBLISH: topic, [packet id], [properties], payload */
    p = (uint8_t *)b->req;
    rl = 2 + tlen + (o->qos ? 2 : 0) + (v5 ? 1 : 0) + (size_t)o->payload;
    n = 0;
    p[n++] = (uint8_t)(MQTT_PUBLISH << 4 | o->qos << 1);
    n += mqc_put_varint(p + n, rl);
    n += mqc_put_str(p + n, o->topic, tlen);
    b->pid_off = n;
    if (o->qos) {
        p[n++] = 0;
        p[n++] = 1;
    }
    if (v5) p[n++] = 0;
    mqc_payload(p + n, o->payload);
    b->req_len = n + (size_t)o->payload;

    /* Room for the publishes a send() carries (QoS 1/2: at most the window),
     * plus, kept free, a PUBREL per publish in flight and one PINGREQ. */
    size_t burst = b->req_len;
    if (burst < MQTT_OBUF_FILL) {
        size_t k = MQTT_OBUF_FILL / b->req_len;
        if (o->qos && k > (size_t)o->pipeline) k = (size_t)o->pipeline;
        burst = (k ? k : 1) * b->req_len;
    }
    b->reserve = 4 * (size_t)o->pipeline + 2;
    b->obuf_cap = b->connect_len + burst + b->reserve;
}

/* Makes room for n more bytes at the end of obuf. The caller has checked
 * that what is unsent plus n fits in obuf_cap. */
static uint8_t *obuf_append(struct bench *b, struct conn *c, size_t n)
{
    if (c->ooff == c->olen) {
        c->ooff = c->olen = 0;
    } else if (c->olen + n > b->obuf_cap) {
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
    }
    if (c->olen + n > b->obuf_cap) { /* the sizing in mqtt_build (or fr_build) is wrong */
        fprintf(stderr, "\nsluice-bench: internal error: output buffer overflow\n");
        abort();
    }
    uint8_t *p = c->obuf + c->olen;
    c->olen += n;
    return p;
}

static void mqtt_ack_out(struct bench *b, struct conn *c, unsigned type, unsigned flags,
                         uint16_t pid)
{
    uint8_t *p = obuf_append(b, c, 4);
    p[0] = (uint8_t)(type << 4 | flags);
    p[1] = 2;
    p[2] = (uint8_t)(pid >> 8);
    p[3] = (uint8_t)pid;
}

static void mqtt_ping(struct bench *b, struct conn *c, int64_t now)
{
    uint8_t *p = obuf_append(b, c, 2);
    p[0] = MQTT_PINGREQ << 4;
    p[1] = 0;
    c->ping_out = true;
    c->ping_at = now;
    c->ping_mark = c->pubs;
}

static bool mqtt_has_room(const struct bench *b, const struct conn *c)
{
    if (c->state != CONN_OPEN || !c->ready) return false;
    if (b->o.qos && c->nfree == 0) return false;
    return (c->olen - c->ooff) + b->req_len + b->reserve <= b->obuf_cap;
}

/* Queues one PUBLISH whose latency counts from start_ns. */
static void mqtt_begin(struct bench *b, struct conn *c, int64_t start_ns)
{
    uint8_t *p = obuf_append(b, c, b->req_len);
    memcpy(p, b->req, b->req_len);
    if (b->o.qos) {
        unsigned w = c->window, i = c->free_q[c->free_head];
        c->free_head = (c->free_head + 1) % (unsigned)b->o.pipeline;
        c->nfree--;
        struct slot *s = &c->slots[i];
        unsigned next = s->pid ? s->pid + w : i + 1;
        s->pid = (uint16_t)(next > 65535 ? i + 1 : next);
        s->state = b->o.qos == 1 ? SLOT_WAIT_ACK : SLOT_WAIT_REC;
        s->start_ns = start_ns;
        s->sent_ns = now_ns();
        p[b->pid_off] = (uint8_t)(s->pid >> 8);
        p[b->pid_off + 1] = (uint8_t)s->pid;
        c->inflight++;
    }
    c->pubs++;
    b->st.sent++;
}

static void mqtt_slot_free(struct bench *b, struct conn *c, struct slot *s)
{
    unsigned p = (unsigned)b->o.pipeline;
    s->state = SLOT_FREE;
    c->free_q[(c->free_head + c->nfree) % p] = (uint16_t)(s - c->slots);
    c->nfree++;
    c->inflight--;
}

/* MQTT and frame: writes what is queued in obuf and, in a closed loop,
 * queues requests (the protocol's begin) while the window and the buffer
 * have room; a bounded number of rounds per call so that one fast
 * connection does not starve the loop (EPOLLOUT brings it back). */
static void obuf_pump(struct bench *b, struct conn *c)
{
    for (int round = 0; c->state == CONN_OPEN; round++) {
        if (b->o.rate <= 0 && !b->stopping && b->p->has_room(b, c)) {
            int64_t now = now_ns();
            while (b->p->has_room(b, c))
                b->p->begin(b, c, now);
        }
        if (c->ooff == c->olen) break;
        if (round == MQTT_PUMP_ROUNDS) {
            conn_set_out(b, c, true);
            return;
        }
        ssize_t n = io_send(b, c, c->obuf + c->ooff, c->olen - c->ooff);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                conn_set_out(b, c, true);
                return;
            }
            conn_lost(b, c);
            return;
        }
        b->st.bytes_sent += (uint64_t)n;
        c->ooff += (size_t)n;
    }
    if (c->state == CONN_OPEN) conn_set_out(b, c, false);
}

static void mqtt_opened(struct bench *b, struct conn *c)
{
    uint8_t *p = obuf_append(b, c, b->connect_len);
    memcpy(p, b->connect, b->connect_len);
    char n[6];
    snprintf(n, sizeof n, "%05u", (unsigned)(c - b->conns) % 100000);
    memcpy(p + b->cid_off, n, 5);
    obuf_pump(b, c);
}

/* ---- MQTT: packets in (a client-side reader: only what a server sends a publisher) ---- */

struct mqc_packet {
    unsigned type, flags;
    const uint8_t *body; /* variable header and payload */
    size_t len;
};

/* Reads a Variable Byte Integer from [p, p+n). Returns its length, 0 when
 * more bytes are needed, -1 when malformed (over 4 bytes, or an overlong
 * encoding: a trailing 0x00 continuation byte, MQTT-1.5.5-1). */
static int mqc_varint(const uint8_t *p, size_t n, uint32_t *v)
{
    uint32_t x = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= n) return 0;
        x |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0) return -1;
            *v = x;
            return (int)i + 1;
        }
    }
    return -1;
}

/* Splits the next whole packet off [p, p+n). Returns the bytes it takes, 0
 * when incomplete, -1 when malformed or longer than cap (so a packet that is
 * still incomplete with cap bytes buffered cannot happen). */
static long mqc_split(const uint8_t *p, size_t n, size_t cap, struct mqc_packet *pk)
{
    uint32_t rl;
    if (n < 2) return 0;
    int h = mqc_varint(p + 1, n - 1, &rl);
    if (h <= 0) return h;
    size_t whole = 1 + (size_t)h + rl;
    if (whole > cap) return -1;
    if (n < whole) return 0;
    pk->type = p[0] >> 4;
    pk->flags = p[0] & 0x0f;
    pk->body = p + 1 + h;
    pk->len = rl;
    return (long)whole;
}

struct mqc_connack {
    unsigned code;
    unsigned recv_max;   /* 65535 when absent */
    unsigned max_qos;    /* 2 when absent */
    uint32_t max_packet; /* 0: no limit */
};

/* The 5.0 properties in [p, p+n): picks Receive Maximum, Maximum QoS and
 * Maximum Packet Size, skips the rest by type. Returns 0, or -1 when
 * malformed (an unknown identifier, a value past the end, a zero Receive
 * Maximum, MQTT-3.2.2-?). */
static int mqc_props(const uint8_t *p, size_t n, struct mqc_connack *ca)
{
    size_t i = 0;
    while (i < n) {
        unsigned id = p[i++];
        size_t need;
        switch (id) {
        case 0x01:
        case 0x17:
        case 0x19:
        case 0x24:
        case 0x25:
        case 0x28:
        case 0x29:
        case 0x2a:
            need = 1;
            break;
        case 0x13:
        case 0x21:
        case 0x22:
        case 0x23:
            need = 2;
            break;
        case 0x02:
        case 0x11:
        case 0x18:
        case 0x27:
            need = 4;
            break;
        case 0x0b: {
            uint32_t v;
            int k = mqc_varint(p + i, n - i, &v);
            if (k <= 0) return -1;
            need = (size_t)k;
            break;
        }
        case 0x03:
        case 0x08:
        case 0x09:
        case 0x12:
        case 0x15:
        case 0x16:
        case 0x1a:
        case 0x1c:
        case 0x1f:
        case 0x26:
            if (n - i < 2) return -1;
            need = 2 + ((size_t)p[i] << 8 | p[i + 1]);
            if (id == 0x26) { /* a string pair: the second string follows */
                if (n - i < need + 2) return -1;
                need += 2 + ((size_t)p[i + need] << 8 | p[i + need + 1]);
            }
            break;
        default:
            return -1;
        }
        if (n - i < need) return -1;
        if (id == 0x21) {
            ca->recv_max = (unsigned)p[i] << 8 | p[i + 1];
            if (ca->recv_max == 0) return -1;
        } else if (id == 0x24) {
            ca->max_qos = p[i];
            if (ca->max_qos > 1) return -1;
        } else if (id == 0x27) {
            ca->max_packet = (uint32_t)p[i] << 24 | (uint32_t)p[i + 1] << 16 |
                             (uint32_t)p[i + 2] << 8 | p[i + 3];
            if (ca->max_packet == 0) return -1;
        }
        i += need;
    }
    return 0;
}

/* CONNACK (MQTT-3.2): 3.1.1 is exactly flags + return code; 5.0 adds properties. */
static int mqc_connack(const struct mqc_packet *pk, bool v5, struct mqc_connack *ca)
{
    *ca = (struct mqc_connack){.recv_max = 65535, .max_qos = 2};
    if (pk->flags || pk->len < 2 || (pk->body[0] & 0xfe)) return -1;
    ca->code = pk->body[1];
    if (!v5) return pk->len == 2 ? 0 : -1;
    if (pk->len == 2) return ca->code ? 0 : -1; /* 5.0 always has a property length */
    uint32_t plen;
    int k = mqc_varint(pk->body + 2, pk->len - 2, &plen);
    if (k <= 0 || pk->len - 2 - (size_t)k != plen) return -1;
    return mqc_props(pk->body + 2 + k, plen, ca);
}

/* PUBACK / PUBREC / PUBCOMP: packet id, then (5.0) an optional reason code
 * and properties. Returns 0 with *pid and *reason, -1 when malformed. */
static int mqc_ack(const struct mqc_packet *pk, bool v5, uint16_t *pid, unsigned *reason)
{
    if (pk->flags || pk->len < 2) return -1;
    *pid = (uint16_t)(pk->body[0] << 8 | pk->body[1]);
    *reason = 0;
    if (*pid == 0) return -1;
    if (pk->len == 2) return 0;
    if (!v5) return -1;
    *reason = pk->body[2];
    if (pk->len == 3) return 0;
    uint32_t plen;
    int k = mqc_varint(pk->body + 3, pk->len - 3, &plen);
    return k > 0 && pk->len - 3 - (size_t)k == plen ? 0 : -1;
}

/* ---- MQTT: the connection ---- */

static void mqtt_malformed(struct bench *b, struct conn *c)
{
    b->st.err_bad++;
    conn_kill(b, c, RECONNECT_DELAY_NS);
}

/* The server will not take this run's publishes: closed, never retried. */
static void mqtt_refused(struct bench *b, struct conn *c)
{
    c->refused = true;
    b->nrefused++;
    conn_kill(b, c, 0);
}

static void mqtt_on_connack(struct bench *b, struct conn *c, const struct mqc_packet *pk)
{
    struct mqc_connack ca;
    if (c->ready || mqc_connack(pk, b->o.mqtt_version == 5, &ca) < 0) {
        mqtt_malformed(b, c);
        return;
    }
    if (ca.code) {
        b->st.connack[ca.code]++;
        mqtt_refused(b, c);
        return;
    }
    if ((unsigned)b->o.qos > ca.max_qos) {
        b->st.err_max_qos++;
        mqtt_refused(b, c);
        return;
    }
    if (ca.max_packet && b->req_len > ca.max_packet) {
        b->st.err_max_packet++;
        mqtt_refused(b, c);
        return;
    }
    unsigned p = (unsigned)b->o.pipeline;
    c->window = ca.recv_max < p ? ca.recv_max : p;
    if (ca.recv_max < 65535 && (!b->st.recv_max || ca.recv_max < b->st.recv_max))
        b->st.recv_max = ca.recv_max;
    c->nfree = b->o.qos ? c->window : 0;
    c->free_head = 0;
    for (unsigned i = 0; i < p; i++) {
        c->slots[i] = (struct slot){0};
        c->free_q[i] = (uint16_t)i;
    }
    c->ready = true;
    c->ping_at = now_ns();
}

/* PUBACK (QoS 1), PUBREC then PUBCOMP (QoS 2): the slot of the packet id
 * must be waiting for exactly this packet, or the server is answering
 * something we did not send. */
static void mqtt_on_ack(struct bench *b, struct conn *c, const struct mqc_packet *pk)
{
    uint16_t pid;
    unsigned reason;
    unsigned want = pk->type == MQTT_PUBACK   ? SLOT_WAIT_ACK
                    : pk->type == MQTT_PUBREC ? SLOT_WAIT_REC
                                              : SLOT_WAIT_COMP;
    if (!c->ready || mqc_ack(pk, b->o.mqtt_version == 5, &pid, &reason) < 0) {
        mqtt_malformed(b, c);
        return;
    }
    struct slot *s = &c->slots[(pid - 1u) % c->window];
    if (s->pid != pid || s->state != want) {
        mqtt_malformed(b, c);
        return;
    }
    if (reason >= 0x80) {
        uint64_t *kind = pk->type == MQTT_PUBACK   ? b->st.puback
                         : pk->type == MQTT_PUBREC ? b->st.pubrec
                                                   : b->st.pubcomp;
        kind[reason]++;
        b->st.refused++;
        mqtt_slot_free(b, c, s);
        return;
    }
    if (pk->type == MQTT_PUBREC) {
        mqtt_ack_out(b, c, MQTT_PUBREL, 0x2, pid); /* fits: obuf keeps a reserve */
        s->state = SLOT_WAIT_COMP;
        return;
    }
    hist_record(&b->st.lat, now_ns() - s->start_ns);
    b->st.ok++;
    b->st.responses++;
    mqtt_slot_free(b, c, s);
}

static void mqtt_on_packet(struct bench *b, struct conn *c, const struct mqc_packet *pk)
{
    bool v5 = b->o.mqtt_version == 5;
    switch (pk->type) {
    case MQTT_CONNACK:
        mqtt_on_connack(b, c, pk);
        return;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBCOMP:
        if ((pk->type == MQTT_PUBACK) != (b->o.qos == 1) || b->o.qos == 0) break;
        mqtt_on_ack(b, c, pk);
        return;
    case MQTT_PINGRESP:
        if (pk->flags || pk->len || !c->ping_out) break;
        hist_record(&b->st.ping, now_ns() - c->ping_at);
        b->st.confirmed += c->ping_mark - c->confirmed;
        c->confirmed = c->ping_mark;
        c->ping_out = false;
        return;
    case MQTT_DISCONNECT:
        /* 3.1.1 servers may not send one (they just close); count it anyway */
        b->st.disconnect[v5 && pk->len ? pk->body[0] : 0]++;
        conn_kill(b, c, RECONNECT_DELAY_NS);
        return;
    default:
        break;
    }
    mqtt_malformed(b, c);
}

static void mqtt_parse(struct bench *b, struct conn *c)
{
    size_t pos = 0;
    while (c->state == CONN_OPEN) {
        struct mqc_packet pk;
        long n = mqc_split((const uint8_t *)c->rbuf + pos, c->rlen - pos, RBUF_CAP, &pk);
        if (n == 0) break;
        if (n < 0) {
            mqtt_malformed(b, c);
            return;
        }
        pos += (size_t)n;
        mqtt_on_packet(b, c, &pk);
    }
    if (c->state != CONN_OPEN) return;
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
}

/* Every 100 ms: CONNACK, ack and PINGRESP timeouts; a PINGREQ every second
 * at QoS 0 (keepalive/2 otherwise), and at the end one more at QoS 0 so that
 * the last publishes are confirmed read. */
static void mqtt_tick(struct bench *b, struct conn *c, int64_t now)
{
    if (c->state != CONN_OPEN) return;
    if (!c->ready) {
        if (now - c->opened_at > REQUEST_TIMEOUT_NS) {
            b->st.err_no_connack++;
            conn_kill(b, c, RECONNECT_DELAY_NS);
        }
        return;
    }
    bool late = c->ping_out && now - c->ping_at > REQUEST_TIMEOUT_NS;
    for (unsigned i = 0; i < (unsigned)b->o.pipeline && !late && c->inflight; i++)
        late = c->slots[i].state != SLOT_FREE && now - c->slots[i].sent_ns > REQUEST_TIMEOUT_NS;
    if (late) {
        b->st.err_timeout++;
        conn_kill(b, c, 0);
        return;
    }
    int64_t every = b->o.qos ? MQTT_KEEPALIVE_S * NS_PER_S / 2 : NS_PER_S;
    bool due = b->stopping ? b->o.qos == 0 && c->confirmed < c->pubs : now - c->ping_at >= every;
    if (!c->ping_out && due) {
        mqtt_ping(b, c, now);
        obuf_pump(b, c);
    }
}

static bool mqtt_drained(const struct bench *b, const struct conn *c)
{
    if (c->state != CONN_OPEN || !c->ready) return true;
    return c->inflight == 0 && !c->ping_out && (b->o.qos || c->confirmed == c->pubs);
}

static const struct proto proto_mqtt = {mqtt_opened, obuf_pump, mqtt_parse,   mqtt_has_room,
                                        mqtt_begin,  mqtt_tick, mqtt_drained, NULL};

/* ---- frame (docs/frame-protocol.md) ---- */

/* Derives every token's keys, builds the READING or BATCH frame every
 * connection repeats (--batch JSON payloads of exactly --payload bytes) and
 * sizes the per-connection output buffer. */
static void fr_build(struct bench *b)
{
    const struct opts *o = &b->o;
    size_t item = FRAME_VARINT_MAX + (size_t)o->payload;
    size_t cap = 1 + 2 * FRAME_VARINT_MAX + (size_t)o->batch * item;
    uint8_t *body = malloc(cap), *p = malloc(cap);
    b->keys = calloc((size_t)o->ntokens, sizeof *b->keys);
    if (!body || !p || !b->keys) {
        fprintf(stderr, "sluice-bench: out of memory for a %zu byte frame\n", cap);
        exit(1);
    }
    for (long i = 0; i < o->ntokens; i++)
        if (frame_auth_derive(o->tokens[i], strlen(o->tokens[i]), &b->keys[i])) {
            fprintf(stderr, "sluice-bench: wolfCrypt cannot derive the frame keys\n");
            exit(1);
        }
    if (wc_InitRng(&b->rng)) {
        fprintf(stderr, "sluice-bench: wolfCrypt: no random generator for the nonces\n");
        exit(1);
    }
    size_t n = 0;
    if (o->batch == 1) {
        mqc_payload(body, o->payload);
        n = frame_encode_reading(p, cap, body, (size_t)o->payload);
    } else { /* BATCH: count, then count x (len, payload) */
        size_t blen = frame_put_varint(body, (uint64_t)o->batch);
        for (long i = 0; i < o->batch; i++) {
            blen += frame_put_varint(body + blen, (uint64_t)o->payload);
            mqc_payload(body + blen, o->payload);
            blen += (size_t)o->payload;
        }
        p[n++] = FRAME_BATCH;
        n += frame_put_varint(p + n, blen);
        memcpy(p + n, body, blen);
        n += blen;
    }
    free(body);
    b->req = (char *)p;
    b->req_len = n;
    /* frames a send() carries, at most the window's; kept free: a PROOF and PONGs */
    size_t k = n < MQTT_OBUF_FILL ? MQTT_OBUF_FILL / n : 1;
    size_t frames = (size_t)(o->pipeline / o->batch);
    if (k > frames) k = frames;
    b->reserve = 2 + FRAME_MAC_LEN + 64;
    b->obuf_cap = 64 + (k ? k : 1) * n + b->reserve;
}

/* The server will not take this connection's readings (auth, version, a
 * protocol error, a signature or limit we cannot live with): counted,
 * closed, never retried. What was in flight is refused with it. */
static void fr_refused(struct bench *b, struct conn *c)
{
    b->st.refused += c->fsent - c->facked;
    c->refused = true;
    b->nrefused++;
    conn_kill(b, c, 0);
}

static void fr_malformed(struct bench *b, struct conn *c)
{
    b->st.err_bad++;
    conn_kill(b, c, RECONNECT_DELAY_NS);
}

static void fr_opened(struct bench *b, struct conn *c)
{
    const struct frame_keys *k = &b->keys[c - b->conns];
    uint8_t nonce[FRAME_NONCE_LEN];
    if (wc_RNG_GenerateBlock(&b->rng, nonce, sizeof nonce)) {
        fprintf(stderr, "\nsluice-bench: wolfCrypt: the random generator failed\n");
        exit(1);
    }
    /* next_seq 0: a device without stored state; its readings are numbered
     * after the server's high-water mark, which WELCOME says */
    c->hello_len = frame_encode_hello(c->auth, sizeof c->auth, k->token_id, nonce, 0, NULL, 0);
    c->auth_len = c->hello_len;
    memcpy(obuf_append(b, c, c->hello_len), c->auth, c->hello_len);
    c->phase = FR_HELLO;
    c->window = (unsigned)b->o.pipeline;
    obuf_pump(b, c);
}

static bool fr_has_room(const struct bench *b, const struct conn *c)
{
    /* readings may follow PROOF at once, without waiting for WELCOME (§3) */
    if (c->state != CONN_OPEN || c->phase == FR_HELLO) return false;
    if (c->fsent - c->facked + (uint64_t)b->o.batch > c->window) return false;
    return (c->olen - c->ooff) + b->req_len + b->reserve <= b->obuf_cap;
}

/* Queues one READING / BATCH frame whose readings' latency counts from start_ns. */
static void fr_begin(struct bench *b, struct conn *c, int64_t start_ns)
{
    memcpy(obuf_append(b, c, b->req_len), b->req, b->req_len);
    c->fsent += (uint64_t)b->o.batch;
    struct fr_out *f = &c->fring[(c->fhead + c->fcount++) % c->fcap];
    f->start_ns = start_ns;
    f->sent_ns = now_ns();
    f->end = c->fsent;
    b->st.sent += (uint64_t)b->o.batch;
}

/* CHALLENGE: AuthMessage = HELLO || CHALLENGE; the proof is ClientKey XOR
 * HMAC(StoredKey, AuthMessage). */
static void fr_on_challenge(struct bench *b, struct conn *c, const uint8_t *raw, size_t total)
{
    const struct frame_keys *k = &b->keys[c - b->conns];
    uint8_t proof[FRAME_MAC_LEN];
    if (c->auth_len + total + 2 + FRAME_MAC_LEN > sizeof c->auth) {
        fr_malformed(b, c);
        return;
    }
    memcpy(c->auth + c->auth_len, raw, total);
    c->auth_len += total;
    if (frame_auth_proof(k, c->auth, c->auth_len, proof)) {
        fprintf(stderr, "\nsluice-bench: wolfCrypt: HMAC-SHA-256 failed\n");
        exit(1);
    }
    size_t n = frame_encode_proof(c->auth + c->auth_len, sizeof c->auth - c->auth_len, proof);
    memcpy(obuf_append(b, c, n), c->auth + c->auth_len, n);
    c->auth_len += n;
    c->phase = FR_PROOF;
}

/* WELCOME: the server signature must be HMAC(ServerKey, AuthMessage || PROOF);
 * its durable_seq is the base our readings are numbered from. */
static void fr_on_welcome(struct bench *b, struct conn *c, const struct frame *f)
{
    const struct frame_keys *k = &b->keys[c - b->conns];
    uint8_t want[FRAME_MAC_LEN];
    if (frame_auth_server_signature(k->server_key, c->auth, c->auth_len, want)) {
        fprintf(stderr, "\nsluice-bench: wolfCrypt: HMAC-SHA-256 failed\n");
        exit(1);
    }
    if (memcmp(want, f->u.welcome.server_signature, FRAME_MAC_LEN)) {
        if (!b->st.err_signature++)
            fprintf(stderr, "\nsluice-bench: the server's signature in WELCOME is wrong: it "
                            "does not know this token's ServerKey\n");
        fr_refused(b, c);
        return;
    }
    uint64_t w = f->u.welcome.window;
    if (w < (uint64_t)b->o.batch) {
        b->st.err_window++;
        fr_refused(b, c);
        return;
    }
    if (f->u.welcome.max_frame < b->req_len) {
        b->st.err_max_frame++;
        fr_refused(b, c);
        return;
    }
    if (w < c->window) c->window = (unsigned)w;
    if (w < UINT32_MAX && (!b->st.min_window || w < b->st.min_window))
        b->st.min_window = (unsigned)w;
    c->base = f->u.welcome.durable_seq;
    c->phase = FR_LIVE;
    b->st.welcomed++;
    hist_record(&b->st.hs, now_ns() - c->opened_at);
}

/* ACK durable_seq: every frame it covers is done; each of its readings' latency is recorded. */
static void fr_on_ack(struct bench *b, struct conn *c, uint64_t seq)
{
    if (seq < c->base + c->facked) { /* an ACK never goes back */
        fr_malformed(b, c);
        return;
    }
    uint64_t done = seq - c->base;
    if (done > c->fsent) { /* acknowledges readings we never sent */
        fr_malformed(b, c);
        return;
    }
    int64_t now = now_ns();
    b->st.ok += done - c->facked;
    b->st.responses += done - c->facked;
    c->facked = done;
    while (c->fcount && c->fring[c->fhead].end <= done) {
        hist_add(&b->st.lat, now - c->fring[c->fhead].start_ns, (uint64_t)b->o.batch);
        c->fhead = (c->fhead + 1) % c->fcap;
        c->fcount--;
    }
}

/* ERROR: counted by code. Its seq names the first reading not stored (0:
 * none): from there on this connection's readings are refused, not merely
 * unacknowledged. Quota and storage: the device comes back a second later;
 * taken over, shutting down, timeouts: at once; the rest (version, auth, too
 * large, protocol) would fail again, so the connection is not retried, and
 * what it had in flight is refused with it. */
static void fr_on_error(struct bench *b, struct conn *c, const struct frame *f)
{
    uint8_t code = f->u.error.code;
    uint64_t from = f->u.error.seq;
    b->st.ferror[code]++;
    if (b->st.ferror[code] == 1)
        fprintf(stderr, "\nsluice-bench: ERROR 0x%02x from the server: %.*s\n", code,
                (int)f->u.error.message.n, (const char *)f->u.error.message.p);
    /* Welcomed: readings before `from` may be durable without their ACK
     * (they stay unacknowledged), those from it on are refused; nothing is
     * left in flight for fr_refused. Before WELCOME the server discards what
     * came after PROOF, and fr_refused refuses it all. */
    if (c->phase == FR_LIVE) {
        if (from > c->base && from - c->base - 1 < c->fsent) {
            uint64_t k = from - c->base - 1 > c->facked ? from - c->base - 1 : c->facked;
            b->st.refused += c->fsent - k;
        }
        c->facked = c->fsent;
    }
    switch (code) {
    case -FRAME_E_QUOTA:
    case -FRAME_E_STORAGE:
        conn_kill(b, c, NS_PER_S);
        return;
    case -FRAME_E_TAKEN:
    case -FRAME_E_SHUTDOWN:
    case -FRAME_E_TIMEOUT:
        conn_kill(b, c, RECONNECT_DELAY_NS);
        return;
    default:
        fr_refused(b, c);
        return;
    }
}

static void fr_on_frame(struct bench *b, struct conn *c, const uint8_t *raw, const struct frame *f)
{
    switch (f->type) {
    case FRAME_CHALLENGE:
        if (c->phase != FR_HELLO) break;
        fr_on_challenge(b, c, raw, f->total);
        return;
    case FRAME_WELCOME:
        if (c->phase != FR_PROOF) break;
        fr_on_welcome(b, c, f);
        return;
    case FRAME_ACK:
        if (c->phase != FR_LIVE) break;
        fr_on_ack(b, c, f->u.num.value);
        return;
    case FRAME_PING:
        if ((c->olen - c->ooff) + 2 <= b->obuf_cap) /* else the next PING gets one */
            frame_encode_empty(obuf_append(b, c, 2), 2, FRAME_PONG);
        return;
    case FRAME_PONG:
        return;
    case FRAME_ERROR:
        fr_on_error(b, c, f);
        return;
    default:
        break;
    }
    fr_malformed(b, c); /* a device's frame, or one out of order */
}

static void fr_parse(struct bench *b, struct conn *c)
{
    size_t pos = 0;
    const uint8_t *in = (const uint8_t *)c->rbuf;
    while (c->state == CONN_OPEN && pos < c->rlen) {
        uint8_t type;
        size_t total;
        int rc = frame_peek(in + pos, c->rlen - pos, &type, &total);
        if (rc == FRAME_INCOMPLETE) break;
        struct frame f;
        if (rc < 0 || total > RBUF_CAP ||
            (c->rlen - pos >= total && frame_parse(in + pos, total, &f) < 0)) {
            fr_malformed(b, c);
            return;
        }
        if (c->rlen - pos < total) break;
        fr_on_frame(b, c, in + pos, &f);
        pos += total;
    }
    if (c->state != CONN_OPEN) return;
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
}

/* Every 100 ms: the handshake and the oldest frame in flight must be
 * answered within REQUEST_TIMEOUT_NS. */
static void fr_tick(struct bench *b, struct conn *c, int64_t now)
{
    if (c->state != CONN_OPEN) return;
    if (c->phase != FR_LIVE && now - c->opened_at > REQUEST_TIMEOUT_NS) {
        b->st.err_no_welcome++;
        conn_kill(b, c, RECONNECT_DELAY_NS);
        return;
    }
    if (c->fcount && now - c->fring[c->fhead].sent_ns > REQUEST_TIMEOUT_NS) {
        b->st.err_timeout++;
        conn_kill(b, c, 0);
    }
}

static bool fr_drained(const struct bench *b, const struct conn *c)
{
    (void)b;
    return c->state != CONN_OPEN || c->fsent == c->facked;
}

static const struct proto proto_frame = {fr_opened, obuf_pump, fr_parse,   fr_has_room,
                                         fr_begin,  fr_tick,   fr_drained, NULL};

/* ---- frame over UDP (docs/frame-protocol.md §6) ---- */

/* The wait before the oldest datagram in flight goes again: 2 smoothed RTTs,
 * at least UDP_RTO_MIN_NS, doubling with each timeout that brought no ACK
 * forward, at most UDP_RTO_MAX_NS. */
static int64_t udp_rto(const struct conn *c)
{
    int64_t rto = 2 * c->srtt < UDP_RTO_MIN_NS ? UDP_RTO_MIN_NS : 2 * c->srtt;
    for (unsigned i = 0; i < c->backoff && rto < UDP_RTO_MAX_NS; i++)
        rto *= 2;
    return rto < UDP_RTO_MAX_NS ? rto : UDP_RTO_MAX_NS;
}

/* An ICMP port unreachable (ECONNREFUSED on a connected UDP socket): nothing
 * listens. Counted as "connect"; the device comes back after
 * RECONNECT_DELAY_NS with what it holds. */
static void udp_unreachable(struct bench *b, struct conn *c)
{
    b->last_connect_errno = ECONNREFUSED;
    b->st.err_connect++;
    conn_kill(b, c, RECONNECT_DELAY_NS);
}

/* Sends one datagram on c's connected socket. Returns 0, or -1 with errno:
 * EAGAIN when the socket buffer is full (ENOBUFS, which loopback also gives,
 * is taken for it), ECONNREFUSED after udp_unreachable closed c, else the
 * kernel's. */
static int udp_send(struct bench *b, struct conn *c, const void *p, size_t n)
{
    ssize_t r = send(c->fd, p, n, MSG_DONTWAIT);
    if (r == (ssize_t)n) {
        b->st.bytes_sent += n;
        return 0;
    }
    if (r >= 0 || errno == ENOBUFS || errno == EINTR) errno = EAGAIN;
    if (errno == ECONNREFUSED) udp_unreachable(b, c);
    return -1;
}

/* Handshake step 1 (phase FR_HELLO) or 3 (FR_PROOF): 00x8 then the frames so
 * far, HELLO or HELLO | CHALLENGE | PROOF (c->auth). A datagram the socket
 * could not take goes with the next retry. */
static void udp_handshake_send(struct bench *b, struct conn *c)
{
    uint8_t d[UDP_SID_LEN + sizeof c->auth];
    size_t n = c->phase == FR_HELLO ? c->hello_len : c->auth_len;
    memset(d, 0, UDP_SID_LEN);
    memcpy(d + UDP_SID_LEN, c->auth, n);
    c->hs_at = now_ns();
    udp_send(b, c, d, UDP_SID_LEN + n);
}

/* A new handshake (a new socket, or the same one after UDP_SILENT_RESENDS
 * unanswered resends): HELLO with next_seq 0 the first time (a device without
 * stored state: WELCOME's durable_seq numbers the readings), afterwards the
 * oldest reading not acknowledged, so that what the device holds keeps its
 * numbers; it all goes again under the new session. */
static void udp_opened(struct bench *b, struct conn *c)
{
    const struct frame_keys *k = &b->keys[c - b->conns];
    uint8_t nonce[FRAME_NONCE_LEN];
    if (wc_RNG_GenerateBlock(&b->rng, nonce, sizeof nonce)) {
        fprintf(stderr, "\nsluice-bench: wolfCrypt: the random generator failed\n");
        exit(1);
    }
    uint64_t next = c->welcomed ? c->base + c->facked + 1 : 0;
    c->hello_len = frame_encode_hello(c->auth, sizeof c->auth, k->token_id, nonce, next, NULL, 0);
    c->auth_len = c->hello_len;
    c->phase = FR_HELLO;
    c->window = (unsigned)b->o.pipeline;
    c->fnext = 0;
    c->udseq = 0;
    c->unanswered = 0;
    c->backoff = 0;
    c->hs_start = now_ns();
    c->hs_rto = UDP_HS_RETRY_NS;
    udp_handshake_send(b, c);
}

static bool udp_has_room(const struct bench *b, const struct conn *c)
{
    return c->state == CONN_OPEN && c->phase == FR_LIVE && c->fcount < c->fcap &&
           c->fsent - c->facked + (uint64_t)b->o.batch <= c->window;
}

/* Queues one datagram of --batch readings; udp_pump sends it. */
static void udp_begin(struct bench *b, struct conn *c, int64_t start_ns)
{
    struct fr_out *f = &c->fring[(c->fhead + c->fcount++) % c->fcap];
    f->start_ns = start_ns;
    f->sent_ns = 0;
    f->first = c->fsent;
    c->fsent += (uint64_t)b->o.batch;
    f->end = c->fsent;
    f->sends = 0;
    b->st.sent += (uint64_t)b->o.batch;
}

/* Sends the datagrams of the current pass not sent yet (after a timeout the
 * pass starts again at the oldest: go-back-N) and, in a closed loop, queues
 * new ones while the window has room; a bounded number per call so that one
 * device does not starve the loop (EPOLLOUT, always ready on a UDP socket
 * with room, brings it back). Each datagram: session_id | dgram_seq | SEQ
 * (its first reading's number) | the READING or BATCH frame | mac8. */
static void udp_pump(struct bench *b, struct conn *c)
{
    uint8_t d[UDP_DGRAM_MAX];
    for (int k = 0; c->state == CONN_OPEN && c->phase == FR_LIVE; k++) {
        if (b->o.rate <= 0 && !b->stopping && udp_has_room(b, c)) {
            int64_t now = now_ns();
            while (udp_has_room(b, c))
                udp_begin(b, c, now);
        }
        if (c->fnext == c->fcount) break;
        if (k == UDP_PUMP_DGRAMS) {
            conn_set_out(b, c, true);
            return;
        }
        struct fr_out *f = &c->fring[(c->fhead + c->fnext) % c->fcap];
        memcpy(d, c->usid, UDP_SID_LEN);
        size_t h = UDP_SID_LEN + frame_put_varint(d + UDP_SID_LEN, c->udseq + 1);
        size_t n = h + frame_encode_num(d + h, sizeof d - h, FRAME_SEQ, c->base + f->first + 1);
        memcpy(d + n, b->req, b->req_len); /* fits: parse_args checked UDP_OVERHEAD */
        n += b->req_len;
        if (frame_auth_udp_mac(c->ukey, 0, d, h, d + h, n - h, d + n)) {
            fprintf(stderr, "\nsluice-bench: wolfCrypt: HMAC-SHA-256 failed\n");
            exit(1);
        }
        if (udp_send(b, c, d, n + UDP_MAC_LEN) < 0) {
            if (errno == EAGAIN)
                conn_set_out(b, c, true);
            else if (c->state == CONN_OPEN)
                conn_kill(b, c, RECONNECT_DELAY_NS);
            return;
        }
        c->udseq++;
        b->st.dgrams++;
        f->sends++;
        f->sent_ns = now_ns();
        c->fnext++;
    }
    if (c->state == CONN_OPEN) conn_set_out(b, c, false);
}

/* ACK durable_seq (or a later WELCOME's): the readings it covers are done,
 * each one's latency recorded, a datagram's part at a time (the server may
 * store a datagram's readings only in part: its window, a full batch). An
 * older ACK is one UDP reordered; one beyond what was sent is malformed. */
static void udp_on_ack(struct bench *b, struct conn *c, uint64_t seq)
{
    if (seq <= c->base + c->facked) return;
    uint64_t done = seq - c->base;
    if (done > c->fsent) {
        b->st.err_bad++;
        return;
    }
    int64_t now = now_ns(), sample = 0;
    while (c->fcount) {
        struct fr_out *f = &c->fring[c->fhead];
        uint64_t from = f->first > c->facked ? f->first : c->facked;
        uint64_t to = f->end < done ? f->end : done;
        if (to > from) hist_add(&b->st.lat, now - f->start_ns, to - from);
        if (f->end > done) break;
        if (f->sends == 1) sample = now - f->sent_ns;
        c->fhead = (c->fhead + 1) % c->fcap;
        c->fcount--;
        if (c->fnext) c->fnext--;
    }
    b->st.ok += done - c->facked;
    b->st.responses += done - c->facked;
    c->facked = done;
    c->backoff = 0;
    if (sample) c->srtt = c->srtt ? (7 * c->srtt + sample) / 8 : sample;
}

/* ERROR, in a handshake or a session datagram: counted by code. Quota and
 * storage (also a server out of sessions): a new handshake a second later;
 * taken over, shutting down, timeouts: after RECONNECT_DELAY_NS; either way
 * with every reading not acknowledged kept and sent again. The rest
 * (version, auth, too large, protocol) would fail again: the device is done,
 * its readings from the ERROR's seq on refused (those before it may be
 * durable without their ACK: unacknowledged). */
static void udp_on_error(struct bench *b, struct conn *c, const struct frame *f)
{
    uint8_t code = f->u.error.code;
    uint64_t from = f->u.error.seq;
    if (!b->st.ferror[code]++)
        fprintf(stderr, "\nsluice-bench: ERROR 0x%02x from the server: %.*s\n", code,
                (int)f->u.error.message.n, (const char *)f->u.error.message.p);
    switch (code) {
    case -FRAME_E_QUOTA:
    case -FRAME_E_STORAGE:
        conn_kill(b, c, NS_PER_S);
        return;
    case -FRAME_E_TAKEN:
    case -FRAME_E_SHUTDOWN:
    case -FRAME_E_TIMEOUT:
        conn_kill(b, c, RECONNECT_DELAY_NS);
        return;
    default:
        break;
    }
    uint64_t kept = c->facked;
    if (c->welcomed && from > c->base + c->facked)
        kept = from - c->base - 1 < c->fsent ? from - c->base - 1 : c->fsent;
    b->st.refused += c->fsent - kept;
    c->facked = c->fsent; /* nothing left to await: the rest stays unacknowledged */
    c->refused = true;
    b->nrefused++;
    conn_kill(b, c, 0);
}

/* CHALLENGE: the proof over HELLO || CHALLENGE, then step 3, HELLO |
 * CHALLENGE | PROOF in one datagram (the server keeps nothing between). The
 * first answer of the run starts the --rate schedule; a device's first
 * answer gives its first RTT. */
static void udp_on_challenge(struct bench *b, struct conn *c, const uint8_t *raw, size_t total)
{
    const struct frame_keys *k = &b->keys[c - b->conns];
    int64_t now = now_ns();
    if (!b->ever_connected) {
        b->t0 = now;
        b->ever_connected = true;
    }
    if (!c->srtt && c->hs_rto == UDP_HS_RETRY_NS) c->srtt = now - c->hs_at;
    uint8_t proof[FRAME_MAC_LEN];
    if (c->auth_len + total + 2 + FRAME_MAC_LEN > sizeof c->auth) {
        b->st.err_bad++;
        return;
    }
    memcpy(c->auth + c->auth_len, raw, total);
    c->auth_len += total;
    if (frame_auth_proof(k, c->auth, c->auth_len, proof)) {
        fprintf(stderr, "\nsluice-bench: wolfCrypt: HMAC-SHA-256 failed\n");
        exit(1);
    }
    c->auth_len += frame_encode_proof(c->auth + c->auth_len, sizeof c->auth - c->auth_len, proof);
    c->phase = FR_PROOF;
    c->hs_rto = UDP_HS_RETRY_NS;
    udp_handshake_send(b, c);
}

/* WELCOME: signed with the token's ServerKey over HELLO | CHALLENGE | PROOF;
 * the session key and id follow from the same bytes. The first one's
 * durable_seq is the base the device's readings are numbered from; a later
 * one's acknowledges (it is final) what the device still held. */
static void udp_on_welcome(struct bench *b, struct conn *c, const struct frame *f)
{
    const struct frame_keys *k = &b->keys[c - b->conns];
    uint8_t want[FRAME_MAC_LEN];
    if (frame_auth_server_signature(k->server_key, c->auth, c->auth_len, want) ||
        frame_auth_session_key(k->client_key, c->auth, c->auth_len, c->ukey, c->usid)) {
        fprintf(stderr, "\nsluice-bench: wolfCrypt: HMAC-SHA-256 failed\n");
        exit(1);
    }
    uint64_t w = f->u.welcome.window, durable = f->u.welcome.durable_seq;
    uint64_t *why = NULL;
    if (memcmp(want, f->u.welcome.server_signature, FRAME_MAC_LEN)) {
        if (!b->st.err_signature)
            fprintf(stderr, "\nsluice-bench: the server's signature in WELCOME is wrong: it "
                            "does not know this token's ServerKey\n");
        why = &b->st.err_signature;
    } else if (w < (uint64_t)b->o.batch) {
        why = &b->st.err_window;
    } else if (f->u.welcome.max_frame < UDP_OVERHEAD + b->req_len) {
        why = &b->st.err_max_frame;
    } else if (c->welcomed && (durable < c->base + c->facked || durable > c->base + c->fsent)) {
        why = &b->st.err_bad; /* it forgot readings it acknowledged, or has some we never sent */
    }
    if (why) {
        (*why)++;
        b->st.refused += c->fsent - c->facked;
        c->facked = c->fsent;
        c->refused = true;
        b->nrefused++;
        conn_kill(b, c, 0);
        return;
    }
    if (w < c->window) c->window = (unsigned)w;
    if (w < UINT32_MAX && (!b->st.min_window || w < b->st.min_window))
        b->st.min_window = (unsigned)w;
    if (!c->welcomed) c->base = durable;
    c->welcomed = true;
    c->phase = FR_LIVE;
    c->udseq = 0;
    c->fnext = 0;
    b->st.welcomed++;
    hist_record(&b->st.hs, now_ns() - c->hs_start);
    udp_on_ack(b, c, durable);
    udp_pump(b, c);
}

/* A handshake answer (session_id 00x8): one frame, for the step we are at;
 * a late answer to a step repeated (a second CHALLENGE, WELCOME) is dropped. */
static void udp_on_handshake(struct bench *b, struct conn *c, const uint8_t *p, size_t n)
{
    uint8_t type;
    size_t total;
    struct frame f;
    if (frame_peek(p, n, &type, &total) || total != n || frame_parse(p, n, &f) < 0) {
        b->st.err_bad++;
        return;
    }
    if (f.type == FRAME_CHALLENGE && c->phase == FR_HELLO)
        udp_on_challenge(b, c, p, total);
    else if (f.type == FRAME_WELCOME && c->phase == FR_PROOF)
        udp_on_welcome(b, c, &f);
    else if (f.type == FRAME_ERROR && c->phase != FR_LIVE)
        udp_on_error(b, c, &f);
    else if (f.type != FRAME_CHALLENGE && f.type != FRAME_WELCOME && f.type != FRAME_ERROR)
        b->st.err_bad++;
}

/* A session datagram: ours only when it names this session and its MAC (from
 * the server, direction 1) verifies; an older session's are dropped. Its
 * frames: ACKs, PONG, ERROR. */
static void udp_on_session(struct bench *b, struct conn *c, const uint8_t *p, size_t n)
{
    if (c->phase != FR_LIVE || n < UDP_SID_LEN + 1 + UDP_MAC_LEN || memcmp(p, c->usid, UDP_SID_LEN))
        return;
    uint64_t dseq;
    int vl = frame_varint(p + UDP_SID_LEN, n - UDP_SID_LEN - UDP_MAC_LEN, &dseq);
    uint8_t mac[UDP_MAC_LEN];
    size_t h = UDP_SID_LEN + (size_t)(vl > 0 ? vl : 0);
    if (vl <= 0 || frame_auth_udp_mac(c->ukey, 1, p, h, p + h, n - h - UDP_MAC_LEN, mac) ||
        memcmp(mac, p + n - UDP_MAC_LEN, UDP_MAC_LEN)) {
        b->st.err_bad++;
        return;
    }
    c->unanswered = 0;
    b->st.dgrams_in++;
    const uint8_t *body = p + h;
    size_t bn = n - h - UDP_MAC_LEN, off = 0;
    while (off < bn && c->state == CONN_OPEN && c->phase == FR_LIVE) {
        uint8_t type;
        size_t total;
        struct frame f;
        if (frame_peek(body + off, bn - off, &type, &total) || total > bn - off ||
            frame_parse(body + off, total, &f) < 0) {
            b->st.err_bad++;
            return;
        }
        off += total;
        if (f.type == FRAME_ACK)
            udp_on_ack(b, c, f.u.num.value);
        else if (f.type == FRAME_ERROR)
            udp_on_error(b, c, &f);
        else if (f.type != FRAME_PONG)
            b->st.err_bad++;
    }
    if (c->state == CONN_OPEN) udp_pump(b, c); /* an ACK opened the window */
}

/* Readable: up to UDP_RECV_DGRAMS datagrams (level-triggered epoll brings
 * the rest). An ICMP port unreachable shows here as ECONNREFUSED. */
static void udp_recv(struct bench *b, struct conn *c)
{
    static const uint8_t zero[UDP_SID_LEN];
    for (int i = 0; i < UDP_RECV_DGRAMS && c->state == CONN_OPEN; i++) {
        ssize_t n = recv(c->fd, c->rbuf, RBUF_CAP, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return;
            if (errno == ECONNREFUSED) {
                udp_unreachable(b, c);
            } else {
                b->st.err_reset++;
                conn_kill(b, c, RECONNECT_DELAY_NS);
            }
            return;
        }
        if (n > RBUF_CAP) { /* truncated: no server datagram is that long */
            b->st.err_bad++;
            continue;
        }
        const uint8_t *p = (const uint8_t *)c->rbuf;
        if ((size_t)n > UDP_SID_LEN && !memcmp(p, zero, UDP_SID_LEN))
            udp_on_handshake(b, c, p + UDP_SID_LEN, (size_t)n - UDP_SID_LEN);
        else
            udp_on_session(b, c, p, (size_t)n);
    }
}

/* Every 100 ms: a handshake step unanswered within hs_rto goes again, and
 * one without WELCOME within REQUEST_TIMEOUT_NS starts over ("no_welcome");
 * the oldest datagram unacknowledged past the RTO sends the whole window
 * again from it (go-back-N), and after UDP_SILENT_RESENDS such resends
 * without any answer, a new handshake (the server may have restarted: it
 * then knows no session, and answers none). */
static void udp_tick(struct bench *b, struct conn *c, int64_t now)
{
    if (c->state != CONN_OPEN) return;
    if (c->phase != FR_LIVE) {
        if (now - c->hs_start > REQUEST_TIMEOUT_NS) {
            b->st.err_no_welcome++;
            conn_kill(b, c, RECONNECT_DELAY_NS);
        } else if (now - c->hs_at >= c->hs_rto) {
            c->hs_rto *= 2;
            udp_handshake_send(b, c);
        }
        return;
    }
    if (!c->fnext || now - c->fring[c->fhead].sent_ns < udp_rto(c)) return;
    if (c->unanswered >= UDP_SILENT_RESENDS) {
        b->st.rehandshakes++;
        udp_opened(b, c);
        return;
    }
    for (unsigned i = 0; i < c->fnext; i++) {
        const struct fr_out *f = &c->fring[(c->fhead + i) % c->fcap];
        b->st.resent += f->end - (f->first > c->facked ? f->first : c->facked);
    }
    b->st.resend_rounds++;
    c->unanswered++;
    c->backoff++;
    c->fnext = 0;
    udp_pump(b, c);
}

static bool udp_drained(const struct bench *b, const struct conn *c)
{
    (void)b;
    return c->state != CONN_OPEN || c->fsent == c->facked;
}

/* The end: BYE in the session (the server acks what it has and forgets it),
 * not awaited. */
static void udp_bye(struct bench *b, struct conn *c)
{
    uint8_t d[UDP_SID_LEN + FRAME_VARINT_MAX + 2 + UDP_MAC_LEN];
    if (c->state != CONN_OPEN || c->phase != FR_LIVE) return;
    memcpy(d, c->usid, UDP_SID_LEN);
    size_t h = UDP_SID_LEN + frame_put_varint(d + UDP_SID_LEN, ++c->udseq);
    size_t n = h + frame_encode_empty(d + h, sizeof d - h, FRAME_BYE);
    if (frame_auth_udp_mac(c->ukey, 0, d, h, d + h, n - h, d + n)) return;
    udp_send(b, c, d, n + UDP_MAC_LEN);
}

static const struct proto proto_udp = {udp_opened, udp_pump, NULL,        udp_has_room,
                                       udp_begin,  udp_tick, udp_drained, udp_recv};

/* ---- connections (shared) ---- */

static void conn_set_out(struct bench *b, struct conn *c, bool want)
{
    if (c->want_out == want) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(b->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

/* Starts a non-blocking connect; a failure counts as "connect" and retries later. */
static void conn_open(struct bench *b, struct conn *c)
{
    const struct addrinfo *ai = b->ai;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        fprintf(stderr, "\nsluice-bench: socket: %s\n", strerror(errno));
        exit(1);
    }
    int one = 1;
    if (ai->ai_socktype == SOCK_STREAM) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = CONN_CONNECTING;
    c->want_out = true;
    c->inflight = 0;
    c->rlen = 0;
    c->sending = false;
    c->head = 0;
    c->body_left = 0;
    c->close_after = false;
    c->ready = false;
    c->ping_out = false;
    c->nfree = 0;
    c->pubs = c->ping_mark = c->confirmed = 0;
    c->ooff = c->olen = 0;
    c->phase = FR_HELLO;
    c->auth_len = c->hello_len = 0;
    if (b->o.mode != MODE_UDP) { /* a UDP device keeps what it holds for the new handshake */
        c->base = c->fsent = c->facked = 0;
        c->fhead = c->fcount = 0;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(b->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fprintf(stderr, "\nsluice-bench: epoll_ctl: %s\n", strerror(errno));
        exit(1);
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        b->last_connect_errno = errno;
        b->st.err_connect++;
        conn_kill(b, c, RECONNECT_DELAY_NS);
    }
}

/* Closes c and queues it for a reconnect after delay_ns (unless its CONNECT
 * was refused). Safe inside c's own event handler: the slot is reused only
 * after the current batch of events (see reconnect_due), and events still
 * queued for it see CONN_DEAD. */
static void conn_kill(struct bench *b, struct conn *c, int64_t delay_ns)
{
    if (c->state == CONN_DEAD) return;
    if (c->ssl) {
        wolfSSL_free(c->ssl);
        c->ssl = NULL;
    }
    c->handshaking = false;
    c->tls_retry = 0;
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = CONN_DEAD;
    c->reconnect_at = now_ns() + delay_ns;
    if (!c->pending && !c->refused) {
        c->pending = true;
        b->pending[b->npending++] = (unsigned)(c - b->conns);
    }
}

/* Peer closed or reset. HTTP: only an error while requests were outstanding;
 * MQTT: always (a broker does not close a healthy session), "no_connack"
 * when it happens before the CONNACK; frame: the same, "no_welcome" before
 * the WELCOME (a close without an ERROR frame). */
static void conn_lost(struct bench *b, struct conn *c)
{
    if (b->o.mode == MODE_FRAME) {
        if (c->phase != FR_LIVE)
            b->st.err_no_welcome++;
        else
            b->st.err_reset++;
        conn_kill(b, c, RECONNECT_DELAY_NS);
        return;
    }
    if (b->o.mode == MODE_MQTT) {
        if (!c->ready) {
            b->st.err_no_connack++;
            conn_kill(b, c, RECONNECT_DELAY_NS);
            return;
        }
        b->st.err_reset++;
    } else if (c->inflight > 0 || c->sending) {
        b->st.err_reset++;
    }
    conn_kill(b, c, 0);
}

/* The connection (TCP, then TLS when on) is up: the protocol starts. */
static void conn_ready(struct bench *b, struct conn *c)
{
    c->state = CONN_OPEN;
    c->opened_at = now_ns();
    if (b->o.mode != MODE_UDP) { /* UDP: "connected" once the server answers (a CHALLENGE) */
        if (!b->ever_connected) b->t0 = c->opened_at; /* --rate: the schedule starts here */
        b->ever_connected = true;
    }
    b->p->opened(b, c);
}

static void tls_handshake(struct bench *b, struct conn *c)
{
    int r = wolfSSL_connect(c->ssl);
    if (r == WOLFSSL_SUCCESS) {
        c->handshaking = false;
        b->st.handshakes++;
        if (wolfSSL_session_reused(c->ssl)) b->st.resumed++;
        if (b->o.resume) {
            if (c->sess) wolfSSL_SESSION_free(c->sess);
            c->sess = wolfSSL_get1_session(c->ssl);
        }
        conn_set_out(b, c, true); /* the request goes out at once */
        conn_ready(b, c);
        return;
    }
    int e = wolfSSL_get_error(c->ssl, r);
    if (e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE) {
        conn_set_out(b, c, e == WOLFSSL_ERROR_WANT_WRITE);
        return;
    }
    char why[WOLFSSL_MAX_ERROR_SZ];
    wolfSSL_ERR_error_string_n((unsigned long)e, why, sizeof why);
    if (!b->st.err_tls++) fprintf(stderr, "\nsluice-bench: TLS handshake failed: %s\n", why);
    conn_kill(b, c, RECONNECT_DELAY_NS);
}

static void conn_event(struct bench *b, struct conn *c, uint32_t events)
{
    if (c->state == CONN_DEAD) return; /* closed earlier in this batch */
    if (c->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            b->last_connect_errno = err ? err : ECONNRESET;
            b->st.err_connect++;
            conn_kill(b, c, RECONNECT_DELAY_NS);
            return;
        }
        if (!(events & EPOLLOUT)) return;
        if (b->tls) {
            if (!(c->ssl = wolfSSL_new(b->tls)) ||
                wolfSSL_set_fd(c->ssl, c->fd) != WOLFSSL_SUCCESS) {
                fprintf(stderr, "\nsluice-bench: out of memory for a TLS session\n");
                exit(1);
            }
            if (c->sess) wolfSSL_set_session(c->ssl, c->sess);
            c->state = CONN_OPEN;
            c->handshaking = true;
            tls_handshake(b, c);
            return;
        }
        conn_ready(b, c);
        return;
    }
    if (c->handshaking) {
        tls_handshake(b, c);
        return;
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && b->p->recv) {
        b->p->recv(b, c);
    } else if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        /* TLS: wolfSSL may hold decrypted bytes epoll cannot see: read until it waits */
        for (;;) {
            ssize_t n = io_recv(b, c, c->rbuf + c->rlen, RBUF_CAP - c->rlen);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                conn_lost(b, c);
                return;
            }
            if (n <= 0) break;
            c->rlen += (size_t)n;
            b->p->parse(b, c);
            if (c->state != CONN_OPEN || !c->ssl || c->rlen == RBUF_CAP) break;
        }
        /* mqtts --handshakes: one exchange per connection, then a new one */
        if (b->o.handshakes && b->o.mode == MODE_MQTT && c->state == CONN_OPEN && c->ready &&
            c->pubs && !c->inflight && !b->stopping) {
            conn_kill(b, c, 0);
            return;
        }
    }
    if (c->state == CONN_OPEN && ((events & EPOLLOUT) || !c->want_out)) b->p->pump(b, c);
}

/* --rate: when request i of the schedule is due. */
static int64_t due_ns(const struct bench *b, uint64_t i)
{
    return b->t0 + (int64_t)((double)i * 1e9 / b->o.rate);
}

/* --rate: starts every request due by now, each on the next connection with
 * room; what finds none waits (backlogged) for an answer to free one. */
static void rate_dispatch(struct bench *b, int64_t now)
{
    long nc = b->o.connections;
    b->backlogged = false;
    /* the loop wakes a little after the end of the run: what fell due since
     * is not part of the schedule */
    if (b->until && now > b->until) now = b->until;
    while (!b->stopping && due_ns(b, b->issued) <= now) {
        struct conn *c = NULL;
        for (long k = 0; k < nc && !c; k++) {
            struct conn *x = &b->conns[(b->rr + k) % nc];
            if (b->p->has_room(b, x)) {
                c = x;
                b->rr = (b->rr + k + 1) % nc;
            }
        }
        if (!c) {
            b->backlogged = true;
            return;
        }
        b->p->begin(b, c, due_ns(b, b->issued++));
        b->p->pump(b, c);
    }
}

/* --rate: requests due by the end that never went out. */
static uint64_t unsent(const struct bench *b, int64_t end)
{
    if (b->until && end > b->until) end = b->until;
    if (b->o.rate <= 0 || end <= b->t0) return 0;
    uint64_t due = (uint64_t)((double)(end - b->t0) * b->o.rate / 1e9) + 1;
    return due > b->issued ? due - b->issued : 0;
}

/* Reopens the dead connections whose delay has passed; run between batches.
 * A connection stays marked pending while conn_open runs, so a connect that
 * fails at once is kept in place here rather than appended by conn_kill. */
static void reconnect_due(struct bench *b, int64_t now)
{
    size_t keep = 0;
    for (size_t i = 0; i < b->npending; i++) {
        struct conn *c = &b->conns[b->pending[i]];
        if (c->state == CONN_DEAD && !b->stopping && !c->refused && c->reconnect_at <= now)
            conn_open(b, c);
        if (c->state == CONN_DEAD && !c->refused)
            b->pending[keep++] = b->pending[i];
        else
            c->pending = false;
    }
    b->npending = keep;
}

static bool all_drained(const struct bench *b)
{
    for (long i = 0; i < b->o.connections; i++)
        if (!b->p->drained(b, &b->conns[i])) return false;
    return true;
}

/* ---- reporting ---- */

/* The frame protocol, over TCP or UDP: reported alike. */
static bool framed(const struct bench *b)
{
    return b->o.mode == MODE_FRAME || b->o.mode == MODE_UDP;
}

/* Publishes never acknowledged (QoS 0: never followed by a PINGRESP); frame:
 * readings (frame mode passes qos 1). */
static uint64_t mqtt_unacked(const struct stats *st, long qos)
{
    uint64_t done = qos ? st->ok + st->refused : st->confirmed;
    return st->sent > done ? st->sent - done : 0;
}

static uint64_t error_total(const struct bench *b)
{
    const struct stats *st = &b->st;
    uint64_t n = st->err_connect + st->err_reset + st->err_timeout + st->err_bad +
                 st->err_no_connack + st->err_max_qos + st->err_max_packet + st->err_signature +
                 st->err_no_welcome + st->err_window + st->err_max_frame + st->resent;
    for (int s = 100; s < 600; s++)
        if (s < 200 || s >= 300) n += st->status[s];
    for (int r = 0; r < 256; r++)
        n += st->connack[r] + st->puback[r] + st->pubrec[r] + st->pubcomp[r] + st->disconnect[r] +
             st->ferror[r];
    /* not while the end still waits for them (the progress line then) */
    if (b->o.mode == MODE_MQTT && b->drained) n += mqtt_unacked(st, b->o.qos);
    if (framed(b) && b->drained) n += mqtt_unacked(st, 1);
    return n;
}

/* What readings/s counts: acknowledged readings (HTTP 2xx x --readings; MQTT
 * PUBACK/PUBCOMP; frame: covered by an ACK), or at QoS 0 publishes sent. */
static uint64_t readings(const struct bench *b, const struct stats *st)
{
    if (b->o.mode == MODE_HTTP) return st->ok * (uint64_t)b->o.readings;
    if (framed(b)) return st->ok;
    return b->o.qos ? st->ok : st->sent;
}

static void progress(const struct bench *b, double t, const struct stats *last, double dt)
{
    double req = (double)(b->st.responses - last->responses) / dt;
    double rd = (double)(readings(b, &b->st) - readings(b, last)) / dt;
    double mb = (double)(b->st.bytes_sent - last->bytes_sent) / 1e6 / dt;
    if (b->o.mode == MODE_MQTT)
        fprintf(stderr,
                "\r%6.1fs  %10.0f publishes/s  %11.0f readings/s  %8.2f MB/s  errors %llu   ", t,
                (double)(b->st.sent - last->sent) / dt, rd, mb, (unsigned long long)error_total(b));
    else if (framed(b))
        fprintf(stderr,
                "\r%6.1fs  %11.0f readings/s sent  %11.0f durable/s  %8.2f MB/s  errors %llu   ", t,
                (double)(b->st.sent - last->sent) / dt, rd, mb, (unsigned long long)error_total(b));
    else
        fprintf(stderr, "\r%6.1fs  %10.0f req/s  %11.0f readings/s  %8.2f MB/s  errors %llu   ", t,
                req, rd, mb, (unsigned long long)error_total(b));
    fflush(stderr);
}

static void print_kind(FILE *f, const char **sep, const char *name, uint64_t n)
{
    if (!n) return;
    fprintf(f, "%s\"%s\":%llu", *sep, name, (unsigned long long)n);
    *sep = ",";
}

static void print_errors_json(FILE *f, const struct bench *b)
{
    const struct stats *st = &b->st;
    const char *sep = "";
    char name[32];
    fputc('{', f);
    for (int s = 100; s < 600; s++) {
        if (s >= 200 && s < 300) continue;
        snprintf(name, sizeof name, "http_%d", s);
        print_kind(f, &sep, name, st->status[s]);
    }
    const struct {
        const char *name;
        const uint64_t *by_code;
    } coded[] = {{"connack", st->connack},
                 {"puback", st->puback},
                 {"pubrec", st->pubrec},
                 {"pubcomp", st->pubcomp},
                 {"disconnect", st->disconnect}};
    for (size_t k = 0; k < sizeof coded / sizeof coded[0]; k++)
        for (int r = 0; r < 256; r++) {
            snprintf(name, sizeof name, "%s_0x%02x", coded[k].name, r);
            print_kind(f, &sep, name, coded[k].by_code[r]);
        }
    /* frame: ERROR codes by name (docs/frame-protocol.md §7) */
    static const char *const fr_codes[] = {NULL,        "version", "auth",       "quota",
                                           "too_large", "storage", "taken_over", "protocol",
                                           "shutdown",  "timeout"};
    for (int r = 0; r < 256; r++) {
        if (r > 0 && r < (int)(sizeof fr_codes / sizeof fr_codes[0]))
            snprintf(name, sizeof name, "error_%s", fr_codes[r]);
        else
            snprintf(name, sizeof name, "error_0x%02x", r);
        print_kind(f, &sep, name, st->ferror[r]);
    }
    bool mqtt = b->o.mode == MODE_MQTT, frame = framed(b);
    print_kind(f, &sep, "connect", st->err_connect);
    print_kind(f, &sep, "tls", st->err_tls);
    print_kind(f, &sep, "no_connack", st->err_no_connack);
    print_kind(f, &sep, "server_max_qos", st->err_max_qos);
    print_kind(f, &sep, "server_max_packet_size", st->err_max_packet);
    print_kind(f, &sep, "reset", st->err_reset);
    print_kind(f, &sep, "timeout", st->err_timeout);
    print_kind(f, &sep, "no_welcome", st->err_no_welcome);
    print_kind(f, &sep, "bad_signature", st->err_signature);
    print_kind(f, &sep, "server_window", st->err_window);
    print_kind(f, &sep, "server_max_frame", st->err_max_frame);
    print_kind(f, &sep, mqtt || frame ? "malformed" : "bad_response", st->err_bad);
    if (mqtt) print_kind(f, &sep, "unacknowledged", mqtt_unacked(st, b->o.qos));
    if (frame) print_kind(f, &sep, "unacknowledged", mqtt_unacked(st, 1));
    if (b->o.mode == MODE_UDP) print_kind(f, &sep, "resends", st->resent);
    fputc('}', f);
}

static void report(const struct bench *b, double elapsed, uint64_t behind)
{
    const struct stats *st = &b->st;
    bool mqtt = b->o.mode == MODE_MQTT, timed = !mqtt || b->o.qos > 0;
    double rps = (double)readings(b, st) / elapsed;
    double mbps = (double)st->bytes_sent / 1e6 / elapsed;
    unsigned long long p50 = hist_quantile(&st->lat, 0.50), p90 = hist_quantile(&st->lat, 0.90),
                       p99 = hist_quantile(&st->lat, 0.99), p999 = hist_quantile(&st->lat, 0.999),
                       max = st->lat.max_us;
    if (b->o.json) {
        printf("{\"readings_per_sec\":%.1f,\"mb_per_sec\":%.3f,\"latency_us\":", rps, mbps);
        if (timed)
            printf("{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu}", p50, p90,
                   p99, p999, max);
        else /* QoS 0: nothing is acknowledged, so nothing to time */
            fputs("{\"p50\":null,\"p90\":null,\"p99\":null,\"p999\":null,\"max\":null}", stdout);
        fputs(",\"errors\":", stdout);
        print_errors_json(stdout, b);
        if (b->o.rate > 0)
            printf(",\"offered_per_sec\":%.1f,\"unsent\":%llu", b->o.rate,
                   (unsigned long long)behind);
        if (b->o.tls)
            printf(",\"tls_handshakes\":%llu,\"tls_resumed\":%llu,\"handshakes_per_sec\":%.1f",
                   (unsigned long long)st->handshakes, (unsigned long long)st->resumed,
                   (double)st->handshakes / elapsed);
        if (mqtt) {
            printf(",\"qos\":%ld,\"mqtt_version\":%ld,\"sent\":%llu", b->o.qos, b->o.mqtt_version,
                   (unsigned long long)st->sent);
            if (b->o.qos)
                printf(",\"acknowledged\":%llu,\"refused\":%llu", (unsigned long long)st->ok,
                       (unsigned long long)st->refused);
            else
                printf(",\"confirmed_by_ping\":%llu", (unsigned long long)st->confirmed);
            printf(",\"ping_rtt_us\":{\"n\":%llu,\"p50\":%llu,\"p99\":%llu,\"max\":%llu}",
                   (unsigned long long)hist_total(&st->ping),
                   (unsigned long long)hist_quantile(&st->ping, 0.5),
                   (unsigned long long)hist_quantile(&st->ping, 0.99),
                   (unsigned long long)st->ping.max_us);
            if (st->recv_max) printf(",\"server_receive_maximum\":%u", st->recv_max);
        }
        if (framed(b)) {
            printf(",\"batch\":%ld,\"window\":%ld,\"sent\":%llu,\"acknowledged\":%llu,"
                   "\"refused\":%llu,\"handshakes\":%llu",
                   b->o.batch, b->o.pipeline, (unsigned long long)st->sent,
                   (unsigned long long)st->ok, (unsigned long long)st->refused,
                   (unsigned long long)st->welcomed);
            printf(",\"handshake_us\":{\"p50\":%llu,\"p99\":%llu,\"max\":%llu}",
                   (unsigned long long)hist_quantile(&st->hs, 0.5),
                   (unsigned long long)hist_quantile(&st->hs, 0.99),
                   (unsigned long long)st->hs.max_us);
            if (st->min_window) printf(",\"server_window\":%u", st->min_window);
        }
        if (b->o.mode == MODE_UDP)
            printf(",\"datagrams\":%llu,\"datagrams_in\":%llu,\"resent\":%llu,"
                   "\"resend_timeouts\":%llu,\"rehandshakes\":%llu",
                   (unsigned long long)st->dgrams, (unsigned long long)st->dgrams_in,
                   (unsigned long long)st->resent, (unsigned long long)st->resend_rounds,
                   (unsigned long long)st->rehandshakes);
        fputs("}\n", stdout);
        return;
    }
    if (framed(b)) {
        bool udp = b->o.mode == MODE_UDP;
        printf("target       %s:%s frame protocol%s, %ld %s, window %ld reading(s)%s, "
               "%ld per %s, %ld B payload\n",
               b->o.host, b->o.port, udp ? " over UDP" : "", b->o.connections,
               udp ? "devices" : "connections", b->o.pipeline,
               st->min_window && st->min_window < (unsigned)b->o.pipeline
                   ? " (capped by the server)"
                   : "",
               b->o.batch, b->o.batch > 1 ? "BATCH" : "READING", b->o.payload);
        printf("elapsed      %.2f s, %llu readings sent, %llu acknowledged durable, %llu refused, "
               "%llu unacknowledged\n",
               elapsed, (unsigned long long)st->sent, (unsigned long long)st->ok,
               (unsigned long long)st->refused, (unsigned long long)mqtt_unacked(st, 1));
        printf("throughput   %.1f readings/s acknowledged, %.3f MB/s sent\n", rps, mbps);
        printf("handshakes   %llu, %s to WELCOME p50 %llu us  p99 %llu us\n",
               (unsigned long long)st->welcomed, udp ? "HELLO" : "connect",
               (unsigned long long)hist_quantile(&st->hs, 0.5),
               (unsigned long long)hist_quantile(&st->hs, 0.99));
        if (udp)
            printf("datagrams    %llu sent, %llu received; %llu readings sent again after %llu "
                   "timeouts, %llu new handshakes\n",
                   (unsigned long long)st->dgrams, (unsigned long long)st->dgrams_in,
                   (unsigned long long)st->resent, (unsigned long long)st->resend_rounds,
                   (unsigned long long)st->rehandshakes);
    } else if (mqtt) {
        printf("target       %s:%s topic %s, MQTT %s, QoS %ld, %ld connections, window %ld%s, "
               "%ld B payload\n",
               b->o.host, b->o.port, b->o.topic, b->o.mqtt_version == 5 ? "5.0" : "3.1.1", b->o.qos,
               b->o.connections, b->o.pipeline,
               st->recv_max && st->recv_max < (unsigned)b->o.pipeline ? " (capped by the server)"
                                                                      : "",
               b->o.payload);
        printf("elapsed      %.2f s, %llu publishes sent, ", elapsed, (unsigned long long)st->sent);
        if (b->o.qos)
            printf("%llu acknowledged, %llu refused, %llu unacknowledged\n",
                   (unsigned long long)st->ok, (unsigned long long)st->refused,
                   (unsigned long long)mqtt_unacked(st, b->o.qos));
        else
            printf("%llu confirmed read by a later PINGRESP\n", (unsigned long long)st->confirmed);
        printf("throughput   %.1f readings/s%s, %.3f MB/s sent\n", rps,
               b->o.qos ? " acknowledged" : " sent", mbps);
    } else {
        printf("target       %s:%s%s, %ld connections, pipeline %ld, %ld reading(s) of ~%ld B per "
               "request\n",
               b->o.host, b->o.port, b->o.path, b->o.connections, b->o.pipeline, b->o.readings,
               b->o.payload);
        printf("elapsed      %.2f s, %llu responses (%llu 2xx)\n", elapsed,
               (unsigned long long)st->responses, (unsigned long long)st->ok);
        printf("throughput   %.1f readings/s, %.1f requests/s, %.3f MB/s sent\n", rps,
               (double)st->responses / elapsed, mbps);
    }
    if (b->o.rate > 0)
        printf("open loop    %.1f %s/s offered, %llu due but never sent%s\n", b->o.rate,
               b->o.mode == MODE_FRAME ? "frames"
               : b->o.mode == MODE_UDP ? "datagrams"
                                       : "requests",
               (unsigned long long)behind, behind ? " (fell behind the offered rate)" : "");
    if (timed)
        printf("latency us   p50 %llu  p90 %llu  p99 %llu  p99.9 %llu  max %llu%s\n", p50, p90, p99,
               p999, max,
               framed(b)
                   ? (b->o.rate > 0 ? (b->o.mode == MODE_UDP
                                           ? "  (from when each datagram was due to the ACK "
                                             "covering it)"
                                           : "  (from when each frame was due to the ACK covering "
                                             "it)")
                                    : "  (from a reading's send to the ACK covering it)")
               : b->o.rate > 0 ? "  (from when each request was due)"
                               : "");
    else
        printf("latency us   n/a for QoS 0 (nothing acknowledges a publish); PINGREQ round trip "
               "p50 %llu  p99 %llu  max %llu\n",
               (unsigned long long)hist_quantile(&st->ping, 0.5),
               (unsigned long long)hist_quantile(&st->ping, 0.99),
               (unsigned long long)st->ping.max_us);
    if (b->o.tls)
        printf("tls          %llu handshakes (%.1f/s), %llu of them resumed\n",
               (unsigned long long)st->handshakes, (double)st->handshakes / elapsed,
               (unsigned long long)st->resumed);
    printf("errors       ");
    print_errors_json(stdout, b);
    putchar('\n');
}

/* ---- main ---- */

static void cannot_connect(const struct bench *b)
{
    fprintf(stderr, "sluice-bench: cannot connect to %s:%s: %s\n", b->o.host, b->o.port,
            b->last_connect_errno ? strerror(b->last_connect_errno) : "no answer");
}

static void raise_fd_limit(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= (rlim_t)need ? (rlim_t)need
                                                                                  : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)need) {
        fprintf(stderr, "sluice-bench: %ld connections need %ld file descriptors, limit is %llu\n",
                need - 16, need, (unsigned long long)rl.rlim_cur);
        exit(1);
    }
}

/* Per connection buffers: HTTP a ring of send times, MQTT slots, a free queue
 * and an output buffer, frame a ring of frames in flight and an output buffer. */
static void setup_conns(struct bench *b)
{
    long nc = b->o.connections;
    size_t p = (size_t)b->o.pipeline;
    bool mqtt = b->o.mode == MODE_MQTT;
    b->conns = calloc((size_t)nc, sizeof *b->conns);
    b->pending = calloc((size_t)nc, sizeof *b->pending);
    if (!b->conns || !b->pending) goto fail;
    for (long i = 0; i < nc; i++) {
        struct conn *c = &b->conns[i];
        c->fd = -1;
        if (b->o.mode == MODE_UDP) { /* no output buffer: each datagram is made as it goes */
            c->fcap = (unsigned)(p / (size_t)b->o.batch);
            c->fring = calloc(c->fcap, sizeof *c->fring);
            if (!c->fring) goto fail;
        } else if (b->o.mode == MODE_FRAME) {
            c->fcap = (unsigned)(p / (size_t)b->o.batch);
            c->fring = calloc(c->fcap, sizeof *c->fring);
            c->obuf = malloc(b->obuf_cap);
            if (!c->fring || !c->obuf) goto fail;
        } else if (mqtt) {
            c->slots = calloc(p, sizeof *c->slots);
            c->free_q = calloc(p, sizeof *c->free_q);
            c->obuf = malloc(b->obuf_cap);
            if (!c->slots || !c->free_q || !c->obuf) goto fail;
        } else {
            c->start_ns = calloc(p, sizeof *c->start_ns);
            if (!c->start_ns) goto fail;
        }
    }
    return;
fail:
    fprintf(stderr, "sluice-bench: out of memory for %ld connections\n", nc);
    exit(1);
}

static void free_conns(struct bench *b)
{
    for (long i = 0; i < b->o.connections; i++) {
        struct conn *c = &b->conns[i];
        if (c->state != CONN_DEAD) close(c->fd);
        if (c->ssl) wolfSSL_free(c->ssl);
        if (c->sess) wolfSSL_SESSION_free(c->sess);
        free(c->start_ns);
        free(c->slots);
        free(c->free_q);
        free(c->obuf);
        free(c->fring);
    }
    free(b->pending);
    free(b->conns);
}

/* Runs the loop until `until`, or (drain) until nothing is left in flight.
 * Returns 1 when no connection could be made at all, else 0; *now_out is
 * when it stopped. */
static int run_loop(struct bench *b, int64_t t0, int64_t until, bool drain, int64_t *now_out)
{
    static struct stats last;
    static int64_t last_tick, next_check;
    struct epoll_event evs[256];
    long nc = b->o.connections;
    int64_t now = now_ns();
    if (!last_tick) {
        last = b->st;
        last_tick = t0;
        next_check = t0 + 100 * NS_PER_MS;
    }
    while (!interrupted && now < until && !(drain && all_drained(b))) {
        int64_t wait = (b->npending ? 10 : 100) * NS_PER_MS;
        if (b->o.rate > 0 && b->ever_connected && !b->backlogged && !b->stopping) {
            int64_t next = due_ns(b, b->issued) - now;
            wait = next < 0 ? 0 : next < wait ? next : wait;
        }
        if (wait > until - now) wait = until - now;
        struct timespec ts = {.tv_sec = wait / NS_PER_S, .tv_nsec = wait % NS_PER_S};
        int n = epoll_pwait2(b->ep, evs, sizeof evs / sizeof evs[0], &ts, NULL);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "\nsluice-bench: epoll_pwait2: %s\n", strerror(errno));
            exit(1);
        }
        for (int i = 0; i < n; i++)
            conn_event(b, evs[i].data.ptr, evs[i].events);
        now = now_ns();
        if (b->npending) reconnect_due(b, now);
        if (b->o.rate > 0 && b->ever_connected) rate_dispatch(b, now);
        if (!b->ever_connected && b->st.err_connect >= (uint64_t)nc) {
            *now_out = now;
            return 1;
        }
        if (b->nrefused == nc) break; /* nobody left to publish */
        if (now >= next_check) {
            for (long i = 0; i < nc; i++)
                b->p->tick(b, &b->conns[i], now);
            next_check = now + 100 * NS_PER_MS;
        }
        if (now - last_tick >= NS_PER_S) {
            progress(b, (double)(now - t0) / 1e9, &last, (double)(now - last_tick) / 1e9);
            b->progressed = true;
            last = b->st;
            last_tick = now;
        }
    }
    *now_out = now;
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    parse_args(argc, argv, &b->o);
    bool mqtt = b->o.mode == MODE_MQTT;
    if (b->o.tls) {
        if (wolfSSL_Init() != WOLFSSL_SUCCESS ||
            !(b->tls = wolfSSL_CTX_new(wolfSSLv23_client_method())) ||
            wolfSSL_CTX_SetMinVersion(b->tls, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS) {
            fprintf(stderr, "sluice-bench: cannot set up wolfSSL\n");
            return 1;
        }
        /* X25519 first, as browsers and curl offer it */
        int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};
        wolfSSL_CTX_set_groups(b->tls, groups, 3);
        if (b->o.cacert) {
            if (wolfSSL_CTX_load_verify_locations(b->tls, b->o.cacert, NULL) != WOLFSSL_SUCCESS) {
                fprintf(stderr,
                        "sluice-bench: --cacert %s: not a PEM certificate wolfSSL can load\n",
                        b->o.cacert);
                return 2;
            }
            wolfSSL_CTX_set_verify(b->tls, WOLFSSL_VERIFY_PEER, NULL);
        } else {
            wolfSSL_CTX_set_verify(b->tls, WOLFSSL_VERIFY_NONE, NULL); /* measuring, not trusting */
        }
    }
    bool frame = framed(b), udp = b->o.mode == MODE_UDP;
    b->p = udp ? &proto_udp : frame ? &proto_frame : mqtt ? &proto_mqtt : &proto_http;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM};
    int rc = getaddrinfo(b->o.host, b->o.port, &hints, &b->ai);
    if (rc) {
        fprintf(stderr, "sluice-bench: cannot resolve %s: %s\n", b->o.host, gai_strerror(rc));
        return 1;
    }
    raise_fd_limit(b->o.connections + 16);
    if (frame)
        fr_build(b);
    else if (mqtt)
        mqtt_build(b);
    else
        http_build(b);
    setup_conns(b);
    b->ep = epoll_create1(EPOLL_CLOEXEC);
    if (b->ep < 0) {
        fprintf(stderr, "sluice-bench: epoll_create1: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t t0 = now_ns(), now;
    int64_t deadline = t0 + (int64_t)(b->o.duration * (double)NS_PER_S);
    b->until = deadline;
    for (long i = 0; i < b->o.connections; i++)
        conn_open(b, &b->conns[i]);

    if (run_loop(b, t0, deadline, false, &now)) {
        if (b->progressed) fputc('\n', stderr);
        cannot_connect(b);
        return 1;
    }
    uint64_t behind = unsent(b, now);
    b->stopping = true;
    /* UDP: nothing answered, and nothing said that nobody listens (ICMP): a
     * silent server, reported as no_welcome rather than "cannot connect" */
    if (udp && !b->ever_connected && !b->st.err_connect) b->ever_connected = true;
    if (frame && b->ever_connected) {
        /* what is in flight gets its ACKs */
        run_loop(b, t0, now + DRAIN_NS, true, &now);
        /* connected, never welcomed in the whole run: a server that does not
         * answer HELLO or PROOF (the tick counts it only after
         * REQUEST_TIMEOUT_NS, which a short run never reaches) */
        for (long i = 0; i < b->o.connections; i++)
            if (b->conns[i].state == CONN_OPEN && b->conns[i].phase != FR_LIVE)
                b->st.err_no_welcome++;
        if (udp)
            for (long i = 0; i < b->o.connections; i++)
                udp_bye(b, &b->conns[i]);
    }
    if (mqtt && b->ever_connected) {
        /* what is in flight gets its acks (QoS 0: a last PINGRESP) */
        for (long i = 0; i < b->o.connections; i++)
            mqtt_tick(b, &b->conns[i], now);
        run_loop(b, t0, now + DRAIN_NS, true, &now);
        /* connected but never answered: not an MQTT server, or a stuck one (with
         * --handshakes a connection is always being made: the last one may
         * still be in its CONNECT when the run ends) */
        for (long i = 0; i < b->o.connections; i++)
            if (b->conns[i].state == CONN_OPEN && !b->conns[i].ready && !b->o.handshakes)
                b->st.err_no_connack++;
    }
    b->drained = true;
    double elapsed = (double)(now - t0) / 1e9;
    if (b->progressed) fputc('\n', stderr);
    if (!b->ever_connected) {
        cannot_connect(b);
        return 1;
    }
    report(b, elapsed > 0 ? elapsed : 1e-9, behind);
    fflush(stdout);
    int status = 0;
    if ((mqtt || frame) && error_total(b)) {
        status = 3;
        fputs("sluice-bench: errors ", stderr);
        print_errors_json(stderr, b);
        if (b->nrefused)
            fprintf(stderr, "; the server refused %ld of %ld %s", b->nrefused, b->o.connections,
                    udp ? "devices" : "connections");
        fputc('\n', stderr);
    }
    free_conns(b);
    close(b->ep);
    freeaddrinfo(b->ai);
    free(b->req);
    free(b->connect);
    if (frame) {
        wc_FreeRng(&b->rng);
        free(b->keys);
    }
    if (b->tls) wolfSSL_CTX_free(b->tls);
    return status;
}
