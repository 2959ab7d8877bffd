/* engine/buf.h — a growable byte buffer: connection input and output, the
 * metrics text. Growth doubles; a failed allocation leaves the buffer as it was.
 */
#ifndef SLUICE_ENGINE_BUF_H
#define SLUICE_ENGINE_BUF_H

#include <stddef.h>

struct buf {
    char *p;
    size_t len, cap;
};

/* Makes room for `more` bytes past len (cap grows to at least len + more,
 * doubling from at least `min_cap`). Returns 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_reserve(struct buf *b, size_t more, size_t min_cap);

/* Appends n bytes. Returns 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int buf_append(struct buf *b, const void *p, size_t n);

/* Appends formatted text (no terminating NUL counted in len, one kept past it).
 * Returns 0 or -ENOMEM. */
__attribute__((format(printf, 2, 3), warn_unused_result)) int buf_printf(struct buf *b,
                                                                         const char *fmt, ...);

/* Drops the first n bytes (n <= len), moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);

/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);

#endif
