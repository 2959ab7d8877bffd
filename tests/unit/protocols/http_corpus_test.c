/* tests/unit/protocols/http_corpus_test.c — replays h2o's HTTP/1 fuzzing seed corpus
 * ($SLUICE_CORPORA/http1-h2o, 1,972 request streams, many malformed) through the
 * parser and the chunked decoder, the way a connection would: parse a head, take the
 * body (Content-Length or chunked), go on with the next pipelined request until the
 * data is used up or a verdict is final (error, connection close, or a wait).
 *
 * Each file is copied into an exactly-sized malloc'd buffer so ASan catches any
 * over-read. h2o's driver sends a file in segments separated by "\n--MARK--\n"; we
 * replay both the raw bytes and the segments joined (the stream a server sees).
 * Without the corpus every test is skipped and the binary exits 77 (meson SKIP).
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <criterion/options.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "protocols/http.h"

#define MAX_BODY (1u << 20)

enum verdict {
    V_USED_UP,         /* every byte went into complete requests */
    V_CLOSE,           /* a request without keep-alive ended the connection */
    V_HEAD_INCOMPLETE, /* waits for more head bytes */
    V_BODY_INCOMPLETE, /* waits for more body bytes */
    V_400,
    V_431,
    V_505,
    V_CHUNK_400,
    V_CHUNK_413,
    V_CHUNK_431,
    V_COUNT,
};

static const char *const verdict_name[V_COUNT] = {
    "all data used", "close after request", "head incomplete", "body incomplete", "400", "431",
    "505",           "chunked 400",         "chunked 413",     "chunked 431",
};

struct tally {
    size_t files;
    size_t requests;
    size_t chunked_bodies;
    size_t by[V_COUNT];
};

static char dir_path[4096];

/* Returns 1 and fills dir_path when the corpus folder exists. */
static int corpus_dir(void)
{
    const char *root = getenv("SLUICE_CORPORA");
    struct stat sb;

    if (!root || !*root) return 0;
    snprintf(dir_path, sizeof(dir_path), "%s/http1-h2o", root);
    return stat(dir_path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int inside(struct http_slice s, const char *b, size_t n)
{
    return s.p == NULL ? s.n == 0 : (s.p >= b && s.p + s.n <= b + n);
}

/* Replays one stream; returns its final verdict. buf is modified (chunked decoding). */
static enum verdict replay(const char *name, char *buf, size_t len, struct tally *t)
{
    static struct http_request req; /* large; keep it off the stack */
    size_t off = 0;

    while (off < len) {
        size_t rest = len - off;
        int r = http_parse_request(buf + off, rest, 0, &req);

        if (r == HTTP_INCOMPLETE) return V_HEAD_INCOMPLETE;
        if (r < 0) {
            cr_assert(r == -400 || r == -431 || r == -505, "%s@%zu: verdict %d", name, off, r);
            cr_assert_not_null(req.error, "%s@%zu: %d without a reason", name, off, r);
            return r == -400 ? V_400 : r == -431 ? V_431 : V_505;
        }
        cr_assert_leq((size_t)r, rest, "%s: consumed %d of %zu", name, r, rest);
        cr_assert_leq((size_t)r, (size_t)HTTP_MAX_HEADER_BYTES);
        cr_assert(inside(req.target, buf + off, (size_t)r) &&
                      inside(req.path, buf + off, (size_t)r) &&
                      inside(req.query, buf + off, (size_t)r) &&
                      inside(req.token, buf + off, (size_t)r) &&
                      inside(req.content_type, buf + off, (size_t)r),
                  "%s: slice outside the head", name);
        cr_assert_leq(req.nheaders, (size_t)HTTP_MAX_HEADERS);
        for (size_t i = 0; i < req.nheaders; i++)
            cr_assert(inside(req.headers[i].name, buf + off, (size_t)r) &&
                          inside(req.headers[i].value, buf + off, (size_t)r),
                      "%s: header %zu outside the head", name, i);
        cr_assert(!(req.chunked && req.content_length >= 0), "%s: both framings", name);
        t->requests++;
        off += (size_t)r;
        rest -= (size_t)r;

        if (req.chunked) {
            struct http_chunked st = {0};
            long c = http_chunked_decode(&st, buf + off, rest, MAX_BODY);
            t->chunked_bodies++;
            cr_assert_leq(st.out, st.in, "%s: decoded more than read", name);
            cr_assert_leq(st.in, rest, "%s: chunked read past len", name);
            if (c == HTTP_INCOMPLETE) return V_BODY_INCOMPLETE;
            if (c < 0) {
                cr_assert(c == -400 || c == -413 || c == -431, "%s: chunked verdict %ld", name, c);
                return c == -400 ? V_CHUNK_400 : c == -413 ? V_CHUNK_413 : V_CHUNK_431;
            }
            cr_assert_leq((size_t)c, rest);
            off += (size_t)c;
        } else if (req.content_length > 0) {
            if ((uint64_t)req.content_length > rest) return V_BODY_INCOMPLETE;
            off += (size_t)req.content_length;
        }
        if (!req.keep_alive) return V_CLOSE;
    }
    return V_USED_UP;
}

/* Copies src without the h2o segment markers into an exactly-sized buffer. */
static char *join_segments(const char *src, size_t n, size_t *out_n)
{
    static const char mark[] = "\n--MARK--\n";
    const size_t ml = sizeof(mark) - 1;
    char *dst = malloc(n ? n : 1);
    size_t k = 0, i = 0;

    cr_assert_not_null(dst);
    while (i < n) {
        const char *m = memmem(src + i, n - i, mark, ml);
        size_t seg = m ? (size_t)(m - (src + i)) : n - i;
        memcpy(dst + k, src + i, seg);
        k += seg;
        i += seg + (m ? ml : 0);
    }
    *out_n = k;
    /* shrink to the exact size so an over-read hits ASan's redzone */
    {
        char *exact = malloc(k ? k : 1);
        cr_assert_not_null(exact);
        memcpy(exact, dst, k);
        free(dst);
        return exact;
    }
}

static void run_corpus(int joined)
{
    struct tally t = {0};
    DIR *d;
    struct dirent *e;

    if (!corpus_dir())
        cr_skip_test("corpus absent: set SLUICE_CORPORA to a folder holding http1-h2o/");
    d = opendir(dir_path);
    cr_assert_not_null(d, "%s: %s", dir_path, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        char path[8192];
        struct stat sb;
        FILE *f;
        char *buf;
        size_t n;

        if (e->d_name[0] == '.' || strncmp(e->d_name, "LICENSE", 7) == 0) continue;
        snprintf(path, sizeof(path), "%s/%s", dir_path, e->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        n = (size_t)sb.st_size;
        buf = malloc(n ? n : 1);
        cr_assert_not_null(buf);
        f = fopen(path, "rb");
        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        cr_assert_eq(fread(buf, 1, n, f), n, "%s: short read", path);
        fclose(f);
        if (joined) {
            size_t jn;
            char *j = join_segments(buf, n, &jn);
            free(buf);
            buf = j;
            n = jn;
        }
        t.by[replay(e->d_name, buf, n, &t)]++;
        t.files++;
        free(buf);
    }
    closedir(d);

    cr_assert_gt(t.files, 0, "%s holds no request files", dir_path);
    {
        /* one log call, so parallel tests do not interleave their tables */
        char msg[1024];
        int k = snprintf(msg, sizeof(msg),
                         "%s replay: %zu files, %zu requests parsed, %zu chunked bodies",
                         joined ? "joined-segment" : "raw", t.files, t.requests, t.chunked_bodies);
        for (int v = 0; v < V_COUNT && k > 0 && (size_t)k < sizeof(msg); v++)
            k += snprintf(msg + k, sizeof(msg) - (size_t)k, "\n      %-20s %zu", verdict_name[v],
                          t.by[v]);
        cr_log_info("%s", msg);
    }
    {
        size_t sum = 0;
        for (int v = 0; v < V_COUNT; v++)
            sum += t.by[v];
        cr_assert_eq(sum, t.files, "one definite verdict per file");
    }
    /* A corpus of mostly valid requests where nothing parses means the parser is broken. */
    cr_assert_gt(t.requests, t.files / 4, "only %zu requests parsed in %zu files", t.requests,
                 t.files);
}

Test(http_corpus, h2o_raw_files_get_a_definite_verdict)
{
    run_corpus(0);
}

Test(http_corpus, h2o_joined_segments_get_a_definite_verdict)
{
    run_corpus(1);
}

/* Criterion's own main cannot say SKIP to meson: exit 77 when the corpus is absent.
 * Default visibility: BoxFort finds main by symbol to start its test workers, and
 * the project builds with -fvisibility=hidden. */
__attribute__((visibility("default"))) int main(int argc, char *argv[]);
__attribute__((visibility("default"))) int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;

    /* the verdict table is the point of this test: show it without --verbose */
    criterion_options.logging_threshold = CRITERION_INFO;
    if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    if (result == 0 && !corpus_dir()) return 77;
    return result;
}
