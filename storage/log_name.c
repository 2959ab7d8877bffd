/* storage/log_name.c — naming and directory helpers of the log layout; see
 * log_name.h. */
#include "storage/log_name.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int log_dir_path(char *buf, size_t cap, const char *data_dir, uint32_t org, int worker)
{
    int n = worker < 0 ? snprintf(buf, cap, "%s/logs/%" PRIu32, data_dir, org)
                       : snprintf(buf, cap, "%s/logs/%" PRIu32 "/w%d", data_dir, org, worker);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int log_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

/* Parses a run of decimal digits spanning exactly len bytes, at most max. */
static int parse_digits(const char *p, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0) return -1;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int log_name_base(const char *name, const char *ext, uint64_t *base)
{
    /* 20 digits can exceed 2^64: parse_digits refuses such a name, which is
     * not one of ours (strtoull would also take a sign or leading blanks). */
    if (strlen(name) != LOG_NAME_DIGITS + strlen(ext) || strcmp(name + LOG_NAME_DIGITS, ext) != 0 ||
        parse_digits(name, LOG_NAME_DIGITS, UINT64_MAX, base) < 0)
        return -EINVAL;
    return 0;
}

int log_file_path(char *buf, size_t cap, const char *dir, uint64_t base, const char *ext)
{
    int n = snprintf(buf, cap, "%s/%0*" PRIu64 "%s", dir, LOG_NAME_DIGITS, base, ext);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int log_worker_name(const char *name, unsigned *worker)
{
    uint64_t w;
    if (name[0] != 'w' || parse_digits(name + 1, strlen(name + 1), INT_MAX, &w) < 0) return -EINVAL;
    *worker = (unsigned)w;
    return 0;
}

int log_dir_each(const char *dir, int (*fn)(void *ctx, const char *name), void *ctx)
{
    int rc;
    DIR *d = opendir(dir);
    if (!d) return -errno;
    for (;;) {
        /* readdir tells the end from a failure only through errno */
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            rc = errno ? -errno : 0;
            break;
        }
        rc = fn(ctx, e->d_name);
        if (rc < 0) break;
    }
    closedir(d);
    return rc;
}

int log_all_zero(int fd, uint64_t from, uint64_t to)
{
    uint8_t buf[1 << 16];
    while (from < to) {
        size_t want = to - from < sizeof buf ? (size_t)(to - from) : sizeof buf;
        ssize_t got = pread(fd, buf, want, (off_t)from);
        if (got < 0) return -errno;
        if (got == 0) break;
        /* all zero: the first byte is, and every byte equals the next */
        if (buf[0] || memcmp(buf, buf + 1, (size_t)got - 1)) return 0;
        from += (uint64_t)got;
    }
    return 1;
}
