/* tools/cmd_log.c — `sluice log cat`: an organisation's readings, merged across
 * workers in receive-time order, as JSON lines or raw payloads, optionally
 * following new ones; `sluice log verify`: checks every segment and index.
 *
 * Output may run to millions of lines, so it goes through one large stdio
 * buffer with the unlocked stdio calls, and device names are cached rather than
 * looked up in LMDB per record.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/log.h"
#include "storage/record.h"
#include "storage/store.h"
#include "tools/cli.h"

#define EXIT_USAGE     2
#define NS_PER_SEC     1000000000ull
#define FOLLOW_POLL_MS 200

static const char usage_text[] =
    "usage: sluice log cat --org ORG [--device D] [--since T] [--until T] "
    "[--format json|raw] [--follow]\n"
    "       sluice log verify [--org ORG]\n"
    "T is RFC 3339 (2026-11-24T12:00:00Z, 2026-11-24T13:00:00.5+01:00) or Unix "
    "seconds;\n"
    "--since is inclusive, --until exclusive.\n"
    "--follow keeps printing new readings until interrupted (not with --until).\n"
    "verify checks every segment and index (all orgs without --org); problems go\n"
    "to stderr, a summary to stdout; exit 1 when any is an error.\n";

/* One line on stderr, exit code 2 (INTERFACE.md: bad usage). */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sluice: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_USAGE;
}

/* ---- time arguments ---- */

/* Reads exactly n decimal digits at *p. */
static int take_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char ch = (*p)[i];
        if (ch < '0' || ch > '9') return -1;
        v = v * 10 + (ch - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Reads ".digits" (any count, nanoseconds kept) if present. */
static int take_fraction(const char **p, uint64_t *ns)
{
    *ns = 0;
    if (**p != '.') return 0;
    (*p)++;
    uint64_t scale = NS_PER_SEC / 10;
    int n = 0;
    while (**p >= '0' && **p <= '9') {
        *ns += (uint64_t)(**p - '0') * scale;
        scale /= 10;
        (*p)++;
        n++;
    }
    return n > 0 ? 0 : -1;
}

static int ns_from_seconds(int64_t sec, uint64_t frac, uint64_t *ns)
{
    if (sec < 0) {
        *ns = 0; /* before the epoch: nothing in any log is older */
        return 0;
    }
    if ((uint64_t)sec > (UINT64_MAX - frac) / NS_PER_SEC) return -1;
    *ns = (uint64_t)sec * NS_PER_SEC + frac;
    return 0;
}

/* Parses an RFC 3339 date-time ("T", "t" or a space between date and time, "Z",
 * "z" or ±hh:mm after it) or Unix seconds with an optional fraction into
 * nanoseconds since the epoch. Returns 0 or -1. */
static int parse_time(const char *s, uint64_t *ns)
{
    const char *p = s;
    uint64_t frac;
    if (*s >= '0' && *s <= '9' && strspn(s, "0123456789") == strcspn(s, ".")) {
        /* Unix seconds: digits, then perhaps a fraction, then nothing. */
        char *end;
        errno = 0;
        unsigned long long sec = strtoull(s, &end, 10);
        p = end;
        if (errno || take_fraction(&p, &frac) < 0 || *p || sec > INT64_MAX) return -1;
        return ns_from_seconds((int64_t)sec, frac, ns);
    }
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    if (take_digits(&p, 4, &y) || *p++ != '-' || take_digits(&p, 2, &mo) || *p++ != '-' ||
        take_digits(&p, 2, &d))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ') return -1;
    p++;
    if (take_digits(&p, 2, &h) || *p++ != ':' || take_digits(&p, 2, &mi) || *p++ != ':' ||
        take_digits(&p, 2, &sec) || take_fraction(&p, &frac))
        return -1;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (take_digits(&p, 2, &oh) || *p++ != ':' || take_digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 60) return -1;
    /* timegm normalises 31 February into March; a round trip catches it. A
     * leap second (:60) is let through and lands on the next minute's :00. */
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
    time_t day = timegm(&tm);
    if (day == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1) return -1;
    int64_t t = (int64_t)day + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    return ns_from_seconds(t, frac, ns);
}

/* ---- output ---- */

static const char hexdig[] = "0123456789abcdef";

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf) return 0;
    return len;
}

/* Writes s as the inside of a JSON string. Invalid UTF-8 (a topic is checked on
 * ingest, but the output must be JSON whatever is on disk) becomes U+FFFD. */
static void put_json_string(FILE *f, const void *data, size_t n)
{
    const uint8_t *s = data;
    size_t run = 0; /* bytes of s[i - run, i) that need no escaping */
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = 1;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            run++;
            i++;
            continue;
        }
        if (c >= 0x80 && (k = utf8_seq(s + i, n - i)) > 0) {
            run += k;
            i += k;
            continue;
        }
        fwrite_unlocked(s + i - run, 1, run, f);
        run = 0;
        if (c == '"' || c == '\\') {
            putc_unlocked('\\', f);
            putc_unlocked(c, f);
        } else if (c == '\n') {
            fputs_unlocked("\\n", f);
        } else if (c == '\r') {
            fputs_unlocked("\\r", f);
        } else if (c == '\t') {
            fputs_unlocked("\\t", f);
        } else if (c < 0x20) {
            char u[7] = {'\\', 'u', '0', '0', hexdig[c >> 4], hexdig[c & 15], 0};
            fputs_unlocked(u, f);
        } else {
            fputs_unlocked("\\ufffd", f);
        }
        i++;
    }
    fwrite_unlocked(s + n - run, 1, run, f);
}

static void put_base64(FILE *f, const uint8_t *s, size_t n)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char q[4];
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        q[0] = b64[v >> 18];
        q[1] = b64[(v >> 12) & 63];
        q[2] = b64[(v >> 6) & 63];
        q[3] = b64[v & 63];
        fwrite_unlocked(q, 1, 4, f);
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        q[0] = b64[v >> 18];
        q[1] = b64[(v >> 12) & 63];
        q[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        q[3] = '=';
        fwrite_unlocked(q, 1, 4, f);
    }
}

/* A JSON payload goes out verbatim except for CR and LF, which become spaces so
 * that one reading stays one line: in valid JSON they can only be whitespace
 * between tokens (raw control characters are not allowed inside strings), so
 * the value is unchanged. */
static void put_json_inline(FILE *f, const uint8_t *s, size_t n)
{
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\n' && s[i] != '\r') continue;
        fwrite_unlocked(s + from, 1, i - from, f);
        putc_unlocked(' ', f);
        from = i + 1;
    }
    fwrite_unlocked(s + from, 1, n - from, f);
}

/* "2026-11-24T12:00:00.123456Z" (microseconds, truncated). gmtime_r runs once
 * per distinct second: consecutive readings mostly share one. */
struct ts_cache {
    int64_t sec;
    char text[32]; /* "YYYY-MM-DDTHH:MM:SS" */
};

static void put_ts(FILE *f, struct ts_cache *tc, uint64_t ns)
{
    int64_t sec = (int64_t)(ns / NS_PER_SEC);
    if (sec != tc->sec) {
        struct tm tm;
        time_t t = (time_t)sec;
        if (gmtime_r(&t, &tm))
            strftime(tc->text, sizeof tc->text, "%Y-%m-%dT%H:%M:%S", &tm);
        else
            strcpy(tc->text, "1970-01-01T00:00:00");
        tc->sec = sec;
    }
    unsigned us = (unsigned)(ns % NS_PER_SEC / 1000);
    char frac[9] = {'.'};
    for (int i = 6; i >= 1; i--) {
        frac[i] = (char)('0' + us % 10);
        us /= 10;
    }
    frac[7] = 'Z';
    fputs_unlocked(tc->text, f);
    fwrite_unlocked(frac, 1, 8, f);
}

/* ---- device names ---- */

#define DEV_CACHE 256 /* direct-mapped; a miss is one LMDB read transaction */

struct dev_slot {
    uint32_t id;
    int used;
    char name[STORE_NAME_MAX + 1];
};

struct cat_ctx {
    struct store *st;
    char org_name[STORE_NAME_MAX + 1];
    struct dev_slot dev[DEV_CACHE];
    int lookup_warned;
    struct ts_cache ts;
};

/* The device's name, or its id in decimal when the store does not know it
 * (deleted since, or another org's data copied in). */
static const char *device_name(struct cat_ctx *x, uint32_t id)
{
    struct dev_slot *sl = &x->dev[id % DEV_CACHE];
    if (sl->used && sl->id == id) return sl->name;
    int rc = store_device_name(x->st, id, sl->name, NULL);
    if (rc < 0) {
        if (rc != -ENOENT && !x->lookup_warned) {
            fprintf(stderr, "sluice: cannot look up device %" PRIu32 ": %s\n", id,
                    rc == -EIO ? store_last_error(x->st) : strerror(-rc));
            x->lookup_warned = 1;
        }
        snprintf(sl->name, sizeof sl->name, "%" PRIu32, id);
    }
    sl->id = id;
    sl->used = 1;
    return sl->name;
}

static void put_record_json(FILE *f, struct cat_ctx *x, const struct record *r, const uint8_t *body)
{
    const uint8_t *payload = body + r->topic_len;
    size_t plen = r->length - r->topic_len;
    const char *dev = device_name(x, r->device);

    fputs_unlocked("{\"ts\":\"", f);
    put_ts(f, &x->ts, r->recv_ns);
    fputs_unlocked("\",\"org\":\"", f);
    put_json_string(f, x->org_name, strlen(x->org_name));
    fputs_unlocked("\",\"device\":\"", f);
    put_json_string(f, dev, strlen(dev));
    fputs_unlocked("\",\"proto\":\"", f);
    fputs_unlocked(record_proto_name(r->proto), f);
    putc_unlocked('"', f);
    if (r->topic_len > 0) {
        fputs_unlocked(",\"topic\":\"", f);
        put_json_string(f, body, r->topic_len);
        putc_unlocked('"', f);
    }
    if (r->flags & RECORD_F_RETAIN) fputs_unlocked(",\"retain\":true", f);
    if (r->flags & RECORD_F_WILL) fputs_unlocked(",\"will\":true", f);
    /* What the device itself said (format v2 and later): only when it said it. The
     * cache of x->ts serves the receive times, which come in order; a device's
     * clock need not, so its time is formatted on its own. */
    if (r->device_ts_ns) {
        struct ts_cache own = {.sec = -1};
        fputs_unlocked(",\"device_ts\":\"", f);
        put_ts(f, &own, r->device_ts_ns);
        putc_unlocked('"', f);
    }
    if (r->device_seq) fprintf(f, ",\"device_seq\":%" PRIu64, r->device_seq);
    /* An empty payload is not a JSON value; inlining it would break the line. */
    if (r->ctype == RECORD_CTYPE_JSON && plen > 0) {
        fputs_unlocked(",\"payload\":", f);
        put_json_inline(f, payload, plen);
    } else {
        fputs_unlocked(",\"payload_b64\":\"", f);
        put_base64(f, payload, plen);
        putc_unlocked('"', f);
    }
    fputs_unlocked("}\n", f);
}

/* ---- log cat ---- */

struct cat_args {
    const char *org, *device, *since, *until, *format;
    int follow;
};

/* Accepts "--name VALUE" and "--name=VALUE". Returns 1 if argv[*i] was this
 * option (value in *val, NULL when missing), else 0. */
static int opt_value(char **argv, int argc, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *val = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int parse_cat_args(int argc, char **argv, struct cat_args *a)
{
    static const char *const names[] = {"--org", "--device", "--since", "--until", "--format"};
    const char **slots[] = {&a->org, &a->device, &a->since, &a->until, &a->format};
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--follow") == 0) {
            a->follow = 1;
            continue;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        size_t k = 0;
        for (; k < sizeof names / sizeof names[0]; k++) {
            const char *v;
            if (opt_value(argv, argc, &i, names[k], &v)) {
                if (!v) return usage_error("%s needs a value", names[k]);
                *slots[k] = v;
                break;
            }
        }
        if (k == sizeof names / sizeof names[0])
            return usage_error("log cat: unexpected argument '%s'", argv[i]);
    }
    return -1; /* parsed; go on */
}

/* Finds device D in org: by name, or else by decimal id if one of the org's
 * devices has it. */
static int resolve_device(struct store *st, uint32_t org, const char *d, uint32_t *id)
{
    int rc = store_device_find(st, org, d, id);
    if (rc != -ENOENT && rc != -EINVAL) return rc;
    char *end;
    errno = 0;
    unsigned long v = strtoul(d, &end, 10);
    uint32_t dorg;
    if (*d < '0' || *d > '9' || *end || errno || v > UINT32_MAX) return -ENOENT;
    int rc2 = store_device_name(st, (uint32_t)v, NULL, &dorg);
    if (rc2 < 0) return rc2;
    if (dorg != org) return -ENOENT;
    *id = (uint32_t)v;
    return 0;
}

/* Set by SIGINT/SIGTERM while following. */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* While following, SIGINT/SIGTERM end the loop instead of the process (so the
 * output is flushed and the exit code is ours), and a closed stdout is an
 * EPIPE to notice rather than a SIGPIPE. No SA_RESTART: the wait returns. */
static void follow_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Waits up to ms for a stop: a signal, or stdout's reader going away (a pipe
 * whose reader closed reports POLLERR even when nothing is being written, so
 * `log cat --follow | head -1` ends without waiting for the next reading).
 * Returns 0 to go on, 1 on a signal, 2 when stdout is gone. */
static int follow_wait(int ms)
{
    struct pollfd p = {.fd = STDOUT_FILENO, .events = 0};
    if (stop_requested) return 1;
    int n = poll(&p, 1, ms);
    if (stop_requested) return 1;
    return n > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL)) ? 2 : 0;
}

static int log_cat(const char *data_dir, int argc, char **argv)
{
    static char outbuf[1 << 20];
    struct cat_args a = {0};
    struct cat_ctx *x = NULL;
    struct log_cursor *cur = NULL;
    uint64_t since = 0, until = 0;
    uint32_t org, dev = 0;
    int raw = 0, failed = 0, out_closed = 0, nothing = 0, rc;

    rc = parse_cat_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (!a.org) return usage_error("log cat needs --org ORG");
    if (a.format && strcmp(a.format, "raw") == 0)
        raw = 1;
    else if (a.format && strcmp(a.format, "json") != 0)
        return usage_error("unknown --format '%s' (json or raw)", a.format);
    if (a.since && parse_time(a.since, &since) < 0)
        return usage_error("bad --since '%s': want RFC 3339 (2026-11-24T12:00:00Z) "
                           "or Unix seconds",
                           a.since);
    if (a.until && parse_time(a.until, &until) < 0)
        return usage_error("bad --until '%s': want RFC 3339 (2026-11-24T12:00:00Z) "
                           "or Unix seconds",
                           a.until);
    /* With a clock that can step back, no moment guarantees that nothing more
     * before --until will come; following would have no natural end. */
    if (a.follow && a.until) return usage_error("--follow cannot be combined with --until");
    /* The cursor reads 0 as "no bound"; an --until at or before the epoch
     * matches nothing. */
    nothing = a.until && until == 0;

    x = calloc(1, sizeof *x);
    if (!x) {
        fputs("sluice: out of memory\n", stderr);
        return 1;
    }
    x->ts.sec = -1;
    rc = store_open(&x->st, data_dir, 0);
    if (rc < 0) {
        fprintf(stderr, "sluice: cannot open the store in %s: %s\n", data_dir, strerror(-rc));
        goto fail;
    }
    rc = store_org_find(x->st, a.org, &org, x->org_name);
    if (rc == -ENOENT || rc == -EINVAL) {
        fprintf(stderr, "sluice: no such org '%s'\n", a.org);
        goto fail;
    }
    if (rc < 0) {
        fprintf(stderr, "sluice: cannot look up org '%s': %s\n", a.org,
                rc == -EIO ? store_last_error(x->st) : strerror(-rc));
        goto fail;
    }
    if (a.device) {
        rc = resolve_device(x->st, org, a.device, &dev);
        if (rc == -ENOENT || rc == -EINVAL) {
            fprintf(stderr, "sluice: no such device '%s' in org '%s'\n", a.device, x->org_name);
            goto fail;
        }
        if (rc < 0) {
            fprintf(stderr, "sluice: cannot look up device '%s': %s\n", a.device,
                    rc == -EIO ? store_last_error(x->st) : strerror(-rc));
            goto fail;
        }
    }
    if (a.follow) follow_signals();
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    while (!nothing) {
        if (!cur) {
            rc = log_cursor_open_range(data_dir, org, since, until, &cur);
            /* -ENOENT: an org that never received a reading (yet). */
            if (rc < 0 && rc != -ENOENT) {
                fprintf(stderr, "sluice: cannot read the logs of org '%s': %s\n", x->org_name,
                        strerror(-rc));
                failed = 1;
                break;
            }
        } else {
            rc = log_cursor_poll(cur);
            if (rc < 0) {
                fprintf(stderr, "sluice: cannot follow the logs of org '%s': %s\n", x->org_name,
                        strerror(-rc));
                failed = 1;
                break;
            }
        }
        struct record r;
        const uint8_t *body;
        /* stop_requested is only ever set while following (the handlers are
         * installed then): a long backlog stops promptly too. */
        while (cur && !stop_requested && (rc = log_cursor_next(cur, &r, &body)) != 0) {
            if (rc < 0) {
                const char *path = "?";
                uint64_t off = 0;
                const char *why = log_cursor_error(cur, &path, &off);
                if (rc == -EBADMSG)
                    fprintf(stderr, "sluice: corrupt record in %s at offset %" PRIu64 " (%s)\n",
                            path, off, why ? why : "?");
                else
                    fprintf(stderr, "sluice: cannot read %s at offset %" PRIu64 ": %s\n", path, off,
                            strerror(-rc));
                failed = 1;
                continue; /* the cursor goes on past the damage */
            }
            if (a.device && r.device != dev) continue;
            if (raw) {
                fwrite_unlocked(body + r.topic_len, 1, r.length - r.topic_len, stdout);
                putc_unlocked('\n', stdout);
            } else {
                put_record_json(stdout, x, &r, body);
            }
            if (ferror_unlocked(stdout)) {
                out_closed = errno == EPIPE;
                break; /* reported below */
            }
        }
        if (!a.follow || ferror(stdout)) break;
        if (fflush(stdout) != 0) {
            out_closed = errno == EPIPE;
            break;
        }
        int w = follow_wait(FOLLOW_POLL_MS);
        if (w == 2) out_closed = 1;
        if (w) break;
    }
    int werr = fflush(stdout) != 0 || ferror(stdout) ? (errno ? errno : EIO) : 0;
    /* Following ends when the reader of a pipe goes away: that is the normal
     * way out of `log cat --follow | head`, not a failure. */
    if (werr && !(a.follow && (out_closed || werr == EPIPE))) {
        fprintf(stderr, "sluice: cannot write the output: %s\n", strerror(werr));
        failed = 1;
    }
    log_cursor_close(cur);
    store_close(x->st);
    free(x);
    return failed;
fail:
    if (x->st) store_close(x->st);
    free(x);
    return 1;
}

/* ---- log verify ---- */

static void verify_report(void *ctx, int severity, const char *path, uint64_t offset,
                          const char *msg)
{
    (void)ctx;
    fprintf(stderr, "sluice: %s: %s: offset %" PRIu64 ": %s\n",
            severity == LOG_VERIFY_ERROR ? "error" : "warning", path, offset, msg);
}

struct org_ids {
    uint32_t *v;
    size_t n, cap;
};

static int collect_org(void *ctx, uint32_t id, const char *name, uint64_t created_ns)
{
    (void)name;
    (void)created_ns;
    struct org_ids *o = ctx;
    if (o->n == o->cap) {
        size_t ncap = o->cap ? o->cap * 2 : 64;
        uint32_t *nv = realloc(o->v, ncap * sizeof *nv);
        if (!nv) return -ENOMEM;
        o->v = nv;
        o->cap = ncap;
    }
    o->v[o->n++] = id;
    return 0;
}

static int org_known(const struct org_ids *o, uint32_t id)
{
    for (size_t i = 0; i < o->n; i++)
        if (o->v[i] == id) return 1;
    return 0;
}

/* Verifies one org's logs into st. Returns 0, or 1 when it could not be done
 * (reported). An org without a log directory has nothing to verify. */
static int verify_one(const char *data_dir, uint32_t org, struct log_verify_stats *st)
{
    int rc = log_verify_org(data_dir, org, verify_report, NULL, st);
    if (rc >= 0 || rc == -ENOENT) return 0;
    fprintf(stderr, "sluice: cannot verify the logs of org %" PRIu32 ": %s\n", org, strerror(-rc));
    return 1;
}

/* Verifies every log directory under DATA/logs that is not in known, each
 * first reported as a warning: the store does not know its org (deleted, or a
 * directory copied in). Returns 0 or 1 as verify_one. */
static int verify_unknown(const char *data_dir, const struct org_ids *known,
                          struct log_verify_stats *st)
{
    char logs[LOG_PATH_MAX], dir[LOG_PATH_MAX];
    int failed = 0;
    snprintf(logs, sizeof logs, "%s/logs", data_dir);
    DIR *d = opendir(logs);
    if (!d) {
        if (errno == ENOENT) return 0; /* nothing ever logged */
        fprintf(stderr, "sluice: cannot list %s: %s\n", logs, strerror(errno));
        return 1;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) {
                fprintf(stderr, "sluice: cannot list %s: %s\n", logs, strerror(errno));
                failed = 1;
            }
            break;
        }
        char *end;
        const char *nm = e->d_name;
        if (nm[0] < '0' || nm[0] > '9' || (nm[0] == '0' && nm[1])) continue;
        errno = 0;
        unsigned long v = strtoul(nm, &end, 10);
        if (*end || errno || v > UINT32_MAX || org_known(known, (uint32_t)v)) continue;
        if (log_dir_path(dir, sizeof dir, data_dir, (uint32_t)v, -1) < 0) continue;
        verify_report(NULL, LOG_VERIFY_WARNING, dir, 0,
                      "logs of an org the store does not know (deleted, or copied in)");
        st->warnings++;
        failed |= verify_one(data_dir, (uint32_t)v, st);
    }
    closedir(d);
    return failed;
}

static int log_verify(const char *data_dir, int argc, char **argv)
{
    struct log_verify_stats st = {0};
    struct org_ids known = {0};
    struct store *store = NULL;
    const char *org_arg = NULL;
    int failed = 0, rc;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        const char *v;
        if (opt_value(argv, argc, &i, "--org", &v)) {
            if (!v) return usage_error("--org needs a value");
            org_arg = v;
            continue;
        }
        return usage_error("log verify: unexpected argument '%s'", argv[i]);
    }

    rc = store_open(&store, data_dir, 0);
    if (rc < 0 && org_arg) {
        fprintf(stderr, "sluice: cannot open the store in %s: %s\n", data_dir, strerror(-rc));
        return 1;
    }
    if (org_arg) {
        uint32_t org;
        rc = store_org_find(store, org_arg, &org, NULL);
        if (rc == -ENOENT || rc == -EINVAL) {
            fprintf(stderr, "sluice: no such org '%s'\n", org_arg);
            failed = 1;
        } else if (rc < 0) {
            fprintf(stderr, "sluice: cannot look up org '%s': %s\n", org_arg,
                    rc == -EIO ? store_last_error(store) : strerror(-rc));
            failed = 1;
        } else {
            failed |= verify_one(data_dir, org, &st);
        }
    } else {
        /* The logs are checked even when the store cannot be read: that is
         * when someone most wants to know what is left. */
        if (rc < 0)
            fprintf(stderr,
                    "sluice: warning: cannot open the store in %s (%s): every log directory is "
                    "checked as an unknown org\n",
                    data_dir, strerror(-rc));
        else if ((rc = store_org_list(store, collect_org, &known)) < 0) {
            fprintf(stderr, "sluice: cannot list orgs: %s\n",
                    rc == -EIO ? store_last_error(store) : strerror(-rc));
            failed = 1;
        }
        if (rc < 0) st.warnings++;
        for (size_t i = 0; !failed && i < known.n; i++)
            failed |= verify_one(data_dir, known.v[i], &st);
        if (!failed) failed |= verify_unknown(data_dir, &known, &st);
    }
    if (store) store_close(store);
    free(known.v);
    if (org_arg && failed) return 1; /* no such org: nothing was verified */
    printf("verified %" PRIu64 " segments, %" PRIu64 " records: %" PRIu64 " errors, %" PRIu64
           " warnings\n",
           st.segments, st.records, st.errors, st.warnings);
    if (fflush(stdout) != 0) failed = 1;
    return failed || st.errors > 0;
}

/* `sluice log SUBCOMMAND ...`: argv[0] is "log". Returns the process exit code:
 * 0 success, 1 failure (unknown org, corrupt records, I/O), 2 bad usage. */
int cmd_log(const char *data_dir, int argc, char **argv)
{
    if (argc < 2) return usage_error("log needs a subcommand: cat or verify");
    if (strcmp(argv[1], "cat") == 0) return log_cat(data_dir, argc, argv);
    if (strcmp(argv[1], "verify") == 0) return log_verify(data_dir, argc, argv);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    return usage_error("unknown log subcommand '%s' (cat or verify)", argv[1]);
}
