/*
 * Fuzz target for the gRPC message deframer (grpc_deframer_feed).
 *
 * Input layout: byte 0 picks max_message, byte 1 picks the allocation that
 * fails (0 = none), bytes 2..5 are a cycle of chunk sizes; the rest is the
 * DATA stream. It is fed in those chunks and every reported message is
 * compared with a one-shot reference parse of the same bytes.
 */
#include "grpc_wire.h"

#include <aegis/err.h>
#include <aegis/mem.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

#define PARAM_BYTES 6

static const size_t max_choices[] = {0, 1, 16, 100, 1000, 65536, 1 << 20, 4 << 20};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PARAM_BYTES)
        return 0;
    size_t max = max_choices[data[0] % (sizeof(max_choices) / sizeof(max_choices[0]))];
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, data[1] % 16, 0);
    const uint8_t *chunks = data + 2;
    const uint8_t *s = data + PARAM_BYTES;
    size_t len = size - PARAM_BYTES;

    struct grpc_deframer d;
    grpc_deframer_init(&d, &fm.mem, max);
    size_t off = 0, ref = 0; /* ref: reference parser position */
    unsigned step = 0;
    int err = 0;
    while (off < len) {
        size_t chunk = (size_t)chunks[step++ % 4] + 1;
        if (chunk > len - off)
            chunk = len - off;
        size_t coff = 0;
        while (coff < chunk) {
            int done = 0, comp = -1;
            const uint8_t *msg = NULL;
            size_t mlen = 0;
            long r =
                grpc_deframer_feed(&d, s + off + coff, chunk - coff, &done, &msg, &mlen, &comp);
            if (r < 0) {
                err = (int)r;
                break;
            }
            CHECK((size_t)r <= chunk - coff);
            CHECK(r > 0 || done);
            coff += (size_t)r;
            if (done) {
                /* Reference: header at ref, body right after it. */
                CHECK(len - ref >= GRPC_FRAME_HEADER_LEN);
                const uint8_t *h = s + ref;
                size_t want = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
                CHECK(h[0] <= 1 && comp == h[0]);
                CHECK(want <= max && mlen == want);
                CHECK(len - ref - GRPC_FRAME_HEADER_LEN >= want);
                CHECK(mlen == 0 || memcmp(msg, h + GRPC_FRAME_HEADER_LEN, mlen) == 0);
                ref += GRPC_FRAME_HEADER_LEN + want;
                CHECK(ref == off + coff); /* stopped right after the message */
                CHECK(!grpc_deframer_partial(&d));
            }
        }
        if (err)
            break;
        off += chunk;
    }
    if (err) {
        /* The error must be what the reference parse of the next header says. */
        CHECK(len - ref >= GRPC_FRAME_HEADER_LEN);
        const uint8_t *h = s + ref;
        size_t want = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
        if (h[0] > 1)
            CHECK(err == AEGIS_ERR_MALFORMED);
        else if (want > max)
            CHECK(err == AEGIS_ERR_TOO_LARGE);
        else
            CHECK(err == -ENOMEM && fm.nfailed > 0);
        int done;
        const uint8_t *msg;
        size_t mlen;
        int comp;
        CHECK(grpc_deframer_feed(&d, s, len, &done, &msg, &mlen, &comp) == AEGIS_ERR_STATE);
    } else {
        CHECK(grpc_deframer_partial(&d) == (ref != len));
    }
    /* The buffer never outgrows the limit. */
    CHECK(d.buf_cap <= max);
    grpc_deframer_free(&d);
    CHECK(fm.live == 0);
    return 0;
}
