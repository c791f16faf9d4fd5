/* Unit tests for transport/src/grpc_wire.c and grpc_status.c. */
#include "grpc_wire.h"

#include <aegis/err.h>
#include <aegis/grpc_status.h>
#include <aegis/mem.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define S(lit) lit, sizeof(lit) - 1

/* --- deframer ------------------------------------------------------------ */

#define MAX_MSGS 16

struct collected {
    size_t n;
    size_t len[MAX_MSGS];
    int compressed[MAX_MSGS];
    uint8_t *data[MAX_MSGS];
};

static void collected_free(struct collected *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->data[i]);
    c->n = 0;
}

/* Feed all of data[0..len) in one call sequence, collecting every message.
 * Returns 0 or the first error. */
static int feed_all(struct grpc_deframer *d, const uint8_t *data, size_t len, struct collected *c)
{
    size_t off = 0;
    unsigned guard = 0;
    while (off < len) {
        assert_true(++guard < 100000); /* bounded: every call makes progress */
        int done = 0, comp = -1;
        const uint8_t *msg = NULL;
        size_t mlen = 0;
        long r = grpc_deframer_feed(d, data + off, len - off, &done, &msg, &mlen, &comp);
        if (r < 0)
            return (int)r;
        assert_true((size_t)r <= len - off);
        assert_true(r > 0 || done);
        off += (size_t)r;
        if (done) {
            assert_true(c->n < MAX_MSGS);
            assert_non_null(msg);
            c->data[c->n] = malloc(mlen ? mlen : 1);
            assert_non_null(c->data[c->n]);
            memcpy(c->data[c->n], msg, mlen);
            c->len[c->n] = mlen;
            c->compressed[c->n] = comp;
            c->n++;
        }
    }
    return 0;
}

/* A stream of messages with varied sizes and flags, including empty ones. */
static const size_t sample_sizes[] = {3, 0, 1, 700, 0, 5000, 2};

static uint8_t *make_stream(size_t *plen)
{
    size_t total = 0;
    for (size_t i = 0; i < sizeof(sample_sizes) / sizeof(sample_sizes[0]); i++)
        total += GRPC_FRAME_HEADER_LEN + sample_sizes[i];
    uint8_t *s = malloc(total);
    assert_non_null(s);
    size_t off = 0;
    for (size_t i = 0; i < sizeof(sample_sizes) / sizeof(sample_sizes[0]); i++) {
        grpc_frame_header(s + off, (int)(i % 2), (uint32_t)sample_sizes[i]);
        off += GRPC_FRAME_HEADER_LEN;
        for (size_t j = 0; j < sample_sizes[i]; j++)
            s[off + j] = (uint8_t)(i * 31 + j * 7);
        off += sample_sizes[i];
    }
    *plen = total;
    return s;
}

static void check_sample(const struct collected *c)
{
    size_t n = sizeof(sample_sizes) / sizeof(sample_sizes[0]);
    assert_int_equal(c->n, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c->len[i], sample_sizes[i]);
        assert_int_equal(c->compressed[i], (int)(i % 2));
        for (size_t j = 0; j < sample_sizes[i]; j++)
            assert_int_equal(c->data[i][j], (uint8_t)(i * 31 + j * 7));
    }
}

static void frame_header_layout(void **state)
{
    (void)state;
    uint8_t h[GRPC_FRAME_HEADER_LEN];
    grpc_frame_header(h, 1, 0x01020304u);
    const uint8_t want[] = {1, 1, 2, 3, 4};
    assert_memory_equal(h, want, sizeof(want));
    grpc_frame_header(h, 7, 0); /* any non-zero flag means compressed */
    const uint8_t want0[] = {1, 0, 0, 0, 0};
    assert_memory_equal(h, want0, sizeof(want0));
}

static void deframer_split_at_every_byte(void **state)
{
    (void)state;
    size_t len;
    uint8_t *s = make_stream(&len);
    for (size_t cut = 0; cut <= len; cut++) {
        struct grpc_deframer d;
        struct collected c = {0};
        grpc_deframer_init(&d, NULL, 1 << 20);
        assert_int_equal(feed_all(&d, s, cut, &c), 0);
        assert_int_equal(feed_all(&d, s + cut, len - cut, &c), 0);
        check_sample(&c);
        assert_int_equal(grpc_deframer_partial(&d), 0);
        collected_free(&c);
        grpc_deframer_free(&d);
    }
    /* And one byte at a time. */
    struct grpc_deframer d;
    struct collected c = {0};
    grpc_deframer_init(&d, NULL, 1 << 20);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(feed_all(&d, s + i, 1, &c), 0);
    check_sample(&c);
    collected_free(&c);
    grpc_deframer_free(&d);
    free(s);
}

static void deframer_returns_after_each_message(void **state)
{
    (void)state;
    size_t len;
    uint8_t *s = make_stream(&len);
    struct grpc_deframer d;
    grpc_deframer_init(&d, NULL, 1 << 20);
    size_t off = 0;
    for (size_t i = 0; i < sizeof(sample_sizes) / sizeof(sample_sizes[0]); i++) {
        int done = 0, comp = -1;
        const uint8_t *msg = NULL;
        size_t mlen = 99;
        long r = grpc_deframer_feed(&d, s + off, len - off, &done, &msg, &mlen, &comp);
        /* Exactly one message consumed per call, even though all are there. */
        assert_int_equal(r, (long)(GRPC_FRAME_HEADER_LEN + sample_sizes[i]));
        assert_int_equal(done, 1);
        assert_int_equal(mlen, sample_sizes[i]);
        assert_int_equal(comp, (int)(i % 2));
        off += (size_t)r;
    }
    assert_int_equal(off, len);
    grpc_deframer_free(&d);
    free(s);
}

static void deframer_zero_length(void **state)
{
    (void)state;
    uint8_t s[3 * GRPC_FRAME_HEADER_LEN];
    for (int i = 0; i < 3; i++)
        grpc_frame_header(s + i * GRPC_FRAME_HEADER_LEN, 0, 0);
    struct grpc_deframer d;
    grpc_deframer_init(&d, NULL, 0); /* max 0 still allows empty messages */
    for (int i = 0; i < 3; i++) {
        int done = 0, comp = -1;
        const uint8_t *msg = NULL;
        size_t mlen = 99;
        long r = grpc_deframer_feed(&d, s + i * GRPC_FRAME_HEADER_LEN,
                                    sizeof(s) - (size_t)i * GRPC_FRAME_HEADER_LEN, &done, &msg,
                                    &mlen, &comp);
        assert_int_equal(r, GRPC_FRAME_HEADER_LEN);
        assert_int_equal(done, 1);
        assert_non_null(msg);
        assert_int_equal(mlen, 0);
        assert_int_equal(comp, 0);
        assert_int_equal(grpc_deframer_partial(&d), 0);
    }
    assert_null(d.buf); /* nothing allocated for empty messages */
    grpc_deframer_free(&d);
}

static void deframer_limits(void **state)
{
    (void)state;
    const size_t max = 1000;
    uint8_t *s = calloc(1, GRPC_FRAME_HEADER_LEN + max);
    assert_non_null(s);
    struct grpc_deframer d;
    int done, comp;
    const uint8_t *msg;
    size_t mlen;

    /* Exactly max: accepted. */
    grpc_deframer_init(&d, NULL, max);
    grpc_frame_header(s, 0, (uint32_t)max);
    long r = grpc_deframer_feed(&d, s, GRPC_FRAME_HEADER_LEN + max, &done, &msg, &mlen, &comp);
    assert_int_equal(r, (long)(GRPC_FRAME_HEADER_LEN + max));
    assert_int_equal(done, 1);
    assert_int_equal(mlen, max);
    grpc_deframer_free(&d);

    /* max + 1: refused from the header alone, before any body byte. */
    grpc_deframer_init(&d, NULL, max);
    grpc_frame_header(s, 0, (uint32_t)max + 1);
    r = grpc_deframer_feed(&d, s, GRPC_FRAME_HEADER_LEN, &done, &msg, &mlen, &comp);
    assert_int_equal(r, AEGIS_ERR_TOO_LARGE);
    assert_int_equal(done, 0);
    assert_null(d.buf);
    /* Unusable afterwards. */
    r = grpc_deframer_feed(&d, s, 1, &done, &msg, &mlen, &comp);
    assert_int_equal(r, AEGIS_ERR_STATE);
    grpc_deframer_free(&d);

    /* 0xFFFFFFFF with a 4 GiB - 1 limit would be fine; with ours it is not. */
    grpc_deframer_init(&d, NULL, max);
    grpc_frame_header(s, 1, UINT32_MAX);
    r = grpc_deframer_feed(&d, s, GRPC_FRAME_HEADER_LEN, &done, &msg, &mlen, &comp);
    assert_int_equal(r, AEGIS_ERR_TOO_LARGE);
    grpc_deframer_free(&d);

    /* Compressed flag other than 0/1. */
    for (int flag = 2; flag <= 255; flag += 253) {
        grpc_deframer_init(&d, NULL, max);
        grpc_frame_header(s, 0, 1);
        s[0] = (uint8_t)flag;
        r = grpc_deframer_feed(&d, s, GRPC_FRAME_HEADER_LEN + 1, &done, &msg, &mlen, &comp);
        assert_int_equal(r, AEGIS_ERR_MALFORMED);
        grpc_deframer_free(&d);
    }

    /* Bad arguments. */
    grpc_deframer_init(&d, NULL, max);
    assert_int_equal(grpc_deframer_feed(&d, NULL, 1, &done, &msg, &mlen, &comp), -EINVAL);
    assert_int_equal(grpc_deframer_feed(&d, s, 1, NULL, &msg, &mlen, &comp), -EINVAL);
    grpc_deframer_free(&d);
    grpc_deframer_free(NULL);
    free(s);
}

static void deframer_partial_detection(void **state)
{
    (void)state;
    uint8_t s[GRPC_FRAME_HEADER_LEN + 4];
    grpc_frame_header(s, 0, 4);
    memcpy(s + GRPC_FRAME_HEADER_LEN, "abcd", 4);
    struct grpc_deframer d;
    int done, comp;
    const uint8_t *msg;
    size_t mlen;
    grpc_deframer_init(&d, NULL, 100);
    assert_int_equal(grpc_deframer_partial(&d), 0);
    assert_int_equal(grpc_deframer_feed(&d, s, 1, &done, &msg, &mlen, &comp), 1);
    assert_int_equal(grpc_deframer_partial(&d), 1); /* inside the prefix */
    assert_int_equal(grpc_deframer_feed(&d, s + 1, 6, &done, &msg, &mlen, &comp), 6);
    assert_int_equal(done, 0);
    assert_int_equal(grpc_deframer_partial(&d), 1); /* inside the body */
    assert_int_equal(grpc_deframer_feed(&d, s + 7, 2, &done, &msg, &mlen, &comp), 2);
    assert_int_equal(done, 1);
    assert_memory_equal(msg, "abcd", 4);
    assert_int_equal(grpc_deframer_partial(&d), 0);
    /* Feeding nothing is harmless. */
    assert_int_equal(grpc_deframer_feed(&d, NULL, 0, &done, &msg, &mlen, &comp), 0);
    assert_int_equal(done, 0);
    grpc_deframer_free(&d);
}

/* A peer declaring a large message but sending little must not make the
 * deframer allocate the declared size up front. */
static void deframer_grows_with_data(void **state)
{
    (void)state;
    uint8_t s[GRPC_FRAME_HEADER_LEN + 10] = {0};
    grpc_frame_header(s, 0, 4u << 20);
    struct grpc_deframer d;
    int done, comp;
    const uint8_t *msg;
    size_t mlen;
    grpc_deframer_init(&d, NULL, 4u << 20);
    assert_int_equal(grpc_deframer_feed(&d, s, sizeof(s), &done, &msg, &mlen, &comp),
                     (long)sizeof(s));
    assert_int_equal(done, 0);
    assert_true(d.buf_cap >= 10 && d.buf_cap <= 4096);
    grpc_deframer_free(&d);
}

/* After a big message, a much smaller one releases the big buffer so a
 * long-lived stream does not keep its high-water mark. */
static void deframer_releases_big_buffer(void **state)
{
    (void)state;
    const size_t big = 256 * 1024;
    uint8_t *s = calloc(1, GRPC_FRAME_HEADER_LEN * 2 + big + 10);
    assert_non_null(s);
    grpc_frame_header(s, 0, (uint32_t)big);
    grpc_frame_header(s + GRPC_FRAME_HEADER_LEN + big, 0, 10);
    struct grpc_deframer d;
    struct collected c = {0};
    grpc_deframer_init(&d, NULL, 1 << 20);
    assert_int_equal(feed_all(&d, s, GRPC_FRAME_HEADER_LEN + big, &c), 0);
    assert_true(d.buf_cap >= big);
    assert_int_equal(feed_all(&d, s + GRPC_FRAME_HEADER_LEN + big, GRPC_FRAME_HEADER_LEN + 10, &c),
                     0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.len[1], 10);
    assert_true(d.buf_cap < 4096);
    collected_free(&c);
    grpc_deframer_free(&d);
    free(s);
}

static void deframer_alloc_failure_sweep(void **state)
{
    (void)state;
    size_t len;
    uint8_t *s = make_stream(&len);
    int completed = 0;
    for (unsigned long n = 1; n < 200 && !completed; n++) {
        struct aegis_failmem fm;
        aegis_failmem_init(&fm, NULL, n, 0);
        struct grpc_deframer d;
        struct collected c = {0};
        grpc_deframer_init(&d, &fm.mem, 1 << 20);
        /* Feed in 97-byte pieces so the buffer grows several times. */
        int rv = 0;
        for (size_t off = 0; off < len && rv == 0; off += 97)
            rv = feed_all(&d, s + off, len - off < 97 ? len - off : 97, &c);
        if (fm.nfailed == 0) {
            assert_int_equal(rv, 0);
            check_sample(&c);
            completed = 1;
        } else {
            assert_int_equal(rv, -ENOMEM);
            int done;
            const uint8_t *msg;
            size_t mlen;
            int comp;
            assert_int_equal(grpc_deframer_feed(&d, s, 1, &done, &msg, &mlen, &comp),
                             AEGIS_ERR_STATE);
        }
        collected_free(&c);
        grpc_deframer_free(&d);
        assert_int_equal(fm.live, 0);
    }
    assert_true(completed);
    free(s);
}

/* --- grpc-timeout -------------------------------------------------------- */

static uint64_t parse_ok(const char *v)
{
    uint64_t ns = 12345;
    assert_int_equal(grpc_timeout_parse(v, strlen(v), &ns), 0);
    return ns;
}

static void timeout_parse_units(void **state)
{
    (void)state;
    assert_true(parse_ok("1H") == UINT64_C(3600000000000));
    assert_true(parse_ok("2M") == UINT64_C(120000000000));
    assert_true(parse_ok("3S") == UINT64_C(3000000000));
    assert_true(parse_ok("4m") == UINT64_C(4000000));
    assert_true(parse_ok("5u") == UINT64_C(5000));
    assert_true(parse_ok("6n") == UINT64_C(6));
    assert_true(parse_ok("0S") == 0);
    assert_true(parse_ok("00000007m") == UINT64_C(7000000)); /* 8 digits, leading zeros */
    assert_true(parse_ok("99999999n") == UINT64_C(99999999));
    assert_true(parse_ok("12345678S") == UINT64_C(12345678000000000));
    /* 5124095 h fits in 64 bits; 5124096 h and the 8-digit max saturate. */
    assert_true(parse_ok("5124095H") == UINT64_C(5124095) * UINT64_C(3600000000000));
    assert_true(parse_ok("5124096H") == UINT64_MAX - 1);
    assert_true(parse_ok("99999999H") == UINT64_MAX - 1);
}

static void timeout_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",    "S",  "1",  "123456789S", "000000001n", "-1S", "+1S", " 1S",  "1 S",
        "1S ", "1s", "1h", "1x",         "1.5S",       "1SS", "S1",  "0x1S", "1\0S",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ns = 42;
        size_t len = strlen(bad[i]);
        if (i == sizeof(bad) / sizeof(bad[0]) - 1)
            len = 3; /* embedded NUL */
        assert_int_equal(grpc_timeout_parse(bad[i], len, &ns), AEGIS_ERR_MALFORMED);
        assert_true(ns == 42); /* untouched on error */
    }
}

static void timeout_format_values(void **state)
{
    (void)state;
    static const struct {
        uint64_t ns;
        const char *want;
    } cases[] = {
        {0, "0n"},
        {1, "1n"},
        {999, "999n"},
        {1000, "1u"},
        {1500000, "1500u"},
        {1500000000, "1500m"},
        {AEGIS_NS_PER_S, "1S"},
        {60 * AEGIS_NS_PER_S, "1M"},
        {3600 * AEGIS_NS_PER_S, "1H"},
        {90 * AEGIS_NS_PER_S, "90S"},
        {99999999, "99999999n"},
        {100000001, "100001u"}, /* rounded up, not down to 100000u */
        {UINT64_C(1234567891), "1234568u"},
        {UINT64_MAX, "5124096H"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[16];
        memset(out, 'X', sizeof(out));
        size_t n = grpc_timeout_format(cases[i].ns, out);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(n, strlen(cases[i].want));
    }
}

static void timeout_round_trip(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull; /* xorshift64 seed */
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* Spread over every magnitude: shift right by 0..63. */
        uint64_t v = x >> (i % 64);
        if (i % 3 == 0)
            v = v % 2 ? v - 1 : v + 1;
        char out[16];
        size_t n = grpc_timeout_format(v, out);
        assert_true(n >= 2 && n <= 9);
        assert_int_equal(strlen(out), n);
        uint64_t back = 0;
        assert_int_equal(grpc_timeout_parse(out, n, &back), 0);
        if (v >= UINT64_MAX - 1) {
            assert_true(back == UINT64_MAX - 1);
            continue;
        }
        assert_true(back >= v); /* never shorter than asked */
        if (back != UINT64_MAX - 1)
            assert_true(back - v <= v / 100000 + 1); /* and close */
    }
}

/* --- grpc-status --------------------------------------------------------- */

static void status_parse(void **state)
{
    (void)state;
    for (int i = 0; i <= 16; i++) {
        char buf[8];
        int n = snprintf(buf, sizeof(buf), "%d", i);
        int st = -1;
        assert_int_equal(grpc_status_parse(buf, (size_t)n, &st), 0);
        assert_int_equal(st, i);
    }
    /* Leading zeros are allowed by the grammar (1*DIGIT). */
    int st = -1;
    assert_int_equal(grpc_status_parse(S("01"), &st), 0);
    assert_int_equal(st, 1);
    assert_int_equal(grpc_status_parse(S("0016"), &st), 0);
    assert_int_equal(st, 16);
    static const char *const bad[] = {"",   "17", "-1", "+1",   " 1",  "1 ",
                                      "1a", "a",  "99", "0017", "170", "99999999999999999999999",
                                      "1.0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        st = 77;
        assert_int_equal(grpc_status_parse(bad[i], strlen(bad[i]), &st), AEGIS_ERR_MALFORMED);
        assert_int_equal(st, 77);
    }
}

static void status_names(void **state)
{
    (void)state;
    assert_string_equal(aegis_grpc_status_name(AEGIS_GRPC_OK), "OK");
    assert_string_equal(aegis_grpc_status_name(AEGIS_GRPC_CANCELLED), "CANCELLED");
    assert_string_equal(aegis_grpc_status_name(AEGIS_GRPC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(aegis_grpc_status_name(AEGIS_GRPC_RESOURCE_EXHAUSTED),
                        "RESOURCE_EXHAUSTED");
    assert_string_equal(aegis_grpc_status_name(AEGIS_GRPC_UNIMPLEMENTED), "UNIMPLEMENTED");
    assert_string_equal(aegis_grpc_status_name(AEGIS_GRPC_UNAUTHENTICATED), "UNAUTHENTICATED");
    for (int i = 0; i <= AEGIS_GRPC_STATUS_MAX; i++) {
        const char *n = aegis_grpc_status_name(i);
        assert_non_null(n);
        assert_string_not_equal(n, "UNKNOWN_STATUS");
        for (int j = 0; j < i; j++)
            assert_string_not_equal(n, aegis_grpc_status_name(j));
    }
    assert_string_equal(aegis_grpc_status_name(17), "UNKNOWN_STATUS");
    assert_string_equal(aegis_grpc_status_name(-1), "UNKNOWN_STATUS");
}

/* --- percent-encoding ---------------------------------------------------- */

static void pct_enc_eq(const char *in, size_t len, const char *want)
{
    char out[256];
    size_t n = grpc_percent_encode(in, len, out, sizeof(out));
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
}

static void pct_dec_eq(const char *in, const char *want, size_t wantlen)
{
    char out[256];
    size_t n = grpc_percent_decode(in, strlen(in), out, sizeof(out));
    assert_int_equal(n, wantlen);
    assert_memory_equal(out, want, n);
    assert_int_equal(out[n], '\0');
}

static void percent_examples(void **state)
{
    (void)state;
    pct_enc_eq(S("Hello, world!"), "Hello, world!");
    pct_enc_eq(S("100%"), "100%25");
    pct_enc_eq(S("a\nb\tc"), "a%0Ab%09c");
    pct_enc_eq(S("\xC3\xBC"), "%C3%BC"); /* UTF-8 u-umlaut */
    pct_enc_eq("nul\0", 4, "nul%00");
    pct_enc_eq(S("~\x7F "), "~%7F ");
    pct_enc_eq("", 0, "");

    pct_dec_eq("100%25", "100%", 4);
    pct_dec_eq("%C3%bc", "\xC3\xBC", 2); /* lower-case hex accepted */
    pct_dec_eq("a%00b", "a\0b", 3);
    /* Invalid sequences are kept as they are. */
    pct_dec_eq("%", "%", 1);
    pct_dec_eq("%4", "%4", 2);
    pct_dec_eq("%zz", "%zz", 3);
    pct_dec_eq("%4g%41", "%4gA", 4);
    pct_dec_eq("%%41", "%A", 2);
    pct_dec_eq("50%", "50%", 3);
}

static void percent_every_byte_round_trips(void **state)
{
    (void)state;
    char all[256];
    for (int i = 0; i < 256; i++) {
        char one = (char)i;
        char enc[4], dec[4];
        size_t n = grpc_percent_encode(&one, 1, enc, sizeof(enc));
        int plain = i >= 0x20 && i <= 0x7E && i != '%';
        assert_int_equal(n, plain ? 1 : 3);
        assert_int_equal(grpc_percent_decode(enc, n, dec, sizeof(dec)), 1);
        assert_int_equal((uint8_t)dec[0], i);
        all[i] = one;
    }
    char enc[1024], dec[300];
    size_t n = grpc_percent_encode(all, sizeof(all), enc, sizeof(enc));
    assert_true(n < sizeof(enc));
    assert_int_equal(grpc_percent_decode(enc, n, dec, sizeof(dec)), sizeof(all));
    assert_memory_equal(dec, all, sizeof(all));
}

static void percent_truncation_like_snprintf(void **state)
{
    (void)state;
    const char *in = "a%b\x01";
    const char *full = "a%25b%01";
    for (size_t cap = 0; cap <= 10; cap++) {
        char out[12];
        memset(out, '#', sizeof(out));
        size_t n = grpc_percent_encode(in, 4, out, cap);
        assert_int_equal(n, 8);
        size_t w = cap < 8 ? cap : 8;
        assert_memory_equal(out, full, w);
        for (size_t i = w; i < sizeof(out); i++)
            assert_int_equal(out[i], '#'); /* nothing beyond: no NUL either */
    }
    for (size_t cap = 0; cap <= 6; cap++) {
        char out[8];
        memset(out, '#', sizeof(out));
        size_t n = grpc_percent_decode(full, strlen(full), out, cap);
        assert_int_equal(n, 4);
        size_t w = cap < 4 ? cap : 4;
        assert_memory_equal(out, in, w);
        if (cap > 4)
            assert_int_equal(out[4], '\0');
        for (size_t i = cap; i < sizeof(out); i++)
            assert_int_equal(out[i], '#');
    }
}

/* --- content-type, :path, metadata --------------------------------------- */

static void content_type(void **state)
{
    (void)state;
    static const char *const ok[] = {"application/grpc",
                                     "application/grpc+proto",
                                     "application/grpc;charset=utf-8",
                                     "application/grpc+proto; a=b",
                                     "Application/GRPC+Proto",
                                     "application/grpc;"};
    static const char *const bad[] = {"",
                                      "application/json",
                                      "application/grpc+json",
                                      "application/grpcx",
                                      "application/grp",
                                      "application/grpc+protox",
                                      "application/grpc+",
                                      "application/grpc ",
                                      "application/grpc;\x01",
                                      " application/grpc",
                                      "text/plain;application/grpc"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(grpc_content_type_ok(ok[i], strlen(ok[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(grpc_content_type_ok(bad[i], strlen(bad[i])));
}

static void path_validation(void **state)
{
    (void)state;
    assert_true(grpc_path_ok(S("/aegis.v1.AgentService/Enroll")));
    assert_true(grpc_path_ok(S("/a/b")));
    static const char *const bad[] = {"",        "/",     "//",     "/a/",    "//b",
                                      "a/b",     "/a",    "/a/b/c", "/a b/c", "/a/b\x7F",
                                      "/a/\x80", "/a/b ", "aa/b/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(grpc_path_ok(bad[i], strlen(bad[i])));
    char p[300];
    memset(p, 'x', sizeof(p));
    p[0] = '/';
    p[10] = '/';
    assert_true(grpc_path_ok(p, 256));
    assert_false(grpc_path_ok(p, 257));
}

static void metadata_rules(void **state)
{
    (void)state;
    static const char *const ok[] = {"x-trace-id", "a.b_c-9", "trace-bin", "grpc", "grpcx-a"};
    static const char *const bad[] = {"",    "X-Upper",  ":path", "grpc-status", "grpc-foo",
                                      "a b", "\xC3\xA9", "a/b",   "grpc-x-bin"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(grpc_metadata_key_ok(ok[i], strlen(ok[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(grpc_metadata_key_ok(bad[i], strlen(bad[i])));

    assert_true(grpc_metadata_key_is_bin(S("trace-bin")));
    assert_true(grpc_metadata_key_is_bin(S("-bin")));
    assert_false(grpc_metadata_key_is_bin(S("trace-bi")));
    assert_false(grpc_metadata_key_is_bin(S("bin")));
    assert_false(grpc_metadata_key_is_bin(S("trace-binx")));

    assert_true(grpc_metadata_value_ok(S("hello world ~!")));
    assert_true(grpc_metadata_value_ok("", 0));
    assert_false(grpc_metadata_value_ok(S("a\nb")));
    assert_false(grpc_metadata_value_ok(S("a\tb")));
    assert_false(grpc_metadata_value_ok(S("\x7F")));
    assert_false(grpc_metadata_value_ok(S("\xC3\xA9")));
    assert_false(grpc_metadata_value_ok("a\0b", 3));
    assert_false(grpc_metadata_value_ok(S(" lead")));
    assert_false(grpc_metadata_value_ok(S("trail ")));
}

/* --- base64 -------------------------------------------------------------- */

static void base64_rfc4648_vectors(void **state)
{
    (void)state;
    /* RFC 4648 §10. */
    static const struct {
        const char *plain, *padded, *unpadded;
    } v[] = {
        {"", "", ""},
        {"f", "Zg==", "Zg"},
        {"fo", "Zm8=", "Zm8"},
        {"foo", "Zm9v", "Zm9v"},
        {"foob", "Zm9vYg==", "Zm9vYg"},
        {"fooba", "Zm9vYmE=", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char enc[16];
        uint8_t dec[16];
        size_t n =
            grpc_base64_encode((const uint8_t *)v[i].plain, strlen(v[i].plain), enc, sizeof(enc));
        assert_int_equal(n, strlen(v[i].unpadded)); /* gRPC emits unpadded */
        assert_memory_equal(enc, v[i].unpadded, n);
        long d = grpc_base64_decode(v[i].padded, strlen(v[i].padded), dec, sizeof(dec));
        assert_int_equal(d, (long)strlen(v[i].plain));
        assert_memory_equal(dec, v[i].plain, (size_t)d);
        d = grpc_base64_decode(v[i].unpadded, strlen(v[i].unpadded), dec, sizeof(dec));
        assert_int_equal(d, (long)strlen(v[i].plain));
        assert_memory_equal(dec, v[i].plain, (size_t)d);
    }
    uint8_t dec[8];
    assert_int_equal(grpc_base64_decode(S("+/+/"), dec, sizeof(dec)), 3);
    const uint8_t want[] = {0xFB, 0xFF, 0xBF};
    assert_memory_equal(dec, want, 3);
}

static void base64_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {"Z",     "Zg=",  "Zg===",    "Z===", "====",  "Zm9v!",
                                      "Zm 9v", "=Zg=", "Zg==Zg==", "Zm-_", "Zm9\n", "Zm=v"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t dec[16];
        assert_int_equal(grpc_base64_decode(bad[i], strlen(bad[i]), dec, sizeof(dec)),
                         AEGIS_ERR_MALFORMED);
    }
    uint8_t small[2];
    assert_int_equal(grpc_base64_decode(S("Zm9v"), small, sizeof(small)), -EINVAL);
}

static void base64_round_trip_and_truncation(void **state)
{
    (void)state;
    uint8_t in[64], dec[64 + 3];
    char enc[100];
    for (size_t len = 0; len <= sizeof(in); len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (uint8_t)(i * 37 + len * 11);
        size_t n = grpc_base64_encode(in, len, enc, sizeof(enc));
        assert_int_equal(n, (len * 4 + 2) / 3);
        long d = grpc_base64_decode(enc, n, dec, sizeof(dec));
        assert_int_equal(d, (long)len);
        assert_memory_equal(dec, in, len);
    }
    char out[8];
    memset(out, '#', sizeof(out));
    assert_int_equal(grpc_base64_encode((const uint8_t *)"foobar", 6, out, 5), 8);
    assert_memory_equal(out, "Zm9vY###", 8);
}

/* --- encodings ----------------------------------------------------------- */

static void encodings(void **state)
{
    (void)state;
    assert_int_equal(grpc_encoding_parse(S("identity")), GRPC_ENC_IDENTITY);
    assert_int_equal(grpc_encoding_parse(S("zstd")), GRPC_ENC_ZSTD);
    assert_int_equal(grpc_encoding_parse(S("ZStd")), GRPC_ENC_ZSTD);
    assert_int_equal(grpc_encoding_parse(S(" zstd ")), GRPC_ENC_ZSTD);
    assert_int_equal(grpc_encoding_parse(S("gzip")), GRPC_ENC_UNKNOWN);
    assert_int_equal(grpc_encoding_parse(S("zstdx")), GRPC_ENC_UNKNOWN);
    assert_int_equal(grpc_encoding_parse(S("zst")), GRPC_ENC_UNKNOWN);
    assert_int_equal(grpc_encoding_parse("", 0), GRPC_ENC_UNKNOWN);
    assert_int_equal(grpc_encoding_parse(S("zstd,identity")), GRPC_ENC_UNKNOWN);

    const unsigned both = 1u << GRPC_ENC_IDENTITY | 1u << GRPC_ENC_ZSTD;
    assert_int_equal(grpc_accept_encoding_parse(S("identity,zstd")), both);
    assert_int_equal(grpc_accept_encoding_parse(S(" zstd , identity ")), both);
    assert_int_equal(grpc_accept_encoding_parse(S("gzip, zstd")), 1u << GRPC_ENC_ZSTD);
    assert_int_equal(grpc_accept_encoding_parse(S("gzip,deflate")), 0);
    assert_int_equal(grpc_accept_encoding_parse(S("identity")), 1u << GRPC_ENC_IDENTITY);
    assert_int_equal(grpc_accept_encoding_parse(S(",,zstd,,")), 1u << GRPC_ENC_ZSTD);
    assert_int_equal(grpc_accept_encoding_parse("", 0), 0);
    assert_int_equal(grpc_accept_encoding_parse(S("zstd;q=1")), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frame_header_layout),
        cmocka_unit_test(deframer_split_at_every_byte),
        cmocka_unit_test(deframer_returns_after_each_message),
        cmocka_unit_test(deframer_zero_length),
        cmocka_unit_test(deframer_limits),
        cmocka_unit_test(deframer_partial_detection),
        cmocka_unit_test(deframer_grows_with_data),
        cmocka_unit_test(deframer_releases_big_buffer),
        cmocka_unit_test(deframer_alloc_failure_sweep),
        cmocka_unit_test(timeout_parse_units),
        cmocka_unit_test(timeout_parse_rejects),
        cmocka_unit_test(timeout_format_values),
        cmocka_unit_test(timeout_round_trip),
        cmocka_unit_test(status_parse),
        cmocka_unit_test(status_names),
        cmocka_unit_test(percent_examples),
        cmocka_unit_test(percent_every_byte_round_trips),
        cmocka_unit_test(percent_truncation_like_snprintf),
        cmocka_unit_test(content_type),
        cmocka_unit_test(path_validation),
        cmocka_unit_test(metadata_rules),
        cmocka_unit_test(base64_rfc4648_vectors),
        cmocka_unit_test(base64_rejects),
        cmocka_unit_test(base64_round_trip_and_truncation),
        cmocka_unit_test(encodings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
