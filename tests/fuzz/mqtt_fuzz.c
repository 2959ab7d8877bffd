/* tests/fuzz/mqtt_fuzz.c — libFuzzer target for the MQTT parser and encoders.
 *
 * Input: a version selector byte (low bits: 0 before CONNECT, 4, 5) and one
 * connection's byte stream. Packets are peeked and parsed in turn, as a session
 * would (a CONNECT sets the version), until an error or INCOMPLETE. Invariants
 * (abort on violation):
 *   - peek and parse agree on the length; errors carry a reason and a text;
 *   - every slice lies inside the packet; iterators stay inside and end;
 *   - prefix consistency: any proper prefix of a packet is MQTT_INCOMPLETE;
 *   - the answers the session would send (SUBACK, UNSUBACK, acks, CONNACK,
 *     DISCONNECT) encode within their buffer and parse back where the server
 *     could receive them (acks).
 * Buffers are exactly sized heap copies, so ASan sees any over-read.
 * Seeds: the decoded Mosquitto corpus (tests/unit/protocols/mqtt_corpus.py --seeds).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/mqtt.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "mqtt_fuzz: invariant failed at %s:%d: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(struct mqtt_slice s, const uint8_t *b, size_t n)
{
    return s.p == NULL ? s.n == 0 : (s.p >= b && s.p + s.n <= b + n);
}

static void check_props(const struct mqtt_props *pr, const uint8_t *b, size_t n)
{
    struct mqtt_slice k, v;
    size_t pos = 0, users = 0;

    CHECK(inside(pr->raw, b, n));
    CHECK(inside(pr->content_type, b, n) && inside(pr->response_topic, b, n));
    CHECK(inside(pr->correlation_data, b, n) && inside(pr->auth_method, b, n));
    CHECK(inside(pr->auth_data, b, n) && inside(pr->reason_string, b, n));
    while (mqtt_user_prop_next(pr, &pos, &k, &v)) {
        CHECK(inside(k, b, n) && inside(v, b, n));
        CHECK(++users <= pr->user_count);
    }
    CHECK(users == pr->user_count);
}

static void answer(const struct mqtt_packet *pk, unsigned version)
{
    static uint8_t out[1 << 17];
    static struct mqtt_packet back;
    size_t n;

    switch (pk->type) {
    case MQTT_SUBSCRIBE:
        n = mqtt_encode_suback(out, sizeof(out), version, pk);
        CHECK(n == 0 || n >= 4 + pk->filters.count);
        break;
    case MQTT_UNSUBSCRIBE:
        n = mqtt_encode_unsuback(out, sizeof(out), version, pk);
        CHECK(n >= 4);
        break;
    case MQTT_PUBLISH:
        if (pk->publish.qos == 0) break;
        n = mqtt_encode_ack(out, sizeof(out), version,
                            pk->publish.qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, pk->packet_id,
                            version == 5 ? 0x10 : 0);
        CHECK(n == 4 || n == 5);
        CHECK(mqtt_parse(out, n, version, &back) == (int)n && back.packet_id == pk->packet_id);
        break;
    case MQTT_PUBREL:
        n = mqtt_encode_ack(out, sizeof(out), version, MQTT_PUBCOMP, pk->packet_id, 0);
        CHECK(n == 4 && mqtt_parse(out, n, version, &back) == 4);
        break;
    case MQTT_CONNECT: {
        struct mqtt_connack_props pr = {0};
        pr.assigned_client_id = pk->connect.client_id;
        pr.receive_maximum = 16;
        n = mqtt_encode_connack(out, sizeof(out), pk->connect.level, 0, 0, &pr);
        CHECK(n >= 4);
        break;
    }
    default:
        break;
    }
}

/* An error: the session would answer it; the encoders must cope with any reason. */
static void refuse(const struct mqtt_packet *pk, unsigned version)
{
    uint8_t out[256];
    CHECK(pk->error != NULL && pk->reason >= 0x80);
    CHECK(mqtt_reason_text(pk->reason) != NULL);
    if (version == 5)
        CHECK(mqtt_encode_disconnect(out, sizeof(out), 5, pk->reason, pk->error) ==
              7 + strlen(pk->error));
    (void)mqtt_connack_v4_code(pk->reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mqtt_packet pk;
    static const unsigned versions[4] = {0, 4, 5, 0};
    unsigned version;
    size_t off = 1, steps = 0;

    if (size < 1) return 0;
    version = versions[data[0] & 3];
    while (off < size && steps++ < 64) {
        size_t rest = size - off, total = 0;
        uint8_t *b = malloc(rest);
        int pr, r;

        CHECK(b != NULL);
        memcpy(b, data + off, rest);
        pr = mqtt_peek(b, rest, &total);
        r = mqtt_parse(b, rest, version, &pk);
        if (pr == MQTT_INCOMPLETE) {
            CHECK(r == MQTT_INCOMPLETE);
        } else if (pr < 0) {
            CHECK(pr == MQTT_E_MALFORMED && r == MQTT_E_MALFORMED && pk.reason == 0x81);
        } else if (total > rest) {
            CHECK(r == MQTT_INCOMPLETE);
        } else {
            size_t t2 = 0;
            CHECK(r != MQTT_INCOMPLETE);
            /* a proper prefix of a complete packet is never decided (a 1-byte
             * prefix is always INCOMPLETE; the header prefixes too) */
            CHECK(mqtt_parse(b, total - 1, version, &pk) == MQTT_INCOMPLETE);
            CHECK(mqtt_peek(b, total - 1, &t2) == MQTT_INCOMPLETE || t2 == total);
            r = mqtt_parse(b, rest, version, &pk);
        }
        if (r == MQTT_INCOMPLETE) {
            free(b);
            break;
        }
        if (r < 0) {
            CHECK(-r == pk.reason);
            refuse(&pk, version);
            free(b);
            break;
        }
        CHECK((size_t)r == total && pk.error == NULL);
        check_props(&pk.props, b, total);
        if (pk.type == MQTT_CONNECT) {
            CHECK(pk.connect.level == 4 || pk.connect.level == 5);
            check_props(&pk.connect.will_props, b, total);
            CHECK(inside(pk.connect.client_id, b, total) && inside(pk.connect.username, b, total));
            CHECK(inside(pk.connect.password, b, total) &&
                  inside(pk.connect.will_payload, b, total));
        }
        if (pk.type == MQTT_PUBLISH) {
            CHECK(inside(pk.publish.topic, b, total) && inside(pk.publish.payload, b, total));
            CHECK(pk.publish.qos < 3);
        }
        if (pk.type == MQTT_SUBSCRIBE || pk.type == MQTT_UNSUBSCRIBE) {
            struct mqtt_slice f;
            size_t pos = 0, count = 0;
            while (mqtt_filter_next(&pk, &pos, &f, NULL)) {
                CHECK(inside(f, b, total) && f.n > 0);
                count++;
            }
            CHECK(count == pk.filters.count && count > 0);
        }
        answer(&pk, pk.type == MQTT_CONNECT ? pk.connect.level : version);
        if (pk.type == MQTT_CONNECT) version = pk.connect.level;
        free(b);
        off += (size_t)r;
    }
    return 0;
}
