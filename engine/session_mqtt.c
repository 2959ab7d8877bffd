/* engine/session_mqtt.c — the MQTT 3.1.1 / 5.0 device session.
 *
 * Bytes from conn.c are split into packets (protocols/mqtt.c parses them in
 * place); a packet larger than the maximum packet size is refused from its
 * fixed header, before any of it is buffered. The first packet must be a
 * CONNECT carrying a device token (password = token, any username; or username
 * = token with an empty password); a refusal is a CONNACK with its code, then
 * close. Each PUBLISH is one reading of the token's device and org (never of
 * anything the topic says), recorded with its topic and retain flag.
 *
 * Acknowledgements mean durable: a QoS 1 PUBACK or QoS 2 PUBREC is queued when
 * its PUBLISH is appended and sent once the commit holding it completed; they
 * leave in the order the PUBLISHes came [MQTT-4.6.0-2, -3], each behind the
 * ones before it, and a PUBCOMP waits its turn the same way. A storage failure
 * is PUBACK/PUBREC 0x80 in MQTT 5; 3.1.1 has no failure code, so the
 * connection is closed without the ack and the client sends again. QoS 2 keeps
 * the packet ids received and not yet released, so a DUP resend of one is
 * answered, never stored twice.
 *
 * Limits, each with an answer: the CONNECT has the header deadline
 * (--header-timeout) from accept; then the client's keepalive is enforced at
 * 1.5x (MQTT 5: DISCONNECT 0x8D), or --idle-timeout when it asked for none;
 * more unacknowledged QoS 1/2 PUBLISHes than the receive maximum we announce
 * is DISCONNECT 0x93; MQTT 5 topic aliases up to 10, their topics 4 KiB in all
 * (past it 0x97); SUBSCRIBE gets failure codes (an ingest endpoint);
 * malformed input closes, in MQTT 5 after a DISCONNECT with its reason.
 */
#include "engine/session_mqtt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/auth.h"
#include "engine/clients.h"
#include "engine/conn.h"
#include "engine/ingest.h"
#include "protocols/mqtt.h"

/* QoS 1/2 PUBLISHes a client may have unacknowledged (announced in MQTT 5 as
 * Receive Maximum; in 3.1.1 reading simply stops while the queue is full). */
#define MQTT_RECEIVE_MAX 64u
/* QoS 2 exchanges a connection may hold open (PUBREC sent, PUBREL not yet
 * come). MQTT 5 stays within the receive maximum; a 3.1.1 client, which cannot
 * be told one, may have more (a reconnecting Paho sends its whole backlog), and
 * past this many the connection is closed: it is not completing them. */
#define MQTT_QOS2_HELD_MAX 256u
/* Acknowledgements waiting their turn: the receive window plus room for
 * PUBCOMPs (past it reading stops until acks leave). 8 bytes each, in every
 * connection's session: an idle connection's memory is mostly this. */
#define MQTT_QUEUE         96u
#define MQTT_CLIENT_ID_MAX 128u
/* MQTT 5 topic aliases a client may set (announced as Topic Alias Maximum),
 * and the bytes their topics may take together per connection: past it,
 * DISCONNECT 0x97 (quota exceeded), so aliases cannot be used to park memory. */
#define MQTT_TOPIC_ALIAS_MAX   10u
#define MQTT_TOPIC_ALIAS_BYTES 4096u
/* Room for the topic and properties around a body of --max-body. */
#define MQTT_PACKET_SLACK (64u << 10)
/* Commits with no acknowledgement behind them (QoS 0, a will) carry this bit
 * in their cookie, so they never name a queue entry. */
#define COOKIE_NO_ACK (1ull << 63)
/* A kept session's change (a QoS 2 id held or released) is in the store: the
 * ack at this queue index may go (engine/clients.c). */
#define COOKIE_SESSION (1ull << 62)

struct pending_ack {
    uint8_t type;        /* MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBCOMP */
    uint8_t reason;      /* 0, or 0x80 when its commit failed */
    uint8_t waiting;     /* the commit (and session write) it waits for are outstanding */
    uint8_t failed : 1;  /* 3.1.1: the commit failed, close instead of acking */
    uint8_t release : 1; /* sending it ends an exchange: one slot of the receive window */
    uint8_t answer : 1;  /* the first answer to a QoS 1/2 PUBLISH (counted in `unanswered`) */
    uint8_t tracked : 1; /* PUBREC of an id the kept session records (engine/clients.c) */
    uint16_t id;
};

struct mqtt_sess {
    uint8_t version;   /* 0 until CONNECT, then 4 or 5 */
    bool disconnected; /* the client sent DISCONNECT: no will */
    bool sent_disconnect;
    uint16_t keepalive_s;
    uint32_t client_max; /* MQTT 5 client's Maximum Packet Size, 0: none given */
    bool claimed;        /* client_id is registered (engine/clients.c) */
    bool kept;           /* a session kept between connections: its QoS 2 ids live in clients.c */
    uint32_t epoch;      /* of that session */
    uint32_t expiry_s;   /* MQTT 5: the CONNECT's Session Expiry Interval (DISCONNECT rule) */
    uint8_t client_id_len;
    char *client_id;     /* malloc'd: most ids are far shorter than the limit */
    uint64_t last_rx_ms; /* when the last packet arrived (keepalive) */

    /* the device, from the CONNECT's token */
    uint32_t device, org;
    uint64_t auth_gen;
    uint8_t tok_len;
    bool by_cert; /* mutual TLS: tok holds the client certificate's digest */
    char tok[AUTH_TOKEN_MAX];

    /* acknowledgements, in the order they must leave */
    struct pending_ack q[MQTT_QUEUE];
    uint64_t qhead, qtail; /* 64 bits: never wrap, so index % MQTT_QUEUE stays consistent */
    uint8_t *connack;      /* a CONNACK waiting its turn (first in the queue), malloc'd */
    uint16_t connack_len;
    uint32_t inflight;   /* QoS 1 not yet PUBACKed + QoS 2 not yet PUBCOMPed */
    uint32_t unanswered; /* QoS 1/2 whose PUBACK/PUBREC has not left (3.1.1's window) */

    /* QoS 2 packet ids received and not yet released by PUBREL (a kept
     * session: only those whose reading is not durable yet; the rest are the
     * session's, in engine/clients.c) */
    uint16_t *qos2; /* MQTT_QOS2_HELD_MAX, allocated at the first QoS 2 PUBLISH */
    uint32_t nqos2;

    /* MQTT 5 topic aliases, allocated on first use (idle connections stay small) */
    struct mqtt_aliases *aliases;

    /* the will, stored as a reading if the connection ends without DISCONNECT */
    char *will; /* topic then payload, malloc'd */
    uint16_t will_topic_len;
    uint32_t will_len;
    bool will_retain;
};

struct mqtt_aliases {
    char *topic[MQTT_TOPIC_ALIAS_MAX + 1]; /* index 1..MQTT_TOPIC_ALIAS_MAX, copies */
    uint16_t len[MQTT_TOPIC_ALIAS_MAX + 1];
    uint32_t bytes;
};

static struct mqtt_sess *sess(const struct conn *c)
{
    return c->sess;
}

static void wait_session(struct worker *w, struct conn *c, uint64_t i, uint64_t seq);

/* Sends one packet the client can take: MQTT 5 lets a client cap the size of
 * what it receives [MQTT-3.1.2-24]; a packet over that cap cannot be sent,
 * so the connection ends instead. */
static void send_packet(struct worker *w, struct conn *c, const void *p, size_t n)
{
    struct mqtt_sess *s = sess(c);
    if (!n) return;
    if (s->client_max && n > s->client_max) {
        conn_close(w, c);
        return;
    }
    conn_send(w, c, p, n);
}

static size_t max_packet(const struct worker *w)
{
    return (size_t)w->eng->cfg.max_body + MQTT_PACKET_SLACK;
}

static size_t max_input(const struct worker *w)
{
    return max_packet(w);
}

static bool queue_full(const struct mqtt_sess *s)
{
    return s->qtail - s->qhead >= MQTT_QUEUE;
}

static struct pending_ack *queue_ack(struct mqtt_sess *s, uint8_t type, uint16_t id)
{
    struct pending_ack *a = &s->q[s->qtail++ % MQTT_QUEUE];
    *a = (struct pending_ack){.type = type, .id = id};
    return a;
}

/* Sends the acknowledgements whose turn has come, in order. */
static void flush_acks(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    while (s->qhead != s->qtail && !c->closing) {
        struct pending_ack *a = &s->q[s->qhead % MQTT_QUEUE];
        if (a->waiting) break;
        if (a->failed) {
            /* 3.1.1: no failure code; what came before has been acked, this
             * and what follows are not, and the client sends them again */
            conn_stop(w, c);
            s->qhead = s->qtail;
            conn_close(w, c);
            return;
        }
        uint8_t ack[8];
        if (a->type == MQTT_CONNACK) {
            send_packet(w, c, s->connack, s->connack_len);
            free(s->connack);
            s->connack = NULL;
        } else {
            size_t n = mqtt_encode_ack(ack, sizeof ack, s->version, a->type, a->id, a->reason);
            send_packet(w, c, ack, n);
        }
        if (c->closing) return;
        if (a->release && s->inflight) s->inflight--;
        if (a->answer) s->unanswered--;
        s->qhead++;
    }
    if (s->qhead == s->qtail && c->stopped && s->version == 5 && !s->sent_disconnect &&
        w->draining) {
        uint8_t buf[8];
        size_t n =
            mqtt_encode_disconnect(buf, sizeof buf, 5, 0x8B, NULL); /* server shutting down */
        send_packet(w, c, buf, n);
        s->sent_disconnect = true;
    }
}

/* Ends the connection for a protocol reason: MQTT 5 hears it in a DISCONNECT
 * (after the acknowledgements already due), 3.1.1 is just closed. */
static void refuse(struct worker *w, struct conn *c, uint8_t reason)
{
    struct mqtt_sess *s = sess(c);
    if (!c->stopped) worker_count(&w->st.mqtt_disconnects_sent, 1);
    conn_stop(w, c);
    if (s->version == 5 && !s->sent_disconnect) {
        uint8_t buf[8];
        size_t n = mqtt_encode_disconnect(buf, sizeof buf, 5, reason, NULL);
        send_packet(w, c, buf, n);
        s->sent_disconnect = true;
    } else if (s->version != 5) {
        conn_close(w, c);
    }
}

/* Sends the CONNACK, or (wait_seq > 0) queues it first in line until the
 * store no longer holds an older session of this client id: what is acked
 * on this connection must not come back to life after a restart. */
static void connack(struct worker *w, struct conn *c, unsigned version, uint8_t reason,
                    bool present, const struct mqtt_connack_props *props, uint64_t wait_seq)
{
    uint8_t buf[512];
    uint8_t code = reason;
    if (version != 5) {
        code = mqtt_connack_v4_code(reason);
        if (code == 0xFF) {
            conn_close(w, c);
            return;
        }
    }
    size_t n = mqtt_encode_connack(buf, sizeof buf, version == 5 ? 5 : 4, present, code, props);
    struct mqtt_sess *s = sess(c);
    if (s->client_max && n > s->client_max) /* the smallest CONNACK, without properties */
        n = mqtt_encode_connack(buf, sizeof buf, version == 5 ? 5 : 4, present, code, NULL);
    if (wait_seq && !reason) {
        if (!(s->connack = malloc(n))) {
            conn_close(w, c);
            return;
        }
        memcpy(s->connack, buf, n);
        s->connack_len = (uint16_t)n;
        uint64_t i = s->qtail;
        queue_ack(s, MQTT_CONNACK, 0);
        wait_session(w, c, i, wait_seq);
    } else {
        send_packet(w, c, buf, n);
    }
    worker_count(reason ? &w->st.mqtt_connect_refused : &w->st.mqtt_connects, 1);
    if (reason) conn_stop(w, c);
}

static void on_connect(struct worker *w, struct conn *c, const struct mqtt_packet *pk)
{
    struct mqtt_sess *s = sess(c);
    const struct mqtt_connect *cn = &pk->connect;
    unsigned v = cn->level;
    if (v == 5 && MQTT_HAS(&pk->props, MQTT_PROP_AUTH_METHOD)) {
        connack(w, c, v, 0x8C, false, NULL, 0); /* bad authentication method: tokens only */
        return;
    }
    if (v == 5 && MQTT_HAS(&pk->props, MQTT_PROP_MAXIMUM_PACKET_SIZE))
        s->client_max = pk->props.maximum_packet_size;
    if (cn->client_id.n > MQTT_CLIENT_ID_MAX) {
        connack(w, c, v, 0x85, false, NULL, 0);
        return;
    }
    /* password = token (any username), or username = token, empty password */
    struct mqtt_slice tok = cn->has_password && cn->password.n ? cn->password
                            : cn->has_username                 ? cn->username
                                                               : (struct mqtt_slice){0};
    const struct auth_entry *e = NULL;
    uint8_t cert[STORE_DIGEST_LEN];
    /* mutual TLS: with a client certificate and no password, the certificate
     * is the credential (a username is then just a label) */
    bool by_cert = !(cn->has_password && cn->password.n) && conn_client_cert_digest(c, cert);
    int rc = by_cert ? auth_device_cert(w->auth, cert, &e)
             : tok.n ? auth_device(w->auth, w->authrl, c->peer, w->now_ms, (const char *)tok.p,
                                   tok.n, &e)
                     : AUTH_FAIL;
    if (rc != AUTH_OK) {
        worker_count(rc == AUTH_THROTTLED ? &w->st.auth_throttled : &w->st.auth_failures, 1);
        /* 0x86 bad user name or password (3.1.1: 0x05 not authorized, as
         * INTERFACE.md says); throttled: 0x9F
         * connection rate exceeded, which 3.1.1 can only say as 0x05 */
        uint8_t reason = rc == AUTH_THROTTLED ? (v == 5 ? 0x9F : 0x87) : (v == 5 ? 0x86 : 0x87);
        connack(w, c, v, reason, false, NULL, 0);
        return;
    }
    s->version = (uint8_t)v;
    s->device = e->device;
    s->org = e->org;
    s->auth_gen = w->auth_gen;
    if (by_cert) { /* kept to look the device up again when the table changes */
        memcpy(s->tok, cert, sizeof cert);
        s->tok_len = 0;
        s->by_cert = true;
    } else {
        memcpy(s->tok, tok.p, tok.n);
        s->tok_len = (uint8_t)tok.n;
    }
    s->keepalive_s = cn->keepalive;
    if (cn->will) {
        size_t n = cn->will_topic.n + cn->will_payload.n;
        s->will = malloc(n ? n : 1);
        if (s->will) {
            memcpy(s->will, cn->will_topic.p, cn->will_topic.n);
            if (cn->will_payload.n)
                memcpy(s->will + cn->will_topic.n, cn->will_payload.p, cn->will_payload.n);
            s->will_topic_len = (uint16_t)cn->will_topic.n;
            s->will_len = (uint32_t)n;
            s->will_retain = cn->will_retain;
        }
    }
    struct mqtt_connack_props props = {
        .receive_maximum = MQTT_RECEIVE_MAX,
        .topic_alias_maximum = MQTT_TOPIC_ALIAS_MAX,
        .maximum_packet_size = (uint32_t)max_packet(w),
        .has_retain_available = 1,
        .retain_available = 1,
        .no_wildcard_subs = 1,
        .no_subscription_ids = 1,
        .no_shared_subs = 1,
    };
    /* MQTT 5 without a client id: one assigned, unique across restarts too,
     * so a kept session is found again only by the client it was given to */
    char assigned[64];
    struct mqtt_slice cid = cn->client_id;
    if (v == 5 && cid.n == 0) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int an = snprintf(assigned, sizeof assigned, "sluice-%llx%08lx-%u-%u-%u",
                          (unsigned long long)now.tv_sec, (unsigned long)now.tv_nsec, w->id,
                          c->slot, c->gen);
        cid = (struct mqtt_slice){(const uint8_t *)assigned, (size_t)an};
        props.assigned_client_id = cid;
    }
    /* kept between connections: 3.1.1 clean session 0 (no expiry given: our
     * longest), 5.0 Session Expiry Interval > 0 (capped, and CONNACK says so) */
    uint32_t want =
        v == 5 ? (MQTT_HAS(&pk->props, MQTT_PROP_SESSION_EXPIRY) ? pk->props.session_expiry : 0)
               : (cn->clean_start ? 0 : CLIENTS_EXPIRY_MAX);
    uint32_t expiry = want < CLIENTS_EXPIRY_MAX ? want : CLIENTS_EXPIRY_MAX;
    if (v == 5 && expiry != want) {
        props.has_session_expiry = 1;
        props.session_expiry = expiry;
    }
    s->expiry_s = want;
    struct clients_claim cl = {0};
    if (cid.n) {
        /* the same id connected for this device: that connection ends
         * [MQTT-3.1.4-2]; ids of other devices are other clients */
        struct conn_ref me = {w->id, c->slot, c->gen};
        s->client_id = malloc(cid.n);
        int rc2 = s->client_id ? clients_claim(w->eng, s->org, s->device, cid.p, cid.n, me,
                                               cn->clean_start, expiry, &cl)
                               : -ENOMEM;
        if (rc2 < 0) {
            free(s->client_id);
            s->client_id = NULL;
            free(s->will); /* refused: no will of a connection that never was */
            s->will = NULL;
            connack(w, c, v, rc2 == -ENOSPC ? 0x97 : 0x89, false, NULL, 0); /* quota / busy */
            return;
        }
        s->claimed = true;
        memcpy(s->client_id, cid.p, cid.n);
        s->client_id_len = (uint8_t)cid.n;
        s->kept = expiry > 0 || cl.present;
        s->epoch = cl.epoch;
        /* the exchanges it resumes count in the client's window too */
        s->inflight = cl.nids < MQTT_RECEIVE_MAX ? cl.nids : MQTT_RECEIVE_MAX;
        if (cl.took_over) clients_kick(w->eng, cl.prev);
        if (cl.present) worker_count(&w->st.mqtt_sessions_resumed, 1);
    }
    connack(w, c, v, 0, cl.present, &props, cl.wait_seq);
}

/* The token of a long-lived connection is looked up again after the table
 * changed: a revoked device stops at its next PUBLISH. */
static bool still_authorized(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    if (s->auth_gen == w->auth_gen) return true;
    const struct auth_entry *e;
    int rc = s->by_cert ? auth_device_cert(w->auth, (const uint8_t *)s->tok, &e)
                        : auth_device(w->auth, NULL, c->peer, w->now_ms, s->tok, s->tok_len, &e);
    if (rc != AUTH_OK || e->device != s->device || e->org != s->org) return false;
    s->auth_gen = w->auth_gen;
    return true;
}

/* Room for one more open QoS 2 exchange (the array allocated on first use). */
static bool qos2_room(struct mqtt_sess *s)
{
    if (!s->qos2 && !(s->qos2 = malloc(MQTT_QOS2_HELD_MAX * sizeof *s->qos2))) return false;
    return s->nqos2 < MQTT_QOS2_HELD_MAX;
}

static bool qos2_has(const struct mqtt_sess *s, uint16_t id)
{
    for (uint32_t i = 0; i < s->nqos2; i++)
        if (s->qos2[i] == id) return true;
    return false;
}

/* The ack at queue index i waits, besides, for the session change seq to be
 * in the store. */
static void wait_session(struct worker *w, struct conn *c, uint64_t i, uint64_t seq)
{
    struct mqtt_sess *s = sess(c);
    if (seq && clients_wait(w, c->slot, c->gen, COOKIE_SESSION | i, seq) == 0)
        s->q[i % MQTT_QUEUE].waiting++;
}

static void qos2_drop(struct mqtt_sess *s, uint16_t id)
{
    for (uint32_t i = 0; i < s->nqos2; i++)
        if (s->qos2[i] == id) {
            s->qos2[i] = s->qos2[--s->nqos2];
            return;
        }
}

/* Appends one reading and commits it. Returns 0 (waiting for the commit, the
 * ack's waiting count taken), 1 (nothing to wait for), or -errno. */
static int store(struct worker *w, struct conn *c, uint8_t flags, const uint8_t *topic,
                 size_t topic_len, const uint8_t *payload, size_t n, uint64_t cookie,
                 uint64_t notify)
{
    struct mqtt_sess *s = sess(c);
    struct ingest_txn t;
    int rc = ingest_begin(w, s->org, s->device, &t);
    if (rc) return rc;
    struct ingest_meta m = {
        .proto = conn_is_tls(c) ? RECORD_PROTO_MQTTS : RECORD_PROTO_MQTT,
        .ctype = ingest_ctype(payload, n),
        .flags = flags,
        .topic = (const char *)topic,
        .topic_len = (uint16_t)topic_len,
    };
    rc = ingest_add(&t, &m, payload, n);
    if (rc) {
        ingest_abort(&t);
        return rc;
    }
    rc = ingest_commit(&t, c, cookie);
    /* a kept session's QoS 2 id learns its reading's outcome even if this
     * connection is gone by then (else the connection's durable op tells it) */
    if (rc == 0 && notify) ingest_notify(&t, notify);
    return rc;
}

/* MQTT 5 Topic Alias: a PUBLISH with a topic sets the alias, one without
 * uses it. Returns 0 with *topic the name to record, or the reason to
 * disconnect with. */
static uint8_t resolve_alias(struct mqtt_sess *s, const struct mqtt_packet *pk,
                             struct mqtt_slice *topic)
{
    uint16_t a = pk->props.topic_alias;
    if (a == 0 || a > MQTT_TOPIC_ALIAS_MAX) return 0x94; /* topic alias invalid */
    struct mqtt_aliases *al = s->aliases;
    if (!topic->n) {
        if (!al || !al->topic[a]) return 0x82; /* an alias never set */
        *topic = (struct mqtt_slice){(const uint8_t *)al->topic[a], al->len[a]};
        return 0;
    }
    if (!al && !(al = s->aliases = calloc(1, sizeof *al))) return 0x89;
    if (al->bytes - al->len[a] + topic->n > MQTT_TOPIC_ALIAS_BYTES) return 0x97;
    char *copy = malloc(topic->n);
    if (!copy) return 0x89;
    memcpy(copy, topic->p, topic->n);
    free(al->topic[a]);
    al->bytes = al->bytes - al->len[a] + (uint32_t)topic->n;
    al->topic[a] = copy;
    al->len[a] = (uint16_t)topic->n;
    return 0;
}

static void on_publish(struct worker *w, struct conn *c, const struct mqtt_packet *pk)
{
    struct mqtt_sess *s = sess(c);
    struct mqtt_publish pubc = pk->publish;
    const struct mqtt_publish *pub = &pubc;
    if (s->version == 5 && MQTT_HAS(&pk->props, MQTT_PROP_TOPIC_ALIAS)) {
        uint8_t why = resolve_alias(s, pk, &pubc.topic);
        if (why) {
            refuse(w, c, why);
            return;
        }
    }
    if (pub->topic.n == 0) {
        refuse(w, c, 0x82);
        return;
    }
    if (!still_authorized(w, c)) {
        refuse(w, c, 0x87);
        return;
    }
    if (pub->qos == 2 && qos2_has(s, pk->packet_id)) {
        /* a resend of one we hold: answered again after the first, not stored */
        queue_ack(s, MQTT_PUBREC, pk->packet_id);
        return;
    }
    bool tracked = false;
    if (pub->qos == 2 && s->kept) {
        if (s->version == 5 && s->inflight >= MQTT_RECEIVE_MAX) {
            refuse(w, c, 0x93);
            return;
        }
        uint64_t seq, i = s->qtail;
        enum clients_qos2 r = clients_qos2_begin(w->eng, s->epoch, pk->packet_id, &seq);
        if (r == CLIENTS_QOS2_HELD) {
            /* a resend of one the session holds (this connection's, an earlier
             * one's, before a restart): answered, not stored */
            queue_ack(s, MQTT_PUBREC, pk->packet_id);
            wait_session(w, c, i, seq);
            return;
        }
        tracked = r == CLIENTS_QOS2_NEW;
    }
    if (pub->qos > 0) {
        if (s->version == 5 && s->inflight >= MQTT_RECEIVE_MAX) {
            refuse(w, c, 0x93); /* receive maximum exceeded */
            return;
        }
        if (pub->qos == 2 && !tracked && !qos2_room(s)) {
            refuse(w, c, s->qos2 ? 0x93 : 0x89); /* 3.1.1: closed */
            return;
        }
        s->inflight++;
        s->unanswered++;
    }
    uint8_t flags = pub->retain ? RECORD_F_RETAIN : 0;
    struct pending_ack *a = NULL;
    uint64_t cookie = pub->qos ? s->qtail : COOKIE_NO_ACK;
    if (pub->qos == 1) {
        a = queue_ack(s, MQTT_PUBACK, pk->packet_id);
        a->release = true;
    }
    if (pub->qos == 2) {
        a = queue_ack(s, MQTT_PUBREC, pk->packet_id);
        if (tracked)
            a->tracked = true;
        else
            s->qos2[s->nqos2++] = pk->packet_id;
    }
    if (a) a->answer = true;
    int rc = store(w, c, flags, pub->topic.p, pub->topic.n, pub->payload.p, pub->payload.n, cookie,
                   tracked ? clients_qos2_ticket(s->epoch, pk->packet_id) : 0);
    if (rc >= 0) worker_count(&w->st.mqtt_publishes, 1);
    if (rc == 0) {
        if (a) a->waiting++;
        return;
    }
    if (rc == 1) return;
    /* nothing of it was kept */
    if (pub->qos == 0) {
        refuse(w, c, rc == -EMSGSIZE || rc == -E2BIG ? 0x95 : 0x80);
        return;
    }
    if (pub->qos == 2) {
        if (tracked)
            clients_qos2_durable(w->eng, s->epoch, pk->packet_id, rc); /* the id is dropped */
        else
            qos2_drop(s, pk->packet_id);
        a->release = true; /* a PUBREC >= 0x80 ends the exchange */
    }
    if (s->version == 5)
        a->reason = rc == -EMSGSIZE || rc == -E2BIG ? 0x95 : 0x80;
    else
        a->failed = true;
}

static void on_pubrel(struct worker *w, struct conn *c, const struct mqtt_packet *pk)
{
    struct mqtt_sess *s = sess(c);
    bool known = qos2_has(s, pk->packet_id);
    uint64_t i = s->qtail, seq = 0;
    struct pending_ack *a = queue_ack(s, MQTT_PUBCOMP, pk->packet_id);
    if (known) {
        qos2_drop(s, pk->packet_id);
        a->release = true;
    } else if (s->kept && clients_qos2_release(w->eng, s->epoch, pk->packet_id, &seq)) {
        /* PUBCOMP once the release is in the store: a restart before it
         * answers a PUBREL sent again all the same */
        a->release = true;
        if (seq == UINT64_MAX) {
            refuse(w, c, 0x89); /* out of memory: the client sends PUBREL again */
            return;
        }
        wait_session(w, c, i, seq);
    } else if (s->version == 5) {
        a->reason = 0x92; /* packet identifier not found (3.1.1: PUBCOMP all the same) */
    }
}

static void on_packet(struct worker *w, struct conn *c, const struct mqtt_packet *pk)
{
    struct mqtt_sess *s = sess(c);
    uint8_t buf[1024];
    size_t n;
    switch (pk->type) {
    case MQTT_CONNECT:
        on_connect(w, c, pk);
        break;
    case MQTT_PUBLISH:
        on_publish(w, c, pk);
        break;
    case MQTT_PUBREL:
        on_pubrel(w, c, pk);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBCOMP:
        /* we never send a PUBLISH, so no id of ours can be acknowledged */
        refuse(w, c, 0x82);
        break;
    case MQTT_SUBSCRIBE:
        n = mqtt_encode_suback(buf, sizeof buf, s->version, pk);
        if (n)
            send_packet(w, c, buf, n);
        else
            refuse(w, c, 0x95);
        break;
    case MQTT_UNSUBSCRIBE:
        n = mqtt_encode_unsuback(buf, sizeof buf, s->version, pk);
        if (n)
            send_packet(w, c, buf, n);
        else
            refuse(w, c, 0x95);
        break;
    case MQTT_PINGREQ:
        n = mqtt_encode_pingresp(buf, sizeof buf);
        send_packet(w, c, buf, n);
        break;
    case MQTT_DISCONNECT:
        if (s->version == 5 && MQTT_HAS(&pk->props, MQTT_PROP_SESSION_EXPIRY)) {
            uint32_t want = pk->props.session_expiry;
            if (!s->expiry_s && want) {
                refuse(w, c, 0x82); /* [MQTT-3.14.2-2]: none asked at CONNECT */
                break;
            }
            s->expiry_s = want;
            if (s->claimed) {
                struct conn_ref me = {w->id, c->slot, c->gen};
                clients_set_expiry(w->eng, s->org, s->device, s->client_id, s->client_id_len, me,
                                   want < CLIENTS_EXPIRY_MAX ? want : CLIENTS_EXPIRY_MAX);
            }
        }
        /* 0x04: disconnect with will message; anything else drops the will */
        s->disconnected = !(s->version == 5 && pk->reason == 0x04);
        conn_stop(w, c);
        break;
    case MQTT_AUTH:
    default:
        refuse(w, c, s->version == 5 ? 0x82 : 0x81);
        break;
    }
}

static void set_deadline(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    const sluice_config *cfg = &w->eng->cfg;
    uint64_t deadline;
    if (!s->version)
        return; /* the CONNECT deadline set at open stands */
    else if (s->qhead != s->qtail || c->on_room)
        deadline = 0; /* the server, not the client, is what is slow */
    else if (s->keepalive_s)
        deadline = s->last_rx_ms + (uint64_t)s->keepalive_s * 1500u;
    else
        deadline = s->last_rx_ms + cfg->idle_timeout_ms;
    conn_set_deadline(w, c, deadline);
}

static size_t input(struct worker *w, struct conn *c, char *p, size_t *np)
{
    struct mqtt_sess *s = sess(c);
    size_t off = 0, n = *np;
    const uint8_t *u = (const uint8_t *)p;
    flush_acks(w, c);
    while (off < n && !c->stopped && !c->closing) {
        if (conn_output_full(c)) break; /* resumed when the client has read */
        if (queue_full(s)) {
            flush_acks(w, c); /* PUBCOMPs wait for nothing: they go now */
            if (c->closing) break;
        }
        if (queue_full(s)) {
            conn_block(c); /* resumed when a commit completes */
            break;
        }
        size_t total;
        int rc = mqtt_peek(u + off, n - off, &total);
        if (rc == MQTT_INCOMPLETE) break;
        if (rc < 0) {
            if (!s->version)
                conn_close(w, c);
            else
                refuse(w, c, 0x81);
            break;
        }
        if (total > max_packet(w)) {
            /* refused from its fixed header: none of it is buffered */
            if (!s->version) {
                conn_close(w, c);
            } else {
                refuse(w, c, 0x95);
            }
            break;
        }
        if (n - off < total) {
            /* the rest of a large packet: its whole buffer now (counted against
             * --max-request-memory), or wait while other connections hold it */
            if (!conn_can_hold(w, c, total)) {
                if (conn_others_hold(w, c))
                    conn_wait_room(w, c);
                else
                    refuse(w, c, 0x89); /* server busy */
            } else if (conn_reserve_input(w, c, total)) {
                refuse(w, c, 0x89);
            }
            break;
        }
        bool publish = (u[off] >> 4) == MQTT_PUBLISH;
        if (publish && !ingest_has_room(w)) {
            conn_wait_room(w, c); /* the commit budget is used up: reading stops */
            break;
        }
        if (publish && s->version == 4 && ((u[off] >> 1) & 3) &&
            s->unanswered >= MQTT_RECEIVE_MAX) {
            /* 3.1.1 has no receive maximum to announce: reading stops until
             * PUBACKs / PUBRECs leave, which needs only the disk (waiting for
             * PUBCOMPs would need the PUBRELs queued behind this PUBLISH) */
            conn_block(c);
            break;
        }
        struct mqtt_packet pk;
        rc = mqtt_parse(u + off, total, s->version, &pk);
        if (rc < 0) {
            if (!s->version) {
                /* a first packet that is a bad CONNECT gets its CONNACK refusal
                 * where one exists; anything else is just closed */
                if (pk.type == MQTT_CONNECT && pk.connect.level == 5)
                    connack(w, c, 5, pk.reason, false, NULL, 0);
                else if (pk.type == MQTT_CONNECT && pk.connect.level == 4 &&
                         mqtt_connack_v4_code(pk.reason) != 0xFF)
                    connack(w, c, 4, pk.reason, false, NULL, 0);
                else if (pk.type == MQTT_CONNECT && rc == MQTT_E_VERSION)
                    connack(w, c, 4, pk.reason, false, NULL, 0);
                else
                    conn_close(w, c);
            } else {
                refuse(w, c, pk.reason);
            }
            break;
        }
        off += total;
        s->last_rx_ms = w->now_ms;
        on_packet(w, c, &pk);
    }
    flush_acks(w, c);
    if (!c->closing) set_deadline(w, c);
    *np = n;
    return off;
}

static void durable(struct worker *w, struct conn *c, uint64_t cookie, int err)
{
    struct mqtt_sess *s = sess(c);
    if (cookie & COOKIE_NO_ACK) return; /* QoS 0: nothing to tell */
    struct pending_ack *a = &s->q[(cookie & ~COOKIE_SESSION) % MQTT_QUEUE];
    if (cookie & COOKIE_SESSION) { /* the session change it reports is stored */
        if (a->waiting) a->waiting--;
        return;
    }
    if (a->tracked) {
        /* the kept session's id is HELD now (or dropped), and PUBREC waits
         * until the store has it, so a restart still knows the exchange */
        uint64_t seq = clients_qos2_durable(w->eng, s->epoch, a->id, err);
        if (!err) wait_session(w, c, cookie, seq);
    }
    if (err) {
        if (a->type == MQTT_PUBREC) {
            if (!a->tracked) qos2_drop(s, a->id);
            a->release = true;
        }
        if (s->version == 5)
            a->reason = 0x80;
        else
            a->failed = true;
    }
    if (a->waiting) a->waiting--;
    s->last_rx_ms = w->now_ms;
}

static void timeout(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    if (!s->version || c->stopped || conn_output_full(c)) {
        /* no CONNECT in time, or an answer to close that was never taken */
        conn_close(w, c);
        return;
    }
    refuse(w, c, 0x8D); /* keep alive timeout */
    conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
}

static void drain(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    s->disconnected = true; /* the server ends it: not the device's will */
    conn_stop(w, c);
    if (s->qhead == s->qtail && s->version != 5) {
        conn_close(w, c);
        return;
    }
    conn_post(w, c); /* the acks due go out, then (MQTT 5) DISCONNECT 0x8B */
}

static bool idle(const struct conn *c)
{
    const struct mqtt_sess *s = sess(c);
    return s->qhead == s->qtail;
}

static void open_conn(struct worker *w, struct conn *c)
{
    /* the CONNECT must arrive within the header deadline from accept */
    conn_set_deadline(w, c, w->now_ms + w->eng->cfg.header_timeout_ms);
}

static void takeover(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    s->claimed = false; /* the id is the newer connection's now */
    refuse(w, c, 0x8E); /* session taken over */
}

static void close_conn(struct worker *w, struct conn *c)
{
    struct mqtt_sess *s = sess(c);
    if (s->claimed) {
        struct conn_ref me = {w->id, c->slot, c->gen};
        clients_release(w->eng, s->org, s->device, s->client_id, s->client_id_len, me);
        s->claimed = false;
    }
    if (s->will && !s->disconnected && s->version && !w->draining) {
        /* the connection ended without DISCONNECT: its will is a reading, durable
         * like any other though no one is left to be told */
        worker_count(&w->st.mqtt_wills, 1);
        store(w, c, RECORD_F_WILL | (s->will_retain ? RECORD_F_RETAIN : 0),
              (const uint8_t *)s->will, s->will_topic_len,
              (const uint8_t *)s->will + s->will_topic_len, s->will_len - s->will_topic_len,
              COOKIE_NO_ACK, 0);
    }
    free(s->will);
    s->will = NULL;
    if (s->aliases) {
        for (unsigned i = 1; i <= MQTT_TOPIC_ALIAS_MAX; i++)
            free(s->aliases->topic[i]);
        free(s->aliases);
        s->aliases = NULL;
    }
    free(s->client_id);
    s->client_id = NULL;
    free(s->qos2);
    s->qos2 = NULL;
    free(s->connack);
    s->connack = NULL;
}

const struct session_ops session_mqtt_ops = {
    .name = "mqtt",
    .session_size = sizeof(struct mqtt_sess),
    .max_input = max_input,
    .busy_reply = NULL,
    .open = open_conn,
    .input = input,
    .durable = durable,
    .timeout = timeout,
    .drain = drain,
    .idle = idle,
    .takeover = takeover,
    .close = close_conn,
};
