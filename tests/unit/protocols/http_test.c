/* tests/unit/protocols/http_test.c — HTTP/1.1 parser, chunked decoder, response writer.
 *
 * Inputs are placed so that their last byte is the last readable byte before a
 * PROT_NONE page (picohttpparser's trick): reading one byte too far faults even
 * without ASan. Every verdict is also checked for prefix consistency: each prefix
 * of an input must give HTTP_INCOMPLETE or the verdict of the whole input.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "protocols/http.h"

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- guard-page buffers ---------------------------------------------------------- */

struct guard {
    char *base;
    size_t body; /* readable bytes before the guard page */
    size_t maplen;
};

static void guard_init(struct guard *g, size_t cap)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    g->body = (cap + pg - 1) / pg * pg;
    if (g->body == 0) g->body = pg;
    g->maplen = g->body + pg;
    g->base = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(g->base != MAP_FAILED);
    cr_assert_eq(mprotect(g->base + g->body, pg, PROT_NONE), 0);
}

/* Copies data[0..n) so that it ends exactly at the guard page. */
static char *guard_put(struct guard *g, const void *data, size_t n)
{
    char *p = g->base + g->body - n;
    cr_assert(n <= g->body);
    memcpy(p, data, n);
    return p;
}

static void guard_free(struct guard *g)
{
    munmap(g->base, g->maplen);
}

static int slice_is(struct http_slice s, const char *want)
{
    return s.p && s.n == strlen(want) && memcmp(s.p, want, s.n) == 0;
}

static int slice_inside(struct http_slice s, const char *buf, size_t len)
{
    if (s.p == NULL) return s.n == 0;
    return s.p >= buf && s.p + s.n <= buf + len;
}

/* Parses data at the guard boundary, asserts every prefix gives HTTP_INCOMPLETE or
 * the same verdict, and every slice of a success lies inside the buffer. */
static int verdict_mh(const char *data, size_t n, size_t max_header)
{
    struct guard g;
    struct http_request req;
    int full;

    guard_init(&g, n);
    full = http_parse_request(guard_put(&g, data, n), n, max_header, &req);
    if (full > 0) {
        const char *b = g.base + g.body - n;
        cr_assert_leq((size_t)full, n);
        cr_assert(slice_inside(req.method_name, b, (size_t)full));
        cr_assert(slice_inside(req.target, b, (size_t)full));
        cr_assert(slice_inside(req.path, b, (size_t)full));
        cr_assert(slice_inside(req.query, b, (size_t)full));
        for (size_t i = 0; i < req.nheaders; i++) {
            cr_assert(slice_inside(req.headers[i].name, b, (size_t)full));
            cr_assert(slice_inside(req.headers[i].value, b, (size_t)full));
        }
        cr_assert_null(req.error);
    } else if (full != HTTP_INCOMPLETE) {
        cr_assert_not_null(req.error, "error %d without a reason", full);
    }
    for (size_t k = 0; k < n; k++) {
        int r = http_parse_request(guard_put(&g, data, k), k, max_header, &req);
        if (full > 0 && k < (size_t)full)
            cr_assert_eq(r, HTTP_INCOMPLETE, "prefix %zu/%zu of a request of %d: %d (%s)", k, n,
                         full, r, req.error ? req.error : "");
        else
            cr_assert(r == HTTP_INCOMPLETE || r == full, "prefix %zu/%zu: %d, whole: %d", k, n, r,
                      full);
    }
    guard_free(&g);
    return full;
}

static int verdict(const char *data, size_t n)
{
    return verdict_mh(data, n, 0);
}

#define EXPECT(lit, code)                                                                          \
    do {                                                                                           \
        int r_ = verdict(S(lit));                                                                  \
        cr_assert_eq(r_, (code), "%s: got %d", #lit, r_);                                          \
    } while (0)
#define EXPECT_OK(lit) EXPECT(lit, (int)(sizeof(lit) - 1))

/* Parses a NUL-terminated request on a guard page; the caller frees g after checks. */
static int parse_on(struct guard *g, const char *s, struct http_request *req)
{
    size_t n = strlen(s);
    guard_init(g, n);
    return http_parse_request(guard_put(g, s, n), n, 0, req);
}

/* ---- valid requests --------------------------------------------------------------- */

#define REQ_POST                                                                                   \
    "POST /v1/readings?x=1&y=2 HTTP/1.1\r\n"                                                       \
    "Host: ingest.example\r\n"                                                                     \
    "X-Auth-Token:   tok123  \r\n"                                                                 \
    "Content-Type: application/json; charset=utf-8\r\n"                                            \
    "Content-Encoding: gzip\r\n"                                                                   \
    "Authorization: Basic YTpi\r\n"                                                                \
    "Content-Length: 5\r\n"                                                                        \
    "\r\n"

Test(http_parse, valid_request_fields)
{
    struct guard g;
    struct http_request req;
    int r = parse_on(&g, REQ_POST "hello", &req);

    cr_assert_eq(r, (int)strlen(REQ_POST));
    cr_assert_eq(req.method, HTTP_METHOD_POST);
    cr_assert(slice_is(req.method_name, "POST"));
    cr_assert(slice_is(req.target, "/v1/readings?x=1&y=2"));
    cr_assert(slice_is(req.path, "/v1/readings"));
    cr_assert(slice_is(req.query, "x=1&y=2"));
    cr_assert_eq(req.minor_version, 1);
    cr_assert_eq(req.content_length, 5);
    cr_assert_eq(req.chunked, 0);
    cr_assert_eq(req.keep_alive, 1);
    cr_assert_eq(req.has_host, 1);
    cr_assert_eq(req.expect_continue, 0);
    cr_assert(slice_is(req.token, "tok123"), "OWS around the value is removed");
    cr_assert(slice_is(req.content_type, "application/json"));
    cr_assert(slice_is(req.content_encoding, "gzip"));
    cr_assert(slice_is(req.authorization, "Basic YTpi"));
    cr_assert_eq(req.nheaders, 6);
    cr_assert(slice_is(req.headers[0].name, "Host"));
    cr_assert(slice_is(req.headers[0].value, "ingest.example"));
    cr_assert(slice_is(req.headers[5].name, "Content-Length"));
    cr_assert_null(req.error);
    guard_free(&g);
}

Test(http_parse, absent_headers_are_empty_slices)
{
    struct guard g;
    struct http_request req;
    int r = parse_on(&g, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", &req);

    cr_assert_gt(r, 0);
    cr_assert_eq(req.content_length, -1);
    cr_assert(req.token.p == NULL && req.token.n == 0);
    cr_assert(req.content_type.p == NULL && req.content_type.n == 0);
    cr_assert(req.content_encoding.p == NULL && req.authorization.p == NULL);
    cr_assert(slice_is(req.path, "/"));
    cr_assert_eq(req.query.n, 0);
    guard_free(&g);
}

Test(http_parse, empty_input_is_incomplete)
{
    struct http_request req;
    cr_assert_eq(http_parse_request(NULL, 0, 0, &req), HTTP_INCOMPLETE);
    cr_assert_eq(http_parse_request("", 0, 0, &req), HTTP_INCOMPLETE);
}

static const char *const valid_requests[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    REQ_POST,
    "POST /v1/readings HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    "X-Auth-Token: t\r\n\r\n",
    "POST /v1/readings HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
    "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET /x HTTP/1.0\r\n\r\n",
    "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /a?b HTTP/1.1\r\nHost:\r\nEmpty:\r\nTab:\tv\t1\t\r\nHigh: \xc3\xa9\xff\r\n\r\n",
    "PATCH /p/\xc3\xa9 HTTP/1.1\r\nhost: a\r\nx-long-header-name-with-many-chars-to-go-past-16: "
    "a value that is well past sixteen bytes so the vector path runs\r\n\r\n",
};

Test(http_parse, every_proper_prefix_is_incomplete)
{
    for (size_t i = 0; i < sizeof(valid_requests) / sizeof(valid_requests[0]); i++) {
        const char *s = valid_requests[i];
        size_t n = strlen(s);
        /* verdict() asserts each prefix < the head length is HTTP_INCOMPLETE */
        cr_assert_eq(verdict(s, n), (int)n, "request %zu", i);
    }
}

Test(http_parse, every_prefix_with_body_bytes_following)
{
    /* A head followed by body bytes: the result stays the head length. */
    static const char s[] = REQ_POST "hello";
    cr_assert_eq(verdict(S(s)), (int)strlen(REQ_POST));
}

Test(http_parse, methods)
{
    struct http_request req;
    static const struct {
        const char *s;
        enum http_method m;
    } cases[] = {
        {"GET / HTTP/1.0\r\n\r\n", HTTP_METHOD_GET},
        {"HEAD / HTTP/1.0\r\n\r\n", HTTP_METHOD_HEAD},
        {"POST / HTTP/1.0\r\n\r\n", HTTP_METHOD_POST},
        {"PUT / HTTP/1.0\r\n\r\n", HTTP_METHOD_PUT},
        {"DELETE / HTTP/1.0\r\n\r\n", HTTP_METHOD_DELETE},
        {"OPTIONS / HTTP/1.0\r\n\r\n", HTTP_METHOD_OPTIONS},
        {"PATCH / HTTP/1.0\r\n\r\n", HTTP_METHOD_OTHER},
        {"get / HTTP/1.0\r\n\r\n", HTTP_METHOD_OTHER}, /* methods are case-sensitive */
        {"GETS / HTTP/1.0\r\n\r\n", HTTP_METHOD_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int r = http_parse_request(cases[i].s, strlen(cases[i].s), 0, &req);
        cr_assert_eq(r, (int)strlen(cases[i].s), "%s", cases[i].s);
        cr_assert_eq(req.method, cases[i].m, "%s", cases[i].s);
    }
}

/* ---- pipelining -------------------------------------------------------------------- */

Test(http_parse, pipelined_three_requests)
{
    static const char s[] = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                            "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
                            "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                            "Connection: close\r\n\r\n";
    static const char *const paths[] = {"/a", "/b", "/c"};
    struct guard g;
    struct http_request req;
    size_t n = sizeof(s) - 1, off = 0;
    const char *b;

    guard_init(&g, n);
    b = guard_put(&g, s, n);
    for (int i = 0; i < 3; i++) {
        int r = http_parse_request(b + off, n - off, 0, &req);
        cr_assert_gt(r, 0, "request %d: %d %s", i, r, req.error ? req.error : "");
        cr_assert(slice_is(req.path, paths[i]));
        off += (size_t)r + (size_t)(req.content_length > 0 ? req.content_length : 0);
        cr_assert_eq(req.keep_alive, i < 2);
    }
    cr_assert_eq(off, n, "every byte used once");
    cr_assert_eq(http_parse_request(b + off, 0, 0, &req), HTTP_INCOMPLETE);
    guard_free(&g);
}

Test(http_parse, pipelined_second_request_truncated_is_incomplete)
{
    static const char s[] = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHo";
    struct guard g;
    struct http_request req;
    const char *b;
    int r;

    guard_init(&g, sizeof(s) - 1);
    b = guard_put(&g, s, sizeof(s) - 1);
    r = http_parse_request(b, sizeof(s) - 1, 0, &req);
    cr_assert_eq(r, (int)strlen("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"));
    cr_assert_eq(http_parse_request(b + r, sizeof(s) - 1 - (size_t)r, 0, &req), HTTP_INCOMPLETE);
    guard_free(&g);
}

/* ---- smuggling shapes (RFC 9112 6.1, 6.3, 5.1, 5.2) ----------------------------------- */

Test(http_smuggling, content_length_with_transfer_encoding)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
           -400);
}

Test(http_smuggling, transfer_encoding_with_content_length)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
           -400);
}

Test(http_smuggling, two_content_length_equal)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", -400);
}

Test(http_smuggling, two_content_length_different)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n", -400);
}

Test(http_smuggling, content_length_list)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", -400);
}

Test(http_smuggling, te_chunked_chunked)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", -400);
}

Test(http_smuggling, te_gzip_chunked)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -400);
}

Test(http_smuggling, te_identity)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", -400);
}

Test(http_smuggling, te_two_headers)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
           "Transfer-Encoding: chunked\r\n\r\n",
           -400);
}

Test(http_smuggling, te_chunked_with_junk)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", -400);
}

Test(http_smuggling, te_on_http10)
{
    EXPECT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400);
}

Test(http_smuggling, te_chunked_any_case_is_accepted)
{
    struct guard g;
    struct http_request req;
    cr_assert_gt(
        parse_on(&g, "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  ChunKed \r\n\r\n", &req),
        0);
    cr_assert_eq(req.chunked, 1);
    cr_assert_eq(req.content_length, -1);
    guard_free(&g);
}

Test(http_smuggling, obs_fold)
{
    struct http_request req;
    static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n";
    cr_assert_eq(http_parse_request(S(s), 0, &req), -400);
    cr_assert_str_eq(req.error, "obs-fold");
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", -400);
    /* a space at the start of the first header line is the same shape */
    EXPECT("GET / HTTP/1.1\r\n Host: a\r\n\r\n", -400);
}

Test(http_smuggling, bare_lf_line_end)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\n\n", -400);
    EXPECT("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
}

Test(http_smuggling, bare_lf_in_name_or_value)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\nc\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A\n: b\r\n\r\n", -400);
}

Test(http_smuggling, bare_cr)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\rHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n", -400);
    EXPECT("\r GET / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A\r: b\r\n\r\n", -400);
}

Test(http_smuggling, whitespace_before_colon)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n", -400);
}

Test(http_smuggling, bad_content_length_values)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\n", -400);
}

Test(http_smuggling, content_length_overflow)
{
    /* beyond int64 */
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\n", -400);
    /* beyond 2^53 */
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740993\r\n\r\n", -400);
}

Test(http_smuggling, content_length_limits_accepted)
{
    struct guard g;
    struct http_request req;
    cr_assert_gt(parse_on(&g,
                          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9007199254740992\r\n\r\n",
                          &req),
                 0);
    cr_assert_eq(req.content_length, HTTP_MAX_CONTENT_LENGTH);
    guard_free(&g);
    cr_assert_gt(parse_on(&g, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0007\r\n\r\n", &req),
                 0);
    cr_assert_eq(req.content_length, 7, "leading zeros are plain 1*DIGIT");
    guard_free(&g);
}

Test(http_smuggling, no_host_on_http11)
{
    EXPECT("GET / HTTP/1.1\r\nX: y\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\n\r\n", -400);
    EXPECT_OK("GET / HTTP/1.0\r\n\r\n");
}

Test(http_smuggling, duplicate_host)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", -400);
}

Test(http_smuggling, nul_in_name_and_value)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX\0A: b\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n", -400);
    EXPECT("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", -400);
}

Test(http_smuggling, control_characters_in_value)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7f\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x1b[31m\r\n\r\n", -400);
    /* the same control byte after 16 clean bytes goes through the vector scan */
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX-A: 0123456789abcdefghij\x0b\r\n\r\n", -400);
    EXPECT_OK("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\tc\r\n\r\n");
}

Test(http_smuggling, empty_header_name)
{
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", -400);
}

Test(http_smuggling, invalid_token_chars)
{
    EXPECT("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("G\x80T / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHo@st: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX{y}: b\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: b\r\n\r\n", -400);
}

Test(http_smuggling, request_target_forms)
{
    EXPECT("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", -400); /* absolute-form refused */
    EXPECT("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", -400); /* authority-form */
    EXPECT("GET * HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT_OK("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
}

Test(http_smuggling, duplicate_auth_token)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nX-Auth-Token: a\r\nx-auth-token: a\r\n\r\n", -400);
}

Test(http_smuggling, duplicate_content_type_encoding_authorization)
{
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\nContent-Type: c/d\r\n\r\n", -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Encoding: x\r\n\r\n",
           -400);
    EXPECT("POST / HTTP/1.1\r\nHost: a\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", -400);
}

/* ---- limits ------------------------------------------------------------------------ */

/* Builds "GET / HTTP/1.1\r\nHost: a\r\nX: <pad>\r\n\r\n" of exactly total bytes. */
static size_t build_head(char *out, size_t total)
{
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    static const char post[] = "\r\n\r\n";
    size_t pad = total - (sizeof(pre) - 1) - (sizeof(post) - 1);
    memcpy(out, pre, sizeof(pre) - 1);
    memset(out + sizeof(pre) - 1, 'v', pad);
    memcpy(out + sizeof(pre) - 1 + pad, post, sizeof(post) - 1);
    return total;
}

Test(http_limits, header_block_exactly_at_cap)
{
    static char b[HTTP_MAX_HEADER_BYTES];
    size_t n = build_head(b, HTTP_MAX_HEADER_BYTES);
    cr_assert_eq(verdict(b, n), HTTP_MAX_HEADER_BYTES);
}

Test(http_limits, header_block_one_over_cap)
{
    static char b[HTTP_MAX_HEADER_BYTES + 1];
    size_t n = build_head(b, HTTP_MAX_HEADER_BYTES + 1);
    cr_assert_eq(verdict(b, n), -431);
}

Test(http_limits, incomplete_at_cap_is_431_not_a_wait)
{
    static char b[HTTP_MAX_HEADER_BYTES + 100];
    struct guard g;
    struct http_request req;
    build_head(b, sizeof(b));
    guard_init(&g, sizeof(b));
    /* the cap's worth of bytes and no CRLFCRLF yet */
    cr_assert_eq(
        http_parse_request(guard_put(&g, b, HTTP_MAX_HEADER_BYTES), HTTP_MAX_HEADER_BYTES, 0, &req),
        -431);
    cr_assert_str_eq(req.error, "header block too large");
    cr_assert_eq(http_parse_request(guard_put(&g, b, HTTP_MAX_HEADER_BYTES - 1),
                                    HTTP_MAX_HEADER_BYTES - 1, 0, &req),
                 HTTP_INCOMPLETE);
    guard_free(&g);
}

Test(http_limits, custom_max_header)
{
    static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"; /* 27 bytes */
    cr_assert_eq(verdict_mh(S(s), 27), 27);
    cr_assert_eq(verdict_mh(S(s), 26), -431);
    cr_assert_eq(verdict_mh(S(s), 1), -431);
}

/* n headers "Hn: v" after Host. */
static size_t build_headers(char *out, int n)
{
    size_t k = (size_t)sprintf(out, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < n; i++)
        k += (size_t)sprintf(out + k, "H%d: v\r\n", i);
    k += (size_t)sprintf(out + k, "\r\n");
    return k;
}

Test(http_limits, max_headers_accepted)
{
    static char b[4096];
    struct guard g;
    struct http_request req;
    size_t n = build_headers(b, HTTP_MAX_HEADERS);
    guard_init(&g, n);
    cr_assert_eq(http_parse_request(guard_put(&g, b, n), n, 0, &req), (int)n);
    cr_assert_eq(req.nheaders, HTTP_MAX_HEADERS);
    guard_free(&g);
}

Test(http_limits, too_many_headers)
{
    static char b[4096];
    size_t n = build_headers(b, HTTP_MAX_HEADERS + 1);
    cr_assert_eq(verdict(b, n), -431);
}

/* ---- versions ---------------------------------------------------------------------- */

Test(http_version, one_zero_and_one_one)
{
    struct guard g;
    struct http_request req;
    cr_assert_gt(parse_on(&g, "GET / HTTP/1.0\r\n\r\n", &req), 0);
    cr_assert_eq(req.minor_version, 0);
    guard_free(&g);
    cr_assert_gt(parse_on(&g, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", &req), 0);
    cr_assert_eq(req.minor_version, 1);
    guard_free(&g);
}

Test(http_version, unsupported_is_505)
{
    EXPECT("GET / HTTP/1.2\r\nHost: a\r\n\r\n", -505);
    EXPECT("GET / HTTP/2.0\r\nHost: a\r\n\r\n", -505);
    EXPECT("GET / HTTP/0.9\r\n\r\n", -505);
    EXPECT("GET / HTTP/3.0\r\n\r\n", -505);
}

Test(http_version, malformed_is_400)
{
    EXPECT("GET /\r\n\r\n", -400); /* HTTP/0.9 style, no version */
    EXPECT("GET / \r\n\r\n", -400);
    EXPECT("GET / http/1.1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.10\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/11\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1.x\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTP/1\r\nHost: a\r\n\r\n", -400);
    EXPECT("GET / HTTPS/1.1\r\nHost: a\r\n\r\n", -400);
}

Test(http_version, h2_preface_is_400)
{
    /* prior-knowledge HTTP/2 on the HTTP/1 port: '*' with PRI fails first */
    EXPECT("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", -400);
}

/* ---- keep-alive -------------------------------------------------------------------- */

static int keep_alive_of(const char *s)
{
    struct guard g;
    struct http_request req;
    int r = parse_on(&g, s, &req);
    cr_assert_gt(r, 0, "%s: %d %s", s, r, req.error ? req.error : "");
    r = req.keep_alive;
    guard_free(&g);
    return r;
}

Test(http_keepalive, defaults_by_version)
{
    cr_assert_eq(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.0\r\n\r\n"), 0);
}

Test(http_keepalive, connection_close_on_11)
{
    cr_assert_eq(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 0);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nconnection: CLOSE\r\n\r\n"), 0);
    cr_assert_eq(
        keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade ,\tclose \r\n\r\n"), 0);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n"
                               "Connection: close\r\n\r\n"),
                 0);
}

Test(http_keepalive, connection_keep_alive_on_10)
{
    cr_assert_eq(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 1);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.0\r\nConnection: Upgrade, Keep-Alive\r\n\r\n"), 1);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), 0);
}

Test(http_keepalive, similar_tokens_do_not_count)
{
    cr_assert_eq(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"), 1);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nX-Connection: close\r\n\r\n"), 1);
    cr_assert_eq(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive2\r\n\r\n"), 0);
}

/* ---- extracted headers ------------------------------------------------------------- */

static void expect_content_type(const char *value, const char *want)
{
    char s[256];
    struct guard g;
    struct http_request req;
    snprintf(s, sizeof(s), "POST / HTTP/1.1\r\nHost: a\r\nContent-Type:%s\r\n\r\n", value);
    cr_assert_gt(parse_on(&g, s, &req), 0);
    cr_assert(slice_is(req.content_type, want), "[%s] -> [%.*s]", value, (int)req.content_type.n,
              req.content_type.p);
    guard_free(&g);
}

Test(http_headers, content_type_parameters_stripped)
{
    expect_content_type(" application/json; charset=utf-8", "application/json");
    expect_content_type("application/json;charset=utf-8", "application/json");
    expect_content_type("  application/x-ndjson  ", "application/x-ndjson");
    expect_content_type(" application/json ; charset=utf-8", "application/json");
    expect_content_type("\tapplication/octet-stream", "application/octet-stream");
    expect_content_type(" Application/JSON", "Application/JSON"); /* case kept; caller folds */
    expect_content_type(" ;x=y", "");
}

Test(http_headers, expect_continue)
{
    struct guard g;
    struct http_request req;
    cr_assert_gt(parse_on(&g, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n", &req),
                 0);
    cr_assert_eq(req.expect_continue, 1);
    guard_free(&g);
    /* RFC 9110 10.1.1: ignored on HTTP/1.0 */
    cr_assert_gt(parse_on(&g, "POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req), 0);
    cr_assert_eq(req.expect_continue, 0);
    guard_free(&g);
    cr_assert_gt(parse_on(&g, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", &req), 0);
    cr_assert_eq(req.expect_continue, 0);
    guard_free(&g);
}

Test(http_headers, header_find_case_insensitive)
{
    struct guard g;
    struct http_request req;
    struct http_slice v = {0};
    cr_assert_gt(parse_on(&g, "GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: probe/1\r\n\r\n", &req), 0);
    cr_assert_eq(http_header_find(&req, "user-agent", &v), 1);
    cr_assert(slice_is(v, "probe/1"));
    cr_assert_eq(http_header_find(&req, "USER-AGENT", &v), 1);
    cr_assert_eq(http_header_find(&req, "User-Agen", &v), 0);
    cr_assert_eq(http_header_find(&req, "X-Missing", &v), 0);
    guard_free(&g);
}

Test(http_headers, error_reason_is_set)
{
    struct http_request req;
    static const char s[] = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    cr_assert_eq(http_parse_request(S(s), 0, &req), -400);
    cr_assert_str_eq(req.error, "duplicate Host");
}

/* ---- chunked decoder --------------------------------------------------------------- */

#define CHUNKED_BODY                                                                               \
    "5;name=val\r\nhello\r\n"                                                                      \
    "A; foo ; bar=\"q\"\r\n0123456789\r\n"                                                         \
    "1a \t;x\r\n the quick brown fox jumps\r\n"                                                    \
    "000\r\n"                                                                                      \
    "X-Trailer: 1\r\nX-Other:\ta b\r\n\r\n"
#define CHUNKED_DECODED "hello0123456789 the quick brown fox jumps"

Test(http_chunked, multi_chunk_extensions_trailers)
{
    static const char s[] = CHUNKED_BODY;
    struct guard g;
    struct http_chunked st = {0};
    char *b;
    long r;

    guard_init(&g, sizeof(s) - 1);
    b = guard_put(&g, s, sizeof(s) - 1);
    r = http_chunked_decode(&st, b, sizeof(s) - 1, 1 << 20);
    cr_assert_eq(r, (long)(sizeof(s) - 1));
    cr_assert_eq(st.out, strlen(CHUNKED_DECODED));
    cr_assert(memcmp(b, CHUNKED_DECODED, st.out) == 0);
    /* done is sticky */
    cr_assert_eq(http_chunked_decode(&st, b, sizeof(s) - 1, 1 << 20), r);
    guard_free(&g);
}

/* Feeds src one byte more at a time into a guard buffer and also split in two at
 * every point; each way must give the same verdict and decoded bytes. */
static void chunked_every_split(const char *src, size_t n, size_t max_body, long want,
                                const char *want_out, size_t want_out_n)
{
    struct guard g;
    char *b;

    guard_init(&g, n);
    /* one byte at a time: the buffer grows towards the guard page */
    {
        struct http_chunked st = {0};
        long r = HTTP_INCOMPLETE;
        size_t k;
        b = g.base + g.body - n;
        for (k = 1; k <= n; k++) {
            b[k - 1] = src[k - 1];
            r = http_chunked_decode(&st, b, k, max_body);
            cr_assert_leq(st.out, st.in);
            cr_assert_leq(st.in, k);
            if (r != HTTP_INCOMPLETE) break;
        }
        cr_assert_eq(r, want, "bytewise: %ld at %zu, want %ld", r, k, want);
        if (want >= 0) {
            cr_assert_eq(st.out, want_out_n);
            cr_assert(memcmp(b, want_out, want_out_n) == 0);
        }
    }
    for (size_t cut = 0; cut <= n; cut++) {
        struct http_chunked st = {0};
        long r;
        b = guard_put(&g, src, n);
        r = http_chunked_decode(&st, b, cut, max_body);
        if (r == HTTP_INCOMPLETE) r = http_chunked_decode(&st, b, n, max_body);
        cr_assert_eq(r, want, "split at %zu: %ld, want %ld", cut, r, want);
        if (want >= 0) {
            cr_assert_eq(st.out, want_out_n);
            cr_assert(memcmp(b, want_out, want_out_n) == 0, "split at %zu", cut);
            /* bytes after the body are untouched */
            cr_assert(memcmp(b + want, src + want, n - (size_t)want) == 0);
        }
    }
    guard_free(&g);
}

Test(http_chunked, every_split_point_same_result)
{
    static const char s[] = CHUNKED_BODY "GET / HTTP/1.1\r\n";
    chunked_every_split(S(s), 1 << 20, (long)strlen(CHUNKED_BODY), S(CHUNKED_DECODED));
}

Test(http_chunked, empty_body)
{
    chunked_every_split(S("0\r\n\r\n"), 0, 5, "", 0);
}

Test(http_chunked, hex_case_insensitive)
{
    static char s[0x1ab + 64], want[0x1ab];
    size_t k = (size_t)sprintf(s, "1aB\r\n");
    memset(want, 'z', sizeof(want));
    memcpy(s + k, want, sizeof(want));
    k += sizeof(want);
    k += (size_t)sprintf(s + k, "\r\n0\r\n\r\n");
    chunked_every_split(s, k, sizeof(want), (long)k, want, sizeof(want));
}

Test(http_chunked, bad_hex)
{
    chunked_every_split(S("g\r\nx\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5x\r\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S(";ext\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("-5\r\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("+5\r\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("0x5\r\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5 5\r\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
}

Test(http_chunked, bare_lf_in_size_line)
{
    chunked_every_split(S("5\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5;a\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5;a\x01\r\nhello\r\n0\r\n\r\n"), 100, -400, NULL, 0);
}

Test(http_chunked, missing_crlf_after_data)
{
    chunked_every_split(S("5\r\nhelloX\r\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5\r\nhello\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5\r\nhello\rX0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5\r\nhello0\r\n\r\n"), 100, -400, NULL, 0);
    /* the LF alone must not pass: the CR is checked on its own */
    chunked_every_split(S("5\r\nhelloX\n0\r\n\r\n"), 100, -400, NULL, 0);
    chunked_every_split(S("5\r\nhello\n\n0\r\n\r\n"), 100, -400, NULL, 0);
}

Test(http_chunked, size_overflow)
{
    /* 17 hex digits: more than 64 bits, even as leading zeros */
    chunked_every_split(S("10000000000000000\r\n"), SIZE_MAX, -400, NULL, 0);
    chunked_every_split(S("00000000000000001\r\nx\r\n0\r\n\r\n"), SIZE_MAX, -400, NULL, 0);
    /* 16 digits of 2^64-1 then more data than memory: still only a size, no wrap */
    {
        struct http_chunked st = {0};
        char b[] = "ffffffffffffffff\r\nab";
        cr_assert_eq(http_chunked_decode(&st, b, sizeof(b) - 1, SIZE_MAX), HTTP_INCOMPLETE);
        cr_assert_eq(st.out, 2);
        cr_assert_eq(st.chunk_left, UINT64_MAX - 2);
    }
}

Test(http_chunked, over_max_body_is_413_before_data)
{
    struct http_chunked st = {0};
    char b[] = "10"; /* 16 bytes announced, no data yet, no CRLF yet */
    cr_assert_eq(http_chunked_decode(&st, b, 2, 15), -413);
    cr_assert_eq(http_chunked_decode(&st, b, 2, 15), -413, "failure is sticky");
    chunked_every_split(S("8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n"), 15, -413, NULL, 0);
    chunked_every_split(S("8\r\n01234567\r\n7\r\n0123456\r\n0\r\n\r\n"), 15, 30, "012345670123456",
                        15);
    chunked_every_split(S("1\r\nx\r\n0\r\n\r\n"), 0, -413, NULL, 0);
}

Test(http_chunked, size_line_cap)
{
    static char s[HTTP_MAX_CHUNK_LINE + 64];
    size_t k;
    /* exactly at the cap: "1;" + padding = HTTP_MAX_CHUNK_LINE bytes before CRLF */
    s[0] = '1';
    s[1] = ';';
    memset(s + 2, 'e', HTTP_MAX_CHUNK_LINE - 2);
    k = HTTP_MAX_CHUNK_LINE;
    k += (size_t)sprintf(s + k, "\r\nx\r\n0\r\n\r\n");
    chunked_every_split(s, k, 10, (long)k, "x", 1);
    /* one over */
    memset(s + 2, 'e', HTTP_MAX_CHUNK_LINE - 1);
    k = HTTP_MAX_CHUNK_LINE + 1;
    k += (size_t)sprintf(s + k, "\r\nx\r\n0\r\n\r\n");
    chunked_every_split(s, k, 10, -400, NULL, 0);
}

Test(http_chunked, trailer_cap_is_431)
{
    static char s[HTTP_MAX_TRAILER_BYTES + 64];
    /* one over: "X: " + pad + CRLF + CRLF = HTTP_MAX_TRAILER_BYTES + 1 */
    size_t k = (size_t)sprintf(s, "0\r\nX: ");
    memset(s + k, 't', HTTP_MAX_TRAILER_BYTES - 6);
    k += HTTP_MAX_TRAILER_BYTES - 6;
    k += (size_t)sprintf(s + k, "\r\n\r\n");
    chunked_every_split(s, k, 10, -431, NULL, 0);
    /* exactly at the cap: trailer section of HTTP_MAX_TRAILER_BYTES including CRLFs */
    k = (size_t)sprintf(s, "0\r\nX: ");
    memset(s + k, 't', HTTP_MAX_TRAILER_BYTES - 7);
    k += HTTP_MAX_TRAILER_BYTES - 7;
    k += (size_t)sprintf(s + k, "\r\n\r\n");
    chunked_every_split(s, k, 10, (long)k, "", 0);
}

Test(http_chunked, malformed_trailers)
{
    chunked_every_split(S("0\r\nX: a\r\n b\r\n\r\n"), 10, -400, NULL, 0); /* obs-fold */
    chunked_every_split(S("0\r\nX: a\n\r\n"), 10, -400, NULL, 0);
    chunked_every_split(S("0\r\nX a\r\n\r\n"), 10, -400, NULL, 0);
    chunked_every_split(S("0\r\n: a\r\n\r\n"), 10, -400, NULL, 0);
    chunked_every_split(S("0\r\nX: a\0\r\n\r\n"), 10, -400, NULL, 0);
    chunked_every_split(S("0\r\n\rX"), 10, -400, NULL, 0);
}

Test(http_chunked, shrinking_len_is_refused)
{
    struct http_chunked st = {0};
    char b[] = "5\r\nhel";
    cr_assert_eq(http_chunked_decode(&st, b, 6, 100), HTTP_INCOMPLETE);
    cr_assert_eq(http_chunked_decode(&st, b, 2, 100), -400);
}

Test(http_chunked, pipelined_request_after_chunked_body)
{
    static const char s[] = "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                            "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
    struct guard g;
    struct http_request req;
    struct http_chunked st = {0};
    char *b;
    int h;
    long c;
    size_t n = sizeof(s) - 1;

    guard_init(&g, n);
    b = guard_put(&g, s, n);
    h = http_parse_request(b, n, 0, &req);
    cr_assert_gt(h, 0);
    cr_assert_eq(req.chunked, 1);
    c = http_chunked_decode(&st, b + h, n - (size_t)h, 1024);
    cr_assert_eq(c, (long)strlen("3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"));
    cr_assert_eq(st.out, 5);
    cr_assert(memcmp(b + h, "abcde", 5) == 0);
    cr_assert_eq(http_parse_request(b + h + c, n - (size_t)h - (size_t)c, 0, &req),
                 (int)strlen("GET /next HTTP/1.1\r\nHost: a\r\n\r\n"));
    cr_assert(slice_is(req.path, "/next"));
    guard_free(&g);
}

/* ---- response writer --------------------------------------------------------------- */

Test(http_response, byte_exact_202)
{
    static const char want[] = "HTTP/1.1 202 Accepted\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 14\r\n"
                               "Connection: keep-alive\r\n"
                               "\r\n"
                               "{\"accepted\":3}";
    char out[256];
    int n = http_write_response(out, sizeof(out), 202, 1, NULL, S("{\"accepted\":3}"));
    cr_assert_eq(n, (int)(sizeof(want) - 1));
    cr_assert(memcmp(out, want, sizeof(want) - 1) == 0, "%.*s", n, out);
}

Test(http_response, byte_exact_503_extra_close)
{
    static const char want[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Length: 0\r\n"
                               "Connection: close\r\n"
                               "Retry-After: 1\r\n"
                               "\r\n";
    char out[256];
    int n = http_write_response(out, sizeof(out), 503, 0, "Retry-After: 1\r\n", NULL, 0);
    cr_assert_eq(n, (int)(sizeof(want) - 1));
    cr_assert(memcmp(out, want, sizeof(want) - 1) == 0, "%.*s", n, out);
}

Test(http_response, interim_100_and_204)
{
    char out[128];
    int n = http_write_response(out, sizeof(out), 100, 1, NULL, NULL, 0);
    cr_assert_eq(n, (int)strlen("HTTP/1.1 100 Continue\r\n\r\n"));
    cr_assert(memcmp(out, "HTTP/1.1 100 Continue\r\n\r\n", (size_t)n) == 0);
    n = http_write_response(out, sizeof(out), 204, 1, NULL, NULL, 0);
    cr_assert_eq(n, (int)strlen("HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"));
    cr_assert(memcmp(out, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n", (size_t)n) ==
              0);
    cr_assert_eq(http_write_response(out, sizeof(out), 204, 1, NULL, "x", 1), -1);
}

Test(http_response, cap_too_small_never_overflows)
{
    struct guard g;
    char ref[256];
    int need = http_write_response(ref, sizeof(ref), 413, 0, "X-A: b\r\n", S("{\"error\":1}"));
    cr_assert_gt(need, 0);
    guard_init(&g, (size_t)need);
    for (int cap = 0; cap < need; cap++) {
        char *out = g.base + g.body - (size_t)cap;
        cr_assert_eq(
            http_write_response(out, (size_t)cap, 413, 0, "X-A: b\r\n", S("{\"error\":1}")), -1,
            "cap %d", cap);
    }
    {
        char *out = g.base + g.body - (size_t)need;
        cr_assert_eq(
            http_write_response(out, (size_t)need, 413, 0, "X-A: b\r\n", S("{\"error\":1}")), need);
        cr_assert(memcmp(out, ref, (size_t)need) == 0);
    }
    guard_free(&g);
}

Test(http_response, bad_status)
{
    char out[128];
    cr_assert_eq(http_write_response(out, sizeof(out), 99, 1, NULL, NULL, 0), -1);
    cr_assert_eq(http_write_response(out, sizeof(out), 1000, 1, NULL, NULL, 0), -1);
    cr_assert_eq(http_write_response(out, sizeof(out), -200, 1, NULL, NULL, 0), -1);
}

Test(http_response, status_texts)
{
    static const int codes[] = {100, 200, 202, 204, 400, 401, 403, 404, 405, 408,
                                411, 413, 415, 429, 431, 500, 501, 503, 505};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        cr_assert_str_neq(http_status_text(codes[i]), "Unknown", "%d", codes[i]);
    cr_assert_str_eq(http_status_text(202), "Accepted");
    cr_assert_str_eq(http_status_text(431), "Request Header Fields Too Large");
    cr_assert_str_eq(http_status_text(413), "Content Too Large");
    cr_assert_str_eq(http_status_text(299), "Unknown");
}
