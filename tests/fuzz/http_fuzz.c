/* tests/fuzz/http_fuzz.c — libFuzzer target for the HTTP/1.1 parser and chunked decoder.
 *
 * The input is one connection's byte stream: parse a head, take its body (chunked or
 * Content-Length), go on with the next pipelined request while the connection stays
 * keep-alive. Invariants checked on every step (abort on violation):
 *   - consumed <= len, head <= max_header, every slice lies inside the head;
 *   - verdicts are in the documented set, errors carry a reason;
 *   - prefix consistency: a shorter buffer gives HTTP_INCOMPLETE or the same verdict
 *     (a request must not change meaning when it arrives in pieces);
 *   - chunked: out <= in <= len, the consumed count equals st.in, and feeding the
 *     body in two pieces gives the same verdict and decoded bytes as one piece;
 *   - http_header_find agrees with the pre-extracted X-Auth-Token.
 * Buffers handed to the parser are exactly sized heap copies, so ASan sees any
 * over-read. Seeds: $SLUICE_CORPORA/http1-h2o (h2o's HTTP/1 fuzzing corpus).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/http.h"

#define MAX_BODY (64u * 1024)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "http_fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dup_exact(const char *p, size_t n)
{
    char *d = malloc(n ? n : 1);
    CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

static int inside(struct http_slice s, const char *b, size_t n)
{
    return s.p == NULL ? s.n == 0 : (s.p >= b && s.p + s.n <= b + n);
}

static int parse_copy(const char *p, size_t n, size_t max_header, struct http_request *req)
{
    char *c = dup_exact(p, n);
    int r = http_parse_request(c, n, max_header, req);
    free(c);
    return r;
}

static void check_head(const char *b, size_t rest, size_t max_header, int r,
                       struct http_request *req)
{
    size_t cap = max_header ? max_header : HTTP_MAX_HEADER_BYTES;
    struct http_slice v;

    CHECK(r == HTTP_INCOMPLETE || r > 0 || r == -400 || r == -431 || r == -505);
    if (r <= 0) {
        CHECK((r == HTTP_INCOMPLETE) == (req->error == NULL));
        return;
    }
    CHECK((size_t)r <= rest && (size_t)r <= cap);
    CHECK(req->error == NULL);
    CHECK(req->nheaders <= HTTP_MAX_HEADERS);
    CHECK(inside(req->method_name, b, (size_t)r) && req->method_name.n > 0);
    CHECK(inside(req->target, b, (size_t)r) && req->target.n > 0);
    CHECK(inside(req->path, b, (size_t)r) && inside(req->query, b, (size_t)r));
    CHECK(inside(req->token, b, (size_t)r) && inside(req->content_type, b, (size_t)r));
    CHECK(inside(req->content_encoding, b, (size_t)r) && inside(req->authorization, b, (size_t)r));
    for (size_t i = 0; i < req->nheaders; i++) {
        CHECK(inside(req->headers[i].name, b, (size_t)r) && req->headers[i].name.n > 0);
        CHECK(inside(req->headers[i].value, b, (size_t)r));
    }
    CHECK(req->minor_version == 0 || req->minor_version == 1);
    CHECK(!(req->chunked && req->content_length >= 0));
    CHECK(req->content_length >= -1 && req->content_length <= HTTP_MAX_CONTENT_LENGTH);
    CHECK(req->minor_version == 0 || req->has_host);
    if (req->token.p) {
        CHECK(http_header_find(req, "X-AUTH-TOKEN", &v) == 1);
        CHECK(v.p == req->token.p && v.n == req->token.n);
    } else {
        CHECK(http_header_find(req, "x-auth-token", &v) == 0);
    }
}

/* A prefix of the stream must not get a different verdict than the whole. */
static void check_prefix(const char *b, size_t rest, size_t max_header, int whole, size_t cut)
{
    static struct http_request preq;
    int pr;

    if (cut >= rest) return;
    pr = parse_copy(b, cut, max_header, &preq);
    if (whole > 0 && cut < (size_t)whole)
        CHECK(pr == HTTP_INCOMPLETE);
    else
        CHECK(pr == HTTP_INCOMPLETE || pr == whole);
}

/* Decodes body[0..n) in one go, then again in two pieces split at cut; both must agree. */
static long decode_checked(char *body, size_t n, size_t cut, struct http_chunked *st)
{
    struct http_chunked st2 = {0};
    char *copy = dup_exact(body, n);
    long r = http_chunked_decode(st, body, n, MAX_BODY), r2;

    CHECK(r == HTTP_INCOMPLETE || r >= 0 || r == -400 || r == -413 || r == -431);
    CHECK(st->out <= st->in && st->in <= n && st->out <= MAX_BODY);
    if (r >= 0) CHECK((size_t)r == st->in);
    /* repeated calls are stable */
    CHECK(http_chunked_decode(st, body, n, MAX_BODY) == r);

    if (cut > n) cut = n;
    r2 = http_chunked_decode(&st2, copy, cut, MAX_BODY);
    CHECK(st2.in <= cut);
    if (r2 == HTTP_INCOMPLETE) r2 = http_chunked_decode(&st2, copy, n, MAX_BODY);
    CHECK(r2 == r);
    if (r >= 0) {
        CHECK(st2.out == st->out && memcmp(copy, body, st->out) == 0);
        /* bytes after the body are untouched */
        CHECK(memcmp(copy + r, body + r, n - (size_t)r) == 0);
    }
    free(copy);
    return r;
}

/* The response writer never writes past cap and either fits exactly or refuses. */
static void check_response(const uint8_t *data, size_t size)
{
    static const int codes[] = {100, 200, 202, 204, 400, 401, 413, 431, 503, 505, 299, 42};
    char out[512], *exact;
    int status, n, n2;
    size_t cap, body_len;

    if (size < 3) return;
    status = codes[data[0] % (sizeof(codes) / sizeof(codes[0]))];
    cap = data[1];
    body_len = size - 3 < 200 ? size - 3 : 200;
    n = http_write_response(out, sizeof(out), status, data[2] & 1,
                            (data[2] & 2) ? "X-A: b\r\n" : NULL, (const char *)data + 3, body_len);
    if (n < 0) return;
    CHECK((size_t)n <= sizeof(out) && memcmp(out, "HTTP/1.1 ", 9) == 0);
    exact = malloc(cap ? cap : 1);
    CHECK(exact != NULL);
    n2 = http_write_response(exact, cap, status, data[2] & 1, (data[2] & 2) ? "X-A: b\r\n" : NULL,
                             (const char *)data + 3, body_len);
    CHECK(cap >= (size_t)n ? n2 == n && memcmp(exact, out, (size_t)n) == 0 : n2 == -1);
    free(exact);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http_request req; /* ~2 KiB: keep it off the fuzzer's stack */
    char *buf = dup_exact((const char *)data, size);
    size_t off = 0;
    /* The last byte steers the cap so the -431 paths get exercised too. */
    size_t max_header = size && (data[size - 1] & 1) ? (size_t)data[size - 1] * 4 : 0;
    unsigned steps = 0;

    while (off < size && steps++ < 64) {
        size_t rest = size - off;
        /* parse from an exactly sized copy: an over-read past rest trips ASan */
        char *head = dup_exact(buf + off, rest);
        int r = http_parse_request(head, rest, max_header, &req);

        check_head(head, rest, max_header, r, &req);
        check_prefix(head, rest, max_header, r, rest - 1);
        check_prefix(head, rest, max_header, r, r > 0 ? (size_t)r - 1 : rest / 2);
        free(head);
        /* the slices in req point into the freed copy: reparse in place to go on */
        if (r <= 0) break;
        r = http_parse_request(buf + off, rest, max_header, &req);
        CHECK(r > 0);
        off += (size_t)r;
        rest -= (size_t)r;

        if (req.chunked) {
            struct http_chunked st = {0};
            char *body = dup_exact(buf + off, rest);
            long c = decode_checked(body, rest, rest / 3, &st);
            free(body);
            if (c < 0) break;
            off += (size_t)c;
        } else if (req.content_length > 0) {
            if ((uint64_t)req.content_length > rest) break;
            off += (size_t)req.content_length;
        }
        if (!req.keep_alive) break;
    }
    CHECK(off <= size);
    free(buf);
    check_response(data, size);
    return 0;
}
