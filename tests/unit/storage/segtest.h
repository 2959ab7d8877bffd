/* tests/unit/storage/segtest.h — what the storage unit tests share: a fresh
 * temp dir per test (root), little-endian fields, whole files, and segments
 * built record by record with record_encode and written where the writer
 * would put them (DATA/logs/<org>/w<worker>/<base>.seg under root).
 *
 * Header-only (static inline, so a test that does not use a helper is not
 * warned about it) to keep each test a single source file. nftw's FTW_* flags
 * need _GNU_SOURCE, which meson defines for every file of the project. */
#ifndef SLUICE_TESTS_UNIT_STORAGE_SEGTEST_H
#define SLUICE_TESTS_UNIT_STORAGE_SEGTEST_H

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log.h"
#include "storage/record.h"

/* ---- a temp dir per test ---- */

/* The running test's directory: made by segtest_setup (from the suite's
 * .init), removed by segtest_teardown (its .fini). */
static char root[64];

/* Makes root, "/tmp/<name>-XXXXXX". */
static inline void segtest_setup(const char *name)
{
    int n = snprintf(root, sizeof root, "/tmp/%s-XXXXXX", name);
    cr_assert(n > 0 && (size_t)n < sizeof root, "temp dir name '%s' too long", name);
    cr_assert_not_null(mkdtemp(root));
}

static inline int segtest_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes root and everything below it, not following links. */
static inline void segtest_teardown(void)
{
    nftw(root, segtest_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- bytes and files ---- */

/* The n-byte little-endian number at p. */
static inline uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Stores v at p as n little-endian bytes. */
static inline void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static inline uint64_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
    return (uint64_t)st.st_size;
}

/* Whole file into a malloc'ed buffer (with a byte to spare). */
static inline uint8_t *slurp(const char *path, size_t *len)
{
    *len = (size_t)file_size(path);
    uint8_t *p = malloc(*len + 1);
    cr_assert_not_null(p);
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(pread(fd, p, *len, 0), (ssize_t)*len);
    close(fd);
    return p;
}

/* "<dir>/<base>.seg" → "<dir>/<base>.idx", the index beside a segment. */
static inline void idx_path(char *buf, size_t cap, const char *seg)
{
    snprintf(buf, cap, "%.*s.idx", (int)(strlen(seg) - 4), seg);
}

/* ---- building segments ---- */

/* The seed of the v2/v3 segments the tests build (any value but 0). */
#define SEGTEST_SEED 0x5eed5eed12345678ull

struct seg {
    uint8_t *data;
    size_t len, cap;
    unsigned version; /* 1, 2 or 3 (seg_begin: 3, seg_begin_v2: 2, seg_begin_v1: 1) */
    uint64_t seed;    /* v2, v3: keys the records' checksums */
    uint64_t next_seq;
    size_t rec_off[64]; /* offsets of the first records, for damaging them */
    size_t nrec;
};

static inline void seg_reserve(struct seg *s, size_t more)
{
    if (s->len + more <= s->cap) return;
    s->cap = (s->len + more) * 2;
    s->data = realloc(s->data, s->cap);
    cr_assert_not_null(s->data);
}

/* Starts s (its old buffer is not freed) with the header of a segment of
 * (worker, org) from seq base, in format `version`. */
static inline void seg_begin_version(struct seg *s, unsigned version, uint32_t worker, uint32_t org,
                                     uint64_t base)
{
    memset(s, 0, sizeof *s);
    s->version = version;
    s->seed = version == 1 ? 0 : SEGTEST_SEED;
    struct segment_header h = {.version = (uint16_t)version,
                               .worker = worker,
                               .org = org,
                               .base_seq = base,
                               .created_ns = 1,
                               .seed = s->seed};
    seg_reserve(s, SEGMENT_HEADER_SIZE);
    s->len = segment_header_encode(s->data, &h);
    s->next_seq = base;
}

/* A segment as the writer writes it now (v3, seeded with SEGTEST_SEED). */
static inline void seg_begin(struct seg *s, uint32_t worker, uint32_t org, uint64_t base)
{
    seg_begin_version(s, 3, worker, org, base);
}

/* A segment as a writer of format v2 (before v3) wrote it. */
static inline void seg_begin_v2(struct seg *s, uint32_t worker, uint32_t org, uint64_t base)
{
    seg_begin_version(s, 2, worker, org, base);
}

/* A segment as a writer before format v2 wrote it. */
static inline void seg_begin_v1(struct seg *s, uint32_t worker, uint32_t org, uint64_t base)
{
    seg_begin_version(s, 1, worker, org, base);
}

/* Bytes of the segment header s starts with. */
static inline size_t seg_header_size_of(const struct seg *s)
{
    return s->version == 1 ? SEGMENT_HEADER_SIZE_V1 : SEGMENT_HEADER_SIZE;
}

/* Header bytes of a record of s. */
static inline size_t seg_rec_hdr(const struct seg *s)
{
    return record_header_size(s->version);
}

/* Appends a record with the next seq, its own commit batch, stating
 * durable_seq (v3; what its writer knew durable); returns its offset. */
static inline size_t seg_add_stating(struct seg *s, uint64_t ns, uint32_t device, const char *topic,
                                     const void *payload, size_t len, uint64_t durable_seq)
{
    struct record r = {.flags = RECORD_F_BATCH_START,
                       .proto = RECORD_PROTO_HTTP,
                       .ctype = RECORD_CTYPE_JSON,
                       .topic_len = (uint16_t)(topic ? strlen(topic) : 0),
                       .device = device,
                       .version = (uint8_t)s->version,
                       .recv_ns = ns,
                       .seq = s->next_seq++,
                       .durable_seq = durable_seq};
    size_t off = s->len, hs = seg_rec_hdr(s);
    seg_reserve(s, hs + r.topic_len + len);
    record_encode(s->data + off, &r, s->seed, topic, payload, len);
    if (topic) memcpy(s->data + off + hs, topic, r.topic_len);
    if (len) memcpy(s->data + off + hs + r.topic_len, payload, len);
    s->len += hs + r.topic_len + len;
    if (s->nrec < 64) s->rec_off[s->nrec++] = off;
    return off;
}

/* Appends a record with the next seq; returns its offset. Every record is its
 * own commit batch, as the engine writes a lone reading, with one batch in
 * flight: everything before it durable (v3's durable_seq is its own seq). */
static inline size_t seg_add_full(struct seg *s, uint64_t ns, uint32_t device, const char *topic,
                                  const void *payload, size_t len)
{
    return seg_add_stating(s, ns, device, topic, payload, len, s->next_seq);
}

/* seg_add_full from device 1, without a topic. */
static inline size_t seg_add(struct seg *s, uint64_t ns, const char *payload)
{
    return seg_add_full(s, ns, 1, NULL, payload, strlen(payload));
}

/* Makes root/logs/<org>/w<worker> (and its parents) and writes its path to buf. */
static inline void worker_dir(char *buf, size_t cap, uint32_t org, unsigned worker)
{
    char logs[96], orgd[128];
    snprintf(logs, sizeof logs, "%s/logs", root);
    snprintf(orgd, sizeof orgd, "%s/%" PRIu32, logs, org);
    snprintf(buf, cap, "%s/w%u", orgd, worker);
    mkdir(logs, 0755);
    mkdir(orgd, 0755);
    mkdir(buf, 0755);
}

/* The path of segment (org, worker, base), its directory made. */
static inline void seg_path(char *buf, size_t cap, uint32_t org, unsigned worker, uint64_t base)
{
    char dir[256];
    worker_dir(dir, sizeof dir, org, worker);
    snprintf(buf, cap, "%s/%020" PRIu64 ".seg", dir, base);
}

/* Writes the first `len` bytes of s as the segment (org, worker, base); its
 * path to path_out (300 bytes) unless NULL. */
static inline void seg_write_len(const struct seg *s, uint32_t org, unsigned worker, uint64_t base,
                                 size_t len, char *path_out)
{
    char path[300];
    seg_path(path, sizeof path, org, worker, base);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, s->data, len), (ssize_t)len);
    close(fd);
    if (path_out) strcpy(path_out, path);
}

static inline void seg_write(const struct seg *s, uint32_t org, unsigned worker, uint64_t base,
                             char *path_out)
{
    seg_write_len(s, org, worker, base, s->len, path_out);
}

#endif
