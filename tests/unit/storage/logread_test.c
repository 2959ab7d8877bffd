/* tests/unit/storage/logread_test.c — log_scan_segment, the time index, the
 * merging and range cursors and following (storage/logread.c), over segments
 * built with record_encode in a temp dir. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "storage/log.h"
#include "storage/record.h"
#include "segtest.h"

#define ORG 7u

static void setup(void)
{
    segtest_setup("logread-test");
}

TestSuite(logread, .init = setup, .fini = segtest_teardown, .timeout = 60);

/* ---- helpers (building segments: segtest.h) ---- */

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
    put_le(len, RECORD_MAX_BODY + 1, 4);
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_str_eq(sc.why, "bad record header");
    put_le(len, RECORD_MAX_BODY, 4);
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
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &at), 1);
    cr_expect_eq(at, s.rec_off[2]);
    close(fd);

    /* Damage in the last record only: nothing good follows. */
    s.data[s.rec_off[1] + RECORD_HEADER_SIZE] ^= 0x40;
    s.data[s.len - 1] ^= 0x40;
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(write(fd, s.data, s.len), (ssize_t)s.len);
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    cr_expect_str_eq(sc.why, "checksum mismatch");
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &at), 0);
    close(fd);

    /* A torn tail: nothing follows either. */
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    cr_assert_eq(write(fd, s.data, s.rec_off[3] + 20), (ssize_t)(s.rec_off[3] + 20));
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &at), 0);
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
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &at), 1);
    cr_expect_eq(at, s.rec_off[2]);
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, s.rec_off[2], 3, &at), 0);
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
    /* past the damage the cursor resyncs at the next verified batch start */
    cr_expect_eq(good, 5, "a0, a2 and b0..b2");
    log_cursor_close(c);
    free(a.data);
    free(b.data);
}

/* The stream goes on with the next segment: after a crash the writer continues
 * in a new segment past a damaged one, and its records must stay readable. */
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
    cr_expect_eq(drain(c, &bad), 3, "r0, r1, then the next segment's record");
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
    cr_expect_eq(drain(c, &bad), 3, "the gap is reported once, then seq 5 is read");
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
    cr_expect_eq(drain(c, &bad), 3, "the gap is reported once, then seq 9 is read");
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

/* The one rule for names (storage/logread.c), which the writer, the cursor and
 * maintenance all use: exactly 20 digits, no sign or blank, fitting in u64. */
Test(logread, segment_and_worker_name_rules)
{
    static const struct {
        const char *name;
        int ok;
        uint64_t base;
    } segs[] = {
        {"00000000000000000000.seg", 1, 0},
        {"00000000000000000042.seg", 1, 42},
        {"18446744073709551615.seg", 1, UINT64_MAX},
        {"18446744073709551616.seg", 0, 0}, /* 2^64 */
        {"99999999999999999999.seg", 0, 0},
        {"0000000000000000042.seg", 0, 0},   /* 19 digits */
        {"000000000000000000042.seg", 0, 0}, /* 21 */
        {" 0000000000000000042.seg", 0, 0},
        {"+0000000000000000042.seg", 0, 0},
        {"-0000000000000000042.seg", 0, 0},
        {"0000000000000000004x.seg", 0, 0},
        {"00000000000000000042.idx", 0, 0},
        {"00000000000000000042.seg.tmp", 0, 0},
        {"00000000000000000042.se", 0, 0},
        {".seg", 0, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof segs / sizeof segs[0]; i++) {
        uint64_t base = 7;
        int rc = log_name_base(segs[i].name, ".seg", &base);
        cr_expect_eq(rc, segs[i].ok ? 0 : -EINVAL, "'%s': %d", segs[i].name, rc);
        if (segs[i].ok) cr_expect_eq(base, segs[i].base, "'%s'", segs[i].name);
    }
    uint64_t base;
    cr_expect_eq(log_name_base("00000000000000000042.idx", ".idx", &base), 0);
    cr_expect_eq(base, 42);
    char path[27]; /* exactly room for the one below */
    cr_expect_eq(log_file_path(path, sizeof path, "d", 42, ".seg"), 0);
    cr_expect_str_eq(path, "d/00000000000000000042.seg");
    cr_expect_eq(log_file_path(path, sizeof path - 1, "d", 42, ".seg"), -ENAMETOOLONG);

    static const struct {
        const char *name;
        int ok;
        unsigned worker;
    } workers[] = {
        {"w0", 1, 0},
        {"w17", 1, 17},
        {"w007", 1, 7},
        {"w2147483647", 1, 2147483647u},
        {"w2147483648", 0, 0},
        {"w", 0, 0},
        {"wx", 0, 0},
        {"w-1", 0, 0},
        {"w+1", 0, 0},
        {"w 1", 0, 0},
        {"W1", 0, 0},
        {"1", 0, 0},
        {"w99999999999999999999", 0, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof workers / sizeof workers[0]; i++) {
        unsigned w = 12345;
        int rc = log_worker_name(workers[i].name, &w);
        cr_expect_eq(rc, workers[i].ok ? 0 : -EINVAL, "'%s': %d", workers[i].name, rc);
        if (workers[i].ok) cr_expect_eq(w, workers[i].worker, "'%s'", workers[i].name);
    }
}

/* ---- the sparse time index (log_index_read / log_index_build) ---- */

static void index_free(struct log_index *x)
{
    free(x->e);
    x->e = NULL;
    x->n = x->cap = 0;
}

static void spit(const char *path, const void *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(fd >= 0, "open %s", path);
    cr_assert_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
}

/* Rewrites the trailing checksum so a crafted change passes it. */
static void reseal(uint8_t *b, size_t len)
{
    put_le(b + len - 8, XXH3_64bits(b, len - 8), 8);
}

/* The index a correct writer would produce for s, with an entry every `every`
 * records (denser than LOG_INDEX_INTERVAL so small test segments get seeks). */
static void index_of(const struct seg *s, uint64_t base, unsigned every, struct log_index *x)
{
    memset(x, 0, sizeof *x);
    x->base_seq = base;
    x->min_ns = UINT64_MAX;
    x->max_ns = 0;
    x->cap = s->nrec + 1;
    x->e = calloc(x->cap, sizeof *x->e);
    cr_assert_not_null(x->e);
    uint64_t before = 0;
    for (size_t i = 0; i < s->nrec; i++) {
        struct record r;
        cr_assert_eq(record_decode(s->data + s->rec_off[i], s->version, &r), 0);
        if (i % every == 0) x->e[x->n++] = (struct log_index_entry){s->rec_off[i], r.seq, before};
        if (r.recv_ns > before) before = r.recv_ns;
        if (r.recv_ns < x->min_ns) x->min_ns = r.recv_ns;
        if (r.recv_ns > x->max_ns) x->max_ns = r.recv_ns;
    }
}

Test(logread, index_write_read_round_trip)
{
    struct seg s;
    seg_small(&s, 5);
    char path[300];
    seg_write(&s, ORG, 0, 0, path);
    struct log_index w, r;
    index_of(&s, 0, 2, &w);
    cr_assert_eq(w.n, 3);
    cr_assert_eq(log_index_write(path, &w), 0);
    cr_assert_eq(log_index_read(path, &r), 0);
    cr_expect_eq(r.base_seq, 0);
    cr_expect_eq(r.min_ns, 100);
    cr_expect_eq(r.max_ns, 500);
    cr_assert_eq(r.n, w.n);
    for (size_t i = 0; i < r.n; i++) {
        cr_expect_eq(r.e[i].offset, w.e[i].offset, "entry %zu", i);
        cr_expect_eq(r.e[i].seq, w.e[i].seq, "entry %zu", i);
        cr_expect_eq(r.e[i].max_ns_before, w.e[i].max_ns_before, "entry %zu", i);
    }
    index_free(&r);

    /* An index with no entry (an empty segment: min > max) round-trips too. */
    struct log_index empty = {.base_seq = 0, .min_ns = UINT64_MAX, .max_ns = 0};
    cr_assert_eq(log_index_write(path, &empty), 0);
    cr_assert_eq(log_index_read(path, &r), 0);
    cr_expect_eq(r.n, 0);
    cr_expect_null(r.e);
    cr_expect_gt(r.min_ns, r.max_ns);
    index_free(&w);
    free(s.data);
}

Test(logread, index_read_missing_is_enoent_and_needs_seg_name)
{
    struct log_index r;
    char path[300];
    seg_path(path, sizeof path, ORG, 0, 0);
    cr_expect_eq(log_index_read(path, &r), -ENOENT);
    cr_expect_eq(log_index_read("/tmp/not-a-segment.txt", &r), -EINVAL);
    cr_expect_eq(log_index_read("", &r), -EINVAL);
}

Test(logread, index_every_flipped_byte_and_every_truncation_is_ebadmsg)
{
    struct seg s;
    seg_small(&s, 5);
    char path[300], ipath[310];
    seg_write(&s, ORG, 0, 0, path);
    struct log_index w, r;
    index_of(&s, 0, 2, &w);
    cr_assert_eq(log_index_write(path, &w), 0);
    idx_path(ipath, sizeof ipath, path);
    size_t len;
    uint8_t *b = slurp(ipath, &len);
    cr_assert_eq(len, LOG_INDEX_HEADER_SIZE + 3 * LOG_INDEX_ENTRY_SIZE + 8);
    for (size_t i = 0; i < len; i++) {
        b[i] ^= 0x10;
        spit(ipath, b, len);
        cr_expect_eq(log_index_read(path, &r), -EBADMSG, "flip at %zu", i);
        b[i] ^= 0x10;
    }
    for (size_t l = 0; l < len; l++) {
        spit(ipath, b, l);
        cr_expect_eq(log_index_read(path, &r), -EBADMSG, "cut to %zu", l);
    }
    /* Overlong: a valid index with junk appended. */
    uint8_t *big = calloc(1, len + LOG_INDEX_ENTRY_SIZE);
    memcpy(big, b, len);
    spit(ipath, big, len + LOG_INDEX_ENTRY_SIZE);
    cr_expect_eq(log_index_read(path, &r), -EBADMSG);
    spit(ipath, b, len);
    cr_expect_eq(log_index_read(path, &r), 0);
    index_free(&r);
    free(big);
    free(b);
    index_free(&w);
    free(s.data);
}

/* Hostile but checksummed: what a buggy writer could produce. Each must be
 * refused, or a reader would seek into the middle of a record. */
Test(logread, index_with_valid_checksum_but_impossible_entries_is_ebadmsg)
{
    struct seg s;
    seg_small(&s, 6);
    char path[300], ipath[310];
    seg_write(&s, ORG, 0, 0, path);
    idx_path(ipath, sizeof ipath, path);
    struct log_index w, r;
    index_of(&s, 0, 2, &w);
    cr_assert_eq(log_index_write(path, &w), 0);
    size_t len;
    uint8_t *orig = slurp(ipath, &len);
    uint8_t *b = malloc(len);
    enum { E0 = LOG_INDEX_HEADER_SIZE, E1 = E0 + LOG_INDEX_ENTRY_SIZE };
    static const struct {
        size_t at;
        uint64_t v;
        const char *what;
    } cases[] = {
        {8, 1, "base_seq other than the file name's"},
        {E0, 33, "first entry not at the segment header's end"},
        {E0 + 8, 1, "first entry not the base seq"},
        {E1, 32, "offsets not increasing"},
        {E1 + 8, 0, "seqs not increasing"},
        {E1 + 8, 50, "more seqs than records fit between entries"},
        {E1 + 16, 100000, "max_ns_before beyond max_ns"},
        {16, 600, "entries but min_ns > max_ns"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(b, orig, len);
        put_le(b + cases[i].at, cases[i].v, 8);
        if (cases[i].at == 16) put_le(b + 24, 500, 8);
        reseal(b, len);
        spit(ipath, b, len);
        cr_expect_eq(log_index_read(path, &r), -EBADMSG, "%s", cases[i].what);
    }
    /* A wrong magic, version or entry size with a fresh checksum. */
    for (size_t at = 0; at < 8; at++) {
        memcpy(b, orig, len);
        b[at] ^= 0x01;
        reseal(b, len);
        spit(ipath, b, len);
        cr_expect_eq(log_index_read(path, &r), -EBADMSG, "header byte %zu", at);
    }
    free(b);
    free(orig);
    index_free(&w);
    free(s.data);
}

Test(logread, index_build_entries_are_record_starts_at_least_interval_apart)
{
    /* ~5.6 MiB in 230 KiB records with the clock stepping back now and then,
     * so the index has several entries and max_ns_before is a running max. */
    enum { N = 25, SZ = 230000 };
    uint8_t *pay = calloc(1, SZ);
    struct seg s;
    seg_begin(&s, 0, ORG, 100);
    uint64_t ns[N];
    for (unsigned i = 0; i < N; i++) {
        ns[i] = 1000 + 10 * i - (i % 7 == 3 ? 55 : 0);
        seg_add_full(&s, ns[i], 1, NULL, pay, SZ);
    }
    char path[300];
    seg_write(&s, ORG, 0, 100, path);
    cr_assert_eq(log_index_build(path), 0);
    struct log_index x;
    cr_assert_eq(log_index_read(path, &x), 0);
    cr_expect_eq(x.base_seq, 100);
    uint64_t mn = UINT64_MAX, mx = 0;
    for (unsigned i = 0; i < N; i++) {
        mn = ns[i] < mn ? ns[i] : mn;
        mx = ns[i] > mx ? ns[i] : mx;
    }
    cr_expect_eq(x.min_ns, mn);
    cr_expect_eq(x.max_ns, mx);
    cr_assert_geq(x.n, 4);
    cr_expect_eq(x.e[0].offset, SEGMENT_HEADER_SIZE);
    cr_expect_eq(x.e[0].seq, 100);
    for (size_t j = 0; j < x.n; j++) {
        size_t i = 0;
        while (i < N && s.rec_off[i] != x.e[j].offset)
            i++;
        cr_assert_lt(i, N, "entry %zu is not at a record start", j);
        cr_expect_eq(x.e[j].seq, 100 + i);
        uint64_t before = 0;
        for (size_t k = 0; k < i; k++)
            before = ns[k] > before ? ns[k] : before;
        cr_expect_eq(x.e[j].max_ns_before, before, "entry %zu", j);
        if (j > 0) cr_expect_geq(x.e[j].offset - x.e[j - 1].offset, LOG_INDEX_INTERVAL);
    }
    /* Sparse as allowed: no gap between entries exceeds interval + a record. */
    for (size_t j = 1; j < x.n; j++)
        cr_expect_lt(x.e[j].offset - x.e[j - 1].offset, LOG_INDEX_INTERVAL + SZ + 40 + 1);
    index_free(&x);
    free(pay);
    free(s.data);
}

Test(logread, index_build_covers_the_verified_prefix_only)
{
    struct seg s;
    seg_small(&s, 4);
    s.data[s.rec_off[2] + RECORD_HEADER_SIZE] ^= 1; /* records 2 and 3 unreadable */
    char path[300];
    seg_write(&s, ORG, 0, 0, path);
    cr_assert_eq(log_index_build(path), 0);
    struct log_index x;
    cr_assert_eq(log_index_read(path, &x), 0);
    cr_expect_eq(x.min_ns, 100);
    cr_expect_eq(x.max_ns, 200);
    index_free(&x);

    /* Header only: an empty index. Bad header or misnamed: refused. */
    struct seg e;
    seg_begin(&e, 0, ORG, 7);
    seg_write(&e, ORG, 0, 7, path);
    cr_assert_eq(log_index_build(path), 0);
    cr_assert_eq(log_index_read(path, &x), 0);
    cr_expect_eq(x.n, 0);
    cr_expect_gt(x.min_ns, x.max_ns);
    index_free(&x);
    seg_write(&e, ORG, 0, 8, path); /* header says base 7 */
    cr_expect_eq(log_index_build(path), -EBADMSG);
    seg_write_len(&e, ORG, 0, 9, 10, path);
    cr_expect_eq(log_index_build(path), -EBADMSG);
    seg_path(path, sizeof path, ORG, 0, 12345);
    cr_expect_eq(log_index_build(path), -ENOENT);
    free(e.data);
    free(s.data);
}

/* ---- the range cursor ---- */

struct rec_id {
    uint32_t device; /* the worker, in these tests */
    uint64_t seq, ns;
};

/* Every record of a cursor in order; fails on any error. */
static size_t collect(struct log_cursor *c, struct rec_id *out, size_t cap)
{
    struct record r;
    const uint8_t *body;
    size_t n = 0;
    int rc;
    while ((rc = log_cursor_next(c, &r, &body)) == 1) {
        cr_assert_lt(n, cap);
        out[n++] = (struct rec_id){r.device, r.seq, r.recv_ns};
    }
    cr_assert_eq(rc, 0, "cursor failed: %d", rc);
    return n;
}

static size_t range_ids(uint64_t since, uint64_t until, struct rec_id *out, size_t cap)
{
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open_range(root, ORG, since, until, &c), 0);
    size_t n = collect(c, out, cap);
    log_cursor_close(c);
    return n;
}

/* Builds W workers of S segments of R records each with random times that
 * mostly rise but sometimes step back, and a dense, correct index for every
 * sealed segment. Returns the largest time used. */
static uint64_t build_random_log(unsigned W, unsigned S, unsigned R, uint32_t seed)
{
    uint32_t x = seed;
    uint64_t tmax = 0;
    for (unsigned w = 0; w < W; w++) {
        uint64_t t = 1000, seq = 0;
        for (unsigned k = 0; k < S; k++) {
            struct seg s;
            uint64_t base = seq;
            seg_begin(&s, w, ORG, base);
            for (unsigned i = 0; i < R; i++) {
                x = x * 1103515245u + 12345u;
                unsigned roll = (x >> 16) % 100;
                if (roll < 4 && t > 400)
                    t -= 300 + roll * 10; /* a clock step back */
                else
                    t += roll % 13;
                seg_add_full(&s, t, w, NULL, "1", 1);
                tmax = t > tmax ? t : tmax;
                seq++;
            }
            char path[300];
            seg_write(&s, ORG, w, base, path);
            if (k + 1 < S) {
                struct log_index ix;
                index_of(&s, base, 1 + (x >> 20) % 5, &ix);
                cr_assert_eq(log_index_write(path, &ix), 0);
                index_free(&ix);
            }
            free(s.data);
        }
    }
    return tmax;
}

Test(logread, range_cursor_equals_filtered_full_scan_with_clock_steps)
{
    enum { W = 4, S = 4, R = 60, CAP = W * S * R };
    uint64_t tmax = build_random_log(W, S, R, 777);
    struct rec_id *all = malloc(CAP * sizeof *all), *got = malloc(CAP * sizeof *got);
    struct rec_id *want = malloc(CAP * sizeof *want);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    size_t nall = collect(c, all, CAP);
    log_cursor_close(c);
    cr_assert_eq(nall, CAP);

    uint32_t x = 99;
    unsigned seeked = 0;
    for (unsigned q = 0; q < 300; q++) {
        x = x * 1103515245u + 12345u;
        uint64_t since = q % 5 == 0 ? 0 : 900 + (x >> 8) % (tmax - 800);
        x = x * 1103515245u + 12345u;
        uint64_t until = q % 7 == 0 ? 0 : since + (x >> 8) % 900;
        size_t nw = 0;
        for (size_t i = 0; i < nall; i++)
            if (all[i].ns >= since && (until == 0 || all[i].ns < until)) want[nw++] = all[i];
        size_t ng = range_ids(since, until, got, CAP);
        cr_assert_eq(ng, nw, "since %" PRIu64 " until %" PRIu64, since, until);
        for (size_t i = 0; i < ng; i++)
            cr_assert(got[i].device == want[i].device && got[i].seq == want[i].seq,
                      "since %" PRIu64 " until %" PRIu64 ": record %zu is w%u/%" PRIu64
                      ", want w%u/%" PRIu64,
                      since, until, i, got[i].device, got[i].seq, want[i].device, want[i].seq);
        seeked += since > 0 && nw < nall;
    }
    cr_expect_gt(seeked, 100);
    free(all);
    free(got);
    free(want);
}

/* What the index is trusted for, made visible: a sealed segment whose index
 * puts it outside the range is not read, so its damage is not met (log verify
 * is the check); in range, the damage is reported as by a full cursor. */
Test(logread, range_cursor_skips_sealed_segment_by_index_without_reading_it)
{
    struct seg s0, s1;
    seg_small(&s0, 4); /* 100..400 */
    char p0[300];
    seg_write(&s0, ORG, 0, 0, p0);
    cr_assert_eq(log_index_build(p0), 0);
    s0.data[s0.rec_off[1] + RECORD_HEADER_SIZE] ^= 1;
    seg_write(&s0, ORG, 0, 0, NULL);
    seg_begin(&s1, 0, ORG, 4);
    seg_add(&s1, 1000, "\"new\"");
    seg_write(&s1, ORG, 0, 4, NULL);
    struct rec_id got[8];
    cr_expect_eq(range_ids(500, 0, got, 8), 1);
    cr_expect_eq(got[0].seq, 4);

    struct log_cursor *c;
    cr_assert_eq(log_cursor_open_range(root, ORG, 50, 0, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 4, "seq 0, then 2 and 3 past the damage, then seq 4");
    cr_expect_eq(bad, 1);
    log_cursor_close(c);
    free(s0.data);
    free(s1.data);
}

Test(logread, range_cursor_ignores_newest_segment_index_and_lying_entries)
{
    struct seg s0, s1;
    seg_small(&s0, 6);
    char p0[300], p1[300];
    seg_write(&s0, ORG, 0, 0, p0);
    /* An entry that names a record that is not at its offset (checksummed, so
     * only the seek check catches it): reading falls back to the start. */
    struct log_index ix;
    index_of(&s0, 0, 1, &ix);
    ix.e[3].offset = ix.e[4].offset;
    ix.e[4].offset = ix.e[5].offset;
    ix.n = 5;
    cr_assert_eq(log_index_write(p0, &ix), 0);
    index_free(&ix);
    seg_begin(&s1, 0, ORG, 6);
    seg_add(&s1, 700, "\"a\"");
    seg_add(&s1, 800, "\"b\"");
    seg_write(&s1, ORG, 0, 6, p1);
    /* The newest segment's index claims it ends long before: not believed
     * (a crash during a roll can leave a stale one). */
    struct log_index stale = {.base_seq = 6, .min_ns = 1, .max_ns = 2};
    cr_assert_eq(log_index_write(p1, &stale), 0);
    struct rec_id got[16];
    size_t n = range_ids(350, 0, got, 16);
    cr_assert_eq(n, 5);
    uint64_t want[] = {3, 4, 5, 6, 7};
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(got[i].seq, want[i], "record %zu", i);
    free(s0.data);
    free(s1.data);
}

Test(logread, range_cursor_empty_and_inverted_ranges_yield_nothing)
{
    build_random_log(2, 2, 20, 5);
    struct rec_id got[100];
    cr_expect_eq(range_ids(1, 1, got, 100), 0);
    cr_expect_eq(range_ids(5000, 10, got, 100), 0);
    cr_expect_eq(range_ids(UINT64_MAX, 0, got, 100), 0);
    cr_expect_eq(range_ids(0, 0, got, 100), 80);
    struct log_cursor *c = (void *)1;
    cr_expect_eq(log_cursor_open_range(root, 99, 5, 10, &c), -ENOENT);
    cr_expect_null(c);
}

/* ---- following (log_cursor_poll) ---- */

static void append_file(const char *path, const void *b, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    cr_assert(fd >= 0, "open %s", path);
    cr_assert_eq(write(fd, b, len), (ssize_t)len);
    close(fd);
}

/* A writer that wrote zeros ahead (log_writer_reserve) puts records over them:
 * the file size does not change, and the cursor must read again anyway. */
Test(logread, poll_picks_up_records_written_over_zeros_ahead)
{
    struct seg s0;
    seg_begin(&s0, 0, ORG, 0);
    seg_add(&s0, 10, "\"a\"");
    size_t first = s0.len;
    seg_add(&s0, 20, "\"b\"");
    seg_add(&s0, 30, "\"c\"");
    size_t total = s0.len;
    uint8_t *img = calloc(1, total + 4096);
    memcpy(img, s0.data, first); /* record a, then zeros where b and c will go */
    struct seg z = {.data = img, .len = total + 4096};
    char p0[300];
    seg_write(&z, ORG, 0, 0, p0);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct rec_id got[16];
    cr_assert_eq(collect(c, got, 16), 1, "record a; the zeros are not an error");
    /* b arrives over the zeros, then half of c (a write in progress) */
    int fd = open(p0, O_WRONLY);
    cr_assert(fd >= 0);
    size_t cstart = s0.rec_off[2];
    cr_assert_eq(pwrite(fd, s0.data + first, cstart - first + 10, (off_t)first),
                 (ssize_t)(cstart - first + 10));
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_assert_eq(collect(c, got, 16), 1, "record b; half a c is not an error either");
    cr_expect_eq(got[0].seq, 1);
    cr_assert_eq(pwrite(fd, s0.data + cstart + 10, total - cstart - 10, (off_t)(cstart + 10)),
                 (ssize_t)(total - cstart - 10));
    close(fd);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_assert_eq(collect(c, got, 16), 1, "record c once complete");
    cr_expect_eq(got[0].seq, 2);
    log_cursor_close(c);
    free(img);
    free(s0.data);
}

Test(logread, poll_picks_up_appends_new_segments_and_new_workers)
{
    struct seg s0, s1, t;
    seg_begin(&s0, 0, ORG, 0);
    seg_add(&s0, 10, "\"a\"");
    char p0[300], p1[300], q[300];
    seg_write(&s0, ORG, 0, 0, p0);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct rec_id got[16];
    cr_assert_eq(collect(c, got, 16), 1);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_expect_eq(collect(c, got, 16), 0, "nothing new");

    /* An append, cut in the middle of a record: only the complete one shows,
     * the rest once it is complete. */
    size_t at = s0.len;
    seg_add(&s0, 20, "\"b\"");
    seg_add(&s0, 30, "\"c\"");
    append_file(p0, s0.data + at, s0.len - at - 5);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_assert_eq(collect(c, got, 16), 1);
    cr_expect_eq(got[0].seq, 1);
    append_file(p0, s0.data + s0.len - 5, 5);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_assert_eq(collect(c, got, 16), 1);
    cr_expect_eq(got[0].seq, 2);

    /* A roll: the new segment is first created without its header. */
    seg_begin(&s1, 0, ORG, 3);
    seg_add(&s1, 40, "\"d\"");
    seg_write_len(&s1, ORG, 0, 3, 0, p1);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_expect_eq(collect(c, got, 16), 0);
    seg_write(&s1, ORG, 0, 3, NULL);
    /* A worker that did not exist when the cursor was opened. */
    seg_begin(&t, 5, ORG, 0);
    seg_add_full(&t, 35, 5, NULL, "\"w5\"", 4);
    seg_write(&t, ORG, 5, 0, q);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_assert_eq(collect(c, got, 16), 2);
    cr_expect(got[0].device == 5 && got[0].seq == 0, "w5 first (35 < 40)");
    cr_expect(got[1].device == 1 && got[1].seq == 3, "then w0's (seg_add: device 1)");
    cr_expect_null(log_cursor_error(c, NULL, NULL));
    log_cursor_close(c);
    free(s0.data);
    free(s1.data);
    free(t.data);
}

/* A restarted writer cuts the torn tail the cursor was waiting at and writes
 * new records over its place: the cursor must read the new bytes, not the torn
 * ones still in its buffer. */
Test(logread, poll_after_writer_cut_a_torn_tail_reads_the_new_bytes)
{
    struct seg s, torn;
    seg_begin(&s, 0, ORG, 0);
    seg_add(&s, 10, "\"a\"");
    size_t keep = s.len;
    char path[300];
    torn = s;
    torn.data = malloc(s.cap);
    memcpy(torn.data, s.data, s.len);
    seg_add(&torn, 20, "\"torn-torn-torn\"");
    seg_write_len(&torn, ORG, 0, 0, torn.len - 3, path);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    struct rec_id got[8];
    cr_assert_eq(collect(c, got, 8), 1);
    seg_add(&s, 25, "\"after restart\"");
    seg_add(&s, 26, "\"more\"");
    seg_write(&s, ORG, 0, 0, NULL); /* truncate + rewrite, as recovery does */
    (void)keep;
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_assert_eq(collect(c, got, 8), 2);
    cr_expect_eq(got[0].seq, 1);
    cr_expect_eq(got[0].ns, 25);
    cr_expect_eq(got[1].seq, 2);
    log_cursor_close(c);
    free(s.data);
    free(torn.data);
}

Test(logread, poll_torn_record_becomes_corruption_once_the_segment_is_sealed)
{
    struct seg s0, s1;
    seg_small(&s0, 2);
    char p0[300];
    seg_write_len(&s0, ORG, 0, 0, s0.len - 4, p0);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    unsigned bad;
    cr_expect_eq(drain(c, &bad), 1);
    cr_expect_eq(bad, 0, "a torn tail of the newest segment is a write in progress");
    seg_begin(&s1, 0, ORG, 2);
    seg_add(&s1, 900, "9");
    seg_write(&s1, ORG, 0, 2, NULL);
    cr_assert_eq(log_cursor_poll(c), 0);
    cr_expect_eq(drain(c, &bad), 1, "the new segment's record");
    cr_expect_eq(bad, 1, "a newer segment exists: the cut record will never complete");
    log_cursor_close(c);
    free(s0.data);
    free(s1.data);
}

/* ---- format v1 segments and D8 (records forged inside payloads) ---- */

/* A segment written in an older format (v1: before the seeded checksums; v2:
 * before durable_seq) reads as it always did, its version taken from its
 * header: its own header sizes, durable_seq 0, through scan, cursor, verify
 * and index build. */
static void old_segment_reads_as_before(unsigned version)
{
    size_t seg_hdr = version == 1 ? SEGMENT_HEADER_SIZE_V1 : SEGMENT_HEADER_SIZE;
    struct seg s;
    seg_begin_version(&s, version, 0, ORG, 0);
    seg_add(&s, 100, "\"a\"");
    seg_add(&s, 200, "\"b\"");
    seg_add_full(&s, 300, 1, "t/1", "\"c\"", 3);
    cr_assert_eq(s.rec_off[0], seg_hdr);
    cr_assert_eq(s.rec_off[1], seg_hdr + record_header_size(version) + 3);

    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_null(sc.why, "%s", sc.why);
    cr_expect_eq(sc.hdr.version, version);
    cr_expect_eq(sc.records, 3);
    cr_expect_eq(sc.valid_end, s.len);

    char path[300];
    seg_write(&s, ORG, 0, 0, path);
    struct log_cursor *c;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    static const char *const want[] = {"\"a\"", "\"b\"", "t/1\"c\""};
    for (int i = 0; i < 3; i++) {
        struct record r;
        const uint8_t *body;
        cr_assert_eq(log_cursor_next(c, &r, &body), 1);
        cr_expect_eq(r.version, version);
        cr_expect_eq(r.seq, (uint64_t)i);
        cr_expect_eq(r.durable_seq, 0, "v%u has no durable_seq", version);
        cr_expect_eq(r.length, strlen(want[i]));
        cr_expect(memcmp(body, want[i], r.length) == 0, "record %d", i);
    }
    struct record r;
    const uint8_t *body;
    cr_expect_eq(log_cursor_next(c, &r, &body), 0);
    log_cursor_close(c);

    struct log_verify_stats st = {0};
    cr_expect_eq(log_verify_org(root, ORG, NULL, NULL, &st), 0);
    cr_expect_eq(st.records, 3);
    cr_expect_eq(st.warnings, 0);

    cr_assert_eq(log_index_build(path), 0);
    struct log_index x;
    cr_assert_eq(log_index_read(path, &x), 0);
    cr_assert_geq(x.n, 1);
    cr_expect_eq(x.e[0].offset, seg_hdr, "a v%u segment's first record", version);
    cr_expect_eq(x.min_ns, 100);
    cr_expect_eq(x.max_ns, 300);
    free(x.e);
    free(s.data);
}

Test(logread, v1_segment_still_reads_through_scan_cursor_verify_and_index)
{
    old_segment_reads_as_before(1);
}

Test(logread, v2_segment_still_reads_through_scan_cursor_verify_and_index)
{
    old_segment_reads_as_before(2);
}

/* Records 0..2 acknowledged, record 3 lost (a hole), records 4 and 5 on disk,
 * written while 3 was in flight: they state durable_seq 3, or (proved) the
 * last one states 4, which only a writer that saw 3 durable could. */
static void hole_then_later_batches(unsigned version, bool proved, char *path)
{
    struct seg s;
    seg_begin_version(&s, version, 0, ORG, 0);
    for (unsigned i = 0; i < 6; i++) {
        char p[16];
        snprintf(p, sizeof p, "\"r%u\"", i);
        seg_add_stating(&s, 100 * (i + 1), 1, NULL, p, strlen(p),
                        i < 4              ? i
                        : proved && i == 5 ? 4
                                           : 3);
    }
    memset(s.data + s.rec_off[3], 0, s.rec_off[4] - s.rec_off[3]);
    seg_write(&s, ORG, 0, 0, path);
    free(s.data);
}

/* S11: with several batches in flight, verified batches after a hole that no
 * later batch knew durable are a torn tail of the newest segment for every
 * reader too (the writer's recovery cuts them): not corruption, the end of the
 * data for now. */
Test(logread, S11_v3_newest_batches_after_a_hole_not_known_durable_are_a_torn_tail)
{
    char path[300];
    hole_then_later_batches(3, false, path);
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    struct log_scan sc;
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    cr_expect_eq(sc.records, 3);
    uint64_t found;
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &found), 1,
                 "the later batches verify");
    struct log_scan_after a;
    cr_expect_eq(log_scan_after_damage(fd, &sc.hdr, sc.valid_end, sc.next_seq, &a), LOG_SCAN_TORN);
    cr_expect_eq(a.batches, 2, "both later batches were looked at");
    cr_expect_eq(a.first, found);
    close(fd);

    struct log_cursor *c;
    unsigned bad;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    cr_expect_eq(drain(c, &bad), 3);
    cr_expect_eq(bad, 0, "a torn tail reported as corruption");
    log_cursor_close(c);
    struct log_verify_stats st = {0};
    cr_expect_eq(log_verify_org(root, ORG, NULL, NULL, &st), 0);
    cr_expect_eq(st.warnings, 1, "the torn tail is a warning");
}

/* The same hole, but the last batch states durable_seq 4: record 3 had been
 * durable, so this is damage in the middle, reported, and reading goes on
 * after it. */
Test(logread, S11_v3_newest_damage_a_later_batch_knew_durable_is_corruption)
{
    char path[300];
    hole_then_later_batches(3, true, path);
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    struct log_scan sc;
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    struct log_scan_after a;
    cr_expect_eq(log_scan_after_damage(fd, &sc.hdr, sc.valid_end, sc.next_seq, &a),
                 LOG_SCAN_MIDDLE);
    cr_expect_eq(a.batches, 2);
    cr_expect_eq(a.durable_seq, 4);
    cr_expect_gt(a.proof, a.first, "the proof is the second later batch");
    close(fd);

    struct log_cursor *c;
    unsigned bad;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    cr_expect_eq(drain(c, &bad), 5, "the records on both sides of the damage");
    cr_expect_eq(bad, 1);
    log_cursor_close(c);
    struct log_verify_stats st = {0};
    cr_expect_eq(log_verify_org(root, ORG, NULL, NULL, &st), 1);
    cr_expect_eq(st.records, 5);
}

/* v2 keeps its rule: a later verified batch start is proof enough (one batch
 * was in flight), so the same bytes in a v2 segment are corruption. */
Test(logread, v2_newest_hole_then_a_later_batch_is_corruption_as_before)
{
    char path[300];
    hole_then_later_batches(2, false, path);
    struct log_cursor *c;
    unsigned bad;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    cr_expect_eq(drain(c, &bad), 5);
    cr_expect_eq(bad, 1);
    log_cursor_close(c);
    cr_expect_eq(log_verify_org(root, ORG, NULL, NULL, NULL), 1);
}

/* A record that claims more than its writer could know (durable_seq above
 * its own seq) is a bad record header, not proof of anything. */
Test(logread, S11_v3_durable_seq_above_seq_is_a_bad_record_header)
{
    struct seg s;
    seg_begin(&s, 0, ORG, 0);
    seg_add(&s, 100, "\"a\"");
    seg_add_stating(&s, 200, 1, NULL, "\"b\"", 3, 2);
    struct log_scan sc;
    cr_assert_eq(scan_bytes(s.data, s.len, &sc), 0);
    cr_expect_eq(sc.records, 1);
    cr_expect_eq(sc.why, log_scan_why_bad_hdr);
    free(s.data);
}

#define FORGED_DEVICE 99u

/* Record 1 of a segment of `version` carries, as its payload, a record that
 * claims FORGED_DEVICE and seq 2 with RECORD_F_BATCH_START, checksummed with
 * `forged_seed` in format `forged_version`; record 2 is the real seq 2. The
 * header checksum of record 1 is then damaged. Returns the file's path (300). */
static void forged_segment(struct seg *s, unsigned version, unsigned forged_version,
                           uint64_t forged_seed, char *path)
{
    struct seg inner;
    seg_begin_version(&inner, forged_version, 0, ORG, 0);
    inner.seed = forged_seed;
    inner.next_seq = 2;
    seg_add_full(&inner, 150, FORGED_DEVICE, NULL, "\"forged\"", 8);

    seg_begin_version(s, version, 0, ORG, 0);
    seg_add(s, 100, "\"r0\"");
    size_t hs = seg_header_size_of(&inner);
    seg_add_full(s, 150, 1, NULL, inner.data + hs, inner.len - hs);
    seg_add(s, 200, "\"r2\"");
    s->data[s->rec_off[1] + seg_rec_hdr(s) - 1] ^= 0x5a; /* its checksum */
    seg_write(s, ORG, 0, 0, path);
    free(inner.data);
}

/* Drains a cursor; fails on any record of FORGED_DEVICE. Returns records. */
static unsigned drain_no_forged(unsigned *bad)
{
    struct log_cursor *c;
    struct record r;
    const uint8_t *body;
    unsigned n = 0;
    int rc;
    *bad = 0;
    cr_assert_eq(log_cursor_open(root, ORG, &c), 0);
    while ((rc = log_cursor_next(c, &r, &body)) != 0) {
        if (rc == -EBADMSG) {
            (*bad)++;
            continue;
        }
        cr_assert_eq(rc, 1);
        cr_assert_neq(r.device, FORGED_DEVICE, "a record forged inside a payload was yielded");
        n++;
    }
    log_cursor_close(c);
    return n;
}

/* D8: in a v2 segment the embedded record cannot verify, whatever seed the
 * device guessed (0: the unseeded hash) and in either format: resync goes on
 * to the real batch after the damage, and the cursor yields only real records. */
Test(logread, D8_resync_in_v2_segment_does_not_adopt_a_record_inside_a_payload)
{
    static const struct {
        unsigned version;
        uint64_t seed;
    } forgeries[] = {{2, 0}, {2, SEGTEST_SEED ^ 1}, {1, 0}};
    for (size_t i = 0; i < sizeof forgeries / sizeof forgeries[0]; i++) {
        struct seg s;
        char path[300];
        forged_segment(&s, 2, forgeries[i].version, forgeries[i].seed, path);
        int fd = open(path, O_RDONLY);
        cr_assert(fd >= 0);
        struct log_scan sc;
        cr_assert_eq(log_scan_segment(fd, &sc), 0);
        cr_assert_eq(sc.valid_end, s.rec_off[1]);
        uint64_t at = 0;
        cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &at), 1);
        cr_expect_eq(at, s.rec_off[2],
                     "forgery %zu: resync stopped at %" PRIu64 ", not at the "
                     "real record at %zu",
                     i, at, s.rec_off[2]);
        close(fd);
        unsigned bad;
        cr_expect_eq(drain_no_forged(&bad), 2, "forgery %zu: records 0 and 2", i);
        cr_expect_eq(bad, 1);
        free(s.data);
    }
}

/* The same bytes in a v1 segment: the unkeyed checksum lets the embedded v1
 * record verify, so the old heuristic adopts it. This is why the writer
 * writes v2 only; v1 segments keep the behaviour they always had. */
Test(logread, D8_v1_segment_keeps_the_old_heuristic)
{
    struct seg s;
    char path[300];
    forged_segment(&s, 1, 1, 0, path);
    int fd = open(path, O_RDONLY);
    cr_assert(fd >= 0);
    struct log_scan sc;
    cr_assert_eq(log_scan_segment(fd, &sc), 0);
    uint64_t at = 0;
    cr_expect_eq(log_scan_resync(fd, &sc.hdr, sc.valid_end, sc.next_seq, &at), 1);
    cr_expect(at > s.rec_off[1] && at < s.rec_off[2], "v1 resync found %" PRIu64, at);
    close(fd);
    free(s.data);
}
