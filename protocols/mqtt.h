/* protocols/mqtt.h — MQTT 3.1.1 and 5.0 server-side packet parser and encoder.
 *
 * Pure functions in the picohttpparser style: no I/O, no allocation, no global
 * state. Parsed strings and binary data are (pointer, length) slices into the
 * caller's buffer, valid while that buffer is; nothing is copied or unescaped.
 *
 * Use on a connection:
 *   1. mqtt_peek() on the bytes received so far: MQTT_INCOMPLETE means read more;
 *      0 gives the whole packet length, so a packet above the session's maximum
 *      packet size is refused (v5: DISCONNECT 0x95) before it is buffered.
 *   2. Once total bytes are buffered, mqtt_parse() with version 0 for the first
 *      packet (only CONNECT is accepted), then with out->connect.level (4 or 5).
 *   3. On an error, out->reason is the MQTT 5 reason code to answer with
 *      (CONNACK before the session exists, DISCONNECT after; v3.1.1 just closes,
 *      except for the CONNECT refusals mqtt_connack_v4_code() translates).
 *
 * Return convention: >= 0 success, MQTT_INCOMPLETE (need more bytes; not an
 * error), or a negated MQTT 5 reason code (MQTT_E_*, -0x81 ...). For every error
 * out->reason == -return and out->error is a short static text.
 *
 * Things the parser cannot know and the session must check: a Topic Alias above
 * its Topic Alias Maximum (0x94), an unknown alias with an empty topic (0x82),
 * Receive Maximum exceeded (0x93), an Authentication Method it does not support
 * (0x8C), a DISCONNECT Session Expiry Interval != 0 after CONNECT said 0 (0x82),
 * packet ids in use, the token itself.
 */
#ifndef SLUICE_PROTOCOLS_MQTT_H
#define SLUICE_PROTOCOLS_MQTT_H

#include <stddef.h>
#include <stdint.h>

#define MQTT_INCOMPLETE (-1)
/* Errors: the negated MQTT 5 reason code the peer should be told. */
#define MQTT_E_MALFORMED      (-0x81)
#define MQTT_E_PROTOCOL       (-0x82)
#define MQTT_E_VERSION        (-0x84) /* unsupported protocol level; v3.1.1 CONNACK 0x01 */
#define MQTT_E_CLIENT_ID      (-0x85) /* v3.1.1 CONNACK 0x02 */
#define MQTT_E_TOPIC_NAME     (-0x90)
#define MQTT_E_TOPIC_ALIAS    (-0x94)
#define MQTT_E_PAYLOAD_FORMAT (-0x99)

/* Largest remaining length a 4-byte variable byte integer can carry. */
#define MQTT_MAX_REMAINING 268435455u
/* Fixed header (1 + up to 4 bytes) + MQTT_MAX_REMAINING. */
#define MQTT_MAX_PACKET (MQTT_MAX_REMAINING + 5u)

/* Control packet types (high nibble of the first byte). */
enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15, /* v5 only */
};

/* MQTT 5 property identifiers (2.2.2.2). */
enum mqtt_prop_id {
    MQTT_PROP_PAYLOAD_FORMAT = 0x01,
    MQTT_PROP_MESSAGE_EXPIRY = 0x02,
    MQTT_PROP_CONTENT_TYPE = 0x03,
    MQTT_PROP_RESPONSE_TOPIC = 0x08,
    MQTT_PROP_CORRELATION_DATA = 0x09,
    MQTT_PROP_SUBSCRIPTION_ID = 0x0B,
    MQTT_PROP_SESSION_EXPIRY = 0x11,
    MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,
    MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,
    MQTT_PROP_AUTH_METHOD = 0x15,
    MQTT_PROP_AUTH_DATA = 0x16,
    MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,
    MQTT_PROP_WILL_DELAY = 0x18,
    MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,
    MQTT_PROP_RESPONSE_INFO = 0x1A,
    MQTT_PROP_SERVER_REFERENCE = 0x1C,
    MQTT_PROP_REASON_STRING = 0x1F,
    MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
    MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    MQTT_PROP_TOPIC_ALIAS = 0x23,
    MQTT_PROP_MAXIMUM_QOS = 0x24,
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,
    MQTT_PROP_USER = 0x26,
    MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
    MQTT_PROP_WILDCARD_AVAILABLE = 0x28,
    MQTT_PROP_SUB_ID_AVAILABLE = 0x29,
    MQTT_PROP_SHARED_AVAILABLE = 0x2A,
};

#define MQTT_HAS(props, id) (((props)->present >> (id)) & 1u)

struct mqtt_slice {
    const uint8_t *p; /* NULL with n == 0 when absent */
    size_t n;
};

/* The v5 properties of one packet (or of a CONNECT's will). A field is
 * meaningful only when MQTT_HAS(props, its id); absent fields are 0 / empty. */
struct mqtt_props {
    uint64_t present;      /* bit (1 << id) for each property seen */
    struct mqtt_slice raw; /* the property bytes (after their length), for mqtt_user_prop_next */
    size_t user_count;     /* User Property pairs */
    uint32_t session_expiry, message_expiry, will_delay, maximum_packet_size, subscription_id;
    uint16_t receive_maximum, topic_alias_maximum, topic_alias;
    uint8_t payload_format, request_problem_info, request_response_info;
    struct mqtt_slice content_type, response_topic, correlation_data, auth_method, auth_data,
        reason_string, server_reference;
};

struct mqtt_connect {
    uint8_t level; /* protocol level byte as sent (3, 4, 5 ...); 0 if not reached */
    uint8_t flags; /* connect flags byte as sent */
    unsigned clean_start : 1, will : 1, will_qos : 2, will_retain : 1, has_username : 1,
        has_password : 1;
    uint16_t keepalive; /* seconds, 0 = off */
    struct mqtt_slice client_id;
    struct mqtt_props will_props; /* v5 */
    struct mqtt_slice will_topic, will_payload, username, password;
};

struct mqtt_publish {
    unsigned dup : 1, qos : 2, retain : 1;
    struct mqtt_slice topic; /* may be empty in v5 when props.topic_alias is given */
    struct mqtt_slice payload;
};

/* SUBSCRIBE / UNSUBSCRIBE payload, walked with mqtt_filter_next(). */
struct mqtt_filters {
    struct mqtt_slice raw; /* the payload: (filter, options byte) or filter entries */
    size_t count;          /* >= 1 */
};

struct mqtt_packet {
    uint8_t type;  /* enum mqtt_type */
    uint8_t flags; /* low nibble of the first byte */
    /* Error: the reason code to answer with. Success: the reason code the packet
     * carries (v5 PUBACK..PUBCOMP, DISCONNECT, AUTH; 0 when omitted or v3.1.1). */
    uint8_t reason;
    uint16_t packet_id;      /* PUBLISH QoS > 0, PUBACK..PUBCOMP, (UN)SUBSCRIBE; else 0 */
    struct mqtt_props props; /* v5 packet properties */
    struct mqtt_connect connect;
    struct mqtt_publish publish;
    struct mqtt_filters filters;
    const char *error; /* static reason text on error, NULL otherwise */
};

/* Reads the fixed header at p[0..n). Returns 0 and sets *total (fixed header +
 * remaining length) when the header is complete; MQTT_INCOMPLETE when more bytes
 * are needed for the header (never reads past p[n-1]); MQTT_E_MALFORMED when the
 * remaining length has a fifth byte, is not minimally encoded (0x80 0x00), or the
 * packet type is 0 (reserved). The length itself is not checked against
 * anything: a first packet claiming 256 MB costs the caller nothing until it
 * decides to buffer it. */
int mqtt_peek(const uint8_t *p, size_t n, size_t *total);

/* Parses exactly one packet at p[0..n), n >= the total mqtt_peek reported (bytes
 * after the packet are ignored). version is 0 before the session has a CONNECT
 * (only CONNECT is accepted, MQTT_E_PROTOCOL otherwise), then 4 or 5.
 * *out is cleared first; its slices point into p.
 * Returns the packet length (> 0), MQTT_INCOMPLETE when n is short of it, or:
 *   MQTT_E_MALFORMED  bad remaining length, bad fixed-header flags, type 0, AUTH in
 *                     v3.1.1, bytes left over or missing inside the remaining
 *                     length, bad UTF-8 or U+0000 [MQTT-1.5.4-1..2], control
 *                     characters in a topic, a property identifier unknown or not
 *                     valid for the packet (2.2.2.2), QoS 3, reserved bits set, an
 *                     invalid topic filter (4.7.1: also in v5, as Mosquitto); in
 *                     v3.1.1 also what v5 calls a protocol error below;
 *   MQTT_E_PROTOCOL   a packet other than CONNECT first, a second CONNECT, a type
 *                     only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP), a
 *                     duplicated property, Receive Maximum / Maximum Packet Size /
 *                     Subscription Identifier 0, boolean properties not 0/1,
 *                     Subscription Identifier in a PUBLISH, Authentication Data
 *                     without Method, v5 DUP on QoS 0, packet id 0, an empty topic
 *                     name without alias, (UN)SUBSCRIBE without filters, retain
 *                     handling 3, No Local on a shared subscription, a reason code
 *                     the client may not send, an empty/wildcard Response Topic;
 *   MQTT_E_VERSION    CONNECT with protocol name/level other than MQTT 4 or 5 (this
 *                     includes "MQIsdp" level 3, MQTT 3.1: answer CONNACK 0x01);
 *   MQTT_E_CLIENT_ID  v3.1.1 empty client id without clean session, control
 *                     characters in a client id (v3.1.1 CONNACK 0x02);
 *   MQTT_E_TOPIC_NAME wildcards in a PUBLISH or will topic (empty will topic too);
 *   MQTT_E_TOPIC_ALIAS Topic Alias 0;
 *   MQTT_E_PAYLOAD_FORMAT Payload Format Indicator 1 on a payload (or will
 *                     payload) that is not UTF-8.
 * version values other than 0 and 5 behave like 4.
 * For CONNECT errors, out->connect.level holds the level byte if it was read. */
int mqtt_parse(const uint8_t *p, size_t n, unsigned version, struct mqtt_packet *out);

/* Walks the User Property pairs of props: start with *pos = 0; returns 1 and
 * sets name/value for the next pair, 0 at the end. props must come from a
 * successful mqtt_parse. */
int mqtt_user_prop_next(const struct mqtt_props *props, size_t *pos, struct mqtt_slice *name,
                        struct mqtt_slice *value);

/* Walks the topic filters of a parsed SUBSCRIBE or UNSUBSCRIBE: start with
 * *pos = 0; returns 1 with the next filter and its options byte (SUBSCRIBE; 0 for
 * UNSUBSCRIBE), 0 at the end. options may be NULL. */
int mqtt_filter_next(const struct mqtt_packet *pk, size_t *pos, struct mqtt_slice *filter,
                     uint8_t *options);

/* The SUBACK code sluice (an ingest-only endpoint) gives a filter: v3.1.1 0x80
 * (failure); v5 0x8F (topic filter invalid) for a malformed filter, 0x9E (shared
 * subscriptions not supported) for "$share/...", 0x87 (not authorized) otherwise.
 * (mqtt_parse refuses malformed filters, so 0x8F only shows for hand-made ones.) */
uint8_t mqtt_suback_code(unsigned version, struct mqtt_slice filter);

/* The v3.1.1 CONNACK return code for a v5 CONNACK reason: 0x84 -> 0x01,
 * 0x85 -> 0x02, 0x88/0x89 -> 0x03, 0x86 -> 0x04, 0x87/0x8C -> 0x05, 0 -> 0.
 * Returns 0xFF when v3.1.1 has no equivalent (close without a CONNACK). */
uint8_t mqtt_connack_v4_code(uint8_t reason);

/* Short text for a reason code ("Malformed Packet"...). */
const char *mqtt_reason_text(uint8_t reason);

/* ---- encoders: write into out[0..cap), return the length, or 0 if cap is too small ---- */

/* CONNACK v5 properties the server announces; zero-initialise, set what applies. */
struct mqtt_connack_props {
    struct mqtt_slice assigned_client_id; /* written when n > 0 */
    struct mqtt_slice reason_string;      /* written when n > 0 */
    uint32_t maximum_packet_size;         /* written when > 0 */
    uint16_t receive_maximum;             /* written when > 0 */
    uint16_t topic_alias_maximum;         /* written when > 0 */
    uint16_t server_keep_alive;           /* written when has_server_keep_alive */
    uint32_t session_expiry;              /* written when has_session_expiry (the server's
                                           * value, when it differs from the client's) */
    unsigned has_server_keep_alive : 1, has_session_expiry : 1;
    unsigned has_retain_available : 1, retain_available : 1;
    unsigned no_wildcard_subs : 1, no_subscription_ids : 1, no_shared_subs : 1; /* write 0 */
};

/* v4: session_present + return code (0x00..0x05); v5: + reason code and props
 * (props may be NULL). session_present is forced to 0 when code != 0
 * [MQTT-3.2.2-4] / [MQTT-3.2.2-6]. */
size_t mqtt_encode_connack(uint8_t *out, size_t cap, unsigned version, int session_present,
                           uint8_t code, const struct mqtt_connack_props *props);

/* PUBACK, PUBREC, PUBREL or PUBCOMP (type). v5 writes the reason code only when
 * it is not 0 (3.4.2.1), v3.1.1 never. */
size_t mqtt_encode_ack(uint8_t *out, size_t cap, unsigned version, uint8_t type, uint16_t packet_id,
                       uint8_t reason);

/* SUBACK for a parsed SUBSCRIBE: one mqtt_suback_code() per filter, in order. */
size_t mqtt_encode_suback(uint8_t *out, size_t cap, unsigned version,
                          const struct mqtt_packet *subscribe);

/* UNSUBACK for a parsed UNSUBSCRIBE: v3.1.1 has no payload; v5 answers each filter
 * 0x11 (no subscription existed: an ingest-only endpoint holds none). */
size_t mqtt_encode_unsuback(uint8_t *out, size_t cap, unsigned version,
                            const struct mqtt_packet *unsubscribe);

size_t mqtt_encode_pingresp(uint8_t *out, size_t cap);

/* v5 DISCONNECT with reason (and reason_string when not NULL/empty; the caller
 * omits it when the client's Maximum Packet Size is smaller [MQTT-3.14.2-3]).
 * v3.1.1 has no server DISCONNECT: returns 0, just close the connection. */
size_t mqtt_encode_disconnect(uint8_t *out, size_t cap, unsigned version, uint8_t reason,
                              const char *reason_string);

#endif
