/*
 * Fuzz target for the gRPC header and trailer value parsers: grpc-timeout,
 * grpc-status, grpc-message percent-decoding, content-type, :path, metadata
 * keys and values, base64 -bin values, grpc-encoding and
 * grpc-accept-encoding. The input is split at '\n' into fields; every parser
 * sees every field, and round-trip invariants are checked.
 */
#include "grpc_wire.h"

#include <aegis/err.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

/* Fields longer than this are cut: the parsers are linear, and big buffers
 * only slow the fuzzer down. */
#define FIELD_MAX 4096

static char enc[3 * FIELD_MAX + 1];
static char dec[3 * FIELD_MAX + 1];
static uint8_t bin[FIELD_MAX + 3];
static char b64[2 * FIELD_MAX];

static void timeout(const char *v, size_t len)
{
    uint64_t ns = 0;
    if (grpc_timeout_parse(v, len, &ns) != 0)
        return;
    CHECK(len >= 2 && len <= 9);
    char out[16];
    size_t n = grpc_timeout_format(ns, out);
    CHECK(n >= 2 && n <= 9 && out[n] == '\0');
    uint64_t back = 0;
    CHECK(grpc_timeout_parse(out, n, &back) == 0);
    CHECK(back >= ns); /* never shorter */
    if (ns < UINT64_MAX - 1)
        CHECK(back - ns <= ns / 100000 + 1);
}

static void status(const char *v, size_t len)
{
    int st = -1;
    if (grpc_status_parse(v, len, &st) == 0) {
        CHECK(st >= 0 && st <= 16);
        for (size_t i = 0; i < len; i++)
            CHECK(v[i] >= '0' && v[i] <= '9');
    }
}

static void percent(const char *v, size_t len)
{
    /* decode(encode(x)) == x for any bytes. */
    size_t n = grpc_percent_encode(v, len, enc, sizeof(enc));
    CHECK(n <= 3 * len && n < sizeof(enc));
    for (size_t i = 0; i < n; i++)
        CHECK(enc[i] >= 0x20 && enc[i] <= 0x7E);
    size_t m = grpc_percent_decode(enc, n, dec, sizeof(dec));
    CHECK(m == len && memcmp(dec, v, len) == 0 && dec[m] == '\0');
    /* Decoding arbitrary input: never longer, truncation is a prefix. */
    m = grpc_percent_decode(v, len, dec, sizeof(dec));
    CHECK(m <= len);
    char small[8];
    size_t m2 = grpc_percent_decode(v, len, small, sizeof(small));
    CHECK(m2 == m && memcmp(small, dec, m < sizeof(small) ? m : sizeof(small)) == 0);
    size_t n2 = grpc_percent_encode(v, len, small, sizeof(small));
    CHECK(n2 == n && memcmp(small, enc, n < sizeof(small) ? n : sizeof(small)) == 0);
}

static void base64(const char *v, size_t len)
{
    long d = grpc_base64_decode(v, len, bin, sizeof(bin));
    if (d >= 0) {
        CHECK((size_t)d <= len * 3 / 4);
        size_t n = grpc_base64_encode(bin, (size_t)d, b64, sizeof(b64));
        uint8_t again[FIELD_MAX + 3];
        CHECK(grpc_base64_decode(b64, n, again, sizeof(again)) == d);
        CHECK(memcmp(again, bin, (size_t)d) == 0);
    } else {
        CHECK(d == AEGIS_ERR_MALFORMED);
    }
    /* encode(any bytes) decodes back. */
    size_t n = grpc_base64_encode((const uint8_t *)v, len, b64, sizeof(b64));
    CHECK(n == (len * 4 + 2) / 3);
    CHECK(grpc_base64_decode(b64, n, bin, sizeof(bin)) == (long)len);
    CHECK(memcmp(bin, v, len) == 0);
}

static void others(const char *v, size_t len)
{
    int ct = grpc_content_type_ok(v, len);
    CHECK(ct == 0 || (ct == 1 && len >= 16));
    if (grpc_path_ok(v, len))
        CHECK(len <= 256 && v[0] == '/' && memchr(v + 1, '/', len - 1));
    if (grpc_metadata_key_ok(v, len)) {
        CHECK(len > 0);
        for (size_t i = 0; i < len; i++)
            CHECK(!(v[i] >= 'A' && v[i] <= 'Z') && v[i] != ':');
    }
    (void)grpc_metadata_key_is_bin(v, len);
    if (grpc_metadata_value_ok(v, len)) {
        for (size_t i = 0; i < len; i++)
            CHECK(v[i] >= 0x20 && v[i] <= 0x7E);
    }
    enum grpc_encoding e = grpc_encoding_parse(v, len);
    CHECK(e == GRPC_ENC_IDENTITY || e == GRPC_ENC_ZSTD || e == GRPC_ENC_UNKNOWN);
    unsigned mask = grpc_accept_encoding_parse(v, len);
    CHECK((mask & ~3u) == 0);
    if (e != GRPC_ENC_UNKNOWN)
        CHECK(mask == 1u << (unsigned)e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        size_t len = i - start;
        if (len > FIELD_MAX)
            len = FIELD_MAX;
        /* An exact-size copy so ASan sees any read past the field. */
        char *f = malloc(len ? len : 1);
        if (!f)
            return 0;
        memcpy(f, data + start, len);
        timeout(f, len);
        status(f, len);
        percent(f, len);
        base64(f, len);
        others(f, len);
        free(f);
        start = i + 1;
    }
    return 0;
}
