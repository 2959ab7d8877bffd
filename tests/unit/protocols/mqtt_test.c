/* tests/unit/protocols/mqtt_test.c — MQTT 3.1.1 / 5.0 parser and encoders.
 *
 * Tests are named after the normative statements they check ([MQTT-x.y.z-n] of
 * the OASIS 3.1.1 and 5.0 standards). Every packet is parsed from a buffer whose
 * last byte is the last readable byte before a PROT_NONE page, and every proper
 * prefix of it must give MQTT_INCOMPLETE (from mqtt_peek, or from mqtt_parse once
 * the fixed header is complete) — a packet never gets a verdict before it is all
 * there.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "protocols/mqtt.h"

#define B(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static uint8_t *guard_base;
static size_t guard_body;

static void guard_setup(void)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    guard_body = 16 * pg;
    guard_base =
        mmap(NULL, guard_body + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(guard_base != MAP_FAILED);
    cr_assert_eq(mprotect(guard_base + guard_body, pg, PROT_NONE), 0);
}

static void guard_teardown(void)
{
    munmap(guard_base, guard_body + (size_t)sysconf(_SC_PAGESIZE));
}

TestSuite(mqtt, .init = guard_setup, .fini = guard_teardown);

static const uint8_t *put(const uint8_t *d, size_t n)
{
    uint8_t *p = guard_base + guard_body - n;
    cr_assert_leq(n, guard_body);
    memcpy(p, d, n);
    return p;
}

static struct mqtt_packet pk;

/* Parses d[0..n) with the given session version; checks prefixes and the
 * error/reason contract. The parsed packet is left in pk (slices into the guard
 * buffer, valid until the next parse). */
static int parse(const uint8_t *d, size_t n, unsigned version)
{
    size_t total = 0;
    int r;

    for (size_t k = 0; k < n; k++) {
        const uint8_t *p = put(d, k);
        int pr = mqtt_peek(p, k, &total);
        if (pr == MQTT_INCOMPLETE) continue;
        if (pr < 0) break; /* a bad header is decided before the packet is complete */
        if (total > k) {
            cr_assert_eq(mqtt_parse(p, k, version, &pk), MQTT_INCOMPLETE,
                         "prefix %zu of %zu not INCOMPLETE", k, n);
        }
    }
    r = mqtt_parse(put(d, n), n, version, &pk);
    if (r > 0) {
        cr_assert_null(pk.error, "success with error text %s", pk.error);
        cr_assert_eq(mqtt_peek(put(d, n), n, &total), 0);
        cr_assert_eq((size_t)r, total);
        /* parse again: the packet must be left where it is */
        cr_assert_eq(mqtt_parse(put(d, n), n, version, &pk), r);
    } else if (r != MQTT_INCOMPLETE) {
        cr_assert_not_null(pk.error, "error %d without text", r);
        cr_assert_eq(pk.reason, -r);
    }
    return r;
}

/* Builds first byte + remaining length + body and parses it. */
static int parse_body(uint8_t first, const uint8_t *body, size_t n, unsigned version, int *len)
{
    static uint8_t b[1024];
    size_t h = 1, rl = n;

    cr_assert_lt(n, sizeof(b) - 5);
    b[0] = first;
    do {
        b[h] = (uint8_t)((rl & 0x7f) | (rl > 0x7f ? 0x80 : 0));
        rl >>= 7;
        h++;
    } while (rl);
    if (n) memcpy(b + h, body, n);
    *len = (int)(h + n);
    return parse(b, h + n, version);
}

/* OK(version, first byte, body...): the body parses as a whole packet. */
#define OK(version, first, ...)                                                                    \
    do {                                                                                           \
        int len_, r_ = parse_body((first), B(__VA_ARGS__), (version), &len_);                      \
        cr_assert_eq(r_, len_, "line %d: %d (%s)", __LINE__, r_, pk.error ? pk.error : "");        \
    } while (0)
#define ERR(version, code, first, ...)                                                             \
    do {                                                                                           \
        int len_, r_ = parse_body((first), B(__VA_ARGS__), (version), &len_);                      \
        cr_assert_eq(r_, (code), "line %d: got %d (%s), want %d", __LINE__, r_,                    \
                     pk.error ? pk.error : "", (code));                                            \
    } while (0)
/* an empty body */
#define OK0(version, first)                                                                        \
    do {                                                                                           \
        int len_, r_ = parse_body((first), NULL, 0, (version), &len_);                             \
        cr_assert_eq(r_, len_, "line %d: %d (%s)", __LINE__, r_, pk.error ? pk.error : "");        \
    } while (0)
#define ERR0(version, code, first)                                                                 \
    do {                                                                                           \
        int len_, r_ = parse_body((first), NULL, 0, (version), &len_);                             \
        cr_assert_eq(r_, (code), "line %d: got %d (%s)", __LINE__, r_, pk.error ? pk.error : "");  \
    } while (0)

static int slice_is(struct mqtt_slice s, const char *want)
{
    return s.n == strlen(want) && (s.n == 0 || memcmp(s.p, want, s.n) == 0);
}

/* ---- fixed header, remaining length ------------------------------------------------ */

Test(mqtt, MQTT_1_5_5_1_remaining_length_minimal_and_at_most_4_bytes)
{
    size_t total;

    cr_assert_eq(mqtt_peek(B(0x30), &total), MQTT_INCOMPLETE);
    cr_assert_eq(mqtt_peek(NULL, 0, &total), MQTT_INCOMPLETE);
    cr_assert_eq(mqtt_peek(B(0x30, 0x80), &total), MQTT_INCOMPLETE);
    cr_assert_eq(mqtt_peek(B(0x30, 0x80, 0x00), &total), MQTT_E_MALFORMED); /* overlong 0 */
    cr_assert_eq(mqtt_peek(B(0x30, 0xff, 0x80, 0x00), &total), MQTT_E_MALFORMED);
    cr_assert_eq(mqtt_peek(B(0x30, 0x80, 0x80, 0x80, 0x80), &total), MQTT_E_MALFORMED);
    cr_assert_eq(mqtt_peek(B(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), &total), MQTT_E_MALFORMED);
    cr_assert_eq(mqtt_peek(B(0x30, 0x7f), &total), 0);
    cr_assert_eq(total, 2 + 127);
    cr_assert_eq(mqtt_peek(B(0x30, 0x80, 0x01), &total), 0);
    cr_assert_eq(total, 3 + 128);
    /* the largest packet: 268,435,455 bytes announced, nothing buffered */
    cr_assert_eq(mqtt_peek(B(0x10, 0xff, 0xff, 0xff, 0x7f), &total), 0);
    cr_assert_eq(total, 5 + (size_t)MQTT_MAX_REMAINING);
    cr_assert_eq(mqtt_parse(B(0x10, 0xff, 0xff, 0xff, 0x7f), 5, &pk), MQTT_INCOMPLETE);
    cr_assert_eq(mqtt_parse(B(0x30, 0x80, 0x00), 5, &pk), MQTT_E_MALFORMED);
    cr_assert_eq(pk.reason, 0x81);
}

Test(mqtt, MQTT_2_1_3_type_0_is_reserved)
{
    size_t total;
    cr_assert_eq(mqtt_peek(B(0x00, 0x00), &total), MQTT_E_MALFORMED);
    ERR0(4, MQTT_E_MALFORMED, 0x00);
}

Test(mqtt, MQTT_2_2_2_2_reserved_fixed_header_flags)
{
    /* for each type: the only accepted flags */
    static const struct {
        uint8_t type, flags;
        uint8_t body[4];
        size_t n;
    } cases[] = {
        {MQTT_PUBACK, 0, {0, 1}, 2},    {MQTT_PUBREC, 0, {0, 1}, 2},
        {MQTT_PUBREL, 2, {0, 1}, 2},    {MQTT_PUBCOMP, 0, {0, 1}, 2},
        {MQTT_SUBSCRIBE, 2, {0, 1}, 2}, {MQTT_UNSUBSCRIBE, 2, {0, 1}, 2},
        {MQTT_PINGREQ, 0, {0}, 0},      {MQTT_DISCONNECT, 0, {0}, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (unsigned f = 0; f < 16; f++) {
            uint8_t b[8];
            int r;
            if (f == cases[i].flags) continue;
            b[0] = (uint8_t)(cases[i].type << 4 | f);
            b[1] = (uint8_t)cases[i].n;
            memcpy(b + 2, cases[i].body, cases[i].n);
            r = parse(b, 2 + cases[i].n, 4);
            cr_assert_eq(r, MQTT_E_MALFORMED, "type %u flags %u: %d", cases[i].type, f, r);
            r = parse(b, 2 + cases[i].n, 5);
            cr_assert_eq(r, MQTT_E_MALFORMED, "v5 type %u flags %u: %d", cases[i].type, f, r);
        }
    }
    for (unsigned f = 1; f < 16; f++) {
        uint8_t b[] = {(uint8_t)(0xf0 | f), 0};
        cr_assert_eq(parse(b, 2, 5), MQTT_E_MALFORMED);
        b[0] = (uint8_t)(0x10 | f);
        cr_assert_eq(parse(b, 2, 0), MQTT_E_MALFORMED);
    }
}

Test(mqtt, MQTT_3_1_0_1_first_packet_connect)
{
    ERR0(0, MQTT_E_PROTOCOL, 0xc0);
    ERR(0, MQTT_E_PROTOCOL, 0x30, 0x00, 0x01, 'a');
    ERR0(0, MQTT_E_PROTOCOL, 0xe0);
    OK0(4, 0xc0);
}

Test(mqtt, MQTT_3_1_0_2_second_connect_is_a_protocol_error)
{
    ERR(4, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 1, 'p');
    ERR(5, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 1, 'p');
}

/* ---- CONNECT --------------------------------------------------------------------- */

Test(mqtt, MQTT_3_1_connect_v4_minimal)
{
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'p');
    cr_assert_eq(pk.type, MQTT_CONNECT);
    cr_assert_eq(pk.connect.level, 4);
    cr_assert(pk.connect.clean_start);
    cr_assert_eq(pk.connect.keepalive, 60);
    cr_assert(slice_is(pk.connect.client_id, "p"));
    cr_assert(!pk.connect.will && !pk.connect.has_username && !pk.connect.has_password);
}

Test(mqtt, MQTT_3_1_connect_v4_will_username_password)
{
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0xee /* user pass will-retain qos1 will clean */, 0, 5,
       0, 2, 'i', 'd', 0, 1, 't', 0, 2, 'w', 'p', 0, 4, 'u', 's', 'e', 'r', 0, 3, 't', 'o', 'k');
    cr_assert(pk.connect.will && pk.connect.will_retain);
    cr_assert_eq(pk.connect.will_qos, 1);
    cr_assert(slice_is(pk.connect.client_id, "id"));
    cr_assert(slice_is(pk.connect.will_topic, "t"));
    cr_assert(slice_is(pk.connect.will_payload, "wp"));
    cr_assert(slice_is(pk.connect.username, "user"));
    cr_assert(slice_is(pk.connect.password, "tok"));
}

Test(mqtt, MQTT_3_1_2_1_protocol_name)
{
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 3, 'M', 'Q', 'T', 4, 2, 0, 10, 0, 1, 'p');
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'm', 'q', 't', 't', 4, 2, 0, 10, 0, 1, 'p');
    ERR0(0, MQTT_E_MALFORMED, 0x10);
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4);
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T');
}

Test(mqtt, MQTT_3_1_2_2_unsupported_protocol_level)
{
    ERR(0, MQTT_E_VERSION, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 3, 2, 0, 10, 0, 1, 'p');
    cr_assert_eq(pk.connect.level, 3);
    cr_assert_eq(mqtt_connack_v4_code(pk.reason), 0x01);
    ERR(0, MQTT_E_VERSION, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 6, 2, 0, 10, 0, 1, 'p');
    /* MQTT 3.1: refused with the 3.1.1-style CONNACK 0x01 */
    ERR(0, MQTT_E_VERSION, 0x10, 0, 6, 'M', 'Q', 'I', 's', 'd', 'p', 3, 2, 0, 10, 0, 1, 'p');
    cr_assert_eq(mqtt_connack_v4_code(pk.reason), 0x01);
}

Test(mqtt, MQTT_3_1_2_3_reserved_connect_flag)
{
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 3, 0, 10, 0, 1, 'p');
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 3, 0, 10, 0, 0, 1, 'p');
}

Test(mqtt, MQTT_3_1_2_11_will_qos_and_retain_need_the_will_flag)
{
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x0a, 0, 10, 0, 1, 'p');
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x22, 0, 10, 0, 1, 'p');
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x12, 0, 10, 0, 1, 'p');
}

Test(mqtt, MQTT_3_1_2_14_will_qos_3)
{
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x1e, 0, 10, 0, 1, 'p', 0, 1, 't',
        0, 0);
}

Test(mqtt, MQTT_3_1_2_22_password_without_username_v4_only)
{
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x42, 0, 10, 0, 1, 'p', 0, 1, 'x');
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x42, 0, 10, 0, 0, 1, 'p', 0, 1, 'x');
    cr_assert(slice_is(pk.connect.password, "x") && !pk.connect.has_username);
}

Test(mqtt, MQTT_3_1_3_8_empty_client_id_needs_clean_session_v4)
{
    ERR(0, MQTT_E_CLIENT_ID, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 10, 0, 0);
    cr_assert_eq(mqtt_connack_v4_code(pk.reason), 0x02);
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 0);
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0, 0, 10, 0, 0, 0); /* v5: server assigns */
}

Test(mqtt, MQTT_3_1_3_5_client_id_control_characters)
{
    ERR(0, MQTT_E_CLIENT_ID, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 1, 0x01);
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 1, 0x00);
}

Test(mqtt, MQTT_3_1_connect_extra_bytes_are_malformed)
{
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 10, 0, 1, 'p', 0);
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x82, 0, 10, 0, 1, 'p', 0);
}

Test(mqtt, MQTT_3_1_2_connect_v5_properties)
{
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 30, /* props */ 54, 0x11, 0, 0, 0, 60, 0x21, 0,
       10, 0x27, 0, 0, 1, 0, 0x22, 0, 5, 0x19, 1, 0x17, 0, 0x26, 0, 1, 'k', 0, 1, 'v', 0x26, 0, 2,
       'k', '2', 0, 0, 0x15, 0, 5, 'P', 'L', 'A', 'I', 'N', 0x16, 0, 3, 1, 2, 3, 0x26, 0, 0, 0, 1,
       'z',
       /* client id */ 0, 1, 'c');
    cr_assert_eq(pk.connect.level, 5);
    cr_assert_eq(pk.props.session_expiry, 60);
    cr_assert_eq(pk.props.receive_maximum, 10);
    cr_assert_eq(pk.props.maximum_packet_size, 256);
    cr_assert_eq(pk.props.topic_alias_maximum, 5);
    cr_assert_eq(pk.props.request_response_info, 1);
    cr_assert(MQTT_HAS(&pk.props, MQTT_PROP_REQUEST_PROBLEM_INFO));
    cr_assert(slice_is(pk.props.auth_method, "PLAIN"));
    cr_assert_eq(pk.props.auth_data.n, 3);
    cr_assert_eq(pk.props.user_count, 3);
    {
        struct mqtt_slice k, v;
        size_t pos = 0;
        cr_assert(mqtt_user_prop_next(&pk.props, &pos, &k, &v));
        cr_assert(slice_is(k, "k") && slice_is(v, "v"));
        cr_assert(mqtt_user_prop_next(&pk.props, &pos, &k, &v));
        cr_assert(slice_is(k, "k2") && slice_is(v, ""));
        cr_assert(mqtt_user_prop_next(&pk.props, &pos, &k, &v));
        cr_assert(slice_is(k, "") && slice_is(v, "z"));
        cr_assert_not(mqtt_user_prop_next(&pk.props, &pos, &k, &v));
    }
    cr_assert(slice_is(pk.connect.client_id, "c"));
}

Test(mqtt, MQTT_3_1_2_connect_v5_property_rules)
{
    /* receive maximum 0, maximum packet size 0: protocol errors */
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 3, 0x21, 0, 0, 0, 0);
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 5, 0x27, 0, 0, 0, 0, 0, 0);
    /* each at most once */
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 6, 0x21, 0, 1, 0x21, 0, 1,
        0, 0);
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 4, 0x17, 1, 0x17, 1, 0, 0);
    /* request problem information 2 */
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 2, 0x17, 2, 0, 0);
    /* authentication data without method */
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 3, 0x16, 0, 0, 0, 0);
    /* a PUBLISH property in a CONNECT, an unknown id, a truncated value */
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 2, 0x01, 0, 0, 0);
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 2, 0x04, 0, 0, 0);
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 2, 0x21, 0, 0, 0);
    /* property length past the packet */
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 9, 0, 0);
    /* property length overlong */
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 0x80, 0, 0, 0);
    /* user property with half a pair */
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 10, 4, 0x26, 0, 1, 'k', 0, 0);
}

Test(mqtt, MQTT_3_1_3_will_v5_properties)
{
    OK(0, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 10, 0, 0, 1, 'c',
       /* will props */ 23, 0x18, 0, 0, 0, 9, 0x01, 1, 0x02, 0, 0, 0, 7, 0x03, 0, 1, 'j', 0x08, 0,
       1, 'r', 0x09, 0, 0, 0, 1, 't', 0, 2, 'h', 'i');
    cr_assert(pk.connect.will);
    cr_assert_eq(pk.connect.will_props.will_delay, 9);
    cr_assert_eq(pk.connect.will_props.payload_format, 1);
    cr_assert_eq(pk.connect.will_props.message_expiry, 7);
    cr_assert(slice_is(pk.connect.will_props.content_type, "j"));
    cr_assert(slice_is(pk.connect.will_props.response_topic, "r"));
    cr_assert(MQTT_HAS(&pk.connect.will_props, MQTT_PROP_CORRELATION_DATA));
    cr_assert(slice_is(pk.connect.will_payload, "hi"));
    /* payload format 1 and a payload that is not UTF-8 */
    ERR(0, MQTT_E_PAYLOAD_FORMAT, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 10, 0, 0, 1, 'c', 2,
        0x01, 1, 0, 1, 't', 0, 1, 0xff);
    /* a CONNECT-only property in the will */
    ERR(0, MQTT_E_MALFORMED, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 10, 0, 0, 1, 'c', 5, 0x11,
        0, 0, 0, 0, 0, 1, 't', 0, 0);
    /* an empty response topic is not a topic name */
    ERR(0, MQTT_E_PROTOCOL, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x06, 0, 10, 0, 0, 1, 'c', 3, 0x08,
        0, 0, 0, 1, 't', 0, 0);
    /* wildcards in the will topic */
    ERR(0, MQTT_E_TOPIC_NAME, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 10, 0, 1, 'c', 0, 1, '#',
        0, 0);
}

/* ---- UTF-8 ----------------------------------------------------------------------- */

Test(mqtt, MQTT_1_5_4_1_well_formed_utf8)
{
    /* topic "a" + bad bytes, v4 QoS 0 */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 3, 'a', 0xc0, 0x80);             /* overlong NUL */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 4, 'a', 0xe0, 0x80, 0x80);       /* overlong */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 4, 'a', 0xed, 0xa0, 0x80);       /* U+D800 */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 4, 'a', 0xed, 0xbf, 0xbf);       /* U+DFFF */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 5, 'a', 0xf4, 0x90, 0x80, 0x80); /* > U+10FFFF */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 5, 'a', 0xf0, 0x80, 0x80, 0x80); /* overlong */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 2, 'a', 0xc3);                   /* truncated */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 2, 'a', 0x80);                   /* lone continuation */
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 2, 'a', 0xff);
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 3, 'a', 0xc3, 0x41); /* bad continuation */
    OK(4, 0x30, 0, 3, 'a', 0xc3, 0xa9);                    /* é */
    OK(4, 0x30, 0, 4, 'a', 0xed, 0x9f, 0xbf);              /* U+D7FF */
    OK(4, 0x30, 0, 5, 'A', 0xf0, 0xaa, 0x9b, 0x94);        /* U+2A6D4 (1.5.3.1) */
    OK(4, 0x30, 0, 5, 'a', 0xf4, 0x8f, 0xbf, 0xbf);        /* U+10FFFF */
}

Test(mqtt, MQTT_1_5_4_2_no_null_char)
{
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 3, 't', 0, 'p');
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 3, 't', 0, 'p', 0);
    /* also in user properties */
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 1, 't', 8, 0x26, 0, 1, 0, 0, 1, 'v', 0);
}

Test(mqtt, MQTT_1_5_4_topic_control_characters)
{
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 3, 't', 0x01, 'p');
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 3, 't', 0x1f, 'p');
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 3, 't', 0x7f, 'p');
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 4, 't', 0xc2, 0x9f, 'p');
    OK(4, 0x30, 0, 4, 't', 0xc2, 0xa0, 'p');
}

/* ---- PUBLISH --------------------------------------------------------------------- */

Test(mqtt, MQTT_3_3_publish_v4_qos0_qos1)
{
    OK(4, 0x31, 0, 5, 't', 'o', 'p', 'i', 'c', 'p', 'a', 'y', 'l', 'o', 'a', 'd');
    cr_assert_eq(pk.type, MQTT_PUBLISH);
    cr_assert(pk.publish.retain && pk.publish.qos == 0 && !pk.publish.dup);
    cr_assert(slice_is(pk.publish.topic, "topic"));
    cr_assert(slice_is(pk.publish.payload, "payload"));
    cr_assert_eq(pk.packet_id, 0);
    OK(4, 0x3a, 0, 1, 't', 0x12, 0x34, 'x');
    cr_assert(pk.publish.dup && pk.publish.qos == 1);
    cr_assert_eq(pk.packet_id, 0x1234);
    cr_assert(slice_is(pk.publish.payload, "x"));
    OK(4, 0x34, 0, 1, 't', 0, 1); /* QoS 2, empty payload */
    cr_assert_eq(pk.publish.payload.n, 0);
}

Test(mqtt, MQTT_3_3_1_4_qos_3_is_malformed)
{
    ERR(4, MQTT_E_MALFORMED, 0x36, 0, 1, 't', 0, 1);
    ERR(5, MQTT_E_MALFORMED, 0x36, 0, 1, 't', 0, 1, 0);
}

Test(mqtt, MQTT_3_3_1_2_dup_on_qos_0)
{
    ERR(4, MQTT_E_MALFORMED, 0x38, 0, 1, 't', 'x');
    ERR(5, MQTT_E_PROTOCOL, 0x38, 0, 1, 't', 0, 'x');
}

Test(mqtt, MQTT_3_3_2_2_no_wildcards_in_topic_name)
{
    ERR(4, MQTT_E_TOPIC_NAME, 0x30, 0, 3, 'a', '/', '+');
    ERR(4, MQTT_E_TOPIC_NAME, 0x30, 0, 1, '#');
    ERR(5, MQTT_E_TOPIC_NAME, 0x30, 0, 3, 'a', '#', 'b', 0);
    OK(4, 0x30, 0, 10, '$', 't', 'e', 's', 't', '/', 't', 'e', 's', 't');
}

Test(mqtt, MQTT_4_7_3_1_topic_name_not_empty)
{
    ERR(4, MQTT_E_MALFORMED, 0x30, 0, 0, 'x');
    ERR(5, MQTT_E_PROTOCOL, 0x30, 0, 0, 0, 'x');
    /* v5: empty with a topic alias is the alias' use */
    OK(5, 0x30, 0, 0, 3, 0x23, 0, 1, 'x');
    cr_assert_eq(pk.props.topic_alias, 1);
    cr_assert_eq(pk.publish.topic.n, 0);
}

Test(mqtt, MQTT_2_2_1_3_packet_id_not_zero)
{
    ERR(4, MQTT_E_MALFORMED, 0x32, 0, 1, 't', 0, 0);
    ERR(5, MQTT_E_PROTOCOL, 0x34, 0, 1, 't', 0, 0, 0);
    ERR(4, MQTT_E_MALFORMED, 0x32, 0, 1, 't', 0); /* truncated id */
}

Test(mqtt, MQTT_3_3_2_publish_v5_properties)
{
    OK(5, 0x32, 0, 1, 't', 0, 7, /* props */ 33, 0x01, 1, 0x02, 0, 0, 0, 60, 0x23, 0, 2, 0x08, 0, 1,
       'r', 0x09, 0, 2, 'c', 'd', 0x26, 0, 1, 'a', 0, 1, 'b', 0x03, 0, 4, 't', 'e', 'x', 't', 'o',
       'k');
    cr_assert_eq(pk.packet_id, 7);
    cr_assert_eq(pk.props.payload_format, 1);
    cr_assert_eq(pk.props.message_expiry, 60);
    cr_assert_eq(pk.props.topic_alias, 2);
    cr_assert(slice_is(pk.props.response_topic, "r"));
    cr_assert(slice_is(pk.props.correlation_data, "cd"));
    cr_assert(slice_is(pk.props.content_type, "text"));
    cr_assert_eq(pk.props.user_count, 1);
    cr_assert(slice_is(pk.publish.payload, "ok"));
}

Test(mqtt, MQTT_3_3_2_publish_v5_property_rules)
{
    ERR(5, MQTT_E_TOPIC_ALIAS, 0x30, 0, 1, 't', 3, 0x23, 0, 0);  /* alias 0 [MQTT-3.3.2-8] */
    ERR(5, MQTT_E_PROTOCOL, 0x30, 0, 1, 't', 2, 0x0b, 1);        /* sub id [MQTT-3.3.4-6] */
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 1, 't', 3, 0x0b, 0x80, 0); /* overlong varint */
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 1, 't', 5, 0x0b, 0x80, 0x80, 0x80, 0x80);
    ERR(5, MQTT_E_PROTOCOL, 0x30, 0, 1, 't', 4, 0x01, 1, 0x01, 1);    /* duplicate */
    ERR(5, MQTT_E_PROTOCOL, 0x30, 0, 1, 't', 2, 0x01, 2);             /* format 2 */
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 1, 't', 2, 0x24, 0);            /* server-only */
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 1, 't', 2, 0x7f, 0);            /* unknown */
    ERR(5, MQTT_E_PROTOCOL, 0x30, 0, 1, 't', 4, 0x08, 0, 1, '+');     /* wildcard */
    ERR(5, MQTT_E_PAYLOAD_FORMAT, 0x30, 0, 1, 't', 2, 0x01, 1, 0xfe); /* not UTF-8 */
    OK(5, 0x30, 0, 1, 't', 2, 0x01, 0, 0xfe);                         /* format 0: bytes */
    ERR(5, MQTT_E_MALFORMED, 0x30, 0, 1, 't');                        /* no property length */
}

/* ---- PUBACK / PUBREC / PUBREL / PUBCOMP -------------------------------------------- */

Test(mqtt, MQTT_3_4_acks_by_remaining_length)
{
    OK(4, 0x40, 0, 1);
    cr_assert_eq(pk.packet_id, 1);
    ERR(4, MQTT_E_MALFORMED, 0x40, 0, 1, 0);
    ERR(4, MQTT_E_MALFORMED, 0x62, 0);
    ERR(4, MQTT_E_MALFORMED, 0x50, 0, 0);
    OK(5, 0x50, 0, 9);
    cr_assert_eq(pk.reason, 0);
    OK(5, 0x62, 0, 9, 0x92);
    cr_assert_eq(pk.type, MQTT_PUBREL);
    cr_assert_eq(pk.reason, 0x92);
    OK(5, 0x70, 0, 9, 0, 0);
    OK(5, 0x40, 0, 9, 0x10, 4, 0x1f, 0, 1, 'r');
    cr_assert(slice_is(pk.props.reason_string, "r"));
    ERR(5, MQTT_E_PROTOCOL, 0x62, 0, 1, 0xff, 0);                      /* reason not for PUBREL */
    ERR(5, MQTT_E_PROTOCOL, 0x40, 0, 1, 0x92);                         /* reason not for PUBACK */
    ERR(5, MQTT_E_MALFORMED, 0x62, 0, 1, 0, 1);                        /* props past the end */
    ERR(5, MQTT_E_MALFORMED, 0x40, 0, 1, 0, 2, 0x01, 0);               /* PUBLISH prop in an ack */
    ERR(5, MQTT_E_PROTOCOL, 0x40, 0, 1, 0, 6, 0x1f, 0, 0, 0x1f, 0, 0); /* duplicate */
    ERR(5, MQTT_E_PROTOCOL, 0x62, 0, 0, 0);
}

/* ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------ */

Test(mqtt, MQTT_3_8_subscribe_filters_and_iteration)
{
    struct mqtt_slice f;
    uint8_t opt;
    size_t pos = 0;

    OK(4, 0x82, 0x12, 0x34, 0, 3, 'a', '/', '#', 1, 0, 3, '+', '/', 'b', 2);
    cr_assert_eq(pk.packet_id, 0x1234);
    cr_assert_eq(pk.filters.count, 2);
    cr_assert(mqtt_filter_next(&pk, &pos, &f, &opt));
    cr_assert(slice_is(f, "a/#") && opt == 1);
    cr_assert(mqtt_filter_next(&pk, &pos, &f, &opt));
    cr_assert(slice_is(f, "+/b") && opt == 2);
    cr_assert_not(mqtt_filter_next(&pk, &pos, &f, &opt));
    OK(5, 0x82, 0, 1, 2, 0x0b, 5, 0, 1, 'p', 0x2c); /* no local, rap, rh 2 */
    cr_assert_eq(pk.props.subscription_id, 5);
}

Test(mqtt, MQTT_3_8_3_subscribe_rules)
{
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 1, 'p', 3);       /* QoS 3 */
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 1, 'p', 4);       /* [MQTT-3.8.3-4] reserved */
    ERR(5, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 0, 1, 'p', 0x40); /* [MQTT-3.8.3-5] */
    ERR(5, MQTT_E_PROTOCOL, 0x82, 0, 1, 0, 0, 1, 'p', 0x30);  /* retain handling 3 */
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1);                     /* [MQTT-3.8.3-3] */
    ERR(5, MQTT_E_PROTOCOL, 0x82, 0, 1, 0);
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 1, 'p'); /* options missing */
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 0, 0);   /* [MQTT-4.7.3-1] empty */
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 5, 'a', 'b', '/', '+', 'e', 0); /* 4.7.1 */
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 3, 'a', '#', 'b', 0);
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 2, '#', '/', 0);
    ERR(4, MQTT_E_MALFORMED, 0x82, 0, 0, 0, 1, 'p', 0); /* packet id 0 */
    ERR(5, MQTT_E_PROTOCOL, 0x82, 0, 1, 0, 0, 10, '$', 's', 'h', 'a', 'r', 'e', '/', 'p', '/', 'p',
        0x04); /* [MQTT-3.8.3-4] no local on a shared subscription */
    ERR(5, MQTT_E_MALFORMED, 0x82, 0, 1, 0, 0, 8, '$', 's', 'h', 'a', 'r', 'e', '/', 'p', 0);
    ERR(5, MQTT_E_PROTOCOL, 0x82, 0, 1, 2, 0x0b, 0, 0, 1, 'p', 0);  /* sub id 0 */
    ERR(5, MQTT_E_MALFORMED, 0x82, 0, 1, 2, 0x01, 0, 0, 1, 'p', 0); /* PUBLISH prop */
}

Test(mqtt, MQTT_3_10_unsubscribe)
{
    struct mqtt_slice f;
    uint8_t opt = 9;
    size_t pos = 0;

    OK(4, 0xa2, 0, 2, 0, 3, 'a', '/', 'b');
    cr_assert_eq(pk.filters.count, 1);
    cr_assert(mqtt_filter_next(&pk, &pos, &f, &opt));
    cr_assert(slice_is(f, "a/b") && opt == 0);
    cr_assert_not(mqtt_filter_next(&pk, &pos, &f, &opt));
    OK(5, 0xa2, 0, 2, 0, 0, 1, 'a', 0, 1, 'b');
    cr_assert_eq(pk.filters.count, 2);
    ERR(4, MQTT_E_MALFORMED, 0xa2, 0, 2); /* [MQTT-3.10.3-2] */
    ERR(5, MQTT_E_PROTOCOL, 0xa2, 0, 2, 0);
    ERR(4, MQTT_E_MALFORMED, 0xa2, 0, 2, 0, 1);
}

/* ---- PINGREQ, DISCONNECT, AUTH, server-only types ---------------------------------- */

Test(mqtt, MQTT_3_12_pingreq)
{
    OK0(4, 0xc0);
    cr_assert_eq(pk.type, MQTT_PINGREQ);
    ERR(4, MQTT_E_MALFORMED, 0xc0, 0);
}

Test(mqtt, MQTT_3_14_disconnect)
{
    OK0(4, 0xe0);
    ERR(4, MQTT_E_MALFORMED, 0xe0, 0);
    OK0(5, 0xe0);
    cr_assert_eq(pk.reason, 0);
    OK(5, 0xe0, 0x04);
    cr_assert_eq(pk.reason, 0x04);
    OK(5, 0xe0, 0, 5, 0x11, 0, 0, 0, 9);
    cr_assert_eq(pk.props.session_expiry, 9);
    OK(5, 0xe0, 0x82, 0);
    ERR(5, MQTT_E_PROTOCOL, 0xe0, 0x01); /* not a client reason */
    ERR(5, MQTT_E_PROTOCOL, 0xe0, 0x8e); /* session taken over: server only */
    ERR(5, MQTT_E_MALFORMED, 0xe0, 0, 1, 0x11);
    ERR(5, MQTT_E_MALFORMED, 0xe0, 0, 2, 0x01, 0);
    ERR(5, MQTT_E_PROTOCOL, 0xe0, 0, 10, 0x11, 0, 0, 0, 0, 0x11, 0, 0, 0, 0);
}

Test(mqtt, MQTT_3_15_auth_v5_only)
{
    ERR0(4, MQTT_E_MALFORMED, 0xf0);
    OK(5, 0xf0, 0x19, 7, 0x15, 0, 4, 'S', 'C', 'R', 'M');
    cr_assert_eq(pk.reason, 0x19);
    cr_assert(slice_is(pk.props.auth_method, "SCRM"));
    ERR0(5, MQTT_E_PROTOCOL, 0xf0);
    ERR(5, MQTT_E_PROTOCOL, 0xf0, 0x00);
}

Test(mqtt, MQTT_2_1_2_types_only_a_server_sends)
{
    ERR(4, MQTT_E_PROTOCOL, 0x20, 0, 0);
    ERR(5, MQTT_E_PROTOCOL, 0x20, 0, 0, 0);
    ERR(5, MQTT_E_PROTOCOL, 0x90, 0, 1, 0);
    ERR(5, MQTT_E_PROTOCOL, 0xb0, 0, 1);
    ERR0(4, MQTT_E_PROTOCOL, 0xd0);
    ERR0(5, MQTT_E_MALFORMED, 0xd1);
}

/* ---- encoders: each output decoded by hand --------------------------------------- */

/* Every cap below the length must give 0 and write nothing past cap. */
static void check_caps(size_t (*enc)(uint8_t *, size_t, const void *), const void *arg, size_t len)
{
    uint8_t buf[512];
    for (size_t cap = 0; cap < len; cap++) {
        memset(buf, 0xaa, sizeof(buf));
        cr_assert_eq(enc(buf, cap, arg), 0, "cap %zu of %zu", cap, len);
        for (size_t i = cap; i < sizeof(buf); i++)
            cr_assert_eq(buf[i], 0xaa, "written past cap %zu", cap);
    }
}

static size_t enc_connack5(uint8_t *o, size_t cap, const void *arg)
{
    return mqtt_encode_connack(o, cap, 5, 1, 0, arg);
}

Test(mqtt, MQTT_3_2_connack_round_trip)
{
    uint8_t b[256];
    struct mqtt_connack_props pr = {0};
    size_t n;

    n = mqtt_encode_connack(b, sizeof(b), 4, 1, 0, NULL);
    cr_assert_eq(n, 4);
    cr_assert(memcmp(b, (uint8_t[]){0x20, 2, 1, 0}, 4) == 0);
    n = mqtt_encode_connack(b, sizeof(b), 4, 1, 0x05, NULL); /* [MQTT-3.2.2-4] */
    cr_assert(n == 4 && b[2] == 0 && b[3] == 5);
    n = mqtt_encode_connack(b, sizeof(b), 5, 0, 0x87, NULL);
    cr_assert_eq(n, 5);
    cr_assert(memcmp(b, (uint8_t[]){0x20, 3, 0, 0x87, 0}, 5) == 0);

    pr.assigned_client_id = (struct mqtt_slice){(const uint8_t *)"auto-1", 6};
    pr.receive_maximum = 32;
    pr.maximum_packet_size = 1 << 20;
    pr.topic_alias_maximum = 10;
    pr.has_retain_available = 1;
    pr.retain_available = 1;
    pr.no_wildcard_subs = pr.no_subscription_ids = pr.no_shared_subs = 1;
    pr.has_server_keep_alive = 1;
    pr.server_keep_alive = 90;
    pr.reason_string = (struct mqtt_slice){(const uint8_t *)"ok", 2};
    n = mqtt_encode_connack(b, sizeof(b), 5, 1, 0, &pr);
    {
        static const uint8_t want[] = {0x20, 39,   1,    0,    36,   0x21, 0, 32,  0x25, 1,   0x27,
                                       0,    0x10, 0,    0,    0x12, 0,    6, 'a', 'u',  't', 'o',
                                       '-',  '1',  0x22, 0,    10,   0x1f, 0, 2,   'o',  'k', 0x28,
                                       0,    0x29, 0,    0x2a, 0,    0x13, 0, 90};
        cr_assert_eq(n, sizeof(want));
        cr_assert(memcmp(b, want, n) == 0);
    }
    check_caps(enc_connack5, &pr, n);

    /* the server's Session Expiry Interval, when it differs [MQTT-3.2.2.3.2] */
    struct mqtt_connack_props se = {.has_session_expiry = 1, .session_expiry = 604800};
    n = mqtt_encode_connack(b, sizeof(b), 5, 1, 0, &se);
    {
        static const uint8_t want[] = {0x20, 8, 1, 0, 5, 0x11, 0, 0x09, 0x3a, 0x80};
        cr_assert_eq(n, sizeof(want));
        cr_assert(memcmp(b, want, n) == 0);
    }
    check_caps(enc_connack5, &se, n);
}

static size_t enc_ack(uint8_t *o, size_t cap, const void *arg)
{
    (void)arg;
    return mqtt_encode_ack(o, cap, 5, MQTT_PUBREC, 0x0102, 0x97);
}

Test(mqtt, MQTT_3_4_acks_round_trip)
{
    uint8_t b[16];

    cr_assert_eq(mqtt_encode_ack(b, sizeof(b), 4, MQTT_PUBACK, 0x1234, 0x80), 4);
    cr_assert(memcmp(b, (uint8_t[]){0x40, 2, 0x12, 0x34}, 4) == 0);
    cr_assert_eq(mqtt_encode_ack(b, sizeof(b), 5, MQTT_PUBACK, 7, 0), 4);
    cr_assert(memcmp(b, (uint8_t[]){0x40, 2, 0, 7}, 4) == 0);
    cr_assert_eq(mqtt_encode_ack(b, sizeof(b), 5, MQTT_PUBREC, 0x0102, 0x97), 5);
    cr_assert(memcmp(b, (uint8_t[]){0x50, 3, 1, 2, 0x97}, 5) == 0);
    cr_assert_eq(mqtt_encode_ack(b, sizeof(b), 4, MQTT_PUBREL, 1, 0), 4);
    cr_assert_eq(b[0], 0x62);
    cr_assert_eq(mqtt_encode_ack(b, sizeof(b), 5, MQTT_PUBCOMP, 1, 0x92), 5);
    cr_assert(memcmp(b, (uint8_t[]){0x70, 3, 0, 1, 0x92}, 5) == 0);
    cr_assert_eq(mqtt_encode_ack(b, sizeof(b), 5, MQTT_PUBLISH, 1, 0), 0);
    check_caps(enc_ack, NULL, 5);
    /* what we encode, we parse */
    cr_assert_eq(parse(b, 5, 5), 5);
    cr_assert_eq(pk.reason, 0x92);
}

Test(mqtt, MQTT_3_9_suback_round_trip)
{
    uint8_t b[64];
    size_t n;

    cr_assert_eq(parse(B(0x82, 11, 0, 5, 0, 1, 'a', 0, 0, 2, 'b', '/', 1), 4), 13);
    n = mqtt_encode_suback(b, sizeof(b), 4, &pk);
    cr_assert_eq(n, 6);
    cr_assert(memcmp(b, (uint8_t[]){0x90, 4, 0, 5, 0x80, 0x80}, 6) == 0);
    cr_assert_eq(parse(B(0x82, 22, 0, 6, 0, 0, 1, 'a', 0, 0, 12, '$', 's', 'h', 'a', 'r', 'e', '/',
                         'g', '/', 'x', '/', '#', 1),
                       5),
                 24);
    n = mqtt_encode_suback(b, sizeof(b), 5, &pk);
    cr_assert_eq(n, 7);
    cr_assert(memcmp(b, (uint8_t[]){0x90, 5, 0, 6, 0, 0x87, 0x9e}, 7) == 0);
    for (size_t cap = 0; cap < n; cap++)
        cr_assert_eq(mqtt_encode_suback(b, cap, 5, &pk), 0);
    cr_assert_eq(mqtt_encode_unsuback(b, sizeof(b), 5, &pk), 0); /* not an UNSUBSCRIBE */
}

Test(mqtt, MQTT_3_11_unsuback_round_trip)
{
    uint8_t b[64];

    cr_assert_eq(parse(B(0xa2, 8, 0, 9, 0, 1, 'a', 0, 1, 'b'), 4), 10);
    cr_assert_eq(mqtt_encode_unsuback(b, sizeof(b), 4, &pk), 4);
    cr_assert(memcmp(b, (uint8_t[]){0xb0, 2, 0, 9}, 4) == 0);
    cr_assert_eq(parse(B(0xa2, 9, 0, 9, 0, 0, 1, 'a', 0, 1, 'b'), 5), 11);
    cr_assert_eq(mqtt_encode_unsuback(b, sizeof(b), 5, &pk), 7);
    cr_assert(memcmp(b, (uint8_t[]){0xb0, 5, 0, 9, 0, 0x11, 0x11}, 7) == 0);
    cr_assert_eq(mqtt_encode_unsuback(b, 6, 5, &pk), 0);
}

Test(mqtt, MQTT_3_13_pingresp_and_3_14_disconnect_round_trip)
{
    uint8_t b[64];

    cr_assert_eq(mqtt_encode_pingresp(b, sizeof(b)), 2);
    cr_assert(b[0] == 0xd0 && b[1] == 0);
    cr_assert_eq(mqtt_encode_pingresp(b, 1), 0);
    cr_assert_eq(mqtt_encode_disconnect(b, sizeof(b), 4, 0x81, "x"), 0);
    cr_assert_eq(mqtt_encode_disconnect(b, sizeof(b), 5, 0, NULL), 2);
    cr_assert(b[0] == 0xe0 && b[1] == 0);
    cr_assert_eq(mqtt_encode_disconnect(b, sizeof(b), 5, 0x81, NULL), 3);
    cr_assert(memcmp(b, (uint8_t[]){0xe0, 1, 0x81}, 3) == 0);
    cr_assert_eq(mqtt_encode_disconnect(b, sizeof(b), 5, 0x95, "too big"), 14);
    cr_assert(memcmp(b,
                     (uint8_t[]){0xe0, 12, 0x95, 10, 0x1f, 0, 7, 't', 'o', 'o', ' ', 'b', 'i', 'g'},
                     14) == 0);
    for (size_t cap = 0; cap < 14; cap++)
        cr_assert_eq(mqtt_encode_disconnect(b, cap, 5, 0x95, "too big"), 0);
}

Test(mqtt, reason_texts_and_v4_connack_codes)
{
    cr_assert_str_eq(mqtt_reason_text(0x81), "Malformed Packet");
    cr_assert_str_eq(mqtt_reason_text(0x42), "Unknown reason code");
    cr_assert_eq(mqtt_connack_v4_code(0x86), 0x04);
    cr_assert_eq(mqtt_connack_v4_code(0x87), 0x05);
    cr_assert_eq(mqtt_connack_v4_code(0x81), 0xff);
}
