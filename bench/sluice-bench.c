/* sluice-bench — the load generator of INTERFACE.md ("sluice-bench"), HTTP mode.
 *
 *   sluice-bench http --target HOST:PORT --token T [--connections C] [--duration S]
 *                [--payload BYTES] [--readings N] [--pipeline N] [--json] [--path P]
 *
 * One thread, one epoll loop, C keep-alive connections. Every connection keeps
 * up to --pipeline POSTs in flight; each response is matched to the oldest
 * outstanding request on its connection (HTTP/1.1 answers in order), and the
 * time from the start of that request's write to the end of its response body
 * goes into a log-linear histogram. Responses are read only as far as the
 * status line and Content-Length, so any HTTP/1.1 server can be driven (nginx
 * with `return 204;` for the side-by-side comparison).
 *
 * --rate R runs an open loop instead: request i is due at start + i/R seconds
 * whatever the answers do, and goes out on the next connection (round robin)
 * with room for it (fewer than --pipeline in flight); when none has room it
 * waits, and its latency still counts from when it was due, so a server that
 * stalls shows in the percentiles instead of slowing the client down (the
 * coordinated omission a closed loop suffers). Requests still waiting at the
 * end are reported as "unsent": the server fell behind the offered rate.
 *
 * Error kinds in the report: "http_NNN" per non-2xx status; "connect" failed
 * connection attempts; "reset" connections the peer closed (FIN or RST) while
 * requests were in flight; "timeout" connections dropped because a response
 * took longer than REQUEST_TIMEOUT_NS; "bad_response" connections dropped
 * because a response could not be parsed (no status line, head over
 * RBUF_CAP bytes, chunked or length-less bodies, an unsolicited response).
 *
 * Exit: 0 run completed; 1 cannot connect at all or a system failure; 2 bad
 * usage or a mode / option that is not implemented yet.
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

#define MAX_CONNECTIONS    10000
#define MAX_DURATION_S     3600.0
#define MAX_PIPELINE       1024
#define MAX_PAYLOAD        (1 << 20)
#define MAX_READINGS       100000
#define MAX_RATE           10000000.0
#define MAX_BODY           (64 << 20)
#define RBUF_CAP           16384 /* a response head longer than this is bad_response */
#define REQUEST_TIMEOUT_NS (5 * NS_PER_S)
#define RECONNECT_DELAY_NS (100 * NS_PER_MS) /* after a failed connect, not to spin */
#define NS_PER_S           1000000000LL
#define NS_PER_MS          1000000LL

/* Histogram: 1 µs buckets below 1024 µs, then 128 buckets per power of two
 * (under 0.8 % relative width) up to 2^26 µs (67 s); slower goes in the last. */
#define HIST_LINEAR 1024
#define HIST_SUB    128
#define HIST_OCT    16
#define HIST_N      (HIST_LINEAR + HIST_OCT * HIST_SUB)

enum conn_state { CONN_DEAD, CONN_CONNECTING, CONN_OPEN };

struct conn {
    int fd;
    enum conn_state state;
    bool want_out;        /* EPOLLOUT registered: a write hit EAGAIN */
    bool sending;         /* the request at sent_count - 1 is partly written */
    size_t out_off;       /* bytes of the current request already written */
    unsigned inflight;    /* requests started and not yet answered */
    unsigned head;        /* ring index of the next request's send time */
    int64_t *start_ns;    /* ring of --pipeline send times */
    int64_t reconnect_at; /* CONN_DEAD: when to try again */
    bool pending;         /* on the reconnect list */
    size_t body_left;     /* bytes of the current response body still to skip */
    int status;           /* status of the response whose body is being skipped */
    bool close_after;     /* that response said Connection: close */
    size_t rlen;          /* bytes in rbuf */
    char rbuf[RBUF_CAP];
};

struct opts {
    const char *host;
    const char *port;
    const char *token;
    const char *path;
    long connections;
    double duration;
    long payload;
    long readings;
    long pipeline;
    double rate; /* requests/s offered in an open loop; 0: closed loop */
    bool json;
};

struct stats {
    uint64_t responses;
    uint64_t ok;          /* 2xx responses */
    uint64_t status[600]; /* by status code */
    uint64_t bytes_sent;
    uint64_t err_connect, err_reset, err_timeout, err_bad;
    uint64_t hist[HIST_N];
    uint64_t max_us;
};

struct bench {
    struct opts o;
    int ep;
    struct addrinfo *ai;
    char *req;
    size_t req_len;
    struct conn *conns;
    unsigned *pending; /* indices of dead connections waiting to reconnect */
    size_t npending;
    bool ever_connected;
    int last_connect_errno; /* for the "cannot connect" line */
    bool stopping;          /* past the deadline: send nothing new */
    int64_t t0;             /* --rate: the schedule's origin, the first connection's open */
    uint64_t issued;        /* --rate: requests started, in schedule order */
    long rr;                /* --rate: the connection to try first */
    bool backlogged;        /* --rate: a due request found no connection with room */
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
    "usage: sluice-bench http --target HOST:PORT --token T [--connections C (1)]\n"
    "         [--duration S (10, max 3600)] [--payload BYTES (64)] [--readings N (1)]\n"
    "         [--pipeline N (1)] [--path P (/v1/readings)] [--rate R/s] [--json]\n"
    "--rate: open loop, R requests/s whatever the answers; latency counts from when\n"
    "        each request was due (without it: closed loop, each connection sends its\n"
    "        next request when the previous one is answered)\n"
    "modes https, mqtt, mqtts, frame, udp and replay are not implemented yet\n";

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

static void hist_record(struct stats *st, uint64_t us)
{
    st->hist[hist_index(us)]++;
    if (us > st->max_us) st->max_us = us;
}

/* Value at quantile q (0..1]; never above the exact maximum, so p50 <= ... <= max. */
static uint64_t hist_quantile(const struct stats *st, double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_N; i++)
        total += st->hist[i];
    if (total == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)total + 0.999999);
    if (want < 1) want = 1;
    if (want > total) want = total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += st->hist[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return v > st->max_us ? st->max_us : v;
        }
    }
    return st->max_us;
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

static void parse_args(int argc, char **argv, struct opts *o)
{
    static const char *const later[] = {"https", "mqtt", "mqtts", "frame", "udp", "replay"};
    if (argc < 2) usage_error("missing mode (http); try --help");
    const char *mode = argv[1];
    if (!strcmp(mode, "--help") || !strcmp(mode, "-h")) {
        fputs(usage_text, stdout);
        exit(0);
    }
    for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
        if (!strcmp(mode, later[i])) usage_error("%s is not implemented yet", mode);
    if (strcmp(mode, "http"))
        usage_error("unknown mode '%s' (http, https, mqtt, mqtts, frame, udp, replay)", mode);

    *o = (struct opts){.connections = 1,
                       .duration = 10,
                       .payload = 64,
                       .readings = 1,
                       .pipeline = 1,
                       .path = "/v1/readings"};
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
        if (strncmp(a, "--", 2)) usage_error("unexpected argument '%s'", a);
        if (i + 1 >= argc) usage_error("%s needs a value", a);
        char *v = argv[++i];
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
            o->payload = parse_long(a, v, 1, MAX_PAYLOAD);
        } else if (!strcmp(a, "--readings")) {
            o->readings = parse_long(a, v, 1, MAX_READINGS);
        } else if (!strcmp(a, "--pipeline")) {
            o->pipeline = parse_long(a, v, 1, MAX_PIPELINE);
        } else if (!strcmp(a, "--path")) {
            o->path = v;
        } else if (!strcmp(a, "--rate")) {
            o->rate = parse_rate(v);
        } else if (!strcmp(a, "--qos")) {
            usage_error("--qos applies to mqtt, which is not implemented yet");
        } else {
            usage_error("unknown option '%s'", a);
        }
    }
    if (!target) usage_error("--target HOST:PORT is required");
    if (!o->token) usage_error("--token is required");
    if (!o->token[0] || !header_safe(o->token))
        usage_error("--token must be non-empty and free of control characters");
    if (o->path[0] != '/' || !header_safe(o->path) || strchr(o->path, ' '))
        usage_error("--path must start with '/' and hold no spaces or control characters");
    if (o->payload * o->readings > MAX_BODY)
        usage_error("--payload x --readings is over %d bytes", MAX_BODY);
    parse_target(target, o);
}

/* ---- the request ---- */

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
static void build_request(struct bench *b)
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
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     o->path, v6 ? "[" : "", o->host, v6 ? "]" : "", o->port, o->token, blen);
    memcpy(b->req + h, body, blen);
    b->req_len = (size_t)h + blen;
    free(body);
}

/* ---- connections ---- */

static void conn_kill(struct bench *b, struct conn *c, int64_t delay_ns);

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
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = CONN_CONNECTING;
    c->want_out = true;
    c->sending = false;
    c->inflight = 0;
    c->head = 0;
    c->rlen = 0;
    c->body_left = 0;
    c->close_after = false;
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

/* Closes c and queues it for a reconnect after delay_ns. Safe inside c's own
 * event handler: the slot is reused only after the current batch of events
 * (see reconnect_due), and events still queued for it see CONN_DEAD. */
static void conn_kill(struct bench *b, struct conn *c, int64_t delay_ns)
{
    if (c->state == CONN_DEAD) return;
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    c->state = CONN_DEAD;
    c->reconnect_at = now_ns() + delay_ns;
    if (!c->pending) {
        c->pending = true;
        b->pending[b->npending++] = (unsigned)(c - b->conns);
    }
}

/* Peer closed or reset: only an error while requests were outstanding. */
static void conn_lost(struct bench *b, struct conn *c)
{
    if (c->inflight > 0 || c->sending) b->st.err_reset++;
    conn_kill(b, c, 0);
}

static void conn_bad(struct bench *b, struct conn *c)
{
    b->st.err_bad++;
    conn_kill(b, c, RECONNECT_DELAY_NS);
}

static bool conn_has_room(const struct bench *b, const struct conn *c)
{
    return c->state == CONN_OPEN && !c->sending && c->inflight < (unsigned)b->o.pipeline &&
           !c->close_after;
}

/* Starts a request whose latency counts from start_ns. */
static void conn_begin(struct bench *b, struct conn *c, int64_t start_ns)
{
    c->start_ns[c->head] = start_ns;
    c->head = (c->head + 1) % (unsigned)b->o.pipeline;
    c->inflight++;
    c->sending = true;
    c->out_off = 0;
}

/* Writes the request under way, then (closed loop) new ones until --pipeline
 * are in flight or the socket is full; under --rate, rate_dispatch starts them. */
static void conn_pump(struct bench *b, struct conn *c)
{
    while (c->state == CONN_OPEN) {
        if (!c->sending) {
            if (b->o.rate > 0 || b->stopping || !conn_has_room(b, c)) break;
            conn_begin(b, c, now_ns());
        }
        ssize_t n = send(c->fd, b->req + c->out_off, b->req_len - c->out_off, MSG_NOSIGNAL);
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

static void conn_response_done(struct bench *b, struct conn *c)
{
    if (c->inflight == 0) {
        conn_bad(b, c); /* an answer to no request at all */
        return;
    }
    /* An answer before its request is fully written (a 401 or 413 sent after
     * the head alone): count it, then start over, because whether the server
     * still reads the rest of the body is its choice. */
    bool early = c->inflight == 1 && c->sending;
    unsigned p = (unsigned)b->o.pipeline;
    unsigned tail = (c->head + p - c->inflight) % p;
    int64_t ns = now_ns() - c->start_ns[tail];
    c->inflight--;
    hist_record(&b->st, (uint64_t)(ns > 0 ? ns / 1000 : 0));
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
static void conn_parse(struct bench *b, struct conn *c)
{
    size_t pos = 0;
    while (c->state == CONN_OPEN) {
        if (c->body_left > 0) {
            size_t take = c->rlen - pos < c->body_left ? c->rlen - pos : c->body_left;
            pos += take;
            c->body_left -= take;
            if (c->body_left > 0) break;
            conn_response_done(b, c);
            continue;
        }
        if (pos == c->rlen) break;
        const char *start = c->rbuf + pos;
        const char *hend = memmem(start, c->rlen - pos, "\r\n\r\n", 4);
        if (!hend) {
            if (pos == 0 && c->rlen == RBUF_CAP)
                conn_bad(b, c); /* a head that does not fit is not one we follow */
            break;
        }
        if (parse_head(c, start, hend + 2) < 0) {
            conn_bad(b, c);
            return;
        }
        pos = (size_t)(hend + 4 - c->rbuf);
        if (c->status < 200) continue; /* interim (100 Continue): the final one follows */
        if (c->body_left == 0) conn_response_done(b, c);
    }
    if (c->state != CONN_OPEN) return;
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
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
        c->state = CONN_OPEN;
        if (!b->ever_connected) b->t0 = now_ns(); /* --rate: the schedule starts here */
        b->ever_connected = true;
        conn_pump(b, c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, RBUF_CAP - c->rlen, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            conn_lost(b, c);
            return;
        }
        if (n > 0) {
            c->rlen += (size_t)n;
            conn_parse(b, c);
        }
    }
    if (c->state == CONN_OPEN && ((events & EPOLLOUT) || !c->sending)) conn_pump(b, c);
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
    while (!b->stopping && due_ns(b, b->issued) <= now) {
        struct conn *c = NULL;
        for (long k = 0; k < nc && !c; k++) {
            struct conn *x = &b->conns[(b->rr + k) % nc];
            if (conn_has_room(b, x)) {
                c = x;
                b->rr = (b->rr + k + 1) % nc;
            }
        }
        if (!c) {
            b->backlogged = true;
            return;
        }
        conn_begin(b, c, due_ns(b, b->issued++));
        conn_pump(b, c);
    }
}

/* --rate: requests due by the end that never went out. */
static uint64_t unsent(const struct bench *b, int64_t end)
{
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
        if (c->state == CONN_DEAD && !b->stopping && c->reconnect_at <= now) conn_open(b, c);
        if (c->state == CONN_DEAD)
            b->pending[keep++] = b->pending[i];
        else
            c->pending = false;
    }
    b->npending = keep;
}

/* Drops connections whose oldest outstanding request is older than the timeout. */
static void check_timeouts(struct bench *b, int64_t now)
{
    unsigned p = (unsigned)b->o.pipeline;
    for (long i = 0; i < b->o.connections; i++) {
        struct conn *c = &b->conns[i];
        if (c->state != CONN_OPEN || c->inflight == 0) continue;
        unsigned tail = (c->head + p - c->inflight) % p;
        if (now - c->start_ns[tail] > REQUEST_TIMEOUT_NS) {
            b->st.err_timeout++;
            conn_kill(b, c, 0);
        }
    }
}

/* ---- reporting ---- */

static uint64_t error_total(const struct stats *st)
{
    uint64_t n = st->err_connect + st->err_reset + st->err_timeout + st->err_bad;
    for (int s = 100; s < 600; s++)
        if (s < 200 || s >= 300) n += st->status[s];
    return n;
}

static void progress(const struct bench *b, double t, const struct stats *last, double dt)
{
    double req = (double)(b->st.responses - last->responses) / dt;
    double rd = (double)(b->st.ok - last->ok) * (double)b->o.readings / dt;
    double mb = (double)(b->st.bytes_sent - last->bytes_sent) / 1e6 / dt;
    fprintf(stderr, "\r%6.1fs  %10.0f req/s  %11.0f readings/s  %8.2f MB/s  errors %llu   ", t, req,
            rd, mb, (unsigned long long)error_total(&b->st));
    fflush(stderr);
}

static void print_errors_json(const struct stats *st)
{
    const char *sep = "";
    putchar('{');
    for (int s = 100; s < 600; s++) {
        if ((s >= 200 && s < 300) || !st->status[s]) continue;
        printf("%s\"http_%d\":%llu", sep, s, (unsigned long long)st->status[s]);
        sep = ",";
    }
    const struct {
        const char *name;
        uint64_t n;
    } kinds[] = {{"connect", st->err_connect},
                 {"reset", st->err_reset},
                 {"timeout", st->err_timeout},
                 {"bad_response", st->err_bad}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (!kinds[i].n) continue;
        printf("%s\"%s\":%llu", sep, kinds[i].name, (unsigned long long)kinds[i].n);
        sep = ",";
    }
    putchar('}');
}

static void report(const struct bench *b, double elapsed, uint64_t behind)
{
    const struct stats *st = &b->st;
    double rps = (double)st->ok * (double)b->o.readings / elapsed;
    double mbps = (double)st->bytes_sent / 1e6 / elapsed;
    unsigned long long p50 = hist_quantile(st, 0.50), p90 = hist_quantile(st, 0.90),
                       p99 = hist_quantile(st, 0.99), p999 = hist_quantile(st, 0.999),
                       max = st->max_us;
    if (b->o.json) {
        printf("{\"readings_per_sec\":%.1f,\"mb_per_sec\":%.3f,\"latency_us\":{\"p50\":%llu,"
               "\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu},\"errors\":",
               rps, mbps, p50, p90, p99, p999, max);
        print_errors_json(st);
        if (b->o.rate > 0)
            printf(",\"offered_per_sec\":%.1f,\"unsent\":%llu", b->o.rate,
                   (unsigned long long)behind);
        fputs("}\n", stdout);
        return;
    }
    printf("target       %s:%s%s, %ld connections, pipeline %ld, %ld reading(s) of ~%ld B per "
           "request\n",
           b->o.host, b->o.port, b->o.path, b->o.connections, b->o.pipeline, b->o.readings,
           b->o.payload);
    printf("elapsed      %.2f s, %llu responses (%llu 2xx)\n", elapsed,
           (unsigned long long)st->responses, (unsigned long long)st->ok);
    printf("throughput   %.1f readings/s, %.1f requests/s, %.3f MB/s sent\n", rps,
           (double)st->responses / elapsed, mbps);
    if (b->o.rate > 0)
        printf("open loop    %.1f requests/s offered, %llu due but never sent%s\n", b->o.rate,
               (unsigned long long)behind, behind ? " (fell behind the offered rate)" : "");
    printf("latency us   p50 %llu  p90 %llu  p99 %llu  p99.9 %llu  max %llu%s\n", p50, p90, p99,
           p999, max, b->o.rate > 0 ? "  (from when each request was due)" : "");
    printf("errors       ");
    print_errors_json(st);
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

int main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    parse_args(argc, argv, &b->o);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = getaddrinfo(b->o.host, b->o.port, &hints, &b->ai);
    if (rc) {
        fprintf(stderr, "sluice-bench: cannot resolve %s: %s\n", b->o.host, gai_strerror(rc));
        return 1;
    }
    raise_fd_limit(b->o.connections + 16);
    build_request(b);

    long nc = b->o.connections;
    b->conns = calloc((size_t)nc, sizeof *b->conns);
    b->pending = calloc((size_t)nc, sizeof *b->pending);
    int64_t *ring = calloc((size_t)(nc * b->o.pipeline), sizeof *ring);
    b->ep = epoll_create1(EPOLL_CLOEXEC);
    if (!b->conns || !b->pending || !ring || b->ep < 0) {
        fprintf(stderr, "sluice-bench: cannot set up %ld connections: %s\n", nc, strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t t0 = now_ns();
    int64_t deadline = t0 + (int64_t)(b->o.duration * (double)NS_PER_S);
    for (long i = 0; i < nc; i++) {
        b->conns[i].start_ns = ring + i * b->o.pipeline;
        b->conns[i].fd = -1;
        conn_open(b, &b->conns[i]);
    }

    struct epoll_event evs[256];
    struct stats last = b->st;
    int64_t last_tick = t0, next_check = t0 + 100 * NS_PER_MS;
    int64_t now = t0;
    while (!interrupted && now < deadline) {
        int64_t wait = (b->npending ? 10 : 100) * NS_PER_MS;
        if (b->o.rate > 0 && b->ever_connected && !b->backlogged) {
            int64_t next = due_ns(b, b->issued) - now;
            wait = next < 0 ? 0 : next < wait ? next : wait;
        }
        struct timespec ts = {.tv_sec = wait / NS_PER_S, .tv_nsec = wait % NS_PER_S};
        int n = epoll_pwait2(b->ep, evs, sizeof evs / sizeof evs[0], &ts, NULL);
        if (n < 0 && errno != EINTR) {
            fprintf(stderr, "\nsluice-bench: epoll_pwait2: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++)
            conn_event(b, evs[i].data.ptr, evs[i].events);
        now = now_ns();
        if (b->npending) reconnect_due(b, now);
        if (b->o.rate > 0 && b->ever_connected) rate_dispatch(b, now);
        if (!b->ever_connected && b->st.err_connect >= (uint64_t)nc) {
            cannot_connect(b);
            return 1;
        }
        if (now >= next_check) {
            check_timeouts(b, now);
            next_check = now + 100 * NS_PER_MS;
        }
        if (now - last_tick >= NS_PER_S) {
            progress(b, (double)(now - t0) / 1e9, &last, (double)(now - last_tick) / 1e9);
            last = b->st;
            last_tick = now;
        }
    }
    b->stopping = true;
    double elapsed = (double)(now - t0) / 1e9;
    if (last_tick != t0) fputc('\n', stderr);
    if (!b->ever_connected) {
        cannot_connect(b);
        return 1;
    }
    report(b, elapsed > 0 ? elapsed : 1e-9, unsent(b, now));
    fflush(stdout);
    for (long i = 0; i < nc; i++)
        if (b->conns[i].state != CONN_DEAD) close(b->conns[i].fd);
    close(b->ep);
    freeaddrinfo(b->ai);
    free(ring);
    free(b->pending);
    free(b->conns);
    free(b->req);
    return 0;
}
