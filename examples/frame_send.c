/* examples/frame_send.c — sluice-frame-send: N readings over the frame
 * protocol, with the device client of include/sluice.h alone.
 *
 *   sluice-frame-send --host H --port P --token T --count N --payload TEXT
 *                     [--batch B] [--timeout S] [--udp [--udp-via-tcp PORT]]
 *
 * --udp: over sluiced's --udp listener (docs/frame-protocol.md §6), with
 * --batch readings a datagram at most; the same summary line and exit codes.
 * --udp-via-tcp PORT: the handshake over TCP to that port of --host (sluiced
 * --frame), then the readings in datagrams to --port (cfg.tcp_port).
 *
 * The same command line as clients/python/sluice_frame.py. Exits 0 only when
 * every reading is acknowledged durable, printing one summary line; 1 with
 * one line saying why otherwise; 2 on bad usage.
 *
 * The embedding story: this file includes sluice.h and nothing of sluice's
 * internals. On a device, build it with the client's three files and libc:
 *   cc -Iinclude -I. examples/frame_send.c client/frame_client.c \
 *      client/sha256.c protocols/frame.c
 * The one allocation is here, at start: the client itself never allocates.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice.h>

static const char usage[] =
    "usage: sluice-frame-send --host H --port P --token T --count N --payload TEXT\n"
    "                         [--batch B] [--timeout S] [--udp [--udp-via-tcp PORT]]\n";

static int bad_usage(const char *why, const char *arg)
{
    fprintf(stderr, "sluice-frame-send: %s%s%s\n%s", why, arg ? ": " : "", arg ? arg : "", usage);
    return 2;
}

/* A whole decimal number in [min, max]. */
static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static int fail(sluice_frame_client *c, const char *what, int rc)
{
    const char *msg = NULL;
    unsigned code = c ? sluice_frame_client_last_error(c, NULL, &msg) : 0;
    const char *say = sluice_frame_strerror(rc);
    /* the server's own words, when the failure is its ERROR frame and they add any */
    if (code && rc == SLUICE_FRAME_ECODE(code) && msg && *msg && !strstr(say, msg))
        fprintf(stderr, "sluice-frame-send: %s: %s: %s\n", what, say, msg);
    else
        fprintf(stderr, "sluice-frame-send: %s: %s\n", what, say);
    return 1;
}

int main(int argc, char **argv)
{
    const char *host = NULL, *token = NULL, *payload = NULL;
    uint64_t port = 0, tcp_port = 0, count = 0, batch = 1, timeout_ms = 10000;
    int have_count = 0, udp = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--udp")) {
            udp = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        }
        if (a[0] != '-' || a[1] != '-') return bad_usage("unexpected argument", a);
        if (i + 1 >= argc) return bad_usage("missing value for", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) {
            host = v;
        } else if (!strcmp(a, "--token")) {
            token = v;
        } else if (!strcmp(a, "--payload")) {
            payload = v;
        } else if (!strcmp(a, "--port")) {
            if (parse_u64(v, 1, 65535, &port)) return bad_usage("--port must be 1..65535", v);
        } else if (!strcmp(a, "--udp-via-tcp")) {
            if (parse_u64(v, 1, 65535, &tcp_port))
                return bad_usage("--udp-via-tcp must be a port, 1..65535", v);
        } else if (!strcmp(a, "--count")) {
            if (parse_u64(v, 0, UINT64_MAX / 2, &count))
                return bad_usage("--count must be a whole number", v);
            have_count = 1;
        } else if (!strcmp(a, "--batch")) {
            if (parse_u64(v, 1, 65536, &batch)) return bad_usage("--batch must be 1..65536", v);
        } else if (!strcmp(a, "--timeout")) {
            char *end;
            errno = 0;
            double s = strtod(v, &end);
            if (errno || *end || end == v || !(s > 0 && s <= 86400))
                return bad_usage("--timeout must be seconds, > 0", v);
            timeout_ms = (uint64_t)(s * 1000 + 0.5);
            if (timeout_ms == 0) timeout_ms = 1;
        } else {
            return bad_usage("unknown option", a);
        }
    }
    if (!host || !port || !token || !have_count || !payload)
        return bad_usage("--host, --port, --token, --count and --payload are required", NULL);
    if (tcp_port && !udp) return bad_usage("--udp-via-tcp goes with --udp", NULL);

    size_t plen = strlen(payload);
    sluice_frame_config cfg;
    sluice_frame_config_init(&cfg);
    cfg.host = host;
    cfg.port = (unsigned)port;
    cfg.token = token;
    cfg.timeout_ms = (unsigned)timeout_ms;
    cfg.batch = (uint32_t)batch;
    cfg.udp = udp;
    cfg.tcp_port = (unsigned)tcp_port;
    if (cfg.max_readings < batch) cfg.max_readings = (uint32_t)batch;
    if (plen > cfg.max_reading) cfg.max_reading = (uint32_t)plen;
    if (cfg.ring_bytes < 4 * cfg.max_reading) cfg.ring_bytes = 4 * cfg.max_reading;

    size_t need = sluice_frame_client_size(&cfg);
    void *mem = need ? malloc(need) : NULL;
    sluice_frame_client *c = NULL;
    if (!mem) {
        fprintf(stderr, "sluice-frame-send: cannot size the client's memory (%zu bytes)\n", need);
        return 1;
    }
    int rc = sluice_frame_client_init(&c, mem, need, &cfg);
    if (rc) {
        free(mem);
        return bad_usage(sluice_frame_strerror(rc), NULL);
    }

    int status = 0;
    if ((rc = sluice_frame_client_connect(c))) {
        status = fail(c, "connect", rc);
        goto out;
    }
    for (uint64_t i = 0; i < count; i++) {
        if ((rc = sluice_frame_client_send(c, payload, plen))) {
            status = fail(c, "send", rc);
            goto out;
        }
    }
    if ((rc = sluice_frame_client_flush(c))) {
        status = fail(c, "flush", rc);
        goto out;
    }
    rc = sluice_frame_client_close(c);

    sluice_frame_stats st;
    sluice_frame_client_stats(c, &st);
    printf("sent %" PRIu64 " readings (%" PRIu64 " resent), %" PRIu64
           " acknowledged durable, %" PRIu64 " bytes out, %" PRIu64 " bytes in, seq %" PRIu64
           "..%" PRIu64 "\n",
           st.queued, st.resent, st.acked, st.bytes_out, st.bytes_in, st.first_seq, st.last_seq);
    if (st.acked != count || st.held) {
        fprintf(stderr, "sluice-frame-send: %" PRIu64 " of %" PRIu64 " readings acknowledged\n",
                st.acked, count);
        status = 1;
    } else if (rc) {
        /* all durable; only the goodbye went wrong: worth a line, not a failure */
        fprintf(stderr, "sluice-frame-send: close: %s\n", sluice_frame_strerror(rc));
    }
out:
    /* on failure no BYE: it would wait for a server that has just failed us;
     * exiting closes the socket */
    free(mem);
    return status;
}
