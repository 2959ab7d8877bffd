/* engine/admin.c — health, readiness and metrics; see admin.h. */
#include "engine/admin.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "engine/clients.h"

struct series {
    const char *name, *help;
    size_t off; /* of the _Atomic uint64_t in struct worker_stats */
    bool gauge;
};

#define COUNTER(n, f, h)                                                                           \
    {                                                                                              \
        n, h, offsetof(struct worker_stats, f), false                                              \
    }
#define GAUGE(n, f, h)                                                                             \
    {                                                                                              \
        n, h, offsetof(struct worker_stats, f), true                                               \
    }

static const struct series all_series[] = {
    COUNTER("connections_accepted_total", accepted_conns, "TCP connections accepted"),
    COUNTER("connections_closed_total", closed_conns, "TCP connections closed"),
    COUNTER("connections_refused_total", refused_conns,
            "connections refused at the connection limit (answered busy, then closed)"),
    COUNTER("http_requests_total", requests, "HTTP requests parsed"),
    COUNTER("readings_total", readings, "readings appended to logs"),
    COUNTER("commits_total", commits, "group commits (write + fdatasync) completed"),
    COUNTER("commit_failures_total", commit_failures, "group commits that failed"),
    COUNTER("auth_failures_total", auth_failures, "requests with a missing/unknown token"),
    COUNTER("auth_throttled_total", auth_throttled,
            "failed authentications refused 429: too many from their address"),
    COUNTER("recv_enobufs_total", enobufs, "recv completions without a free buffer"),
    COUNTER("bytes_in_total", bytes_in, "bytes received"),
    COUNTER("bytes_out_total", bytes_out, "bytes sent"),
    COUNTER("input_paused_total", input_paused,
            "times a connection's input was paused (backpressure: output cap, commit budget)"),
    COUNTER("accept_paused_total", accept_paused,
            "times accepting paused because descriptors ran out (EMFILE/ENFILE)"),
    COUNTER("request_memory_refused_total", request_memory_refused,
            "requests answered 503: the request memory budget was used up"),
    COUNTER("requests_too_large_total", request_too_large,
            "requests answered 413: a reading or the request can never be stored"),
    COUNTER("logs_opened_total", logs_opened, "org logs opened or reopened after start-up"),
    COUNTER("logs_suspended_total", logs_suspended,
            "idle org logs closed (--log-idle-timeout, or to stay within the open files limit)"),
    COUNTER("mqtt_connects_total", mqtt_connects, "MQTT CONNECTs accepted (CONNACK 0)"),
    COUNTER("mqtt_connect_refused_total", mqtt_connect_refused,
            "MQTT CONNECTs refused with a CONNACK code (bad token, version, client id ...)"),
    COUNTER("mqtt_publishes_total", mqtt_publishes, "MQTT PUBLISHes stored (QoS 0, 1 and 2)"),
    COUNTER("mqtt_disconnects_sent_total", mqtt_disconnects_sent,
            "connections the server ended for a protocol reason (MQTT 5: with a DISCONNECT)"),
    COUNTER("mqtt_wills_total", mqtt_wills,
            "wills stored: connections that ended without DISCONNECT"),
    COUNTER("mqtt_sessions_resumed_total", mqtt_sessions_resumed,
            "MQTT CONNECTs that resumed a kept session (CONNACK session present 1)"),
    COUNTER("frame_sessions_total", frame_sessions,
            "frame protocol handshakes completed (WELCOME sent)"),
    COUNTER("frame_gap_readings_total", frame_gaps,
            "frame readings a device skipped (its next_seq beyond the durable mark + 1)"),
    GAUGE("connections_open", conns_open, "connections open now"),
    GAUGE("commit_pending_bytes", pending_bytes,
          "record bytes waiting for their commit (budget: --max-pending-bytes per worker)"),
    GAUGE("request_memory_bytes", request_memory,
          "bytes held for unfinished requests (budget: --max-request-memory per worker)"),
    GAUGE("logs_open", logs_open, "org logs holding descriptors now"),
};

static uint64_t load(const struct worker *w, size_t off)
{
    const _Atomic uint64_t *p = (const _Atomic uint64_t *)((const char *)&w->st + off);
    return atomic_load_explicit(p, memory_order_relaxed);
}

int admin_metrics(const struct sluice_engine *e, struct buf *out)
{
    int rc = 0;
    for (size_t i = 0; i < sizeof all_series / sizeof all_series[0] && !rc; i++) {
        const struct series *s = &all_series[i];
        const char *type = s->gauge ? "gauge" : "counter";
        uint64_t v = 0;
        for (unsigned k = 0; k < e->nworkers; k++)
            v += load(&e->workers[k], s->off);
        rc = buf_printf(out, "# HELP sluice_%s %s\n# TYPE sluice_%s %s\nsluice_%s %llu\n", s->name,
                        s->help, s->name, type, s->name, (unsigned long long)v);
        if (rc || !s->gauge) continue;
        /* a gauge per worker too: one worker's budget used up is what matters */
        rc = buf_printf(out,
                        "# HELP sluice_worker_%s %s, per worker\n# TYPE sluice_worker_%s gauge\n",
                        s->name, s->help, s->name);
        for (unsigned k = 0; k < e->nworkers && !rc; k++)
            rc = buf_printf(out, "sluice_worker_%s{worker=\"%u\"} %llu\n", s->name, k,
                            (unsigned long long)load(&e->workers[k], s->off));
    }
    if (!rc)
        rc = buf_printf(out,
                        "# HELP sluice_workers worker threads\n# TYPE sluice_workers gauge\n"
                        "sluice_workers %u\n"
                        "# HELP sluice_max_connections connections allowed per worker\n"
                        "# TYPE sluice_max_connections gauge\nsluice_max_connections %u\n"
                        "# HELP sluice_mqtt_sessions_kept MQTT sessions kept between connections "
                        "(connected or not; at most %u)\n"
                        "# TYPE sluice_mqtt_sessions_kept gauge\nsluice_mqtt_sessions_kept %u\n",
                        e->nworkers, e->nworkers ? e->workers[0].conn_cap : 0, CLIENTS_KEPT_MAX,
                        (unsigned)atomic_load_explicit(&e->clients.kept, memory_order_relaxed));
    return rc;
}

static bool path_is(const struct http_request *req, const char *lit)
{
    size_t n = strlen(lit);
    return req->path.n == n && memcmp(req->path.p, lit, n) == 0;
}

int admin_answer(struct worker *w, const struct http_request *req, struct buf *body,
                 const char **ctype)
{
    struct sluice_engine *e = w->eng;
    *ctype = "application/json";
    int status = 200, rc = 0;
    if (req->method != HTTP_METHOD_GET && req->method != HTTP_METHOD_HEAD) {
        status = 405;
        rc = buf_printf(body, "{\"error\":\"use GET\"}");
    } else if (path_is(req, "/healthz")) {
        rc = buf_printf(body, "{\"status\":\"ok\"}");
    } else if (path_is(req, "/readyz")) {
        bool ready = atomic_load(&e->ready_workers) == e->nworkers && !w->draining;
        status = ready ? 200 : 503;
        rc = buf_printf(body, "{\"ready\":%s}", ready ? "true" : "false");
    } else if (path_is(req, "/metrics")) {
        *ctype = "text/plain; version=0.0.4";
        rc = admin_metrics(e, body);
    } else {
        status = 404;
        rc = buf_printf(body, "{\"error\":\"not found\"}");
    }
    if (rc) {
        buf_free(body);
        *ctype = "application/json";
        status = 503;
    }
    return status;
}
