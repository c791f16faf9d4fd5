/*
 * gRPC wire details that are independent of QUIC and HTTP/3 (gRPC
 * PROTOCOL-HTTP2 as mapped to HTTP/3 by proposal G2). Sans-I/O: pure
 * functions and small incremental parsers; no clock, no sockets, no logging.
 * Private to transport/. Decoders here see untrusted bytes and each has a
 * fuzz target in tests/fuzz/.
 */
#ifndef AEGIS_GRPC_WIRE_H
#define AEGIS_GRPC_WIRE_H

#include <aegis/mem.h>
#include <aegis/tstamp.h>

#include <stddef.h>
#include <stdint.h>

/* Length-prefixed message: 1 byte compressed flag + 4 byte big-endian length. */
#define GRPC_FRAME_HEADER_LEN 5

/* grpc_frame_header writes the 5-byte prefix for a message of len bytes. */
void grpc_frame_header(uint8_t out[GRPC_FRAME_HEADER_LEN], int compressed, uint32_t len);

/*
 * Incremental deframer. Feed it the DATA bytes of one stream in any split;
 * it reassembles whole messages into its own buffer (grown as needed, never
 * beyond max_message) and reports each one.
 */
struct grpc_deframer {
    const struct aegis_mem *mem;
    size_t max_message; /* a declared length above this -> AEGIS_ERR_TOO_LARGE */
    uint8_t hdr[GRPC_FRAME_HEADER_LEN];
    size_t hdr_have;
    uint8_t *buf; /* message body being assembled */
    size_t buf_cap;
    size_t want; /* declared length of the current message */
    size_t have; /* bytes of it received so far */
    int compressed;
    int in_body;
};

void grpc_deframer_init(struct grpc_deframer *d, const struct aegis_mem *mem, size_t max_message);
void grpc_deframer_free(struct grpc_deframer *d);

/*
 * grpc_deframer_feed consumes up to len bytes and stops right after the first
 * complete message, so the caller can apply backpressure between messages.
 * Returns the number of bytes consumed (>= 0) and sets *pdone = 1 when a
 * message is complete; then *pmsg, *pmsglen and *pcompressed describe it (valid
 * until the next feed or free). Errors: AEGIS_ERR_TOO_LARGE (declared length
 * over max_message), AEGIS_ERR_MALFORMED (compressed flag not 0 or 1),
 * -ENOMEM. After an error the deframer is unusable.
 */
long grpc_deframer_feed(struct grpc_deframer *d, const uint8_t *data, size_t len, int *pdone,
                        const uint8_t **pmsg, size_t *pmsglen, int *pcompressed);

/* grpc_deframer_partial is 1 when a message has begun but not finished
 * (END_STREAM then means a truncated message: INTERNAL). */
int grpc_deframer_partial(const struct grpc_deframer *d);

/*
 * grpc-timeout: "1*8DIGIT unit", unit one of H M S m u n. Parse to
 * nanoseconds (saturating at UINT64_MAX - 1). Returns 0 or AEGIS_ERR_MALFORMED.
 */
int grpc_timeout_parse(const char *v, size_t len, uint64_t *pns);
/* grpc_timeout_format writes the shortest exact-enough value (at most 8
 * digits, rounding up) and a NUL into out (>= 10 bytes). Returns length. */
size_t grpc_timeout_format(uint64_t ns, char out[16]);

/* grpc-status: decimal 0..16 only. Returns 0 or AEGIS_ERR_MALFORMED. */
int grpc_status_parse(const char *v, size_t len, int *pstatus);

/*
 * grpc-message percent-encoding: bytes outside 0x20..0x7E, and '%', become
 * %XX (upper-case hex). encode writes at most outcap bytes and returns the
 * length needed (like snprintf, without NUL). decode is lenient as the spec
 * asks: an invalid %-sequence is kept as-is; returns the decoded length
 * (<= len), output NUL-terminated if outcap > decoded length.
 */
size_t grpc_percent_encode(const char *in, size_t len, char *out, size_t outcap);
size_t grpc_percent_decode(const char *in, size_t len, char *out, size_t outcap);

/* content-type must be "application/grpc" optionally followed by "+proto" or
 * ";..." (parameters). Returns 1 if acceptable. */
int grpc_content_type_ok(const char *v, size_t len);

/* :path "/pkg.Service/Method": returns 1 if well formed (one leading '/',
 * exactly one more '/', non-empty parts, printable ASCII, <= 256 bytes). */
int grpc_path_ok(const char *v, size_t len);

/*
 * Metadata keys: lower-case [0-9a-z_.-], not starting with ':' and not a
 * reserved "grpc-" key; values of non-binary keys printable ASCII (0x20-0x7E);
 * keys ending in "-bin" carry arbitrary bytes base64-encoded on the wire.
 */
int grpc_metadata_key_ok(const char *k, size_t len);
int grpc_metadata_key_is_bin(const char *k, size_t len);
int grpc_metadata_value_ok(const char *v, size_t len);
/* Base64 for -bin values. encode: returns needed length, output unpadded as
 * gRPC emits; decode accepts padded and unpadded input, returns the decoded
 * length or AEGIS_ERR_MALFORMED; outcap must be >= len * 3 / 4 + 3. */
size_t grpc_base64_encode(const uint8_t *in, size_t len, char *out, size_t outcap);
long grpc_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap);

/* Message encodings we speak. */
enum grpc_encoding { GRPC_ENC_IDENTITY = 0, GRPC_ENC_ZSTD = 1, GRPC_ENC_UNKNOWN = -1 };
enum grpc_encoding grpc_encoding_parse(const char *v, size_t len);
/* grpc-accept-encoding: comma-separated list, spaces allowed. Returns a
 * bit mask of (1 << enum grpc_encoding) for the ones we know. */
unsigned grpc_accept_encoding_parse(const char *v, size_t len);

/*
 * zstd per-message codec (codec_zstd.c; the only file that includes zstd.h).
 * One codec per connection reuses its contexts: no allocation per message
 * after warm-up except the output buffer the caller provides or grows.
 */
struct grpc_zstd;
int grpc_zstd_new(const struct aegis_mem *mem, int level, struct grpc_zstd **pz);
void grpc_zstd_del(struct grpc_zstd *z);
/* Compress len bytes into *pout (allocated with mem, caller frees). */
int grpc_zstd_compress(struct grpc_zstd *z, const uint8_t *in, size_t len, uint8_t **pout,
                       size_t *poutlen);
/* Decompress with a hard cap on the output: more than max_out bytes ->
 * AEGIS_ERR_TOO_LARGE (checked against the frame header before allocating
 * and again while streaming); corrupt input -> AEGIS_ERR_DECOMPRESS. */
int grpc_zstd_decompress(struct grpc_zstd *z, const uint8_t *in, size_t len, size_t max_out,
                         uint8_t **pout, size_t *poutlen);

#endif
