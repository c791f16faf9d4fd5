#include "proto_fill.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The schema is acyclic (test_proto checks); this only guards the walk. */
#define FILL_MAX_DEPTH 16

static void *arena_alloc(struct fill_arena *a, size_t size)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        void **p = realloc(a->ptrs, cap * sizeof(*p));
        if (!p) {
            a->failed = 1;
            return NULL;
        }
        a->ptrs = p;
        a->cap = cap;
    }
    void *m = calloc(1, size ? size : 1);
    if (!m) {
        a->failed = 1;
        return NULL;
    }
    a->ptrs[a->n++] = m;
    return m;
}

void fill_arena_free(struct fill_arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->ptrs[i]);
    free(a->ptrs);
    memset(a, 0, sizeof(*a));
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    }
    return 0;
}

static ProtobufCMessage *fill_rec(struct fill_arena *a, const ProtobufCMessageDescriptor *desc,
                                  unsigned variant, unsigned depth);

/* Writes one non-default value of field f (element index i) at dst. */
static int fill_value(struct fill_arena *a, const ProtobufCFieldDescriptor *f, void *dst,
                      unsigned i, unsigned variant, unsigned depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: {
        /* Negative: exercises 10-byte varints and zigzag. */
        int32_t v = -(int32_t)(f->id * 7 + i + 1);
        memcpy(dst, &v, 4);
        break;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint32_t v = 0x12345u * (f->id + 1) + i;
        memcpy(dst, &v, 4);
        break;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t v = (f->id % 2) ? -(int64_t)1700000000123456789 - i : 1700000000123456789 + i;
        memcpy(dst, &v, 8);
        break;
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v = UINT64_C(0xfedcba9876543210) / (f->id + 1) + i;
        memcpy(dst, &v, 8);
        break;
    }
    case PROTOBUF_C_TYPE_FLOAT: {
        float v = 1.5f + (float)i;
        memcpy(dst, &v, 4);
        break;
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double v = -2.25 + (double)i * 1e9;
        memcpy(dst, &v, 8);
        break;
    }
    case PROTOBUF_C_TYPE_BOOL: {
        protobuf_c_boolean v = 1;
        memcpy(dst, &v, sizeof(v));
        break;
    }
    case PROTOBUF_C_TYPE_ENUM: {
        /* The last declared value is never the zero default. */
        const ProtobufCEnumDescriptor *e = f->descriptor;
        int v = e->values[e->n_values - 1 - (i % e->n_values)].value;
        if (v == 0)
            v = e->values[e->n_values - 1].value;
        memcpy(dst, &v, 4);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char *s = arena_alloc(a, 64);
        if (!s)
            return -1;
        snprintf(s, 64, "%s-%u-\xc3\xa9", f->name, i);
        memcpy(dst, &s, sizeof(s));
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData bd;
        bd.len = 5 + i;
        bd.data = arena_alloc(a, bd.len);
        if (!bd.data)
            return -1;
        for (size_t k = 0; k < bd.len; k++)
            bd.data[k] = (uint8_t)(k * 37 + f->id); /* includes 0x00 */
        memcpy(dst, &bd, sizeof(bd));
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage *sub = fill_rec(a, f->descriptor, variant + i, depth + 1);
        if (!sub)
            return -1;
        memcpy(dst, &sub, sizeof(sub));
        break;
    }
    }
    return 0;
}

/* Index of f among the members of its oneof, and the member count. */
static void oneof_pos(const ProtobufCMessageDescriptor *desc, const ProtobufCFieldDescriptor *f,
                      unsigned *pidx, unsigned *pcount)
{
    unsigned idx = 0, count = 0;
    for (unsigned k = 0; k < desc->n_fields; k++) {
        const ProtobufCFieldDescriptor *g = &desc->fields[k];
        if ((g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            g->quantifier_offset == f->quantifier_offset) {
            if (g == f)
                idx = count;
            count++;
        }
    }
    *pidx = idx;
    *pcount = count;
}

unsigned fill_oneof_members(const ProtobufCMessageDescriptor *desc)
{
    unsigned best = 0;
    for (unsigned k = 0; k < desc->n_fields; k++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[k];
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            unsigned idx, count;
            oneof_pos(desc, f, &idx, &count);
            if (count > best)
                best = count;
        }
    }
    return best;
}

static ProtobufCMessage *fill_rec(struct fill_arena *a, const ProtobufCMessageDescriptor *desc,
                                  unsigned variant, unsigned depth)
{
    if (depth > FILL_MAX_DEPTH)
        return NULL;
    ProtobufCMessage *m = arena_alloc(a, desc->sizeof_message);
    if (!m)
        return NULL;
    protobuf_c_message_init(desc, m);
    for (unsigned k = 0; k < desc->n_fields; k++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[k];
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t es = elem_size(f->type);
            char *arr = arena_alloc(a, es * FILL_REPEAT);
            if (!arr)
                return NULL;
            for (unsigned i = 0; i < FILL_REPEAT; i++)
                if (fill_value(a, f, arr + es * i, i, variant, depth) != 0)
                    return NULL;
            size_t n = FILL_REPEAT;
            memcpy(base + f->quantifier_offset, &n, sizeof(n));
            memcpy(base + f->offset, &arr, sizeof(arr));
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            unsigned idx, count;
            oneof_pos(desc, f, &idx, &count);
            if (idx != variant % count)
                continue;
            uint32_t c = f->id;
            memcpy(base + f->quantifier_offset, &c, sizeof(c));
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
            protobuf_c_boolean has = 1; /* proto3 `optional` scalars */
            memcpy(base + f->quantifier_offset, &has, sizeof(has));
        }
        if (fill_value(a, f, base + f->offset, 0, variant, depth) != 0)
            return NULL;
    }
    return m;
}

ProtobufCMessage *fill_message(struct fill_arena *a, const ProtobufCMessageDescriptor *desc,
                               unsigned variant)
{
    ProtobufCMessage *m = fill_rec(a, desc, variant, 0);
    return a->failed ? NULL : m;
}

static int value_set(const ProtobufCFieldDescriptor *f, const char *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s;
        memcpy(&s, p, sizeof(s));
        return s && s[0];
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData bd;
        memcpy(&bd, p, sizeof(bd));
        return bd.len > 0 && bd.data;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const void *sub;
        memcpy(&sub, p, sizeof(sub));
        return sub != NULL;
    }
    default: {
        static const char zero[8];
        return memcmp(p, zero, elem_size(f->type)) != 0;
    }
    }
}

static int check_rec(const ProtobufCMessage *msg, unsigned variant, unsigned depth,
                     const char **pwhat);

/* value_deep_set also descends into a sub-message built with variant v. */
static int value_deep_set(const ProtobufCFieldDescriptor *f, const char *p, unsigned v,
                          unsigned depth, const char **pwhat)
{
    if (!value_set(f, p)) {
        *pwhat = f->name;
        return 0;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessage *sub;
        memcpy(&sub, p, sizeof(sub));
        return check_rec(sub, v, depth + 1, pwhat);
    }
    return 1;
}

static int check_rec(const ProtobufCMessage *msg, unsigned variant, unsigned depth,
                     const char **pwhat)
{
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    const char *base = (const char *)msg;
    if (depth > FILL_MAX_DEPTH) {
        *pwhat = "(too deep)";
        return 0;
    }
    for (unsigned k = 0; k < desc->n_fields; k++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[k];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n;
            memcpy(&n, base + f->quantifier_offset, sizeof(n));
            if (n != FILL_REPEAT) {
                *pwhat = f->name;
                return 0;
            }
            const char *arr;
            memcpy(&arr, base + f->offset, sizeof(arr));
            for (unsigned i = 0; i < FILL_REPEAT; i++)
                if (!value_deep_set(f, arr + elem_size(f->type) * i, variant + i, depth, pwhat))
                    return 0;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            unsigned idx, count;
            oneof_pos(desc, f, &idx, &count);
            if (idx != variant % count)
                continue;
            uint32_t c;
            memcpy(&c, base + f->quantifier_offset, sizeof(c));
            if (c != f->id) {
                *pwhat = f->name;
                return 0;
            }
        }
        if (!value_deep_set(f, base + f->offset, variant, depth, pwhat))
            return 0;
    }
    return 1;
}

int fill_check_set(const ProtobufCMessage *msg, unsigned variant, const char **pwhat)
{
    return check_rec(msg, variant, 0, pwhat);
}
