/* protocols/http.h — HTTP/1.1 request parser and response encoder.
 *
 * Pure functions in the picohttpparser style: no I/O, no allocation. Results are
 * (pointer, length) slices into the caller's buffer, valid while that buffer is.
 * Return convention for parsers: > 0 bytes consumed, HTTP_INCOMPLETE (need more
 * bytes; not an error), or a negated HTTP status code (-400, -431, -501, -505 ...)
 * telling the caller what to answer before closing the connection.
 */
#ifndef SLUICE_PROTOCOLS_HTTP_H
#define SLUICE_PROTOCOLS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_INCOMPLETE         (-1)
#define HTTP_MAX_HEADER_BYTES   8192 /* request line + headers + blank line */
#define HTTP_MAX_HEADERS        64
#define HTTP_MAX_CONTENT_LENGTH ((int64_t)1 << 53) /* larger Content-Length values are -400 */
#define HTTP_MAX_CHUNK_LINE     1024 /* chunk-size line incl. extensions, excluding CRLF */
#define HTTP_MAX_TRAILER_BYTES  8192 /* trailer section after the last chunk, incl. CRLFs */

struct http_slice {
    const char *p;
    size_t n;
};

enum http_method {
    HTTP_METHOD_OTHER = 0,
    HTTP_METHOD_GET,
    HTTP_METHOD_HEAD,
    HTTP_METHOD_POST,
    HTTP_METHOD_PUT,
    HTTP_METHOD_DELETE,
    HTTP_METHOD_OPTIONS,
};

struct http_header {
    struct http_slice name, value; /* value has surrounding OWS removed */
};

struct http_request {
    enum http_method method;
    struct http_slice method_name;
    struct http_slice target; /* request-target as sent: path and query */
    struct http_slice path;   /* target up to '?' */
    struct http_slice query;  /* after '?', empty if none */
    int minor_version;        /* HTTP/1.x */

    int64_t content_length;  /* -1 when absent */
    unsigned chunked : 1;    /* Transfer-Encoding: chunked (the only accepted coding) */
    unsigned keep_alive : 1; /* after Connection header and version defaults */
    unsigned has_host : 1;
    unsigned expect_continue : 1;

    /* Headers the engine needs, pre-extracted (empty slice when absent). */
    struct http_slice token;            /* X-Auth-Token */
    struct http_slice content_type;     /* media type only, parameters stripped */
    struct http_slice content_encoding; /* e.g. "gzip" */
    struct http_slice authorization;

    size_t nheaders;
    struct http_header headers[HTTP_MAX_HEADERS];

    const char *error; /* static reason text when the parser returns an error */
};

/* Parses the request line and header block at buf[0..len).
 * Returns the length of the header block (> 0, including the final CRLF CRLF),
 * HTTP_INCOMPLETE, or:
 *   -400 malformed, or a request-smuggling shape: Content-Length together with
 *        Transfer-Encoding, two Content-Length headers (even equal), a
 *        Transfer-Encoding other than exactly "chunked", obs-fold, bare CR or LF,
 *        whitespace before the colon, a bad length ("+5", "5 5", > 2^53),
 *        no Host on HTTP/1.1, control characters, a duplicate Host, X-Auth-Token,
 *        Content-Type, Content-Encoding or Authorization, Transfer-Encoding on
 *        HTTP/1.0, a request-target that is not origin-form ('*' only for OPTIONS);
 *   -431 no complete header block within max_header bytes (also when len
 *        reaches max_header while still incomplete), more than HTTP_MAX_HEADERS;
 *   -501 unknown Transfer-Encoding is reported as -400 (smuggling), never 501;
 *   -505 HTTP version other than 1.0 / 1.1 (well-formed "HTTP/d.d" only).
 * max_header 0 means HTTP_MAX_HEADER_BYTES (values above INT_MAX are clamped).
 * Only CRLF line endings are accepted; empty lines before the request line are
 * skipped and counted in the result.
 * Errors are decided at the first offending byte, so a prefix of the input gives
 * either HTTP_INCOMPLETE or the same verdict as the whole input.
 * req->error points to a short static reason on error (NULL otherwise). */
int http_parse_request(const char *buf, size_t len, size_t max_header, struct http_request *req);

/* Resumable in-place decoder for a chunked body. Starts zeroed. */
struct http_chunked {
    int state;
    uint64_t chunk_left; /* bytes of chunk data still to copy */
    size_t in;           /* raw bytes consumed so far */
    size_t out;          /* decoded bytes written to the buffer's start so far */
    size_t line;         /* bytes of the current size line, or of the trailer section */
};

/* Decodes the chunked body at buf[0..len), moving chunk data down to buf[0..st->out).
 * Call again with the same buf start (it may have been reallocated; offsets are
 * relative) and a larger len when more bytes arrived. Bytes at buf[st->in..) are
 * never written, so whatever follows the body (a pipelined request) is intact.
 * Returns the raw bytes consumed including the last-chunk and trailers (>= 0) when
 * the body is complete (decoded length in st->out), HTTP_INCOMPLETE, -400 on a
 * malformed chunk (bad hex, > 16 hex digits, size line over HTTP_MAX_CHUNK_LINE,
 * missing CRLF after data, control characters), -413 as soon as a chunk size makes
 * the decoded size exceed max_body, -431 when the trailers exceed
 * HTTP_MAX_TRAILER_BYTES. Once complete or failed, further calls return the same. */
long http_chunked_decode(struct http_chunked *st, char *buf, size_t len, size_t max_body);

/* After http_chunked_decode returned HTTP_INCOMPLETE: drops the framing it has
 * already decoded, moving the undecoded bytes buf[st->in..len) down to
 * buf[st->out..]. Returns the new length; decoding goes on from there, so the
 * caller keeps about the decoded size however small the chunks (a body of
 * 1-byte chunks takes six times its size as framing). */
size_t http_chunked_compact(struct http_chunked *st, char *buf, size_t len);

/* Case-insensitive header lookup; returns 1 and sets *value when present. */
int http_header_find(const struct http_request *req, const char *name, struct http_slice *value);

/* Reason phrase for a status code ("Accepted"...). */
const char *http_status_text(int status);

/* Writes a complete response (status line, Content-Type: application/json when
 * body_len > 0, Content-Length, Connection: keep-alive|close, any extra header
 * lines given in extra — each ending with CRLF, may be NULL) followed by body.
 * RFC 9110 8.6 forbids Content-Length on 1xx and 204: a 1xx is written as an
 * interim response (status line, extra, blank line) and a 204 without
 * Content-Type / Content-Length; both require body_len == 0.
 * Returns bytes written, or -1 if cap is too small or status is not 100..999. */
int http_write_response(char *out, size_t cap, int status, int keep_alive, const char *extra,
                        const char *body, size_t body_len);

/* As http_write_response, with the given Content-Type instead of
 * application/json (e.g. "text/plain; version=0.0.4" for /metrics). */
int http_write_response_typed(char *out, size_t cap, int status, int keep_alive,
                              const char *content_type, const char *extra, const char *body,
                              size_t body_len);

#endif
