/* sluice.h — the embeddable sluice ingestion engine (libsluice).
 *
 * A host fills a sluice_config (sluice_config_init, then sluice_config_set for
 * each option, with the same keys as sluiced's flags), starts the engine, and
 * later stops it. Every function returns 0 on success or a negative SLUICE_E*
 * code; sluice_strerror() names each one.
 *
 *     sluice_config cfg;
 *     sluice_config_init(&cfg);
 *     sluice_config_set(&cfg, "data-dir", "/var/lib/sluice", err, sizeof err);
 *     sluice_engine *eng;
 *     if (sluice_engine_start(&cfg, &eng, err, sizeof err) == 0) {
 *         ...                       // serve until the host decides to stop
 *         sluice_engine_stop(eng);  // drain: commit and acknowledge in-flight readings
 *         sluice_engine_wait(eng);  // joins the workers, frees the engine
 *     }
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_API __attribute__((visibility("default")))

enum sluice_error {
    SLUICE_OK = 0,
    SLUICE_EINVAL = -1,     /* bad configuration value */
    SLUICE_ENOMEM = -2,     /* out of memory */
    SLUICE_EIO = -3,        /* I/O error on the data directory */
    SLUICE_EADDRINUSE = -4, /* a listen address is in use */
    SLUICE_ENOURING = -5,   /* io_uring refused by the kernel or a seccomp profile */
    SLUICE_ESTORE = -6,     /* the credential store (LMDB) failed to open */
    SLUICE_ELISTEN = -7,    /* a listener could not be created (bad address, permission) */
};

/* How a batch is made durable (--fsync batch|always): its write followed by a
 * linked fdatasync, or one write with RWF_DSYNC, which a device that honours
 * FUA completes without flushing its whole cache. */
#define SLUICE_COMMITS_IN_FLIGHT_MAX 16 /* --commits-in-flight */

enum sluice_dsync {
    SLUICE_DSYNC_AUTO, /* RWF_DSYNC where the data dir's device says queue/fua 1 */
    SLUICE_DSYNC_OFF,  /* write + fdatasync */
    SLUICE_DSYNC_ON,   /* RWF_DSYNC writes */
};

enum sluice_fsync {
    SLUICE_FSYNC_BATCH = 0, /* group commit: ack after the batch's fdatasync */
    SLUICE_FSYNC_ALWAYS,    /* one fdatasync per request, no batching across requests */
    SLUICE_FSYNC_INTERVAL,  /* ack after write; fdatasync every fsync_interval_ms */
    SLUICE_FSYNC_NEVER,     /* ack after write; the kernel decides when data hits the disk */
};

#define SLUICE_ADDR_MAX 128
#define SLUICE_PATH_MAX 1024

/* Listen addresses are "HOST:PORT", "[v6]:PORT", or "" when the listener is off. */
typedef struct sluice_config {
    char data_dir[SLUICE_PATH_MAX];
    int threads; /* 0: one per online CPU */
    char http[SLUICE_ADDR_MAX];
    char https[SLUICE_ADDR_MAX];
    char mqtt[SLUICE_ADDR_MAX];
    char mqtts[SLUICE_ADDR_MAX];
    char frame[SLUICE_ADDR_MAX];
    char frames[SLUICE_ADDR_MAX]; /* the frame protocol inside TLS; "" = off */
    char udp[SLUICE_ADDR_MAX];
    char admin[SLUICE_ADDR_MAX];
    char tls_cert[SLUICE_PATH_MAX];
    char tls_client_ca[SLUICE_PATH_MAX]; /* "" : no client certificates (mutual TLS off) */
    char tls_key[SLUICE_PATH_MAX];
    char ports_file[SLUICE_PATH_MAX];
    enum sluice_fsync fsync;
    unsigned fsync_interval_ms;
    uint64_t max_body;           /* bytes, after decompression too */
    unsigned header_timeout_ms;  /* absolute deadline for a request's header block */
    unsigned body_timeout_ms;    /* absolute deadline for its body, from the end of the head */
    unsigned idle_timeout_ms;    /* keep-alive connection with no request in progress */
    unsigned drain_timeout_ms;   /* graceful stop: how long requests in progress may take */
    unsigned max_connections;    /* per worker; 0: derived from the open files limit */
    bool direct_io;              /* append with O_DIRECT where the filesystem allows (default on) */
    uint64_t segment_bytes;      /* a log segment rolls before growing past this */
    uint64_t segment_age_ms;     /* ... or once older than this (0: no age limit) */
    uint64_t retention_ms;       /* per org: delete sealed segments older than this (0: keep) */
    uint64_t retention_bytes;    /* per org: delete oldest sealed segments beyond this (0: keep) */
    unsigned auth_fail_rate;     /* failed authentications per second per client address, per
                                    worker (burst twice that); beyond it 429. 0: no limit */
    uint64_t max_pending_bytes;  /* per worker: record bytes waiting for their commit; past it
                                    the worker stops reading new requests (backpressure) */
    uint64_t max_request_memory; /* per worker: bytes of unfinished requests held in memory;
                                    past it a Content-Length body waits for room,
                                    a chunked one is answered 503 */
    uint64_t log_idle_timeout_ms; /* an org log unwritten this long is closed (0: never) */
    unsigned commits_in_flight;   /* per log: batches being written and synced at once, each
                                     acknowledged only after every earlier one (1..16); direct
                                     writes only, through the page cache one is in flight */
    enum sluice_dsync dsync;      /* how a batch is made durable */
} sluice_config;

/* Fills cfg with the defaults of INTERFACE.md (data dir ./data, all listeners on
 * their default ports, fsync batch, 1 MiB bodies ...). */
SLUICE_API void sluice_config_init(sluice_config *cfg);

/* Sets one option by its flag name without dashes ("data-dir", "threads",
 * "http", "fsync", "max-body", "header-timeout" ...; '_' may stand for '-').
 * Returns 0, or SLUICE_EINVAL with a one-line reason naming the key in err. */
SLUICE_API int sluice_config_set(sluice_config *cfg, const char *key, const char *value, char *err,
                                 size_t errcap);

/* Lists the option keys with their defaults and meaning, one per line, to help. */
SLUICE_API const char *sluice_config_help(void);

typedef struct sluice_engine sluice_engine;

/* Opens the data directory and credential store, binds every listener (so a port
 * in use fails here, before any thread starts), writes the ports file, and starts
 * one worker thread per configured core. The config is copied. On failure returns
 * a SLUICE_E* code and a one-line reason in err; nothing is left running. */
SLUICE_API int sluice_engine_start(const sluice_config *cfg, sluice_engine **out, char *err,
                                   size_t errcap);

/* The port a listener is bound to ("http", "admin" ...), or 0 when it is off.
 * addr (SLUICE_ADDR_MAX bytes) receives "HOST:PORT" when not NULL. */
SLUICE_API unsigned sluice_engine_port(const sluice_engine *eng, const char *listener, char *addr);

/* Asks the engine to stop: workers stop accepting, finish the requests in
 * progress (committing and acknowledging them), close connections, and exit.
 * Async-signal-safe; returns at once. */
SLUICE_API void sluice_engine_stop(sluice_engine *eng);

/* True once the engine is stopping: sluice_engine_stop was called, or a worker
 * hit a fatal error and stopped the others. sluice_engine_wait then returns
 * soon. Safe from any thread while the engine exists (before sluice_engine_wait
 * frees it). */
SLUICE_API bool sluice_engine_stopping(const sluice_engine *eng);

/* Loads the TLS certificate and key again from their files (SIGHUP): new
 * connections get the new pair, live ones go on with the one they started
 * with. On failure (err gets one line: a bad file, a key that does not match)
 * the current pair stays and SLUICE_EINVAL is returned (also when no TLS
 * listener is on). From one thread at a time, while the engine serves. */
SLUICE_API int sluice_engine_reload_tls(sluice_engine *eng, char *err, size_t errcap);

/* Waits for the workers to exit and frees the engine. Returns 0, or the first
 * error a worker hit. */
SLUICE_API int sluice_engine_wait(sluice_engine *eng);

SLUICE_API const char *sluice_strerror(int code);

/* ---- The frame protocol's device client (docs/frame-protocol.md) ----
 *
 * A device sends readings to sluiced's frame listener (--frame, TCP; or
 * --udp with cfg.udp set, §6 of the protocol) and learns which of them are
 * durable. The client is libc and POSIX sockets only
 * (client/frame_client.c, client/sha256.c and protocols/frame.c build alone,
 * for embedded Linux or a small RTOS with a sockets layer). It never
 * allocates: the caller gives it one block of memory, sized by
 * sluice_frame_client_size(), which holds the client and the ring of readings
 * not yet acknowledged. No global state; one client per thread at a time.
 *
 *     sluice_frame_config cfg;
 *     sluice_frame_config_init(&cfg);
 *     cfg.host = "ingest.example.com";
 *     cfg.port = 7000;
 *     cfg.token = "slk_...";               // only keys derived from it are kept
 *     cfg.max_readings = 256;              // the ring: 256 readings, 8 KiB of payloads
 *     cfg.ring_bytes = 8192;
 *     static unsigned char mem[16384];     // >= sluice_frame_client_size(&cfg)
 *     sluice_frame_client *c;
 *     int rc = sluice_frame_client_init(&c, mem, sizeof mem, &cfg);
 *     if (rc == 0) rc = sluice_frame_client_send(c, "{\"t\":21.5}", 10); // held until acked
 *     if (rc == 0) rc = sluice_frame_client_flush(c);  // 0: every reading is on disk
 *     if (rc) fprintf(stderr, "%s\n", sluice_frame_strerror(rc));
 *     sluice_frame_client_close(c);        // BYE; held readings stay in mem
 *
 * Delivery: every reading stays in the ring until an ACK (or a WELCOME)
 * covers its sequence number. When the connection breaks, the next call
 * reconnects (with a backoff of 100 ms doubling to 5 s) and sends the held
 * readings again under their numbers, so the server stores each exactly once.
 *
 * Blocking: every call waits at most cfg.timeout_ms (poll() on a non-blocking
 * socket) except for a host name's lookup, which getaddrinfo() does without a
 * deadline, and with libc's allocations. An address literal as cfg.host
 * ("192.0.2.7", "2001:db8::7") skips both; so does a dial function.
 *
 * Port points: cfg.random (the nonce source; default getrandom()),
 * cfg.dial (the TCP transport; default TCP to host:port) and cfg.dial_dgram
 * (the UDP one; default a UDP socket connect()ed to host:port).
 *
 * UDP (cfg.udp): the same calls, over the protocol's datagrams (§6). The
 * handshake is HELLO, then HELLO|CHALLENGE|PROOF, each repeated after 1 s
 * (doubling) while no answer comes; a WELCOME whose signature does not verify
 * is ignored there (anyone can send a datagram) and said as
 * SLUICE_FRAME_ESIGNATURE only when no good one came in time. Readings go in
 * datagrams of at most cfg.dgram_max bytes (one reading larger than that
 * goes alone), each numbered by a SEQ frame. 8 to 32 datagrams (cfg.batch
 * readings each) are unacknowledged at once: the flight grows with each one
 * acknowledged and halves at a loss, since a resend repeats all of it. The
 * server stores in order, so the client resends from the oldest reading not
 * acknowledged when no ACK covers it within 2 round trips (at least 200 ms,
 * doubling to 5 s), or at once when an ACK that does not move says the
 * server met a gap.
 * After 3 resends without any answer the session counts as lost (a server
 * that restarted knows none): SLUICE_FRAME_ECLOSED, and the next call shakes
 * hands again. Datagrams of another session, with a bad MAC, or replayed are
 * ignored (counted in stats.ignored). A session's ERROR ends it as over TCP
 * (0x05 and 0x08 are retried with a new handshake; 0x02, 0x06, 0x07 are
 * final); a handshake's ERROR carries no MAC, as the protocol has it. Held
 * readings that a WELCOME covers are taken as acknowledged and the rest go on
 * under their numbers (§4: SEQ numbers them explicitly, so nothing shifts).
 * With cfg.tcp_port the handshake goes over TCP instead (HELLO, CHALLENGE,
 * PROOF, WELCOME on a stream that the server then closes; no repeats, and an
 * ERROR there, such as 0x07 from a server without --udp, is final as any
 * handshake's), and the session's datagrams as above; a lost session shakes
 * hands over TCP again.
 * Timers only run inside the calls: a device that stops calling resends
 * nothing, and a session idle past the server's --idle-timeout is found lost
 * by the next call's resends.
 *
 * Return codes: 0, a SLUICE_FRAME_E* code, or -errno from the socket layer
 * (-ECONNREFUSED ...). sluice_frame_strerror() names all of them. An ERROR
 * frame from the server maps to SLUICE_FRAME_ECODE(its code); the frame's
 * code, seq and message stay readable (sluice_frame_client_last_error).
 */

#define SLUICE_FRAME_ECODE(code) (-(0x100 + (int)(code))) /* ERROR frame `code` */

enum sluice_frame_error {
    SLUICE_FRAME_EVERSION = SLUICE_FRAME_ECODE(0x01),  /* server does not speak version 1 */
    SLUICE_FRAME_EAUTH = SLUICE_FRAME_ECODE(0x02),     /* token unknown, revoked, or bad proof */
    SLUICE_FRAME_EQUOTA = SLUICE_FRAME_ECODE(0x03),    /* the org's quota: retry later */
    SLUICE_FRAME_ETOOBIG = SLUICE_FRAME_ECODE(0x04),   /* a reading over the server's limits */
    SLUICE_FRAME_ESTORAGE = SLUICE_FRAME_ECODE(0x05),  /* server storage unavailable (retried) */
    SLUICE_FRAME_ETAKEN = SLUICE_FRAME_ECODE(0x06),    /* a newer connection of this token */
    SLUICE_FRAME_EPROTOCOL = SLUICE_FRAME_ECODE(0x07), /* the server saw a protocol error */
    SLUICE_FRAME_ESHUTDOWN = SLUICE_FRAME_ECODE(0x08), /* server shutting down (retried) */
    SLUICE_FRAME_EIDLE = SLUICE_FRAME_ECODE(0x09),     /* idle or handshake timeout (retried) */
    SLUICE_FRAME_EINVAL = -0x201,     /* bad config or argument; memory too small */
    SLUICE_FRAME_ESIGNATURE = -0x202, /* the server's WELCOME signature is wrong: refused */
    SLUICE_FRAME_EBADFRAME = -0x203,  /* the server sent a frame that does not parse or fit */
    SLUICE_FRAME_ETIMEDOUT = -0x204,  /* the call's deadline (cfg.timeout_ms) passed */
    SLUICE_FRAME_ECLOSED = -0x205,    /* the server closed the connection */
    SLUICE_FRAME_ERESOLVE = -0x206,   /* the host name did not resolve */
    SLUICE_FRAME_ERANDOM = -0x207,    /* the random source failed */
    SLUICE_FRAME_ELARGE = -0x208,     /* payload over cfg.max_reading or the server's max_frame */
};

typedef struct sluice_frame_config {
    const char *host; /* name or address, copied at init (< 256 bytes) */
    unsigned port;
    const char *token;     /* "slk_..."; read at init, only derived keys are kept */
    uint32_t max_readings; /* ring: readings held unacknowledged (default 1024) */
    uint32_t ring_bytes;   /* ring: payload bytes held (default 64 KiB) */
    uint32_t max_reading;  /* the largest payload (default 1024); also sizes the
                              send buffer, which bounds a BATCH: max(max_reading
                              + 16, 1024) bytes */
    uint32_t batch;        /* readings per BATCH frame; send() transmits once this
                              many are waiting (default 1: a READING frame each,
                              sent at once) */
    unsigned timeout_ms;   /* the most any call blocks (default 10000) */
    uint64_t first_seq;    /* the number of the first reading queued before the
                              first WELCOME, for a device that keeps its numbering
                              across restarts; 0 (default): the server numbers
                              them after its high-water mark */
    /* The random source, the port point for a platform without getrandom():
     * fills buf with n unpredictable bytes, returns 0 or negative. NULL:
     * getrandom(). Called once per connection (the 16-byte client nonce;
     * over UDP also when a handshake starts again from HELLO). */
    int (*random)(void *arg, void *buf, size_t n);
    /* The transport: returns a connected stream socket (the client sets it
     * non-blocking and closes it) or -errno, within timeout_ms. NULL: TCP to
     * host:port (an address literal directly, a name by getaddrinfo()). */
    int (*dial)(void *arg, const char *host, unsigned port, unsigned timeout_ms);
    void *arg;          /* passed to random, dial and dial_dgram */
    int udp;            /* non-zero: UDP (sluiced --udp, §6) instead of TCP */
    uint32_t dgram_max; /* UDP: the largest datagram sent, bytes (0: 1200, safe on any
                           path; at least 64). Also sizes the send buffer. */
    /* The UDP transport: returns a datagram socket connect()ed to the
     * server (the client sets it non-blocking, uses send() and recv(), and
     * closes it; one per handshake, so an older session's datagrams are not
     * read) or -errno. NULL: UDP to host:port (an address literal directly, a
     * name by getaddrinfo()). */
    int (*dial_dgram)(void *arg, const char *host, unsigned port, unsigned timeout_ms);
    /* UDP: shake hands over TCP instead, on this port of host (sluiced
     * --frame; §6 "Handshake over TCP"), with cfg.dial; the readings still
     * go in datagrams to host:port. 0 (default): over UDP. Only with cfg.udp
     * (else init says EINVAL). */
    unsigned tcp_port;
} sluice_frame_config;

typedef struct sluice_frame_client sluice_frame_client;

typedef struct sluice_frame_stats {
    uint64_t queued;      /* readings accepted by sluice_frame_client_send */
    uint64_t sent;        /* readings written to the wire, resends included */
    uint64_t resent;      /* ... of which were resends after a reconnect */
    uint64_t acked;       /* readings acknowledged durable (each once) */
    uint64_t bytes_out;   /* every byte written, handshakes included */
    uint64_t bytes_in;    /* every byte read */
    uint64_t connects;    /* handshakes completed (WELCOME verified) */
    uint64_t first_seq;   /* the first sequence number given to a reading (0: none) */
    uint64_t last_seq;    /* the last one */
    uint64_t durable_seq; /* the server's highest durable one, as last heard */
    uint64_t dropped;     /* readings given up (sluice_frame_client_drop) */
    uint32_t held;        /* readings in the ring (not yet acknowledged) */
    uint32_t window;      /* the server's window, from the last WELCOME (0: none yet) */
    uint64_t ignored;     /* UDP: datagrams ignored (bad MAC, another session's, replayed,
                             a WELCOME whose signature does not verify) */
} sluice_frame_stats;

/* Fills cfg with the defaults above; host, port and token are left empty. */
SLUICE_API void sluice_frame_config_init(sluice_frame_config *cfg);

/* The bytes of memory a client with this config needs (ring included), or 0
 * when the config is invalid. */
SLUICE_API size_t sluice_frame_client_size(const sluice_frame_config *cfg);

/* Sets up a client in mem[0..memlen) (the caller's: static, stack or heap; no
 * alignment needed) and derives its keys from cfg->token. Does not connect.
 * *out points into mem; mem must stay valid, and untouched, until the caller
 * is done with the client. Returns 0, or SLUICE_FRAME_EINVAL (a missing host
 * or token, a zero size, memlen below sluice_frame_client_size()). */
SLUICE_API int sluice_frame_client_init(sluice_frame_client **out, void *mem, size_t memlen,
                                        const sluice_frame_config *cfg);

/* Connects and authenticates now (HELLO, CHALLENGE, PROOF, WELCOME), unless
 * connected already (over UDP: a session), then sends what of the held
 * readings is due. Refuses a server whose
 * WELCOME signature does not verify (it did not know this token's
 * ServerKey). One attempt, no retry (over UDP the attempt repeats its
 * datagrams until cfg.timeout_ms). Returns 0, SLUICE_FRAME_ESIGNATURE, a
 * mapped ERROR code (SLUICE_FRAME_EAUTH ...), SLUICE_FRAME_ETIMEDOUT,
 * SLUICE_FRAME_ECLOSED, SLUICE_FRAME_EBADFRAME, SLUICE_FRAME_ERESOLVE,
 * SLUICE_FRAME_ERANDOM, or -errno. */
SLUICE_API int sluice_frame_client_connect(sluice_frame_client *c);

/* Queues one reading (payload[0..n), copied into the ring) and, connected,
 * writes what is due: a READING, or a BATCH once cfg.batch readings wait,
 * within the server's window. When the ring is full it connects as needed and
 * reads ACKs until there is room, up to cfg.timeout_ms.
 * Returns 0 when the reading is held (it will be delivered, reconnecting as
 * needed); otherwise it is not held: SLUICE_FRAME_ELARGE, SLUICE_FRAME_EINVAL,
 * SLUICE_FRAME_ETIMEDOUT (no room in time), or an error that stopped the
 * client (a mapped ERROR code, SLUICE_FRAME_ESIGNATURE ...). An error of that
 * kind met after the reading was queued is returned by the next call. */
SLUICE_API int sluice_frame_client_send(sluice_frame_client *c, const void *payload, size_t n);

/* Sends every held reading and waits until all are acknowledged durable,
 * reconnecting after transient failures (a refused or reset connection, a
 * name that did not resolve, ERROR 0x05, 0x08, 0x09, a UDP session lost),
 * within cfg.timeout_ms. Returns 0 (nothing
 * held), SLUICE_FRAME_ETIMEDOUT or the last transient error when the deadline passed, or the first
 * error that retrying cannot cure (SLUICE_FRAME_EAUTH, SLUICE_FRAME_EQUOTA,
 * SLUICE_FRAME_ESIGNATURE, SLUICE_FRAME_EBADFRAME ...). */
SLUICE_API int sluice_frame_client_flush(sluice_frame_client *c);

/* Ends the connection: BYE, then reads the ACKs due until the server closes
 * (within cfg.timeout_ms), then closes the socket. The held readings stay in
 * the ring; a later call connects again. Returns 0, or the error met on the
 * way (the socket is closed regardless). Without a connection, returns 0.
 * Over UDP the server ends the session at BYE and answers with an ACK: BYE
 * goes up to 3 times, one resend timeout apart, until a datagram of the
 * session comes back; no answer is not an error (SLUICE_FRAME_ETIMEDOUT
 * only when readings are still held). */
SLUICE_API int sluice_frame_client_close(sluice_frame_client *c);

/* Gives up the n oldest held readings without an acknowledgement: one the
 * server will never take (SLUICE_FRAME_ETOOBIG, the last ERROR's seq naming
 * it), or old ones a device would rather lose than block on. Ends the live
 * connection first (without BYE); the next call connects again and the
 * server records the dropped numbers as a gap. Returns how many were dropped
 * (fewer than n when fewer are held). */
SLUICE_API uint32_t sluice_frame_client_drop(sluice_frame_client *c, uint32_t n);

/* Counters since init. */
SLUICE_API void sluice_frame_client_stats(const sluice_frame_client *c, sluice_frame_stats *st);

/* The last ERROR frame the server sent: returns its code (0: none yet), and
 * fills *seq (the first reading not stored, 0: none) and *message (UTF-8,
 * NUL-terminated, inside the client) when not NULL. */
SLUICE_API unsigned sluice_frame_client_last_error(const sluice_frame_client *c, uint64_t *seq,
                                                   const char **message);

/* A static description of any code the sluice_frame_* functions return
 * ("authentication failed (ERROR 0x02)", "connection refused" ...). */
SLUICE_API const char *sluice_frame_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
