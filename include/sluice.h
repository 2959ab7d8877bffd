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

#ifdef __cplusplus
}
#endif
#endif
