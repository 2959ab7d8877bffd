/* storage/log_index.h — the sparse time index of a sealed segment.
 *
 * Each sealed segment <base>.seg gets <base>.idx, written once when the writer
 * rolls to a new segment (fdatasync'ed, then renamed into place). It is a hint:
 * readers verify its checksum and fall back to scanning when it is absent or bad.
 * Layout (little-endian): header {u32 magic "SLIX", u16 version 1, u16 entry size
 * 24, u64 base_seq, u64 min_ns, u64 max_ns} (32 bytes); entries; u64 XXH3-64 of
 * everything before it. An entry {offset, seq, max_ns_before} says record `seq`
 * starts at byte `offset` and every record before it was received at or before
 * max_ns_before, so a reader looking for recv_ns >= T may start at the last entry
 * whose max_ns_before < T even when the clock stepped back. Entries are at least
 * LOG_INDEX_INTERVAL bytes apart; the first is at the segment's first record.
 */
#ifndef SLUICE_STORAGE_LOG_INDEX_H
#define SLUICE_STORAGE_LOG_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define LOG_INDEX_MAGIC       0x58494c53u /* "SLIX" */
#define LOG_INDEX_VERSION     1u
#define LOG_INDEX_HEADER_SIZE 32u
#define LOG_INDEX_ENTRY_SIZE  24u
#define LOG_INDEX_INTERVAL    (1u << 20)

struct log_index_entry {
    uint64_t offset;
    uint64_t seq;
    uint64_t max_ns_before;
};

struct log_index {
    uint64_t base_seq;
    uint64_t min_ns, max_ns; /* min_ns > max_ns when the segment has no record */
    size_t n, cap;
    struct log_index_entry *e;
};

/* Writes idx next to the segment at seg_path (".seg" → ".idx") durably.
 * Returns 0 or -errno. */
int log_index_write(const char *seg_path, const struct log_index *idx);

/* Reads and verifies the index of the segment at seg_path. Returns 0 (free
 * idx->e with free()), -ENOENT when there is none, -EBADMSG when it fails
 * verification, -errno. */
int log_index_read(const char *seg_path, struct log_index *idx);

/* Builds the index of a segment by scanning it (records up to the first that
 * fails verification) and writes it with log_index_write. Used when a writer
 * rolls a segment it did not see from its start (after a restart).
 * Returns 0 or -errno. */
int log_index_build(const char *seg_path);

#endif
