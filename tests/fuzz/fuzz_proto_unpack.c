/*
 * libFuzzer target for aegis_proto_unpack. The first byte selects the message
 * type (index into aegis_proto_all_messages, modulo their number); the rest
 * is unpacked under the 4 MiB message cap through a leak-checking allocator.
 * Accepted input must round-trip: pack, unpack again, pack again, and the two
 * packings must be byte-identical.
 */
#include <aegis/err.h>
#include <aegis/mem.h>
#include <aegis/proto.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MSG (4u << 20)

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_proto_unpack: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n;
    const ProtobufCMessageDescriptor *const *all = aegis_proto_all_messages(&n);
    const ProtobufCMessageDescriptor *desc = all[data[0] % n];
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 0, 0);

    ProtobufCMessage *m = NULL;
    int rv = aegis_proto_unpack(desc, data + 1, size - 1, MAX_MSG, &fm.mem, &m);
    if (rv != 0) {
        check(rv == AEGIS_ERR_MALFORMED || rv == AEGIS_ERR_TOO_LARGE, "unexpected error code");
        check(m == NULL && fm.live == 0, "leak after a rejected input");
        return 0;
    }
    uint8_t *p1 = NULL, *p2 = NULL;
    size_t l1 = 0, l2 = 0;
    check(aegis_proto_pack(m, &fm.mem, &p1, &l1) == 0, "accepted message does not pack");
    aegis_proto_free(m, &fm.mem);
    ProtobufCMessage *m2 = NULL;
    check(aegis_proto_unpack(desc, p1, l1, MAX_MSG, &fm.mem, &m2) == 0,
          "our own packing does not unpack");
    check(aegis_proto_pack(m2, &fm.mem, &p2, &l2) == 0, "repack failed");
    check(l1 == l2 && memcmp(p1, p2, l1) == 0, "round trip changed the bytes");
    aegis_proto_free(m2, &fm.mem);
    aegis_free(&fm.mem, p1);
    aegis_free(&fm.mem, p2);
    check(fm.live == 0, "leak after a round trip");
    return 0;
}
