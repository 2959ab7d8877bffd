/* protocols/mqtt.c — MQTT 3.1.1 / 5.0 server-side parser and encoder.
 *
 * Design notes (the contract is in mqtt.h):
 * - A packet is parsed only once it is complete (mqtt_peek tells how long it is),
 *   so the parser is a single forward pass over a bounded reader and needs no
 *   resumable state: every read is bound-checked against the end of the remaining
 *   length, and running out inside it is a Malformed Packet, never a wait.
 * - Reason codes follow the spec's wording: what 2.2.2.2 / 1.5 call malformed is
 *   0x81 (bad encoding, a property identifier not valid for the packet), what the
 *   normative statements call a Protocol Error is 0x82 (duplicates, 0 values,
 *   forbidden combinations). Mosquitto answers some of the former with 0x82; both
 *   close the connection.
 * - Topic names and filters also refuse the control characters U+0001..U+001F
 *   and U+007F..U+009F, which 1.5.4 lets a receiver treat as malformed: topics are
 *   recorded with readings and end up in logs and NATS headers.
 */
#include "protocols/mqtt.h"

#include <string.h>

struct rd {
    const uint8_t *p, *end;
    struct mqtt_packet *out;
    unsigned v5 : 1;
};

/* Records the first failure (the reason the peer is told) and returns its code. */
static int fail(struct rd *r, int code, const char *why)
{
    if (!r->out->error) {
        r->out->error = why;
        r->out->reason = (uint8_t)-code;
    }
    return code;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ < 0) return rc_;                                                                   \
    } while (0)

static size_t left(const struct rd *r)
{
    return (size_t)(r->end - r->p);
}

static int rd_u8(struct rd *r, uint8_t *v, const char *what)
{
    if (left(r) < 1) return fail(r, MQTT_E_MALFORMED, what);
    *v = *r->p++;
    return 0;
}

static int rd_u16(struct rd *r, uint16_t *v, const char *what)
{
    if (left(r) < 2) return fail(r, MQTT_E_MALFORMED, what);
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v, const char *what)
{
    if (left(r) < 4) return fail(r, MQTT_E_MALFORMED, what);
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    return 0;
}

/* Variable Byte Integer (1.5.5): at most 4 bytes, minimally encoded
 * [MQTT-1.5.5-1] — a last byte of 0 after a continuation is an overlong form. */
static int vbi(const uint8_t *p, size_t n, uint32_t *v, size_t *used)
{
    uint32_t x = 0;

    for (size_t i = 0; i < 4; i++) {
        if (i >= n) return MQTT_INCOMPLETE;
        x |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0) return MQTT_E_MALFORMED;
            *v = x;
            *used = i + 1;
            return 0;
        }
    }
    return MQTT_E_MALFORMED;
}

static int rd_vbi(struct rd *r, uint32_t *v, const char *what)
{
    size_t used;
    if (vbi(r->p, left(r), v, &used) != 0) return fail(r, MQTT_E_MALFORMED, what);
    r->p += used;
    return 0;
}

/* UTF-8 as RFC 3629 (no overlongs, no surrogates, <= U+10FFFF) [MQTT-1.5.4-1],
 * no U+0000 [MQTT-1.5.4-2]; with topic != 0 also no C0/C1 controls or DEL.
 * Returns 0 or a short reason. */
static const char *utf8_bad(const uint8_t *s, size_t n, int topic)
{
    size_t i = 0;

    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xbf;

        if (c < 0x80) {
            if (c == 0) return "U+0000 in a UTF-8 string";
            if (topic && (c < 0x20 || c == 0x7f)) return "control character in a topic";
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            if (topic && c == 0xc2 && i + 1 < n && s[i + 1] <= 0x9f)
                return "control character in a topic";
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f; /* U+D800..DFFF are surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return "ill-formed UTF-8";
        }
        if (n - i <= k) return "ill-formed UTF-8";
        if (s[i + 1] < lo || s[i + 1] > hi) return "ill-formed UTF-8";
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return "ill-formed UTF-8";
        i += k + 1;
    }
    return NULL;
}

static int rd_bin(struct rd *r, struct mqtt_slice *s, const char *what)
{
    uint16_t n;
    TRY(rd_u16(r, &n, what));
    if (left(r) < n) return fail(r, MQTT_E_MALFORMED, what);
    s->p = r->p;
    s->n = n;
    r->p += n;
    return 0;
}

static int rd_str(struct rd *r, struct mqtt_slice *s, const char *what)
{
    const char *bad;
    TRY(rd_bin(r, s, what));
    bad = utf8_bad(s->p, s->n, 0);
    return bad ? fail(r, MQTT_E_MALFORMED, bad) : 0;
}

static int has_wildcard(struct mqtt_slice s)
{
    return memchr(s.p, '+', s.n) || memchr(s.p, '#', s.n);
}

/* ---- properties (2.2.2) ---------------------------------------------------------- */

#define BIT(id) ((uint64_t)1 << (id))

/* What a client may send in each packet (the tables of 3.x.2.2). */
static const uint64_t allow_connect =
    BIT(MQTT_PROP_SESSION_EXPIRY) | BIT(MQTT_PROP_RECEIVE_MAXIMUM) |
    BIT(MQTT_PROP_MAXIMUM_PACKET_SIZE) | BIT(MQTT_PROP_TOPIC_ALIAS_MAXIMUM) |
    BIT(MQTT_PROP_REQUEST_RESPONSE_INFO) | BIT(MQTT_PROP_REQUEST_PROBLEM_INFO) |
    BIT(MQTT_PROP_USER) | BIT(MQTT_PROP_AUTH_METHOD) | BIT(MQTT_PROP_AUTH_DATA);
static const uint64_t allow_will = BIT(MQTT_PROP_WILL_DELAY) | BIT(MQTT_PROP_PAYLOAD_FORMAT) |
                                   BIT(MQTT_PROP_MESSAGE_EXPIRY) | BIT(MQTT_PROP_CONTENT_TYPE) |
                                   BIT(MQTT_PROP_RESPONSE_TOPIC) | BIT(MQTT_PROP_CORRELATION_DATA) |
                                   BIT(MQTT_PROP_USER);
/* Subscription Identifier is decoded in a PUBLISH so that its absence of
 * validity is a Protocol Error [MQTT-3.3.4-6], not a Malformed Packet. */
static const uint64_t allow_publish =
    BIT(MQTT_PROP_PAYLOAD_FORMAT) | BIT(MQTT_PROP_MESSAGE_EXPIRY) | BIT(MQTT_PROP_TOPIC_ALIAS) |
    BIT(MQTT_PROP_RESPONSE_TOPIC) | BIT(MQTT_PROP_CORRELATION_DATA) | BIT(MQTT_PROP_USER) |
    BIT(MQTT_PROP_SUBSCRIPTION_ID) | BIT(MQTT_PROP_CONTENT_TYPE);
static const uint64_t allow_ack = BIT(MQTT_PROP_REASON_STRING) | BIT(MQTT_PROP_USER);
static const uint64_t allow_subscribe = BIT(MQTT_PROP_SUBSCRIPTION_ID) | BIT(MQTT_PROP_USER);
static const uint64_t allow_unsubscribe = BIT(MQTT_PROP_USER);
static const uint64_t allow_disconnect = BIT(MQTT_PROP_SESSION_EXPIRY) |
                                         BIT(MQTT_PROP_REASON_STRING) | BIT(MQTT_PROP_USER) |
                                         BIT(MQTT_PROP_SERVER_REFERENCE);
static const uint64_t allow_auth = BIT(MQTT_PROP_AUTH_METHOD) | BIT(MQTT_PROP_AUTH_DATA) |
                                   BIT(MQTT_PROP_REASON_STRING) | BIT(MQTT_PROP_USER);

enum ptype { P_NONE, P_BYTE, P_U16, P_U32, P_VBI, P_STR, P_BIN, P_PAIR };

static enum ptype prop_type(uint32_t id)
{
    switch (id) {
    case MQTT_PROP_PAYLOAD_FORMAT:
    case MQTT_PROP_REQUEST_PROBLEM_INFO:
    case MQTT_PROP_REQUEST_RESPONSE_INFO:
    case MQTT_PROP_MAXIMUM_QOS:
    case MQTT_PROP_RETAIN_AVAILABLE:
    case MQTT_PROP_WILDCARD_AVAILABLE:
    case MQTT_PROP_SUB_ID_AVAILABLE:
    case MQTT_PROP_SHARED_AVAILABLE:
        return P_BYTE;
    case MQTT_PROP_SERVER_KEEP_ALIVE:
    case MQTT_PROP_RECEIVE_MAXIMUM:
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
    case MQTT_PROP_TOPIC_ALIAS:
        return P_U16;
    case MQTT_PROP_MESSAGE_EXPIRY:
    case MQTT_PROP_SESSION_EXPIRY:
    case MQTT_PROP_WILL_DELAY:
    case MQTT_PROP_MAXIMUM_PACKET_SIZE:
        return P_U32;
    case MQTT_PROP_SUBSCRIPTION_ID:
        return P_VBI;
    case MQTT_PROP_CONTENT_TYPE:
    case MQTT_PROP_RESPONSE_TOPIC:
    case MQTT_PROP_ASSIGNED_CLIENT_ID:
    case MQTT_PROP_AUTH_METHOD:
    case MQTT_PROP_RESPONSE_INFO:
    case MQTT_PROP_SERVER_REFERENCE:
    case MQTT_PROP_REASON_STRING:
        return P_STR;
    case MQTT_PROP_CORRELATION_DATA:
    case MQTT_PROP_AUTH_DATA:
        return P_BIN;
    case MQTT_PROP_USER:
        return P_PAIR;
    default:
        return P_NONE;
    }
}

/* Reads a property block (length + properties) into pr, checking each against
 * the allowed set and the value rules of 3.x.2.2. */
static int rd_props(struct rd *r, struct mqtt_props *pr, uint64_t allowed)
{
    uint32_t len;
    struct rd s;

    TRY(rd_vbi(r, &len, "property length"));
    if (left(r) < len) return fail(r, MQTT_E_MALFORMED, "property length beyond the packet");
    pr->raw.p = r->p;
    pr->raw.n = len;
    s.p = r->p;
    s.end = r->p + len;
    s.out = r->out;
    s.v5 = 1;
    r->p += len;

    while (s.p < s.end) {
        uint32_t id, u32 = 0;
        uint16_t u16 = 0;
        uint8_t u8 = 0;
        struct mqtt_slice str = {0}, val = {0};
        enum ptype t;

        TRY(rd_vbi(&s, &id, "property identifier"));
        t = prop_type(id);
        if (t == P_NONE) return fail(r, MQTT_E_MALFORMED, "unknown property identifier");
        switch (t) {
        case P_BYTE:
            TRY(rd_u8(&s, &u8, "truncated property"));
            break;
        case P_U16:
            TRY(rd_u16(&s, &u16, "truncated property"));
            break;
        case P_U32:
            TRY(rd_u32(&s, &u32, "truncated property"));
            break;
        case P_VBI:
            TRY(rd_vbi(&s, &u32, "bad variable byte integer in a property"));
            break;
        case P_STR:
            TRY(rd_str(&s, &str, "truncated property"));
            break;
        case P_BIN:
            TRY(rd_bin(&s, &str, "truncated property"));
            break;
        case P_PAIR:
            TRY(rd_str(&s, &str, "truncated user property"));
            TRY(rd_str(&s, &val, "truncated user property"));
            break;
        case P_NONE:
            break;
        }
        /* 2.2.2.2: an identifier not valid for the packet type is malformed */
        if (!(allowed & BIT(id))) return fail(r, MQTT_E_MALFORMED, "property not allowed here");
        if (id == MQTT_PROP_USER) {
            pr->user_count++;
            continue;
        }
        if (pr->present & BIT(id)) return fail(r, MQTT_E_PROTOCOL, "duplicated property");
        pr->present |= BIT(id);
        switch (id) {
        case MQTT_PROP_PAYLOAD_FORMAT:
            if (u8 > 1) return fail(r, MQTT_E_PROTOCOL, "payload format indicator not 0/1");
            pr->payload_format = u8;
            break;
        case MQTT_PROP_REQUEST_PROBLEM_INFO:
            if (u8 > 1) return fail(r, MQTT_E_PROTOCOL, "request problem information not 0/1");
            pr->request_problem_info = u8;
            break;
        case MQTT_PROP_REQUEST_RESPONSE_INFO:
            if (u8 > 1) return fail(r, MQTT_E_PROTOCOL, "request response information not 0/1");
            pr->request_response_info = u8;
            break;
        case MQTT_PROP_RECEIVE_MAXIMUM:
            if (u16 == 0) return fail(r, MQTT_E_PROTOCOL, "receive maximum 0");
            pr->receive_maximum = u16;
            break;
        case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
            pr->topic_alias_maximum = u16;
            break;
        case MQTT_PROP_TOPIC_ALIAS:
            /* [MQTT-3.3.2-8]: 0 is not a valid alias */
            if (u16 == 0) return fail(r, MQTT_E_TOPIC_ALIAS, "topic alias 0");
            pr->topic_alias = u16;
            break;
        case MQTT_PROP_MESSAGE_EXPIRY:
            pr->message_expiry = u32;
            break;
        case MQTT_PROP_SESSION_EXPIRY:
            pr->session_expiry = u32;
            break;
        case MQTT_PROP_WILL_DELAY:
            pr->will_delay = u32;
            break;
        case MQTT_PROP_MAXIMUM_PACKET_SIZE:
            if (u32 == 0) return fail(r, MQTT_E_PROTOCOL, "maximum packet size 0");
            pr->maximum_packet_size = u32;
            break;
        case MQTT_PROP_SUBSCRIPTION_ID:
            if (u32 == 0) return fail(r, MQTT_E_PROTOCOL, "subscription identifier 0");
            pr->subscription_id = u32;
            break;
        case MQTT_PROP_CONTENT_TYPE:
            pr->content_type = str;
            break;
        case MQTT_PROP_RESPONSE_TOPIC:
            /* [MQTT-3.3.2-14]: a Topic Name, so no wildcards */
            if (has_wildcard(str) || str.n == 0)
                return fail(r, MQTT_E_PROTOCOL, "response topic is not a topic name");
            pr->response_topic = str;
            break;
        case MQTT_PROP_CORRELATION_DATA:
            pr->correlation_data = str;
            break;
        case MQTT_PROP_AUTH_METHOD:
            pr->auth_method = str;
            break;
        case MQTT_PROP_AUTH_DATA:
            pr->auth_data = str;
            break;
        case MQTT_PROP_REASON_STRING:
            pr->reason_string = str;
            break;
        case MQTT_PROP_SERVER_REFERENCE:
            pr->server_reference = str;
            break;
        default:
            break;
        }
    }
    if (MQTT_HAS(pr, MQTT_PROP_AUTH_DATA) && !MQTT_HAS(pr, MQTT_PROP_AUTH_METHOD))
        return fail(r, MQTT_E_PROTOCOL, "authentication data without method");
    return 0;
}

static int payload_format_ok(struct rd *r, const struct mqtt_props *pr, struct mqtt_slice pl)
{
    /* 3.3.2.3.2: a receiver MAY check a payload announced as UTF-8 */
    if (MQTT_HAS(pr, MQTT_PROP_PAYLOAD_FORMAT) && pr->payload_format == 1 &&
        utf8_bad(pl.p, pl.n, 0))
        return fail(r, MQTT_E_PAYLOAD_FORMAT, "payload is not the UTF-8 it claims to be");
    return 0;
}

static int at_end(struct rd *r)
{
    return r->p == r->end ? 0 : fail(r, MQTT_E_MALFORMED, "bytes after the end of the packet");
}

/* ---- packets --------------------------------------------------------------------- */

static int parse_connect(struct rd *r)
{
    struct mqtt_packet *o = r->out;
    struct mqtt_connect *c = &o->connect;
    struct mqtt_slice name;
    uint8_t f;

    if (o->flags != 0) return fail(r, MQTT_E_MALFORMED, "CONNECT flags not 0 [MQTT-2.2.2-2]");
    TRY(rd_bin(r, &name, "truncated protocol name"));
    TRY(rd_u8(r, &c->level, "truncated protocol level"));
    if (name.n == 6 && memcmp(name.p, "MQIsdp", 6) == 0)
        return fail(r, MQTT_E_VERSION, "MQTT 3.1 (MQIsdp) is not supported");
    if (name.n != 4 || memcmp(name.p, "MQTT", 4) != 0)
        return fail(r, MQTT_E_MALFORMED, "protocol name is not MQTT [MQTT-3.1.2-1]");
    if (c->level != 4 && c->level != 5)
        return fail(r, MQTT_E_VERSION, "unsupported protocol level [MQTT-3.1.2-2]");
    r->v5 = c->level == 5;
    TRY(rd_u8(r, &f, "truncated connect flags"));
    c->flags = f;
    if (f & 0x01) return fail(r, MQTT_E_MALFORMED, "reserved connect flag set [MQTT-3.1.2-3]");
    c->clean_start = (f >> 1) & 1;
    c->will = (f >> 2) & 1;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = (f >> 5) & 1;
    c->has_password = (f >> 6) & 1;
    c->has_username = (f >> 7) & 1;
    if (c->will_qos == 3) return fail(r, MQTT_E_MALFORMED, "will QoS 3 [MQTT-3.1.2-14]");
    if (!c->will && (c->will_qos || c->will_retain))
        return fail(r, MQTT_E_MALFORMED, "will QoS/retain without will flag [MQTT-3.1.2-11]");
    if (!r->v5 && c->has_password && !c->has_username)
        return fail(r, MQTT_E_MALFORMED, "password without user name [MQTT-3.1.2-22]");
    TRY(rd_u16(r, &c->keepalive, "truncated keep alive"));
    if (r->v5) TRY(rd_props(r, &o->props, allow_connect));
    /* [MQTT-3.1.3-4]: a UTF-8 string; [MQTT-3.1.3-5] lets the server refuse more
     * than 0-9a-zA-Z. Control characters are refused: the id lands in logs. */
    TRY(rd_str(r, &c->client_id, "truncated client identifier"));
    if (utf8_bad(c->client_id.p, c->client_id.n, 1))
        return fail(r, MQTT_E_CLIENT_ID, "control character in the client identifier");
    if (c->will) {
        if (r->v5) TRY(rd_props(r, &c->will_props, allow_will));
        TRY(rd_str(r, &c->will_topic, "truncated will topic"));
        if (utf8_bad(c->will_topic.p, c->will_topic.n, 1) || c->will_topic.n == 0 ||
            has_wildcard(c->will_topic))
            return fail(r, MQTT_E_TOPIC_NAME, "invalid will topic");
        TRY(rd_bin(r, &c->will_payload, "truncated will payload"));
        TRY(payload_format_ok(r, &c->will_props, c->will_payload));
    }
    if (c->has_username) {
        TRY(rd_str(r, &c->username, "truncated user name"));
        /* a device label here, which may reach logs like the client id */
        if (utf8_bad(c->username.p, c->username.n, 1))
            return fail(r, MQTT_E_MALFORMED, "control character in the user name");
    }
    if (c->has_password) TRY(rd_bin(r, &c->password, "truncated password"));
    TRY(at_end(r));
    /* [MQTT-3.1.3-8]: v3.1.1 assigns no identifier to a session to be resumed */
    if (!r->v5 && c->client_id.n == 0 && !c->clean_start)
        return fail(r, MQTT_E_CLIENT_ID, "empty client identifier without clean session");
    return 0;
}

static int parse_publish(struct rd *r)
{
    struct mqtt_packet *o = r->out;
    struct mqtt_publish *pb = &o->publish;
    const char *bad;

    pb->retain = o->flags & 1;
    pb->qos = (o->flags >> 1) & 3;
    pb->dup = (o->flags >> 3) & 1;
    if (pb->qos == 3) return fail(r, MQTT_E_MALFORMED, "PUBLISH QoS 3 [MQTT-3.3.1-4]");
    if (pb->qos == 0 && pb->dup)
        return fail(r, r->v5 ? MQTT_E_PROTOCOL : MQTT_E_MALFORMED,
                    "DUP set on QoS 0 [MQTT-3.3.1-2]");
    TRY(rd_bin(r, &pb->topic, "truncated topic name"));
    bad = utf8_bad(pb->topic.p, pb->topic.n, 1);
    if (bad) return fail(r, MQTT_E_MALFORMED, bad);
    if (has_wildcard(pb->topic))
        return fail(r, MQTT_E_TOPIC_NAME, "wildcard in topic name [MQTT-3.3.2-2]");
    if (pb->qos > 0) {
        TRY(rd_u16(r, &o->packet_id, "truncated packet identifier"));
        if (o->packet_id == 0)
            return fail(r, r->v5 ? MQTT_E_PROTOCOL : MQTT_E_MALFORMED,
                        "packet identifier 0 [MQTT-2.2.1-3]");
    }
    if (r->v5) {
        TRY(rd_props(r, &o->props, allow_publish));
        if (MQTT_HAS(&o->props, MQTT_PROP_SUBSCRIPTION_ID))
            return fail(r, MQTT_E_PROTOCOL, "subscription identifier from a client [MQTT-3.3.4-6]");
    }
    if (pb->topic.n == 0 && !MQTT_HAS(&o->props, MQTT_PROP_TOPIC_ALIAS))
        return fail(r, r->v5 ? MQTT_E_PROTOCOL : MQTT_E_MALFORMED,
                    "empty topic name without topic alias [MQTT-4.7.3-1]");
    pb->payload.p = r->p;
    pb->payload.n = left(r);
    r->p = r->end;
    return payload_format_ok(r, &o->props, pb->payload);
}

static int reason_ok(uint8_t type, uint8_t rc)
{
    switch (type) {
    case MQTT_PUBACK:
    case MQTT_PUBREC:
        return rc == 0x00 || rc == 0x10 || rc == 0x80 || rc == 0x83 || rc == 0x87 || rc == 0x90 ||
               rc == 0x91 || rc == 0x97 || rc == 0x99;
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return rc == 0x00 || rc == 0x92;
    case MQTT_DISCONNECT: /* the codes 3.14.2.1 lets a client send */
        return rc == 0x00 || rc == 0x04 || rc == 0x80 || rc == 0x81 || rc == 0x82 || rc == 0x83 ||
               rc == 0x90 || rc == 0x93 || rc == 0x94 || rc == 0x95 || rc == 0x96 || rc == 0x97 ||
               rc == 0x98 || rc == 0x99;
    case MQTT_AUTH: /* 0x00 is the server's "success"; clients continue or re-authenticate */
        return rc == 0x18 || rc == 0x19;
    default:
        return 0;
    }
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP: packet id, then in v5 an optional reason code
 * and optional properties, as far as the remaining length goes (3.4.2.1). */
static int parse_ack(struct rd *r)
{
    struct mqtt_packet *o = r->out;

    if (o->flags != (o->type == MQTT_PUBREL ? 2 : 0))
        return fail(r, MQTT_E_MALFORMED, "reserved fixed header flags [MQTT-2.2.2-2]");
    TRY(rd_u16(r, &o->packet_id, "truncated packet identifier"));
    if (o->packet_id == 0)
        return fail(r, r->v5 ? MQTT_E_PROTOCOL : MQTT_E_MALFORMED, "packet identifier 0");
    if (r->v5 && left(r) > 0) {
        TRY(rd_u8(r, &o->reason, "truncated reason code"));
        if (!reason_ok(o->type, o->reason)) {
            o->reason = 0;
            return fail(r, MQTT_E_PROTOCOL, "reason code not valid here");
        }
        if (left(r) > 0) TRY(rd_props(r, &o->props, allow_ack));
    }
    return at_end(r);
}

/* Topic filter rules of 4.7.1 / 4.7.3 and, in v5, the shared form of 4.8.2. */
static const char *filter_bad(struct mqtt_slice f, int v5)
{
    const char *bad = utf8_bad(f.p, f.n, 1);

    if (bad) return bad;
    if (f.n == 0) return "empty topic filter [MQTT-4.7.3-1]";
    for (size_t i = 0; i < f.n; i++) {
        int starts = i == 0 || f.p[i - 1] == '/';
        int ends = i + 1 == f.n || f.p[i + 1] == '/';
        if (f.p[i] == '#' && !(starts && i + 1 == f.n))
            return "'#' not alone at the end [MQTT-4.7.1-2]";
        if (f.p[i] == '+' && !(starts && ends)) return "'+' not alone in a level [MQTT-4.7.1-3]";
    }
    if (v5 && f.n >= 7 && memcmp(f.p, "$share/", 7) == 0) {
        const uint8_t *name = f.p + 7, *slash = memchr(name, '/', f.n - 7);
        if (!slash || slash == name || slash + 1 == f.p + f.n)
            return "shared subscription without share name and filter [MQTT-4.8.2-1]";
        for (const uint8_t *q = name; q < slash; q++)
            if (*q == '+' || *q == '#') return "wildcard in share name [MQTT-4.8.2-2]";
    }
    return NULL;
}

static int is_shared(struct mqtt_slice f)
{
    return f.n >= 7 && memcmp(f.p, "$share/", 7) == 0;
}

static int parse_subscribe(struct rd *r, int sub)
{
    struct mqtt_packet *o = r->out;

    if (o->flags != 2) return fail(r, MQTT_E_MALFORMED, "fixed header flags not 2 [MQTT-3.8.1-1]");
    TRY(rd_u16(r, &o->packet_id, "truncated packet identifier"));
    if (o->packet_id == 0)
        return fail(r, r->v5 ? MQTT_E_PROTOCOL : MQTT_E_MALFORMED, "packet identifier 0");
    if (r->v5) TRY(rd_props(r, &o->props, sub ? allow_subscribe : allow_unsubscribe));
    o->filters.raw.p = r->p;
    o->filters.raw.n = left(r);
    while (left(r) > 0) {
        struct mqtt_slice f;
        const char *bad;
        TRY(rd_bin(r, &f, "truncated topic filter"));
        bad = filter_bad(f, r->v5);
        if (bad) return fail(r, MQTT_E_MALFORMED, bad);
        if (sub) {
            uint8_t opt;
            TRY(rd_u8(r, &opt, "missing subscription options"));
            if ((opt & 3) == 3) return fail(r, MQTT_E_MALFORMED, "subscription QoS 3");
            if (!r->v5 && (opt & 0xfc))
                return fail(r, MQTT_E_MALFORMED, "reserved subscription bits [MQTT-3.8.3-4]");
            if (r->v5 && (opt & 0xc0))
                return fail(r, MQTT_E_MALFORMED, "reserved subscription bits [MQTT-3.8.3-5]");
            if (r->v5 && ((opt >> 4) & 3) == 3)
                return fail(r, MQTT_E_PROTOCOL, "retain handling 3");
            if (r->v5 && (opt & 4) && is_shared(f))
                return fail(r, MQTT_E_PROTOCOL, "no local on a shared subscription [MQTT-3.8.3-4]");
        }
        o->filters.count++;
    }
    if (o->filters.count == 0)
        return fail(r, r->v5 ? MQTT_E_PROTOCOL : MQTT_E_MALFORMED,
                    sub ? "SUBSCRIBE without topic filters [MQTT-3.8.3-3]"
                        : "UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]");
    return 0;
}

/* DISCONNECT and AUTH: v5 reason code and properties, both optional (3.14.2.1). */
static int parse_tail(struct rd *r, uint64_t allowed)
{
    struct mqtt_packet *o = r->out;

    if (o->flags != 0) return fail(r, MQTT_E_MALFORMED, "reserved fixed header flags");
    if (!r->v5) return at_end(r);
    if (left(r) > 0) {
        TRY(rd_u8(r, &o->reason, "truncated reason code"));
        if (!reason_ok(o->type, o->reason)) {
            o->reason = 0;
            return fail(r, MQTT_E_PROTOCOL, "reason code not valid here");
        }
        if (left(r) > 0) TRY(rd_props(r, &o->props, allowed));
    } else if (o->type == MQTT_AUTH) {
        /* an abbreviated AUTH means reason 0x00, which only the server sends */
        return fail(r, MQTT_E_PROTOCOL, "AUTH without a reason code");
    }
    return at_end(r);
}

int mqtt_peek(const uint8_t *p, size_t n, size_t *total)
{
    uint32_t rl;
    size_t used;
    int r;

    if (n < 1) return MQTT_INCOMPLETE;
    if ((p[0] >> 4) == 0) return MQTT_E_MALFORMED;
    r = vbi(p + 1, n - 1, &rl, &used);
    if (r != 0) return r;
    *total = 1 + used + rl;
    return 0;
}

int mqtt_parse(const uint8_t *p, size_t n, unsigned version, struct mqtt_packet *out)
{
    struct rd r;
    size_t total;
    int rc = mqtt_peek(p, n, &total);

    memset(out, 0, sizeof(*out));
    r.out = out;
    r.v5 = version == 5;
    if (rc == MQTT_INCOMPLETE || (rc == 0 && n < total)) return MQTT_INCOMPLETE;
    if (rc < 0) return fail(&r, MQTT_E_MALFORMED, "bad remaining length");
    out->type = p[0] >> 4;
    out->flags = p[0] & 0x0f;
    /* the varint was validated by mqtt_peek: skip the type byte and it */
    r.p = p + 1;
    while (*r.p & 0x80)
        r.p++;
    r.p++;
    r.end = p + total;

    if (version == 0 && out->type != MQTT_CONNECT)
        return fail(&r, MQTT_E_PROTOCOL, "first packet is not CONNECT [MQTT-3.1.0-1]");
    switch (out->type) {
    case MQTT_CONNECT:
        if (version != 0) return fail(&r, MQTT_E_PROTOCOL, "second CONNECT [MQTT-3.1.0-2]");
        rc = parse_connect(&r);
        break;
    case MQTT_PUBLISH:
        rc = parse_publish(&r);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        rc = parse_ack(&r);
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        rc = parse_subscribe(&r, out->type == MQTT_SUBSCRIBE);
        break;
    case MQTT_PINGREQ:
        rc = out->flags ? fail(&r, MQTT_E_MALFORMED, "reserved fixed header flags") : at_end(&r);
        break;
    case MQTT_DISCONNECT:
        rc = parse_tail(&r, allow_disconnect);
        break;
    case MQTT_AUTH:
        if (!r.v5) return fail(&r, MQTT_E_MALFORMED, "packet type 15 is reserved in MQTT 3.1.1");
        rc = parse_tail(&r, allow_auth);
        break;
    default:
        /* CONNACK, SUBACK, UNSUBACK, PINGRESP: well formed, wrong direction */
        if (out->flags) return fail(&r, MQTT_E_MALFORMED, "reserved fixed header flags");
        return fail(&r, MQTT_E_PROTOCOL, "packet type only a server sends");
    }
    return rc < 0 ? rc : (int)total;
}

/* ---- iteration ------------------------------------------------------------------- */

/* Skips one property at raw[*pos]; sets name/value for a User Property. Returns
 * the property id, or -1 at the end or on bytes that do not parse. */
static int next_prop(struct mqtt_slice raw, size_t *pos, struct mqtt_slice *a, struct mqtt_slice *b)
{
    struct mqtt_packet scratch;
    struct rd r;
    uint32_t id, u32;
    uint16_t u16;
    uint8_t u8;
    struct mqtt_slice x, y;

    if (!raw.p || *pos >= raw.n) return -1;
    scratch.error = NULL;
    r.p = raw.p + *pos;
    r.end = raw.p + raw.n;
    r.out = &scratch;
    if (rd_vbi(&r, &id, "") < 0) return -1;
    switch (prop_type(id)) {
    case P_BYTE:
        if (rd_u8(&r, &u8, "") < 0) return -1;
        break;
    case P_U16:
        if (rd_u16(&r, &u16, "") < 0) return -1;
        break;
    case P_U32:
        if (rd_u32(&r, &u32, "") < 0) return -1;
        break;
    case P_VBI:
        if (rd_vbi(&r, &u32, "") < 0) return -1;
        break;
    case P_STR:
    case P_BIN:
        if (rd_bin(&r, &x, "") < 0) return -1;
        break;
    case P_PAIR:
        if (rd_bin(&r, &x, "") < 0 || rd_bin(&r, &y, "") < 0) return -1;
        *a = x;
        *b = y;
        break;
    case P_NONE:
        return -1;
    }
    *pos = (size_t)(r.p - raw.p);
    return (int)id;
}

int mqtt_user_prop_next(const struct mqtt_props *props, size_t *pos, struct mqtt_slice *name,
                        struct mqtt_slice *value)
{
    int id;

    while ((id = next_prop(props->raw, pos, name, value)) >= 0)
        if (id == MQTT_PROP_USER) return 1;
    return 0;
}

int mqtt_filter_next(const struct mqtt_packet *pk, size_t *pos, struct mqtt_slice *filter,
                     uint8_t *options)
{
    struct mqtt_slice raw = pk->filters.raw;
    size_t need;

    if (pk->type != MQTT_SUBSCRIBE && pk->type != MQTT_UNSUBSCRIBE) return 0;
    if (!raw.p || *pos + 2 > raw.n) return 0;
    filter->n = (size_t)(raw.p[*pos] << 8 | raw.p[*pos + 1]);
    need = 2 + filter->n + (pk->type == MQTT_SUBSCRIBE);
    if (raw.n - *pos < need) return 0;
    filter->p = raw.p + *pos + 2;
    if (options) *options = pk->type == MQTT_SUBSCRIBE ? filter->p[filter->n] : 0;
    *pos += need;
    return 1;
}

uint8_t mqtt_suback_code(unsigned version, struct mqtt_slice filter)
{
    if (version != 5) return 0x80;
    if (filter_bad(filter, 1)) return 0x8F;
    if (is_shared(filter)) return 0x9E;
    return 0x87;
}

uint8_t mqtt_connack_v4_code(uint8_t reason)
{
    switch (reason) {
    case 0x00:
        return 0x00;
    case 0x84:
        return 0x01;
    case 0x85:
        return 0x02;
    case 0x88:
    case 0x89:
    case 0x97: /* quota exceeded: 3.1.1 can say only server unavailable */
        return 0x03;
    case 0x86:
        return 0x04;
    case 0x87:
    case 0x8C:
        return 0x05;
    default:
        return 0xFF;
    }
}

const char *mqtt_reason_text(uint8_t reason)
{
    switch (reason) {
    case 0x00:
        return "Success";
    case 0x04:
        return "Disconnect with Will Message";
    case 0x10:
        return "No matching subscribers";
    case 0x11:
        return "No subscription existed";
    case 0x18:
        return "Continue authentication";
    case 0x19:
        return "Re-authenticate";
    case 0x80:
        return "Unspecified error";
    case 0x81:
        return "Malformed Packet";
    case 0x82:
        return "Protocol Error";
    case 0x83:
        return "Implementation specific error";
    case 0x84:
        return "Unsupported Protocol Version";
    case 0x85:
        return "Client Identifier not valid";
    case 0x86:
        return "Bad User Name or Password";
    case 0x87:
        return "Not authorized";
    case 0x88:
        return "Server unavailable";
    case 0x89:
        return "Server busy";
    case 0x8A:
        return "Banned";
    case 0x8B:
        return "Server shutting down";
    case 0x8C:
        return "Bad authentication method";
    case 0x8D:
        return "Keep Alive timeout";
    case 0x8E:
        return "Session taken over";
    case 0x8F:
        return "Topic Filter invalid";
    case 0x90:
        return "Topic Name invalid";
    case 0x91:
        return "Packet Identifier in use";
    case 0x92:
        return "Packet Identifier not found";
    case 0x93:
        return "Receive Maximum exceeded";
    case 0x94:
        return "Topic Alias invalid";
    case 0x95:
        return "Packet too large";
    case 0x96:
        return "Message rate too high";
    case 0x97:
        return "Quota exceeded";
    case 0x98:
        return "Administrative action";
    case 0x99:
        return "Payload format invalid";
    case 0x9A:
        return "Retain not supported";
    case 0x9B:
        return "QoS not supported";
    case 0x9C:
        return "Use another server";
    case 0x9D:
        return "Server moved";
    case 0x9E:
        return "Shared Subscriptions not supported";
    case 0x9F:
        return "Connection rate exceeded";
    case 0xA0:
        return "Maximum connect time";
    case 0xA1:
        return "Subscription Identifiers not supported";
    case 0xA2:
        return "Wildcard Subscriptions not supported";
    default:
        return "Unknown reason code";
    }
}

/* ---- encoders -------------------------------------------------------------------- */

struct wr {
    uint8_t *p;
    size_t cap, n; /* n may run past cap: the length is known, nothing is written */
};

static void w_u8(struct wr *w, uint8_t v)
{
    if (w->n < w->cap) w->p[w->n] = v;
    w->n++;
}

static void w_u16(struct wr *w, uint16_t v)
{
    w_u8(w, (uint8_t)(v >> 8));
    w_u8(w, (uint8_t)v);
}

static void w_u32(struct wr *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v >> 16));
    w_u16(w, (uint16_t)v);
}

static size_t vbi_len(uint32_t v)
{
    return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

static void w_vbi(struct wr *w, uint32_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        w_u8(w, (uint8_t)(b | (v ? 0x80 : 0)));
    } while (v);
}

static void w_bytes(struct wr *w, const void *s, size_t n)
{
    if (w->n <= w->cap && n <= w->cap - w->n) memcpy(w->p + w->n, s, n);
    w->n += n;
}

static void w_str(struct wr *w, struct mqtt_slice s)
{
    w_u16(w, (uint16_t)s.n);
    w_bytes(w, s.p, s.n);
}

/* Writes fixed header + body produced by fill(), twice if needed: once to learn
 * the body length (cap 0), once for real. Bodies here are small, so the double
 * pass costs nothing and keeps each encoder a plain list of fields. */
typedef void (*fill_fn)(struct wr *w, const void *arg);

static size_t emit(uint8_t *out, size_t cap, uint8_t first, fill_fn fill, const void *arg)
{
    struct wr probe = {NULL, 0, 0}, w;
    size_t total;

    fill(&probe, arg);
    if (probe.n > MQTT_MAX_REMAINING) return 0;
    total = 1 + vbi_len((uint32_t)probe.n) + probe.n;
    if (!out || total > cap) return 0;
    w.p = out;
    w.cap = cap;
    w.n = 0;
    w_u8(&w, first);
    w_vbi(&w, (uint32_t)probe.n);
    fill(&w, arg);
    return w.n == total ? total : 0;
}

struct connack_args {
    unsigned v5;
    uint8_t sp, code;
    const struct mqtt_connack_props *pr;
};

static void connack_props(struct wr *w, const struct mqtt_connack_props *pr)
{
    if (!pr) return;
    if (pr->has_session_expiry) {
        w_u8(w, MQTT_PROP_SESSION_EXPIRY);
        w_u32(w, pr->session_expiry);
    }
    if (pr->receive_maximum) {
        w_u8(w, MQTT_PROP_RECEIVE_MAXIMUM);
        w_u16(w, pr->receive_maximum);
    }
    if (pr->has_retain_available) {
        w_u8(w, MQTT_PROP_RETAIN_AVAILABLE);
        w_u8(w, pr->retain_available);
    }
    if (pr->maximum_packet_size) {
        w_u8(w, MQTT_PROP_MAXIMUM_PACKET_SIZE);
        w_u32(w, pr->maximum_packet_size);
    }
    if (pr->assigned_client_id.n) {
        w_u8(w, MQTT_PROP_ASSIGNED_CLIENT_ID);
        w_str(w, pr->assigned_client_id);
    }
    if (pr->topic_alias_maximum) {
        w_u8(w, MQTT_PROP_TOPIC_ALIAS_MAXIMUM);
        w_u16(w, pr->topic_alias_maximum);
    }
    if (pr->reason_string.n) {
        w_u8(w, MQTT_PROP_REASON_STRING);
        w_str(w, pr->reason_string);
    }
    if (pr->no_wildcard_subs) {
        w_u8(w, MQTT_PROP_WILDCARD_AVAILABLE);
        w_u8(w, 0);
    }
    if (pr->no_subscription_ids) {
        w_u8(w, MQTT_PROP_SUB_ID_AVAILABLE);
        w_u8(w, 0);
    }
    if (pr->no_shared_subs) {
        w_u8(w, MQTT_PROP_SHARED_AVAILABLE);
        w_u8(w, 0);
    }
    if (pr->has_server_keep_alive) {
        w_u8(w, MQTT_PROP_SERVER_KEEP_ALIVE);
        w_u16(w, pr->server_keep_alive);
    }
}

static void fill_connack(struct wr *w, const void *arg)
{
    const struct connack_args *a = arg;

    w_u8(w, a->sp);
    w_u8(w, a->code);
    if (a->v5) {
        struct wr probe = {NULL, 0, 0};
        connack_props(&probe, a->pr);
        w_vbi(w, (uint32_t)probe.n);
        connack_props(w, a->pr);
    }
}

size_t mqtt_encode_connack(uint8_t *out, size_t cap, unsigned version, int session_present,
                           uint8_t code, const struct mqtt_connack_props *props)
{
    struct connack_args a;

    if (props && (props->assigned_client_id.n > 0xffff || props->reason_string.n > 0xffff))
        return 0;
    a.v5 = version == 5;
    a.sp = session_present && code == 0 ? 1 : 0;
    a.code = code;
    a.pr = props;
    return emit(out, cap, MQTT_CONNACK << 4, fill_connack, &a);
}

struct ack_args {
    unsigned v5;
    uint16_t id;
    uint8_t reason;
};

static void fill_ack(struct wr *w, const void *arg)
{
    const struct ack_args *a = arg;

    w_u16(w, a->id);
    if (a->v5 && a->reason) w_u8(w, a->reason);
}

size_t mqtt_encode_ack(uint8_t *out, size_t cap, unsigned version, uint8_t type, uint16_t packet_id,
                       uint8_t reason)
{
    struct ack_args a = {version == 5, packet_id, reason};

    if (type < MQTT_PUBACK || type > MQTT_PUBCOMP) return 0;
    return emit(out, cap, (uint8_t)(type << 4 | (type == MQTT_PUBREL ? 2 : 0)), fill_ack, &a);
}

struct subacks_args {
    unsigned version;
    const struct mqtt_packet *pk;
};

static void fill_suback(struct wr *w, const void *arg)
{
    const struct subacks_args *a = arg;
    struct mqtt_slice f;
    size_t pos = 0;

    w_u16(w, a->pk->packet_id);
    if (a->version == 5) w_u8(w, 0); /* no properties */
    while (mqtt_filter_next(a->pk, &pos, &f, NULL)) {
        if (a->pk->type == MQTT_SUBSCRIBE)
            w_u8(w, mqtt_suback_code(a->version, f));
        else if (a->version == 5)
            w_u8(w, 0x11);
    }
}

size_t mqtt_encode_suback(uint8_t *out, size_t cap, unsigned version,
                          const struct mqtt_packet *subscribe)
{
    struct subacks_args a = {version, subscribe};

    if (!subscribe || subscribe->type != MQTT_SUBSCRIBE) return 0;
    return emit(out, cap, MQTT_SUBACK << 4, fill_suback, &a);
}

size_t mqtt_encode_unsuback(uint8_t *out, size_t cap, unsigned version,
                            const struct mqtt_packet *unsubscribe)
{
    struct subacks_args a = {version, unsubscribe};

    if (!unsubscribe || unsubscribe->type != MQTT_UNSUBSCRIBE) return 0;
    return emit(out, cap, MQTT_UNSUBACK << 4, fill_suback, &a);
}

size_t mqtt_encode_pingresp(uint8_t *out, size_t cap)
{
    if (!out || cap < 2) return 0;
    out[0] = MQTT_PINGRESP << 4;
    out[1] = 0;
    return 2;
}

struct disc_args {
    uint8_t reason;
    struct mqtt_slice rs;
};

static void fill_disconnect(struct wr *w, const void *arg)
{
    const struct disc_args *a = arg;

    /* reason 0 and no properties: the remaining length 0 short form (3.14.2.1) */
    if (a->reason == 0 && !a->rs.n) return;
    w_u8(w, a->reason);
    if (a->rs.n) {
        w_vbi(w, (uint32_t)(3 + a->rs.n));
        w_u8(w, MQTT_PROP_REASON_STRING);
        w_str(w, a->rs);
    }
}

size_t mqtt_encode_disconnect(uint8_t *out, size_t cap, unsigned version, uint8_t reason,
                              const char *reason_string)
{
    struct disc_args a;

    if (version != 5) return 0;
    a.reason = reason;
    a.rs.p = (const uint8_t *)reason_string;
    a.rs.n = reason_string ? strlen(reason_string) : 0;
    if (a.rs.n > 0xffff) return 0;
    return emit(out, cap, MQTT_DISCONNECT << 4, fill_disconnect, &a);
}
