/* engine/udp.c — the frame protocol over UDP; see udp.h and
 * docs/frame-protocol.md §6. */
#include "engine/udp.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/clients.h"
#include "engine/devseq.h"
#include "engine/ingest.h"
#include "protocols/frame.h"
#include "protocols/frame_auth.h"

#define UDP_BUF_GROUP 1
#define UDP_BUFS      256 /* a power of two */
#define UDP_BUF_SIZE                                                                               \
    (UDP_DGRAM_MAX + sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_storage))
#define UDP_SESSIONS 16384u /* sessions at once; past it a handshake gets ERROR 0x05 */
#define UDP_REPLAY   1024u
#define UDP_BUCKET_S 16u /* the handshake nonce's clock step; 3 steps are accepted */
/* Handshakes completed in the last UDP_USED_MS (a CHALLENGE's life and more):
 * a step 3 seen again is a replay, and must not make a session again (it
 * would take the device over from its newer live one). Past UDP_USED of them
 * at once, a handshake gets ERROR 0x05 (busy), as at the session limit. */
#define UDP_USED    65536u /* a power of two */
#define UDP_USED_MS ((3u * UDP_BUCKET_S + 16u) * 1000u)
#define SID_LEN     8
#define MAC8        8

struct udp_sess {
    bool used, draining_sent, bye, ended;
    bool ack_due; /* listed in u->dirty: look at its ACK at the end of the turn */
    bool reack;   /* a datagram of readings stored already, or past a gap: ACK even unmoved */
    uint8_t id[SID_LEN];
    uint32_t gen;
    uint32_t next_id, next_dev; /* bucket chains: index + 1, 0 ends */
    uint32_t device, org;
    uint64_t auth_gen;
    uint8_t token_id[FRAME_TOKEN_ID_LEN];
    uint8_t key[FRAME_KEY_LEN];
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint64_t last_rx_ms;
    uint64_t max_dgram;
    uint64_t seen[UDP_REPLAY / 64];
    uint64_t expected; /* the next reading to store */
    uint64_t durable;  /* the device's mark, as last read */
    uint64_t acked;    /* the mark last sent in an ACK */
    uint64_t out_seq;  /* our datagrams */
    struct frame_clock clock;
    uint32_t inflight;
    uint8_t welcome[2 + FRAME_MAC_LEN + 4 * FRAME_VARINT_MAX];
    uint8_t welcome_len;
};

struct udp {
    int fd;
    bool armed, draining;
    struct io_uring_buf_ring *br;
    char *bufs;
    struct msghdr mh;
    uint8_t secret[32];
    struct udp_sess *s;
    uint32_t *by_id, *by_dev; /* UDP_SESSIONS buckets each */
    uint32_t *free_slots, nfree;
    uint32_t *dirty, ndirty;
    uint64_t sweep_ms;
    struct used_hs *used; /* UDP_USED slots, open addressing by session id */
};

struct used_hs {
    uint8_t id[SID_LEN];
    uint64_t until_ms; /* 0: never used */
};

static uint32_t bucket_of(const uint8_t *id)
{
    uint32_t h;
    memcpy(&h, id, 4); /* session ids are HMAC output: uniform already */
    return h & (UDP_SESSIONS - 1);
}

static uint32_t dev_bucket(uint32_t device)
{
    return (device * 2654435761u) & (UDP_SESSIONS - 1);
}

static struct udp_sess *find_id(struct udp *u, const uint8_t *id)
{
    for (uint32_t i = u->by_id[bucket_of(id)]; i; i = u->s[i - 1].next_id)
        if (!memcmp(u->s[i - 1].id, id, SID_LEN)) return &u->s[i - 1];
    return NULL;
}

static struct udp_sess *find_dev(struct udp *u, uint32_t device)
{
    for (uint32_t i = u->by_dev[dev_bucket(device)]; i; i = u->s[i - 1].next_dev)
        if (u->s[i - 1].device == device) return &u->s[i - 1];
    return NULL;
}

static uint32_t idx_of(const struct udp *u, const struct udp_sess *s)
{
    return (uint32_t)(s - u->s);
}

static void unlink_chain(struct udp *u, uint32_t *head, uint32_t me, bool dev)
{
    for (uint32_t *p = head; *p; p = dev ? &u->s[*p - 1].next_dev : &u->s[*p - 1].next_id)
        if (*p == me + 1) {
            *p = dev ? u->s[me].next_dev : u->s[me].next_id;
            return;
        }
}

static void mark_dirty(struct udp *u, struct udp_sess *s)
{
    if (s->ack_due) return;
    s->ack_due = true;
    u->dirty[u->ndirty++] = idx_of(u, s);
}

static void send_raw(struct udp *u, const struct sockaddr_storage *to, socklen_t tolen,
                     const void *p, size_t n)
{
    /* a full socket buffer drops it: the device resends what is not acked */
    if (sendto(u->fd, p, n, MSG_DONTWAIT, (const struct sockaddr *)to, tolen) < 0) return;
}

/* A session datagram to s: frames f[0..n), numbered and MACed. */
static void send_session(struct udp *u, struct udp_sess *s, const uint8_t *f, size_t n)
{
    uint8_t out[SID_LEN + FRAME_VARINT_MAX + 256 + MAC8];
    if (n > 256 || !s->peer_len) return; /* made over TCP, no datagram yet: nowhere to send */
    memcpy(out, s->id, SID_LEN);
    size_t h = SID_LEN + frame_put_varint(out + SID_LEN, ++s->out_seq);
    memcpy(out + h, f, n);
    if (frame_auth_udp_mac(s->key, 1, out, h, f, n, out + h + n)) return;
    send_raw(u, &s->peer, s->peer_len, out, h + n + MAC8);
}

static void send_handshake(struct udp *u, const struct sockaddr_storage *to, socklen_t tolen,
                           const uint8_t *f, size_t n)
{
    uint8_t out[SID_LEN + 256];
    if (!n || n > 256) return;
    memset(out, 0, SID_LEN);
    memcpy(out + SID_LEN, f, n);
    send_raw(u, to, tolen, out, SID_LEN + n);
}

static void send_error(struct udp *u, struct udp_sess *s, const struct sockaddr_storage *to,
                       socklen_t tolen, uint8_t code, uint64_t seq, const char *msg)
{
    uint8_t f[2 + FRAME_VARINT_MAX + 1 + FRAME_VARINT_MAX + FRAME_MESSAGE_MAX];
    size_t n = frame_encode_error(f, sizeof f, code, seq, msg);
    if (s)
        send_session(u, s, f, n);
    else
        send_handshake(u, to, tolen, f, n);
}

static void end_session(struct worker *w, struct udp_sess *s)
{
    struct udp *u = w->udp;
    if (!s->used) return;
    uint32_t me = idx_of(u, s);
    devseq_release(&w->eng->devseq, s->device, (struct conn_ref){w->id, UDP_SLOT_BIT | me, s->gen});
    unlink_chain(u, &u->by_id[bucket_of(s->id)], me, false);
    unlink_chain(u, &u->by_dev[dev_bucket(s->device)], me, true);
    s->used = false;
    s->gen++;
    explicit_bzero(s->key, sizeof s->key);
    u->free_slots[u->nfree++] = me;
}

/* Slot s (the last free one, whose devseq ref the device's claim named)
 * becomes the live session sid of device, its readings expected from
 * durable + 1 (a next_seq past it was recorded as a gap by the claim). No
 * address yet: the caller's, or the first verified datagram's. */
static void open_session(struct worker *w, struct udp_sess *s, const uint8_t sid[SID_LEN],
                         const uint8_t key[FRAME_KEY_LEN], uint32_t device, uint32_t org,
                         const uint8_t token_id[FRAME_TOKEN_ID_LEN], uint64_t durable)
{
    struct udp *u = w->udp;
    uint32_t me = idx_of(u, s);
    u->nfree--;
    uint32_t gen = s->gen;
    memset(s, 0, sizeof *s);
    s->gen = gen;
    s->used = true;
    memcpy(s->id, sid, SID_LEN);
    memcpy(s->key, key, FRAME_KEY_LEN);
    s->device = device;
    s->org = org;
    s->auth_gen = w->auth_gen;
    memcpy(s->token_id, token_id, FRAME_TOKEN_ID_LEN);
    s->last_rx_ms = w->now_ms; /* the idle timeout runs from the making */
    s->durable = s->acked = durable;
    s->expected = durable + 1;
    s->next_id = u->by_id[bucket_of(sid)];
    u->by_id[bucket_of(sid)] = me + 1;
    s->next_dev = u->by_dev[dev_bucket(device)];
    u->by_dev[dev_bucket(device)] = me + 1;
}

/* ---- the handshake ---- */

static uint32_t now_bucket(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec / UDP_BUCKET_S);
}

static int make_nonce(const struct udp *u, uint32_t bucket, const struct sockaddr_storage *peer,
                      socklen_t plen, const uint8_t *hello, size_t hn, uint8_t nonce[16])
{
    uint8_t msg[4 + sizeof(struct sockaddr_storage) + 160], mac[32];
    if (hn > 160) return -EINVAL;
    msg[0] = (uint8_t)(bucket >> 24);
    msg[1] = (uint8_t)(bucket >> 16);
    msg[2] = (uint8_t)(bucket >> 8);
    msg[3] = (uint8_t)bucket;
    memcpy(msg + 4, peer, plen);
    memcpy(msg + 4 + plen, hello, hn);
    if (frame_auth_hmac(u->secret, sizeof u->secret, msg, 4 + plen + hn, mac)) return -EIO;
    memcpy(nonce, msg, 4);
    memcpy(nonce + 4, mac, 12);
    return 0;
}

static void on_hello(struct worker *w, const struct sockaddr_storage *peer, socklen_t plen,
                     const struct frame *h, const uint8_t *raw)
{
    struct udp *u = w->udp;
    if (h->u.hello.version != FRAME_VERSION) {
        send_error(u, NULL, peer, plen, 0x01, 0, "speaks 1");
        return;
    }
    const struct auth_keys *k;
    const struct auth_entry *e = auth_table_lookup_id(w->auth, h->u.hello.token_id, &k);
    uint64_t hint =
        e && e->state == STORE_DEVICE_ACTIVE ? devseq_durable(&w->eng->devseq, e->device) : 0;
    uint8_t nonce[16], f[2 + 16 + FRAME_VARINT_MAX];
    if (make_nonce(u, now_bucket(), peer, plen, raw, h->total, nonce)) return;
    send_handshake(u, peer, plen, f, frame_encode_challenge(f, sizeof f, nonce, hint));
}

/* Records handshake id as used. Returns 1 when it is already (a replay), 0
 * when recorded now, -ENOSPC when every slot holds a live one. */
static uint32_t used_home(const uint8_t *id)
{
    uint32_t h;
    memcpy(&h, id + 4, 4); /* HMAC output: uniform already */
    return h & (UDP_USED - 1);
}

static int use_handshake(struct udp *u, const uint8_t *id, uint64_t now_ms)
{
    uint32_t h = used_home(id), free_at = UINT32_MAX;
    for (uint32_t n = 0; n < UDP_USED; n++, h = (h + 1) & (UDP_USED - 1)) {
        struct used_hs *e = &u->used[h];
        bool live = e->until_ms > now_ms;
        if (live && !memcmp(e->id, id, SID_LEN)) return 1;
        if (!live && free_at == UINT32_MAX) free_at = h;
        if (!e->until_ms) break; /* never used: the id is not further on */
    }
    if (free_at == UINT32_MAX) return -ENOSPC;
    memcpy(u->used[free_at].id, id, SID_LEN);
    u->used[free_at].until_ms = now_ms + UDP_USED_MS;
    return 0;
}

/* Expired entries stay as markers (a probe must go on past them); once a
 * second the table is rebuilt from its live entries, so probes stay short. */
static void used_sweep(struct udp *u, uint64_t now_ms)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i < UDP_USED; i++) {
        struct used_hs e = u->used[i];
        u->used[i].until_ms = 0;
        if (e.until_ms > now_ms) u->used[live++] = e; /* live <= i */
    }
    /* the live ones are packed at the front; put each back at its home */
    for (uint32_t i = 0; i < live; i++) {
        struct used_hs e = u->used[i];
        u->used[i].until_ms = 0;
        uint32_t h = used_home(e.id);
        while (u->used[h].until_ms)
            h = (h + 1) & (UDP_USED - 1);
        u->used[h] = e;
    }
}

static void on_proof(struct worker *w, const struct sockaddr_storage *peer, socklen_t plen,
                     const struct frame *h, const struct frame *ch, const struct frame *pf,
                     const uint8_t *raw)
{
    struct udp *u = w->udp;
    /* the CHALLENGE must be ours, for this HELLO from this address, and recent */
    const uint8_t *sn = ch->u.challenge.server_nonce;
    uint32_t b = (uint32_t)sn[0] << 24 | (uint32_t)sn[1] << 16 | (uint32_t)sn[2] << 8 | sn[3];
    uint32_t now = now_bucket();
    uint8_t want[16];
    if (b > now || now - b > 2 || make_nonce(u, b, peer, plen, raw, h->total, want)) return;
    uint8_t acc = 0;
    for (int i = 0; i < 16; i++)
        acc |= (uint8_t)(want[i] ^ sn[i]);
    if (acc) return; /* not our challenge: no answer (it may be a forged address) */

    size_t auth_len = h->total + ch->total, all = auth_len + pf->total;
    const struct auth_keys *k;
    const struct auth_entry *e = auth_table_lookup_id(w->auth, h->u.hello.token_id, &k);
    uint8_t ck[FRAME_KEY_LEN], key[FRAME_KEY_LEN], sid[SID_LEN];
    bool ok = e && e->state == STORE_DEVICE_ACTIVE &&
              frame_auth_verify_key(k->stored_key, raw, auth_len, pf->u.proof.proof, ck);
    if (!ok) {
        uint8_t a16[16];
        ratelimit_addr((const struct sockaddr *)peer, a16);
        bool allowed = ratelimit_allow(w->authrl, a16, w->now_ms);
        if (allowed) ratelimit_charge(w->authrl, a16, w->now_ms);
        worker_count(allowed ? &w->st.auth_failures : &w->st.auth_throttled, 1);
        if (allowed) send_error(u, NULL, peer, plen, 0x02, 0, "authentication failed");
        return;
    }
    int rc = frame_auth_session_key(ck, raw, all, key, sid);
    explicit_bzero(ck, sizeof ck);
    struct udp_sess *s;
    /* every way out before the session holds the key wipes it (at wipe:) */
    if (rc) goto wipe;
    if ((s = find_id(u, sid))) {
        /* our WELCOME was lost, or this is a replay: the same answer again,
         * to the session's address (only a MACed datagram moves it) */
        send_handshake(u, &s->peer, s->peer_len, s->welcome, s->welcome_len);
        goto wipe;
    }
    rc = use_handshake(u, sid, w->now_ms);
    if (rc == 1) goto wipe; /* the step 3 of a session that has ended: a replay, no answer */
    if (rc < 0 || !u->nfree) {
        send_error(u, NULL, peer, plen, 0x05, 0, "server busy");
        goto wipe;
    }
    uint32_t me;
    struct conn_ref ref, kick;
    bool must_kick;
    uint64_t durable, gap;
    for (int tries = 0;; tries++) {
        me = u->free_slots[u->nfree - 1];
        s = &u->s[me];
        ref = (struct conn_ref){w->id, UDP_SLOT_BIT | me, s->gen};
        rc = devseq_claim(&w->eng->devseq, e->device, ref, h->u.hello.next_seq, &durable, &kick,
                          &must_kick, &gap);
        if (!must_kick) break;
        if (!(kick.slot & UDP_SLOT_BIT) || kick.worker != w->id || tries) {
            clients_kick(w->eng, kick); /* a TCP connection, on its own worker's turn */
            break;
        }
        /* the device's older UDP session is ours: ended now, and the claim
         * goes again (it waits only if that session's commits are in flight) */
        udp_kick(w, kick.slot, kick.gen);
    }
    if (rc < 0) send_error(u, NULL, peer, plen, 0x05, 0, "out of memory");
    if (rc <= 0) goto wipe; /* an older connection is ending: the device asks again */
    open_session(w, s, sid, key, e->device, e->org, h->u.hello.token_id, durable);
    explicit_bzero(key, sizeof key);
    s->peer = *peer;
    s->peer_len = plen;
    if (gap) worker_count(&w->st.frame_gaps, gap);
    uint8_t sig[FRAME_MAC_LEN];
    if (frame_auth_server_signature(k->server_key, raw, all, sig)) {
        end_session(w, s);
        return;
    }
    s->welcome_len = (uint8_t)frame_encode_welcome(s->welcome, sizeof s->welcome, sig, durable,
                                                   UDP_DGRAM_MAX, UDP_WINDOW, NULL, 0);
    send_handshake(u, peer, plen, s->welcome, s->welcome_len);
    worker_count(&w->st.frame_sessions, 1);
    return;
wipe:
    explicit_bzero(key, sizeof key);
}

static void on_handshake(struct worker *w, const struct sockaddr_storage *peer, socklen_t plen,
                         const uint8_t *p, size_t n)
{
    struct frame f[3];
    size_t off = 0, nf = 0;
    while (off < n && nf < 3) {
        uint8_t type;
        size_t total;
        if (frame_peek(p + off, n - off, &type, &total) || total > n - off) return;
        int rc = frame_parse(p + off, total, &f[nf]);
        if (rc == FRAME_E_VERSION && nf == 0 && type == FRAME_HELLO) {
            send_error(w->udp, NULL, peer, plen, 0x01, 0, "speaks 1");
            return;
        }
        if (rc < 0) return; /* not a handshake: no answer */
        off += total;
        nf++;
    }
    if (off != n) return;
    if (nf == 1 && f[0].type == FRAME_HELLO) {
        on_hello(w, peer, plen, &f[0], p);
    } else if (nf == 3 && f[0].type == FRAME_HELLO && f[1].type == FRAME_CHALLENGE &&
               f[2].type == FRAME_PROOF && f[0].u.hello.version == FRAME_VERSION) {
        on_proof(w, peer, plen, &f[0], &f[1], &f[2], p);
    }
}

/* ---- session datagrams ---- */

/* Replay window: false when dgram seq was seen or is too old; else marks it. */
static bool fresh_dgram(struct udp_sess *s, uint64_t seq)
{
    if (!seq) return false;
    if (seq > s->max_dgram) {
        uint64_t step = seq - s->max_dgram;
        if (step >= UDP_REPLAY) {
            memset(s->seen, 0, sizeof s->seen);
        } else {
            for (uint64_t q = s->max_dgram + 1; q <= seq; q++)
                s->seen[(q % UDP_REPLAY) / 64] &= ~(1ull << (q % 64));
        }
        s->max_dgram = seq;
    } else if (s->max_dgram - seq >= UDP_REPLAY) {
        return false;
    } else if (s->seen[(seq % UDP_REPLAY) / 64] & (1ull << (seq % 64))) {
        return false;
    }
    s->seen[(seq % UDP_REPLAY) / 64] |= 1ull << (seq % 64);
    return true;
}

struct dg {
    struct worker *w;
    struct udp_sess *s;
    struct ingest_txn t;
    bool open, stop;
    bool reack; /* readings stored already, or past a gap: the device hears the mark again */
    uint32_t count;
    uint64_t cur;
    bool have_seq;
};

/* One reading numbered x->cur (a frame_readings callback). Returns 0, or an
 * ERROR code to end with. */
static int reading(void *ctx, uint64_t dev_ms, const struct frame_slice *pl)
{
    struct dg *x = ctx;
    struct worker *w = x->w;
    struct udp_sess *s = x->s;
    if (!x->have_seq) return 0x07;
    if (x->stop) return 0;
    uint64_t seq = x->cur++;
    if (seq < s->expected) { /* stored already: acknowledged again */
        x->reack = true;
        return 0;
    }
    if (seq > s->expected || s->expected - 1 >= s->durable + UDP_WINDOW || !ingest_has_room(w)) {
        x->stop = true; /* a gap (a datagram lost or overtaken), or no room: resent later */
        x->reack = true;
        return 0;
    }
    int rc = ingest_add_numbered(w, s->org, s->device, &x->t, &x->open, RECORD_PROTO_UDP, seq,
                                 dev_ms, pl->p, pl->n);
    if (rc) return rc == -EMSGSIZE ? 0x04 : 0x05;
    x->count++;
    s->expected++;
    return 0;
}

static void commit_dg(struct worker *w, struct udp_sess *s, struct dg *x)
{
    if (!x->open) return;
    x->open = false;
    if (!x->count || devseq_submit(&w->eng->devseq, s->device, x->count)) {
        s->expected -= x->count; /* not stored: taken again when resent */
        ingest_abort(&x->t);
        return;
    }
    if (ingest_commit(&x->t, NULL, devseq_ticket(s->device, x->count) | DEVSEQ_UDP)) {
        devseq_done(&w->eng->devseq, s->device, 0, 0);
        s->expected -= x->count;
        return;
    }
    s->inflight++;
}

static bool still_authorized(struct worker *w, struct udp_sess *s)
{
    if (s->auth_gen == w->auth_gen) return true;
    if (!auth_id_still_names(w->auth, s->token_id, s->device, s->org)) return false;
    s->auth_gen = w->auth_gen;
    return true;
}

static void on_session(struct worker *w, const struct sockaddr_storage *peer, socklen_t plen,
                       const uint8_t *p, size_t n)
{
    struct udp *u = w->udp;
    if (n < SID_LEN + 1 + MAC8) return;
    struct udp_sess *s = find_id(u, p);
    if (!s || s->ended) return;
    uint64_t dseq;
    int vl = frame_varint(p + SID_LEN, n - SID_LEN - MAC8, &dseq);
    if (vl <= 0) return;
    size_t h = SID_LEN + (size_t)vl;
    const uint8_t *body = p + h;
    size_t bn = n - h - MAC8;
    uint8_t mac[MAC8], acc = 0;
    if (frame_auth_udp_mac(s->key, 0, p, h, body, bn, mac)) return;
    for (int i = 0; i < MAC8; i++)
        acc |= (uint8_t)(mac[i] ^ p[n - MAC8 + i]);
    if (acc || !fresh_dgram(s, dseq)) return; /* forged, replayed or stale: no answer */
    s->peer = *peer; /* NAT rebinding: answers go where the device is now */
    s->peer_len = plen;
    s->last_rx_ms = w->now_ms;
    if (!still_authorized(w, s)) {
        send_error(u, s, NULL, 0, 0x02, s->expected, "token revoked");
        s->ended = true;
        end_session(w, s);
        return;
    }
    struct dg x = {.w = w, .s = s, .open = false};
    size_t off = 0;
    int err = 0;
    while (off < bn && !err) {
        uint8_t type;
        size_t total;
        struct frame f;
        if (frame_peek(body + off, bn - off, &type, &total) || total > bn - off ||
            frame_parse(body + off, total, &f) < 0) {
            err = 0x07;
            break;
        }
        off += total;
        switch (f.type) {
        case FRAME_SEQ:
            x.cur = f.u.num.value;
            x.have_seq = x.cur > 0;
            if (!x.have_seq) err = 0x07;
            break;
        case FRAME_READING:
        case FRAME_READING_TIMED:
        case FRAME_BATCH:
        case FRAME_BATCH_TIMED:
            err = frame_readings(&f, &s->clock, reading, &x);
            if (err == FRAME_E_PROTOCOL) err = 0x07;
            break;
        case FRAME_TIME:
            s->clock.t_ms = f.u.num.value;
            s->clock.set = 1;
            break;
        case FRAME_PING: {
            uint8_t pong[2];
            send_session(u, s, pong, frame_encode_empty(pong, sizeof pong, FRAME_PONG));
            break;
        }
        case FRAME_BYE:
            s->bye = true;
            break;
        default:
            err = 0x07;
            break;
        }
    }
    if (err) {
        uint64_t first = x.open ? s->expected - x.count : s->expected;
        if (x.open) {
            s->expected -= x.count;
            ingest_abort(&x.t);
        }
        send_error(u, s, NULL, 0, (uint8_t)err, first,
                   err == 0x04   ? "reading too large"
                   : err == 0x05 ? "storage unavailable"
                                 : "protocol error");
        s->ended = true;
        if (!s->inflight) end_session(w, s);
        return;
    }
    bool fresh = x.open && x.count; /* acknowledged when durable, the old ones with them */
    commit_dg(w, s, &x);
    /* new readings are acknowledged once durable (udp_durable); these now */
    if ((x.reack && !fresh) || s->bye) {
        s->reack = (x.reack && !fresh) || s->bye; /* BYE: the last ACK, whatever it says */
        mark_dirty(u, s);
    }
}

void udp_on_recv(struct worker *w, struct io_uring_cqe *cqe)
{
    struct udp *u = w->udp;
    if (!(cqe->flags & IORING_CQE_F_MORE)) u->armed = false;
    if (cqe->res < 0 || !(cqe->flags & IORING_CQE_F_BUFFER)) {
        if (!u->armed && !u->draining) udp_start(w); /* -ENOBUFS: buffers came back since */
        return;
    }
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    char *buf = u->bufs + (size_t)bid * UDP_BUF_SIZE;
    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, cqe->res, &u->mh);
    if (o && !(o->flags & MSG_TRUNC) && o->namelen <= sizeof(struct sockaddr_storage) &&
        !u->draining) {
        struct sockaddr_storage peer;
        memset(&peer, 0, sizeof peer);
        memcpy(&peer, io_uring_recvmsg_name(o), o->namelen);
        const uint8_t *p = io_uring_recvmsg_payload(o, &u->mh);
        size_t n = io_uring_recvmsg_payload_length(o, cqe->res, &u->mh);
        worker_count(&w->st.bytes_in, n);
        static const uint8_t zero[SID_LEN];
        if (n > SID_LEN && !memcmp(p, zero, SID_LEN))
            on_handshake(w, &peer, o->namelen, p + SID_LEN, n - SID_LEN);
        else
            on_session(w, &peer, o->namelen, p, n);
    }
    io_uring_buf_ring_add(u->br, buf, UDP_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(UDP_BUFS), 0);
    io_uring_buf_ring_advance(u->br, 1);
    if (!u->armed && !u->draining) udp_start(w);
}

void udp_durable(struct worker *w, uint32_t device, int err)
{
    struct udp *u = w->udp;
    if (!u) return;
    struct udp_sess *s = find_dev(u, device);
    if (!s) return;
    if (s->inflight) s->inflight--;
    if (err && !s->ended) {
        s->durable = devseq_durable(&w->eng->devseq, s->device);
        send_error(u, s, NULL, 0, 0x05, s->durable + 1, "storage unavailable");
        s->ended = true;
    }
    if (s->ended && !s->inflight) {
        end_session(w, s);
        return;
    }
    mark_dirty(u, s);
}

void udp_kick(struct worker *w, uint32_t slot, uint32_t gen)
{
    struct udp *u = w->udp;
    uint32_t me = slot & ~UDP_SLOT_BIT;
    if (!u || me >= UDP_SESSIONS || !u->s[me].used || u->s[me].gen != gen) return;
    struct udp_sess *s = &u->s[me];
    send_error(u, s, NULL, 0, 0x06, s->expected, "taken over by a newer connection");
    end_session(w, s); /* the newer one waits for our commits, not for us */
}

void udp_flush(struct worker *w)
{
    struct udp *u = w->udp;
    if (!u) return;
    for (uint32_t i = 0; i < u->ndirty; i++) {
        struct udp_sess *s = &u->s[u->dirty[i]];
        if (!s->used || !s->ack_due) continue;
        s->ack_due = false;
        /* one ACK per turn at most, whenever the mark moved: a device that
         * keeps readings in flight all the time hears of each commit */
        s->durable = devseq_durable(&w->eng->devseq, s->device);
        if (s->durable > s->acked || s->reack) {
            uint8_t f[2 + FRAME_VARINT_MAX];
            send_session(u, s, f, frame_encode_num(f, sizeof f, FRAME_ACK, s->durable));
            s->acked = s->durable;
            s->reack = false;
        }
        /* BYE and draining end the session once its commits completed (their
         * completion lists it again) */
        if ((s->bye || u->draining) && !s->inflight) {
            if (u->draining) send_error(u, s, NULL, 0, 0x08, s->expected, "server shutting down");
            end_session(w, s);
        }
    }
    u->ndirty = 0;
}

void udp_tick(struct worker *w)
{
    struct udp *u = w->udp;
    if (!u) return;
    udp_take_offers(w); /* a wake lost to nothing, in case: no offer waits past a tick */
    if (w->now_ms < u->sweep_ms + 1000) return;
    u->sweep_ms = w->now_ms;
    used_sweep(u, w->now_ms);
    for (uint32_t i = 0; i < UDP_SESSIONS; i++) {
        struct udp_sess *s = &u->s[i];
        if (!s->used || s->inflight) continue;
        if (w->now_ms >= s->last_rx_ms + w->eng->cfg.idle_timeout_ms) end_session(w, s);
    }
}

void udp_drain(struct worker *w)
{
    struct udp *u = w->udp;
    if (!u || u->draining) return;
    u->draining = true;
    if (u->armed) {
        struct io_uring_sqe *sqe = worker_sqe(w);
        io_uring_prep_cancel64(sqe, op_pack(OP_UDP_RECV, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, op_pack(OP_CANCEL, 0, UINT32_MAX));
    }
    /* each session's last ACK and ERROR 0x08 once its commits completed */
    for (uint32_t i = 0; i < UDP_SESSIONS; i++)
        if (u->s[i].used) mark_dirty(u, &u->s[i]);
}

void udp_free(struct worker *w)
{
    struct udp *u = w->udp;
    if (!u) return;
    if (u->br) io_uring_unregister_buf_ring(&w->ring, UDP_BUF_GROUP);
    if (u->br) munmap(u->br, UDP_BUFS * sizeof(struct io_uring_buf));
    if (u->s) explicit_bzero(u->s, UDP_SESSIONS * sizeof *u->s);
    free(u->s);
    free(u->by_id);
    free(u->by_dev);
    free(u->free_slots);
    free(u->dirty);
    free(u->used);
    free(u->bufs);
    explicit_bzero(u->secret, sizeof u->secret);
    free(u);
    w->udp = NULL;
    if (w->listen_fd[LISTENER_UDP] >= 0) close(w->listen_fd[LISTENER_UDP]);
    w->listen_fd[LISTENER_UDP] = -1;
}

static int setup(struct worker *w)
{
    struct udp *u = calloc(1, sizeof *u);
    if (!u) return SLUICE_ENOMEM;
    w->udp = u;
    u->fd = w->listen_fd[LISTENER_UDP];
    u->s = calloc(UDP_SESSIONS, sizeof *u->s);
    u->by_id = calloc(UDP_SESSIONS, sizeof *u->by_id);
    u->by_dev = calloc(UDP_SESSIONS, sizeof *u->by_dev);
    u->free_slots = malloc(UDP_SESSIONS * sizeof *u->free_slots);
    u->dirty = malloc(UDP_SESSIONS * sizeof *u->dirty);
    u->used = calloc(UDP_USED, sizeof *u->used);
    u->bufs = malloc((size_t)UDP_BUFS * UDP_BUF_SIZE);
    u->br = mmap(NULL, UDP_BUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                 MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (u->br == MAP_FAILED) u->br = NULL;
    if (!u->s || !u->by_id || !u->by_dev || !u->free_slots || !u->dirty || !u->used || !u->bufs ||
        !u->br || getrandom(u->secret, sizeof u->secret, 0) != (ssize_t)sizeof u->secret) {
        fprintf(stderr, "sluiced: udp: out of memory for its sessions and buffers\n");
        udp_free(w);
        return SLUICE_ENOMEM;
    }
    for (uint32_t i = 0; i < UDP_SESSIONS; i++)
        u->free_slots[i] = UDP_SESSIONS - 1 - i;
    u->nfree = UDP_SESSIONS;
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)u->br, .ring_entries = UDP_BUFS, .bgid = UDP_BUF_GROUP};
    int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (rc) {
        fprintf(stderr, "sluiced: udp: io_uring buffer ring: %s\n", strerror(-rc));
        munmap(u->br, UDP_BUFS * sizeof(struct io_uring_buf));
        u->br = NULL;
        udp_free(w);
        return SLUICE_ENOURING;
    }
    io_uring_buf_ring_init(u->br);
    for (unsigned i = 0; i < UDP_BUFS; i++)
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * UDP_BUF_SIZE, UDP_BUF_SIZE,
                              (unsigned short)i, io_uring_buf_ring_mask(UDP_BUFS), (int)i);
    io_uring_buf_ring_advance(u->br, UDP_BUFS);
    u->mh.msg_namelen = sizeof(struct sockaddr_storage);
    return 0;
}

int udp_start(struct worker *w)
{
    if (w->listen_fd[LISTENER_UDP] < 0) return 0;
    if (!w->udp) {
        int rc = setup(w);
        if (rc) return rc;
    }
    struct udp *u = w->udp;
    if (u->armed || u->draining) return 0;
    struct io_uring_sqe *sqe = worker_sqe(w);
    io_uring_prep_recvmsg_multishot(sqe, u->fd, &u->mh, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = UDP_BUF_GROUP;
    io_uring_sqe_set_data64(sqe, op_pack(OP_UDP_RECV, 0, 0));
    u->armed = true;
    return 0;
}

/* ---- sessions made over TCP (udp.h) ---- */

enum { MAIL_FREE, MAIL_POSTED, MAIL_ANSWERED };

struct mail_entry {
    uint8_t state;
    uint8_t answer;
    bool noticed;    /* its connection's worker was told (udp_take_answers) */
    uint32_t serial; /* with the index, the ticket: a reused entry is not the old one */
    struct udp_offer o;
    uint64_t durable;
    struct conn_ref sess; /* UDP_MADE: the session, ended if the connection cancels */
};

struct udp_mail {
    pthread_mutex_t lock;
    uint32_t posted, serial;
    struct mail_entry v[UDP_MAIL_MAX];
};

#define TICKET_INDEX(t) ((t) % UDP_MAIL_MAX)

int udp_mail_init(struct sluice_engine *e)
{
    struct udp_mail *m = calloc(1, sizeof *m);
    if (!m || pthread_mutex_init(&m->lock, NULL)) {
        free(m);
        return SLUICE_ENOMEM;
    }
    e->udp_mail = m;
    return 0;
}

void udp_mail_free(struct sluice_engine *e)
{
    struct udp_mail *m = e->udp_mail;
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    explicit_bzero(m, sizeof *m); /* keys of offers worker 0 never took */
    free(m);
    e->udp_mail = NULL;
}

static void wake(struct worker *w)
{
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof one) < 0) {
        /* an eventfd counter does not overflow in practice */
    }
}

int udp_offer_post(struct sluice_engine *e, struct udp_offer *o, uint32_t *ticket)
{
    struct udp_mail *m = e->udp_mail;
    int rc = -ENOTCONN;
    if (!m) goto done;
    rc = -ENOSPC;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < UDP_MAIL_MAX; i++) {
        struct mail_entry *x = &m->v[i];
        if (x->state != MAIL_FREE) continue;
        /* serials step by UDP_MAIL_MAX so that index + serial is one number */
        m->serial += UDP_MAIL_MAX;
        *x = (struct mail_entry){.state = MAIL_POSTED, .serial = m->serial, .o = *o};
        *ticket = m->serial + i;
        m->posted++;
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0) wake(&e->workers[0]);
done:
    explicit_bzero(o->key, sizeof o->key);
    return rc;
}

/* The entry of ticket, or NULL when it is not that one any more (under the lock). */
static struct mail_entry *entry_of(struct udp_mail *m, uint32_t ticket)
{
    struct mail_entry *x = &m->v[TICKET_INDEX(ticket)];
    return x->state != MAIL_FREE && x->serial + TICKET_INDEX(ticket) == ticket ? x : NULL;
}

enum udp_answer udp_offer_answer(struct sluice_engine *e, uint32_t ticket, uint64_t *durable,
                                 struct conn_ref *session)
{
    struct udp_mail *m = e->udp_mail;
    enum udp_answer a = UDP_GONE;
    if (!m) return a;
    pthread_mutex_lock(&m->lock);
    struct mail_entry *x = entry_of(m, ticket);
    if (x && x->state == MAIL_POSTED) {
        a = UDP_PENDING;
    } else if (x) {
        a = (enum udp_answer)x->answer;
        *durable = x->durable;
        *session = x->sess;
        explicit_bzero(x, sizeof *x); /* MAIL_FREE */
    }
    pthread_mutex_unlock(&m->lock);
    return a;
}

void udp_offer_cancel(struct sluice_engine *e, uint32_t ticket)
{
    struct udp_mail *m = e->udp_mail;
    if (!m) return;
    struct conn_ref end = {0, 0, 0};
    bool made = false;
    pthread_mutex_lock(&m->lock);
    struct mail_entry *x = entry_of(m, ticket);
    if (x) {
        if (x->state == MAIL_POSTED) m->posted--;
        made = x->state == MAIL_ANSWERED && x->answer == UDP_MADE;
        end = x->sess;
        explicit_bzero(x, sizeof *x);
    }
    pthread_mutex_unlock(&m->lock);
    if (made) clients_kick(e, end); /* worker 0 ends it (udp_kick), at its next wake */
}

/* One offer (under the mailbox lock): the session made, or why not. */
static enum udp_answer make_offered(struct worker *w, struct mail_entry *x)
{
    struct udp *u = w->udp;
    struct udp_offer *o = &x->o;
    if (u->draining) return UDP_STOPPING;
    /* the token table may have changed since the connection's proof */
    if (!auth_id_still_names(w->auth, o->token_id, o->device, o->org)) return UDP_REVOKED;
    if (find_id(u, o->sid)) return UDP_GONE; /* an id made twice: never, with fresh nonces */
    if (!u->nfree) return UDP_FULL;
    /* recorded as any handshake's, so that no session of this id is made again */
    int rc = use_handshake(u, o->sid, w->now_ms);
    if (rc < 0) return UDP_FULL;
    if (rc == 1) return UDP_GONE;
    struct udp_sess *s = &u->s[u->free_slots[u->nfree - 1]];
    struct conn_ref ref = {w->id, UDP_SLOT_BIT | idx_of(u, s), s->gen};
    uint64_t durable;
    if (!devseq_hand(&w->eng->devseq, o->device, o->from, ref, &durable)) return UDP_GONE;
    open_session(w, s, o->sid, o->key, o->device, o->org, o->token_id, durable);
    x->durable = durable;
    x->sess = ref;
    return UDP_MADE;
}

void udp_take_offers(struct worker *w)
{
    struct sluice_engine *e = w->eng;
    struct udp_mail *m = e->udp_mail;
    if (!m || !w->udp) return;
    uint32_t tell[UDP_MAIL_MAX]; /* the workers to wake (one twice is harmless) */
    size_t nt = 0;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; m->posted && i < UDP_MAIL_MAX; i++) {
        struct mail_entry *x = &m->v[i];
        if (x->state != MAIL_POSTED) continue;
        x->answer = (uint8_t)make_offered(w, x);
        explicit_bzero(x->o.key, sizeof x->o.key); /* the session's copy is all there is now */
        x->state = MAIL_ANSWERED;
        m->posted--;
        if (x->o.from.worker < e->nworkers) tell[nt++] = x->o.from.worker;
    }
    pthread_mutex_unlock(&m->lock);
    for (size_t i = 0; i < nt; i++) {
        atomic_store_explicit(&e->workers[tell[i]].udp_answers, true, memory_order_release);
        wake(&e->workers[tell[i]]);
    }
}

size_t udp_take_answers(struct worker *w, struct conn_ref *out, size_t cap)
{
    struct udp_mail *m = w->eng->udp_mail;
    size_t n = 0;
    if (!m || !atomic_exchange_explicit(&w->udp_answers, false, memory_order_acq_rel)) return 0;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < UDP_MAIL_MAX && n < cap; i++) {
        struct mail_entry *x = &m->v[i];
        if (x->state != MAIL_ANSWERED || x->noticed || x->o.from.worker != w->id) continue;
        x->noticed = true;
        out[n++] = x->o.from;
    }
    pthread_mutex_unlock(&m->lock);
    if (n == cap) atomic_store(&w->udp_answers, true); /* more, perhaps: the next call */
    return n;
}
