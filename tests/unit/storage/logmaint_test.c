/* tests/unit/storage/logmaint_test.c — retention and verification of the
 * per-worker logs (storage/logmaint.c), over segments built with record_encode
 * in a temp dir. */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/log.h"
#include "storage/record.h"
#include "segtest.h"

#define ORG 7u

static void setup(void)
{
    segtest_setup("logmaint-test");
}

TestSuite(logmaint, .init = setup, .fini = segtest_teardown, .timeout = 60);

/* ---- building segments (the rest: segtest.h) ---- */

/* Writes s as segment (ORG, worker, base); with `index`, builds its index. */
static void seg_put(const struct seg *s, unsigned worker, uint64_t base, int index, char *path_out)
{
    char path[300];
    seg_write(s, ORG, worker, base, path);
    if (index) cr_assert_eq(log_index_build(path), 0);
    if (path_out) strcpy(path_out, path);
}

/* A segment of worker w from seq base: n records at times t0, t0 + 10, ... */
static void make_seg(struct seg *s, unsigned w, uint64_t base, unsigned n, uint64_t t0)
{
    seg_begin(s, w, ORG, base);
    for (unsigned i = 0; i < n; i++)
        seg_add(s, t0 + 10 * i, "{\"v\":1}");
}

/* make_seg then seg_put, for a test that needs only the file. Returns its size. */
static size_t put_seg(unsigned w, uint64_t base, unsigned n, uint64_t t0, int index, char *path_out)
{
    struct seg s;
    make_seg(&s, w, base, n, t0);
    seg_put(&s, w, base, index, path_out);
    free(s.data);
    return s.len;
}

/* ---- report collectors ---- */

struct deleted {
    char path[16][300];
    uint64_t bytes[16];
    char why[16][32];
    int n;
};

static void on_delete(void *ctx, const char *path, uint64_t bytes, const char *why)
{
    struct deleted *d = ctx;
    cr_assert_lt(d->n, 16);
    snprintf(d->path[d->n], sizeof d->path[0], "%s", path);
    d->bytes[d->n] = bytes;
    snprintf(d->why[d->n], sizeof d->why[0], "%s", why);
    d->n++;
}

struct problems {
    int sev[32];
    char path[32][300];
    uint64_t off[32];
    char msg[32][512];
    int n, errors, warnings;
};

static void on_problem(void *ctx, int severity, const char *path, uint64_t offset, const char *msg)
{
    struct problems *p = ctx;
    if (severity == LOG_VERIFY_ERROR)
        p->errors++;
    else
        p->warnings++;
    if (p->n >= 32) return;
    p->sev[p->n] = severity;
    snprintf(p->path[p->n], sizeof p->path[0], "%s", path);
    p->off[p->n] = offset;
    snprintf(p->msg[p->n], sizeof p->msg[0], "%s", msg);
    p->n++;
}

static int verify(struct problems *p, struct log_verify_stats *st)
{
    memset(p, 0, sizeof *p);
    memset(st, 0, sizeof *st);
    int rc = log_verify_org(root, ORG, on_problem, p, st);
    for (int i = 0; i < p->n; i++)
        cr_log_info("%s: %s: offset %" PRIu64 ": %s",
                    p->sev[i] == LOG_VERIFY_ERROR ? "error" : "warning", p->path[i], p->off[i],
                    p->msg[i]);
    if (rc >= 0) {
        cr_expect_eq((uint64_t)p->errors, st->errors);
        cr_expect_eq((uint64_t)p->warnings, st->warnings);
    }
    return rc;
}

/* ---- retention ---- */

Test(logmaint, retention_by_age_deletes_old_sealed_segments_never_the_newest)
{
    char pa[300], pb[300], pc[300], ia[310], ib[310];
    size_t a_len = put_seg(0, 0, 3, 100, 1, pa); /* 100..120 */
    put_seg(0, 3, 3, 300, 1, pb);                /* 300..320 */
    put_seg(0, 6, 2, 50, 0, pc);                 /* newest, and older still: kept */
    idx_path(ia, sizeof ia, pa);
    idx_path(ib, sizeof ib, pb);
    struct deleted d = {0};
    /* cutoff 1000 - 690 = 310: a's records are all older, b's 310 and 320 not */
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 690, 0, on_delete, &d), 1);
    cr_expect(!exists(pa) && !exists(ia));
    cr_expect(exists(pb) && exists(ib) && exists(pc));
    cr_assert_eq(d.n, 1);
    cr_expect_str_eq(d.path[0], pa);
    cr_expect_str_eq(d.why[0], "age");
    cr_expect_eq(d.bytes[0], a_len);
    /* cutoff 321: b goes too; c, the newest, stays whatever its age. */
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 679, 0, on_delete, &d), 1);
    cr_expect(!exists(pb) && !exists(ib) && exists(pc));
    cr_expect_eq(log_retention_apply(root, ORG, UINT64_MAX, 1, 0, NULL, NULL), 0);
    cr_expect(exists(pc));

    /* What is left still reads cleanly: no hole in the seqs. */
    struct problems p;
    struct log_verify_stats st;
    cr_expect_eq(verify(&p, &st), 0);
    cr_expect_eq(st.segments, 1);
}

Test(logmaint, retention_by_age_stops_at_a_younger_segment_rather_than_leave_a_hole)
{
    /* b was written while the clock was far ahead; c after it stepped back. */
    char pa[300], pb[300], pc[300], pn[300];
    put_seg(0, 0, 2, 100, 1, pa);
    put_seg(0, 2, 2, 5000, 1, pb);
    put_seg(0, 4, 2, 200, 1, pc);
    put_seg(0, 6, 2, 300, 0, pn);
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 500, 0, NULL, NULL), 1);
    cr_expect(!exists(pa));
    cr_expect(exists(pb) && exists(pc) && exists(pn));
}

Test(logmaint, retention_by_age_without_index_uses_mtime)
{
    char pa[300], pb[300], pn[300];
    put_seg(0, 0, 2, 100, 0, pa); /* no index: a crash between the two unlinks */
    put_seg(0, 2, 2, 200, 0, pb);
    put_seg(0, 4, 2, 300, 0, pn);
    /* a was last written at 10 s, b at 100 s (mtime). */
    struct timespec ta[2] = {{10, 0}, {10, 0}}, tb[2] = {{100, 0}, {100, 0}};
    cr_assert_eq(utimensat(AT_FDCWD, pa, ta, 0), 0);
    cr_assert_eq(utimensat(AT_FDCWD, pb, tb, 0), 0);
    uint64_t s = 1000000000ull;
    cr_expect_eq(log_retention_apply(root, ORG, 200 * s, 150 * s, 0, NULL, NULL), 1);
    cr_expect(!exists(pa) && exists(pb) && exists(pn));
}

Test(logmaint, retention_by_bytes_oldest_first_across_workers_never_the_newest)
{
    char pa0[300], pb0[300], pn0[300], pa1[300], pn1[300];
    put_seg(0, 0, 4, 100, 1, pa0);
    put_seg(0, 4, 4, 300, 1, pb0);
    put_seg(0, 8, 4, 500, 0, pn0);
    put_seg(1, 0, 4, 200, 1, pa1);
    put_seg(1, 4, 4, 400, 0, pn1);
    uint64_t one = file_size(pa0); /* all five are the same size */
    struct deleted d = {0};
    /* Room for three: the two oldest sealed ones go, a0 (100) then a1 (200). */
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 0, 3 * one, on_delete, &d), 2);
    cr_assert_eq(d.n, 2);
    cr_expect_str_eq(d.path[0], pa0);
    cr_expect_str_eq(d.path[1], pa1);
    cr_expect_str_eq(d.why[0], "size");
    cr_expect(exists(pb0) && exists(pn0) && exists(pn1));
    /* A limit below the newest segments: only sealed ones can go. */
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 0, 1, NULL, NULL), 1);
    cr_expect(!exists(pb0) && exists(pn0) && exists(pn1));
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 0, 1, NULL, NULL), 0);
    cr_expect(exists(pn0) && exists(pn1));
}

Test(logmaint, retention_age_then_bytes_in_one_pass)
{
    char pa[300], pb[300], pc[300], pn[300];
    put_seg(0, 0, 2, 100, 1, pa);
    put_seg(0, 2, 2, 600, 1, pb);
    put_seg(0, 4, 2, 700, 1, pc);
    put_seg(0, 6, 2, 800, 0, pn);
    uint64_t one = file_size(pa);
    struct deleted d = {0};
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 500, 2 * one, on_delete, &d), 2);
    cr_assert_eq(d.n, 2);
    cr_expect_str_eq(d.why[0], "age");
    cr_expect_str_eq(d.why[1], "size");
    cr_expect_str_eq(d.path[1], pb);
    cr_expect(exists(pc) && exists(pn));
}

Test(logmaint, retention_removes_orphan_index_and_ignores_other_files)
{
    char pa[300], pn[300], ia[310], junk[320], tmp[320];
    put_seg(0, 0, 2, 100, 1, pa);
    put_seg(0, 2, 2, 300, 0, pn);
    idx_path(ia, sizeof ia, pa);
    cr_assert_eq(unlink(pa), 0); /* a crash after the segment went, before its index */
    snprintf(junk, sizeof junk, "%.*s/notes.txt", (int)(strrchr(pa, '/') - pa), pa);
    snprintf(tmp, sizeof tmp, "%s.tmp", ia);
    int fd = open(junk, O_WRONLY | O_CREAT, 0644);
    close(fd);
    fd = open(tmp, O_WRONLY | O_CREAT, 0644);
    close(fd);
    struct deleted d = {0};
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 0, 0, on_delete, &d), 0,
                 "an orphan index is not a segment");
    cr_assert_eq(d.n, 1);
    cr_expect_str_eq(d.path[0], ia);
    cr_expect_str_eq(d.why[0], "orphan index");
    cr_expect(!exists(ia));
    cr_expect(exists(junk) && exists(tmp) && exists(pn), "not ours to delete");
}

Test(logmaint, retention_without_logs_or_limits_deletes_nothing)
{
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 1, 1, NULL, NULL), 0);
    put_seg(0, 0, 2, 100, 1, NULL);
    put_seg(0, 2, 2, 300, 0, NULL);
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 0, 0, NULL, NULL), 0);
    /* now < max_age: nothing can be that old. */
    cr_expect_eq(log_retention_apply(root, ORG, 1000, 5000, 0, NULL, NULL), 0);
}

/* ---- verification ---- */

/* Worker 0: sealed segments [0,4) and [4,8) with indexes, newest [8,11);
 * worker 1: one segment [0,5). */
static void clean_log(struct seg s[4], char paths[4][300])
{
    make_seg(&s[0], 0, 0, 4, 100);
    make_seg(&s[1], 0, 4, 4, 200);
    make_seg(&s[2], 0, 8, 3, 300);
    make_seg(&s[3], 1, 0, 5, 150);
    seg_put(&s[0], 0, 0, 1, paths[0]);
    seg_put(&s[1], 0, 4, 1, paths[1]);
    seg_put(&s[2], 0, 8, 0, paths[2]);
    seg_put(&s[3], 1, 0, 0, paths[3]);
}

static void free_segs(struct seg *s, int n)
{
    for (int i = 0; i < n; i++)
        free(s[i].data);
}

Test(logmaint, verify_clean_log_has_no_problem)
{
    struct seg s[4];
    char p[4][300];
    clean_log(s, p);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 0);
    cr_expect_eq(pr.n, 0);
    cr_expect_eq(st.segments, 4);
    cr_expect_eq(st.records, 16);
    cr_expect_eq(st.errors, 0);
    cr_expect_eq(st.warnings, 0);
    free_segs(s, 4);
}

Test(logmaint, verify_missing_org_is_enoent)
{
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), -ENOENT);
    cr_expect_eq(pr.n, 0);
}

Test(logmaint, verify_flipped_byte_mid_segment_is_one_error_at_its_record)
{
    struct seg s[4];
    char p[4][300];
    clean_log(s, p);
    /* A payload byte of record 1 of the first sealed segment. */
    s[0].data[s[0].rec_off[1] + RECORD_HEADER_SIZE + 2] ^= 0x08;
    seg_put(&s[0], 0, 0, 0, NULL);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 1);
    cr_assert_eq(pr.errors, 1);
    cr_expect_eq(pr.warnings, 0);
    cr_expect_str_eq(pr.path[0], p[0]);
    cr_expect_eq(pr.off[0], s[0].rec_off[1]);
    cr_expect(strstr(pr.msg[0], "checksum mismatch") != NULL, "%s", pr.msg[0]);
    cr_expect_eq(st.records, 15, "checking resumed after the damaged record");

    /* The same damage in the newest segment, with a good record after it, is
     * corruption too, not a torn tail. */
    free_segs(s, 4);
    clean_log(s, p);
    s[2].data[s[2].rec_off[1] + 5] ^= 0x01;
    seg_put(&s[2], 0, 8, 0, NULL);
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect_str_eq(pr.path[0], p[2]);
    cr_expect_eq(pr.off[0], s[2].rec_off[1]);
    free_segs(s, 4);
}

Test(logmaint, verify_two_damaged_stretches_are_two_errors)
{
    struct seg s;
    char p[300];
    make_seg(&s, 0, 0, 8, 100);
    s.data[s.rec_off[1] + RECORD_HEADER_SIZE] ^= 1;
    s.data[s.rec_off[5]] ^= 0xff; /* bad magic */
    seg_put(&s, 0, 0, 0, p);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 2);
    cr_assert_eq(pr.n, 2);
    cr_expect_eq(pr.off[0], s.rec_off[1]);
    cr_expect_eq(pr.off[1], s.rec_off[5]);
    cr_expect_eq(st.records, 6);
    free(s.data);
}

Test(logmaint, verify_torn_tail_of_newest_is_a_warning_every_length)
{
    struct seg s[4];
    char p[4][300];
    clean_log(s, p);
    size_t last = s[2].rec_off[2];
    for (size_t len = last + 1; len < s[2].len; len++) {
        seg_write_len(&s[2], ORG, 0, 8, len, NULL);
        struct problems pr;
        struct log_verify_stats st;
        cr_expect_eq(verify(&pr, &st), 0, "cut at %zu", len);
        cr_expect_eq(pr.warnings, 1, "cut at %zu", len);
        cr_expect_eq(pr.off[0], last);
        cr_expect_str_eq(pr.path[0], p[2]);
        cr_expect(strstr(pr.msg[0], "torn tail") != NULL, "%s", pr.msg[0]);
    }
    /* Zeros past the end are space a running writer wrote ahead
     * (log_writer_reserve): the data simply ends there, nothing to warn of. */
    uint8_t *z = calloc(1, s[2].len + 100);
    memcpy(z, s[2].data, s[2].len);
    struct seg zs = {.data = z, .len = s[2].len + 100};
    seg_write_len(&zs, ORG, 0, 8, zs.len, NULL);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 0);
    cr_expect_eq(pr.warnings, 0);
    /* A torn record followed by zeros is still a torn tail. */
    memcpy(z + s[2].len, "\x53\x52\x01", 3);
    seg_write_len(&zs, ORG, 0, 8, zs.len, NULL);
    cr_expect_eq(verify(&pr, &st), 0);
    cr_expect_eq(pr.warnings, 1);
    free(z);
    free_segs(s, 4);
}

Test(logmaint, verify_torn_tail_of_older_segment_is_an_error)
{
    struct seg s[4];
    char p[4][300];
    clean_log(s, p);
    seg_write_len(&s[1], ORG, 0, 4, s[1].len - 3, NULL);
    cr_assert_eq(log_index_build(p[1]), 0); /* an index of what is left */
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 1);
    cr_assert_eq(pr.errors, 1);
    cr_expect_str_eq(pr.path[0], p[1]);
    cr_expect_eq(pr.off[0], s[1].rec_off[3]);
    cr_expect(strstr(pr.msg[0], "truncated record body") != NULL, "%s", pr.msg[0]);
    free_segs(s, 4);
}

Test(logmaint, verify_seq_gap_between_segments_is_an_error)
{
    struct seg s[4];
    char p[4][300], pg[300];
    clean_log(s, p);
    /* Worker 0's newest should start at 8; replace it by one at 10. */
    cr_assert_eq(unlink(p[2]), 0);
    put_seg(0, 10, 2, 300, 0, pg);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 1);
    cr_assert_eq(pr.errors, 1);
    cr_expect_str_eq(pr.path[0], pg);
    cr_expect_eq(pr.off[0], 0);
    cr_expect(strstr(pr.msg[0], "sequence gap") != NULL, "%s", pr.msg[0]);
    /* A first segment that does not start at 0 is retention's doing: fine. */
    cr_assert_eq(unlink(p[3]), 0);
    put_seg(1, 40, 2, 300, 0, NULL);
    cr_expect_eq(verify(&pr, &st), 1);
    free_segs(s, 4);
}

Test(logmaint, verify_seq_gap_within_segment_is_an_error_at_the_record)
{
    struct seg s;
    char p[300];
    make_seg(&s, 0, 0, 2, 100);
    s.next_seq = 7;
    size_t at = seg_add(&s, 300, "1");
    seg_add(&s, 310, "2");
    seg_put(&s, 0, 0, 0, p);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect_eq(pr.off[0], at);
    cr_expect(strstr(pr.msg[0], "expected seq 2, found 7") != NULL, "%s", pr.msg[0]);
    cr_expect_eq(st.records, 4, "every record verified");
    free(s.data);
}

Test(logmaint, verify_segment_header_must_match_its_place)
{
    static const struct {
        uint32_t worker, org;
        uint64_t base;
    } cases[] = {{0, ORG + 1, 0}, {3, ORG, 0}, {0, ORG, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct seg s;
        seg_begin(&s, cases[i].worker, cases[i].org, cases[i].base);
        seg_add(&s, 1, "1");
        seg_write_len(&s, ORG, 0, 0, s.len, NULL);
        struct problems pr;
        struct log_verify_stats st;
        cr_expect_eq(verify(&pr, &st), 1, "case %zu", i);
        cr_expect(strstr(pr.msg[0], "segment header says") != NULL, "%s", pr.msg[0]);
        free(s.data);
    }
    /* A header that does not decode at all; in the newest segment, one shorter
     * than a header is a roll in progress (warning). */
    struct seg s, n;
    char p[300];
    make_seg(&s, 0, 0, 2, 100);
    s.data[0] ^= 1;
    seg_put(&s, 0, 0, 0, p);
    make_seg(&n, 0, 2, 1, 300);
    seg_write_len(&n, ORG, 0, 2, 10, NULL);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect_eq(pr.warnings, 1);
    cr_expect_str_eq(pr.path[0], p);
    cr_expect_str_eq(pr.msg[0], "bad segment header");
    free(s.data);
    free(n.data);
}

Test(logmaint, verify_damaged_segment_does_not_also_report_the_writers_jump)
{
    /* After mid-segment damage the writer continues in a new segment numbered
     * past anything the damaged one could hold: one problem, not two. */
    struct seg a;
    char pa[300];
    make_seg(&a, 0, 0, 4, 100);
    a.data[a.rec_off[1] + RECORD_HEADER_SIZE] ^= 1;
    seg_put(&a, 0, 0, 0, pa);
    put_seg(0, 50, 2, 500, 0, NULL);
    struct problems pr;
    struct log_verify_stats st;
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect_str_eq(pr.path[0], pa);
    cr_expect_eq(pr.warnings, 1, "the damaged segment has no index");
    free(a.data);
}

Test(logmaint, verify_index_problems)
{
    struct seg s[4];
    char p[4][300], i0[310], i1[310];
    clean_log(s, p);
    idx_path(i0, sizeof i0, p[0]);
    idx_path(i1, sizeof i1, p[1]);
    struct problems pr;
    struct log_verify_stats st;

    /* Missing: a warning on the segment. */
    cr_assert_eq(unlink(i0), 0);
    cr_expect_eq(verify(&pr, &st), 0);
    cr_assert_eq(pr.warnings, 1);
    cr_expect_str_eq(pr.path[0], p[0]);

    /* Failing its checksum: a warning on the index. */
    int fd = open(i1, O_WRONLY);
    cr_assert_eq(pwrite(fd, "\xff", 1, 20), 1);
    close(fd);
    cr_expect_eq(verify(&pr, &st), 0);
    cr_expect_eq(pr.warnings, 2);
    cr_expect_str_eq(pr.path[1], i1);

    /* Valid but wrong: range reads would skip records that are there. */
    struct log_index lie = {.base_seq = 0, .min_ns = 100, .max_ns = 110};
    struct log_index_entry e0 = {SEGMENT_HEADER_SIZE, 0, 0};
    lie.e = &e0;
    lie.n = 1;
    cr_assert_eq(log_index_write(p[0], &lie), 0);
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect_str_eq(pr.path[0], i0);
    cr_expect(strstr(pr.msg[0], "does not cover") != NULL, "%s", pr.msg[0]);

    /* An entry that is not at a record. */
    struct log_index_entry two[2] = {{SEGMENT_HEADER_SIZE, 0, 0}, {s[0].rec_off[2] + 1, 2, 110}};
    lie.max_ns = 130;
    lie.e = two;
    lie.n = 2;
    cr_assert_eq(log_index_write(p[0], &lie), 0);
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect_eq(pr.off[0], s[0].rec_off[2] + 1);

    /* An entry whose max_ns_before is too small for the records before it. */
    two[1] = (struct log_index_entry){s[0].rec_off[2], 2, 105};
    cr_assert_eq(log_index_write(p[0], &lie), 0);
    cr_expect_eq(verify(&pr, &st), 1);
    cr_expect(strstr(pr.msg[0], "at most 105") != NULL, "%s", pr.msg[0]);

    /* Loose bounds are not wrong: a wider [min, max] only skips less. */
    two[1].max_ns_before = 115;
    lie.min_ns = 5;
    lie.max_ns = 9000;
    cr_assert_eq(log_index_write(p[0], &lie), 0);
    cr_expect_eq(verify(&pr, &st), 0);

    /* An index without its segment: a warning. */
    char orphan[320];
    snprintf(orphan, sizeof orphan, "%.*s/00000000000000000099.idx",
             (int)(strrchr(p[0], '/') - p[0]), p[0]);
    fd = open(orphan, O_WRONLY | O_CREAT, 0644);
    close(fd);
    cr_expect_eq(verify(&pr, &st), 0);
    int found = 0;
    for (int i = 0; i < pr.n; i++)
        found |= strcmp(pr.path[i], orphan) == 0 && pr.sev[i] == LOG_VERIFY_WARNING;
    cr_expect(found);
    free_segs(s, 4);
}
