/* storage/log_index.c — reading, writing and building a segment's sparse time
 * index; see log_index.h. */
#include "storage/log_index.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "storage/log_name.h"
#include "storage/log_scan.h"

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int log_index_write(const char *seg_path, const struct log_index *idx)
{
    char path[LOG_PATH_MAX], tmp[LOG_PATH_MAX + 8];
    size_t pl = strlen(seg_path);
    if (pl < 4 || pl >= sizeof path || strcmp(seg_path + pl - 4, ".seg")) return -EINVAL;
    memcpy(path, seg_path, pl - 4);
    memcpy(path + pl - 4, ".idx", 5);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    size_t len = LOG_INDEX_HEADER_SIZE + idx->n * LOG_INDEX_ENTRY_SIZE + 8;
    uint8_t *buf = malloc(len);
    if (!buf) return -ENOMEM;
    put_le(buf, LOG_INDEX_MAGIC, 4);
    put_le(buf + 4, LOG_INDEX_VERSION, 2);
    put_le(buf + 6, LOG_INDEX_ENTRY_SIZE, 2);
    put_le(buf + 8, idx->base_seq, 8);
    put_le(buf + 16, idx->min_ns, 8);
    put_le(buf + 24, idx->max_ns, 8);
    for (size_t i = 0; i < idx->n; i++) {
        uint8_t *e = buf + LOG_INDEX_HEADER_SIZE + i * LOG_INDEX_ENTRY_SIZE;
        put_le(e, idx->e[i].offset, 8);
        put_le(e + 8, idx->e[i].seq, 8);
        put_le(e + 16, idx->e[i].max_ns_before, 8);
    }
    put_le(buf + len - 8, XXH3_64bits(buf, len - 8), 8);

    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    errno = 0;
    if (fd < 0 || write(fd, buf, len) != (ssize_t)len || fdatasync(fd)) rc = errno ? -errno : -EIO;
    if (fd >= 0) close(fd);
    if (!rc && rename(tmp, path)) rc = -errno;
    if (rc) unlink(tmp);
    free(buf);
    return rc;
}

/* A segment of 2^64 bytes would need far less; anything larger is not an index
 * this code wrote, and is refused before it is read into memory. */
#define INDEX_MAX_FILE (64u << 20)

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* "<dir>/<base>.seg" → "<dir>/<base>.idx". Returns 0, -EINVAL (no ".seg"),
 * -ENAMETOOLONG. */
static int index_path(char *buf, size_t cap, const char *seg_path)
{
    size_t n = strlen(seg_path);
    if (n < 4 || strcmp(seg_path + n - 4, ".seg") != 0) return -EINVAL;
    if (n >= cap) return -ENAMETOOLONG;
    memcpy(buf, seg_path, n - 4);
    memcpy(buf + n - 4, ".idx", 5);
    return 0;
}

/* The base seq in a "<20 digits>.seg" file name at the end of path. */
static int seg_name_base(const char *path, uint64_t *base)
{
    const char *name = strrchr(path, '/');
    return log_name_base(name ? name + 1 : path, ".seg", base);
}

/* Checks what the checksum cannot: that the entries describe a segment this
 * one could be (a writer bug would otherwise send a reader into the middle of a
 * record). max_ns_before of entry 0 is not checked: nothing precedes it. */
static int index_sane(const struct log_index *x)
{
    if (x->n == 0) return 0;
    if (x->min_ns > x->max_ns) return -1; /* entries, yet no record */
    /* the index does not say the segment's version: its first record is past
     * a v1 or a v2 header */
    if ((x->e[0].offset != SEGMENT_HEADER_SIZE && x->e[0].offset != SEGMENT_HEADER_SIZE_V1) ||
        x->e[0].seq != x->base_seq)
        return -1;
    for (size_t i = 1; i < x->n; i++) {
        const struct log_index_entry *a = &x->e[i - 1], *b = &x->e[i];
        if (b->offset <= a->offset || b->seq <= a->seq ||
            b->seq - a->seq > (b->offset - a->offset) / RECORD_HEADER_MIN ||
            b->max_ns_before > x->max_ns || (i >= 2 && b->max_ns_before < a->max_ns_before))
            return -1;
    }
    return 0;
}

int log_index_read(const char *seg_path, struct log_index *idx)
{
    char path[LOG_PATH_MAX];
    uint8_t *buf = NULL;
    struct stat st;
    size_t got = 0;
    uint64_t name_base;
    int fd = -1, rc;

    memset(idx, 0, sizeof *idx);
    rc = index_path(path, sizeof path, seg_path);
    if (rc < 0) return rc;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    rc = -EBADMSG;
    if (size < LOG_INDEX_HEADER_SIZE + 8 || size > INDEX_MAX_FILE ||
        (size - LOG_INDEX_HEADER_SIZE - 8) % LOG_INDEX_ENTRY_SIZE != 0)
        goto fail;
    buf = malloc((size_t)size);
    if (!buf) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = log_scan_pread_full(fd, buf, (size_t)size, 0, &got);
    if (rc < 0) goto fail;
    rc = -EBADMSG;
    if (got != size || XXH3_64bits(buf, (size_t)size - 8) != get_le(buf + size - 8, 8) ||
        get_le(buf, 4) != LOG_INDEX_MAGIC || get_le(buf + 4, 2) != LOG_INDEX_VERSION ||
        get_le(buf + 6, 2) != LOG_INDEX_ENTRY_SIZE)
        goto fail;
    idx->base_seq = get_le(buf + 8, 8);
    idx->min_ns = get_le(buf + 16, 8);
    idx->max_ns = get_le(buf + 24, 8);
    if (seg_name_base(seg_path, &name_base) == 0 && name_base != idx->base_seq) goto fail;
    idx->n = (size_t)((size - LOG_INDEX_HEADER_SIZE - 8) / LOG_INDEX_ENTRY_SIZE);
    if (idx->n > 0) {
        idx->e = malloc(idx->n * sizeof *idx->e);
        if (!idx->e) {
            rc = -ENOMEM;
            goto fail;
        }
        idx->cap = idx->n;
    }
    for (size_t i = 0; i < idx->n; i++) {
        const uint8_t *p = buf + LOG_INDEX_HEADER_SIZE + i * LOG_INDEX_ENTRY_SIZE;
        idx->e[i].offset = get_le(p, 8);
        idx->e[i].seq = get_le(p + 8, 8);
        idx->e[i].max_ns_before = get_le(p + 16, 8);
    }
    if (index_sane(idx) < 0) goto fail;
    rc = 0;
fail:
    if (rc < 0) {
        free(idx->e);
        memset(idx, 0, sizeof *idx);
    }
    free(buf);
    close(fd);
    return rc;
}

struct index_builder {
    struct log_index idx;
    uint64_t first;      /* offset of the segment's first record */
    uint64_t max_before; /* largest recv_ns so far */
};

static void index_note(void *ctx, uint64_t offset, const struct record *r)
{
    struct index_builder *b = ctx;
    struct log_index *x = &b->idx;
    if (x->n == 0 || offset - x->e[x->n - 1].offset >= LOG_INDEX_INTERVAL) {
        if (x->n == x->cap) {
            size_t cap = x->cap ? x->cap * 2 : 16;
            struct log_index_entry *e = realloc(x->e, cap * sizeof *e);
            if (e) {
                x->e = e;
                x->cap = cap;
            }
        }
        /* Out of memory: the index just gets sparser (the next record that
         * finds room becomes the entry), which stays correct. Entry 0 must be
         * the first record, though, or none at all. */
        if (x->n < x->cap && (x->n > 0 || offset == b->first))
            x->e[x->n++] = (struct log_index_entry){
                .offset = offset, .seq = r->seq, .max_ns_before = b->max_before};
    }
    if (r->recv_ns < x->min_ns) x->min_ns = r->recv_ns;
    if (r->recv_ns > x->max_ns) x->max_ns = r->recv_ns;
    if (r->recv_ns > b->max_before) b->max_before = r->recv_ns;
}

int log_index_build(const char *seg_path)
{
    struct index_builder b = {.idx = {.min_ns = UINT64_MAX, .max_ns = 0}};
    struct segment_header h;
    struct log_scan sc;
    uint64_t name_base;
    int rc;

    int fd = open(seg_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    rc = log_scan_header(fd, &h);
    if (rc < 0) goto fail;
    /* An index is found by its segment's name; one that disagrees with the
     * header would be refused by every reader. */
    if (seg_name_base(seg_path, &name_base) == 0 && name_base != h.base_seq) {
        rc = -EBADMSG;
        goto fail;
    }
    b.idx.base_seq = h.base_seq;
    b.first = segment_header_size(&h);
    rc = log_scan_records(fd, &h, b.first, h.base_seq, &sc, index_note, &b);
    if (rc < 0) goto fail;
    rc = log_index_write(seg_path, &b.idx);
fail:
    free(b.idx.e);
    close(fd);
    return rc;
}
