/* tests/unit/protocols/mqtt_corpus_test.c — replays Mosquitto's broker test corpus
 * ($SLUICE_CORPORA/mqtt-mosquitto/ JSON files, ~1,800 packet sequences, many malformed)
 * through mqtt_peek + mqtt_parse, the way a connection would: version 0 until a
 * CONNECT parses, then its level; the first error ends the sequence.
 *
 * The JSON and its payload notation are decoded by mqtt_corpus.py (next to this
 * file) into tab-separated lines; each send payload is copied into an exactly
 * sized malloc'd buffer so ASan catches any over-read.
 *
 * What is asserted:
 *   - every sequence gets a definite verdict (all parsed, error with a reason and
 *     a text, or incomplete) and every success consumed what peek announced;
 *   - where Mosquitto answers with a DISCONNECT 0x81/0x82 or a refusing CONNACK,
 *     the parser fails too (the reason may differ: both close; logged);
 *   - where Mosquitto keeps the connection, the parser accepts every packet,
 *     except for the sluice design choices listed in by_design[].
 * Sequences that Mosquitto closes for session reasons (unknown topic alias, QoS 2
 * flows, a DISCONNECT) while every packet is well formed are counted, not asserted:
 * that is the session's job. Without the corpus or python3 the binary exits 77.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <criterion/options.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "protocols/mqtt.h"

struct seq {
    int ver, connect, expect_disconnect;
    char file[64], group[128], name[256];
    uint8_t *send[16];
    size_t send_n[16], nsend;
    int want_reason; /* first DISCONNECT reason or refusing CONNACK code, -1 if none */
    int want_connack_v4;
};

static char dir_path[4096];

static int corpus_dir(void)
{
    const char *root = getenv("SLUICE_CORPORA");
    struct stat sb;

    if (!root || !*root) return 0;
    snprintf(dir_path, sizeof(dir_path), "%s/mqtt-mosquitto", root);
    return stat(dir_path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Sequences Mosquitto keeps open that sluice refuses on purpose. */
static const char *const by_design[] = {
    "v3.1 CONNECT", /* MQTT 3.1 ("MQIsdp") is not supported: CONNACK 0x01 */
    NULL,
};

/* Refusals that need session state (in-flight packet ids, the alias table, the
 * CONNECT's session expiry, the supported authentication methods): the parser
 * accepts these packets and the session answers them. */
static const char *const session_level[] = {
    "FLOW /",                                  /* acks for packet ids not in flight */
    "QoS 2 Dup flow*3",                        /* QoS 2 state */
    "non-zero session expiry",                 /* [MQTT-3.14.2-2] against CONNECT */
    "topic alias > max topic alias",           /* alias above our maximum: 0x94 */
    "topic-alias (two byte integer) no topic", /* alias not yet mapped */
    "unsupported authentication method",       /* 0x8C */
    NULL,
};

static int is_session_level(const struct seq *s)
{
    char full[400];
    snprintf(full, sizeof(full), "%s / %s", s->group, s->name);
    for (size_t i = 0; session_level[i]; i++)
        if (strstr(full, session_level[i])) return 1;
    return 0;
}

static int is_by_design(const char *group)
{
    for (size_t i = 0; by_design[i]; i++)
        if (strcmp(group, by_design[i]) == 0) return 1;
    return 0;
}

struct differ {
    int want, got;
    const char *why; /* static text from the parser */
    size_t count;
    char example[400];
};

struct tally {
    struct differ diff[64];
    size_t ndiff;
    size_t seqs, packets, accepted, errors, incomplete;
    size_t must_fail, must_fail_agree, must_fail_reason_differs;
    size_t must_pass, must_pass_by_design;
    size_t session_closes;  /* Mosquitto closes, every packet well formed */
    size_t session_refuses; /* Mosquitto answers an error the session must give */
    char log[16384];
    size_t loglen;
};

static void note(struct tally *t, const char *fmt, const char *a, const char *b, int x, int y,
                 const char *why)
{
    int k;
    if (t->loglen >= sizeof(t->log) - 256) return;
    k = snprintf(t->log + t->loglen, sizeof(t->log) - t->loglen, fmt, a, b, x, y, why ? why : "");
    if (k > 0) t->loglen += (size_t)k;
}

static uint8_t *unhex(const char *h, size_t *n)
{
    size_t len = strlen(h) / 2;
    uint8_t *b = malloc(len ? len : 1);
    cr_assert_not_null(b);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        cr_assert_eq(sscanf(h + 2 * i, "%2x", &v), 1);
        b[i] = (uint8_t)v;
    }
    *n = len;
    return b;
}

/* Runs one sequence: returns 1 all parsed, 0 error (reason in *reason), 2 incomplete. */
static int replay(struct seq *s, struct tally *t, int *reason, const char **why)
{
    unsigned version = s->connect ? (unsigned)s->ver : 0;
    static struct mqtt_packet pk;

    for (size_t i = 0; i < s->nsend; i++) {
        const uint8_t *b = s->send[i];
        size_t n = s->send_n[i], off = 0;
        while (off < n) {
            size_t total = 0;
            int r = mqtt_peek(b + off, n - off, &total);
            if (r == MQTT_INCOMPLETE) return 2;
            if (r < 0) {
                *reason = -r;
                *why = "peek: bad remaining length";
                return 0;
            }
            if (total > n - off) return 2;
            r = mqtt_parse(b + off, n - off, version, &pk);
            t->packets++;
            if (r < 0) {
                cr_assert_neq(r, MQTT_INCOMPLETE, "%s: parse incomplete after peek", s->name);
                cr_assert_eq(pk.reason, -r, "%s: reason %x vs return %d", s->name, pk.reason, r);
                cr_assert_not_null(pk.error, "%s: error without text", s->name);
                *reason = -r;
                *why = pk.error;
                return 0;
            }
            cr_assert_eq((size_t)r, total, "%s: parsed %d, peek said %zu", s->name, r, total);
            cr_assert_null(pk.error);
            if (pk.type == MQTT_CONNECT) version = pk.connect.level;
            off += total;
        }
    }
    return 1;
}

static void judge(struct seq *s, struct tally *t)
{
    int reason = 0, v;
    const char *why = NULL;

    v = replay(s, t, &reason, &why);
    t->seqs++;
    if (v == 1) t->accepted++;
    if (v == 0) t->errors++;
    if (v == 2) t->incomplete++;

    if (s->want_reason >= 0 && v == 1 && is_session_level(s)) {
        t->session_refuses++;
    } else if (s->want_reason >= 0) {
        t->must_fail++;
        cr_expect_eq(v, 0, "%s / %s: Mosquitto answers 0x%02x, the parser %s", s->group, s->name,
                     s->want_reason, v == 1 ? "accepts it" : "waits for more");
        if (v == 0 && reason == s->want_reason) {
            t->must_fail_agree++;
        } else if (v == 0 && s->want_connack_v4 >= 0 &&
                   mqtt_connack_v4_code((uint8_t)reason) == s->want_connack_v4) {
            t->must_fail_agree++;
        } else if (v == 0) {
            size_t k;
            t->must_fail_reason_differs++;
            for (k = 0; k < t->ndiff; k++)
                if (t->diff[k].want == s->want_reason && t->diff[k].got == reason &&
                    strcmp(t->diff[k].why, why) == 0)
                    break;
            if (k == t->ndiff && k < 64) {
                t->diff[k].want = s->want_reason;
                t->diff[k].got = reason;
                t->diff[k].why = why;
                snprintf(t->diff[k].example, sizeof(t->diff[k].example), "%s / %s", s->group,
                         s->name);
                t->ndiff++;
            }
            if (k < 64) t->diff[k].count++;
        }
    } else if (!s->expect_disconnect) {
        t->must_pass++;
        if (v != 1 && is_by_design(s->group)) {
            t->must_pass_by_design++;
            note(t, "    refused by design: %s / %s: 0x%02x/%d %s\n", s->group, s->name, reason,
                 reason, why);
        } else {
            cr_expect_eq(v, 1, "%s / %s: Mosquitto accepts it, the parser says 0x%02x (%s)",
                         s->group, s->name, reason, why ? why : "incomplete");
        }
    } else if (v == 1) {
        t->session_closes++;
    }
}

static void free_seq(struct seq *s)
{
    for (size_t i = 0; i < s->nsend; i++)
        free(s->send[i]);
    s->nsend = 0;
}

/* The expected answer: the first DISCONNECT's reason, or a refusing CONNACK code. */
static void expect_from(struct seq *s, const uint8_t *b, size_t n)
{
    if (s->want_reason >= 0) return;
    if (n >= 3 && b[0] == 0xe0 && b[1] >= 1) s->want_reason = b[2];
    if (n >= 4 && b[0] == 0x20 && b[1] == 2 && b[3] != 0) {
        /* v3.1.1 CONNACK: map back through the table sluice uses */
        static const int v5_of[6] = {0, 0x84, 0x85, 0x88, 0x86, 0x87};
        s->want_connack_v4 = b[3];
        s->want_reason = b[3] < 6 ? v5_of[b[3]] : 0x80;
    }
    if (n >= 4 && b[0] == 0x20 && b[1] >= 3 && b[3] != 0) s->want_reason = b[3];
}

Test(mqtt_corpus, mosquitto_sequences_get_the_expected_verdict)
{
    static struct tally t;
    static struct seq s;
    char cmd[8192], line[1 << 16];
    const char *src = getenv("SLUICE_SOURCE");
    int have = 0;
    FILE *f;

    if (!corpus_dir()) cr_skip_test("corpus absent: SLUICE_CORPORA has no mqtt-mosquitto/");
    if (system("python3 -c '' 2>/dev/null") != 0) cr_skip_test("python3 missing");
    snprintf(cmd, sizeof(cmd), "python3 '%s/tests/unit/protocols/mqtt_corpus.py' '%s'",
             src ? src : "..", dir_path);
    f = popen(cmd, "r");
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f)) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (line[0] == 'T') {
            if (have) judge(&s, &t);
            free_seq(&s);
            memset(&s, 0, sizeof(s));
            s.want_reason = -1;
            s.want_connack_v4 = -1;
            cr_assert_eq(sscanf(line, "T\t%d\t%d\t%d\t%63[^\t]\t%127[^\t]\t%255[^\n]", &s.ver,
                                &s.connect, &s.expect_disconnect, s.file, s.group, s.name),
                         6, "bad line %s", line);
            have = 1;
        } else if (line[0] == 'S' && s.nsend < 16) {
            s.send[s.nsend] = unhex(line + 2, &s.send_n[s.nsend]);
            s.nsend++;
        } else if (line[0] == 'R') {
            size_t n;
            uint8_t *b = unhex(line + 2, &n);
            expect_from(&s, b, n);
            free(b);
        }
    }
    if (have) judge(&s, &t);
    free_seq(&s);
    cr_assert_eq(pclose(f), 0, "mqtt_corpus.py failed");
    cr_assert_gt(t.seqs, 1000, "only %zu sequences", t.seqs);

    cr_log_info("mosquitto replay: %zu sequences, %zu packets parsed\n"
                "      all packets accepted %zu, error %zu, incomplete %zu\n"
                "      Mosquitto refuses %zu: same reason %zu, other reason %zu\n"
                "      Mosquitto accepts %zu: refused by design %zu\n"
                "      Mosquitto closes for session reasons, parser accepts: %zu\n"
                "      Mosquitto refuses with session state, parser accepts: %zu\n%s",
                t.seqs, t.packets, t.accepted, t.errors, t.incomplete, t.must_fail,
                t.must_fail_agree, t.must_fail_reason_differs, t.must_pass, t.must_pass_by_design,
                t.session_closes, t.session_refuses, t.log);
    {
        char msg[16384];
        size_t k = 0;
        k += (size_t)snprintf(msg, sizeof(msg), "reasons that differ (both close):");
        for (size_t i = 0; i < t.ndiff && k < sizeof(msg) - 400; i++)
            k += (size_t)snprintf(msg + k, sizeof(msg) - k,
                                  "\n      %4zu x mosquitto 0x%02x, sluice 0x%02x %-40s e.g. %s",
                                  t.diff[i].count, t.diff[i].want, t.diff[i].got, t.diff[i].why,
                                  t.diff[i].example);
        cr_log_info("%s", msg);
    }
}

/* Criterion's own main cannot say SKIP to meson: exit 77 when the corpus is absent.
 * Default visibility: BoxFort finds main by symbol (the project builds with
 * -fvisibility=hidden). */
__attribute__((visibility("default"))) int main(int argc, char *argv[]);
__attribute__((visibility("default"))) int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;

    criterion_options.logging_threshold = CRITERION_INFO;
    if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    if (result == 0 && (!corpus_dir() || system("python3 -c '' 2>/dev/null") != 0)) return 77;
    return result;
}
