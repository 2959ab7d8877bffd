/* storage/log_list.c — listing an org's segments and indexes; see log_list.h. */
#include "storage/log_list.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Segments sort first, by base; then index files without a segment, by base. */
static int cmp_entry(const void *a, const void *b)
{
    const struct log_list_seg *x = a, *y = b;
    if (x->has_seg != y->has_seg) return y->has_seg - x->has_seg;
    return (x->base > y->base) - (x->base < y->base);
}

static int entry_add(struct log_list_worker *w, uint64_t base, int is_seg)
{
    for (size_t i = 0; i < w->n; i++) {
        if (w->v[i].base == base) {
            if (is_seg)
                w->v[i].has_seg = 1;
            else
                w->v[i].has_idx = 1;
            return 0;
        }
    }
    if (w->n == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 16;
        struct log_list_seg *nv = realloc(w->v, ncap * sizeof *nv);
        if (!nv) return -ENOMEM;
        w->v = nv;
        w->cap = ncap;
    }
    w->v[w->n++] = (struct log_list_seg){.base = base, .has_seg = is_seg, .has_idx = !is_seg};
    return 0;
}

/* log_dir_each callback of list_worker. Anything but "<20 digits>.seg" and
 * "<20 digits>.idx" (an index being written under a temporary name, an
 * operator's file) is not ours to judge or delete. */
static int list_worker_entry(void *ctx, const char *name)
{
    uint64_t base;
    if (log_name_base(name, LOG_LIST_SEG, &base) == 0) return entry_add(ctx, base, 1);
    if (log_name_base(name, LOG_LIST_IDX, &base) == 0) return entry_add(ctx, base, 0);
    return 0;
}

/* Lists the segments and indexes of w->dir. Returns 0, 1 when it is not a
 * directory, -errno. */
static int list_worker(struct log_list_worker *w)
{
    int rc = log_dir_each(w->dir, list_worker_entry, w);
    if (rc < 0) return rc == -ENOTDIR ? 1 : rc;
    if (w->n > 1) qsort(w->v, w->n, sizeof *w->v, cmp_entry);
    w->nseg = 0;
    while (w->nseg < w->n && w->v[w->nseg].has_seg)
        w->nseg++;
    return 0;
}

/* The buffers it is given always fit the name. */
void log_list_path(char *buf, size_t cap, const struct log_list_worker *w, uint64_t base,
                   const char *ext)
{
    log_file_path(buf, cap, w->dir, base, ext);
}

void log_list_free(struct log_list_worker *ws, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ws[i].v);
    free(ws);
}

static int cmp_worker(const void *a, const void *b)
{
    const struct log_list_worker *x = a, *y = b;
    return (x->worker > y->worker) - (x->worker < y->worker);
}

struct org_list {
    const char *org_dir;
    struct log_list_worker *ws;
    size_t n, cap;
};

/* log_dir_each callback of list_org: lists a "w<N>" directory's files. */
static int list_org_entry(void *ctx, const char *name)
{
    struct org_list *l = ctx;
    unsigned wn;
    if (log_worker_name(name, &wn) < 0) return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 8;
        struct log_list_worker *nw = realloc(l->ws, ncap * sizeof *nw);
        if (!nw) return -ENOMEM;
        l->ws = nw;
        l->cap = ncap;
    }
    struct log_list_worker *w = &l->ws[l->n];
    memset(w, 0, sizeof *w);
    w->worker = wn;
    int k = snprintf(w->dir, sizeof w->dir, "%s/%s", l->org_dir, name);
    if (k < 0 || (size_t)k >= sizeof w->dir) return -ENAMETOOLONG;
    int rc = list_worker(w);
    if (rc < 0) {
        free(w->v);
        return rc;
    }
    if (rc == 0) l->n++; /* rc 1: "w<N>" that is not a directory */
    return 0;
}

/* Lists every "w<N>" directory of org with its files, sorted by N. Returns 0
 * (*out NULL when *n is 0), -ENOENT when the org has no log directory, -errno. */
int log_list_org(const char *data_dir, uint32_t org, struct log_list_worker **out, size_t *n)
{
    char org_dir[LOG_PATH_MAX];
    struct org_list l = {.org_dir = org_dir};

    *out = NULL;
    *n = 0;
    int rc = log_dir_path(org_dir, sizeof org_dir, data_dir, org, -1);
    if (rc < 0) return rc;
    rc = log_dir_each(org_dir, list_org_entry, &l);
    if (rc < 0) {
        log_list_free(l.ws, l.n);
        return rc;
    }
    if (l.n > 1) qsort(l.ws, l.n, sizeof *l.ws, cmp_worker);
    *out = l.ws;
    *n = l.n;
    return 0;
}
