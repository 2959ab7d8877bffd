/* engine/ingest.c — the HTTP device API on a connection: parse, authenticate,
 * split the body into readings, append them to the org's log batch, and queue
 * the response that commit.c releases once the batch is durable.
 *
 * Requests are parsed in place from whatever buffer holds the connection's input
 * (a provided recv buffer, or the reassembly buffer). A request is consumed only
 * when complete, so the view always starts at a request boundary and a request
 * whose body is still arriving is simply re-parsed when more bytes come (the head
 * is at most 8 KiB; the chunked decoder's state lives in the connection).
 */
#include "engine/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "protocols/json.h"

#define UNAUTHORIZED_BODY "{\"error\":\"unauthorized\"}"

static bool slice_eq(struct http_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static bool slice_ieq(struct http_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

/* Queues a response; msg (copied) is the JSON body of an error, NULL for 202. */
static uint32_t queue_resp(struct conn *c, int status, bool close, uint32_t accepted,
                           const char *msg)
{
    uint32_t idx = c->qtail++;
    struct pending_resp *p = &c->q[idx % CONN_QUEUE];
    p->status = (uint16_t)status;
    p->close = close;
    p->waiting = 0;
    p->accepted = accepted;
    p->msg = msg ? strdup(msg) : NULL;
    if (close) c->stop_input = true;
    return idx;
}

static void queue_error(struct worker *w, struct conn *c, int status, bool close, const char *why)
{
    char body[256];
    if (!why) why = http_status_text(status);
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", why);
    queue_resp(c, status, close || w->draining, 0, body);
}

void ingest_flush_responses(struct worker *w, struct conn *c)
{
    while (c->qhead != c->qtail && !c->closing) {
        struct pending_resp *p = &c->q[c->qhead % CONN_QUEUE];
        if (p->waiting) break;
        char small[48];
        const char *body = p->msg;
        if (!body) {
            snprintf(small, sizeof small, "{\"accepted\":%u}", p->accepted);
            body = small;
        }
        size_t blen = strlen(body);
        const char *extra = p->status == 405   ? "Allow: POST\r\n"
                            : p->status == 503 ? "Retry-After: 1\r\n"
                            : p->status == 429 ? "Retry-After: 1\r\n"
                                               : NULL;
        bool keep = !p->close && !w->draining;
        if (!keep) c->stop_input = true;
        size_t cap = 256 + blen;
        char *out = worker_send_reserve(w, c, cap);
        if (out) {
            int n = http_write_response(out, cap, p->status, keep, extra, body, blen);
            if (n > 0) c->out[1].len += (size_t)n;
        }
        free(p->msg);
        p->msg = NULL;
        c->qhead++;
    }
}

/* A token must never travel in the URL, where it lands in proxies' and servers'
 * logs. Refused: a query parameter named like a token, or any path segment or
 * query value shaped like one of ours. */
static bool url_has_token(const struct http_request *req)
{
    static const char *const names[] = {"token",        "access_token", "auth_token",
                                        "x-auth-token", "api_key",      "apikey"};
    const char *p = req->target.p, *end = p + req->target.n;
    while (p < end) {
        const char *seg = p;
        while (p < end && *p != '/' && *p != '?' && *p != '&' && *p != '=' && *p != ';')
            p++;
        size_t n = (size_t)(p - seg);
        if (n >= 4 && strncasecmp(seg, "slk_", 4) == 0) return true;
        if (p < end && *p == '=') {
            for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
                if (n == strlen(names[i]) && strncasecmp(seg, names[i], n) == 0) return true;
        }
        if (p < end) p++;
    }
    return false;
}

/* Constant-time equality of two token strings of possibly different lengths. */
static bool token_eq(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned diff = (unsigned)(an ^ bn);
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* Resolves the request's token to (device, org), hashing it once per connection
 * while the token and the auth table stay the same. Returns AUTH_OK; AUTH_FAIL
 * for a missing, unknown or revoked token (callers answer all three alike; the
 * attempt is charged to the peer's address); AUTH_THROTTLED when that address
 * has used up its failed attempts (--auth-fail-rate), before any hashing. */
enum { AUTH_OK, AUTH_FAIL, AUTH_THROTTLED };

static int authenticate(struct worker *w, struct conn *c, struct http_slice tok)
{
    if (c->tok_ok && c->auth_gen == w->auth_gen && token_eq(c->tok, c->tok_len, tok.p, tok.n))
        return AUTH_OK;
    c->tok_ok = false;
    if (!ratelimit_allow(w->authrl, c->peer, w->now_ms)) return AUTH_THROTTLED;
    const struct auth_entry *e = NULL;
    if (tok.n && tok.n <= sizeof c->tok && w->auth) {
        uint8_t digest[STORE_DIGEST_LEN];
        store_token_digest(tok.p, tok.n, digest);
        e = auth_table_lookup(w->auth, digest);
    }
    if (!e || e->state != STORE_DEVICE_ACTIVE) {
        ratelimit_charge(w->authrl, c->peer, w->now_ms);
        return AUTH_FAIL;
    }
    memcpy(c->tok, tok.p, tok.n);
    c->tok_len = (uint8_t)tok.n;
    c->device = e->device;
    c->org = e->org;
    c->auth_gen = w->auth_gen;
    c->tok_ok = true;
    return AUTH_OK;
}

/* Inflates a gzip body into the worker's scratch buffer, at most max_body bytes.
 * Returns the inflated length, -413 when larger, -400 when not valid gzip. */
static long gunzip(struct worker *w, const char *in, size_t n)
{
    size_t cap = w->eng->cfg.max_body;
    if (!w->scratch) {
        w->scratch = malloc(cap + 1);
        w->zs = calloc(1, sizeof(z_stream));
        if (!w->scratch || !w->zs || inflateInit2((z_stream *)w->zs, 16 + MAX_WBITS) != Z_OK)
            return -503;
    }
    z_stream *zs = w->zs;
    inflateReset(zs);
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)n;
    zs->next_out = (Bytef *)w->scratch;
    zs->avail_out = (uInt)cap + 1; /* one byte more than allowed detects "too large" */
    int rc = inflate(zs, Z_FINISH);
    size_t out = cap + 1 - zs->avail_out;
    if (out > cap) return -413;
    if (rc != Z_STREAM_END || zs->avail_in != 0) return -400;
    return (long)out;
}

struct split_ctx {
    struct commit_log *log;
    struct record rec;
    int err;
};

static int append_reading(void *ctx, const char *p, size_t n)
{
    struct split_ctx *s = ctx;
    int rc = commit_append(s->log, &s->rec, p, n);
    if (rc) s->err = rc;
    return rc ? 1 : 0;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void handle_readings(struct worker *w, struct conn *c, const struct http_request *req,
                            const char *body, size_t blen)
{
    bool close = !req->keep_alive;
    if (req->method != HTTP_METHOD_POST) {
        queue_error(w, c, 405, close, "use POST");
        return;
    }
    int auth = authenticate(w, c, req->token);
    if (auth == AUTH_THROTTLED) {
        atomic_fetch_add_explicit(&w->st.auth_throttled, 1, memory_order_relaxed);
        queue_error(w, c, 429, close, "too many failed authentication attempts from this address");
        return;
    }
    if (auth == AUTH_FAIL) {
        atomic_fetch_add_explicit(&w->st.auth_failures, 1, memory_order_relaxed);
        queue_resp(c, 401, close || w->draining, 0, UNAUTHORIZED_BODY);
        return;
    }
    if (req->content_encoding.n) {
        if (slice_ieq(req->content_encoding, "gzip") ||
            slice_ieq(req->content_encoding, "x-gzip")) {
            long n = gunzip(w, body, blen);
            if (n < 0) {
                queue_error(w, c, (int)-n, close || n == -413,
                            n == -400 ? "body is not valid gzip" : NULL);
                return;
            }
            body = w->scratch;
            blen = (size_t)n;
        } else if (!slice_ieq(req->content_encoding, "identity")) {
            queue_error(w, c, 415, close, "unsupported Content-Encoding (use gzip or identity)");
            return;
        }
    }
    enum { CT_JSON, CT_NDJSON, CT_OCTET } ct;
    if (!req->content_type.n || slice_ieq(req->content_type, "application/json"))
        ct = CT_JSON;
    else if (slice_ieq(req->content_type, "application/x-ndjson") ||
             slice_ieq(req->content_type, "application/ndjson"))
        ct = CT_NDJSON;
    else if (slice_ieq(req->content_type, "application/octet-stream"))
        ct = CT_OCTET;
    else {
        queue_error(w, c, 415, close,
                    "unsupported Content-Type: send 'Content-Type: application/json', "
                    "application/x-ndjson or application/octet-stream");
        return;
    }
    if (ct == CT_OCTET && blen == 0) {
        queue_error(w, c, 400, close, "empty body");
        return;
    }

    struct split_ctx s = {.rec = {.proto = RECORD_PROTO_HTTP,
                                  .ctype = ct == CT_OCTET ? RECORD_CTYPE_OCTET : RECORD_CTYPE_JSON,
                                  .device = c->device,
                                  .recv_ns = realtime_ns()}};
    int rc = commit_log_get(w, c->org, &s.log);
    if (rc) {
        queue_error(w, c, 503, close, "storage unavailable");
        return;
    }
    struct commit_mark mark;
    commit_mark(s.log, &mark);
    struct json_error jerr = {0};
    size_t count = 0;
    int jrc;
    /* the splitter's outcome and its count are separate: a failed append is
     * JSON_STOPPED, never a count of accepted readings */
    if (ct == CT_OCTET) {
        jrc = append_reading(&s, body, blen) ? JSON_STOPPED : JSON_OK;
        count = jrc == JSON_OK;
    } else if (ct == CT_JSON) {
        jrc = json_split_readings(body, blen, append_reading, &s, &count, &jerr);
    } else {
        jrc = json_split_ndjson(body, blen, append_reading, &s, &count, &jerr);
    }
    long n = jrc == JSON_OK ? (long)count : jrc;
    if (n < 0) {
        commit_rollback(s.log, &mark);
        if (n == JSON_ERROR) {
            char why[200];
            snprintf(why, sizeof why, "malformed JSON in reading %zu at byte %zu: %s", jerr.element,
                     jerr.offset, jerr.msg ? jerr.msg : "invalid");
            queue_error(w, c, 400, close, why);
        } else {
            queue_error(w, c, 503, close, "storage unavailable");
        }
        return;
    }
    atomic_fetch_add_explicit(&w->st.readings, (uint64_t)n, memory_order_relaxed);
    uint32_t idx = queue_resp(c, 202, close || w->draining, (uint32_t)n, NULL);
    if (n > 0 && commit_wait(w, s.log, c, idx)) {
        commit_rollback(s.log, &mark);
        struct pending_resp *p = &c->q[idx % CONN_QUEUE];
        p->status = 503;
        p->msg = strdup("{\"error\":\"storage unavailable\"}");
    }
}

static void handle_admin(struct worker *w, struct conn *c, const struct http_request *req)
{
    struct sluice_engine *e = w->eng;
    bool close = !req->keep_alive;
    bool ready = atomic_load(&e->ready_workers) == e->nworkers && !w->draining;
    if (req->method != HTTP_METHOD_GET && req->method != HTTP_METHOD_HEAD) {
        queue_error(w, c, 405, close, "use GET");
    } else if (slice_eq(req->path, "/healthz")) {
        queue_resp(c, 200, close, 0, "{\"status\":\"ok\"}");
    } else if (slice_eq(req->path, "/readyz")) {
        queue_resp(c, ready ? 200 : 503, close, 0,
                   ready ? "{\"ready\":true}" : "{\"ready\":false}");
    } else if (slice_eq(req->path, "/metrics")) {
        char body[2048];
        size_t len = 0;
#define METRIC(name, field, help)                                                                  \
    do {                                                                                           \
        uint64_t v = 0;                                                                            \
        for (unsigned i = 0; i < e->nworkers; i++)                                                 \
            v += atomic_load_explicit(&e->workers[i].st.field, memory_order_relaxed);              \
        len += (size_t)snprintf(body + len, sizeof body - len,                                     \
                                "# HELP sluice_" name " " help "\n# TYPE sluice_" name             \
                                " counter\nsluice_" name " %llu\n",                                \
                                (unsigned long long)v);                                            \
    } while (0)
        METRIC("connections_accepted_total", accepted_conns, "TCP connections accepted");
        METRIC("connections_closed_total", closed_conns, "TCP connections closed");
        METRIC("http_requests_total", requests, "HTTP requests parsed");
        METRIC("readings_total", readings, "readings appended to logs");
        METRIC("commits_total", commits, "group commits (write + fdatasync) completed");
        METRIC("commit_failures_total", commit_failures, "group commits that failed");
        METRIC("auth_failures_total", auth_failures, "requests with a missing/unknown token");
        METRIC("auth_throttled_total", auth_throttled,
               "requests refused 429: too many failed attempts from their address");
        METRIC("recv_enobufs_total", enobufs, "recv completions without a free buffer");
        METRIC("bytes_in_total", bytes_in, "bytes received");
        METRIC("bytes_out_total", bytes_out, "bytes sent");
#undef METRIC
        char head[160];
        int hn = snprintf(head, sizeof head,
                          "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                          "Content-Length: %zu\r\nConnection: %s\r\n\r\n",
                          len, close ? "close" : "keep-alive");
        /* only sent directly when nothing is queued ahead of it (admin clients
         * do not pipeline); otherwise fall back to the JSON path's ordering */
        if (c->qhead == c->qtail) {
            worker_send(w, c, head, (size_t)hn);
            worker_send(w, c, body, len);
            if (close) c->stop_input = true;
        } else {
            queue_error(w, c, 503, close, "retry");
        }
    } else {
        queue_error(w, c, 404, close, "not found");
    }
}

static void handle_request(struct worker *w, struct conn *c, const struct http_request *req,
                           const char *body, size_t blen)
{
    atomic_fetch_add_explicit(&w->st.requests, 1, memory_order_relaxed);
    if (c->kind == LISTENER_ADMIN) {
        handle_admin(w, c, req);
        return;
    }
    /* checked before anything else, and the URL is never logged */
    if (url_has_token(req)) {
        queue_error(w, c, 400, !req->keep_alive,
                    "token in URL refused: send it in the X-Auth-Token header");
        return;
    }
    if (slice_eq(req->path, "/v1/readings"))
        handle_readings(w, c, req, body, blen);
    else
        queue_error(w, c, 404, !req->keep_alive, "not found");
}

size_t ingest_http(struct worker *w, struct conn *c, char *p, size_t n)
{
    const sluice_config *cfg = &w->eng->cfg;
    struct http_request *req = &w->req;
    size_t off = 0;
    while (off < n && !c->stop_input && !c->closing && c->qtail - c->qhead < CONN_QUEUE) {
        size_t avail = n - off;
        bool parsed = false;
        if (c->phase == PHASE_IDLE) {
            /* absolute from the request's first byte: trickling cannot extend it */
            c->phase = PHASE_HEAD;
            c->req_deadline_ms = w->now_ms + cfg->header_timeout_ms;
            c->head_scanned = 0;
        }
        if (c->phase == PHASE_HEAD) {
            /* a head can only complete, or show an error, once a line ends: bytes
             * trickling in without a newline are not parsed again (slowloris) */
            if (avail < HTTP_MAX_HEADER_BYTES && c->head_scanned <= avail &&
                !memchr(p + off + c->head_scanned, '\n', avail - c->head_scanned)) {
                c->head_scanned = (uint32_t)avail;
                break;
            }
            int hl = http_parse_request(p + off, avail, HTTP_MAX_HEADER_BYTES, req);
            if (hl == HTTP_INCOMPLETE) {
                c->head_scanned = (uint32_t)avail;
                break;
            }
            if (hl < 0) {
                queue_error(w, c, -hl, true, req->error);
                break;
            }
            uint64_t cl = req->content_length < 0 ? 0 : (uint64_t)req->content_length;
            if (!req->chunked && cl > cfg->max_body) {
                /* refuse before reading it; the unread body makes the stream unusable */
                queue_error(w, c, 413, true, "body too large");
                break;
            }
            c->phase = PHASE_BODY;
            c->req_deadline_ms = w->now_ms + cfg->body_timeout_ms;
            c->chunked = (struct http_chunked){0};
            c->sent_continue = false;
            c->head_len = (uint32_t)hl;
            c->body_need = cl;
            c->body_chunked = req->chunked;
            c->expect_continue = req->expect_continue;
            parsed = true;
        }
        /* the body of a known head: the head is parsed again only when the body
         * is complete (its slices point into this buffer, which may have moved) */
        size_t hl = c->head_len, bavail = avail - hl, blen, total;
        char *body = p + off + hl;
        if (c->body_chunked) {
            long r = http_chunked_decode(&c->chunked, body, bavail, cfg->max_body);
            if (r == HTTP_INCOMPLETE) goto incomplete;
            if (r < 0) {
                queue_error(w, c, (int)-r, true, r == -413 ? "body too large" : "bad chunked body");
                break;
            }
            blen = c->chunked.out;
            total = hl + (size_t)r;
        } else {
            if (bavail < c->body_need) goto incomplete;
            blen = (size_t)c->body_need;
            total = hl + blen;
        }
        /* same bytes, same verdict: this only refreshes the slices */
        if (!parsed) http_parse_request(p + off, hl, HTTP_MAX_HEADER_BYTES, req);
        handle_request(w, c, req, body, blen);
        off += total;
        c->phase = PHASE_IDLE;
        continue;
    incomplete:
        /* tell a client waiting on Expect: 100-continue to send the body, unless
         * earlier responses are still queued (a 100 must not overtake them) */
        if (c->expect_continue && !c->sent_continue && c->qhead == c->qtail) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            worker_send(w, c, cont, sizeof cont - 1);
            c->sent_continue = true;
        }
        break;
    }
    ingest_flush_responses(w, c);
    ingest_deadline(w, c);
    return off;
}

void ingest_deadline(struct worker *w, struct conn *c)
{
    /* one deadline per connection: the request's, or keep-alive idleness; none
     * while responses wait for a commit (the disk, not the client, is slow) */
    uint64_t deadline = c->phase != PHASE_IDLE ? c->req_deadline_ms
                        : c->qhead == c->qtail ? w->now_ms + w->eng->cfg.idle_timeout_ms
                                               : 0;
    if (!c->closing && deadline != c->deadline_ms) worker_set_deadline(w, c, deadline);
}

void ingest_timeout(struct worker *w, struct conn *c)
{
    if (c->closing) return;
    if ((c->phase != PHASE_IDLE || c->rlen) && !c->stop_input) {
        /* slow headers or body: answer 408 and close */
        queue_error(w, c, 408, true, "request timeout");
        ingest_flush_responses(w, c);
        c->stop_input = true;
        worker_conn_progress(w, c);
    } else if (c->qhead == c->qtail) {
        conn_close(w, c);
    }
}
