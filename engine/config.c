/* engine/config.c — sluice_config defaults and the one parser for every option,
 * shared by sluiced's flags and its INI config file. */
#include "sluice.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --commits-in-flight: chosen by measurement (docs/BENCHMARKS.md, S11) */
#define COMMITS_IN_FLIGHT_DEFAULT   2
#define COMMITS_IN_FLIGHT_DEFAULT_S "2"

void sluice_config_init(sluice_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "./data");
    snprintf(cfg->http, sizeof cfg->http, "0.0.0.0:8080");
    snprintf(cfg->https, sizeof cfg->https, "0.0.0.0:8443");
    snprintf(cfg->mqtt, sizeof cfg->mqtt, "0.0.0.0:1883");
    snprintf(cfg->mqtts, sizeof cfg->mqtts, "0.0.0.0:8883");
    snprintf(cfg->frame, sizeof cfg->frame, "0.0.0.0:7000");
    snprintf(cfg->admin, sizeof cfg->admin, "127.0.0.1:9090");
    cfg->fsync = SLUICE_FSYNC_BATCH;
    cfg->direct_io = true;
    cfg->fsync_interval_ms = 100;
    cfg->max_body = 1u << 20;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->idle_timeout_ms = 75000;
    cfg->drain_timeout_ms = 10000;
    cfg->max_connections = 0; /* derived from the open files limit at start */
    cfg->max_pending_bytes = 64u << 20;
    cfg->max_request_memory = 64u << 20;
    cfg->log_idle_timeout_ms = 60000;
    cfg->segment_bytes = 64u << 20;
    cfg->segment_age_ms = 3600 * 1000;
    cfg->auth_fail_rate = 10;
    cfg->commits_in_flight = COMMITS_IN_FLIGHT_DEFAULT;
    cfg->dsync = SLUICE_DSYNC_AUTO;
}

static const char help_text[] =
    "  --config FILE          INI file with any of these keys (flags win)\n"
    "  --data-dir DIR         LMDB environment, logs, TLS material (default ./data)\n"
    "  --threads N            worker threads, one io_uring each, pinned (default: online CPUs)\n"
    "  --http ADDR:PORT       HTTP/1.1 device API, 'off' disables (default 0.0.0.0:8080)\n"
    "  --https ADDR:PORT      same over TLS (default 0.0.0.0:8443)\n"
    "  --mqtt ADDR:PORT       MQTT 3.1.1/5.0 (default 0.0.0.0:1883)\n"
    "  --mqtts ADDR:PORT      MQTT over TLS (default 0.0.0.0:8883)\n"
    "  --frame ADDR:PORT      compact TCP frame protocol (default 0.0.0.0:7000)\n"
    "  --frames ADDR:PORT     the frame protocol inside TLS (default off)\n"
    "  --udp ADDR:PORT        compact frames over UDP, served by worker 0 (default off)\n"
    "  --admin ADDR:PORT      /healthz, /readyz, /metrics (default 127.0.0.1:9090)\n"
    "  --tls-cert FILE        (default DATA/tls/server.crt)\n"
    "  --tls-key FILE         (default DATA/tls/server.key)\n"
    "  --tls-client-ca FILE   accept device client certificates signed by this CA (mutual TLS)\n"
    "  --fsync MODE           batch | always | interval:MS | never (default batch)\n"
    "  --direct-io on|off     with --fsync batch|always, append to logs with O_DIRECT\n"
    "                         where the filesystem allows; off: through the page cache\n"
    "                         (default on)\n"
    "  --commits-in-flight N  per log, batches written and synced at once, acknowledged\n"
    "                         in log order (1..16, default " COMMITS_IN_FLIGHT_DEFAULT_S "); direct\n"
    "                         writes only: through the page cache one is in flight\n"
    "  --dsync auto|on|off    make a batch durable with one RWF_DSYNC write (FUA) instead\n"
    "                         of write + fdatasync; auto: where the device has FUA\n"
    "                         (default auto)\n"
    "  --ports-file FILE      write the bound ports as JSON after binding (default none)\n"
    "  --max-body SIZE        largest request body, also after gunzip (default 1MiB)\n"
    "  --header-timeout DUR   absolute deadline for a request's headers (default 10s)\n"
    "  --body-timeout DUR     absolute deadline for a request's body (default 30s)\n"
    "  --idle-timeout DUR     keep-alive connection idle limit (default 75s)\n"
    "  --drain-timeout DUR    on SIGTERM, time allowed to requests in progress (default 10s)\n"
    "  --max-connections N    per worker (default: from the open files limit, at most\n"
    "                         65536; said at start when the limit is what bounds it)\n"
    "  --max-pending-bytes SIZE  per worker: reading bytes waiting for their commit; past\n"
    "                         it the worker stops reading new requests (default 64MiB)\n"
    "  --max-request-memory SIZE per worker: bytes of unfinished requests held in memory;\n"
    "                         past it a request needing more gets 503 (default 64MiB,\n"
    "                         at least --max-body)\n"
    "  --log-idle-timeout DUR an org log not written for this long is closed and its\n"
    "                         space written ahead cut, 0 = never (default 60s)\n"
    "  --segment-bytes SIZE   roll a log segment before it passes this size (default 64MiB)\n"
    "  --segment-age DUR      roll a log segment older than this, 0 = never (default 1h)\n"
    "  --retention-days D     per org: delete sealed segments older than D days, may be\n"
    "                         fractional; 0 = keep forever (default 0)\n"
    "  --retention-bytes SIZE per org: delete the oldest sealed segments beyond SIZE,\n"
    "                         0 = no limit (default 0)\n"
    "  --auth-fail-rate N     failed authentications per second per client address\n"
    "                         (burst 2N), then 429; 0 = no limit (default 10)\n";

const char *sluice_config_help(void)
{
    return help_text;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s)) return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    *out = v;
    return (int)(end - s);
}

/* "1048576", "512k", "512KiB", "1M", "1MiB" */
static int parse_size(const char *s, uint64_t *out)
{
    uint64_t v;
    int n = parse_u64(s, &v);
    if (n < 0) return -1;
    const char *u = s + n;
    uint64_t mul = 1;
    if (!strcasecmp(u, "") || !strcasecmp(u, "b"))
        mul = 1;
    else if (!strcasecmp(u, "k") || !strcasecmp(u, "kb") || !strcasecmp(u, "kib"))
        mul = 1024;
    else if (!strcasecmp(u, "m") || !strcasecmp(u, "mb") || !strcasecmp(u, "mib"))
        mul = 1024 * 1024;
    else if (!strcasecmp(u, "g") || !strcasecmp(u, "gb") || !strcasecmp(u, "gib"))
        mul = 1024ull * 1024 * 1024;
    else
        return -1;
    if (v > UINT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

/* "10" (seconds), "10s", "500ms", "2m" → milliseconds */
static int parse_duration(const char *s, unsigned *out_ms)
{
    uint64_t v;
    int n = parse_u64(s, &v);
    if (n < 0) return -1;
    const char *u = s + n;
    uint64_t ms;
    if (!strcmp(u, "") || !strcmp(u, "s"))
        ms = v * 1000;
    else if (!strcmp(u, "ms"))
        ms = v;
    else if (!strcmp(u, "m"))
        ms = v * 60000;
    else
        return -1;
    if (ms == 0 || ms > 86400000u) return -1;
    *out_ms = (unsigned)ms;
    return 0;
}

/* Longer durations for log housekeeping: as parse_duration plus "h" and "d",
 * up to a year; "0" means off. */
static int parse_long_duration(const char *s, uint64_t *out_ms)
{
    uint64_t v;
    int n = parse_u64(s, &v);
    if (n < 0 || v > 366ull * 86400 * 1000) return -1;
    const char *u = s + n;
    uint64_t mul = !strcmp(u, "") || !strcmp(u, "s") ? 1000
                   : !strcmp(u, "ms")                ? 1
                   : !strcmp(u, "m")                 ? 60000
                   : !strcmp(u, "h")                 ? 3600000
                   : !strcmp(u, "d")                 ? 86400000
                                                     : 0;
    if (!mul || v * mul > 366ull * 86400 * 1000) return -1;
    *out_ms = v * mul;
    return 0;
}

/* HOST:PORT or [V6]:PORT; port 0..65535. */
static int check_addr(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return -1;
    if (s[0] == '[' && colon[-1] != ']') return -1;
    uint64_t port;
    int n = parse_u64(colon + 1, &port);
    if (n < 0 || colon[1 + n] != '\0' || port > 65535) return -1;
    return 0;
}

static int set_str(char *dst, size_t cap, const char *v)
{
    if (strlen(v) >= cap) return -1;
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

int sluice_config_set(sluice_config *cfg, const char *key, const char *value, char *err,
                      size_t errcap)
{
    char k[32];
    size_t i;
    const char *why = NULL;
    for (i = 0; key[i] && i + 1 < sizeof k; i++)
        k[i] = key[i] == '_' ? '-' : (char)tolower((unsigned char)key[i]);
    k[i] = '\0';

    struct {
        const char *name;
        char *dst;
    } addrs[] = {{"http", cfg->http},   {"https", cfg->https}, {"mqtt", cfg->mqtt},
                 {"mqtts", cfg->mqtts}, {"frame", cfg->frame}, {"frames", cfg->frames},
                 {"udp", cfg->udp},     {"admin", cfg->admin}};
    for (i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        if (strcmp(k, addrs[i].name)) continue;
        if (!strcmp(value, "off")) {
            addrs[i].dst[0] = '\0';
            return SLUICE_OK;
        }
        if (check_addr(value) || set_str(addrs[i].dst, SLUICE_ADDR_MAX, value)) {
            why = "expected ADDR:PORT, [V6]:PORT or off";
            goto fail;
        }
        return SLUICE_OK;
    }

    if (!strcmp(k, "data-dir") || !strcmp(k, "tls-cert") || !strcmp(k, "tls-key") ||
        !strcmp(k, "tls-client-ca") || !strcmp(k, "ports-file")) {
        char *dst = !strcmp(k, "data-dir")        ? cfg->data_dir
                    : !strcmp(k, "tls-cert")      ? cfg->tls_cert
                    : !strcmp(k, "tls-key")       ? cfg->tls_key
                    : !strcmp(k, "tls-client-ca") ? cfg->tls_client_ca
                                                  : cfg->ports_file;
        if (!*value || set_str(dst, SLUICE_PATH_MAX, value)) {
            why = "expected a non-empty path shorter than 1024 bytes";
            goto fail;
        }
        return SLUICE_OK;
    }
    if (!strcmp(k, "auth-fail-rate")) {
        uint64_t v;
        int n = parse_u64(value, &v);
        if (n < 0 || value[n] || v > 1000000) {
            why = "expected failed attempts per second, 0 to 1000000 (0: no limit)";
            goto fail;
        }
        cfg->auth_fail_rate = (unsigned)v;
        return SLUICE_OK;
    }
    if (!strcmp(k, "threads") || !strcmp(k, "max-connections")) {
        uint64_t v;
        int n = parse_u64(value, &v);
        if (n < 0 || value[n] || v < 1 || v > (k[0] == 't' ? 1024 : 1000000)) {
            why = k[0] == 't' ? "expected a thread count from 1 to 1024"
                              : "expected a count from 1 to 1000000";
            goto fail;
        }
        if (k[0] == 't')
            cfg->threads = (int)v;
        else
            cfg->max_connections = (unsigned)v;
        return SLUICE_OK;
    }
    if (!strcmp(k, "fsync")) {
        unsigned ms;
        if (!strcmp(value, "batch"))
            cfg->fsync = SLUICE_FSYNC_BATCH;
        else if (!strcmp(value, "always"))
            cfg->fsync = SLUICE_FSYNC_ALWAYS;
        else if (!strcmp(value, "never"))
            cfg->fsync = SLUICE_FSYNC_NEVER;
        else if (!strncmp(value, "interval:", 9) && parse_duration(value + 9, &ms) == 0) {
            /* a bare number after "interval:" means milliseconds, as in INTERFACE.md */
            uint64_t raw = 0;
            int n = parse_u64(value + 9, &raw);
            cfg->fsync = SLUICE_FSYNC_INTERVAL;
            cfg->fsync_interval_ms = value[9 + n] == '\0' ? (unsigned)raw : ms;
        } else {
            why = "expected batch, always, interval:MS or never";
            goto fail;
        }
        return SLUICE_OK;
    }
    if (!strcmp(k, "direct-io")) {
        if (!strcmp(value, "on"))
            cfg->direct_io = true;
        else if (!strcmp(value, "off"))
            cfg->direct_io = false;
        else {
            why = "expected on or off";
            goto fail;
        }
        return SLUICE_OK;
    }
    if (!strcmp(k, "commits-in-flight")) {
        uint64_t v;
        int n = parse_u64(value, &v);
        if (n <= 0 || value[n] || v < 1 || v > SLUICE_COMMITS_IN_FLIGHT_MAX) {
            why = "expected a number from 1 to 16";
            goto fail;
        }
        cfg->commits_in_flight = (unsigned)v;
        return SLUICE_OK;
    }
    if (!strcmp(k, "dsync")) {
        if (!strcmp(value, "auto"))
            cfg->dsync = SLUICE_DSYNC_AUTO;
        else if (!strcmp(value, "on"))
            cfg->dsync = SLUICE_DSYNC_ON;
        else if (!strcmp(value, "off"))
            cfg->dsync = SLUICE_DSYNC_OFF;
        else {
            why = "expected auto, on or off";
            goto fail;
        }
        return SLUICE_OK;
    }
    if (!strcmp(k, "max-body")) {
        uint64_t v;
        if (parse_size(value, &v) || v < 1 || v > (64u << 20)) {
            why = "expected a size from 1 byte to 64MiB (e.g. 1048576, 512KiB, 1MiB)";
            goto fail;
        }
        cfg->max_body = v;
        return SLUICE_OK;
    }
    if (!strcmp(k, "max-pending-bytes") || !strcmp(k, "max-request-memory")) {
        uint64_t v;
        if (parse_size(value, &v) || v < (64u << 10) || v > (64ull << 30)) {
            why = "expected a size from 64KiB to 64GiB (e.g. 64MiB)";
            goto fail;
        }
        *(k[4] == 'p' ? &cfg->max_pending_bytes : &cfg->max_request_memory) = v;
        return SLUICE_OK;
    }
    if (!strcmp(k, "log-idle-timeout")) {
        if (parse_long_duration(value, &cfg->log_idle_timeout_ms)) {
            why = "expected a duration such as 60s, 500ms or 10m, 0 to keep logs open";
            goto fail;
        }
        return SLUICE_OK;
    }
    if (!strcmp(k, "segment-bytes") || !strcmp(k, "retention-bytes")) {
        uint64_t v;
        bool seg = k[0] == 's';
        if (parse_size(value, &v) || (seg && (v < 4096 || v > (4ull << 30)))) {
            why = seg ? "expected a size from 4KiB to 4GiB (e.g. 64MiB)"
                      : "expected a size (e.g. 10GiB), 0 for no limit";
            goto fail;
        }
        *(seg ? &cfg->segment_bytes : &cfg->retention_bytes) = v;
        return SLUICE_OK;
    }
    if (!strcmp(k, "segment-age")) {
        if (parse_long_duration(value, &cfg->segment_age_ms)) {
            why = "expected a duration such as 1h, 30m or 1d, 0 for no age limit";
            goto fail;
        }
        return SLUICE_OK;
    }
    if (!strcmp(k, "retention-days")) {
        char *end;
        errno = 0;
        double d = strtod(value, &end);
        if (errno || end == value || *end || !(d >= 0) || d > 36500) {
            why = "expected a number of days (may be fractional), 0 to keep forever";
            goto fail;
        }
        cfg->retention_ms = (uint64_t)(d * 86400000.0);
        return SLUICE_OK;
    }
    {
        unsigned *dst = !strcmp(k, "header-timeout")  ? &cfg->header_timeout_ms
                        : !strcmp(k, "body-timeout")  ? &cfg->body_timeout_ms
                        : !strcmp(k, "idle-timeout")  ? &cfg->idle_timeout_ms
                        : !strcmp(k, "drain-timeout") ? &cfg->drain_timeout_ms
                                                      : NULL;
        if (dst) {
            if (parse_duration(value, dst)) {
                why = "expected a duration such as 10s, 500ms or 2m";
                goto fail;
            }
            return SLUICE_OK;
        }
    }
    snprintf(err, errcap, "unknown option '%s'", key);
    return SLUICE_EINVAL;
fail:
    snprintf(err, errcap, "bad value '%s' for %s: %s", value, k, why);
    return SLUICE_EINVAL;
}

const char *sluice_strerror(int code)
{
    switch (code) {
    case SLUICE_OK:
        return "success";
    case SLUICE_EINVAL:
        return "invalid configuration";
    case SLUICE_ENOMEM:
        return "out of memory";
    case SLUICE_EIO:
        return "I/O error on the data directory";
    case SLUICE_EADDRINUSE:
        return "address in use";
    case SLUICE_ENOURING:
        return "io_uring is not available";
    case SLUICE_ESTORE:
        return "credential store failed";
    case SLUICE_ELISTEN:
        return "cannot listen";
    }
    return "unknown error";
}
