/* engine/errlog.c — rate-limited error lines; see errlog.h. */
#include "engine/errlog.h"

#include <stdarg.h>
#include <stdio.h>

void errlog_say(struct errlog *e, uint64_t now_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (e->window_end_ms && now_ms < e->window_end_ms) {
        e->suppressed++;
        vsnprintf(e->last, sizeof e->last, fmt, ap);
    } else {
        char line[512];
        vsnprintf(line, sizeof line, fmt, ap);
        fprintf(stderr, "sluiced: %s\n", line);
        e->window_end_ms = now_ms + ERRLOG_WINDOW_MS;
        e->suppressed = 0;
    }
    va_end(ap);
}

/* 13523 → "13,523" */
static void thousands(char *out, size_t cap, uint64_t v)
{
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
}

void errlog_tick(struct errlog *e, uint64_t now_ms, const char *what)
{
    if (!e->window_end_ms || now_ms < e->window_end_ms) return;
    if (e->suppressed) {
        char n[40];
        thousands(n, sizeof n, e->suppressed);
        fprintf(stderr, "sluiced: %s: %s more in the last %u s (last: %s)\n", what, n,
                ERRLOG_WINDOW_MS / 1000, e->last);
    }
    e->window_end_ms = 0;
    e->suppressed = 0;
}
