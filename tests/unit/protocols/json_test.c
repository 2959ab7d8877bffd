/* tests/unit/protocols/json_test.c — RFC 8259 validation and the reading splitters.
 *
 * Every input is copied so that it ends exactly before a PROT_NONE page: a scanner
 * that reads one byte past buf[len-1] dies with SIGSEGV instead of passing. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "protocols/json.h"

/* Under ASan the guard-page fault must stay a plain SIGSEGV for the harness test. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JSON_TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(JSON_TEST_ASAN)
/* default visibility: the sanitizer runtime looks this up by name, and the
 * project builds with -fvisibility=hidden */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
    return "handle_segv=0";
}
#endif

#define GUARD_CAP (4u << 20)
#define NO_OFFSET SIZE_MAX

static char *guard_base;

/* Returns a copy of s[0, n) whose last byte is the last byte before a PROT_NONE page. */
static const char *guarded(const void *s, size_t n)
{
    if (!guard_base) {
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        char *m =
            mmap(NULL, GUARD_CAP + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert(m != MAP_FAILED, "mmap");
        cr_assert(mprotect(m + GUARD_CAP, pg, PROT_NONE) == 0, "mprotect");
        guard_base = m;
    }
    cr_assert(n <= GUARD_CAP);
    char *p = guard_base + GUARD_CAP - n;
    memmove(p, s, n);
    return p;
}

/* Printable form of a test input for failure messages. */
static const char *show(const char *s, size_t n)
{
    static char out[512];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < sizeof out; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", c);
    }
    if (o + 8 >= sizeof out)
        strcpy(out + o, "...");
    else
        out[o] = 0;
    return out;
}

struct coll {
    const char *base;
    size_t calls;
    size_t count;   /* the splitter's count of accepted readings, apart from its result */
    size_t stop_at; /* return `rc` from the call with this 0-based index */
    int rc;
    size_t off[64];
    size_t len[64];
};

static void coll_init(struct coll *c, const char *base)
{
    memset(c, 0, sizeof *c);
    c->base = base;
    c->stop_at = SIZE_MAX;
}

static int collect(void *ctx, const char *p, size_t n)
{
    struct coll *c = ctx;
    if (c->calls < 64) {
        c->off[c->calls] = (size_t)(p - c->base);
        c->len[c->calls] = n;
    }
    return c->calls++ == c->stop_at ? c->rc : 0;
}

static void expect_valid_n(const char *s, size_t n)
{
    struct json_error e = {0};
    const char *b = guarded(s, n);
    int rc = json_validate(b, n, &e);
    cr_expect_eq(rc, 0, "valid input rejected: [%s] (%s at %zu)", show(s, n), e.msg ? e.msg : "",
                 e.offset);
}
#define expect_valid(s) expect_valid_n((s), sizeof(s) - 1)

/* msg NULL / offset NO_OFFSET: not checked. */
static void expect_invalid_n(const char *s, size_t n, const char *msg, size_t offset)
{
    struct json_error e = {.element = 99};
    const char *b = guarded(s, n);
    int rc = json_validate(b, n, &e);
    cr_expect_eq(rc, JSON_ERROR, "invalid input accepted: [%s]", show(s, n));
    if (rc != JSON_ERROR) return;
    cr_expect_not_null(e.msg, "no message for [%s]", show(s, n));
    cr_expect_eq(e.element, 0, "element for [%s]", show(s, n));
    cr_expect_leq(e.offset, n, "offset %zu beyond input for [%s]", e.offset, show(s, n));
    if (msg && e.msg) cr_expect_str_eq(e.msg, msg, "message for [%s]", show(s, n));
    if (offset != NO_OFFSET)
        cr_expect_eq(e.offset, offset, "offset for [%s]: %zu, want %zu", show(s, n), e.offset,
                     offset);
}
#define expect_invalid(s, msg, off) expect_invalid_n((s), sizeof(s) - 1, (msg), (off))

/* The splitter's result (JSON_OK / JSON_ERROR / JSON_STOPPED); its count of
 * readings goes to c->count, a separate channel. */
static int split_n(const char *s, size_t n, struct coll *c, struct json_error *e)
{
    const char *b = guarded(s, n);
    coll_init(c, b);
    memset(e, 0, sizeof *e);
    c->count = 12345; /* must be overwritten whatever the result */
    return json_split_readings(b, n, collect, c, &c->count, e);
}

static int ndjson_n(const char *s, size_t n, struct coll *c, struct json_error *e)
{
    const char *b = guarded(s, n);
    coll_init(c, b);
    memset(e, 0, sizeof *e);
    c->count = 12345;
    return json_split_ndjson(b, n, collect, c, &c->count, e);
}
#define split(s, c, e)  split_n((s), sizeof(s) - 1, (c), (e))
#define ndjson(s, c, e) ndjson_n((s), sizeof(s) - 1, (c), (e))

static void expect_slice(const struct coll *c, size_t i, const char *want)
{
    cr_assert_gt(c->calls, i, "reading %zu not delivered", i);
    cr_expect_eq(c->len[i], strlen(want), "reading %zu length %zu, want %zu", i, c->len[i],
                 strlen(want));
    cr_expect(c->len[i] == strlen(want) && memcmp(c->base + c->off[i], want, c->len[i]) == 0,
              "reading %zu is [%s]", i, show(c->base + c->off[i], c->len[i]));
}

static void expect_split_err(const char *s, size_t n, const char *msg, size_t element,
                             size_t offset)
{
    struct coll c;
    struct json_error e;
    int rc = split_n(s, n, &c, &e);
    cr_expect_eq(rc, JSON_ERROR, "accepted: [%s]", show(s, n));
    if (rc != JSON_ERROR) return;
    cr_assert_not_null(e.msg);
    if (msg) cr_expect_str_eq(e.msg, msg, "message for [%s]", show(s, n));
    cr_expect_eq(e.element, element, "element for [%s]: %zu", show(s, n), e.element);
    if (offset != NO_OFFSET)
        cr_expect_eq(e.offset, offset, "offset for [%s]: %zu, want %zu", show(s, n), e.offset,
                     offset);
}

static char *repeat(const char *unit, size_t times, const char *tail)
{
    size_t u = strlen(unit), t = strlen(tail);
    char *s = malloc(u * times + t + 1);
    cr_assert_not_null(s);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * u, unit, u);
    memcpy(s + u * times, tail, t + 1);
    return s;
}

/* ---------------------------------------------------------------- guard page */

/* Proves the harness: touching the byte after a guarded input must fault. */
Test(json_guard, guard_page_traps_overread, .signal = SIGSEGV)
{
    const volatile char *b = guarded("{}", 2);
    (void)b[2];
}

Test(json_guard, input_ends_at_guard_page)
{
    /* Each of these ends in a state where a sloppy scanner peeks at buf[len]. */
    expect_valid("1");
    expect_valid("-0");
    expect_valid("1.5e10");
    expect_valid("true");
    expect_valid("\"abc\"");
    expect_valid("\"0123456789abcdef0123456789\"");
    expect_invalid("\"abc", "unterminated string", 4);
    expect_invalid("\"0123456789abcdefghijklmnopqrstuvwxyz", "unterminated string", 37);
    expect_invalid("\"abc\\", "unterminated string", NO_OFFSET);
    expect_invalid("\"\\u12", "unterminated string", NO_OFFSET);
    expect_invalid("\"\\ud83d", "unterminated string", NO_OFFSET);
    expect_invalid("\"\\ud83d\\", "unterminated string", NO_OFFSET);
    expect_invalid("\"\\ud83d\\ude", "unterminated string", NO_OFFSET);
    expect_invalid("\"\xe2\x82", "unterminated string", NO_OFFSET);
    expect_invalid("\"\xf0\x9f\x98", "unterminated string", NO_OFFSET);
    expect_invalid("tru", NULL, NO_OFFSET);
    expect_invalid("1.", "invalid number", 0);
    expect_invalid("1e+", "invalid number", 0);
    expect_invalid("-", "invalid number", 0);
    expect_invalid("{\"a\"", "unterminated object", 4);
    expect_invalid("[1,", "unterminated array", 3);

    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("{\"a\":1}\n{\"b\":2}", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 2);
    cr_expect_eq(split("[{}]", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 1);
}

/* ---------------------------------------------------------------- valid */

Test(json, valid_objects)
{
    expect_valid("{}");
    expect_valid("{\"a\":1}");
    expect_valid("{\"a\":1,\"b\":\"x\",\"c\":true,\"d\":false,\"e\":null,\"f\":[],\"g\":{}}");
    expect_valid(" \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n1 \t\r\n, \"b\" : [ 1 , 2 ] } \t\r\n");
    expect_valid("{\"\":\"\"}");
    /* RFC 8259 §4: names SHOULD be unique; duplicates are still JSON. */
    expect_valid("{\"a\":1,\"a\":2}");
}

Test(json, valid_arrays_and_nesting)
{
    expect_valid("[]");
    expect_valid("[{}]");
    expect_valid("[{\"a\":1},{\"b\":[{\"c\":[[[]]]}]}]");
    expect_valid("[1,\"two\",[3],{\"four\":4},true,null]");
    expect_valid("{\"a\":{\"b\":{\"c\":{\"d\":[{\"e\":[1,[2,[3]]]}]}}}}");
}

/* RFC 8259 §2: a JSON text is any value; json_validate accepts scalars. */
Test(json, valid_top_level_scalars)
{
    expect_valid("0");
    expect_valid("\"\"");
    expect_valid("null");
    expect_valid("false");
    expect_valid(" 42 ");
}

/* RFC 8259 §7: every two-character escape and \u in both cases. */
Test(json, valid_all_escapes)
{
    expect_valid("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\"");
    expect_valid("\"\\u0000\\u001f\\u0041\\u00e9\\u00E9\\uABCD\\uffff\\uFFFE\"");
    expect_valid("{\"k\\n\\u0022\":\"\\\\\"}");
    expect_valid("\"\\ud7ff\\ue000\""); /* just outside the surrogate range */
}

Test(json, valid_surrogate_pairs)
{
    expect_valid("\"\\ud83d\\ude00\"");                 /* U+1F600 */
    expect_valid("\"\\uD800\\uDC00\"");                 /* U+10000 */
    expect_valid("\"\\udbff\\udfff\"");                 /* U+10FFFF */
    expect_valid("\"a\\ud83d\\ude00b\\ud83d\\ude01\""); /* pairs between text */
}

Test(json, valid_multibyte_utf8)
{
    expect_valid("\"\xc2\x80\"");         /* U+0080, smallest 2-byte */
    expect_valid("\"\xdf\xbf\"");         /* U+07FF */
    expect_valid("\"\xe0\xa0\x80\"");     /* U+0800, smallest 3-byte */
    expect_valid("\"\xed\x9f\xbf\"");     /* U+D7FF, just below surrogates */
    expect_valid("\"\xee\x80\x80\"");     /* U+E000, just above */
    expect_valid("\"\xef\xbf\xbf\"");     /* U+FFFF */
    expect_valid("\"\xf0\x90\x80\x80\""); /* U+10000, smallest 4-byte */
    expect_valid("\"\xf4\x8f\xbf\xbf\""); /* U+10FFFF, the last code point */
    expect_valid("\"\xf3\xbf\xbf\xbf\""); /* F1..F3 leads */
    expect_valid("{\"caf\xc3\xa9\":\"\xe2\x82\xac 12 \xf0\x9f\x98\x80\"}");
    expect_valid("\"\x7f\""); /* DEL is not a control character for JSON */
    /* Multibyte sequences straddling the 8-byte fast-path boundary at every shift. */
    for (size_t pad = 0; pad < 16; pad++) {
        char s[64];
        size_t n = 0;
        s[n++] = '"';
        memset(s + n, 'x', pad);
        n += pad;
        memcpy(s + n, "\xf0\x9f\x98\x80\xe2\x82\xac\xc3\xa9\"", 10);
        n += 10;
        expect_valid_n(s, n);
    }
}

/* RFC 8259 §6 allows any magnitude; we store bytes, not doubles. */
Test(json, valid_huge_numbers)
{
    expect_valid("1e999999");
    expect_valid("-1E-999999");
    expect_valid("-0.0e-0");
    expect_valid("0E+00");
    expect_valid("1E-007");
    expect_valid("[0,-0,0.0,10,-10.01e+1,123456789012345678901234567890]");
    char *big = repeat("1234567890", 40, "");
    expect_valid_n(big, strlen(big));
    char *obj = repeat("9", 400, "}");
    size_t n = strlen(obj);
    char *full = malloc(n + 8);
    cr_assert_not_null(full);
    memcpy(full, "{\"v\":", 5);
    memcpy(full + 5, obj, n + 1);
    expect_valid_n(full, strlen(full));
    free(full);
    free(obj);
    free(big);
}

Test(json, valid_long_string_fast_path)
{
    size_t n = 1u << 20;
    char *s = malloc(n);
    cr_assert_not_null(s);
    s[0] = '"';
    for (size_t i = 1; i < n - 1; i++) {
        char ch = (char)(' ' + i % 90);
        s[i] = ch == '"' || ch == '\\' ? 'q' : ch;
    }
    s[n - 1] = '"';
    expect_valid_n(s, n);
    s[n / 2] = '\x01';
    expect_invalid_n(s, n, "control character in string", n / 2);
    free(s);
}

/* ---------------------------------------------------------------- invalid */

Test(json, empty_body)
{
    expect_invalid_n("", 0, "empty body", 0);
    expect_invalid(" \t\r\n", "empty body", 4);
    expect_split_err("", 0, "empty body", 0, 0);
    expect_split_err("  \n", 3, "empty body", 0, 3);
}

/* RFC 8259 §8.1: a BOM MUST NOT be added; we refuse it rather than skip it. */
Test(json, utf8_bom_rejected)
{
    expect_invalid("\xef\xbb\xbf{}", "byte order mark not allowed", 0);
    expect_split_err("\xef\xbb\xbf[]", 5, "byte order mark not allowed", 0, 0);
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("\xef\xbb\xbf{}\n", &c, &e), JSON_ERROR);
    cr_expect_str_eq(e.msg, "byte order mark not allowed");
    expect_invalid(" \xef\xbb\xbf{}", NULL, 1);
}

Test(json, number_leading_zero)
{
    expect_invalid("01", "invalid number", 0);
    expect_invalid("-01", "invalid number", 0);
    expect_invalid("00", "invalid number", 0);
    expect_invalid("{\"a\":01}", "invalid number", 5);
    expect_invalid("[007]", "invalid number", 1);
}

Test(json, number_plus_sign)
{
    expect_invalid("+1", "expected a value", 0);
    expect_invalid("[+0]", "expected a value", 1);
}

Test(json, number_leading_dot)
{
    expect_invalid(".5", "expected a value", 0);
    expect_invalid("-.5", "invalid number", 0);
}

Test(json, number_trailing_dot)
{
    expect_invalid("5.", "invalid number", 0);
    expect_invalid("[5.]", "invalid number", 1);
    expect_invalid("5.e3", "invalid number", 0);
}

Test(json, number_exponent_needs_digits)
{
    expect_invalid("1e", "invalid number", 0);
    expect_invalid("1E+", "invalid number", 0);
    expect_invalid("1e-]", "invalid number", 0);
    expect_invalid("[1e]", "invalid number", 1);
    expect_invalid("1e5.0", "invalid number", 0);
    expect_invalid("1e5e5", "invalid number", 0);
}

Test(json, number_other_garbage)
{
    expect_invalid("-", "invalid number", 0);
    expect_invalid("--1", "invalid number", 0);
    expect_invalid("1.2.3", "invalid number", 0);
    expect_invalid("0x10", "trailing garbage", 1);
    expect_invalid("NaN", "expected a value", 0);
    expect_invalid("Infinity", "expected a value", 0);
    expect_invalid("-Infinity", "invalid number", 0);
    expect_invalid("[1-2]", "invalid number", 1);
}

Test(json, bad_literals)
{
    expect_invalid("tru", "unexpected end of input", 3);
    expect_invalid("[tru", "unterminated array", 4);
    expect_invalid("trUe", "invalid literal", 0);
    expect_invalid("True", "expected a value", 0);
    expect_invalid("nul", NULL, NO_OFFSET);
    expect_invalid("nulll", "trailing garbage", 4);
    expect_invalid("falsey", "trailing garbage", 5);
    expect_invalid("[truex]", "expected ',' or ']'", 5);
    expect_invalid("undefined", "expected a value", 0);
}

Test(json, string_syntax)
{
    expect_invalid("'a'", "expected a value", 0);
    expect_invalid("{'a':1}", "expected a string key", 1);
    expect_invalid("{a:1}", "expected a string key", 1);
    expect_invalid("{1:1}", "expected a string key", 1);
    expect_invalid("{\"a\" 1}", "expected ':'", 5);
    expect_invalid("{\"a\"=1}", "expected ':'", 4);
    expect_invalid("{\"a\":}", "expected a value", 5);
}

Test(json, missing_separators)
{
    expect_invalid("[1 2]", "expected ',' or ']'", 3);
    expect_invalid("{\"a\":1 \"b\":2}", "expected ',' or '}'", 7);
    expect_invalid("[1:2]", "expected ',' or ']'", 2);
    expect_invalid("{\"a\":1]", "expected ',' or '}'", 6);
    expect_invalid("[1}", "expected ',' or ']'", 2);
    expect_invalid("[,1]", "expected a value", 1);
    expect_invalid("[1,,2]", "expected a value", 3);
    expect_invalid("{,}", "expected a string key", 1);
}

Test(json, trailing_commas)
{
    expect_invalid("[1,]", "trailing comma", 3);
    expect_invalid("[1, ]", "trailing comma", 4);
    expect_invalid("{\"a\":1,}", "trailing comma", 7);
    expect_invalid("[{\"a\":[1,2,],\"b\":1}]", "trailing comma", 11);
    expect_split_err("[{},]", 5, "trailing comma", 1, 4);
    expect_split_err("[{\"a\":1,}]", 10, "trailing comma", 0, 8);
}

/* RFC 8259 §7: U+0000 through U+001F must be escaped. */
Test(json, control_characters_in_strings)
{
    for (int c = 0; c < 0x20; c++) {
        char s[] = "\"ab?cd\"";
        s[3] = (char)c;
        expect_invalid_n(s, 7, "control character in string", 3);
        char k[] = "{\"k?\":1}";
        k[3] = (char)c;
        expect_invalid_n(k, 8, "control character in string", 3);
    }
}

Test(json, invalid_escapes)
{
    static const char *const bad[] = {"\"\\x41\"", "\"\\'\"", "\"\\a\"",       "\"\\U0041\"",
                                      "\"\\0\"",   "\"\\ \"", "\"\\\xc3\xa9\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_invalid_n(bad[i], strlen(bad[i]), "invalid escape", 1);
    expect_invalid("\"\\u12G4\"", "invalid \\u escape", 5);
    expect_invalid("\"\\u\"", "invalid \\u escape", 3);
    expect_invalid("\"\\u-123\"", "invalid \\u escape", 3);
    expect_invalid("\"\\ud83d\\uXXXX\"", "invalid \\u escape", 9);
}

Test(json, lone_surrogate_escapes)
{
    expect_invalid("\"\\ud800\"", "lone surrogate", 1);        /* high, then end */
    expect_invalid("\"\\udbff x\"", "lone surrogate", 1);      /* high, then text */
    expect_invalid("\"\\udc00\"", "lone surrogate", 1);        /* low alone */
    expect_invalid("\"\\uDFFF\"", "lone surrogate", 1);        /* low alone */
    expect_invalid("\"\\ude00\\ud83d\"", "lone surrogate", 1); /* reversed pair */
    expect_invalid("\"\\ud83d\\ud83d\"", "lone surrogate", 1); /* high, high */
    expect_invalid("\"\\ud83d\\u0041\"", "lone surrogate", 1); /* high, BMP */
    expect_invalid("\"\\ud83d\\n\"", "lone surrogate", 1);     /* high, other escape */
    expect_invalid("\"\\udc00\\udfff\"", "lone surrogate", 1); /* low, low */
    expect_invalid("\"x\\ud83d\\ude00\\udc00\"", "lone surrogate", 14);
}

struct bad_utf8 {
    const char *name;
    const char *bytes;
};

static const struct bad_utf8 bad_utf8[] = {
    {"lone continuation 80", "\x80"},
    {"lone continuation bf", "\xbf"},
    {"overlong NUL c0 80", "\xc0\x80"},
    {"overlong c1 bf", "\xc1\xbf"},
    {"overlong 3-byte NUL", "\xe0\x80\x80"},
    {"overlong U+07FF in 3 bytes", "\xe0\x9f\xbf"},
    {"overlong 4-byte NUL", "\xf0\x80\x80\x80"},
    {"overlong U+FFFF in 4 bytes", "\xf0\x8f\xbf\xbf"},
    {"UTF-16 surrogate D800", "\xed\xa0\x80"},
    {"UTF-16 surrogate DFFF", "\xed\xbf\xbf"},
    {"encoded surrogate pair", "\xed\xa0\xbd\xed\xb8\x80"},
    {"above U+10FFFF f4 90", "\xf4\x90\x80\x80"},
    {"lead f5", "\xf5\x80\x80\x80"},
    {"lead f8 (5-byte form)", "\xf8\x88\x80\x80\x80"},
    {"lead fc (6-byte form)", "\xfc\x84\x80\x80\x80\x80"},
    {"byte fe", "\xfe"},
    {"byte ff", "\xff"},
    {"2-byte cut by quote", "\xc3"},
    {"3-byte cut after 1", "\xe2"},
    {"3-byte cut after 2", "\xe2\x82"},
    {"4-byte cut after 3", "\xf0\x9f\x98"},
    {"2-byte, ASCII second", "\xc3\x28"},
    {"3-byte, bad second", "\xe2\x28\xa1"},
    {"3-byte, bad third", "\xe2\x82\x28"},
    {"4-byte, bad second", "\xf0\x28\x8c\xbc"},
    {"4-byte, bad third", "\xf0\x90\x28\xbc"},
    {"4-byte, bad fourth", "\xf0\x9f\x98\x28"},
    {"3-byte, third is a lead", "\xe2\x82\xc3\xa9"},
    {"4-byte, third is ff", "\xf0\x9f\xff\x80"},
    {"4-byte, fourth is a lead", "\xf4\x8f\xbf\xe2\x82\xac"},
    {"2-byte lead then lead", "\xc3\xc3\xa9"},
};

Test(json, bad_utf8_sequences)
{
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        /* After a 12-byte prefix, so the fast path must stop exactly at the bad byte. */
        static const char pre[] = "\"0123456789 ";
        size_t np = sizeof pre - 1;
        char s[40];
        size_t n = strlen(bad_utf8[i].bytes);
        memcpy(s, pre, np);
        memcpy(s + np, bad_utf8[i].bytes, n);
        s[np + n] = '"';
        struct json_error e = {0};
        const char *b = guarded(s, np + n + 1);
        cr_expect_eq(json_validate(b, np + n + 1, &e), JSON_ERROR, "accepted: %s",
                     bad_utf8[i].name);
        cr_expect(e.msg && strcmp(e.msg, "invalid UTF-8") == 0, "%s: message %s", bad_utf8[i].name,
                  e.msg ? e.msg : "(null)");
        cr_expect_eq(e.offset, np, "%s: offset %zu", bad_utf8[i].name, e.offset);
        /* the same bytes in a key */
        char k[40];
        memcpy(k, "{\"", 2);
        memcpy(k + 2, bad_utf8[i].bytes, n);
        memcpy(k + 2 + n, "\":1}", 4);
        expect_invalid_n(k, n + 6, "invalid UTF-8", 2);
    }
}

Test(json, bad_utf8_truncated_at_end_of_body)
{
    expect_invalid("\"\xc3", "unterminated string", 2);
    expect_invalid("\"\xe2\x82", "unterminated string", 3);
    expect_invalid("\"\xf0\x9f\x98", "unterminated string", 4);
    expect_invalid("\"\xf0\x28", "invalid UTF-8", 1); /* already wrong before the end */
}

Test(json, non_json_whitespace)
{
    expect_invalid("\v{}", "expected a value", 0);
    expect_invalid("{}\f", "trailing garbage", 2);
    expect_invalid("[1,\xc2\xa0 2]", "expected a value", 3); /* NBSP */
    expect_invalid("{\"a\":\x00 1}", "expected a value", 5);
}

Test(json, trailing_garbage)
{
    expect_invalid("{}}", "trailing garbage", 2);
    expect_invalid("{} {}", "trailing garbage", 3);
    expect_invalid("[]]", "trailing garbage", 2);
    expect_invalid("1 2", "trailing garbage", 2);
    expect_invalid("{}\x00", "trailing garbage", 2);
    expect_invalid("{} // comment", "trailing garbage", 3);
    expect_invalid("{\"a\":1 /* c */}", "expected ',' or '}'", 7);
    expect_split_err("{} x", 4, "trailing garbage", 0, 3);
    expect_split_err("[{}] x", 6, "trailing garbage", 1, 5);
    expect_split_err("[{}][{}]", 8, "trailing garbage", 1, 4);
}

Test(json, unterminated_containers)
{
    expect_invalid("{", "unterminated object", 1);
    expect_invalid("[", "unterminated array", 1);
    expect_invalid("{\"a\":", "unterminated object", 5);
    expect_invalid("{\"a\":[1,{\"b\":2", "unterminated object", 14);
    expect_invalid("{\"a\":[1,{\"b\":2}", "unterminated array", 15);
    expect_invalid("\"", "unterminated string", 1);
}

/* Cuts a valid document at every byte: every proper prefix must be refused, the
 * error must point inside the prefix, and the guard page catches any over-read. */
static const char doc[] = "[{\"a\":[1,-2.5e+3,true,false,null,0],\"b\":{\"c\":\"x\\\"\\u00e9"
                          "\\ud83d\\ude00\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 long text past 8\"}},"
                          " {\"d\":{}} ,{\"e\":[[],{}]}\r\n]";

Test(json, truncated_at_every_point)
{
    size_t n = sizeof doc - 1;
    expect_valid_n(doc, n);
    struct coll c;
    struct json_error e;
    cr_assert_eq(split_n(doc, n, &c, &e), JSON_OK);
    cr_assert_eq(c.count, 3);
    for (size_t cut = 0; cut < n - 2; cut++) {
        expect_invalid_n(doc, cut, NULL, NO_OFFSET);
        int rc = split_n(doc, cut, &c, &e);
        cr_expect_eq(rc, JSON_ERROR, "split accepted prefix of %zu bytes", cut);
        cr_expect_leq(e.offset, cut);
        cr_expect_eq(e.element, c.calls, "element index %zu after %zu readings", e.element,
                     c.calls);
    }
    /* The last three bytes are "\r\n]": cutting before ']' leaves an open array. */
    for (size_t cut = n - 3; cut < n; cut++) {
        expect_invalid_n(doc, cut, "unterminated array", cut);
    }
}

Test(json, truncated_object_at_every_point)
{
    static const char obj[] = "{\"k\":[{\"x\":-0.5E-3},\"\\u0041\\t\"],\"z\":null}";
    size_t n = sizeof obj - 1;
    expect_valid_n(obj, n);
    for (size_t cut = 0; cut < n; cut++) {
        struct coll c;
        struct json_error e;
        int rc = split_n(obj, cut, &c, &e);
        cr_expect_eq(rc, JSON_ERROR, "prefix of %zu bytes accepted", cut);
        cr_expect_eq(c.calls, 0, "a lone object must not be delivered before it is validated");
        cr_expect_eq(e.element, 0);
    }
}

Test(json, depth_64_accepted_65_rejected)
{
    char *ok = repeat("[", 64, "");
    char *tmp = repeat("]", 64, "");
    char *s = malloc(200);
    cr_assert_not_null(s);
    sprintf(s, "%s%s", ok, tmp);
    expect_valid_n(s, strlen(s));
    sprintf(s, "[%s%s]", ok, tmp);
    expect_invalid_n(s, strlen(s), "too deeply nested", 64);
    free(ok);
    free(tmp);

    /* objects count the same */
    char *objs = repeat("{\"a\":", 64, "1");
    char *close = repeat("}", 64, "");
    char *o = malloc(strlen(objs) + strlen(close) + 8);
    cr_assert_not_null(o);
    sprintf(o, "%s%s", objs, close);
    expect_valid_n(o, strlen(o));
    struct coll c;
    struct json_error e;
    cr_expect_eq(split_n(o, strlen(o), &c, &e), JSON_OK);
    cr_expect_eq(c.count, 1);
    sprintf(o, "{\"a\":%s%s}", objs, close);
    expect_invalid_n(o, strlen(o), "too deeply nested", 64 * 5);
    free(objs);
    free(close);
    free(o);
    free(s);
}

/* The outer array of a readings body is level 1, so an element may nest 63 more. */
Test(json, depth_limit_counts_the_readings_array)
{
    char *open = repeat("[", 62, "");
    char *close = repeat("]", 62, "");
    char *s = malloc(300);
    cr_assert_not_null(s);
    sprintf(s, "[{\"a\":%s%s}]", open, close); /* 1 + 1 + 62 = 64 */
    struct coll c;
    struct json_error e;
    int rc = split_n(s, strlen(s), &c, &e);
    cr_expect_eq(rc, JSON_OK, "64 levels refused: %s", e.msg ? e.msg : "");
    cr_expect_eq(c.count, 1);
    sprintf(s, "[{},{\"a\":[%s%s]}]", open, close); /* 65 */
    expect_split_err(s, strlen(s), "too deeply nested", 1, 9 + 62);
    free(open);
    free(close);
    free(s);
}

Test(json, hostile_deep_nesting_does_not_recurse)
{
    size_t n = 1u << 20;
    char *s = malloc(n);
    cr_assert_not_null(s);
    memset(s, '[', n);
    expect_invalid_n(s, n, "too deeply nested", 64);
    memset(s, '{', n);
    expect_invalid_n(s, n, "expected a string key", 1);
    free(s);
}

/* ---------------------------------------------------------------- json_split_readings */

Test(json_split, one_object_is_one_reading)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(split(" \r\n{\"t\":21.5,\"id\":\"a\"} \n", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 1);
    cr_expect_eq(c.calls, 1);
    cr_expect_eq(c.off[0], 3);
    expect_slice(&c, 0, "{\"t\":21.5,\"id\":\"a\"}");
}

Test(json_split, array_elements_are_readings)
{
    struct coll c;
    struct json_error e;
    int rc = split("[ {\"a\":1} ,{\"b\":[2,{}]},\n\t{} ]", &c, &e);
    cr_expect_eq(rc, JSON_OK);
    cr_expect_eq(c.count, 3);
    cr_assert_eq(c.calls, 3);
    cr_expect_eq(c.off[0], 2);
    expect_slice(&c, 0, "{\"a\":1}");
    cr_expect_eq(c.off[1], 11);
    expect_slice(&c, 1, "{\"b\":[2,{}]}");
    cr_expect_eq(c.off[2], 26);
    expect_slice(&c, 2, "{}");
}

Test(json_split, empty_array_is_zero_readings)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(split("[]", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 0);
    cr_expect_eq(split(" [ \r\n ] ", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 0);
    cr_expect_eq(c.calls, 0);
}

Test(json_split, top_level_scalar_rejected)
{
    const char *msg = "expected an object or an array of objects";
    expect_split_err("\"s\"", 3, msg, 0, 0);
    expect_split_err(" 42", 3, msg, 0, 1);
    expect_split_err("true", 4, msg, 0, 0);
    expect_split_err("null", 4, msg, 0, 0);
    expect_split_err("]", 1, msg, 0, 0);
}

Test(json_split, element_not_object_reports_its_index)
{
    const char *msg = "element is not an object";
    expect_split_err("[1]", 3, msg, 0, 1);
    expect_split_err("[{}, {}, 3, {}]", 15, msg, 2, 9);
    expect_split_err("[{},[{}]]", 9, msg, 1, 4);
    expect_split_err("[{},\"x\"]", 8, msg, 1, 4);
    expect_split_err("[{},null]", 9, msg, 1, 4);
}

Test(json_split, error_inside_element_reports_its_index)
{
    expect_split_err("[{\"a\":1},{\"b\":01}]", 18, "invalid number", 1, 14);
    expect_split_err("[{},{},{\"c\":\"\x01\"}]", 17, "control character in string", 2, 13);
    expect_split_err("[{} {}]", 7, "expected ',' or ']'", 1, 4);
    expect_split_err("[{},{}", 6, "unterminated array", 2, 6);
    expect_split_err("[{},{", 5, "unterminated object", 1, 5);
    expect_split_err("{\"a\":[}", 7, "expected a value", 0, 6);
}

/* json.h: callbacks fire as elements are validated; on error the caller rolls back. */
Test(json_split, delivered_before_a_later_error)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(split("[{\"a\":1},{\"b\":2},{\"c\":}]", &c, &e), JSON_ERROR);
    cr_expect_eq(c.calls, 2);
    cr_expect_eq(e.element, 2);
}

/* The bug this guards: the splitter used to return the callback's value where
 * the count goes, so a failed append (callback 1) read as "1 reading accepted".
 * A stop is JSON_STOPPED, never a count, and the count says what was accepted. */
Test(json_split, callback_stop_is_not_a_count)
{
    struct coll c;
    struct json_error e;
    size_t count = 99;
    const char s[] = "[{\"a\":1},{\"b\":2},{\"c\":3}, this is not json";
    const char *b = guarded(s, sizeof s - 1);
    coll_init(&c, b);
    c.stop_at = 1;
    c.rc = 1;
    cr_expect_eq(json_split_readings(b, sizeof s - 1, collect, &c, &count, &e), JSON_STOPPED);
    cr_expect_eq(c.calls, 2, "scan went on after the callback said stop");
    cr_expect_eq(count, 1, "one reading was accepted before the stop");

    const char one[] = "{\"a\":1}";
    b = guarded(one, sizeof one - 1);
    coll_init(&c, b);
    c.stop_at = 0;
    c.rc = -5;
    count = 99;
    cr_expect_eq(json_split_readings(b, sizeof one - 1, collect, &c, &count, &e), JSON_STOPPED);
    cr_expect_eq(count, 0, "the lone object was refused by the callback");

    const char nd[] = "{}\n{}\n{}\nnot json\n";
    b = guarded(nd, sizeof nd - 1);
    coll_init(&c, b);
    c.stop_at = 2;
    c.rc = 3;
    count = 99;
    cr_expect_eq(json_split_ndjson(b, sizeof nd - 1, collect, &c, &count, &e), JSON_STOPPED);
    cr_expect_eq(c.calls, 3);
    cr_expect_eq(count, 2);
}

Test(json_split, count_is_set_on_error_and_may_be_null)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(split("[{},{},{\"x\":}]", &c, &e), JSON_ERROR);
    cr_expect_eq(c.count, 2, "readings delivered before the error");
    const char s[] = "[{},{}]";
    const char *b = guarded(s, sizeof s - 1);
    coll_init(&c, b);
    cr_expect_eq(json_split_readings(b, sizeof s - 1, collect, &c, NULL, NULL), JSON_OK);
    cr_expect_eq(c.calls, 2);
}

Test(json_split, error_messages_are_static)
{
    struct coll c;
    struct json_error e;
    cr_assert_eq(split("[{\"a\":}]", &c, &e), JSON_ERROR);
    const char *m1 = e.msg;
    cr_assert_eq(split("[{\"b\":}]", &c, &e), JSON_ERROR);
    cr_expect_eq(e.msg, m1, "message should be one static string");
    cr_expect_eq(json_validate("[", 1, NULL), JSON_ERROR, "err may be NULL");
}

/* ---------------------------------------------------------------- NDJSON */

Test(json_ndjson, one_object_per_line)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("{\"a\":1}\n{\"b\":[1,2]}\n  {} \n", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 3);
    expect_slice(&c, 0, "{\"a\":1}");
    expect_slice(&c, 1, "{\"b\":[1,2]}");
    expect_slice(&c, 2, "{}");
    cr_expect_eq(c.off[2], 22);
}

Test(json_ndjson, crlf_line_ends)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("{\"a\":1}\r\n{\"b\":2}\r\n", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 2);
    expect_slice(&c, 0, "{\"a\":1}");
    expect_slice(&c, 1, "{\"b\":2}");
    cr_expect_eq(c.off[1], 9);
}

Test(json_ndjson, blank_lines_skipped)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("\n\r\n  \t\n{\"a\":1}\n\n\n{\"b\":2}\n \r\n", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 2);
    expect_slice(&c, 0, "{\"a\":1}");
    expect_slice(&c, 1, "{\"b\":2}");
}

Test(json_ndjson, last_line_without_newline)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("{\"a\":1}\n{\"b\":2}", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 2);
    expect_slice(&c, 1, "{\"b\":2}");
    cr_expect_eq(ndjson("{\"a\":1}\r\n{\"b\":2}\r", &c, &e), JSON_OK);
    cr_expect_eq(c.count, 2);
    expect_slice(&c, 1, "{\"b\":2}");
}

Test(json_ndjson, error_on_line_3)
{
    struct coll c;
    struct json_error e;
    const char s[] = "{\"a\":1}\n{\"a\":2}\n{\"a\":03}\n{\"a\":4}\n";
    cr_expect_eq(ndjson(s, &c, &e), JSON_ERROR);
    cr_expect_eq(e.element, 2);
    cr_expect_eq(e.offset, 21);
    cr_expect_str_eq(e.msg, "invalid number");
    cr_expect_eq(c.calls, 2);
    /* blank lines do not count as elements */
    const char t[] = "\n{}\n\n{}\r\n  \n{\n";
    cr_expect_eq(ndjson(t, &c, &e), JSON_ERROR);
    cr_expect_eq(e.element, 2);
    cr_expect_str_eq(e.msg, "unterminated object");
    cr_expect_eq(e.offset, 13);
}

/* Documented choice: NDJSON lines must hold objects, like readings array elements. */
Test(json_ndjson, non_object_line_rejected)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("{}\n[{}]\n", &c, &e), JSON_ERROR);
    cr_expect_eq(e.element, 1);
    cr_expect_str_eq(e.msg, "element is not an object");
    cr_expect_eq(e.offset, 3);
    cr_expect_eq(ndjson("42\n", &c, &e), JSON_ERROR);
    cr_expect_eq(e.element, 0);
}

Test(json_ndjson, value_may_not_span_lines)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson("{\"a\":\n1}\n", &c, &e), JSON_ERROR);
    cr_expect_str_eq(e.msg, "unterminated object");
    cr_expect_eq(e.offset, 5);
    cr_expect_eq(ndjson("{\"a\":\"x\ny\"}\n", &c, &e), JSON_ERROR);
    cr_expect_str_eq(e.msg, "unterminated string");
    cr_expect_eq(ndjson("{} {}\n", &c, &e), JSON_ERROR);
    cr_expect_str_eq(e.msg, "trailing garbage");
    cr_expect_eq(e.offset, 3);
    cr_expect_eq(ndjson("{}\r{}\n", &c, &e), JSON_ERROR, "a lone CR is not a line end");
}

Test(json_ndjson, empty_body)
{
    struct coll c;
    struct json_error e;
    cr_expect_eq(ndjson_n("", 0, &c, &e), JSON_ERROR);
    cr_expect_str_eq(e.msg, "empty body");
    cr_expect_eq(ndjson("\n\r\n  \n", &c, &e), JSON_ERROR, "only blank lines is an empty body");
    cr_expect_str_eq(e.msg, "empty body");
}

Test(json_ndjson, truncated_at_every_point)
{
    static const char nd[] = "{\"a\":[1,{\"b\":\"\xc3\xa9\\u00e9\"}]}\r\n{\"c\":true}\n";
    size_t n = sizeof nd - 1;
    size_t line2 = strchr(nd, '\n') - nd + 1;
    struct coll c;
    struct json_error e;
    cr_assert_eq(ndjson_n(nd, n, &c, &e), JSON_OK);
    cr_assert_eq(c.count, 2);
    for (size_t cut = 1; cut < n; cut++) {
        int rc = ndjson_n(nd, cut, &c, &e);
        int whole = cut == line2 - 2 || cut == line2 - 1 || cut == line2 || cut == n - 1;
        if (whole) {
            cr_expect_eq(rc, JSON_OK, "cut %zu", cut);
            cr_expect_eq(c.count, cut <= line2 ? 1u : 2u, "cut %zu", cut);
            continue;
        }
        cr_expect_eq(rc, JSON_ERROR, "prefix of %zu bytes accepted", cut);
        cr_expect_eq(e.element, cut < line2 ? 0 : 1);
        cr_expect_leq(e.offset, cut);
    }
}
