/* tests/unit/storage/logread_test.c — log_scan_segment and the merging cursor
 * (storage/logread.c) over segments built with record_encode in a temp dir. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw flags */
#endif
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log.h"
#include "storage/record.h"


#define ORG 7u

static char root[64];

static void setup(void)
{
    strcpy(root, "/tmp/logread-test-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(logread, .init = setup, .fini = teardown, .timeout = 60);

/* ---- building segments ---- */

struct seg {
    uint8_t *data;
    size_t len, cap;
    uint64_t next_seq;
    size_t rec_off[64]; /* offsets of the first records, for damaging them */
    size_t nrec;
};

static void seg_reserve(struct seg *s, size_t more)
{
    if (s->len + more <= s->cap) return;
    s->cap = (s->len + more) * 2;
    s->data = realloc(s->data, s->cap);
    cr_assert_not_null(s->data);
}

static void seg_begin(struct seg *s, uint32_t worker, uint32_t org, uint64_t base)
{
    memset(s, 0, sizeof *s);
    struct segment_header h = {.worker = worker, .org = org, .base_seq = base, .created_ns = 1};
    seg_reserve(s, SEGMENT_HEADER_SIZE);
    segment_header_encode(s->data, &h);
    s->len = SEGMENT_HEADER_SIZE;
    s->next_seq = base;
}

/* Appends a record with the next seq; returns its offset. */
static size_t seg_add_full(struct seg *s, uint64_t ns, uint32_t device, const char *topic,
                           const void *payload, size_t len)
{
    struct record r = {.flags = 0,
                       .proto = RECORD_PROTO_HTTP,
                       .ctype = RECORD_CTYPE_JSON,
                       .topic_len = (uint16_t)(topic ? strlen(topic) : 0),
                       .device = device,
                       .recv_ns = ns,
                       .seq = s->next_seq++};
    size_t off = s->len;
    seg_reserve(s, RECORD_HEADER_SIZE + r.topic_len + len);
    record_encode(s->data + off, &r, topic, payload, len);
    if (r.topic_len) memcpy(s->data + off + RECORD_HEADER_SIZE, topic, r.topic_len);
    if (len) memcpy(s->data + off + RECORD_HEADER_SIZE + r.topic_len, payload, len);
    s->len += RECORD_HEADER_SIZE + r.topic_len + len;
    if (s->nrec < 64) s->rec_off[s->nrec++] = off;
    return off;
}

static size_t seg_add(struct seg *s, uint64_t ns, const char *payload)
{
    return seg_add_full(s, ns, 1, NULL, payload, strlen(payload));
}

static void worker_dir(char *buf, size_t cap, uint32_t org, unsigned worker)
{
    char logs[96], orgd[128];
    snprintf(logs, sizeof logs, "%s/logs", root);
    snprintf(orgd, sizeof orgd, "%s/%" PRIu32, logs, org);
    snprintf(buf, cap, "%s/w%u", orgd, worker);
    mkdir(logs, 0755);
    mkdir(orgd, 0755);
    mkdir(buf, 0755);
}

static void seg_path(char *buf, size_t cap, uint32_t org, unsigned worker, uint64_t base)
{
    char dir[256];
    worker_dir(dir, sizeof dir, org, worker);
    snprintf(buf, cap, "%s/%020" PRIu64 ".seg", dir, base);
}

/* Writes the first `len` bytes of s as the segment (org, worker, base). */
static void seg_write_len(const struct seg *s, uint32_t org, unsigned worker, uint64_t base,
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

static void seg_write(const struct seg *s, uint32_t org, unsigned worker, uint64_t base,
                      char *path_out)
{
    seg_write_len(s, org, worker, base, s->len, path_out);
}

static int scan_bytes(const uint8_t *data, size_t len, struct log_scan *out)
{
    char path[128];
    snprintf(path, sizeof path, "%s/scan.seg", root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    int rc = log_scan_segment(fd, out);
    close(fd);
    return rc;
}

/* Builds worker 0 with n records "r0".."r<n-1>" at ns 100, 200, ... */
static void seg_small(struct seg *s, unsigned n)
{
    char p[16];
    seg_begin(s, 0, ORG, 0);
    for (unsigned i = 0; i < n; i++) {
        snprintf(p, sizeof p, "\"r%u\"", i);
        seg_add(s, 100 * (i + 1), p);
    }
}

/* Drains a cursor over ORG; returns records seen, the count of -EBADMSG in *bad. */
static unsigned drain(struct log_cursor *c, unsigned *bad)
{
    struct record r;
    const uint8_t *body;
    unsigned n = 0;
    int rc;
    *bad = 0;
    while ((rc = log_cursor_next(c, &r, &body)) != 0) {
        if (rc == -EBADMSG) {
            (*bad)++;
            continue;
        }
        cr_assert_eq(rc, 1, "log_cursor_next: %d", rc);
        n++;
    }
    /* The end is sticky. */
    cr_assert_eq(log_cursor_next(c, &r, &body), 0);
    return n;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- scanning ---- */

Test(logread, scan_clean_segment_counts_every_record)
{
    struct seg s;
    seg_begin(&s, 3, ORG, 40);
    seg_add(&s, 1000, "{\"a\":1}");
    seg_add_full(&s, 2000, 9, "devices/pump-7/temp", "21.5", 4);
    seg_add(&s, 1500, "[]");
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_eq(sc.hdr.worker, 3);
    cr_expect_eq(sc.hdr.org, ORG);
    cr_expect_eq(sc.hdr.base_seq, 40);
    cr_expect_eq(sc.file_size, s.len);
    cr_expect_eq(sc.valid_end, s.len);
    cr_expect_eq(sc.records, 3);
    cr_expect_eq(sc.next_seq, 43);
    cr_expect_eq(sc.last_ns, 1500, "last_ns is the last record's, not the largest");
    cr_expect_null(sc.why);
    free(s.data);
}

Test(logread, scan_empty_segment_header_only)
{
    struct seg s;
    seg_begin(&s, 0, ORG, 12);
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_eq(sc.valid_end, SEGMENT_HEADER_SIZE);
    cr_expect_eq(sc.records, 0);
    cr_expect_eq(sc.next_seq, 12);
    cr_expect_eq(sc.last_ns, 0);
    cr_expect_null(sc.why);
    free(s.data);
}

Test(logread, scan_bad_segment_header_is_ebadmsg)
{
    struct seg s;
    struct log_scan sc;
    seg_small(&s, 2);
    /* Every byte of magic, version and header size matters. */
    for (size_t i = 0; i < 8; i++) {
        s.data[i] ^= 0x20;
        cr_expect_eq(scan_bytes(s.data, s.len, &sc), -EBADMSG, "flip at %zu", i);
        s.data[i] ^= 0x20;
    }
    /* A file shorter than the header, including an empty one. */
    for (size_t len = 0; len < SEGMENT_HEADER_SIZE; len++)
        cr_expect_eq(scan_bytes(s.data, len, &sc), -EBADMSG, "len %zu", len);
    cr_expect_eq(scan_bytes(s.data, s.len, &sc), 0);
    free(s.data);
}

Test(logread, scan_torn_tail_every_length_in_last_record)
{
    struct seg s;
    seg_small(&s, 3);
    size_t last = s.rec_off[2];
    for (size_t len = last + 1; len < s.len; len++) {
        struct log_scan sc;
        cr_assert_eq(scan_bytes(s.data, len, &sc), 0);
        cr_expect_eq(sc.file_size, len);
        cr_expect_eq(sc.valid_end, last, "cut at %zu", len);
        cr_expect_eq(sc.records, 2);
        cr_expect_eq(sc.next_seq, 2);
        cr_expect_eq(sc.last_ns, 200);
        const char *want =
            len - last < RECORD_HEADER_SIZE ? "truncated record header" : "truncated record body";
        cr_expect_str_eq(sc.why ? sc.why : "(null)", want, "cut at %zu", len);
    }
    free(s.data);
}

Test(logread, scan_every_byte_flip_in_middle_record_is_caught)
{
    struct seg s;
    seg_small(&s, 3);
    size_t mid = s.rec_off[1], end = s.rec_off[2];
    for (size_t i = mid; i < end; i++) {
        /* Bytes 32..39 are the checksum itself; a flip there is a mismatch too. */
        for (unsigned bit = 0; bit < 8; bit++) {
            s.data[i] ^= (uint8_t)(1u << bit);
            struct log_scan sc;
            cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
            cr_expect_eq(sc.valid_end, mid, "flip byte %zu bit %u", i, bit);
            cr_expect_eq(sc.records, 1);
            cr_expect_not_null(sc.why);
            s.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    free(s.data);
}

Test(logread, scan_flipped_body_byte_is_checksum_mismatch)
{
    struct seg s;
    seg_small(&s, 3);
    s.data[s.rec_off[1] + RECORD_HEADER_SIZE + 1] ^= 0x01;
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_str_eq(sc.why, "checksum mismatch");
    cr_expect_eq(sc.valid_end, s.rec_off[1]);
    cr_expect_eq(sc.next_seq, 1);
    free(s.data);
}

Test(logread, scan_bad_magic_is_bad_record_header)
{
    struct seg s;
    seg_small(&s, 3);
    s.data[s.rec_off[1]] ^= 0xff;
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_str_eq(sc.why, "bad record header");
    cr_expect_eq(sc.valid_end, s.rec_off[1]);
    /* Zero fill, as a crash can leave past the last written page. */
    memset(s.data + s.rec_off[2], 0, s.len - s.rec_off[2]);
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_eq(sc.valid_end, s.rec_off[1]);
    free(s.data);
}

Test(logread, scan_length_over_max_is_bad_header_and_past_eof_is_truncated)
{
    struct seg s;
    seg_small(&s, 2);
    uint8_t *len = s.data + s.rec_off[1] + 4;
    struct log_scan sc;
    put_le32(len, RECORD_MAX_BODY + 1);
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_str_eq(sc.why, "bad record header");
    put_le32(len, RECORD_MAX_BODY);
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_str_eq(sc.why, "truncated record body");
    cr_expect_eq(sc.valid_end, s.rec_off[1]);
    free(s.data);
}

Test(logread, scan_sequence_gap_stops)
{
    struct seg s;
    seg_small(&s, 2);
    s.next_seq = 5; /* the third record claims seq 5 where 2 is due */
    seg_add(&s, 300, "\"x\"");
    seg_add(&s, 400, "\"y\"");
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_str_eq(sc.why, "sequence gap");
    cr_expect_eq(sc.records, 2);
    cr_expect_eq(sc.next_seq, 2);
    cr_expect_eq(sc.valid_end, s.rec_off[2]);

    /* The first record must carry the header's base_seq. */
    struct seg t;
    seg_begin(&t, 0, ORG, 10);
    t.next_seq = 11;
    seg_add(&t, 1, "1");
    cr_assert_eq(scan_bytes(t.data, t.len, &sc), 0);
    cr_expect_str_eq(sc.why, "sequence gap");
    cr_expect_eq(sc.records, 0);
    free(s.data);
    free(t.data);
}

Test(logread, scan_records_straddling_read_chunks)
{
    /* Sizes chosen to straddle the 1 MiB read buffer in every way, up to the
     * largest body allowed. */
    static const size_t sizes[] = {700000, 700000, 1 << 20, 3, RECORD_MAX_BODY, 5, 1500000};
    size_t n = sizeof sizes / sizeof sizes[0];
    uint8_t *pay = malloc(RECORD_MAX_BODY + 16);
    cr_assert_not_null(pay);
    for (size_t i = 0; i < RECORD_MAX_BODY + 16; i++)
        pay[i] = (uint8_t)(i * 131 + (i >> 9));
    struct seg s;
    seg_begin(&s, 0, ORG, 0);
    for (size_t i = 0; i < n; i++)
        seg_add_full(&s, 10 + i, 1, NULL, pay + i, sizes[i]);
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_null(sc.why, "%s", sc.why);
    cr_expect_eq(sc.records, n);
    cr_expect_eq(sc.valid_end, s.len);

    seg_write(&s, ORG, 0, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    for (size_t i = 0; i < n; i++) {
        struct record r;
        const uint8_t *body;
        cr_assert_eq(log_cursor_next(c, &r, &body), 1);
        cr_expect_eq(r.length, sizes[i]);
        cr_expect(memcmp(body, pay + i, r.length) == 0, "body %zu", i);
    }
    struct record r;
    const uint8_t *body;
    cr_expect_eq(log_cursor_next(c, &r, &body), 0);
    log_cursor_close(c);
    free(pay);
    free(s.data);
}

Test(logread, resync_tells_mid_corruption_from_torn_tail)
{
    struct seg s;
    seg_small(&s, 4);
    char path[128];
    snprintf(path, sizeof path, "%s/r.seg", root);

    /* Damage in record 1, good records 2 and 3 after it. */
    s.data[s.rec_off[1] + RECORD_HEADER_SIZE] ^= 0x40;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(write(fd, s.data, s.len), (ssize_t)s.len);
    struct log_scan sc;
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    uint64_t at = 0;
    cr_expect_eq(log_scan_resync(fd, sc.valid_end, sc.next_seq, &at), 1);
    cr_expect_eq(at, s.rec_off[2]);
    close(fd);

    /* Damage in the last record only: nothing good follows. */
    s.data[s.rec_off[1] + RECORD_HEADER_SIZE] ^= 0x40;
    s.data[s.len - 1] ^= 0x40;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(write(fd, s.data, s.len), (ssize_t)s.len);
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    cr_expect_str_eq(sc.why, "checksum mismatch");
    cr_expect_eq(log_scan_resync(fd, sc.valid_end, sc.next_seq, &at), 0);
    close(fd);

    /* A torn tail: nothing follows either. */
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(write(fd, s.data, s.rec_off[3] + 20), (ssize_t)(s.rec_off[3] + 20));
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    cr_expect_eq(log_scan_resync(fd, sc.valid_end, sc.next_seq, &at), 0);
    close(fd);
    free(s.data);
}

Test(logread, resync_ignores_record_lookalike_with_old_seq)
{
    /* A payload that embeds a valid encoded record of an earlier seq must not
     * count as good data after the damage. */
    struct seg inner;
    seg_begin(&inner, 0, ORG, 0);
    seg_add(&inner, 5, "\"fake\"");
    struct seg s;
    seg_begin(&s, 0, ORG, 0);
    seg_add(&s, 1, "\"a\"");
    seg_add(&s, 1, "\"b\"");
    seg_add_full(&s, 2, 1, NULL, inner.data + SEGMENT_HEADER_SIZE, inner.len - SEGMENT_HEADER_SIZE);
    s.data[s.rec_off[1] + RECORD_HEADER_SIZE] ^= 1;
    char path[128];
    snprintf(path, sizeof path, "%s/r.seg", root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(write(fd, s.data, s.len), (ssize_t)s.len);
    struct log_scan sc;
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    cr_assert_eq(sc.next_seq, 1);
    uint64_t at = 0;
    /* The real record 2 is found; the lookalike (seq 0) inside it is not. */
    cr_expect_eq(log_scan_resync(fd, sc.valid_end, sc.next_seq, &at), 1);
    cr_expect_eq(at, s.rec_off[2]);
    cr_expect_eq(log_scan_resync(fd, s.rec_off[2], 3, &at), 0);
    close(fd);
    free(s.data);
    free(inner.data);
}

/* ---- the cursor ---- */

Test(logread, cursor_missing_org_is_enoent)
{
    struct log_cursor *c = (void *)1;
    cr_expect_eq(log_cursor_open(root, 99, &c), -ENOENT);
    cr_expect_null(c);
}

Test(logread, cursor_org_without_segments_yields_nothing)
{
    char dir[256];
    worker_dir(dir, sizeof dir, ORG, 0); /* an empty worker dir */
    struct seg s;
    seg_begin(&s, 1, ORG, 0); /* a header-only segment */
    seg_write(&s, ORG, 1, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 0);
    cr_expect_eq(bad, 0);
    cr_expect_null(log_cursor_error(c, NULL, NULL));
    log_cursor_close(c);
    free(s.data);
}

Test(logread, cursor_merges_two_workers_by_receive_time)
{
    struct seg a, b;
    seg_begin(&a, 0, ORG, 0);
    seg_begin(&b, 1, ORG, 0);
    seg_add(&a, 10, "\"a0\"");
    seg_add(&b, 20, "\"b0\"");
    seg_add(&a, 30, "\"a1\"");
    seg_add(&b, 30, "\"b1\""); /* tie: worker 0 first */
    seg_add(&b, 40, "\"b2\"");
    seg_add(&a, 50, "\"a2\"");
    seg_add(&a, 45, "\"a3\""); /* a clock step back within worker 0 */
    seg_write(&a, ORG, 0, 0, NULL);
    seg_write(&b, ORG, 1, 0, NULL);
    static const char *const want[] = {"\"a0\"", "\"b0\"", "\"a1\"", "\"b1\"",
                                       "\"b2\"", "\"a2\"", "\"a3\""};
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct record r;
        const uint8_t *body;
        cr_assert_eq(log_cursor_next(c, &r, &body), 1, "record %zu", i);
        cr_expect_eq(r.length, strlen(want[i]));
        cr_expect(memcmp(body, want[i], r.length) == 0, "record %zu: %.*s", i, (int)r.length, body);
    }
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 0);
    log_cursor_close(c);
    free(a.data);
    free(b.data);
}

Test(logread, cursor_body_includes_topic_and_fields)
{
    struct seg s;
    seg_begin(&s, 2, ORG, 0);
    seg_add_full(&s, 77, 42, "t/x", "\x01\x02", 2);
    seg_write(&s, ORG, 2, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct record r;
    const uint8_t *body;
    cr_assert_eq(log_cursor_next(c, &r, &body), 1);
    cr_expect_eq(r.device, 42);
    cr_expect_eq(r.recv_ns, 77);
    cr_expect_eq(r.topic_len, 3);
    cr_expect_eq(r.length, 5);
    cr_expect(memcmp(body, "t/x\x01\x02", 5) == 0);
    log_cursor_close(c);
    free(s.data);
}

Test(logread, cursor_many_workers_merge_in_order)
{
    /* The device field carries the worker so the tie rule can be checked. */
    enum { W = 17, N = 200 };
    struct seg s[W];
    uint32_t x = 12345;
    for (unsigned w = 0; w < W; w++) {
        seg_begin(&s[w], w, ORG, 0);
        uint64_t t = 0;
        for (unsigned i = 0; i < N; i++) {
            x = x * 1103515245u + 12345u;
            t += (x >> 16) % 50; /* steps of 0 make ties within and across workers */
            seg_add_full(&s[w], t, w, NULL, "0", 1);
        }
        seg_write(&s[w], ORG, w, 0, NULL);
    }
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct record r, prev = {0};
    const uint8_t *body;
    unsigned n = 0;
    uint64_t next_seq[W] = {0};
    int rc;
    while ((rc = log_cursor_next(c, &r, &body)) == 1) {
        cr_assert_lt(r.device, W);
        cr_assert_eq(r.seq, next_seq[r.device], "worker %u out of seq order", r.device);
        next_seq[r.device]++;
        if (n > 0) {
            cr_assert(prev.recv_ns < r.recv_ns ||
                          (prev.recv_ns == r.recv_ns && prev.device <= r.device),
                      "order broken at %u", n);
        }
        prev = r;
        n++;
    }
    cr_expect_eq(rc, 0);
    cr_expect_eq(n, W * N);
    log_cursor_close(c);
    for (unsigned w = 0; w < W; w++)
        free(s[w].data);
}

Test(logread, cursor_reads_segments_in_base_seq_order)
{
    /* Worker 0 rolled twice: bases 0, 3, 10; written newest first so directory
     * order cannot be relied upon. */
    struct seg s0, s1, s2;
    seg_begin(&s2, 0, ORG, 10);
    seg_add(&s2, 11, "10");
    seg_add(&s2, 12, "11");
    seg_write(&s2, ORG, 0, 10, NULL);
    seg_begin(&s1, 0, ORG, 3);
    for (unsigned i = 3; i < 10; i++)
        seg_add(&s1, i + 1, "1");
    seg_write(&s1, ORG, 0, 3, NULL);
    seg_begin(&s0, 0, ORG, 0);
    for (unsigned i = 0; i < 3; i++)
        seg_add(&s0, i + 1, "0");
    seg_write(&s0, ORG, 0, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct record r;
    const uint8_t *body;
    for (uint64_t seq = 0; seq < 12; seq++) {
        cr_assert_eq(log_cursor_next(c, &r, &body), 1, "seq %" PRIu64, seq);
        cr_expect_eq(r.seq, seq);
    }
    cr_expect_eq(log_cursor_next(c, &r, &body), 0);
    log_cursor_close(c);
    free(s0.data);
    free(s1.data);
    free(s2.data);
}

Test(logread, cursor_torn_tail_of_newest_segment_is_silent_every_length)
{
    struct seg old, s, other;
    seg_begin(&old, 0, ORG, 0);
    seg_add(&old, 1, "\"o\"");
    seg_begin(&s, 0, ORG, 1);
    seg_add(&s, 2, "\"p\"");
    seg_add(&s, 3, "\"q\"");
    seg_add(&s, 4, "\"the last one\"");
    seg_begin(&other, 1, ORG, 0);
    seg_add(&other, 5, "\"w1\"");
    seg_write(&old, ORG, 0, 0, NULL);
    seg_write(&other, ORG, 1, 0, NULL);
    size_t last = s.rec_off[2];
    for (size_t len = last + 1; len < s.len; len++) {
        seg_write_len(&s, ORG, 0, 1, len, NULL);
        struct log_cursor *c;
        cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
        unsigned bad;
        cr_expect_eq(drain(c, &bad), 4, "cut at %zu", len);
        cr_expect_eq(bad, 0, "cut at %zu", len);
        cr_expect_null(log_cursor_error(c, NULL, NULL));
        log_cursor_close(c);
    }
    free(old.data);
    free(s.data);
    free(other.data);
}

Test(logread, cursor_checksum_mismatch_reported_once_others_continue)
{
    struct seg a, b;
    seg_small(&a, 3);
    seg_begin(&b, 1, ORG, 0);
    seg_add(&b, 150, "\"b0\"");
    seg_add(&b, 250, "\"b1\"");
    seg_add(&b, 350, "\"b2\"");
    a.data[a.rec_off[1] + RECORD_HEADER_SIZE] ^= 0x04;
    char path[300];
    seg_write(&a, ORG, 0, 0, path);
    seg_write(&b, ORG, 1, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct record r;
    const uint8_t *body;
    unsigned good = 0, bad = 0;
    int rc;
    while ((rc = log_cursor_next(c, &r, &body)) != 0) {
        if (rc == -EBADMSG) {
            bad++;
            const char *where;
            uint64_t off;
            const char *why = log_cursor_error(c, &where, &off);
            cr_assert_not_null(why);
            cr_expect_str_eq(why, "checksum mismatch");
            cr_expect_str_eq(where, path);
            cr_expect_eq(off, a.rec_off[1]);
            continue;
        }
        cr_assert_eq(rc, 1);
        good++;
    }
    cr_expect_eq(bad, 1);
    cr_expect_eq(good, 4, "a0 and b0..b2");
    log_cursor_close(c);
    free(a.data);
    free(b.data);
}

Test(logread, cursor_torn_tail_in_older_segment_is_corruption)
{
    struct seg s0, s1;
    seg_small(&s0, 3);
    seg_write_len(&s0, ORG, 0, 0, s0.len - 2, NULL);
    seg_begin(&s1, 0, ORG, 2);
    seg_add(&s1, 1000, "\"late\"");
    seg_write(&s1, ORG, 0, 2, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 2);
    cr_expect_eq(bad, 1);
    uint64_t off;
    cr_expect_str_eq(log_cursor_error(c, NULL, &off), "truncated record body");
    cr_expect_eq(off, s0.rec_off[2]);
    log_cursor_close(c);
    free(s0.data);
    free(s1.data);
}

Test(logread, cursor_gap_between_segments_is_corruption)
{
    struct seg s0, s1;
    seg_small(&s0, 2); /* seqs 0, 1 */
    seg_write(&s0, ORG, 0, 0, NULL);
    seg_begin(&s1, 0, ORG, 5);
    seg_add(&s1, 1000, "5");
    seg_write(&s1, ORG, 0, 5, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 2);
    cr_expect_eq(bad, 1);
    cr_expect_str_eq(log_cursor_error(c, NULL, NULL), "sequence gap");
    log_cursor_close(c);
    free(s0.data);
    free(s1.data);
}

Test(logread, cursor_gap_within_segment_is_corruption)
{
    struct seg s;
    seg_small(&s, 2);
    s.next_seq = 9;
    seg_add(&s, 500, "9");
    seg_write(&s, ORG, 0, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 2);
    cr_expect_eq(bad, 1);
    cr_expect_str_eq(log_cursor_error(c, NULL, NULL), "sequence gap");
    log_cursor_close(c);
    free(s.data);
}

Test(logread, cursor_bad_segment_header_is_corruption)
{
    struct seg a, b;
    seg_small(&a, 2);
    a.data[0] ^= 1;
    seg_write(&a, ORG, 0, 0, NULL);
    seg_begin(&b, 1, ORG, 0);
    seg_add(&b, 1, "1");
    seg_write(&b, ORG, 1, 0, NULL);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 1);
    cr_expect_eq(bad, 1);
    uint64_t off = 99;
    cr_expect_str_eq(log_cursor_error(c, NULL, &off), "bad segment header");
    cr_expect_eq(off, 0);
    log_cursor_close(c);
    free(a.data);
    free(b.data);
}

Test(logread, cursor_segment_header_must_match_its_place)
{
    /* Good header, wrong place: another org's, another worker's, another base. */
    static const struct {
        uint32_t worker, org;
        uint64_t base;
    } cases[] = {{0, ORG + 1, 0}, {3, ORG, 0}, {0, ORG, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct seg s;
        seg_begin(&s, cases[i].worker, cases[i].org, cases[i].base);
        seg_add(&s, 1, "1");
        seg_write(&s, ORG, 0, 0, NULL);
        struct log_cursor *c;
        cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
        unsigned bad;
        cr_expect_eq(drain(c, &bad), 0, "case %zu", i);
        cr_expect_eq(bad, 1, "case %zu", i);
        log_cursor_close(c);
        free(s.data);
    }
}

Test(logread, cursor_newest_segment_without_header_is_silent)
{
    struct seg s0, s1;
    seg_small(&s0, 2);
    seg_write(&s0, ORG, 0, 0, NULL);
    seg_begin(&s1, 0, ORG, 2);
    for (size_t len = 0; len < SEGMENT_HEADER_SIZE; len++) {
        seg_write_len(&s1, ORG, 0, 2, len, NULL);
        struct log_cursor *c;
        cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
        unsigned bad;
        cr_expect_eq(drain(c, &bad), 2, "len %zu", len);
        cr_expect_eq(bad, 0, "len %zu", len);
        log_cursor_close(c);
    }
    free(s0.data);
    free(s1.data);
}

Test(logread, cursor_skips_names_that_are_not_segments)
{
    struct seg s;
    seg_small(&s, 2);
    seg_write(&s, ORG, 0, 0, NULL);
    char dir[256], p[400];
    worker_dir(dir, sizeof dir, ORG, 0);
    /* Not segments: wrong digit count, a suffix, a temp file, a non-w dir, a
     * "w" file that is not a directory, "w" with no number. */
    static const char *const junk[] = {"w0/0.seg",
                                       "w0/00000000000000000000.seg.tmp",
                                       "w0/0000000000000000000x.seg",
                                       "w0/index",
                                       "wx",
                                       "w1",
                                       "w"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        snprintf(p, sizeof p, "%s/logs/%u/%s", root, ORG, junk[i]);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        cr_assert(fd >= 0, "%s", p);
        cr_assert_eq(write(fd, "garbage", 7), 7);
        close(fd);
    }
    snprintf(p, sizeof p, "%s/logs/%u/archive", root, ORG);
    mkdir(p, 0755);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 2);
    cr_expect_eq(bad, 0);
    log_cursor_close(c);
    free(s.data);
}
