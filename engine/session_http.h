/* engine/session_http.h — the HTTP/1.1 sessions: the device API on the HTTP
 * listener and /healthz, /readyz, /metrics on the admin listener (answers
 * decided by admin.c). See conn.h for the session contract. */
#ifndef SLUICE_ENGINE_SESSION_HTTP_H
#define SLUICE_ENGINE_SESSION_HTTP_H

#include "engine/conn.h"

extern const struct session_ops session_http_ops;
extern const struct session_ops session_admin_ops;

/* Frees what the worker's HTTP sessions shared (gunzip buffers). */
void session_http_worker_free(struct worker *w);

#endif
