/* storage/record.h — the on-disk record and segment header codec (format v1).
 *
 * A segment file is a 32-byte segment header followed by records. A record is a
 * 40-byte header followed by `length` bytes of body: the topic (topic_len bytes,
 * MQTT only) then the payload. All integers are little-endian. The checksum is
 * XXH3-64 over header bytes [0, 32) and the body, so a torn or flipped record is
 * detected. Layout and rules are documented in docs/storage-format.md.
 */
#ifndef SLUICE_STORAGE_RECORD_H
#define SLUICE_STORAGE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define RECORD_MAGIC       0x5253u /* "SR" */
#define RECORD_VERSION     1u
#define RECORD_HEADER_SIZE 40u
#define RECORD_MAX_BODY    (16u << 20)

#define SEGMENT_MAGIC       0x47534c53u /* "SLSG" */
#define SEGMENT_VERSION     1u
#define SEGMENT_HEADER_SIZE 32u

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
/* First record of a commit batch (one write + fdatasync). A batch is written
 * only after the previous one's sync completed, so a verified batch start found
 * after damage proves the damaged batch had been made durable: the damage is in
 * the middle of the log, not a torn (never acknowledged) tail. */
#define RECORD_F_BATCH_START 0x04u

struct record {
    uint8_t flags;
    uint8_t proto;
    uint8_t ctype;
    uint16_t topic_len;
    uint32_t length; /* body bytes after the header: topic + payload */
    uint32_t device;
    uint64_t recv_ns; /* CLOCK_REALTIME at receipt */
    uint64_t seq;     /* record number within its worker's log, from 0 */
    uint64_t checksum;
};

struct segment_header {
    uint32_t worker;
    uint32_t org;
    uint64_t base_seq;   /* seq of the first record */
    uint64_t created_ns; /* CLOCK_REALTIME */
};

/* Encodes hdr and computes the checksum over the header and body (topic then
 * payload, either may be empty). Writes exactly RECORD_HEADER_SIZE bytes to out. */
void record_encode(uint8_t out[RECORD_HEADER_SIZE], const struct record *r, const void *topic,
                   const void *payload, size_t payload_len);

/* Decodes a header. Returns 0, -EBADMSG on a bad magic/version or an impossible
 * length. Does not verify the checksum (see record_verify). */
int record_decode(const uint8_t in[RECORD_HEADER_SIZE], struct record *r);

/* Verifies the checksum of a decoded header against its body (r->length bytes).
 * Returns 0 or -EBADMSG. */
int record_verify(const uint8_t hdr[RECORD_HEADER_SIZE], const struct record *r, const void *body);

void segment_header_encode(uint8_t out[SEGMENT_HEADER_SIZE], const struct segment_header *h);
/* Returns 0 or -EBADMSG. */
int segment_header_decode(const uint8_t in[SEGMENT_HEADER_SIZE], struct segment_header *h);

/* Protocol / content type names for output ("http", "json" ...); "?" if unknown. */
const char *record_proto_name(unsigned proto);

#endif
