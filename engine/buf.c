/* engine/buf.c — growable byte buffer; see buf.h. */
#include "engine/buf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t more, size_t min_cap)
{
    if (more > (size_t)-1 / 2 - b->len) return -ENOMEM;
    size_t need = b->len + more;
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : (min_cap ? min_cap : 64);
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (!n) return 0;
    if (buf_reserve(b, n, 0)) return -ENOMEM;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->cap > b->len ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return -ENOMEM;
    if ((size_t)n + 1 > b->cap - b->len) {
        /* did not fit: grow and format again (the first pass measured it) */
        if (buf_reserve(b, (size_t)n + 1, 256)) return -ENOMEM;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
