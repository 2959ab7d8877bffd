/* protocols/json.c — one-pass validating JSON scanner and reading splitter; see json.h.
 *
 * The scanner never builds values: it only proves that bytes are RFC 8259 JSON and
 * finds where each top-level reading begins and ends, so readings can be stored as
 * slices of the request body. Nesting is tracked with a 64-bit stack (one bit per
 * open container: object or array) instead of recursion, so hostile input cannot
 * grow the C stack. Every read is bounded by `end`; nothing past buf[len-1] is
 * touched, not even by the 8-byte string fast path.
 *
 * Choices the header leaves open:
 * - A UTF-8 BOM at offset 0 is an error ("byte order mark not allowed"): RFC 8259
 *   §8.1 forbids senders to add one, and skipping it would store bytes the device
 *   did not mean as part of its reading.
 * - NDJSON lines must hold objects, like the elements of a readings array; a body
 *   with no non-blank line (including a zero-length one) is "empty body".
 * - Duplicate object keys are accepted (RFC 8259 §4 says SHOULD be unique).
 * - err->element is the index of the reading being scanned when the error was
 *   found; for an error between elements (missing ',', trailing comma, garbage
 *   after ']') it is the index the next element would have had, which equals the
 *   number of readings already delivered. A lone top-level object is only
 *   delivered once the whole body has been checked, so it is never rolled back.
 * - err may be NULL.
 */
#include "protocols/json.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Byte classes inside a string. Multi-byte UTF-8 leads are split by the range
 * their second byte must fall in (Unicode 15, table 3-7), which is what rejects
 * overlongs (E0 80.., F0 80..), UTF-16 surrogates (ED A0..) and > U+10FFFF (F4 90..). */
enum {
    AS, /* printable ASCII, no special meaning */
    QU, /* '"' ends the string */
    ES, /* '\\' starts an escape */
    CT, /* control character: must be escaped */
    BA, /* never valid: stray continuation, C0/C1 overlong leads, F5..FF */
    U2, /* C2..DF 80..BF */
    E0, /* E0 A0..BF 80..BF */
    U3, /* E1..EC, EE..EF 80..BF 80..BF */
    ED, /* ED 80..9F 80..BF */
    F0, /* F0 90..BF 80..BF 80..BF */
    U4, /* F1..F3 80..BF 80..BF 80..BF */
    F4, /* F4 80..8F 80..BF 80..BF */
};

static const uint8_t str_class[256] = {
    CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, /* 00 */
    CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, CT, /* 10 */
    AS, AS, QU, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, /* 20 */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, /* 30 */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, /* 40 */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, ES, AS, AS, AS, /* 50 */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, /* 60 */
    AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, AS, /* 70 */
    BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, /* 80 */
    BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, /* 90 */
    BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, /* a0 */
    BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, /* b0 */
    BA, BA, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, /* c0 */
    U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, U2, /* d0 */
    E0, U3, U3, U3, U3, U3, U3, U3, U3, U3, U3, U3, U3, ED, U3, U3, /* e0 */
    F0, U4, U4, U4, F4, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, BA, /* f0 */
};

/* Sequence length and allowed second-byte range per lead class (indexed by class). */
static const struct {
    uint8_t len, lo, hi;
} utf8_lead[] = {
    [U2] = {2, 0x80, 0xbf}, [E0] = {3, 0xa0, 0xbf}, [U3] = {3, 0x80, 0xbf}, [ED] = {3, 0x80, 0x9f},
    [F0] = {4, 0x90, 0xbf}, [U4] = {4, 0x80, 0xbf}, [F4] = {4, 0x80, 0x8f},
};

/* RFC 8259 §2: exactly these four; no VT, FF, NBSP or BOM. */
static const uint8_t ws_tab[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};

/* Bytes that may not directly follow a complete number: seeing one means the
 * grammar was broken ("01", "1.5.3", "1e5e", "-0-"), not that the value ended. */
static const uint8_t num_cont[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['.'] = 1, ['e'] = 1, ['E'] = 1, ['+'] = 1, ['-'] = 1,
};

static const char E_EMPTY[] = "empty body";
static const char E_BOM[] = "byte order mark not allowed";
static const char E_TOPLEVEL[] = "expected an object or an array of objects";
static const char E_NOT_OBJECT[] = "element is not an object";
static const char E_EOF[] = "unexpected end of input";
static const char E_UNTERM_OBJ[] = "unterminated object";
static const char E_UNTERM_ARR[] = "unterminated array";
static const char E_UNTERM_STR[] = "unterminated string";
static const char E_VALUE[] = "expected a value";
static const char E_KEY[] = "expected a string key";
static const char E_COLON[] = "expected ':'";
static const char E_OBJ_SEP[] = "expected ',' or '}'";
static const char E_ARR_SEP[] = "expected ',' or ']'";
static const char E_TRAILING_COMMA[] = "trailing comma";
static const char E_NUMBER[] = "invalid number";
static const char E_LITERAL[] = "invalid literal";
static const char E_ESCAPE[] = "invalid escape";
static const char E_UESCAPE[] = "invalid \\u escape";
static const char E_SURROGATE[] = "lone surrogate";
static const char E_UTF8[] = "invalid UTF-8";
static const char E_CONTROL[] = "control character in string";
static const char E_DEPTH[] = "too deeply nested";
static const char E_TRAILING[] = "trailing garbage";

struct fail {
    const uint8_t *at;
    const char *msg;
};

static inline const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end)
{
    while (p < end && ws_tab[*p])
        p++;
    return p;
}

static inline const uint8_t *fail_at(struct fail *f, const uint8_t *at, const char *msg)
{
    f->at = at;
    f->msg = msg;
    return NULL;
}

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Non-zero iff one of the 8 bytes is '"', '\\', < 0x20 or >= 0x80. The classic
 * "has zero byte" trick can flag false positives, but only in bytes above a true
 * hit, so the lowest flagged byte is always the first special one. */
static inline uint64_t special8(uint64_t x)
{
    uint64_t q = x ^ (ONES * '"');
    uint64_t b = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x) & HIGHS;
}

static inline int hexval(uint8_t c)
{
    if ((unsigned)(c - '0') < 10) return c - '0';
    c |= 0x20;
    if ((unsigned)(c - 'a') < 6) return c - 'a' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape at p. Returns the code unit, or -1 with *f
 * set (end of input inside the digits is reported as an unterminated string). */
static long hex4(const uint8_t *p, const uint8_t *end, struct fail *f)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        if (p + i == end) {
            fail_at(f, p + i, E_UNTERM_STR);
            return -1;
        }
        int d = hexval(p[i]);
        if (d < 0) {
            fail_at(f, p + i, E_UESCAPE);
            return -1;
        }
        v = v << 4 | d;
    }
    return v;
}

/* p is at the backslash of an escape, p + 1 < end. Returns the byte after it. */
static const uint8_t *scan_escape(const uint8_t *p, const uint8_t *end, struct fail *f)
{
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return p + 2;
    case 'u':
        break;
    default:
        return fail_at(f, p, E_ESCAPE);
    }
    long u = hex4(p + 2, end, f);
    if (u < 0) return NULL;
    if (u < 0xd800 || u > 0xdfff) return p + 6;
    if (u >= 0xdc00) return fail_at(f, p, E_SURROGATE);
    /* A high surrogate is only meaningful as the first half of a \uD8xx\uDCxx pair. */
    const uint8_t *q = p + 6;
    if (q == end || (*q == '\\' && q + 1 == end)) return fail_at(f, q, E_UNTERM_STR);
    if (q[0] != '\\' || q[1] != 'u') return fail_at(f, p, E_SURROGATE);
    long lo = hex4(q + 2, end, f);
    if (lo < 0) return NULL;
    if (lo < 0xdc00 || lo > 0xdfff) return fail_at(f, p, E_SURROGATE);
    return q + 6;
}

/* p is just past the opening quote. Returns the byte after the closing quote. */
static const uint8_t *scan_string(const uint8_t *p, const uint8_t *end, struct fail *f)
{
    for (;;) {
        /* Fast path: skip plain ASCII 8 bytes at a time; never loads past end. */
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t m = special8(x);
            if (m) {
#if defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                p += __builtin_ctzll(m) >> 3;
#endif
                break;
            }
            p += 8;
        }
        if (p == end) return fail_at(f, p, E_UNTERM_STR);
        unsigned cls = str_class[*p];
        switch (cls) {
        case AS:
            p++;
            continue;
        case QU:
            return p + 1;
        case ES:
            if (end - p < 2) return fail_at(f, end, E_UNTERM_STR);
            p = scan_escape(p, end, f);
            if (!p) return NULL;
            continue;
        case CT:
            return fail_at(f, p, E_CONTROL);
        case BA:
            return fail_at(f, p, E_UTF8);
        default:
            break;
        }
        unsigned n = utf8_lead[cls].len;
        for (unsigned i = 1; i < n; i++) {
            if (p + i == end) return fail_at(f, end, E_UNTERM_STR);
            uint8_t c = p[i];
            uint8_t lo = i == 1 ? utf8_lead[cls].lo : 0x80;
            uint8_t hi = i == 1 ? utf8_lead[cls].hi : 0xbf;
            if (c < lo || c > hi) return fail_at(f, p, E_UTF8);
        }
        p += n;
    }
}

static inline int is_digit(uint8_t c)
{
    return (unsigned)(c - '0') < 10;
}

/* RFC 8259 §6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
 * Magnitude is irrelevant: 1e999999 and 400-digit integers are valid JSON and we
 * store bytes, not doubles. */
static const uint8_t *scan_number(const uint8_t *p, const uint8_t *end, struct fail *f)
{
    const uint8_t *start = p;
    if (*p == '-') p++;
    if (p == end) return fail_at(f, start, E_NUMBER);
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        do
            p++;
        while (p < end && is_digit(*p));
    } else {
        return fail_at(f, start, E_NUMBER);
    }
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p)) return fail_at(f, start, E_NUMBER);
        do
            p++;
        while (p < end && is_digit(*p));
    }
    if (p < end && (*p | 0x20) == 'e') {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p == end || !is_digit(*p)) return fail_at(f, start, E_NUMBER);
        do
            p++;
        while (p < end && is_digit(*p));
    }
    if (p < end && num_cont[*p]) return fail_at(f, start, E_NUMBER);
    return p;
}

static const uint8_t *scan_literal(const uint8_t *p, const uint8_t *end, const char *lit, size_t n,
                                   struct fail *f)
{
    size_t have = (size_t)(end - p) < n ? (size_t)(end - p) : n;
    if (memcmp(p, lit, have) != 0) return fail_at(f, p, E_LITERAL);
    if (have < n) return fail_at(f, end, E_EOF);
    return p + n;
}

/* Scans one complete value starting at p (p < end, not whitespace), with `outer`
 * containers already open around it. Returns the byte after the value or NULL
 * with *f set. Iterative: `stack` bit i is 1 when local level i is an object. */
static const uint8_t *scan_value(const uint8_t *p, const uint8_t *end, unsigned outer,
                                 struct fail *f)
{
    uint64_t stack = 0;
    unsigned depth = 0;

value:
    switch (*p) {
    case '{':
    case '[': {
        /* one opening step for both: the stack bit says which one is open */
        bool obj = *p == '{';
        if (outer + depth >= JSON_MAX_DEPTH) return fail_at(f, p, E_DEPTH);
        if (obj)
            stack |= 1ull << depth;
        else
            stack &= ~(1ull << depth);
        depth++;
        p = skip_ws(p + 1, end);
        if (p == end) goto eof;
        if (*p == (obj ? '}' : ']')) {
            p++;
            depth--;
            goto after_value;
        }
        if (obj) goto key;
        goto value;
    }
    case '"':
        p = scan_string(p + 1, end, f);
        break;
    case 't':
        p = scan_literal(p, end, "true", 4, f);
        break;
    case 'f':
        p = scan_literal(p, end, "false", 5, f);
        break;
    case 'n':
        p = scan_literal(p, end, "null", 4, f);
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        p = scan_number(p, end, f);
        break;
    default:
        return fail_at(f, p, E_VALUE);
    }
    if (!p) {
        /* A literal cut by the end of input is reported against the innermost
         * open container, like every other truncation. */
        if (f->msg == E_EOF && depth) goto eof;
        return NULL;
    }

after_value:
    if (depth == 0) return p;
    p = skip_ws(p, end);
    if (p == end) goto eof;
    {
        /* inside an object or an array: the same separator rules, its own closer */
        bool in_obj = stack >> (depth - 1) & 1;
        char close = in_obj ? '}' : ']';
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            if (p == end) goto eof;
            if (*p == close) return fail_at(f, p, E_TRAILING_COMMA);
            if (in_obj) goto key;
            goto value;
        }
        if (*p == close) {
            p++;
            depth--;
            goto after_value;
        }
        return fail_at(f, p, in_obj ? E_OBJ_SEP : E_ARR_SEP);
    }

key:
    /* p < end, not whitespace */
    if (*p != '"') return fail_at(f, p, E_KEY);
    p = scan_string(p + 1, end, f);
    if (!p) return NULL;
    p = skip_ws(p, end);
    if (p == end) goto eof;
    if (*p != ':') return fail_at(f, p, E_COLON);
    p = skip_ws(p + 1, end);
    if (p == end) goto eof;
    goto value;

eof:
    if (depth == 0) return fail_at(f, end, E_EOF);
    return fail_at(f, end, (stack >> (depth - 1) & 1) ? E_UNTERM_OBJ : E_UNTERM_ARR);
}

static int report(struct json_error *err, const uint8_t *buf, size_t element, const struct fail *f)
{
    if (err) {
        err->element = element;
        err->offset = (size_t)(f->at - buf);
        err->msg = f->msg;
    }
    return JSON_ERROR;
}

/* RFC 8259 §8.1: senders MUST NOT add a BOM, receivers MAY ignore it. We refuse
 * it so that a stored reading is always exactly the JSON the device meant. */
static int has_bom(const uint8_t *b, size_t len)
{
    return len >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf;
}

int json_validate(const char *buf, size_t len, struct json_error *err)
{
    const uint8_t *b = (const uint8_t *)buf, *end = b + len, *p;
    struct fail f;

    if (has_bom(b, len)) {
        fail_at(&f, b, E_BOM);
        goto fail;
    }
    p = skip_ws(b, end);
    if (p == end) {
        fail_at(&f, p, E_EMPTY);
        goto fail;
    }
    p = scan_value(p, end, 0, &f);
    if (!p) goto fail;
    p = skip_ws(p, end);
    if (p != end) {
        fail_at(&f, p, E_TRAILING);
        goto fail;
    }
    return 0;

fail:
    return report(err, b, 0, &f);
}

int json_split_readings(const char *buf, size_t len, json_reading_fn fn, void *ctx,
                        size_t *count_out, struct json_error *err)
{
    const uint8_t *b = (const uint8_t *)buf, *end = b + len, *p, *q;
    struct fail f;
    size_t count = 0;
    int rc = JSON_OK;

    if (has_bom(b, len)) {
        fail_at(&f, b, E_BOM);
        goto fail;
    }
    p = skip_ws(b, end);
    if (p == end) {
        fail_at(&f, p, E_EMPTY);
        goto fail;
    }
    if (*p == '{') {
        /* One reading: check the tail before delivering so a lone object is
         * never delivered and then rolled back. */
        q = scan_value(p, end, 0, &f);
        if (!q) goto fail;
        if (skip_ws(q, end) != end) {
            fail_at(&f, skip_ws(q, end), E_TRAILING);
            goto fail;
        }
        if (fn(ctx, (const char *)p, (size_t)(q - p))) {
            rc = JSON_STOPPED;
        } else {
            count = 1;
        }
        goto out;
    }
    if (*p != '[') {
        fail_at(&f, p, E_TOPLEVEL);
        goto fail;
    }
    p = skip_ws(p + 1, end);
    if (p == end) {
        fail_at(&f, p, E_UNTERM_ARR);
        goto fail;
    }
    if (*p != ']') {
        for (;;) {
            if (*p != '{') {
                fail_at(&f, p, E_NOT_OBJECT);
                goto fail;
            }
            q = scan_value(p, end, 1, &f);
            if (!q) goto fail;
            if (fn(ctx, (const char *)p, (size_t)(q - p))) {
                rc = JSON_STOPPED;
                goto out;
            }
            count++;
            p = skip_ws(q, end);
            if (p == end) {
                fail_at(&f, p, E_UNTERM_ARR);
                goto fail;
            }
            if (*p == ']') break;
            if (*p != ',') {
                fail_at(&f, p, E_ARR_SEP);
                goto fail;
            }
            p = skip_ws(p + 1, end);
            if (p == end) {
                fail_at(&f, p, E_UNTERM_ARR);
                goto fail;
            }
            if (*p == ']') {
                fail_at(&f, p, E_TRAILING_COMMA);
                goto fail;
            }
        }
    }
    p = skip_ws(p + 1, end);
    if (p != end) {
        fail_at(&f, p, E_TRAILING);
        goto fail;
    }
    goto out;

fail:
    rc = report(err, b, count, &f);
out:
    if (count_out) *count_out = count;
    return rc;
}

int json_split_ndjson(const char *buf, size_t len, json_reading_fn fn, void *ctx, size_t *count_out,
                      struct json_error *err)
{
    const uint8_t *b = (const uint8_t *)buf, *end = b + len, *line = b;
    struct fail f;
    size_t count = 0;
    int rc = JSON_OK;

    if (has_bom(b, len)) {
        fail_at(&f, b, E_BOM);
        goto fail;
    }
    while (line < end) {
        /* A JSON string cannot hold a raw LF, so the line end is found before
         * scanning and bounds it: a value may never continue onto the next line. */
        const uint8_t *nl = memchr(line, '\n', (size_t)(end - line));
        const uint8_t *lend = nl ? nl : end;
        const uint8_t *p = skip_ws(line, lend), *q;

        line = nl ? nl + 1 : end;
        if (p == lend) continue; /* blank line ("\r" alone included) */
        if (*p != '{') {
            fail_at(&f, p, E_NOT_OBJECT);
            goto fail;
        }
        q = scan_value(p, lend, 0, &f);
        if (!q) goto fail;
        if (skip_ws(q, lend) != lend) {
            fail_at(&f, skip_ws(q, lend), E_TRAILING);
            goto fail;
        }
        if (fn(ctx, (const char *)p, (size_t)(q - p))) {
            rc = JSON_STOPPED;
            goto out;
        }
        count++;
    }
    if (count == 0) {
        fail_at(&f, end, E_EMPTY);
        goto fail;
    }
    goto out;

fail:
    rc = report(err, b, count, &f);
out:
    if (count_out) *count_out = count;
    return rc;
}
