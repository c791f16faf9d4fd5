/*
 * aegis_proto_unpack/pack/free over every generated message type: round
 * trips, truncation, garbage, the size cap, the allocation budget and
 * allocation-failure paths.
 */
#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/proto.h>
#include <aegis/v1/command.pb-c.h>
#include <aegis/v1/policy.pb-c.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto_fill.h"

#define MAX_MSG (4u << 20) /* DESIGN §8: one RPC message */

/* --- counting allocator: bytes requested, live blocks ---------------------- */

struct counting {
    struct aegis_mem mem;
    size_t requested; /* total bytes asked for */
    long live;        /* blocks not yet freed */
};

static void *cnt_malloc(size_t size, void *ud)
{
    struct counting *c = ud;
    c->requested += size;
    void *p = malloc(size);
    if (p)
        c->live++;
    return p;
}

static void cnt_free(void *ptr, void *ud)
{
    struct counting *c = ud;
    if (ptr)
        c->live--;
    free(ptr);
}

static void *cnt_calloc(size_t n, size_t size, void *ud)
{
    struct counting *c = ud;
    c->requested += n * size;
    void *p = calloc(n, size);
    if (p)
        c->live++;
    return p;
}

static void *cnt_realloc(void *ptr, size_t size, void *ud)
{
    struct counting *c = ud;
    c->requested += size;
    void *p = realloc(ptr, size);
    if (p && !ptr)
        c->live++;
    return p;
}

static void counting_init(struct counting *c)
{
    memset(c, 0, sizeof(*c));
    c->mem.user_data = c;
    c->mem.malloc = cnt_malloc;
    c->mem.free = cnt_free;
    c->mem.calloc = cnt_calloc;
    c->mem.realloc = cnt_realloc;
}

/* --- helpers ----------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rng(void)
{
    /* xorshift64: deterministic garbage, same on every run */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Packs a filled message of type desc (variant v) into *pbuf and *plen. */
static void pack_filled(const ProtobufCMessageDescriptor *desc, unsigned v, uint8_t **pbuf,
                        size_t *plen)
{
    struct fill_arena a = {0};
    ProtobufCMessage *m = fill_message(&a, desc, v);
    assert_non_null(m);
    assert_int_equal(aegis_proto_pack(m, NULL, pbuf, plen), 0);
    fill_arena_free(&a);
}

/* Unpacks buf with a counting allocator and checks the budget and leaks.
 * Returns the unpack result; on success the message is repacked, reparsed and
 * repacked again, and both packings must be identical. */
static int unpack_checked(const ProtobufCMessageDescriptor *desc, const uint8_t *buf, size_t len)
{
    struct counting c;
    counting_init(&c);
    ProtobufCMessage *m = NULL;
    int rv = aegis_proto_unpack(desc, buf, len, MAX_MSG, &c.mem, &m);
    assert_true(c.requested <= aegis_proto_unpack_budget(len));
    if (rv != 0) {
        assert_null(m);
        assert_true(rv == AEGIS_ERR_MALFORMED || rv == AEGIS_ERR_TOO_LARGE);
        assert_int_equal(c.live, 0);
        return rv;
    }
    assert_ptr_equal(m->descriptor, desc);
    uint8_t *p1, *p2;
    size_t l1, l2;
    assert_int_equal(aegis_proto_pack(m, &c.mem, &p1, &l1), 0);
    aegis_proto_free(m, &c.mem);
    ProtobufCMessage *m2 = NULL;
    assert_int_equal(aegis_proto_unpack(desc, p1, l1, MAX_MSG, &c.mem, &m2), 0);
    assert_int_equal(aegis_proto_pack(m2, &c.mem, &p2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(p1, p2, l1);
    aegis_proto_free(m2, &c.mem);
    aegis_free(&c.mem, p1);
    aegis_free(&c.mem, p2);
    assert_int_equal(c.live, 0);
    return 0;
}

/* --- tests ------------------------------------------------------------------- */

/* Every message type, every oneof member: fill, pack, unpack, check every
 * field survived, repack, compare bytes. */
static void test_roundtrip_all(void **state)
{
    (void)state;
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    assert_true(n > 90);
    for (size_t i = 0; i < n; i++) {
        unsigned variants = fill_oneof_members(all[i]);
        if (variants == 0)
            variants = 1;
        for (unsigned v = 0; v < variants; v++) {
            uint8_t *p1, *p2;
            size_t l1, l2;
            pack_filled(all[i], v, &p1, &l1);
            assert_true(l1 > 0);
            struct counting c;
            counting_init(&c);
            ProtobufCMessage *m = NULL;
            assert_int_equal(aegis_proto_unpack(all[i], p1, l1, MAX_MSG, &c.mem, &m), 0);
            assert_true(c.requested <= aegis_proto_unpack_budget(l1));
            const char *what = NULL;
            if (!fill_check_set(m, v, &what))
                fail_msg("%s variant %u: field %s lost in the round trip", all[i]->name, v, what);
            assert_int_equal(m->n_unknown_fields, 0);
            assert_int_equal(aegis_proto_pack(m, &c.mem, &p2, &l2), 0);
            assert_int_equal(l1, l2);
            assert_memory_equal(p1, p2, l1);
            aegis_proto_free(m, &c.mem);
            aegis_free(&c.mem, p2);
            assert_int_equal(c.live, 0);
            free(p1);
        }
    }
}

/* Every proper prefix of a filled message is rejected as malformed or parses
 * cleanly (a cut at a field boundary is a valid message); never a leak. */
static void test_truncated(void **state)
{
    (void)state;
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p;
        size_t len;
        pack_filled(all[i], 0, &p, &len);
        unsigned rejected = 0;
        for (size_t cut = 0; cut < len; cut++) {
            /* exact-size copy so ASan sees reads past the cut */
            uint8_t *q = malloc(cut ? cut : 1);
            assert_non_null(q);
            memcpy(q, p, cut);
            int rv = unpack_checked(all[i], q, cut);
            assert_true(rv == 0 || rv == AEGIS_ERR_MALFORMED);
            if (rv != 0)
                rejected++;
            free(q);
        }
        /* Cutting the last byte always leaves an incomplete field. */
        if (len > 0)
            assert_true(rejected > 0);
        free(p);
    }
}

/* Random bytes and randomly mutated valid messages, for every type. */
static void test_garbage(void **state)
{
    (void)state;
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    rng_state = 0x9e3779b97f4a7c15u;
    unsigned accepted = 0, rejected = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *valid;
        size_t vlen;
        pack_filled(all[i], 0, &valid, &vlen);
        for (unsigned round = 0; round < 60; round++) {
            size_t len;
            uint8_t *buf;
            if (round % 2 == 0) {
                len = rng() % 200;
                buf = malloc(len ? len : 1);
                assert_non_null(buf);
                for (size_t k = 0; k < len; k++)
                    buf[k] = (uint8_t)rng();
            } else {
                len = vlen;
                buf = malloc(len ? len : 1);
                assert_non_null(buf);
                memcpy(buf, valid, len);
                for (unsigned flips = 1 + rng() % 4; flips > 0 && len > 0; flips--)
                    buf[rng() % len] = (uint8_t)rng();
            }
            if (unpack_checked(all[i], buf, len) == 0)
                accepted++;
            else
                rejected++;
            free(buf);
        }
        free(valid);
    }
    /* Both outcomes occur, or the test is not testing anything. */
    assert_true(accepted > 0);
    assert_true(rejected > 0);
}

/* Over the cap: refused before a single allocation. */
static void test_over_cap(void **state)
{
    (void)state;
    uint8_t *p;
    size_t len;
    pack_filled(&aegis__v1__command__descriptor, 0, &p, &len);
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 0, 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(
        aegis_proto_unpack(&aegis__v1__command__descriptor, p, len, len - 1, &fm.mem, &m),
        AEGIS_ERR_TOO_LARGE);
    assert_null(m);
    assert_int_equal(fm.nalloc, 0);
    /* At the cap exactly it parses. */
    assert_int_equal(aegis_proto_unpack(&aegis__v1__command__descriptor, p, len, len, &fm.mem, &m),
                     0);
    aegis_proto_free(m, &fm.mem);
    assert_int_equal(fm.live, 0);
    free(p);
}

static void test_bad_args(void **state)
{
    (void)state;
    ProtobufCMessage *m = NULL;
    uint8_t b = 0;
    assert_int_equal(aegis_proto_unpack(NULL, &b, 1, 10, NULL, &m), -EINVAL);
    assert_int_equal(aegis_proto_unpack(&aegis__v1__rule__descriptor, &b, 1, 10, NULL, NULL),
                     -EINVAL);
    assert_int_equal(aegis_proto_unpack(&aegis__v1__rule__descriptor, NULL, 1, 10, NULL, &m),
                     -EINVAL);
    /* An enum descriptor is not a message descriptor. */
    assert_int_equal(
        aegis_proto_unpack(
            (const ProtobufCMessageDescriptor *)(const void *)&aegis__v1__rule_proto__descriptor,
            &b, 1, 10, NULL, &m),
        -EINVAL);
    /* Empty input is the all-defaults message. */
    assert_int_equal(aegis_proto_unpack(&aegis__v1__rule__descriptor, NULL, 0, 10, NULL, &m), 0);
    assert_non_null(m);
    aegis_proto_free(m, NULL);
    aegis_proto_free(NULL, NULL);

    uint8_t *out;
    size_t len;
    assert_int_equal(aegis_proto_pack(NULL, NULL, &out, &len), -EINVAL);
    Aegis__V1__Rule r = AEGIS__V1__RULE__INIT;
    assert_int_equal(aegis_proto_pack(&r.base, NULL, NULL, &len), -EINVAL);
    /* protobuf_c_message_check: a count without its array is refused, not
     * dereferenced. */
    Aegis__V1__MapSnapshot ms = AEGIS__V1__MAP_SNAPSHOT__INIT;
    ms.n_edges = 3;
    ms.edges = NULL;
    out = NULL;
    assert_int_equal(aegis_proto_pack(&ms.base, NULL, &out, &len), -EINVAL);
    assert_null(out);
    /* A NULL proto3 string is the empty string. */
    r.cidr = NULL;
    assert_int_equal(aegis_proto_pack(&r.base, NULL, &out, &len), 0);
    assert_int_equal(len, 0);
    aegis_free(NULL, out);
    /* An empty message packs to zero bytes. */
    Aegis__V1__Rule e = AEGIS__V1__RULE__INIT;
    assert_int_equal(aegis_proto_pack(&e.base, NULL, &out, &len), 0);
    assert_int_equal(len, 0);
    aegis_free(NULL, out);
}

/* Field number 0 written as a non-minimal varint tag ("81 00" = field 0, wire
 * type 1) is refused, at the top level and nested (found by fuzzing: protobuf-c
 * keeps it as an unknown field but cannot read back its own packing of it). */
static void test_field_zero(void **state)
{
    (void)state;
    static const uint8_t top[] = {0x81, 0x00, 1, 2, 3, 4, 5, 6, 7, 8};
    ProtobufCMessage *m = NULL;
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 0, 0);
    assert_int_equal(
        aegis_proto_unpack(&aegis__v1__rule__descriptor, top, sizeof(top), MAX_MSG, &fm.mem, &m),
        AEGIS_ERR_MALFORMED);
    assert_null(m);
    assert_int_equal(fm.live, 0);
    /* Command{apply_policy(10){snapshot(1){edges(3){<field 0>}}}} */
    static const uint8_t nested[] = {0x52, 0x0e, 0x0a, 0x0c, 0x1a, 0x0a, 0x81, 0x00,
                                     1,    2,    3,    4,    5,    6,    7,    8};
    assert_int_equal(aegis_proto_unpack(&aegis__v1__command__descriptor, nested, sizeof(nested),
                                        MAX_MSG, &fm.mem, &m),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(fm.live, 0);
    /* The same shape with field 15 instead of 0 is a valid unknown field. */
    uint8_t ok[sizeof(nested)];
    memcpy(ok, nested, sizeof(ok));
    ok[6] = 0xf9; /* field 15, wire type 1, non-minimal two-byte tag */
    assert_int_equal(
        aegis_proto_unpack(&aegis__v1__command__descriptor, ok, sizeof(ok), MAX_MSG, &fm.mem, &m),
        0);
    const Aegis__V1__Command *c = (const Aegis__V1__Command *)m;
    assert_int_equal(c->payload_case, AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY);
    assert_int_equal(c->apply_policy->snapshot->n_edges, 1);
    assert_int_equal(c->apply_policy->snapshot->edges[0]->base.n_unknown_fields, 1);
    aegis_proto_free(m, &fm.mem);
    assert_int_equal(fm.live, 0);
}

static int unpack_rule_cidr(const uint8_t *text, size_t n)
{
    uint8_t buf[32];
    assert_true(n < sizeof(buf) - 2 && n < 0x80);
    buf[0] = 0x12; /* Rule.cidr, field 2, length-delimited */
    buf[1] = (uint8_t)n;
    memcpy(buf + 2, text, n);
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 0, 0);
    ProtobufCMessage *m = NULL;
    int rv = aegis_proto_unpack(&aegis__v1__rule__descriptor, buf, n + 2, MAX_MSG, &fm.mem, &m);
    if (rv == 0)
        assert_int_equal(strlen(((Aegis__V1__Rule *)m)->cidr), n);
    aegis_proto_free(m, &fm.mem);
    assert_int_equal(fm.live, 0);
    return rv;
}

/* proto3 strings are UTF-8; NUL would cut the C string protobuf-c returns. */
static void test_string_text(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        int ok;
    } cases[] = {
        {"10.0.0.0/8", 10, 1},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, 1}, /* e-acute, euro, emoji */
        {"a\0b", 3, 0},                                 /* embedded NUL */
        {"\xc0\x80", 2, 0},                             /* overlong NUL */
        {"\xe0\x80\xaf", 3, 0},                         /* overlong '/' */
        {"\xed\xa0\x80", 3, 0},                         /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 4, 0},                     /* above U+10FFFF */
        {"\xe2\x82", 2, 0},                             /* truncated sequence */
        {"\x80", 1, 0},                                 /* lone continuation */
        {"\xff", 1, 0},                                 /* never valid */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rv = unpack_rule_cidr((const uint8_t *)cases[i].bytes, cases[i].n);
        if (cases[i].ok)
            assert_int_equal(rv, 0);
        else
            assert_int_equal(rv, AEGIS_ERR_MALFORMED);
    }
    /* Nested: a map value inside MapSnapshot.meta (field 10, entry value 2). */
    static const uint8_t meta_bad[] = {0x52, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 0xff};
    static const uint8_t meta_ok[] = {0x52, 0x06, 0x0a, 0x01, 'k', 0x12, 0x01, 'v'};
    ProtobufCMessage *m = NULL;
    assert_int_equal(aegis_proto_unpack(&aegis__v1__map_snapshot__descriptor, meta_bad,
                                        sizeof(meta_bad), MAX_MSG, NULL, &m),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_proto_unpack(&aegis__v1__map_snapshot__descriptor, meta_ok,
                                        sizeof(meta_ok), MAX_MSG, NULL, &m),
                     0);
    assert_int_equal(((Aegis__V1__MapSnapshot *)m)->n_meta, 1);
    aegis_proto_free(m, NULL);
    /* bytes fields carry anything, NUL and 0xff included. */
    static const uint8_t sig[] = {0x12, 0x03, 0x00, 0xff, 0x00}; /* SignedCommand.signature */
    assert_int_equal(aegis_proto_unpack(&aegis__v1__signed_command__descriptor, sig, sizeof(sig),
                                        MAX_MSG, NULL, &m),
                     0);
    assert_int_equal(((Aegis__V1__SignedCommand *)m)->signature.len, 3);
    aegis_proto_free(m, NULL);
}

/* Writes the varint v at p; returns its length. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* The densest valid input -- thousands of empty sub-messages in a repeated
 * field -- fits the budget for every repeated message field of every type:
 * the budget bounds garbage without refusing real messages. */
static void test_budget_admits_dense(void **state)
{
    (void)state;
    enum { COUNT = 5000 };
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    unsigned tried = 0;
    for (size_t i = 0; i < n; i++) {
        for (unsigned k = 0; k < all[i]->n_fields; k++) {
            const ProtobufCFieldDescriptor *f = &all[i]->fields[k];
            if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
                continue;
            uint8_t tag[10];
            size_t tl = put_varint(tag, (uint64_t)f->id << 3 | 2);
            size_t len = (tl + 1) * COUNT;
            uint8_t *buf = malloc(len);
            assert_non_null(buf);
            for (size_t j = 0; j < COUNT; j++) {
                memcpy(buf + j * (tl + 1), tag, tl);
                buf[j * (tl + 1) + tl] = 0;
            }
            struct counting c;
            counting_init(&c);
            ProtobufCMessage *m = NULL;
            int rv = aegis_proto_unpack(all[i], buf, len, MAX_MSG, &c.mem, &m);
            if (rv != 0)
                fail_msg("%s.%s: %d empty elements refused: %s (requested %zu of %zu)",
                         all[i]->name, f->name, COUNT, aegis_strerror(rv), c.requested,
                         aegis_proto_unpack_budget(len));
            size_t got;
            memcpy(&got, (char *)m + f->quantifier_offset, sizeof(got));
            assert_int_equal(got, COUNT);
            aegis_proto_free(m, &c.mem);
            assert_int_equal(c.live, 0);
            free(buf);
            tried++;
        }
    }
    assert_true(tried > 10);
}

/* The non-repeated sub-message field `snapshot` of ApplyPolicy repeated many
 * times, each with one more rule: protobuf-c merges each occurrence into the
 * previous (copying the growing rule array), quadratic in the input. The
 * budget stops it, and stops it with bounded allocation. */
static void test_budget_stops_merge_blowup(void **state)
{
    (void)state;
    enum { COUNT = 20000 };
    /* ApplyPolicy.snapshot (field 1) = MapSnapshot{ edges (field 3) = Rule{} } */
    static const uint8_t unit[] = {0x0a, 0x02, 0x1a, 0x00};
    size_t len = sizeof(unit) * COUNT;
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    for (size_t j = 0; j < COUNT; j++)
        memcpy(buf + j * sizeof(unit), unit, sizeof(unit));
    struct counting c;
    counting_init(&c);
    ProtobufCMessage *m = NULL;
    int rv =
        aegis_proto_unpack(&aegis__v1__apply_policy__descriptor, buf, len, MAX_MSG, &c.mem, &m);
    assert_int_equal(rv, AEGIS_ERR_TOO_LARGE);
    assert_null(m);
    assert_true(c.requested <= aegis_proto_unpack_budget(len));
    assert_int_equal(c.live, 0);
    /* A few merges are fine: the budget is not a ban on merging. */
    ProtobufCMessage *small = NULL;
    assert_int_equal(aegis_proto_unpack(&aegis__v1__apply_policy__descriptor, buf, sizeof(unit) * 3,
                                        MAX_MSG, &c.mem, &small),
                     0);
    const Aegis__V1__ApplyPolicy *ap = (const Aegis__V1__ApplyPolicy *)small;
    assert_non_null(ap->snapshot);
    assert_int_equal(ap->snapshot->n_edges, 3);
    aegis_proto_free(small, &c.mem);
    assert_int_equal(c.live, 0);
    free(buf);
}

/* Fail each allocation in turn while unpacking a representative message
 * (Command carrying a full ApplyPolicy): -ENOMEM, nothing leaked, and the
 * first run that fails nothing succeeds. */
static void test_alloc_failures(void **state)
{
    (void)state;
    uint8_t *p;
    size_t len;
    pack_filled(&aegis__v1__command__descriptor, 0, &p, &len);
    unsigned long at, succeeded_at = 0;
    for (at = 1; at < 10000 && !succeeded_at; at++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, at, 0);
        ProtobufCMessage *m = NULL;
        int rv = aegis_proto_unpack(&aegis__v1__command__descriptor, p, len, MAX_MSG, &fm.mem, &m);
        if (fm.nfailed == 0) {
            assert_int_equal(rv, 0);
            succeeded_at = at;
        } else {
            assert_int_equal(rv, -ENOMEM);
            assert_null(m);
        }
        aegis_proto_free(m, &fm.mem);
        assert_int_equal(fm.live, 0);
    }
    assert_true(succeeded_at > 10); /* the message needed many allocations */
    /* Also every later allocation failing (fail_after). */
    for (unsigned long k = 1; k < succeeded_at; k++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, k, 1);
        ProtobufCMessage *m = NULL;
        assert_int_equal(
            aegis_proto_unpack(&aegis__v1__command__descriptor, p, len, MAX_MSG, &fm.mem, &m),
            -ENOMEM);
        assert_int_equal(fm.live, 0);
    }
    /* pack's single allocation */
    struct fill_arena a = {0};
    ProtobufCMessage *cmd = fill_message(&a, &aegis__v1__command__descriptor, 0);
    assert_non_null(cmd);
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 1, 0);
    uint8_t *out = NULL;
    size_t olen = 0;
    assert_int_equal(aegis_proto_pack(cmd, &fm.mem, &out, &olen), -ENOMEM);
    assert_null(out);
    assert_int_equal(fm.live, 0);
    fill_arena_free(&a);
    free(p);
}

/* No message type reaches itself: unpacking recurses once per nesting level,
 * so an acyclic schema bounds the stack depth whatever the input. */
static int reaches(const ProtobufCMessageDescriptor *from, const ProtobufCMessageDescriptor *target,
                   unsigned depth)
{
    if (depth > 32)
        return 1; /* deeper than any acyclic schema of ours: treat as a cycle */
    for (unsigned k = 0; k < from->n_fields; k++) {
        const ProtobufCFieldDescriptor *f = &from->fields[k];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->descriptor == target || reaches(f->descriptor, target, depth + 1))
            return 1;
    }
    return 0;
}

static void test_schema_acyclic_and_budget_base(void **state)
{
    (void)state;
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    for (size_t i = 0; i < n; i++) {
        if (reaches(all[i], all[i], 0))
            fail_msg("%s contains itself; unpack recursion would be unbounded", all[i]->name);
        /* The budget's per-byte share covers the largest struct and the base
         * covers the top-level one. */
        assert_true(all[i]->sizeof_message < AEGIS_PROTO_BUDGET_BASE);
        assert_true(all[i]->sizeof_message / 2 < aegis_proto_budget_per_byte());
        for (size_t j = i + 1; j < n; j++)
            assert_ptr_not_equal(all[i], all[j]);
    }
    assert_int_equal(aegis_proto_unpack_budget(SIZE_MAX), SIZE_MAX);
}

/* Every payload of the Command oneof has its field name as its kind, the names the database,
 * aegisctl and the agent's logs have always used; a Command without one has none. */
static void test_command_kind(void **state)
{
    (void)state;
    static const struct {
        Aegis__V1__Command__PayloadCase c;
        const char *name;
    } want[] = {
        {AEGIS__V1__COMMAND__PAYLOAD_APPLY_POLICY, "apply_policy"},
        {AEGIS__V1__COMMAND__PAYLOAD_LOAD_ARTIFACT, "load_artifact"},
        {AEGIS__V1__COMMAND__PAYLOAD_RUN_ACTION, "run_action"},
        {AEGIS__V1__COMMAND__PAYLOAD_RESTART_AGENT, "restart_agent"},
        {AEGIS__V1__COMMAND__PAYLOAD_UPDATE_AGENT, "update_agent"},
        {AEGIS__V1__COMMAND__PAYLOAD_COLLECT_INVENTORY, "collect_inventory"},
        {AEGIS__V1__COMMAND__PAYLOAD_UNLOAD_ARTIFACT, "unload_artifact"},
    };
    Aegis__V1__Command cmd = AEGIS__V1__COMMAND__INIT;
    assert_null(aegis_command_kind(NULL));
    assert_null(aegis_command_kind(&cmd));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        cmd.payload_case = want[i].c;
        const char *k = aegis_command_kind(&cmd);
        assert_non_null(k);
        assert_string_equal(k, want[i].name);
    }
    /* Neither a number with no field nor a plain field's number (1, the id) is a payload. */
    cmd.payload_case = (Aegis__V1__Command__PayloadCase)9999;
    assert_null(aegis_command_kind(&cmd));
    cmd.payload_case = (Aegis__V1__Command__PayloadCase)1;
    assert_null(aegis_command_kind(&cmd));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_over_cap),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_field_zero),
        cmocka_unit_test(test_string_text),
        cmocka_unit_test(test_budget_admits_dense),
        cmocka_unit_test(test_budget_stops_merge_blowup),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_schema_acyclic_and_budget_base),
        cmocka_unit_test(test_command_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
