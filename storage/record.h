/* storage/record.h — the on-disk record and segment header codec (format v3,
 * reading v2 and v1 too).
 *
 * A segment file is a segment header followed by records of the segment's
 * version. A record is a header followed by `length` bytes of body: the topic
 * (topic_len bytes, MQTT only) then the payload. All integers are
 * little-endian.
 *  v3 (written): v2's segment header with version 3; a 64-byte record header:
 *     v2's first 48 bytes, then durable_seq (the log's durable end when the
 *     record's batch was written), then the checksum over header bytes [0, 56)
 *     and the body. With several batches in flight, a verified later batch no
 *     longer proves an earlier one durable; its durable_seq does (issue S11).
 *  v2 (read only): 48-byte segment header carrying a random 64-bit seed and its
 *     own XXH3-64; 56-byte record header whose checksum is XXH3-64 seeded with
 *     the segment's seed over header bytes [0, 48) and the body. Bytes a device
 *     sent as a payload cannot verify as a record: the device never learns the
 *     seed (defect D8, forged records adopted by recovery after damage).
 *  v1 (read only): 32-byte segment header, 40-byte record header, unseeded
 *     XXH3-64 over header bytes [0, 32) and the body.
 * Layout and rules are documented in docs/storage-format.md.
 */
#ifndef SLUICE_STORAGE_RECORD_H
#define SLUICE_STORAGE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define RECORD_MAGIC          0x5253u /* "SR" */
#define RECORD_VERSION        3u      /* what the writer writes */
#define RECORD_HEADER_SIZE    64u     /* of a version 3 record, the largest */
#define RECORD_HEADER_SIZE_V2 56u
#define RECORD_HEADER_SIZE_V1 40u
#define RECORD_HEADER_MIN     RECORD_HEADER_SIZE_V1 /* the smallest record of any version */
#define RECORD_MAX_BODY       (16u << 20)

#define SEGMENT_MAGIC          0x47534c53u /* "SLSG" */
#define SEGMENT_VERSION        3u
#define SEGMENT_HEADER_SIZE    48u /* of a version 2 or 3 segment */
#define SEGMENT_HEADER_SIZE_V1 32u
#define SEGMENT_HEADER_MIN     SEGMENT_HEADER_SIZE_V1

enum record_proto {
    RECORD_PROTO_HTTP = 1,
    RECORD_PROTO_HTTPS = 2,
    RECORD_PROTO_MQTT = 3,
    RECORD_PROTO_MQTTS = 4,
    RECORD_PROTO_FRAME = 5,
    RECORD_PROTO_UDP = 6,
};

enum record_ctype {
    RECORD_CTYPE_JSON = 1,  /* payload is one JSON value */
    RECORD_CTYPE_OCTET = 2, /* opaque bytes */
    RECORD_CTYPE_TEXT = 3,
};

/* flags */
#define RECORD_F_RETAIN 0x01u
#define RECORD_F_WILL   0x02u
/* First record of a commit batch (one write + fdatasync). In v1 and v2 a batch
 * was written only after the previous one's sync completed, so a verified batch
 * start found after damage proves the damaged batch durable: the damage is in
 * the middle of the log, not a torn (never acknowledged) tail. In v3 several
 * batches may be in flight, and that proof is the later batch's durable_seq
 * passing the damaged record's seq (docs/storage-format.md, "Recovery rule"). */
#define RECORD_F_BATCH_START 0x04u

struct record {
    uint8_t flags;
    uint8_t proto;
    uint8_t ctype;
    uint8_t version; /* 0 or RECORD_VERSION: encode as v3; 1 or 2: as that (tests, tools) */
    uint16_t topic_len;
    uint32_t length; /* body bytes after the header: topic + payload */
    uint32_t device;
    uint64_t recv_ns;      /* CLOCK_REALTIME at receipt */
    uint64_t seq;          /* record number within its worker's log, from 0 */
    uint64_t device_ts_ns; /* the device's own timestamp (MQTT 5, frames), 0: none; v2 */
    uint64_t device_seq;   /* the device's own sequence number (frames), 0: none; v2 */
    /* v3: every record of the log with a lower seq was durable (its batch's
     * sync had completed) when this record's batch was written; the same in
     * every record of a batch, never above seq. 0 when decoded from v1/v2. */
    uint64_t durable_seq;
    uint64_t checksum;
};

struct segment_header {
    uint16_t version; /* 0 or SEGMENT_VERSION: encode as v3; 1 or 2: as that; set by decode */
    uint32_t worker;
    uint32_t org;
    uint64_t base_seq;   /* seq of the first record */
    uint64_t created_ns; /* CLOCK_REALTIME */
    uint64_t seed;       /* v2, v3: keys the record checksums (getrandom, never 0); v1: 0 */
};

/* Header bytes of a record of segment version `version` (1, 2 or 3). */
size_t record_header_size(unsigned version);
/* Bytes of a segment header of h->version; where its first record starts. */
size_t segment_header_size(const struct segment_header *h);

/* Encodes r (as v1 or v2 when r->version says so, else v3 with
 * r->durable_seq; the seed keys the v2 and v3 checksums, a v1 checksum has no
 * key) and computes the checksum over the header and body (topic then payload,
 * either may be empty). Writes record_header_size(version) bytes to out and
 * returns that number. */
size_t record_encode(uint8_t *out, const struct record *r, uint64_t seed, const void *topic,
                     const void *payload, size_t payload_len);

/* Decodes the header of a record in a segment of `version`, with at least
 * record_header_size(version) bytes at in. Returns 0, -EBADMSG on a bad
 * magic, a version other than the segment's, an impossible length, or (v3) a
 * durable_seq above the record's own seq. Does not verify the checksum (see
 * record_verify). */
int record_decode(const uint8_t *in, unsigned version, struct record *r);

/* Verifies the checksum of a decoded header against its body (r->length
 * bytes), keyed with seed for v2 and v3 (ignored for v1). Returns 0 or
 * -EBADMSG. */
int record_verify(const uint8_t *hdr, const struct record *r, uint64_t seed, const void *body);

/* Encodes h as v1 or v2 when h->version says so, else as v3 (v2 and v3 with
 * their checksum). Writes segment_header_size(h) bytes and returns that
 * number. */
size_t segment_header_encode(uint8_t *out, const struct segment_header *h);
/* Decodes the segment header in the first `len` bytes at in (v1 needs 32,
 * v2 and v3 48; more is fine). Returns 0 or -EBADMSG (short, bad magic,
 * version, size, or a v2/v3 checksum or zero seed). */
int segment_header_decode(const uint8_t *in, size_t len, struct segment_header *h);

/* A fresh seed for a new segment from getrandom(), never 0 (0 is XXH3's
 * unseeded value). Returns 0 or -errno. */
int record_seed_new(uint64_t *seed);

/* Protocol / content type names for output ("http", "json" ...); "?" if unknown. */
const char *record_proto_name(unsigned proto);

#endif
