/*
 * Aegis protocol messages: the method table and bounded (de)serialization.
 *
 * The message types are generated at build time by protoc-c from the .proto
 * files under proto/aegis/ (packages aegis.v1 and aegis.bench.v1); include
 * them as <aegis/v1/agent.pb-c.h>, <aegis/bench/v1/bench.pb-c.h>, ...
 *
 * Everything here is stateless and thread-safe; any function may be called
 * from a callback.
 */
#ifndef AEGIS_PROTO_H
#define AEGIS_PROTO_H

#include <aegis/mem.h>
#include <aegis/rpc_shape.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Streaming shape of an RPC: enum aegis_rpc_shape in <aegis/rpc_shape.h>. */

/* One RPC of a service. Entries are static; never free them. */
struct aegis_method {
    const char *path;    /* ":path" header, "/aegis.v1.AgentService/Enroll" */
    const char *service; /* full service name, "aegis.v1.AgentService" */
    const char *name;    /* method name, "Enroll" */
    enum aegis_rpc_shape shape;
    const ProtobufCMessageDescriptor *input;  /* request message type */
    const ProtobufCMessageDescriptor *output; /* response message type */
};

/*
 * aegis_method_find looks a method up by its HTTP/3 :path (path need not be
 * NUL-terminated; len is its length). Returns a static entry, or NULL if no
 * service of ours has that method (the transport answers UNIMPLEMENTED).
 */
const struct aegis_method *aegis_method_find(const char *path, size_t len);

/*
 * aegis_method_table returns every method of every service (AgentService,
 * OperatorService, Bench), sorted by path, and its length in *pcount.
 */
const struct aegis_method *aegis_method_table(size_t *pcount);

/*
 * aegis_proto_all_messages returns every generated message type (nested and
 * map-entry types included) and its length in *pcount. For tests and fuzzing.
 */
const ProtobufCMessageDescriptor *const *aegis_proto_all_messages(size_t *pcount);

/*
 * The allocation budget of one unpack, in bytes, for an input of len bytes:
 * AEGIS_PROTO_BUDGET_BASE + len * aegis_proto_budget_per_byte().
 *
 * Every allocation protobuf-c makes while unpacking belongs to one field
 * occurrence of at least 2 input bytes (tag plus one value or length byte): a
 * 32-byte scanned-member record in slabs that at most double (64), an array
 * slot (at most 16) or a 24-byte unknown-field record, a sub-message struct
 * (at most the largest generated struct), and a copy of the value (at most its
 * own bytes plus a NUL); packed repeated scalars take at most 8 bytes per input
 * byte. Canonical encodings of any message therefore fit; what does not fit is
 * input that makes protobuf-c merge a non-repeated sub-message again and again,
 * which costs memory and time quadratic in len.
 */
#define AEGIS_PROTO_BUDGET_BASE ((size_t)4096)
size_t aegis_proto_budget_per_byte(void);

/* aegis_proto_unpack_budget returns the budget for len input bytes
 * (SIZE_MAX if the computation would overflow). */
size_t aegis_proto_unpack_budget(size_t len);

/*
 * aegis_proto_unpack parses len bytes at buf as a message of type desc into a
 * new message allocated through mem (NULL = default allocator); *pmsg is set
 * only on success and must be released with aegis_proto_free(msg, mem). buf is
 * only read during the call (buf may be NULL when len is 0).
 *
 * Errors:
 *   -EINVAL              desc is not a message descriptor, pmsg is NULL, or
 *                        buf is NULL with len > 0.
 *   AEGIS_ERR_TOO_LARGE  len > max_len (checked before any allocation), or
 *                        the allocations would exceed
 *                        aegis_proto_unpack_budget(len).
 *   AEGIS_ERR_MALFORMED  the bytes are not a valid encoding of desc, use
 *                        field number 0, or a string field (at any depth) is
 *                        not UTF-8 or contains NUL (protobuf-c would cut it).
 *   -ENOMEM              mem failed an allocation.
 * Nothing is leaked on any error.
 */
int aegis_proto_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                       size_t max_len, const struct aegis_mem *mem, ProtobufCMessage **pmsg);

/* aegis_proto_free releases a message from aegis_proto_unpack with the same
 * mem. msg may be NULL. Must not be used on messages built by the caller. */
void aegis_proto_free(ProtobufCMessage *msg, const struct aegis_mem *mem);

/*
 * aegis_proto_pack serializes msg into a new buffer allocated with mem
 * (release with aegis_free(mem, buf)); *pbuf and *plen are set only on
 * success. An empty message gives *plen == 0 and a 1-byte allocation.
 *
 * Errors: -EINVAL (NULL argument, or msg fails protobuf_c_message_check: e.g.
 * a NULL string or a repeated count without its array), -ENOMEM,
 * AEGIS_ERR_INTERNAL (protobuf-c wrote a different size than it computed).
 */
int aegis_proto_pack(const ProtobufCMessage *msg, const struct aegis_mem *mem, uint8_t **pbuf,
                     size_t *plen);

/*
 * aegis_command_kind returns the name of the payload a Command carries: its
 * field name in command.proto's payload oneof ("apply_policy",
 * "load_artifact", "run_action", ...), or NULL when cmd is NULL or carries
 * none. The string is static. One name for the agent's logs, aegisctl and the
 * commands.kind column.
 */
struct Aegis__V1__Command;
const char *aegis_command_kind(const struct Aegis__V1__Command *cmd);

#ifdef __cplusplus
}
#endif
#endif
