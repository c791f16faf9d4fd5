/*
 * Test helper: builds a message of any generated type with every field set,
 * by walking its protobuf-c descriptor. Shared by the proto tests and the
 * fuzz-corpus writer.
 */
#ifndef AEGIS_TEST_PROTO_FILL_H
#define AEGIS_TEST_PROTO_FILL_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Owns every allocation of a filled message; fill_arena_free releases all. */
struct fill_arena {
    void **ptrs;
    size_t n, cap;
    int failed; /* an allocation failed: the message is incomplete */
};

/* Repeated fields (and map fields) get this many elements. */
#define FILL_REPEAT 2

/*
 * fill_message returns a message of type desc in which every scalar has a
 * non-default value, every string/bytes is non-empty, every repeated field and
 * map has FILL_REPEAT elements, every sub-message is filled recursively and,
 * in each oneof, member number (variant mod members) is set. NULL on
 * allocation failure. Everything belongs to the arena.
 */
ProtobufCMessage *fill_message(struct fill_arena *a, const ProtobufCMessageDescriptor *desc,
                               unsigned variant);

/* fill_oneof_members returns how many members the largest oneof of desc has
 * (0 if none): the number of variants that cover every oneof member. */
unsigned fill_oneof_members(const ProtobufCMessageDescriptor *desc);

/* fill_check_set returns 1 if every field fill_message would set in this
 * variant is set (non-default) in msg, else 0 and the field name in *pwhat. */
int fill_check_set(const ProtobufCMessage *msg, unsigned variant, const char **pwhat);

void fill_arena_free(struct fill_arena *a);

#endif
