/* engine/session_http.c — the HTTP/1.1 session: the device API (POST
 * /v1/readings) on the HTTP listener, and the admin endpoints (admin.c decides
 * those answers) on the admin listener.
 *
 * Requests are parsed in place from whatever buffer holds the connection's
 * input (a provided recv buffer, or the reassembly buffer). A request is
 * consumed only when complete, so the view always starts at a request
 * boundary and a request whose body is still arriving is parsed again when
 * more bytes come (the head is at most 8 KiB; the chunked decoder's state
 * lives in the session, and the framing it has decoded is dropped as it goes).
 *
 * Answers leave in request order. One that waits for its readings to become
 * durable holds the ones behind it; the queue has room for SESSION_HTTP_QUEUE,
 * then parsing waits. Every limit has an answer: 413 for what can never be
 * stored, 503 + Retry-After for a budget that is used up right now, 429 for
 * an address that keeps failing authentication.
 */
#include "engine/session_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "engine/admin.h"
#include "engine/conn.h"
#include "engine/ingest.h"
#include "protocols/json.h"

#define SESSION_HTTP_QUEUE 32 /* answers a connection may have outstanding (pipelining depth) */
#define UNAUTHORIZED_BODY  "{\"error\":\"unauthorized\"}"
#define BODY_STEP          (64u << 10) /* chunked bodies: memory is asked for this much ahead */

/* A response waiting its turn (or its readings' commit); they leave in order. */
struct pending_resp {
    uint16_t status;
    bool close;
    bool text;       /* body is Prometheus text, not JSON */
    uint8_t waiting; /* commits still outstanding for this response */
    uint32_t accepted;
    char *msg; /* body (malloc'd) or NULL for {"accepted":N} */
};

enum http_phase { PHASE_IDLE = 0, PHASE_HEAD, PHASE_BODY };

struct http_sess {
    bool admin;
    uint8_t phase;
    struct http_chunked chunked;
    uint64_t req_deadline_ms; /* absolute deadline of the request in progress */
    uint32_t head_scanned;    /* head bytes already searched for a newline */
    uint32_t head_len;        /* once the head parsed: its length ... */
    uint64_t body_need;       /* ... its Content-Length ... */
    bool body_chunked;        /* ... or chunked framing */
    bool expect_continue;
    bool sent_continue;
    bool mem_wait; /* the body waits for request memory (reading stopped) */

    struct pending_resp q[SESSION_HTTP_QUEUE];
    uint32_t qhead, qtail;

    /* the last token seen on this connection and what it resolved to */
    uint64_t auth_gen;
    uint8_t tok_len;
    char tok[AUTH_TOKEN_MAX];
    uint32_t device, org;
    bool tok_ok;
};

/* Per worker, shared by its HTTP sessions: the request being handled (large:
 * kept off the stack) and the gunzip output buffer. */
struct http_worker {
    struct http_request req;
    char *scratch; /* max_body bytes, allocated on the first gzip body */
    z_stream zs;
    bool zs_ready;
};

static struct http_sess *sess(const struct conn *c)
{
    return c->sess;
}

static struct http_worker *hw(struct worker *w)
{
    if (!w->http) {
        w->http = calloc(1, sizeof(struct http_worker));
        if (!w->http) abort(); /* a few KiB once per worker: control-plane allocation */
    }
    return w->http;
}

void session_http_worker_free(struct worker *w)
{
    struct http_worker *h = w->http;
    if (!h) return;
    if (h->zs_ready) inflateEnd(&h->zs);
    free(h->scratch);
    free(h);
    w->http = NULL;
}

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

static bool queue_full(const struct http_sess *s)
{
    return s->qtail - s->qhead >= SESSION_HTTP_QUEUE;
}

/* Queues a response (the caller checked there is room); msg (taken, malloc'd)
 * is the body, NULL for {"accepted":N}. A response that closes stops parsing. */
static uint32_t queue_resp(struct worker *w, struct conn *c, int status, bool close,
                           uint32_t accepted, char *msg)
{
    struct http_sess *s = sess(c);
    uint32_t idx = s->qtail++;
    struct pending_resp *p = &s->q[idx % SESSION_HTTP_QUEUE];
    *p = (struct pending_resp){.status = (uint16_t)status,
                               .close = close || w->draining,
                               .accepted = accepted,
                               .msg = msg};
    if (p->close) conn_stop(w, c);
    return idx;
}

static void queue_error(struct worker *w, struct conn *c, int status, bool close, const char *why)
{
    char body[320];
    if (!why) why = http_status_text(status);
    snprintf(body, sizeof body, "{\"error\":\"%s\"}", why);
    queue_resp(w, c, status, close, 0, strdup(body));
}

/* Writes the answers whose turn has come (not waiting for a commit), in order,
 * while the output has room. */
static void flush_responses(struct worker *w, struct conn *c)
{
    struct http_sess *s = sess(c);
    while (s->qhead != s->qtail && !c->closing && !conn_output_full(c)) {
        struct pending_resp *p = &s->q[s->qhead % SESSION_HTTP_QUEUE];
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
        if (s->admin && p->status == 405) extra = "Allow: GET, HEAD\r\n";
        bool keep = !p->close && !w->draining;
        if (!keep) conn_stop(w, c);
        size_t cap = 256 + blen;
        char *out = conn_send_reserve(w, c, cap);
        if (out) {
            int n = http_write_response_typed(
                out, cap, p->status, keep,
                p->text ? "text/plain; version=0.0.4" : "application/json", extra, body, blen);
            if (n > 0) conn_send_commit(w, c, (size_t)n);
        }
        free(p->msg);
        p->msg = NULL;
        s->qhead++;
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

/* Resolves the request's token, hashing it once per connection while the token
 * and the auth table stay the same (keep-alive devices send the same one). */
static int authenticate(struct worker *w, struct conn *c, struct http_slice tok)
{
    struct http_sess *s = sess(c);
    if (s->tok_ok && s->auth_gen == w->auth_gen && token_eq(s->tok, s->tok_len, tok.p, tok.n))
        return AUTH_OK;
    s->tok_ok = false;
    const struct auth_entry *e;
    int rc;
    uint8_t cert[STORE_DIGEST_LEN];
    if (!tok.n && conn_client_cert_digest(c, cert))
        rc =
            auth_device_cert(w->auth, cert, &e); /* mutual TLS: the certificate is the credential */
    else
        rc = auth_device(w->auth, w->authrl, c->peer, w->now_ms, tok.p, tok.n, &e);
    if (rc != AUTH_OK) return rc;
    if (tok.n) memcpy(s->tok, tok.p, tok.n); /* none: the client certificate authenticated */
    s->tok_len = (uint8_t)tok.n;
    s->device = e->device;
    s->org = e->org;
    s->auth_gen = w->auth_gen;
    s->tok_ok = true;
    return AUTH_OK;
}

/* Inflates a gzip body into the worker's scratch buffer, at most max_body bytes.
 * Returns the inflated length, -413 when larger, -400 when not valid gzip,
 * -503 when memory for it cannot be had. */
static long gunzip(struct worker *w, const char *in, size_t n)
{
    struct http_worker *h = hw(w);
    size_t cap = w->eng->cfg.max_body;
    if (!h->scratch) {
        h->scratch = malloc(cap + 1);
        if (!h->scratch) return -503;
    }
    if (!h->zs_ready) {
        if (inflateInit2(&h->zs, 16 + MAX_WBITS) != Z_OK) return -503;
        h->zs_ready = true;
    }
    z_stream *zs = &h->zs;
    inflateReset(zs);
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)n;
    zs->next_out = (Bytef *)h->scratch;
    zs->avail_out = (uInt)cap + 1; /* one byte more than allowed detects "too large" */
    int rc = inflate(zs, Z_FINISH);
    size_t out = cap + 1 - zs->avail_out;
    if (out > cap) return -413;
    if (rc != Z_STREAM_END || zs->avail_in != 0) return -400;
    return (long)out;
}

struct split_ctx {
    struct ingest_txn txn;
    struct ingest_meta meta;
    size_t element; /* index of the reading being added */
    int err;        /* why ingest_add refused it */
};

static int add_reading(void *ctx, const char *p, size_t n)
{
    struct split_ctx *s = ctx;
    int rc = ingest_add(&s->txn, &s->meta, p, n);
    if (rc) {
        s->err = rc;
        return 1;
    }
    s->element++;
    return 0;
}

/* The answer when ingest refused a reading: what can never be stored is 413
 * (never worth a retry), what failed for now is 503. */
static void refuse_readings(struct worker *w, struct conn *c, bool close, const struct split_ctx *s)
{
    char why[200];
    if (s->err == -EMSGSIZE) {
        worker_count(&w->st.request_too_large, 1);
        snprintf(why, sizeof why, "reading %zu is larger than a reading may be (%u MiB)",
                 s->element, RECORD_MAX_BODY >> 20);
        queue_error(w, c, 413, close, why);
    } else if (s->err == -E2BIG) {
        worker_count(&w->st.request_too_large, 1);
        snprintf(why, sizeof why,
                 "request too large: its readings take more than %u MiB as records (%zu readings "
                 "so far); send fewer per request",
                 INGEST_REQUEST_MAX >> 20, s->element);
        queue_error(w, c, 413, close, why);
    } else {
        queue_error(w, c, 503, close, "storage unavailable");
    }
}

static void handle_readings(struct worker *w, struct conn *c, const struct http_request *req,
                            const char *body, size_t blen)
{
    struct http_sess *se = sess(c);
    bool close = !req->keep_alive;
    if (req->method != HTTP_METHOD_POST) {
        queue_error(w, c, 405, close, "use POST");
        return;
    }
    int auth = authenticate(w, c, req->token);
    if (auth == AUTH_THROTTLED) {
        /* the failing client is slowed down, and must reconnect to try again */
        worker_count(&w->st.auth_throttled, 1);
        queue_error(w, c, 429, true, "too many failed authentication attempts from this address");
        return;
    }
    if (auth == AUTH_FAIL) {
        worker_count(&w->st.auth_failures, 1);
        queue_resp(w, c, 401, close, 0, strdup(UNAUTHORIZED_BODY));
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
            body = hw(w)->scratch;
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

    struct split_ctx s = {
        .meta = {.proto = conn_is_tls(c) ? RECORD_PROTO_HTTPS : RECORD_PROTO_HTTP,
                 .ctype = ct == CT_OCTET ? RECORD_CTYPE_OCTET : RECORD_CTYPE_JSON}};
    if (ingest_begin(w, se->org, se->device, &s.txn)) {
        queue_error(w, c, 503, close, "storage unavailable");
        return;
    }
    struct json_error jerr = {0};
    size_t count = 0;
    int rc;
    if (ct == CT_OCTET) {
        rc = add_reading(&s, body, blen) ? JSON_STOPPED : JSON_OK;
        count = s.element;
    } else if (ct == CT_JSON) {
        rc = json_split_readings(body, blen, add_reading, &s, &count, &jerr);
    } else {
        rc = json_split_ndjson(body, blen, add_reading, &s, &count, &jerr);
    }
    if (rc != JSON_OK) {
        /* all or nothing: whatever was added of this request goes */
        ingest_abort(&s.txn);
        if (rc == JSON_ERROR) {
            char why[200];
            snprintf(why, sizeof why, "malformed JSON in reading %zu at byte %zu: %s", jerr.element,
                     jerr.offset, jerr.msg ? jerr.msg : "invalid");
            queue_error(w, c, 400, close, why);
        } else {
            refuse_readings(w, c, close, &s);
        }
        return;
    }
    uint32_t idx = queue_resp(w, c, 202, close, (uint32_t)count, NULL);
    rc = ingest_commit(&s.txn, c, idx);
    if (rc == 0) {
        se->q[idx % SESSION_HTTP_QUEUE].waiting++;
    } else if (rc < 0) {
        struct pending_resp *p = &se->q[idx % SESSION_HTTP_QUEUE];
        p->status = 503;
        p->msg = strdup("{\"error\":\"storage unavailable\"}");
    }
}

static void handle_admin(struct worker *w, struct conn *c, const struct http_request *req)
{
    struct buf body = {0};
    const char *ctype;
    int status = admin_answer(w, req, &body, &ctype);
    if (!body.p) {
        queue_error(w, c, 503, !req->keep_alive, "out of memory");
        return;
    }
    uint32_t idx = queue_resp(w, c, status, !req->keep_alive, 0, body.p);
    sess(c)->q[idx % SESSION_HTTP_QUEUE].text = strcmp(ctype, "application/json") != 0;
}

static void handle_request(struct worker *w, struct conn *c, const struct http_request *req,
                           const char *body, size_t blen)
{
    worker_count(&w->st.requests, 1);
    if (sess(c)->admin) {
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

/* Whether a complete request will add readings, so waits for commit room. */
static bool adds_readings(const struct http_sess *s, const struct http_request *req)
{
    return !s->admin && req->method == HTTP_METHOD_POST && slice_eq(req->path, "/v1/readings");
}

static void set_deadline(struct worker *w, struct conn *c)
{
    /* one deadline per connection: the request's, or keep-alive idleness; none
     * while answers wait for a commit (the disk, not the client, is slow) */
    struct http_sess *s = sess(c);
    uint64_t deadline = s->phase != PHASE_IDLE ? s->req_deadline_ms
                        : s->qhead == s->qtail ? w->now_ms + w->eng->cfg.idle_timeout_ms
                                               : 0;
    conn_set_deadline(w, c, deadline);
}

/* A body still arriving needs `need` bytes buffered: ask the request memory
 * budget. A body of known size gets its whole buffer at once, so once let in it
 * is never refused halfway; when the budget is used by other connections'
 * bodies it waits (reading stops) until they finish, and its deadline answers
 * 503 if they do not. A chunked body of unknown size grows step by step and is
 * answered 503 + Retry-After (closing) when the budget has no room for the
 * step. False when the body cannot go on now. */
static bool hold_more(struct worker *w, struct conn *c, size_t need)
{
    struct http_sess *s = sess(c);
    if (conn_can_hold(w, c, need)) {
        s->mem_wait = false;
        if (s->body_chunked || !conn_reserve_input(w, c, need)) return true;
    } else if (!s->body_chunked && conn_others_hold(w, c)) {
        s->mem_wait = true;
        conn_wait_room(w, c);
        return false;
    }
    s->mem_wait = false;
    worker_count(&w->st.request_memory_refused, 1);
    queue_error(w, c, 503, true,
                "server busy: too many unfinished requests held in memory; retry later");
    return false;
}

static size_t input(struct worker *w, struct conn *c, char *p, size_t *np)
{
    struct http_sess *s = sess(c);
    const sluice_config *cfg = &w->eng->cfg;
    struct http_request *req = &hw(w)->req;
    size_t off = 0, n = *np;
    flush_responses(w, c);
    while (off < n && !c->stopped && !c->closing) {
        if (conn_output_full(c)) break; /* resumed when the client has read */
        if (queue_full(s)) {
            conn_block(c); /* resumed when a commit completes */
            break;
        }
        size_t avail = n - off;
        bool parsed = false;
        if (s->phase == PHASE_IDLE) {
            /* absolute from the request's first byte: trickling cannot extend it */
            s->phase = PHASE_HEAD;
            s->req_deadline_ms = w->now_ms + cfg->header_timeout_ms;
            s->head_scanned = 0;
        }
        if (s->phase == PHASE_HEAD) {
            /* a head can only complete, or show an error, once a line ends: bytes
             * trickling in without a newline are not parsed again (slowloris) */
            if (avail < HTTP_MAX_HEADER_BYTES && s->head_scanned <= avail &&
                !memchr(p + off + s->head_scanned, '\n', avail - s->head_scanned)) {
                s->head_scanned = (uint32_t)avail;
                break;
            }
            int hl = http_parse_request(p + off, avail, HTTP_MAX_HEADER_BYTES, req);
            if (hl == HTTP_INCOMPLETE) {
                s->head_scanned = (uint32_t)avail;
                break;
            }
            if (hl < 0) {
                queue_error(w, c, -hl, true, req->error);
                break;
            }
            uint64_t cl = req->content_length < 0 ? 0 : (uint64_t)req->content_length;
            if (!req->chunked && cl > cfg->max_body) {
                /* refuse before reading it; the unread body makes the stream unusable */
                worker_count(&w->st.request_too_large, 1);
                queue_error(w, c, 413, true, "body too large");
                break;
            }
            s->phase = PHASE_BODY;
            s->req_deadline_ms = w->now_ms + cfg->body_timeout_ms;
            s->chunked = (struct http_chunked){0};
            s->sent_continue = false;
            s->head_len = (uint32_t)hl;
            s->body_need = cl;
            s->body_chunked = req->chunked;
            s->expect_continue = req->expect_continue;
            s->mem_wait = false;
            parsed = true;
        }
        /* the body of a known head: the head is parsed again only when the body
         * is complete (its slices point into this buffer, which may have moved) */
        size_t hl = s->head_len, bavail = avail - hl, blen, total;
        char *body = p + off + hl;
        if (s->body_chunked) {
            long r = http_chunked_decode(&s->chunked, body, bavail, cfg->max_body);
            if (r == HTTP_INCOMPLETE) {
                /* keep about the decoded size, not the framing around it */
                size_t left = http_chunked_compact(&s->chunked, body, bavail);
                n -= bavail - left;
                if (!hold_more(w, c, hl + s->chunked.out + BODY_STEP)) break;
                goto incomplete;
            }
            if (r < 0) {
                if (r == -413) worker_count(&w->st.request_too_large, 1);
                queue_error(w, c, (int)-r, true,
                            r == -413   ? "body too large"
                            : r == -431 ? "chunked trailer section too large"
                                        : "bad chunked body");
                break;
            }
            blen = s->chunked.out;
            total = hl + (size_t)r;
        } else {
            if (bavail < s->body_need) {
                if (!hold_more(w, c, hl + s->body_need)) break;
                goto incomplete;
            }
            blen = (size_t)s->body_need;
            total = hl + blen;
        }
        /* same bytes, same verdict: this only refreshes the slices */
        if (!parsed) http_parse_request(p + off, hl, HTTP_MAX_HEADER_BYTES, req);
        if (adds_readings(s, req) && !ingest_has_room(w)) {
            /* the worker's commit budget is used up: wait (reading stops), the
             * request stays buffered and is handled when commits complete */
            conn_wait_room(w, c);
            break;
        }
        handle_request(w, c, req, body, blen);
        off += total;
        s->phase = PHASE_IDLE;
        flush_responses(w, c);
        continue;
    incomplete:
        /* tell a client waiting on Expect: 100-continue to send the body, unless
         * earlier answers are still queued (a 100 must not overtake them) */
        if (s->expect_continue && !s->sent_continue && s->qhead == s->qtail) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            conn_send(w, c, cont, sizeof cont - 1);
            s->sent_continue = true;
        }
        break;
    }
    flush_responses(w, c);
    if (!c->closing) set_deadline(w, c);
    *np = n;
    return off;
}

static void durable(struct worker *w, struct conn *c, uint64_t cookie, int err)
{
    (void)w;
    struct http_sess *s = sess(c);
    struct pending_resp *p = &s->q[cookie % SESSION_HTTP_QUEUE];
    if (err && p->status == 202) {
        p->status = 503;
        p->msg = strdup("{\"error\":\"storage unavailable\"}");
    }
    if (p->waiting) p->waiting--;
}

static void timeout(struct worker *w, struct conn *c)
{
    struct http_sess *s = sess(c);
    if (c->stopped || conn_output_full(c)) {
        /* answered to close and the answer still not taken, or a client that
         * does not read its answers (nginx's send_timeout) */
        conn_close(w, c);
    } else if (s->mem_wait) {
        /* the server, not the client, was slow: the body never got memory */
        conn_unwait_room(w, c);
        s->mem_wait = false;
        if (queue_full(s)) {
            conn_close(w, c);
            return;
        }
        worker_count(&w->st.request_memory_refused, 1);
        queue_error(w, c, 503, true,
                    "server busy: too many unfinished requests held in memory; retry later");
        flush_responses(w, c);
        conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
    } else if (s->phase != PHASE_IDLE || c->in.len) {
        /* slow headers or body: answer 408 and close; the answer gets one
         * more header timeout to leave */
        if (queue_full(s)) {
            conn_close(w, c);
            return;
        }
        queue_error(w, c, 408, true, "request timeout");
        flush_responses(w, c);
        conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
    } else if (s->qhead == s->qtail) {
        conn_close(w, c); /* idle keep-alive */
    }
}

static void drain(struct worker *w, struct conn *c)
{
    struct http_sess *s = sess(c);
    /* idle, or connected and silent (no byte of a request yet): close now;
     * the others finish the request in progress and close after its answer */
    bool nothing_in_progress = c->in.len == 0 && (s->phase == PHASE_IDLE ||
                                                  (s->phase == PHASE_HEAD && s->head_scanned == 0));
    if (nothing_in_progress && s->qhead == s->qtail && !conn_output_full(c)) {
        conn_close(w, c);
        return;
    }
    if (s->phase == PHASE_IDLE || (s->phase == PHASE_HEAD && s->head_scanned == 0)) conn_stop(w, c);
    conn_post(w, c); /* the queued answers go out with Connection: close */
}

static bool idle(const struct conn *c)
{
    const struct http_sess *s = sess(c);
    return s->qhead == s->qtail;
}

static void open_device(struct worker *w, struct conn *c)
{
    struct http_sess *s = sess(c);
    /* the first request's header deadline starts at accept (nginx's
     * client_header_timeout), so a silent connection is cut off too */
    s->phase = PHASE_HEAD;
    s->req_deadline_ms = w->now_ms + w->eng->cfg.header_timeout_ms;
    conn_set_deadline(w, c, s->req_deadline_ms);
}

static void open_admin(struct worker *w, struct conn *c)
{
    sess(c)->admin = true;
    open_device(w, c);
}

static void close_sess(struct worker *w, struct conn *c)
{
    (void)w;
    struct http_sess *s = sess(c);
    for (uint32_t i = s->qhead; i != s->qtail; i++)
        free(s->q[i % SESSION_HTTP_QUEUE].msg);
}

static size_t max_input(const struct worker *w)
{
    /* a head, a body, the framing of the chunk being decoded, trailers */
    return HTTP_MAX_HEADER_BYTES + w->eng->cfg.max_body + HTTP_MAX_CHUNK_LINE +
           HTTP_MAX_TRAILER_BYTES + BODY_STEP;
}

/* sent to a client refused at the connection limit (conn_open) */
#define BUSY_REPLY                                                                                 \
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"                       \
    "Content-Length: 52\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"                            \
    "{\"error\":\"server busy: too many connections; retry\"}"

/* The device API and the admin endpoints share the HTTP framing; they differ
 * in what a request is answered with (open_admin marks the session). */
#define HTTP_SESSION_OPS(label, open_fn)                                                           \
    {                                                                                              \
        .name = label, .session_size = sizeof(struct http_sess), .max_input = max_input,           \
        .busy_reply = BUSY_REPLY, .open = open_fn, .input = input, .durable = durable,             \
        .timeout = timeout, .drain = drain, .idle = idle, .close = close_sess,                     \
    }

const struct session_ops session_http_ops = HTTP_SESSION_OPS("http", open_device);
const struct session_ops session_admin_ops = HTTP_SESSION_OPS("admin", open_admin);
