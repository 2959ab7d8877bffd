/* storage/log_name.h — where an org's logs live and what their files are called.
 *
 * Layout: DATA/logs/<org-id>/w<N>/<base-seq, 20 digits>.seg, each file a segment
 * (record.h), with <base>.idx beside a sealed one (log_index.h). The naming
 * rules are kept here, in one place, so that the writer, the readers and
 * maintenance agree on which files are segments; the directory helpers are the
 * ones every part of storage/ needs. Nothing here reads a record.
 */
#ifndef SLUICE_STORAGE_LOG_NAME_H
#define SLUICE_STORAGE_LOG_NAME_H

#include <stddef.h>
#include <stdint.h>

#define LOG_PATH_MAX    4096
#define LOG_NAME_DIGITS 20 /* a segment's base seq in its file name */

/* Writes "DATA/logs/<org>" (worker < 0) or "DATA/logs/<org>/w<worker>" to buf.
 * Returns 0 or -ENAMETOOLONG. */
int log_dir_path(char *buf, size_t cap, const char *data_dir, uint32_t org, int worker);

/* Parses a segment or index file name: exactly LOG_NAME_DIGITS decimal digits
 * (no sign, the value fitting in u64) followed by ext (".seg", ".idx").
 * Returns 0 with *base set, or -EINVAL. */
int log_name_base(const char *name, const char *ext, uint64_t *base);

/* Writes "<dir>/<base, LOG_NAME_DIGITS digits><ext>" to buf.
 * Returns 0 or -ENAMETOOLONG. */
int log_file_path(char *buf, size_t cap, const char *dir, uint64_t base, const char *ext);

/* Parses a worker directory name: "w" then decimal digits up to INT_MAX.
 * Returns 0 with *worker set, or -EINVAL. */
int log_worker_name(const char *name, unsigned *worker);

/* Calls fn with each entry name of dir ("." and ".." included), stopping when
 * fn returns < 0. Returns 0, fn's negative code, or -errno (opendir's: -ENOENT,
 * -ENOTDIR ...; or readdir's). */
int log_dir_each(const char *dir, int (*fn)(void *ctx, const char *name), void *ctx);

/* 1 when every byte of [from, to) in fd is zero (an empty range included): the
 * space a writer wrote ahead (log_writer_reserve), which ends a newest segment's
 * data without being a torn tail. 0 when a byte is not, -errno. */
int log_all_zero(int fd, uint64_t from, uint64_t to);

/* fsync()s a directory, making the names created or removed in it durable.
 * Returns 0 or -errno. */
int log_fsync_dir(const char *dir);

#endif
