#include <aegis/err.h>
#include <aegis/hex.h>
#include <aegis/mem.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* cmocka needs the headers above first. */
#include <cmocka.h>

/* RFC 4648 §10 test vectors (base16), lower case as we write them. */
static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *const hex[] = {"",         "66",         "666f",        "666f6f",
                                  "666f6f62", "666f6f6261", "666f6f626172"};

static void rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        size_t len = strlen(plain[i]);
        char out[16];
        memset(out, 'X', sizeof(out));
        assert_int_equal(aegis_hex_encode((const uint8_t *)plain[i], len, out, sizeof(out)),
                         2 * len);
        assert_string_equal(out, hex[i]);
        uint8_t dec[8];
        assert_int_equal(aegis_hex_decode(hex[i], strlen(hex[i]), dec, sizeof(dec)), (long)len);
        assert_memory_equal(dec, plain[i], len);
    }
}

static void every_byte_round_trips_either_case(void **state)
{
    (void)state;
    uint8_t all[256], back[256];
    char enc[513];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    assert_int_equal(aegis_hex_encode(all, 256, enc, sizeof(enc)), 512);
    assert_int_equal(strlen(enc), 512);
    assert_int_equal(strspn(enc, "0123456789abcdef"), 512); /* lower case only */
    assert_int_equal(aegis_hex_decode(enc, 512, back, sizeof(back)), 256);
    assert_memory_equal(back, all, 256);
    for (size_t i = 0; i < 512; i++)
        if (enc[i] >= 'a')
            enc[i] = (char)(enc[i] - 'a' + 'A');
    memset(back, 0, sizeof(back));
    assert_int_equal(aegis_hex_decode(enc, 512, back, sizeof(back)), 256);
    assert_memory_equal(back, all, 256);
}

static void encode_truncates_like_snprintf(void **state)
{
    (void)state;
    const uint8_t in[3] = {0xde, 0xad, 0xbe};
    char out[8];
    memset(out, 'X', sizeof(out));
    assert_int_equal(aegis_hex_encode(in, 3, out, 5), 6);
    assert_string_equal(out, "dead"); /* cut to outcap - 1 characters, NUL-terminated */
    assert_int_equal(out[5], 'X');    /* nothing past outcap */
    assert_int_equal(aegis_hex_encode(in, 3, out, 4), 6);
    assert_string_equal(out, "dea");
    assert_int_equal(aegis_hex_encode(in, 3, NULL, 0), 6);
    assert_int_equal(aegis_hex_encode(in, 3, out, 1), 6);
    assert_string_equal(out, "");
}

static void malformed_inputs(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "6",    /* odd length */
        "666",  /* odd length */
        "6g",   /* not a hex digit */
        "g6",   /* not a hex digit */
        " 66",  /* no spaces */
        "0x66", /* no prefix */
        "66-6", /* no separators */
    };
    uint8_t out[8];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(aegis_hex_decode(bad[i], strlen(bad[i]), out, sizeof(out)),
                         AEGIS_ERR_MALFORMED);
    /* An embedded NUL is a bad digit, not the end. */
    assert_int_equal(aegis_hex_decode("66\0"
                                      "6",
                                      4, out, sizeof(out)),
                     AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_hex_decode(NULL, 2, out, sizeof(out)), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_hex_decode(NULL, 0, out, sizeof(out)), 0);
}

static void output_capacity(void **state)
{
    (void)state;
    uint8_t out[4];
    assert_int_equal(aegis_hex_decode("0011223344", 10, out, 4), AEGIS_ERR_TOO_LARGE);
    assert_int_equal(aegis_hex_decode("00112233", 8, out, 4), 4);
    /* Exact-size use: shorter text decodes to fewer bytes, which the caller rejects. */
    assert_int_equal(aegis_hex_decode("0011", 4, out, 4), 2);
}

static void decode_alloc(void **state)
{
    (void)state;
    uint8_t *b = NULL;
    size_t n = 99;
    assert_int_equal(aegis_hex_decode_alloc(NULL, "C0FFee", 6, &b, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(b, "\xc0\xff\xee", 3);
    aegis_free(NULL, b);

    /* Empty text: a (one-byte) buffer and length 0. */
    b = NULL;
    assert_int_equal(aegis_hex_decode_alloc(NULL, "", 0, &b, &n), 0);
    assert_non_null(b);
    assert_int_equal(n, 0);
    aegis_free(NULL, b);

    /* Errors leave the out-parameters alone. */
    uint8_t *untouched = (uint8_t *)"sentinel";
    b = untouched;
    n = 7;
    assert_int_equal(aegis_hex_decode_alloc(NULL, "abc", 3, &b, &n), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_hex_decode_alloc(NULL, "zz", 2, &b, &n), AEGIS_ERR_MALFORMED);
    assert_int_equal(aegis_hex_decode_alloc(NULL, NULL, 2, &b, &n), -EINVAL);
    assert_int_equal(aegis_hex_decode_alloc(NULL, "00", 2, NULL, &n), -EINVAL);
    assert_int_equal(aegis_hex_decode_alloc(NULL, "00", 2, &b, NULL), -EINVAL);
    assert_ptr_equal(b, untouched);
    assert_int_equal(n, 7);
}

static void decode_alloc_out_of_memory(void **state)
{
    (void)state;
    struct aegis_failmem fm;
    aegis_failmem_init(&fm, NULL, 1, 0);
    uint8_t *b = NULL;
    size_t n = 0;
    assert_int_equal(aegis_hex_decode_alloc(&fm.mem, "0011", 4, &b, &n), -ENOMEM);
    assert_null(b);
    /* A bad digit frees the buffer it allocated. */
    aegis_failmem_init(&fm, NULL, 0, 0);
    assert_int_equal(aegis_hex_decode_alloc(&fm.mem, "00zz", 4, &b, &n), AEGIS_ERR_MALFORMED);
    assert_int_equal(fm.nalloc, 1);
    assert_int_equal(fm.live, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4648_vectors),
        cmocka_unit_test(every_byte_round_trips_either_case),
        cmocka_unit_test(encode_truncates_like_snprintf),
        cmocka_unit_test(malformed_inputs),
        cmocka_unit_test(output_capacity),
        cmocka_unit_test(decode_alloc),
        cmocka_unit_test(decode_alloc_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
