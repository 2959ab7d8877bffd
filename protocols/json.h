/* protocols/json.h — one-pass validating JSON scanner that splits a request body into
 * readings. Pure: no I/O, no allocation; readings are slices of the caller's buffer.
 * Validation follows RFC 8259 strictly (UTF-8 checked, no trailing commas, no NaN,
 * no leading zeros); nesting depth is capped at JSON_MAX_DEPTH. */
#ifndef SLUICE_PROTOCOLS_JSON_H
#define SLUICE_PROTOCOLS_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64
#define JSON_OK        0
#define JSON_ERROR     (-1) /* malformed input: *err says where and why */
#define JSON_STOPPED   (-2) /* the callback returned non-zero: its reason is the caller's */

struct json_error {
    size_t element;  /* 0-based index of the reading (array element / NDJSON line) at fault */
    size_t offset;   /* byte offset in the body where the scanner stopped */
    const char *msg; /* static text, e.g. "unterminated string" */
};

/* Called once per reading with a slice of the body (no surrounding whitespace).
 * A non-zero return stops the scan (the splitter returns JSON_STOPPED); the
 * callback keeps its own reason in ctx. */
typedef int (*json_reading_fn)(void *ctx, const char *p, size_t n);

/* application/json: the body is one object (one reading) or an array whose
 * elements are objects (one reading each). An empty array yields no readings.
 * Returns JSON_OK, JSON_ERROR with *err filled (err may be NULL), or
 * JSON_STOPPED. The count and the outcome are separate: *count (always set)
 * is the number of readings the callback accepted (returned 0 for), whatever
 * the return. Callbacks fire as elements are validated, so after JSON_ERROR or
 * JSON_STOPPED earlier elements were already delivered: callers roll them back
 * (a request is all or nothing). */
int json_split_readings(const char *buf, size_t len, json_reading_fn fn, void *ctx, size_t *count,
                        struct json_error *err);

/* application/x-ndjson: one JSON value per line ("\n" or "\r\n"); blank lines are
 * skipped; a body without any value is JSON_ERROR. Same returns as
 * json_split_readings. */
int json_split_ndjson(const char *buf, size_t len, json_reading_fn fn, void *ctx, size_t *count,
                      struct json_error *err);

/* Validates that buf holds exactly one JSON value (surrounding whitespace allowed).
 * Returns 0 or JSON_ERROR with *err filled (err->element = 0). */
int json_validate(const char *buf, size_t len, struct json_error *err);

#endif
