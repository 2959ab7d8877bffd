/* protocols/http.c — HTTP/1.1 request parser, chunked decoder, response encoder.
 *
 * Design notes (the contract is in http.h):
 * - One forward pass over buf[0..min(len, max_header)); every error is decided at
 *   the first byte that makes the request invalid, so feeding a request one byte at
 *   a time yields HTTP_INCOMPLETE until the verdict the whole request would get.
 * - Strict on anything that can desynchronise framing between us and a proxy in
 *   front of us (request smuggling): only CRLF line endings (bare LF is rejected,
 *   unlike nginx), no obs-fold, no whitespace before ':', a single Content-Length
 *   of plain digits, Transfer-Encoding exactly "chunked", never both.
 * - Request-target: origin-form ("/...") only, '*' only for OPTIONS. absolute-form
 *   ("http://host/...") is 400: sluice is an origin server, never a proxy.
 *   Bytes >= 0x80 are tolerated in the target (raw UTF-8 paths are common);
 *   control characters and DEL are not.
 * - Scanning of target and values is SSE2 (16 bytes at a time, only while 16 bytes
 *   remain, so nothing past buf[len-1] is ever read); names use a lookup table.
 */
#include "protocols/http.h"

#include <limits.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* RFC 9110 5.6.2 tchar: the only bytes allowed in a method or a field name. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* Hex digit value + 1 (0 = not a hex digit), so the table doubles as the class test. */
static const unsigned char hexval1[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

static inline int is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

static const char *scan_token(const char *p, const char *end)
{
    /* Unrolled: names are short, but this is the per-header inner loop. */
    while (end - p >= 4) {
        if (!tchar[(unsigned char)p[0]]) return p;
        if (!tchar[(unsigned char)p[1]]) return p + 1;
        if (!tchar[(unsigned char)p[2]]) return p + 2;
        if (!tchar[(unsigned char)p[3]]) return p + 3;
        p += 4;
    }
    while (p < end && tchar[(unsigned char)*p])
        p++;
    return p;
}

/* Returns the first byte in [p, end) that is <= limit or DEL (end if none).
 * limit 0x20 stops a request-target at SP or any control; 0x1f stops a field
 * value at any control, HT included (the caller lets HT through). */
static const char *scan_ctl(const char *p, const char *end, unsigned char limit)
{
#if defined(__SSE2__)
    const __m128i lim = _mm_set1_epi8((char)limit);
    const __m128i del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* unsigned v <= limit  <=>  min(v, limit) == v */
        __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(v, lim), v);
        __m128i hit = _mm_or_si128(low, _mm_cmpeq_epi8(v, del));
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (m) return p + __builtin_ctz(m);
        p += 16;
    }
#endif
    for (; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= limit || c == 0x7f) return p;
    }
    return p;
}

/* Case-insensitive compare of a token against a lower-case literal of the same
 * length. OR-ing 0x20 only folds letters onto letters among tchar bytes, so the
 * shortcut is exact for validated names and literals made of letters, '-' and digits. */
static int token_eq(const char *p, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] | 0x20) != (unsigned char)lit[i]) return 0;
    return 1;
}

/* ASCII tolower, independent of the locale. */
static inline unsigned char lower(char ch)
{
    unsigned char c = (unsigned char)ch;
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* Case-insensitive compare of arbitrary value bytes against a lower-case literal. */
static int value_ieq(const char *p, size_t n, const char *lit, size_t litn)
{
    if (n != litn) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(p[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}

#define LIT(s) (s), (sizeof(s) - 1)

static struct http_slice trim_ows(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return (struct http_slice){p, (size_t)(e - p)};
}

static enum http_method method_of(const char *p, size_t n)
{
    switch (n) {
    case 3:
        if (!memcmp(p, "GET", 3)) return HTTP_METHOD_GET;
        if (!memcmp(p, "PUT", 3)) return HTTP_METHOD_PUT;
        break;
    case 4:
        if (!memcmp(p, "POST", 4)) return HTTP_METHOD_POST;
        if (!memcmp(p, "HEAD", 4)) return HTTP_METHOD_HEAD;
        break;
    case 6:
        if (!memcmp(p, "DELETE", 6)) return HTTP_METHOD_DELETE;
        break;
    case 7:
        if (!memcmp(p, "OPTIONS", 7)) return HTTP_METHOD_OPTIONS;
        break;
    }
    return HTTP_METHOD_OTHER;
}

/* Header-block facts that only matter once the block is complete. */
struct head_state {
    unsigned seen_cl : 1;
    unsigned seen_te : 1;
    unsigned conn_close : 1;
    unsigned conn_keep_alive : 1;
    unsigned expect_100 : 1;
};

/* Connection is a comma-separated token list (RFC 9110 7.6.1); unknown options
 * such as "Upgrade" are ignored. */
static void scan_connection(struct head_state *hs, const char *p, const char *e)
{
    while (p < e) {
        const char *c = memchr(p, ',', (size_t)(e - p));
        const char *stop = c ? c : e;
        struct http_slice t = trim_ows(p, stop);
        if (value_ieq(t.p, t.n, LIT("close")))
            hs->conn_close = 1;
        else if (value_ieq(t.p, t.n, LIT("keep-alive")))
            hs->conn_keep_alive = 1;
        p = c ? c + 1 : e;
    }
}

/* Sets a once-only slice; a second occurrence is ambiguous, hence 400. */
static int set_once(struct http_slice *dst, struct http_slice v)
{
    if (dst->p) return -1;
    dst->p = v.p;
    dst->n = v.n;
    return 0;
}

/* Records what the engine needs from one header. Returns NULL or the reason for a 400. */
static const char *on_header(struct http_request *req, struct head_state *hs,
                             const struct http_header *h)
{
    const char *n = h->name.p;
    const char *v = h->value.p;
    size_t vn = h->value.n;

    switch (h->name.n) {
    case 4:
        if (token_eq(n, "host", 4)) {
            if (req->has_host) return "duplicate Host";
            req->has_host = 1;
        }
        break;
    case 6:
        if (token_eq(n, "expect", 6) && value_ieq(v, vn, LIT("100-continue"))) hs->expect_100 = 1;
        break;
    case 10:
        if (token_eq(n, "connection", 10)) scan_connection(hs, v, v + vn);
        break;
    case 12:
        if (token_eq(n, "x-auth-token", 12)) {
            if (set_once(&req->token, h->value)) return "duplicate X-Auth-Token";
        } else if (token_eq(n, "content-type", 12)) {
            /* media type only: cut at ';' and drop the OWS before it */
            const char *semi = memchr(v, ';', vn);
            if (set_once(&req->content_type, trim_ows(v, semi ? semi : v + vn)))
                return "duplicate Content-Type";
        }
        break;
    case 13:
        if (token_eq(n, "authorization", 13) && set_once(&req->authorization, h->value))
            return "duplicate Authorization";
        break;
    case 14:
        if (token_eq(n, "content-length", 14)) {
            uint64_t cl = 0;
            if (hs->seen_cl) return "duplicate Content-Length";
            hs->seen_cl = 1;
            if (vn == 0) return "empty Content-Length";
            for (size_t i = 0; i < vn; i++) {
                unsigned d = (unsigned)((unsigned char)v[i] - '0');
                if (d > 9) return "bad Content-Length";
                /* cl <= 2^53 here, so cl * 10 + 9 cannot wrap */
                cl = cl * 10 + d;
                if (cl > (uint64_t)HTTP_MAX_CONTENT_LENGTH) return "Content-Length too large";
            }
            req->content_length = (int64_t)cl;
        }
        break;
    case 16:
        if (token_eq(n, "content-encoding", 16) && set_once(&req->content_encoding, h->value))
            return "duplicate Content-Encoding";
        break;
    case 17:
        if (token_eq(n, "transfer-encoding", 17)) {
            /* A second header is "chunked, chunked" in disguise. */
            if (hs->seen_te) return "duplicate Transfer-Encoding";
            hs->seen_te = 1;
            if (!value_ieq(v, vn, LIT("chunked"))) return "Transfer-Encoding other than chunked";
            req->chunked = 1;
        }
        break;
    }
    return NULL;
}

/* Contract in http.h. Fills req on every call (slices point into buf); returns the
 * head length, HTTP_INCOMPLETE, or -400 / -431 / -505 with req->error set. */
int http_parse_request(const char *buf, size_t len, size_t max_header, struct http_request *req)
{
    struct head_state hs = {0};
    const char *p, *end, *t;
    const char *why = NULL;
    int code = 0;
    unsigned major, minor;

    req->method = HTTP_METHOD_OTHER;
    req->method_name = req->target = req->path = req->query = (struct http_slice){NULL, 0};
    req->minor_version = 0;
    req->content_length = -1;
    req->chunked = req->keep_alive = req->has_host = req->expect_continue = 0;
    req->token = req->content_type = req->content_encoding = req->authorization =
        (struct http_slice){NULL, 0};
    req->nheaders = 0;
    req->error = NULL;

    if (max_header == 0) max_header = HTTP_MAX_HEADER_BYTES;
    if (max_header > INT_MAX) max_header = INT_MAX; /* the result must fit the int return */
    if (len == 0) return HTTP_INCOMPLETE;
    p = buf;
    end = buf + (len < max_header ? len : max_header);

#define FAIL(c, m)                                                                                 \
    do {                                                                                           \
        code = (c);                                                                                \
        why = (m);                                                                                 \
        goto fail;                                                                                 \
    } while (0)
#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (end - p < (n)) goto more;                                                              \
    } while (0)

    /* RFC 9112 2.2: empty lines before the request-line are ignored (clients that
     * send CRLF after a POST body); they count towards the cap and the result. */
    for (;;) {
        NEED(1);
        if (*p == '\n') FAIL(400, "bare LF");
        if (*p != '\r') break;
        NEED(2);
        if (p[1] != '\n') FAIL(400, "bare CR");
        p += 2;
    }

    /* method SP */
    t = p;
    p = scan_token(p, end);
    NEED(1);
    if (*p != ' ' || p == t) FAIL(400, "bad method");
    req->method_name = (struct http_slice){t, (size_t)(p - t)};
    req->method = method_of(t, (size_t)(p - t));
    p++;

    /* request-target SP */
    NEED(1);
    if (*p != '/' && *p != '*') FAIL(400, "request-target not in origin-form");
    t = p;
    p = scan_ctl(p, end, 0x20);
    NEED(1);
    if (*p != ' ')
        FAIL(400,
             *p == '\r' || *p == '\n' ? "no HTTP version" : "control character in request-target");
    if (*t == '*' && (p - t != 1 || req->method != HTTP_METHOD_OPTIONS))
        FAIL(400, "'*' target only for OPTIONS");
    req->target = (struct http_slice){t, (size_t)(p - t)};
    {
        const char *q = memchr(t, '?', (size_t)(p - t));
        req->path = (struct http_slice){t, (size_t)((q ? q : p) - t)};
        req->query =
            q ? (struct http_slice){q + 1, (size_t)(p - q - 1)} : (struct http_slice){p, 0};
    }
    p++;

    /* HTTP-version CRLF, checked byte by byte so a prefix never gets a wrong verdict */
    for (const char *v = "HTTP/"; *v; v++, p++) {
        NEED(1);
        if (*p != *v) FAIL(400, "bad HTTP version");
    }
    NEED(1);
    major = (unsigned)((unsigned char)*p - '0');
    if (major > 9) FAIL(400, "bad HTTP version");
    p++;
    NEED(1);
    if (*p != '.') FAIL(400, "bad HTTP version");
    p++;
    NEED(1);
    minor = (unsigned)((unsigned char)*p - '0');
    if (minor > 9) FAIL(400, "bad HTTP version");
    p++;
    NEED(1);
    if (*p != '\r') FAIL(400, "bad HTTP version");
    NEED(2);
    if (p[1] != '\n') FAIL(400, "bare CR");
    p += 2;
    if (major != 1 || minor > 1) FAIL(505, "HTTP version not supported");
    req->minor_version = (int)minor;

    /* field-lines, then the empty line */
    for (;;) {
        struct http_header *h;
        const char *name, *vs;

        NEED(1);
        if (*p == '\r') {
            NEED(2);
            if (p[1] != '\n') FAIL(400, "bare CR");
            p += 2;
            break;
        }
        if (*p == ' ' || *p == '\t') FAIL(400, "obs-fold");
        if (req->nheaders == HTTP_MAX_HEADERS) FAIL(431, "too many headers");
        name = p;
        p = scan_token(p, end);
        NEED(1);
        if (*p != ':') {
            if (*p == ' ' || *p == '\t') FAIL(400, "whitespace before colon");
            if (*p == '\n') FAIL(400, "bare LF");
            FAIL(400, "bad character in header name");
        }
        if (p == name) FAIL(400, "empty header name");
        h = &req->headers[req->nheaders];
        h->name = (struct http_slice){name, (size_t)(p - name)};
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        vs = p;
        for (;;) {
            p = scan_ctl(p, end, 0x1f);
            NEED(1);
            if (*p != '\t') break;
            p++;
        }
        if (*p != '\r') FAIL(400, *p == '\n' ? "bare LF" : "control character in header value");
        NEED(2);
        if (p[1] != '\n') FAIL(400, "bare CR");
        h->value = trim_ows(vs, p);
        p += 2;
        req->nheaders++;
        if ((why = on_header(req, &hs, h)) != NULL) FAIL(400, why);
    }

    /* whole-block rules */
    if (minor == 1 && !req->has_host) FAIL(400, "no Host");
    if (hs.seen_te && hs.seen_cl) FAIL(400, "Content-Length with Transfer-Encoding");
    if (hs.seen_te && minor == 0)
        FAIL(400, "Transfer-Encoding on HTTP/1.0"); /* RFC 9112 6.1: framing is faulty */
    req->keep_alive = minor == 1 ? !hs.conn_close : (hs.conn_keep_alive && !hs.conn_close);
    /* RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored */
    req->expect_continue = minor == 1 && hs.expect_100;
    return (int)(p - buf);

more:
    /* Ran out of bytes: a wait, unless the cap is what cut the buffer short. */
    if (len < max_header) return HTTP_INCOMPLETE;
    code = 431;
    why = "header block too large";
fail:
    req->error = why;
    return -code;
#undef FAIL
#undef NEED
}

/* Chunked decoder states; 0 must be the start (the struct starts zeroed).
 * st->line counts the size line (digits first, so while in CH_SIZE it is the
 * digit count) and, after the last chunk, the trailer section. */
enum {
    CH_SIZE = 0, /* hex digits of chunk-size */
    CH_EXT_WS,   /* BWS after the digits */
    CH_EXT,      /* chunk-ext, up to CR */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_START, /* start of a trailer line or the final CRLF */
    CH_TR_NAME,
    CH_TR_VALUE,
    CH_TR_LF,
    CH_END_LF,
    CH_DONE,
};

/* Contract in http.h. Byte-at-a-time state machine for the framing lines, memmove for
 * the data; all state lives in *st so any split of the input gives the same result.
 * Returns raw bytes consumed (complete), HTTP_INCOMPLETE, -400, -413 or -431. */
long http_chunked_decode(struct http_chunked *st, char *buf, size_t len, size_t max_body)
{
    size_t i = st->in, out = st->out;
    uint64_t left = st->chunk_left;
    size_t line = st->line;
    int s = st->state;
    long ret = HTTP_INCOMPLETE;

    if (s < 0) return s; /* a failed body stays failed */
    if (s == CH_DONE) return (long)i;
    if (len < i) {
        /* caller broke the contract (len shrank): refuse rather than misparse */
        s = -400;
        ret = -400;
        goto done;
    }

    while (i < len) {
        unsigned char c;

        if (s == CH_DATA) {
            size_t n = len - i;
            if (n > left) n = (size_t)left;
            if (out != i) memmove(buf + out, buf + i, n);
            out += n;
            i += n;
            left -= n;
            if (left == 0) s = CH_DATA_CR;
            continue;
        }

        c = (unsigned char)buf[i++];
        switch (s) {
        case CH_SIZE:
            if (hexval1[c]) {
                if (line == 16) goto bad; /* more than 64 bits (leading zeros included) */
                left = (left << 4) | (uint64_t)(hexval1[c] - 1);
                line++;
                /* known too large already: say so now, not after the data */
                if (left > max_body - out) goto too_large;
                break;
            }
            if (line == 0) goto bad;
            if (c == '\r')
                s = CH_SIZE_LF;
            else if (c == ';')
                s = CH_EXT;
            else if (c == ' ' || c == '\t')
                s = CH_EXT_WS;
            else
                goto bad;
            if (c != '\r') line++;
            break;
        case CH_EXT_WS:
        case CH_EXT:
            /* the cap counts the line without its CRLF */
            if (c == '\r') {
                s = CH_SIZE_LF;
                break;
            }
            if (++line > HTTP_MAX_CHUNK_LINE) goto bad;
            if (c == ';')
                s = CH_EXT;
            else if (s == CH_EXT_WS ? c != ' ' && c != '\t' : is_ctl(c) && c != '\t')
                goto bad; /* "5 5", or a control character in an extension */
            break;
        case CH_SIZE_LF:
            if (c != '\n') goto bad;
            line = 0;
            s = left ? CH_DATA : CH_TR_START;
            break;
        case CH_DATA_CR:
            if (c != '\r') goto bad;
            s = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n') goto bad;
            s = CH_SIZE;
            line = 0;
            left = 0;
            break;
        case CH_TR_START:
        case CH_TR_NAME:
        case CH_TR_VALUE:
        case CH_TR_LF:
        case CH_END_LF:
            if (++line > HTTP_MAX_TRAILER_BYTES) {
                s = -431;
                ret = -431;
                goto done;
            }
            switch (s) {
            case CH_TR_START:
                if (c == '\r')
                    s = CH_END_LF;
                else if (tchar[c])
                    s = CH_TR_NAME;
                else
                    goto bad; /* obs-fold, empty name, junk */
                break;
            case CH_TR_NAME:
                if (c == ':')
                    s = CH_TR_VALUE;
                else if (!tchar[c])
                    goto bad;
                break;
            case CH_TR_VALUE:
                if (c == '\r')
                    s = CH_TR_LF;
                else if (is_ctl(c) && c != '\t')
                    goto bad;
                break;
            case CH_TR_LF:
                if (c != '\n') goto bad;
                s = CH_TR_START;
                break;
            default: /* CH_END_LF */
                if (c != '\n') goto bad;
                s = CH_DONE;
                ret = (long)i;
                goto done;
            }
            break;
        default:
            goto bad;
        }
    }
    goto done;

too_large:
    s = -413;
    ret = -413;
    goto done;
bad:
    s = -400;
    ret = -400;
done:
    st->state = s;
    st->in = i;
    st->out = out;
    st->chunk_left = left;
    st->line = line;
    return ret;
}

/* Contract in http.h: first header whose name equals name (ASCII case-insensitive). */
size_t http_chunked_compact(struct http_chunked *st, char *buf, size_t len)
{
    if (st->state < 0 || st->state == CH_DONE || st->in <= st->out || st->in > len) return len;
    size_t gap = st->in - st->out;
    memmove(buf + st->out, buf + st->in, len - st->in);
    st->in = st->out;
    return len - gap;
}

int http_header_find(const struct http_request *req, const char *name, struct http_slice *value)
{
    size_t n = strlen(name);

    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        size_t k = 0;
        if (h->name.n != n) continue;
        while (k < n && lower(h->name.p[k]) == lower(name[k]))
            k++;
        if (k == n) {
            *value = h->value;
            return 1;
        }
    }
    return 0;
}

/* Contract in http.h: static reason phrase, "Unknown" for codes not listed. */
const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* Bounded appender: once it overflows it stays overflowed and writes nothing more. */
struct wbuf {
    char *p;
    size_t n, cap;
    int over;
};

static void put(struct wbuf *w, const char *s, size_t n)
{
    if (w->over || n > w->cap - w->n) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

static void put_uint(struct wbuf *w, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(w, tmp + i, sizeof(tmp) - i);
}

/* Contract in http.h. Never writes past out[cap-1]; -1 leaves out partly written. */
int http_write_response(char *out, size_t cap, int status, int keep_alive, const char *extra,
                        const char *body, size_t body_len)
{
    return http_write_response_typed(out, cap, status, keep_alive, "application/json", extra, body,
                                     body_len);
}

int http_write_response_typed(char *out, size_t cap, int status, int keep_alive,
                              const char *content_type, const char *extra, const char *body,
                              size_t body_len)
{
    struct wbuf w = {out, 0, cap, 0};
    const char *reason;
    int interim = status >= 100 && status < 200;

    if (status < 100 || status > 999) return -1;
    if ((interim || status == 204) && body_len > 0)
        return -1; /* RFC 9110 6.4.1: these responses have no content */
    reason = http_status_text(status);

    put(&w, LIT("HTTP/1.1 "));
    put_uint(&w, (uint64_t)status);
    put(&w, LIT(" "));
    put(&w, reason, strlen(reason));
    put(&w, LIT("\r\n"));
    if (!interim) {
        if (body_len > 0) {
            put(&w, LIT("Content-Type: "));
            put(&w, content_type, strlen(content_type));
            put(&w, LIT("\r\n"));
        }
        if (status != 204) {
            put(&w, LIT("Content-Length: "));
            put_uint(&w, (uint64_t)body_len);
            put(&w, LIT("\r\n"));
        }
        if (keep_alive)
            put(&w, LIT("Connection: keep-alive\r\n"));
        else
            put(&w, LIT("Connection: close\r\n"));
    }
    if (extra) put(&w, extra, strlen(extra));
    put(&w, LIT("\r\n"));
    if (body_len) put(&w, body, body_len);
    if (w.over || w.n > (size_t)0x7fffffff) return -1;
    return (int)w.n;
}
