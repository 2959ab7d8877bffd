/* storage/log.c — naming, creating and recovering a worker's log segment.
 * Appending is the engine's (engine/commit.c): it writes sealed batches at
 * w->end through io_uring and advances end/next_seq when they are durable. */
#include "storage/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int log_dir_path(char *buf, size_t cap, const char *data_dir, uint32_t org, int worker)
{
    int n = worker < 0 ? snprintf(buf, cap, "%s/logs/%" PRIu32, data_dir, org)
                       : snprintf(buf, cap, "%s/logs/%" PRIu32 "/w%d", data_dir, org, worker);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

/* mkdir that makes the new entry durable: the parent is fsynced after a create. */
static int mkdir_durable(const char *path)
{
    if (mkdir(path, 0750) == 0) {
        char parent[LOG_PATH_MAX];
        snprintf(parent, sizeof parent, "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash) {
            *slash = '\0';
            return fsync_path(parent[0] ? parent : "/");
        }
        return 0;
    }
    return errno == EEXIST ? 0 : -errno;
}

/* Newest segment (highest base seq) in dir, or -ENOENT. */
static int newest_segment(const char *dir, uint64_t *base)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int rc = -ENOENT;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n != 24 || strcmp(de->d_name + 20, ".seg"))
            continue;
        char *end;
        uint64_t v = strtoull(de->d_name, &end, 10);
        if (end != de->d_name + 20)
            continue;
        if (rc == -ENOENT || v > *base)
            *base = v;
        rc = 0;
    }
    closedir(d);
    return rc;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int create_segment(struct log_writer *w, const char *dir, uint64_t base)
{
    int n = snprintf(w->path, sizeof w->path, "%s/%020" PRIu64 ".seg", dir, base);
    if (n < 0 || (size_t)n >= sizeof w->path)
        return -ENAMETOOLONG;
    int fd = open(w->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    uint8_t hdr[SEGMENT_HEADER_SIZE];
    struct segment_header h = {
        .worker = w->worker, .org = w->org, .base_seq = base, .created_ns = now_ns()};
    segment_header_encode(hdr, &h);
    int rc = 0;
    if (pwrite(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr || fdatasync(fd))
        rc = errno ? -errno : -EIO;
    if (!rc)
        rc = fsync_path(dir); /* the new name must survive a crash too */
    if (rc) {
        close(fd);
        unlink(w->path);
        return rc;
    }
    w->fd = fd;
    w->end = SEGMENT_HEADER_SIZE;
    w->next_seq = base;
    return 0;
}

int log_writer_open(struct log_writer *w, const char *data_dir, uint32_t org, unsigned worker,
                    char *report, size_t report_cap)
{
    char dir[LOG_PATH_MAX - 32]; /* room left for "/<20 digits>.seg" */
    int rc;
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->org = org;
    w->worker = worker;
    report[0] = '\0';

    snprintf(dir, sizeof dir, "%s/logs", data_dir);
    if ((rc = mkdir_durable(dir)))
        return rc;
    if ((rc = log_dir_path(dir, sizeof dir, data_dir, org, -1)) || (rc = mkdir_durable(dir)))
        return rc;
    if ((rc = log_dir_path(dir, sizeof dir, data_dir, org, (int)worker)) ||
        (rc = mkdir_durable(dir)))
        return rc;

    uint64_t base = 0;
    rc = newest_segment(dir, &base);
    if (rc == -ENOENT)
        return create_segment(w, dir, 0);
    if (rc)
        return rc;

    snprintf(w->path, sizeof w->path, "%s/%020" PRIu64 ".seg", dir, base);
    int fd = open(w->path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct log_scan scan;
    rc = log_scan_segment(fd, &scan);
    if (rc) {
        close(fd);
        return rc;
    }
    if (scan.valid_end < scan.file_size) {
        /* a torn tail: a batch that was being written when the process died;
         * none of it was acknowledged (acks follow the fdatasync) */
        if (ftruncate(fd, (off_t)scan.valid_end) || fdatasync(fd)) {
            rc = -errno;
            close(fd);
            return rc;
        }
        snprintf(report, report_cap, "%s: cut %" PRIu64 " bytes after offset %" PRIu64 " (%s)",
                 w->path, scan.file_size - scan.valid_end, scan.valid_end,
                 scan.why ? scan.why : "torn tail");
    }
    w->fd = fd;
    w->end = scan.valid_end;
    w->next_seq = scan.next_seq;
    return 0;
}

void log_writer_close(struct log_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}
