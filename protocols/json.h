/* protocols/json.h — one-pass validating JSON scanner that splits a request body into
 * readings. Pure: no I/O, no allocation; readings are slices of the caller's buffer.
 * Validation follows RFC 8259 strictly (UTF-8 checked, no trailing commas, no NaN,
 * no leading zeros); nesting depth is capped at JSON_MAX_DEPTH. */
#ifndef SLUICE_PROTOCOLS_JSON_H
#define SLUICE_PROTOCOLS_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64
#define JSON_ERROR     (-1)

struct json_error {
    size_t element;  /* 0-based index of the reading (array element / NDJSON line) at fault */
    size_t offset;   /* byte offset in the body where the scanner stopped */
    const char *msg; /* static text, e.g. "unterminated string" */
};

/* Called once per reading with a slice of the body (no surrounding whitespace).
 * A non-zero return stops the scan and is returned by the splitter. */
typedef int (*json_reading_fn)(void *ctx, const char *p, size_t n);

/* application/json: the body is one object (one reading) or an array whose
 * elements are objects (one reading each). An empty array yields no readings.
 * Returns the number of readings (>= 0), JSON_ERROR with *err filled, or the
 * callback's non-zero value. Callbacks fire as elements are validated, so on
 * JSON_ERROR earlier elements were already delivered: callers roll them back. */
long json_split_readings(const char *buf, size_t len, json_reading_fn fn, void *ctx,
                         struct json_error *err);

/* application/x-ndjson: one JSON value per line ("\n" or "\r\n"); blank lines are
 * skipped. Same returns as json_split_readings. */
long json_split_ndjson(const char *buf, size_t len, json_reading_fn fn, void *ctx,
                       struct json_error *err);

/* Validates that buf holds exactly one JSON value (surrounding whitespace allowed).
 * Returns 0 or JSON_ERROR with *err filled (err->element = 0). */
int json_validate(const char *buf, size_t len, struct json_error *err);

#endif
