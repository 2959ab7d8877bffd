/* tests/fuzz/json_fuzz.c — libFuzzer target for the JSON reading splitter.
 * Invariants (abort on violation): error offsets stay inside the body and carry a
 * reason; every delivered reading is an object slice inside the body that
 * validates on its own; a successful split implies the whole body validates; a
 * valid top-level object is exactly one reading. The input is copied into an
 * exactly-sized heap buffer so ASan sees any over-read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocols/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static int check_reading(void *ctx, const char *p, size_t n)
{
    const char **bounds = ctx;
    if (p < bounds[0] || p + n > bounds[1] || n < 2 || p[0] != '{' || p[n - 1] != '}') abort();
    if (json_validate(p, n, NULL) != 0) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    char *buf = malloc(n ? n : 1);
    memcpy(buf, data, n);
    const char *bounds[2] = {buf, buf + n};
    struct json_error e;
    int v = json_validate(buf, n, &e);
    if (v != 0 && (v != JSON_ERROR || e.offset > n || !e.msg)) abort();
    size_t count = SIZE_MAX;
    int s = json_split_readings(buf, n, check_reading, bounds, &count, &e);
    if (count == SIZE_MAX || (s != JSON_OK && s != JSON_ERROR)) abort();
    if (s == JSON_OK && v != 0) abort();
    if (s == JSON_ERROR && (e.offset > n || !e.msg || e.element != count)) abort();
    size_t nd_count = SIZE_MAX;
    int nd = json_split_ndjson(buf, n, check_reading, bounds, &nd_count, &e);
    if (nd_count == SIZE_MAX || (nd != JSON_OK && nd != JSON_ERROR)) abort();
    if (nd == JSON_ERROR && (e.offset > n || !e.msg)) abort();
    if (v == 0 && n && buf[0] == '{' && (s != JSON_OK || count != 1)) abort();
    free(buf);
    return 0;
}
