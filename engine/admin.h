/* engine/admin.h — what the admin listener answers: /healthz, /readyz and
 * /metrics (Prometheus text). The HTTP framing is session_http.c's; this file
 * only decides the answer, so metrics can grow (per protocol, per org) without
 * touching the protocol code.
 */
#ifndef SLUICE_ENGINE_ADMIN_H
#define SLUICE_ENGINE_ADMIN_H

#include "engine/buf.h"
#include "engine/worker.h"
#include "protocols/http.h"

/* Answers one admin request: returns the HTTP status, with the body in *body
 * (the caller owns it) and its media type in *ctype. Never fails: out of
 * memory while building the metrics text is a 503. */
int admin_answer(struct worker *w, const struct http_request *req, struct buf *body,
                 const char **ctype);

/* The Prometheus text of every counter and gauge, summed over the workers and
 * per worker, appended to out. Returns 0 or -ENOMEM. */
int admin_metrics(const struct sluice_engine *e, struct buf *out);

#endif
