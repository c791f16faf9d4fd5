/*
 * Method lookup and bounded protobuf-c (de)serialization. protobuf-c is
 * touched here and in the generated code only.
 */
#include <aegis/err.h>
#include <aegis/proto.h>
#include <aegis/v1/command.pb-c.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "proto_gen.h"

/* protobuf-c keeps a 32-byte record per field occurrence while scanning, in
 * slabs that double in size, so at most 64 bytes per occurrence. */
#define SLAB_PER_FIELD 64
/* Largest per-occurrence bookkeeping besides the slab: an unknown-field
 * record (tag, wire type, length, data pointer). */
#define RECORD_PER_FIELD 24
/* A field occurrence takes at least a tag byte and a value/length byte. */
#define MIN_FIELD_BYTES 2
/* Packed repeated scalars: at most 8 bytes of array per input byte (one-byte
 * varints into uint64), plus 1 for a value copy with its NUL. */
#define PACKED_PER_BYTE 9

size_t aegis_proto_budget_per_byte(void)
{
    /* The most protobuf-c allocates for one field occurrence besides copies of
     * its value: slab share, an unknown-field record (larger than any array
     * slot), a sub-message struct, and a string's NUL. */
    size_t per_field = SLAB_PER_FIELD + RECORD_PER_FIELD + aegis_proto_gen_max_struct + 1;
    return (per_field + MIN_FIELD_BYTES - 1) / MIN_FIELD_BYTES + PACKED_PER_BYTE;
}

size_t aegis_proto_unpack_budget(size_t len)
{
    size_t k = aegis_proto_budget_per_byte();
    if (len > (SIZE_MAX - AEGIS_PROTO_BUDGET_BASE) / k)
        return SIZE_MAX;
    return AEGIS_PROTO_BUDGET_BASE + len * k;
}

const struct aegis_method *aegis_method_table(size_t *pcount)
{
    if (pcount)
        *pcount = aegis_proto_gen_nmethods;
    return aegis_proto_gen_methods;
}

const ProtobufCMessageDescriptor *const *aegis_proto_all_messages(size_t *pcount)
{
    if (pcount)
        *pcount = aegis_proto_gen_nmessages;
    return aegis_proto_gen_messages;
}

/* Byte-wise order of (a, alen) against the NUL-terminated b; the table is
 * sorted the same way (CMake's list(SORT) compares std::string bytes). */
static int path_cmp(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

const struct aegis_method *aegis_method_find(const char *path, size_t len)
{
    if (!path)
        return NULL;
    size_t lo = 0, hi = aegis_proto_gen_nmethods;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = path_cmp(path, len, aegis_proto_gen_methods[mid].path);
        if (c == 0)
            return &aegis_proto_gen_methods[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* Adapts aegis_mem to ProtobufCAllocator and charges every request against
 * the budget; the flags tell a budget refusal from a real out-of-memory. */
struct budget {
    const struct aegis_mem *mem;
    size_t limit;
    size_t used;
    int over;
    int oom;
};

static void *budget_alloc(void *ud, size_t size)
{
    struct budget *b = ud;
    /* Zero-byte requests get a 1-byte block: charge what is allocated. */
    size_t charge = size ? size : 1;
    if (charge > b->limit - b->used) {
        b->over = 1;
        return NULL;
    }
    b->used += charge;
    void *p = aegis_malloc(b->mem, charge);
    if (!p)
        b->oom = 1;
    return p;
}

static void budget_free(void *ud, void *ptr)
{
    struct budget *b = ud;
    aegis_free(b->mem, ptr);
}

/* Deeper than any message of ours nests; only guards the recursion below. */
#define MAX_NESTING 64
/* Largest valid field number (protobuf encoding spec: 2^29 - 1). */
#define MAX_FIELD_NUMBER 536870911u

static int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *pv)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (unsigned i = 0; i < 10 && p < end; i++) {
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pp = p;
            *pv = v;
            return 0;
        }
    }
    return -1;
}

/* Strict UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF) without NUL, which would silently cut the C string protobuf-c
 * hands out. */
static int valid_text(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1fu, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0fu, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07u, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i < n)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n;
    }
    return 1;
}

/*
 * Checks what protobuf-c does not, before it allocates anything:
 * - field number 0 is invalid in any encoding; protobuf-c accepts it in a
 *   non-minimal tag ("81 00") and then cannot read back its own packing;
 * - string fields must be UTF-8 (proto3), and must not contain NUL, which
 *   protobuf-c would keep but every C reader would cut at.
 * Known sub-messages are checked recursively (the schema is acyclic, so depth
 * follows the schema). Returns 0 if acceptable.
 */
static int check_wire(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                      unsigned depth)
{
    const uint8_t *end = p + len;
    if (depth > MAX_NESTING)
        return -1;
    while (p < end) {
        uint64_t key, v;
        if (read_varint(&p, end, &key) != 0)
            return -1;
        uint64_t number = key >> 3;
        if (number == 0 || number > MAX_FIELD_NUMBER)
            return -1;
        switch (key & 7) {
        case 0:
            if (read_varint(&p, end, &v) != 0)
                return -1;
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        case 2: {
            if (read_varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return -1;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(desc, (unsigned)number);
            if (f && f->type == PROTOBUF_C_TYPE_STRING && !valid_text(p, (size_t)v))
                return -1;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                check_wire(f->descriptor, p, (size_t)v, depth + 1) != 0)
                return -1;
            p += v;
            break;
        }
        default: /* groups (3, 4) are not proto3; 6 and 7 do not exist */
            return -1;
        }
    }
    return 0;
}

int aegis_proto_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len,
                       size_t max_len, const struct aegis_mem *mem, ProtobufCMessage **pmsg)
{
    if (!desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC || !pmsg || (!buf && len))
        return -EINVAL;
    if (len > max_len)
        return AEGIS_ERR_TOO_LARGE;
    if (len && check_wire(desc, buf, len, 0) != 0)
        return AEGIS_ERR_MALFORMED;
    static const uint8_t empty[1];
    struct budget b = {mem ? mem : aegis_mem_default(), aegis_proto_unpack_budget(len), 0, 0, 0};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &b};
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, &alloc, len, buf ? buf : empty);
    if (!msg) {
        if (b.oom)
            return -ENOMEM;
        if (b.over)
            return AEGIS_ERR_TOO_LARGE;
        return AEGIS_ERR_MALFORMED;
    }
    *pmsg = msg;
    return 0;
}

static void *plain_alloc(void *ud, size_t size)
{
    return aegis_malloc(ud, size ? size : 1);
}

static void plain_free(void *ud, void *ptr)
{
    aegis_free(ud, ptr);
}

void aegis_proto_free(ProtobufCMessage *msg, const struct aegis_mem *mem)
{
    if (!msg)
        return;
    ProtobufCAllocator alloc = {plain_alloc, plain_free, (void *)(mem ? mem : aegis_mem_default())};
    protobuf_c_message_free_unpacked(msg, &alloc);
}

int aegis_proto_pack(const ProtobufCMessage *msg, const struct aegis_mem *mem, uint8_t **pbuf,
                     size_t *plen)
{
    if (!msg || !pbuf || !plen || !msg->descriptor ||
        msg->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return -EINVAL;
    if (!protobuf_c_message_check(msg))
        return -EINVAL;
    size_t size = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = aegis_malloc(mem, size ? size : 1);
    if (!buf)
        return -ENOMEM;
    if (protobuf_c_message_pack(msg, buf) != size) {
        aegis_free(mem, buf);
        return AEGIS_ERR_INTERNAL;
    }
    *pbuf = buf;
    *plen = size;
    return 0;
}

const char *aegis_command_kind(const struct Aegis__V1__Command *cmd)
{
    if (!cmd || cmd->payload_case == AEGIS__V1__COMMAND__PAYLOAD__NOT_SET)
        return NULL;
    /* The oneof's case value is the member's field number. */
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(
        &aegis__v1__command__descriptor, (unsigned)cmd->payload_case);
    return f && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ? f->name : NULL;
}
